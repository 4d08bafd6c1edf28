"""Write a BIDS phantom session as scanner-like MR DICOM, for the DICOM import tests.

:func:`write_dicom_session` turns the NIfTI series of one phantom session (``qmri.phantom`` or
``data_sample/``) into one DICOM series per acquisition, the way a scanner exports them: one
file per slice (classic MR Image Storage) with real MR tags, or one enhanced multi-frame file
(Enhanced MR Image Storage, per-frame functional groups) for the series named in ``enhanced``.

Geometry: the NIfTI affine is RAS+ (mm); DICOM patient coordinates are LPS, so x and y change
sign. Slices are written sagittally by default (the usual spine acquisition): the DICOM columns
run anterior -> posterior, the rows superior -> inferior and the slices left -> right along the
NIfTI's first axis. ``ImagePositionPatient`` of slice ``n`` is the world position of its first
voxel, ``ImageOrientationPatient`` the row and column direction cosines, ``PixelSpacing`` (row
spacing, column spacing) and ``SliceThickness`` the voxel size (mm).

Every series carries planted protected health information (:data:`PHI`), so that a test can grep
the import's output for it. Nothing is downloaded.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"
#: UID root of every UID the factory makes (pydicom's registered prefix).
UID_PREFIX = "1.2.826.0.1.3680043.8.498."

STUDY_DATE = dt.date(2024, 3, 4)
STUDY_TIME = dt.time(8, 15, 30)

#: Planted protected health information: the import must copy none of it.
PHI: dict[str, str] = {
    "PatientName": "Doe^Jane^PHIMIDDLE",
    "PatientID": "PHI-PID-73519",
    "PatientBirthDate": "19580214",
    "PatientSex": "F",
    "PatientAge": "066Y",
    "InstitutionName": "PHI General Hospital",
    "InstitutionAddress": "1 PHI Street, Springfield",
    "InstitutionalDepartmentName": "PHI Radiology",
    "ReferringPhysicianName": "Referrer^PHIDOC",
    "PerformingPhysicianName": "Performer^PHIDOC",
    "OperatorsName": "Operator^PHITECH",
    "StationName": "PHISTATION01",
    "DeviceSerialNumber": "PHISERIAL4711",
    "AccessionNumber": "PHIACC0815",
    "StudyID": "PHISTUDY9",
    "ImageComments": "PHI comment for Doe",
}

#: Strings of :data:`PHI` and the study's dates and clock times, for grepping outputs.
PHI_STRINGS: tuple[str, ...] = (
    "Doe",
    "PHI",
    "73519",
    "19580214",
    "1958-02-14",
    "20240304",
    "2024-03-04",
    "081530",
    "81530",  # dcm2niix writes the clock time without its leading zero (NIfTI descrip)
    "08:15:30",
)


@dataclass(frozen=True)
class FactorySeries:
    """One DICOM series written by the factory.

    Attributes
    ----------
    kind : str
        The contract's series kind it was made from (``VFA``, ``MESE``, ``T2w``, ...).
    description : str
        Its SeriesDescription.
    files : tuple of Path
        The DICOM files.
    sources : tuple of Path
        The BIDS NIfTI file(s) it holds, in the order of their volumes.
    series_uid : str
        Its SeriesInstanceUID.
    enhanced : bool
        One enhanced multi-frame file instead of one file per slice.
    """

    kind: str
    description: str
    files: tuple[Path, ...]
    sources: tuple[Path, ...]
    series_uid: str
    enhanced: bool = False


@dataclass
class _Volume:
    """One 3D volume of a series: stored pixel values and its acquisition parameters."""

    stored: np.ndarray  # (i, j, k) on the NIfTI grid, integers as stored in DICOM
    params: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# geometry
# --------------------------------------------------------------------------------------------

_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class _Grid:
    """The DICOM geometry of a NIfTI grid and how to cut its data into slices."""

    axes: tuple[int, int, int]  # NIfTI axes for (DICOM column index, row index, slice index)
    flips: tuple[bool, bool, bool]
    row_cosine: np.ndarray  # direction of increasing column index (LPS)
    col_cosine: np.ndarray  # direction of increasing row index (LPS)
    pixel_spacing: tuple[float, float]  # (between rows, between columns) mm
    slice_step: np.ndarray  # LPS mm from one slice to the next
    origin: np.ndarray  # LPS mm of the first voxel of the first slice

    def to_dicom_order(self, vol: np.ndarray) -> np.ndarray:
        """(columns, rows, slices) array of a NIfTI-ordered volume."""
        out = vol
        for axis, flip in zip(self.axes, self.flips, strict=True):
            if flip:
                out = np.flip(out, axis)
        return np.transpose(out, self.axes)

    def position(self, n: int) -> np.ndarray:
        return self.origin + n * self.slice_step

    @property
    def thickness(self) -> float:
        return float(np.linalg.norm(self.slice_step))

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.row_cosine, self.col_cosine)


def dicom_grid(
    affine: np.ndarray,
    shape: Sequence[int],
    *,
    axes: tuple[int, int, int] = (1, 2, 0),
    flips: tuple[bool, bool, bool] = (True, True, False),
) -> _Grid:
    """DICOM geometry of a NIfTI grid (``affine`` RAS+ mm, ``shape`` voxels).

    ``axes`` are the NIfTI axes along the DICOM columns, rows and slices; ``flips`` reverse
    them. The default is a sagittal stack of the phantom's RAS grid: columns anterior ->
    posterior, rows superior -> inferior, slices left -> right.
    """
    aff = np.asarray(affine, float).copy()
    for axis, flip in zip(axes, flips, strict=True):
        if flip:  # voxel n of the flipped axis is voxel (N - 1 - n) of the original
            aff[:3, 3] += aff[:3, axis] * (shape[axis] - 1)
            aff[:3, axis] *= -1
    lps = _LPS @ aff
    vcol, vrow, vslice = (lps[:3, a] for a in axes)
    return _Grid(
        axes=axes,
        flips=flips,
        row_cosine=vcol / np.linalg.norm(vcol),
        col_cosine=vrow / np.linalg.norm(vrow),
        pixel_spacing=(float(np.linalg.norm(vrow)), float(np.linalg.norm(vcol))),
        slice_step=vslice,
        origin=lps[:3, 3],
    )


# --------------------------------------------------------------------------------------------
# series made from a BIDS session
# --------------------------------------------------------------------------------------------


def _read_raw(path: Path) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Stored integers, affine, slope and intercept of a NIfTI file."""
    img = nib.load(str(path))
    raw = np.asanyarray(img.dataobj.get_unscaled())
    slope, inter = img.dataobj.slope, img.dataobj.inter
    return raw, img.affine, float(slope), float(inter)


