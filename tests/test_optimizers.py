"""Optimizers: hand-computed two-step trajectories, purity, in-place updates, dtypes, convergence,
and refused hyperparameters."""
import numpy as np
import pytest

from neurons import optimizers as O
from neurons._tree import leaves
from neurons.kernels import optim as kopt

P0 = np.array([1.0, -2.0, 0.5])
G1 = np.array([0.3, -0.1, 0.8])
G2 = np.array([-0.2, 0.4, 0.1])


def two_steps(opt, dtype=np.float64):
    params = ((P0.astype(dtype),), ())
    state = opt.init(params)
    out = []
    for g in (G1, G2):
        params, state = opt.update(((g.astype(dtype),), ()), state, params)
        out.append(params[0][0])
    return out, state


def test_sgd_with_decay():
    (p1, p2), st = two_steps(O.SGD(lr=0.1, decay=0.01))
    e1 = P0 - 0.1 * (G1 + 0.01 * P0)
    e2 = e1 - 0.1 * (G2 + 0.01 * e1)
    np.testing.assert_allclose(p1, e1, rtol=1e-15)
    np.testing.assert_allclose(p2, e2, rtol=1e-15)
    assert st.count == 2


def test_sgdm():
    (p1, p2), st = two_steps(O.SGDM(lr=0.1, momentum=0.9, decay=0.01))
    b1 = G1 + 0.01 * P0
    e1 = P0 - 0.1 * b1
    b2 = 0.9 * b1 + (G2 + 0.01 * e1)
    e2 = e1 - 0.1 * b2
    np.testing.assert_allclose(p1, e1, rtol=1e-15)
    np.testing.assert_allclose(p2, e2, rtol=1e-15)
    np.testing.assert_allclose(st.momentum[0][0], b2, rtol=1e-15)


@pytest.mark.parametrize("decay", [0.0, 0.1])
def test_adam(decay):
    (p1, p2), st = two_steps(O.Adam(lr=0.01, beta1=0.8, beta2=0.9, eps=1e-6, decay=decay))
    p, m, v = P0.copy(), 0 * P0, 0 * P0
    for t, g in ((1, G1), (2, G2)):
        g = g + decay * p
        m = 0.8 * m + 0.2 * g
        v = 0.9 * v + 0.1 * g * g
        p = p - 0.01 * (m / (1 - 0.8 ** t)) / (np.sqrt(v / (1 - 0.9 ** t)) + 1e-6)
        np.testing.assert_allclose((p1, p2)[t - 1], p, rtol=1e-13)
    np.testing.assert_allclose(st.mu[0][0], m, rtol=1e-14)
    np.testing.assert_allclose(st.nu[0][0], v, rtol=1e-14)
    assert st.count == 2


def test_adamw_decouples_decay():
    (p1, p2), _ = two_steps(O.AdamW(lr=0.01, beta1=0.8, beta2=0.9, eps=1e-6, decay=0.1))
    p, m, v = P0.copy(), 0 * P0, 0 * P0
    for t, g in ((1, G1), (2, G2)):
        p = p * (1 - 0.01 * 0.1)
        m = 0.8 * m + 0.2 * g
        v = 0.9 * v + 0.1 * g * g
        p = p - 0.01 * (m / (1 - 0.8 ** t)) / (np.sqrt(v / (1 - 0.9 ** t)) + 1e-6)
        np.testing.assert_allclose((p1, p2)[t - 1], p, rtol=1e-13)


@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.parametrize("momentum", [0.0, 0.5])
def test_rmsprop(centered, momentum):
    (p1, p2), _ = two_steps(O.RMSprop(lr=0.01, alpha=0.9, eps=1e-6, decay=0.05, momentum=momentum,
                                      centered=centered))
    p, sq, ga, buf = P0.copy(), 0 * P0, 0 * P0, 0 * P0
    for t, g in ((1, G1), (2, G2)):
        g = g + 0.05 * p
        sq = 0.9 * sq + 0.1 * g * g
        if centered:
            ga = 0.9 * ga + 0.1 * g
            avg = np.sqrt(sq - ga * ga) + 1e-6
        else:
            avg = np.sqrt(sq) + 1e-6
        if momentum:
            buf = momentum * buf + g / avg
            p = p - 0.01 * buf
        else:
            p = p - 0.01 * g / avg
        np.testing.assert_allclose((p1, p2)[t - 1], p, rtol=1e-12)


ALL = [O.SGD(lr=0.01), O.SGDM(lr=0.01), O.Adam(lr=0.01), O.AdamW(lr=0.01),
       O.RMSprop(lr=0.001, momentum=0.5, centered=True)]


