"""2-D convolution (cross-correlation with zero padding), batch-first NCHW.

Three primitives with explicit sizes serve both convolution and transposed convolution (the
latter is the former's input gradient, see ``deconv.py``):

- ``correlate(x, k, stride, padding, dilation, oh, ow)``: ``y[n,f,a,b] =
  Σ_{c,i,j} x[n, c, a·sh - ph + i·dh, b·sw - pw + j·dw] · k[f,c,i,j]`` (out-of-range x is 0).
- ``scatter(dy, k, ..., h, w)``: the adjoint of ``correlate`` in x (its input gradient).
- ``weight_grad(dy, x, ..., kh, kw)``: the gradient of ``correlate`` in k.

Each has a direct-loop form (every (sample, channel) or kernel element owned by one ``prange``
iteration, the innermost loop running along a row so it vectorises) and an im2col + GEMM form
for many channels, where per-sample single-threaded GEMMs run inside the ``prange`` (the caller
holds BLAS to one thread). ``_use_gemm`` picks by the size of the reduction.
"""
import numpy as np
from numba import prange
from numba.core import config

from ._config import jit, pjit

# one block per configured thread for reductions over the batch: a compile-time constant, so the
# summation order, and so the bits, do not depend on the thread count used at run time
BLOCKS = config.NUMBA_NUM_THREADS
# GEMM wins once a step's reduction length (channels x kernel) and filter count are this large
GEMM_REDUCTION = 64
GEMM_FILTERS = 8


