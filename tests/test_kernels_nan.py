"""NaN propagates through every kernel (SPEC §12): no kernel turns a NaN into a number, so a
diverging run is caught. Forward values and losses are NaN wherever a NaN enters; gradients
follow PyTorch where it defines them (a ReLU's gradient is 0 where y <= 0, even for a NaN dy)."""
import numpy as np
import pytest

from neurons.kernels import activations as kact
from neurons.kernels import conv as kc
from neurons.kernels import dense as kdense
from neurons.kernels import dropout as kdrop
from neurons.kernels import maxpool as kp
from neurons.kernels import objectives as kobj
from neurons.kernels import optim as kopt

from . import reference as ref

DTYPES = [np.float32, np.float64]
ACTS = {"linear": kact.LINEAR, "sigmoid": kact.SIGMOID, "tanh": kact.TANH, "relu": kact.RELU,
        "leaky_relu": kact.LEAKY_RELU, "softmax": kact.SOFTMAX}
OBJS = {"ae": kobj.AE, "mae": kobj.MAE, "mse": kobj.MSE, "rmse": kobj.RMSE, "cross_entropy": kobj.CROSS_ENTROPY,
        "binary_cross_entropy": kobj.BINARY_CROSS_ENTROPY, "kl_divergence": kobj.KL_DIVERGENCE}


def _logits(dtype, shape=(3, 5), seed=0):
    """Both signs, NaN at (1, 2) (and, for big arrays, in every 997th element)."""
    z = np.random.default_rng(seed).normal(scale=2, size=shape).astype(dtype)
    z[1, 2] = np.nan
    return z


def _nan_rows_or_elements(z, name):
    """Where the forward value must be NaN: the element, or for softmax its whole row."""
    nan = np.isnan(z)
    return np.repeat(nan.any(1, keepdims=True), z.shape[1], 1) if name == "softmax" else nan


# ----------------------------------------------------------------------------- activations

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ACTS)
def test_activation_forward_keeps_nan(dtype, name):
    z = _logits(dtype)
    z[0, 0], z[2, 4] = -np.abs(z[0, 0]) - 1, np.abs(z[2, 4]) + 1     # a sure negative and positive
    y = kact.activation_forward(z, ACTS[name])
    want = _nan_rows_or_elements(z, name)
    np.testing.assert_array_equal(np.isnan(y), want)
    # rows without a NaN are what they were with the NaN replaced
    clean = z.copy()
    clean[1, 2] = 0.0
    np.testing.assert_array_equal(y[[0, 2]], kact.activation_forward(clean, ACTS[name])[[0, 2]])


