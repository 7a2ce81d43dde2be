"""Central finite differences against ``Network.loss_and_grad`` (float64)."""
import numpy as np

from neurons._tree import leaves  # noqa: F401 (the tests' walk over params)


def check(net, params, x, y, seed=0, h=1e-6, rtol=1e-6, atol=1e-8, per_leaf=12, train=True, state=None):
    """Compare every param gradient (a random subset of each leaf's entries) with central differences."""
    loss, grads = net.loss_and_grad(params, x, y, train=train, seed=seed, state=state)
    assert np.isfinite(loss)
    rng = np.random.default_rng(1)
    checked = 0
    for p, g in zip(leaves(params), leaves(grads)):
        assert g.shape == p.shape and g.dtype == p.dtype
        idx = np.arange(p.size) if p.size <= per_leaf else rng.choice(p.size, per_leaf, replace=False)
        for i in idx:
            old = p.flat[i]
            p.flat[i] = old + h
            lp = net.loss_and_grad(params, x, y, train=train, seed=seed, state=state)[0]
            p.flat[i] = old - h
            lm = net.loss_and_grad(params, x, y, train=train, seed=seed, state=state)[0]
            p.flat[i] = old
            num = (lp - lm) / (2 * h)
            assert abs(num - g.flat[i]) <= atol + rtol * max(abs(num), abs(g.flat[i])), \
                f"leaf {p.shape} entry {i}: analytic {g.flat[i]!r} vs numeric {num!r}"
            checked += 1
    assert checked > 0
    return loss, grads


def check_input(spec, params, x, seed=0, h=1e-6, rtol=1e-6, atol=1e-8, count=24):
    """Compare a layer's input gradient ``spec.backward(...)[0]`` with central differences of
    ``<spec.forward(params, x), dy>`` for a random ``dy`` (float64), at ``count`` entries of ``x``."""
    rng = np.random.default_rng(seed)
    y, cache = spec.forward(params, x)
    dy = rng.normal(size=y.shape)
    dx, _ = spec.backward(params, cache, dy, True)
    assert dx.shape == x.shape and dx.dtype == x.dtype
    x = x.copy()
    idx = np.arange(x.size) if x.size <= count else rng.choice(x.size, count, replace=False)
    for i in idx:
        old = x.flat[i]
        x.flat[i] = old + h
        lp = float(np.sum(spec.forward(params, x)[0] * dy))
        x.flat[i] = old - h
        lm = float(np.sum(spec.forward(params, x)[0] * dy))
        x.flat[i] = old
        num = (lp - lm) / (2 * h)
        assert abs(num - dx.flat[i]) <= atol + rtol * max(abs(num), abs(dx.flat[i])), \
            f"input entry {i}: analytic {dx.flat[i]!r} vs numeric {num!r}"
    return dx
