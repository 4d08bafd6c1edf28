"""Planned dose (optional input): per-ROI dose statistics and dose-binned qMRI change.

The dose map is a 3D NIfTI in Gy on the *baseline reference grid* (the grid of the ROI labels):
``<dose_dir>/sub-<s>/sub-<s>_dose.nii.gz``. All functions but :func:`read_dose` work on arrays.

Definitions (one ROI, ``n`` voxels of volume ``v`` mL; 1 mL = 1 cm^3):

``D<V>cc`` (e.g. ``D0.03cc``)
    Minimum dose to the hottest ``V`` cm^3: with the ROI doses sorted in decreasing order, the
    dose of the ``k``-th voxel, ``k = ceil(V / v)`` (the fewest hottest voxels whose volume
    reaches ``V``). NaN when the ROI is smaller than ``V``.
``D<x>%`` (e.g. ``D2%``, ``D98%``)
    Minimum dose to the hottest ``x`` % of the ROI volume: the ``k``-th hottest voxel,
    ``k = ceil(x / 100 * n)`` (at least 1).
``V<x>Gy``
    Volume (mL) receiving at least ``x`` Gy.

EQD2 (equieffective dose in 2-Gy fractions, linear-quadratic model), per voxel::

    EQD2 = D * (d + a/b) / (2 Gy + a/b),   d = D / n

with ``D`` the voxel's physical dose (Gy), ``n`` the number of fractions (participants.tsv
``fractions``) and ``a/b`` the tissue's alpha/beta ratio (Gy). Defaults
(:data:`DEFAULT_ALPHA_BETA_GY`): 10 Gy for tumour (``tumor``, ``ctv``; early-responding tissue)
and 2 Gy for everything else (spinal cord and late effects in marrow and bone such as fracture:
late-responding tissue; 2 Gy is the usual value for cord myelopathy). The LQ model is known to
be uncertain at the high doses per fraction of SBRT; treat EQD2 bins as a convention.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from qmri.errors import QMRIInputError
from qmri.io import load_nifti, read_data

__all__ = [
    "DEFAULT_ALPHA_BETA_GY",
    "DEFAULT_DOSE_BIN_EDGES_GY",
    "DEFAULT_EQD2_BIN_EDGES_GY",
    "DOSE_BIN_COLUMNS",
    "DOSE_STAT_COLUMNS",
    "alpha_beta_for_roi",
    "d_cc",
    "d_percent",
    "dose_binned_change",
    "dose_path",
    "dose_statistics",
    "dose_table",
    "eqd2",
    "read_dose",
    "v_gy",
]

#: alpha/beta ratios (Gy) by ROI-name prefix; ``default`` for any other ROI.
DEFAULT_ALPHA_BETA_GY: dict[str, float] = {"tumor": 10.0, "ctv": 10.0, "default": 2.0}

#: Physical-dose bin edges (Gy); the last bin is open (``[40 Gy, inf)``).
DEFAULT_DOSE_BIN_EDGES_GY: tuple[float, ...] = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 40.0)

#: EQD2 bin edges (Gy); the last bin is open (``[150 Gy, inf)``). EQD2 exceeds the physical
#: dose above 2 Gy per fraction (24 Gy in 1 fraction is 156 Gy EQD2 at a/b = 2 Gy).
DEFAULT_EQD2_BIN_EDGES_GY: tuple[float, ...] = (
    0.0,
    10.0,
    20.0,
    30.0,
    40.0,
    60.0,
    80.0,
    100.0,
    150.0,
)

#: Columns of :func:`dose_table`, in order.
DOSE_STAT_COLUMNS: tuple[str, ...] = (
    "roi",
    "dose_scale",
    "alpha_beta_gy",
    "fractions",
    "n_voxels",
    "volume_ml",
    "mean_gy",
    "min_gy",
    "max_gy",
    "d0_03cc_gy",
    "d2pct_gy",
    "d50pct_gy",
    "d98pct_gy",
)

#: Columns of :func:`dose_binned_change`, in order.
DOSE_BIN_COLUMNS: tuple[str, ...] = (
    "dose_scale",
    "alpha_beta_gy",
    "fractions",
    "bin_lower_gy",
    "bin_upper_gy",
    "n_voxels",
    "volume_ml",
    "median_dose_gy",
    "median_baseline",
    "median_followup",
    "median_change",
    "mean_change",
    "median_pct_change",
)

_EPS = 1e-9


def eqd2(dose_gy: np.ndarray | float, fractions: float, alpha_beta_gy: float) -> np.ndarray:
    """Equieffective dose in 2-Gy fractions, ``D (D/n + a/b) / (2 + a/b)``, per voxel.

    Parameters
    ----------
    dose_gy : ndarray or float
        Physical dose D (Gy); NaN passes through.
    fractions : float
        Number of fractions n (> 0).
    alpha_beta_gy : float
        alpha/beta ratio (Gy, > 0).

    Returns
    -------
    ndarray of float
        EQD2 (Gy), same shape as ``dose_gy``.

    Raises
    ------
    ValueError
        If ``fractions`` or ``alpha_beta_gy`` is not a positive finite number.
    """
    if not (np.isfinite(fractions) and fractions > 0):
        raise ValueError(f"number of fractions must be positive, got {fractions!r}")
    if not (np.isfinite(alpha_beta_gy) and alpha_beta_gy > 0):
        raise ValueError(f"alpha/beta must be positive (Gy), got {alpha_beta_gy!r}")
    dose = np.asarray(dose_gy, dtype=np.float64)
    return dose * (dose / fractions + alpha_beta_gy) / (2.0 + alpha_beta_gy)


def alpha_beta_for_roi(roi: str, alpha_beta_gy: Mapping[str, float] | None = None) -> float:
    """alpha/beta (Gy) of a ROI: the longest matching name prefix, else ``default``.

    Parameters
    ----------
    roi : str
        ROI name (``"tumor"``, ``"cord_treated"``, ``"vb_treated_nontumor"``).
    alpha_beta_gy : mapping of str to float, optional
        Prefix -> alpha/beta (Gy) with a ``default`` entry; default
        :data:`DEFAULT_ALPHA_BETA_GY`.

    Raises
    ------
    KeyError
        If no prefix matches and there is no ``default``.
    """
    table = DEFAULT_ALPHA_BETA_GY if alpha_beta_gy is None else alpha_beta_gy
    matches = [k for k in table if k != "default" and roi.startswith(k)]
    if matches:
        return float(table[max(matches, key=len)])
    if "default" not in table:
        raise KeyError(f"no alpha/beta for ROI {roi!r} and no 'default' entry")
    return float(table["default"])


def _hottest(values: np.ndarray, k: int) -> float:
    """The k-th largest value (1-based) of a 1D array."""
    n = values.size
    return float(np.partition(values, n - k)[n - k])


def d_cc(dose_in_roi: np.ndarray, volume_cc: float, voxel_volume_ml: float) -> float:
    """Minimum dose (Gy) to the hottest ``volume_cc`` cm^3 of a ROI (e.g. D0.03cc).

    Parameters
    ----------
    dose_in_roi : ndarray
        Doses (Gy) of the ROI voxels; non-finite values are ignored.
    volume_cc : float
        Hot volume (cm^3 = mL), > 0.
    voxel_volume_ml : float
        Volume of one voxel (mL).

    Returns
    -------
    float
        The ``ceil(volume_cc / voxel_volume_ml)``-th hottest voxel dose; NaN if the ROI holds
        fewer voxels.
    """
    x = np.asarray(dose_in_roi, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    k = max(1, math.ceil(volume_cc / voxel_volume_ml - _EPS))
    return _hottest(x, k) if x.size >= k else float("nan")


def d_percent(dose_in_roi: np.ndarray, percent: float) -> float:
    """Minimum dose (Gy) to the hottest ``percent`` % of a ROI's volume (e.g. D2%).

    Parameters
    ----------
    dose_in_roi : ndarray
        Doses (Gy) of the ROI voxels; non-finite values are ignored.
    percent : float
        Share of the ROI volume, in % (0 < percent <= 100).

    Returns
    -------
    float
        The ``ceil(percent / 100 * n)``-th hottest voxel dose (at least the hottest); NaN for an
        empty ROI.
    """
    x = np.asarray(dose_in_roi, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    if x.size == 0:
        return float("nan")
    k = min(x.size, max(1, math.ceil(percent / 100.0 * x.size - _EPS)))
    return _hottest(x, k)


def v_gy(dose_in_roi: np.ndarray, threshold_gy: float, voxel_volume_ml: float) -> float:
    """Volume (mL) of a ROI receiving at least ``threshold_gy`` Gy."""
    x = np.asarray(dose_in_roi, dtype=np.float64).ravel()
    return float(np.count_nonzero(x >= threshold_gy) * voxel_volume_ml)


def dose_statistics(
    dose_gy: np.ndarray,
    roi: np.ndarray,
    voxel_volume_ml: float,
    *,
    hot_volume_cc: float = 0.03,
    v_thresholds_gy: Sequence[float] = (),
) -> dict[str, float | int]:
    """Dose statistics of one ROI.

    Parameters
    ----------
    dose_gy : ndarray
        Dose map (Gy), physical or EQD2.
    roi : ndarray of bool
        ROI mask, same shape.
    voxel_volume_ml : float
        Voxel volume (mL).
    hot_volume_cc : float, default 0.03
        Volume (cm^3) of the ``d0_03cc_gy`` statistic (the key keeps its name).
    v_thresholds_gy : sequence of float, optional
        Adds ``v<x>gy_ml`` (volume in mL receiving >= x Gy) for each.

    Returns
    -------
    dict
        ``n_voxels`` (int), ``volume_ml`` (mL), ``mean_gy``, ``min_gy``, ``max_gy``,
        ``d0_03cc_gy``, ``d2pct_gy``, ``d50pct_gy``, ``d98pct_gy`` (Gy; NaN for an empty ROI) and
        the ``v<x>gy_ml``. Non-finite dose voxels are ignored.

    Raises
    ------
    ValueError
        If the shapes differ or the voxel volume is not positive.
    """
    dose = np.asarray(dose_gy, dtype=np.float64)
    roi = np.asarray(roi, dtype=bool)
    if roi.shape != dose.shape:
        raise ValueError(f"ROI shape {roi.shape} differs from dose shape {dose.shape}")
    if not voxel_volume_ml > 0:
        raise ValueError(f"voxel volume must be positive, got {voxel_volume_ml}")
    x = dose[roi]
    x = x[np.isfinite(x)]
    nan = float("nan")
    out: dict[str, float | int] = {
        "n_voxels": int(np.count_nonzero(roi)),
        "volume_ml": float(np.count_nonzero(roi) * voxel_volume_ml),
        "mean_gy": float(np.mean(x)) if x.size else nan,
        "min_gy": float(np.min(x)) if x.size else nan,
        "max_gy": float(np.max(x)) if x.size else nan,
        "d0_03cc_gy": d_cc(x, hot_volume_cc, voxel_volume_ml),
        "d2pct_gy": d_percent(x, 2.0),
        "d50pct_gy": d_percent(x, 50.0),
        "d98pct_gy": d_percent(x, 98.0),
    }
    for t in v_thresholds_gy:
        out[f"v{float(t):g}gy_ml"] = v_gy(x, t, voxel_volume_ml)
    return out


def dose_table(
    dose_gy: np.ndarray,
    rois: Mapping[str, np.ndarray],
    voxel_volume_ml: float,
    *,
    fractions: float | None = None,
    alpha_beta_gy: Mapping[str, float] | None = None,
    hot_volume_cc: float = 0.03,
    v_thresholds_gy: Sequence[float] = (),
) -> pd.DataFrame:
    """Dose statistics of every ROI, in physical dose and (with ``fractions``) in EQD2.

    Parameters
    ----------
    dose_gy : ndarray
        Physical dose map (Gy) on the ROIs' grid.
    rois : mapping of str to ndarray of bool
        ROI name -> mask (e.g. from :func:`qmri.rois.derive_rois`).
    voxel_volume_ml : float
        Voxel volume (mL).
    fractions : float, optional
        Number of fractions; without it (or if missing/NaN) only physical rows are made.
    alpha_beta_gy : mapping of str to float, optional
        See :func:`alpha_beta_for_roi`.
    hot_volume_cc, v_thresholds_gy
        See :func:`dose_statistics`.

    Returns
    -------
    pandas.DataFrame
        :data:`DOSE_STAT_COLUMNS` (plus any ``v<x>gy_ml``); per ROI a ``physical`` row
        (``alpha_beta_gy`` empty) then an ``eqd2`` row, whose statistics are those of the
        voxelwise EQD2 map at the ROI's alpha/beta.
    """
    have_fx = fractions is not None and np.isfinite(fractions) and fractions > 0
    rows = []
    for name, mask in rois.items():
        stats = dose_statistics(
            dose_gy, mask, voxel_volume_ml, hot_volume_cc=hot_volume_cc,
            v_thresholds_gy=v_thresholds_gy,
        )  # fmt: skip
        rows.append(
            {"roi": name, "dose_scale": "physical", "alpha_beta_gy": np.nan,
             "fractions": fractions if have_fx else np.nan, **stats}
        )  # fmt: skip
        if have_fx:
            ab = alpha_beta_for_roi(name, alpha_beta_gy)
            stats = dose_statistics(
                eqd2(dose_gy, fractions, ab), mask, voxel_volume_ml,
                hot_volume_cc=hot_volume_cc, v_thresholds_gy=v_thresholds_gy,
            )  # fmt: skip
            rows.append(
                {"roi": name, "dose_scale": "eqd2", "alpha_beta_gy": ab,
                 "fractions": fractions, **stats}
            )  # fmt: skip
    extra = [f"v{float(t):g}gy_ml" for t in v_thresholds_gy]
    columns = [*DOSE_STAT_COLUMNS, *extra]
    out = pd.DataFrame(rows, columns=columns)
    out["n_voxels"] = out["n_voxels"].astype(np.int64)
    return out


def _bins(
    dose: np.ndarray,
    base: np.ndarray,
    follow: np.ndarray,
    edges: Sequence[float],
    voxel_volume_ml: float,
    scale: str,
    ab: float,
    fractions: float,
) -> list[dict[str, object]]:
    edges = [float(e) for e in edges]
    uppers = [*edges[1:], np.inf]
    rows = []
    for lo, hi in zip(edges, uppers, strict=True):
        sel = (dose >= lo) & (dose < hi)
        b, f, d = base[sel], follow[sel], dose[sel]
        ch = f - b
        pct = np.full_like(ch, np.nan)
        nz = b != 0
        np.divide(100.0 * ch, b, out=pct, where=nz)
        pct = pct[nz]
        n = int(sel.sum())
        rows.append(
            {
                "dose_scale": scale,
                "alpha_beta_gy": ab,
                "fractions": fractions,
                "bin_lower_gy": lo,
                "bin_upper_gy": hi,
                "n_voxels": n,
                "volume_ml": n * voxel_volume_ml,
                "median_dose_gy": float(np.median(d)) if n else np.nan,
                "median_baseline": float(np.median(b)) if n else np.nan,
                "median_followup": float(np.median(f)) if n else np.nan,
                "median_change": float(np.median(ch)) if n else np.nan,
                "mean_change": float(np.mean(ch)) if n else np.nan,
                "median_pct_change": float(np.median(pct)) if pct.size else np.nan,
            }
        )
    return rows


def dose_binned_change(
    baseline: np.ndarray,
    followup: np.ndarray,
    dose_gy: np.ndarray,
    roi: np.ndarray,
    *,
    voxel_volume_ml: float = 1.0,
    bin_edges_gy: Sequence[float] = DEFAULT_DOSE_BIN_EDGES_GY,
    eqd2_bin_edges_gy: Sequence[float] = DEFAULT_EQD2_BIN_EDGES_GY,
    fractions: float | None = None,
    alpha_beta_gy: float = 2.0,
    valid: np.ndarray | None = None,
) -> pd.DataFrame:
    """Median voxelwise change of a map per dose bin within a ROI, in Gy and in EQD2.

    Parameters
    ----------
    baseline, followup : ndarray
        The map at baseline and at a follow-up, on the dose grid (map units; NaN where the fit
        failed).
    dose_gy : ndarray
        Physical dose (Gy), same grid.
    roi : ndarray of bool
        ROI mask (e.g. ``cord_treated``, ``vb_treated_nontumor``).
    voxel_volume_ml : float, default 1.0
        Voxel volume (mL), for ``volume_ml``.
    bin_edges_gy : sequence of float, default :data:`DEFAULT_DOSE_BIN_EDGES_GY`
        Increasing physical-dose edges (Gy). Bins are ``[e_i, e_i+1)`` plus an open last bin
        ``[e_last, inf)``; voxels below the first edge are left out.
    eqd2_bin_edges_gy : sequence of float, default :data:`DEFAULT_EQD2_BIN_EDGES_GY`
        The same for EQD2 (Gy).
    fractions : float, optional
        Number of fractions; without it only the physical bins are made.
    alpha_beta_gy : float, default 2.0
        alpha/beta (Gy) of the ROI's tissue for EQD2 (2 Gy: cord and late effects; use
        :func:`alpha_beta_for_roi`).
    valid : ndarray of bool, optional
        Voxels to use besides the ROI (e.g. both fit masks); non-finite voxels of either map or
        the dose are always left out.

    Returns
    -------
    pandas.DataFrame
        :data:`DOSE_BIN_COLUMNS`: the ``physical`` bins then the ``eqd2`` bins; each row has the
        voxel count and volume (mL), the median dose (Gy, on the row's scale), the medians of
        the baseline and follow-up values and of the voxelwise change ``followup - baseline``
        (map units), its mean, and the median voxelwise percent change (%, voxels with a zero
        baseline left out). Empty bins have ``n_voxels`` 0 and empty statistics.

    Raises
    ------
    ValueError
        If shapes differ or the edges are not strictly increasing.
    """
    base = np.asarray(baseline, dtype=np.float64)
    follow = np.asarray(followup, dtype=np.float64)
    dose = np.asarray(dose_gy, dtype=np.float64)
    mask = np.asarray(roi, dtype=bool)
    for name, arr in (("follow-up map", follow), ("dose map", dose), ("ROI", mask)):
        if arr.shape != base.shape:
            raise ValueError(f"{name} shape {arr.shape} differs from baseline shape {base.shape}")
    for edges in (bin_edges_gy, eqd2_bin_edges_gy):
        if len(edges) < 1 or np.any(np.diff(np.asarray(edges, dtype=np.float64)) <= 0):
            raise ValueError(f"dose bin edges must be strictly increasing, got {list(edges)}")
    use = mask & np.isfinite(base) & np.isfinite(follow) & np.isfinite(dose)
    if valid is not None:
        use &= np.asarray(valid, dtype=bool)
    d, b, f = dose[use], base[use], follow[use]
    have_fx = fractions is not None and np.isfinite(fractions) and fractions > 0
    fx = float(fractions) if have_fx else np.nan
    rows = _bins(d, b, f, bin_edges_gy, voxel_volume_ml, "physical", np.nan, fx)
    if have_fx:
        rows += _bins(
            eqd2(d, fx, alpha_beta_gy), b, f, eqd2_bin_edges_gy, voxel_volume_ml, "eqd2",
            float(alpha_beta_gy), fx,
        )  # fmt: skip
    out = pd.DataFrame(rows, columns=list(DOSE_BIN_COLUMNS))
    out["n_voxels"] = out["n_voxels"].astype(np.int64)
    return out


def dose_path(dose_dir: str | Path, subject: str) -> Path:
    """Path of a subject's dose map: ``<dose_dir>/sub-<s>/sub-<s>_dose.nii.gz``."""
    label = str(subject).removeprefix("sub-")
    return Path(dose_dir) / f"sub-{label}" / f"sub-{label}_dose.nii.gz"


def read_dose(
    path: str | Path,
    reference_shape: Sequence[int],
    reference_affine: np.ndarray,
    *,
    atol_mm: float = 1e-3,
) -> np.ndarray:
    """Read a dose map (Gy) and check it lies on the baseline reference grid.

    Parameters
    ----------
    path : str or Path
        The dose NIfTI (3D, Gy), e.g. :func:`dose_path`.
    reference_shape : sequence of int
        Shape of the baseline reference grid (the ROI label image).
    reference_affine : (4, 4) ndarray
        Its voxel-to-world affine (mm).
    atol_mm : float, default 1e-3
        Tolerance on the affine entries (mm).

    Returns
    -------
    ndarray of float64
        The dose (Gy), NaN where not finite.

    Raises
    ------
    QMRIInputError
        One line naming the file: missing or unreadable, not 3D, a grid (shape or affine) that
        differs from the reference, or negative doses.
    """
    img = load_nifti(path, ndim=3)
    if tuple(img.shape) != tuple(reference_shape):
        raise QMRIInputError(
            f"dose grid {tuple(img.shape)} differs from the baseline reference grid "
            f"{tuple(reference_shape)}; resample the dose onto the baseline reference image",
            path,
        )
    if not np.allclose(img.affine, reference_affine, atol=atol_mm, rtol=0):
        raise QMRIInputError(
            "dose affine differs from the baseline reference affine (same shape, different "
            "position or voxel size); resample the dose onto the baseline reference image",
            path,
        )
    dose = read_data(img)
    dose[~np.isfinite(dose)] = np.nan
    finite = dose[np.isfinite(dose)]
    if finite.size and finite.min() < -1e-6:
        raise QMRIInputError(f"dose map has negative values (min {finite.min():.3g} Gy)", path)
    return dose