def _sidecar(path: Path) -> dict[str, Any]:
    return json.loads(path.with_name(path.name.replace(".nii.gz", ".json")).read_text())


_SEQUENCES: dict[str, dict[str, Any]] = {
    "T2w": {"ScanningSequence": "SE", "SequenceVariant": ["SK", "SP"], "SequenceName": "*tse2d1_15",
            "ScanOptions": "", "MRAcquisitionType": "2D"},
    "VFA": {"ScanningSequence": "GR", "SequenceVariant": ["SP", "OSP"], "SequenceName": "*fl3d1",
            "ScanOptions": "", "MRAcquisitionType": "3D"},
    "MESE": {"ScanningSequence": "SE", "SequenceVariant": ["SK"], "SequenceName": "*se2d8",
             "ScanOptions": "", "MRAcquisitionType": "2D"},
    "MEGRE": {"ScanningSequence": "GR", "SequenceVariant": ["SP"], "SequenceName": "*fl2d6",
              "ScanOptions": "", "MRAcquisitionType": "2D"},
    "IRT1": {"ScanningSequence": ["IR", "SE"], "SequenceVariant": ["SK"], "SequenceName": "*ir2d1",
             "ScanOptions": "IR", "MRAcquisitionType": "2D"},
    "TB1map": {"ScanningSequence": "GR", "SequenceVariant": ["SP"], "SequenceName": "*afi3d1",
               "ScanOptions": "", "MRAcquisitionType": "3D"},
    "dwi": {"ScanningSequence": "EP", "SequenceVariant": ["SK", "SP"], "SequenceName": "*ep_b",
            "ScanOptions": "FS", "MRAcquisitionType": "2D"},
    "dce": {"ScanningSequence": "GR", "SequenceVariant": ["SP"], "SequenceName": "*fl3d1_dyn",
            "ScanOptions": "", "MRAcquisitionType": "3D"},
}  # fmt: skip


def _ms(seconds: float) -> float:
    return round(float(seconds) * 1000.0, 6)


