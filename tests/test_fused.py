"""The compiled step loop of networks of dense, convolution and max-pool layers with skips,
loopbacks and feedback blocks (``neurons/_fused.py``, ``kernels/chain.py``): bit for bit the
general path's params, optimizer state and loss totals, for every activation, objective and
optimizer, each convolution implementation and max-pool kernel, each accumulation mode it runs;
the networks it must leave to the general path; non-finite losses and params stop it where
``learn`` stops."""
import os
from typing import NamedTuple

import numpy as np
import pytest
from numba.core import config

import neurons
from neurons import _fused, _tree, graph
from neurons import optimizers as O
from neurons import schedules as S
from neurons._threads import running
from neurons.kernels import _blocks
from neurons.kernels import chain, dense as kdense
from neurons.kernels._config import BLOCKS
from neurons.layers import Dense
from neurons.training import _nonfinite_leaf, _step_seed

pytestmark = pytest.mark.skipif(config.DISABLE_JIT or _blocks.MODE != "address",
                                reason="the compiled step loop calls kernels by address: off without the JIT and "
                                       "in NEURONS_BLOCKS=prange (plan gives None)")

ACTIVATIONS = ("linear", "sigmoid", "tanh", "relu", "leaky_relu", "softmax")
DTYPES = ("float32", "float64")


class Run(NamedTuple):
    params: tuple
    state: tuple
    totals: list            # each epoch's loss total (the failed epoch's so far)
    error: tuple | None     # (kind, epoch, step)
    good: tuple             # the params an error hands back
    message: str | None = None


def _hand(net, params, x, y, batch, epochs, seed=0):
    """``learn``'s step loop through the general path (``_loss_grad_state`` + ``update``), with its
    checks: the reference."""
    opt, n = net.optimizer, len(x)
    state, good, totals = opt.init(params), params, []
    with running():
        for epoch in range(epochs):
            order = np.random.default_rng([seed, epoch]).permutation(n)
            total = 0.0
            for step, start in enumerate(range(0, n, batch)):
                idx = order[start:start + batch]
                loss, grads, _ = net._loss_grad_state(params, x[idx], y[idx], True, _step_seed(seed, epoch, step),
                                                      None)
                if not np.isfinite(loss):
                    return Run(params, state, totals + [total], ("loss", epoch, step), good)
                good = params
                new, state = opt.update(grads, state, params)
                bad = _nonfinite_leaf(new)
                if bad is not None:
                    return Run(params, state, totals + [total], ("params", epoch, step), params, bad)
                params = new
                total += loss * len(idx)
            totals.append(total)
    return Run(params, state, totals, None, good)


def _fast(net, params, x, y, batch, epochs, seed=0, chunk=None):
    """The same through ``Runner.run`` in chunks (``chunk`` steps, else the runner's own), as the
    hook in ``learn`` calls it."""
    runner = _fused.plan(net, batch, len(x))
    assert runner is not None
    state, good, totals = net.optimizer.init(params), params, []
    with running():
        for epoch in range(epochs):
            order = np.random.default_rng([seed, epoch]).permutation(len(x))
            total, step = 0.0, 0
            while step < runner.steps:
                c = runner.run(params, state, x, y, order, epoch, step, min(chunk or runner.chunk, runner.steps - step),
                               total)
                params, state, total, step = c.params, c.state, c.total, step + c.done
                good = good if c.prev is None else c.prev
                if c.error is not None:
                    kind, message = c.error
                    return Run(params, state, totals + [total], (kind, epoch, step),
                               good if kind == "loss" else params, message)
            totals.append(total)
    return Run(params, state, totals, None, good)


def _assert_same(a, b):
    assert a.error == b.error
    assert a.totals == b.totals
    for p, q in zip(_tree.leaves(a.params) + _tree.leaves(a.good), _tree.leaves(b.params) + _tree.leaves(b.good)):
        assert p.dtype == q.dtype and p.shape == q.shape
        assert np.array_equal(p, q)
    assert type(a.state) is type(b.state) and a.state.count == b.state.count
    for f in a.state._fields[1:]:
        for p, q in zip(_tree.leaves(getattr(a.state, f)), _tree.leaves(getattr(b.state, f))):
            assert p.shape == q.shape and np.array_equal(p, q)


def _data(net, n, seed=0, kind="onehot", scale=1.0):
    rng = np.random.default_rng(seed)
    x = net.check_x(rng.normal(scale=scale, size=(n,) + net.input_shape))
    out = net.output_shape[0]
    if kind == "onehot":
        y = rng.integers(0, out, n)
    elif kind == "prob":                    # in [0, 1], some exactly 0 (kl_divergence drops those terms)
        y = rng.uniform(size=(n, out)) * (rng.uniform(size=(n, out)) > 0.2)
    else:
        y = rng.normal(size=(n, out))
    return x, net.check_y(y, n)


def _check(net, n=21, batch=8, epochs=2, kind="onehot", chunks=(None,), seed=0):
    x, y = _data(net, n, seed, kind)
    params = net.init(seed)
    want = _hand(net, params, x, y, batch, epochs, seed)
    for chunk in chunks:
        _assert_same(_fast(net, params, x, y, batch, epochs, seed, chunk), want)
    return want


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTIVATIONS)
def test_every_activation(act, dtype):
    # in a hidden layer and in the output layer, mse on it (no fusing)
    net = (neurons.Network((5,), dtype).dense(7, act).dense(3, act).set_objective("mse")
           .set_optimizer(O.SGD(lr=0.1)))
    _check(net, kind="normal")


