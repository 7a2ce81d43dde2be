"""Each optimizer against torch.optim over 50 steps in float64 (skipped without torch)."""
import numpy as np
import pytest

from neurons import optimizers as O

torch = pytest.importorskip("torch")

CASES = [
    (O.SGD(lr=0.05, decay=0.01), lambda p: torch.optim.SGD(p, lr=0.05, weight_decay=0.01)),
    (O.SGDM(lr=0.05, momentum=0.8, decay=0.01), lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.8, weight_decay=0.01)),
    (O.Adam(lr=0.01, beta1=0.85, beta2=0.95, eps=1e-7, decay=0.02),
     lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.85, 0.95), eps=1e-7, weight_decay=0.02)),
    (O.AdamW(lr=0.01, decay=0.1), lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1)),
    (O.RMSprop(lr=0.01, alpha=0.9, eps=1e-7, decay=0.01),
     lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.9, eps=1e-7, weight_decay=0.01)),
    (O.RMSprop(lr=0.01, alpha=0.9, momentum=0.5, centered=True, decay=0.01),
     lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.9, momentum=0.5, centered=True, weight_decay=0.01)),
]


@pytest.mark.parametrize("opt, make", CASES, ids=lambda c: c.describe() if hasattr(c, "describe") else "")
def test_matches_torch_over_50_steps(opt, make):
    rng = np.random.default_rng(0)
    params = ((rng.normal(size=(4, 3)), rng.normal(size=4)),)
    tp = [torch.tensor(a.copy(), requires_grad=True) for a in (params[0][0], params[0][1])]
    topt = make(tp)
    state = opt.init(params)
    for _ in range(50):
        grads = ((rng.normal(size=(4, 3)), rng.normal(size=4)),)
        params, state = opt.update(grads, state, params)
        for t, g in zip(tp, grads[0]):
            t.grad = torch.tensor(g)
        topt.step()
    for a, t in zip(params[0], tp):
        np.testing.assert_allclose(a, t.detach().numpy(), rtol=1e-12, atol=1e-14)
