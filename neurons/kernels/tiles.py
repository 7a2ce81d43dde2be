"""Register-tiled matrix products for the few-row and the oddly shaped products where a BLAS call
costs about as much as the work (the recurrent layers' per-step products, the convolutions'
im2col products with few filters or channels): ``c (+)= op(a) @ b`` in tiles whose accumulators
stay in vector registers, every element of ``c`` the same chain of fused multiply-adds over the
depth whichever tile it falls in.

And the convolutions' products with their taps read straight from the flat padded planes (no
im2col copy, ``conv_taps.py``): ``tap_products`` (the forward pass, and dx as one), whose rows of
``b`` start at given offsets, and ``dot_products`` (the weights' gradient), each filter's dy
against each tap's slice, lane by lane into vector partials.
"""
import llvmlite.ir as ir
import numpy as np
from numba import types
from numba.core import cgutils, config
from numba.extending import intrinsic, overload

from ._config import FASTMATH, jit

# ----------------------------------------------------------------------------- products
# The per-step products, ``h_{t-1} W_hh^T`` forward and ``dg_t W_hh`` backward, are a few rows
# (16 at batch 32 on two threads) against the same weights every step. A BLAS GEMM packs the
# weights into its own layout on every call, which at these sizes costs about as much as the
# product: OpenBLAS here gave 12-18 GFLOP/s at 32 x 512 x 128 and 9-11 at 32 x 128 x 512, where a
# plain vectorised loop gave 14 and 10 and the register tiles below 20-23 (same machine, same
# hour; on a quieter hour, 30-37 at 16 x 512 x 128 and 16 x 128 x 512, against OpenBLAS's 25 a
# thread on a 2048^3 product). They also take a block's share of the weights' gradient,
# ``dg^T [x, h_prev]`` (``G·H x (nb·T) x (F + H)``, ``dg`` read transposed): 27-31 GFLOP/s at every
# batch size, where OpenBLAS's transposed product gave 11. (Those figures are an AMD host's with
# AVX2. On an Intel host with AVX-512, one thread, tiles of 32-byte vectors -> of 64-byte ones ->
# with their operands on 64-byte boundaries (``aligned_empty``): 64 x 288 x 224, lenet's 32 -> 64
# convolution, 100 -> 117 -> 153 GFLOP/s; 32 x 288 x 1088 76 -> 81 -> 116; 8 x 72 x 224 66 -> 78
# -> 93 (``python -m bench.tiles`` and the same products from aligned buffers).)

_TILE_ROWS = 6


def _vector_bytes():
    """The width of the tiles' vectors: 64 bytes where the CPU that Numba compiles for has AVX-512
    (its features as Numba's own code generator sets them, ``NUMBA_CPU_FEATURES`` included), else
    32 (AVX2; on older CPUs LLVM splits each vector in two). Numba's cache is keyed by those
    features, so machine code built for one width is never loaded on a CPU without it."""
    if config.DISABLE_JIT:
        return 32
    from numba.core.registry import cpu_target
    features = cpu_target.target_context.codegen()._tm_features.split(",")
    return 64 if "+avx512f" in features else 32


VECTOR = _vector_bytes()

# the depth taken at a time: a deep product (the weights' gradient over a block's every step)
# runs in slices whose share of both operands stays in the L1 cache (3584 deep, batch 128 on one
# thread: 7.7 GFLOP/s in one slice, 27 in slices of 256, 32.5 in slices of 64)
_DEPTH = 64
# what a tile does with ``c``: adds its product, sets ``c`` to it, or sets ``c`` to ``init``
# (a row, the bias) plus it: no pass over ``c`` beforehand to clear it or fill in the bias
# (NumPy integers, not ints: a jit function called with an int constant is compiled for that
# literal value, each mode apart, where these are one run-time type)
ADD, SET, SET_INIT = np.int64(0), np.int64(1), np.int64(2)


@intrinsic
def _tile(typingctx, a, b, c, init, i, j, depth, rows, vecs, ta, mode):
    """``c[i:i+rows, j:j+vV] (+)= op(a)[i:i+rows, :depth] @ b[:depth, j:j+vV]`` with ``V`` the
    elements of a vector of ``VECTOR`` bytes (AVX-512: 16 float32, 8 float64; else 8 and 4), ``rows``
    a literal 1..6 and ``vecs`` (``v``) 1 or 2, ``op(a)`` ``a`` or, when the literal ``ta`` is true,
    ``a.T``, and ``mode`` ``ADD`` (``+=``), ``SET`` (``=``) or ``SET_INIT`` (``= init[j:j+vV] +``,
    ``init`` 1-D). The accumulators (up to 6 x 2 vectors) stay in registers while ``k`` runs, each
    step a vector load of ``b``'s row ``k`` per vector, a broadcast of each row's ``op(a)[., k]`` and
    one fused multiply-add per accumulator.
    The 2-D arrays are of one float dtype with contiguous rows (any row stride: ``products``
    checks). ``mode`` is a run-time value, taken before and after the loop over ``k`` (selects,
    not branches): a literal one compiled every product that calls this once per mode."""
    arrays = (a, b, c)
    if not (all(isinstance(t, types.Array) and t.ndim == 2 for t in arrays)
            and isinstance(init, types.Array) and init.ndim == 1
            and c.dtype in (types.float32, types.float64) and a.dtype == b.dtype == c.dtype == init.dtype
            and isinstance(rows, types.IntegerLiteral) and 1 <= rows.literal_value <= _TILE_ROWS
            and isinstance(vecs, types.IntegerLiteral) and vecs.literal_value in (1, 2)
            and isinstance(ta, types.BooleanLiteral) and isinstance(mode, types.Integer)):
        return None
    n_rows, n_vecs, transposed = rows.literal_value, vecs.literal_value, ta.literal_value
    signature = types.void(a, b, c, init, i, j, depth, rows, vecs, ta, mode)

    def codegen(context, builder, sig, args):
        emit = _Emitter(context, builder, c.dtype)
        a_arr, b_arr, c_arr, init_arr = (context.make_array(t)(context, builder, v) for t, v in
                                         zip((a, b, c, init), args[:4]))
        i0, j0, depth_v, mode_v = (context.cast(builder, v, t, types.intp) for v, t in
                                   zip(args[4:7] + (args[10],), sig.args[4:7] + (sig.args[10],)))

        def a_at(r, k):
            return emit.address(a_arr, k, r) if transposed else emit.address(a_arr, r, k)

        def b_at(k, col):
            return emit.address(b_arr, k, col, emit.vty)

        emit.tile(a_at, b_at, c_arr, init_arr, i0, j0, depth_v, mode_v, n_rows, n_vecs)
        return context.get_dummy_value()

    return signature, codegen


@intrinsic
def _tap_tile(typingctx, a, b, offsets, c, i, j, depth, rows, vecs):
    """``c[i:i+rows, j:j+vV] = a[i:i+rows, :depth] @ B[:depth, j:j+vV]`` (see ``_tile``) where row
    ``k`` of ``B`` is ``b[offsets[k]:]``, ``b`` 1-D: a convolution's taps read straight from its
    flat padded planes (``offsets[k]``: where tap ``k``'s slice starts), no im2col copy."""
    if not (isinstance(a, types.Array) and a.ndim == 2 and isinstance(c, types.Array) and c.ndim == 2
            and isinstance(b, types.Array) and b.ndim == 1 and b.layout == "C"
            and isinstance(offsets, types.Array) and offsets.ndim == 1 and offsets.dtype == types.int64
            and c.dtype in (types.float32, types.float64) and a.dtype == b.dtype == c.dtype
            and isinstance(rows, types.IntegerLiteral) and 1 <= rows.literal_value <= _TILE_ROWS
            and isinstance(vecs, types.IntegerLiteral) and vecs.literal_value in (1, 2)):
        return None
    n_rows, n_vecs = rows.literal_value, vecs.literal_value
    signature = types.void(a, b, offsets, c, i, j, depth, rows, vecs)

    def codegen(context, builder, sig, args):
        emit = _Emitter(context, builder, c.dtype)
        a_arr, b_arr, o_arr, c_arr = (context.make_array(t)(context, builder, v) for t, v in
                                      zip((a, b, offsets, c), args[:4]))
        i0, j0, depth_v = (context.cast(builder, v, t, types.intp) for v, t in zip(args[4:7], sig.args[4:7]))
        first = builder.bitcast(o_arr.data, emit.intp.as_pointer())

        def b_at(k, col):
            start = builder.add(builder.load(builder.gep(first, [k])), col)
            return builder.bitcast(builder.gep(b_arr.data, [start]), emit.vty.as_pointer())

        emit.tile(lambda r, k: emit.address(a_arr, r, k), b_at, c_arr, None, i0, j0, depth_v, None, n_rows,
                  n_vecs)
        return context.get_dummy_value()

    return signature, codegen


