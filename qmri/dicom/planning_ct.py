"""The planning image of an RT plan: read its DICOM series, register it rigidly to the MR reference.

An RTSTRUCT's contours and an RTDOSE's grid sit in the frame of reference of the image the plan
was made on, usually a planning CT. This module reads that image series (one file per slice,
pydicom) into an array with a RAS affine, and registers it to the baseline MR reference:

* rigid (Euler 3D), Mattes mutual information (:func:`qmri.registration.register_rigid`: fixed
  seed, single-threaded, so the same inputs give the same transform to the last bit);
* the planning image is the *fixed* image, so that the metric can be restricted to a mask drawn
  in its frame: the treated levels (GTV, CTV and the treated vertebral bodies, grown by a margin,
  see :func:`qmri.dicom.rtstruct.import_rtstruct`). Far from the target the spine of a patient
  lying on a flat couch (CT) and in a curved coil (MR) bends differently; a rigid transform can
  only be right locally, and the treated levels are where it must be right;
* initialised by the centres of the two grids (``geometry``), by the identity (``identity``,
  both images in one frame of reference) or by a given initial matrix (``initial``, e.g. from a
  manual alignment). Vertebrae repeat every ~25-30 mm along the spine, so the start must lie
  within about a third of a level of the truth or the registration locks onto the neighbouring
  vertebra: on the phantom (28 mm pitch) starts 8 mm off along the spine and 15 mm off
  antero-posteriorly converge (0.3 deg, 0.1 mm), 12 mm off along the spine or 15 mm off
  left-right end one level away. Check the checkerboard figure;
* CT numbers are clipped to [-300, 1300] HU before the metric (air, fat, soft tissue and bone
  stay apart in the histogram; metal and contrast do not stretch it).

The transform is saved like every other qmri transform (ITK text file, ``from-<planning>_to-<MR>``
convention: it maps points of the MR reference to points of the planning image, so it resamples
the planning image, its labels and its dose onto the MR grid) with a JSON sidecar from
:func:`qmri.registration.transform_sidecar`, and a checkerboard PNG
(:func:`qmri.qc.registration_checkerboard`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import warnings
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from qmri.errors import QMRIInputError
from qmri.io import load_nifti, read_data, write_json
from qmri.registration import (
    RegistrationError,
    RegistrationResult,
    nifti_to_sitk,
    register_rigid,
    transform_sidecar,
    transform_to_matrix,
    write_transform,
)

__all__ = [
    "DEFAULT_PLANNING_REGISTRATION",
    "HU_WINDOW",
    "ImageSeries",
    "PlanningRegistration",
    "dicom_to_ras_affine",
    "frame_hash",
    "quiet_pydicom",
    "read_image_series",
    "register_planning_image",
    "scan_dicom_folder",
    "write_planning_registration",
]

log = logging.getLogger("qmri")

#: RAS <-> LPS flip.
_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])

#: CT numbers (HU) are clipped to this window before the mutual information.
HU_WINDOW: tuple[float, float] = (-300.0, 1300.0)

#: :func:`qmri.registration.register_rigid` options of the planning-image registration: a
#: three-level pyramid down to the CT's own resolution and 10% of the masked CT voxels (on the
#: phantom: 70 iterations, about 2 s, 0.3 deg and 0.4 mm from the truth).
DEFAULT_PLANNING_REGISTRATION: dict[str, Any] = {
    "bins": 32,
    "iterations": 300,
    "shrink_factors": (4, 2, 1),
    "smoothing_sigmas_mm": (4.0, 2.0, 1.0),
    "sampling_fraction": 0.1,
    "learning_rate": 1.0,
}

#: Header tags read when scanning a folder (pixel data is read only for the series used).
_SCAN_TAGS = [
    "SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "Modality",
    "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns",
    "NumberOfFrames",
]  # fmt: skip


@contextlib.contextmanager
def quiet_pydicom() -> Iterator[None]:
    """Silence pydicom's value-validation warnings (an invalid UID or DS string in a file that
    is otherwise readable) while reading: they are the file's business, not the import's."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module=r"pydicom(\.|$)")
        yield


