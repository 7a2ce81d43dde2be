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
from .graph import BLOCK_MODES
from .activations import Activation, activation as _activation
from .kernels import activations as kact
from .kernels import batchnorm as kbn
from .kernels import conv as kconv
from .kernels import deconv as kdeconv
from .kernels import maxpool as kpool
from .kernels import dense as kdense
from .kernels import dropout as kdrop
from .kernels import recurrent as krec

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
    if len(shape) == 2:
        raise ValueError(
            f"{what} needs an image (channels, height, width), and {tuple(shape)} is a sequence (steps, "
            f"features): image layers do not take sequences (a dense layer first flattens it)")
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


def _count(value, name):
    """``value`` as an int >= 1 (units, filters): a TypeError for anything but an int, a
    ValueError below 1."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, not {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


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
        object.__setattr__(self, "units", _count(self.units, "units"))
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
        object.__setattr__(self, "filters", _count(self.filters, "filters"))
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

    def forward_zeros(self, params, x):
        """``forward(params, x, True)``'s output and cache in zeros, without running it (the cold-start
        helper's, ``_warm.py``), or None with dropout (its mask comes from the forward)."""
        if self.dropout:
            return None
        y = np.zeros((len(x),) + self.shapes(x.shape[1:])[1], x.dtype)
        return y, (x, y, None)

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


