"""The architecture comparison study on a tiny data set: structure, probes, JSON, plots."""
import json

import numpy as np
import pytest

from neurons import compare


def _data(n=60, f=16, k=3, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=3, size=(k, f))
    y = np.arange(n) % k
    x = (centers[y] + rng.normal(size=(n, f))).astype(np.float32)
    return x, y


def test_architectures_cover_the_original_study():
    nets = compare.architectures("mlp", (16,), 3)
    assert set(nets) == {"plain", "skip", "loop2", "loop2+skip", "loop3", "loop3+skip",
                         "feedback2", "feedback2+skip", "feedback3", "feedback3+skip"}
    assert nets["loop3"].loops[0].iterations == 3
    assert nets["feedback2"].layers[2].loops == 2
    assert nets["feedback2+skip"].skips[0] == (2, 3)
    # a block's weights are tied: it has the plain network's parameter count
    assert nets["feedback3"].parameters == nets["plain"].parameters == nets["loop3"].parameters
    assert set(compare.probes(nets["loop2+skip"])) == {"skips off", "loops off", "all off"}
    assert set(compare.probes(nets["plain"])) == set()


def test_study_records_histories_probes_and_plots(tmp_path):
    x, y = _data()
    nets = compare.architectures("mlp", (16,), 3, width=8)
    nets = {k: nets[k] for k in ("plain", "loop2+skip", "feedback2")}
    res = compare.study(nets, (x, y, x, y, x, y), runs=2, epochs=2, batch=16, log=None)
    assert set(res["results"]) == set(nets)
    run = res["results"]["loop2+skip"][1]
    assert run["seed"] == 1
    assert len(run["history"]["train_loss"]) == len(run["history"]["val_time"]) == 2
    assert set(run["probes"]) == {"skips off", "loops off", "all off"}
    assert 0.0 <= run["probes"]["all off"]["accuracy"] <= 1.0
    # probing evaluates the same params through another graph: the numbers differ
    assert run["probes"]["all off"]["loss"] != pytest.approx(run["test_loss"])
    path = tmp_path / "res.json"
    compare.save(res, path)
    assert compare.load(path) == json.loads(json.dumps(res))
    rows = compare.summary(res)
    assert [r[0] for r in rows] == list(nets)
    pytest.importorskip("matplotlib")
    for p in compare.plot(res, tmp_path / "plots"):
        assert (tmp_path / "plots" / p.split("/")[-1]).stat().st_size > 10_000
