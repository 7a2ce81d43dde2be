"""MNIST: the original's quickstart CNN on the real data set.

conv 5x3x3 pad 1 relu -> maxpool 2 -> dense 100 relu -> dense 10 softmax (no biases), Adam,
cross-entropy. Reaches >= 97.5 % test accuracy within 5 epochs.

    python examples/mnist/plain.py --data ../shared/data [--epochs 5]
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _common import arguments, images, quickstart_cnn, run  # noqa: E402


def network():
    return quickstart_cnn()


if __name__ == "__main__":
    args = arguments(__doc__)
    run(network(), images("mnist", args), args, __file__, target=0.975)
