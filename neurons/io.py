"""Save and load a trained network, and the checkpoints of a run.

The format is safetensors (any safetensors reader opens the files): tensors named by their place
in the params tuple, ``params/<layer>/<i>`` (a feedback block nests: ``params/<layer>/<j>/<i>``),
the running statistics of batch normalization ``state/<layer>/<i>`` (named as params), the
optimizer's state ``optimizer/<field>/<layer>/<i>``, and in a checkpoint the best epoch's params
and running statistics ``best/<layer>/<i>`` and ``best_state/<layer>/<i>``; the ``__metadata__``
holds JSON texts: ``format``, ``network`` (the architecture by layer and activation names, and
the optimizer with its schedule), ``history``,
``optimizer_state`` (the step count), ``crc32`` (a checksum of each tensor, which safetensors
does not keep) and, in a checkpoint, ``run`` (the position in the run and its settings). Files are written atomically: a temporary file in the same folder, flushed to
disk, then renamed over the target, so a crash leaves the old file or the new one.

Nothing is executed on load (no pickle) and arrays round-trip bit for bit. ``load`` reads the
metadata first, builds the network from it, and takes from the network each array's name, shape
and dtype; each is checked against the file's own tensor table before any data is read, and
tensors the network does not need are never read. So a file cannot make ``load`` allocate more
than it holds. A missing file raises ``FileNotFoundError``; a corrupt or foreign file a
``ValueError`` that starts with the path and says what is wrong. The ``.npz`` files of earlier
versions (a zip with ``config.json`` and ``.npy`` arrays, whose CRC-32s catch a changed byte)
load too, and ``save`` still writes one when the path ends in ``.npz``.
"""
import contextlib
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

FORMAT = "neurons/2"            # safetensors
NPZ_FORMAT = "neurons/1"        # the .npz files of earlier versions
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


_KINDS = {"dense": L.Dense, "convolution": L.Convolution, "deconvolution": L.Deconvolution, "maxpool": L.Maxpool,
          "batchnorm": L.BatchNorm, "recurrent": L.Recurrent}
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


def save(path, network, params, history=None, optimizer_state=None, state=None):
    """Write ``network``, ``params``, the running ``state`` (None: ``network.init_state()``) and,
    if given, a ``History`` and the optimizer's state to ``path``: a ``.safetensors`` file (an
    ``.npz`` file, without the optimizer's state, when the path ends in ``.npz``)."""
    network.check_params(params)
    if state is None:
        state = network.init_state()
    network.check_state(state)
    if os.fspath(path).endswith(".npz"):
        return _save_npz(path, network, params, history, state)
    _write(path, network, history, {"params": params, "state": state}, optimizer_state)


def _save_npz(path, network, params, history, state):
    arrays = dict(_tree.named(params, "params"))
    arrays.update(_tree.named(state, "state"))
    blob = json.dumps(_config(NPZ_FORMAT, network, history)).encode()
    arrays["config.json"] = np.frombuffer(blob, np.uint8)
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def _config(fmt, network, history):
    cfg = {"format": fmt, "network": network_config(network),
           "history": history.as_dict() if history is not None else None}
    if len(json.dumps(cfg)) > MAX_CONFIG:
        raise ValueError(f"the config takes more than the {MAX_CONFIG} bytes load reads"
                         + ("; save a shorter history, or none" if history is not None else ""))
    return cfg


