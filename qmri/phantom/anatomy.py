"""Anatomy of the phantom: geometry, vertebral levels, labels, grids and follow-up motion.

Continuous geometry in the anatomy frame (treated vertebral body centre at the origin, RAS+ mm),
evaluated at voxel centres: the tissue map (:data:`~qmri.phantom.tissues.TISSUE_INDEX`) and the
contract labels (:func:`label_names`) on any grid, as seen in any session. Dimensions are
documented in the package docstring (:mod:`qmri.phantom`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from qmri.phantom.tissues import TISSUE_INDEX

__all__ = [
    "GEOMETRY",
    "LEVEL_SETS",
    "LEVEL_STRUCTURES",
    "POSTERIOR_SECTORS",
    "Geometry",
    "Grid",
    "Motion",
    "anatomy_on_grid",
    "draw_motion",
    "label_names",
    "make_grid",
    "rotation_matrix",
    "subject_layout",
]


@dataclass(frozen=True)
class Geometry:
    """Anatomical dimensions (mm) in the anatomy frame (treated body centre at the origin)."""

    body_semi_x: float = 20.0
    body_semi_y: float = 15.0
    body_height: float = 22.0
    disc_height: float = 6.0
    canal_y: float = -24.5
    canal_radius: float = 9.0
    ring_outer_radius: float = 15.0
    pedicle_x: tuple[float, float] = (6.0, 13.0)
    cord_semi_x: float = 5.0
    cord_semi_y: float = 4.0
    spinous_half_width: float = 3.0
    spinous_y_end: float = -60.0
    spinous_half_height: float = 9.0
    muscle_centre: tuple[float, float] = (18.0, -47.0)
    muscle_semi: tuple[float, float] = (13.0, 12.0)
    aorta_centre: tuple[float, float] = (-14.0, 24.0)
    aorta_radius: float = 10.0
    outline_centre: tuple[float, float] = (0.0, -14.0)
    outline_semi: tuple[float, float] = (40.0, 54.0)
    tumor_centre: tuple[float, float, float] = (-9.0, -12.0, 0.0)
    tumor_radius: float = 8.0
    #: Field of view (min, max) per axis in the anatomy frame.
    fov: tuple[tuple[float, float], ...] = ((-44.0, 44.0), (-72.0, 44.0), (-80.0, 80.0))

    @property
    def pitch(self) -> float:
        """Distance between the centres of adjacent vertebral bodies (mm)."""
        return self.body_height + self.disc_height


#: The phantom's anatomy.
GEOMETRY = Geometry()

_ALL_LEVELS: tuple[str, ...] = (
    *(f"C{i}" for i in range(1, 8)),
    *(f"T{i}" for i in range(1, 13)),
    *(f"L{i}" for i in range(1, 6)),
    *(f"S{i}" for i in range(1, 6)),
)


def _level_run(first: str, n: int = 5) -> tuple[str, ...]:
    start = _ALL_LEVELS.index(first)
    return _ALL_LEVELS[start : start + n]


#: Labelled levels (superior to inferior) of subject ``i`` are ``LEVEL_SETS[i % 4]``.
LEVEL_SETS: tuple[tuple[str, ...], ...] = (
    _level_run("T9"),
    _level_run("T10"),
    _level_run("T11"),
    _level_run("T8"),
)

#: Structures labelled at every level, in label-index order (see :func:`label_names`).
LEVEL_STRUCTURES: tuple[str, ...] = ("vb", "pel", "per", "pe", "cord")

#: The posterior-element sectors among :data:`LEVEL_STRUCTURES` (left, right, spinous process).
POSTERIOR_SECTORS: tuple[str, ...] = ("pel", "per", "pe")


def label_names(levels: Sequence[str]) -> dict[int, str]:
    """Return the label lookup table (index -> name) for the given levels.

    For level ``k`` (0-based, superior to inferior) the labels ``vb``, ``pel``, ``per``, ``pe``,
    ``cord`` get the indices ``5k + 1`` .. ``5k + 5``; then ``csf``, ``aorta``, ``tumor``.
    """
    names = [f"{s}_{level}" for level in levels for s in LEVEL_STRUCTURES]
    names += ["csf", "aorta", "tumor"]
    return {i + 1: name for i, name in enumerate(names)}


def _ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, ax: float, ay: float):
    return ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 <= 1.0


def _anatomy(
    u: np.ndarray, n_levels: int, treated: int, geo: Geometry = GEOMETRY
) -> tuple[np.ndarray, np.ndarray]:
    """Tissue and label maps at anatomy-frame points ``u`` (shape ``(3, ...)``, mm).

    Returns
    -------
    tissue : ndarray of int16
        :data:`TISSUE_INDEX` values (0 = air).
    labels : ndarray of int16
        :func:`label_names` indices (0 = background).
    """
    x, y, z = u
    k = np.rint(treated - z / geo.pitch).astype(int)  # level index, 0 = most superior
    dz = z - (treated - k) * geo.pitch
    in_level = (k >= 0) & (k < n_levels)
    in_body_z = np.abs(dz) <= geo.body_height / 2
    body_xs = _ellipse(x, y, 0.0, 0.0, geo.body_semi_x, geo.body_semi_y)
    r_canal = np.hypot(x, y - geo.canal_y)
    canal = r_canal <= geo.canal_radius
    cord = _ellipse(x, y, 0.0, geo.canal_y, geo.cord_semi_x, geo.cord_semi_y)
    # laminae (ring around the canal) and pedicles (bars from the ring to the body, lateral to
    # the canal); no bone between the canal and the body
    ring = (r_canal > geo.canal_radius) & (r_canal <= geo.ring_outer_radius)
    pedicles = (
        (np.abs(x) >= geo.pedicle_x[0])
        & (np.abs(x) <= geo.pedicle_x[1])
        & (y >= geo.canal_y)
        & (y <= 0.0)
        & ~canal
    )
    ring = (ring | pedicles) & ~body_xs & in_body_z
    ring &= ~((y > geo.canal_y) & (np.abs(x) < geo.pedicle_x[0]))
    spinous = (
        (np.abs(x) <= geo.spinous_half_width)
        & (y < geo.canal_y - geo.ring_outer_radius)
        & (y >= geo.spinous_y_end)
        & (np.abs(dz) <= geo.spinous_half_height)
    )
    mx, my = geo.muscle_centre
    muscle = _ellipse(np.abs(x), y, mx, my, *geo.muscle_semi)
    aorta = np.hypot(x - geo.aorta_centre[0], y - geo.aorta_centre[1]) <= geo.aorta_radius
    outline = _ellipse(x, y, *geo.outline_centre, *geo.outline_semi)
    vb = body_xs & in_body_z
    treated_level = k == treated
    tumor = (
        (
            np.sqrt(
                (x - geo.tumor_centre[0]) ** 2
                + (y - geo.tumor_centre[1]) ** 2
                + (z - geo.tumor_centre[2]) ** 2
            )
            <= geo.tumor_radius
        )
        & treated_level
        & (vb | ring)
    )

    t = TISSUE_INDEX
    tissue = np.zeros(x.shape, dtype=np.int16)
    tissue[outline] = t["fat"]
    tissue[muscle & outline] = t["muscle"]
    tissue[aorta] = t["blood"]
    tissue[canal] = t["csf"]
    tissue[cord] = t["cord"]
    tissue[ring | spinous] = t["marrow"]
    tissue[body_xs & ~in_body_z] = t["disc"]
    tissue[vb] = t["marrow"]
    tissue[vb & treated_level] = t["marrow_treated"]
    tissue[tumor] = t["tumor"]

    n_lab = len(LEVEL_STRUCTURES)
    base = k * n_lab  # label index of structure s at level k is base + position + 1
    labels = np.zeros(x.shape, dtype=np.int16)
    csf_index = n_levels * n_lab + 1
    labels[canal & ~cord] = csf_index
    labels[aorta] = csf_index + 1
    for pos, mask in enumerate(
        (vb, ring & (x < 0), ring & (x >= 0), spinous, cord),
    ):
        sel = mask & in_level
        labels[sel] = (base[sel] + pos + 1).astype(np.int16)
    labels[tumor] = csf_index + 2
    return tissue, labels


@dataclass(frozen=True)
class Grid:
    """A voxel grid: shape and voxel-to-world (RAS+, mm) affine."""

    shape: tuple[int, int, int]
    affine: np.ndarray

    def world(self) -> np.ndarray:
        """World coordinates (mm) of the voxel centres, shape ``(3, nx, ny, nz)``."""
        idx = np.indices(self.shape, dtype=float)
        return np.einsum("ij,j...->i...", self.affine[:3, :3], idx) + self.affine[:3, 3].reshape(
            3, 1, 1, 1
        )


def subject_layout(subject: int) -> tuple[tuple[str, ...], str, np.ndarray]:
    """Return the labelled levels, the treated level and the treated body's centre of a subject.

    Parameters
    ----------
    subject : int
        0-based subject index (``sub-01`` is 0).

    Returns
    -------
    levels : tuple of str
        Labelled levels, superior to inferior (``LEVEL_SETS[subject % 4]``).
    treated : str
        The treated level (the middle one).
    centre : ndarray, shape (3,)
        World position (RAS+, mm) of the treated vertebral body's centre at baseline; it does not
        depend on the seed.
    """
    levels = LEVEL_SETS[subject % len(LEVEL_SETS)]
    centre = np.array([1.0 + 0.5 * subject, 22.0 - subject, -38.0 + 7.0 * subject])
    return levels, levels[len(levels) // 2], centre


def anatomy_on_grid(
    affine: np.ndarray,
    shape: Sequence[int],
    *,
    subject: int = 0,
    baseline_to_session: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Evaluate the phantom's tissue and label maps at the voxel centres of any grid.

    Parameters
    ----------
    affine : (4, 4) ndarray
        Voxel to world (RAS+, mm) transform of the grid.
    shape : sequence of 3 int
        Grid shape.
    subject : int, default 0
        0-based subject index (levels and position from :func:`subject_layout`).
    baseline_to_session : (4, 4) ndarray, optional
        ``baseline_to_session_ras`` of a session's motion file; the anatomy is shown as seen in
        that session (world point ``p`` shows baseline point ``inv(M) p``). None: baseline.

    Returns
    -------
    tissue : ndarray of int16
        Tissue map (:data:`TISSUE_INDEX`, 0 = air).
    labels : ndarray of int16
        Contract labels (:func:`label_names` of the subject's levels, 0 = background).
    """
    grid = Grid((int(shape[0]), int(shape[1]), int(shape[2])), np.asarray(affine, dtype=float))
    p = grid.world()
    if baseline_to_session is not None:
        inv = np.linalg.inv(np.asarray(baseline_to_session, dtype=float))
        p = np.einsum("ij,j...->i...", inv[:3, :3], p) + inv[:3, 3].reshape(3, 1, 1, 1)
    levels, treated, centre = subject_layout(subject)
    return _anatomy(p - centre.reshape(3, 1, 1, 1), len(levels), levels.index(treated))


