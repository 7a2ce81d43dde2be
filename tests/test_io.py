"""save/load: bit-for-bit round trip, no pickle, clear errors for corrupt or foreign files."""
import io
import json
import re
import time
import tracemalloc
import zipfile

import numpy as np
import pytest

import neurons
from neurons.layers import Convolution, Dense

from . import fuzz_util, gradcheck


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


# ------------------------------------------------------------------ corrupt, foreign and hostile files
# (SPEC §8, §12: every corrupt or foreign file is a ValueError naming the path; the config never
# makes load allocate, and members the network does not need are never read)

def _small():
    return neurons.Network((1,)).dense(3, "softmax").set_objective("cross_entropy")


def _members(path):
    with zipfile.ZipFile(path) as zf:
        return {info.filename: zf.read(info) for info in zf.infolist()}


def _write(path, members, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _npy(array):
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def _config_npy(text):
    return _npy(np.frombuffer(text.encode(), np.uint8))


def _saved(tmp_path, net=None, history=None):
    net = net or _small()
    path = tmp_path / "saved.npz"
    neurons.save(path, net, net.init(0), history)
    return path


def _edited(tmp_path, edit, name="edited.npz", net=None, history=None):
    """The saved file of ``net`` with its config replaced by ``edit(config)`` (a JSON value)."""
    members = _members(_saved(tmp_path, net, history))
    cfg = json.loads(np.load(io.BytesIO(members["config.json.npy"])).tobytes())
    members["config.json.npy"] = _config_npy(json.dumps(edit(cfg)))
    return _write(tmp_path / name, members)


def _peak_of_load(path):
    """``(error or None, peak traced bytes)`` of ``neurons.load(path)``."""
    tracemalloc.start()
    try:
        try:
            neurons.load(path)
            error = None
        except ValueError as e:
            error = e
        return error, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _set_units(units):
    def edit(cfg):
        cfg["network"]["layers"][0]["units"] = units
        return cfg
    return edit


@pytest.mark.parametrize("units", [10**8, 10**12])
def test_config_claiming_huge_layers_fails_without_allocating(tmp_path, units):
    path = _edited(tmp_path, _set_units(units))
    error, peak = _peak_of_load(path)
    assert error is not None and str(path) in str(error)
    assert f"params/0/0 has shape (3, 1), the config needs ({units}, 1)" in str(error)
    assert peak < 10 * 2**20


def test_npy_header_claiming_huge_shape_fails_without_allocating(tmp_path):
    members = _members(_saved(tmp_path))
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (10**12,)})
    members["params/0/0.npy"] = header.getvalue() + members["params/0/0.npy"][128:]
    path = _write(tmp_path / "huge_header.npz", members)
    error, peak = _peak_of_load(path)
    assert error is not None and str(path) in str(error)
    assert "params/0/0 has shape (1000000000000,), the config needs (3, 1)" in str(error)
    assert peak < 10 * 2**20


