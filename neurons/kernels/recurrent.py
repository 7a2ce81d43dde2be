"""Recurrent layers over sequences: a tanh RNN, an LSTM and a GRU, as ``torch.nn.RNN / LSTM / GRU``
(one layer, zero initial state, batch first).

With ``H`` units and ``G`` gates (1, 4, 3), ``W_ih (G·H, F)``, ``W_hh (G·H, H)``, ``b_ih`` and
``b_hh (G·H,)``, gates in PyTorch's order, for each step ``t`` (``h_{-1} = c_{-1} = 0``):

- rnn: ``h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)``
- lstm: ``[i, f, g, o] = x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh``, with ``i, f, o`` through a
  sigmoid and ``g`` through tanh; ``c_t = f c_{t-1} + i g``, ``h_t = o tanh(c_t)``
- gru: ``[r, z] = σ(x_t W_i[rz]^T + b_i[rz] + h_{t-1} W_h[rz]^T + b_h[rz])``,
  ``n = tanh(x_t W_in^T + b_in + r (h_{t-1} W_hn^T + b_hn))``, ``h_t = (1 - z) n + z h_{t-1}``

How the work is laid out: one block of samples per thread, each running every step on its own
samples (they do not interact, so the threads never wait for each other inside the sequence):
two parallel launches a training step, one forward and one backward. Each step's input sits
beside the previous step's output in ``xh (N, T, F + H)``, ``[x_t, h_{t-1}]`` (``h_{-1} = 0``).
Forward, a block projects its samples' every step in one GEMM, ``x W_ih^T + b`` (both biases
folded in where they add), then per step adds ``h_{t-1} W_hh^T`` (``matmul_add``, over the
block's samples) and applies the gates. Backward runs the steps in reverse, writing each step's
gate gradients ``dg`` and ``dh_{t-1} = dg_t W_hh``; then, one GEMM each, ``dx = dg W_ih`` and
its share of the weights' gradient ``dg^T [x, h_prev]`` (``dW_ih`` and ``dW_hh`` side by side),
summed over the blocks afterwards. Activated gates are kept for the backward pass
(``σ' = s (1 - s)``, ``tanh' = 1 - t²``), and so are ``c_t`` and ``tanh(c_t)`` (lstm) and ``h_{t-1} W_h^T + b_hn``
(gru, for the reset gate's gradient). Inference (``train=False``) runs the same bodies and keeps
none of it, a few samples at a time through every step (see the forward bodies): the same bits,
1.3-1.7x as fast (batch 1000, 128 units).
"""
import functools
import math

import llvmlite.ir as ir
import numpy as np
from numba import types
from numba.core import config
from numba.extending import intrinsic, overload

from ._blocks import block_count, parallel
from ._config import FASTMATH, jit, span
from .blas import gemm
from .tiles import aligned_empty, matmul_add, matmul_bias, matmul_set, matmul_set_at

RNN, LSTM, GRU = 0, 1, 2
GATES = (1, 4, 3)
# below this many multiply-adds in the recurrence (T·N·G·H·H) one block runs it, from Python
SPLIT = 200_000


# ----------------------------------------------------------------------------- sigmoid and tanh
# float32 gates go through the exp below, written as straight-line arithmetic and selects so that
# LLVM vectorises the gate loops: libm's expf and tanhf are calls, one element at a time (tanhf
# took 61 ns an element here, this tanh 2.5; the LSTM's gates took longer than its products).
# float64 uses libm, as the rest of the library does.

