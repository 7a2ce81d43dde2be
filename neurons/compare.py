"""The original crate's architecture comparison (its releases 2.5.3-2.5.5), as a library function.

For one data set, train each architecture -- plain; skip; loopback x2 and x3; feedback block x2
and x3; each loop and block with and without a skip that bypasses it -- for several runs;
record per-epoch train/validation loss and accuracy and the train and validation time per
epoch; then *probe* each trained network by switching its skips, loops and feedback off at
inference and measuring again. Results are plain JSON; ``plot`` draws them.

    results = compare.study(compare.architectures("cnn", (1, 28, 28), 10), data, runs=3, epochs=5)
    compare.save(results, "compare.json"); compare.plot(results, "plots/")

``study_sweep`` runs the same study on a Dask cluster through ``neurons.sweep``, one run per
config, each worker loading the data set itself (``dataset``).
"""
import functools
import json
import time

import numpy as np

from .layers import Convolution, Dense
from .network import Network
from .optimizers import Adam

def architectures(kind, input_shape, outputs, classify=True, dtype="float32", optimizer=None, width=None):
    """The study's networks by name, for ``kind`` "cnn" or "mlp".

    The middle layer (index 2) keeps its shape, so it can be looped (``loopN``: a loopback with
    N iterations) or made a weight-tied block (``feedbackN``: N loops). ``+skip`` adds
    ``connect(2, 3)``, a skip that bypasses it. ``skip`` is the plain network with that skip.
    """
    optimizer = optimizer or Adam(lr=1e-3)
    last = "softmax" if classify else "linear"
    objective = "cross_entropy" if classify else "mse"
    if kind == "cnn":
        width = width or 8
        middle = Convolution(width, 3, padding=1, activation="relu")

        def base(mid):
            net = (Network(input_shape, dtype).convolution(width, 3, padding=1, activation="relu").maxpool(2))
            net = mid(net)
            return net.maxpool(2).dense(outputs, last)
        plain_mid = lambda n: n.convolution(width, 3, padding=1, activation="relu")  # noqa: E731
    elif kind == "mlp":
        width = width or 64
        middle = Dense(width, "relu")

        def base(mid):
            net = Network(input_shape, dtype).dense(width, "relu").dense(width, "relu")
            net = mid(net)
            return net.dense(outputs, last)
        plain_mid = lambda n: n.dense(width, "relu")  # noqa: E731
    else:
        raise ValueError(f"kind must be 'cnn' or 'mlp', got {kind!r}")

    def finish(net):
        return net.set_optimizer(optimizer).set_objective(objective)

    nets = {"plain": finish(base(plain_mid)), "skip": finish(base(plain_mid).connect(2, 3))}
    for n in (2, 3):
        looped = base(plain_mid).loopback(2, 2, n)
        block = base(lambda net: net.feedback([middle], loops=n))
        nets[f"loop{n}"] = finish(looped)
        nets[f"loop{n}+skip"] = finish(looped.connect(2, 3))
        nets[f"feedback{n}"] = finish(block)
        nets[f"feedback{n}+skip"] = finish(block.connect(2, 3))
    return nets


def probes(net):
    """Variants of ``net`` with parts switched off, by name (only those that change something)."""
    has_skip, has_loop = bool(net.skips), bool(net.loops)
    has_block = any(lay.kind == "feedback" for lay in net.layers)
    out = {}
    if has_skip:
        out["skips off"] = net.probe(skips=False, loops=True, feedback=True)
    if has_loop:
        out["loops off"] = net.probe(skips=True, loops=False, feedback=True)
    if has_block:
        out["feedback off"] = net.probe(skips=True, loops=True, feedback=False)
    if sum((has_skip, has_loop, has_block)) > 1:
        out["all off"] = net.probe()
    return out


def study(networks, data, runs=3, epochs=5, batch=32, seed=0, patience=None, log=print):
    """Train every network ``runs`` times and probe it.

    ``data``: ``(x, y, x_val, y_val, x_test, y_test)``. Returns a JSON-safe dict:
    ``{"config": ..., "results": {name: [run, ...]}}`` where a run holds the history
    (train/val loss, val accuracy, train/val seconds per epoch), the test loss and accuracy,
    and ``probes`` ``{probe name: {"loss", "accuracy"}}`` on the test set.
    """
    x, y, xv, yv, xt, yt = data
    results = {}
    for name, net in networks.items():
        results[name] = []
        for run in range(runs):
            entry = _train(net, data, run, seed + run, epochs, batch, patience)
            results[name].append(entry)
            _log(log, name, entry, runs)
    return _assemble(networks, results, runs, epochs, batch, seed, {"train": len(x), "validation": len(xv),
                                                                    "test": len(xt)})


