"""Stride-1 convolution by register tiles that read each kernel tap straight from the flat padded
planes (see ``conv_planes.py``): the product of an im2col without the im2col.

- ``forward``: every filter's output at the padded width by ``tiles.tap_products``, copied out with
  the bias and, if asked, the ReLU.
- ``backward`` ("same" padding: ``2·ph = dh·(kh - 1)``, ``2·pw = dw·(kw - 1)``, so that dy's plane
  is x's): dy padded as x is (its rows widened into place through the ReLU, ``widen_plane``),
  then dk by ``tiles.dot_products`` (every filter's dy against every tap's slice of x), and dx
  as the forward pass of the padded dy with the kernel turned by 180 degrees and its filters and
  channels swapped, by ``tiles.tap_products``.
- ``forward_pooled``, ``backward_pooled``: a convolution and the 2 x 2 max-pool with stride 2 that
  alone reads its output, in one pass each way (the chain's POOLED, see ``neurons/_fused.py``):
  the pool taken as the output is copied out, its gradient scattered where dy is padded; the
  convolution's output and its gradient never written. quickstart's 1 -> 5 filters on 28 x 28 at
  batch 128: forward 270 -> 245 us, backward 300 -> 175 (the two layers' kernels, one after the
  other, against these; two threads).

Each pass is one block of samples per thread, a serial ``*_body`` run by ``_blocks.parallel``.
"""
import numpy as np

from ._blocks import block_count, parallel
from ._config import jit, span
from .conv_planes import (at, copy_out, pad_plane, padded_length, shifted, sum_blocks, total, unpool_plane,
                          widen_plane)
from .maxpool import best_of_four, nan_windows
from .tiles import add_lanes, aligned_empty, dot_products, lanes, tap_products, tile_columns


@jit(inline="always")
def tap_offsets(c, kh, kw, dh, dw, wp, size):
    """Where each tap (ch, i, j), in k's order, starts in a sample's flat padded planes laid
    side by side, ``size`` apart."""
    offsets = np.empty(c * kh * kw, np.int64)
    for ch in range(c):
        for i in range(kh):
            for j in range(kw):
                offsets[(ch * kh + i) * kw + j] = ch * size + at(i * dh, j * dw, wp)
    return offsets


@jit(inline="always")
def _geometry(h, w, oh, ph, pw, kw, dw, like):
    """The padded width, the output's flat length at that width, the tiles' columns (``tile_columns``:
    those past the plane's are dropped) and the length of each padded plane (its tail long enough
    for a tap's slice of that many columns)."""
    wp = w + 2 * pw
    length = oh * wp
    cols = tile_columns(length, like)
    return wp, length, cols, padded_length(h, ph, wp, kw, dw) + cols - length


@jit
def _forward_body(blk, blocks, x, k, b, relu, ph, pw, dh, dw, y):
    """Block ``blk`` of the samples, with the bias (b may be empty) and, if ``relu``, the ReLU."""
    wp, xps, out, offsets, k2 = _forward_buffers(x, k, y.shape[2], ph, pw, dh, dw)
    zero = x.dtype.type(0.0)
    lo, hi = span(blk, blocks, x.shape[0])
    for s in range(lo, hi):
        _sample_products(x, s, ph, pw, xps, k2, offsets, out)
        for q in range(k.shape[0]):
            copy_out(out[q], y[s, q], b[q] if b.shape[0] > 0 else zero, relu, wp)


@jit(inline="always")
def _forward_buffers(x, k, oh, ph, pw, dh, dw):
    """A block's buffers for the forward bodies: the padded width, x's padded planes, the output
    at the padded width, the taps' offsets and k as (F, C·kh·kw)."""
    c, h, w = x.shape[1], x.shape[2], x.shape[3]
    f, kh, kw = k.shape[0], k.shape[2], k.shape[3]
    wp, length, cols, size = _geometry(h, w, oh, ph, pw, kw, dw, x)
    return (wp, aligned_empty(c, size, x), aligned_empty(f, cols, x), tap_offsets(c, kh, kw, dh, dw, wp, size),
            k.reshape(f, c * kh * kw))


