"""Data loaders on files the tests write, the package data, and the real files when present."""
import gzip
import math
import re
import struct
import time
import tracemalloc

import numpy as np
import pytest

from neurons import datasets

from .fuzz_util import mutants


def idx(arr, code=0x08):
    return bytes([0, 0, code, arr.ndim]) + b"".join(struct.pack(">I", s) for s in arr.shape) + arr.tobytes()


@pytest.mark.parametrize("code, dtype", [(0x08, np.uint8), (0x09, np.int8), (0x0B, ">i2"), (0x0C, ">i4"),
                                         (0x0D, ">f4"), (0x0E, ">f8")])
@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_every_dtype_raw_and_gzip(tmp_path, code, dtype, compress):
    a = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    data = idx(a, code)
    path = tmp_path / "f.idx"
    path.write_bytes(gzip.compress(data) if compress else data)
    out = datasets.read_idx(path)
    np.testing.assert_array_equal(out, a)
    assert out.dtype.isnative


def test_read_idx_errors(tmp_path):
    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    good = idx(a)
    cases = {"trunc": (good[:-1], r"truncated: shape \(3, 4\) needs 12 data bytes, the file has 11"),
             "trail": (good + b"\0", "trailing bytes"),
             "magic": (b"\x01\x02" + good[2:], "bad magic"),
             "code": (good[:2] + b"\x07" + good[3:], "unknown IDX data type code 0x07"),
             "head": (good[:6], "truncated IDX header")}
    for name, (data, match) in cases.items():
        p = tmp_path / name
        p.write_bytes(data)
        with pytest.raises(ValueError, match=match):
            datasets.read_idx(p)
    p = tmp_path / "ok"
    p.write_bytes(good)
    import hashlib
    datasets.read_idx(p, sha256=hashlib.sha256(good).hexdigest())
    with pytest.raises(ValueError, match="SHA-256 mismatch"):
        datasets.read_idx(p, sha256="0" * 64)


def _peak_memory(fn):
    """``fn()``'s exception (or None) and the peak of Python-allocated memory while it ran (zlib's
    buffers included: it allocates through Python)."""
    tracemalloc.start()
    try:
        fn()
        err = None
    except Exception as e:
        err = e
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return err, peak


_ZEROS = gzip.compress(bytes(16 << 20), mtime=0)      # one gzip member of 16 MB of zeros, 16 KB long


def test_gzip_bomb_stops_at_the_declared_size(tmp_path):
    # 10x28x28 declared (7,840 bytes), then 256 MB more of zeros in 16 more members: a 260 KB file
    head = gzip.compress(idx(np.zeros((10, 28, 28), np.uint8)), mtime=0)
    for folder, load in ((tmp_path / "a", datasets.read_idx), (tmp_path / "b", lambda p: datasets.mnist(p.parent))):
        folder.mkdir()
        path = folder / "train-images-idx3-ubyte.gz"
        path.write_bytes(head + _ZEROS * 16)
        t = time.perf_counter()
        err, peak = _peak_memory(lambda: load(path))
        assert isinstance(err, ValueError) and re.match(re.escape(f"{path}: trailing bytes"), str(err)), err
        assert peak < 8 << 20, f"{peak / 2**20:.0f} MiB held to refuse a 7,840-byte IDX file"
        assert time.perf_counter() - t < 2


