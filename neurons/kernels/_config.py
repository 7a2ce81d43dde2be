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
# explicit ``prange`` loops only: array expressions and allocations inside a parallel kernel stay
# serial calls instead of becoming parfors of their own (compiling ``pad`` took 2.1 -> 1.0 s)
_PRANGE_ONLY = dict(prange=True, comprehension=False, reduction=False, inplace_binop=False, setitem=False,
                    numpy=False, stencil=False, fusion=False)
pjit = functools.partial(numba.njit, cache=True, fastmath=FASTMATH, nogil=True, parallel=_PRANGE_ONLY)
