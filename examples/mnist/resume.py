"""MNIST: a run with a one-cycle schedule and checkpoints is killed, resumed, and finishes where
a run straight through does.

The quickstart CNN (conv 5x3x3 pad 1 relu -> maxpool 2 -> dense 100 relu -> dense 10 softmax),
Adam with lr = onecycle(max_lr 3e-3 over the whole run), a checkpoint after every epoch. The
run starts in a child process, which is killed (SIGKILL) once a checkpoint holds half the
epochs; this process resumes it from the checkpoint to the end, then trains the same run
straight through and compares: the same test accuracy, the same params bit for bit.

    python examples/mnist/resume.py --data ../shared/data [--epochs 4]
"""
import os
import signal
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _common import arguments, images, neurons  # noqa: E402


def network(steps):
    opt = neurons.optimizers.Adam(lr=neurons.schedules.onecycle(max_lr=3e-3, total_steps=steps))
    return (neurons.Network((1, 28, 28))
            .convolution(5, 3, padding=1, activation="relu")
            .maxpool(2)
            .dense(100, "relu", bias=False)
            .dense(10, "softmax", bias=False)
            .set_optimizer(opt)
            .set_objective("cross_entropy"))


def train(args, data, **kw):
    (x, y), (xv, yv), _ = data
    net = network(args.epochs * -(-len(x) // args.batch))
    return net.learn(x, y, validation=(xv, yv), batch=args.batch, epochs=args.epochs, seed=args.seed,
                     print_every=1, **kw)


def killed_run(args, path):
    """Start the run in a child process and kill it once its checkpoint holds half the epochs."""
    child = subprocess.Popen([sys.executable, __file__, *sys.argv[1:], "--child", path])
    while child.poll() is None:
        if os.path.exists(path) and neurons.load(path).history.epochs >= args.epochs // 2:
            child.send_signal(signal.SIGKILL)
            child.wait()
            print(f"\nkilled the run (SIGKILL) after epoch {neurons.load(path).history.epochs} of {args.epochs}\n")
            return
        time.sleep(0.2)
    raise SystemExit("the run ended before it could be killed; use more --epochs")


if __name__ == "__main__":
    child = "--child" in sys.argv
    if child:
        i = sys.argv.index("--child")
        path = sys.argv.pop(i + 1)
        sys.argv.pop(i)
    args = arguments(__doc__, epochs=4)
    args.epochs = max(args.epochs, 2)
    data = images("mnist", args)
    if child:
        train(args, data, checkpoint=path)
        raise SystemExit
    path = os.path.abspath("mnist-resume.safetensors")
    if os.path.exists(path):
        os.remove(path)
    killed_run(args, path)
    resumed = train(args, data, resume=path, checkpoint=path)
    print("\nthe same run straight through:")
    straight = train(args, data)
    xt, yt = data[2]
    acc_resumed, acc_straight = resumed.evaluate(xt, yt)[1], straight.evaluate(xt, yt)[1]
    same = all(np.array_equal(a, b) for a, b in zip(neurons._tree.leaves(resumed.params),
                                                    neurons._tree.leaves(straight.params)))
    print(f"\ntest accuracy: killed and resumed {100 * acc_resumed:.2f}%, straight through {100 * acc_straight:.2f}%; "
          f"params {'identical bit for bit' if same else 'DIFFERENT'}")
    print(f"checkpoint {path}: {os.path.getsize(path) / 1e6:.2f} MB")
    raise SystemExit(0 if same and acc_resumed == acc_straight else 1)
