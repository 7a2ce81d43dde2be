"""Dense layer: ``z = x @ W.T + b``.

The products are BLAS calls. The caller holds BLAS to one thread while kernels run (see
``neurons/_threads.py``); to use every core, large products are split into one block of rows
per Numba thread, each block a single-threaded GEMM that owns its slice of the output.
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


@jit
def _blocks(rows):
    """``(count, size)``: at most one block of rows per thread."""
    count = min(BLOCKS, rows)
    return count, (rows + count - 1) // count


@pjit
def _matmul_t_split(w, xt):
    """``w @ xt`` with the rows of ``w`` split over threads; w (U, K), xt (K, N) -> (U, N)."""
    u = w.shape[0]
    out = np.empty((u, xt.shape[1]), w.dtype)
    count, size = _blocks(u)
    for c in prange(count):
        lo, hi = c * size, min(u, (c + 1) * size)
        if lo < hi:
            out[lo:hi] = np.dot(w[lo:hi], xt)
    return out


@jit
def dense_forward(x, w, b):
    """x (N, in), w (units, in), b (units,) or (0,) for no bias -> z (N, units)."""
    n, units = x.shape[0], w.shape[0]
    if n * units * x.shape[1] >= SPLIT and BLOCKS > 1:
        z = np.ascontiguousarray(_matmul_t_split(w, x.T).T)
    else:
        z = np.dot(x, w.T)
    if b.shape[0] > 0:
        for i in range(n):
            for j in range(units):
                z[i, j] += b[j]
    return z


@jit
def dense_backward(dz, x, w, need_dx):
    """Gradients of ``z = x @ W.T + b`` given ``dz`` (N, units).

    Returns ``(dx, dw, db)``: dx (N, in) (empty when ``need_dx`` is False), dw (units, in),
    db (units,).
    """
    n, units = dz.shape
    split = n * units * x.shape[1] >= SPLIT and BLOCKS > 1
    dzt = np.ascontiguousarray(dz.T)
    dw = _matmul_t_split(dzt, x) if split else np.dot(dzt, x)
    db = np.zeros(units, dz.dtype)
    for j in range(units):
        s = dz.dtype.type(0.0)
        for i in range(n):
            s += dzt[j, i]
        db[j] = s
    if need_dx:
        dx = np.ascontiguousarray(_matmul_t_split(w.T.copy(), dzt).T) if split else np.dot(dz, w)
    else:
        dx = np.empty((0, 0), dz.dtype)
    return dx, dw, db
