"""The BLAS thread limit while kernels run, and concurrent calls on one network."""
import threading

import numpy as np
from threadpoolctl import threadpool_info

import neurons
from neurons._threads import running


def _blas_threads():
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


def test_the_blas_limit_holds_until_the_last_thread_leaves():
    with running():             # loads the BLAS the kernels call
        pass
    before = _blas_threads()
    assert before
    entered, a_left, b_checked = threading.Event(), threading.Event(), threading.Event()
    seen = []

    def a():
        with running():
            entered.set()
            b_checked.wait(10)
        a_left.set()

    def b():
        entered.wait(10)
        with running():
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


def test_the_heap_setting_is_scoped_to_the_librarys_work(monkeypatch):
    calls = []

    class FakeLibc:
        def mallopt(self, param, value):
            calls.append((param, value))
            return 1

    from neurons import _threads
    monkeypatch.setattr(_threads, "_libc", lambda: FakeLibc())
    net = neurons.Network((3,)).dense(2)
    net.evaluate(net.init(0), np.zeros((4, 3)), np.zeros((4, 2)))
    mmap, trim = _threads._M_MMAP_THRESHOLD, _threads._M_TRIM_THRESHOLD
    assert calls == [(mmap, 1 << 30), (trim, (1 << 31) - 1),                 # kept while evaluate ran
                     (mmap, 128 * 1024), (trim, 128 * 1024)]                 # glibc's defaults after