@pytest.mark.parametrize("name", ["relu", "leaky_relu", "sigmoid", "softmax"])
def test_large_activation_in_blocks_keeps_nan(name):
    # above PARALLEL_MIN elements: the block path (one block of rows per thread)
    shape = (kact.PARALLEL_MIN // 100 + 3, 100)
    z = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    z.flat[::997] = np.nan
    assert z.size >= kact.PARALLEL_MIN
    y = kact.activation_forward(z, ACTS[name])
    np.testing.assert_array_equal(np.isnan(y), _nan_rows_or_elements(z, name))
    dz = kact.activation_backward(np.ones_like(z), y, ACTS[name])
    # at a NaN y: PyTorch's gradients (relu: dy; leaky_relu: slope·dy, as y > 0 fails), else NaN
    want = {"relu": 1.0, "leaky_relu": np.float32(kact.SLOPE)}.get(name, np.nan)
    np.testing.assert_array_equal(dz[np.isnan(z)], want)


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_backward_is_torch_threshold_backward(dtype):
    # 0 where y <= 0 whatever dy is (NaN included), dy elsewhere, a NaN y included
    y = np.array([[np.nan, np.nan, 0.0, 0.0, 2.0, 2.0]], dtype)
    dy = np.array([[3.0, np.nan, np.nan, 3.0, np.nan, 3.0]], dtype)
    dz = kact.activation_backward(dy, y, kact.RELU)
    np.testing.assert_array_equal(dz, np.array([[3.0, np.nan, 0.0, 0.0, np.nan, 3.0]], dtype))


@pytest.mark.parametrize("name", ACTS)
def test_activation_nan_pattern_matches_torch(name):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    z = _logits(np.float64, (4, 6), seed=2)
    dy = np.random.default_rng(3).normal(size=z.shape)
    dy[0, 1] = dy[2, 3] = np.nan
    dy[3, :] = np.where(z[3] > 0, np.nan, 1.0)        # NaN dy on both sides of the ReLU's kink
    zt = torch.tensor(z, requires_grad=True)
    act = {"linear": lambda t: t, "sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu,
           "leaky_relu": lambda t: F.leaky_relu(t, kact.SLOPE), "softmax": lambda t: torch.softmax(t, 1)}[name]
    yt = act(zt)
    yt.backward(torch.tensor(dy))
    y = kact.activation_forward(z, ACTS[name])
    dz = kact.activation_backward(dy, y, ACTS[name])
    np.testing.assert_array_equal(np.isnan(y), np.isnan(yt.detach().numpy()))
    np.testing.assert_array_equal(np.isnan(dz), np.isnan(zt.grad.numpy()))
    np.testing.assert_allclose(dz, zt.grad.numpy(), rtol=1e-12, atol=1e-14)    # NaNs compare equal


# ----------------------------------------------------------------------------- max-pool

POOLS = [((2, 2), (2, 2), "2x2"), ((2, 2), (2, 2), "general"), ((3, 3), (3, 3), "general"),
         ((3, 2), (2, 1), "general")]


def _pool(x, kernel, stride, form):
    if form == "2x2":
        return kp.maxpool_forward(x, kernel, stride)
    return kp._forward_any(np.ascontiguousarray(x), kernel, stride)


def _window_position(kernel, where):
    """The first, a middle or the last element of a window (row-major)."""
    kh, kw = kernel
    return divmod({"first": 0, "middle": kh * kw // 2, "last": kh * kw - 1}[where], kw)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("where", ["first", "middle", "last"])
@pytest.mark.parametrize("kernel, stride, form", POOLS, ids=[f"{f}-{k}-{s}" for k, s, f in POOLS])
def test_maxpool_nan_wins_its_window_and_takes_the_gradient(dtype, where, kernel, stride, form):
    x = np.random.default_rng(4).normal(size=(2, 3, 8, 9)).astype(dtype)
    i, j = _window_position(kernel, where)
    a, b = 1, 2                                                    # the window at output (1, 2)
    r, c = a * stride[0] + i, b * stride[1] + j
    x[1, 2, a * stride[0], b * stride[1]] = 100.0                  # a NaN after it still wins
    x[1, 2, r, c] = np.nan
    y, arg = _pool(x, kernel, stride, form)
    want, hits = ref.maxpool(x.astype(float), kernel, stride)      # np.argmax: the first NaN wins
    assert np.isnan(y[1, 2, a, b]) and arg[1, 2, a, b] == r * x.shape[3] + c
    np.testing.assert_array_equal(y, want.astype(dtype))          # NaNs compare equal, the rest as before
    assert np.isnan(y).sum() == hits[1, 2, r, c] >= 1             # every window holding it, and no other
    dy = np.full_like(y, 2.0)
    dx = kp.maxpool_backward(dy, arg, x.shape[2:], kernel, stride)
    np.testing.assert_array_equal(dx, 2.0 * hits)
    assert dx[1, 2, r, c] == 2.0 * hits[1, 2, r, c]                # the gradient goes to the NaN


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("form", ["2x2", "general"])
def test_maxpool_two_nans_in_a_window_the_first_takes_the_gradient(dtype, form):
    x = np.zeros((1, 1, 4, 4), dtype)
    x[0, 0, 0, 1] = x[0, 0, 1, 0] = np.nan                        # window (0, 0): positions 1 and 2
    x[0, 0, 1, 1] = 5.0
    x[0, 0, 3, 3] = np.nan                                         # window (1, 1): its last
    y, arg = _pool(x, (2, 2), (2, 2), form)
    assert np.isnan(y[0, 0, 0, 0]) and arg[0, 0, 0, 0] == 1
    assert np.isnan(y[0, 0, 1, 1]) and arg[0, 0, 1, 1] == 15
    assert y[0, 0, 0, 1] == 0 and y[0, 0, 1, 0] == 0


@pytest.mark.parametrize("form", ["2x2", "general"])
def test_maxpool_large_input_in_blocks_keeps_nan(form):
    # above maxpool.PARALLEL_MIN input elements: one block of planes per thread
    x = np.random.default_rng(5).normal(size=(8, 8, 16, 16)).astype(np.float32)
    x.flat[7::1013] = np.nan
    assert x.size >= kp.PARALLEL_MIN
    y, arg = _pool(x, (2, 2), (2, 2), form)
    want, hits = ref.maxpool(x.astype(float), (2, 2), (2, 2))
    np.testing.assert_array_equal(y, want.astype(np.float32))
    assert np.isnan(y).sum() == np.isnan(x).sum()
    np.testing.assert_array_equal(kp.maxpool_backward(np.ones_like(y), arg, (16, 16), (2, 2), (2, 2)), hits)


def test_maxpool_inf_minus_inf_in_a_plane_is_not_a_nan():
    # the plane check sums the plane: +inf and -inf give a NaN sum, and nothing is changed
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 0, 0], x[0, 0, 2, 3] = np.inf, -np.inf
    for form in ("2x2", "general"):
        y, arg = _pool(x, (2, 2), (2, 2), form)
        np.testing.assert_array_equal(y[0, 0], [[np.inf, 0.0], [0.0, 0.0]])
        np.testing.assert_array_equal(arg[0, 0], [[0, 2], [8, 10]])


# ----------------------------------------------------------------------------- convolution

# (filters, channels, stride, GEMM?): stride 1 fuses the ReLU into its copy-out, a larger one
# runs relu_forward/relu_backward after the primitives (see conv._strategy for the choice)
CONVS = [(1, 2, (1, 1), False), (5, 2, (1, 1), True), (1, 2, (2, 2), False), (8, 8, (2, 2), True)]
CONV_IDS = ["direct", "gemm", "direct-stride2", "gemm-stride2"]


def _conv_case(dtype, f, c, seed=6):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(2, c, 7, 6)).astype(dtype), rng.normal(size=(f, c, 3, 3)).astype(dtype),
            rng.normal(size=f).astype(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("f, c, stride, gemm", CONVS, ids=CONV_IDS)
@pytest.mark.parametrize("where", ["x", "k"])
def test_conv_forward_with_relu_keeps_nan(dtype, f, c, stride, gemm, where):
    assert kc._strategy(c, 3, 3, f, stride) == gemm
    x, k, b = _conv_case(dtype, f, c)
    if where == "x":
        x[1, 1, 3, 2] = np.nan
    else:
        k[f - 1, 1, 1, 1] = np.nan
    y = kc.conv_forward(x, k, b, stride, (1, 1), (1, 1), relu=True)
    want = ref.conv2d(x.astype(float), k.astype(float), b.astype(float), stride, (1, 1), (1, 1))
    nan = np.isnan(want)
    assert nan.any()
    if where == "k":
        assert nan[:, f - 1].all() and not nan[:, :f - 1].any()
    np.testing.assert_array_equal(np.isnan(y), nan)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(y[~nan], np.maximum(want, 0)[~nan], rtol=tol, atol=tol)


@pytest.mark.parametrize("f, c, stride, gemm", CONVS, ids=CONV_IDS)
def test_conv_relu_backward_passes_dy_at_a_nan_output(f, c, stride, gemm):
    # PyTorch's threshold_backward: the gradient at a NaN output of the ReLU is dy, so db counts it
    x, k, b = _conv_case(np.float64, f, c)
    x[1, 1, 3, 2] = np.nan
    y = kc.conv_forward(x, k, b, stride, (1, 1), (1, 1), relu=True)
    dy = np.random.default_rng(7).normal(size=y.shape)
    dx, dk, db = kc.conv_backward(dy, x, k, stride, (1, 1), (1, 1), True, relu_y=y)
    assert np.isnan(y).any()
    np.testing.assert_allclose(db, np.where(y <= 0, 0.0, dy).sum(axis=(0, 2, 3)), rtol=1e-12)
    assert np.isnan(dk[:, 1]).any() and np.isfinite(dk[:, 0]).all() and np.isfinite(dx).all()


# ----------------------------------------------------------------------------- objectives

def _prediction_and_target(name, dtype):
    rng = np.random.default_rng(8)
    p = rng.uniform(0.05, 0.95, size=(3, 4)).astype(dtype)
    y = rng.uniform(0.1, 1, size=p.shape)
    y = (y / y.sum(1, keepdims=True)).astype(dtype)
    p[1, 2] = np.nan
    y[1, 2] = 0.0                 # a target whose term is dropped (kl_divergence) or multiplies by 0
    return p, y


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize("name", OBJS)
def test_objective_nan_prediction_gives_nan_loss_and_gradient(dtype, clip, name):
    p, y = _prediction_and_target(name, dtype)
    loss, dp = kobj.objective_forward_backward(p, y, OBJS[name], clip, -0.5, 0.5)
    assert np.isnan(loss)
    assert np.isnan(kobj.objective_loss(p, y, OBJS[name]))
    # NaN where the NaN entered (rmse: its sample's whole row), the other samples untouched
    want = np.zeros(p.shape, bool)
    if name == "rmse":
        want[1] = True
    else:
        want[1, 2] = True
    np.testing.assert_array_equal(np.isnan(dp), want)
    clean = p.copy()
    clean[1] = 0.5
    _, dp_clean = kobj.objective_forward_backward(clean, y, OBJS[name], clip, -0.5, 0.5)
    np.testing.assert_array_equal(dp[[0, 2]], dp_clean[[0, 2]])


@pytest.mark.parametrize("dtype", DTYPES)
def test_objective_nan_targets_give_nan_loss(dtype):
    p = np.full((2, 3), 0.3, dtype)
    y = np.full((2, 3), 0.2, dtype)
    y[1, 1] = np.nan
    for name, code in OBJS.items():
        assert np.isnan(kobj.objective_loss(p, y, code)), name


@pytest.mark.parametrize("name", ["ae", "mae", "mse", "rmse"])
def test_objective_inf_prediction_gives_inf_loss(name):
    p = np.array([[0.5, np.inf, 0.1], [0.2, 0.3, 0.4]])
    loss = kobj.objective_loss(p, np.zeros_like(p), OBJS[name])
    assert loss == np.inf


@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_softmax_cross_entropy_nan_logit(dtype):
    z = _logits(dtype)
    y = np.eye(5, dtype=dtype)[[0, 1, 4]]
    loss, dz, p = kobj.softmax_cross_entropy(z, y)
    assert np.isnan(loss)
    assert np.isnan(p[1]).all() and np.isnan(dz[1]).all()
    assert np.isfinite(p[[0, 2]]).all() and np.isfinite(dz[[0, 2]]).all()


# ----------------------------------------------------------------------------- the rest

@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_nan_weight_reaches_every_sample_even_through_zero_inputs(dtype):
    x = np.zeros((3, 4), dtype)                  # a ReLU's zeros: 0 * NaN must still be NaN
    x[1, 0] = 1.0
    w = np.ones((2, 4), dtype)
    w[1, 0] = np.nan
    z = kdense.dense_forward(x, w, np.zeros(2, dtype))
    assert np.isnan(z[:, 1]).all() and np.isfinite(z[:, 0]).all()
    dx, dw, db = kdense.dense_backward(np.ones_like(z), x, w, True)
    assert np.isnan(dx).any()


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_keeps_nan_even_where_it_drops(dtype):
    x = np.full(1000, np.nan, dtype)
    y, mask = kdrop.dropout_forward(x, 0.5, 3)
    assert (mask == 0).any() and np.isnan(y).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("optimizer", ["sgd", "adam", "rmsprop", "rmsprop_centered"])
def test_optimizer_nan_gradient_gives_nan_params(dtype, optimizer):
    n = 8
    p, g = np.ones(n, dtype), np.ones(n, dtype)
    g[3] = np.nan
    z = np.zeros(n, dtype)
    if optimizer == "sgd":
        kopt.sgd(p, g, z.copy(), 0.1, 0.9, 0.0, True)
    elif optimizer == "adam":
        kopt.adam(p, g, z.copy(), z.copy(), 0.1, 0.9, 0.999, 1e-8, 0.0, False, 0.1, 0.0316)
    else:
        centered = z.copy() if optimizer == "rmsprop_centered" else z[:0]
        kopt.rmsprop(p, g, z.copy(), centered, z[:0], 0.1, 0.99, 1e-8, 0.0, 0.0)
    assert np.isnan(p[3]) and np.isfinite(np.delete(p, 3)).all()
