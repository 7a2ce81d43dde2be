"""Run by tests/test_mpi.py as ``mpiexec -n 2 python tests/mpi_run.py MODE DIR`` (not a test file).

``compare``: each case trains with ``comm=MPI.COMM_WORLD``, then rank 0 trains the same run in
one process (``comm=None``) and prints one ``RESULT {json}`` line: whether the ranks' params and
losses are bit-identical, the largest relative difference from the one-process run, what each
rank printed and which checkpoint files exist (each rank is given its own path, so a file from
rank 1 would show). ``mismatch``: every rank prints ``RANK r CASE ValueError: ...`` (the exception's type) for
each case its ``learn`` refused (a hang is the test's timeout).
"""
import contextlib
import io
import json
import os
import sys

from mpi4py import MPI
import numpy as np

import neurons
from neurons.optimizers import SGD, Adam

comm = MPI.COMM_WORLD
rank = comm.Get_rank()


def dense_net(opt):
    return (neurons.Network((12,), dtype="float64").dense(16, "relu", dropout=0.3).dense(9, "tanh", dropout=0.2)
            .dense(4, "softmax").set_optimizer(opt).set_objective("cross_entropy"))


def conv_net(opt):
    return (neurons.Network((2, 7, 7), dtype="float64")
            .convolution(3, (3, 3), (1, 1), (1, 1), activation="relu", dropout=0.25)
            .maxpool((2, 2), (2, 2)).dense(8, "relu", dropout=0.1).dense(3, "softmax")
            .set_optimizer(opt).set_objective("cross_entropy"))


def data(shape, classes, n, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n,) + shape)
    return x, rng.integers(0, classes, n)


# name: (network, x/y, learn's keywords). Batches that do not split evenly over 2 ranks, a last
# shorter batch (43 = 6·7 + 1: its one sample is rank 1's alone), shuffled and not
CASES = {
    "dense-sgd": (dense_net(SGD(lr=0.1)), data((12,), 4, 43, 1), dict(batch=7, epochs=3)),
    "dense-adam-val": (dense_net(Adam(lr=0.01)), data((12,), 4, 40, 2),
                       dict(batch=9, epochs=3, validation=(*data((12,), 4, 11, 3), 5))),
    "conv-adam": (conv_net(Adam(lr=0.01)), data((2, 7, 7), 3, 23, 4), dict(batch=5, epochs=2)),
    "conv-sgd-unshuffled": (conv_net(SGD(lr=0.05)), data((2, 7, 7), 3, 19, 5),
                            dict(batch=6, epochs=2, shuffle=False)),
}


def leaves(tree):
    return [a for t in tree for a in leaves(t)] if isinstance(tree, tuple) else [tree]


def compare(folder):
    result = {}
    for name, (net, (x, y), kw) in CASES.items():
        out = io.StringIO()
        path = os.path.join(folder, f"{name}-rank{rank}.safetensors")
        with contextlib.redirect_stdout(out):
            got = net.learn(x, y, seed=3, print_every=1, checkpoint=path, comm=comm, **kw)
        mine = (leaves(got.params), got.history.train_loss, got.history.val_loss, got.history.val_acc)
        every = comm.gather(mine)
        printed = comm.gather(out.getvalue())
        files = comm.gather(os.path.exists(path))
        if rank == 0:
            ref = net.learn(x, y, seed=3, **kw)
            rel = max(float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))
                      for a, b in zip(leaves(got.params), leaves(ref.params)))
            hist = [(got.history.train_loss, ref.history.train_loss), (got.history.val_loss, ref.history.val_loss),
                    (got.history.val_acc, ref.history.val_acc)]
            result[name] = {
                "identical": all(all(np.array_equal(a, b) for a, b in zip(every[0][0], e[0])) and e[1:] == every[0][1:]
                                 for e in every),
                "rel": rel,
                "history_close": all(len(a) == len(b) and np.allclose(a, b, rtol=1e-9, atol=0) for a, b in hist),
                "epochs": len(got.history.train_loss),
                "printed": printed, "files": files,
            }
    # a resumed run on 2 ranks gives the run straight through, bit for bit
    net, (x, y), kw = CASES["dense-sgd"]
    path = os.path.join(folder, "resume.safetensors")
    if rank == 0 and os.path.exists(path):
        os.remove(path)
    comm.Barrier()
    net.learn(x, y, seed=3, batch=7, epochs=1, checkpoint=path, comm=comm)
    resumed = net.learn(x, y, seed=3, batch=7, epochs=3, checkpoint=path, resume=path, comm=comm)
    straight = net.learn(x, y, seed=3, batch=7, epochs=3, comm=comm)
    same = all(np.array_equal(a, b) for a, b in zip(leaves(resumed.params), leaves(straight.params)))
    same = comm.gather(same and resumed.history.train_loss == straight.history.train_loss)
    if rank == 0:
        result["resume"] = {"identical": all(same)}
        print("RESULT " + json.dumps(result), flush=True)


def mismatch():
    net = dense_net(SGD(lr=0.1))
    x, y = data((12,), 4, 30, 1)
    short = x[:-1] if rank == 1 else x
    changed = x.copy()
    if rank == 1:
        changed[5, 3] += 1e-9
    bn = (neurons.Network((12,), dtype="float64").dense(8, "relu").batchnorm().dense(4, "softmax")
          .set_optimizer(SGD(lr=0.1)))
    cases = {
        "length": lambda: net.learn(short, y[:len(short)], batch=4, epochs=1, comm=comm),
        "values": lambda: net.learn(changed, y, batch=4, epochs=1, comm=comm),
        "seed": lambda: net.learn(x, y, batch=4, epochs=1, seed=rank, comm=comm),
        "batch": lambda: net.learn(x, y, batch=4 + rank, epochs=1, comm=comm),
        "refused-on-one-rank": lambda: net.learn(x, y if rank == 0 else y[:, None][:, [0, 0]], batch=4, epochs=1,
                                                 comm=comm),
        "batchnorm": lambda: bn.learn(x, y, batch=4, epochs=1, comm=comm),
        # only rank 0 reads the checkpoint, and its error reaches the others
        "resume-missing": lambda: net.learn(x, y, batch=4, epochs=1, resume="/nonexistent/ck.safetensors", comm=comm),
    }
    for name, run in cases.items():
        try:
            run()
            print(f"RANK {rank} {name} no error", flush=True)
        except Exception as e:   # noqa: BLE001
            print(f"RANK {rank} {name} {type(e).__name__}: {e}", flush=True)
        comm.Barrier()


if __name__ == "__main__":
    {"compare": compare, "mismatch": mismatch}[sys.argv[1]](*sys.argv[2:])
