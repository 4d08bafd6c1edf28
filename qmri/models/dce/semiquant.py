"""Model-free (semi-quantitative) DCE maps: iAUC60, iAUC90, time to peak, peak concentration
and peak relative signal enhancement (:func:`semiquantitative_maps`, :class:`SemiQuantitativeFit`).

Vectorized over voxels; frames on the last axis, times in seconds.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from qmri.errors import QMRIInputError
from qmri.models.base import ModelFit, _spatial_array, map_property
from qmri.models.dce.timing import check_baseline_frames, check_frame_times

__all__ = ["SemiQuantitativeFit", "semiquantitative_maps"]


class SemiQuantitativeFit(ModelFit):
    """Result of :func:`semiquantitative_maps`: the maps as properties (no ``R2``: nothing is
    fitted; ``max_rse`` only when the signal was given)."""

    iauc60_mM_s = map_property("iAUC60", "Concentration integral over 60 s from arrival (mM*s).")
    iauc90_mM_s = map_property("iAUC90", "Concentration integral over 90 s from arrival (mM*s).")
    ttp_s = map_property("TTP", "Time of the concentration peak minus the bolus arrival (s).")
    cmax_mM = map_property("Cmax", "Peak concentration (mM).")
    max_rse = map_property("MaxRSE", "Peak relative signal enhancement (S - S0) / S0 (1).")


def _window_integral(
    t: NDArray[np.float64], y: NDArray[np.float64], a: float, b: float
) -> NDArray[np.float64]:
    """Integral of the piecewise-linear interpolant of ``y`` (n, n_t) over [a, b] (trapezoid)."""
    inner = np.flatnonzero((t > a) & (t < b))
    pts = np.concatenate([[a], t[inner], [b]])
    # interpolation weights shared by every voxel
    idx = np.clip(np.searchsorted(t, pts, side="right") - 1, 0, t.size - 2)
    w = (pts - t[idx]) / (t[idx + 1] - t[idx])
    vals = y[:, idx] * (1.0 - w) + y[:, idx + 1] * w
    dt = np.diff(pts)
    return 0.5 * np.einsum("ij,j->i", vals[:, :-1] + vals[:, 1:], dt)


def semiquantitative_maps(
    concentration: ArrayLike,
    times_s: ArrayLike,
    bolus_arrival_s: float,
    *,
    signal: ArrayLike | None = None,
    baseline_frames: int | None = None,
    mask: ArrayLike | None = None,
) -> SemiQuantitativeFit:
    """Model-free DCE maps: iAUC60, iAUC90, time to peak, peak concentration, peak enhancement.

    * ``iAUC60``, ``iAUC90`` (mM*s): integral of the concentration over the 60 s / 90 s after the
      bolus arrival (trapezoid rule on the piecewise-linear curve, end points interpolated). NaN
      everywhere when the acquisition ends before the window does.
    * ``TTP`` (s): time of the concentration maximum **minus the bolus arrival**.
    * ``Cmax`` (mM): maximum concentration (the "maximum enhancement" on the concentration scale).
    * ``MaxRSE`` (1, only with ``signal`` and ``baseline_frames``): maximum relative signal
      enhancement ``max (S - S0) / S0`` with ``S0`` the mean of the baseline frames.

    Parameters
    ----------
    concentration : array_like, shape (..., n_frames)
        Tissue concentration (mM).
    times_s : array_like, shape (n_frames,)
        Frame times (s).
    bolus_arrival_s : float
        Bolus arrival (s), e.g. from :func:`~qmri.models.dce.arrival.detect_bolus_arrival`.
    signal : array_like, shape concentration.shape, optional
        Raw signal, for ``MaxRSE``.
    baseline_frames : int, optional
        Pre-contrast frames of ``signal`` (needed with ``signal``).
    mask : array_like, shape concentration.shape[:-1], optional
        Voxels to compute (non-zero); default all.

    Returns
    -------
    SemiQuantitativeFit
        Maps as above plus ``fitmask`` (1 where the voxel's curve is finite); no ``R2`` (nothing
        is fitted).
    """
    c = np.asarray(concentration)
    spatial, n_t = c.shape[:-1], c.shape[-1]
    t = check_frame_times(times_s, n_t)
    ta = float(bolus_arrival_s)
    if not (np.isfinite(ta) and t[0] - 1e-9 <= ta < t[-1]):
        raise QMRIInputError(
            f"bolus arrival {bolus_arrival_s} s is outside the acquisition ({t[0]:g}-{t[-1]:g} s)"
        )
    flat = c.reshape(-1, n_t)
    if mask is None:
        sel = np.arange(flat.shape[0])
    else:
        sel = np.flatnonzero(_spatial_array(mask, spatial, "mask").reshape(-1) != 0)
    y = flat[sel].astype(np.float64)
    good = np.isfinite(y).all(axis=1)
    names = ["iAUC60", "iAUC90", "TTP", "Cmax"]
    values: dict[str, NDArray[np.float64]] = {}
    notes = {}
    for name, width in (("iAUC60", 60.0), ("iAUC90", 90.0)):
        if ta + width <= t[-1] + 1e-9:
            values[name] = _window_integral(t, np.where(good[:, None], y, 0.0), ta, ta + width)
        else:
            values[name] = np.full(y.shape[0], np.nan)
            notes[f"{name}_note"] = f"not computed: acquisition ends at {t[-1]:g} s"
    ypos = np.where(good[:, None], y, -np.inf)
    imax = np.argmax(ypos, axis=1)
    values["TTP"] = t[imax] - ta
    values["Cmax"] = ypos[np.arange(y.shape[0]), imax]
    if signal is not None:
        s = np.asarray(signal)
        if s.shape != c.shape:
            raise QMRIInputError(f"signal has shape {s.shape} but concentration has {c.shape}")
        if baseline_frames is None:
            raise QMRIInputError("baseline frames are needed for the relative signal enhancement")
        n_b = check_baseline_frames(baseline_frames, n_t)
        sv = s.reshape(-1, n_t)[sel].astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            s0 = sv[:, :n_b].mean(axis=1)
            values["MaxRSE"] = np.max(sv, axis=1) / s0 - 1.0
        good &= np.isfinite(values["MaxRSE"]) & (s0 > 0)
        names.append("MaxRSE")
    maps: dict[str, np.ndarray] = {}
    for name in names:
        arr = np.full(flat.shape[0], np.nan, dtype=np.float32)
        arr[sel] = np.where(good, values[name], np.nan)
        maps[name] = arr.reshape(spatial)
    fitmask = np.zeros(flat.shape[0], dtype=np.uint8)
    fitmask[sel[good]] = 1
    maps["fitmask"] = fitmask.reshape(spatial)
    units = {"iAUC60": "mM*s", "iAUC90": "mM*s", "TTP": "s", "Cmax": "mM", "fitmask": "1"}
    if "MaxRSE" in maps:
        units["MaxRSE"] = "1"
    n_fitted = int(sel.size)
    return SemiQuantitativeFit(
        maps=maps,
        units=units,
        n_fitted=n_fitted,
        n_failed=n_fitted - int(good.sum()),
        algorithm="model-free: trapezoid iAUC from bolus arrival, time to peak, peak values",
        reference=(
            "Evelhoch JL. Key factors in the acquisition of contrast kinetic data for oncology. "
            "J Magn Reson Imaging 1999;10:254-259. doi:10.1002/(SICI)1522-2586(199909)10:3<254::"
            "AID-JMRI5>3.0.CO;2-9"
        ),
        options={
            "bolus_arrival_s": ta,
            "ttp_reference": "bolus arrival",
            "max_enhancement": "Cmax: peak concentration (mM); MaxRSE: peak (S-S0)/S0",
            "baseline_frames": baseline_frames,
            **notes,
        },
    )
