"""The study index: subjects, sessions, baselines and files, built once when the workflow starts.

:class:`Study` is what ``workflow/rules/common.smk`` asks "which jobs exist?". It reads folder
names, ``sub-*_sessions.tsv`` and the sidecars and headers of every series (never voxel data),
so a bad file stops the run, with one line naming it, before any job starts. Adding a
``ses-*`` folder (and its row in the sessions table) adds that session's jobs and nothing else.

What a dataset must hold beyond the series (``docs/robustness.md``, dataset group):
``participants.tsv`` with the treated level(s) of every subject analysed, a
``sub-<s>_sessions.tsv`` with an integer ``days_from_sbrt`` for every session folder, a
baseline (a session folder on or before the SBRT day, ``days_from_sbrt`` <= 0), no empty
session folder and no broken symbolic link among a subject's files or labels. Symbolic links
that resolve are read as the files they point to.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qmri import bids, tables
from qmri.errors import QMRIInputError
from qmri.io import load_nifti
from qmri.registry import FITS, SERIES_KINDS, FitSpec


@dataclass(frozen=True)
class SubjectIndex:
    """What the workflow needs to know about one subject."""

    subject: str
    days: dict[str, int]
    baseline: str
    sessions: dict[str, bids.SessionFiles]
    labels: Path
    sessions_tsv: Path
    ctv_plan: Path | None = None


#: The treatment plan's CTV beside the labels (``sub-S_ses-B_desc-ctvplan_mask.nii.gz``,
#: optional; written by the RTSTRUCT import): plan structures overlap the labels.
CTV_PLAN_SUFFIX = "desc-ctvplan_mask.nii.gz"


def _check_labels_grid(labels: Path, reference: Path | None) -> None:
    """The label map must be drawn on the baseline reference: same grid (headers only)."""
    table = Path(str(labels).replace(".nii.gz", ".tsv"))
    if not table.exists():
        raise QMRIInputError("label table (index, name) not found beside the label map", table)
    _check_grid(labels, reference)


def _check_grid(labels: Path, reference: Path | None) -> None:
    """A label image or mask must share the grid of the baseline reference (headers only)."""
    img = load_nifti(labels, ndim=3)
    ref = load_nifti(reference, ndim=3) if reference is not None else None
    if ref is not None and (
        img.shape != ref.shape or not np.allclose(img.affine, ref.affine, atol=1e-3)
    ):
        raise QMRIInputError(
            f"label grid {img.shape} does not match its reference {reference.name} {ref.shape} "
            "(labels must be drawn on the baseline reference)",
            labels,
        )


def _check_links(folder: Path) -> None:
    """Every symbolic link under ``folder`` (folder links followed once) must resolve.

    A dangling link would otherwise be skipped as a missing folder (a whole session left out
    without a word) or reported as a missing reference, label map or series file.
    """
    seen: set[Path] = set()
    stack = [folder]
    while stack:
        current = stack.pop()
        real = current.resolve()
        if real in seen:
            continue
        seen.add(real)
        for entry in sorted(os.scandir(current), key=lambda e: e.name):
            path = Path(entry.path)
            if entry.is_symlink():
                try:
                    path.stat()
                except OSError as exc:
                    target = os.readlink(path)
                    if exc.errno == errno.ELOOP:
                        problem = f"symbolic link loop (-> {target})"
                    else:
                        problem = f"broken symbolic link: its target {target} does not exist"
                    raise QMRIInputError(problem, path) from None
            if entry.is_dir():  # follows links
                stack.append(path)


def _has_files(folder: Path) -> bool:
    """Whether ``folder`` holds a file anywhere below it (links followed)."""
    return any(p.is_file() for p in folder.rglob("*"))


def _check_treated_levels(participants: Path, subject: str) -> None:
    """``participants.tsv`` must give the subject's treated level(s) (the ROIs need them)."""
    if not participants.is_file():
        raise QMRIInputError(
            "participants table not found (qmri needs treated_levels for every subject)",
            participants,
        )
    if not tables.treated_levels(participants, subject):
        raise QMRIInputError(
            f"treated_levels of sub-{subject} is empty (qmri needs the treated vertebral "
            "level(s), e.g. T12,L1, to derive the ROIs)",
            participants,
        )


def _baseline(days: Mapping[str, int], folders: Sequence[str], sessions_tsv: Path) -> str:
    """The baseline among the session folders, or one line naming the sessions table."""
    present = {s: days[s] for s in folders}
    if not any(d <= 0 for d in present.values()):
        listed = ", ".join(f"ses-{s} ({d:+d})" for s, d in present.items())
        problem = (
            f"no baseline session: no session folder has days_from_sbrt <= 0 ({listed}); qmri "
            "needs a session on or before the SBRT day"
        )
        orphans = [f"ses-{s} ({d:+d})" for s, d in days.items() if d <= 0 and s not in present]
        if orphans:
            problem += f" ({', '.join(orphans)} has a row but no folder)"
        raise QMRIInputError(problem, sessions_tsv)
    return tables.baseline_session(present, sessions_tsv)


