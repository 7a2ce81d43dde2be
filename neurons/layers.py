"""Layer specs: frozen dataclasses that hold hyperparameters only.

Each spec normalises its arguments once (an int kernel becomes ``(k, k)``), infers its shapes
from what enters it, initialises its params, and runs its forward pass and exact backward pass
through the kernels in ``neurons/kernels``. Arrays live in ``params``, never in a spec.

Initialisation (seeded): weights uniform in ``(-a, a)``; He ``a = sqrt(6 / fan_in)`` before
relu and leaky_relu, Glorot ``a = sqrt(6 / (fan_in + fan_out))`` otherwise; biases zero.
Convolutions count ``fan = channels · kh · kw``.
"""
from dataclasses import dataclass
import math

import numpy as np

from ._tree import empty
from .activations import Activation, activation as _activation
from .kernels import activations as kact
from .kernels import conv as kconv
from .kernels import deconv as kdeconv
from .kernels import maxpool as kpool
from .kernels import dense as kdense
from .kernels import dropout as kdrop

def _pair(value, name, minimum):
    """``(a, b)`` from an int or a pair of ints, each ``>= minimum``."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (int(value), int(value))
    if (not isinstance(value, (tuple, list)) or len(value) != 2
            or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)):
        raise TypeError(f"{name} must be an int or a pair of ints, not {value!r}")
    value = (int(value[0]), int(value[1]))
    if min(value) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _dropout(value):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"dropout must be a float in [0, 1) or None, not {value!r}")
    value = float(value)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {value}")
    return value or None


def square(shape, what):
    """Image shape ``(C, H, W)`` for what enters an image layer; dense ``(F,)`` becomes ``(1, √F, √F)``."""
    if len(shape) == 3:
        return tuple(shape)
    f = int(np.prod(shape))
    r = math.isqrt(f)
    if r * r != f:
        lo, hi = r * r, (r + 1) * (r + 1)
        raise ValueError(
            f"{what} needs an image, and {f} features from shape {tuple(shape)} are not a perfect "
            f"square; the nearest square sizes are {lo} ({r}x{r}) and {hi} ({r + 1}x{r + 1})")
    return (1, r, r)


def _uniform(rng, shape, fan_in, fan_out, act, dtype):
    if act in (Activation.RELU, Activation.LEAKY_RELU):
        a = math.sqrt(6.0 / fan_in)
    else:
        a = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-a, a, size=shape).astype(dtype)


class _Activated:
    """Shared tail of dense, convolution and deconvolution: activation then dropout."""

    def _finish(self, x, z, train, seed, activate):
        """Activation and dropout after the linear part; returns ``(output, cache)``."""
        n = z.shape[0]
        y = kact.activation_forward(z.reshape(n, -1), self.activation.value).reshape(z.shape) if activate else z
        out, mask = y, None
        if train and self.dropout:
            flat, mask = kdrop.dropout_forward(y.reshape(-1), self.dropout, seed)
            out = flat.reshape(z.shape)
        return out, (x, y, mask)

    def _unfinish(self, dy, cache, activate):
        _, y_act, mask = cache
        if mask is not None:
            dy = kdrop.dropout_backward(dy.reshape(-1), mask).reshape(dy.shape)
        if not activate:
            return dy
        n = dy.shape[0]
        return kact.activation_backward(dy.reshape(n, -1), y_act.reshape(n, -1),
                                        self.activation.value).reshape(dy.shape)

    def _describe_tail(self):
        parts = [str(self.activation)]
        parts.append("bias" if self.bias else "no bias")
        if self.dropout:
            parts.append(f"dropout {self.dropout:g}")
        return ", ".join(parts)


@dataclass(frozen=True)
class Dense(_Activated):
    """``y = act(x @ W.T + b)``; W ``(units, in)``, b ``(units,)``."""
    units: int
    activation: Activation = Activation.LINEAR
    bias: bool = True
    dropout: float | None = None

    def __post_init__(self):
        if isinstance(self.units, bool) or not isinstance(self.units, (int, np.integer)):
            raise TypeError(f"units must be an int, not {self.units!r}")
        if self.units < 1:
            raise ValueError(f"units must be >= 1, got {self.units}")
        object.__setattr__(self, "units", int(self.units))
        object.__setattr__(self, "activation", _activation(self.activation))
        object.__setattr__(self, "bias", bool(self.bias))
        object.__setattr__(self, "dropout", _dropout(self.dropout))

    kind = "dense"

    def shapes(self, prev):
        return (int(np.prod(prev)),), (self.units,)

    def param_shapes(self, in_shape):
        return ((self.units, in_shape[0]), (self.units,)) if self.bias else ((self.units, in_shape[0]),)

    def init(self, in_shape, rng, dtype):
        fan_in = in_shape[0]
        w = _uniform(rng, (self.units, fan_in), fan_in, self.units, self.activation, dtype)
        return (w, np.zeros(self.units, dtype)) if self.bias else (w,)

    def forward(self, params, x, train=False, seed=0, activate=True):
        b = params[1] if self.bias else empty(x.dtype)
        z = kdense.dense_forward(x, params[0], b)
        return self._finish(x, z, train, seed, activate)

    def backward(self, params, cache, dy, need_dx=True, activate=True):
        x = cache[0]
        dz = self._unfinish(dy, cache, activate)
        dx, dw, db = kdense.dense_backward(dz, x, params[0], need_dx)
        return (dx if need_dx else None), ((dw, db) if self.bias else (dw,))

    def describe(self):
        return f"Dense({self.units}, {self._describe_tail()})"


@dataclass(frozen=True)
class _Window(_Activated):
    """What convolution and deconvolution share: the fields and their checks, shapes, init and
    the layer's passes; each gives its kernel layout (``_kernel_shape``), output size (``_out``)
    and kernels (``_z``, ``_grads``)."""
    filters: int
    kernel: tuple = (3, 3)
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)
    dilation: tuple = (1, 1)
    activation: Activation = Activation.LINEAR
    bias: bool = False
    dropout: float | None = None

    def __post_init__(self):
        if isinstance(self.filters, bool) or not isinstance(self.filters, (int, np.integer)):
            raise TypeError(f"filters must be an int, not {self.filters!r}")
        if self.filters < 1:
            raise ValueError(f"filters must be >= 1, got {self.filters}")
        object.__setattr__(self, "filters", int(self.filters))
        object.__setattr__(self, "kernel", _pair(self.kernel, "kernel", 1))
        object.__setattr__(self, "stride", _pair(self.stride, "stride", 1))
        object.__setattr__(self, "padding", _pair(self.padding, "padding", 0))
        object.__setattr__(self, "dilation", _pair(self.dilation, "dilation", 1))
        object.__setattr__(self, "activation", _activation(self.activation))
        object.__setattr__(self, "bias", bool(self.bias))
        object.__setattr__(self, "dropout", _dropout(self.dropout))

    def shapes(self, prev):
        c, h, w = square(prev, f"a {self.kind}")
        oh, ow = self._out(h, w)
        if oh < 1 or ow < 1:
            raise ValueError(
                f"{self.kind} on input {(c, h, w)} with kernel {self.kernel}, stride {self.stride}, "
                f"padding {self.padding}, dilation {self.dilation} gives an empty output {(self.filters, oh, ow)}")
        return (c, h, w), (self.filters, oh, ow)

    def param_shapes(self, in_shape):
        k = self._kernel_shape(in_shape[0])
        return (k, (self.filters,)) if self.bias else (k,)

    def init(self, in_shape, rng, dtype):
        c = in_shape[0]
        kh, kw = self.kernel
        k = _uniform(rng, self._kernel_shape(c), c * kh * kw, self.filters * kh * kw, self.activation, dtype)
        return (k, np.zeros(self.filters, dtype)) if self.bias else (k,)

    _fuses_relu = False         # whether the kernels take the ReLU (see ``Convolution``)

    def _relu_in_kernel(self, activate):
        return activate and self._fuses_relu and self.activation is Activation.RELU

    def forward(self, params, x, train=False, seed=0, activate=True):
        b = params[1] if self.bias else empty(x.dtype)
        fused = self._relu_in_kernel(activate)
        z = self._z(x, params[0], b, fused)
        return self._finish(x, z, train, seed, activate and not fused)

    def backward(self, params, cache, dy, need_dx=True, activate=True):
        x = cache[0]
        fused = self._relu_in_kernel(activate)
        dz = np.ascontiguousarray(self._unfinish(dy, cache, activate and not fused))
        dx, dk, db = self._grads(dz, x, params[0], need_dx, cache[1] if fused else None)
        return (dx if need_dx else None), ((dk, db) if self.bias else (dk,))


@dataclass(frozen=True)
class Convolution(_Window):
    """2-D cross-correlation with zero padding; K ``(filters, channels, kh, kw)``.

    ``H' = floor((H + 2p - d(k-1) - 1) / s) + 1``, the same for W.
    """
    kind = "convolution"
    _fuses_relu = True          # applied while the output is copied out, its gradient on dy's way in

    def _out(self, h, w):
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel, self.stride, self.padding, self.dilation
        return (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1

    def _kernel_shape(self, c):
        return (self.filters, c) + self.kernel

    def _z(self, x, k, b, relu):
        return kconv.conv_forward(x, k, b, self.stride, self.padding, self.dilation, relu)

    def _grads(self, dz, x, k, need_dx, relu_y):
        return kconv.conv_backward(dz, x, k, self.stride, self.padding, self.dilation, need_dx, self.bias, relu_y)

    def describe(self):
        return (f"Convolution({self.filters}, kernel {_fmt(self.kernel)}, stride {_fmt(self.stride)}, "
                f"padding {_fmt(self.padding)}, dilation {_fmt(self.dilation)}, {self._describe_tail()})")


@dataclass(frozen=True)
class Deconvolution(_Window):
    """Transposed convolution; K ``(channels, filters, kh, kw)`` as in PyTorch's ConvTranspose2d.

    ``H' = (H - 1) s - 2p + d(k-1) + 1 + output_padding``, the same for W.
    """
    output_padding: tuple = (0, 0)

    kind = "deconvolution"

    def __post_init__(self):
        super().__post_init__()
        op = _pair(self.output_padding, "output_padding", 0)
        for i, axis in enumerate("hw"):
            if op[i] >= max(self.stride[i], self.dilation[i]):
                raise ValueError(
                    f"output_padding {op} must be smaller than the stride {self.stride} or the "
                    f"dilation {self.dilation} along {axis}")
        object.__setattr__(self, "output_padding", op)

    def _out(self, h, w):
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel, self.stride, self.padding, self.dilation
        return ((h - 1) * sh - 2 * ph + dh * (kh - 1) + 1 + self.output_padding[0],
                (w - 1) * sw - 2 * pw + dw * (kw - 1) + 1 + self.output_padding[1])

    def _kernel_shape(self, c):
        return (c, self.filters) + self.kernel

    def _z(self, x, k, b, relu):
        return kdeconv.deconv_forward(x, k, b, self.stride, self.padding, self.dilation, self.output_padding)

    def _grads(self, dz, x, k, need_dx, relu_y):
        return kdeconv.deconv_backward(dz, x, k, self.stride, self.padding, self.dilation, self.output_padding,
                                       need_dx, self.bias)

    def describe(self):
        extra = f", output padding {_fmt(self.output_padding)}" if any(self.output_padding) else ""
        return (f"Deconvolution({self.filters}, kernel {_fmt(self.kernel)}, stride {_fmt(self.stride)}, "
                f"padding {_fmt(self.padding)}, dilation {_fmt(self.dilation)}{extra}, {self._describe_tail()})")


@dataclass(frozen=True)
class Maxpool:
    """Max over each ``kernel`` window moved by ``stride`` (windows may overlap); no padding.

    ``H' = floor((H - kh) / sh) + 1``. The gradient goes to the first maximum of each window.
    """
    kernel: tuple = (2, 2)
    stride: tuple = (2, 2)

    kind = "maxpool"
    activation = None
    dropout = None
    bias = False

    def __post_init__(self):
        object.__setattr__(self, "kernel", _pair(self.kernel, "kernel", 1))
        object.__setattr__(self, "stride", _pair(self.stride, "stride", 1))

    def shapes(self, prev):
        c, h, w = square(prev, "a maxpool")
        oh = (h - self.kernel[0]) // self.stride[0] + 1
        ow = (w - self.kernel[1]) // self.stride[1] + 1
        if h < self.kernel[0] or w < self.kernel[1]:
            raise ValueError(f"maxpool kernel {self.kernel} is larger than its input {(c, h, w)}")
        return (c, h, w), (c, oh, ow)

    def param_shapes(self, in_shape):
        return ()

    def init(self, in_shape, rng, dtype):
        return ()

    def forward(self, params, x, train=False, seed=0, activate=True):
        y, arg = kpool.maxpool_forward(np.ascontiguousarray(x), self.kernel, self.stride)
        return y, (arg, x.shape[2:])

    def backward(self, params, cache, dy, need_dx=True, activate=True):
        arg, hw = cache
        if not need_dx:
            return None, ()
        return kpool.maxpool_backward(np.ascontiguousarray(dy), arg, hw, self.kernel, self.stride), ()

    def describe(self):
        return f"Maxpool(kernel {_fmt(self.kernel)}, stride {_fmt(self.stride)})"


BLOCK_MODES = ("add", "subtract", "multiply", "mean")


@dataclass(frozen=True)
class Feedback:
    """A weight-tied block: ``layers`` applied ``loops`` times with one set of weights.

    With block input ``x``: ``z1 = L(x)``, ``zr = L(acc(z[r-1], x) if inskips else z[r-1])``;
    the output is ``zm``, or ``acc(zm, z1, ..., z[m-1])`` with ``outskips``. ``coupling="mean"``
    divides the tied weights' summed gradient by ``loops``.
    """
    layers: tuple
    loops: int
    inskips: bool = False
    outskips: bool = False
    accumulation: str = "mean"
    coupling: str = "sum"

    kind = "feedback"
    activation = None
    dropout = None
    bias = False

    def __post_init__(self):
        layers = tuple(self.layers) if isinstance(self.layers, (list, tuple)) else (self.layers,)
        if not layers:
            raise ValueError("a feedback block needs at least one layer")
        for lay in layers:
            if isinstance(lay, Feedback):
                raise ValueError("feedback blocks cannot be nested: a block's layers must be "
                                 "Dense, Convolution, Deconvolution or Maxpool")
            if not isinstance(lay, (Dense, Convolution, Deconvolution, Maxpool)):
                raise TypeError(f"a feedback block's layers must be neurons.layers.Dense, Convolution, "
                                f"Deconvolution or Maxpool specs, not {lay!r}")
        object.__setattr__(self, "layers", layers)
        if isinstance(self.loops, bool) or not isinstance(self.loops, (int, np.integer)) or self.loops < 1:
            raise ValueError(f"loops must be an int >= 1, got {self.loops!r}")
        object.__setattr__(self, "loops", int(self.loops))
        acc = str(self.accumulation).lower()
        if acc not in BLOCK_MODES:
            raise ValueError(f"feedback accumulation must be one of {', '.join(BLOCK_MODES)}, got {self.accumulation!r}")
        object.__setattr__(self, "accumulation", acc)
        if self.coupling not in ("sum", "mean"):
            raise ValueError(f"coupling must be 'sum' or 'mean', got {self.coupling!r}")
        object.__setattr__(self, "inskips", bool(self.inskips))
        object.__setattr__(self, "outskips", bool(self.outskips))

    def inside(self, prev):
        """``(in_shape, out_shape)`` of each of the block's layers, for a block input ``prev``."""
        inside, cur = [], tuple(prev)
        for j, lay in enumerate(self.layers):
            try:
                i_s, o_s = lay.shapes(cur)
            except ValueError as e:
                raise ValueError(f"feedback block layer {j}: {e}") from None
            inside.append((i_s, o_s))
            cur = o_s
        if int(np.prod(cur)) != int(np.prod(prev)):
            raise ValueError(
                f"a feedback block must give back what it takes: its input is {tuple(prev)} but its "
                f"last layer gives {cur} ({int(np.prod(prev))} vs {int(np.prod(cur))} elements)")
        return tuple(inside)

    def shapes(self, prev):
        self.inside(prev)
        return tuple(prev), tuple(prev)

    def param_shapes(self, in_shape):
        return tuple(lay.param_shapes(s[0]) for lay, s in zip(self.layers, self.inside(in_shape)))

    def init(self, in_shape, rng, dtype):
        return tuple(lay.init(s[0], rng, dtype) for lay, s in zip(self.layers, self.inside(in_shape)))

    def describe(self):
        opts = [f"loops {self.loops}", f"accumulation {self.accumulation}"]
        if self.inskips:
            opts.append("inskips")
        if self.outskips:
            opts.append("outskips")
        if self.coupling != "sum":
            opts.append(f"coupling {self.coupling}")
        return f"Feedback({', '.join(opts)})"


def _fmt(pair):
    return f"{pair[0]}x{pair[1]}"
