"""Batch normalization, as ``torch.nn.BatchNorm1d / BatchNorm2d``, over ``(N, C, L)`` arrays.

Channel ``c`` is normalised over the ``m = N·L`` values ``x[:, c, :]``: dense data ``(N, F)``
is ``(N, F, 1)``, image data ``(N, C, H, W)`` is ``(N, C, H·W)``.

- training: ``mean`` and the biased ``var`` of the batch, ``xhat = (x - mean) / sqrt(var + eps)``,
  ``y = xhat · gamma + beta``;
- inference: the same with given (running) ``mean`` and ``var``.

The training pass also updates the running statistics as PyTorch does:
``(1 - momentum)·old + momentum·batch``, with the unbiased variance ``var·m/(m-1)`` over the
``m`` values of a channel.

Backward (the vector-Jacobian product): ``dbeta = Σ dy``, ``dgamma = Σ dy · xhat`` (sums over
``N·L``) and ``dx = gamma / sqrt(var + eps) · (dy - dbeta / m - xhat · dgamma / m)`` in training
(the gradient through the batch statistics), ``dx = gamma / sqrt(var + eps) · dy`` at inference.

Statistics and sums are totalled in float64 whatever the data's dtype (an image row's partial
sum in the data's dtype, which vectorises), in two passes (the mean, then the squared deviations
from it), and handed over as float64 arrays. Each channel is one
serial loop, so its result does not depend on how channels are split over threads: large work
runs one block of channels per thread (``_blocks.py``), small work, and inference, one block
from Python.
"""
import numpy as np

from ._blocks import block_count, parallel
from ._config import jit, span

# below this many elements a pass runs as one block, without the thread pool. Measured on this
# 2-core host (best of 40, float32): two blocks gain 1.3-3x from 200,000 elements with 16 or 32
# channels, and break even at 125,000-500,000 elements with 5 channels (3 and 2 per block, and
# memory-bound); below 125,000 one block wins
PARALLEL_MIN = 131072


@jit
def _moments(x, lo, hi, mean, var):
    """Mean and biased variance of channels ``lo..hi`` (two passes). An image row's sum is taken
    in x's dtype (vectorised) and added to a float64 total; dense data (L = 1) is summed along
    its rows, over the block's channels at once, in float64."""
    n, length = x.shape[0], x.shape[2]
    inv_m = 1.0 / (n * length)
    if length == 1:
        # rows of the block's channels as 1-D slices: unit stride, so the loops vectorise
        x2, w = x.reshape(n, x.shape[1]), hi - lo
        s = np.zeros(w)
        for i in range(n):
            row = x2[i, lo:hi]
            for q in range(w):
                s[q] += row[q]
        mu = mean[lo:hi]
        for q in range(w):
            mu[q] = s[q] * inv_m
            s[q] = 0.0
        for i in range(n):
            row = x2[i, lo:hi]
            for q in range(w):
                d = row[q] - mu[q]
                s[q] += d * d
        for q in range(w):
            var[lo + q] = s[q] * inv_m
        return
    for c in range(lo, hi):
        total = 0.0
        for i in range(n):
            row = x[i, c]
            t = x.dtype.type(0.0)
            for j in range(length):
                t += row[j]
            total += t
        mu = total * inv_m
        m = x.dtype.type(mu)
        total = 0.0
        for i in range(n):
            row = x[i, c]
            t = x.dtype.type(0.0)
            for j in range(length):
                d = row[j] - m
                t += d * d
            total += t
        # the deviations were taken from mu rounded to x's dtype: correct for the offset
        off = mu - np.float64(m)
        v = total * inv_m - off * off
        mean[c], var[c] = mu, (0.0 if v < 0.0 else v)          # rounding below zero; NaN stays NaN


@jit
def _normalize(x, gamma, beta, mean, var, eps, lo, hi, y):
    """``y = (x - mean)·gamma/sqrt(var + eps) + beta`` for channels ``lo..hi``, in x's dtype."""
    n, length = x.shape[0], x.shape[2]
    if length == 1:
        w = hi - lo
        scale, m, b = np.empty(w, x.dtype), np.empty(w, x.dtype), beta[lo:hi]
        for q in range(w):
            scale[q] = gamma[lo + q] / np.sqrt(var[lo + q] + eps)
            m[q] = mean[lo + q]
        x2, y2 = x.reshape(n, x.shape[1]), y.reshape(n, x.shape[1])
        for i in range(n):
            row, out = x2[i, lo:hi], y2[i, lo:hi]
            for q in range(w):
                out[q] = (row[q] - m[q]) * scale[q] + b[q]
        return
    for c in range(lo, hi):
        scale = x.dtype.type(gamma[c] / np.sqrt(var[c] + eps))
        m, b = x.dtype.type(mean[c]), beta[c]
        for i in range(n):
            row, out = x[i, c], y[i, c]
            for j in range(length):
                out[j] = (row[j] - m) * scale + b


