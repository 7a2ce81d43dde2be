"""Each schedule against its torch.optim.lr_scheduler, stepped once per optimizer step, and a tiny
linear model trained by both with the schedule (float64; skipped without torch)."""
import numpy as np
import pytest

import neurons
from neurons import optimizers as O, schedules as S

torch = pytest.importorskip("torch")
LR = torch.optim.lr_scheduler


def warmup_cosine(opt, warmup, total, min_lr):
    return LR.SequentialLR(opt, [LR.LinearLR(opt, start_factor=1 / warmup, end_factor=1.0, total_iters=warmup - 1),
                                 LR.CosineAnnealingLR(opt, T_max=total - warmup, eta_min=min_lr)],
                           milestones=[warmup])


# (our schedule, its base lr for torch.optim.SGD, torch's scheduler on that optimizer, steps to compare)
CASES = [
    (S.constant(0.03), 0.03, lambda o: LR.LambdaLR(o, lambda t: 1.0), 200),
    (S.step(0.1, 7), 0.1, lambda o: LR.StepLR(o, step_size=7), 200),
    (S.step(0.5, 30, 0.5), 0.5, lambda o: LR.StepLR(o, step_size=30, gamma=0.5), 300),
    (S.step(1e-3, 10, 1.5), 1e-3, lambda o: LR.StepLR(o, step_size=10, gamma=1.5), 300),
    (S.exponential(0.1, 0.97), 0.1, lambda o: LR.ExponentialLR(o, gamma=0.97), 300),
    (S.exponential(1e-4, 1.02), 1e-4, lambda o: LR.ExponentialLR(o, gamma=1.02), 300),
    (S.cosine(0.1, 200), 0.1, lambda o: LR.CosineAnnealingLR(o, T_max=200), 201),
    (S.cosine(0.1, 150, 1e-3), 0.1, lambda o: LR.CosineAnnealingLR(o, T_max=150, eta_min=1e-3), 151),
    (S.cosine(2.0, 7, 0.5), 2.0, lambda o: LR.CosineAnnealingLR(o, T_max=7, eta_min=0.5), 8),
    (S.onecycle(0.1, 200), 0.1, lambda o: LR.OneCycleLR(o, max_lr=0.1, total_steps=200, cycle_momentum=False), 200),
    (S.onecycle(0.4, 123, 0.25, 10.0, 1e3, "linear"), 0.4,
     lambda o: LR.OneCycleLR(o, max_lr=0.4, total_steps=123, pct_start=0.25, div_factor=10.0, final_div_factor=1e3,
                             anneal_strategy="linear", cycle_momentum=False), 123),
    (S.onecycle(1.0, 3), 1.0, lambda o: LR.OneCycleLR(o, max_lr=1.0, total_steps=3, cycle_momentum=False), 3),
    (S.onecycle(1.0, 1), 1.0, lambda o: LR.OneCycleLR(o, max_lr=1.0, total_steps=1, cycle_momentum=False), 1),
    (S.warmup_cosine(0.1, 20, 200), 0.1, lambda o: warmup_cosine(o, 20, 200, 0.0), 201),
    (S.warmup_cosine(0.05, 1, 100, 1e-3), 0.05, lambda o: warmup_cosine(o, 1, 100, 1e-3), 101),
    (S.warmup_cosine(0.3, 9, 10, 0.01), 0.3, lambda o: warmup_cosine(o, 9, 10, 0.01), 11),
]


def torch_lrs(base, make, n):
    """The lr torch.optim.SGD uses at each of ``n`` steps under the scheduler ``make`` gives."""
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=base)
    sched = make(opt)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        p.grad = torch.ones(1)
        opt.step()
        sched.step()
    return out


@pytest.mark.parametrize("ours, base, make, n", CASES, ids=[c[0].describe() for c in CASES])
def test_matches_the_torch_scheduler_step_by_step(ours, base, make, n):
    expected = torch_lrs(base, make, n)
    got = [ours(t) for t in range(n)]
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0)


def test_onecycle_is_torchs_arithmetic_bit_for_bit():
    for ours, base, make, n in CASES:
        if isinstance(ours, S.OneCycle):
            assert [ours(t) for t in range(n)] == torch_lrs(base, make, n)


def test_past_the_end_we_hold_where_torch_rises_or_raises():
    # torch's cosine is periodic: back at lr after 2·T_max; ours stays at min_lr
    lrs = torch_lrs(0.1, lambda o: LR.CosineAnnealingLR(o, T_max=10, eta_min=0.001), 21)
    assert lrs[20] == pytest.approx(0.1) and lrs[15] > 0.04
    assert S.cosine(0.1, 10, 0.001)(15) == S.cosine(0.1, 10, 0.001)(20) == 0.001
    # torch's 1cycle refuses to go on after total_steps scheduler steps; ours holds its last value
    with pytest.raises(ValueError, match="Tried to step"):
        torch_lrs(0.1, lambda o: LR.OneCycleLR(o, max_lr=0.1, total_steps=10, cycle_momentum=False), 12)
    s = S.onecycle(0.1, 10)
    assert s(9) == s(10) == s(11) == s(10 ** 6) == torch_lrs(
        0.1, lambda o: LR.OneCycleLR(o, max_lr=0.1, total_steps=10, cycle_momentum=False), 10)[9]


# (our schedule, torch's base lr, its scheduler): 50 steps, each within the schedule's run
TRAIN = [
    (S.cosine(0.05, 50, 1e-3), 0.05, lambda o: LR.CosineAnnealingLR(o, T_max=50, eta_min=1e-3)),
    (S.onecycle(0.1, 50), 0.1, lambda o: LR.OneCycleLR(o, max_lr=0.1, total_steps=50, cycle_momentum=False)),
    (S.warmup_cosine(0.05, 10, 50, 1e-4), 0.05, lambda o: warmup_cosine(o, 10, 50, 1e-4)),
    (S.step(0.05, 10, 0.5), 0.05, lambda o: LR.StepLR(o, step_size=10, gamma=0.5)),
    (S.exponential(0.05, 0.95), 0.05, lambda o: LR.ExponentialLR(o, gamma=0.95)),
]


@pytest.mark.parametrize("sched, base, make", TRAIN, ids=[c[0].name for c in TRAIN])
def test_training_a_linear_model_matches_torch(sched, base, make):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 3)), rng.normal(size=(40, 2))
    net = (neurons.Network((3,), "float64").dense(2).set_objective("mse")
           .set_optimizer(O.SGDM(lr=sched, momentum=0.9, decay=0.01)))
    params = net.init(1)
    w, b = (torch.tensor(a.copy(), requires_grad=True) for a in params[0])
    topt = torch.optim.SGD([w, b], lr=base, momentum=0.9, weight_decay=0.01)
    tsched = make(topt)
    opt = net.optimizer
    state = opt.init(params)
    for t in range(50):
        i = (t % 5) * 8
        xb, yb = x[i:i + 8], y[i:i + 8]
        _, grads = net.loss_and_grad(params, xb, yb)
        params, state = opt.update(grads, state, params)
        topt.zero_grad()
        ((torch.tensor(xb) @ w.T + b - torch.tensor(yb)) ** 2).mean().backward()
        topt.step()
        tsched.step()
    assert state.count == 50
    for a, tt in zip(params[0], (w, b)):
        np.testing.assert_allclose(a, tt.detach().numpy(), rtol=1e-9, atol=1e-12)
