"""Data loaders on files the tests write, the package data, and the real files when present."""
import gzip
import struct

import numpy as np
import pytest

from neurons import datasets


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


def test_ftir_file_and_synthetic_fallback(tmp_path):
    rng = np.random.default_rng(0)
    header = [f"w{i}" for i in range(571)] + ["Target", "Class", "Split"]
    lines = [",".join(header)]
    for i in range(12):
        lines.append(",".join([f"{v:.4f}" for v in rng.normal(size=571)] + [f"{i / 10}", str(i % 28 + 1),
                                                                             ("Train", "Val", "Test")[i % 3]]))
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
