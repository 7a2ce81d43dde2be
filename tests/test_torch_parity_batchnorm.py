"""Batch normalization against ``torch.nn.BatchNorm1d / BatchNorm2d`` in float64: several SGD
steps on the same batches, comparing at every step the training forward pass, the loss, every
gradient and the running mean and variance, then the inference pass with the running statistics;
and ``learn`` over the same batches ends where torch does (skipped without torch)."""
import numpy as np
import pytest

import neurons
from neurons.layers import BatchNorm, Dense

from . import gradcheck

torch = pytest.importorskip("torch")
nn = torch.nn
F = nn.functional

RTOL = 1e-9


def _linear(fan_in, units, p):
    lin = nn.Linear(fan_in, units, bias=len(p) > 1, dtype=torch.float64)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(p[0]))
        if len(p) > 1:
            lin.bias.copy_(torch.tensor(p[1]))
    return lin


def _conv(c, f, p):
    conv = nn.Conv2d(c, f, 3, padding=1, bias=len(p) > 1, dtype=torch.float64)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(p[0]))
        if len(p) > 1:
            conv.bias.copy_(torch.tensor(p[1]))
    return conv


def _bn(kind, p, momentum=0.1, eps=1e-5):
    bn = kind(len(p[0]), momentum=momentum, eps=eps, dtype=torch.float64)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor(p[0]))
        bn.bias.copy_(torch.tensor(p[1]))
    return bn


class Dense1d(nn.Module):
    """dense 6 tanh -> batchnorm -> dense 5 relu -> batchnorm(momentum 0.3, eps 1e-3) -> dense 3."""

    def __init__(self, p):
        super().__init__()
        self.l0, self.b1 = _linear(4, 6, p[0]), _bn(nn.BatchNorm1d, p[1])
        self.l2, self.b3 = _linear(6, 5, p[2]), _bn(nn.BatchNorm1d, p[3], 0.3, 1e-3)
        self.l4 = _linear(5, 3, p[4])
        self.tied = [[self.l0], [self.b1], [self.l2], [self.b3], [self.l4]]

    def forward(self, x):
        return self.l4(self.b3(torch.relu(self.l2(self.b1(torch.tanh(self.l0(x)))))))


class Image2d(nn.Module):
    """conv 3 relu -> batchnorm2d -> maxpool 2 -> dense 3."""

    def __init__(self, p):
        super().__init__()
        self.c0, self.b1, self.l3 = _conv(2, 3, p[0]), _bn(nn.BatchNorm2d, p[1]), _linear(27, 3, p[3])
        self.tied = [[self.c0], [self.b1], [], [self.l3]]

    def forward(self, x):
        return self.l3(F.max_pool2d(self.b1(torch.relu(self.c0(x))), 2).flatten(1))


class Block(nn.Module):
    """dense 5 tanh -> a block [dense 5 tanh, batchnorm] applied 3 times (one Linear and one
    BatchNorm1d module called three times) -> dense 3."""

    def __init__(self, p):
        super().__init__()
        self.l0, self.l2 = _linear(4, 5, p[0]), _linear(5, 3, p[2])
        self.inner, self.bn = _linear(5, 5, p[1][0]), _bn(nn.BatchNorm1d, p[1][1])
        self.tied = [[self.l0], [[self.inner], [self.bn]], [self.l2]]

    def forward(self, x):
        z = torch.tanh(self.l0(x))
        for _ in range(3):
            z = self.bn(torch.tanh(self.inner(z)))
        return self.l2(z)


class Loop(nn.Module):
    """dense 5 tanh -> [dense 5 tanh -> batchnorm] run 3 times (loopback, mean of the passes) -> dense 3."""

    def __init__(self, p):
        super().__init__()
        self.l0, self.l1, self.b2, self.l3 = (_linear(4, 5, p[0]), _linear(5, 5, p[1]), _bn(nn.BatchNorm1d, p[2]),
                                              _linear(5, 3, p[3]))
        self.tied = [[self.l0], [self.l1], [self.b2], [self.l3]]

    def forward(self, x):
        h = torch.tanh(self.l0(x))
        outs = []
        for _ in range(3):
            h = self.b2(torch.tanh(self.l1(h)))
            outs.append(h)
        return self.l3(sum(outs) / 3)


