"""Data-parallel training (``learn(..., comm=MPI.COMM_WORLD)``): R ranks × 1 thread against one
process × R threads on the same cores, and what that says about more machines.

    python -m bench.mpi --data DIR [--arch lenet] [--batch 128] [--steps 60] [--ranks 2] [--reps 1]

Each measurement is a fresh process (or ``mpiexec -n R`` of them) that trains ``--steps`` steps
of one epoch on the first ``steps × batch`` MNIST images after a warm-up run (compilation), SGD
as in ``python -m bench``. Measured: seconds per step (extrapolated to an epoch of 60,000), the
time per step spent inside the one ``Allreduce`` (the exchange plus any wait for the slower
rank) and its bytes, a bare ``Allreduce`` of that buffer between ranks in step, and one process
at the batches a rank would get on 8 and 64 machines (``batch / R``). From those, the model:
a step on R machines takes ``compute(batch / R) + 2 (R - 1) / R · bytes / bandwidth`` (a ring
allreduce, latency left out). With ``--reps`` the configurations alternate and the fastest
run of each is kept. A worker prints one JSON line; the driver prints a Markdown table
and writes ``--out`` (JSON).
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
EPOCH = 60000


def _worker(args):
    from bench.archs import neurons_net
    from neurons import datasets
    comm = None
    if args.mpi:
        from mpi4py import MPI
        comm = _timed(MPI)(MPI.COMM_WORLD)
    x, y, _, _ = datasets.mnist(args.data)
    net = neurons_net(args.arch)
    b, n = args.batch, args.steps * args.batch
    net.learn(x[:3 * b], y[:3 * b], batch=b, epochs=1, comm=comm)            # compiles (or loads the cache)
    if comm is not None:
        type(comm).reset()
    t = net.learn(x[:n], y[:n], batch=b, epochs=1, comm=comm).history.train_time[0]
    rec = {"arch": args.arch, "batch": b, "steps": args.steps, "ranks": 1, "threads": args.threads,
           "step_s": t / args.steps}
    if comm is not None:
        timed = type(comm)
        rec.update(ranks=comm.Get_size(), allreduce_s=timed.seconds / timed.calls, bytes=timed.bytes // timed.calls)
        buf = np.zeros(rec["bytes"] // 4, np.float32)
        comm.Barrier()
        t0 = time.perf_counter()
        for _ in range(50):
            comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        rec["bare_allreduce_s"] = (time.perf_counter() - t0) / 50
        if comm.Get_rank():
            return
    print(json.dumps(rec), flush=True)


def _timed(MPI):   # noqa: N803 (the module)
    class Timed(MPI.Intracomm):
        """COMM_WORLD, counting the time and bytes of its Allreduce calls."""
        seconds = calls = bytes = 0

        @classmethod
        def reset(cls):
            cls.seconds = cls.calls = cls.bytes = 0

        def Allreduce(self, send, recv, op=MPI.SUM):   # noqa: N802 (mpi4py's name)
            t0 = time.perf_counter()
            super().Allreduce(send, recv, op)
            Timed.seconds += time.perf_counter() - t0
            Timed.calls += 1
            Timed.bytes += recv.nbytes
    return Timed


def _run(cmd, threads):
    env = dict(os.environ, NUMBA_NUM_THREADS=str(threads), OMP_NUM_THREADS="1",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _model(one, small, nbytes, machines=(8, 64), gbits=(10, 100)):
    """Rows ``(R, Gbit/s, compute s, allreduce s, step s, speed-up over one machine)``."""
    rows = []
    for r in machines:
        for g in gbits:
            comm = 2 * (r - 1) / r * nbytes / (g * 1e9 / 8)
            compute = small[r]
            rows.append((r, g, compute, comm, compute + comm, one / (compute + comm)))
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=os.environ.get("NEURONS_DATA", os.path.join(ROOT, "..", "shared", "data")))
    p.add_argument("--arch", default="lenet")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--out", default=None)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mpi", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return _worker(args)
    me = [sys.executable, "-m", "bench.mpi", "--worker", "--data", args.data, "--arch", args.arch,
          "--steps", str(args.steps)]
    r = args.ranks
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    mpiexec = mpiexec if os.path.exists(mpiexec) else "mpiexec"
    small = {m: max(1, args.batch // m) for m in (8, 64)}
    configs = {
        f"{r} ranks x 1 thread": ([mpiexec, "-n", str(r)] + me + ["--mpi", "--batch", str(args.batch)], 1),
        f"1 process x {r} threads": (me + ["--batch", str(args.batch), "--threads", str(r)], r),
        "1 process x 1 thread": (me + ["--batch", str(args.batch)], 1),
        **{f"1 process x {r} threads, batch {b}": (me[:-1] + [str(4 * args.steps), "--batch", str(b), "--threads",
                                                              str(r)], r) for b in small.values()},
    }
    every = {name: [] for name in configs}
    for _ in range(args.reps):                     # alternated; the fastest of each is kept
        for name, (cmd, threads) in configs.items():
            every[name].append(_run(cmd, threads))
    runs = {name: min(recs, key=lambda rec: rec["step_s"]) for name, recs in every.items()}
    small = {m: runs[f"1 process x {r} threads, batch {b}"]["step_s"] for m, b in small.items()}
    dp = runs[f"{r} ranks x 1 thread"]
    one = runs[f"1 process x {r} threads"]["step_s"]
    print(f"{args.arch}, batch {args.batch}, {args.steps} steps (s/epoch extrapolated to {EPOCH:,} images); "
          f"load {os.getloadavg()[0]:.2f}\n")
    print("| run | s/step | s/epoch | allreduce s/step | bare allreduce s | bytes/step |\n|---|---|---|---|---|---|")
    for name, rec in list(runs.items())[:3]:
        ar = (f"{1e3 * rec['allreduce_s']:.2f} ms | {1e3 * rec['bare_allreduce_s']:.2f} ms | {rec['bytes']:,}"
              if "bytes" in rec else "| |")
        print(f"| {name} | {1e3 * rec['step_s']:.1f} ms | {rec['step_s'] * EPOCH / args.batch:.1f} | {ar} |")
    print(f"\none machine ({r} threads) at batch {args.batch // 8}: {1e3 * small[8]:.2f} ms/step, "
          f"at batch {max(1, args.batch // 64)}: {1e3 * small[64]:.2f} ms/step\n")
    print("| machines | Gbit/s | compute ms | allreduce ms | step ms | speed-up |\n|---|---|---|---|---|---|")
    model = _model(one, small, dp["bytes"])
    for m, g, c, a, s, x in model:
        print(f"| {m} | {g} | {1e3 * c:.2f} | {1e3 * a:.2f} | {1e3 * s:.2f} | {x:.1f} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"runs": every, "small": small, "model": model, "load": os.getloadavg()}, f, indent=1)


if __name__ == "__main__":
    main()
