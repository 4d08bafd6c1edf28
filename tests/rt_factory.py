"""Synthetic RT objects of the spine phantom for the RTSTRUCT / RTDOSE import tests.

Made here, never downloaded:

* a "planning CT" of phantom subject sub-01 (CT numbers from the phantom's tissue map: bone
  bright, fat negative, air -1000 HU; 10 HU noise) on its own finer grid, in its own frame:
  the baseline MR anatomy moved by a known rigid transform (3 deg about the treated vertebral
  body plus 5.4 mm) and a large frame offset (the CT scanner's coordinates have nothing to do
  with the MR's), written as one CT DICOM file per slice;
* an RTSTRUCT on that CT with closed planar contours of GTV, CTV (tumour + treated vertebral
  body + the left posterior sector the tumour enters: the contract's CTV), PTV (the CTV's
  contours: exercises the plan mask), SpinalCord (the whole cord of the CT's field), ThecalSac,
  Aorta, Vertebra_<level> (whole vertebral bodies, tumour included, as a planner draws them),
  an ignored BODY and a SpinalCanal (a name the default map leaves unknown). Contours come from
  the phantom's continuous geometry (:func:`qmri.phantom.anatomy_on_grid`, the same definition
  as the truth labels) sampled on a 0.5 mm in-plane grid in each CT slice and traced at the 0.5
  iso-line (contourpy), i.e. sub-voxel outlines as a planning system stores them;
* an RTDOSE on the CT frame (2 mm grid, Gy, DoseGridScaling, relative GridFrameOffsetVector)
  from the phantom's planned dose (:func:`qmri.phantom.write_phantom_dose`, trilinear), and an
  RTPLAN with the fractions and prescription of participants.tsv;
* the baseline T2w as an MR DICOM series and an RTSTRUCT drawn on it (no registration path).

The patient attributes are fake PHI (:data:`FAKE_PHI`) so tests can grep the outputs for them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import contourpy
import nibabel as nib
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from qmri.phantom import GEOMETRY, anatomy_on_grid, label_names, rotation_matrix, subject_layout
from qmri.phantom.tissues import TISSUE_INDEX
from qmri.registration import resample_linear

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data_sample"
REFERENCE = SAMPLE / "sub-01" / "ses-pre" / "anat" / "sub-01_ses-pre_T2w.nii.gz"
TRUTH = SAMPLE / "derivatives" / "truth" / "sub-01" / "ses-pre" / "anat"
TRUTH_DSEG = TRUTH / "sub-01_ses-pre_desc-truth_dseg.nii.gz"

CT_IMAGE_SOP = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_SOP = "1.2.840.10008.5.1.4.1.1.4"
RTSTRUCT_SOP = "1.2.840.10008.5.1.4.1.1.481.3"
RTDOSE_SOP = "1.2.840.10008.5.1.4.1.1.481.2"
RTPLAN_SOP = "1.2.840.10008.5.1.4.1.1.481.5"

#: Patient attributes written into every file (and that no output may contain).
FAKE_PHI = {
    "PatientName": "DOE^JANE^Q",
    "PatientID": "QMRI-PHI-55501",
    "PatientBirthDate": "19470312",
    "InstitutionName": "Saint Nowhere Cancer Centre",
    "StudyDate": "20240117",
}

#: CT numbers (HU) of the phantom's tissues (0 = air).
HU = {
    0: -1000.0,
    TISSUE_INDEX["marrow"]: 300.0,
    TISSUE_INDEX["marrow_treated"]: 300.0,
    TISSUE_INDEX["tumor"]: 70.0,
    TISSUE_INDEX["disc"]: 90.0,
    TISSUE_INDEX["cord"]: 30.0,
    TISSUE_INDEX["csf"]: 10.0,
    TISSUE_INDEX["muscle"]: 45.0,
    TISSUE_INDEX["fat"]: -100.0,
    TISSUE_INDEX["blood"]: 40.0,
}

_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def rigid(angles_deg: Sequence[float], shift_mm: Sequence[float], centre: Sequence[float]):
    """4x4 RAS matrix: rotation ``Rz Ry Rx`` about ``centre``, then a shift (mm)."""
    r = rotation_matrix(angles_deg)
    m = np.eye(4)
    m[:3, :3] = r
    m[:3, 3] = np.asarray(centre) + np.asarray(shift_mm) - r @ np.asarray(centre)
    return m


# --------------------------------------------------------------------------------------------
# DICOM writers
# --------------------------------------------------------------------------------------------


def _base(sop_class: str, modality: str, study_uid: str, series_uid: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.SpecificCharacterSet = "ISO_IR 100"
    for key, value in FAKE_PHI.items():
        setattr(ds, key, value)
    ds.PatientSex = "F"
    ds.StudyTime = "101500"
    ds.Manufacturer = "qmri tests"
    ds.SeriesNumber = 1
    return ds


def _ds(values: Sequence[float]) -> list[str]:
    """DS strings (at most 16 characters)."""
    return [f"{float(v):.4f}"[:16] for v in values]


@dataclass
class SeriesInfo:
    """What an image series writer made."""

    folder: Path
    study_uid: str
    series_uid: str
    frame_uid: str
    sop_class: str
    sop_uids: list[str]
    slice_z: np.ndarray  # LPS position of each slice along its normal (mm)
    affine: np.ndarray  # RAS
    shape: tuple[int, int, int]


def write_image_series(
    data: np.ndarray,
    affine_ras: np.ndarray,
    folder: Path,
    *,
    modality: str,
    frame_uid: str | None = None,
    study_uid: str | None = None,
    rescale: tuple[float, float] = (1.0, 0.0),
) -> SeriesInfo:
    """Write a volume (nibabel (i, j, k) order, RAS affine) as one DICOM file per slice.

    Stored values are ``round((data - intercept) / slope)`` as uint16 with RescaleSlope and
    RescaleIntercept (``rescale = (slope, intercept)``).
    """
    folder.mkdir(parents=True, exist_ok=True)
    lps = _LPS @ np.asarray(affine_ras, dtype=float)
    col0, col1, col2 = lps[:3, 0], lps[:3, 1], lps[:3, 2]
    dx, dy, dz = (float(np.linalg.norm(c)) for c in (col0, col1, col2))
    row_dir, col_dir = col0 / dx, col1 / dy
    normal = np.cross(row_dir, col_dir)
    study_uid = study_uid or generate_uid()
    series_uid, frame_uid = generate_uid(), frame_uid or generate_uid()
    sop_class = CT_IMAGE_SOP if modality == "CT" else MR_IMAGE_SOP
    slope, intercept = rescale
    stored = np.clip(np.rint((np.asarray(data) - intercept) / slope), 0, 65535).astype(np.uint16)
    sop_uids, zs = [], []
    for k in range(data.shape[2]):
        ds = _base(sop_class, modality, study_uid, series_uid)
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        position = lps[:3, 3] + k * col2
        ds.ImagePositionPatient = _ds(position)
        ds.ImageOrientationPatient = _ds([*row_dir, *col_dir])
        ds.PixelSpacing = _ds([dy, dx])
        ds.SliceThickness = f"{dz:.4f}"
        ds.InstanceNumber = k + 1
        ds.Rows, ds.Columns = int(data.shape[1]), int(data.shape[0])
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 0
        ds.RescaleSlope, ds.RescaleIntercept = f"{slope:g}", f"{intercept:g}"
        if modality == "CT":
            ds.RescaleType = "HU"
            ds.KVP = "120"
        else:
            ds.MagneticFieldStrength = "1.5"
            ds.RepetitionTime = "3000"
            ds.EchoTime = "90"
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()
        ds.save_as(folder / f"{modality.lower()}_{k + 1:04d}.dcm", enforce_file_format=True)
        sop_uids.append(ds.SOPInstanceUID)
        zs.append(float(position @ normal))
    return SeriesInfo(
        folder, study_uid, series_uid, frame_uid, sop_class, sop_uids, np.array(zs),
        np.asarray(affine_ras, dtype=float), tuple(int(n) for n in data.shape),
    )  # fmt: skip


def write_rtstruct(
    path: Path,
    series: SeriesInfo,
    structures: Mapping[str, Mapping[int, Sequence[np.ndarray]]],
    *,
    interpreted: Mapping[str, str] | None = None,
) -> Path:
    """Write an RTSTRUCT: ``structures[name][slice] = [contour (n, 3) LPS mm, ...]``."""
    ds = _base(RTSTRUCT_SOP, "RTSTRUCT", series.study_uid, generate_uid())
    ds.StructureSetLabel = "qmri test"
    ds.StructureSetDate = FAKE_PHI["StudyDate"]
    images = DicomSequence()
    for uid in series.sop_uids:
        item = Dataset()
        item.ReferencedSOPClassUID = series.sop_class
        item.ReferencedSOPInstanceUID = uid
        images.append(item)
    ref_series = Dataset()
    ref_series.SeriesInstanceUID = series.series_uid
    ref_series.ContourImageSequence = images
    ref_study = Dataset()
    ref_study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    ref_study.ReferencedSOPInstanceUID = series.study_uid
    ref_study.RTReferencedSeriesSequence = DicomSequence([ref_series])
    frame = Dataset()
    frame.FrameOfReferenceUID = series.frame_uid
    frame.RTReferencedStudySequence = DicomSequence([ref_study])
    ds.ReferencedFrameOfReferenceSequence = DicomSequence([frame])
    rois, contours, observations = DicomSequence(), DicomSequence(), DicomSequence()
    for number, (name, by_slice) in enumerate(structures.items(), start=1):
        roi = Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = series.frame_uid
        roi.ROIName = name
        roi.ROIGenerationAlgorithm = "MANUAL"
        rois.append(roi)
        rc = Dataset()
        rc.ReferencedROINumber = number
        rc.ROIDisplayColor = [255, 0, 0]
        seq = DicomSequence()
        for k, polys in sorted(by_slice.items()):
            for poly in polys:
                c = Dataset()
                im = Dataset()
                im.ReferencedSOPClassUID = series.sop_class
                im.ReferencedSOPInstanceUID = series.sop_uids[k]
                c.ContourImageSequence = DicomSequence([im])
                c.ContourGeometricType = "CLOSED_PLANAR"
                c.NumberOfContourPoints = len(poly)
                c.ContourData = [f"{v:.3f}" for v in np.asarray(poly).ravel()]
                seq.append(c)
        rc.ContourSequence = seq
        contours.append(rc)
        obs = Dataset()
        obs.ObservationNumber = number
        obs.ReferencedROINumber = number
        obs.RTROIInterpretedType = (interpreted or {}).get(name, "ORGAN")
        obs.ROIInterpreter = ""
        observations.append(obs)
    ds.StructureSetROISequence = rois
    ds.ROIContourSequence = contours
    ds.RTROIObservationsSequence = observations
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_rtdose(
    path: Path,
    dose_gy: np.ndarray,
    affine_ras: np.ndarray,
    *,
    frame_uid: str,
    study_uid: str,
    plan_uid: str | None = None,
    scaling: float = 1e-5,
    summation: str = "PLAN",
    units: str = "GY",
) -> Path:
    """Write a multi-frame RTDOSE (uint32, DoseGridScaling, relative GridFrameOffsetVector)."""
    lps = _LPS @ np.asarray(affine_ras, dtype=float)
    dx, dy = (float(np.linalg.norm(lps[:3, i])) for i in range(2))
    row_dir, col_dir = lps[:3, 0] / dx, lps[:3, 1] / dy
    ds = _base(RTDOSE_SOP, "RTDOSE", study_uid, generate_uid())
    ds.FrameOfReferenceUID = frame_uid
    ds.ImagePositionPatient = _ds(lps[:3, 3])
    ds.ImageOrientationPatient = _ds([*row_dir, *col_dir])
    ds.PixelSpacing = _ds([dy, dx])
    nx, ny, nz = dose_gy.shape
    ds.Rows, ds.Columns, ds.NumberOfFrames = ny, nx, nz
    ds.FrameIncrementPointer = pydicom.tag.Tag("GridFrameOffsetVector")
    step = float(lps[:3, 2] @ np.cross(row_dir, col_dir))
    ds.GridFrameOffsetVector = _ds(np.arange(nz) * step)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 32, 32, 31
    ds.PixelRepresentation = 0
    ds.DoseUnits, ds.DoseType, ds.DoseSummationType = units, "PHYSICAL", summation
    ds.DoseGridScaling = f"{scaling:g}"
    if plan_uid is not None:
        ref = Dataset()
        ref.ReferencedSOPClassUID = RTPLAN_SOP
        ref.ReferencedSOPInstanceUID = plan_uid
        ds.ReferencedRTPlanSequence = DicomSequence([ref])
    stored = np.clip(np.rint(np.nan_to_num(dose_gy) / scaling), 0, 2**32 - 1).astype(np.uint32)
    ds.PixelData = np.ascontiguousarray(stored.transpose(2, 1, 0)).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_rtplan(
    path: Path, *, fractions: int, prescription_gy: float | None, study_uid: str, frame_uid: str
) -> tuple[Path, str]:
    """Write a minimal RTPLAN: a fraction group and (optionally) a target prescription."""
    ds = _base(RTPLAN_SOP, "RTPLAN", study_uid, generate_uid())
    ds.FrameOfReferenceUID = frame_uid
    ds.RTPlanLabel = "SBRT"
    ds.RTPlanDate = FAKE_PHI["StudyDate"]
    ds.RTPlanGeometry = "PATIENT"
    fg = Dataset()
    fg.FractionGroupNumber = 1
    fg.NumberOfFractionsPlanned = fractions
    fg.NumberOfBeams = 0
    fg.NumberOfBrachyApplicationSetups = 0
    ds.FractionGroupSequence = DicomSequence([fg])
    if prescription_gy is not None:
        ref = Dataset()
        ref.DoseReferenceNumber = 1
        ref.DoseReferenceStructureType = "VOLUME"
        ref.DoseReferenceType = "TARGET"
        ref.TargetPrescriptionDose = f"{prescription_gy:g}"
        ds.DoseReferenceSequence = DicomSequence([ref])
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path, ds.SOPInstanceUID


# --------------------------------------------------------------------------------------------
# contours from the phantom's geometry
# --------------------------------------------------------------------------------------------


def _structure_masks(
    labels: np.ndarray, tissue: np.ndarray, u: np.ndarray
) -> dict[str, np.ndarray]:
    """The RTSTRUCT's structures on a sample grid, from the phantom's labels and tissues.

    ``u`` holds the anatomy-frame coordinates (3, ...) of the samples (for the whole
    vertebral body, which the tumour label overrides).
    """
    levels, treated, _ = subject_layout(0)
    index = {name: i for i, name in label_names(levels).items()}
    tumor = labels == index["tumor"]
    body = ((u[0] / GEOMETRY.body_semi_x) ** 2 + (u[1] / GEOMETRY.body_semi_y) ** 2) <= 1.0
    cord = tissue == TISSUE_INDEX["cord"]
    out = {
        "GTV": tumor,
        "CTV": tumor | (labels == index[f"vb_{treated}"]) | (labels == index[f"pel_{treated}"]),
        "SpinalCord": cord,
        "ThecalSac": (labels == index["csf"]) | cord,
        "Aorta": labels == index["aorta"],
    }
    for level in levels:
        vb = labels == index[f"vb_{level}"]
        if level == treated:
            vb = vb | (tumor & body)
        out[f"Vertebra_{level}"] = vb
    out["SpinalCanal"] = out["ThecalSac"]
    return out


def _trace(mask2d: np.ndarray, to_world: Callable[[np.ndarray], np.ndarray]) -> list[np.ndarray]:
    """Closed outlines (0.5 iso-line) of a 2D sample mask, as (n, 3) LPS world points."""
    if not mask2d.any():
        return []
    padded = np.pad(mask2d.astype(np.float64), 1)
    gen = contourpy.contour_generator(z=padded.T, line_type="SeparateCode")
    lines, _ = gen.lines(0.5)
    out = []
    for line in lines:
        if len(line) < 4:
            continue
        ij = line[:-1] - 1.0 if np.allclose(line[0], line[-1]) else line - 1.0
        out.append(to_world(ij))
    return out


def _plane_to_lps(plane: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Map (i, j) sample indices of one slice plane (RAS affine ``plane``) to LPS points."""

    def to_world(pts: np.ndarray) -> np.ndarray:
        full = np.column_stack([pts, np.zeros(len(pts)), np.ones(len(pts))])
        return (plane @ full.T).T[:, :3] * np.array([-1.0, -1.0, 1.0])

    return to_world


