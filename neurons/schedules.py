"""Learning-rate schedules: pure functions of the optimizer step, given as ``lr=`` to any optimizer.

A schedule is a callable ``sched(t) -> lr``: ``t`` is the number of optimizer steps already
taken (the state's ``count``), so the first step uses ``sched(0)``; the value is a Python float.
Each is a small frozen dataclass holding only its hyperparameters, so it can be saved:
``config()`` gives ``{"name": ..., **fields}`` and ``from_config`` rebuilds it. Arguments are
checked when a schedule is made (``ValueError`` or ``TypeError`` naming the argument).

Each equals the PyTorch scheduler named beside it, stepped once per optimizer step (and read
before the step), as long as ``t`` stays within the run it describes::

    constant(lr)                                  lr
    step(lr, step_size, gamma=0.1)                StepLR: lr·gamma^(t // step_size)
    exponential(lr, gamma)                        ExponentialLR: lr·gamma^t
    cosine(lr, total_steps, min_lr=0.0)           CosineAnnealingLR(T_max=total_steps, eta_min=min_lr)
    onecycle(max_lr, total_steps, pct_start=0.3,  OneCycleLR(cycle_momentum=False,
             div_factor=25.0, final_div_factor=1e4,          anneal_strategy=anneal)
             anneal="cos")
    warmup_cosine(lr, warmup_steps, total_steps,  lr·(t+1)/warmup_steps for t < warmup_steps, then
                  min_lr=0.0)                     cosine from lr to min_lr over the remaining steps
                                                  (SequentialLR of LinearLR(1/W, 1, W-1) and
                                                  CosineAnnealingLR(T_max=total_steps-W, eta_min=min_lr))

Past the end of the run, every schedule with a ``total_steps`` holds its final value, where
PyTorch would either start over or stop the run: ``cosine`` and ``warmup_cosine`` give
``min_lr`` for every ``t >= total_steps`` (PyTorch's cosine rises again, periodically);
``onecycle`` gives its value at ``t = total_steps - 1`` (``max_lr / div_factor /
final_div_factor``; with ``anneal="linear"`` give or take an ulp of ``max_lr``, as in PyTorch)
for every later ``t`` (PyTorch extrapolates one step further, then raises). A run that goes on
longer than planned, by a step or by a resumed epoch, thus keeps training at the lowest rate.
``step`` and ``exponential`` have no end; with ``gamma > 1`` they grow, and a value too large
for a float is a ``ValueError`` naming the step.
``total_steps`` counts optimizer steps (batches), not epochs.
"""
from dataclasses import dataclass, fields
import math
import reprlib

import numpy as np

MAX_STEPS = 2 ** 53
"""The largest step count a schedule takes (every int up to it is exact as a float)."""

_short = reprlib.Repr()
_short.maxlevel, _short.maxstring, _short.maxother = 2, 40, 40


def _number(value, name, lo=None, hi=None, lo_open=False, hi_open=False):
    """``value`` as a finite float within the bounds given (open where said); also the
    optimizers' check of their hyperparameters."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, not {_short.repr(value)}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if lo is not None and (value < lo or (lo_open and value == lo)):
        raise ValueError(f"{name} must be {'>' if lo_open else '>='} {lo:g}, got {value:g}")
    if hi is not None and (value > hi or (hi_open and value == hi)):
        raise ValueError(f"{name} must be {'<' if hi_open else '<='} {hi:g}, got {value:g}")
    return value


def _steps(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, not {_short.repr(value)}")
    if not 1 <= value <= MAX_STEPS:
        raise ValueError(f"{name} must be an int from 1 to 2**53, got {_short.repr(int(value))}")
    return int(value)


def _rate(value, name):
    return _number(value, name, 0, lo_open=True)


def _cosine(lr, min_lr, t, n):
    """From ``lr`` at t = 0 to ``min_lr`` at t = n, half a cosine; ``min_lr`` after. PyTorch's
    closed form (so never rising, and ``min_lr`` exactly at n), and ``lr`` itself at 0 as
    PyTorch's first value is."""
    if t == 0:
        return lr
    if t >= n:
        return min_lr
    return min_lr + (lr - min_lr) * (1 + math.cos(math.pi * t / n)) / 2


