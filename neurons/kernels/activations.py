"""Activations over ``(N, F)`` arrays: forward and vector-Jacobian product, one kernel each.

Codes (the Python side maps names to them): 0 linear, 1 sigmoid, 2 tanh, 3 relu,
4 leaky_relu (slope 0.01), 5 softmax (over the features of each row, max-subtracted).
``FORWARD[code]`` and ``BACKWARD[code]`` pick the kernels (``None`` for linear: the identity).
One kernel per activation, so a network compiles only the ones it uses.

Backward passes need only the output ``y``: relu and leaky_relu are increasing, so ``y > 0``
exactly where ``z > 0``; the others are functions of ``y``.
"""
import numpy as np
from numba import prange

from ._config import pjit

LINEAR, SIGMOID, TANH, RELU, LEAKY_RELU, SOFTMAX = 0, 1, 2, 3, 4, 5
SLOPE = 0.01


@pjit
def sigmoid_forward(z):
    n, f = z.shape
    y = np.empty_like(z)
    one = z.dtype.type(1.0)
    for i in prange(n):
        for j in range(f):
            v = z[i, j]
            # two branches so that exp never overflows
            if v >= 0:
                y[i, j] = one / (one + np.exp(-v))
            else:
                e = np.exp(v)
                y[i, j] = e / (one + e)
    return y


@pjit
def sigmoid_backward(dy, y):
    n, f = dy.shape
    dz = np.empty_like(dy)
    one = dy.dtype.type(1.0)
    for i in prange(n):
        for j in range(f):
            dz[i, j] = dy[i, j] * y[i, j] * (one - y[i, j])
    return dz


@pjit
def tanh_forward(z):
    n, f = z.shape
    y = np.empty_like(z)
    for i in prange(n):
        for j in range(f):
            y[i, j] = np.tanh(z[i, j])
    return y


@pjit
def tanh_backward(dy, y):
    n, f = dy.shape
    dz = np.empty_like(dy)
    one = dy.dtype.type(1.0)
    for i in prange(n):
        for j in range(f):
            dz[i, j] = dy[i, j] * (one - y[i, j] * y[i, j])
    return dz


@pjit
def relu_forward(z):
    n, f = z.shape
    y = np.empty_like(z)
    zero = z.dtype.type(0.0)
    for i in prange(n):
        for j in range(f):
            v = z[i, j]
            y[i, j] = v if v > zero else zero
    return y


@pjit
def relu_backward(dy, y):
    n, f = dy.shape
    dz = np.empty_like(dy)
    zero = dy.dtype.type(0.0)
    for i in prange(n):
        for j in range(f):
            dz[i, j] = dy[i, j] if y[i, j] > zero else zero
    return dz


@pjit
def leaky_relu_forward(z):
    n, f = z.shape
    y = np.empty_like(z)
    slope = z.dtype.type(SLOPE)
    for i in prange(n):
        for j in range(f):
            v = z[i, j]
            y[i, j] = v if v > 0 else slope * v
    return y


@pjit
def leaky_relu_backward(dy, y):
    n, f = dy.shape
    dz = np.empty_like(dy)
    slope = dy.dtype.type(SLOPE)
    for i in prange(n):
        for j in range(f):
            dz[i, j] = dy[i, j] if y[i, j] > 0 else slope * dy[i, j]
    return dz


@pjit
def softmax_forward(z):
    """Row-wise ``exp(z - max) / Σ exp(z - max)``."""
    n, f = z.shape
    y = np.empty_like(z)
    for i in prange(n):
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
    return y


@pjit
def softmax_backward(dy, y):
    """``dz_j = y_j (dy_j - Σ_k dy_k y_k)`` (the full Jacobian's product, not its diagonal)."""
    n, f = dy.shape
    dz = np.empty_like(dy)
    for i in prange(n):
        s = dy.dtype.type(0.0)
        for j in range(f):
            s += dy[i, j] * y[i, j]
        for j in range(f):
            dz[i, j] = y[i, j] * (dy[i, j] - s)
    return dz


FORWARD = (None, sigmoid_forward, tanh_forward, relu_forward, leaky_relu_forward, softmax_forward)
BACKWARD = (None, sigmoid_backward, tanh_backward, relu_backward, leaky_relu_backward, softmax_backward)


def activation_forward(z, code):
    """``act(z)`` for ``z`` (N, F) by activation code (linear returns ``z`` itself)."""
    f = FORWARD[code]
    return z if f is None else f(z)


def activation_backward(dy, y, code):
    """``dy · ∂act/∂z`` from the output ``y`` by activation code."""
    f = BACKWARD[code]
    return dy if f is None else f(dy, y)
