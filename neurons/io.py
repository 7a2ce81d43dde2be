"""Save and load a trained network: one ``.npz`` file with a JSON config and the arrays.

Nothing is executed on load (no pickle); arrays round-trip bit for bit. ``load`` reads the
config first (at most ``MAX_CONFIG`` bytes), builds the network from it, and takes from the
network each array's name, shape and dtype; each array's ``.npy`` header and stored size are
checked against those before its data is read, and members the network does not need are never
read. So a file cannot make ``load`` allocate more than it holds, and the zip's CRC-32 catches a
changed byte in the config or an array. A missing file raises ``FileNotFoundError``; any corrupt
or foreign file a ``ValueError`` that starts with the path and says what is wrong.
"""
from dataclasses import fields
import json
import math
import os
import re
import reprlib
import zipfile
import zlib

import numpy as np

from . import _tree, layers as L

FORMAT = "neurons/1"
MAX_CONFIG = 4 << 20
"""The largest config ``load`` reads, in bytes (a 10 000-epoch history takes about 1 MB)."""


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
_NETWORK_KEYS = ("input_shape", "dtype", "layers", "skips", "loops", "accumulation", "optimizer", "objective",
                 "clip")
_repr = reprlib.Repr()
_repr.maxlevel, _repr.maxstring, _repr.maxother = 2, 40, 40
_short = _repr.repr     # config values in messages: short whatever their size or depth


def _list(value, what, n=None):
    if not isinstance(value, list) or (n is not None and len(value) != n):
        raise TypeError(f"{what} must be a list{f' of {n} items' if n else ''}, not {_short(value)}")
    return value


def _spec_from(cfg, where, in_block=False):
    if not isinstance(cfg, dict) or not isinstance(cfg.get("kind"), str):
        raise TypeError(f"{where} must be an object with a 'kind' name, not {_short(cfg)}")
    cfg = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()}
    kind = cfg.pop("kind")
    if kind == "feedback" and not in_block:
        if not isinstance(cfg.get("layers"), tuple):
            raise TypeError(f"{where} (feedback) must have a list of layers, not {_short(cfg.get('layers'))}")
        cfg["layers"] = tuple(_spec_from(s, f"{where}, block layer {j}", True) for j, s in enumerate(cfg["layers"]))
        cls = L.Feedback
    elif kind in _KINDS:
        cls = _KINDS[kind]
    else:
        raise ValueError(f"{where} has the unknown kind {_short(kind)}; known: {', '.join(_KINDS)}"
                         + ("" if in_block else ", feedback"))
    try:
        return cls(**cfg)
    except TypeError as e:          # unknown or missing fields, wrong types
        raise TypeError(f"{where} ({kind}): {e}") from None
    except ValueError as e:
        raise ValueError(f"{where} ({kind}): {e}") from None


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
    """The ``Network`` ``network_config`` describes; ``ValueError`` or ``TypeError`` if it is malformed."""
    from .network import Network
    from .optimizers import from_config
    if not isinstance(cfg, dict) or sorted(cfg) != sorted(_NETWORK_KEYS):
        raise ValueError(f"the network config must be an object with the keys {', '.join(_NETWORK_KEYS)}, "
                         f"not {_short(cfg)}")
    if cfg["dtype"] not in ("float32", "float64"):
        raise TypeError(f"dtype must be 'float32' or 'float64', not {_short(cfg['dtype'])}")
    net = Network(tuple(_list(cfg["input_shape"], "input_shape")), cfg["dtype"])
    for i, spec in enumerate(_list(cfg["layers"], "layers")):
        net = net._add(_spec_from(spec, f"layer {i}"))
    for skip in _list(cfg["skips"], "skips"):
        net = net.connect(*_list(skip, "a skip", 2))
    for loop in _list(cfg["loops"], "loops"):
        net = net.loopback(*_list(loop, "a loop", 5))
    net = net.set_accumulation(*_list(cfg["accumulation"], "accumulation", 2))
    if cfg["optimizer"] is not None:
        if not isinstance(cfg["optimizer"], dict):
            raise TypeError(f"optimizer must be an object or null, not {_short(cfg['optimizer'])}")
        net = net.set_optimizer(from_config(cfg["optimizer"]))
    clip = None if cfg["clip"] is None else tuple(_list(cfg["clip"], "clip", 2))
    return net.set_objective(cfg["objective"], clip)


