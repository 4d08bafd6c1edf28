"""Registration across timepoints on the spine phantom with large known motion, and a session
that cannot be registered (issue #4)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from qmri import phantom, rois
from qmri.registration import nifti_to_sitk, register_rigid, rotation_angles_deg

ROOT = Path(__file__).resolve().parents[1]
#: A T2-weighted-looking intensity per tissue index (air 0), to give registration real edges.
CONTRAST = np.array([0, 55, 55, 70, 95, 60, 230, 30, 80, 45], float)


def _image(tissue: np.ndarray, seed: int) -> np.ndarray:
    lut = np.resize(CONTRAST, int(tissue.max()) + 1)
    img = lut[tissue]
    return img + np.random.default_rng(seed).normal(0, 2.0, img.shape)


@pytest.mark.parametrize(
    ("rotation_deg", "translation_mm"),
    [((3.0, -5.0, 2.0), (8.0, -6.0, 5.0)), ((-5.0, 2.0, -3.0), (-4.0, 8.0, -7.0))],
)
def test_large_session_motion_is_recovered_at_the_treated_level(rotation_deg, translation_mm):
    ref = nib.load(ROOT / "data_sample/sub-01/ses-pre/anat/sub-01_ses-pre_T2w.nii.gz")
    levels, treated, centre = phantom.subject_layout(0)
    truth = np.eye(4)
    r = phantom.rotation_matrix(rotation_deg)
    truth[:3, :3] = r
    truth[:3, 3] = centre + np.asarray(translation_mm) - r @ centre
    tissue0, labels0 = phantom.anatomy_on_grid(ref.affine, ref.shape, subject=0)
    tissue1, _ = phantom.anatomy_on_grid(
        ref.affine, ref.shape, subject=0, baseline_to_session=truth
    )
    fixed = nifti_to_sitk(ref, _image(tissue0, 1))
    moving = nifti_to_sitk(ref, _image(tissue1, 2))
    table = phantom.label_names(levels)
    zooms = np.linalg.norm(ref.affine[:3, :3], axis=0)
    focus = rois.treated_region_mask(labels0, table, [treated], voxel_size_mm=zooms)
    mask = sitk.Cast(nifti_to_sitk(ref, focus.astype(np.float32)), sitk.sitkUInt8)
    got = register_rigid(fixed, moving, fixed_mask=mask).matrix_ras
    pts = np.append(centre, 1.0) + np.vstack(
        [np.zeros(4), *(np.eye(4)[:3] * s * 15 for s in (1, -1))]
    )
    err_mm = np.linalg.norm((pts @ got.T - pts @ truth.T)[:, :3], axis=1)
    assert err_mm.max() < 0.5, err_mm
    assert rotation_angles_deg(np.linalg.inv(truth) @ got) < 0.5


@pytest.mark.slow
def test_unregistrable_session_is_named_and_the_cohort_completes(tmp_path):
    bids = phantom.write_phantom_dataset(
        tmp_path / "bids", n_subjects=2, sessions=("pre", "fu1"), small=True
    )
    # sub-02's follow-up reference lies 50 cm away from everything else: nothing overlaps
    t2w = bids / "sub-02/ses-fu1/anat/sub-02_ses-fu1_T2w.nii.gz"
    img = nib.load(t2w)
    far = img.affine.copy()
    far[:3, 3] += 500.0
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), far), t2w)
    out = tmp_path / "out"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    res = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "2", "--keep-going", "--config",
         f"bids_dir={bids}", f"labels_dir={bids / 'derivatives/labels'}", f"output_dir={out}"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert res.returncode != 0
    assert (out / "sub-01" / "sub-01_roistats.csv").exists()  # the rest of the cohort completes
    assert not (out / "sub-02" / "sub-02_roistats.csv").exists()
    log = (out / "logs/register_session/sub-02_ses-fu1.log").read_text().strip().splitlines()
    assert log[-1] == (
        f"qmri: error: {t2w}: registration failed: the images do not overlap "
        "(check their positions) (registering to sub-02_ses-pre_T2w.nii.gz)"
    )
