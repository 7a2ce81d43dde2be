"""The kernels in their other modes, each in a process of its own: ``NEURONS_BLOCKS=prange`` gives
the default mode's bits, ``NUMBA_DISABLE_JIT=1`` trains as the jitted library does, a Numba
without the internals the address loops use falls back to ``prange`` with a warning, and the disk
cache is not fooled by a changed callee (see ``neurons/kernels/_blocks.py`` and ``__init__.py``)."""
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from numba.core import config

import neurons

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(config.DISABLE_JIT, reason="compares the jitted library with its other modes")


def _run(code, *args, env=None, cwd=ROOT):
    """Run ``code`` in a fresh interpreter; its stdout (it must succeed)."""
    base = {k: v for k, v in os.environ.items() if k not in ("NEURONS_BLOCKS", "NUMBA_DISABLE_JIT")}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *map(str, args)], env=base | (env or {}),
                          cwd=cwd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


_KERNELS = """
    import sys
    import numpy as np
    import neurons.kernels
    from neurons.kernels import _blocks, activations, conv, dense
    rng = np.random.default_rng(0)
    out = {}
    x = rng.standard_normal((64, 300), np.float32)          # 64 x 40 x 300 is above dense.SPLIT
    w = rng.standard_normal((40, 300), np.float32)
    b = rng.standard_normal(40, np.float32)
    z = dense.dense_forward(x, w, b)
    out["dense"] = np.concatenate([z.ravel()] + [a.ravel() for a in dense.dense_backward(z, x, w, True)])
    x = rng.standard_normal((8, 3, 9, 9), np.float32)
    k = rng.standard_normal((5, 3, 3, 3), np.float32)
    b = rng.standard_normal(5, np.float32)
    y = conv.conv_forward(x, k, b, (1, 1), (1, 1), (1, 1), relu=True)
    grads = conv.conv_backward(y, x, k, (1, 1), (1, 1), (1, 1), True, relu_y=y)
    out["conv"] = np.concatenate([y.ravel()] + [a.ravel() for a in grads])
    z = rng.standard_normal((520, 520), np.float32)         # above activations.PARALLEL_MIN
    out["relu"] = activations.activation_forward(z, activations.RELU)
    np.savez(sys.argv[1], **out)
    print(_blocks.MODE, neurons.kernels._cache_dir())
"""


def test_prange_mode_gives_the_address_modes_bits(tmp_path):
    """Two threads, so every kernel above runs as two blocks; a cache folder of each mode's own."""
    runs = {}
    for mode in ("address", "prange"):
        env = {"NUMBA_NUM_THREADS": "2"} | ({"NEURONS_BLOCKS": "prange"} if mode == "prange" else {})
        got_mode, cache = _run(_KERNELS, tmp_path / f"{mode}.npz", env=env).split()
        assert got_mode == mode
        runs[mode] = cache, np.load(tmp_path / f"{mode}.npz")
    assert runs["address"][0] != runs["prange"][0]
    for name in ("dense", "conv", "relu"):
        assert np.array_equal(runs["address"][1][name], runs["prange"][1][name]), name


def train(dtype):
    """Train a small dense and a small convolutional network; their params and predictions."""
    rng = np.random.default_rng(0)
    adam = neurons.optimizers.Adam(lr=0.01)
    x1, y1 = rng.standard_normal((30, 4)), rng.integers(0, 3, 30)
    mlp = (neurons.Network((4,), dtype).dense(8, "relu").dense(3, "softmax")
           .set_optimizer(adam).set_objective("cross_entropy")).learn(x1, y1, batch=8, epochs=2, seed=1)
    x2, y2 = rng.standard_normal((16, 1, 8, 8)), rng.integers(0, 3, 16)
    cnn = (neurons.Network((1, 8, 8), dtype).convolution(3, (3, 3), padding=(1, 1), activation="relu").maxpool()
           .dense(3, "softmax").set_optimizer(adam).set_objective("cross_entropy")).learn(x2, y2, batch=8, epochs=1,
                                                                                          seed=1)
    out = {f"{net}{i}_{j}": a for net, t in (("mlp", mlp), ("cnn", cnn))
           for i, layer in enumerate(t.params) for j, a in enumerate(layer)}
    return out | {"mlp_predict": mlp.predict(x1), "cnn_predict": cnn.predict(x2)}


