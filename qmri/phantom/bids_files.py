"""File formats of the phantom dataset: text, TSV, label maps (dseg + tsv), the scaled B1 map.

Writers are atomic (:func:`qmri.io.atomic_output`); :func:`read_tsv` reads back what
:func:`write_tsv` writes, so the phantom can read its own tables without qmri's readers.
"""

from __future__ import annotations

import gzip
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from qmri.errors import QMRIInputError
from qmri.io import atomic_output, save_nifti, sidecar_path, write_json

__all__ = ["read_tsv", "save_b1", "write_dseg", "write_text", "write_tsv"]


def write_text(text: str, path: Path) -> None:
    """Write UTF-8 text atomically (parent folders are created)."""
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_tsv(rows: Sequence[Sequence[Any]], columns: Sequence[str], path: Path) -> None:
    """Write a BIDS TSV: floats as ``%.6g``, None as ``n/a``, a final newline."""

    def fmt(v: Any) -> str:
        if v is None:
            return "n/a"
        if isinstance(v, float):
            return f"{v:.6g}"
        return str(v)

    lines = ["\t".join(columns)] + ["\t".join(fmt(v) for v in row) for row in rows]
    write_text("\n".join(lines) + "\n", path)


def save_b1(percent: np.ndarray, affine: np.ndarray, path: Path, sidecar: dict) -> None:
    """Write a B1 map (percent) as int16 with NIfTI scaling: value = stored x 0.1 percent."""
    slope = 0.1
    raw = np.clip(np.rint(percent / slope), 0, np.iinfo(np.int16).max).astype(np.int16)
    img = nib.Nifti1Image(raw, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_qform(affine, code=1)
    img.header.set_sform(affine, code=1)
    blob = img.to_bytes()
    header = nib.Nifti1Header(blob[:348])
    header["scl_slope"] = slope
    header["scl_inter"] = 0.0
    with atomic_output(path) as tmp:
        tmp.write_bytes(gzip.compress(header.binaryblock + blob[348:], mtime=0))
    write_json(sidecar, sidecar_path(path))


def read_tsv(path: Path, required: Sequence[str] = ()) -> list[dict[str, str]]:
    """Read a tab-separated table with a header line into one dict (column -> text) a row.

    Parameters
    ----------
    path : Path
        The table.
    required : sequence of str
        Columns the header must have.

    Raises
    ------
    QMRIInputError
        Naming the file, if it cannot be read, is empty, lacks a required column or has a row
        of another width than the header.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise QMRIInputError(f"cannot read the table ({err.strerror})", path) from err
    if not lines:
        raise QMRIInputError("empty table, expected a header line", path)
    columns = lines[0].split("\t")
    missing = [c for c in required if c not in columns]
    if missing:
        raise QMRIInputError(f"missing column(s) {', '.join(missing)}", path)
    rows = []
    for n, line in enumerate(lines[1:], start=2):
        cells = line.split("\t")
        if len(cells) != len(columns):
            raise QMRIInputError(
                f"line {n} has {len(cells)} cells, the header {len(columns)}", path
            )
        rows.append(dict(zip(columns, cells, strict=True)))
    return rows


def write_dseg(data: np.ndarray, affine: np.ndarray, names: Mapping[int, str], path: Path) -> None:
    """Write a label map (int16 ``*_dseg.nii.gz``) and its ``index``/``name`` table (``.tsv``)."""
    save_nifti(data, affine, path, dtype=np.int16)
    rows = [(index, name) for index, name in sorted(names.items())]
    write_tsv(rows, ("index", "name"), path.with_name(path.name.replace(".nii.gz", ".tsv")))
