"""Steps ``cohort_analyses`` and ``cohort_figures``: what the cohort tables say.

Response flags (:mod:`qmri.response`), the delineation comparison (:mod:`qmri.delineation`),
the outcome analyses (:mod:`qmri.outcomes`) and the cohort figures
(:mod:`qmri.figures_cohort`) from ``cohort/roistats.csv`` and ``cohort/response.csv``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from qmri import delineation, outcomes, tables
from qmri import figures_cohort as fig
from qmri.io import write_csv
from qmri.response import parse_thresholds, response_flags

__all__ = ["cohort_analyses", "cohort_figures"]


def cohort_analyses(
    *,
    roistats_csv: Path,
    response_csv: Path,
    participants_tsv: Path,
    flag_thresholds: Mapping[str, float],
    min_events: int,
    out_dir: Path,
) -> list[Path]:
    """Response flags, the delineation comparison and the outcome analyses of a cohort.

    Writes under ``out_dir``: ``response_flags.csv`` (``flag_thresholds``: config
    ``response_flags``; empty: the documented defaults of :func:`qmri.response.response_flags`),
    ``delineation.csv``, ``delineation_summary.csv``, ``delineation_plan.csv`` (the derived CTV
    against the plan's ``ctv_plan``, no rows without one) and the outcome tables of
    :mod:`qmri.outcomes` (``outcomes_logistic.csv``, ``outcomes_cox.csv``, ``outcomes_km.csv``,
    ``outcomes_missing_columns.csv``, the last listing the clinical columns participants.tsv
    lacks); models need ``min_events`` events (config ``outcomes.min_events``).
    """
    out_dir = Path(out_dir)
    roistats = tables.read_table(roistats_csv)
    resp = tables.read_table(response_csv)
    flags = response_flags(resp, dict(flag_thresholds) or None)
    written = [write_csv(flags, out_dir / "response_flags.csv")]
    table = delineation.delineation_table(roistats)
    written.append(write_csv(table, out_dir / "delineation.csv"))
    written.append(
        write_csv(delineation.delineation_summary(table), out_dir / "delineation_summary.csv")
    )
    plan = delineation.plan_delineation_table(roistats)
    written.append(write_csv(plan, out_dir / "delineation_plan.csv"))
    participants = tables.read_participants_tsv(participants_tsv)
    results = outcomes.outcome_analyses(participants, resp, min_events=min_events)
    written += list(outcomes.write_outcome_tables(results, out_dir).values())
    return written


def cohort_figures(
    *,
    roistats_csv: Path,
    response_csv: Path,
    km_csv: Path,
    trajectory_rois: Sequence[str],
    waterfall_rois: Sequence[str],
    maps: Sequence[str],
    sessions: Sequence[str],
    km: Sequence[str],
    flag_thresholds: Mapping[str, float],
    out_dir: Path,
) -> list[Path]:
    """The cohort figures, each a PNG with the tidy CSV it was drawn from beside it.

    ``trajectories_<roi>.png``: the ROI's median of every map over days from SBRT, one line per
    subject; ``waterfall_<roi>_<map>_ses-<session>.png``: percent change of the median at that
    follow-up, one bar per subject, with the response-flag thresholds of that map as dashed
    lines; ``km_<outcome>.png``: Kaplan-Meier curves from ``outcomes_km.csv``. A figure without
    data says so (its CSV holds only the header). Names: :func:`qmri.cohort.figure_names`.
    """
    stat = "median"  # the contract's summary statistic of an ROI
    out_dir = Path(out_dir)
    roistats = tables.read_table(roistats_csv)
    response = tables.read_table(response_csv)
    rules = parse_thresholds(flag_thresholds) if flag_thresholds else []
    written: list[Path] = []
    for roi in trajectory_rois:
        written += fig.trajectory_figure(
            roistats, out_dir / f"trajectories_{roi}.png", roi=roi, stat=stat
        )
    for roi in waterfall_rois:
        for m in maps:
            lines = [
                -r.threshold_pct if r.direction == "fall" else r.threshold_pct
                for r in rules
                if r.map.lower() == m.lower()
            ]
            for ses in sessions:
                written += fig.waterfall_figure(
                    response, out_dir / f"waterfall_{roi}_{m}_ses-{ses}.png", roi=roi,
                    map_name=m, session=ses, stat=stat, thresholds_pct=lines,
                )  # fmt: skip
    if km:
        table = tables.read_table(km_csv)
        for outcome in km:
            written += fig.km_figure(table, out_dir / f"km_{outcome}.png", outcome=outcome)
    return written
