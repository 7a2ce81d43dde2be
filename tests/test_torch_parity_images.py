"""Image kernels against PyTorch's conv2d, conv_transpose2d and max_pool2d in float64: forward
and every gradient, for every stride/padding/dilation combination (skipped without torch)."""
import itertools

import numpy as np
import pytest

from neurons.kernels import conv as kc
from neurons.kernels import deconv as kd
from neurons.kernels import maxpool as kp

torch = pytest.importorskip("torch")
F = torch.nn.functional

OPTIONS = list(itertools.product([1, 2, 3], [0, 1, 2], [1, 2]))


def _t(a):
    return torch.tensor(a, requires_grad=True)


@pytest.mark.parametrize("channels", [(2, 3), (16, 12)], ids=["direct", "gemm"])
@pytest.mark.parametrize("s, p, d", OPTIONS)
def test_conv2d(s, p, d, channels):
    c, f = channels
    rng = np.random.default_rng(0)
    x, k, b = rng.normal(size=(3, c, 9, 8)), rng.normal(size=(f, c, 3, 2)), rng.normal(size=f)
    tx, tk, tb = _t(x), _t(k), _t(b)
    ty = F.conv2d(tx, tk, tb, stride=s, padding=p, dilation=d)
    if ty.numel() == 0:
        pytest.skip("empty output")
    dy = rng.normal(size=ty.shape)
    ty.backward(torch.tensor(dy))
    y = kc.conv_forward(x, k, b, (s, s), (p, p), (d, d))
    dx, dk, db = kc.conv_backward(dy, x, k, (s, s), (p, p), (d, d), True)
    for mine, theirs in ((y, ty.detach()), (dx, tx.grad), (dk, tk.grad), (db, tb.grad)):
        np.testing.assert_allclose(mine, theirs.numpy(), rtol=1e-10, atol=1e-11)


@pytest.mark.parametrize("s, p, d", OPTIONS)
def test_conv_transpose2d(s, p, d):
    rng = np.random.default_rng(1)
    x, k, b = rng.normal(size=(3, 4, 5, 4)), rng.normal(size=(4, 2, 3, 2)), rng.normal(size=2)
    for op in sorted({0, max(s, d) - 1}):
        tx, tk, tb = _t(x), _t(k), _t(b)
        try:
            ty = F.conv_transpose2d(tx, tk, tb, stride=s, padding=p, output_padding=op, dilation=d)
        except RuntimeError:
            continue                     # torch refuses this combination (empty output)
        dy = rng.normal(size=ty.shape)
        ty.backward(torch.tensor(dy))
        args = ((s, s), (p, p), (d, d), (op, op))
        y = kd.deconv_forward(x, k, b, *args)
        dx, dk, db = kd.deconv_backward(dy, x, k, *args, True)
        for mine, theirs in ((y, ty.detach()), (dx, tx.grad), (dk, tk.grad), (db, tb.grad)):
            np.testing.assert_allclose(mine, theirs.numpy(), rtol=1e-10, atol=1e-11, err_msg=f"op={op}")


@pytest.mark.parametrize("kernel, stride", [(2, 2), (3, 1), (3, 2), ((2, 3), (1, 2)), (4, 3)])
def test_max_pool2d(kernel, stride):
    x = np.random.default_rng(2).normal(size=(3, 2, 9, 8))
    tx = _t(x)
    ty = F.max_pool2d(tx, kernel, stride)
    dy = np.random.default_rng(3).normal(size=ty.shape)
    ty.backward(torch.tensor(dy))
    pair = lambda v: v if isinstance(v, tuple) else (v, v)  # noqa: E731
    y, arg = kp.maxpool_forward(x, pair(kernel), pair(stride))
    dx = kp.maxpool_backward(dy, arg, (9, 8))
    np.testing.assert_array_equal(y, ty.detach().numpy())
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-12, atol=1e-14)
