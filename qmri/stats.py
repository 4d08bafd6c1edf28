"""ROI statistics of parameter maps (data contract, section 3: ``roistats.csv``).

Definitions (one ROI, one map):

``n_voxels``
    Voxels in the ROI mask on the map's grid (whatever the fit did there).
``volume_ml``
    ``n_voxels`` times the voxel volume in mL.
``valid_fraction``
    Share of ROI voxels whose fit succeeded: inside ``valid`` (the fit mask, if given) *and* with a
    finite value. NaN for an empty ROI.
``mean``, ``sd``, ``median``, ``p10``, ``p25``, ``p75``, ``p90``, ``iqr``
    Over the valid ROI voxels only; failed voxels are excluded, never counted as zero. ``sd`` is
    the sample standard deviation (``ddof=1``); percentiles use numpy's default (linear
    interpolation), ``median`` is the 50th percentile and ``iqr = p75 - p25``.
``skewness``, ``kurtosis``
    Bias-corrected sample skewness G1 and *excess* (Fisher) kurtosis G2, i.e.
    ``scipy.stats.skew(x, bias=False)`` and ``scipy.stats.kurtosis(x, fisher=True, bias=False)``,
    the estimators of SAS, SPSS, Excel and pandas (``Series.skew``, ``Series.kurt``). A normal
    distribution has kurtosis 0.

Missing values are NaN (an empty cell in the CSV): every statistic for an ROI without valid voxels,
``sd`` below 2 valid voxels, ``skewness`` and ``kurtosis`` below 4 valid voxels or when all valid
values are equal. None of these cases emits a warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy import stats as sps

__all__ = ["STAT_COLUMNS", "roi_statistics", "session_roistats"]

#: Statistic columns of ``roistats.csv``, in the contract's order.
STAT_COLUMNS: tuple[str, ...] = (
    "n_voxels",
    "volume_ml",
    "valid_fraction",
    "mean",
    "sd",
    "median",
    "p10",
    "p25",
    "p75",
    "p90",
    "iqr",
    "skewness",
    "kurtosis",
)

_PERCENTILES = (10.0, 25.0, 50.0, 75.0, 90.0)


def roi_statistics(
    values: np.ndarray,
    roi: np.ndarray,
    valid: np.ndarray | None = None,
    voxel_volume_ml: float = 1.0,
) -> dict[str, float | int]:
    """Summarise a parameter map inside one ROI.

    Parameters
    ----------
    values : ndarray
        Parameter map (NaN where the fit failed or outside the fit mask).
    roi : ndarray of bool
        ROI mask on the map's grid, same shape as ``values``.
    valid : ndarray of bool, optional
        Fit-success mask (e.g. the ``fitmask`` image), same shape; non-finite values are invalid
        whether or not it is given.
    voxel_volume_ml : float, default 1.0
        Volume of one voxel of the map's grid, in mL (product of the voxel sizes in mm / 1000).

    Returns
    -------
    dict
        Keys :data:`STAT_COLUMNS` in order; ``n_voxels`` is an int, the rest floats (NaN when
        undefined, see the module docstring).

    Raises
    ------
    ValueError
        If the shapes differ or ``voxel_volume_ml`` is not positive.
    """
    values = np.asarray(values)
    roi = np.asarray(roi, dtype=bool)
    if roi.shape != values.shape:
        raise ValueError(f"ROI shape {roi.shape} differs from map shape {values.shape}")
    if not voxel_volume_ml > 0:
        raise ValueError(f"voxel volume must be positive, got {voxel_volume_ml}")
    inside = values[roi].astype(np.float64, copy=False)
    ok = np.isfinite(inside)
    if valid is not None:
        valid = np.asarray(valid, dtype=bool)
        if valid.shape != values.shape:
            raise ValueError(
                f"valid-mask shape {valid.shape} differs from map shape {values.shape}"
            )
        ok &= valid[roi]
    x = inside[ok]
    n, n_ok = int(inside.size), int(x.size)
    nan = float("nan")

    out: dict[str, float | int] = dict.fromkeys(STAT_COLUMNS, nan)
    out["n_voxels"] = n
    out["volume_ml"] = n * float(voxel_volume_ml)
    out["valid_fraction"] = n_ok / n if n else nan
    if n_ok == 0:
        return out
    p10, p25, p50, p75, p90 = np.percentile(x, _PERCENTILES)
    out.update(
        mean=float(np.mean(x)),
        median=float(p50),
        p10=float(p10),
        p25=float(p25),
        p75=float(p75),
        p90=float(p90),
        iqr=float(p75 - p25),
    )
    if n_ok >= 2:
        out["sd"] = float(np.std(x, ddof=1))
    if n_ok >= 4 and np.ptp(x) > 0:
        with warnings.catch_warnings():
            # scipy warns (and returns NaN) when nearly identical values lose precision.
            warnings.simplefilter("ignore", RuntimeWarning)
            out["skewness"] = float(sps.skew(x, bias=False))
            out["kurtosis"] = float(sps.kurtosis(x, fisher=True, bias=False))
    return out


def session_roistats(
    maps: Mapping[str, tuple[np.ndarray, str, np.ndarray | None]],
    rois_by_map: Mapping[str, Mapping[str, np.ndarray]],
    voxel_volume_ml_by_map: Mapping[str, float],
) -> pd.DataFrame:
    """ROI statistics of every map of one session.

    Maps may live on different grids (a DCE map and a T2 map, say), so the ROI masks are given
    per map, already resampled onto that map's grid.

    Parameters
    ----------
    maps : mapping of str to (values, unit, valid)
        Map name (``"T1"``, ``"ADC"``, ...) -> parameter map, its unit (contract section 4) and
        its fit-success mask or None.
    rois_by_map : mapping of str to mapping of str to ndarray of bool
        Map name -> (ROI name -> mask on that map's grid). Every map of ``maps`` needs an entry.
    voxel_volume_ml_by_map : mapping of str to float
        Map name -> voxel volume of its grid in mL.

    Returns
    -------
    pandas.DataFrame
        Columns ``roi, map, unit`` and :data:`STAT_COLUMNS`; one row per (roi, map). Rows are
        ordered by ROI (first-seen order over the maps' ROI mappings, in map order), then by map
        (order of ``maps``). A ROI missing for one map simply has no row for that map.

    Raises
    ------
    KeyError
        If a map has no ROI mapping or no voxel volume.
    """
    rows: list[tuple[int, int, dict[str, object]]] = []
    roi_rank: dict[str, int] = {}
    for map_rank, (map_name, (values, unit, valid)) in enumerate(maps.items()):
        if map_name not in rois_by_map:
            raise KeyError(f"no ROI masks given for map {map_name!r}")
        if map_name not in voxel_volume_ml_by_map:
            raise KeyError(f"no voxel volume given for map {map_name!r}")
        for roi_name, mask in rois_by_map[map_name].items():
            rank = roi_rank.setdefault(roi_name, len(roi_rank))
            row: dict[str, object] = {"roi": roi_name, "map": map_name, "unit": unit}
            row.update(roi_statistics(values, mask, valid, voxel_volume_ml_by_map[map_name]))
            rows.append((rank, map_rank, row))
    rows.sort(key=lambda r: (r[0], r[1]))
    columns = ["roi", "map", "unit", *STAT_COLUMNS]
    df = pd.DataFrame([r[2] for r in rows], columns=columns)
    df["n_voxels"] = df["n_voxels"].astype(np.int64)
    for col in STAT_COLUMNS[1:]:
        df[col] = df[col].astype(np.float64)
    return df
