"""Optimizer updates over flat 1-D arrays (callers pass ``.reshape(-1)`` views).

Each kernel reads params ``p`` and grads ``g``, updates its state arrays in place and writes the
new params to ``out`` (which may be ``p`` itself). Scalars that depend on the step count (bias
corrections) are computed by the caller in float64 and passed in; everything else runs in the
arrays' dtype. Every index is owned by one ``prange`` iteration: no races, any thread count
gives the same bits. The formulas are PyTorch's (torch.optim.SGD, Adam, AdamW, RMSprop).
"""
import numpy as np
from numba import prange

from ._config import pjit


@pjit
def sgd(p, g, buf, out, lr, momentum, decay, first):
    """``g += decay·p``; with momentum ``buf = g`` (first step) or ``momentum·buf + g``; ``p -= lr·buf``."""
    t = p.dtype.type
    lr, momentum, decay = t(lr), t(momentum), t(decay)
    use_momentum = buf.shape[0] > 0
    for i in prange(p.shape[0]):
        d = g[i] + decay * p[i]
        if use_momentum:
            d = d if first else momentum * buf[i] + d
            buf[i] = d
        out[i] = p[i] - lr * d


@pjit
def adam(p, g, m, v, out, lr, beta1, beta2, eps, decay, decoupled, correction1, root_correction2):
    """Adam (``decay`` added to the gradient) or AdamW (``decoupled``: ``p *= 1 - lr·decay``).

    ``m = β1 m + (1-β1) g``, ``v = β2 v + (1-β2) g²``,
    ``p -= (lr / (1-β1^t)) · m / (sqrt(v) / sqrt(1-β2^t) + eps)``.
    """
    t = p.dtype.type
    one = t(1.0)
    step = t(lr / correction1)
    rc2 = t(root_correction2)
    b1, b2, e, wd = t(beta1), t(beta2), t(eps), t(decay)
    shrink = one - t(lr) * wd
    for i in prange(p.shape[0]):
        x = p[i]
        d = g[i]
        if decoupled:
            x = x * shrink
        else:
            d = d + wd * x
        mi = b1 * m[i] + (one - b1) * d
        vi = b2 * v[i] + (one - b2) * d * d
        m[i] = mi
        v[i] = vi
        out[i] = x - step * mi / (np.sqrt(vi) / rc2 + e)


@pjit
def rmsprop(p, g, square, grad_avg, buf, out, lr, alpha, eps, decay, momentum):
    """RMSprop: ``v = α v + (1-α) g²``; centered when ``grad_avg`` is non-empty
    (``avg = sqrt(max(v - ḡ², 0)) + eps``, the max guarding against rounding), else
    ``avg = sqrt(v) + eps``; with momentum ``buf = μ buf + g/avg; p -= lr·buf``, else
    ``p -= lr·g/avg``."""
    t = p.dtype.type
    one, zero = t(1.0), t(0.0)
    lr, a, e, wd, mu = t(lr), t(alpha), t(eps), t(decay), t(momentum)
    centered = grad_avg.shape[0] > 0
    use_momentum = buf.shape[0] > 0
    for i in prange(p.shape[0]):
        d = g[i] + wd * p[i]
        sq = a * square[i] + (one - a) * d * d
        square[i] = sq
        if centered:
            ga = a * grad_avg[i] + (one - a) * d
            grad_avg[i] = ga
            avg = np.sqrt(max(sq - ga * ga, zero)) + e
        else:
            avg = np.sqrt(sq) + e
        if use_momentum:
            b = mu * buf[i] + d / avg
            buf[i] = b
            out[i] = p[i] - lr * b
        else:
            out[i] = p[i] - lr * d / avg