@intrinsic
def _f32_from_bits(typingctx, bits):
    """The float32 whose bit pattern is the low 32 bits of the integer ``bits``."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        low = builder.trunc(args[0], ir.IntType(32)) if bits.bitwidth > 32 else args[0]
        return builder.bitcast(low, ir.FloatType())
    return types.float32(bits), codegen


# as ``jit``, but the sums are evaluated as written (no ``reassoc``): the argument reduction
# ``x - n·ln2_hi - n·ln2_lo`` keeps ln2 to 40 bits only in that order (reassociated, the
# sigmoid's far tail was off by 4.5 ulp)
_jit_ordered = functools.partial(jit, fastmath=FASTMATH - {"reassoc"})

_F = np.float32
_EXP_LO, _EXP_HI = _F(-87.3), _F(88.3)            # 2^n stays a normal float32
_LOG2E, _LN2_HI, _LN2_LO = _F(1.44269504088896341), _F(0.693359375), _F(-2.12194440e-4)
_P0, _P1, _P2 = _F(1.9875691500e-4), _F(1.3981999507e-3), _F(8.3334519073e-3)
_P3, _P4, _P5 = _F(4.1665795894e-2), _F(1.6666665459e-1), _F(5.0000001201e-1)
_T0, _T1, _T2 = _F(-5.70498872745e-3), _F(2.06390887954e-2), _F(-5.37397155531e-2)
_T3, _T4 = _F(1.33314422036e-1), _F(-3.33332819422e-1)
_ONE, _TWO, _HALF, _SMALL, _ZERO, _INF = _F(1.0), _F(2.0), _F(0.5), _F(0.625), _F(0.0), _F(np.inf)


@_jit_ordered
def _exp32(x):
    """``exp(x)`` for float32 ``x`` (Cephes' expf: ``2^n · e^r``, ``|r| <= ln2/2``, a degree-7
    polynomial; within 2 ulp); inf above 88.3 and 0 below -87.3 (where float32 runs out of normal
    numbers); NaN gives NaN."""
    xc = _EXP_HI if x > _EXP_HI else x
    xc = _EXP_LO if xc < _EXP_LO else xc
    n = np.floor(xc * _LOG2E + _HALF)
    r = xc - n * _LN2_HI - n * _LN2_LO
    # Estrin's scheme: the same polynomial in three dependent steps instead of six (the gate
    # loops wait on this chain: 2.15 -> 2.06 ns a sigmoid here)
    r2 = r * r
    r4 = r2 * r2
    p = ((_P5 + _P4 * r) + (_P3 + _P2 * r) * r2 + (_P1 + _P0 * r) * r4) * r2 + r + _ONE
    k = np.int32(n) if n == n else np.int32(0)      # a NaN's p is NaN: any scale keeps it
    y = p * _f32_from_bits((k + 127) << 23)
    y = _INF if x > _EXP_HI else y
    return _ZERO if x < _EXP_LO else y


@_jit_ordered
def _sigmoid32(v):
    return _ONE / (_ONE + _exp32(-v))


@_jit_ordered
def _tanh32(v):
    """Cephes' tanhf: an odd polynomial below 0.625, else ``1 - 2 / (exp(2|v|) + 1)``."""
    a = abs(v)
    z = v * v
    small = ((((_T0 * z + _T1) * z + _T2) * z + _T3) * z + _T4) * z * v + v
    big = _ONE - _TWO / (_exp32(a + a) + _ONE)
    return small if a < _SMALL else (big if v >= _ZERO else -big)


def _sigmoid(v):
    """``1 / (1 + exp(-v))``, without overflow; NaN stays NaN."""
    if v >= 0:
        return 1 / (1 + np.exp(-v))
    e = np.exp(v)
    return e / (1 + e)


def _tanh(v):
    return np.tanh(v)


@overload(_sigmoid, jit_options=dict(fastmath=FASTMATH - {"reassoc"}, error_model="numpy"))
def _sigmoid_typed(v):
    if v == types.float32:
        return lambda v: _sigmoid32(v)

    def sigmoid(v):
        # two branches so that exp never overflows; a NaN takes the second and stays NaN
        if v >= 0:
            return 1.0 / (1.0 + np.exp(-v))
        e = np.exp(v)
        return e / (1.0 + e)
    return sigmoid


@overload(_tanh, jit_options=dict(fastmath=FASTMATH - {"reassoc"}, error_model="numpy"))
def _tanh_typed(v):
    if v == types.float32:
        return lambda v: _tanh32(v)
    return lambda v: np.tanh(v)


if config.DISABLE_JIT:
    def _f32_from_bits(bits):       # noqa: F811
        return np.array(bits, np.int64).astype(np.uint32).view(np.float32)[()]


# ----------------------------------------------------------------------------- forward bodies
# The gate loops are short, one array in and one out where they can be: LLVM vectorises a loop
# only when it can rule out, by a few run-time checks, that the arrays it writes overlap those it
# reads, and gives up past eight such checks (the LSTM's cell update in one loop needed nine).
#
# One body per cell serves training and inference, told apart by ``chunk``. Training (``chunk``
# 0) keeps what the backward pass reads: a block's samples go through each step together, every
# step projected beforehand in one GEMM into ``gates (N, T, G·H)``, ``h_t`` beside ``x_{t+1}`` in
# ``hs`` (``xh``), the lstm's ``c_t`` and ``tanh(c_t)`` and the gru's ``h W_hn^T + b_hn`` for every
# step. Inference (``chunk`` > 0) keeps nothing: a block's samples go ``chunk`` at a time through
# every step, each step projected on its own into ``gates (N, 1, G·H)``, and the arrays that hold
# the state or a step's values have a shorter step axis, indexed modulo its length (``h_t`` in
# ``hs (N, 2, F + H)`` at ``(t + 1) mod 2``, ``c_t`` in ``cs (N, 2, H)``, ...), so that what a
# chunk works on stays in the L2 cache from step to step (training's per-step arrays, 57 MB of
# gates at batch 1000, go out to memory and back), and the weights come ``_spread``. Each element
# goes through the same arithmetic either way, so inference gives training's bits. Both run the
# same compiled body: the arrays are of the same types, only their shapes differ (nothing more
# to compile for inference).

