"""Reading and atomic writing of NIfTI images, JSON sidecars and CSV tables.

Every writer goes through :func:`atomic_output`: the file is written under a temporary name in
the destination folder and renamed into place, so an interrupted run never leaves a truncated
output that a rerun would mistake for a finished one. Inputs are only ever read.

Readers check what they read from the header alone (no voxel data), so a bad file is one
:class:`~qmri.errors.QMRIInputError` line naming it, before anything is allocated
(``docs/robustness.md`` lists every case):

* :func:`load_nifti`: the header's claim (dimensions x bytes per voxel) against the file: an
  uncompressed file must hold every byte the header claims; a gzip file cannot hold more than
  :data:`~qmri.nifti_checks.DEFLATE_MAX_RATIO` times its size, and its trailer (uncompressed length modulo 2**32)
  must agree, else the stream is decompressed once, in constant memory, to count; an image of
  more than :func:`~qmri.nifti_checks.max_image_bytes` as float64 (default 16 GiB, environment variable
  ``QMRI_MAX_IMAGE_GIB``) is refused. The affine must be finite, non-singular and free of
  shear, and a qform and sform that are both set must agree (:data:`~qmri.nifti_checks.QFORM_SFORM_TOLERANCE`).
* :func:`read_json`: the acquisition fields of :data:`SIDECAR_RANGES` must be numbers (or lists
  of numbers) in their BIDS unit and plausible range, ``VolumeTiming`` increasing over less
  than an hour: an echo time in ms (10 for 0.010 s) is an error, not a silent T2 in ks.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import math
import os
import tempfile
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nibabel as nib
import numpy as np
from nibabel.arrayproxy import ArrayProxy

from qmri.errors import QMRIInputError
from qmri.nifti_checks import (
    check_affine,
    check_size,
    is_gzip,
    nibabel_notes,
    one_line,
    unreadable_reason,
)

if TYPE_CHECKING:  # pandas is imported by the functions that write tables
    import pandas as pd

#: Float format of every CSV qmri writes: 6 significant digits, enough for T1 in s (0.5523) and
#: ADC in mm^2/s (0.000891), and identical bytes for identical inputs.
CSV_FLOAT_FORMAT = "%.6g"


log = logging.getLogger("qmri")

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` if the block succeeds.

    Parameters
    ----------
    path : str or Path
        Final destination. Its parent folder is created if needed.

    Yields
    ------
    Path
        Temporary file to write to (same folder and same suffixes as ``path``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name.split('.')[0]}.", suffix=suffix, dir=path.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the usual mode
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def load_nifti(path: str | Path, *, ndim: int | tuple[int, ...] | None = None) -> nib.Nifti1Image:
    """Load a NIfTI image (header only), turning bad files into a one-line
    :class:`QMRIInputError`.

    The header is checked against the file before any voxel data is read: the voxel data it
    claims must be in the file (see the module notes for gzip), the image must not exceed
    :func:`~qmri.nifti_checks.max_image_bytes` as float64, the voxel type must be a real number, the affine must
    be finite, non-singular and without shear, and a qform and an sform that are both set must
    agree within :data:`QFORM_SFORM_TOLERANCE` of a voxel.

    Parameters
    ----------
    path : str or Path
        NIfTI file (``.nii`` or ``.nii.gz``).
    ndim : int or tuple of int, optional
        Accepted number(s) of dimensions; anything else is an error.

    Returns
    -------
    nibabel.Nifti1Image
        The image, its voxel data not yet read (:func:`read_data`).
    """
    path = Path(path)
    if not path.exists():
        raise QMRIInputError("file not found", path)
    if path.is_file() and path.stat().st_size == 0:
        raise QMRIInputError("empty file (0 bytes): not a NIfTI image", path)
    try:
        with nibabel_notes(path):
            img = nib.load(str(path))
    except Exception as exc:  # noqa: BLE001 (nibabel raises many types for corrupt files)
        raise QMRIInputError(unreadable_reason(path, exc), path) from None
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise QMRIInputError(f"not a NIfTI image ({type(img).__name__})", path)
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if img.ndim not in allowed:
            want = " or ".join(f"{n}D" for n in allowed)
            raise QMRIInputError(f"expected a {want} image, got shape {img.shape}", path)
    check_size(img, path)
    check_affine(img, path)
    return img


def read_data(img: nib.Nifti1Image) -> np.ndarray:
    """Return the scaled image data as float64 (``scl_slope`` and ``scl_inter`` applied).

    A gzip file is read to the end of its stream, so that its CRC-32 and length are checked:
    nibabel stops after the last voxel, and a damaged stream would otherwise give wrong voxel
    values without a word. The voxels are decoded by nibabel as usual (same values, same peak
    memory: the stored bytes and the float64 array).

    Parameters
    ----------
    img : nibabel.Nifti1Image
        An image from :func:`load_nifti` (or one built in memory).

    Returns
    -------
    ndarray of float64
        Stored value x ``scl_slope`` + ``scl_inter`` (no scaling when the slope is 0 or not
        finite, as the NIfTI standard and nibabel read it).

    Raises
    ------
    QMRIInputError
        Naming the file, when its voxel data cannot be read: a corrupt or truncated compressed
        stream, or a CRC-32 that disagrees with the data.
    """
    proxy = img.dataobj
    filename = img.get_filename()
    try:
        if isinstance(proxy, ArrayProxy) and filename is not None and is_gzip(Path(filename)):
            spec = (proxy.shape, proxy.dtype, proxy.offset, proxy.slope, proxy.inter)
            with gzip.open(filename, "rb") as fh, np.errstate(invalid="ignore", over="ignore"):
                data = np.asarray(ArrayProxy(fh, spec), dtype=np.float64)
                while fh.read(1 << 20):  # the rest of the stream: gzip checks CRC and length
                    pass
            return data
        return np.asarray(proxy, dtype=np.float64)
    except (EOFError, OSError, zlib.error, ValueError) as exc:
        raise QMRIInputError(
            f"cannot read the voxel data ({one_line(exc)}): damaged file", filename
        ) from None


def save_nifti(
    data: np.ndarray,
    affine: np.ndarray,
    path: str | Path,
    *,
    dtype: type | np.dtype = np.float32,
    sidecar: Mapping[str, Any] | None = None,
    xyzt_units: tuple[str, str] = ("mm", "sec"),
) -> Path:
    """Write ``data`` as a NIfTI image (and optionally its JSON sidecar), atomically.

    Parameters
    ----------
    data : ndarray
        Image data; cast to ``dtype``.
    affine : (4, 4) ndarray
        Voxel to world (RAS+, mm) transform.
    path : str or Path
        Destination ``.nii.gz`` (or ``.nii``).
    dtype : numpy dtype, default float32
        On-disk data type.
    sidecar : mapping, optional
        Written as JSON beside the image (same name, ``.json``).
    """
    path = Path(path)
    img = nib.Nifti1Image(np.asarray(data).astype(dtype, copy=False), affine)
    img.header.set_xyzt_units(*xyzt_units)
    img.header.set_qform(affine, code=1)
    img.header.set_sform(affine, code=1)
    with atomic_output(path) as tmp:
        nib.save(img, str(tmp))
    if sidecar is not None:
        write_json(sidecar, sidecar_path(path))
    return path


def sidecar_path(path: str | Path) -> Path:
    """Return the JSON sidecar path of a NIfTI file (``x.nii.gz`` -> ``x.json``)."""
    path = Path(path)
    name = path.name
    for ext in (".nii.gz", ".nii", ".tsv", ".bval", ".bvec"):
        if name.endswith(ext):
            return path.with_name(name[: -len(ext)] + ".json")
    return path.with_suffix(".json")


#: Plausible range of the acquisition fields qmri reads from sidecars, in the units BIDS gives
#: them: field -> (lowest, highest, unit, lowest excluded). A value outside is an error naming
#: the file, the field, the value and the unit: a time in ms (``EchoTime`` 10 for 0.010 s) is
#: refused, not fitted. ``EchoTime`` starts at 10 us for ultrashort-echo (UTE) bone imaging;
#: ``RepetitionTimeExcitation`` (the spacing of the excitations of a gradient-echo readout:
#: VFA, DCE, MP2RAGE) ends at 1 s, so that a TR of 4 ms written as 4 is caught.
SIDECAR_RANGES: dict[str, tuple[float, float, str, bool]] = {
    "EchoTime": (1e-5, 1.0, "s", False),
    "RepetitionTime": (1e-3, 30.0, "s", False),
    "RepetitionTimeExcitation": (1e-3, 1.0, "s", False),
    "InversionTime": (1e-3, 10.0, "s", False),
    "FlipAngle": (0.0, 180.0, "deg", True),
    "MagneticFieldStrength": (0.1, 12.0, "T", False),
}

#: Longest span of a sidecar's ``VolumeTiming`` (s): a series of more than an hour is a unit
#: error (frame times in ms).
MAX_VOLUME_TIMING_SPAN_S = 3600.0


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _as_number(value: Any) -> float | None:
    """A number, or a string holding one (``"10"``), as float; None for anything else."""
    if _is_number(value):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def check_sidecar(meta: Mapping[str, Any], path: str | Path) -> None:
    """Check the acquisition fields of a sidecar qmri reads: plausible range in their BIDS unit,
    frame timing in order.

    Every number (or string holding a number, ``"10"``) given for a field of
    :data:`SIDECAR_RANGES`, alone or in a list (a 4D series' sidecar may list one per volume),
    must be finite and inside its range; ``true``/``false`` is an error. A value that is not a
    number at all (``"three"``) is left to the reader that uses the field, which names the
    sidecar too. ``VolumeTiming`` must be a list of finite numbers (s), strictly increasing,
    over less than :data:`MAX_VOLUME_TIMING_SPAN_S`.

    Parameters
    ----------
    meta : mapping
        The sidecar's content.
    path : str or Path
        The sidecar, named in the error.

    Raises
    ------
    QMRIInputError
        Naming the file, the field, the value and the expected unit.
    """
    for key, (low, high, unit, open_low) in SIDECAR_RANGES.items():
        value = meta.get(key)
        if value is None:
            continue
        values = value if isinstance(value, list) else [value]
        for raw in values:
            if isinstance(raw, bool):
                raise QMRIInputError(
                    f"'{key}' must be a number or numbers ({unit}), got {raw!r}", path
                )
            item = _as_number(raw)
            if item is None:  # not a number at all: the reader that uses the field says so
                continue
            below = item <= low if open_low else item < low
            if not math.isfinite(item) or below or item > high:
                bound = f"{'above ' if open_low else ''}{low:g} to {high:g} {unit}"
                ms = unit == "s" and item > high
                hint = " (BIDS gives times in seconds: was it in ms?)" if ms else ""
                raise QMRIInputError(
                    f"'{key}' is {raw!r}, outside the plausible range {bound}{hint}", path
                )
    timing = meta.get("VolumeTiming")
    if timing is None:
        return
    if not isinstance(timing, list) or not all(_is_number(t) and math.isfinite(t) for t in timing):
        raise QMRIInputError("'VolumeTiming' must be a list of finite numbers (s)", path)
    for k in range(1, len(timing)):
        if timing[k] <= timing[k - 1]:
            raise QMRIInputError(
                f"'VolumeTiming' must increase: volume {k} at {timing[k]:g} s does not follow "
                f"volume {k - 1} at {timing[k - 1]:g} s",
                path,
            )
    if timing and timing[-1] - timing[0] >= MAX_VOLUME_TIMING_SPAN_S:
        raise QMRIInputError(
            f"'VolumeTiming' spans {timing[-1] - timing[0]:g} s, more than an hour "
            "(BIDS gives times in seconds: was it in ms?)",
            path,
        )


def read_json(path: str | Path) -> dict[str, Any]:
    """Read a JSON sidecar into a dict, its acquisition fields checked (:func:`check_sidecar`).

    Parameters
    ----------
    path : str or Path
        The ``.json`` file.

    Returns
    -------
    dict
        Its content.

    Raises
    ------
    QMRIInputError
        Naming the file: missing, not valid JSON (line and column), not an object, or an
        acquisition field of the wrong type or outside its plausible range.
    """
    path = Path(path)
    if not path.exists():
        raise QMRIInputError("JSON sidecar not found", path)
    try:
        with open(path, encoding="utf-8") as fh:
            value = json.load(fh)
    except json.JSONDecodeError as exc:
        raise QMRIInputError(
            f"invalid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})", path
        ) from None
    except UnicodeDecodeError as exc:
        raise QMRIInputError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", path) from None
    except OSError as exc:
        raise QMRIInputError(f"cannot read the file ({one_line(exc)})", path) from None
    if not isinstance(value, dict):
        raise QMRIInputError("JSON sidecar must hold an object", path)
    check_sidecar(value, path)
    return value


def write_json(obj: Mapping[str, Any], path: str | Path) -> Path:
    """Write ``obj`` as indented, key-sorted JSON, atomically."""
    path = Path(path)
    with atomic_output(path) as tmp:
        tmp.write_text(
            json.dumps(_jsonable(obj), indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
    return path


def write_csv(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a table as the data contract asks: comma, UTF-8, header, empty cell for missing.

    Floats are written with :data:`CSV_FLOAT_FORMAT` so that identical inputs give identical bytes.
    """
    path = Path(path)
    with atomic_output(path) as tmp:
        df.to_csv(
            tmp,
            index=False,
            na_rep="",
            float_format=CSV_FLOAT_FORMAT,
            lineterminator="\n",
            encoding="utf-8",
        )
    return path


def _jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays and paths inside ``obj`` to plain JSON types."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj
