"""Stride-1 convolution by im2col + GEMM at the padded width, for many filters or a long
reduction (see ``conv.py``'s table).

A tap's im2col row is one contiguous slice of the flat padded plane (see ``conv_planes.py``), a
copy the compiler turns into a memcpy, at the price of ``wp - ow`` extra columns per output row
in the GEMM (computed and dropped; ``dy`` is widened with zeros so that they add nothing to the
gradients). Measured on the 32 -> 64 filter, 14 x 14 layer: im2col per sample 45 -> 10 us
against the row-by-row im2col of ``conv_strided.py``.

Each pass is one block of samples per thread, each sample's products in buffers of the block's
own; each block a serial ``*_body`` run by ``_blocks.parallel``. The forward and input-gradient
products are register tiles (``tiles.products``), which run the few-row and shallow products of
few-filter layers faster than OpenBLAS (8 x 72 x 224, 8 filters over 8 channels of 14 x 14: 56 ->
62 GFLOP/s a thread; its input gradient 72 x 8 x 224: 51 -> 72; 64 x 288 x 224: 88 -> 96); the
weights' gradient, which reads an operand transposed, is a single-threaded BLAS GEMM (the caller
holds BLAS to one thread). One GEMM per block instead (all its samples' im2col side by side) gains
nothing: on the 32 -> 64 filter, 14 x 14 layer the GEMM is 90 % of a sample's forward (127 of
141 us; pad, im2col and copy-out 5 us each), and SciPy's sgemm runs (64, 288) @ (288, 224 · S)
at 65 GFLOP/s a thread for S = 1 and for S = 16 alike (8 -> 8 filters: 30-35 GFLOP/s for 1 to 32
samples side by side). Nor do 9 GEMMs a sample, one per tap,
read straight from the padded plane without im2col (a reduction of C = 32 each): forward 2.3 ->
2.4 ms, backward 4.8 -> 5.8 ms at batch 32. (Register tiles that read the taps straight from the
plane do gain: ``conv_taps.py``, whose forward every stride-1 convolution now runs, and whose
backward the layers with "same" padding and fewer than ``conv.TAPS_FILTERS`` filters.)

- ``forward``: ``conv_taps.forward``.
- ``backward``: dx, dk and db in one pass over the batch, each sample's dy widened once for both
  GEMMs; each block adds into dk and db partials of its own, summed in block order after it.
- ``correlate``, ``scatter``, ``weight_grad``: the three primitives of ``conv.py`` at stride 1
  (``stride`` is always (1, 1) here; it is taken so that every implementation is called alike).
"""
import numpy as np

from ._blocks import block_count, parallel
from ._config import jit, span
from .blas import gemm
from .conv_planes import (at, pad_plane, padded_length, sum_blocks, unpad, unpad_plane, unpool_plane, widen,
                          widen_plane)
from .conv_taps import forward
from .tiles import SET, aligned_empty, products


@jit
def _im2col(plane_s, kh, kw, wp, dilation, length, cols):
    """cols (C·kh·kw, length): row (c, i, j) is tap (i, j)'s slice of one sample's plane c."""
    dh, dw = dilation
    for ch in range(plane_s.shape[0]):
        for i in range(kh):
            for j in range(kw):
                start = at(i * dh, j * dw, wp)
                src = plane_s[ch, start:start + length]
                dst = cols[(ch * kh + i) * kw + j]
                for t in range(length):
                    dst[t] = src[t]


@jit
def _col2im(cols, plane_s, kh, kw, wp, dilation, length):
    """The adjoint of ``_im2col``: add each row of cols back onto its tap's slice."""
    dh, dw = dilation
    for ch in range(plane_s.shape[0]):
        for i in range(kh):
            for j in range(kw):
                start = at(i * dh, j * dw, wp)
                dst = plane_s[ch, start:start + length]
                src = cols[(ch * kh + i) * kw + j]
                for t in range(length):
                    dst[t] += src[t]


def correlate(x, k, stride, padding, dilation, oh, ow):
    """``forward`` without bias or ReLU."""
    return forward(x, k, np.empty(0, k.dtype), False, padding, dilation, oh, ow)


@jit
def _scatter_gemm_flat_body(blk, blocks, dyw, kt, kh, kw, dh, dw, wp, dxp):
    """``kt``: k as (C·kh·kw, F) (see ``backward``)."""
    n, f, length = dyw.shape
    cols = aligned_empty(kt.shape[0], length, dyw)
    no_init = np.empty(0, dyw.dtype)  # products' init row: unused when setting c
    lo, hi = span(blk, blocks, n)
    for s in range(lo, hi):
        products(kt, dyw[s], cols, no_init, False, SET)
        _col2im(cols, dxp[s], kh, kw, wp, (dh, dw), length)