@jit
def _span(out, size, stride, pad, off):
    """Output indices ``o`` in [lo, hi) with ``0 <= o·stride - pad + off < size``."""
    start = pad - off
    lo = 0 if start <= 0 else (start + stride - 1) // stride
    last = size - 1 + pad - off
    hi = 0 if last < 0 else min(out, last // stride + 1)
    return lo, max(lo, hi)


@jit
def _use_gemm(c, kh, kw, f):
    return c * kh * kw >= GEMM_REDUCTION and f >= GEMM_FILTERS


# ----------------------------------------------------------------------------- direct loops

@pjit
def _correlate_direct(x, k, stride, padding, dilation, oh, ow):
    n, c, h, w = x.shape
    f, _, kh, kw = k.shape
    sh, sw = stride
    ph, pw = padding
    dh, dw = dilation
    y = np.zeros((n, f, oh, ow), x.dtype)
    for nf in prange(n * f):
        s, q = nf // f, nf % f
        for ch in range(c):
            for i in range(kh):
                a_lo, a_hi = _span(oh, h, sh, ph, i * dh)
                for j in range(kw):
                    b_lo, b_hi = _span(ow, w, sw, pw, j * dw)
                    kv = k[q, ch, i, j]
                    off = j * dw - pw
                    for a in range(a_lo, a_hi):
                        row = a * sh - ph + i * dh
                        for b in range(b_lo, b_hi):
                            y[s, q, a, b] += kv * x[s, ch, row, b * sw + off]
    return y


@pjit
def _scatter_direct(dy, k, stride, padding, dilation, h, w):
    n, f, oh, ow = dy.shape
    _, c, kh, kw = k.shape
    sh, sw = stride
    ph, pw = padding
    dh, dw = dilation
    dx = np.zeros((n, c, h, w), dy.dtype)
    for nc in prange(n * c):
        s, ch = nc // c, nc % c
        for q in range(f):
            for i in range(kh):
                a_lo, a_hi = _span(oh, h, sh, ph, i * dh)
                for j in range(kw):
                    b_lo, b_hi = _span(ow, w, sw, pw, j * dw)
                    kv = k[q, ch, i, j]
                    off = j * dw - pw
                    for a in range(a_lo, a_hi):
                        row = a * sh - ph + i * dh
                        for b in range(b_lo, b_hi):
                            dx[s, ch, row, b * sw + off] += kv * dy[s, q, a, b]
    return dx


@pjit
def _weight_grad_direct(dy, x, stride, padding, dilation, kh, kw):
    n, f, oh, ow = dy.shape
    _, c, h, w = x.shape
    sh, sw = stride
    ph, pw = padding
    dh, dw = dilation
    dk = np.empty((f, c, kh, kw), dy.dtype)
    for e in prange(f * c * kh * kw):
        q, rest = e // (c * kh * kw), e % (c * kh * kw)
        ch, rest = rest // (kh * kw), rest % (kh * kw)
        i, j = rest // kw, rest % kw
        a_lo, a_hi = _span(oh, h, sh, ph, i * dh)
        b_lo, b_hi = _span(ow, w, sw, pw, j * dw)
        off = j * dw - pw
        acc = dy.dtype.type(0.0)
        for s in range(n):
            for a in range(a_lo, a_hi):
                row = a * sh - ph + i * dh
                for b in range(b_lo, b_hi):
                    acc += dy[s, q, a, b] * x[s, ch, row, b * sw + off]
        dk[q, ch, i, j] = acc
    return dk


# ----------------------------------------------------------------------------- im2col + GEMM

@jit
def _im2col(x, s, kh, kw, stride, padding, dilation, oh, ow, cols):
    """cols (C·kh·kw, oh·ow) of sample ``s``: row (c, i, j) holds x shifted by (i, j)."""
    _, c, h, w = x.shape
    sh, sw = stride
    ph, pw = padding
    dh, dw = dilation
    for ch in range(c):
        for i in range(kh):
            a_lo, a_hi = _span(oh, h, sh, ph, i * dh)
            for j in range(kw):
                r = (ch * kh + i) * kw + j
                b_lo, b_hi = _span(ow, w, sw, pw, j * dw)
                off = j * dw - pw
                for p in range(oh * ow):
                    cols[r, p] = 0
                for a in range(a_lo, a_hi):
                    row = a * sh - ph + i * dh
                    for b in range(b_lo, b_hi):
                        cols[r, a * ow + b] = x[s, ch, row, b * sw + off]


@jit
def _col2im(cols, dx, s, kh, kw, stride, padding, dilation, oh, ow):
    """The adjoint of ``_im2col``: add cols back into dx[s]."""
    _, c, h, w = dx.shape
    sh, sw = stride
    ph, pw = padding
    dh, dw = dilation
    for ch in range(c):
        for i in range(kh):
            a_lo, a_hi = _span(oh, h, sh, ph, i * dh)
            for j in range(kw):
                r = (ch * kh + i) * kw + j
                b_lo, b_hi = _span(ow, w, sw, pw, j * dw)
                off = j * dw - pw
                for a in range(a_lo, a_hi):
                    row = a * sh - ph + i * dh
                    for b in range(b_lo, b_hi):
                        dx[s, ch, row, b * sw + off] += cols[r, a * ow + b]


@pjit
def _correlate_gemm(x, k, stride, padding, dilation, oh, ow):
    n, c, h, w = x.shape
    f, _, kh, kw = k.shape
    k2 = np.ascontiguousarray(k.reshape(f, c * kh * kw))
    y = np.empty((n, f, oh, ow), x.dtype)
    for s in prange(n):
        cols = np.empty((c * kh * kw, oh * ow), x.dtype)
        _im2col(x, s, kh, kw, stride, padding, dilation, oh, ow, cols)
        y[s] = np.dot(k2, cols).reshape(f, oh, ow)
    return y


@pjit
def _scatter_gemm(dy, k, stride, padding, dilation, h, w):
    n, f, oh, ow = dy.shape
    _, c, kh, kw = k.shape
    k2t = np.ascontiguousarray(k.reshape(f, c * kh * kw).T)
    dx = np.zeros((n, c, h, w), dy.dtype)
    for s in prange(n):
        cols = np.dot(k2t, np.ascontiguousarray(dy[s].reshape(f, oh * ow)))
        _col2im(cols, dx, s, kh, kw, stride, padding, dilation, oh, ow)
    return dx


@pjit
def _weight_grad_gemm(dy, x, stride, padding, dilation, kh, kw):
    n, f, oh, ow = dy.shape
    _, c, h, w = x.shape
    blocks = min(BLOCKS, n)
    size = (n + blocks - 1) // blocks
    partial = np.zeros((blocks, f, c * kh * kw), dy.dtype)
    for blk in prange(blocks):
        cols = np.empty((c * kh * kw, oh * ow), x.dtype)
        for s in range(blk * size, min(n, (blk + 1) * size)):
            _im2col(x, s, kh, kw, stride, padding, dilation, oh, ow, cols)
            partial[blk] += np.dot(np.ascontiguousarray(dy[s].reshape(f, oh * ow)), cols.T)
    # a serial sum of the per-block partials, in block order
    dk = partial[0].copy()
    for blk in range(1, blocks):
        dk += partial[blk]
    return dk.reshape(f, c, kh, kw)


# ----------------------------------------------------------------------------- primitives

@jit
def correlate(x, k, stride, padding, dilation, oh, ow):
    """``y`` (N, F, oh, ow) from x (N, C, H, W) and k (F, C, kh, kw); see the module docstring."""
    f, c, kh, kw = k.shape
    if _use_gemm(c, kh, kw, f):
        return _correlate_gemm(x, k, stride, padding, dilation, oh, ow)
    return _correlate_direct(x, k, stride, padding, dilation, oh, ow)


@jit
def scatter(dy, k, stride, padding, dilation, h, w):
    """The adjoint of ``correlate`` in x: dy (N, F, oh, ow), k (F, C, kh, kw) -> (N, C, h, w)."""
    f, c, kh, kw = k.shape
    if _use_gemm(c, kh, kw, f):
        return _scatter_gemm(dy, k, stride, padding, dilation, h, w)
    return _scatter_direct(dy, k, stride, padding, dilation, h, w)


@jit
def weight_grad(dy, x, stride, padding, dilation, kh, kw):
    """The gradient of ``correlate`` in k: dy (N, F, oh, ow), x (N, C, H, W) -> (F, C, kh, kw)."""
    f, c = dy.shape[1], x.shape[1]
    if _use_gemm(c, kh, kw, f):
        return _weight_grad_gemm(dy, x, stride, padding, dilation, kh, kw)
    return _weight_grad_direct(dy, x, stride, padding, dilation, kh, kw)


@pjit
def channel_sum(dy):
    """``db[f] = Σ_{n,a,b} dy[n,f,a,b]`` (one filter per iteration)."""
    n, f, oh, ow = dy.shape
    db = np.empty(f, dy.dtype)
    for q in prange(f):
        acc = dy.dtype.type(0.0)
        for s in range(n):
            for a in range(oh):
                for b in range(ow):
                    acc += dy[s, q, a, b]
        db[q] = acc
    return db


@pjit
def add_bias(y, b):
    """``y[n, f] += b[f]`` in place."""
    n, f, oh, ow = y.shape
    for nf in prange(n * f):
        s, q = nf // f, nf % f
        for a in range(oh):
            for c in range(ow):
                y[s, q, a, c] += b[q]


# ----------------------------------------------------------------------------- the layer

@jit
def conv_out(size, k, s, p, d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


@jit
def conv_forward(x, k, b, stride, padding, dilation):
    """Convolution: x (N, C, H, W), k (F, C, kh, kw), b (F,) or (0,) -> y (N, F, H', W').

    ``H' = floor((H + 2p - d(k-1) - 1) / s) + 1``, the same for W.
    """
    oh = conv_out(x.shape[2], k.shape[2], stride[0], padding[0], dilation[0])
    ow = conv_out(x.shape[3], k.shape[3], stride[1], padding[1], dilation[1])
    y = correlate(x, k, stride, padding, dilation, oh, ow)
    if b.shape[0] > 0:
        add_bias(y, b)
    return y


@jit
def conv_backward(dy, x, k, stride, padding, dilation, need_dx):
    """Gradients of ``conv_forward``: ``(dx, dk, db)``; dx is empty when ``need_dx`` is False."""
    dk = weight_grad(dy, x, stride, padding, dilation, k.shape[2], k.shape[3])
    db = channel_sum(dy)
    if need_dx:
        dx = scatter(dy, k, stride, padding, dilation, x.shape[2], x.shape[3])
    else:
        dx = np.empty((0, 0, 0, 0), dy.dtype)
    return dx, dk, db
