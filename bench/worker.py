"""One benchmark measurement in a fresh process; prints one JSON line.

    python -m bench.worker FRAMEWORK ARCH BATCH --data DIR [--threads 2] [--loop]
"""
import argparse
import json
import resource
import statistics
import sys
import time


def load(args):
    """The arch's training inputs, labels and inference inputs (see ``bench.archs.INPUTS``)."""
    import numpy as np
    from bench.archs import INPUTS
    from neurons import datasets
    kind = INPUTS.get(args.arch, "images")
    if kind == "cifar":
        rng = np.random.default_rng(0)
        x = rng.random((10000, 3, 32, 32), dtype=np.float32)
        return x, rng.integers(0, 10, len(x)), rng.random((2000, 3, 32, 32), dtype=np.float32)
    if kind == "iris":
        x, y = datasets.iris()
        (x, y), (xt, _) = datasets.split(x, y, (0.8, 0.2), stratify=True, seed=0)
        x, mean, std = datasets.standardize(x)
        return x.astype(np.float32), y, datasets.standardize(xt, mean, std)[0].astype(np.float32)
    x, y, xt, _ = datasets.mnist(args.data)
    if kind == "flat":
        return x.reshape(len(x), -1), y, xt.reshape(len(xt), -1)
    if kind == "rows":
        return datasets.as_sequences(x), y, datasets.as_sequences(xt)
    return x, y, xt


def _epochs(args):
    """Epochs timed together: an iris epoch at batch 1 is a few ms."""
    return 50 if args.arch == "iris-b1" else 1


def run_neurons(args, x, y, xt):
    """``learn`` as users call it: the first step (compilation included), a warm-up of 20 steps,
    then one timed epoch (``_epochs``) continuing from the warm-up's params; ``Trained.predict``
    for inference. ``--loop``: the hand-written step loop instead, to show what ``learn`` adds."""
    import contextlib
    import io
    from bench.archs import neurons_net
    net = neurons_net(args.arch)
    b, quiet = args.batch, dict(print_every=10 ** 9, progress=False)
    with contextlib.redirect_stdout(io.StringIO()):       # the epoch table (learn prints the last epoch)
        t0 = time.perf_counter()
        warm = net.learn(x[:b], y[:b], batch=b, epochs=1, **quiet)
        first = time.perf_counter() - t0
        warm = net.learn(x[:20 * b], y[:20 * b], batch=b, epochs=1, params=warm.params, state=warm.state, **quiet)
        if args.loop:
            train = _hand_loop(net, warm, x, y, b, _epochs(args))
            trained = warm
        else:
            t0 = time.perf_counter()
            trained = net.learn(x, y, batch=b, epochs=_epochs(args), params=warm.params, state=warm.state, **quiet)
            train = time.perf_counter() - t0
    predict = lambda: trained.predict(xt, batch=1000)        # noqa: E731
    predict()                           # a whole pass first: see _median_seconds
    return first, train / _epochs(args), _median_seconds(predict)


def _median_seconds(run, at_least=5, seconds=0.2):
    """The median time of ``run()``, called ``at_least`` times and until ``seconds`` have passed: an
    inference pass over the test set, which for iris's 30 flowers takes ~0.1 ms, the first calls
    slower while Python specialises its bytecode (neurons: 130, then 65-110 us). The caller makes
    one whole pass first, and the median is of 5 calls or more: cifar's first passes over its 2,000
    images at batch 1000 took 1.9-2.0 s and the second up to 1.5, the rest 0.69-0.83 (the heap
    growing to the large batch's activations), and the median of three had taken one of those."""
    times, end = [], time.perf_counter() + seconds
    while len(times) < at_least or time.perf_counter() < end:
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _hand_loop(net, warm, x, y, b, epochs):
    """The steps of ``learn`` without it: the private loss-and-gradient call and the optimizer's
    update, for the one comparison that shows what ``learn`` costs on top."""
    import numpy as np
    from neurons._threads import running
    from neurons.training import _step_seed
    yy, x = net.check_y(y, len(y)), net.check_x(x)
    params, stats, opt = warm.params, warm.state, net.optimizer
    state = opt.init(params)
    with running():
        t0 = time.perf_counter()
        for epoch in range(epochs):
            order = np.random.default_rng(epoch).permutation(len(x))
            for step, start in enumerate(range(0, len(x), b)):
                idx = order[start:start + b]
                _, grads, stats = net._loss_grad_state(params, x[idx], yy[idx], True, _step_seed(0, epoch, step),
                                                       stats)
                params, state = opt.update(grads, state, params)
        return time.perf_counter() - t0


def run_torch(args, x, y, xt):
    import torch
    from bench.archs import torch_net
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = torch_net(args.arch)
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
    for _ in range(_epochs(args)):
        epoch()
    train = (time.perf_counter() - t0) / _epochs(args)
    model.eval()                        # inference: batch normalization's running statistics
    with torch.no_grad():
        passes = lambda: [model(XT[i:i + 1000]) for i in range(0, len(XT), 1000)]    # noqa: E731
        passes()                        # a whole pass first: see _median_seconds
        infer = _median_seconds(passes)
    return first, train, infer


def main():
    p = argparse.ArgumentParser()
    p.add_argument("framework", choices=("neurons", "torch"))
    p.add_argument("arch")
    p.add_argument("batch", type=int)
    p.add_argument("--data", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--loop", action="store_true", help="neurons: time a hand-written step loop, not learn")
    args = p.parse_args()
    t_start = time.perf_counter()
    x, y, xt = load(args)
    load_time = time.perf_counter() - t_start
    run = run_neurons if args.framework == "neurons" else run_torch
    first, train, infer = run(args, x, y, xt)
    print(json.dumps({"framework": args.framework + ("-loop" if args.loop else ""), "arch": args.arch,
                      "batch": args.batch, "samples": len(x),
                      "threads": args.threads, "epoch_s": train, "first_step_s": first,
                      "infer_images_per_s": len(xt) / infer, "load_s": load_time,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


if __name__ == "__main__":
    sys.exit(main())
