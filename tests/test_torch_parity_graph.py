"""Skips, loops and feedback blocks against hand-unrolled PyTorch models in float64: forward and
every gradient (skipped without torch)."""
import numpy as np
import pytest

import neurons
from neurons.layers import Convolution, Dense

from . import gradcheck

torch = pytest.importorskip("torch")
F = torch.nn.functional


def acc(mode, values):
    if mode == "overwrite":
        return values[-1]
    if mode in ("add", "mean"):
        out = values[0]
        for v in values[1:]:
            out = out + v
        return out / len(values) if mode == "mean" else out
    if mode == "subtract":
        out = values[0]
        for v in values[1:]:
            out = out - v
        return out
    out = values[0]
    for v in values[1:]:
        out = out * v
    return out


def tparams(params):
    def conv(t):
        return tuple(conv(a) for a in t) if isinstance(t, tuple) else torch.tensor(t, requires_grad=True)
    return conv(params)


def compare(net, params, x, y, model):
    """Run ``model(tp, x)`` in torch with an MSE loss and compare loss and all grads."""
    loss, grads = net.loss_and_grad(params, x, y)
    tp = tparams(params)
    out = model(tp, torch.tensor(x))
    tl = ((out.reshape(len(x), -1) - torch.tensor(y)) ** 2).sum(1).div(y.shape[1]).mean()
    tl.backward()
    np.testing.assert_allclose(net.forward(params, x).reshape(len(x), -1), out.detach().numpy().reshape(len(x), -1),
                               rtol=1e-12, atol=1e-14)
    assert loss == pytest.approx(tl.item(), rel=1e-12)
    for g, t in zip(gradcheck.leaves(grads), gradcheck.leaves(tp)):
        want = t.grad.numpy() if t.grad is not None else np.zeros_like(g)   # unused: overwritten
        np.testing.assert_allclose(g, want, rtol=1e-9, atol=1e-13)


def lin(p, h, act=torch.tanh):
    h = h.reshape(len(h), -1) @ p[0].T
    return act(h + p[1] if len(p) > 1 else h)


def conv(p, h, act=torch.tanh):
    return act(F.conv2d(h, p[0], p[1] if len(p) > 1 else None, padding=1))


X = np.random.default_rng(0).normal(size=(3, 4))
Y = np.random.default_rng(1).normal(size=(3, 2))
IMG = np.random.default_rng(2).normal(size=(2, 1, 6, 6))
YI = np.random.default_rng(3).normal(size=(2, 3))


@pytest.mark.parametrize("mode", ["add", "subtract", "multiply", "overwrite", "mean"])
def test_skip(mode):
    net = (neurons.Network((4,), "float64").dense(4, "tanh").dense(4, "tanh").dense(4, "tanh").dense(2, "linear")
           .connect(0, 2).connect(1, 3).set_accumulation(skip=mode))

    def model(p, x):
        h0 = lin(p[0], x)
        x2 = acc(mode, [lin(p[1], h0), x])
        h2 = lin(p[2], x2)
        return lin(p[3], acc(mode, [h2, h0]), lambda v: v)
    compare(net, net.init(1), X, Y, model)


@pytest.mark.parametrize("inskips", [False, True])
@pytest.mark.parametrize("mode", ["mean", "add", "subtract", "multiply", "overwrite"])
def test_loopback(mode, inskips):
    net = (neurons.Network((4,), "float64").dense(4, "tanh").dense(5, "sigmoid").dense(4, "tanh").dense(2)
           .loopback(2, 1, 3, inskips=inskips).set_accumulation(loop=mode))

    def model(p, x):
        x1 = lin(p[0], x)
        outs, inp = [], x1
        for k in range(4):
            if k:
                inp = outs[-1] + x1 if inskips else outs[-1]
            outs.append(lin(p[2], lin(p[1], inp, torch.sigmoid)))
        return lin(p[3], acc(mode, outs), lambda v: v)
    compare(net, net.init(2), X, Y, model)


@pytest.mark.parametrize("outskips", [False, True])
@pytest.mark.parametrize("inskips", [False, True])
@pytest.mark.parametrize("mode", ["add", "subtract", "multiply", "mean"])
def test_feedback_dense(mode, inskips, outskips):
    net = (neurons.Network((4,), "float64").dense(4, "tanh")
           .feedback([Dense(5, "tanh"), Dense(4, "sigmoid")], 3, inskips, outskips, mode).dense(2))

    def model(p, x):
        x1 = lin(p[0], x)
        zs, z = [], x1
        for r in range(3):
            inp = acc(mode, [z, x1]) if r and inskips else z
            z = lin(p[1][1], lin(p[1][0], inp), torch.sigmoid)
            zs.append(z)
        out = acc(mode, [zs[-1]] + zs[:-1]) if outskips else zs[-1]
        return lin(p[2], out, lambda v: v)
    compare(net, net.init(3), X, Y, model)


@pytest.mark.parametrize("outskips", [False, True])
@pytest.mark.parametrize("inskips", [False, True])
@pytest.mark.parametrize("mode", ["add", "subtract", "multiply", "mean"])
def test_feedback_convolution(mode, inskips, outskips):
    net = (neurons.Network((1, 6, 6), "float64").convolution(2, 3, padding=1, activation="tanh")
           .feedback([Convolution(3, 3, padding=1, activation="tanh", bias=True),
                      Convolution(2, 3, padding=1, activation="tanh")], 2, inskips, outskips, mode)
           .maxpool(2).dense(3))

    def model(p, x):
        x1 = conv(p[0], x)
        zs, z = [], x1
        for r in range(2):
            inp = acc(mode, [z, x1]) if r and inskips else z
            z = conv(p[1][1], conv(p[1][0], inp))
            zs.append(z)
        out = acc(mode, [zs[-1]] + zs[:-1]) if outskips else zs[-1]
        return lin(p[3], F.max_pool2d(out, 2), lambda v: v)
    compare(net, net.init(4), IMG, YI, model)


@pytest.mark.parametrize("mode", ["mean", "multiply", "overwrite"])
def test_convolution_loop_with_skip(mode):
    net = (neurons.Network((1, 6, 6), "float64").convolution(2, 3, padding=1, activation="tanh")
           .convolution(2, 3, padding=1, activation="tanh").convolution(2, 3, padding=1, activation="tanh")
           .maxpool(2).dense(3).loopback(2, 1, 2, inskips=True).connect(1, 2)
           .set_accumulation(skip="add", loop=mode))

    def model(p, x):
        x1 = conv(p[0], x)
        outs, inp = [], x1
        for k in range(3):
            if k:
                inp = outs[-1] + x1
            outs.append(conv(p[2], conv(p[1], inp) + inp))     # the skip reads this pass's input
        return lin(p[4], F.max_pool2d(acc(mode, outs), 2), lambda v: v)
    compare(net, net.init(5), IMG, YI, model)
