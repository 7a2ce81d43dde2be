"""Max-pooling without padding, any kernel and stride (windows may overlap), NCHW.

``H' = floor((H - kh) / sh) + 1``. ``arg`` records the flat index ``h·W + w`` of each window's
first maximum (row-major window order), where the gradient goes; gradients of overlapping
windows that pick the same element add up. A NaN beats every number, as in PyTorch: a window
holding a NaN gives NaN, and its gradient goes to the window's first NaN (see ``nan_windows``).

The general forward pass is a plain scalar loop per window over the flattened plane (measured
faster than row slices for every shape tried: 2.5x on 14 x 14 planes, where rows are short).
The common 2 x 2 window with stride 2 has its own kernel, four compares unrolled over two row
slices (batch 32: 1238 -> 344 us on 32 x 28 x 28, 557 -> 261 us on 64 x 14 x 14). The scatter
indexes with unsigned integers, so Numba adds no negative-index checks to its loop. Each pass
is one block of planes per thread (a serial ``*_body`` run by ``_blocks.parallel``), or a single
block, without the thread pool, below ``PARALLEL_MIN`` input elements.
"""
import numpy as np

from ._blocks import block_count, parallel
from ._config import jit, span

# below this many input elements a pass runs as one block, without the thread pool
PARALLEL_MIN = 16384


def maxpool_forward(x, kernel, stride):
    """x (N, C, H, W) -> ``(y, arg)``: y (N, C, H', W'), arg int32 of y's shape."""
    if tuple(kernel) == (2, 2) and tuple(stride) == (2, 2):
        return _forward_2x2(np.ascontiguousarray(x))
    return _forward_any(np.ascontiguousarray(x), tuple(kernel), tuple(stride))


@jit(inline="always")
def _first_nan(plane, at, kh, kw, w):
    """The flat index of the first NaN (row-major) in the kh x kw window starting at ``at``, or -1."""
    for i in range(kh):
        for j in range(kw):
            p = at + i * w + j
            if plane[p] != plane[p]:
                return p
    return -1


