"""FTIR spectra, a 1-D CNN (each spectrum a 1x1x571 image).

conv 8x(1x9) stride (1,2) relu -> maxpool (1,2) -> conv 8x(1x5) relu -> maxpool (1,2) ->
dense 64 relu -> 28 classes (softmax) or 1 target (linear).

    python examples/ftir/cnn/plain.py [--data ftir.csv] [--task both]
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _ftir import arguments, neurons, outputs, run  # noqa: E402


def network(task):
    units, act = outputs(task)
    return (neurons.Network((1, 1, 571))
            .convolution(8, (1, 9), stride=(1, 2), activation="relu")
            .maxpool((1, 2), (1, 2))
            .convolution(8, (1, 5), padding=(0, 2), activation="relu")
            .maxpool((1, 2), (1, 2))
            .dense(64, "relu")
            .dense(units, act))


if __name__ == "__main__":
    run(network, arguments(__doc__), image=True)
