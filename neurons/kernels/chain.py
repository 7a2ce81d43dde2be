"""Training steps of a chain of dense layers, many in one compiled call.

``train_steps`` runs, for each step of a chunk, what ``Network._loss_grad_state`` and an
optimizer's ``update`` run for a plain dense chain whose activations run whole (one block;
``neurons/_fused.py`` decides when that holds): gather the batch's rows in the shuffled order,
each layer's forward pass, the loss and its gradient, each layer's backward pass, the update of
every param and of the optimizer's state. What it saves is Python's work between the kernels: at
batch 1 a step's kernels take a few microseconds and the dispatch around them a hundred and more.
Products and updates large enough to be split into blocks by the layers' own calls are split
here into the same blocks, run by the shared parallel loop (``_blocks.run_at``).

Each kernel is called by its address: the very machine code the general path runs (the jit
function's own, compiled for the same argument types), not a copy of it compiled into this
function. A copy is not the same code: linked into another function, a kernel is optimised again
there, and with ``reassoc`` its sums may be regrouped (a copy of ``cross_entropy`` inlined here
gave the last bit of one loss in 30 differently). Called by address, the params, the optimizer's
state and the losses are the general path's, bit for bit. The dense bodies
(``dense._forward_body`` and ``_backward_body``) are named here (``_blocks.kernel``, and
``_blocks.address`` for their blocks); the activations' serial ``FORWARD``/``BACKWARD`` kernels, the loss (an
objective kernel, or ``softmax_cross_entropy``) and the optimizer (``optim._sgd``, ``_adam``,
``_rmsprop``, or their block bodies) are chosen at run time: ``neurons/_fused.py`` passes the addresses of the ones the
network uses (``_blocks.call_at``), so that only they compile, not every kernel a branch here
could name (5 of the 18 s a cold start of a small dense network took).

Params live in one flat array: layer ``l``'s weights ``(dims[l+1], dims[l])`` from
``woff[l]``, its bias ``(dims[l+1],)`` from ``boff[l]`` (-1: no bias). Gradients and the
optimizer's state arrays use the same layout (a state array of length 0: that option is off).
The optimizer kernels are elementwise, so one call over the flat array computes every element
as one call per param does.
"""
import numpy as np

from ._blocks import address, call_at, kernel, run_at
from ._config import jit
from .activations import LINEAR
from .dense import backward_blocks, forward_blocks

SGD, ADAM, RMSPROP = 0, 1, 2
# the optimizers' hyperparameters, in the order of the array ``train_steps`` takes them in
HYPER = ("momentum", "decay", "beta1", "beta2", "eps", "alpha", "decoupled")
# what a chunk ended with
DONE, LOSS, PARAMS = 0, 1, 2


@jit
def _gather(dst, src, order, start):
    """``dst[r] = src[order[start + r]]`` for every row of ``dst``."""
    for r in range(dst.shape[0]):
        row = src[order[start + r]]
        out = dst[r]
        for j in range(dst.shape[1]):
            out[j] = row[j]


@jit
def _copy(dst, src):
    """``dst[:] = src`` for 1-D arrays of one length (the slice assignment's shape check formats
    its error message from the shapes: a second of compiling string code on a cold start)."""
    for i in range(dst.shape[0]):
        dst[i] = src[i]


@jit
def _first_nonfinite(a):
    """The index of the first NaN or inf in the 1-D ``a``, or -1."""
    bad = 0
    for i in range(a.shape[0]):         # no early exit: vectorised, the common case
        bad += not np.isfinite(a[i])
    if bad:
        for i in range(a.shape[0]):
            if not np.isfinite(a[i]):
                return i
    return -1


@jit
def _activated(acts, l, fused):
    """Whether layer ``l`` applies its activation: not linear, and not the softmax that a fused
    loss takes the logits of."""
    return acts[l] != LINEAR and not (fused and l == acts.shape[0] - 1)


