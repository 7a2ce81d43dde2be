"""Data-parallel training over MPI: what ``learn(..., comm=MPI.COMM_WORLD)`` adds (SPEC §15).

Every rank passes the whole data set and the same settings, and holds the same params:

- ``agree`` checks that first, with one ``allgather`` of a small summary (shapes, a CRC-32 of
  the data, the settings, the network), so that a mismatch is a ``ValueError`` on every rank,
  never a rank left waiting in a collective the others never reach.
- ``from_root`` runs the start of the run (fresh params, or a resumed checkpoint) on rank 0 and
  broadcasts it: params, optimizer state and history are rank 0's on every rank.
- ``loss_grad``: each step, rank r takes the contiguous share ``share(m, r, R)`` of the batch of
  m samples, with the dropout masks of those rows of the whole batch (``graph.run_forward``'s
  ``row``), and puts k·(its mean gradient) and k·(its mean loss), k its rows, into one flat
  buffer; one ``Allreduce`` sums the buffers and dividing by m gives the mean over the whole
  batch (the last, shorter batch too), what one process computes up to rounding.
- ``evaluate`` splits the validation set the same way.

Every rank then applies the same update to the same params. The sum is the same on every rank
(IEEE addition is commutative, and MPI's reduction algorithms combine the same partial sums on
every rank); ``check_same`` compares a CRC-32 of the params after every epoch, so that a library
where this fails is an error rather than ranks drifting apart unseen.

Batch normalization is refused: its batch statistics would be the rank's share's, not the
batch's (another Allreduce inside the forward pass), and the running state would drift apart.
"""
import json
import zlib

from mpi4py import MPI
import numpy as np

from . import _tree


def share(m, rank, ranks):
    """Rows ``(lo, hi)`` of a batch of ``m`` that rank ``rank`` of ``ranks`` computes: contiguous,
    in rank order, sizes differing by one at most (a rank may get none)."""
    return m * rank // ranks, m * (rank + 1) // ranks


def _crc(a):
    return zlib.crc32(memoryview(np.ascontiguousarray(a)).cast("B"))


def _data(a):
    """``(shape, dtype, crc)`` of what was passed, or why it cannot be read as an array."""
    if a is None:
        return None
    try:
        a = np.asarray(a)
        return a.shape, a.dtype.str, _crc(a)
    except Exception as e:   # noqa: BLE001 (the ordinary checks will name the problem, on every rank alike)
        return f"not an array ({type(e).__name__})"


def _network(net):
    from .io import network_config
    try:
        text = json.dumps(network_config(net), sort_keys=True, default=str)
    except Exception:        # noqa: BLE001 (a loop scale that is a function cannot be saved)
        text = str(net)
    return zlib.crc32(text.encode())


