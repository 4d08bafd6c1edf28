"""Writing and reading the parameter maps of a fit, each with its JSON sidecar.

:func:`write_fit` writes every map of a :class:`qmri.models.ModelFit` as ``PREFIX_<suffix>``
with a sidecar holding what BIDS asks of a quantitative map (``Units``,
``EstimationAlgorithm``, ``EstimationReference``, ``Sources``, the acquisition parameters,
varying ones as arrays) and what qmri adds (every model option, fitted and failed voxel counts,
software versions). :func:`read_fit` gives them back by contract name, for the QC figures.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from qmri.errors import QMRIInputError
from qmri.io import load_nifti, read_data, read_json, save_nifti, sidecar_path
from qmri.paths import BIDS_MAP_SUFFIX, map_suffix
from qmri.provenance import software

if TYPE_CHECKING:
    from qmri.models.base import ModelFit

log = logging.getLogger("qmri")

__all__ = ["FitMaps", "map_path", "param_of_suffix", "read_fit", "write_fit"]

_PARAM_OF_SUFFIX = {suffix: param for param, suffix in BIDS_MAP_SUFFIX.items()}


def map_path(prefix: str | Path, param: str, *, bids_suffixes: bool = True) -> Path:
    """Path of a parameter map: ``PREFIX_<suffix>.nii.gz`` (``T1`` -> ``T1map`` with BIDS
    suffixes, as the workflow writes them; the ``qmri fit`` command keeps ``PREFIX_T1``)."""
    prefix = Path(prefix)
    return prefix.with_name(
        f"{prefix.name}_{map_suffix(param, bids_suffixes=bids_suffixes)}.nii.gz"
    )


def write_fit(
    fit: ModelFit,
    affine: np.ndarray,
    prefix: str | Path,
    *,
    sources: Sequence[Path],
    acquisition: Mapping[str, Any],
    bids_suffixes: bool,
) -> list[Path]:
    """Write every map of a fit as ``PREFIX_<map>.nii.gz`` with a JSON sidecar, atomically.

    Parameters
    ----------
    fit : ModelFit
        Maps in their units; ``fitmask`` is written as uint8, everything else float32.
    affine : (4, 4) ndarray
        Voxel -> RAS world (mm) of the fitted grid.
    prefix : path
        Output prefix (``.../sub-S_ses-T_desc-<fit>`` in the workflow).
    sources : sequence of path
        Input files (recorded as ``Sources``).
    acquisition : mapping
        Acquisition parameters (varying ones as arrays, as BIDS asks for qMRI maps).
    bids_suffixes : bool
        Name maps by their BIDS suffix where one exists (``T1map``; the workflow) or by the
        parameter name (``T1``; the ``qmri fit`` command, data contract section 6).
    """
    written = []
    record = software()
    for name, data in fit.maps.items():
        sidecar = {
            "Description": f"{name} map ({fit.algorithm})",
            "Units": fit.units.get(name, ""),
            "EstimationAlgorithm": fit.algorithm,
            "EstimationReference": fit.reference,
            "ModelOptions": fit.options,
            "Sources": [str(p) for p in sources],
            "SkullStripped": False,
            "FailedVoxels": int(fit.n_failed),
            "FittedVoxels": int(fit.n_fitted),
            **dict(acquisition),
            **record,
        }
        dtype = np.uint8 if name == "fitmask" else np.float32
        path = map_path(prefix, name, bids_suffixes=bids_suffixes)
        written.append(save_nifti(data, affine, path, dtype=dtype, sidecar=sidecar))
    log.info(
        "%s: %d voxels fitted, %d failed (NaN, fitmask 0)",
        Path(prefix).name, fit.n_fitted, fit.n_failed,
    )  # fmt: skip
    return written


class FitMaps:
    """The maps of one fit read back from ``PREFIX_*.nii.gz`` (contract names: ``T1``, ``R2``).

    Attributes
    ----------
    maps : dict of str to ndarray
        Values in their units (float64), ``R2`` and ``fitmask`` last.
    sidecars : dict of str to dict
        Each map's JSON sidecar.
    image : nibabel image
        The grid (shape, affine) the maps share.
    """

    def __init__(self, maps: dict[str, np.ndarray], sidecars: dict[str, dict], image: Any):
        self.maps, self.sidecars, self.image = maps, sidecars, image

    @property
    def units(self) -> dict[str, str]:
        """Unit of every map (the sidecars' ``Units``)."""
        return {name: meta.get("Units", "") for name, meta in self.sidecars.items()}


def read_fit(prefix: str | Path, params: Sequence[str]) -> FitMaps:
    """Read the maps ``params`` (contract names, in this order) written under ``prefix``.

    Raises
    ------
    QMRIInputError
        A map that is not there (naming the file).
    """
    maps, sidecars, image = {}, {}, None
    for name in params:
        path = map_path(prefix, name)
        image = load_nifti(path, ndim=3)
        maps[name] = read_data(image)
        side = sidecar_path(path)
        sidecars[name] = read_json(side) if side.exists() else {}
    if image is None:
        raise QMRIInputError("no map to read", Path(f"{prefix}_*.nii.gz"))
    return FitMaps(maps, sidecars, image)


def param_of_suffix(suffix: str) -> str:
    """Contract name of a map file suffix (``T1map`` -> ``T1``; others unchanged)."""
    return _PARAM_OF_SUFFIX.get(suffix, suffix)
