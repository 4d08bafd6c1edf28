"""The study index the workflow plans from, and the bad-input catalogue it enforces up front."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from qmri.errors import QMRIInputError
from qmri.phantom import write_phantom_dataset
from qmri.registry import FITS
from qmri.study import Study

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def bids(tmp_path: Path) -> Path:
    return write_phantom_dataset(
        tmp_path / "bids", n_subjects=1, sessions=("pre", "fu1"), small=True
    )


def _study(bids: Path) -> Study:
    return Study(bids, bids / "derivatives" / "labels", reference_suffix="T2w")


def test_index_finds_sessions_baseline_and_fits(bids):
    study = _study(bids)
    idx = study.subjects["01"]
    assert list(idx.sessions) == ["pre", "fu1"]  # ordered by days_from_sbrt
    assert idx.baseline == "pre"
    assert idx.days["pre"] <= 0 < idx.days["fu1"]
    assert study.fits("01", "fu1") == ["vfa", "mese", "adc", "ivim", "dce"]
    assert study.fits("01", "fu1", [FITS["vfa"], FITS["adc"]]) == ["vfa", "adc"]
    assert len(study.series_files("01", "pre", "VFA")) == 5
    assert study.session_pairs() == [("01", "pre"), ("01", "fu1")]


def test_a_session_without_a_series_has_no_fit_for_it(bids):
    for f in (bids / "sub-01" / "ses-fu1" / "dwi").iterdir():
        f.unlink()
    assert _study(bids).fits("01", "fu1") == ["vfa", "mese", "dce"]
    for f in (bids / "sub-01" / "ses-fu1" / "anat").glob("*_VFA.*"):
        f.unlink()
    assert _study(bids).fits("01", "fu1") == ["mese"]  # DCE needs the session's T1 map


def _raises(bids: Path, match: str) -> None:
    with pytest.raises(QMRIInputError, match=match) as info:
        _study(bids)
    assert "\n" not in str(info.value)


def test_missing_sidecar_field(bids):
    side = bids / "sub-01/ses-fu1/anat/sub-01_ses-fu1_flip-2_VFA.json"
    meta = json.loads(side.read_text())
    del meta["FlipAngle"]
    side.write_text(json.dumps(meta))
    _raises(bids, r"flip-2_VFA\.json: sidecar lacks required field 'FlipAngle'")


def test_volumes_disagree_with_bvals(bids):
    bval = bids / "sub-01/ses-pre/dwi/sub-01_ses-pre_dwi.bval"
    bval.write_text(" ".join(bval.read_text().split()[:-1]) + "\n")
    _raises(
        bids, r"ses-pre_dwi\.nii\.gz: \d+ volumes but \d+ b-values in sub-01_ses-pre_dwi\.bval"
    )


def test_echo_file_with_wrong_number_of_volumes(bids):
    echo = bids / "sub-01/ses-pre/anat/sub-01_ses-pre_echo-3_MESE.nii.gz"
    img = nib.load(echo)
    data = np.stack([np.asarray(img.dataobj)] * 2, axis=-1)
    nib.save(nib.Nifti1Image(data, img.affine), echo)
    _raises(bids, r"echo-3_MESE\.nii\.gz: expected one volume per file of the collection, got 2")


def test_label_grid_differs_from_reference(bids):
    dseg = bids / "derivatives/labels/sub-01/ses-pre/anat/sub-01_ses-pre_dseg.nii.gz"
    img = nib.load(dseg)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[:-1], img.affine), dseg)
    _raises(bids, r"_dseg\.nii\.gz: label grid \(.*\) does not match its reference")


def test_session_without_a_row_in_the_sessions_table(bids):
    (bids / "sub-01" / "ses-fu9" / "anat").mkdir(parents=True)
    _raises(bids, r"sub-01_sessions\.tsv: no row for session\(s\) ses-fu9")


def test_missing_labels(bids):
    (bids / "derivatives/labels/sub-01/ses-pre/anat/sub-01_ses-pre_dseg.nii.gz").unlink()
    _raises(bids, r"_dseg\.nii\.gz: no label map for the baseline session ses-pre")


@pytest.mark.slow
def test_workflow_stops_with_one_line_before_any_job(bids, tmp_path):
    side = bids / "sub-01/ses-fu1/anat/sub-01_ses-fu1_flip-2_VFA.json"
    side.write_text(json.dumps({"RepetitionTimeExcitation": 0.01}))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    res = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "1", "--dry-run", "--config",
         f"bids_dir={bids}", f"labels_dir={bids / 'derivatives/labels'}",
         f"output_dir={tmp_path / 'out'}"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert res.returncode != 0
    last = res.stderr.strip().splitlines()[-1]
    assert last == f"qmri: error: {side}: sidecar lacks required field 'FlipAngle'"
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "out" / "sub-01").exists()