@pytest.mark.parametrize("opt", ALL, ids=lambda o: type(o).__name__)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_updates_are_pure_and_keep_the_dtype(opt, dtype):
    params = ((P0.astype(dtype), np.ones((2, 2), dtype)), ())
    grads = ((G1.astype(dtype), np.full((2, 2), 0.5, dtype)), ())
    state = opt.init(params)
    snapshot = [a.copy() for a in leaves(params)]
    new, st = opt.update(grads, state, params)
    for a, b in zip(leaves(params), snapshot):
        np.testing.assert_array_equal(a, b)          # pure: inputs untouched
    assert st.count == 1 and state.count == 0
    for a in leaves(new) + [x for f in st._fields if f != "count" for x in leaves(getattr(st, f))]:
        assert a.dtype == dtype
    # a second step from the returned state and params leaves the first step's arrays alone
    kept = [a.copy() for a in leaves(new) + leaves(st[1])]
    opt.update(grads, st, new)
    for a, b in zip(leaves(new) + leaves(st[1]), kept):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("opt", ALL + [O.SGD(lr=0.01, decay=0.1), O.RMSprop(lr=0.001)],
                         ids=lambda o: o.describe())
def test_large_arrays_are_updated_in_blocks_with_the_same_bits(opt):
    # an array of PARALLEL_MIN[...] elements or more goes through the block kernels (one block per
    # thread), smaller ones through the serial kernels: the same array cut into small pieces
    # must come out bit for bit the same, over two steps (so the state is carried too)
    rng = np.random.default_rng(3)
    low, high = min(kopt.PARALLEL_MIN.values()), max(kopt.PARALLEL_MIN.values())
    n = high * 2 + 7
    p = rng.normal(size=n).astype(np.float32)
    grads = [rng.normal(size=n).astype(np.float32) for _ in range(2)]
    cut = list(range(0, n, low // 3)) + [n]
    pieces = lambda a: tuple(a[lo:hi].copy() for lo, hi in zip(cut, cut[1:]))
    whole, parts = (p.copy(),), pieces(p)
    state_whole, state_parts = opt.init(whole), opt.init(parts)
    for g in grads:
        whole, state_whole = opt.update((g,), state_whole, whole)
        parts, state_parts = opt.update(pieces(g), state_parts, parts)
    assert max(hi - lo for lo, hi in zip(cut, cut[1:])) < low and high <= n
    np.testing.assert_array_equal(whole[0], np.concatenate(parts))


@pytest.mark.parametrize("make, lr_parabola, lr_rosenbrock", [
    (O.SGD, 0.1, 1e-3), (O.SGDM, 0.05, 1e-4), (O.Adam, 0.05, 0.01), (lambda lr: O.AdamW(lr, decay=0.0), 0.05, 0.01),
    (O.RMSprop, 0.03, 1e-3)])
def test_parabola_and_rosenbrock(make, lr_parabola, lr_rosenbrock):
    opt = make(lr_parabola)
    p = ((np.array([3.0, -2.0]),),)
    st = opt.init(p)
    for _ in range(300):
        p, st = opt.update(((2 * p[0][0],),), st, p)
    assert np.abs(p[0][0]).max() < 0.1

    def f(v):
        return (1 - v[0]) ** 2 + 100 * (v[1] - v[0] ** 2) ** 2

    def grad(v):
        x, y = v
        return np.array([-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)])
    opt = make(lr_rosenbrock)
    p = ((np.array([-1.0, 1.0]),),)
    st = opt.init(p)
    for _ in range(2000):
        p, st = opt.update(((grad(p[0][0]),),), st, p)
    assert f(p[0][0]) < 0.5 * f(np.array([-1.0, 1.0]))


@pytest.mark.parametrize("make, match", [
    (lambda: O.SGD(lr=-1), "lr must be >= 0"),
    (lambda: O.SGD(lr="fast"), "lr must be a number"),
    (lambda: O.SGD(lr=float("nan")), "lr must be finite"),
    (lambda: O.Adam(beta1=1.0), "beta1 must be < 1"),
    (lambda: O.Adam(eps=0), "eps must be > 0"),
    (lambda: O.RMSprop(alpha=1.5), "alpha must be <= 1"),
    (lambda: O.SGDM(momentum=-0.1), "momentum must be >= 0"),
    (lambda: O.AdamW(decay=-0.01), "decay must be >= 0"),
    (lambda: O.RMSprop(alpha=0.0, centered=True), "alpha=0 is refused"),
])
def test_bad_hyperparameters_are_refused(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_rmsprop_alpha_zero_uncentered_is_honoured_and_finite():
    opt = O.RMSprop(lr=0.01, alpha=0.0)
    p = ((P0.copy(),),)
    p, _ = opt.update(((G1,),), opt.init(p), p)
    np.testing.assert_allclose(p[0][0], P0 - 0.01 * G1 / (np.abs(G1) + 1e-8))


def test_config_round_trip_and_describe():
    for opt in ALL:
        assert O.from_config(opt.config()) == opt
    assert O.Adam(lr=0.001).describe() == "Adam(lr=0.001, beta1=0.9, beta2=0.999, eps=1e-08, decay=0)"
    with pytest.raises(ValueError, match="unknown optimizer"):
        O.from_config({"name": "Lion"})
