"""Outcome analyses on a simulated cohort with known associations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from qmri.outcomes import (
    KM_COLUMNS,
    MODEL_COLUMNS,
    biomarker_table,
    cox_models,
    fit_cox,
    fit_logistic,
    kaplan_meier,
    logistic_models,
    missing_columns,
    outcome_analyses,
    write_outcome_tables,
)
from qmri.tables import ROISTATS_COLUMNS, response_table

N = 60
T1_SD_S = 0.12  # s, spread of baseline marrow T1 in the phantom
ADC_PCT_SD = 15.0  # %, spread of the tumour ADC rise at 3 months


def _cohort(seed: int = 7) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Roistats, response and participants tables of a simulated cohort.

    VCF: exponential times whose hazard rises with baseline marrow T1 (HR e^1 per T1_SD_S).
    Local failure: after a 90-day landmark, hazard falls as the tumour ADC rises (HR e^-1 per
    ADC_PCT_SD). RIM columns, dose and fractions are absent.
    """
    rng = np.random.default_rng(seed)
    t1_base = rng.normal(0.9, T1_SD_S, N)
    adc_pct = rng.normal(20.0, ADC_PCT_SD, N)
    z_t1 = (t1_base - 0.9) / T1_SD_S
    z_adc = (adc_pct - 20.0) / ADC_PCT_SD
    t_vcf = rng.exponential(400.0 * np.exp(-z_t1))
    censor = rng.uniform(200.0, 900.0, N)
    t_lf = 90.0 + rng.exponential(500.0 * np.exp(z_adc))
    adc_base = 0.001 * (1 + 0.1 * rng.normal(size=N))  # mm^2/s
    rows = []
    for i in range(N):
        for session, day in (("pre", -5), ("3m", 90)):
            for roi, name, unit, base in (
                ("tumor", "ADC", "mm^2/s", adc_base[i]),
                ("vb_treated_nontumor", "T1", "s", t1_base[i]),
            ):
                value = base
                if session == "3m":
                    value = base * (1 + adc_pct[i] / 100) if name == "ADC" else base * 0.8
                rows.append(
                    {"subject": f"{i + 1:02d}", "session": session, "days_from_sbrt": day,
                     "roi": roi, "map": name, "unit": unit, "n_voxels": 100, "volume_ml": 1.0,
                     "valid_fraction": 1.0, "mean": value, "sd": 0.1 * value, "median": value,
                     "p10": value, "p25": value, "p75": value, "p90": value, "iqr": 0.0,
                     "skewness": 0.0, "kurtosis": 0.0}
                )  # fmt: skip
    roistats = pd.DataFrame(rows)[list(ROISTATS_COLUMNS)]
    response = pd.concat(
        [response_table(g, "pre") for _, g in roistats.groupby("subject")], ignore_index=True
    )
    participants = pd.DataFrame(
        {
            "participant_id": [f"sub-{i + 1:02d}" for i in range(N)],
            "vcf_event": (t_vcf <= censor).astype(float),
            "vcf_days": np.minimum(t_vcf, censor),
            "local_failure": (t_lf <= censor).astype(float),
            "local_failure_days": np.minimum(t_lf, censor),
            "sins": rng.integers(3, 13, N).astype(float),
        }
    )
    return roistats, response, participants


@pytest.fixture(scope="module")
def results():
    _, response, participants = _cohort()
    return outcome_analyses(participants, response)


def _row(table, outcome, roi, name, biomarker, per="sd"):
    sel = table.loc[
        (table["outcome"] == outcome) & (table["roi"] == roi) & (table["map"] == name)
        & (table["biomarker"] == biomarker) & (table["effect_per"] == per)
    ]  # fmt: skip
    assert len(sel) == 1
    return sel.iloc[0]


def test_logistic_recovers_a_positive_association(results):
    row = _row(results.logistic, "vcf", "vb_treated_nontumor", "T1", "baseline")
    assert row["note"] == ""
    assert row["estimate"] > 1
    assert row["ci_lower"] > 1
    assert row["ci_upper"] > row["estimate"]
    assert row["p_value"] < 0.05
    assert row["n"] == N
    assert 0 < row["n_events"] < N
    # the per-unit row is the same model: OR per unit = OR per SD ** (1 / SD)
    unit = _row(results.logistic, "vcf", "vb_treated_nontumor", "T1", "baseline", "unit")
    assert unit["increment"] == 1.0
    assert row["increment"] == pytest.approx(0.1067, abs=0.02)  # sample SD of T1 (s)
    assert np.log(unit["estimate"]) == pytest.approx(np.log(row["estimate"]) / row["increment"])
    assert unit["p_value"] == row["p_value"]
    assert unit["q_value"] == row["q_value"]


def test_cox_recovers_hazard_ratios_of_both_signs(results):
    vcf = _row(results.cox, "vcf", "vb_treated_nontumor", "T1", "baseline")
    assert vcf["estimate"] > 1
    assert vcf["ci_lower"] > 1
    lf = _row(results.cox, "local_failure", "tumor", "ADC", "pct_change")
    assert lf["estimate"] < 1
    assert lf["ci_upper"] < 1
    # true HR per sample SD is exp(-SD / ADC_PCT_SD); the 95 % CI covers it
    true_hr = np.exp(-lf["increment"] / ADC_PCT_SD)
    assert lf["ci_lower"] < true_hr < lf["ci_upper"]
    assert lf["biomarker_unit"] == "%"


def test_landmark_excludes_events_before_the_scan(results):
    _, _, participants = _cohort()
    early = participants["vcf_days"] <= 90
    row = _row(results.cox, "vcf", "tumor", "ADC", "pct_change")
    assert row["n_excluded"] == early.sum() > 0
    assert row["n"] == N - early.sum()
    assert _row(results.cox, "vcf", "tumor", "ADC", "baseline")["n_excluded"] == 0


