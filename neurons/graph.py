"""The network as a straight-line program: skips, loopbacks and feedback blocks unrolled.

A ``Network`` compiles once into a list of instructions over numbered value slots (slot 0 is
the network input). ``Apply`` runs one layer (or one layer of a feedback block) on a slot;
``Accumulate`` combines slots elementwise. Loops and blocks are unrolled, so the same layer
appears once per pass and reads the same params: back-propagation through the program is
back-propagation through time, every reused value and every tied weight receives the sum of
its gradients, with no special case.

Semantics (SPEC §6), with X[i] the value entering layer i:

- skip ``connect(a, b)``: ``X[b] = acc(prev, X[a])`` with the skip accumulation.
- loopback ``(outof=o, into=s, n)``: pass 0 runs layers s..o on X[s]; pass k feeds
  ``y[k-1]`` (plus X[s] with inskips) back into layer s; layer o gives ``acc(y0..yn)``.
  Skips into layers s+1..o are applied on every pass; a skip out of the segment reads the
  last pass; the skip into layer s itself defines X[s] and is applied once.
- block: ``z1 = L(x)``, ``zr = L(acc(z[r-1], x) if inskips else z[r-1])``; output ``zm`` or
  ``acc(zm, z1..z[m-1])`` with outskips.
"""
from typing import NamedTuple

import numpy as np

from .kernels.dropout import GAMMA, M1, shift, splitmix64

# how ``acc`` combines what arrives at a layer: the one list of accumulation modes. Skips and
# loopbacks take any; a feedback block's (``layers.Feedback``) all but "overwrite", which would
# drop the block's input or its earlier passes
MODES = ("add", "subtract", "multiply", "overwrite", "mean")
SKIP_MODES = LOOP_MODES = MODES
BLOCK_MODES = tuple(m for m in MODES if m != "overwrite")


class Apply(NamedTuple):
    layer: int          # index in the network
    sub: int            # index inside a feedback block, or -1
    src: int
    dst: int


class Accumulate(NamedTuple):
    mode: str
    srcs: tuple
    dst: int
    shape: tuple        # per-sample shape of the result


class Program(NamedTuple):
    ops: tuple
    slots: int
    output: int


def compile_program(layers, shapes, skips, loops, skip_mode, loop_mode):
    """Unroll a network description into a ``Program``.

    ``shapes[i]`` is ``(in_shape, out_shape)`` of layer i; ``skips`` maps ``into -> infrom``;
    ``loops`` maps ``into -> (outof, iterations, inskips)``.
    """
    ops = []
    entering = {}                   # layer -> slot of the value entering it (latest pass)
    counter = [1]

    def new():
        counter[0] += 1
        return counter[0] - 1

    def acc(mode, srcs, shape):
        dst = new()
        ops.append(Accumulate(mode, tuple(srcs), dst, tuple(shape)))
        return dst

    def enter(i, cur, apply_skip=True):
        if apply_skip and i in skips:
            cur = acc(skip_mode, (cur, entering[skips[i]]), shapes[i][0])
        entering[i] = cur
        return cur

    def run(i, cur):
        lay = layers[i]
        if lay.kind != "feedback":
            dst = new()
            ops.append(Apply(i, -1, cur, dst))
            return dst
        x, zs, z = cur, [], cur
        for r in range(lay.loops):
            if r > 0 and lay.inskips:
                z = acc(lay.accumulation, (z, x), shapes[i][0])
            for j in range(len(lay.layers)):
                dst = new()
                ops.append(Apply(i, j, z, dst))
                z = dst
            zs.append(z)
        if lay.outskips and lay.loops > 1:
            return acc(lay.accumulation, [zs[-1]] + zs[:-1], shapes[i][1])
        return zs[-1]

    cur, i = 0, 0
    while i < len(layers):
        if i in loops:
            outof, iterations, inskips = loops[i]
            x_into = enter(i, cur)
            outs, inp = [], x_into
            for k in range(iterations + 1):
                if k > 0:
                    inp = acc("add", (outs[-1], x_into), shapes[i][0]) if inskips else outs[-1]
                    entering[i] = inp
                y = run(i, inp)
                for j in range(i + 1, outof + 1):
                    y = run(j, enter(j, y))
                outs.append(y)
            cur = acc(loop_mode, outs, shapes[outof][1]) if iterations > 0 else outs[0]
            i = outof + 1
        else:
            cur = run(i, enter(i, cur))
            i += 1
    return Program(tuple(ops), counter[0], cur)


# ----------------------------------------------------------------------------- accumulation

def accumulate(mode, values):
    """Elementwise ``acc(v0, v1, ...)``; all values already share one shape."""
    if mode == "overwrite":
        return values[-1]
    if mode == "add" or mode == "mean":
        out = values[0] + values[1]
        for v in values[2:]:
            out += v
        if mode == "mean":
            out *= out.dtype.type(1.0 / len(values))
        return out
    if mode == "subtract":
        out = values[0] - values[1]
        for v in values[2:]:
            out -= v
        return out
    out = values[0] * values[1]
    for v in values[2:]:
        out *= v
    return out


