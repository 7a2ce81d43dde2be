"""2-D convolution (cross-correlation with zero padding), batch-first NCHW.

Three primitives with explicit sizes serve both convolution and transposed convolution (the
latter is the former's input gradient, see ``deconv.py``):

- ``correlate(x, k, stride, padding, dilation, oh, ow)``: ``y[n,f,a,b] =
  Σ_{c,i,j} x[n, c, a·sh - ph + i·dh, b·sw - pw + j·dw] · k[f,c,i,j]`` (out-of-range x is 0).
- ``scatter(dy, k, ..., h, w)``: the adjoint of ``correlate`` in x (its input gradient).
- ``weight_grad(dy, x, ..., kh, kw)``: the gradient of ``correlate`` in k.

Each has a direct-loop form (the innermost loop running along a row so it vectorises) and an
im2col + GEMM form for many channels, where per-sample single-threaded GEMMs run in each
thread's block (the caller holds BLAS to one thread). ``_strategy`` picks by the size of the
reduction. The layer's own passes (``conv_forward``, ``conv_backward``) at stride 1 are one
block of samples per thread, a sample padded (and its dy widened) at a time into buffers of the
block: each pass a serial ``*_body`` run by ``_blocks.parallel`` (see ``_blocks.py`` for why: 8 s of
compilation for the backward as a ``prange`` kernel). The strided forms split their (sample,
channel) planes, samples or kernel elements into one block per thread the same way.
"""
import numpy as np

from ._blocks import block_count, parallel
from ._config import jit, span
from .activations import relu_backward, relu_forward
from .blas import gemm

# GEMM wins once a step's reduction length (channels x kernel) and filter count are this large
GEMM_REDUCTION = 64
GEMM_FILTERS = 8


# Why the loops below look the way they do: an index such as ``x[t + shift]`` with a runtime
# ``shift`` makes Numba check it for negative wraparound on every access, and that check stops
# LLVM from vectorising the loop (6x slower, measured). So the input is zero-padded once, rows
# are taken as 1-D slices, and the innermost loops index those slices with the bare loop counter.
# With stride 1, each kernel tap is one long loop over the whole output plane at the padded width
# (the extra columns are computed and dropped), instead of many loops of one row each.

