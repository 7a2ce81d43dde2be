"""The parallel loops of ``kernels/_blocks.py``: a block body called through its address, or, in
the other modes, by a plain ``prange`` loop or a Python ``for``. Across processes and Numba's
failures: ``test_jit_modes.py``."""
import os
import subprocess
import sys
import textwrap

import llvmlite.ir as ir
import numba
import numpy as np
import pytest
from numba.core import config
from numba.extending import intrinsic

from neurons.kernels import _blocks
from neurons.kernels._blocks import parallel
from neurons.kernels._config import BLOCKS

# the modes a test can switch to here (under NUMBA_DISABLE_JIT nothing is compiled: Python only)
MODES = ["python"] if config.DISABLE_JIT else ["address", "prange", "python"]
JITTED = pytest.mark.skipif(config.DISABLE_JIT, reason="compiled loops only")


@pytest.fixture(params=MODES)
def mode(request, monkeypatch):
    monkeypatch.setattr(_blocks, "MODE", request.param)
    return request.param


@numba.njit
def _mark(blk, blocks, out, scale):
    """Block ``blk`` writes ``scale · (blk + 1)`` over its share of ``out``."""
    step = (out.shape[0] + blocks - 1) // blocks
    for i in range(blk * step, min(out.shape[0], (blk + 1) * step)):
        out[i] += scale * (blk + 1)


_mark_blocks = parallel(_mark)


@pytest.mark.parametrize("blocks", [1, 2, 3, 7])
def test_every_block_runs_once_with_its_arguments(mode, blocks):
    out = np.zeros(20)
    _mark_blocks(blocks, (blocks, out, 0.5))
    step = (20 + blocks - 1) // blocks
    expected = np.array([0.5 * (i // step + 1) for i in range(20)])
    assert np.array_equal(out, expected)


@numba.njit
def _row_sums(blk, blocks, x, out):
    """Block ``blk``'s rows of ``x`` summed into ``out``, through views of ``x`` and a copy of its own."""
    step = (x.shape[0] + blocks - 1) // blocks
    for i in range(blk * step, min(x.shape[0], (blk + 1) * step)):
        row = x[i]
        mine = row.copy()
        out[i] = mine.sum() + row[::2].sum()


_row_sums_blocks = parallel(_row_sums)


def test_bodies_views_of_shared_arrays_keep_the_arrays_whole(mode):
    """A body's arguments reach it without their reference owner (``_blocks._unowned``): views
    and copies it makes of them still read the right values, and nothing of the caller's arrays
    is counted, leaked or freed."""
    x = np.arange(60.0).reshape(12, 5)
    out = np.zeros(12)
    before = sys.getrefcount(x), sys.getrefcount(out)
    for _ in range(200):
        _row_sums_blocks(3, (3, x, out))
    assert (sys.getrefcount(x), sys.getrefcount(out)) == before
    assert np.array_equal(out, x.sum(1) + x[:, ::2].sum(1))
    assert np.array_equal(x, np.arange(60.0).reshape(12, 5))


@intrinsic
def _owner(typingctx, a):
    """The address of array ``a``'s reference owner (its meminfo): 0 for an array without one."""
    def codegen(context, builder, sig, args):
        array = context.make_array(sig.args[0])(context, builder, args[0])
        return builder.ptrtoint(array.meminfo, ir.IntType(64))
    return numba.types.int64(a), codegen


@numba.njit
def _owners(blk, blocks, x, out):
    out[blk] = _owner(x)


_owners_blocks = parallel(_owners)


@JITTED
def test_address_loop_bodies_get_arrays_without_an_owner(monkeypatch):
    """In the address loops every block sees its array arguments without a reference owner, so
    that the views it takes of a shared input count no references (see ``_blocks._unowned``)."""
    monkeypatch.setattr(_blocks, "MODE", "address")
    x, out = np.zeros(8), np.full(3, -1, np.int64)
    _owners_blocks(3, (3, x, out))
    assert out.tolist() == [0, 0, 0]
    _owners(0, 1, x, out)               # called from Python, an array has its owner
    assert out[0] != 0


def _mark_python(blk, blocks, out, scale):
    getattr(_mark, "py_func", _mark)(blk, blocks, out, scale)


def test_a_plain_python_body_runs_in_python_mode(monkeypatch):
    """Under NUMBA_DISABLE_JIT bodies are plain functions, without ``.py_func``."""
    monkeypatch.setattr(_blocks, "MODE", "python")
    out = np.zeros(20)
    parallel(_mark_python)(3, (3, out, 1.0))
    assert np.array_equal(out, [1.0] * 7 + [2.0] * 7 + [3.0] * 6)


def test_a_tuple_argument_is_refused(mode):
    with pytest.raises((numba.core.errors.TypingError, TypeError), match="arrays and scalars, not tuples"):
        _mark_blocks(2, (2, np.zeros(4), (1, 2)))
    assert _blocks.MODE == mode            # the caller's mistake, not the machinery's: no fallback


@numba.njit
def _fail_in_block_one(blk, blocks, out):
    if blk == 1:
        raise ValueError("my message")
    out[blk] = 1.0


_fail_blocks = parallel(_fail_in_block_one)


def test_a_block_that_raises_raises_its_own_exception(mode):
    out = np.zeros(3)
    with pytest.raises(ValueError, match="^my message$"):
        _fail_blocks(3, (3, out))
    if mode != "python":                             # (a Python loop stops at the raise)
        assert out[0] == 1.0 and out[2] == 1.0       # the other blocks ran


@numba.njit
def _fail_only_the_first_time(blk, blocks, seen):
    if blk == 1 and seen[0] == 0:
        seen[0] = 1
        raise ValueError("only once")


_flaky_blocks = parallel(_fail_only_the_first_time)


@JITTED
def test_a_block_that_raises_only_in_the_loop_is_named():
    with pytest.raises(RuntimeError, match=r"_fail_only_the_first_time failed on block 1 of 3 .* not when"):
        _flaky_blocks(3, (3, np.zeros(1)))


_CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    from numba.core import event
    compiled = []
    class Listener(event.Listener):
        def on_start(self, ev):
            compiled.append(ev.data["dispatcher"].py_func.__qualname__)
        def on_end(self, ev):
            pass
    event.register("numba:compile", Listener())
    from neurons.kernels import conv
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 3, 9, 9)).astype(np.float32)
    k = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    y = conv.conv_forward(x, k, b, (1, 1), (1, 1), (1, 1), relu=True)
    dx, dk, db = conv.conv_backward(y, x, k, (1, 1), (1, 1), (1, 1), True, relu_y=y)
    np.save(sys.argv[1], np.concatenate([y.ravel(), dx.ravel(), dk.ravel(), db.ravel()]))
    print(" ".join(compiled))
""")


@JITTED
def test_loops_load_from_the_disk_cache_and_find_their_bodies(tmp_path):
    """A second process compiles nothing (the loops and bodies come from the cache, the bodies'
    addresses are looked up afresh) and gets the same bits."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    env.pop("NEURONS_BLOCKS", None)
    runs = []
    for i in range(2):
        out = tmp_path / f"out{i}.npy"
        done = subprocess.run([sys.executable, "-c", _CHILD, str(out)], env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stderr
        runs.append((done.stdout.split(), np.load(out)))
    assert any(name.endswith("_body") for name in runs[0][0])
    if BLOCKS > 1:
        assert "_address_loop.<locals>.each" in runs[0][0]
    assert runs[1][0] == []
    assert np.array_equal(runs[0][1], runs[1][1])
