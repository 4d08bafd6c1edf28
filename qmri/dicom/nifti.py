"""dcm2niix runs and the NIfTI files the import writes (canonical orientation, clean headers).

:func:`run_dcm2niix` converts a set of DICOM files with the reference converter (the PyPI
``dcm2niix`` wheel's binary) in a temporary folder: ``-z y -b y -ba y`` (compressed NIfTI and an
anonymised BIDS sidecar), ``-g i`` (a user's ``~/.dcm2nii.ini`` is ignored, so every site gets
the same conversion), ``-c ""`` (no comment in ``aux_file``). The input files are linked, never
modified.

Every image is then rewritten by :func:`write_canonical` in the closest canonical (RAS+) voxel
order: a lossless permutation and flip of dcm2niix's voxel axes (stored integers and scaling
kept exactly), because qmri's QC planes and the ROI labels drawn on the baseline reference
assume RAS-ordered axes and a collection's 3D files must share one grid. Sidecar fields that
name voxel axes (``PhaseEncodingDirection``, ``SliceEncodingDirection``) and the ``.bvec``
(FSL convention: voxel axes, x flipped for a positive-determinant affine) follow the
reorientation.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel.orientations import inv_ornt_aff, io_orientation

from qmri.dicom.phi import clean_nifti_header
from qmri.errors import QMRIInputError
from qmri.io import atomic_output

__all__ = [
    "DCM2NIIX_OPTIONS",
    "CanonicalImage",
    "Converted",
    "bvecs_from_world",
    "bvecs_to_world",
    "dcm2niix_executable",
    "format_bval",
    "format_bvec",
    "read_canonical",
    "reorient_axis_code",
    "reorient_sidecar",
    "run_dcm2niix",
    "write_canonical",
    "write_text",
]

#: dcm2niix options: gz NIfTI, anonymised BIDS sidecar, defaults file ignored, no comment,
#: no cropping, overwrite name clashes inside the private output folder.
DCM2NIIX_OPTIONS = ("-g", "i", "-z", "y", "-b", "y", "-ba", "y", "-c", "", "-x", "n", "-w", "1")


@dataclass(frozen=True)
class Converted:
    """One image dcm2niix wrote.

    Attributes
    ----------
    nifti : Path
        The ``.nii.gz`` (in a temporary folder).
    sidecar : dict
        Its JSON sidecar as dcm2niix wrote it (not yet scrubbed).
    bval : ndarray or None
        b-values (s/mm^2) of a diffusion series.
    bvec : ndarray or None
        ``(3, n)`` b-vectors (FSL convention, dcm2niix's voxel axes).
    """

    nifti: Path
    sidecar: dict[str, Any]
    bval: np.ndarray | None = None
    bvec: np.ndarray | None = None


def dcm2niix_executable() -> str:
    """Path of the dcm2niix binary (the PyPI wheel's, else one on ``PATH``)."""
    try:
        import dcm2niix  # the PyPI wheel, which ships the binary

        exe = getattr(dcm2niix, "bin", None)
        if exe and Path(exe).exists():
            return str(exe)
    except ImportError:
        pass
    found = shutil.which("dcm2niix")
    if not found:
        raise QMRIInputError("dcm2niix not found: install the 'dcm2niix' package (PyPI)")
    return found


def _link_inputs(files: Sequence[Path], folder: Path) -> None:
    folder.mkdir(parents=True)
    for i, path in enumerate(files):
        link = folder / f"{i:06d}.dcm"
        try:
            os.symlink(Path(path).resolve(), link)
        except OSError:  # file systems without symlinks: copy (inputs are still only read)
            shutil.copy2(path, link)


def run_dcm2niix(files: Sequence[Path], workdir: Path) -> list[Converted]:
    """Convert DICOM files with dcm2niix into ``workdir`` (a fresh, empty folder per call).

    Parameters
    ----------
    files : sequence of Path
        DICOM files of one series (or one part of it); linked into ``workdir/in``.
    workdir : Path
        Temporary folder for the links and the outputs.

    Returns
    -------
    list of Converted
        Every image written, sorted by file name.

    Raises
    ------
    QMRIInputError
        dcm2niix failed or wrote nothing (one line naming the first file and dcm2niix's last
        error line).
    """
    if not files:
        raise QMRIInputError("no DICOM files to convert")
    src, out = workdir / "in", workdir / "out"
    _link_inputs(files, src)
    out.mkdir(parents=True)
    cmd = [dcm2niix_executable(), *DCM2NIIX_OPTIONS, "-f", "%s_%e", "-o", str(out), str(src)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=3600)
    images = sorted(out.glob("*.nii.gz"))
    if proc.returncode != 0 or not images:
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.lower().startswith("error")] or lines[-1:]
        raise QMRIInputError(
            f"dcm2niix failed (exit {proc.returncode}): {errors[-1] if errors else 'no output'}",
            files[0],
        )
    converted = []
    for nii in images:
        stem = nii.name[: -len(".nii.gz")]
        side = nii.with_name(stem + ".json")
        meta = json.loads(side.read_text(encoding="utf-8")) if side.exists() else {}
        bval_path, bvec_path = nii.with_name(stem + ".bval"), nii.with_name(stem + ".bvec")
        bval = np.loadtxt(bval_path, ndmin=1) if bval_path.exists() else None
        bvec = np.loadtxt(bvec_path, ndmin=2) if bvec_path.exists() else None
        converted.append(Converted(nii, meta, bval, bvec))
    return converted


# --------------------------------------------------------------------------------------------
# canonical orientation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CanonicalImage:
    """Stored data of an image in closest-canonical voxel order, with what describes it.

    Attributes
    ----------
    raw : ndarray
        Stored (unscaled) values, voxel axes reordered; value = raw * slope + inter.
    affine : (4, 4) ndarray
        Voxel to RAS+ (mm) of ``raw``.
    slope, inter : float
        Scaling of the stored values.
    source_affine : (4, 4) ndarray
        The affine before reorientation.
    ornt : (3, 2) ndarray
        nibabel orientation transform that was applied (per source axis: new axis, flip).
    zooms_t : float or None
        Fourth pixdim of a 4D image (s).
    xyzt_units : (str, str)
        Units of the source header.
    """

    raw: np.ndarray
    affine: np.ndarray
    slope: float
    inter: float
    source_affine: np.ndarray
    ornt: np.ndarray
    zooms_t: float | None
    xyzt_units: tuple[str, str]


def read_canonical(path: Path) -> CanonicalImage:
    """Load a NIfTI file and reorder its voxel axes to the closest canonical (RAS+) order."""
    img = nib.load(str(path))
    raw = np.asanyarray(img.dataobj.get_unscaled())
    slope, inter = img.dataobj.slope, img.dataobj.inter
    ornt = io_orientation(img.affine)
    moved = nib.orientations.apply_orientation(raw, ornt)
    affine = img.affine @ inv_ornt_aff(ornt, raw.shape)
    space, time = img.header.get_xyzt_units()
    zooms = img.header.get_zooms()
    return CanonicalImage(
        raw=np.ascontiguousarray(moved),
        affine=affine,
        slope=1.0 if slope is None or not np.isfinite(slope) else float(slope),
        inter=0.0 if inter is None or not np.isfinite(inter) else float(inter),
        source_affine=img.affine,
        ornt=ornt,
        zooms_t=float(zooms[3]) if len(zooms) > 3 else None,
        xyzt_units=(space or "mm", time or "sec"),
    )


def write_canonical(image: CanonicalImage, path: Path, raw: np.ndarray | None = None) -> Path:
    """Write stored data with a clean header (:func:`qmri.dicom.phi.clean_nifti_header`).

    The stored integers and the scaling are written exactly as given (no rescaling by
    nibabel), gzip-compressed without a timestamp, atomically.

    Parameters
    ----------
    image : CanonicalImage
        Geometry, scaling and (unless ``raw`` is given) the data.
    path : Path
        Destination ``.nii.gz``.
    raw : ndarray, optional
        Stored data to write instead of ``image.raw`` (same grid; e.g. one volume of it or
        several stacked on a fourth axis).
    """
    data = image.raw if raw is None else raw
    data = np.asarray(data, dtype=data.dtype.newbyteorder("<"))
    header = clean_nifti_header(
        data,
        image.affine,
        slope=image.slope,
        inter=image.inter,
        zooms_t=image.zooms_t,
        xyzt_units=image.xyzt_units,
    )
    header["vox_offset"] = 352
    header["magic"] = b"n+1"
    payload = header.binaryblock + b"\x00" * 4 + data.tobytes(order="F")
    with atomic_output(path) as tmp:
        tmp.write_bytes(gzip.compress(payload, compresslevel=6, mtime=0))
    return path


def reorient_axis_code(code: str, ornt: np.ndarray) -> str:
    """Map a BIDS voxel-axis code (``i``, ``j-``, ``k``) through an orientation transform."""
    letters = "ijk"
    axis = letters.index(code[0])
    new_axis, flip = int(ornt[axis, 0]), ornt[axis, 1] < 0
    negative = code.endswith("-") != flip
    return letters[new_axis] + ("-" if negative else "")


def reorient_sidecar(meta: Mapping[str, Any], ornt: np.ndarray) -> dict[str, Any]:
    """Sidecar with its voxel-axis fields following a reorientation.

    ``SliceTiming`` lists slices along ``SliceEncodingDirection`` (BIDS default ``k``), so the
    direction is written explicitly when the slice axis moves.
    """
    out = dict(meta)
    for key in ("PhaseEncodingDirection", "PhaseEncodingAxis", "SliceEncodingDirection"):
        value = out.get(key)
        if isinstance(value, str) and value[:1] in ("i", "j", "k"):
            new = reorient_axis_code(value, ornt)
            out[key] = new.rstrip("-") if key == "PhaseEncodingAxis" else new
    if "SliceTiming" in out and "SliceEncodingDirection" not in meta:
        out["SliceEncodingDirection"] = reorient_axis_code("k", ornt)
    return out


def _fsl_flip(affine: np.ndarray) -> np.ndarray:
    """FSL's bvec convention flips the first voxel axis for a positive-determinant affine."""
    return np.diag([-1.0 if np.linalg.det(affine[:3, :3]) > 0 else 1.0, 1.0, 1.0])


def bvecs_to_world(bvec: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """``(3, n)`` FSL-convention b-vectors of an image -> unit directions in RAS+ world."""
    rot = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    return rot @ _fsl_flip(affine) @ np.asarray(bvec, float)


def bvecs_from_world(world: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """RAS+ world directions -> ``(3, n)`` FSL-convention b-vectors of an image."""
    rot = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    vox = np.linalg.solve(rot, np.asarray(world, float))
    out = _fsl_flip(affine) @ vox
    out[np.abs(out) < 1e-12] = 0.0
    return out


def write_text(text: str, path: Path) -> Path:
    """Write UTF-8 text atomically."""
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def format_bval(bvals: Sequence[float]) -> str:
    """``.bval`` text: one line of b-values (s/mm^2)."""
    return " ".join(f"{float(b):.6g}" for b in bvals) + "\n"


def format_bvec(bvec: np.ndarray) -> str:
    """``.bvec`` text: three lines (x, y, z) of ``n`` values."""
    return "".join(" ".join(f"{float(v):.6g}" for v in row) + "\n" for row in np.asarray(bvec))
