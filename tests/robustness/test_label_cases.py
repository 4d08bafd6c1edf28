"""Robustness catalogue, label-map group (file level; issue 14, docs/robustness.md).

The study index checks the label map's header (3D, the baseline reference's grid) and that its
``dseg.tsv`` exists when the workflow is planned; the table's content and the voxel values are
read by the ``derive_rois`` job (:func:`qmri.steps.rois.derive_subject_rois`), which ends with
one line naming the file.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from qmri.errors import QMRIInputError
from qmri.roimask import read_rois
from qmri.steps.rois import derive_subject_rois
from qmri.steps.runner import run_step

from .conftest import (
    AFFINE,
    DSEG_NAMES,
    SHAPE,
    StudyFiles,
    dseg_data,
    expect_error,
    save,
    write_dseg,
)


def _tsv(study: StudyFiles) -> Path:
    return Path(str(study.dseg).replace(".nii.gz", ".tsv"))


def _derive(study: StudyFiles, out: Path) -> Path:
    """Run the ``derive_rois`` job's step on the study's baseline labels."""
    return derive_subject_rois(
        subject="01", dseg=study.dseg, reference=study.anat("T2w.nii.gz"),
        participants=study.participants, ctv_plan=None, out_mask=out,
    )  # fmt: skip


def _with_value(value: float, dtype: type = np.float32) -> np.ndarray:
    data = dseg_data().astype(dtype)
    data[1, 1, 1] = value
    return data


@dataclass(frozen=True)
class JobCase:
    """A label map or table that passes the plan and fails the ``derive_rois`` job."""

    name: str
    data: Callable[[], np.ndarray]
    names: dict[int, str] | str
    named: str  # "map" or "table": the file the line names
    problem: str


JOB_CASES = [
    JobCase(
        "label map with fractional float values",
        lambda: _with_value(1.5),
        DSEG_NAMES,
        "map",
        r"^label image holds non-integer values \(1.5\) in 1 voxel\(s\): a label map holds "
        r"whole label indices from 0 to 16777216, not interpolated or scaled values$",
    ),
    JobCase(
        "label map with NaN",
        lambda: _with_value(np.nan),
        DSEG_NAMES,
        "map",
        r"^label image holds non-integer values \(nan\) in 1 voxel\(s\)",
    ),
    JobCase(
        "label map with negative values",
        lambda: _with_value(-1, np.int16),
        DSEG_NAMES,
        "map",
        r"^label image holds negative values \(-1\)$",
    ),
    JobCase(
        "label index missing from dseg.tsv",
        lambda: _with_value(9, np.int16),
        DSEG_NAMES,
        "map",
        r"^label value\(s\) 9 are not in the label table$",
    ),
    JobCase(
        "dseg.tsv with duplicate names",
        dseg_data,
        {**DSEG_NAMES, 3: "vb_L1"},
        "table",
        r"^duplicate label name 'vb_L1' \(indices 1 and 3\)$",
    ),
    JobCase(
        "dseg.tsv with a duplicate index",
        dseg_data,
        "index\tname\n1\tvb_L1\n2\tvb_L2\n2\tvb_L3\n4\tpe_L2\n5\ttumor\n",
        "table",
        r"^duplicate label index 2$",
    ),
    JobCase(
        "dseg.tsv with a name off the contract",
        dseg_data,
        {**DSEG_NAMES, 1: "VB_l1"},
        "table",
        r"^label name 'VB_l1' does not follow the contract: expected <structure>\[_<level>\]",
    ),
    JobCase(
        "dseg.tsv with a non-integer index",
        dseg_data,
        "index\tname\n1.5\tvb_L1\n",
        "table",
        r"^label index '1.5' is not an integer$",
    ),
    JobCase(
        "dseg.tsv without a name column",
        dseg_data,
        "index\tlabel\n1\tvb_L1\n",
        "table",
        r"^label table lacks column\(s\) name \(has index, label\)$",
    ),
]


@pytest.mark.parametrize("case", JOB_CASES, ids=[c.name for c in JOB_CASES])
def test_bad_label_file_fails_the_derive_rois_job(case, study, tmp_path):
    write_dseg(study.dseg, case.data(), case.names)
    study.plan()  # headers only: the plan passes
    path = study.dseg if case.named == "map" else _tsv(study)
    expect_error(_derive, study, tmp_path / "rois.nii.gz", path=path, match=case.problem)
    assert not (tmp_path / "rois.nii.gz").exists()


def test_the_job_ends_with_the_one_line_on_stderr_and_in_its_log(study, tmp_path, capsys):
    """Through the job runner the workflow uses: exit status 2, the line as the log's last."""
    write_dseg(study.dseg, _with_value(1.5), DSEG_NAMES)
    job = SimpleNamespace(log=[str(tmp_path / "derive.log")], rule="derive_rois", config={})
    with pytest.raises(SystemExit) as info:
        run_step(
            job, derive_subject_rois, subject="01", dseg=study.dseg,
            reference=study.anat("T2w.nii.gz"), participants=study.participants, ctv_plan=None,
            out_mask=tmp_path / "rois.nii.gz",
        )  # fmt: skip
    assert info.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"qmri: error: {study.dseg}: label image holds non-integer values")
    assert (tmp_path / "derive.log").read_text().splitlines()[-1] == err[0]


