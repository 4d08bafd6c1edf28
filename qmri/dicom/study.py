"""A whole study from DICOM: MR sessions, RTSTRUCT -> labels, RTDOSE -> dose, clinical columns.

:func:`import_dicom_study` is what ``qmri import dicom DICOM_DIR BIDS_DIR`` (no ``--subject``)
and the workflow's ``dicom_dir`` key run. The DICOM folder is laid out per subject::

    <dicom_dir>/
      participants.tsv          optional: participant_id, sbrt_date (YYYY-MM-DD),
                                treated_levels, and any clinical columns (dose_gy, fractions,
                                vcf_event, ...)
      series_mapping.yaml       optional: series mapping (qmri.dicom.classify.load_mapping),
                                used when none is given
      structure_map.yaml        optional: structure-name map (qmri.dicom.structures), the same
      <subject>/                sub-01 or 01 (the label; ``sub-`` optional)
        <session>/              pre, fu1, ... (any DICOM tree: the MR series of one session)
        rt/                     optional: RTSTRUCT, RTDOSE, RTPLAN and the planning CT

Per subject, in this order:

1. **SBRT date** (for ``days_from_sbrt``; a date is never written anywhere): the ``sbrt_date``
   column of ``<dicom_dir>/participants.tsv``, else the RTPLAN's ``RTPlanDate`` (the plan's
   date, usually a few days before the first fraction: give ``sbrt_date`` when the day
   matters), else the rows already in the subject's ``sessions.tsv``.
2. **MR sessions** (:func:`qmri.dicom.convert.import_dicom_session`); a session already in
   ``bids_dir`` is skipped, so the import can be re-run whenever new sessions arrive.
3. **Labels**: the RTSTRUCT's structures on the baseline session's reference
   (:func:`qmri.dicom.rtstruct.import_rtstruct`; through a rigid planning-image -> MR
   registration when the structures were drawn on another image, transform and checkerboard
   written beside the labels as ``..._from-planning_to-<ref>_xfm.txt`` and
   ``..._desc-planning_checkerboard.png``). Skipped when the labels file exists.
4. **Treated levels** (participants.tsv ``treated_levels``): the clinical table's, else
   derived from the labels: the levels whose vertebral body lies at least
   :data:`TREATED_BODY_FRACTION` inside the plan CTV, else (no plan CTV) the level whose body
   touches the GTV most. The rule used is printed in the summary.
5. **Dose** (when ``dose_dir`` is given and the folder has an RTDOSE): the plan's dose on the
   baseline reference (:func:`qmri.dicom.rtdose.import_rtdose`, through the same transform),
   fractions and prescription from the RTPLAN into ``fractions`` / ``dose_gy``.
6. **participants.tsv**: the subject's row gets ``treated_levels``, ``dose_gy``, ``fractions``
   and the clinical table's other columns (never ``sbrt_date``, never a column whose name
   :func:`qmri.dicom.phi.is_denied` refuses, such as ``PatientName``). A value already in the
   row is kept; a different one is an error.

Errors are one line naming the file (:class:`~qmri.errors.QMRIInputError`); the first failing
subject stops the import, and the subjects (and sessions) imported before it stay.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qmri.dicom.convert import RT_FOLDER, ImportReport, import_dicom_session, labelled_dirs
from qmri.dicom.dataset import (
    ensure_derivative_description,
    sessions_tsv,
    set_participant_values,
)
from qmri.dicom.phi import is_denied
from qmri.errors import QMRIInputError

__all__ = [
    "CLINICAL_TABLE",
    "SERIES_MAPPING",
    "STRUCTURE_MAP",
    "TREATED_BODY_FRACTION",
    "StudyImportReport",
    "SubjectImport",
    "derive_treated_levels",
    "find_rt_objects",
    "import_dicom_study",
    "import_for_workflow",
    "read_clinical_table",
]

#: The optional clinical table in the DICOM folder.
CLINICAL_TABLE = "participants.tsv"

#: Optional maps in the DICOM folder, used when none is given.
SERIES_MAPPING = "series_mapping.yaml"
STRUCTURE_MAP = "structure_map.yaml"

#: A level is treated when at least this share of its vertebral body is inside the plan CTV.
TREATED_BODY_FRACTION = 0.5

#: RT object modalities looked for in ``<subject>/rt/``.
_RT_MODALITIES = ("RTSTRUCT", "RTDOSE", "RTPLAN")


@dataclass
class SubjectImport:
    """What :func:`import_dicom_study` did for one subject.

    Attributes
    ----------
    subject : str
        Label without ``sub-``.
    sessions : list of ImportReport
        Sessions imported now.
    present : list of str
        Sessions already in the dataset (skipped).
    sbrt_date_from : str
        Where the SBRT date came from (``participants.tsv``, ``RTPLAN``, ``sessions.tsv``).
    labels : Path or None
        The label image written now (None: it existed, or the subject has no RTSTRUCT).
    dose : Path or None
        The dose map written now.
    treated_levels : list of str
        As written to participants.tsv (empty: unknown).
    treated_from : str
        The rule that gave them.
    notes : list of str
        Unknown structure names, dose notes, what was skipped and why.
    """

    subject: str
    sessions: list[ImportReport] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    sbrt_date_from: str = "sessions.tsv"
    labels: Path | None = None
    dose: Path | None = None
    treated_levels: list[str] = field(default_factory=list)
    treated_from: str = "unknown"
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """A few lines for the command line."""
        lines = [f"sub-{self.subject}: SBRT date from {self.sbrt_date_from}"]
        lines += [r.summary() for r in self.sessions]
        lines += [f"  ses-{s}: already imported (skipped)" for s in self.present]
        if self.labels is not None:
            lines.append(f"  labels: {self.labels}")
        if self.dose is not None:
            lines.append(f"  dose: {self.dose}")
        levels = ",".join(self.treated_levels) or "unknown"
        lines.append(f"  treated levels: {levels} ({self.treated_from})")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


@dataclass
class StudyImportReport:
    """What :func:`import_dicom_study` did, subject by subject."""

    subjects: list[SubjectImport]

    def summary(self) -> str:
        """The subjects' summaries."""
        return "\n".join(s.summary() for s in self.subjects) or "no subject folders found"


