"""Dose statistics on hand-made grids, EQD2 arithmetic and the dose reader."""

from __future__ import annotations

import numpy as np
import pytest

from qmri.dose import (
    DOSE_BIN_COLUMNS,
    alpha_beta_for_roi,
    d_cc,
    d_percent,
    dose_binned_change,
    dose_path,
    dose_statistics,
    dose_table,
    eqd2,
    read_dose,
)
from qmri.errors import QMRIInputError
from qmri.io import save_nifti

DOSE = np.arange(10.0, 18.0).reshape(2, 2, 2)  # Gy, 10..17
ROI = np.ones((2, 2, 2), dtype=bool)


def test_d0_03cc_is_the_kth_hottest_voxel():
    # 0.01 mL voxels: the hottest 0.03 cm^3 are 3 voxels (17, 16, 15): D0.03cc = 15 Gy
    assert d_cc(DOSE, 0.03, 0.01) == 15.0
    # 0.02 mL voxels: ceil(1.5) = 2 voxels -> 16 Gy; 0.05 mL voxels: 1 voxel -> the max
    assert d_cc(DOSE, 0.03, 0.02) == 16.0
    assert d_cc(DOSE, 0.03, 0.05) == 17.0
    # 0.001 mL voxels: 30 voxels needed, the ROI has 8: undefined
    assert np.isnan(d_cc(DOSE, 0.03, 0.001))


def test_dose_statistics_on_a_tiny_grid():
    roi = ROI.copy()
    roi[0, 0, 0] = False  # drop the 10 Gy voxel
    stats = dose_statistics(DOSE, roi, 0.01, v_thresholds_gy=(15, 20))
    assert stats["n_voxels"] == 7
    assert stats["volume_ml"] == pytest.approx(0.07)
    assert stats["mean_gy"] == pytest.approx(14.0)
    assert stats["max_gy"] == 17.0
    assert stats["min_gy"] == 11.0
    assert stats["d0_03cc_gy"] == 15.0
    assert stats["d2pct_gy"] == 17.0  # ceil(0.02 * 7) = 1 voxel
    assert stats["d50pct_gy"] == 14.0  # ceil(3.5) = 4th hottest of 11..17
    assert stats["d98pct_gy"] == 11.0  # ceil(6.86) = 7th hottest
    assert stats["v15gy_ml"] == pytest.approx(0.03)
    assert stats["v20gy_ml"] == 0.0
    assert d_percent(np.array([]), 2.0) != d_percent(np.array([]), 2.0)  # NaN


def test_eqd2_arithmetic():
    assert eqd2(24.0, 1, 2.0) == pytest.approx(24 * 26 / 4)  # 156 Gy
    assert eqd2(30.0, 5, 10.0) == pytest.approx(30 * 16 / 12)  # 40 Gy
    assert eqd2(20.0, 10, 3.0) == pytest.approx(20.0)  # 2 Gy fractions are unchanged
    np.testing.assert_allclose(eqd2(np.array([0.0, np.nan]), 3, 2.0), [0.0, np.nan])
    with pytest.raises(ValueError, match="fractions"):
        eqd2(10.0, 0, 2.0)
    with pytest.raises(ValueError, match="alpha/beta"):
        eqd2(10.0, 1, -1.0)


def test_alpha_beta_defaults():
    assert alpha_beta_for_roi("tumor") == 10.0
    assert alpha_beta_for_roi("ctv") == 10.0
    assert alpha_beta_for_roi("cord_treated") == 2.0
    assert alpha_beta_for_roi("vb_treated_nontumor") == 2.0
    assert alpha_beta_for_roi("cord_T12", {"cord": 2.0, "cord_T": 3.0, "default": 4.0}) == 3.0


