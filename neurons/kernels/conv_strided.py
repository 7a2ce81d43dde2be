"""Convolution at any stride: the three primitives of ``conv.py``, a row at a time.

``tap_row`` (see ``conv_planes.py``) takes the ``ow`` elements that one kernel tap reads for one
output row from the flat padded plane, every ``sw``-th; the innermost loops run along it. Two
forms of each primitive (``conv.py``'s table picks one):

- ``*_rows``: direct loops. ``correlate_rows`` and ``scatter_rows`` take a block of (sample,
  filter) or (sample, channel) planes per thread, ``weight_grad_rows`` a block of kernel elements
  (each a full sum over the batch: the same bits for any thread count).
- ``*_gemm``: im2col + GEMM per sample, for many filters over a long reduction; a block of
  samples per thread, each sample a single-threaded GEMM (the caller holds BLAS to one thread).
  ``weight_grad_gemm`` adds into per-block partials, summed in block order after it.

Each block a serial ``*_body`` run by ``_blocks.parallel``.
"""
import numpy as np

from ._blocks import block_count, parallel
from ._config import jit, span
from .blas import gemm
from .conv_planes import at, pad, padded_length, sum_blocks, tail, tap_row, unpad


# ----------------------------------------------------------------------------- direct loops

@jit
def _correlate_rows_body(blk, blocks, xp, k, sh, sw, dh, dw, wp, y):
    n, f, oh, ow = y.shape
    c, kh, kw = k.shape[1], k.shape[2], k.shape[3]
    lo, hi = span(blk, blocks, n * f)
    for nf in range(lo, hi):
        s, q = nf // f, nf % f
        for ch in range(c):
            plane = xp[s, ch]
            for i in range(kh):
                for j in range(kw):
                    kv = k[q, ch, i, j]
                    for a in range(oh):
                        src = tap_row(plane, wp, a * sh + i * dh, j * dw, ow, sw)
                        dst = y[s, q, a]
                        for b in range(ow):
                            dst[b] += kv * src[b]


_correlate_rows_blocks = parallel(_correlate_rows_body)


def correlate_rows(x, k, stride, padding, dilation, oh, ow):
    n, f, kw, w = x.shape[0], k.shape[0], k.shape[3], x.shape[3]
    xp = pad(x, padding[0], padding[1], tail(kw, dilation[1]))
    y = np.zeros((n, f, oh, ow), x.dtype)
    blocks = block_count(n * f)
    _correlate_rows_blocks(blocks, (blocks, xp, k, stride[0], stride[1], dilation[0], dilation[1],
                                    w + 2 * padding[1], y))
    return y


@jit
def _scatter_rows_body(blk, blocks, dy, k, sh, sw, dh, dw, wp, dxp):
    n, f, oh, ow = dy.shape
    c, kh, kw = k.shape[1], k.shape[2], k.shape[3]
    lo, hi = span(blk, blocks, n * c)
    for nc in range(lo, hi):
        s, ch = nc // c, nc % c
        plane = dxp[s, ch]
        for q in range(f):
            for i in range(kh):
                for j in range(kw):
                    kv = k[q, ch, i, j]
                    for a in range(oh):
                        dst = tap_row(plane, wp, a * sh + i * dh, j * dw, ow, sw)
                        g = dy[s, q, a]
                        for b in range(ow):
                            dst[b] += kv * g[b]


_scatter_rows_blocks = parallel(_scatter_rows_body)


def scatter_rows(dy, k, stride, padding, dilation, h, w):
    n, c, kw = dy.shape[0], k.shape[1], k.shape[3]
    wp = w + 2 * padding[1]
    dxp = np.zeros((n, c, padded_length(h, padding[0], wp, kw, dilation[1])), dy.dtype)
    blocks = block_count(n * c)
    _scatter_rows_blocks(blocks, (blocks, dy, k, stride[0], stride[1], dilation[0], dilation[1], wp, dxp))
    return unpad(dxp, h, w, padding[0], padding[1])


@jit
def _weight_grad_rows_body(blk, blocks, dy, xp, sh, sw, dh, dw, wp, dk):
    n, f, oh, ow = dy.shape
    c, kh, kw = dk.shape[1], dk.shape[2], dk.shape[3]
    lo, hi = span(blk, blocks, f * c * kh * kw)
    for e in range(lo, hi):
        q, rest = e // (c * kh * kw), e % (c * kh * kw)
        ch, rest = rest // (kh * kw), rest % (kh * kw)
        i, j = rest // kw, rest % kw
        acc = dy.dtype.type(0.0)
        for s in range(n):
            plane = xp[s, ch]
            for a in range(oh):
                src = tap_row(plane, wp, a * sh + i * dh, j * dw, ow, sw)
                g = dy[s, q, a]
                for b in range(ow):
                    acc += g[b] * src[b]
        dk[q, ch, i, j] = acc


_weight_grad_rows_blocks = parallel(_weight_grad_rows_body)


def weight_grad_rows(dy, x, stride, padding, dilation, kh, kw):
    f, c, w = dy.shape[1], x.shape[1], x.shape[3]
    xp = pad(x, padding[0], padding[1], tail(kw, dilation[1]))
    dk = np.empty((f, c, kh, kw), dy.dtype)
    blocks = block_count(f * c * kh * kw)
    _weight_grad_rows_blocks(blocks, (blocks, dy, xp, stride[0], stride[1], dilation[0], dilation[1],
                                      w + 2 * padding[1], dk))
    return dk


