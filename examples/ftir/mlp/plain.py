"""FTIR spectra, MLP: 571 -> 64 relu -> 64 relu -> 28 classes (softmax) or 1 target (linear).

    python examples/ftir/mlp/plain.py [--data ftir.csv] [--task both]
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _ftir import arguments, neurons, outputs, run  # noqa: E402


def network(task):
    units, act = outputs(task)
    return neurons.Network((571,)).dense(64, "relu").dense(64, "relu").dense(units, act)


if __name__ == "__main__":
    run(network, arguments(__doc__))
