"""Checks of a NIfTI file from its header alone, before any voxel data is read.

:func:`qmri.io.load_nifti` runs them: the voxel data the header claims must be in the file
(:func:`check_size`: every byte of an uncompressed file; for gzip at most
:data:`DEFLATE_MAX_RATIO` times the file size and a trailer that agrees), the image must not
exceed :func:`max_image_bytes` as float64, and the affine must be finite, non-singular and free
of shear, with a qform and sform that agree when both are set (:func:`check_affine`).
``docs/robustness.md`` lists every case and its outcome.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import math
import os
import zlib
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np

from qmri.errors import QMRIInputError

log = logging.getLogger("qmri")

#: Largest ratio of uncompressed to compressed size that deflate (gzip) can reach (258-byte
#: matches coded in 2 bits each: 1032:1); a ``.nii.gz`` whose header claims more voxel data
#: than this times its size cannot hold it (truncated file or a wrong header).
DEFLATE_MAX_RATIO = 1032

#: Default of :func:`max_image_bytes`: the largest image, as the float64 array
#: :func:`read_data` makes, that qmri reads (GiB).
DEFAULT_MAX_IMAGE_GIB = 16.0

#: Largest distance between the qform's and the sform's position of any corner of the grid,
#: as a fraction of the smallest voxel size, for the two to count as agreeing. Below a tenth of
#: a voxel every tool picks the same voxel for a point; float32 storage of the quaternion
#: and of the sform rounds to ~1e-4 mm.
QFORM_SFORM_TOLERANCE = 0.1

#: Largest |cos| of the angle between two voxel axes of an affine that is not sheared
#: (0.057 deg off 90; DICOM orientation cosines are rounded to ~1e-6).
SHEAR_TOLERANCE = 1e-3

_GZIP_MAGIC = b"\x1f\x8b"


def max_image_bytes() -> int:
    """Largest image qmri reads, in bytes of float64 data (:func:`read_data`'s array).

    ``QMRI_MAX_IMAGE_GIB`` (GiB, a positive number) overrides :data:`DEFAULT_MAX_IMAGE_GIB`.

    Raises
    ------
    QMRIInputError
        ``QMRI_MAX_IMAGE_GIB`` is not a positive number.
    """
    text = os.environ.get("QMRI_MAX_IMAGE_GIB")
    if text is None:
        return int(DEFAULT_MAX_IMAGE_GIB * 2**30)
    try:
        gib = float(text)
    except ValueError:
        gib = math.nan
    if not math.isfinite(gib) or gib <= 0:
        raise QMRIInputError(
            f"must be a positive number of GiB, got {text!r}", "QMRI_MAX_IMAGE_GIB"
        )
    return int(gib * 2**30)


def _size(nbytes: float) -> str:
    """``nbytes`` in the largest binary unit below it (``'1.5 GiB'``)."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{int(nbytes)} bytes"


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _gzip_length(path: Path, need: int) -> int:
    """Uncompressed length of a gzip file (every member), read in chunks in constant memory;
    stops counting once ``need`` bytes are reached.

    Raises
    ------
    QMRIInputError
        The compressed stream is corrupt or ends before its end marker (truncated file).
    """
    total = 0
    dec = zlib.decompressobj(wbits=31)
    with open(path, "rb") as fh:
        pending = b""
        while True:
            if not pending:
                pending = fh.read(1 << 20)
                if not pending:  # end of file: drain what the consumed input still holds
                    while not dec.eof and (out := len(dec.decompress(b"", 1 << 24))):
                        total += out
                    break
            try:
                total += len(dec.decompress(pending, 1 << 24))
            except zlib.error as exc:
                raise QMRIInputError(f"corrupt gzip data ({exc})", path) from None
            if total >= need:
                return total
            if dec.eof:  # a member ended: another member may follow, or padding
                rest = dec.unused_data or fh.read(1 << 20)
                if not rest.startswith(_GZIP_MAGIC):
                    return total
                dec, pending = zlib.decompressobj(wbits=31), rest
                continue
            pending = dec.unconsumed_tail
    if not dec.eof:
        raise QMRIInputError(
            "truncated gzip file: the compressed stream ends before its end marker", path
        )
    return total


def check_size(img: nib.Nifti1Image, path: Path) -> None:
    """The header's claim (dimensions x bytes per voxel) against the file and the ceiling."""
    header = img.header
    shape = tuple(int(n) for n in img.shape)
    if any(n < 1 for n in shape):
        raise QMRIInputError(f"header gives shape {shape}: an image needs every axis >= 1", path)
    dtype = header.get_data_dtype()
    if dtype.kind not in "biuf" or dtype.fields is not None:
        raise QMRIInputError(f"unsupported voxel type {dtype} (qmri reads real numbers)", path)
    voxels = math.prod(shape)
    data_bytes = voxels * dtype.itemsize
    offset = int(getattr(img.dataobj, "offset", header.get_data_offset()))
    need = offset + data_bytes
    claim = f"header claims {' x '.join(map(str, shape))} voxels of {dtype} ({_size(data_bytes)})"
    size = path.stat().st_size
    with open(path, "rb") as fh:
        gzipped = fh.read(2) == _GZIP_MAGIC
        if gzipped:
            fh.seek(max(size - 4, 0))
            isize = int.from_bytes(fh.read(4), "little")
    if not gzipped and size < need:
        raise QMRIInputError(
            f"{claim} from byte {offset} on, but the file has only "
            f"{size} bytes (truncated file or a wrong header)",
            path,
        )
    if gzipped and need > DEFLATE_MAX_RATIO * size + 1024:
        raise QMRIInputError(
            f"{claim}, but a gzip file of {_size(size)} holds at most "
            f"{_size(DEFLATE_MAX_RATIO * size)} (truncated file or a wrong header)",
            path,
        )
    limit = max_image_bytes()
    if voxels * 8 > limit:
        raise QMRIInputError(
            f"{claim}: {_size(voxels * 8)} as float64, more than qmri reads ({_size(limit)}; "
            "raise it with the environment variable QMRI_MAX_IMAGE_GIB)",
            path,
        )
    if gzipped and isize != need % 2**32:  # trailer disagrees: padding, several members or short
        got = _gzip_length(path, need)
        if got < need:
            raise QMRIInputError(
                f"{claim}, but the file holds only {got - offset} bytes "
                "of voxel data (truncated file or a wrong header)",
                path,
            )


def _describe_affine(header: nib.Nifti1Header) -> tuple[str, np.ndarray]:
    """Which transform the image's affine comes from (``'sform (code 1)'``) and the affine."""
    sform_code, qform_code = int(header["sform_code"]), int(header["qform_code"])
    if sform_code > 0:
        return f"sform (code {sform_code})", header.get_sform()
    if qform_code > 0:
        return f"qform (code {qform_code})", header.get_qform()
    return "affine from the voxel sizes (qform and sform codes are 0)", header.get_base_affine()


def _raw_pixdim(img: nib.Nifti1Image, path: Path) -> list[float]:
    """``pixdim`` as stored in the file (nibabel's loaded header has zeros replaced by 1)."""
    klass = type(img.header)
    opener = gzip.open if is_gzip(path) else open
    with opener(path, "rb") as fh:
        raw = klass.from_fileobj(fh, check=False)
    return [float(v) for v in raw["pixdim"]]


def check_affine(img: nib.Nifti1Image, path: Path) -> None:
    """A finite, non-singular affine without shear; qform and sform agree when both are set.

    Flipped axes (a negative direction) and oblique (rotated) grids are ordinary and accepted.
    """
    header = img.header
    with np.errstate(all="ignore"):
        which, affine = _describe_affine(header)
    affine = np.asarray(affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)):
        raise QMRIInputError(f"the {which} holds non-finite values (NaN or inf)", path)
    if int(header["sform_code"]) == 0:  # voxel sizes come from pixdim, which nibabel "fixes"
        raw = _raw_pixdim(img, path)[1 : 1 + min(img.ndim, 3)]
        bad = [k for k, v in enumerate(raw) if not (math.isfinite(v) and v != 0)]
        if bad:
            raise QMRIInputError(
                f"the {which} is singular: the header gives voxel size {raw[bad[0]]:g} mm "
                f"along axis {bad[0]} (pixdim[{bad[0] + 1}]), which nibabel would silently "
                "read as 1 mm",
                path,
            )
    axes = affine[:3, :3]
    sizes = np.linalg.norm(axes, axis=0)
    det = abs(float(np.linalg.det(axes)))
    if np.any(sizes == 0) or det <= 1e-6 * float(np.prod(sizes)):
        raise QMRIInputError(
            f"the {which} is singular (determinant {det:.3g}, voxel sizes "
            f"{', '.join(f'{v:.3g}' for v in sizes)} mm): its voxel axes span no volume, so "
            "voxels have no place in space",
            path,
        )
    unit = axes / sizes
    cosines = np.abs(unit.T @ unit - np.eye(3))
    i, j = np.unravel_index(int(np.argmax(cosines)), cosines.shape)
    if cosines[i, j] > SHEAR_TOLERANCE:
        angle = math.degrees(math.acos(float(np.clip(unit[:, i] @ unit[:, j], -1.0, 1.0))))
        raise QMRIInputError(
            f"the {which} is sheared: voxel axes {i} and {j} meet at {angle:.2f} deg, not 90; "
            "qmri needs perpendicular voxel axes (resample the image onto an orthogonal grid)",
            path,
        )
    sform_code, qform_code = int(header["sform_code"]), int(header["qform_code"])
    if sform_code > 0 and qform_code > 0:
        with np.errstate(all="ignore"):
            qform = np.asarray(header.get_qform(), dtype=np.float64)
        nx, ny, nz = (*img.shape[:3], 1, 1)[:3]
        corners = np.array(
            [[x, y, z, 1.0] for x in (0, nx - 1) for y in (0, ny - 1) for z in (0, nz - 1)]
        )
        apart = float(np.max(np.linalg.norm((corners @ (qform - affine).T)[:, :3], axis=1)))
        tol = QFORM_SFORM_TOLERANCE * float(np.min(sizes))
        if not np.isfinite(apart) or apart > tol:
            raise QMRIInputError(
                f"qform (code {qform_code}) and sform (code {sform_code}) disagree: they place "
                f"voxels up to {apart:.3g} mm apart (tolerance {tol:.3g} mm, a tenth of a "
                "voxel); make them agree (e.g. fslorient -copysform2qform) or set the code of "
                "the wrong one to 0",
                path,
            )


