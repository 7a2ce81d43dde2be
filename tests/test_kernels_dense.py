"""Dense, activation, objective and dropout kernels against the naive references."""
import numpy as np
import pytest

from neurons.kernels import activations as kact
from neurons.kernels import dense as kdense
from neurons.kernels import dropout as kdrop
from neurons.kernels import objectives as kobj
from neurons import activations, objectives
from neurons.kernels._blocks import block_count
from neurons.kernels._config import BLOCKS

from . import reference as ref

ACTS = ["linear", "sigmoid", "tanh", "relu", "leaky_relu", "softmax"]
OBJS = ["ae", "mae", "mse", "rmse", "cross_entropy", "binary_cross_entropy", "kl_divergence"]
TOL = {np.float32: 1e-5, np.float64: 1e-12}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("n", [1, 3])
def test_dense_forward_backward(dtype, bias, n):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 5)).astype(dtype)
    w = rng.normal(size=(4, 5)).astype(dtype)
    b = rng.normal(size=4).astype(dtype) if bias else np.empty(0, dtype)
    z = kdense.dense_forward(x, w, b)
    assert z.dtype == dtype
    np.testing.assert_allclose(z, ref.dense(x.astype(float), w.astype(float), b.astype(float) if bias else None),
                               rtol=TOL[dtype] * 10, atol=TOL[dtype] * 10)
    dz = rng.normal(size=(n, 4)).astype(dtype)
    dx, dw, db = kdense.dense_backward(dz, x, w, True)
    assert dx.dtype == dw.dtype == db.dtype == dtype
    # <dz, z(x, w, b)> is linear in each argument: its gradients are the naive sums
    np.testing.assert_allclose(dx, [[sum(dz[i, u] * w[u, k] for u in range(4)) for k in range(5)] for i in range(n)],
                               rtol=TOL[dtype] * 10, atol=TOL[dtype] * 10)
    np.testing.assert_allclose(dw, [[sum(dz[i, u] * x[i, k] for i in range(n)) for k in range(5)] for u in range(4)],
                               rtol=TOL[dtype] * 10, atol=TOL[dtype] * 10)
    np.testing.assert_allclose(db, dz.sum(0), rtol=TOL[dtype] * 10, atol=TOL[dtype] * 10)
    dx2, _, _ = kdense.dense_backward(dz, x, w, False)
    assert dx2 is None


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dense_split_over_threads_matches_one_gemm(dtype):
    rng = np.random.default_rng(9)
    x = rng.normal(size=(64, 300)).astype(dtype)        # above the split size
    w = rng.normal(size=(40, 300)).astype(dtype)
    b = rng.normal(size=40).astype(dtype)
    assert 64 * 40 * 300 >= kdense.SPLIT
    tol = TOL[dtype] * 1000
    np.testing.assert_allclose(kdense.dense_forward(x, w, b), x @ w.T + b, rtol=tol, atol=tol)
    dz = rng.normal(size=(64, 40)).astype(dtype)
    dx, dw, db = kdense.dense_backward(dz, x, w, True)
    np.testing.assert_allclose(dx, dz @ w, rtol=tol, atol=tol)
    np.testing.assert_allclose(dw, dz.T @ x, rtol=tol, atol=tol)
    np.testing.assert_allclose(db, dz.sum(0), rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ACTS)
def test_activation_forward_and_vjp(dtype, name):
    rng = np.random.default_rng(1)
    z = rng.normal(scale=3, size=(3, 7)).astype(dtype)
    y = activations.forward(z, name)
    assert y.dtype == dtype
    np.testing.assert_allclose(y, ref.activation(z, name), rtol=TOL[dtype] * 10, atol=TOL[dtype])
    dy = rng.normal(size=z.shape).astype(dtype)
    dz = activations.backward(dy, y, name)
    assert dz.dtype == dtype
    want = np.einsum("nj,njk->nk", dy.astype(float), ref.activation_jacobian(z.astype(float), name))
    np.testing.assert_allclose(dz, want, rtol=TOL[dtype] * 100, atol=TOL[dtype] * 10)


