"""The DCE analysis from arrays (qmri.models.dce.analysis) and the baseline-frame detection.

``prepare_dce`` + ``fit_dce`` replace the orchestration of the former ``qmri.pipeline.fit_dce``
(conversion, AIF, bolus arrival, kinetic fit, semi-quantitative maps, provenance) minus the file
writing. They are checked two ways on a small synthetic volume written out here without qmri:

* bit for bit against :func:`_former_fit_dce`, that orchestration as it was (commit 2f1aac9,
  ``qmri/pipeline.py``), on the same package functions: maps with ``np.array_equal``, options,
  units, counts and algorithm with ``==``;
* against summaries of the former code's own output on this volume (run on the former modules
  ``qmri.dce`` / ``qmri.models.dce`` at that commit), to 1e-6.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from qmri.errors import QMRIInputError
from qmri.models import DCE_MODELS as MODELS_REEXPORTED
from qmri.models import dce
from qmri.models.dce import (
    DCE_MODELS,
    DCEFit,
    DCEInputs,
    ExtendedToftsModel,
    SemiQuantitativeFit,
    detect_baseline_frames,
    fit_dce,
    kinetic_model,
    parker_aif,
    prepare_dce,
)

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "qmri" / "models" / "dce"
DATA_SAMPLE = ROOT / "data_sample"
HCT = 0.42
TIMES = np.arange(40) * 4.0  # s
FA, TR, R1 = 15.0, 0.004, 4.1
ARRIVAL_S = 30.0


# ------------------------------------------------------------------------------ synthetic data
def _parker_blood(t_s: np.ndarray, delay_s: float) -> np.ndarray:
    """Parker et al. 2006 population blood curve (mM), written out here."""
    t = (t_s - delay_s) / 60.0
    cb = 0.809 / (0.0563 * np.sqrt(2 * np.pi)) * np.exp(-((t - 0.17046) ** 2) / (2 * 0.0563**2))
    cb += 0.330 / (0.132 * np.sqrt(2 * np.pi)) * np.exp(-((t - 0.365) ** 2) / (2 * 0.132**2))
    cb += 1.050 * np.exp(-0.1685 * t) / (1.0 + np.exp(-38.078 * (t - 0.483)))
    return np.where(t < 0, 0.0, cb)


def _volume() -> dict[str, np.ndarray]:
    """A 4 x 5 x 3 DCE series: extended-Tofts tissue, 4 arterial voxels, SPGR signal, noise."""
    rng = np.random.default_rng(20240611)
    shape = (4, 5, 3)
    dt = 0.05
    fine = np.arange(0.0, TIMES[-1] + dt / 2, dt)
    cp = _parker_blood(fine, ARRIVAL_S) / (1 - HCT)
    ktrans = rng.uniform(0.05, 0.5, shape)
    ve = rng.uniform(0.15, 0.5, shape)
    vp = rng.uniform(0.01, 0.1, shape)
    frames = np.rint(TIMES / dt).astype(int)
    conc = np.empty((*shape, TIMES.size))
    for idx in np.ndindex(shape):
        kernel = np.exp(-ktrans[idx] / ve[idx] * fine / 60.0)
        tissue = np.convolve(cp, kernel)[: fine.size] * dt / 60.0
        conc[idx] = (vp[idx] * cp + ktrans[idx] * tissue)[frames]
    artery = np.zeros(shape, bool)
    artery[0, 0, :2] = artery[0, 1, :2] = True
    conc[artery] = _parker_blood(TIMES, ARRIVAL_S)
    t10 = np.where(artery, 1.6, rng.uniform(0.8, 1.4, shape))
    b1 = rng.uniform(0.9, 1.1, shape)
    r1 = 1.0 / t10[..., None] + R1 * conc
    a = np.deg2rad(FA * b1)[..., None]
    e1 = np.exp(-TR * r1)
    signal = 1000.0 * np.sin(a) * (1 - e1) / (1 - np.cos(a) * e1)
    signal = (signal + rng.normal(0, 0.3, signal.shape)).astype(np.float32)
    mask = np.ones(shape, bool)  # the artery is converted (for the measured AIF) and fitted
    mask[3, 4, 2] = False
    return {"signal": signal, "conc": conc.astype(np.float32), "t10": t10, "b1": b1,
            "mask": mask, "artery": artery}  # fmt: skip


VOLUME = _volume()
TSV_TIMES = np.arange(0.0, TIMES[-1] + 0.25, 0.5)


def _tsv(tmp_path: Path) -> Path:
    path = tmp_path / "aif.tsv"
    cp = _parker_blood(TSV_TIMES, ARRIVAL_S) / (1 - HCT)
    path.write_text(
        "time\tcp\n" + "".join(f"{a}\t{c}\n" for a, c in zip(TSV_TIMES, cp, strict=True))
    )
    return path


# ------------------------------------------------------------------------------ former code
def _former_fit_dce(data, times_s, *, model, concentration, t1_s, flip_angle_deg, tr_s, b1,
                    baseline_frames, r1, agent, field_strength_t, aif, hematocrit,
                    bolus_arrival_s, fit_delay, method, aif_mask, mask):  # fmt: skip
    """``qmri.pipeline.fit_dce`` of commit 2f1aac9 without its file writing: the fits it wrote."""
    if model not in DCE_MODELS:
        raise QMRIInputError(f"unknown DCE model '{model}' (use {', '.join(DCE_MODELS)})")
    times = dce.check_frame_times(times_s, data.shape[-1])
    provenance = {}
    if concentration:
        conc = data
        provenance["Input"] = "concentration (mM)"
    else:
        if t1_s is None or flip_angle_deg is None or tr_s is None or baseline_frames is None:
            raise QMRIInputError(
                "signal to concentration needs a T1 map, the flip angle, TR and the number of "
                "baseline frames (or pass --concentration)"
            )
        if t1_s.shape != data.shape[:-1]:
            raise QMRIInputError(
                f"T1 map grid {t1_s.shape} differs from the DCE grid {data.shape[:-1]}"
            )
        res = dce.signal_to_concentration(
            data, t1_s, flip_angle_deg, tr_s, baseline_frames=baseline_frames, r1=r1,
            agent=agent, field_strength_t=field_strength_t, b1=b1, mask=mask,
        )  # fmt: skip
        conc = res.concentration
        provenance.update(res.options)
        provenance["UninvertibleFrames"] = int(res.n_uninvertible)
    fit_mask = np.ones(data.shape[:-1], bool) if mask is None else mask
    if aif == "parker":
        if bolus_arrival_s is None:
            curve = dce.mean_curve(conc, fit_mask & np.all(np.isfinite(conc), axis=-1))
            bolus_arrival_s = dce.detect_bolus_arrival(
                times, curve, baseline_frames=baseline_frames, method="parker"
            )
            provenance["BolusArrivalDetected"] = True
        arterial = dce.parker_aif(times, delay_s=bolus_arrival_s, hematocrit=hematocrit)
    elif aif == "measured":
        if aif_mask is None or not aif_mask.any():
            raise QMRIInputError("a measured AIF needs arterial voxels (no 'aorta' label here)")
        blood = dce.mean_curve(conc, aif_mask)
        arterial = dce.aif_from_blood_curve(
            times, blood, hematocrit=hematocrit,
            source=f"mean blood concentration over {int(aif_mask.sum())} aorta voxels",
        )  # fmt: skip
    else:
        arterial = dce.read_aif_tsv(Path(aif), times)
    provenance["BolusArrival_s"] = bolus_arrival_s
    kinetic = DCE_MODELS[model](times, arterial, fit_delay=fit_delay, method=method)
    fit = kinetic.fit(conc, mask=mask, provenance=provenance)
    arrival = bolus_arrival_s if bolus_arrival_s is not None else float(times[0])
    semi = dce.semiquantitative_maps(
        conc, times, arrival, signal=None if concentration else data,
        baseline_frames=baseline_frames, mask=mask,
    )  # fmt: skip
    semi = dataclasses.replace(
        semi,
        maps={k: v for k, v in semi.maps.items() if k != "fitmask"},
        options={**provenance, **semi.options},
    )
    return fit, semi


SIGNAL = {"concentration": False, "t1_s": "t10", "flip_angle_deg": FA, "tr_s": TR, "b1": None,
          "baseline_frames": 6, "r1": None, "agent": "gadoteridol", "field_strength_t": 1.5,
          "aif": "parker", "hematocrit": HCT, "bolus_arrival_s": None, "aif_mask": None,
          "mask": None}  # fmt: skip
CONC = {**SIGNAL, "concentration": True, "t1_s": None, "flip_angle_deg": None, "tr_s": None,
        "agent": None, "field_strength_t": None, "baseline_frames": None}  # fmt: skip
#: (inputs, model, method, fit_delay) of every case; "t10", "b1", "mask", "artery" and "tsv"
#: stand for the arrays of the synthetic volume and the AIF file.
CASES = {
    "signal-parker-detected-etofts-b1-mask": (
        {**SIGNAL, "b1": "b1", "mask": "mask"}, "etofts", "nlls", False),
    "signal-parker-given-tofts-linear-r1": (
        {**SIGNAL, "bolus_arrival_s": 29.0, "r1": 3.9}, "tofts", "linear", False),
    "signal-parker-detected-patlak-delay": ({**SIGNAL, "mask": "mask"}, "patlak", "nlls", True),
    "signal-measured-etofts": (
        {**SIGNAL, "aif": "measured", "aif_mask": "artery", "mask": "mask", "hematocrit": 0.45},
        "etofts", "nlls", False),
    "signal-tsv-tofts-delay": ({**SIGNAL, "aif": "tsv", "mask": "mask"}, "tofts", "nlls", True),
    "conc-tsv-tofts": ({**CONC, "aif": "tsv"}, "tofts", "nlls", False),
    "conc-parker-detected-etofts-delay": ({**CONC, "mask": "mask"}, "etofts", "nlls", True),
    "conc-measured-patlak-baseline": (
        {**CONC, "aif": "measured", "aif_mask": "artery", "baseline_frames": 6}, "patlak",
        "linear", False),
}  # fmt: skip

#: The former code's output on the synthetic volume (commit 2f1aac9, qmri.pipeline.fit_dce):
#: bolus arrival (s), failed voxels of the kinetic and semi-quantitative fits, and the NaN-sums
#: of the maps.
FORMER = {
    "signal-parker-detected-etofts-b1-mask":
        (30.04311175, 3, 0, {"Ktrans": 15.2644144, "ve": 17.34038404, "vp": 3.482531971, "kep":
         54.12594628, "R2": 55.97944975, "iAUC60": 1972.385817, "iAUC90": 2887.762123, "TTP":
         1619.456392, "Cmax": 67.04218867, "MaxRSE": 167.2616484}),
    "signal-parker-given-tofts-linear-r1":
        (29, 4, 0, {"Ktrans": 27.69338445, "ve": 18.40603562, "kep": 87.96067631, "R2":
         46.25964415, "iAUC60": 2036.961275, "iAUC90": 3011.727816, "TTP": 1788, "Cmax":
         67.87955469, "MaxRSE": 169.0880947}),
    "signal-parker-detected-patlak-delay":
        (30.02687917, 0, 0, {"Ktrans": 6.300435768, "vp": 6.465810996, "delay": 58.56154247, "R2":
         52.44106311, "iAUC60": 1940.769162, "iAUC90": 2850.278116, "TTP": 1620.414132, "Cmax":
         63.9791905, "MaxRSE": 167.2616484}),
    "signal-measured-etofts":
        (None, 1, 0, {"Ktrans": 20.95109525, "ve": 16.61772317, "vp": 4.472424658, "kep":
         275.0633107, "R2": 57.95671272, "iAUC60": 997.224402, "iAUC90": 1941.402141, "TTP": 3392,
         "Cmax": 63.9791905, "MaxRSE": 167.2616484}),
    "signal-tsv-tofts-delay":
        (None, 4, 0, {"Ktrans": 24.7748322, "ve": 17.31201975, "kep": 84.33231491, "delay":
         -257.9199429, "R2": 50.65999734, "iAUC60": 997.224402, "iAUC90": 1941.402141, "TTP": 3392,
         "Cmax": 63.9791905, "MaxRSE": 167.2616484}),
    "conc-tsv-tofts":
        (None, 5, 0, {"Ktrans": 26.79260981, "ve": 16.93299001, "kep": 92.98248863, "R2":
         44.8103599, "iAUC60": 1031.45338, "iAUC90": 1996.967918, "TTP": 3432, "Cmax":
         67.20255271}),
    "conc-parker-detected-etofts-delay":
        (30.03714895, 4, 0, {"Ktrans": 15.30797859, "ve": 17.28482166, "vp": 2.895448311, "kep":
         53.49522991, "delay": -1.942472965, "R2": 54.99999726, "iAUC60": 1967.836285, "iAUC90":
         2882.364183, "TTP": 1511.80825, "Cmax": 66.59619585}),
    "conc-measured-patlak-baseline":
        (None, 0, 0, {"Ktrans": 6.469130453, "vp": 6.51182048, "R2": 52.48437887, "iAUC60":
         1031.45338, "iAUC90": 1996.967918, "TTP": 3432, "Cmax": 67.20255271}),
}  # fmt: skip


def _kwargs(inputs: dict, tmp_path: Path | None = None) -> dict:
    """``prepare_dce`` keywords of a case: the names of :data:`CASES` replaced by the arrays of
    the volume, ``"tsv"`` by an AIF file written to ``tmp_path``."""
    out = {k: VOLUME[v] if isinstance(v, str) and v in VOLUME else v for k, v in inputs.items()}
    if out["aif"] == "tsv":
        assert tmp_path is not None
        out["aif"] = str(_tsv(tmp_path))
    return out


def _assert_same_fit(new, old) -> None:
    assert type(new) is type(old)
    assert list(new.maps) == list(old.maps)
    for name, arr in old.maps.items():
        assert new.maps[name].dtype == arr.dtype, name
        assert np.array_equal(new.maps[name], arr, equal_nan=arr.dtype.kind == "f"), name
    assert new.units == old.units
    assert list(new.options) == list(old.options)  # same order in the sidecar
    assert new.options == old.options
    for attr in ("n_fitted", "n_failed", "n_unconverged", "algorithm", "reference"):
        assert getattr(new, attr) == getattr(old, attr), attr


@pytest.mark.parametrize("case", list(CASES))
def test_prepare_and_fit_equal_the_former_pipeline_bit_for_bit(case, tmp_path):
    inputs, model, method, fit_delay = CASES[case]
    kwargs = _kwargs(inputs, tmp_path)
    data = VOLUME["conc"] if kwargs["concentration"] else VOLUME["signal"]
    old_kinetic, old_semi = _former_fit_dce(
        data, TIMES, model=model, fit_delay=fit_delay, method=method, **kwargs
    )
    prepared = prepare_dce(data, TIMES, **kwargs)
    assert isinstance(prepared, DCEInputs)
    kinetic, semi = fit_dce(
        prepared, model=model, method=method, fit_delay=fit_delay,
        signal=None if kwargs["concentration"] else data,
    )  # fmt: skip
    assert isinstance(kinetic, DCEFit)
    assert isinstance(semi, SemiQuantitativeFit)
    assert "fitmask" not in semi.maps  # the kinetic fit's fitmask stands
    _assert_same_fit(kinetic, old_kinetic)
    _assert_same_fit(semi, old_semi)
    assert kinetic.n_failed <= 0.2 * kinetic.n_fitted  # a meaningful volume, not all failures
    # what the fit and the QC figures share
    assert prepared.provenance["BolusArrival_s"] == prepared.bolus_arrival_s
    assert semi.options["bolus_arrival_s"] == (
        prepared.bolus_arrival_s if prepared.bolus_arrival_s is not None else TIMES[0]
    )
    assert prepared.baseline_frames == kwargs["baseline_frames"]
    assert prepared.mask is kwargs["mask"]
    if kwargs["concentration"]:
        assert prepared.concentration is data


@pytest.mark.parametrize("case", list(CASES))
def test_fit_dce_reproduces_the_former_code_output(case, tmp_path):
    inputs, model, method, fit_delay = CASES[case]
    kwargs = _kwargs(inputs, tmp_path)
    data = VOLUME["conc"] if kwargs["concentration"] else VOLUME["signal"]
    prepared = prepare_dce(data, TIMES, **kwargs)
    kinetic, semi = fit_dce(
        prepared, model=model, method=method, fit_delay=fit_delay,
        signal=None if kwargs["concentration"] else data,
    )  # fmt: skip
    arrival, n_failed, n_failed_semi, sums = FORMER[case]
    if arrival is None:
        assert prepared.bolus_arrival_s is None
    else:
        assert prepared.bolus_arrival_s == pytest.approx(arrival, rel=1e-9)
    assert (kinetic.n_failed, semi.n_failed) == (n_failed, n_failed_semi)
    maps = {**kinetic.maps, **semi.maps}
    assert set(sums) == set(maps) - {"fitmask"}
    for name, total in sums.items():
        assert float(np.nansum(maps[name], dtype=np.float64)) == pytest.approx(
            total, rel=1e-6, abs=1e-6
        ), name


def test_prepare_dce_records_the_conversion_and_the_aif():
    kwargs = _kwargs({**SIGNAL, "b1": "b1", "mask": "mask"})
    prepared = prepare_dce(VOLUME["signal"], TIMES, **kwargs)
    assert prepared.concentration.dtype == np.float32
    assert np.isnan(prepared.concentration[~VOLUME["mask"]]).all()
    assert prepared.aif.kind == "parker"
    assert prepared.aif.options["hematocrit"] == HCT
    assert prepared.provenance["BolusArrivalDetected"] is True
    assert prepared.provenance["r1_per_mM_per_s"] == 4.1  # gadoteridol at 1.5 T
    assert prepared.provenance["b1_corrected"] is True
    assert abs(prepared.bolus_arrival_s - ARRIVAL_S) < 1.0
    tissue = VOLUME["mask"] & ~VOLUME["artery"]  # signal noise 0.3 of ~100: ~0.005 mM
    err = np.abs(prepared.concentration[tissue] - VOLUME["conc"][tissue])
    assert np.median(err) < 0.01
    assert err.max() < 0.05


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"t1_s": None}, "needs a T1 map"),
        ({"baseline_frames": None}, "baseline frames"),
        ({"t1_s": np.ones((4, 5))}, r"T1 map grid \(4, 5\) differs"),
        ({"aif": "measured"}, "needs arterial voxels"),
        ({"aif": "missing.tsv"}, "cannot read AIF file"),
        ({"hematocrit": 1.0}, "hematocrit"),
    ],
)
def test_prepare_dce_errors(change, match):
    kwargs = {**_kwargs(SIGNAL), "bolus_arrival_s": 30.0, **change}
    with pytest.raises(QMRIInputError, match=match):
        prepare_dce(VOLUME["signal"], TIMES, **kwargs)


def test_kinetic_model_is_configured_from_the_inputs():
    prepared = prepare_dce(VOLUME["signal"], TIMES, **_kwargs(SIGNAL))
    model = kinetic_model(prepared, model="etofts", method="linear", fit_delay=True)
    assert type(model) is ExtendedToftsModel
    assert model.aif is prepared.aif
    assert np.array_equal(model.times_s, TIMES)
    assert (model.method, model.fit_delay) == ("linear", True)
    with pytest.raises(
        QMRIInputError, match=r"unknown DCE model 'toft' \(use tofts, etofts, patlak\)"
    ):
        kinetic_model(prepared, model="toft", method="nlls", fit_delay=False)
    assert MODELS_REEXPORTED is DCE_MODELS


@pytest.mark.parametrize("function", [prepare_dce, kinetic_model, fit_dce])
def test_analysis_options_are_keyword_only_without_defaults(function):
    """Defaults live in the config schema, not in the library."""
    params = list(inspect.signature(function).parameters.values())
    positional = [p.name for p in params if p.kind is not p.KEYWORD_ONLY]
    assert positional == (["data", "times_s"] if function is prepare_dce else ["inputs"])
    assert all(p.default is p.empty for p in params)


def test_no_default_hematocrit_in_the_library():
    assert not hasattr(dce, "DEFAULT_HEMATOCRIT")
    assert (
        inspect.signature(parker_aif).parameters["hematocrit"].default is inspect.Parameter.empty
    )
    assert (
        inspect.signature(dce.aif_from_blood_curve).parameters["hematocrit"].default
        is inspect.Parameter.empty
    )
    with pytest.raises(TypeError, match="hematocrit"):
        parker_aif(TIMES, delay_s=20.0)  # type: ignore[call-arg]


def test_the_package_imports_have_no_cycle():
    """Module-level imports between the submodules form a DAG; no function-level import hides
    one (the only import inside a function loads the numba kernels, which import nothing)."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.glob("*.py"):
        tree = ast.parse(path.read_text())
        name = path.stem
        graph[name] = set()
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "qmri.models.dce."
            ):
                graph[name].add(node.module.rsplit(".", 1)[1])
        nested = [
            (node.module, path.name)
            for func in ast.walk(tree)
            if isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef)
            for node in ast.walk(func)
            if isinstance(node, ast.Import | ast.ImportFrom)
        ]
        if name == "_linear_start":
            assert nested == [("qmri.models.dce._linear_kernels", path.name)]
        else:
            assert nested == [], nested
    assert graph["_linear_kernels"] == set()
    done: set[str] = set()
    while len(done) < len(graph):
        ready = {m for m, deps in graph.items() if m not in done and deps <= done}
        assert ready, f"import cycle among {sorted(set(graph) - done)}"
        done |= ready


