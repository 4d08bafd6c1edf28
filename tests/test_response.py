"""Response flags against hand-computed values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from qmri.response import (
    DEFAULT_THRESHOLDS,
    FLAG_COLUMNS,
    flag_name,
    parse_thresholds,
    response_flags,
)
from qmri.tables import RESPONSE_COLUMNS


def _response() -> pd.DataFrame:
    """Two subjects; rows (session, day, roi, map, stat, baseline, value)."""
    rows = [
        ("01", "pre", -3, "tumor", "vp", "median", 0.10, 0.10),
        ("01", "1m", 30, "tumor", "vp", "median", 0.10, 0.075),  # -25 %
        ("01", "1m", 30, "tumor", "vp", "mean", 0.10, 0.09),  # -10 %
        ("01", "1m", 30, "ctv", "vp", "median", 0.10, np.nan),  # missing
        ("01", "1m", 30, "vb_control", "vp", "median", 0.10, 0.01),  # ROI not flagged
        ("01", "1m", 30, "tumor", "ADC", "median", 0.001, 0.0013),  # +30 %
        ("01", "1m", 30, "tumor", "T1", "median", 1.0, 0.5),  # no rule for T1
        ("02", "scr", -20, "tumor", "ADC", "median", 0.001, 0.002),  # earlier pre-treatment
        ("02", "pre", 0, "tumor", "ADC", "median", 0.001, 0.001),
        ("02", "3m", 90, "tumor", "ADC", "median", 0.001, 0.00125),  # exactly +25 %: not > 25
        ("02", "3m", 90, "tumor", "Ktrans", "median", 0.2, 0.1),  # -50 %
    ]
    df = pd.DataFrame(
        rows, columns=["subject", "session", "days_from_sbrt", "roi", "map", "stat",
                       "baseline", "value"],
    )  # fmt: skip
    df["unit"] = ""
    df["change"] = df["value"] - df["baseline"]
    df["pct_change"] = 100 * df["change"] / df["baseline"]
    return df[list(RESPONSE_COLUMNS)]


def test_flags_match_hand_computed_values():
    flags = response_flags(_response())
    assert list(flags.columns) == list(FLAG_COLUMNS)
    got = {
        (r.subject, r.session, r.roi, r.map, r.stat, r.flag): r.value for r in flags.itertuples()
    }
    assert got == {
        ("01", "1m", "tumor", "vp", "median", "vp_fall_gt_20pct"): True,
        ("01", "1m", "tumor", "vp", "mean", "vp_fall_gt_20pct"): False,
        ("01", "1m", "ctv", "vp", "median", "vp_fall_gt_20pct"): pd.NA,
        ("01", "1m", "tumor", "ADC", "median", "adc_rise_gt_25pct"): True,
        ("02", "3m", "tumor", "ADC", "median", "adc_rise_gt_25pct"): False,
        ("02", "3m", "tumor", "Ktrans", "median", "ktrans_fall_gt_30pct"): True,
    }
    vp = flags.loc[flags["flag"] == "vp_fall_gt_20pct"].iloc[0]
    assert vp["threshold_pct"] == 20.0
    assert vp["direction"] == "fall"
    assert vp["pct_change"] == pytest.approx(-25.0)
    # order follows the response table
    assert flags["session"].tolist() == ["1m"] * 4 + ["3m"] * 2


def test_custom_thresholds_rename_the_flag():
    flags = response_flags(_response(), {"vp_fall": 5, "adc_rise": 12.5}, rois=None)
    names = set(flags["flag"])
    assert names == {"vp_fall_gt_5pct", "adc_rise_gt_12.5pct"}
    mean_row = flags.loc[(flags["stat"] == "mean") & (flags["map"] == "vp")].iloc[0]
    assert bool(mean_row["value"]) is True  # -10 % is a fall of more than 5 %
    assert (flags["roi"] == "vb_control").any()  # rois=None flags every ROI


def test_flag_table_writes_empty_cells_for_missing(tmp_path):
    from qmri.io import write_csv

    path = write_csv(response_flags(_response()), tmp_path / "flags.csv")
    back = pd.read_csv(path)
    assert back["value"].isna().sum() == 1
    assert set(back["value"].dropna()) == {True, False}


@pytest.mark.parametrize(
    ("bad", "error"),
    [({"vp": 20}, ValueError), ({"vp_drop": 20}, ValueError), ({"vp_fall": -1}, ValueError),
     ({"vp_fall": "20"}, TypeError)],
)  # fmt: skip
def test_bad_thresholds_are_rejected(bad, error):
    with pytest.raises(error, match=next(iter(bad))):
        parse_thresholds(bad)


def test_defaults_and_names():
    assert [r.name for r in parse_thresholds()] == [
        flag_name(k.rsplit("_", 1)[0], k.rsplit("_", 1)[1], v)
        for k, v in DEFAULT_THRESHOLDS.items()
    ]
    assert flag_name("ADC", "rise", 25.0) == "adc_rise_gt_25pct"