def test_dose_table_has_physical_and_eqd2_rows():
    table = dose_table(DOSE, {"tumor": ROI, "cord": ~ROI}, 0.01, fractions=2)
    assert table["dose_scale"].tolist() == ["physical", "eqd2", "physical", "eqd2"]
    eq = table.iloc[1]
    assert eq["alpha_beta_gy"] == 10.0
    assert eq["max_gy"] == pytest.approx(eqd2(17.0, 2, 10.0))
    assert eq["d0_03cc_gy"] == pytest.approx(eqd2(15.0, 2, 10.0))
    assert table.iloc[2]["n_voxels"] == 0
    assert np.isnan(table.iloc[2]["mean_gy"])
    assert dose_table(DOSE, {"tumor": ROI}, 0.01)["dose_scale"].tolist() == ["physical"]


def test_dose_binned_change():
    dose = np.array([1.0, 4.0, 6.0, 8.0, 12.0, 30.0, np.nan, 6.0])
    base = np.array([1.0, 1.0, 1.0, 2.0, 1.0, 1.0, 1.0, np.nan])
    follow = np.array([1.1, 1.3, 0.5, 1.0, 2.0, 3.0, 1.0, 1.0])
    roi = np.ones(8, dtype=bool)
    table = dose_binned_change(base, follow, dose, roi, voxel_volume_ml=0.5,
                               bin_edges_gy=(0, 5, 10), eqd2_bin_edges_gy=(0, 20),
                               fractions=1, alpha_beta_gy=2.0)  # fmt: skip
    assert list(table.columns) == list(DOSE_BIN_COLUMNS)
    phys = table.loc[table["dose_scale"] == "physical"]
    assert phys["bin_lower_gy"].tolist() == [0, 5, 10]
    assert phys["bin_upper_gy"].tolist() == [5, 10, np.inf]
    assert phys["n_voxels"].tolist() == [2, 2, 2]  # NaN dose and NaN baseline left out
    assert phys["median_change"].to_numpy() == pytest.approx([0.2, -0.75, 1.5])
    assert phys.iloc[1]["median_pct_change"] == pytest.approx(-50.0)
    assert phys.iloc[0]["volume_ml"] == 1.0
    eq = table.loc[table["dose_scale"] == "eqd2"]
    # EQD2 at 1 fraction, a/b 2: 1 -> 0.75, 4 -> 6, 6 -> 12, 8 -> 20, 12 -> 42, 30 -> 240 Gy
    assert eq["n_voxels"].tolist() == [3, 3]
    assert eq.iloc[0]["median_dose_gy"] == pytest.approx(6.0)
    no_fx = dose_binned_change(base, follow, dose, roi, bin_edges_gy=(0, 100))
    assert no_fx["dose_scale"].tolist() == ["physical", "physical"]  # [0, 100), [100, inf)
    empty = dose_binned_change(base, follow, dose, roi, bin_edges_gy=(0, 2, 3))
    assert empty.iloc[1]["n_voxels"] == 0
    assert np.isnan(empty.iloc[1]["median_change"])
    with pytest.raises(ValueError, match="increasing"):
        dose_binned_change(base, follow, dose, roi, bin_edges_gy=(5, 0))


def test_read_dose_checks_the_grid(tmp_path):
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    path = dose_path(tmp_path, "01")
    assert path == tmp_path / "sub-01" / "sub-01_dose.nii.gz"
    save_nifti(DOSE, affine, path)
    np.testing.assert_allclose(read_dose(path, (2, 2, 2), affine), DOSE)
    with pytest.raises(QMRIInputError, match="differs from the baseline reference grid") as exc:
        read_dose(path, (2, 2, 3), affine)
    assert "\n" not in str(exc.value)
    assert str(path) in str(exc.value)
    with pytest.raises(QMRIInputError, match="affine differs"):
        read_dose(path, (2, 2, 2), np.diag([1.0, 1.0, 3.0, 1.0]))
    save_nifti(-DOSE, affine, path)
    with pytest.raises(QMRIInputError, match="negative"):
        read_dose(path, (2, 2, 2), affine)
    with pytest.raises(QMRIInputError, match="not found"):
        read_dose(dose_path(tmp_path, "02"), (2, 2, 2), affine)