def frame_hash(uid: str | None) -> str | None:
    """First 16 hex digits of the SHA-256 of a frame-of-reference UID (None passes through).

    Sidecars record this digest instead of the UID: it lets two files be checked for the same
    frame without copying a DICOM identifier into the outputs.
    """
    if not uid:
        return None
    return hashlib.sha256(str(uid).encode("ascii", "replace")).hexdigest()[:16]


@dataclass
class ImageSeries:
    """A DICOM image series as a volume.

    Attributes
    ----------
    data : ndarray of float64, shape (columns, rows, slices)
        Voxel values with the rescale slope and intercept applied (HU for CT), in nibabel's
        (i, j, k) order: i along a row (DICOM column index), j down the columns, k the slices
        in increasing position along the slice normal.
    affine : (4, 4) ndarray
        Voxel-to-world affine, RAS+ mm.
    modality : str
        DICOM Modality (``CT``, ``MR``, ...).
    series_uid, frame_uid : str
        SeriesInstanceUID and FrameOfReferenceUID.
    sop_uids : list of str
        SOPInstanceUID of each slice, in slice order.
    slice_positions : ndarray
        Position of each slice along the slice normal (mm, LPS).
    """

    data: np.ndarray
    affine: np.ndarray
    modality: str
    series_uid: str
    frame_uid: str
    sop_uids: list[str] = field(default_factory=list)
    slice_positions: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def shape(self) -> tuple[int, int, int]:
        """Grid shape (columns, rows, slices)."""
        return (int(self.data.shape[0]), int(self.data.shape[1]), int(self.data.shape[2]))

    def nifti(self) -> nib.Nifti1Image:
        """The series as an in-memory NIfTI image (float32)."""
        return nib.Nifti1Image(self.data.astype(np.float32), self.affine)


def dicom_to_ras_affine(
    position: Sequence[float],
    orientation: Sequence[float],
    pixel_spacing: Sequence[float],
    slice_step: Sequence[float],
) -> np.ndarray:
    """RAS voxel-to-world affine of a DICOM volume in nibabel's (column, row, slice) order.

    Parameters
    ----------
    position : 3 floats
        ImagePositionPatient of the first slice (mm, LPS): centre of its first pixel.
    orientation : 6 floats
        ImageOrientationPatient: direction of a row (increasing column index), then of a column.
    pixel_spacing : 2 floats
        PixelSpacing: distance between rows, then between columns (mm).
    slice_step : 3 floats
        Vector from one slice's first pixel to the next slice's (mm, LPS).
    """
    row_dir = np.asarray(orientation[:3], dtype=float)
    col_dir = np.asarray(orientation[3:6], dtype=float)
    lps = np.eye(4)
    lps[:3, 0] = row_dir * float(pixel_spacing[1])
    lps[:3, 1] = col_dir * float(pixel_spacing[0])
    lps[:3, 2] = np.asarray(slice_step, dtype=float)
    lps[:3, 3] = np.asarray(position, dtype=float)
    return _LPS @ lps


def _read_header(path: Path) -> Any | None:
    """A DICOM file's header (no pixel data), or None if it is not DICOM."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        with quiet_pydicom():
            ds = pydicom.dcmread(
                path, stop_before_pixels=True, force=True, specific_tags=_SCAN_TAGS
            )
            if "SOPClassUID" not in ds and "Modality" not in ds:
                return None
            # read the scanned values now, under the filter
            for tag in _SCAN_TAGS:
                ds.get(tag)
    except (InvalidDicomError, OSError, ValueError, TypeError, AttributeError, KeyError):
        return None
    return ds


def scan_dicom_folder(folder: str | Path) -> dict[str, list[tuple[Path, Any]]]:
    """Group the image files of a folder tree by SeriesInstanceUID (headers only).

    Files that are not DICOM, and DICOM objects without an image plane (RTSTRUCT, RTPLAN,
    RTDOSE, ...), are skipped.

    Returns
    -------
    dict of str to list of (Path, pydicom.Dataset)
        SeriesInstanceUID -> its slice files and headers.

    Raises
    ------
    QMRIInputError
        If the folder does not exist.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise QMRIInputError("DICOM folder not found", folder)
    series: dict[str, list[tuple[Path, Any]]] = defaultdict(list)
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        ds = _read_header(path)
        if ds is None or "ImagePositionPatient" not in ds or "SeriesInstanceUID" not in ds:
            continue
        if str(getattr(ds, "Modality", "")).upper() in ("RTDOSE", "RTSTRUCT", "RTPLAN", "REG"):
            continue
        series[str(ds.SeriesInstanceUID)].append((path, ds))
    return dict(series)