@jit
def _train_body(blk, blocks, x, gamma, beta, eps, momentum, old_mean, old_var, y, mean, var, new_mean, new_var):
    """Block ``blk`` of ``blocks``: the batch statistics, the output and the running statistics
    of its channels."""
    lo, hi = span(blk, blocks, x.shape[1])
    if lo < hi:
        _moments(x, lo, hi, mean, var)
        _normalize(x, gamma, beta, mean, var, eps, lo, hi, y)
        m = x.shape[0] * x.shape[2]
        unbias = m / (m - 1.0)
        for c in range(lo, hi):
            # PyTorch's update, with the unbiased variance; in float64 until the final rounding
            new_mean[c] = (1.0 - momentum) * np.float64(old_mean[c]) + momentum * mean[c]
            new_var[c] = (1.0 - momentum) * np.float64(old_var[c]) + momentum * (var[c] * unbias)


@jit
def _eval_body(blk, blocks, x, gamma, beta, mean, var, eps, y):
    """Block ``blk`` of ``blocks``: the output of its channels with the given statistics."""
    lo, hi = span(blk, blocks, x.shape[1])
    if lo < hi:
        _normalize(x, gamma, beta, mean, var, eps, lo, hi, y)


@jit
def _backward_body(blk, blocks, dy, x, gamma, mean, var, eps, train, need_dx, dx, dgamma, dbeta):
    """Block ``blk`` of ``blocks``: dgamma, dbeta and dx of its channels."""
    lo, hi = span(blk, blocks, x.shape[1])
    if lo >= hi:
        return
    n, length = x.shape[0], x.shape[2]
    inv_m = 1.0 / (n * length)
    sb, sg = np.zeros(hi - lo), np.zeros(hi - lo)      # Σ dy and Σ dy·(x - mean), in float64
    if length == 1:
        x2, g2, mu = x.reshape(n, x.shape[1]), dy.reshape(n, x.shape[1]), mean[lo:hi]
        for i in range(n):
            row, g = x2[i, lo:hi], g2[i, lo:hi]
            for q in range(hi - lo):
                sb[q] += g[q]
                sg[q] += g[q] * (row[q] - mu[q])
    else:
        for c in range(lo, hi):
            m = x.dtype.type(mean[c])
            tb, tg = 0.0, 0.0
            for i in range(n):
                row, g = x[i, c], dy[i, c]
                ub, ug = x.dtype.type(0.0), x.dtype.type(0.0)
                for j in range(length):
                    ub += g[j]
                    ug += g[j] * (row[j] - m)
                tb += ub
                tg += ug
            # Σ dy·(x - mean) from the deviations to mean rounded to x's dtype
            sb[c - lo], sg[c - lo] = tb, tg - tb * (mean[c] - np.float64(m))
    for c in range(lo, hi):
        invstd = 1.0 / np.sqrt(var[c] + eps)
        dbeta[c], dgamma[c] = sb[c - lo], sg[c - lo] * invstd
    if not need_dx:
        return
    # dx = k·(dy - a - (x - mean)·bcoef): k = gamma·invstd, and in training (the gradient through
    # the batch statistics) a = mean(dy), bcoef = mean(dy·xhat)·invstd with xhat = (x - mean)·invstd
    k, m = np.empty(hi - lo, x.dtype), np.empty(hi - lo, x.dtype)
    a, bcoef = np.zeros(hi - lo, x.dtype), np.zeros(hi - lo, x.dtype)
    for c in range(lo, hi):
        invstd = 1.0 / np.sqrt(var[c] + eps)
        k[c - lo], m[c - lo] = gamma[c] * invstd, mean[c]
        if train:
            a[c - lo] = sb[c - lo] * inv_m
            bcoef[c - lo] = sg[c - lo] * inv_m * invstd * invstd
    if length == 1:
        x2, g2, d2 = x.reshape(n, x.shape[1]), dy.reshape(n, x.shape[1]), dx.reshape(n, x.shape[1])
        for i in range(n):
            row, g, out = x2[i, lo:hi], g2[i, lo:hi], d2[i, lo:hi]
            for q in range(hi - lo):
                out[q] = k[q] * (g[q] - a[q] - (row[q] - m[q]) * bcoef[q])
        return
    for c in range(lo, hi):
        q = c - lo
        kc, ac, mc, bc = k[q], a[q], m[q], bcoef[q]
        for i in range(n):
            row, g, out = x[i, c], dy[i, c], dx[i, c]
            for j in range(length):
                out[j] = kc * (g[j] - ac - (row[j] - mc) * bc)