class _Notes(logging.Filter):
    """Keeps the header fixes nibabel reports (``pixdim[1,2,3] should be non-zero; setting 0
    dims to 1``) off stderr: :func:`load_nifti` logs them at INFO and refuses the ones that
    matter from the raw header."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        self.messages.append(record.getMessage())
        return False


@contextlib.contextmanager
def nibabel_notes(path: Path) -> Iterator[None]:
    logger = logging.getLogger("nibabel.global")
    notes = _Notes()
    logger.addFilter(notes)
    try:
        yield
    finally:
        logger.removeFilter(notes)
        for message in notes.messages:
            log.info("%s: nibabel: %s", path, message)


def unreadable_reason(path: Path, exc: BaseException) -> str:
    """Why nibabel could not read ``path``: a truncated or corrupt gzip stream, a name that
    promises gzip, no NIfTI header, or nibabel's own reason."""
    reason = one_line(exc).replace(str(path), path.name)
    if not path.is_file():
        return f"not a readable NIfTI image ({reason})"
    gzipped = is_gzip(path)
    if gzipped:
        _gzip_length(path, 2**62)  # raises for a truncated or corrupt stream
    with gzip.open(path, "rb") if gzipped else open(path, "rb") as fh:
        head = fh.read(4)
    sizes = (
        {int.from_bytes(head, "little"), int.from_bytes(head, "big")} if len(head) == 4 else set()
    )
    nifti = bool(sizes & {348, 540})
    if not gzipped and path.name.endswith(".gz"):
        if nifti:
            return (
                "not a readable NIfTI image (named .gz but not gzip-compressed: an "
                "uncompressed NIfTI; rename it .nii)"
            )
        return (
            "not a readable NIfTI image (named .gz but not gzip-compressed, and no NIfTI header)"
        )
    if not nifti:
        return (
            "not a readable NIfTI image (no NIfTI header: the first 4 bytes are not the header "
            "size of NIfTI-1, 348, or NIfTI-2, 540)"
        )
    return f"not a readable NIfTI image ({reason})"


def is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == _GZIP_MAGIC
