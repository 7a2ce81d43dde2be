"""Activations over ``(N, F)`` arrays: forward and vector-Jacobian product, one kernel each.

Codes (the Python side maps names to them): 0 linear, 1 sigmoid, 2 tanh, 3 relu,
4 leaky_relu (slope 0.01), 5 softmax (over the features of each row, max-subtracted).
``FORWARD[code]`` and ``BACKWARD[code]`` pick the kernels (``None`` for linear: the identity),
serial ones that write into the output they are given. ``activation_forward`` and
``activation_backward`` run them on the whole array when it is small (below ``PARALLEL_MIN``
elements: a dense layer's (N, units); measured, ReLU at 32 x 100: 4.2 us in blocks, 1.1 us serial;
128 x 256: 6.0 against 5.2 us) and otherwise on one block of rows per thread (32 x 6272: 20 against
36 us). The split starts at 2^18 elements, not where blocks start to win (about 2^16): between the
two they save a few microseconds a call, and compiling the block path cost the demo's cold start
1.4 s, for the one pass that took it (its evaluation at 1000 x 100; a convolution's ReLU is inside
the convolution). A small-array network so compiles only the serial kernels it uses; the block path
compiles all of them (one block body per direction, not one per activation), inlined into the one
function that picks among them (compiling both directions and ReLU's serial kernels took 5.1-5.8
CPU seconds with them as separate functions, 3.7-4.8 inlined, imports included), but for
softmax, which sums (see above its kernels). Either way
every element is computed the same way: the bits do not depend on the path or the thread count.

Backward passes need only the output ``y``: relu and leaky_relu are increasing, so ``y > 0``
exactly where ``z > 0``; the others are functions of ``y``.

NaN propagates (SPEC §12: a diverging run must not train on silently): every forward pass gives
NaN where ``z`` is NaN (softmax: its whole row), and the ReLU compares are written so that a NaN
fails them (``v <= 0`` is false for NaN). The ReLU's gradient is PyTorch's ``threshold_backward``:
0 where ``y <= 0`` (even for a NaN ``dy``), ``dy`` elsewhere, a NaN ``y`` included.
"""
import numpy as np

from ._blocks import block_count, parallel
from ._config import jit, span

LINEAR, SIGMOID, TANH, RELU, LEAKY_RELU, SOFTMAX = 0, 1, 2, 3, 4, 5
SLOPE = 0.01
# arrays with at least this many elements are split into one block of rows per thread
PARALLEL_MIN = 262144


@jit(inline="always")
def _sigmoid_forward(z, y):
    n, f = z.shape
    one = z.dtype.type(1.0)
    for i in range(n):
        for j in range(f):
            v = z[i, j]
            # two branches so that exp never overflows
            if v >= 0:
                y[i, j] = one / (one + np.exp(-v))
            else:
                e = np.exp(v)
                y[i, j] = e / (one + e)


@jit(inline="always")
def _sigmoid_backward(dy, y, dz):
    n, f = dy.shape
    one = dy.dtype.type(1.0)
    for i in range(n):
        for j in range(f):
            dz[i, j] = dy[i, j] * y[i, j] * (one - y[i, j])


@jit(inline="always")
def _tanh_forward(z, y):
    n, f = z.shape
    for i in range(n):
        for j in range(f):
            y[i, j] = np.tanh(z[i, j])


@jit(inline="always")
def _tanh_backward(dy, y, dz):
    n, f = dy.shape
    one = dy.dtype.type(1.0)
    for i in range(n):
        for j in range(f):
            dz[i, j] = dy[i, j] * (one - y[i, j] * y[i, j])


@jit(inline="always")
def _relu_forward(z, y):
    n, f = z.shape
    zero = z.dtype.type(0.0)
    for i in range(n):
        for j in range(f):
            v = z[i, j]
            y[i, j] = zero if v <= zero else v


@jit(inline="always")
def _relu_backward(dy, y, dz):
    n, f = dy.shape
    zero = dy.dtype.type(0.0)
    for i in range(n):
        for j in range(f):
            dz[i, j] = zero if y[i, j] <= zero else dy[i, j]


@jit(inline="always")
def _leaky_relu_forward(z, y):
    n, f = z.shape
    slope = z.dtype.type(SLOPE)
    for i in range(n):
        for j in range(f):
            v = z[i, j]
            y[i, j] = v if v > 0 else slope * v


