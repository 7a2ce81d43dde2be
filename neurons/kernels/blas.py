"""GEMM straight from the BLAS that NumPy (or SciPy) ships, callable inside kernels.

``gemm(ta, tb, alpha, a, b, beta, c)`` sets ``c = alpha · op(a) @ op(b) + beta · c`` where
``op`` transposes when its flag is true. Operands are 2-D row-major views whose rows are
contiguous (any row stride): a column block ``c[:, lo:hi]`` of a C-contiguous array is a valid
output, so a product can be split over threads without copies, and ``beta = 1`` accumulates.

Why not ``np.dot``: each ``np.dot`` site in a ``prange`` kernel cost seconds of compilation
(the dense split kernel 7 s, the one-pass convolution backward 7 s; this whole module compiles
in under one), it needs contiguous or freshly copied transposes, and it cannot accumulate.
The BLAS routines are reached through symbols registered with LLVM at import, not through
addresses baked into the code, so kernels that call them still go into the on-disk cache. Which
BLAS (NumPy's OpenBLAS, with 64-bit integers, or SciPy's, with 32-bit ones) is chosen at import
by ``kernels._blas_library``, and the cache folder is keyed by the choice.
BLAS threads are the caller's business (see ``neurons/_threads.py``).

Under ``NUMBA_DISABLE_JIT`` the kernels run as Python, where the BLAS cannot be called this way:
``gemm`` is then NumPy's product, with the same checks. As in BLAS, ``beta = 0`` means ``c`` is
not read (it may hold NaN or garbage, as ``np.empty`` gives).
"""
import llvmlite.binding as ll
import numpy as np
from numba import types
from numba.core import cgutils, config
from numba.core.imputils import impl_ret_borrowed
from numba.extending import intrinsic

from . import BLAS
from ._config import jit

_, _s, _d, _WIDE = BLAS
ll.add_symbol("neurons_sgemm", _s)
ll.add_symbol("neurons_dgemm", _d)
_int = np.int64 if _WIDE else np.int32      # the BLAS's integer: a compile-time constant

_ptr = types.voidptr
_signature = types.void(*([_ptr] * 13))      # Fortran: every argument by reference
_sgemm = types.ExternalFunction("neurons_sgemm", _signature)
_dgemm = types.ExternalFunction("neurons_dgemm", _signature)


@intrinsic
def _ref(typingctx, value):
    """A pointer to a copy of ``value`` on the caller's stack: how Fortran takes its arguments
    (no heap arrays for them, which also keeps each GEMM call site quick to compile)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(cgutils.alloca_once_value(builder, args[0]), cgutils.voidptr_t)
    return types.voidptr(value), codegen


@jit
def _ld(a):
    """The leading dimension of a row-major view (its row stride in elements)."""
    if a.size == 0:
        return max(1, a.shape[1])
    if a.shape[1] > 1 and a.strides[1] != a.itemsize:
        raise ValueError("gemm: rows must be contiguous")
    return max(1, a.strides[0] // a.itemsize, a.shape[1])


@jit
def _dims(ta, tb, a, b, c):
    """``(m, n, k)`` of ``c (m, n) = op(a) (m, k) @ op(b) (k, n)``; raises unless they agree."""
    m, n = c.shape
    k = a.shape[0] if ta else a.shape[1]
    if (a.shape[1] if ta else a.shape[0]) != m or (b.shape[0] if tb else b.shape[1]) != n \
            or (b.shape[1] if tb else b.shape[0]) != k or a.itemsize != c.itemsize or b.itemsize != c.itemsize:
        raise ValueError("gemm: operands do not match")
    return m, n, k


@intrinsic
def _any_layout(typingctx, a):
    """``a`` typed as an array of any layout (the same struct: nothing is copied)."""
    def codegen(context, builder, signature, args):
        return impl_ret_borrowed(context, builder, signature.return_type, args[0])
    return a.copy(layout="A")(a), codegen


@jit(inline="always")
def gemm(ta, tb, alpha, a, b, beta, c):
    """``c = alpha · op(a) @ op(b) + beta · c`` (see the module docstring); shapes must agree.

    Inlined into each caller, it only hands ``_gemm`` its operands as plain flags, floats and
    arrays of any layout, so that ``_gemm`` compiles once per dtype: compiled for each caller's
    literal flags and array layouts, it compiled six times for the demo's network (3 s of its
    cold start)."""
    _gemm(ta != 0, tb != 0, np.float64(alpha), _any_layout(a), _any_layout(b), np.float64(beta), _any_layout(c))


@jit
def _gemm(ta, tb, alpha, a, b, beta, c):
    m, n, k = _dims(ta, tb, a, b, c)
    if m == 0 or n == 0:
        return
    # row-major c is column-major c^T = op(b)^T op(a)^T: swap the operands, keep the flags
    args = (_ref(np.uint8(84 if tb else 78)), _ref(np.uint8(84 if ta else 78)),     # 'T' / 'N'
            _ref(_int(n)), _ref(_int(m)), _ref(_int(k)), _ref(c.dtype.type(alpha)),
            b.ctypes, _ref(_int(_ld(b))), a.ctypes, _ref(_int(_ld(a))), _ref(c.dtype.type(beta)),
            c.ctypes, _ref(_int(_ld(c))))
    if c.itemsize == 4:
        _sgemm(*args)
    else:
        _dgemm(*args)


def _gemm_numpy(ta, tb, alpha, a, b, beta, c):
    """``gemm`` in NumPy: what ``gemm`` is under ``NUMBA_DISABLE_JIT``."""
    _dims(ta, tb, a, b, c)
    for x in (a, b, c):
        _ld(x)                                      # rows must be contiguous, as for BLAS
    p = (a.T if ta else a) @ (b.T if tb else b) * c.dtype.type(alpha)
    c[...] = p if beta == 0 else p + c * c.dtype.type(beta)


if config.DISABLE_JIT:
    gemm = _gemm_numpy      # noqa: F811
