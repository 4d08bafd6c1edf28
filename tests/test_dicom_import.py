"""DICOM MR import (qmri.dicom): phantom series written as DICOM here, converted back to BIDS.

The DICOM is made by tests/dicom_factory.py from a small phantom session (every series kind,
IRT1 and MEGRE included): classic one-file-per-slice series, the MESE as one enhanced
multi-frame file, sagittal slices (LPS geometry from the RAS affine), planted PHI. Nothing is
downloaded; pydicom's own test files (MR_small.dcm, rtstruct.dcm) ship with its wheel.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import io
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from dicom_factory import PHI_STRINGS, STUDY_DATE, UID_PREFIX, write_dicom_session
from pydicom.data import get_testdata_file
from test_phantom import validate_bids

from qmri import bids
from qmri.dicom import kinds
from qmri.dicom.classify import classify_session, load_mapping, series_kind
from qmri.dicom.convert import import_dicom_session, import_dicom_tree
from qmri.dicom.headers import read_series_headers
from qmri.dicom.nifti import bvecs_to_world, run_dcm2niix
from qmri.dicom.phi import ALLOWED_KEYS, is_denied, scrub_sidecar
from qmri.errors import QMRIInputError
from qmri.phantom import write_phantom_dataset
from qmri.registry import SERIES_KINDS
from qmri.tables import read_sessions_tsv

SBRT_DATE = STUDY_DATE + dt.timedelta(days=11)  # the phantom's baseline is day -11
STEM = "sub-01_ses-pre"
B1_MAPPING = "- series_description: b1map_afi\n  kind: TB1map\n"


def _tree_hash(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-session phantom with every series kind (small grid)."""
    root = write_phantom_dataset(
        tmp_path_factory.mktemp("phantom"), n_subjects=1, sessions=("pre",), seed=0,
        small=True, extra_series=("IRT1", "MEGRE"),
    )  # fmt: skip
    return root / "sub-01" / "ses-pre"


