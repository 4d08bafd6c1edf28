"""Parametric response maps (voxelwise change from baseline, functional-diffusion-map style).

For each voxel that is valid at baseline and at the follow-up (both maps on the baseline grid),
the change ``follow - baseline`` is classed as increased (> +threshold), decreased
(< -threshold) or stable. Per ROI, the fractions of the three classes summarise how much of
the region responded (Moffat et al., PNAS 2005; Galban et al., Nat Med 2009). The threshold is
in the map's own unit (e.g. 55e-6 mm^2/s for ADC, the 95% confidence interval of repeated
measurements in Moffat's work).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

#: Label values of the response image.
DECREASED, STABLE, INCREASED = 1, 2, 3


def response_classes(
    baseline: np.ndarray, follow_up: np.ndarray, valid: np.ndarray, threshold: float
) -> np.ndarray:
    """Class of every voxel: 0 (not valid at both), 1 decreased, 2 stable, 3 increased.

    Parameters
    ----------
    baseline, follow_up : ndarray
        The same parameter map at baseline and follow-up, on one grid (map units).
    valid : ndarray of bool
        Voxels whose fit succeeded at both timepoints.
    threshold : float
        Change (map units) beyond which a voxel counts as changed; must be >= 0.
    """
    if threshold < 0:
        raise ValueError("threshold must be >= 0")
    delta = follow_up - baseline
    ok = valid & np.isfinite(delta)
    out = np.zeros(baseline.shape, dtype=np.uint8)
    out[ok] = STABLE
    out[ok & (delta > threshold)] = INCREASED
    out[ok & (delta < -threshold)] = DECREASED
    return out


def erode_rois(rois: Mapping[str, np.ndarray], voxels: int) -> dict[str, np.ndarray]:
    """Erode every ROI by ``voxels`` (6-connected); 0 returns them unchanged.

    An ROI's edge voxels change class through partial volume and resampling alone, so
    voxelwise change is counted in the ROI's interior.
    """
    if voxels < 0:
        raise ValueError("voxels must be >= 0")
    if voxels == 0:
        return dict(rois)
    from scipy import ndimage

    structure = ndimage.generate_binary_structure(3, 1)
    return {
        name: ndimage.binary_erosion(mask, structure, iterations=voxels)
        for name, mask in rois.items()
    }


def response_fractions(
    classes: np.ndarray, rois: Mapping[str, np.ndarray]
) -> list[dict[str, float | int | str]]:
    """Per ROI: voxels with a valid change and the fractions increased / decreased / stable.

    An ROI with no valid voxel gets ``n_valid`` 0 and NaN fractions.
    """
    rows = []
    for roi, mask in rois.items():
        counts = np.bincount(classes[mask], minlength=4)[1:4]  # decreased, stable, increased
        n = int(counts.sum())
        fractions = counts / n if n else np.full(3, np.nan)
        rows.append(
            {
                "roi": roi,
                "n_voxels": int(np.count_nonzero(mask)),
                "n_valid": n,
                "fraction_increased": float(fractions[INCREASED - 1]),
                "fraction_decreased": float(fractions[DECREASED - 1]),
                "fraction_stable": float(fractions[STABLE - 1]),
            }
        )
    return rows