def read_clinical_table(path: Path) -> dict[str, dict[str, str]]:
    """Rows of ``<dicom_dir>/participants.tsv`` by subject label (cells as text; ``n/a`` and
    empty cells left out). ``sbrt_date`` must be an ISO date (YYYY-MM-DD)."""
    if not path.exists():
        return {}
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if not lines:
        raise QMRIInputError("empty table (expected a participant_id header)", path)
    header = [c.strip() for c in lines[0].split("\t")]
    if "participant_id" not in header:
        raise QMRIInputError("no participant_id column", path)
    rows: dict[str, dict[str, str]] = {}
    for n, line in enumerate(lines[1:], start=2):
        cells = [c.strip() for c in line.split("\t")]
        if len(cells) != len(header):
            raise QMRIInputError(
                f"line {n} has {len(cells)} cells, the header {len(header)}", path
            )
        row = {k: v for k, v in zip(header, cells, strict=True) if v not in ("", "n/a")}
        subject = row.pop("participant_id", "").removeprefix("sub-")
        if not subject:
            raise QMRIInputError(f"line {n}: empty participant_id", path)
        if subject in rows:
            raise QMRIInputError(f"participant sub-{subject} is listed twice", path)
        if "sbrt_date" in row:
            try:
                dt.date.fromisoformat(row["sbrt_date"])
            except ValueError:
                raise QMRIInputError(
                    f"line {n}: sbrt_date {row['sbrt_date']!r} is not a date (YYYY-MM-DD)", path
                ) from None
        rows[subject] = row
    return rows


def find_rt_objects(folder: Path) -> dict[str, Path]:
    """The RTSTRUCT, RTDOSE and RTPLAN files of a subject's ``rt/`` folder (by Modality).

    Raises
    ------
    QMRIInputError
        Two objects of one modality (keep the plan's structure set, its total dose and its
        plan only).
    """
    import pydicom

    from qmri.dicom.planning_ct import quiet_pydicom

    found: dict[str, list[Path]] = {m: [] for m in _RT_MODALITIES}
    if not folder.is_dir():
        return {}
    with quiet_pydicom():
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Modality"])
            except Exception:  # noqa: BLE001, S112 (not DICOM: README files, thumbnails)
                continue
            modality = str(getattr(ds, "Modality", ""))
            if modality in found:
                found[modality].append(path)
    for modality, paths in found.items():
        if len(paths) > 1:
            names = ", ".join(p.name for p in paths)
            raise QMRIInputError(
                f"{len(paths)} {modality} objects ({names}): keep one (the plan's structure "
                "set, its total dose, the plan)",
                folder,
            )
    return {m: paths[0] for m, paths in found.items() if paths}


