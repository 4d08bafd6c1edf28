r"""T2 and T2* mapping from multi-echo data with a mono-exponential decay.

.. math:: S(TE) = S_0 \, e^{-TE/T_2}

The start is a weighted log-linear fit (:func:`qmri.fitting.loglinear_wls`, weights
:math:`S^2`), refined by non-linear least squares on the signal
(:func:`qmri.fitting.levenberg_marquardt`). The same model serves spin-echo T2 and gradient-echo
T2* (``quantity`` only names the map). In multi-echo spin-echo trains the first echo carries no
stimulated-echo contribution while later echoes do, so it is often dropped
(``drop_first_echo=True``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from qmri.errors import QMRIInputError
from qmri.fitting import DEFAULT_CHUNK_SIZE, levenberg_marquardt, loglinear_wls, r_squared
from qmri.models.base import KernelOutput, ModelFit, as_float_vector, check_data, fit_voxelwise

__all__ = ["T2_BOUNDS_S", "MonoExponentialModel", "monoexp_signal"]

#: Physical range of T2 / T2* (s); estimates on or outside these bounds are failures.
T2_BOUNDS_S = (1e-4, 5.0)
_MAX_ITER = 50
_TOL = 1e-8
_QUANTITIES = ("T2", "T2star")
_ALGORITHMS = {
    "linear": "log-linear weighted least squares (weights S^2)",
    "nlls": "log-linear weighted least squares start + non-linear least squares "
    "(Levenberg-Marquardt)",
}
_REFERENCE = (
    "Milford D, Rosbach N, Bendszus M, Heiland S. Mono-exponential fitting in T2-relaxometry: "
    "relevance of offset and first echo. PLoS One 2015;10:e0145255. "
    "doi:10.1371/journal.pone.0145255"
)


def monoexp_signal(s0: ArrayLike, t2_s: ArrayLike, echo_times_s: ArrayLike) -> np.ndarray:
    r"""Mono-exponential decay :math:`S = S_0 e^{-TE/T_2}`, shape ``(..., n_echoes)``.

    Parameters
    ----------
    s0 : array_like, shape (...)
        Signal at TE = 0 (a.u.).
    t2_s : array_like, shape (...)
        T2 or T2* (s).
    echo_times_s : (n_echoes,) array_like
        Echo times (s).
    """
    s0 = np.asarray(s0, dtype=np.float64)[..., None]
    t2 = np.asarray(t2_s, dtype=np.float64)[..., None]
    return s0 * np.exp(-np.asarray(echo_times_s, dtype=np.float64) / t2)


class MonoExponentialModel:
    """Mono-exponential T2 / T2* model for multi-echo magnitude data.

    Parameters
    ----------
    echo_times_s : sequence of float
        Echo times (s), one per volume, positive and strictly increasing.
    drop_first_echo : bool, default False
        Leave the first echo out of the fit (the data must still contain it).
    quantity : {"T2", "T2star"}, default "T2"
        Name of the relaxation-time map.
    method : {"nlls", "linear"}, default "nlls"
        ``"linear"``: weighted log-linear fit only; ``"nlls"``: then Levenberg-Marquardt.

    Notes
    -----
    Maps: ``T2`` or ``T2star`` (s), ``S0`` (a.u.), ``R2`` (1), ``fitmask`` (1). A voxel fails
    when its data are not finite, the fit is undetermined (fewer than two echoes with positive
    signal), T2 is not strictly inside :data:`T2_BOUNDS_S`, or S0 <= 0. No noise-floor (offset)
    term is fitted: at low SNR the late echoes of a short-T2 tissue bias T2 upward.
    """

    def __init__(
        self,
        echo_times_s: ArrayLike,
        *,
        drop_first_echo: bool = False,
        quantity: str = "T2",
        method: str = "nlls",
    ) -> None:
        te = as_float_vector(echo_times_s, "echo times")
        if np.any(te <= 0):
            raise QMRIInputError(f"echo times must be positive (in seconds), got {te.tolist()}")
        if np.any(np.diff(te) <= 0):
            raise QMRIInputError(f"echo times must be strictly increasing, got {te.tolist()}")
        if te[-1] > 1.0:
            raise QMRIInputError(
                f"echo time of {te[-1]:g} s is implausible: give echo times in seconds, not ms"
            )
        n_used = te.size - int(bool(drop_first_echo))
        if n_used < 2:
            raise QMRIInputError(
                f"a mono-exponential fit needs at least 2 echoes, got {n_used}"
                + (" after dropping the first echo" if drop_first_echo else "")
            )
        if quantity not in _QUANTITIES:
            raise QMRIInputError(f"unknown quantity {quantity!r}; use one of: 'T2', 'T2star'")
        if method not in _ALGORITHMS:
            raise QMRIInputError(f"unknown method {method!r}; use one of: 'linear', 'nlls'")
        self._te = te
        self._drop_first_echo = bool(drop_first_echo)
        self._quantity = quantity
        self._method = method

    @property
    def echo_times_s(self) -> NDArray[np.float64]:
        """All echo times (s), read-only (including a dropped first echo)."""
        return self._te

    @property
    def drop_first_echo(self) -> bool:
        return self._drop_first_echo

    @property
    def quantity(self) -> str:
        return self._quantity

    @property
    def method(self) -> str:
        return self._method

    @property
    def param_names(self) -> tuple[str, str]:
        """Parameter map names: ``(quantity, "S0")``."""
        return (self._quantity, "S0")

    @property
    def units(self) -> dict[str, str]:
        return {self._quantity: "s", "S0": "a.u.", "R2": "1", "fitmask": "1"}

    def __repr__(self) -> str:
        return (
            f"MonoExponentialModel(echo_times_s={self._te.tolist()}, "
            f"drop_first_echo={self._drop_first_echo}, quantity={self._quantity!r}, "
            f"method={self._method!r})"
        )

    def predict(self, t2_s: ArrayLike, s0: ArrayLike) -> np.ndarray:
        """Signal at every echo time for given T2 (s) and S0, shape ``(..., n_echoes)``."""
        return monoexp_signal(s0, t2_s, self._te)

    def fit(
        self,
        data: ArrayLike,
        *,
        mask: ArrayLike | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> ModelFit:
        """Fit T2 (or T2*) and S0 in every voxel.

        Parameters
        ----------
        data : array_like, shape (..., n_echoes)
            Magnitude images, one volume per echo (a single voxel may be 1-D).
        mask : array_like, shape data.shape[:-1], optional
            Voxels to fit (non-zero); default all.
        chunk_size : int
            Voxels fitted together (memory bound only).

        Returns
        -------
        ModelFit
            Maps ``T2``/``T2star`` (s), ``S0`` (a.u.), ``R2``, ``fitmask``.
        """
        arr = check_data(data, self._te.size, "echo times")
        first = int(self._drop_first_echo)
        te = self._te[first:]
        nlls = self._method == "nlls"
        lower = np.array([0.0, T2_BOUNDS_S[0]])
        upper = np.array([np.inf, T2_BOUNDS_S[1]])
        t2_fallback = float(te.mean())
        name = self._quantity

        def residuals(
            p: NDArray[np.float64], y: NDArray[np.float64]
        ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
            s0, t2 = p[:, 0:1], p[:, 1:2]
            decay = np.exp(-te / t2)
            jac = np.empty((*y.shape, 2))
            jac[..., 0] = decay
            jac[..., 1] = s0 * decay * te / (t2 * t2)
            return s0 * decay - y, jac

        def kernel(y_all: NDArray[np.float64]) -> KernelOutput:
            y = y_all[:, first:]
            log_s0, rate, lin_ok = loglinear_wls(y, te)
            with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
                t2 = 1.0 / rate
                s0 = np.exp(log_s0)
            lin_ok &= (rate > 0) & np.isfinite(s0) & (s0 > 0)
            converged = None
            if nlls:
                t2_0 = np.where(lin_ok & np.isfinite(t2), t2, t2_fallback)
                decay0 = np.exp(-te / np.clip(t2_0, *T2_BOUNDS_S)[:, None])
                with np.errstate(divide="ignore", invalid="ignore"):
                    s0_ls = np.einsum("ij,ij->i", decay0, y) / np.einsum(
                        "ij,ij->i", decay0, decay0
                    )
                p0 = np.stack([np.where(lin_ok, s0, s0_ls), t2_0], axis=1)
                res = levenberg_marquardt(
                    residuals,
                    p0,
                    lower=lower,
                    upper=upper,
                    voxel_args=(y,),
                    max_iter=_MAX_ITER,
                    tol=_TOL,
                )
                s0, t2 = res.params[:, 0], res.params[:, 1]
                ok = np.isfinite(res.params).all(axis=1) & ~res.at_bound
                converged = res.converged
                r2 = r_squared(y, ss_res=2.0 * res.cost)
            else:
                ok = lin_ok & (t2 > T2_BOUNDS_S[0]) & (t2 < T2_BOUNDS_S[1])
                with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                    r2 = r_squared(y, s0[:, None] * np.exp(-te / t2[:, None]))
            return KernelOutput({name: t2, "S0": s0}, r2, ok, converged)

        maps, n_fitted, n_failed, n_unconv = fit_voxelwise(
            kernel, arr, self.param_names, mask=mask, chunk_size=chunk_size
        )
        options: dict[str, Any] = {
            "echo_times_s": self._te.tolist(),
            "drop_first_echo": self._drop_first_echo,
            "quantity": self._quantity,
            "method": self._method,
            "t2_bounds_s": list(T2_BOUNDS_S),
        }
        if nlls:
            options.update({"max_iter": _MAX_ITER, "tol": _TOL})
        return ModelFit(
            maps=maps,
            units=self.units,
            n_fitted=n_fitted,
            n_failed=n_failed,
            algorithm=_ALGORITHMS[self._method],
            reference=_REFERENCE,
            options=options,
            n_unconverged=n_unconv,
        )
