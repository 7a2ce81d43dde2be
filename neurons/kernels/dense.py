"""Dense layer: ``z = x @ W.T + b``.

The products are BLAS GEMMs (``blas.gemm``, transposes as flags, no copies). The caller holds
BLAS to one thread while kernels run (see ``neurons/_threads.py``); to use every core, large
products are split into one block of output columns per Numba thread, each block a
single-threaded GEMM that owns its slice of the output. Small products run as one block,
called straight from Python: a parallel kernel's launch costs microseconds (more when a core is
busy elsewhere) and its compilation seconds, for nothing on a product this small. The block
count is an argument, not a compile-time choice, so each kernel compiles once per dtype. The
blocks' parallel loops are ``_blocks.py``'s: each block a serial function called by address.
"""
import numpy as np

from ._blocks import block_count_in_kernels, parallel
from ._config import jit, span
from .blas import gemm

# below this many multiply-adds one GEMM call beats splitting it over threads
SPLIT = 200_000


@jit
def forward_blocks(rows, units, inputs):
    """How many blocks ``dense_forward`` splits its product into: a block of units per thread, or
    one below ``SPLIT`` multiply-adds (``chain.py`` splits its products by this too)."""
    return block_count_in_kernels(units, rows * units * inputs, SPLIT)


@jit
def backward_blocks(rows, units, inputs):
    """How many blocks ``dense_backward`` splits its products into (units for dw and db, input
    columns for dx)."""
    return block_count_in_kernels(max(units, inputs), rows * units * inputs, SPLIT)


@jit
def _forward_body(blk, blocks, x, w, b, z):
    """Block ``blk`` of ``blocks``: its units of ``z``."""
    lo, hi = span(blk, blocks, w.shape[0])
    if lo < hi:
        zb = z[:, lo:hi]
        gemm(False, True, 1.0, x, w[lo:hi], 0.0, zb)
        if b.shape[0] > 0:
            for i in range(z.shape[0]):
                row = zb[i]
                for j in range(hi - lo):
                    row[j] += b[lo + j]


@jit
def _backward_body(blk, blocks, dz, x, w, need_dx, dx, dw, db):
    """Block ``blk`` of ``blocks``: dw and db for its units, dx for its input columns."""
    lo, hi = span(blk, blocks, dz.shape[1])
    if lo < hi:
        gemm(True, False, 1.0, dz[:, lo:hi], x, 0.0, dw[lo:hi])
        for j in range(lo, hi):
            db[j] = 0.0
        for i in range(dz.shape[0]):
            row = dz[i]
            for j in range(lo, hi):
                db[j] += row[j]
    if need_dx:
        lo, hi = span(blk, blocks, x.shape[1])
        if lo < hi:
            gemm(False, False, 1.0, dz, w[:, lo:hi], 0.0, dx[:, lo:hi])


_forward_blocks = parallel(_forward_body)


_backward_blocks = parallel(_backward_body)


def dense_forward(x, w, b):
    """x (N, in), w (units, in), b (units,) or (0,) for no bias -> z (N, units)."""
    x, w = np.ascontiguousarray(x), np.ascontiguousarray(w)
    z = np.empty((x.shape[0], w.shape[0]), x.dtype)
    # a block of units per thread
    blocks = forward_blocks(x.shape[0], w.shape[0], x.shape[1])
    _forward_blocks(blocks, (blocks, x, w, b, z))
    return z


def dense_backward(dz, x, w, need_dx):
    """Gradients of ``z = x @ W.T + b`` given ``dz`` (N, units).

    Returns ``(dx, dw, db)``: dx (N, in) (None unless ``need_dx``), dw (units, in), db (units,).
    """
    c = np.ascontiguousarray
    dz, x, w = c(dz), c(x), c(w)
    dx = np.empty((x.shape[0] if need_dx else 0, x.shape[1]), x.dtype)
    dw, db = np.empty(w.shape, x.dtype), np.empty(w.shape[0], x.dtype)
    # a block of units (dw, db) and a block of input columns (dx) per thread
    blocks = backward_blocks(dz.shape[0], w.shape[0], x.shape[1])
    _backward_blocks(blocks, (blocks, dz, x, w, bool(need_dx), dx, dw, db))
    return (dx if need_dx else None), dw, db