def derive_treated_levels(dseg: Path, ctv_plan: Path | None) -> tuple[list[str], str]:
    """Treated levels from imported labels (module step 4); ``([], reason)`` when undecidable."""
    from scipy import ndimage

    from qmri.io import load_nifti, read_data
    from qmri.labels import parse_levels, read_dseg_tsv

    labels = np.rint(read_data(load_nifti(dseg, ndim=3))).astype(np.int32)
    table = read_dseg_tsv(str(dseg).removesuffix(".nii.gz") + ".tsv")
    bodies = {lab.level: labels == i for i, lab in table.items() if lab.structure == "vb"}
    if not bodies:
        return [], "no vertebral body labelled"
    if ctv_plan is not None and ctv_plan.exists():
        ctv = read_data(load_nifti(ctv_plan, ndim=3)) > 0
        inside = [lv for lv, m in bodies.items() if m.any() and (m & ctv).sum() / m.sum()
                  >= TREATED_BODY_FRACTION]  # fmt: skip
        if inside:
            return parse_levels(inside), (
                f"vertebral bodies >= {TREATED_BODY_FRACTION:.0%} inside the plan CTV"
            )
    tumour = np.isin(labels, [i for i, lab in table.items() if lab.structure == "tumor"])
    if not tumour.any():
        return [], "no plan CTV and no GTV to place the target"
    ring = ndimage.binary_dilation(tumour, iterations=1) & ~tumour
    contact = {lv: int((m & ring).sum()) for lv, m in bodies.items()}
    best = max(contact, key=lambda lv: contact[lv])
    if contact[best] == 0:
        return [], "the GTV touches no vertebral body"
    return [best], "the vertebral body touching the GTV most (no plan CTV)"


def _sbrt_date(
    subject: str, clinical: Mapping[str, str], rt: Mapping[str, Path]
) -> tuple[dt.date | None, str]:
    if "sbrt_date" in clinical:
        return dt.date.fromisoformat(clinical["sbrt_date"]), CLINICAL_TABLE
    if "RTPLAN" in rt:
        from qmri.dicom.rtdose import read_rtplan

        plan = read_rtplan(rt["RTPLAN"])
        if plan.plan_date is not None:
            return plan.plan_date, "RTPLAN (RTPlanDate)"
    return None, "sessions.tsv"


def _baseline(bids_dir: Path, subject: str) -> str:
    from qmri.tables import baseline_session, read_sessions_tsv

    table = sessions_tsv(bids_dir, subject)
    return baseline_session(read_sessions_tsv(table), table)


def _dose_transform(rtdose: Path, dseg: Path, xfm: Path) -> Path | bool | None:
    """The transform for the dose: the RTSTRUCT import's registration; None when that import
    needed none and the dose shares its frame of reference; False when neither is known."""
    if xfm.exists():
        return xfm
    from qmri.dicom.planning_ct import frame_hash
    from qmri.dicom.rtdose import read_rtdose
    from qmri.io import read_json

    report = dseg.with_name(dseg.name.removesuffix(".nii.gz") + ".json")
    if not report.exists():
        return False
    meta = read_json(report)
    same_frame = meta.get("PlanningFrameOfReferenceSHA256") == frame_hash(
        read_rtdose(rtdose).frame_uid
    )
    if str(meta.get("Registration", "")).startswith("none") and same_frame:
        return None
    return False


