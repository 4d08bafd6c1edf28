r"""Tracer-kinetic models for DCE-MRI: Tofts, extended Tofts and Patlak.

Tissue concentration :math:`C(t)` (mM) from the plasma arterial input :math:`C_p(t)` (mM), with
:math:`K^{trans}` and :math:`k_{ep} = K^{trans}/v_e` in 1/min:

* Tofts: :math:`C(t) = K^{trans} \int_0^t C_p(s)\, e^{-k_{ep}(t - s)}\, ds`
* extended Tofts: :math:`C(t) = v_p C_p(t) + K^{trans} \int_0^t C_p(s)\, e^{-k_{ep}(t - s)}\, ds`
* Patlak: :math:`C(t) = v_p C_p(t) + K^{trans} \int_0^t C_p(s)\, ds`

The AIF is the piecewise-linear interpolant of its samples at the frame times (zero before the
first frame), and the convolution is exact for it: over a frame interval of length
:math:`\Delta` with :math:`x = k_{ep}\Delta`,

.. math:: G_{j+1} = e^{-x} G_j + \Delta\,[\,c_j(\varphi_1 - \varphi_2) + c_{j+1}\varphi_2\,],
   \quad \varphi_1 = \frac{1 - e^{-x}}{x},\ \varphi_2 = \frac{x - 1 + e^{-x}}{x^2},

which holds for non-uniform frame times. The recursion runs over frames (vectorized over voxels,
no loop over voxels), and so does its analytic derivative in :math:`k_{ep}`.

Fitting: a closed-form linear least-squares start (Murase's integral linearisation for
(extended) Tofts; Patlak is linear and needs nothing else), then the batched bounded
Levenberg-Marquardt of :func:`qmri.fitting.levenberg_marquardt` with analytic Jacobians for all
voxels together. An optional arterial delay (s) is a fitted parameter: the AIF is evaluated at
``t - delay``; its start comes from a grid search of the linear fit over delays.

A voxel whose estimate sits on (or beyond) a bound of ``Ktrans`` 0..5 /min, ``ve`` 0..1,
``vp`` 0..1 or the delay range fails: NaN in every map, 0 in ``fitmask``, counted in
``n_failed``. Nothing is clipped. One documented exception (option ``allow_zero_ktrans``, on by
default for Patlak only): Patlak's constrained least-squares solution ``Ktrans = 0`` ("no
measurable leakage") is a valid result, because ``vp`` stays determined; for (extended) Tofts
``Ktrans = 0`` leaves ``ve`` undetermined and is a failure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from qmri.dce import ArterialInputFunction, check_frame_times
from qmri.errors import QMRIInputError
from qmri.fitting import _solve_small, levenberg_marquardt, r_squared
from qmri.models.base import KernelOutput, ModelFit, check_data, fit_voxelwise

__all__ = [
    "DEFAULT_BOUNDS",
    "DEFAULT_DCE_CHUNK_SIZE",
    "ExtendedToftsModel",
    "PatlakModel",
    "ToftsModel",
    "exp_convolution",
]

#: Parameter bounds (OSIPI): Ktrans 1/min, ve and vp fractions, arterial delay s.
DEFAULT_BOUNDS: dict[str, tuple[float, float]] = {
    "Ktrans": (0.0, 5.0),
    "ve": (0.0, 1.0),
    "vp": (0.0, 1.0),
    "delay": (-10.0, 10.0),
}
#: Voxels fitted together: ~20 000 voxels x 80 frames keeps LM temporaries near 200 MB.
DEFAULT_DCE_CHUNK_SIZE = 20_000
#: Start values where the linear start is not usable (OSIPI's start values).
_FALLBACK = {"Ktrans": 0.6, "ve": 0.2, "vp": 0.01}
_MAX_ITER = 100
_TOL = 1e-8
_METHODS = ("nlls", "linear")
_LINEAR_ALGORITHM = {
    "tofts": "Tofts model, Murase linear least squares only (closed form, no non-linear fit)",
    "etofts": "extended Tofts model, Murase linear least squares only (closed form, no "
    "non-linear fit)",
    "patlak": "Patlak model, closed-form linear least squares",
}
#: Delay offsets (s) from which voxels whose delay fit ended on a bound are refitted.
_DELAY_RESTARTS_S = (1.5, -1.5, 3.0, -3.0)
_SERIES_X = 0.05  # below this x = k dt, phi functions use their Taylor series
_N_SERIES = 10

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


# --------------------------------------------------------------------------------------------
# exact convolution of a piecewise-linear AIF with an exponential
# --------------------------------------------------------------------------------------------


def _phi(
    x: NDArray[np.float64],
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    r""":math:`\varphi_1, \varphi_2` and their derivatives in x (Taylor series for small x)."""
    small = x < _SERIES_X
    xs = np.where(small, x, 0.0)
    xl = np.where(small, 1.0, x)
    e = np.exp(-xl)
    phi1 = (1.0 - e) / xl
    phi2 = (xl - 1.0 + e) / (xl * xl)
    dphi1 = (e * (xl + 1.0) - 1.0) / (xl * xl)
    dphi2 = (2.0 - xl - (xl + 2.0) * e) / (xl * xl * xl)
    if small.any():
        # phi1 = sum (-x)^n/(n+1)!, phi2 = sum (-x)^n/(n+2)!, derivatives term by term (Horner)
        fact = np.cumprod(np.r_[1.0, np.arange(1, _N_SERIES + 4, dtype=float)])
        s1 = np.zeros_like(xs)
        s2 = np.zeros_like(xs)
        d1 = np.zeros_like(xs)
        d2 = np.zeros_like(xs)
        for n in range(_N_SERIES, -1, -1):
            sign = -1.0 if n % 2 else 1.0
            s1 = s1 * xs + sign / fact[n + 1]
            s2 = s2 * xs + sign / fact[n + 2]
            d1 = d1 * xs - sign * (n + 1) / fact[n + 2]
            d2 = d2 * xs - sign * (n + 1) / fact[n + 3]
        phi1 = np.where(small, s1, phi1)
        phi2 = np.where(small, s2, phi2)
        dphi1 = np.where(small, d1, dphi1)
        dphi2 = np.where(small, d2, dphi2)
    return phi1, phi2, dphi1, dphi2


class _FineAIF:
    """A shared AIF sampled on a fine grid that splits every frame interval in equal steps.

    ``groups`` lists, per distinct (steps ``m``, step ``dt`` in min), the frame intervals ``js``
    and the AIF at the start (``c0``, (n_js, m)) and end (``c1``) of each of their fine steps.
    """

    def __init__(
        self, t_min: NDArray[np.float64], tf_min: NDArray[np.float64], cf: NDArray[np.float64]
    ):
        self.t_min, self.tf_min, self.cf = t_min, tf_min, cf
        nodes = np.searchsorted(tf_min, t_min - 1e-9 / 60.0)
        steps = np.diff(nodes)
        dts = np.round(np.diff(t_min) / steps, 12)
        self.groups: list[
            tuple[int, float, NDArray[np.intp], NDArray[np.float64], NDArray[np.float64]]
        ] = []
        for m, dt in sorted(set(zip(steps.tolist(), dts.tolist(), strict=True))):
            js = np.flatnonzero((steps == m) & (dts == dt))
            idx = nodes[js][:, None] + np.arange(m)[None, :]
            self.groups.append((m, dt, js, cf[idx], cf[idx + 1]))


def _interval_terms(
    t_min: NDArray[np.float64],
    c_tm: NDArray[np.float64],
    k: NDArray[np.float64],
    derivative: bool,
    fine: _FineAIF | None,
) -> tuple[NDArray[np.float64], NDArray[np.float64] | None]:
    r"""Frame-interval terms ``a_j`` (and ``da_j/dk``), each (n_t - 1, n).

    ``a_j`` is the exact :math:`\int_{t_j}^{t_{j+1}} C_p(s) e^{-k(t_{j+1}-s)} ds` of the
    piecewise-linear AIF: linear between frames, or, with ``fine``, between the fine samples.
    For ``m`` fine steps of length ``d`` (``x = kd``, ``q = e^{-x}``) it is the fine recursion
    unrolled, :math:`a_j = A \sum_i q^{m-1-i} c_{j,i} + B \sum_i q^{m-1-i} c_{j,i+1}` with
    :math:`A = d(\varphi_1-\varphi_2)`, :math:`B = d\varphi_2`: two small matrix products
    (voxels x ``m``) per group of equal intervals, so memory stays (n_t, n).
    """
    if fine is None:
        dt = np.diff(t_min)[:, None]
        phi1, phi2, dphi1, dphi2 = _phi(dt * k[None, :])
        c0, c1 = c_tm[:-1], c_tm[1:]
        a = dt * ((phi1 - phi2) * c0 + phi2 * c1)
        da = dt * dt * ((dphi1 - dphi2) * c0 + dphi2 * c1) if derivative else None
        return a, da
    n = k.size
    a = np.empty((t_min.size - 1, n))
    da = np.empty((t_min.size - 1, n)) if derivative else None
    for m, d, js, c0, c1 in fine.groups:
        phi1, phi2, dphi1, dphi2 = _phi(d * k)
        pw = (m - 1 - np.arange(m, dtype=np.float64))[None, :]  # powers of q, (1, m)
        q_pow = np.exp(-(d * k)[:, None] * pw)  # (n, m)
        p0, p1 = c0 @ q_pow.T, c1 @ q_pow.T  # (n_js, n)
        big_a, big_b = d * (phi1 - phi2), d * phi2
        a[js] = big_a * p0 + big_b * p1
        if da is not None:
            dq = q_pow * (-d * pw)
            dp0, dp1 = c0 @ dq.T, c1 @ dq.T
            da[js] = d * d * (dphi1 - dphi2) * p0 + big_a * dp0 + d * d * dphi2 * p1 + big_b * dp1
    return a, da


def _conv_time_major(
    t_min: NDArray[np.float64],
    c_tm: NDArray[np.float64],
    k: NDArray[np.float64],
    derivative: bool,
    fine: _FineAIF | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.float64] | None]:
    """Exact ``G = Cp (*) exp(-k t)`` on the frame grid, time-major arrays.

    ``c_tm`` is (n_t, 1) for a shared AIF or (n_t, n) per voxel; ``k`` (n,) in 1/min; returns
    G (n_t, n) in mM min and, with ``derivative``, dG/dk (n_t, n). With ``fine`` (a shared AIF
    only) the AIF is piecewise linear between its fine samples instead of between frames.
    """
    n_t, n = t_min.size, k.size
    dt = np.diff(t_min)
    uniform = bool(np.allclose(dt, dt[0], rtol=1e-9, atol=0.0))
    dtc = dt[:1, None] if uniform else dt[:, None]
    decay = np.exp(-dtc * k[None, :])
    a, da = _interval_terms(t_min, c_tm, k, derivative, fine)
    g = np.empty((n_t, n))
    g[0] = 0.0
    if not derivative:
        for j in range(n_t - 1):
            np.multiply(g[j], decay[0 if uniform else j], out=g[j + 1])
            g[j + 1] += a[j]
        return g, None
    assert da is not None
    b = -dtc * decay
    h = np.empty((n_t, n))
    h[0] = 0.0
    tmp = np.empty(n)
    for j in range(n_t - 1):
        jj = 0 if uniform else j
        dj = decay[jj]
        np.multiply(h[j], dj, out=h[j + 1])
        np.multiply(g[j], b[jj], out=tmp)
        h[j + 1] += tmp
        h[j + 1] += da[j]
        np.multiply(g[j], dj, out=g[j + 1])
        g[j + 1] += a[j]
    return g, h


def exp_convolution(
    times_s: ArrayLike, cp: ArrayLike, kep_per_min: ArrayLike
) -> NDArray[np.float64]:
    r"""Exact :math:`\int_{t_0}^{t} C_p(s)\, e^{-k_{ep}(t-s)}\, ds` for a piecewise-linear AIF.

    Parameters
    ----------
    times_s : array_like, shape (n_t,)
        Frame times (s), strictly increasing (need not be uniform).
    cp : array_like, shape (n_t,) or (n, n_t)
        AIF samples (mM) at ``times_s``, linearly interpolated in between; 0 before ``t_0``.
    kep_per_min : array_like, shape (n,) or scalar
        Rate constants (1/min), non-negative.

    Returns
    -------
    ndarray, shape (n, n_t)
        The convolution in mM min (multiply by Ktrans in 1/min for mM).
    """
    t = check_frame_times(times_s)
    k = np.atleast_1d(np.asarray(kep_per_min, dtype=np.float64)).reshape(-1)
    c = np.asarray(cp, dtype=np.float64)
    c_tm = c.reshape(-1, 1) if c.ndim == 1 else c.T
    g, _ = _conv_time_major(t / 60.0, c_tm, k, derivative=False)
    return np.ascontiguousarray(g.T)


def _cumtrapz_tm(t_min: NDArray[np.float64], y_tm: NDArray[np.float64]) -> NDArray[np.float64]:
    """Cumulative trapezoid integral along axis 0 (time-major), starting at 0."""
    out = np.empty_like(y_tm, dtype=np.float64)
    out[0] = 0.0
    np.cumsum(0.5 * (y_tm[1:] + y_tm[:-1]) * np.diff(t_min)[:, None], axis=0, out=out[1:])
    return out


def _conv_at(
    t_min: NDArray[np.float64],
    c_tm: NDArray[np.float64],
    k: NDArray[np.float64],
    tau_min: NDArray[np.float64],
    derivative: bool,
) -> tuple[
    NDArray[np.float64], NDArray[np.float64] | None, NDArray[np.float64], NDArray[np.float64]
]:
    r"""Convolution, AIF and their derivatives at arbitrary times ``tau`` (the delayed clock).

    With :math:`G(\tau)` the exact convolution of the piecewise-linear AIF (0 before ``t_0``,
    constant after the last sample) with :math:`e^{-k t}`, and ``tau`` in frame interval ``j``
    at offset ``u``:
    :math:`G(\tau) = e^{-ku} G_j + u\,c_j\varphi_1(ku) + u^2 s_j \varphi_2(ku)` (``s_j`` the AIF
    slope). Because :math:`dG/d\tau = C_p(\tau) - k G(\tau)` is continuous, a model evaluated at
    ``t - delay`` is smooth in the delay (unlike resampling a shifted AIF on the frame grid).

    Parameters are time-major: ``c_tm`` (n_t, 1) or (n_t, n), ``k`` (n,) 1/min, ``tau_min``
    (n_t, n) or (n_t, 1) min. Returns ``G``, ``dG/dk`` (or None), ``Cp(tau)``, ``dCp/dtau``
    (mM/min), each (n_t, n).
    """
    n_t = t_min.size
    g, h = _conv_time_major(t_min, c_tm, k, derivative)
    idx = np.searchsorted(t_min, tau_min, side="right") - 1
    if idx.shape[1] != k.size:
        idx = np.broadcast_to(idx, (n_t, k.size))
    before = idx < 0
    j = np.clip(idx, 0, n_t - 1)
    u = np.where(before, 0.0, np.broadcast_to(tau_min, j.shape) - t_min[j])
    cs = np.diff(c_tm, axis=0) / np.diff(t_min)[:, None]
    cs = np.concatenate([cs, np.zeros((1, cs.shape[1]))], axis=0)  # constant after the end
    if c_tm.shape[1] == 1:
        cj, sj = c_tm[:, 0][j], cs[:, 0][j]
    else:
        cj, sj = np.take_along_axis(c_tm, j, axis=0), np.take_along_axis(cs, j, axis=0)
    gj = np.take_along_axis(g, j, axis=0)
    x = k[None, :] * u
    phi1, phi2, dphi1, dphi2 = _phi(x)
    e = np.exp(-x)
    g_tau = e * gj + u * (cj * phi1 + u * sj * phi2)
    cp_tau = cj + sj * u
    g_tau[before] = 0.0
    cp_tau[before] = 0.0
    slope = np.where(before, 0.0, sj)
    h_tau = None
    if derivative:
        assert h is not None
        hj = np.take_along_axis(h, j, axis=0)
        h_tau = e * (hj - u * gj) + u * u * (cj * dphi1 + u * sj * dphi2)
        h_tau[before] = 0.0
    return g_tau, h_tau, cp_tau, slope


#: Fine-grid nodes x voxels evaluated together when a delayed fine AIF is convolved on its own
#: grid (about 8 temporaries of this many float64: ~100 MB).
_FINE_BLOCK = 1_500_000


def _conv_at_fine(
    fine: _FineAIF, k: NDArray[np.float64], tau_min: NDArray[np.float64], derivative: bool
) -> tuple[
    NDArray[np.float64], NDArray[np.float64] | None, NDArray[np.float64], NDArray[np.float64]
]:
    """:func:`_conv_at` for a fine AIF on its own grid, in voxel blocks bounding memory."""
    n = k.size
    block = max(1, _FINE_BLOCK // fine.tf_min.size)
    if n <= block:
        return _conv_at(fine.tf_min, fine.cf[:, None], k, tau_min, derivative)
    n_t = tau_min.shape[0]
    outs = [np.empty((n_t, n)) for _ in range(4)]
    has_h = derivative
    for lo in range(0, n, block):
        sl = slice(lo, lo + block)
        tau_b = tau_min if tau_min.shape[1] == 1 else tau_min[:, sl]
        res = _conv_at(fine.tf_min, fine.cf[:, None], k[sl], tau_b, derivative)
        for out, r in zip(outs, res, strict=True):
            if r is not None:
                out[:, sl] = r
    return outs[0], (outs[1] if has_h else None), outs[2], outs[3]


# --------------------------------------------------------------------------------------------
# linear least squares (start values and Patlak)
# --------------------------------------------------------------------------------------------


def _dot(a: NDArray[np.float64], b: NDArray[np.float64]) -> NDArray[np.float64] | float:
    """Row-wise dot product of regressors: each (n_t,) shared or (n, n_t) per voxel."""
    if a.ndim == 1 and b.ndim == 1:
        return float(a @ b)
    if a.ndim == 1:
        return np.einsum("ij,j->i", b, a)
    if b.ndim == 1:
        return np.einsum("ij,j->i", a, b)
    return np.einsum("ij,ij->i", a, b)


def _linear_ls(
    cols: Sequence[NDArray[np.float64]], y: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Least squares ``y ~ sum beta_i cols_i`` per voxel; returns beta (n, p) and the SSR (n,)."""
    n, p = y.shape[0], len(cols)
    if all(c.ndim == 1 for c in cols):  # one design matrix for all voxels: a single product
        design = np.stack(cols, axis=1)  # (n_t, p)
        rhs = y @ design
        with np.errstate(divide="ignore", invalid="ignore"):
            beta = rhs @ np.linalg.pinv(design.T @ design)  # symmetric: no transpose needed
        ssr = np.einsum("ij,ij->i", y, y) - np.einsum("ij,ij->i", beta, rhs)
        return beta, ssr
    gram = np.empty((n, p, p))
    rhs = np.empty((n, p))
    for i in range(p):
        rhs[:, i] = _dot(cols[i], y)
        for j in range(i, p):
            gram[:, i, j] = gram[:, j, i] = _dot(cols[i], cols[j])
    beta = _solve_small(gram, rhs)
    ssr = np.einsum("ij,ij->i", y, y) - np.einsum("ij,ij->i", beta, rhs)
    return beta, ssr


