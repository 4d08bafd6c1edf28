"""Checks of what a model is given: acquisition vectors, settings, options, data and the
parameter maps of ``predict``.

Every check raises :class:`qmri.errors.QMRIInputError` with a message naming the offending
input; those that return the value return it in the form the models store it (read-only
float64 vectors, floats, float64 maps). :mod:`qmri.models.base` re-exports them for the models.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from qmri.errors import QMRIInputError

__all__ = [
    "as_bvalues",
    "as_float_vector",
    "as_number",
    "check_choice",
    "check_data",
    "model_params",
]


def model_params(params: Mapping[str, ArrayLike], *names: str) -> list[NDArray[np.float64]]:
    """The maps ``names`` of a ``predict`` parameter mapping, as float64 arrays.

    Raises QMRIInputError naming the missing map(s).
    """
    missing = [n for n in names if n not in params]
    if missing:
        raise QMRIInputError(f"predict needs the parameter map(s) {missing}; got {sorted(params)}")
    return [np.asarray(params[n], dtype=np.float64) for n in names]


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


#: Largest plausible b-value (s/mm^2); a larger one was given in other units (s/m^2).
_B_MAX_PLAUSIBLE = 1e5


def as_bvalues(bvals_s_per_mm2: ArrayLike) -> NDArray[np.float64]:
    """Return the b-values of a diffusion series as a read-only 1-D float64 array.

    Parameters
    ----------
    bvals_s_per_mm2 : array_like
        b-value of every volume (s/mm^2).

    Returns
    -------
    (n,) ndarray
        The b-values (s/mm^2), finite and >= 0.

    Raises
    ------
    QMRIInputError
        When they are empty, not finite numbers, negative, or above 1e5 (not in s/mm^2).
    """
    b = as_float_vector(bvals_s_per_mm2, "b-values")
    if np.any(b < 0):
        raise QMRIInputError(f"b-values must be >= 0 (s/mm^2), got {b.tolist()}")
    if b.max() > _B_MAX_PLAUSIBLE:
        raise QMRIInputError(f"b-value of {b.max():g} is implausible: give b-values in s/mm^2")
    return b


def as_number(value: object, what: str, unit: str) -> float:
    """Return ``value`` as a float, else QMRIInputError "``what`` must be a number in ``unit``".

    Parameters
    ----------
    value : object
        A setting given to a model constructor, e.g. TR.
    what, unit : str
        Its name and unit in the error message (``"TR"``, ``"seconds"``).

    Returns
    -------
    float
        ``float(value)``, not yet checked for being finite or in range.
    """
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise QMRIInputError(f"{what} must be a number in {unit}, got {value!r}") from None


def check_choice(value: object, choices: Sequence[str] | Mapping[str, Any], what: str) -> None:
    """Raise QMRIInputError "unknown ``what`` ...; use one of: ..." unless ``value`` is a choice.

    Parameters
    ----------
    value : object
        The option given (e.g. a fit method).
    choices : sequence of str or mapping with str keys
        The accepted values, in the order the message lists them.
    what : str
        The option's name in the message, e.g. ``"VFA method"``.
    """
    if value not in choices:
        names = [repr(c) for c in choices]
        listed = f"use {names[0]}" if len(names) == 1 else "use one of: " + ", ".join(names)
        raise QMRIInputError(f"unknown {what} {value!r}; {listed}")


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
