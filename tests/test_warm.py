"""The cold-start helper (``neurons/_warm.py``) and the cache lock it relies on (``_cache.py``)."""
import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import neurons
from neurons import _cache, _warm

# a network off the compiled-chain path (dropout), so that training takes the step-by-step path
# the helper warms; small, so that it compiles in seconds
NET = textwrap.dedent("""
    import numpy as np, neurons
    net = (neurons.Network((6,)).dense(5, "relu", dropout=0.25).dense(3, "softmax")
           .set_optimizer(neurons.optimizers.Adam(lr=1e-3)))
    rng = np.random.default_rng(0)
    x = rng.random((40, 6), dtype=np.float32)
    y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 40)]
""")


def _run(code, cache, **env):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), **env)
    out = subprocess.run([sys.executable, "-c", NET + textwrap.dedent(code)], capture_output=True, text=True,
                         timeout=600, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout


COUNT = """
    from numba.core import event
    compiled = []
    class Count(event.Listener):
        def on_start(self, ev): compiled.append(ev.data["dispatcher"].py_func.__name__)
        def on_end(self, ev): pass
    with event.install_listener("numba:compile", Count()):
        trained = net.learn(x, y, validation=(x[:10], y[:10]), batch=8, epochs=1)
    print(len(compiled), sorted(set(compiled)))
"""


def test_the_helper_compiles_what_training_needs(tmp_path):
    # warm() alone, in one process, compiles (the cache was empty), then training in another
    # finds nothing left to compile: the helper compiles the same kernels, for the same argument
    # types, as training does
    warm = COUNT.replace("trained = net.learn(x, y, validation=(x[:10], y[:10]), batch=8, epochs=1)",
                         "from neurons import _warm; _warm.warm(net, 8, 10)")
    assert not _run(warm, tmp_path, NEURONS_WARM="0").startswith("0 ")
    assert _run(COUNT, tmp_path, NEURONS_WARM="0").startswith("0 []")


def test_training_with_the_helper_gives_the_same_result(tmp_path):
    # learn starts the helper on its first compilation (once); whatever the two processes write
    # to the cache, the trained params are those of a run without the helper
    code = """
        from neurons import _warm
        helpers, start = [], _warm.start
        _warm.start = lambda *args: helpers.append(start(*args)) or helpers[-1]
        trained = net.learn(x, y, batch=8, epochs=2, seed=3)
        print(repr([a.tobytes().hex() for a in neurons._tree.leaves(trained.params)]))
        print(len(helpers), [h.poll() is not None for h in helpers if h is not None])
    """
    with_helper = _run(code, tmp_path / "a", NEURONS_WARM="1").splitlines()
    without = _run(code, tmp_path / "b", NEURONS_WARM="0").splitlines()
    assert with_helper[0] == without[0]
    assert with_helper[1] == "1 [True]"         # started once, and over when learn returned
    assert without[1] == "1 []"                 # asked for, not started


def test_the_helper_is_stopped_and_optional():
    assert _warm.start(lambda: None, 8, 10) is None         # cannot be pickled: no helper, no error
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    _warm.stop(proc)
    assert proc.poll() is not None
    _warm.stop(None)


def test_no_helper_when_asked_not_to(monkeypatch):
    monkeypatch.setenv("NEURONS_WARM", "0")
    assert not _warm.wanted()
    monkeypatch.setenv("NEURONS_WARM", "1")
    assert _warm.wanted() == (_cache.SAFE and neurons.kernels._blocks.MODE == "address")


def test_cache_saves_wait_for_the_lock(tmp_path):
    # a save waits while another process (here: an open file description) holds the index's lock
    import fcntl
    from numba.core.caching import IndexDataCacheFile
    assert _cache.SAFE
    cache_file = IndexDataCacheFile(str(tmp_path), "f-1.py311", ("stamp", 1))
    fd = os.open(os.path.join(tmp_path, "f-1.py311.nbi.lock"), os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    saver = threading.Thread(target=cache_file.save, args=("key", b"data"))
    saver.start()
    time.sleep(0.3)
    assert saver.is_alive() and not os.path.exists(os.path.join(tmp_path, "f-1.py311.nbi"))
    os.close(fd)
    saver.join(10)
    assert not saver.is_alive()
    assert cache_file.load("key") == b"data"


def test_concurrent_saves_of_different_keys_all_survive(tmp_path):
    # without the lock, each process reads the index, picks the first free data file and writes
    # both back: entries are lost, or name the other process's data (117 of these 400 were,
    # measured with Numba's own save)
    code = textwrap.dedent(f"""
        import sys, time, neurons
        from numba.core.caching import IndexDataCacheFile
        f = IndexDataCacheFile({str(tmp_path)!r}, "g-1.py311", ("stamp", 1))
        me, start = sys.argv[1], float(sys.argv[2])
        while time.time() < start:
            pass
        for i in range(200):
            f.save((me, i), (me, i))
    """)
    start = str(time.time() + 3)       # both importing first, then saving at the same moment
    procs = [subprocess.Popen([sys.executable, "-c", code, me, start]) for me in "ab"]
    assert all(p.wait(120) == 0 for p in procs)
    from numba.core.caching import IndexDataCacheFile
    f = IndexDataCacheFile(str(tmp_path), "g-1.py311", ("stamp", 1))
    assert [f.load((me, i)) for me in "ab" for i in range(200)] == [(me, i) for me in "ab" for i in range(200)]


def test_one_process_compiles_what_several_need_at_once(tmp_path):
    # two processes reaching one function, same signature, at the same moment on an empty cache:
    # one compiles it, the other waits for the compile lock and loads it from the cache
    (tmp_path / "slow.py").write_text(textwrap.dedent("""
        import numba, numpy as np

        @numba.njit(cache=True)
        def slow(a):
            s = 0.0
            for i in range(a.shape[0]):
                s += np.sin(a[i]) * np.cos(a[i]) + np.sqrt(abs(a[i])) + np.exp(-a[i] * a[i])
            return s + np.linalg.norm(a) + np.sort(a)[0] + np.median(a) + np.cumsum(a)[-1]
    """))
    code = textwrap.dedent("""
        import sys, time, numpy as np, neurons
        from numba.core import event
        compiled = []
        class Count(event.Listener):
            def on_start(self, ev): compiled.append(ev.data["dispatcher"].py_func.__name__)
            def on_end(self, ev): pass
        event.register("numba:compile", Count())
        import slow
        start = float(sys.argv[1])
        while time.time() < start:
            pass
        slow.slow(np.ones(3))
        print(compiled.count("slow"))
    """)
    path = os.pathsep.join([str(tmp_path)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=path)
    start = str(time.time() + 4)
    procs = [subprocess.Popen([sys.executable, "-c", code, start], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    counts = sorted(int(p.communicate(timeout=300)[0].strip()) for p in procs)
    assert counts == [0, 1]


@pytest.mark.parametrize("layer", [
    dict(filters=5, activation="relu"),                                 # direct loops, the ReLU in the kernel
    dict(filters=8, activation="relu", bias=True, padding=1),           # im2col + GEMM
    dict(filters=4, activation="tanh", padding=1, dilation=2),
    dict(filters=6, stride=2),                                          # a strided kernel, no activation
], ids=str)
@pytest.mark.parametrize("kind", ["convolution", "deconvolution"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forward_zeros_of_a_window_layer_types_as_its_training_forward(layer, kind, dtype):
    # the helper back-propagates through these to compile the backward kernels training will call
    import numba
    cls = neurons.layers.Convolution if kind == "convolution" else neurons.layers.Deconvolution
    lay = cls(kernel=(3, 3), **layer)
    x = np.random.default_rng(0).normal(size=(3, 2, 9, 9)).astype(dtype)
    params = lay.init((2, 9, 9), np.random.default_rng(1), dtype)
    y, cache = lay.forward(params, x, True)
    y0, cache0 = lay.forward_zeros(params, x)
    assert numba.typeof((y, cache)) == numba.typeof((y0, cache0))
    assert y.shape == y0.shape and cache[1].shape == cache0[1].shape and not y0.any()
    dx, grads = lay.backward(params, cache0, y0, True)
    assert dx.shape == x.shape and all(np.isfinite(g).all() and not g.any() for g in grads)
    assert cls(kernel=(3, 3), dropout=0.5, **layer).forward_zeros(params, x) is None     # its mask: the forward's


def test_the_helper_takes_convolutions_backward_first(monkeypatch):
    from neurons.layers import Convolution, Dense, Maxpool
    calls = []
    for cls in (Convolution, Dense, Maxpool):
        for name in ("forward", "backward"):
            def spy(self, *args, _f=getattr(cls, name), _name=name, **kw):
                calls.append((type(self).__name__, _name))
                return _f(self, *args, **kw)
            monkeypatch.setattr(cls, name, spy)
    net = (neurons.Network((1, 8, 8)).convolution(3, 3, padding=1, activation="relu").maxpool(2)
           .convolution(4, 3, dropout=0.5).dense(2, "softmax"))
    _warm.warm(net, 4, 0)
    # the first convolution back from zeros, its forward after the loss; the one with dropout as before
    assert calls == [("Convolution", "backward"), ("Maxpool", "forward"), ("Maxpool", "backward"),
                     ("Convolution", "forward"), ("Convolution", "backward"), ("Dense", "forward"),
                     ("Dense", "backward"), ("Convolution", "forward")]
