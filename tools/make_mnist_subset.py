"""Regenerate the MNIST subset shipped in neurons/data: 5,000 training and 1,000 test images,
stratified by class (500 and 100 per digit), chosen with a fixed seed; gzip level 9, mtime 0.

    python tools/make_mnist_subset.py --data ../shared/data
"""
import argparse
import gzip
import os
import struct

import numpy as np

from neurons import datasets

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "neurons", "data")


def idx_bytes(a):
    code = {1: 0x0801, 3: 0x0803}[a.ndim]
    return struct.pack(">I", code) + b"".join(struct.pack(">I", s) for s in a.shape) + a.astype(np.uint8).tobytes()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", default=os.environ.get("NEURONS_DATA"))
    args = p.parse_args()
    x, y, xt, yt = datasets.mnist(args.data)
    rng = np.random.default_rng(2025)
    for part, images, labels, per in (("train", x, y, 500), ("t10k", xt, yt, 100)):
        idx = np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == c), per, replace=False) for c in range(10)]))
        pixels = np.round(images[idx, 0] * 255).astype(np.uint8)
        for kind, arr in (("images-idx3", pixels), ("labels-idx1", labels[idx])):
            path = os.path.join(OUT, f"mnist-subset-{part}-{kind}-ubyte.gz")
            with open(path, "wb") as fh, gzip.GzipFile(fileobj=fh, mode="wb", compresslevel=9, mtime=0) as gz:
                gz.write(idx_bytes(arr))
            print(path, os.path.getsize(path))


if __name__ == "__main__":
    main()
