"""Max-pooling without padding, any kernel and stride (windows may overlap), NCHW.

``H' = floor((H - kh) / sh) + 1``. ``arg`` records the flat index ``h·W + w`` of each window's
first maximum (row-major window order), where the gradient goes; gradients of overlapping
windows that pick the same element add up.

As in ``conv.py``, rows are taken as (strided) slices indexed by bare loop counters, and the
scatter indexes with unsigned integers, so Numba adds no negative-index checks to inner loops.
"""
import numpy as np
from numba import prange

from ._config import pjit


@pjit
def maxpool_forward(x, kernel, stride):
    """x (N, C, H, W) -> ``(y, arg)``: y (N, C, H', W'), arg int32 of y's shape."""
    n, c, h, w = x.shape
    kh, kw = kernel
    sh, sw = stride
    oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
    y = np.empty((n, c, oh, ow), x.dtype)
    arg = np.empty((n, c, oh, ow), np.int32)
    span = (ow - 1) * sw + 1
    for nc in prange(n * c):
        s, ch = nc // c, nc % c
        for a in range(oh):
            best = y[s, ch, a]
            at = arg[s, ch, a]
            first = x[s, ch, a * sh, 0:span:sw]
            for b in range(ow):
                best[b] = first[b]
                at[b] = a * sh * w + b * sw
            for i in range(kh):
                row = x[s, ch, a * sh + i]
                base = (a * sh + i) * w
                for j in range(kw):
                    seg = row[j:j + span:sw]
                    for b in range(ow):
                        v = seg[b]
                        if v > best[b]:
                            best[b] = v
                            at[b] = base + b * sw + j
    return y, arg


@pjit
def maxpool_backward(dy, arg, hw):
    """dy (N, C, H', W'), arg from the forward pass, hw = (H, W) -> dx (N, C, H, W)."""
    n, c, oh, ow = dy.shape
    h, w = hw
    dx = np.zeros((n, c, h * w), dy.dtype)
    for nc in prange(n * c):
        s, ch = nc // c, nc % c
        flat = dx[s, ch]
        for a in range(oh):
            g = dy[s, ch, a]
            idx = arg[s, ch, a]
            for b in range(ow):
                flat[np.uint32(idx[b])] += g[b]
    return dx.reshape(n, c, h, w)