def _series_plan(session_dir: Path) -> list[tuple[str, str, list[Path], list[_Volume], dict]]:
    """(kind, description, sources, volumes, series tags) of every series of a session."""
    stem = f"{session_dir.parent.name}_{session_dir.name}"
    plan: list[tuple[str, str, list[Path], list[_Volume], dict]] = []

    def common(meta: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "RepetitionTime": _ms(meta["RepetitionTime"]),
            "EchoTime": _ms(meta["EchoTime"]),
            "FlipAngle": float(meta["FlipAngle"]),
            "MagneticFieldStrength": float(meta["MagneticFieldStrength"]),
        }

    def single(kind: str, path: Path, description: str, rescale: bool = False) -> None:
        raw, _, slope, inter = _read_raw(path)
        if rescale and slope == 1 and inter == 0:  # stored = (value + 100) / 0.5, like a scanner
            raw, slope, inter = (raw.astype(np.int32) * 2 + 200).astype(np.int16), 0.5, -100.0
        meta = _sidecar(path)
        tags = {**common(meta), "RescaleSlope": slope, "RescaleIntercept": inter}
        plan.append((kind, description, [path], [_Volume(raw, {})], tags))

    anat, fmap = session_dir / "anat", session_dir / "fmap"
    if (anat / f"{stem}_T2w.nii.gz").exists():
        single("T2w", anat / f"{stem}_T2w.nii.gz", "t2_tse_sag", rescale=True)
    # VFA: one series per flip angle, as most scanners export them
    for path in sorted(anat.glob(f"{stem}_flip-*_VFA.nii.gz")):
        raw, _, slope, inter = _read_raw(path)
        meta = _sidecar(path)
        tags = {**common(meta), "RescaleSlope": slope, "RescaleIntercept": inter}
        desc = f"t1_vfa_fa{round(meta['FlipAngle']):02d}"
        plan.append(("VFA", desc, [path], [_Volume(raw, {})], tags))
    # multi-echo: one series holding every echo
    for kind, desc in (("MESE", "t2_mese_map"), ("MEGRE", "t2star_megre")):
        paths = sorted(anat.glob(f"{stem}_echo-*_{kind}.nii.gz"),
                       key=lambda p: int(p.name.split("echo-")[1].split("_")[0]))  # fmt: skip
        if not paths:
            continue
        vols = []
        for echo, path in enumerate(paths, start=1):
            raw, _, slope, inter = _read_raw(path)
            te = _ms(_sidecar(path)["EchoTime"])
            vols.append(_Volume(raw, {"EchoTime": te, "EchoNumbers": echo}))
        tags = {**common(_sidecar(paths[0])), "RescaleSlope": slope, "RescaleIntercept": inter}
        tags["EchoTrainLength"] = len(paths)
        plan.append((kind, desc, paths, vols, tags))
    # inversion recovery: one series per inversion time
    for path in sorted(anat.glob(f"{stem}_inv-*_IRT1.nii.gz")):
        raw, _, slope, inter = _read_raw(path)
        meta = _sidecar(path)
        tags = {**common(meta), "RescaleSlope": slope, "RescaleIntercept": inter,
                "InversionTime": _ms(meta["InversionTime"])}  # fmt: skip
        desc = f"t1_ir_ti{round(meta['InversionTime'] * 1000):04d}"
        plan.append(("IRT1", desc, [path], [_Volume(raw, {})], tags))
    if (fmap / f"{stem}_TB1map.nii.gz").exists():
        single("TB1map", fmap / f"{stem}_TB1map.nii.gz", "b1map_afi")
    dwi = session_dir / "dwi" / f"{stem}_dwi.nii.gz"
    if dwi.exists():
        raw, affine, slope, inter = _read_raw(dwi)
        bvals = np.loadtxt(dwi.with_name(f"{stem}_dwi.bval"), ndmin=1)
        bvecs = np.loadtxt(dwi.with_name(f"{stem}_dwi.bvec"), ndmin=2).T
        rot = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
        vols = []
        for v, (b, vec) in enumerate(zip(bvals, bvecs, strict=True)):
            world_lps = _LPS[:3, :3] @ rot @ vec  # the phantom's vectors are in its voxel axes
            vols.append(_Volume(raw[..., v], {"DiffusionBValue": float(b),
                                              "DiffusionGradientOrientation": world_lps}))  # fmt: skip
        tags = {**common(_sidecar(dwi)), "RescaleSlope": slope, "RescaleIntercept": inter}
        plan.append(("dwi", "ep2d_diff_ivim", [dwi], vols, tags))
    dce = session_dir / "perf" / f"{stem}_dce.nii.gz"
    if dce.exists():
        raw, _, slope, inter = _read_raw(dce)
        meta = _sidecar(dce)
        times = [float(t) for t in meta["VolumeTiming"]]
        vols = [_Volume(raw[..., t], {"TemporalPositionIdentifier": t + 1, "FrameTime": times[t]})
                for t in range(raw.shape[3])]  # fmt: skip
        tags = {
            "RepetitionTime": _ms(meta["RepetitionTimeExcitation"]),
            "EchoTime": _ms(meta["EchoTime"]),
            "FlipAngle": float(meta["FlipAngle"]),
            "MagneticFieldStrength": float(meta["MagneticFieldStrength"]),
            "RescaleSlope": slope,
            "RescaleIntercept": inter,
            "NumberOfTemporalPositions": raw.shape[3],
            "ContrastBolusAgent": "ProHance",
            "ContrastBolusIngredient": "GADOLINIUM",
        }
        baseline = meta.get("BaselineFrames")
        if baseline:  # injection between the last baseline frame and the next one
            tags["_BolusStart"] = 0.5 * (times[baseline - 1] + times[baseline])
        plan.append(("dce", "dce_vibe_dyn", [dce], vols, tags))
    return plan


