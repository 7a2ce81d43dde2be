"""The builder: shapes, immutability, display, and every build-time or input error."""
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
        neurons.Network((4, 4))
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
