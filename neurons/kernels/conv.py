"""2-D convolution (cross-correlation with zero padding), batch-first NCHW: the entry points, and
the one table that says which implementation runs.

Three primitives with explicit sizes serve both convolution and transposed convolution (the
latter is the former's input gradient, see ``deconv.py``):

- ``correlate(x, k, stride, padding, dilation, oh, ow)``: ``y[n,f,a,b] =
  Σ_{c,i,j} x[n, c, a·sh - ph + i·dh, b·sw - pw + j·dw] · k[f,c,i,j]`` (out-of-range x is 0).
- ``scatter(dy, k, ..., h, w)``: the adjoint of ``correlate`` in x (its input gradient).
- ``weight_grad(dy, x, ..., kh, kw)``: the gradient of ``correlate`` in k.

The layer's own passes, ``conv_forward`` and ``conv_backward``, are those primitives with the
bias and the ReLU; at stride 1 each is one fused kernel instead (bias and ReLU on the copy-out,
dx, dk and db in one pass over the batch).

Where the code is: ``conv_taps.py`` (stride 1: the forward pass of all, and the backward pass of
a "same" padding, by register tiles reading taps from the padded planes), ``conv_direct.py``
(stride 1, direct loops), ``conv_gemm.py`` (stride 1, im2col + GEMM), ``conv_strided.py`` (any
stride, both forms), ``conv_planes.py`` (the flat padded planes they share, and the bias). All
choosing is done here, in plain Python, so that only the kernels a shape needs are ever compiled
(each costs seconds of compilation).
"""
from typing import Callable, NamedTuple, Optional

import numpy as np

from . import conv_direct, conv_gemm, conv_strided, conv_taps
from .activations import relu_backward, relu_forward
from .conv_planes import add_bias, channel_sum       # noqa: F401  (deconv.py's too)

class Implementation(NamedTuple):
    """One way to compute a convolution. The primitives take
    ``(a, b, stride, padding, dilation, size1, size2)`` as ``correlate``, ``scatter`` and
    ``weight_grad`` below; ``forward(x, k, b, relu, padding, dilation, oh, ow) -> y`` and
    ``backward(dy, relu_y, x, k, padding, dilation, need_dx) -> (dx, dk, db)`` are the fused
    stride-1 passes, None where the layer composes the primitives instead."""
    name: str
    correlate: Callable
    scatter: Callable
    weight_grad: Callable
    forward: Optional[Callable] = None
    backward: Optional[Callable] = None


DIRECT = Implementation("direct", conv_direct.correlate, conv_direct.scatter, conv_direct.weight_grad,
                        conv_direct.forward, conv_direct.backward)
GEMM = Implementation("gemm", conv_gemm.correlate, conv_gemm.scatter, conv_gemm.weight_grad,
                      conv_gemm.forward, conv_gemm.backward)
STRIDED_ROWS = Implementation("strided rows", conv_strided.correlate_rows, conv_strided.scatter_rows,
                              conv_strided.weight_grad_rows)
STRIDED_GEMM = Implementation("strided gemm", conv_strided.correlate_gemm, conv_strided.scatter_gemm,
                              conv_strided.weight_grad_gemm)

# Many filters: at stride 1 from 4 (against im2col and GEMM the direct loops won only for 1-3
# filters over few channels, measured at batch 32; but see DIRECT_WEIGHTS), at other strides from 8
# (the row-by-row im2col costs more there).
GEMM_FILTERS = {True: 4, False: 8}
# A long reduction: GEMM wins once a step's reduction length (channels x kernel) is this long.
GEMM_REDUCTION = 64

# (stride 1?, filters >= GEMM_FILTERS[stride 1?], channels·kh·kw >= GEMM_REDUCTION) -> implementation,
# for kernels of DIRECT_WEIGHTS weights or more at stride 1 (below it: DIRECT)
STRATEGY = {
    (True, False, False): DIRECT,
    (True, False, True): GEMM,
    (True, True, False): GEMM,
    (True, True, True): GEMM,
    (False, False, False): STRIDED_ROWS,
    (False, False, True): STRIDED_ROWS,
    (False, True, False): STRIDED_ROWS,
    (False, True, True): STRIDED_GEMM,
}


# Few weights: below this many (filters x channels x kh x kw) the direct loops at stride 1, however
# many filters, for GEMM's fixed costs are then most of the work (quickstart's 5 filters over 3 x 3
# taps of 28 x 30: dk 10 us a sample through sgemm, 3 us by dot products; 8 x 9 took 4.5 us either
# way), and only their kernels then compile (a GEMM body holds the BLAS call, im2col and col2im).
DIRECT_WEIGHTS = 64


