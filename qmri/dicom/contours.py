"""Reading an RTSTRUCT and filling its contours: the geometry half of the RTSTRUCT import.

:func:`read_rtstruct` reads the structures (names, colours, contours in the patient frame, mm)
without the images; :func:`find_referenced_series` finds the image series they were drawn on;
:func:`rasterise_contours` fills them on that series' grid (even-odd rule within a slice, as
DICOM defines holes) and :func:`sample_contours` tests any other grid's voxel centres against
them directly. Why qmri fills contours itself rather than with rt-utils, with the measurements,
is in :mod:`qmri.dicom.rtstruct`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qmri.dicom.planning_ct import (
    ImageSeries,
    quiet_pydicom,
    read_image_series,
    scan_dicom_folder,
)
from qmri.errors import QMRIInputError

__all__ = [
    "Contour",
    "Structure",
    "StructureSet",
    "find_referenced_series",
    "rasterise_contours",
    "read_rtstruct",
    "sample_contours",
]

log = logging.getLogger("qmri")

_RTSTRUCT_SOP = "1.2.840.10008.5.1.4.1.1.481.3"

# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------


@dataclass
class Contour:
    """One contour of a structure.

    Attributes
    ----------
    points : ndarray, shape (n, 3)
        Contour Data (mm, DICOM patient coordinates, LPS).
    geometric_type : str
        ``CLOSED_PLANAR``, ``OPEN_PLANAR``, ``POINT``, ...
    image_uids : tuple of str
        ReferencedSOPInstanceUIDs of its ContourImageSequence (may be empty).
    """

    points: np.ndarray
    geometric_type: str
    image_uids: tuple[str, ...] = ()


@dataclass
class Structure:
    """A structure (ROI) of a structure set."""

    number: int
    name: str
    interpreted_type: str
    contours: list[Contour] = field(default_factory=list)

    @property
    def closed(self) -> list[Contour]:
        """Its closed planar contours (the ones that enclose a volume)."""
        return [c for c in self.contours if c.geometric_type == "CLOSED_PLANAR"]


@dataclass
class StructureSet:
    """An RTSTRUCT, read without its images.

    Attributes
    ----------
    structures : list of Structure
        In StructureSetROISequence order.
    series_uids : list of str
        SeriesInstanceUIDs of the referenced image series (RT Referenced Series Sequence).
    frame_uids : list of str
        Referenced FrameOfReferenceUIDs.
    """

    structures: list[Structure]
    series_uids: list[str]
    frame_uids: list[str]

    @property
    def contour_image_uids(self) -> set[str]:
        """Every SOPInstanceUID the contours reference."""
        return {u for s in self.structures for c in s.contours for u in c.image_uids}


def _seq(ds: Any, name: str) -> list[Any]:
    return list(getattr(ds, name, None) or [])


def _contour_data(item: Any) -> np.ndarray:
    """Contour Data as floats, parsed from the raw bytes when pydicom has not converted them
    yet (converting each value to a DSfloat costs seconds for a large structure set)."""
    elem = item.get_item("ContourData") if "ContourData" in item else None
    if elem is None:
        return np.zeros(0)
    raw = elem.value
    if isinstance(raw, bytes | bytearray):
        text = bytes(raw).decode("ascii", "replace").replace("\\", " ")
        try:
            return np.array(text.split(), dtype=np.float64)
        except ValueError:
            raw = item.ContourData  # let pydicom read what numpy cannot
    if raw is None:
        return np.zeros(0)
    values = raw if isinstance(raw, list | tuple) or hasattr(raw, "__len__") else [raw]
    return np.asarray([float(v) for v in values], dtype=np.float64)


def read_rtstruct(path: str | Path) -> StructureSet:
    """Read an RTSTRUCT file: structures, their contours and the referenced series.

    Works without the images (a "partial read": what the file holds, no masks). Files without
    the DICOM preamble are read too.

    Raises
    ------
    QMRIInputError
        One line naming the file: missing, not DICOM, or not an RT Structure Set.
    """
    with quiet_pydicom():
        return _read_rtstruct(Path(path))


def _read_rtstruct(path: Path) -> StructureSet:
    """:func:`read_rtstruct` without the warning filter."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    if not path.is_file():
        raise QMRIInputError("RTSTRUCT file not found", path)
    try:
        ds = pydicom.dcmread(path, force=True)
    except (InvalidDicomError, OSError, ValueError, TypeError, AttributeError, KeyError) as exc:
        raise QMRIInputError(f"not a readable DICOM file ({exc})", path) from None
    modality = str(getattr(ds, "Modality", "")).upper()
    sop = str(getattr(ds, "SOPClassUID", ""))
    if modality != "RTSTRUCT" and sop != _RTSTRUCT_SOP:
        raise QMRIInputError(f"not an RT Structure Set (Modality {modality or 'missing'})", path)
    if "StructureSetROISequence" not in ds:
        raise QMRIInputError("RT Structure Set without a Structure Set ROI Sequence", path)
    series_uids: list[str] = []
    frame_uids: list[str] = []
    for ref in _seq(ds, "ReferencedFrameOfReferenceSequence"):
        if getattr(ref, "FrameOfReferenceUID", None):
            frame_uids.append(str(ref.FrameOfReferenceUID))
        for study in _seq(ref, "RTReferencedStudySequence"):
            for series in _seq(study, "RTReferencedSeriesSequence"):
                if getattr(series, "SeriesInstanceUID", None):
                    series_uids.append(str(series.SeriesInstanceUID))
    types = {
        int(obs.ReferencedROINumber): str(getattr(obs, "RTROIInterpretedType", "") or "")
        for obs in _seq(ds, "RTROIObservationsSequence")
        if "ReferencedROINumber" in obs
    }
    contours: dict[int, list[Contour]] = {}
    for roi in _seq(ds, "ROIContourSequence"):
        number = int(roi.ReferencedROINumber)
        items = []
        for c in _seq(roi, "ContourSequence"):
            data = _contour_data(c)
            if data.size % 3:
                raise QMRIInputError(
                    f"ROI {number}: Contour Data holds {data.size} values, not x, y, z triples",
                    path,
                )
            uids = tuple(
                str(im.ReferencedSOPInstanceUID)
                for im in _seq(c, "ContourImageSequence")
                if "ReferencedSOPInstanceUID" in im
            )
            kind = str(getattr(c, "ContourGeometricType", "CLOSED_PLANAR") or "CLOSED_PLANAR")
            items.append(Contour(data.reshape(-1, 3), kind.upper(), uids))
        contours[number] = items
    structures = []
    for roi in ds.StructureSetROISequence:
        number = int(roi.ROINumber)
        structures.append(
            Structure(
                number=number,
                name=str(getattr(roi, "ROIName", "") or f"ROI {number}"),
                interpreted_type=types.get(number, ""),
                contours=contours.get(number, []),
            )
        )
    return StructureSet(structures, series_uids, frame_uids)