@jit
def _update(optimizer, at, blocks, p, g, s1, s2, s3, lr, hyper, first, c1, rc2):
    """One optimizer step over the flat ``p`` in place (its state ``s1, s2, s3`` too), with the
    argument types ``optimizers._Optimizer._walk`` gives its kernels: with one block the serial
    kernel at ``at`` (``optim._sgd``, ``_adam`` or ``_rmsprop`` by ``optimizer``), else its block
    body (``optim._sgd_body``, ...) at ``at``, one block of ``p`` per thread.

    ``hyper`` (HYPER): momentum, decay, beta1, beta2, eps, alpha, decoupled (1.0 or 0.0)."""
    momentum, decay, beta1, beta2, eps, alpha = hyper[0], hyper[1], hyper[2], hyper[3], hyper[4], hyper[5]
    if optimizer == SGD:
        _serial_or_blocks(at, blocks, (p, g, s1, lr, momentum, decay, first))
    elif optimizer == ADAM:
        _serial_or_blocks(at, blocks, (p, g, s1, s2, lr, beta1, beta2, eps, decay, hyper[6] != 0.0, c1, rc2))
    else:
        _serial_or_blocks(at, blocks, (p, g, s1, s2, s3, lr, alpha, eps, decay, momentum))


@jit(inline="always")
def _serial_or_blocks(at, blocks, args):
    """``f(*args)`` for the serial kernel ``f`` at ``at`` (one block), else ``body(blk, blocks,
    *args)`` for each block, ``body`` at ``at``."""
    if blocks == 1:
        call_at(at, args, None)
    else:
        run_at(at, blocks, (blocks,) + args)


@jit
def _dense_forward(h, w, b, z):
    """``dense.dense_forward``'s product into ``z``, in the blocks it would split it into."""
    blocks = forward_blocks(h.shape[0], w.shape[0], h.shape[1])
    if blocks == 1:
        kernel("neurons.kernels.dense._forward_body", (0, 1, h, w, b, z))
    else:
        args = (blocks, h, w, b, z)
        run_at(address("neurons.kernels.dense._forward_body", args), blocks, args)


@jit
def _dense_backward(dz, h, w, need_dx, dx, dw, db):
    """``dense.dense_backward``'s gradients, in the blocks it would split them into."""
    blocks = backward_blocks(dz.shape[0], w.shape[0], h.shape[1])
    if blocks == 1:
        kernel("neurons.kernels.dense._backward_body", (0, 1, dz, h, w, need_dx, dx, dw, db))
    else:
        args = (blocks, dz, h, w, need_dx, dx, dw, db)
        run_at(address("neurons.kernels.dense._backward_body", args), blocks, args)


