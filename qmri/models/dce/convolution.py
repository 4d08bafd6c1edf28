r"""Exact convolution of a piecewise-linear AIF with an exponential, the core of the Tofts models.

The AIF is the piecewise-linear interpolant of its samples (zero before the first one). Over a
sample interval of length :math:`\Delta` with :math:`x = k\Delta`, the convolution
:math:`G(t) = \int_{t_0}^{t} C_p(s)\, e^{-k(t - s)}\, ds` obeys

.. math:: G_{j+1} = e^{-x} G_j + \Delta\,[\,c_j(\varphi_1 - \varphi_2) + c_{j+1}\varphi_2\,],
   \quad \varphi_1 = \frac{1 - e^{-x}}{x},\ \varphi_2 = \frac{x - 1 + e^{-x}}{x^2},

which holds for non-uniform frame times (:func:`_phi` holds the :math:`\varphi` functions and
their derivatives). The recursion runs over frames, vectorized over voxels, and so does its
analytic derivative in :math:`k`. A shared analytic AIF may be sampled on a finer grid than the
frames (:class:`_FineAIF`); the convolution is then exact for the fine interpolant and sampled
at the frame times. :func:`_conv_at` evaluates it at arbitrary (delayed) times.

Times inside this module are in minutes (rate constants in 1/min); :func:`exp_convolution`,
the public entry point, takes seconds.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from qmri.models.dce.timing import check_frame_times

__all__ = ["exp_convolution"]

_SERIES_X = 0.05  # below this x = k dt, phi functions use their Taylor series
_N_SERIES = 10


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