@jit(inline="always")
def _sample_products(x, s, ph, pw, xps, k2, offsets, out):
    """Sample ``s``'s output at the padded width into ``out``, before its bias."""
    for ch in range(x.shape[1]):
        pad_plane(x[s, ch], xps[ch], ph, pw)
    tap_products(k2, xps.reshape(xps.shape[0] * xps.shape[1]), offsets, out)


_forward_blocks = parallel(_forward_body)


def forward(x, k, b, relu, padding, dilation, oh, ow):
    """y (N, F, oh, ow) from x (N, C, H, W), k (F, C, kh, kw), b (F,) or (0,), at stride 1, a block
    of samples per thread."""
    y = np.empty((x.shape[0], k.shape[0], oh, ow), x.dtype)
    blocks = block_count(x.shape[0])
    _forward_blocks(blocks, (blocks, x, k, b, bool(relu), padding[0], padding[1], dilation[0], dilation[1], y))
    return y


# ----------------------------------------------------------------------------- with a max-pool
# A convolution whose output only a 2 x 2 max-pool with stride 2 reads: the pool is taken from the
# output at the padded width as it is copied out, and its backward is where dy is widened, so the
# convolution's own output plane and its gradient are never written. Each value and each
# comparison is ``copy_out``'s, ``maxpool``'s and ``widen_plane``'s: the same bits as the two
# layers one after the other. (The ReLU's mask at a window's maximum is the pooled value's sign:
# elsewhere the pool's gradient is zero, masked or not.)

@jit(inline="always")
def _pool_out(flat, y, arg, shift, relu, wp, plane):
    """A padded-width output plane (``copy_out``'s) into its 2 x 2 max-pool y (oh // 2, ow // 2)
    and arg (``maxpool``'s flat indices into the (oh, ow) plane, which ``plane`` is the shape of:
    scratch, written only when a window holds a NaN)."""
    zero = y.dtype.type(0.0)
    w = plane.shape[1]
    oh2, ow = y.shape
    flat_y, flat_arg = y.reshape(oh2 * ow), arg.reshape(oh2 * ow)
    one, row = np.uint64(1), np.uint64(wp)
    for a in range(oh2):
        corner = 2 * a * w
        for b in range(ow):
            # unsigned indices: no checks for negative ones
            t, o = np.uint64(at(2 * a, 2 * b, wp)), np.uint64(a * ow + b)
            best, where = best_of_four(shifted(flat[t], shift, relu, zero), shifted(flat[t + one], shift, relu, zero),
                                       shifted(flat[t + row], shift, relu, zero),
                                       shifted(flat[t + row + one], shift, relu, zero), w)
            flat_y[o] = best
            flat_arg[o] = corner + 2 * b + where
    # a NaN in a window is in the plane before its bias and ReLU (the bias is finite); a NaN sum
    # (a NaN, or inf - inf, also in the columns past the plane's) takes maxpool's own pass
    plane_sum = total(flat, plane.shape[0] * wp)
    if plane_sum != plane_sum:
        copy_out(flat, plane, shift, relu, wp)
        nan_windows(plane.reshape(plane.size), 2, 2, 2, 2, w, flat_y, flat_arg, ow)


@jit
def _forward_pooled_body(blk, blocks, x, k, b, relu, ph, pw, dh, dw, y, arg):
    """``_forward_body``'s block, each output plane max-pooled as it is copied out (``_pool_out``)."""
    oh = x.shape[2] + 2 * ph - dh * (k.shape[2] - 1)
    wp, xps, out, offsets, k2 = _forward_buffers(x, k, oh, ph, pw, dh, dw)
    zero = x.dtype.type(0.0)
    plane = np.empty((oh, x.shape[3] + 2 * pw - dw * (k.shape[3] - 1)), x.dtype)
    lo, hi = span(blk, blocks, x.shape[0])
    for s in range(lo, hi):
        _sample_products(x, s, ph, pw, xps, k2, offsets, out)
        for q in range(k.shape[0]):
            _pool_out(out[q], y[s, q], arg[s, q], b[q] if b.shape[0] > 0 else zero, relu, wp, plane)