def study_sweep(kind, input_shape, outputs, data, names=None, runs=3, epochs=5, batch=32, seed=0, patience=None,
                width=None, client=None, workers=None, results=None, progress=None, log=print):
    """``study`` with every run a config of ``neurons.sweep``: on a Dask cluster, each run in a
    worker process of its own, the finished ones kept in ``results`` (JSON lines) for a rerun.

    The networks are ``architectures(kind, input_shape, outputs, width=width)`` (those in
    ``names``, default all) and ``data`` names a data set that each worker loads itself
    (``dataset``). ``client``, ``workers``, ``results``, ``progress``: as for ``neurons.sweep``.
    Returns what ``study`` returns, with the runs in the same order.
    """
    from .sweep import sweep

    networks = architectures(kind, tuple(input_shape), outputs, width=width)
    names = list(networks) if names is None else list(names)
    unknown = [n for n in names if n not in networks]
    if unknown:
        raise ValueError(f"unknown architectures {unknown}; the study has {list(networks)}")
    networks = {n: networks[n] for n in names}
    configs = [{"kind": kind, "input_shape": list(input_shape), "outputs": outputs, "width": width,
                "network": name, "data": data, "run": r, "seed": seed + r, "epochs": epochs, "batch": batch,
                "patience": patience} for name in names for r in range(runs)]
    done = sweep(run_config, configs, client=client, results=results, workers=workers, progress=progress)
    out, samples = {name: [] for name in names}, None
    for config, entry in zip(configs, done):
        samples = entry.pop("samples")
        out[config["network"]].append(entry)
        _log(log, config["network"], entry, runs)
    return _assemble(networks, out, runs, epochs, batch, seed, samples)


def run_config(config):
    """One run of ``study_sweep``: a module-level function, so that a Dask worker can import it.

    ``config``: the architecture (``kind``, ``input_shape``, ``outputs``, ``width``,
    ``network``), the ``data`` set's description (see ``dataset``), ``run``, ``seed``, ``epochs``,
    ``batch``, ``patience``. Returns the run's entry of the study, plus the data's ``samples``.
    """
    net = architectures(config["kind"], tuple(config["input_shape"]), config["outputs"],
                        width=config["width"])[config["network"]]
    data = dataset(config["data"])
    # no bars: the workers share the terminal of the process that started them
    entry = _train(net, data, config["run"], config["seed"], config["epochs"], config["batch"], config["patience"],
                   progress=False)
    x, _, xv, _, xt, _ = data
    return {**entry, "samples": {"train": len(x), "validation": len(xv), "test": len(xt)}}


@functools.lru_cache(maxsize=2)
def _load(name, root):
    from . import datasets
    loaders = {"mnist": lambda: datasets.mnist(root), "fashion": lambda: datasets.fashion_mnist(root),
               "mnist_subset": datasets.mnist_subset}
    if name not in loaders:
        raise ValueError(f"data set must be one of {sorted(loaders)}, got {name!r}")
    return loaders[name]()


def dataset(spec):
    """``(x, y, x_val, y_val, x_test, y_test)`` for ``spec`` ``{"set": "mnist" | "fashion" |
    "mnist_subset", "root": folder or None (NEURONS_DATA), "validation": 5000, "train": None}``:
    the last ``validation`` training images validate, and the first ``train`` of the rest train
    (all when None). Loaded once per process (a worker running many configs reads it once)."""
    x, y, xt, yt = _load(spec["set"], spec.get("root"))
    val = spec.get("validation", 5000)
    if not 0 < val < len(x):
        raise ValueError(f"validation must leave training images: {val} of {len(x)}")
    x, y, xv, yv = x[:-val], y[:-val], x[-val:], y[-val:]
    train = spec.get("train")
    return (x, y, xv, yv, xt, yt) if train is None else (x[:train], y[:train], xv, yv, xt, yt)