class Schedule:
    """Shared: the step check, config and description. A subclass sets ``name`` (its public
    constructor's name, also its config name), checks its fields in ``_check`` and gives its
    value at step ``t`` (an int >= 0) in ``_at``."""
    name = None

    def __post_init__(self):
        for name, value in self._check().items():
            object.__setattr__(self, name, value)

    def __call__(self, t):
        """The learning rate for the step taken after ``t`` steps, a float."""
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or t < 0:
            raise ValueError(f"a schedule takes the number of steps taken, an int >= 0, not {_short.repr(t)}")
        return float(self._at(int(t)))

    def _fields(self):
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def config(self):
        return {"name": self.name, **self._fields()}

    def describe(self):
        args = (f"{k}={v:g}" if isinstance(v, float) else f"{k}={v!r}" for k, v in self._fields().items())
        return f"{self.name}({', '.join(args)})"

    def _grow(self, gamma, n, t):
        """``lr·gamma^n`` (step and exponential); a value past the largest float is refused."""
        try:
            value = self.lr * gamma ** n
        except OverflowError:
            value = math.inf
        if not math.isfinite(value):
            raise ValueError(f"{self.describe()} gives a learning rate too large for a float at step {t}")
        return value


@dataclass(frozen=True)
class Constant(Schedule):
    """``lr`` at every step (the same as giving the optimizer ``lr`` itself)."""
    lr: float
    name = "constant"

    def _check(self):
        return {"lr": _rate(self.lr, "lr")}

    def _at(self, t):
        return self.lr


