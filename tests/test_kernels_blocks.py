"""The parallel loops of ``kernels/_blocks.py``: a block body called through its address."""
import os
import subprocess
import sys
import textwrap

import numba
import numpy as np
import pytest

from neurons.kernels._blocks import parallel
from neurons.kernels._config import BLOCKS


@numba.njit
def _mark(blk, blocks, out, scale):
    """Block ``blk`` writes ``scale · (blk + 1)`` over its share of ``out``."""
    step = (out.shape[0] + blocks - 1) // blocks
    for i in range(blk * step, min(out.shape[0], (blk + 1) * step)):
        out[i] += scale * (blk + 1)


_mark_blocks = parallel(_mark)


@pytest.mark.parametrize("blocks", [1, 2, 3, 7])
def test_every_block_runs_once_with_its_arguments(blocks):
    out = np.zeros(20)
    _mark_blocks(blocks, (blocks, out, 0.5))
    step = (20 + blocks - 1) // blocks
    expected = np.array([0.5 * (i // step + 1) for i in range(20)])
    assert np.array_equal(out, expected)


def test_a_tuple_argument_is_refused_when_the_loop_compiles():
    with pytest.raises(numba.core.errors.TypingError, match="arrays and scalars, not tuples"):
        _mark_blocks(2, (2, np.zeros(4), (1, 2)))


@numba.njit
def _fail_in_block_one(blk, blocks, out):
    if blk == 1:
        raise ValueError("block one fails")
    out[blk] = 1.0


_fail_blocks = parallel(_fail_in_block_one)


def test_a_block_that_raises_is_reported_not_swallowed():
    with pytest.raises(RuntimeError, match="a block of a parallel kernel raised"):
        _fail_blocks(2, (2, np.zeros(2)))
    with pytest.raises(ValueError, match="block one fails"):      # one block: the body's own error
        _fail_in_block_one(1, 1, np.zeros(2))


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


def test_loops_load_from_the_disk_cache_and_find_their_bodies(tmp_path):
    """A second process compiles nothing (the loops and bodies come from the cache, the bodies'
    addresses are looked up afresh) and gets the same bits."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    runs = []
    for i in range(2):
        out = tmp_path / f"out{i}.npy"
        done = subprocess.run([sys.executable, "-c", _CHILD, str(out)], env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stderr
        runs.append((done.stdout.split(), np.load(out)))
    assert "_forward_gemm_body" in runs[0][0] and "_backward_gemm_body" in runs[0][0]
    if BLOCKS > 1:
        assert "parallel.<locals>.each" in runs[0][0]
    assert runs[1][0] == []
    assert np.array_equal(runs[0][1], runs[1][1])
