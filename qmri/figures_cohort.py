"""Cohort figures: ROI trajectories, waterfall plots and Kaplan-Meier curves.

Every function writes a PNG and, beside it with the same stem, the tidy CSV the figure was drawn
from (``trajectories_tumor.png`` + ``trajectories_tumor.csv``), both atomically. Figures are made
with matplotlib's Agg canvas directly (no pyplot, no global backend switch), at a fixed size and
resolution and without a ``Software`` PNG tag, so the same inputs give the same bytes. With no
data to draw, the figure says so and the CSV holds only its header.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from qmri.io import atomic_output, write_csv

__all__ = [
    "TRAJECTORY_COLUMNS",
    "WATERFALL_COLUMNS",
    "km_figure",
    "trajectory_figure",
    "waterfall_figure",
]

#: Columns of the CSV behind :func:`trajectory_figure`.
TRAJECTORY_COLUMNS: tuple[str, ...] = (
    "subject",
    "session",
    "days_from_sbrt",
    "roi",
    "map",
    "unit",
    "stat",
    "value",
)

#: Columns of the CSV behind :func:`waterfall_figure`.
WATERFALL_COLUMNS: tuple[str, ...] = (
    "rank",
    "subject",
    "session",
    "days_from_sbrt",
    "roi",
    "map",
    "stat",
    "pct_change",
)

_DPI = 100


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=_DPI, metadata={"Software": None})
    return path


def _no_data(ax: object, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)  # type: ignore[attr-defined]
    ax.set_axis_off()  # type: ignore[attr-defined]


def trajectory_figure(
    roistats: pd.DataFrame,
    path: str | Path,
    *,
    roi: str = "tumor",
    maps: Sequence[str] | None = None,
    stat: str = "median",
) -> tuple[Path, Path]:
    """ROI statistic over days from SBRT, one line per subject, one panel per map.

    Parameters
    ----------
    roistats : pandas.DataFrame
        Cohort roistats table.
    path : str or Path
        PNG to write; the CSV goes beside it (``.csv``).
    roi : str, default ``"tumor"``
        ROI drawn.
    maps : sequence of str, optional
        Maps (panels), in order; default every map of the ROI in first-seen order.
    stat : str, default ``"median"``
        roistats column drawn.

    Returns
    -------
    (Path, Path)
        The PNG and the CSV (:data:`TRAJECTORY_COLUMNS`; ``value`` in the map's unit).
    """
    path = Path(path)
    df = roistats.loc[roistats["roi"].astype(str) == roi]
    if maps is not None:
        df = df.loc[df["map"].astype(str).isin(list(maps))]
    data = pd.DataFrame(
        {
            "subject": df["subject"].astype(str),
            "session": df["session"].astype(str),
            "days_from_sbrt": df["days_from_sbrt"].astype(np.int64),
            "roi": roi,
            "map": df["map"].astype(str),
            "unit": df["unit"].astype(str),
            "stat": stat,
            "value": df[stat].astype(np.float64) if stat in df else np.nan,
        },
        columns=list(TRAJECTORY_COLUMNS),
    )
    panels = list(maps) if maps is not None else list(dict.fromkeys(data["map"]))
    data = data.sort_values(["subject", "days_from_sbrt", "session"], kind="stable")
    ncol = min(3, max(1, len(panels)))
    nrow = max(1, -(-len(panels) // ncol))
    fig = Figure(figsize=(4.0 * ncol, 3.2 * nrow), layout="constrained")
    axes = fig.subplots(nrow, ncol, squeeze=False).ravel()
    for ax, map_name in zip(axes, panels, strict=False):
        sub = data.loc[data["map"] == map_name]
        for subject, g in sub.groupby("subject", sort=True):
            ax.plot(g["days_from_sbrt"], g["value"], marker="o", ms=3, lw=1, label=subject)
        ax.axvline(0, color="0.5", lw=0.8, ls="--")
        unit = sub["unit"].iloc[0] if len(sub) else ""
        ax.set_title(f"{map_name} ({roi})")
        ax.set_xlabel("days from SBRT")
        ax.set_ylabel(f"{stat} {map_name} [{unit}]")
    for ax in axes[len(panels) :]:
        ax.set_axis_off()
    if not panels:
        _no_data(axes[0], f"no {roi} statistics")
    _save(fig, path)
    csv = write_csv(data.reset_index(drop=True), path.with_suffix(".csv"))
    return path, csv


def waterfall_figure(
    response: pd.DataFrame,
    path: str | Path,
    *,
    roi: str,
    map_name: str,
    session: str,
    stat: str = "median",
    thresholds_pct: Sequence[float] = (),
) -> tuple[Path, Path]:
    """Waterfall plot of the percent change of one biomarker at one session, one bar per subject.

    Parameters
    ----------
    response : pandas.DataFrame
        Cohort response table.
    path : str or Path
        PNG to write; the CSV goes beside it.
    roi, map_name, session, stat : str
        The biomarker (ROI, map, statistic) and the session label.
    thresholds_pct : sequence of float, optional
        Percent changes drawn as horizontal dashed lines (e.g. ``(-20,)`` for a vp fall flag).

    Returns
    -------
    (Path, Path)
        The PNG and the CSV (:data:`WATERFALL_COLUMNS`): subjects sorted from the largest rise
        to the largest fall (ties by subject label), ``rank`` from 1, ``pct_change`` in %.
        Subjects without a percent change are left out.
    """
    path = Path(path)
    sel = (
        (response["roi"].astype(str) == roi)
        & (response["map"].astype(str) == map_name)
        & (response["session"].astype(str) == session)
        & (response["stat"].astype(str) == stat)
    )
    df = response.loc[sel & np.isfinite(response["pct_change"].astype(np.float64))]
    df = df.assign(subject=df["subject"].astype(str)).sort_values("subject", kind="stable")
    df = df.sort_values("pct_change", ascending=False, kind="stable")
    data = pd.DataFrame(
        {
            "rank": np.arange(1, len(df) + 1, dtype=np.int64),
            "subject": df["subject"].to_numpy(),
            "session": session,
            "days_from_sbrt": df["days_from_sbrt"].astype(np.int64).to_numpy(),
            "roi": roi,
            "map": map_name,
            "stat": stat,
            "pct_change": df["pct_change"].astype(np.float64).to_numpy(),
        },
        columns=list(WATERFALL_COLUMNS),
    )
    fig = Figure(figsize=(min(16.0, max(4.0, 0.25 * len(data) + 2.0)), 3.5), layout="constrained")
    ax = fig.subplots()
    if len(data):
        colors = np.where(data["pct_change"] >= 0, "tab:red", "tab:blue")
        ax.bar(np.arange(len(data)), data["pct_change"], color=colors)
        if len(data) <= 60:  # beyond that the labels overlap: the CSV names the bars
            ax.set_xticks(np.arange(len(data)), data["subject"], rotation=90, fontsize=7)
        else:
            ax.set_xticks([])
        ax.axhline(0, color="k", lw=0.8)
        for t in thresholds_pct:
            ax.axhline(float(t), color="0.4", lw=0.8, ls="--")
        ax.set_ylabel(f"change of {stat} {map_name} [%]")
        ax.set_xlabel("subject")
        ax.set_title(f"{map_name} in {roi}, session {session}")
    else:
        _no_data(ax, f"no percent change of {map_name} in {roi} at {session}")
    _save(fig, path)
    csv = write_csv(data, path.with_suffix(".csv"))
    return path, csv


def km_figure(km: pd.DataFrame, path: str | Path, *, outcome: str) -> tuple[Path, Path]:
    """Kaplan-Meier curves of one outcome, one step curve per group with its 95 % band.

    Parameters
    ----------
    km : pandas.DataFrame
        From :func:`qmri.outcomes.outcome_km`.
    path : str or Path
        PNG to write; the CSV goes beside it.
    outcome : str
        Outcome to draw (``vcf``, ``rim``, ``local_failure``).

    Returns
    -------
    (Path, Path)
        The PNG and the CSV (the rows of ``km`` for this outcome; time in days from SBRT).
    """
    path = Path(path)
    data = km.loc[km["outcome"].astype(str) == outcome].reset_index(drop=True)
    fig = Figure(figsize=(5.0, 3.8), layout="constrained")
    ax = fig.subplots()
    if len(data):
        for group, g in data.groupby("group", sort=False):
            t = g["time_days"].to_numpy(dtype=np.float64)
            (line,) = ax.step(t, g["survival"], where="post", label=str(group))
            lo = g["ci_lower"].to_numpy(dtype=np.float64)
            hi = g["ci_upper"].to_numpy(dtype=np.float64)
            ok = np.isfinite(lo) & np.isfinite(hi)
            if ok.any():
                ax.fill_between(t, lo, hi, where=ok, step="post", alpha=0.15,
                                color=line.get_color(), lw=0)  # fmt: skip
            cens = g["n_censored"].to_numpy() > 0
            ax.plot(t[cens], g["survival"].to_numpy()[cens], "|", color=line.get_color(), ms=8)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("days from SBRT")
        ax.set_ylabel(f"{outcome}-free probability")
        ax.set_title(f"Kaplan-Meier: {outcome}")
        ax.legend(fontsize=8, loc="lower left")
    else:
        _no_data(ax, f"no {outcome} times")
    _save(fig, path)
    csv = write_csv(data, path.with_suffix(".csv"))
    return path, csv
