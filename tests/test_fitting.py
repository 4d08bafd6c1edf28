"""Tests of the batched solvers in qmri.fitting against scipy and closed-form truths."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import least_squares

from qmri.fitting import (
    _solve_small,
    chunked,
    levenberg_marquardt,
    loglinear_wls,
    r_squared,
    weighted_line_fit,
)


def _exp_residuals(p, y, x):
    """y = a exp(-k x): residuals and Jacobian for a batch."""
    a, k = p[:, 0:1], p[:, 1:2]
    e = np.exp(-k * x)
    jac = np.stack([e, -a * x * e], axis=-1)
    return a * e - y, jac


def test_chunked_covers_range_once():
    parts = list(chunked(10, 4))
    assert [(s.start, s.stop) for s in parts] == [(0, 4), (4, 8), (8, 10)]
    assert list(chunked(0, 4)) == []
    with pytest.raises(ValueError, match="positive"):
        list(chunked(3, 0))


def test_lm_matches_scipy_least_squares_on_noisy_exponentials():
    rng = np.random.default_rng(1)
    n = 30
    x = np.linspace(0, 3, 12)
    a_true = rng.uniform(50, 200, n)
    k_true = rng.uniform(0.3, 2.0, n)
    y = a_true[:, None] * np.exp(-k_true[:, None] * x) + rng.normal(0, 3, (n, x.size))
    p0 = np.column_stack([a_true * 0.7, k_true * 1.5])  # deliberately off
    xs = np.broadcast_to(x, y.shape)
    res = levenberg_marquardt(_exp_residuals, p0, voxel_args=(y, xs))
    assert res.converged.all()
    assert not res.at_bound.any()
    for i in range(n):
        ref = least_squares(
            lambda p, i=i: p[0] * np.exp(-p[1] * x) - y[i],
            p0[i],
            method="lm",
            xtol=1e-14,
            ftol=1e-14,
        )
        np.testing.assert_allclose(res.params[i], ref.x, rtol=1e-6)
        np.testing.assert_allclose(res.cost[i], ref.cost, rtol=1e-9)


def test_lm_three_parameters_uses_general_solver():
    # y = a exp(-k x) + c, three parameters -> np.linalg.solve path
    rng = np.random.default_rng(2)
    x = np.linspace(0, 4, 15)
    truth = np.array([[100.0, 1.2, 10.0], [40.0, 0.5, -5.0], [70.0, 2.0, 0.0]])
    y = truth[:, :1] * np.exp(-truth[:, 1:2] * x) + truth[:, 2:]
    y += rng.normal(0, 0.5, y.shape)

    def fun(p, yy):
        e = np.exp(-p[:, 1:2] * x)
        jac = np.stack([e, -p[:, :1] * x * e, np.ones_like(e)], axis=-1)
        return p[:, :1] * e + p[:, 2:] - yy, jac

    p0 = truth * np.array([1.3, 0.8, 1.0]) + np.array([0, 0, 3.0])
    res = levenberg_marquardt(fun, p0, voxel_args=(y,))
    for i in range(3):
        ref = least_squares(lambda p, i=i: fun(p[None], y[i : i + 1])[0][0], p0[i], method="lm")
        np.testing.assert_allclose(res.params[i], ref.x, rtol=1e-5)


def test_lm_batched_rosenbrock_reaches_minimum():
    def rosen(p):
        r = np.stack([10 * (p[:, 1] - p[:, 0] ** 2), 1 - p[:, 0]], axis=1)
        jac = np.zeros((p.shape[0], 2, 2))
        jac[:, 0, 0] = -20 * p[:, 0]
        jac[:, 0, 1] = 10
        jac[:, 1, 0] = -1
        return r, jac

    p0 = np.array([[-1.2, 1.0], [2.0, -1.0], [0.0, 0.0], [1.0, 1.0]])
    res = levenberg_marquardt(rosen, p0, max_iter=200)
    np.testing.assert_allclose(res.params, 1.0, atol=1e-7)
    assert res.converged.all()
    assert res.n_iter[3] <= 1  # started at the exact minimum (cost 0)


def test_lm_reports_solutions_stopped_by_bounds_without_hiding_them():
    # y = a x with slopes 2 (outside upper bound 1) and 0.5 (inside)
    x = np.linspace(1, 5, 5)
    y = np.array([2.0, 0.5])[:, None] * x

    def fun(p, yy):
        return p[:, :1] * x - yy, np.broadcast_to(x[None, :, None], (p.shape[0], 5, 1)).copy()

    res = levenberg_marquardt(fun, np.array([[0.1], [0.1]]), upper=[1.0], voxel_args=(y,))
    assert res.params[0, 0] == 1.0
    assert res.at_upper[0, 0]
    assert res.at_bound.tolist() == [True, False]
    np.testing.assert_allclose(res.params[1, 0], 0.5, rtol=1e-9)


def test_lm_only_iterates_unconverged_voxels():
    sizes = []
    x = np.linspace(0, 3, 8)
    truth = np.array([[100.0, 1.0], [80.0, 0.5], [60.0, 2.0]])
    y = truth[:, :1] * np.exp(-truth[:, 1:] * x)

    def fun(p, yy):
        sizes.append(p.shape[0])
        return _exp_residuals(p, yy, x)

    p0 = truth.copy()
    p0[1:] *= 1.4  # voxel 0 starts at the exact solution (cost 0): never iterated
    res = levenberg_marquardt(fun, p0, voxel_args=(y,))
    np.testing.assert_allclose(res.params, truth, rtol=1e-8)
    assert sizes[0] == 3
    assert max(sizes[1:]) == 2


def test_lm_non_finite_start_or_residual_is_reported_not_fitted():
    x = np.linspace(0, 3, 8)
    y = np.vstack([100 * np.exp(-x), np.full(8, np.nan)])
    p0 = np.array([[np.nan, 1.0], [100.0, 1.0]])
    res = levenberg_marquardt(lambda p, yy: _exp_residuals(p, yy, x), p0, voxel_args=(y,))
    assert np.isnan(res.params).all()
    assert not res.converged.any()


def test_lm_rejects_bad_arguments():
    with pytest.raises(ValueError, match="first axis"):
        levenberg_marquardt(_exp_residuals, np.ones((2, 2)), voxel_args=(np.ones((3, 4)),))
    with pytest.raises(ValueError, match="exceed"):
        levenberg_marquardt(_exp_residuals, np.ones((2, 2)), lower=[2, 0], upper=[1, 1])


def test_loglinear_wls_exact_and_guarded():
    x = np.array([0.0, 0.01, 0.02, 0.04])
    s = np.array([[1000.0, 800.0, 640.0, 409.6], [5.0, 0.0, -1.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    s[0] = 1000 * np.exp(-22.0 * x)
    intercept, rate, ok = loglinear_wls(s, x)  # must not warn on log(0) / log(<0)
    assert ok.tolist() == [True, False, False]
    np.testing.assert_allclose([np.exp(intercept[0]), rate[0]], [1000.0, 22.0], rtol=1e-12)


def test_weighted_line_fit_matches_numpy_polyfit():
    rng = np.random.default_rng(3)
    x = np.array([0.0, 1.0, 2.5, 4.0, 7.0])
    y = rng.normal(size=(4, 5))
    w = rng.uniform(0.1, 2.0, size=(4, 5))
    a, c, ok = weighted_line_fit(x, y, w)
    assert ok.all()
    for i in range(4):
        slope, icpt = np.polyfit(x, y[i], 1, w=np.sqrt(w[i]))
        np.testing.assert_allclose([a[i], c[i]], [icpt, slope], rtol=1e-10)


def test_r_squared_values():
    y = np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [2.0, 2.0, 2.0], [1.0, 2.0, 3.0]])
    pred = np.array([[1.0, 2.0, 3.0], [2.0, 2.0, 2.0], [2.0, 2.0, 2.0], [3.0, 2.0, 1.0]])
    np.testing.assert_allclose(r_squared(y, pred), [1.0, 0.0, 1.0, 0.0])
    np.testing.assert_allclose(r_squared(y, ss_res=[0.5, 2.0, 0.0, 1.0]), [0.75, 0, 1, 0.5])


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 6, 7])
def test_solve_small_matches_numpy_for_symmetric_systems(k):
    rng = np.random.default_rng(k)
    jac = rng.normal(size=(200, 12, k))
    a = np.einsum("mok,mol->mkl", jac, jac)  # normal equations: symmetric positive definite
    b = rng.normal(size=(200, k))
    np.testing.assert_allclose(
        _solve_small(a, b), np.linalg.solve(a, b[..., None])[..., 0], rtol=1e-9, atol=1e-12
    )


def test_solve_small_falls_back_for_singular_and_flags_non_finite_rows():
    a = np.array([np.eye(3), np.ones((3, 3)), np.full((3, 3), np.nan)])
    b = np.ones((3, 3))
    x = _solve_small(a, b)
    np.testing.assert_allclose(x[0], 1.0)
    # singular: the pseudo-inverse's least-norm solution, as LAPACK's fallback gives
    np.testing.assert_allclose(x[1], np.linalg.pinv(np.ones((3, 3))) @ np.ones(3))
    assert np.isnan(x[2]).all()


def test_model_fits_never_modify_their_input():
    """Kernels get read-only views of the caller's array (no copy): inputs must not change."""
    from qmri.models import ADCModel, IVIMModel, MonoExponentialModel, VFAModel

    rng = np.random.default_rng(3)
    b = np.array([0.0, 50, 100, 200, 400, 600, 800])
    cases = [
        (VFAModel([3.0, 6, 10, 15, 20], 0.01), rng.uniform(100, 1000, (6, 5, 5))),
        (MonoExponentialModel([0.01, 0.02, 0.03, 0.04]), rng.uniform(100, 1000, (6, 5, 4))),
        (ADCModel(b), rng.uniform(100, 1000, (6, 5, 7))),
        (IVIMModel(b), rng.uniform(100, 1000, (6, 5, 7))),
    ]
    for model, data in cases:
        before = data.copy()
        data.flags.writeable = False  # a read-only input (e.g. a memory-mapped NIfTI) works too
        model.fit(data)
        np.testing.assert_array_equal(data, before)