@dataclass(frozen=True)
class BatchNorm:
    """Batch normalization, as ``torch.nn.BatchNorm1d`` (after a dense layer: each feature over
    the batch) and ``BatchNorm2d`` (after an image layer: each channel over ``(N, H, W)``):
    ``y = (x - mean) / sqrt(var + eps) · gamma + beta``.

    Params ``(gamma, beta)``, each ``(C,)``, initialised 1 and 0. Running state
    ``(running_mean, running_var)``, each ``(C,)``, initialised 0 and 1. Training normalises with
    the batch's mean and biased variance and updates the state to
    ``(1 - momentum)·old + momentum·batch`` (the unbiased variance, ``m/(m-1)`` times the biased,
    over the ``m`` values of a channel); inference normalises with the running state. A layer
    applied several times in one pass (in a feedback block or a loop) updates its one state
    once per application, in order, as one PyTorch module called that many times does.
    """
    momentum: float = 0.1
    eps: float = 1e-5

    kind = "batchnorm"
    activation = None
    dropout = None
    bias = False

    def __post_init__(self):
        for name in ("momentum", "eps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not np.isfinite(v):
                raise TypeError(f"{name} must be a finite number, not {v!r}")
            object.__setattr__(self, name, float(v))
        if not 0.0 <= self.momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {self.momentum}")
        if not self.eps > 0.0:
            raise ValueError(f"eps must be > 0, got {self.eps}")

    def shapes(self, prev):
        if len(prev) not in (1, 3):
            raise ValueError(f"batchnorm takes dense (features,) or image (channels, height, width) input, "
                             f"not {tuple(prev)}")
        return tuple(prev), tuple(prev)

    def param_shapes(self, in_shape):
        return ((in_shape[0],), (in_shape[0],))

    def state_shapes(self, in_shape):
        return ((in_shape[0],), (in_shape[0],))

    def init(self, in_shape, rng, dtype):
        return np.ones(in_shape[0], dtype), np.zeros(in_shape[0], dtype)

    def init_state(self, in_shape, dtype):
        return np.zeros(in_shape[0], dtype), np.ones(in_shape[0], dtype)

    def values(self, in_shape):
        """How many values each channel is normalised over, per sample."""
        return int(np.prod(in_shape[1:], dtype=np.int64))

    def forward(self, params, x, train=False, seed=0, activate=True):
        """With the initial running state (0 and 1); ``forward_state`` is the pass the network runs."""
        return self.forward_state(params, self.init_state(x.shape[1:], x.dtype), x, train)[:2]

    def forward_state(self, params, state, x, train):
        """``(y, cache, new_state)``: the state is updated in training, handed back as is otherwise."""
        n, c = x.shape[0], x.shape[1]
        x3 = np.ascontiguousarray(x).reshape(n, c, -1)
        gamma, beta = params
        if train:
            if n * x3.shape[2] < 2:
                raise ValueError(f"batchnorm in training needs more than one value per channel, got "
                                 f"{n * x3.shape[2]} (a batch of {n} of shape {x.shape[1:]})")
            # the kernel updates the state too (a value float32 cannot hold becomes inf, which
            # ``learn`` stops at)
            y, mean, var, *state = kbn.batchnorm_forward_train(x3, gamma, beta, self.eps, self.momentum, *state)
            state = tuple(state)
        else:
            mean, var = state[0].astype(np.float64), state[1].astype(np.float64)
            y = kbn.batchnorm_forward_eval(x3, gamma, beta, mean, var, self.eps)
        return y.reshape(x.shape), (x3, mean, var, train), state

    def backward(self, params, cache, dy, need_dx=True, activate=True):
        x3, mean, var, train = cache
        dx, dgamma, dbeta = kbn.batchnorm_backward(np.ascontiguousarray(dy).reshape(x3.shape), x3, params[0],
                                                   mean, var, self.eps, train, need_dx)
        return (dx.reshape(dy.shape) if need_dx else None), (dgamma, dbeta)

    def describe(self):
        return f"BatchNorm(momentum {self.momentum:g}, eps {self.eps:g})"


def init_state(spec, in_shape, dtype):
    """The running state of layer ``spec`` for its input shape: ``()`` for a layer without one."""
    make = getattr(spec, "init_state", None)
    return make(in_shape, dtype) if make is not None else ()


def state_shapes(spec, in_shape):
    """The shapes of ``init_state(spec, in_shape, ...)``."""
    shapes = getattr(spec, "state_shapes", None)
    return shapes(in_shape) if shapes is not None else ()


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
                                 "Dense, Convolution, Deconvolution, Maxpool, BatchNorm or Recurrent")
            if not isinstance(lay, (Dense, Convolution, Deconvolution, Maxpool, BatchNorm, Recurrent)):
                raise TypeError(f"a feedback block's layers must be neurons.layers.Dense, Convolution, "
                                f"Deconvolution, Maxpool, BatchNorm or Recurrent specs, not {lay!r}")
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
        problem = reshape_problem(cur, prev)
        if problem:
            raise ValueError(f"a feedback block must give back what it takes: its last layer gives {cur} for its "
                             f"input {tuple(prev)}: {problem}")
        return tuple(inside)

    def shapes(self, prev):
        self.inside(prev)
        return tuple(prev), tuple(prev)

    def param_shapes(self, in_shape):
        return tuple(lay.param_shapes(s[0]) for lay, s in zip(self.layers, self.inside(in_shape)))

    def init(self, in_shape, rng, dtype):
        return tuple(lay.init(s[0], rng, dtype) for lay, s in zip(self.layers, self.inside(in_shape)))

    def state_shapes(self, in_shape):
        """One running-state entry per layer of the block, once (as the params), whatever ``loops``."""
        return tuple(state_shapes(lay, s[0]) for lay, s in zip(self.layers, self.inside(in_shape)))

    def init_state(self, in_shape, dtype):
        return tuple(init_state(lay, s[0], dtype) for lay, s in zip(self.layers, self.inside(in_shape)))

    def describe(self):
        opts = [f"loops {self.loops}", f"accumulation {self.accumulation}"]
        if self.inskips:
            opts.append("inskips")
        if self.outskips:
            opts.append("outskips")
        if self.coupling != "sum":
            opts.append(f"coupling {self.coupling}")
        return f"Feedback({', '.join(opts)})"


CELLS = {"rnn": krec.RNN, "lstm": krec.LSTM, "gru": krec.GRU}


