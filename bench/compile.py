"""Where a cold start's time goes: every Numba compilation ``neurons demo`` triggers, each
function's own seconds (its callees' compilations taken out) and how many times it compiled.

    rm -rf /tmp/cold; NUMBA_CACHE_DIR=/tmp/cold python -m bench.compile [--top 30]

Run it with an empty cache (as above): with a filled one nothing compiles.
"""
import argparse
import collections
import time

from numba.core import event


class _Own(event.Listener):
    """Each compilation's own time: its duration less that of the compilations inside it."""

    def __init__(self):
        self.own, self.count, self.stack = collections.defaultdict(float), collections.Counter(), []

    def on_start(self, ev):
        self.stack.append([time.perf_counter(), 0.0])

    def on_end(self, ev):
        start, inner = self.stack.pop()
        spent = time.perf_counter() - start
        if self.stack:
            self.stack[-1][1] += spent
        fn = ev.data["dispatcher"].py_func
        name = f"{fn.__module__}.{fn.__name__}"
        self.own[name] += spent - inner
        self.count[name] += 1


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--top", type=int, default=30)
    args = p.parse_args(argv)
    listener = _Own()
    event.register("numba:compile", listener)
    t0 = time.perf_counter()
    from neurons.cli import main as neurons_main
    neurons_main(["demo"])
    total = time.perf_counter() - t0
    print(f"\n{total:.1f} s in all, {sum(listener.own.values()):.1f} s compiling: "
          f"{sum(listener.count.values())} compilations of {len(listener.count)} functions")
    for name, seconds in sorted(listener.own.items(), key=lambda kv: -kv[1])[:args.top]:
        print(f"{seconds:7.2f} s {listener.count[name]:4d}  {name}")


if __name__ == "__main__":
    main()