@jit
def train_steps(x, y, order, batch, first, steps, dims, acts, fwd, bwd, woff, boff, fused, loss_at, clip, lo, hi,
                optimizer, opt_at, opt_blocks, hyper, lrs, c1s, rc2s, count, params, spare, s1, s2, s3, losses):
    """Steps ``first .. first + steps - 1`` of an epoch; returns ``(done, status, bad, params, spare)``.

    x (N, F) and y (N, O): the training set; ``order`` (N,): the epoch's order of its rows; step
    ``s`` takes rows ``order[s·batch : (s+1)·batch]``. ``dims`` (L+1,): the widths, input first;
    ``acts`` (L,): activation codes, ``fwd`` and ``bwd`` (L,): the addresses of each activated
    layer's activation kernels; ``woff``, ``boff`` (L,): where each layer's weights and bias start
    in the flat params (``boff`` -1: no bias); each product is split into the blocks the dense
    layer's own call splits it into. ``fused``: softmax and cross-entropy together from
    the last layer's logits (``objectives.softmax_cross_entropy`` at ``loss_at``); else the
    objective kernel at ``loss_at``, with ``clip`` to ``[lo, hi]``. ``optimizer`` (SGD, ADAM or
    RMSPROP, its kernel at ``opt_at``: the serial one if ``opt_blocks`` is 1, else its block body)
    with ``hyper`` (see ``HYPER``); per step of the chunk
    the learning rate ``lrs[k]`` and for Adam the bias corrections ``c1s[k]``, ``rc2s[k]``;
    ``count``: the optimizer's steps before the chunk. ``params`` and ``spare`` (P,): the flat
    params and a second array of their size; ``s1, s2, s3``: the optimizer's state, flat, updated
    in place; ``losses`` (steps,): each step's batch-mean loss, written.

    ``done`` steps finished. ``status`` DONE, or LOSS (step ``first + done``'s loss was not
    finite: nothing of that step was applied) or PARAMS (its update made the flat param ``bad``
    non-finite; the state arrays hold that update, the params do not). The params after the
    ``done`` steps are the returned ``params``; ``spare`` holds those before the last of them
    (unless ``done`` is 0, or the status is PARAMS).
    """
    n, f = x.shape
    layers = acts.shape[0]
    width = 0
    total = 0
    for l in range(layers + 1):
        width = max(width, dims[l])
        if l > 0:
            total += dims[l]
    # one batch of each value, as views of flat arrays: no allocation per step
    zs, ys = np.empty(batch * total, x.dtype), np.empty(batch * total, x.dtype)
    xs, ts = np.empty(batch * f, x.dtype), np.empty(batch * y.shape[1], x.dtype)
    ping, pong = np.empty(batch * width, x.dtype), np.empty(batch * width, x.dtype)
    dzs = np.empty(batch * width, x.dtype)
    grads = np.empty(params.shape[0], x.dtype)
    scratch = np.empty(width, x.dtype)          # db of a layer without bias (computed, never used)
    no_bias = np.empty(0, x.dtype)
    no_dx = np.empty((0, f), x.dtype)
    offs = np.zeros(layers + 1, np.int64)
    for l in range(layers):
        offs[l + 1] = offs[l] + batch * dims[l + 1]
    for k in range(steps):
        start = (first + k) * batch
        m = min(batch, n - start)
        xb = xs[:m * f].reshape((m, f))
        yb = ts[:m * y.shape[1]].reshape((m, y.shape[1]))
        _gather(xb, x, order, start)
        _gather(yb, y, order, start)
        # forward: each layer's output where backward finds it again (linear: z itself)
        h = xb
        for l in range(layers):
            u, i = dims[l + 1], dims[l]
            w = params[woff[l]:woff[l] + u * i].reshape((u, i))
            b = params[boff[l]:boff[l] + u] if boff[l] >= 0 else no_bias
            z = zs[offs[l]:offs[l] + m * u].reshape((m, u))
            _dense_forward(h, w, b, z)
            if _activated(acts, l, fused):
                a = ys[offs[l]:offs[l] + m * u].reshape((m, u))
                call_at(fwd[l], (z, a), None)
                h = a
            else:
                h = z
        if fused:
            loss, dy, _ = call_at(loss_at, (h, yb), (0.0, h, h))
        else:
            loss, dy = call_at(loss_at, (h, yb, clip, lo, hi), (0.0, h))
        losses[k] = loss
        if not np.isfinite(loss):
            return k, LOSS, -1, params, spare
        # backward, last layer first; dx alternates between ping and pong
        for l in range(layers - 1, -1, -1):
            u, i = dims[l + 1], dims[l]
            if _activated(acts, l, fused):
                a = ys[offs[l]:offs[l] + m * u].reshape((m, u))
                dz = dzs[:m * u].reshape((m, u))
                call_at(bwd[l], (dy, a, dz), None)
            else:
                dz = dy
            if l == 0:
                h = xb
            elif _activated(acts, l - 1, fused):
                h = ys[offs[l - 1]:offs[l - 1] + m * i].reshape((m, i))
            else:
                h = zs[offs[l - 1]:offs[l - 1] + m * i].reshape((m, i))
            w = params[woff[l]:woff[l] + u * i].reshape((u, i))
            dw = grads[woff[l]:woff[l] + u * i].reshape((u, i))
            db = grads[boff[l]:boff[l] + u] if boff[l] >= 0 else scratch[:u]
            need_dx = l > 0
            dx = (ping if (layers - 1 - l) % 2 == 0 else pong)[:m * i].reshape((m, i)) if need_dx else no_dx
            _dense_backward(dz, h, w, need_dx, dx, dw, db)
            dy = dx
        # the update, into a copy: the params before it stay as they were
        _copy(spare, params)
        _update(optimizer, opt_at, opt_blocks, spare, grads, s1, s2, s3, lrs[k], hyper, count + k == 0, c1s[k], rc2s[k])
        bad = _first_nonfinite(spare)
        if bad >= 0:
            return k, PARAMS, bad, params, spare
        params, spare = spare, params
    return steps, DONE, -1, params, spare
