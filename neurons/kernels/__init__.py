"""Stateless ``@njit`` kernels: each layer's forward pass and its gradients.

Arrays in, arrays out; the dtype follows the inputs (float32 and float64 both compile).
Nothing here knows about ``Network``. Every module is ``<op>.py`` with ``<op>_forward`` and
``<op>_backward(dy, ...)``.

The on-disk compile cache is put in a folder keyed by Numba's version and threading settings:
a cache built under another threading layer or thread count was seen to crash a process. A
user's own ``NUMBA_CACHE_DIR`` wins. The key also holds a digest of ``_config.py``: Numba checks a
cached function against its own source file only, so a change of compile options alone would
otherwise load code built under the old ones. Numba fixes a function's cache folder when it is
decorated, so ``config.CACHE_DIR`` is set only while these modules are imported.
"""
import hashlib
import os
import platform

import numba
from numba.core import config


def _config_digest():
    with open(os.path.join(os.path.dirname(__file__), "_config.py"), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:8]


def _cache_dir():
    key = "-".join([
        numba.__version__,
        str(config.THREADING_LAYER),
        str(config.NUMBA_NUM_THREADS),
        platform.machine(),
        _config_digest(),
    ])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "neurons", "numba", key)


_saved = config.CACHE_DIR
if not os.environ.get("NUMBA_CACHE_DIR"):
    config.CACHE_DIR = _cache_dir()
try:
    from . import activations, conv, deconv, dense, dropout, maxpool, objectives, optim  # noqa: E402,F401
finally:
    config.CACHE_DIR = _saved
