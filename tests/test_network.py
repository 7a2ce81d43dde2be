"""The builder: shapes, immutability, display, and every build-time or input error."""
import tracemalloc
import warnings

import numpy as np
import pytest

import neurons
from neurons.layers import Dense, Feedback, Maxpool


def test_builder_is_immutable_and_infers_shapes():
    a = neurons.Network((1, 28, 28))
    b = a.convolution(5, 3, padding=1, activation="relu")
    c = b.maxpool().dense(100, "relu", bias=False).dense(10, "softmax", bias=False)
    assert a.layers == () and len(b.layers) == 1 and len(c.layers) == 4
    assert c.shapes == (((1, 28, 28), (5, 28, 28)), ((5, 28, 28), (5, 14, 14)), ((980,), (100,)),
                        ((100,), (10,)))
    assert c.parameters == 5 * 9 + 980 * 100 + 100 * 10
    with pytest.raises(Exception):
        c.layers = ()


def test_print_shows_layers_connections_optimizer_objective_and_count():
    net = (neurons.Network((4,)).dense(4, "relu", dropout=0.1).dense(4, "tanh")
           .feedback([Dense(4, "sigmoid")], loops=2, inskips=True).dense(3, "softmax")
           .connect(0, 2).loopback(1, 1, 2, scale=0.5)
           .set_optimizer(neurons.optimizers.SGD(lr=0.1)).set_objective("cross_entropy"))
    text = str(net)
    for piece in ["4 -> 4", "relu", "dropout 0.1", "Feedback(loops 2", "inskips", "(tied)",
                  "skip: input of layer 0 -> input of layer 2", "layers 1..1 run 3 times", "gradient scale 0.5",
                  "SGD", "cross_entropy", f"parameters: {net.parameters:,}"]:
        assert piece in text, piece


def test_dense_to_image_needs_a_square():
    net = neurons.Network((49,)).convolution(2, 3)
    assert net.shapes[0] == ((1, 7, 7), (2, 5, 5))
    with pytest.raises(ValueError, match=r"50 features .* nearest square sizes are 49 \(7x7\) and 64 \(8x8\)"):
        neurons.Network((50,)).convolution(2, 3)


def test_empty_output_is_refused_when_added():
    with pytest.raises(ValueError, match=r"layer 0 .*empty output"):
        neurons.Network((1, 4, 4)).convolution(2, 5)
    with pytest.raises(ValueError, match="larger than its input"):
        neurons.Network((1, 3, 3)).maxpool(4)


@pytest.mark.parametrize("call, match", [
    (lambda n: n.connect(0, 7), r"into=7 is out of range: the network has layers 0..3"),
    (lambda n: n.connect(2, 1), r"infrom must come before into"),
    (lambda n: n.connect(0, 2).connect(1, 2), r"layer 2 already receives a skip"),
    (lambda n: n.connect(0, 3), r"input of layer 0 has shape \(4,\) .* input of layer 3 has shape \(6,\)"),
    (lambda n: n.loopback(1, 2, 1), r"outof must not come before into"),
    (lambda n: n.loopback(5, 0, 1), r"outof=5 is out of range"),
    (lambda n: n.loopback(1, 1, 1).loopback(2, 1, 1), r"layer 1 is already in the loop"),
    (lambda n: n.loopback(2, 2, 1), r"layer 2 gives \(6,\) .* layer 2 takes \(4,\)"),
    (lambda n: n.loopback(1, 1, 0), r"iterations must be >= 1"),
    (lambda n: n.set_accumulation(skip="max"), r"skip accumulation must be one of"),
    (lambda n: n.set_objective("mse", clip=(1, -1)), r"lo <= hi"),
])
def test_graph_errors_name_indices_and_shapes(call, match):
    net = neurons.Network((4,)).dense(4).dense(4).dense(6).dense(2)
    with pytest.raises(ValueError, match=match):
        call(net)


