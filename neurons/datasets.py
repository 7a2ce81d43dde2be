"""Data: IDX (MNIST, Fashion-MNIST), CSV, CIFAR-10 binary batches, FTIR spectra, and helpers.

Images come back as float32 in [0, 1], batch first ``(N, C, H, W)``; labels as int64 class
indices. Where a folder is not given, ``NEURONS_DATA`` is used, and for Fashion-MNIST also
Debian's ``/usr/share/datasets/fashion-mnist`` (package ``dataset-fashion-mnist``).
"""
import csv
import gzip
import hashlib
import importlib.resources
import math
import os
import struct
import zlib
from typing import NamedTuple

import numpy as np

_CHUNK = 1 << 20            # bytes read (decompressed) at a time
_IDX_HEAD = 4 + 4 * 255     # the longest IDX header: magic, then 255 dimensions
_F32_MAX = float(np.finfo(np.float32).max)
_MAX_RATIO = 1032           # deflate's largest expansion: no file holds more than this times its size
_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
           0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}

# SHA-256 of the uncompressed official files
SHA256 = {
    "mnist/train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "mnist/train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "mnist/t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "mnist/t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    "fashion-mnist/train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "fashion-mnist/train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "fashion-mnist/t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "fashion-mnist/t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
_OFFICIAL_COUNT = {"train": 60000, "t10k": 10000}
_WHERE = {
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/ (the four *-ubyte.gz files)",
    "fashion-mnist": "https://github.com/zalandoresearch/fashion-mnist (data/fashion/*.gz), "
                     "or on Debian: apt install dataset-fashion-mnist",
}


def _read_bytes(path, limit):
    """At most ``limit + 1`` bytes of ``path``, decompressed if it is gzip.

    Read a chunk at a time, so a file holding more than ``limit`` bytes (a gzip bomb) costs about
    ``limit`` bytes of memory, never its full size. A corrupt or truncated gzip stream is a
    ``ValueError`` naming the file.
    """
    with open(path, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    out = bytearray()
    with (gzip.open if gz else open)(path, "rb") as src:
        try:
            while len(out) <= limit and (chunk := src.read(min(_CHUNK, limit + 1 - len(out)))):
                out += chunk
        except EOFError as e:
            raise ValueError(f"{path}: truncated gzip stream ({e})") from None
        except (OSError, zlib.error) as e:
            raise ValueError(f"{path}: {'corrupt gzip stream' if gz else 'cannot read it'} ({e})") from None
    return out


def read_idx(path, sha256=None):
    """An IDX file (raw or gzip) as an array; ``sha256`` checks the uncompressed bytes."""
    raw = _read_idx(path)
    if sha256 is not None:
        got = hashlib.sha256(raw).hexdigest()
        if got != sha256:
            raise ValueError(f"{path}: SHA-256 mismatch: expected {sha256}, got {got}")
    return _parse_idx(raw, path)


def _read_idx(path):
    """The uncompressed bytes of an IDX file, read no further than one byte past what its header declares."""
    shape, _, start, size = _idx_header(_read_bytes(path, _IDX_HEAD), path)
    stored = os.path.getsize(path)
    if start + size > _MAX_RATIO * stored:
        raise ValueError(f"{path}: truncated: shape {shape} needs {size} data bytes, more than a {stored}-byte "
                         f"file can hold")
    return _read_bytes(path, start + size)


def _idx_header(raw, path):
    """``(shape, dtype, start, size)`` from the first bytes of an IDX file: the data begin at ``start``
    and take ``size`` bytes, a Python int, so no header can overflow it."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic {raw[:4].hex() or 'empty'})")
    code, ndim = raw[2], raw[3]
    if code not in _DTYPES:
        raise ValueError(f"{path}: unknown IDX data type code 0x{code:02x}")
    if ndim < 1:
        raise ValueError(f"{path}: IDX file with {ndim} dimensions")
    start = 4 + 4 * ndim
    if len(raw) < start:
        raise ValueError(f"{path}: truncated IDX header ({len(raw)} bytes for {ndim} dimensions)")
    shape = struct.unpack(f">{ndim}I", raw[4:start])
    dtype = np.dtype(_DTYPES[code])
    return shape, dtype, start, math.prod(shape) * dtype.itemsize


def _parse_idx(raw, path):
    shape, dtype, start, size = _idx_header(raw, path)
    got = len(raw) - start
    if got < size:
        raise ValueError(f"{path}: truncated: shape {shape} needs {size} data bytes, the file has {got}")
    if got > size:
        raise ValueError(f"{path}: trailing bytes: the file holds more data than shape {shape} needs ({size} bytes)")
    return np.frombuffer(raw, dtype, offset=start).reshape(shape).astype(dtype.newbyteorder("="))


def _roots(root, name):
    cands = []
    if root is not None:
        cands += [os.path.join(root, name), root]
    elif os.environ.get("NEURONS_DATA"):
        env = os.environ["NEURONS_DATA"]
        cands += [os.path.join(env, name), env]
    if name == "fashion-mnist" and root is None:
        cands.append("/usr/share/datasets/fashion-mnist")
    return cands


def _find(root, name, stem):
    looked = []
    for folder in _roots(root, name):
        for suffix in ("", ".gz"):
            path = os.path.join(folder, stem + suffix)
            looked.append(path)
            if os.path.isfile(path):
                return path
    where = "\n  ".join(looked) if looked else "(nowhere: no folder given and NEURONS_DATA is not set)"
    raise FileNotFoundError(f"{name} file {stem}[.gz] not found; looked in:\n  {where}\n"
                            f"Pass the folder (e.g. mnist(root)) or set NEURONS_DATA. Get the data from "
                            f"{_WHERE[name]}")


def _idx_set(root, name, check):
    out = []
    for part in ("train", "t10k"):
        arrays = []
        for kind, ndim in (("images-idx3", 3), ("labels-idx1", 1)):
            stem = f"{part}-{kind}-ubyte"
            path = _find(root, name, stem)
            raw = _read_idx(path)
            a = _parse_idx(raw, path)
            if a.ndim != ndim:
                raise ValueError(f"{path}: expected {ndim} dimensions, got shape {a.shape}")
            if check and len(a) == _OFFICIAL_COUNT[part]:
                want = SHA256[f"{name}/{stem}"]
                got = hashlib.sha256(raw).hexdigest()
                if got != want:
                    raise ValueError(f"{path}: SHA-256 mismatch for the official {name} file: expected {want}, "
                                     f"got {got} (corrupt download?)")
            arrays.append(a)
        images, labels = arrays
        if len(images) != len(labels):
            raise ValueError(f"{name} {part}: {len(images)} images but {len(labels)} labels")
        out += [(images.astype(np.float32) / 255.0)[:, None], labels.astype(np.int64)]
    return tuple(out)


def mnist(root=None, check=True):
    """``(x_train, y_train, x_test, y_test)``: images (N, 1, 28, 28) float32 in [0, 1], labels int64.

    Files ``train-images-idx3-ubyte[.gz]`` etc. in ``root/mnist`` or ``root`` (default: env
    ``NEURONS_DATA``). ``check`` verifies the official files' SHA-256.
    """
    return _idx_set(root, "mnist", check)


def fashion_mnist(root=None, check=True):
    """Like ``mnist``, from ``root/fashion-mnist`` or ``root`` (default: ``NEURONS_DATA``, then
    ``/usr/share/datasets/fashion-mnist``)."""
    return _idx_set(root, "fashion-mnist", check)


def _package_file(name):
    return importlib.resources.files("neurons") / "data" / name


def mnist_subset():
    """The real MNIST subset shipped in the package: 5,000 training and 1,000 test images
    (stratified by class), as ``(x_train, y_train, x_test, y_test)`` like ``mnist``."""
    out = []
    for part in ("train", "t10k"):
        images = _package_idx(f"mnist-subset-{part}-images-idx3-ubyte.gz")
        labels = _package_idx(f"mnist-subset-{part}-labels-idx1-ubyte.gz")
        out += [(images.astype(np.float32) / 255.0)[:, None], labels.astype(np.int64)]
    return tuple(out)


def _package_idx(name):
    with importlib.resources.as_file(_package_file(name)) as path:
        return read_idx(path)


IRIS_CLASSES = ("Iris-setosa", "Iris-versicolor", "Iris-virginica")


def iris():
    """Fisher's iris from the package: ``(x, y)``, x float32 (150, 4), y int64 in 0..2."""
    with importlib.resources.as_file(_package_file("iris.csv")) as path:
        table = read_csv(path, features=slice(1, 5), target="Species")
    order = [table.classes.index(c) for c in IRIS_CLASSES]
    remap = np.argsort(order)
    return table.x, remap[table.y]


class Table(NamedTuple):
    """What ``read_csv`` returns: features, targets, and the class names when the target is text."""
    x: np.ndarray
    y: np.ndarray
    columns: tuple
    classes: tuple | None


def read_csv(path, features, target, skip_header=True, delimiter=","):
    """Feature and target columns of a CSV file.

    ``features``: column indices, header names, a list of them, or a slice; ``target``: one column.
    A target whose cells are mostly numbers is numeric and comes back as float32 ``(N, 1)``; any
    other is text, as int64 class indices (classes sorted by name, listed in ``.classes``). A
    blank or non-numeric feature cell, a blank or non-numeric cell in a numeric target and a blank
    class cell are ``ValueError`` naming the row and the column.
    """
    with open(path, newline="") as fh:
        rows = [r for r in csv.reader(fh, delimiter=delimiter) if r]
    if not rows:
        raise ValueError(f"{path}: empty file")
    header = rows[0] if skip_header else [str(i) for i in range(len(rows[0]))]
    body = rows[1:] if skip_header else rows
    width = len(header)
    for i, r in enumerate(body):
        if len(r) != width:
            raise ValueError(f"{path}: row {i + 1 + skip_header} has {len(r)} columns, the header has {width}")

    def index(c):
        if isinstance(c, (int, np.integer)) and not isinstance(c, bool):
            if not -width <= c < width:
                raise ValueError(f"{path}: column {c} is out of range (the file has {width} columns)")
            return int(c) % width
        if isinstance(c, str) and c in header:
            return header.index(c)
        raise ValueError(f"{path}: no column {c!r}; the columns are {', '.join(header)}")

    if isinstance(features, slice):
        fcols = list(range(width))[features]
    elif isinstance(features, (list, tuple)):
        fcols = [index(c) for c in features]
    else:
        fcols = [index(features)]
    tcol = index(target)
    first = 1 + skip_header                 # the file's row number of body[0]
    x = np.empty((len(body), len(fcols)), np.float32)
    for i, r in enumerate(body):
        for j, c in enumerate(fcols):
            x[i, j] = _number(r[c], path, i + first, header[c])
    values = [r[tcol] for r in body]
    filled = [v for v in values if v.strip()]
    if 2 * sum(map(_is_number, filled)) > len(filled):     # mostly numbers: numeric, its odd cells are errors
        y = np.array([_number(v, path, i, header[tcol]) for i, v in enumerate(values, first)], np.float32)
        y, classes = y.reshape(-1, 1), None
    else:
        for i, v in enumerate(values, first):
            if not v.strip():
                raise ValueError(f"{path}: row {i}, column {header[tcol]!r}: blank class cell")
        classes = tuple(sorted(set(values)))
        y = np.array([classes.index(v) for v in values], np.int64)
    return Table(x, y, tuple(header[c] for c in fcols), classes)


def _is_number(text):
    try:
        float(text)
        return True
    except ValueError:
        return False


def _number(text, path, row, column):
    """``float(text)``, or a ``ValueError`` naming the file, row and column of the cell (also for
    "nan", "inf" and numbers too large for the float32 arrays the loaders return)."""
    try:
        value = float(text)
    except ValueError:
        what = f"{text!r} is not a number" if text.strip() else "blank cell"
        raise ValueError(f"{path}: row {row}, column {column!r}: {what}") from None
    if not abs(value) <= _F32_MAX:
        raise ValueError(f"{path}: row {row}, column {column!r}: {text!r} is not a finite float32 number")
    return value


def read_cifar_batch(path):
    """One CIFAR-10 binary batch: ``(x, y)``, x float32 (N, 3, 32, 32) in [0, 1], y int64."""
    raw = np.frombuffer(_read_bytes(path, _MAX_RATIO * os.path.getsize(path)), np.uint8)
    if raw.size == 0 or raw.size % 3073:
        raise ValueError(f"{path}: {raw.size} bytes is not a whole number of CIFAR-10 records (3073 bytes each)")
    rec = raw.reshape(-1, 3073)
    y = rec[:, 0].astype(np.int64)
    if y.max() > 9:
        raise ValueError(f"{path}: label {y.max()} is not a CIFAR-10 class (0..9)")
    return (rec[:, 1:].reshape(-1, 3, 32, 32).astype(np.float32) / 255.0), y


def cifar10(root):
    """``(x_train, y_train, x_test, y_test)`` from ``data_batch_1..5.bin`` and ``test_batch.bin`` in ``root``
    (or ``root/cifar-10-batches-bin``)."""
    folder = root
    if not os.path.exists(os.path.join(folder, "test_batch.bin")):
        folder = os.path.join(root, "cifar-10-batches-bin")
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    missing = [n for n in names if not os.path.isfile(os.path.join(folder, n))]
    if missing:
        raise FileNotFoundError(f"CIFAR-10 files not found in {root} (or {folder}): {', '.join(missing)}; get the "
                                f"binary version from https://www.cs.toronto.edu/~kriz/cifar.html")
    train = [read_cifar_batch(os.path.join(folder, n)) for n in names[:5]]
    xt, yt = read_cifar_batch(os.path.join(folder, names[5]))
    return np.concatenate([t[0] for t in train]), np.concatenate([t[1] for t in train]), xt, yt


# ----------------------------------------------------------------------------- FTIR

FTIR_FEATURES = 571
FTIR_CLASSES = 28


class Split(NamedTuple):
    x: np.ndarray          # (N, 571) float32
    target: np.ndarray     # (N, 1) float32, the regression target
    label: np.ndarray      # (N,) int64, zero-based class


class FTIR(NamedTuple):
    train: Split
    val: Split
    test: Split
    synthetic: bool


def ftir(path=None, seed=0):
    """FTIR spectra in the original crate's layout, or a labelled synthetic stand-in.

    The CSV has a header; its last three columns are the regression target, the 1-based class
    (1..28) and the split (Train / Val / Test), found by the names ``target``, ``class``, ``split``
    (any case) or else by position; every other column is a spectral feature (571 of them).
    With ``path=None`` this returns ``synthetic_ftir(seed=seed)`` (``.synthetic`` is True).
    """
    if path is None:
        return synthetic_ftir(seed=seed)
    with open(path, newline="") as fh:
        rows = [r for r in csv.reader(fh) if r]
    if len(rows) < 2:
        raise ValueError(f"{path}: no data rows")
    header = [h.strip().lower() for h in rows[0]]

    def col(name, default):
        return header.index(name) if name in header else default

    n = len(header)
    tcol, ccol, scol = col("target", n - 3), col("class", n - 2), col("split", n - 1)
    fcols = [i for i in range(n) if i not in (tcol, ccol, scol)]
    if len(fcols) != FTIR_FEATURES:
        raise ValueError(f"{path}: expected {FTIR_FEATURES} spectral columns, found {len(fcols)}")
    parts = {"train": [], "val": [], "test": []}
    for i, r in enumerate(rows[1:], start=2):
        if len(r) != n:
            raise ValueError(f"{path}: row {i} has {len(r)} columns, the header has {n}")
        split = r[scol].strip().lower()
        if split not in parts:
            raise ValueError(f"{path}: row {i}: split {r[scol]!r} is not Train, Val or Test")
        x = [_number(r[c], path, i, rows[0][c]) for c in fcols]
        target, k = (_number(r[c], path, i, rows[0][c]) for c in (tcol, ccol))
        if not k.is_integer():
            raise ValueError(f"{path}: row {i}, column {rows[0][ccol]!r}: class {r[ccol]!r} is not a whole number")
        parts[split].append((x, target, int(k)))
    out = []
    for name in ("train", "val", "test"):
        rs = parts[name]
        x = np.array([r[0] for r in rs], np.float32).reshape(-1, FTIR_FEATURES)
        label = np.array([r[2] for r in rs], np.int64) - 1
        if label.size and (label.min() < 0 or label.max() >= FTIR_CLASSES):
            raise ValueError(f"{path}: classes must be 1..{FTIR_CLASSES}, found {label.min() + 1}..{label.max() + 1}")
        out.append(Split(x, np.array([r[1] for r in rs], np.float32).reshape(-1, 1), label))
    return FTIR(*out, synthetic=False)


def synthetic_ftir(n=1400, seed=0):
    """A SYNTHETIC stand-in for the FTIR data (not real spectra), same layout as ``ftir``.

    Each class has three Gaussian absorption peaks at class-specific wavenumbers; a sample's
    peaks are jittered in height and position, on a sloping baseline with noise. The target is
    a smooth function of the peak heights. Split 70/15/15.
    """
    rng = np.random.default_rng(seed)
    grid = np.linspace(0.0, 1.0, FTIR_FEATURES)
    centers = np.random.default_rng(12345).uniform(0.05, 0.95, size=(FTIR_CLASSES, 3))
    label = np.arange(n) % FTIR_CLASSES
    rng.shuffle(label)
    heights = rng.uniform(0.5, 1.5, size=(n, 3))
    shift = rng.normal(scale=0.01, size=(n, 3))
    pos = centers[label] + shift
    x = (heights[:, :, None] * np.exp(-((grid[None, None, :] - pos[:, :, None]) / 0.02) ** 2)).sum(1)
    x += rng.uniform(-0.2, 0.2, size=(n, 1)) * grid + rng.normal(scale=0.05, size=(n, FTIR_FEATURES))
    target = (heights[:, 0] + 0.5 * heights[:, 1] ** 2 - 0.3 * heights[:, 2]).reshape(-1, 1)
    x = x.astype(np.float32)
    target = target.astype(np.float32)
    a, b = int(0.7 * n), int(0.85 * n)
    parts = [Split(x[s], target[s], label[s].astype(np.int64)) for s in (slice(0, a), slice(a, b), slice(b, n))]
    return FTIR(*parts, synthetic=True)


# ----------------------------------------------------------------------------- helpers

def as_sequences(images):
    """Images ``(N, C, H, W)`` (or ``(N, H, W)``) as sequences ``(N, H, C·W)``: read row by row, one
    row of every channel per step (MNIST's ``(N, 1, 28, 28)`` becomes ``(N, 28, 28)``), for a
    network with input shape ``(H, C·W)`` and a recurrent layer first."""
    x = np.asarray(images)
    if x.ndim == 3:
        return x
    if x.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W) or (N, H, W), got shape {x.shape}")
    n, c, h, w = x.shape
    return np.ascontiguousarray(x.transpose(0, 2, 1, 3)).reshape(n, h, c * w)


def one_hot(labels, classes=None, dtype=np.float32):
    """``(N, classes)`` rows with a 1 at each label."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be a 1-D array of integers, got {labels.dtype} of shape {labels.shape}")
    classes = int(labels.max()) + 1 if classes is None else int(classes)
    bad = (labels < 0) | (labels >= classes)
    if bad.any():
        j = int(np.argmax(bad))
        raise ValueError(f"label {labels[j]} at index {j} is outside 0..{classes - 1}")
    out = np.zeros((len(labels), classes), dtype)
    out[np.arange(len(labels)), labels] = 1
    return out


def split(x, y, fractions=(0.8, 0.2), stratify=True, seed=0):
    """Split ``(x, y)`` into ``len(fractions)`` parts, returned as ``[(x1, y1), (x2, y2), ...]``.

    With ``stratify`` (and class labels or one-hot rows in ``y``), every part keeps the class
    proportions. Seeded.
    """
    fractions = np.asarray(fractions, float)
    if fractions.ndim != 1 or len(fractions) < 2 or (fractions <= 0).any() or abs(fractions.sum() - 1) > 1e-9:
        raise ValueError(f"fractions must be two or more positive numbers summing to 1, got {tuple(fractions)}")
    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} samples but y has {len(y)}")
    rng = np.random.default_rng(seed)
    if stratify and y.ndim == 2 and y.shape[1] > 1:
        groups = np.argmax(y, 1)
    elif stratify and y.ndim == 1 and y.dtype.kind in "iu":
        groups = y
    else:
        groups = np.zeros(len(y), int)
    parts = [[] for _ in fractions]
    for g in np.unique(groups):
        idx = rng.permutation(np.flatnonzero(groups == g))
        cuts = np.round(np.cumsum(fractions)[:-1] * len(idx)).astype(int)
        for part, chunk in zip(parts, np.split(idx, cuts)):
            part.append(chunk)
    out = []
    for part in parts:
        idx = rng.permutation(np.concatenate(part))
        out.append((x[idx], y[idx]))
    return out


def standardize(x, mean=None, std=None):
    """``((x - mean) / std, mean, std)`` per feature; pass a training set's mean and std to reuse them."""
    x = np.asarray(x)
    if mean is None:
        mean = x.mean(0)
    if std is None:
        std = x.std(0)
        std = np.where(std == 0, 1, std)
    return ((x - mean) / std).astype(x.dtype if x.dtype.kind == "f" else np.float32), mean, std
