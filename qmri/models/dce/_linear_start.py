"""Closed-form linear least-squares DCE estimates: the start of the non-linear fits, and the
Patlak result.

Regressors (frames in minutes, concentrations in mM; ``A`` the running integral of the AIF
``Cp``, ``I`` that of the tissue curve ``y``):

* Patlak: ``y = vp Cp + Ktrans A``;
* Tofts (Murase's integral linearisation): ``y = Ktrans A - kep I``;
* extended Tofts (Murase): ``y = (Ktrans + kep vp) A - kep I + vp Cp``.

The AIF is given time-major, ``c_tm`` (n_t, 1) shared by all voxels or (n_t, n) per voxel, and
may be evaluated at ``t - delay``. With the model's own (shared, undelayed) AIF the compiled
single pass of :mod:`qmri.models.dce._linear_kernels` solves the same least squares
(:func:`linear_shared`, given the regressors of :func:`shared_regressors`). Every function here
is pure: the regressors are passed in, never cached.

Returned parameter columns are the model's base parameters: Patlak ``(vp, Ktrans)``, Tofts
``(Ktrans, ve)``, extended Tofts ``(Ktrans, ve, vp)`` (``ve = Ktrans / kep``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from qmri.fitting import _solve_small
from qmri.models.dce.convolution import _conv_at, _cumtrapz_tm, _FineAIF

__all__ = [
    "aif_regressors",
    "delay_grid_start",
    "linear_from",
    "linear_ls",
    "linear_shared",
    "shared_regressors",
]


def _dot(a: NDArray[np.float64], b: NDArray[np.float64]) -> NDArray[np.float64] | float:
    """Row-wise dot product of regressors: each (n_t,) shared or (n, n_t) per voxel."""
    if a.ndim == 1 and b.ndim == 1:
        return float(a @ b)
    if a.ndim == 1:
        return np.einsum("ij,j->i", b, a)
    if b.ndim == 1:
        return np.einsum("ij,j->i", a, b)
    return np.einsum("ij,ij->i", a, b)


def linear_ls(
    cols: Sequence[NDArray[np.float64]], y: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Least squares ``y ~ sum beta_i cols_i`` per voxel; returns beta (n, p) and the SSR (n,).

    Each column is (n_t,) (shared by all voxels) or (n, n_t); ``y`` is (n, n_t).
    """
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


