"""Recurrent layers against torch.nn.RNN / LSTM / GRU in float64, weights copied in: output, loss,
every param gradient and the input gradient (skipped without torch)."""
import numpy as np
import pytest

import neurons
from neurons import _tree

torch = pytest.importorskip("torch")

MODULES = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}
NAMES = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")


def twin(spec, entry, features, dtype=torch.float64):
    """The torch module of ``spec`` holding ``entry``'s arrays (the same layout: no reshuffling)."""
    m = MODULES[spec.cell](features, spec.units, batch_first=True, bias=spec.bias).to(dtype)
    with torch.no_grad():
        for name, a in zip(NAMES, entry):
            getattr(m, name).copy_(torch.from_numpy(a))
    return m


def grads_of(m, spec):
    return [getattr(m, name).grad.numpy() for name in NAMES[:len(spec.param_shapes((1, 1)))]]


def wide(net, seed):
    """Params of ``net`` drawn in (-1, 1), so the gates are exercised well away from 0.5."""
    rng = np.random.default_rng(seed)
    return _tree.map(lambda a: rng.uniform(-1, 1, a.shape).astype(a.dtype), net.init(0))


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("sequences", [True, False])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_layer_matches_torch(cell, sequences, bias):
    net = neurons.Network((6, 3), "float64").recurrent(5, cell, sequences, bias).set_objective("mse")
    spec = net.layers[0]
    params = wide(net, 1)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4, 6, 3))
    y = rng.normal(size=(4,) + net.output_shape)
    loss, grads = net.loss_and_grad(params, x, y)

    m = twin(spec, params[0], 3)
    tx = torch.tensor(x, requires_grad=True)
    out, _ = m(tx)
    out = out if sequences else out[:, -1]
    tl = ((out.reshape(4, -1) - torch.tensor(y).reshape(4, -1)) ** 2).mean(1).mean()
    tl.backward()
    np.testing.assert_allclose(net.forward(params, x), out.detach().numpy(), rtol=1e-12, atol=1e-14)
    assert loss == pytest.approx(tl.item(), rel=1e-12)
    for g, t in zip(grads[0], grads_of(m, spec)):
        np.testing.assert_allclose(g, t, rtol=1e-9, atol=1e-13)
    # the input gradient, for a random output gradient
    dy = rng.normal(size=out.shape)
    tx.grad = None
    out, _ = m(tx)
    ((out if sequences else out[:, -1]) * torch.tensor(dy)).sum().backward()
    _, cache = spec.forward(params[0], x)
    dx, _ = spec.backward(params[0], cache, dy, True)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-9, atol=1e-13)


def test_stacked_pair_and_a_dense_layer_on_the_sequence():
    """gru (sequence) -> lstm (sequence) -> dense on (T * units) -> softmax cross-entropy."""
    net = (neurons.Network((5, 4), "float64").recurrent(6, "gru", True).recurrent(3, "lstm", True)
           .dense(4, "softmax").set_objective("cross_entropy"))
    params = wide(net, 3)
    rng = np.random.default_rng(4)
    x = rng.normal(size=(7, 5, 4))
    labels = rng.integers(0, 4, 7)
    loss, grads = net.loss_and_grad(params, x, labels)

    gru, lstm = twin(net.layers[0], params[0], 4), twin(net.layers[1], params[1], 6)
    w, b = (torch.tensor(a, requires_grad=True) for a in params[2])
    tx = torch.tensor(x, requires_grad=True)
    h, _ = lstm(gru(tx)[0])
    logits = h.reshape(7, -1) @ w.T + b                 # row-major: step 0's units, then step 1's, ...
    tl = torch.nn.functional.cross_entropy(logits, torch.tensor(labels))
    tl.backward()
    np.testing.assert_allclose(net.forward(params, x), torch.softmax(logits, 1).detach().numpy(), rtol=1e-12)
    assert loss == pytest.approx(tl.item(), rel=1e-12)
    for g, t in zip(grads[0], grads_of(gru, net.layers[0])):
        np.testing.assert_allclose(g, t, rtol=1e-9, atol=1e-13)
    for g, t in zip(grads[1], grads_of(lstm, net.layers[1])):
        np.testing.assert_allclose(g, t, rtol=1e-9, atol=1e-13)
    np.testing.assert_allclose(grads[2][0], w.grad.numpy(), rtol=1e-9, atol=1e-13)
    np.testing.assert_allclose(grads[2][1], b.grad.numpy(), rtol=1e-9, atol=1e-13)


def test_lstm_then_dense_float32_forward():
    """The benchmark's network in float32: the vectorised gates against torch's."""
    net = neurons.Network((28, 28)).recurrent(32).dense(10, "softmax")
    params = net.init(5)
    x = np.random.default_rng(6).random((16, 28, 28), dtype=np.float32)
    m = twin(net.layers[0], params[0], 28, torch.float32)
    h = m(torch.from_numpy(x))[0][:, -1]
    p = torch.softmax(h @ torch.from_numpy(params[1][0]).T + torch.from_numpy(params[1][1]), 1)
    np.testing.assert_allclose(net.forward(params, x), p.detach().numpy(), rtol=1e-4, atol=1e-6)