def _train(net, data, run, seed, epochs, batch, patience, progress=None):
    """One run: train ``net`` with ``seed``, test it, and test its probes on the test set."""
    x, y, xv, yv, xt, yt = data
    t0 = time.perf_counter()
    validation = (xv, yv, patience) if patience else (xv, yv)
    trained = net.learn(x, y, validation=validation, batch=batch, epochs=epochs, seed=seed, progress=progress)
    loss, acc = trained.evaluate(xt, yt)
    probed = {}
    for pname, pnet in probes(net).items():
        ploss, pacc = pnet.evaluate(trained.params, xt, yt, state=trained.state)
        probed[pname] = {"loss": ploss, "accuracy": pacc}
    return {"run": run, "seed": seed, "history": trained.history.as_dict(),
            "test_loss": loss, "test_accuracy": acc, "probes": probed,
            "parameters": net.parameters, "seconds": time.perf_counter() - t0}


def _log(log, name, entry, runs):
    if log:
        extra = "".join(f", {k} {100 * v['accuracy']:.2f}%" for k, v in entry["probes"].items())
        log(f"{name:<16} run {entry['run'] + 1}/{runs}: test accuracy {100 * entry['test_accuracy']:.2f}%{extra} "
            f"({np.mean(entry['history']['train_time']):.2f} s/epoch train)")


def _assemble(networks, results, runs, epochs, batch, seed, samples):
    return {"config": {"runs": runs, "epochs": epochs, "batch": batch, "seed": seed, "samples": samples,
                       "networks": {k: str(v) for k, v in networks.items()}},
            "results": results}


def save(results, path):
    with open(path, "w") as fh:
        json.dump(results, fh, indent=1)


def load(path):
    with open(path) as fh:
        return json.load(fh)


def summary(results):
    """Rows ``(name, mean test acc, std, median train s/epoch, median val s/epoch, probes)``; the
    median over every epoch of every run, so one disturbed epoch does not move the figure."""
    rows = []
    for name, runs in results["results"].items():
        accs = [r["test_accuracy"] for r in runs]
        probe = {}
        for r in runs:
            for k, v in r["probes"].items():
                probe.setdefault(k, []).append(v["accuracy"])
        rows.append((name, float(np.mean(accs)), float(np.std(accs)),
                     float(np.median([t for r in runs for t in r["history"]["train_time"]])),
                     float(np.median([t for r in runs for t in r["history"]["val_time"]])),
                     {k: float(np.mean(v)) for k, v in probe.items()}))
    return rows


def plot(results, folder, title=None):
    """Draw the comparison: validation curves, test accuracy with probes, and time per epoch."""
    import os

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(folder, exist_ok=True)
    res = results["results"]
    paths = []
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for i, (name, runs) in enumerate(res.items()):
        style = "--" if "+skip" in name else "-"
        color = f"C{i % 10}"
        for key, ax in (("train_loss", axes[0]), ("val_loss", axes[1]), ("val_acc", axes[2])):
            curves = np.array([r["history"][key] for r in runs if r["history"][key]], dtype=object)
            if len(curves) == 0:
                continue
            length = min(len(c) for c in curves)
            mean = np.mean([np.asarray(c[:length], float) for c in curves], axis=0)
            ax.plot(np.arange(1, length + 1), 100 * mean if key == "val_acc" else mean, style, color=color,
                    label=name)
    for ax, t in zip(axes, ("train loss", "validation loss", "validation accuracy (%)")):
        ax.set(xlabel="epoch", title=t)
    axes[2].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    paths.append(os.path.join(folder, "curves.png"))
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    rows = summary(results)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(16, 4.5))
    names = [r[0] for r in rows]
    xs = np.arange(len(rows))
    ax1.bar(xs - 0.3, [100 * r[1] for r in rows], 0.2, yerr=[100 * r[2] for r in rows], label="as trained")
    for j, probe in enumerate(("skips off", "loops off", "feedback off")):
        ax1.bar(xs - 0.1 + 0.2 * j, [100 * r[5].get(probe, np.nan) for r in rows], 0.2, label=probe)
    ax1.set_xticks(xs, names, rotation=45, ha="right", fontsize=8)
    ax1.set(ylabel="test accuracy (%)", title="test accuracy, and probed with parts switched off")
    finite = [100 * r[1] for r in rows] + [100 * v for r in rows for v in r[5].values()]
    ax1.set_ylim(max(0, min(finite) - 5), 100)
    ax1.legend(fontsize=7)
    ax2.bar(xs - 0.2, [r[3] for r in rows], 0.4, label="train")
    ax2.bar(xs + 0.2, [r[4] for r in rows], 0.4, label="validation")
    ax2.set_xticks(xs, names, rotation=45, ha="right", fontsize=8)
    ax2.set(ylabel="seconds per epoch", title="time per epoch")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    paths.append(os.path.join(folder, "accuracy_and_time.png"))
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    return paths
