"""Transposed convolution ("deconvolution"), batch-first NCHW; kernel (C_in, F, kh, kw) as in
PyTorch's ConvTranspose2d.

It is the input gradient of a convolution whose weight is the same kernel read as
(out=C_in, in=F): so the forward pass is ``conv.scatter``, the input gradient is
``conv.correlate`` and the kernel gradient is ``conv.weight_grad`` with x and dy swapped.
Output ``H' = (H - 1)s - 2p + d(k - 1) + 1 + output_padding``; dilation works.
"""
from .conv import add_bias, channel_sum, correlate, scatter, weight_grad


def deconv_out(size, k, s, p, d, op):
    return (size - 1) * s - 2 * p + d * (k - 1) + 1 + op


def deconv_forward(x, k, b, stride, padding, dilation, output_padding):
    """x (N, C_in, H, W), k (C_in, F, kh, kw), b (F,) or (0,) -> y (N, F, H', W')."""
    oh = deconv_out(x.shape[2], k.shape[2], stride[0], padding[0], dilation[0], output_padding[0])
    ow = deconv_out(x.shape[3], k.shape[3], stride[1], padding[1], dilation[1], output_padding[1])
    y = scatter(x, k, stride, padding, dilation, oh, ow)
    if b.shape[0] > 0:
        add_bias(y, b)
    return y


def deconv_backward(dy, x, k, stride, padding, dilation, output_padding, need_dx, need_db=True):
    """Gradients of ``deconv_forward``: ``(dx, dk, db)``; dx (db) is None unless ``need_dx`` (``need_db``)."""
    dk = weight_grad(x, dy, stride, padding, dilation, k.shape[2], k.shape[3])
    db = channel_sum(dy) if need_db else None
    dx = correlate(dy, k, stride, padding, dilation, x.shape[2], x.shape[3]) if need_dx else None
    return dx, dk, db