def _import_rt(
    report: SubjectImport,
    rt: Mapping[str, Path],
    subject_dir: Path,
    bids_dir: Path,
    labels_dir: Path,
    dose_dir: Path | None,
    *,
    reference_suffix: str,
    structure_map: Path | None,
    treated: list[str],
) -> dict[str, str]:
    """Steps 3-5 of the module notes; returns participants.tsv values (dose_gy, fractions)."""
    baseline = _baseline(bids_dir, report.subject)
    stem = f"sub-{report.subject}_ses-{baseline}"
    reference = bids_dir / f"sub-{report.subject}" / f"ses-{baseline}" / "anat"
    reference = reference / f"{stem}_{reference_suffix}.nii.gz"
    anat = labels_dir / f"sub-{report.subject}" / f"ses-{baseline}" / "anat"
    dseg = anat / f"{stem}_dseg.nii.gz"
    xfm = anat / f"{stem}_from-planning_to-{reference_suffix}_mode-image_xfm.txt"
    if "RTSTRUCT" in rt and not dseg.exists():
        from qmri.dicom.rtstruct import import_rtstruct

        done = import_rtstruct(
            rt["RTSTRUCT"], subject_dir, reference, dseg, name_map=structure_map,
            treated_levels=treated or None, out_xfm=xfm,
            checkerboard=anat / f"{stem}_desc-planning_checkerboard.png",
        )  # fmt: skip
        report.labels = done.dseg
        if done.unknown:
            report.notes.append(
                f"structures not imported (unknown names): {', '.join(done.unknown)}"
            )
        report.notes += done.notes
    elif "RTSTRUCT" not in rt and not dseg.exists():
        report.notes.append(f"no RTSTRUCT in {RT_FOLDER}/ and no labels: draw {dseg}")
    if not treated and dseg.exists():
        ctv = anat / f"{stem}_desc-ctvplan_mask.nii.gz"
        report.treated_levels, report.treated_from = derive_treated_levels(dseg, ctv)
    values: dict[str, str] = {}
    if "RTDOSE" in rt and dose_dir is not None:
        from qmri.dicom.rtdose import import_rtdose
        from qmri.dose import dose_path

        out = dose_path(dose_dir, report.subject)
        if not out.exists():
            transform = _dose_transform(rt["RTDOSE"], dseg, xfm)
            if transform is False:
                report.notes.append(
                    f"RTDOSE not imported: the labels in {dseg.parent} were not imported from "
                    "this folder's RTSTRUCT, so no transform relates the dose's frame to the MR "
                    "(qmri import rtdose --transform)"
                )
            else:
                done_dose = import_rtdose(
                    rt["RTDOSE"], reference, out, transform=transform, rtplan=rt.get("RTPLAN")
                )
                report.dose = done_dose.dose
                report.notes += done_dose.notes
    if "RTPLAN" in rt:
        from qmri.dicom.rtdose import read_rtplan

        plan = read_rtplan(rt["RTPLAN"])
        if plan.fractions is not None:
            values["fractions"] = str(plan.fractions)
        if plan.prescription_gy is not None:
            values["dose_gy"] = f"{plan.prescription_gy:g}"
    return values


