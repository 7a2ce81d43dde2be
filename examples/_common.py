"""What every image example shares: its command line, the data, the run and its report."""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import neurons  # noqa: E402
from neurons import datasets  # noqa: E402


def arguments(doc, epochs=5, batch=32):
    p = argparse.ArgumentParser(description=doc.strip().splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=doc)
    p.add_argument("--data", default=None,
                   help="folder holding mnist/ and fashion-mnist/ (default: env NEURONS_DATA)")
    p.add_argument("--epochs", type=int, default=epochs)
    p.add_argument("--batch", type=int, default=batch)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train", type=int, default=None, help="use only the first N training images")
    p.add_argument("--patience", type=int, default=3, help="early-stopping patience (epochs)")
    p.add_argument("--plot", default=None, help="save the loss/accuracy plot here (default: <script>.png)")
    p.add_argument("--no-plot", action="store_true")
    return p.parse_args()


def images(name, args, validation=5000):
    """``(x, y), (x_val, y_val), (x_test, y_test)``: the last ``validation`` training images are held out."""
    load = {"mnist": datasets.mnist, "fashion": datasets.fashion_mnist}[name]
    x, y, xt, yt = load(args.data)
    x, y, xv, yv = x[:-validation], y[:-validation], x[-validation:], y[-validation:]
    if args.train:
        x, y = x[:args.train], y[:args.train]
    print(f"{name}: {len(x)} training, {len(xv)} validation, {len(xt)} test images")
    return (x, y), (xv, yv), (xt, yt)


def run(net, data, args, script, target=None):
    """Train, report the test accuracy (and whether it reached ``target``), plot; returns accuracy."""
    (x, y), (xv, yv), (xt, yt) = data
    print(net, end="\n\n")
    t0 = time.perf_counter()
    trained = net.learn(x, y, validation=(xv, yv, args.patience), batch=args.batch, epochs=args.epochs,
                        print_every=1, seed=args.seed)
    loss, acc = trained.evaluate(xt, yt)
    h = trained.history
    print(f"\ntest loss {loss:.4f}, test accuracy {100 * acc:.2f}% "
          f"(best epoch {h.best_epoch} of {h.epochs}; {sum(h.train_time):.1f} s training, "
          f"{sum(h.train_time) / h.epochs:.1f} s per epoch; {time.perf_counter() - t0:.1f} s in all)")
    if target is not None:
        print(f"target {100 * target:.1f}%: {'reached' if acc >= target else 'NOT reached'}")
    plot(trained, args, script)
    return acc


def plot(trained, args, script):
    if args.no_plot:
        return
    path = args.plot or os.path.splitext(os.path.basename(script))[0] + ".png"
    try:
        trained.plot(path, title=os.path.basename(script))
        print(f"plot saved to {path}")
    except ImportError:
        print("matplotlib is not installed: no plot (pip install 'neurons[plot]')")


def quickstart_cnn(optimizer=None):
    """The original's quickstart CNN: conv 5x3x3 pad 1 relu -> maxpool 2 -> dense 100 relu ->
    dense 10 softmax, no biases; ``optimizer`` (default Adam lr 1e-3), cross-entropy."""
    return (neurons.Network((1, 28, 28))
            .convolution(5, (3, 3), (1, 1), (1, 1), (1, 1), "relu")
            .maxpool((2, 2), (2, 2))
            .dense(100, "relu", bias=False)
            .dense(10, "softmax", bias=False)
            .set_optimizer(optimizer or neurons.optimizers.Adam(lr=1e-3))
            .set_objective("cross_entropy"))


def two_conv_cnn():
    """The CNN the skip and looping examples connect differently: conv 8x3x3 relu -> conv 8x3x3
    relu -> maxpool 2 -> dense 100 relu -> dense 10 softmax; Adam, cross-entropy."""
    return (neurons.Network((1, 28, 28))
            .convolution(8, 3, padding=1, activation="relu")
            .convolution(8, 3, padding=1, activation="relu")
            .maxpool(2)
            .dense(100, "relu")
            .dense(10, "softmax")
            .set_optimizer(neurons.optimizers.Adam(lr=1e-3))
            .set_objective("cross_entropy"))
