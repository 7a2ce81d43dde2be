"""Dense layer: ``z = x @ W.T + b``.

The products are BLAS calls; the caller keeps BLAS to one thread while kernels run (see
``neurons/_threads.py``), so these never oversubscribe the cores together with Numba's pool.
"""
import numpy as np

from ._config import jit


@jit
def dense_forward(x, w, b):
    """x (N, in), w (units, in), b (units,) or (0,) for no bias -> z (N, units)."""
    z = np.dot(x, w.T)
    if b.shape[0] > 0:
        n, u = z.shape
        for i in range(n):
            for j in range(u):
                z[i, j] += b[j]
    return z


@jit
def dense_backward(dz, x, w, need_dx):
    """Gradients of ``z = x @ W.T + b`` given ``dz`` (N, units).

    Returns ``(dx, dw, db)``: dx (N, in) (empty when ``need_dx`` is False), dw (units, in),
    db (units,).
    """
    dw = np.dot(dz.T, x)
    db = np.zeros(dz.shape[1], dz.dtype)
    for i in range(dz.shape[0]):
        for j in range(dz.shape[1]):
            db[j] += dz[i, j]
    if need_dx:
        dx = np.dot(dz, w)
    else:
        dx = np.empty((0, 0), dz.dtype)
    return dx, dw, db
