"""Objectives over ``(N, F)`` predictions ``p`` and targets ``y``, one kernel each.

Codes: 0 ae, 1 mae, 2 mse, 3 rmse, 4 cross_entropy, 5 binary_cross_entropy, 6 kl_divergence.
Per sample (e = p - y, F features, c(p) = clamp(p, EPS, 1 - EPS)):

- ae: Σ|e|            mae: Σ|e| / F          mse: Σe² / F         rmse: sqrt(Σe² / F)
- cross_entropy: -Σ y log c(p)
- binary_cross_entropy: -Σ [y log c(p) + (1 - y) log(1 - c(p))] / F
- kl_divergence: Σ_{y>0} y (log y - log c(p))

Each kernel ``(p, y, clip, lo, hi) -> (loss, dp)`` returns the batch-mean loss (float64) and
its exact gradient (zero where the clamp is active, zero for rmse at e = 0 and for |e| at 0);
``clip`` clamps each per-sample gradient element to [lo, hi] before the division by N.

NaN propagates (SPEC §12): a NaN prediction gives a NaN loss, and NaN in the gradient where it
enters (rmse: its sample's row), clipped or not. The compares that pick a zero gradient are
written so that a NaN fails them. The clamps ``c(p) = min(max(p, EPS), 1 - EPS)`` and the clip's
``min(max(g, lo), hi)`` keep a NaN only because it comes first: Numba's ``max``/``min``, like
Python's, return their first argument unless a later one is strictly greater/less
(``max(EPS, p)`` would turn NaN into EPS). They stay so because the explicit
``EPS if p < EPS else ...`` made kl_divergence 20 % slower (measured 7.6 -> 9.3 us at 32 x 10);
``tests/test_kernels_nan.py`` pins both.

Serial on purpose: an output layer's (N, F) is small (batch x classes for the networks this
library is for), and as ``prange`` kernels each took about three times as long to compile
(``softmax_cross_entropy`` on the first training step: 1.3-2.0 s against 0.4-0.5 s).
"""
import numpy as np
from ._config import jit

AE, MAE, MSE, RMSE, CROSS_ENTROPY, BINARY_CROSS_ENTROPY, KL_DIVERGENCE = 0, 1, 2, 3, 4, 5, 6
EPS = 1e-7


@jit
def _tail(dp, i, clip, lo, hi, inv_n):
    for j in range(dp.shape[1]):
        g = dp[i, j]
        if clip:
            g = min(max(g, lo), hi)
        dp[i, j] = g * inv_n


@jit
def _mean(losses):
    # a serial sum in a fixed order: the same loss for any thread count
    total = 0.0
    for i in range(losses.shape[0]):
        total += losses[i]
    return total / losses.shape[0]


@jit
def _sign(e):
    """1, -1 or 0; NaN for NaN."""
    if e > 0:
        return 1.0
    if e < 0:
        return -1.0
    return 0.0 if e == 0 else np.nan


@jit
def ae(p, y, clip, lo, hi):
    n, f = p.shape
    dp = np.empty_like(p)
    losses = np.empty(n)
    inv_n = p.dtype.type(1.0 / n)
    for i in range(n):
        s = 0.0
        for j in range(f):
            e = p[i, j] - y[i, j]
            s += abs(e)
            dp[i, j] = _sign(e)
        losses[i] = s
        _tail(dp, i, clip, lo, hi, inv_n)
    return _mean(losses), dp


@jit
def mae(p, y, clip, lo, hi):
    n, f = p.shape
    dp = np.empty_like(p)
    losses = np.empty(n)
    inv_n = p.dtype.type(1.0 / n)
    for i in range(n):
        s = 0.0
        for j in range(f):
            e = p[i, j] - y[i, j]
            s += abs(e)
            dp[i, j] = _sign(e) / f
        losses[i] = s / f
        _tail(dp, i, clip, lo, hi, inv_n)
    return _mean(losses), dp


