"""The flat padded planes every convolution kernel works on, and the per-filter bias.

Why the convolution loops look the way they do: an index such as ``x[t + shift]`` with a runtime
``shift`` makes Numba check it for negative wraparound on every access, and that check stops
LLVM from vectorising the loop (6x slower, measured). So each (H, W) plane is zero-padded once
into a flat 1-D form, rows of width ``wp = W + 2pw`` back to back, and loops index 1-D slices
of it with the bare loop counter. ``at(row, col, wp)`` is where (row, col) of such a plane lies;
``x[a, b]`` sits at ``at(a + ph, b + pw, wp)``. A padded plane ends with a tail of zeros so that a
kernel tap's flat slice never runs past its end (``tail``, ``padded_length``).

With stride 1 a kernel tap is one long loop over the whole output plane at the padded width
(``conv_direct.py``, ``conv_gemm.py``): output (a, b) reads padded element
``at(a, b, wp) + at(i·dh, j·dw, wp)`` for tap (i, j), so a tap is a contiguous slice starting at
``at(i·dh, j·dw, wp)``; the ``wp - ow`` extra columns of each output row are computed and dropped
(``copy_out``), and a ``dy`` is ``widen``-ed with zero columns to the same width so that they add
nothing to the gradients. Other strides take a row at a time (``tap_row``, ``conv_strided.py``).

Batch-wide passes split their (sample, channel) planes into one block per thread: each a
serial ``*_body`` run by ``_blocks.parallel`` (see ``_blocks.py``).
"""
import numpy as np

from ._blocks import block_count, parallel
from ._config import jit, span

# The three one-line helpers below are inlined into the kernels that call them (Numba IR, before
# typing): as separate functions they added 0.9 s of CPU to the 12.2 s cold compile of a
# convolution's forward and backward (batch 32, 1 -> 5 filters; inlined: 0.3 s, within the noise).


@jit(inline="always")
def at(row, col, wp):
    """Where (row, col) of a plane lies in its flat form of row width ``wp``."""
    return row * wp + col


@jit(inline="always")
def tail(kw, dw):
    """The zeros after a padded plane's last row: a stride-1 tap's flat slice (``oh·wp`` long,
    starting ``at(i·dh, j·dw, wp)``) ends up to ``dw·(kw - 1)`` past that row; one more is kept."""
    return dw * (kw - 1) + 1


@jit(inline="always")
def padded_length(h, ph, wp, kw, dw):
    """The flat length of a plane of height ``h`` padded by ``ph`` rows of width ``wp``, and its tail."""
    return at(h + 2 * ph, tail(kw, dw), wp)


@jit
def tap_row(plane, wp, row, col, ow, sw):
    """Row ``row`` of a flat padded plane, from column ``col`` every ``sw``, ``ow`` values."""
    start = at(row, col, wp)
    return plane[start:start + (ow - 1) * sw + 1:sw]


# ----------------------------------------------------------------------------- pad and unpad

@jit
def pad_plane(src, plane, ph, pw):
    """One (H, W) plane into its flat padded form ``plane`` (as ``pad`` lays it out), every element
    written once: border zeros with the rows, no zero fill first."""
    h, w = src.shape
    wp = w + 2 * pw
    size = plane.shape[0]
    zero = plane.dtype.type(0.0)
    for t in range(at(ph, pw, wp)):
        plane[t] = zero
    for a in range(h):
        base = at(a + ph, pw, wp)
        row, line = plane[base:base + w], src[a]
        for b in range(w):
            row[b] = line[b]
        for t in range(base + w, min(size, base + wp)):     # its right, the next row's left border
            plane[t] = zero
    for t in range(min(size, at(h + ph, pw, wp)), size):
        plane[t] = zero


