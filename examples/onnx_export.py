"""Train the quickstart CNN, export it to ONNX, and run it in onnxruntime beside ``predict``.

conv 5x3x3 pad 1 relu -> maxpool 2 -> dense 100 relu -> dense 10 softmax (no biases), RMSprop,
cross-entropy (the README's quickstart), trained on the 5,000 MNIST digits the package ships (or
on MNIST with --data). It writes the model (``--out``), checks that onnxruntime's outputs on the
test images equal ``predict``'s (max abs difference, arg-max agreement, accuracy in both), then
times inference on batches of ``--batch-infer`` images: the median of ``--repeats`` calls each,
the two alternated so that a change in the host's speed hits both.

    pip install "neurons[onnx]" onnxruntime
    python examples/onnx_export.py [--data ../shared/data] [--epochs 5] [--out quickstart.onnx]
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numba  # noqa: E402
import numpy as np  # noqa: E402

from _common import quickstart_cnn  # noqa: E402
import neurons  # noqa: E402
from neurons import datasets  # noqa: E402


def network():
    """The quickstart CNN with the original's RMSprop settings."""
    return quickstart_cnn(neurons.optimizers.RMSprop(lr=0.001, alpha=0.99, eps=1e-8, decay=0.0, momentum=0.01,
                                                     centered=True))


def arguments():
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--data", default=None, help="folder holding mnist/ (default: the digits the package ships)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--batch-infer", type=int, default=256, help="images per inference call in the timing")
    p.add_argument("--repeats", type=int, default=30, help="timed calls per framework (the median is reported)")
    p.add_argument("--threads", type=int, default=None,
                   help="onnxruntime's threads (default: Numba's, so that both get the same cores)")
    p.add_argument("--out", default="quickstart.onnx")
    return p.parse_args()


def main():
    args = arguments()
    try:
        import neurons.onnx
        import onnxruntime as ort
    except ImportError as e:
        sys.exit(f"{e}\nthis example needs onnx and onnxruntime: pip install \"neurons[onnx]\" onnxruntime")

    if args.data:
        x, y, xt, yt = datasets.mnist(args.data)
        name = "MNIST"
    else:
        x, y, xt, yt = datasets.mnist_subset()
        name = "the shipped MNIST subset"
    print(f"{name}: {len(x)} training, {len(xt)} test images")

    t0 = time.perf_counter()
    trained = network().learn(x, y, batch=args.batch, epochs=args.epochs, progress=False)
    loss, acc = trained.evaluate(xt, yt)
    print(f"trained {args.epochs} epochs in {time.perf_counter() - t0:.1f} s: test accuracy {100 * acc:.2f} %")

    t0 = time.perf_counter()
    model = neurons.onnx.export(trained, args.out)
    print(f"exported to {args.out} ({os.path.getsize(args.out):,} bytes, opset "
          f"{model.opset_import[0].version}, {len(model.graph.node)} nodes) in {time.perf_counter() - t0:.2f} s")

    threads = args.threads or numba.get_num_threads()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    # onnxruntime's threads spin after each call, as Numba's do: timed alternately in one process,
    # each pool would steal the cores from the other
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(args.out, opts, providers=["CPUExecutionProvider"])

    def run_ort(xb):
        return session.run(None, {"input": xb})[0]

    p_neurons = trained.predict(xt)
    p_ort = np.concatenate([run_ort(xt[i:i + 1000]) for i in range(0, len(xt), 1000)])
    diff = float(np.max(np.abs(p_ort - p_neurons)))
    agree = float(np.mean(np.argmax(p_ort, 1) == np.argmax(p_neurons, 1)))
    acc_ort = float(np.mean(np.argmax(p_ort, 1) == yt))
    print(f"onnxruntime against predict on {len(xt)} test images: max abs difference {diff:.2e}, "
          f"arg-max agreement {100 * agree:.2f} %, accuracy {100 * acc_ort:.2f} % (predict {100 * acc:.2f} %)")
    if diff > 1e-5:
        sys.exit("the exported model's outputs differ from predict's by more than 1e-5")

    b = args.batch_infer
    xb = np.ascontiguousarray(xt[:b]) if len(xt) >= b else np.resize(xt, (b,) + xt.shape[1:])
    runs = {"neurons predict": lambda: trained.predict(xb, batch=b), "onnxruntime": lambda: run_ort(xb)}
    times = {k: [] for k in runs}
    for f in runs.values():                 # warm up (compilation, allocation)
        for _ in range(3):
            f()
    for _ in range(args.repeats):
        for k, f in runs.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    print(f"\ninference, batch {b}, median of {args.repeats} calls (Numba threads {numba.get_num_threads()}, "
          f"onnxruntime threads {threads}, onnxruntime {ort.__version__}):")
    for k, ts in times.items():
        med = statistics.median(ts)
        print(f"  {k:16s} {1e3 * med:7.2f} ms per batch ({1e3 * min(ts):.2f}-{1e3 * max(ts):.2f}), "
              f"{b / med:>9,.0f} images/s")
    ratio = statistics.median(times["onnxruntime"]) / statistics.median(times["neurons predict"])
    print(f"  onnxruntime takes {ratio:.2f}x predict's time")


if __name__ == "__main__":
    main()
