"""One place for how every kernel is compiled.

``jit`` is for serial kernels, ``pjit`` for kernels with a ``prange``. Both cache their
machine code on disk (see ``neurons/kernels/__init__.py`` for where, and why the cache folder
is keyed by the threading settings).

fastmath: reassociation and contraction only. ``nnan``/``ninf`` are left out on purpose, so
that NaN and inf checks inside kernels keep working.
"""
import functools

import numba

FASTMATH = {"contract", "reassoc", "nsz", "arcp"}

jit = functools.partial(numba.njit, cache=True, fastmath=FASTMATH, nogil=True)
pjit = functools.partial(numba.njit, cache=True, fastmath=FASTMATH, nogil=True, parallel=True)
