"""A second process that compiles a network's kernels while the first one starts training.

On an empty cache, a training run spends most of its first step compiling, one function after
another on one core. When ``learn`` sees Numba start compiling, it starts this process on the
same network and batch size (``start``): it runs the same kernels on zeros, the optimizer's
update first (the last thing a step needs), then each layer forward and back from the first,
then the loss and the evaluation pass. Training compiles the forward passes first and the
backward passes from the last layer, so the two work from opposite ends of the backward passes
(the expensive half); where both need one kernel at once, one compiles it and the other waits
for it and loads it from the on-disk cache (``_cache.py``'s compile lock). Nothing passes
between them but the cache. The helper is stopped when training ends, and nothing depends on
it: if it fails, or is slow, the training process compiles what it needs itself, as without it.
The demo's cold start (``neurons demo``, empty cache, 2 cores): 15.4-16.1 s with the helper,
20.2-21.3 s without (3 alternated runs each).

A network that ``learn`` runs in the compiled chain (``_fused.py``) gets a helper of its own
(``start_chain``): the chain takes 10-15 s to compile, so while it compiles there, ``learn``
takes its steps through the general path (the same bits), whose kernels compile in a few seconds,
and goes over to the chain when the helper is done. With convolutions that helper starts after
the first epoch, at the lowest priority: beside the first step's helper above, the chain's compile
made that step 1.5-2 s slower, and at the same priority beside training (2 threads on 2 cores)
the demo's later epochs took 0.42-0.64 s instead of 0.15-0.19.

Not started under ``NUMBA_DISABLE_JIT`` or ``NEURONS_BLOCKS=prange`` (nothing, or not
everything, is cached), where the cache cannot be locked (``_cache.py``: two processes adding
entries to one function's index at once could otherwise mix them up), nor with
``NEURONS_WARM=0``.
"""
import os
import pickle
import subprocess
import sys

import numpy as np


def wanted():
    from . import _cache
    from .kernels import _blocks
    return _cache.SAFE and _blocks.MODE == "address" and os.environ.get("NEURONS_WARM", "1") != "0"


def start(net, batch, eval_batch, samples=None, nice=False):
    """The helper process (``subprocess.Popen``) for ``net`` at these batch sizes (``eval_batch``
    0: no evaluation pass), or None. ``samples``: the helper compiles the compiled chain of the
    network instead (``_fused.py``; ``learn`` on that many samples), see ``start_chain``;
    ``nice``: at the lowest priority (``os.nice(19)``), behind the training it runs beside."""
    if not wanted():
        return None
    try:
        job = pickle.dumps((net, int(batch), int(eval_batch), samples, bool(nice)))
        proc = subprocess.Popen([sys.executable, "-m", "neurons._warm"], stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        proc.stdin.write(job)
        proc.stdin.close()
        return proc
    except Exception:       # no helper, no harm: training compiles what it needs itself
        return None


_chains = {}        # the compiled chain's signature -> the helper compiling it (one at a time)


def start_chain(runner, net, batch, samples):
    """A helper compiling the compiled chain that ``runner`` (``_fused.Runner``, whose chain is not
    ready) runs, or the one of this process that compiles it already; None: no helper, the caller
    compiles the chain itself (also when a helper has finished before, and the chain is still not
    in the cache: one that cannot be written). Left to finish when training ends, unlike
    ``start``'s: the next ``learn`` then finds the chain in the cache."""
    key = runner.signature()
    if key not in _chains:
        # a chain with convolutions compiles behind the training it runs beside (``_fused.Runner.later``)
        _chains[key] = start(net, batch, 0, samples, nice=runner.later)
    proc = _chains[key]
    return proc if proc is not None and proc.poll() is None else None


def stop(proc):
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait()


def warm(net, batch, eval_batch):
    """Run ``net``'s kernels on zeros: the update, each layer from the first, forward and back, the
    loss, then the evaluation pass (``eval_batch`` samples; 0: none), whose kernels are mostly
    the training forward's. A layer that can give its forward's output and cache in zeros
    without running it (``forward_zeros``: the recurrent and convolution layers, whose passes are
    most of a cold start) goes back first and forward after the loss: training compiles its
    forward first, and the two processes would otherwise both start with it (an LSTM's first step
    on an empty cache: 14.1-14.4 -> 9.6-10.0 s)."""
    from . import graph
    from ._threads import running
    params = net.init(0)
    with running():
        net.optimizer.update(params, net.optimizer.init(params), params)
        program, layers, shapes, stats = net.program, net.layers, net.shapes, net._stats(None) or {}
        last, later = len(program.ops) - 1, []
        for k in range(last + 1):
            op = program.ops[k]
            if not isinstance(op, graph.Apply):
                continue
            spec, p = graph._spec(layers, op), graph._param(params, op)
            xin = np.zeros((batch,) + graph._in_shape(shapes, layers, op), net.dtype)
            activate = k != last or not net._fused
            zeros = getattr(spec, "forward_zeros", lambda p, x: None)(p, xin)
            if (op.layer, op.sub) in stats:
                y, cache, _ = spec.forward_state(p, stats[(op.layer, op.sub)], xin, True)
            elif zeros is not None:
                y, cache = zeros
                later.append((spec, p, xin, activate))
            else:
                y, cache = spec.forward(p, xin, True, 1, activate)
            spec.backward(p, cache, np.zeros_like(y), op.src != 0, activate)
        net._loss_and_dout(np.zeros((batch, int(np.prod(net.output_shape))), net.dtype), _targets(net, batch))
        for spec, p, xin, activate in later:
            spec.forward(p, xin, True, 1, activate)
        if eval_batch:          # last: it runs the forward kernels, which training compiles first
            x = np.zeros((eval_batch,) + net.input_shape, net.dtype)
            net._outputs_and_loss(params, x, _targets(net, eval_batch), net._stats(None))


def _targets(net, n):
    """Zero targets of ``n`` samples, shaped as ``net``'s training targets."""
    return np.zeros((n, int(np.prod(net.output_shape))), net.dtype)


def warm_chain(net, batch, samples):
    """One step of ``net``'s compiled chain on zeros: compiles it, and the kernels it calls."""
    from . import _fused
    from ._threads import running
    runner = _fused.plan(net, batch, samples)
    params = net.init(0)
    rows = min(batch, samples)
    with running():
        runner.run(params, net.optimizer.init(params), np.zeros((rows,) + net.input_shape, net.dtype),
                   _targets(net, rows), np.arange(rows), 0, 0, 1)


def main():
    net, batch, eval_batch, samples, nice = pickle.loads(sys.stdin.buffer.read())
    if nice:
        os.nice(19)
    if samples is None:
        warm(net, batch, eval_batch)
    else:
        warm_chain(net, batch, samples)


if __name__ == "__main__":
    main()