# (objective, last activation, targets, clip)
OBJECTIVES = [("ae", "linear", "normal", None), ("mae", "tanh", "normal", None),
              ("mse", "linear", "normal", (-0.05, 0.05)), ("rmse", "sigmoid", "prob", None),
              ("cross_entropy", "softmax", "onehot", None),                                         # fused
              ("cross_entropy", "softmax", "prob", (-0.3, 0.2)), ("cross_entropy", "sigmoid", "prob", None),
              ("binary_cross_entropy", "sigmoid", "prob", None), ("kl_divergence", "softmax", "prob", None)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("objective, last, kind, clip", OBJECTIVES)
def test_every_objective(objective, last, kind, clip, dtype):
    net = (neurons.Network((4,), dtype).dense(6, "relu").dense(4, last).set_objective(objective, clip=clip)
           .set_optimizer(O.Adam(lr=0.01)))
    assert net._fused == (objective == "cross_entropy" and last == "softmax" and clip is None)
    _check(net, kind=kind)


OPTIMIZERS = [O.SGD(lr=0.1), O.SGD(lr=0.05, decay=0.01), O.SGDM(lr=0.05, momentum=0.9),
              O.SGDM(lr=0.05, momentum=0.5, decay=0.02), O.Adam(lr=0.01), O.Adam(lr=0.01, decay=0.01),
              O.AdamW(lr=0.01), O.AdamW(lr=0.01, decay=0.1, beta1=0.8, beta2=0.99, eps=1e-6),
              O.RMSprop(lr=0.01), O.RMSprop(lr=0.01, centered=True), O.RMSprop(lr=0.01, momentum=0.9),
              O.RMSprop(lr=0.01, alpha=0.9, centered=True, momentum=0.5, decay=0.01),
              O.SGDM(lr=S.cosine(0.1, 10, 0.01)), O.Adam(lr=S.warmup_cosine(0.01, 3, 9)),
              O.RMSprop(lr=S.step(0.01, 4, 0.5))]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("opt", OPTIMIZERS, ids=lambda o: o.describe())
def test_every_optimizer(opt, dtype):
    net = (neurons.Network((4,), dtype).dense(6, "tanh").dense(5, "relu", bias=False).dense(3, "softmax")
           .set_objective("cross_entropy").set_optimizer(opt))
    _check(net, chunks=(None, 2))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch, n", [(1, 13), (8, 21), (8, 24), (32, 70)])
@pytest.mark.parametrize("bias", [True, False])
def test_batches_and_bias(batch, n, bias, dtype):
    # the iris network's shape; batch 32 runs the kernels' vectorised reductions over the rows
    net = (neurons.Network((4,), dtype).dense(10, "relu", bias=bias).dense(10, "relu", bias=bias)
           .dense(3, "softmax", bias=bias).set_objective("cross_entropy").set_optimizer(O.SGDM(lr=0.05)))
    _check(net, n=n, batch=batch, chunks=(None, 1, 3))


@pytest.mark.parametrize("dtype", DTYPES)
def test_one_layer_and_image_input(dtype):
    _check(neurons.Network((3,), dtype).dense(2, "sigmoid").set_objective("binary_cross_entropy"), kind="prob")
    _check(neurons.Network((1, 3, 3), dtype).dense(4, "leaky_relu").dense(2).set_optimizer(O.Adam(lr=0.01)),
           kind="normal")


# chains with convolutions and max-pools: each convolution backward ``conv.py`` picks (the tap
# tiles, for padding that keeps the plane's size below 64 filters; else the direct loops, for one
# filter and for few weights, or GEMM, with dk laid out either way), the ReLU in their kernels or
# none, both max-pool kernels; at batch 8 every kernel runs in blocks (two threads), at batch 1 alone
def _images(dtype, name):
    net = neurons.Network((2, 9, 9) if "gemm" in name else (1, 8, 8), dtype)
    if name == "small":         # quickstart's layers: 5 filters of 3 x 3 over one channel (45 weights)
        return (net.convolution(5, 3, padding=1, activation="relu").maxpool(2).dense(6, "relu", bias=False)
                .dense(3, "softmax", bias=False))
    if name == "direct":        # one filter, the second without padding
        net = net.convolution(1, 3, padding=1, activation="relu", bias=True)
        return net.convolution(1, 3, activation="relu", bias=True).maxpool(2).dense(3, "softmax")
    if name == "gemm":          # 64 filters: dk as (taps, F)
        net = net.convolution(8, 3, padding=1, activation="relu", bias=True).maxpool(2)
        return net.convolution(64, 3, padding=2, dilation=2, bias=True).maxpool(3, 1).dense(3, "softmax")
    if name == "pooled gemm":   # GEMM's backward from a pool's: no padding (9 -> 7 -> 3), 64 filters (3 -> 1)
        net = net.convolution(6, 3, activation="relu", bias=True).maxpool(2)
        return net.convolution(64, 3, padding=1).maxpool(2).dense(3, "softmax")
    # linear convolution, a rectangular kernel (dk as (F, taps)), overlapping windows, an activation
    # and mse after
    net = net.convolution(16, (3, 2), padding=(1, 0), bias=True).maxpool((2, 3), (1, 2))
    return net.dense(5, "tanh").dense(2).set_objective("mse")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, impls", [("small", [chain.POOLED]), ("direct", [chain.TAPS, chain.DIRECT]),
                                         ("gemm", [chain.POOLED, chain.GEMM]), ("linear", [chain.GEMM]),
                                         ("pooled gemm", [chain.POOLED_GEMM, chain.POOLED_GEMM])])
