"""MNIST: a CNN with a skip connection around its second convolution.

conv 8x3x3 relu -> conv 8x3x3 relu (+ its own input: connect(1, 2)) -> maxpool 2 -> dense 100
relu -> dense 10 softmax. Reaches >= 97 % test accuracy.

    python examples/mnist/skip.py --data ../shared/data [--epochs 5]
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _common import arguments, images, run, two_conv_cnn  # noqa: E402


def network():
    return two_conv_cnn().connect(1, 2)


if __name__ == "__main__":
    args = arguments(__doc__)
    run(network(), images("mnist", args), args, __file__, target=0.97)
