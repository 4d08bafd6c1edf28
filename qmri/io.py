"""Reading and atomic writing of NIfTI images, JSON sidecars and CSV tables.

Every writer goes through :func:`atomic_output`: the file is written under a temporary name in
the destination folder and renamed into place, so an interrupted run never leaves a truncated
output that a rerun would mistake for a finished one. Inputs are only ever read.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nibabel as nib
import numpy as np

from qmri.errors import QMRIInputError

if TYPE_CHECKING:  # pandas is imported by the functions that write tables
    import pandas as pd

#: Float format of every CSV qmri writes: 6 significant digits, enough for T1 in s (0.5523) and
#: ADC in mm^2/s (0.000891), and identical bytes for identical inputs.
CSV_FLOAT_FORMAT = "%.6g"


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
    """Load a NIfTI image, turning unreadable files into a one-line :class:`QMRIInputError`.

    Parameters
    ----------
    path : str or Path
        NIfTI file (``.nii`` or ``.nii.gz``).
    ndim : int or tuple of int, optional
        Accepted number(s) of dimensions; anything else is an error.
    """
    path = Path(path)
    if not path.exists():
        raise QMRIInputError("file not found", path)
    try:
        img = nib.load(str(path))
    except Exception as exc:  # noqa: BLE001 (nibabel raises many types for corrupt files)
        raise QMRIInputError(f"not a readable NIfTI image ({exc})", path) from None
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if img.ndim not in allowed:
            want = " or ".join(f"{n}D" for n in allowed)
            raise QMRIInputError(f"expected a {want} image, got shape {img.shape}", path)
    return img


def read_data(img: nib.Nifti1Image) -> np.ndarray:
    """Return the scaled image data as float64 (scaling slope and intercept applied)."""
    return np.asarray(img.dataobj, dtype=np.float64)


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


def read_json(path: str | Path) -> dict[str, Any]:
    """Read a JSON file into a dict; a missing or malformed file is a :class:`QMRIInputError`."""
    path = Path(path)
    if not path.exists():
        raise QMRIInputError("JSON sidecar not found", path)
    try:
        with open(path, encoding="utf-8") as fh:
            value = json.load(fh)
    except json.JSONDecodeError as exc:
        raise QMRIInputError(f"invalid JSON ({exc.msg} at line {exc.lineno})", path) from None
    if not isinstance(value, dict):
        raise QMRIInputError("JSON sidecar must hold an object", path)
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