@intrinsic
def _dot_tile(typingctx, g, b, offsets, part, q, t, length, rows, taps):
    """``part[q + r, t + u] += Σ_s g[q + r, s:s + V] · b[offsets[t + u] + s:... + V]`` over ``s`` in
    steps of a vector ``V`` up to ``length`` (a whole number of vectors), for ``r`` below the literal
    ``rows`` and ``u`` below the literal ``taps``: the weights' gradient of a convolution by tap
    tiles (``conv_taps.py``, ``conv_direct.py``), dy (``g``, at the padded width) against each
    tap's slice of the flat padded planes ``b`` (see ``_tap_tile``), lane by lane into vector
    partials ``part (F, taps, V)`` (their lanes summed once at the end, not per sample). The accumulators (``rows · taps`` vectors) stay
    in registers while ``s`` runs: a vector load of each row and of each tap per step."""
    if not (isinstance(g, types.Array) and g.ndim == 2 and isinstance(part, types.Array) and part.ndim == 3
            and isinstance(b, types.Array) and b.ndim == 1 and b.layout == "C"
            and isinstance(offsets, types.Array) and offsets.ndim == 1 and offsets.dtype == types.int64
            and part.dtype in (types.float32, types.float64) and g.dtype == b.dtype == part.dtype
            and isinstance(rows, types.IntegerLiteral) and isinstance(taps, types.IntegerLiteral)):
        return None
    n_rows, n_taps = rows.literal_value, taps.literal_value
    signature = types.void(g, b, offsets, part, q, t, length, rows, taps)

    def codegen(context, builder, sig, args):
        emit = _Emitter(context, builder, part.dtype)
        vty, size, const = emit.vty, emit.size, emit.const
        g_arr, b_arr, o_arr, p_arr = (context.make_array(ty)(context, builder, v) for ty, v in
                                      zip((g, b, offsets, part), args[:4]))
        q0, t0, length_v = (context.cast(builder, v, ty, types.intp) for v, ty in zip(args[4:7], sig.args[4:7]))
        first = builder.bitcast(o_arr.data, emit.intp.as_pointer())
        starts = [builder.load(builder.gep(first, [builder.add(t0, const(u))])) for u in range(n_taps)]
        p_strides = cgutils.unpack_tuple(builder, p_arr.strides)
        i8p = ir.IntType(8).as_pointer()

        def partial(r, u):
            offset = builder.add(builder.mul(builder.add(q0, const(r)), p_strides[0]),
                                 builder.mul(builder.add(t0, const(u)), p_strides[1]))
            return builder.bitcast(builder.gep(builder.bitcast(p_arr.data, i8p), [offset]), vty.as_pointer())

        acc = [[cgutils.alloca_once_value(builder, builder.load(partial(r, u), align=size)) for u in range(n_taps)]
               for r in range(n_rows)]
        steps = builder.udiv(length_v, const(emit.width))
        with cgutils.for_range(builder, steps) as loop:
            col = builder.mul(loop.index, const(emit.width))
            gs = [builder.load(emit.address(g_arr, builder.add(q0, const(r)), col, vty), align=size)
                  for r in range(n_rows)]
            for u in range(n_taps):
                p = builder.bitcast(builder.gep(b_arr.data, [builder.add(starts[u], col)]), vty.as_pointer())
                bu = builder.load(p, align=size)
                for r in range(n_rows):
                    builder.store(builder.call(emit.fma, [gs[r], bu, builder.load(acc[r][u])]), acc[r][u])
        for r in range(n_rows):
            for u in range(n_taps):
                builder.store(builder.load(acc[r][u]), partial(r, u), align=size)
        return context.get_dummy_value()

    return signature, codegen


