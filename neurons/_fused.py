"""Many training steps in one compiled call, for networks of dense, convolution and max-pool
layers, with skips, loopbacks and feedback blocks.

``learn``'s step loop costs, at batch 1, about 150 us a step, nearly all of it Python: walking
the program and the param trees, allocating small arrays, checking every leaf. The kernels of
a small dense network take a few microseconds; those of the benchmark's MLP (784-256-128-10) at
batch 32 about 0.4 ms, and its epoch took 2.0 s step by step against 1.0 s in the chain; the
quickstart CNN's step 0.89 -> 0.61 ms, tiny3conv's 0.82 -> 0.25 ms, the loopback CNN's epoch
(``loop``) 3.8 -> 3.2 s and the feedback block's 2.97 -> 2.27 s.
``plan(net, batch, n)`` gives a ``Runner`` when every layer (and every layer of a feedback block)
is a dense layer whose activation runs as one block (below ``activations.PARALLEL_MIN``
elements: the chain runs it whole), a stride-1 convolution with a ReLU or no activation, by
tap tiles, direct loops or GEMM (``kernels/conv.py``'s choice), or a max-pool, without dropout; skips and
loops accumulate by add, subtract, overwrite or mean, with exact gradients (no loop ``scale``,
no ``coupling="mean"``); the program's last op applies a dense layer; else None.
``Runner.run`` then does a chunk of an epoch's steps in ``kernels/chain.py``, which runs the
program's ops (``graph.py``) with the very kernels the general path calls (their own machine
code, on arguments of the same types, split into the same blocks), and sums gradients in the
order ``graph.run_backward`` does: the params, optimizer state and losses are bit for bit those
of the general path. One pair of ops runs as one: a convolution by tap tiles or GEMM and the
2 x 2 max-pool that alone reads its output (``_pool_in_convolutions``), by the pooled kernels of
``conv_taps`` and ``conv_gemm``, whose every value and comparison is the two layers' (bit for bit
too); at batch 128 quickstart's epoch took 0.72 -> 0.66 s, loop's 2.32 -> 2.18, lenet's 13.1 ->
11.6 with the tap tiles' alone (lenet's 32 -> 64 by GEMM: its backward 15.3 -> 13.1 ms).

Between chunks (``Runner.chunk`` steps, about 50 ms of work at most) control is back in Python,
so Ctrl-C and a progress bar work as they do step by step.

``Network.predict`` runs the same chain forward only (``plan(..., infer=True)``, ``Runner.predict``:
the general path's outputs, bit for bit) when its machine code is at hand and it saves time
(``Runner.gains``): a ``predict`` of iris's 30 flowers took 107 us through the general path, 52
here; on large batches of wide inputs, whose rows the chain copies, the general path stays.

The chain takes 10-15 s to compile. ``Runner.ready`` says whether it is at hand without
compiling; on a cold cache ``learn`` takes general steps while a helper process compiles it
(``_warm.start_chain``), then goes over to it. A chain with convolutions is asked for only after
the first general step (``Runner.later``), whose kernels take seconds to compile; without a helper
that chain is left alone for the run.
"""
import math
from collections import Counter
from typing import NamedTuple

import numpy as np
import numba
from numba import types as nbtypes
from numba.core import config, event

from . import _checks, _tree, graph
from .kernels import activations as kact, chain, conv as kconv, conv_direct, conv_gemm, conv_planes, conv_taps
from .kernels import dense as kdense, maxpool as kpool, objectives as kobj, optim as kopt
from .kernels import _blocks
from .kernels._blocks import block_count, machine_code
from .layers import Activation, Convolution, Dense, Maxpool
from .optimizers import SGD, SGDM, Adam, AdamW, RMSprop

# optimizer class -> (the chain's code for it, its PARALLEL_MIN key, its kernel, its block body)
_SGD, _ADAM = (chain.SGD, "sgd", kopt._sgd, kopt._sgd_body), (chain.ADAM, "adam", kopt._adam, kopt._adam_body)
_OPTIMIZERS = {SGD: _SGD, SGDM: _SGD, Adam: _ADAM, AdamW: _ADAM,
               RMSprop: (chain.RMSPROP, "rmsprop", kopt._rmsprop, kopt._rmsprop_body)}
