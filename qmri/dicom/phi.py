"""Keep protected health information (PHI) out of everything the DICOM import writes.

Two layers, both applied to every sidecar (:func:`scrub_sidecar`):

1. **Allow-list** (:data:`ALLOWED_KEYS`): a sidecar keeps only known acquisition keys (BIDS
   acquisition fields as dcm2niix writes them, plus the fields the data contract adds). Any
   other key is dropped, so a vendor or converter field added in the future (a free-text
   comment, a new date) never reaches the output unnoticed.
2. **Deny-list** (:data:`DENIED_KEYS`, :data:`DENIED_PATTERNS`): names that are PHI whatever
   else happens (names, IDs, birth date, sex, age, weight, institution, physicians, operators,
   station, device serial number, accession number, study ID, every UID, every date, absolute
   clock times such as ``AcquisitionTime``, free-text comments, series descriptions and protocol
   names, which sites sometimes fill with names). A key on both lists is dropped: the deny-list
   wins, so a mistake in the allow-list cannot leak PHI.

Relative timing stays (``VolumeTiming`` and ``SliceTiming`` are seconds from the first volume or
slice). The study date becomes ``days_from_sbrt`` in ``sessions.tsv`` and nowhere else. Patient
sex is dropped too: the data contract's clinical table (section 5) does not use it.

NIfTI headers are rebuilt from scratch by the import (no ``descrip``, ``aux_file``,
``intent_name``, ``db_name`` or extensions), see :func:`clean_nifti_header`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import nibabel as nib
import numpy as np

__all__ = [
    "ALLOWED_KEYS",
    "DENIED_KEYS",
    "DENIED_PATTERNS",
    "clean_nifti_header",
    "is_denied",
    "scrub_sidecar",
]

#: Sidecar keys the import keeps (acquisition description; no identity, no absolute time).
ALLOWED_KEYS: frozenset[str] = frozenset(
    {
        # hardware and software
        "Modality", "Manufacturer", "ManufacturersModelName", "SoftwareVersions",
        "MagneticFieldStrength", "ImagingFrequency", "ReceiveCoilName",
        "ReceiveCoilActiveElements", "TransmitCoilName", "BodyPart", "PatientPosition",
        "ConversionSoftware", "ConversionSoftwareVersion",
        # sequence
        "MRAcquisitionType", "ScanningSequence", "SequenceVariant", "ScanOptions",
        "SequenceName", "PulseSequenceType", "PulseSequenceDetails", "ImageType",
        "NonlinearGradientCorrection", "MTState", "SpoilingState", "SpoilingType",
        "SpoilingRFPhaseIncrement", "SpoilingGradientMoment", "SpoilingGradientDuration",
        # timing and contrast parameters
        "EchoTime", "EchoNumber", "EchoTrainLength", "RepetitionTime",
        "RepetitionTimeExcitation", "RepetitionTimePreparation", "InversionTime", "FlipAngle",
        "SliceTiming", "SliceEncodingDirection", "VolumeTiming", "DelayTime",
        "AcquisitionDuration", "NumberOfVolumesDiscardedByScanner",
        # geometry and encoding
        "SliceThickness", "SpacingBetweenSlices", "PhaseEncodingDirection",
        "PhaseEncodingAxis", "InPlanePhaseEncodingDirectionDICOM", "EffectiveEchoSpacing",
        "DerivedVendorReportedEchoSpacing", "TotalReadoutTime", "PixelBandwidth",
        "ParallelReductionFactorInPlane", "ParallelAcquisitionTechnique", "PartialFourier",
        "PartialFourierDirection", "MultibandAccelerationFactor", "PercentPhaseFOV",
        "PercentSampling", "PhaseEncodingSteps", "FrequencyEncodingSteps",
        "AcquisitionMatrixPE", "ReconMatrixPE", "BaseResolution", "DiffusionScheme",
        # data contract and BIDS fields the import itself sets
        "BaselineFrames", "ContrastAgent", "ContrastBolusIngredient", "Units", "IntendedFor",
        "B1mapType",
    }
)  # fmt: skip

#: Keys that are always dropped (exact names).
DENIED_KEYS: frozenset[str] = frozenset(
    {
        "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge",
        "PatientWeight", "PatientSize", "OtherPatientIDs", "PatientComments",
        "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName",
        "ReferringPhysicianName", "PerformingPhysicianName", "NameOfPhysiciansReadingStudy",
        "OperatorsName", "StationName", "DeviceSerialNumber", "AccessionNumber", "StudyID",
        "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID",
        "AcquisitionDateTime", "AcquisitionDate", "AcquisitionTime", "StudyDate", "StudyTime",
        "SeriesDate", "SeriesTime", "ContentDate", "ContentTime", "InstanceCreationDate",
        "InstanceCreationTime", "ContrastBolusStartTime", "ContrastBolusStopTime",
        "ImageComments", "StudyDescription", "SeriesDescription", "ProtocolName",
        "RequestedProcedureDescription", "PerformedProcedureStepDescription",
        "ProcedureStepDescription", "ContrastBolusAgent", "ImageOrientationPatientDICOM",
    }
)  # fmt: skip

#: Key patterns that are always dropped (identity, UIDs, dates, clock times, free text).
DENIED_PATTERNS: tuple[re.Pattern[str], ...] = tuple(
    re.compile(p)
    for p in (
        r"^Patient(?!Position$)",
        r"^(Institution|Referring|Performing|Operator|Physician|Accession|Study|Station)",
        r"Serial",
        r"UID$",
        r"Date",
        r"Comment",
        r"^(Acquisition|Content|Series|Study|Instance\w*|Frame\w*)Time$",
        r"(?<!Model)(?<!Sequence)(?<!Coil)Name$",
    )
)


def is_denied(key: str) -> bool:
    """Whether a sidecar key is PHI by the deny-list (exact names or patterns)."""
    return key in DENIED_KEYS or any(p.search(key) for p in DENIED_PATTERNS)


def scrub_sidecar(meta: Mapping[str, Any]) -> dict[str, Any]:
    """Keep the allowed, non-denied keys of a sidecar.

    Parameters
    ----------
    meta : mapping
        A sidecar as dcm2niix (or anything else) wrote it.

    Returns
    -------
    dict
        The keys that are on :data:`ALLOWED_KEYS` and not denied (:func:`is_denied`), with
        their values; the input is not modified.

    Examples
    --------
    >>> scrub_sidecar({"FlipAngle": 15, "PatientName": "Doe^Jane", "AcquisitionTime": "08:15"})
    {'FlipAngle': 15}
    """
    return {k: v for k, v in meta.items() if k in ALLOWED_KEYS and not is_denied(k)}


def clean_nifti_header(
    raw: np.ndarray,
    affine: np.ndarray,
    *,
    slope: float,
    inter: float,
    zooms_t: float | None,
    xyzt_units: tuple[str, str],
) -> nib.Nifti1Header:
    """A fresh NIfTI-1 header for stored data ``raw``: geometry, type, scaling and nothing else.

    Parameters
    ----------
    raw : ndarray
        Stored (unscaled) data.
    affine : (4, 4) ndarray
        Voxel to RAS+ world (mm); written as qform and sform (code 1, scanner).
    slope, inter : float
        Scaling: value = stored * slope + inter.
    zooms_t : float or None
        Fourth pixdim (s) of a 4D image.
    xyzt_units : (str, str)
        Space and time units (``"mm"``, ``"sec"``).

    Returns
    -------
    nibabel.Nifti1Header
        ``descrip``, ``aux_file``, ``intent_name`` and ``db_name`` empty, no extensions, no
        slice-timing fields (a converter may store clock times or comments there).
    """
    header = nib.Nifti1Header()
    header.set_data_dtype(raw.dtype)
    header.set_data_shape(raw.shape)
    zooms = list(np.linalg.norm(affine[:3, :3], axis=0))
    if raw.ndim == 4:
        zooms.append(float(zooms_t) if zooms_t else 1.0)
    header.set_zooms(zooms)
    header.set_qform(affine, code=1)
    header.set_sform(affine, code=1)
    header.set_xyzt_units(*xyzt_units)
    header.set_slope_inter(slope, inter)
    for key in ("descrip", "aux_file", "intent_name", "db_name"):
        header[key] = b""
    return header
