"""Many runs of one function on a Dask cluster: ``sweep(fn, configs)``.

    def run(config):                      # module level, so that a worker can import it
        trained = build(config).learn(x, y, epochs=config["epochs"], seed=config["seed"])
        return {"loss": trained.history.train_loss[-1]}

    results = neurons.sweep(run, [{"seed": s, "epochs": 5} for s in range(8)], results="runs.jsonl")

Every finished result is appended to ``results`` at once (one JSON line holding the config and
its result, flushed and synced to disk), so a sweep killed halfway loses nothing done, and a
rerun with the same file runs only what is missing. A worker that dies and an ``fn`` that raises
both count as a failed attempt, retried up to ``retries`` times.

Bits: a kernel's split of its work is fixed by Numba's thread count when ``neurons`` is imported
(``kernels/_config.BLOCKS``). The cluster ``sweep`` starts has worker processes with one Dask
thread and ``NUMBA_NUM_THREADS=1``, so a result is bit for bit what ``fn(config)`` gives in a
fresh single-threaded process, whichever worker ran it and whatever else ran beside it.

Dask is the optional extra ``neurons[distributed]``: it is imported by ``sweep`` only.
"""
import collections
import contextlib
import functools
import json
import logging
import os
import sys
import threading
import traceback
import uuid
import warnings

from . import _checks

_INSTALL = 'pip install "neurons[distributed]"'
# one thread each for Numba and the BLAS libraries: set before the worker imports any of them
_ONE_THREAD = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
               "MKL_NUM_THREADS": "1"}


class SweepError(RuntimeError):
    """Configs that still failed after every retry. ``failures``: ``[(index, config, exception)]``
    in config order; ``results``: the sweep's list, ``None`` where a config failed."""

    def __init__(self, failures, results, attempts):
        self.failures, self.results = failures, results
        lines = [f"{len(failures)} of {len(results)} configs failed ({attempts} attempt"
                 f"{'s' if attempts > 1 else ''} each; every other result is written):"]
        for index, config, exc in failures:
            lines.append(f"  config {index} {_key(config)}: {_describe(exc)}")
        super().__init__("\n".join(lines))


def sweep(fn, configs, client=None, results=None, retries=2, workers=None, progress=None):
    """``[fn(config) for config in configs]``, run on Dask.

    ``fn``: a picklable function (defined at module level) returning JSON-able values.
    ``configs``: JSON-able values (usually dicts); equal configs (same canonical JSON) run once.
    ``client``: ``None`` starts a ``LocalCluster`` of ``workers`` processes (default
    ``os.cpu_count()``), one Dask thread and ``NUMBA_NUM_THREADS=1`` each, closed at the end;
    a ``distributed.Client``, a scheduler address (``"tcp://host:8786"``) or a cluster object
    (``dask_jobqueue.SLURMCluster``, ...) runs on that cluster, which is never closed.
    ``results``: a JSON-lines file; each finished config is appended as
    ``{"config": ..., "result": ...}``, and the configs already in it are not run again.
    ``retries``: a config whose ``fn`` raised or whose worker died is run again up to this many
    times; one that still fails makes ``sweep`` raise ``SweepError`` naming it, after every
    other result is written. ``progress``: a bar of finished/total with the time left, on
    stderr (None: when stderr is a terminal).

    Returns the results in config order, as JSON gives them back (tuples come back as lists).
    """
    configs = list(configs)
    keys = [_key(c, i) for i, c in enumerate(configs)]
    retries = _retries(retries)
    if workers is not None:
        workers = _checks.positive_int(workers, "workers")
        if client is not None:
            raise ValueError("workers= sizes the local cluster sweep starts: pass it without client=")
    progress = sys.stderr.isatty() if progress is None else _checks.flag(progress, "progress")
    results = None if results is None else os.fspath(results)

    done = _read(results) if results else {}
    todo = {}                                   # canonical config -> its first index
    for i, k in enumerate(keys):
        if k not in done:
            todo.setdefault(k, i)
    failures = []
    if todo:
        bar = _bar(progress, len(set(keys)), len(set(keys)) - len(todo))
        try:
            with _connect(client, workers) as cli:
                failures = _run(cli, fn, configs, todo, retries, done, results, bar)
        finally:
            if bar is not None:
                bar.close()
    out = [done.get(k) for k in keys]
    if failures:
        raise SweepError(failures, out, retries + 1) from failures[0][2]
    return out


