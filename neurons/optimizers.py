"""Optimizers as pure pairs: ``state = opt.init(params)``, ``params, state = opt.update(grads, state, params)``.

Sorted by increasing complexity. Each follows the algorithm PyTorch documents for
``torch.optim.SGD`` / ``Adam`` / ``AdamW`` / ``RMSprop`` (``decay`` is the weight decay; AdamW
decouples it); the step ``count`` counts optimizer steps, and bias corrections use it. State is
a NamedTuple of trees shaped like ``params``; nothing is hidden in globals.

``update`` is pure: it returns new arrays and never writes to the params or state it is
given, so params that ``learn`` keeps (the last good step's, the best epoch's) can never be
overwritten by a later step.

``lr`` is a number or a schedule from ``neurons.schedules`` (``SGD(lr=cosine(0.1, 1000))``):
the step taken after ``count`` steps uses ``lr(count)``. ``config()`` holds the schedule's own
config, and ``from_config`` rebuilds it.
"""
import dataclasses
from dataclasses import dataclass
import math
from typing import NamedTuple

import numpy as np

from . import _tree
from .kernels import optim as k
from .schedules import Schedule, _number, _short, from_config as _schedule_from_config


def _zeros(params):
    return _tree.map(np.zeros_like, params)


def _nones(params):
    """Shared empty arrays in the shape of ``params``: state that an option switched off."""
    return _tree.map(lambda a: _tree.empty(a.dtype), params)


def _describe(name, value):
    if isinstance(value, Schedule):
        return f"{name}={value.describe()}"
    return f"{name}={value:g}" if isinstance(value, float) else f"{name}={value}"


class _Optimizer:
    """Shared: validation, description, config, and the walk over (params, grads, state) leaves."""

    def __post_init__(self):
        for name, rule in self._rules.items():
            value = getattr(self, name)
            if name == "lr" and isinstance(value, Schedule):
                continue
            if name == "lr" and callable(value):      # a function could not be saved with the network
                raise TypeError(f"lr must be a number or a schedule from neurons.schedules, not {_short.repr(value)}")
            object.__setattr__(self, name, _number(value, name, *rule))

    def _fields(self):
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def _lr(self, count):
        """The learning rate for the step taken after ``count`` steps."""
        return self.lr if isinstance(self.lr, float) else self.lr(count)

    def describe(self):
        return f"{type(self).__name__}({', '.join(_describe(k, v) for k, v in self._fields().items())})"

    def config(self):
        return {"name": type(self).__name__,
                **{k: v.config() if isinstance(v, Schedule) else v for k, v in self._fields().items()}}

    def _walk(self, grads, state, params, kernel):
        """Run ``kernel(p, g, *state_leaves)`` on copies of every leaf (it updates p and the state
        where they lie); returns the new params and state arrays."""
        ps, gs = _tree.leaves(params), _tree.leaves(grads)
        if len(ps) != len(gs):
            raise ValueError(f"grads have {len(gs)} arrays but params have {len(ps)}")
        fields = [f for f in state._fields if f != "count"]
        cols = [[a.copy() for a in _tree.leaves(getattr(state, f))] for f in fields]
        outs = []
        for i, (p, g) in enumerate(zip(ps, gs)):
            if g.shape != p.shape:
                raise ValueError(f"gradient {i} has shape {g.shape}, its param {p.shape}")
            out = p.copy()
            kernel(out.reshape(-1), np.ascontiguousarray(g, dtype=p.dtype).reshape(-1),
                   *[col[i].reshape(-1) if col[i].size else col[i] for col in cols])
            outs.append(out)
        new_params = _tree.rebuild(params, outs)
        new_state = {f: _tree.rebuild(getattr(state, f), col) for f, col in zip(fields, cols)}
        return new_params, new_state


class SGDState(NamedTuple):
    count: int
    momentum: tuple


class _SGDStep(_Optimizer):
    def update(self, grads, state, params):
        mu = getattr(self, "momentum", 0.0)
        first, lr = state.count == 0, self._lr(state.count)
        new, st = self._walk(grads, state, params,
                             lambda p, g, buf: k.sgd(p, g, buf, lr, mu, self.decay, first))
        return new, SGDState(state.count + 1, **st)


