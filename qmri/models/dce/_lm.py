"""The non-linear stage of the kinetic fits: start values and bounded Levenberg-Marquardt.

The closed-form linear estimate (:mod:`qmri.models.dce._linear_start`) starts the fit where it
is strictly inside the bounds (moved a margin of 0.1 % of the range inside them), else OSIPI's
start values are used. :func:`refine` then runs the batched bounded Levenberg-Marquardt of
:func:`qmri.fitting.levenberg_marquardt` on all voxels together, with the analytic Jacobian of
:func:`~qmri.models.dce._forward.tissue_tm`. With a fitted delay the cost is multimodal in it:
voxels whose fit ends outside the interior of the bounds are restarted from shifted delays
(:data:`DELAY_RESTARTS_S`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from qmri.fitting import levenberg_marquardt
from qmri.models.dce._forward import tissue_tm
from qmri.models.dce.convolution import _FineAIF

__all__ = ["DELAY_RESTARTS_S", "refine", "start_values"]

#: Start values where the linear start is not usable (OSIPI's start values).
FALLBACK = {"Ktrans": 0.6, "ve": 0.2, "vp": 0.01}
#: Delay offsets (s) from which voxels whose delay fit ended on a bound are refitted.
DELAY_RESTARTS_S = (1.5, -1.5, 3.0, -3.0)


def start_values(
    start: NDArray[np.float64],
    delay0: NDArray[np.float64] | None,
    base_params: Sequence[str],
    bounds: Mapping[str, tuple[float, float]],
) -> NDArray[np.float64]:
    """Start of the non-linear fit (n, n_base [+ 1]) from the linear estimate.

    Parameters
    ----------
    start : (n, n_base) ndarray
        Linear estimate of the base parameters (NaN where undetermined).
    delay0 : (n,) ndarray or None
        Delay (s) of the grid search, when the delay is fitted.
    base_params : sequence of str
        Names of the columns of ``start``.
    bounds : mapping
        Bounds of every parameter (``delay`` in s).
    """
    p0 = np.empty((start.shape[0], len(base_params) + (delay0 is not None)))
    for i, name in enumerate(base_params):
        v = start[:, i]
        b_lo, b_hi = bounds[name]
        margin = 1e-3 * (b_hi - b_lo)
        good = np.isfinite(v) & (v > b_lo) & (v < b_hi)
        fallback = min(max(FALLBACK[name], b_lo + margin), b_hi - margin)
        p0[:, i] = np.where(good, np.clip(v, b_lo + margin, b_hi - margin), fallback)
    if delay0 is not None:
        d_lo, d_hi = bounds["delay"]
        p0[:, -1] = np.clip(delay0, d_lo + 1e-3, d_hi - 1e-3)
    return p0


def refine(
    kind: str,
    t_min: NDArray[np.float64],
    y: NDArray[np.float64],
    c_tm: NDArray[np.float64],
    p0: NDArray[np.float64],
    *,
    lower: NDArray[np.float64],
    upper: NDArray[np.float64],
    fit_delay: bool,
    delay_bounds_s: tuple[float, float],
    max_iter: int,
    tol: float,
    interior: Callable[[NDArray[np.float64]], NDArray[np.bool_]],
    fine: _FineAIF | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_], NDArray[np.bool_]]:
    """Bounded Levenberg-Marquardt fit of the model to curves ``y`` (n, n_t).

    Parameters
    ----------
    kind, t_min, c_tm, fine
        As in :func:`~qmri.models.dce._forward.tissue_tm`.
    y : (n, n_t) ndarray
        Tissue concentration (mM).
    p0 : (n, n_par) ndarray
        Start (:func:`start_values`).
    lower, upper : (n_par,) ndarray
        Bounds of the columns.
    fit_delay : bool
        The last column is the delay (s).
    delay_bounds_s : (float, float)
        Its bounds (restarts are clipped 1 ms inside them).
    max_iter, tol
        Levenberg-Marquardt settings.
    interior : callable
        ``interior(params) -> (n,) bool``: the estimate is a success.

    Returns
    -------
    params : (n, n_par) ndarray
    cost : (n,) ndarray
        Half the residual sum of squares.
    converged, ok : (n,) ndarray of bool
        Convergence, and success (``interior``).
    """
    per_voxel = c_tm.shape[1] > 1

    def residuals(
        p: NDArray[np.float64], yy: NDArray[np.float64], *extra: NDArray[np.float64]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        cc = np.ascontiguousarray(extra[0].T) if per_voxel else c_tm
        conc, jac_list = tissue_tm(
            kind, t_min, p, cc, with_jac=True, fit_delay=fit_delay, fine=fine
        )
        assert jac_list is not None
        jac = np.empty((yy.shape[0], yy.shape[1], len(jac_list)))
        for i, col in enumerate(jac_list):
            jac[:, :, i] = col.T
        return np.ascontiguousarray(conc.T) - yy, jac

    voxel_args: tuple[NDArray[np.float64], ...] = (y,)
    if per_voxel:
        voxel_args = (y, np.ascontiguousarray(c_tm.T))
    res = levenberg_marquardt(
        residuals,
        p0,
        lower=lower,
        upper=upper,
        voxel_args=voxel_args,
        max_iter=max_iter,
        tol=tol,
    )
    params = res.params.copy()
    cost, converged = res.cost.copy(), res.converged.copy()
    ok = interior(params)
    if fit_delay and not ok.all():
        # the delay makes the cost multimodal: restart failed voxels from shifted delays
        d_lo, d_hi = delay_bounds_s
        for offset in DELAY_RESTARTS_S:
            bad = np.flatnonzero(~ok)
            if bad.size == 0:
                break
            p0b = p0[bad].copy()
            p0b[:, -1] = np.clip(p0b[:, -1] + offset, d_lo + 1e-3, d_hi - 1e-3)
            rb = levenberg_marquardt(
                residuals,
                p0b,
                lower=lower,
                upper=upper,
                voxel_args=tuple(a[bad] for a in voxel_args),
                max_iter=max_iter,
                tol=tol,
            )
            good = interior(rb.params)
            sel = bad[good]
            params[sel], cost[sel] = rb.params[good], rb.cost[good]
            converged[sel] = rb.converged[good]
            ok[sel] = True
    return params, cost, converged, ok
