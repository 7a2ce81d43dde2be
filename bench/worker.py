"""One benchmark measurement in a fresh process; prints one JSON line.

    python -m bench.worker FRAMEWORK ARCH BATCH --data DIR [--threads 2] [--cold]
"""
import argparse
import json
import os
import resource
import sys
import time


def load(data):
    from neurons import datasets
    x, y, xt, yt = datasets.mnist(data)
    return x, y, xt, yt


def _rows(images):
    """(N, 1, 28, 28) images as sequences of their rows, (N, 28, 28), for the lstm."""
    from neurons.datasets import as_sequences
    return as_sequences(images)


def run_neurons(args, x, y, xt):
    import numpy as np
    from bench.archs import neurons_net
    from neurons._threads import running
    from neurons.training import _step_seed
    net = neurons_net(args.arch)
    if args.arch == "mlp":
        x, xt = x.reshape(len(x), -1), xt.reshape(len(xt), -1)
    elif args.arch == "lstm":
        x, xt = _rows(x), _rows(xt)
    yy = net.check_y(y, len(y))
    x = net.check_x(x)
    params = net.init(0)
    opt = net.optimizer
    state = opt.init(params)
    stats = net.init_state()            # running statistics (batch normalization), carried as learn does
    b = args.batch

    def epoch(params, state, stats, steps=None):
        order = np.random.default_rng(0).permutation(len(x))
        for step, start in enumerate(range(0, len(x), b)):
            if steps is not None and step >= steps:
                break
            idx = order[start:start + b]
            loss, grads, stats = net._loss_grad_state(params, x[idx], yy[idx], True, _step_seed(0, 0, step), stats)
            params, state = opt.update(grads, state, params)
        return params, state, stats

    with running():
        t0 = time.perf_counter()
        params, state, stats = epoch(params, state, stats, steps=1)
        first = time.perf_counter() - t0
        params, state, stats = epoch(params, state, stats, steps=20)
        t0 = time.perf_counter()
        params, state, stats = epoch(params, state, stats)
        train = time.perf_counter() - t0
        net.predict(params, xt[:256], state=stats)
        t0 = time.perf_counter()
        net.predict(params, xt, batch=1000, state=stats)
        infer = time.perf_counter() - t0
    return first, train, infer


def run_torch(args, x, y, xt):
    import torch
    from bench.archs import torch_net
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = torch_net(args.arch)
    if args.arch == "lstm":
        x, xt = _rows(x), _rows(xt)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    X, Y, XT = torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(xt)
    b = args.batch

    def epoch(steps=None):
        order = torch.randperm(len(X), generator=torch.Generator().manual_seed(0))
        for step, start in enumerate(range(0, len(X), b)):
            if steps is not None and step >= steps:
                break
            idx = order[start:start + b]
            loss = torch.nn.functional.cross_entropy(model(X[idx]), Y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    t0 = time.perf_counter()
    epoch(steps=1)
    first = time.perf_counter() - t0
    epoch(steps=20)
    t0 = time.perf_counter()
    epoch()
    train = time.perf_counter() - t0
    model.eval()                        # inference: batch normalization's running statistics
    with torch.no_grad():
        model(XT[:256])
        t0 = time.perf_counter()
        for i in range(0, len(XT), 1000):
            model(XT[i:i + 1000])
        infer = time.perf_counter() - t0
    return first, train, infer


def main():
    p = argparse.ArgumentParser()
    p.add_argument("framework", choices=("neurons", "torch"))
    p.add_argument("arch")
    p.add_argument("batch", type=int)
    p.add_argument("--data", required=True)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    t_start = time.perf_counter()
    x, y, xt, yt = load(args.data)
    load_time = time.perf_counter() - t_start
    run = run_neurons if args.framework == "neurons" else run_torch
    first, train, infer = run(args, x, y, xt)
    print(json.dumps({"framework": args.framework, "arch": args.arch, "batch": args.batch,
                      "threads": args.threads, "epoch_s": train, "first_step_s": first,
                      "infer_images_per_s": len(xt) / infer, "load_s": load_time,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


if __name__ == "__main__":
    sys.exit(main())