@jit
def _sigmoid_in_place(a):
    for j in range(a.shape[0]):
        a[j] = _sigmoid(a[j])


@jit
def _tanh_in_place(a):
    for j in range(a.shape[0]):
        a[j] = _tanh(a[j])


@jit
def _inputs(xh, xh2, w_it, b, gates2, c0, c1, t, chunk):
    """The input side, ``gates = b + x W_ih^T`` (``b`` zeros without a bias; ``w_it`` is
    ``W_ih^T``), for samples ``c0:c1``: in training (``chunk`` 0) every step in one product, before
    step 0 (``xh2``, ``gates2``: ``xh`` and ``gates`` as ``(N·T, .)``: reshaping inside a kernel
    cost seconds of compilation); in inference step ``t`` alone, into ``gates2 (N, G·H)``. Tiles
    that start from the bias and store: one pass over ``gates`` (BLAS and a bias pass took 1.4x as
    long at batch 128). One call either way (each call of a product is compiled again)."""
    if chunk == 0:
        if t > 0:
            return
        steps = xh.shape[1]
        a, g = xh2[c0 * steps:c1 * steps, :w_it.shape[0]], gates2[c0 * steps:c1 * steps]
    else:
        a, g = xh[c0:c1, t, :w_it.shape[0]], gates2[c0:c1]
    matmul_bias(a, w_it, g, b)


@jit
def _chunks(blk, blocks, n, chunk):
    """Block ``blk``'s samples ``(lo, hi)`` and how many of them go through the steps together:
    all (training, ``chunk`` 0) or ``chunk``."""
    lo, hi = span(blk, blocks, n)
    return lo, hi, (chunk if chunk > 0 else max(hi - lo, 1))


@jit
def _h_out(hs, h_last, n, k, f, last):
    """Where ``h_t`` of sample ``n`` goes: ``hs[n, k]`` beside ``x_{t+1}`` (``k = (t + 1) mod S``,
    where step t+1 reads it as ``h_{t-1}``), or, for the last step, ``h_last``."""
    return h_last[n] if last else hs[n, k, f:f + h_last.shape[1]]


@jit
def _sigmoid_sum(a, s):
    for j in range(a.shape[0]):
        a[j] = _sigmoid(a[j] + s[j])


@jit
def _tanh_sum(a, s):
    for j in range(a.shape[0]):
        a[j] = _tanh(a[j] + s[j])


@jit
def _rnn_forward_body(blk, blocks, chunk, xh, xh2, hs, w_it, w_t, b, gates, gates2, hw, h_last):
    """Block ``blk``'s samples through every step (see above for ``chunk``, ``hs`` and the step
    axes): ``gates`` becomes ``h_t``; ``hw (N, H)`` is scratch for ``h_{t-1} W_hh^T``."""
    lo, hi, size = _chunks(blk, blocks, xh.shape[0], chunk)
    steps, n_h = xh.shape[1], h_last.shape[1]
    f = w_it.shape[0]
    for c0 in range(lo, hi, size):
        c1 = min(hi, c0 + size)
        for t in range(steps):
            _inputs(xh, xh2, w_it, b, gates2, c0, c1, t, chunk)
            if t > 0:
                matmul_set(hs[c0:c1, t % hs.shape[1], f:f + n_h], w_t, hw[c0:c1])
            kg, kh = t % gates.shape[1], (t + 1) % hs.shape[1]
            for n in range(c0, c1):
                row = gates[n, kg]
                if t > 0:
                    _tanh_sum(row[:n_h], hw[n])
                else:
                    _tanh_in_place(row[:n_h])
                out = _h_out(hs, h_last, n, kh, f, t + 1 == steps)
                for j in range(out.shape[0]):
                    out[j] = row[j]


@jit
def _lstm_cell(row, c_prev, c, tc, h):
    """``c = f c_prev + i g``, ``tc = tanh(c)`` (kept for the backward pass), ``h = o tc`` from the
    activated gates ``row (4H,)``; two loops, so that each vectorises."""
    n_h = c.shape[0]
    for j in range(n_h):
        c[j] = row[n_h + j] * c_prev[j] + row[j] * row[2 * n_h + j]
    for j in range(n_h):
        t = _tanh(c[j])
        tc[j] = t
        h[j] = row[3 * n_h + j] * t