_scatter_gemm_flat_blocks = parallel(_scatter_gemm_flat_body)


def scatter(dy, k, stride, padding, dilation, h, w):
    """dx (N, C, h, w) from dy (N, F, oh, ow): a block of samples per thread."""
    n, f, c, kh, kw = dy.shape[0], k.shape[0], k.shape[1], k.shape[2], k.shape[3]
    wp = w + 2 * padding[1]
    dyw = widen(dy, dy[:0], wp)
    dxp = np.zeros((n, c, padded_length(h, padding[0], wp, kw, dilation[1])), dy.dtype)
    kt = np.ascontiguousarray(k.reshape(f, c * kh * kw).T)
    blocks = block_count(n)
    _scatter_gemm_flat_blocks(blocks, (blocks, dyw, kt, kh, kw, dilation[0], dilation[1], wp, dxp))
    return unpad(dxp, h, w, padding[0], padding[1])


@jit(inline="always")
def _backward_buffers(f, c, h, w, oh, kh, kw, ph, pw, dw, need_dx, like):
    """A block's buffers for the backward bodies: the padded width, the output's length at it,
    x's padded planes, dx's, x's im2col, dx's columns, the widened dy and an empty row (the
    products' init row: unused when they set their output)."""
    wp = w + 2 * pw
    length = oh * wp
    size = padded_length(h, ph, wp, kw, dw)
    ckk = c * kh * kw
    return (wp, length, np.empty((c, size), like.dtype), np.empty((c if need_dx else 0, size), like.dtype),
            np.empty((ckk, length), like.dtype), aligned_empty(ckk, length, like), aligned_empty(f, length, like),
            np.empty(0, like.dtype))


@jit(inline="always")
def _sample_gradients(x, s, kt, kh, kw, ph, pw, dh, dw, wp, length, dyw, xps, dxps, cols, dcols, no_init, need_dx, dx,
                      dk):
    """Sample ``s``'s part of dk (added into ``dk``) and its dx, once its dy is widened in ``dyw``."""
    for ch in range(x.shape[1]):
        pad_plane(x[s, ch], xps[ch], ph, pw)
    _im2col(xps, kh, kw, wp, (dh, dw), length, cols)
    if dk.shape[0] != dyw.shape[0]:         # dk transposed (see ``backward``)
        gemm(False, True, 1.0, cols, dyw, 1.0, dk)
    else:
        gemm(False, True, 1.0, dyw, cols, 1.0, dk)
    if need_dx:
        products(kt, dyw, dcols, no_init, False, SET)
        dxps[:] = dx.dtype.type(0.0)
        _col2im(dcols, dxps, kh, kw, wp, (dh, dw), length)
        for ch in range(x.shape[1]):
            unpad_plane(dxps[ch], dx[s, ch], ph, pw)


@jit
def _backward_gemm_body(blk, blocks, dy, relu_y, x, kt, kh, kw, ph, pw, dh, dw, need_dx, dx, partial, partial_db):
    """Block ``blk`` of the samples, adding into its own dk and db partials: each sample's dy is
    widened once (its sums per filter taken on the way, for db; through the ReLU when ``relu_y``
    is not empty) and serves both GEMMs (dk from the im2col of x, dx through col2im). ``kt`` is
    k as (C·kh·kw, F); a partial is dk (F, C·kh·kw), or its transpose when it has more rows
    than filters (see ``backward``)."""
    f, oh = dy.shape[1], dy.shape[2]
    wp, length, xps, dxps, cols, dcols, dyw, no_init = _backward_buffers(f, x.shape[1], x.shape[2], x.shape[3], oh, kh,
                                                                         kw, ph, pw, dw, need_dx, dy)
    dk, db = partial[blk], partial_db[blk]
    lo, hi = span(blk, blocks, dy.shape[0])
    for s in range(lo, hi):
        for q in range(f):
            db[q] += widen_plane(dy, relu_y, s, q, dyw[q], wp)
        _sample_gradients(x, s, kt, kh, kw, ph, pw, dh, dw, wp, length, dyw, xps, dxps, cols, dcols, no_init, need_dx,
                          dx, dk)


