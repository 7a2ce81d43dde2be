"""Stride-1 convolution by direct loops, for few filters over few channels, or few weights (see
``conv.py``'s table).

Every kernel tap is one long loop over the whole output plane at the padded width (see
``conv_planes.py``): ``acc[t] += k[q, c, i, j] · xp[c, at(i·dh, j·dw, wp) + t]``. Each pass is one
block of samples per thread, a sample padded (and its dy widened) at a time into buffers of the
block's own; each block a serial ``*_body`` run by ``_blocks.parallel``.

- ``forward``: ``conv_taps.forward`` (its register tiles read the taps as these loops do, the
  accumulators in registers: quickstart's 5 filters, per sample 1.86 -> 0.93-1.02 us).
- ``backward``: dx, dk and db in one pass over the batch; dk by ``tiles.dot_products`` (per
  sample 1.96 -> 0.9 us on quickstart's layer); each block adds into dk and db partials of its
  own, summed in block order after it (the same bits for the same thread count). Layers whose
  padding keeps the plane's size take ``conv_taps.backward`` instead.
- ``correlate``, ``scatter``, ``weight_grad``: the three primitives of ``conv.py`` at stride 1
  (``stride`` is always (1, 1) here; it is taken so that every implementation is called alike).
"""
import numpy as np

from ._blocks import block_count, parallel
from ._config import jit, span
from .conv_planes import (at, pad_plane, padded_length, sum_blocks, unpad, unpad_plane,
                          widen, widen_plane)
from .conv_taps import forward, tap_offsets
from .tiles import add_lanes, aligned_empty, dot_products, lanes, tile_columns


def correlate(x, k, stride, padding, dilation, oh, ow):
    """``forward`` without bias or ReLU."""
    return forward(x, k, np.empty(0, k.dtype), False, padding, dilation, oh, ow)


@jit
def _scatter_plane(dyw_s, k, ch, dst_plane, wp, dilation, length):
    """Add channel ``ch``'s input gradient of one sample (widened dy ``dyw_s``) into ``dst_plane``."""
    dh, dw = dilation
    for q in range(k.shape[0]):
        g = dyw_s[q]
        for i in range(k.shape[2]):
            for j in range(k.shape[3]):
                kv = k[q, ch, i, j]
                start = at(i * dh, j * dw, wp)
                dst = dst_plane[start:start + length]
                for t in range(length):
                    dst[t] += kv * g[t]


@jit
def _scatter_flat_body(blk, blocks, dyw, k, dh, dw, wp, dxp):
    c, length = dxp.shape[1], dyw.shape[2]
    lo, hi = span(blk, blocks, dxp.shape[0] * c)
    for nc in range(lo, hi):
        _scatter_plane(dyw[nc // c], k, nc % c, dxp[nc // c, nc % c], wp, (dh, dw), length)


_scatter_flat_blocks = parallel(_scatter_flat_body)


def scatter(dy, k, stride, padding, dilation, h, w):
    """dx (N, C, h, w) from dy (N, F, oh, ow): a block of (sample, channel) planes per thread."""
    n, c, kw = dy.shape[0], k.shape[1], k.shape[3]
    wp = w + 2 * padding[1]
    dxp = np.zeros((n, c, padded_length(h, padding[0], wp, kw, dilation[1])), dy.dtype)
    dyw = widen(dy, dy[:0], wp)
    blocks = block_count(n * c)
    _scatter_flat_blocks(blocks, (blocks, dyw, k, dilation[0], dilation[1], wp, dxp))
    return unpad(dxp, h, w, padding[0], padding[1])


@jit
def _backward_direct_body(blk, blocks, dy, relu_y, x, k, ph, pw, dh, dw, need_dx, dx, partial, partial_db):
    """Block ``blk`` of the samples, adding into its own dk (F, C·kh·kw) and db partials; one
    sample at a time: dy widened (through the ReLU), x padded, then every (filter, tap) pair's
    dot product for dk by register tiles (``tiles.dot_products``, into vector partials whose lanes
    are summed after the block's last sample), and dx scattered into a padded buffer and copied
    out."""
    f, oh = dy.shape[1], dy.shape[2]
    c, h, w = x.shape[1], x.shape[2], x.shape[3]
    kh, kw = k.shape[2], k.shape[3]
    dk, db = partial[blk], partial_db[blk]
    wp = w + 2 * pw
    length = oh * wp
    cols = tile_columns(length, dy)             # the tiles' columns: dy's past the plane's are zero
    size = padded_length(h, ph, wp, kw, dw)
    wide = size + cols - length
    zero = dy.dtype.type(0.0)
    dyw = aligned_empty(f, cols, dy)
    dyw[:, length:] = zero
    xps = aligned_empty(c, wide, dy)
    offsets = tap_offsets(c, kh, kw, dh, dw, wp, wide)
    dk_lanes = np.zeros((f, c * kh * kw, lanes(dy)), dy.dtype)       # a vector per (filter, tap)
    dxps = np.empty((c if need_dx else 0, size), dy.dtype)
    lo, hi = span(blk, blocks, dy.shape[0])
    for s in range(lo, hi):
        for q in range(f):
            db[q] += widen_plane(dy, relu_y, s, q, dyw[q], wp)
        for ch in range(c):
            pad_plane(x[s, ch], xps[ch], ph, pw)
        dot_products(dyw, xps.reshape(c * wide), offsets, dk_lanes)
        if need_dx:
            dxps[:] = zero
            for ch in range(c):
                _scatter_plane(dyw, k, ch, dxps[ch], wp, (dh, dw), length)
                unpad_plane(dxps[ch], dx[s, ch], ph, pw)
    add_lanes(dk_lanes, dk)


_backward_direct_blocks = parallel(_backward_direct_body)


def backward(dy, relu_y, x, k, padding, dilation, need_dx):
    """``(dx, dk, db)`` at stride 1, each sample's dy widened once (through the ReLU when
    ``relu_y`` is not empty) for all three; dx is empty (0, C, H, W) unless ``need_dx``."""
    n, f = dy.shape[0], dy.shape[1]
    taps = k.shape[1] * k.shape[2] * k.shape[3]
    dx = np.empty((n if need_dx else 0,) + x.shape[1:], dy.dtype)
    blocks = block_count(n)
    partial = np.zeros((blocks, f, taps), dy.dtype)
    partial_db = np.zeros((blocks, f), dy.dtype)
    _backward_direct_blocks(blocks, (blocks, dy, relu_y, x, k, padding[0], padding[1], dilation[0], dilation[1],
                                     bool(need_dx), dx, partial, partial_db))
    return dx, sum_blocks(partial.reshape(blocks, f * taps)).reshape(k.shape), sum_blocks(partial_db)


def weight_grad(dy, x, stride, padding, dilation, kh, kw):
    """dk of ``backward`` alone: no dx, no ReLU (its kernel argument only carries the shape)."""
    k = np.zeros((dy.shape[1], x.shape[1], kh, kw), dy.dtype)
    return backward(dy, dy[:0], x, k, padding, dilation, False)[1]