def accumulate_backward(mode, values, g):
    """Gradients of ``accumulate(mode, values)`` for each value, given ``g``."""
    n = len(values)
    if mode == "overwrite":
        return [None] * (n - 1) + [g]
    if mode == "add":
        return [g] * n
    if mode == "mean":
        gm = g * g.dtype.type(1.0 / n)
        return [gm] * n
    if mode == "subtract":
        neg = -g
        return [g] + [neg] * (n - 1)
    grads = []
    for j in range(n):
        out = g
        for k, v in enumerate(values):
            if k != j:
                out = out * v
        grads.append(out)
    return grads


# ----------------------------------------------------------------------------- execution

def _mix(seed, k):
    """A 63-bit seed for op ``k`` from a step seed: splitmix64 of ``seed·γ + (k + 1)·M1`` (mod 2^64)."""
    z = (int(seed) * int(GAMMA) + (k + 1) * int(M1)) & 0xFFFFFFFFFFFFFFFF
    return int(splitmix64(np.uint64(z))) >> 1


def _spec(layers, op):
    lay = layers[op.layer]
    return lay if op.sub < 0 else lay.layers[op.sub]


def _param(params, op):
    p = params[op.layer]
    return p if op.sub < 0 else p[op.sub]


def _in_shape(shapes, layers, op):
    if op.sub < 0:
        return shapes[op.layer][0]
    return layers[op.layer].inside(shapes[op.layer][0])[op.sub][0]


def run_forward(program, layers, shapes, params, x, train=False, seed=0, activate_last=True, running=None, row=0):
    """Run the program; returns ``(output, values, caches)``.

    ``activate_last=False`` leaves the final layer's activation out (for a fused loss).
    ``row``: the place of ``x``'s first sample in its batch; the dropout masks are that batch's,
    from that row on (data-parallel training: a rank's share of the batch).
    ``running``: a dict ``(layer, sub) -> state`` for the layers with running state (batch
    normalization). Each application of such a layer reads its entry and puts back the state it
    hands on (in training the updated one), so a layer applied several times (a loop, a feedback
    block) updates its one state once per pass, in order. The dict's arrays are never written to.
    """
    n = x.shape[0]
    values = [None] * program.slots
    values[0] = x
    caches = [None] * len(program.ops)
    last = len(program.ops) - 1
    for k, op in enumerate(program.ops):
        if isinstance(op, Apply):
            spec = _spec(layers, op)
            xin = values[op.src].reshape((n,) + _in_shape(shapes, layers, op))
            activate = activate_last or k != last
            if running is not None and (op.layer, op.sub) in running:
                key = (op.layer, op.sub)
                values[op.dst], caches[k], running[key] = spec.forward_state(_param(params, op), running[key],
                                                                             xin, train)
            else:
                sk = 0                  # the op's dropout seed, drawn only where a mask is (a few µs)
                if train and getattr(spec, "dropout", None):
                    sk = _mix(seed, k) if not row else shift(_mix(seed, k), row * _out_size(shapes, layers, op))
                values[op.dst], caches[k] = spec.forward(_param(params, op), xin, train, sk, activate)
        else:
            shape = (n,) + op.shape
            values[op.dst] = accumulate(op.mode, [values[s].reshape(shape) for s in op.srcs])
    return values[program.output], values, caches


def _out_size(shapes, layers, op):
    """Values per sample that ``op`` puts out."""
    shape = shapes[op.layer][1] if op.sub < 0 else layers[op.layer].inside(shapes[op.layer][0])[op.sub][1]
    return int(np.prod(shape))


def run_backward(program, layers, params, values, caches, dout, activate_last=True):
    """Back-propagate ``dout`` through the program; returns grads shaped like ``params``.

    Each layer's and each tied layer's param gradient is the sum over every place it was applied.
    """
    grads = [None] * program.slots
    grads[program.output] = dout
    pgrads = {}
    last = len(program.ops) - 1
    for k in range(last, -1, -1):
        op = program.ops[k]
        g = grads[op.dst]
        if g is None:
            continue
        grads[op.dst] = None
        if isinstance(op, Apply):
            spec = _spec(layers, op)
            need_dx = op.src != 0
            g = g.reshape(values[op.dst].shape)
            dx, dp = spec.backward(_param(params, op), caches[k], g, need_dx, activate_last or k != last)
            key = (op.layer, op.sub)
            if key in pgrads:
                pgrads[key] = tuple(a + b for a, b in zip(pgrads[key], dp))
            else:
                pgrads[key] = dp
            if need_dx:
                _add(grads, values, op.src, dx)
        else:
            shape = g.shape
            vals = [values[s].reshape(shape) for s in op.srcs]
            for s, d in zip(op.srcs, accumulate_backward(op.mode, vals, g)):
                if d is not None and s != 0:
                    _add(grads, values, s, d)
    out = []
    for i, lay in enumerate(layers):
        if lay.kind == "feedback":
            out.append(tuple(pgrads.get((i, j)) or _zeros(params[i][j]) for j in range(len(lay.layers))))
        else:
            out.append(pgrads.get((i, -1)) or _zeros(params[i]))
    return tuple(out)


def _add(grads, values, slot, d):
    d = d.reshape(values[slot].shape)
    if grads[slot] is None:
        grads[slot] = d
    else:
        grads[slot] = grads[slot] + d


def _zeros(entry):
    return tuple(np.zeros_like(a) for a in entry)
