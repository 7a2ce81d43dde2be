"""Data-parallel training, ``learn(..., comm=MPI.COMM_WORLD)`` (SPEC §15): two ranks under
``mpiexec`` against one process, bit-identical ranks, only rank 0 printing and writing, and a
mismatch between the ranks refused on every rank (``tests/mpi_run.py`` is what the ranks run)."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import neurons
from neurons import graph
from neurons.optimizers import SGD

HERE = Path(__file__).resolve().parent
MPIEXEC = shutil.which("mpiexec", path=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]))


def _mpi_missing():
    if MPIEXEC is None:
        return "mpiexec not found (pip install 'neurons[mpi]' installs MPICH's)"
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "mpi4py not installed (pip install 'neurons[mpi]')"
    return None


needs_mpi = pytest.mark.skipif(_mpi_missing() is not None, reason=_mpi_missing() or "")


def _ranks(mode, *args, timeout=240):
    """stdout of ``mpiexec -n 2 python tests/mpi_run.py MODE ARGS``, one Numba thread a rank; a
    hang is killed (with every rank: the whole process group) and fails the test."""
    env = {**os.environ, "NUMBA_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parent)}
    proc = subprocess.Popen([MPIEXEC, "-n", "2", sys.executable, str(HERE / "mpi_run.py"), mode, *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"mpiexec {mode} did not finish in {timeout} s: a rank hangs")
    assert proc.returncode == 0, f"mpiexec {mode} failed:\n{out}\n{err}"
    return out


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    out = _ranks("compare", tmp_path_factory.mktemp("mpi"))
    line = next((s for s in out.splitlines() if s.startswith("RESULT ")), None)
    assert line is not None, out
    return json.loads(line[len("RESULT "):])


CASES = ["dense-sgd", "dense-adam-val", "conv-adam", "conv-sgd-unshuffled"]


@needs_mpi
@pytest.mark.parametrize("case", CASES)
def test_two_ranks_equal_one_process(compared, case):
    r = compared[case]
    assert r["identical"], "the two ranks ended with different params or history"
    assert r["rel"] <= 1e-9, f"largest relative difference from the one-process run: {r['rel']:.3g}"
    assert r["history_close"]


@needs_mpi
@pytest.mark.parametrize("case", CASES)
def test_only_rank_0_prints_and_checkpoints(compared, case):
    r = compared[case]
    assert r["printed"][0].count("\n") == r["epochs"] + 1 and r["printed"][1] == ""
    assert r["files"] == [True, False]


@needs_mpi
def test_resumed_on_two_ranks_equals_straight(compared):
    assert compared["resume"]["identical"]


@needs_mpi
def test_a_mismatch_between_ranks_is_an_error_on_every_rank():
    out = _ranks("mismatch", timeout=120)
    said = {(int(r), case): what for r, case, what in re.findall(r"RANK (\d) (\S+) (\w+)", out)}
    for case in ("length", "values", "seed", "batch", "refused-on-one-rank", "batchnorm"):
        assert said.get((0, case)) == said.get((1, case)) == "ValueError", (case, out)
    # rank 0 alone reads the checkpoint: its own error there, a ValueError quoting it on rank 1
    assert said.get((0, "resume-missing")) == "FileNotFoundError" and said.get((1, "resume-missing")) == "ValueError"


@pytest.mark.parametrize("lo, hi", [(0, 4), (4, 11), (6, 7)])
def test_a_slice_of_a_batch_draws_those_rows_of_its_dropout_masks(lo, hi):
    """``row=lo`` gives ``x[lo:hi]`` rows lo..hi of the whole batch's masks, through a dense
    layer, a convolution and a feedback block."""
    from neurons.layers import Convolution, Dense
    net = (neurons.Network((1, 6, 6), dtype="float64").convolution(2, 3, padding=1, activation="relu", dropout=0.4)
           .feedback([Convolution(2, (3, 3), padding=(1, 1), activation="tanh", dropout=0.3)], 2)
           .dense(7, "relu", dropout=0.5).feedback([Dense(7, "tanh", dropout=0.2)], 2)
           .dense(3, "softmax").set_optimizer(SGD(lr=0.1)))
    x = np.random.default_rng(0).normal(size=(11, 1, 6, 6))
    params = net.init(1)
    run = dict(program=net.program, layers=net.layers, shapes=net.shapes, params=params, train=True, seed=12345)
    whole = graph.run_forward(x=x, **run)[0]
    part = graph.run_forward(x=x[lo:hi], row=lo, **run)[0]
    np.testing.assert_array_equal(part, whole[lo:hi])
    if lo:
        assert not np.array_equal(graph.run_forward(x=x[lo:hi], **run)[0], whole[lo:hi])


def test_shares_cover_the_batch_in_order():
    pytest.importorskip("mpi4py")
    from neurons._mpi import share
    for m in (1, 2, 7, 128):
        for ranks in (1, 2, 3, 8):
            cuts = [share(m, r, ranks) for r in range(ranks)]
            assert cuts[0][0] == 0 and cuts[-1][1] == m
            assert all(a[1] == b[0] for a, b in zip(cuts, cuts[1:]))
            assert max(h - lo for lo, h in cuts) - min(h - lo for lo, h in cuts) <= 1


def test_learn_without_comm_does_not_import_mpi4py():
    code = ("import sys, numpy as np, neurons\n"
            "net = neurons.Network((3,), dtype='float64').dense(2, 'softmax')\n"
            "net = net.set_optimizer(neurons.optimizers.SGD(lr=0.1))\n"
            "net.learn(np.zeros((4, 3)), np.array([0, 1, 0, 1]), batch=2, epochs=1)\n"
            "assert 'mpi4py' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)     # the suite's own kernel cache


def test_comm_must_be_a_communicator():
    pytest.importorskip("mpi4py")
    net = neurons.Network((3,), dtype="float64").dense(2, "softmax").set_optimizer(SGD(lr=0.1))
    with pytest.raises(TypeError, match="mpi4py communicator"):
        net.learn(np.zeros((4, 3)), np.array([0, 1, 0, 1]), batch=2, epochs=1, comm="world")
