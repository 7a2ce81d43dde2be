"""MNIST read row by row: an LSTM over 28 steps of 28 pixels.

Each image becomes a sequence (``neurons.datasets.as_sequences``: (N, 1, 28, 28) -> (N, 28, 28),
one row of pixels per step); LSTM 128 (its last step) -> dense 10 softmax, Adam, cross-entropy.
Reaches >= 98 % test accuracy.

    python examples/mnist/sequential.py --data ../shared/data [--epochs 5]
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _common import arguments, images, neurons, run  # noqa: E402
from neurons import datasets  # noqa: E402


def network():
    return (neurons.Network((28, 28))                  # (steps, features): one row per step
            .recurrent(128, "lstm")                    # the last step's 128 units
            .dense(10, "softmax")
            .set_optimizer(neurons.optimizers.Adam(lr=1e-3))
            .set_objective("cross_entropy"))


def sequences(data):
    return tuple((datasets.as_sequences(x), y) for x, y in data)


if __name__ == "__main__":
    args = arguments(__doc__)
    run(network(), sequences(images("mnist", args)), args, __file__, target=0.98)