@jit
def _lstm_forward_body(blk, blocks, chunk, xh, xh2, hs, w_it, w_t, b, gates, gates2, hw, cs, tc, h_last):
    """Block ``blk``'s samples through every step (see above for ``chunk``, ``hs`` and the step
    axes): ``gates`` becomes the activated gates, ``cs`` gets ``c_t`` at ``t + 1`` (``c_{-1} = 0``
    at 0), ``tc`` ``tanh(c_t)`` at ``t``; ``hw (N, 4H)`` is scratch for ``h_{t-1} W_hh^T`` (added
    in the gate loops: set into a small contiguous array, then read once, it was faster than added
    onto ``gates``' scattered rows)."""
    lo, hi, size = _chunks(blk, blocks, xh.shape[0], chunk)
    steps, n_h = xh.shape[1], h_last.shape[1]
    f = w_it.shape[0]
    for c0 in range(lo, hi, size):
        c1 = min(hi, c0 + size)
        for t in range(steps):
            _inputs(xh, xh2, w_it, b, gates2, c0, c1, t, chunk)
            if t > 0:
                matmul_set(hs[c0:c1, t % hs.shape[1], f:f + n_h], w_t, hw[c0:c1])
            kg, kt, kh = t % gates.shape[1], t % tc.shape[1], (t + 1) % hs.shape[1]
            kc, kc1 = t % cs.shape[1], (t + 1) % cs.shape[1]
            for n in range(c0, c1):
                row = gates[n, kg]
                if t > 0:
                    s = hw[n]
                    _sigmoid_sum(row[:2 * n_h], s[:2 * n_h])
                    _tanh_sum(row[2 * n_h:3 * n_h], s[2 * n_h:3 * n_h])
                    _sigmoid_sum(row[3 * n_h:4 * n_h], s[3 * n_h:])
                else:
                    _sigmoid_in_place(row[:2 * n_h])
                    _tanh_in_place(row[2 * n_h:3 * n_h])
                    _sigmoid_in_place(row[3 * n_h:4 * n_h])
                _lstm_cell(row, cs[n, kc], cs[n, kc1], tc[n, kt], _h_out(hs, h_last, n, kh, f, t + 1 == steps))


@jit
def _gru_new(row, gh, h_prev, h):
    """``n = tanh(x_n + r a)`` (``a = gh[2H:]``), then ``h = (1 - z) n + z h_prev``."""
    n_h = h.shape[0]
    one = row.dtype.type(1.0)
    for j in range(n_h):
        row[2 * n_h + j] = _tanh(row[2 * n_h + j] + row[j] * gh[2 * n_h + j])
    for j in range(n_h):
        z = row[n_h + j]
        h[j] = (one - z) * row[2 * n_h + j] + z * h_prev[j]


@jit
def _gru_forward_body(blk, blocks, chunk, xh, xh2, hs, w_it, w_t, b, b_hh, gates, gates2, gh, h_last):
    """Block ``blk``'s samples through every step (see above for ``chunk``, ``hs`` and the step
    axes): ``gates`` (projected with ``b``: ``b_ih`` plus ``b_hr``, ``b_hz``) becomes ``r, z, n``;
    ``gh`` gets ``h_{t-1} W_hh^T``, plus ``b_hn`` in its n part (the reset gate's gradient needs
    it); ``b_hh`` is the hidden bias or ``(0,)``."""
    lo, hi, size = _chunks(blk, blocks, xh.shape[0], chunk)
    steps, n_h = xh.shape[1], h_last.shape[1]
    f = w_it.shape[0]
    for c0 in range(lo, hi, size):
        c1 = min(hi, c0 + size)
        for t in range(steps):
            _inputs(xh, xh2, w_it, b, gates2, c0, c1, t, chunk)
            kg, ka, kp, kh = t % gates.shape[1], t % gh.shape[1], t % hs.shape[1], (t + 1) % hs.shape[1]
            ghb = gh[c0:c1, ka]
            if t > 0:
                matmul_set(hs[c0:c1, kp, f:f + n_h], w_t, ghb)
            else:
                ghb[:] = 0.0
            for n in range(c0, c1):
                row, hrow = gates[n, kg], gh[n, ka]
                if b_hh.shape[0] > 0:
                    for j in range(2 * n_h, 3 * n_h):
                        hrow[j] += b_hh[j]
                for j in range(2 * n_h):
                    row[j] += hrow[j]
                _sigmoid_in_place(row[:2 * n_h])
                _gru_new(row, hrow, hs[n, kp, f:f + n_h], _h_out(hs, h_last, n, kh, f, t + 1 == steps))