@pytest.mark.parametrize("dtype, rtol", [("float32", 1e-4), ("float64", 1e-10)])
def test_without_jit_the_library_imports_trains_and_predicts(tmp_path, dtype, rtol):
    """Not bit for bit: fastmath (contractions into FMAs) and BLAS against NumPy's matmul."""
    _run("""
        import sys
        import numpy as np
        from numba.core import config
        from neurons.kernels import _blocks, blas
        from tests.test_jit_modes import train
        assert config.DISABLE_JIT and _blocks.MODE == "python" and blas.gemm is blas._gemm_numpy
        np.savez(sys.argv[1], **train(sys.argv[2]))
    """, tmp_path / "nojit.npz", dtype,
         env={"NUMBA_DISABLE_JIT": "1", "NUMBA_NUM_THREADS": str(config.NUMBA_NUM_THREADS)})   # the same blocks
    slow, fast = np.load(tmp_path / "nojit.npz"), train(dtype)
    assert sorted(slow) == sorted(fast)
    for name in fast:
        assert slow[name].dtype == dtype
        np.testing.assert_allclose(slow[name], fast[name], rtol=rtol, atol=rtol / 100, err_msg=name)


_FALLBACK = """
    import sys
    import warnings
    import numpy as np
    from numba import njit
    from numba.core import pythonapi
    warnings.simplefilter("always")
    with warnings.catch_warnings(record=True) as caught:
        if sys.argv[1] == "import":             # a Numba without an internal the address path uses
            saved = pythonapi.PythonAPI._get_function
            del pythonapi.PythonAPI._get_function
            from neurons.kernels import _blocks
            pythonapi.PythonAPI._get_function = saved
        else:                                   # the address machinery fails when a loop is built
            from neurons.kernels import _blocks
            assert _blocks.MODE == "address"
            def broken(*args):
                raise AttributeError("no such internal")
            _blocks._import = broken

        @njit
        def fill(blk, blocks, out):
            out[blk] = blk + 1.0

        @njit
        def twice(blk, blocks, out):
            out[blk] = 2.0 * blk

        @njit
        def fail(blk, blocks, out):
            if blk == 1:
                raise ValueError("my message")

        out = np.zeros(3)
        _blocks.parallel(fill)(3, (3, out))
        assert out.tolist() == [1.0, 2.0, 3.0]
        _blocks.parallel(twice)(3, (3, out))
        assert out.tolist() == [0.0, 2.0, 4.0]
        try:
            _blocks.parallel(fail)(3, (3, out))
        except ValueError as error:
            assert str(error) == "my message"
        else:
            raise AssertionError("no ValueError")
    assert _blocks.MODE == "prange"
    ours = [str(w.message) for w in caught if "neurons" in str(w.message)]
    print(len(ours))
    print(ours[0])
"""


@pytest.mark.parametrize("when", ["import", "build"])
def test_the_loops_fall_back_to_prange_with_one_warning(tmp_path, when):
    count, message = _run(_FALLBACK, when, env={"NUMBA_CACHE_DIR": str(tmp_path / "cache"),
                                                "NUMBA_NUM_THREADS": "2"}).splitlines()[-2:]
    assert count == "1"
    if when == "import":
        assert "PythonAPI._get_function" in message and "prange" in message
    else:
        assert "no such internal" in message and "prange" in message


