"""Convolution, transposed convolution and max-pool kernels against naive loops; gradients by
central differences; the adjoint identity; ties; the block paths against one-block runs."""
import itertools

import numpy as np
import pytest

from neurons.kernels import conv as kc
from neurons.kernels import conv_gemm, conv_planes, conv_taps
from neurons.kernels import deconv as kd
from neurons.kernels import maxpool as kp
from neurons.kernels._config import BLOCKS

from . import reference as ref

OPTIONS = list(itertools.product([1, 2, 3], [0, 1, 2], [1, 2]))       # stride, padding, dilation
TOL = {np.float32: 2e-5, np.float64: 1e-12}
# each form at stride 1 and at other strides, whatever the table would pick for the shape
STRATEGIES = {"direct": (kc.DIRECT, kc.STRIDED_ROWS), "gemm": (kc.GEMM, kc.STRIDED_GEMM)}


def _case(n, dtype, seed=0, c=2, f=3, h=7, w=6, kh=3, kw=2):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, c, h, w)).astype(dtype), rng.normal(size=(f, c, kh, kw)).astype(dtype),
            rng.normal(size=f).astype(dtype))


def _out(size, k, s, p, d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 3])
def test_conv_primitives_against_naive_loops(strategy, dtype, n):
    x, k, _ = _case(n, dtype)
    tol = TOL[dtype]
    for s, p, d in OPTIONS:
        impl = STRATEGIES[strategy][s != 1]
        correlate, scatter, weight_grad = impl.correlate, impl.scatter, impl.weight_grad
        st, pa, di = (s, s), (p, p + 1 if p < 2 else p), (d, d)      # rectangular padding too
        oh, ow = _out(7, 3, s, pa[0], d), _out(6, 2, s, pa[1], d)
        if oh < 1 or ow < 1:
            continue
        y = correlate(x, k, st, pa, di, oh, ow)
        assert y.dtype == dtype
        want = ref.conv2d(x.astype(float), k.astype(float), None, st, pa, di)
        np.testing.assert_allclose(y, want, rtol=tol * 10, atol=tol * 10, err_msg=f"{s, p, d}")
        dy = np.random.default_rng(1).normal(size=y.shape).astype(dtype)
        # the gradients of <dy, conv(x, k)>: naive sums over the definition
        dx = scatter(dy, k, st, pa, di, 7, 6)
        dk = weight_grad(dy, x, st, pa, di, 3, 2)
        assert dx.dtype == dk.dtype == dtype
        wx = np.zeros(x.shape)
        wk = np.zeros(k.shape)
        for idx in np.ndindex(*y.shape):
            sn, q, a, b = idx
            for ch, i, j in np.ndindex(2, 3, 2):
                r, col = a * s - pa[0] + i * d, b * s - pa[1] + j * d
                if 0 <= r < 7 and 0 <= col < 6:
                    wx[sn, ch, r, col] += dy[idx] * k[q, ch, i, j]
                    wk[q, ch, i, j] += dy[idx] * x[sn, ch, r, col]
        np.testing.assert_allclose(dx, wx, rtol=tol * 10, atol=tol * 10, err_msg=f"dx {s, p, d}")
        np.testing.assert_allclose(dk, wk, rtol=tol * 10, atol=tol * 100, err_msg=f"dk {s, p, d}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("filters, channels", [(11, 2), (12, 2), (16, 2), (11, 1)])
def test_fused_stride1_backward_equals_the_checked_primitives(dtype, n, filters, channels):
    """conv_backward's one-pass GEMM form (stride 1, >= 4 filters, at least
    ``conv.DIRECT_WEIGHTS`` weights): dx, dk, db as the direct loops. Its dk is accumulated as
    (taps, F) when there are more taps (2·3·2 = 12) than filters, else as (F, taps): 11 filters
    over 2 channels take the first, 12, 16 and 11 (over 1·3·2 taps) the second."""
    assert kc.implementation(filters, channels, 3, 2, (1, 1)) is kc.GEMM
    x, _, _ = _case(n, dtype, seed=4)
    x = np.ascontiguousarray(x[:, :channels])
    k = np.random.default_rng(5).normal(size=(filters, channels, 3, 2)).astype(dtype)
    tol = TOL[dtype] * 10
    for p, d in itertools.product([0, 1, 2], [1, 2]):
        pa, di = (p, p + 1 if p < 2 else p), (d, d)
        oh, ow = _out(7, 3, 1, pa[0], d), _out(6, 2, 1, pa[1], d)
        dy = np.random.default_rng(6).normal(size=(n, filters, oh, ow)).astype(dtype)
        for need_dx in (True, False):
            dx, dk, db = kc.conv_backward(dy, x, k, (1, 1), pa, di, need_dx)
            assert (dx is None) != need_dx
            np.testing.assert_allclose(dk, kc.DIRECT.weight_grad(dy, x, (1, 1), pa, di, 3, 2), rtol=tol, atol=tol)
            np.testing.assert_allclose(db, dy.astype(float).sum(axis=(0, 2, 3)), rtol=tol, atol=tol)
            if need_dx:
                np.testing.assert_allclose(dx, kc.DIRECT.scatter(dy, k, (1, 1), pa, di, 7, 6), rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("filters, channels, kh, kw", [(5, 1, 3, 3), (7, 2, 2, 2), (8, 1, 3, 3), (4, 3, 3, 3)])
def test_few_weights_take_the_direct_loops_and_gemm_gives_them_too(dtype, filters, channels, kh, kw):
    """Below ``conv.DIRECT_WEIGHTS`` weights (45, 56) the table takes the direct loops, however
    many filters; from it (72, 108) im2col and GEMM. The fused stride-1 GEMM forward and backward
    give the direct loops' results for either, with the bias and ReLU, padding and dilation."""
    from neurons.kernels import conv_gemm
    few = filters * channels * kh * kw in (45, 56)
    assert kc.implementation(filters, channels, kh, kw, (1, 1)) is (kc.DIRECT if few else kc.GEMM)
    rng = np.random.default_rng(7)
    x = rng.normal(size=(3, channels, 9, 8)).astype(dtype)
    k = rng.normal(size=(filters, channels, kh, kw)).astype(dtype)
    b = rng.normal(size=filters).astype(dtype)
    tol = TOL[dtype] * 10
    for pa, di in [((0, 0), (1, 1)), ((1, 1), (1, 1)), ((2, 1), (2, 1))]:
        oh, ow = _out(9, kh, 1, pa[0], di[0]), _out(8, kw, 1, pa[1], di[1])
        y = conv_gemm.forward(x, k, b, True, pa, di, oh, ow)
        want = np.maximum(kc.DIRECT.correlate(x, k, (1, 1), pa, di, oh, ow) + b[:, None, None], 0)
        np.testing.assert_allclose(y, want, rtol=tol, atol=tol)
        dy = rng.normal(size=y.shape).astype(dtype)
        dx, dk, db = conv_gemm.backward(dy, y, x, k, pa, di, True)
        g = dy * (y > 0)
        np.testing.assert_allclose(dk, kc.DIRECT.weight_grad(g, x, (1, 1), pa, di, kh, kw), rtol=tol, atol=tol)
        np.testing.assert_allclose(db, g.astype(float).sum(axis=(0, 2, 3)), rtol=tol, atol=tol)
        np.testing.assert_allclose(dx, kc.DIRECT.scatter(g, k, (1, 1), pa, di, 9, 8), rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("filters", [1, 4, 5, 8, 10, 13])   # tiles of 6 and 4 rows, single rows
@pytest.mark.parametrize("taps", [1, 4, 9, 18])             # whole tiles of 4 taps, or not; single taps
def test_tap_tiles_read_the_taps_straight_from_the_planes(dtype, filters, taps):
    """``tap_products`` (the convolutions' forward) and ``dot_products`` (the few-weights weight
    gradient) against NumPy on an explicit im2col: each tap's row a slice of the flat planes at its
    offset, in any order; columns in whole tiles (two vectors) only."""
    from neurons.kernels import tiles
    width = tiles.VECTOR // np.dtype(dtype).itemsize
    rng = np.random.default_rng(taps)
    n = 4 * width
    like = np.empty(0, dtype)
    assert tiles.tile_columns(n - width, like) == n == tiles.tile_columns(n, like)
    planes = rng.normal(size=n + 40).astype(dtype)
    offsets = rng.permutation(41)[:taps].astype(np.int64)
    cols = np.stack([planes[o:o + n] for o in offsets])          # the im2col the tiles do without
    a = rng.normal(size=(filters, taps)).astype(dtype)
    c = tiles.aligned_empty(filters, n, a)
    tiles.tap_products(a, planes, offsets, c)
    tol = TOL[dtype] * 10
    np.testing.assert_allclose(c, a @ cols, rtol=tol, atol=tol)
    g = rng.normal(size=(filters, n)).astype(dtype)
    lanes = np.ones((filters, taps, width), dtype)
    tiles.dot_products(g, planes, offsets, lanes)
    dk = np.full((filters, taps), 2, dtype)
    tiles.add_lanes(lanes, dk)
    np.testing.assert_allclose(dk, g @ cols.T + width + 2, rtol=tol, atol=tol)
    with pytest.raises(ValueError, match="runs past"):
        tiles.tap_products(a, planes[:n + offsets.max() - 1], offsets, c)
    with pytest.raises(ValueError, match="shapes"):
        tiles.dot_products(g[:, :n - width], planes, offsets, lanes)     # not whole tiles


@pytest.mark.parametrize("ph, pw, tail", [(0, 0, 1), (1, 1, 3), (0, 3, 1), (2, 0, 5)])
def test_pad_writes_every_border_zero(ph, pw, tail):
    x = np.random.default_rng(15).uniform(1, 2, size=(3, 2, 4, 5))
    want = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))).reshape(3, 2, -1)
    want = np.concatenate([want, np.zeros((3, 2, tail))], axis=2)
    # fill the heap with garbage first, so that memory left unwritten would show
    for _ in range(3):
        np.full((3, 2, want.shape[2]), np.nan)
    np.testing.assert_array_equal(conv_planes.pad(x, ph, pw, tail), want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bias", [True, False])
def test_conv_layer_forward_with_bias(dtype, bias):
    x, k, b = _case(3, dtype, seed=2)
    b = b if bias else np.empty(0, dtype)
    y = kc.conv_forward(x, k, b, (2, 1), (1, 2), (1, 2))
    want = ref.conv2d(x.astype(float), k.astype(float), b if bias else None, (2, 1), (1, 2), (1, 2))
    np.testing.assert_allclose(y, want, rtol=TOL[dtype] * 10, atol=TOL[dtype] * 10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 3])