# a convolution's implementation -> the chain's code for it, its forward and backward block bodies
_CONVS = {kconv.DIRECT: chain.DIRECT, kconv.GEMM: chain.GEMM}
_CONV_BODIES = {chain.DIRECT: (conv_taps._forward_body, conv_direct._backward_direct_body),
                chain.GEMM: (conv_taps._forward_body, conv_gemm._backward_gemm_body),
                chain.TAPS: (conv_taps._forward_body, conv_taps._backward_body),
                chain.POOLED: (conv_taps._forward_pooled_body, conv_taps._backward_pooled_body),
                chain.POOLED_GEMM: (conv_taps._forward_pooled_body, conv_gemm._backward_gemm_pooled_body)}
# a convolution's code -> its code with the max-pool that alone reads its output (``_pool_in_convolutions``)
_POOLED = {chain.TAPS: chain.POOLED, chain.GEMM: chain.POOLED_GEMM}
_POOL_BODIES = {chain.PAIRS: (kpool._forward_2x2_body, kpool._backward_2x2_body),
                chain.ANY: (kpool._forward_any_body, kpool._backward_any_body)}
_ADDRESSES = {}             # Runner._address's, per process
# graph.py's accumulation modes the chain runs ("multiply" is left to the general path)
_MODES = {"add": chain.ADD, "subtract": chain.SUBTRACT, "overwrite": chain.OVERWRITE, "mean": chain.MEAN}
MAX_STEPS = 1024            # steps per chunk at most
CHUNK_SECONDS = 0.05        # and about this much work
_STEP_SECONDS = 5e-6        # a step's cost besides its products (4-50-50-3 at batch 1: 9 us in all)
_FLOPS = 2e9                # the products' speed assumed: tiny serial GEMMs,
_BLOCK_FLOPS = 4e10         # and per thread, those split into blocks (784-256-128-10 at batch 128: 1.1 ms)
_CONV_FLOPS = 2e10          # a convolution's, per thread
_LIGHT_BYTES = 65536        # the values of an inference batch below which no heap setting matters
_OP_SECONDS = 1e-5          # the general path's work around an op (dense: ~8 us)
_COPY_BYTES_PER_SECOND = 1e10
_SIGNATURES = {}            # Runner.signature's, per dtype
_READY = set()              # the dtypes whose chain is compiled in this process


class _WouldCompile(Exception):
    pass


class _Refuse(event.Listener):
    """Stops a compile as it starts (``Runner.ready``)."""

    def on_start(self, ev):
        raise _WouldCompile

    def on_end(self, ev):
        pass


_REFUSE = _Refuse()


class Chunk(NamedTuple):
    """What ``Runner.run`` did.

    ``params``, ``state``: the params and optimizer state after the ``done`` steps finished;
    ``total``: the loss total given, plus ``loss · batch size`` of each of those steps, added in
    order as ``learn`` adds them; ``prev``: what ``learn`` holds as its last good params after
    them (the params at the start of the last finished step, or of the step whose update failed),
    None: as before the chunk; ``error``: None, or ``(kind, message)`` when step ``first + done``
    failed, ``kind`` "loss" (its loss was not finite: nothing of it was applied; the last good
    params are ``prev``) or "params" (its update made a param non-finite: the last good params are
    ``params``, and ``state`` holds that update, as ``learn``'s does)."""
    params: tuple
    state: tuple
    total: float
    done: int
    prev: tuple | None
    error: tuple | None