def find_referenced_series(
    structure_set: StructureSet, image_dir: str | Path, source: str | Path | None = None
) -> ImageSeries:
    """Find and read the image series the structure set was drawn on.

    The referenced SeriesInstanceUID is looked for first; failing that, the series of the
    referenced frame of reference whose slices the contours reference (ContourImageSequence),
    or the only series of that frame.

    Raises
    ------
    QMRIInputError
        One line naming the structure set: the referenced images are not in ``image_dir``
        (with the series found there), or several series of its frame fit equally.
    """
    found = scan_dicom_folder(image_dir)
    for uid in structure_set.series_uids:
        if uid in found:
            return read_image_series([p for p, _ in found[uid]], source=image_dir)
    frames = set(structure_set.frame_uids)
    same_frame = {
        uid: files
        for uid, files in found.items()
        if str(getattr(files[0][1], "FrameOfReferenceUID", "")) in frames
    }
    wanted = structure_set.contour_image_uids
    if wanted:
        hits = {
            uid: len(wanted & {str(getattr(ds, "SOPInstanceUID", "")) for _, ds in files})
            for uid, files in found.items()
        }
        best = max(hits.values(), default=0)
        if best > 0:
            winners = [uid for uid, n in hits.items() if n == best]
            if len(winners) == 1:
                return read_image_series([p for p, _ in found[winners[0]]], source=image_dir)
    if len(same_frame) == 1:
        uid = next(iter(same_frame))
        return read_image_series([p for p, _ in same_frame[uid]], source=image_dir)
    if len(same_frame) > 1:
        raise QMRIInputError(
            f"{len(same_frame)} image series in {image_dir} share the structure set's frame of "
            "reference and none is the referenced series; give the folder of the planning image",
            source,
        )
    listing = (
        ", ".join(
            f"{getattr(files[0][1], 'Modality', '?')} series of {len(files)} slices"
            for files in found.values()
        )
        or "no image series"
    )
    raise QMRIInputError(
        f"the structure set's referenced image series is not in {image_dir} (found: {listing})",
        source,
    )


# --------------------------------------------------------------------------------------------
# rasterisation
# --------------------------------------------------------------------------------------------