def test_deconv_forward_against_naive_loops(dtype, n):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(n, 3, 5, 4)).astype(dtype)
    k = rng.normal(size=(3, 2, 3, 2)).astype(dtype)
    b = rng.normal(size=2).astype(dtype)
    for s, p, d in OPTIONS:
        for op in sorted({0, max(s, d) - 1}):
            oh = (5 - 1) * s - 2 * p + d * 2 + 1 + op
            ow = (4 - 1) * s - 2 * p + d * 1 + 1 + op
            if oh < 1 or ow < 1:
                continue
            y = kd.deconv_forward(x, k, b, (s, s), (p, p), (d, d), (op, op))
            assert y.dtype == dtype and y.shape == (n, 2, oh, ow)
            want = ref.conv_transpose2d(x.astype(float), k.astype(float), b, (s, s), (p, p), (d, d), (op, op))
            np.testing.assert_allclose(y, want, rtol=TOL[dtype] * 10, atol=TOL[dtype] * 10, err_msg=f"{s, p, d, op}")


def _fd(f, a, h=1e-6, count=8, seed=0):
    """Central differences of the scalar f at ``count`` random entries of ``a``."""
    rng = np.random.default_rng(seed)
    out = []
    for i in rng.choice(a.size, min(count, a.size), replace=False):
        old = a.flat[i]
        a.flat[i] = old + h
        fp = f()
        a.flat[i] = old - h
        fm = f()
        a.flat[i] = old
        out.append((i, (fp - fm) / (2 * h)))
    return out


