"""MNIST: a CNN with a weight-tied feedback block (one convolution applied twice, its input
added back in before the second pass).

conv 8x3x3 relu -> feedback([conv 8x3x3 relu], loops 2, inskips) -> maxpool 2 -> dense 100 relu
-> dense 10 softmax. Reaches >= 97 % test accuracy.

    python examples/mnist/feedback.py --data ../shared/data [--epochs 5]
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _common import arguments, images, neurons, run  # noqa: E402
from neurons.layers import Convolution  # noqa: E402


def network():
    return (neurons.Network((1, 28, 28))
            .convolution(8, 3, padding=1, activation="relu")
            .feedback([Convolution(8, 3, padding=1, activation="relu")], loops=2, inskips=True,
                      accumulation="add")
            .maxpool(2)
            .dense(100, "relu")
            .dense(10, "softmax")
            .set_optimizer(neurons.optimizers.Adam(lr=1e-3))
            .set_objective("cross_entropy"))


if __name__ == "__main__":
    args = arguments(__doc__)
    run(network(), images("mnist", args), args, __file__, target=0.97)
