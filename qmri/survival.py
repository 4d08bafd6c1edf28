"""Event-free survival: Kaplan-Meier curves of the cohort's outcomes.

:func:`kaplan_meier` is the product-limit estimate with Greenwood variance and log(-log) 95 %
confidence limits; :func:`outcome_km` gives the curves of every outcome of
:data:`qmri.outcome_data.OUTCOMES` whose event and days columns participants.tsv has, for the
whole cohort and for any grouping of the subjects (a response flag, a biomarker median split).
Time is in days from SBRT.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from qmri.outcome_data import OUTCOMES, Z95, by_subject, has_values
from qmri.tables import subject_label

__all__ = ["KM_COLUMNS", "kaplan_meier", "outcome_km"]

#: Columns of the Kaplan-Meier table.
KM_COLUMNS: tuple[str, ...] = (
    "outcome",
    "group",
    "time_days",
    "n_at_risk",
    "n_events",
    "n_censored",
    "survival",
    "ci_lower",
    "ci_upper",
)


def kaplan_meier(time: np.ndarray, event: np.ndarray) -> pd.DataFrame:
    """Kaplan-Meier estimate of the event-free probability.

    Parameters
    ----------
    time : ndarray
        Days to event or censoring (d); non-finite rows are dropped.
    event : ndarray
        1 for an event, 0 for censoring.

    Returns
    -------
    pandas.DataFrame
        Columns ``time_days, n_at_risk, n_events, n_censored, survival, ci_lower, ci_upper``:
        a first row at day 0 with survival 1, then one row per distinct event or censoring time
        (at-risk count just before it). Negative times are dropped. 95 % limits are log(-log) transformed Greenwood limits,
        empty where survival is 1 (no event yet) or 0.
    """
    t = np.asarray(time, dtype=np.float64)
    e = np.asarray(event, dtype=np.float64)
    ok = np.isfinite(t) & np.isfinite(e) & (t >= 0)
    t, e = t[ok], e[ok]
    times = np.unique(t)
    n0 = int(t.size)
    rows = [{"time_days": 0.0, "n_at_risk": n0, "n_events": 0, "n_censored": 0,
             "survival": 1.0, "ci_lower": math.nan, "ci_upper": math.nan}]  # fmt: skip
    surv, green = 1.0, 0.0
    for ti in times:
        at_risk = int(np.count_nonzero(t >= ti))
        d = int(np.count_nonzero((t == ti) & (e == 1)))
        c = int(np.count_nonzero((t == ti) & (e != 1)))
        if d:
            surv *= 1.0 - d / at_risk
            green = green + d / (at_risk * (at_risk - d)) if at_risk > d else math.inf
        lo = hi = math.nan
        if 0.0 < surv < 1.0 and np.isfinite(green):
            se = math.sqrt(green) / abs(math.log(surv))
            lo, hi = surv ** math.exp(Z95 * se), surv ** math.exp(-Z95 * se)
        if ti == 0:
            rows.pop(0)  # events or censoring on day 0 replace the starting row
        rows.append({"time_days": float(ti), "n_at_risk": at_risk, "n_events": d,
                     "n_censored": c, "survival": surv, "ci_lower": lo, "ci_upper": hi})  # fmt: skip
    out = pd.DataFrame(rows)
    for col in ("n_at_risk", "n_events", "n_censored"):
        out[col] = out[col].astype(np.int64)
    return out


def outcome_km(
    participants: pd.DataFrame,
    *,
    groups: Mapping[str, pd.Series] | None = None,
) -> pd.DataFrame:
    """Kaplan-Meier curves of every outcome with event and days columns.

    Parameters
    ----------
    participants : pandas.DataFrame
        From :func:`qmri.tables.read_participants_tsv`.
    groups : mapping of str to pandas.Series, optional
        Name -> Series of group labels indexed by subject label (``"01"``), e.g. a response flag
        or a biomarker median split; each gives one curve per label, named ``<name>=<label>``.
        The whole cohort (group ``all``) is always included.

    Returns
    -------
    pandas.DataFrame
        :data:`KM_COLUMNS`; time in days from SBRT.
    """
    parts = by_subject(participants)
    frames = []
    for outcome, (event_col, days_col) in OUTCOMES.items():
        if not (has_values(parts, event_col) and has_values(parts, days_col)):
            continue
        ev = pd.to_numeric(parts[event_col], errors="coerce")
        days = pd.to_numeric(parts[days_col], errors="coerce")
        curves = [("all", parts.index)]
        for name, labels in (groups or {}).items():
            labels = labels.dropna()
            labels.index = labels.index.map(subject_label)
            for label in sorted(pd.unique(labels.astype(str))):
                subj = labels.index[labels.astype(str) == label].intersection(parts.index)
                curves.append((f"{name}={label}", subj))
        for group, subj in curves:
            km = kaplan_meier(days.loc[subj].to_numpy(), ev.loc[subj].to_numpy())
            frames.append(km.assign(outcome=outcome, group=group))
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in KM_COLUMNS})
    return pd.concat(frames, ignore_index=True)[list(KM_COLUMNS)]
