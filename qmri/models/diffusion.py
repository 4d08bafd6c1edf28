r"""Apparent diffusion coefficient (ADC) from diffusion-weighted images.

.. math:: S(b) = S_0 \, e^{-b \, \mathrm{ADC}}

fitted by weighted linear least squares on :math:`\ln S` (weights :math:`S^2`,
:func:`qmri.fitting.loglinear_wls`) over the volumes with ``b_min <= b <= b_max``. Raising
``b_min`` to about 200 s/mm^2 leaves out the fast pseudo-diffusion (perfusion, IVIM) signal, so
the ADC approaches the tissue diffusion coefficient; ``S0`` is then the intercept extrapolated to
b = 0, not the measured b = 0 signal.

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

from typing import ClassVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from qmri.errors import QMRIInputError
from qmri.fitting import DEFAULT_CHUNK_SIZE, loglinear_wls, r_squared, weighted_line_fit
from qmri.models.base import KernelOutput, ModelFit, as_float_vector, check_data, fit_voxelwise

__all__ = ["ADC_BOUNDS_MM2_S", "SHELL_TOLERANCE", "ADCModel", "adc_signal", "group_shells"]

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


class ADCModel:
    """Mono-exponential ADC model.

    Parameters
    ----------
    bvals_s_per_mm2 : sequence of float
        b-value of every volume (s/mm^2), >= 0; repeated values (several directions) allowed.
    b_min : float, default 0
        Smallest b-value used (s/mm^2).
    b_max : float, optional
        Largest b-value used (s/mm^2); default: all. ``b_min`` and ``b_max`` select volumes
        (inclusive) before shells are formed; e.g. ``b_min=200`` for a perfusion-insensitive ADC.

    Notes
    -----
    Maps: ``ADC`` (mm^2/s), ``S0`` (a.u.), ``R2`` (1), ``fitmask`` (1). With several
    directions per shell the ADC is the trace ADC (mean diffusivity for a uniform direction set;
    see the module description). Volumes with
    non-positive signal get weight 0 (no logarithm of them is taken). A voxel fails when its data
    are not finite, fewer than two distinct b-values carry positive signal, the ADC lies outside
    :data:`ADC_BOUNDS_MM2_S`, or S0 is not finite.
    """

    param_names: ClassVar[tuple[str, str]] = ("ADC", "S0")

    def __init__(
        self,
        bvals_s_per_mm2: ArrayLike,
        *,
        b_min: float = 0.0,
        b_max: float | None = None,
    ) -> None:
        b = as_float_vector(bvals_s_per_mm2, "b-values")
        if np.any(b < 0):
            raise QMRIInputError(f"b-values must be >= 0 (s/mm^2), got {b.tolist()}")
        if b.max() > 1e5:
            raise QMRIInputError(f"b-value of {b.max():g} is implausible: give b-values in s/mm^2")
        b_min = float(b_min)
        b_max_f = np.inf if b_max is None else float(b_max)
        if not np.isfinite(b_min) or b_min < 0:
            raise QMRIInputError(f"b_min must be >= 0 (s/mm^2), got {b_min:g}")
        if b_max_f < b_min:
            raise QMRIInputError(f"b_max ({b_max_f:g}) is smaller than b_min ({b_min:g})")
        used = (b >= b_min) & (b <= b_max_f)
        if np.unique(b[used]).size < 2 or group_shells(b[used])[0].size < 2:
            raise QMRIInputError(
                f"an ADC fit needs at least 2 different b-values in [{b_min:g}, {b_max_f:g}] "
                f"s/mm^2, got {sorted(set(b[used].tolist()))}"
            )
        used.flags.writeable = False
        self._bvals = b
        self._b_min = b_min
        self._b_max = None if b_max is None else b_max_f
        self._used = used

    @property
    def bvals_s_per_mm2(self) -> NDArray[np.float64]:
        """b-value of every volume (s/mm^2), read-only."""
        return self._bvals

    @property
    def b_min(self) -> float:
        return self._b_min

    @property
    def b_max(self) -> float | None:
        return self._b_max

    @property
    def used_volumes(self) -> NDArray[np.bool_]:
        """Boolean selector of the volumes that enter the fit."""
        return self._used

    @property
    def units(self) -> dict[str, str]:
        """Unit of every output map (data contract section 4)."""
        return {"ADC": "mm^2/s", "S0": "a.u.", "R2": "1", "fitmask": "1"}

    def __repr__(self) -> str:
        return (
            f"ADCModel(bvals_s_per_mm2={self._bvals.tolist()}, b_min={self._b_min}, "
            f"b_max={self._b_max})"
        )

    def predict(self, adc_mm2_s: ArrayLike, s0: ArrayLike) -> np.ndarray:
        """Signal of every volume for given ADC (mm^2/s) and S0, shape ``(..., n_b)``."""
        return adc_signal(s0, adc_mm2_s, self._bvals)

    def fit(
        self,
        data: ArrayLike,
        *,
        mask: ArrayLike | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> ModelFit:
        """Fit ADC and S0 in every voxel.

        Parameters
        ----------
        data : array_like, shape (..., n_b)
            Diffusion-weighted magnitude images, one volume per b-value (a voxel may be 1-D).
        mask : array_like, shape data.shape[:-1], optional
            Voxels to fit (non-zero); default all.
        chunk_size : int
            Voxels fitted together (memory bound only).

        Returns
        -------
        ModelFit
            Maps ``ADC`` (mm^2/s), ``S0`` (a.u.), ``R2``, ``fitmask``.
        """
        arr = check_data(data, self._bvals.size, "b-values")
        used = self._used
        b = self._bvals[used]
        all_used = bool(used.all())
        shells, shell_of = group_shells(b)
        one_per_shell = shells.size == b.size
        member = np.zeros((b.size, shells.size))
        member[np.arange(b.size), shell_of] = 1.0
        n_dirs = member.sum(axis=0)

        def kernel(y_all: NDArray[np.float64]) -> KernelOutput:
            y = y_all if all_used else y_all[:, used]
            if one_per_shell:
                log_s0, adc, ok = loglinear_wls(y, b)
            else:  # geometric mean over the directions of each shell, then a WLS line
                pos = y > 0
                log_mean = np.einsum(
                    "ij,jk->ik", np.log(y, out=np.zeros_like(y), where=pos), member / n_dirs
                )
                complete = np.einsum("ij,jk->ik", (~pos).astype(np.float64), member) == 0
                with np.errstate(over="ignore"):
                    w = np.where(complete, n_dirs * np.exp(2.0 * log_mean), 0.0)
                log_s0, slope, ok = weighted_line_fit(shells, log_mean, w)
                adc = -slope
                # goodness of fit on the direction-averaged (trace) signal of each shell
                with np.errstate(over="ignore"):
                    y = np.where(
                        complete, np.exp(log_mean), np.einsum("ij,jk->ik", y, member / n_dirs)
                    )
            with np.errstate(over="ignore", invalid="ignore"):
                s0 = np.exp(log_s0)
                pred = s0[:, None] * np.exp(-(b if one_per_shell else shells) * adc[:, None])
            ok &= (adc >= ADC_BOUNDS_MM2_S[0]) & (adc <= ADC_BOUNDS_MM2_S[1])
            ok &= np.isfinite(s0) & (s0 > 0)
            return KernelOutput({"ADC": adc, "S0": s0}, r_squared(y, pred), ok)

        maps, n_fitted, n_failed, _ = fit_voxelwise(
            kernel, arr, self.param_names, mask=mask, chunk_size=chunk_size
        )
        return ModelFit(
            maps=maps,
            units=self.units,
            n_fitted=n_fitted,
            n_failed=n_failed,
            algorithm=_ALGORITHM,
            reference=_REFERENCE,
            options={
                "bvals_s_per_mm2": self._bvals.tolist(),
                "b_min": self._b_min,
                "b_max": self._b_max,
                "volumes_used": int(used.sum()),
                "adc_bounds_mm2_s": list(ADC_BOUNDS_MM2_S),
            },
        )
