"""Training steps of a plain chain of dense, convolution and max-pool layers, many in one
compiled call.

``train_steps`` runs, for each step of a chunk, what ``Network._loss_grad_state`` and an
optimizer's ``update`` run for such a chain (``neurons/_fused.py`` decides which networks it
takes): gather the batch's rows in the shuffled order, each layer's forward pass, the loss and
its gradient, each layer's backward pass, the update of every param and of the optimizer's
state. What it saves is Python's work between the kernels: at batch 1 a dense step's kernels
take a few microseconds and the dispatch around them a hundred and more; quickstart's CNN at
batch 32 took 0.89 ms a step, 0.61 ms here (tiny3conv's 0.82 -> 0.25 ms). Kernels that the
layers' own calls split into blocks are split here into the same blocks, run by the shared
parallel loop (``_blocks.run_at``).

Each kernel is called by its address: the very machine code the general path runs (the jit
function's own, compiled for the same argument types), not a copy of it compiled into this
function. A copy is not the same code: linked into another function, a kernel is optimised again
there, and with ``reassoc`` its sums may be regrouped (a copy of ``cross_entropy`` inlined here
gave the last bit of one loss in 30 differently). Called by address, the params, the optimizer's
state and the losses are the general path's, bit for bit. The dense bodies
(``dense._forward_body`` and ``_backward_body``) are named here (``_blocks.kernel``, and
``_blocks.address`` for their blocks); the activations' serial ``FORWARD``/``BACKWARD`` kernels,
the convolution and max-pool block bodies (``conv_direct``'s or ``conv_gemm``'s, as
``conv.py``'s table picks them; the 2 x 2 or the general max-pool), the sum of a convolution's
per-block partials (``conv_planes.sum_blocks``), the loss (an objective kernel, or
``softmax_cross_entropy``) and the optimizer (``optim._sgd``, ``_adam``, ``_rmsprop``, or their
block bodies) are chosen at run time: ``neurons/_fused.py`` passes the addresses of the ones the
network uses (``_blocks.call_at``), so that only they compile, not every kernel a branch here
could name (5 of the 18 s a cold start of a small dense network took).

Params live in one flat array: layer ``l``'s weights (dense ``(dims[l+1], dims[l])``, a
convolution's kernel ``(F, C, kh, kw)``) from ``woff[l]``, its bias from ``boff[l]`` (-1: no
bias). Gradients and the optimizer's state arrays use the same layout (a state array of length
0: that option is off). Each layer's values are flat too, reshaped to (rows, ...) where a kernel
takes them.
The optimizer kernels are elementwise, so one call over the flat array computes every element
as one call per param does.
"""
import numpy as np

from ._blocks import address, block_count_in_kernels, call_at, kernel, run_at
from ._config import jit
from .activations import LINEAR
from .dense import backward_blocks, forward_blocks

SGD, ADAM, RMSPROP = 0, 1, 2
# the optimizers' hyperparameters, in the order of the array ``train_steps`` takes them in
HYPER = ("momentum", "decay", "beta1", "beta2", "eps", "alpha", "decoupled")
# what a chunk ended with
DONE, LOSS, PARAMS = 0, 1, 2
# a layer's kind, and the columns of its row in ``geo``: the input (C, H, W) and output (F, OH,
# OW) of a convolution or max-pool, its kernel, padding, dilation and (max-pool) stride, whether a
# convolution applies the ReLU in its kernels, the elements below which a max-pool runs as one
# block; IMPL: a convolution's implementation (DIRECT or GEMM), a max-pool's kernel (PAIRS: the
# 2 x 2 one with stride 2, else ANY)
DENSE, CONV, POOL = 0, 1, 2
KIND, IMPL, C, H, W, F, OH, OW, KH, KW, PH, PW, DH, DW, SH, SW, RELU, MIN, GEO = range(19)
DIRECT, GEMM = 0, 1
PAIRS, ANY = 0, 1


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


@jit(inline="always")
def _body(at, blocks, args):
    """``body(blk, *args)`` for every block, ``body`` a block function at ``at`` and ``args``
    starting with ``blocks``: one call (one block, as ``_blocks.parallel``'s loops make it from
    Python) or the shared parallel loop."""
    if blocks == 1:
        call_at(at, (0,) + args, None)
    else:
        run_at(at, blocks, args)


@jit
def _conv_forward(g, x, params, woff, boff, no_bias, y, m, at):
    """``conv.conv_forward`` of layer ``g`` (a row of ``geo``) on the flat batch ``x`` into the flat
    ``y``: its implementation's forward body at ``at``, on the blocks of ``stride1_forward``."""
    c, h, w, f, oh, ow, kh, kw = g[C], g[H], g[W], g[F], g[OH], g[OW], g[KH], g[KW]
    k = params[woff:woff + f * c * kh * kw].reshape((f, c, kh, kw))
    b = params[boff:boff + f] if boff >= 0 else no_bias
    blocks = block_count_in_kernels(m)
    _body(at, blocks, (blocks, x.reshape((m, c, h, w)), k, b, g[RELU] != 0, g[PH], g[PW], g[DH], g[DW],
                       y.reshape((m, f, oh, ow))))