def test_loop_across_feedback_block_and_nested_blocks_are_refused():
    net = neurons.Network((4,)).dense(4).feedback([Dense(4)], loops=2).dense(4)
    with pytest.raises(ValueError, match=r"would span the feedback block at layer 1"):
        net.loopback(2, 0, 1)
    with pytest.raises(ValueError, match="cannot be nested"):
        neurons.Network((4,)).feedback([Feedback([Dense(4)], 2)], loops=2)
    with pytest.raises(ValueError, match=r"must give back what it takes: its input is \(4,\) but its last layer gives \(3,\)"):
        neurons.Network((4,)).feedback([Dense(3)], loops=2)
    with pytest.raises(ValueError, match="accumulation must be one of"):
        neurons.Network((4,)).feedback([Dense(4)], loops=2, accumulation="overwrite")


def test_layer_argument_errors():
    with pytest.raises(ValueError, match="unknown activation 'rleu'"):
        neurons.Network((4,)).dense(3, "rleu")
    with pytest.raises(ValueError, match="unknown objective"):
        neurons.Network((4,)).set_objective("hinge")
    with pytest.raises(ValueError, match="dropout must be in"):
        neurons.Network((4,)).dense(3, dropout=1.0)
    with pytest.raises(TypeError, match="kernel must be an int or a pair"):
        neurons.Network((1, 5, 5)).convolution(2, kernel=(3, 3, 3))
    with pytest.raises(ValueError, match="stride must be >= 1"):
        neurons.Network((1, 5, 5)).convolution(2, stride=0)
    with pytest.raises(TypeError, match="dtype must be"):
        neurons.Network((4,), dtype="int32")
    with pytest.raises(ValueError, match="input_shape"):
        neurons.Network((4, 4, 4, 4))           # (4, 4) is a sequence: tests/test_recurrent.py
    with pytest.raises(ValueError, match="has no layers"):
        neurons.Network((4,)).init()


def test_activation_and_objective_accept_names_and_enums():
    a = neurons.Network((4,)).dense(3, neurons.Activation.RELU).set_objective(neurons.Objective.MSE)
    b = neurons.Network((4,)).dense(3, "ReLU").set_objective("MSE")
    assert a == b
    assert neurons.Network((4,)).dense(3, "LeakyReLU").layers[0].activation is neurons.Activation.LEAKY_RELU


@pytest.fixture
def iris_net():
    return neurons.Network((4,)).dense(5, "relu").dense(3, "softmax").set_objective("cross_entropy")


def test_bad_input_is_refused_before_any_work(iris_net):
    p = iris_net.init()
    x = np.zeros((6, 4))
    y = np.zeros(6, int)
    with pytest.raises(ValueError, match=r"x has shape \(6, 5\); this network takes \(N, 4\)"):
        iris_net.predict(p, np.zeros((6, 5)))
    with pytest.raises(ValueError, match="y has 5 samples but x has 6"):
        iris_net.loss_and_grad(p, x, y[:5])
    bad = x.copy()
    bad[2, 3] = np.nan
    with pytest.raises(ValueError, match=r"x holds a non-finite value \(nan\) at index \(2, 3\)"):
        iris_net.learn(bad, y, epochs=1)
    with pytest.raises(TypeError, match="x must hold real numbers, not dtype <U1|x must hold real numbers"):
        iris_net.predict(p, np.array([["a"] * 4]))
    with pytest.raises(TypeError, match="complex"):
        iris_net.predict(p, np.zeros((2, 4), complex))
    with pytest.raises(ValueError, match=r"y\[4\] = 3 is not a class label in 0..2"):
        iris_net.learn(x, np.array([0, 1, 2, 0, 3, 1]), epochs=1)
    with pytest.raises(ValueError, match=r"y has shape \(6, 2\); .* \(N, 3\)"):
        iris_net.evaluate(p, x, np.zeros((6, 2)))
    with pytest.raises(ValueError, match=r"params\[1\]: expected an array of shape \(3, 5\)"):
        iris_net.forward((p[0], (np.zeros((3, 4)), p[1][1])), x)
    with pytest.raises(TypeError, match=r"params\[0\] has dtype float64; this network is float32"):
        iris_net.forward(((p[0][0].astype(float), p[0][1]), p[1]), x)
    with pytest.raises(ValueError, match="batch must be an int >= 1"):
        iris_net.learn(x, y, batch=0)