# --------------------------------------------------------------------------------------------
# DICOM writing
# --------------------------------------------------------------------------------------------


def _uid(*parts: object) -> str:
    return generate_uid(prefix=UID_PREFIX, entropy_srcs=[str(p) for p in parts])


def _clock(seconds_after_study: float) -> str:
    """DICOM TM of a time ``seconds_after_study`` s after :data:`STUDY_TIME`."""
    start = dt.datetime.combine(STUDY_DATE, STUDY_TIME)
    return (start + dt.timedelta(seconds=seconds_after_study)).strftime("%H%M%S.%f")


def _ds(number: float) -> str:
    """A DS string (at most 16 characters)."""
    text = f"{number:.6f}".rstrip("0").rstrip(".")
    return text if len(text) <= 16 else f"{number:.8g}"


def _base_dataset(sop_class: str, sop_uid: str, study_uid: str) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.Modality = "MR"
    ds.Manufacturer = "QMRI-FACTORY"
    ds.ManufacturerModelName = "dicom_factory"
    ds.SoftwareVersions = "1.0"
    ds.StudyDate = STUDY_DATE.strftime("%Y%m%d")
    ds.StudyTime = STUDY_TIME.strftime("%H%M%S")
    ds.PatientPosition = "HFS"
    ds.BodyPartExamined = "SPINE"
    for key, value in PHI.items():
        setattr(ds, key, value)
    return ds


def _pixel_tags(ds: Dataset, rows: int, cols: int) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 1


def _sequence_tags(ds: Dataset, kind: str, tags: Mapping[str, Any], series_offset: float) -> None:
    for key, value in _SEQUENCES[kind].items():
        setattr(ds, key, value)
    ds.RepetitionTime = _ds(tags["RepetitionTime"])
    ds.FlipAngle = _ds(tags["FlipAngle"])
    ds.MagneticFieldStrength = _ds(tags["MagneticFieldStrength"])
    ds.ImagingFrequency = _ds(42.576 * tags["MagneticFieldStrength"])
    ds.ImagedNucleus = "1H"
    if "InversionTime" in tags:
        ds.InversionTime = _ds(tags["InversionTime"])
    if "EchoTrainLength" in tags:
        ds.EchoTrainLength = tags["EchoTrainLength"]
    if kind == "dce":
        ds.NumberOfTemporalPositions = tags["NumberOfTemporalPositions"]
        ds.ContrastBolusAgent = tags["ContrastBolusAgent"]
        ds.ContrastBolusIngredient = tags["ContrastBolusIngredient"]
        if "_BolusStart" in tags:
            ds.ContrastBolusStartTime = _clock(series_offset + tags["_BolusStart"])
    if kind == "dwi":
        ds.InPlanePhaseEncodingDirection = "COL"


