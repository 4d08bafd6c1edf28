r"""Diffusion tensor imaging (DTI): FA, MD, AD and RD from multi-direction DWI.

.. math:: \ln S_i = \ln S_0 - b_i\, \mathbf g_i^T \mathbf D\, \mathbf g_i

with the symmetric 3x3 diffusion tensor :math:`\mathbf D` (mm^2/s), b in s/mm^2 and unit
gradient directions :math:`\mathbf g_i`. The seven unknowns (:math:`\ln S_0` and the six
tensor elements) are fitted by linear least squares on :math:`\ln S`, all voxels at once:

* ``"OLS"``: ordinary least squares (one pseudo-inverse shared by all voxels);
* ``"WLS"`` (default): weighted least squares with weights :math:`\hat S_i^2` from the OLS
  prediction, as dipy's ``TensorModel(fit_method="WLS")`` (Salvador et al. 2005; Veraart et al.
  2013): per-voxel 7x7 normal equations, built with ``einsum`` and solved in one batched call.

Eigenvalues :math:`\lambda_1 \ge \lambda_2 \ge \lambda_3` come from
:func:`numpy.linalg.eigvalsh` on the whole batch. Maps: ``FA`` (fractional anisotropy),
``MD = (λ1+λ2+λ3)/3``, ``AD = λ1``, ``RD = (λ2+λ3)/2``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
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
    as_bvalues,
    check_choice,
    map_property,
    model_params,
    setting,
)
from qmri.models.diffusion import ADC_BOUNDS_MM2_S

__all__ = ["B0_THRESHOLD", "DTI_CHUNK_SIZE", "DTIFit", "DTIModel", "tensor_signal"]

_METHODS = ("WLS", "OLS")
#: Voxels per kernel call: with ~65 volumes, chunks of this size keep the temporaries in the CPU
#: cache (about 1.6x faster than 50 000-voxel chunks).
DTI_CHUNK_SIZE = 8192
#: b-values (s/mm^2) at or below this are non-diffusion-weighted (their direction is ignored).
B0_THRESHOLD = 50.0
#: Scale of the design matrix: tensor elements are solved in 1e-3 mm^2/s (well conditioned).
_B_SCALE = 1e-3
#: Tensor elements kept by a fit, Dxx, Dyy, Dzz, Dxy, Dxz, Dyz: their rows and columns, and
#: the element of every tensor entry.
_ELEMENT_ROWS = np.array([0, 1, 2, 0, 0, 1])
_ELEMENT_COLS = np.array([0, 1, 2, 1, 2, 2])
_TENSOR_FROM_ELEMENTS = np.array([[0, 3, 4], [3, 1, 5], [4, 5, 2]])
_ALGORITHMS = {
    "WLS": "log-linear weighted least squares (weights from an OLS prediction, S_hat^2)",
    "OLS": "log-linear ordinary least squares",
}
_REFERENCE = (
    "Basser PJ, Mattiello J, LeBihan D. MR diffusion tensor spectroscopy and imaging. Biophys J "
    "1994;66:259-267. doi:10.1016/S0006-3495(94)80775-1; Veraart J, Sijbers J, Sunaert S, "
    "Leemans A, Jeurissen B. Weighted linear least squares estimation of diffusion MRI "
    "parameters: strengths, limitations, and pitfalls. NeuroImage 2013;81:335-346. "
    "doi:10.1016/j.neuroimage.2013.05.028"
)


def _design(b: NDArray[np.float64], g: NDArray[np.float64]) -> NDArray[np.float64]:
    """Design matrix (n, 7): columns ln S0, Dxx, Dyy, Dzz, Dxy, Dxz, Dyz (scaled b)."""
    gx, gy, gz = g.T
    bs = b * _B_SCALE
    cols = [gx * gx, gy * gy, gz * gz, 2 * gx * gy, 2 * gx * gz, 2 * gy * gz]
    return np.column_stack([np.ones_like(b), *(-bs * c for c in cols)])


def tensor_signal(
    s0: ArrayLike,
    evals_mm2_s: ArrayLike,
    evecs: ArrayLike,
    bvals_s_per_mm2: ArrayLike,
    bvecs: ArrayLike,
) -> np.ndarray:
    r"""Signal :math:`S_0 e^{-b\,\mathbf g^T \mathbf D \mathbf g}` of one tensor per voxel.

    Parameters
    ----------
    s0 : array_like, shape (...)
        Signal at b = 0 (a.u.).
    evals_mm2_s : array_like, shape (..., 3)
        Eigenvalues (mm^2/s).
    evecs : array_like, shape (..., 3, 3)
        Eigenvectors as columns.
    bvals_s_per_mm2 : (n,) array_like
        b-values (s/mm^2).
    bvecs : (n, 3) array_like
        Unit gradient directions.

    Returns
    -------
    ndarray, shape (..., n)
    """
    ev = np.asarray(evecs, dtype=np.float64)
    lam = np.asarray(evals_mm2_s, dtype=np.float64)
    tensor = np.einsum("...ij,...j,...kj->...ik", ev, lam, ev)
    return _tensor_signal(s0, tensor, bvals_s_per_mm2, bvecs)


def _tensor_signal(
    s0: ArrayLike, tensor_mm2_s: ArrayLike, bvals_s_per_mm2: ArrayLike, bvecs: ArrayLike
) -> NDArray[np.float64]:
    """:func:`tensor_signal` of the tensors (..., 3, 3) themselves."""
    tensor = np.asarray(tensor_mm2_s, dtype=np.float64)
    g = np.asarray(bvecs, dtype=np.float64)
    adc = np.einsum("ni,...ij,nj->...n", g, tensor, g)
    b = np.asarray(bvals_s_per_mm2, dtype=np.float64)
    return np.asarray(s0, dtype=np.float64)[..., None] * np.exp(-b * adc)


@dataclass(frozen=True, kw_only=True)
class DTIFit(ModelFit):
    """Result of :meth:`DTIModel.fit`: the scalar maps and the fitted tensor as properties.

    Attributes
    ----------
    tensor_elements_mm2_s : ndarray, shape (..., 6)
        The fitted tensor's elements ``Dxx, Dyy, Dzz, Dxy, Dxz, Dyz`` (mm^2/s), float32; NaN
        where the fit failed or outside the mask. Not a map: not written by the map writers.
    """

    tensor_elements_mm2_s: np.ndarray = field(repr=False)

    fa = map_property("FA", "Fractional anisotropy (1; 0..1).")
    md_mm2_s = map_property("MD", "Mean diffusivity (mm^2/s), mean of the eigenvalues.")
    ad_mm2_s = map_property("AD", "Axial diffusivity (mm^2/s), the largest eigenvalue.")
    rd_mm2_s = map_property("RD", "Radial diffusivity (mm^2/s), mean of the two smaller ones.")
    s0 = map_property("S0", "Signal at b = 0 (a.u.).")

    @property
    def tensor_mm2_s(self) -> np.ndarray:
        """Fitted diffusion tensor (mm^2/s), shape ``(..., 3, 3)``, float32; NaN where failed."""
        return self.tensor_elements_mm2_s[..., _TENSOR_FROM_ELEMENTS]

    @cached_property
    def _eigen(self) -> tuple[np.ndarray, np.ndarray]:
        tensor = self.tensor_mm2_s.astype(np.float64)
        ok = np.isfinite(tensor).all(axis=(-2, -1))
        evals = np.full(tensor.shape[:-1], np.nan, dtype=np.float32)
        evecs = np.full(tensor.shape, np.nan, dtype=np.float32)
        lam, vec = np.linalg.eigh(tensor[ok])  # ascending
        evals[ok] = lam[:, ::-1]
        evecs[ok] = vec[:, :, ::-1]
        return evals, evecs

    @property
    def evals_mm2_s(self) -> np.ndarray:
        """Eigenvalues of the tensor, largest first (mm^2/s), shape ``(..., 3)``, float32.

        Computed from the float32 :attr:`tensor_mm2_s`, so they may differ from ``AD`` and
        the other maps (computed in float64) in the last float32 digit.
        """
        return self._eigen[0]

    @property
    def evecs(self) -> np.ndarray:
        """Unit eigenvectors as columns, in the order of :attr:`evals_mm2_s`, shape
        ``(..., 3, 3)``, float32 (each column's sign is arbitrary)."""
        return self._eigen[1]

    @property
    def params(self) -> dict[str, np.ndarray]:
        """The parameter maps plus ``"tensor"`` (:attr:`tensor_mm2_s`): what
        :meth:`DTIModel.predict` takes."""
        return {**super().params, "tensor": self.tensor_mm2_s}


class DTIModel(Model[DTIFit]):
    """Diffusion tensor model fitted by (weighted) linear least squares on the log signal.

    Parameters
    ----------
    bvals_s_per_mm2 : sequence of float
        b-value of every volume (s/mm^2), >= 0; at least one volume with b <= 50 s/mm^2 or a
        second shell is needed to determine S0.
    bvecs : array_like, shape (n, 3) or (3, n)
        Gradient direction of every volume (FSL ``.bvec`` files are (3, n)); normalised to unit
        length. Directions of volumes with b <= 50 s/mm^2 are ignored (NaN allowed there).
    method : {"WLS", "OLS"}, default "WLS"
        Weighted (weights from an OLS first pass) or ordinary least squares.

    Notes
    -----
    Maps (:class:`DTIFit`): ``FA`` (0..1), ``MD``, ``AD``, ``RD`` (mm^2/s), ``S0`` (a.u.),
    ``R2`` (1, signal scale), ``fitmask`` (1); the fitted tensor is
    :attr:`DTIFit.tensor_mm2_s` (with its eigen-decomposition), not a map. At least 6 non-collinear diffusion directions are required.
    Non-positive samples get weight 0 (WLS) or are replaced by the smallest positive sample of
    the voxel (OLS and the WLS first pass), never passed to a logarithm. A voxel fails when its
    data are not finite, fewer than 7 volumes carry positive signal, an eigenvalue lies outside
    :data:`~qmri.models.diffusion.ADC_BOUNDS_MM2_S` (a noise-dominated, non-positive-definite
    tensor), or FA falls outside 0..1; no eigenvalue is clipped.
    """

    param_names = ("FA", "MD", "AD", "RD", "S0")
    parameter_units: ClassVar[dict[str, str]] = {
        "FA": "1",
        "MD": "mm^2/s",
        "AD": "mm^2/s",
        "RD": "mm^2/s",
        "S0": "a.u.",
    }
    fit_class = DTIFit
    volumes = ("bvals_s_per_mm2", "b-values")
    reference = _REFERENCE
    algorithms = _ALGORITHMS
    default_chunk_size = DTI_CHUNK_SIZE
    fit_outputs: ClassVar[dict[str, tuple[int, ...]]] = {"tensor_elements_mm2_s": (6,)}

    bvals_s_per_mm2 = setting("b-value of every volume (s/mm^2), read-only array.")
    bvecs = setting("Unit gradient directions (n, 3), zero for b <= 50 s/mm^2, read-only array.")
    method = setting('``"WLS"`` or ``"OLS"``.')

    def __init__(
        self, bvals_s_per_mm2: ArrayLike, bvecs: ArrayLike, *, method: str = "WLS"
    ) -> None:
        b = as_bvalues(bvals_s_per_mm2)
        check_choice(method, _METHODS, "DTI method")
        try:
            g = np.array(bvecs, dtype=np.float64)
        except (TypeError, ValueError):
            raise QMRIInputError(
                "b-vectors must be numbers in an (n, 3) or (3, n) array"
            ) from None
        if g.ndim == 2 and g.shape == (3, b.size) and g.shape != (b.size, 3):
            g = g.T
        if g.shape != (b.size, 3):
            raise QMRIInputError(
                f"b-vectors have shape {g.shape} but {b.size} b-values were given "
                "(expected (n, 3) or (3, n))"
            )
        dw = b > B0_THRESHOLD
        g[~dw] = 0.0
        norm = np.linalg.norm(g[dw], axis=1) if dw.any() else np.ones(0)
        if not np.isfinite(g).all() or np.any(norm < 1e-6):
            raise QMRIInputError(
                "every diffusion-weighted volume needs a finite, non-zero b-vector"
            )
        g[dw] /= norm[:, None]
        dirs = g[dw]
        outer = np.column_stack(
            [dirs[:, 0] ** 2, dirs[:, 1] ** 2, dirs[:, 2] ** 2,
             dirs[:, 0] * dirs[:, 1], dirs[:, 0] * dirs[:, 2], dirs[:, 1] * dirs[:, 2]]
        )  # fmt: skip
        rank_dirs = int(np.linalg.matrix_rank(outer, tol=1e-6)) if dirs.size else 0
        if rank_dirs < 6:
            n_unique = np.unique(np.round(np.abs(dirs), 6), axis=0).shape[0] if dirs.size else 0
            raise QMRIInputError(
                "DTI needs at least 6 non-collinear diffusion directions, got "
                f"{n_unique} direction(s) spanning only {rank_dirs} of the 6 tensor elements"
            )
        x = _design(b, g)
        if np.linalg.matrix_rank(x, tol=1e-6) < 7:
            raise QMRIInputError(
                "DTI needs a b = 0 (b <= 50 s/mm^2) volume or a second b-value shell to "
                "determine S0"
            )
        b.flags.writeable = False
        g.flags.writeable = False
        self._bvals_s_per_mm2 = b
        self._bvecs = g
        self._method = method
        self._design = x

    @property
    def options(self) -> dict[str, Any]:
        return {
            "bvals_s_per_mm2": self._bvals_s_per_mm2.tolist(),
            "bvecs": self._bvecs.tolist(),
            "method": self._method,
            "b0_threshold_s_per_mm2": B0_THRESHOLD,
            "eigenvalue_bounds_mm2_s": list(ADC_BOUNDS_MM2_S),
        }

    def predict(self, params: Mapping[str, ArrayLike]) -> NDArray[np.float64]:
        """Signal of every volume, shape ``(..., n)``.

        Parameters
        ----------
        params : mapping of str to array_like
            ``"S0"`` (a.u.) and either ``"tensor"`` (mm^2/s, shape ``S0.shape + (3, 3)``) or
            ``"evals"`` (mm^2/s, ``(..., 3)``) with ``"evecs"`` (eigenvectors as columns,
            ``(..., 3, 3)``); e.g. :attr:`DTIFit.params`.
        """
        (s0,) = model_params(params, "S0")
        if "tensor" in params:
            (tensor,) = model_params(params, "tensor")
        else:
            evals, evecs = model_params(params, "evals", "evecs")
            tensor = np.einsum("...ij,...j,...kj->...ik", evecs, evals, evecs)
        return _tensor_signal(s0, tensor, self._bvals_s_per_mm2, self._bvecs)

    def _kernel(self) -> Kernel:
        x = self._design
        n_obs, n_par = x.shape
        pinv = np.linalg.pinv(x)  # (7, n)
        wls = self._method == "WLS"
        iu = np.triu_indices(n_par)
        # products of design columns, one per upper-triangle element of X^T W X: (n, 28)
        xx = x[:, iu[0]] * x[:, iu[1]]
        tensor_idx = np.array([[1, 4, 5], [4, 2, 6], [5, 6, 3]])

        def kernel(y: NDArray[np.float64]) -> KernelOutput:
            pos = y > 0
            all_pos = bool(pos.all())
            if all_pos:
                n_pos = np.full(y.shape[0], float(n_obs))
                logy = np.log(y)
            else:
                n_pos = np.einsum("ij->i", pos.astype(np.float64))
                floor = np.min(np.where(pos, y, np.inf), axis=1)
                y_safe = np.where(pos, y, floor[:, None])
                logy = np.log(y_safe, out=np.zeros_like(y), where=y_safe > 0)
            beta = np.einsum("ij,kj->ki", pinv, logy)  # OLS (n_vox, 7)
            if wls:
                w = np.exp(2.0 * np.einsum("kj,ij->ki", beta, x))  # S_hat^2
                if not all_pos:
                    w[~pos] = 0.0
                upper = np.einsum("ki,ip->kp", w, xx)
                a = np.empty((y.shape[0], n_par, n_par))
                a[:, iu[0], iu[1]] = upper
                a[:, iu[1], iu[0]] = upper
                w *= logy
                rhs = np.einsum("ki,ij->kj", w, x)
                solvable = np.isfinite(upper).all(axis=1) & (n_pos >= n_par)
                beta = np.full_like(beta, np.nan)
                if solvable.any():
                    try:
                        beta[solvable] = np.linalg.solve(a[solvable], rhs[solvable, :, None])[
                            ..., 0
                        ]
                    except np.linalg.LinAlgError:  # a singular voxel: least squares one by one
                        for k in np.flatnonzero(solvable):
                            beta[k] = np.linalg.lstsq(a[k], rhs[k], rcond=None)[0]
            tensor = beta[:, tensor_idx] * _B_SCALE  # (n_vox, 3, 3), mm^2/s
            ok = np.isfinite(tensor).all(axis=(1, 2)) & (n_pos >= n_par)
            tensor[~ok] = 0.0
            lam = np.linalg.eigvalsh(tensor)  # ascending
            l3, l2, l1 = lam[:, 0], lam[:, 1], lam[:, 2]
            md = (l1 + l2 + l3) / 3.0
            dev = (l1 - md) ** 2 + (l2 - md) ** 2 + (l3 - md) ** 2
            norm2 = l1 * l1 + l2 * l2 + l3 * l3
            fa = np.sqrt(1.5 * dev / norm2)
            s0 = np.exp(beta[:, 0])
            ok &= (l3 >= ADC_BOUNDS_MM2_S[0]) & (l1 <= ADC_BOUNDS_MM2_S[1])
            ok &= (fa >= 0) & (fa <= 1) & np.isfinite(s0)
            pred = np.exp(np.einsum("kj,ij->ki", beta, x))
            r2 = r_squared(y, pred)
            params = {"FA": fa, "MD": md, "AD": l1, "RD": 0.5 * (l2 + l3), "S0": s0}
            extra = {"tensor_elements_mm2_s": tensor[:, _ELEMENT_ROWS, _ELEMENT_COLS]}
            return KernelOutput(params, r2, ok, extra=extra)

        return kernel
