"""Checks of the DCE time axis: frame times and the number of pre-contrast (baseline) frames.

Every DCE function takes frame times in seconds along the last axis of its data; these checks
turn a bad time axis into one :class:`~qmri.errors.QMRIInputError` line naming the problem.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from qmri.errors import QMRIInputError

__all__ = ["check_baseline_frames", "check_frame_times"]


def check_frame_times(times_s: ArrayLike, n_frames: int | None = None) -> NDArray[np.float64]:
    """Return frame times (s) as a read-only float64 vector after checking them.

    Parameters
    ----------
    times_s : array_like, shape (n_frames,)
        Acquisition time of every frame (s), strictly increasing.
    n_frames : int, optional
        Number of volumes in the data; the times must match it.

    Returns
    -------
    (n_frames,) ndarray of float64

    Raises
    ------
    QMRIInputError
        Not numbers, not finite, fewer than 2, not strictly increasing, or the wrong number.
    """
    try:
        t = np.array(times_s, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise QMRIInputError(f"frame times must be numbers in seconds, got {times_s!r}") from None
    if t.size < 2:
        raise QMRIInputError(f"DCE needs at least 2 frame times, got {t.size}")
    if not np.isfinite(t).all():
        raise QMRIInputError("frame times must be finite numbers (s)")
    if np.any(np.diff(t) <= 0):
        bad = int(np.flatnonzero(np.diff(t) <= 0)[0])
        raise QMRIInputError(
            f"frame times must be strictly increasing: frame {bad + 1} at {t[bad + 1]:g} s does "
            f"not follow frame {bad} at {t[bad]:g} s"
        )
    if n_frames is not None and t.size != n_frames:
        raise QMRIInputError(
            f"{t.size} frame times were given but the data has {n_frames} volumes"
        )
    t.flags.writeable = False
    return t


def check_baseline_frames(
    baseline_frames: int, n_frames: int, skip_first_frame: bool = False
) -> int:
    """Return the number of pre-contrast frames after checking it against the series.

    Parameters
    ----------
    baseline_frames : int
        Pre-contrast frames at the start of the series.
    n_frames : int
        Frames of the series.
    skip_first_frame : bool, default False
        The first frame is left out of the baseline mean (then at least 2 are needed).

    Returns
    -------
    int
        ``baseline_frames``, between 1 (2 with ``skip_first_frame``) and ``n_frames - 1``.

    Raises
    ------
    QMRIInputError
        Not an integer, or outside that range.
    """
    try:
        n = int(baseline_frames)
    except (TypeError, ValueError):
        raise QMRIInputError(
            f"baseline frames must be an integer, got {baseline_frames!r}"
        ) from None
    if n != baseline_frames:
        raise QMRIInputError(f"baseline frames must be an integer, got {baseline_frames!r}")
    low = 2 if skip_first_frame else 1
    if n < low or n >= n_frames:
        raise QMRIInputError(
            f"baseline frames must be between {low} and {n_frames - 1} (the data has {n_frames} "
            f"frames{'; the first is skipped' if skip_first_frame else ''}), got {n}"
        )
    return n