@pytest.mark.parametrize("batch, n", [(1, 5), (8, 21)])
def test_convolutions_and_maxpools(name, impls, batch, n, dtype):
    net = _images(dtype, name).set_optimizer(O.SGDM(lr=0.05, momentum=0.9))
    runner = _fused.plan(net, batch, n)
    geo = runner.geo
    assert geo[geo[:, chain.KIND] == chain.CONV, chain.IMPL].tolist() == impls
    pools = geo[geo[:, chain.KIND] == chain.POOL, chain.IMPL].tolist()
    assert pools == {"small": [chain.PAIRS], "direct": [chain.PAIRS], "gemm": [chain.PAIRS, chain.ANY],
                     "pooled gemm": [chain.PAIRS, chain.PAIRS]}.get(name, [chain.ANY])
    _check(net, n=n, batch=batch, kind="normal" if name == "linear" else "onehot", chunks=(None, 2))


def test_a_convolution_takes_in_the_max_pool_that_alone_reads_it():
    """The chain's POOLED: a convolution by tap tiles whose output only a 2 x 2 max-pool with stride
    2 reads, each applied once, runs the pool in its own passes; the pool's op is gone. (Their
    results, bit for bit those of the general path: ``test_convolutions_and_maxpools`` ("small",
    "gemm") and the graphs' "conv loop".)"""
    image = neurons.Network((1, 8, 8))

    def convolutions(net):
        runner = _fused.plan(net.dense(3, "softmax"), 8, 21)
        return runner.geo[runner.geo[:, chain.KIND] == chain.CONV, chain.IMPL].tolist(), len(runner.ops)
    relu = dict(padding=1, activation="relu")
    assert convolutions(image.convolution(4, 3, **relu).maxpool(2)) == ([chain.POOLED], 2)
    assert convolutions(image.convolution(4, 3, padding=1).maxpool(2).convolution(2, 3, **relu).maxpool(2)) == (
        [chain.POOLED, chain.POOLED], 3)
    assert convolutions(image.convolution(4, 3, **relu).maxpool(3, 1)) == ([chain.TAPS], 3)      # another pool
    assert convolutions(image.convolution(4, 3, **relu).maxpool(2, 1)) == ([chain.TAPS], 3)
    assert convolutions(image.convolution(4, 3, activation="relu").maxpool(2)) == ([chain.DIRECT], 3)  # no padding
    # the output also read by an accumulation: a skip into the pool (after a second convolution),
    # a loopback around the second convolution (applied twice, unrolled), a feedback block
    skip = image.convolution(4, 3, **relu).convolution(4, 3, **relu).maxpool(2).connect(1, 2)
    assert convolutions(skip) == ([chain.TAPS, chain.TAPS], 5)
    beside = image.convolution(4, 3, **relu).maxpool(2).dense(256).dense(8).connect(1, 3)  # a pool and a skip
    assert convolutions(beside) == ([chain.TAPS], 6)
    loop = image.convolution(4, 3, **relu).maxpool(2).convolution(4, 3, **relu).maxpool(2).loopback(2, 2, 2)
    assert convolutions(loop)[0] == [chain.POOLED, chain.TAPS]
    block = [neurons.layers.Convolution(4, 3, **relu)]
    first = image.convolution(4, 3, padding=1)
    assert convolutions(first.feedback(block, 2).maxpool(2))[0] == [chain.TAPS, chain.TAPS]


@pytest.mark.parametrize("opt", [O.Adam(lr=0.01), O.RMSprop(lr=0.01, centered=True)], ids=lambda o: o.describe())
def test_convolutions_with_other_optimizers(opt):
    _check(_images("float32", "gemm").set_optimizer(opt), n=21, batch=8)


