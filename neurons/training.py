"""Minibatch training: ``learn`` and its result, ``Trained``.

The gradient of a step is the mean over its batch. Each epoch shuffles with an RNG seeded by
``(seed, epoch)``; each step's dropout masks come from ``(seed, epoch, step)``. So the same
seed, data and thread count give the same params, bit for bit.

Early stopping (the original's rule): stop once the validation loss has risen ``patience``
epochs in a row; the params with the lowest validation loss are the ones returned.
"""
from dataclasses import dataclass, field
import sys
import time

import numpy as np

from . import _checks, _tree
from ._threads import running


class TrainingError(FloatingPointError):
    """A NaN or inf loss or param; ``.result`` is the ``Trained`` with the last good params."""

    def __init__(self, message, result):
        super().__init__(f"{message}; the error's .result holds the params of the last good step (try a smaller "
                         f"learning rate or set_objective(..., clip=(lo, hi)))")
        self.result = result


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during ``learn``; ``.result`` is the ``Trained`` with the params of the last
    finished step and the history of the finished epochs."""

    def __init__(self, message, result):
        super().__init__(f"{message}; the exception's .result holds the params of the last finished step")
        self.result = result


@dataclass
class History:
    """Per-epoch records of a ``learn`` run (lists of equal length)."""
    train_loss: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    val_acc: list = field(default_factory=list)
    train_time: list = field(default_factory=list)
    val_time: list = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False

    @property
    def epochs(self):
        return len(self.train_loss)

    def add(self, train_loss, train_time, val_loss=None, val_acc=None, val_time=None):
        """Record one finished epoch (all its fields at once, so the lists stay of equal length)."""
        self.train_loss.append(train_loss)
        self.train_time.append(train_time)
        if val_loss is not None:
            self.val_loss.append(val_loss)
            self.val_acc.append(val_acc)
            self.val_time.append(val_time)

    def as_dict(self):
        return {k: getattr(self, k) for k in ("train_loss", "val_loss", "val_acc", "train_time", "val_time",
                                              "best_epoch", "stopped_early")}


@dataclass
class Trained:
    """A network with its trained params and training history."""
    network: "Network"
    params: tuple
    history: History = field(default_factory=History)

    def predict(self, x, batch=1000):
        return self.network.predict(self.params, x, batch)

    def evaluate(self, x, y, batch=1000, tol=0.5):
        return self.network.evaluate(self.params, x, y, batch, tol)

    def save(self, path):
        from .io import save
        save(path, self.network, self.params, self.history)

    def plot(self, path=None, title=None):
        from .display import plot_history
        return plot_history(self.history, path, title)

    def __str__(self):
        return str(self.network)


def _validation(net, validation):
    if validation is None:
        return None, None, None
    if not isinstance(validation, (tuple, list)) or len(validation) not in (2, 3):
        raise TypeError("validation must be (x_val, y_val) or (x_val, y_val, patience)")
    xv = net.check_x(validation[0], "x_val")
    yv = net.check_y(validation[1], len(xv), "y_val")
    patience = validation[2] if len(validation) == 3 else None
    if patience is not None:
        patience = _checks.positive_int(patience, "patience")
    return xv, yv, patience


def learn(net, x, y, validation=None, batch=32, epochs=100, print_every=None, seed=0, shuffle=True,
          params=None, tol=0.5, out=None):
    """Train ``net`` on ``(x, y)``; returns ``Trained``.

    ``validation``: ``(x_val, y_val)`` or ``(x_val, y_val, patience)``. ``params``: start from
    these instead of ``net.init(seed)``. ``print_every``: print the epoch table every that many
    epochs (and the last).

    Nothing learned is lost on the way out: a NaN/inf loss, or an update that makes a param
    non-finite, raises ``TrainingError`` and Ctrl-C raises ``TrainingInterrupted`` (a
    ``KeyboardInterrupt``); either carries ``.result``, the ``Trained`` with the params of the
    last finished step (always finite) and the history of the finished epochs.
    """
    x = net.check_x(x)
    y = net.check_y(y, len(x))
    xv, yv, patience = _validation(net, validation)
    # accuracy means something for one output (|pred - target| < tol) or one-hot targets; for
    # other multi-output targets (an autoencoder's images) the history holds NaN and the table "-"
    scored = yv is not None and _scored(yv)
    batch = _checks.positive_int(batch, "batch")
    epochs = _checks.positive_int(epochs, "epochs")
    seed = _checks.seed(seed)
    shuffle = _checks.flag(shuffle, "shuffle")
    tol = _checks.positive_number(tol, "tol")
    if print_every is not None:
        print_every = _checks.positive_int(print_every, "print_every")
    if params is None:
        params = net.init(seed)
    else:
        net.check_params(params)
        params = _tree.map(np.copy, params)
    net._warn_slips()
    out = out or sys.stdout
    opt = net.optimizer
    state = opt.init(params)
    history = History()
    best, best_loss, rising, prev = params, np.inf, 0, None
    n = len(x)
    # ``params`` only ever holds finished steps' params, all finite (each update is checked before
    # it is kept), and ``good`` the last of them whose loss was finite too: what an error or
    # Ctrl-C hands back is always usable
    good = params
    epoch = step = 0
    try:
        if print_every:
            print(f"{'epoch':>6} {'train loss':>12} {'val loss':>12} {'val acc':>9} {'time':>8}", file=out)
        with running():
            for epoch in range(epochs):
                t0 = time.perf_counter()
                order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
                total = 0.0
                for step, start in enumerate(range(0, n, batch)):
                    idx = order[start:start + batch]
                    xb, yb = (x[idx], y[idx]) if shuffle else (x[start:start + batch], y[start:start + batch])
                    loss, grads = net._loss_and_grad(params, xb, yb, True, _step_seed(seed, epoch, step))
                    if not np.isfinite(loss):
                        raise TrainingError(f"the loss became {loss} at epoch {epoch + 1}, batch {step + 1}",
                                            Trained(net, good, history))
                    good = params
                    new, state = opt.update(grads, state, params)
                    bad = _nonfinite_leaf(new)
                    if bad is not None:
                        raise TrainingError(f"the update at epoch {epoch + 1}, batch {step + 1} made {bad} non-finite",
                                            Trained(net, params, history))
                    params = new
                    total += loss * len(idx)
                train_time = time.perf_counter() - t0
                if xv is None:
                    history.add(total / n, train_time)
                else:
                    t1 = time.perf_counter()
                    vloss, vacc = net._evaluate(params, xv, yv, tol=tol)
                    history.add(total / n, train_time, vloss, vacc if scored else float("nan"),
                                time.perf_counter() - t1)
                    if vloss < best_loss:
                        best, best_loss, history.best_epoch = params, vloss, epoch + 1
                    rising = rising + 1 if prev is not None and vloss > prev else 0
                    prev = vloss
                if print_every and ((epoch + 1) % print_every == 0 or epoch + 1 == epochs
                                    or (patience and rising >= patience)):
                    _row(out, epoch + 1, history)
                if patience and rising >= patience:
                    history.stopped_early = True
                    if print_every:
                        print(f"stopped early: the validation loss rose {patience} epochs in a row; "
                              f"keeping the params of epoch {history.best_epoch}", file=out)
                    break
    except KeyboardInterrupt as e:
        if isinstance(e, TrainingInterrupted):
            raise
        raise TrainingInterrupted(f"interrupted at epoch {epoch + 1}, batch {step + 1}",
                                  Trained(net, params, history)) from None
    return Trained(net, best if xv is not None else params, history)


def _nonfinite_leaf(params):
    """``"params[i][j]"`` for the first array in ``params`` holding a NaN or inf, else None."""
    return next((name for name, a in _tree.named(params, "params", "[{}]") if not _checks.all_finite(a)), None)


def _scored(y):
    """Whether accuracy applies to these (N, outputs) targets: one output, or one-hot rows."""
    return y.shape[1] == 1 or bool(np.all((y == 0) | (y == 1)) and np.all(y.sum(axis=1) == 1))


def _row(out, epoch, h):
    vl = f"{h.val_loss[-1]:12.5f}" if h.val_loss else f"{'-':>12}"
    va = f"{100 * h.val_acc[-1]:8.2f}%" if h.val_acc and np.isfinite(h.val_acc[-1]) else f"{'-':>9}"
    t = h.train_time[-1] + (h.val_time[-1] if h.val_time else 0.0)
    print(f"{epoch:>6} {h.train_loss[-1]:12.5f} {vl} {va} {t:7.2f}s", file=out, flush=True)


def _step_seed(seed, epoch, step):
    return (int(seed) * 1_000_003 + epoch * 10_007 + step) & 0x7FFFFFFFFFFFFFFF