@jit
def _pad_body(blk, blocks, x, ph, pw, xp):
    c = x.shape[1]
    lo, hi = span(blk, blocks, x.shape[0] * c)
    for nc in range(lo, hi):
        _pad_plane(x[nc // c, nc % c], xp[nc // c, nc % c], ph, pw)


_pad_blocks = parallel(_pad_body)


def pad(x, ph, pw, tail):
    """x (N, C, H, W) -> (N, C, (H+2ph)(W+2pw) + tail): zero border, rows flattened, ``tail``
    zeros after the last row so that a tap's flat slice never runs past the end."""
    n, c, h, w = x.shape
    xp = np.empty((n, c, (h + 2 * ph) * (w + 2 * pw) + tail), x.dtype)
    blocks = block_count(n * c)
    _pad_blocks(blocks, (blocks, x, ph, pw, xp))
    return xp


@jit
def _pad_plane(src, plane, ph, pw):
    """One (H, W) plane into its flat padded form ``plane`` (as ``pad`` lays it out), every element
    written once: border zeros with the rows, no zero fill first."""
    h, w = src.shape
    wp = w + 2 * pw
    size = plane.shape[0]
    zero = plane.dtype.type(0.0)
    for t in range(ph * wp + pw):
        plane[t] = zero
    for a in range(h):
        base = (a + ph) * wp + pw
        row, line = plane[base:base + w], src[a]
        for b in range(w):
            row[b] = line[b]
        for t in range(base + w, min(size, base + wp)):     # its right, the next row's left border
            plane[t] = zero
    for t in range(min(size, (h + ph) * wp + pw), size):
        plane[t] = zero


@jit
def _unpad_body(blk, blocks, xp, ph, pw, x):
    c = x.shape[1]
    lo, hi = span(blk, blocks, x.shape[0] * c)
    for nc in range(lo, hi):
        _unpad_plane(xp[nc // c, nc % c], x[nc // c, nc % c], ph, pw)


_unpad_blocks = parallel(_unpad_body)


def unpad(xp, h, w, ph, pw):
    """The interior (N, C, h, w) of a padded, flattened array made like ``pad``'s."""
    n, c = xp.shape[0], xp.shape[1]
    x = np.empty((n, c, h, w), xp.dtype)
    blocks = block_count(n * c)
    _unpad_blocks(blocks, (blocks, xp, ph, pw, x))
    return x


@jit
def _unpad_plane(plane, dst, ph, pw):
    """The interior of one flat padded plane into ``dst`` (h, w)."""
    h, w = dst.shape
    wp = w + 2 * pw
    for a in range(h):
        src, row = plane[(a + ph) * wp + pw:(a + ph) * wp + pw + w], dst[a]
        for b in range(w):
            row[b] = src[b]


@jit
def _widen_body(blk, blocks, dy, relu_y, wp, out):
    f = dy.shape[1]
    lo, hi = span(blk, blocks, dy.shape[0] * f)
    for nf in range(lo, hi):
        _widen_plane(dy, relu_y, nf // f, nf % f, out[nf // f, nf % f], wp)


_widen_blocks = parallel(_widen_body)


def widen(dy, relu_y, wp):
    """dy (N, F, oh, ow) -> (N, F, oh·wp): each row padded with zeros to the width ``wp``; taken
    through the ReLU whose output is ``relu_y`` unless that is empty."""
    n, f, oh, ow = dy.shape
    out = np.empty((n, f, oh * wp), dy.dtype)
    blocks = block_count(n * f)
    _widen_blocks(blocks, (blocks, dy, relu_y, wp, out))
    return out


@jit
def _widen_plane(dy, relu_y, s, q, dst, wp):
    """``widen`` for the plane dy[s, q] into ``dst`` (oh·wp); returns the sum written (for db)."""
    oh, ow = dy.shape[2], dy.shape[3]
    relu = relu_y.shape[0] > 0
    zero = dy.dtype.type(0.0)
    acc = zero
    for a in range(oh):
        row, src = dst[a * wp:(a + 1) * wp], dy[s, q, a]
        if relu:
            mask = relu_y[s, q, a]
            for b in range(ow):
                v = zero if mask[b] <= zero else src[b]      # a NaN y passes dy, as relu_backward
                row[b] = v
                acc += v
        else:
            for b in range(ow):
                row[b] = src[b]
                acc += src[b]
        for b in range(ow, wp):
            row[b] = zero
    return acc


@jit
def _tap_row(plane, wp, row, col, ow, sw):
    """Row ``row`` of a flattened padded plane, from column ``col`` every ``sw``, ``ow`` values."""
    start = row * wp + col
    return plane[start:start + (ow - 1) * sw + 1:sw]


@jit
def _copy_out(flat, plane, shift, relu, wp):
    """A padded-width output plane (oh·wp) into its (oh, ow) place, plus ``shift``, through a ReLU
    if ``relu``. The ReLU keeps a NaN (``v < 0`` is false for it; ``max(v, 0)`` would keep it only
    by its argument order)."""
    zero = plane.dtype.type(0.0)
    for a in range(plane.shape[0]):
        src = flat[a * wp:a * wp + plane.shape[1]]
        dst = plane[a]
        for t in range(plane.shape[1]):
            v = src[t] + shift
            dst[t] = (zero if v < zero else v) if relu else v


# ----------------------------------------------------------------------------- direct loops
# ``*_flat``: stride 1, one long loop per kernel tap; ``*_rows``: any stride, a loop per row.

@jit
def _forward_direct_body(blk, blocks, x, k, b, relu, ph, pw, dh, dw, y):
    """Stride-1 direct loops for block ``blk`` of the samples, with the bias (b may be empty) and,
    if ``relu``, the ReLU applied on the copy-out, as the GEMM form does. One sample at a time is
    padded into a buffer of the block's own (no padded copy of the batch)."""
    n, c, h, w = x.shape
    f, _, kh, kw = k.shape
    oh = y.shape[2]
    wp = w + 2 * pw
    size = (h + 2 * ph) * wp + dw * (kw - 1) + 1
    length = oh * wp
    zero = x.dtype.type(0.0)
    xps = np.empty((c, size), x.dtype)
    acc = np.empty(length, x.dtype)
    lo, hi = span(blk, blocks, n)
    for s in range(lo, hi):
        for ch in range(c):
            _pad_plane(x[s, ch], xps[ch], ph, pw)
        for q in range(f):
            acc[:] = zero
            for ch in range(c):
                for i in range(kh):
                    for j in range(kw):
                        kv = k[q, ch, i, j]
                        src = xps[ch, i * dh * wp + j * dw:i * dh * wp + j * dw + length]
                        for t in range(length):
                            acc[t] += kv * src[t]
            _copy_out(acc, y[s, q], b[q] if b.shape[0] > 0 else zero, relu, wp)


_forward_direct_blocks = parallel(_forward_direct_body)


def _forward_direct_flat(x, k, b, relu, padding, dilation, oh, ow):
    """A stride-1 convolution by direct loops: y (N, F, oh, ow), one block of samples per thread."""
    return _forward_blocks(_forward_direct_blocks, x, k, b, relu, padding, dilation, oh, ow)


def _forward_blocks(loop, x, k, b, relu, padding, dilation, oh, ow):
    y = np.empty((x.shape[0], k.shape[0], oh, ow), x.dtype)
    blocks = block_count(x.shape[0])
    loop(blocks, (blocks, x, k, b, bool(relu), padding[0], padding[1], dilation[0], dilation[1], y))
    return y


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
                        src = _tap_row(plane, wp, a * sh + i * dh, j * dw, ow, sw)
                        dst = y[s, q, a]
                        for b in range(ow):
                            dst[b] += kv * src[b]


_correlate_rows_blocks = parallel(_correlate_rows_body)


def _correlate_rows(x, k, stride, padding, dilation, oh, ow):
    n, f, kw, w = x.shape[0], k.shape[0], k.shape[3], x.shape[3]
    xp = pad(x, padding[0], padding[1], dilation[1] * (kw - 1) + 1)
    y = np.zeros((n, f, oh, ow), x.dtype)
    blocks = block_count(n * f)
    _correlate_rows_blocks(blocks, (blocks, xp, k, stride[0], stride[1], dilation[0], dilation[1],
                                    w + 2 * padding[1], y))
    return y


@jit
def _scatter_flat_body(blk, blocks, dyw, k, dh, dw, wp, dxp):
    c, length = dxp.shape[1], dyw.shape[2]
    lo, hi = span(blk, blocks, dxp.shape[0] * c)
    for nc in range(lo, hi):
        _scatter_plane(dyw[nc // c], k, nc % c, dxp[nc // c, nc % c], wp, (dh, dw), length)


_scatter_flat_blocks = parallel(_scatter_flat_body)


def _scatter_flat(dy, k, padding, dilation, h, w):
    n, c, kw = dy.shape[0], k.shape[1], k.shape[3]
    wp = w + 2 * padding[1]
    dxp = np.zeros((n, c, (h + 2 * padding[0]) * wp + dilation[1] * (kw - 1) + 1), dy.dtype)
    dyw = widen(dy, dy[:0], wp)
    blocks = block_count(n * c)
    _scatter_flat_blocks(blocks, (blocks, dyw, k, dilation[0], dilation[1], wp, dxp))
    return unpad(dxp, h, w, padding[0], padding[1])


@jit
def _scatter_plane(dyw_s, k, ch, dst_plane, wp, dilation, length):
    """Add channel ``ch``'s input gradient of one sample (widened dy ``dyw_s``) into ``dst_plane``."""
    dh, dw = dilation
    for q in range(k.shape[0]):
        g = dyw_s[q]
        for i in range(k.shape[2]):
            for j in range(k.shape[3]):
                kv = k[q, ch, i, j]
                dst = dst_plane[i * dh * wp + j * dw:i * dh * wp + j * dw + length]
                for t in range(length):
                    dst[t] += kv * g[t]


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
                        dst = _tap_row(plane, wp, a * sh + i * dh, j * dw, ow, sw)
                        g = dy[s, q, a]
                        for b in range(ow):
                            dst[b] += kv * g[b]


_scatter_rows_blocks = parallel(_scatter_rows_body)


def _scatter_rows(dy, k, stride, padding, dilation, h, w):
    n, c, kw = dy.shape[0], k.shape[1], k.shape[3]
    wp = w + 2 * padding[1]
    dxp = np.zeros((n, c, (h + 2 * padding[0]) * wp + dilation[1] * (kw - 1) + 1), dy.dtype)
    blocks = block_count(n * c)
    _scatter_rows_blocks(blocks, (blocks, dy, k, stride[0], stride[1], dilation[0], dilation[1], wp, dxp))
    return unpad(dxp, h, w, padding[0], padding[1])


@jit
def _backward_direct_body(blk, blocks, dy, relu_y, x, k, ph, pw, dh, dw, need_dx, dx, partial, partial_db):
    """The one-pass direct backward for block ``blk`` of the samples, adding into its own dk
    (F, C·kh·kw) and db partials; one sample at a time: dy widened (through the ReLU), x padded,
    then every tap's dot product for dk, and dx scattered into a padded buffer and copied out."""
    f, oh = dy.shape[1], dy.shape[2]
    c, h, w = x.shape[1], x.shape[2], x.shape[3]
    kh, kw = k.shape[2], k.shape[3]
    dk, db = partial[blk], partial_db[blk]
    wp = w + 2 * pw
    length = oh * wp
    size = (h + 2 * ph) * wp + dw * (kw - 1) + 1
    zero = dy.dtype.type(0.0)
    dyw = np.empty((f, length), dy.dtype)
    xps = np.empty((c, size), dy.dtype)
    dxps = np.empty((c if need_dx else 0, size), dy.dtype)
    lo, hi = span(blk, blocks, dy.shape[0])
    for s in range(lo, hi):
        for q in range(f):
            db[q] += _widen_plane(dy, relu_y, s, q, dyw[q], wp)
        for ch in range(c):
            _pad_plane(x[s, ch], xps[ch], ph, pw)
        for q in range(f):
            g = dyw[q]
            for ch in range(c):
                for i in range(kh):
                    for j in range(kw):
                        src = xps[ch, i * dh * wp + j * dw:i * dh * wp + j * dw + length]
                        acc = zero
                        for t in range(length):
                            acc += g[t] * src[t]
                        dk[q, (ch * kh + i) * kw + j] += acc
        if need_dx:
            dxps[:] = zero
            for ch in range(c):
                _scatter_plane(dyw, k, ch, dxps[ch], wp, (dh, dw), length)
                _unpad_plane(dxps[ch], dx[s, ch], ph, pw)


_backward_direct_blocks = parallel(_backward_direct_body)


def _backward_direct_flat(dy, relu_y, x, k, padding, dilation, need_dx):
    """``(dx, dk, db)`` of a stride-1 convolution by direct loops in one pass over the batch, each
    sample's dy widened once (through the ReLU when ``relu_y`` is not empty) for all three; dx is
    empty (0, C, H, W) unless ``need_dx``. One block of samples per thread, each adding into dk
    and db partials of its own, summed in block order after it."""
    return _backward_one_pass(_backward_direct_blocks, dy, relu_y, x, k, padding, dilation,
                              need_dx)


def _backward_one_pass(loop, dy, relu_y, x, k, padding, dilation, need_dx):
    n, f = dy.shape[0], dy.shape[1]
    taps = k.shape[1] * k.shape[2] * k.shape[3]
    dx = np.empty((n if need_dx else 0,) + x.shape[1:], dy.dtype)
    blocks = block_count(n)
    partial = np.zeros((blocks, f, taps), dy.dtype)
    partial_db = np.zeros((blocks, f), dy.dtype)
    loop(blocks, (blocks, dy, relu_y, x, k, padding[0], padding[1], dilation[0], dilation[1],
                             bool(need_dx), dx, partial, partial_db))
    return dx, _sum_blocks(partial.reshape(blocks, f * taps)).reshape(k.shape), _sum_blocks(partial_db)


@jit
def _sum_blocks(partial):
    """Per-block partials (blocks, size) summed in block order."""
    total = partial[0].copy()
    for blk in range(1, partial.shape[0]):
        total += partial[blk]
    return total


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
                src = _tap_row(plane, wp, a * sh + i * dh, j * dw, ow, sw)
                g = dy[s, q, a]
                for b in range(ow):
                    acc += g[b] * src[b]
        dk[q, ch, i, j] = acc


_weight_grad_rows_blocks = parallel(_weight_grad_rows_body)


def _weight_grad_rows(dy, x, stride, padding, dilation, kh, kw):
    f, c, w = dy.shape[1], x.shape[1], x.shape[3]
    xp = pad(x, padding[0], padding[1], dilation[1] * (kw - 1) + 1)
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
                    src = _tap_row(plane, wp, a * sh + i * dh, j * dw, ow, sw)
                    dst = cols[r, a * ow:(a + 1) * ow]
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
                    dst = _tap_row(plane, wp, a * sh + i * dh, j * dw, ow, sw)
                    src = cols[r, a * ow:(a + 1) * ow]
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


def _correlate_gemm(x, k, stride, padding, dilation, oh, ow):
    n, w, kw = x.shape[0], x.shape[3], k.shape[3]
    xp = pad(x, padding[0], padding[1], dilation[1] * (kw - 1) + 1)
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


def _scatter_gemm(dy, k, stride, padding, dilation, h, w):
    n, c, kw = dy.shape[0], k.shape[1], k.shape[3]
    wp = w + 2 * padding[1]
    dxp = np.zeros((n, c, (h + 2 * padding[0]) * wp + dilation[1] * (kw - 1) + 1), dy.dtype)
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


def _weight_grad_gemm(dy, x, stride, padding, dilation, kh, kw):
    n, f, c, w = dy.shape[0], dy.shape[1], x.shape[1], x.shape[3]
    xp = pad(x, padding[0], padding[1], dilation[1] * (kw - 1) + 1)
    blocks = block_count(n)
    partial = np.zeros((blocks, f, c * kh * kw), dy.dtype)
    _weight_grad_gemm_blocks(blocks, (blocks, dy, xp, kh, kw, stride[0], stride[1], dilation[0], dilation[1],
                                      w + 2 * padding[1], partial))
    # a serial sum of the per-block partials, in block order
    return _sum_blocks(partial.reshape(blocks, f * c * kh * kw)).reshape(f, c, kh, kw)


# ``*_gemm_flat``: stride 1 with the padded-width trick of the direct loops. A tap's im2col row is
# then one contiguous slice of the padded plane (a copy the compiler turns into a memcpy), at the
# price of ``wp - ow`` extra columns per output row in the GEMM (computed and dropped; ``dy`` is
# widened with zeros so they add nothing to the gradients). Measured on the 32 -> 64 filter,
# 14 x 14 layer: im2col overhead per sample 45 -> 10 us.

@jit
def _im2col_flat(plane_s, kh, kw, wp, dilation, length, cols):
    dh, dw = dilation
    for ch in range(plane_s.shape[0]):
        for i in range(kh):
            for j in range(kw):
                src = plane_s[ch, i * dh * wp + j * dw:i * dh * wp + j * dw + length]
                dst = cols[(ch * kh + i) * kw + j]
                for t in range(length):
                    dst[t] = src[t]


@jit
def _col2im_flat(cols, plane_s, kh, kw, wp, dilation, length):
    """The adjoint of ``_im2col_flat``: add each row of cols back onto its tap's slice."""
    dh, dw = dilation
    for ch in range(plane_s.shape[0]):
        for i in range(kh):
            for j in range(kw):
                dst = plane_s[ch, i * dh * wp + j * dw:i * dh * wp + j * dw + length]
                src = cols[(ch * kh + i) * kw + j]
                for t in range(length):
                    dst[t] += src[t]


@jit
def _forward_gemm_body(blk, blocks, x, k, b, relu, ph, pw, dh, dw, y):
    """A stride-1 convolution for block ``blk`` of the samples,
    with its bias (b may be empty) and, if ``relu``, the ReLU applied while each sample's GEMM
    output is copied out (no extra passes over y). One sample at a time is padded into a buffer
    of the block's own."""
    n, c, h, w = x.shape
    f, _, kh, kw = k.shape
    k2 = k.reshape(f, c * kh * kw)
    oh = y.shape[2]
    wp = w + 2 * pw
    size = (h + 2 * ph) * wp + dw * (kw - 1) + 1
    length = oh * wp
    zero = x.dtype.type(0.0)
    xps = np.empty((c, size), x.dtype)
    cols = np.empty((c * kh * kw, length), x.dtype)
    out = np.empty((f, length), x.dtype)
    lo, hi = span(blk, blocks, n)
    for s in range(lo, hi):
        for ch in range(c):
            _pad_plane(x[s, ch], xps[ch], ph, pw)
        _im2col_flat(xps, kh, kw, wp, (dh, dw), length, cols)
        gemm(False, False, 1.0, k2, cols, 0.0, out)
        for q in range(f):
            _copy_out(out[q], y[s, q], b[q] if b.shape[0] > 0 else zero, relu, wp)


_forward_gemm_blocks = parallel(_forward_gemm_body)


def _forward_gemm_flat(x, k, b, relu, padding, dilation, oh, ow):
    """A stride-1 convolution by im2col + GEMM: y (N, F, oh, ow), one block of samples per thread."""
    return _forward_blocks(_forward_gemm_blocks, x, k, b, relu, padding, dilation, oh, ow)


@jit
def _scatter_gemm_flat_body(blk, blocks, dyw, k, dh, dw, wp, dxp):
    n, f, length = dyw.shape
    c, kh, kw = k.shape[1], k.shape[2], k.shape[3]
    k2 = k.reshape(f, c * kh * kw)
    cols = np.empty((c * kh * kw, length), dyw.dtype)
    lo, hi = span(blk, blocks, n)
    for s in range(lo, hi):
        gemm(True, False, 1.0, k2, dyw[s], 0.0, cols)
        _col2im_flat(cols, dxp[s], kh, kw, wp, (dh, dw), length)


_scatter_gemm_flat_blocks = parallel(_scatter_gemm_flat_body)


def _scatter_gemm_flat(dy, k, padding, dilation, h, w):
    n, c, kw = dy.shape[0], k.shape[1], k.shape[3]
    wp = w + 2 * padding[1]
    dyw = widen(dy, dy[:0], wp)
    dxp = np.zeros((n, c, (h + 2 * padding[0]) * wp + dilation[1] * (kw - 1) + 1), dy.dtype)
    blocks = block_count(n)
    _scatter_gemm_flat_blocks(blocks, (blocks, dyw, k, dilation[0], dilation[1], wp, dxp))
    return unpad(dxp, h, w, padding[0], padding[1])


@jit
def _backward_gemm_body(blk, blocks, dy, relu_y, x, k, ph, pw, dh, dw, need_dx, dx, partial, partial_db):
    """The one-pass GEMM backward for block ``blk`` of the samples, adding into its own dk and db
    partials: each sample's dy is widened once (its sums per filter taken on the way, for db; through
    the ReLU when ``relu_y`` is not empty) and serves both GEMMs (dk from the im2col of x, dx
    through col2im)."""
    f, oh = dy.shape[1], dy.shape[2]
    c, h, w = x.shape[1], x.shape[2], x.shape[3]
    kh, kw = k.shape[2], k.shape[3]
    ckk = c * kh * kw
    k2 = k.reshape(f, ckk)
    dk, db = partial[blk], partial_db[blk]
    wp = w + 2 * pw
    length = oh * wp
    size = (h + 2 * ph) * wp + dw * (kw - 1) + 1
    xps = np.empty((c, size), dy.dtype)
    dxps = np.empty((c if need_dx else 0, size), dy.dtype)
    cols = np.empty((ckk, length), dy.dtype)
    dcols = np.empty((ckk, length), dy.dtype)
    dyw = np.empty((f, length), dy.dtype)
    lo, hi = span(blk, blocks, dy.shape[0])
    for s in range(lo, hi):
        for q in range(f):
            db[q] += _widen_plane(dy, relu_y, s, q, dyw[q], wp)
        for ch in range(c):
            _pad_plane(x[s, ch], xps[ch], ph, pw)
        _im2col_flat(xps, kh, kw, wp, (dh, dw), length, cols)
        gemm(False, True, 1.0, dyw, cols, 1.0, dk)
        if need_dx:
            gemm(True, False, 1.0, k2, dyw, 0.0, dcols)
            dxps[:] = dy.dtype.type(0.0)
            _col2im_flat(dcols, dxps, kh, kw, wp, (dh, dw), length)
            for ch in range(c):
                _unpad_plane(dxps[ch], dx[s, ch], ph, pw)


_backward_gemm_blocks = parallel(_backward_gemm_body)


def _backward_gemm_flat(dy, relu_y, x, k, padding, dilation, need_dx):
    """``(dx, dk, db)`` of a stride-1 convolution in one pass over the batch by im2col + GEMM, as
    ``_backward_direct_flat`` (measured against separate passes at batch 128: 18.5 -> 14.8 ms for
    32 -> 64 filters on 14 x 14, 8.5 -> 1.5 ms for 1 -> 32 filters on 28 x 28)."""
    return _backward_one_pass(_backward_gemm_blocks, dy, relu_y, x, k, padding, dilation,
                              need_dx)


def _by_stride(flat, general):
    """``f(a, b, stride, padding, dilation, s1, s2)`` calling ``flat`` (stride 1, no stride
    argument) or ``general``: plain Python, so only the variant a layer needs is compiled."""
    def dispatch(a, b, stride, padding, dilation, s1, s2):
        if stride[0] == 1 and stride[1] == 1:
            return flat(a, b, padding, dilation, s1, s2)
        return general(a, b, stride, padding, dilation, s1, s2)
    return dispatch


def _plain(forward):
    """The stride-1 correlation from a fused forward kernel: no bias, no ReLU."""
    def correlate_flat(x, k, padding, dilation, oh, ow):
        return forward(x, k, np.empty(0, k.dtype), False, padding, dilation, oh, ow)
    return correlate_flat


def _dk_only(backward):
    """The stride-1 weight gradient from a one-pass backward kernel: no dx, no ReLU (the kernel
    argument it is given only carries the shape)."""
    def weight_grad_flat(dy, x, padding, dilation, kh, kw):
        k = np.zeros((dy.shape[1], x.shape[1], kh, kw), dy.dtype)
        return backward(dy, dy[:0], x, k, padding, dilation, False)[1]
    return weight_grad_flat


_correlate_direct = _by_stride(_plain(_forward_direct_flat), _correlate_rows)
_scatter_direct = _by_stride(_scatter_flat, _scatter_rows)
_weight_grad_direct = _by_stride(_dk_only(_backward_direct_flat), _weight_grad_rows)
_correlate_gemm_any = _by_stride(_plain(_forward_gemm_flat), _correlate_gemm)
_scatter_gemm_any = _by_stride(_scatter_gemm_flat, _scatter_gemm)
_weight_grad_gemm_any = _by_stride(_dk_only(_backward_gemm_flat), _weight_grad_gemm)


# ----------------------------------------------------------------------------- primitives
# Plain Python on purpose: the choice of strategy is made here, so that only the variant a
# shape needs is ever compiled (each parallel variant costs seconds of compilation).

_c = np.ascontiguousarray      # every kernel below takes C-contiguous arrays (a no-op for those)


def _strategy(c, kh, kw, f, stride):
    """True for im2col + GEMM. Stride 1 (the padded-width form): GEMM from 4 filters or a reduction
    of 64 (direct loops win only for 1-3 filters over few channels; measured at batch 32)."""
    if stride[0] == 1 and stride[1] == 1:
        return f >= 4 or c * kh * kw >= GEMM_REDUCTION
    return c * kh * kw >= GEMM_REDUCTION and f >= GEMM_FILTERS


def correlate(x, k, stride, padding, dilation, oh, ow):
    """``y`` (N, F, oh, ow) from x (N, C, H, W) and k (F, C, kh, kw); see the module docstring."""
    f, c, kh, kw = k.shape
    impl = _correlate_gemm_any if _strategy(c, kh, kw, f, stride) else _correlate_direct
    return impl(_c(x), _c(k), stride, padding, dilation, oh, ow)


def scatter(dy, k, stride, padding, dilation, h, w):
    """The adjoint of ``correlate`` in x: dy (N, F, oh, ow), k (F, C, kh, kw) -> (N, C, h, w)."""
    f, c, kh, kw = k.shape
    impl = _scatter_gemm_any if _strategy(c, kh, kw, f, stride) else _scatter_direct
    return impl(_c(dy), _c(k), stride, padding, dilation, h, w)


def weight_grad(dy, x, stride, padding, dilation, kh, kw):
    """The gradient of ``correlate`` in k: dy (N, F, oh, ow), x (N, C, H, W) -> (F, C, kh, kw)."""
    f, c = dy.shape[1], x.shape[1]
    impl = _weight_grad_gemm_any if _strategy(c, kh, kw, f, stride) else _weight_grad_direct
    return impl(_c(dy), _c(x), stride, padding, dilation, kh, kw)


@jit
def _channel_sum_body(blk, blocks, dy, db):
    n, f, oh, ow = dy.shape
    lo, hi = span(blk, blocks, f)
    for q in range(lo, hi):
        acc = dy.dtype.type(0.0)
        for s in range(n):
            for a in range(oh):
                row = dy[s, q, a]
                for b in range(ow):
                    acc += row[b]
        db[q] = acc


_channel_sum_blocks = parallel(_channel_sum_body)


def channel_sum(dy):
    """``db[f] = Σ_{n,a,b} dy[n,f,a,b]`` (a block of filters per thread)."""
    dy = _c(dy)
    db = np.empty(dy.shape[1], dy.dtype)
    blocks = block_count(dy.shape[1])
    _channel_sum_blocks(blocks, (blocks, dy, db))
    return db


@jit
def _add_bias_body(blk, blocks, y, b):
    n, f, oh, ow = y.shape
    lo, hi = span(blk, blocks, n * f)
    for nf in range(lo, hi):
        s, q = nf // f, nf % f
        v = b[q]
        for a in range(oh):
            row = y[s, q, a]
            for c in range(ow):
                row[c] += v


_add_bias_blocks = parallel(_add_bias_body)


def add_bias(y, b):
    """``y[n, f] += b[f]`` in place (y C-contiguous)."""
    blocks = block_count(y.shape[0] * y.shape[1])
    _add_bias_blocks(blocks, (blocks, y, _c(b)))


# ----------------------------------------------------------------------------- the layer

def conv_out(size, k, s, p, d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def conv_forward(x, k, b, stride, padding, dilation, relu=False):
    """Convolution: x (N, C, H, W), k (F, C, kh, kw), b (F,) or (0,) -> y (N, F, H', W'), with
    the ReLU applied if ``relu`` (fused into the copy-out of the stride-1 kernels).

    ``H' = floor((H + 2p - d(k-1) - 1) / s) + 1``, the same for W.
    """
    oh = conv_out(x.shape[2], k.shape[2], stride[0], padding[0], dilation[0])
    ow = conv_out(x.shape[3], k.shape[3], stride[1], padding[1], dilation[1])
    f, c, kh, kw = k.shape
    if stride[0] == 1 and stride[1] == 1:
        impl = _forward_gemm_flat if _strategy(c, kh, kw, f, stride) else _forward_direct_flat
        return impl(_c(x), _c(k), b, bool(relu), padding, dilation, oh, ow)
    y = correlate(x, k, stride, padding, dilation, oh, ow)
    if b.shape[0] > 0:
        add_bias(y, b)
    if relu:
        y = relu_forward(y.reshape(y.shape[0], -1)).reshape(y.shape)
    return y


def conv_backward(dy, x, k, stride, padding, dilation, need_dx, need_db=True, relu_y=None):
    """Gradients of ``conv_forward``: ``(dx, dk, db)``; dx (db) is None unless ``need_dx`` (``need_db``).
    ``relu_y``: the forward pass's output when it applied the ReLU (its gradient is taken here)."""
    f, c, kh, kw = k.shape
    if stride[0] == 1 and stride[1] == 1:
        impl = _backward_gemm_flat if _strategy(c, kh, kw, f, stride) else _backward_direct_flat
        relu_y = dy[:0] if relu_y is None else _c(relu_y)
        dx, dk, db = impl(_c(dy), relu_y, _c(x), _c(k), padding, dilation, need_dx)
        return (dx if need_dx else None), dk, (db if need_db else None)
    if relu_y is not None:
        n = dy.shape[0]
        dy = relu_backward(dy.reshape(n, -1), relu_y.reshape(n, -1)).reshape(dy.shape)
    db = channel_sum(dy) if need_db else None
    dk = weight_grad(dy, x, stride, padding, dilation, kh, kw)
    dx = scatter(dy, k, stride, padding, dilation, x.shape[2], x.shape[3]) if need_dx else None
    return dx, dk, db