class DataParallel:
    """The communicator of a ``learn`` run and the collectives it makes."""

    def __init__(self, comm):
        if not isinstance(comm, MPI.Comm):
            raise TypeError(f"comm must be an mpi4py communicator (MPI.COMM_WORLD), not {type(comm).__name__}")
        if comm.Is_inter():
            raise TypeError("comm must be an intracommunicator (MPI.COMM_WORLD or a split of it)")
        self.comm, self.rank, self.ranks = comm, comm.Get_rank(), comm.Get_size()

    def agree(self, net, x, y, validation, **settings):
        """Raise the same ``ValueError`` on every rank unless all passed the same network, data
        and settings; refuse batch normalization."""
        given = isinstance(validation, (tuple, list))
        xv, yv = (validation[0], validation[1]) if given and len(validation) > 1 else (None, None)
        mine = {"network": _network(net), "x": _data(x), "y": _data(y), "x_val": _data(xv), "y_val": _data(yv),
                "patience": str(validation[2]) if given and len(validation) > 2 else None,
                **{k: str(v) for k, v in settings.items()}}
        every = self.comm.allgather(mine)
        differ = [k for k in mine if any(s[k] != every[0][k] for s in every)]
        if differ:
            where = "; ".join(f"{k}: " + ", ".join(f"rank {r} {_say(k, s[k])}" for r, s in enumerate(every))
                              for k in differ)
            raise ValueError(f"learn(comm=...): every rank must pass the same network, data and settings, and "
                             f"these differ ({where})")
        if net._state_keys:
            raise ValueError("learn(comm=...) does not train batch normalization: its statistics would be each "
                             "rank's share's, not the batch's; train this network in one process")

    def from_root(self, start):
        """``start()`` run on rank 0 and broadcast; its exception is raised on every rank (its own
        on rank 0, a ``ValueError`` quoting it elsewhere)."""
        result = error = None
        if self.rank == 0:
            try:
                result = start()
            except Exception as e:   # noqa: BLE001 (re-raised below, once the others know)
                error = e
        said = self.comm.bcast(None if error is None else f"{type(error).__name__}: {error}")
        if error is not None:
            raise error
        if said is not None:
            raise ValueError(f"rank 0 could not start the run: {said}")
        return self.comm.bcast(result)

    def loss_grad(self, net, params, x, y, rows, seed):
        """``(loss, grads)``: the mean over the batch ``x[rows], y[rows]`` (``rows`` an index array
        or a slice), from this rank's share and one ``Allreduce``."""
        m = rows.stop - rows.start if isinstance(rows, slice) else len(rows)
        lo, hi = share(m, self.rank, self.ranks)
        leaves = _tree.leaves(params)
        buf = np.zeros(sum(a.size for a in leaves) + 1, net.dtype)      # the grads, then the loss
        if hi > lo:
            mine = slice(rows.start + lo, rows.start + hi) if isinstance(rows, slice) else rows[lo:hi]
            loss, grads, _ = net._loss_grad_state(params, x[mine], y[mine], True, seed, None, row=lo)
            at = 0
            for g in _tree.leaves(grads):
                np.multiply(g.reshape(-1), hi - lo, out=buf[at:at + g.size])
                at += g.size
            buf[-1] = loss * (hi - lo)
        self.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        buf /= m
        out, at = [], 0
        for a in leaves:
            out.append(buf[at:at + a.size].reshape(a.shape))
            at += a.size
        return float(buf[-1]), _tree.rebuild(params, out)

    def evaluate(self, net, params, x, y, tol, stats):
        """``net._evaluate`` over the whole validation set, each rank scoring its share."""
        n = len(x)
        lo, hi = share(n, self.rank, self.ranks)
        sums = np.zeros(2)
        if hi > lo:
            loss, acc = net._evaluate(params, x[lo:hi], y[lo:hi], tol=tol, state=stats)
            sums[:] = loss * (hi - lo), round(acc * (hi - lo))
        self.comm.Allreduce(MPI.IN_PLACE, sums, op=MPI.SUM)
        return float(sums[0] / n), float(sums[1] / n)

    def check_same(self, params, epoch):
        """Raise on every rank if the ranks' params differ (a CRC-32 of them, after ``epoch``)."""
        crc = 0
        for a in _tree.leaves(params):
            crc = zlib.crc32(memoryview(np.ascontiguousarray(a)).cast("B"), crc)
        every = self.comm.allgather(crc)
        if len(set(every)) > 1:
            raise RuntimeError(f"learn(comm=...): the ranks' params differ after epoch {epoch} (CRC-32 "
                               f"{', '.join(f'{c:08x}' for c in every)}): this MPI's Allreduce did not give every "
                               f"rank the same sum")

    def quiet(self):
        """Whether this rank keeps quiet: only rank 0 prints, shows progress and writes checkpoints."""
        return self.rank != 0


def _say(key, value):
    if key in ("x", "y", "x_val", "y_val") and isinstance(value, tuple):
        shape, dtype, crc = value
        return f"shape {shape} {dtype} crc {crc:08x}"
    if key == "network":
        return f"crc {value:08x}"
    return str(value)

