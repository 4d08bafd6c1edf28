"""Robustness catalogue, dataset group (issue 14; outcomes listed in docs/robustness.md).

What a dataset holds besides its series: ``participants.tsv``, each subject's
``sub-<s>_sessions.tsv``, its session folders and baseline, the shape of its paths and links.
The study index the workflow plans from (:class:`qmri.study.Study`) refuses a bad one before any
job, with one line naming the file or folder; names with spaces or non-ASCII characters and
symbolic links that resolve are read as they are. Datasets are one-subject subsets of
``data_sample/`` (:func:`.subsets.sample_subset`); the workflow itself runs on such paths in
``test_fault_cases.py`` (spaces, non-ASCII) and ``test_privacy_cases.py`` (linked images).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from qmri.study import Study

from .conftest import expect_error
from .subsets import ALL_SERIES, SAMPLE, sample_subset

#: Series of the subsets planned by the error cases (headers and sidecars are read: a small
#: subset keeps them quick); the result cases plan every series.
SERIES = ("T2w", "VFA", "TB1map")


def _plan(bids: Path) -> Study:
    """Index the dataset as the workflow does when it is planned."""
    return Study(bids, bids / "derivatives" / "labels", reference_suffix="T2w")


def _sub(bids: Path) -> Path:
    return bids / "sub-01"


def _sessions_tsv(bids: Path) -> Path:
    return _sub(bids) / "sub-01_sessions.tsv"


def _participants(bids: Path) -> Path:
    return bids / "participants.tsv"


def _ses(name: str) -> Callable[[Path], Path]:
    return lambda bids: _sub(bids) / f"ses-{name}"


def _vfa2(bids: Path) -> Path:
    return _sub(bids) / "ses-fu1" / "anat" / "sub-01_ses-fu1_flip-2_VFA.nii.gz"


def _reference(bids: Path) -> Path:
    return _sub(bids) / "ses-fu1" / "anat" / "sub-01_ses-fu1_T2w.nii.gz"


def _dseg(bids: Path) -> Path:
    return (bids / "derivatives" / "labels" / "sub-01" / "ses-pre" / "anat"
            / "sub-01_ses-pre_dseg.nii.gz")  # fmt: skip


def _write(path_of: Callable[[Path], Path], text: str) -> Callable[[Path], None]:
    return lambda bids: path_of(bids).write_text(text)


def _dangle(path_of: Callable[[Path], Path]) -> Callable[[Path], None]:
    """Replace a file or folder by a symbolic link to a path that does not exist."""

    def damage(bids: Path) -> None:
        path = path_of(bids)
        shutil.rmtree(path) if path.is_dir() else path.unlink()
        path.symlink_to(bids.parent / "moved-away" / path.name)

    return damage


def _loop(bids: Path) -> None:
    path = _vfa2(bids)
    path.unlink()
    path.symlink_to(path.name)  # a link to itself


def _drop_baseline_folder(bids: Path) -> None:
    shutil.rmtree(_ses("pre")(bids))


def _empty_session(with_row: bool) -> Callable[[Path], None]:
    def damage(bids: Path) -> None:
        (_ses("fu2")(bids) / "anat").mkdir(parents=True)  # folders, no file
        if with_row:
            with _sessions_tsv(bids).open("a") as fh:
                fh.write("ses-fu2\t177\n")

    return damage


def _dangling_subject(bids: Path) -> None:
    (bids / "sub-02").symlink_to(bids.parent / "elsewhere" / "sub-02")


def _no_session_folders(bids: Path) -> None:
    for ses in ("pre", "fu1"):
        shutil.rmtree(_ses(ses)(bids))


@dataclass(frozen=True)
class PlanCase:
    """A dataset damaged by ``damage``: the plan must stop with one line naming ``named``."""

    name: str
    damage: Callable[[Path], None]
    named: Callable[[Path], Path]
    problem: str  # regular expression for the problem (after "<file>: ")


_DAYS = "session_id\tdays_from_sbrt\n"
_PART = "participant_id\ttreated_levels\n"

PLAN_CASES = [
    PlanCase(
        "no participants.tsv",
        lambda bids: _participants(bids).unlink(),
        _participants,
        r"^participants table not found \(qmri needs treated_levels for every subject\)$",
    ),
    PlanCase(
        "participants.tsv without the subject",
        _write(_participants, _PART + "sub-02\tL1\n"),
        _participants,
        r"^no treated_levels for sub-01 \(needed to derive the ROIs\)$",
    ),
    PlanCase(
        "participants.tsv without treated_levels",
        _write(_participants, "participant_id\tage\nsub-01\t67\n"),
        _participants,
        r"^no treated_levels for sub-01 \(needed to derive the ROIs\)$",
    ),
    PlanCase(
        "treated_levels n/a",
        _write(_participants, _PART + "sub-01\tn/a\n"),
        _participants,
        r"^treated_levels of sub-01 is empty \(qmri needs the treated vertebral level\(s\), "
        r"e\.g\. T12,L1, to derive the ROIs\)$",
    ),
    PlanCase(
        "treated_levels with an unknown level",
        _write(_participants, _PART + "sub-01\tL9\n"),
        _participants,
        r"^participant sub-01: treated_levels: unknown vertebral level\(s\) L9 in 'L9' "
        r"\(expected C1\.\.C7, T1\.\.T12, L1\.\.L5, S1\.\.S5\)$",
    ),
    PlanCase(
        "participants.tsv comma-separated",
        _write(_participants, "participant_id,treated_levels\nsub-01,T11\n"),
        _participants,
        r"^lacks column\(s\) participant_id \(has participant_id,treated_levels\)$",
    ),
    PlanCase(
        "participant listed twice",
        _write(_participants, _PART + "sub-01\tT11\nsub-01\tL1\n"),
        _participants,
        r"^participant 'sub-01' is listed twice$",
    ),
    PlanCase(
        "no sessions.tsv",
        lambda bids: _sessions_tsv(bids).unlink(),
        _sessions_tsv,
        r"^sessions table not found \(qmri needs days_from_sbrt per session\)$",
    ),
    PlanCase(
        "non-integer days_from_sbrt",
        _write(_sessions_tsv, _DAYS + "ses-pre\t-11.5\nses-fu1\t98\n"),
        _sessions_tsv,
        r"^days_from_sbrt of session 'ses-pre' is not an integer: '-11\.5'$",
    ),
    PlanCase(
        "days_from_sbrt n/a",
        _write(_sessions_tsv, _DAYS + "ses-pre\tn/a\nses-fu1\t98\n"),
        _sessions_tsv,
        r"^days_from_sbrt of session 'ses-pre' is not an integer: 'n/a'$",
    ),
    PlanCase(
        "sessions.tsv without days_from_sbrt",
        _write(_sessions_tsv, "session_id\tdays\nses-pre\t-11\nses-fu1\t98\n"),
        _sessions_tsv,
        r"^lacks column\(s\) days_from_sbrt \(has session_id, days\)$",
    ),
    PlanCase(
        "session listed twice",
        _write(_sessions_tsv, _DAYS + "ses-pre\t-11\nses-fu1\t98\nses-pre\t-4\n"),
        _sessions_tsv,
        r"^session 'ses-pre' is listed twice$",
    ),
    PlanCase(
        "follow-ups but no baseline folder",
        _drop_baseline_folder,
        _sessions_tsv,
        r"^no baseline session: no session folder has days_from_sbrt <= 0 \(ses-fu1 \(\+98\)\); "
        r"qmri needs a session on or before the SBRT day \(ses-pre \(-11\) has a row but no "
        r"folder\)$",
    ),
    PlanCase(
        "follow-ups only (every day after SBRT)",
        _write(_sessions_tsv, _DAYS + "ses-pre\t3\nses-fu1\t98\n"),
        _sessions_tsv,
        r"^no baseline session: no session folder has days_from_sbrt <= 0 \(ses-fu1 \(\+98\), "
        r"ses-pre \(\+3\)\); qmri needs a session on or before the SBRT day$",
    ),
    PlanCase(
        "empty session folder",
        _empty_session(with_row=True),
        _ses("fu2"),
        r"^empty session folder \(no file in it\): remove it, or add the session's images$",
    ),
    PlanCase(
        "empty session folder without a row",
        _empty_session(with_row=False),
        _sessions_tsv,
        r"^no row for session\(s\) ses-fu2 \(empty folder: ses-fu2; remove it or add its "
        r"data\)$",
    ),
    PlanCase(
        "subject without session folders",
        _no_session_folders,
        _sub,
        r"^no ses-\* folders \(qmri needs one session per timepoint\)$",
    ),
    PlanCase(
        "broken symbolic link (series file)",
        _dangle(_vfa2),
        _vfa2,
        r"^broken symbolic link: its target .*/moved-away/sub-01_ses-fu1_flip-2_VFA\.nii\.gz "
        r"does not exist$",
    ),
    PlanCase(
        "broken symbolic link (reference)",
        _dangle(_reference),
        _reference,
        r"^broken symbolic link: its target .*/moved-away/sub-01_ses-fu1_T2w\.nii\.gz does "
        r"not exist$",
    ),
    PlanCase(
        "broken symbolic link (label map)",
        _dangle(_dseg),
        _dseg,
        r"^broken symbolic link: its target .*/moved-away/sub-01_ses-pre_dseg\.nii\.gz does "
        r"not exist$",
    ),
    PlanCase(
        "broken symbolic link (session folder)",
        _dangle(_ses("fu1")),
        _ses("fu1"),
        r"^broken symbolic link: its target .*/moved-away/ses-fu1 does not exist",
    ),
    PlanCase(
        "broken symbolic link (subject folder)",
        _dangling_subject,
        lambda bids: bids / "sub-02",
        r"^broken symbolic link: its target .*/elsewhere/sub-02 does not exist",
    ),
    PlanCase(
        "symbolic link loop",
        _loop,
        _vfa2,
        r"^symbolic link loop \(-> sub-01_ses-fu1_flip-2_VFA\.nii\.gz\)$",
    ),
]


@pytest.mark.parametrize("case", PLAN_CASES, ids=[c.name for c in PLAN_CASES])
def test_bad_dataset_stops_the_plan_before_any_job(case, tmp_path):
    bids = sample_subset(tmp_path / "bids", series=SERIES)
    _plan(bids)  # the subset plans
    case.damage(bids)
    expect_error(_plan, bids, path=case.named(bids), match=case.problem)


# --------------------------------------------------------------------------------------------
# documented results: the same index whatever the path or the links
# --------------------------------------------------------------------------------------------


def _index(study: Study) -> dict:
    """Everything the workflow plans from, with paths relative to the dataset."""
    root = study.bids_dir

    def rel(path: Path | None) -> str | None:
        return None if path is None else str(path.relative_to(root))

    out = {}
    for subject, idx in study.subjects.items():
        out[subject] = {
            "baseline": idx.baseline,
            "days": idx.days,
            "labels": str(idx.labels.relative_to(study.labels_dir)),
            "sessions": {
                ses: {
                    "reference": rel(f.reference),
                    "b1map": rel(f.b1map),
                    "series": {k: [rel(p) for p in v] for k, v in f.series.items()},
                    "fits": study.fits(subject, ses),
                }
                for ses, f in idx.sessions.items()
            },
        }
    return out


@pytest.fixture(scope="module")
def plain_index(tmp_path_factory) -> dict:
    """The index of a plain copy (every series, pre and fu1)."""
    bids = sample_subset(tmp_path_factory.mktemp("plain") / "bids", series=ALL_SERIES)
    index = _index(_plan(bids))
    assert index["01"]["sessions"]["fu1"]["fits"] == ["vfa", "mese", "adc", "ivim", "dce"]
    return index


def test_paths_with_spaces_and_non_ascii_characters_are_indexed_as_any(plain_index, tmp_path):
    """A dataset under ``my study ä ö 日本/bids data ü``: the same index (the workflow run
    on such paths: ``test_fault_cases.py``)."""
    bids = sample_subset(tmp_path / "my study ä ö 日本" / "bids data ü", series=ALL_SERIES)
    study = _plan(bids)
    assert _index(study) == plain_index
    assert all(" " in str(p) for p in study.series_files("01", "pre", "VFA"))


def test_symlinked_images_are_read_through_their_links(plain_index, tmp_path):
    """Every image, ``.bval`` and ``.bvec`` a link into ``data_sample/``: the same index; the
    files are the links (``Sources`` of the outputs name them), not their targets."""
    bids = sample_subset(tmp_path / "bids", series=ALL_SERIES, link=True)
    study = _plan(bids)
    assert _index(study) == plain_index
    vfa = study.series_files("01", "pre", "VFA")
    assert all(p.is_symlink() and SAMPLE in p.resolve().parents for p in vfa)


def test_symlinked_folders_and_dataset_are_read_through_their_links(plain_index, tmp_path):
    """The subject folder, the labels folder and the dataset itself links: the same index."""
    real = sample_subset(tmp_path / "store" / "bids", series=ALL_SERIES)
    linked = tmp_path / "linked"
    linked.mkdir()
    for entry in real.iterdir():  # the dataset's top level links to the store...
        (linked / entry.name).symlink_to(entry)
    assert (linked / "sub-01").is_symlink()
    assert (linked / "derivatives").is_symlink()
    assert _index(_plan(linked)) == plain_index
    alias = tmp_path / "alias"  # ...and the dataset folder itself is a link
    alias.symlink_to(real, target_is_directory=True)
    assert _index(_plan(alias)) == plain_index


def test_a_session_row_without_a_folder_is_not_planned(tmp_path):
    """``sub-01_sessions.tsv`` may list sessions not (yet) on disk: only folders are planned
    (the baseline is chosen among them)."""
    bids = sample_subset(tmp_path / "bids", series=SERIES)
    with _sessions_tsv(bids).open("a") as fh:
        fh.write("ses-fu2\t177\nses-screen\t-30\n")
    idx = _plan(bids).subjects["01"]
    assert list(idx.sessions) == ["pre", "fu1"]
    assert idx.baseline == "pre"
    assert idx.days == {"pre": -11, "fu1": 98, "fu2": 177, "screen": -30}
