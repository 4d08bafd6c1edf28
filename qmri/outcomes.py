"""Outcome analyses: qMRI biomarkers versus VCF, RIM and local failure (contract, section 5).

Inputs are the clinical columns of ``participants.tsv`` (:func:`qmri.tables.read_participants_tsv`)
and the cohort ``response.csv``. Whatever clinical columns are present are used; absent ones are
listed by :func:`missing_columns`, never guessed.

Outcomes (:data:`OUTCOMES`): ``vcf`` (vertebral compression fracture: ``vcf_event``,
``vcf_days``), ``rim`` (radiation-induced myelopathy: ``rim_event``, ``rim_days``) and
``local_failure`` (``local_failure``, ``local_failure_days``). Event columns are 0/1; days count
from SBRT to the event or, for subjects without one, to the last follow-up (censoring).

Biomarkers, per ROI, map and statistic (default the ROI median):

``baseline``
    The value at the baseline session (``timepoint`` ``baseline``), in map units.
``pct_change`` / ``change``
    Change from baseline at a follow-up session (``timepoint`` = session label, so sessions are
    matched across subjects by label), in % / map units.
clinical predictors
    ``sins``, ``dose_gy``, ... from participants.tsv (``biomarker`` ``clinical``).

Models (univariable, one per outcome x biomarker):

logistic regression (:func:`fit_logistic`)
    ``P(event) = 1 / (1 + exp(-(b0 + b1 x)))`` by maximum likelihood (statsmodels ``Logit``),
    fitted on the standardised biomarker. Each model gives two rows: the odds ratio per one unit
    of the biomarker (``effect_per`` = ``unit``; for maps with small units such as ADC in
    mm^2/s this can overflow to ``inf``: read the SD row) and per one sample SD of the
    biomarker in the analysed subjects (``effect_per`` = ``sd``; ``increment`` holds the SD).
    95 % Wald confidence intervals and Wald p-values. ``q_value`` is the Benjamini-Hochberg
    false-discovery-rate adjusted p over all models of the same outcome in the table.
Cox proportional hazards (:func:`fit_cox`)
    statsmodels ``PHReg`` with Efron ties; hazard ratios per unit and per SD as above.
Kaplan-Meier (:func:`kaplan_meier`)
    Product-limit estimate with Greenwood variance and log(-log) 95 % confidence limits.

Landmark rule: a follow-up biomarker measured on day ``t`` cannot predict an event that
happened before it. When the outcome's days column is present, subjects whose event (or
censoring) fell on or before their scan day are left out of that model (counted in
``n_excluded``), and the Cox model enters subjects at their scan day (delayed entry), time still
counted from SBRT.

A model that cannot be estimated yields rows with empty estimates and a ``note`` (never an
exception): fewer than ``min_events`` events or non-events, a constant biomarker, perfect
separation of events by the biomarker (no finite odds ratio), or a fit that does not converge.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from qmri.io import write_csv
from qmri.rois import DERIVED_ROIS
from qmri.tables import RESPONSE_COLUMNS, subject_label

__all__ = [
    "BIOMARKER_COLUMNS",
    "CLINICAL_COLUMNS",
    "DEFAULT_CLINICAL_PREDICTORS",
    "KM_COLUMNS",
    "MODEL_COLUMNS",
    "OUTCOMES",
    "OutcomeResults",
    "biomarker_table",
    "cox_models",
    "fit_cox",
    "fit_logistic",
    "kaplan_meier",
    "logistic_models",
    "missing_columns",
    "outcome_analyses",
    "outcome_km",
    "write_outcome_tables",
]

#: Outcome name -> (event column, days column) of participants.tsv.
OUTCOMES: dict[str, tuple[str, str]] = {
    "vcf": ("vcf_event", "vcf_days"),
    "rim": ("rim_event", "rim_days"),
    "local_failure": ("local_failure", "local_failure_days"),
}

#: The optional clinical columns of participants.tsv (contract, section 5), with their use.
CLINICAL_COLUMNS: dict[str, str] = {
    "treated_levels": "ROI derivation (treated levels)",
    "dose_gy": "clinical predictor; EQD2 of the dose analysis",
    "fractions": "EQD2 of the dose analysis",
    "sins": "clinical predictor",
    "vcf_event": "vcf outcome (logistic, Cox, Kaplan-Meier)",
    "vcf_days": "vcf outcome (Cox, Kaplan-Meier, landmark)",
    "rim_event": "rim outcome (logistic, Cox, Kaplan-Meier)",
    "rim_days": "rim outcome (Cox, Kaplan-Meier, landmark)",
    "local_failure": "local_failure outcome (logistic, Cox, Kaplan-Meier)",
    "local_failure_days": "local_failure outcome (Cox, Kaplan-Meier, landmark)",
    "nprs_baseline": "clinical predictor",
}

#: Clinical columns tried as univariable predictors, with their units.
DEFAULT_CLINICAL_PREDICTORS: dict[str, str] = {
    "sins": "points",
    "dose_gy": "Gy",
    "nprs_baseline": "points",
}

#: Columns of :func:`biomarker_table`.
BIOMARKER_COLUMNS: tuple[str, ...] = (
    "subject",
    "roi",
    "map",
    "stat",
    "biomarker",
    "timepoint",
    "days_from_sbrt",
    "value",
    "biomarker_unit",
)

#: Columns of the logistic and Cox tables (``estimate`` is the odds or hazard ratio).
MODEL_COLUMNS: tuple[str, ...] = (
    "outcome",
    "model",
    "roi",
    "map",
    "stat",
    "biomarker",
    "timepoint",
    "median_days_from_sbrt",
    "effect_per",
    "increment",
    "biomarker_unit",
    "estimate",
    "ci_lower",
    "ci_upper",
    "p_value",
    "q_value",
    "n",
    "n_events",
    "n_excluded",
    "note",
)

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

_Z95 = float(sps.norm.ppf(0.975))
#: |coefficient per SD| above which an estimate is taken as infinite (OR/HR per SD > e^10).
_MAX_STD_COEF = 10.0


def missing_columns(participants: pd.DataFrame) -> pd.DataFrame:
    """Which optional clinical columns participants.tsv has and which it lacks.

    Parameters
    ----------
    participants : pandas.DataFrame
        From :func:`qmri.tables.read_participants_tsv`.

    Returns
    -------
    pandas.DataFrame
        Columns ``column, present, used_for``; one row per :data:`CLINICAL_COLUMNS` entry, in
        the contract's order. A column whose cells are all empty counts as absent.
    """
    rows = []
    for col, use in CLINICAL_COLUMNS.items():
        present = col in participants.columns and bool(participants[col].notna().any())
        if present and col == "treated_levels":
            present = bool(participants[col].map(bool).any())
        rows.append({"column": col, "present": present, "used_for": use})
    return pd.DataFrame(rows, columns=["column", "present", "used_for"])


def _present(participants: pd.DataFrame, col: str) -> bool:
    return col in participants.columns and bool(participants[col].notna().any())


def _kind(subject: pd.Series, days: pd.Series) -> pd.Series:
    """``baseline`` / ``followup`` / ``pre`` per row (baseline: latest day <= 0)."""
    d = days.astype(np.float64)
    base = d.where(d <= 0).groupby(subject).transform("max")
    return pd.Series(
        np.where(d == base, "baseline", np.where(d > base, "followup", "pre")), index=d.index
    )


def biomarker_table(
    response: pd.DataFrame,
    *,
    rois: Sequence[str] | None = DERIVED_ROIS,
    maps: Sequence[str] | None = None,
    stats: Sequence[str] = ("median",),
    biomarkers: Sequence[str] = ("baseline", "pct_change"),
) -> pd.DataFrame:
    """Per-subject imaging biomarkers from a cohort response table, long format.

    Parameters
    ----------
    response : pandas.DataFrame
        Cohort response table (:data:`qmri.tables.RESPONSE_COLUMNS`).
    rois : sequence of str or None, default :data:`qmri.rois.DERIVED_ROIS`
        ROIs to use; None for all.
    maps : sequence of str or None, default None
        Maps to use; None for all.
    stats : sequence of str, default ``("median",)``
        ROI statistics (``mean``, ``median``).
    biomarkers : sequence of str, default ``("baseline", "pct_change")``
        Any of ``baseline``, ``pct_change``, ``change``.

    Returns
    -------
    pandas.DataFrame
        :data:`BIOMARKER_COLUMNS`. ``timepoint`` is ``baseline`` for baseline values and the
        session label for changes; ``days_from_sbrt`` the session's day; ``biomarker_unit`` the
        map unit, or ``%`` for ``pct_change``. Rows with a missing value are dropped.

    Raises
    ------
    ValueError
        If the table lacks a column or a biomarker name is unknown.
    """
    missing = [c for c in RESPONSE_COLUMNS if c not in response.columns]
    if missing:
        raise ValueError(f"response table lacks column(s) {', '.join(missing)}")
    unknown = sorted(set(biomarkers) - {"baseline", "pct_change", "change"})
    if unknown:
        raise ValueError(f"unknown biomarker(s) {', '.join(unknown)}")
    df = response.reset_index(drop=True).copy()
    for col in ("subject", "session", "roi", "map", "unit", "stat"):
        df[col] = df[col].astype(str)
    keep = df["stat"].isin(list(stats))
    if rois is not None:
        keep &= df["roi"].isin(list(rois))
    if maps is not None:
        keep &= df["map"].isin(list(maps))
    df = df.loc[keep]
    kind = _kind(df["subject"], df["days_from_sbrt"])
    parts = []
    for marker in biomarkers:
        if marker == "baseline":
            sel = df.loc[kind == "baseline"]
            part = sel.assign(
                biomarker="baseline", timepoint="baseline", value=sel["value"],
                biomarker_unit=sel["unit"],
            )  # fmt: skip
        else:
            sel = df.loc[kind == "followup"]
            part = sel.assign(
                biomarker=marker, timepoint=sel["session"], value=sel[marker],
                biomarker_unit="%" if marker == "pct_change" else sel["unit"],
            )  # fmt: skip
        parts.append(part[list(BIOMARKER_COLUMNS)])
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=BIOMARKER_COLUMNS)
    out["value"] = out["value"].astype(np.float64)
    return out.loc[np.isfinite(out["value"])].reset_index(drop=True)


@dataclass(frozen=True)
class _Fit:
    """A univariable fit on the standardised predictor."""

    coef_sd: float = math.nan  # log OR/HR per SD
    se_sd: float = math.nan
    p_value: float = math.nan
    sd: float = math.nan
    n: int = 0
    n_events: int = 0
    note: str = ""


def _statsmodels_warnings() -> tuple[type[Warning], ...]:
    from statsmodels.tools import sm_exceptions as sme

    return (sme.ConvergenceWarning, sme.PerfectSeparationWarning, sme.HessianInversionWarning)


def _run_quietly(fn: Callable[[], Any]) -> tuple[Any, str]:
    """Run ``fn()`` catching every warning; return (result, first warning message or "")."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with np.errstate(all="ignore"):
            result = fn()
    msgs = [str(w.message).splitlines()[0] for w in caught]
    return result, (msgs[0] if msgs else "")