def plan(net, batch, n_samples, infer=False):
    """A ``Runner`` for training ``net`` at ``batch`` on ``n_samples`` samples (``infer``: for its
    outputs, ``Runner.predict``), or None when the compiled chain does not apply (see the module
    docstring)."""
    if config.DISABLE_JIT or _blocks.MODE != "address":
        return None             # the chain calls the kernels by address, as the block loops do
    if not infer and (type(net.optimizer) not in _OPTIMIZERS or any(f != 1.0 for f in net._grad_factors)):
        return None
    ops = net.program.ops
    last = ops[-1]
    if not isinstance(last, graph.Apply) or last.dst != net.program.output:
        return None
    if any(isinstance(op, graph.Accumulate) and op.mode not in _MODES for op in ops):
        return None
    rows = min(batch, n_samples)        # the largest batch: work grows with the rows
    if type(graph._spec(net.layers, last)) is not Dense:
        return None
    activating = _activating(net, net._fused and not infer)
    for key, lay, shape_in, _ in _units(net):
        kind = type(lay)
        if kind is Convolution:
            if lay.dropout or lay.stride != (1, 1) or lay.activation not in (Activation.RELU, Activation.LINEAR):
                return None
            if _conv_code(lay, shape_in[0]) is None:
                return None
        elif kind is Dense:
            if lay.dropout or key in activating and block_count(rows, rows * lay.units, kact.PARALLEL_MIN) != 1:
                return None     # the chain runs a dense layer's activation whole, in one thread
        elif kind is not Maxpool:
            return None
    return Runner(net, batch, n_samples, infer)


def _activating(net, fused):
    """The keys (as ``_units``') of the units whose activation the chain runs: every dense one
    not linear, but (``fused``) a fused loss's softmax applied only in the program's last op."""
    ops = net.program.ops
    applied = Counter((op.layer, op.sub) for op in ops if isinstance(op, graph.Apply))
    ends = (ops[-1].layer, ops[-1].sub)
    return {key for key, lay, _, _ in _units(net) if type(lay) is Dense and lay.activation.value != kact.LINEAR
            and not (fused and key == ends and applied[key] == 1)}


def _units(net):
    """``(key, layer, in_shape, out_shape)`` of each unit ``chain.train_steps`` runs, in the order
    of the params' leaves: a layer (key ``(layer, -1)``), or a layer of a feedback block (``(block,
    i)``), whose one set of params every op applying it reads."""
    units = []
    for l, lay in enumerate(net.layers):
        if lay.kind == "feedback":
            units += [((l, j), sub, *shapes) for j, (sub, shapes) in
                      enumerate(zip(lay.layers, lay.inside(net.shapes[l][0])))]
        else:
            units.append(((l, -1), lay, *net.shapes[l]))
    return units


def _conv_code(lay, channels):
    """The chain's code for the implementation ``conv.py`` picks for convolution ``lay`` over
    ``channels`` (TAPS where its backward is ``conv_taps``'), or None: one the chain does not run."""
    code = _CONVS.get(kconv.implementation(lay.filters, channels, *lay.kernel, lay.stride))
    if code is not None and kconv.taps_backward(lay.filters, lay.kernel, lay.stride, lay.padding, lay.dilation):
        return chain.TAPS
    return code


def _geometry(lay, shape_in, shape_out):
    """A unit's row of ``chain.train_steps``' ``geo``."""
    g = np.zeros(chain.GEO, np.int64)
    if type(lay) is Dense:
        return g
    g[chain.C:chain.OW + 1] = tuple(shape_in) + tuple(shape_out)
    g[chain.KH], g[chain.KW] = lay.kernel
    if type(lay) is Convolution:
        g[chain.KIND] = chain.CONV
        g[chain.IMPL] = _conv_code(lay, shape_in[0])
        g[chain.PH], g[chain.PW] = lay.padding
        g[chain.DH], g[chain.DW] = lay.dilation
        g[chain.RELU] = lay.activation is Activation.RELU
    else:
        g[chain.KIND] = chain.POOL
        g[chain.IMPL] = chain.PAIRS if lay.kernel == (2, 2) and lay.stride == (2, 2) else chain.ANY
        g[chain.SH], g[chain.SW] = lay.stride
        g[chain.MIN] = kpool.PARALLEL_MIN
    return g


