"""Iris: a small MLP on Fisher's iris, stratified 80/20 split, test accuracy reported.

    python examples/iris.py [--data DIR] [--epochs 100]

The data ships with the package; ``--data DIR`` reads ``DIR/iris.csv`` instead.
"""
import argparse
import os

import neurons
from neurons import datasets


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="folder with iris.csv (default: the package's copy)")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    if args.data:
        table = datasets.read_csv(os.path.join(args.data, "iris.csv"), features=slice(1, 5), target="Species")
        x, y = table.x, table.y
    else:
        x, y = datasets.iris()
    (x, y), (xt, yt) = datasets.split(x, y, (0.8, 0.2), stratify=True, seed=args.seed)
    x, mean, std = datasets.standardize(x)
    xt, _, _ = datasets.standardize(xt, mean, std)

    net = (neurons.Network((4,))
           .dense(16, "relu")
           .dense(3, "softmax")
           .set_optimizer(neurons.optimizers.Adam(lr=0.01))
           .set_objective("cross_entropy"))
    print(net, end="\n\n")
    trained = net.learn(x, y, batch=16, epochs=args.epochs, print_every=10, seed=args.seed)
    loss, acc = trained.evaluate(xt, yt)
    print(f"test loss {loss:.4f}, test accuracy {100 * acc:.1f}% on {len(xt)} flowers")
    return acc


if __name__ == "__main__":
    main()
