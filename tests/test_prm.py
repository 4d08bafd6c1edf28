"""Parametric response maps: voxel classes and per-ROI fractions."""

from __future__ import annotations

import numpy as np
import pytest

from qmri import prm


def test_classes_and_fractions_by_hand():
    base = np.zeros((4, 1, 1))
    follow = np.array([0.2, -0.2, 0.05, np.nan]).reshape(4, 1, 1)
    valid = np.array([True, True, True, True]).reshape(4, 1, 1)
    classes = prm.response_classes(base, follow, valid, 0.1)
    assert classes.ravel().tolist() == [prm.INCREASED, prm.DECREASED, prm.STABLE, 0]
    rows = prm.response_fractions(classes, {"all": np.ones((4, 1, 1), bool)})
    assert rows[0]["n_voxels"] == 4
    assert rows[0]["n_valid"] == 3
    assert rows[0]["fraction_increased"] == pytest.approx(1 / 3)
    assert rows[0]["fraction_decreased"] == pytest.approx(1 / 3)
    assert rows[0]["fraction_stable"] == pytest.approx(1 / 3)


def test_threshold_is_strict_and_invalid_voxels_are_left_out():
    base = np.zeros(3)
    classes = prm.response_classes(
        base, np.array([0.1, -0.1, 0.5]), np.array([1, 1, 0], bool), 0.1
    )
    assert classes.tolist() == [prm.STABLE, prm.STABLE, 0]
    with pytest.raises(ValueError, match="threshold"):
        prm.response_classes(base, base, np.ones(3, bool), -1)


def test_empty_roi_has_nan_fractions():
    rows = prm.response_fractions(
        np.full((2, 2, 2), prm.STABLE, np.uint8), {"none": np.zeros((2, 2, 2), bool)}
    )
    assert rows[0]["n_valid"] == 0
    assert np.isnan(rows[0]["fraction_stable"])


def test_erosion_removes_the_edge():
    mask = np.zeros((7, 7, 7), bool)
    mask[1:6, 1:6, 1:6] = True
    eroded = prm.erode_rois({"cube": mask}, 1)["cube"]
    assert eroded.sum() == 27
    assert prm.erode_rois({"cube": mask}, 0)["cube"] is mask