def read_image_series(files: Sequence[Path], source: str | Path | None = None) -> ImageSeries:
    """Read a single-frame DICOM image series (one file per slice) into a volume.

    Slices are sorted by their position along the slice normal; they must share orientation,
    pixel spacing and matrix size, and be evenly spaced (gantry tilt, missing slices and
    multi-frame images are refused with a one-line error).

    Parameters
    ----------
    files : sequence of Path
        The slice files.
    source : str or Path, optional
        Named in error messages (default the first file's folder).

    Returns
    -------
    ImageSeries

    Raises
    ------
    QMRIInputError
        One line naming ``source``, for any of the cases above or unreadable pixel data.
    """
    with quiet_pydicom():
        return _read_image_series(files, source)


def _read_image_series(files: Sequence[Path], source: str | Path | None) -> ImageSeries:
    """:func:`read_image_series` without the warning filter."""
    import pydicom

    if not files:
        raise QMRIInputError("no image files in the series", source)
    source = source if source is not None else Path(files[0]).parent
    slices = []
    for path in files:
        try:
            ds = pydicom.dcmread(path, force=True)
        except Exception as exc:  # noqa: BLE001 (pydicom raises many types for corrupt files)
            raise QMRIInputError(
                f"unreadable DICOM file {Path(path).name} ({exc})", source
            ) from None
        if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
            raise QMRIInputError(
                "multi-frame image series are not supported as planning images "
                "(expected one file per slice)",
                source,
            )
        slices.append(ds)
    first = slices[0]
    try:
        iop = np.array([float(v) for v in first.ImageOrientationPatient])
        spacing = np.array([float(v) for v in first.PixelSpacing])
        rows, cols = int(first.Rows), int(first.Columns)
    except AttributeError as exc:
        raise QMRIInputError(f"image slices lack geometry ({exc})", source) from None
    normal = np.cross(iop[:3], iop[3:6])
    for ds in slices[1:]:
        if not np.allclose([float(v) for v in ds.ImageOrientationPatient], iop, atol=1e-4):
            raise QMRIInputError("slices of the series differ in ImageOrientationPatient", source)
        if not np.allclose([float(v) for v in ds.PixelSpacing], spacing, atol=1e-4):
            raise QMRIInputError("slices of the series differ in PixelSpacing", source)
        if (int(ds.Rows), int(ds.Columns)) != (rows, cols):
            raise QMRIInputError("slices of the series differ in matrix size", source)
    positions = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in slices])
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    along, positions = along[order], positions[order]
    slices = [slices[i] for i in order]
    if len(slices) > 1:
        steps = np.diff(along)
        if np.any(steps < 1e-3):
            raise QMRIInputError("two slices of the series share one position", source)
        if np.ptp(steps) > 0.01 * np.mean(steps) + 1e-3:
            raise QMRIInputError(
                f"slices are unevenly spaced ({steps.min():.3g}..{steps.max():.3g} mm; missing "
                "slices?)",
                source,
            )
        step_vec = (positions[-1] - positions[0]) / (len(slices) - 1)
        in_plane = step_vec - (step_vec @ normal) * normal
        if np.linalg.norm(in_plane) > 1e-2 * np.linalg.norm(step_vec) + 1e-3:
            raise QMRIInputError(
                "slices are not stacked along their normal (gantry tilt); resample the series "
                "first",
                source,
            )
    else:
        thickness = float(getattr(first, "SliceThickness", 1.0) or 1.0)
        step_vec = normal * thickness
    volume = np.empty((cols, rows, len(slices)), dtype=np.float64)
    for k, ds in enumerate(slices):
        try:
            pixels = np.asarray(ds.pixel_array, dtype=np.float64)
        except Exception as exc:  # noqa: BLE001
            raise QMRIInputError(f"unreadable pixel data ({exc})", source) from None
        slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
        intercept = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
        volume[:, :, k] = (pixels * slope + intercept).T
    affine = dicom_to_ras_affine(positions[0], iop, spacing, step_vec)
    return ImageSeries(
        data=volume,
        affine=affine,
        modality=str(getattr(first, "Modality", "")),
        series_uid=str(getattr(first, "SeriesInstanceUID", "")),
        frame_uid=str(getattr(first, "FrameOfReferenceUID", "")),
        sop_uids=[str(getattr(ds, "SOPInstanceUID", "")) for ds in slices],
        slice_positions=along,
    )


