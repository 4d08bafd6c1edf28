r"""The kinetic models' forward equations on parameter columns, with analytic Jacobians.

For parameter columns ``p`` (n, n_par) -- Patlak ``(vp, Ktrans[, delay])``, Tofts
``(Ktrans, ve[, delay])``, extended Tofts ``(Ktrans, ve, vp[, delay])``; Ktrans in 1/min, delay
in s -- :func:`tissue_tm` gives the tissue concentration (mM) at the frame times, time-major
(n_t, n), and its derivative in every column, from the exact convolutions of
:mod:`qmri.models.dce.convolution`:

* Tofts: :math:`C = K^{trans} G(k_{ep})`, :math:`k_{ep} = K^{trans}/v_e`, with
  :math:`G(k) = C_p \otimes e^{-kt}`;
* extended Tofts: :math:`C = K^{trans} G(k_{ep}) + v_p C_p`;
* Patlak: :math:`C = K^{trans} \int C_p + v_p C_p` (:math:`G` at :math:`k = 0`).

With a fitted delay the AIF is evaluated at ``t - delay`` (smooth in the delay, see
:func:`~qmri.models.dce.convolution._conv_at`).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from qmri.models.dce.convolution import _conv_at, _conv_at_fine, _conv_time_major, _FineAIF

__all__ = ["output_maps", "tissue_tm"]


def tissue_tm(
    kind: str,
    t_min: NDArray[np.float64],
    p: NDArray[np.float64],
    c_tm: NDArray[np.float64],
    *,
    with_jac: bool,
    fit_delay: bool,
    fine: _FineAIF | None = None,
) -> tuple[NDArray[np.float64], list[NDArray[np.float64]] | None]:
    """Concentration (n_t, n) and its derivatives (list of (n_t, n)) for params p (n, n_par).

    Parameters
    ----------
    kind : {"patlak", "tofts", "etofts"}
        The model.
    t_min : (n_t,) ndarray
        Frame times (min).
    p : (n, n_par) ndarray
        Parameter columns (module docstring); the last is the delay (s) with ``fit_delay``.
    c_tm : (n_t, 1) or (n_t, n) ndarray
        AIF samples (mM) at the frame times, shared or per voxel.
    with_jac : bool
        Also return the derivative in every column.
    fit_delay : bool
        The last column is an arterial delay (s).
    fine : _FineAIF, optional
        The shared AIF on its fine grid (then ``c_tm`` must be its frame samples): the AIF is
        piecewise linear between its fine samples.
    """
    n = p.shape[0]
    if kind == "patlak":
        vp, kt = p[:, 0], p[:, 1]
        kep = np.zeros(n)
    else:
        kt, ve = p[:, 0], p[:, 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            kep = kt / ve
        vp = p[:, 2] if kind == "etofts" else None
    if fit_delay:
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


def output_maps(
    kind: str, params: NDArray[np.float64], fit_delay: bool
) -> dict[str, NDArray[np.float64]]:
    """Named maps (``Ktrans``, ``ve``, ``vp``, ``kep``, ``delay``) from parameter columns."""
    out: dict[str, NDArray[np.float64]] = {}
    if kind == "patlak":
        out["Ktrans"], out["vp"] = params[:, 1], params[:, 0]
    else:
        out["Ktrans"], out["ve"] = params[:, 0], params[:, 1]
        if kind == "etofts":
            out["vp"] = params[:, 2]
        out["kep"] = params[:, 0] / params[:, 1]
    if fit_delay:
        out["delay"] = params[:, -1]
    return out