class Study:
    """Index of a BIDS dataset and its label derivative.

    Parameters
    ----------
    bids_dir : path
        Raw BIDS dataset.
    labels_dir : path
        Derivative with ``sub-<s>/ses-<baseline>/anat/sub-<s>_ses-<baseline>_dseg.nii.gz``.
    participant_label : sequence of str
        Subjects to include (empty: all).
    reference_suffix : str
        Suffix of each session's reference anatomy (config ``reference_suffix``).
    check : bool
        Check sidecars and headers of every series (default True).

    The series kinds looked for are those of the fit registry (:data:`qmri.registry.SERIES_KINDS`,
    plugins included), so a registered fit is indexed without a change here.
    """

    def __init__(
        self,
        bids_dir: str | Path,
        labels_dir: str | Path,
        *,
        participant_label: Sequence[str] = (),
        reference_suffix: str,
        check: bool = True,
    ) -> None:
        self.bids_dir = Path(bids_dir)
        self.labels_dir = Path(labels_dir)
        self.participants_tsv = self.bids_dir / "participants.tsv"
        self.subjects: dict[str, SubjectIndex] = {}
        for subject in bids.discover_subjects(self.bids_dir, participant_label):
            self.subjects[subject] = self._index_subject(subject, reference_suffix, check)

    def _index_subject(self, subject: str, reference_suffix: str, check: bool) -> SubjectIndex:
        sub_dir = self.bids_dir / f"sub-{subject}"
        _check_links(sub_dir)
        labels_sub = self.labels_dir / f"sub-{subject}"
        if labels_sub.is_dir():
            _check_links(labels_sub)
        sessions_tsv = sub_dir / f"sub-{subject}_sessions.tsv"
        if not sessions_tsv.exists():
            raise QMRIInputError(
                "sessions table not found (qmri needs days_from_sbrt per session)", sessions_tsv
            )
        days = tables.read_sessions_tsv(sessions_tsv)
        folders = bids.discover_sessions(self.bids_dir, subject)
        missing = [s for s in folders if s not in days]
        if missing:
            empty = [f"ses-{s}" for s in missing if not _has_files(sub_dir / f"ses-{s}")]
            note = (
                f" (empty folder: {', '.join(empty)}; remove it or add its data)" if empty else ""
            )
            raise QMRIInputError(
                f"no row for session(s) {', '.join('ses-' + s for s in missing)}{note}",
                sessions_tsv,
            )
        for session in folders:
            if not _has_files(sub_dir / f"ses-{session}"):
                raise QMRIInputError(
                    "empty session folder (no file in it): remove it, or add the session's images",
                    sub_dir / f"ses-{session}",
                )
        baseline = _baseline(days, folders, sessions_tsv)
        _check_treated_levels(self.participants_tsv, subject)
        files = {}
        for session in sorted(folders, key=lambda s: (days[s], s)):
            kinds = list(SERIES_KINDS.values())
            f = bids.session_files(
                self.bids_dir, subject, session, kinds, reference_suffix=reference_suffix
            )
            if f.reference is None:
                raise QMRIInputError(
                    f"no reference image anat/sub-{subject}_ses-{session}_{reference_suffix}"
                    ".nii.gz (set reference_suffix if it has another suffix)",
                    sub_dir / f"ses-{session}",
                )
            if check:
                bids.check_session(f, kinds)
            files[session] = f
        stem = f"sub-{subject}_ses-{baseline}"
        labels = (
            self.labels_dir / f"sub-{subject}" / f"ses-{baseline}" / "anat" / f"{stem}_dseg.nii.gz"
        )
        if not labels.exists():
            raise QMRIInputError(f"no label map for the baseline session ses-{baseline}", labels)
        if check:
            _check_labels_grid(labels, files[baseline].reference)
        plan = labels.with_name(f"{stem}_{CTV_PLAN_SUFFIX}")
        if not plan.exists():
            plan = None
        elif check:
            _check_grid(plan, files[baseline].reference)
        return SubjectIndex(subject, days, baseline, files, labels, sessions_tsv, plan)

    # -- questions the rules ask ---------------------------------------------------------------

    def fits(
        self, subject: str, session: str, specs: Sequence[FitSpec] | None = None
    ) -> list[str]:
        """The fits a session has data for (names of :data:`qmri.registry.FITS`), in registry
        order.

        ``specs`` restricts them (the fits the config switches on,
        :func:`qmri.registry.enabled_fits`; default every registered fit). A fit that needs a
        map of another fit (DCE: the VFA T1 map) exists only where that fit does.
        """
        files = self.subjects[subject].sessions[session]
        chosen = list(FITS.values()) if specs is None else list(specs)
        names = {spec.name for spec in chosen}
        have = [spec.name for spec in chosen if files.files(spec.series.name)]
        return [
            spec.name
            for spec in chosen
            if spec.name in have
            and all(fit in names and fit in have for fit, _ in spec.requires.values())
        ]

    def series_files(self, subject: str, session: str, series: str) -> list[Path]:
        """Raw files of a series kind (``VFA``, ``IRT1``, ``MESE``, ``MEGRE``, ``dwi``, ``dce``)."""
        return list(self.subjects[subject].sessions[session].files(series))

    def session_pairs(self) -> list[tuple[str, str]]:
        """Every (subject, session) of the study."""
        return [(s, ses) for s, idx in self.subjects.items() for ses in idx.sessions]