@jit(inline="always")
def _leaky_relu_backward(dy, y, dz):
    n, f = dy.shape
    slope = dy.dtype.type(SLOPE)
    for i in range(n):
        for j in range(f):
            dz[i, j] = dy[i, j] if y[i, j] > 0 else slope * dy[i, j]


# softmax sums along each row: compiled apart (not inlined) and without reassociation, FMA
# contraction or reciprocals, so that its bits are the same whether it runs alone (small
# arrays) or inside ``_forward_rows`` (blocks): inlined with the picker's fast-math flags, the
# two paths' sums were vectorised differently and differed in the last bit
@jit(fastmath={"nsz"})
def _softmax_forward(z, y):
    """Row-wise ``exp(z - max) / Σ exp(z - max)``."""
    n, f = z.shape
    for i in range(n):
        m = z[i, 0]
        for j in range(1, f):
            m = max(m, z[i, j])
        s = z.dtype.type(0.0)
        for j in range(f):
            e = np.exp(z[i, j] - m)
            y[i, j] = e
            s += e
        for j in range(f):
            y[i, j] /= s


@jit(fastmath={"nsz"})
def _softmax_backward(dy, y, dz):
    """``dz_j = y_j (dy_j - Σ_k dy_k y_k)`` (the full Jacobian's product, not its diagonal)."""
    n, f = dy.shape
    for i in range(n):
        s = dy.dtype.type(0.0)
        for j in range(f):
            s += dy[i, j] * y[i, j]
        for j in range(f):
            dz[i, j] = y[i, j] * (dy[i, j] - s)


FORWARD = (None, _sigmoid_forward, _tanh_forward, _relu_forward, _leaky_relu_forward, _softmax_forward)
BACKWARD = (None, _sigmoid_backward, _tanh_backward, _relu_backward, _leaky_relu_backward, _softmax_backward)


@jit
def _forward_rows(z, y, code):
    if code == SIGMOID:
        _sigmoid_forward(z, y)
    elif code == TANH:
        _tanh_forward(z, y)
    elif code == RELU:
        _relu_forward(z, y)
    elif code == LEAKY_RELU:
        _leaky_relu_forward(z, y)
    else:
        _softmax_forward(z, y)


@jit
def _backward_rows(dy, y, dz, code):
    if code == SIGMOID:
        _sigmoid_backward(dy, y, dz)
    elif code == TANH:
        _tanh_backward(dy, y, dz)
    elif code == RELU:
        _relu_backward(dy, y, dz)
    elif code == LEAKY_RELU:
        _leaky_relu_backward(dy, y, dz)
    else:
        _softmax_backward(dy, y, dz)


@jit
def _forward_body(blk, blocks, z, y, code):
    lo, hi = span(blk, blocks, z.shape[0])
    _forward_rows(z[lo:hi], y[lo:hi], code)


_forward_blocks = parallel(_forward_body)


@jit
def _backward_body(blk, blocks, dy, y, dz, code):
    lo, hi = span(blk, blocks, dy.shape[0])
    _backward_rows(dy[lo:hi], y[lo:hi], dz[lo:hi], code)


_backward_blocks = parallel(_backward_body)


def activation_forward(z, code):
    """``act(z)`` for ``z`` (N, F) by activation code (linear returns ``z`` itself)."""
    if FORWARD[code] is None:
        return z
    y = np.empty_like(z)
    blocks = block_count(z.shape[0], z.size, PARALLEL_MIN)
    if blocks == 1:
        FORWARD[code](z, y)         # not through the block body: compiles this activation only
    else:
        _forward_blocks(blocks, (blocks, z, y, code))
    return y


def activation_backward(dy, y, code):
    """``dy · ∂act/∂z`` from the output ``y`` by activation code."""
    if BACKWARD[code] is None:
        return dy
    dz = np.empty_like(dy)
    blocks = block_count(dy.shape[0], dy.size, PARALLEL_MIN)
    if blocks == 1:
        BACKWARD[code](dy, y, dz)
    else:
        _backward_blocks(blocks, (blocks, dy, y, dz, code))
    return dz


def relu_forward(z):
    return activation_forward(z, RELU)


def relu_backward(dy, y):
    return activation_backward(dy, y, RELU)
