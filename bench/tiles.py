"""The register tiles (``neurons.kernels.tiles``) on the products the layers give them, one thread:
GFLOP/s, the median of 7 timings of a loop of ``matmul_set`` calls, each checked against NumPy.

    python -m bench.tiles

Shapes (rows x depth x columns): lenet's 32 -> 64 convolution forward and input gradient on
14 x 14 (at the padded width, 224 columns), the 8 -> 8 convolution of loop and feedback, the
LSTM's per-step products at batch 32 on two threads, a 32 -> 32 convolution on 28 x 28 and a
deep product with few columns. Run it from two trees (``PYTHONPATH``) to compare them.
"""
import time

import numpy as np

SHAPES = [(64, 288, 224), (288, 64, 224), (8, 72, 224), (72, 8, 224), (16, 128, 512), (16, 512, 128),
          (32, 288, 784), (64, 576, 64)]


def main():
    import numba
    numba.set_num_threads(1)
    from neurons.kernels import tiles
    print(f"vectors of {getattr(tiles, 'VECTOR', 32)} bytes")
    rng = np.random.default_rng(0)
    for m, k, n in SHAPES:
        a = rng.standard_normal((m, k)).astype(np.float32)
        b = rng.standard_normal((k, n)).astype(np.float32)
        c = np.empty((m, n), np.float32)
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
