"""Inversion-recovery T1 (RD-NLS-PR): recovery of known truth, polarity, failures, input errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qmri.errors import QMRIInputError
from qmri.models import InversionRecoveryModel, ModelFit

TI = np.array([0.05, 0.15, 0.4, 0.8, 1.5, 3.0])


def ir(t1, m0, ti, eff=1.0, tr=None):
    """Signed IR signal M0 (1 + d E_TR - (1 + d) exp(-TI/T1)), independent of qmri."""
    t1, m0, eff = (np.asarray(v, dtype=float)[..., None] for v in (t1, m0, eff))
    e_tr = 0.0 if tr is None else np.exp(-tr / t1)
    return m0 * (1 + eff * e_tr - (1 + eff) * np.exp(-np.asarray(ti, dtype=float) / t1))


def rician(signal, sigma, rng):
    noise = rng.normal(0, sigma, (2, *signal.shape))
    return np.hypot(signal + noise[0], noise[1])


def magnitude_cost(t1, a, b, y, ti):
    return np.sum((np.abs(a + b * np.exp(-ti / t1)) - y) ** 2)


@pytest.mark.parametrize("n_ti", [4, 6, 8])
def test_noiseless_recovery_over_t1_range(n_ti):
    ti = np.geomspace(0.04, 4.0, n_ti)
    rng = np.random.default_rng(n_ti)
    t1 = np.geomspace(0.2, 3.0, 40)
    m0 = rng.uniform(200, 5000, t1.size)
    eff = rng.uniform(0.8, 1.0, t1.size)
    fit = InversionRecoveryModel(ti).fit(np.abs(ir(t1, m0, ti, eff)))
    assert isinstance(fit, ModelFit)
    assert fit.n_failed == 0
    np.testing.assert_allclose(fit.maps["T1"], t1, rtol=1e-5)
    np.testing.assert_allclose(fit.maps["M0"], m0, rtol=1e-5)
    np.testing.assert_allclose(fit.maps["InvEff"], eff, atol=1e-5)
    np.testing.assert_allclose(fit.maps["R2"], 1.0, atol=1e-6)
    assert fit.maps["T1"].dtype == np.float32
    assert fit.maps["fitmask"].dtype == np.uint8
    assert fit.units == {"T1": "s", "M0": "a.u.", "InvEff": "1", "R2": "1", "fitmask": "1"}


def test_finite_tr_gives_m0_and_efficiency():
    tr = 2.5
    ti = TI[:-1]  # TR must exceed the last TI
    t1 = np.array([0.3, 0.8, 1.5, 2.5])
    m0 = np.array([1000.0, 1500.0, 800.0, 2000.0])
    eff = np.array([0.95, 0.9, 1.0, 0.85])
    data = np.abs(ir(t1, m0, ti, eff, tr))
    fit = InversionRecoveryModel(ti, tr_s=tr).fit(data)
    np.testing.assert_allclose(fit.maps["T1"], t1, rtol=1e-5)
    np.testing.assert_allclose(fit.maps["M0"], m0, rtol=1e-5)
    np.testing.assert_allclose(fit.maps["InvEff"], eff, atol=1e-5)
    # without TR, T1 is unchanged but M0 = a and the efficiency absorb the incomplete recovery
    no_tr = InversionRecoveryModel(ti).fit(data)
    np.testing.assert_allclose(no_tr.maps["T1"], t1, rtol=1e-5)
    assert np.all(no_tr.maps["InvEff"] < eff)


def test_polarity_restoration_places_the_null_near_the_minimum():
    t1 = np.array([0.25, 0.6, 1.0, 1.8, 2.8])  # null points T1 ln 2 from 0.17 to 1.9 s
    data = np.abs(ir(t1, np.full(t1.size, 1000.0), TI))
    fit = InversionRecoveryModel(TI).fit(data)
    m0, eff = fit.maps["M0"].astype(float), fit.maps["InvEff"].astype(float)
    null = fit.maps["T1"] * np.log(1.0 + eff)  # a + b exp(-TI/T1) = 0 with M0 = a
    k = np.argmin(data, axis=1)
    lo = TI[np.maximum(k - 1, 0)]
    hi = TI[np.minimum(k + 1, TI.size - 1)]
    assert np.all((null >= lo) & (null <= hi))
    signed = m0[:, None] * (1 - (1 + eff[:, None]) * np.exp(-TI / fit.maps["T1"][:, None]))
    np.testing.assert_allclose(signed, ir(t1, 1000.0, TI), rtol=1e-5, atol=1e-3)
    # fitting the magnitude as if it were all positive gives a useless T1
    naive = np.polyfit(TI, np.log(data[2]), 1)
    assert abs(-1 / naive[0] - t1[2]) / t1[2] > 0.5


def test_minimum_sample_near_zero_takes_the_right_polarity():
    # null point a hair before or after a TI: the minimum sample is almost 0 either way
    t1 = 0.8 / np.log(2.0) * np.array([0.999, 0.9999, 1.0001, 1.001])
    fit = InversionRecoveryModel(TI).fit(np.abs(ir(t1, 1000.0, TI)))
    np.testing.assert_allclose(fit.maps["T1"], t1, rtol=1e-5)


def test_noisy_accuracy_and_global_optimum():
    rng = np.random.default_rng(21)
    n = 4000
    t1 = rng.uniform(0.2, 3.0, n)
    m0 = np.full(n, 1000.0)
    eff = rng.uniform(0.85, 1.0, n)
    data = rician(ir(t1, m0, TI, eff), 10.0, rng)  # SNR 100
    fit = InversionRecoveryModel(TI).fit(data)
    rel = np.abs(fit.maps["T1"] - t1) / t1
    assert fit.n_failed == 0
    assert np.median(rel) < 0.03  # the per-voxel optimum itself is at 0.021 here
    assert np.percentile(rel, 95) < 0.12
    # no voxel is stuck in a wrong polarity: our magnitude residual is no larger than the best
    # signed residual of a dense brute-force search over T1 and every polarity pattern (every
    # number of leading negative samples), written independently with b <= 0 (recovery)
    e = np.exp(-TI[None, :] / np.geomspace(0.05, 8.0, 4000)[:, None])  # (grid, ti)
    ec = e - e.mean(axis=1, keepdims=True)
    for i in range(40):
        best = np.inf
        for k in range(TI.size + 1):
            y = np.where(np.arange(TI.size) < k, -data[i], data[i])
            b = np.minimum(ec @ y / np.sum(ec * ec, axis=1), 0.0)
            a = y.mean() - b * e.mean(axis=1)
            best = min(best, np.min(np.sum((a[:, None] + b[:, None] * e - y) ** 2, axis=1)))
        m0, eff, t1_fit = (float(fit.maps[name][i]) for name in ("M0", "InvEff", "T1"))
        ours = magnitude_cost(t1_fit, m0, -m0 * (1 + eff), data[i], TI)
        assert ours <= best * (1 + 1e-6), i


@settings(max_examples=40, deadline=None)
@given(
    t1=st.floats(0.2, 3.0),
    m0=st.floats(10.0, 1e4),
    eff=st.floats(0.6, 1.0),
    n_ti=st.integers(4, 8),
    ti_first=st.floats(0.02, 0.15),
    ti_last=st.floats(2.0, 5.0),
)
def test_property_noiseless_recovery(t1, m0, eff, n_ti, ti_first, ti_last):
    ti = np.geomspace(ti_first, ti_last, n_ti)
    fit = InversionRecoveryModel(ti).fit(np.abs(ir(t1, m0, ti, eff)))
    assert fit.maps["fitmask"] == 1
    np.testing.assert_allclose(fit.maps["T1"], t1, rtol=1e-5)
    np.testing.assert_allclose(fit.maps["M0"], m0, rtol=1e-5)


def test_failures_are_flagged_as_nan():
    data = np.abs(ir(np.full(7, 1.0), np.full(7, 1000.0), TI))
    data[1] = 0.0  # all zero
    data[2, 3] = np.nan  # non-finite sample
    data[3] = 1000.0 * np.exp(-TI / 0.5)  # pure decay: not an inversion recovery
    data[4] = np.abs(ir(30.0, 1000.0, TI))  # T1 far above the bound
    data[5] = 500.0  # constant signal: T1 undetermined
    mask = np.array([1, 1, 1, 1, 1, 1, 0])
    fit = InversionRecoveryModel(TI).fit(data, mask=mask)
    assert fit.maps["fitmask"].tolist() == [1, 0, 0, 0, 0, 0, 0]
    for name in ("T1", "M0", "InvEff", "R2"):
        assert np.isnan(fit.maps[name][1:]).all(), name
    assert (fit.n_fitted, fit.n_failed) == (6, 5)


def test_shapes_chunking_and_provenance():
    rng = np.random.default_rng(3)
    t1 = rng.uniform(0.3, 2.5, (3, 4, 5))
    data = np.abs(ir(t1, 1000.0, TI))
    model = InversionRecoveryModel(TI)
    before = repr(model)
    fit = model.fit(data)
    assert fit.shape == (3, 4, 5)
    np.testing.assert_allclose(fit.maps["T1"], t1, rtol=1e-5)
    small = model.fit(data, chunk_size=7)
    for name in ("T1", "M0", "InvEff", "R2", "fitmask"):
        np.testing.assert_array_equal(small.maps[name], fit.maps[name])
    single = model.fit(data[0, 0, 0])
    assert single.shape == ()
    assert float(single.maps["T1"]) == pytest.approx(t1[0, 0, 0], rel=1e-5)
    signed = model.fit(ir(t1, 1000.0, TI))  # phase-corrected real data work the same
    np.testing.assert_allclose(signed.maps["T1"], fit.maps["T1"], rtol=1e-6)
    assert repr(model) == before
    assert "polarity" in fit.algorithm
    assert "Barral" in fit.reference
    opts = json.loads(json.dumps(fit.options))
    assert opts["inversion_times_s"] == TI.tolist()
    assert opts["method"] == "rd-nls"
    assert opts["tr_s"] is None
    assert fit.parameter_names == ("T1", "M0", "InvEff")
    with pytest.raises(ValueError, match="read-only"):
        model.inversion_times_s[0] = 1.0


def test_predict_matches_independent_formula():
    model = InversionRecoveryModel(TI, tr_s=4.0)
    np.testing.assert_allclose(
        model.predict({"T1": np.array([0.7]), "M0": np.array([900.0]), "InvEff": np.array([0.9])}),
        np.abs(ir([0.7], [900.0], TI, [0.9], 4.0)),
        rtol=1e-12,
    )


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (([0.1, 0.5, 1.0],), {}, "at least 4 inversion times, got 3"),
        (([0.1, 0.5, 0.3, 1.0],), {}, "strictly increasing"),
        (([0.1, 0.5, 0.5, 1.0],), {}, "strictly increasing"),
        (([0.0, 0.5, 1.0, 2.0],), {}, "must be positive"),
        (([100.0, 500.0, 1000.0, 2000.0],), {}, "not ms"),
        (([0.1, np.nan, 1.0, 2.0],), {}, "finite"),
        ((TI,), {"tr_s": 2.0}, "longer than the last inversion time"),
        ((TI,), {"tr_s": 5000.0}, "not ms"),
        ((TI,), {"tr_s": "x"}, "TR must be a number"),
        ((TI,), {"method": "nls"}, "unknown inversion-recovery method 'nls'"),
    ],
)
def test_construction_errors(args, kwargs, match):
    with pytest.raises(QMRIInputError, match=match):
        InversionRecoveryModel(*args, **kwargs)


def test_fit_input_errors():
    model = InversionRecoveryModel(TI)
    with pytest.raises(
        QMRIInputError, match="data has 5 volumes but 6 inversion times were given"
    ):
        model.fit(np.ones((2, 5)))
    with pytest.raises(QMRIInputError, match=r"mask has shape \(3,\)"):
        model.fit(np.ones((2, 6)), mask=np.ones(3))
    with pytest.raises(QMRIInputError, match="real numbers"):
        model.fit(np.ones((2, 6), dtype=complex))
