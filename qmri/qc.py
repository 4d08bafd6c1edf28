"""Quality-control figures a person can look at (matplotlib, Agg backend).

Each function takes arrays (and their affines) and writes one PNG atomically. They are called
from the workflow's steps; :mod:`qmri.steps` decide what to draw.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from qmri.io import atomic_output
from qmri.registration import resample_linear


def _normalise(img: np.ndarray) -> np.ndarray:
    finite = img[np.isfinite(img)]
    if finite.size == 0:
        return np.zeros_like(img)
    lo, hi = np.percentile(finite, [1, 99])
    out = (img - lo) / (hi - lo if hi > lo else 1.0)
    return np.clip(np.nan_to_num(out, nan=0.0), 0, 1)


def checkerboard(a: np.ndarray, b: np.ndarray, tiles: int = 8) -> np.ndarray:
    """Interleave two equally shaped 2D images in a ``tiles`` x ``tiles`` checkerboard."""
    rows = (np.arange(a.shape[0]) * tiles // max(a.shape[0], 1)) % 2
    cols = (np.arange(a.shape[1]) * tiles // max(a.shape[1], 1)) % 2
    use_b = (rows[:, None] + cols[None, :]) % 2 == 1
    return np.where(use_b, b, a)


def registration_checkerboard(
    fixed: np.ndarray,
    fixed_affine: np.ndarray,
    moving: np.ndarray,
    moving_affine: np.ndarray,
    fixed_to_moving_ras: np.ndarray,
    path: str | Path,
    *,
    title: str = "",
    centre_voxel: tuple[int, int, int] | None = None,
) -> Path:
    """Checkerboard of the fixed image and the registered moving image, three planes.

    The moving image is resampled onto the fixed grid through the transform (display only);
    misregistration shows as broken edges where the tiles meet.

    Parameters
    ----------
    fixed, moving : 3D ndarray
        Images (any contrast; each is scaled to its own 1-99th percentile).
    fixed_affine, moving_affine : (4, 4) ndarray
        Their voxel-to-RAS affines.
    fixed_to_moving_ras : (4, 4) ndarray
        The registration (ITK convention: fixed point -> moving point), RAS.
    path : path
        Output PNG.
    title : str
        Figure title.
    centre_voxel : tuple of int, optional
        Fixed-grid voxel the three planes pass through (default the grid centre), e.g. the
        centre of the treated vertebral body.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    moved = resample_linear(moving, moving_affine, fixed.shape, fixed_affine, fixed_to_moving_ras)
    a, b = _normalise(np.asarray(fixed, float)), _normalise(moved)
    c = centre_voxel or tuple(n // 2 for n in fixed.shape)
    planes = [
        ("sagittal", a[c[0], :, :].T, b[c[0], :, :].T),
        ("coronal", a[:, c[1], :].T, b[:, c[1], :].T),
        ("axial", a[:, :, c[2]].T, b[:, :, c[2]].T),
    ]
    zooms = np.linalg.norm(fixed_affine[:3, :3], axis=0)
    aspects = [zooms[2] / zooms[1], zooms[2] / zooms[0], zooms[1] / zooms[0]]
    fig, axes = plt.subplots(1, 3, figsize=(10, 4.2))
    for ax, (name, pa, pb), aspect in zip(axes, planes, aspects, strict=True):
        ax.imshow(checkerboard(pa, pb), cmap="gray", origin="lower", aspect=aspect)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.suptitle(title or "registration checkerboard (fixed / moved)", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    return path