# skips, loopbacks and feedback blocks (``graph.py``'s programs): every accumulation mode the chain
# runs, inskips and outskips, tied weights in dense and convolution layers, layers no gradient
# reaches (an overwriting skip drops what came before it)
def _graph(dtype, name, mode):
    flat = neurons.Network((6,), dtype)
    if name == "skip":
        net = flat.dense(6, "relu").dense(6, "tanh").dense(3, "softmax").connect(0, 2)
        return net.set_accumulation(skip=mode)
    if name == "skips":         # into consecutive layers, out of a skip's target
        net = flat.dense(6, "relu").dense(6, "tanh").dense(6, "relu").dense(3, "softmax")
        return net.connect(0, 1).connect(1, 2).connect(0, 3).set_accumulation(skip=mode)
    if name == "loop":
        return flat.dense(6, "relu").dense(6, "tanh").dense(3, "softmax").loopback(1, 0, 2).set_accumulation(loop=mode)
    if name == "loop inskips":
        net = flat.dense(6, "tanh").dense(6, "sigmoid", bias=False).dense(3, "softmax")
        return net.loopback(1, 1, 3, inskips=True).connect(0, 2).set_accumulation(loop=mode)
    if name == "feedback":
        inner = [Dense(6, "tanh"), Dense(6, "relu", bias=False)]
        net = flat.dense(6, "relu").feedback(inner, 3, inskips=True, outskips=True, accumulation=mode)
        return net.dense(3, "softmax")
    images = neurons.Network((1, 8, 8), dtype).convolution(4, 3, padding=1, activation="relu").maxpool(2)
    if name == "conv loop":     # the benchmark's "loop"
        net = images.convolution(4, 3, padding=1, activation="relu", bias=True).maxpool(2).dense(3, "softmax")
        return net.loopback(2, 2, 2).set_accumulation(loop=mode)
    # the benchmark's "feedback"
    block = [neurons.layers.Convolution(4, 3, padding=1, activation="relu")]
    return images.feedback(block, 2, inskips=mode != "none", accumulation=mode if mode != "none" else "mean"
                           ).maxpool(2).dense(3, "softmax")


_GRAPHS = [(name, mode) for name in ("skip", "skips", "loop", "loop inskips")
           for mode in ("add", "subtract", "overwrite", "mean")]
_GRAPHS += [("feedback", "add"), ("feedback", "subtract"), ("feedback", "mean"), ("conv loop", "mean"),
            ("conv loop", "overwrite"), ("conv feedback", "none"), ("conv feedback", "add")]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, mode", _GRAPHS)
def test_skips_loops_and_feedback_blocks(name, mode, dtype):
    net = _graph(dtype, name, mode).set_optimizer(O.SGDM(lr=0.05, momentum=0.9))
    assert _fused.plan(net, 8, 21) is not None
    want = _check(net, n=21, batch=8, chunks=(None, 2))
    if name == "skip" and mode == "overwrite":          # layers 0 and 1 got no gradient: never moved
        for p, q in zip(_tree.leaves(want.params[:2]), _tree.leaves(net.init(0)[:2])):
            assert np.array_equal(p, q)


def test_a_chunk_leaves_its_arguments_alone():
    net = neurons.Network((4,)).dense(5, "relu").dense(3, "softmax").set_objective("ce").set_optimizer(O.Adam())
    x, y = _data(net, 10)
    params = net.init(0)
    state = net.optimizer.init(params)
    keep = [a.copy() for a in _tree.leaves((params, tuple(state)[1:], x, y))]
    runner = _fused.plan(net, 4, 10)
    with running():
        c = runner.run(params, state, x, y, np.arange(10), 0, 0, runner.steps)
    assert c.done == 3 and c.error is None and c.state.count == 3
    for a, b in zip(keep, _tree.leaves((params, tuple(state)[1:], x, y))):
        assert np.array_equal(a, b)
    with pytest.raises(ValueError, match="within the epoch"):
        runner.run(params, state, x, y, np.arange(10), 0, 2, 2)


class _MySGD(O.SGD):
    pass


def test_plan_leaves_other_networks_to_the_general_path():
    from neurons.layers import BatchNorm
    plain = neurons.Network((4,)).dense(4, "relu").dense(4, "relu").dense(2)
    assert _fused.plan(plain, 8, 100) is not None
    assert _fused.plan(plain.set_optimizer(_MySGD()), 8, 100) is None
    image = neurons.Network((1, 6, 6))
    assert _fused.plan(image.convolution(2, 3, activation="relu").maxpool(2).dense(2), 8, 100) is not None
    others = [image.convolution(2, 3, stride=2).dense(2),                   # other strides: other kernels
              image.convolution(4, 3, activation="tanh").dense(2),          # an activation of its own
              image.convolution(2, 3, dropout=0.5).dense(2),
              image.deconvolution(2, 3).dense(2),
              image.convolution(2, 3).maxpool(2),                            # no dense layer last
              neurons.Network((4,)).dense(4, "relu", dropout=0.5).dense(2),
              plain.connect(0, 1).set_accumulation(skip="multiply"),       # (the chain's ACC leaves it out)
              plain.loopback(1, 1, 1).set_accumulation(loop="multiply"),
              plain.loopback(1, 0, 2, scale=lambda passes: 1.0 / passes),    # scaled gradients
              neurons.Network((4,)).feedback([Dense(4, "tanh")], 2, coupling="mean").dense(2),
              neurons.Network((4,)).dense(4, "relu").dense(4).loopback(1, 1, 1),  # an accumulation last
              neurons.Network((4,)).dense(4).batchnorm().dense(2),
              neurons.Network((4,)).feedback([Dense(4), BatchNorm()], 2).dense(2),
              neurons.Network((3, 4)).recurrent(5, "gru").dense(2)]
    for net in others:
        assert _fused.plan(net, 8, 100) is None, net


def test_plan_leaves_the_prange_mode_to_the_general_path(monkeypatch):
    # the chain finds its kernels by address: where the block loops fell back to prange, so does it
    plain = neurons.Network((4,)).dense(4, "relu").dense(2)
    monkeypatch.setattr(_blocks, "MODE", "prange")
    assert _fused.plan(plain, 8, 100) is None


