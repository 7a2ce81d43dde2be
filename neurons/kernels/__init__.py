"""Stateless ``@njit`` kernels: each layer's forward pass and its gradients.

Arrays in, arrays out; the dtype follows the inputs (float32 and float64 both compile).
Nothing here knows about ``Network``. A layer's module (``dense``, ``conv``, ``deconv``,
``maxpool``, ``batchnorm``, ``recurrent``, ``activations``) has its forward pass (``<op>_forward``;
batchnorm's in a train and an eval form) and ``<op>_backward(dy, ...)``; ``dropout`` draws masks;
``conv`` picks, by one table, among ``conv_direct``, ``conv_gemm`` and ``conv_strided``
(``conv_planes`` holds what they share). The rest serve them: ``objectives`` (losses and their
gradients), ``optim`` (the optimizers' update loops), ``blas`` (GEMM from inside kernels),
``chain`` (many training steps of a small dense network in one call, through the kernels above),
``_blocks`` (parallel loops over blocks of work) and ``_config`` (the compile options).

The on-disk compile cache is put in a folder keyed by Numba's version and threading settings:
a cache built under another threading layer or thread count was seen to crash a process. A
user's own ``NUMBA_CACHE_DIR`` wins. The key also holds the package version and a digest of
every ``.py`` file here: Numba checks a cached function against its own source file only, so a
change to a callee in another file (``blas.gemm`` is compiled into the dense and convolution
bodies), to the compile options in ``_config.py``, or a package upgrade would otherwise load
machine code built from the old source. And it holds the parallel-loop mode asked for
(``NEURONS_BLOCKS``, see ``_blocks.py``) and the BLAS the products call (``NEURONS_BLAS``, see
``_blas_library``). Numba fixes a function's cache folder when it is
decorated, so ``config.CACHE_DIR`` is set only while these modules are imported and while
``_blocks`` makes a loop (``_cached_here``): the loops, made at their first use, went to Numba's
default folder beside the source, keyed by nothing, where a loop cached by a process with
another thread count crashed the next.
"""
import contextlib
import ctypes
import hashlib
import os
import platform
import re

import numba
from numba.core import config

_HERE = os.path.dirname(os.path.abspath(__file__))


def _blocks_mode():
    """How ``_blocks.parallel`` runs its loops: ``NEURONS_BLOCKS`` (``"address"``, the default, or
    ``"prange"``), or ``"python"`` under ``NUMBA_DISABLE_JIT``. Read here, before any kernel module
    is imported, because the cache folder is keyed by it."""
    if config.DISABLE_JIT:
        return "python"
    mode = os.environ.get("NEURONS_BLOCKS") or "address"
    if mode not in ("address", "prange"):
        raise ValueError(f"NEURONS_BLOCKS must be 'address' or 'prange', not {mode!r}")
    return mode


def _blas_library():
    """``(name, sgemm, dgemm, wide)``: the BLAS that ``blas.gemm`` calls, the addresses of its
    Fortran ``sgemm`` and ``dgemm``, and whether they take 64-bit integers.

    NumPy's own OpenBLAS when its wheel ships one (``NEURONS_BLAS=numpy``, the default), else
    SciPy's (``NEURONS_BLAS=scipy``, or a NumPy built against some other BLAS). Both are OpenBLAS,
    but NumPy's is the newer build: single-threaded, the dense layers' products ran 25-75 % faster
    in it (``python -m bench.blas``: 53-71 against 35-55 GFLOP/s). Read here, before any
    kernel is compiled: the calls differ in their integer width, so the cache folder is keyed
    by the choice."""
    choice = os.environ.get("NEURONS_BLAS") or "numpy"
    if choice not in ("numpy", "scipy"):
        raise ValueError(f"NEURONS_BLAS must be 'numpy' or 'scipy', not {choice!r}")
    if choice == "numpy":
        try:
            from numpy._core import _multiarray_umath as core
        except ImportError:         # NumPy 1
            from numpy.core import _multiarray_umath as core
        # dlsym searches the extension and the libraries it links: the OpenBLAS of NumPy's wheels
        # (ILP64, its symbols renamed: ``scipy_sgemm_64_`` from NumPy 2, ``sgemm_64_`` before)
        try:
            lib = ctypes.CDLL(core.__file__)
        except OSError:
            lib = None
        for prefix in ("scipy_", "") if lib is not None else ():
            s, d = (getattr(lib, f"{prefix}{t}gemm_64_", None) for t in "sd")
            if s is not None and d is not None:
                return "numpy", *(ctypes.cast(f, ctypes.c_void_p).value for f in (s, d)), True
    from numba.extending import get_cython_function_address
    return "scipy", *(get_cython_function_address("scipy.linalg.cython_blas", f) for f in ("sgemm", "dgemm")), False


BLAS = _blas_library()


def _version():
    """``neurons.__version__``, read from its file: the package is still being imported."""
    with open(os.path.join(os.path.dirname(_HERE), "__init__.py"), encoding="utf-8") as f:
        found = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", f.read(), re.MULTILINE)
    return found.group(1) if found else "unknown"


def _source_digest():
    """A digest of every ``.py`` file in this folder, names and contents."""
    digest = hashlib.sha256()
    for name in sorted(n for n in os.listdir(_HERE) if n.endswith(".py")):
        with open(os.path.join(_HERE, name), "rb") as f:
            digest.update(name.encode() + b"\0" + f.read() + b"\0")
    return digest.hexdigest()[:12]


def _cache_dir():
    key = "-".join([
        numba.__version__,
        str(config.THREADING_LAYER),
        str(config.NUMBA_NUM_THREADS),
        platform.machine(),
        _blocks_mode(),
        BLAS[0] + "blas",
        _version(),
        _source_digest(),
    ])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "neurons", "numba", key)


_FOLDER = None if os.environ.get("NUMBA_CACHE_DIR") else _cache_dir()


@contextlib.contextmanager
def _cached_here():
    """While jit functions are decorated (here at import, and ``_blocks``' loops, which are made
    at their first use): their cache folder is the keyed one."""
    saved = config.CACHE_DIR
    if _FOLDER is not None:
        config.CACHE_DIR = _FOLDER
    try:
        yield
    finally:
        config.CACHE_DIR = saved


with _cached_here():
    from . import (activations, batchnorm, chain, conv, deconv, dense, dropout, maxpool,  # noqa: F401
                   objectives, optim, recurrent)