class _Emitter:
    """The LLVM IR of one register tile (``_tile``, ``_tap_tile``), for arrays of ``dtype``."""

    def __init__(self, context, builder, dtype):
        self.builder = builder
        self.fty = context.get_value_type(dtype)
        self.size = context.get_abi_sizeof(self.fty)
        self.width = VECTOR // self.size
        self.vty = ir.VectorType(self.fty, self.width)
        self.intp = context.get_value_type(types.intp)
        self.fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(self.vty, [self.vty] * 3),
                                                  f"llvm.fma.v{self.width}f{8 * self.size}")

    def const(self, v):
        return ir.Constant(self.intp, v)

    def address(self, ary, row, col, ty=None):
        """A pointer (to a ``ty``, by default one element) to ``ary[row, col]`` (contiguous rows)."""
        builder = self.builder
        stride = cgutils.unpack_tuple(builder, ary.strides)[0]
        offset = builder.add(builder.mul(row, stride), builder.mul(col, self.const(self.size)))
        i8p = ir.IntType(8).as_pointer()
        return builder.bitcast(builder.gep(builder.bitcast(ary.data, i8p), [offset]), (ty or self.fty).as_pointer())

    def tile(self, a_at, b_at, c_arr, init_arr, i0, j0, depth, mode, n_rows, n_vecs):
        """The tile: ``a_at(r, k)`` points to op(a)'s element, ``b_at(k, col)`` to B's vector at
        (k, col); ``mode`` as ``_tile``'s, or None: set (then ``init_arr`` is not read)."""
        builder, vty, size, width, const, fma = self.builder, self.vty, self.size, self.width, self.const, self.fma
        undef = ir.Constant(vty, ir.Undefined)
        splat = ir.Constant(ir.VectorType(ir.IntType(32), width), [0] * width)
        zeros = ir.Constant(vty, [ir.Constant(self.fty, 0.0)] * width)

        def column(v):
            return builder.add(j0, const(v * width))

        if mode is None:
            starts = [zeros] * n_vecs
        else:
            # SET_INIT starts from init's vectors, the others from zeros (read from a zero vector
            # of the stack: init may be empty then, and is not to be read)
            with_init = builder.icmp_signed("==", mode, const(SET_INIT))
            adding = builder.icmp_signed("==", mode, const(ADD))
            nothing = cgutils.alloca_once_value(builder, zeros)
            starts = []
            for v in range(n_vecs):
                offset = builder.mul(column(v), cgutils.unpack_tuple(builder, init_arr.strides)[0])
                i8p = ir.IntType(8).as_pointer()
                p = builder.bitcast(builder.gep(builder.bitcast(init_arr.data, i8p), [offset]), vty.as_pointer())
                starts.append(builder.load(builder.select(with_init, p, nothing), align=size))
        acc = [[cgutils.alloca_once_value(builder, starts[v]) for v in range(n_vecs)] for _ in range(n_rows)]
        with cgutils.for_range(builder, depth) as loop:
            k = loop.index
            bk = [builder.load(b_at(k, column(v)), align=size) for v in range(n_vecs)]
            for r in range(n_rows):
                x = builder.load(a_at(builder.add(i0, const(r)), k))
                xs = builder.shuffle_vector(builder.insert_element(undef, x, ir.Constant(ir.IntType(32), 0)),
                                            undef, splat)
                for v in range(n_vecs):
                    builder.store(builder.call(fma, [xs, bk[v], builder.load(acc[r][v])]), acc[r][v])
        for r in range(n_rows):
            for v in range(n_vecs):
                p = self.address(c_arr, builder.add(i0, const(r)), column(v), vty)
                value = builder.load(acc[r][v])
                if mode is not None:
                    value = builder.select(adding, builder.fadd(builder.load(p, align=size), value), value)
                builder.store(value, p, align=size)


