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
    # every recorded figure is what training that network with that run's seed gives
    for name, net in nets.items():
        assert [r["seed"] for r in res["results"][name]] == [0, 1]
        for run in res["results"][name]:
            t = net.learn(x, y, validation=(x, y), batch=16, epochs=2, seed=run["seed"])
            assert run["history"]["train_loss"] == t.history.train_loss
            assert run["history"]["val_acc"] == t.history.val_acc
            assert (run["test_loss"], run["test_accuracy"]) == t.evaluate(x, y)
            probed = {k: p.evaluate(t.params, x, y) for k, p in compare.probes(net).items()}
            assert {k: (v["loss"], v["accuracy"]) for k, v in run["probes"].items()} == probed
    assert set(res["results"]["loop2+skip"][0]["probes"]) == {"skips off", "loops off", "all off"}
    path = tmp_path / "res.json"
    compare.save(res, path)
    assert compare.load(path) == json.loads(json.dumps(res))
    rows = compare.summary(res)
    assert [r[0] for r in rows] == list(nets)
    for row, runs in zip(rows, res["results"].values()):
        accs = [r["test_accuracy"] for r in runs]
        assert row[1:3] == (np.mean(accs), np.std(accs))
        assert row[5] == {k: np.mean([r["probes"][k]["accuracy"] for r in runs]) for k in runs[0]["probes"]}
    pytest.importorskip("matplotlib")
    from matplotlib.image import imread
    paths = compare.plot(res, tmp_path / "plots")
    assert [p.split("/")[-1] for p in paths] == ["curves.png", "accuracy_and_time.png"]
    for p in paths:
        image = imread(p)
        assert image.shape[:2] == (450, 1600) and image[..., :3].std() > 0.05    # drawn, not blank