def _write(path, network, history, trees, optimizer_state=None, run=None):
    """The safetensors file: ``trees`` (prefix -> params tree), the optimizer's state and the
    metadata, written atomically (a temporary file in the same folder, fsync, rename)."""
    from safetensors.numpy import save as pack
    arrays = {name: np.ascontiguousarray(a) for prefix, t in trees.items() for name, a in _tree.named(t, prefix)}
    meta = _config(FORMAT, network, history)
    if optimizer_state is not None:
        for field in optimizer_state._fields[1:]:        # count first, then trees shaped like params
            arrays.update((name, a) for name, a in _tree.named(getattr(optimizer_state, field), f"optimizer/{field}")
                          if a.size)
        meta["optimizer_state"] = {"count": int(optimizer_state.count)}
    if run is not None:
        meta["run"] = run
    texts = {k: json.dumps(v) for k, v in meta.items()}
    crc = {name: zlib.crc32(a) for name, a in arrays.items()}
    texts["crc32"] = json.dumps({**crc, "__metadata__": _metadata_crc(texts)})
    blob = pack(arrays, metadata=texts)
    path = os.fspath(path)
    # beside the target (a rename within one file system is atomic); one name, so a write killed
    # halfway leaves one stale temporary file, which the next write replaces
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(blob)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


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
    """Read a file written by ``save`` (or a checkpoint); returns ``Trained`` (network, params,
    history, and the optimizer's state when the file holds it)."""
    from .training import Trained
    with _guard(path):
        if _is_zip(path):
            with open(path, "rb") as fh:
                net, params, history, state = _read(fh, os.fstat(fh.fileno()).st_size)
                return Trained(net, params, history, state=state)
        with _Stored(path) as f:
            params = f.arrays("params")
            return Trained(f.network, params, f.history, f.optimizer_state(params), f.state("state"))


def load_checkpoint(path):
    """``(trained, run, best)`` from a checkpoint ``learn`` wrote: the ``Trained`` (with the
    optimizer's state and the running state), the run's position and settings (a dict), and the
    best epoch's ``(params, state)`` (None without validation)."""
    from .training import Trained
    with _guard(path):
        if _is_zip(path):
            raise _Corrupt("not a checkpoint (an .npz network file; checkpoints are safetensors)")
        with _Stored(path) as f:
            run = f.meta.get("run")
            if not isinstance(run, dict):
                raise _Corrupt("not a checkpoint (it has no run metadata; was it written by save?)")
            params = f.arrays("params")
            best = (f.arrays("best"), f.state("best_state")) if run.get("best") else None
            return Trained(f.network, params, f.history, f.optimizer_state(params), f.state("state")), run, best


