"""What the FTIR examples share: the data (real CSV or the labelled synthetic stand-in), both
tasks (regression of the target, classification into 28 classes), the run and its report."""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import neurons  # noqa: E402
from neurons import datasets  # noqa: E402


def arguments(doc):
    p = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    p.add_argument("--data", default=None, help="the FTIR CSV file (default: the synthetic stand-in)")
    p.add_argument("--task", choices=("classification", "regression", "both"), default="both")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def load(args):
    path = args.data
    if path and os.path.isdir(path):
        path = os.path.join(path, "ftir.csv")
    data = datasets.ftir(path if path and os.path.exists(path) else None, seed=args.seed)
    if data.synthetic:
        print("FTIR: no data file given, using the SYNTHETIC stand-in spectra (same layout, not real data)")
    return data


def run(network, args, image=False):
    """Train ``network(task)`` for each task; ``image`` feeds the spectra as 1x1x571 images."""
    data = load(args)
    tasks = ("classification", "regression") if args.task == "both" else (args.task,)
    results = {}
    for task in tasks:
        def xs(split):
            return split.x.reshape(len(split.x), 1, 1, -1) if image else split.x

        def ys(split):
            return split.label if task == "classification" else split.target
        net = network(task).set_optimizer(neurons.optimizers.Adam(lr=1e-3))
        net = net.set_objective("cross_entropy" if task == "classification" else "mse")
        print(f"\n== {task} ==\n{net}\n")
        t0 = time.perf_counter()
        trained = net.learn(xs(data.train), ys(data.train), validation=(xs(data.val), ys(data.val), 10),
                            batch=args.batch, epochs=args.epochs, print_every=10, seed=args.seed)
        loss, acc = trained.evaluate(xs(data.test), ys(data.test))
        what = f"test accuracy {100 * acc:.1f}%" if task == "classification" else f"test MSE {loss:.4f}"
        print(f"{task}: {what} (test loss {loss:.4f}; {time.perf_counter() - t0:.1f} s)")
        results[task] = (loss, acc)
    return results


def outputs(task):
    return (28, "softmax") if task == "classification" else (1, "linear")
