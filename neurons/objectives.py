"""Objectives (loss functions), by name or enum member; the loss is the mean over the batch.

Per sample, with ``e = p - y``, ``F`` features and ``c(p) = clamp(p, 1e-7, 1 - 1e-7)``:

============================  =====================================================
``ae``                        ``Σ |e|``
``mae``                       ``Σ |e| / F``
``mse``                       ``Σ e² / F``
``rmse``                      ``sqrt(Σ e² / F)``
``cross_entropy``             ``-Σ y log c(p)``; after a softmax layer it is fused:
                              ``-Σ y log_softmax(z)``, gradient ``p Σy - y``
``binary_cross_entropy``      ``-Σ [y log c(p) + (1 - y) log(1 - c(p))] / F``
``kl_divergence``             ``Σ_{y>0} y (log y - log c(p))``
============================  =====================================================
"""
import numpy as np

from ._named import Named
from .kernels import objectives as _k


class Objective(Named):
    AE = _k.AE
    MAE = _k.MAE
    MSE = _k.MSE
    RMSE = _k.RMSE
    CROSS_ENTROPY = _k.CROSS_ENTROPY
    BINARY_CROSS_ENTROPY = _k.BINARY_CROSS_ENTROPY
    KL_DIVERGENCE = _k.KL_DIVERGENCE


_ALIASES = {"crossentropy": "CROSS_ENTROPY", "ce": "CROSS_ENTROPY",
            "binarycrossentropy": "BINARY_CROSS_ENTROPY", "bce": "BINARY_CROSS_ENTROPY",
            "kldivergence": "KL_DIVERGENCE", "kl": "KL_DIVERGENCE"}


def objective(value):
    """An ``Objective`` from a member or a name (``"mse"``, ``"cross_entropy"``, ``"CrossEntropy"``)."""
    return Objective.parse(value, "objective", _ALIASES)


def loss_and_grad(p, y, obj, clip=None):
    """``(loss, ∂loss/∂p)`` for predictions and targets of shape (N, ...)."""
    obj = objective(obj)
    p2 = np.ascontiguousarray(p).reshape(len(p), -1)
    y2 = np.ascontiguousarray(y, dtype=p2.dtype).reshape(len(y), -1)
    lo, hi = clip if clip is not None else (0.0, 0.0)
    loss, dp = _k.objective_forward_backward(p2, y2, obj.value, clip is not None, float(lo), float(hi))
    return loss, dp.reshape(np.shape(p))
