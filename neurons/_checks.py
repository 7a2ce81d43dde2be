"""Argument checks shared by the public entry points: each names the argument it refuses.

Everything a user passes is checked here, before any kernel runs, so a mistake is a
``ValueError`` or ``TypeError`` that says what is wrong, never a Numba typing error, a NumPy
message about something the user never called, or a silently wrong answer.
"""
import os
import sys
import warnings

import numpy as np

_PACKAGE = os.path.dirname(os.path.abspath(__file__))


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def positive_int(value, name):
    """``value`` as an int >= 1."""
    if not _is_int(value) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return int(value)


def seed(value, name="seed"):
    """A seed: an int >= 0 (what NumPy's ``default_rng`` takes), as an int."""
    if not _is_int(value) or value < 0:
        raise ValueError(f"{name} must be an int >= 0, got {value!r}")
    return int(value)


def flag(value, name):
    """A bool (or NumPy bool)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, not {value!r}")
    return bool(value)


def positive_number(value, name):
    """A finite real number > 0, as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def numeric(a, name):
    """``a`` as an array of real numbers with a batch axis holding at least one sample."""
    try:
        a = np.asarray(a)
    except Exception as e:  # ragged lists and the like
        raise TypeError(f"{name} must be an array of numbers: {e}") from None
    if a.dtype.kind not in "fiub":
        raise TypeError(f"{name} must hold real numbers, not dtype {a.dtype}")
    if a.ndim == 0:
        raise ValueError(f"{name} must have a batch axis, got a scalar")
    if len(a) == 0:
        raise ValueError(f"{name} is empty (shape {a.shape}): there are no samples")
    return a


def as_dtype(a, dtype, name):
    """``a`` converted to ``dtype`` (C-contiguous); every value must be finite there.

    A float64 value too large for float32 (1e39) becomes inf in the conversion: it is refused
    as not representable, naming its index, like a NaN or inf already in ``a``.
    """
    if a.dtype == dtype and a.flags.c_contiguous:
        out = a
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            out = np.ascontiguousarray(a, dtype=dtype)
    if out.dtype.kind == "f":
        if not all_finite(out):
            where = first_nonfinite(out)
            v = a[where]
            if np.isfinite(v):
                raise ValueError(f"{name} holds {v} at index {where}, which is too large for {np.dtype(dtype).name} "
                                 f"(largest {np.finfo(dtype).max:.4g})")
            raise ValueError(f"{name} holds a non-finite value ({v}) at index {where}")
    return out


def all_finite(a):
    """Whether every element of the float array ``a`` is finite."""
    return bool(np.isfinite(a).all())


def first_nonfinite(a):
    """The index of the first non-finite element of ``a``, as a tuple of ints."""
    return tuple(int(i) for i in np.unravel_index(int(np.argmin(np.isfinite(a))), a.shape))


def warn(message):
    """``warnings.warn`` attributed to the user's line that called into the package (so that
    Python's default filter shows it once per line of theirs)."""
    level, frame = 2, sys._getframe(1)
    while frame is not None and os.path.dirname(os.path.abspath(frame.f_code.co_filename)) == _PACKAGE:
        level, frame = level + 1, frame.f_back
    warnings.warn(message, UserWarning, stacklevel=level)
