"""The immutable ``Network`` builder and its functional API.

Every builder method returns a new ``Network``; shapes are inferred and checked when a layer or
connection is added, so an invalid graph fails at build time, naming indices and shapes.
"""
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, NamedTuple

import numpy as np

from . import _checks, _fused, _tree, graph
from ._threads import running
from .activations import Activation
from .layers import BatchNorm, Convolution, Deconvolution, Dense, Feedback, Maxpool
from .layers import init_state as _init_state, state_shapes as _state_shapes
from .layers import Recurrent, reshape_problem as _reshape_problem
from .objectives import Objective, objective as _objective
from .kernels import objectives as kobj


class Skip(NamedTuple):
    """``connect(infrom, into)``: the input of ``into`` accumulates the input of ``infrom``."""
    infrom: int
    into: int


class Loopback(NamedTuple):
    """Layers ``into..outof`` run ``iterations + 1`` times with one set of weights."""
    outof: int
    into: int
    iterations: int
    scale: Any = None
    inskips: bool = False

    def factor(self):
        """The weight-gradient multiplier ``scale(passes)`` (1 when no scale is set)."""
        if self.scale is None:
            return 1.0
        return float(self.scale(self.iterations + 1)) if callable(self.scale) else float(self.scale)


# objectives that take probabilities, and the output activations that give them
_PROBABILITIES = {Objective.CROSS_ENTROPY: (Activation.SOFTMAX, Activation.SIGMOID),
                  Objective.BINARY_CROSS_ENTROPY: (Activation.SIGMOID, Activation.SOFTMAX),
                  Objective.KL_DIVERGENCE: (Activation.SOFTMAX, Activation.SIGMOID)}


def _default_optimizer():
    from .optimizers import SGD
    return SGD(lr=0.01)