def import_dicom_study(
    dicom_dir: str | Path,
    bids_dir: str | Path,
    *,
    labels_dir: str | Path,
    dose_dir: str | Path | None = None,
    reference_suffix: str,
    mapping: str | Path | None = None,
    structure_map: str | Path | None = None,
    skip_unknown: bool = False,
) -> StudyImportReport:
    """Import every subject of a DICOM folder (module description: layout and steps).

    Parameters
    ----------
    dicom_dir : str or Path
        The DICOM folder (``<subject>/<session>/``, ``<subject>/rt/``, optional
        ``participants.tsv``).
    bids_dir : str or Path
        BIDS dataset the MR sessions go to (created if needed; must not be ``dicom_dir``).
    labels_dir : str or Path
        Label derivative the RTSTRUCT's labels go to
        (``sub-<s>/ses-<baseline>/anat/sub-<s>_ses-<baseline>_dseg.nii.gz``).
    dose_dir : str or Path, optional
        Where the dose maps go (``sub-<s>/sub-<s>_dose.nii.gz``); None: RTDOSE not imported.
    reference_suffix : str
        BIDS suffix of the session reference (e.g. ``T2w``).
    mapping : str or Path, optional
        Series mapping file (:func:`qmri.dicom.classify.load_mapping`).
    structure_map : str or Path, optional
        Structure-name map (:mod:`qmri.dicom.structures`).
    skip_unknown : bool, default False
        Leave out MR series that cannot be classified instead of raising.

    Returns
    -------
    StudyImportReport

    Raises
    ------
    QMRIInputError
        One line naming the file (module description).
    """
    dicom_dir, bids_dir, labels_dir = Path(dicom_dir), Path(bids_dir), Path(labels_dir)
    dose_dir = None if dose_dir is None else Path(dose_dir)
    if not dicom_dir.is_dir():
        raise QMRIInputError("DICOM folder not found", dicom_dir)
    if bids_dir.resolve() == dicom_dir.resolve():
        raise QMRIInputError("the BIDS dataset cannot be the DICOM folder itself", bids_dir)
    clinical = read_clinical_table(dicom_dir / CLINICAL_TABLE)
    if mapping is None and (dicom_dir / SERIES_MAPPING).exists():
        mapping = dicom_dir / SERIES_MAPPING
    if structure_map is None and (dicom_dir / STRUCTURE_MAP).exists():
        structure_map = dicom_dir / STRUCTURE_MAP
    subjects = list(labelled_dirs(dicom_dir, "sub"))
    unknown = sorted(set(clinical) - {s for s, _ in subjects})
    if unknown:
        raise QMRIInputError(
            f"lists sub-{unknown[0]}, which has no folder in the DICOM folder",
            dicom_dir / CLINICAL_TABLE,
        )
    reports = []
    for folder, name in ((labels_dir, "labels"), (dose_dir, "dose")):
        if folder is not None:
            ensure_derivative_description(folder, f"qmri DICOM import: {name} from the RT objects")
    for subject, subject_dir in subjects:
        row = clinical.get(subject, {})
        report = SubjectImport(subject)
        rt = find_rt_objects(subject_dir / RT_FOLDER)
        sbrt_date, report.sbrt_date_from = _sbrt_date(subject, row, rt)
        for session, session_dir in labelled_dirs(subject_dir, "ses", skip={RT_FOLDER}):
            target = bids_dir / f"sub-{subject}" / f"ses-{session}"
            if target.exists() and any(target.iterdir()):
                report.present.append(session)
                continue
            report.sessions.append(
                import_dicom_session(
                    session_dir, bids_dir, subject=subject, session=session, mapping=mapping,
                    sbrt_date=sbrt_date, reference_suffix=reference_suffix,
                    skip_unknown=skip_unknown,
                )
            )  # fmt: skip
        treated: list[str] = []
        if "treated_levels" in row:
            from qmri.labels import parse_levels

            treated = parse_levels(row["treated_levels"], dicom_dir / CLINICAL_TABLE)
            report.treated_levels, report.treated_from = treated, CLINICAL_TABLE
        values = _import_rt(
            report, rt, subject_dir, bids_dir, labels_dir, dose_dir,
            reference_suffix=reference_suffix,
            structure_map=None if structure_map is None else Path(structure_map),
            treated=treated,
        )  # fmt: skip
        if report.treated_levels:
            values["treated_levels"] = ",".join(report.treated_levels)
        for key, value in row.items():
            if key not in ("sbrt_date", "treated_levels") and not is_denied(key):
                values[key] = value
        if values and (bids_dir / f"sub-{subject}").is_dir():
            set_participant_values(bids_dir, subject, values)
        reports.append(report)
    return StudyImportReport(reports)


def import_for_workflow(config: Mapping[str, object], *, run_import: bool = True) -> str | None:
    """The workflow's ``dicom_dir`` import (validated config in); returns the ``dose_dir`` the
    workflow then uses.

    With ``run_import`` (the main Snakemake process), imports what :func:`import_dicom_study`
    finds new and prints its summary to stderr; jobs on a cluster pass False and only resolve
    the dose directory, so that they plan the same jobs. The dose directory is the configured
    ``dose_dir``, else ``<bids_dir>/derivatives/dose`` when every subject of the DICOM folder
    has a dose map there, else None (no dose analysis).
    """
    import sys

    from qmri.config import default_dose_dir
    from qmri.dose import dose_path

    bids_dir, dicom_dir = str(config["bids_dir"]), Path(str(config["dicom_dir"]))
    dose_dir = config.get("dose_dir") or default_dose_dir(bids_dir)
    if run_import:
        options = dict(config.get("dicom") or {})
        report = import_dicom_study(
            dicom_dir, bids_dir, labels_dir=str(config["labels_dir"]), dose_dir=str(dose_dir),
            reference_suffix=str(config["reference_suffix"]),
            mapping=options.get("series_mapping"), structure_map=options.get("structure_map"),
            skip_unknown=bool(options.get("skip_unknown", False)),
        )  # fmt: skip
        print(f"qmri: DICOM import from {dicom_dir}:\n{report.summary()}", file=sys.stderr)
    if config.get("dose_dir"):
        return str(config["dose_dir"])
    subjects = [s for s, _ in labelled_dirs(dicom_dir, "sub")] if dicom_dir.is_dir() else []
    if subjects and all(dose_path(dose_dir, s).exists() for s in subjects):
        return str(dose_dir)
    return None
