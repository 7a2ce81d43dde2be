"""ONNX export (``neurons.onnx``): every layer kind, activation, reshape, skip mode, loop and
feedback block, batch normalization with running statistics and the recurrent cells, each run in
onnxruntime against ``predict`` (max abs 1e-5) at two batch sizes; tied weights stored once; what
is refused."""
import importlib
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import neurons  # noqa: E402
import neurons.onnx  # noqa: E402
from neurons.layers import BatchNorm, Convolution, Dense, Recurrent  # noqa: E402

TOL = 1e-5
ACTIVATIONS = ["linear", "sigmoid", "tanh", "relu", "leaky_relu", "softmax"]
MODES = ["add", "subtract", "multiply", "overwrite", "mean"]
BLOCK_MODES = ["add", "subtract", "multiply", "mean"]
N = neurons.Network


def _dense(act):
    return N((6,)).dense(5, "tanh").dense(4, act)


def _skip(mode):
    # a dense skip, and one from a flat input onto an image (reshaped (16,) -> (1, 4, 4))
    return (N((16,)).set_accumulation(skip=mode).dense(16, "tanh").convolution(2, 3, padding=1, activation="tanh")
            .dense(16, "sigmoid").dense(3).connect(0, 1).connect(1, 3))


def _loop(mode, inskips=False):
    return (N((6,)).set_accumulation(loop=mode).dense(6, "tanh").dense(6, "sigmoid").dense(3)
            .loopback(1, 0, 2, inskips=inskips))


def _block(mode, inskips, outskips):
    return (N((9,)).dense(9, "tanh")
            .feedback([Dense(9, "tanh"), Dense(9, "sigmoid")], 3, inskips=inskips, outskips=outskips,
                      accumulation=mode)
            .dense(2, "softmax"))


def _rnn(cell, sequences, bias):
    return N((4, 3)).recurrent(5, cell, sequences, bias)


CASES = {
    **{f"activation-{a}": (lambda a=a: _dense(a)) for a in ACTIVATIONS},
    "dense-no-bias": lambda: N((6,)).dense(4, "relu", bias=False).dense(3, bias=False),
    "softmax-over-an-image": lambda: N((2, 5, 5)).convolution(3, 3, activation="softmax"),
    "conv-stride-padding-dilation-bias": lambda: (N((2, 9, 8)).convolution(3, (3, 2), (2, 1), (1, 2), (2, 1),
                                                                            "relu", bias=True).dense(4)),
    "conv-no-bias-leaky": lambda: N((1, 7, 7)).convolution(2, 3, activation="leaky_relu").dense(3, "sigmoid"),
    "deconv-output-padding-bias": lambda: (N((2, 4, 3)).deconvolution(3, 3, 2, 1, 1, "tanh", bias=True,
                                                                       output_padding=1)),
    "deconv-dilation-output-padding": lambda: (N((2, 4, 4)).deconvolution(2, (3, 2), (1, 2), (1, 0), (2, 1),
                                                                           output_padding=(1, 1))),
    # output padding >= stride (the dilation allows it), below and above the padding, with a bias
    "deconv-output-padding-past-stride": lambda: (N((2, 4, 4)).deconvolution(2, 3, 1, (2, 0), 3, "relu",
                                                                              bias=True, output_padding=(1, 2))),
    "maxpool-overlapping": lambda: N((2, 7, 6)).maxpool(3, (2, 1)).dense(3),
    "reshapes": lambda: (N((16,)).dense(25, "relu").convolution(2, 3, activation="relu").maxpool(1)
                         .dense(4)),
    "sequence-to-dense": lambda: N((4, 3)).recurrent(2, "rnn", True).dense(3, "softmax"),
    **{f"skip-{m}": (lambda m=m: _skip(m)) for m in MODES},
    **{f"loop-{m}": (lambda m=m: _loop(m)) for m in MODES},
    "loop-inskips": lambda: _loop("mean", inskips=True),
    "loop-conv-with-skip": lambda: (N((1, 6, 6)).convolution(1, 3, padding=1, activation="tanh", bias=True)
                                    .convolution(1, 3, padding=1, activation="relu").dense(3)
                                    .loopback(1, 0, 1).connect(0, 1)),
    **{f"feedback-{m}": (lambda m=m: _block(m, True, True)) for m in BLOCK_MODES},
    "feedback-plain": lambda: _block("mean", False, False),
    "feedback-conv": lambda: (N((1, 6, 6)).feedback([Convolution(2, 3, padding=1, activation="relu"),
                                                      Convolution(1, 3, padding=1, activation="tanh", bias=True)],
                                                     2).dense(3)),
    "batchnorm-dense": lambda: N((5,)).dense(6).batchnorm(eps=1e-3).dense(3, "relu").batchnorm(),
    "batchnorm-conv": lambda: N((2, 5, 5)).convolution(3, 3).batchnorm().maxpool(2).dense(3),
    "batchnorm-in-feedback": lambda: (N((6,)).feedback([Dense(6), BatchNorm(), Dense(6, "tanh")], 2,
                                                       outskips=True).dense(2)),
    **{f"{c}-{'sequences' if s else 'last'}-{'bias' if b else 'no-bias'}": (lambda c=c, s=s, b=b: _rnn(c, s, b))
       for c in ("rnn", "lstm", "gru") for s in (True, False) for b in (True, False)},
    "stacked-recurrent": lambda: N((4, 3)).recurrent(4, "lstm", True).recurrent(3, "gru", True).recurrent(2, "rnn"),
    "recurrent-looped": lambda: N((4, 3)).recurrent(3, "gru", True).loopback(0, 0, 2).recurrent(2, "lstm"),
    "recurrent-feedback": lambda: (N((4, 3)).feedback([Recurrent(3, "lstm", True)], 2, inskips=True)
                                   .recurrent(2, "rnn", True)),
    # rounded to a float32 model (every layer's params go through the same cast: one case)
    "float64": lambda: N((6,), "float64").dense(5, "tanh").dense(3, "softmax"),
}


