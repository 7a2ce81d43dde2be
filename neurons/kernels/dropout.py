"""Inverted dropout with masks from a counter-based hash.

Element ``i`` is kept when ``u(seed, i) >= rate``, with ``u`` uniform in [0, 1) from the
splitmix64 finaliser of ``seed + (i + 1)·γ``. The mask depends only on (seed, i), never on the
thread that draws it, so results are identical for any thread count. ``splitmix64`` is the one
hash of the package: ``graph.py`` derives each layer's dropout seed with it too. Since the hash
reads ``seed + (i + 1)·γ``, the seed ``shift(seed, e)`` draws the mask of ``seed`` from element
``e`` on: a slice of a batch (a rank's share in data-parallel training) gets its rows of the mask
of the whole batch.
"""
import numpy as np

from ._blocks import block_count, parallel
from ._config import jit, span

# below this many elements a pass runs as one block, without the thread pool
PARALLEL_MIN = 65536

# splitmix64's constants: the increment (2^64 / golden ratio) and the finaliser's two multipliers
GAMMA = np.uint64(0x9E3779B97F4A7C15)
M1 = np.uint64(0xBF58476D1CE4E5B9)
M2 = np.uint64(0x94D049BB133111EB)


@jit
def splitmix64(z):
    """The splitmix64 finaliser of the uint64 ``z``: a uint64 whose every bit depends on every bit of z."""
    z = (z ^ (z >> np.uint64(30))) * M1
    z = (z ^ (z >> np.uint64(27))) * M2
    return z ^ (z >> np.uint64(31))


def shift(seed, elements):
    """The seed whose mask is ``seed``'s from element ``elements`` on: ``u(shift(s, e), i) == u(s, i + e)``
    (a Python int below 2^64)."""
    return (int(seed) + int(elements) * int(GAMMA)) & 0xFFFFFFFFFFFFFFFF


@jit
def _uniform(seed, i):
    """Uniform in [0, 1): the top 53 bits of splitmix64(seed + (i + 1)·γ)."""
    z = splitmix64(np.uint64(seed) + np.uint64(i + 1) * GAMMA)
    return np.float64(z >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@jit
def _forward_body(blk, blocks, x, rate, seed, y, mask):
    keep = x.dtype.type(1.0 / (1.0 - rate))
    lo, hi = span(blk, blocks, x.shape[0])
    for i in range(lo, hi):
        m = keep if _uniform(seed, i) >= rate else x.dtype.type(0.0)
        mask[i] = m
        y[i] = x[i] * m


_forward_blocks = parallel(_forward_body)


@jit
def _backward_body(blk, blocks, dy, mask, dx):
    lo, hi = span(blk, blocks, dy.shape[0])
    for i in range(lo, hi):
        dx[i] = dy[i] * mask[i]


_backward_blocks = parallel(_backward_body)


def _element_blocks(x):
    """How many blocks of elements a pass over the flat ``x`` takes: one per thread, or one below
    ``PARALLEL_MIN`` elements."""
    return block_count(x.shape[0], x.shape[0], PARALLEL_MIN)


def dropout_forward(x, rate, seed):
    """Inverted dropout on a flat array ``x`` (any length).

    Returns ``(y, mask)``: ``mask`` holds ``0`` for dropped and ``1/(1-rate)`` for kept
    elements (in x's dtype), ``y = x · mask``. ``seed``: an int in [0, 2^64).
    """
    x = np.ascontiguousarray(x)
    y, mask = np.empty_like(x), np.empty_like(x)
    blocks = _element_blocks(x)
    _forward_blocks(blocks, (blocks, x, float(rate), np.uint64(seed), y, mask))
    return y, mask


def dropout_backward(dy, mask):
    """``dx = dy · mask`` (flat arrays)."""
    dy = np.ascontiguousarray(dy)
    dx = np.empty_like(dy)
    blocks = _element_blocks(dy)
    _backward_blocks(blocks, (blocks, dy, np.ascontiguousarray(mask), dx))
    return dx
