"""Stride-1 convolution by register tiles that read each kernel tap straight from the flat padded
planes (see ``conv_planes.py``): the product of an im2col without the im2col.

- ``forward``: every filter's output at the padded width by ``tiles.tap_products``, copied out with
  the bias and, if asked, the ReLU.
- ``backward`` ("same" padding: ``2·ph = dh·(kh - 1)``, ``2·pw = dw·(kw - 1)``, so that dy's plane
  is x's): dy padded as x is (its rows widened into place through the ReLU, ``widen_plane``),
  then dk by ``tiles.dot_products`` (every filter's dy against every tap's slice of x), and dx
  as the forward pass of the padded dy with the kernel turned by 180 degrees and its filters and
  channels swapped, by ``tiles.tap_products``.

Each pass is one block of samples per thread, a serial ``*_body`` run by ``_blocks.parallel``.
"""
import numpy as np

from ._blocks import block_count, parallel
from ._config import jit, span
from .conv_planes import at, copy_out, pad_plane, padded_length, sum_blocks, widen_plane
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
    n, c, h, w = x.shape
    f, _, kh, kw = k.shape
    wp, length, cols, size = _geometry(h, w, y.shape[2], ph, pw, kw, dw, x)
    zero = x.dtype.type(0.0)
    xps = aligned_empty(c, size, x)
    out = aligned_empty(f, cols, x)
    offsets = tap_offsets(c, kh, kw, dh, dw, wp, size)
    k2 = k.reshape(f, c * kh * kw)
    lo, hi = span(blk, blocks, n)
    for s in range(lo, hi):
        for ch in range(c):
            pad_plane(x[s, ch], xps[ch], ph, pw)
        tap_products(k2, xps.reshape(c * size), offsets, out)
        for q in range(f):
            copy_out(out[q], y[s, q], b[q] if b.shape[0] > 0 else zero, relu, wp)


_forward_blocks = parallel(_forward_body)


def forward(x, k, b, relu, padding, dilation, oh, ow):
    """y (N, F, oh, ow) from x (N, C, H, W), k (F, C, kh, kw), b (F,) or (0,), at stride 1, a block
    of samples per thread."""
    y = np.empty((x.shape[0], k.shape[0], oh, ow), x.dtype)
    blocks = block_count(x.shape[0])
    _forward_blocks(blocks, (blocks, x, k, b, bool(relu), padding[0], padding[1], dilation[0], dilation[1], y))
    return y


@jit
def _backward_body(blk, blocks, dy, relu_y, x, kr, kh, kw, ph, pw, dh, dw, need_dx, dx, partial, partial_db):
    """Block ``blk`` of the samples, adding into its own dk (F, C·kh·kw) and db partials (dk's in
    vector lanes while the block runs, their lanes summed after its last sample). ``kr``: the
    kernel turned and swapped (C, F·kh·kw), ``kr[c, (f·kh + i)·kw + j] = k[f, c, kh-1-i, kw-1-j]``."""
    f, oh = dy.shape[1], dy.shape[2]
    c, h, w = x.shape[1], x.shape[2], x.shape[3]
    dk, db = partial[blk], partial_db[blk]
    wp, length, cols, size = _geometry(h, w, oh, ph, pw, kw, dw, dy)
    zero = dy.dtype.type(0.0)
    xps = aligned_empty(c, size, dy)
    dyp = aligned_empty(f, size, dy)
    x_taps = tap_offsets(c, kh, kw, dh, dw, wp, size)
    dy_taps = tap_offsets(f, kh, kw, dh, dw, wp, size)
    first = at(ph, pw, wp)
    dyp[:, :first] = zero               # dy's padded planes: the borders above and below, once;
    dyp[:, first + length:] = zero      # each sample's rows widened into place between them
    g = dyp[:, first:first + cols]      # dy at the padded width, zeros between its rows and after
    dk_lanes = np.zeros((f, c * kh * kw, lanes(dy)), dy.dtype)       # a vector per (filter, tap)
    out = aligned_empty(c if need_dx else 0, cols, dy)
    lo, hi = span(blk, blocks, dy.shape[0])
    for s in range(lo, hi):
        for q in range(f):
            db[q] += widen_plane(dy, relu_y, s, q, dyp[q, first:first + length], wp)
        for ch in range(c):
            pad_plane(x[s, ch], xps[ch], ph, pw)
        dot_products(g, xps.reshape(c * size), x_taps, dk_lanes)
        if need_dx:
            tap_products(kr, dyp.reshape(f * size), dy_taps, out)
            for ch in range(c):
                copy_out(out[ch], dx[s, ch], zero, False, wp)
    add_lanes(dk_lanes, dk)


_backward_blocks = parallel(_backward_body)


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
    n, f, c, kh, kw = dy.shape[0], k.shape[0], k.shape[1], k.shape[2], k.shape[3]
    taps = c * kh * kw
    dx = np.empty((n if need_dx else 0,) + x.shape[1:], dy.dtype)
    blocks = block_count(n)
    partial = np.zeros((blocks, f, taps), dy.dtype)
    partial_db = np.zeros((blocks, f), dy.dtype)
    kr = turned(np.ascontiguousarray(k))
    _backward_blocks(blocks, (blocks, dy, relu_y, x, kr, kh, kw, padding[0], padding[1], dilation[0], dilation[1],
                              bool(need_dx), dx, partial, partial_db))
    return dx, sum_blocks(partial.reshape(blocks, f * taps)).reshape(k.shape), sum_blocks(partial_db)
