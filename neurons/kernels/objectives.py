"""Objectives over ``(N, F)`` predictions ``p`` and targets ``y``.

Codes: 0 ae, 1 mae, 2 mse, 3 rmse, 4 cross_entropy, 5 binary_cross_entropy, 6 kl_divergence.
Per sample (e = p - y, F features, c(p) = clamp(p, EPS, 1 - EPS)):

- ae: Σ|e|            mae: Σ|e| / F          mse: Σe² / F         rmse: sqrt(Σe² / F)
- cross_entropy: -Σ y log c(p)
- binary_cross_entropy: -Σ [y log c(p) + (1 - y) log(1 - c(p))] / F
- kl_divergence: Σ_{y>0} y (log y - log c(p))

The loss is the mean over the batch. Gradients are exact derivatives of these formulas
(zero where the clamp is active, zero for rmse at e = 0 and |e| at 0); ``clip`` clamps each
per-sample gradient element to [lo, hi] before the division by N.
"""
import numpy as np
from numba import prange

from ._config import jit, pjit

AE, MAE, MSE, RMSE, CROSS_ENTROPY, BINARY_CROSS_ENTROPY, KL_DIVERGENCE = 0, 1, 2, 3, 4, 5, 6
EPS = 1e-7


@pjit
def objective_forward_backward(p, y, code, clip, lo, hi):
    """Loss and gradient: p, y (N, F) -> (loss: float, dp: (N, F) in p's dtype).

    ``loss`` is the batch mean, returned as a float64 scalar; ``dp = ∂loss/∂p``.
    """
    n, f = p.shape
    t = p.dtype.type
    dp = np.empty_like(p)
    losses = np.empty(n, np.float64)
    eps = t(EPS)
    one = t(1.0)
    zero = t(0.0)
    inv_f = t(1.0 / f)
    inv_n = t(1.0 / n)
    for i in prange(n):
        s = 0.0
        if code == AE or code == MAE:
            scale = one if code == AE else inv_f
            for j in range(f):
                e = p[i, j] - y[i, j]
                s += abs(e)
                dp[i, j] = scale * (one if e > 0 else (-one if e < 0 else zero))
            if code == MAE:
                s /= f
        elif code == MSE or code == RMSE:
            for j in range(f):
                e = p[i, j] - y[i, j]
                s += e * e
            s /= f
            if code == MSE:
                for j in range(f):
                    dp[i, j] = t(2.0) * inv_f * (p[i, j] - y[i, j])
            else:
                r = np.sqrt(s)
                s = r
                g = t(1.0 / (f * r)) if r > 0 else zero
                for j in range(f):
                    dp[i, j] = g * (p[i, j] - y[i, j])
        elif code == CROSS_ENTROPY or code == KL_DIVERGENCE:
            for j in range(f):
                q = p[i, j]
                c = min(max(q, eps), one - eps)
                yy = y[i, j]
                if code == CROSS_ENTROPY:
                    s -= yy * np.log(c)
                elif yy > 0:
                    s += yy * (np.log(yy) - np.log(c))
                inside = q >= eps and q <= one - eps
                dp[i, j] = -yy / c if inside else zero
        else:
            for j in range(f):
                q = p[i, j]
                c = min(max(q, eps), one - eps)
                yy = y[i, j]
                s -= yy * np.log(c) + (one - yy) * np.log(one - c)
                inside = q >= eps and q <= one - eps
                dp[i, j] = inv_f * (-yy / c + (one - yy) / (one - c)) if inside else zero
            s /= f
        losses[i] = s
        for j in range(f):
            g = dp[i, j]
            if clip:
                g = min(max(g, lo), hi)
            dp[i, j] = g * inv_n
    total = 0.0
    for i in range(n):
        total += losses[i]
    return total / n, dp


@pjit
def softmax_cross_entropy(z, y):
    """Softmax and cross-entropy fused, from logits ``z`` (N, F) and targets ``y`` (N, F).

    Loss per sample ``-Σ y log softmax(z)`` with a log-sum-exp (finite for any finite z);
    returns ``(loss_mean, dz, p)`` with the exact gradient ``dz = (p Σy - y) / N`` (= p - y
    per sample for one-hot targets) and ``p = softmax(z)``.
    """
    n, f = z.shape
    t = z.dtype.type
    dz = np.empty_like(z)
    p = np.empty_like(z)
    losses = np.empty(n, np.float64)
    inv_n = t(1.0 / n)
    for i in prange(n):
        m = z[i, 0]
        for j in range(1, f):
            m = max(m, z[i, j])
        s = t(0.0)
        for j in range(f):
            e = np.exp(z[i, j] - m)
            p[i, j] = e
            s += e
        lse = m + np.log(s)
        ysum = t(0.0)
        loss = 0.0
        for j in range(f):
            p[i, j] /= s
            ysum += y[i, j]
            loss -= y[i, j] * (z[i, j] - lse)
        for j in range(f):
            dz[i, j] = (p[i, j] * ysum - y[i, j]) * inv_n
        losses[i] = loss
    total = 0.0
    for i in range(n):
        total += losses[i]
    return total / n, dz, p


@jit
def objective_loss(p, y, code):
    """The batch-mean loss only (for evaluation); float64 scalar."""
    dummy = p.dtype.type(0.0)
    loss, _ = objective_forward_backward(p, y, code, False, dummy, dummy)
    return loss
