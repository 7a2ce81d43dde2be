"""save/load: bit-for-bit round trip, no pickle, clear errors for corrupt or foreign files."""
import numpy as np
import pytest

import neurons
from neurons.layers import Convolution, Dense

from . import gradcheck


def _net():
    return (neurons.Network((1, 6, 6), "float64").convolution(2, 3, padding=1, activation="relu", bias=True)
            .feedback([Convolution(2, 3, padding=1, activation="tanh")], loops=2, inskips=True, accumulation="add")
            .maxpool(2).dense(5, "tanh", dropout=0.1).dense(5, "sigmoid").dense(3, "softmax")
            .connect(4, 5).loopback(4, 4, 2, scale=0.5).set_accumulation("mean", "add")
            .set_optimizer(neurons.optimizers.SGD(lr=0.05)).set_objective("cross_entropy", clip=(-2, 2)))


def test_round_trip_bit_for_bit(tmp_path):
    net = _net()
    params = net.init(5)
    history = neurons.History(train_loss=[1.5, 1.25], val_loss=[1.0, 0.5], val_acc=[0.5, 0.75],
                              train_time=[0.1, 0.1], val_time=[0.01, 0.01], best_epoch=2)
    path = tmp_path / "net.npz"
    neurons.save(path, net, params, history)
    t = neurons.load(path)
    assert t.network == net
    assert str(t.network) == str(net)
    for a, b in zip(gradcheck.leaves(params), gradcheck.leaves(t.params)):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    assert t.history.as_dict() == history.as_dict()
    x = np.random.default_rng(0).normal(size=(3, 1, 6, 6))
    np.testing.assert_array_equal(t.predict(x), net.predict(params, x))


def test_trained_save(tmp_path):
    x = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    y = np.arange(8) % 3
    t = neurons.Network((4,)).dense(3, "softmax").set_objective("cross_entropy").learn(x, y, epochs=2)
    t.save(tmp_path / "t.npz")
    u = neurons.load(tmp_path / "t.npz")
    np.testing.assert_array_equal(u.params[0][0], t.params[0][0])
    assert u.history.train_loss == t.history.train_loss


def test_corrupt_and_foreign_files(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip at all")
    with pytest.raises(ValueError, match="not a neurons network file"):
        neurons.load(bad)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, a=np.zeros(3))
    with pytest.raises(ValueError, match="no config.json"):
        neurons.load(foreign)
    net = _net()
    good = tmp_path / "good.npz"
    neurons.save(good, net, net.init())
    with np.load(good) as z:
        data = {k: z[k] for k in z.files}
    del data["params/0/1"]
    broken = tmp_path / "broken.npz"
    np.savez(broken, **data)
    with pytest.raises(ValueError, match="params/0/1 is missing"):
        neurons.load(broken)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ValueError, match="not a neurons network file"):
        neurons.load(truncated)
    with pytest.raises(FileNotFoundError):
        neurons.load(tmp_path / "missing.npz")


def test_callable_scale_cannot_be_saved(tmp_path):
    net = neurons.Network((4,)).dense(4).dense(2).loopback(0, 0, 2, scale=lambda n: 1 / n)
    with pytest.raises(ValueError, match="scale is a function"):
        neurons.save(tmp_path / "x.npz", net, net.init())
