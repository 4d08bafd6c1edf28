"""IVIM model: recovery of known truth, noise, bounds policy, failures and errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qmri.errors import QMRIInputError
from qmri.models.ivim import IVIM_DEFAULT_BOUNDS, IVIMModel

B = np.array([0.0, 10, 20, 30, 50, 80, 100, 150, 200, 300, 400, 600, 800])


def ivim(s0, f, d, dstar, b=B):
    """S0 [(1 - f) exp(-b D) + f exp(-b D*)], written out independently of qmri."""
    s0, f, d, dstar = (np.asarray(v, dtype=float)[..., None] for v in (s0, f, d, dstar))
    return s0 * ((1 - f) * np.exp(-b * d) + f * np.exp(-b * dstar))


def marrow(n, rng):
    """Marrow / metastasis-like truth: D 0.2-1.2e-3 mm^2/s, f 0.03-0.25, D* 0.01-0.1 mm^2/s."""
    return (
        rng.uniform(0.03, 0.25, n),
        rng.uniform(0.2e-3, 1.2e-3, n),
        rng.uniform(0.01, 0.1, n),
    )


def test_full_fit_recovers_noiseless_truth_in_3d():
    rng = np.random.default_rng(3)
    f, d, dstar = (p.reshape(4, 3, 2) for p in marrow(24, rng))
    s0 = rng.uniform(200, 3000, (4, 3, 2))
    fit = IVIMModel(B, method="full").fit(ivim(s0, f, d, dstar))
    assert fit.n_failed == 0
    np.testing.assert_allclose(fit.maps["D"], d, rtol=1e-5)
    np.testing.assert_allclose(fit.maps["f"], f, rtol=1e-5)
    np.testing.assert_allclose(fit.maps["Dstar"], dstar, rtol=1e-5)
    np.testing.assert_allclose(fit.maps["S0"], s0, rtol=1e-5)
    np.testing.assert_allclose(fit.maps["R2"], 1.0, atol=1e-6)
    assert fit.units == {
        "D": "mm^2/s", "Dstar": "mm^2/s", "f": "1", "S0": "a.u.", "R2": "1", "fitmask": "1"
    }  # fmt: skip
    assert fit.maps["D"].dtype == np.float32
    assert fit.maps["fitmask"].dtype == np.uint8
    assert fit.parameter_names == ("D", "Dstar", "f", "S0")


def test_segmented_fit_is_exact_when_the_perfusion_signal_has_decayed():
    # D* = 0.08: exp(-200 D*) ~ 1e-7, so the high-b segment sees pure diffusion
    data = ivim([1000.0, 500.0], [0.1, 0.2], [4e-4, 1e-3], [0.08, 0.05])
    fit = IVIMModel(B, method="segmented").fit(data)
    np.testing.assert_allclose(fit.maps["D"], [4e-4, 1e-3], rtol=1e-4)
    np.testing.assert_allclose(fit.maps["f"], [0.1, 0.2], rtol=1e-4)
    np.testing.assert_allclose(fit.maps["Dstar"], [0.08, 0.05], rtol=1e-3)
    np.testing.assert_allclose(fit.maps["S0"], [1000.0, 500.0], rtol=1e-6)
    assert "segmented" in fit.algorithm


@pytest.mark.parametrize(
    ("method", "tol_d", "tol_f"), [("segmented", 0.06, 0.12), ("full", 0.05, 0.1)]
)
def test_noisy_marrow_median_error(method, tol_d, tol_f):
    rng = np.random.default_rng(7)
    n = 3000
    f, d, dstar = marrow(n, rng)
    clean = ivim(1000.0, f, d, dstar)
    noise = rng.normal(0, 10.0, (2, *clean.shape))  # SNR 100 at b = 0, Rician magnitude
    fit = IVIMModel(B, method=method).fit(np.hypot(clean + noise[0], noise[1]))
    ok = fit.maps["fitmask"] == 1
    assert ok.mean() > 0.9
    assert np.median(np.abs(fit.maps["D"][ok] - d[ok]) / d[ok]) < tol_d
    assert np.median(np.abs(fit.maps["f"][ok] - f[ok]) / f[ok]) < tol_f
    assert np.median(np.abs(fit.maps["Dstar"][ok] - dstar[ok]) / dstar[ok]) < 0.3
    assert fit.n_failed == int(np.count_nonzero(~ok))


def test_slightly_negative_late_samples_are_tolerated_without_warnings():
    # pure blood-like voxel: the high-b signal is noise around 0 (warnings are errors here)
    data = ivim(1.0, 0.5, 1e-3, 0.05)
    data[..., -3:] += [-0.0013, 0.0004, -0.0008]
    fit = IVIMModel(B, on_bound="keep", method="full").fit(data)
    assert int(fit.maps["fitmask"]) == 1
    assert float(fit.maps["f"]) == pytest.approx(0.5, abs=0.02)


def test_failures_are_nan_everywhere_and_counted_without_warnings():
    good = ivim(1000.0, 0.1, 5e-4, 0.05)
    data = np.repeat(good[None], 8, axis=0)
    data[1] = 0.0  # nothing to fit
    data[2] = -good  # negative signal
    data[3, 4] = np.nan  # non-finite input
    data[4] = 1000.0 * np.exp(B * 1e-3)  # growing signal: D < 0, outside the bounds
    data[5] = ivim(1000.0, 0.1, 4e-3, 0.05)  # D above its bound of 3e-3 mm^2/s
    data[6, 0] = 300.0  # S(b=0) far below the rest: f < 0
    mask = np.ones(8, dtype=bool)
    mask[7] = False
    fit = IVIMModel(B, method="segmented").fit(data, mask=mask)
    assert fit.maps["fitmask"].tolist() == [1, 0, 0, 0, 0, 0, 0, 0]
    for name in ("D", "Dstar", "f", "S0", "R2"):
        assert np.isnan(fit.maps[name][1:]).all(), name
    assert (fit.n_fitted, fit.n_failed) == (7, 6)


def test_on_bound_fail_flags_and_keep_reports_the_constrained_value():
    # true D* = 0.3 mm^2/s lies above the default upper bound of 0.2
    data = ivim([1000.0, 1000.0], [0.1, 0.1], [5e-4, 5e-4], [0.03, 0.3])
    strict = IVIMModel(B, method="full").fit(data)
    assert strict.maps["fitmask"].tolist() == [1, 0]
    assert np.isnan(strict.maps["Dstar"][1])
    kept = IVIMModel(B, method="full", on_bound="keep").fit(data)
    assert kept.maps["fitmask"].tolist() == [1, 1]
    assert float(kept.maps["Dstar"][1]) == pytest.approx(IVIM_DEFAULT_BOUNDS["Dstar"][1])
    assert kept.options["on_bound"] == "keep"


def test_repeated_b_values_are_averaged_as_trace():
    b = np.array([0.0, 0, 20, 50, 100, 300, 300, 300, 600, 600, 600])
    diag = np.array([3e-4, 6e-4, 9e-4])  # anisotropic D at the high b-values
    d_vol = np.concatenate([[5e-4] * 5, diag, diag])
    f, dstar = 0.1, 0.08
    data = 800.0 * ((1 - f) * np.exp(-b * d_vol) + f * np.exp(-b * dstar))
    fit = IVIMModel(b, method="segmented").fit(data)
    assert float(fit.maps["D"]) == pytest.approx(diag.mean(), rel=1e-3)
    assert float(fit.maps["S0"]) == pytest.approx(800.0, rel=1e-6)


@settings(max_examples=40, deadline=None)
@given(
    f=st.floats(0.03, 0.4),
    d=st.floats(2e-4, 2.5e-3),
    dstar=st.floats(0.01, 0.15),
    s0=st.floats(10.0, 1e4),
)
def test_property_full_fit_recovers_noiseless_truth(f, d, dstar, s0):
    fit = IVIMModel(B, method="full").fit(ivim(s0, f, d, dstar))
    assert int(fit.maps["fitmask"]) == 1
    np.testing.assert_allclose(
        [fit.maps["D"], fit.maps["f"], fit.maps["Dstar"], fit.maps["S0"]],
        [d, f, dstar, s0],
        rtol=1e-3,
    )


def test_options_shapes_and_immutability():
    model = IVIMModel(B, b_threshold=250, bounds={"f": (0.0, 0.5)}, method="segmented")
    before = repr(model)
    single = model.fit(ivim(900.0, 0.1, 5e-4, 0.06))
    assert single.shape == ()
    chunked = model.fit(ivim(np.full(7, 900.0), 0.1, 5e-4, 0.06), chunk_size=3)
    assert chunked.maps["D"].shape == (7,)
    assert repr(model) == before
    opts = json.loads(json.dumps(chunked.options))
    assert opts["b_threshold"] == 250
    assert opts["bounds"]["f"] == [0.0, 0.5]
    assert opts["bounds"]["D"] == list(IVIM_DEFAULT_BOUNDS["D"])
    assert "Le Bihan" in chunked.reference


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (([0.0, -10.0, 300, 500, 800],), {}, "b-values must be >= 0"),
        (([0.0, 10, 300, 1e9],), {}, "s/mm\\^2"),
        ((B,), {"b_threshold": 0.0}, "b_threshold must be > 0"),
        ((B,), {"b_threshold": 700.0}, "at least 2 at or above it"),
        (([0.0, 200, 400, 800],), {}, "at least 2 different b-values below b_threshold"),
        (([300.0, 400, 500, 800],), {}, "below b_threshold \\(200 s/mm\\^2\\)"),
        ((B,), {"method": "bayesian"}, "unknown IVIM method 'bayesian'"),
        ((B,), {"on_bound": "clip"}, "unknown on_bound 'clip'"),
        ((B,), {"bounds": {"Dp": (0.01, 0.1)}}, "unknown IVIM bound"),
        ((B,), {"bounds": {"f": (0.5, 0.2)}}, "lower < upper"),
        ((B,), {"bounds": {"f": (0.0, 1.5)}}, "outside the physical range"),
        ((B,), {"bounds": {"Dstar": (0.0, 0.1)}}, "positive lower bound"),
        ((B,), {"bounds": {"D": 0.001}}, "must be a pair"),
        (([],), {}, "no b-values"),
    ],
)
def test_construction_errors(args, kwargs, match):
    with pytest.raises(QMRIInputError, match=match):
        IVIMModel(*args, **kwargs)


def test_fit_input_errors():
    model = IVIMModel(B)
    with pytest.raises(QMRIInputError, match="data has 12 volumes but 13 b-values were given"):
        model.fit(np.ones((2, 12)))
    with pytest.raises(QMRIInputError, match=r"mask has shape \(3,\)"):
        model.fit(np.ones((2, 13)), mask=np.ones(3))
