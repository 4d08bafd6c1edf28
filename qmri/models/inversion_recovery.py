r"""T1 mapping from inversion-recovery magnitude images (BIDS ``IRT1``).

The longitudinal magnetisation after an inversion pulse recovers as

.. math:: S(TI) = a + b\, e^{-TI/T_1},

with :math:`a > 0` and :math:`b < 0` (ideal inversion, TR much longer than T1:
:math:`b = -2a`). Magnitude images measure :math:`|S(TI)|`: the sign of the early, still
negative, samples is lost. The reduced-dimension non-linear least squares with polarity
restoration of Barral et al. (RD-NLS-PR) recovers it: with the samples sorted by TI, the
magnitude is smallest near the null point, so the only plausible polarity patterns are "every
sample before the minimum is negative" with the minimum itself either negative or positive. For
each of these two candidates, and for each T1 on a logarithmic grid, :math:`(a, b)` follow in
closed form (linear least squares on the basis :math:`[1, e^{-TI/T_1}]`), so the search is
one-dimensional; all voxels of a chunk are searched at once (no voxel loop). The best grid T1 of
each candidate then starts a variable-projection Levenberg-Marquardt refinement of T1 alone
(:func:`qmri.fitting.levenberg_marquardt` with Kaufman's Jacobian; :math:`(a, b)` stay in closed
form), which removes the grid quantisation, and the candidate with the smaller residual wins.
Refining both candidates (rather than picking one on the grid) matters when the minimum sample
is close to zero: its sign is then decided by less than the grid's quantisation error.

From :math:`(a, b, T_1)` the model reports :math:`M_0` and the inversion efficiency
:math:`\delta` (1 = perfect 180 degree inversion, 0 = none), assuming a readout that saturates
the longitudinal magnetisation and a repetition time TR from inversion to inversion:

.. math::

    a = M_0 (1 + \delta\, e^{-TR/T_1}), \qquad b = -M_0 (1 + \delta)

so :math:`M_0 = a` and :math:`\delta = -b/a - 1` when TR is not given (TR much longer than T1).
T1 itself does not depend on this assumption.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from qmri.errors import QMRIInputError
from qmri.fitting import levenberg_marquardt, r_squared
from qmri.models.base import (
    Kernel,
    KernelOutput,
    Model,
    ModelFit,
    as_float_vector,
    as_number,
    check_choice,
    map_property,
    model_params,
    setting,
)
from qmri.models.vfa import T1_BOUNDS_S

__all__ = ["InversionRecoveryFit", "InversionRecoveryModel", "ir_signal"]

#: Points of the logarithmic T1 grid searched before the non-linear refinement.
_GRID_POINTS = 120
#: Voxels searched together on the grid (bounds the (voxels x grid) temporaries to a few MB).
_GRID_BLOCK = 4096
#: T1 shorter than the first TI divided by this is undetermined (recovery over before any sample).
_T1_MIN_TI_RATIO = 5.0
#: Largest plausible inversion efficiency (physical maximum 1); above it the fit is degenerate
#: (a vanishing recovered signal a next to a large b: data that decay and never recover).
_MAX_INV_EFF = 2.0
#: Inversion times longer than this (s) are taken to be in milliseconds.
_TI_MAX_S = 30.0
_MIN_TIS = 4
_MAX_ITER = 50
_TOL = 1e-8

_REFERENCE = (
    "Barral JK, Gudmundson E, Stikov N, Etezadi-Amoli M, Stoica P, Nishimura DG. A robust "
    "methodology for in vivo T1 mapping. Magn Reson Med 2010;64:1057-1067. "
    "doi:10.1002/mrm.22497; Kaufman L. A variable projection method for solving separable "
    "nonlinear least squares problems. BIT 1975;15:49-57. doi:10.1007/BF01932995"
)
_ALGORITHMS = {
    "rd-nls": "reduced-dimension non-linear least squares with polarity restoration "
    "(RD-NLS-PR: grid search over T1 with closed-form a, b for the two polarity candidates at "
    "the signal minimum, each refined by variable-projection Levenberg-Marquardt)",
}


def ir_signal(
    m0: ArrayLike,
    t1_s: ArrayLike,
    inversion_times_s: ArrayLike,
    *,
    efficiency: ArrayLike = 1.0,
    tr_s: float | None = None,
    magnitude: bool = True,
) -> NDArray[np.float64]:
    r"""Inversion-recovery signal.

    .. math:: S = M_0 \left(1 + \delta e^{-TR/T_1} - (1 + \delta) e^{-TI/T_1}\right)

    Parameters
    ----------
    m0 : array_like, shape (...)
        Equilibrium magnetisation (a.u.).
    t1_s : array_like, shape (...)
        T1 (s).
    inversion_times_s : (n,) array_like
        Inversion times (s).
    efficiency : array_like, shape (...), default 1
        Inversion efficiency :math:`\delta` (1 = perfect inversion).
    tr_s : float, optional
        Repetition time (s) from inversion to inversion; None means TR much longer than T1.
    magnitude : bool, default True
        Return :math:`|S|` (magnitude images) instead of the signed signal.

    Returns
    -------
    ndarray, shape (..., n)
    """
    m0 = np.asarray(m0, dtype=np.float64)[..., None]
    t1 = np.asarray(t1_s, dtype=np.float64)[..., None]
    eff = np.asarray(efficiency, dtype=np.float64)[..., None]
    ti = np.asarray(inversion_times_s, dtype=np.float64)
    e_tr = 0.0 if tr_s is None else np.exp(-float(tr_s) / t1)
    s = m0 * (1.0 + eff * e_tr - (1.0 + eff) * np.exp(-ti / t1))
    return np.abs(s) if magnitude else s


def _grid_basis(ti: NDArray[np.float64], grid: NDArray[np.float64]) -> NDArray[np.float64]:
    """Orthonormal complement of the constant in ``[1, exp(-TI/T1)]`` for every grid T1.

    Returns ``q`` (n_ti, n_grid): ``(e - mean(e)) / |e - mean(e)|``, so that the least-squares
    coefficient of ``exp(-TI/T1)`` for data ``y`` has the sign of ``q . y``. Grid points whose
    basis is degenerate (all TIs far from T1) get ``q = 0``.
    """
    e = np.exp(-ti[:, None] / grid[None, :])
    ec = e - e.mean(axis=0)
    norm = np.sqrt(np.einsum("kg,kg->g", ec, ec))
    good = norm > 1e-9
    return np.where(good, ec / np.where(good, norm, 1.0), 0.0)


def _polarity_grid_search(
    y: NDArray[np.float64], grid: NDArray[np.float64], q: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """RD-NLS-PR grid search for a block of magnitude signals ``y`` (m, n_ti).

    For both polarity candidates (every sample before the minimum negative, the minimum itself
    positive or negative) returns the grid T1 (s) with the smallest residual (m, 2) and the
    number of leading samples whose sign is flipped (m, 2). Only solutions with ``b <= 0``
    (recovery, not decay) are considered.
    """
    n_ti = y.shape[1]
    k_min = np.argmin(y, axis=1)
    cols = np.arange(n_ti)
    t1 = np.empty((y.shape[0], 2))
    flips = np.stack([k_min, np.minimum(k_min + 1, n_ti)], axis=1)
    for c in range(2):
        ys = np.where(cols[None, :] < flips[:, c : c + 1], -y, y)
        # residual = |y|^2 - n mean(y)^2 - (q . y)^2, and only the last term depends on T1
        z = np.einsum("ik,kg->ig", ys, q)
        np.minimum(z, 0.0, out=z)  # b <= 0
        t1[:, c] = grid[np.argmax(z * z, axis=1)]
    return t1, flips


class InversionRecoveryFit(ModelFit):
    """Result of :meth:`InversionRecoveryModel.fit`: the maps as properties."""

    t1_s = map_property("T1", "Longitudinal relaxation time T1 (s).")
    m0 = map_property("M0", "Equilibrium magnetisation M0 (a.u.).")
    inv_eff = map_property("InvEff", "Inversion efficiency (1; 1 = perfect 180 degree inversion).")


class InversionRecoveryModel(Model[InversionRecoveryFit]):
    r"""Inversion-recovery T1 model for magnitude images (BIDS ``IRT1``), RD-NLS-PR fit.

    Parameters
    ----------
    inversion_times_s : sequence of float
        Inversion times (s), one per volume, positive and strictly increasing; at least 4.
    tr_s : float, optional
        Repetition time (s) from one inversion to the next, longer than the last TI. Only used
        to convert :math:`(a, b)` into ``M0`` and ``InvEff``; T1 does not depend on it. Default:
        TR much longer than T1 (``M0 = a``, ``InvEff = -b/a - 1``).
    method : {"rd-nls"}, default "rd-nls"
        Reduced-dimension NLS with polarity restoration (Barral et al. 2010).

    Notes
    -----
    Maps (:class:`InversionRecoveryFit`): ``T1`` (s), ``M0`` (a.u.), ``InvEff`` (inversion efficiency, 1: 1 = perfect 180
    degree inversion, 0 = saturation recovery; noisy, not a quality criterion), ``R2`` (1,
    goodness of fit of :math:`|a + b e^{-TI/T_1}|` to the magnitude data), ``fitmask`` (1).

    Data are treated as magnitude (their absolute value is fitted), so phase-corrected real
    images work too. A voxel fails (NaN, fitmask 0) when its data are not finite, the
    refinement does not yield finite parameters, T1 is not strictly inside
    :data:`~qmri.models.vfa.T1_BOUNDS_S` or is shorter than a fifth of the first TI (the
    recovery is over before the first sample), :math:`a \le 0` or :math:`b \ge 0` (the signal
    does not recover with TI), ``M0 <= 0``, or ``InvEff > 2`` (a degenerate fit: the signal
    decays and never recovers within the TIs). T1 is determined only if the TIs span it: choose TIs
    from well below to above the null point :math:`T_1 \ln 2` of the longest T1 of interest.

    Examples
    --------
    >>> model = InversionRecoveryModel([0.05, 0.2, 0.5, 1.0, 2.0, 4.0])
    >>> fit = model.fit(model.predict({"T1": 0.9, "M0": 1000.0}))
    >>> round(float(fit.t1_s), 4)
    0.9
    """

    param_names = ("T1", "M0", "InvEff")
    parameter_units: ClassVar[dict[str, str]] = {"T1": "s", "M0": "a.u.", "InvEff": "1"}
    fit_class = InversionRecoveryFit
    volumes = ("inversion_times_s", "inversion times")
    reference = _REFERENCE
    algorithms = _ALGORITHMS

    inversion_times_s = setting("Inversion times (s), read-only array.")
    tr_s = setting("Repetition time (s) from inversion to inversion, or None (TR >> T1).")
    method = setting('``"rd-nls"``.')

    def __init__(
        self,
        inversion_times_s: ArrayLike,
        *,
        tr_s: float | None = None,
        method: str = "rd-nls",
    ) -> None:
        ti = as_float_vector(inversion_times_s, "inversion times")
        if ti.size < _MIN_TIS:
            raise QMRIInputError(
                f"inversion-recovery T1 with polarity restoration needs at least {_MIN_TIS} "
                f"inversion times, got {ti.size}"
            )
        if np.any(ti <= 0):
            raise QMRIInputError(
                f"inversion times must be positive (in seconds), got {ti.tolist()}"
            )
        if np.any(np.diff(ti) <= 0):
            raise QMRIInputError(f"inversion times must be strictly increasing, got {ti.tolist()}")
        if ti[-1] > _TI_MAX_S:
            raise QMRIInputError(
                f"inversion time of {ti[-1]:g} s is implausible: give inversion times in "
                "seconds, not ms"
            )
        tr: float | None = None
        if tr_s is not None:
            tr = as_number(tr_s, "TR", "seconds")
            if not np.isfinite(tr) or tr <= ti[-1]:
                raise QMRIInputError(
                    f"TR ({tr_s} s) must be longer than the last inversion time ({ti[-1]:g} s)"
                )
            if tr > 10 * _TI_MAX_S:
                raise QMRIInputError(f"TR of {tr:g} s is implausible: give TR in seconds, not ms")
        check_choice(method, _ALGORITHMS, "inversion-recovery method")
        self._inversion_times_s = ti
        self._tr_s = tr
        self._method = method
        #: shortest T1 accepted (s) and the logarithmic T1 grid of the polarity search
        self._t1_min = max(T1_BOUNDS_S[0], ti[0] / _T1_MIN_TI_RATIO)
        self._grid = np.geomspace(self._t1_min * 1.01, T1_BOUNDS_S[1] / 1.01, _GRID_POINTS)

    @property
    def options(self) -> dict[str, Any]:
        return {
            "inversion_times_s": self._inversion_times_s.tolist(),
            "tr_s": self._tr_s,
            "method": self._method,
            "t1_bounds_s": [self._t1_min, T1_BOUNDS_S[1]],
            "max_inversion_efficiency": _MAX_INV_EFF,
            "t1_grid": {
                "points": _GRID_POINTS,
                "min_s": float(self._grid[0]),
                "max_s": float(self._grid[-1]),
                "spacing": "logarithmic",
            },
            "polarity_candidates": "minimum positive, minimum negative",
            "readout": "saturating (M0 and InvEff only)",
            "max_iter": _MAX_ITER,
            "tol": _TOL,
        }

    def predict(
        self, params: Mapping[str, ArrayLike], *, magnitude: bool = True
    ) -> NDArray[np.float64]:
        """Signal at every inversion time, shape ``(..., n_inversion_times)``.

        Parameters
        ----------
        params : mapping of str to array_like
            ``"T1"`` (s), ``"M0"`` (a.u.) and optionally ``"InvEff"`` (1, default 1 = perfect
            inversion) maps, e.g. :attr:`InversionRecoveryFit.params`.
        magnitude : bool, default True
            Return the magnitude (what :meth:`fit` takes) instead of the signed signal.
        """
        t1, m0 = model_params(params, "T1", "M0")
        efficiency = params.get("InvEff", 1.0)
        return ir_signal(
            m0,
            t1,
            self._inversion_times_s,
            efficiency=efficiency,
            tr_s=self._tr_s,
            magnitude=magnitude,
        )

    def _kernel(self) -> Kernel:
        ti = self._inversion_times_s
        tr = self._tr_s
        lo, hi = T1_BOUNDS_S
        t1_min = self._t1_min
        grid = self._grid
        q = _grid_basis(ti, grid)
        n_ti = ti.size

        def linear_part(
            t1: NDArray[np.float64], y: NDArray[np.float64]
        ) -> tuple[NDArray[np.float64], ...]:
            """e = exp(-TI/T1), its centred version, |ec|^2, mean(y) and the LS coefficient b."""
            e = np.exp(-ti / t1)
            ec = e - (np.einsum("ij->i", e) / n_ti)[:, None]
            see = np.einsum("ij,ij->i", ec, ec)
            mean_y = np.einsum("ij->i", y) / n_ti
            b = np.einsum("ij,ij->i", ec, y) / see
            return e, ec, see, mean_y, b

        def projected(
            p: NDArray[np.float64], y: NDArray[np.float64]
        ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
            # variable projection: (a, b) solved in closed form for the current T1; Kaufman's
            # Jacobian (I - P) d(Phi c)/dT1 (its gradient J^T r is exact, as r is orthogonal to
            # the range of Phi)
            t1 = p[:, 0:1]
            e, ec, see, mean_y, b = linear_part(t1, y)
            r = mean_y[:, None] + b[:, None] * ec - y
            d = e * (ti / (t1 * t1))  # de/dT1
            d -= (np.einsum("ij->i", d) / n_ti)[:, None]
            d -= (np.einsum("ij,ij->i", ec, d) / see)[:, None] * ec
            d *= b[:, None]
            return r, d[:, :, None]

        def kernel(y_in: NDArray[np.float64]) -> KernelOutput:
            y = np.abs(y_in)
            n = y.shape[0]
            t1_0 = np.empty((n, 2))
            flips = np.empty((n, 2), dtype=np.int64)
            for start in range(0, n, _GRID_BLOCK):
                part = slice(start, start + _GRID_BLOCK)
                t1_0[part], flips[part] = _polarity_grid_search(y[part], grid, q)
            # refine both candidates (they differ unless the minimum is at the last TI)
            two = np.flatnonzero(flips[:, 0] != flips[:, 1])
            vox = np.concatenate([np.arange(n), two])
            cand = np.concatenate([np.zeros(n, dtype=np.int64), np.ones(two.size, np.int64)])
            signed = np.where(
                np.arange(n_ti)[None, :] < flips[vox, cand][:, None], -y[vox], y[vox]
            )
            res = levenberg_marquardt(
                projected,
                t1_0[vox, cand][:, None],
                lower=lo,
                upper=hi,
                voxel_args=(signed,),
                max_iter=_MAX_ITER,
                tol=_TOL,
            )
            t1_all = res.params[:, 0]
            e, ec, _, mean_y, b_all = linear_part(t1_all[:, None], signed)
            a_all = mean_y - b_all * (e - ec)[:, 0]
            ok_all = np.isfinite(t1_all) & ~res.at_bound & (a_all > 0) & (b_all < 0)
            cost = np.where(ok_all, res.cost, np.inf)
            pick = np.arange(n)
            better = cost[n:] < cost[two]
            pick[two[better]] = n + np.flatnonzero(better)
            t1, a, b = t1_all[pick], a_all[pick], b_all[pick]
            e_tr = 0.0 if tr is None else np.exp(-tr / t1)
            m0 = -b - (a + b) / (e_tr - 1.0)  # M0 (1 + d) = -b, M0 d (1 - E_TR) = -(a + b)
            inv_eff = -(a + b) / ((1.0 - e_tr) * m0)
            ok = ok_all[pick] & (m0 > 0) & (t1 > t1_min) & (inv_eff <= _MAX_INV_EFF)
            pred = np.abs(a[:, None] + b[:, None] * e[pick])
            r2 = r_squared(y, pred)
            params = {"T1": t1, "M0": m0, "InvEff": inv_eff}
            return KernelOutput(params, r2, ok, res.converged[pick])

        return kernel