@contextlib.contextmanager
def _guard(path):
    """Report ``_Corrupt`` as a ``ValueError`` starting with the path; a missing file stays
    ``FileNotFoundError``."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path}")
    try:
        yield
    except _Corrupt as e:
        raise ValueError(f"{path}: {e}") from None


def _is_zip(path):
    with open(path, "rb") as fh:
        return fh.read(2) == b"PK"


class _Stored:
    """A safetensors file, opened: its metadata parsed and checked, the network built from it,
    and its arrays read on request, each checked against the tensor table first."""

    def __init__(self, path):
        from safetensors import SafetensorError, safe_open
        self._error = SafetensorError
        try:
            self._file = safe_open(os.fspath(path), framework="np")
            raw = self._file.metadata() or {}
        except SafetensorError as e:
            raise _Corrupt(f"not a neurons network file (neither safetensors nor .npz: {e})") from None
        self.meta = {}
        for key, text in raw.items():
            try:
                self.meta[key] = json.loads(text)
            except (ValueError, RecursionError) as e:
                raise _Corrupt(f"its metadata {key!r} is not valid JSON ({e})") from None
        if "format" not in self.meta:
            raise _Corrupt("not a neurons network file (its metadata has no format)")
        self._crc = self.meta.get("crc32")
        if not isinstance(self._crc, dict):
            raise _Corrupt("its metadata has no crc32 table")
        if self._crc.get("__metadata__") != _metadata_crc(raw):
            raise _Corrupt("its metadata is damaged (its CRC-32 is not the one saved with it)")
        self.network, self.history = _from_cfg(self.meta, FORMAT)
        self.dtype = np.dtype(self.network.dtype)
        self._names = set(self._file.keys())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._file.__exit__(*exc)

    def arrays(self, prefix, template=None):
        """The tree of arrays stored under ``prefix``, shaped like ``template`` (default: the
        network's params)."""
        template = self.network._param_shapes if template is None else template
        return _tree.rebuild(template, [self.array(name, a.shape) for name, a in _tree.named(template, prefix)])

    def state(self, prefix):
        """The running state stored under ``prefix`` (a network without one reads nothing)."""
        state = self.arrays(prefix, self.network._state_shapes)
        try:
            self.network.check_state(state)
        except (ValueError, TypeError) as e:
            raise _Corrupt(f"its running state {prefix} is invalid: {e}") from None
        return state

    def array(self, name, shape):
        if name not in self._names:
            raise _Corrupt(f"the array {name} is missing")
        try:
            info = self._file.get_slice(name)
            got, dtype = tuple(info.get_shape()), info.get_dtype()
            if dtype != _ST_DTYPES[self.dtype]:
                raise _Corrupt(f"the array {name} has dtype {dtype}, the config needs {_ST_DTYPES[self.dtype]}")
            if got != tuple(shape):
                raise _Corrupt(f"the array {name} has shape {got}, the config needs {tuple(shape)}")
            a = self._file.get_tensor(name).copy()
        except self._error as e:
            raise _Corrupt(f"the array {name} cannot be read ({e})") from None
        # safetensors keeps no checksum: without this a changed byte would load as other numbers
        if zlib.crc32(a) != self._crc.get(name):
            raise _Corrupt(f"the array {name} is damaged (its CRC-32 is not the one saved with it)")
        return a

    def optimizer_state(self, params):
        """The optimizer's state if the file holds it, else None."""
        saved = self.meta.get("optimizer_state")
        if saved is None:
            return None
        count = saved.get("count") if isinstance(saved, dict) else None
        if type(count) is not int or count < 0:
            raise _Corrupt(f"its optimizer_state is malformed: {_short(saved)}")
        state = self.network.optimizer.init(params)
        trees = {}
        for field in state._fields[1:]:
            template = getattr(state, field)
            trees[field] = _tree.rebuild(template, [self.array(name, a.shape) if a.size else a
                                                    for name, a in _tree.named(template, f"optimizer/{field}")])
        return state._replace(count=count, **trees)


def _metadata_crc(texts):
    """A CRC-32 of the metadata texts but the ``crc32`` table itself."""
    return zlib.crc32(json.dumps({k: v for k, v in texts.items() if k != "crc32"}, sort_keys=True).encode())


_ST_DTYPES = {np.dtype(np.float32): "F32", np.dtype(np.float64): "F64"}


def _read(fh, size):
    """``(network, params, history, state)`` from the open file ``fh`` of ``size`` bytes."""
    try:
        zf = zipfile.ZipFile(fh)
    except _ZIP_ERRORS as e:
        raise _Corrupt(f"not a neurons network file (not a zip file: {e})") from None
    with zf:
        if "config.json.npy" not in zf.namelist():
            raise _Corrupt("not a neurons network file (it has no config.json entry)")
        net, history = _from_cfg(_json(_array(zf, size, "config.json", np.dtype(np.uint8)).tobytes()), NPZ_FORMAT)
        shapes = net._param_shapes
        params = [_array(zf, size, name, np.dtype(net.dtype), a.shape) for name, a in _tree.named(shapes, "params")]
        shapes_state = net._state_shapes
        state = [_array(zf, size, name, np.dtype(net.dtype), a.shape) for name, a in _tree.named(shapes_state, "state")]
        return net, _tree.rebuild(shapes, params), history, _tree.rebuild(shapes_state, state)


def _json(raw):
    try:
        cfg = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as e:   # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise _Corrupt(f"its config is not valid JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise _Corrupt(f"its config is not a JSON object but {_short(cfg)}")
    return cfg


def _from_cfg(cfg, fmt):
    """``(network, history)`` from a parsed config of format ``fmt``."""
    if cfg.get("format") != fmt:
        raise _Corrupt(f"unknown format {_short(cfg.get('format'))} (this version reads {FORMAT!r} and "
                       f"{NPZ_FORMAT!r} in .npz files)")
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
