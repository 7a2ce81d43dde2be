"""Skips, loopbacks and feedback blocks: forward against hand-unrolled NumPy, gradients against
central differences, for every accumulation mode (float64)."""
import numpy as np
import pytest

import neurons
from neurons.graph import BLOCK_MODES, LOOP_MODES, SKIP_MODES
from neurons.layers import Convolution, Dense, Maxpool

from . import gradcheck
from . import reference as ref


def test_the_modes_are_specs():
    """SPEC §6's accumulation modes, every one tested below (the lists come from the code)."""
    assert set(SKIP_MODES) == set(LOOP_MODES) == {"add", "subtract", "multiply", "overwrite", "mean"}
    assert set(BLOCK_MODES) == set(SKIP_MODES) - {"overwrite"}


def acc(mode, values):
    if mode == "overwrite":
        return values[-1]
    if mode == "add":
        return sum(values)
    if mode == "mean":
        return sum(values) / len(values)
    if mode == "subtract":
        return values[0] - sum(values[1:])
    out = values[0]
    for v in values[1:]:
        out = out * v
    return out


def dense(p, x, act):
    z = x.reshape(len(x), -1) @ p[0].T + (p[1] if len(p) > 1 else 0)
    return ref.activation(z, act)


def _xy(n=4, f=4, k=2, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, f)), rng.normal(size=(n, k))


@pytest.mark.parametrize("mode", SKIP_MODES)
def test_skip_forward_and_gradient(mode):
    net = (neurons.Network((4,), "float64").dense(4, "tanh").dense(4, "tanh").dense(4, "sigmoid").dense(2)
           .connect(0, 2).set_accumulation(skip=mode))
    p = net.init(1)
    x, y = _xy()
    o1 = dense(p[1], dense(p[0], x, "tanh"), "tanh")
    x2 = acc(mode, [o1, x])
    want = dense(p[3], dense(p[2], x2, "sigmoid"), "linear")
    np.testing.assert_allclose(net.forward(p, x), want, rtol=1e-12)
    gradcheck.check(net, p, x, y)


def test_skip_reshapes_between_shape_kinds():
    # the input of layer 0 is a 1x4x4 image; layer 2 takes 16 dense features
    net = (neurons.Network((1, 4, 4), "float64").convolution(1, 3, padding=1, activation="tanh")
           .dense(16, "tanh").dense(2).connect(0, 2))
    p = net.init(0)
    x = np.random.default_rng(0).normal(size=(3, 1, 4, 4))
    y = np.random.default_rng(1).normal(size=(3, 2))
    gradcheck.check(net, p, x, y)


@pytest.mark.parametrize("inskips", [False, True])
@pytest.mark.parametrize("mode", LOOP_MODES)
def test_loopback_forward_and_gradient(mode, inskips):
    net = (neurons.Network((4,), "float64").dense(4, "tanh").dense(5, "tanh").dense(4, "sigmoid").dense(2)
           .loopback(outof=2, into=1, iterations=2, inskips=inskips).set_accumulation(loop=mode))
    p = net.init(2)
    x, y = _xy()
    x1 = dense(p[0], x, "tanh")
    outs, inp = [], x1
    for k in range(3):
        if k:
            inp = outs[-1] + x1 if inskips else outs[-1]
        outs.append(dense(p[2], dense(p[1], inp, "tanh"), "sigmoid"))
    want = dense(p[3], acc(mode, outs), "linear")
    np.testing.assert_allclose(net.forward(p, x), want, rtol=1e-12)
    gradcheck.check(net, p, x, y)


def test_loopback_scale_multiplies_segment_weight_gradients():
    base = neurons.Network((4,), "float64").dense(4, "tanh").dense(4, "tanh").dense(2)
    exact = base.loopback(1, 1, 3)
    scaled = base.loopback(1, 1, 3, scale=lambda passes: 1.0 / passes)
    p = exact.init(0)
    x, y = _xy()
    _, g = exact.loss_and_grad(p, x, y)
    _, gs = scaled.loss_and_grad(p, x, y)
    np.testing.assert_allclose(gs[1][0], g[1][0] / 4)
    np.testing.assert_array_equal(gs[0][0], g[0][0])
    np.testing.assert_array_equal(gs[2][0], g[2][0])


def test_skips_inside_and_across_a_loop():
    # skip into a loop layer from before the loop (applied every pass), and out of the loop (last pass)
    net = (neurons.Network((4,), "float64").dense(4, "tanh").dense(4, "tanh").dense(4, "tanh").dense(4, "tanh")
           .dense(2).loopback(2, 1, 2).connect(0, 2).connect(1, 4))
    p = net.init(3)
    x, y = _xy()
    x1 = dense(p[0], x, "tanh")
    outs, inp = [], x1
    for k in range(3):
        if k:
            inp = outs[-1]
        last_in1 = inp
        outs.append(dense(p[2], dense(p[1], inp, "tanh") + x, "tanh"))
    h = dense(p[3], np.mean(outs, axis=0), "tanh")
    want = dense(p[4], h + last_in1, "linear")
    np.testing.assert_allclose(net.forward(p, x), want, rtol=1e-12)
    gradcheck.check(net, p, x, y)