_rnn_forward_blocks = parallel(_rnn_forward_body)
_lstm_forward_blocks = parallel(_lstm_forward_body)
_gru_forward_blocks = parallel(_gru_forward_body)


# ----------------------------------------------------------------------------- backward bodies

@jit
def _start(dy, dh, t, lo, hi, steps):
    """``dh`` (the block's rows) gets ``dy``'s share for step ``t`` of ``steps``: ``dy (N, T, H)``
    for every step, ``(N, 1, H)`` for the last only."""
    if dy.shape[1] == steps:
        k = t
    elif t == steps - 1:
        k = 0
    else:
        return
    for n in range(lo, hi):
        d, s = dh[n], dy[n, k]
        for j in range(d.shape[0]):
            d[j] += s[j]


@jit
def _dx_and_biases(di, dj, merged, w_ih, blk, need_dx, dx, pb):
    """A block's ``dx = dg_i W_ih`` (one GEMM) and its share of the biases' gradients,
    ``pb[blk] = [Σ dg_i, Σ dg_h]`` (the same when ``merged``), over its rows of ``(N·T, .)``."""
    if need_dx:
        gemm(False, False, 1.0, di, w_ih, 0.0, dx)
    rows = di.shape[1]
    bi, bh = pb[blk, 0], pb[blk, 1]
    for j in range(rows):
        bi[j] = 0.0
        bh[j] = 0.0
    for r in range(di.shape[0]):
        a = di[r]
        for j in range(rows):
            bi[j] += a[j]
        if not merged:
            c = dj[r]
            for j in range(rows):
                bh[j] += c[j]
    if merged:
        for j in range(rows):
            bh[j] = bi[j]


@jit
def _weights(dg2, xh2, w_ih, blk, lo, hi, steps, need_dx, dx2, pw, pb):
    """After a block's steps (rnn, lstm: the input and hidden sides share ``dg``): its samples'
    ``dx``, and its share of the weights' gradient, ``pw[blk] = dg^T [x, h_prev]``, ``dW_ih`` and
    ``dW_hh`` side by side in one product over ``xh``'s rows (padded to whole tiles)."""
    rows = slice(lo * steps, hi * steps)
    matmul_set_at(dg2[rows], xh2[rows], pw[blk])
    _dx_and_biases(dg2[rows], dg2[rows], True, w_ih, blk, need_dx, dx2[rows], pb)


@jit
def _weights_gru(dgi2, dgh2, xh2, w_ih, units, blk, lo, hi, steps, need_dx, dx2, pw, pb):
    """``_weights`` for a gru, whose two sides' gradients differ: ``dW_ih = dg_i^T x`` and
    ``dW_hh = dg_h^T h_prev``, two GEMMs."""
    rows = slice(lo * steps, hi * steps)
    f, xb, w = w_ih.shape[1], xh2[rows], pw[blk]
    gemm(True, False, 1.0, dgi2[rows], xb[:, :f], 0.0, w[:, :f])
    gemm(True, False, 1.0, dgh2[rows], xb[:, f:f + units], 0.0, w[:, f:f + units])
    _dx_and_biases(dgi2[rows], dgh2[rows], False, w_ih, blk, need_dx, dx2[rows], pb)


@jit
def _rnn_backward_body(blk, blocks, dy, xh, xh2, w_ih, w_hh, gates, dg, dg2, dh, need_dx, dx2, pw, pb):
    """Block ``blk``'s samples back through every step: ``dg (N, T, H)`` gets the gradient of
    each step's pre-activation (``gates`` holds ``h_t``); ``dh (N, H)`` is scratch."""
    lo, hi = span(blk, blocks, xh.shape[0])
    if lo >= hi:
        pw[blk] = 0.0
        pb[blk] = 0.0
        return
    one = dg.dtype.type(1.0)
    dh[lo:hi] = 0.0
    for t in range(dg.shape[1] - 1, -1, -1):
        _start(dy, dh, t, lo, hi, xh.shape[1])
        for n in range(lo, hi):
            d, h, out = dh[n], gates[n, t], dg[n, t]
            for j in range(d.shape[0]):
                out[j] = d[j] * (one - h[j] * h[j])
        if t > 0:
            matmul_set(dg[lo:hi, t], w_hh, dh[lo:hi])
    _weights(dg2, xh2, w_ih, blk, lo, hi, xh.shape[1], need_dx, dx2, pw, pb)