@dataclass(frozen=True)
class PlanCase:
    """A label file the study index refuses before any job."""

    name: str
    damage: Callable[[StudyFiles], None]
    named: Callable[[StudyFiles], Path]
    problem: str


PLAN_CASES = [
    PlanCase(
        "4D label map",
        lambda s: save(s.dseg, np.ones((*SHAPE, 2)), dtype=np.int16),
        lambda s: s.dseg,
        r"^expected a 3D image, got shape \(2, 3, 4, 2\)$",
    ),
    PlanCase(
        "label map on another grid",
        lambda s: save(s.dseg, np.ones((2, 3, 5)), dtype=np.int16),
        lambda s: s.dseg,
        r"^label grid \(2, 3, 5\) does not match its reference sub-01_ses-pre_T2w\.nii\.gz "
        r"\(2, 3, 4\) \(labels must be drawn on the baseline reference\)$",
    ),
    PlanCase(
        "truncated label map",
        lambda s: s.dseg.write_bytes(s.dseg.read_bytes()[:-20]),
        lambda s: s.dseg,
        r"^truncated gzip file: the compressed stream ends before its end marker$",
    ),
    PlanCase(
        "dseg.tsv missing",
        lambda s: _tsv(s).unlink(),
        _tsv,
        r"^label table \(index, name\) not found beside the label map$",
    ),
]


@pytest.mark.parametrize("case", PLAN_CASES, ids=[c.name for c in PLAN_CASES])
def test_bad_label_file_stops_the_plan(case, study):
    case.damage(study)
    expect_error(study.plan, path=case.named(study), match=case.problem)


def test_float_label_map_with_whole_values_gives_the_integer_rois(study, tmp_path):
    ints = read_rois(_derive(study, tmp_path / "a.nii.gz"))[0]
    write_dseg(study.dseg, dseg_data().astype(np.float32), DSEG_NAMES)
    floats = read_rois(_derive(study, tmp_path / "b.nii.gz"))[0]
    assert list(floats) == list(ints)
    for name in ints:
        assert_array_equal(floats[name], ints[name])


def test_empty_tumor_gives_an_empty_tumor_roi(study, tmp_path):
    """``tumor`` is in the table but has no voxel: the tumour ROI is an empty mask (kept, not
    dropped), the CTV is the treated vertebral body (no sector touched)."""
    data = dseg_data()
    data[data == 5] = 2
    write_dseg(study.dseg, data, DSEG_NAMES)
    rois, affine = read_rois(_derive(study, tmp_path / "rois.nii.gz"))
    assert not rois["tumor"].any()
    assert_array_equal(rois["ctv"], data == 2)
    assert_array_equal(rois["vb_treated_nontumor"], data == 2)
    assert_array_equal(affine, AFFINE)


def test_label_of_the_table_without_voxels_gives_an_empty_roi(study, tmp_path):
    data = dseg_data()
    data[data == 3] = 0  # vb_L3 listed, not drawn
    write_dseg(study.dseg, data, DSEG_NAMES)
    rois, _ = read_rois(_derive(study, tmp_path / "rois.nii.gz"))
    assert not rois["vb_L3"].any()
    assert not rois["vb_adjacent"][data == 0].any()
    assert_array_equal(rois["vb_adjacent"], data == 1)  # L1 still adjacent to treated L2


@pytest.mark.parametrize(
    ("levels", "data", "problem"),
    [
        ("L4", dseg_data, r"treated level L4 has no vertebral-body label \(vb_L4\)"),
        (
            "L3",
            lambda: np.where(dseg_data() == 3, 0, dseg_data()).astype(np.int16),
            r"treated level L3: its vertebral-body label vb_L3 is empty in the label image",
        ),
    ],
    ids=["treated level not in the table", "treated level empty in the map"],
)
def test_treated_level_that_is_not_labelled_names_the_file(levels, data, problem, study, tmp_path):
    study.participants.write_text(f"participant_id\ttreated_levels\nsub-01\t{levels}\n")
    write_dseg(study.dseg, data(), DSEG_NAMES)
    with pytest.raises(QMRIInputError) as info:
        _derive(study, tmp_path / "rois.nii.gz")
    assert "\n" not in str(info.value)
    assert re.search(problem, info.value.problem)
    assert info.value.path == str(study.participants)
    assert info.value.problem.startswith("sub-01: treated level ")
    assert info.value.problem.endswith(f"({study.dseg.name})")
