"""Inverted dropout with masks from a counter-based hash.

Element ``i`` is kept when ``u(seed, i) >= rate``, with ``u`` uniform in [0, 1) from the
splitmix64 finaliser of ``seed + i·γ``. The mask depends only on (seed, i), never on the
thread that draws it, so results are identical for any thread count.
"""
import numpy as np
from numba import prange

from ._config import pjit, jit

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


@jit
def _uniform(seed, i):
    z = np.uint64(seed) + np.uint64(i + 1) * _GAMMA
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    z = z ^ (z >> np.uint64(31))
    return np.float64(z >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@pjit
def dropout_forward(x, rate, seed):
    """Inverted dropout on a flat array ``x`` (any length).

    Returns ``(y, mask)``: ``mask`` holds ``0`` for dropped and ``1/(1-rate)`` for kept
    elements (in x's dtype), ``y = x · mask``.
    """
    n = x.shape[0]
    y = np.empty_like(x)
    mask = np.empty_like(x)
    keep = x.dtype.type(1.0 / (1.0 - rate))
    for i in prange(n):
        m = keep if _uniform(seed, i) >= rate else x.dtype.type(0.0)
        mask[i] = m
        y[i] = x[i] * m
    return y, mask


@pjit
def dropout_backward(dy, mask):
    """``dx = dy · mask`` (flat arrays)."""
    dx = np.empty_like(dy)
    for i in prange(dy.shape[0]):
        dx[i] = dy[i] * mask[i]
    return dx