@pytest.mark.skipif(BLOCKS == 1, reason="one Numba thread: every kernel runs as one block")
def test_plan_refuses_only_activations_the_kernels_split_into_blocks():
    # an activation splits from 262,144 elements (rows, units); the chain runs activations whole
    wide = neurons.Network((1,)).dense(300, "tanh").dense(1)
    assert _fused.plan(wide, 512, 2000) is not None
    assert _fused.plan(wide, 1024, 2000) is None
    assert _fused.plan(wide, 1024, 800) is not None      # no batch holds more than 800 rows
    # products and updates split into blocks are the chain's too (see the next test)
    assert _fused.plan(neurons.Network((100,)).dense(300, "relu").dense(2), 8, 50) is not None


@pytest.mark.skipif(BLOCKS == 1, reason="one Numba thread: every kernel runs as one block")
@pytest.mark.parametrize("optimizer", [O.SGD(lr=0.01), O.SGDM(lr=0.01, momentum=0.9), O.Adam(lr=1e-3),
                                       O.RMSprop(lr=1e-3, momentum=0.5, centered=True)], ids=lambda o: type(o).__name__)
def test_products_and_updates_in_blocks_are_bit_for_bit_the_general_paths(optimizer):
    # 400 -> 350 -> 10: 8 rows x 350 x 400 (1.1 M multiply-adds) split into blocks, the 5 rows of
    # the last batch too (700,000), 2 rows (280,000) as well; 143,860 params: every optimizer's
    # update splits the flat params (>= its PARALLEL_MIN). The general path splits per param
    # instead: elementwise, the same bits.
    net = (neurons.Network((400,)).dense(350, "relu").dense(10, "softmax").set_objective("cross_entropy")
           .set_optimizer(optimizer))
    runner = _fused.plan(net, 8, 21)
    assert runner is not None and runner.opt_blocks == BLOCKS
    assert all(kdense.forward_blocks(rows, 350, 400) > 1 for rows in (8, 5))
    _check(net, n=21, batch=8, epochs=2, chunks=(None, 1, 2))
    _check(net.set_objective("mse").dense(3, "sigmoid"), n=10, batch=4, epochs=1, kind="prob")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("chunk", [None, 1, 4])
def test_a_nonfinite_loss_stops_where_learn_stops(dtype, chunk):
    net = neurons.Network((3,), dtype).dense(4).dense(2).set_objective("mse").set_optimizer(O.SGD(lr=0.01))
    x, y = _data(net, 9, kind="normal")
    order = np.random.default_rng([0, 0]).permutation(9)
    x[order[5], 0] = 1e30 if dtype == "float32" else 1e200       # (1e30)² overflows float32
    params = net.init(0)
    want = _hand(net, params, x, y, 1, 3)
    assert want.error == ("loss", 0, 5)
    got = _fast(net, params, x, y, 1, 3, chunk=chunk)
    _assert_same(got, want)
    assert got.message == "the loss became inf at epoch 1, batch 6"


@pytest.mark.parametrize("chunk", [None, 1, 3])
def test_a_nonfinite_update_stops_where_learn_stops(chunk):
    # from step 6 on (epoch 2, batch 2) the rate is 1e-3 * 1e45, inf in float32
    net = (neurons.Network((3,)).dense(4, "relu").dense(2).set_objective("mse")
           .set_optimizer(O.SGDM(lr=S.step(1e-3, 6, 1e45))))
    x, y = _data(net, 9, kind="normal")
    params = net.init(0)
    want = _hand(net, params, x, y, 2, 2)
    assert want.error == ("params", 1, 1) and want.message == "params[0][0]"
    got = _fast(net, params, x, y, 2, 2, chunk=chunk)
    assert got.message == "the update at epoch 2, batch 2 made params[0][0] non-finite"
    _assert_same(got._replace(message=want.message), want)


def test_a_nonfinite_loss_through_convolutions_stops_where_learn_stops():
    net = _images("float32", "gemm").set_optimizer(O.SGD(lr=0.01))
    x, y = _data(net, 9)
    order = np.random.default_rng([0, 0]).permutation(9)
    x[order[5], :, 3:6, 3:6] = 3e38         # the convolutions' sums overflow
    params = net.init(0)
    want = _hand(net, params, x, y, 1, 3)
    assert want.error == ("loss", 0, 5)
    got = _fast(net, params, x, y, 1, 3)
    _assert_same(got, want)
    assert got.message.startswith("the loss became") and got.message.endswith("at epoch 1, batch 6")


@pytest.mark.parametrize("name", ["small", "gemm"])
def test_a_nonfinite_update_of_a_convolution_stops_where_learn_stops(name):
    # from step 6 on (epoch 2, batch 2) the rate is 1e-3 * 1e45, inf in float32: the first param
    # it makes non-finite is named as learn names it, a convolution's kernel
    net = _images("float32", name).set_optimizer(O.SGDM(lr=S.step(1e-3, 6, 1e45)))
    x, y = _data(net, 9)
    params = net.init(0)
    want = _hand(net, params, x, y, 2, 2)
    assert want.error == ("params", 1, 1) and want.message == "params[0][0]"
    got = _fast(net, params, x, y, 2, 2)
    assert got.message == "the update at epoch 2, batch 2 made params[0][0] non-finite"
    _assert_same(got._replace(message=want.message), want)