_train_blocks = parallel(_train_body)
_eval_blocks = parallel(_eval_body)
_backward_blocks = parallel(_backward_body)


def _blocks(x):
    """One block of channels per thread, or one block below ``PARALLEL_MIN`` elements (for the
    training pass, three passes over the data, and the backward pass, two)."""
    return block_count(x.shape[1], x.size, PARALLEL_MIN)


def batchnorm_forward_train(x, gamma, beta, eps, momentum=0.1, running_mean=None, running_var=None):
    """Training pass: x (N, C, L), gamma and beta (C,) in x's dtype, ``eps`` > 0; the running
    statistics (C,) in x's dtype (None: 0 and 1) and their ``momentum``.

    Returns ``(y, mean, var, new_mean, new_var)``: y (N, C, L) in x's dtype, the batch mean and
    biased variance (C,) in float64, and the running statistics updated as PyTorch does,
    ``(1 - momentum)·old + momentum·batch`` with the unbiased variance ``var·m/(m-1)``
    (``m = N·L``, at least 2), in x's dtype.
    """
    x = np.ascontiguousarray(x)
    y = np.empty_like(x)
    c = x.shape[1]
    if running_mean is None:
        running_mean, running_var = np.zeros(c, x.dtype), np.ones(c, x.dtype)
    mean, var = np.empty(c, np.float64), np.empty(c, np.float64)
    new_mean, new_var = np.empty(c, x.dtype), np.empty(c, x.dtype)
    blocks = _blocks(x)
    _train_blocks(blocks, (blocks, x, np.ascontiguousarray(gamma), np.ascontiguousarray(beta), float(eps),
                           float(momentum), np.ascontiguousarray(running_mean), np.ascontiguousarray(running_var),
                           y, mean, var, new_mean, new_var))
    return y, mean, var, new_mean, new_var


def batchnorm_forward_eval(x, gamma, beta, mean, var, eps):
    """Inference pass with given statistics: x (N, C, L); gamma, beta (C,) in x's dtype; mean,
    var (C,) float64. Returns y (N, C, L)."""
    x = np.ascontiguousarray(x)
    y = np.empty_like(x)
    # one block: a single memory-bound pass, which two blocks did not speed up at any size
    # measured (up to 3.9 million elements; 1.0-2.1x slower with another process on the cores)
    blocks = 1
    _eval_blocks(blocks, (blocks, x, np.ascontiguousarray(gamma), np.ascontiguousarray(beta),
                          np.ascontiguousarray(mean, np.float64), np.ascontiguousarray(var, np.float64),
                          float(eps), y))
    return y


def batchnorm_backward(dy, x, gamma, mean, var, eps, train, need_dx=True):
    """Gradients given dy (N, C, L): ``(dx, dgamma, dbeta)``.

    ``mean``, ``var`` (C,) float64 are the statistics the forward pass normalised with (the
    batch's when ``train``, whose gradient then flows through them too). dx (N, C, L) is None
    unless ``need_dx``; dgamma, dbeta (C,) are in x's dtype.
    """
    dy, x = np.ascontiguousarray(dy), np.ascontiguousarray(x)
    c = x.shape[1]
    dx = np.empty(x.shape if need_dx else (0, c, 0), x.dtype)
    dgamma, dbeta = np.empty(c, x.dtype), np.empty(c, x.dtype)
    blocks = _blocks(x)
    _backward_blocks(blocks, (blocks, dy, x, np.ascontiguousarray(gamma), np.ascontiguousarray(mean, np.float64),
                              np.ascontiguousarray(var, np.float64), float(eps), bool(train), bool(need_dx),
                              dx, dgamma, dbeta))
    return (dx if need_dx else None), dgamma, dbeta
