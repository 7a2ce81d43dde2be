"""Max-pooling without padding, any kernel and stride (windows may overlap), NCHW.

``H' = floor((H - kh) / sh) + 1``. ``arg`` records the flat index ``h·W + w`` of each window's
first maximum (row-major window order), where the gradient goes; gradients of overlapping
windows that pick the same element add up.
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
    for nc in prange(n * c):
        s, ch = nc // c, nc % c
        for a in range(oh):
            for b in range(ow):
                best = x[s, ch, a * sh, b * sw]
                at = (a * sh) * w + b * sw
                for i in range(kh):
                    for j in range(kw):
                        v = x[s, ch, a * sh + i, b * sw + j]
                        if v > best:
                            best = v
                            at = (a * sh + i) * w + b * sw + j
                y[s, ch, a, b] = best
                arg[s, ch, a, b] = at
    return y, arg


@pjit
def maxpool_backward(dy, arg, hw):
    """dy (N, C, H', W'), arg from the forward pass, hw = (H, W) -> dx (N, C, H, W)."""
    n, c, oh, ow = dy.shape
    h, w = hw
    dx = np.zeros((n, c, h, w), dy.dtype)
    for nc in prange(n * c):
        s, ch = nc // c, nc % c
        flat = dx[s, ch].reshape(h * w)
        for a in range(oh):
            for b in range(ow):
                flat[arg[s, ch, a, b]] += dy[s, ch, a, b]
    return dx