def test_members_not_needed_are_never_read(tmp_path):
    # extra members are tolerated (load reads only config.json and the arrays the config names);
    # a 200 MB deflated one is not even decompressed
    path = tmp_path / "extra.npz"
    path.write_bytes(_saved(tmp_path).read_bytes())
    size = 200 * 2**20
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as zf, zf.open("junk.npy", "w", force_zip64=True) as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": (size,)})
        zeros = bytes(2**20)
        for _ in range(size // len(zeros)):
            f.write(zeros)
    assert path.stat().st_size < 2**20
    error, peak = _peak_of_load(path)
    assert error is None
    assert peak < 10 * 2**20
    np.testing.assert_array_equal(neurons.load(path).params[0][0], _small().init(0)[0][0])


def _history_junk(value):
    def edit(cfg):
        cfg["history"] = value
        return cfg
    return edit


def _network_junk(**fields):
    def edit(cfg):
        cfg["network"].update(fields)
        return cfg
    return edit


def _layer_junk(**fields):
    def edit(cfg):
        cfg["network"]["layers"][0].update(fields)
        return cfg
    return edit


def _without_loops(cfg):
    del cfg["network"]["loops"]
    return cfg


_GOOD_HISTORY = {"train_loss": [1.0, 0.5], "train_time": [0.1, 0.1], "val_loss": [], "val_acc": [],
                 "val_time": [], "best_epoch": None, "stopped_early": False}
_NESTED_BLOCK = {"kind": "feedback", "loops": 2, "layers": [{"kind": "feedback", "loops": 2, "layers": []}]}

BAD_CONFIGS = {      # (edit of the config, what the error says)
    "list": (lambda cfg: [], "config is not a JSON object"),
    "null": (lambda cfg: None, "config is not a JSON object"),
    "string": (lambda cfg: "x", "config is not a JSON object"),
    "empty object": (lambda cfg: {}, "unknown format None"),
    "other format": (lambda cfg: dict(cfg, format="neurons/99"), "unknown format 'neurons/99'"),
    "no network": (lambda cfg: {"format": cfg["format"]}, "network config is invalid"),
    "network a list": (lambda cfg: dict(cfg, network=[1]), "network config is invalid"),
    "missing key": (_without_loops, "network config must be an object with the keys"),
    "dtype": (_network_junk(dtype="float16"), "dtype must be 'float32' or 'float64', not 'float16'"),
    "dtype an object": (_network_junk(dtype={"names": []}), "dtype must be 'float32' or 'float64'"),
    "input_shape": (_network_junk(input_shape=5), "input_shape must be a list"),
    "skip": (_network_junk(skips=[[0]]), "a skip must be a list of 2 items"),
    "optimizer": (_network_junk(optimizer={"name": "SGD", "lr": "fast"}), "lr must be a number"),
    "layer a number": (_network_junk(layers=[3]), "layer 0 must be an object with a 'kind'"),
    "nested feedback": (_network_junk(layers=[_NESTED_BLOCK]), "block layer 0 has the unknown kind 'feedback'"),
    "unknown kind": (_layer_junk(kind="lstm"), "layer 0 has the unknown kind 'lstm'"),
    "kind a list": (_layer_junk(kind=["dense"]), "layer 0 must be an object with a 'kind'"),
    "unknown field": (_layer_junk(colour="red"), "layer 0 (dense): Dense.__init__() got an unexpected keyword"),
    "units a string": (_layer_junk(units="ten"), "layer 0 (dense): units must be an int"),
    "units a list": (_layer_junk(units=[3]), "layer 0 (dense): units must be an int"),
    "units a float": (_layer_junk(units=3.0), "layer 0 (dense): units must be an int"),
    "units null": (_layer_junk(units=None), "layer 0 (dense): units must be an int"),
    "units an object": (_layer_junk(units={"a": 1}), "layer 0 (dense): units must be an int"),
    "units nested": (_layer_junk(units=json.loads("[" * 500 + "]" * 500)), "layer 0 (dense): units must be an int"),
    "units zero": (_layer_junk(units=0), "layer 0 (dense): units must be >= 1"),
    "units huge": (_layer_junk(units=10**300), "impossible param shapes"),
    "activation unknown": (_layer_junk(activation="swish"), "unknown activation 'swish'"),
    "history a list": (_history_junk([1, 2]), "history is malformed"),
    "history field": (_history_junk({"loss": [1.0]}), "history is malformed"),
    "history strings": (_history_junk(dict(_GOOD_HISTORY, train_loss=["a", "b"])), "train_loss is ['a', 'b']"),
    "history lengths": (_history_junk(dict(_GOOD_HISTORY, train_time=[0.1])), "lists have lengths"),
    "history best_epoch": (_history_junk(dict(_GOOD_HISTORY, best_epoch=7)), "best_epoch is 7"),
    "history stopped_early": (_history_junk(dict(_GOOD_HISTORY, stopped_early="no")), "stopped_early is 'no'"),
}


@pytest.mark.parametrize("case", BAD_CONFIGS)
def test_bad_config_is_a_value_error_naming_the_path(tmp_path, case):
    edit, message = BAD_CONFIGS[case]
    path = _edited(tmp_path, edit)
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        neurons.load(path)
    assert str(info.value).startswith(f"{path}: ")


def _bad_files(tmp_path):
    """``(path, what its error says)`` for files that are not, or are no longer, neurons files."""
    saved = _saved(tmp_path)
    members = _members(saved)
    w = np.load(io.BytesIO(members["params/0/0.npy"]))

    text, empty, crc = tmp_path / "text.npz", tmp_path / "empty.npz", tmp_path / "crc.npz"
    text.write_text("hello, this is text, not a network\n" * 20)
    empty.write_bytes(b"")
    flipped = bytearray(saved.read_bytes())
    flipped[flipped.index(w.tobytes()) + 1] ^= 1        # in the data of params/0/0
    crc.write_bytes(flipped)
    without = {k: v for k, v in members.items() if k != "params/0/1.npy"}
    config = "config.json.npy"
    return [
        (text, "not a neurons network file (neither safetensors nor .npz"),
        (empty, "not a neurons network file (neither safetensors nor .npz"),
        (_write(tmp_path / "plain.zip", {"a.txt": b"hello"}), "no config.json"),
        (_write(tmp_path / "no_config.npz", {k: v for k, v in members.items() if k != config}), "no config.json"),
        (_write(tmp_path / "not_json.npz", {**members, config: _config_npy("{not json")}), "config is not valid JSON"),
        (_write(tmp_path / "not_utf8.npz", {**members, config: _npy(np.array([255, 254], np.uint8))}),
         "config is not valid JSON"),
        (_write(tmp_path / "deep_json.npz", {**members, config: _config_npy("[" * 100000)}),
         "config is not valid JSON"),
        (_write(tmp_path / "config_2d.npz", {**members, config: _npy(np.zeros((2, 2), np.uint8))}),
         "config has shape (2, 2)"),
        (_write(tmp_path / "config_raw.npz", {**members, config: b"{}"}), "config.json is not a .npy array"),
        (_write(tmp_path / "missing.npz", without), "the array params/0/1 is missing"),
        (_write(tmp_path / "dtype.npz", {**members, "params/0/0.npy": _npy(w.astype(np.float64))}),
         "params/0/0 has dtype '<f8', the config needs '<f4'"),
        (_write(tmp_path / "shape.npz", {**members, "params/0/0.npy": _npy(w.T.copy())}),
         "params/0/0 has shape (1, 3), the config needs (3, 1)"),
        (_write(tmp_path / "object.npz", {**members, "params/0/0.npy": _npy(np.array([1, "a"], object))}),
         "params/0/0 has dtype '|O'"),
        (_write(tmp_path / "header.npz", {**members, "params/0/0.npy": b"\x93NUMPY\x01\x00\x10\x00" + b"(" * 16}),
         "params/0/0 has a damaged or unexpected .npy header"),
        (_write(tmp_path / "short.npz", {**members, "params/0/0.npy": members["params/0/0.npy"][:-1]}),
         "params/0/0 takes 139 bytes, but its header and shape make 140"),
        (crc, "the array params/0/0 is damaged (BadZipFile: Bad CRC-32"),
        (_write(tmp_path / "bzip2.npz", members, zipfile.ZIP_BZIP2), "config.json uses compression method 12"),
    ]


def test_corrupt_files_are_value_errors_naming_the_path(tmp_path):
    for path, message in _bad_files(tmp_path):
        with pytest.raises(ValueError) as info:
            neurons.load(path)
        assert str(info.value).startswith(f"{path}: "), info.value
        assert message in str(info.value), (path.name, info.value)


def test_good_config_gone_bad_by_byte_flips_is_caught_by_the_crc(tmp_path):
    # a change anywhere in config.json's bytes, even one that leaves valid JSON, fails its CRC-32
    path = _saved(tmp_path)
    data = bytearray(path.read_bytes())
    i = data.index(b'"units": 3') + len(b'"units": ')
    data[i] = ord("4")
    path.write_bytes(data)
    with pytest.raises(ValueError, match="config.json is damaged .*Bad CRC-32"):
        neurons.load(path)


def test_deflated_and_fortran_ordered_arrays_load(tmp_path):
    net = _net()
    params = net.init(3)
    params = (tuple(np.asfortranarray(a) for a in params[0]),) + params[1:]
    path = tmp_path / "f.npz"
    neurons.save(path, net, params)
    for p in (path, _write(tmp_path / "deflated.npz", _members(path), zipfile.ZIP_DEFLATED)):
        t = neurons.load(p)
        for a, b in zip(gradcheck.leaves(params), gradcheck.leaves(t.params)):
            assert a.dtype == b.dtype and b.flags.writeable
            np.testing.assert_array_equal(a, b)


def test_save_refuses_a_config_load_would_refuse(tmp_path):
    n = neurons.io.MAX_CONFIG // 20
    history = neurons.History(train_loss=[0.123456789] * n, train_time=[0.123456789] * n)
    with pytest.raises(ValueError, match="history"):
        neurons.save(tmp_path / "long.npz", _small(), _small().init(0), history)
    assert not (tmp_path / "long.npz").exists()


def _same(a, b):
    return (a.network == b.network and a.history.as_dict() == b.history.as_dict()
            and all(x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()
                    for x, y in zip(gradcheck.leaves(a.params), gradcheck.leaves(b.params))))


@pytest.mark.parametrize("net", [
    neurons.Network((4,)).dense(5, "relu").dense(3, "softmax").set_objective("cross_entropy"),
    _net(),
], ids=["dense", "conv"])
def test_fuzzed_saved_files(tmp_path, net):
    # each byte flip, cut or append gives a ValueError naming the path, or the very same network:
    # np.savez stores arrays uncompressed, and zipfile checks each member's CRC-32 when it is read
    # to the end, so a flip inside an array is caught rather than loaded as different numbers
    history = neurons.History(train_loss=[1.5, 1.25], train_time=[0.1, 0.2])
    original = tmp_path / "original.npz"
    neurons.save(original, net, net.init(0), history)
    want = neurons.load(original)
    data = original.read_bytes()
    outcomes = {"same": 0, "error": 0}
    t0 = time.perf_counter()
    for i, (what, mutant) in enumerate(fuzz_util.mutants(data, 400, seed=1, head=64, tail=120)):
        path = tmp_path / f"mutant{i}.npz"
        path.write_bytes(mutant)
        try:
            got = neurons.load(path)
        except ValueError as e:
            assert str(e).startswith(f"{path}: "), (what, e)
            outcomes["error"] += 1
        else:
            assert _same(got, want), what
            outcomes["same"] += 1
    assert time.perf_counter() - t0 < 10
    assert outcomes["error"] > 200 and outcomes["same"] > 0


_JUNK = [None, "x", -1, 2.5, 10**30, [], {}, [[1, 2]], json.loads("[" * 200 + "]" * 200)]


def _paths(value, at=()):
    yield at
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        yield from _paths(v, at + (k,))


def test_junk_in_any_config_field_is_a_value_error_or_harmless(tmp_path):
    # every field of a rich config (layers of each kind, a block, skip, loop, optimizer, clip,
    # history) replaced in turn by junk of each JSON type: a ValueError naming the path, or a
    # network load accepts as it would from its builder (bias="x" is a bias, as bool("x") is)
    net = (neurons.Network((1, 6, 6), "float64").convolution(2, 3, padding=1, activation="relu", bias=True)
           .feedback([Convolution(2, 3, padding=1), neurons.layers.Deconvolution(2, 3, padding=1)], loops=2)
           .maxpool(2).dense(4, "tanh", dropout=0.1).dense(4).dense(4).connect(4, 5).loopback(4, 4, 2, scale=0.5)
           .set_optimizer(neurons.optimizers.Adam()).set_objective("mse", clip=(-1, 1)))
    history = neurons.History(train_loss=[1.0, 0.5], train_time=[0.1, 0.1], val_loss=[1.0, 0.7],
                              val_acc=[0.5, 0.6], val_time=[0.01, 0.01], best_epoch=2)
    members = _members(_saved(tmp_path, net, history))
    cfg = json.loads(np.load(io.BytesIO(members["config.json.npy"])).tobytes())
    path = tmp_path / "junk.npz"
    errors = 0
    for at in list(_paths(cfg))[1:]:
        for junk in _JUNK:
            edited = json.loads(json.dumps(cfg))
            parent = edited
            for k in at[:-1]:
                parent = parent[k]
            parent[at[-1]] = junk
            _write(path, {**members, "config.json.npy": _config_npy(json.dumps(edited))})
            try:
                neurons.load(path)
            except ValueError as e:
                assert str(e).startswith(f"{path}: "), (at, junk, e)
                errors += 1
    assert errors > 500


# ----------------------------------------------------------------------------- safetensors

def test_safetensors_round_trip_with_the_optimizer_state(tmp_path):
    from safetensors.numpy import load_file
    x = np.random.default_rng(0).normal(size=(12, 1, 6, 6))
    y = np.arange(12) % 3
    net = _net().set_optimizer(neurons.optimizers.Adam(lr=1e-3)).set_objective("cross_entropy")
    t = net.learn(x, y, validation=(x, y), epochs=2, batch=4)
    path = tmp_path / "net.safetensors"
    t.save(path)
    u = neurons.load(path)
    assert u.network == net and u.history.as_dict() == t.history.as_dict()
    assert _same(u, t)
    assert u.optimizer_state.count == t.optimizer_state.count == 6
    for a, b in zip(gradcheck.leaves(u.optimizer_state[1:]), gradcheck.leaves(t.optimizer_state[1:])):
        np.testing.assert_array_equal(a, b)
    # any safetensors reader opens it: tensors named by their place in params (a block nests)
    tensors = load_file(path)
    np.testing.assert_array_equal(tensors["params/1/0/0"], t.params[1][0][0])
    assert {k for k in tensors if k.startswith("params/")} == {name for name, _ in neurons._tree.named(t.params, "params")}
    assert "optimizer/mu/0/0" in tensors and "optimizer/nu/5/0" in tensors
    # an .npz path still writes (and reads) the older format
    t.save(tmp_path / "net.npz")
    assert zipfile.is_zipfile(tmp_path / "net.npz") and _same(neurons.load(tmp_path / "net.npz"), t)


def _safetensors_file(tmp_path, edit, crc=True):
    """A saved network's file edited by ``edit(metadata, tensors)``; with ``crc`` its checksums
    are made to fit the edit, as a crafted file's would be."""
    import zlib
    from safetensors import safe_open
    from safetensors.numpy import save as pack
    net = neurons.Network((1,)).dense(3, "relu").dense(2)
    path = tmp_path / "base.safetensors"
    neurons.save(path, net, net.init(0))
    with safe_open(path, "np") as f:
        meta = {k: json.loads(v) for k, v in f.metadata().items()}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    edit(meta, tensors)
    texts = {k: json.dumps(v) for k, v in meta.items()}
    if crc:
        sums = {k: zlib.crc32(a) for k, a in tensors.items()}
        texts["crc32"] = json.dumps({**sums, "__metadata__": neurons.io._metadata_crc(texts)})
    out = tmp_path / "edited.safetensors"
    out.write_bytes(pack(tensors, metadata=texts))
    return out


def test_safetensors_metadata_claiming_huge_layers_fails_without_allocating(tmp_path):
    def huge(meta, tensors):
        meta["network"]["layers"][0]["units"] = 10**8
    path = _safetensors_file(tmp_path, huge)
    error, peak = _peak_of_load(path)
    assert str(error).startswith(f"{path}: ") and "params/0/0 has shape (3, 1), the config needs (100000000, 1)" \
        in str(error)
    assert peak < 10 * 2**20


@pytest.mark.parametrize("edit, message", [
    (lambda m, t: m.pop("format"), "not a neurons network file (its metadata has no format)"),
    (lambda m, t: m.update(format="other/9"), "unknown format 'other/9'"),
    (lambda m, t: m.update(network={"layers": 1}), "its network config is invalid"),
    (lambda m, t: t.pop("params/1/1"), "the array params/1/1 is missing"),
    (lambda m, t: t.update({"params/0/0": t["params/0/0"].astype(np.float64)}), "params/0/0 has dtype F64"),
    (lambda m, t: t.update({"params/0/0": t["params/0/0"].T.copy()}), "params/0/0 has shape (1, 3)"),
    (lambda m, t: m.update(optimizer_state={"count": -1}), "optimizer_state is malformed"),
    (lambda m, t: m.update(history={"train_loss": "x"}), "history is malformed"),
])
def test_bad_safetensors_files_are_value_errors_naming_the_path(tmp_path, edit, message):
    path = _safetensors_file(tmp_path, edit)
    with pytest.raises(ValueError) as info:
        neurons.load(path)
    assert str(info.value).startswith(f"{path}: ") and message in str(info.value), info.value


@pytest.mark.parametrize("edit, message", [
    (lambda m, t: m.pop("crc32"), "its metadata has no crc32 table"),
    (lambda m, t: m.update(history={"train_loss": [9.0], "train_time": [1.0]}), "its metadata is damaged"),
    (lambda m, t: t["params/1/0"].__setitem__((0, 0), 7.0), "the array params/1/0 is damaged"),
])
def test_changed_safetensors_files_fail_their_checksums(tmp_path, edit, message):
    path = _safetensors_file(tmp_path, edit, crc=False)
    with pytest.raises(ValueError) as info:
        neurons.load(path)
    assert str(info.value).startswith(f"{path}: ") and message in str(info.value), info.value


def test_fuzzed_safetensors_files(tmp_path):
    net = _net()
    original = tmp_path / "original.safetensors"
    neurons.save(original, net, net.init(0), neurons.History(train_loss=[1.5], train_time=[0.1]))
    want = neurons.load(original)
    data = original.read_bytes()
    outcomes = {"same": 0, "error": 0}
    for i, (what, mutant) in enumerate(fuzz_util.mutants(data, 400, seed=2, head=64, tail=120)):
        path = tmp_path / f"mutant{i}.safetensors"
        path.write_bytes(mutant)
        try:
            got = neurons.load(path)
        except ValueError as e:
            assert str(e).startswith(f"{path}: "), (what, e)
            outcomes["error"] += 1
        else:
            assert _same(got, want), what       # a flip in array bytes fails the saved CRC-32
            outcomes["same"] += 1
    assert outcomes["error"] > 300
