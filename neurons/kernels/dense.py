"""Dense layer: ``z = x @ W.T + b``.

The products are BLAS calls. The caller holds BLAS to one thread while kernels run (see
``neurons/_threads.py``); to use every core, large products are split into one block of rows
per Numba thread, each block a single-threaded GEMM that owns its slice of the output. The
split kernel takes C-contiguous operands only, so it compiles once per dtype (a GEMM inside a
``prange`` costs seconds of compilation); the choice is made in Python.
"""
import numpy as np
from numba import prange
from numba.core import config

from ._config import jit, pjit

# below this many multiply-adds one GEMM call beats splitting it over threads
SPLIT = 200_000
# one block per configured thread; a compile-time constant (the cache folder is keyed by it),
# so the blocks, and so the results, do not depend on set_num_threads at run time
BLOCKS = config.NUMBA_NUM_THREADS


@pjit
def gemm_rows(a, b):
    """``a @ b`` for C-contiguous a (M, K) and b (K, N), the rows of ``a`` split over threads."""
    m = a.shape[0]
    out = np.empty((m, b.shape[1]), a.dtype)
    count = min(BLOCKS, m)
    size = (m + count - 1) // count
    for c in prange(count):
        lo, hi = c * size, min(m, (c + 1) * size)
        if lo < hi:
            out[lo:hi] = np.dot(a[lo:hi], b)
    return out


@jit
def _forward(x, w, b):
    z = np.dot(x, w.T)
    if b.shape[0] > 0:
        for i in range(z.shape[0]):
            for j in range(z.shape[1]):
                z[i, j] += b[j]
    return z


@jit
def _bias_rows(zt, b):
    """``zt`` (units, N) transposed to (N, units) with the bias added."""
    units, n = zt.shape
    z = np.empty((n, units), zt.dtype)
    for j in range(units):
        v = b[j] if b.shape[0] > 0 else zt.dtype.type(0.0)
        for i in range(n):
            z[i, j] = zt[j, i] + v
    return z


@jit
def _row_sums(a):
    out = np.empty(a.shape[0], a.dtype)
    for j in range(a.shape[0]):
        s = a.dtype.type(0.0)
        for i in range(a.shape[1]):
            s += a[j, i]
        out[j] = s
    return out


def _split(n, units, fan_in):
    return BLOCKS > 1 and n * units * fan_in >= SPLIT


def dense_forward(x, w, b):
    """x (N, in), w (units, in), b (units,) or (0,) for no bias -> z (N, units)."""
    if _split(x.shape[0], w.shape[0], x.shape[1]):
        return _bias_rows(gemm_rows(w, np.ascontiguousarray(x.T)), b)
    return _forward(x, w, b)


def dense_backward(dz, x, w, need_dx):
    """Gradients of ``z = x @ W.T + b`` given ``dz`` (N, units).

    Returns ``(dx, dw, db)``: dx (N, in) (None unless ``need_dx``), dw (units, in), db (units,).
    """
    dzt = np.ascontiguousarray(dz.T)
    split = _split(dz.shape[0], dz.shape[1], x.shape[1])
    dw = gemm_rows(dzt, x) if split else dzt @ x
    db = _row_sums(dzt)
    dx = None
    if need_dx:
        dx = np.ascontiguousarray(gemm_rows(np.ascontiguousarray(w.T), dzt).T) if split else dz @ w
    return dx, dw, db