def _as_int(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, not {value!r}")
    return int(value)


@dataclass(frozen=True)
class Network:
    """A network description: layers, connections, optimizer and objective. Never changes.

    >>> net = (Network((4,)).dense(8, "relu").dense(3, "softmax")
    ...        .set_objective("cross_entropy"))
    """
    input_shape: tuple
    dtype: str = "float32"
    layers: tuple = field(default=(), kw_only=True)
    shapes: tuple = field(default=(), kw_only=True, repr=False)
    skips: tuple = field(default=(), kw_only=True)
    loops: tuple = field(default=(), kw_only=True)
    optimizer: Any = field(default_factory=_default_optimizer, kw_only=True)
    objective: Objective = field(default=Objective.MSE, kw_only=True)
    clip: tuple | None = field(default=None, kw_only=True)
    skip_accumulation: str = field(default="add", kw_only=True)
    loop_accumulation: str = field(default="mean", kw_only=True)

    def __post_init__(self):
        shape = self.input_shape
        if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
            shape = (int(shape),)
        if (not isinstance(shape, (tuple, list)) or len(shape) not in (1, 2, 3)
                or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 1 for s in shape)):
            raise ValueError(f"input_shape must be (features,), (steps, features) or (channels, height, width) of "
                             f"positive ints, got {self.input_shape!r}")
        object.__setattr__(self, "input_shape", tuple(int(s) for s in shape))
        try:
            dt = np.dtype(self.dtype)
        except TypeError:
            raise TypeError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}") from None
        if dt not in (np.float32, np.float64):
            raise TypeError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        object.__setattr__(self, "dtype", dt.name)

    # ------------------------------------------------------------------ building

    @property
    def output_shape(self):
        return self.shapes[-1][1] if self.shapes else self.input_shape

    def _add(self, spec):
        prev = self.output_shape
        try:
            shapes = spec.shapes(prev)
        except ValueError as e:
            raise ValueError(f"layer {len(self.layers)} ({spec.kind}) after shape {prev}: {e}") from None
        return replace(self, layers=self.layers + (spec,), shapes=self.shapes + (shapes,))

    def dense(self, units, activation="linear", bias=True, dropout=None):
        """Add ``Dense(units)``; image input is flattened."""
        return self._add(Dense(units, activation, bias, dropout))

    def convolution(self, filters, kernel=(3, 3), stride=(1, 1), padding=(0, 0), dilation=(1, 1),
                    activation="linear", bias=False, dropout=None):
        """Add a 2-D convolution; dense input of a square size is reshaped to ``(1, √F, √F)``."""
        return self._add(Convolution(filters, kernel, stride, padding, dilation, activation, bias, dropout))

    def deconvolution(self, filters, kernel=(3, 3), stride=(1, 1), padding=(0, 0), dilation=(1, 1),
                      activation="linear", bias=False, dropout=None, output_padding=(0, 0)):
        """Add a transposed convolution (kernel layout ``(channels, filters, kh, kw)``)."""
        return self._add(Deconvolution(filters, kernel, stride, padding, dilation, activation, bias,
                                       dropout, output_padding))

    def maxpool(self, kernel=(2, 2), stride=(2, 2)):
        """Add max-pooling."""
        return self._add(Maxpool(kernel, stride))

    def batchnorm(self, momentum=0.1, eps=1e-5):
        """Add batch normalization: each feature of dense input, each channel of an image, over the
        batch (``neurons.layers.BatchNorm``; its running statistics live in ``init_state()``)."""
        return self._add(BatchNorm(momentum, eps))

    def recurrent(self, units, cell="lstm", return_sequences=False, bias=True):
        """Add a recurrent layer (``"rnn"``, ``"lstm"`` or ``"gru"``, as PyTorch's) over sequence input
        ``(steps, features)``; it gives every step's output ``(steps, units)`` with
        ``return_sequences``, else the last step's ``(units,)``."""
        return self._add(Recurrent(units, cell, return_sequences, bias))

    def feedback(self, layers, loops, inskips=False, outskips=False, accumulation="mean", coupling="sum"):
        """Add a weight-tied feedback block of ``neurons.layers`` specs, applied ``loops`` times."""
        return self._add(Feedback(layers, loops, inskips, outskips, accumulation, coupling))

    def _check_index(self, value, name):
        value = _as_int(value, name)
        if not 0 <= value < len(self.layers):
            raise ValueError(f"{name}={value} is out of range: the network has layers 0..{len(self.layers) - 1}")
        return value

    def _loop_of(self, i):
        return next((lp for lp in self.loops if lp.into <= i <= lp.outof), None)

    def connect(self, infrom, into):
        """Skip connection: the input of layer ``into`` accumulates the input of layer ``infrom``."""
        infrom, into = self._check_index(infrom, "infrom"), self._check_index(into, "into")
        if infrom >= into:
            raise ValueError(f"connect(infrom={infrom}, into={into}): infrom must come before into")
        if any(s.into == into for s in self.skips):
            other = next(s for s in self.skips if s.into == into)
            raise ValueError(f"layer {into} already receives a skip connection (from layer {other.infrom})")
        a, b = self.shapes[infrom][0], self.shapes[into][0]
        if int(np.prod(a)) != int(np.prod(b)):
            raise ValueError(f"connect(infrom={infrom}, into={into}): the input of layer {infrom} has shape {a} "
                             f"({int(np.prod(a))} elements) but the input of layer {into} has shape {b} "
                             f"({int(np.prod(b))} elements)")
        problem = _reshape_problem(a, b)
        if problem:
            raise ValueError(f"connect(infrom={infrom}, into={into}): the input of layer {infrom} cannot join the "
                             f"input of layer {into}: {problem}")
        return replace(self, skips=self.skips + (Skip(infrom, into),))

    def loopback(self, outof, into, iterations, scale=None, inskips=False):
        """Feed the output of layer ``outof`` back into layer ``into`` ``iterations`` times."""
        outof, into = self._check_index(outof, "outof"), self._check_index(into, "into")
        iterations = _as_int(iterations, "iterations")
        if iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {iterations}")
        if outof < into:
            raise ValueError(f"loopback(outof={outof}, into={into}): outof must not come before into")
        for i in range(into, outof + 1):
            if self.layers[i].kind == "feedback":
                raise ValueError(f"loopback(outof={outof}, into={into}) would span the feedback block at layer {i}")
            lp = self._loop_of(i)
            if lp is not None:
                raise ValueError(f"layer {i} is already in the loop (outof={lp.outof}, into={lp.into})")
        a, b = self.shapes[outof][1], self.shapes[into][0]
        if int(np.prod(a)) != int(np.prod(b)):
            raise ValueError(f"loopback(outof={outof}, into={into}): layer {outof} gives {a} "
                             f"({int(np.prod(a))} elements) but layer {into} takes {b} ({int(np.prod(b))} elements)")
        problem = _reshape_problem(a, b)
        if problem:
            raise ValueError(f"loopback(outof={outof}, into={into}): what layer {outof} gives cannot be fed back "
                             f"into layer {into}: {problem}")
        if scale is not None and not callable(scale):
            if isinstance(scale, bool) or not isinstance(scale, (int, float, np.floating, np.integer)) \
                    or not np.isfinite(scale):
                raise TypeError(f"scale must be None, a finite number or a function of the passes, not {scale!r}")
            scale = float(scale)
        loops = tuple(sorted(self.loops + (Loopback(outof, into, iterations, scale, bool(inskips)),),
                             key=lambda lp: lp.into))
        return replace(self, loops=loops)

    def set_accumulation(self, skip="add", loop="mean"):
        """How skips (add, subtract, multiply, overwrite, mean) and loops (the same) combine."""
        skip, loop = str(skip).lower(), str(loop).lower()
        if skip not in graph.SKIP_MODES:
            raise ValueError(f"skip accumulation must be one of {', '.join(graph.SKIP_MODES)}, got {skip!r}")
        if loop not in graph.LOOP_MODES:
            raise ValueError(f"loop accumulation must be one of {', '.join(graph.LOOP_MODES)}, got {loop!r}")
        return replace(self, skip_accumulation=skip, loop_accumulation=loop)

    def set_optimizer(self, optimizer):
        """Use ``optimizer`` (e.g. ``neurons.optimizers.Adam(lr=1e-3)``) in ``learn``."""
        if not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
            raise TypeError(f"optimizer must be one of neurons.optimizers (with init and update), not {optimizer!r}")
        return replace(self, optimizer=optimizer)

    def set_objective(self, name, clip=None):
        """Use objective ``name``; ``clip=(lo, hi)`` clamps each per-sample loss gradient element."""
        obj = _objective(name)
        if clip is not None:
            if not isinstance(clip, (tuple, list)) or len(clip) != 2:
                raise TypeError(f"clip must be None or a pair (lo, hi), not {clip!r}")
            lo, hi = float(clip[0]), float(clip[1])
            if not (np.isfinite(lo) and np.isfinite(hi)) or lo > hi:
                raise ValueError(f"clip must be finite with lo <= hi, got {clip!r}")
            clip = (lo, hi)
        return replace(self, objective=obj, clip=clip)

    def probe(self, skips=False, loops=False, feedback=False):
        """The same network with its skips, loops and/or feedback switched off (``True`` = keep).

        The params (and running state) of the trained network fit it unchanged: a block runs once,
        a loop not at all.
        """
        net = self
        if not skips:
            net = replace(net, skips=())
        if not loops:
            net = replace(net, loops=())
        if not feedback:
            net = replace(net, layers=tuple(replace(lay, loops=1) if lay.kind == "feedback" else lay
                                            for lay in net.layers))
        return net

    # ------------------------------------------------------------------ structure

    @cached_property
    def program(self):
        if not self.layers:
            raise ValueError("the network has no layers; add some with dense(), convolution(), ...")
        return graph.compile_program(
            self.layers, self.shapes, {s.into: s.infrom for s in self.skips},
            {lp.into: (lp.outof, lp.iterations, lp.inskips) for lp in self.loops},
            self.skip_accumulation, self.loop_accumulation)

    @cached_property
    def _fused(self):
        """softmax + cross-entropy computed together from the logits (stable, exact gradient)."""
        ops = self.program.ops
        last = ops[-1]
        if self.objective is not Objective.CROSS_ENTROPY or self.clip is not None:
            return False
        if not isinstance(last, graph.Apply) or last.dst != self.program.output:
            return False
        spec = graph._spec(self.layers, last)
        return spec.activation is Activation.SOFTMAX and not spec.dropout

    @cached_property
    def _grad_factors(self):
        """Per-layer multipliers of the param gradients: loop ``scale`` and block coupling."""
        factors = [1.0] * len(self.layers)
        for lp in self.loops:
            for i in range(lp.into, lp.outof + 1):
                factors[i] *= lp.factor()
        for i, lay in enumerate(self.layers):
            if lay.kind == "feedback" and lay.coupling == "mean":
                factors[i] /= lay.loops
        return tuple(factors)

    @property
    def parameters(self):
        """The number of trainable scalars (tied weights counted once)."""
        return sum(a.size for a in _tree.leaves(self._param_shapes))

    @cached_property
    def _param_shapes(self):
        """Zero-strided stand-ins with each param's shape (no memory held, nothing allocated)."""
        return tuple(_shapes_only(lay.param_shapes(shape[0])) for lay, shape in zip(self.layers, self.shapes))

    @cached_property
    def _state_shapes(self):
        """Stand-ins shaped like ``init_state()``, as ``_param_shapes``."""
        return tuple(_shapes_only(_state_shapes(lay, shape[0])) for lay, shape in zip(self.layers, self.shapes))

    @cached_property
    def _no_state(self):
        """``init_state()`` of a network without running state (it holds no arrays: shared)."""
        return self.init_state()

    @cached_property
    def _state_keys(self):
        """``{(layer, sub): values per channel and sample}`` for each batch-normalization layer
        (``sub`` its place in a feedback block, else -1); empty when the network has none."""
        keys = {}
        for i, (lay, shape) in enumerate(zip(self.layers, self.shapes)):
            subs = zip(lay.layers, lay.inside(shape[0])) if lay.kind == "feedback" else ()
            for j, (sub, (s, _)) in enumerate(subs):
                if isinstance(sub, BatchNorm):
                    keys[(i, j)] = sub.values(s)
            if isinstance(lay, BatchNorm):
                keys[(i, -1)] = lay.values(shape[0])
        return keys

    def _stats(self, state):
        """The ``running`` dict of ``graph.run_forward`` from a state (None: the initial one); None
        when the network has no running state."""
        keys = self._state_keys
        if not keys:
            return None
        if state is None:
            state = self.init_state()
        return {(i, j): state[i] if j < 0 else state[i][j] for i, j in keys}

    def _restate(self, state, stats):
        """The state tuple holding the entries of ``stats`` (``state``, or a fresh one, without)."""
        if stats is None:
            return self._no_state if state is None else state
        return tuple(tuple(stats.get((i, j), ()) for j in range(len(lay.layers))) if lay.kind == "feedback"
                     else stats.get((i, -1), ()) for i, lay in enumerate(self.layers))

    def _check_batch(self, n, what=None):
        """Refuse a training batch that gives a batch-normalization layer one value per channel."""
        for (i, j), per in self._state_keys.items():
            if n * per < 2:
                where = f"layer {i}" if j < 0 else f"layer {j} of the feedback block at layer {i}"
                raise ValueError(f"{where} (batchnorm) normalises each channel over the batch in training, and "
                                 f"{what or f'a batch of {n} sample'} gives it {n * per} value per channel: "
                                 f"train on batches of 2 or more")

    # ------------------------------------------------------------------ functional API

    def init(self, seed=0):
        """Fresh params (seeded): a tuple with one entry per layer, see SPEC §10."""
        if not self.layers:
            raise ValueError("the network has no layers; add some with dense(), convolution(), ...")
        rng = np.random.default_rng(_checks.seed(seed))
        return tuple(lay.init(shape[0], rng, self.dtype) for lay, shape in zip(self.layers, self.shapes))

    def init_state(self):
        """Fresh running state (SPEC §13): a tuple with one entry per layer, ``()`` or
        ``(running_mean, running_var)`` for batch normalization (zeros and ones); a feedback block
        holds its layers' entries once, as in params."""
        if not self.layers:
            raise ValueError("the network has no layers; add some with dense(), convolution(), ...")
        return tuple(_init_state(lay, shape[0], self.dtype) for lay, shape in zip(self.layers, self.shapes))

    def forward(self, params, x, train=False, seed=0, state=None):
        """The network's output for a batch ``x``; ``train=True`` applies dropout (masks from ``seed``)
        and normalises with the batch's statistics, ``train=False`` with the running ones in
        ``state`` (None: ``init_state()``)."""
        self.check_params(params)
        x = self.check_x(x)
        train, seed = _checks.flag(train, "train"), _checks.seed(seed)
        self._check_state_arg(state)
        if train:
            self._check_batch(len(x))
        with running():
            out, _, _ = graph.run_forward(self.program, self.layers, self.shapes, params, x, train, seed,
                                          running=self._stats(state))
        return out.reshape((len(x),) + self.output_shape)

    def loss_and_grad(self, params, x, y, train=True, seed=0, state=None, return_state=False):
        """``(loss, grads)``: the batch-mean loss and its exact gradient, shaped like ``params``.

        ``state``: the running statistics (None: ``init_state()``); with ``return_state=True`` the
        result is ``(loss, grads, new_state)``, the state after this batch (with ``train=False`` the
        running statistics are used and the state comes back unchanged). Nothing given is modified.
        """
        self.check_params(params)
        x = self.check_x(x)
        y = self.check_y(y, len(x))
        train, seed = _checks.flag(train, "train"), _checks.seed(seed)
        return_state = _checks.flag(return_state, "return_state")
        self._check_state_arg(state)
        if train:
            self._check_batch(len(x))
        with running():
            loss, grads, new = self._loss_grad_state(params, x, y, train, seed, state)
        return (loss, grads, new) if return_state else (loss, grads)

    def _loss_and_grad(self, params, x, y, train, seed, state=None):
        loss, grads, _ = self._loss_grad_state(params, x, y, train, seed, state)
        return loss, grads

    def _loss_grad_state(self, params, x, y, train, seed, state, row=0):
        """``(loss, grads, new_state)`` for checked arguments (``state`` None: the initial one;
        ``row``: where ``x`` starts in its batch, for the dropout masks, see ``graph.run_forward``)."""
        fused = self._fused
        stats = self._stats(state)
        out, values, caches = graph.run_forward(self.program, self.layers, self.shapes, params, x, train,
                                                seed, activate_last=not fused, running=stats, row=row)
        loss, dout = self._loss_and_dout(out.reshape(len(x), -1), y)
        grads = graph.run_backward(self.program, self.layers, params, values, caches,
                                   dout.reshape(out.shape), activate_last=not fused)
        factors = self._grad_factors
        if any(f != 1.0 for f in factors):
            grads = tuple(_scale_tree(g, f) if f != 1.0 else g for g, f in zip(grads, factors))
        return float(loss), grads, self._restate(state, stats)

    def _loss_and_dout(self, out2, y):
        """The batch-mean loss and its gradient for outputs ``out2 (N, outputs)``: logits when
        ``_fused`` (softmax and cross-entropy together), else the activated outputs."""
        if self._fused:
            loss, dout, _ = kobj.softmax_cross_entropy(out2, y)
            return loss, dout
        lo, hi = self.clip if self.clip else (0.0, 0.0)
        return kobj.objective_forward_backward(out2, y, self.objective.value, self.clip is not None, lo, hi)

    def _outputs_and_loss(self, params, x, y, stats=None):
        """Inference outputs and the batch-mean loss (no clipping, no dropout; ``stats`` as ``_stats``)."""
        fused = self._fused
        out, _, _ = graph.run_forward(self.program, self.layers, self.shapes, params, x, False, 0,
                                      activate_last=not fused, running=stats)
        out2 = out.reshape(len(x), -1)
        if fused:
            loss, _, p = kobj.softmax_cross_entropy(out2, y)
            return p, float(loss)
        return out2, float(kobj.objective_loss(out2, y, self.objective.value))

    def predict(self, params, x, batch=1000, state=None):
        """Inference outputs for ``x``, computed ``batch`` samples at a time, with the running
        statistics in ``state`` (None: ``init_state()``)."""
        leaves = self._check_tree(params, self._param_leaf_shapes, "params", finite=False)
        x = self.check_x(x)
        batch = _checks.positive_int(batch, "batch")
        self._check_state_arg(state)
        # batches of ``batch`` rows; fewer samples than that run as one, and any runner of at least
        # that many rows runs them alike: rounded up to a power of two, a few runners serve every size
        rows = batch if len(x) >= batch else min(batch, 1 << (len(x) - 1).bit_length())
        runner = self._predictor(rows)
        if runner is not None:
            if runner.light:            # one thread, small arrays: nothing for ``running`` to set
                out = runner.predict(leaves, x)
            else:
                with running():
                    out = runner.predict(leaves, x)
            if out is not None:
                return out.reshape((-1,) + self.output_shape)
        self._check_finite(leaves, self._param_leaf_shapes, "params")      # (the chain's None: the error)
        stats = self._stats(state)
        outs = []
        with running():
            for i in range(0, len(x), batch):
                out, _, _ = graph.run_forward(self.program, self.layers, self.shapes, params, x[i:i + batch],
                                              running=stats)
                outs.append(out.reshape((-1,) + self.output_shape))
        return np.concatenate(outs)

    def evaluate(self, params, x, y, batch=1000, tol=0.5, state=None):
        """``(loss, accuracy)``: accuracy is the arg-max match for several outputs, else ``|p - y| < tol``;
        ``state`` as in ``predict``."""
        self.check_params(params)
        x = self.check_x(x)
        y = self.check_y(y, len(x))
        batch, tol = _checks.positive_int(batch, "batch"), _checks.positive_number(tol, "tol")
        self._check_state_arg(state)
        with running():
            return self._evaluate(params, x, y, batch, tol, state)

    def _evaluate(self, params, x, y, batch=1000, tol=0.5, state=None):
        total, hits = 0.0, 0
        stats = self._stats(state)
        for i in range(0, len(x), batch):
            xb, yb = x[i:i + batch], y[i:i + batch]
            p, loss = self._outputs_and_loss(params, xb, yb, stats)
            total += loss * len(xb)
            hits += _hits(p, yb, tol)
        return total / len(x), hits / len(x)

    def learn(self, x, y, validation=None, batch=32, epochs=100, print_every=None, seed=0, shuffle=True,
              params=None, tol=0.5, checkpoint=None, checkpoint_every=1, resume=None, progress=None, state=None,
              comm=None):
        """Train with minibatches; returns ``Trained`` (params, state, history). See ``neurons.training.learn``."""
        from .training import learn
        return learn(self, x, y, validation=validation, batch=batch, epochs=epochs, print_every=print_every,
                     seed=seed, shuffle=shuffle, params=params, tol=tol, checkpoint=checkpoint,
                     checkpoint_every=checkpoint_every, resume=resume, progress=progress, state=state, comm=comm)

    # ------------------------------------------------------------------ checks

    def check_x(self, x, name="x"):
        """``x`` as a C-contiguous array of the network's dtype shaped exactly ``(N,) + input_shape``."""
        x = _checks.numeric(x, name)
        if x.shape[1:] != self.input_shape:
            raise ValueError(self._shape_error(x.shape, name))
        if x.dtype == np.uint8 and x.max() > 1:
            _checks.warn(f"{name} is uint8 with values up to {x.max()}: networks train on small numbers; scale "
                         f"images to [0, 1] first ({name} / 255, as neurons.datasets does)")
        return _checks.as_dtype(x, self.dtype, name)

    def _shape_error(self, shape, name):
        want = self.input_shape
        dims = ", ".join(map(str, want))
        msg = f"{name} has shape {shape}; this network takes (N, {dims})"
        if len(want) == 3 and shape[1:] == (want[1], want[2], want[0]):
            return msg + f": {name} looks channels-last (N, H, W, C); pass {name}.transpose(0, 3, 1, 2)"
        if int(np.prod(shape[1:])) == int(np.prod(want)):
            return msg + f"; if its values are in that order, pass {name}.reshape(len({name}), {dims})"
        return msg

    def check_y(self, y, n, name="y"):
        """Targets as ``(N, outputs)`` in the network's dtype; integer labels become one-hot.

        ``y`` is ``(N,) + output_shape``, ``(N, outputs)``, ``(N,)`` for one output, or integer
        class labels ``(N,)``. Objectives that take probabilities need targets in [0, 1].
        """
        y = _checks.numeric(y, name)
        if len(y) != n:
            raise ValueError(f"{name} has {len(y)} samples but x has {n}")
        outputs = int(np.prod(self.output_shape))
        if y.ndim == 1 and y.dtype.kind in "iu" and outputs > 1:
            bad = (y < 0) | (y >= outputs)
            if bad.any():
                j = int(np.argmax(bad))
                raise ValueError(f"{name}[{j}] = {y[j]} is not a class label in 0..{outputs - 1} "
                                 f"(the network has {outputs} outputs)")
            onehot = np.zeros((n, outputs), self.dtype)
            onehot[np.arange(n), y] = 1
            return onehot
        if y.shape[1:] not in (self.output_shape, (outputs,)) and not (y.ndim == 1 and outputs == 1):
            raise ValueError(f"{name} has shape {y.shape}; this network gives {self.output_shape} per sample, "
                             f"so {name} should be (N, {outputs}) (or integer class labels of shape (N,))")
        y = _checks.as_dtype(y, self.dtype, name).reshape(n, outputs)
        if self.objective in _PROBABILITIES:
            bad = (y < 0) | (y > 1)
            if bad.any():
                i, j = np.unravel_index(int(np.argmax(bad)), y.shape)
                raise ValueError(f"{name} holds {y[i, j]} at index ({i}, {j}); {self.objective} needs targets in "
                                 f"[0, 1] (probabilities)")
        return y

    def _warn_slips(self):
        """Warn about a probability objective on an output that is not a probability."""
        if self.objective not in _PROBABILITIES:
            return
        act = getattr(self.layers[-1], "activation", None)
        if act is not None and act not in _PROBABILITIES[self.objective]:
            want = str(_PROBABILITIES[self.objective][0])
            _checks.warn(f"{self.objective} takes probabilities, but the last layer's activation is {act}: "
                         f"the loss will not fall as it should; use activation={want!r} there")

    def check_params(self, params):
        """Raise a clear error unless ``params`` fit this network (structure, shapes, dtype, finite)."""
        self._check_tree(params, self._param_leaf_shapes, "params")

    def check_state(self, state):
        """Raise a clear error unless ``state`` fits this network's running state (structure, shapes,
        dtype, finite, variances >= 0)."""
        self._check_tree(state, self._state_leaf_shapes, "state")
        for i, j in self._state_keys:
            var = state[i][1] if j < 0 else state[i][j][1]
            if (var < 0).any():
                where = f"state[{i}]" if j < 0 else f"state[{i}][{j}]"
                raise ValueError(f"{where} holds a negative running variance ({var[np.argmax(var < 0)]}) at index "
                                 f"{int(np.argmax(var < 0))}")

    def _check_state_arg(self, state):
        if state is not None:
            self.check_state(state)

    def _predictor(self, rows):
        """``predict``'s compiled chain for batches of ``rows`` (``_fused.plan(..., infer=True)``), when
        it applies, saves time (``Runner.gains``) and its machine code is at hand: in this process,
        or in the cache (looked for once per network and batch size: a ``learn`` in this process
        loads or compiles it too)."""
        runners = self.__dict__.setdefault("_predictors", {})       # (frozen: not through setattr)
        look = rows not in runners
        if look:
            runner = _fused.plan(self, rows, rows, infer=True)
            runners[rows] = runner if runner is not None and runner.gains else None
        runner = runners[rows]
        return runner if runner is not None and runner.ready(look) else None

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_predictors", None)          # rebuilt where it is used
        return state

    @cached_property
    def _param_leaf_shapes(self):
        """Per layer, the shapes of its param arrays (``_tree.leaves`` order)."""
        return [[a.shape for a in _tree.leaves(p)] for p in self._param_shapes]

    @cached_property
    def _state_leaf_shapes(self):
        return [[a.shape for a in _tree.leaves(s)] for s in self._state_shapes]

    def _check_tree(self, tree, want, name, finite=True):
        """``tree`` (params or state) against ``want`` (``_param_leaf_shapes`` or ``_state_leaf_shapes``),
        errors naming ``name``; returns its arrays (``_tree.leaves``). ``finite``: also that every value
        is finite."""
        if not isinstance(tree, tuple) or len(tree) != len(want):
            raise ValueError(f"{name} must be a tuple of {len(want)} entries (one per layer), "
                             f"got {type(tree).__name__} of length {len(tree) if hasattr(tree, '__len__') else '?'}")
        leaves = []
        for i, (p, shapes) in enumerate(zip(tree, want)):
            flat_p = _tree.leaves(p)
            leaves += flat_p
            if len(flat_p) != len(shapes):
                raise ValueError(f"{name}[{i}] has {len(flat_p)} arrays, layer {i} needs {len(shapes)}")
            for a, shape in zip(flat_p, shapes):
                if not isinstance(a, np.ndarray) or a.shape != shape:
                    raise ValueError(f"{name}[{i}]: expected an array of shape {shape}, "
                                     f"got {getattr(a, 'shape', type(a).__name__)}")
                if a.dtype != self.dtype:
                    raise TypeError(f"{name}[{i}] has dtype {a.dtype}; this network is {self.dtype}")
        if finite:
            self._check_finite(leaves, want, name)
        return leaves

    def _check_finite(self, leaves, want, name):
        """That every value of ``leaves`` (``_check_tree``'s, of a tree shaped as ``want``) is finite."""
        start = 0
        for i, shapes in enumerate(want):
            for a in leaves[start:start + len(shapes)]:
                if not _checks.all_finite(a):
                    raise ValueError(f"{name}[{i}] holds a non-finite value ({a[_checks.first_nonfinite(a)]}) "
                                     f"at index {_checks.first_nonfinite(a)} of its array of shape {a.shape}")
            start += len(shapes)

    def __str__(self):
        from .display import describe
        return describe(self)


def _hits(p, y, tol):
    if p.shape[1] > 1:
        return int(np.sum(np.argmax(p, axis=1) == np.argmax(y, axis=1)))
    return int(np.sum(np.abs(p[:, 0] - y[:, 0]) < tol))


def _shapes_only(entry):
    """An entry of ``param_shapes`` (shapes, or for a block a tuple of entries) as stand-in arrays."""
    if entry and all(isinstance(d, int) for d in entry):
        return np.broadcast_to(np.float32(0), entry)
    return tuple(_shapes_only(e) for e in entry)


def _scale_tree(tree, f):
    return _tree.map(lambda a: a * a.dtype.type(f), tree)