@jit
def _conv_backward(g, dy, x, y, params, grads, woff, boff, need_dx, dx, m, at, sum_at):
    """``conv.conv_backward`` of layer ``g``: its implementation's backward body at ``at`` (dy
    through the fused ReLU of the output ``y`` when the layer has one), the blocks' partials
    summed by ``conv_planes.sum_blocks`` at ``sum_at``, dk (and db if ``boff`` >= 0) written
    into the flat ``grads``, dx into the flat ``dx`` if ``need_dx``."""
    c, h, w, f, oh, ow, kh, kw = g[C], g[H], g[W], g[F], g[OH], g[OW], g[KH], g[KW]
    taps = c * kh * kw
    k = params[woff:woff + f * taps].reshape((f, c, kh, kw))
    dy4, x4 = dy.reshape((m, f, oh, ow)), x.reshape((m, c, h, w))
    relu_y = y.reshape((m, f, oh, ow)) if g[RELU] != 0 else np.empty((0, f, oh, ow), dy.dtype)
    dx4 = dx.reshape((m, c, h, w)) if need_dx else np.empty((0, c, h, w), dy.dtype)
    blocks = block_count_in_kernels(m)
    transposed = g[IMPL] == GEMM and taps > f      # conv_gemm.backward's layout of dk
    partial = np.zeros((blocks, taps, f) if transposed else (blocks, f, taps), dy.dtype)
    partial_db = np.zeros((blocks, f), dy.dtype)
    if g[IMPL] == GEMM:             # k as (C·kh·kw, F), as conv_gemm.backward passes it
        kt = np.ascontiguousarray(k.reshape((f, taps)).T)
        _body(at, blocks, (blocks, dy4, relu_y, x4, kt, kh, kw, g[PH], g[PW], g[DH], g[DW], need_dx, dx4, partial,
                           partial_db))
    else:
        _body(at, blocks, (blocks, dy4, relu_y, x4, k, g[PH], g[PW], g[DH], g[DW], need_dx, dx4, partial, partial_db))
    dk = call_at(sum_at, (partial.reshape((blocks, f * taps)),), grads[:0])
    if transposed:
        dk = np.ascontiguousarray(dk.reshape((taps, f)).T).reshape(f * taps)
    _copy(grads[woff:woff + f * taps], dk)
    if boff >= 0:
        _copy(grads[boff:boff + f], call_at(sum_at, (partial_db,), grads[:0]))


@jit(inline="always")
def _plane_blocks(g, m):
    """``maxpool._plane_blocks`` of max-pool ``g``'s input at ``m`` rows (its ``PARALLEL_MIN`` in ``g[MIN]``)."""
    return block_count_in_kernels(m * g[C], m * g[C] * g[H] * g[W], g[MIN])


@jit
def _pool_forward(g, x, y, arg, m, at):
    """``maxpool.maxpool_forward`` of layer ``g``: the 2 x 2 or the general forward body at ``at``."""
    c, h, w, oh, ow = g[C], g[H], g[W], g[OH], g[OW]
    x4, y4, arg4 = x.reshape((m, c, h, w)), y.reshape((m, c, oh, ow)), arg.reshape((m, c, oh, ow))
    blocks = _plane_blocks(g, m)
    if g[IMPL] == PAIRS:
        _body(at, blocks, (blocks, x4, y4, arg4))
    else:
        _body(at, blocks, (blocks, x4, g[KH], g[KW], g[SH], g[SW], y4, arg4))


@jit
def _pool_backward(g, dy, arg, dx, m, at):
    """``maxpool.maxpool_backward`` of layer ``g``: its backward body at ``at``."""
    c, h, w, oh, ow = g[C], g[H], g[W], g[OH], g[OW]
    blocks = _plane_blocks(g, m)
    _body(at, blocks, (blocks, dy.reshape((m, c, oh, ow)), arg.reshape((m, c, oh, ow)), dx.reshape((m, c, h, w))))


