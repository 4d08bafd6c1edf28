"""Tumour-only versus tumour-plus-vertebra delineation: table arithmetic."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from qmri.delineation import (
    DELINEATION_COLUMNS,
    DELINEATION_SUMMARY_COLUMNS,
    PLAN_DELINEATION_COLUMNS,
    delineation_summary,
    delineation_table,
    plan_delineation_table,
)
from qmri.tables import ROISTATS_COLUMNS


def _roistats() -> pd.DataFrame:
    rows = []
    # (subject, session, day, roi, map, volume_ml, mean, median)
    spec = [
        ("01", "pre", -2, "tumor", "T1", 2.0, 1.0, 0.9),
        ("01", "pre", -2, "ctv", "T1", 10.0, 1.5, 1.2),
        ("01", "pre", -2, "vb_control", "T1", 12.0, 0.7, 0.7),
        ("01", "3m", 90, "tumor", "T1", 2.0, 1.2, 1.0),
        ("01", "3m", 90, "ctv", "T1", 10.0, 1.2, 1.1),
        ("02", "pre", 0, "tumor", "T1", 4.0, 2.0, 2.0),
        ("02", "pre", 0, "ctv", "T1", 6.0, 1.0, 1.5),
        ("02", "3m", 95, "ctv", "T1", 6.0, 1.1, 1.4),  # tumour row missing
    ]
    for s, ses, day, roi, name, vol, mean, median in spec:
        row = dict.fromkeys(ROISTATS_COLUMNS, np.nan)
        row.update(subject=s, session=ses, days_from_sbrt=day, roi=roi, map=name, unit="s",
                   n_voxels=int(vol * 10), volume_ml=vol, valid_fraction=1.0, mean=mean,
                   median=median)  # fmt: skip
        rows.append(row)
    return pd.DataFrame(rows)[list(ROISTATS_COLUMNS)]


def test_side_by_side_arithmetic():
    table = delineation_table(_roistats(), stats=("mean", "median"))
    assert list(table.columns) == list(DELINEATION_COLUMNS)
    assert len(table) == 8  # 4 (subject, session) x 2 stats
    r = table.iloc[0]
    assert (r["subject"], r["session"], r["stat"], r["session_kind"]) == (
        "01", "pre", "mean", "baseline",
    )  # fmt: skip
    assert r["tumor"] == 1.0
    assert r["ctv"] == 1.5
    assert r["difference"] == pytest.approx(0.5)
    assert r["pct_difference"] == pytest.approx(50.0)
    assert r["tumor_volume_ml"] == 2.0
    assert r["ctv_volume_ml"] == 10.0
    assert r["added_volume_ml"] == pytest.approx(8.0)
    med = table.iloc[1]
    assert med["stat"] == "median"
    assert med["difference"] == pytest.approx(0.3)
    follow = table.loc[(table["subject"] == "01") & (table["session"] == "3m")]
    assert set(follow["session_kind"]) == {"followup"}
    lone = table.loc[(table["subject"] == "02") & (table["session"] == "3m")].iloc[0]
    assert np.isnan(lone["tumor"])
    assert lone["ctv"] == 1.1
    assert np.isnan(lone["difference"])


def test_cohort_summary():
    summary = delineation_summary(delineation_table(_roistats(), stats=("mean", "median")))
    assert list(summary.columns) == list(DELINEATION_SUMMARY_COLUMNS)
    base = summary.loc[(summary["stat"] == "mean") & (summary["session_kind"] == "baseline")]
    base = base.iloc[0]
    # differences 0.5 (sub-01) and -1.0 (sub-02)
    assert base["n_subjects"] == 2
    assert base["n_sessions"] == 2
    assert base["mean_difference"] == pytest.approx(-0.25)
    assert base["median_difference"] == pytest.approx(-0.25)
    assert base["sd_difference"] == pytest.approx(np.std([0.5, -1.0], ddof=1))
    assert base["mean_pct_difference"] == pytest.approx((50.0 - 50.0) / 2)
    assert base["median_added_volume_ml"] == pytest.approx(5.0)
    fu = summary.loc[(summary["stat"] == "mean") & (summary["session_kind"] == "followup")]
    assert fu.iloc[0]["n_subjects"] == 1  # sub-02 lacks its tumour row
    assert summary["session_kind"].tolist() == ["baseline", "followup"] * 2


def test_plan_ctv_beside_the_derived_ctv():
    roistats = _roistats()
    assert plan_delineation_table(roistats).empty  # no ctv_plan label: no rows
    plan = roistats[roistats["roi"] == "ctv"].assign(roi="ctv_plan")
    plan = plan.assign(mean=plan["mean"] * 0.8, volume_ml=plan["volume_ml"] - 2.0)
    table = plan_delineation_table(pd.concat([roistats, plan]), stats=("mean",))
    assert list(table.columns) == list(PLAN_DELINEATION_COLUMNS)
    assert len(table) == 4  # one row per (subject, session) with a ctv
    np.testing.assert_allclose(table["difference"], table["ctv"] - table["ctv_plan"])
    np.testing.assert_allclose(table["pct_difference"], 25.0)  # ctv = plan / 0.8
    np.testing.assert_allclose(table["added_volume_ml"], 2.0)
