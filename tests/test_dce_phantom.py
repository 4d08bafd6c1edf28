"""Extended Tofts on the committed phantom (data_sample/) against its truth.

The phantom simulates the tissue curves with the Parker AIF on a 0.05 s grid and samples them at
7 s frames, so the fit must convolve the Parker AIF on a fine grid (the default of
:func:`qmri.models.dce.parker_aif`) and find the bolus arrival to well under a frame.

Signal to concentration uses the TRUE T1 and B1 maps (nearest-neighbour resampled to the DCE
grid; the phantom's DCE flip angle is nominal x B1, like its VFA) and r1 from qmri's table by the
sidecar's ContrastAgent and MagneticFieldStrength (the phantom uses the same table).

ROIs (truth tissue map on the reference grid, looked up at the DCE voxel centres): tumour, and
marrow of the control (untreated) vertebral bodies; a voxel counts only if the 8 reference
voxels around its centre all hold that tissue (uniform tissue, no border voxel).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from qmri.models.dce import (
    ExtendedToftsModel,
    aif_from_blood_curve,
    detect_bolus_arrival,
    mean_curve,
    parker_aif,
    signal_to_concentration,
)
from qmri.registration import resample_nearest, target_to_source_indices

ROOT = Path(__file__).resolve().parents[1] / "data_sample"
TRUTH = ROOT / "derivatives" / "truth"
TISSUE = {"marrow": 1, "tumor": 3, "blood": 9}  # desc-tissue_dseg.tsv
HEMATOCRIT = 0.42  # as in the phantom (protocol.json)
#: Relative tolerance of the ROI medians (measured worst case 2.2 %: sub-01 fu1 tumour ve).
RTOL = {"Ktrans": 0.05, "ve": 0.05, "vp": 0.05}
CASES = [("01", "pre"), ("01", "fu1"), ("02", "pre"), ("02", "fu2")]

pytestmark = pytest.mark.skipif(not TRUTH.is_dir(), reason="data_sample/ not available")


@cache
def _protocol() -> dict:
    return json.loads((TRUTH / "protocol.json").read_text())


@cache
def _truth_table() -> dict[tuple[str, str], dict[str, float]]:
    lines = (TRUTH / "tissue_parameters.tsv").read_text().splitlines()
    head = lines[0].split("\t")
    out = {}
    for line in lines[1:]:
        row = dict(zip(head, line.split("\t"), strict=True))
        out[(row["session"], row["tissue"])] = {p: float(row[p]) for p in ("Ktrans", "ve", "vp")}
    return out


def _uniform(ref: np.ndarray, ref_affine: np.ndarray, shape, affine, value: int) -> np.ndarray:
    """DCE voxels whose 8 surrounding reference voxels all hold ``value``."""
    idx = target_to_source_indices(shape, affine, ref_affine)
    lo = np.floor(idx).astype(np.int64)
    ok = np.ones(shape, dtype=bool)
    for corner in np.ndindex(2, 2, 2):
        ijk = lo + np.array(corner)
        inside = np.all((ijk >= 0) & (ijk < np.array(ref.shape)), axis=-1)
        ijk = np.where(inside[..., None], ijk, 0)
        ok &= inside & (ref[ijk[..., 0], ijk[..., 1], ijk[..., 2]] == value)
    return ok


@cache
def _session(sub: str, ses: str):
    stem = f"sub-{sub}_ses-{ses}"
    img = nib.load(ROOT / f"sub-{sub}" / f"ses-{ses}" / "perf" / f"{stem}_dce.nii.gz")
    side = json.loads(Path(img.get_filename().replace(".nii.gz", ".json")).read_text())
    signal = np.asarray(img.dataobj, dtype=np.float32)
    shape = signal.shape[:3]
    anat = TRUTH / f"sub-{sub}" / f"ses-{ses}" / "anat"
    t1_img = nib.load(anat / f"{stem}_desc-truth_T1map.nii.gz")
    t1 = resample_nearest(np.asarray(t1_img.dataobj), t1_img.affine, shape, img.affine)
    b1_img = nib.load(
        TRUTH / f"sub-{sub}" / f"ses-{ses}" / "fmap" / f"{stem}_desc-truth_TB1map.nii.gz"
    )
    b1 = resample_nearest(
        np.asarray(b1_img.dataobj, float) / 100.0, b1_img.affine, shape, img.affine
    )
    tis_img = nib.load(anat / f"{stem}_desc-tissue_dseg.nii.gz")
    tissue = np.asarray(tis_img.dataobj).astype(np.int16)
    lab_img = nib.load(anat / f"{stem}_desc-truth_dseg.nii.gz")
    labels = np.asarray(lab_img.dataobj).astype(np.int16)
    names = dict(
        line.split("\t")
        for line in (anat / f"{stem}_desc-truth_dseg.tsv").read_text().splitlines()[1:]
    )
    treated = {
        r.split("\t")[1]
        for r in (ROOT / "participants.tsv").read_text().splitlines()[1:]
        if r.startswith(f"sub-{sub}\t")
    }
    control_vb = [int(i) for i, n in names.items() if n.startswith("vb_") and n[3:] not in treated]
    marrow_ref = np.where(np.isin(labels, control_vb), tissue, 0)
    rois = {
        "tumor": _uniform(tissue, tis_img.affine, shape, img.affine, TISSUE["tumor"]),
        "marrow": _uniform(marrow_ref, tis_img.affine, shape, img.affine, TISSUE["marrow"]),
        "blood": _uniform(tissue, tis_img.affine, shape, img.affine, TISSUE["blood"]),
    }
    mask = t1 > 0
    conc = signal_to_concentration(
        signal,
        np.where(mask, t1, 1.0),
        side["FlipAngle"],
        side["RepetitionTimeExcitation"],
        baseline_frames=side["BaselineFrames"],
        agent=side["ContrastAgent"],
        field_strength_t=side["MagneticFieldStrength"],
        b1=np.where(mask, b1, 1.0),
        mask=mask,
    ).concentration
    return np.asarray(side["VolumeTiming"], dtype=float), conc, rois


@pytest.mark.parametrize(("sub", "ses"), CASES, ids=[f"sub-{a}_ses-{b}" for a, b in CASES])
def test_bolus_arrival_matches_truth(sub, ses):
    t, conc, rois = _session(sub, ses)
    truth = _protocol()["protocol"]["dce_bolus_arrival_s"]
    aorta = detect_bolus_arrival(t, mean_curve(conc, rois["blood"]), method="parker")
    tumour = detect_bolus_arrival(t, mean_curve(conc, rois["tumor"]), method="parker")
    assert abs(aorta - truth) < 0.5
    assert abs(tumour - truth) < 1.0


@pytest.mark.parametrize(("sub", "ses"), CASES, ids=[f"sub-{a}_ses-{b}" for a, b in CASES])
def test_extended_tofts_roi_medians_match_truth(sub, ses):
    t, conc, rois = _session(sub, ses)
    arrival = detect_bolus_arrival(t, mean_curve(conc, rois["blood"]), method="parker")
    model = ExtendedToftsModel(t, parker_aif(t, delay_s=arrival, hematocrit=HEMATOCRIT))
    truth = _truth_table()
    for roi in ("tumor", "marrow"):
        assert rois[roi].sum() >= 5, f"{roi}: too few uniform voxels"
        fit = model.fit(conc, mask=rois[roi])
        assert fit.options["aif_fine_dt_s"] == pytest.approx(0.5)
        ref = truth[(ses, roi)]
        for p, rtol in RTOL.items():
            med = float(np.nanmedian(fit.maps[p][rois[roi]]))
            assert med == pytest.approx(ref[p], rel=rtol), f"{roi} {p}: {med:.4f} vs {ref[p]}"


@pytest.mark.parametrize("sub", ["01", "02"])
def test_aif_measured_in_the_aorta_label_recovers_truth(sub):
    """dce.aif = aorta: the AIF is the mean blood curve of the drawn aorta label, eroded.

    Measured (true T1, baseline session): tumour Ktrans +3.9 %, ve -0.3 %, vp -2.7 %; marrow
    within 2.5 %. The measured AIF is only known at the 7 s frames (piecewise linear between
    them), hence the looser Ktrans tolerance than with the finely sampled Parker curve.
    """
    from qmri.preprocess import artery_mask

    t, conc, rois = _session(sub, "pre")
    img = nib.load(ROOT / f"sub-{sub}" / "ses-pre" / "perf" / f"sub-{sub}_ses-pre_dce.nii.gz")
    dseg = ROOT / "derivatives" / "labels" / f"sub-{sub}" / "ses-pre" / "anat"
    mask = artery_mask(dseg / f"sub-{sub}_ses-pre_dseg.nii.gz", img.shape[:3], img.affine,
                       np.eye(4))  # fmt: skip
    assert mask.sum() >= 20
    assert (mask & ~rois["blood"]).sum() == 0  # eroded: no voxel touches the vessel wall
    aif = aif_from_blood_curve(t, mean_curve(conc, mask), hematocrit=HEMATOCRIT)
    model = ExtendedToftsModel(t, aif)
    truth = _truth_table()
    tolerance = {"Ktrans": 0.06, "ve": 0.03, "vp": 0.05}
    for roi in ("tumor", "marrow"):
        fit = model.fit(conc, mask=rois[roi])
        for p, rtol in tolerance.items():
            med = float(np.nanmedian(fit.maps[p][rois[roi]]))
            ref = truth[("pre", roi)][p]
            assert med == pytest.approx(ref, rel=rtol), f"{roi} {p}: {med:.4f} vs {ref}"


def test_aif_mask_needs_an_aorta_label(tmp_path):
    from qmri.errors import QMRIInputError
    from qmri.preprocess import artery_mask

    dseg = tmp_path / "sub-01_ses-pre_dseg.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.int16), np.eye(4)), dseg)
    (tmp_path / "sub-01_ses-pre_dseg.tsv").write_text("index\tname\n1\tvb_L1\n")
    with pytest.raises(QMRIInputError, match="no 'aorta' label for a measured AIF") as err:
        artery_mask(dseg, (4, 4, 4), np.eye(4), np.eye(4))
    assert str(dseg) in str(err.value)