def _standardise(x: np.ndarray) -> tuple[np.ndarray, float]:
    """Standardised values and the sample SD; SD 0 when the values vary by less than 1e-9
    relative to their magnitude (a percent change of exactly -20 % for everyone computed in
    floating point is constant, not informative)."""
    if x.size < 2 or np.ptp(x) <= 1e-9 * max(float(np.max(np.abs(x))), 1e-300):
        return x * np.nan, 0.0
    sd = float(np.std(x, ddof=1))
    return (x - x.mean()) / sd, sd


def fit_logistic(x: np.ndarray, event: np.ndarray, *, min_events: int = 5) -> _Fit:
    """Univariable logistic regression of a 0/1 event on a biomarker.

    Parameters
    ----------
    x : ndarray
        Biomarker values (any unit); non-finite pairs are dropped.
    event : ndarray
        0/1 outcome.
    min_events : int, default 5
        Fewest events *and* non-events needed to fit.

    Returns
    -------
    _Fit
        Log odds ratio per SD of ``x`` and its standard error, Wald p, the SD, ``n``,
        ``n_events`` and a ``note`` (empty when the fit is valid; then the estimates are NaN).
    """
    import statsmodels.api as sm
    from statsmodels.tools.sm_exceptions import PerfectSeparationError

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(event, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n, k = int(x.size), int(np.count_nonzero(y == 1))
    base = {"n": n, "n_events": k}
    if not np.all((y == 0) | (y == 1)):
        return _Fit(**base, note="event column is not 0/1")
    if k < min_events or n - k < min_events:
        return _Fit(**base, note=f"too few events or non-events ({k} of {n}; need {min_events})")
    z, sd = _standardise(x)
    if not sd > 0:
        return _Fit(**base, note="biomarker is constant")
    x0, x1 = x[y == 0], x[y == 1]
    if x0.max() <= x1.min() or x1.max() <= x0.min():
        return _Fit(**base, sd=sd, note="perfect separation: no finite odds ratio")
    try:
        res, warned = _run_quietly(lambda: sm.Logit(y, sm.add_constant(z)).fit(disp=0))
    except (PerfectSeparationError, np.linalg.LinAlgError, ValueError) as exc:
        return _Fit(**base, sd=sd, note=f"fit failed: {str(exc).splitlines()[0]}")
    converged = bool(res.mle_retvals.get("converged", False))
    coef, se, p = float(res.params[1]), float(res.bse[1]), float(res.pvalues[1])
    if warned or not converged or not np.isfinite(se) or abs(coef) > _MAX_STD_COEF:
        why = warned or "no convergence or no finite estimate (quasi-separation)"
        return _Fit(**base, sd=sd, note=f"fit not valid: {why}")
    return _Fit(coef, se, p, sd, n, k)


def fit_cox(
    x: np.ndarray,
    time: np.ndarray,
    event: np.ndarray,
    *,
    entry: np.ndarray | None = None,
    min_events: int = 5,
) -> _Fit:
    """Univariable Cox proportional-hazards model (Efron ties).

    Parameters
    ----------
    x : ndarray
        Biomarker values; non-finite rows are dropped.
    time : ndarray
        Days from SBRT to event or censoring (d, > 0).
    event : ndarray
        1 for an event, 0 for censoring.
    entry : ndarray, optional
        Delayed-entry day per subject (d, < ``time``), e.g. the scan day of a follow-up
        biomarker.
    min_events : int, default 5
        Fewest events needed to fit.

    Returns
    -------
    _Fit
        Log hazard ratio per SD of ``x``, its standard error and Wald p, as :func:`fit_logistic`.
    """
    from statsmodels.duration.hazard_regression import PHReg

    x = np.asarray(x, dtype=np.float64)
    t = np.asarray(time, dtype=np.float64)
    e = np.asarray(event, dtype=np.float64)
    s = np.zeros_like(t) if entry is None else np.asarray(entry, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(t) & np.isfinite(e) & np.isfinite(s) & (t > 0)
    x, t, e, s = x[ok], t[ok], e[ok], s[ok]
    n, k = int(x.size), int(np.count_nonzero(e == 1))
    base = {"n": n, "n_events": k}
    if not np.all((e == 0) | (e == 1)):
        return _Fit(**base, note="event column is not 0/1")
    if k < min_events:
        return _Fit(**base, note=f"too few events ({k} of {n}; need {min_events})")
    z, sd = _standardise(x)
    if not sd > 0:
        return _Fit(**base, note="biomarker is constant")
    kwargs = {"status": e, "ties": "efron"}
    if entry is not None:
        kwargs["entry"] = s
    try:
        res, warned = _run_quietly(lambda: PHReg(t, z[:, None], **kwargs).fit())
    except (np.linalg.LinAlgError, ValueError) as exc:
        return _Fit(**base, sd=sd, note=f"fit failed: {str(exc).splitlines()[0]}")
    coef, se, p = float(res.params[0]), float(res.bse[0]), float(res.pvalues[0])
    if warned or not np.isfinite(se) or abs(coef) > _MAX_STD_COEF:
        why = warned or "no finite estimate (monotone likelihood)"
        return _Fit(**base, sd=sd, note=f"fit not valid: {why}")
    return _Fit(coef, se, p, sd, n, k)


def _rows(fit: _Fit, ids: dict[str, object], unit: str, n_excluded: int) -> list[dict]:
    """Two rows (per unit, per SD) of a model table."""
    rows = []
    for per, inc in (("unit", 1.0), ("sd", fit.sd)):
        est = lo = hi = math.nan
        if not fit.note:
            scale = fit.sd if per == "unit" else 1.0  # coefficient per unit = per SD / SD
            c, se = fit.coef_sd / scale, fit.se_sd / scale
            with np.errstate(over="ignore"):
                est, lo, hi = (float(np.exp(v)) for v in (c, c - _Z95 * se, c + _Z95 * se))
        rows.append(
            {
                **ids,
                "effect_per": per,
                "increment": inc,
                "biomarker_unit": unit,
                "estimate": est,
                "ci_lower": lo,
                "ci_upper": hi,
                "p_value": fit.p_value,
                "n": fit.n,
                "n_events": fit.n_events,
                "n_excluded": n_excluded,
                "note": fit.note,
            }
        )
    return rows


def _subject_index(participants: pd.DataFrame) -> pd.DataFrame:
    df = participants.copy()
    df.index = df["participant_id"].map(subject_label).astype(str)
    return df


def _predictor_sets(
    participants: pd.DataFrame,
    biomarkers: pd.DataFrame,
    clinical_predictors: Mapping[str, str],
) -> Iterator[tuple[dict[str, object], str, pd.Series, pd.Series | None]]:
    """Yield (ids, unit, Series of value by subject, Series of scan day by subject or None)."""
    keys = ["roi", "map", "stat", "biomarker", "timepoint"]
    for key, g in biomarkers.groupby(keys, sort=False):
        g = g.drop_duplicates("subject").set_index("subject")
        ids = dict(zip(keys, key, strict=True))
        ids["median_days_from_sbrt"] = float(np.median(g["days_from_sbrt"]))
        day = None if key[3] == "baseline" else g["days_from_sbrt"].astype(np.float64)
        yield ids, str(g["biomarker_unit"].iloc[0]), g["value"], day
    for col, unit in clinical_predictors.items():
        if not _present(participants, col):
            continue
        values = pd.to_numeric(participants[col], errors="coerce")
        ids = {
            "roi": "", "map": col, "stat": "", "biomarker": "clinical",
            "timepoint": "baseline", "median_days_from_sbrt": math.nan,
        }  # fmt: skip
        yield ids, unit, values, None


def _analyse(
    participants: pd.DataFrame,
    biomarkers: pd.DataFrame,
    *,
    model: str,
    clinical_predictors: Mapping[str, str],
    min_events: int,
) -> pd.DataFrame:
    parts = _subject_index(participants)
    rows: list[dict] = []
    for outcome, (event_col, days_col) in OUTCOMES.items():
        if not _present(parts, event_col):
            continue
        has_days = _present(parts, days_col)
        if model == "cox" and not has_days:
            continue
        ev = pd.to_numeric(parts[event_col], errors="coerce")
        days = pd.to_numeric(parts[days_col], errors="coerce") if has_days else None
        for ids, unit, values, scan_day in _predictor_sets(parts, biomarkers, clinical_predictors):
            subj = values.index.intersection(parts.index)
            x = values.loc[subj].to_numpy(dtype=np.float64)
            y = ev.loc[subj].to_numpy(dtype=np.float64)
            t = days.loc[subj].to_numpy(dtype=np.float64) if days is not None else None
            entry = None
            n_excluded = 0
            if scan_day is not None and t is not None:
                s = scan_day.loc[subj].to_numpy(dtype=np.float64)
                drop = np.isfinite(t) & (t <= s)
                n_excluded = int(np.count_nonzero(drop & np.isfinite(x) & np.isfinite(y)))
                keep = ~drop
                x, y, t, s = x[keep], y[keep], t[keep], s[keep]
                entry = s
            if model == "logistic":
                fit = fit_logistic(x, y, min_events=min_events)
            else:
                fit = fit_cox(x, t, y, entry=entry, min_events=min_events)
            rows.extend(_rows(fit, {"outcome": outcome, "model": model, **ids}, unit, n_excluded))
    out = pd.DataFrame(rows, columns=[c for c in MODEL_COLUMNS if c != "q_value"])
    out["q_value"] = _bh_by_outcome(out)
    out = out[list(MODEL_COLUMNS)]
    for col in ("n", "n_events", "n_excluded"):
        out[col] = out[col].astype(np.int64)
    return out


def _bh_by_outcome(table: pd.DataFrame) -> np.ndarray:
    """Benjamini-Hochberg q-values per outcome, over models (one p per model, SD rows)."""
    q = np.full(len(table), np.nan)
    if table.empty:
        return q
    p = table["p_value"].to_numpy(dtype=np.float64)
    for outcome in pd.unique(table["outcome"]):
        sel = (table["outcome"] == outcome).to_numpy() & np.isfinite(p)
        model_rows = sel & (table["effect_per"] == "sd").to_numpy()
        pv = p[model_rows]
        if pv.size == 0:
            continue
        order = np.argsort(pv, kind="stable")
        ranked = pv[order] * pv.size / np.arange(1, pv.size + 1)
        qs = np.minimum.accumulate(ranked[::-1])[::-1].clip(max=1.0)
        q_model = np.empty_like(pv)
        q_model[order] = qs
        # the unit row of a model directly precedes its SD row: give both the same q
        idx = np.flatnonzero(model_rows)
        q[idx] = q_model
        q[idx - 1] = q_model
    return q


def logistic_models(
    participants: pd.DataFrame,
    biomarkers: pd.DataFrame,
    *,
    clinical_predictors: Mapping[str, str] = DEFAULT_CLINICAL_PREDICTORS,
    min_events: int = 5,
) -> pd.DataFrame:
    """Univariable logistic regressions of every present outcome on every biomarker.

    Parameters
    ----------
    participants : pandas.DataFrame
        From :func:`qmri.tables.read_participants_tsv`.
    biomarkers : pandas.DataFrame
        From :func:`biomarker_table`.
    clinical_predictors : mapping of str to str
        participants.tsv column -> unit, used as predictors when present.
    min_events : int, default 5
        Fewest events and non-events per model.

    Returns
    -------
    pandas.DataFrame
        :data:`MODEL_COLUMNS` with ``model`` ``logistic`` and ``estimate`` the odds ratio; two
        rows per model (``effect_per`` ``unit`` then ``sd``).
    """
    return _analyse(
        participants, biomarkers, model="logistic", clinical_predictors=clinical_predictors,
        min_events=min_events,
    )  # fmt: skip


def cox_models(
    participants: pd.DataFrame,
    biomarkers: pd.DataFrame,
    *,
    clinical_predictors: Mapping[str, str] = DEFAULT_CLINICAL_PREDICTORS,
    min_events: int = 5,
) -> pd.DataFrame:
    """Univariable Cox models of every outcome that has event *and* days columns.

    Parameters and result as :func:`logistic_models`, with ``model`` ``cox`` and ``estimate``
    the hazard ratio.
    """
    return _analyse(
        participants, biomarkers, model="cox", clinical_predictors=clinical_predictors,
        min_events=min_events,
    )  # fmt: skip


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
            lo, hi = surv ** math.exp(_Z95 * se), surv ** math.exp(-_Z95 * se)
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
    parts = _subject_index(participants)
    frames = []
    for outcome, (event_col, days_col) in OUTCOMES.items():
        if not (_present(parts, event_col) and _present(parts, days_col)):
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


@dataclass(frozen=True)
class OutcomeResults:
    """The tables of :func:`outcome_analyses`.

    Attributes
    ----------
    logistic, cox, km : pandas.DataFrame
        See :func:`logistic_models`, :func:`cox_models`, :func:`outcome_km`.
    missing_columns : pandas.DataFrame
        See :func:`missing_columns`.
    biomarkers : pandas.DataFrame
        The analysed biomarkers (:func:`biomarker_table`).
    """

    logistic: pd.DataFrame
    cox: pd.DataFrame
    km: pd.DataFrame
    missing_columns: pd.DataFrame
    biomarkers: pd.DataFrame

    @property
    def absent(self) -> list[str]:
        """Names of the clinical columns participants.tsv lacks."""
        mc = self.missing_columns
        return mc.loc[~mc["present"].astype(bool), "column"].tolist()


def outcome_analyses(
    participants: pd.DataFrame,
    response: pd.DataFrame,
    *,
    rois: Sequence[str] | None = DERIVED_ROIS,
    maps: Sequence[str] | None = None,
    stats: Sequence[str] = ("median",),
    biomarkers: Sequence[str] = ("baseline", "pct_change"),
    clinical_predictors: Mapping[str, str] = DEFAULT_CLINICAL_PREDICTORS,
    min_events: int = 5,
    km_groups: Mapping[str, pd.Series] | None = None,
) -> OutcomeResults:
    """All outcome analyses of a cohort.

    Parameters
    ----------
    participants : pandas.DataFrame
        From :func:`qmri.tables.read_participants_tsv`.
    response : pandas.DataFrame
        Cohort response table.
    rois, maps, stats, biomarkers
        Biomarker selection, see :func:`biomarker_table`.
    clinical_predictors : mapping of str to str
        participants.tsv column -> unit, tried as predictors when present.
    min_events : int, default 5
        Fewest events (and, for logistic regression, non-events) per model.
    km_groups : mapping of str to pandas.Series, optional
        Extra Kaplan-Meier strata, see :func:`outcome_km`.

    Returns
    -------
    OutcomeResults
    """
    markers = biomarker_table(response, rois=rois, maps=maps, stats=stats, biomarkers=biomarkers)
    kw = {"clinical_predictors": clinical_predictors, "min_events": min_events}
    return OutcomeResults(
        logistic=logistic_models(participants, markers, **kw),
        cox=cox_models(participants, markers, **kw),
        km=outcome_km(participants, groups=km_groups),
        missing_columns=missing_columns(participants),
        biomarkers=markers,
    )


def write_outcome_tables(results: OutcomeResults, cohort_dir: str | Path) -> dict[str, Path]:
    """Write the outcome tables under ``cohort_dir`` with :func:`qmri.io.write_csv`.

    Files: ``outcomes_logistic.csv``, ``outcomes_cox.csv``, ``outcomes_km.csv``,
    ``outcomes_missing_columns.csv``.

    Returns
    -------
    dict of str to Path
        Table name (``logistic``, ``cox``, ``km``, ``missing_columns``) -> file written.
    """
    cohort_dir = Path(cohort_dir)
    out = {}
    for name in ("logistic", "cox", "km", "missing_columns"):
        out[name] = write_csv(getattr(results, name), cohort_dir / f"outcomes_{name}.csv")
    return out
