"""BLAS threads while kernels run.

Numba's thread pool gives the parallelism; BLAS is kept to one thread meanwhile, because BLAS
threads spinning next to Numba's oversubscribed the two cores here (a 20x slower training
step). The controller is built once; entering the limit is then a couple of C calls.

The first use also asks glibc to keep freed memory for reuse (``keep_heap``): a training step
allocates and frees the same few-megabyte arrays every batch, and by default glibc serves those
with fresh ``mmap`` pages and returns them on ``free``, so every step paid the page faults again
(lenet step 12.8 -> 10.0 ms; quickstart, whose arrays are small, 0.63 -> 0.61 ms: medians of
8 processes each). The process then keeps its peak heap. ``NEURONS_KEEP_HEAP=0`` turns this off.
"""
import contextlib
import ctypes
import os
import sys
import threading

_controller = None
# one process-wide limit, set by the first caller to enter and restored by the last to leave:
# with a limit per call, one thread leaving restored BLAS's threads while another thread's
# kernels still ran
_lock = threading.Lock()
_users = 0
_saved = ()


def _get():
    global _controller
    if _controller is None:
        import scipy.linalg.cython_blas  # noqa: F401  (the BLAS kernels/blas.py calls: load it first)
        from threadpoolctl import ThreadpoolController
        _controller = ThreadpoolController()
        keep_heap()
    return _controller


def keep_heap():
    """Serve large allocations from the heap and never trim it (glibc only; else a no-op).
    Returns whether the setting was applied."""
    if os.environ.get("NEURONS_KEEP_HEAP", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:         # not glibc (e.g. musl)
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, 1 << 30) and libc.mallopt(m_trim_threshold, (1 << 31) - 1))


def _set_threads(lib, n):
    # threadpoolctl (3.6 and later) lets only one "controlling" thread change OpenBLAS's
    # process-wide limit and silently ignores the others, so a ``predict`` from a worker thread
    # ran BLAS unlimited; the calls are serialised by ``_lock`` here, so set it directly
    getattr(lib, "_real_set_num_threads", lib.set_num_threads)(n)


@contextlib.contextmanager
def blas_single():
    """Keep every loaded BLAS to one thread inside the ``with`` block (re-entrant, and safe
    across threads: the limit holds until the last thread inside leaves)."""
    global _users, _saved
    with _lock:
        if _users == 0:
            _saved = tuple((lib, lib.num_threads) for lib in _get().lib_controllers if lib.user_api == "blas")
            for lib, _ in _saved:
                _set_threads(lib, 1)
        _users += 1
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0:
                for lib, n in _saved:
                    _set_threads(lib, n)
