"""Time to 99 % MNIST test accuracy: one fixed recipe, in neurons and in PyTorch.

    python -m bench.to99 --data DIR [--epochs 4] [--threads 2] [--framework neurons|torch|both]

The recipe (seed 0): a small CNN (conv 8 → pool → conv 16 → pool → dense 64 → 10; other widths
with ``TO99_ARCH=12,24,64``), Adam with a one-cycle schedule over the whole run, batch 64, the
training set shuffled by ``np.random.default_rng([0, epoch])`` each epoch (as ``learn`` does);
after every epoch the 10,000 test images are scored and the clock (training time only, the
scoring excluded) is read. PyTorch runs the same architecture from the same initial weights
(copied from ``net.init(0)``), the same optimizer and schedule (``OneCycleLR``, stepped per
batch) and the same batch order, each framework in its own fresh process, one after the other.
Printed: seconds of training until the test accuracy first reaches 99.0 %, for both, and their
ratio.
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
BATCH, MAX_LR, TARGET = 64, 4e-3, 0.99
F1, F2, HIDDEN = (int(v) for v in os.environ.get("TO99_ARCH", "8,16,64").split(","))   # the recipe's widths


def network(steps):
    import neurons
    from neurons.schedules import onecycle
    return (neurons.Network((1, 28, 28))
            .convolution(F1, 3, padding=1, activation="relu", bias=True).maxpool(2)
            .convolution(F2, 3, padding=1, activation="relu", bias=True).maxpool(2)
            .dense(HIDDEN, "relu").dense(10, "softmax")
            .set_optimizer(neurons.optimizers.Adam(lr=onecycle(MAX_LR, steps)))
            .set_objective("cross_entropy"))


def torch_model(params):
    import torch
    from torch import nn
    (k1, b1), _, (k2, b2), _, (w3, b3), (w4, b4) = params
    model = nn.Sequential(nn.Conv2d(1, F1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(F1, F2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(F2 * 7 * 7, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 10))
    with torch.no_grad():
        for layer, arrays in zip([model[0], model[3], model[7], model[9]], [(k1, b1), (k2, b2), (w3, b3), (w4, b4)]):
            layer.weight.copy_(torch.from_numpy(arrays[0].reshape(layer.weight.shape)))
            layer.bias.copy_(torch.from_numpy(arrays[1]))
    return model


def run_neurons(x, y, xt, yt, epochs):
    steps = epochs * -(-len(x) // BATCH)
    net = network(steps)
    # compile first (a few steps on a copy of the recipe), so that the clock times training only
    net.learn(x[:2 * BATCH], y[:2 * BATCH], batch=BATCH, epochs=1, progress=False, print_every=10 ** 9)
    t = net.learn(x, y, validation=(xt, yt), batch=BATCH, epochs=epochs, seed=0, progress=False, print_every=1)
    return list(np.cumsum(t.history.train_time)), list(t.history.val_acc)


def run_torch(x, y, xt, yt, epochs, threads):
    import torch
    torch.set_num_threads(threads)
    steps = epochs * -(-len(x) // BATCH)
    model = torch_model(network(steps).init(0))
    opt = torch.optim.Adam(model.parameters(), lr=MAX_LR)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, MAX_LR, total_steps=steps, cycle_momentum=False)
    X, Y, XT = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64)), torch.from_numpy(xt)
    clock, accs, elapsed = [], [], 0.0
    for epoch in range(epochs):
        order = torch.from_numpy(np.random.default_rng([0, epoch]).permutation(len(x)))
        model.train()
        t0 = time.perf_counter()
        for start in range(0, len(x), BATCH):
            idx = order[start:start + BATCH]
            loss = torch.nn.functional.cross_entropy(model(X[idx]), Y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        elapsed += time.perf_counter() - t0
        model.eval()
        with torch.no_grad():
            pred = torch.cat([model(XT[i:i + 1000]).argmax(1) for i in range(0, len(xt), 1000)]).numpy()
        clock.append(elapsed)
        accs.append(float(np.mean(pred == yt)))
        print(f"epoch {epoch + 1}: {100 * accs[-1]:.2f} % after {elapsed:.1f} s", file=sys.stderr)
    return clock, accs


def _first(clock, accs):
    """Seconds of training when the test accuracy first reached the target, and the epoch."""
    for epoch, (t, a) in enumerate(zip(clock, accs)):
        if a >= TARGET:
            return t, epoch + 1
    return None, None


def worker(args):
    from neurons import datasets
    x, y, xt, yt = datasets.mnist(args.data)
    if args.framework == "neurons":
        clock, accs = run_neurons(x, y, xt, yt, args.epochs)
    else:
        clock, accs = run_torch(x, y, xt, yt, args.epochs, args.threads)
    print(json.dumps({"framework": args.framework, "clock": clock, "acc": accs}))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--framework", default="both", choices=("neurons", "torch", "both", "_neurons", "_torch"))
    args = p.parse_args(argv)
    from bench.__main__ import _data_dir, _env
    args.data = _data_dir(args.data)
    if args.framework.startswith("_"):
        args.framework = args.framework[1:]
        return worker(args)
    found = {}
    for fw in ("neurons", "torch") if args.framework == "both" else (args.framework,):
        out = subprocess.run([sys.executable, "-m", "bench.to99", "--data", args.data, "--epochs", str(args.epochs),
                              "--threads", str(args.threads), "--framework", "_" + fw], capture_output=True,
                             text=True, cwd=ROOT, env=_env(args.threads))
        if out.returncode != 0:
            sys.exit(f"{fw} failed:\n{out.stderr[-3000:]}")
        r = json.loads(out.stdout.strip().splitlines()[-1])
        found[fw] = _first(r["clock"], r["acc"])
        accs = ", ".join(f"{100 * a:.2f}" for a in r["acc"])
        t, e = found[fw]
        reached = f"99.0 % after {t:.1f} s of training (epoch {e})" if t is not None else "99.0 % not reached"
        print(f"{fw:<8} {reached}; test accuracy by epoch: {accs} %; {r['clock'][-1]:.1f} s in all", flush=True)
    if len(found) == 2 and None not in (found["neurons"][0], found["torch"][0]):
        print(f"ratio neurons / PyTorch: {found['neurons'][0] / found['torch'][0]:.2f}")


if __name__ == "__main__":
    main()