@pytest.mark.parametrize("shape", [(65536,) * 4, (2**32 - 1,) * 3])
@pytest.mark.parametrize("compress", [False, True])
def test_idx_header_with_huge_dims_is_refused_up_front(tmp_path, shape, compress):
    head = bytes([0, 0, 0x0B, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)
    path = tmp_path / "huge.idx"
    # the gzip one is a bomb too (256 MB of zeros): the header alone must condemn it
    path.write_bytes(gzip.compress(head, mtime=0) + _ZEROS * 16 if compress else head + bytes(100))
    err, peak = _peak_memory(lambda: datasets.read_idx(path))
    want = math.prod(shape) * 2         # exact: (2**32 - 1)**3 * 2 overflows int64
    assert isinstance(err, ValueError), err
    assert str(err).startswith(f"{path}: truncated: shape {shape} needs {want} data bytes, more than a "), err
    assert peak < 4 << 20


def test_gzip_corruption_is_a_value_error_naming_the_file(tmp_path):
    data = gzip.compress(idx(np.arange(200, dtype=np.uint8).reshape(2, 10, 10)), mtime=0)
    path = tmp_path / "f.idx.gz"
    cases = {"corrupt gzip stream": data[:12] + bytes([data[12] ^ 0xFF]) + data[13:],    # deflate block type 3
             "truncated gzip stream": data[:-9],
             r"corrupt gzip stream \(CRC check failed": data[:-8] + bytes([data[-8] ^ 1]) + data[-7:],
             r"corrupt gzip stream \(Incorrect length": data[:-1] + bytes([data[-1] ^ 1])}
    for match, bad in cases.items():
        path.write_bytes(bad)
        with pytest.raises(ValueError, match=re.escape(str(path)) + ": " + match):
            datasets.read_idx(path)


def test_read_idx_fuzz(tmp_path):
    """Flipped bytes, cuts and appended bytes give a ValueError naming the file, or (where nothing
    checks, e.g. raw pixels or gzip's mtime) exactly the array the bytes say: never another error."""
    rng = np.random.default_rng(0)
    images = ((rng.random((20, 28, 28)) < 0.2) * rng.integers(0, 256, (20, 28, 28))).astype(np.uint8)
    labels = (np.arange(20) % 10).astype(np.uint8)
    path = tmp_path / "fuzz-idx"
    outcomes = {"ValueError": 0, "loaded": 0}
    for seed, (a, compress) in enumerate([(images, False), (images, True), (labels, False), (labels, True)]):
        good = idx(a)
        data = gzip.compress(good, mtime=0) if compress else good
        for what, bad in mutants(data, 150, seed=seed):
            path.write_bytes(bad)
            try:
                out = datasets.read_idx(path)
            except ValueError as e:
                assert str(path) in str(e), (what, e)
                outcomes["ValueError"] += 1
                continue
            outcomes["loaded"] += 1
            if compress:            # the CRC and length must catch any change to the data
                assert out.dtype == a.dtype and out.shape == a.shape and (out == a).all(), what
            else:                   # the array is the file's payload, under the shape its header gives
                assert out.itemsize == 1 and out.shape == struct.unpack(f">{out.ndim}I", bad[4:4 + 4 * out.ndim])
                assert out.tobytes() == bad[4 + 4 * out.ndim:], what
    assert outcomes["ValueError"] > 300 and outcomes["loaded"] > 20, outcomes


def _fake_mnist(folder, n=7):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for part in ("train", "t10k"):
        (folder / f"{part}-images-idx3-ubyte.gz").write_bytes(
            gzip.compress(idx(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))))
        (folder / f"{part}-labels-idx1-ubyte").write_bytes(idx(np.arange(n, dtype=np.uint8) % 10))


@pytest.mark.parametrize("layout", ["nested", "flat"])
def test_mnist_and_fashion_from_a_folder(tmp_path, layout):
    for name, load in (("mnist", datasets.mnist), ("fashion-mnist", datasets.fashion_mnist)):
        root = tmp_path / layout
        _fake_mnist(root / name if layout == "nested" else root)
        x, y, xt, yt = load(root)
        assert x.shape == (7, 1, 28, 28) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
        assert y.dtype == np.int64 and list(y) == list(range(7))


def test_env_var_and_missing_file_message(tmp_path, monkeypatch):
    _fake_mnist(tmp_path / "mnist")
    monkeypatch.setenv("NEURONS_DATA", str(tmp_path))
    assert datasets.mnist()[0].shape[0] == 7
    monkeypatch.setenv("NEURONS_DATA", str(tmp_path / "nothing"))
    with pytest.raises(FileNotFoundError, match=r"(?s)train-images-idx3-ubyte.*looked in:.*nothing.*NEURONS_DATA"):
        datasets.mnist()
    with pytest.raises(FileNotFoundError, match=r"(?s)/usr/share/datasets/fashion-mnist.*apt install dataset-fashion-mnist"):
        datasets.fashion_mnist()