def _write(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _classic_series(
    kind: str,
    description: str,
    volumes: Sequence[_Volume],
    tags: Mapping[str, Any],
    grid: _Grid,
    out: Path,
    *,
    number: int,
    study_uid: str,
    frame_uid: str,
    series_offset: float,
) -> tuple[str, list[Path]]:
    series_uid = _uid("series", description, number)
    files: list[Path] = []
    instance = 0
    for vol in volumes:
        stored = grid.to_dicom_order(vol.stored)
        t_vol = series_offset + float(vol.params.get("FrameTime", 0.0))
        for n in range(stored.shape[2]):
            instance += 1
            sop = _uid("sop", series_uid, instance)
            ds = _base_dataset(MR_IMAGE_STORAGE, sop, study_uid)
            ds.StudyDate = tags.get("_StudyDate", ds.StudyDate)
            ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
            ds.SeriesInstanceUID = series_uid
            ds.FrameOfReferenceUID = frame_uid
            ds.SeriesNumber = number
            ds.SeriesDescription = description
            ds.ProtocolName = description
            ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = ds.StudyDate
            ds.SeriesTime = _clock(series_offset)
            ds.AcquisitionTime = ds.ContentTime = _clock(t_vol)
            ds.AcquisitionDateTime = STUDY_DATE.strftime("%Y%m%d") + _clock(t_vol)
            ds.AcquisitionNumber = 1
            ds.InstanceNumber = instance
            _sequence_tags(ds, kind, tags, series_offset)
            ds.EchoTime = _ds(vol.params.get("EchoTime", tags["EchoTime"]))
            ds.EchoNumbers = int(vol.params.get("EchoNumbers", 1))
            if "TemporalPositionIdentifier" in vol.params:
                if tags.get("_TemporalTag") == "AcquisitionNumber":  # how Siemens stores DCE
                    ds.AcquisitionNumber = vol.params["TemporalPositionIdentifier"]
                else:
                    ds.TemporalPositionIdentifier = vol.params["TemporalPositionIdentifier"]
            if "DiffusionBValue" in vol.params:
                ds.DiffusionBValue = vol.params["DiffusionBValue"]
                direction = np.asarray(vol.params["DiffusionGradientOrientation"], float)
                ds.DiffusionDirectionality = "DIRECTIONAL" if direction.any() else "NONE"
                if direction.any():
                    ds.DiffusionGradientOrientation = [float(v) for v in direction]
            pos = grid.position(n)
            ds.ImagePositionPatient = [_ds(v) for v in pos]
            ds.ImageOrientationPatient = [_ds(v) for v in (*grid.row_cosine, *grid.col_cosine)]
            ds.PixelSpacing = [_ds(v) for v in grid.pixel_spacing]
            ds.SliceThickness = _ds(grid.thickness)
            ds.SpacingBetweenSlices = _ds(grid.thickness)
            ds.SliceLocation = _ds(float(np.dot(pos, grid.normal)))
            ds.RescaleSlope = _ds(tags["RescaleSlope"])
            ds.RescaleIntercept = _ds(tags["RescaleIntercept"])
            ds.RescaleType = "US"
            pixels = np.ascontiguousarray(stored[:, :, n].T.astype(np.int16))
            _pixel_tags(ds, *pixels.shape)
            ds.PixelData = pixels.tobytes()
            files.append(_write(ds, out / f"IM{instance:05d}.dcm"))
    return series_uid, files


def _item(**values: Any) -> Dataset:
    item = Dataset()
    for key, value in values.items():
        setattr(item, key, value)
    return item


def _enhanced_series(
    kind: str,
    description: str,
    volumes: Sequence[_Volume],
    tags: Mapping[str, Any],
    grid: _Grid,
    out: Path,
    *,
    number: int,
    study_uid: str,
    frame_uid: str,
    series_offset: float,
) -> tuple[str, list[Path]]:
    """One Enhanced MR Image file holding every slice of every volume."""
    series_uid = _uid("series", description, number)
    sop = _uid("sop", series_uid, 1)
    ds = _base_dataset(ENHANCED_MR_IMAGE_STORAGE, sop, study_uid)
    ds.StudyDate = tags.get("_StudyDate", ds.StudyDate)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = frame_uid
    ds.SeriesNumber = number
    ds.SeriesDescription = description
    ds.ProtocolName = description
    ds.SeriesDate = ds.ContentDate = ds.StudyDate
    ds.SeriesTime = ds.ContentTime = _clock(series_offset)
    ds.AcquisitionDateTime = STUDY_DATE.strftime("%Y%m%d") + _clock(series_offset)
    ds.InstanceNumber = 1
    seq = _SEQUENCES[kind]
    scanning = seq["ScanningSequence"]
    scanning = [scanning] if isinstance(scanning, str) else list(scanning)
    ds.PulseSequenceName = seq["SequenceName"].lstrip("*")
    ds.MRAcquisitionType = seq["MRAcquisitionType"]
    ds.EchoPulseSequence = "SPIN" if "SE" in scanning else "GRADIENT"
    ds.MultipleSpinEcho = "YES" if kind == "MESE" else "NO"
    ds.SteadyStatePulseSequence = "NONE"
    ds.Spoiling = "RF_AND_GRADIENT" if "SP" in seq["SequenceVariant"] else "NONE"
    ds.EchoPlanarPulseSequence = "YES" if "EP" in scanning else "NO"
    ds.MagneticFieldStrength = _ds(tags["MagneticFieldStrength"])
    ds.ImagingFrequency = _ds(42.576 * tags["MagneticFieldStrength"])
    ds.ResonantNucleus = "1H"
    if kind == "dce":
        ds.ContrastBolusAgent = tags["ContrastBolusAgent"]
        ds.ContrastBolusIngredient = tags["ContrastBolusIngredient"]
        if "_BolusStart" in tags:
            ds.ContrastBolusStartTime = _clock(series_offset + tags["_BolusStart"])
    ds.AcquisitionContrast = {"MESE": "T2", "T2w": "T2"}.get(kind, "MIXED")
    ds.VolumetricProperties = "VOLUME"
    ds.ContentQualification = "PRODUCT"
    ds.BurnedInAnnotation = "NO"
    ds.DimensionOrganizationType = "3D"
    shared = _item(
        PixelMeasuresSequence=DicomSequence([_item(
            PixelSpacing=[_ds(v) for v in grid.pixel_spacing],
            SliceThickness=_ds(grid.thickness),
            SpacingBetweenSlices=_ds(grid.thickness),
        )]),
        PlaneOrientationSequence=DicomSequence([_item(
            ImageOrientationPatient=[_ds(v) for v in (*grid.row_cosine, *grid.col_cosine)]
        )]),
        MRTimingAndRelatedParametersSequence=DicomSequence([_item(
            RepetitionTime=_ds(tags["RepetitionTime"]),
            FlipAngle=_ds(tags["FlipAngle"]),
            EchoTrainLength=int(tags.get("EchoTrainLength", 1)),
        )]),
        PixelValueTransformationSequence=DicomSequence([_item(
            RescaleSlope=_ds(tags["RescaleSlope"]),
            RescaleIntercept=_ds(tags["RescaleIntercept"]),
            RescaleType="US",
        )]),
    )  # fmt: skip
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    frames, pixels = [], []
    for v, vol in enumerate(volumes):
        stored = grid.to_dicom_order(vol.stored)
        t_vol = series_offset + float(vol.params.get("FrameTime", 0.0))
        for n in range(stored.shape[2]):
            pos = grid.position(n)
            frame = _item(
                FrameContentSequence=DicomSequence([_item(
                    StackID="1",
                    InStackPositionNumber=n + 1,
                    DimensionIndexValues=[1, v + 1, n + 1],
                    FrameAcquisitionDateTime=STUDY_DATE.strftime("%Y%m%d") + _clock(t_vol),
                    FrameReferenceDateTime=STUDY_DATE.strftime("%Y%m%d") + _clock(t_vol),
                    FrameAcquisitionDuration=1000.0,
                    TemporalPositionIndex=int(vol.params.get("TemporalPositionIdentifier", 1)),
                )]),
                PlanePositionSequence=DicomSequence([_item(
                    ImagePositionPatient=[_ds(x) for x in pos]
                )]),
                MREchoSequence=DicomSequence([_item(
                    EffectiveEchoTime=float(vol.params.get("EchoTime", tags["EchoTime"]))
                )]),
                MRImageFrameTypeSequence=DicomSequence([_item(
                    FrameType=["ORIGINAL", "PRIMARY", "M", "NONE"],
                    PixelPresentation="MONOCHROME",
                    VolumetricProperties="VOLUME",
                    VolumeBasedCalculationTechnique="NONE",
                    ComplexImageComponent="MAGNITUDE",
                    AcquisitionContrast=ds.AcquisitionContrast,
                )]),
            )  # fmt: skip
            if "InversionTime" in tags:
                frame.MRModifierSequence = DicomSequence(
                    [_item(InversionRecovery="YES", InversionTimes=[float(tags["InversionTime"])])]
                )
            frames.append(frame)
            pixels.append(np.ascontiguousarray(stored[:, :, n].T.astype(np.int16)))
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(frames)
    ds.DimensionOrganizationSequence = DicomSequence(
        [_item(DimensionOrganizationUID=_uid("dim", series_uid))]
    )
    ds.DimensionIndexSequence = DicomSequence([
        _item(DimensionIndexPointer=0x00209056, FunctionalGroupPointer=0x00209111),
        _item(DimensionIndexPointer=0x00189082, FunctionalGroupPointer=0x00189114),
        _item(DimensionIndexPointer=0x00209057, FunctionalGroupPointer=0x00209111),
    ])  # fmt: skip
    ds.NumberOfFrames = len(frames)
    _pixel_tags(ds, *pixels[0].shape)
    ds.PixelData = np.stack(pixels).tobytes()
    return series_uid, [_write(ds, out / "ENH00001.dcm")]


def write_dicom_session(
    session_dir: str | Path,
    out_dir: str | Path,
    *,
    enhanced: Iterable[str] = (),
    kinds: Iterable[str] | None = None,
    dce_bolus_start: bool = True,
    dce_temporal_tag: str = "TemporalPositionIdentifier",
    grid_axes: tuple[int, int, int] = (1, 2, 0),
    grid_flips: tuple[bool, bool, bool] = (True, True, False),
    study_date: dt.date = STUDY_DATE,
) -> list[FactorySeries]:
    """Write the series of a BIDS session folder as DICOM, one sub-folder per series.

    Parameters
    ----------
    session_dir : str or Path
        ``<bids>/sub-<s>/ses-<t>`` of a phantom dataset (int16 NIfTI with sidecars).
    out_dir : str or Path
        Destination; series go to ``<out_dir>/<number>_<description>/``. A ``README.txt`` (not
        DICOM) is written beside them.
    enhanced : iterable of str
        Series kinds written as one Enhanced MR multi-frame file (e.g. ``{"MESE"}``).
    kinds : iterable of str, optional
        Only these series kinds (default all the session has).
    dce_bolus_start : bool, default True
        Write ``ContrastBolusStartTime`` (between the last baseline frame and the next) so that
        the baseline frames can be derived from the headers.
    dce_temporal_tag : {"TemporalPositionIdentifier", "AcquisitionNumber"}
        Where a classic DCE series numbers its frames (``AcquisitionNumber``: as Siemens does,
        without ``TemporalPositionIdentifier``).
    grid_axes, grid_flips
        NIfTI axes along the DICOM columns, rows and slices, and which are reversed
        (:func:`dicom_grid`; default a sagittal stack).
    study_date : datetime.date, default :data:`STUDY_DATE`
        StudyDate (and series dates) of every series.

    Returns
    -------
    list of FactorySeries
        The series written, in series-number order.
    """
    session_dir, out_dir = Path(session_dir), Path(out_dir)
    enhanced = set(enhanced)
    wanted = None if kinds is None else set(kinds)
    study_uid = _uid("study", session_dir)
    frame_uid = _uid("frame", session_dir)
    written: list[FactorySeries] = []
    offset = 0.0
    for number, (kind, desc, sources, volumes, tags) in enumerate(
        _series_plan(session_dir), start=1
    ):
        if wanted is not None and kind not in wanted:
            continue
        tags = dict(tags)
        if not dce_bolus_start:
            tags.pop("_BolusStart", None)
        tags["_TemporalTag"] = dce_temporal_tag
        tags["_StudyDate"] = study_date.strftime("%Y%m%d")
        shape = volumes[0].stored.shape
        affine = nib.load(str(sources[0])).affine
        grid = dicom_grid(affine, shape, axes=grid_axes, flips=grid_flips)
        writer = _enhanced_series if kind in enhanced else _classic_series
        uid, files = writer(
            kind, desc, volumes, tags, grid, out_dir / f"{number:02d}_{desc}",
            number=number, study_uid=study_uid, frame_uid=frame_uid, series_offset=offset,
        )  # fmt: skip
        written.append(
            FactorySeries(kind, desc, tuple(files), tuple(sources), uid, kind in enhanced)
        )
        offset += 120.0 + float(volumes[-1].params.get("FrameTime", 0.0))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "README.txt").write_text("exported by the qmri DICOM test factory\n")
    return written
