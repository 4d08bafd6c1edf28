"""Bolus arrival time and the number of pre-contrast frames, from a mean enhancement curve.

* :func:`detect_bolus_arrival` -- the arrival time (s): model-free (``"hinge"``: a baseline
  threshold refined by a piecewise-linear fit) or model-based (``"parker"``: the curve fitted
  with the Parker AIF and a free delay).
* :func:`detect_baseline_frames` -- the pre-contrast frames of a series whose sidecar does not
  give them: the frames strictly before the hinge arrival on the mean signal curve.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numpy.typing import ArrayLike, NDArray

from qmri.errors import QMRIInputError
from qmri.models.dce.aif import parker_aif
from qmri.models.dce.kinetic import ExtendedToftsModel, PatlakModel
from qmri.models.dce.timing import check_baseline_frames, check_frame_times

__all__ = ["detect_baseline_frames", "detect_bolus_arrival"]

#: Fewest pre-contrast frames :func:`detect_baseline_frames` accepts (a mean and a spread).
MIN_BASELINE_FRAMES = 2


def detect_bolus_arrival(
    times_s: ArrayLike,
    curve: ArrayLike,
    *,
    baseline_frames: int | None = None,
    k_sd: float = 3.0,
    method: str = "hinge",
    parker_params: Mapping[str, float] | None = None,
) -> float:
    """Bolus arrival time (s) from a mean enhancement curve (concentration or signal).

    ``method="hinge"`` (model-free, any curve):

    1. Baseline mean and SD from the first ``baseline_frames`` frames.
    2. The first frame exceeding ``mean + k_sd * SD`` (and 5 % of the peak enhancement, so a
       noiseless curve is handled) marks the upslope.
    3. Refinement: a piecewise-linear fit ``y = b`` before ``t0`` and ``b + s (t - t0)`` after,
       over the frames up to the first one reaching half the peak enhancement; ``t0`` is searched
       on a fine grid between the two frames before the threshold crossing and that frame.

    Parameters
    ----------
    times_s : array_like, shape (n_frames,)
        Frame times (s).
    curve : array_like, shape (n_frames,)
        Mean curve (e.g. :func:`mean_curve` of the tissue or an artery).
    baseline_frames : int, optional
        Pre-contrast frames. Default: the frames before the curve first exceeds 10 % of its
        peak enhancement over the first frame (at least 2).
    k_sd : float, default 3
        Threshold in baseline SDs.
    method : {"hinge", "parker"}, default "hinge"
        ``"parker"`` (for a Parker-AIF analysis; the curve must be a concentration): starting
        from the hinge estimate, fit the curve as an extended Tofts tissue (and as Patlak, which
        covers a blood curve: ``Ktrans = 0``) driven by the Parker AIF on a fine grid with the
        arrival free within +-10 s, and return the fitted arrival of the better fit. With frames
        of several seconds the Parker upslope lies within one frame interval and the hinge is
        biased early (2.8 s on the phantom's aorta, 1.2-1.6 s on its tissue curves, 7 s
        frames); the model fit recovers the arrival to < 0.1 s there.
    parker_params : mapping, optional
        Overrides of :data:`PARKER_PARAMS` for ``method="parker"``.

    Returns
    -------
    float
        Arrival time (s), in the time axis of ``times_s``.

    Raises
    ------
    QMRIInputError
        No enhancement above the threshold after the baseline.
    """
    if method not in ("hinge", "parker"):
        raise QMRIInputError(f"bolus arrival method must be 'hinge' or 'parker', got {method!r}")
    t = check_frame_times(times_s)
    y = np.asarray(curve, dtype=np.float64).reshape(-1)
    if y.size != t.size or not np.isfinite(y).all():
        raise QMRIInputError("bolus arrival needs a finite curve with one value per frame")
    hinge = _hinge_arrival(t, y, baseline_frames, k_sd)
    if method == "hinge":
        return hinge
    return _parker_arrival(t, y, hinge, parker_params)


def _parker_arrival(
    t: NDArray[np.float64],
    y: NDArray[np.float64],
    start_s: float,
    params: Mapping[str, float] | None,
) -> float:
    """Arrival (s) from fitting ``y`` with the Parker AIF (fine grid) and a free delay."""
    aif = parker_aif(t, delay_s=start_s, hematocrit=0.0, params=params)
    best_r2, best = -np.inf, start_s
    for cls in (ExtendedToftsModel, PatlakModel):
        model = cls(t, aif, fit_delay=True, bounds={"Ktrans": (0.0, 50.0), "vp": (0.0, 10.0)})
        out = model.fit_curves(y[None, :])
        delay, r2 = float(out.params["delay"][0]), float(out.r2[0])
        # an exchange faster than a frame interval only mimics a shift (a blood curve): reject
        kep = float(out.params.get("kep", np.zeros(1))[0])
        if not kep * float(np.median(np.diff(t))) / 60.0 < 1.0:
            continue
        if np.isfinite(delay) and np.isfinite(r2) and abs(delay) < 10.0 - 1e-3 and r2 > best_r2:
            best_r2, best = r2, start_s + delay
    return float(best)


def _hinge_arrival(
    t: NDArray[np.float64], y: NDArray[np.float64], baseline_frames: int | None, k_sd: float
) -> float:
    """The model-free hinge estimate of :func:`detect_bolus_arrival`."""
    if baseline_frames is None:
        above = np.flatnonzero(y - y[0] > 0.1 * (y.max() - y[0]))
        n_b = max(2, int(above[0])) if above.size else 2
        n_b = min(n_b, t.size - 1)
    else:
        n_b = check_baseline_frames(baseline_frames, t.size)
    base = y[:n_b]
    mu = float(base.mean())
    sd = float(base.std(ddof=1)) if n_b > 1 else 0.0
    peak = float(y[n_b:].max())
    thresh = mu + max(k_sd * sd, 0.05 * (peak - mu))
    cross = np.flatnonzero(y[n_b:] > thresh)
    if peak <= mu or cross.size == 0:
        raise QMRIInputError("no bolus found: the curve never rises above its baseline")
    j = n_b + int(cross[0])
    half = np.flatnonzero(y[j:] >= mu + 0.5 * (peak - mu))
    end = j + (int(half[0]) if half.size else 0)
    end = max(end, min(j + 1, t.size - 1))
    win = slice(0, end + 1)
    tw, yw = t[win], y[win]
    lo = t[max(j - 2, 0)]
    cand = np.linspace(lo, t[j], 401)
    x = np.maximum(tw[None, :] - cand[:, None], 0.0)  # (n_cand, n_win)
    n = tw.size
    sx, sy = x.sum(axis=1), yw.sum()
    sxx, sxy = (x * x).sum(axis=1), x @ yw
    det = n * sxx - sx * sx
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = (n * sxy - sx * sy) / det
        icpt = (sy - slope * sx) / n
        ssr = ((icpt[:, None] + slope[:, None] * x - yw[None, :]) ** 2).sum(axis=1)
    ssr[~(np.isfinite(ssr) & (slope > 0))] = np.inf
    if not np.isfinite(ssr).any():
        return float(t[j - 1] if j > 0 else t[j])
    return float(cand[int(np.argmin(ssr))])


def detect_baseline_frames(times_s: ArrayLike, curve: ArrayLike) -> int:
    """Number of pre-contrast frames of a DCE series, from its mean signal curve.

    Method: the bolus arrival is detected on ``curve`` with the model-free hinge of
    :func:`detect_bolus_arrival` (initial baseline: the frames before the curve first exceeds
    10 % of its peak enhancement over the first frame; threshold 3 baseline SDs; arrival refined
    by a piecewise-linear fit of baseline and upslope), and the baseline is every frame acquired
    strictly before that arrival, i.e. before the curve visibly leaves its baseline. The curve
    must rise with contrast: a T1-weighted signal (e.g. the mean over the whole series, as for a
    series without ``BaselineFrames``) or a concentration; a non-steady-state first frame is
    not detected.

    Accuracy, measured on SPGR signal curves of extended-Tofts tissue driven by the Parker AIF
    (arrival 15-60 s): at 5-7 s frames (the phantom's 7 s, arrival on frame 5) the count is
    exact or one frame off; at 1-3.5 s frames the hinge lands on the foot of the first pass, up
    to ~3 s after the AIF's nominal arrival, so the last one to three counted frames may be
    enhanced by up to 8 % of the peak enhancement. On the committed phantom the count equals
    every series' ``BaselineFrames``.

    Parameters
    ----------
    times_s : array_like, shape (n_frames,)
        Frame times (s), strictly increasing.
    curve : array_like, shape (n_frames,)
        Mean signal (a.u.) or concentration of the series at every frame, finite.

    Returns
    -------
    int
        Frames before the detected arrival, at least :data:`MIN_BASELINE_FRAMES` (2) and at
        most ``n_frames - 1``.

    Raises
    ------
    QMRIInputError
        The curve has no bolus (it never rises above its start), or fewer than 2 frames precede
        the arrival: the series has no detectable baseline (give the number of pre-contrast
        frames, e.g. the sidecar's ``BaselineFrames``).

    Examples
    --------
    >>> import numpy as np
    >>> t = np.arange(20) * 5.0
    >>> detect_baseline_frames(t, 100.0 + 40.0 * np.clip((t - 30.0) / 20.0, 0.0, 1.0))
    6
    """
    t = check_frame_times(times_s)
    y = np.asarray(curve, dtype=np.float64).reshape(-1)
    if y.size != t.size:
        raise QMRIInputError(
            f"baseline detection needs one curve value per frame: {y.size} for {t.size} frames"
        )
    if not np.isfinite(y).all():
        raise QMRIInputError("baseline detection needs a finite curve (NaN or inf frames)")
    try:
        arrival = _hinge_arrival(t, y, None, 3.0)
    except QMRIInputError as exc:
        raise QMRIInputError(
            f"no baseline frames detectable ({exc}); give the number of pre-contrast frames "
            "(BaselineFrames)"
        ) from None
    n = int(np.count_nonzero(t < arrival))
    if n < MIN_BASELINE_FRAMES:
        raise QMRIInputError(
            f"no baseline detectable: the bolus arrives at {arrival:g} s, with {n} frame(s) "
            f"before it (at least {MIN_BASELINE_FRAMES} are needed); give the number of "
            "pre-contrast frames (BaselineFrames)"
        )
    return n