def aif_regressors(
    t_min: NDArray[np.float64],
    c_tm: NDArray[np.float64],
    delay_s: float,
    fine: _FineAIF | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """AIF (mM) and its running integral (mM min) at ``t - delay_s``: (n_t,) or (n, n_t) each.

    Parameters
    ----------
    t_min : (n_t,) ndarray
        Frame times (min).
    c_tm : (n_t, 1) or (n_t, n) ndarray
        AIF samples (mM) at the frame times, time-major.
    delay_s : float
        Arterial delay (s).
    fine : _FineAIF, optional
        The shared AIF on its fine grid (then ``c_tm`` must be its frame samples).
    """
    zero = np.zeros(c_tm.shape[1])
    tau = (t_min - delay_s / 60.0)[:, None]
    if fine is None:
        integ_tm, _, cp_tm, _ = _conv_at(t_min, c_tm, zero, tau, derivative=False)
    else:
        integ_tm, _, cp_tm, _ = _conv_at(fine.tf_min, fine.cf[:, None], zero, tau, False)
    if c_tm.shape[1] == 1:
        return cp_tm[:, 0], integ_tm[:, 0]
    return np.ascontiguousarray(cp_tm.T), np.ascontiguousarray(integ_tm.T)


def linear_from(
    kind: str,
    t_min: NDArray[np.float64],
    y: NDArray[np.float64],
    c_tm: NDArray[np.float64],
    delay_s: float,
    fine: _FineAIF | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Closed-form linear estimate of the base parameters (n, n_base) and its SSR (n,).

    Parameters
    ----------
    kind : {"patlak", "tofts", "etofts"}
        The model.
    t_min : (n_t,) ndarray
        Frame times (min).
    y : (n, n_t) ndarray
        Tissue concentration (mM).
    c_tm : (n_t, 1) or (n_t, n) ndarray
        AIF (mM), shared or per voxel, evaluated at ``t - delay_s``.
    delay_s : float
        Arterial delay (s).
    fine : _FineAIF, optional
        The shared AIF on its fine grid.
    """
    c, integ_c = aif_regressors(t_min, c_tm, delay_s, fine)
    if kind == "patlak":
        return linear_ls([c, integ_c], y)  # (vp, Ktrans)
    integ_y = np.ascontiguousarray(_cumtrapz_tm(t_min, y.T).T)
    if kind == "tofts":
        beta, ssr = linear_ls([integ_c, -integ_y], y)
        kt, kep = beta[:, 0], beta[:, 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.stack([kt, kt / kep], axis=1), ssr
    beta, ssr = linear_ls([integ_c, -integ_y, c], y)
    kep, vp = beta[:, 1], beta[:, 2]
    kt = beta[:, 0] - kep * vp
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.stack([kt, kt / kep, vp], axis=1), ssr


def shared_regressors(
    t_min: NDArray[np.float64], c_tm: NDArray[np.float64], fine: _FineAIF | None
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The shared AIF and its integral at zero delay, contiguous, for :func:`linear_shared`.

    ``c_tm`` is (n_t, 1). The kinetic models compute them once, in their constructor.
    """
    c, integ_c = aif_regressors(t_min, c_tm, 0.0, fine)
    return np.ascontiguousarray(c), np.ascontiguousarray(integ_c)


def linear_shared(
    kind: str,
    t_min: NDArray[np.float64],
    y: NDArray[np.float64],
    regressors: tuple[NDArray[np.float64], NDArray[np.float64]],
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """:func:`linear_from` at zero delay for a shared AIF, in one compiled pass.

    Same regressors and the same least squares (:mod:`qmri.models.dce._linear_kernels`).

    Parameters
    ----------
    kind : {"patlak", "tofts", "etofts"}
        The model.
    t_min : (n_t,) ndarray
        Frame times (min).
    y : (n, n_t) ndarray
        Tissue concentration (mM).
    regressors : (ndarray, ndarray)
        :func:`shared_regressors` of the AIF.

    Returns
    -------
    params : (n, n_base) ndarray
        The base parameters.
    ss_res, ss_tot : (n,) ndarray
        Residual and total sums of squares.
    """
    # numba takes about a second to import: only the closed-form fits that run this load it
    from qmri.models.dce._linear_kernels import KINDS, linear_fit_shared_aif

    c, integ_c = regressors
    beta, ssr, sst = linear_fit_shared_aif(
        np.ascontiguousarray(y, dtype=np.float64), t_min, c, integ_c, KINDS[kind]
    )
    if kind == "patlak":
        return beta[:, :2], ssr, sst  # (vp, Ktrans)
    kep = beta[:, 1]
    if kind == "tofts":
        kt = beta[:, 0]
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.stack([kt, kt / kep], axis=1), ssr, sst
    vp = beta[:, 2]
    kt = beta[:, 0] - kep * vp
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.stack([kt, kt / kep, vp], axis=1), ssr, sst


def delay_grid_start(
    kind: str,
    t_min: NDArray[np.float64],
    y: NDArray[np.float64],
    c_tm: NDArray[np.float64],
    *,
    n_base: int,
    delay_bounds_s: tuple[float, float],
    delay_step_s: float,
    fine: _FineAIF | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Grid search of the linear fit over delays: params (n, n_base), delay (n,) s, SSR (n,).

    The grid runs over ``delay_bounds_s`` in steps of at most ``delay_step_s``; every voxel
    keeps the delay of its smallest finite SSR (NaN parameters, delay 0 and SSR inf where
    none is finite).
    """
    lo, hi = delay_bounds_s
    n_steps = max(int(np.floor((hi - lo) / delay_step_s + 1e-9)), 1)
    grid = lo + (hi - lo) * np.arange(n_steps + 1) / n_steps
    n = y.shape[0]
    best_ssr = np.full(n, np.inf)
    best_p = np.full((n, n_base), np.nan)
    best_d = np.zeros(n)
    for d in grid:
        params, ssr = linear_from(kind, t_min, y, c_tm, float(d), fine)
        ok = np.isfinite(ssr) & np.isfinite(params).all(axis=1) & (ssr < best_ssr)
        best_ssr[ok], best_p[ok], best_d[ok] = ssr[ok], params[ok], d
    return best_p, best_d, best_ssr
