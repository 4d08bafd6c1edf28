"""VFA (DESPOT1) T1 model: recovery of known truth, failures, shapes and input errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import least_squares

from qmri.errors import QMRIInputError
from qmri.models import ModelFit, VFAModel

FA = [2.0, 5.0, 10.0, 15.0, 20.0]
TR = 0.005


def spgr(t1, m0, fa_deg, tr, b1=1.0):
    """SPGR signal written out independently of qmri."""
    t1, m0, b1 = (np.asarray(v, dtype=float)[..., None] for v in (t1, m0, b1))
    a = np.deg2rad(np.asarray(fa_deg, dtype=float)) * b1
    e1 = np.exp(-tr / t1)
    return m0 * np.sin(a) * (1 - e1) / (1 - np.cos(a) * e1)


def rician(signal, sigma, rng):
    noise = rng.normal(0, sigma, (2, *signal.shape))
    return np.hypot(signal + noise[0], noise[1])


@pytest.fixture
def truth3d():
    rng = np.random.default_rng(7)
    shape = (3, 4, 5)
    return (
        rng.uniform(0.3, 3.0, shape),
        rng.uniform(500, 3000, shape),
        rng.uniform(0.7, 1.3, shape),
    )


@pytest.mark.parametrize("method", ["linear", "nlls"])
def test_noiseless_3d_recovers_truth(truth3d, method):
    t1, m0, _ = truth3d
    fit = VFAModel(FA, TR, method=method).fit(spgr(t1, m0, FA, TR))
    assert isinstance(fit, ModelFit)
    np.testing.assert_allclose(fit.maps["T1"], t1, rtol=1e-6)
    np.testing.assert_allclose(fit.maps["M0"], m0, rtol=1e-6)
    np.testing.assert_allclose(fit.maps["R2"], 1.0, atol=1e-6)
    assert fit.maps["T1"].dtype == np.float32
    assert fit.maps["M0"].dtype == np.float32
    assert fit.maps["fitmask"].dtype == np.uint8
    assert fit.maps["fitmask"].all()
    assert (fit.n_fitted, fit.n_failed) == (60, 0)
    assert fit.units == {"T1": "s", "M0": "a.u.", "R2": "1", "fitmask": "1"}


@pytest.mark.parametrize("method", ["linear", "nlls"])
def test_b1_correction_recovers_truth_and_matters(truth3d, method):
    t1, m0, b1 = truth3d
    data = spgr(t1, m0, FA, TR, b1)
    model = VFAModel(FA, TR, method=method)
    fit = model.fit(data, b1=b1)
    np.testing.assert_allclose(fit.maps["T1"], t1, rtol=1e-6)
    np.testing.assert_allclose(fit.maps["M0"], m0, rtol=1e-6)
    assert fit.options["b1_corrected"] is True
    uncorrected = model.fit(data)
    rel = np.abs(uncorrected.maps["T1"] - t1) / t1
    assert np.nanmedian(rel) > 0.1  # B1 0.7..1.3 biases T1 by tens of percent


def test_noisy_rician_median_error_and_nlls_minimises_the_residual():
    rng = np.random.default_rng(11)
    n = 3000
    t1 = rng.uniform(0.5, 2.0, n)
    m0 = np.full(n, 2000.0)
    b1 = rng.uniform(0.85, 1.15, n)
    clean = spgr(t1, m0, FA, TR, b1)
    data = rician(clean, 0.01 * clean.max(), rng)  # SNR 100 at the peak
    nlls = VFAModel(FA, TR).fit(data, b1=b1)
    lin = VFAModel(FA, TR, method="linear").fit(data, b1=b1)
    rel = np.abs(nlls.maps["T1"] - t1) / t1
    assert np.nanmedian(rel) < 0.03
    assert nlls.n_failed == 0
    both = (nlls.maps["fitmask"] == 1) & (lin.maps["fitmask"] == 1)
    # the non-linear fit minimises the residual sum of squares: R2 never below the linear fit's
    assert np.all(nlls.maps["R2"][both] >= lin.maps["R2"][both] - 1e-6)
    assert np.mean(nlls.maps["R2"][both] > lin.maps["R2"][both]) > 0.9


def test_nlls_matches_scipy_least_squares_on_noisy_voxels():
    rng = np.random.default_rng(5)
    t1 = np.array([0.4, 0.9, 1.6, 2.5])
    m0 = np.array([1500.0, 800.0, 2500.0, 1000.0])
    data = rician(spgr(t1, m0, FA, TR), 0.5, rng)
    fit = VFAModel(FA, TR).fit(data)
    a = np.deg2rad(FA)
    for i in range(t1.size):

        def res(p, i=i):
            e1 = np.exp(-TR / p[1])
            return p[0] * np.sin(a) * (1 - e1) / (1 - np.cos(a) * e1) - data[i]

        ref = least_squares(res, [m0[i], t1[i]], method="lm", xtol=1e-14, ftol=1e-14)
        np.testing.assert_allclose(fit.maps["T1"][i], ref.x[1], rtol=2e-6)
        np.testing.assert_allclose(fit.maps["M0"][i], ref.x[0], rtol=2e-6)


@settings(max_examples=40, deadline=None)
@given(
    t1=st.floats(0.2, 3.0),
    m0=st.floats(10.0, 1e4),
    tr=st.floats(0.003, 0.03),
    b1=st.floats(0.6, 1.4),
    angles=st.lists(st.integers(1, 40), min_size=2, max_size=8, unique=True),
)
def test_property_noiseless_recovery(t1, m0, tr, b1, angles):
    data = spgr(t1, m0, angles, tr, b1)
    fit = VFAModel(angles, tr).fit(data, b1=np.asarray(b1))
    assert fit.maps["fitmask"] == 1
    np.testing.assert_allclose(fit.maps["T1"], t1, rtol=1e-6)
    np.testing.assert_allclose(fit.maps["M0"], m0, rtol=1e-6)


def test_mask_zero_and_garbage_voxels_fail_as_nan():
    t1 = np.full(7, 1.0)
    data = spgr(t1, np.full(7, 1000.0), FA, TR)
    data[1] = 0.0  # all-zero voxel
    data[2, 3] = np.nan  # non-finite sample
    data[3] = -data[0]  # negative signal: M0 <= 0
    data[4] = np.inf
    data[5] = 100 * np.sin(np.deg2rad(FA))  # S ~ sin(a): T1 -> 0, not physical
    mask = np.array([1, 1, 1, 1, 1, 1, 0])
    for method in ("linear", "nlls"):
        fit = VFAModel(FA, TR, method=method).fit(data, mask=mask)
        assert fit.maps["fitmask"].tolist() == [1, 0, 0, 0, 0, 0, 0]
        for name in ("T1", "M0", "R2"):
            assert np.isnan(fit.maps[name][1:]).all(), name
        assert fit.maps["T1"][0] == pytest.approx(1.0, rel=1e-6)
        assert (fit.n_fitted, fit.n_failed) == (6, 5)


def test_t1_outside_physical_bounds_fails():
    data = spgr([1.0, 30.0], [1000.0, 1000.0], FA, TR)
    for method in ("linear", "nlls"):
        fit = VFAModel(FA, TR, method=method).fit(data)
        assert fit.maps["fitmask"].tolist() == [1, 0]
        assert np.isnan(fit.maps["T1"][1])
        assert np.isnan(fit.maps["M0"][1])


def test_invalid_b1_voxel_fails():
    data = spgr(np.ones(3), np.full(3, 1000.0), FA, TR)
    fit = VFAModel(FA, TR).fit(data, b1=np.array([1.0, 0.0, np.nan]))
    assert fit.maps["fitmask"].tolist() == [1, 0, 0]
    assert fit.n_failed == 2


def test_shapes_single_voxel_2d_and_chunking(truth3d):
    t1, m0, b1 = truth3d
    model = VFAModel(FA, TR)
    single = model.fit(spgr(1.2, 1500.0, FA, TR))
    assert single.maps["T1"].shape == ()
    assert single.shape == ()
    assert float(single.maps["T1"]) == pytest.approx(1.2, rel=1e-6)
    flat = spgr(t1.ravel(), m0.ravel(), FA, TR, b1.ravel())
    two_d = model.fit(flat, b1=b1.ravel())
    assert two_d.maps["T1"].shape == (60,)
    chunked = model.fit(flat, b1=b1.ravel(), chunk_size=7)
    for name in ("T1", "M0", "R2", "fitmask"):
        np.testing.assert_array_equal(chunked.maps[name], two_d.maps[name])
    data16 = np.round(flat).astype(np.int16)  # integer data is accepted
    assert model.fit(data16, b1=b1.ravel()).n_failed == 0


def test_model_is_not_mutated_and_fit_is_documented(truth3d):
    t1, m0, _ = truth3d
    model = VFAModel(FA, TR)
    before = repr(model)
    fit1 = model.fit(spgr(t1, m0, FA, TR))
    fit2 = model.fit(spgr(t1, m0, FA, TR))
    assert repr(model) == before
    np.testing.assert_array_equal(fit1.maps["T1"], fit2.maps["T1"])
    assert "DESPOT1" in fit1.algorithm
    assert "Levenberg" in fit1.algorithm
    assert "Deoni" in fit1.reference
    opts = json.loads(json.dumps(fit1.options))
    assert opts["flip_angles_deg"] == FA
    assert opts["tr_s"] == TR
    assert opts["method"] == "nlls"
    assert fit1.parameter_names == ("T1", "M0")
    with pytest.raises(ValueError, match="read-only"):
        model.flip_angles_deg[0] = 3.0  # read-only


def test_predict_matches_independent_formula():
    model = VFAModel(FA, TR)
    np.testing.assert_allclose(
        model.predict({"T1": np.array([0.8]), "M0": np.array([900.0])}, b1=np.array([1.1])),
        spgr([0.8], [900.0], FA, TR, [1.1]),
        rtol=1e-12,
    )


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (([5.0], TR), {}, "at least 2 different flip angles"),
        (([5.0, 5.0], TR), {}, "at least 2 different flip angles"),
        (([0.0, 5.0], TR), {}, r"flip angles must be in \(0, 180\)"),
        (([5.0, np.nan], TR), {}, "finite"),
        ((FA, 0.0), {}, "TR must be positive"),
        ((FA, -0.005), {}, "TR must be positive"),
        ((FA, 5.0), {}, "not ms"),
        ((FA, "abc"), {}, "TR must be a number"),
        ((FA, TR), {"method": "lsq"}, "unknown VFA method 'lsq'"),
    ],
)
def test_construction_errors(args, kwargs, match):
    with pytest.raises(QMRIInputError, match=match):
        VFAModel(*args, **kwargs)


def test_fit_input_errors():
    model = VFAModel(FA, TR)
    data = np.ones((2, 3, 4))
    with pytest.raises(QMRIInputError, match="data has 4 volumes but 5 flip angles were given"):
        model.fit(data)
    data = np.ones((2, 3, 5))
    with pytest.raises(QMRIInputError, match=r"b1 has shape \(3, 2\) but the data's spatial"):
        model.fit(data, b1=np.ones((3, 2)))
    with pytest.raises(QMRIInputError, match=r"mask has shape \(2,\)"):
        model.fit(data, mask=np.ones(2))
    with pytest.raises(QMRIInputError, match="not percent"):
        model.fit(data, b1=np.full((2, 3), 100.0))
    with pytest.raises(QMRIInputError, match="real numbers"):
        model.fit(data.astype(complex))
