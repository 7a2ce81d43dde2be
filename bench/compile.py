"""Where a cold start's time goes: every Numba compilation ``neurons demo`` triggers, each
function's own seconds (its callees' compilations taken out) and how many times it compiled.

    rm -rf /tmp/cold; NUMBA_CACHE_DIR=/tmp/cold python -m bench.compile [--top 30] [--cpu] [--arch NAME]

Run it with an empty cache (as above): with a filled one nothing compiles. ``--cpu`` counts the
main thread's CPU seconds instead of wall-clock ones: steadier while other jobs share the cores.
The demo runs without the cold-start helper process (``NEURONS_WARM=0``): this counts the work.
"""
import argparse
import collections
import os
import time

from numba.core import event


class _Own(event.Listener):
    """Each compilation's own time: its duration less that of the compilations inside it."""

    def __init__(self, clock=time.perf_counter):
        self.clock = clock
        self.own, self.count, self.stack = collections.defaultdict(float), collections.Counter(), []

    def on_start(self, ev):
        self.stack.append([self.clock(), 0.0])

    def on_end(self, ev):
        start, inner = self.stack.pop()
        spent = self.clock() - start
        if self.stack:
            self.stack[-1][1] += spent
        fn = ev.data["dispatcher"].py_func
        name = f"{fn.__module__}.{fn.__name__}"
        self.own[name] += spent - inner
        self.count[name] += 1


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--cpu", action="store_true", help="CPU seconds of the main thread, not wall-clock ones")
    p.add_argument("--arch", default=None, help="a benchmark network's first training step instead of the demo")
    args = p.parse_args(argv)
    os.environ["NEURONS_WARM"] = "0"
    clock = time.thread_time if args.cpu else time.perf_counter
    listener = _Own(clock)
    event.register("numba:compile", listener)
    t0 = clock()
    if args.arch:
        import numpy as np
        from bench.archs import neurons_net
        net = neurons_net(args.arch)
        x = np.random.default_rng(0).random((32,) + net.input_shape, dtype=np.float32)
        net.learn(x, np.arange(32) % net.output_shape[0], batch=32, epochs=1)
    else:
        from neurons.cli import main as neurons_main
        neurons_main(["demo"])
    total = clock() - t0
    print(f"\n{total:.1f} {'CPU ' if args.cpu else ''}s in all, {sum(listener.own.values()):.1f} s compiling: "
          f"{sum(listener.count.values())} compilations of {len(listener.count)} functions")
    for name, seconds in sorted(listener.own.items(), key=lambda kv: -kv[1])[:args.top]:
        print(f"{seconds:7.2f} s {listener.count[name]:4d}  {name}")


if __name__ == "__main__":
    main()
