"""Training steps of a network of dense, convolution and max-pool layers, with skips, loopbacks
and feedback blocks, many in one compiled call.

``train_steps`` runs, for each step of a chunk, what ``Network._loss_grad_state`` and an
optimizer's ``update`` run for such a network (``neurons/_fused.py`` decides which networks it
takes): gather the batch's rows in the shuffled order, the program's ops (``graph.py``: each
layer's forward pass, and the accumulations of skips and loops, unrolled), the loss and its
gradient, the ops' backward passes in reverse, the update of every param and of the optimizer's
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
the convolution and max-pool block bodies (``conv_taps``', ``conv_direct``'s or ``conv_gemm``'s, as
``conv.py``'s table picks them, or the pooled ones of ``conv_taps`` and ``conv_gemm``; the 2 x 2 or
the general max-pool), the sum of a convolution's per-block partials (``conv_planes.sum_blocks``),
the loss (an objective kernel, or ``softmax_cross_entropy``) and the optimizer (``optim._sgd``,
``_adam``, ``_rmsprop``, or their block bodies) are chosen at run time: ``neurons/_fused.py``
passes the addresses of the ones the network uses (``_blocks.call_at``), so that only they
compile, not every kernel a branch here could name (5 of the 18 s a cold start of a small dense
network took).

With ``outs`` (``Network.predict``) it runs the forward ops only and writes the outputs.

Params live in one flat array: unit ``u``'s weights (dense ``(out, in)``, a convolution's kernel
``(F, C, kh, kw)``) from ``woff[u]``, its bias from ``boff[u]`` (-1: no bias). Gradients and the
optimizer's state arrays use the same layout (a state array of length 0: that option is off).
Each slot's values are flat too, reshaped to (rows, ...) where a kernel takes them.
The optimizer kernels are elementwise, so one call over the flat array computes every element
as one call per param does.
"""
import numpy as np

from ._blocks import address, block_count_in_kernels, call_at, kernel, run_at
from ._config import jit
from .activations import LINEAR
from .conv_taps import turned
from .dense import backward_blocks, forward_blocks

SGD, ADAM, RMSPROP = 0, 1, 2
# the optimizers' hyperparameters, in the order of the array ``train_steps`` takes them in
HYPER = ("momentum", "decay", "beta1", "beta2", "eps", "alpha", "decoupled")
# what a chunk ended with
DONE, LOSS, PARAMS = 0, 1, 2
# a layer's kind, and the columns of its row in ``geo``: the input (C, H, W) and output (F, OH,
# OW) of a convolution or max-pool, its kernel, padding, dilation and (max-pool) stride, whether a
# convolution applies the ReLU in its kernels, the elements below which a max-pool runs as one
# block; IMPL: a convolution's implementation (DIRECT, GEMM, TAPS; POOLED and POOLED_GEMM: TAPS and
# GEMM with the 2 x 2 max-pool that alone reads its output in the same passes, its op's DST the
# pool's), a max-pool's kernel (PAIRS: the 2 x 2 one with stride 2, else ANY)
DENSE, CONV, POOL = 0, 1, 2
KIND, IMPL, C, H, W, F, OH, OW, KH, KW, PH, PW, DH, DW, SH, SW, RELU, MIN, GEO = range(19)
DIRECT, GEMM, TAPS, POOLED, POOLED_GEMM = 0, 1, 2, 3, 4
PAIRS, ANY = 0, 1
# an op's kind (KIND_OP), and the columns of its row in ``ops``: APPLY a unit to slot SRC, or ACC
# the NSRC slots listed in ``ins`` from FROM on, with MODE; both into slot DST
APPLY, ACC = 0, 1
KIND_OP, UNIT, SRC, DST, MODE, NSRC, FROM, OPS = range(8)
# ACC's modes (``graph.MODES`` but "multiply", which the chain leaves to the general path)
ADD, SUBTRACT, OVERWRITE, MEAN = 0, 1, 2, 3


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


