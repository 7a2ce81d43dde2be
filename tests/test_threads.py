"""The BLAS thread limit while kernels run, and concurrent calls on one network."""
import threading

import numpy as np
from threadpoolctl import threadpool_info

import neurons
from neurons._threads import blas_single


def _blas_threads():
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


def test_the_blas_limit_holds_until_the_last_thread_leaves():
    with blas_single():             # loads the BLAS the kernels call
        pass
    before = _blas_threads()
    assert before
    entered, a_left, b_checked = threading.Event(), threading.Event(), threading.Event()
    seen = []

    def a():
        with blas_single():
            entered.set()
            b_checked.wait(10)
        a_left.set()

    def b():
        entered.wait(10)
        with blas_single():
            b_checked.set()
            a_left.wait(10)
            seen.append(_blas_threads())        # A has left; B's kernels still run here

    ts = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(20)
    # threadpoolctl's own limit did nothing here: the main thread, which set a limit first, owns it
    assert seen and all(n == 1 for n in seen[0])
    assert _blas_threads() == before


def test_threads_predicting_at_once_get_the_serial_bits():
    rng = np.random.default_rng(0)
    net = neurons.Network((256,)).dense(512, "relu").dense(256, "tanh").dense(10, "softmax")
    trained = neurons.Trained(net, net.init(0))
    xs = [rng.normal(size=(300, 256)).astype(np.float32) for _ in range(4)]
    serial = [trained.predict(x) for x in xs]
    results, errors = {}, []

    def work(i):
        try:
            results[i] = [trained.predict(xs[i % 4]) for _ in range(15)]
        except Exception as e:      # pragma: no cover - reported below
            errors.append(e)

    ts = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    assert not errors
    for i, outs in results.items():
        for out in outs:
            np.testing.assert_array_equal(out, serial[i % 4])