def _fill_slice(polygons: Sequence[np.ndarray], nx: int, ny: int) -> np.ndarray:
    """Even-odd scan-line fill of polygons (vertex coordinates in voxel indices (i, j)).

    Voxel ``(i, j)`` is inside when its centre is inside an odd number of polygons; an edge
    spans the rows ``min(y) <= j < max(y)`` (half-open, so vertices on a row count once) and a
    row's crossings ``x`` fill ``x_a <= i < x_b`` between consecutive pairs.
    """
    x0s, y0s, x1s, y1s = [], [], [], []
    for poly in polygons:
        p = np.asarray(poly, dtype=np.float64)
        q = np.roll(p, -1, axis=0)
        x0s.append(p[:, 0])
        y0s.append(p[:, 1])
        x1s.append(q[:, 0])
        y1s.append(q[:, 1])
    x0, y0 = np.concatenate(x0s), np.concatenate(y0s)
    x1, y1 = np.concatenate(x1s), np.concatenate(y1s)
    lo, hi = np.minimum(y0, y1), np.maximum(y0, y1)
    first = np.maximum(np.ceil(lo), 0).astype(np.int64)
    last = np.minimum(np.ceil(hi) - 1, ny - 1).astype(np.int64)  # rows j < hi
    count = np.maximum(last - first + 1, 0)
    count[hi == lo] = 0
    mask = np.zeros((nx, ny), dtype=bool)
    total = int(count.sum())
    if total == 0:
        return mask
    edge = np.repeat(np.arange(x0.size), count)
    offset = np.arange(total) - np.repeat(np.cumsum(count) - count, count)
    row = first[edge] + offset
    t = (row - y0[edge]) / (y1[edge] - y0[edge])
    x = x0[edge] + t * (x1[edge] - x0[edge])
    order = np.lexsort((x, row))
    row, x = row[order], x[order]
    # rows clipped at the grid edge keep every crossing, so each row has an even count
    starts, ends = x[0::2], x[1::2]
    rows = row[0::2]
    a = np.clip(np.ceil(starts), 0, nx).astype(np.int64)
    b = np.clip(np.ceil(ends), 0, nx).astype(np.int64)
    keep = b > a
    diff = np.zeros((ny, nx + 1), dtype=np.int32)
    np.add.at(diff, (rows[keep], a[keep]), 1)
    np.add.at(diff, (rows[keep], b[keep]), -1)
    return (np.cumsum(diff[:, :nx], axis=1) > 0).T