@pytest.mark.parametrize("big_target", [False, True])
def test_a_rate_too_large_raises_where_update_raises(big_target):
    # exponential(0.01, 1e300) has no rate for step 2 (1e598): update raises a ValueError there,
    # after the step's loss (non-finite with the big target: a TrainingError first). The relu
    # units are dead (negative weights, positive inputs), so the rate of step 1 changes nothing.
    net = (neurons.Network((3,), "float64").dense(2, "relu", bias=False).set_objective("mse")
           .set_optimizer(O.SGD(lr=S.exponential(0.01, 1e300))))
    x = net.check_x(np.random.default_rng(0).uniform(0.1, 1.0, size=(4, 3)))
    y = np.zeros((4, 2))
    if big_target:
        y[np.random.default_rng([0, 0]).permutation(4)[2], 0] = 1e200
    params = (-np.ones((2, 3)),),
    if big_target:
        want = _hand(net, params, x, y, 1, 2)
        assert want.error == ("loss", 0, 2)
        _assert_same(_fast(net, params, x, y, 1, 2), want)
    else:
        with pytest.raises(ValueError) as want:
            _hand(net, params, x, y, 1, 2)
        with pytest.raises(ValueError) as got:
            _fast(net, params, x, y, 1, 2)
        assert str(got.value) == str(want.value) and "at step 2" in str(got.value)


@pytest.mark.parametrize("graph", [False, True], ids=["chain", "skip and loop"])
def test_learn_gives_the_general_paths_params(graph):
    net = (neurons.Network((4,)).dense(12, "relu").dense(12, "relu").dense(3, "softmax").set_objective("ce")
           .set_optimizer(O.SGD(lr=0.01)))
    if graph:
        net = net.loopback(1, 1, 2).connect(1, 2)
    assert _fused.plan(net, 1, 30) is not None
    x, y = _data(net, 30)
    want = _hand(net, net.init(3), x, y, 1, 2, seed=3)
    got = net.learn(x, y, batch=1, epochs=2, seed=3, progress=False)
    assert got.history.train_loss == [t / 30 for t in want.totals]
    for p, q in zip(_tree.leaves(got.params), _tree.leaves(want.params)):
        assert np.array_equal(p, q)


def test_the_chain_runs_each_kernels_own_machine_code():
    # a kernel compiled into the chain is a copy optimised again there, and with reassoc its sums
    # may be regrouped: inlined, cross_entropy's loss differed in the last bit 68 times in 2000
    # when the chain was loaded before the objectives. Called by address (``call_at``), never.
    code = """if True:
        import numpy as np
        from numba import njit, typeof
        from neurons.kernels import objectives
        from neurons.kernels._blocks import call_at, machine_code

        @njit
        def through(at, p, y):
            return call_at(at, (p, y, True, -0.3, 0.2), (0.0, p))[0]

        rng = np.random.default_rng(0)
        cases = [(rng.uniform(size=(n, f)), rng.uniform(size=(n, f)))
                 for n, f in zip(rng.integers(1, 40, 2000), rng.integers(1, 6, 2000))]
        p, y = cases[0]
        at = machine_code(objectives.cross_entropy, (typeof(p), typeof(y), typeof(True), typeof(0.1), typeof(0.1)))[0]
        ours = [through(at, p, y) for p, y in cases]
        theirs = [objectives.cross_entropy(p, y, True, -0.3, 0.2)[0] for p, y in cases]
        raise SystemExit(sum(a != b for a, b in zip(ours, theirs)))
    """
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:] or f"{done.returncode} losses differ"


def test_the_chain_compiles_only_the_kernels_its_network_uses(tmp_path):
    # on an empty cache: typing a chain that named every activation, loss and optimizer kernel
    # compiled them all (5 s of iris-b1's 18 s cold start); by address, only those it calls
    code = """if True:
        import numpy as np
        import neurons
        from neurons import _fused
        from neurons.kernels import activations, objectives, optim
        net = (neurons.Network((4,)).dense(6, "relu").dense(3, "softmax")
               .set_optimizer(neurons.optimizers.SGD(lr=0.1)).set_objective("cross_entropy"))
        assert _fused.plan(net, 4, 12) is not None
        rng = np.random.default_rng(0)
        net.learn(rng.standard_normal((12, 4)), rng.integers(0, 3, 12), batch=4, epochs=1)
        kernels = [activations._sigmoid_forward, activations._tanh_backward, activations._softmax_forward,
                   activations._relu_forward, objectives.mse, objectives.cross_entropy,
                   objectives.softmax_cross_entropy, optim._adam, optim._sgd]
        print(" ".join(k.__name__ for k in kernels if k.signatures))
    """
    import subprocess
    import sys
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path), NEURONS_WARM="0")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["_relu_forward", "softmax_cross_entropy", "_sgd"]


class _Compiling:
    """A stand-in for the helper compiling the chain: done (``returncode``) at its ``done``-th poll."""

    def __init__(self, done, returncode):
        self.polls, self.done, self.returncode = 0, done, returncode

    def poll(self):
        self.polls += 1
        return self.returncode if self.polls >= self.done else None


