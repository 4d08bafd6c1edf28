r"""Apparent diffusion coefficient (ADC) from diffusion-weighted images.

.. math:: S(b) = S_0 \, e^{-b \, \mathrm{ADC}}

fitted by weighted linear least squares on :math:`\ln S` (weights :math:`S^2`,
:func:`qmri.fitting.loglinear_wls`) over the shells with ``b_min <= b <= b_max`` (by default
200 and 1000 s/mm^2, the workflow's defaults; a shell's b-value is the mean of its volumes',
see below). A ``b_min`` of about 200 s/mm^2 leaves out the
fast pseudo-diffusion (perfusion, IVIM) signal, so the ADC approaches the tissue diffusion
coefficient; ``S0`` is then the intercept extrapolated to b = 0, not the measured b = 0 signal.

Several diffusion directions at one b-value are all used. Volumes whose b-values differ by at
most :data:`SHELL_TOLERANCE` (2 %, relative) form one shell (scanners report slightly different
b-values per direction, e.g. 987-1003 s/mm^2 for a nominal b = 1000), whose b-value is the mean of
its members (:func:`group_shells`). Their signals are first averaged
geometrically per b-value (the scanner's "trace-weighted" image, :math:`\ln \bar S_b =
\langle \ln S_{b,i} \rangle_i`), and the shell enters the weighted fit with weight
:math:`n_b \bar S_b^2`. With three orthogonal directions (or any uniformly spread set) per shell
this gives exactly the trace ADC, :math:`(D_{xx} + D_{yy} + D_{zz})/3`, of an anisotropic
tissue. A shell with a non-positive signal in any direction is left out for that voxel. ``R2``
is then computed on the direction-averaged signal of each shell.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from qmri.errors import QMRIInputError
from qmri.fitting import loglinear_wls, r_squared, weighted_line_fit
from qmri.models.base import (
    Kernel,
    KernelOutput,
    Model,
    ModelFit,
    as_bvalues,
    map_property,
    model_params,
    setting,
)

__all__ = [
    "ADC_BOUNDS_MM2_S",
    "SHELL_TOLERANCE",
    "ADCFit",
    "ADCModel",
    "adc_signal",
    "group_shells",
    "shell_average",
    "shell_members",
]

#: Relative tolerance under which neighbouring b-values belong to one shell (see
#: :func:`group_shells`).
SHELL_TOLERANCE = 0.02

#: Accepted ADC range (mm^2/s). The lower bound lets noise push a near-zero ADC slightly below 0
#: (kept, so ROI means are not biased); a clearly negative ADC is a failure.
ADC_BOUNDS_MM2_S = (-1e-5, 5e-3)
_ALGORITHM = "log-linear weighted least squares (weights S^2)"
_REFERENCE = (
    "Stejskal EO, Tanner JE. Spin diffusion measurements: spin echoes in the presence of a "
    "time-dependent field gradient. J Chem Phys 1965;42:288-292. doi:10.1063/1.1695690; "
    "Veraart J, Sijbers J, Sunaert S, Leemans A, Jeurissen B. Weighted linear least squares "
    "estimation of diffusion MRI parameters: strengths, limitations, and pitfalls. NeuroImage "
    "2013;81:335-346. doi:10.1016/j.neuroimage.2013.05.028"
)


def group_shells(
    bvals_s_per_mm2: ArrayLike, tolerance: float = SHELL_TOLERANCE
) -> tuple[NDArray[np.float64], NDArray[np.intp]]:
    """Group b-values into shells: sorted neighbours within ``tolerance`` (relative) join.

    Parameters
    ----------
    bvals_s_per_mm2 : (n,) array_like
        b-value of every volume (s/mm^2).
    tolerance : float, default :data:`SHELL_TOLERANCE`
        Two b-values adjacent in sorted order share a shell when their difference is at most
        ``tolerance`` times the larger one (so b = 0 only groups with b = 0).

    Returns
    -------
    shells : (n_shells,) ndarray
        Mean b-value of each shell (s/mm^2), increasing.
    shell_of : (n,) ndarray of int
        Shell index of every volume.

    Examples
    --------
    >>> shells, of = group_shells([0, 995, 1003, 500, 0])
    >>> shells.tolist(), of.tolist()
    ([0.0, 500.0, 999.0], [0, 2, 2, 1, 0])
    """
    b = np.asarray(bvals_s_per_mm2, dtype=np.float64).reshape(-1)
    order = np.argsort(b, kind="stable")
    sb = b[order]
    new = np.ones(sb.size, dtype=bool)
    new[1:] = np.diff(sb) > tolerance * sb[1:]
    label_sorted = np.cumsum(new) - 1
    shell_of = np.empty(b.size, dtype=np.intp)
    shell_of[order] = label_sorted
    n_shells = int(label_sorted[-1]) + 1 if b.size else 0
    shells = np.bincount(shell_of, weights=b, minlength=n_shells) / np.bincount(
        shell_of, minlength=n_shells
    )
    return shells, shell_of


def shell_members(
    bvals_s_per_mm2: ArrayLike,
) -> tuple[NDArray[np.float64], NDArray[np.intp], NDArray[np.float64], NDArray[np.float64]]:
    """The shells of :func:`group_shells` with the volume-to-shell membership matrix.

    Parameters
    ----------
    bvals_s_per_mm2 : (n,) array_like
        b-value of every volume (s/mm^2).

    Returns
    -------
    shells : (n_shells,) ndarray
        Mean b-value of each shell (s/mm^2), increasing.
    shell_of : (n,) ndarray of int
        Shell index of every volume.
    member : (n, n_shells) ndarray
        1 where a volume belongs to a shell, else 0.
    n_per_shell : (n_shells,) ndarray
        Number of volumes of each shell (float).
    """
    shells, shell_of = group_shells(bvals_s_per_mm2)
    member = np.zeros((shell_of.size, shells.size))
    member[np.arange(shell_of.size), shell_of] = 1.0
    return shells, shell_of, member, member.sum(axis=0)


def shell_average(
    signal: NDArray[np.float64], member: NDArray[np.float64], n_per_shell: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.bool_], NDArray[np.float64]]:
    r"""Per-shell signal of several volumes (directions, averages) per b-value.

    Parameters
    ----------
    signal : (n_vox, n) ndarray
        Signal of every volume (a.u.).
    member, n_per_shell : ndarray
        Membership matrix and volumes per shell, from :func:`shell_members`.

    Returns
    -------
    log_mean : (n_vox, n_shells) ndarray
        :math:`\langle \ln S \rangle` over each shell's volumes, non-positive samples counted
        as :math:`\ln S = 0` (meaningful only where ``complete``).
    complete : (n_vox, n_shells) ndarray of bool
        Every volume of the shell has positive signal.
    mean : (n_vox, n_shells) ndarray
        The trace-weighted (geometric mean) signal where ``complete``, the arithmetic mean
        elsewhere (a.u.).
    """
    pos = signal > 0
    logs = np.log(signal, out=np.zeros_like(signal), where=pos)
    log_mean = np.einsum("ij,jk->ik", logs, member / n_per_shell)
    complete = np.einsum("ij,jk->ik", (~pos).astype(np.float64), member) == 0
    with np.errstate(over="ignore"):
        mean = np.where(
            complete, np.exp(log_mean), np.einsum("ij,jk->ik", signal, member / n_per_shell)
        )
    return log_mean, complete, mean


def adc_signal(s0: ArrayLike, adc_mm2_s: ArrayLike, bvals_s_per_mm2: ArrayLike) -> np.ndarray:
    r"""Mono-exponential diffusion signal :math:`S = S_0 e^{-b\,ADC}`, shape ``(..., n_b)``.

    Parameters
    ----------
    s0 : array_like, shape (...)
        Signal at b = 0 (a.u.).
    adc_mm2_s : array_like, shape (...)
        ADC (mm^2/s).
    bvals_s_per_mm2 : (n_b,) array_like
        b-values (s/mm^2).
    """
    s0 = np.asarray(s0, dtype=np.float64)[..., None]
    adc = np.asarray(adc_mm2_s, dtype=np.float64)[..., None]
    return s0 * np.exp(-np.asarray(bvals_s_per_mm2, dtype=np.float64) * adc)


class ADCFit(ModelFit):
    """Result of :meth:`ADCModel.fit`: the maps as properties."""

    adc_mm2_s = map_property("ADC", "Apparent diffusion coefficient (mm^2/s).")
    s0 = map_property("S0", "Signal extrapolated to b = 0 (a.u.).")


class ADCModel(Model[ADCFit]):
    """Mono-exponential ADC model.

    Parameters
    ----------
    bvals_s_per_mm2 : sequence of float
        b-value of every volume (s/mm^2), >= 0; repeated values (several directions) allowed.
    b_min : float, default 200
        Smallest b-value used (s/mm^2); 200 leaves out the fast pseudo-diffusion (perfusion)
        signal (the workflow's ``adc.b_min``). ``b_min=0`` starts at the lowest b-value.
    b_max : float or None, default 1000
        Largest b-value used (s/mm^2; the workflow's ``adc.b_max``); ``None`` uses every
        b-value from ``b_min`` up. ``b_min`` and ``b_max`` select whole shells (inclusive), by
        the shell's mean b-value (:func:`group_shells`): a nominal b = 1000 shell whose
        directions report 987-1003 s/mm^2 is used whole with ``b_max=1000``, not split.
        ``b_min=0, b_max=None`` fits every volume.

    Notes
    -----
    Maps (:class:`ADCFit`): ``ADC`` (mm^2/s), ``S0`` (a.u.), ``R2`` (1), ``fitmask`` (1). With
    several directions per shell the ADC is the trace ADC (mean diffusivity for a uniform
    direction set; see the module description). Volumes with non-positive signal get weight 0
    (no logarithm of them is taken). A voxel fails when its data are not finite, fewer than two
    distinct b-values carry positive signal, the ADC lies outside :data:`ADC_BOUNDS_MM2_S`, or
    S0 is not finite.
    """

    param_names = ("ADC", "S0")
    parameter_units: ClassVar[dict[str, str]] = {"ADC": "mm^2/s", "S0": "a.u."}
    fit_class = ADCFit
    volumes = ("bvals_s_per_mm2", "b-values")
    reference = _REFERENCE
    algorithm = _ALGORITHM

    bvals_s_per_mm2 = setting("b-value of every volume (s/mm^2), read-only array.")
    b_min = setting("Smallest b-value used (s/mm^2).")
    b_max = setting("Largest b-value used (s/mm^2), or None (no upper limit).")

    def __init__(
        self,
        bvals_s_per_mm2: ArrayLike,
        *,
        b_min: float = 200.0,
        b_max: float | None = 1000.0,
    ) -> None:
        b = as_bvalues(bvals_s_per_mm2)
        b_min = float(b_min)
        b_max_f = np.inf if b_max is None else float(b_max)
        if not np.isfinite(b_min) or b_min < 0:
            raise QMRIInputError(f"b_min must be >= 0 (s/mm^2), got {b_min:g}")
        if b_max_f < b_min:
            raise QMRIInputError(f"b_max ({b_max_f:g}) is smaller than b_min ({b_min:g})")
        shells, shell_of = group_shells(b)
        used = ((shells >= b_min) & (shells <= b_max_f))[shell_of]
        if np.unique(b[used]).size < 2 or group_shells(b[used])[0].size < 2:
            raise QMRIInputError(
                f"an ADC fit needs at least 2 different b-values in [{b_min:g}, {b_max_f:g}] "
                f"s/mm^2, got {sorted(set(b[used].tolist()))}"
            )
        used.flags.writeable = False
        self._bvals_s_per_mm2 = b
        self._b_min = b_min
        self._b_max = None if b_max is None else b_max_f
        self._used = used

    @property
    def used_volumes(self) -> NDArray[np.bool_]:
        """Boolean selector of the volumes that enter the fit, read-only."""
        return self._used

    @property
    def options(self) -> dict[str, Any]:
        return {
            "bvals_s_per_mm2": self._bvals_s_per_mm2.tolist(),
            "b_min": self._b_min,
            "b_max": self._b_max,
            "volumes_used": int(self._used.sum()),
            "adc_bounds_mm2_s": list(ADC_BOUNDS_MM2_S),
        }

    def predict(self, params: Mapping[str, ArrayLike]) -> NDArray[np.float64]:
        """Signal of every volume, shape ``(..., n_b)``, of the ``"ADC"`` (mm^2/s) and ``"S0"``
        (a.u.) maps in ``params`` (e.g. :attr:`ADCFit.params`); every volume, also those
        outside ``[b_min, b_max]``."""
        adc, s0 = model_params(params, "ADC", "S0")
        return adc_signal(s0, adc, self._bvals_s_per_mm2)

    def _kernel(self) -> Kernel:
        used = self._used
        b = self._bvals_s_per_mm2[used]
        all_used = bool(used.all())
        shells, _, member, n_dirs = shell_members(b)
        one_per_shell = shells.size == b.size

        def kernel(y_all: NDArray[np.float64]) -> KernelOutput:
            y = y_all if all_used else y_all[:, used]
            if one_per_shell:
                log_s0, adc, ok = loglinear_wls(y, b)
            else:  # geometric mean over the directions of each shell, then a WLS line
                # (R2 on the direction-averaged, trace, signal of each shell)
                log_mean, complete, y = shell_average(y, member, n_dirs)
                with np.errstate(over="ignore"):
                    w = np.where(complete, n_dirs * np.exp(2.0 * log_mean), 0.0)
                log_s0, slope, ok = weighted_line_fit(shells, log_mean, w)
                adc = -slope
            with np.errstate(over="ignore", invalid="ignore"):
                s0 = np.exp(log_s0)
                pred = s0[:, None] * np.exp(-(b if one_per_shell else shells) * adc[:, None])
            ok &= (adc >= ADC_BOUNDS_MM2_S[0]) & (adc <= ADC_BOUNDS_MM2_S[1])
            ok &= np.isfinite(s0) & (s0 > 0)
            return KernelOutput({"ADC": adc, "S0": s0}, r_squared(y, pred), ok)

        return kernel
