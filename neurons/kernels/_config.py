"""One place for how every kernel is compiled, and for how parallel kernels split their work.

``jit`` is for kernels, ``pjit`` for the ``prange`` loops that ``_blocks.parallel`` makes: a
kernel that splits its work into one block per thread is a serial body called by address from
such a loop, which compiles in a fraction of the time of the same kernel written with its work
inside the ``prange`` (see ``_blocks.py``). Both cache their machine code on disk (see
``neurons/kernels/__init__.py`` for where, and why the cache folder is keyed by the threading
settings, the package version and the kernels' source), except ``_blocks.py``'s fallback loops,
which close over their body and so cannot be cached.

fastmath: ``reassoc`` (sums may be reordered, e.g. vectorised), ``contract`` (a multiply and an
add may fuse into one FMA, rounded once), ``nsz`` (the sign of a zero result is not kept: ``-0.0``
may come out as ``0.0``) and ``arcp`` (``x / y`` may become ``x * (1 / y)``, which can differ in
the last bit). ``nnan``/``ninf`` are left out on purpose, so that NaN and inf checks inside
kernels keep working; so is ``afn`` (approximate ``exp``, ``tanh``, ...).

error_model "numpy": a float division by zero gives inf or NaN, as in NumPy, instead of a
check that raises ZeroDivisionError. That check keeps LLVM from vectorising any loop that
divides: a serial Adam update over 98,000 floats took 320 us with it. Parallel loop bodies are
compiled this way by Numba already; serial kernels now match them.

``BLOCKS`` and ``span``: the blocks a kernel splits its work into, one per configured thread.
"""
import functools

import numba
from numba.core import config

FASTMATH = {"contract", "reassoc", "nsz", "arcp"}

jit = functools.partial(numba.njit, cache=True, fastmath=FASTMATH, nogil=True, error_model="numpy")
# explicit ``prange`` loops only: array expressions and allocations inside a parallel kernel stay
# serial calls instead of becoming parfors of their own (compiling ``pad`` took 2.1 -> 1.0 s)
_PRANGE_ONLY = dict(prange=True, comprehension=False, reduction=False, inplace_binop=False, setitem=False,
                    numpy=False, stencil=False, fusion=False)
pjit = functools.partial(numba.njit, cache=True, fastmath=FASTMATH, nogil=True, error_model="numpy",
                       parallel=_PRANGE_ONLY)

# One block of work per configured thread where a kernel splits its work into blocks: a
# compile-time constant (the cache folder is keyed by it), so the blocks, the order of any sums
# over them, and so the bits, do not depend on ``set_num_threads`` at run time.
BLOCKS = config.NUMBA_NUM_THREADS


@jit
def span(c, count, size):
    """Block ``c`` of ``count`` over ``size`` items: (lo, hi)."""
    step = (size + count - 1) // count
    return min(size, c * step), min(size, (c + 1) * step)