if config.DISABLE_JIT:
    def _tile(a, b, c, init, i, j, depth, rows, vecs, ta, mode):     # noqa: F811
        cols = vecs * (VECTOR // c.itemsize)
        ai = a[:depth, i:i + rows].T if ta else a[i:i + rows, :depth]
        product = ai @ b[:depth, j:j + cols]
        if mode == ADD:
            c[i:i + rows, j:j + cols] += product
        else:
            c[i:i + rows, j:j + cols] = product + (init[j:j + cols] if mode == SET_INIT else 0)

    def _tap_tile(a, b, offsets, c, i, j, depth, rows, vecs):     # noqa: F811
        cols = vecs * (VECTOR // c.itemsize)
        taps = np.stack([b[o + j:o + j + cols] for o in offsets[:depth]])
        c[i:i + rows, j:j + cols] = a[i:i + rows, :depth] @ taps

    def _dot_tile(g, b, offsets, part, q, t, length, rows, taps):     # noqa: F811
        width = VECTOR // part.itemsize
        for r in range(q, q + rows):
            for u in range(t, t + taps):
                o = offsets[u]
                part[r, u] += (g[r, :length] * b[o:o + length]).reshape(-1, width).sum(axis=0)


@jit
def _strided(x):
    return x.shape[1] > 1 and x.strides[1] != x.itemsize


@jit
def _rows(a, b, c, init, j, depth, vecs, ta, mode):
    """Columns ``j:j + vecs·V`` of ``c`` (see ``_tile``), in tiles of 6 rows, then one of 4 and single
    rows for what is left (each tile size is compiled apart: three keep the compilation short, and
    16 or 64 rows, a block at batch 32 or 128, need no single rows)."""
    m = c.shape[0]
    full = m - m % _TILE_ROWS
    four = full + 4 if m - full >= 4 else full
    for i in range(0, full, _TILE_ROWS):
        _tile(a, b, c, init, i, j, depth, 6, vecs, ta, mode)
    if four > full:
        _tile(a, b, c, init, full, j, depth, 4, vecs, ta, mode)
    for i in range(four, m):
        _tile(a, b, c, init, i, j, depth, 1, vecs, ta, mode)


@jit
def _slice(a, b, c, init, ta, mode):
    """``c (+)= op(a) @ b`` over the tiled columns: tiles of two vectors, then one of one vector
    where a vector's columns or more are left (AVX-512's 16 float32 columns of 784: 48 more
    columns in tiles, not in ``products``' plain loop)."""
    n = c.shape[1]
    depth = b.shape[0]
    width = VECTOR // c.itemsize
    pairs = n - n % (2 * width)
    for j in range(0, pairs, 2 * width):
        _rows(a, b, c, init, j, depth, 2, ta, mode)
    if n - pairs >= width:
        _rows(a, b, c, init, pairs, depth, 1, ta, mode)


def _tiled(a, b, c, init, ta, mode):
    """``products``' tiled columns: with ``ta`` the depth in slices of ``_DEPTH``, the first with
    ``mode``, the others adding; else all of it at once. (An overload picks the branch while
    typing, by the literal ``ta``: a plain ``if ta`` is not pruned, and its untaken branch compiled
    a second ``_slice``, about 0.4 s, for every product without ``ta``.)"""
    if ta:
        depth = b.shape[0]
        for k0 in range(0, max(depth, 1), _DEPTH):
            k1 = min(depth, k0 + _DEPTH)
            _slice(a[k0:k1], b[k0:k1], c, init, ta, mode if k0 == 0 else ADD)
    else:
        _slice(a, b, c, init, ta, mode)


@overload(_tiled, jit_options=dict(fastmath=FASTMATH, error_model="numpy"))
def _tiled_typed(a, b, c, init, ta, mode):
    if not isinstance(ta, types.BooleanLiteral):
        return None
    # with ta both branches compile the same _slice; without it, only the plain one
    return _tiled if ta.literal_value else lambda a, b, c, init, ta, mode: _slice(a, b, c, init, ta, mode)


@jit
def products(a, b, c, init, ta, mode):
    """``c (+)= op(a) @ b`` for ``op(a) (m, k)`` (``a``, or ``a.T`` with the literal ``ta``),
    ``b (k, n)`` and ``c (m, n)``, each with contiguous rows (any row stride), ``mode`` as
    ``_tile``'s: tiles of 6 rows (see ``_rows``) and 2 vectors (one where that many columns are
    left, see ``_slice``), a column panel of ``b`` at a time (it stays in the L1 cache while the
    row tiles pass), leftover columns in a plain loop;
    with ``ta`` (the weights' gradient, deep) the depth in slices of ``_DEPTH``, the first with
    ``mode``, the others adding. Each element of ``c`` gets the same chain of fused multiply-adds
    over ``k`` whichever tile it falls in, so a row's result does not depend on the rows beside
    it."""
    depth, n = b.shape
    m = a.shape[1] if ta else a.shape[0]
    if (a.shape[0] if ta else a.shape[1]) != depth or c.shape[0] != m or c.shape[1] != n:
        raise ValueError("products: shapes do not match")
    if _strided(a) or _strided(b) or _strided(c):
        raise ValueError("products: rows must be contiguous")
    _tiled(a, b, c, init, ta, mode)
    n_tiled = n - n % (VECTOR // c.itemsize)
    for i in range(m):
        ci = c[i]
        if mode != ADD:
            for j in range(n_tiled, n):
                ci[j] = init[j] if mode == SET_INIT else 0.0
        for k in range(depth):
            x, bk = (a[k, i] if ta else a[i, k]), b[k]
            for j in range(n_tiled, n):
                ci[j] += x * bk[j]


@jit
def _tap_rows(a, b, offsets, c, j, depth, vecs):
    """Columns ``j:j + vecs·V`` of ``tap_products``' ``c``, in tiles of 6 and of 4 rows, as few
    single rows left as that leaves (a single row's tile loads a vector of ``B`` per two
    multiply-adds: 8 filters in 6 + 1 + 1 rows took 2.44 us a sample of 14 x 14, in 4 + 4 2.02)."""
    m = c.shape[0]
    fours = 0
    for f in range(1, 3):           # 0, 1 or 2 tiles of 4: the fewest rows left over by the tiles of 6
        if 4 * f <= m and (m - 4 * f) % _TILE_ROWS < (m - 4 * fours) % _TILE_ROWS:
            fours = f
    sixes = (m - 4 * fours) // _TILE_ROWS * _TILE_ROWS
    for i in range(0, sixes, _TILE_ROWS):
        _tap_tile(a, b, offsets, c, i, j, depth, 6, vecs)
    for i in range(sixes, sixes + 4 * fours, 4):
        _tap_tile(a, b, offsets, c, i, j, depth, 4, vecs)
    for i in range(sixes + 4 * fours, m):
        _tap_tile(a, b, offsets, c, i, j, depth, 1, vecs)


@jit
def tap_products(a, b, offsets, c):
    """``c = a @ B`` for ``a (m, k)``, ``c (m, n)`` with ``n`` a whole number of ``tile_columns``, and ``B
    (k, n)`` whose row ``r`` is ``b[offsets[r]:offsets[r] + n]`` (``b`` 1-D): a convolution's forward
    product read from its flat padded planes, each tap a slice of them (the rows of an im2col,
    not copied). Tiles as ``products``'; each element of ``c`` one chain of fused multiply-adds
    over ``k`` from zero, in ``k``'s order."""
    m, n = c.shape
    depth = offsets.shape[0]
    if a.shape[0] != m or a.shape[1] != depth or n != tile_columns(n, c):
        raise ValueError("tap_products: shapes do not match")
    if _strided(a) or _strided(c):
        raise ValueError("tap_products: rows must be contiguous")
    for r in range(depth):
        if offsets[r] < 0 or offsets[r] + n > b.shape[0]:
            raise ValueError("tap_products: a tap runs past its planes")
    for j in range(0, n, 2 * lanes(c)):
        _tap_rows(a, b, offsets, c, j, depth, 2)


@jit
def dot_products(g, b, offsets, part):
    """``part (F, taps, V) +=`` each filter's dy row ``g[f]`` times each tap's slice of the flat
    planes ``b`` (see ``_dot_tile``), lane by lane: ``part.sum(axis=2)`` is the weights' gradient
    (F, taps). ``g (F, n)``: ``n`` a whole number of ``tile_columns``. Tiles of 4 filters x 4 taps (24 of
    the 32 vector registers with their operands), then single filters and single taps."""
    f, n = g.shape
    taps = offsets.shape[0]
    width = lanes(g)
    if part.shape[0] != f or part.shape[1] != taps or part.shape[2] != width or n != tile_columns(n, g):
        raise ValueError("dot_products: shapes do not match")
    if _strided(g) or part.strides[2] != part.itemsize or part.strides[1] != width * part.itemsize:
        raise ValueError("dot_products: rows must be contiguous")
    for r in range(taps):
        if offsets[r] < 0 or offsets[r] + n > b.shape[0]:
            raise ValueError("dot_products: a tap runs past its planes")
    rows4, taps4 = f - f % 4, taps - taps % 4
    for q in range(0, rows4, 4):
        for t in range(0, taps4, 4):
            _dot_tile(g, b, offsets, part, q, t, n, 4, 4)
        for t in range(taps4, taps):
            _dot_tile(g, b, offsets, part, q, t, n, 4, 1)
    for q in range(rows4, f):
        for t in range(0, taps4, 4):
            _dot_tile(g, b, offsets, part, q, t, n, 1, 4)
        for t in range(taps4, taps):
            _dot_tile(g, b, offsets, part, q, t, n, 1, 1)


@jit(inline="always")
def add_lanes(part, out):
    """``out += part.sum(axis=2)``: ``dot_products``' partials (F, taps, V) into (F, taps), each
    element's lanes summed in one fixed order (the same bits every run)."""
    for q in range(part.shape[0]):
        for t in range(part.shape[1]):
            acc = part.dtype.type(0.0)
            for v in range(part.shape[2]):
                acc += part[q, t, v]
            out[q, t] += acc


@jit(inline="always")
def tile_columns(n, like):
    """``n`` rounded up to whole tiles' columns (two vectors of ``like``'s dtype): the columns
    ``tap_products`` and ``dot_products`` take (the tiles of one vector, compiled too, took 0.3 s
    of a cold start for 1 of 53 vectors on a 28 x 30 plane)."""
    pair = 2 * VECTOR // like.itemsize
    return (n + pair - 1) // pair * pair


@jit(inline="always")
def lanes(like):
    """The elements of a vector of ``like``'s dtype."""
    return VECTOR // like.itemsize


@jit
def aligned_empty(rows, cols, like):
    """An uninitialised C-contiguous (rows, cols) array of ``like``'s dtype whose data starts on a
    ``VECTOR``-byte boundary, and so each row too when ``cols`` fills whole vectors: the tiles'
    vector loads and stores then never straddle two cache lines (Numba's ``np.empty`` gives 32-byte
    boundaries: on AVX-512, 64 x 288 x 224 ran at 117 GFLOP/s from those, 153 from 64-byte ones)."""
    per = VECTOR // like.itemsize
    buf = np.empty(rows * cols + per, like.dtype)
    skip = (VECTOR - buf.ctypes.data % VECTOR) % VECTOR // like.itemsize
    return buf[skip:skip + rows * cols].reshape(rows, cols)


@jit
def matmul_add(a, b, c):
    """``c += a @ b`` (see ``products``)."""
    products(a, b, c, np.empty(0, c.dtype), False, ADD)


@jit
def matmul_set(a, b, c):
    """``c = a @ b`` (see ``products``)."""
    products(a, b, c, np.empty(0, c.dtype), False, SET)


@jit
def matmul_set_at(a, b, c):
    """``c = a.T @ b`` (see ``products``)."""
    products(a, b, c, np.empty(0, c.dtype), True, SET)


@jit
def matmul_bias(a, b, c, init):
    """``c = init + a @ b``, ``init`` a row (see ``products``)."""
    products(a, b, c, init, False, SET_INIT)