# ----------------------------------------------------------------------------- im2col + GEMM

@jit
def _im2col(plane_s, kh, kw, wp, stride, dilation, oh, ow, cols):
    """cols (C·kh·kw, oh·ow) from one sample's padded planes (C, Hp·Wp + tail)."""
    sh, sw = stride
    dh, dw = dilation
    for ch in range(plane_s.shape[0]):
        plane = plane_s[ch]
        for i in range(kh):
            for j in range(kw):
                r = (ch * kh + i) * kw + j
                for a in range(oh):
                    src = tap_row(plane, wp, a * sh + i * dh, j * dw, ow, sw)
                    start = at(a, 0, ow)
                    dst = cols[r, start:start + ow]
                    for b in range(ow):
                        dst[b] = src[b]


@jit
def _col2im(cols, plane_s, kh, kw, wp, stride, dilation, oh, ow):
    """The adjoint of ``_im2col``: add cols back into one sample's padded planes."""
    sh, sw = stride
    dh, dw = dilation
    for ch in range(plane_s.shape[0]):
        plane = plane_s[ch]
        for i in range(kh):
            for j in range(kw):
                r = (ch * kh + i) * kw + j
                for a in range(oh):
                    dst = tap_row(plane, wp, a * sh + i * dh, j * dw, ow, sw)
                    start = at(a, 0, ow)
                    src = cols[r, start:start + ow]
                    for b in range(ow):
                        dst[b] += src[b]


@jit
def _correlate_gemm_body(blk, blocks, xp, k, sh, sw, dh, dw, wp, y):
    n, f, oh, ow = y.shape
    c, kh, kw = k.shape[1], k.shape[2], k.shape[3]
    k2 = k.reshape(f, c * kh * kw)
    cols = np.empty((c * kh * kw, oh * ow), y.dtype)
    lo, hi = span(blk, blocks, n)
    for s in range(lo, hi):
        _im2col(xp[s], kh, kw, wp, (sh, sw), (dh, dw), oh, ow, cols)
        gemm(False, False, 1.0, k2, cols, 0.0, y[s].reshape(f, oh * ow))


_correlate_gemm_blocks = parallel(_correlate_gemm_body)


def correlate_gemm(x, k, stride, padding, dilation, oh, ow):
    n, w, kw = x.shape[0], x.shape[3], k.shape[3]
    xp = pad(x, padding[0], padding[1], tail(kw, dilation[1]))
    y = np.empty((n, k.shape[0], oh, ow), x.dtype)
    blocks = block_count(n)
    _correlate_gemm_blocks(blocks, (blocks, xp, k, stride[0], stride[1], dilation[0], dilation[1],
                                    w + 2 * padding[1], y))
    return y


@jit
def _scatter_gemm_body(blk, blocks, dy, k, sh, sw, dh, dw, wp, dxp):
    n, f, oh, ow = dy.shape
    c, kh, kw = k.shape[1], k.shape[2], k.shape[3]
    k2 = k.reshape(f, c * kh * kw)
    cols = np.empty((c * kh * kw, oh * ow), dy.dtype)
    lo, hi = span(blk, blocks, n)
    for s in range(lo, hi):
        gemm(True, False, 1.0, k2, dy[s].reshape(f, oh * ow), 0.0, cols)
        _col2im(cols, dxp[s], kh, kw, wp, (sh, sw), (dh, dw), oh, ow)


_scatter_gemm_blocks = parallel(_scatter_gemm_body)


def scatter_gemm(dy, k, stride, padding, dilation, h, w):
    n, c, kw = dy.shape[0], k.shape[1], k.shape[3]
    wp = w + 2 * padding[1]
    dxp = np.zeros((n, c, padded_length(h, padding[0], wp, kw, dilation[1])), dy.dtype)
    blocks = block_count(n)
    _scatter_gemm_blocks(blocks, (blocks, dy, k, stride[0], stride[1], dilation[0], dilation[1], wp, dxp))
    return unpad(dxp, h, w, padding[0], padding[1])


@jit
def _weight_grad_gemm_body(blk, blocks, dy, xp, kh, kw, sh, sw, dh, dw, wp, partial):
    n, f, oh, ow = dy.shape
    c = xp.shape[1]
    cols = np.empty((c * kh * kw, oh * ow), dy.dtype)
    lo, hi = span(blk, blocks, n)
    for s in range(lo, hi):
        _im2col(xp[s], kh, kw, wp, (sh, sw), (dh, dw), oh, ow, cols)
        gemm(False, True, 1.0, dy[s].reshape(f, oh * ow), cols, 1.0, partial[blk])


_weight_grad_gemm_blocks = parallel(_weight_grad_gemm_body)


def weight_grad_gemm(dy, x, stride, padding, dilation, kh, kw):
    n, f, c, w = dy.shape[0], dy.shape[1], x.shape[1], x.shape[3]
    xp = pad(x, padding[0], padding[1], tail(kw, dilation[1]))
    blocks = block_count(n)
    partial = np.zeros((blocks, f, c * kh * kw), dy.dtype)
    _weight_grad_gemm_blocks(blocks, (blocks, dy, xp, kh, kw, stride[0], stride[1], dilation[0], dilation[1],
                                      w + 2 * padding[1], partial))
    return sum_blocks(partial.reshape(blocks, f * c * kh * kw)).reshape(f, c, kh, kw)