def contours_on_grid(
    shape: tuple[int, int, int],
    affine_ras: np.ndarray,
    baseline_to_frame: np.ndarray | None,
    *,
    sample_mm: float = 0.5,
    box_u: tuple[tuple[float, float], tuple[float, float]] = ((-32.0, 32.0), (-46.0, 42.0)),
) -> dict[str, dict[int, list[np.ndarray]]]:
    """Per-slice contours of the RTSTRUCT's structures in a grid's slices.

    In each slice plane the phantom is sampled on a ``sample_mm`` grid over the in-plane
    box (anatomy frame ``box_u``, x and y ranges, mm, moved into the grid's frame) and traced.
    Returns ``contours[name][k]`` (LPS mm).
    """
    affine_ras = np.asarray(affine_ras, dtype=float)
    m = np.eye(4) if baseline_to_frame is None else np.asarray(baseline_to_frame, dtype=float)
    _, _, centre = subject_layout(0)
    # in-plane box in the grid's voxel indices (i, j)
    corners = np.array([[x, y, z, 1.0] for x in box_u[0] for y in box_u[1] for z in (-80.0, 80.0)])
    corners[:, :3] += centre
    ij = (np.linalg.inv(affine_ras) @ (m @ corners.T)).T[:, :2]
    zooms = np.linalg.norm(affine_ras[:3, :3], axis=0)
    step = sample_mm / zooms[:2]
    lo, hi = ij.min(axis=0) - 2, ij.max(axis=0) + 2
    si = np.arange(lo[0], hi[0], step[0])
    sj = np.arange(lo[1], hi[1], step[1])
    fine = np.eye(4)
    fine[:3, 0] = affine_ras[:3, 0] * step[0]
    fine[:3, 1] = affine_ras[:3, 1] * step[1]
    fine[:3, 2] = affine_ras[:3, 2]
    inv_m = np.linalg.inv(m)
    out: dict[str, dict[int, list[np.ndarray]]] = {}
    for k in range(shape[2]):
        origin = affine_ras @ np.array([si[0], sj[0], k, 1.0])
        fine[:3, 3] = origin[:3]
        tissue, labels = anatomy_on_grid(
            fine, (si.size, sj.size, 1), subject=0, baseline_to_session=baseline_to_frame
        )
        idx = np.indices((si.size, sj.size, 1), dtype=float).reshape(3, -1)
        world = fine[:3, :3] @ idx + fine[:3, 3:4]
        base = inv_m[:3, :3] @ world + inv_m[:3, 3:4]
        u = (base - centre[:, None]).reshape(3, si.size, sj.size, 1)
        masks = _structure_masks(labels, tissue, u)

        to_world = _plane_to_lps(fine.copy())

        for name, mask in masks.items():
            polys = _trace(mask[:, :, 0], to_world)
            if polys:
                out.setdefault(name, {})[k] = polys
    return out