_forward_pooled_blocks = parallel(_forward_pooled_body)


def forward_pooled(x, k, b, relu, padding, dilation):
    """``maxpool_forward(forward(...), 2, 2)`` in one pass: ``(y, arg)``, y (N, F, oh // 2, ow // 2)."""
    (ph, pw), (dh, dw) = padding, dilation
    oh, ow = x.shape[2] + 2 * ph - dh * (k.shape[2] - 1), x.shape[3] + 2 * pw - dw * (k.shape[3] - 1)
    y = np.empty((x.shape[0], k.shape[0], oh // 2, ow // 2), x.dtype)
    arg = np.empty(y.shape, np.int32)
    blocks = block_count(x.shape[0])
    _forward_pooled_blocks(blocks, (blocks, x, k, b, bool(relu), ph, pw, dh, dw, y, arg))
    return y, arg


@jit(inline="always")
def _backward_buffers(f, c, h, w, oh, kh, kw, ph, pw, dh, dw, need_dx, like):
    """A block's buffers for ``_backward_body`` and ``_backward_pooled_body``: the geometry, x's and
    dy's padded planes (dy's borders above and below zeroed once: each sample's rows go between
    them), each one's tap offsets, dk's vector lanes and dx's output at the padded width."""
    wp, length, cols, size = _geometry(h, w, oh, ph, pw, kw, dw, like)
    zero = like.dtype.type(0.0)
    first = at(ph, pw, wp)
    dyp = aligned_empty(f, size, like)
    dyp[:, :first] = zero
    dyp[:, first + length:] = zero
    dk_lanes = np.zeros((f, c * kh * kw, lanes(like)), like.dtype)      # a vector per (filter, tap)
    return (wp, length, cols, first, aligned_empty(c, size, like), dyp, tap_offsets(c, kh, kw, dh, dw, wp, size),
            tap_offsets(f, kh, kw, dh, dw, wp, size), dk_lanes, aligned_empty(c if need_dx else 0, cols, like))


@jit(inline="always")
def _sample_gradients(x, s, ph, pw, wp, g, xps, x_taps, dk_lanes, need_dx, kr, dyp, dy_taps, out, dx):
    """Sample ``s``'s part of dk (into ``dk_lanes``) and its dx, once its dy is in ``dyp`` (``g``:
    dy at the padded width, zeros between its rows and after)."""
    c = x.shape[1]
    for ch in range(c):
        pad_plane(x[s, ch], xps[ch], ph, pw)
    dot_products(g, xps.reshape(c * xps.shape[1]), x_taps, dk_lanes)
    if need_dx:
        tap_products(kr, dyp.reshape(dyp.shape[0] * dyp.shape[1]), dy_taps, out)
        for ch in range(c):
            copy_out(out[ch], dx[s, ch], dx.dtype.type(0.0), False, wp)


@jit
def _backward_body(blk, blocks, dy, relu_y, x, kr, kh, kw, ph, pw, dh, dw, need_dx, dx, partial, partial_db):
    """Block ``blk`` of the samples, adding into its own dk (F, C·kh·kw) and db partials (dk's in
    vector lanes while the block runs, their lanes summed after its last sample). ``kr``: the
    kernel turned and swapped (C, F·kh·kw), ``kr[c, (f·kh + i)·kw + j] = k[f, c, kh-1-i, kw-1-j]``."""
    f, oh = dy.shape[1], dy.shape[2]
    c, h, w = x.shape[1], x.shape[2], x.shape[3]
    wp, length, cols, first, xps, dyp, x_taps, dy_taps, dk_lanes, out = _backward_buffers(
        f, c, h, w, oh, kh, kw, ph, pw, dh, dw, need_dx, dy)
    g = dyp[:, first:first + cols]
    db = partial_db[blk]
    lo, hi = span(blk, blocks, dy.shape[0])
    for s in range(lo, hi):
        for q in range(f):
            db[q] += widen_plane(dy, relu_y, s, q, dyp[q, first:first + length], wp)
        _sample_gradients(x, s, ph, pw, wp, g, xps, x_taps, dk_lanes, need_dx, kr, dyp, dy_taps, out, dx)
    add_lanes(dk_lanes, partial[blk])


_backward_blocks = parallel(_backward_body)


@jit
def _backward_pooled_body(blk, blocks, dy, arg, relu_y, x, kr, kh, kw, ph, pw, dh, dw, need_dx, dx, partial,
                          partial_db):
    """``_backward_body`` ("same" padding) from the pooled output's dy (N, F, H // 2, W // 2), its
    ``arg`` and (when the convolution has a ReLU, else empty) its values ``relu_y``."""
    f = dy.shape[1]
    c, h, w = x.shape[1], x.shape[2], x.shape[3]
    wp, length, cols, first, xps, dyp, x_taps, dy_taps, dk_lanes, out = _backward_buffers(
        f, c, h, w, h, kh, kw, ph, pw, dh, dw, need_dx, dy)
    g = dyp[:, first:first + cols]
    db = partial_db[blk]
    relu = relu_y.shape[0] > 0
    mask = relu_y if relu else dy
    lo, hi = span(blk, blocks, dy.shape[0])
    for s in range(lo, hi):
        for q in range(f):
            db[q] += unpool_plane(dy[s, q], mask[s, q], arg[s, q], relu, dyp[q, first:first + length], w, wp)
        _sample_gradients(x, s, ph, pw, wp, g, xps, x_taps, dk_lanes, need_dx, kr, dyp, dy_taps, out, dx)
    add_lanes(dk_lanes, partial[blk])


_backward_pooled_blocks = parallel(_backward_pooled_body)


def same_padding(kernel, padding, dilation):
    """Whether ``backward`` takes a layer: padding that keeps the plane's size at stride 1."""
    return all(2 * p == d * (k - 1) for k, p, d in zip(kernel, padding, dilation))


@jit(inline="always")
def turned(k):
    """k (F, C, kh, kw) turned by 180 degrees, filters and channels swapped: (C, F·kh·kw)."""
    f, c, kh, kw = k.shape
    kr = np.empty((c, f * kh * kw), k.dtype)
    for ch in range(c):
        for q in range(f):
            for i in range(kh):
                for j in range(kw):
                    kr[ch, (q * kh + i) * kw + j] = k[q, ch, kh - 1 - i, kw - 1 - j]
    return kr


def backward(dy, relu_y, x, k, padding, dilation, need_dx):
    """``(dx, dk, db)`` at stride 1 with ``same_padding``; dx is empty (0, C, H, W) unless ``need_dx``."""
    return _backward(_backward_blocks, (dy, relu_y), x, k, padding, dilation, need_dx)


def backward_pooled(dy, arg, relu_y, x, k, padding, dilation, need_dx):
    """``backward`` of ``forward_pooled``'s layer from its output's dy, its arg and (the ReLU's mask,
    or empty) its values: ``(dx, dk, db)``."""
    return _backward(_backward_pooled_blocks, (dy, arg, relu_y), x, k, padding, dilation, need_dx)


def _backward(run, dys, x, k, padding, dilation, need_dx):
    """``run`` (a backward body's blocks) on dy and what goes with it (``dys``); ``(dx, dk, db)``."""
    dy = dys[0]
    n, f, c, kh, kw = dy.shape[0], k.shape[0], k.shape[1], k.shape[2], k.shape[3]
    taps = c * kh * kw
    dx = np.empty((n if need_dx else 0,) + x.shape[1:], dy.dtype)
    blocks = block_count(n)
    partial = np.zeros((blocks, f, taps), dy.dtype)
    partial_db = np.zeros((blocks, f), dy.dtype)
    run(blocks, (blocks,) + dys + (x, turned(np.ascontiguousarray(k)), kh, kw, padding[0], padding[1], dilation[0],
                                   dilation[1], bool(need_dx), dx, partial, partial_db))
    return dx, sum_blocks(partial.reshape(blocks, f * taps)).reshape(k.shape), sum_blocks(partial_db)
