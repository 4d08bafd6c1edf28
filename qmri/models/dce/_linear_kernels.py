"""Compiled single-pass kernels of the closed-form DCE fits (Patlak; Murase's linearised Tofts).

With one AIF shared by every voxel, the normal equations of these fits need, per voxel, only a
handful of sums over the frames: the products of the curve ``y`` and of its running trapezoid
integral ``I`` with the AIF ``Cp`` and its integral ``A``, and with themselves. NumPy would make
one pass over the ``(n, n_frames)`` array per operation; this kernel (numba, compiled once and
cached on disk) makes one pass in all and solves each voxel's 2 x 2 or 3 x 3 system in place,
which takes the linear DCE fits from ~0.5 to several million voxels per second.

Regressors (frames in minutes, concentrations in mM):

* Patlak: ``y = vp Cp + Ktrans A``;
* Tofts (Murase): ``y = Ktrans A - kep I``;
* extended Tofts (Murase): ``y = (Ktrans + kep vp) A - kep I + vp Cp``.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["KINDS", "linear_fit_shared_aif"]

#: Model codes of :func:`linear_fit_shared_aif`.
KINDS = {"patlak": 0, "tofts": 1, "etofts": 2}


@numba.njit(parallel=True, cache=True)
def linear_fit_shared_aif(
    y: np.ndarray, t_min: np.ndarray, cp: np.ndarray, integ_cp: np.ndarray, kind: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least-squares coefficients, residual and total sums of squares of every curve.

    Parameters
    ----------
    y : (n, n_frames) ndarray of float64
        Tissue concentration (mM).
    t_min : (n_frames,) ndarray
        Frame times (min).
    cp, integ_cp : (n_frames,) ndarray
        The AIF (mM) and its integral (mM min) at the frame times.
    kind : int
        :data:`KINDS` code.

    Returns
    -------
    beta : (n, 3) ndarray
        Coefficients of the regressors in the order of the module docstring (Patlak: vp,
        Ktrans; Tofts: Ktrans, kep; extended Tofts: Ktrans + kep vp, kep, vp), NaN where the
        normal equations are singular; unused columns NaN.
    ss_res, ss_tot : (n,) ndarray
        Residual and total (about the mean) sums of squares.
    """
    n, nt = y.shape
    beta = np.full((n, 3), np.nan)
    ss_res = np.full(n, np.nan)
    ss_tot = np.empty(n)
    # shared products of the AIF regressors
    aa = 0.0
    ac = 0.0
    cc = 0.0
    for t in range(nt):
        aa += integ_cp[t] * integ_cp[t]
        ac += integ_cp[t] * cp[t]
        cc += cp[t] * cp[t]
    for i in numba.prange(n):
        integ = 0.0
        prev = y[i, 0]
        s_ay = 0.0
        s_cy = 0.0
        s_yy = 0.0
        s_y = 0.0
        s_ai = 0.0
        s_ci = 0.0
        s_ii = 0.0
        s_iy = 0.0
        for t in range(nt):
            v = y[i, t]
            if t > 0:
                integ += 0.5 * (v + prev) * (t_min[t] - t_min[t - 1])
            prev = v
            s_ay += integ_cp[t] * v
            s_cy += cp[t] * v
            s_yy += v * v
            s_y += v
            s_ai += integ_cp[t] * integ
            s_ci += cp[t] * integ
            s_ii += integ * integ
            s_iy += integ * v
        ss_tot[i] = s_yy - s_y * s_y / nt
        # normal equations, solved in closed form (Cholesky for 3 x 3): no allocation per voxel
        if kind == 0:  # [Cp, A] -> (vp, Ktrans)
            g00, g01, g11, r0, r1 = cc, ac, aa, s_cy, s_ay
        else:  # [A, -I, (Cp)]
            g00, g01, g11, r0, r1 = aa, -s_ai, s_ii, s_ay, -s_iy
        if kind < 2:
            det = g00 * g11 - g01 * g01
            if g00 > 0.0 and det > 0.0:
                x0 = (g11 * r0 - g01 * r1) / det
                x1 = (g00 * r1 - g01 * r0) / det
                beta[i, 0] = x0
                beta[i, 1] = x1
                ss_res[i] = max(s_yy - x0 * r0 - x1 * r1, 0.0)
            continue
        g02, g12, g22, r2 = ac, -s_ci, cc, s_cy
        if not g00 > 0.0:
            continue
        l00 = np.sqrt(g00)
        l10 = g01 / l00
        l20 = g02 / l00
        d11 = g11 - l10 * l10
        if not d11 > 0.0:
            continue
        l11 = np.sqrt(d11)
        l21 = (g12 - l20 * l10) / l11
        d22 = g22 - l20 * l20 - l21 * l21
        if not d22 > 0.0:
            continue
        l22 = np.sqrt(d22)
        z0 = r0 / l00
        z1 = (r1 - l10 * z0) / l11
        z2 = (r2 - l20 * z0 - l21 * z1) / l22
        x2 = z2 / l22
        x1 = (z1 - l21 * x2) / l11
        x0 = (z0 - l10 * x1 - l20 * x2) / l00
        beta[i, 0] = x0
        beta[i, 1] = x1
        beta[i, 2] = x2
        ss_res[i] = max(s_yy - x0 * r0 - x1 * r1 - x2 * r2, 0.0)
    return beta, ss_res, ss_tot