@dataclass(frozen=True)
class Step(Schedule):
    """``lr·gamma^(t // step_size)``: torch.optim.lr_scheduler.StepLR."""
    lr: float
    step_size: int
    gamma: float = 0.1
    name = "step"

    def _check(self):
        return {"lr": _rate(self.lr, "lr"), "step_size": _steps(self.step_size, "step_size"),
                "gamma": _rate(self.gamma, "gamma")}

    def _at(self, t):
        return self._grow(self.gamma, t // self.step_size, t)


@dataclass(frozen=True)
class Exponential(Schedule):
    """``lr·gamma^t``: torch.optim.lr_scheduler.ExponentialLR."""
    lr: float
    gamma: float
    name = "exponential"

    def _check(self):
        return {"lr": _rate(self.lr, "lr"), "gamma": _rate(self.gamma, "gamma")}

    def _at(self, t):
        return self._grow(self.gamma, t, t)


@dataclass(frozen=True)
class Cosine(Schedule):
    """``min_lr + (lr - min_lr)·(1 + cos(π·t/total_steps))/2`` for t <= total_steps, ``min_lr``
    after: torch.optim.lr_scheduler.CosineAnnealingLR(T_max=total_steps, eta_min=min_lr)."""
    lr: float
    total_steps: int
    min_lr: float = 0.0
    name = "cosine"

    def _check(self):
        lr = _rate(self.lr, "lr")
        return {"lr": lr, "total_steps": _steps(self.total_steps, "total_steps"),
                "min_lr": _number(self.min_lr, "min_lr", 0, lr)}

    def _at(self, t):
        return _cosine(self.lr, self.min_lr, t, self.total_steps)


@dataclass(frozen=True)
class OneCycle(Schedule):
    """The 1cycle policy: from ``max_lr/div_factor`` up to ``max_lr`` over the first
    ``pct_start·total_steps - 1`` steps, then down to ``max_lr/div_factor/final_div_factor`` at step
    ``total_steps - 1``, each half by a cosine or a line (``anneal``), and held there after:
    torch.optim.lr_scheduler.OneCycleLR(cycle_momentum=False), the same float arithmetic."""
    max_lr: float
    total_steps: int
    pct_start: float = 0.3
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    anneal: str = "cos"
    name = "onecycle"

    def _check(self):
        if not isinstance(self.anneal, str):
            raise TypeError(f"anneal must be 'cos' or 'linear', not {_short.repr(self.anneal)}")
        if self.anneal not in ("cos", "linear"):
            raise ValueError(f"anneal must be 'cos' or 'linear', not {_short.repr(self.anneal)}")
        return {"max_lr": _rate(self.max_lr, "max_lr"), "total_steps": _steps(self.total_steps, "total_steps"),
                "pct_start": _number(self.pct_start, "pct_start", 0, 1, True, True),
                "div_factor": _rate(self.div_factor, "div_factor"),
                "final_div_factor": _rate(self.final_div_factor, "final_div_factor")}

    def _at(self, t):
        t = min(t, self.total_steps - 1)
        initial = self.max_lr / self.div_factor
        peak = float(self.pct_start * self.total_steps) - 1
        if t <= peak:
            # a warm-up of one step (pct_start·total_steps == 1) starts and ends at step 0: take its start
            start, end, pct = initial, self.max_lr, t / peak if peak > 0 else 0.0
        else:
            span = self.total_steps - 1 - peak
            start, end, pct = self.max_lr, initial / self.final_div_factor, (t - peak) / span if span > 0 else 1.0
        if self.anneal == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start


@dataclass(frozen=True)
class WarmupCosine(Schedule):
    """``lr·(t+1)/warmup_steps`` for t < warmup_steps, then ``cosine`` from ``lr`` (at t =
    warmup_steps) to ``min_lr`` (at t = total_steps) and ``min_lr`` after: torch's SequentialLR
    of LinearLR(1/W, 1, W-1) and CosineAnnealingLR(T_max=total_steps-W, eta_min=min_lr),
    milestone W."""
    lr: float
    warmup_steps: int
    total_steps: int
    min_lr: float = 0.0
    name = "warmup_cosine"

    def _check(self):
        lr = _rate(self.lr, "lr")
        warmup, total = _steps(self.warmup_steps, "warmup_steps"), _steps(self.total_steps, "total_steps")
        if warmup >= total:
            raise ValueError(f"warmup_steps must be < total_steps, got warmup_steps={warmup}, total_steps={total}")
        return {"lr": lr, "warmup_steps": warmup, "total_steps": total,
                "min_lr": _number(self.min_lr, "min_lr", 0, lr)}

    def _at(self, t):
        w = self.warmup_steps
        if t < w:
            return self.lr * ((t + 1) / w)
        return _cosine(self.lr, self.min_lr, t - w, self.total_steps - w)


constant, step, exponential, cosine, onecycle, warmup_cosine = Constant, Step, Exponential, Cosine, OneCycle, \
    WarmupCosine

SCHEDULES = {cls.name: cls for cls in (Constant, Step, Exponential, Cosine, OneCycle, WarmupCosine)}


def from_config(config):
    """The schedule a ``config()`` dict describes; ``ValueError`` or ``TypeError`` if it is malformed."""
    if not isinstance(config, dict):
        raise TypeError(f"a schedule config must be an object with a name, not {_short.repr(config)}")
    config = dict(config)
    name = config.pop("name", None)
    if not isinstance(name, str) or name not in SCHEDULES:
        raise ValueError(f"unknown schedule {_short.repr(name)}; known: {', '.join(SCHEDULES)}")
    try:
        return SCHEDULES[name](**config)
    except TypeError as e:      # unknown or missing fields, wrong types
        raise TypeError(f"schedule {name}: {e}") from None
    except ValueError as e:
        raise ValueError(f"schedule {name}: {e}") from None
