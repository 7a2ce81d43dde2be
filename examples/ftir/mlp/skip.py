"""FTIR spectra, MLP with a skip connection bypassing its second layer (connect(1, 2)).

    python examples/ftir/mlp/skip.py [--data ftir.csv] [--task both]
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _ftir import arguments, neurons, outputs, run  # noqa: E402


def network(task):
    units, act = outputs(task)
    return neurons.Network((571,)).dense(64, "relu").dense(64, "relu").dense(units, act).connect(1, 2)


if __name__ == "__main__":
    run(network, arguments(__doc__))