def rasterise_contours(
    contours: Sequence[Contour],
    shape: tuple[int, int, int],
    affine: np.ndarray,
    *,
    name: str = "",
    source: str | Path | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Rasterise closed planar contours on an image grid (even-odd rule at voxel centres).

    Parameters
    ----------
    contours : sequence of Contour
        Closed planar contours (others are skipped) in LPS mm.
    shape, affine
        The grid (nibabel order) and its RAS voxel-to-world affine.
    name : str
        Structure name, for messages.
    source : str or Path, optional
        File named in errors.

    Returns
    -------
    mask : ndarray of bool
        Shape ``shape``.
    notes : list of str
        What was skipped (contours off the grid, between slices, not closed).

    Raises
    ------
    QMRIInputError
        If a contour does not lie in a plane of the grid's slices (e.g. drawn on sagittal
        images of another series).
    """
    nx, ny, nz = shape
    by_slice, notes = _slice_polygons(contours, affine, nz, name, source)
    mask = np.zeros(shape, dtype=bool)
    for ks, polys in by_slice.items():
        mask[:, :, ks] = _fill_slice(polys, nx, ny)
    return mask, notes


def _slice_polygons(
    contours: Sequence[Contour], affine: np.ndarray, n_slices: int, name: str, source: Any
) -> tuple[dict[int, list[np.ndarray]], list[str]]:
    """Closed contours in voxel indices (i, j), grouped by the slice they lie in."""
    to_index = np.linalg.inv(np.asarray(affine, dtype=float))
    by_slice: dict[int, list[np.ndarray]] = {}
    notes: list[str] = []
    off_grid = between = skipped = 0
    for c in contours:
        if c.geometric_type != "CLOSED_PLANAR" or len(c.points) < 3:
            skipped += 1
            continue
        ras = c.points * np.array([-1.0, -1.0, 1.0])
        ijk = ras @ to_index[:3, :3].T + to_index[:3, 3]
        k = ijk[:, 2]
        if np.ptp(k) > 0.05:
            raise QMRIInputError(
                f"structure {name!r}: a contour is not in the plane of an image slice "
                f"(it spans {np.ptp(k):.2f} slices); was it drawn on another series?",
                source,
            )
        kc = float(np.mean(k))
        ks = int(np.rint(kc))
        if ks < 0 or ks >= n_slices:
            off_grid += 1
            continue
        if abs(kc - ks) > 0.05:
            between += 1
        by_slice.setdefault(ks, []).append(ijk[:, :2])
    if skipped:
        notes.append(f"{name}: {skipped} contour(s) not CLOSED_PLANAR (or < 3 points) skipped")
    if off_grid:
        notes.append(f"{name}: {off_grid} contour(s) outside the image's slices skipped")
    if between:
        notes.append(f"{name}: {between} contour(s) between image slices put on the nearest")
    return by_slice, notes


def _inside(polygons: Sequence[np.ndarray], x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Even-odd test of points against polygons, with :func:`_fill_slice`'s conventions.

    A point is inside when an odd number of edge crossings of its row (edges spanning
    ``min(y) <= y < max(y)``) lie at ``x_cross <= x``.
    """
    edges = []
    for poly in polygons:
        p = np.asarray(poly, dtype=np.float64)
        edges.append(np.column_stack([p, np.roll(p, -1, axis=0)]))
    e = np.concatenate(edges)
    e = e[e[:, 1] != e[:, 3]]
    x0, y0, x1, y1 = e[:, 0], e[:, 1], e[:, 2], e[:, 3]
    lo, hi = np.minimum(y0, y1), np.maximum(y0, y1)
    slope = (x1 - x0) / (y1 - y0)
    out = np.zeros(x.shape, dtype=bool)
    chunk = max(1, 4_000_000 // max(e.shape[0], 1))
    for start in range(0, x.size, chunk):
        px, py = x[start : start + chunk, None], y[start : start + chunk, None]
        spans = (lo <= py) & (py < hi)
        xc = x0 + (py - y0) * slope
        out[start : start + chunk] = (np.count_nonzero(spans & (xc <= px), axis=1) % 2) == 1
    return out


def sample_contours(
    contours: Sequence[Contour],
    shape: tuple[int, int, int],
    affine: np.ndarray,
    points_ras: np.ndarray,
    *,
    name: str = "",
    source: str | Path | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Whether points lie inside a structure: even-odd test in the nearest contour slice.

    The structure is the one :func:`rasterise_contours` fills on the grid ``(shape, affine)``
    of the image it was drawn on, but evaluated at arbitrary points (e.g. the voxel centres of
    the MR reference mapped into the planning frame): in-plane the contour itself is used, not
    a raster of it, and along the slice normal each contour stands for its slice's thickness
    (the nearest slice), as planning systems read contours. At the image's own voxel centres
    the result is :func:`rasterise_contours`'s.

    Parameters
    ----------
    contours : sequence of Contour
        The structure's contours (LPS mm).
    shape, affine
        Grid of the image the contours were drawn on (RAS affine).
    points_ras : ndarray, shape (n, 3)
        Points in that image's world frame (RAS, mm).
    name, source
        For messages.

    Returns
    -------
    inside : ndarray of bool, shape (n,)
    notes : list of str
    """
    by_slice, notes = _slice_polygons(contours, affine, shape[2], name, source)
    pts = np.asarray(points_ras, dtype=np.float64)
    inside = np.zeros(pts.shape[0], dtype=bool)
    if not by_slice:
        return inside, notes
    to_index = np.linalg.inv(np.asarray(affine, dtype=float))
    allpts = np.concatenate([p for polys in by_slice.values() for p in polys])
    lo, hi = allpts.min(axis=0), allpts.max(axis=0)
    ks_all = np.array(sorted(by_slice))
    ijk = pts @ to_index[:3, :3].T + to_index[:3, 3]
    ks = np.rint(ijk[:, 2]).astype(np.int64)
    cand = np.flatnonzero(
        (ks >= ks_all[0]) & (ks <= ks_all[-1])
        & (ijk[:, 0] >= lo[0]) & (ijk[:, 0] <= hi[0])
        & (ijk[:, 1] >= lo[1]) & (ijk[:, 1] <= hi[1])
    )  # fmt: skip
    if cand.size == 0:
        return inside, notes
    order = cand[np.argsort(ks[cand], kind="stable")]
    kk = ks[order]
    bounds = np.flatnonzero(np.diff(kk)) + 1
    for group in np.split(order, bounds):
        polys = by_slice.get(int(ks[group[0]]))
        if polys:
            inside[group] = _inside(polys, ijk[group, 0], ijk[group, 1])
    return inside, notes
