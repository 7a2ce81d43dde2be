"""The register tiles (``neurons.kernels.tiles``) on the products the layers give them, one thread:
GFLOP/s, the median of 7 timings of a loop of ``matmul_set`` calls, each checked against NumPy.

    python -m bench.tiles

Shapes (rows x depth x columns): lenet's 32 -> 64 convolution forward and input gradient on
14 x 14 (at the padded width, 224 columns), the 8 -> 8 convolution of loop and feedback, the
LSTM's per-step products at batch 32 on two threads, a 32 -> 32 convolution on 28 x 28 and a
deep product with few columns. Run it from two trees (``PYTHONPATH``) to compare them. The
operands start on 64-byte boundaries, or ``--offset`` bytes past one (NumPy's and Numba's own
allocations give 16 or 32 bytes past: on AVX-512 that cost a quarter of the speed).
"""
import argparse
import time

import numpy as np

SHAPES = [(64, 288, 224), (288, 64, 224), (8, 72, 224), (72, 8, 224), (16, 128, 512), (16, 512, 128),
          (32, 288, 784), (64, 576, 64)]


def _placed(shape, offset, rng):
    """A float32 array of normal values starting ``offset`` bytes past a 64-byte boundary."""
    size = shape[0] * shape[1]
    buf = np.empty(size + 32, np.float32)
    skip = ((64 - buf.ctypes.data % 64) % 64 + offset) // 4
    out = buf[skip:skip + size].reshape(shape)
    out[...] = rng.standard_normal(shape)
    return out


def main():
    p = argparse.ArgumentParser(description="the register tiles on the layers' products, one thread")
    p.add_argument("--offset", type=int, default=0, choices=(0, 16, 32, 48))
    args = p.parse_args()
    import numba
    numba.set_num_threads(1)
    from neurons.kernels import tiles
    print(f"vectors of {getattr(tiles, 'VECTOR', 32)} bytes, operands {args.offset} bytes past a 64-byte boundary")
    rng = np.random.default_rng(0)
    for m, k, n in SHAPES:
        a, b, c = (_placed(shape, args.offset, rng) for shape in ((m, k), (k, n), (m, n)))
        tiles.matmul_set(a, b, c)
        np.testing.assert_allclose(c, a.astype(np.float64) @ b, rtol=1e-4, atol=1e-3)
        reps = max(3, int(2e8 / (2 * m * k * n)))
        times = []
        for _ in range(7):
            t = time.perf_counter()
            for _ in range(reps):
                tiles.matmul_set(a, b, c)
            times.append((time.perf_counter() - t) / reps)
        t = float(np.median(times))
        print(f"{m:4d} x {k:4d} x {n:4d}: {t * 1e6:8.2f} us  {2 * m * k * n / t / 1e9:6.1f} GFLOP/s")


if __name__ == "__main__":
    main()