@jit
def _pad_body(blk, blocks, x, ph, pw, xp):
    c = x.shape[1]
    lo, hi = span(blk, blocks, x.shape[0] * c)
    for nc in range(lo, hi):
        pad_plane(x[nc // c, nc % c], xp[nc // c, nc % c], ph, pw)


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
def unpad_plane(plane, dst, ph, pw):
    """The interior of one flat padded plane into ``dst`` (h, w)."""
    h, w = dst.shape
    wp = w + 2 * pw
    for a in range(h):
        start = at(a + ph, pw, wp)
        src, row = plane[start:start + w], dst[a]
        for b in range(w):
            row[b] = src[b]


@jit
def _unpad_body(blk, blocks, xp, ph, pw, x):
    c = x.shape[1]
    lo, hi = span(blk, blocks, x.shape[0] * c)
    for nc in range(lo, hi):
        unpad_plane(xp[nc // c, nc % c], x[nc // c, nc % c], ph, pw)


_unpad_blocks = parallel(_unpad_body)


def unpad(xp, h, w, ph, pw):
    """The interior (N, C, h, w) of a padded, flattened array made like ``pad``'s."""
    n, c = xp.shape[0], xp.shape[1]
    x = np.empty((n, c, h, w), xp.dtype)
    blocks = block_count(n * c)
    _unpad_blocks(blocks, (blocks, xp, ph, pw, x))
    return x


# ----------------------------------------------------------------------------- output width

@jit
def widen_plane(dy, relu_y, s, q, dst, wp):
    """``widen`` for the plane dy[s, q] into ``dst`` (oh·wp); returns the sum written (for db).
    The rows are read by index, not through a slice of each, and the sum is one pass over ``dst``
    afterwards, not one per row: 64 planes of 14 x 14 took 29-31 us, now 11-13, with or without
    the ReLU (the slices were most of it)."""
    oh, ow = dy.shape[2], dy.shape[3]
    relu = relu_y.shape[0] > 0
    zero = dy.dtype.type(0.0)
    plane = dy[s, q]
    mask = relu_y[s, q] if relu else plane
    for a in range(oh):
        start = at(a, 0, wp)
        for b in range(ow):
            # both loads first: a load inside the condition is not hoisted, and the loop stays a
            # branch per element, mispredicted on a ReLU's mask (32 -> 64 filters on 14 x 14:
            # 50-100 -> 20 us a sample, as without the mask)
            d, m = plane[a, b], mask[a, b]
            dst[start + b] = zero if relu and m <= zero else d      # a NaN y passes dy, as relu_backward
        for b in range(ow, wp):
            dst[start + b] = zero
    return total(dst, oh * wp)


@jit
def unpool_plane(dy, mask, arg, relu, dst, w, wp):
    """``widen_plane`` of what ``maxpool``'s 2 x 2 backward with stride 2 gives a convolution's
    output plane of width ``w``: dy (oh // 2, w // 2) at each window's maximum ``arg`` (flat
    indices into the plane), zeros elsewhere, through the ReLU if ``relu`` (``mask``: the pooled
    output, the ReLU's at those places), into dst (oh·wp); returns the sum written (for db)."""
    zero = dy.dtype.type(0.0)
    for t in range(dst.shape[0]):
        dst[t] = zero
    for a in range(dy.shape[0]):
        for b in range(dy.shape[1]):
            d, m, where = dy[a, b], mask[a, b], arg[a, b] - 2 * (a * w + b)        # 0, 1, w or w + 1
            if where >= w:
                where += wp - w
            dst[at(2 * a, 2 * b, wp) + where] = zero if relu and m <= zero else d
    return total(dst, dst.shape[0])


@jit(inline="always")
def total(a, n):
    """The sum of a[:n], in one pass (a widened dy's, for db)."""
    acc = a.dtype.type(0.0)
    for t in range(n):
        acc += a[t]
    return acc


@jit
def _widen_body(blk, blocks, dy, relu_y, wp, out):
    f = dy.shape[1]
    lo, hi = span(blk, blocks, dy.shape[0] * f)
    for nf in range(lo, hi):
        widen_plane(dy, relu_y, nf // f, nf % f, out[nf // f, nf % f], wp)


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
def copy_out(flat, plane, shift, relu, wp):
    """A padded-width output plane (oh·wp) into its (oh, ow) place, plus ``shift``, through a ReLU
    if ``relu``. The ReLU keeps a NaN (``v < 0`` is false for it; ``max(v, 0)`` would keep it only
    by its argument order)."""
    zero = plane.dtype.type(0.0)
    for a in range(plane.shape[0]):
        start = at(a, 0, wp)
        src = flat[start:start + plane.shape[1]]
        dst = plane[a]
        for t in range(plane.shape[1]):
            dst[t] = shifted(src[t], shift, relu, zero)


@jit(inline="always")
def shifted(v, shift, relu, zero):
    """An output value plus its bias, through a ReLU if ``relu`` (as ``copy_out`` writes it)."""
    v = v + shift
    return (zero if v < zero else v) if relu else v


@jit
def sum_blocks(partial):
    """Per-block partials (blocks, size) summed in block order (the same bits for the same blocks)."""
    total = partial[0].copy()
    for blk in range(1, partial.shape[0]):
        total += partial[blk]
    return total


# ----------------------------------------------------------------------------- bias

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
    dy = np.ascontiguousarray(dy)
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
    _add_bias_blocks(blocks, (blocks, y, np.ascontiguousarray(b)))