def test_integer_labels_become_one_hot(iris_net):
    p = iris_net.init(0)
    x = np.random.default_rng(0).normal(size=(6, 4))
    labels = np.array([0, 1, 2, 2, 1, 0])
    a = iris_net.loss_and_grad(p, x, labels)[0]
    b = iris_net.loss_and_grad(p, x, np.eye(3)[labels])[0]
    assert a == b


def test_x_must_have_exactly_the_input_shape():
    images = neurons.Network((3, 8, 8)).convolution(2, 3).dense(2)
    p = images.init(0)
    with pytest.raises(ValueError, match=r"x has shape \(4, 8, 8, 3\); this network takes \(N, 3, 8, 8\): "
                                         r"x looks channels-last .* x.transpose\(0, 3, 1, 2\)"):
        images.predict(p, np.zeros((4, 8, 8, 3)))
    with pytest.raises(ValueError, match=r"x has shape \(4, 192\); .*x.reshape\(len\(x\), 3, 8, 8\)"):
        images.predict(p, np.zeros((4, 192)))
    with pytest.raises(ValueError, match=r"x_val has shape \(2, 3, 64\)"):
        images.learn(np.zeros((4, 3, 8, 8)), np.zeros((4, 2)), validation=(np.zeros((2, 3, 64)), np.zeros((2, 2))))
    one = neurons.Network((1,)).dense(1)
    with pytest.raises(ValueError, match=r"x has shape \(5,\); this network takes \(N, 1\)"):
        one.predict(one.init(0), np.zeros(5))
    assert images.predict(p, np.zeros((4, 3, 8, 8))).shape == (4, 2)


def test_targets_must_have_the_output_shape():
    auto = neurons.Network((1, 4, 4)).convolution(1, 3, padding=1)
    p = auto.init(0)
    x = np.zeros((2, 1, 4, 4))
    assert auto.loss_and_grad(p, x, np.zeros((2, 1, 4, 4)))[0] == auto.loss_and_grad(p, x, np.zeros((2, 16)))[0]
    with pytest.raises(ValueError, match=r"y has shape \(2, 4, 4\)"):
        auto.loss_and_grad(p, x, np.zeros((2, 4, 4)))


def test_values_too_large_for_the_dtype_are_refused(iris_net):
    x = np.zeros((3, 4))
    x[1, 2] = 1e39
    with pytest.raises(ValueError, match=r"x holds 1e\+39 at index \(1, 2\), which is too large for float32"):
        iris_net.predict(iris_net.init(0), x)
    wide = neurons.Network((4,), "float64").dense(3, "softmax")
    assert np.isfinite(wide.predict(wide.init(0), x * 1e-300)).all()
    one = neurons.Network((4,)).dense(1)
    with pytest.raises(ValueError, match=r"y holds 1e\+300 at index \(1,\), which is too large for float32"):
        one.loss_and_grad(one.init(0), np.zeros((3, 4)), np.array([1.0, 1e300, 0.0]))


def test_empty_data_is_refused(iris_net):
    p = iris_net.init(0)
    x, y = np.zeros((6, 4)), np.zeros(6, int)
    for call in (lambda: iris_net.learn(x[:0], y[:0], epochs=1),
                 lambda: iris_net.learn(x, y, validation=(x[:0], y[:0]), epochs=1),
                 lambda: iris_net.evaluate(p, x[:0], y[:0]),
                 lambda: iris_net.predict(p, x[:0])):
        with pytest.raises(ValueError, match=r"is empty \(shape \(0, 4\)\): there are no samples"):
            call()


