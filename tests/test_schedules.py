"""Learning-rate schedules: each against its closed form at many steps (the first, the boundaries,
past the end), refused arguments, config round trips (alone, in an optimizer, in a saved
network), and optimizers taking the schedule's value at each step."""
import dataclasses
import json
import math

import numpy as np
import pytest

import neurons
from neurons import optimizers as O, schedules as S
from neurons._tree import leaves


def steps(*marks):
    """Every step up to 40, the steps next to each mark, and some far past every end."""
    ts = set(range(41)) | {10 ** 4, 10 ** 6, 2 ** 40}
    for m in marks:
        ts |= {m - 2, m - 1, m, m + 1, m + 2, 2 * m, 3 * m + 1}
    return sorted(t for t in ts if t >= 0)


def check(sched, expected, ts, rtol=1e-14, atol=0.0):
    for t in ts:
        got = sched(t)
        assert type(got) is float, (t, type(got))
        np.testing.assert_allclose(got, expected(t), rtol=rtol, atol=atol, err_msg=f"t={t}")


# ---------------------------------------------------------------------------------- closed forms

def test_constant():
    s = S.constant(0.03)
    check(s, lambda t: 0.03, steps())
    assert all(s(t) == 0.03 for t in steps())


@pytest.mark.parametrize("lr, step_size, gamma", [(0.1, 7, 0.1), (0.5, 1, 0.9), (0.02, 30, 0.5), (1e-3, 4, 2.0)])
def test_step(lr, step_size, gamma):
    s = S.step(lr, step_size, gamma)
    check(s, lambda t: lr * gamma ** (t // step_size), [t for t in steps(step_size) if t < 500])
    assert s(0) == s(step_size - 1) == lr
    assert s(step_size) == lr * gamma


def test_step_defaults_to_gamma_one_tenth():
    assert S.step(1.0, 5) == S.step(1.0, 5, 0.1)
    assert S.step(1.0, 5)(12) == pytest.approx(0.01, rel=1e-15)


@pytest.mark.parametrize("lr, gamma", [(0.1, 0.95), (0.01, 1.0), (1e-4, 1.05)])
def test_exponential(lr, gamma):
    s = S.exponential(lr, gamma)
    check(s, lambda t: lr * gamma ** t, [t for t in steps() if t < 5000])
    assert s(0) == lr


def test_exponential_decay_underflows_to_zero_far_out():
    assert S.exponential(0.1, 0.5)(10 ** 6) == 0.0
    assert S.step(0.1, 2, 0.5)(2 ** 40) == 0.0


def test_growth_past_the_largest_float_is_an_error_naming_the_step():
    s = S.exponential(1.0, 2.0)
    assert s(1000) == 2.0 ** 1000
    with pytest.raises(ValueError, match="too large for a float at step 1024"):
        s(1024)
    with pytest.raises(ValueError, match="at step 30000"):
        S.step(1.0, 10, 2.0)(30000)
    with pytest.raises(ValueError, match="too large"):     # lr·gamma^t overflows though gamma^t does not
        S.exponential(1e10, 2.0)(1000)


@pytest.mark.parametrize("lr, total, min_lr", [(0.1, 10, 0.0), (0.1, 37, 0.001), (3.0, 1, 0.5), (0.2, 1000, 0.2)])
def test_cosine(lr, total, min_lr):
    s = S.cosine(lr, total, min_lr)

    def expected(t):
        if t > total:
            return min_lr               # held past the end (torch would rise again)
        return min_lr + (lr - min_lr) * (1 + math.cos(math.pi * t / total)) / 2
    check(s, expected, steps(total))
    assert s(0) == lr and s(total) == min_lr and s(total + 1) == min_lr and s(10 ** 9) == min_lr
    values = [s(t) for t in range(total + 3)]
    assert all(a >= b for a, b in zip(values, values[1:]))      # never rises


def onecycle_reference(max_lr, total, pct_start, div, final_div, anneal):
    """OneCycleLR as its documentation describes it: two phases ending at steps
    pct_start·total - 1 and total - 1, each annealed from its start to its end value."""
    initial, low = max_lr / div, max_lr / div / final_div
    e1, e2 = pct_start * total - 1, total - 1

    def f(a, b, pct):
        if anneal == "cos":
            return b + (a - b) * (1 + math.cos(math.pi * pct)) / 2
        return a + (b - a) * pct

    def lr(t):
        if t >= e2:
            return low                  # held from the last step on
        if t <= e1:
            return f(initial, max_lr, t / e1)
        return f(max_lr, low, (t - e1) / (e2 - e1))
    return lr


@pytest.mark.parametrize("anneal", ["cos", "linear"])
@pytest.mark.parametrize("max_lr, total, pct_start, div, final_div", [
    (0.1, 100, 0.3, 25.0, 1e4), (1.0, 17, 0.25, 10.0, 100.0), (0.5, 40, 0.5, 2.0, 3.0), (0.01, 1000, 0.1, 25.0, 1e4)])
def test_onecycle(anneal, max_lr, total, pct_start, div, final_div):
    s = S.onecycle(max_lr, total, pct_start, div, final_div, anneal)
    ref = onecycle_reference(max_lr, total, pct_start, div, final_div, anneal)
    peak = pct_start * total - 1
    # torch's arithmetic, kept bit for bit, ends the linear descent at (low - max_lr)·1 + max_lr:
    # low give or take an ulp of max_lr
    check(s, ref, steps(total, int(peak), int(peak) + 1), rtol=1e-13, atol=1e-15 * max_lr)
    assert s(0) == pytest.approx(max_lr / div, rel=1e-15)
    if peak == int(peak):
        assert s(int(peak)) == pytest.approx(max_lr, rel=1e-15)
    low = max_lr / div / final_div
    assert s(total - 1) == s(total) == s(total + 1) == s(10 ** 9) == pytest.approx(low, rel=1e-15, abs=1e-15 * max_lr)
    assert min(s(t) for t in range(total + 5)) > 0


def test_onecycle_defaults():
    assert S.onecycle(0.1, 50) == S.onecycle(0.1, 50, 0.3, 25.0, 1e4, "cos")


def test_onecycle_short_runs():
    # one step: torch's second phase runs from step -0.7 to 0, so step 0 is already its end
    assert S.onecycle(0.1, 1)(0) == pytest.approx(0.1 / 25 / 1e4)
    # a warm-up phase that ends at step 0 (pct_start·total_steps == 1) starts there: no 0/0
    s = S.onecycle(0.1, 10, pct_start=0.1)
    assert s(0) == pytest.approx(0.1 / 25) and s(1) < 0.1 and s(9) == pytest.approx(0.1 / 25 / 1e4)
    assert all(math.isfinite(s(t)) for t in range(12))


@pytest.mark.parametrize("lr, warmup, total, min_lr", [(0.1, 5, 30, 0.0), (0.3, 1, 10, 0.01), (1.0, 9, 10, 0.0),
                                                       (0.05, 100, 1000, 1e-4)])
def test_warmup_cosine(lr, warmup, total, min_lr):
    s = S.warmup_cosine(lr, warmup, total, min_lr)

    def expected(t):
        if t < warmup:
            return lr * (t + 1) / warmup
        if t > total:
            return min_lr
        return min_lr + (lr - min_lr) * (1 + math.cos(math.pi * (t - warmup) / (total - warmup))) / 2
    check(s, expected, steps(warmup, total))
    assert s(warmup - 1) == s(warmup) == lr         # the peak twice: the end of the warm-up, the start of the cosine
    assert s(total) == s(total + 1) == s(10 ** 9) == min_lr


def test_steps_may_be_numpy_ints_and_the_value_is_a_python_float():
    for s in (S.cosine(0.1, 10), S.step(0.1, 3), S.onecycle(0.1, 10)):
        assert s(np.int64(4)) == s(4) and type(s(np.int64(4))) is float


@pytest.mark.parametrize("t", [-1, 1.5, 2.0, True, "3", None, np.float64(1.0)])
def test_a_step_that_is_not_an_int_from_zero_is_refused(t):
    with pytest.raises(ValueError, match="an int >= 0"):
        S.cosine(0.1, 10)(t)


# ---------------------------------------------------------------------------------- arguments

@pytest.mark.parametrize("make, error, match", [
    (lambda: S.constant(0), ValueError, "lr must be > 0"),
    (lambda: S.constant(-0.1), ValueError, "lr must be > 0"),
    (lambda: S.constant(float("inf")), ValueError, "lr must be finite"),
    (lambda: S.constant(float("nan")), ValueError, "lr must be finite"),
    (lambda: S.constant("0.1"), TypeError, "lr must be a number"),
    (lambda: S.constant(True), TypeError, "lr must be a number"),
    (lambda: S.step(0.1, 0), ValueError, "step_size must be an int from 1"),
    (lambda: S.step(0.1, 2.0), TypeError, "step_size must be an int"),
    (lambda: S.step(0.1, True), TypeError, "step_size must be an int"),
    (lambda: S.step(0.1, 5, 0), ValueError, "gamma must be > 0"),
    (lambda: S.step(0.1, 5, -0.5), ValueError, "gamma must be > 0"),
    (lambda: S.exponential(0.1, float("inf")), ValueError, "gamma must be finite"),
    (lambda: S.exponential(0.1, None), TypeError, "gamma must be a number"),
    (lambda: S.cosine(0.1, 0), ValueError, "total_steps must be an int from 1"),
    (lambda: S.cosine(0.1, 2 ** 53 + 1), ValueError, "total_steps must be an int from 1 to 2\\*\\*53"),
    (lambda: S.cosine(0.1, 10 ** 400), ValueError, "total_steps must be an int from 1"),
    (lambda: S.cosine(0.1, 10.0), TypeError, "total_steps must be an int"),
    (lambda: S.cosine(0.1, 10, -0.01), ValueError, "min_lr must be >= 0"),
    (lambda: S.cosine(0.1, 10, 0.2), ValueError, "min_lr must be <= 0.1"),
    (lambda: S.onecycle(0, 10), ValueError, "max_lr must be > 0"),
    (lambda: S.onecycle(0.1, -3), ValueError, "total_steps must be an int from 1"),
    (lambda: S.onecycle(0.1, 10, pct_start=0), ValueError, "pct_start must be > 0"),
    (lambda: S.onecycle(0.1, 10, pct_start=1), ValueError, "pct_start must be < 1"),
    (lambda: S.onecycle(0.1, 10, div_factor=0), ValueError, "div_factor must be > 0"),
    (lambda: S.onecycle(0.1, 10, final_div_factor=-1), ValueError, "final_div_factor must be > 0"),
    (lambda: S.onecycle(0.1, 10, anneal="cosine"), ValueError, "anneal must be 'cos' or 'linear'"),
    (lambda: S.onecycle(0.1, 10, anneal=1), TypeError, "anneal must be 'cos' or 'linear'"),
    (lambda: S.warmup_cosine(0.1, 10, 10), ValueError, "warmup_steps must be < total_steps"),
    (lambda: S.warmup_cosine(0.1, 11, 10), ValueError, "warmup_steps must be < total_steps"),
    (lambda: S.warmup_cosine(0.1, 0, 10), ValueError, "warmup_steps must be an int from 1"),
    (lambda: S.warmup_cosine(0.1, 2, 10, 1.0), ValueError, "min_lr must be <= 0.1"),
    (lambda: S.cosine(0.1), TypeError, "total_steps"),
])
def test_bad_arguments_are_refused_naming_them(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_arguments_are_normalised():
    s = S.cosine(np.float32(0.5), np.int64(10), 0)
    assert type(s.lr) is float and type(s.total_steps) is int and type(s.min_lr) is float
    assert s == S.cosine(0.5, 10, 0.0) and hash(s) == hash(S.cosine(0.5, 10, 0.0))
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.lr = 1.0


# ---------------------------------------------------------------------------------- config

ALL = [S.constant(0.05), S.step(0.1, 10), S.step(0.1, 3, 0.5), S.exponential(0.2, 0.99), S.cosine(0.1, 100),
       S.cosine(0.1, 100, 1e-3), S.onecycle(0.4, 200), S.onecycle(0.4, 200, 0.25, 10.0, 1e3, "linear"),
       S.warmup_cosine(0.1, 10, 100), S.warmup_cosine(0.1, 10, 100, 0.003)]


@pytest.mark.parametrize("sched", ALL, ids=lambda s: s.describe())
def test_config_round_trip(sched):
    cfg = sched.config()
    assert cfg["name"] == type(sched).name and set(cfg) == {"name"} | {f.name for f in dataclasses.fields(sched)}
    back = S.from_config(json.loads(json.dumps(cfg)))
    assert back == sched and type(back) is type(sched)
    assert [back(t) for t in range(250)] == [sched(t) for t in range(250)]


def test_describe():
    assert S.cosine(0.1, 1000).describe() == "cosine(lr=0.1, total_steps=1000, min_lr=0)"
    assert S.onecycle(0.5, 100, anneal="linear").describe() == \
        "onecycle(max_lr=0.5, total_steps=100, pct_start=0.3, div_factor=25, final_div_factor=10000, anneal='linear')"
    assert O.SGD(lr=S.cosine(0.1, 1000)).describe() == "SGD(lr=cosine(lr=0.1, total_steps=1000, min_lr=0), decay=0)"
    assert O.SGD(lr=0.1).describe() == "SGD(lr=0.1, decay=0)"


@pytest.mark.parametrize("cfg, error, match", [
    ([], TypeError, "must be an object"),
    ("cosine", TypeError, "must be an object"),
    ({}, ValueError, "unknown schedule None"),
    ({"name": "linear"}, ValueError, "unknown schedule 'linear'; known: constant, step"),
    ({"name": ["cosine"]}, ValueError, "unknown schedule"),
    ({"name": "cosine", "lr": 0.1}, TypeError, "schedule cosine: .*total_steps"),
    ({"name": "cosine", "lr": 0.1, "total_steps": 10, "eta_min": 0}, TypeError, "schedule cosine: .*eta_min"),
    ({"name": "cosine", "lr": 0.1, "total_steps": "10"}, TypeError, "schedule cosine: total_steps must be an int"),
    ({"name": "cosine", "lr": 0.1, "total_steps": 10.5}, TypeError, "total_steps must be an int"),
    ({"name": "cosine", "lr": -0.1, "total_steps": 10}, ValueError, "schedule cosine: lr must be > 0"),
    ({"name": "step", "lr": 0.1, "step_size": [5]}, TypeError, "step_size must be an int"),
    ({"name": "onecycle", "max_lr": 0.1, "total_steps": 10, "anneal": {"a": 1}}, TypeError, "anneal"),
    ({"name": "warmup_cosine", "lr": 0.1, "warmup_steps": 20, "total_steps": 10}, ValueError, "warmup_steps must be <"),
])
def test_junk_configs_are_refused(cfg, error, match):
    with pytest.raises(error, match=match):
        S.from_config(cfg)


OPTIMIZERS = [O.SGD, O.SGDM, O.Adam, O.AdamW, O.RMSprop]


@pytest.mark.parametrize("make", OPTIMIZERS, ids=lambda c: c.__name__)
def test_optimizer_config_embeds_the_schedule(make):
    opt = make(lr=S.warmup_cosine(0.01, 5, 50, 1e-4))
    cfg = opt.config()
    assert cfg["lr"] == {"name": "warmup_cosine", "lr": 0.01, "warmup_steps": 5, "total_steps": 50, "min_lr": 1e-4}
    back = O.from_config(json.loads(json.dumps(cfg)))
    assert back == opt and back.lr == opt.lr
    assert O.from_config(make(lr=0.01).config()) == make(lr=0.01)      # a number stays a number


@pytest.mark.parametrize("cfg, error, match", [
    ({"name": "SGD", "lr": {"name": "cosine", "lr": 0.1}}, TypeError, "total_steps"),
    ({"name": "SGD", "lr": {"name": "cosine", "lr": 0.1, "total_steps": 0}}, ValueError, "total_steps"),
    ({"name": "Adam", "lr": {"name": "warp"}}, ValueError, "unknown schedule 'warp'"),
    ({"name": "Adam", "lr": {}}, ValueError, "unknown schedule"),
    ({"name": "SGD", "lr": [0.1]}, TypeError, "lr must be a number"),
    ({"name": "SGD", "lr": "cosine"}, TypeError, "lr must be a number"),
    ({"name": "SGD", "lr": None}, TypeError, "lr must be a number"),
    ({"name": ["SGD"]}, ValueError, "unknown optimizer"),
    ([("name", "SGD")], TypeError, "must be an object"),
])
def test_junk_optimizer_configs_are_refused(cfg, error, match):
    with pytest.raises(error, match=match):
        O.from_config(cfg)


def test_an_optimizer_refuses_a_function_as_lr():
    with pytest.raises(TypeError, match="lr must be a number or a schedule from neurons.schedules"):
        O.SGD(lr=lambda t: 0.1)


# ---------------------------------------------------------------------------------- optimizers

P0 = np.array([1.0, -2.0, 0.5, 3.0])
G = np.array([0.3, -0.1, 0.8, -1.5])


@pytest.mark.parametrize("sched", ALL, ids=lambda s: s.describe())
def test_sgd_moves_by_the_scheduled_lr_at_each_step(sched):
    opt = O.SGD(lr=sched)
    params = ((P0.copy(),),)
    state = opt.init(params)
    for t in range(120):
        assert state.count == t
        new, state = opt.update(((G,),), state, params)
        # a fused multiply-add may round lr·g once instead of twice
        np.testing.assert_allclose(new[0][0], params[0][0] - sched(t) * G, rtol=1e-15,
                                   atol=1e-15 * np.abs(sched(t) * G).max())
        params = new


@pytest.mark.parametrize("sched", [S.cosine(0.01, 30, 1e-4), S.onecycle(0.02, 30, anneal="linear"),
                                   S.step(0.01, 4, 0.5), S.warmup_cosine(0.01, 5, 30)], ids=lambda s: s.name)
@pytest.mark.parametrize("make", OPTIMIZERS + [lambda lr: O.RMSprop(lr, momentum=0.5, centered=True)],
                         ids=["SGD", "SGDM", "Adam", "AdamW", "RMSprop", "RMSprop-centered"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_optimizer_takes_the_schedules_value_at_each_step(sched, make, dtype):
    # the same bits as the optimizer given the number sched(t) at step t, state carried along
    rng = np.random.default_rng(0)
    params = ((rng.normal(size=(3, 2)).astype(dtype), rng.normal(size=2).astype(dtype)),)
    opt = make(lr=sched)
    a, b = params, params
    sa = sb = opt.init(params)
    for t in range(35):
        grads = ((rng.normal(size=(3, 2)).astype(dtype), rng.normal(size=2).astype(dtype)),)
        a, sa = opt.update(grads, sa, a)
        b, sb = dataclasses.replace(opt, lr=sched(t)).update(grads, sb, b)
        for x, y in zip(leaves(a) + leaves(sa[1:]), leaves(b) + leaves(sb[1:])):
            np.testing.assert_array_equal(x, y)
    assert sa.count == 35


@pytest.mark.parametrize("make", OPTIMIZERS, ids=lambda c: c.__name__)
def test_a_constant_schedule_is_the_number_bit_for_bit(make):
    rng = np.random.default_rng(1)
    params = ((rng.normal(size=5),),)
    with_number, with_schedule = make(lr=0.01), make(lr=S.constant(0.01))
    a, b = params, params
    sa, sb = with_number.init(params), with_schedule.init(params)
    for _ in range(10):
        grads = ((rng.normal(size=5),),)
        a, sa = with_number.update(grads, sa, a)
        b, sb = with_schedule.update(grads, sb, b)
    np.testing.assert_array_equal(a[0][0], b[0][0])


# ---------------------------------------------------------------------------------- saved networks

@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
@pytest.mark.parametrize("sched", [S.cosine(0.1, 500, 1e-3), S.onecycle(0.3, 77, anneal="linear"),
                                   S.warmup_cosine(0.05, 10, 300)], ids=lambda s: s.name)
def test_a_network_with_a_schedule_saves_and_loads(tmp_path, suffix, sched):
    net = neurons.Network((3,), dtype="float64").dense(4, "relu").dense(2).set_optimizer(O.SGDM(lr=sched))
    params = net.init(0)
    path = tmp_path / f"net{suffix}"
    neurons.save(path, net, params)
    loaded = neurons.load(path)
    assert loaded.network.optimizer == net.optimizer
    assert loaded.network.optimizer.lr == sched and type(loaded.network.optimizer.lr) is type(sched)
    for a, b in zip(leaves(loaded.params), leaves(params)):
        np.testing.assert_array_equal(a, b)


def test_learn_uses_the_schedule():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 3)), rng.normal(size=(16, 1))
    net = neurons.Network((3,), dtype="float64").dense(1).set_objective("mse")
    sched = S.cosine(0.05, 8)
    kw = dict(batch=4, epochs=2, shuffle=False, progress=False)
    scheduled = net.set_optimizer(O.SGD(lr=sched)).learn(x, y, **kw).params
    # the same run by hand: 4 batches a epoch, step t at lr sched(t)
    params = net.init(0)
    for t in range(8):
        i = t % 4
        _, grads = net.loss_and_grad(params, x[4 * i: 4 * i + 4], y[4 * i: 4 * i + 4])
        params, _ = O.SGD(lr=sched(t)).update(grads, O.SGD().init(params), params)
    for a, b in zip(leaves(scheduled), leaves(params)):
        np.testing.assert_allclose(a, b, rtol=1e-14)


JUNK = [None, True, False, -1, 0, 1, 2.5, 1e308, -1e-300, 2 ** 70, float("nan"), float("inf"), "", "cos", [], [1],
        {}, {"name": "cosine"}]


def test_junk_in_a_saved_schedule_is_a_value_error_naming_the_file(tmp_path):
    # every field of the schedule in a saved network's config replaced in turn by junk of each JSON
    # type: load refuses it with a ValueError that starts with the path, or takes a value the
    # constructor takes too
    from neurons.io import network_config, network_from_config
    net = neurons.Network((2,), "float64").dense(1).set_optimizer(O.Adam(lr=S.onecycle(0.1, 30)))
    good = tmp_path / "good.npz"
    neurons.save(good, net, net.init(0))
    members = dict(np.load(good))
    cfg = json.loads(members["config.json"].tobytes())
    assert cfg["network"] == json.loads(json.dumps(network_config(net)))
    bad, refused = tmp_path / "bad.npz", 0
    for key in [None] + list(cfg["network"]["optimizer"]["lr"]):
        for junk in JUNK:
            edited = json.loads(json.dumps(cfg))
            if key is None:
                edited["network"]["optimizer"]["lr"] = junk
            else:
                edited["network"]["optimizer"]["lr"][key] = junk
            try:
                network_from_config(edited["network"])
                accepted = True
            except (ValueError, TypeError):
                accepted = False
            with open(bad, "wb") as fh:
                np.savez(fh, **{**members, "config.json": np.frombuffer(json.dumps(edited).encode(), np.uint8)})
            try:
                loaded = neurons.load(bad)
            except ValueError as e:
                assert not accepted and str(e).startswith(f"{bad}: "), (key, junk, e)
                refused += 1
            else:
                assert accepted, (key, junk)
                lr = loaded.network.optimizer.lr
                assert isinstance(lr, (float, S.Schedule)) and math.isfinite(lr if isinstance(lr, float) else lr(5))
    assert refused > 80