@jit
def train_steps(x, y, order, batch, first, steps, dims, acts, fwd, bwd, woff, boff, geo, lat, sum_at, fused, loss_at,
                clip, lo, hi, optimizer, opt_at, opt_blocks, hyper, lrs, c1s, rc2s, count, params, spare, s1, s2, s3,
                losses):
    """Steps ``first .. first + steps - 1`` of an epoch; returns ``(done, status, bad, params, spare)``.

    x (N, F) and y (N, O): the training set, each sample flat; ``order`` (N,): the epoch's order
    of its rows; step ``s`` takes rows ``order[s·batch : (s+1)·batch]``. ``dims`` (L+1,): the
    values per sample of the input and of each layer's output; ``geo`` (L, GEO): each layer's
    kind (DENSE, CONV or POOL) and geometry (the columns named at the top); ``acts`` (L,):
    activation codes (a dense layer's; LINEAR for the others, a convolution's ReLU is
    ``geo[l, RELU]``, run inside its kernels), ``fwd`` and ``bwd`` (L,): the addresses of each
    activated layer's activation kernels; ``lat`` (L, 2): a convolution's or max-pool's forward
    and backward block bodies' addresses, ``sum_at``: ``conv_planes.sum_blocks``'s; ``woff``,
    ``boff`` (L,): where each layer's weights and bias start in the flat params (``boff`` -1: no
    bias); each kernel runs on the blocks that the layer's own call splits it into. ``fused``:
    softmax and cross-entropy together from the last layer's logits
    (``objectives.softmax_cross_entropy`` at ``loss_at``); else the objective kernel at
    ``loss_at``, with ``clip`` to ``[lo, hi]``. ``optimizer`` (SGD, ADAM or RMSPROP, its kernel
    at ``opt_at``: the serial one if ``opt_blocks`` is 1, else its block body) with ``hyper`` (see
    ``HYPER``); per step of the chunk the learning rate ``lrs[k]`` and for Adam the bias
    corrections ``c1s[k]``, ``rc2s[k]``; ``count``: the optimizer's steps before the chunk.
    ``params`` and ``spare`` (P,): the flat params and a second array of their size; ``s1, s2,
    s3``: the optimizer's state, flat, updated in place; ``losses`` (steps,): each step's
    batch-mean loss, written.

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
    # one batch of each value, as flat views of flat arrays: no allocation per step
    zs, ys = np.empty(batch * total, x.dtype), np.empty(batch * total, x.dtype)
    arg = np.empty(batch * total, np.int32)         # a max-pool's arg, where zs holds its output
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
        # forward: each layer's output where backward finds it again (not activated: z itself)
        h = xs[:m * f]
        for l in range(layers):
            u, i = dims[l + 1], dims[l]
            z = zs[offs[l]:offs[l] + m * u]
            if geo[l, KIND] == CONV:
                _conv_forward(geo[l], h, params, woff[l], boff[l], no_bias, z, m, lat[l, 0])
            elif geo[l, KIND] == POOL:
                _pool_forward(geo[l], h, z, arg[offs[l]:offs[l] + m * u], m, lat[l, 0])
            else:
                w = params[woff[l]:woff[l] + u * i].reshape((u, i))
                b = params[boff[l]:boff[l] + u] if boff[l] >= 0 else no_bias
                _dense_forward(h.reshape((m, i)), w, b, z.reshape((m, u)))
            if _activated(acts, l, fused):
                a = ys[offs[l]:offs[l] + m * u]
                call_at(fwd[l], (z.reshape((m, u)), a.reshape((m, u))), None)
                h = a
            else:
                h = z
        out = h.reshape((m, dims[layers]))
        if fused:
            loss, dout, _ = call_at(loss_at, (out, yb), (0.0, out, out))
        else:
            loss, dout = call_at(loss_at, (out, yb, clip, lo, hi), (0.0, out))
        losses[k] = loss
        if not np.isfinite(loss):
            return k, LOSS, -1, params, spare
        dy = dout.reshape(m * dims[layers])
        # backward, last layer first; dx alternates between ping and pong
        for l in range(layers - 1, -1, -1):
            u, i = dims[l + 1], dims[l]
            z = zs[offs[l]:offs[l] + m * u]
            if _activated(acts, l, fused):
                dz = dzs[:m * u]
                call_at(bwd[l], (dy.reshape((m, u)), ys[offs[l]:offs[l] + m * u].reshape((m, u)), dz.reshape((m, u))),
                        None)
            else:
                dz = dy
            if l == 0:
                h = xs[:m * f]
            elif _activated(acts, l - 1, fused):
                h = ys[offs[l - 1]:offs[l - 1] + m * i]
            else:
                h = zs[offs[l - 1]:offs[l - 1] + m * i]
            need_dx = l > 0
            dx = (ping if (layers - 1 - l) % 2 == 0 else pong)[:m * i if need_dx else 0]
            if geo[l, KIND] == CONV:
                _conv_backward(geo[l], dz, h, z, params, grads, woff[l], boff[l], need_dx, dx, m, lat[l, 1], sum_at)
            elif geo[l, KIND] == POOL:
                if need_dx:
                    _pool_backward(geo[l], dz, arg[offs[l]:offs[l] + m * u], dx, m, lat[l, 1])
            else:
                w = params[woff[l]:woff[l] + u * i].reshape((u, i))
                dw = grads[woff[l]:woff[l] + u * i].reshape((u, i))
                db = grads[boff[l]:boff[l] + u] if boff[l] >= 0 else scratch[:u]
                _dense_backward(dz.reshape((m, u)), h.reshape((m, i)), w, need_dx, dx.reshape((m, i)) if need_dx else no_dx,
                                dw, db)
            dy = dx
        # the update, into a copy: the params before it stay as they were
        _copy(spare, params)
        _update(optimizer, opt_at, opt_blocks, spare, grads, s1, s2, s3, lrs[k], hyper, count + k == 0, c1s[k], rc2s[k])
        bad = _first_nonfinite(spare)
        if bad >= 0:
            return k, PARAMS, bad, params, spare
        params, spare = spare, params
    return steps, DONE, -1, params, spare