# The stride-1 backward of a layer whose padding keeps the plane's size takes the tap tiles
# (``conv_taps.backward``) below this many filters; from it the GEMM form's, whose weight gradient
# is one BLAS GEMM a sample (batch 128, one thread, AVX-512: 32 -> 64 filters on 14 x 14 11.2 ms
# by the GEMM, 11.6 by the tiles; 64 -> 64 on 16 x 16 25.8 and 26.4; but 32 -> 32 on 32 x 32 31.8
# -> 25.3, 8 -> 8 on 14 x 14 0.78 -> 0.57).
TAPS_FILTERS = 64


def taps_backward(filters, kernel, stride, padding, dilation):
    """Whether ``conv_backward`` takes ``conv_taps.backward`` for such a layer."""
    return (tuple(stride) == (1, 1) and filters < TAPS_FILTERS
            and conv_taps.same_padding(kernel, padding, dilation))


def implementation(filters, channels, kh, kw, stride):
    """The table's entry for a kernel (filters, channels, kh, kw) at ``stride``."""
    one = stride[0] == 1 and stride[1] == 1
    if one and filters * channels * kh * kw < DIRECT_WEIGHTS:
        return DIRECT
    return STRATEGY[one, filters >= GEMM_FILTERS[one], channels * kh * kw >= GEMM_REDUCTION]


def _strategy(c, kh, kw, f, stride):
    """Whether the table picks an im2col + GEMM form (``tests/test_kernels_nan.py`` names its cases by it)."""
    return implementation(f, c, kh, kw, stride) in (GEMM, STRIDED_GEMM)


_c = np.ascontiguousarray      # every kernel takes C-contiguous arrays (a no-op for those)


def correlate(x, k, stride, padding, dilation, oh, ow):
    """``y`` (N, F, oh, ow) from x (N, C, H, W) and k (F, C, kh, kw); see the module docstring."""
    impl = implementation(*k.shape, stride)
    return impl.correlate(_c(x), _c(k), stride, padding, dilation, oh, ow)


def scatter(dy, k, stride, padding, dilation, h, w):
    """The adjoint of ``correlate`` in x: dy (N, F, oh, ow), k (F, C, kh, kw) -> (N, C, h, w)."""
    impl = implementation(*k.shape, stride)
    return impl.scatter(_c(dy), _c(k), stride, padding, dilation, h, w)


def weight_grad(dy, x, stride, padding, dilation, kh, kw):
    """The gradient of ``correlate`` in k: dy (N, F, oh, ow), x (N, C, H, W) -> (F, C, kh, kw)."""
    impl = implementation(dy.shape[1], x.shape[1], kh, kw, stride)
    return impl.weight_grad(_c(dy), _c(x), stride, padding, dilation, kh, kw)


def conv_out(size, k, s, p, d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def conv_forward(x, k, b, stride, padding, dilation, relu=False):
    """Convolution: x (N, C, H, W), k (F, C, kh, kw), b (F,) or (0,) -> y (N, F, H', W'), with
    the ReLU applied if ``relu``.

    ``H' = floor((H + 2p - d(k-1) - 1) / s) + 1``, the same for W.
    """
    oh = conv_out(x.shape[2], k.shape[2], stride[0], padding[0], dilation[0])
    ow = conv_out(x.shape[3], k.shape[3], stride[1], padding[1], dilation[1])
    impl = implementation(*k.shape, stride)
    if impl.forward is not None:
        return impl.forward(_c(x), _c(k), b, bool(relu), padding, dilation, oh, ow)
    y = impl.correlate(_c(x), _c(k), stride, padding, dilation, oh, ow)
    if b.shape[0] > 0:
        add_bias(y, b)
    if relu:
        y = relu_forward(y.reshape(y.shape[0], -1)).reshape(y.shape)
    return y


def conv_backward(dy, x, k, stride, padding, dilation, need_dx, need_db=True, relu_y=None):
    """Gradients of ``conv_forward``: ``(dx, dk, db)``; dx (db) is None unless ``need_dx`` (``need_db``).
    ``relu_y``: the forward pass's output when it applied the ReLU (its gradient is taken here)."""
    impl = implementation(*k.shape, stride)
    fused = conv_taps.backward if taps_backward(k.shape[0], k.shape[2:], stride, padding, dilation) else impl.backward
    if fused is not None:
        relu_y = dy[:0] if relu_y is None else _c(relu_y)
        dx, dk, db = fused(_c(dy), relu_y, _c(x), _c(k), padding, dilation, need_dx)
        return (dx if need_dx else None), dk, (db if need_db else None)
    if relu_y is not None:
        n = dy.shape[0]
        dy = relu_backward(dy.reshape(n, -1), relu_y.reshape(n, -1)).reshape(dy.shape)
    dy = _c(dy)
    db = channel_sum(dy) if need_db else None
    dk = impl.weight_grad(dy, _c(x), stride, padding, dilation, k.shape[2], k.shape[3])
    dx = impl.scatter(dy, _c(k), stride, padding, dilation, x.shape[2], x.shape[3]) if need_dx else None
    return dx, dk, db