def save(path, network, params, history=None):
    """Write ``network`` and ``params`` (and a ``History``) to ``path`` (a ``.npz`` file)."""
    network.check_params(params)
    arrays = dict(_tree.named(params, "params"))
    cfg = {"format": FORMAT, "network": network_config(network),
           "history": history.as_dict() if history is not None else None}
    blob = json.dumps(cfg).encode()
    if len(blob) > MAX_CONFIG:
        raise ValueError(f"the config takes {len(blob)} bytes, more than the {MAX_CONFIG} load reads"
                         + ("; save a shorter history, or none" if history is not None else ""))
    arrays["config.json"] = np.frombuffer(blob, np.uint8)
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


# ---------------------------------------------------------------------------------- load

class _Corrupt(Exception):
    """What is wrong with the file; ``load`` puts the path in front and raises ``ValueError``."""


# what the zip layer raises on damaged bytes (zipfile reports some as OSError, ValueError, ...)
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError, NotImplementedError,
               RuntimeError, zlib.error)

# the .npy header numpy writes (keys sorted); a regex, not ast.literal_eval, so a crafted header
# of nested brackets cannot exhaust the parser
_NPY_HEADER = re.compile(r"\{\s*'descr':\s*'([^']{1,16})',\s*'fortran_order':\s*(True|False),\s*"
                         r"'shape':\s*\(((?:\s*\d{1,19}\s*,)*(?:\s*\d{1,19})?\s*)\),?\s*\}\s*")
_NPY_MAX_HEADER = 10000


def load(path):
    """Read a file written by ``save``; returns ``Trained`` (network, params, history)."""
    from .training import Trained
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path}")
    with open(path, "rb") as fh:
        try:
            return Trained(*_read(fh, os.fstat(fh.fileno()).st_size))
        except _Corrupt as e:
            raise ValueError(f"{path}: {e}") from None


def _read(fh, size):
    """``(network, params, history)`` from the open file ``fh`` of ``size`` bytes."""
    try:
        zf = zipfile.ZipFile(fh)
    except _ZIP_ERRORS as e:
        raise _Corrupt(f"not a neurons network file (not a zip file: {e})") from None
    with zf:
        if "config.json.npy" not in zf.namelist():
            raise _Corrupt("not a neurons network file (it has no config.json entry)")
        net, history = _from_config(_array(zf, size, "config.json", np.dtype(np.uint8)).tobytes())
        shapes = net._param_shapes
        params = [_array(zf, size, name, np.dtype(net.dtype), a.shape) for name, a in _tree.named(shapes, "params")]
        return net, _tree.rebuild(shapes, params), history


def _from_config(raw):
    try:
        cfg = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as e:   # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise _Corrupt(f"its config is not valid JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise _Corrupt(f"its config is not a JSON object but {_short(cfg)}")
    if cfg.get("format") != FORMAT:
        raise _Corrupt(f"unknown format {_short(cfg.get('format'))} (this version reads {FORMAT!r})")
    try:
        net = network_from_config(cfg.get("network"))
    except (ValueError, TypeError, OverflowError) as e:     # the builder's errors
        raise _Corrupt(f"its network config is invalid: {e}") from None
    except Exception as e:      # last resort: a config none of the checks foresaw
        raise _Corrupt(f"its network config is invalid ({type(e).__name__}: {e})") from None
    try:
        net._param_shapes
    except ValueError as e:     # a shape numpy cannot represent, let alone a file hold
        raise _Corrupt(f"its network config gives impossible param shapes ({e})") from None
    return net, _history(cfg.get("history"))


_HISTORY_LISTS = ("train_loss", "train_time", "val_loss", "val_acc", "val_time")