@pytest.fixture(scope="module")
def dicom_dir(phantom: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The phantom session as DICOM (MESE enhanced), plus a non-MR object and a text file."""
    out = tmp_path_factory.mktemp("dicom") / "sub-01" / "ses-pre"
    write_dicom_session(phantom, out, enhanced={"MESE"})
    shutil.copy(get_testdata_file("rtstruct.dcm"), out / "rtstruct.dcm")
    return out


@pytest.fixture(scope="module")
def mapping(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mapping") / "mapping.yaml"
    path.write_text(B1_MAPPING)
    return path


@pytest.fixture(scope="module")
def imported(dicom_dir: Path, mapping: Path, tmp_path_factory: pytest.TempPathFactory):
    """(report, bids_dir, input hashes before, input hashes after) of one session import."""
    bids_dir = tmp_path_factory.mktemp("bids")
    before = _tree_hash(dicom_dir)
    report = import_dicom_session(
        dicom_dir, bids_dir, subject="sub-01", session="ses-pre", mapping=mapping,
        sbrt_date=SBRT_DATE, reference_suffix="T2w",
    )  # fmt: skip
    return report, bids_dir, before, _tree_hash(dicom_dir)


@pytest.fixture(scope="module")
def phantom_truth(phantom: Path) -> dict:
    """The phantom's DCE sidecar."""
    return json.loads((phantom / "perf" / f"{STEM}_dce.json").read_text())


def _originals(phantom: Path) -> list[Path]:
    return sorted(phantom.rglob("*.nii.gz"))


# --------------------------------------------------------------------------------------------
# round trip
# --------------------------------------------------------------------------------------------


def test_every_kind_is_classified_and_written(imported) -> None:
    report, bids_dir, _, _ = imported
    kinds = {s.kind: s for s in report.series}
    assert set(kinds) == {"T2w", "VFA", "IRT1", "MESE", "MEGRE", "dwi", "dce", "TB1map"}
    assert len(kinds["VFA"].files) == 5
    assert len(kinds["VFA"].descriptions) == 5
    assert len(kinds["MESE"].files) == 8
    assert kinds["MESE"].descriptions == ("t2_mese_map",)
    assert len(kinds["IRT1"].files) == 6
    assert len(kinds["MEGRE"].files) == 6
    assert kinds["TB1map"].reason.startswith("mapping:")
    assert report.reference == bids_dir / "sub-01/ses-pre/anat" / f"{STEM}_T2w.nii.gz"
    assert [s.modality for s in report.skipped] == ["RTSTRUCT"]
    assert "sub-01 ses-pre: days_from_sbrt -11" in report.summary()


def test_round_trip_gives_the_original_files(imported, phantom: Path) -> None:
    """Every series: same names, same grid (affine to 1e-3 mm) and same values."""
    _, bids_dir, _, _ = imported
    session = bids_dir / "sub-01" / "ses-pre"
    originals = _originals(phantom)
    assert sorted(p.relative_to(session) for p in session.rglob("*.nii.gz")) == [
        p.relative_to(phantom) for p in originals
    ]
    for original in originals:
        a, b = nib.load(original), nib.load(session / original.relative_to(phantom))
        assert a.shape == b.shape, original.name
        np.testing.assert_allclose(b.affine, a.affine, atol=1e-3, err_msg=original.name)
        slope = float(a.dataobj.slope)
        np.testing.assert_allclose(
            np.asarray(b.dataobj), np.asarray(a.dataobj), atol=slope * 1e-3, rtol=1e-6,
            err_msg=original.name,
        )  # fmt: skip
        assert b.get_data_dtype() == a.get_data_dtype()
    # the stored integers and the DICOM rescale (slope 0.5, intercept -100) are kept exactly
    t2w = nib.load(session / "anat" / f"{STEM}_T2w.nii.gz")
    assert (t2w.dataobj.slope, t2w.dataobj.inter) == (0.5, -100.0)
    b1 = nib.load(session / "fmap" / f"{STEM}_TB1map.nii.gz")
    assert b1.dataobj.slope == pytest.approx(0.1)


def test_sidecar_parameters_equal_the_originals(imported, phantom: Path) -> None:
    _, bids_dir, _, _ = imported
    session = bids_dir / "sub-01" / "ses-pre"
    keys = ("FlipAngle", "EchoTime", "InversionTime", "RepetitionTimeExcitation",
            "MagneticFieldStrength", "VolumeTiming", "BaselineFrames", "ContrastAgent",
            "ContrastBolusIngredient")  # fmt: skip
    for original in sorted(phantom.rglob("*.json")):
        want = json.loads(original.read_text())
        got = json.loads((session / original.relative_to(phantom)).read_text())
        for key in keys:
            if key not in want:
                continue
            if isinstance(want[key], str | int) and not isinstance(want[key], bool):
                assert got[key] == want[key], (original.name, key)
            else:
                np.testing.assert_allclose(got[key], want[key], rtol=1e-9, err_msg=key)
        if "VFA" in original.name or "IRT1" in original.name or "MESE" in original.name:
            np.testing.assert_allclose(got["RepetitionTime"], want["RepetitionTime"], rtol=1e-9)
    dce = json.loads((session / "perf" / f"{STEM}_dce.json").read_text())
    assert "RepetitionTime" not in dce  # BIDS: VolumeTiming and RepetitionTime exclude each other
    b1 = json.loads((session / "fmap" / f"{STEM}_TB1map.json").read_text())
    assert b1["IntendedFor"] == [
        f"bids::sub-01/ses-pre/anat/{STEM}_flip-{i}_VFA.nii.gz" for i in range(1, 6)
    ]


def test_bvals_and_bvecs_round_trip(imported, phantom: Path) -> None:
    _, bids_dir, _, _ = imported
    dwi = bids_dir / "sub-01" / "ses-pre" / "dwi"
    src = phantom / "dwi"
    np.testing.assert_array_equal(
        np.loadtxt(dwi / f"{STEM}_dwi.bval"), np.loadtxt(src / f"{STEM}_dwi.bval")
    )
    affine = nib.load(dwi / f"{STEM}_dwi.nii.gz").affine
    got = bvecs_to_world(np.loadtxt(dwi / f"{STEM}_dwi.bvec"), affine)
    want = np.loadtxt(src / f"{STEM}_dwi.bvec")  # the phantom's vectors are its RAS axes
    np.testing.assert_allclose(np.abs(np.sum(got * want, axis=0)),
                               np.linalg.norm(want, axis=0), atol=1e-6)  # fmt: skip


def test_qmri_loaders_read_the_imported_session(imported) -> None:
    _, bids_dir, _, _ = imported
    files = bids.session_files(bids_dir, "01", "pre", list(SERIES_KINDS.values()),
                               reference_suffix="T2w")  # fmt: skip
    assert files.reference is not None
    assert files.b1map is not None
    for kind in ("VFA", "IRT1", "MESE", "MEGRE", "dwi", "dce"):
        series = SERIES_KINDS[kind].load(files.files(kind))
        assert series.data.ndim == 4
    dce = SERIES_KINDS["dce"].parameters(files.files("dce"))
    assert dce["BaselineFrames"] == 5
    assert dce["ContrastAgent"] == "gadoteridol"
    assert read_sessions_tsv(bids_dir / "sub-01" / "sub-01_sessions.tsv") == {"pre": -11}
    assert (bids_dir / "participants.tsv").read_text() == "participant_id\nsub-01\n"


def test_inputs_are_never_modified(imported) -> None:
    _, _, before, after = imported
    assert before == after


def test_bids_validator_accepts_the_import(imported) -> None:
    _, bids_dir, _, _ = imported
    report = validate_bids(bids_dir)
    errors = [i for i in report["issues"]["issues"] if i["severity"] == "error"]
    assert errors == []
    assert report["summary"]["subjects"] == ["01"]


# --------------------------------------------------------------------------------------------
# PHI
# --------------------------------------------------------------------------------------------


def _written_text(path: Path) -> str:
    """Text of a written file; for NIfTI its header and extensions (never the voxels)."""
    if path.name.endswith(".nii.gz"):
        raw = gzip.decompress(path.read_bytes())
        header = nib.Nifti1Header.from_fileobj(io.BytesIO(raw))
        return raw[: int(header["vox_offset"])].decode("latin-1")
    return path.read_text(encoding="utf-8")


def test_no_phi_in_any_written_file(imported, dicom_dir: Path, tmp_path: Path) -> None:
    _, bids_dir, _, _ = imported
    uids = {s.uid for s in read_series_headers(dicom_dir)}
    planted = [*PHI_STRINGS, UID_PREFIX, *uids]
    # the planted strings are in the DICOM input (the test can find them)
    sample = (dicom_dir / "01_t2_tse_sag" / "IM00001.dcm").read_bytes().decode("latin-1")
    assert all(s in sample for s in ("Doe", "PHI-PID-73519", "19580214", "20240304"))
    # ... and dcm2niix's own anonymised output still carries some of them (the scrub matters)
    raw = run_dcm2niix(sorted((dicom_dir / "01_t2_tse_sag").glob("*.dcm")), tmp_path / "raw")
    assert "PHI General Hospital" in json.dumps(raw[0].sidecar)
    assert "Time=81530" in _written_text(raw[0].nifti)
    files = [p for p in bids_dir.rglob("*") if p.is_file()]
    assert len(files) > 60
    for path in files:
        text = _written_text(path)
        found = [s for s in planted if s in text]
        assert not found, (path, found)
    for path in bids_dir.rglob("*.nii.gz"):
        header = nib.load(path).header
        assert header["descrip"].item() == b""
        assert header["aux_file"].item() == b""
        assert len(header.extensions) == 0


def test_scrub_sidecar_keeps_acquisition_keys_only() -> None:
    meta = {"FlipAngle": 15, "EchoTime": 0.002, "PatientName": "Doe", "StudyDate": "20240304",
            "AcquisitionTime": "08:15:30", "InstitutionName": "x", "SeriesDescription": "Doe",
            "DeviceSerialNumber": "1", "ImageComments": "Doe", "NewVendorField": "?",
            "PatientPosition": "HFS", "SeriesInstanceUID": "1.2"}  # fmt: skip
    assert scrub_sidecar(meta) == {"FlipAngle": 15, "EchoTime": 0.002, "PatientPosition": "HFS"}
    assert not [k for k in ALLOWED_KEYS if is_denied(k)]
    for key in (
        "PatientSex",
        "PatientAge",
        "OperatorsName",
        "ContrastBolusStartTime",
        "AcquisitionDateTime",
        "FrameOfReferenceUID",
        "StationName",
        "AccessionNumber",
    ):
        assert is_denied(key), key  # fmt: skip


# --------------------------------------------------------------------------------------------
# classification
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def headers(dicom_dir: Path):
    return read_series_headers(dicom_dir)


def test_headers_of_classic_and_enhanced_series(headers) -> None:
    by_name = {s.description: s for s in headers}
    mese = by_name["t2_mese_map"]
    assert mese.enhanced
    assert len(mese.files) == 1
    assert len(mese.echo_times) == 8
    assert mese.echo_times[:2] == (10.0, 20.0)  # ms, from the per-frame MR Echo sequence
    dce = by_name["dce_vibe_dyn"]
    assert not dce.enhanced
    assert len(dce.temporal_positions) == 32
    assert dce.contrast_agent == "ProHance"
    assert dce.field_strength == 1.5
    assert by_name["ep2d_diff_ivim"].b_values == (0, 50, 100, 200, 400, 600, 800)
    assert by_name["t1_ir_ti0350"].inversion_times == (350.0,)
    assert by_name["t1_vfa_fa10"].repetition_times == (10.0,)
    assert dce.study_date == STUDY_DATE


def test_unclassifiable_series_is_one_error_line(headers) -> None:
    with pytest.raises(QMRIInputError) as err:
        classify_session(headers, reference_suffix="T2w")
    message = str(err.value)
    assert "\n" not in message
    assert "15_b1map_afi" in message
    assert "'b1map_afi'" in message
    assert "VFA needs >= 2 flip angles" in message
    result = classify_session(headers, reference_suffix="T2w", skip_unknown=True)
    assert "TB1map" not in result.kinds()
    assert {s.description for s in result.skipped} == {"b1map_afi", ""}  # "" is the RTSTRUCT


def test_import_refuses_an_unclassifiable_series_and_writes_nothing(dicom_dir, tmp_path) -> None:
    with pytest.raises(QMRIInputError, match="cannot classify series 'b1map_afi'"):
        import_dicom_session(dicom_dir, tmp_path, subject="01", session="pre",
                             sbrt_date=SBRT_DATE, reference_suffix="T2w")  # fmt: skip
    assert not any(tmp_path.iterdir())


def test_mapping_file_overrides_the_rules(headers, tmp_path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(
        "- series_description: '(?i)B1MAP_AFI'\n  kind: TB1map\n"
        "- series_description: t2_mese_map\n  kind: skip\n"
        "- series_description: t2_tse_sag\n  kind: reference\n"
        "- series_description: 't1_ir_ti.*'\n  kind: skip\n"
    )
    result = classify_session(headers, mapping=load_mapping(path, reference_suffix="T1w"),
                              reference_suffix="T1w")  # fmt: skip
    kinds = result.kinds()
    assert set(kinds) == {"T1w", "VFA", "MEGRE", "dwi", "dce", "TB1map"}
    assert kinds["T1w"].descriptions == ("t2_tse_sag",)
    assert {s.description for s in result.skipped} >= {"t2_mese_map", "t1_ir_ti0050"}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("- {series_description: x, kind: T3map}\n", "unknown kind 'T3map'"),
        ("- {series_description: '(', kind: skip}\n", "invalid regex"),
        ("- {description: x, kind: skip}\n", "exactly the keys"),
        ("series_description: x\n", "holds a list"),
    ],
)
def test_bad_mapping_files_are_refused(tmp_path, text: str, problem: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(QMRIInputError, match=problem):
        load_mapping(path)


def test_two_candidates_of_one_kind_are_refused(headers, tmp_path) -> None:
    path = tmp_path / "two.yaml"
    path.write_text(B1_MAPPING + "- series_description: t2star_megre\n  kind: T2w\n")
    with pytest.raises(QMRIInputError, match="2 series could be the session's T2w"):
        classify_session(headers, mapping=load_mapping(path), reference_suffix="T2w")


def test_pydicom_mr_small_is_refused_in_one_line(tmp_path) -> None:
    src = tmp_path / "mr"
    src.mkdir()
    shutil.copy(get_testdata_file("MR_small.dcm"), src / "MR_small.dcm")
    (series,) = read_series_headers(src)
    assert series.modality == "MR"
    assert series.scanning_sequence == {"SE"}
    kind, reason = series_kind(series)
    assert kind is None
    assert "derived image" in reason
    with pytest.raises(QMRIInputError, match=r"MR_small\.dcm: cannot classify series"):
        import_dicom_session(src, tmp_path / "bids", subject="01", session="pre",
                             sbrt_date=SBRT_DATE, reference_suffix="T2w")  # fmt: skip
    with pytest.raises(QMRIInputError, match="no MR series to import"):
        import_dicom_session(src, tmp_path / "bids", subject="01", session="pre",
                             sbrt_date=SBRT_DATE, reference_suffix="T2w", skip_unknown=True)  # fmt: skip


def test_a_folder_without_dicom_is_refused(tmp_path) -> None:
    (tmp_path / "notes.txt").write_text("no images here\n")
    with pytest.raises(QMRIInputError, match="no DICOM files found"):
        read_series_headers(tmp_path)


# --------------------------------------------------------------------------------------------
# re-runs, dates, batches
# --------------------------------------------------------------------------------------------


def test_rerun_on_an_imported_session_is_an_error(imported, dicom_dir, mapping) -> None:
    _, bids_dir, _, _ = imported
    before = _tree_hash(bids_dir)
    with pytest.raises(QMRIInputError, match="session already imported"):
        import_dicom_session(dicom_dir, bids_dir, subject="01", session="pre", mapping=mapping,
                             sbrt_date=SBRT_DATE, reference_suffix="T2w")  # fmt: skip
    tree = import_dicom_tree(dicom_dir.parent.parent, bids_dir, mapping=mapping,
                             sbrt_dates={"01": SBRT_DATE}, reference_suffix="T2w")  # fmt: skip
    assert tree.imported == ()
    assert tree.already_present == (("01", "pre"),)
    assert _tree_hash(bids_dir) == before
    assert not [p for p in bids_dir.iterdir() if p.name.startswith(".qmri-import")]


@pytest.fixture(scope="module")
def small_dicom(phantom: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Only the T2w and the VFA series, axial slices (a second geometry)."""
    out = tmp_path_factory.mktemp("small") / "02" / "fu1"
    write_dicom_session(phantom, out, kinds={"T2w", "VFA"}, grid_axes=(0, 1, 2),
                        grid_flips=(False, True, False))  # fmt: skip
    return out


def test_axial_slices_round_trip(small_dicom: Path, phantom: Path, tmp_path) -> None:
    report = import_dicom_session(small_dicom, tmp_path, subject="02", session="fu1",
                                  sbrt_date=SBRT_DATE, reference_suffix="T2w")  # fmt: skip
    written = report.series[0].files[0]
    original = nib.load(phantom / "anat" / f"{STEM}_T2w.nii.gz")
    got = nib.load(written)
    np.testing.assert_allclose(got.affine, original.affine, atol=1e-3)
    np.testing.assert_array_equal(np.asarray(got.dataobj), np.asarray(original.dataobj))


def test_a_series_qmri_refuses_names_its_dicom_series(small_dicom: Path, tmp_path) -> None:
    """VFA without RepetitionTime: qmri's loader refuses it, naming the file and the series."""
    src = tmp_path / "dicom"
    shutil.copytree(small_dicom, src)
    for path in src.glob("*_t1_vfa_fa*/*.dcm"):
        ds = pydicom.dcmread(path)
        del ds.RepetitionTime
        ds.save_as(path)
    with pytest.raises(QMRIInputError) as err:
        import_dicom_session(src, tmp_path / "bids", subject="02", session="fu1",
                             sbrt_date=SBRT_DATE, reference_suffix="T2w")  # fmt: skip
    message = str(err.value)
    assert message.startswith(str(tmp_path / "bids" / "sub-02" / "ses-fu1" / "anat"))
    assert "lacks required field 'RepetitionTimeExcitation'" in message
    assert "'t1_vfa_fa03'" in message
    assert not (tmp_path / "bids" / "sub-02").exists()
    assert [p.name for p in (tmp_path / "bids").iterdir()] == []


def test_days_from_sbrt_needs_a_date_or_a_row(small_dicom: Path, tmp_path) -> None:
    with pytest.raises(QMRIInputError, match="no SBRT date given"):
        import_dicom_session(small_dicom, tmp_path, subject="02", session="fu1",
                             reference_suffix="T2w")  # fmt: skip
    table = tmp_path / "sub-02" / "sub-02_sessions.tsv"
    table.parent.mkdir(parents=True)
    table.write_text("session_id\tdays_from_sbrt\tscanner\nses-fu1\t98\t1.5T\n")
    with pytest.raises(QMRIInputError, match="disagrees with the study date"):
        import_dicom_session(small_dicom, tmp_path, subject="02", session="fu1",
                             sbrt_date=SBRT_DATE, reference_suffix="T2w")  # fmt: skip
    report = import_dicom_session(small_dicom, tmp_path, subject="02", session="fu1",
                                  reference_suffix="T2w")  # fmt: skip
    assert report.days_from_sbrt == 98
    assert table.read_text() == "session_id\tdays_from_sbrt\tscanner\nses-fu1\t98\t1.5T\n"


def test_participants_rows_are_appended_never_rewritten(small_dicom: Path, tmp_path) -> None:
    participants = tmp_path / "participants.tsv"
    participants.write_text("participant_id\ttreated_levels\tdose_gy\nsub-01\tT11\t35\n")
    import_dicom_session(small_dicom, tmp_path, subject="02", session="fu1",
                         sbrt_date=STUDY_DATE - dt.timedelta(days=98), reference_suffix="T2w")  # fmt: skip
    assert participants.read_text() == (
        "participant_id\ttreated_levels\tdose_gy\nsub-01\tT11\t35\nsub-02\tn/a\tn/a\n"
    )
    assert read_sessions_tsv(tmp_path / "sub-02" / "sub-02_sessions.tsv") == {"fu1": 98}


def test_tree_import_takes_labels_from_folders(dicom_dir, small_dicom, mapping, tmp_path) -> None:
    root = tmp_path / "tree"
    shutil.copytree(dicom_dir, root / "sub-01" / "ses-pre")
    shutil.copytree(small_dicom, root / "02" / "fu1")
    bids_dir = tmp_path / "bids"
    dates = {"sub-01": SBRT_DATE, "02": STUDY_DATE - dt.timedelta(days=98)}
    tree = import_dicom_tree(root, bids_dir, mapping=mapping, sbrt_dates=dates,
                             reference_suffix="T2w")  # fmt: skip
    assert [(r.subject, r.session, r.days_from_sbrt) for r in tree.imported] == [
        ("01", "pre", -11),
        ("02", "fu1", 98),
    ]
    again = import_dicom_tree(root, bids_dir, mapping=mapping, sbrt_dates=dates,
                              reference_suffix="T2w")  # fmt: skip
    assert again.imported == ()
    assert again.already_present == (("01", "pre"), ("02", "fu1"))


# --------------------------------------------------------------------------------------------
# DCE and DWI details
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("storage", "bolus_start", "baseline"),
    [
        ("TemporalPositionIdentifier", False, None),  # qmri detects it from the bolus arrival
        ("AcquisitionNumber", True, 5),  # frames numbered as Siemens does
        ("enhanced", True, 5),
    ],
)
def test_dce_storage_variants(phantom: Path, phantom_truth, tmp_path, storage, bolus_start,
                              baseline) -> None:  # fmt: skip
    src = tmp_path / "dce"
    write_dicom_session(
        phantom, src, kinds={"dce"}, dce_bolus_start=bolus_start,
        enhanced={"dce"} if storage == "enhanced" else (),
        dce_temporal_tag="AcquisitionNumber" if storage == "AcquisitionNumber"
        else "TemporalPositionIdentifier",
    )  # fmt: skip
    report = import_dicom_session(src, tmp_path / "bids", subject="01", session="pre",
                                  sbrt_date=SBRT_DATE, reference_suffix="T2w")  # fmt: skip
    (dce,) = report.series
    params = SERIES_KINDS["dce"].parameters(dce.files)
    assert params["BaselineFrames"] == baseline
    assert params["FrameTimes"] == phantom_truth["VolumeTiming"]
    original = nib.load(phantom / "perf" / f"{STEM}_dce.nii.gz")
    written = nib.load(dce.files[0])
    np.testing.assert_array_equal(np.asarray(written.dataobj), np.asarray(original.dataobj))
    assert written.header.get_zooms()[3] == pytest.approx(7.0)


def test_dwi_from_headers_equals_dcm2niix(headers, imported, tmp_path) -> None:
    """The fallback for series whose b-values dcm2niix does not read gives the same result."""
    _, bids_dir, _, _ = imported
    (dwi,) = [s for s in headers if s.description == "ep2d_diff_ivim"]
    image, _, bvals, world = kinds._dwi_from_headers(dwi, kinds.Scratch(tmp_path))
    written = nib.load(bids_dir / "sub-01/ses-pre/dwi" / f"{STEM}_dwi.nii.gz")
    np.testing.assert_array_equal(image.raw, np.asarray(written.dataobj.get_unscaled()))
    np.testing.assert_array_equal(
        bvals, np.loadtxt(written.get_filename().replace(".nii.gz", ".bval"))
    )
    bvec = np.loadtxt(written.get_filename().replace(".nii.gz", ".bvec"))
    np.testing.assert_allclose(np.abs(np.sum(world * bvecs_to_world(bvec, written.affine), axis=0)),
                               np.abs(np.sum(world * world, axis=0)), atol=1e-6)  # fmt: skip


# --------------------------------------------------------------------------------------------
# the data sample, full size
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_data_sample_session_round_trip(tmp_path) -> None:
    sample = Path(__file__).resolve().parents[1] / "data_sample" / "sub-01" / "ses-pre"
    src = tmp_path / "dicom"
    write_dicom_session(sample, src, enhanced={"MESE"})
    mapping = tmp_path / "m.yaml"
    mapping.write_text(B1_MAPPING)
    report = import_dicom_session(src, tmp_path / "bids", subject="01", session="pre",
                                  mapping=mapping, sbrt_date=SBRT_DATE, reference_suffix="T2w")  # fmt: skip
    assert report.days_from_sbrt == -11
    for original in _originals(sample):
        a = nib.load(original)
        b = nib.load(report.session_dir / original.relative_to(sample))
        np.testing.assert_allclose(b.affine, a.affine, atol=1e-3)
        np.testing.assert_allclose(np.asarray(b.dataobj), np.asarray(a.dataobj),
                                   atol=float(a.dataobj.slope) * 1e-3)  # fmt: skip


@pytest.mark.parametrize(
    ("group", "creator", "element", "vr", "value", "want"),
    [
        (0x0019, "SIEMENS MR HEADER", 0x0C, "IS", "800", 800.0),
        (0x0043, "GEMS_PARM_01", 0x39, "IS", ["1000000600", "8", "0", "0"], 600.0),
        (0x2001, "Philips Imaging DD 001", 0x03, "FL", 400.0, 400.0),
    ],
)
def test_vendor_b_value_tags(group, creator, element, vr, value, want) -> None:
    """b-values in the vendors' private tags, when DiffusionBValue is absent."""
    from pydicom.dataset import Dataset

    from qmri.dicom.headers import _vendor_b_value

    ds = Dataset()
    ds.private_block(group, creator, create=True).add_new(element, vr, value)
    assert _vendor_b_value(ds) == want
    assert _vendor_b_value(Dataset()) is None