_CACHED = """
    import sys
    sys.path.insert(0, sys.argv[1])
    import numpy as np
    from numba.core import event
    compiled = []
    class Listener(event.Listener):
        def on_start(self, ev):
            compiled.append(ev.data["dispatcher"].py_func.__qualname__)
        def on_end(self, ev):
            pass
    event.register("numba:compile", Listener())
    import neurons.kernels
    from neurons.kernels import dense
    assert neurons.__file__.startswith(sys.argv[1]), neurons.__file__
    x = np.arange(6.0).reshape(2, 3)
    z = dense.dense_forward(x, np.ones((2, 3)), np.zeros(2))       # one block: the body from Python
    print(neurons.kernels._cache_dir())
    print(" ".join(compiled) or "-")
    print(z.ravel().tolist())
"""


def test_a_changed_callee_or_version_gets_a_cache_folder_of_its_own(tmp_path):
    """``blas.gemm`` is compiled into the dense body: Numba would load that body from its cache
    unchanged (its own file did not change) after ``blas.py`` changed, unless the folder changes."""
    shutil.copytree(ROOT / "neurons", tmp_path / "pkg" / "neurons", ignore=shutil.ignore_patterns("__pycache__"))
    env = {"XDG_CACHE_HOME": str(tmp_path / "xdg"), "NUMBA_CACHE_DIR": "", "NUMBA_NUM_THREADS": "1"}

    def run():
        cache, compiled, z = _run(_CACHED, tmp_path / "pkg", env=env).splitlines()[-3:]
        return cache, [c for c in compiled.split() if c != "-"], eval(z)

    first, again = run(), run()
    assert first[0].startswith(str(tmp_path / "xdg")) and "_forward_body" in first[1]
    assert again == (first[0], [], first[2])                     # unchanged: loaded from the cache
    assert first[2] == [3.0, 3.0, 12.0, 12.0]

    blas = tmp_path / "pkg" / "neurons" / "kernels" / "blas.py"
    source = blas.read_text()
    assert source.count("_ref(c.dtype.type(alpha))") == 1
    blas.write_text(source.replace("_ref(c.dtype.type(alpha))", "_ref(c.dtype.type(2 * alpha))"))
    changed = run()
    assert changed[2] == [6.0, 6.0, 24.0, 24.0]                  # not the stale [3, 3, 12, 12]
    assert changed[0] != first[0] and "_forward_body" in changed[1]

    init = tmp_path / "pkg" / "neurons" / "__init__.py"
    init.write_text(init.read_text().replace(f'__version__ = "{neurons.__version__}"', '__version__ = "99.0"'))
    upgraded = run()
    assert upgraded[0] not in (first[0], changed[0]) and upgraded[0].endswith(changed[0].rsplit("-", 1)[1])
    assert "-99.0-" in upgraded[0]


def test_the_parallel_loops_cache_in_the_keyed_folder(tmp_path):
    """A body's loop is made at its first use, after the kernels' import: it still goes to the
    folder keyed by thread count and source, not to Numba's default beside the source, keyed by
    nothing, where a loop cached under another thread count crashed the next process."""
    shutil.copytree(ROOT / "neurons", tmp_path / "pkg" / "neurons", ignore=shutil.ignore_patterns("__pycache__"))
    env = {"XDG_CACHE_HOME": str(tmp_path / "xdg"), "NUMBA_CACHE_DIR": "", "NUMBA_NUM_THREADS": "2"}
    cache = _run("""
        import numpy as np
        import neurons.kernels
        from neurons.kernels import dense
        x, w = np.ones((64, 300), np.float32), np.ones((40, 300), np.float32)    # above dense.SPLIT
        assert dense.dense_forward(x, w, np.zeros(40, np.float32))[0, 0] == 300
        print(neurons.kernels._cache_dir())
    """, cwd=tmp_path / "pkg", env=env).split()[-1]
    assert cache.startswith(str(tmp_path / "xdg"))
    assert list(Path(cache).rglob("*each*.nbi")), "the loop is not in the keyed folder"
    assert not list((tmp_path / "pkg").rglob("*.nbi")), "something was cached beside the source"
