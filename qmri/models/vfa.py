r"""T1 mapping from variable-flip-angle spoiled gradient echo (VFA / DESPOT1).

The steady-state signal of a spoiled gradient echo with flip angle :math:`\alpha` and repetition
time TR is

.. math::

    S(\alpha) = M_0 \sin\alpha \, \frac{1 - E_1}{1 - E_1 \cos\alpha},
    \qquad E_1 = e^{-TR/T_1}.

Rewritten as :math:`S/\sin\alpha = E_1 \, S/\tan\alpha + M_0 (1 - E_1)` it is a straight line
(DESPOT1), whose least-squares slope and intercept give :math:`E_1` and :math:`M_0` in closed form.
That linear estimate is the start of a non-linear least-squares fit of :math:`(M_0, T_1)` on the
signal itself (:func:`qmri.fitting.levenberg_marquardt`). Transmit-field inhomogeneity is corrected
with a B1 map: the actual flip angle in a voxel is :math:`b_1 \alpha` with :math:`b_1` the
actual/nominal flip-angle ratio.
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
    check_data,
    map_property,
    model_params,
    setting,
)

__all__ = ["T1_BOUNDS_S", "VFAFit", "VFAModel", "despot1_linear", "spgr_signal"]

#: Physical range of T1 (s); estimates on or outside these bounds are failures.
T1_BOUNDS_S = (1e-3, 10.0)
#: T1 (s) used to start the non-linear fit where the linear estimate is not physical.
_T1_FALLBACK_S = 1.0
#: A B1 map whose median exceeds this is taken to be in percent, not a ratio.
_B1_MAX_MEDIAN = 5.0
#: Levenberg-Marquardt settings (recorded in the fit options).
_MAX_ITER = 50
_TOL = 1e-8

_REFERENCE = (
    "Fram EK, Herfkens RJ, Johnson GA, et al. Rapid calculation of T1 using variable flip angle "
    "gradient refocused imaging. Magn Reson Imaging 1987;5:201-208. "
    "doi:10.1016/0730-725X(87)90021-X; Deoni SCL, Rutt BK, Peters TM. Rapid combined T1 and T2 "
    "mapping using gradient recalled acquisition in the steady state. Magn Reson Med "
    "2003;49:515-526. doi:10.1002/mrm.10407"
)
_ALGORITHMS = {
    "linear": "DESPOT1 linear least squares (S/sin(a) vs S/tan(a))",
    "nlls": "DESPOT1 linear start + non-linear least squares (Levenberg-Marquardt)",
}


def spgr_signal(
    m0: ArrayLike, t1_s: ArrayLike, flip_angles_rad: ArrayLike, tr_s: float
) -> NDArray[np.float64]:
    r"""Spoiled gradient-echo steady-state signal.

    .. math:: S = M_0 \sin\alpha \, (1 - E_1) / (1 - E_1 \cos\alpha), \quad E_1 = e^{-TR/T_1}

    Parameters
    ----------
    m0 : array_like, shape (...)
        Equilibrium magnetisation (a.u.).
    t1_s : array_like, shape (...)
        T1 (s).
    flip_angles_rad : array_like, shape (n,) or (..., n)
        Actual flip angles (rad).
    tr_s : float
        Repetition time (s).

    Returns
    -------
    ndarray, shape (..., n)
    """
    m0 = np.asarray(m0, dtype=np.float64)[..., None]
    e1 = np.exp(-tr_s / np.asarray(t1_s, dtype=np.float64))[..., None]
    a = np.asarray(flip_angles_rad, dtype=np.float64)
    return m0 * np.sin(a) * (1.0 - e1) / (1.0 - e1 * np.cos(a))


def despot1_linear(
    signal: ArrayLike, flip_angles_rad: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    r"""Closed-form DESPOT1 estimate, per voxel.

    Ordinary least-squares line through :math:`(S_i/\tan\alpha_i,\ S_i/\sin\alpha_i)`:
    slope :math:`E_1`, intercept :math:`M_0(1 - E_1)`.

    Parameters
    ----------
    signal : (n_vox, n) array_like
        SPGR signal.
    flip_angles_rad : (n,) or (n_vox, n) array_like
        Actual flip angles (rad).

    Returns
    -------
    e1 : (n_vox,) ndarray
        :math:`E_1 = e^{-TR/T_1}`; physical only in (0, 1).
    m0 : (n_vox,) ndarray
        :math:`M_0` (a.u.); NaN where the line is undetermined.
    """
    s = np.asarray(signal, dtype=np.float64)
    a = np.asarray(flip_angles_rad, dtype=np.float64)
    if a.ndim == 1:
        a = a[None, :]
    mean_w = np.full(s.shape[1], 1.0 / s.shape[1])
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        inv_sin = 1.0 / np.sin(a)  # (1, n) for shared angles: no per-voxel trigonometry
        y = s * inv_sin
        x = s * (inv_sin * np.cos(a))
        x_mean = np.einsum("ij,j->i", x, mean_w)
        y_mean = np.einsum("ij,j->i", y, mean_w)
        xc = x - x_mean[:, None]
        sxx = np.einsum("ij,ij->i", xc, xc)
        e1 = np.einsum("ij,ij->i", xc, y) / sxx  # sum xc (y - y_mean) = sum xc y
        m0 = (y_mean - e1 * x_mean) / (1.0 - e1)
    return e1, m0


def _check_b1_is_ratio(b1: ArrayLike) -> None:
    """Reject a B1 map given in percent (median of its positive values above 5)."""
    arr = np.asarray(b1)
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        return  # the shape/dtype check in fit_voxelwise reports it
    values = arr[np.isfinite(arr) & (arr > 0)]
    if values.size and np.median(values) > _B1_MAX_MEDIAN:
        raise QMRIInputError(
            f"b1 map has median {np.median(values):g}; expected the actual/nominal flip-angle "
            "ratio (1 = nominal), not percent"
        )


def _spgr_residuals(
    p: NDArray[np.float64],
    y: NDArray[np.float64],
    sin_a: NDArray[np.float64],
    cos_a: NDArray[np.float64],
    tr_s: float,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Residuals and Jacobian of the SPGR signal in (M0, T1)."""
    m0 = p[:, 0:1]
    t1 = p[:, 1:2]
    e1 = np.exp(-tr_s / t1)
    one_m_e1 = 1.0 - e1
    den = 1.0 - e1 * cos_a
    jac = np.empty((*y.shape, 2))
    f = jac[..., 0]
    np.divide(sin_a * one_m_e1, den, out=f)
    # dS/dT1 = M0 sin(a) (cos(a) - 1) / den^2 * E1 TR / T1^2
    #        = f (cos(a) - 1) / den * M0 E1 TR / (T1^2 (1 - E1))
    q = m0 * e1 * tr_s / (t1 * t1 * one_m_e1)
    np.multiply(f / den * (cos_a - 1.0), q, out=jac[..., 1])
    return m0 * f - y, jac


