"""FTIR spectra, MLP with a weight-tied feedback block (one dense layer applied twice, inskips).

    python examples/ftir/mlp/feedback.py [--data ftir.csv] [--task both]
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _ftir import arguments, neurons, outputs, run  # noqa: E402
from neurons.layers import Dense  # noqa: E402


def network(task):
    units, act = outputs(task)
    return (neurons.Network((571,)).dense(64, "relu")
            .feedback([Dense(64, "relu")], loops=2, inskips=True, accumulation="add").dense(units, act))


if __name__ == "__main__":
    run(network, arguments(__doc__))