def make_grid(origin: np.ndarray, voxel: Sequence[float], geo: Geometry = GEOMETRY) -> Grid:
    """Grid of voxel size ``voxel`` (mm) covering the FOV, placed at world ``origin``."""
    lo = np.array([f[0] for f in geo.fov]) + origin
    hi = np.array([f[1] for f in geo.fov]) + origin
    vox = np.asarray(voxel, dtype=float)
    shape = np.maximum(1, np.rint((hi - lo) / vox)).astype(int)
    first = (lo + hi) / 2 - (shape - 1) / 2 * vox
    affine = np.diag([*vox, 1.0])
    affine[:3, 3] = first
    return Grid((int(shape[0]), int(shape[1]), int(shape[2])), affine)


def rotation_matrix(angles_deg: Sequence[float]) -> np.ndarray:
    """Rotation ``R = Rz @ Ry @ Rx`` from angles (deg) about the world x, y and z axes."""
    ax, ay, az = np.deg2rad(np.asarray(angles_deg, dtype=float))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


@dataclass(frozen=True)
class Motion:
    """Rigid motion of a session relative to the baseline (see the package docstring).

    Attributes
    ----------
    rotation_deg : ndarray, shape (3,)
        Rotations (deg) about the world x, y and z axes.
    translation_mm : ndarray, shape (3,)
        Translation ``t`` (mm).
    centre_mm : ndarray, shape (3,)
        Centre of rotation ``c`` (mm): the treated body's centre at baseline.
    """

    rotation_deg: np.ndarray
    translation_mm: np.ndarray
    centre_mm: np.ndarray

    @property
    def rotation(self) -> np.ndarray:
        """Rotation matrix ``R`` (3 x 3)."""
        return rotation_matrix(self.rotation_deg)

    @property
    def matrix(self) -> np.ndarray:
        """4x4 RAS matrix mapping a baseline world point to the session's world point."""
        r = self.rotation
        m = np.eye(4)
        m[:3, :3] = r
        m[:3, 3] = self.centre_mm + self.translation_mm - r @ self.centre_mm
        return m

    def as_dict(self) -> dict[str, Any]:
        """Return the motion as the truth motion file's JSON content."""
        return {
            "rotation_deg": self.rotation_deg.tolist(),
            "rotation_order": "R = Rz @ Ry @ Rx (rotations about the world x, then y, then z axis)",
            "translation_mm": self.translation_mm.tolist(),
            "centre_mm": self.centre_mm.tolist(),
            "rotation_matrix": self.rotation.tolist(),
            "convention": (
                "The image of this session at world point p (RAS+, mm) shows the anatomy that was "
                "at baseline world point q = R^T (p - c - t) + c; equivalently a baseline point q "
                "is seen at p = R (q - c) + c + t. baseline_to_session_ras maps q to p (4x4); "
                "session_to_baseline_ras is its inverse. All sessions share one grid (affine)."
            ),
            "baseline_to_session_ras": self.matrix.tolist(),
            "session_to_baseline_ras": np.linalg.inv(self.matrix).tolist(),
        }


def draw_motion(rng: np.random.Generator, centre: np.ndarray) -> Motion:
    """Draw a follow-up motion: rotations 1..3 deg and translations 1.5..5 mm, random signs."""
    signs = rng.choice([-1.0, 1.0], size=6)
    rot = np.round(signs[:3] * rng.uniform(1.0, 3.0, 3), 3)
    trans = np.round(signs[3:] * rng.uniform(1.5, 5.0, 3), 3)
    return Motion(rot, trans, centre.astype(float))
