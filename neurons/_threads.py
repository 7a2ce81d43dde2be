"""BLAS threads while kernels run.

Numba's thread pool gives the parallelism; BLAS is kept to one thread meanwhile, because BLAS
threads spinning next to Numba's oversubscribed the two cores here (a 20x slower training
step). The controller is built once; entering the limit is then a couple of C calls.
"""
import contextlib

_controller = None


def _get():
    global _controller
    if _controller is None:
        import scipy.linalg.cython_blas  # noqa: F401  (the BLAS Numba's np.dot calls: load it first)
        from threadpoolctl import ThreadpoolController
        _controller = ThreadpoolController()
    return _controller


@contextlib.contextmanager
def blas_single():
    """Keep every loaded BLAS to one thread inside the ``with`` block (re-entrant)."""
    with _get().limit(limits=1, user_api="blas"):
        yield
