r"""Tracer-kinetic models for DCE-MRI: Tofts, extended Tofts and Patlak.

Tissue concentration :math:`C(t)` (mM) from the plasma arterial input :math:`C_p(t)` (mM), with
:math:`K^{trans}` and :math:`k_{ep} = K^{trans}/v_e` in 1/min:

* Tofts: :math:`C(t) = K^{trans} \int_0^t C_p(s)\, e^{-k_{ep}(t - s)}\, ds`
* extended Tofts: :math:`C(t) = v_p C_p(t) + K^{trans} \int_0^t C_p(s)\, e^{-k_{ep}(t - s)}\, ds`
* Patlak: :math:`C(t) = v_p C_p(t) + K^{trans} \int_0^t C_p(s)\, ds`

The AIF is the piecewise-linear interpolant of its samples (zero before the first frame), and
the convolution is exact for it (:mod:`qmri.models.dce.convolution`), for non-uniform frame
times too; an analytic AIF is convolved on its fine grid.

The models are :class:`~qmri.models.base.Model` subclasses: configured once from the frame
times and the AIF, never changed by fitting. ``model.fit(concentration, mask=...)`` returns a
:class:`DCEFit`; ``model.predict(fit.params)`` gives the fitted concentration back.

Fitting: a closed-form linear least-squares start (Murase's integral linearisation for
(extended) Tofts; Patlak is linear and needs nothing else; :mod:`qmri.models.dce._linear_start`),
then the batched bounded Levenberg-Marquardt of :func:`qmri.fitting.levenberg_marquardt` with
analytic Jacobians for all voxels together. An optional arterial delay (s) is a fitted
parameter: the AIF is evaluated at ``t - delay``; its start comes from a grid search of the
linear fit over delays.

A voxel whose estimate sits on (or beyond) a bound of ``Ktrans`` 0..5 /min, ``ve`` 0..1,
``vp`` 0..1 or the delay range fails: NaN in every map, 0 in ``fitmask``, counted in
``n_failed``. Nothing is clipped. One documented exception (option ``allow_zero_ktrans``, on by
default for Patlak only): Patlak's constrained least-squares solution ``Ktrans = 0`` ("no
measurable leakage") is a valid result, because ``vp`` stays determined; for (extended) Tofts
``Ktrans = 0`` leaves ``ve`` undetermined and is a failure.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from qmri.errors import QMRIInputError
from qmri.fitting import r_squared
from qmri.models.base import (
    Kernel,
    KernelOutput,
    Model,
    ModelFit,
    map_property,
    model_params,
    setting,
)
from qmri.models.dce._forward import output_maps, tissue_tm
from qmri.models.dce._linear_start import (
    aif_regressors,
    delay_grid_start,
    linear_from,
    linear_shared,
    shared_regressors,
)
from qmri.models.dce._lm import DELAY_RESTARTS_S, refine, start_values
from qmri.models.dce.aif import ArterialInputFunction
from qmri.models.dce.convolution import _FineAIF
from qmri.models.dce.timing import check_frame_times

__all__ = [
    "DCE_MODELS",
    "DEFAULT_BOUNDS",
    "DEFAULT_DCE_CHUNK_SIZE",
    "DCEFit",
    "ExtendedToftsModel",
    "PatlakModel",
    "ToftsModel",
]

#: Parameter bounds (OSIPI): Ktrans 1/min, ve and vp fractions, arterial delay s.
DEFAULT_BOUNDS: Mapping[str, tuple[float, float]] = MappingProxyType(
    {"Ktrans": (0.0, 5.0), "ve": (0.0, 1.0), "vp": (0.0, 1.0), "delay": (-10.0, 10.0)}
)
#: Voxels fitted together: ~20 000 voxels x 80 frames keeps LM temporaries near 200 MB.
DEFAULT_DCE_CHUNK_SIZE = 20_000
_MAX_ITER = 100
_TOL = 1e-8
_METHODS = ("nlls", "linear")
_LINEAR_ALGORITHM = {
    "tofts": "Tofts model, Murase linear least squares only (closed form, no non-linear fit)",
    "etofts": "extended Tofts model, Murase linear least squares only (closed form, no "
    "non-linear fit)",
    "patlak": "Patlak model, closed-form linear least squares",
}
_UNITS = {"Ktrans": "1/min", "kep": "1/min", "ve": "1", "vp": "1", "delay": "s"}

_REF_TOFTS = (
    "Tofts PS, Brix G, Buckley DL, et al. Estimating kinetic parameters from dynamic "
    "contrast-enhanced T1-weighted MRI of a diffusable tracer: standardized quantities and "
    "symbols. J Magn Reson Imaging 1999;10:223-232. doi:10.1002/(SICI)1522-2586(199909)10:3"
    "<223::AID-JMRI2>3.0.CO;2-S; Murase K. Efficient method for calculating kinetic parameters "
    "using T1-weighted dynamic contrast-enhanced magnetic resonance imaging. Magn Reson Med "
    "2004;51:858-862. doi:10.1002/mrm.20022"
)
_REF_PATLAK = (
    "Patlak CS, Blasberg RG, Fenstermacher JD. Graphical evaluation of blood-to-brain transfer "
    "constants from multiple-time uptake data. J Cereb Blood Flow Metab 1983;3:1-7. "
    "doi:10.1038/jcbfm.1983.1"
)


class DCEFit(ModelFit):
    """Result of a kinetic model's ``fit``: the :class:`~qmri.models.base.ModelFit` maps as
    properties (those the model fits; the others raise AttributeError)."""

    ktrans_per_min = map_property("Ktrans", "Volume transfer constant Ktrans (1/min).")
    ve = map_property("ve", "Extravascular extracellular volume fraction ve (1).")
    vp = map_property("vp", "Plasma volume fraction vp (1).")
    kep_per_min = map_property("kep", "Rate constant kep = Ktrans / ve (1/min).")
    delay_s = map_property("delay", "Fitted arterial delay (s), with ``fit_delay``.")


class _KineticModel(Model[DCEFit]):
    """Shared machinery of the DCE kinetic models (see the subclasses for the parameters).

    Fitting keeps no state on the model: everything derived from the AIF (its fine grid and
    the regressors of the compiled linear start) is computed by the constructor, read-only, and
    handed to :meth:`_fit_chunk` explicitly by the kernel (:meth:`_kernel`).
    """

    kind: ClassVar[str]
    base_params: ClassVar[tuple[str, ...]]
    derived: ClassVar[tuple[str, ...]] = ()
    parameter_units: ClassVar[Mapping[str, str]] = _UNITS
    fit_class = DCEFit
    volumes = ("times_s", "frame times")
    default_chunk_size = DEFAULT_DCE_CHUNK_SIZE
    #: Fit method in words for ``method="nlls"``.
    nlls_algorithm: ClassVar[str]

    times_s = setting("Frame times (s), read-only array.")
    aif = setting("Arterial input function (plasma, mM, at the frame times).")
    fit_delay = setting("Whether the arterial delay (s) is a fitted parameter.")
    bounds = setting("Parameter bounds (Ktrans 1/min, ve, vp 1, delay s), read-only mapping.")
    delay_step_s = setting("Grid step (s) of the delay search that starts the fit.")
    max_iter = setting("Levenberg-Marquardt iteration limit.")
    tol = setting("Levenberg-Marquardt convergence tolerance.")
    allow_zero_ktrans = setting("Patlak: Ktrans on its lower bound is a valid result.")
    method = setting('``"nlls"`` or ``"linear"`` (closed form only).')

    def __init__(
        self,
        times_s: ArrayLike,
        aif: ArterialInputFunction | ArrayLike,
        *,
        fit_delay: bool = False,
        bounds: Mapping[str, tuple[float, float]] | None = None,
        delay_step_s: float = 0.5,
        max_iter: int = _MAX_ITER,
        tol: float = _TOL,
        allow_zero_ktrans: bool = True,
        method: str = "nlls",
    ) -> None:
        t = check_frame_times(times_s)
        if method not in _METHODS:
            raise QMRIInputError(f"unknown DCE fit method {method!r}; use 'nlls' or 'linear'")
        if isinstance(aif, ArterialInputFunction):
            if aif.times_s.size != t.size or not np.allclose(aif.times_s, t, rtol=0, atol=1e-6):
                raise QMRIInputError("the AIF is not sampled at the frame times")
            arterial = aif
        else:
            cp = np.asarray(aif, dtype=np.float64).reshape(-1)
            if cp.size != t.size:
                raise QMRIInputError(f"AIF has {cp.size} samples but there are {t.size} frames")
            arterial = ArterialInputFunction(
                t, cp, "array", {"aif": "array (plasma concentration, mM, at the frame times)"}
            )
        unknown = set(bounds or {}) - set(DEFAULT_BOUNDS)
        if unknown:
            raise QMRIInputError(
                f"unknown bound(s) {sorted(unknown)}; known: {', '.join(DEFAULT_BOUNDS)}"
            )
        merged = {**DEFAULT_BOUNDS, **{k: tuple(map(float, v)) for k, v in (bounds or {}).items()}}
        for name, (lo, hi) in merged.items():
            if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
                raise QMRIInputError(f"bounds of {name} must be finite with lower < upper")
        if merged["Ktrans"][0] < 0 or merged["ve"][0] < 0 or merged["vp"][0] < 0:
            raise QMRIInputError("lower bounds of Ktrans, ve and vp must not be negative")
        if not (np.isfinite(delay_step_s) and delay_step_s > 0):
            raise QMRIInputError(f"delay step must be positive (s), got {delay_step_s}")
        self._times_s = t
        self._aif = arterial
        #: the AIF on its fine grid (derived from the AIF once; read-only like it)
        self._fine = (
            None
            if arterial.fine_times_s is None
            else _FineAIF(t / 60.0, arterial.fine_times_s / 60.0, arterial.fine_cp)
        )
        self._fit_delay = bool(fit_delay)
        #: (Cp, integral of Cp) of the model's AIF at zero delay, for the compiled linear start
        #: of every fit without a delay (derived here once, read-only: fits only read it)
        self._shared: tuple[NDArray[np.float64], NDArray[np.float64]] | None = None
        if not self._fit_delay:
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                shared = shared_regressors(t / 60.0, arterial.cp[:, None], self._fine)
            for arr in shared:
                arr.flags.writeable = False
            self._shared = shared
        self._bounds = MappingProxyType(merged)
        self._delay_step_s = float(delay_step_s)
        self._max_iter = int(max_iter)
        self._tol = float(tol)
        self._allow_zero_ktrans = bool(allow_zero_ktrans) and self.kind == "patlak"
        self._method = method

    # ----------------------------------------------------------------------------- properties
    @property
    def param_names(self) -> tuple[str, ...]:  # type: ignore[override]
        """Output parameter maps (in order)."""
        return (*self.base_params, *self.derived, *(("delay",) if self._fit_delay else ()))

    @property
    def _fit_params(self) -> tuple[str, ...]:
        """Fitted parameter columns: the base parameters [, delay]."""
        return (*self.base_params, *(("delay",) if self._fit_delay else ()))

    @property
    def _t_min(self) -> NDArray[np.float64]:
        """Frame times (min), a fresh array."""
        return self._times_s / 60.0

    @property
    def algorithm(self) -> str:
        """Fit method in words, for the output sidecar."""
        base = self.nlls_algorithm if self._method == "nlls" else _LINEAR_ALGORITHM[self.kind]
        return base + (
            " with fitted arterial delay (grid-search start)" if self._fit_delay else ""
        )

    @property
    def options(self) -> dict[str, Any]:
        """Model, frame times, AIF provenance, bounds, failure rule and fit settings."""
        options: dict[str, Any] = {
            "model": self.kind,
            "frame_times_s": self._times_s.tolist(),
            **self._aif.options,
            "fit_delay": self._fit_delay,
            "bounds": {n: list(self._bounds[n]) for n in self._fit_params},
            "bounds_units": {"Ktrans": "1/min", "ve": "1", "vp": "1", "delay": "s"},
            "failure_rule": "estimate on or outside a bound -> NaN, fitmask 0"
            + (" (except Patlak Ktrans = 0: allowed)" if self._allow_zero_ktrans else ""),
            "aif_interpolation": (
                "piecewise linear between frames, 0 before the first frame"
                if self._fine is None
                else "piecewise linear between the fine AIF samples (aif_fine_dt_s), convolved "
                "exactly and sampled at the frame times; 0 before the first frame"
            ),
        }
        if self._fit_delay:
            options["delay_grid_step_s"] = self._delay_step_s
            options["delay_restarts_s"] = list(DELAY_RESTARTS_S)
        if self.kind == "patlak":
            options["allow_zero_ktrans"] = self._allow_zero_ktrans
        options["method"] = self._method
        linear_only = self._method == "linear" or (self.kind == "patlak" and not self._fit_delay)
        if not linear_only:
            options.update({"max_iter": self._max_iter, "tol": self._tol})
        return options

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(n_frames={self._times_s.size}, aif={self._aif.kind!r}, "
            f"fit_delay={self._fit_delay}, method={self._method!r})"
        )

    # ----------------------------------------------------------------------------- forward
    def _model_tm(
        self,
        p: NDArray[np.float64],
        c_tm: NDArray[np.float64],
        with_jac: bool,
        fine: _FineAIF | None = None,
    ) -> tuple[NDArray[np.float64], list[NDArray[np.float64]] | None]:
        """:func:`~qmri.models.dce._forward.tissue_tm` of this model: concentration (n_t, n)
        and its derivatives for parameter columns ``p`` (n, n_par)."""
        return tissue_tm(
            self.kind, self._t_min, p, c_tm, with_jac=with_jac, fit_delay=self._fit_delay,
            fine=fine,
        )  # fmt: skip

    def predict(self, params: Mapping[str, ArrayLike]) -> NDArray[np.float64]:
        """Tissue concentration (mM) of parameter maps, shape ``(..., n_frames)``.

        Parameters
        ----------
        params : mapping of str to array_like
            ``Ktrans`` (1/min), ``ve``, ``vp`` (as the model needs) and, when the delay is
            fitted, ``delay`` (s; default 0), all of one shape or broadcastable (scalars too);
            e.g. :attr:`DCEFit.params` (other maps, such as ``kep``, are ignored).

        Raises
        ------
        QMRIInputError
            A map the model needs is missing (the message names it).
        """
        values = dict(zip(self.base_params, model_params(params, *self.base_params), strict=True))
        if self._fit_delay:
            values["delay"] = np.asarray(params.get("delay", 0.0), dtype=np.float64)
        arrays = np.broadcast_arrays(*(values[n] for n in self._fit_params))
        shape = arrays[0].shape
        p = np.stack([a.reshape(-1) for a in arrays], axis=1)
        conc, _ = self._model_tm(p, self._aif.cp[:, None], with_jac=False, fine=self._fine)
        return np.ascontiguousarray(conc.T).reshape(*shape, self._times_s.size)

    # ----------------------------------------------------------------------------- fit
    def fit(
        self,
        data: ArrayLike,
        *,
        mask: ArrayLike | None = None,
        chunk_size: int | None = None,
        provenance: Mapping[str, Any] | None = None,
    ) -> DCEFit:
        """Fit every voxel of a concentration series.

        Parameters
        ----------
        data : array_like, shape (..., n_frames)
            Tissue concentration (mM), frames on the last axis (float32 is fine; each chunk is
            converted to float64).
        mask : array_like, shape data.shape[:-1], optional
            Voxels to fit (non-zero); default all.
        chunk_size : int, default :data:`DEFAULT_DCE_CHUNK_SIZE`
            Voxels fitted together (bounds memory; results do not depend on it).
        provenance : mapping, optional
            Extra options to record first in :attr:`DCEFit.options` (e.g.
            ``ConcentrationResult.options``: r1 and its source, baseline frames, flip angle,
            TR); the model's :attr:`options` follow.

        Returns
        -------
        DCEFit
            Maps of :attr:`param_names` (``Ktrans``, ``kep`` in 1/min, ``ve``, ``vp`` fractions,
            ``delay`` s), ``R2`` (on the concentration scale) and ``fitmask``.
        """
        options = {**dict(provenance or {}), **self.options}
        return self._fit(data, mask=mask, chunk_size=chunk_size, options=options)

    def _kernel(self) -> Kernel:
        c_tm = self._aif.cp[:, None]
        fine, shared = self._fine, self._shared

        def kernel(y: NDArray[np.float64]) -> KernelOutput:
            return self._fit_chunk(y, c_tm, fine, shared)

        return kernel

    def fit_curves(self, conc: ArrayLike, cp: ArrayLike | None = None) -> KernelOutput:
        """Fit a batch of curves (no mask, no reshaping): the kernel behind :meth:`fit`.

        Parameters
        ----------
        conc : (n, n_frames) array_like
            Tissue concentration (mM), finite.
        cp : (n, n_frames) array_like, optional
            A separate plasma AIF (mM) per curve (validation data); default: the model's AIF.

        Returns
        -------
        KernelOutput
            ``params`` in output units (``Ktrans``/``kep`` 1/min, ``delay`` s), ``r2``, ``ok``
            (inside the bounds, finite) and ``converged`` (None for closed-form Patlak).
        """
        y = np.asarray(conc, dtype=np.float64)
        n_t = self._times_s.size
        if y.ndim != 2 or y.shape[1] != n_t:
            raise QMRIInputError(f"curves must have shape (n, {n_t}), got {y.shape}")
        if cp is None:
            kernel = self._kernel()
        else:
            cpa = np.asarray(cp, dtype=np.float64)
            if cpa.shape != y.shape:
                raise QMRIInputError(f"per-curve AIFs must have shape {y.shape}, got {cpa.shape}")
            c_tm = np.ascontiguousarray(cpa.T)

            def kernel(yy: NDArray[np.float64]) -> KernelOutput:
                return self._fit_chunk(yy, c_tm, None, None)

        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return kernel(y)

    def _fit_chunk(
        self,
        y: NDArray[np.float64],
        c_tm: NDArray[np.float64],
        fine: _FineAIF | None,
        shared: tuple[NDArray[np.float64], NDArray[np.float64]] | None,
    ) -> KernelOutput:
        """Fit curves ``y`` (n, n_t) with the AIF ``c_tm`` ((n_t, 1) shared or (n_t, n)).

        ``fine``: the shared AIF on its fine grid; ``shared``: the regressors of the model's
        own AIF (:func:`~qmri.models.dce._linear_start.shared_regressors`) for the compiled
        linear start, None for per-curve AIFs and fitted delays.
        """
        names = self._fit_params
        t_min = self._t_min
        lo = np.array([self._bounds[n][0] for n in names])
        hi = np.array([self._bounds[n][1] for n in names])
        start_sst = None  # total sum of squares, when the compiled linear fit gives it
        if self._fit_delay:
            start, delay0, start_ssr = delay_grid_start(
                self.kind, t_min, y, c_tm, n_base=len(self.base_params),
                delay_bounds_s=self._bounds["delay"], delay_step_s=self._delay_step_s, fine=fine,
            )  # fmt: skip
        elif shared is not None:  # the model's AIF: compiled single pass
            start, start_ssr, start_sst = linear_shared(self.kind, t_min, y, shared)
            delay0 = None
        else:
            start, start_ssr = linear_from(self.kind, t_min, y, c_tm, 0.0, fine)
            delay0 = None

        # Patlak with Ktrans on its lower bound (no measurable leakage) is a valid result when
        # allowed: vp stays determined (unlike Tofts, whose ve is undetermined at Ktrans = 0)
        zero_ok = np.zeros(len(names), dtype=bool)
        if self.kind == "patlak" and self._allow_zero_ktrans:
            zero_ok[1] = True

        def interior(p: NDArray[np.float64]) -> NDArray[np.bool_]:
            """Strictly inside the bounds (NaN compares False: not finite is not inside)."""
            ok = np.ones(p.shape[0], dtype=bool)
            for j in range(p.shape[1]):  # column by column: faster than reductions over axis 1
                col = p[:, j]
                above = col > lo[j]
                if zero_ok[j]:
                    above |= col == lo[j]
                ok &= above & (col < hi[j])
            return ok

        if self.kind == "patlak" and not self._fit_delay:
            params = start.copy()
            if self._allow_zero_ktrans:
                # non-negative least squares: a Ktrans below its bound is refitted at the bound
                neg = params[:, 1] < lo[1]
                if neg.any():
                    c, integ = aif_regressors(t_min, c_tm, 0.0, fine)
                    if c.ndim == 2:
                        c, integ = c[neg], integ[neg]
                    resid = y[neg] - lo[1] * integ
                    cc = np.broadcast_to(c, resid.shape)
                    params[neg, 0] = np.einsum("ij,ij->i", cc, resid) / np.einsum(
                        "ij,ij->i", cc, cc
                    )
                    params[neg, 1] = lo[1]
                    resid -= params[neg, 0:1] * cc
                    start_ssr[neg] = np.einsum("ij,ij->i", resid, resid)
            ok = interior(params)
            r2 = r_squared(y, ss_res=start_ssr, ss_tot=start_sst)  # the regression is the model
            out = {"Ktrans": params[:, 1], "vp": params[:, 0]}
            return KernelOutput(out, r2, ok, None)

        if self._method == "linear":  # the closed-form estimate is the result
            params = start if delay0 is None else np.column_stack([start, delay0])
            # R2 of the linear regression, on the concentration scale
            r2 = r_squared(y, ss_res=start_ssr, ss_tot=start_sst)
            maps = output_maps(self.kind, params, self._fit_delay)
            return KernelOutput(maps, r2, interior(params), None)

        # start values: the linear estimate where physical, else OSIPI's start values
        p0 = start_values(start, delay0, self.base_params, self._bounds)
        params, cost, converged, ok = refine(
            self.kind, t_min, y, c_tm, p0, lower=lo, upper=hi, fit_delay=self._fit_delay,
            delay_bounds_s=self._bounds["delay"], max_iter=self._max_iter, tol=self._tol,
            interior=interior, fine=fine,
        )  # fmt: skip
        r2 = r_squared(y, ss_res=2.0 * cost)
        return KernelOutput(output_maps(self.kind, params, self._fit_delay), r2, ok, converged)


class ToftsModel(_KineticModel):
    """Standard Tofts model: maps ``Ktrans`` (1/min), ``ve``, ``kep`` (1/min) [, ``delay`` (s)].

    Parameters
    ----------
    times_s : array_like, shape (n_frames,)
        Frame times (s), strictly increasing (non-uniform allowed).
    aif : ArterialInputFunction or array_like of shape (n_frames,)
        Plasma concentration (mM) at the frame times (no hematocrit correction is applied to a
        plain array).
    fit_delay : bool, default False
        Fit an arterial delay (s): the AIF is evaluated at ``t - delay``.
    bounds : mapping, optional
        Overrides of :data:`DEFAULT_BOUNDS` (``Ktrans`` 1/min, ``ve``, ``vp``, ``delay`` s).
    delay_step_s : float, default 0.5
        Grid step of the delay search that starts the non-linear fit.
    max_iter, tol : int, float
        Levenberg-Marquardt settings.
    allow_zero_ktrans : bool, default True
        Patlak only (ignored by the Tofts models): accept ``Ktrans`` on its lower bound (the
        non-negative least-squares solution when the unconstrained slope is negative).
    method : {"nlls", "linear"}, default "nlls"
        ``"nlls"``: the linear estimate starts a bounded Levenberg-Marquardt fit of the model.
        ``"linear"``: the closed-form estimate is the result (Murase's linearisation for the
        Tofts models; with ``fit_delay``, at the best delay of the grid): tens of times faster,
        less accurate at low SNR; ``R2`` is then that of the linear regression. Patlak without a
        fitted delay is linear either way.

    Examples
    --------
    >>> import numpy as np
    >>> from qmri.models.dce import parker_aif
    >>> t = np.arange(0, 300, 2.0)
    >>> model = ToftsModel(t, parker_aif(t, delay_s=20, hematocrit=0.42))
    >>> fit = model.fit(model.predict({"Ktrans": 0.25, "ve": 0.3}))
    >>> round(float(fit.ktrans_per_min), 6), round(float(fit.ve), 6)
    (0.25, 0.3)
    """

    kind = "tofts"
    base_params = ("Ktrans", "ve")
    derived = ("kep",)
    nlls_algorithm = (
        "Tofts model, exact piecewise-linear AIF convolution; Murase linear least-squares start, "
        "bounded Levenberg-Marquardt with analytic Jacobian"
    )
    reference = _REF_TOFTS


class ExtendedToftsModel(_KineticModel):
    """Extended Tofts model: maps ``Ktrans`` (1/min), ``ve``, ``vp``, ``kep`` (1/min) [, ``delay``].

    Parameters are those of :class:`ToftsModel`.
    """

    kind = "etofts"
    base_params = ("Ktrans", "ve", "vp")
    derived = ("kep",)
    nlls_algorithm = (
        "extended Tofts model, exact piecewise-linear AIF convolution; Murase linear "
        "least-squares start, bounded Levenberg-Marquardt with analytic Jacobian"
    )
    reference = _REF_TOFTS


class PatlakModel(_KineticModel):
    """Patlak model: maps ``Ktrans`` (1/min), ``vp`` [, ``delay`` (s)].

    Closed-form linear least squares on ``[Cp, integral of Cp]`` (trapezoid, exact for the
    piecewise-linear AIF). With ``fit_delay`` the delay is found by a grid search of that linear
    fit and refined, with ``Ktrans`` and ``vp``, by Levenberg-Marquardt. With
    ``allow_zero_ktrans`` (default) a negative unconstrained slope gives ``Ktrans = 0`` and ``vp``
    refitted (non-negative least squares); otherwise, and for ``vp`` or the delay, an estimate not
    strictly inside its bounds fails. Parameters are those of :class:`ToftsModel`.
    """

    kind = "patlak"
    base_params = ("vp", "Ktrans")
    nlls_algorithm = "Patlak model, closed-form linear least squares"
    reference = _REF_PATLAK

    @property
    def param_names(self) -> tuple[str, ...]:  # type: ignore[override]
        """Output parameter maps (in order)."""
        return ("Ktrans", "vp", *(("delay",) if self._fit_delay else ()))


#: Kinetic model classes by their command-line / config name.
DCE_MODELS: dict[str, type[ToftsModel | ExtendedToftsModel | PatlakModel]] = {
    "tofts": ToftsModel,
    "etofts": ExtendedToftsModel,
    "patlak": PatlakModel,
}