@dataclass(frozen=True)
class SGD(_SGDStep):
    """Plain gradient descent: ``p -= lr·(g + decay·p)``."""
    lr: float | Schedule = 0.01
    decay: float = 0.0
    _rules = {"lr": (0,), "decay": (0,)}

    def init(self, params):
        return SGDState(0, _nones(params))


@dataclass(frozen=True)
class SGDM(_SGDStep):
    """SGD with momentum (dampening 0, no Nesterov): ``buf = μ·buf + (g + decay·p)``, ``p -= lr·buf``."""
    lr: float | Schedule = 0.01
    momentum: float = 0.9
    decay: float = 0.0
    _rules = {"lr": (0,), "momentum": (0,), "decay": (0,)}

    def init(self, params):
        return SGDState(0, _zeros(params))


class AdamState(NamedTuple):
    count: int
    mu: tuple
    nu: tuple


@dataclass(frozen=True)
class Adam(_Optimizer):
    """Adam with L2 weight decay added to the gradient; bias correction by step count."""
    lr: float | Schedule = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    decay: float = 0.0
    _rules = {"lr": (0,), "beta1": (0, 1, False, True), "beta2": (0, 1, False, True), "eps": (0, None, True),
              "decay": (0,)}
    _decoupled = False

    def init(self, params):
        return AdamState(0, _zeros(params), _zeros(params))

    def update(self, grads, state, params):
        t, lr = state.count + 1, self._lr(state.count)
        c1 = 1.0 - self.beta1 ** t
        rc2 = math.sqrt(1.0 - self.beta2 ** t)
        new, st = self._walk(grads, state, params, lambda p, g, m, v: k.adam(
            p, g, m, v, lr, self.beta1, self.beta2, self.eps, self.decay, self._decoupled, c1, rc2))
        return new, AdamState(t, **st)


@dataclass(frozen=True)
class AdamW(Adam):
    """Adam with decoupled weight decay: ``p *= 1 - lr·decay`` before the Adam step."""
    decay: float = 0.01
    _decoupled = True


class RMSpropState(NamedTuple):
    count: int
    square_avg: tuple
    grad_avg: tuple
    momentum: tuple


@dataclass(frozen=True)
class RMSprop(_Optimizer):
    """RMSprop, optionally centered and with momentum (PyTorch's algorithm)."""
    lr: float | Schedule = 0.01
    alpha: float = 0.99
    eps: float = 1e-8
    decay: float = 0.0
    momentum: float = 0.0
    centered: bool = False
    _rules = {"lr": (0,), "alpha": (0, 1), "eps": (0, None, True), "decay": (0,), "momentum": (0,)}

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.centered, (bool, np.bool_)):
            raise TypeError(f"centered must be True or False, not {self.centered!r}")
        if self.centered and self.alpha == 0:
            raise ValueError("centered RMSprop with alpha=0 is refused: its variance estimate g² - g² is always "
                             "zero, so every step would be lr·g/eps; use alpha > 0 or centered=False")

    def init(self, params):
        none = _nones(params)
        return RMSpropState(0, _zeros(params), _zeros(params) if self.centered else none,
                            _zeros(params) if self.momentum > 0 else none)

    def update(self, grads, state, params):
        lr = self._lr(state.count)
        new, st = self._walk(grads, state, params, lambda p, g, sq, ga, buf: k.rmsprop(
            p, g, sq, ga, buf, lr, self.alpha, self.eps, self.decay, self.momentum))
        return new, RMSpropState(state.count + 1, **st)


OPTIMIZERS = {cls.__name__: cls for cls in (SGD, SGDM, Adam, AdamW, RMSprop)}


def from_config(config):
    """The optimizer a ``config()`` dict describes (its ``lr`` a number or a schedule's config);
    ``ValueError`` or ``TypeError`` if it is malformed."""
    if not isinstance(config, dict):
        raise TypeError(f"an optimizer config must be an object with a name, not {_short.repr(config)}")
    config = dict(config)
    name = config.pop("name", None)
    if not isinstance(name, str) or name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {_short.repr(name)}; known: {', '.join(OPTIMIZERS)}")
    if isinstance(config.get("lr"), dict):
        config["lr"] = _schedule_from_config(config["lr"])
    return OPTIMIZERS[name](**config)
