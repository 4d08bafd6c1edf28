"""Outcome analyses: qMRI biomarkers versus VCF, RIM and local failure (contract, section 5).

:func:`outcome_analyses` runs every analysis of a cohort on the clinical columns of
``participants.tsv`` (:func:`qmri.tables.read_participants_tsv`) and the cohort
``response.csv``; :func:`write_outcome_tables` writes the tables. The parts live in modules of
one job each, and every public name of theirs is also importable from here:

:mod:`qmri.outcome_data`
    The outcomes (:data:`OUTCOMES`: ``vcf``, ``rim``, ``local_failure``, each an event and a
    days column), the optional clinical columns (:func:`missing_columns`: present ones are
    used, absent ones listed, never guessed) and the biomarkers (:func:`biomarker_table`:
    baseline value, change and percent change per ROI, map and statistic; clinical
    predictors).
:mod:`qmri.outcome_models`
    Univariable logistic regression (:func:`fit_logistic`, :func:`logistic_models`) and Cox
    proportional hazards (:func:`fit_cox`, :func:`cox_models`): odds / hazard ratios per unit
    and per SD with 95 % Wald limits, Benjamini-Hochberg q-values per outcome, the landmark
    rule for follow-up biomarkers, and a ``note`` instead of an exception for a model that
    cannot be estimated.
:mod:`qmri.survival`
    Kaplan-Meier curves (:func:`kaplan_meier`, :func:`outcome_km`) with Greenwood variance and
    log(-log) 95 % limits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from qmri.io import write_csv
from qmri.outcome_data import (
    BIOMARKER_COLUMNS,
    CLINICAL_COLUMNS,
    DEFAULT_CLINICAL_PREDICTORS,
    OUTCOMES,
    biomarker_table,
    missing_columns,
)
from qmri.outcome_models import MODEL_COLUMNS, cox_models, fit_cox, fit_logistic, logistic_models
from qmri.rois import DERIVED_ROIS
from qmri.survival import KM_COLUMNS, kaplan_meier, outcome_km

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