# ------------------------------------------------------------------------------ baseline frames
def _spgr_tissue(t: np.ndarray, arrival_s: float, noise: float, rng) -> np.ndarray:
    """Mean SPGR signal of an extended-Tofts tissue driven by the Parker AIF (phantom-like)."""
    model = ExtendedToftsModel(t, parker_aif(t, delay_s=arrival_s, hematocrit=HCT))
    conc = model.predict({"Ktrans": 0.2, "ve": 0.3, "vp": 0.05})
    e1 = np.exp(-TR * (1 / 1.2 + R1 * conc))
    a = np.deg2rad(FA)
    return 1000 * np.sin(a) * (1 - e1) / (1 - np.cos(a) * e1) + rng.normal(0, noise, t.size)


DCE_SERIES = sorted(DATA_SAMPLE.glob("sub-*/ses-*/perf/*_dce.nii.gz"))


@pytest.mark.skipif(not DCE_SERIES, reason="data_sample/ not available")
@pytest.mark.parametrize("path", DCE_SERIES, ids=[p.name for p in DCE_SERIES])
def test_detected_baseline_frames_equal_the_phantom_sidecar(path):
    """The mean signal of the whole series, as for a series without BaselineFrames."""
    side = json.loads(Path(str(path).replace(".nii.gz", ".json")).read_text())
    data = np.asarray(nib.load(path).dataobj, dtype=np.float32)
    curve = np.nanmean(data.reshape(-1, data.shape[-1]), axis=0)
    assert detect_baseline_frames(side["VolumeTiming"], curve) == side["BaselineFrames"]


