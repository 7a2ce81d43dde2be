"""The ``neurons`` command: ``neurons demo`` trains on data the package ships."""
import argparse
import sys
import time


def _mnist_demo(args):
    import neurons
    from neurons import datasets
    x, y, xt, yt = datasets.mnist_subset()
    print(f"MNIST subset shipped with the package: {len(x)} training and {len(xt)} test images, 28x28")
    net = (neurons.Network((1, 28, 28))
           .convolution(5, (3, 3), (1, 1), (1, 1), (1, 1), "relu")
           .maxpool((2, 2), (2, 2))
           .dense(100, "relu", bias=False)
           .dense(10, "softmax", bias=False)
           .set_optimizer(neurons.optimizers.Adam(lr=1e-3))
           .set_objective("cross_entropy"))
    return net, (x, y), (xt, yt)


def _iris_demo(args):
    import neurons
    from neurons import datasets
    x, y = datasets.iris()
    (x, y), (xt, yt) = datasets.split(x, y, (0.8, 0.2), seed=args.seed)
    x, mean, std = datasets.standardize(x)
    xt, _, _ = datasets.standardize(xt, mean, std)
    print(f"Iris shipped with the package: {len(x)} training and {len(xt)} test flowers, 4 features")
    net = (neurons.Network((4,))
           .dense(16, "relu").dense(3, "softmax")
           .set_optimizer(neurons.optimizers.Adam(lr=0.01))
           .set_objective("cross_entropy"))
    return net, (x, y), (xt, yt)


def demo(args):
    make = {"mnist": _mnist_demo, "iris": _iris_demo}[args.data]
    net, (x, y), (xt, yt) = make(args)
    epochs = args.epochs or (5 if args.data == "mnist" else 60)
    print(net)
    print()
    t0 = time.perf_counter()
    trained = net.learn(x, y, validation=(xt, yt), batch=args.batch, epochs=epochs,
                        print_every=1 if args.data == "mnist" else 10, seed=args.seed)
    loss, acc = trained.evaluate(xt, yt)
    print(f"\ntest loss {loss:.4f}, test accuracy {100 * acc:.2f}% "
          f"({time.perf_counter() - t0:.1f} s for {trained.history.epochs} epochs)")
    if args.save:
        trained.save(args.save)
        print(f"saved to {args.save}")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="neurons", description="Small neural networks from scratch on Numba.")
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="train a network on data the package ships")
    d.add_argument("--data", choices=("mnist", "iris"), default="mnist",
                   help="mnist: the quickstart CNN on 5,000 real MNIST digits (default); iris: an MLP")
    d.add_argument("--epochs", type=int, default=None)
    d.add_argument("--batch", type=int, default=32)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--save", metavar="PATH", help="save the trained network to PATH (.safetensors)")
    d.set_defaults(run=demo)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
