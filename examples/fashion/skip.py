"""Fashion-MNIST: the same network as examples/mnist/skip.py, on clothing images.

Reaches >= 87 % test accuracy within 5 epochs.

    python examples/fashion/skip.py --data ../shared/data [--epochs 5]
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _common import arguments, images, run  # noqa: E402
from mnist.skip import network  # noqa: E402

if __name__ == "__main__":
    args = arguments(__doc__)
    run(network(), images("fashion", args), args, __file__, target=0.87)
