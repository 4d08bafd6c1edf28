"""Univariable outcome models: logistic regression and Cox proportional hazards.

One model per outcome x biomarker (:func:`logistic_models`, :func:`cox_models`), on the
biomarkers of :func:`qmri.outcome_data.biomarker_table` and the clinical predictors of
participants.tsv:

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
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from qmri.outcome_data import DEFAULT_CLINICAL_PREDICTORS, OUTCOMES, Z95, by_subject, has_values

__all__ = ["MODEL_COLUMNS", "cox_models", "fit_cox", "fit_logistic", "logistic_models"]

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

#: |coefficient per SD| above which an estimate is taken as infinite (OR/HR per SD > e^10).
_MAX_STD_COEF = 10.0


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
                est, lo, hi = (float(np.exp(v)) for v in (c, c - Z95 * se, c + Z95 * se))
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
        if not has_values(participants, col):
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
    parts = by_subject(participants)
    rows: list[dict] = []
    for outcome, (event_col, days_col) in OUTCOMES.items():
        if not has_values(parts, event_col):
            continue
        has_days = has_values(parts, days_col)
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
