"""Mono-exponential T2 / T2* model: recovery of known truth, failures, shapes and input errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import least_squares

from qmri.errors import QMRIInputError
from qmri.models import MonoExponentialModel

TE = np.arange(1, 11) * 0.01  # 10 echoes, 10 ms spacing


def decay(t2, s0, te):
    """S0 exp(-TE/T2), written out independently of qmri."""
    t2 = np.asarray(t2, dtype=float)[..., None]
    return np.asarray(s0, dtype=float)[..., None] * np.exp(-np.asarray(te) / t2)


@pytest.mark.parametrize("method", ["linear", "nlls"])
def test_noiseless_3d_recovers_truth(method):
    rng = np.random.default_rng(3)
    t2 = rng.uniform(0.02, 0.3, (2, 3, 4))
    s0 = rng.uniform(100, 5000, (2, 3, 4))
    fit = MonoExponentialModel(TE, method=method).fit(decay(t2, s0, TE))
    np.testing.assert_allclose(fit.maps["T2"], t2, rtol=1e-6)
    np.testing.assert_allclose(fit.maps["S0"], s0, rtol=1e-6)
    np.testing.assert_allclose(fit.maps["R2"], 1.0, atol=1e-6)
    assert fit.maps["T2"].dtype == np.float32
    assert fit.maps["fitmask"].dtype == np.uint8
    assert fit.units == {"T2": "s", "S0": "a.u.", "R2": "1", "fitmask": "1"}
    assert (fit.n_fitted, fit.n_failed) == (24, 0)


def test_t2star_only_renames_the_map():
    data = decay([0.015, 0.03], [800.0, 900.0], TE[:6] / 2)
    fit = MonoExponentialModel(TE[:6] / 2, quantity="T2star").fit(data)
    assert set(fit.maps) == {"T2star", "S0", "R2", "fitmask"}
    assert fit.units["T2star"] == "s"
    np.testing.assert_allclose(fit.maps["T2star"], [0.015, 0.03], rtol=1e-6)


def test_drop_first_echo_removes_a_corrupted_first_echo():
    data = decay([0.08, 0.12], [1000.0, 1000.0], TE)
    data[:, 0] *= 0.85  # first echo without stimulated-echo contribution
    dropped = MonoExponentialModel(TE, drop_first_echo=True).fit(data)
    np.testing.assert_allclose(dropped.maps["T2"], [0.08, 0.12], rtol=1e-6)
    kept = MonoExponentialModel(TE).fit(data)
    assert np.all(np.abs(kept.maps["T2"] - [0.08, 0.12]) / [0.08, 0.12] > 0.01)
    assert dropped.options["drop_first_echo"] is True


def test_noisy_rician_median_error_and_agreement_with_scipy():
    rng = np.random.default_rng(9)
    n = 3000
    t2 = rng.uniform(0.04, 0.2, n)
    s0 = np.full(n, 1000.0)
    clean = decay(t2, s0, TE)
    noise = rng.normal(0, 10.0, (2, *clean.shape))  # SNR 100 at TE = 0
    data = np.hypot(clean + noise[0], noise[1])
    fit = MonoExponentialModel(TE).fit(data)
    assert np.nanmedian(np.abs(fit.maps["T2"] - t2) / t2) < 0.03
    assert fit.n_failed == 0
    for i in range(5):
        ref = least_squares(
            lambda p, i=i: p[0] * np.exp(-TE / p[1]) - data[i],
            [s0[i], t2[i]],
            method="lm",
            xtol=1e-14,
            ftol=1e-14,
        )
        np.testing.assert_allclose(fit.maps["T2"][i], ref.x[1], rtol=2e-6)
        np.testing.assert_allclose(fit.maps["S0"][i], ref.x[0], rtol=2e-6)


@settings(max_examples=40, deadline=None)
@given(
    t2=st.floats(0.01, 0.5),
    s0=st.floats(10.0, 1e4),
    n_echoes=st.integers(3, 16),
    spacing=st.floats(0.002, 0.02),
    first=st.floats(0.002, 0.02),
)
def test_property_noiseless_recovery(t2, s0, n_echoes, spacing, first):
    te = first + spacing * np.arange(n_echoes)
    fit = MonoExponentialModel(te).fit(decay(t2, s0, te))
    assert fit.maps["fitmask"] == 1
    np.testing.assert_allclose(fit.maps["T2"], t2, rtol=1e-6)
    np.testing.assert_allclose(fit.maps["S0"], s0, rtol=1e-6)


def test_mask_zero_and_garbage_voxels_fail_as_nan():
    data = decay(np.full(6, 0.08), np.full(6, 1000.0), TE)
    data[1] = 0.0
    data[2, 4] = np.nan
    data[3] = np.linspace(10, 1000, TE.size)  # growing "decay": T2 < 0
    data[4] = -data[0]
    mask = np.array([True, True, True, True, True, False])
    for method in ("linear", "nlls"):
        fit = MonoExponentialModel(TE, method=method).fit(data, mask=mask)
        assert fit.maps["fitmask"].tolist() == [1, 0, 0, 0, 0, 0]
        for name in ("T2", "S0", "R2"):
            assert np.isnan(fit.maps[name][1:]).all(), name
        assert (fit.n_fitted, fit.n_failed) == (5, 4)


def test_t2_above_bound_fails():
    fit = MonoExponentialModel(TE).fit(decay([0.1, 50.0], [1000.0, 1000.0], TE))
    assert fit.maps["fitmask"].tolist() == [1, 0]


def test_shapes_and_immutability():
    model = MonoExponentialModel(TE)
    before = repr(model)
    single = model.fit(decay(0.05, 700.0, TE))
    assert single.shape == ()
    assert float(single.maps["T2"]) == pytest.approx(0.05, rel=1e-6)
    two_d = model.fit(decay(np.full(4, 0.05), np.full(4, 700.0), TE), chunk_size=3)
    assert two_d.maps["T2"].shape == (4,)
    assert repr(model) == before
    opts = json.loads(json.dumps(two_d.options))
    assert opts["echo_times_s"] == pytest.approx(TE.tolist())
    assert opts["quantity"] == "T2"


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (([0.01],), {}, "at least 2 echoes, got 1"),
        (([0.01, 0.02],), {"drop_first_echo": True}, "after dropping the first echo"),
        (([0.02, 0.01, 0.03],), {}, "strictly increasing"),
        (([0.01, 0.01, 0.03],), {}, "strictly increasing"),
        (([0.0, 0.01, 0.02],), {}, "must be positive"),
        (([-0.01, 0.01],), {}, "must be positive"),
        (([10.0, 20.0, 30.0],), {}, "not ms"),
        ((TE,), {"quantity": "T1"}, "unknown quantity 'T1'"),
        ((TE,), {"method": "fast"}, "unknown method 'fast'"),
    ],
)
def test_construction_errors(args, kwargs, match):
    with pytest.raises(QMRIInputError, match=match):
        MonoExponentialModel(*args, **kwargs)


def test_fit_input_errors():
    model = MonoExponentialModel(TE)
    with pytest.raises(QMRIInputError, match="data has 9 volumes but 10 echo times were given"):
        model.fit(np.ones((2, 9)))
    with pytest.raises(QMRIInputError, match=r"mask has shape \(3,\)"):
        model.fit(np.ones((2, 10)), mask=np.ones(3))


# ---------------------------------------------------------------------------- noise floor
TE_LONG = np.arange(1, 13) * 0.01  # 12 echoes to 120 ms: short-T2 tissue reaches the floor


def test_noise_floor_noiseless_recovery_and_maps():
    rng = np.random.default_rng(4)
    t2 = rng.uniform(0.015, 0.08, (2, 3, 4))
    s0 = rng.uniform(500, 3000, (2, 3, 4))
    c = rng.uniform(5, 50, (2, 3, 4))
    model = MonoExponentialModel(TE_LONG, noise_floor=True)
    fit = model.fit(decay(t2, s0, TE_LONG) + c[..., None])
    np.testing.assert_allclose(fit.maps["T2"], t2, rtol=1e-5)
    np.testing.assert_allclose(fit.maps["S0"], s0, rtol=1e-5)
    np.testing.assert_allclose(fit.maps["noisefloor"], c, rtol=1e-4)
    assert fit.n_failed == 0
    assert fit.parameter_names == ("T2", "S0", "noisefloor")
    assert fit.units == {"T2": "s", "S0": "a.u.", "noisefloor": "a.u.", "R2": "1", "fitmask": "1"}
    assert fit.maps["noisefloor"].dtype == np.float32
    opts = json.loads(json.dumps(fit.options))
    assert opts["noise_floor"] is True
    assert opts["start_echoes"] == 6
    assert "+ c" in fit.algorithm
    np.testing.assert_allclose(
        model.predict({"T2": 0.05, "S0": 100.0, "noisefloor": 7.0}),
        decay(0.05, 100.0, TE_LONG) + 7.0,
    )


def test_noise_floor_zero_is_a_valid_result():
    data = decay([0.03, 0.06, 0.2], [1000.0, 800.0, 1200.0], TE_LONG)
    fit = MonoExponentialModel(TE_LONG, noise_floor=True).fit(data)
    assert fit.maps["fitmask"].tolist() == [1, 1, 1]  # c on its lower bound 0 is not a failure
    np.testing.assert_allclose(fit.maps["T2"], [0.03, 0.06, 0.2], rtol=1e-5)
    np.testing.assert_allclose(fit.maps["noisefloor"], 0.0, atol=1e-3)
    plain = MonoExponentialModel(TE_LONG).fit(data)
    assert plain.options["noise_floor"] is False
    assert "noisefloor" not in plain.maps


def test_noise_floor_removes_the_bias_of_a_constant_offset():
    rng = np.random.default_rng(17)
    n = 3000
    t2 = rng.uniform(0.015, 0.03, n)
    clean = decay(t2, np.full(n, 1000.0), TE_LONG) + 50.0  # late echoes sit on a plateau
    data = clean + rng.normal(0, 10.0, clean.shape)
    plain = MonoExponentialModel(TE_LONG).fit(data)
    floor = MonoExponentialModel(TE_LONG, noise_floor=True).fit(data)
    assert np.nanmedian(plain.maps["T2"] / t2 - 1) > 0.2  # the plateau drags T2 up
    assert abs(np.nanmedian(floor.maps["T2"] / t2 - 1)) < 0.01
    assert np.nanmedian(np.abs(floor.maps["T2"] / t2 - 1)) < 0.05
    assert floor.n_failed == 0
    assert np.nanmedian(floor.maps["noisefloor"]) == pytest.approx(50.0, rel=0.05)


def test_noise_floor_on_rician_noise_overcorrects():
    """Documented limitation: the Rician bias is not a constant, so a constant floor overshoots."""
    rng = np.random.default_rng(17)
    n = 2000
    t2 = rng.uniform(0.015, 0.03, n)
    clean = decay(t2, np.full(n, 1000.0), TE_LONG)
    noise = rng.normal(0, 40.0, (2, *clean.shape))  # SNR 25 at TE = 0
    data = np.hypot(clean + noise[0], noise[1])
    plain = MonoExponentialModel(TE_LONG).fit(data)
    floor = MonoExponentialModel(TE_LONG, noise_floor=True).fit(data)
    assert np.nanmedian(plain.maps["T2"] / t2 - 1) > 0.05  # magnitude bias: T2 too long
    assert np.nanmedian(floor.maps["T2"] / t2 - 1) < -0.05  # constant floor: T2 too short


def test_noise_floor_matches_scipy_least_squares():
    rng = np.random.default_rng(2)
    t2 = np.array([0.02, 0.04, 0.07, 0.03])
    s0 = np.array([900.0, 1500.0, 700.0, 1200.0])
    data = decay(t2, s0, TE_LONG) + 30.0 + rng.normal(0, 5.0, (4, TE_LONG.size))
    fit = MonoExponentialModel(TE_LONG, noise_floor=True).fit(data)
    for i in range(t2.size):
        ref = least_squares(
            lambda p, i=i: p[0] * np.exp(-TE_LONG / p[1]) + p[2] - data[i],
            [s0[i], t2[i], 30.0],
            method="lm",
            xtol=1e-14,
            ftol=1e-14,
        )
        assert ref.x[2] > 0  # interior optimum: the bound c >= 0 is inactive
        np.testing.assert_allclose(fit.maps["T2"][i], ref.x[1], rtol=2e-5)
        np.testing.assert_allclose(fit.maps["noisefloor"][i], ref.x[2], rtol=2e-4)


def test_t2star_with_noise_floor_and_drop_first_echo():
    te = np.arange(1, 9) * 0.004  # MEGRE, 8 echoes
    data = decay([0.006, 0.012], [900.0, 900.0], te) + 15.0
    data[:, 0] *= 1.3  # corrupted first echo
    fit = MonoExponentialModel(te, quantity="T2star", noise_floor=True, drop_first_echo=True).fit(
        data
    )
    assert set(fit.maps) == {"T2star", "S0", "noisefloor", "R2", "fitmask"}
    assert fit.units["T2star"] == "s"
    np.testing.assert_allclose(fit.maps["T2star"], [0.006, 0.012], rtol=1e-5)
    np.testing.assert_allclose(fit.maps["noisefloor"], 15.0, rtol=1e-4)
    assert fit.options["quantity"] == "T2star"
    assert fit.options["drop_first_echo"] is True


def test_noise_floor_failures_are_nan():
    data = decay(np.full(4, 0.03), np.full(4, 1000.0), TE_LONG) + 10.0
    data[1] = 0.0
    data[2, 5] = np.inf
    data[3] = np.linspace(10, 1000, TE_LONG.size)  # growing signal
    fit = MonoExponentialModel(TE_LONG, noise_floor=True).fit(data)
    assert fit.maps["fitmask"].tolist() == [1, 0, 0, 0]
    assert np.isnan(fit.maps["noisefloor"][1:]).all()


@settings(max_examples=30, deadline=None)
@given(
    t2=st.floats(0.01, 0.1),
    s0=st.floats(10.0, 1e4),
    floor=st.floats(0.0, 0.2),
    n_echoes=st.integers(6, 16),
)
def test_property_noise_floor_noiseless_recovery(t2, s0, floor, n_echoes):
    te = np.linspace(0.005, 0.4, n_echoes)
    data = decay(t2, s0, te) + floor * s0
    fit = MonoExponentialModel(te, noise_floor=True).fit(data)
    assert fit.maps["fitmask"] == 1
    np.testing.assert_allclose(fit.maps["T2"], t2, rtol=1e-5)
    np.testing.assert_allclose(fit.maps["noisefloor"], floor * s0, rtol=1e-4, atol=1e-4 * s0)


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((TE,), {"noise_floor": True, "method": "linear"}, "noise_floor needs method='nlls'"),
        (([0.01, 0.02, 0.03],), {"noise_floor": True}, "at least 4 echoes, got 3"),
        (
            ([0.01, 0.02, 0.03, 0.04],),
            {"noise_floor": True, "drop_first_echo": True},
            "at least 4 echoes, got 3 after dropping the first echo",
        ),
        ((TE,), {"noise_floor": "yes"}, "noise_floor must be true or false"),
    ],
)
def test_noise_floor_construction_errors(args, kwargs, match):
    with pytest.raises(QMRIInputError, match=match):
        MonoExponentialModel(*args, **kwargs)
