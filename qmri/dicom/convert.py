"""MR DICOM series of a session to the data contract's BIDS layout (section 1).

:func:`import_dicom_session` reads the headers of a session's DICOM folder
(:mod:`qmri.dicom.headers`), classifies its series (:mod:`qmri.dicom.classify`), converts each
with dcm2niix (:mod:`qmri.dicom.kinds`, :mod:`qmri.dicom.nifti`; images in the closest
canonical RAS+ voxel order, stored integers and scaling kept) and writes the contract's files:

========  ====================================================================================
kind      written as (``<stem>`` = ``sub-<s>_ses-<t>``)
========  ====================================================================================
VFA       ``anat/<stem>_flip-<i>_VFA`` (3D each, by increasing flip angle): FlipAngle (deg),
          RepetitionTimeExcitation (s)
IRT1      ``anat/<stem>_inv-<i>_IRT1`` (by inversion time): InversionTime, RepetitionTime (s)
MESE      ``anat/<stem>_echo-<i>_MESE`` (by echo time): EchoTime (s); MEGRE the same
dwi       ``dwi/<stem>_dwi`` 4D + ``.bval`` (s/mm^2) + ``.bvec``
dce       ``perf/<stem>_dce`` 4D: VolumeTiming (s, from the acquisition times), FlipAngle,
          RepetitionTimeExcitation, MagneticFieldStrength (T), ContrastBolusIngredient,
          ContrastAgent, BaselineFrames when ContrastBolusStartTime gives it (else omitted:
          qmri detects the bolus arrival)
TB1map    ``fmap/<stem>_TB1map`` with IntendedFor the VFA files
anat      ``anat/<stem>_<suffix>`` (the reference with its configured suffix)
========  ====================================================================================

Collections are split into one 3D file per flip angle / echo / inversion time whether the
scanner stored them as one series or one series per value, classic or enhanced. Every value is
taken from the DICOM headers (TR, TE and TI converted from ms to s); dcm2niix's sidecar
contributes the other acquisition keys, scrubbed of PHI (:func:`qmri.dicom.phi.scrub_sidecar`).
The written session is checked with qmri's own loaders
(``qmri.registry.SERIES_KINDS[kind].check``) before it appears in the dataset.

Atomicity: the session is assembled in a hidden folder inside ``bids_dir`` and renamed into
place as the last step, so an interrupted import leaves no partial session; the tables are
updated atomically. Inputs are only read (dcm2niix gets symbolic links).

Re-running on a session that is already in ``bids_dir`` is an error (the session folder is
never overwritten: remove it to import again); :func:`import_dicom_tree` skips such sessions,
so a batch can be re-run after an interruption or when new sessions arrive.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from qmri.dicom.classify import Classification, SkippedSeries, classify_session, load_mapping
from qmri.dicom.dataset import (
    days_from_sbrt,
    ensure_dataset_files,
    existing_days,
    sessions_tsv,
    update_participants,
    update_sessions,
)
from qmri.dicom.headers import read_series_headers
from qmri.dicom.kinds import Scratch, sidecar_path, write_kind
from qmri.errors import QMRIInputError
from qmri.io import load_nifti, read_json, write_json
from qmri.registry import SERIES_KINDS

__all__ = [
    "RT_FOLDER",
    "ImportReport",
    "ImportedSeries",
    "TreeImportReport",
    "import_dicom_session",
    "import_dicom_tree",
    "labelled_dirs",
]

_LABEL = re.compile(r"^[A-Za-z0-9]+$")

#: A subject folder's sub-folder for the planning objects (RTSTRUCT, RTDOSE, RTPLAN, planning
#: CT): never taken for a session (:mod:`qmri.dicom.study`).
RT_FOLDER = "rt"


@dataclass(frozen=True)
class ImportedSeries:
    """One series kind written to the dataset.

    Attributes
    ----------
    kind : str
        ``VFA``, ``IRT1``, ``MESE``, ``MEGRE``, ``dwi``, ``dce``, ``TB1map`` or an anatomical
        suffix.
    files : tuple of Path
        The NIfTI files written (collections in index order).
    descriptions : tuple of str
        SeriesDescription of the DICOM series it came from.
    reason : str
        Why the series got this kind (rule or mapping).
    """

    kind: str
    files: tuple[Path, ...]
    descriptions: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class ImportReport:
    """What :func:`import_dicom_session` did.

    Attributes
    ----------
    subject, session : str
        Labels without prefixes.
    session_dir : Path
        ``<bids_dir>/sub-<s>/ses-<t>``.
    days_from_sbrt : int
        The session's row in the sessions table.
    series : tuple of ImportedSeries
        Every kind written.
    skipped : tuple of SkippedSeries
        DICOM series not imported (non-MR, mapped to ``skip``, unknown with ``skip_unknown``).
    reference : Path or None
        The reference anatomy written (configured suffix), if any.
    """

    subject: str
    session: str
    session_dir: Path
    days_from_sbrt: int
    series: tuple[ImportedSeries, ...]
    skipped: tuple[SkippedSeries, ...] = ()
    reference: Path | None = None

    def summary(self) -> str:
        """A few lines for the command line: what was written and what was left out."""
        lines = [f"sub-{self.subject} ses-{self.session}: days_from_sbrt {self.days_from_sbrt}"]
        for s in self.series:
            names = ", ".join(dict.fromkeys(self.descriptions_of(s)))
            lines.append(f"  {s.kind}: {len(s.files)} file(s) from {names} ({s.reason})")
        for s in self.skipped:
            lines.append(f"  skipped '{s.description}' ({s.modality}): {s.reason}")
        if self.reference is None:
            lines.append("  no reference anatomy found")
        return "\n".join(lines)

    @staticmethod
    def descriptions_of(series: ImportedSeries) -> tuple[str, ...]:
        """SeriesDescriptions of one imported kind (empty ones shown as ``-``)."""
        return tuple(d or "-" for d in series.descriptions)


@dataclass(frozen=True)
class TreeImportReport:
    """What :func:`import_dicom_tree` did: sessions imported and sessions already present."""

    imported: tuple[ImportReport, ...]
    already_present: tuple[tuple[str, str], ...] = field(default_factory=tuple)


# --------------------------------------------------------------------------------------------


def _label(value: str, prefix: str) -> str:
    label = str(value).removeprefix(f"{prefix}-")
    if not _LABEL.match(label):
        raise QMRIInputError(f"{prefix} label {value!r} must be letters and digits only (BIDS)")
    return label


def _study_date(c: Classification) -> tuple[dt.date | None, Path]:
    dates = {s.study_date for k in c.classified for s in k.series if s.study_date is not None}
    first = c.classified[0].series[0].first_file
    if len(dates) > 1:
        raise QMRIInputError(
            f"the session's series have {len(dates)} different study dates; import each study "
            "as its own session",
            first,
        )
    return (dates.pop() if dates else None), first


def _link_b1(written: Mapping[str, list[Path]], session_root: Path, relative_root: str) -> None:
    """IntendedFor of the B1 map: the VFA files (BIDS URIs)."""
    if "TB1map" not in written or "VFA" not in written:
        return
    side = sidecar_path(written["TB1map"][0])
    meta = read_json(side)
    meta["IntendedFor"] = [f"bids::{relative_root}/{p.relative_to(session_root).as_posix()}"
                           for p in written["VFA"]]  # fmt: skip
    write_json(meta, side)


def _check(
    written: Mapping[str, list[Path]], classification: Classification, staged: Path, final: Path
) -> None:
    """Check the written files with qmri's own loaders (sidecars and headers).

    A refusal names the file as it would have been in the dataset and the DICOM series it
    came from (nothing is written to the dataset then).
    """
    kinds = classification.kinds()
    for kind, paths in written.items():
        try:
            if kind in SERIES_KINDS:
                SERIES_KINDS[kind].check(paths)
            else:
                load_nifti(paths[0], ndim=3)
        except QMRIInputError as exc:
            names = ", ".join(f"'{d}'" for d in kinds[kind].descriptions)
            where = None if exc.path is None else exc.path.replace(str(staged), str(final))
            raise QMRIInputError(
                f"{exc.problem} (converted from DICOM series {names}; the session was not "
                "written)",
                where,
            ) from None


def import_dicom_session(
    src: str | Path,
    bids_dir: str | Path,
    *,
    subject: str,
    session: str,
    mapping: str | Path | None = None,
    sbrt_date: dt.date | None = None,
    reference_suffix: str,
    skip_unknown: bool = False,
) -> ImportReport:
    """Import one session's MR DICOM series into a BIDS dataset (module description).

    Parameters
    ----------
    src : str or Path
        Folder holding the session's DICOM files (searched recursively; non-DICOM files and
        non-MR series such as RT objects are skipped).
    bids_dir : str or Path
        BIDS dataset root (created if needed).
    subject, session : str
        Labels, with or without ``sub-`` / ``ses-`` (letters and digits).
    mapping : str or Path, optional
        Mapping file overriding the classification rules (:func:`qmri.dicom.classify.load_mapping`).
    sbrt_date : datetime.date, optional
        Date of the first SBRT fraction: ``days_from_sbrt`` = StudyDate - sbrt_date (days).
        Without it the session must already have a row in ``sub-<s>_sessions.tsv``.
    reference_suffix : str
        BIDS suffix of the session reference (config ``reference_suffix``, e.g. ``T2w``).
    skip_unknown : bool, default False
        Leave out (and list) series that cannot be classified instead of raising.

    Returns
    -------
    ImportReport

    Raises
    ------
    QMRIInputError
        One line naming a file for: a session already imported, no MR series, an
        unclassifiable or ambiguous series, a failed conversion, missing dates, a written
        series that qmri's loaders refuse.
    """
    subject, session = _label(subject, "sub"), _label(session, "ses")
    src, bids_dir = Path(src), Path(bids_dir)
    final = bids_dir / f"sub-{subject}" / f"ses-{session}"
    if final.exists() and any(final.iterdir()):
        raise QMRIInputError(
            "session already imported (qmri never overwrites a session: remove the folder to "
            "import it again)",
            final,
        )
    rules = load_mapping(mapping, reference_suffix=reference_suffix)
    classification = classify_session(
        read_series_headers(src), mapping=rules, reference_suffix=reference_suffix,
        skip_unknown=skip_unknown,
    )  # fmt: skip
    if not classification.classified:
        raise QMRIInputError("no MR series to import", src)
    study_date, first_file = _study_date(classification)
    days = days_from_sbrt(
        study_date, sbrt_date, existing=existing_days(bids_dir, subject, session),
        source=first_file, table=sessions_tsv(bids_dir, subject),
    )  # fmt: skip
    stem = f"sub-{subject}_ses-{session}"
    bids_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".qmri-import-{stem}-", dir=bids_dir))
    try:
        staged = staging / f"ses-{session}"
        written: dict[str, list[Path]] = {}
        with tempfile.TemporaryDirectory(prefix="qmri-dcm2niix-") as tmp:
            scratch = Scratch(Path(tmp))
            for c in classification.classified:
                written[c.kind] = write_kind(c, staged, stem, scratch)
        _link_b1(written, staged, f"sub-{subject}/ses-{session}")
        _check(written, classification, staged, final)
        ensure_dataset_files(bids_dir)
        update_participants(bids_dir, subject)
        update_sessions(bids_dir, subject, session, days)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            final.rmdir()  # an empty folder (checked above)
        staged.rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    def moved(paths: list[Path]) -> tuple[Path, ...]:
        return tuple(final / p.relative_to(staged) for p in paths)

    imported = tuple(
        ImportedSeries(c.kind, moved(written[c.kind]), c.descriptions, c.reason)
        for c in classification.classified
    )
    reference = next((s.files[0] for s in imported if s.kind == reference_suffix), None)
    return ImportReport(subject, session, final, days, imported, classification.skipped, reference)


def labelled_dirs(
    root: Path, prefix: str, *, skip: frozenset[str] | set[str] = frozenset()
) -> Iterator[tuple[str, Path]]:
    """``(label, folder)`` of the sub-folders of ``root`` (hidden ones and ``skip`` left out),
    sorted; the folder name is the label, with or without ``<prefix>-``."""
    found = [(_label(p.name, prefix), p) for p in root.iterdir()
             if p.is_dir() and not p.name.startswith(".") and p.name.lower() not in skip]  # fmt: skip
    labels = [label for label, _ in found]
    if len(set(labels)) != len(labels):
        raise QMRIInputError(f"two folders give one {prefix} label ({sorted(labels)})", root)
    yield from sorted(found)


def import_dicom_tree(
    src_root: str | Path,
    bids_dir: str | Path,
    *,
    mapping: str | Path | None = None,
    sbrt_dates: Mapping[str, dt.date],
    reference_suffix: str,
    skip_unknown: bool = False,
) -> TreeImportReport:
    """Import every session of ``src_root/<subject>/<session>/...`` (no workflow needed).

    Folder names give the labels (``sub-`` / ``ses-`` prefixes optional; a subject's
    :data:`RT_FOLDER` is not a session). Sessions already in
    ``bids_dir`` are skipped (listed in the report), so the batch can be re-run. The first
    failing session stops the batch with its error; the sessions imported before it stay.

    Parameters
    ----------
    src_root : str or Path
        Root of the DICOM tree.
    bids_dir : str or Path
        BIDS dataset root.
    mapping : str or Path, optional
        Mapping file for every session.
    sbrt_dates : mapping of str to datetime.date
        SBRT date per subject label (with or without ``sub-``); a subject without one needs
        its sessions' rows in its sessions table already.
    reference_suffix : str
        BIDS suffix of the session references.
    skip_unknown : bool, default False
        As for :func:`import_dicom_session`.
    """
    src_root, bids_dir = Path(src_root), Path(bids_dir)
    if not src_root.is_dir():
        raise QMRIInputError("DICOM source is not a folder", src_root)
    dates = {str(k).removeprefix("sub-"): v for k, v in sbrt_dates.items()}
    imported, present = [], []
    for subject, sub_dir in labelled_dirs(src_root, "sub"):
        for session, ses_dir in labelled_dirs(sub_dir, "ses", skip={RT_FOLDER}):
            target = bids_dir / f"sub-{subject}" / f"ses-{session}"
            if target.exists() and any(target.iterdir()):
                present.append((subject, session))
                continue
            imported.append(
                import_dicom_session(
                    ses_dir, bids_dir, subject=subject, session=session, mapping=mapping,
                    sbrt_date=dates.get(subject), reference_suffix=reference_suffix,
                    skip_unknown=skip_unknown,
                )
            )  # fmt: skip
    return TreeImportReport(tuple(imported), tuple(present))
