"""What every qmri model shares: the :class:`ModelFit` result and the masked, chunked voxel loop.

A model is configured once from acquisition parameters (flip angles, echo times, b-values) and
is never changed by fitting, as in dipy's ``reconst``. ``model.fit(data, mask=...)`` takes data
with the measurements on the last axis, gathers the voxels inside the mask into a
``(n_vox, n_obs)`` array, hands it chunk by chunk to a vectorized *kernel* (a pure function on
2-D arrays) and scatters the kernel's per-voxel parameters back into spatial maps with NaN
everywhere the fit failed or that lies outside the mask (:func:`fit_voxelwise`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from qmri.errors import QMRIInputError
from qmri.fitting import DEFAULT_CHUNK_SIZE, chunked
from qmri.progress import chunk_progress

__all__ = [
    "KernelOutput",
    "ModelFit",
    "as_float_vector",
    "check_data",
    "fit_voxelwise",
]


@dataclass(frozen=True)
class ModelFit:
    """Maps and provenance of one model fit.

    Attributes
    ----------
    maps : dict of str to ndarray
        Spatial maps with the data's spatial shape (``data.shape[:-1]``): every model parameter
        as float32 in the units of :attr:`units` (NaN outside the mask and where the fit
        failed), ``"R2"`` (float32 goodness of fit 0..1 on the signal scale, NaN likewise) and
        ``"fitmask"`` (uint8, 1 where the fit succeeded, 0 elsewhere).
    units : dict of str to str
        Unit of every map (data contract section 4): ``"s"``, ``"mm^2/s"``, ``"a.u."``, ``"1"``.
    n_fitted : int
        Voxels that were fitted: inside the mask (all voxels without a mask), failures included.
    n_failed : int
        Fitted voxels whose fit failed (non-finite input, undetermined fit, or parameters
        outside their physical bounds); ``n_fitted - n_failed`` equals ``fitmask.sum()``.
    algorithm : str
        Fit method in words, for the output sidecar.
    reference : str
        Citation of the model / method.
    options : dict
        Every model option and fit setting (JSON-serialisable), for the output sidecar.
    n_unconverged : int
        Successful voxels whose iterative fit reached the iteration limit before meeting the
        convergence tolerance (kept: each accepted step lowers the cost); 0 for closed-form fits.
    """

    maps: dict[str, np.ndarray]
    units: dict[str, str]
    n_fitted: int
    n_failed: int
    algorithm: str
    reference: str
    options: dict[str, Any] = field(default_factory=dict)
    n_unconverged: int = 0

    def __getitem__(self, name: str) -> np.ndarray:
        return self.maps[name]

    @property
    def shape(self) -> tuple[int, ...]:
        """Spatial shape of the maps."""
        return self.maps["fitmask"].shape

    @property
    def parameter_names(self) -> tuple[str, ...]:
        """Names of the parameter maps (everything except ``R2`` and ``fitmask``)."""
        return tuple(k for k in self.maps if k not in ("R2", "fitmask"))


class KernelOutput(NamedTuple):
    """What a fitting kernel returns for a batch of ``n`` voxels.

    Attributes
    ----------
    params : dict of str to (n,) ndarray
        Parameter estimates in output units.
    r2 : (n,) ndarray
        Goodness of fit.
    ok : (n,) ndarray of bool
        Fit succeeded and parameters are inside their physical bounds.
    converged : (n,) ndarray of bool, optional
        For iterative fits; None for closed-form fits.
    """

    params: dict[str, NDArray[np.float64]]
    r2: NDArray[np.float64]
    ok: NDArray[np.bool_]
    converged: NDArray[np.bool_] | None = None


#: ``kernel(signal (n, n_obs) float64, **voxel_inputs (n,) float64) -> KernelOutput``
Kernel = Callable[..., KernelOutput]


def as_float_vector(values: ArrayLike, name: str) -> NDArray[np.float64]:
    """Return ``values`` as a read-only, finite, 1-D float64 array, else QMRIInputError."""
    try:
        arr = np.array(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise QMRIInputError(f"{name} must be a list of numbers, got {values!r}") from None
    if arr.size == 0:
        raise QMRIInputError(f"no {name} were given")
    if not np.isfinite(arr).all():
        raise QMRIInputError(f"{name} must be finite numbers, got {arr.tolist()}")
    arr.flags.writeable = False
    return arr


def check_data(data: ArrayLike, n_expected: int, what: str) -> np.ndarray:
    """Check that ``data`` is real, numeric and has ``n_expected`` volumes on its last axis.

    Parameters
    ----------
    data : array_like, shape (..., n_obs)
        Image data, measurements last (a single voxel may be 1-D).
    n_expected : int
        Number of acquisition parameters the model was built with.
    what : str
        Their name in the error message, e.g. ``"flip angles"``.

    Returns
    -------
    ndarray
        ``data`` as an array (not copied or converted).
    """
    arr = np.asarray(data)
    if arr.ndim == 0:
        raise QMRIInputError("data must have at least one axis (the measurements)")
    if arr.dtype == np.bool_ or not (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    ):
        raise QMRIInputError(f"data must be real numbers, got dtype {arr.dtype}")
    if arr.shape[-1] != n_expected:
        raise QMRIInputError(
            f"data has {arr.shape[-1]} volumes but {n_expected} {what} were given"
        )
    return arr


def _spatial_array(values: ArrayLike, shape: tuple[int, ...], name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.shape != shape:
        raise QMRIInputError(
            f"{name} has shape {arr.shape} but the data's spatial shape is {shape}"
        )
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_) or np.iscomplexobj(arr):
        raise QMRIInputError(f"{name} must be real numbers, got dtype {arr.dtype}")
    return arr


def _mask_flat(mask: ArrayLike | None, shape: tuple[int, ...]) -> NDArray[np.bool_] | None:
    if mask is None:
        return None
    arr = _spatial_array(mask, shape, "mask")
    if arr.dtype == np.bool_:
        return arr.reshape(-1)
    flat = arr.reshape(-1)
    return (flat != 0) & ~np.isnan(flat) if np.issubdtype(arr.dtype, np.floating) else flat != 0


def _read_only(arr: np.ndarray) -> np.ndarray:
    """A read-only view: kernels may get the caller's own data, which must never change."""
    view = arr.view()
    view.flags.writeable = False
    return view