def _run(client, fn, configs, todo, retries, done, path, bar):
    """Run every config of ``todo``, write each result as it comes, run failures again.

    A config is handed to the scheduler only when a worker thread is free for it. The scheduler
    marks every task it has sent to a worker that dies as a failure of that task, the ones
    waiting there behind the running one too: with none waiting, a death costs an attempt only
    to the config that was running. The free threads are counted again every second, so
    workers that join a cluster (an adaptive ``SLURMCluster``) get work at once.
    """
    from distributed import wait

    tag = uuid.uuid4().hex[:8]
    queue = collections.deque((i, 0) for i in todo.values())     # (config index, attempt)
    running = {}                                                  # future -> (index, attempt)
    failures = []
    with _Appender(path) as out:
        while queue or running:
            free = max(1, sum(client.nthreads().values())) - len(running)
            while queue and free > 0:
                i, attempt = queue.popleft()
                future = client.submit(_call, fn, configs[i], key=f"neurons-sweep-{tag}-{i}-{attempt}", pure=False)
                running[future] = (i, attempt)
                free -= 1
            try:
                finished, _ = wait(list(running), timeout=1.0, return_when="FIRST_COMPLETED")
            except TimeoutError:
                continue
            for future in finished:
                i, attempt = running.pop(future)
                value, exc = _outcome(future)
                if exc is None:
                    out.write({"config": configs[i], "result": value})
                    done[_key(configs[i])] = value
                elif attempt < retries:
                    _note(bar, f"config {i} failed (attempt {attempt + 1} of {retries + 1}), running it again: "
                               f"{_describe(exc)}")
                    queue.appendleft((i, attempt + 1))
                    continue
                else:
                    failures.append((i, configs[i], exc))
                if bar is not None:
                    bar.update(1)
    return sorted(failures, key=lambda f: f[0])


def _outcome(future):
    """``(result, None)`` or ``(None, the exception)``, with the worker's traceback."""
    try:
        if future.status == "finished":
            return future.result(), None
        exc, tb = future.exception(), future.traceback()
        return None, exc if tb is None else exc.with_traceback(tb)
    except Exception as e:                      # lost or cancelled: the scheduler gave up on it
        return None, e
    finally:
        future.release()


def _note(bar, text):
    if bar is not None:
        bar.write(text, file=sys.stderr)
    else:
        print(text, file=sys.stderr)


def _call(fn, config):
    """What a worker runs: ``fn(config)``, checked JSON-able and given back as JSON reads it
    (so that a result is the same whether it was just computed or read from the file)."""
    result = fn(config)
    try:
        return json.loads(json.dumps(result))
    except (TypeError, ValueError) as e:
        raise TypeError(f"{getattr(fn, '__name__', fn)} must return JSON-able values (dicts, lists, "
                        f"strings, numbers, None): {e}") from None


def _worker_threads():
    import numba
    return numba.config.NUMBA_NUM_THREADS


@contextlib.contextmanager
def _connect(client, workers):
    distributed = _distributed()
    if isinstance(client, distributed.Client):
        _check(client, strict=False)
        yield client
    elif client is None:
        yield from _local(distributed, workers)
    elif isinstance(client, str) or hasattr(client, "scheduler_address"):
        with distributed.Client(client) as own:      # closes this client only, not the cluster
            _check(own, strict=False)
            yield own
    else:
        raise TypeError(f"client must be None, a distributed.Client, a scheduler address or a cluster, "
                        f"not {type(client).__name__}")


def _local(distributed, workers):
    # allowed_failures=0: a task whose worker died comes back as KilledWorker at once, and
    # sweep's own retries count it as they count an exception
    cluster = distributed.LocalCluster(n_workers=workers or os.cpu_count() or 1, threads_per_worker=1,
                                       processes=True, worker_class=_nanny(distributed), env=dict(_ONE_THREAD),
                                       dashboard_address=":0", scheduler_kwargs={"allowed_failures": 0},
                                       silence_logs=logging.CRITICAL)        # sweep reports failures itself
    try:
        with distributed.Client(cluster) as client:
            _check(client, strict=True)
            yield client
    finally:
        cluster.close()


@functools.cache
def _nanny(distributed):
    class OneThreadNanny(distributed.Nanny):
        """A nanny whose worker processes start with one Numba and one BLAS thread."""

        async def instantiate(self):
            with _spawning():
                return await super().instantiate()
    return OneThreadNanny


