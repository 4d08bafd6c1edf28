"""The study index: subjects, sessions, baselines and files, built once when the workflow starts.

:class:`Study` is what ``workflow/rules/common.smk`` asks "which jobs exist?". It reads folder
names, ``sub-*_sessions.tsv`` and the sidecars and headers of every series (never voxel data),
so a bad file stops the run, with one line naming it, before any job starts. Adding a
``ses-*`` folder (and its row in the sessions table) adds that session's jobs and nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qmri import bids, tables
from qmri.errors import QMRIInputError
from qmri.io import load_nifti

#: The fits the workflow runs: fit label -> datatype folder, series kind, output map suffixes,
#: and the maps ROI statistics are taken of as (file suffix, contract map name). The IVIM maps
#: come from the DWI series too (fitted by the same job as ADC); the DCE maps need the
#: session's T1 map from VFA.
FITS: dict[str, dict[str, Any]] = {
    "vfa": {
        "datatype": "anat",
        "series": "VFA",
        "suffixes": ("T1map", "M0map", "R2", "fitmask"),
        "statistics": (("T1map", "T1"),),
    },
    "irt1": {  # inversion recovery: T1 too, named T1IR in the tables (VFA's is T1)
        "datatype": "anat",
        "series": "IRT1",
        "suffixes": ("T1map", "M0map", "R2", "fitmask"),
        "statistics": (("T1map", "T1IR"),),
    },
    "mese": {
        "datatype": "anat",
        "series": "MESE",
        "suffixes": ("T2map", "S0map", "R2", "fitmask"),
        "statistics": (("T2map", "T2"),),
    },
    "megre": {
        "datatype": "anat",
        "series": "MEGRE",
        "suffixes": ("T2starmap", "S0map", "R2", "fitmask"),
        "statistics": (("T2starmap", "T2star"),),
    },
    "adc": {
        "datatype": "dwi",
        "series": "dwi",
        "suffixes": ("ADC", "S0map", "R2", "fitmask"),
        "statistics": (("ADC", "ADC"),),
    },
    "ivim": {
        "datatype": "dwi",
        "series": "dwi",
        "suffixes": ("D", "Dstar", "f", "S0map", "R2", "fitmask"),
        "statistics": (("D", "D"), ("Dstar", "Dstar"), ("f", "f")),
    },
    "dce": {
        "datatype": "perf",
        "series": "dce",
        "suffixes": (
            "Ktrans", "kep", "ve", "vp", "R2", "fitmask", "iAUC60", "iAUC90", "TTP", "Cmax",
            "MaxRSE",
        ),
        "statistics": (
            ("Ktrans", "Ktrans"), ("kep", "kep"), ("ve", "ve"), ("vp", "vp"),
            ("iAUC60", "iAUC60"), ("iAUC90", "iAUC90"),
        ),
    },
}  # fmt: skip


#: Maps each DCE model writes (kinetic maps, then the semi-quantitative ones).
DCE_MODEL_MAPS: dict[str, tuple[str, ...]] = {
    "tofts": ("Ktrans", "kep", "ve"),
    "etofts": ("Ktrans", "kep", "ve", "vp"),
    "patlak": ("Ktrans", "vp"),
}
_SEMIQUANT = ("iAUC60", "iAUC90", "TTP", "Cmax", "MaxRSE")


def fit_specs(dce_model: str = "etofts") -> dict[str, dict[str, Any]]:
    """:data:`FITS` with the DCE entry for the configured kinetic model."""
    kinetic = DCE_MODEL_MAPS[dce_model]
    specs = {k: dict(v) for k, v in FITS.items()}
    specs["dce"]["suffixes"] = (*kinetic, "R2", "fitmask", *_SEMIQUANT)
    specs["dce"]["statistics"] = tuple((m, m) for m in (*kinetic, "iAUC60", "iAUC90"))
    return specs


@dataclass(frozen=True)
class SubjectIndex:
    """What the workflow needs to know about one subject."""

    subject: str
    days: dict[str, int]
    baseline: str
    sessions: dict[str, bids.SessionFiles]
    labels: Path
    sessions_tsv: Path


def _check_labels_grid(labels: Path, reference: Path | None) -> None:
    """The label map must be drawn on the baseline reference: same grid (headers only)."""
    table = Path(str(labels).replace(".nii.gz", ".tsv"))
    if not table.exists():
        raise QMRIInputError("label table (index, name) not found beside the label map", table)
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
        Suffix of each session's reference anatomy.
    check : bool
        Check sidecars and headers of every series (default True).
    """

    def __init__(
        self,
        bids_dir: str | Path,
        labels_dir: str | Path,
        *,
        participant_label: Sequence[str] = (),
        reference_suffix: str = "T2w",
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
        sessions_tsv = sub_dir / f"sub-{subject}_sessions.tsv"
        if not sessions_tsv.exists():
            raise QMRIInputError(
                "sessions table not found (qmri needs days_from_sbrt per session)", sessions_tsv
            )
        days = tables.read_sessions_tsv(sessions_tsv)
        folders = bids.discover_sessions(self.bids_dir, subject)
        missing = [s for s in folders if s not in days]
        if missing:
            raise QMRIInputError(
                f"no row for session(s) {', '.join('ses-' + s for s in missing)}", sessions_tsv
            )
        baseline = tables.baseline_session({s: days[s] for s in folders})
        files = {}
        for session in sorted(folders, key=lambda s: (days[s], s)):
            f = bids.session_files(
                self.bids_dir, subject, session, reference_suffix=reference_suffix
            )
            if f.reference is None:
                raise QMRIInputError(
                    f"no reference image anat/sub-{subject}_ses-{session}_{reference_suffix}"
                    ".nii.gz (set reference_suffix if it has another suffix)",
                    sub_dir / f"ses-{session}",
                )
            if check:
                bids.check_session(f)
            files[session] = f
        stem = f"sub-{subject}_ses-{baseline}"
        labels = (
            self.labels_dir / f"sub-{subject}" / f"ses-{baseline}" / "anat" / f"{stem}_dseg.nii.gz"
        )
        if not labels.exists():
            raise QMRIInputError(f"no label map for the baseline session ses-{baseline}", labels)
        if check:
            _check_labels_grid(labels, files[baseline].reference)
        return SubjectIndex(subject, days, baseline, files, labels, sessions_tsv)

    # -- questions the rules ask ---------------------------------------------------------------

    def fits(self, subject: str, session: str, enabled: Sequence[str] = tuple(FITS)) -> list[str]:
        """The fits a session has data for (keys of :data:`FITS`), in a fixed order.

        ``enabled`` restricts them (the config switches IVIM and DCE on or off); DCE needs the
        session's VFA too (its T1 map).
        """
        f = self.subjects[subject].sessions[session]
        have = {
            "vfa": bool(f.vfa),
            "irt1": bool(f.irt1),
            "mese": bool(f.mese),
            "megre": bool(f.megre),
            "adc": f.dwi is not None,
            "ivim": f.dwi is not None,
            "dce": f.dce is not None and bool(f.vfa),
        }
        return [fit for fit in FITS if have[fit] and fit in enabled]

    def series_files(self, subject: str, session: str, series: str) -> list[Path]:
        """Raw files of a series kind (``VFA``, ``IRT1``, ``MESE``, ``MEGRE``, ``dwi``)."""
        f = self.subjects[subject].sessions[session]
        return {
            "VFA": list(f.vfa),
            "IRT1": list(f.irt1),
            "MESE": list(f.mese),
            "MEGRE": list(f.megre),
            "dwi": [f.dwi] if f.dwi else [],
        }[series]

    def session_pairs(self) -> list[tuple[str, str]]:
        """Every (subject, session) of the study."""
        return [(s, ses) for s, idx in self.subjects.items() for ses in idx.sessions]
