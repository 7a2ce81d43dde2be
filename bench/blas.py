"""NumPy's OpenBLAS against SciPy's on the products the layers run, single-threaded, as the
kernels call them (``kernels/blas.gemm``, from compiled code): which one ``NEURONS_BLAS`` should
pick by default.

    python -m bench.blas [--reps 7]

Each library runs in its own fresh process (``NEURONS_BLAS=numpy`` / ``scipy``), alternated;
GFLOP/s, the median of ``--reps`` timings of a loop of calls, per shape: the dense layers'
forward (x @ W.T by column blocks), weight gradient (dz.T @ x) and input gradient (dz @ W) of the
benchmark's MLP (784-256-128-10) at batch 32 and 128, with each block's share of two threads.
"""
import argparse
import json
import os
import subprocess
import sys

WORKER = """
import json, time
import numpy as np
from numba import njit
from threadpoolctl import threadpool_limits
import neurons.kernels as k
from neurons.kernels.blas import gemm

@njit
def loop(ta, tb, a, b, c, r):
    for _ in range(r):
        gemm(ta, tb, 1.0, a, b, 0.0, c)

rng = np.random.default_rng(0)
out = {"blas": k.BLAS[0]}
with threadpool_limits(1):
    for name, ta, tb, sa, sb in CASES:
        a, b = rng.random(sa, dtype=np.float32), rng.random(sb, dtype=np.float32)
        m, n, kk = (sa[1] if ta else sa[0]), (sb[0] if tb else sb[1]), (sa[0] if ta else sa[1])
        c = np.empty((m, n), np.float32)
        r = max(20, int(2e8 / (2 * m * n * kk)))
        loop(ta, tb, a, b, c, 1)
        times = []
        for _ in range(REPS):
            t0 = time.perf_counter()
            loop(ta, tb, a, b, c, r)
            times.append((time.perf_counter() - t0) / r)
        out[name] = 2 * m * n * kk / sorted(times)[len(times) // 2] / 1e9
print(json.dumps(out))
"""


def cases():
    """(name, ta, tb, a's shape, b's shape): a block's share of the MLP's products on two threads."""
    out = []
    for batch in (32, 128):
        out += [(f"forward 784->128 b{batch}", False, True, (batch, 784), (128, 784)),
                (f"forward 256->64 b{batch}", False, True, (batch, 256), (64, 256)),
                (f"dW 128x784 b{batch}", True, False, (batch, 128), (batch, 784)),
                (f"dx 128x128 b{batch}", False, False, (batch, 128), (128, 128))]
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=2, help="alternated processes per library")
    args = parser.parse_args(argv)
    code = f"CASES = {cases()!r}\nREPS = {args.reps}\n" + WORKER
    results = {"numpy": [], "scipy": []}
    for _ in range(args.rounds):
        for choice in results:
            env = dict(os.environ, NEURONS_BLAS=choice)
            done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
            results[choice].append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"{'product':28} {'numpy GFLOP/s':>14} {'scipy GFLOP/s':>14}")
    for name, *_ in cases():
        cells = [max(r[name] for r in results[choice]) for choice in results]
        print(f"{name:28} {cells[0]:14.1f} {cells[1]:14.1f}")
    print("(the better of", args.rounds, "processes each; libraries:",
          ", ".join(f"{c} -> {results[c][0]['blas']}" for c in results) + ")")


if __name__ == "__main__":
    main()
