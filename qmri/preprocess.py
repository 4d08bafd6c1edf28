"""Preparing a loaded series for its fit: motion correction, B1 and T1 on its grid, DCE inputs.

File-level glue between :mod:`qmri.bids` (loaded series), :mod:`qmri.motion`,
:mod:`qmri.registration` (transforms between the grids of a session) and the models. The fit
step and the QC figures call the same functions here, so a figure shows the data as it was
fitted (:func:`dce_inputs`: the same concentration, T1 lookup and AIF).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from scipy.ndimage import binary_erosion

from qmri import bids, motion
from qmri.errors import QMRIInputError
from qmri.io import load_nifti, read_data
from qmri.labels import read_dseg_tsv
from qmri.models.dce import DCEInputs, detect_baseline_frames, prepare_dce
from qmri.registration import (
    pull_back_labels,
    resample_linear,
    resample_nearest,
    series_to_baseline_matrix,
    series_to_series_matrix,
)
from qmri.registry import FitRequest

log = logging.getLogger("qmri")

__all__ = [
    "apply_motion",
    "artery_mask",
    "baseline_frames",
    "correct_motion",
    "dce_inputs",
    "load_b1_on_grid",
    "reference_volume",
]


def baseline_frames(series: bids.Series) -> int:
    """Pre-contrast frames of a DCE series: ``BaselineFrames`` of the sidecar, else detected
    from the bolus arrival on the mean signal of the whole series
    (:func:`qmri.models.dce.detect_baseline_frames`)."""
    given = series.parameters.get("BaselineFrames")
    if given is not None:
        return int(given)
    curve = np.nanmean(series.data.reshape(-1, series.data.shape[-1]), axis=0)
    return detect_baseline_frames(series.parameters["FrameTimes"], curve)


def reference_volume(series: bids.Series, kind: bids.SeriesKind) -> np.ndarray:
    """The volume a series is motion-corrected and registered to (its kind's rule)."""
    options = {}
    if kind.motion_reference == "low_b_mean":
        options["bvals"] = series.parameters["bvals"]
    elif kind.motion_reference == "baseline_mean":
        options["baseline_frames"] = baseline_frames(series)
    return motion.series_reference_volume(series.data, kind.motion_reference, **options)


def correct_motion(
    series: bids.Series, kind: bids.SeriesKind, out_xfm: Path, out_trace: Path
) -> np.ndarray:
    """Motion-correct a series within itself (rigid, mutual information) before its fit.

    Every volume is registered to the series' own reference (:func:`reference_volume`) and
    resampled once onto the series grid; the transforms (ITK) and the displacement trace (TSV,
    mm) are written to ``out_xfm`` and ``out_trace``. Voxels that move out of the field of view
    become NaN and fail their fit.
    """
    mc = motion.motion_correct(
        series.data, series.affine, reference_volume(series, kind), source=series.sources[0]
    )
    motion.write_motion(mc, out_xfm, out_trace)
    log.info(
        "%s: motion corrected, largest mean displacement %.2f mm",
        Path(series.sources[0]).name, float(np.nanmax(mc.displacement_mm)),
    )  # fmt: skip
    return mc.corrected


def apply_motion(series: bids.Series, moco_xfm: Path) -> np.ndarray:
    """The series resampled with motion-correction transforms written earlier (no new
    registration: a second fit of the same series reuses the first one's transforms)."""
    return motion.resample_series(series.data, series.affine, motion.read_motion(moco_xfm))


def load_b1_on_grid(
    b1_path: Path, shape: tuple[int, ...], affine: np.ndarray
) -> tuple[np.ndarray, str]:
    """Load a TB1map as a flip-angle ratio on another grid of the same session.

    The B1 map and the series share the scanner frame (same session, same position), so the
    map is resampled by world coordinates (trilinear); voxels outside its field of view get
    NaN and therefore fail the fit rather than being silently given the nominal angle.
    Returns the ratio map and the convention detected in the file (``percent`` or ``ratio``).
    """
    img = load_nifti(b1_path, ndim=3)
    ratio, convention = bids.b1_ratio(read_data(img), b1_path)
    if img.shape == tuple(shape) and np.allclose(img.affine, affine, atol=1e-3):
        return ratio, convention
    return resample_linear(ratio, img.affine, tuple(shape), affine), convention


def artery_mask(
    dseg: Path, shape: tuple[int, ...], affine: np.ndarray, grid_to_dseg_ras: np.ndarray
) -> np.ndarray:
    """The ``aorta`` label(s) of a label map on another grid, eroded by one voxel if possible.

    Nearest-neighbour lookup through ``grid_to_dseg_ras`` (a grid point to the label map's
    frame). The one-voxel erosion keeps the AIF away from the vessel wall, where partial volume
    with the surrounding tissue lowers and delays the peak; it is skipped when fewer than 4
    voxels would remain. A label map without an ``aorta`` label is an error naming the file.
    """
    table = read_dseg_tsv(Path(str(dseg).replace(".nii.gz", ".tsv")))
    ids = [i for i, label in table.items() if label.structure == "aorta"]
    if not ids:
        raise QMRIInputError("no 'aorta' label for a measured AIF", dseg)
    img = load_nifti(dseg, ndim=3)
    labels = np.asarray(img.dataobj, dtype=np.int32)
    native = pull_back_labels(labels, img.affine, tuple(shape), affine, grid_to_dseg_ras)
    mask = np.isin(native, ids)
    if not mask.any():
        raise QMRIInputError("the 'aorta' label is outside the DCE field of view", dseg)
    eroded = binary_erosion(mask)
    return eroded if eroded.sum() >= 4 else mask


def dce_inputs(request: FitRequest) -> DCEInputs:
    """Concentration, AIF and bolus arrival of a session's DCE series, as the fit uses them.

    The VFA T1 map (``request.inputs["t1"]``) is brought onto the DCE grid through the two
    series transforms (``t1_xfm`` and the DCE series' own) by nearest neighbour: T1 enters the
    conversion of every frame, and an interpolated T1 at a tissue border (tumour 1.2 s next to
    treated marrow 0.5 s) belongs to no tissue and biases the concentration of every border
    voxel (trilinear gave the phantom's tumour ve +14 % at follow-up, nearest neighbour +1 %).
    Voxels where T1 is unknown (NaN) are not fitted. With ``dce.aif: aorta`` the AIF is the
    mean blood curve in the baseline ``aorta`` label (:func:`artery_mask`), else Parker's
    population AIF at the bolus arrival detected in the data.
    """
    series, options = request.series, request.options
    p = series.parameters
    shape, affine = series.data.shape[:3], series.affine
    t1_img = load_nifti(request.inputs["t1"], ndim=3)
    to_t1 = series_to_series_matrix(request.series_xfm, request.inputs["t1_xfm"])
    t1 = resample_nearest(read_data(t1_img), t1_img.affine, shape, affine, to_t1, fill=np.nan)
    aif_mask = None
    if "labels" in request.inputs:
        to_baseline = series_to_baseline_matrix(request.series_xfm, request.inputs["session_xfm"])
        aif_mask = artery_mask(request.inputs["labels"], shape, affine, to_baseline)
    return prepare_dce(
        request.data, p["FrameTimes"], concentration=False, t1_s=t1,
        flip_angle_deg=p["FlipAngle"], tr_s=p["RepetitionTimeExcitation"], b1=request.b1,
        baseline_frames=baseline_frames(series), r1=options["r1"], agent=p["ContrastAgent"],
        field_strength_t=p["MagneticFieldStrength"],
        aif="parker" if aif_mask is None else "measured", hematocrit=options["hematocrit"],
        bolus_arrival_s=None, aif_mask=aif_mask, mask=np.isfinite(t1),
    )  # fmt: skip
