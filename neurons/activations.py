"""Activation functions, by name or enum member.

``linear, sigmoid, tanh, relu, leaky_relu`` (slope 0.01) and ``softmax`` (over the features of
each sample, max-subtracted). Backward passes are exact vector-Jacobian products
(``neurons/kernels/activations.py``).
"""
import numpy as np

from ._named import Named
from .kernels import activations as _k


class Activation(Named):
    LINEAR = _k.LINEAR
    SIGMOID = _k.SIGMOID
    TANH = _k.TANH
    RELU = _k.RELU
    LEAKY_RELU = _k.LEAKY_RELU
    SOFTMAX = _k.SOFTMAX


def activation(value):
    """An ``Activation`` from a member or a name (``"relu"``, ``"LeakyReLU"``, ``"leaky_relu"``)."""
    return Activation.parse(value, "activation")


def forward(z, act):
    """``act(z)`` for any array whose first axis is the batch."""
    act = activation(act)
    y = _k.activation_forward(np.ascontiguousarray(z).reshape(len(z), -1), act.value)
    return y.reshape(z.shape)


def backward(dy, y, act):
    """Vector-Jacobian product ``dy · ∂act/∂z`` from the output ``y``."""
    act = activation(act)
    dz = _k.activation_backward(np.ascontiguousarray(dy).reshape(len(dy), -1),
                                np.ascontiguousarray(y).reshape(len(y), -1), act.value)
    return dz.reshape(dy.shape)
