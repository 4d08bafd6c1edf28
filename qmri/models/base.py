"""What every qmri model shares: the :class:`Model` base, the :class:`ModelFit` result and the
masked, chunked voxel loop.

A model is configured once from acquisition parameters (flip angles, echo times, b-values) and
is never changed by fitting, as in dipy's ``reconst``. ``model.fit(data, mask=...)`` takes data
with the measurements on the last axis, gathers the voxels inside the mask into a
``(n_vox, n_obs)`` array, hands it chunk by chunk to a vectorized *kernel* (a pure function on
2-D arrays) and scatters the kernel's per-voxel parameters back into spatial maps with NaN
everywhere the fit failed or that lies outside the mask (:func:`fit_voxelwise`).

A new model is a subclass of :class:`Model` that declares

* ``param_names`` and ``parameter_units`` (map names and units, data contract section 4),
* ``volumes`` (the attribute holding one acquisition value per volume, and its name in error
  messages), ``fit_class`` (its :class:`ModelFit` subclass, maps as properties made with
  :func:`map_property`) and ``reference``,
* its constructor settings as read-only attributes (:func:`setting`), from which
  ``__repr__`` is built,
* the property ``options`` (the settings recorded in the output sidecar) and either
  ``algorithms`` (the fit method in words for each value of its ``method`` setting) or the
  property ``algorithm``,
* ``_kernel()`` (the vectorized fit of a chunk) and ``predict(params, **voxel_inputs)``.

:meth:`Model.fit` does the rest: it checks the data, runs :func:`fit_voxelwise` and wraps its
output into the Fit (:meth:`Model._make_fit`).

The checks of the inputs (:func:`as_float_vector`, :func:`as_bvalues`, :func:`check_choice`,
:func:`check_data`, ...) live in :mod:`qmri.models.checks` and are re-exported here.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, NamedTuple, TypeVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from qmri.errors import QMRIInputError
from qmri.fitting import DEFAULT_CHUNK_SIZE, chunked
from qmri.models.checks import (
    as_bvalues,
    as_float_vector,
    as_number,
    check_choice,
    check_data,
    model_params,
)
from qmri.progress import chunk_progress

__all__ = [
    "KernelOutput",
    "Model",
    "ModelFit",
    "VoxelwiseResult",
    "as_bvalues",
    "as_float_vector",
    "as_number",
    "check_choice",
    "check_data",
    "fit_voxelwise",
    "map_property",
    "model_params",
    "setting",
]

#: Maps every fit has besides its parameters: goodness of fit and the fit-success mask.
QUALITY_MAPS = ("R2", "fitmask")


def map_property(name: str, doc: str) -> Any:
    """A read-only :class:`ModelFit` property returning the map ``name``.

    Parameters
    ----------
    name : str
        Key in :attr:`ModelFit.maps` (contract naming, e.g. ``"T1"``).
    doc : str
        Docstring of the property: the quantity and its unit.

    Returns
    -------
    property
        Raises AttributeError when the fit has no such map (e.g. ``noisefloor`` of a fit
        without a noise floor), so ``hasattr(fit, ...)`` tells whether it was fitted.
    """

    def get(self: ModelFit) -> np.ndarray:
        try:
            return self.maps[name]
        except KeyError:
            raise AttributeError(
                f"this {type(self).__name__} has no {name!r} map (maps: {', '.join(self.maps)})"
            ) from None

    return property(get, doc=doc)


@dataclass(frozen=True)
class ModelFit:
    """Maps and provenance of one model fit.

    Every model has a subclass that also exposes each map as a read-only property named with
    its unit (``VFAFit.t1_s`` is ``maps["T1"]``, see :func:`map_property`): a float32 array of
    the data's spatial shape, NaN where the fit failed or outside the mask (``fitmask``:
    uint8). :attr:`params` holds the parameter maps that the model's ``predict`` takes.

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

    r2 = map_property("R2", "Goodness of fit (1; 0..1 on the signal scale).")
    fitmask = map_property("fitmask", "Fit success (uint8; 1 = fitted, 0 = failed or not fitted).")

    def __getitem__(self, name: str) -> np.ndarray:
        return self.maps[name]

    @property
    def shape(self) -> tuple[int, ...]:
        """Spatial shape of the maps."""
        return self.maps["fitmask"].shape

    @property
    def parameter_names(self) -> tuple[str, ...]:
        """Names of the parameter maps (everything except ``R2`` and ``fitmask``)."""
        return tuple(k for k in self.maps if k not in QUALITY_MAPS)

    @property
    def params(self) -> dict[str, np.ndarray]:
        """Parameter maps by name (everything except ``R2`` and ``fitmask``), in the units of
        :attr:`units`: what the model's ``predict`` takes, so that
        ``model.predict(model.fit(data).params)`` is the fitted signal."""
        return {k: v for k, v in self.maps.items() if k not in QUALITY_MAPS}


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
    extra : dict of str to (n, ...) ndarray, optional
        Per-voxel outputs besides the maps (e.g. the diffusion tensor), returned by
        :func:`fit_voxelwise` when asked for with ``outputs``; they do not decide success.
    """

    params: dict[str, NDArray[np.float64]]
    r2: NDArray[np.float64]
    ok: NDArray[np.bool_]
    converged: NDArray[np.bool_] | None = None
    extra: dict[str, NDArray[np.float64]] | None = None


class VoxelwiseResult(NamedTuple):
    """What :func:`fit_voxelwise` returns (unpacks as ``maps, n_fitted, n_failed, n_unconverged``).

    Attributes
    ----------
    maps : dict of str to ndarray
        Parameter maps and ``R2`` (float32, NaN where not fitted), ``fitmask`` (uint8), and
        any requested extra outputs (float32, spatial shape plus their own).
    n_fitted, n_failed, n_unconverged : int
        See :class:`ModelFit`.
    """

    maps: dict[str, np.ndarray]
    n_fitted: int
    n_failed: int
    n_unconverged: int


#: ``kernel(signal (n, n_obs) float64, **voxel_inputs (n,) float64) -> KernelOutput``
Kernel = Callable[..., KernelOutput]


class _Setting:
    """Read-only model setting stored by the constructor as ``self._<name>``."""

    def __init__(self, doc: str) -> None:
        self.__doc__ = doc
        self._attr = ""
        self._name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name
        self._attr = "_" + name

    def __get__(self, obj: object, objtype: type | None = None) -> Any:
        return self if obj is None else getattr(obj, self._attr)

    def __set__(self, obj: object, value: object) -> None:
        raise AttributeError(
            f"{type(obj).__name__}.{self._name} is read-only: configure a new model instead"
        )


def setting(doc: str) -> Any:
    """A read-only model attribute for a constructor setting (stored as ``self._<name>``).

    Parameters
    ----------
    doc : str
        Docstring of the attribute: the setting and its unit.

    Examples
    --------
    >>> class Toy(Model):
    ...     tr_s = setting("Repetition time (s).")
    ...     def __init__(self, tr_s: float) -> None:
    ...         self._tr_s = float(tr_s)
    >>> Toy(0.01)
    Toy(tr_s=0.01)
    """
    return _Setting(doc)


#: The Fit class of a model.
FitT = TypeVar("FitT", bound=ModelFit)


def _repr_value(value: object) -> str:
    return repr(value.tolist()) if isinstance(value, np.ndarray) else repr(value)


class Model(Generic[FitT]):
    """Base class of the qmri models (dipy ``reconst`` style).

    A model is configured once from acquisition parameters and options, validated by its
    constructor; :meth:`fit` fits every voxel of a data array at once (vectorized, in chunks)
    and returns a :attr:`fit_class` instance. Fitting never changes the model.

    Subclasses declare the class attributes below, their constructor settings with
    :func:`setting`, the property :attr:`options`, :attr:`algorithms` or the property
    :attr:`algorithm`, the method ``_kernel()`` and ``predict(params, **voxel_inputs)``.

    Attributes
    ----------
    param_names : tuple of str
        Parameter maps of a fit, in map order (a subclass may make it a property when it
        depends on the settings).
    parameter_units : dict of str to str
        Unit of every parameter map the model can produce.
    fit_class : type
        The :class:`ModelFit` subclass :meth:`fit` returns.
    volumes : (str, str)
        Attribute holding one acquisition value per volume (e.g. ``"echo_times_s"``) and its
        name in error messages (``"echo times"``).
    reference : str
        Citation of the model / method, for the output sidecar.
    algorithms : dict of str to str
        The fit method in words by the value of the model's ``method`` setting (what
        :attr:`algorithm` returns); empty for a model that defines :attr:`algorithm` itself.
    default_chunk_size : int
        Voxels per kernel call when :meth:`fit` is not given ``chunk_size``.
    fit_outputs : dict of str to tuple of int
        Per-voxel kernel outputs besides the maps (``KernelOutput.extra``) by their trailing
        shape; each is passed to :attr:`fit_class` as the field of that name.
    """

    param_names: ClassVar[tuple[str, ...]] = ()
    parameter_units: ClassVar[Mapping[str, str]] = {}
    fit_class: type[FitT]
    volumes: ClassVar[tuple[str, str]] = ("", "volumes")
    reference: ClassVar[str] = ""
    algorithms: ClassVar[Mapping[str, str]] = {}
    default_chunk_size: ClassVar[int] = DEFAULT_CHUNK_SIZE
    fit_outputs: ClassVar[Mapping[str, tuple[int, ...]]] = {}
    #: The data are magnitude images: a voxel with a negative sample (impossible for a
    #: magnitude, so damaged or wrongly scaled data) fails instead of being fitted.
    magnitude_data: ClassVar[bool] = False

    @property
    def units(self) -> dict[str, str]:
        """Unit of every output map (data contract section 4), ``R2`` and ``fitmask`` included."""
        units = {name: self.parameter_units[name] for name in self.param_names}
        return {**units, "R2": "1", "fitmask": "1"}

    @property
    def n_volumes(self) -> int:
        """Number of volumes the data must have on its last axis."""
        return len(getattr(self, self.volumes[0]))

    @property
    def options(self) -> dict[str, Any]:
        """Every model setting (JSON-serialisable), recorded in the fit and its sidecar."""
        raise NotImplementedError

    @property
    def algorithm(self) -> str:
        """Fit method in words, for the output sidecar: :attr:`algorithms` of ``method``."""
        if not self.algorithms:
            raise NotImplementedError(f"{type(self).__name__} declares no algorithms")
        return self.algorithms[self.method]  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        names = [
            p.name
            for p in inspect.signature(type(self).__init__).parameters.values()
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
        settings = ", ".join(f"{n}={_repr_value(getattr(self, n))}" for n in names)
        return f"{type(self).__name__}({settings})"

    def _kernel(self) -> Kernel:
        """The vectorized fit of one chunk of voxels (see :func:`fit_voxelwise`)."""
        raise NotImplementedError

    def fit(
        self, data: ArrayLike, *, mask: ArrayLike | None = None, chunk_size: int | None = None
    ) -> FitT:
        """Fit every voxel.

        Parameters
        ----------
        data : array_like, shape (..., n_volumes)
            Images with one volume per acquisition value (flip angle, echo time, b-value, ...)
            on the last axis, in the order the model was given them; a single voxel may be
            1-D. Integer or float data (converted to float64 one chunk at a time).
        mask : array_like, shape data.shape[:-1], optional
            Voxels to fit (non-zero); default all.
        chunk_size : int, optional
            Voxels fitted together, default :attr:`default_chunk_size` (speed and memory only;
            results do not depend on it).

        Returns
        -------
        ModelFit
            An instance of :attr:`fit_class`: the maps of :attr:`param_names` in the units of
            :attr:`units`, ``R2`` and ``fitmask``.
        """
        return self._fit(data, mask=mask, chunk_size=chunk_size)

    def _fit(
        self,
        data: ArrayLike,
        *,
        mask: ArrayLike | None,
        chunk_size: int | None,
        voxel_inputs: Mapping[str, ArrayLike | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> FitT:
        """:meth:`fit` with the model's voxel inputs (e.g. ``b1``) and fit-time options."""
        arr = check_data(data, self.n_volumes, self.volumes[1])
        result = fit_voxelwise(
            self._kernel(),
            arr,
            self.param_names,
            mask=mask,
            voxel_inputs=voxel_inputs,
            chunk_size=self.default_chunk_size if chunk_size is None else chunk_size,
            outputs=self.fit_outputs,
            nonnegative=self.magnitude_data,
        )
        return self._make_fit(result, options=options)

    def _make_fit(
        self,
        result: VoxelwiseResult,
        *,
        options: dict[str, Any] | None = None,
        algorithm: str | None = None,
    ) -> FitT:
        """Wrap the output of :func:`fit_voxelwise` into a :attr:`fit_class` instance.

        ``options`` and ``algorithm`` default to the model's :attr:`options` and
        :attr:`algorithm`; the arrays of :attr:`fit_outputs` move from the maps to the fields
        of the same name.
        """
        maps = dict(result.maps)
        extra = {name: maps.pop(name) for name in self.fit_outputs}
        return self.fit_class(
            maps=maps,
            units=self.units,
            n_fitted=result.n_fitted,
            n_failed=result.n_failed,
            algorithm=self.algorithm if algorithm is None else algorithm,
            reference=self.reference,
            options=self.options if options is None else options,
            n_unconverged=result.n_unconverged,
            **extra,
        )


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
    outputs: Mapping[str, tuple[int, ...]] | None = None,
    nonnegative: bool = False,
) -> VoxelwiseResult:
    """Run ``kernel`` on the voxels in ``mask``, chunk by chunk, and scatter the results back.

    Voxels whose signal (or any voxel input) is not finite are failures and are not passed to
    the kernel, and so are voxels with a negative sample when ``nonnegative``. No Python loop
    runs over voxels: the kernel receives up to ``chunk_size``
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
    outputs : mapping of str to tuple of int, optional
        Extra kernel outputs (``KernelOutput.extra``) by their trailing shape, scattered like
        the maps (float32, NaN where the fit failed) into ``maps`` under their names.
    nonnegative : bool, default False
        The signal is a magnitude: a voxel with any sample below 0 fails (NaN, ``fitmask`` 0).

    Returns
    -------
    VoxelwiseResult
        ``(maps, n_fitted, n_failed, n_unconverged)``: parameter maps and ``R2`` (float32, NaN
        where not fitted), ``fitmask`` (uint8), and the ``outputs``.
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
    extra_out = {
        name: np.full((n_total, *shape), np.nan, dtype=np.float32)
        for name, shape in (outputs or {}).items()
    }
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
        if nonnegative:
            good &= ~(y < 0).any(axis=1)
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
        for name, arr in extra_out.items():
            arr[sel] = (res.extra or {})[name][ok]
        fitmask[sel] = 1
        if res.converged is not None:
            n_unconverged += int(np.count_nonzero(ok & ~res.converged))
    maps: dict[str, np.ndarray] = {name: arr.reshape(spatial) for name, arr in out.items()}
    maps["fitmask"] = fitmask.reshape(spatial)
    for name, arr in extra_out.items():
        maps[name] = arr.reshape(*spatial, *arr.shape[1:])
    n_fitted = int(voxels.size)
    n_failed = n_fitted - int(np.count_nonzero(fitmask))
    return VoxelwiseResult(maps, n_fitted, n_failed, n_unconverged)
