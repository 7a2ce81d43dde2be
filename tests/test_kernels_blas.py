"""``blas.gemm`` against NumPy: every transpose, both dtypes, strided blocks, accumulation; and
its NumPy form (what ``gemm`` is under ``NUMBA_DISABLE_JIT``) against the same checks."""
import numpy as np
import pytest

from neurons.kernels.blas import _gemm_numpy, gemm

IMPLEMENTATIONS = pytest.mark.parametrize("impl", [gemm, _gemm_numpy], ids=["blas", "numpy"])


@IMPLEMENTATIONS
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
def test_gemm_matches_numpy_on_column_blocks(impl, dtype, ta, tb):
    rng = np.random.default_rng(0)
    m, n, k = 5, 7, 3
    big_a = rng.normal(size=(k, m + 2) if ta else (m, k + 2)).astype(dtype)
    a = big_a[:, 1:1 + m] if ta else big_a[:, 1:1 + k]           # strided views: rows not adjacent
    b = rng.normal(size=(n, k) if tb else (k, n)).astype(dtype)
    big_c = rng.normal(size=(m, n + 4)).astype(dtype)
    c = big_c[:, 2:2 + n]
    before = big_c.copy()
    impl(ta, tb, 2.0, a, b, 0.5, c)
    want = 2.0 * ((a.T if ta else a).astype(float) @ (b.T if tb else b).astype(float)) + 0.5 * before[:, 2:2 + n]
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert c.dtype == dtype
    np.testing.assert_allclose(c, want, rtol=tol, atol=tol)
    # the columns outside the block are untouched
    np.testing.assert_array_equal(big_c[:, :2], before[:, :2])
    np.testing.assert_array_equal(big_c[:, 2 + n:], before[:, 2 + n:])


@IMPLEMENTATIONS
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_beta_zero_does_not_read_c(impl, dtype):
    """Outputs come from ``np.empty``: with beta = 0, whatever c holds (here NaN) must not leak."""
    a, b = np.ones((2, 3), dtype), np.ones((3, 4), dtype)
    c = np.full((2, 4), np.nan, dtype)
    impl(False, False, 1.0, a, b, 0.0, c)
    np.testing.assert_array_equal(c, 3.0)


@IMPLEMENTATIONS
def test_gemm_with_an_empty_reduction_scales_c(impl):
    c = np.ones((2, 3))
    impl(False, False, 1.0, np.empty((2, 0)), np.empty((0, 3)), 0.0, c)
    np.testing.assert_array_equal(c, 0.0)


@IMPLEMENTATIONS
def test_gemm_rejects_mismatched_shapes_and_dtypes(impl):
    with pytest.raises(ValueError, match="do not match"):
        impl(False, False, 1.0, np.ones((2, 3)), np.ones((4, 2)), 0.0, np.ones((2, 2)))
    with pytest.raises(ValueError, match="do not match"):
        impl(False, False, 1.0, np.ones((2, 3), np.float32), np.ones((3, 2)), 0.0, np.ones((2, 2)))
    with pytest.raises(ValueError, match="contiguous"):
        impl(False, False, 1.0, np.ones((3, 2)).T, np.ones((3, 2)), 0.0, np.ones((2, 2)))


def _in_a_process(code, **env):
    import os
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **env})
    return done


def test_numpy_s_openblas_is_the_default_and_scipy_s_the_fallback():
    """Both BLAS libraries give the product (each with its own integer width: a wrong width is a
    wrong answer or a crash, not an error), and each keys its own cache folder."""
    code = ("import numpy as np, neurons.kernels as k\n"
            "from neurons.kernels.blas import gemm\n"
            "rng = np.random.default_rng(0)\n"
            "for dt in (np.float32, np.float64):\n"
            "    a, b = rng.normal(size=(70, 300)).astype(dt), rng.normal(size=(90, 300)).astype(dt)\n"
            "    c = np.empty((70, 90), dt)\n"
            "    gemm(False, True, 1.0, a, b, 0.0, c)\n"
            "    assert np.allclose(c, a.astype(float) @ b.T.astype(float), rtol=1e-4, atol=1e-3)\n"
            "print(k.BLAS[0], k._FOLDER)\n")
    folders = {}
    for choice in ("numpy", "scipy"):
        done = _in_a_process(code, NEURONS_BLAS=choice)
        assert done.returncode == 0, done.stderr
        name, folders[choice] = done.stdout.split()
        assert name == choice or (choice == "numpy" and name == "scipy")      # a NumPy without OpenBLAS
        assert f"-{name}blas-" in folders[choice]
    import os
    import neurons.kernels as k
    if os.environ.get("NEURONS_BLAS", "numpy") == "numpy":
        assert k.BLAS[0] == "numpy"         # NumPy's wheels (what the project installs) ship OpenBLAS
    assert folders["numpy"] != folders["scipy"]


def test_an_unknown_blas_is_refused_by_name():
    done = _in_a_process("import neurons", NEURONS_BLAS="mkl")
    assert done.returncode != 0
    assert "NEURONS_BLAS must be 'numpy' or 'scipy', not 'mkl'" in done.stderr
