"""Recurrent layers (rnn, lstm, gru): forward against the naive reference, gradients against
central differences, the kernels' blocks, the graph rules on sequences, save/load, and a small
sequence task that is learned."""
import numba
import numpy as np
import pytest

import neurons
from neurons import _tree
from neurons.kernels import recurrent as krec, tiles
from neurons.layers import Convolution, Dense, Recurrent

from . import gradcheck
from . import reference as ref

CELLS = ["rnn", "lstm", "gru"]
TOL = {np.float32: 2e-5, np.float64: 1e-12}


def _x(shape, dtype=np.float64, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(dtype)


def _params(spec, in_shape, dtype, seed=0, scale=1.0):
    """Params drawn wider than the default init so that every gate works away from 0.5."""
    rng = np.random.default_rng(seed)
    return tuple((rng.uniform(-scale, scale, size=s)).astype(dtype) for s in spec.param_shapes(in_shape))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("sequences", [True, False])
@pytest.mark.parametrize("cell", CELLS)
def test_forward_matches_the_reference(cell, sequences, bias, dtype):
    net = neurons.Network((5, 3), np.dtype(dtype).name).recurrent(4, cell, sequences, bias)
    params = (_params(net.layers[0], (5, 3), dtype, seed=1),)
    x = _x((3, 5, 3), dtype)
    y = net.forward(params, x)
    assert y.dtype == dtype and y.shape == ((3, 5, 4) if sequences else (3, 4))
    p = params[0]
    want = ref.recurrent(x, p[0], p[1], p[2] if bias else None, p[3] if bias else None, cell)
    np.testing.assert_allclose(y, want if sequences else want[:, -1], rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("sequences", [True, False])
@pytest.mark.parametrize("cell", CELLS)
def test_gradients_central_differences(cell, sequences, bias):
    """Every param (through a dense layer and MSE) and the layer's input gradient, float64."""
    net = (neurons.Network((5, 3), "float64").recurrent(4, cell, sequences, bias).dense(2, "tanh")
           .set_objective("mse"))
    params = ((_params(net.layers[0], (5, 3), np.float64, seed=2),) + net.init(1)[1:])
    x, y = _x((3, 5, 3), seed=3), _x((3, 2), seed=4)
    gradcheck.check(net, params, x, y, per_leaf=16)
    gradcheck.check_input(net.layers[0], params[0], x)


@pytest.mark.parametrize("cell", CELLS)
def test_one_step_and_one_sample(cell):
    """T = 1 (no recurrence: W_hh gets a zero gradient) and N = 1."""
    for shape in ((4, 1, 3), (1, 6, 3)):
        net = neurons.Network(shape[1:], "float64").recurrent(3, cell, True).dense(2).set_objective("mse")
        params = ((_params(net.layers[0], shape[1:], np.float64, seed=5),) + net.init(0)[1:])
        x, y = _x(shape, seed=6), _x((shape[0], 2), seed=7)
        _, grads = gradcheck.check(net, params, x, y)
        if shape[1] == 1:
            assert not grads[0][1].any()
        gradcheck.check_input(net.layers[0], params[0], x)


def test_stacked_layers_and_a_dense_layer_on_a_sequence():
    """gru (sequence) -> lstm (sequence) -> dense on the flattened (T, units), cross-entropy."""
    net = (neurons.Network((4, 3), "float64").recurrent(5, "gru", True).recurrent(3, "lstm", True)
           .dense(3, "softmax").set_objective("cross_entropy"))
    assert net.shapes == (((4, 3), (4, 5)), ((4, 5), (4, 3)), ((12,), (3,)))
    params = net.init(0)
    params = ((_params(net.layers[0], (4, 3), np.float64, seed=8),
               _params(net.layers[1], (4, 5), np.float64, seed=9)) + params[2:])
    x = _x((3, 4, 3), seed=10)
    y = np.array([0, 2, 1])
    gradcheck.check(net, params, x, y, per_leaf=16)
    # the dense layer reads the sequence row-major: step after step
    h = net.layers[1].forward(params[1], net.layers[0].forward(params[0], x)[0])[0]
    z = h.reshape(3, 12) @ params[2][0].T + params[2][1]
    np.testing.assert_allclose(net.forward(params, x), np.exp(z) / np.exp(z).sum(1, keepdims=True), rtol=1e-12)


@pytest.mark.parametrize("cell", CELLS)
def test_blocks_of_batch_rows_equal_one_block(cell, monkeypatch):
    """The recurrence split over 3 blocks of batch rows (a parallel loop, whatever the thread count)
    gives what one block gives: each sample's output and input gradient, and the weight gradients
    (sums over the batch) to rounding."""
    spec = Recurrent(6, cell, True)
    params = _params(spec, (7, 5), np.float32, seed=11, scale=0.5)
    x = _x((8, 7, 5), np.float32, seed=12)
    dy = _x((8, 7, 6), np.float32, seed=13)

    def run():
        y, cache = spec.forward(params, x)
        return (y,) + spec.backward(params, cache, dy, True)[:1] + spec.backward(params, cache, dy, True)[1]

    one = run()
    monkeypatch.setattr(krec, "_blocks", lambda n, *rest: min(3, n))
    three = run()
    for a, b in zip(one[:2], three[:2]):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(one[2:], three[2:]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# (steps, features, units, samples): one block, a few samples at a time (less than a chunk);
# a recurrence large enough to split into blocks (``krec.SPLIT``) with samples past whole chunks
# (``krec.CHUNK``) and leftover rows in the products' tiles; and units as many as the benchmark's,
# whose weights inference spreads (``krec._spread``)
INFERENCE_SIZES = {"small": (5, 3, 4, 3), "split": (9, 6, 16, 6 * krec.CHUNK + 5), "wide": (3, 20, 128, 30)}


@pytest.mark.parametrize("size", sorted(INFERENCE_SIZES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("sequences", [True, False])
@pytest.mark.parametrize("cell", CELLS)
def test_inference_forward_is_the_training_forward_to_the_bit(cell, sequences, bias, dtype, size):
    """The inference forward (chunks of samples, state in short step axes, spread weights, no
    cache) gives the training forward's very bits, in one block and in as many as threads."""
    steps, features, units, n = INFERENCE_SIZES[size]
    spec = Recurrent(units, cell, sequences, bias)
    params = _params(spec, (steps, features), dtype, seed=21, scale=0.7)
    x = _x((n, steps, features), dtype, seed=22)
    code = {"rnn": krec.RNN, "lstm": krec.LSTM, "gru": krec.GRU}[cell]
    if size == "split":         # as many blocks as threads
        assert krec._blocks(n, steps, krec.GATES[code] * units, units) == krec.block_count(n)
    if size == "wide":
        assert krec._spread(params[1].T).shape[1] > params[1].shape[0]
    want, cache = spec.forward(params, x, True)
    assert isinstance(cache, tuple)
    got, kept = spec.forward(params, x, False)
    assert kept is x                                   # nothing of the steps kept
    assert got.dtype == dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    b_ih, b_hh = spec._biases(params, dtype)
    y, nothing = krec.recurrent_forward(x, params[0], params[1], b_ih, b_hh, code, sequences, train=False)
    assert nothing is None
    np.testing.assert_array_equal(y, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cell", CELLS)
def test_inference_in_three_blocks_and_odd_sizes(cell, dtype, monkeypatch):
    """3 blocks of samples (a parallel loop whatever the thread count), units whose gates are a
    whole number of tiles' columns or not (leftover columns in the products), and blocks of less
    than a chunk or of a chunk and a bit."""
    monkeypatch.setattr(krec, "_blocks", lambda n, *rest: min(3, n))
    for units, n in ((4, 3), (5, 7), (12, 3 * krec.CHUNK + 4), (16, 3 * krec.CHUNK + 1)):
        for sequences in (False, True):
            spec = Recurrent(units, cell, sequences)
            params = _params(spec, (6, 5), dtype, seed=23, scale=0.7)
            x = _x((n, 6, 5), dtype, seed=24)
            np.testing.assert_array_equal(spec.forward(params, x, False)[0], spec.forward(params, x, True)[0])


@pytest.mark.parametrize("cell", CELLS)
def test_predict_is_the_training_forward_to_the_bit(cell):
    """``predict`` (inference, in batches, the last one short) against the training forward of the
    whole network, a recurrent layer then a dense one, float32 as the benchmark runs it."""
    net = neurons.Network((7, 6)).recurrent(16, cell).dense(3, "softmax")
    params = net.init(2)
    x = _x((2 * krec.CHUNK + 11, 7, 6), np.float32, seed=25)
    want = net.forward(params, x, train=True)
    np.testing.assert_array_equal(net.predict(params, x), want)
    np.testing.assert_array_equal(net.predict(params, x, batch=20), want)
    trained = net.learn(x, np.arange(len(x)) % 3, batch=16, epochs=1)
    np.testing.assert_array_equal(trained.predict(x), net.forward(trained.params, x, train=True))


@pytest.mark.parametrize("cell", CELLS)
def test_backward_from_an_inference_forward(cell):
    """A backward pass from an inference forward's cache (``x``: the training forward runs first)
    gives what one from a training forward gives."""
    spec = Recurrent(5, cell, True)
    params = _params(spec, (4, 3), np.float64, seed=26)
    x, dy = _x((6, 4, 3), seed=27), _x((6, 4, 5), seed=28)
    want = spec.backward(params, spec.forward(params, x, True)[1], dy, True)
    got = spec.backward(params, spec.forward(params, x, False)[1], dy, True)
    for a, b in zip((want[0],) + want[1], (got[0],) + got[1]):
        np.testing.assert_array_equal(a, b)


def test_float32_gates_are_accurate_and_keep_nan():
    """The vectorised float32 sigmoid and tanh against float64, within 3 ulp (or below the smallest
    normal float32); NaN stays NaN."""
    from numba import njit

    @njit       # not cached: a cached copy would keep old gates inlined (the kernels' cache is keyed, this is not)
    def gates(v, s, t):
        for i in range(v.shape[0]):
            s[i] = krec._sigmoid(v[i])
            t[i] = krec._tanh(v[i])

    v = np.concatenate([np.linspace(-100, 100, 20001), np.linspace(-1, 1, 20001), [0.0, -0.0, np.inf, -np.inf]])
    v = v.astype(np.float32)
    s, t = np.empty_like(v), np.empty_like(v)
    gates(v, s, t)
    v64 = v.astype(np.float64)
    for got, want in ((s, 1 / (1 + np.exp(-v64))), (t, np.tanh(v64))):
        ulp = np.spacing(np.abs(want).astype(np.float32))
        assert np.all(np.abs(got - want) <= 3 * ulp + np.finfo(np.float32).tiny)     # below it: flushed to 0
    gates(np.array([np.nan], np.float32), s[:1], t[:1])
    assert np.isnan(s[0]) and np.isnan(t[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_products_in_tiles(dtype):
    """The tiled products (6 rows x 2 vectors, one smaller tile for leftover rows, tiles of one
    vector and a plain loop for leftover columns: 57 columns leave both at every vector width and
    dtype, the depth in slices of 64) against NumPy, on blocks of rows of larger arrays: ``c += a @ b``, ``c = a @ b``, ``c = a.T @ b`` and ``c = init + a @ b``."""
    rng = np.random.default_rng(17)
    for m, depth, n in ((1, 3, 5), (3, 7, 16), (5, 128, 48), (8, 33, 37), (16, 512, 128), (13, 28, 512),
                        (7, 200, 160), (6, 40, 57)):
        for kind in ("add", "set", "set_at", "bias"):
            ta = kind == "set_at"
            big_a = rng.normal(size=(depth + 2, 3, m) if ta else (m + 2, 3, depth)).astype(dtype)
            b = rng.normal(size=(depth, n)).astype(dtype)
            init = rng.normal(size=n).astype(dtype)
            big_c = rng.normal(size=(m + 2, 2, n)).astype(dtype)
            a = big_a[1:depth + 1, 1] if ta else big_a[1:m + 1, 1]     # rows apart, each contiguous
            c = big_c[1:m + 1, 0]
            product = (a.T if ta else a).astype(np.float64) @ b.astype(np.float64)
            want = {"add": c + product, "set": product, "set_at": product, "bias": init + product}[kind]
            before = big_c.copy()
            if kind == "bias":
                tiles.matmul_bias(a, b, c, init)
            else:
                {"add": tiles.matmul_add, "set": tiles.matmul_set, "set_at": tiles.matmul_set_at}[kind](a, b, c)
            np.testing.assert_allclose(c, want, rtol=TOL[dtype] * 10, atol=TOL[dtype] * 10 * np.sqrt(depth))
            mask = np.ones(big_c.shape, bool)
            mask[1:m + 1, 0] = False
            assert np.array_equal(big_c[mask], before[mask])     # nothing outside c written
    with pytest.raises(ValueError, match="rows must be contiguous"):
        tiles.matmul_add(np.zeros((4, 6), dtype)[:, ::2], np.zeros((3, 5), dtype), np.zeros((4, 5), dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_aligned_buffers_start_on_a_vector_boundary(dtype):
    for rows, cols in ((1, 1), (3, 7), (288, 224), (64, 1088), (0, 5)):
        for _ in range(3):
            buf = tiles.aligned_empty(rows, cols, np.empty(0, dtype))
            assert buf.shape == (rows, cols) and buf.dtype == dtype and buf.flags.c_contiguous
            assert buf.size == 0 or buf.ctypes.data % tiles.VECTOR == 0
            buf[...] = 1                                  # all of it is ours to write
            assert buf.sum() == rows * cols


@pytest.mark.skipif(numba.config.DISABLE_JIT, reason="no machine code without the JIT")
def test_the_tiles_take_the_widest_vectors_the_cpu_has():
    """64-byte vectors (zmm registers) where Numba compiles for AVX-512, 32-byte ones (ymm) on
    AVX2: a product of two vectors' columns runs in them."""
    from numba.core.registry import cpu_target
    features = cpu_target.target_context.codegen()._tm_features.split(",")
    if "+avx2" not in features:
        pytest.skip("no AVX2 here: LLVM splits the tiles' vectors into narrower ones")
    wide = "+avx512f" in features
    assert tiles.VECTOR == (64 if wide else 32)

    @numba.njit     # not cached: a function loaded from the cache keeps no assembly
    def tile(a, b, c, init):
        tiles._tile(a, b, c, init, 0, 0, a.shape[1], 6, 2, False, tiles.SET)

    cols = 2 * tiles.VECTOR // 4
    a, b, c = np.ones((6, 5), np.float32), np.ones((5, cols), np.float32), np.zeros((6, cols), np.float32)
    tile(a, b, c, c[0])
    assert np.all(c == 5)
    asm = tile.inspect_asm(tile.signatures[0])
    assert ("zmm" in asm) == wide and ("zmm" in asm or "ymm" in asm)


def test_images_as_sequences():
    x = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    s = neurons.datasets.as_sequences(x)
    assert s.shape == (2, 4, 15)
    np.testing.assert_array_equal(s[1, 2], np.concatenate([x[1, c, 2] for c in range(3)]))
    np.testing.assert_array_equal(neurons.datasets.as_sequences(x[:, 0]), x[:, 0])
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        neurons.datasets.as_sequences(x[0, 0])


@pytest.mark.parametrize("cell", CELLS)
def test_nan_propagates(cell):
    net = neurons.Network((3, 2)).recurrent(4, cell)
    x = np.zeros((2, 3, 2), np.float32)
    x[1, 0, 1] = np.nan
    with pytest.raises(ValueError, match="not finite|nan|NaN"):
        net.forward(net.init(0), x)                 # refused at the door...
    spec, p = net.layers[0], net.init(0)[0]
    y, _ = spec.forward(p, x)                       # ...and the kernel keeps it
    assert np.isnan(y[1]).all() and np.isfinite(y[0]).all()


def test_init_is_uniform_in_one_over_sqrt_units():
    net = neurons.Network((3, 7)).recurrent(16, "lstm")
    params = net.init(0)[0]
    assert [p.shape for p in params] == [(64, 7), (64, 16), (64,), (64,)]
    for p in params:
        assert p.dtype == np.float32 and np.abs(p).max() <= 0.25 and np.abs(p).max() > 0.2
    assert [p.shape for p in neurons.Network((3, 7)).recurrent(5, "gru", bias=False).init(0)[0]] == [(15, 7), (15, 5)]
    assert [p.shape for p in neurons.Network((3, 7)).recurrent(5, "rnn").init(0)[0]] == [(5, 7), (5, 5), (5,), (5,)]
    assert net.parameters == 64 * 7 + 64 * 16 + 128


# ---------------------------------------------------------------------------- graph rules

@pytest.mark.parametrize("build, match", [
    (lambda: neurons.Network((6, 4)).convolution(2), r"layer 0 \(convolution\) after shape \(6, 4\).*sequence"),
    (lambda: neurons.Network((6, 4)).deconvolution(2), r"deconvolution.*sequence"),
    (lambda: neurons.Network((6, 4)).maxpool(), r"layer 0 \(maxpool\).*sequence"),
    (lambda: neurons.Network((6, 4)).recurrent(3, "gru", True).convolution(2), r"layer 1 \(convolution\).*\(6, 3\)"),
    (lambda: neurons.Network((4,)).recurrent(3), r"layer 0 \(recurrent\) after shape \(4,\).*flat vector"),
    (lambda: neurons.Network((1, 4, 4)).recurrent(3), r"recurrent.*\(1, 4, 4\) is an image"),
    (lambda: neurons.Network((6, 4)).recurrent(3).recurrent(2), r"layer 1 \(recurrent\) after shape \(3,\)"),
    (lambda: neurons.Network((6, 4)).batchnorm(), r"batchnorm"),
    # a skip from a sequence into an image of as many elements
    (lambda: neurons.Network((4, 4)).recurrent(4, "rnn", True).dense(16).convolution(1, 3, padding=1)
     .connect(0, 2), r"connect\(infrom=0, into=2\).*\(4, 4\) and \(1, 4, 4\).*sequence"),
    # a loop from an image back into a sequence
    (lambda: neurons.Network((4, 4)).recurrent(4, "rnn", True).dense(16).convolution(1, 3, padding=1)
     .loopback(2, 0, 1), r"loopback\(outof=2, into=0\).*\(1, 4, 4\) and \(4, 4\)"),
    (lambda: neurons.Network((6, 4)).recurrent(8, "rnn", True).recurrent(3, "rnn", True).loopback(1, 0, 1),
     r"loopback\(outof=1, into=0\).*\(6, 3\).*\(6, 4\)"),
    (lambda: neurons.Network((6, 4)).recurrent(4, "rnn", True).connect(0, 0), r"infrom must come before"),
    (lambda: neurons.Network((6, 4)).feedback([Recurrent(3, return_sequences=True)], 2), r"give back.*\(6, 3\)"),
    (lambda: neurons.Network((4, 4)).feedback([Dense(16), Convolution(1, 3, padding=1)], 2),
     r"give back.*\(1, 4, 4\).*sequence"),
    (lambda: neurons.Network((4, 4)).recurrent(4, "tanh"), r"cell must be one of 'rnn', 'lstm', 'gru'"),
    (lambda: neurons.Network((4, 4)).recurrent(0), r"units must be >= 1"),
    (lambda: neurons.Network((4, 0)), r"input_shape must be"),
])
def test_build_time_refusals(build, match):
    with pytest.raises((ValueError, TypeError), match=match):
        build()


def test_x_of_the_wrong_shape_is_refused_with_a_hint():
    net = neurons.Network((28, 28)).recurrent(4).dense(2)
    with pytest.raises(ValueError, match=r"takes \(N, 28, 28\).*reshape\(len\(x\), 28, 28\)"):
        net.forward(net.init(0), np.zeros((2, 1, 28, 28), np.float32))


@pytest.mark.parametrize("build", [
    # a skip between equal sequences, and from a sequence into a flat vector of its size
    lambda: neurons.Network((5, 3), "float64").recurrent(3, "gru", True).recurrent(3, "lstm", True).connect(0, 1)
    .dense(2),
    lambda: neurons.Network((5, 3), "float64").recurrent(3, "rnn", True).dense(15, "tanh").connect(0, 1).dense(2),
    # a recurrent layer looped back into itself, and a flat output fed back into a sequence
    lambda: neurons.Network((5, 3), "float64").recurrent(3, "lstm", True).loopback(0, 0, 2).dense(2),
    lambda: neurons.Network((5, 3), "float64").recurrent(4, "gru").dense(15, "tanh").loopback(1, 0, 1, inskips=True)
    .dense(2),
    # a weight-tied recurrent block, with skips
    lambda: neurons.Network((5, 3), "float64").feedback([Recurrent(3, "gru", True)], 3, inskips=True, outskips=True)
    .dense(2),
    lambda: neurons.Network((5, 3), "float64").feedback([Recurrent(4, "rnn"), Dense(15, "tanh")], 2).dense(2),
])
def test_connections_on_sequences_back_propagate_through_time(build):
    net = build().set_objective("mse")
    params = _tree.map(lambda a: a * 2.0 if a.ndim == 2 else a, net.init(3))     # gates away from 0.5
    x, y = _x((3, 5, 3), seed=14), _x((3, 2), seed=15)
    gradcheck.check(net, params, x, y, per_leaf=8)


def test_print_and_save_load_round_trip(tmp_path):
    net = (neurons.Network((6, 4)).recurrent(5, "gru", True, bias=False)
           .feedback([Recurrent(5, "rnn", True)], 2).recurrent(3, "lstm").dense(2, "softmax")
           .set_optimizer(neurons.optimizers.Adam(lr=1e-2)).set_objective("cross_entropy"))
    text = str(net)
    assert "Recurrent(5, gru, sequence, no bias)" in text and "Recurrent(3, lstm, last step, bias)" in text
    assert "6x4 -> 6x5" in text and "Recurrent(5, rnn, sequence, bias) (tied)" in text
    x, y = _x((12, 6, 4), np.float32, seed=16), np.arange(12) % 2
    trained = net.learn(x, y, batch=4, epochs=1)
    for name in ("net.safetensors", "net.npz"):
        trained.save(tmp_path / name)
        back = neurons.load(tmp_path / name)
        assert back.network == trained.network
        for a, b in zip(_tree.leaves(trained.params), _tree.leaves(back.params)):
            assert a.dtype == b.dtype and np.array_equal(a, b)
        np.testing.assert_array_equal(back.predict(x), trained.predict(x))


# ---------------------------------------------------------------------------- learning

@pytest.mark.parametrize("cell", CELLS)
def test_learns_the_sign_of_a_running_sum(cell):
    """Whether the sum of 8 numbers is positive: a step-by-step count the cell must carry."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(600, 8, 1)).astype(np.float32)
    y = (x.sum((1, 2)) > 0).astype(np.int64)
    net = (neurons.Network((8, 1)).recurrent(8, cell).dense(2, "softmax")
           .set_optimizer(neurons.optimizers.Adam(lr=0.02)).set_objective("cross_entropy"))
    trained = net.learn(x[:500], y[:500], batch=25, epochs=25, seed=1)
    assert trained.evaluate(x[500:], y[500:])[1] >= 0.9


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("sequences", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forward_zeros_types_as_the_training_forward(cell, sequences, dtype):
    # the cold-start helper back-propagates through these to compile the backward kernels that
    # training will call: every array of the same type (dtype, dimensions, layout) and shape
    import numba
    lay = neurons.layers.Recurrent(6, cell, return_sequences=sequences)
    x = np.random.default_rng(0).normal(size=(5, 7, 3)).astype(dtype)
    params = lay.init((7, 3), np.random.default_rng(1), dtype)
    y, cache = lay.forward(params, x, True)
    y0, cache0 = lay.forward_zeros(params, x)
    assert numba.typeof((y, cache)) == numba.typeof((y0, cache0))
    shapes = lambda t: [a.shape if isinstance(a, np.ndarray) else a for a in neurons._tree.leaves(t)]  # noqa: E731
    assert shapes((y, cache)) == shapes((y0, cache0))
    assert not any(a.any() for a in neurons._tree.leaves((y0, cache0)) if isinstance(a, np.ndarray))
    dx, grads = lay.backward(params, cache0, y0, True)
    assert all(np.isfinite(g).all() for g in (dx,) + grads)


def test_the_helper_takes_a_recurrent_layer_backward_first(monkeypatch):
    from neurons import _warm
    from neurons.layers import Dense, Recurrent
    calls = []
    for cls in (Dense, Recurrent):
        for name in ("forward", "backward"):
            def spy(self, *args, _f=getattr(cls, name), _name=name, **kw):
                calls.append((type(self).__name__, _name))
                return _f(self, *args, **kw)
            monkeypatch.setattr(cls, name, spy)
    net = neurons.Network((4, 3)).recurrent(5, "lstm").dense(2, "softmax")
    _warm.warm(net, 4, 0)
    # training compiles the forward passes first: the helper starts where training ends
    assert calls[:4] == [("Recurrent", "backward"), ("Dense", "forward"), ("Dense", "backward"),
                         ("Recurrent", "forward")]


def test_the_products_of_every_mode_share_one_compilation():
    # a mode passed as an int constant compiled ``products`` (and each ``_slice`` under it) once
    # per value, a second of a cold start each; the modes are run-time values now
    import numba

    @numba.njit
    def every_mode(a, b, c, init):
        tiles.products(a, b, c, init, False, tiles.SET)
        tiles.products(a, b, c, init, False, tiles.ADD)
        d = c.copy()
        tiles.products(a, b, c, init, False, tiles.SET_INIT)
        return d

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(7, 5)).astype(np.float32), rng.normal(size=(5, 19)).astype(np.float32)
    init = rng.normal(size=19).astype(np.float32)
    c = np.zeros((7, 19), np.float32)
    twice = every_mode(a, b, c, init)
    np.testing.assert_allclose(twice, 2 * (a @ b), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(c, a @ b + init, rtol=1e-5, atol=1e-5)
    call = tuple(numba.typeof(v) for v in (a, b, c, init)) + (numba.types.literal(False),)
    modes = [sig[5] for sig in tiles.products.signatures if sig[:5] == call]      # (other tests' calls: other types)
    assert modes == [numba.types.int64]