@jit(inline="always")
def _activated(acts, u, fused, last):
    """Whether unit ``u`` applies its activation (``last``: in the program's last op): not linear,
    and not the softmax that a fused loss takes the logits of."""
    return acts[u] != LINEAR and not (fused and last)


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
def _conv_forward(g, x, params, woff, boff, no_bias, y, arg, m, at):
    """``conv.conv_forward`` of layer ``g`` (a row of ``geo``) on the flat batch ``x`` into the flat
    ``y``: its implementation's forward body at ``at``, on the blocks of ``conv_taps.forward``
    (POOLED, POOLED_GEMM: ``conv_taps.forward_pooled``'s, y and ``arg`` the max-pool's)."""
    c, h, w, f, oh, ow, kh, kw = g[C], g[H], g[W], g[F], g[OH], g[OW], g[KH], g[KW]
    k = params[woff:woff + f * c * kh * kw].reshape((f, c, kh, kw))
    b = params[boff:boff + f] if boff >= 0 else no_bias
    blocks = block_count_in_kernels(m)
    x4 = x.reshape((m, c, h, w))
    if g[IMPL] == POOLED or g[IMPL] == POOLED_GEMM:
        pooled = (m, f, oh // 2, ow // 2)
        _body(at, blocks, (blocks, x4, k, b, g[RELU] != 0, g[PH], g[PW], g[DH], g[DW], y.reshape(pooled),
                           arg.reshape(pooled)))
    else:
        _body(at, blocks, (blocks, x4, k, b, g[RELU] != 0, g[PH], g[PW], g[DH], g[DW], y.reshape((m, f, oh, ow))))


@jit
def _conv_backward(g, dy, x, y, arg, params, grads, woff, boff, need_dx, dx, m, at, sum_at):
    """``conv.conv_backward`` of layer ``g``: its implementation's backward body at ``at`` (dy
    through the fused ReLU of the output ``y`` when the layer has one; POOLED, POOLED_GEMM: dy, y
    and ``arg`` the max-pool's), the blocks' partials summed by ``conv_planes.sum_blocks`` at
    ``sum_at``, dk (and db if ``boff`` >= 0) written into the flat ``grads``, dx into the flat
    ``dx`` if ``need_dx``."""
    c, h, w, f, oh, ow, kh, kw = g[C], g[H], g[W], g[F], g[OH], g[OW], g[KH], g[KW]
    taps = c * kh * kw
    k = params[woff:woff + f * taps].reshape((f, c, kh, kw))
    gemm = g[IMPL] == GEMM or g[IMPL] == POOLED_GEMM
    if g[IMPL] == POOLED or g[IMPL] == POOLED_GEMM:
        oh, ow = oh // 2, ow // 2
    dy4, x4 = dy.reshape((m, f, oh, ow)), x.reshape((m, c, h, w))
    relu_y = y.reshape((m, f, oh, ow)) if g[RELU] != 0 else np.empty((0, f, oh, ow), dy.dtype)
    dx4 = dx.reshape((m, c, h, w)) if need_dx else np.empty((0, c, h, w), dy.dtype)
    blocks = block_count_in_kernels(m)
    transposed = gemm and taps > f      # conv_gemm.backward's layout of dk
    partial = np.zeros((blocks, taps, f) if transposed else (blocks, f, taps), dy.dtype)
    partial_db = np.zeros((blocks, f), dy.dtype)
    if g[IMPL] == DIRECT:
        _body(at, blocks, (blocks, dy4, relu_y, x4, k, g[PH], g[PW], g[DH], g[DW], need_dx, dx4, partial, partial_db))
    else:   # k as (C·kh·kw, F) for GEMM, turned and swapped for the taps, as their backward passes it
        kt = np.ascontiguousarray(k.reshape((f, taps)).T) if gemm else turned(k)
        if g[IMPL] == POOLED or g[IMPL] == POOLED_GEMM:
            _body(at, blocks, (blocks, dy4, arg.reshape((m, f, oh, ow)), relu_y, x4, kt, kh, kw, g[PH], g[PW], g[DH],
                               g[DW], need_dx, dx4, partial, partial_db))
        else:
            _body(at, blocks, (blocks, dy4, relu_y, x4, kt, kh, kw, g[PH], g[PW], g[DH], g[DW], need_dx, dx4, partial,
                               partial_db))
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


@jit(inline="always")
def _slot(buf, soff, batch, s, m, sizes):
    """Slot ``s``'s ``m`` rows in ``buf`` (values, pre-activations, gradients: one layout)."""
    at = batch * soff[s]
    return buf[at:at + m * sizes[s]]


@jit
def _accumulate(mode, ins, vals, soff, batch, m, sizes, out):
    """``graph.accumulate(mode, ...)`` of the slots ``ins`` into ``out``, as NumPy computes it: one
    elementwise operation over the whole array at a time (``add``/``mean``: ``v0 + v1``, then
    ``+= v2``, ..., then ``*= 1/n`` rounded to the dtype; ``subtract`` likewise)."""
    a = _slot(vals, soff, batch, ins[ins.shape[0] - 1] if mode == OVERWRITE else ins[0], m, sizes)
    if mode == OVERWRITE:
        _copy(out, a)
        return
    b = _slot(vals, soff, batch, ins[1], m, sizes)
    if mode == SUBTRACT:
        for i in range(out.shape[0]):
            out[i] = a[i] - b[i]
    else:
        for i in range(out.shape[0]):
            out[i] = a[i] + b[i]
    for j in range(2, ins.shape[0]):
        v = _slot(vals, soff, batch, ins[j], m, sizes)
        if mode == SUBTRACT:
            for i in range(out.shape[0]):
                out[i] -= v[i]
        else:
            for i in range(out.shape[0]):
                out[i] += v[i]
    if mode == MEAN:
        _scale(out, out, out.dtype.type(1.0 / ins.shape[0]))


@jit
def _scale(dst, src, c):
    """``dst = src · c`` elementwise (``c`` of the arrays' dtype)."""
    for i in range(dst.shape[0]):
        dst[i] = src[i] * c


@jit
def _negate(dst, src):
    """``dst = -src`` elementwise (the sign flipped, as NumPy's ``-``)."""
    for i in range(dst.shape[0]):
        dst[i] = -src[i]


@jit
def _add_to(dst, src):
    """``dst = dst + src`` elementwise."""
    for i in range(dst.shape[0]):
        dst[i] = dst[i] + src[i]


@jit(inline="always")
def _give(gb, gset, soff, batch, s, m, sizes, d):
    """``graph._add``: slot ``s``'s gradient becomes ``d``, or its gradient plus ``d``."""
    g = _slot(gb, soff, batch, s, m, sizes)
    if gset[s]:
        _add_to(g, d)
    else:
        _copy(g, d)
        gset[s] = True


@jit
def train_steps(x, y, order, batch, first, steps, ops, ins, sizes, soff, acts, fwd, bwd, woff, boff, wlen, blen, geo,
                lat, sum_at, fused, loss_at, clip, lo, hi, optimizer, opt_at, opt_blocks, hyper, lrs, c1s, rc2s, count,
                params, spare, s1, s2, s3, losses, outs):
    """Steps ``first .. first + steps - 1`` of an epoch; returns ``(done, status, bad, params, spare)``.

    x (N, F) and y (N, O): the training set, each sample flat; ``order`` (N,): the epoch's order
    of its rows; step ``s`` takes rows ``order[s·batch : (s+1)·batch]``.

    The network is ``graph.Program``'s list of instructions over numbered value slots (slot 0:
    the input), one row of ``ops`` (OPS columns) each: APPLY runs unit ``ops[o, UNIT]`` on slot
    SRC into slot DST; ACC combines the NSRC slots ``ins[FROM:FROM + NSRC]`` into DST with MODE
    (ADD, SUBTRACT, OVERWRITE or MEAN). The last op is an APPLY whose DST is the output. ``sizes``
    (S,): the values per sample of each slot, ``soff`` (S,): where each slot's rows start, per
    row of the batch, in the buffers of values, pre-activations and gradients.

    A unit is a layer, or a layer of a feedback block: one set of params however many ops apply
    it (their gradients summed in the order ``graph.run_backward`` sums them). Per unit: ``geo``
    (U, GEO), its kind (DENSE, CONV or POOL) and geometry (the columns named at the top);
    ``acts``: activation codes (a dense unit's; LINEAR for the others, a convolution's ReLU is
    ``geo[u, RELU]``, run inside its kernels), ``fwd`` and ``bwd``: the addresses of each
    activated unit's activation kernels; ``lat`` (U, 2): a convolution's or max-pool's forward
    and backward block bodies' addresses, ``sum_at``: ``conv_planes.sum_blocks``'s; ``woff``,
    ``boff``, ``wlen``, ``blen``: where its weights and bias start in the flat params and their
    lengths (``boff`` -1: no bias); each kernel runs on the blocks that the layer's own call
    splits it into. ``fused``: softmax and cross-entropy together from the last op's logits
    (``objectives.softmax_cross_entropy`` at ``loss_at``); else the objective kernel at
    ``loss_at``, with ``clip`` to ``[lo, hi]``. ``optimizer`` (SGD, ADAM or RMSPROP, its kernel
    at ``opt_at``: the serial one if ``opt_blocks`` is 1, else its block body) with ``hyper`` (see
    ``HYPER``); per step of the chunk the learning rate ``lrs[k]`` and for Adam the bias
    corrections ``c1s[k]``, ``rc2s[k]``; ``count``: the optimizer's steps before the chunk.
    ``params`` and ``spare`` (P,): the flat params and a second array of their size; ``s1, s2,
    s3``: the optimizer's state, flat, updated in place; ``losses`` (steps,): each step's
    batch-mean loss, written.

    ``outs`` (N, O) with N > 0: inference instead (``Network.predict``): each step runs the
    forward ops only, on rows ``order[s·batch : (s+1)·batch]``, and writes the output slot's
    values into the same rows of ``outs``; ``fused`` is then false (the last softmax is applied),
    and nothing else is touched. In training ``outs`` is (0, O).

    ``done`` steps finished. ``status`` DONE, or LOSS (step ``first + done``'s loss was not
    finite: nothing of that step was applied) or PARAMS (its update made the flat param ``bad``
    non-finite; the state arrays hold that update, the params do not). The params after the
    ``done`` steps are the returned ``params``; ``spare`` holds those before the last of them
    (unless ``done`` is 0, or the status is PARAMS).
    """
    n, f = x.shape
    nops, slots, units = ops.shape[0], sizes.shape[0], acts.shape[0]
    width = 0
    for s in range(slots):
        width = max(width, sizes[s])
    total = soff[slots - 1] + sizes[slots - 1]
    out_slot = ops[nops - 1, DST]
    # one batch of every slot's values, pre-activations (an activated unit's z), max-pool args
    # and gradients, at the same places: no allocation per step
    vals, zs, gs = np.empty(batch * total, x.dtype), np.empty(batch * total, x.dtype), np.empty(batch * total, x.dtype)
    arg = np.empty(batch * total, np.int32)
    ts = np.empty(batch * y.shape[1], x.dtype)
    dzs, dxs = np.empty(batch * width, x.dtype), np.empty(batch * width, x.dtype)
    grads, again = np.empty(params.shape[0], x.dtype), np.empty(params.shape[0], x.dtype)
    scratch = np.empty(width, x.dtype)          # db of a dense unit without bias (computed, never used)
    no_bias = np.empty(0, x.dtype)
    gset = np.zeros(slots, np.bool_)
    done_u = np.zeros(units, np.bool_)
    infer = outs.shape[0] > 0
    for k in range(steps):
        start = (first + k) * batch
        m = min(batch, n - start)
        yb = ts[:m * y.shape[1]].reshape((m, y.shape[1]))
        _gather(_slot(vals, soff, batch, 0, m, sizes).reshape((m, f)), x, order, start)
        if not infer:
            _gather(yb, y, order, start)
        # forward: each op's output in its slot (an activated unit's z in zs, at the same place)
        for o in range(nops):
            dst = ops[o, DST]
            out = _slot(vals, soff, batch, dst, m, sizes)
            if ops[o, KIND_OP] == ACC:
                _accumulate(ops[o, MODE], ins[ops[o, FROM]:ops[o, FROM] + ops[o, NSRC]], vals, soff, batch, m, sizes,
                            out)
                continue
            u, src = ops[o, UNIT], ops[o, SRC]
            h = _slot(vals, soff, batch, src, m, sizes)
            activated = _activated(acts, u, fused, o == nops - 1)
            z = _slot(zs, soff, batch, dst, m, sizes) if activated else out
            if geo[u, KIND] == CONV:
                _conv_forward(geo[u], h, params, woff[u], boff[u], no_bias, z, _slot(arg, soff, batch, dst, m, sizes),
                              m, lat[u, 0])
            elif geo[u, KIND] == POOL:
                _pool_forward(geo[u], h, z, _slot(arg, soff, batch, dst, m, sizes), m, lat[u, 0])
            else:
                i, o_ = sizes[src], sizes[dst]
                w = params[woff[u]:woff[u] + o_ * i].reshape((o_, i))
                b = params[boff[u]:boff[u] + o_] if boff[u] >= 0 else no_bias
                _dense_forward(h.reshape((m, i)), w, b, z.reshape((m, o_)))
            if activated:
                call_at(fwd[u], (z.reshape((m, sizes[dst])), out.reshape((m, sizes[dst]))), None)
        out = _slot(vals, soff, batch, out_slot, m, sizes).reshape((m, sizes[out_slot]))
        if infer:
            for r in range(m):
                _copy(outs[order[start + r]], out[r])
            continue
        if fused:
            loss, dout, _ = call_at(loss_at, (out, yb), (0.0, out, out))
        else:
            loss, dout = call_at(loss_at, (out, yb, clip, lo, hi), (0.0, out))
        losses[k] = loss
        if not np.isfinite(loss):
            return k, LOSS, -1, params, spare
        # backward, last op first (``graph.run_backward``): an op whose output got no gradient
        # is skipped; a slot's gradients and a unit's param gradients are summed as they arrive
        gset[:] = False
        done_u[:] = False
        _copy(_slot(gs, soff, batch, out_slot, m, sizes), dout.reshape(m * sizes[out_slot]))
        gset[out_slot] = True
        for o in range(nops - 1, -1, -1):
            dst = ops[o, DST]
            if not gset[dst]:
                continue
            g = _slot(gs, soff, batch, dst, m, sizes)
            if ops[o, KIND_OP] == ACC:
                mode, many, at = ops[o, MODE], ops[o, NSRC], ops[o, FROM]
                # graph.accumulate_backward: g to each (mean: g / n; subtract: g to the first,
                # -g to the others; overwrite: g to the last)
                d, rest = g, g
                if mode == MEAN:
                    d = rest = dzs[:g.shape[0]]
                    _scale(rest, g, g.dtype.type(1.0 / many))
                elif mode == SUBTRACT:
                    rest = dzs[:g.shape[0]]
                    _negate(rest, g)
                for j in range(many):
                    s = ins[at + j]
                    if s == 0 or (mode == OVERWRITE and j != many - 1):
                        continue
                    _give(gs, gset, soff, batch, s, m, sizes, d if j == 0 else rest)
                continue
            u, src = ops[o, UNIT], ops[o, SRC]
            size, i = sizes[dst], sizes[src]
            if _activated(acts, u, fused, o == nops - 1):
                dz = dzs[:m * size]
                call_at(bwd[u], (g.reshape((m, size)), _slot(vals, soff, batch, dst, m, sizes).reshape((m, size)),
                                 dz.reshape((m, size))), None)
            else:
                dz = g
            need_dx = src != 0
            into = need_dx and not gset[src]        # the first gradient of src: straight into its place
            dx = (_slot(gs, soff, batch, src, m, sizes) if into else dxs[:m * i]) if need_dx else dxs[:0]
            h = _slot(vals, soff, batch, src, m, sizes)
            target = again if done_u[u] else grads      # a unit applied again: its gradients added after
            if geo[u, KIND] == CONV:
                _conv_backward(geo[u], dz, h, _slot(vals, soff, batch, dst, m, sizes),
                               _slot(arg, soff, batch, dst, m, sizes), params, target, woff[u], boff[u], need_dx, dx, m,
                               lat[u, 1], sum_at)
            elif geo[u, KIND] == POOL:
                if need_dx:
                    _pool_backward(geo[u], dz, _slot(arg, soff, batch, dst, m, sizes), dx, m, lat[u, 1])
            else:
                w = params[woff[u]:woff[u] + size * i].reshape((size, i))
                dw = target[woff[u]:woff[u] + size * i].reshape((size, i))
                db = target[boff[u]:boff[u] + size] if boff[u] >= 0 else scratch[:size]
                _dense_backward(dz.reshape((m, size)), h.reshape((m, i)), w, need_dx,
                                dx.reshape((m if need_dx else 0, i)), dw, db)
            if done_u[u]:
                _add_to(grads[woff[u]:woff[u] + wlen[u]], again[woff[u]:woff[u] + wlen[u]])
                if boff[u] >= 0:
                    _add_to(grads[boff[u]:boff[u] + blen[u]], again[boff[u]:boff[u] + blen[u]])
            done_u[u] = True
            if need_dx:
                if into:
                    gset[src] = True
                else:
                    _add_to(_slot(gs, soff, batch, src, m, sizes), dx)
        for u in range(units):          # a unit no gradient reached: zeros, as run_backward gives it
            if not done_u[u] and woff[u] >= 0:
                grads[woff[u]:woff[u] + wlen[u]] = 0.0
                if boff[u] >= 0:
                    grads[boff[u]:boff[u] + blen[u]] = 0.0
        # the update, into a copy: the params before it stay as they were
        _copy(spare, params)
        _update(optimizer, opt_at, opt_blocks, spare, grads, s1, s2, s3, lrs[k], hyper, count + k == 0, c1s[k], rc2s[k])
        bad = _first_nonfinite(spare)
        if bad >= 0:
            return k, PARAMS, bad, params, spare
        params, spare = spare, params
    return steps, DONE, -1, params, spare