# --------------------------------------------------------------------------------------------
# the scenario
# --------------------------------------------------------------------------------------------

#: The known planning-CT displacement: rotation (deg, about world x, y, z) about the treated
#: vertebral body's centre, then a shift (mm): 2.9 deg and 5.4 mm in all.
CT_ANGLES_DEG = (2.0, -1.5, 1.5)
CT_SHIFT_MM = (3.0, -4.0, 2.0)
#: The CT scanner's frame offset (mm): the two frames share no origin.
CT_FRAME_OFFSET_MM = (12.0, 160.0, -420.0)


def fine_phantom_dose(
    prescription_gy: float, *, voxel_mm: float = 1.0, falloff_mm: float = 8.0
) -> tuple[np.ndarray, np.ndarray]:
    """The phantom's planned dose (:mod:`qmri.phantom.dose`: prescription in the CTV,
    ``exp(-d / falloff)`` outside) on a fine grid around the target, MR baseline frame.

    Returns the grid's affine (RAS) and the dose (Gy).
    """
    from scipy import ndimage

    levels, treated, centre = subject_layout(0)
    half = np.array([70.0, 70.0, 90.0])
    shape = tuple(int(n) for n in np.rint(2 * half / voxel_mm))
    affine = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    affine[:3, 3] = centre - half + voxel_mm / 2
    _, labels = anatomy_on_grid(affine, shape, subject=0)
    index = {name: i for i, name in label_names(levels).items()}
    ctv = np.isin(labels, [index["tumor"], index[f"vb_{treated}"], index[f"pel_{treated}"]])
    distance = ndimage.distance_transform_edt(~ctv, sampling=voxel_mm)
    return affine, prescription_gy * np.exp(-distance / falloff_mm)