@pytest.mark.parametrize("filters", [3, 5])         # 5: stride 1 takes the one-pass GEMM backward
@pytest.mark.parametrize("s, p, d", [(1, 1, 1), (2, 0, 1), (2, 1, 2), (3, 2, 1), (1, 2, 2)])
def test_conv_layer_gradients_central_differences(s, p, d, filters):
    x, k, b = _case(2, np.float64, seed=4, f=filters)
    st, pa, di = (s, s), (p, p), (d, d)
    dy = np.random.default_rng(5).normal(size=kc.conv_forward(x, k, b, st, pa, di).shape)

    def loss():
        return float(np.sum(dy * np.tanh(kc.conv_forward(x, k, b, st, pa, di))))
    z = kc.conv_forward(x, k, b, st, pa, di)
    dz = dy * (1 - np.tanh(z) ** 2)
    dx, dk, db = kc.conv_backward(np.ascontiguousarray(dz), x, k, st, pa, di, True)
    for arr, grad in ((x, dx), (k, dk), (b, db)):
        for i, num in _fd(loss, arr):
            assert grad.flat[i] == pytest.approx(num, rel=1e-6, abs=1e-8)
    dx0, _, db0 = kc.conv_backward(np.ascontiguousarray(dz), x, k, st, pa, di, False, False)
    assert dx0 is None and db0 is None


