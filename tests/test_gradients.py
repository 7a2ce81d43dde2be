"""loss_and_grad against central finite differences (float64), dense networks."""
import numpy as np
import pytest

import neurons

from . import gradcheck

ACTS = ["linear", "sigmoid", "tanh", "relu", "leaky_relu", "softmax"]
OBJS = ["ae", "mae", "mse", "rmse", "cross_entropy", "binary_cross_entropy", "kl_divergence"]


def _data(obj, out_act, n=5, f=4, k=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, f))
    if obj in ("cross_entropy", "kl_divergence"):
        y = rng.uniform(0.1, 1, size=(n, k))
        y /= y.sum(1, keepdims=True)
    elif obj == "binary_cross_entropy":
        y = rng.uniform(0, 1, size=(n, k))
    else:
        y = rng.normal(size=(n, k))
    return x, y


@pytest.mark.parametrize("obj", OBJS)
@pytest.mark.parametrize("act", ACTS)
def test_dense_every_activation_objective_pair(act, obj):
    # probability objectives need outputs in (0, 1): keep the last activation in range for them
    last = act if obj not in ("cross_entropy", "binary_cross_entropy", "kl_divergence") or act in ("sigmoid", "softmax") else "sigmoid"
    net = (neurons.Network((4,), dtype="float64").dense(6, act).dense(3, last).set_objective(obj))
    params = net.init(seed=1)
    x, y = _data(obj, last)
    gradcheck.check(net, params, x, y)


@pytest.mark.parametrize("bias", [True, False])
def test_dense_bias_and_no_bias(bias):
    net = neurons.Network((4,), "float64").dense(5, "tanh", bias=bias).dense(2, "linear", bias=bias)
    params = net.init(2)
    assert len(params[0]) == (2 if bias else 1)
    x, y = _data("mse", "linear", k=2)
    gradcheck.check(net, params, x, y)


def test_softmax_cross_entropy_fused_gradient_is_exact():
    net = neurons.Network((4,), "float64").dense(6, "relu").dense(3, "softmax").set_objective("cross_entropy")
    assert net._fused
    x, y = _data("cross_entropy", "softmax")
    gradcheck.check(net, net.init(3), x, y)
    # the fused loss equals the unfused one on the same probabilities
    clipped = net.set_objective("cross_entropy", clip=(-1e9, 1e9))
    assert not clipped._fused
    params = net.init(3)
    assert net.loss_and_grad(params, x, y)[0] == pytest.approx(clipped.loss_and_grad(params, x, y)[0], rel=1e-12)
    g1, g2 = net.loss_and_grad(params, x, y)[1], clipped.loss_and_grad(params, x, y)[1]
    for a, b in zip(gradcheck.leaves(g1), gradcheck.leaves(g2)):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("rate", [0.2, 0.5])
def test_dropout_with_masks_held_fixed(rate):
    net = (neurons.Network((4,), "float64").dense(8, "sigmoid", dropout=rate).dense(3, "tanh", dropout=rate)
           .dense(2, "linear"))
    x, y = _data("mse", "linear", k=2)
    params = net.init(4)
    gradcheck.check(net, params, x, y, seed=11)
    # dropout is on in training only, and its masks follow the seed
    a = net.forward(params, x, train=True, seed=11)
    assert not np.array_equal(a, net.forward(params, x))
    np.testing.assert_array_equal(a, net.forward(params, x, train=True, seed=11))
    assert not np.array_equal(a, net.forward(params, x, train=True, seed=12))


def test_clip_changes_the_gradient_as_documented():
    net = neurons.Network((4,), "float64").dense(3, "linear").set_objective("mse", clip=(-0.01, 0.01))
    x, y = _data("mse", "linear")
    y = y * 100
    params = net.init(0)
    _, g = net.loss_and_grad(params, x, y)
    # with every per-sample output gradient clipped to ±0.01, dW = Σ_n clip(...)·x / N
    out = x @ params[0][0].T + params[0][1]
    dp = np.clip(2 * (out - y) / 3, -0.01, 0.01) / len(x)
    np.testing.assert_allclose(g[0][0], dp.T @ x, rtol=1e-10)
    np.testing.assert_allclose(g[0][1], dp.sum(0), rtol=1e-10)


def test_float32_gradients_close_to_float64():
    x, y = _data("mse", "linear")
    n64 = neurons.Network((4,), "float64").dense(6, "tanh").dense(3)
    n32 = neurons.Network((4,), "float32").dense(6, "tanh").dense(3)
    p64 = n64.init(5)
    p32 = n32.init(5)
    l32, g32 = n32.loss_and_grad(p32, x, y)
    l64, g64 = n64.loss_and_grad(p64, x, y)
    assert all(a.dtype == np.float32 for a in gradcheck.leaves(g32))
    assert l32 == pytest.approx(l64, rel=1e-5)
    for a, b in zip(gradcheck.leaves(g32), gradcheck.leaves(g64)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