def _perturbed(tree, rng, positive=False):
    """Params (or running state) moved off their init: biases and betas nonzero, gammas not 1."""
    if isinstance(tree, np.ndarray):
        d = rng.normal(scale=0.3, size=tree.shape)
        out = tree + (np.abs(d) if positive else d)
        return out.astype(tree.dtype)
    return tuple(_perturbed(t, rng, positive) for t in tree)


def _state(net, rng):
    """A running state with means off 0 and variances off 1 (what training leaves)."""
    def fill(entry):
        if entry == ():
            return ()
        if isinstance(entry[0], np.ndarray):
            mean, var = entry
            return (_perturbed(mean, rng), (var * rng.uniform(0.3, 2.0, size=var.shape)).astype(var.dtype))
        return tuple(fill(e) for e in entry)
    return tuple(fill(e) for e in net.init_state())


def _trained(net, seed=0):
    rng = np.random.default_rng(seed)
    return neurons.Trained(net, _perturbed(net.init(seed), rng), state=_state(net, rng))


def _session(path):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _run(session, x):
    return session.run(None, {"input": x.astype(np.float32)})[0]


@pytest.mark.parametrize("case", list(CASES))
def test_onnxruntime_equals_predict(case, tmp_path):
    net = CASES[case]()
    trained = _trained(net)
    path = tmp_path / "net.onnx"
    model = neurons.onnx.export(trained, path)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    inp, out = model.graph.input, model.graph.output
    assert len(inp) == 1 and len(out) == 1
    assert inp[0].type.tensor_type.shape.dim[0].dim_param == "N"
    assert out[0].type.tensor_type.shape.dim[0].dim_param == "N"
    assert [d.dim_value for d in out[0].type.tensor_type.shape.dim[1:]] == list(net.output_shape)
    session = _session(path)
    rng = np.random.default_rng(1)
    for n in (3, 5):                    # the batch axis is dynamic
        x = rng.normal(size=(n,) + net.input_shape).astype(net.dtype)
        want = trained.predict(x)
        got = _run(session, x)
        assert got.dtype == np.float32 and got.shape == want.shape
        err = np.max(np.abs(got - want))
        assert err <= TOL, f"{case}: max abs {err:.3g}"


def _float_initializers(model):
    return {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer
            if i.data_type == onnx.TensorProto.FLOAT and i.dims}


@pytest.mark.parametrize("case", ["feedback-mean", "feedback-conv", "batchnorm-in-feedback", "loop-add",
                                  "recurrent-feedback"])
def test_tied_weights_are_stored_once(case):
    """A loop or block reads one initializer per param on every pass: the model's float
    initializers hold exactly the params and running statistics, each once."""
    net = CASES[case]()
    trained = _trained(net)
    model = neurons.onnx.to_model(trained)
    weights = _float_initializers(model)
    count = sum(a.size for a in weights.values())
    state = sum(a.size for a in _leaves(trained.state))
    assert count == net.parameters + state
    uses = {name: sum(name in nd.input for nd in model.graph.node) for name in weights}
    passes = max(lay.loops for lay in net.layers if lay.kind == "feedback") if case != "loop-add" else 3
    tied = [name for name, k in uses.items() if k == passes]
    assert tied and all(k in (1, passes) for k in uses.values())