def _history(cfg):
    """The ``History`` a config holds, checked field by field."""
    from .training import History
    if cfg is None:
        return History()
    if not isinstance(cfg, dict) or not set(cfg) <= {f.name for f in fields(History)}:
        raise _Corrupt(f"its history is malformed: {_short(cfg)} is not an object with History's fields")
    h = History(**cfg)
    for name in _HISTORY_LISTS:
        v = getattr(h, name)
        if not isinstance(v, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
            raise _Corrupt(f"its history is malformed: {name} is {_short(v)}, not a list of numbers")
    n, m = len(h.train_loss), len(h.val_loss)
    if len(h.train_time) != n or len(h.val_acc) != m or len(h.val_time) != m or m not in (0, n):
        raise _Corrupt(f"its history is malformed: its lists have lengths "
                       f"{', '.join(f'{k} {len(getattr(h, k))}' for k in _HISTORY_LISTS)} (the training lists "
                       f"must be of one length, the validation lists of the same or empty)")
    if h.best_epoch is not None and (type(h.best_epoch) is not int or not 1 <= h.best_epoch <= n):
        raise _Corrupt(f"its history is malformed: best_epoch is {_short(h.best_epoch)}, not an epoch 1..{n}")
    if not isinstance(h.stopped_early, bool):
        raise _Corrupt(f"its history is malformed: stopped_early is {_short(h.stopped_early)}, not a bool")
    return h


def _array(zf, size, name, dtype, shape=None):
    """The array stored as ``name``, of ``dtype`` and ``shape`` (``None``: the config's bytes, at most
    ``MAX_CONFIG``); its header and stored size are checked before its data is read."""
    try:
        info = zf.getinfo(name + ".npy")
    except KeyError:
        raise _Corrupt(f"the array {name} is missing") from None
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise _Corrupt(f"the array {name} uses compression method {info.compress_type} (not stored or deflated)")
    if info.header_offset + info.compress_size > size:
        raise _Corrupt(f"the array {name} is truncated: the zip says it takes {info.compress_size} bytes "
                       f"from byte {info.header_offset}, but the file has {size}")
    try:
        with zf.open(info) as f:
            got, fortran, descr, start = _npy_header(f, name)
            if descr != dtype.str:
                raise _Corrupt(f"the array {name} has dtype {descr!r}, the config needs {dtype.str!r} ({dtype})")
            if shape is None:
                if len(got) != 1 or got[0] > MAX_CONFIG:
                    raise _Corrupt(f"its config has shape {got}; a config is a row of at most {MAX_CONFIG} bytes")
                shape = got
            if got != shape:
                raise _Corrupt(f"the array {name} has shape {got}, the config needs {shape}")
            nbytes = math.prod(shape) * dtype.itemsize
            if info.file_size != start + nbytes:
                raise _Corrupt(f"the array {name} takes {info.file_size} bytes, but its header and shape "
                               f"make {start + nbytes}")
            data = f.read(nbytes + 1)   # to the member's end, so that zipfile checks its CRC-32
    except _ZIP_ERRORS as e:
        raise _Corrupt(f"the array {name} is damaged ({type(e).__name__}: {e})") from None
    if len(data) != nbytes:
        raise _Corrupt(f"the array {name} is truncated: {len(data)} of its {nbytes} bytes are there")
    a = np.frombuffer(data, dtype)
    return (a.reshape(shape[::-1]).T if fortran else a.reshape(shape)).copy(order="K")


def _npy_header(f, name):
    """``(shape, fortran_order, descr, data offset)`` from the .npy header (version 1 or 2) ``f`` starts with."""
    magic = f.read(8)
    if magic[:6] != b"\x93NUMPY" or magic[6:7] not in (b"\x01", b"\x02"):
        raise _Corrupt(f"the array {name} is not a .npy array of version 1 or 2")
    width = 2 if magic[6] == 1 else 4
    n = int.from_bytes(f.read(width), "little")
    text = f.read(min(n, _NPY_MAX_HEADER))
    m = _NPY_HEADER.fullmatch(text.decode("latin1")) if len(text) == n else None
    if m is None:
        raise _Corrupt(f"the array {name} has a damaged or unexpected .npy header")
    shape = tuple(int(d) for d in m[3].split(",") if d.strip())
    return shape, m[2] == "True", m[1], 8 + width + n
