"""The DCE QC figure shows what was fitted (issue #12: the QC/fit drift).

A synthetic, noise-free DCE session whose T1 map lives on another grid (offset by 0.6 mm, so
nearest-neighbour and trilinear T1 differ at tissue borders) is fitted by the registry's DCE
estimator; the QC curves (:func:`qmri.steps.qc.dce_qc_curves`) of a tumour voxel at a T1 border
must be the concentration the fit saw and the model curve of the fitted parameters, with the
Parker AIF and with the AIF measured in the aorta label.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from qmri.config import schema_defaults
from qmri.models.dce import ExtendedToftsModel, parker_aif
from qmri.registration import identity_transform, write_transform
from qmri.registry import FITS
from qmri.steps.fit import fit_request
from qmri.steps.qc import dce_qc_curves

SHAPE = (10, 8, 3)
TIMES = np.arange(40) * 4.0
FLIP, TR, R1, HCT = 15.0, 0.005, 4.5, 0.42
TISSUE = {"Ktrans": 0.25, "ve": 0.3, "vp": 0.05}
T1_TISSUE, T1_NEIGHBOUR, T1_BLOOD = 1.2, 0.6, 1.44
ARRIVAL_S = 20.0
VOXEL = (5, 4, 1)  # first tumour column: its trilinear T1 would mix in the neighbour's


def _spgr(t1: np.ndarray, conc: np.ndarray) -> np.ndarray:
    r1 = 1.0 / t1[..., None] + R1 * conc
    e1 = np.exp(-TR * r1)
    a = np.deg2rad(FLIP)
    return 1000.0 * np.sin(a) * (1 - e1) / (1 - np.cos(a) * e1)


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """Files of the session: DCE series, T1 map (offset grid), labels, identity transforms."""
    root = tmp_path_factory.mktemp("dce")
    dce_affine = np.diag([2.0, 2.0, 2.0, 1.0])
    t1_affine = dce_affine.copy()
    t1_affine[0, 3] = 0.6  # T1 voxel i is nearest to DCE voxel i; trilinear mixes i-1 in
    t1 = np.full(SHAPE, T1_NEIGHBOUR)
    t1[5:, :, :] = T1_TISSUE
    aorta = np.zeros(SHAPE, bool)
    aorta[0:3, 0:3, :] = True
    t1[aorta] = T1_BLOOD
    plasma = parker_aif(TIMES, delay_s=ARRIVAL_S, hematocrit=HCT)
    tissue = ExtendedToftsModel(TIMES, plasma).predict(TISSUE)
    conc = np.zeros((*SHAPE, TIMES.size))
    conc[5:, :, :] = tissue
    conc[aorta] = np.asarray(plasma.cp) * (1 - HCT)  # whole blood
    signal = _spgr(t1, conc)  # DCE voxel i has the T1 of T1 voxel i (nearest neighbour)
    dce = root / "sub-01_ses-pre_dce.nii.gz"
    nib.save(nib.Nifti1Image(signal.astype(np.float32), dce_affine), dce)
    dce.with_name("sub-01_ses-pre_dce.json").write_text(json.dumps({
        "FlipAngle": FLIP, "RepetitionTimeExcitation": TR, "VolumeTiming": TIMES.tolist(),
        "BaselineFrames": 4,
    }))  # fmt: skip
    t1_path = root / "t1_T1map.nii.gz"
    nib.save(nib.Nifti1Image(t1.astype(np.float32), t1_affine), t1_path)
    labels = root / "sub-01_ses-pre_dseg.nii.gz"
    nib.save(nib.Nifti1Image(aorta.astype(np.int16) * 7, dce_affine), labels)
    labels.with_name("sub-01_ses-pre_dseg.tsv").write_text("index\tname\n7\taorta\n")
    xfm = write_transform(identity_transform(), root / "identity_xfm.txt")
    return {"dce": dce, "t1": t1_path, "labels": labels, "xfm": xfm, "plasma": plasma,
            "tissue": tissue}  # fmt: skip


@pytest.mark.parametrize("aif", ["parker", "aorta"])
def test_qc_curves_are_the_fitted_concentration_and_model(session, aif):
    options = {**schema_defaults()["dce"], "r1": R1, "hematocrit": HCT, "aif": aif}
    inputs = {"t1": session["t1"], "t1_xfm": session["xfm"]}
    if aif == "aorta":
        inputs.update(labels=session["labels"], session_xfm=session["xfm"])
    series = FITS["dce"].series.load([session["dce"]])
    request = fit_request(series=series, data=series.data, options=options, b1=None,
                          inputs=inputs, series_xfm=session["xfm"])  # fmt: skip
    kinetic = FITS["dce"].estimate(request).fits[0]
    mask = np.zeros(SHAPE, bool)
    mask[VOXEL] = True
    curves = dce_qc_curves(request=request, kinetic=kinetic.maps, masks={"voxel": mask})
    shown, model = curves["tissue_mM"]["voxel"], curves["fitted_mM"]["voxel"]
    # the concentration QC draws is the one fitted (noise-free: the truth, to conversion error)
    np.testing.assert_allclose(shown, session["tissue"], atol=2e-4)
    # the model curve is the fitted parameters' curve: the fit's R2 at the voxel, recomputed
    r2 = 1 - np.sum((shown - model) ** 2) / np.sum((shown - shown.mean()) ** 2)
    assert r2 == pytest.approx(float(kinetic.maps["R2"][VOXEL]), abs=1e-5)
    params = {p: float(kinetic.maps[p][VOXEL]) for p in ("Ktrans", "ve", "vp")}
    for name, value in params.items():
        assert value == pytest.approx(TISSUE[name], rel=0.02), name
    truth_aif = np.asarray(session["plasma"].cp)
    if aif == "aorta":  # the measured curve, not Parker at the detected arrival
        np.testing.assert_allclose(curves["aif_mM"], truth_aif, atol=2e-3 * truth_aif.max())
        assert curves["aif_fine"] is None
        assert "aorta" in curves["title"]
    else:
        assert curves["aif_fine"] is not None
        np.testing.assert_allclose(curves["aif_mM"], truth_aif, atol=0.05 * truth_aif.max())
