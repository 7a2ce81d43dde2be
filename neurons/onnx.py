"""Export a trained network to ONNX: ``neurons.onnx.export(trained, path)`` (extra ``neurons[onnx]``).

Imported on its own (``import neurons.onnx``; ``import neurons`` does not load it). The model is
the inference graph ``predict`` runs (SPEC §16), written with ``onnx.helper``:

- one input ``"input"`` shaped ``("N", *input_shape)`` and one output ``"output"`` shaped
  ``("N", *output_shape)``, both float32, the batch axis ``N`` dynamic;
- dense as ``Gemm`` (``transB=1``), convolution as ``Conv``, deconvolution as ``ConvTranspose``
  (the kernel layout ``(channels, filters, kh, kw)`` and the output size
  ``(H-1)s - 2p + d(k-1) + 1 + output_padding`` are ONNX's own; an output padding as large as
  the stride, which a larger dilation allows and onnxruntime refuses, becomes a shorter end
  padding, zeros ``Pad``-ded past the full output and the bias added after), max-pool as ``MaxPool``,
  batch normalization as ``BatchNormalization`` with the running statistics, recurrent layers
  as ``RNN`` / ``LSTM`` / ``GRU`` (gates reordered from PyTorch's i, f, g, o and r, z, n to
  ONNX's i, o, f, c and z, r, h; the GRU with ``linear_before_reset=1``, which is PyTorch's
  ``b_hn`` inside the reset product; batch-first by a ``Transpose`` either side);
- activations as ``Sigmoid``, ``Tanh``, ``Relu``, ``LeakyRelu`` (alpha 0.01) and ``Softmax``
  (over every feature of a sample: an image output is flattened around it); dropout is the
  identity at inference and leaves nothing;
- the automatic reshapes (image to dense, dense to ``(1, √F, √F)``, sequence to flat) as
  ``Reshape`` nodes that copy the batch axis;
- skips, loop outputs and block outskips as ``Add`` / ``Sum``, ``Sub``, ``Mul`` (mean: the sum
  times ``1/n``, as ``predict`` computes it); loops and feedback blocks unrolled pass by pass,
  every pass reading the same initializers: tied weights are stored once.

The model is float32 whatever the network's dtype: a float64 network's params and running
statistics are rounded to float32 (one a value float32 cannot hold is refused), so its outputs
equal ``predict``'s to float32 rounding. ``onnx.checker.check_model`` (with full shape
inference) runs on every model before it is written. A layer or setting that ONNX cannot
express here is a ``NotImplementedError`` naming the layer, never a model that computes
something else.
"""
import numpy as np

try:
    import onnx
    from onnx import TensorProto, helper, numpy_helper
except ImportError as e:            # pragma: no cover - exercised by a test that hides onnx
    raise ImportError('neurons.onnx needs the onnx package: pip install "neurons[onnx]"') from e

from . import __version__
from .activations import Activation
from .graph import Accumulate, Apply
from .kernels.activations import SLOPE

__all__ = ["export", "to_model"]

MIN_OPSET = 17
INPUT, OUTPUT = "input", "output"

# ONNX's gate order as indices into PyTorch's: LSTM i, o, f, c from i, f, g, o; GRU z, r, h from r, z, n
_GATE_ORDER = {"rnn": (0,), "lstm": (0, 3, 1, 2), "gru": (1, 0, 2)}
_CELL_OP = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}
_ELEMENTWISE = {Activation.SIGMOID: "Sigmoid", Activation.TANH: "Tanh", Activation.RELU: "Relu"}


def export(trained, path, opset=MIN_OPSET):
    """Write ``trained`` (a ``neurons.Trained``) as an ONNX model to ``path``; returns the
    ``onnx.ModelProto``.

    The model takes float32 ``(N, *input_shape)`` as ``"input"`` and gives ``"output"``, what
    ``trained.predict`` gives (float32). ``opset``: the ONNX opset, 17 or newer.
    """
    model = to_model(trained, opset)
    onnx.save_model(model, str(path))
    return model


