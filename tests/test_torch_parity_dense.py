"""Dense networks' loss_and_grad against PyTorch autograd in float64 (skipped without torch)."""
import numpy as np
import pytest

import neurons

torch = pytest.importorskip("torch")
F = torch.nn.functional

ACTS = ["linear", "sigmoid", "tanh", "relu", "leaky_relu", "softmax"]
OBJS = ["ae", "mae", "mse", "rmse", "cross_entropy", "binary_cross_entropy", "kl_divergence"]
EPS = 1e-7


def t_act(z, name):
    return {"linear": lambda v: v, "sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu,
            "leaky_relu": lambda v: F.leaky_relu(v, 0.01), "softmax": lambda v: torch.softmax(v, 1)}[name](z)


def t_loss(p, y, name, logits=None):
    f = p.shape[1]
    c = p.clamp(EPS, 1 - EPS)
    if name == "ae":
        per = (p - y).abs().sum(1)
    elif name == "mae":
        per = (p - y).abs().sum(1) / f
    elif name == "mse":
        per = ((p - y) ** 2).sum(1) / f
    elif name == "rmse":
        per = (((p - y) ** 2).sum(1) / f).sqrt()
    elif name == "cross_entropy":
        per = -(y * (torch.log_softmax(logits, 1) if logits is not None else c.log())).sum(1)
    elif name == "binary_cross_entropy":
        per = -(y * c.log() + (1 - y) * (1 - c).log()).sum(1) / f
    else:
        per = torch.where(y > 0, y * (y.clamp_min(1e-300).log() - c.log()), torch.zeros_like(y)).sum(1)
    return per.mean()


@pytest.mark.parametrize("obj", OBJS)
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("bias", [True, False])
def test_dense_matches_torch(act, obj, bias):
    last = act if obj not in ("cross_entropy", "binary_cross_entropy", "kl_divergence") or act in ("sigmoid", "softmax") else "sigmoid"
    net = (neurons.Network((5,), "float64").dense(7, act, bias=bias).dense(4, act, bias=bias)
           .dense(3, last, bias=bias).set_objective(obj))
    params = net.init(3)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 5))
    y = rng.uniform(0.05, 1, size=(6, 3))
    if obj in ("cross_entropy", "kl_divergence"):
        y /= y.sum(1, keepdims=True)
    loss, grads = net.loss_and_grad(params, x, y)

    tp = [[torch.tensor(a, requires_grad=True) for a in entry] for entry in params]
    h = torch.tensor(x)
    acts = [act, act, last]
    for i, entry in enumerate(tp):
        z = h @ entry[0].T + (entry[1] if bias else 0)
        logits = z
        h = t_act(z, acts[i])
    tl = t_loss(h, torch.tensor(y), obj, logits if (obj == "cross_entropy" and last == "softmax") else None)
    tl.backward()
    assert loss == pytest.approx(tl.item(), rel=1e-12, abs=1e-14)
    for entry, gentry in zip(tp, grads):
        for t, g in zip(entry, gentry):
            np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-9, atol=1e-12)
