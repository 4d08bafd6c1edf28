"""Per-session QC figures (issue #6): valid, non-trivial PNGs with contours and colour bars."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from qmri import qc_figures as qf
from qmri.config import schema_defaults
from qmri.io import save_nifti
from qmri.maps import read_fit, write_fit
from qmri.models import ADCModel, ExtendedToftsModel
from qmri.models.dce import parker_aif
from qmri.models.diffusion import adc_signal
from qmri.registration import identity_transform, write_transform
from qmri.registry import FITS
from qmri.steps.fit import fit_request
from qmri.steps.qc import dce_qc_curves, qc_session

SHAPE = (6, 18, 22)  # sagittal-like grid: thick voxels along x
ZOOMS = (4.0, 2.0, 2.0)
AFFINE = np.diag([*ZOOMS, 1.0])
#: The workflow config of the synthetic session (its DCE series: r1 4.5 /mM/s, no agent).
CONFIG = schema_defaults()
CONFIG["dce"]["r1"] = 4.5
DCE_OPTIONS = CONFIG["dce"]
ROI_BOXES = {
    "tumor": (slice(2, 4), slice(5, 9), slice(9, 13)),
    "vb_control": (slice(1, 5), slice(4, 10), slice(1, 5)),
    "cord_treated": (slice(2, 4), slice(12, 14), slice(6, 16)),
}


def _rois() -> dict[str, np.ndarray]:
    out = {}
    for name, box in ROI_BOXES.items():
        mask = np.zeros(SHAPE, bool)
        mask[box] = True
        out[name] = mask
    return out


def _rgb(path: Path) -> np.ndarray:
    img = imread(path)
    assert img.ndim == 3
    assert img.shape[2] in (3, 4)
    return np.round(img[..., :3] * 255).astype(int)


def _has_colour(rgb: np.ndarray, hex_colour: str, tol: int = 0) -> int:
    target = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)])
    return int(np.count_nonzero(np.all(np.abs(rgb - target) <= tol, axis=-1)))


def _check_png(path: Path, min_colours: int = 20) -> np.ndarray:
    assert path.exists()
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size < 600_000
    rgb = _rgb(path)
    assert 200 <= rgb.shape[0] <= 3000
    assert 200 <= rgb.shape[1] <= 3000
    assert rgb.std() > 20  # not blank
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) >= min_colours
    return rgb


def _maps() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    t1 = 1.0 + 0.05 * rng.standard_normal(SHAPE)
    t1[_rois()["tumor"]] = 1.6
    t1[:, :3, :3] = np.nan  # failed voxels
    fitmask = np.isfinite(t1).astype(float)
    r2 = np.where(fitmask > 0, 0.9 + 0.05 * rng.random(SHAPE), np.nan)
    return {"T1": t1, "R2": r2, "fitmask": fitmask}


def test_map_montage_draws_contours_nan_and_colour_bars(tmp_path):
    maps = _maps()
    units = {"T1": "s", "R2": "1", "fitmask": "1"}
    path = qf.map_montage(
        maps, tmp_path / "m.png", units=units, rois=_rois(), zooms=ZOOMS, crop=False,
        n_failed=9, n_fitted=100, title="test",
    )  # fmt: skip
    rgb = _check_png(path)
    for roi in ROI_BOXES:  # every contour drawn in its own colour
        assert _has_colour(rgb, qf.roi_colour(roi)) > 20, roi
    assert _has_colour(rgb, qf.NAN_COLOUR) > 20  # failed voxels in the NaN colour

    bare = qf.map_montage(maps, tmp_path / "bare.png", units=units, zooms=ZOOMS, crop=False)
    rgb_bare = _check_png(bare)
    for roi in ROI_BOXES:
        assert _has_colour(rgb_bare, qf.roi_colour(roi)) == 0, roi


def test_map_montage_colour_bar_spans_the_colour_map(tmp_path):
    # a constant map shows one colour in its panels: the ends of the colour map can only come
    # from the colour bar
    maps = {"ADC": np.full(SHAPE, 1e-3)}
    rgb = _check_png(qf.map_montage(maps, tmp_path / "c.png", units={"ADC": "mm^2/s"},
                                    rois=_rois(), zooms=ZOOMS), min_colours=10)  # fmt: skip
    lo, hi = qf._viridis_colours()[[0, -1], :3]
    for end in (lo, hi):
        hexc = "#" + "".join(f"{round(v * 255):02x}" for v in end)
        assert _has_colour(rgb, hexc, tol=20) > 10


def test_treated_slices_centre_on_the_tumour():
    rois = _rois()
    picks = qf.treated_slices(rois, SHAPE, axis=0, n_slices=3)
    assert picks == [2, 3]
    assert qf.treated_slices({}, SHAPE, axis=0) == [3]
    assert qf.slice_axis(ZOOMS) == 0


def test_dce_curves(tmp_path):
    t = np.arange(0, 240, 6.0)
    aif = parker_aif(t, delay_s=30, hematocrit=0.42)
    model = ExtendedToftsModel(t, aif)
    tissue = {"tumor": model.predict({"Ktrans": 0.2, "ve": 0.3, "vp": 0.05})}
    tissue["vb_control"] = model.predict({"Ktrans": 0.05, "ve": 0.15, "vp": 0.02})
    path = qf.dce_curves(
        t, aif.cp, tissue, tmp_path / "d.png", fitted_mM=tissue,
        aif_fine=(aif.fine_times_s, aif.fine_cp),
    )  # fmt: skip
    rgb = _check_png(path, min_colours=10)
    assert _has_colour(rgb, qf.roi_colour("tumor"), tol=10) > 50
    assert _has_colour(rgb, qf.roi_colour("vb_control"), tol=10) > 50


def test_dwi_decay(tmp_path):
    b = np.array([0, 0, 50, 100, 200, 400, 600, 800, 800], float)
    signals = {"tumor": adc_signal(1000.0, 1.1e-3, b), "vb_control": adc_signal(800, 4e-4, b)}
    bm = np.linspace(0, 800, 50)
    fitted = {"tumor": {"ADC": adc_signal(1000.0, 1.1e-3, bm)}}
    rgb = _check_png(
        qf.dwi_decay(b, signals, tmp_path / "w.png", b_model=bm, fitted=fitted), min_colours=10
    )
    assert _has_colour(rgb, qf.roi_colour("tumor"), tol=10) > 50
    shells, means = qf.mean_per_shell(b, signals["tumor"])
    assert shells.tolist() == [0, 50, 100, 200, 400, 600, 800]
    assert means[0] == pytest.approx(1000.0)


def _write_trace(path: Path, n: int, scale: float) -> Path:
    columns = [
        "volume", "rot_x_deg", "rot_y_deg", "rot_z_deg", "trans_x_mm", "trans_y_mm",
        "trans_z_mm", "displacement_mm", "metric",
    ]  # fmt: skip
    rows = ["\t".join(columns)]
    for v in range(n):
        vals = [scale * np.sin(v + k) for k in range(7)]
        metric = "n/a" if v == 0 else "-0.5"
        rows.append(
            "\t".join([str(v), *(f"{x:.4g}" for x in vals[:6]), f"{abs(vals[6]):.4g}", metric])
        )
    path.write_text("\n".join(rows) + "\n")
    return path


def test_motion_trace(tmp_path):
    trace = qf.read_motion_trace(_write_trace(tmp_path / "a_desc-mocodce_motion.tsv", 12, 0.8))
    assert np.isnan(trace["metric"][0])
    assert trace["displacement_mm"].size == 12
    traces = {"dce": trace, "dwi": qf.read_motion_trace(_write_trace(tmp_path / "b.tsv", 7, 0.2))}
    _check_png(qf.motion_trace(traces, tmp_path / "mo.png"), min_colours=10)


# --------------------------------------------------------------------------------------------
# the workflow step on a tiny synthetic session (identity transforms)
# --------------------------------------------------------------------------------------------


def _signal_from_conc(conc, t10, fa_deg, tr, r1, m0=1000.0):
    a = np.deg2rad(fa_deg)
    e1 = np.exp(-tr * (1.0 / t10[..., None] + r1 * conc))
    return m0 * np.sin(a) * (1 - e1) / (1 - e1 * np.cos(a))


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    root = tmp_path_factory.mktemp("qc")
    ses = root / "sub-01" / "ses-pre"
    xfm = ses / "xfm"
    xfm.mkdir(parents=True)
    identity = {}
    for name in ("ref_to-baseline", "VFA_to-ref", "dwi_to-ref", "dce_to-ref"):
        identity[name] = write_transform(
            identity_transform(), xfm / f"sub-01_ses-pre_from-{name}_mode-image_xfm.txt"
        )
    rois = _rois()
    names = list(rois)
    rois_path = root / "sub-01" / "rois" / "sub-01_space-baseline_desc-rois_mask.nii.gz"
    save_nifti(np.stack([rois[n] for n in names], axis=-1), AFFINE, rois_path, dtype=np.uint8)
    rois_path.with_name(rois_path.name.replace(".nii.gz", ".tsv")).write_text(
        "index\troi\n" + "".join(f"{i}\t{n}\n" for i, n in enumerate(names))
    )
    fit_mask = np.zeros(SHAPE, bool)
    for m in rois.values():
        fit_mask |= m
    # T1 map (written like a fit)
    t1 = np.where(fit_mask, 1.2, np.nan)
    t1[rois["tumor"]] = 1.5
    vfa_prefix = ses / "anat" / "sub-01_ses-pre_desc-vfa"
    for name, data, unit in (("T1map", t1, "s"), ("R2", np.where(fit_mask, 0.99, np.nan), "1")):
        save_nifti(data, AFFINE, f"{vfa_prefix}_{name}.nii.gz", sidecar={"Units": unit})
    save_nifti(fit_mask, AFFINE, f"{vfa_prefix}_fitmask.nii.gz", dtype=np.uint8,
               sidecar={"Units": "1", "FailedVoxels": 0, "FittedVoxels": int(fit_mask.sum())})  # fmt: skip
    # DWI: raw series and an ADC fit
    b = np.array([0, 50, 100, 200, 400, 600, 800], float)
    adc = np.where(rois["tumor"], 1.1e-3, 4e-4)
    dwi = adc_signal(np.full(SHAPE, 1000.0), adc, b)
    dwi_path = root / "raw" / "sub-01_ses-pre_dwi.nii.gz"
    save_nifti(dwi, AFFINE, dwi_path)
    dwi_path.with_name("sub-01_ses-pre_dwi.bval").write_text(" ".join(f"{v:g}" for v in b) + "\n")
    model = ADCModel(b.tolist(), b_min=200)
    write_fit(model.fit(dwi, mask=fit_mask), AFFINE, ses / "dwi" / "sub-01_ses-pre_desc-adc",
              sources=[dwi_path], acquisition={"bvals": b.tolist()}, bids_suffixes=True)  # fmt: skip
    # DCE: signal from known kinetics, fitted by the workflow's own estimator
    times = np.arange(0, 180, 6.0)
    aif = parker_aif(times, delay_s=30, hematocrit=0.42)
    truth = {"tumor": (0.2, 0.3, 0.05), "vb_control": (0.05, 0.15, 0.02),
             "cord_treated": (0.01, 0.05, 0.01)}  # fmt: skip
    conc = np.zeros((*SHAPE, times.size))
    etofts = ExtendedToftsModel(times, aif)
    for roi, (kt, ve, vp) in truth.items():
        conc[rois[roi]] = etofts.predict({"Ktrans": kt, "ve": ve, "vp": vp})
    t1_filled = np.nan_to_num(t1, nan=1.2)
    signal = _signal_from_conc(conc, t1_filled, 15.0, 0.004, 4.5)
    dce_path = root / "raw" / "sub-01_ses-pre_dce.nii.gz"
    save_nifti(signal, AFFINE, dce_path, sidecar={
        "FlipAngle": 15.0, "RepetitionTimeExcitation": 0.004, "VolumeTiming": times.tolist(),
        "BaselineFrames": 5,
    })  # fmt: skip
    save_nifti(t1_filled, AFFINE, f"{vfa_prefix}_T1map.nii.gz", sidecar={"Units": "s"})
    dce = {
        "series": [dce_path], "moco_xfm": None, "options": {**DCE_OPTIONS}, "b1": None,
        "inputs": {"t1": Path(f"{vfa_prefix}_T1map.nii.gz"), "t1_xfm": identity["VFA_to-ref"]},
    }  # fmt: skip
    series = FITS["dce"].series.load([dce_path])
    request = fit_request(series=series, data=series.data, options=dce["options"], b1=None,
                          inputs=dce["inputs"], series_xfm=identity["dce_to-ref"])  # fmt: skip
    outcome = FITS["dce"].estimate(request)
    for fit in outcome.fits:
        write_fit(fit, AFFINE, ses / "perf" / "sub-01_ses-pre_desc-dce", sources=[dce_path],
                  acquisition=outcome.acquisition, bids_suffixes=True)  # fmt: skip
    trace = _write_trace(xfm / "sub-01_ses-pre_desc-mocodce_motion.tsv", times.size, 0.1)
    return {
        "root": root, "rois": rois_path, "session_xfm": identity["ref_to-baseline"],
        "fits": [
            ("vfa", vfa_prefix, identity["VFA_to-ref"]),
            ("adc", ses / "dwi" / "sub-01_ses-pre_desc-adc", identity["dwi_to-ref"]),
            ("dce", ses / "perf" / "sub-01_ses-pre_desc-dce", identity["dce_to-ref"]),
        ],
        "motion": [trace], "dwi": dwi_path, "dce": dce, "truth": truth, "conc": conc,
        "request": request,
    }  # fmt: skip


def _qc(session, out, **changes):
    s = session
    kwargs = {
        "subject": "01", "session": "pre", "config": CONFIG, "fits": s["fits"],
        "rois": s["rois"], "session_xfm": s["session_xfm"], "motion_traces": s["motion"],
        "dwi": [s["dwi"]], "dwi_moco": None, "dce": s["dce"], "out_dir": out,
    }  # fmt: skip
    return qc_session(**{**kwargs, **changes})


def test_session_qc_figures_writes_every_figure(session, tmp_path):
    out = _qc(session, tmp_path / "qc")
    names = sorted(p.name for p in out)
    assert names == sorted(
        [
            "sub-01_ses-pre_desc-vfa_montage.png",
            "sub-01_ses-pre_desc-adc_montage.png",
            "sub-01_ses-pre_desc-dce_montage.png",
            "sub-01_ses-pre_motion.png",
            "sub-01_ses-pre_dwi-decay.png",
            "sub-01_ses-pre_dce-curves.png",
        ]
    )
    for path in out:
        rgb = _check_png(path, min_colours=10)
        if path.name.endswith("montage.png"):
            assert _has_colour(rgb, qf.roi_colour("tumor")) > 10, path.name


def test_session_qc_figures_skips_absent_series(session, tmp_path):
    # no DCE / ADC fit, no motion traces: no curves, no decay, no trace
    out = _qc(session, tmp_path / "qc", fits=session["fits"][:1], motion_traces=[])
    assert [p.name for p in out] == ["sub-01_ses-pre_desc-vfa_montage.png"]


def test_dce_roi_curves_recover_the_truth(session):
    s = session
    kinetic = read_fit(s["fits"][2][1], ["Ktrans", "ve", "vp", "fitmask"]).maps
    rois = _rois()
    curves = dce_qc_curves(request=s["request"], kinetic=kinetic,
                           masks={r: rois[r] for r in s["truth"]})  # fmt: skip
    for roi, (kt, _ve, _vp) in s["truth"].items():
        true_curve = s["conc"][rois[roi]].mean(axis=0)
        np.testing.assert_allclose(curves["tissue_mM"][roi], true_curve, atol=2e-3)
        # the bolus arrival is detected (as in the workflow), not given: the model's onset
        # frame may differ by the first-pass rise within one 6 s frame (7e-3 mM measured)
        np.testing.assert_allclose(curves["fitted_mM"][roi], true_curve, atol=1e-2)
        assert curves["medians"][roi]["Ktrans"] == pytest.approx(kt, rel=0.02)