def to_model(trained, opset=MIN_OPSET):
    """The ``onnx.ModelProto`` ``export`` writes, checked, without writing it."""
    net, params, state = _unpack(trained)
    opset = _opset(opset)
    g = _Builder(net, params, state)
    g.build()
    graph = helper.make_graph(
        g.nodes, "neurons", [_value_info(INPUT, net.input_shape)], [_value_info(OUTPUT, net.output_shape)],
        initializer=g.initializers)
    ops = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=ops, producer_name="neurons", producer_version=__version__,
                              doc_string=str(net))
    model.ir_version = helper.find_min_ir_version_for(ops)
    onnx.checker.check_model(model, full_check=True)
    return model


# ----------------------------------------------------------------------------- arguments

def _unpack(trained):
    net = getattr(trained, "network", None)
    params = getattr(trained, "params", None)
    if net is None or params is None or not hasattr(net, "program"):
        raise TypeError(f"export takes a neurons.Trained (what Network.learn returns, or "
                        f"neurons.Trained(network, params, state=state)), not {type(trained).__name__}")
    state = getattr(trained, "state", None)
    net.check_params(params)
    if state is None:
        state = net.init_state()
    net.check_state(state)
    return net, params, state


def _opset(opset):
    if isinstance(opset, bool) or not isinstance(opset, (int, np.integer)):
        raise TypeError(f"opset must be an int, not {opset!r}")
    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise ValueError(f"opset must be in {MIN_OPSET}..{newest} (the newest this onnx {onnx.__version__} "
                         f"knows), got {opset}")
    return int(opset)