def test_constant_biomarker_gives_a_note_not_a_number(results):
    # the marrow T1 falls by exactly 20 % in everyone: no information
    row = _row(results.logistic, "vcf", "vb_treated_nontumor", "T1", "pct_change")
    assert row["note"] == "biomarker is constant"
    assert np.isnan(row["estimate"])
    assert np.isnan(row["p_value"])


def test_absent_columns_are_reported_and_not_analysed(results):
    assert set(results.absent) == {
        "treated_levels", "dose_gy", "fractions", "rim_event", "rim_days", "nprs_baseline",
    }  # fmt: skip
    mc = results.missing_columns
    assert mc.set_index("column").loc["vcf_event", "present"]
    for table in (results.logistic, results.cox, results.km):
        assert "rim" not in set(table["outcome"])
    assert "dose_gy" not in set(results.logistic["map"])
    assert "sins" in set(results.logistic["map"])


def test_event_column_without_days_gives_logistic_but_no_cox():
    _, response, participants = _cohort()
    participants = participants.drop(columns=["vcf_days"])
    markers = biomarker_table(response)
    assert "vcf" in set(logistic_models(participants, markers)["outcome"])
    assert "vcf" not in set(cox_models(participants, markers)["outcome"])
    assert "vcf_days" in missing_columns(participants).query("~present")["column"].tolist()


def test_perfect_separation_and_too_few_events_do_not_crash():
    x = np.arange(20.0)
    y = (x >= 10).astype(float)
    fit = fit_logistic(x, y)
    assert "separation" in fit.note
    assert np.isnan(fit.coef_sd)
    few = fit_logistic(x, (x >= 17).astype(float), min_events=5)
    assert "too few" in few.note
    assert few.n_events == 3
    # Cox with every event in the highest-x subjects first: monotone likelihood
    cox = fit_cox(x, 100.0 - x, np.ones(20))
    assert cox.note.startswith("fit not valid")
    # through the table layer: rows with empty estimates and the note
    participants = pd.DataFrame(
        {"participant_id": [f"sub-{i:02d}" for i in range(20)], "vcf_event": y}
    )
    markers = pd.DataFrame(
        {"subject": [f"{i:02d}" for i in range(20)], "roi": "tumor", "map": "ADC",
         "stat": "median", "biomarker": "baseline", "timepoint": "baseline",
         "days_from_sbrt": -3, "value": x, "biomarker_unit": "mm^2/s"}
    )  # fmt: skip
    table = logistic_models(participants, markers, clinical_predictors={})
    assert list(table.columns) == list(MODEL_COLUMNS)
    assert len(table) == 2
    assert table["estimate"].isna().all()
    assert table["note"].str.contains("separation").all()


def test_logistic_ci_covers_the_true_odds_ratio():
    rng = np.random.default_rng(3)
    x = rng.normal(5.0, 2.0, 200)
    p = 1 / (1 + np.exp(-(-0.5 + 0.6 * (x - 5.0))))  # OR 1.82 per unit
    fit = fit_logistic(x, (rng.random(200) < p).astype(float))
    lo, hi = (np.exp((fit.coef_sd + s * 1.96 * fit.se_sd) / fit.sd) for s in (-1, 1))
    assert lo < np.exp(0.6) < hi
    assert lo > 1


def test_kaplan_meier_hand_computed():
    km = kaplan_meier(np.array([1, 2, 2, 3, 4.0]), np.array([1, 1, 0, 1, 0]))
    assert km["time_days"].tolist() == [0, 1, 2, 3, 4]
    assert km["n_at_risk"].tolist() == [5, 5, 4, 2, 1]
    assert km["survival"].to_numpy() == pytest.approx([1, 0.8, 0.6, 0.3, 0.3])
    # Greenwood: var S(1) = 0.8^2 * 1/(5*4); log-log limits bracket the estimate
    row = km.iloc[1]
    assert row["ci_lower"] < 0.8 < row["ci_upper"] <= 1


def test_km_table_monotone_and_starting_at_one(results):
    km = results.km
    assert list(km.columns) == list(KM_COLUMNS)
    for _, g in km.groupby(["outcome", "group"]):
        s = g["survival"].to_numpy()
        assert s[0] == 1.0
        assert g["time_days"].iloc[0] == 0
        assert np.all(np.diff(s) <= 0)
        assert np.all(np.diff(g["time_days"]) > 0)
        assert g["n_events"].sum() + g["n_censored"].sum() == g["n_at_risk"].iloc[0]


def test_tables_write_and_load_without_options(results, tmp_path):
    paths = write_outcome_tables(results, tmp_path / "cohort")
    assert sorted(p.name for p in paths.values()) == [
        "outcomes_cox.csv", "outcomes_km.csv", "outcomes_logistic.csv",
        "outcomes_missing_columns.csv",
    ]  # fmt: skip
    back = pd.read_csv(paths["logistic"])
    assert list(back.columns) == list(MODEL_COLUMNS)
    assert len(back) == len(results.logistic)
    first = paths["cox"].read_bytes()
    write_outcome_tables(results, tmp_path / "cohort")
    assert paths["cox"].read_bytes() == first


def test_q_values_are_benjamini_hochberg_per_outcome(results):
    for _, g in results.logistic.loc[results.logistic["effect_per"] == "sd"].groupby("outcome"):
        g = g.dropna(subset=["p_value"])
        p = np.sort(g["p_value"].to_numpy())
        m = p.size
        expected = np.minimum.accumulate((p * m / np.arange(1, m + 1))[::-1])[::-1].clip(max=1)
        np.testing.assert_allclose(np.sort(g["q_value"].to_numpy()), expected)
