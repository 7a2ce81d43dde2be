"""Batch normalization and the running-state API: the kernels against naive loops and central
differences, the layer in networks (blocks, loops, skips, dropout) against finite differences,
the running statistics' updates, the state API's contract, save/load and checkpoints."""
import numpy as np
import pytest

import neurons
from neurons.kernels import batchnorm as kbn
from neurons.kernels._blocks import block_count
from neurons.kernels._config import BLOCKS
from neurons.layers import BatchNorm, Dense

from . import gradcheck
from . import reference as ref

SHAPES = [(5, 4), (3, 2, 4, 5), (1, 3, 3, 2), (4, 1, 1, 1)]
IDS = ["dense", "image", "image-batch-1", "one-value-per-sample"]


def _case(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    c = shape[1]
    x = (rng.normal(size=shape) * 2 + 3).astype(dtype)           # away from zero mean, unit variance
    return x, rng.uniform(0.5, 1.5, c).astype(dtype), rng.normal(size=c).astype(dtype)


def _three(x):
    return x.reshape(x.shape[0], x.shape[1], -1)


# ----------------------------------------------------------------------------------- kernels

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_kernels_against_naive_loops(shape, dtype):
    x, gamma, beta = _case(shape, dtype)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    old_mean, old_var = np.linspace(-1, 1, shape[1]).astype(dtype), np.linspace(0.5, 2, shape[1]).astype(dtype)
    y, mean, var, new_mean, new_var = kbn.batchnorm_forward_train(_three(x), gamma, beta, 1e-5, 0.3, old_mean,
                                                                  old_var)
    want, wmean, wvar = ref.batchnorm(x, gamma, beta, 1e-5)
    assert y.dtype == new_mean.dtype == new_var.dtype == dtype and mean.dtype == var.dtype == np.float64
    np.testing.assert_allclose(y.reshape(shape), want, rtol=tol, atol=tol)
    np.testing.assert_allclose(mean, wmean, rtol=tol)
    np.testing.assert_allclose(var, wvar, rtol=tol * 10)
    m = x.size // shape[1]
    np.testing.assert_allclose(new_mean, 0.7 * old_mean + 0.3 * wmean, rtol=tol, atol=tol)
    np.testing.assert_allclose(new_var, 0.7 * old_var + 0.3 * wvar * m / (m - 1), rtol=tol * 10)
    # inference with other statistics
    rmean, rvar = wmean + 0.3, wvar * 1.7
    y = kbn.batchnorm_forward_eval(_three(x), gamma, beta, rmean, rvar, 1e-3)
    np.testing.assert_allclose(y.reshape(shape), ref.batchnorm(x, gamma, beta, 1e-3, rmean, rvar)[0],
                               rtol=tol, atol=tol)


def _numeric(f, a, h=1e-6):
    out = np.zeros(a.shape)
    for i in range(a.size):
        old = a.flat[i]
        a.flat[i] = old + h
        lp = f()
        a.flat[i] = old - h
        lm = f()
        a.flat[i] = old
        out.flat[i] = (lp - lm) / (2 * h)
    return out


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", SHAPES[:3], ids=IDS[:3])
def test_backward_against_central_differences(shape, train):
    x, gamma, beta = _case(shape, np.float64, seed=1)
    dy = np.random.default_rng(2).normal(size=shape)
    rmean, rvar = np.linspace(2, 4, shape[1]), np.linspace(0.5, 2, shape[1])

    def forward():
        if train:
            return kbn.batchnorm_forward_train(_three(x), gamma, beta, 1e-5)[0]
        return kbn.batchnorm_forward_eval(_three(x), gamma, beta, rmean, rvar, 1e-5)

    def loss():
        return float(np.sum(forward().reshape(shape) * dy))
    if train:
        _, mean, var, _, _ = kbn.batchnorm_forward_train(_three(x), gamma, beta, 1e-5)
    else:
        mean, var = rmean, rvar
    dx, dgamma, dbeta = kbn.batchnorm_backward(_three(dy), _three(x), gamma, mean, var, 1e-5, train)
    for mine, a in ((dx.reshape(shape), x), (dgamma, gamma), (dbeta, beta)):
        np.testing.assert_allclose(mine, _numeric(loss, a), rtol=1e-6, atol=1e-7)
    none, dgamma2, dbeta2 = kbn.batchnorm_backward(_three(dy), _three(x), gamma, mean, var, 1e-5, train, False)
    assert none is None
    np.testing.assert_array_equal(dgamma2, dgamma)
    np.testing.assert_array_equal(dbeta2, dbeta)


def test_float32_close_to_float64():
    x, gamma, beta = _case((8, 3, 5, 5), np.float64)
    dy = np.random.default_rng(3).normal(size=x.shape)
    out = {}
    for dt in (np.float32, np.float64):
        c = [a.astype(dt) for a in (x, gamma, beta, dy)]
        y, mean, var, rm, rv = kbn.batchnorm_forward_train(_three(c[0]), c[1], c[2], 1e-5)
        out[dt] = (y, rm, rv) + kbn.batchnorm_backward(_three(c[3]), _three(c[0]), c[1], mean, var, 1e-5, True)
    for a, b in zip(out[np.float32], out[np.float64]):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(BLOCKS < 2, reason="one thread: every pass runs as one block")
@pytest.mark.parametrize("shape", [(kbn.PARALLEL_MIN // 60 + 1, 5, 6, 2), (kbn.PARALLEL_MIN // 7 + 3, 7)],
                         ids=["image", "dense"])
def test_blocks_equal_a_one_block_run(shape):
    x, gamma, beta = _case(shape, np.float32, seed=4)
    dy = np.random.default_rng(5).normal(size=shape).astype(np.float32)
    x3, dy3 = _three(x), _three(dy)
    assert block_count(x3.shape[1], x3.size, kbn.PARALLEL_MIN) > 1
    old_mean, old_var = np.zeros(shape[1], np.float32), np.ones(shape[1], np.float32)
    y, mean, var, rm, rv = kbn.batchnorm_forward_train(x3, gamma, beta, 1e-5, 0.1, old_mean, old_var)
    y1, mean1, var1 = np.empty_like(x3), np.empty(shape[1]), np.empty(shape[1])
    rm1, rv1 = np.empty_like(old_mean), np.empty_like(old_var)
    kbn._train_blocks(1, (1, x3, gamma, beta, 1e-5, 0.1, old_mean, old_var, y1, mean1, var1, rm1, rv1))
    for a, b in ((y, y1), (mean, mean1), (var, var1), (rm, rm1), (rv, rv1)):
        np.testing.assert_array_equal(a, b)
    for train in (True, False):
        dx, dg, db = kbn.batchnorm_backward(dy3, x3, gamma, mean, var, 1e-5, train)
        dx1, dg1, db1 = np.empty_like(x3), np.empty_like(gamma), np.empty_like(gamma)
        kbn._backward_blocks(1, (1, dy3, x3, gamma, mean, var, 1e-5, train, True, dx1, dg1, db1))
        for a, b in ((dx, dx1), (dg, dg1), (db, db1)):
            np.testing.assert_array_equal(a, b)
    ye = kbn.batchnorm_forward_eval(x3, gamma, beta, mean, var, 1e-5)         # one block, always
    ye1 = np.empty_like(x3)
    kbn._eval_blocks(BLOCKS, (BLOCKS, x3, gamma, beta, mean, var, 1e-5, ye1))
    np.testing.assert_array_equal(ye, ye1)


@pytest.mark.parametrize("shape", [(4, 3), (3, 2, 2, 3)], ids=["dense", "image"])
def test_nan_propagates(shape):
    x, gamma, beta = _case(shape, np.float32)
    x.reshape(shape[0], shape[1], -1)[1, 1, 0] = np.nan
    y, mean, var, rm, rv = kbn.batchnorm_forward_train(_three(x), gamma, beta, 1e-5)
    y = y.reshape(shape)
    assert np.isnan(y[:, 1]).all() and np.isfinite(np.delete(y, 1, axis=1)).all()
    assert np.isnan(mean[1]) and np.isnan(var[1]) and np.isnan(rm[1]) and np.isnan(rv[1])
    dx, dgamma, dbeta = kbn.batchnorm_backward(_three(np.ones_like(x)), _three(x), gamma, mean, var, 1e-5, True)
    assert np.isnan(dx.reshape(shape)[:, 1]).all() and np.isnan(dgamma[1])


# ----------------------------------------------------------------------------------- gradients

def _data(shape, outputs=3, n=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n,) + shape), rng.normal(size=(n, outputs))


def _trained_state(net, params, x, steps=3):
    """A running state moved away from (0, 1) by a few training batches."""
    state = net.init_state()
    for k in range(steps):
        state = net.loss_and_grad(params, x * (1 + k), np.zeros((len(x),) + net.output_shape), state=state,
                                  return_state=True)[2]
    return state


NETS = {
    "dense": lambda: neurons.Network((4,), "float64").dense(6, "tanh").batchnorm().dense(3),
    "first-layer": lambda: neurons.Network((4,), "float64").batchnorm(momentum=0.3, eps=1e-3).dense(3, "tanh"),
    "image": lambda: (neurons.Network((2, 5, 5), "float64").convolution(3, 3, padding=1, activation="tanh", bias=True)
                      .batchnorm().maxpool(2).dense(3)),
    "image-then-dense": lambda: (neurons.Network((1, 6, 6), "float64").convolution(2, 3, activation="sigmoid")
                                 .batchnorm().dense(5, "tanh").batchnorm().dense(3)),
    "feedback": lambda: (neurons.Network((4,), "float64").dense(5, "tanh")
                         .feedback([Dense(5, "tanh"), BatchNorm()], 3).dense(3)),
    "feedback-inskips-outskips": lambda: (neurons.Network((4,), "float64").dense(5, "tanh")
                                          .feedback([BatchNorm(0.2), Dense(5, "tanh")], 2, inskips=True,
                                                    outskips=True, accumulation="add").dense(3)),
    "loopback": lambda: (neurons.Network((4,), "float64").dense(5, "tanh").dense(5, "tanh").batchnorm()
                         .dense(3).loopback(2, 1, 2)),
    "skip-and-dropout": lambda: (neurons.Network((4,), "float64").dense(6, "tanh", dropout=0.3).batchnorm()
                                 .dense(6, "sigmoid", dropout=0.2).batchnorm().dense(3).connect(1, 3)),
}


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", NETS)
def test_every_gradient_against_central_differences(name, train):
    net = NETS[name]()
    shape = net.input_shape
    x, y = _data(shape)
    params = net.init(1)
    # gamma and beta away from 1 and 0, so that a wrong use of either shows
    params = neurons._tree.map(lambda a: a + np.random.default_rng(a.size).uniform(-0.3, 0.3, a.shape), params)
    state = _trained_state(net, params, x) if not train else None
    gradcheck.check(net, params, x, y, seed=7, train=train, state=state, per_leaf=30)


# ----------------------------------------------------------------------------------- running state

def _stats(x):
    """Batch mean, biased and unbiased variance per channel of x (N, C) or (N, C, H, W)."""
    axes = (0,) + tuple(range(2, x.ndim))
    return x.mean(axes), x.var(axes), x.var(axes, ddof=1)


def test_init_state_is_shaped_like_the_layers():
    net = (neurons.Network((1, 6, 6)).convolution(2, 3).batchnorm().maxpool(2).dense(4, "relu")
           .feedback([Dense(4, "tanh"), BatchNorm()], 2).batchnorm().dense(2))
    state = net.init_state()
    assert len(state) == len(net.layers)
    assert state[0] == () and state[2] == () and state[3] == () and state[6] == ()
    assert state[4][0] == ()
    for entry, c in ((state[1], 2), (state[4][1], 4), (state[5], 4)):
        np.testing.assert_array_equal(entry[0], np.zeros(c, np.float32))
        np.testing.assert_array_equal(entry[1], np.ones(c, np.float32))
    p = net.init(0)
    np.testing.assert_array_equal(p[1][0], np.ones(2, np.float32))
    np.testing.assert_array_equal(p[1][1], np.zeros(2, np.float32))
    assert net.parameters == sum(a.size for a in gradcheck.leaves(p))
    # params of the other layers are what the network without batch normalization draws
    plain = neurons.Network((1, 6, 6)).convolution(2, 3).maxpool(2).dense(4, "relu")
    np.testing.assert_array_equal(plain.init(0)[0][0], p[0][0])
    assert neurons.Network((3,)).dense(2).init_state() == ((),)


@pytest.mark.parametrize("shape", [(4,), (2, 3, 3)], ids=["dense", "image"])
def test_train_step_updates_the_state_as_pytorch_documents(shape):
    net = neurons.Network(shape, "float64").batchnorm(momentum=0.25, eps=1e-4)
    x, _ = _data(shape, n=5)
    params = (np.array([1.5, 0.5, 2.0, 1.0])[:shape[0]], np.array([0.1, -0.2, 0.3, 0.0])[:shape[0]])
    state = (np.full(shape[0], 0.5), np.full(shape[0], 2.0))
    y = np.zeros((5, int(np.prod(shape))))
    loss, grads, new = net.loss_and_grad((params,), x, y, state=(state,), return_state=True)
    mean, biased, unbiased = _stats(x)
    np.testing.assert_allclose(new[0][0], 0.75 * 0.5 + 0.25 * mean, rtol=1e-14)
    np.testing.assert_allclose(new[0][1], 0.75 * 2.0 + 0.25 * unbiased, rtol=1e-14)
    # training normalises with the batch's biased variance, inference with the running state
    bshape = (1, -1) + (1,) * (len(shape) - 1)
    train_out = net.forward((params,), x, train=True, state=(state,))
    want = ((x - mean.reshape(bshape)) / np.sqrt(biased.reshape(bshape) + 1e-4) * params[0].reshape(bshape)
            + params[1].reshape(bshape))
    np.testing.assert_allclose(train_out, want, rtol=1e-12)
    for out in (net.forward((params,), x, state=(state,)), net.predict((params,), x, state=(state,))):
        np.testing.assert_allclose(out, (x - 0.5) / np.sqrt(2.0 + 1e-4) * params[0].reshape(bshape)
                                   + params[1].reshape(bshape), rtol=1e-12)
    # train=False: running statistics, and the state comes back unchanged
    _, _, same = net.loss_and_grad((params,), x, y, train=False, state=(state,), return_state=True)
    np.testing.assert_array_equal(same[0][0], state[0])
    np.testing.assert_array_equal(same[0][1], state[1])
    # the default state is init_state()
    np.testing.assert_array_equal(net.forward((params,), x), net.forward((params,), x, state=net.init_state()))


def test_no_call_modifies_the_params_or_state_it_is_given():
    net = (neurons.Network((4,)).dense(6, "tanh", dropout=0.2).batchnorm().dense(2, "softmax")
           .set_objective("cross_entropy").set_optimizer(neurons.optimizers.Adam(lr=0.05)))
    x, _ = _data((4,), n=16)
    y = np.arange(16) % 2
    params = net.init(3)
    state = net.loss_and_grad(params, x, y, state=net.init_state(), return_state=True)[2]
    copies = [a.copy() for a in gradcheck.leaves((params, state))]
    new = net.loss_and_grad(params, x, y, state=state, return_state=True)[2]
    assert not any(a is b for a, b in zip(gradcheck.leaves(new), gradcheck.leaves(state)))
    net.forward(params, x, train=True, state=state)
    net.forward(params, x, state=state)
    net.predict(params, x, state=state)
    net.evaluate(params, x, y, state=state)
    t = net.learn(x, y, batch=4, epochs=2, params=params, state=state)
    for a, b in zip(gradcheck.leaves((params, state)), copies):
        np.testing.assert_array_equal(a, b)
    # learn carried the state: it moved, and the result predicts with it
    assert not np.array_equal(t.state[1][0], state[1][0])
    np.testing.assert_array_equal(t.predict(x), net.predict(t.params, x, state=t.state))
    assert t.evaluate(x, y) == net.evaluate(t.params, x, y, state=t.state)


def _manual_block(params, x, passes, momentum=0.1, eps=1e-5):
    """A block [Dense(tanh), BatchNorm] applied ``passes`` times in training, by hand: the output
    and the running state after the passes (updated once per pass, in order)."""
    (w, b), (gamma, beta) = params
    mean_r, var_r = np.zeros(len(gamma)), np.ones(len(gamma))
    z = x
    for _ in range(passes):
        h = np.tanh(z @ w.T + b)
        mean, biased, unbiased = _stats(h)
        z = (h - mean) / np.sqrt(biased + eps) * gamma + beta
        mean_r = (1 - momentum) * mean_r + momentum * mean
        var_r = (1 - momentum) * var_r + momentum * unbiased
    return z, (mean_r, var_r)


def test_a_feedback_block_updates_its_one_state_once_per_pass_in_order():
    net = neurons.Network((4,), "float64").feedback([Dense(4, "tanh"), BatchNorm()], 3)
    x, _ = _data((4,), n=7)
    params = net.init(2)
    out, want_state = _manual_block(params[0], x, 3)
    np.testing.assert_allclose(net.forward(params, x, train=True), out, rtol=1e-12)
    _, _, state = net.loss_and_grad(params, x, np.zeros((7, 4)), return_state=True)
    assert state[0][0] == ()
    np.testing.assert_allclose(state[0][1][0], want_state[0], rtol=1e-12)
    np.testing.assert_allclose(state[0][1][1], want_state[1], rtol=1e-12)
    # probed with the feedback off, the block runs once with the same params and state
    probed = net.probe()
    once, _ = _manual_block(params[0], x, 1)
    np.testing.assert_allclose(probed.forward(params, x, train=True), once, rtol=1e-12)
    (w, b), (gamma, beta) = params[0]
    h = np.tanh(x @ w.T + b)
    np.testing.assert_allclose(probed.predict(params, x, state=state),
                               (h - state[0][1][0]) / np.sqrt(state[0][1][1] + 1e-5) * gamma + beta, rtol=1e-12)


def test_a_loop_updates_the_state_once_per_pass():
    net = neurons.Network((4,), "float64").dense(4, "tanh").batchnorm().loopback(1, 0, 2).set_accumulation(
        loop="overwrite")
    x, _ = _data((4,), n=6)
    params = net.init(5)
    out, want_state = _manual_block(params, x, 3)
    np.testing.assert_allclose(net.forward(params, x, train=True), out, rtol=1e-12)
    _, _, state = net.loss_and_grad(params, x, np.zeros((6, 4)), return_state=True)
    np.testing.assert_allclose(state[1][0], want_state[0], rtol=1e-12)
    np.testing.assert_allclose(state[1][1], want_state[1], rtol=1e-12)


def test_print_shows_batchnorm():
    net = (neurons.Network((1, 6, 6)).convolution(2, 3).batchnorm(momentum=0.2).maxpool(2)
           .feedback([Dense(8, "tanh"), BatchNorm(eps=1e-3)], 2).dense(2))
    text = str(net)
    assert "BatchNorm(momentum 0.2, eps 1e-05)" in text
    assert "BatchNorm(momentum 0.1, eps 0.001) (tied)" in text
    assert "running statistics: 20" in text


def test_bad_states_and_batches_are_refused_clearly():
    net = neurons.Network((3,)).dense(4).batchnorm().dense(2)
    params, x = net.init(0), np.ones((5, 3), np.float32)
    good = net.init_state()
    m, v = good[1]
    bad = [
        ((good[0], good[1]), ValueError, r"state must be a tuple of 3 entries \(one per layer\), got tuple of length 2"),
        ([(), (m, v), ()], ValueError, "state must be a tuple of 3 entries"),
        (((), (m,), ()), ValueError, r"state\[1\] has 1 arrays, layer 1 needs 2"),
        (((), (m, np.ones(5, np.float32)), ()), ValueError, r"state\[1\]: expected an array of shape \(4,\), got \(5,\)"),
        (((), (m, v.astype(np.float64)), ()), TypeError, r"state\[1\] has dtype float64; this network is float32"),
        (((), (m, np.array([1, np.nan, 1, 1], np.float32)), ()), ValueError,
         r"state\[1\] holds a non-finite value \(nan\) at index \(1,\)"),
        (((), (m, np.array([1, 1, -0.5, 1], np.float32)), ()), ValueError,
         r"state\[1\] holds a negative running variance \(-0.5\) at index 2"),
        (((), (m, [1, 1, 1, 1]), ()), ValueError, r"state\[1\]: expected an array of shape \(4,\), got list"),
    ]
    for state, error, match in bad:
        for call in (lambda: net.forward(params, x, state=state), lambda: net.predict(params, x, state=state),
                     lambda: net.loss_and_grad(params, x, np.zeros((5, 2)), state=state),
                     lambda: net.evaluate(params, x, np.zeros((5, 2)), state=state),
                     lambda: net.learn(x, np.zeros((5, 2)), epochs=1, state=state)):
            with pytest.raises(error, match=match):
                call()
    with pytest.raises(TypeError, match="return_state must be True or False"):
        net.loss_and_grad(params, x, np.zeros((5, 2)), return_state=1)
    # one value per channel cannot be normalised in training (PyTorch refuses it too)
    with pytest.raises(ValueError, match=r"layer 1 \(batchnorm\) normalises each channel over the batch in "
                                         r"training, and a batch of 1 sample gives it 1 value per channel"):
        net.loss_and_grad(params, x[:1], np.zeros((1, 2)))
    with pytest.raises(ValueError, match=r"batch=2 over 5 samples \(its last batch\) gives it 1 value"):
        net.learn(x, np.zeros((5, 2)), batch=2, epochs=1)
    net.predict(params, x[:1])                                  # inference: any batch
    net.forward(params, x[:1], train=False)
    image = neurons.Network((1, 3, 3)).batchnorm()              # an image's channel has 9 values
    image.loss_and_grad(image.init(0), np.ones((1, 1, 3, 3), np.float32), np.zeros((1, 9)))
    with pytest.raises(ValueError, match="momentum must be in"):
        net.batchnorm(momentum=1.5)
    with pytest.raises(ValueError, match="eps must be > 0"):
        BatchNorm(eps=0)
    with pytest.raises(TypeError, match="momentum must be a finite number"):
        BatchNorm(momentum="0.1")


def test_learn_keeps_the_state_with_the_params_it_belongs_to():
    x, _ = _data((4,), n=24)
    y = (x[:, 0] > 0).astype(np.int64)
    net = (neurons.Network((4,)).dense(8, "relu").batchnorm().dense(2, "softmax")
           .set_objective("cross_entropy").set_optimizer(neurons.optimizers.SGD(lr=0.5)))
    flipped = 1 - y          # the better the fit, the worse the validation loss: the best epoch is early
    t = net.learn(x, y, validation=(x, flipped), batch=6, epochs=4, seed=1)
    best = t.history.best_epoch
    assert best < 4
    again = net.learn(x, y, validation=(x, flipped), batch=6, epochs=best, seed=1)
    for a, b in zip(gradcheck.leaves((t.params, t.state)), gradcheck.leaves((again.params, again.state))):
        np.testing.assert_array_equal(a, b)
    # a diverging run hands back the last good params with their state
    wild = net.set_optimizer(neurons.optimizers.SGD(lr=1e30))
    with pytest.raises(neurons.TrainingError) as err:
        wild.learn(x, y, batch=6, epochs=5)
    result = err.value.result
    net.check_params(result.params)
    net.check_state(result.state)
    assert result.state is not None


# ----------------------------------------------------------------------------------- files

def _bn_net(dropout=None, opt=None):
    return (neurons.Network((1, 6, 6)).convolution(3, 3, padding=1, activation="relu", dropout=dropout)
            .batchnorm().maxpool(2).feedback([Dense(27, "tanh"), BatchNorm(0.2)], 2).dense(3, "softmax")
            .set_objective("cross_entropy").set_optimizer(opt or neurons.optimizers.Adam(lr=0.01)))


def _images(n=40, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 1, 6, 6)).astype(np.float32)
    return x, (x[:, 0, 0, 0] > 0).astype(np.int64) + (x[:, 0, 3, 3] > 0)


def _same(a, b):
    for p, q in zip(gradcheck.leaves((a.params, a.state)), gradcheck.leaves((b.params, b.state))):
        np.testing.assert_array_equal(p, q)
    h, g = a.history.as_dict(), b.history.as_dict()
    for k in ("train_time", "val_time"):
        assert len(h.pop(k)) == len(g.pop(k))
    assert h == g


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_save_and_load_round_trip_the_state(tmp_path, suffix):
    x, y = _images()
    t = _bn_net().learn(x, y, batch=8, epochs=2)
    path = tmp_path / f"bn{suffix}"
    t.save(path)
    u = neurons.load(path)
    assert str(u.network) == str(t.network)
    _same(t, u)
    np.testing.assert_array_equal(u.predict(x), t.predict(x))
    if suffix == ".safetensors":
        from safetensors.numpy import load_file
        names = set(load_file(path))
        assert {"state/1/0", "state/1/1", "state/3/1/0", "state/3/1/1"} <= names
        assert not any(n.startswith("state/0") for n in names)


def test_a_damaged_state_in_a_file_is_refused(tmp_path):
    from safetensors.numpy import load_file, save_file
    from safetensors import safe_open
    x, y = _images()
    path = tmp_path / "bn.safetensors"
    _bn_net().learn(x, y, batch=8, epochs=1).save(path)
    tensors = load_file(path)
    with safe_open(path, "np") as f:
        meta = f.metadata()
    tensors["state/1/1"] = np.ones(4, np.float32)
    save_file(tensors, tmp_path / "shape.safetensors", metadata=meta)
    with pytest.raises(ValueError, match=r"shape.safetensors: the array state/1/1 has shape \(4,\), the config "
                                         r"needs \(3,\)"):
        neurons.load(tmp_path / "shape.safetensors")
    del tensors["state/1/1"]
    save_file(tensors, tmp_path / "missing.safetensors", metadata=meta)
    with pytest.raises(ValueError, match="missing.safetensors: the array state/1/1 is missing"):
        neurons.load(tmp_path / "missing.safetensors")


@pytest.mark.parametrize("dropout", [None, 0.3], ids=["plain", "dropout"])
def test_two_epochs_and_a_resume_equal_four_straight(tmp_path, dropout):
    x, y = _images(48)
    net = _bn_net(dropout)
    validation = (x[:16], y[:16])
    straight = net.learn(x, y, validation=validation, batch=8, epochs=4, seed=3)
    path = tmp_path / "run.safetensors"
    first = net.learn(x, y, validation=validation, batch=8, epochs=2, seed=3, checkpoint=path)
    assert first.history.epochs == 2
    resumed = net.learn(x, y, validation=validation, batch=8, epochs=4, seed=3, resume=path, checkpoint=path)
    _same(resumed, straight)
    again = net.learn(x, y, validation=validation, batch=8, epochs=4, seed=3, resume=path)
    _same(again, straight)
    trained, run, best = neurons.io.load_checkpoint(path)
    net.check_state(trained.state)
    net.check_state(best[1])
    with pytest.raises(ValueError, match="give params \\(or state\\) or resume, not both"):
        net.learn(x, y, batch=8, epochs=4, resume=path, state=trained.state)
