"""Study import from a DICOM folder (qmri.dicom.study), ``qmri import dicom|rtstruct|rtdose``.

A one-session DICOM folder of phantom sub-01 (MR series + planning CT, RTSTRUCT, RTDOSE,
RTPLAN) is imported once per module; the whole round trip through the workflow is in
``tests/test_workflow.py::test_dicom_round_trip``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from dicom_study_factory import write_dicom_study

from qmri.cli import main
from qmri.dicom.convert import labelled_dirs
from qmri.dicom.dataset import set_participant_values
from qmri.dicom.study import (
    derive_treated_levels,
    find_rt_objects,
    import_dicom_study,
    import_for_workflow,
    read_clinical_table,
)
from qmri.errors import QMRIInputError

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data_sample"
LABELS = SAMPLE / "derivatives" / "labels" / "sub-01" / "ses-pre" / "anat"


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    root = tmp_path_factory.mktemp("dicom_study")
    dicom = write_dicom_study(
        root, clinical="participant_id\tage\tPatientName\tvcf_event\nsub-01\t67\tDoe^Jane\t0\n"
    )
    bids = root / "bids"
    report = import_dicom_study(
        dicom, bids, labels_dir=bids / "derivatives" / "labels",
        dose_dir=bids / "derivatives" / "dose", reference_suffix="T2w",
    )  # fmt: skip
    return dicom, bids, report


def test_study_import_writes_sessions_labels_dose_and_participants(imported):
    _, bids, report = imported
    (subject,) = report.subjects
    assert subject.sbrt_date_from == "RTPLAN (RTPlanDate)"
    assert [r.session for r in subject.sessions] == ["pre"]
    assert (bids / "sub-01" / "sub-01_sessions.tsv").read_text().splitlines() == [
        "session_id\tdays_from_sbrt",
        "ses-pre\t-11",
    ]
    anat = bids / "derivatives" / "labels" / "sub-01" / "ses-pre" / "anat"
    assert subject.labels == anat / "sub-01_ses-pre_dseg.nii.gz"
    assert (anat / "sub-01_ses-pre_desc-ctvplan_mask.nii.gz").is_file()
    assert (anat / "sub-01_ses-pre_from-planning_to-T2w_mode-image_xfm.txt").is_file()
    assert (bids / "derivatives" / "labels" / "dataset_description.json").is_file()
    assert subject.dose == bids / "derivatives" / "dose" / "sub-01" / "sub-01_dose.nii.gz"
    # the phantom's truth: T11 treated, 35 Gy in 5 fractions
    assert subject.treated_levels == ["T11"]
    assert "plan CTV" in subject.treated_from
    rows = [ln.split("\t") for ln in (bids / "participants.tsv").read_text().splitlines()]
    table = dict(zip(rows[0], rows[1], strict=True))
    assert table == {
        "participant_id": "sub-01", "fractions": "5", "dose_gy": "35", "treated_levels": "T11",
        "age": "67", "vcf_event": "0",
    }  # fmt: skip
    assert "Doe" not in (bids / "participants.tsv").read_text()  # a PHI column is never copied
    assert "SpinalCanal" in " ".join(subject.notes)  # unknown structure listed, not guessed


def test_imported_labels_match_the_sample_labels(imported):
    _, bids, _ = imported
    anat = bids / "derivatives" / "labels" / "sub-01" / "ses-pre" / "anat"
    got = np.asarray(nib.load(anat / "sub-01_ses-pre_dseg.nii.gz").dataobj)
    ref = np.asarray(nib.load(LABELS / "sub-01_ses-pre_dseg.nii.gz").dataobj)
    names_got = dict(
        ln.split("\t")[:2]
        for ln in (anat / "sub-01_ses-pre_dseg.tsv").read_text().splitlines()[1:]
    )
    names_ref = dict(
        ln.split("\t")[:2]
        for ln in (LABELS / "sub-01_ses-pre_dseg.tsv").read_text().splitlines()[1:]
    )
    inv = {v: int(k) for k, v in names_got.items()}
    for index, name in names_ref.items():
        if name not in inv:
            continue
        a, b = got == inv[name], ref == int(index)
        dice = 2 * (a & b).sum() / (a.sum() + b.sum())
        # measured 0.87-0.99 on the 3 x 2.5 x 2.5 mm sample grid (tests/test_rt_import.py)
        assert dice > 0.85, (name, dice)
    for name in ("tumor", "vb_T11", "cord_T11"):
        assert name in inv


def test_rerun_imports_nothing_new(imported, tmp_path):
    dicom, bids, _ = imported
    before = {p: p.stat().st_mtime_ns for p in bids.rglob("*") if p.is_file()}
    again = import_dicom_study(
        dicom, bids, labels_dir=bids / "derivatives" / "labels",
        dose_dir=bids / "derivatives" / "dose", reference_suffix="T2w",
    )  # fmt: skip
    (subject,) = again.subjects
    assert subject.sessions == []
    assert subject.present == ["pre"]
    assert subject.labels is None
    assert subject.dose is None
    after = {p: p.stat().st_mtime_ns for p in bids.rglob("*") if p.is_file()}
    assert after == before


def test_workflow_dose_dir_resolution(imported):
    dicom, bids, _ = imported
    cfg = {"bids_dir": str(bids), "dicom_dir": str(dicom), "dose_dir": None}
    assert import_for_workflow(cfg, run_import=False) == f"{bids}/derivatives/dose"
    cfg["dose_dir"] = "/elsewhere"
    assert import_for_workflow(cfg, run_import=False) == "/elsewhere"
    cfg.update(dose_dir=None, bids_dir=str(bids.parent / "nowhere"))
    assert import_for_workflow(cfg, run_import=False) is None


def test_cli_single_session_and_errors(imported, tmp_path, capsys):
    dicom, _, _ = imported
    out = tmp_path / "bids"
    code = main(["import", "dicom", str(dicom / "sub-01" / "pre"), str(out), "--subject", "01",
                 "--session", "pre", "--sbrt-date", "2024-01-17",
                 "--mapping", str(dicom / "series_mapping.yaml")])  # fmt: skip
    assert code in (0, None)
    assert "days_from_sbrt -11" in capsys.readouterr().out
    assert (out / "sub-01" / "ses-pre" / "anat" / "sub-01_ses-pre_T2w.nii.gz").is_file()
    res = subprocess.run(
        [sys.executable, "-m", "qmri", "import", "dicom", str(dicom), str(tmp_path / "b2"),
         "--subject", "01"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "qmri: error: give both --subject and --session (one session), or neither"
    ]


def test_cli_rtstruct_and_rtdose(imported, tmp_path, capsys):
    dicom, bids, _ = imported
    rt = dicom / "sub-01" / "rt"
    ref = bids / "sub-01" / "ses-pre" / "anat" / "sub-01_ses-pre_T2w.nii.gz"
    dseg = tmp_path / "sub-01_ses-pre_dseg.nii.gz"
    xfm = tmp_path / "xfm.txt"
    main(["import", "rtstruct", str(rt / "rtstruct.dcm"), str(rt), "--reference", str(ref),
          "--out", str(dseg), "--out-xfm", str(xfm), "--treated-levels", "T11"])  # fmt: skip
    text = capsys.readouterr().out
    assert "tumor:" in text
    assert "SpinalCanal" in text
    main(["import", "rtdose", str(rt / "rtdose.dcm"), "--reference", str(ref),
          "--out", str(tmp_path / "dose.nii.gz"), "--transform", str(xfm),
          "--rtplan", str(rt / "rtplan.dcm")])  # fmt: skip
    assert "fractions 5, prescription 35.0 Gy" in capsys.readouterr().out
    study_dose = bids / "derivatives" / "dose" / "sub-01" / "sub-01_dose.nii.gz"
    a = np.asarray(nib.load(tmp_path / "dose.nii.gz").dataobj)
    b = np.asarray(nib.load(study_dose).dataobj)
    assert np.abs(a - b).max() < 0.05  # Gy: the same registration, run twice


def test_clinical_table_checks(tmp_path):
    path = tmp_path / "participants.tsv"
    assert read_clinical_table(path) == {}
    path.write_text("participant_id\tsbrt_date\tage\n01\t2024-01-17\tn/a\n")
    assert read_clinical_table(path) == {"01": {"sbrt_date": "2024-01-17"}}
    for text, message in [
        ("id\tage\n01\t3\n", "no participant_id column"),
        ("participant_id\tsbrt_date\nsub-01\t17.01.2024\n", r"is not a date \(YYYY-MM-DD\)"),
        ("participant_id\nsub-01\n01\n", "listed twice"),
        ("participant_id\tage\nsub-01\n", "has 1 cells, the header 2"),
    ]:
        path.write_text(text)
        with pytest.raises(QMRIInputError, match=message) as err:
            read_clinical_table(path)
        assert str(path) in str(err.value)


def test_participant_values_fill_but_never_overwrite(tmp_path):
    path = tmp_path / "participants.tsv"
    path.write_text("participant_id\tdose_gy\nsub-01\tn/a\nsub-02\t24\n")
    set_participant_values(tmp_path, "01", {"dose_gy": "35", "fractions": "5"})
    assert path.read_text() == (
        "participant_id\tdose_gy\tfractions\nsub-01\t35\t5\nsub-02\t24\tn/a\n"
    )
    set_participant_values(tmp_path, "02", {"dose_gy": "24.0"})  # same number: kept
    assert "sub-02\t24\tn/a" in path.read_text()
    with pytest.raises(QMRIInputError, match="sub-02 has dose_gy '24'; the import found '30'"):
        set_participant_values(tmp_path, "02", {"dose_gy": "30"})
    with pytest.raises(QMRIInputError, match="no row for sub-03"):
        set_participant_values(tmp_path, "03", {"dose_gy": "30"})


def test_rt_folder_is_not_a_session_and_duplicates_are_refused(imported, tmp_path):
    dicom, _, _ = imported
    assert [s for s, _ in labelled_dirs(dicom / "sub-01", "ses", skip={"rt"})] == ["pre"]
    rt = tmp_path / "rt"
    shutil.copytree(dicom / "sub-01" / "rt", rt)
    assert set(find_rt_objects(rt)) == {"RTSTRUCT", "RTDOSE", "RTPLAN"}
    shutil.copy(rt / "rtdose.dcm", rt / "rtdose_beam2.dcm")
    with pytest.raises(QMRIInputError, match="2 RTDOSE objects"):
        find_rt_objects(rt)


def test_treated_levels_from_the_gtv_without_a_plan_ctv(tmp_path):
    # the sample's own labels: tumour in T11 (participants.tsv of data_sample)
    levels, rule = derive_treated_levels(LABELS / "sub-01_ses-pre_dseg.nii.gz", None)
    assert levels == ["T11"]
    assert "GTV" in rule
    shutil.copy(LABELS / "sub-01_ses-pre_dseg.nii.gz", tmp_path / "x_dseg.nii.gz")
    (tmp_path / "x_dseg.tsv").write_text("index\tname\n1\tvb_T11\n")
    levels, rule = derive_treated_levels(tmp_path / "x_dseg.nii.gz", None)
    assert levels == []
    assert "no plan CTV and no GTV" in rule
