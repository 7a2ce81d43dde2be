"""Activations over ``(N, F)`` arrays, forward and vector-Jacobian product.

Codes (the Python side maps names to them): 0 linear, 1 sigmoid, 2 tanh, 3 relu,
4 leaky_relu (slope 0.01), 5 softmax (over the features of each row, max-subtracted).

The backward pass needs only the output ``y``: relu and leaky_relu are increasing, so
``y > 0`` exactly where ``z > 0``; the others are functions of ``y``.
"""
import numpy as np
from numba import prange

from ._config import pjit

LINEAR, SIGMOID, TANH, RELU, LEAKY_RELU, SOFTMAX = 0, 1, 2, 3, 4, 5
SLOPE = 0.01


@pjit
def activation_forward(z, code):
    """``y = act(z)`` for ``z`` of shape (N, F); returns a new (N, F) array."""
    n, f = z.shape
    y = np.empty_like(z)
    one = z.dtype.type(1.0)
    slope = z.dtype.type(SLOPE)
    if code == LINEAR:
        y[:] = z
    elif code == SIGMOID:
        for i in prange(n):
            for j in range(f):
                v = z[i, j]
                # two branches so that exp never overflows
                if v >= 0:
                    y[i, j] = one / (one + np.exp(-v))
                else:
                    e = np.exp(v)
                    y[i, j] = e / (one + e)
    elif code == TANH:
        for i in prange(n):
            for j in range(f):
                y[i, j] = np.tanh(z[i, j])
    elif code == RELU:
        for i in prange(n):
            for j in range(f):
                v = z[i, j]
                y[i, j] = v if v > 0 else 0
    elif code == LEAKY_RELU:
        for i in prange(n):
            for j in range(f):
                v = z[i, j]
                y[i, j] = v if v > 0 else slope * v
    else:
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
def activation_backward(dy, y, code):
    """``dz = dy · ∂act/∂z`` (vector-Jacobian product) from the output ``y``; shapes (N, F).

    softmax: ``dz_j = y_j (dy_j - Σ_k dy_k y_k)``.
    """
    n, f = dy.shape
    dz = np.empty_like(dy)
    one = dy.dtype.type(1.0)
    slope = dy.dtype.type(SLOPE)
    if code == LINEAR:
        dz[:] = dy
    elif code == SIGMOID:
        for i in prange(n):
            for j in range(f):
                dz[i, j] = dy[i, j] * y[i, j] * (one - y[i, j])
    elif code == TANH:
        for i in prange(n):
            for j in range(f):
                dz[i, j] = dy[i, j] * (one - y[i, j] * y[i, j])
    elif code == RELU:
        for i in prange(n):
            for j in range(f):
                dz[i, j] = dy[i, j] if y[i, j] > 0 else 0
    elif code == LEAKY_RELU:
        for i in prange(n):
            for j in range(f):
                dz[i, j] = dy[i, j] if y[i, j] > 0 else slope * dy[i, j]
    else:
        for i in prange(n):
            s = dy.dtype.type(0.0)
            for j in range(f):
                s += dy[i, j] * y[i, j]
            for j in range(f):
                dz[i, j] = y[i, j] * (dy[i, j] - s)
    return dz
