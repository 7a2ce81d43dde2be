"""XOR: the smallest network that needs a hidden layer.

    python examples/xor.py [--epochs 2000]
"""
import argparse

import numpy as np

import neurons


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
    y = np.array([[0], [1], [1], [0]], np.float32)
    net = (neurons.Network((2,))
           .dense(8, "tanh")
           .dense(1, "sigmoid")
           .set_optimizer(neurons.optimizers.SGD(lr=0.5))
           .set_objective("mse"))
    print(net, end="\n\n")
    trained = net.learn(x, y, batch=4, epochs=args.epochs, print_every=args.epochs // 5, seed=args.seed)
    for xi, pi in zip(x, trained.predict(x)):
        print(f"{xi.astype(int)} -> {pi[0]:.3f}")
    loss, acc = trained.evaluate(x, y)
    print(f"accuracy {100 * acc:.0f}%")
    return acc


if __name__ == "__main__":
    main()
