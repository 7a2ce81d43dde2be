"""Minibatch training: ``learn`` and its result, ``Trained``.

The gradient of a step is the mean over its batch. Each epoch shuffles with an RNG seeded by
``(seed, epoch)``; each step's dropout masks come from ``(seed, epoch, step)``. So the same
seed, data and thread count give the same params, bit for bit.

Early stopping (the original's rule): stop once the validation loss has risen ``patience``
epochs in a row; the params with the lowest validation loss are the ones returned.

``comm=`` (an mpi4py communicator) trains data-parallel: ``neurons._mpi`` says how.
"""
import contextlib
from dataclasses import dataclass, field
import os
import signal
import sys
import threading
import time
import zlib

from numba.core import event
import numpy as np

from . import _checks, _fused, _tree, _warm
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
    """A network with its trained params, running state and training history."""
    network: "Network"
    params: tuple
    history: History = field(default_factory=History)
    optimizer_state: tuple | None = None      # the optimizer's state after the last step, when known
    state: tuple | None = None                # running statistics (batch normalization); None: init_state()

    def __post_init__(self):
        if self.state is None:
            self.state = self.network.init_state()

    def predict(self, x, batch=1000):
        return self.network.predict(self.params, x, batch, state=self.state)

    def evaluate(self, x, y, batch=1000, tol=0.5):
        return self.network.evaluate(self.params, x, y, batch, tol, state=self.state)

    def save(self, path):
        """Write a ``.safetensors`` file (``neurons.load`` reads it back; an ``.npz`` path keeps
        the older format, without the optimizer's state)."""
        from .io import save
        save(path, self.network, self.params, self.history, self.optimizer_state, state=self.state)

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
          params=None, tol=0.5, out=None, checkpoint=None, checkpoint_every=1, resume=None, progress=None,
          state=None, comm=None):
    """Train ``net`` on ``(x, y)``; returns ``Trained``.

    ``validation``: ``(x_val, y_val)`` or ``(x_val, y_val, patience)``. ``params``: start from
    these instead of ``net.init(seed)``; ``state``: from these running statistics instead of
    ``net.init_state()`` (batch normalization: each step updates them, and they are kept,
    checkpointed and returned with the params they belong to). ``print_every``: print the epoch
    table every that many epochs (and the last). ``progress``: a bar over each epoch's batches (None: when stderr is a
    terminal).

    ``checkpoint=PATH`` writes a checkpoint every ``checkpoint_every`` epochs, after the last and
    at an early stop; ``resume=PATH`` continues the run a checkpoint holds (``epochs`` counts the
    whole run; the checkpoint may be the same path, and a missing one then starts afresh). A run
    resumed gives the very params and history the same run straight through gives.

    Nothing learned is lost on the way out: a NaN/inf loss, or an update that makes a param
    non-finite, raises ``TrainingError`` and Ctrl-C raises ``TrainingInterrupted`` (a
    ``KeyboardInterrupt``); either carries ``.result``, the ``Trained`` with the params of the
    last finished step (always finite) and the history of the finished epochs.

    ``comm=MPI.COMM_WORLD`` (mpi4py; run under ``mpiexec``): data-parallel training. Every rank
    passes the same network, data and settings (else a ``ValueError`` on every rank); the run
    starts from rank 0's params (or its ``resume``); each rank computes the gradient of its share
    of every batch and one ``Allreduce`` gives the mean over the whole batch, with the shuffling
    and dropout masks of the one-process run, so every rank ends with the same params, equal to
    the one-process run's up to rounding. Validation is split across the ranks; only rank 0
    prints, shows progress and writes checkpoints. Batch normalization is refused.
    """
    dp = None
    if comm is not None:     # agree on everything first: a check failing on one rank alone would hang the others
        from ._mpi import DataParallel
        dp = DataParallel(comm)
        dp.agree(net, x, y, validation, batch=batch, epochs=epochs, seed=seed, shuffle=shuffle, tol=tol)
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
    checkpoint_every = _checks.positive_int(checkpoint_every, "checkpoint_every")
    if print_every is not None:
        print_every = _checks.positive_int(print_every, "print_every")
    progress = sys.stderr.isatty() if progress is None else _checks.flag(progress, "progress")
    net._warn_slips()
    out = out or sys.stdout
    opt = net.optimizer
    n = len(x)
    net._check_batch(n % batch or batch, f"batch={batch} over {n} samples (its last batch)")
    settings = {"seed": seed, "batch": batch, "shuffle": shuffle, "samples": n, "tol": tol,
                "validation": None if xv is None else len(xv), "patience": patience}
    if checkpoint is not None or resume is not None:
        settings["data"] = _fingerprint(x, y, xv, yv)
    if dp is None:
        run = _start(net, params, resume, checkpoint, settings, state)
    else:
        run = dp.from_root(lambda: _start(net, params, resume, checkpoint, settings, state))
        if dp.quiet():
            print_every, progress, checkpoint = None, False, None
    params, state, history, best = run.params, run.state, run.history, run.best
    stats, best_stats = run.stats, run.best_stats           # running statistics, kept with their params
    if run.finished(epochs):
        return Trained(net, best if xv is not None else params, history, state,
                       best_stats if xv is not None else stats)
    # ``params`` only ever holds finished steps' params, all finite (each update is checked before
    # it is kept), and ``good`` the last of them whose loss was finite too: what an error or
    # Ctrl-C hands back is always usable
    good, good_stats = params, stats
    epoch = step = 0
    steps = -(-n // batch)          # per epoch
    fused = _fused.plan(net, batch, n) if dp is None else None     # None: the general path, step by step
    # on a cold cache the chain compiles in a helper meanwhile (general steps give the same bits);
    # one with convolutions (``Runner.later``) is looked for once the first step has compiled the
    # general path's kernels (beside a helper of their own; the chain's compile beside them made
    # that step 1.5-2 s slower), and if it is not at hand its helper starts after the first epoch
    later = deferred = compiling = None
    if fused is not None:
        if fused.later:
            later, fused = fused, None
        elif not fused.ready():
            compiling = _warm.start_chain(fused, net, batch, n)
    try:
        if print_every:
            print(f"{'epoch':>6} {'train loss':>12} {'val loss':>12} {'val acc':>9} {'time':>8}", file=out)
        with running(), _cold_start(bool(print_every or progress), net, batch, 0 if xv is None else min(1000, len(xv)),
                                    dp is None and fused is None), _ctrl_c() as ctrl_c:
            for epoch in range(history.epochs, epochs):
                t0 = time.perf_counter()
                order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
                total = 0.0
                bar = _bar(progress, n, epoch, epochs)
                step = 0
                while step < steps:
                    if compiling is not None and compiling.poll() is not None:
                        # the helper is done: the chain from the cache (or, if it failed, never)
                        fused = fused if compiling.returncode == 0 and fused.ready() else None
                        compiling = None
                    if fused is not None and compiling is None:         # a chunk of steps in one compiled call
                        c = fused.run(params, state, x, y, order, epoch, step, min(fused.chunk, steps - step), total)
                        params, state, total, good = c.params, c.state, c.total, good if c.prev is None else c.prev
                        if c.error is not None:
                            kind, message = c.error
                            raise TrainingError(message, Trained(net, good if kind == "loss" else params, history,
                                                                 state=stats))
                        if bar is not None:     # the loss first: the update draws the bar
                            bar.set_postfix_str(f"loss {total / min(n, (step + c.done) * batch):.4f}", refresh=False)
                            bar.update(min(n, (step + c.done) * batch) - min(n, step * batch))
                        step += c.done
                        ctrl_c.check()
                        continue
                    start = step * batch
                    rows = order[start:start + batch] if shuffle else slice(start, min(n, start + batch))
                    size, step_seed = min(batch, n - start), _step_seed(seed, epoch, step)
                    if dp is None:
                        loss, grads, new_stats = net._loss_grad_state(params, x[rows], y[rows], True, step_seed, stats)
                    else:
                        (loss, grads), new_stats = dp.loss_grad(net, params, x, y, rows, step_seed), stats
                    if not np.isfinite(loss):
                        raise TrainingError(f"the loss became {loss} at epoch {epoch + 1}, batch {step + 1}",
                                            Trained(net, good, history, state=good_stats))
                    good, good_stats = params, stats
                    new, state = opt.update(grads, state, params)
                    bad = _nonfinite_leaf(new)
                    if bad is None and net._state_keys:
                        bad = _nonfinite_leaf(new_stats, "state")
                    if bad is not None:
                        raise TrainingError(f"the update at epoch {epoch + 1}, batch {step + 1} made {bad} non-finite",
                                            Trained(net, params, history, state=stats))
                    params, stats = new, new_stats
                    total += loss * size
                    step += 1
                    if later is not None:           # the general path's kernels are compiled now
                        fused, deferred, later = (later, None, None) if later.ready() else (None, later, None)
                    ctrl_c.check()
                    if bar is not None:
                        bar.update(size)
                        bar.set_postfix_str(f"loss {total / min(n, start + batch):.4f}", refresh=False)
                if bar is not None:
                    bar.close()
                train_time = time.perf_counter() - t0
                if xv is None:
                    history.add(total / n, train_time)
                else:
                    t1 = time.perf_counter()
                    vloss, vacc = (net._evaluate(params, xv, yv, tol=tol, state=stats) if dp is None
                                   else dp.evaluate(net, params, xv, yv, tol, stats))
                    history.add(total / n, train_time, vloss, vacc if scored else float("nan"),
                                time.perf_counter() - t1)
                    if vloss < run.best_loss:
                        best, best_stats, run.best_loss, history.best_epoch = params, stats, vloss, epoch + 1
                    run.rising = run.rising + 1 if run.prev is not None and vloss > run.prev else 0
                    run.prev = vloss
                history.stopped_early = bool(patience and run.rising >= patience)
                if deferred is not None:            # the evaluation's kernels are compiled too now
                    compiling = _warm.start_chain(deferred, net, batch, n)
                    # no helper: the chain is left alone (compiling it here would cost more than it gains)
                    fused, deferred = (deferred if compiling is not None else None), None
                if dp is not None:
                    dp.check_same(params, epoch + 1)
                last = epoch + 1 == epochs or history.stopped_early
                if print_every and ((epoch + 1) % print_every == 0 or last):
                    _row(out, epoch + 1, history)
                if checkpoint is not None and ((epoch + 1) % checkpoint_every == 0 or last):
                    run.save(checkpoint, net, params, state, history, best if xv is not None else None,
                             stats, best_stats)
                if history.stopped_early:
                    if print_every:
                        print(f"stopped early: the validation loss rose {patience} epochs in a row; "
                              f"keeping the params of epoch {history.best_epoch}", file=out)
                    break
    except KeyboardInterrupt as e:
        if isinstance(e, TrainingInterrupted):
            raise
        raise TrainingInterrupted(f"interrupted at epoch {epoch + 1}, batch {step + 1}",
                                  Trained(net, params, history, state=stats)) from None
    return Trained(net, best if xv is not None else params, history, state, best_stats if xv is not None else stats)


class _Run:
    """Where a run stands between epochs: what a checkpoint holds besides the network. ``state``
    is the optimizer's, ``stats`` the running statistics (``best_stats``: the best epoch's)."""

    def __init__(self, params, state, settings, history=None, best=None, best_loss=np.inf, rising=0, prev=None,
                 stats=None, best_stats=None):
        self.params, self.state, self.settings = params, state, settings
        self.history = history if history is not None else History()
        self.best = best if best is not None else params
        self.best_loss, self.rising, self.prev = best_loss, rising, prev
        self.stats = stats
        self.best_stats = best_stats if best_stats is not None else stats

    def finished(self, epochs):
        return self.history.stopped_early or self.history.epochs >= epochs

    def save(self, path, net, params, state, history, best, stats, best_stats):
        from .io import _write
        position = {"best_loss": None if np.isinf(self.best_loss) else self.best_loss, "rising": self.rising,
                    "prev": self.prev, "best": best is not None}
        trees = {"params": params, "state": stats,
                 **({"best": best, "best_state": best_stats} if best is not None else {})}
        _write(path, net, history, trees, state, {**self.settings, **position})


def _start(net, params, resume, checkpoint, settings, stats=None):
    """The run to continue: fresh (from ``params`` or ``net.init(seed)``, ``stats`` or
    ``net.init_state()``) or from ``resume``."""
    if resume is not None and not (resume == checkpoint and not os.path.exists(resume)):
        if params is not None or stats is not None:
            raise ValueError("give params (or state) or resume, not both: a resumed run continues from its "
                             "checkpoint's params and state")
        return _resumed(net, resume, settings)
    if params is None:
        params = net.init(settings["seed"])
    else:
        net.check_params(params)
        params = _tree.map(np.copy, params)
    if stats is None:
        stats = net.init_state()
    else:
        net.check_state(stats)
        stats = _tree.map(np.copy, stats)
    return _Run(params, net.optimizer.init(params), settings, stats=stats)


def _resumed(net, path, settings):
    from .io import load_checkpoint, network_config
    saved, run, best = load_checkpoint(path)         # best: the best epoch's (params, state), or None
    ours, theirs = network_config(net), network_config(saved.network)
    differ = [k for k in ours if ours[k] != theirs[k]]
    if differ:
        raise ValueError(f"{path}: a checkpoint of another network ("
                         f"{'; '.join(f'{k}: {theirs[k]} there, {ours[k]} here' for k in differ)})")
    differ = [k for k in settings if run.get(k) != settings[k]]
    if differ:
        raise ValueError(f"{path}: a checkpoint of another run ({'; '.join(f'{k} {run.get(k)} there, {settings[k]} here' for k in differ)}"
                         f"); resume with the same data and settings, or start afresh from its params with params=")
    if saved.optimizer_state is None:
        raise ValueError(f"{path}: the checkpoint holds no optimizer state")
    best_loss = np.inf if run.get("best_loss") is None else float(run["best_loss"])
    best, best_stats = best if best is not None else (None, None)
    return _Run(saved.params, saved.optimizer_state, settings, saved.history, best, best_loss,
                int(run.get("rising", 0)), run.get("prev"), saved.state, best_stats)


def _fingerprint(*arrays):
    """A CRC-32 of the data, so that a checkpoint is resumed only on the data it was made on."""
    crc = 0
    for a in arrays:
        if a is not None:
            crc = zlib.crc32(memoryview(np.ascontiguousarray(a)).cast("B"), crc)
    return crc


def _bar(progress, n, epoch, epochs):
    if not progress:
        return None
    from tqdm import tqdm
    return tqdm(total=n, desc=f"epoch {epoch + 1}/{epochs}", unit="sample", leave=False, file=sys.stderr,
                dynamic_ncols=True)


class _Cold(event.Listener):
    """The first compilation during training: the cache is cold for this network. Says once a
    process (if ``note``) that the pause is the first run's compilation (the machine code is
    cached on disk for the next runs), and starts a helper process that compiles the same
    kernels from the other end (``_warm.py``); stopped when training ends."""
    noted = False

    def __init__(self, note, warm):
        self.note, self.warm, self.helper = note, warm, None

    def on_start(self, ev):
        if self.note and not _Cold.noted:
            _Cold.noted = True
            from tqdm import tqdm
            tqdm.write("compiling kernels for this network (first run only, cached afterwards)", file=sys.stderr)
        if self.warm is not None:
            self.helper, self.warm = _warm.start(*self.warm), None

    def on_end(self, ev):
        pass


@contextlib.contextmanager
def _cold_start(note, net, batch, eval_batch, warm):
    """While training: ``_Cold``, if it has something to do."""
    if not warm and (not note or _Cold.noted):
        yield
        return
    cold = _Cold(note, (net, batch, eval_batch) if warm else None)
    try:
        with event.install_listener("numba:compile", cold):
            yield
    finally:
        _warm.stop(cold.helper)


class _CtrlC:
    """Ctrl-C noted as well as raised: a KeyboardInterrupt raised inside C code that clears
    errors (a library call between steps; seen once in a compiled chunk's call) would be lost,
    and the run would go on; ``check`` between steps raises it again."""
    pressed = False

    def handler(self, signum, frame):
        self.pressed = True
        raise KeyboardInterrupt

    def check(self):
        if self.pressed:
            raise KeyboardInterrupt


@contextlib.contextmanager
def _ctrl_c():
    """While ``learn`` trains, on the main thread and where Python's own handler is in place."""
    noted = _CtrlC()
    mine = threading.current_thread() is threading.main_thread() and \
        signal.getsignal(signal.SIGINT) is signal.default_int_handler
    if mine:
        signal.signal(signal.SIGINT, noted.handler)
    try:
        yield noted
    finally:
        if mine:
            signal.signal(signal.SIGINT, signal.default_int_handler)


def _nonfinite_leaf(params, name="params"):
    """``"params[i][j]"`` for the first array in ``params`` holding a NaN or inf, else None."""
    return next((leaf for leaf, a in _tree.named(params, name, "[{}]") if not _checks.all_finite(a)), None)


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