_lock = threading.Lock()
_spawns = 0
_saved = {}


@contextlib.contextmanager
def _spawning():
    """``_ONE_THREAD`` in this process's environment while a nanny starts a worker process.

    A spawned process inherits the environment, and may import numba before the nanny's ``env``
    is applied in it (it re-imports the ``__main__`` script, which may import ``neurons``). But
    Numba re-reads ``NUMBA_*`` here whenever it compiles, so the values are put back as soon as
    the last worker being started is up (nannies start theirs together, and again after one
    dies), not left for the life of the cluster as dask's pre-spawn environment would be.
    """
    global _spawns, _saved
    with _lock:
        if _spawns == 0:
            _saved = {k: os.environ.get(k) for k in _ONE_THREAD}
            os.environ.update(_ONE_THREAD)
        _spawns += 1
    try:
        yield
    finally:
        with _lock:
            _spawns -= 1
            if _spawns == 0:
                for k, v in _saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v


def _check(client, strict):
    """Workers with more than one Numba thread (or Dask thread) give other bits than a
    single-threaded run: an error on the cluster sweep started, a warning on the caller's."""
    threads = client.run(_worker_threads)
    wide = {w: n for w, n in threads.items() if n != 1}
    if wide and strict:
        raise RuntimeError(f"sweep's workers started with NUMBA_NUM_THREADS other than 1: {wide}")
    if wide:
        warnings.warn(f"workers run Numba with more than one thread ({wide}): results are not bit-identical "
                      "to a single-threaded run (start the workers with NUMBA_NUM_THREADS=1)", stacklevel=5)
    busy = {w: n for w, n in client.nthreads().items() if n != 1}
    if busy:
        warnings.warn(f"workers with more than one Dask thread ({busy}) run several configs at once in one "
                      "process; start them with --nthreads 1", stacklevel=5)


class _Appender:
    """Appends JSON lines to ``path`` (nothing when None), each flushed and synced to disk."""

    def __init__(self, path):
        self.path, self.fh = path, None

    def __enter__(self):
        if self.path:
            self.fh = open(self.path, "a+b")
            self.fh.seek(0, os.SEEK_END)
            if self.fh.tell():
                self.fh.seek(-1, os.SEEK_END)
                if self.fh.read(1) != b"\n":    # a line cut short by a kill: start a new one
                    self.fh.write(b"\n")
        return self

    def write(self, entry):
        if self.fh is not None:
            self.fh.write(json.dumps(entry).encode() + b"\n")
            self.fh.flush()
            os.fsync(self.fh.fileno())

    def __exit__(self, *exc):
        if self.fh is not None:
            self.fh.close()


def _read(path):
    """Canonical config -> result, for every complete line of the results file."""
    done = {}
    if not os.path.exists(path):
        return done
    with open(path, "rb") as fh:
        for line in fh:
            try:
                entry = json.loads(line)
            except ValueError:                   # cut short by a kill: that config runs again
                continue
            if isinstance(entry, dict) and "config" in entry and "result" in entry:
                done[_key(entry["config"])] = entry["result"]
    return done


def _key(config, index=None):
    """The canonical JSON of a config: what matches it to a line of the results file."""
    try:
        return json.dumps(config, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError) as e:
        where = "" if index is None else f" {index}"
        raise TypeError(f"config{where} must be JSON-able (it is matched to the results file by its JSON): "
                        f"{config!r}: {e}") from None


def _retries(value):
    if not _checks._is_int(value) or value < 0:
        raise ValueError(f"retries must be an int >= 0, got {value!r}")
    return int(value)


def _describe(exc):
    text = f"{type(exc).__name__}: {exc}"
    if type(exc).__name__ == "KilledWorker":
        text = f"the worker running it died ({text})"
    elif exc.__traceback__ is not None:
        where = traceback.extract_tb(exc.__traceback__)[-1]
        text += f" (at {os.path.basename(where.filename)}:{where.lineno})"
    return text


def _bar(progress, total, initial):
    if not progress:
        return None
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, desc="sweep", unit="config", file=sys.stderr, dynamic_ncols=True)


def _distributed():
    try:
        import distributed
    except ImportError as e:
        raise ImportError(f"neurons.sweep runs on Dask, which is not installed: {_INSTALL} ({e})") from e
    return distributed
