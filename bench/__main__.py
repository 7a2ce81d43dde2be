"""The benchmark: one epoch of MNIST training per architecture, neurons beside PyTorch.

    python -m bench [--data DIR] [--archs quickstart,mlp] [--batches 32,128] [--reps 3]

Each measurement runs in its own fresh process (``bench/worker.py``), frameworks alternated,
after a JIT/warm-up pass; the median and spread over ``--reps`` are reported. PyTorch's column
is skipped when it is not installed. Also measured: cold start (import, build, first training
step; with an empty compile cache, with and without the helper process that compiles from the
other end, and with a filled one; and ``neurons demo`` whole, on an empty cache), inference throughput, peak memory and the
achieved GFLOP/s against this machine's measured float32 matmul peak. Results go to
``bench/results/<date>.json``; the table is printed in Markdown.
"""
import argparse
import datetime
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _data_dir(arg):
    for cand in (arg, os.environ.get("NEURONS_DATA"), os.path.join(ROOT, "..", "shared", "data")):
        if cand and os.path.isdir(os.path.join(cand, "mnist")):
            return os.path.abspath(cand)
    sys.exit("no MNIST found: pass --data DIR (a folder holding mnist/) or set NEURONS_DATA")


def _env(threads, cache=None):
    env = dict(os.environ, NUMBA_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if cache is not None:
        env["NUMBA_CACHE_DIR"] = cache
    return env


def _worker(framework, arch, batch, data, threads):
    loop = framework == "neurons-loop"
    out = subprocess.run([sys.executable, "-m", "bench.worker", framework.split("-")[0], arch, str(batch),
                          "--data", data, "--threads", str(threads)] + ["--loop"] * loop,
                         capture_output=True, text=True, cwd=ROOT, env=_env(threads))
    if out.returncode != 0:
        raise RuntimeError(f"{framework} {arch} {batch} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


COLD = """
import time; t0 = time.perf_counter()
import numpy as np, neurons
from bench.archs import neurons_net
net = neurons_net("{arch}")
x = np.random.default_rng(0).random((32,) + net.input_shape, dtype=np.float32)
t = net.learn(x, np.arange(32) % net.output_shape[0], batch=32, epochs=1)
print(time.perf_counter() - t0)
"""


def _cold_run(args, threads, cache, helper):
    """Wall seconds of ``python args...`` in a fresh process on the compile cache ``cache``, with
    or without the cold-start helper process (``neurons/_warm.py``); and its stdout. Returns when
    the helper is done too: a dense chain's helper goes on compiling after training ends, and
    would otherwise slow (and fill the cache of) the next measurement."""
    env = dict(_env(threads, cache), NEURONS_WARM="1" if helper else "0")
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable] + args, capture_output=True, text=True, cwd=ROOT, env=env)
    seconds = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    _wait_for_helpers()
    return seconds, out.stdout


def _wait_for_helpers(timeout=300):
    """Until no ``python -m neurons._warm`` process runs (Linux: read from /proc)."""
    import glob
    end = time.perf_counter() + timeout
    while time.perf_counter() < end:
        running = False
        for path in glob.glob("/proc/[0-9]*/cmdline"):
            try:
                with open(path, "rb") as f:
                    running = running or b"neurons._warm" in f.read()
            except OSError:
                pass
        if not running:
            return
        time.sleep(0.2)


WARM_CHAIN = """
from bench.archs import neurons_net
from neurons import _fused, _warm
net = neurons_net("{arch}")
if _fused.plan(net, {batch}, 60000) is not None:
    _warm.warm_chain(net, {batch}, 60000)
"""


def _warm_chain(arch, batch, threads):
    """Compile (or load) the network's compiled chain before its runs are timed, as a user's
    second run finds it: else the first run's ``learn`` would take general steps while a helper
    compiles it beside the timed epoch (``neurons/_fused.py``)."""
    subprocess.run([sys.executable, "-c", WARM_CHAIN.format(arch=arch, batch=batch)], check=True, cwd=ROOT,
                   env=_env(threads), capture_output=True)


def cold_start(arch, threads):
    """Seconds for a fresh process to import, build and take its first training step: with an
    empty compile cache (with the helper process, as users run it, and without), and with the
    cache the first run filled."""
    run = lambda cache, helper: float(_cold_run(["-c", COLD.format(arch=arch)], threads, cache,  # noqa: E731
                                                helper)[1].strip().splitlines()[-1])
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as alone:
        return {"compile_s": run(cache, True), "cached_s": run(cache, True), "compile_no_helper_s": run(alone, False)}


def demo_cold(threads, reps):
    """``neurons demo`` from a fresh process on an empty cache, as the README's first command
    runs it (wall seconds, the command's whole run), with and without the helper, alternated."""
    times = {True: [], False: []}
    for rep in range(reps):
        for helper in (True, False) if rep % 2 == 0 else (False, True):
            with tempfile.TemporaryDirectory() as cache:
                times[helper].append(_cold_run(["-m", "neurons", "demo"], threads, cache, helper)[0])
    return {"helper_s": sorted(times[True]), "no_helper_s": sorted(times[False])}


