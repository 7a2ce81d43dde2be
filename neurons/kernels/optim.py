"""Optimizer updates over flat 1-D arrays (callers pass ``.reshape(-1)`` views).

Each kernel reads grads ``g`` and updates params ``p`` and its state arrays in place (a caller
that wants the old params kept passes a copy). In place on purpose: with a separate output that
may be ``p`` itself, LLVM guards its vectorised loop with an overlap check, which an output that
is ``p`` fails, and runs the scalar loop (plain SGD over 98,000 floats: 17 us into another
array, 65 us in place that way). Scalars that depend on the step count (bias corrections) are
computed by the caller in float64 and passed in; everything else runs in the arrays' dtype.
The formulas are PyTorch's (torch.optim.SGD, Adam, AdamW, RMSprop).

Each update is a serial kernel over whatever 1-D range it is given; ``sgd``, ``adam`` and
``rmsprop`` run it on the whole array when the array is small (below its ``PARALLEL_MIN``
elements: a parallel launch costs more than the update, and the parallel kernel is then never
compiled) and otherwise on one block of the array per thread. Every element is computed the
same way either way, so the bits do not depend on the path or the thread count.
"""
import numpy as np

from ._blocks import block_count, parallel
from ._config import jit, span

# arrays at least this long are updated one block per thread. Measured, plain SGD: 16,384
# elements 3.2 us serial, 6.0 us in blocks; 98,000: 14.6 against 11.5 us; 401,408: 147 against
# 40 (set above the break-even: there 3 us a step does not pay for the second of compilation the
# block kernel costs). Adam: 16,384 elements 10.3 against 10.5 us; 32,768: 20 against 15.
PARALLEL_MIN = {"sgd": 131072, "adam": 32768, "rmsprop": 32768}


def _by_size(serial, loop, minimum):
    """``f(p, ...)``: ``serial(p, ...)`` for p shorter than ``minimum``, else the block loop ``loop``
    over one block of p per thread."""
    def update(p, *args):
        blocks = block_count(p.shape[0], p.shape[0], minimum)
        if blocks == 1:
            serial(p, *args)        # not through the block body: compiles no parallel code
        else:
            loop(blocks, (blocks, p) + args)
    update.__doc__ = serial.__doc__
    return update


@jit
def _sgd(p, g, buf, lr, momentum, decay, first):
    """``g += decay·p``; with momentum ``buf = g`` (first step) or ``momentum·buf + g``; ``p -= lr·buf``."""
    t = p.dtype.type
    lr, momentum, decay = t(lr), t(momentum), t(decay)
    use_momentum = buf.shape[0] > 0
    for i in range(p.shape[0]):
        d = g[i] + decay * p[i]
        if use_momentum:
            d = d if first else momentum * buf[i] + d
            buf[i] = d
        p[i] = p[i] - lr * d


@jit
def _adam(p, g, m, v, lr, beta1, beta2, eps, decay, decoupled, correction1, root_correction2):
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
    for i in range(p.shape[0]):
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
        p[i] = x - step * mi / (np.sqrt(vi) / rc2 + e)


@jit
def _rmsprop(p, g, square, grad_avg, buf, lr, alpha, eps, decay, momentum):
    """RMSprop: ``v = α v + (1-α) g²``; centered when ``grad_avg`` is non-empty
    (``avg = sqrt(max(v - ḡ², 0)) + eps``, the max guarding against rounding), else
    ``avg = sqrt(v) + eps``; with momentum ``buf = μ buf + g/avg; p -= lr·buf``, else
    ``p -= lr·g/avg``."""
    t = p.dtype.type
    one, zero = t(1.0), t(0.0)
    lr, a, e, wd, mu = t(lr), t(alpha), t(eps), t(decay), t(momentum)
    centered = grad_avg.shape[0] > 0
    use_momentum = buf.shape[0] > 0
    for i in range(p.shape[0]):
        d = g[i] + wd * p[i]
        sq = a * square[i] + (one - a) * d * d
        square[i] = sq
        if centered:
            ga = a * grad_avg[i] + (one - a) * d
            grad_avg[i] = ga
            var = sq - ga * ga
            avg = np.sqrt(zero if var < zero else var) + e      # keeps a NaN, unlike max(zero, var)
        else:
            avg = np.sqrt(sq) + e
        if use_momentum:
            b = mu * buf[i] + d / avg
            buf[i] = b
            p[i] = p[i] - lr * b
        else:
            p[i] = p[i] - lr * d / avg


@jit
def _sgd_body(blk, blocks, p, g, buf, lr, momentum, decay, first):
    lo, hi = span(blk, blocks, p.shape[0])
    _sgd(p[lo:hi], g[lo:hi], buf[lo:hi], lr, momentum, decay, first)


_sgd_blocks = parallel(_sgd_body)


@jit
def _adam_body(blk, blocks, p, g, m, v, lr, beta1, beta2, eps, decay, decoupled, correction1, root_correction2):
    lo, hi = span(blk, blocks, p.shape[0])
    _adam(p[lo:hi], g[lo:hi], m[lo:hi], v[lo:hi], lr, beta1, beta2, eps, decay, decoupled, correction1,
          root_correction2)


_adam_blocks = parallel(_adam_body)


@jit
def _rmsprop_body(blk, blocks, p, g, square, grad_avg, buf, lr, alpha, eps, decay, momentum):
    lo, hi = span(blk, blocks, p.shape[0])
    _rmsprop(p[lo:hi], g[lo:hi], square[lo:hi], grad_avg[lo:hi],
             buf[lo:hi], lr, alpha, eps, decay, momentum)


_rmsprop_blocks = parallel(_rmsprop_body)


sgd = _by_size(_sgd, _sgd_blocks, PARALLEL_MIN["sgd"])
adam = _by_size(_adam, _adam_blocks, PARALLEL_MIN["adam"])
rmsprop = _by_size(_rmsprop, _rmsprop_blocks, PARALLEL_MIN["rmsprop"])
