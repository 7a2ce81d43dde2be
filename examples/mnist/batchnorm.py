"""MNIST: the quickstart CNN with batch normalization, beside the plain one.

plain:     conv 5x3x3 relu -> maxpool 2 -> dense 100 relu -> dense 10 softmax (no biases)
batchnorm: conv 5x3x3 relu -> batchnorm -> maxpool 2 -> dense 100 relu -> batchnorm -> dense 10
           softmax

Both with Adam (lr 1e-3), cross-entropy, the same seed and batches. Trains each, then prints
the test accuracy and the seconds per epoch (training only, and with the validation pass) side
by side. Batch normalization normalises each channel (each feature after the dense layer) over
the batch in training; the test pass uses the running statistics learnt along the way, which
``Trained.state`` holds (and ``save`` writes).

    python examples/mnist/batchnorm.py --data ../shared/data [--epochs 3]
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _common import arguments, images, neurons, plot  # noqa: E402


def network(batchnorm=True):
    net = neurons.Network((1, 28, 28)).convolution(5, (3, 3), (1, 1), (1, 1), (1, 1), "relu")
    if batchnorm:
        net = net.batchnorm()
    net = net.maxpool((2, 2), (2, 2)).dense(100, "relu", bias=False)
    if batchnorm:
        net = net.batchnorm()
    return (net.dense(10, "softmax", bias=False)
            .set_optimizer(neurons.optimizers.Adam(lr=1e-3))
            .set_objective("cross_entropy"))


def main():
    args = arguments(__doc__, epochs=3)
    (x, y), (xv, yv), (xt, yt) = images("mnist", args)
    rows = []
    for name, bn in (("plain", False), ("batchnorm", True)):
        net = network(bn)
        print(f"\n{name}:\n{net}\n")
        t0 = time.perf_counter()
        trained = net.learn(x, y, validation=(xv, yv, args.patience), batch=args.batch, epochs=args.epochs,
                            print_every=1, seed=args.seed)
        loss, acc = trained.evaluate(xt, yt)
        h = trained.history
        rows.append((name, acc, loss, sum(h.train_time) / h.epochs,
                     (sum(h.train_time) + sum(h.val_time)) / h.epochs, h.best_epoch, h.epochs,
                     time.perf_counter() - t0))
        stem = os.path.splitext(args.plot or os.path.basename(__file__))[0]
        plot(trained, argparse.Namespace(**{**vars(args), "plot": f"{stem}-{name}.png"}), __file__)
    print(f"\n{'network':<10} {'test acc':>9} {'test loss':>10} {'train s/epoch':>14} {'with val':>9} "
          f"{'best epoch':>11} {'all (s)':>8}")
    for name, acc, loss, train_s, all_s, best, epochs, total in rows:
        print(f"{name:<10} {100 * acc:8.2f}% {loss:10.4f} {train_s:14.2f} {all_s:9.2f} {best:>5} of {epochs:<3} "
              f"{total:8.1f}")


if __name__ == "__main__":
    main()
