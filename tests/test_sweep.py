"""neurons.sweep on a 2-worker LocalCluster: order, the results file and resuming, a worker
killed mid-task, a config that keeps failing, bit-identity with a fresh single-threaded process.

The functions the workers run are at module level: a worker imports this module to find them.
"""
import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import uuid

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

import neurons  # noqa: E402
from neurons import _tree, compare  # noqa: E402
from neurons.kernels._config import BLOCKS  # noqa: E402
from neurons.sweep import SweepError  # noqa: E402

sweep_module = sys.modules["neurons.sweep"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _mark(config, what="call"):
    """A file per call of a worker function, so that a test counts the calls."""
    path = os.path.join(config["dir"], f"{what}-{config['x']}-{uuid.uuid4().hex}")
    open(path, "w").close()


def _calls(folder, what="call"):
    names = [n for n in os.listdir(folder) if n.startswith(what + "-")]
    return sorted(int(n.split("-")[1]) for n in names)


def square(config):
    _mark(config)
    return {"x": config["x"], "square": config["x"] ** 2, "pair": (config["x"], "done")}


def die_once(config):
    """Kills its own worker process the first time it sees config x == 1."""
    _mark(config)
    if config["x"] == 1 and not _calls(config["dir"], "died"):
        _mark(config, "died")
        os.kill(os.getpid(), signal.SIGKILL)
    return config["x"]


def fail_on_two(config):
    _mark(config)
    if config["x"] == 2:
        raise ValueError(f"no good: {config['x']}")
    return config["x"]


def threads(config):
    import numba

    from neurons.kernels import _config
    return {"numba": numba.config.NUMBA_NUM_THREADS, "running": numba.get_num_threads(), "blocks": _config.BLOCKS,
            "env": {k: os.environ.get(k) for k in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")},
            "pid": os.getpid()}


def train(config):
    """A tiny training; its bits depend on how the kernels split their work (the convolution's
    weight gradient sums one part per block of the batch)."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(40, 1, 6, 6)).astype(np.float32)
    y = (x[:, 0, :3].sum((1, 2)) > 0).astype(np.int64) + (x[:, 0, 3, 3] > 1)
    net = (neurons.Network((1, 6, 6)).convolution(4, 3, padding=1, activation="relu").dense(3, "softmax")
           .set_optimizer(neurons.optimizers.Adam(lr=0.01)).set_objective("cross_entropy"))
    trained = net.learn(x, y, batch=config["batch"], epochs=2, seed=config["seed"], progress=False)
    digest = hashlib.sha256(b"".join(np.ascontiguousarray(p).tobytes() for p in _tree.leaves(trained.params)))
    return {"loss": trained.history.train_loss, "params": digest.hexdigest()}


@pytest.fixture(scope="module")
def client():
    """The cluster ``sweep(client=None)`` starts (one Dask thread and one Numba thread per worker
    process, allowed_failures=0), with 2 workers, shared by the tests of this module."""
    with contextlib.contextmanager(sweep_module._local)(distributed, 2) as c:
        yield c


def test_results_come_in_config_order_and_are_written(client, tmp_path):
    configs = [{"x": x, "dir": str(tmp_path)} for x in (3, 0, 5, 1, 4, 2)] + [{"dir": str(tmp_path), "x": 5}]
    path = tmp_path / "runs.jsonl"
    out = neurons.sweep(square, configs, client=client, results=path, progress=False)
    # tuples come back as JSON gives them back; an equal config (keys in another order) ran once
    assert out == [{"x": c["x"], "square": c["x"] ** 2, "pair": [c["x"], "done"]} for c in configs]
    assert _calls(tmp_path) == [0, 1, 2, 3, 4, 5]
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted(entry["config"]["x"] for entry in lines) == [0, 1, 2, 3, 4, 5]
    assert all(entry["result"]["square"] == entry["config"]["x"] ** 2 for entry in lines)
    assert client.status == "running"          # the caller's client: left open


def test_a_rerun_skips_what_the_results_file_holds(client, tmp_path):
    configs = [{"x": x, "dir": str(tmp_path)} for x in range(5)]
    path = tmp_path / "runs.jsonl"
    done = [json.dumps({"config": configs[x], "result": {"x": x, "square": -1, "pair": [x, "old"]}}) for x in (1, 3)]
    # and a line cut short by a kill while it was being written: that config runs again
    path.write_text("\n".join(done) + '\n{"config": {"x": 4, "dir": "' + str(tmp_path) + '"}, "resu')
    out = neurons.sweep(square, configs, client=client, results=path, progress=False)
    assert _calls(tmp_path) == [0, 2, 4]
    assert [r["square"] for r in out] == [0, -1, 4, -1, 16]   # 1 and 3 from the file, not run again
    lines = path.read_text().splitlines()
    assert len(lines) == 6 and lines[:2] == done
    assert sorted(json.loads(line)["config"]["x"] for line in lines[3:]) == [0, 2, 4]
    # everything done: nothing runs, and no cluster is even needed
    assert neurons.sweep(square, configs, client=object(), results=path, progress=False) == out
    assert _calls(tmp_path) == [0, 2, 4]


def test_a_killed_worker_is_retried(client, tmp_path):
    configs = [{"x": x, "dir": str(tmp_path)} for x in range(4)]
    out = neurons.sweep(die_once, configs, client=client, results=tmp_path / "runs.jsonl", progress=False)
    assert out == [0, 1, 2, 3]
    assert _calls(tmp_path, "died") == [1]
    assert _calls(tmp_path) == [0, 1, 1, 2, 3]       # only the config whose worker died ran again
    assert len((tmp_path / "runs.jsonl").read_text().splitlines()) == 4
    client.wait_for_workers(2, timeout=60)          # the nanny has started a new one


def test_a_config_that_keeps_failing_is_raised_after_the_others(client, tmp_path):
    configs = [{"x": x, "dir": str(tmp_path)} for x in range(4)]
    path = tmp_path / "runs.jsonl"
    with pytest.raises(SweepError) as info:
        neurons.sweep(fail_on_two, configs, client=client, results=path, retries=1, progress=False)
    message = str(info.value)
    assert '{"dir":"' + str(tmp_path) + '","x":2}' in message and "ValueError: no good: 2" in message
    assert "2 attempts" in message
    assert isinstance(info.value.__cause__, ValueError)
    assert [i for i, _, _ in info.value.failures] == [2]
    assert info.value.results == [0, 1, None, 3]
    assert _calls(tmp_path) == [0, 1, 2, 2, 3]       # retried once
    assert sorted(json.loads(line)["config"]["x"] for line in path.read_text().splitlines()) == [0, 1, 3]


def test_workers_run_one_numba_thread(client, tmp_path):
    info = neurons.sweep(threads, [{"x": x} for x in range(4)], client=client, progress=False)
    for worker in info:
        assert worker["numba"] == worker["running"] == worker["blocks"] == 1
        assert worker["env"] == {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    assert len({w["pid"] for w in info}) >= 1 and all(w["pid"] != os.getpid() for w in info)


def _fresh_process(fn, config):
    env = {**os.environ, "NUMBA_NUM_THREADS": "1"}
    code = f"import json, tests.test_sweep as t; print(json.dumps(t.{fn.__name__}({config!r})))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_same_seeds_give_the_bits_of_a_fresh_single_threaded_process(client):
    configs = [{"seed": 0, "batch": 40}, {"seed": 1, "batch": 40}]
    serial = _fresh_process(train, configs[1])
    out = neurons.sweep(train, configs, client=client, progress=False)
    assert out[1] == serial
    assert out[0] != out[1]
    if BLOCKS > 1:
        # the check has teeth: this process splits the batch over more blocks, with other bits
        assert train(configs[1])["params"] != serial["params"]


def test_client_none_starts_and_closes_its_own_cluster(monkeypatch):
    monkeypatch.setenv("NUMBA_NUM_THREADS", "2")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    import psutil
    info = neurons.sweep(threads, [{"x": 0}, {"x": 1}], workers=1, progress=False)
    assert [w["numba"] for w in info] == [1, 1] and info[0]["pid"] == info[1]["pid"] != os.getpid()
    assert not psutil.pid_exists(info[0]["pid"])        # its worker is gone with its cluster
    # this process's environment is given back as it was
    assert os.environ["NUMBA_NUM_THREADS"] == "2" and "OMP_NUM_THREADS" not in os.environ


def test_compare_study_runs_through_sweep(client, tmp_path):
    data = {"set": "mnist_subset", "root": None, "validation": 500, "train": 300}
    path = tmp_path / "runs.jsonl"
    args = dict(names=["plain", "loop2+skip"], runs=2, epochs=1, batch=50, width=8, client=client, progress=False,
                log=None)
    res = compare.study_sweep("mlp", (1, 28, 28), 10, data, results=path, **args)
    nets = compare.architectures("mlp", (1, 28, 28), 10, width=8)
    nets = {k: nets[k] for k in ("plain", "loop2+skip")}
    ref = compare.study(nets, compare.dataset(data), runs=2, epochs=1, batch=50, log=None)
    assert res["config"] == ref["config"]
    assert res["config"]["samples"] == {"train": 300, "validation": 500, "test": 1000}
    assert list(res["results"]) == list(ref["results"])
    for name in nets:
        for got, want in zip(res["results"][name], ref["results"][name]):
            assert list(got) == list(want)
            assert (got["run"], got["seed"], got["parameters"]) == (want["run"], want["seed"], want["parameters"])
            assert set(got["probes"]) == set(want["probes"])
            assert got["test_accuracy"] == pytest.approx(want["test_accuracy"], abs=0.02)
    assert len(path.read_text().splitlines()) == 4
    # a rerun reads every run back from the file
    assert compare.study_sweep("mlp", (1, 28, 28), 10, data, results=path, **args) == res


def test_arguments_are_checked_before_anything_runs():
    with pytest.raises(TypeError, match="config 1 must be JSON-able"):
        neurons.sweep(square, [{"x": 1}, {"x": object()}])
    with pytest.raises(ValueError, match="retries"):
        neurons.sweep(square, [{"x": 1}], retries=-1)
    with pytest.raises(ValueError, match="without client"):
        neurons.sweep(square, [{"x": 1}], client="tcp://127.0.0.1:1", workers=2)
    with pytest.raises(TypeError, match="client must be"):
        neurons.sweep(square, [{"x": 1}], client=3)


def test_missing_dask_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(ImportError, match=r'pip install "neurons\[distributed\]"'):
        neurons.sweep(square, [{"x": 1}])