def test_detected_baseline_frames_on_phantom_like_curves():
    rng = np.random.default_rng(3)
    t7 = np.arange(32) * 7.0
    for _ in range(5):  # the phantom's protocol: 7 s frames, arrival at frame 5
        assert detect_baseline_frames(t7, _spgr_tissue(t7, 35.0, 0.5, rng)) == 5
    for dt in (5.0, 7.0):  # arrival between frames: within one frame of the truth
        t = np.arange(0.0, 300.0, dt)
        for arrival in np.arange(15.0, 60.0, 2.3):
            truth = int(np.count_nonzero(t < arrival))
            found = detect_baseline_frames(t, _spgr_tissue(t, arrival, 0.5, rng))
            assert abs(found - truth) <= 1, (dt, arrival, found, truth)
    for dt in (1.0, 2.0, 3.5):  # fast frames: the foot of the first pass may be counted
        t = np.arange(0.0, 300.0, dt)
        for arrival in np.arange(15.0, 60.0, 2.3):
            clean = _spgr_tissue(t, arrival, 0.0, rng)
            found = detect_baseline_frames(t, clean + rng.normal(0, 0.5, t.size))
            assert found >= np.count_nonzero(t < arrival)
            enhancement = (clean[:found].max() - clean[0]) / (clean.max() - clean[0])
            assert enhancement < 0.1, (dt, arrival, found, enhancement)
    # a concentration curve works alike
    conc = ExtendedToftsModel(t7, parker_aif(t7, delay_s=35.0, hematocrit=HCT)).predict(
        {"Ktrans": 0.2, "ve": 0.3, "vp": 0.05}
    )
    assert detect_baseline_frames(t7, conc) == 5


@pytest.mark.parametrize(
    ("curve", "match"),
    [
        (np.full(32, 100.0), "no baseline frames detectable .no bolus found"),
        (  # the bolus arrives 3.5 s into a 7 s series: one frame before it
            100.0 + 50.0 * np.clip((np.arange(32) * 7.0 - 3.5) / 14.0, 0.0, 1.0),
            r"no baseline detectable: the bolus arrives at [\d.]+ s, with 1 frame\(s\) before",
        ),
        (np.r_[np.nan, np.full(31, 100.0)], "finite curve"),
        (np.full(31, 100.0), "31 for 32 frames"),
    ],
)
def test_no_detectable_baseline_is_a_clear_error(curve, match):
    with pytest.raises(QMRIInputError, match=match) as err:
        detect_baseline_frames(np.arange(32) * 7.0, curve)
    assert "\n" not in str(err.value)
