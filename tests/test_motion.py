"""Motion correction within a series, on analytic series with known per-volume rigid motion."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from numpy.testing import assert_allclose

from qmri.errors import QMRIInputError
from qmri.motion import (
    MotionCorrection,
    mean_displacement_mm,
    motion_correct,
    read_motion,
    resample_series,
    series_reference_volume,
    write_motion,
)
from qmri.registration import grid_points_ras, rotation_angles_deg, transform_to_matrix

SHAPE = (30, 40, 30)
ZOOMS = (2.5, 2.5, 4.0)
#: Points inside the object where recovered and true motion are compared (RAS, mm).
PROBES = np.array([[0, 0, 0, 1], [8, -5, 12, 1], [-12, 10, -20, 1], [0, -20, 30, 1]], float)

#: Tissue compartments: centre (mm), radii (mm), edge width (mm). Nested compartments add up,
#: so each voxel's value is a mix of a few tissues, as with partial volume.
COMPARTMENTS = (
    ((0, 0, 0), (26, 20, 40), 2.0),  # body
    ((0, -5, 0), (12, 10, 30), 1.5),  # vertebra
    ((8, -5, 12), (6, 5, 8), 1.5),  # tumour (enhances in DCE)
    ((-12, 10, -20), (5, 5, 6), 1.5),  # second lesion
    ((0, -28, 0), (4, 4, 50), 1.0),  # cord
)


def _rigid(rx_deg: float, ry_deg: float, rz_deg: float, t_mm) -> np.ndarray:
    """4x4 RAS matrix: rotation about the origin (grid centre), then translation."""
    ax, ay, az = np.radians([rx_deg, ry_deg, rz_deg])
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    m = np.eye(4)
    m[:3, :3] = rz @ ry @ rx
    m[:3, 3] = t_mm
    return m


def _affine() -> np.ndarray:
    affine = np.diag([*ZOOMS, 1.0])
    affine[:3, 3] = -(np.array(SHAPE) - 1) / 2 * np.array(ZOOMS)
    return affine


def _tissues(motion: np.ndarray) -> np.ndarray:
    """Occupancy (0-1) of each compartment, shape (*SHAPE, n_compartments), after ``motion``.

    The patient moved by ``motion``: the volume shows at ``p`` the anatomy of ``motion^-1 p``,
    and the matrix mapping reference points to volume points is ``motion`` itself.
    """
    pts = grid_points_ras(SHAPE, _affine())
    inv = np.linalg.inv(motion)
    pts = pts @ inv[:3, :3].T + inv[:3, 3]
    out = []
    for centre, radii, edge in COMPARTMENTS:
        d = np.linalg.norm((pts - np.array(centre)) / np.array(radii), axis=-1)
        out.append(1.0 / (1.0 + np.exp((d - 1.0) * np.mean(radii) / edge)))
    return np.stack(out, axis=-1)


def _series(truths, amplitudes, noise: float, seed: int):
    """4D series (one volume per truth) and its motion-free counterpart."""
    rng = np.random.default_rng(seed)
    static = _tissues(np.eye(4))
    moved = np.stack([_tissues(m) @ a for m, a in zip(truths, amplitudes, strict=True)], -1)
    still = np.stack([static @ a for a in amplitudes], -1)
    return moved + rng.normal(0.0, noise, moved.shape), still


def _jitter(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [_rigid(*rng.uniform(-3, 3, 3), rng.uniform(-4, 4, 3)) for _ in range(n)]


@pytest.fixture(scope="module")
def dce():
    """10 DCE frames: 3 still baseline frames, then jittered frames, tumour enhancing x6."""
    truths = [np.eye(4)] * 3 + _jitter(7, seed=1)
    enh = np.concatenate([np.zeros(3), 1 - np.exp(-np.arange(1, 8) / 2.0)])
    amplitudes = [np.array([40, 30, 20 + 100 * e, 50, 60]) for e in enh]
    data, still = _series(truths, amplitudes, noise=1.5, seed=2)
    ref = series_reference_volume(data, "baseline_mean", baseline_frames=3)
    return data, still, np.stack(truths), motion_correct(data, _affine(), ref)


@pytest.fixture(scope="module")
def dwi():
    """b = 0, 0, 400, 800, 800, 1000 s/mm^2; each compartment has its own ADC."""
    bvals = np.array([0, 0, 400, 800, 800, 1000.0])
    adc = np.array([2.0, 0.6, 1.1, 1.6, 3.0]) * 1e-3  # mm^2/s
    s0 = np.array([60, 40, 50, 45, 70.0])
    truths = [np.eye(4)] * 2 + _jitter(4, seed=3)
    amplitudes = [s0 * np.exp(-b * adc) for b in bvals]
    data, still = _series(truths, amplitudes, noise=1.0, seed=4)
    ref = series_reference_volume(data, "low_b_mean", bvals=bvals)
    return data, still, np.stack(truths), motion_correct(data, _affine(), ref), ref


def _errors(truths: np.ndarray, got: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Worst probe-point error (mm) and residual rotation (deg) per volume."""
    mm = np.array(
        [
            np.linalg.norm((PROBES @ g.T - PROBES @ t.T)[:, :3], axis=1).max()
            for t, g in zip(truths, got, strict=True)
        ]
    )
    deg = np.array(
        [rotation_angles_deg(np.linalg.inv(t) @ g) for t, g in zip(truths, got, strict=True)]
    )
    return mm, deg


