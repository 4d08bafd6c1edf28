"""Steps ``register_session`` and the registration half of each series' first fit.

A session's reference anatomy is registered to the baseline reference (rigid, mutual
information, optionally focused on the treated levels), and each series to its session's
reference; every transform is an ITK text file with a JSON sidecar (metric, its bound, whether
it is flagged) and a checkerboard PNG. The registration itself is :mod:`qmri.registration`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from qmri import bids, labels, rois, tables
from qmri.errors import QMRIInputError
from qmri.io import load_nifti, read_data, sidecar_path, write_json
from qmri.preprocess import reference_volume
from qmri.provenance import software
from qmri.qc import registration_checkerboard
from qmri.registration import (
    identity_transform,
    nifti_to_sitk,
    register_file,
    rigid_options,
    transform_sidecar,
    write_transform,
)

__all__ = ["register_series", "register_session"]


def _treated_region(
    dseg: Path, participants: Path, subject: str, base: nib.Nifti1Image
) -> np.ndarray:
    table = labels.read_dseg_tsv(Path(str(dseg).replace(".nii.gz", ".tsv")))
    img = load_nifti(dseg, ndim=3)
    if img.shape != base.shape or not np.allclose(img.affine, base.affine, atol=1e-3):
        raise QMRIInputError("label grid does not match the baseline reference", dseg)
    zooms = np.linalg.norm(img.affine[:3, :3], axis=0)
    return rois.treated_region_mask(
        np.asarray(img.dataobj),
        table,
        tables.treated_levels(participants, subject),
        voxel_size_mm=zooms,
    )


def register_series(
    *,
    series: bids.Series,
    kind: bids.SeriesKind,
    reference: Path,
    registration: Mapping[str, Any],
    out_xfm: Path,
    checkerboard: Path,
) -> Path:
    """Register a series to its session's reference (rigid, mutual information).

    The series is represented by the volume it is motion-corrected to
    (:func:`qmri.preprocess.reference_volume`): the fitted maps sit in that volume's position.
    Series of one session share the scanner frame, so the registration starts at identity. A
    final metric above ``registration["max_metric"]`` is flagged in the transform's sidecar
    (and the registration table), not silently used.
    """
    data = reference_volume(series, kind)
    ref = load_nifti(reference, ndim=3)
    moving = nifti_to_sitk(nib.Nifti1Image(data.astype(np.float32), series.affine))
    options = rigid_options(registration)
    res = register_file(reference, nifti_to_sitk(ref), moving, series.sources[0], options)
    write_transform(res.transform, out_xfm)
    sidecar = transform_sidecar(
        res, reference, list(series.sources), options, registration["max_metric"]
    )
    write_json(sidecar, sidecar_path(out_xfm))
    registration_checkerboard(
        read_data(ref), ref.affine, data, series.affine, res.matrix_ras, checkerboard,
        title=f"{kind.name} on {Path(reference).name}",
    )  # fmt: skip
    return out_xfm


def register_session(
    *,
    subject: str,
    reference: Path,
    baseline_reference: Path,
    registration: Mapping[str, Any],
    focus_labels: Path | None,
    participants: Path | None,
    out_xfm: Path,
    checkerboard: Path,
) -> Path:
    """Register a session's reference to the baseline reference (identity for the baseline).

    With ``focus_labels`` (config ``registration.focus: treated_levels``) the metric is
    restricted to the region around the treated levels of the baseline labels
    (:func:`qmri.rois.treated_region_mask`): the spine bends between visits and the treated
    level is what must be aligned.
    """
    base = load_nifti(baseline_reference, ndim=3)
    options = rigid_options(registration)
    if Path(reference).resolve() == Path(baseline_reference).resolve():
        write_transform(identity_transform(), out_xfm)
        write_json(
            {"Type": "identity", "FixedImage": str(baseline_reference), "Flagged": False,
             **software()},
            sidecar_path(out_xfm),
        )  # fmt: skip
        matrix = np.eye(4)
    else:
        opts = dict(options)
        if focus_labels is not None:
            import SimpleITK as sitk

            if participants is None:
                raise QMRIInputError("a focused registration needs participants.tsv", focus_labels)
            mask = _treated_region(focus_labels, participants, subject, base).astype(np.float32)
            opts["fixed_mask"] = sitk.Cast(nifti_to_sitk(base, mask), sitk.sitkUInt8)
        moving_img = load_nifti(reference, ndim=3)
        res = register_file(
            baseline_reference, nifti_to_sitk(base), nifti_to_sitk(moving_img), reference, opts
        )
        write_transform(res.transform, out_xfm)
        side = transform_sidecar(
            res, baseline_reference, [reference], options, registration["max_metric"]
        )
        side["MetricRegion"] = (
            "treated levels +/- 1 (baseline labels)" if focus_labels else "whole image"
        )
        write_json(side, sidecar_path(out_xfm))
        matrix = res.matrix_ras
    moving_img = load_nifti(reference, ndim=3)
    registration_checkerboard(
        read_data(base), base.affine, read_data(moving_img), moving_img.affine, matrix,
        checkerboard, title=f"{Path(reference).name} on the baseline",
    )  # fmt: skip
    return out_xfm
