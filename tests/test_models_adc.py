"""ADC model: recovery of known truth, b-range selection, directions, failures and errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qmri.errors import QMRIInputError
from qmri.models import ADCModel

B = np.array([0.0, 50.0, 100.0, 200.0, 400.0, 600.0, 800.0, 1000.0])


def dwi(adc, s0, b):
    """S0 exp(-b ADC), written out independently of qmri."""
    return np.asarray(s0, dtype=float)[..., None] * np.exp(
        -np.asarray(b) * np.asarray(adc, dtype=float)[..., None]
    )


def test_noiseless_3d_recovers_truth():
    rng = np.random.default_rng(4)
    adc = rng.uniform(1e-4, 3e-3, (3, 2, 4))
    s0 = rng.uniform(100, 5000, (3, 2, 4))
    fit = ADCModel(B, b_min=0, b_max=None).fit(dwi(adc, s0, B))
    np.testing.assert_allclose(fit.maps["ADC"], adc, rtol=1e-6)
    np.testing.assert_allclose(fit.maps["S0"], s0, rtol=1e-6)
    np.testing.assert_allclose(fit.maps["R2"], 1.0, atol=1e-6)
    assert fit.units == {"ADC": "mm^2/s", "S0": "a.u.", "R2": "1", "fitmask": "1"}
    assert fit.maps["ADC"].dtype == np.float32
    assert fit.maps["fitmask"].dtype == np.uint8


def test_b_min_excludes_the_perfusion_compartment():
    d, d_star, f, s0 = 1.0e-3, 0.1, 0.15, 1000.0
    data = s0 * ((1 - f) * np.exp(-B * d) + f * np.exp(-B * d_star))
    high = ADCModel(B, b_min=200).fit(data)
    assert float(high.maps["ADC"]) == pytest.approx(d, rel=1e-6)
    assert float(high.maps["S0"]) == pytest.approx(s0 * (1 - f), rel=1e-6)
    assert high.options["volumes_used"] == 5
    everything = ADCModel(B, b_min=0, b_max=None).fit(data)
    assert float(everything.maps["ADC"]) > 1.05 * d  # perfusion inflates the ADC
    capped = ADCModel(B, b_min=200, b_max=600).fit(data)
    assert capped.options["volumes_used"] == 3
    assert float(capped.maps["ADC"]) == pytest.approx(d, rel=1e-6)


def test_defaults_are_the_workflow_b_range():
    model = ADCModel(B)
    assert (model.b_min, model.b_max) == (200.0, 1000.0)
    assert model.used_volumes.tolist() == [False, False, False, True, True, True, True, True]


def test_b_range_selects_whole_shells():
    # scanners report one b-value per direction (e.g. 987-1003 s/mm^2 for a nominal 1000): a
    # limit inside a shell must not split it, or the trace ADC loses directions
    b = np.array([0.0, 0.0, 495, 500, 508, 990, 996, 1004])
    diag = np.array([0.4e-3, 1.1e-3, 1.9e-3])
    data = 900.0 * np.exp(-b * np.concatenate([[0.0, 0.0], diag, diag]))
    default = ADCModel(b)
    assert default.used_volumes.tolist() == [False, False, True, True, True, True, True, True]
    assert default.options["volumes_used"] == 6
    inside = ADCModel(b, b_min=498, b_max=997)  # shell means 501 and 996.7
    assert inside.used_volumes.tolist() == default.used_volumes.tolist()
    assert np.array_equal(inside.fit(data).maps["ADC"], default.fit(data).maps["ADC"])
    assert ADCModel(b, b_min=0, b_max=996).used_volumes.tolist() == [True] * 5 + [False] * 3
    with pytest.raises(QMRIInputError, match="at least 2 different b-values"):
        ADCModel(b, b_min=502, b_max=1100)  # only the b ~ 1000 shell


def test_orthogonal_directions_give_the_trace_adc():
    b = np.array([0.0, 500, 500, 500, 1000, 1000, 1000])
    diag = np.array([0.4e-3, 1.1e-3, 1.9e-3])  # anisotropic: Dxx, Dyy, Dzz
    data = 900.0 * np.exp(-b * np.concatenate([[0.0], diag, diag]))
    fit = ADCModel(b, b_min=0, b_max=None).fit(data)
    assert float(fit.maps["ADC"]) == pytest.approx(diag.mean(), rel=1e-6)
    assert float(fit.maps["S0"]) == pytest.approx(900.0, rel=1e-6)
    assert float(fit.maps["R2"]) == pytest.approx(1.0, abs=1e-6)


def test_noisy_median_error():
    rng = np.random.default_rng(12)
    n = 4000
    adc = rng.uniform(5e-4, 2e-3, n)
    clean = dwi(adc, np.full(n, 1000.0), B)
    noise = rng.normal(0, 10.0, (2, *clean.shape))  # SNR 100 at b = 0
    fit = ADCModel(B, b_min=200).fit(np.hypot(clean + noise[0], noise[1]))
    assert np.nanmedian(np.abs(fit.maps["ADC"] - adc) / adc) < 0.03
    assert fit.n_failed == 0


@settings(max_examples=50, deadline=None)
@given(
    adc=st.floats(1e-4, 3e-3),
    s0=st.floats(10.0, 1e4),
    bvals=st.lists(st.integers(0, 30).map(lambda k: 50.0 * k), min_size=2, max_size=8),
)
def test_property_noiseless_recovery(adc, s0, bvals):
    bvals = np.array(bvals)
    if np.unique(bvals).size < 2:
        with pytest.raises(QMRIInputError, match="at least 2 different b-values"):
            ADCModel(bvals, b_min=0, b_max=None)
        return
    fit = ADCModel(bvals, b_min=0, b_max=None).fit(dwi(adc, s0, bvals))
    assert fit.maps["fitmask"] == 1
    np.testing.assert_allclose(fit.maps["ADC"], adc, rtol=1e-6)
    np.testing.assert_allclose(fit.maps["S0"], s0, rtol=1e-6)


def test_zero_negative_and_garbage_signal_fail_without_warnings():
    data = dwi(np.full(7, 1e-3), np.full(7, 1000.0), B)
    data[1] = 0.0  # all zero: nothing to take a log of
    data[2] = -data[0]  # negative
    data[3] = [5, 0, 0, 0, 0, 0, 0, 0]  # one positive volume only
    data[4] = 1000.0 * np.exp(B * 2e-3)  # growing signal: clearly negative ADC
    data[5, 2] = np.inf
    mask = np.ones(7)
    mask[6] = 0
    # warnings are errors in this test suite
    fit = ADCModel(B, b_min=0, b_max=None).fit(data, mask=mask)
    assert fit.maps["fitmask"].tolist() == [1, 0, 0, 0, 0, 0, 0]
    for name in ("ADC", "S0", "R2"):
        assert np.isnan(fit.maps[name][1:]).all(), name
    assert (fit.n_fitted, fit.n_failed) == (6, 5)


def test_some_non_positive_volumes_are_ignored():
    data = dwi(1.2e-3, 800.0, B)
    data[2] = 0.0
    data[5] = -3.0
    fit = ADCModel(B, b_min=0, b_max=None).fit(data)
    assert float(fit.maps["ADC"]) == pytest.approx(1.2e-3, rel=1e-6)


def test_adc_above_bound_fails_and_tiny_negative_is_kept():
    data = dwi([1e-3, 8e-3, -2e-6], [1000.0, 1000.0, 1000.0], B)
    fit = ADCModel(B, b_min=0, b_max=None).fit(data)
    assert fit.maps["fitmask"].tolist() == [1, 0, 1]
    assert float(fit.maps["ADC"][2]) == pytest.approx(-2e-6, rel=1e-5)


def test_shapes_options_and_immutability():
    model = ADCModel(B, b_min=100, b_max=None)
    before = repr(model)
    single = model.fit(dwi(7e-4, 500.0, B))
    assert single.shape == ()
    assert float(single.maps["ADC"]) == pytest.approx(7e-4, rel=1e-6)
    two_d = model.fit(dwi(np.full(5, 7e-4), np.full(5, 500.0), B), chunk_size=2)
    assert two_d.maps["ADC"].shape == (5,)
    assert repr(model) == before
    opts = json.loads(json.dumps(two_d.options))
    assert opts["b_min"] == 100
    assert opts["b_max"] is None
    assert "Veraart" in two_d.reference


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (([0.0, -100.0, 1000.0],), {}, "b-values must be >= 0"),
        (([0.0, 1e9],), {}, "s/mm\\^2"),
        ((B,), {"b_min": -1.0}, "b_min must be >= 0"),
        ((B,), {"b_min": 500.0, "b_max": 400.0}, "smaller than b_min"),
        ((B,), {"b_min": 1000.0}, "at least 2 different b-values"),
        (([1000.0, 1000.0, 1000.0],), {}, "at least 2 different b-values"),
        (([],), {}, "no b-values"),
    ],
)
def test_construction_errors(args, kwargs, match):
    with pytest.raises(QMRIInputError, match=match):
        ADCModel(*args, **kwargs)


def test_fit_input_errors():
    model = ADCModel(B)
    with pytest.raises(QMRIInputError, match="data has 7 volumes but 8 b-values were given"):
        model.fit(np.ones((3, 3, 7)))
    with pytest.raises(QMRIInputError, match=r"mask has shape \(3, 2\)"):
        model.fit(np.ones((3, 3, 8)), mask=np.ones((3, 2)))
    with pytest.raises(QMRIInputError, match="real numbers"):
        model.fit(np.ones((3, 8), dtype=bool))