@pytest.mark.parametrize("name", ["dce", "dwi"])
def test_recovers_per_volume_motion(name, request):
    data, _, truths, mc = request.getfixturevalue(name)[:4]
    assert isinstance(mc, MotionCorrection)
    assert mc.matrices.shape == (data.shape[3], 4, 4)
    mm, deg = _errors(truths, mc.matrices)
    assert mm.max() < 0.5, mm
    assert deg.max() < 0.5, deg
    # the displacement trace follows the truth's
    truth_trace = mean_displacement_mm(truths, _affine(), _central(SHAPE))
    assert_allclose(mc.displacement_mm, truth_trace, atol=0.3)
    assert np.all(np.isfinite(mc.metric))
    assert np.all(mc.metric < 0)


def _central(shape):
    region = np.zeros(shape, bool)
    region[tuple(slice(s // 4, s - s // 4) for s in shape)] = True
    return region


@pytest.mark.parametrize(("name", "still_volumes"), [("dce", [0, 1, 2]), ("dwi", [0, 1])])
def test_still_volumes_get_identity_like_transforms(name, still_volumes, request):
    mc = request.getfixturevalue(name)[3]
    assert mc.reference_volumes == ()  # references are means: no volume is bit-identical
    assert np.all(mc.displacement_mm[still_volumes] < 0.05), mc.displacement_mm


@pytest.mark.parametrize("name", ["dce", "dwi"])
def test_corrected_volumes_match_the_still_anatomy(name, request):
    """Corrected volumes correlate with the motion-free anatomy as well as volumes resampled
    with the true motion do (the ceiling set by noise and one trilinear interpolation: 0.988 for
    the first enhanced DCE frame), and far better than the uncorrected volumes."""
    data, still, truths, mc = request.getfixturevalue(name)[:4]
    ideal = resample_series(data, _affine(), truths)
    obj = still.mean(axis=3) > 10
    for v in range(data.shape[3]):
        got = mc.corrected[..., v]
        ok = obj & np.isfinite(got) & np.isfinite(ideal[..., v])
        assert ok.sum() > 0.95 * obj.sum()
        r = np.corrcoef(got[ok], still[..., v][ok])[0, 1]
        r_ideal = np.corrcoef(ideal[..., v][ok], still[..., v][ok])[0, 1]
        assert r > 0.985, (v, r)
        assert r > r_ideal - 0.002, (v, r, r_ideal)
        if not np.allclose(truths[v], np.eye(4)):
            assert np.corrcoef(data[..., v][ok], still[..., v][ok])[0, 1] < r - 0.05


def test_outside_the_moved_volume_is_nan_not_zero():
    shift = _rigid(0, 0, 0, (0, 0, 12.0))  # three slices
    data, _ = _series([np.eye(4), shift], [np.ones(5) * 20] * 2, noise=0.5, seed=5)
    data += 100.0  # no sample of the series is near 0
    mc = motion_correct(data, _affine(), 0)
    assert mc.reference_volumes == (0,)
    assert np.array_equal(mc.corrected[..., 0], data[..., 0])
    assert np.array_equal(mc.matrices[0], np.eye(4))
    assert np.isnan(mc.metric[0])
    moved = mc.corrected[..., 1]
    # reference points beyond the moved volume's last slice face are NaN, the rest is signal
    assert np.isnan(moved[:, :, -2:]).all()
    assert np.isfinite(moved[:, :, :-4]).all()
    assert np.nanmin(moved) > 50.0
    assert abs(mc.translations_mm[1, 2] - 12.0) < 0.3


def test_reference_volume_choice():
    rng = np.random.default_rng(0)
    data = rng.uniform(1, 2, (6, 7, 8, 4)) * np.array([1.0, 3.0, 2.0, 0.5])
    # DCE: mean of the pre-contrast frames (count or indices)
    assert_allclose(
        series_reference_volume(data, "baseline_mean", baseline_frames=2), data[..., :2].mean(3)
    )
    assert_allclose(
        series_reference_volume(data, "baseline_mean", baseline_frames=[0, 2]),
        data[..., [0, 2]].mean(3),
    )
    # DWI: mean of the b <= 50 volumes; a single b=0 is returned bit for bit
    assert_allclose(
        series_reference_volume(data, "low_b_mean", bvals=[0, 1000, 50, 800]),
        data[..., [0, 2]].mean(3),
    )
    assert np.array_equal(
        series_reference_volume(data, "low_b_mean", bvals=[0, 100, 200, 300]), data[..., 0]
    )
    assert np.array_equal(
        series_reference_volume(data, "low_b_mean", bvals=[900, 1000, 100, 100]),
        data[..., 2:].mean(3),
    )
    # relaxometry: the brightest (highest-SNR) volume, as a copy
    ref = series_reference_volume(data, "highest_snr")
    assert np.array_equal(ref, data[..., 1])
    assert not np.shares_memory(ref, data)
    with pytest.raises(QMRIInputError, match="unknown reference rule 'T2map'"):
        series_reference_volume(data, "T2map")
    with pytest.raises(QMRIInputError, match="needs the b-values"):
        series_reference_volume(data, "low_b_mean")
    with pytest.raises(QMRIInputError, match="3 b-values for 4 volumes"):
        series_reference_volume(data, "low_b_mean", bvals=[0, 500, 1000])
    with pytest.raises(QMRIInputError, match="needs baseline_frames"):
        series_reference_volume(data, "baseline_mean")
    with pytest.raises(QMRIInputError, match="between 1 and 4"):
        series_reference_volume(data, "baseline_mean", baseline_frames=0)


def test_write_read_round_trip_and_trace(dwi, tmp_path):
    mc = dwi[3]
    xfm, tsv = write_motion(mc, tmp_path / "a_xfm.txt", tmp_path / "a_motion.tsv")
    assert np.array_equal(read_motion(xfm), mc.matrices)
    text = xfm.read_text()
    assert text.count("Transform: Euler3DTransform_double_3_3") == mc.n_volumes
    assert "#Transform 5" in text
    # ITK itself reads the (first) block
    assert_allclose(transform_to_matrix(sitk.ReadTransform(str(xfm))), mc.matrices[0], atol=1e-12)

    rows = [ln.split("\t") for ln in tsv.read_text().splitlines()]
    assert rows[0] == [
        "volume",
        "rot_x_deg",
        "rot_y_deg",
        "rot_z_deg",
        "trans_x_mm",
        "trans_y_mm",
        "trans_z_mm",
        "displacement_mm",
        "metric",
    ]
    assert len(rows) == mc.n_volumes + 1
    table = np.array([[float(x) for x in r[1:]] for r in rows[1:]])
    assert_allclose(table[:, 6], mc.displacement_mm, rtol=1e-5)
    # RAS angles rebuild the RAS matrix (ITK order: y, then x, then z), the translations are
    # the displacement of the grid centre
    for v in range(mc.n_volumes):
        ax, ay, az = np.radians(table[v, :3])
        r = (
            _rigid(0, 0, np.degrees(az), (0, 0, 0))
            @ _rigid(np.degrees(ax), 0, 0, (0, 0, 0))
            @ _rigid(0, np.degrees(ay), 0, (0, 0, 0))
        )[:3, :3]
        assert_allclose(r, mc.matrices[v][:3, :3], atol=1e-5)
        centre = np.append(mc.centre_ras, 1.0)
        assert_allclose(table[v, 3:6], (mc.matrices[v] @ centre)[:3] - mc.centre_ras, atol=1e-5)
    # the true motion of a moved volume shows in the trace with its sign (RAS)
    truth = dwi[2][3]
    assert_allclose(table[3, 3:6], truth[:3, 3], atol=0.4)


def test_registration_is_deterministic(dwi):
    data, _, _, mc, ref = dwi
    again = motion_correct(data[..., 2:4], _affine(), ref)
    assert np.array_equal(again.matrices, mc.matrices[2:4])
    assert np.array_equal(again.corrected, mc.corrected[..., 2:4], equal_nan=True)


def test_unregistrable_volumes_are_one_line_errors(dwi, tmp_path):
    data, ref = dwi[0][..., :3].copy(), dwi[4]
    data[..., 2] = 0.0
    with pytest.raises(QMRIInputError, match=r"^dwi\.nii\.gz: volume 2 of 3 is constant") as exc:
        motion_correct(data, _affine(), ref, source="dwi.nii.gz")
    assert "\n" not in str(exc.value)
    data[..., 2] = np.nan
    with pytest.raises(QMRIInputError, match="volume 2 of 3 has non-finite values"):
        motion_correct(data, _affine(), ref)
    # SimpleITK failing (here: the metric has no voxel to sample) names the volume, one line
    with pytest.raises(QMRIInputError, match="volume 0 of 3: registration failed") as exc:
        motion_correct(dwi[0][..., :3], _affine(), ref, fixed_mask=np.zeros(SHAPE, bool))
    assert "\n" not in str(exc.value)
    with pytest.raises(QMRIInputError, match="unknown motion-correction metric"):
        motion_correct(dwi[0], _affine(), ref, metric="ncc")
    with pytest.raises(QMRIInputError, match="needs a 4D series"):
        motion_correct(ref, _affine(), ref)
    with pytest.raises(QMRIInputError, match="differs from the series grid"):
        motion_correct(dwi[0], _affine(), ref[1:])
    bad = tmp_path / "bad_xfm.txt"
    bad.write_text("#Insight Transform File V1.0\n#Transform 0\nTransform: AffineTransform\n")
    with pytest.raises(QMRIInputError, match=r"bad_xfm\.txt: transform 0 is 'AffineTransform'"):
        read_motion(bad)
    with pytest.raises(QMRIInputError, match="transform file not found"):
        read_motion(tmp_path / "missing.txt")