@dataclass
class PlanningRegistration:
    """A planning image registered to the MR reference.

    Attributes
    ----------
    transform : SimpleITK.Transform
        ``from-<planning>_to-<MR>``: maps MR reference points to planning-image points (ITK,
        LPS, mm); resamples planning-frame data onto the MR grid.
    reference_to_planning_ras : (4, 4) ndarray
        The same as a RAS matrix (MR point -> planning point).
    result : RegistrationResult
        The optimisation (planning image fixed, MR moving; its transform is the inverse of
        ``transform``).
    options : dict
        :func:`~qmri.registration.register_rigid` options used.
    initialize : str
        Initialisation (``geometry`` or ``identity``).
    mask_voxels : int
        Planning-image voxels the metric was restricted to (0: no mask).
    seconds : float
        Wall time of the registration (s).
    """

    transform: sitk.Transform
    reference_to_planning_ras: np.ndarray
    result: RegistrationResult
    options: dict[str, Any]
    initialize: str
    mask_voxels: int
    seconds: float


def register_planning_image(
    image: ImageSeries,
    reference: str | Path,
    *,
    focus_mask: np.ndarray | None = None,
    initialize: str = "geometry",
    initial: np.ndarray | None = None,
    options: dict[str, Any] | None = None,
) -> PlanningRegistration:
    """Rigidly register a planning image to the MR reference (Mattes MI, masked).

    Parameters
    ----------
    image : ImageSeries
        The planning image (CT numbers in HU are clipped to :data:`HU_WINDOW`).
    reference : str or Path
        The baseline MR reference (3D NIfTI).
    focus_mask : ndarray of bool, optional
        Planning-grid voxels the metric is restricted to (the treated levels grown by a
        margin); None uses the whole planning image.
    initialize : {"geometry", "identity"}
        Start from the centres of the two grids, or from the identity (same frame).
    initial : (4, 4) ndarray, optional
        An initial guess of the result (RAS, reference point -> planning point), e.g. from a
        manual alignment when the grid centres are more than about 10 mm apart along the spine;
        ``initialize`` is then not used.
    options : dict, optional
        Overrides of :data:`DEFAULT_PLANNING_REGISTRATION`.

    Returns
    -------
    PlanningRegistration

    Raises
    ------
    QMRIInputError
        One line naming the reference for an unreadable reference, an empty mask or a failed
        registration (no overlap, ...).
    """
    import time

    if initialize not in ("geometry", "identity"):
        raise QMRIInputError(
            f"unknown planning-image initialisation {initialize!r} (geometry or identity)"
        )
    opts = {**DEFAULT_PLANNING_REGISTRATION, **(options or {})}
    ref_img = load_nifti(reference, ndim=3)
    start_matrix = np.eye(4) if initial is None else np.asarray(initial, dtype=float)
    if initial is not None:
        if start_matrix.shape != (4, 4) or not np.allclose(
            start_matrix[:3, :3] @ start_matrix[:3, :3].T, np.eye(3), atol=1e-6
        ):
            raise QMRIInputError("the initial planning transform must be a rigid 4x4 matrix")
        initialize = "identity"
    # the MR placed by the initial guess (the identity without one): the optimisation then
    # starts from the guess and only the residual is registered
    moving = nifti_to_sitk(
        nib.Nifti1Image(read_data(ref_img).astype(np.float32), start_matrix @ ref_img.affine)
    )
    data = image.data
    if image.modality.upper() == "CT":
        data = np.clip(data, *HU_WINDOW)
    fixed = nifti_to_sitk(nib.Nifti1Image(data.astype(np.float32), image.affine))
    mask_img = None
    n_mask = 0
    if focus_mask is not None:
        mask = np.asarray(focus_mask, dtype=bool)
        if mask.shape != image.shape:
            raise ValueError(f"focus mask shape {mask.shape} differs from image {image.shape}")
        n_mask = int(mask.sum())
        if n_mask == 0:
            raise QMRIInputError("registration focus mask is empty", reference)
        mask_img = nifti_to_sitk(nib.Nifti1Image(mask.astype(np.float32), image.affine))
        mask_img = sitk.Cast(mask_img, sitk.sitkUInt8)
    start = time.perf_counter()
    try:
        result = register_rigid(fixed, moving, initialize=initialize, fixed_mask=mask_img, **opts)
    except RegistrationError as exc:
        raise QMRIInputError(f"planning image -> MR: {exc.problem}", reference) from None
    seconds = time.perf_counter() - start
    # result: planning point -> placed-MR point; reference point = inv(start) placed point
    matrix = np.linalg.inv(transform_to_matrix(result.transform)) @ start_matrix
    lps = _LPS @ matrix @ _LPS
    transform = sitk.Euler3DTransform()
    transform.SetMatrix(tuple(float(v) for v in lps[:3, :3].ravel()), 1e-6)
    transform.SetTranslation(tuple(float(v) for v in lps[:3, 3]))
    return PlanningRegistration(
        transform=transform,
        reference_to_planning_ras=transform_to_matrix(transform),
        result=result,
        options=opts,
        initialize="initial guess" if initial is not None else initialize,
        mask_voxels=n_mask,
        seconds=seconds,
    )


