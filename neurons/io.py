"""Save and load a trained network: one ``.npz`` file with a JSON config and the arrays.

Nothing is executed on load (no pickle: ``allow_pickle=False``); arrays round-trip bit for bit.
A corrupt or foreign file raises ``ValueError`` saying what is wrong.
"""
from dataclasses import fields
import json
import os
import zipfile

import numpy as np

from . import layers as L

FORMAT = "neurons/1"


def _spec_config(spec):
    if spec.kind == "feedback":
        return {"kind": "feedback", "layers": [_spec_config(s) for s in spec.layers], "loops": spec.loops,
                "inskips": spec.inskips, "outskips": spec.outskips, "accumulation": spec.accumulation,
                "coupling": spec.coupling}
    out = {"kind": spec.kind}
    for f in fields(spec):
        v = getattr(spec, f.name)
        out[f.name] = str(v) if f.name == "activation" else list(v) if isinstance(v, tuple) else v
    return out


_KINDS = {"dense": L.Dense, "convolution": L.Convolution, "deconvolution": L.Deconvolution, "maxpool": L.Maxpool}


def _spec_from(cfg):
    cfg = dict(cfg)
    kind = cfg.pop("kind")
    if kind == "feedback":
        cfg["layers"] = tuple(_spec_from(s) for s in cfg["layers"])
        return L.Feedback(**cfg)
    cfg = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()}
    return _KINDS[kind](**cfg)


def network_config(net):
    """The JSON-safe description of ``net`` (everything but the arrays)."""
    for lp in net.loops:
        if callable(lp.scale):
            raise ValueError(f"cannot save the loop into layer {lp.into}: its scale is a function; "
                             "use a number (the factor for its passes) to make it saveable")
    opt = net.optimizer
    return {
        "input_shape": list(net.input_shape), "dtype": net.dtype,
        "layers": [_spec_config(s) for s in net.layers],
        "skips": [list(s) for s in net.skips],
        "loops": [[lp.outof, lp.into, lp.iterations, lp.scale, lp.inskips] for lp in net.loops],
        "accumulation": [net.skip_accumulation, net.loop_accumulation],
        "optimizer": opt.config() if hasattr(opt, "config") else None,
        "objective": str(net.objective), "clip": list(net.clip) if net.clip else None,
    }


def network_from_config(cfg):
    from .network import Network
    from .optimizers import from_config
    net = Network(tuple(cfg["input_shape"]), cfg["dtype"])
    for spec in cfg["layers"]:
        net = net._add(_spec_from(spec))
    for infrom, into in cfg["skips"]:
        net = net.connect(infrom, into)
    for outof, into, iterations, scale, inskips in cfg["loops"]:
        net = net.loopback(outof, into, iterations, scale, inskips)
    net = net.set_accumulation(*cfg["accumulation"])
    if cfg.get("optimizer"):
        net = net.set_optimizer(from_config(cfg["optimizer"]))
    return net.set_objective(cfg["objective"], tuple(cfg["clip"]) if cfg["clip"] else None)


def _flatten(tree, prefix, out):
    if isinstance(tree, tuple):
        for i, t in enumerate(tree):
            _flatten(t, f"{prefix}/{i}", out)
    else:
        out[prefix] = tree


def save(path, network, params, history=None):
    """Write ``network`` and ``params`` (and a ``History``) to ``path`` (a ``.npz`` file)."""
    network.check_params(params)
    arrays = {}
    _flatten(params, "params", arrays)
    cfg = {"format": FORMAT, "network": network_config(network),
           "history": history.as_dict() if history is not None else None}
    arrays["config.json"] = np.frombuffer(json.dumps(cfg).encode(), np.uint8)
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def load(path):
    """Read a file written by ``save``; returns ``Trained`` (network, params, history)."""
    from .training import History, Trained
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise ValueError(f"{path} is not a neurons network file (not a readable .npz: {e})") from None
    if "config.json" not in data:
        raise ValueError(f"{path} is not a neurons network file (it has no config.json entry)")
    try:
        cfg = json.loads(data.pop("config.json").tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: its config is corrupt ({e})") from None
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        raise ValueError(f"{path}: unknown format {cfg.get('format') if isinstance(cfg, dict) else cfg!r} "
                         f"(this version reads {FORMAT})")
    try:
        net = network_from_config(cfg["network"])
    except (KeyError, TypeError) as e:
        raise ValueError(f"{path}: its network config is corrupt ({e!r})") from None
    template = net.init(0)

    def rebuild(tree, prefix):
        if isinstance(tree, tuple):
            return tuple(rebuild(t, f"{prefix}/{i}") for i, t in enumerate(tree))
        if prefix not in data:
            raise ValueError(f"{path}: the array {prefix} is missing")
        return data[prefix]

    params = rebuild(template, "params")
    net.check_params(params)
    history = History(**cfg["history"]) if cfg.get("history") else History()
    return Trained(net, params, history)
