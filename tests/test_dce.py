"""DCE: signal to concentration, relaxivity, AIFs, bolus arrival, kinetic models, iAUC maps."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qmri.errors import QMRIInputError
from qmri.models.base import ModelFit
from qmri.models.dce import (
    DCE_MODELS,
    ArterialInputFunction,
    DCEFit,
    ExtendedToftsModel,
    PatlakModel,
    SemiQuantitativeFit,
    ToftsModel,
    _linear_start,
    aif_from_blood_curve,
    detect_bolus_arrival,
    exp_convolution,
    mean_curve,
    parker_aif,
    parker_blood_concentration,
    read_aif_tsv,
    relaxivity,
    semiquantitative_maps,
    signal_to_concentration,
)

T = np.arange(0.0, 300.0, 2.5)  # frame times (s)
FA, TR = 15.0, 0.004
HCT = 0.42  # large-vessel hematocrit (the workflow's default)


def spgr(t1, fa_deg, tr, m0=1000.0):
    """SPGR signal written out independently of qmri."""
    a = np.deg2rad(fa_deg)
    e1 = np.exp(-tr / t1)
    return m0 * np.sin(a) * (1 - e1) / (1 - np.cos(a) * e1)


@pytest.fixture(scope="module")
def aif():
    return parker_aif(T, delay_s=30.0, hematocrit=HCT)


# ------------------------------------------------------------------------------ concentration
def test_signal_to_concentration_roundtrip_with_b1():
    rng = np.random.default_rng(1)
    shape = (3, 4)
    t10 = rng.uniform(0.6, 1.6, shape)
    b1 = rng.uniform(0.8, 1.2, shape)
    conc = np.zeros((*shape, T.size))
    conc[..., 12:] = rng.uniform(0.05, 1.0, (*shape, 1)) * np.linspace(1, 0.5, T.size - 12)
    r1 = 3.7
    t1 = 1.0 / (1.0 / t10[..., None] + r1 * conc)
    sig = spgr(t1, FA * b1[..., None], TR)
    res = signal_to_concentration(
        sig, t10, FA, TR, baseline_frames=10, agent="gadoteridol", field_strength_t=2.89, b1=b1
    )
    np.testing.assert_allclose(res.concentration, conc, atol=1e-9)
    assert res.n_uninvertible == 0
    assert res.options["r1_per_mM_per_s"] == 3.7
    assert "Rohrer" in res.options["r1_source"]
    assert res.options["b1_corrected"] is True
    assert res.options["baseline_skip_first_frame"] is False
    # without the B1 map the answer is biased
    biased = signal_to_concentration(sig, t10, FA, TR, baseline_frames=10, r1=3.7)
    assert np.nanmax(np.abs(biased.concentration - conc)) > 1e-3


def test_signal_above_spgr_maximum_is_nan():
    sig = np.full((2, 6), 100.0)
    sig[0, 4] = 1e6  # above M0 sin(alpha): not invertible
    sig[1, 5] = -1.0  # negative signal: not invertible
    res = signal_to_concentration(sig, np.array([1.0, 1.0]), FA, TR, baseline_frames=3, r1=4.0)
    assert np.isnan(res.concentration[0, 4])
    assert np.isnan(res.concentration[1, 5])
    assert res.n_uninvertible == 2
    assert np.isfinite(res.concentration[0, :4]).all()


def test_float32_input_gives_float32_and_mask():
    sig = np.full((2, 2, 5), 50.0, dtype=np.float32)
    res = signal_to_concentration(
        sig, np.ones((2, 2)), FA, TR, baseline_frames=2, r1=4.0, mask=np.eye(2)
    )
    assert res.concentration.dtype == np.float32
    assert np.isnan(res.concentration[0, 1]).all()
    assert np.isfinite(res.concentration[0, 0]).all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"t10_s": np.ones(3)}, "T1 map has shape"),
        ({"baseline_frames": 0}, "baseline frames must be between 1 and 5"),
        ({"baseline_frames": 6}, "baseline frames must be between"),
        ({"baseline_frames": 1, "skip_first_frame": True}, "between 2 and 5"),
        ({"r1": None, "agent": "unobtainium"}, "known agents: gadobenate, gadobutrol"),
        ({"r1": -1.0}, "r1 must be positive"),
        ({"tr_s": 4.0}, "give seconds"),
    ],
)
def test_signal_to_concentration_errors(kwargs, match):
    args = {"t10_s": np.ones(2), "baseline_frames": 2, "r1": 4.0, "tr_s": TR}
    args.update(kwargs)
    with pytest.raises(QMRIInputError, match=match) as info:
        signal_to_concentration(np.ones((2, 6)), args.pop("t10_s"), FA, **args)
    assert "\n" not in str(info.value)


def test_relaxivity_table():
    assert relaxivity("gadoteridol", 1.5)[0] == 4.1
    assert relaxivity("Gadovist", 3.0)[0] == 5.0
    assert relaxivity("gadoterate", 3)[0] == 3.5
    assert relaxivity("MultiHance", 1.5)[0] == 6.3
    assert relaxivity("Gd-DTPA", 3.0)[0] == 3.7
    with pytest.raises(QMRIInputError, match=r"known: 1\.5 T, 3 T"):
        relaxivity("gadobutrol", 7.0)
    with pytest.raises(QMRIInputError, match="unknown contrast agent None"):
        relaxivity(None, 3.0)


# ------------------------------------------------------------------------------ AIFs
def test_parker_aif_hematocrit_and_delay():
    t = np.arange(0.0, 120.0, 1.5)
    blood = parker_blood_concentration(t)
    aif = parker_aif(t, hematocrit=0.42)
    np.testing.assert_allclose(aif.cp, blood / 0.58)
    delayed = parker_aif(t, delay_s=7.3, hematocrit=0.0)
    assert (delayed.cp[t < 7.3] == 0).all()
    np.testing.assert_allclose(delayed.cp[t >= 7.3], parker_blood_concentration(t[t >= 7.3] - 7.3))
    assert delayed.options["aif_delay_s"] == 7.3
    assert delayed.options["hematocrit"] == 0.0
    with pytest.raises(QMRIInputError, match="hematocrit"):
        parker_aif(t, hematocrit=1.2)


def test_measured_aif_from_label_and_tsv(tmp_path):
    rng = np.random.default_rng(3)
    blood = parker_blood_concentration(T, 20.0)
    data = blood + rng.normal(0, 0.01, (4, 5, T.size))
    labels = np.zeros((4, 5), dtype=int)
    labels[1:3, 2:4] = 1
    curve = mean_curve(data, labels == 1)
    np.testing.assert_allclose(curve, data[1:3, 2:4].mean(axis=(0, 1)))
    aif = aif_from_blood_curve(T, curve, hematocrit=0.45, source="aorta label")
    np.testing.assert_allclose(aif.cp, curve / 0.55)
    assert aif.options == {"aif": "measured", "aif_source": "aorta label", "hematocrit": 0.45}

    tsv = tmp_path / "aif.tsv"
    fine = np.arange(0.0, 301.0, 1.0)
    tsv.write_text("time\tcp\n" + "".join(f"{a}\t{2 * a + 1}\n" for a in fine))
    got = read_aif_tsv(tsv, T)
    np.testing.assert_allclose(got.cp, 2 * T + 1)
    assert got.options["aif_interpolated"] is True
    short = tmp_path / "short.tsv"
    short.write_text("time\tcp\n0\t0\n100\t1\n")
    with pytest.raises(QMRIInputError, match=r"short\.tsv: AIF covers 0-100 s"):
        read_aif_tsv(short, T)
    bad = tmp_path / "bad.tsv"
    bad.write_text("t\tc\n0\t0\n")
    with pytest.raises(QMRIInputError, match="columns 'time'"):
        read_aif_tsv(bad, T)


def test_bolus_arrival_synthetic():
    t = np.arange(0.0, 200.0, 3.0)
    rng = np.random.default_rng(5)
    truth = 41.3
    x = np.clip(t - truth, 0, None)
    curve = 2.0 * x / 20.0 * np.exp(1 - x / 20.0)  # gamma-variate-like, peak at arrival + 20 s
    noisy = curve + rng.normal(0, 0.02, t.size)
    assert abs(detect_bolus_arrival(t, noisy, baseline_frames=10) - truth) < 1.5
    assert abs(detect_bolus_arrival(t, curve) - truth) < 1.0
    with pytest.raises(QMRIInputError, match="no bolus"):
        detect_bolus_arrival(t, np.zeros(t.size), baseline_frames=5)


# ------------------------------------------------------------------------------ convolution
@settings(max_examples=25, deadline=None)
@given(
    kep=st.floats(0.0, 8.0),
    steps=st.lists(st.floats(0.5, 6.0), min_size=3, max_size=12),
    values=st.lists(st.floats(0.0, 5.0), min_size=13, max_size=13),
)
def test_convolution_matches_fine_numerical(kep, steps, values):
    t = np.concatenate([[0.0], np.cumsum(steps)])  # non-uniform frames (s)
    c = np.array(values[: t.size])
    got = exp_convolution(t, c, kep)[0]
    ref = []
    for tt in t:  # fine-grid trapezoid of the interpolated AIF times the kernel, t in min
        s = np.linspace(0.0, tt, 20001)
        f = np.interp(s, t, c) * np.exp(-kep * (tt - s) / 60.0)
        ref.append(np.trapezoid(f, s) / 60.0)
    np.testing.assert_allclose(got, ref, atol=1e-6 * (1 + max(values)) * t[-1] / 60)


# ------------------------------------------------------------------------------ models
def _truth(shape, rng):
    return {
        "Ktrans": rng.uniform(0.02, 0.8, shape),
        "ve": rng.uniform(0.1, 0.7, shape),
        "vp": rng.uniform(0.01, 0.2, shape),
    }


@pytest.mark.parametrize(
    ("cls", "names"),
    [
        (ToftsModel, ("Ktrans", "ve")),
        (ExtendedToftsModel, ("Ktrans", "ve", "vp")),
        (PatlakModel, ("Ktrans", "vp")),
    ],
)
@pytest.mark.parametrize("nonuniform", [False, True])
def test_noiseless_recovery(aif, cls, names, nonuniform):
    rng = np.random.default_rng(11)
    t = T
    a = aif
    if nonuniform:
        t = np.concatenate([np.arange(0.0, 60.0, 1.5), np.arange(60.0, 300.0, 6.0)])
        a = parker_aif(t, delay_s=30.0, hematocrit=HCT)
    truth = {k: v for k, v in _truth((4, 5, 3), rng).items() if k in names}
    if cls is PatlakModel:
        truth["Ktrans"] = truth["Ktrans"] / 5
    model = cls(t, a)
    data = model.predict(truth)
    mask = np.ones((4, 5, 3), dtype=bool)
    mask[0, 0, 0] = False
    fit = model.fit(data, mask=mask, chunk_size=17)
    assert isinstance(fit, ModelFit)
    assert (fit.n_fitted, fit.n_failed) == (59, 0)
    for k, v in truth.items():
        np.testing.assert_allclose(fit.maps[k][mask], v[mask], rtol=1e-6)
        assert np.isnan(fit.maps[k][0, 0, 0])
        assert fit.maps[k].dtype == np.float32
    if "ve" in truth:
        np.testing.assert_allclose(fit.maps["kep"][mask], (truth["Ktrans"] / truth["ve"])[mask],
                                   rtol=1e-6)  # fmt: skip
    np.testing.assert_allclose(fit.maps["R2"][mask], 1.0, atol=1e-6)
    assert fit.maps["fitmask"].sum() == 59
    assert fit.maps["fitmask"].dtype == np.uint8
    assert fit.units["Ktrans"] == "1/min"
    assert fit.options["aif"] == "parker"
    assert fit.options["hematocrit"] == 0.42
    assert fit.options["bounds"]["Ktrans"] == [0.0, 5.0]


@pytest.mark.parametrize("cls", [ToftsModel, ExtendedToftsModel, PatlakModel])
def test_fitted_delay_with_noise(aif, cls):
    rng = np.random.default_rng(2)
    n = 40
    truth = _truth(n, rng)
    truth["delay"] = rng.uniform(-6.0, 8.0, n)
    if cls is PatlakModel:
        truth["Ktrans"] = truth["Ktrans"] / 5
    model = cls(T, aif, fit_delay=True)
    names = ("Ktrans", *(() if cls is PatlakModel else ("ve",)),
             *(("vp",) if cls is not ToftsModel else ()))  # fmt: skip
    data = model.predict({k: truth[k] for k in (*names, "delay")})
    data = data + rng.normal(0, 0.002, data.shape)
    fit = model.fit(data, provenance={"r1_per_mM_per_s": 3.7})
    assert fit.n_failed == 0
    assert fit.units["delay"] == "s"
    assert np.nanmax(np.abs(fit.maps["delay"] - truth["delay"])) < 1.0
    assert np.nanmedian(np.abs(fit.maps["Ktrans"] / truth["Ktrans"] - 1)) < 0.02
    assert fit.options["fit_delay"] is True
    assert fit.options["r1_per_mM_per_s"] == 3.7


def test_failures_are_flagged_not_clipped(aif):
    model = ExtendedToftsModel(T, aif)
    good = model.predict({"Ktrans": 0.3, "ve": 0.3, "vp": 0.05})
    data = np.stack(
        [
            good,
            np.zeros(T.size),  # no enhancement: Ktrans on its bound
            -good,  # negative concentration
            model.predict({"Ktrans": 0.3, "ve": 0.3, "vp": 0.05}) * 40,  # vp far above 1
            np.where(np.arange(T.size) == 7, np.nan, good),  # NaN frame
        ]
    )
    fit = model.fit(data)
    assert fit.maps["fitmask"].tolist() == [1, 0, 0, 0, 0]
    assert (fit.n_fitted, fit.n_failed) == (5, 4)
    for name in ("Ktrans", "ve", "vp", "kep", "R2"):
        assert np.isnan(fit.maps[name][1:]).all()
    patlak = PatlakModel(T, aif, allow_zero_ktrans=False).fit(-good)
    assert patlak.n_failed == 1


def test_patlak_zero_ktrans_allowed(aif):
    model = PatlakModel(T, aif)
    rng = np.random.default_rng(9)
    y = model.predict({"Ktrans": np.zeros(50), "vp": np.full(50, 0.1)})
    y = y + rng.normal(0, 0.01, (50, T.size))
    fit = model.fit(y)
    assert fit.n_failed == 0
    assert (fit.maps["Ktrans"] >= 0).all()
    assert (fit.maps["Ktrans"] == 0).any()
    np.testing.assert_allclose(fit.maps["vp"], 0.1, atol=0.01)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda a: ToftsModel(T[::-1], a.cp), "strictly increasing"),
        (lambda a: ToftsModel(T, a.cp[:-1]), "AIF has 119 samples"),
        (lambda a: ToftsModel(T, a).fit(np.zeros((2, T.size - 1))), "data has 119 volumes"),
        (lambda a: ToftsModel(T, a, bounds={"Kep": (0, 1)}), "unknown bound"),
        (lambda a: ToftsModel(T[:-1], a), "not sampled at the frame times"),
        (lambda a: ToftsModel(T, a).predict({"ve": 0.2}), r"predict needs .*\['Ktrans'\]"),
    ],
)
def test_model_input_errors(aif, call, match):
    with pytest.raises(QMRIInputError, match=match):
        call(aif)


def test_aif_object_checks():
    with pytest.raises(QMRIInputError, match="finite"):
        ArterialInputFunction(T, np.full(T.size, np.nan), "array")


# ------------------------------------------------------------------------------ semi-quantitative
def test_semiquantitative_maps():
    t = np.arange(0.0, 150.0, 2.0)
    ta = 14.0  # on a frame: the interpolant is exactly the ramp
    ramp = np.clip(t - ta, 0, None) * 0.01  # C = 0.01 (t - ta) mM
    conc = np.stack([ramp, 2 * ramp, np.full(t.size, np.nan)]).reshape(3, 1, t.size)
    sig = 100.0 * (1 + conc)
    fit = semiquantitative_maps(conc, t, ta, signal=sig, baseline_frames=5)
    np.testing.assert_allclose(fit.maps["iAUC60"][:2, 0], [18.0, 36.0], rtol=1e-12)
    np.testing.assert_allclose(fit.maps["iAUC90"][:2, 0], [40.5, 81.0], rtol=1e-6)
    np.testing.assert_allclose(fit.maps["TTP"][:2, 0], t[-1] - ta)
    np.testing.assert_allclose(fit.maps["Cmax"][:2, 0], [ramp[-1], 2 * ramp[-1]], rtol=1e-6)
    np.testing.assert_allclose(fit.maps["MaxRSE"][:2, 0], [ramp[-1], 2 * ramp[-1]], rtol=1e-6)
    assert fit.maps["fitmask"].ravel().tolist() == [1, 1, 0]
    assert isinstance(fit, SemiQuantitativeFit)
    assert fit.iauc60_mM_s is fit.maps["iAUC60"]
    assert fit.ttp_s is fit.maps["TTP"]
    assert fit.max_rse is fit.maps["MaxRSE"]
    assert fit.units["iAUC60"] == "mM*s"
    assert fit.units["TTP"] == "s"
    assert fit.options["bolus_arrival_s"] == 14.0
    late = semiquantitative_maps(conc, t, 100.0)
    assert np.isnan(late.maps["iAUC90"]).all()
    assert "iAUC90_note" in late.options


# ------------------------------------------------------------------------------ fine Parker AIF
def _fine_reference(t, delay, ktrans, ve, vp, hct=0.42, dt=0.01):
    """Extended Tofts on a 0.01 s grid (trapezoid), sampled at the frames, written out here."""
    tf = np.arange(0.0, t[-1] + dt / 2, dt)
    cp = parker_blood_concentration(tf, delay) / (1 - hct)
    kernel = np.exp(-ktrans / ve * tf / 60.0)
    conv = np.convolve(cp, kernel)[: tf.size] * dt / 60.0
    conv -= 0.5 * dt / 60.0 * (cp[0] * kernel + cp * kernel[0])
    frames = np.rint(t / dt).astype(int)
    return (vp * cp + ktrans * conv)[frames]


def test_parker_fine_aif_removes_coarse_frame_bias():
    t = np.arange(32) * 7.0
    y = _fine_reference(t, 35.0, 0.25, 0.3, 0.08)
    coarse = ExtendedToftsModel(t, parker_aif(t, delay_s=35.0, hematocrit=HCT, fine_dt_s=None))
    fine_aif = parker_aif(t, delay_s=35.0, hematocrit=HCT)
    assert fine_aif.options["aif_fine_dt_s"] == 0.5
    fine = ExtendedToftsModel(t, fine_aif)
    np.testing.assert_allclose(
        fine.predict({"Ktrans": 0.25, "ve": 0.3, "vp": 0.08}), y, rtol=0, atol=5e-4
    )
    kt_coarse = float(coarse.fit(y[None]).maps["Ktrans"][0])
    fit = fine.fit(y[None])
    assert kt_coarse > 0.255  # the frame-sampled AIF misses the first-pass peak
    assert float(fit.maps["Ktrans"][0]) == pytest.approx(0.25, rel=2e-3)
    assert float(fit.maps["ve"][0]) == pytest.approx(0.3, rel=2e-3)
    assert float(fit.maps["vp"][0]) == pytest.approx(0.08, rel=2e-3)
    assert "fine AIF" in fit.options["aif_interpolation"]
    # fitted delay with the fine AIF: recovered from a 2 s wrong start
    delayed = ExtendedToftsModel(t, parker_aif(t, delay_s=33.0, hematocrit=HCT), fit_delay=True)
    dfit = delayed.fit(y[None])
    assert float(dfit.maps["delay"][0]) == pytest.approx(2.0, abs=0.02)
    assert float(dfit.maps["Ktrans"][0]) == pytest.approx(0.25, rel=5e-3)


@pytest.mark.parametrize("fit_delay", [False, True])
def test_fine_aif_jacobian_matches_finite_differences(fit_delay):
    t = np.r_[np.arange(0.0, 60.0, 7.0), np.arange(63.0, 200.0, 4.5)]  # non-uniform frames
    aif = parker_aif(t, delay_s=20.0, hematocrit=HCT, fine_dt_s=0.7)
    model = ExtendedToftsModel(t, aif, fit_delay=fit_delay)
    # delays off the fine nodes: the delay derivative has kinks where t - delay is a node
    p = np.array(
        [[0.3, 0.25, 0.05, 1.3][: 3 + fit_delay], [1.2, 0.5, 0.2, -2.33][: 3 + fit_delay]]
    )
    _, jac = model._model_tm(p, model.aif.cp[:, None], with_jac=True, fine=model._fine)
    for i in range(p.shape[1]):
        step = 1e-6 * max(1.0, abs(p[0, i]))
        pp, pm = p.copy(), p.copy()
        pp[:, i] += step
        pm[:, i] -= step
        cpl, _ = model._model_tm(pp, model.aif.cp[:, None], with_jac=False, fine=model._fine)
        cmi, _ = model._model_tm(pm, model.aif.cp[:, None], with_jac=False, fine=model._fine)
        np.testing.assert_allclose(jac[i], (cpl - cmi) / (2 * step), rtol=1e-5, atol=1e-8)


def test_fine_aif_chunks_and_options():
    t = np.arange(32) * 7.0
    aif = parker_aif(t, delay_s=35.0, hematocrit=HCT, fine_dt_s=2.0)
    assert aif.fine_times_s.size == 31 * 4 + 1
    np.testing.assert_array_equal(aif.fine_times_s[::4], t)
    model = ToftsModel(t, aif)
    y = model.predict({"Ktrans": np.linspace(0.05, 1.0, 7), "ve": 0.3})
    one = model.fit(y, chunk_size=3)
    assert one.options["aif_fine_dt_s"] == 1.75  # 7 s frames in 4 steps
    np.testing.assert_allclose(one.maps["Ktrans"], np.linspace(0.05, 1.0, 7), rtol=1e-4)
    # measured AIFs keep the frame samples only
    assert aif_from_blood_curve(t, aif.cp * 0.58, hematocrit=HCT).fine_times_s is None
    assert parker_aif(t, hematocrit=HCT, fine_dt_s=None).options["aif_fine_dt_s"] is None
    with pytest.raises(QMRIInputError, match="fine"):
        ArterialInputFunction(t, aif.cp, "parker", {}, aif.fine_times_s[1:], aif.fine_cp[1:])
    with pytest.raises(QMRIInputError, match="fine"):
        ArterialInputFunction(t, aif.cp, "parker", {}, aif.fine_times_s, aif.fine_cp + 1.0)


def test_parker_bolus_arrival_with_coarse_frames():
    t = np.arange(32) * 7.0
    blood = _fine_reference(t, 35.0, 0.0, 1.0, 0.58)
    tissue = _fine_reference(t, 35.0, 0.25, 0.3, 0.08)
    assert detect_bolus_arrival(t, blood) < 33.0  # the hinge is biased early at 7 s frames
    assert detect_bolus_arrival(t, blood, method="parker") == pytest.approx(35.0, abs=0.1)
    assert detect_bolus_arrival(t, tissue, method="parker") == pytest.approx(35.0, abs=0.1)
    with pytest.raises(QMRIInputError, match="method"):
        detect_bolus_arrival(t, tissue, method="spline")


@pytest.mark.parametrize(
    ("cls", "names"),
    [(ToftsModel, ("Ktrans", "ve")), (ExtendedToftsModel, ("Ktrans", "ve", "vp"))],
)
def test_linear_method_is_murase_closed_form(aif, cls, names):
    rng = np.random.default_rng(5)
    truth = {k: v for k, v in _truth(300, rng).items() if k in names}
    data = cls(T, aif).predict(truth)
    linear = cls(T, aif, method="linear").fit(data)
    nlls = cls(T, aif).fit(data)
    assert linear.n_failed == 0
    for k, v in truth.items():
        # the trapezoid integral of C makes Murase's estimate approximate even without noise
        err_linear = np.abs(linear.maps[k] / v - 1)
        assert np.median(err_linear) < 0.01, k
        assert np.median(np.abs(nlls.maps[k] / v - 1)) < 1e-6, k
        assert np.median(err_linear) > 1e-6, k  # it really is the closed form, not the LM fit
    assert linear.options["method"] == "linear"
    assert "max_iter" not in linear.options
    assert nlls.options["method"] == "nlls"
    assert nlls.options["max_iter"] == 100
    assert "Murase linear least squares only" in linear.algorithm
    assert np.nanmin(linear.maps["R2"]) > 0.99
    with pytest.raises(QMRIInputError, match="unknown DCE fit method 'lm'"):
        cls(T, aif, method="lm")


@pytest.mark.parametrize("cls", [PatlakModel, ToftsModel, ExtendedToftsModel])
def test_compiled_linear_fit_equals_the_numpy_least_squares(aif, cls):
    """The single-pass compiled fit (shared AIF) solves exactly the NumPy path's problem."""
    rng = np.random.default_rng(8)
    truth = _truth(200, rng)
    if cls is PatlakModel:
        truth = {"Ktrans": truth["Ktrans"] / 5, "vp": truth["vp"]}
    elif cls is ToftsModel:
        truth = {"Ktrans": truth["Ktrans"], "ve": truth["ve"]}
    model = cls(T, aif, method="linear")
    y = model.predict(truth) + rng.normal(0, 0.01, (200, T.size))
    c_tm = aif.cp[:, None]
    fine = model._fine
    t_min = T / 60.0
    regressors = _linear_start.shared_regressors(t_min, c_tm, fine)
    compiled, ssr, sst = _linear_start.linear_shared(model.kind, t_min, y, regressors)
    numpy_params, numpy_ssr = _linear_start.linear_from(model.kind, t_min, y, c_tm, 0.0, fine)
    np.testing.assert_allclose(compiled, numpy_params, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(ssr, numpy_ssr, rtol=1e-6, atol=1e-10)
    dev = y - y.mean(axis=1, keepdims=True)
    np.testing.assert_allclose(sst, np.einsum("ij,ij->i", dev, dev), rtol=1e-10)


# ------------------------------------------------------------------------------ Model API
def _state(model):
    """Every attribute of a model, arrays by value: fitting must leave it unchanged."""
    out = {}
    for name, value in vars(model).items():
        if isinstance(value, np.ndarray):
            out[name] = (value.tobytes(), value.flags.writeable)
        elif isinstance(value, tuple) and all(isinstance(v, np.ndarray) for v in value):
            out[name] = (id(value), [(v.tobytes(), v.flags.writeable) for v in value])
        elif isinstance(value, ArterialInputFunction):
            out[name] = (id(value), value.cp.tobytes(), repr(value.options))
        else:
            out[name] = (id(value), repr(value))
    return out


@pytest.mark.parametrize("name", list(DCE_MODELS))
@pytest.mark.parametrize("fit_delay", [False, True])
@pytest.mark.parametrize("method", ["nlls", "linear"])
def test_fit_never_changes_the_model_and_predict_takes_fit_params(aif, name, fit_delay, method):
    cls = DCE_MODELS[name]
    model = cls(T, aif, fit_delay=fit_delay, method=method)
    truth = {"Ktrans": np.full(6, 0.2), "ve": np.full(6, 0.3), "vp": np.full(6, 0.05)}
    if fit_delay:
        truth["delay"] = np.linspace(-2.0, 3.0, 6)
    data = model.predict(truth)
    before = _state(model)
    fit = model.fit(data)
    again = model.fit(data)
    model.fit_curves(data)
    assert _state(model) == before
    for k, v in fit.maps.items():  # a second fit of the same model gives the same maps
        np.testing.assert_array_equal(again.maps[k], v)
    assert isinstance(fit, DCEFit)
    assert fit.ktrans_per_min is fit.maps["Ktrans"]
    if name == "tofts":
        assert not hasattr(fit, "vp")
    else:
        assert fit.vp is fit.maps["vp"]
    if name != "patlak":
        assert fit.ve is fit.maps["ve"]
        assert fit.kep_per_min is fit.maps["kep"]
    assert hasattr(fit, "delay_s") is fit_delay
    assert set(fit.params) == set(model.param_names)
    if method == "nlls" or name == "patlak":  # the fitted curves are the data
        np.testing.assert_allclose(model.predict(fit.params), data, rtol=0, atol=1e-5)
    assert fit.algorithm == model.algorithm
    assert fit.options == model.options


def test_model_settings_are_read_only(aif):
    model = ExtendedToftsModel(T, aif, fit_delay=True, bounds={"Ktrans": (0.0, 2.0)})
    assert model.fit_delay is True
    assert model.bounds["Ktrans"] == (0.0, 2.0)
    assert model.aif is aif
    with pytest.raises(AttributeError, match="read-only"):
        model.method = "linear"
    with pytest.raises(TypeError):
        model.bounds["ve"] = (0.0, 0.5)
    with pytest.raises(ValueError, match="read-only"):
        model.times_s[0] = 1.0
    expected = "ExtendedToftsModel(n_frames=120, aif='parker', fit_delay=True, method='nlls')"
    assert repr(model) == expected
    assert "n_fine=" in repr(aif)


def test_predict_needs_every_base_map(aif):
    model = PatlakModel(T, aif, fit_delay=True)
    with pytest.raises(QMRIInputError, match=r"\['vp'\]"):
        model.predict({"Ktrans": 0.1})
    # the delay of a delay model defaults to 0 s; maps a model does not use are ignored
    np.testing.assert_array_equal(
        model.predict({"Ktrans": 0.1, "vp": 0.05, "kep": 1.0}),
        model.predict({"Ktrans": 0.1, "vp": 0.05, "delay": 0.0}),
    )