@pytest.mark.parametrize("returncode", [0, 1])
def test_learn_goes_over_to_the_chain_when_its_helper_is_done_with_the_same_bits(monkeypatch, returncode):
    # on a cold cache learn takes general steps while a helper compiles the chain: whenever it
    # goes over (here mid-epoch, at the 6th of 13 steps) the run is the one the chain alone, or the
    # general path alone, gives; a helper that failed leaves the whole run to the general path
    net = (neurons.Network((5,)).dense(7, "tanh").dense(3, "softmax").set_objective("cross_entropy")
           .set_optimizer(O.Adam(lr=0.01)))
    x, y = _data(net, 50)
    fit = dict(batch=4, epochs=2, print_every=None, progress=False)
    chained = net.learn(x, y, **fit)
    with monkeypatch.context() as m:
        m.setattr(_fused, "plan", lambda *args: None)
        general = net.learn(x, y, **fit)
    compiling, asked, chunks = _Compiling(6, returncode), [], []
    ready, run = _fused.Runner.ready, _fused.Runner.run
    monkeypatch.setattr(_fused.Runner, "ready", lambda self: bool(asked.append(1) or len(asked) > 1) and ready(self))
    monkeypatch.setattr(_fused.Runner, "run", lambda self, *a, **k: chunks.append(a[5:7]) or run(self, *a, **k))
    monkeypatch.setattr(neurons._warm, "start_chain", lambda *args: compiling)
    mixed = net.learn(x, y, **fit)
    assert compiling.polls == 6
    assert chunks == ([(0, 5), (1, 0)] if returncode == 0 else [])     # (epoch, step) each chunk started at
    for other in (chained, general):
        assert mixed.history.train_loss == other.history.train_loss
        for p, q in zip(_tree.leaves(mixed.params), _tree.leaves(other.params)):
            assert np.array_equal(p, q)


@pytest.mark.parametrize("case", ["cached", "helper", "no helper"])
def test_with_convolutions_learn_looks_for_the_chain_after_its_first_step(monkeypatch, case):
    # a convolutional chain is looked for once the first (general) step has compiled that
    # step's kernels (beside the helper of those); if it is not at hand, its helper starts after
    # the first epoch (when the evaluation's kernels are compiled too), and with no helper to
    # compile it the run stays on the general path (compiling it there would cost more than it
    # gains); whichever way, the general path's bits
    net = _images("float32", "small").set_optimizer(O.SGD(lr=0.05))
    x, y = _data(net, 40)
    fit = dict(batch=4, epochs=2, print_every=None, progress=False)
    neurons._warm.warm_chain(net, 4, len(x))         # the chain compiled (or loaded), for the test
    with monkeypatch.context() as m:
        m.setattr(_fused, "plan", lambda *args: None)
        general = net.learn(x, y, **fit)
    steps, asked, started, chunks = [], [], [], []
    compiling = _Compiling(3, 0)
    loss_grad, ready, run = neurons.Network._loss_grad_state, _fused.Runner.ready, _fused.Runner.run
    monkeypatch.setattr(neurons.Network, "_loss_grad_state", lambda *a, **k: steps.append(1) or loss_grad(*a, **k))
    monkeypatch.setattr(_fused.Runner, "ready", lambda self: bool(asked.append(len(steps))) or
                        ((case == "cached" or len(asked) > 1) and ready(self)))
    monkeypatch.setattr(_fused.Runner, "run", lambda self, *a, **k: chunks.append(a[5:7]) or run(self, *a, **k))
    monkeypatch.setattr(neurons._warm, "start_chain", lambda *args: started.append(len(steps)) or
                        (compiling if case == "helper" else None))
    mixed = net.learn(x, y, **fit)
    assert asked == {"cached": [1], "helper": [1, 12], "no helper": [1]}[case]
    assert started == ([] if case == "cached" else [10])
    assert chunks == {"cached": [(0, 1), (1, 0)], "helper": [(1, 2)], "no helper": []}[case]
    assert len(steps) == {"cached": 1, "helper": 12, "no helper": 20}[case]
    assert mixed.history.train_loss == general.history.train_loss
    for p, q in zip(_tree.leaves(mixed.params), _tree.leaves(general.params)):
        assert np.array_equal(p, q)


def test_on_a_cold_cache_a_helper_compiles_the_chain_while_learn_takes_general_steps(tmp_path):
    code = """if True:
        import numpy as np
        import neurons
        from neurons import _fused, _tree, _warm
        from neurons.kernels import chain
        net = neurons.Network((4,)).dense(6, "relu").dense(3, "softmax").set_objective("cross_entropy")
        rng = np.random.default_rng(0)
        x, y = rng.standard_normal((12, 4)), rng.integers(0, 3, 12)
        runner = _fused.plan(net, 4, 12)
        assert not runner.ready()
        first = net.learn(x, y, batch=4, epochs=2, print_every=None, progress=False)
        assert not chain.train_steps.overloads          # this process did not compile the chain
        (helper,) = _warm._chains.values()
        assert helper.wait(timeout=500) == 0
        assert runner.ready() and chain.train_steps.overloads       # loaded from the cache it filled
        again = net.learn(x, y, batch=4, epochs=2, print_every=None, progress=False)
        assert all(np.array_equal(a, b) for a, b in zip(_tree.leaves(first.params), _tree.leaves(again.params)))
        print("ok")
    """
    import subprocess
    import sys
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path), NEURONS_WARM="1")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["ok"]


