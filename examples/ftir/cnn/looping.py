"""FTIR spectra, a 1-D CNN whose second convolution loops back into itself twice.

conv 8x(1x9) stride (1,2) relu -> maxpool (1,2) -> conv 8x(1x5) relu -> maxpool (1,2) ->
dense 64 relu -> 28 classes (softmax) or 1 target (linear).

    python examples/ftir/cnn/looping.py [--data ftir.csv] [--task both]
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _ftir import arguments, run  # noqa: E402
from plain import network as plain  # noqa: E402


def network(task):
    """The plain 1-D CNN of ``plain.py``, plus loopback(2, 2, 2)."""
    return plain(task).loopback(2, 2, 2)


if __name__ == "__main__":
    run(network, arguments(__doc__), image=True)