@pytest.mark.parametrize("name", ACTS[1:])
def test_large_activations_run_in_blocks_with_the_same_bits(name):
    # (N, F) arrays of PARALLEL_MIN elements or more run one block of rows per thread, smaller
    # ones serially: a large array must equal its rows done a few at a time
    rng = np.random.default_rng(2)
    code = activations.activation(name).value
    z = rng.normal(scale=3, size=(kact.PARALLEL_MIN // 100 + 3, 100)).astype(np.float32)
    dy = rng.normal(size=z.shape).astype(np.float32)
    y = kact.activation_forward(z, code)
    dz = kact.activation_backward(dy, y, code)
    rows = 64
    assert rows * z.shape[1] < kact.PARALLEL_MIN <= z.size
    y_rows = np.concatenate([kact.activation_forward(z[i:i + rows], code) for i in range(0, len(z), rows)])
    dz_rows = np.concatenate([kact.activation_backward(dy[i:i + rows], y[i:i + rows], code)
                              for i in range(0, len(z), rows)])
    np.testing.assert_array_equal(y, y_rows)
    np.testing.assert_array_equal(dz, dz_rows)


def test_softmax_two_classes_gradient_is_not_zero():
    # the original returned a constant vector here, so two-class softmax never learned
    z = np.array([[0.3, -0.2]])
    y = activations.forward(z, "softmax")
    dz = activations.backward(np.array([[1.0, 0.0]]), y, "softmax")
    assert np.abs(dz).max() > 0.1
    np.testing.assert_allclose(dz.sum(), 0.0, atol=1e-15)


def test_activation_extremes_are_finite():
    z = np.array([[-1e4, 1e4, 0.0, -800.0, 800.0]])
    for name in ACTS:
        assert np.isfinite(activations.forward(z, name)).all(), name


def _targets(name, rng, shape):
    if name in ("cross_entropy", "kl_divergence"):
        y = rng.uniform(0.1, 1, size=shape)
        return y / y.sum(1, keepdims=True)
    if name == "binary_cross_entropy":
        return rng.uniform(0, 1, size=shape)
    return rng.normal(size=shape)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", OBJS)
def test_objective_loss_matches_reference(dtype, name):
    rng = np.random.default_rng(2)
    p = rng.uniform(0.05, 0.95, size=(3, 4)).astype(dtype)
    y = _targets(name, rng, p.shape).astype(dtype)
    loss, dp = objectives.loss_and_grad(p, y, name)
    assert dp.dtype == dtype
    np.testing.assert_allclose(loss, ref.objective(p, y, name), rtol=TOL[dtype] * 10)


@pytest.mark.parametrize("name", OBJS)
def test_objective_gradient_central_differences(name):
    rng = np.random.default_rng(3)
    p = rng.uniform(0.05, 0.95, size=(3, 4))
    y = _targets(name, rng, p.shape)
    _, dp = objectives.loss_and_grad(p, y, name)
    h = 1e-6
    num = np.zeros_like(p)
    for i in np.ndindex(p.shape):
        q = p.copy(); q[i] += h
        lp = ref.objective(q, y, name)
        q[i] -= 2 * h
        lm = ref.objective(q, y, name)
        num[i] = (lp - lm) / (2 * h)
    np.testing.assert_allclose(dp, num, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", OBJS)
def test_objective_finite_for_extreme_inputs(name):
    p = np.array([[0.0, 1.0, -5.0, 7.0], [1e30, -1e30, 0.5, 1e-300]])
    y = np.array([[1.0, 0.0, 0.5, 0.5], [0.0, 1.0, 0.0, 1.0]])
    loss, dp = objectives.loss_and_grad(p, y, name)
    assert np.isfinite(loss) and np.isfinite(dp).all()


def test_rmse_at_zero_error_has_zero_gradient():
    p = np.ones((2, 3))
    loss, dp = objectives.loss_and_grad(p, p.copy(), "rmse")
    assert loss == 0 and (dp == 0).all()


def test_clip_clamps_each_per_sample_gradient_element():
    p = np.array([[0.001, 0.5, 0.999]])
    y = np.array([[1.0, 0.0, 0.0]])
    _, raw = objectives.loss_and_grad(p, y, "cross_entropy")
    _, clipped = objectives.loss_and_grad(p, y, "cross_entropy", clip=(-1.0, 1.0))
    assert raw.min() < -100
    np.testing.assert_allclose(clipped, np.clip(raw, -1, 1))
    # the clip bounds apply before the division by the batch size
    p2, y2 = np.repeat(p, 4, 0), np.repeat(y, 4, 0)
    _, clipped4 = objectives.loss_and_grad(p2, y2, "cross_entropy", clip=(-1.0, 1.0))
    np.testing.assert_allclose(clipped4 * 4, np.repeat(clipped, 4, 0))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_softmax_cross_entropy(dtype):
    rng = np.random.default_rng(4)
    z = rng.normal(scale=2, size=(3, 5)).astype(dtype)
    y = np.eye(5, dtype=dtype)[[0, 3, 4]]
    loss, dz, p = kobj.softmax_cross_entropy(z, y)
    assert dz.dtype == p.dtype == dtype
    pr = ref.activation(z, "softmax")
    np.testing.assert_allclose(p, pr, rtol=TOL[dtype] * 10)
    np.testing.assert_allclose(loss, ref.objective(pr, y, "cross_entropy"), rtol=TOL[dtype] * 10)
    np.testing.assert_allclose(dz, (pr - y) / 3, rtol=TOL[dtype] * 100, atol=TOL[dtype])
    # finite for huge logits, where a plain log(softmax) would give -inf
    loss, dz, _ = kobj.softmax_cross_entropy(np.array([[1000.0, -1000.0]], dtype), np.array([[0.0, 1.0]], dtype))
    assert np.isfinite(loss) and loss > 100 and np.isfinite(dz).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_masks(dtype):
    x = np.ones(20000, dtype)
    y, mask = kdrop.dropout_forward(x, 0.25, 123)
    assert y.dtype == mask.dtype == dtype
    kept = mask > 0
    assert abs(kept.mean() - 0.75) < 0.02
    np.testing.assert_allclose(mask[kept], 1 / 0.75, rtol=1e-6)
    np.testing.assert_array_equal(y, x * mask)
    y2, mask2 = kdrop.dropout_forward(x, 0.25, 123)
    np.testing.assert_array_equal(mask, mask2)
    _, mask3 = kdrop.dropout_forward(x, 0.25, 124)
    assert (mask != mask3).any()
    dy = np.arange(20000, dtype=dtype)
    np.testing.assert_array_equal(kdrop.dropout_backward(dy, mask), dy * mask)


def test_a_large_dropout_runs_in_blocks_with_the_same_masks():
    """Above PARALLEL_MIN the mask is drawn one block per thread: element i's mask is the same
    as in a short array (it depends on (seed, i) only), and so is the backward product."""
    n = kdrop.PARALLEL_MIN + 1001
    x = np.random.default_rng(3).normal(size=n).astype(np.float32)
    y, mask = kdrop.dropout_forward(x, 0.3, 99)
    y_short, mask_short = kdrop.dropout_forward(x[:1000], 0.3, 99)
    np.testing.assert_array_equal(mask[:1000], mask_short)
    np.testing.assert_array_equal(y[:1000], y_short)
    np.testing.assert_array_equal(y, x * mask)
    assert abs((mask[-1000:] > 0).mean() - 0.7) < 0.06          # the last block was drawn too
    np.testing.assert_array_equal(kdrop.dropout_backward(x, mask), x * mask)


# Above each threshold a kernel runs one block per thread; the same loop given one block runs its
# body once, straight from Python, over everything: the serial path. Element-wise kernels must
# give the same bits either way; the dense GEMMs, split by columns, the same to rounding.
# (Objectives are serial kernels: one order of summation, nothing to compare.)
one_thread = pytest.mark.skipif(BLOCKS < 2, reason="one thread: every pass runs as one block")


@one_thread
@pytest.mark.parametrize("code", range(1, 6))
def test_activation_blocks_equal_a_one_block_run(code):
    rng = np.random.default_rng(5)
    z = rng.normal(scale=3, size=(kact.PARALLEL_MIN // 64 + 3, 64))      # odd rows: uneven blocks
    dy = rng.normal(size=z.shape)
    assert block_count(z.shape[0], z.size, kact.PARALLEL_MIN) > 1
    y = kact.activation_forward(z, code)
    y1 = np.empty_like(z)
    kact._forward_blocks(1, (1, z, y1, code))
    np.testing.assert_array_equal(y, y1)
    dz1 = np.empty_like(z)
    kact._backward_blocks(1, (1, dy, y, dz1, code))
    np.testing.assert_array_equal(kact.activation_backward(dy, y, code), dz1)


@one_thread
def test_dropout_blocks_equal_a_one_block_run():
    rng = np.random.default_rng(6)
    x, dy = rng.normal(size=kdrop.PARALLEL_MIN + 1001), rng.normal(size=kdrop.PARALLEL_MIN + 1001)
    assert kdrop._element_blocks(x) > 1
    y, mask = kdrop.dropout_forward(x, 0.5, 7)
    y1, mask1 = np.empty_like(x), np.empty_like(x)
    kdrop._forward_blocks(1, (1, x, 0.5, 7, y1, mask1))
    np.testing.assert_array_equal(y, y1)
    np.testing.assert_array_equal(mask, mask1)
    dx1 = np.empty_like(x)
    kdrop._backward_blocks(1, (1, dy, mask, dx1))
    np.testing.assert_array_equal(kdrop.dropout_backward(dy, mask), dx1)


@one_thread
def test_dense_blocks_equal_a_one_block_run():
    rng = np.random.default_rng(7)
    x, w, b = rng.normal(size=(64, 300)), rng.normal(size=(41, 300)), rng.normal(size=41)
    dz = rng.normal(size=(64, 41))
    assert x.shape[0] * w.shape[0] * x.shape[1] >= kdense.SPLIT
    z1 = np.empty((64, 41))
    kdense._forward_blocks(1, (1, x, w, b, z1))
    np.testing.assert_allclose(kdense.dense_forward(x, w, b), z1, rtol=1e-12, atol=1e-12)
    grads1 = np.empty_like(x), np.empty_like(w), np.empty(41)
    kdense._backward_blocks(1, (1, dz, x, w, True, *grads1))
    for got, want in zip(kdense.dense_backward(dz, x, w, True), grads1):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