# ``predict`` through the chain (``Runner.predict``, ``plan(..., infer=True)``): the general path's
# outputs, bit for bit, with the last softmax applied, in batches whose last one is short

def _general_predict(net, params, x, batch):
    """``predict``'s general path: ``graph.run_forward`` a batch at a time, inside ``running``."""
    with running():
        return np.concatenate([graph.run_forward(net.program, net.layers, net.shapes, params, x[i:i + batch])[0]
                               for i in range(0, len(x), batch)])


def _compiled(net, rows):
    """The network's inference runner, its chain compiled (loaded from the cache if it is there)."""
    runner = _fused.plan(net, rows, rows, infer=True)
    assert runner is not None
    chain.train_steps.compile(runner.signature())
    assert net._predictor(rows) is not None
    return runner


_PREDICTED = ([("dense", act) for act in ACTIVATIONS]
              + [("images", name) for name in ("small", "direct", "gemm", "pooled gemm")]
              + [("graph", case) for case in (("skip", "subtract"), ("loop inskips", "mean"), ("feedback", "add"),
                                              ("conv loop", "overwrite"), ("conv feedback", "add"))])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind, name", _PREDICTED, ids=str)
@pytest.mark.parametrize("batch, n", [(8, 21), (1000, 5)])
def test_predict_gives_the_general_paths_outputs(kind, name, batch, n, dtype):
    if kind == "dense":         # the iris example's network
        net = neurons.Network((4,), dtype).dense(50, "relu").dense(50, "tanh").dense(3, name)
    elif kind == "images":
        net = _images(dtype, name)
    else:
        net = _graph(dtype, *name)
    runner = _compiled(net, 8)      # (8, 21): batches of 8; (1000, 5): one batch, on the runner of 8 rows
    # dense layers alone, one block each, small arrays: nothing for ``running`` to set
    assert runner.light == (kind == "dense" or kind == "graph" and "conv" not in name[0])
    params = _tree.map(lambda a: a + a.dtype.type(0.1), net.init(3))     # biases not zero
    x = _data(net, n, seed=1)[0]
    want = _general_predict(net, params, x, batch)
    got = net.predict(params, x, batch)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert np.array_equal(got, want)
    if kind == "dense" and name == "softmax":
        assert np.allclose(got.sum(axis=1), 1.0, atol=1e-5)         # the softmax applied, not the logits


def test_predict_refuses_nonfinite_params_on_the_chain_too():
    net = neurons.Network((4,)).dense(6, "relu").dense(3, "softmax")
    _compiled(net, 5)
    x = _data(net, 5)[0]
    params = net.init(0)
    params[1][1][2] = np.inf
    with pytest.raises(ValueError, match=r"params\[1\] holds a non-finite value \(inf\) at index \(2,\)"):
        net.predict(params, x)
    with pytest.raises(ValueError, match=r"params\[0\]: expected an array of shape \(6, 4\)"):
        net.predict((params[1], params[0]), x)


def test_predict_takes_the_general_path_while_the_chain_is_not_at_hand(monkeypatch):
    net = neurons.Network((4,)).dense(6, "relu").dense(3, "softmax")
    x, params = _data(net, 9)[0], net.init(0)
    called = []
    monkeypatch.setattr(_fused.Runner, "ready", lambda self, look=True: called.append(look) or False)
    monkeypatch.setattr(_fused.Runner, "predict", lambda *a: pytest.fail("the chain ran"))
    for _ in range(3):
        assert np.array_equal(net.predict(params, x, 4), _general_predict(net, params, x, 4))
    assert called == [True, False, False]           # the cache looked in once, then this process only


def test_a_pickled_network_or_runner_carries_no_kernel_addresses():
    import pickle
    net = neurons.Network((4,)).dense(6, "relu").dense(3, "softmax")
    x, params = _data(net, 5)[0], net.init(0)
    runner = _compiled(net, 5)
    want = net.predict(params, x)
    assert net._predictor(8).fwd is not None           # 5 samples: the runner of 8 rows took them
    again = pickle.loads(pickle.dumps(net))
    assert "_predictors" not in again.__dict__ and again == net
    assert np.array_equal(again.predict(params, x), want)
    runner._address()
    assert pickle.loads(pickle.dumps(runner)).fwd is None       # looked up again where it runs


def test_predict_leaves_large_batches_of_wide_inputs_to_the_general_path():
    # the chain copies each batch's input rows: at 1000 rows of 784 that costs more than it saves
    net = neurons.Network((784,)).dense(10, "softmax")
    assert _fused.plan(net, 1000, 1000, infer=True) is not None and net._predictor(1000) is None
    assert _fused.plan(net, 8, 8, infer=True).gains


def test_predict_keeps_a_few_runners_for_every_size():
    # fewer samples than the batch run as one batch, on a runner of the next power of two rows
    net = neurons.Network((4,)).dense(6, "relu").dense(3, "softmax")
    _compiled(net, 8)
    params = net.init(0)
    for n in range(1, 40):
        x = _data(net, n, seed=n)[0]
        assert np.array_equal(net.predict(params, x, 16), _general_predict(net, params, x, 16))
    assert sorted(net.__dict__["_predictors"]) == [1, 2, 4, 8, 16]