@jit
def mse(p, y, clip, lo, hi):
    n, f = p.shape
    dp = np.empty_like(p)
    losses = np.empty(n)
    inv_n = p.dtype.type(1.0 / n)
    two_f = p.dtype.type(2.0 / f)
    for i in range(n):
        s = 0.0
        for j in range(f):
            e = p[i, j] - y[i, j]
            s += e * e
            dp[i, j] = two_f * e
        losses[i] = s / f
        _tail(dp, i, clip, lo, hi, inv_n)
    return _mean(losses), dp


@jit
def rmse(p, y, clip, lo, hi):
    n, f = p.shape
    dp = np.empty_like(p)
    losses = np.empty(n)
    inv_n = p.dtype.type(1.0 / n)
    for i in range(n):
        s = 0.0
        for j in range(f):
            e = p[i, j] - y[i, j]
            s += e * e
        r = np.sqrt(s / f)
        g = 0.0 if r == 0 else 1.0 / (f * r)      # a NaN r (a NaN in p) gives a NaN row
        for j in range(f):
            dp[i, j] = g * (p[i, j] - y[i, j])
        losses[i] = r
        _tail(dp, i, clip, lo, hi, inv_n)
    return _mean(losses), dp


@jit
def cross_entropy(p, y, clip, lo, hi):
    n, f = p.shape
    dp = np.empty_like(p)
    losses = np.empty(n)
    t = p.dtype.type
    inv_n, eps, top = t(1.0 / n), t(EPS), t(1.0 - EPS)
    for i in range(n):
        s = 0.0
        for j in range(f):
            q = p[i, j]
            c = min(max(q, eps), top)
            s -= y[i, j] * np.log(c)
            dp[i, j] = t(0.0) if q < eps or q > top else -y[i, j] / c
        losses[i] = s
        _tail(dp, i, clip, lo, hi, inv_n)
    return _mean(losses), dp


@jit
def binary_cross_entropy(p, y, clip, lo, hi):
    n, f = p.shape
    dp = np.empty_like(p)
    losses = np.empty(n)
    t = p.dtype.type
    inv_n, eps, top, one, inv_f = t(1.0 / n), t(EPS), t(1.0 - EPS), t(1.0), t(1.0 / f)
    for i in range(n):
        s = 0.0
        for j in range(f):
            q = p[i, j]
            c = min(max(q, eps), top)
            yy = y[i, j]
            s -= yy * np.log(c) + (one - yy) * np.log(one - c)
            dp[i, j] = t(0.0) if q < eps or q > top else inv_f * (-yy / c + (one - yy) / (one - c))
        losses[i] = s / f
        _tail(dp, i, clip, lo, hi, inv_n)
    return _mean(losses), dp


@jit
def kl_divergence(p, y, clip, lo, hi):
    n, f = p.shape
    dp = np.empty_like(p)
    losses = np.empty(n)
    t = p.dtype.type
    inv_n, eps, top = t(1.0 / n), t(EPS), t(1.0 - EPS)
    for i in range(n):
        s = 0.0
        for j in range(f):
            q = p[i, j]
            c = min(max(q, eps), top)
            yy = y[i, j]
            if yy > 0:
                s += yy * (np.log(yy) - np.log(c))
            elif c != c or yy != yy:
                s += c + yy         # a NaN where the target's term is dropped still makes the loss NaN
            dp[i, j] = t(0.0) if q < eps or q > top else -yy / c
        losses[i] = s
        _tail(dp, i, clip, lo, hi, inv_n)
    return _mean(losses), dp


OBJECTIVES = (ae, mae, mse, rmse, cross_entropy, binary_cross_entropy, kl_divergence)


def objective_forward_backward(p, y, code, clip, lo, hi):
    """``(loss, dp)`` for objective ``code``: p, y (N, F); loss a float, dp in p's dtype."""
    return OBJECTIVES[code](p, y, clip, lo, hi)


def objective_loss(p, y, code):
    """The batch-mean loss only (for evaluation)."""
    return OBJECTIVES[code](p, y, False, 0.0, 0.0)[0]


@jit
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
    losses = np.empty(n)
    inv_n = t(1.0 / n)
    for i in range(n):
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
    return _mean(losses), dz, p
