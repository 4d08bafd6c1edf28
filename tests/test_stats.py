"""Tests of qmri.stats: ROI statistics against numpy/scipy computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from qmri.stats import STAT_COLUMNS, roi_statistics, session_roistats


def test_columns_are_the_contract_columns():
    assert STAT_COLUMNS == (
        "n_voxels",
        "volume_ml",
        "valid_fraction",
        "mean",
        "sd",
        "median",
        "p10",
        "p25",
        "p75",
        "p90",
        "iqr",
        "skewness",
        "kurtosis",
    )


def test_statistics_match_numpy_and_scipy():
    rng = np.random.default_rng(0)
    values = rng.gamma(2.0, 0.5, size=(5, 6, 7))
    roi = np.zeros(values.shape, dtype=bool)
    roi[1:4, 1:5, 2:6] = True  # 48 voxels
    out = roi_statistics(values, roi, None, 0.008)
    x = values[roi]
    assert list(out) == list(STAT_COLUMNS)
    assert out["n_voxels"] == 48
    assert isinstance(out["n_voxels"], int)
    assert out["volume_ml"] == pytest.approx(48 * 0.008)
    assert out["valid_fraction"] == 1.0
    assert out["mean"] == pytest.approx(x.mean(), rel=1e-12)
    assert out["sd"] == pytest.approx(x.std(ddof=1), rel=1e-12)
    assert out["median"] == pytest.approx(np.median(x), rel=1e-12)
    for q in (10, 25, 75, 90):
        assert out[f"p{q}"] == pytest.approx(np.percentile(x, q), rel=1e-12)
    assert out["iqr"] == pytest.approx(np.percentile(x, 75) - np.percentile(x, 25), rel=1e-12)
    assert out["skewness"] == pytest.approx(sps.skew(x, bias=False), rel=1e-12)
    assert out["kurtosis"] == pytest.approx(sps.kurtosis(x, fisher=True, bias=False), rel=1e-12)
    # the bias-corrected estimators are pandas' too
    assert out["skewness"] == pytest.approx(pd.Series(x).skew(), rel=1e-10)
    assert out["kurtosis"] == pytest.approx(pd.Series(x).kurt(), rel=1e-10)


def test_hand_values():
    values = np.array([1.0, 2.0, 3.0, 4.0, 10.0])
    out = roi_statistics(values, np.ones(5, bool), None, 1.0)
    assert out["mean"] == 4.0
    assert out["median"] == 3.0
    assert out["p25"] == 2.0
    assert out["p75"] == 4.0
    assert out["p10"] == pytest.approx(1.4)  # linear: 1 + 0.4 * (2 - 1)
    assert out["p90"] == pytest.approx(7.6)  # 4 + 0.6 * (10 - 4)
    assert out["iqr"] == 2.0
    assert out["sd"] == pytest.approx(math.sqrt((9 + 4 + 1 + 0 + 36) / 4))


def test_failed_voxels_are_excluded_not_zero():
    values = np.array([1.0, np.nan, 3.0, np.inf, 5.0, 7.0, 100.0, 9.0])
    roi = np.array([1, 1, 1, 1, 1, 1, 0, 1], dtype=bool)  # 7 voxels, 100 is outside
    valid = np.array([1, 1, 1, 1, 1, 0, 1, 1], dtype=bool)  # 7.0 failed per fit mask
    out = roi_statistics(values, roi, valid, 0.5)
    assert out["n_voxels"] == 7
    assert out["volume_ml"] == 3.5
    assert out["valid_fraction"] == pytest.approx(4 / 7)  # 1, 3, 5, 9
    assert out["mean"] == pytest.approx(np.mean([1, 3, 5, 9]))
    assert out["median"] == pytest.approx(4.0)
    assert out["sd"] == pytest.approx(np.std([1, 3, 5, 9], ddof=1))
    without_mask = roi_statistics(values, roi, None, 0.5)
    assert without_mask["valid_fraction"] == pytest.approx(5 / 7)
    assert without_mask["mean"] == pytest.approx(np.mean([1, 3, 5, 7, 9]))


def test_empty_roi_gives_zero_voxels_and_nan():
    out = roi_statistics(np.arange(8.0), np.zeros(8, bool), None, 1.0)
    assert out["n_voxels"] == 0
    assert out["volume_ml"] == 0.0
    for col in STAT_COLUMNS[2:]:
        assert math.isnan(out[col]), col


def test_roi_without_valid_voxels():
    out = roi_statistics(np.full(4, np.nan), np.ones(4, bool), None, 1.0)
    assert out["n_voxels"] == 4
    assert out["valid_fraction"] == 0.0
    assert all(math.isnan(out[c]) for c in STAT_COLUMNS[3:])


@pytest.mark.parametrize("n", [1, 2, 3])
def test_small_samples_give_nan_without_warnings(n):
    values = np.array([1.0, 2.0, 4.0])[:n]
    out = roi_statistics(values, np.ones(n, bool), None, 1.0)
    assert out["mean"] == pytest.approx(values.mean())
    assert math.isnan(out["sd"]) == (n < 2)
    assert math.isnan(out["skewness"])
    assert math.isnan(out["kurtosis"])


def test_constant_values_give_nan_shape_without_warnings():
    # pytest turns warnings into errors: scipy's precision-loss warning must not escape
    out = roi_statistics(np.full(10, 0.00089), np.ones(10, bool), None, 1.0)
    assert out["sd"] == 0.0
    assert math.isnan(out["skewness"])
    assert math.isnan(out["kurtosis"])


def test_shape_mismatch():
    with pytest.raises(ValueError, match="ROI shape"):
        roi_statistics(np.zeros((2, 2)), np.zeros((2, 3), bool), None, 1.0)
    with pytest.raises(ValueError, match="voxel volume"):
        roi_statistics(np.zeros(2), np.ones(2, bool), None, 0.0)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.one_of(st.floats(-1e3, 1e3), st.just(float("nan"))),
        min_size=1,
        max_size=40,
    )
)
def test_nan_voxels_never_change_the_statistics(raw):
    values = np.array(raw)
    roi = np.ones(values.size, bool)
    out = roi_statistics(values, roi, None, 1.0)
    finite = values[np.isfinite(values)]
    ref = roi_statistics(finite, np.ones(finite.size, bool), None, 1.0)
    assert out["n_voxels"] == values.size
    assert out["valid_fraction"] == pytest.approx(finite.size / values.size)
    for col in STAT_COLUMNS[3:]:
        assert out[col] == pytest.approx(ref[col], nan_ok=True)


def test_session_roistats_maps_on_different_grids():
    t1 = np.arange(24.0).reshape(2, 3, 4)
    adc = np.array([[1e-3, 2e-3], [np.nan, 4e-3]])
    fitmask = np.array([[1, 1], [1, 0]], dtype=np.uint8)
    rois_t1 = {"tumor": t1 > 20, "ctv": t1 > 10, "vb_L1": t1 < 0}
    rois_adc = {"ctv": np.ones((2, 2), bool), "tumor": np.array([[1, 0], [0, 0]], bool)}
    df = session_roistats(
        {"T1": (t1, "s", None), "ADC": (adc, "mm^2/s", fitmask)},
        {"T1": rois_t1, "ADC": rois_adc},
        {"T1": 0.001, "ADC": 0.027},
    )
    assert list(df.columns) == ["roi", "map", "unit", *STAT_COLUMNS]
    assert list(zip(df["roi"], df["map"], strict=True)) == [
        ("tumor", "T1"),
        ("tumor", "ADC"),
        ("ctv", "T1"),
        ("ctv", "ADC"),
        ("vb_L1", "T1"),
    ]
    assert df["n_voxels"].dtype == np.int64
    row = df[(df["roi"] == "ctv") & (df["map"] == "ADC")].iloc[0]
    assert row["unit"] == "mm^2/s"
    assert row["n_voxels"] == 4
    assert row["volume_ml"] == pytest.approx(4 * 0.027)
    assert row["valid_fraction"] == 0.5  # NaN voxel and fitmask-0 voxel fail
    assert row["mean"] == pytest.approx(1.5e-3)
    row = df[(df["roi"] == "tumor") & (df["map"] == "T1")].iloc[0]
    assert row["n_voxels"] == 3
    assert row["mean"] == pytest.approx(22.0)
    empty = df[df["roi"] == "vb_L1"].iloc[0]
    assert empty["n_voxels"] == 0
    assert np.isnan(empty["mean"])
    with pytest.raises(KeyError, match="no ROI masks given for map 'T2'"):
        session_roistats({"T2": (t1, "s", None)}, {"T1": rois_t1}, {"T2": 1.0})
