"""Cohort figures: valid, non-blank, deterministic PNGs with loadable CSVs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from qmri.figures_cohort import (
    TRAJECTORY_COLUMNS,
    WATERFALL_COLUMNS,
    km_figure,
    trajectory_figure,
    waterfall_figure,
)
from qmri.outcomes import KM_COLUMNS, outcome_km
from qmri.tables import ROISTATS_COLUMNS, response_table


def _roistats(n: int = 6) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        for session, day in (("pre", -4), ("1m", 30), ("3m", 92)):
            for name, unit, base in (("ADC", "mm^2/s", 1e-3), ("T1", "s", 1.0)):
                value = base * (1 + 0.1 * rng.normal() + (day > 0) * 0.2 * rng.normal())
                row = dict.fromkeys(ROISTATS_COLUMNS, 0.0)
                row.update(subject=f"{i + 1:02d}", session=session, days_from_sbrt=day,
                           roi="tumor", map=name, unit=unit, n_voxels=50, mean=value,
                           median=value)  # fmt: skip
                rows.append(row)
    return pd.DataFrame(rows)[list(ROISTATS_COLUMNS)]


def _check_png(path):
    img = imread(path)
    assert img.ndim == 3
    assert img.shape[0] > 100
    assert img.shape[1] > 100
    assert float(np.std(img[..., :3])) > 0.01  # not blank


def test_trajectory_figure(tmp_path):
    png, csv = trajectory_figure(_roistats(), tmp_path / "trajectories_tumor.png")
    assert csv == tmp_path / "trajectories_tumor.csv"
    _check_png(png)
    data = pd.read_csv(csv)
    assert list(data.columns) == list(TRAJECTORY_COLUMNS)
    assert len(data) == 6 * 3 * 2
    assert set(data["map"]) == {"ADC", "T1"}
    first = png.read_bytes()
    trajectory_figure(_roistats(), tmp_path / "trajectories_tumor.png")
    assert png.read_bytes() == first  # deterministic


def test_waterfall_figure(tmp_path):
    roistats = _roistats()
    response = pd.concat(
        [response_table(g, "pre") for _, g in roistats.groupby("subject")], ignore_index=True
    )
    png, csv = waterfall_figure(
        response, tmp_path / "waterfall.png", roi="tumor", map_name="ADC", session="3m",
        thresholds_pct=(25,),
    )  # fmt: skip
    _check_png(png)
    data = pd.read_csv(csv, dtype={"subject": str})
    assert list(data.columns) == list(WATERFALL_COLUMNS)
    assert data["rank"].tolist() == list(range(1, 7))
    assert np.all(np.diff(data["pct_change"]) <= 0)
    expected = response.query("session == '3m' and map == 'ADC' and stat == 'median'")
    # the CSV keeps 6 significant digits
    assert sorted(data["pct_change"]) == pytest.approx(sorted(expected["pct_change"]), rel=1e-5)


def test_km_figure_and_empty_inputs(tmp_path):
    participants = pd.DataFrame(
        {"participant_id": [f"sub-{i:02d}" for i in range(8)],
         "vcf_event": [1, 0, 1, 1, 0, 1, 0, 0], "vcf_days": [30, 400, 120, 60, 365, 200, 90, 500]}
    )  # fmt: skip
    groups = {"sins_high": pd.Series(["yes", "no"] * 4, index=[f"{i:02d}" for i in range(8)])}
    km = outcome_km(participants, groups=groups)
    png, csv = km_figure(km, tmp_path / "km_vcf.png", outcome="vcf")
    _check_png(png)
    data = pd.read_csv(csv)
    assert list(data.columns) == list(KM_COLUMNS)
    assert set(data["group"]) == {"all", "sins_high=no", "sins_high=yes"}
    # an outcome without data still gives a figure and a header-only CSV
    png, csv = km_figure(km, tmp_path / "km_rim.png", outcome="rim")
    _check_png(png)
    assert pd.read_csv(csv).empty
    png, csv = trajectory_figure(_roistats(), tmp_path / "t.png", roi="ctv")
    _check_png(png)
    assert pd.read_csv(csv).empty