def _pool_in_convolutions(ops, ins, geo, output):
    """``ops`` with each convolution by tap tiles or GEMM whose output only a 2 x 2 max-pool with
    stride 2 reads taking that pool into its own passes (POOLED or POOLED_GEMM in ``geo``, which
    changes: the pool's op gone, the convolution's DST the pool's), where each of the two is
    applied once."""
    applies = ops[ops[:, chain.KIND_OP] == chain.APPLY]
    applied = Counter(applies[:, chain.UNIT].tolist())
    read = Counter(applies[:, chain.SRC].tolist() + list(ins))
    keep = np.ones(len(ops), bool)
    for o, op in enumerate(ops):
        u, slot = op[chain.UNIT], op[chain.DST]
        if (op[chain.KIND_OP] != chain.APPLY or geo[u, chain.KIND] != chain.CONV or geo[u, chain.IMPL] not in _POOLED
                or applied[u] != 1 or read[slot] != 1 or slot == output):
            continue
        readers = [p for p in range(o + 1, len(ops)) if ops[p, chain.KIND_OP] == chain.APPLY
                   and ops[p, chain.SRC] == slot]
        v = ops[readers[0], chain.UNIT] if readers else -1
        if v >= 0 and geo[v, chain.KIND] == chain.POOL and geo[v, chain.IMPL] == chain.PAIRS and applied[v] == 1:
            geo[u, chain.IMPL] = _POOLED[geo[u, chain.IMPL]]
            op[chain.DST] = ops[readers[0], chain.DST]
            keep[readers[0]] = False
    return ops[keep]