def test_real_mnist_and_fashion(real_data):
    x, y, xt, yt = datasets.mnist(real_data)
    assert x.shape == (60000, 1, 28, 28) and xt.shape == (10000, 1, 28, 28)
    assert x.dtype == np.float32 and x.min() == 0 and x.max() == 1
    assert np.bincount(y).min() > 5000 and set(np.unique(yt)) == set(range(10))
    x, y, xt, yt = datasets.fashion_mnist(real_data)
    assert (np.bincount(y) == 6000).all() and (np.bincount(yt) == 1000).all()


def test_package_data():
    x, y, xt, yt = datasets.mnist_subset()
    assert x.shape == (5000, 1, 28, 28) and xt.shape == (1000, 1, 28, 28)
    assert (np.bincount(y) == 500).all() and (np.bincount(yt) == 100).all()
    assert x.max() == 1.0 and 0.05 < x.mean() < 0.25        # real digits: mostly dark background
    x, y = datasets.iris()
    assert x.shape == (150, 4) and x.dtype == np.float32 and (np.bincount(y) == 50).all()
    np.testing.assert_allclose(x[0], [5.1, 3.5, 1.4, 0.2], rtol=1e-6)
    assert y[0] == 0 and y[-1] == 2


def test_read_csv(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("a,b,c,label\n1,2,3,cat\n4,5,6,dog\n7,8,9,cat\n")
    t = datasets.read_csv(p, features=["a", "c"], target="label")
    np.testing.assert_array_equal(t.x, [[1, 3], [4, 6], [7, 9]])
    assert t.classes == ("cat", "dog") and list(t.y) == [0, 1, 0] and t.columns == ("a", "c")
    t = datasets.read_csv(p, features=slice(0, 2), target=2)
    assert t.classes is None and t.y.shape == (3, 1) and t.y[1, 0] == 6
    with pytest.raises(ValueError, match="no column 'z'"):
        datasets.read_csv(p, features=["z"], target="label")
    with pytest.raises(ValueError, match="column 9 is out of range"):
        datasets.read_csv(p, features=[9], target="label")
    p.write_text("a,b\n1,2\n3\n")
    with pytest.raises(ValueError, match="row 3 has 1 columns"):
        datasets.read_csv(p, features=["a"], target="b")
    p.write_text("a,b\n1,x\n")
    with pytest.raises(ValueError, match=r"row 2, column 'b': 'x' is not a number"):
        datasets.read_csv(p, features=["b"], target="a")


@pytest.mark.parametrize("cell, what", [("", "blank cell"), (" ", "blank cell"), ("n/a", "'n/a' is not a number"),
                                        ("nan", "'nan' is not a finite float32 number"),
                                        ("1e39", "'1e39' is not a finite float32 number")])
def test_read_csv_bad_cell_in_a_numeric_target(tmp_path, cell, what):
    rows = [f"{i},{i / 4}" for i in range(30)]
    rows[17] = f"17,{cell}"                 # file row 19 (the header is row 1)
    p = tmp_path / "t.csv"
    p.write_text("a,y\n" + "\n".join(rows) + "\n")
    with pytest.raises(ValueError, match=re.escape(f"{p}: row 19, column 'y': {what}")):
        datasets.read_csv(p, features=["a"], target="y")
    p.write_text("a,y\n1,2\n,3\n")
    with pytest.raises(ValueError, match=re.escape(f"{p}: row 3, column 'a': blank cell")):
        datasets.read_csv(p, features=["a"], target="y")


@pytest.mark.parametrize("cell", ["", "  "])
def test_read_csv_blank_class_cell(tmp_path, cell):
    p = tmp_path / "t.csv"
    p.write_text(f"a,label\n1,cat\n2,dog\n3,{cell}\n4,cat\n")
    with pytest.raises(ValueError, match=re.escape(f"{p}: row 4, column 'label': blank class cell")):
        datasets.read_csv(p, features=["a"], target="label")
    p.write_text("a,label\n1,cat\n2,7\n3,dog\n")     # mostly text: "7" is a class name
    assert datasets.read_csv(p, features=["a"], target="label").classes == ("7", "cat", "dog")


def test_cifar10(tmp_path):
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        rec = rng.integers(0, 256, (4, 3073), dtype=np.uint8)
        rec[:, 0] %= 10
        (tmp_path / name).write_bytes(rec.tobytes())
    x, y, xt, yt = datasets.cifar10(tmp_path)
    assert x.shape == (20, 3, 32, 32) and xt.shape == (4, 3, 32, 32) and y.max() <= 9
    raw = np.frombuffer((tmp_path / "test_batch.bin").read_bytes(), np.uint8).reshape(4, 3073)
    np.testing.assert_allclose(xt[1, 2, 31, 31], raw[1, -1] / 255, rtol=1e-6)
    (tmp_path / "bad.bin").write_bytes(b"\0" * 3000)
    with pytest.raises(ValueError, match="not a whole number of CIFAR-10 records"):
        datasets.read_cifar_batch(tmp_path / "bad.bin")
    with pytest.raises(FileNotFoundError, match="test_batch.bin"):
        datasets.cifar10(tmp_path / "missing")


def _ftir_lines():
    rng = np.random.default_rng(0)
    header = [f"w{i}" for i in range(571)] + ["Target", "Class", "Split"]
    lines = [",".join(header)]
    for i in range(12):
        lines.append(",".join([f"{v:.4f}" for v in rng.normal(size=571)] + [f"{i / 10}", str(i % 28 + 1),
                                                                             ("Train", "Val", "Test")[i % 3]]))
    return lines


def test_ftir_file_and_synthetic_fallback(tmp_path):
    lines = _ftir_lines()
    p = tmp_path / "ftir.csv"
    p.write_text("\n".join(lines))
    d = datasets.ftir(p)
    assert not d.synthetic
    assert d.train.x.shape == (4, 571) and d.train.target.shape == (4, 1) and list(d.train.label) == [0, 3, 6, 9]
    assert d.val.target[0, 0] == pytest.approx(0.1)
    s = datasets.ftir(None, seed=3)
    assert s.synthetic and s.train.x.shape[1] == 571 and s.train.label.max() < 28
    np.testing.assert_array_equal(s.train.x, datasets.synthetic_ftir(seed=3).train.x)
    assert not np.array_equal(s.train.x, datasets.synthetic_ftir(seed=4).train.x)
    lines[3] = lines[3].rsplit(",", 1)[0] + ",Holdout"
    p.write_text("\n".join(lines))
    with pytest.raises(ValueError, match="split 'Holdout' is not Train, Val or Test"):
        datasets.ftir(p)


@pytest.mark.parametrize("column, cell, what", [(571, "", "column 'Target': blank cell"),
                                                 (572, "n/a", "column 'Class': 'n/a' is not a number"),
                                                 (572, "2.5", "column 'Class': class '2.5' is not a whole number"),
                                                 (572, "inf", "column 'Class': 'inf' is not a finite float32 number"),
                                                 (3, " ", "column 'w3': blank cell")])
def test_ftir_bad_cell_names_row_and_column(tmp_path, column, cell, what):
    lines = _ftir_lines()
    cells = lines[5].split(",")
    cells[column] = cell
    lines[5] = ",".join(cells)
    p = tmp_path / "ftir.csv"
    p.write_text("\n".join(lines))
    with pytest.raises(ValueError, match=re.escape(f"{p}: row 6, {what}")):
        datasets.ftir(p)


def test_one_hot_split_standardize():
    np.testing.assert_array_equal(datasets.one_hot(np.array([2, 0]), 3), [[0, 0, 1], [1, 0, 0]])
    with pytest.raises(ValueError, match="label 5 at index 1 is outside 0..2"):
        datasets.one_hot(np.array([0, 5]), 3)
    x = np.arange(200, dtype=float).reshape(100, 2)
    y = np.repeat(np.arange(4), 25)
    (a, ya), (b, yb) = datasets.split(x, y, (0.8, 0.2), seed=1)
    assert len(a) == 80 and (np.bincount(yb) == 5).all()
    (a2, _), _ = datasets.split(x, y, (0.8, 0.2), seed=1)
    np.testing.assert_array_equal(a, a2)
    parts = datasets.split(x, datasets.one_hot(y), (0.6, 0.2, 0.2), seed=0)
    assert [len(p[0]) for p in parts] == [60, 20, 20]
    z, mean, std = datasets.standardize(np.array([[1.0, 5.0], [3.0, 5.0]]))
    np.testing.assert_allclose(z, [[-1, 0], [1, 0]])
    z2, _, _ = datasets.standardize(np.array([[2.0, 6.0]]), mean, std)
    np.testing.assert_allclose(z2, [[0, 1]])