@dataclass(frozen=True)
class Recurrent:
    """A recurrent layer over sequences ``(N, T, F)``, as ``torch.nn.RNN`` (tanh), ``LSTM`` or
    ``GRU`` with one layer, ``batch_first=True`` and a zero initial state (equations in
    ``neurons/kernels/recurrent.py``).

    Params ``(W_ih, W_hh)`` or ``(W_ih, W_hh, b_ih, b_hh)``: W_ih ``(G·units, F)``, W_hh
    ``(G·units, units)``, biases ``(G·units,)``, with G = 1 (rnn), 4 (lstm: gates i, f, g, o) or 3
    (gru: r, z, n), all uniform in ``(-1/√units, 1/√units)`` as PyTorch's. Output
    ``(T, units)`` per sample with ``return_sequences``, else the last step's ``(units,)``.
    """
    units: int
    cell: str = "lstm"
    return_sequences: bool = False
    bias: bool = True

    kind = "recurrent"
    activation = None
    dropout = None

    def __post_init__(self):
        object.__setattr__(self, "units", _count(self.units, "units"))
        if not isinstance(self.cell, str):
            raise TypeError(f"cell must be 'rnn', 'lstm' or 'gru', not {self.cell!r}")
        cell = self.cell.lower()
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(map(repr, CELLS))}, got {self.cell!r}")
        object.__setattr__(self, "cell", cell)
        object.__setattr__(self, "return_sequences", bool(self.return_sequences))
        object.__setattr__(self, "bias", bool(self.bias))

    @property
    def gates(self):
        return krec.GATES[CELLS[self.cell]]

    def shapes(self, prev):
        if len(prev) != 2:
            kind = "an image" if len(prev) == 3 else "a flat vector"
            raise ValueError(f"a recurrent layer needs a sequence (steps, features), and {tuple(prev)} is {kind}; "
                             f"give the network input_shape (steps, features) and x of shape (N, steps, features)")
        steps = prev[0]
        return tuple(prev), ((steps, self.units) if self.return_sequences else (self.units,))

    def param_shapes(self, in_shape):
        rows = self.gates * self.units
        w = ((rows, in_shape[1]), (rows, self.units))
        return w + ((rows,), (rows,)) if self.bias else w

    def init(self, in_shape, rng, dtype):
        a = 1.0 / math.sqrt(self.units)
        return tuple(rng.uniform(-a, a, size=s).astype(dtype) for s in self.param_shapes(in_shape))

    def _biases(self, params, dtype):
        return (params[2], params[3]) if self.bias else (empty(dtype), empty(dtype))

    def forward(self, params, x, train=False, seed=0, activate=True):
        b_ih, b_hh = self._biases(params, x.dtype)
        y, cache = krec.recurrent_forward(x, params[0], params[1], b_ih, b_hh, CELLS[self.cell],
                                          self.return_sequences, train)
        # inference keeps nothing for a backward pass (a faster forward, the same bits), so its
        # cache is just ``x``: a backward pass from it runs the training forward first
        return y, (cache if train else x)

    def forward_zeros(self, params, x):
        """``forward(params, x, True)``'s output and cache in zeros, without running it (see
        ``kernels.recurrent.recurrent_zeros``)."""
        return krec.recurrent_zeros(x, params[1], CELLS[self.cell], self.return_sequences)

    def backward(self, params, cache, dy, need_dx=True, activate=True):
        if isinstance(cache, np.ndarray):           # from an inference forward (see ``forward``)
            cache = self.forward(params, cache, True)[1]
        dx, dw_ih, dw_hh, db_ih, db_hh = krec.recurrent_backward(dy, cache, params[0], params[1],
                                                                 CELLS[self.cell], need_dx, self.bias)
        return dx, ((dw_ih, dw_hh, db_ih, db_hh) if self.bias else (dw_ih, dw_hh))

    def describe(self):
        out = "sequence" if self.return_sequences else "last step"
        return f"Recurrent({self.units}, {self.cell}, {out}, {'bias' if self.bias else 'no bias'})"


def reshape_problem(src, dst):
    """Why a value of per-sample shape ``src`` cannot take the place of one shaped ``dst`` (a
    skip's source, a loop's output fed back, a block's output), or None when it can.

    The element counts must agree (the value is then reshaped row-major). A sequence (steps,
    features) goes only where the same sequence shape or a flat vector of its size is taken (a
    dense layer flattens a sequence row-major, so flat and sequence read the same order), never
    where another sequence shape or an image is: that would cut its steps apart."""
    src, dst = tuple(src), tuple(dst)
    if int(np.prod(src)) != int(np.prod(dst)):
        return f"{src} has {int(np.prod(src))} elements and {dst} has {int(np.prod(dst))}"
    if src != dst and (len(src) == 2 or len(dst) == 2) and 1 not in (len(src), len(dst)):
        what = "another sequence" if len(src) == len(dst) else "an image"
        return (f"{src} and {dst} hold as many elements, but one is a sequence (steps, features) and the other "
                f"{what}: a sequence only meets the same sequence shape or a flat vector")
    return None


def _fmt(pair):
    return f"{pair[0]}x{pair[1]}"
