"""Comparison of the two delineation strategies: ``tumor`` (A) versus ``ctv`` (B).

Delineation A is the GTV as drawn; delineation B adds the vertebral body of every treated level
and the posterior-element sectors the GTV touches (:mod:`qmri.rois`). Both are measured on every
map of every session, so their statistics can be put side by side from a ``roistats`` table:

``difference``
    ``ctv - tumor`` (map units): what delineation B changes in the statistic.
``pct_difference``
    ``100 * difference / tumor`` (%), empty for a zero or missing ``tumor`` value.
``added_volume_ml``
    ``ctv_volume_ml - tumor_volume_ml`` (mL): the volume B adds, on the map's own grid (the
    ``volume_ml`` of roistats, so a DCE map and a T2 map can differ slightly).

When the labels carry the treatment plan's CTV (``ctv_plan``, imported from an RTSTRUCT),
:func:`plan_delineation_table` puts the derived ``ctv`` beside it in the same form
(``difference = ctv - ctv_plan``): how the consensus-rule CTV compares with the one planned.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from qmri.stats import STAT_COLUMNS

__all__ = [
    "DELINEATION_COLUMNS",
    "DELINEATION_STATS",
    "DELINEATION_SUMMARY_COLUMNS",
    "PLAN_DELINEATION_COLUMNS",
    "delineation_summary",
    "delineation_table",
    "plan_delineation_table",
    "session_kind",
]

#: Statistics compared by default: every location and spread statistic of roistats.
DELINEATION_STATS: tuple[str, ...] = tuple(
    s for s in STAT_COLUMNS if s not in ("n_voxels", "volume_ml", "valid_fraction")
)

#: Columns of :func:`delineation_table`, in order.
DELINEATION_COLUMNS: tuple[str, ...] = (
    "subject",
    "session",
    "days_from_sbrt",
    "session_kind",
    "map",
    "unit",
    "stat",
    "tumor",
    "ctv",
    "difference",
    "pct_difference",
    "tumor_volume_ml",
    "ctv_volume_ml",
    "added_volume_ml",
    "tumor_valid_fraction",
    "ctv_valid_fraction",
)

_PLAN_NAMES = {
    "tumor": "ctv_plan",
    "tumor_volume_ml": "ctv_plan_volume_ml",
    "tumor_valid_fraction": "ctv_plan_valid_fraction",
}

#: Columns of :func:`plan_delineation_table`: those of :data:`DELINEATION_COLUMNS` with the
#: plan's CTV in place of the tumour.
PLAN_DELINEATION_COLUMNS: tuple[str, ...] = tuple(
    _PLAN_NAMES.get(c, c) for c in DELINEATION_COLUMNS
)

#: Columns of :func:`delineation_summary`, in order.
DELINEATION_SUMMARY_COLUMNS: tuple[str, ...] = (
    "map",
    "unit",
    "stat",
    "session_kind",
    "n_subjects",
    "n_sessions",
    "mean_tumor",
    "mean_ctv",
    "mean_difference",
    "median_difference",
    "sd_difference",
    "mean_pct_difference",
    "median_pct_difference",
    "median_added_volume_ml",
)

_ID = ["subject", "session", "days_from_sbrt", "map", "unit"]


def session_kind(subject: pd.Series, days_from_sbrt: pd.Series) -> pd.Series:
    """Label each row ``baseline``, ``followup`` or ``pre`` (an earlier pre-treatment session).

    The baseline is the subject's latest session with ``days_from_sbrt <= 0`` (as
    :func:`qmri.tables.baseline_session` chooses it); later sessions are follow-ups.

    Parameters
    ----------
    subject : pandas.Series
        Subject labels.
    days_from_sbrt : pandas.Series
        Days from SBRT (d), aligned with ``subject``.

    Returns
    -------
    pandas.Series of str
    """
    days = days_from_sbrt.astype(np.float64)
    base = days.where(days <= 0).groupby(subject.astype(str)).transform("max")
    kind = np.where(days == base, "baseline", np.where(days > base, "followup", "pre"))
    kind = np.where(base.isna(), "followup", kind)  # no pre-treatment session at all
    return pd.Series(kind, index=subject.index, dtype=object)


def delineation_table(
    roistats: pd.DataFrame,
    *,
    stats: Sequence[str] = DELINEATION_STATS,
    roi_a: str = "tumor",
    roi_b: str = "ctv",
) -> pd.DataFrame:
    """Statistics of every map in ``tumor`` and in ``ctv`` side by side.

    Parameters
    ----------
    roistats : pandas.DataFrame
        A roistats table (:data:`qmri.tables.ROISTATS_COLUMNS`), one subject or the cohort.
    stats : sequence of str, default :data:`DELINEATION_STATS`
        Statistics to compare, in row order.
    roi_a, roi_b : str, default ``"tumor"``, ``"ctv"``
        The two ROIs; the output columns keep the names ``tumor`` and ``ctv``.

    Returns
    -------
    pandas.DataFrame
        Exactly :data:`DELINEATION_COLUMNS`, one row per (subject, session, map, stat) where
        either ROI has a row; the side without one is empty. Values in map units, volumes in
        mL, ``pct_difference`` in %. Rows follow roistats' order of (subject, session, map),
        then ``stats``.

    Raises
    ------
    ValueError
        If the table lacks a column.
    """
    needed = [*_ID, "roi", "volume_ml", "valid_fraction", *stats]
    missing = [c for c in needed if c not in roistats.columns]
    if missing:
        raise ValueError(f"roistats table lacks column(s) {', '.join(missing)}")
    df = roistats.reset_index(drop=True)
    df = df.assign(subject=df["subject"].astype(str), session=df["session"].astype(str))
    df["_row"] = np.arange(len(df))
    sides = {}
    for name, roi in (("tumor", roi_a), ("ctv", roi_b)):
        side = df.loc[df["roi"].astype(str) == roi, [*_ID, "_row", *stats, "volume_ml"]]
        side = side.assign(valid_fraction=df.loc[side.index, "valid_fraction"])
        side = side.melt(
            id_vars=[*_ID, "_row", "volume_ml", "valid_fraction"],
            value_vars=list(stats),
            var_name="stat",
            value_name=name,
        )
        sides[name] = side.rename(
            columns={
                "volume_ml": f"{name}_volume_ml",
                "valid_fraction": f"{name}_valid_fraction",
                "_row": f"_row_{name}",
            }
        )
    key = [*_ID, "stat"]
    out = sides["tumor"].merge(sides["ctv"], on=key, how="outer", validate="1:1", sort=False)
    out["_row"] = out[["_row_tumor", "_row_ctv"]].min(axis=1)
    out["_stat"] = out["stat"].map({s: i for i, s in enumerate(stats)})
    out = out.sort_values(["_row", "_stat"], kind="stable").reset_index(drop=True)
    tumor = out["tumor"].to_numpy(dtype=np.float64)
    ctv = out["ctv"].to_numpy(dtype=np.float64)
    out["difference"] = ctv - tumor
    pct = np.full_like(tumor, np.nan)
    ok = np.isfinite(tumor) & np.isfinite(ctv) & (tumor != 0)
    np.divide(100.0 * (ctv - tumor), tumor, out=pct, where=ok)
    out["pct_difference"] = pct
    out["added_volume_ml"] = out["ctv_volume_ml"].astype(np.float64) - out[
        "tumor_volume_ml"
    ].astype(np.float64)
    out["days_from_sbrt"] = out["days_from_sbrt"].astype(np.int64)
    out["session_kind"] = session_kind(out["subject"], out["days_from_sbrt"])
    text = ("subject", "session", "session_kind", "map", "unit", "stat")
    for col in DELINEATION_COLUMNS:
        if col in text:
            out[col] = out[col].astype(str)
        elif col != "days_from_sbrt":
            out[col] = out[col].astype(np.float64)
    return out[list(DELINEATION_COLUMNS)]


def delineation_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Cohort summary of a delineation table, per map, statistic and session kind.

    Parameters
    ----------
    table : pandas.DataFrame
        Output of :func:`delineation_table` for the cohort.

    Returns
    -------
    pandas.DataFrame
        Exactly :data:`DELINEATION_SUMMARY_COLUMNS`; one row per (map, unit, stat,
        session_kind) in the table's first-seen order, kinds ordered ``pre``, ``baseline``,
        ``followup``. Means, medians and the sample SD (``ddof=1``) are over the rows where both
        ROIs have a value; ``n_subjects`` counts distinct subjects among them and ``n_sessions``
        the rows (a subject contributes one row per follow-up session). Differences in map
        units, percent differences in %, volumes in mL.
    """
    df = table.loc[np.isfinite(table["difference"].astype(np.float64))].copy()
    kinds = {"pre": 0, "baseline": 1, "followup": 2}
    keys = ["map", "unit", "stat", "session_kind"]
    rows = []
    if not df.empty:
        first = {
            k: i for i, k in enumerate(dict.fromkeys(zip(df["map"], df["stat"], strict=True)))
        }
        for (map_name, unit, stat, kind), g in df.groupby(keys, sort=False):
            d = g["difference"].to_numpy(dtype=np.float64)
            p = g["pct_difference"].to_numpy(dtype=np.float64)
            p = p[np.isfinite(p)]
            v = g["added_volume_ml"].to_numpy(dtype=np.float64)
            v = v[np.isfinite(v)]
            rows.append(
                {
                    "map": map_name,
                    "unit": unit,
                    "stat": stat,
                    "session_kind": kind,
                    "n_subjects": int(g["subject"].nunique()),
                    "n_sessions": len(g),
                    "mean_tumor": float(np.mean(g["tumor"])),
                    "mean_ctv": float(np.mean(g["ctv"])),
                    "mean_difference": float(np.mean(d)),
                    "median_difference": float(np.median(d)),
                    "sd_difference": float(np.std(d, ddof=1)) if d.size > 1 else np.nan,
                    "mean_pct_difference": float(np.mean(p)) if p.size else np.nan,
                    "median_pct_difference": float(np.median(p)) if p.size else np.nan,
                    "median_added_volume_ml": float(np.median(v)) if v.size else np.nan,
                    "_first": first[(map_name, stat)],
                    "_kind": kinds.get(kind, 3),
                }
            )
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in DELINEATION_SUMMARY_COLUMNS})
    out = pd.DataFrame(rows).sort_values(["_first", "_kind"], kind="stable")
    return out[list(DELINEATION_SUMMARY_COLUMNS)].reset_index(drop=True)


def plan_delineation_table(
    roistats: pd.DataFrame, *, stats: Sequence[str] = DELINEATION_STATS
) -> pd.DataFrame:
    """The derived ``ctv`` beside the treatment plan's ``ctv_plan``, statistic by statistic.

    Parameters
    ----------
    roistats : pandas.DataFrame
        A roistats table, one subject or the cohort.
    stats : sequence of str, default :data:`DELINEATION_STATS`
        Statistics to compare.

    Returns
    -------
    pandas.DataFrame
        Exactly :data:`PLAN_DELINEATION_COLUMNS`: ``difference = ctv - ctv_plan`` (map units),
        ``pct_difference`` relative to ``ctv_plan`` (%), ``added_volume_ml`` what the derived
        CTV adds to the planned one (mL, negative when smaller). No rows when no subject has a
        ``ctv_plan`` label.
    """
    if not (roistats["roi"].astype(str) == "ctv_plan").any():
        return pd.DataFrame(columns=list(PLAN_DELINEATION_COLUMNS))
    table = delineation_table(roistats, stats=stats, roi_a="ctv_plan", roi_b="ctv")
    return table.rename(columns=_PLAN_NAMES)[list(PLAN_DELINEATION_COLUMNS)]
