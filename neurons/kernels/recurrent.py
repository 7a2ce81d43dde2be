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
folded in where they add), then per step adds ``h_{t-1} W_hh^T`` (``_matmul_add``, over the
block's samples) and applies the gates. Backward runs the steps in reverse, writing each step's
gate gradients ``dg`` and ``dh_{t-1} = dg_t W_hh``; then, one GEMM each, ``dx = dg W_ih`` and
its share of the weights' gradient ``dg^T [x, h_prev]`` (``dW_ih`` and ``dW_hh`` side by side),
summed over the blocks afterwards. Activated gates are kept for the backward pass
(``σ' = s (1 - s)``, ``tanh' = 1 - t²``), and so are ``c_t`` (lstm) and ``h_{t-1} W_h^T + b_hn``
(gru, for the reset gate's gradient).
"""
import functools

import llvmlite.ir as ir
import numpy as np
from numba import types
from numba.core import cgutils, config
from numba.extending import intrinsic, overload

from ._blocks import block_count, parallel
from ._config import FASTMATH, jit, span
from .blas import gemm

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
    p = (((((_P0 * r + _P1) * r + _P2) * r + _P3) * r + _P4) * r + _P5) * (r * r) + r + _ONE
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


# ----------------------------------------------------------------------------- the step's product
# ``h_{t-1} W_hh^T`` forward and ``dg_t W_hh`` backward, over one block's batch rows: a few rows
# (16 at batch 32 on two threads), the same weights every step. A BLAS GEMM packs the weights into
# its own layout on every call, which at these sizes costs about as much as the product: OpenBLAS
# here gave 12-18 GFLOP/s at 32 x 512 x 128 and 9-11 at 32 x 128 x 512, where the tiles below give
# 20-23 on the same machine at the same hour (a plain vectorised loop over rows: 14 and 10).

_TILE_ROWS = 4


@intrinsic
def _tile(typingctx, a, b, c, i, j, depth, rows):
    """``c[i:i+rows, j:j+2V] += a[i:i+rows, :depth] @ b[:depth, j:j+2V]`` with ``V`` the elements
    of a 32-byte vector (8 float32, 4 float64) and ``rows`` a literal 1..4: the accumulators (up to
    4 x 2 vectors) stay in registers while ``k`` runs, each step two vector loads of ``b``'s row
    ``k``, a broadcast of each row's ``a[., k]`` and one fused multiply-add per accumulator. The
    arrays are 2-D of one float dtype with contiguous rows (any row stride: ``_matmul_add``
    checks)."""
    arrays = (a, b, c)
    if not (all(isinstance(t, types.Array) and t.ndim == 2 for t in arrays)
            and c.dtype in (types.float32, types.float64) and a.dtype == b.dtype == c.dtype
            and isinstance(rows, types.IntegerLiteral) and 1 <= rows.literal_value <= _TILE_ROWS):
        return None
    n_rows = rows.literal_value
    signature = types.void(a, b, c, i, j, depth, rows)

    def codegen(context, builder, sig, args):
        fty = context.get_value_type(c.dtype)
        size = context.get_abi_sizeof(fty)
        width = 32 // size
        vty = ir.VectorType(fty, width)
        intp = context.get_value_type(types.intp)
        ptrs = [context.make_array(t)(context, builder, v) for t, v in zip(arrays, args[:3])]
        i0, j0, depth_v = (context.cast(builder, v, t, types.intp) for v, t in zip(args[3:6], sig.args[3:6]))
        i8p = ir.IntType(8).as_pointer()

        def const(v):
            return ir.Constant(intp, v)

        def address(ary, row, col, ty):
            stride = cgutils.unpack_tuple(builder, ary.strides)[0]
            offset = builder.add(builder.mul(row, stride), builder.mul(col, const(size)))
            return builder.bitcast(builder.gep(builder.bitcast(ary.data, i8p), [offset]), ty.as_pointer())

        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty] * 3),
                                             f"llvm.fma.v{width}f{8 * size}")
        zero = ir.Constant(vty, [ir.Constant(fty, 0.0)] * width)
        undef = ir.Constant(vty, ir.Undefined)
        splat = ir.Constant(ir.VectorType(ir.IntType(32), width), [0] * width)
        acc = [[cgutils.alloca_once_value(builder, zero) for _ in range(2)] for _ in range(n_rows)]
        a_arr, b_arr, c_arr = ptrs
        with cgutils.for_range(builder, depth_v) as loop:
            k = loop.index
            bk = [builder.load(address(b_arr, k, builder.add(j0, const(v * width)), vty), align=size)
                  for v in range(2)]
            for r in range(n_rows):
                x = builder.load(address(a_arr, builder.add(i0, const(r)), k, fty))
                xs = builder.shuffle_vector(builder.insert_element(undef, x, ir.Constant(ir.IntType(32), 0)),
                                            undef, splat)
                for v in range(2):
                    builder.store(builder.call(fma, [xs, bk[v], builder.load(acc[r][v])]), acc[r][v])
        for r in range(n_rows):
            for v in range(2):
                p = address(c_arr, builder.add(i0, const(r)), builder.add(j0, const(v * width)), vty)
                builder.store(builder.fadd(builder.load(p, align=size), builder.load(acc[r][v])), p, align=size)
        return context.get_dummy_value()

    return signature, codegen


if config.DISABLE_JIT:
    def _tile(a, b, c, i, j, depth, rows):     # noqa: F811
        cols = 2 * (32 // c.itemsize)
        c[i:i + rows, j:j + cols] += a[i:i + rows, :depth] @ b[:depth, j:j + cols]


@jit
def _strided(x):
    return x.shape[1] > 1 and x.strides[1] != x.itemsize


@jit
def _matmul_add(a, b, c):
    """``c += a @ b`` for ``a (m, k)``, ``b (k, n)``, ``c (m, n)`` with contiguous rows (any row
    stride): ``_tile`` over 4-row, 2-vector tiles, a column panel of ``b`` at a time
    (it stays in the L1 cache while the row tiles pass), leftover rows in smaller tiles, leftover
    columns in a plain loop. Each element of ``c`` gets the same chain of fused multiply-adds over
    ``k`` whichever tile it falls in, so a row's result does not depend on the rows beside it."""
    m, depth = a.shape
    n = b.shape[1]
    if b.shape[0] != depth or c.shape[0] != m or c.shape[1] != n:
        raise ValueError("_matmul_add: shapes do not match")
    if _strided(a) or _strided(b) or _strided(c):
        raise ValueError("_matmul_add: rows must be contiguous")
    cols = 2 * (32 // c.itemsize)
    full, rest = m - m % _TILE_ROWS, m % _TILE_ROWS
    n_tiled = n - n % cols
    for j in range(0, n_tiled, cols):
        for i in range(0, full, _TILE_ROWS):
            _tile(a, b, c, i, j, depth, 4)
        if rest == 3:
            _tile(a, b, c, full, j, depth, 3)
        elif rest == 2:
            _tile(a, b, c, full, j, depth, 2)
        elif rest == 1:
            _tile(a, b, c, full, j, depth, 1)
    for i in range(m):
        ci, ai = c[i], a[i]
        for k in range(depth):
            x, bk = ai[k], b[k]
            for j in range(n_tiled, n):
                ci[j] += x * bk[j]


# ----------------------------------------------------------------------------- forward bodies
# The gate loops are short, one array in and one out where they can be: LLVM vectorises a loop
# only when it can rule out, by a few run-time checks, that the arrays it writes overlap those it
# reads, and gives up past eight such checks (the LSTM's cell update in one loop needed nine).

@jit
def _sigmoid_in_place(a):
    for j in range(a.shape[0]):
        a[j] = _sigmoid(a[j])


@jit
def _tanh_in_place(a):
    for j in range(a.shape[0]):
        a[j] = _tanh(a[j])


@jit
def _project(xh2, w_ih, b, gates2, lo, hi, steps):
    """``gates = x W_ih^T + b`` for the block's samples ``lo:hi``, every step in one GEMM
    (``xh2``, ``gates2``: ``xh`` and ``gates`` as ``(N·T, .)``; reshaping inside a kernel cost
    seconds of compilation)."""
    gb = gates2[lo * steps:hi * steps]
    gemm(False, True, 1.0, xh2[lo * steps:hi * steps, :w_ih.shape[1]], w_ih, 0.0, gb)
    if b.shape[0] > 0:
        for r in range(gb.shape[0]):
            row = gb[r]
            for j in range(row.shape[0]):
                row[j] += b[j]


@jit
def _h_out(xh, h_last, n, t, f):
    """Where ``h_t`` of sample ``n`` goes: beside ``x_{t+1}`` (as step t+1's ``h_{t-1}``), or, for
    the last step, ``h_last``."""
    return xh[n, t + 1, f:] if t + 1 < xh.shape[1] else h_last[n]


@jit
def _rnn_forward_body(blk, blocks, xh, xh2, w_ih, w_t, b, gates, gates2, h_last):
    """Block ``blk``'s samples through every step: ``gates (N, T, H)`` becomes ``h_t``."""
    lo, hi = span(blk, blocks, xh.shape[0])
    if lo >= hi:
        return
    _project(xh2, w_ih, b, gates2, lo, hi, gates.shape[1])
    f = w_ih.shape[1]
    for t in range(gates.shape[1]):
        if t > 0:
            _matmul_add(xh[lo:hi, t, f:], w_t, gates[lo:hi, t])
        for n in range(lo, hi):
            row = gates[n, t]
            _tanh_in_place(row)
            out = _h_out(xh, h_last, n, t, f)
            for j in range(out.shape[0]):
                out[j] = row[j]


@jit
def _lstm_cell(row, c_prev, c, h):
    """``c = f c_prev + i g``, ``h = o tanh(c)`` from the activated gates ``row (4H,)``."""
    n_h = c.shape[0]
    for j in range(n_h):
        cv = row[n_h + j] * c_prev[j] + row[j] * row[2 * n_h + j]
        c[j] = cv
        h[j] = row[3 * n_h + j] * _tanh(cv)


@jit
def _lstm_forward_body(blk, blocks, xh, xh2, w_ih, w_t, b, gates, gates2, cs, h_last):
    """Block ``blk``'s samples through every step: ``gates (N, T, 4H)`` becomes the activated
    gates, ``cs (N, T + 1, H)`` gets ``c_t`` at ``t + 1``."""
    lo, hi = span(blk, blocks, xh.shape[0])
    if lo >= hi:
        return
    _project(xh2, w_ih, b, gates2, lo, hi, gates.shape[1])
    f, n_h = w_ih.shape[1], cs.shape[2]
    for t in range(gates.shape[1]):
        if t > 0:
            _matmul_add(xh[lo:hi, t, f:], w_t, gates[lo:hi, t])
        for n in range(lo, hi):
            row = gates[n, t]
            _sigmoid_in_place(row[:2 * n_h])
            _tanh_in_place(row[2 * n_h:3 * n_h])
            _sigmoid_in_place(row[3 * n_h:])
            _lstm_cell(row, cs[n, t], cs[n, t + 1], _h_out(xh, h_last, n, t, f))


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
def _gru_forward_body(blk, blocks, xh, xh2, w_ih, w_t, b, b_hh, gates, gates2, gh, h_last):
    """Block ``blk``'s samples through every step: ``gates (N, T, 3H)`` (projected with ``b``:
    ``b_ih`` plus ``b_hr``, ``b_hz``) becomes ``r, z, n``; ``gh (N, T, 3H)`` gets
    ``h_{t-1} W_hh^T``, plus ``b_hn`` in its n part (the reset gate's gradient needs it);
    ``b_hh`` is the hidden bias or ``(0,)``."""
    lo, hi = span(blk, blocks, xh.shape[0])
    if lo >= hi:
        return
    _project(xh2, w_ih, b, gates2, lo, hi, gates.shape[1])
    f, n_h = w_ih.shape[1], h_last.shape[1]
    for t in range(gates.shape[1]):
        ghb = gh[lo:hi, t]
        ghb[:] = 0.0
        if t > 0:
            _matmul_add(xh[lo:hi, t, f:], w_t, ghb)
        for n in range(lo, hi):
            row, hrow = gates[n, t], gh[n, t]
            if b_hh.shape[0] > 0:
                for j in range(2 * n_h, 3 * n_h):
                    hrow[j] += b_hh[j]
            for j in range(2 * n_h):
                row[j] += hrow[j]
            _sigmoid_in_place(row[:2 * n_h])
            _gru_new(row, hrow, xh[n, t, f:], _h_out(xh, h_last, n, t, f))


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
def _weights(dgi2, dgh2, merged, xh2, w_ih, blk, lo, hi, steps, need_dx, dx2, pw, pb):
    """After a block's steps: its samples' ``dx = dg_i W_ih`` (one GEMM), and its share of the
    weights' and biases' gradients, ``pw[blk] = [dg_i^T x, dg_h^T h_prev]`` (one GEMM over
    ``[x_t, h_{t-1}]`` when the two sides' gradients are the same array, ``merged``) and
    ``pb[blk] = [Σ dg_i, Σ dg_h]``. The arrays are ``(N·T, .)``."""
    f, rows = w_ih.shape[1], dgi2.shape[1]
    xb = xh2[lo * steps:hi * steps]
    di = dgi2[lo * steps:hi * steps]
    dj = dgh2[lo * steps:hi * steps]
    if need_dx:
        gemm(False, False, 1.0, di, w_ih, 0.0, dx2[lo * steps:hi * steps])
    w = pw[blk]
    if merged:
        gemm(True, False, 1.0, di, xb, 0.0, w)
    else:
        gemm(True, False, 1.0, di, xb[:, :f], 0.0, w[:, :f])
        gemm(True, False, 1.0, dj, xb[:, f:], 0.0, w[:, f:])
    bi, bh = pb[blk, 0], pb[blk, 1]
    for j in range(rows):
        bi[j] = 0.0
        bh[j] = 0.0
    for r in range(di.shape[0]):
        a, c = di[r], dj[r]
        for j in range(rows):
            bi[j] += a[j]
        if not merged:
            for j in range(rows):
                bh[j] += c[j]
    if merged:
        for j in range(rows):
            bh[j] = bi[j]


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
            dh[lo:hi] = 0.0
            _matmul_add(dg[lo:hi, t], w_hh, dh[lo:hi])
    _weights(dg2, dg2, True, xh2, w_ih, blk, lo, hi, xh.shape[1], need_dx, dx2, pw, pb)


@jit
def _lstm_cell_backward(row, c_prev, c, dh, dc, out):
    """One step of one sample: ``out (4H,)`` gets the gates' pre-activation gradients; ``dc``
    comes in as the gradient from step t+1 (``dc_{t+1} f_{t+1}``) and leaves as this step's
    share for step t-1. Two loops, each with few enough arrays to vectorise."""
    n_h = c.shape[0]
    one = c.dtype.type(1.0)
    for j in range(n_h):
        og, tcv, d = row[3 * n_h + j], _tanh(c[j]), dh[j]
        dc[j] += d * og * (one - tcv * tcv)
        out[3 * n_h + j] = d * tcv * og * (one - og)
    for j in range(n_h):
        ig, fg, gg, dcv = row[j], row[n_h + j], row[2 * n_h + j], dc[j]
        out[j] = dcv * gg * ig * (one - ig)
        out[n_h + j] = dcv * c_prev[j] * fg * (one - fg)
        out[2 * n_h + j] = dcv * ig * (one - gg * gg)
        dc[j] = dcv * fg


@jit
def _lstm_backward_body(blk, blocks, dy, xh, xh2, w_ih, w_hh, gates, cs, dg, dg2, dh, dc, need_dx, dx2, pw, pb):
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
            _lstm_cell_backward(gates[n, t], cs[n, t], cs[n, t + 1], dh[n], dc[n], dg[n, t])
        if t > 0:
            dh[lo:hi] = 0.0
            _matmul_add(dg[lo:hi, t], w_hh, dh[lo:hi])
    _weights(dg2, dg2, True, xh2, w_ih, blk, lo, hi, xh.shape[1], need_dx, dx2, pw, pb)


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
            _gru_cell_backward(gates[n, t], gh[n, t], xh[n, t, f:], dh[n], dgi[n, t], dgh[n, t])
        if t > 0:
            _matmul_add(dgh[lo:hi, t], w_hh, dh[lo:hi])
    _weights(dgi2, dgh2, False, xh2, w_ih, blk, lo, hi, xh.shape[1], need_dx, dx2, pw, pb)


_rnn_backward_blocks = parallel(_rnn_backward_body)
_lstm_backward_blocks = parallel(_lstm_backward_body)
_gru_backward_blocks = parallel(_gru_backward_body)


# ----------------------------------------------------------------------------- entry points

def _blocks(n, steps, rows, units):
    """One block of samples per thread, or one block for a small recurrence."""
    return block_count(n, steps * n * rows * units, SPLIT)


def recurrent_forward(x, w_ih, w_hh, b_ih, b_hh, cell, sequences):
    """Run a recurrent layer over ``x (N, T, F)``.

    ``w_ih (G·H, F)``, ``w_hh (G·H, H)``, ``b_ih``, ``b_hh (G·H,)`` or both ``(0,)`` for no bias;
    ``cell`` is ``RNN``, ``LSTM`` or ``GRU``. Returns ``(y, cache)``: ``y`` every step's output
    ``(N, T, H)`` with ``sequences``, else the last step's ``(N, H)``, and what
    ``recurrent_backward`` takes back.
    """
    n, steps, f = x.shape
    rows, units = w_hh.shape
    dtype = x.dtype
    w_ih, w_hh = np.ascontiguousarray(w_ih), np.ascontiguousarray(w_hh)
    xh = np.empty((n, steps, f + units), dtype)
    xh[:, :, :f] = x
    xh[:, 0, f:] = 0.0
    bias = b_ih.shape[0] > 0
    if not bias:
        b = b_ih
    elif cell == GRU:       # b_hn stays inside the reset product
        b = b_ih.copy()
        b[:2 * units] += b_hh[:2 * units]
    else:
        b = b_ih + b_hh
    gates = np.empty((n, steps, rows), dtype)
    h_last = np.empty((n, units), dtype)
    w_t = np.ascontiguousarray(w_hh.T)
    blocks = _blocks(n, steps, rows, units)
    common = (blocks, xh, xh.reshape(n * steps, f + units), w_ih, w_t, b)
    flat = gates.reshape(n * steps, rows)
    if cell == RNN:
        aux = np.empty((0, 0, 0), dtype)
        _rnn_forward_blocks(blocks, common + (gates, flat, h_last))
    elif cell == LSTM:
        aux = np.empty((n, steps + 1, units), dtype)        # c_t at t + 1
        aux[:, 0] = 0.0
        _lstm_forward_blocks(blocks, common + (gates, flat, aux, h_last))
    else:
        aux = np.empty((n, steps, rows), dtype)             # h_{t-1} W_hh^T (+ b_hn)
        _gru_forward_blocks(blocks, common + (b_hh, gates, flat, aux, h_last))
    if sequences:
        y = np.empty((n, steps, units), dtype)
        y[:, :-1] = xh[:, 1:, f:]
        y[:, -1] = h_last
    else:
        y = h_last
    return y, (xh, gates, aux, f)


def recurrent_backward(dy, cache, w_ih, w_hh, cell, need_dx, bias):
    """Gradients of a recurrent layer, back-propagated through time.

    ``dy`` is the gradient of the output sequence ``(N, T, H)``, or of the last step only
    ``(N, H)``; ``cache`` is ``recurrent_forward``'s. Returns ``(dx, dw_ih, dw_hh, db_ih, db_hh)``:
    dx ``(N, T, F)`` (None unless ``need_dx``), the weights' and biases' gradients shaped like
    them (the biases' None without ``bias``).
    """
    xh, gates, aux, f = cache
    n, steps, _ = xh.shape
    rows, units = w_hh.shape
    dtype = xh.dtype
    w_ih, w_hh = np.ascontiguousarray(w_ih), np.ascontiguousarray(w_hh)
    dy = np.ascontiguousarray(dy).reshape(n, -1, units)
    dh = np.empty((n, units), dtype)
    dx = np.empty((n if need_dx else 0, steps, f), dtype)
    blocks = _blocks(n, steps, rows, units)
    pw = np.empty((blocks, rows, f + units), dtype)
    pb = np.empty((blocks, 2, rows), dtype)
    dgi = np.empty((n, steps, rows), dtype)
    common = (blocks, dy, xh, xh.reshape(n * steps, f + units), w_ih, w_hh, gates)
    tail = (need_dx, dx.reshape(-1, f), pw, pb)
    if cell == RNN:
        _rnn_backward_blocks(blocks, common + (dgi, dgi.reshape(n * steps, rows), dh) + tail)
    elif cell == LSTM:
        dc = np.empty((n, units), dtype)
        _lstm_backward_blocks(blocks, common + (aux, dgi, dgi.reshape(n * steps, rows), dh, dc) + tail)
    else:
        dgh = np.empty((n, steps, rows), dtype)
        _gru_backward_blocks(blocks, common + (aux, dgi, dgi.reshape(n * steps, rows), dgh,
                                               dgh.reshape(n * steps, rows), dh) + tail)
    # the blocks' shares, summed in block order (the bits depend on the thread count only)
    w, b = pw[0], pb[0]
    for blk in range(1, blocks):
        w, b = w + pw[blk], b + pb[blk]
    dw_ih, dw_hh = np.ascontiguousarray(w[:, :f]), np.ascontiguousarray(w[:, f:])
    db_ih, db_hh = (b[0].copy(), b[1].copy()) if bias else (None, None)
    return (dx if need_dx else None), dw_ih, dw_hh, db_ih, db_hh