@pytest.mark.parametrize("filters, s", [(5, 1), (3, 1), (5, 2)])    # (5, 1): the fused GEMM form
def test_conv_relu_in_the_kernel_central_differences(filters, s):
    x, k, b = _case(2, np.float64, seed=7, f=filters)
    st, pa, di = (s, s), (1, 1), (1, 1)
    z = kc.conv_forward(x, k, b, st, pa, di)
    y = kc.conv_forward(x, k, b, st, pa, di, relu=True)
    np.testing.assert_array_equal(y, np.maximum(z, 0))
    assert (z < 0).any() and (z > 0).any()
    dy = np.random.default_rng(8).normal(size=y.shape)

    def loss():
        return float(np.sum(dy * kc.conv_forward(x, k, b, st, pa, di, relu=True)))
    dx, dk, db = kc.conv_backward(dy, x, k, st, pa, di, True, True, relu_y=y)
    for arr, grad in ((x, dx), (k, dk), (b, db)):
        for i, num in _fd(loss, arr):
            assert grad.flat[i] == pytest.approx(num, rel=1e-6, abs=1e-8)


@pytest.mark.parametrize("filters, channels", [(1, 1), (5, 2), (9, 3)])
@pytest.mark.parametrize("kernel, padding, dilation", [((3, 3), (1, 1), (1, 1)), ((3, 5), (1, 2), (1, 1)),
                                                       ((3, 3), (2, 1), (2, 1)), ((1, 1), (0, 0), (1, 1))])
@pytest.mark.parametrize("relu", [False, True])
def test_tap_tiles_backward_central_differences(filters, channels, kernel, padding, dilation, relu):
    """``conv_taps.backward`` (stride 1, padding that keeps the plane's size, below
    ``conv.TAPS_FILTERS``): dx as the forward pass of the padded dy with the kernel turned, dk by
    dot-product tiles, with the ReLU in the kernel or not; float32 against the other backward."""
    from neurons.kernels import conv_direct
    assert kc.taps_backward(filters, kernel, (1, 1), padding, dilation)
    assert not kc.taps_backward(kc.TAPS_FILTERS, kernel, (1, 1), padding, dilation)
    x, k, b = _case(2, np.float64, seed=9, c=channels, f=filters, kh=kernel[0], kw=kernel[1])
    one = (1, 1)
    y = kc.conv_forward(x, k, b, one, padding, dilation, relu=relu)
    assert y.shape == x.shape[:1] + (filters,) + x.shape[2:]
    dy = np.random.default_rng(10).normal(size=y.shape)

    def loss():
        return float(np.sum(dy * kc.conv_forward(x, k, b, one, padding, dilation, relu=relu)))
    dx, dk, db = kc.conv_backward(dy, x, k, one, padding, dilation, True, True, relu_y=y if relu else None)
    for arr, grad in ((x, dx), (k, dk), (b, db)):
        for i, num in _fd(loss, arr):
            assert grad.flat[i] == pytest.approx(num, rel=1e-6, abs=1e-8)
    x32, k32, dy32 = x.astype(np.float32), k.astype(np.float32), dy.astype(np.float32)
    y32 = y.astype(np.float32) if relu else dy32[:0]
    got = kc.conv_backward(dy32, x32, k32, one, padding, dilation, True, True, relu_y=y32 if relu else None)
    want = conv_direct.backward(dy32, y32, x32, k32, padding, dilation, True)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


# a convolution and the 2 x 2 max-pool with stride 2 that alone reads its output, in one pass each
# way (the chain's POOLED): planes even and odd (the pool drops the last row and column), kernels
# square and not, dilation, the ReLU or none, bias or none
_POOLED = [(1, 5, 8, 8, (3, 3), (1, 1), True, True), (2, 3, 7, 9, (3, 3), (1, 1), False, True),
           (3, 8, 6, 5, (3, 5), (2, 1), True, False), (2, 1, 5, 5, (1, 1), (1, 1), True, True),
           (1, 4, 9, 6, (5, 3), (1, 2), False, False)]