def _cpu():
    """The CPU's model and the vector widths that decide the kernels' speed (the host of
    2026-12-03 changed from an AMD CPU with AVX2 to an Intel one with AVX-512 between two runs)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            info = f.read()
    except OSError:
        return platform.processor() or platform.machine()
    fields = {}
    for line in info.splitlines():              # the first CPU's fields
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    model, flags = fields.get("model name", "?"), fields.get("flags", "").split()
    return f"{model} ({', '.join(f for f in ('avx2', 'avx512f') if f in flags) or 'no AVX2'})"


def matmul_peak(threads):
    code = ("import numpy as np, time\n"
            "a = np.random.rand(2048, 2048).astype(np.float32); b = a.copy(); a @ b\n"
            "best = min((lambda t: (a @ b, time.perf_counter() - t)[1])(time.perf_counter()) for _ in range(5))\n"
            "print(2 * 2048 ** 3 / best / 1e9)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(threads))
    return float(out.stdout.strip())


def main(argv=None):
    from bench.archs import FIXED_BATCH, NAMES, train_flops
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--data", default=None)
    p.add_argument("--archs", default=",".join(NAMES))
    p.add_argument("--batches", default="32,128")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--no-cold", action="store_true")
    p.add_argument("--loop", action="store_true",
                   help="also time neurons' hand-written step loop (what learn adds on top of it)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    data = _data_dir(args.data)
    archs = args.archs.split(",")
    batches = [int(b) for b in args.batches.split(",")]
    torch = not args.no_torch and importlib.util.find_spec("torch") is not None
    frameworks = ["neurons", "torch"] if torch else ["neurons"]
    frameworks += ["neurons-loop"] if args.loop else []
    if not torch:
        print("PyTorch is not installed: its column is skipped")
    peak = matmul_peak(args.threads)
    print(f"float32 matmul peak (2048^3, {args.threads} threads): {peak:.0f} GFLOP/s")

    rows = []
    for arch in archs:
        for batch in [FIXED_BATCH[arch]] if arch in FIXED_BATCH else batches:
            runs = {fw: [] for fw in frameworks}
            _warm_chain(arch, batch, args.threads)
            for rep in range(args.reps):
                for fw in (frameworks if rep % 2 == 0 else frameworks[::-1]):
                    runs[fw].append(_worker(fw, arch, batch, data, args.threads))
            row = {"arch": arch, "batch": batch}
            for fw, rs in runs.items():
                ep = [r["epoch_s"] for r in rs]
                row[fw] = {"epoch_s": statistics.median(ep), "min_s": min(ep), "max_s": max(ep),
                           "infer_images_per_s": statistics.median(r["infer_images_per_s"] for r in rs),
                           "peak_rss_mb": max(r["peak_rss_mb"] for r in rs), "runs": rs}
            flops = train_flops(arch, batch) * (runs["neurons"][0]["samples"] / batch)
            row["neurons"]["gflops"] = flops / row["neurons"]["epoch_s"] / 1e9
            if torch:
                row["ratio"] = row["neurons"]["epoch_s"] / row["torch"]["epoch_s"]
            rows.append(row)
            t = (f" | torch {row['torch']['epoch_s']:.2f} s | ratio {row['ratio']:.2f}" if torch else "")
            t += f" | hand loop {row['neurons-loop']['epoch_s']:.3f} s" if args.loop else ""
            print(f"{arch:<11} batch {batch:>3}: neurons {row['neurons']['epoch_s']:.2f} s "
                  f"[{row['neurons']['min_s']:.2f}-{row['neurons']['max_s']:.2f}]{t}", flush=True)

    result = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": {
        "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(), "threads": args.threads, "python": platform.python_version(),
        "cpu": _cpu(), "matmul_peak_gflops": peak}, "rows": rows, "cold_start": {}, "demo_cold": None}
    out = args.out or os.path.join(HERE, "results", datetime.date.today().isoformat() + ".json")
    os.makedirs(os.path.dirname(out), exist_ok=True)

    def save():             # after the rows, and again after each cold start: a failure loses none
        with open(out, "w") as fh:
            json.dump(result, fh, indent=1)
    save()
    if not args.no_cold:
        for arch in archs:
            result["cold_start"][arch] = cold_start(arch, args.threads)
            save()
        result["demo_cold"] = demo_cold(args.threads, args.reps)
        save()
    print(f"\nresults written to {out}\n")
    print(table(result))


def table(result):
    """The Markdown table for the README."""
    torch = any("torch" in r for r in result["rows"])
    head = "| network | batch | neurons s/epoch | " + ("PyTorch s/epoch | ratio | " if torch else "")
    head += "GFLOP/s | inference img/s | " + ("PyTorch img/s | " if torch else "") + "peak MB |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in result["rows"]:
        n = r["neurons"]
        line = f"| {r['arch']} | {r['batch']} | {n['epoch_s']:.2f} ({n['min_s']:.2f}-{n['max_s']:.2f}) | "
        if torch:
            line += f"{r['torch']['epoch_s']:.2f} | {r['ratio']:.2f} | "
        line += f"{n['gflops']:.1f} | {n['infer_images_per_s']:,.0f} | "
        if torch:
            line += f"{r['torch']['infer_images_per_s']:,.0f} | "
        line += f"{n['peak_rss_mb']:.0f} |"
        lines.append(line)
    if result.get("cold_start"):
        lines.append("")
        lines.append("| network | first step, empty cache (s) | the same without the helper (s) | cached (s) |")
        lines.append("|---|---|---|---|")
        for arch, c in result["cold_start"].items():
            alone = f"{c['compile_no_helper_s']:.1f}" if "compile_no_helper_s" in c else ""
            lines.append(f"| {arch} | {c['compile_s']:.1f} | {alone} | {c['cached_s']:.1f} |")
    if result.get("demo_cold"):
        d = result["demo_cold"]
        span = lambda t: f"{statistics.median(t):.1f} ({min(t):.1f}-{max(t):.1f})"  # noqa: E731
        lines.append("")
        lines.append(f"`neurons demo` on an empty cache: {span(d['helper_s'])} s; without the helper "
                     f"{span(d['no_helper_s'])} s")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