@jit
def _lstm_cell_backward(row, c_prev, tc, dh, dc, out):
    """One step of one sample: ``out (4H,)`` gets the gates' pre-activation gradients; ``dc``
    comes in as the gradient from step t+1 (``dc_{t+1} f_{t+1}``) and leaves as this step's
    share for step t-1. Two loops, each with few enough arrays to vectorise."""
    n_h = tc.shape[0]
    one = tc.dtype.type(1.0)
    for j in range(n_h):
        og, tcv, d = row[3 * n_h + j], tc[j], dh[j]
        dc[j] += d * og * (one - tcv * tcv)
        out[3 * n_h + j] = d * tcv * og * (one - og)
    for j in range(n_h):
        ig, fg, gg, dcv = row[j], row[n_h + j], row[2 * n_h + j], dc[j]
        out[j] = dcv * gg * ig * (one - ig)
        out[n_h + j] = dcv * c_prev[j] * fg * (one - fg)
        out[2 * n_h + j] = dcv * ig * (one - gg * gg)
        dc[j] = dcv * fg


@jit
def _lstm_backward_body(blk, blocks, dy, xh, xh2, w_ih, w_hh, gates, cs, tc, dg, dg2, dh, dc, need_dx, dx2, pw,
                        pb):
    """Block ``blk``'s samples back through every step: ``dg (N, T, 4H)`` gets the gradient of
    each step's gate pre-activations; ``dh``, ``dc (N, H)`` are scratch."""
    lo, hi = span(blk, blocks, xh.shape[0])
    if lo >= hi:
        pw[blk] = 0.0
        pb[blk] = 0.0
        return
    dh[lo:hi] = 0.0
    dc[lo:hi] = 0.0
    for t in range(dg.shape[1] - 1, -1, -1):
        _start(dy, dh, t, lo, hi, xh.shape[1])
        for n in range(lo, hi):
            _lstm_cell_backward(gates[n, t], cs[n, t], tc[n, t], dh[n], dc[n], dg[n, t])
        if t > 0:
            matmul_set(dg[lo:hi, t], w_hh, dh[lo:hi])
    _weights(dg2, xh2, w_ih, blk, lo, hi, xh.shape[1], need_dx, dx2, pw, pb)


@jit
def _gru_cell_backward(row, gh, h_prev, dh, oi, oh):
    """One step of one sample: ``oi``/``oh (3H,)`` get the input and hidden sides' pre-activation
    gradients; ``dh`` leaves as its direct share for step t-1 (``dh z``)."""
    n_h = dh.shape[0]
    one = dh.dtype.type(1.0)
    for j in range(n_h):
        z, nv, d = row[n_h + j], row[2 * n_h + j], dh[j]
        dn = d * (one - z) * (one - nv * nv)
        oi[2 * n_h + j] = dn
        oi[n_h + j] = d * (h_prev[j] - nv) * z * (one - z)
        dh[j] = d * z
    for j in range(n_h):
        r, dn = row[j], oi[2 * n_h + j]
        oi[j] = dn * gh[2 * n_h + j] * r * (one - r)
        oh[2 * n_h + j] = dn * r
    for j in range(2 * n_h):
        oh[j] = oi[j]


@jit
def _gru_backward_body(blk, blocks, dy, xh, xh2, w_ih, w_hh, gates, gh, dgi, dgi2, dgh, dgh2, dh, need_dx, dx2, pw,
                       pb):
    """Block ``blk``'s samples back through every step: ``dgi (N, T, 3H)`` gets the gradient of
    the input side's pre-activations (``x W_ih^T + b_ih``), ``dgh`` of the hidden side's
    (``h W_hh^T + b_hh``; they differ in the n part, which the reset gate multiplies);
    ``dh (N, H)`` is scratch."""
    lo, hi = span(blk, blocks, xh.shape[0])
    if lo >= hi:
        pw[blk] = 0.0
        pb[blk] = 0.0
        return
    f = w_ih.shape[1]
    dh[lo:hi] = 0.0
    for t in range(dgi.shape[1] - 1, -1, -1):
        _start(dy, dh, t, lo, hi, xh.shape[1])
        for n in range(lo, hi):
            _gru_cell_backward(gates[n, t], gh[n, t], xh[n, t, f:f + w_hh.shape[1]], dh[n], dgi[n, t], dgh[n, t])
        if t > 0:
            matmul_add(dgh[lo:hi, t], w_hh, dh[lo:hi])
    _weights_gru(dgi2, dgh2, xh2, w_ih, w_hh.shape[1], blk, lo, hi, xh.shape[1], need_dx, dx2, pw, pb)


_rnn_backward_blocks = parallel(_rnn_backward_body)
_lstm_backward_blocks = parallel(_lstm_backward_body)
_gru_backward_blocks = parallel(_gru_backward_body)


# ----------------------------------------------------------------------------- entry points