def write_planning_registration(
    reg: PlanningRegistration,
    image: ImageSeries,
    reference: str | Path,
    out_xfm: str | Path,
    *,
    checkerboard: str | Path | None = None,
    mask_description: str = "",
    max_metric: float | None = None,
    centre_voxel: tuple[int, int, int] | None = None,
) -> Path:
    """Write the transform (ITK text), its JSON sidecar and optionally a checkerboard PNG.

    The sidecar is :func:`qmri.registration.transform_sidecar`'s (fixed image: the MR
    reference; moving: the planning image, described, not named by path, so that no patient
    folder name reaches the outputs) plus the registration's direction, the focus mask, the
    initialisation and the planning frame's digest (:func:`frame_hash`), which the RTDOSE
    import checks its dose against. ``centre_voxel`` (reference grid) is where the
    checkerboard's three planes cross (e.g. the GTV's centre; default the grid centre).

    Returns
    -------
    Path
        The transform file.
    """
    out_xfm = Path(out_xfm)
    write_transform(reg.transform, out_xfm)
    moving = f"planning {image.modality or 'image'} (DICOM series, {image.shape[2]} slices)"
    sidecar = transform_sidecar(reg.result, reference, [moving], reg.options, max_metric)
    sidecar.update(
        {
            "Optimisation": (
                "planning image fixed (metric restricted to the focus mask), MR reference "
                "moving; this file holds the inverse: MR reference point -> planning point"
            ),
            "Initialization": reg.initialize,
            "FocusMask": mask_description or "none (whole planning image)",
            "FocusMaskVoxels": reg.mask_voxels,
            "PlanningModality": image.modality,
            "PlanningFrameOfReferenceSHA256": frame_hash(image.frame_uid),
            "HUWindow": list(HU_WINDOW) if image.modality.upper() == "CT" else None,
            "Seconds": round(reg.seconds, 2),
        }
    )
    write_json(sidecar, out_xfm.with_name(out_xfm.name.removesuffix(".txt") + ".json"))
    if checkerboard is not None:
        from qmri.qc import registration_checkerboard

        ref_img = load_nifti(reference, ndim=3)
        ref = read_data(ref_img)
        shown = np.clip(image.data, *HU_WINDOW) if image.modality.upper() == "CT" else image.data
        registration_checkerboard(
            ref, ref_img.affine, shown, image.affine, reg.reference_to_planning_ras, checkerboard,
            title=f"planning {image.modality} -> MR reference (checkerboard)",
            centre_voxel=centre_voxel,
        )  # fmt: skip
    return out_xfm
