"""The derived-ROI mask file: written once per subject, read back on any grid of any session.

The ROIs of :func:`qmri.rois.derive_rois` are stored as one 4D uint8 mask on the baseline
reference grid (``sub-S_space-baseline_desc-rois_mask.nii.gz``), one volume per ROI, with
their names in a ``.tsv`` beside it (``index``, ``roi``). Every statistic, figure and dose
table takes the ROIs from there; :func:`rois_on_grid` pulls them back onto a map's native grid
through the composed transforms in one nearest-neighbour lookup, so no map is interpolated
before it is measured.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qmri.errors import QMRIInputError
from qmri.io import atomic_output, load_nifti, save_nifti
from qmri.registration import pull_back_labels, series_to_baseline_matrix
from qmri.rois import rois_to_4d

__all__ = ["names_path", "read_roi_names", "read_rois", "rois_on_grid", "write_rois"]


def names_path(mask_path: str | Path) -> Path:
    """The ROI-name table beside a mask (``.nii.gz`` -> ``.tsv``)."""
    return Path(str(mask_path).replace(".nii.gz", ".tsv"))


def write_rois(
    rois: Mapping[str, np.ndarray],
    affine: np.ndarray,
    path: str | Path,
    *,
    sidecar: Mapping[str, Any],
) -> Path:
    """Write ROI masks as one 4D uint8 image (volume order = ``rois`` order) and its name table."""
    stack, names = rois_to_4d(rois)
    save_nifti(stack, affine, path, dtype=np.uint8, sidecar=sidecar)
    text = "index\troi\n" + "".join(f"{i}\t{name}\n" for i, name in enumerate(names))
    with atomic_output(names_path(path)) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def read_roi_names(mask_path: str | Path) -> list[str]:
    """ROI names of a mask, in volume order."""
    path = names_path(mask_path)
    if not path.exists():
        raise QMRIInputError("ROI name table not found", path)
    rows = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()[1:]]
    return [row[1] for row in rows if len(row) == 2]


def _load(mask_path: str | Path) -> tuple[Any, list[str]]:
    img = load_nifti(mask_path, ndim=4)
    names = read_roi_names(mask_path)
    if len(names) != img.shape[3]:
        raise QMRIInputError(
            f"{len(names)} ROI names for {img.shape[3]} volumes", names_path(mask_path)
        )
    return img, names


def read_rois(mask_path: str | Path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The ROIs on the baseline grid (name -> bool mask) and that grid's affine."""
    img, names = _load(mask_path)
    data = np.asarray(img.dataobj, dtype=bool)
    return {name: data[..., i] for i, name in enumerate(names)}, img.affine


def rois_on_grid(
    mask_path: str | Path,
    shape: Sequence[int],
    affine: np.ndarray,
    series_xfm: str | Path | None,
    session_xfm: str | Path,
) -> dict[str, np.ndarray]:
    """The baseline ROI masks on a map's native grid (nearest neighbour, one lookup).

    ``series_xfm`` is the map's ``from-<series>_to-ref`` transform (None for the session
    reference's own grid), ``session_xfm`` its session's ``from-ref_to-baseline``.
    """
    img, names = _load(mask_path)
    native = pull_back_labels(
        np.asarray(img.dataobj, dtype=np.uint8),
        img.affine,
        tuple(shape),
        affine,
        series_to_baseline_matrix(series_xfm, session_xfm),
    )
    return {name: native[..., i].astype(bool) for i, name in enumerate(names)}