def fit_voxelwise(
    kernel: Kernel,
    data: np.ndarray,
    param_names: Sequence[str],
    *,
    mask: ArrayLike | None = None,
    voxel_inputs: Mapping[str, ArrayLike] | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    desc: str | None = None,
) -> tuple[dict[str, np.ndarray], int, int, int]:
    """Run ``kernel`` on the voxels in ``mask``, chunk by chunk, and scatter the results back.

    Voxels whose signal (or any voxel input) is not finite are failures and are not passed to
    the kernel. No Python loop runs over voxels: the kernel receives up to ``chunk_size``
    voxels at once.

    Parameters
    ----------
    kernel : callable
        ``kernel(signal, **inputs) -> KernelOutput``; ``signal`` is ``(n, n_obs)`` float64 and
        every input ``(n,)`` float64.
    data : ndarray, shape (..., n_obs)
        Checked data (see :func:`check_data`); converted to float64 one chunk at a time.
    param_names : sequence of str
        Parameter maps the kernel returns (in map order).
    mask : array_like, shape data.shape[:-1], optional
        Voxels to fit (non-zero). Default: all voxels.
    voxel_inputs : mapping of str to array_like, optional
        Extra spatial maps (e.g. ``b1``), each of shape ``data.shape[:-1]``; ``None`` values are
        dropped.
    chunk_size : int, default :data:`~qmri.fitting.DEFAULT_CHUNK_SIZE`
        Voxels per kernel call.
    desc : str, optional
        Name shown in the progress bar / log lines (:func:`qmri.progress.chunk_progress`);
        default: the fitted parameters.

    Returns
    -------
    maps : dict of str to ndarray
        Parameter maps and ``R2`` (float32, NaN where not fitted), ``fitmask`` (uint8).
    n_fitted, n_failed, n_unconverged : int
    """
    desc = desc or "fit " + ", ".join(param_names)
    spatial = data.shape[:-1]
    n_obs = data.shape[-1]
    signal = data.reshape(-1, n_obs)
    n_total = signal.shape[0]
    inputs = {
        name: _spatial_array(value, spatial, name).reshape(-1)
        for name, value in (voxel_inputs or {}).items()
        if value is not None
    }
    inmask = _mask_flat(mask, spatial)
    voxels = np.arange(n_total) if inmask is None else np.flatnonzero(inmask)

    out = {name: np.full(n_total, np.nan, dtype=np.float32) for name in (*param_names, "R2")}
    fitmask = np.zeros(n_total, dtype=np.uint8)
    n_unconverged = 0
    n_chunks = -(-voxels.size // chunk_size)
    parts = chunked(voxels.size, chunk_size)
    for part in chunk_progress(parts, n_chunks=n_chunks, n_voxels=voxels.size, desc=desc):
        ids = voxels[part]
        rows = part if inmask is None else ids  # every voxel: a slice (a view), not a gather
        y = _read_only(signal[rows].astype(np.float64, copy=False))
        extra = {
            name: _read_only(arr[rows].astype(np.float64, copy=False))
            for name, arr in inputs.items()
        }
        good = np.isfinite(np.einsum("ij->i", y))  # NaN/inf anywhere (or overflow) -> False
        for arr in extra.values():
            good &= np.isfinite(arr)
        if not good.all():
            ids, y = ids[good], y[good]
            extra = {name: arr[good] for name, arr in extra.items()}
        if ids.size == 0:
            continue
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            res = kernel(y, **extra)
        ok = res.ok & np.isfinite(res.r2)
        for name in param_names:
            ok &= np.isfinite(res.params[name])
        sel = ids[ok]
        for name in param_names:
            out[name][sel] = res.params[name][ok]
        out["R2"][sel] = res.r2[ok]
        fitmask[sel] = 1
        if res.converged is not None:
            n_unconverged += int(np.count_nonzero(ok & ~res.converged))
    maps: dict[str, np.ndarray] = {name: arr.reshape(spatial) for name, arr in out.items()}
    maps["fitmask"] = fitmask.reshape(spatial)
    n_fitted = int(voxels.size)
    n_failed = n_fitted - int(np.count_nonzero(fitmask))
    return maps, n_fitted, n_failed, n_unconverged
