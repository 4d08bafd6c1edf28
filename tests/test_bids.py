"""BIDS discovery and the bad-input catalogue: one line, naming the file and the problem."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from qmri import bids
from qmri.errors import QMRIInputError
from qmri.registry import SERIES_KINDS

KINDS = list(SERIES_KINDS.values())

AFFINE = np.diag([2.0, 2.0, 3.0, 1.0])


def _nii(path: Path, shape=(4, 5, 6), value=100.0, affine=AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.full(shape, value, np.float32), affine), str(path))
    return path


def _json(path: Path, **meta) -> Path:
    path.write_text(json.dumps(meta))
    return path


@pytest.fixture
def session(tmp_path: Path) -> Path:
    """A minimal session: reference, 3 VFA flips, 3 MESE echoes, a DWI with 4 volumes."""
    (tmp_path / "dataset_description.json").write_text('{"Name": "t", "BIDSVersion": "1.10.0"}')
    ses = tmp_path / "sub-01" / "ses-pre"
    stem = "sub-01_ses-pre"
    _nii(ses / "anat" / f"{stem}_T2w.nii.gz")
    for i, fa in enumerate((3, 10, 20), start=1):
        p = _nii(ses / "anat" / f"{stem}_flip-{i}_VFA.nii.gz")
        _json(bids.sidecar_path(p), FlipAngle=fa, RepetitionTimeExcitation=0.01)
    for i, te in enumerate((0.01, 0.02, 0.03), start=1):
        p = _nii(ses / "anat" / f"{stem}_echo-{i}_MESE.nii.gz")
        _json(bids.sidecar_path(p), EchoTime=te)
    dwi = _nii(ses / "dwi" / f"{stem}_dwi.nii.gz", shape=(4, 5, 6, 4))
    dwi.with_name(f"{stem}_dwi.bval").write_text("0 200 400 800\n")
    (tmp_path / "sub-01" / "sub-01_sessions.tsv").write_text(
        "session_id\tdays_from_sbrt\nses-pre\t-3\n"
    )
    return tmp_path


def test_session_files_finds_every_series_in_index_order(session):
    f = bids.session_files(session, "01", "pre", KINDS, reference_suffix="T2w")
    assert f.reference is not None
    assert [p.name.split("_")[2] for p in f.files("VFA")] == ["flip-1", "flip-2", "flip-3"]
    assert len(f.files("MESE")) == 3
    assert f.files("dwi")
    assert f.b1map is None
    assert f.available["dwi"]
    assert not f.available["dce"]
    bids.check_session(f, KINDS)  # a good session passes


def test_loaded_series_carry_their_parameters(session):
    f = bids.session_files(session, "01", "pre", KINDS, reference_suffix="T2w")
    vfa = SERIES_KINDS["VFA"].load(f.files("VFA"))
    assert vfa.data.shape == (4, 5, 6, 3)
    assert vfa.parameters == {"FlipAngle": [3.0, 10.0, 20.0], "RepetitionTimeExcitation": 0.01}
    assert SERIES_KINDS["MESE"].load(f.files("MESE")).parameters["EchoTime"] == [0.01, 0.02, 0.03]
    assert SERIES_KINDS["dwi"].load(f.files("dwi")).parameters["bvals"] == [0, 200, 400, 800]


def _one_line_error(func, *args, match: str) -> QMRIInputError:
    with pytest.raises(QMRIInputError, match=match) as info:
        func(*args)
    assert "\n" not in str(info.value)
    return info.value


def test_missing_sidecar_field_names_the_sidecar(session):
    f = bids.session_files(session, "01", "pre", KINDS, reference_suffix="T2w")
    side = bids.sidecar_path(f.files("VFA")[1])
    _json(side, RepetitionTimeExcitation=0.01)
    err = _one_line_error(
        bids.check_session,
        f,
        KINDS,
        match=r"flip-2_VFA\.json: sidecar lacks required field 'FlipAngle'",
    )
    assert err.path == str(side)


def test_missing_sidecar_file(session):
    f = bids.session_files(session, "01", "pre", KINDS, reference_suffix="T2w")
    bids.sidecar_path(f.files("MESE")[0]).unlink()
    _one_line_error(
        bids.check_session, f, KINDS, match=r"echo-1_MESE\.json: JSON sidecar not found"
    )


def test_dwi_volume_count_disagrees_with_bvals(session):
    f = bids.session_files(session, "01", "pre", KINDS, reference_suffix="T2w")
    f.files("dwi")[0].with_name("sub-01_ses-pre_dwi.bval").write_text("0 200 400\n")
    _one_line_error(
        bids.check_session,
        f,
        KINDS,
        match=r"_dwi\.nii\.gz: 4 volumes but 3 b-values in sub-01_ses-pre_dwi\.bval",
    )


def test_vfa_file_with_several_volumes(session):
    f = bids.session_files(session, "01", "pre", KINDS, reference_suffix="T2w")
    _nii(f.files("VFA")[2], shape=(4, 5, 6, 2))
    _one_line_error(
        bids.check_session, f, KINDS, match=r"flip-3_VFA\.nii\.gz: expected one volume per file"
    )


def test_vfa_grid_mismatch(session):
    f = bids.session_files(session, "01", "pre", KINDS, reference_suffix="T2w")
    _nii(f.files("VFA")[1], shape=(4, 5, 7))
    _one_line_error(bids.check_session, f, KINDS, match=r"flip-2_VFA\.nii\.gz: grid differs from")


def test_echo_times_must_increase(session):
    f = bids.session_files(session, "01", "pre", KINDS, reference_suffix="T2w")
    _json(bids.sidecar_path(f.files("MESE")[2]), EchoTime=0.015)
    _one_line_error(
        bids.check_session, f, KINDS, match=r"EchoTime must increase with the echo index"
    )


def test_non_numeric_flip_angle(session):
    f = bids.session_files(session, "01", "pre", KINDS, reference_suffix="T2w")
    _json(bids.sidecar_path(f.files("VFA")[0]), FlipAngle="three", RepetitionTimeExcitation=0.01)
    _one_line_error(
        bids.check_session, f, KINDS, match=r"'FlipAngle' must be a number, got 'three'"
    )


def test_corrupt_nifti(session):
    f = bids.session_files(session, "01", "pre", KINDS, reference_suffix="T2w")
    f.reference.write_bytes(b"not a nifti")
    _one_line_error(
        bids.check_session, f, KINDS, match=r"_T2w\.nii\.gz: not a readable NIfTI image"
    )


def test_b1_ratio_detects_percent_and_ratio(tmp_path):
    ratio, conv = bids.b1_ratio(np.full((3, 3), 95.0), tmp_path / "b1.nii.gz")
    assert conv == "percent"
    np.testing.assert_allclose(ratio, 0.95)
    ratio, conv = bids.b1_ratio(np.full((3, 3), 1.05), tmp_path / "b1.nii.gz")
    assert conv == "ratio"
    np.testing.assert_allclose(ratio, 1.05)
    with pytest.raises(QMRIInputError, match="neither a ratio"):
        bids.b1_ratio(np.full((3, 3), 10.0), tmp_path / "b1.nii.gz")


def test_discovery_errors(tmp_path):
    with pytest.raises(QMRIInputError, match="not a BIDS dataset"):
        bids.discover_subjects(tmp_path)
    (tmp_path / "dataset_description.json").write_text("{}")
    with pytest.raises(QMRIInputError, match="no sub-\\* folders"):
        bids.discover_subjects(tmp_path)
    (tmp_path / "sub-01").mkdir()
    with pytest.raises(QMRIInputError, match="participant_label not found: 02"):
        bids.discover_subjects(tmp_path, ["sub-02"])
    assert bids.discover_subjects(tmp_path, ["01"]) == ["01"]