class Runner:
    """Training steps of one network at one batch size: ``steps`` to an epoch, ``chunk`` to a call
    of ``run`` at most (about ``CHUNK_SECONDS`` of work); or (``infer``) its outputs, ``batch`` rows
    at a time (``predict``)."""

    def __init__(self, net, batch, n_samples, infer=False):
        self.batch, self.n, self.infer = batch, n_samples, infer
        self.steps = -(-n_samples // batch)             # per epoch
        self.dtype = np.dtype(net.dtype)
        units = _units(net)
        index = {key: u for u, (key, *_) in enumerate(units)}
        self.acts = np.array([lay.activation.value if type(lay) is Dense else kact.LINEAR for _, lay, _, _ in units],
                             np.int64)
        self.geo = np.array([_geometry(lay, i, o) for _, lay, i, o in units], np.int64)
        # the program: one row of ops each, the slots an accumulation reads in ins, each slot's size
        program = net.program
        sizes = np.zeros(program.slots, np.int64)
        sizes[0] = int(np.prod(net.input_shape))
        ops, ins = np.zeros((len(program.ops), chain.OPS), np.int64), []
        for row, op in zip(ops, program.ops):
            row[chain.DST] = op.dst
            if isinstance(op, graph.Apply):
                u = index[op.layer, op.sub]
                row[chain.KIND_OP], row[chain.UNIT], row[chain.SRC] = chain.APPLY, u, op.src
                sizes[op.dst] = int(np.prod(units[u][3]))
            else:
                row[chain.KIND_OP], row[chain.MODE] = chain.ACC, _MODES[op.mode]
                row[chain.NSRC], row[chain.FROM] = len(op.srcs), len(ins)
                ins += op.srcs
                sizes[op.dst] = int(np.prod(op.shape))
        ops = _pool_in_convolutions(ops, ins, self.geo, program.output)
        self.ops, self.ins, self.sizes = ops, np.array(ins, np.int64), sizes
        self.soff = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        shapes = _tree.leaves(net._param_shapes)
        self.shapes = [a.shape for a in shapes]
        self.offsets = np.cumsum([0] + [a.size for a in shapes]).tolist()
        woff, boff, wlen, blen, leaf = [], [], [], [], 0
        for _, lay, _, _ in units:
            if type(lay) is Maxpool:
                woff.append(-1)
                boff.append(-1)
                wlen.append(0)
                blen.append(0)
                continue
            woff.append(self.offsets[leaf])
            wlen.append(shapes[leaf].size)
            boff.append(self.offsets[leaf + 1] if lay.bias else -1)
            blen.append(shapes[leaf + 1].size if lay.bias else 0)
            leaf += 2 if lay.bias else 1
        self.woff, self.boff = np.array(woff, np.int64), np.array(boff, np.int64)
        self.wlen, self.blen = np.array(wlen, np.int64), np.array(blen, np.int64)
        self.names = [name for name, _ in _tree.named(net._param_shapes, "params", "[{}]")]
        self.fused = bool(net._fused) and not infer
        activating = _activating(net, self.fused)          # only their activations' kernels are looked up
        self.activated = [key in activating for key, *_ in units]
        self.clip = net.clip is not None
        self.lo, self.hi = net.clip if net.clip else (0.0, 0.0)
        opt = net.optimizer
        self.opt = opt
        self.code, kind, serial, body = _OPTIMIZERS.get(type(opt), _SGD)       # (not used in inference)
        # the update runs over the flat params: in blocks when its kernel would split that many
        self.opt_blocks = block_count(self.offsets[-1], self.offsets[-1], kopt.PARALLEL_MIN[kind])
        self.kernel = serial if self.opt_blocks == 1 else body
        self.objective = net.objective.value
        self.fwd = None             # the kernels' addresses, at the first run (``_address``)
        # whether a cold cache's helper compiles the chain only after the first general step
        # (``learn``): with convolutions, whose kernels take seconds to compile there
        self.later = bool((self.geo[:, chain.KIND] != chain.DENSE).any())
        # the optimizers' hyperparameters as their update passes them (SGD's momentum: 0)
        self.hyper = np.array([float(getattr(opt, "_" + h if h == "decoupled" else h, 0.0)) for h in chain.HYPER])
        rows, seconds, serial = min(batch, n_samples), _STEP_SECONDS, True
        for op in ops[ops[:, chain.KIND_OP] == chain.APPLY]:
            g, u, i = self.geo[op[chain.UNIT]], sizes[op[chain.DST]], sizes[op[chain.SRC]]
            u *= 4 if g[chain.IMPL] in _POOLED.values() and g[chain.KIND] == chain.CONV else 1     # the pool's DST
            if g[chain.KIND] == chain.DENSE:
                blocks = block_count(u, rows * u * i, kdense.SPLIT)     # (forward_blocks, not compiled)
                serial = serial and blocks == 1
                seconds += 6.0 * rows * u * i / (_FLOPS if blocks == 1 else _BLOCK_FLOPS * blocks)
            else:               # a convolution's products, or a max-pool's pass over its input
                serial = False
                seconds += (6.0 * rows * u * g[chain.C] * g[chain.KH] * g[chain.KW] if g[chain.KIND] == chain.CONV
                            else 20.0 * rows * i) / (_CONV_FLOPS * _blocks.BLOCKS)
        self.chunk = int(max(1, min(MAX_STEPS, CHUNK_SECONDS / seconds)))
        self._none, self._no_rows = np.empty(0, self.dtype), np.empty((0, 1), self.dtype)
        self.outputs = int(sizes[ops[-1, chain.DST]])
        # inference with no parallel region and small buffers (``predict``: no ``running()``)
        self.light = bool(infer and serial and rows * int(sizes.sum()) * self.dtype.itemsize < _LIGHT_BYTES)
        # what the chain saves in inference, Python's work around each op, against what it adds: a
        # copy of each batch's input (mlp's predict at batch 1000: 0.3 of 3.1 ms, 8 % slower)
        self.gains = len(ops) * _OP_SECONDS > rows * int(sizes[0]) * self.dtype.itemsize / _COPY_BYTES_PER_SECOND

    def __getstate__(self):
        state = dict(self.__dict__)
        state["fwd"] = None             # the kernels' addresses are this process's
        return state

    def _address(self):
        """The machine code of the activation, loss, optimizer and layer kernels this network
        uses (only they compile), for the argument types ``chain.train_steps`` passes them; kept
        per process (Numba's types take about 0.5 ms to build and look up)."""
        key = (self.dtype.str, tuple(self.activated), tuple(self.acts.tolist()),
               tuple(map(tuple, self.geo[:, :2].tolist())), self.fused, self.objective, self.code, self.opt_blocks > 1,
               self.infer)
        if key not in _ADDRESSES:
            _ADDRESSES[key] = self._look_up()
        fwd, self.bwd, self.lat, self.sum_at, self.loss_at, self.opt_at = _ADDRESSES[key]
        self.fwd = fwd          # last: another thread's predict takes fwd set as all of them set

    def _look_up(self):
        scalar, flag, ints = nbtypes.float64, nbtypes.boolean, nbtypes.int64
        flat, rows, partial, planes = (nbtypes.Array(numba.from_dtype(self.dtype), ndim, "C") for ndim in (1, 2, 3, 4))
        args = nbtypes.Array(nbtypes.int32, 4, "C")
        fwd, bwd = np.zeros(len(self.acts), np.int64), np.zeros(len(self.acts), np.int64)
        for l, code in enumerate(self.acts.tolist()):
            if self.activated[l]:
                fwd[l] = machine_code(kact.FORWARD[code], (rows, rows))[0]
                if not self.infer:
                    bwd[l] = machine_code(kact.BACKWARD[code], (rows, rows, rows))[0]
        # each block body as ``_blocks.parallel``'s loops call it: (blk, blocks, *the kernel's args)
        lat, sum_at, block = np.zeros((len(self.acts), 2), np.int64), 0, (nbtypes.intp, nbtypes.intp)
        for l, (kind, impl) in enumerate(self.geo[:, :2].tolist()):
            if kind == chain.CONV:
                forward, backward = _CONV_BODIES[impl]
                pooled = impl in _POOLED.values()       # the max-pool's y and arg, its dy, arg and y
                lat[l, 0] = machine_code(forward, block + (planes, planes, flat, flag) + (ints,) * 4 + (planes,)
                                         + ((args,) if pooled else ()))[0]
                taken = (planes,) if impl == chain.DIRECT else (rows, ints, ints)     # k, or kt (kr), kh, kw
                if not self.infer:
                    lat[l, 1] = machine_code(backward, block + ((planes, args) if pooled else (planes,)) + (planes,) * 2
                                             + taken + (ints,) * 4 + (flag, planes, partial, rows))[0]
            elif kind == chain.POOL:
                forward, backward = _POOL_BODIES[impl]
                lat[l, 0] = machine_code(forward, block + ((planes, planes, args) if impl == chain.PAIRS
                                                           else (planes,) + (ints,) * 4 + (planes, args)))[0]
                if not self.infer:
                    lat[l, 1] = machine_code(backward, block + (planes, args, planes))[0]
        if self.infer:              # the forward kernels only
            _blocks.launch()
            return fwd, bwd, lat, 0, 0, 0
        if (self.geo[:, chain.KIND] == chain.CONV).any():      # the sum of a convolution's partials
            sum_at, returns = machine_code(conv_planes.sum_blocks, (rows,))
            if returns != flat:
                raise TypeError(f"sum_blocks returns {returns}, not {flat}")
        if self.fused:
            loss_at, returns = machine_code(kobj.softmax_cross_entropy, (rows, rows))
            expected = nbtypes.Tuple((scalar, rows, rows))
        else:
            loss_at, returns = machine_code(kobj.OBJECTIVES[self.objective], (rows, rows, flag, scalar, scalar))
            expected = nbtypes.Tuple((scalar, rows))
        if returns != expected:         # what train_steps takes the result as
            raise TypeError(f"the loss kernel returns {returns}, not {expected}")
        opt = {chain.SGD: (flat,) * 3 + (scalar,) * 3 + (flag,),
               chain.ADAM: (flat,) * 4 + (scalar,) * 5 + (flag,) + (scalar,) * 2,
               chain.RMSPROP: (flat,) * 5 + (scalar,) * 5}[self.code]
        if self.opt_blocks > 1:
            opt = block + opt           # the body's (blk, blocks, ...)
        _blocks.launch()            # before the chain, which may call the shared parallel loop, loads
        return fwd, bwd, lat, sum_at, loss_at, machine_code(self.kernel, opt)[0]

    def _arguments(self, x, y, order, first, steps, lrs, c1s, rc2s, count, flat, s1, s2, s3, losses, addresses,
                   outs=None):
        """``chain.train_steps``' arguments (``outs`` None: training's, (0, 1))."""
        fwd, bwd, lat, sum_at, loss_at, opt_at = addresses
        return (x, y, order, self.batch, first, steps, self.ops, self.ins, self.sizes, self.soff, self.acts, fwd, bwd,
                self.woff, self.boff, self.wlen, self.blen, self.geo, lat, sum_at, self.fused, loss_at, self.clip,
                self.lo, self.hi, self.code, opt_at, self.opt_blocks, self.hyper, lrs, c1s, rc2s, count, flat,
                np.empty_like(flat), s1, s2, s3, losses, self._no_rows if outs is None else outs)

    def signature(self):
        """The argument types ``run`` calls ``chain.train_steps`` with (the same for every chain
        of one dtype: everything about the network is an argument)."""
        if self.dtype.str in _SIGNATURES:
            return _SIGNATURES[self.dtype.str]
        flat, ints, floats, rows = np.empty(0, self.dtype), np.empty(0, np.int64), np.empty(0), np.empty((0, 1), self.dtype)
        table = np.empty((0, 1), np.int64)
        signature = _SIGNATURES[self.dtype.str] = tuple(numba.typeof(a) for a in self._arguments(
            rows, rows, ints, 0, 0, floats, floats, floats, 0, flat, flat, flat, flat, floats,
            (ints, ints, table, 0, 0, 0)))
        return signature

    def ready(self, look=True):
        """Whether the chain's machine code is at hand without compiling it: in this process or
        (``look``) in the cache (loaded then). A compile that would start is refused, not run (10 s
        on a cold start: ``learn`` takes general steps meanwhile, while a helper compiles it,
        ``_warm.py``)."""
        if self.dtype.str in _READY:
            return True
        signature = self.signature()
        if signature not in chain.train_steps.overloads:
            if not look:
                return False
            try:
                with event.install_listener("numba:compile", _REFUSE):
                    chain.train_steps.compile(signature)
            except _WouldCompile:
                return False
        _READY.add(self.dtype.str)
        return True

    def run(self, params, state, x, y, order, epoch, first, steps, total=0.0):
        """Steps ``first .. first + steps - 1`` of epoch ``epoch`` (0-based) from ``params`` and the
        optimizer ``state``; returns a ``Chunk``. ``x``, ``y``: the checked training set (N, ...),
        ``order``: the epoch's order of its rows. Nothing given is modified."""
        if not 0 <= first <= first + steps <= self.steps:
            raise ValueError(f"steps {first}..{first + steps - 1} are not within the epoch's {self.steps}")
        x2 = np.ascontiguousarray(x, self.dtype).reshape(len(x), -1)
        y2 = np.ascontiguousarray(y, self.dtype).reshape(len(y), -1)
        flat = self._flat(params)
        fields = [f for f in state._fields if f != "count"]
        slots = [self._flat(getattr(state, f)) for f in fields]
        s1, s2, s3 = (slots + [self._none] * 3)[:3]
        count = int(state.count)
        lrs, c1s, rc2s, failed = self._rates(count, steps)
        steps = len(lrs)
        losses = np.empty(steps, np.float64)
        if self.fwd is None:
            self._address()
        try:
            done, status, bad, now, before = chain.train_steps(*self._arguments(
                x2, y2, np.asarray(order, np.int64), first, steps, lrs, c1s, rc2s, count, flat, s1, s2, s3, losses,
                (self.fwd, self.bwd, self.lat, self.sum_at, self.loss_at, self.opt_at)))
        except SystemError as e:
            # Ctrl-C while the chain looked a kernel up (the first call: Python runs, and takes the
            # signal): nothing of the chunk is kept, as for a step cut short
            cause = e
            while isinstance(cause, SystemError) and cause.__cause__ is not None:
                cause = cause.__cause__
            if isinstance(cause, KeyboardInterrupt):
                raise KeyboardInterrupt from None
            raise
        if failed is not None and done == steps - 1 and status != chain.LOSS:
            raise failed        # the step's loss was finite, and its update needs the rate
        for k, loss in enumerate(losses[:done].tolist()):       # in learn's order: the same float sum
            total += loss * min(self.batch, self.n - (first + k) * self.batch)
        error = None
        step = first + done
        if status == chain.LOSS:
            error = ("loss", f"the loss became {float(losses[done])} at epoch {epoch + 1}, batch {step + 1}")
        elif status == chain.PARAMS:
            error = ("params", f"the update at epoch {epoch + 1}, batch {step + 1} made {self._leaf(bad)} "
                               "non-finite")
        new = self._tree(params, now) if done else params
        if status == chain.PARAMS:
            prev = new
            count += 1          # as in learn, the state holds the failed update
        else:
            prev = self._tree(params, before) if done else None
        if done or status == chain.PARAMS:
            state = type(state)(count + done, *[self._tree(getattr(state, f), s) if s.size else getattr(state, f)
                                                for f, s in zip(fields, slots)])
        return Chunk(new, state, total, done, prev, error)

    def predict(self, leaves, x):
        """The network's outputs (N, O) for the checked ``x`` (N, ...), ``batch`` rows at a time,
        from the param arrays ``leaves`` (checked but for finiteness); None if one of them holds a
        NaN or inf (nothing has run: ``check_params`` says which). Needs ``infer``."""
        flat = self._concat(leaves)
        if not _checks.all_finite(flat):
            return None
        n = len(x)
        outs = np.empty((n, self.outputs), self.dtype)
        if self.fwd is None:
            self._address()
        none, floats = self._none, np.empty(0)
        chain.train_steps(*self._arguments(
            x.reshape(n, -1), self._no_rows, np.arange(n, dtype=np.int64), 0, -(-n // self.batch), floats, floats,
            floats, 0, flat, none, none, none, floats, (self.fwd, self.bwd, self.lat, self.sum_at, self.loss_at,
                                                        self.opt_at), outs))
        return outs

    def _flat(self, tree):
        """The leaves of a params-shaped tree in one new flat array (empty if its leaves are)."""
        return self._concat(_tree.leaves(tree))

    def _concat(self, leaves):
        if not leaves[0].size:
            return self._none
        return np.concatenate([a.reshape(-1) for a in leaves])

    def _tree(self, like, flat):
        o = self.offsets
        return _tree.rebuild(like, [flat[o[j]:o[j + 1]].reshape(s) for j, s in enumerate(self.shapes)])

    def _leaf(self, index):
        """The name (``params[i][j]``) of the leaf holding flat param ``index``."""
        return self.names[int(np.searchsorted(self.offsets, index, side="right")) - 1]

    def _rates(self, count, steps):
        """Per step of the chunk: the learning rate, and Adam's bias corrections (as ``update``
        computes them, in Python floats); and None, or the ValueError of a schedule that has no
        rate for a step (too large for a float): the chunk then ends with that step, its rate
        NaN, and ``run`` raises the error where ``update`` would, after the step's loss."""
        opt, failed = self.opt, None
        if isinstance(opt.lr, float):
            lrs = np.full(steps, opt.lr)
        else:
            rates = []
            for k in range(steps):
                try:
                    rates.append(opt._lr(count + k))
                except ValueError as error:
                    rates.append(math.nan)
                    failed = error
                    break
            lrs = np.array(rates, np.float64)
        steps = len(lrs)
        if self.code != chain.ADAM:
            return lrs, np.ones(steps), np.ones(steps), failed
        c1s = np.array([1.0 - opt.beta1 ** t for t in range(count + 1, count + steps + 1)], np.float64)
        rc2s = np.array([math.sqrt(1.0 - opt.beta2 ** t) for t in range(count + 1, count + steps + 1)], np.float64)
        return lrs, c1s, rc2s, failed
