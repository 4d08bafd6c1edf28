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

from typing import ClassVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from qmri.errors import QMRIInputError
from qmri.fitting import r_squared
from qmri.models.base import KernelOutput, ModelFit, as_float_vector, check_data, fit_voxelwise
from qmri.models.diffusion import ADC_BOUNDS_MM2_S

__all__ = ["B0_THRESHOLD", "DTI_CHUNK_SIZE", "DTIModel", "tensor_signal"]

_METHODS = ("WLS", "OLS")
#: Voxels per kernel call: with ~65 volumes, chunks of this size keep the temporaries in the CPU
#: cache (about 1.6x faster than 50 000-voxel chunks).
DTI_CHUNK_SIZE = 8192
#: b-values (s/mm^2) at or below this are non-diffusion-weighted (their direction is ignored).
B0_THRESHOLD = 50.0
#: Scale of the design matrix: tensor elements are solved in 1e-3 mm^2/s (well conditioned).
_B_SCALE = 1e-3
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
    g = np.asarray(bvecs, dtype=np.float64)
    adc = np.einsum("ni,...ij,nj->...n", g, tensor, g)
    b = np.asarray(bvals_s_per_mm2, dtype=np.float64)
    return np.asarray(s0, dtype=np.float64)[..., None] * np.exp(-b * adc)


class DTIModel:
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
    Maps: ``FA`` (0..1), ``MD``, ``AD``, ``RD`` (mm^2/s), ``S0`` (a.u.), ``R2`` (1, signal
    scale), ``fitmask`` (1). At least 6 non-collinear diffusion directions are required.
    Non-positive samples get weight 0 (WLS) or are replaced by the smallest positive sample of
    the voxel (OLS and the WLS first pass), never passed to a logarithm. A voxel fails when its
    data are not finite, fewer than 7 volumes carry positive signal, an eigenvalue lies outside
    :data:`~qmri.models.diffusion.ADC_BOUNDS_MM2_S` (a noise-dominated, non-positive-definite
    tensor), or FA falls outside 0..1; no eigenvalue is clipped.
    """

    param_names: ClassVar[tuple[str, ...]] = ("FA", "MD", "AD", "RD", "S0")

    def __init__(
        self, bvals_s_per_mm2: ArrayLike, bvecs: ArrayLike, *, method: str = "WLS"
    ) -> None:
        b = as_float_vector(bvals_s_per_mm2, "b-values")
        if np.any(b < 0):
            raise QMRIInputError(f"b-values must be >= 0 (s/mm^2), got {b.tolist()}")
        if b.max() > 1e5:
            raise QMRIInputError(f"b-value of {b.max():g} is implausible: give b-values in s/mm^2")
        if method not in _METHODS:
            raise QMRIInputError(f"unknown DTI method {method!r}; use one of: 'WLS', 'OLS'")
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
        self._bvals = b
        self._bvecs = g
        self._method = method
        self._design = x

    @property
    def bvals_s_per_mm2(self) -> NDArray[np.float64]:
        """b-value of every volume (s/mm^2), read-only."""
        return self._bvals

    @property
    def bvecs(self) -> NDArray[np.float64]:
        """Unit gradient directions (n, 3), zero for b <= 50 s/mm^2, read-only."""
        return self._bvecs

    @property
    def method(self) -> str:
        return self._method

    @property
    def units(self) -> dict[str, str]:
        """Unit of every output map (data contract section 4)."""
        return {
            "FA": "1",
            "MD": "mm^2/s",
            "AD": "mm^2/s",
            "RD": "mm^2/s",
            "S0": "a.u.",
            "R2": "1",
            "fitmask": "1",
        }

    def __repr__(self) -> str:
        return f"DTIModel(n_volumes={self._bvals.size}, method={self._method!r})"

    def predict(self, s0: ArrayLike, evals_mm2_s: ArrayLike, evecs: ArrayLike) -> np.ndarray:
        """Signal of every volume for given S0, eigenvalues (mm^2/s) and eigenvectors."""
        return tensor_signal(s0, evals_mm2_s, evecs, self._bvals, self._bvecs)

    def fit(
        self,
        data: ArrayLike,
        *,
        mask: ArrayLike | None = None,
        chunk_size: int = DTI_CHUNK_SIZE,
    ) -> ModelFit:
        """Fit the tensor in every voxel.

        Parameters
        ----------
        data : array_like, shape (..., n)
            Diffusion-weighted magnitude images, one volume per b-value/b-vector.
        mask : array_like, shape data.shape[:-1], optional
            Voxels to fit (non-zero); default all.
        chunk_size : int, default :data:`DTI_CHUNK_SIZE`
            Voxels fitted together (small chunks keep the temporaries in cache).

        Returns
        -------
        ModelFit
            Maps ``FA`` (0..1), ``MD``, ``AD``, ``RD`` (mm^2/s), ``S0`` (a.u.), ``R2``,
            ``fitmask``.
        """
        arr = check_data(data, self._bvals.size, "b-values")
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
            return KernelOutput(params, r2, ok)

        maps, n_fitted, n_failed, _ = fit_voxelwise(
            kernel, arr, self.param_names, mask=mask, chunk_size=chunk_size
        )
        return ModelFit(
            maps=maps,
            units=self.units,
            n_fitted=n_fitted,
            n_failed=n_failed,
            algorithm=_ALGORITHMS[self._method],
            reference=_REFERENCE,
            options={
                "bvals_s_per_mm2": self._bvals.tolist(),
                "bvecs": self._bvecs.tolist(),
                "method": self._method,
                "b0_threshold_s_per_mm2": B0_THRESHOLD,
                "eigenvalue_bounds_mm2_s": list(ADC_BOUNDS_MM2_S),
            },
        )