@jit(inline="always")
def nan_windows(plane, kh, kw, sh, sw, w, y_plane, arg_plane, ow):
    """After a plane's pass: every window that holds a NaN gets the first one as its output and arg.

    The passes compare with a plain ``>``, which a NaN fails, and stay as they were: a NaN-aware
    compare (``v > best or v != v``) made the 2 x 2 pass 5x slower, and the general one 3x. A NaN
    is found here instead by the plane's sum, a vectorised read of a plane still in cache
    (measured at batch 32: the 2 x 2 pass +10-30 %, 10-30 us; the general one +2-4 %); only a
    plane whose sum is NaN (a NaN, or inf - inf: then nothing is found) is looked at again."""
    total = plane.dtype.type(0.0)
    for t in range(plane.shape[0]):
        total += plane[t]
    if total == total:
        return
    for o in range(y_plane.shape[0]):
        p = _first_nan(plane, (o // ow) * sh * w + (o % ow) * sw, kh, kw, w)
        if p >= 0:
            y_plane[o] = plane[p]
            arg_plane[o] = p


@jit(inline="always")
def best_of_four(v0, v1, v2, v3, w):
    """A 2 x 2 window's maximum, its values given row by row, and where it lies in a plane of
    width ``w`` from the window's corner (0, 1, w or w + 1): the first of equal values; never a
    NaN's place (``nan_windows`` finds those)."""
    upper = v1 > v0
    top, top_at = v1 if upper else v0, 1 if upper else 0
    lower = v3 > v2
    bottom, bottom_at = v3 if lower else v2, w + 1 if lower else w
    down = bottom > top
    return bottom if down else top, bottom_at if down else top_at


@jit(inline="always")
def _planes(blk, blocks, x, y, arg):
    """x, y and arg as (N·C, plane) arrays, and block ``blk``'s range of planes."""
    n, c = x.shape[0], x.shape[1]
    lo, hi = span(blk, blocks, n * c)
    return x.reshape(n * c, -1), y.reshape(n * c, -1), arg.reshape(n * c, -1), lo, hi


@jit
def _forward_2x2_body(blk, blocks, x, y, arg):
    """Planes of block ``blk`` (of the N·C planes)."""
    w, oh, ow = x.shape[3], y.shape[2], y.shape[3]
    flat, y_flat, arg_flat, lo, hi = _planes(blk, blocks, x, y, arg)
    for nc in range(lo, hi):
        plane, y_plane, arg_plane = flat[nc], y_flat[nc], arg_flat[nc]
        for a in range(oh):
            top, bottom = plane[2 * a * w:2 * a * w + w], plane[(2 * a + 1) * w:(2 * a + 1) * w + w]
            y_row, arg_row = y_plane[a * ow:a * ow + ow], arg_plane[a * ow:a * ow + ow]
            for b in range(ow):
                best, at = best_of_four(top[2 * b], top[2 * b + 1], bottom[2 * b], bottom[2 * b + 1], w)
                y_row[b] = best
                arg_row[b] = 2 * a * w + 2 * b + at
        nan_windows(plane, 2, 2, 2, 2, w, y_plane, arg_plane, ow)


_forward_2x2_blocks = parallel(_forward_2x2_body)


def _forward_2x2(x):
    n, c, h, w = x.shape
    y = np.empty((n, c, h // 2, w // 2), x.dtype)
    arg = np.empty(y.shape, np.int32)
    blocks = _plane_blocks(x)
    _forward_2x2_blocks(blocks, (blocks, x, y, arg))
    return y, arg


def _plane_blocks(x):
    """How many blocks of (sample, channel) planes a pass over ``x`` (N, C, H, W) takes: one per
    thread, or one below ``PARALLEL_MIN`` elements."""
    return block_count(x.shape[0] * x.shape[1], x.size, PARALLEL_MIN)


@jit
def _forward_any_body(blk, blocks, x, kh, kw, sh, sw, y, arg):
    w, oh, ow = x.shape[3], y.shape[2], y.shape[3]
    flat, y_flat, arg_flat, lo, hi = _planes(blk, blocks, x, y, arg)
    for nc in range(lo, hi):
        plane, best_out, arg_out = flat[nc], y_flat[nc], arg_flat[nc]
        for a in range(oh):
            for b in range(ow):
                at = a * sh * w + b * sw
                best = plane[at]
                for i in range(kh):
                    for j in range(kw):
                        p = (a * sh + i) * w + b * sw + j
                        if plane[p] > best:
                            best = plane[p]
                            at = p
                best_out[a * ow + b] = best
                arg_out[a * ow + b] = at
        nan_windows(plane, kh, kw, sh, sw, w, best_out, arg_out, ow)


_forward_any_blocks = parallel(_forward_any_body)


def _forward_any(x, kernel, stride):
    n, c, h, w = x.shape
    (kh, kw), (sh, sw) = kernel, stride
    y = np.empty((n, c, (h - kh) // sh + 1, (w - kw) // sw + 1), x.dtype)
    arg = np.empty(y.shape, np.int32)
    blocks = _plane_blocks(x)
    _forward_any_blocks(blocks, (blocks, x, kh, kw, sh, sw, y, arg))
    return y, arg


def maxpool_backward(dy, arg, hw, kernel=None, stride=None):
    """dy (N, C, H', W'), arg from the forward pass, hw = (H, W) -> dx (N, C, H, W). Given the
    forward pass's kernel and stride, the 2 x 2 / stride 2 case writes dx in one pass."""
    if kernel is not None and tuple(kernel) == (2, 2) and tuple(stride) == (2, 2):
        return _backward_2x2(np.ascontiguousarray(dy), np.ascontiguousarray(arg), hw[0], hw[1])
    return _backward_any(np.ascontiguousarray(dy), np.ascontiguousarray(arg), hw)


@jit
def _backward_2x2_body(blk, blocks, dy, arg, dx):
    """Planes of block ``blk``: each plane zeroed (a vectorised fill), then each window's
    gradient stored at its maximum (windows do not overlap: a store, not an add). Writing every
    element of the window in turn, the gradient or zero by a compare with the arg, took 10x as
    long (serial, 32 x 5 x 28 x 28: 290 -> 28 us)."""
    n, c, oh, ow = dy.shape
    h, w = dx.shape[2], dx.shape[3]
    flat, g_flat, arg_flat = dx.reshape(n * c, h * w), dy.reshape(n * c, oh * ow), arg.reshape(n * c, oh * ow)
    zero = dy.dtype.type(0.0)
    lo, hi = span(blk, blocks, n * c)
    for nc in range(lo, hi):
        plane, g, idx = flat[nc], g_flat[nc], arg_flat[nc]
        for t in range(h * w):
            plane[t] = zero
        for o in range(oh * ow):
            plane[np.uint32(idx[o])] = g[o]


_backward_2x2_blocks = parallel(_backward_2x2_body)


def _backward_2x2(dy, arg, h, w):
    n, c = dy.shape[0], dy.shape[1]
    dx = np.empty((n, c, h, w), dy.dtype)
    blocks = _plane_blocks(dx)
    _backward_2x2_blocks(blocks, (blocks, dy, arg, dx))
    return dx


@jit
def _backward_any_body(blk, blocks, dy, arg, dx):
    """Planes of block ``blk``: each window's gradient added at its maximum (overlapping windows
    that pick the same element add up)."""
    n, c, oh, ow = dy.shape
    h, w = dx.shape[2], dx.shape[3]
    flat = dx.reshape(n * c, h * w)
    lo, hi = span(blk, blocks, n * c)
    for nc in range(lo, hi):
        s, ch = nc // c, nc % c
        plane = flat[nc]
        plane[:] = dy.dtype.type(0.0)
        for a in range(oh):
            g = dy[s, ch, a]
            idx = arg[s, ch, a]
            for b in range(ow):
                plane[np.uint32(idx[b])] += g[b]


_backward_any_blocks = parallel(_backward_any_body)


def _backward_any(dy, arg, hw):
    dx = np.empty(dy.shape[:2] + tuple(hw), dy.dtype)
    blocks = _plane_blocks(dx)
    _backward_any_blocks(blocks, (blocks, dy, arg, dx))
    return dx