@pytest.mark.parametrize("outskips", [False, True])
@pytest.mark.parametrize("inskips", [False, True])
@pytest.mark.parametrize("mode", BLOCK_MODES)
def test_feedback_block_forward_and_gradient(mode, inskips, outskips):
    net = (neurons.Network((4,), "float64").dense(4, "tanh")
           .feedback([Dense(6, "tanh"), Dense(4, "sigmoid")], loops=3, inskips=inskips, outskips=outskips,
                     accumulation=mode)
           .dense(2))
    p = net.init(4)
    assert len(p) == 3 and len(p[1]) == 2
    x, y = _xy()
    x1 = dense(p[0], x, "tanh")
    zs, z = [], x1
    for r in range(3):
        inp = acc(mode, [z, x1]) if r and inskips else z
        z = dense(p[1][1], dense(p[1][0], inp, "tanh"), "sigmoid")
        zs.append(z)
    out = acc(mode, [zs[-1]] + zs[:-1]) if outskips else zs[-1]
    np.testing.assert_allclose(net.forward(p, x), dense(p[2], out, "linear"), rtol=1e-12)
    gradcheck.check(net, p, x, y)


def test_feedback_coupling_mean_divides_the_tied_gradient():
    blk = [Dense(4, "tanh")]
    a = neurons.Network((4,), "float64").feedback(blk, loops=3).dense(2)
    b = neurons.Network((4,), "float64").feedback(blk, loops=3, coupling="mean").dense(2)
    p = a.init(0)
    x, y = _xy()
    _, ga = a.loss_and_grad(p, x, y)
    _, gb = b.loss_and_grad(p, x, y)
    np.testing.assert_allclose(gb[0][0][0], ga[0][0][0] / 3, rtol=1e-14)
    np.testing.assert_array_equal(gb[1][0], ga[1][0])
    # tied weights are counted once
    assert a.parameters == 4 * 4 + 4 + 2 * 4 + 2


def test_feedback_tied_gradient_is_the_sum_over_loops():
    # a block with loops=2 equals two plain layers sharing one weight: its gradient is their sum
    x, y = _xy()
    tied = neurons.Network((4,), "float64").feedback([Dense(4, "tanh")], loops=2).dense(2)
    untied = neurons.Network((4,), "float64").dense(4, "tanh").dense(4, "tanh").dense(2)
    p = tied.init(0)
    q = (p[0][0], p[0][0], p[1])
    np.testing.assert_allclose(tied.forward(p, x), untied.forward(q, x), rtol=1e-14)
    _, gt = tied.loss_and_grad(p, x, y)
    _, gu = untied.loss_and_grad(q, x, y)
    np.testing.assert_allclose(gt[0][0][0], gu[0][0] + gu[1][0], rtol=1e-12)
    np.testing.assert_allclose(gt[0][0][1], gu[0][1] + gu[1][1], rtol=1e-12)


@pytest.mark.parametrize("mode", ["add", "multiply"])
def test_convolution_skip_loop_and_block(mode):
    x = np.random.default_rng(0).normal(size=(2, 1, 6, 6))
    y = np.random.default_rng(1).normal(size=(2, 3))
    conv = dict(kernel=3, padding=1, activation="tanh")
    net = (neurons.Network((1, 6, 6), "float64").convolution(2, **conv).convolution(2, **conv)
           .convolution(2, **conv, bias=True).maxpool(2).dense(3).connect(1, 2).loopback(2, 1, 2, inskips=True)
           .set_accumulation(skip=mode, loop=mode))
    gradcheck.check(net, net.init(0), x, y)
    blk = (neurons.Network((1, 6, 6), "float64").convolution(2, **conv)
           .feedback([Convolution(3, **conv, bias=True), Convolution(2, **conv)], loops=2, inskips=True,
                     outskips=True, accumulation=mode)
           .maxpool(2).dense(3))
    gradcheck.check(blk, blk.init(1), x, y)


def test_convolution_relu_taken_by_the_kernel_with_dropout_loop_and_block():
    # 5 filters, stride 1: the kernels apply the ReLU; dropout comes after it, masks held fixed
    x = np.random.default_rng(2).normal(size=(3, 1, 6, 6))
    y = np.random.default_rng(3).normal(size=(3, 3))
    conv = dict(kernel=3, padding=1, activation="relu", bias=True)
    net = (neurons.Network((1, 6, 6), "float64").convolution(5, **conv, dropout=0.3).convolution(5, **conv)
           .maxpool(2).dense(3).loopback(1, 1, 2))
    assert net.layers[0]._relu_in_kernel(True)
    gradcheck.check(net, net.init(0), x, y, seed=5)
    blk = (neurons.Network((1, 6, 6), "float64").convolution(5, **conv)
           .feedback([Convolution(5, **conv)], loops=2).maxpool(2).dense(3))
    gradcheck.check(blk, blk.init(1), x, y)


def test_probe_switches_off_and_keeps_params():
    net = (neurons.Network((4,), "float64").dense(4, "tanh").dense(4, "tanh")
           .feedback([Dense(4, "tanh")], loops=3).dense(2).connect(0, 2).loopback(1, 1, 2))
    p = net.init(0)
    snapshot = [a.copy() for a in gradcheck.leaves(p)]
    x, _ = _xy()
    plain = net.probe()
    assert plain.skips == () and plain.loops == () and plain.layers[2].loops == 1
    out = plain.forward(p, x)
    want = dense(p[3], dense(p[2][0], dense(p[1], dense(p[0], x, "tanh"), "tanh"), "tanh"), "linear")
    np.testing.assert_allclose(out, want, rtol=1e-12)
    assert not np.allclose(out, net.forward(p, x))
    assert net.probe(skips=True, loops=True, feedback=True) == net
    for a, b in zip(gradcheck.leaves(p), snapshot):
        np.testing.assert_array_equal(a, b)
