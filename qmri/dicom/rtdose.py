"""RTDOSE -> the contract's dose input (Gy on the baseline reference grid); RTPLAN fractions.

The dose map the workflow reads (:func:`qmri.dose.read_dose`) is a 3D NIfTI in Gy on the
baseline reference grid, ``<dose_dir>/sub-<s>/sub-<s>_dose.nii.gz`` (:func:`qmri.dose.dose_path`).
:func:`import_rtdose` makes it from a planning system's RTDOSE:

* the dose grid is read with pydicom (:func:`read_rtdose`): stored values times
  DoseGridScaling, frames placed by GridFrameOffsetVector (relative offsets, first 0, or
  absolute z positions, first equal to the z of ImagePositionPatient: both read as offsets from
  the first frame), on the grid's own affine;
* only an absolute physical dose of the whole plan is imported: DoseUnits ``GY`` (``RELATIVE``
  is refused), DoseType ``PHYSICAL`` or ``EFFECTIVE`` (RBE-weighted, noted), DoseSummationType
  ``PLAN`` or ``MULTI_PLAN`` (noted); a ``FRACTION`` dose is multiplied by the fractions of the
  RTPLAN (which must then be given); partial doses (``BEAM``, ``BRACHY``, ``CONTROL_POINT``,
  ``*_SESSION``, ``RECORD``) are refused, since the study needs the total planned dose;
* it is resampled trilinearly onto the reference grid through the planning -> MR transform of
  the RTSTRUCT import (:mod:`qmri.dicom.planning_ct`) when the dose is in the planning CT's
  frame, else through the identity (dose computed on the MR frame). Reference voxels outside
  the dose grid get 0 Gy (a planning system's dose grid covers every voxel it gives dose to),
  and their share is reported. When the transform's sidecar records the planning frame
  (``PlanningFrameOfReferenceSHA256``), the RTDOSE's frame must match it.

The RTPLAN (:func:`read_rtplan`) gives the number of fractions (FractionGroupSequence
NumberOfFractionsPlanned) and the prescription (DoseReferenceSequence TargetPrescriptionDose of
the TARGET references, the highest if several), for participants.tsv ``fractions`` and
``dose_gy``, and its date (RTPlanDate) for ``days_from_sbrt``; none of them, nor any patient
attribute or UID, is written into the outputs.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qmri.dicom.planning_ct import dicom_to_ras_affine, frame_hash, quiet_pydicom
from qmri.errors import QMRIInputError
from qmri.io import load_nifti, read_json, save_nifti
from qmri.provenance import file_sha256, software
from qmri.registration import read_transform, resample_linear, transform_to_matrix

__all__ = [
    "ACCEPTED_SUMMATION",
    "RTDose",
    "RTDoseImport",
    "RTPlan",
    "import_rtdose",
    "read_rtdose",
    "read_rtplan",
]

log = logging.getLogger("qmri")

#: DoseSummationType values imported as the plan's total dose (``FRACTION`` is scaled by the
#: number of fractions).
ACCEPTED_SUMMATION: tuple[str, ...] = ("PLAN", "MULTI_PLAN", "FRACTION")

_RTDOSE_SOP = "1.2.840.10008.5.1.4.1.1.481.2"
_RTPLAN_SOPS = ("1.2.840.10008.5.1.4.1.1.481.5", "1.2.840.10008.5.1.4.1.1.481.8")


def _read(path: Path, kind: str, modality: str, sops: tuple[str, ...]) -> Any:
    import pydicom
    from pydicom.errors import InvalidDicomError

    if not path.is_file():
        raise QMRIInputError(f"{kind} file not found", path)
    try:
        ds = pydicom.dcmread(path, force=True)
    except (InvalidDicomError, OSError, ValueError, TypeError, AttributeError, KeyError) as exc:
        raise QMRIInputError(f"not a readable DICOM file ({exc})", path) from None
    found = str(getattr(ds, "Modality", "")).upper()
    if found != modality and str(getattr(ds, "SOPClassUID", "")) not in sops:
        raise QMRIInputError(f"not an {kind} (Modality {found or 'missing'})", path)
    return ds


@dataclass
class RTDose:
    """An RTDOSE grid as read (no unit checks).

    Attributes
    ----------
    dose : ndarray of float64, shape (columns, rows, frames)
        Stored values times DoseGridScaling, in ``units``; frames in increasing offset order.
    affine : (4, 4) ndarray
        Voxel-to-world affine of the grid (RAS, mm, in the dose's frame of reference).
    units, dose_type, summation : str
        DoseUnits (``GY``, ``RELATIVE``), DoseType (``PHYSICAL``, ``EFFECTIVE``, ``ERROR``),
        DoseSummationType (``PLAN``, ``FRACTION``, ``BEAM``, ...).
    scaling : float
        DoseGridScaling.
    frame_uid : str
        FrameOfReferenceUID.
    plan_uid : str or None
        SOPInstanceUID of the referenced RTPLAN.
    """

    dose: np.ndarray
    affine: np.ndarray
    units: str
    dose_type: str
    summation: str
    scaling: float
    frame_uid: str
    plan_uid: str | None

    @property
    def shape(self) -> tuple[int, int, int]:
        """Grid shape."""
        return (int(self.dose.shape[0]), int(self.dose.shape[1]), int(self.dose.shape[2]))


def read_rtdose(path: str | Path) -> RTDose:
    """Read an RTDOSE's grid and attributes (any units and summation type).

    Raises
    ------
    QMRIInputError
        One line naming the file: missing, not DICOM, not an RTDOSE, no pixel data, a grid
        without geometry or with unevenly spaced frames.
    """
    with quiet_pydicom():
        return _read_rtdose(Path(path))


def _read_rtdose(path: Path) -> RTDose:
    """:func:`read_rtdose` without the warning filter."""
    path = Path(path)
    ds = _read(path, "RTDOSE", "RTDOSE", (_RTDOSE_SOP,))
    try:
        pixels = np.asarray(ds.pixel_array, dtype=np.float64)
    except Exception as exc:  # noqa: BLE001 (pydicom raises many types for bad pixel data)
        raise QMRIInputError(f"RTDOSE without readable pixel data ({exc})", path) from None
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if pixels.ndim == 2:
        pixels = pixels[None]
    if pixels.shape[0] != frames:
        raise QMRIInputError(
            f"RTDOSE holds {pixels.shape[0]} frames, NumberOfFrames says {frames}", path
        )
    try:
        iop = [float(v) for v in ds.ImageOrientationPatient]
        ipp = np.array([float(v) for v in ds.ImagePositionPatient])
        spacing = [float(v) for v in ds.PixelSpacing]
    except AttributeError as exc:
        raise QMRIInputError(f"RTDOSE grid lacks geometry ({exc})", path) from None
    normal = np.cross(iop[:3], iop[3:6])
    offsets = getattr(ds, "GridFrameOffsetVector", None)
    if frames > 1:
        if offsets is None or len(offsets) != frames:
            raise QMRIInputError(
                "RTDOSE GridFrameOffsetVector is missing or does not match the frames", path
            )
        rel = np.array([float(v) for v in offsets])
        rel = rel - rel[0]  # relative (first 0) and absolute (first = IPP z) alike
        order = np.argsort(rel, kind="stable")
        rel, pixels = rel[order], pixels[order]
        steps = np.diff(rel)
        if np.any(steps <= 0) or np.ptp(steps) > 1e-3 * max(abs(steps.mean()), 1e-6) + 1e-4:
            raise QMRIInputError(
                f"RTDOSE frames are unevenly spaced ({steps.min():.4g}..{steps.max():.4g} mm)",
                path,
            )
        first = ipp + rel[0] * normal
        step = float(steps.mean())
    else:
        first, step = ipp, float(getattr(ds, "SliceThickness", 1.0) or 1.0)
    scaling = float(getattr(ds, "DoseGridScaling", 1.0) or 1.0)
    affine = dicom_to_ras_affine(first, iop, spacing, normal * step)
    plan_uid = None
    for ref in getattr(ds, "ReferencedRTPlanSequence", None) or []:
        plan_uid = str(getattr(ref, "ReferencedSOPInstanceUID", "")) or None
    return RTDose(
        dose=pixels.transpose(2, 1, 0) * scaling,
        affine=affine,
        units=str(getattr(ds, "DoseUnits", "") or "").upper(),
        dose_type=str(getattr(ds, "DoseType", "") or "").upper(),
        summation=str(getattr(ds, "DoseSummationType", "") or "").upper(),
        scaling=scaling,
        frame_uid=str(getattr(ds, "FrameOfReferenceUID", "") or ""),
        plan_uid=plan_uid,
    )


@dataclass
class RTPlan:
    """What the study takes from an RTPLAN.

    Attributes
    ----------
    fractions : int or None
        NumberOfFractionsPlanned of the first fraction group.
    prescription_gy : float or None
        TargetPrescriptionDose (Gy) of the TARGET dose references (the highest if several).
    plan_date : datetime.date or None
        RTPlanDate (for ``days_from_sbrt``; never written into outputs).
    sop_uid : str
        The plan's SOPInstanceUID (to check an RTDOSE's reference).
    notes : list of str
        Several fraction groups or targets, unreadable values.
    """

    fractions: int | None
    prescription_gy: float | None
    plan_date: datetime.date | None
    sop_uid: str
    notes: list[str] = field(default_factory=list)


def read_rtplan(path: str | Path) -> RTPlan:
    """Read fractions, prescription and date of an RTPLAN (or RT Ion Plan).

    Raises
    ------
    QMRIInputError
        One line naming the file: missing, not DICOM or not an RT plan.
    """
    with quiet_pydicom():
        return _read_rtplan(Path(path))


def _read_rtplan(path: Path) -> RTPlan:
    """:func:`read_rtplan` without the warning filter."""
    path = Path(path)
    ds = _read(path, "RTPLAN", "RTPLAN", _RTPLAN_SOPS)
    notes: list[str] = []
    groups = list(getattr(ds, "FractionGroupSequence", None) or [])
    fractions = None
    if groups:
        value = getattr(groups[0], "NumberOfFractionsPlanned", None)
        fractions = int(value) if value not in (None, "") else None
        if len(groups) > 1:
            notes.append(f"{len(groups)} fraction groups: the first one's fractions are used")
    targets = []
    for ref in getattr(ds, "DoseReferenceSequence", None) or []:
        dose = getattr(ref, "TargetPrescriptionDose", None)
        if dose not in (None, "") and str(getattr(ref, "DoseReferenceType", "")) == "TARGET":
            targets.append(float(dose))
    prescription = max(targets) if targets else None
    if len(targets) > 1:
        notes.append(
            f"{len(targets)} target prescriptions ({', '.join(f'{t:g}' for t in targets)} Gy): "
            "the highest is used"
        )
    date = None
    text = str(getattr(ds, "RTPlanDate", "") or "")
    if text:
        try:
            date = datetime.datetime.strptime(text[:8], "%Y%m%d").date()
        except ValueError:
            notes.append("RTPlanDate is not a DICOM date")
    return RTPlan(fractions, prescription, date, str(getattr(ds, "SOPInstanceUID", "")), notes)


@dataclass
class RTDoseImport:
    """What :func:`import_rtdose` wrote and found.

    Attributes
    ----------
    dose : Path
        The dose on the reference grid (float32 NIfTI, Gy, JSON sidecar).
    native : Path or None
        The dose on its own grid (when asked for).
    fractions : int or None
        From the RTPLAN.
    prescription_gy : float or None
        From the RTPLAN.
    plan_date : datetime.date or None
        From the RTPLAN (not written anywhere).
    max_gy : float
        Highest dose on the reference grid (Gy).
    outside_fraction : float
        Share of reference voxels outside the dose grid (set to 0 Gy).
    summation : str
        The RTDOSE's DoseSummationType.
    notes : list of str
    """

    dose: Path
    native: Path | None
    fractions: int | None
    prescription_gy: float | None
    plan_date: datetime.date | None
    max_gy: float
    outside_fraction: float
    summation: str
    notes: list[str]


def import_rtdose(
    rtdose: str | Path,
    reference: str | Path,
    out_dose: str | Path,
    *,
    transform: str | Path | None = None,
    rtplan: str | Path | None = None,
    out_native: str | Path | None = None,
) -> RTDoseImport:
    """Import an RTDOSE as the contract's dose map (Gy on the baseline reference grid).

    Parameters
    ----------
    rtdose : str or Path
        The RTDOSE file (the plan's total dose).
    reference : str or Path
        The baseline MR reference (3D NIfTI).
    out_dose : str or Path
        Output NIfTI, e.g. :func:`qmri.dose.dose_path` ``(dose_dir, subject)``.
    transform : str or Path, optional
        The ``from-<planning>_to-<MR>`` transform of the RTSTRUCT import (maps reference points
        to planning-frame points), for a dose in the planning CT's frame; None: the dose is in
        the reference's frame.
    rtplan : str or Path, optional
        The RTPLAN: fractions and prescription (required for a ``FRACTION`` dose).
    out_native : str or Path, optional
        Also write the dose (Gy) on its own grid here.

    Returns
    -------
    RTDoseImport

    Raises
    ------
    QMRIInputError
        One line naming the file: unreadable inputs, units other than GY, a partial dose, a
        ``FRACTION`` dose without an RTPLAN giving fractions, dose type ERROR, a dose in another
        frame than the transform's planning image, a dose grid that misses the reference.
    """
    rtdose, reference, out_dose = Path(rtdose), Path(reference), Path(out_dose)
    grid = read_rtdose(rtdose)
    plan = read_rtplan(rtplan) if rtplan is not None else None
    notes = list(plan.notes) if plan else []
    if grid.units != "GY":
        raise QMRIInputError(
            f"dose units {grid.units or 'missing'}: only an absolute dose in GY can be imported",
            rtdose,
        )
    if grid.dose_type == "ERROR":
        raise QMRIInputError("DoseType ERROR (a dose difference), not a planned dose", rtdose)
    if grid.dose_type == "EFFECTIVE":
        notes.append("DoseType EFFECTIVE: RBE-weighted dose imported as is")
    if grid.summation not in ACCEPTED_SUMMATION:
        raise QMRIInputError(
            f"DoseSummationType {grid.summation or 'missing'} is a partial dose; export the "
            "plan's total dose (PLAN)",
            rtdose,
        )
    dose = grid.dose
    if grid.summation == "FRACTION":
        if plan is None or not plan.fractions:
            raise QMRIInputError(
                "a dose per fraction (DoseSummationType FRACTION) needs the RTPLAN with the "
                "number of fractions",
                rtdose,
            )
        dose = dose * plan.fractions
        notes.append(f"dose per fraction x {plan.fractions} fractions")
    if grid.summation == "MULTI_PLAN":
        notes.append("DoseSummationType MULTI_PLAN: the sum of several plans")
    if plan is not None and grid.plan_uid and plan.sop_uid and grid.plan_uid != plan.sop_uid:
        notes.append("the RTDOSE references another RTPLAN than the one given")
    if dose.size and np.nanmin(dose) < 0:
        raise QMRIInputError(f"negative doses in the RTDOSE (min {np.nanmin(dose):.3g})", rtdose)

    ref_img = load_nifti(reference, ndim=3)
    ref_shape = tuple(int(n) for n in ref_img.shape)
    matrix = None
    transform_text = "identity (dose in the reference's frame)"
    if transform is not None:
        transform = Path(transform)
        matrix = transform_to_matrix(read_transform(transform))
        transform_text = str(transform)
        side = transform.with_name(transform.name.removesuffix(".txt") + ".json")
        if side.is_file():
            expected = read_json(side).get("PlanningFrameOfReferenceSHA256")
            if expected and grid.frame_uid and frame_hash(grid.frame_uid) != expected:
                raise QMRIInputError(
                    f"the RTDOSE is in another frame of reference than the planning image "
                    f"{transform.name} was registered from",
                    rtdose,
                )
    on_ref = resample_linear(dose, grid.affine, ref_shape, ref_img.affine, matrix)
    outside = ~np.isfinite(on_ref)
    outside_fraction = float(outside.mean())
    if outside_fraction >= 1.0:
        raise QMRIInputError(
            "the dose grid does not overlap the reference image (wrong transform or frame?)",
            rtdose,
        )
    on_ref[outside] = 0.0
    if outside_fraction > 0:
        notes.append(
            f"{100 * outside_fraction:.1f} % of the reference voxels lie outside the dose grid "
            "(0 Gy)"
        )
    sidecar = {
        "Units": "Gy",
        "Description": "planned dose from an RTDOSE, trilinear on the baseline reference grid "
        "(qmri.dicom.rtdose); 0 Gy outside the dose grid",
        "DoseSummationType": grid.summation,
        "DoseType": grid.dose_type,
        "DoseGridSpacingMM": [float(v) for v in np.linalg.norm(grid.affine[:3, :3], axis=0)],
        "Transform": transform_text,
        "VoxelsOutsideDoseGridFraction": outside_fraction,
        "Fractions": plan.fractions if plan else None,
        "PrescriptionDose": plan.prescription_gy if plan else None,
        "Sources": {"RTDOSE_SHA256": file_sha256(rtdose)}
        | ({"RTPLAN_SHA256": file_sha256(Path(rtplan))} if rtplan is not None else {}),
        "Notes": notes,
        **software(),
    }
    save_nifti(on_ref, ref_img.affine, out_dose, dtype=np.float32, sidecar=sidecar)
    native = None
    if out_native is not None:
        native = save_nifti(
            dose, grid.affine, out_native, dtype=np.float32,
            sidecar={**sidecar, "Description": "planned dose from an RTDOSE on its own grid, "
                     "in the planning frame", "Transform": None},
        )  # fmt: skip
    for line in notes:
        log.info("RTDOSE import: %s", line)
    return RTDoseImport(
        dose=out_dose,
        native=native,
        fractions=plan.fractions if plan else None,
        prescription_gy=plan.prescription_gy if plan else None,
        plan_date=plan.plan_date if plan else None,
        max_gy=float(np.max(on_ref)),
        outside_fraction=outside_fraction,
        summation=grid.summation,
        notes=notes,
    )
