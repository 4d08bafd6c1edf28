"""Step ``fit_<name>``: one fit of the registry on one session's series.

The first enabled fit of a series (:func:`qmri.registry.motion_source`) registers the series
to the session reference and motion-corrects it within itself; a second fit of the same series
(IVIM after ADC) reuses those transforms. Then the registry entry's estimator
(:mod:`qmri.recipes`) fits the corrected data and every map is written with its sidecar
(:func:`qmri.maps.write_fit`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qmri.bids import Series
from qmri.maps import write_fit
from qmri.preprocess import apply_motion, correct_motion, load_b1_on_grid
from qmri.registry import FITS, FitRequest
from qmri.steps.register import register_series

log = logging.getLogger("qmri")

__all__ = ["fit_request", "fit_series"]


def fit_request(
    *,
    series: Series,
    data: np.ndarray,
    options: Mapping[str, Any],
    b1: Path | None,
    inputs: Mapping[str, Path],
    series_xfm: Path,
) -> FitRequest:
    """What an estimator gets (:class:`qmri.registry.FitRequest`): the motion-corrected data,
    the B1 map on the series grid (:func:`qmri.preprocess.load_b1_on_grid`) and the inputs.

    The QC figures build their request here too, so they show the data as it was fitted.
    """
    b1_ratio, convention = None, None
    if b1 is not None:
        b1_ratio, convention = load_b1_on_grid(Path(b1), series.shape3d, series.affine)
    return FitRequest(
        series=series, data=data, options=options, b1=b1_ratio,
        b1_source=None if b1 is None else Path(b1), b1_convention=convention,
        inputs={k: Path(v) for k, v in inputs.items()}, series_xfm=Path(series_xfm),
    )  # fmt: skip


def fit_series(
    *,
    fit: str,
    series: Sequence[Path],
    options: Mapping[str, Any],
    b1: Path | None,
    inputs: Mapping[str, Path],
    prefix: Path,
    series_xfm: Path,
    moco_xfm: Path,
    registration: Mapping[str, Any] | None,
    reference: Path | None,
    checkerboard: Path | None,
    moco_trace: Path | None,
) -> list[Path]:
    """Fit one registry entry to a session's series and write its maps.

    Parameters
    ----------
    fit : str
        Name of the registry entry (:data:`qmri.registry.FITS`).
    series : sequence of path
        The series' raw files (a collection in index order, or one 4D file).
    options : mapping
        The fit's config section, defaults filled in from the schema.
    b1 : path or None
        The session's TB1map when the entry uses B1 correction and the session has one.
    inputs : mapping of str to path
        Maps of other fits the entry requires (with their series transforms as
        ``<name>_xfm``), and ``labels`` / ``session_xfm`` when it reads the baseline labels.
    prefix : path
        Output prefix: maps are ``PREFIX_<suffix>.nii.gz``.
    series_xfm : path
        Series -> session reference transform: written here with ``registration``, read
        otherwise.
    moco_xfm : path
        Motion-correction transforms of the series: written here with ``registration``,
        applied otherwise.
    registration : mapping or None
        The config's ``registration`` section when this fit is its series' first (it then
        registers and motion-corrects the series); None to reuse the transforms.
    reference, checkerboard, moco_trace : path or None
        The session reference, the checkerboard PNG and the motion trace (TSV) of the
        registration; None without ``registration``.

    Returns
    -------
    list of Path
        The maps written.
    """
    spec = FITS[fit]
    loaded = spec.series.load([Path(p) for p in series])
    if registration is not None:
        if reference is None or checkerboard is None or moco_trace is None:
            raise ValueError("registering a series needs reference, checkerboard and moco_trace")
        register_series(
            series=loaded, kind=spec.series, reference=Path(reference),
            registration=registration, out_xfm=Path(series_xfm), checkerboard=Path(checkerboard),
        )  # fmt: skip
        data = correct_motion(loaded, spec.series, Path(moco_xfm), Path(moco_trace))
    else:
        data = apply_motion(loaded, Path(moco_xfm))
    request = fit_request(
        series=loaded, data=data, options=options, b1=b1, inputs=inputs, series_xfm=series_xfm
    )
    outcome = spec.estimate(request)
    written: list[Path] = []
    for result in outcome.fits:
        written += write_fit(
            result, loaded.affine, prefix, sources=list(outcome.sources),
            acquisition=outcome.acquisition, bids_suffixes=True,
        )  # fmt: skip
    return written
