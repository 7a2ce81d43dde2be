"""Checkpoints: resume bit for bit, refused when foreign, and never half written."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import neurons
from neurons.optimizers import SGD, Adam

from . import gradcheck


def _data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0)


def _net(opt, dropout=None):
    return (neurons.Network((6,)).dense(12, "relu", dropout=dropout).dense(3, "softmax")
            .set_optimizer(opt).set_objective("cross_entropy"))


def _same(a, b):
    for p, q in zip(gradcheck.leaves(a.params), gradcheck.leaves(b.params)):
        np.testing.assert_array_equal(p, q)
    h, g = a.history.as_dict(), b.history.as_dict()
    for k in ("train_time", "val_time"):
        assert len(h.pop(k)) == len(g.pop(k))
    assert h == g


@pytest.mark.parametrize("opt, dropout", [(SGD(lr=0.1), None), (Adam(lr=0.01), None), (Adam(lr=0.01), 0.3)],
                         ids=["sgd", "adam", "adam+dropout"])
def test_two_epochs_and_a_resume_equal_four_straight(tmp_path, opt, dropout):
    x, y = _data()
    net = _net(opt, dropout)
    validation = (x[:16], y[:16])
    straight = net.learn(x, y, validation=validation, batch=8, epochs=4, seed=3)
    path = tmp_path / "run.safetensors"
    first = net.learn(x, y, validation=validation, batch=8, epochs=2, seed=3, checkpoint=path)
    assert first.history.epochs == 2
    resumed = net.learn(x, y, validation=validation, batch=8, epochs=4, seed=3, resume=path, checkpoint=path)
    _same(resumed, straight)
    # the checkpoint after the end holds the whole run; resuming it again trains nothing more
    again = net.learn(x, y, validation=validation, batch=8, epochs=4, seed=3, resume=path)
    _same(again, straight)
    if isinstance(opt, Adam):
        assert resumed.optimizer_state.count == 4 * 6
        np.testing.assert_array_equal(resumed.optimizer_state.mu[0][0], straight.optimizer_state.mu[0][0])


def test_a_checkpoint_is_a_safetensors_file_with_the_run_in_it(tmp_path):
    from safetensors.numpy import load_file
    from safetensors import safe_open
    x, y = _data()
    path = tmp_path / "run.safetensors"
    _net(Adam(lr=0.01)).learn(x, y, validation=(x, y, 3), batch=8, epochs=3, checkpoint=path, checkpoint_every=2)
    tensors = load_file(path)
    assert set(tensors) == {f"{p}/{i}/{j}" for p in ("params", "best", "optimizer/mu", "optimizer/nu")
                            for i in range(2) for j in range(2)}
    with safe_open(path, "np") as f:
        meta = {k: json.loads(v) for k, v in f.metadata().items()}
    assert meta["format"] == "neurons/2" and meta["optimizer_state"] == {"count": 18}
    assert len(meta["history"]["train_loss"]) == 3                 # written after epoch 2 and at the end
    assert meta["run"]["batch"] == 8 and meta["run"]["seed"] == 0 and meta["run"]["best"] is True
    assert meta["network"]["layers"][0] == {"kind": "dense", "units": 12, "activation": "relu", "bias": True,
                                            "dropout": None}


def test_a_foreign_or_damaged_checkpoint_is_refused_with_its_path(tmp_path):
    x, y = _data()
    path = tmp_path / "run.safetensors"
    _net(SGD(lr=0.1)).learn(x, y, batch=8, epochs=1, checkpoint=path)
    wider = neurons.Network((6,)).dense(13, "relu").dense(3, "softmax").set_optimizer(SGD(lr=0.1)) \
        .set_objective("cross_entropy")
    with pytest.raises(ValueError, match=r"run.safetensors: a checkpoint of another network \(layers: .*'units': 12.* there, .*'units': 13.* here\)"):
        wider.learn(x, y, batch=8, epochs=2, resume=path)
    with pytest.raises(ValueError, match=r"another network \(optimizer: .*'lr': 0.1.* there, .*'lr': 0.2.* here\)"):
        _net(SGD(lr=0.2)).learn(x, y, batch=8, epochs=2, resume=path)
    with pytest.raises(ValueError, match=r"a checkpoint of another run \(batch 8 there, 16 here\)"):
        _net(SGD(lr=0.1)).learn(x, y, batch=16, epochs=2, resume=path)
    with pytest.raises(ValueError, match=r"a checkpoint of another run \(data \d+ there, \d+ here\)"):
        _net(SGD(lr=0.1)).learn(x * 2, y, batch=8, epochs=2, resume=path)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match=f"^{cut}: not a neurons network file"):
        _net(SGD(lr=0.1)).learn(x, y, batch=8, epochs=2, resume=cut)
    plain = tmp_path / "plain.safetensors"
    _net(SGD(lr=0.1)).learn(x, y, epochs=1).save(plain)
    with pytest.raises(ValueError, match=f"^{plain}: not a checkpoint"):
        _net(SGD(lr=0.1)).learn(x, y, epochs=2, resume=plain)
    with pytest.raises(FileNotFoundError):
        _net(SGD(lr=0.1)).learn(x, y, epochs=2, resume=tmp_path / "missing.safetensors")


def test_resume_from_the_checkpoint_path_starts_afresh_when_it_is_missing(tmp_path):
    x, y = _data()
    path = tmp_path / "run.safetensors"
    a = _net(SGD(lr=0.1)).learn(x, y, batch=8, epochs=2, checkpoint=path, resume=path)
    _same(a, _net(SGD(lr=0.1)).learn(x, y, batch=8, epochs=2))
    assert path.exists()


def test_an_early_stop_is_checkpointed_and_stays_stopped(tmp_path):
    x, y = _data()
    path = tmp_path / "run.safetensors"
    net = _net(SGD(lr=0.5))
    flipped = (2 - y)                      # the better the fit, the worse the validation loss
    t = net.learn(x, y, validation=(x, flipped, 2), batch=8, epochs=50, checkpoint=path, checkpoint_every=100)
    assert t.history.stopped_early
    again = net.learn(x, y, validation=(x, flipped, 2), batch=8, epochs=50, resume=path)
    _same(again, t)


_WRITER = """
import sys, numpy as np, neurons
x = np.random.default_rng(0).normal(size=(64, 300)).astype(np.float32)
net = neurons.Network((300,)).dense(400, "tanh").dense(300).set_optimizer(neurons.optimizers.Adam(lr=1e-4))
net.learn(x, x, batch=64, epochs=10**6, checkpoint=sys.argv[1])
"""


def test_a_kill_while_checkpointing_leaves_a_loadable_file(tmp_path):
    # each epoch is one step and a checkpoint of about 3 MB (params and Adam's moments), so much of
    # the writer's time is spent writing: SIGKILL at random moments lands in writes too (13 of 30
    # kills did when this was measured: they left the temporary file behind)
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    rng = np.random.default_rng(0)
    epochs = []
    for i in range(8):
        path = tmp_path / f"run{i}.safetensors"
        proc = subprocess.Popen([sys.executable, str(script), str(path)], stderr=subprocess.PIPE)
        start = time.monotonic()
        while not path.exists() and time.monotonic() - start < 120 and proc.poll() is None:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert path.exists(), proc.stderr.read().decode()
        trained, run, _ = neurons.io.load_checkpoint(path)          # never half a file
        assert trained.optimizer_state.count == trained.history.epochs >= 1
        epochs.append(trained.history.epochs)
    assert max(epochs) > 1
    # a kill mid-write leaves at most the one temporary file, which the next write replaces
    assert all(p.endswith((".py", ".safetensors", ".safetensors.tmp")) for p in os.listdir(tmp_path))


def test_progress_bar_and_compile_note(tmp_path):
    # a fresh process with an empty kernel cache: the note comes once, when compiling starts, and
    # the bar shows the loss and the samples per second on stderr
    script = tmp_path / "bar.py"
    script.write_text(
        "import numpy as np, neurons\n"
        "x = np.random.default_rng(0).normal(size=(64, 5)).astype(np.float32)\n"
        "net = neurons.Network((5,)).dense(4, 'tanh').dense(1)\n"
        "net.learn(x, x[:, :1], batch=8, epochs=2, progress=True)\n"
        "net.learn(x, x[:, :1], batch=8, epochs=1, progress=False)\n")
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"), TQDM_MININTERVAL="0")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stderr.count("compiling kernels for this network (first run only, cached afterwards)") == 1
    assert "epoch 2/2" in out.stderr and "loss " in out.stderr and "sample/s" in out.stderr
    assert out.stdout == ""