@dataclass
class PlanningScenario:
    """Files and truths of the planning-CT scenario."""

    root: Path
    ct_dir: Path
    rtstruct: Path
    rtdose: Path
    rtplan: Path
    ct: SeriesInfo
    mr_to_ct_ras: np.ndarray  # MR (baseline) world point -> CT world point
    dose_mr: np.ndarray  # the phantom dose on the MR reference grid (Gy)
    prescription_gy: float
    fractions: int
    seconds: dict[str, float] = field(default_factory=dict)


def make_planning_scenario(
    root: Path,
    *,
    ct_voxel_mm: tuple[float, float, float] = (1.0, 1.0, 1.0),
    ct_fov_mm: tuple[float, float, float] = (150.0, 150.0, 180.0),
    dose_voxel_mm: float = 2.0,
    seed: int = 5,
) -> PlanningScenario:
    """Write the planning CT, RTSTRUCT, RTDOSE and RTPLAN of phantom sub-01 under ``root``."""
    import time

    from qmri.phantom import write_phantom_dose

    t0 = time.perf_counter()
    seconds = {}
    _, _, centre = subject_layout(0)
    small = rigid(CT_ANGLES_DEG, CT_SHIFT_MM, centre)
    offset = np.eye(4)
    offset[:3, 3] = CT_FRAME_OFFSET_MM
    mr_to_ct = offset @ small
    ref = nib.load(REFERENCE)
    mr_centre = ref.affine @ np.append((np.array(ref.shape) - 1) / 2.0, 1.0)
    # CT grid, axial HFS (rows along LPS +x, columns along LPS +y): RAS axes -x, -y, +z
    vox = np.asarray(ct_voxel_mm, dtype=float)
    shape = tuple(round(f / v) for f, v in zip(ct_fov_mm, vox, strict=True))
    ct_centre = mr_centre[:3] + np.asarray(CT_FRAME_OFFSET_MM)
    affine = np.diag([-vox[0], -vox[1], vox[2], 1.0])
    affine[:3, 3] = ct_centre - affine[:3, :3] @ ((np.array(shape) - 1) / 2.0)
    tissue, _ = anatomy_on_grid(affine, shape, subject=0, baseline_to_session=mr_to_ct)
    hu = np.full(shape, -1000.0)
    for t, value in HU.items():
        hu[tissue == t] = value
    hu += np.random.default_rng(seed).normal(0.0, 10.0, size=shape)
    ct = write_image_series(hu, affine, root / "ct", modality="CT", rescale=(1.0, -2048.0))
    seconds["ct"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    contours = contours_on_grid(shape, affine, mr_to_ct)
    contours["PTV"] = contours["CTV"]
    some = min(contours["GTV"])
    c0 = contours["GTV"][some][0]
    square = np.array([[-60, -60, 0], [60, -60, 0], [60, 60, 0], [-60, 60, 0]], dtype=float)
    square[:, :2] += c0[:, :2].mean(axis=0)
    square[:, 2] = c0[0, 2]
    contours["BODY"] = {some: [square]}
    rtstruct = write_rtstruct(
        root / "rtstruct.dcm", ct, contours,
        interpreted={"GTV": "GTV", "CTV": "CTV", "PTV": "PTV", "BODY": "EXTERNAL"},
    )  # fmt: skip
    seconds["rtstruct"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    dose_dir = write_phantom_dose(SAMPLE, root / "dose_truth")
    dose_img = nib.load(dose_dir / "sub-01" / "sub-01_dose.nii.gz")
    dose_mr = np.asarray(dose_img.dataobj, dtype=np.float64)
    # dose grid on the CT frame: a box around the target (as a TPS computes it), sampling the
    # phantom's dose definition on a fine grid (not the MR-grid dose: its CTV edge is a kink
    # that a second interpolation would blur)
    d_shape = tuple(round(n / dose_voxel_mm) for n in (120.0, 120.0, 160.0))
    d_vox = float(dose_voxel_mm)
    d_affine = np.diag([-d_vox, -d_vox, d_vox, 1.0])
    target = (mr_to_ct @ np.append(centre, 1.0))[:3]
    d_affine[:3, 3] = target - d_affine[:3, :3] @ ((np.array(d_shape) - 1) / 2.0)
    fine_aff, fine_dose = fine_phantom_dose(35.0)
    dose_ct = resample_linear(fine_dose, fine_aff, d_shape, d_affine, np.linalg.inv(mr_to_ct))
    dose_ct = np.nan_to_num(dose_ct, nan=0.0)
    plan, plan_uid = write_rtplan(
        root / "rtplan.dcm", fractions=5, prescription_gy=35.0, study_uid=ct.study_uid,
        frame_uid=ct.frame_uid,
    )  # fmt: skip
    rtdose = write_rtdose(
        root / "rtdose.dcm", dose_ct, d_affine, frame_uid=ct.frame_uid, study_uid=ct.study_uid,
        plan_uid=plan_uid,
    )  # fmt: skip
    seconds["dose"] = time.perf_counter() - t2
    return PlanningScenario(
        root=root, ct_dir=root / "ct", rtstruct=rtstruct, rtdose=rtdose, rtplan=plan, ct=ct,
        mr_to_ct_ras=mr_to_ct, dose_mr=dose_mr, prescription_gy=35.0, fractions=5,
        seconds=seconds,
    )  # fmt: skip


@dataclass
class MRScenario:
    """The baseline T2w as DICOM with an RTSTRUCT drawn on it."""

    mr_dir: Path
    rtstruct: Path
    series: SeriesInfo


def make_mr_scenario(root: Path) -> MRScenario:
    """Write the baseline T2w as an MR DICOM series and an RTSTRUCT on it (no registration)."""
    ref = nib.load(REFERENCE)
    data = np.asarray(ref.dataobj, dtype=np.float64)
    series = write_image_series(data, ref.affine, root / "mr", modality="MR")
    contours = contours_on_grid(tuple(ref.shape), ref.affine, None)
    rtstruct = write_rtstruct(root / "rtstruct_mr.dcm", series, contours)
    return MRScenario(root / "mr", rtstruct, series)