CASES = {
    "dense": (lambda: neurons.Network((4,), "float64").dense(6, "tanh").batchnorm().dense(5, "relu")
              .batchnorm(momentum=0.3, eps=1e-3).dense(3), Dense1d, (4,)),
    "image": (lambda: neurons.Network((2, 6, 6), "float64").convolution(3, 3, padding=1, activation="relu",
                                                                       bias=True)
              .batchnorm().maxpool(2).dense(3), Image2d, (2, 6, 6)),
    "feedback": (lambda: neurons.Network((4,), "float64").dense(5, "tanh")
                 .feedback([Dense(5, "tanh"), BatchNorm()], 3).dense(3), Block, (4,)),
    "loopback": (lambda: neurons.Network((4,), "float64").dense(5, "tanh").dense(5, "tanh").batchnorm().dense(3)
                 .loopback(2, 1, 2), Loop, (4,)),
}


def _torch_params(model):
    """The torch parameters in the order of the network's params tree (leaves)."""
    def walk(entry):
        if isinstance(entry, list):
            return [t for e in entry for t in walk(e)]
        return [t for t in (entry.weight, entry.bias) if t is not None]
    return walk(model.tied)


def _torch_state(model):
    return [(m.running_mean, m.running_var) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _our_state(net, state):
    out = []
    for i, j in net._state_keys:
        out.append(state[i] if j < 0 else state[i][j])
    return out


def _close(a, b):
    np.testing.assert_allclose(a, b.detach().numpy(), rtol=RTOL, atol=1e-12)


@pytest.mark.parametrize("name", CASES)
def test_sgd_steps_match_torch_at_every_step(name):
    build, module, shape = CASES[name]
    net = build().set_optimizer(neurons.optimizers.SGD(lr=0.1))
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(20,) + shape) * 1.5 + 0.5, rng.normal(size=(20, 3))
    params = net.init(1)
    params = neurons._tree.map(lambda a: a + rng.uniform(-0.2, 0.2, a.shape), params)
    model = module(params)
    opt_t = torch.optim.SGD(model.parameters(), lr=0.1)
    state, opt_state = net.init_state(), net.optimizer.init(params)
    start = (params, state)
    batches = [slice(0, 8), slice(8, 16), slice(16, 20)]
    for step, b in enumerate(batches):
        xb, yb = x[b], y[b]
        model.train()
        out = model(torch.tensor(xb))
        np.testing.assert_allclose(net.forward(params, xb, train=True, state=state).reshape(len(xb), -1),
                                   out.detach().numpy(), rtol=RTOL, atol=1e-12)
        tl = F.mse_loss(out, torch.tensor(yb))
        opt_t.zero_grad()
        tl.backward()
        loss, grads, state = net.loss_and_grad(params, xb, yb, state=state, return_state=True)
        assert loss == pytest.approx(tl.item(), rel=RTOL)
        theirs = _torch_params(model)
        assert len(theirs) == len(gradcheck.leaves(grads))
        for g, t in zip(gradcheck.leaves(grads), theirs):
            _close(g, t.grad)
        for (m, v), (tm, tv) in zip(_our_state(net, state), _torch_state(model)):
            _close(m, tm)
            _close(v, tv)
        opt_t.step()
        params, opt_state = net.optimizer.update(grads, opt_state, params)
        for p, t in zip(gradcheck.leaves(params), _torch_params(model)):
            _close(p, t)
        # inference with the running statistics
        model.eval()
        with torch.no_grad():
            _close(net.predict(params, x, state=state).reshape(len(x), -1), model(torch.tensor(x)))
    # learn over the same batches (no shuffling) ends where torch did
    t = net.learn(x, y, batch=8, epochs=1, shuffle=False, params=start[0], state=start[1])
    for p, tp in zip(gradcheck.leaves(t.params), _torch_params(model)):
        _close(p, tp)
    for (m, v), (tm, tv) in zip(_our_state(net, t.state), _torch_state(model)):
        _close(m, tm)
        _close(v, tv)