# --------------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------------


class _KineticModel:
    """Shared machinery of the DCE kinetic models (see the subclasses)."""

    kind: ClassVar[str]
    base_params: ClassVar[tuple[str, ...]]
    derived: ClassVar[tuple[str, ...]] = ()
    algorithm: ClassVar[str]
    reference: ClassVar[str]

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
            self._aif = aif
        else:
            cp = np.asarray(aif, dtype=np.float64).reshape(-1)
            if cp.size != t.size:
                raise QMRIInputError(f"AIF has {cp.size} samples but there are {t.size} frames")
            self._aif = ArterialInputFunction(
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
        self._t = t
        self._fine = (
            None
            if self._aif.fine_times_s is None
            else _FineAIF(t / 60.0, self._aif.fine_times_s / 60.0, self._aif.fine_cp)
        )
        self._fit_delay = bool(fit_delay)
        self._bounds = merged
        self._delay_step = float(delay_step_s)
        self._max_iter = int(max_iter)
        self._tol = float(tol)
        self._allow_zero_ktrans = bool(allow_zero_ktrans) and self.kind == "patlak"
        self._method = method
        #: (Cp, integral of Cp) at the frame times, for the compiled linear fit (lazily)
        self._shared_regressors: tuple[NDArray[np.float64], NDArray[np.float64]] | None = None

    # ----------------------------------------------------------------------------- properties
    @property
    def times_s(self) -> NDArray[np.float64]:
        """Frame times (s)."""
        return self._t

    @property
    def aif(self) -> ArterialInputFunction:
        """Arterial input function (plasma, mM, at the frame times)."""
        return self._aif

    @property
    def method(self) -> str:
        """``"nlls"`` or ``"linear"`` (closed form only)."""
        return self._method

    @property
    def fit_delay(self) -> bool:
        """Whether the arterial delay is a fitted parameter."""
        return self._fit_delay

    @property
    def param_names(self) -> tuple[str, ...]:
        """Output parameter maps (in order)."""
        return (*self.base_params, *self.derived, *(("delay",) if self._fit_delay else ()))

    @property
    def units(self) -> dict[str, str]:
        """Unit of every output map (data contract section 4)."""
        all_units = {"Ktrans": "1/min", "kep": "1/min", "ve": "1", "vp": "1", "delay": "s"}
        return {**{p: all_units[p] for p in self.param_names}, "R2": "1", "fitmask": "1"}

    @property
    def _fit_params(self) -> tuple[str, ...]:
        return (*self.base_params, *(("delay",) if self._fit_delay else ()))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(n_frames={self._t.size}, aif={self._aif.kind!r}, "
            f"fit_delay={self._fit_delay})"
        )

    # ----------------------------------------------------------------------------- forward
    def _model_tm(
        self,
        p: NDArray[np.float64],
        c_tm: NDArray[np.float64],
        with_jac: bool,
        fine: _FineAIF | None = None,
    ) -> tuple[NDArray[np.float64], list[NDArray[np.float64]] | None]:
        """Concentration (n_t, n) and its derivatives (list of (n_t, n)) for params p (n, n_par).

        With ``fine`` (the model's own AIF only) the AIF is piecewise linear between its fine
        samples; ``c_tm`` must then be its frame samples.
        """
        t_min = self._t / 60.0
        kind = self.kind
        n = p.shape[0]
        if kind == "patlak":
            vp, kt = p[:, 0], p[:, 1]
            kep = np.zeros(n)
        else:
            kt, ve = p[:, 0], p[:, 1]
            with np.errstate(divide="ignore", invalid="ignore"):
                kep = kt / ve
            vp = p[:, 2] if kind == "etofts" else None
        if self._fit_delay:
            tau = t_min[:, None] - p[:, -1][None, :] / 60.0
            deriv = with_jac and kind != "patlak"
            if fine is None:
                g, h, cp, slope = _conv_at(t_min, c_tm, kep, tau, deriv)
            else:
                g, h, cp, slope = _conv_at_fine(fine, kep, tau, deriv)
        else:
            g, h = _conv_time_major(t_min, c_tm, kep, with_jac and kind != "patlak", fine)
            cp, slope = c_tm, None
        conc = kt * g
        if vp is not None:
            conc = conc + vp * cp
        if not with_jac:
            return conc, None
        cp_b = np.broadcast_to(cp, conc.shape)
        if kind == "patlak":
            jac = [cp_b, g]
        else:
            assert h is not None
            jac = [g + kep * h, -(kep * kep) * h]
            if kind == "etofts":
                jac.append(cp_b)
        if slope is not None:  # d/d(delay s) = -(1/60) d/d(tau min)
            d_delay = kt * (cp - kep * g)
            if vp is not None:
                d_delay = d_delay + vp * slope
            jac.append(d_delay * (-1.0 / 60.0))
        return conc, jac

    def predict(self, **params: ArrayLike) -> np.ndarray:
        """Tissue concentration (mM) for parameter maps, shape ``(..., n_frames)``.

        Parameters
        ----------
        **params : array_like
            ``Ktrans`` (1/min), ``ve``, ``vp`` (as the model needs) and ``delay`` (s, when the
            delay is fitted; default 0), all of one shape (or scalars).
        """
        names = self._fit_params
        missing = [n for n in names if n not in params and n != "delay"]
        if missing:
            raise QMRIInputError(f"predict needs {', '.join(missing)}")
        arrays = np.broadcast_arrays(
            *(np.asarray(params.get(n, 0.0), dtype=np.float64) for n in names)
        )
        shape = arrays[0].shape
        p = np.stack([a.reshape(-1) for a in arrays], axis=1)
        conc, _ = self._model_tm(p, self._aif.cp[:, None], with_jac=False, fine=self._fine)
        return np.ascontiguousarray(conc.T).reshape(*shape, self._t.size)

    # ----------------------------------------------------------------------------- start
    def _aif_regressors(
        self, c_tm: NDArray[np.float64], delay_s: float, fine: _FineAIF | None = None
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """AIF and its running integral (mM min) at ``t - delay_s``: (n_t,) or (n, n_t) each."""
        t_min = self._t / 60.0
        zero = np.zeros(c_tm.shape[1])
        tau = (t_min - delay_s / 60.0)[:, None]
        if fine is None:
            integ_tm, _, cp_tm, _ = _conv_at(t_min, c_tm, zero, tau, derivative=False)
        else:
            integ_tm, _, cp_tm, _ = _conv_at(fine.tf_min, fine.cf[:, None], zero, tau, False)
        if c_tm.shape[1] == 1:
            return cp_tm[:, 0], integ_tm[:, 0]
        return np.ascontiguousarray(cp_tm.T), np.ascontiguousarray(integ_tm.T)

    def _linear_from(
        self,
        y: NDArray[np.float64],
        c_tm: NDArray[np.float64],
        delay_s: float,
        fine: _FineAIF | None = None,
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Closed-form linear estimate of the base parameters (n, n_base) and its SSR (n,).

        The AIF ``c_tm`` ((n_t, 1) shared or (n_t, n) per voxel) is evaluated at
        ``t - delay_s``. Patlak: least squares on ``[Cp, int Cp]``; Tofts (Murase):
        ``C = Ktrans int Cp - kep int C``; extended Tofts:
        ``C = (Ktrans + kep vp) int Cp - kep int C + vp Cp``.
        """
        t_min = self._t / 60.0
        c, integ_c = self._aif_regressors(c_tm, delay_s, fine)
        if self.kind == "patlak":
            return _linear_ls([c, integ_c], y)  # (vp, Ktrans)
        integ_y = np.ascontiguousarray(_cumtrapz_tm(t_min, y.T).T)
        if self.kind == "tofts":
            beta, ssr = _linear_ls([integ_c, -integ_y], y)
            kt, kep = beta[:, 0], beta[:, 1]
            with np.errstate(divide="ignore", invalid="ignore"):
                return np.stack([kt, kt / kep], axis=1), ssr
        beta, ssr = _linear_ls([integ_c, -integ_y, c], y)
        kep, vp = beta[:, 1], beta[:, 2]
        kt = beta[:, 0] - kep * vp
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.stack([kt, kt / kep, vp], axis=1), ssr

    def _linear_shared(
        self, y: NDArray[np.float64], c_tm: NDArray[np.float64], fine: _FineAIF | None
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
        """:meth:`_linear_from` at zero delay for the model's own AIF, in one compiled pass.

        Same regressors and the same least squares (:mod:`qmri.models._linear_kernels`);
        returns the base parameters (n, n_base), the residual and the total sums of squares.
        """
        from qmri.models._linear_kernels import KINDS, linear_fit_shared_aif

        if self._shared_regressors is None:  # the model's own AIF: once per model
            c, integ_c = self._aif_regressors(c_tm, 0.0, fine)
            self._shared_regressors = (np.ascontiguousarray(c), np.ascontiguousarray(integ_c))
        c, integ_c = self._shared_regressors
        beta, ssr, sst = linear_fit_shared_aif(
            np.ascontiguousarray(y, dtype=np.float64), self._t / 60.0, c, integ_c,
            KINDS[self.kind],
        )  # fmt: skip
        if self.kind == "patlak":
            return beta[:, :2], ssr, sst  # (vp, Ktrans)
        kep = beta[:, 1]
        if self.kind == "tofts":
            kt = beta[:, 0]
            with np.errstate(divide="ignore", invalid="ignore"):
                return np.stack([kt, kt / kep], axis=1), ssr, sst
        vp = beta[:, 2]
        kt = beta[:, 0] - kep * vp
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.stack([kt, kt / kep, vp], axis=1), ssr, sst

    def _delay_grid_start(
        self, y: NDArray[np.float64], c_tm: NDArray[np.float64], fine: _FineAIF | None = None
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
        """Grid search of the linear fit over delays: params (n, n_base), delay (n,), SSR (n,)."""
        lo, hi = self._bounds["delay"]
        n_steps = max(int(np.floor((hi - lo) / self._delay_step + 1e-9)), 1)
        grid = lo + (hi - lo) * np.arange(n_steps + 1) / n_steps
        n = y.shape[0]
        best_ssr = np.full(n, np.inf)
        best_p = np.full((n, len(self.base_params)), np.nan)
        best_d = np.zeros(n)
        for d in grid:
            params, ssr = self._linear_from(y, c_tm, float(d), fine)
            ok = np.isfinite(ssr) & np.isfinite(params).all(axis=1) & (ssr < best_ssr)
            best_ssr[ok], best_p[ok], best_d[ok] = ssr[ok], params[ok], d
        return best_p, best_d, best_ssr

    # ----------------------------------------------------------------------------- fit
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
        if y.ndim != 2 or y.shape[1] != self._t.size:
            raise QMRIInputError(f"curves must have shape (n, {self._t.size}), got {y.shape}")
        fine = self._fine
        if cp is None:
            c_tm = self._aif.cp[:, None]
        else:
            fine = None
            cpa = np.asarray(cp, dtype=np.float64)
            if cpa.shape != y.shape:
                raise QMRIInputError(f"per-curve AIFs must have shape {y.shape}, got {cpa.shape}")
            c_tm = np.ascontiguousarray(cpa.T)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return self._kernel(y, c_tm, fine)

    def _kernel(
        self, y: NDArray[np.float64], c_tm: NDArray[np.float64], fine: _FineAIF | None = None
    ) -> KernelOutput:
        names = self._fit_params
        lo = np.array([self._bounds[n][0] for n in names])
        hi = np.array([self._bounds[n][1] for n in names])
        start_sst = None  # total sum of squares, when the compiled linear fit gives it
        if self._fit_delay:
            start, delay0, start_ssr = self._delay_grid_start(y, c_tm, fine)
        elif np.shares_memory(c_tm, self._aif.cp):  # the model's AIF: compiled single pass
            (start, start_ssr, start_sst), delay0 = self._linear_shared(y, c_tm, fine), None
        else:
            (start, start_ssr), delay0 = self._linear_from(y, c_tm, 0.0, fine), None

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
                    c, integ = self._aif_regressors(c_tm, 0.0, fine)
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
            return KernelOutput(self._output_maps(params), r2, interior(params), None)

        # start values: the linear estimate where physical, else OSIPI's start values
        p0 = np.empty((y.shape[0], len(names)))
        for i, name in enumerate(self.base_params):
            v = start[:, i]
            b_lo, b_hi = self._bounds[name]
            margin = 1e-3 * (b_hi - b_lo)
            good = np.isfinite(v) & (v > b_lo) & (v < b_hi)
            fallback = min(max(_FALLBACK[name], b_lo + margin), b_hi - margin)
            p0[:, i] = np.where(good, np.clip(v, b_lo + margin, b_hi - margin), fallback)
        if delay0 is not None:
            d_lo, d_hi = self._bounds["delay"]
            p0[:, -1] = np.clip(delay0, d_lo + 1e-3, d_hi - 1e-3)
        per_voxel = c_tm.shape[1] > 1

        def residuals(
            p: NDArray[np.float64], yy: NDArray[np.float64], *extra: NDArray[np.float64]
        ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
            cc = np.ascontiguousarray(extra[0].T) if per_voxel else c_tm
            conc, jac_list = self._model_tm(p, cc, with_jac=True, fine=fine)
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
            lower=lo,
            upper=hi,
            voxel_args=voxel_args,
            max_iter=self._max_iter,
            tol=self._tol,
        )
        params = res.params.copy()
        cost, converged = res.cost.copy(), res.converged.copy()
        ok = interior(params)
        if self._fit_delay and not ok.all():
            # the delay makes the cost multimodal: restart failed voxels from shifted delays
            d_lo, d_hi = self._bounds["delay"]
            for offset in _DELAY_RESTARTS_S:
                bad = np.flatnonzero(~ok)
                if bad.size == 0:
                    break
                p0b = p0[bad].copy()
                p0b[:, -1] = np.clip(p0b[:, -1] + offset, d_lo + 1e-3, d_hi - 1e-3)
                rb = levenberg_marquardt(
                    residuals,
                    p0b,
                    lower=lo,
                    upper=hi,
                    voxel_args=tuple(a[bad] for a in voxel_args),
                    max_iter=self._max_iter,
                    tol=self._tol,
                )
                good = interior(rb.params)
                sel = bad[good]
                params[sel], cost[sel] = rb.params[good], rb.cost[good]
                converged[sel] = rb.converged[good]
                ok[sel] = True
        r2 = r_squared(y, ss_res=2.0 * cost)
        return KernelOutput(self._output_maps(params), r2, ok, converged)

    def _output_maps(self, params: NDArray[np.float64]) -> dict[str, NDArray[np.float64]]:
        """Named maps from fitted parameter columns (base parameters [, delay])."""
        out: dict[str, NDArray[np.float64]] = {}
        if self.kind == "patlak":
            out["Ktrans"], out["vp"] = params[:, 1], params[:, 0]
        else:
            out["Ktrans"], out["ve"] = params[:, 0], params[:, 1]
            if self.kind == "etofts":
                out["vp"] = params[:, 2]
            out["kep"] = params[:, 0] / params[:, 1]
        if self._fit_delay:
            out["delay"] = params[:, -1]
        return out

    def fit(
        self,
        data: ArrayLike,
        *,
        mask: ArrayLike | None = None,
        chunk_size: int = DEFAULT_DCE_CHUNK_SIZE,
        provenance: Mapping[str, Any] | None = None,
    ) -> ModelFit:
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
            Extra options to record (e.g. ``ConcentrationResult.options``: r1 and its source,
            baseline frames, flip angle, TR).

        Returns
        -------
        ModelFit
            Maps of :attr:`param_names` (``Ktrans``, ``kep`` in 1/min, ``ve``, ``vp`` fractions,
            ``delay`` s), ``R2`` (on the concentration scale) and ``fitmask``.
        """
        arr = check_data(data, self._t.size, "frame times")
        c_tm = self._aif.cp[:, None]

        def kernel(y: NDArray[np.float64]) -> KernelOutput:
            return self._kernel(y, c_tm, self._fine)

        maps, n_fitted, n_failed, n_unconv = fit_voxelwise(
            kernel, arr, self.param_names, mask=mask, chunk_size=chunk_size
        )
        options: dict[str, Any] = {
            **dict(provenance or {}),
            "model": self.kind,
            "frame_times_s": self._t.tolist(),
            **self._aif.options,
            "fit_delay": self._fit_delay,
            "bounds": {
                n: list(self._bounds[n])
                for n in (*self.base_params, *(("delay",) if self._fit_delay else ()))
            },
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
            options["delay_grid_step_s"] = self._delay_step
            options["delay_restarts_s"] = list(_DELAY_RESTARTS_S)
        if self.kind == "patlak":
            options["allow_zero_ktrans"] = self._allow_zero_ktrans
        options["method"] = self._method
        linear_only = self._method == "linear" or (self.kind == "patlak" and not self._fit_delay)
        if not linear_only:
            options.update({"max_iter": self._max_iter, "tol": self._tol})
        return ModelFit(
            maps=maps,
            units=self.units,
            n_fitted=n_fitted,
            n_failed=n_failed,
            algorithm=(self.algorithm if self._method == "nlls" else _LINEAR_ALGORITHM[self.kind])
            + (" with fitted arterial delay (grid-search start)" if self._fit_delay else ""),
            reference=self.reference,
            options=options,
            n_unconverged=n_unconv,
        )


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
    >>> from qmri.dce import parker_aif
    >>> t = np.arange(0, 300, 2.0)
    >>> model = ToftsModel(t, parker_aif(t, delay_s=20))
    >>> fit = model.fit(model.predict(Ktrans=0.25, ve=0.3))
    >>> round(float(fit.maps["Ktrans"]), 6), round(float(fit.maps["ve"]), 6)
    (0.25, 0.3)
    """

    kind = "tofts"
    base_params = ("Ktrans", "ve")
    derived = ("kep",)
    algorithm = (
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
    algorithm = (
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
    algorithm = "Patlak model, closed-form linear least squares"
    reference = _REF_PATLAK

    @property
    def param_names(self) -> tuple[str, ...]:
        """Output parameter maps (in order)."""
        return ("Ktrans", "vp", *(("delay",) if self._fit_delay else ()))