class VFAFit(ModelFit):
    """Result of :meth:`VFAModel.fit`: the :class:`~qmri.models.base.ModelFit` maps as properties."""

    t1_s = map_property("T1", "Longitudinal relaxation time T1 (s).")
    m0 = map_property("M0", "Equilibrium magnetisation M0 (a.u., the signal's scale).")


class VFAModel(Model[VFAFit]):
    """Variable-flip-angle (DESPOT1) T1 model for spoiled gradient-echo data.

    Parameters
    ----------
    flip_angles_deg : sequence of float
        Nominal flip angles (degrees), one per volume, in (0, 180); at least two distinct.
    tr_s : float
        Repetition time (s), in (0, 1].
    method : {"nlls", "linear"}, default "nlls"
        ``"linear"``: closed-form DESPOT1 only. ``"nlls"``: DESPOT1 start, then Levenberg-Marquardt
        on the signal (unbiased by the linearisation's noise weighting).

    Notes
    -----
    Maps (:class:`VFAFit`): ``T1`` (s), ``M0`` (a.u.), ``R2`` (1), ``fitmask`` (1). A voxel
    fails (NaN, fitmask 0) when its data or B1 value is not finite, a sample is negative (a
    magnitude cannot be), B1 <= 0, the fit is undetermined, or T1 is not strictly inside
    :data:`T1_BOUNDS_S` or M0 <= 0.

    Examples
    --------
    >>> model = VFAModel([2, 5, 10, 15], 0.005)
    >>> fit = model.fit(model.predict({"T1": 1.2, "M0": 1000.0}))
    >>> round(float(fit.t1_s), 4)
    1.2
    """

    param_names = ("T1", "M0")
    parameter_units: ClassVar[dict[str, str]] = {"T1": "s", "M0": "a.u."}
    fit_class = VFAFit
    volumes = ("flip_angles_deg", "flip angles")
    reference = _REFERENCE
    algorithms = _ALGORITHMS
    magnitude_data = True

    flip_angles_deg = setting("Nominal flip angles (degrees), one per volume, read-only array.")
    tr_s = setting("Repetition time (s).")
    method = setting('``"linear"`` or ``"nlls"``.')

    def __init__(self, flip_angles_deg: ArrayLike, tr_s: float, *, method: str = "nlls") -> None:
        fa = as_float_vector(flip_angles_deg, "flip angles")
        if fa.size < 2 or np.unique(fa).size < 2:
            raise QMRIInputError(f"VFA needs at least 2 different flip angles, got {fa.tolist()}")
        if np.any(fa <= 0) or np.any(fa >= 180):
            raise QMRIInputError(f"flip angles must be in (0, 180) degrees, got {fa.tolist()}")
        tr = as_number(tr_s, "TR", "seconds")
        if not np.isfinite(tr) or tr <= 0:
            raise QMRIInputError(f"TR must be positive (in seconds), got {tr_s}")
        if tr > 1.0:
            raise QMRIInputError(
                f"TR of {tr:g} s is too long for spoiled gradient echo: give TR in seconds, not ms"
            )
        check_choice(method, _ALGORITHMS, "VFA method")
        self._flip_angles_deg = fa
        self._tr_s = tr
        self._method = method

    @property
    def options(self) -> dict[str, Any]:
        return self._options()

    def _options(self, b1_corrected: bool | None = None) -> dict[str, Any]:
        options: dict[str, Any] = {
            "flip_angles_deg": self._flip_angles_deg.tolist(),
            "tr_s": self._tr_s,
            "method": self._method,
        }
        if b1_corrected is not None:  # a fit's options say whether it had a B1 map
            options["b1_corrected"] = b1_corrected
        options["t1_bounds_s"] = list(T1_BOUNDS_S)
        if self._method == "nlls":
            options.update({"max_iter": _MAX_ITER, "tol": _TOL})
        return options

    def predict(
        self, params: Mapping[str, ArrayLike], *, b1: ArrayLike | None = None
    ) -> NDArray[np.float64]:
        """SPGR signal of parameter maps, shape ``(..., n_flip_angles)``.

        Parameters
        ----------
        params : mapping of str to array_like
            ``"T1"`` (s) and ``"M0"`` (a.u.) maps of one shape, e.g. :attr:`VFAFit.params`.
        b1 : array_like, optional
            Actual/nominal flip-angle ratio, shape of the maps (scales the angles, as in
            :meth:`fit`); default nominal angles.
        """
        t1, m0 = model_params(params, "T1", "M0")
        alpha = np.deg2rad(self._flip_angles_deg)
        if b1 is not None:
            alpha = np.asarray(b1, dtype=np.float64)[..., None] * alpha
        return spgr_signal(m0, t1, alpha, self._tr_s)

    def fit(
        self,
        data: ArrayLike,
        *,
        mask: ArrayLike | None = None,
        b1: ArrayLike | None = None,
        chunk_size: int | None = None,
    ) -> VFAFit:
        """Fit T1 and M0 in every voxel.

        Parameters
        ----------
        data : array_like, shape (..., n_flip_angles)
            SPGR magnitude images, one volume per flip angle (a single voxel may be 1-D).
        b1 : array_like, shape data.shape[:-1], optional
            Actual/nominal flip-angle ratio (1 = nominal). Strongly recommended: a 10 % B1 error
            biases VFA T1 by roughly 20 %.
        mask, chunk_size
            As in :meth:`Model.fit <qmri.models.base.Model.fit>`.

        Returns
        -------
        VFAFit
            Maps ``T1`` (s), ``M0`` (a.u.), ``R2``, ``fitmask``; ``options["b1_corrected"]``.
        """
        arr = check_data(data, self._flip_angles_deg.size, "flip angles")
        if b1 is not None:
            _check_b1_is_ratio(b1)
        options = self._options(b1_corrected=b1 is not None)
        return self._fit(
            arr, mask=mask, chunk_size=chunk_size, voxel_inputs={"b1": b1}, options=options
        )

    def _kernel(self) -> Kernel:
        alpha = np.deg2rad(self._flip_angles_deg)
        tr = self._tr_s
        nlls = self._method == "nlls"
        lower = np.array([0.0, T1_BOUNDS_S[0]])
        upper = np.array([np.inf, T1_BOUNDS_S[1]])

        def kernel(y: NDArray[np.float64], b1: NDArray[np.float64] | None = None) -> KernelOutput:
            if b1 is None:
                a = alpha[None, :]  # shared by all voxels: trigonometry once
                b1_ok = np.ones(y.shape[0], dtype=bool)
            else:
                a = b1[:, None] * alpha
                b1_ok = (b1 > 0) & (a < np.pi).all(axis=1)
            sin_a, cos_a = np.sin(a), np.cos(a)
            e1, m0 = despot1_linear(y, a)
            with np.errstate(divide="ignore", invalid="ignore"):
                t1 = -tr / np.log(e1)
            linear_ok = (e1 > 0) & (e1 < 1) & np.isfinite(m0) & (m0 > 0)
            converged = None
            if nlls:
                t1_0 = np.where(linear_ok, t1, _T1_FALLBACK_S)
                f0 = sin_a * (1.0 - np.exp(-tr / t1_0))[:, None]
                f0 /= 1.0 - np.exp(-tr / t1_0)[:, None] * cos_a
                m0_0 = np.where(
                    linear_ok, m0, np.einsum("ij,ij->i", f0, y) / np.einsum("ij,ij->i", f0, f0)
                )
                p0 = np.stack([m0_0, t1_0], axis=1)
                p0[~b1_ok] = np.nan
                res = levenberg_marquardt(
                    lambda p, yy, ss, cc: _spgr_residuals(p, yy, ss, cc, tr),
                    p0,
                    lower=lower,
                    upper=upper,
                    voxel_args=(
                        y,
                        np.broadcast_to(sin_a, y.shape),
                        np.broadcast_to(cos_a, y.shape),
                    ),
                    max_iter=_MAX_ITER,
                    tol=_TOL,
                )
                m0, t1 = res.params[:, 0], res.params[:, 1]
                ok = b1_ok & np.isfinite(res.params).all(axis=1) & ~res.at_bound
                converged = res.converged
                r2 = r_squared(y, ss_res=2.0 * res.cost)
            else:
                ok = b1_ok & linear_ok & (t1 > T1_BOUNDS_S[0]) & (t1 < T1_BOUNDS_S[1])
                e1 = np.exp(-tr / t1)[:, None]
                r2 = r_squared(y, m0[:, None] * sin_a * (1.0 - e1) / (1.0 - e1 * cos_a))
            return KernelOutput({"T1": t1, "M0": m0}, r2, ok, converged)

        return kernel