def _pooled_case(dtype, c, f, h, w, kernel, dilation, seed=0, same=True):
    """x, k, b and the padding that keeps the plane's size (``same``), else one less on the left."""
    x, k, b = _case(3, dtype, seed=seed, c=c, f=f, h=h, w=w, kh=kernel[0], kw=kernel[1])
    padding = tuple(d * (size - 1) // 2 for size, d in zip(kernel, dilation))
    return x, k, b, padding if same else (padding[0], max(padding[1] - 1, 0))


# the backward of each implementation that takes a pool in (conv_gemm's for any padding)
_POOLED_BACKWARDS = [(conv_taps, True), (conv_gemm, True), (conv_gemm, False)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("c, f, h, w, kernel, dilation, relu, bias", _POOLED)
@pytest.mark.parametrize("module, same", _POOLED_BACKWARDS, ids=str)
def test_convolution_with_its_pool_is_the_two_layers_bit_for_bit(c, f, h, w, kernel, dilation, relu, bias, module,
                                                                 same, dtype):
    x, k, b, padding = _pooled_case(dtype, c, f, h, w, kernel, dilation, same=same)
    x[0, 0, 1, 1] = x[1, 0, 2, 3] = 0.0         # ties: windows of equal values, and of ReLU's zeros
    b = b if bias else b[:0]
    oh, ow = (size + 2 * p - d * (kk - 1) for size, p, d, kk in zip((h, w), padding, dilation, kernel))
    y = conv_taps.forward(x, k, b, relu, padding, dilation, oh, ow)
    want, arg = kp.maxpool_forward(y, (2, 2), (2, 2))
    got, got_arg = conv_taps.forward_pooled(x, k, b, relu, padding, dilation)
    assert got.shape == (3, f, oh // 2, ow // 2) and got.dtype == dtype
    assert np.array_equal(got, want) and np.array_equal(got_arg, arg)
    dy = np.random.default_rng(1).normal(size=want.shape).astype(dtype)
    relu_y = y if relu else y[:0]
    for need_dx in (True, False):
        expected = module.backward(kp.maxpool_backward(dy, arg, (oh, ow), (2, 2), (2, 2)), relu_y, x, k, padding,
                                   dilation, need_dx)
        pooled = module.backward_pooled(dy, arg, want if relu else want[:0], x, k, padding, dilation, need_dx)
        for g, e in zip(pooled, expected):
            assert g.shape == e.shape and np.array_equal(g, e)


@pytest.mark.parametrize("relu", [True, False])
def test_convolution_with_its_pool_passes_nan_and_inf_as_the_pool_does(relu):
    x, k, b, padding = _pooled_case(np.float32, 2, 3, 8, 8, (3, 3), (1, 1))
    x[0, 1, 2, 2] = np.nan          # spreads to the 3 x 3 outputs around it, in every filter
    x[1, 0, 5, 5] = np.inf          # + and - inf: NaN where they meet, inf or 0 (the ReLU) elsewhere
    x[1, 0, 6, 6] = -np.inf
    y = conv_taps.forward(x, k, b, relu, padding, (1, 1), 8, 8)
    want, arg = kp.maxpool_forward(y, (2, 2), (2, 2))
    assert np.isnan(want).any() and np.isinf(want).any()
    got, got_arg = conv_taps.forward_pooled(x, k, b, relu, padding, (1, 1))
    assert np.array_equal(got, want, equal_nan=True) and np.array_equal(got_arg, arg)


@pytest.mark.parametrize("c, f, h, w, kernel, dilation, relu, bias", _POOLED)
@pytest.mark.parametrize("module, same", _POOLED_BACKWARDS, ids=str)
def test_convolution_with_its_pool_backward_central_differences(c, f, h, w, kernel, dilation, relu, bias, module,
                                                                same):
    x, k, b, padding = _pooled_case(np.float64, c, f, h, w, kernel, dilation, seed=4, same=same)
    b = b if bias else b[:0]
    y, arg = conv_taps.forward_pooled(x, k, b, relu, padding, dilation)
    dy = np.random.default_rng(5).normal(size=y.shape)

    def loss():
        return float(np.sum(dy * conv_taps.forward_pooled(x, k, b, relu, padding, dilation)[0]))
    dx, dk, db = module.backward_pooled(dy, arg, y if relu else y[:0], x, k, padding, dilation, True)
    for arr, grad in ((x, dx), (k, dk)) + (((b, db),) if bias else ()):
        assert grad.shape == arr.shape
        for i, num in _fd(loss, arr):
            assert grad.flat[i] == pytest.approx(num, rel=1e-6, abs=1e-8)


@pytest.mark.parametrize("channels", [3, 5])        # 5: stride 1 takes the GEMM primitives
@pytest.mark.parametrize("s, p, d, op", [(1, 0, 1, 0), (2, 1, 1, 1), (2, 0, 2, 1), (3, 1, 1, 2), (1, 1, 2, 1)])
def test_deconv_layer_gradients_central_differences(s, p, d, op, channels):
    rng = np.random.default_rng(6)
    x = rng.normal(size=(2, channels, 4, 5))
    k = rng.normal(size=(channels, 2, 3, 2))
    b = rng.normal(size=2)
    args = ((s, s), (p, p), (d, d), (op, op))
    dy = rng.normal(size=kd.deconv_forward(x, k, b, *args).shape)

    def loss():
        return float(np.sum(dy * np.tanh(kd.deconv_forward(x, k, b, *args))))
    z = kd.deconv_forward(x, k, b, *args)
    dz = np.ascontiguousarray(dy * (1 - np.tanh(z) ** 2))
    dx, dk, db = kd.deconv_backward(dz, x, k, *args, True)
    assert dx.shape == x.shape and dk.shape == k.shape and db.shape == b.shape
    for arr, grad in ((x, dx), (k, dk), (b, db)):
        for i, num in _fd(loss, arr):
            assert grad.flat[i] == pytest.approx(num, rel=1e-6, abs=1e-8)


@pytest.mark.parametrize("s, p, d", OPTIONS)
def test_adjoint_identity(s, p, d):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(2, 3, 9, 8))
    k = rng.normal(size=(4, 3, 3, 2))
    empty = np.empty(0)
    oh, ow = _out(9, 3, s, p, d), _out(8, 2, s, p, d)
    if oh < 1 or ow < 1:
        pytest.skip("empty output")
    y = rng.normal(size=(2, 4, oh, ow))
    op = (9 - ((oh - 1) * s - 2 * p + d * 2 + 1), 8 - ((ow - 1) * s - 2 * p + d * 1 + 1))
    lhs = np.sum(kc.conv_forward(x, k, empty, (s, s), (p, p), (d, d)) * y)
    rhs = np.sum(x * kd.deconv_forward(y, k, empty, (s, s), (p, p), (d, d), op))
    assert lhs == pytest.approx(rhs, rel=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kernel, stride", [((2, 2), (2, 2)), ((3, 3), (1, 1)), ((3, 2), (2, 1)), ((2, 3), (3, 2))])
def test_maxpool_against_naive_including_overlap(dtype, kernel, stride):
    x = np.random.default_rng(8).normal(size=(3, 2, 7, 8)).astype(dtype)
    y, arg = kp.maxpool_forward(x, kernel, stride)
    want, hits = ref.maxpool(x.astype(float), kernel, stride)
    assert y.dtype == dtype and arg.dtype == np.int32
    np.testing.assert_array_equal(y, want.astype(dtype))
    dx = kp.maxpool_backward(np.ones_like(y), arg, (7, 8))
    np.testing.assert_array_equal(dx, hits)          # overlapping windows add up


def test_maxpool_ties_send_the_gradient_to_the_first_maximum():
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 1, 0] = x[0, 0, 1, 1] = x[0, 0, 0, 3] = 5.0
    y, arg = kp.maxpool_forward(x, (2, 2), (2, 2))
    dx = kp.maxpool_backward(np.full_like(y, 2.0), arg, (4, 4))
    assert dx[0, 0, 1, 0] == 2.0 and dx[0, 0, 1, 1] == 0.0      # first in row-major order
    assert dx[0, 0, 0, 3] == 2.0
    assert dx[0, 0, 2, 0] == 2.0 and dx.sum() == 8.0            # all-zero window: its first element


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_maxpool_2x2_kernel_equals_the_general_one(dtype):
    # small integers: many ties; a NaN, which wins its window (tests/test_kernels_nan.py), in both forms alike
    x = np.random.default_rng(13).integers(0, 3, size=(4, 3, 9, 11)).astype(dtype)
    x[1, 2, 4, 5] = np.nan
    fast = kp.maxpool_forward(x, (2, 2), (2, 2))
    general = kp._forward_any(x, (2, 2), (2, 2))
    for a, b in zip(fast, general):
        np.testing.assert_array_equal(a, b)
    dy = np.random.default_rng(14).normal(size=fast[0].shape).astype(dtype)
    dx = kp.maxpool_backward(dy, fast[1], (9, 11), (2, 2), (2, 2))
    np.testing.assert_array_equal(dx, kp._backward_any(dy, fast[1], (9, 11)))
    # the odd last row and column belong to no window
    assert (dx[:, :, 8] == 0).all() and (dx[:, :, :, 10] == 0).all() and np.count_nonzero(dx) == dy.size


@pytest.mark.parametrize("kernel, out", [((3, 3), 2), ((2, 2), 3)])
def test_maxpool_gradient_central_differences(kernel, out):
    x = np.random.default_rng(9).normal(size=(2, 3, 6, 6))      # continuous values: no ties
    dy = np.random.default_rng(10).normal(size=(2, 3, out, out))

    def loss():
        return float(np.sum(dy * kp.maxpool_forward(x, kernel, (2, 2))[0]))
    _, arg = kp.maxpool_forward(x, kernel, (2, 2))
    dx = kp.maxpool_backward(dy, arg, (6, 6), kernel, (2, 2))
    for i, num in _fd(loss, x, count=30):
        assert dx.flat[i] == pytest.approx(num, abs=1e-8)



def test_the_table_picks_by_stride_filters_and_reduction():
    assert set(kc.STRATEGY) == set(itertools.product((True, False), repeat=3))
    assert kc.implementation(3, 1, 3, 3, (1, 1)) is kc.DIRECT           # few filters, short reduction
    assert kc.implementation(8, 1, 3, 3, (1, 1)) is kc.GEMM             # 8 filters
    assert kc.implementation(7, 1, 3, 3, (1, 1)) is kc.DIRECT           # 63 weights (DIRECT_WEIGHTS)
    assert kc.implementation(4, 4, 2, 2, (1, 1)) is kc.GEMM             # 64 weights
    assert kc.implementation(3, 1, 3, 3, (2, 2)) is kc.STRIDED_ROWS     # few weights, stride 2
    assert kc.implementation(3, 8, 3, 3, (1, 1)) is kc.GEMM             # a reduction of 72
    assert kc.implementation(8, 8, 3, 3, (2, 2)) is kc.STRIDED_GEMM
    assert kc.implementation(7, 32, 3, 3, (2, 2)) is kc.STRIDED_ROWS    # too few filters at stride 2
    assert kc.implementation(64, 7, 3, 3, (1, 2)) is kc.STRIDED_ROWS    # a reduction of 63


# (N, C, H, W, F, kh, kw), stride, padding, dilation: one case for each implementation in the table
BLOCK_CASES = {
    "direct": ((5, 2, 9, 8, 3, 3, 3), (1, 1), (1, 1), (1, 1)),
    "gemm": ((5, 3, 9, 8, 6, 3, 2), (1, 1), (1, 2), (1, 2)),
    "strided rows": ((5, 2, 9, 8, 3, 3, 3), (2, 2), (1, 1), (1, 1)),
    "strided gemm": ((5, 8, 9, 8, 9, 3, 3), (2, 1), (1, 0), (1, 1)),
}


@pytest.mark.skipif(BLOCKS < 2, reason="one thread: every pass runs as one block")
@pytest.mark.parametrize("name", BLOCK_CASES)
def test_block_paths_equal_one_block_runs(name):
    """A batch of 5 is split into blocks of samples or of (sample, plane) pairs, one per thread
    (with 2 threads: 3 + 2 samples, 8 + 7 planes); one sample alone runs as one block, its body
    called straight from Python. What a sample owns (y, dx, the transposed convolution's output)
    must come out with the same bits; what sums over the batch (dk, db) the same to rounding."""
    (n, c, h, w, f, kh, kw), st, pa, di = BLOCK_CASES[name]
    assert kc.implementation(f, c, kh, kw, st).name == name
    x, k, b = _case(n, np.float64, seed=11, c=c, f=f, h=h, w=w, kh=kh, kw=kw)
    rng = np.random.default_rng(12)
    y = kc.conv_forward(x, k, b, st, pa, di, relu=True)
    dy = rng.normal(size=y.shape)
    dx, dk, db = kc.conv_backward(dy, x, k, st, pa, di, True, True, relu_y=y)
    bt = rng.normal(size=c)
    z = kd.deconv_forward(dy, k, bt, st, pa, di, (0, 0))       # k read as (C_in=F, F=C)
    dz = rng.normal(size=z.shape)
    dy_t, dk_t, db_t = kd.deconv_backward(dz, dy, k, st, pa, di, (0, 0), True)
    dk_sum, db_sum, dk_t_sum, db_t_sum = 0.0, 0.0, 0.0, 0.0
    for s in range(n):
        one = slice(s, s + 1)
        ys = kc.conv_forward(x[one], k, b, st, pa, di, relu=True)
        dxs, dks, dbs = kc.conv_backward(dy[one], x[one], k, st, pa, di, True, True, relu_y=ys)
        zs = kd.deconv_forward(dy[one], k, bt, st, pa, di, (0, 0))
        dys_t, dks_t, dbs_t = kd.deconv_backward(dz[one], dy[one], k, st, pa, di, (0, 0), True)
        for whole, alone in ((y, ys), (dx, dxs), (z, zs), (dy_t, dys_t)):
            np.testing.assert_array_equal(whole[one], alone)
        dk_sum, db_sum, dk_t_sum, db_t_sum = dk_sum + dks, db_sum + dbs, dk_t_sum + dks_t, db_t_sum + dbs_t
    for whole, summed in ((dk, dk_sum), (db, db_sum), (dk_t, dk_t_sum), (db_t, db_t_sum)):
        np.testing.assert_allclose(whole, summed, rtol=1e-12, atol=1e-12)


@pytest.mark.skipif(BLOCKS < 2, reason="one thread: every pass runs as one block")
@pytest.mark.parametrize("kernel, stride", [((2, 2), (2, 2)), ((3, 3), (2, 2))])
def test_maxpool_blocks_equal_one_block_runs(kernel, stride):
    """Above maxpool.PARALLEL_MIN elements a pass takes a block of planes per thread; a sample
    alone is below it and runs as one block: the same bits."""
    x = np.random.default_rng(13).normal(size=(5, 8, 20, 21))
    assert x.size >= kp.PARALLEL_MIN > x[:1].size
    y, arg = kp.maxpool_forward(x, kernel, stride)
    dy = np.random.default_rng(14).normal(size=y.shape)
    dx = kp.maxpool_backward(dy, arg, (20, 21), kernel, stride)
    for s in range(5):
        ys, args = kp.maxpool_forward(x[s:s + 1], kernel, stride)
        np.testing.assert_array_equal(y[s:s + 1], ys)
        np.testing.assert_array_equal(arg[s:s + 1], args)
        np.testing.assert_array_equal(dx[s:s + 1], kp.maxpool_backward(dy[s:s + 1], args, (20, 21), kernel, stride))


@pytest.mark.parametrize("seed", range(4))
def test_stride1_layers_against_the_row_by_row_form_on_random_shapes(seed):
    """conv_forward and conv_backward at stride 1 (whichever of the tap tiles, direct loops or GEMM
    takes each shape) against the strided row-by-row primitives: planes from 1 x 1, kernels 1, 3 and
    5 wide, dilation 1-2, padding "same" or not, 1-70 filters, ReLU or none, float32 and float64."""
    rng = np.random.default_rng(seed)
    for case in range(20):
        dt = (np.float32, np.float64)[case % 2]
        n, c, f = int(rng.integers(1, 4)), int(rng.integers(1, 6)), int(rng.choice([1, 3, 5, 8, 13, 63, 70]))
        (kh, kw), (dh, dw) = rng.choice([1, 3, 5], 2), rng.integers(1, 3, 2)
        same = case % 4 < 2
        ph, pw = (dh * (kh - 1) // 2, dw * (kw - 1) // 2) if same else tuple(rng.integers(0, 3, 2))
        h = int(rng.integers(max(1, dh * (kh - 1) - 2 * ph + 1), 12))
        w = int(rng.integers(max(1, dw * (kw - 1) - 2 * pw + 1), 12))
        x, k, b = (rng.normal(size=s).astype(dt) for s in ((n, c, h, w), (f, c, kh, kw), (f,)))
        pa, di, relu = (int(ph), int(pw)), (int(dh), int(dw)), bool(case % 3)
        y = kc.conv_forward(x, k, b, (1, 1), pa, di, relu=relu)
        want = kc.STRIDED_ROWS.correlate(x, k, (1, 1), pa, di, *y.shape[2:]) + b[:, None, None]
        tol = TOL[dt] * 10
        np.testing.assert_allclose(y, np.maximum(want, 0) if relu else want, rtol=tol, atol=tol)
        dy = rng.normal(size=y.shape).astype(dt)
        dx, dk, db = kc.conv_backward(dy, x, k, (1, 1), pa, di, True, True, relu_y=y if relu else None)
        g = np.ascontiguousarray(dy * (y > 0) if relu else dy)
        np.testing.assert_allclose(dk, kc.STRIDED_ROWS.weight_grad(g, x, (1, 1), pa, di, kh, kw), rtol=tol, atol=tol)
        np.testing.assert_allclose(dx, kc.STRIDED_ROWS.scatter(g, k, (1, 1), pa, di, h, w), rtol=tol, atol=tol)
        np.testing.assert_allclose(db, g.sum(axis=(0, 2, 3)), rtol=tol, atol=tol)
