"""learn(): determinism, shuffling, early stopping with the best params, NaN handling, history."""
import io

import numpy as np
import pytest

import neurons
from neurons.optimizers import SGD

from . import gradcheck


def _regression(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    y = (x @ np.array([[1.0], [-2.0], [0.5]]) + 0.3).astype(np.float32)
    return x, y


def _net(lr=0.05, dropout=None):
    return (neurons.Network((3,)).dense(8, "tanh", dropout=dropout).dense(1)
            .set_optimizer(SGD(lr=lr)).set_objective("mse"))


def test_same_seed_same_params_bit_for_bit():
    x, y = _regression()
    a = _net(dropout=0.2).learn(x, y, batch=8, epochs=5, seed=3)
    b = _net(dropout=0.2).learn(x, y, batch=8, epochs=5, seed=3)
    c = _net(dropout=0.2).learn(x, y, batch=8, epochs=5, seed=4)
    for p, q in zip(gradcheck.leaves(a.params), gradcheck.leaves(b.params)):
        np.testing.assert_array_equal(p, q)
    assert any(not np.array_equal(p, q) for p, q in zip(gradcheck.leaves(a.params), gradcheck.leaves(c.params)))
    assert a.history.train_loss == b.history.train_loss


def test_training_reduces_the_loss_and_records_history():
    x, y = _regression()
    t = _net().learn(x, y, validation=(x, y), batch=16, epochs=30)
    h = t.history
    assert h.epochs == 30 and len(h.val_loss) == len(h.val_acc) == len(h.train_time) == len(h.val_time) == 30
    assert h.train_loss[-1] < 0.2 * h.train_loss[0]
    loss, _ = t.evaluate(x, y)
    assert loss == pytest.approx(min(h.val_loss), rel=1e-6)


def test_batch_gradient_is_the_mean_over_the_batch():
    # the batch loss and gradient are the means of the per-sample ones (a sum would be 10x), and
    # one epoch of one batch with plain SGD steps by exactly lr times that mean
    x, y = _regression(n=10)
    net = _net(lr=0.1)
    p0 = net.init(0)
    loss, g = net.loss_and_grad(p0, x, y)
    singles = [net.loss_and_grad(p0, x[i:i + 1], y[i:i + 1]) for i in range(10)]
    assert loss == pytest.approx(np.mean([s[0] for s in singles]), rel=1e-6)
    for j, d in enumerate(gradcheck.leaves(g)):
        mean = np.mean([gradcheck.leaves(s[1])[j] for s in singles], axis=0)
        np.testing.assert_allclose(d, mean, rtol=1e-5, atol=1e-7)
    t = net.learn(x, y, batch=10, epochs=1, shuffle=False, params=p0)
    for p, q, d in zip(gradcheck.leaves(t.params), gradcheck.leaves(p0), gradcheck.leaves(g)):
        np.testing.assert_allclose(p, q - np.float32(0.1) * d, rtol=1e-6, atol=1e-7)


def test_early_stopping_stops_and_restores_the_best_params():
    x, y = _regression()
    # the validation targets are the negation of the training targets: the better the fit,
    # the worse the validation loss, so it rises from the first epoch on
    t = _net(lr=0.05).learn(x, y, validation=(x, -y, 3), batch=16, epochs=50)
    h = t.history
    assert h.stopped_early and h.epochs < 50
    best = int(np.argmin(h.val_loss))
    assert h.best_epoch == best + 1
    assert h.epochs - h.best_epoch >= 3
    loss, _ = t.evaluate(x, -y)
    assert loss == pytest.approx(h.val_loss[best], rel=1e-6)
    assert loss < h.val_loss[-1]


@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_nan_loss_raises_with_the_last_good_params():
    x, y = _regression()
    with pytest.raises(neurons.TrainingError, match=r"at epoch \d+, batch \d+") as info:
        _net(lr=1e6).learn(x, y * 1e3, batch=8, epochs=20)
    result = info.value.result
    assert isinstance(result, neurons.Trained)
    assert all(np.isfinite(p).all() for p in gradcheck.leaves(result.params))
    assert np.isfinite(result.network.loss_and_grad(result.params, x, y * 1e3)[0])


def test_epoch_table_is_printed_every_n_epochs():
    x, y = _regression()
    out = io.StringIO()
    from neurons.training import learn
    learn(_net(), x, y, validation=(x, y), epochs=6, print_every=2, out=out)
    rows = [line.split()[0] for line in out.getvalue().splitlines()[1:]]
    assert rows == ["2", "4", "6"]
    assert "val loss" in out.getvalue().splitlines()[0]


def test_accuracy_is_blank_for_multi_output_targets_that_are_not_one_hot():
    from neurons.training import learn
    rng = np.random.default_rng(5)
    x = rng.random((40, 3)).astype(np.float32)
    net = neurons.Network((3,)).dense(3, "sigmoid").set_optimizer(SGD(lr=0.1)).set_objective("mse")
    out = io.StringIO()
    images = learn(net, x, x, validation=(x, x), epochs=2, print_every=1, out=out)   # an autoencoder
    assert np.isnan(images.history.val_acc).all()
    assert [line.split()[3] for line in out.getvalue().splitlines()[1:]] == ["-", "-"]
    labels = learn(net, x, np.argmax(x, axis=1), validation=(x, np.argmax(x, axis=1)), epochs=2)
    assert np.isfinite(labels.history.val_acc).all() and 0 <= labels.history.val_acc[-1] <= 1


def test_learn_continues_from_given_params_without_touching_them():
    x, y = _regression()
    net = _net()
    p0 = net.init(7)
    snapshot = [a.copy() for a in gradcheck.leaves(p0)]
    net.learn(x, y, epochs=2, params=p0)
    for a, b in zip(gradcheck.leaves(p0), snapshot):
        np.testing.assert_array_equal(a, b)


def test_xor_is_solved():
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
    y = np.array([[0], [1], [1], [0]], np.float32)
    net = (neurons.Network((2,)).dense(8, "tanh").dense(1, "sigmoid")
           .set_optimizer(SGD(lr=0.5)).set_objective("mse"))
    t = net.learn(x, y, batch=4, epochs=2000, seed=1)
    np.testing.assert_array_equal(np.round(t.predict(x)), y)
    assert t.evaluate(x, y)[1] == 1.0


@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_an_update_that_overflows_raises_with_finite_params():
    # lr 3e38: the first loss is finite, the first update overflows float32: the error comes there
    x, y = _regression()
    with pytest.raises(neurons.TrainingError, match=r"the update at epoch 1, batch 1 made params\[\d\]\[\d\] "
                                                    r"non-finite") as info:
        _net(lr=3e38).learn(x, y * 100, batch=8, epochs=2)
    p0 = _net().init(0)
    for a, b in zip(gradcheck.leaves(info.value.result.params), gradcheck.leaves(p0)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.filterwarnings("ignore:overflow encountered", "ignore:invalid value")
def test_a_diverging_cnn_stops_with_finite_params():
    # the quickstart CNN with SGD(lr=1e14) on shipped MNIST digits: before NaN propagated through
    # ReLU and max-pool, this trained on with NaN weights and handed back 19,603 of them
    x, labels, _, _ = neurons.datasets.mnist_subset()
    net = (neurons.Network((1, 28, 28)).convolution(5, 3, padding=1, activation="relu").maxpool()
           .dense(100, "relu", bias=False).dense(10, "softmax", bias=False)
           .set_optimizer(SGD(lr=1e14)).set_objective("cross_entropy"))
    with pytest.raises(neurons.TrainingError, match=r"at epoch 1, batch \d+") as info:
        net.learn(x[:640], labels[:640], epochs=3)
    result = info.value.result
    assert all(np.isfinite(p).all() for p in gradcheck.leaves(result.params))


class _InterruptAt:
    """An optimizer that acts as ``inner`` but raises KeyboardInterrupt at update number ``at``."""

    def __init__(self, inner, at):
        self.inner, self.at, self.calls = inner, at, 0

    def init(self, params):
        return self.inner.init(params)

    def update(self, grads, state, params):
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        return self.inner.update(grads, state, params)


def test_ctrl_c_hands_back_the_last_finished_step():
    x, y = _regression(n=32)
    net = _net(dropout=0.1)
    two = net.learn(x, y, validation=(x, y), batch=8, epochs=2, seed=5)        # 4 steps an epoch
    with pytest.raises(KeyboardInterrupt) as info:
        net.set_optimizer(_InterruptAt(SGD(lr=0.05), 10)).learn(x, y, validation=(x, y), batch=8, epochs=5,
                                                                 seed=5)
    assert isinstance(info.value, neurons.TrainingInterrupted)
    assert "epoch 3, batch 2" in str(info.value)
    result = info.value.result
    h = result.history
    assert h.epochs == 2 and len(h.val_loss) == len(h.train_time) == 2 and h.train_loss == two.history.train_loss
    # the params after 2 epochs and the first step of epoch 3 (the 9th update; the 10th raised)
    order = np.random.default_rng([5, 2]).permutation(32)[:8]
    from neurons.training import _step_seed
    _, g = net._loss_and_grad(two.params, net.check_x(x[order]), net.check_y(y[order], 8), True, _step_seed(5, 2, 0))
    want, _ = SGD(lr=0.05).update(g, SGD(lr=0.05).init(two.params), two.params)
    for a, b in zip(gradcheck.leaves(result.params), gradcheck.leaves(want)):
        np.testing.assert_array_equal(a, b)


def test_ctrl_c_in_a_real_run_is_caught_with_the_result(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(
        "import os, signal, threading, numpy as np, neurons\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"   # a background job starts with it ignored
        "x = np.random.default_rng(0).random((4000, 20)).astype(np.float32)\n"
        "y = x.sum(1, keepdims=True)\n"
        "net = neurons.Network((20,)).dense(64, 'tanh').dense(1)\n"
        "net.learn(x[:64], y[:64], epochs=1)\n"                       # compiled before the clock starts
        "threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGINT)).start()\n"
        "try:\n"
        "    net.learn(x, y, batch=4, epochs=10**6)\n"
        "except neurons.TrainingInterrupted as e:\n"
        "    p = e.result.params\n"
        "    print('caught', isinstance(e, KeyboardInterrupt), all(np.isfinite(a).all() for t in p for a in t),\n"
        "          e.result.history.epochs, len(e.result.history.train_time))\n")
    import subprocess
    import sys
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    words = out.stdout.split()
    assert words[:3] == ["caught", "True", "True"] and words[3] == words[4]


def test_a_ctrl_c_swallowed_inside_a_step_still_stops_the_run(monkeypatch):
    """C code between steps may clear a KeyboardInterrupt (seen once in CI, in a compiled chunk's
    call): learn notes the key as well, and stops after the step it was pressed in."""
    import signal
    rng = np.random.default_rng(0)
    x, y = rng.random((40, 3)), rng.random((40, 1))
    net = neurons.Network((3,), "float64").dense(4, "relu", dropout=0.1).dense(1)     # the step-by-step path
    step = type(net)._loss_grad_state
    calls = []

    def swallowing(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            try:
                signal.raise_signal(signal.SIGINT)
                for _ in range(10):         # the handler runs between bytecodes: inside the try
                    pass
            except KeyboardInterrupt:
                pass
        return step(self, *args, **kwargs)

    monkeypatch.setattr(type(net), "_loss_grad_state", swallowing)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)     # a background job starts with it ignored
    try:
        with pytest.raises(neurons.TrainingInterrupted):
            net.learn(x, y, batch=2, epochs=5)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler     # put back
    finally:
        signal.signal(signal.SIGINT, previous)
    assert len(calls) == 3