def _value_info(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", *shape])


# ----------------------------------------------------------------------------- the graph

class _Builder:
    """Walks the network's program (``neurons.graph``: layers applied pass by pass, accumulations
    between them) and writes one or a few nodes for each step. Each value slot of the program
    becomes an ONNX tensor with a known per-sample shape; a layer reading it in another shape
    gets a ``Reshape`` (made once per slot and shape)."""

    def __init__(self, net, params, state):
        self.net, self.params, self.state = net, params, state
        self.nodes, self.initializers = [], []
        self._names = set()
        self._consts = {}
        self._weights = {}
        self._reshaped = {}

    # names, constants and weights

    def name(self, base):
        n, k = base, 1
        while n in self._names:
            k += 1
            n = f"{base}_{k}"
        self._names.add(n)
        return n

    def node(self, op, inputs, base, outputs=1, **attrs):
        outs = [self.name(base) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op, list(inputs), outs, name=self.name(f"{base}/{op}"), **attrs))
        return outs[0] if outputs == 1 else outs

    def ints(self, values):
        """An int64 initializer (shapes, axes), shared by every node that needs the same values."""
        key = ("i64",) + tuple(values)
        if key not in self._consts:
            name = self.name("const_" + "_".join(str(v).replace("-", "m") for v in values))
            self.initializers.append(numpy_helper.from_array(np.asarray(values, np.int64), name))
            self._consts[key] = name
        return self._consts[key]

    def scalar(self, value):
        key = ("f32", float(np.float32(value)))
        if key not in self._consts:
            name = self.name(f"const_{float(np.float32(value)):g}")
            self.initializers.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
            self._consts[key] = name
        return self._consts[key]

    def weight(self, key, make, where):
        """The initializer for ``key`` (a layer's param, after ``make`` lays it out as ONNX wants),
        made on first use: a layer applied on every pass of a loop or block reads the one copy."""
        if key not in self._weights:
            a = np.asarray(make())
            with np.errstate(over="ignore"):
                b = a.astype(np.float32)
            if not np.all(np.isfinite(b)):
                raise ValueError(f"{where} holds a value float32 cannot hold ({a[~np.isfinite(b)].flat[0]!r}); "
                                 f"the ONNX model is float32")
            name = self.name(".".join(str(k) for k in key))
            self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(b), name))
            self._weights[key] = name
        return self._weights[key]

    def shaped(self, slot, shape):
        """The tensor of ``slot`` as ``(N, *shape)``: a ``Reshape`` when it has another shape."""
        name, have = self.slots[slot]
        shape = tuple(shape)
        if have == shape:
            return name
        key = (slot, shape)
        if key not in self._reshaped:
            base = f"{name}_as_{'x'.join(map(str, shape))}"
            self._reshaped[key] = self.node("Reshape", [name, self.ints((0,) + shape)], base)
        return self._reshaped[key]

    # the walk

    def build(self):
        net = self.net
        program = net.program
        self.slots = {0: (INPUT, tuple(net.input_shape))}
        for op in program.ops:
            if isinstance(op, Apply):
                self.slots[op.dst] = self.apply(op)
            elif isinstance(op, Accumulate):
                self.slots[op.dst] = (self.accumulate(op), tuple(op.shape))
            else:
                raise NotImplementedError(f"the network's program holds a step ONNX export does not know: {op!r}")
        out = self.shaped(program.output, net.output_shape)
        self.nodes.append(helper.make_node("Identity", [out], [OUTPUT], name=self.name("output/Identity")))

    def apply(self, op):
        net = self.net
        lay = net.layers[op.layer]
        if op.sub < 0:
            spec, (in_shape, out_shape) = lay, net.shapes[op.layer]
            p, st, key = self.params[op.layer], self.state[op.layer], (f"layer{op.layer}",)
            where = f"layer {op.layer} ({spec.kind})"
        else:
            spec = lay.layers[op.sub]
            in_shape, out_shape = lay.inside(net.shapes[op.layer][0])[op.sub]
            p, st = self.params[op.layer][op.sub], self.state[op.layer][op.sub]
            key = (f"layer{op.layer}", f"block{op.sub}")
            where = f"layer {op.sub} ({spec.kind}) of the feedback block at layer {op.layer}"
        x = self.shaped(op.src, in_shape)
        write = getattr(self, "_" + spec.kind, None)
        if write is None:
            raise NotImplementedError(f"{where}: ONNX export does not know {spec.kind} layers")
        y = write(spec, p, st, x, key, where, tuple(in_shape), tuple(out_shape))
        return y, tuple(out_shape)

    # layers: each returns the name of its output, shaped (N, *out_shape)

    def _dense(self, spec, p, st, x, key, where, in_shape, out_shape):
        inputs = [x, self.weight(key + ("weight",), lambda: p[0], where)]
        if spec.bias:
            inputs.append(self.weight(key + ("bias",), lambda: p[1], where))
        z = self.node("Gemm", inputs, ".".join(key) + ".dense", transB=1)
        return self.activate(spec, z, key, where, out_shape)

    def _window(self, op, spec, p, x, key, where, out_shape, **attrs):
        inputs = [x, self.weight(key + ("weight",), lambda: p[0], where)]
        if spec.bias:
            inputs.append(self.weight(key + ("bias",), lambda: p[1], where))
        (ph, pw) = spec.padding
        z = self.node(op, inputs, ".".join(key) + "." + spec.kind, kernel_shape=list(spec.kernel),
                      strides=list(spec.stride), pads=[ph, pw, ph, pw], dilations=list(spec.dilation), **attrs)
        return self.activate(spec, z, key, where, out_shape)

    def _convolution(self, spec, p, st, x, key, where, in_shape, out_shape):
        return self._window("Conv", spec, p, x, key, where, out_shape)

    def _deconvolution(self, spec, p, st, x, key, where, in_shape, out_shape):
        op = spec.output_padding
        if all(o < s for o, s in zip(op, spec.stride)):
            return self._window("ConvTranspose", spec, p, x, key, where, out_shape, output_padding=list(op))
        # An output padding as large as the stride (allowed here, as in PyTorch, when the dilation
        # is larger) is refused by onnxruntime. It only moves the end of the crop of the full
        # transposed convolution: the crop ends op rows later, so the end padding shrinks by op,
        # and rows past the full output (op > padding) are zeros, then the bias.
        (ph, pw) = spec.padding
        ends = [max(ph - op[0], 0), max(pw - op[1], 0)]
        extra = [max(op[0] - ph, 0), max(op[1] - pw, 0)]
        base = ".".join(key) + "." + spec.kind
        z = self.node("ConvTranspose", [x, self.weight(key + ("weight",), lambda: p[0], where)], base,
                      kernel_shape=list(spec.kernel), strides=list(spec.stride), pads=[ph, pw] + ends,
                      dilations=list(spec.dilation))
        if any(extra):
            z = self.node("Pad", [z, self.ints([0, 0, 0, 0, 0, 0] + extra)], base + ".output_padding")
        if spec.bias:
            z = self.node("Add", [z, self.weight(key + ("bias",), lambda: p[1].reshape(-1, 1, 1), where)],
                          base + ".bias")
        return self.activate(spec, z, key, where, out_shape)

    def _maxpool(self, spec, p, st, x, key, where, in_shape, out_shape):
        return self.node("MaxPool", [x], ".".join(key) + ".maxpool", kernel_shape=list(spec.kernel),
                         strides=list(spec.stride))

    def _batchnorm(self, spec, p, st, x, key, where, in_shape, out_shape):
        inputs = [x] + [self.weight(key + (n,), lambda a=a: a, where)
                        for n, a in zip(("gamma", "beta", "running_mean", "running_var"), tuple(p) + tuple(st))]
        return self.node("BatchNormalization", inputs, ".".join(key) + ".batchnorm", epsilon=float(spec.eps))

    def _recurrent(self, spec, p, st, x, key, where, in_shape, out_shape):
        cell, h = spec.cell, spec.units
        order = list(_GATE_ORDER[cell])
        g = len(order)

        def gates(a):               # rows (G·H, ...) in PyTorch's gate order -> ONNX's
            return a.reshape((g, h) + a.shape[1:])[order].reshape(a.shape)

        inputs = [self.node("Transpose", [x], ".".join(key) + ".time_major", perm=[1, 0, 2]),
                  self.weight(key + ("W",), lambda: gates(p[0])[None], where),
                  self.weight(key + ("R",), lambda: gates(p[1])[None], where)]
        if spec.bias:
            inputs.append(self.weight(key + ("B",), lambda: np.concatenate([gates(p[2]), gates(p[3])])[None], where))
        attrs = {"hidden_size": h}
        if cell == "gru":
            attrs["linear_before_reset"] = 1
        base = ".".join(key) + "." + cell
        y, y_h = self.node(_CELL_OP[cell], inputs, base, outputs=2, **attrs)
        if spec.return_sequences:       # Y (T, 1, N, H) -> (N, T, H)
            y = self.node("Transpose", [y], base + ".batch_first", perm=[2, 0, 1, 3])
            return self.node("Reshape", [y, self.ints((0,) + out_shape)], base + ".sequence")
        return self.node("Squeeze", [y_h, self.ints((0,))], base + ".last")    # Y_h (1, N, H) -> (N, H)

    def activate(self, spec, z, key, where, out_shape):
        act = spec.activation
        base = ".".join(key) + "." + str(act)
        if act is Activation.LINEAR:
            return z
        if act in _ELEMENTWISE:
            return self.node(_ELEMENTWISE[act], [z], base)
        if act is Activation.LEAKY_RELU:
            return self.node("LeakyRelu", [z], base, alpha=float(SLOPE))
        if act is Activation.SOFTMAX:
            # over every feature of a sample (predict's softmax reads each sample flat)
            if len(out_shape) == 1:
                return self.node("Softmax", [z], base, axis=1)
            flat = self.node("Flatten", [z], base + ".flat", axis=1)
            s = self.node("Softmax", [flat], base, axis=1)
            return self.node("Reshape", [s, self.ints((0,) + out_shape)], base + ".shaped")
        raise NotImplementedError(f"{where}: ONNX export does not know the activation {act!r}")

    # accumulations (skips, loop outputs, a block's inskips and outskips)

    def accumulate(self, op):
        names = [self.shaped(s, op.shape) for s in op.srcs]
        base = f"acc{op.dst}.{op.mode}"
        if op.mode == "overwrite":
            return names[-1]
        if op.mode in ("add", "mean"):
            out = self.node("Add" if len(names) == 2 else "Sum", names, base)
            if op.mode == "mean":
                out = self.node("Mul", [out, self.scalar(1.0 / len(names))], base + ".scaled")
            return out
        if op.mode in ("subtract", "multiply"):
            out = names[0]
            for other in names[1:]:
                out = self.node("Sub" if op.mode == "subtract" else "Mul", [out, other], base)
            return out
        raise NotImplementedError(f"ONNX export does not know the accumulation mode {op.mode!r}")
