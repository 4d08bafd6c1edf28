"""Rigid registration and label pull-back on analytic images with known motion."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from numpy.testing import assert_allclose

from qmri.errors import QMRIInputError
from qmri.registration import (
    grid_points_ras,
    matrix_to_transform,
    nifti_to_sitk,
    pull_back_labels,
    read_transform,
    register_rigid,
    resample_linear,
    rotation_angles_deg,
    transform_to_matrix,
    write_transform,
)


def _rigid(rx_deg: float, ry_deg: float, rz_deg: float, t_mm, centre_mm) -> np.ndarray:
    """4x4 RAS matrix: rotation about ``centre_mm`` then translation."""
    ax, ay, az = np.radians([rx_deg, ry_deg, rz_deg])
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    r = rz @ ry @ rx
    c = np.asarray(centre_mm, float)
    m = np.eye(4)
    m[:3, :3] = r
    m[:3, 3] = c - r @ c + np.asarray(t_mm, float)
    return m


def _anatomy(points: np.ndarray) -> np.ndarray:
    """A smooth, asymmetric object (sum of anisotropic Gaussian blobs), arbitrary units."""
    blobs = [
        ((0, 0, 0), (18, 14, 30), 100.0),
        ((-12, -20, 10), (6, 6, 8), 60.0),
        ((15, 10, -25), (8, 5, 6), 80.0),
        ((0, -35, 0), (5, 5, 40), 50.0),
    ]
    out = np.zeros(points.shape[:-1])
    for centre, sd, amp in blobs:
        d = (points - np.array(centre)) / np.array(sd)
        out += amp * np.exp(-0.5 * np.sum(d**2, axis=-1))
    return out


@pytest.fixture(scope="module")
def grid():
    import nibabel as nib

    affine = np.diag([2.5, 2.5, 4.0, 1.0])
    affine[:3, 3] = [-40, -55, -80]
    shape = (33, 45, 41)
    return nib.Nifti1Image(np.zeros(shape, np.float32), affine)


def _image(grid, motion: np.ndarray | None = None) -> np.ndarray:
    pts = grid_points_ras(grid.shape, grid.affine)
    if motion is not None:  # the patient moved by `motion`: the image shows f(motion^-1 p)
        inv = np.linalg.inv(motion)
        pts = pts @ inv[:3, :3].T + inv[:3, 3]
    return _anatomy(pts).astype(np.float32)


def test_matrix_round_trip_and_ras_convention():
    m = _rigid(3, -2, 4, (5, -3, 7), (10, 20, 30))
    assert_allclose(transform_to_matrix(matrix_to_transform(m)), m, atol=1e-12)
    # ITK's transform acts on LPS points; our matrix acts on RAS points.
    tr = matrix_to_transform(m)
    p_ras = np.array([12.0, -7.0, 3.0])
    q_lps = np.array(tr.TransformPoint(tuple(p_ras * [-1, -1, 1])))
    assert_allclose(q_lps * [-1, -1, 1], (m @ np.append(p_ras, 1))[:3], atol=1e-12)
    assert rotation_angles_deg(np.eye(4)) == pytest.approx(0.0)


def test_nifti_to_sitk_geometry(grid):
    img = nifti_to_sitk(grid)
    assert img.GetSize() == grid.shape
    # voxel (1, 2, 3) lands on the same world point (LPS in ITK, RAS in nibabel)
    p_lps = np.array(img.TransformIndexToPhysicalPoint((1, 2, 3)))
    p_ras = (grid.affine @ [1, 2, 3, 1])[:3]
    assert_allclose(p_lps * [-1, -1, 1], p_ras)


def test_register_rigid_recovers_known_motion(grid):
    truth = _rigid(3.0, -2.0, 4.0, (4.0, -3.0, 5.0), (0, 0, 0))
    fixed = nifti_to_sitk(grid, _image(grid))
    moving = nifti_to_sitk(grid, _image(grid, truth))
    res = register_rigid(fixed, moving)
    got = res.matrix_ras
    # compare where it matters: displacement of points inside the object
    pts = np.array([[0, 0, 0, 1], [15, 10, -25, 1], [-12, -20, 10, 1], [0, -35, 30, 1]], float)
    err_mm = np.linalg.norm((pts @ got.T - pts @ truth.T)[:, :3], axis=1)
    assert err_mm.max() < 0.5, err_mm
    assert rotation_angles_deg(np.linalg.inv(truth) @ got) < 0.5
    assert res.metric < 0


def test_registration_is_deterministic(grid):
    truth = _rigid(1.0, 0, -2.0, (2.0, 1.0, -3.0), (0, 0, 0))
    fixed = nifti_to_sitk(grid, _image(grid))
    moving = nifti_to_sitk(grid, _image(grid, truth))
    a = register_rigid(fixed, moving).matrix_ras
    b = register_rigid(fixed, moving).matrix_ras
    assert np.array_equal(a, b)


def test_pull_back_labels_follows_motion():
    # a cube label on a 1 mm grid; the target is the same grid after a 3 mm shift in x
    labels = np.zeros((20, 20, 20), np.int16)
    labels[5:10, 6:12, 7:15] = 3
    affine = np.eye(4)
    shift = np.eye(4)
    shift[0, 3] = 3.0  # target point p sits on source point p + 3 mm
    out = pull_back_labels(labels, affine, (20, 20, 20), affine, shift)
    assert (out == 3).sum() == (labels == 3).sum()
    assert np.array_equal(out[2:7, 6:12, 7:15], labels[5:10, 6:12, 7:15])
    # 4D masks are pulled back volume by volume; voxels landing outside are 0
    masks = np.stack([labels == 3, labels == 0], axis=-1).astype(np.uint8)
    out4 = pull_back_labels(masks, affine, (20, 20, 20), affine, shift)
    assert out4.shape == (20, 20, 20, 2)
    assert out4[-3:, :, :, 1].sum() == 0


def test_resample_linear_identity_and_nan_outside():
    data = np.random.default_rng(0).normal(size=(6, 7, 8))
    aff = np.diag([2.0, 2.0, 3.0, 1.0])
    assert_allclose(resample_linear(data, aff, data.shape, aff), data, atol=1e-12)
    shifted = np.eye(4)
    shifted[2, 3] = 100.0
    assert np.isnan(resample_linear(data, aff, data.shape, aff, shifted)).all()


def test_transform_files_round_trip_and_errors(tmp_path):
    m = _rigid(2, 1, -1, (1, 2, 3), (5, 5, 5))
    path = write_transform(matrix_to_transform(m), tmp_path / "x_xfm.txt")
    assert_allclose(transform_to_matrix(read_transform(path)), m, atol=1e-9)
    bad = tmp_path / "bad_xfm.txt"
    bad.write_text("not a transform\n")
    with pytest.raises(QMRIInputError, match=r"bad_xfm\.txt: not a readable ITK transform"):
        read_transform(bad)
    with pytest.raises(QMRIInputError, match=r"missing_xfm\.txt: transform file not found"):
        read_transform(tmp_path / "missing_xfm.txt")
    assert isinstance(read_transform(path), sitk.Transform)


def test_no_overlap_is_a_one_line_error(grid):
    from qmri.registration import RegistrationError

    fixed = nifti_to_sitk(grid, _image(grid))
    shifted = grid.affine.copy()
    shifted[:3, 3] += 500.0  # 50 cm away: nothing in common
    far = grid.__class__(np.asarray(grid.dataobj), shifted)
    moving = nifti_to_sitk(far, _image(grid))
    with pytest.raises(
        RegistrationError, match=r"^registration failed: the images do not overlap"
    ) as info:
        register_rigid(fixed, moving)
    assert "\n" not in str(info.value)
