r"""T2 and T2* mapping from multi-echo data with a mono-exponential decay.

.. math:: S(TE) = S_0 \, e^{-TE/T_2}

The start is a weighted log-linear fit (:func:`qmri.fitting.loglinear_wls`, weights
:math:`S^2`), refined by non-linear least squares on the signal
(:func:`qmri.fitting.levenberg_marquardt`). The same model serves spin-echo T2 and gradient-echo
T2* (``quantity`` only names the map). In multi-echo spin-echo trains the first echo carries no
stimulated-echo contribution while later echoes do, so it is often dropped
(``drop_first_echo=True``).

With ``noise_floor=True`` a constant offset is fitted as well,

.. math:: S(TE) = S_0 \, e^{-TE/T_2} + c, \qquad c \ge 0,

by a three-parameter Levenberg-Marquardt fit started from the log-linear fit of the early echoes
(where the floor matters least) or, where that leaves a larger residual, from the log-linear
fit of the signal minus its smallest sample.

When to use it: when the late echoes level off at a plateau instead of decaying to zero, which a
two-parameter fit turns into a too-long T2. Typical causes are the magnitude noise floor at low
SNR (Rician / non-central chi statistics: pure-noise echoes average about
:math:`\sigma\sqrt{\pi/2}`), a constant background offset, or a long-T2 component (fluid) that
hardly decays over the echo train. Caveat for the noise floor: the Rician bias is not constant
(it grows gradually as the signal falls towards the noise), so a constant floor over-corrects
when many echoes sit in that transition: in simulations (SNR 25 at TE = 0, T2 15-30 ms, echoes
to 120 ms) the two-parameter fit overestimates T2 by about 10 % and the floor fit underestimates
it by about 12 %. With a genuine constant offset the floor fit is unbiased. Leave it off when
every echo is well above the noise: the third parameter only costs precision.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from qmri.errors import QMRIInputError
from qmri.fitting import levenberg_marquardt, loglinear_wls, r_squared
from qmri.models.base import (
    Kernel,
    KernelOutput,
    Model,
    ModelFit,
    as_float_vector,
    check_choice,
    map_property,
    model_params,
    setting,
)

__all__ = ["T2_BOUNDS_S", "MonoExponentialFit", "MonoExponentialModel", "monoexp_signal"]

#: Echoes needed (after dropping the first) for the three-parameter noise-floor fit.
_MIN_ECHOES_FLOOR = 4

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
_ALGORITHM_FLOOR = (
    "log-linear weighted least squares on the early echoes (start) + non-linear least squares "
    "of S0 exp(-TE/T2) + c, c >= 0 (Levenberg-Marquardt)"
)
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


class MonoExponentialFit(ModelFit):
    """Result of :meth:`MonoExponentialModel.fit`: the maps as properties.

    A fit has the map of its model's ``quantity``: ``T2`` (:attr:`t2_s`) or ``T2star``
    (:attr:`t2star_s`), either of them also as :attr:`relaxation_time_s`; the other one raises
    AttributeError, as :attr:`noisefloor` does for a fit without a noise floor.
    """

    t2_s = map_property("T2", "Transverse relaxation time T2 (s), of a ``quantity='T2'`` fit.")
    t2star_s = map_property("T2star", "T2* (s), of a ``quantity='T2star'`` fit.")
    s0 = map_property("S0", "Signal extrapolated to TE = 0 (a.u.).")
    noisefloor = map_property("noisefloor", "Constant offset c (a.u.), of a noise-floor fit.")

    @property
    def quantity(self) -> str:
        """``"T2"`` or ``"T2star"``: the relaxation time this fit holds."""
        return "T2star" if "T2star" in self.maps else "T2"

    @property
    def relaxation_time_s(self) -> np.ndarray:
        """T2 or T2* (s), whichever :attr:`quantity` the model fitted, float32."""
        return self.maps[self.quantity]


class MonoExponentialModel(Model[MonoExponentialFit]):
    r"""Mono-exponential T2 / T2* model for multi-echo magnitude data.

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
    noise_floor : bool, default False
        Also fit a constant offset :math:`c \ge 0` (``S = S0 exp(-TE/T2) + c``; needs
        ``method="nlls"`` and at least 4 fitted echoes). Use it when the late echoes level off
        at a plateau (low-SNR magnitude noise floor with short T2 / T2* and long echo trains,
        constant offset, slowly decaying fluid component); without it T2 is biased upward
        there. On pure Rician noise it over-corrects somewhat (see the module notes); it costs
        precision where every echo is well above the noise.

    Notes
    -----
    Maps (:class:`MonoExponentialFit`): ``T2`` or ``T2star`` (s), ``S0`` (a.u.), with
    ``noise_floor`` also ``noisefloor`` (a.u., the fitted offset c), ``R2`` (1), ``fitmask`` (1). A voxel fails when its data are
    not finite or a sample is negative (a magnitude cannot be), the fit is undetermined (fewer
    than two echoes with positive signal), T2 is not
    strictly inside :data:`T2_BOUNDS_S`, or S0 <= 0. A noise floor of exactly 0 (on its bound)
    is a valid result, not a failure.

    Examples
    --------
    >>> te = [0.01, 0.02, 0.04, 0.06, 0.08, 0.12, 0.16]
    >>> model = MonoExponentialModel(te, noise_floor=True)
    >>> fit = model.fit(model.predict({"T2": 0.03, "S0": 1000.0, "noisefloor": 20.0}))
    >>> round(float(fit.t2_s), 4), round(float(fit.noisefloor), 2)
    (0.03, 20.0)
    """

    parameter_units: ClassVar[dict[str, str]] = {
        "T2": "s",
        "T2star": "s",
        "S0": "a.u.",
        "noisefloor": "a.u.",
    }
    fit_class = MonoExponentialFit
    volumes = ("echo_times_s", "echo times")
    reference = _REFERENCE
    magnitude_data = True

    echo_times_s = setting("All echo times (s), read-only array (including a dropped first echo).")
    drop_first_echo = setting("Whether the first echo is left out of the fit.")
    quantity = setting('``"T2"`` or ``"T2star"``: the name of the relaxation-time map.')
    method = setting('``"linear"`` or ``"nlls"``.')
    noise_floor = setting("Whether a constant offset (noise floor) is fitted.")

    def __init__(
        self,
        echo_times_s: ArrayLike,
        *,
        drop_first_echo: bool = False,
        quantity: str = "T2",
        method: str = "nlls",
        noise_floor: bool = False,
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
        check_choice(quantity, _QUANTITIES, "quantity")
        check_choice(method, _ALGORITHMS, "method")
        if not isinstance(noise_floor, (bool, np.bool_)):
            raise QMRIInputError(f"noise_floor must be true or false, got {noise_floor!r}")
        if noise_floor and method != "nlls":
            raise QMRIInputError(
                "noise_floor needs method='nlls' (a log-linear fit has no offset)"
            )
        if noise_floor and n_used < _MIN_ECHOES_FLOOR:
            raise QMRIInputError(
                f"a fit with a noise floor needs at least {_MIN_ECHOES_FLOOR} echoes, got {n_used}"
                + (" after dropping the first echo" if drop_first_echo else "")
            )
        self._noise_floor = bool(noise_floor)
        self._echo_times_s = te
        self._drop_first_echo = bool(drop_first_echo)
        self._quantity = quantity
        self._method = method

    @property
    def param_names(self) -> tuple[str, ...]:
        """Parameter map names: ``(quantity, "S0")``, plus ``"noisefloor"`` if fitted."""
        return (
            (self._quantity, "S0", "noisefloor") if self._noise_floor else (self._quantity, "S0")
        )

    @property
    def algorithm(self) -> str:
        return _ALGORITHM_FLOOR if self._noise_floor else _ALGORITHMS[self._method]

    @property
    def options(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "echo_times_s": self._echo_times_s.tolist(),
            "drop_first_echo": self._drop_first_echo,
            "quantity": self._quantity,
            "method": self._method,
            "noise_floor": self._noise_floor,
            "t2_bounds_s": list(T2_BOUNDS_S),
        }
        if self._method == "nlls":
            options.update({"max_iter": _MAX_ITER, "tol": _TOL})
        if self._noise_floor:
            options["start_echoes"] = self._n_start_echoes
        return options

    @property
    def _n_start_echoes(self) -> int:
        """Early echoes of the noise-floor fit's first start."""
        return max(2, (self._echo_times_s.size - int(self._drop_first_echo) + 1) // 2)

    def predict(self, params: Mapping[str, ArrayLike]) -> NDArray[np.float64]:
        """Signal at every echo time, shape ``(..., n_echoes)``.

        Parameters
        ----------
        params : mapping of str to array_like
            The :attr:`quantity` map (``"T2"`` or ``"T2star"``, s) and ``"S0"`` (a.u.), and
            optionally ``"noisefloor"`` (a.u., the constant offset c, added whether or not the
            model fits it); e.g. :attr:`MonoExponentialFit.params`.
        """
        t2, s0 = model_params(params, self._quantity, "S0")
        signal = monoexp_signal(s0, t2, self._echo_times_s)
        if "noisefloor" in params:
            signal += np.asarray(params["noisefloor"], dtype=np.float64)[..., None]
        return signal

    def _kernel(self) -> Kernel:
        first = int(self._drop_first_echo)
        te = self._echo_times_s[first:]
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

        def residuals_floor(
            p: NDArray[np.float64], y: NDArray[np.float64]
        ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
            s0, t2, c = p[:, 0:1], p[:, 1:2], p[:, 2:3]
            decay = np.exp(-te / t2)
            jac = np.empty((*y.shape, 3))
            jac[..., 0] = decay
            jac[..., 1] = s0 * decay * te / (t2 * t2)
            jac[..., 2] = 1.0
            return s0 * decay + c - y, jac

        n_early = self._n_start_echoes

        def kernel_floor(y_all: NDArray[np.float64]) -> KernelOutput:
            y = y_all[:, first:]
            # two starts, the one with the smaller residual is kept: (A) log-linear fit of the
            # early echoes, floor = mean excess of the late echoes; (B) floor = smallest
            # sample, log-linear fit of the floor-subtracted signal (better when the late
            # echoes sit on a high plateau that spoils the early-echo fit)
            starts = []
            for c_start, echoes in ((None, slice(0, n_early)), (y.min(axis=1), slice(None))):
                shifted = y if c_start is None else y - np.maximum(c_start, 0.0)[:, None]
                log_s0, rate, lin_ok = loglinear_wls(shifted[:, echoes], te[echoes])
                with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
                    t2_0 = np.clip(
                        np.where(lin_ok & (rate > 0), 1.0 / rate, t2_fallback), *T2_BOUNDS_S
                    )
                    s0_0 = np.where(lin_ok & np.isfinite(log_s0), np.exp(log_s0), y[:, 0])
                if c_start is None:
                    late = y[:, n_early:] - s0_0[:, None] * np.exp(-te[n_early:] / t2_0[:, None])
                    c_0 = np.maximum(np.einsum("ij->i", late) / late.shape[1], 0.0)
                else:
                    c_0 = np.maximum(c_start, 0.0)
                starts.append(np.stack([s0_0, t2_0, c_0], axis=1))
            r_a, _ = residuals_floor(starts[0], y)
            r_b, _ = residuals_floor(starts[1], y)
            use_b = np.einsum("ij,ij->i", r_b, r_b) < np.einsum("ij,ij->i", r_a, r_a)
            p0 = np.where(use_b[:, None], starts[1], starts[0])
            res = levenberg_marquardt(
                residuals_floor,
                p0,
                lower=np.array([0.0, T2_BOUNDS_S[0], 0.0]),
                upper=np.array([np.inf, T2_BOUNDS_S[1], np.inf]),
                voxel_args=(y,),
                max_iter=_MAX_ITER,
                tol=_TOL,
            )
            s0, t2, c = res.params[:, 0], res.params[:, 1], res.params[:, 2]
            # the floor may sit on its lower bound (no floor); S0 or T2 on a bound is a failure
            ok = np.isfinite(res.params).all(axis=1) & ~(res.at_lower | res.at_upper)[:, :2].any(
                axis=1
            )
            r2 = r_squared(y, ss_res=2.0 * res.cost)
            return KernelOutput({name: t2, "S0": s0, "noisefloor": c}, r2, ok, res.converged)

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

        return kernel_floor if self._noise_floor else kernel
