"""What holds while the library's kernels run: ``with running(): ...``.

BLAS is kept to one thread. Numba's thread pool gives the parallelism, and BLAS threads
spinning next to Numba's oversubscribed the two cores here (a 20x slower training step).

glibc is asked to keep freed memory for reuse. A training step allocates and frees the same
few-megabyte arrays every batch; by default glibc serves those with fresh ``mmap`` pages and
returns them on ``free``, so every step paid the page faults again (lenet step 12.8 -> 10.0 ms;
quickstart, whose arrays are small, 0.63 -> 0.61 ms: medians of 8 processes each).
``NEURONS_KEEP_HEAP=0`` turns this off.

Both settings are process-wide, so they are made by the first thread to enter ``running`` and
undone by the last to leave: a user's own code outside ``learn``/``predict``/... runs with
BLAS's threads and glibc's defaults.
"""
import contextlib
import ctypes
import functools
import os
import sys
import threading

_controller = None
_lock = threading.Lock()
_users = 0
_saved = ()

# glibc's mallopt parameters, and their documented defaults (restored when the work is done)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_DEFAULT_THRESHOLD = 128 * 1024


def _get():
    global _controller
    if _controller is None:
        import scipy.linalg.cython_blas  # noqa: F401  (SciPy's BLAS, which kernels/blas.py may call: loaded first)
        from threadpoolctl import ThreadpoolController
        _controller = ThreadpoolController()
    return _controller


@functools.cache
def _glibc():
    try:
        return ctypes.CDLL("libc.so.6")         # loaded once: each load builds a class (40 us)
    except OSError:         # not glibc (e.g. musl)
        return None


def _libc():
    if os.environ.get("NEURONS_KEEP_HEAP", "1") == "0" or not sys.platform.startswith("linux"):
        return None
    return _glibc()


def keep_heap(keep):
    """Serve large allocations from the heap and never trim it (``keep``), or glibc's default
    thresholds again. glibc only, else a no-op; returns whether the setting was applied."""
    libc = _libc()
    if libc is None:
        return False
    mmap, trim = (1 << 30, (1 << 31) - 1) if keep else (_DEFAULT_THRESHOLD, _DEFAULT_THRESHOLD)
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap) and libc.mallopt(_M_TRIM_THRESHOLD, trim))


def _set_threads(lib, n):
    # threadpoolctl (3.6 and later) lets only one "controlling" thread change OpenBLAS's
    # process-wide limit and silently ignores the others, so a ``predict`` from a worker thread
    # ran BLAS unlimited; the calls are serialised by ``_lock`` here, so set it directly
    getattr(lib, "_real_set_num_threads", lib.set_num_threads)(n)


@contextlib.contextmanager
def running():
    """BLAS on one thread and the heap kept, inside the ``with`` block (re-entrant, and safe
    across threads: the settings hold until the last thread inside leaves)."""
    global _users, _saved
    with _lock:
        if _users == 0:
            _saved = tuple((lib, lib.num_threads) for lib in _get().lib_controllers if lib.user_api == "blas")
            for lib, _ in _saved:
                _set_threads(lib, 1)
            keep_heap(True)
        _users += 1
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0:
                for lib, n in _saved:
                    _set_threads(lib, n)
                keep_heap(False)
