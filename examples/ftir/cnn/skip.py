"""FTIR spectra, a 1-D CNN with a skip connection bypassing its second convolution (connect(2, 3)).

conv 8x(1x9) stride (1,2) relu -> maxpool (1,2) -> conv 8x(1x5) relu -> maxpool (1,2) ->
dense 64 relu -> 28 classes (softmax) or 1 target (linear).

    python examples/ftir/cnn/skip.py [--data ftir.csv] [--task both]
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _ftir import arguments, run  # noqa: E402
from plain import network as plain  # noqa: E402


def network(task):
    """The plain 1-D CNN of ``plain.py``, plus connect(2, 3)."""
    return plain(task).connect(2, 3)


if __name__ == "__main__":
    run(network, arguments(__doc__), image=True)
