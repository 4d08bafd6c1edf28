"""What the outcome analyses read: outcome and clinical columns, and the biomarker table.

Inputs are the clinical columns of ``participants.tsv`` (:func:`qmri.tables.read_participants_tsv`)
and the cohort ``response.csv``. Whatever clinical columns are present are used; absent ones are
listed by :func:`missing_columns`, never guessed.

Outcomes (:data:`OUTCOMES`): ``vcf`` (vertebral compression fracture: ``vcf_event``,
``vcf_days``), ``rim`` (radiation-induced myelopathy: ``rim_event``, ``rim_days``) and
``local_failure`` (``local_failure``, ``local_failure_days``). Event columns are 0/1; days count
from SBRT to the event or, for subjects without one, to the last follow-up (censoring).

Biomarkers (:func:`biomarker_table`), per ROI, map and statistic (default the ROI median):

``baseline``
    The value at the baseline session (``timepoint`` ``baseline``), in map units.
``pct_change`` / ``change``
    Change from baseline at a follow-up session (``timepoint`` = session label, so sessions are
    matched across subjects by label), in % / map units.
clinical predictors
    ``sins``, ``dose_gy``, ... from participants.tsv (``biomarker`` ``clinical``; the defaults:
    :data:`DEFAULT_CLINICAL_PREDICTORS`).

The models on these are in :mod:`qmri.outcome_models` (logistic, Cox) and
:mod:`qmri.survival` (Kaplan-Meier); :mod:`qmri.outcomes` runs them all.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from qmri.rois import DERIVED_ROIS
from qmri.tables import RESPONSE_COLUMNS, subject_label

__all__ = [
    "BIOMARKER_COLUMNS",
    "CLINICAL_COLUMNS",
    "DEFAULT_CLINICAL_PREDICTORS",
    "OUTCOMES",
    "Z95",
    "biomarker_table",
    "by_subject",
    "has_values",
    "missing_columns",
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

#: Two-sided 95 % quantile of the standard normal distribution (every 95 % confidence interval
#: of the outcome tables).
Z95 = float(sps.norm.ppf(0.975))


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


def has_values(participants: pd.DataFrame, col: str) -> bool:
    """Whether participants.tsv has the column ``col`` with at least one non-empty cell."""
    return col in participants.columns and bool(participants[col].notna().any())


def by_subject(participants: pd.DataFrame) -> pd.DataFrame:
    """A copy of participants.tsv indexed by subject label (``"01"`` for ``sub-01``)."""
    df = participants.copy()
    df.index = df["participant_id"].map(subject_label).astype(str)
    return df


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