def _leaves(tree):
    if isinstance(tree, np.ndarray):
        return [tree]
    return [a for t in tree for a in _leaves(t)]


def test_a_learned_network_exports_with_its_running_statistics(tmp_path):
    """After real training steps (batchnorm statistics from the data, not set by hand), saved and
    loaded back."""
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(64, 5)) * 2 + 1).astype(np.float32)
    y = rng.integers(0, 3, size=64)
    net = N((5,)).batchnorm().dense(6, "relu").batchnorm().dense(3, "softmax").set_objective("cross_entropy")
    trained = net.learn(x, y, batch=16, epochs=1, progress=False)
    assert not np.allclose(trained.state[0][0], 0) and not np.allclose(trained.state[2][1], 1)
    trained.save(tmp_path / "bn.safetensors")
    loaded = neurons.load(tmp_path / "bn.safetensors")
    path = tmp_path / "bn.onnx"
    neurons.onnx.export(loaded, path)
    assert np.max(np.abs(_run(_session(path), x) - trained.predict(x))) <= TOL


def _mixed():
    return (N((1, 6, 6)).convolution(2, 3, padding=1).maxpool(2).dense(16).batchnorm()
            .deconvolution(2, 3, 2, 1, output_padding=1).dense(9, "softmax").feedback([Dense(9, "tanh")], 2))


@pytest.mark.parametrize("opset", sorted({17, 21, onnx.defs.onnx_opset_version()}))
def test_opsets_run(opset, tmp_path):
    trained = _trained(_mixed())
    path = tmp_path / "net.onnx"
    model = neurons.onnx.export(trained, path, opset=opset)
    assert model.opset_import[0].version == opset
    try:
        session = _session(path)
    except Exception as e:          # an onnx newer than the onnxruntime installed
        pytest.skip(f"onnxruntime {ort.__version__} cannot load opset {opset}: {e}")
    x = np.random.default_rng(2).normal(size=(4, 1, 6, 6))
    assert np.max(np.abs(_run(session, x) - trained.predict(x))) <= TOL


def test_opsets_refused(tmp_path):
    trained = _trained(_dense("relu"))
    newest = onnx.defs.onnx_opset_version()
    with pytest.raises(ValueError, match="opset must be in 17"):
        neurons.onnx.export(trained, tmp_path / "b.onnx", opset=newest + 1)
    with pytest.raises(ValueError, match="opset must be in 17"):
        neurons.onnx.export(trained, tmp_path / "b.onnx", opset=16)
    with pytest.raises(TypeError, match="opset"):
        neurons.onnx.export(trained, tmp_path / "b.onnx", opset="17")


def test_what_is_refused(tmp_path):
    net = N((3,), "float64").dense(2)
    with pytest.raises(TypeError, match="neurons.Trained"):
        neurons.onnx.export(net, tmp_path / "x.onnx")
    big = (np.array([[1e300, 0, 0], [0, 0, 0]]), np.zeros(2))
    with pytest.raises(ValueError, match="float32 cannot hold"):
        neurons.onnx.export(neurons.Trained(net, (big,)), tmp_path / "x.onnx")
    bad = (np.full((2, 3), np.nan), np.zeros(2))
    with pytest.raises(ValueError, match="non-finite"):
        neurons.onnx.export(neurons.Trained(net, (bad,)), tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_an_unknown_layer_kind_is_refused():
    class Mystery(Dense):
        kind = "mystery"

    net = N((3,)).dense(3)
    net = net._add(Mystery(2))
    with pytest.raises(NotImplementedError, match=r"layer 1 \(mystery\)"):
        neurons.onnx.to_model(neurons.Trained(net, net.init(0)))


def test_without_onnx_the_import_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    monkeypatch.delitem(sys.modules, "neurons.onnx")
    with pytest.raises(ImportError, match=r'pip install "neurons\[onnx\]"'):
        importlib.import_module("neurons.onnx")


def test_import_neurons_does_not_import_onnx():
    import subprocess
    code = "import sys, neurons; print('neurons.onnx' in sys.modules, 'onnx' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["False", "False"], out.stderr