@jit
def _backward_gemm_pooled_body(blk, blocks, dy, arg, relu_y, x, kt, kh, kw, ph, pw, dh, dw, need_dx, dx, partial,
                               partial_db):
    """``_backward_gemm_body`` of a convolution and the 2 x 2 max-pool that alone reads its output
    (see ``conv_taps.forward_pooled``), from the pool's dy (N, F, oh // 2, ow // 2), its ``arg``
    and (when the convolution has a ReLU, else empty) its values ``relu_y``."""
    f, c, h, w = dy.shape[1], x.shape[1], x.shape[2], x.shape[3]
    oh, ow = h + 2 * ph - dh * (kh - 1), w + 2 * pw - dw * (kw - 1)
    wp, length, xps, dxps, cols, dcols, dyw, no_init = _backward_buffers(f, c, h, w, oh, kh, kw, ph, pw, dw, need_dx,
                                                                         dy)
    dk, db = partial[blk], partial_db[blk]
    relu = relu_y.shape[0] > 0
    mask = relu_y if relu else dy
    lo, hi = span(blk, blocks, dy.shape[0])
    for s in range(lo, hi):
        for q in range(f):
            db[q] += unpool_plane(dy[s, q], mask[s, q], arg[s, q], relu, dyw[q], ow, wp)
        _sample_gradients(x, s, kt, kh, kw, ph, pw, dh, dw, wp, length, dyw, xps, dxps, cols, dcols, no_init, need_dx,
                          dx, dk)


_backward_gemm_blocks = parallel(_backward_gemm_body)
_backward_gemm_pooled_blocks = parallel(_backward_gemm_pooled_body)


def backward(dy, relu_y, x, k, padding, dilation, need_dx):
    """``(dx, dk, db)`` at stride 1; dx is empty (0, C, H, W) unless ``need_dx``. One pass, against
    separate passes at batch 128: 18.5 -> 14.8 ms for 32 -> 64 filters on 14 x 14, 8.5 -> 1.5 ms for
    1 -> 32 filters on 28 x 28.

    The GEMMs are laid out for the output with more rows than columns: SciPy's OpenBLAS (0.3.30,
    its Haswell kernels on this AMD host) runs a GEMM with a row-major output of 64 columns at
    65-68 GFLOP/s a thread, 80-82 with 64 rows instead. So dk is accumulated as (C·kh·kw, F)
    when it has more taps than filters (32 -> 64 filters 3 x 3: 288 x 64, its GEMM 68 -> 82
    GFLOP/s; 1 -> 32 filters keeps (F, 9), the faster there), and dx's GEMM reads k as
    (C·kh·kw, F), not through a transposed operand (79 -> 82)."""
    return _backward(_backward_gemm_blocks, (dy, relu_y), x, k, padding, dilation, need_dx)


def backward_pooled(dy, arg, relu_y, x, k, padding, dilation, need_dx):
    """``backward`` of a convolution and the 2 x 2 max-pool with stride 2 that alone reads its
    output, from the pool's dy, its ``arg`` and (the ReLU's mask, or empty) its values: the
    backward of ``conv_taps.forward_pooled``'s layer. ``(dx, dk, db)``."""
    return _backward(_backward_gemm_pooled_blocks, (dy, arg, relu_y), x, k, padding, dilation, need_dx)


def _backward(run, dys, x, k, padding, dilation, need_dx):
    """``run`` (a backward body's blocks) on dy and what goes with it (``dys``); ``(dx, dk, db)``."""
    dy = dys[0]
    n, f = dy.shape[0], dy.shape[1]
    kh, kw = k.shape[2], k.shape[3]
    taps = k.shape[1] * kh * kw
    kt = np.ascontiguousarray(k.reshape(f, taps).T)
    dx = np.empty((n if need_dx else 0,) + x.shape[1:], dy.dtype)
    blocks = block_count(n)
    transposed = taps > f
    partial = np.zeros((blocks,) + ((taps, f) if transposed else (f, taps)), dy.dtype)
    partial_db = np.zeros((blocks, f), dy.dtype)
    run(blocks, (blocks,) + dys + (x, kt, kh, kw, padding[0], padding[1], dilation[0], dilation[1], bool(need_dx), dx,
                                   partial, partial_db))
    dk = sum_blocks(partial.reshape(blocks, f * taps)).reshape(partial.shape[1:])
    return dx, np.ascontiguousarray(dk.T if transposed else dk).reshape(k.shape), sum_blocks(partial_db)


def weight_grad(dy, x, stride, padding, dilation, kh, kw):
    """dk of ``backward`` alone: no dx, no ReLU (its kernel argument only carries the shape)."""
    k = np.zeros((dy.shape[1], x.shape[1], kh, kw), dy.dtype)
    return backward(dy, dy[:0], x, k, padding, dilation, False)[1]