@pytest.mark.parametrize("call, match", [
    (lambda n, p, x, y: n.predict(p, x, batch=0), "batch must be an int >= 1, got 0"),
    (lambda n, p, x, y: n.predict(p, x, batch=-1), "batch must be an int >= 1, got -1"),
    (lambda n, p, x, y: n.evaluate(p, x, y, batch=2.5), "batch must be an int >= 1, got 2.5"),
    (lambda n, p, x, y: n.evaluate(p, x, y, tol=0), "tol must be a finite number > 0, got 0"),
    (lambda n, p, x, y: n.learn(x, y, seed=-1), "seed must be an int >= 0, got -1"),
    (lambda n, p, x, y: n.learn(x, y, seed=0.5), "seed must be an int >= 0, got 0.5"),
    (lambda n, p, x, y: n.learn(x, y, epochs=0), "epochs must be an int >= 1, got 0"),
    (lambda n, p, x, y: n.learn(x, y, validation=(x, y, 0)), "patience must be an int >= 1, got 0"),
    (lambda n, p, x, y: n.learn(x, y, shuffle="yes"), "shuffle must be True or False"),
    (lambda n, p, x, y: n.init(seed=-1), "seed must be an int >= 0, got -1"),
    (lambda n, p, x, y: n.forward(p, x, seed=-3), "seed must be an int >= 0, got -3"),
    (lambda n, p, x, y: n.loss_and_grad(p, x, y, train="no"), "train must be True or False"),
])
def test_every_argument_is_checked_by_name(iris_net, call, match):
    x, y = np.zeros((6, 4)), np.zeros(6, int)
    with pytest.raises((ValueError, TypeError), match=match):
        call(iris_net, iris_net.init(0), x, y)


def test_non_finite_params_are_refused(iris_net):
    p = iris_net.init(0)
    w = p[1][0].copy()
    w[2, 1] = np.inf
    with pytest.raises(ValueError, match=r"params\[1\] holds a non-finite value \(inf\) at index \(2, 1\)"):
        iris_net.predict((p[0], (w, p[1][1])), np.zeros((2, 4)))


def test_probability_objectives_need_targets_in_0_1():
    net = neurons.Network((2,)).dense(1, "sigmoid").set_objective("binary_cross_entropy")
    p = net.init(0)
    with pytest.raises(ValueError, match=r"y holds 2.0 at index \(1, 0\); binary_cross_entropy needs targets "
                                         r"in \[0, 1\]"):
        net.loss_and_grad(p, np.zeros((3, 2)), np.array([0.0, 2.0, 1.0]))
    assert np.isfinite(net.loss_and_grad(p, np.zeros((3, 2)), np.array([0.0, 0.5, 1.0]))[0])


def test_slips_are_warned_about():
    x, labels = np.random.default_rng(0).random((8, 4)), np.arange(8) % 3
    linear = neurons.Network((4,)).dense(3).set_objective("cross_entropy")
    with pytest.warns(UserWarning, match="cross_entropy takes probabilities, but the last layer's activation is linear"):
        linear.learn(x, labels, epochs=1)
    softmax = neurons.Network((4,)).dense(3, "softmax").set_objective("cross_entropy")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        softmax.learn(x, labels, epochs=1)
    images = neurons.Network((1, 4, 4)).dense(3, "softmax").set_objective("cross_entropy")
    pixels = (np.random.default_rng(0).random((8, 1, 4, 4)) * 255).astype(np.uint8)
    with pytest.warns(UserWarning, match=r"x is uint8 with values up to \d+: .*\(x / 255"):
        images.learn(pixels, labels, epochs=1)


def test_parameters_are_counted_without_allocating_them():
    tracemalloc.start()
    try:
        net = neurons.Network((4,)).dense(10**8).dense(3)
        text, count = str(net), net.parameters
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == 5 * 10**8 + 3 * 10**8 + 3
    assert "500,000,000" in text
    assert peak < 5_000_000
