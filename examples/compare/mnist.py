"""The original's architecture comparison on MNIST (or Fashion-MNIST): plain, skip, loopback x2
and x3, feedback block x2 and x3, each loop and block with and without a bypassing skip; several
runs each; per-epoch losses, accuracy and times; then every trained network probed with its
skips, loops and feedback switched off. Writes JSON and plots.

    python examples/compare/mnist.py --data ../shared/data [--runs 3] [--epochs 3] [--train 20000]

With ``--workers N`` the runs go to a local Dask cluster of N single-threaded worker processes,
with ``--scheduler ADDRESS`` to a running one (``neurons.sweep``; pip install
"neurons[distributed]"); the finished runs are kept in OUT/runs.jsonl, and the same command run
again after an interruption runs only the missing ones.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from neurons import compare, datasets  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None)
    p.add_argument("--set", choices=("mnist", "fashion"), default="mnist")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--train", type=int, default=20000, help="training images used (of 55,000)")
    p.add_argument("--only", default=None, help="comma-separated architecture names")
    p.add_argument("--out", default="compare-results", help="folder for results.json and the plots")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, default=None, help="run on a local Dask cluster of this many processes")
    where.add_argument("--scheduler", default=None, help="run on the Dask cluster of this scheduler address")
    args = p.parse_args()
    if args.workers is not None or args.scheduler:
        return on_dask(args)

    load = datasets.mnist if args.set == "mnist" else datasets.fashion_mnist
    x, y, xt, yt = load(args.data)
    x, y, xv, yv = x[:-5000], y[:-5000], x[-5000:], y[-5000:]
    x, y = x[:args.train], y[:args.train]
    nets = compare.architectures("cnn", (1, 28, 28), 10)
    if args.only:
        nets = {k: nets[k] for k in args.only.split(",")}
    print(f"{args.set}: {len(x)} training, {len(xv)} validation, {len(xt)} test images; "
          f"{len(nets)} architectures x {args.runs} runs x {args.epochs} epochs")
    results = compare.study(nets, (x, y, xv, yv, xt, yt), runs=args.runs, epochs=args.epochs)
    report(results, args)


def on_dask(args):
    """The same study, each run a config of ``neurons.sweep``: the workers load the data."""
    data = {"set": args.set, "root": os.path.abspath(args.data) if args.data else None,
            "validation": 5000, "train": args.train}
    names = args.only.split(",") if args.only else list(compare.architectures("cnn", (1, 28, 28), 10))
    os.makedirs(args.out, exist_ok=True)
    runs = os.path.join(args.out, "runs.jsonl")
    where = f"scheduler {args.scheduler}" if args.scheduler else f"{args.workers} local worker processes"
    print(f"{args.set}: {len(names)} architectures x {args.runs} runs x {args.epochs} epochs "
          f"on {where}; finished runs kept in {runs}")
    results = compare.study_sweep("cnn", (1, 28, 28), 10, data, names=names, runs=args.runs, epochs=args.epochs,
                                  client=args.scheduler, workers=args.workers, results=runs)
    report(results, args)


def report(results, args):
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "results.json")
    compare.save(results, path)
    print(f"\nresults: {path}")
    print(f"{'network':<16} {'test acc':>9} {'± std':>7} {'train s/ep':>11} {'val s/ep':>9}  probes")
    for name, acc, std, tr, va, probes in compare.summary(results):
        probe = ", ".join(f"{k} {100 * v:.1f}%" for k, v in probes.items())
        print(f"{name:<16} {100 * acc:8.2f}% {100 * std:6.2f}% {tr:11.2f} {va:9.2f}  {probe}")
    try:
        for plot in compare.plot(results, args.out, title=f"{args.set}: architecture comparison"):
            print(f"plot: {plot}")
    except ImportError:
        print("matplotlib is not installed: no plots (pip install 'neurons[plot]')")


if __name__ == "__main__":
    main()