def _width(f, units):
    """The columns of ``xh``: ``[x_t, h_{t-1}]`` padded with zeros to whole tiles (16), so that
    the weights' gradient over it is tiles only."""
    return -(-(f + units) // 16) * 16


def _blocks(n, steps, rows, units):
    """One block of samples per thread, or one block for a small recurrence."""
    return block_count(n, steps * n * rows * units, SPLIT)


# inference takes a block's samples this many at a time through every step: what they work on
# (their gates and hidden products, 24 x 2 KB each for an lstm of 128 float32 units, and their
# state) stays in the L2 cache beside the weights
CHUNK = 24


def _aligned(rows, cols, dtype):
    """``np.empty((rows, cols), dtype)`` starting on a vector boundary (``tiles.aligned_empty``):
    the tiles' operands and outputs (their rows are whole vectors here)."""
    return aligned_empty(rows, cols, np.empty(0, dtype))


def _aligned_copy(w):
    """A C-contiguous copy of the 2-D ``w`` starting on a vector boundary."""
    out = _aligned(w.shape[0], w.shape[1], w.dtype)
    out[...] = w
    return out


def _spread(w):
    """``w (k, n)``, or a copy with a tile's columns of zeros more (16 float32, 8 float64: one
    cache line), when a tile's panel of ``w`` (``k`` rows, a row of ``w`` apart) would fall in few
    sets of the L1 cache (64 sets of 8 lines) and evict itself: at 512 float32 columns a row is 32
    lines, and every panel's row in one of two sets. Spread to 33 lines, the per-step ``h W_hh^T``
    went from 71 to 79 GFLOP/s (one thread, 24 rows at a time) for 3 % more columns. The product
    gives the same bits in its first ``n`` columns; the rest come out 0 (plus what they start from)."""
    k, n = w.shape
    cols = 2 * (32 // w.itemsize)
    lines = n // cols
    if n % cols or lines % 2 or k <= 8 * 64 // math.gcd(lines, 64):
        return w
    out = _aligned(k, n + cols, w.dtype)
    out[:, :n] = w
    out[:, n:] = 0.0
    return out


def recurrent_forward(x, w_ih, w_hh, b_ih, b_hh, cell, sequences, train=True):
    """Run a recurrent layer over ``x (N, T, F)``.

    ``w_ih (G·H, F)``, ``w_hh (G·H, H)``, ``b_ih``, ``b_hh (G·H,)`` or both ``(0,)`` for no bias;
    ``cell`` is ``RNN``, ``LSTM`` or ``GRU``. Returns ``(y, cache)``: ``y`` every step's output
    ``(N, T, H)`` with ``sequences``, else the last step's ``(N, H)``, and what
    ``recurrent_backward`` takes back; without ``train``, ``(y, None)``: the same ``y``, to the
    bit, with nothing kept for a backward pass, and faster (see the forward bodies).
    """
    n, steps, f = x.shape
    rows, units = w_hh.shape
    dtype = x.dtype
    w_ih, w_hh = np.ascontiguousarray(w_ih), np.ascontiguousarray(w_hh)
    bias = b_ih.shape[0] > 0
    if not bias:
        b = np.zeros(rows, dtype)
    elif cell == GRU:       # b_hn stays inside the reset product
        b = b_ih.copy()
        b[:2 * units] += b_hh[:2 * units]
    else:
        b = b_ih + b_hh
    w_it, w_t = _aligned_copy(w_ih.T), _aligned_copy(w_hh.T)
    if train:
        width = _width(f, units)
        xh = _aligned(n * steps, width, dtype).reshape(n, steps, width)
        xh[:, :, :f] = x
        xh[:, 0, f:] = 0.0
        xh[:, 1:, f + units:] = 0.0
        xh2, hs, kept, chunk = xh.reshape(n * steps, width), xh, steps, 0
    else:
        xh = np.ascontiguousarray(x, dtype)
        xh2 = xh.reshape(n * steps, f)
        hs = np.empty((n, steps if sequences else 2, f + units), dtype)    # h_t at (t + 1) mod S
        hs[:, 0, f:] = 0.0
        kept, chunk = 1, CHUNK
        w_it, w_t = _spread(w_it), _spread(w_t)
        b = np.concatenate([b, np.zeros(w_it.shape[1] - rows, dtype)])
    gates = _aligned(n * kept, w_it.shape[1], dtype).reshape(n, kept, w_it.shape[1])
    h_last = np.empty((n, units), dtype)
    blocks = _blocks(n, steps, rows, units)
    common = (blocks, chunk, xh, xh2, hs, w_it, w_t, b)
    flat = gates.reshape(n * kept, gates.shape[2])
    hidden = w_t.shape[1]           # rows (spread in inference)
    if cell == RNN:
        aux = np.empty((0, 0, 0), dtype)
        _rnn_forward_blocks(blocks, common + (gates, flat, _aligned(n, hidden, dtype), h_last))
    elif cell == LSTM:
        aux = np.empty((n, steps + 1 if train else 2, units), dtype)   # c_t at t + 1
        aux[:, 0] = 0.0
        aux = (aux, np.empty((n, kept, units), dtype))                  # and tanh(c_t)
        _lstm_forward_blocks(blocks, common + (gates, flat, _aligned(n, hidden, dtype)) + aux + (h_last,))
    else:
        aux = np.empty((n, kept, hidden), dtype)           # h_{t-1} W_hh^T (+ b_hn)
        _gru_forward_blocks(blocks, common + (b_hh, gates, flat, aux, h_last))
    if sequences:
        y = np.empty((n, steps, units), dtype)
        y[:, :-1] = hs[:, 1:, f:f + units]
        y[:, -1] = h_last
    else:
        y = h_last
    return y, ((xh, gates, aux, f) if train else None)


def recurrent_zeros(x, w_hh, cell, sequences):
    """``(y, cache)`` of zeros, shaped and typed as ``recurrent_forward(..., train=True)`` gives them
    for ``x``, without running it: a backward pass through them compiles the backward kernels
    without the forward ones (``neurons/_warm.py``'s helper, while training compiles those)."""
    n, steps, f = x.shape
    rows, units = w_hh.shape
    dtype = x.dtype
    if cell == RNN:
        aux = np.empty((0, 0, 0), dtype)
    elif cell == LSTM:
        aux = (np.zeros((n, steps + 1, units), dtype), np.zeros((n, steps, units), dtype))
    else:
        aux = np.zeros((n, steps, rows), dtype)
    cache = (np.zeros((n, steps, _width(f, units)), dtype), np.zeros((n, steps, rows), dtype), aux, f)
    return np.zeros((n, steps, units) if sequences else (n, units), dtype), cache


def recurrent_backward(dy, cache, w_ih, w_hh, cell, need_dx, bias):
    """Gradients of a recurrent layer, back-propagated through time.

    ``dy`` is the gradient of the output sequence ``(N, T, H)``, or of the last step only
    ``(N, H)``; ``cache`` is ``recurrent_forward``'s. Returns ``(dx, dw_ih, dw_hh, db_ih, db_hh)``:
    dx ``(N, T, F)`` (None unless ``need_dx``), the weights' and biases' gradients shaped like
    them (the biases' None without ``bias``).
    """
    xh, gates, aux, f = cache
    n, steps, width = xh.shape
    rows, units = w_hh.shape
    dtype = xh.dtype
    w_ih, w_hh = np.ascontiguousarray(w_ih), _aligned_copy(w_hh)
    dy = np.ascontiguousarray(dy).reshape(n, -1, units)
    dh = _aligned(n, units, dtype)
    dx = np.empty((n if need_dx else 0, steps, f), dtype)
    blocks = _blocks(n, steps, rows, units)
    pw = _aligned(blocks * rows, width, dtype).reshape(blocks, rows, width)
    pb = np.empty((blocks, 2, rows), dtype)
    dgi = np.empty((n, steps, rows), dtype)
    common = (blocks, dy, xh, xh.reshape(n * steps, width), w_ih, w_hh, gates)
    tail = (need_dx, dx.reshape(-1, f), pw, pb)
    if cell == RNN:
        _rnn_backward_blocks(blocks, common + (dgi, dgi.reshape(n * steps, rows), dh) + tail)
    elif cell == LSTM:
        dc = np.empty((n, units), dtype)
        _lstm_backward_blocks(blocks, common + aux + (dgi, dgi.reshape(n * steps, rows), dh, dc) + tail)
    else:
        dgh = np.empty((n, steps, rows), dtype)
        _gru_backward_blocks(blocks, common + (aux, dgi, dgi.reshape(n * steps, rows), dgh,
                                               dgh.reshape(n * steps, rows), dh) + tail)
    # the blocks' shares, summed in block order (the bits depend on the thread count only); not
    # the padding columns, which the gru's two GEMMs leave unwritten
    used = f + units
    w, b = pw[0, :, :used], pb[0]
    for blk in range(1, blocks):
        w, b = w + pw[blk, :, :used], b + pb[blk]
    dw_ih, dw_hh = np.ascontiguousarray(w[:, :f]), np.ascontiguousarray(w[:, f:f + units])
    db_ih, db_hh = (b[0].copy(), b[1].copy()) if bias else (None, None)
    return (dx if need_dx else None), dw_ih, dw_hh, db_ih, db_hh
