"""A DCE analysis from arrays: inputs of the kinetic fit (:func:`prepare_dce`), the configured
model (:func:`kinetic_model`) and the kinetic and semi-quantitative fits (:func:`fit_dce`).

No file is read or written here. The fit step of the workflow and the QC figures call
:func:`prepare_dce` alike, so a figure shows the concentration and the AIF that were fitted.
Every argument is keyword-only and has no default: the defaults (hematocrit, r1, model, ...)
live in the workflow's config schema (``workflow/schemas/config.schema.yaml``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qmri.errors import QMRIInputError
from qmri.models.dce.aif import (
    ArterialInputFunction,
    aif_from_blood_curve,
    mean_curve,
    parker_aif,
    read_aif_tsv,
)
from qmri.models.dce.arrival import detect_bolus_arrival
from qmri.models.dce.concentration import signal_to_concentration
from qmri.models.dce.kinetic import (
    DCE_MODELS,
    DCEFit,
    ExtendedToftsModel,
    PatlakModel,
    ToftsModel,
)
from qmri.models.dce.semiquant import SemiQuantitativeFit, semiquantitative_maps
from qmri.models.dce.timing import check_frame_times

__all__ = ["DCEInputs", "fit_dce", "kinetic_model", "prepare_dce"]


@dataclass(frozen=True)
class DCEInputs:
    """Everything the kinetic fit needs, as the fit and the QC figures use it.

    Attributes
    ----------
    concentration : (X, Y, Z, n_frames) ndarray
        Tissue concentration (mM): converted from the signal (float32 for float32 signal; NaN
        outside ``mask`` and where a frame cannot be inverted), or the data itself when it was
        given as concentration.
    times_s : (n_frames,) ndarray
        Frame times (s), checked, read-only.
    aif : ArterialInputFunction
        The plasma AIF at the frame times.
    bolus_arrival_s : float or None
        Bolus arrival (s): given, or detected for the Parker AIF; None when neither.
    baseline_frames : int or None
        Pre-contrast frames as given (None for concentration input without them).
    mask : ndarray or None
        Voxels to fit, as given (None: all).
    provenance : dict
        Conversion and AIF settings recorded in both fits' options (r1 and its source, flip
        angle, TR, baseline frames, ``UninvertibleFrames``, ``BolusArrivalDetected``,
        ``BolusArrival_s``, or ``Input`` for concentration data).
    """

    concentration: np.ndarray
    times_s: np.ndarray
    aif: ArterialInputFunction
    bolus_arrival_s: float | None
    baseline_frames: int | None
    mask: np.ndarray | None
    provenance: dict[str, Any]


def prepare_dce(
    data: np.ndarray,
    times_s: np.ndarray,
    *,
    concentration: bool,
    t1_s: np.ndarray | None,
    flip_angle_deg: float | None,
    tr_s: float | None,
    b1: np.ndarray | None,
    baseline_frames: int | None,
    r1: float | None,
    agent: str | None,
    field_strength_t: float | None,
    aif: str,
    hematocrit: float,
    bolus_arrival_s: float | None,
    aif_mask: np.ndarray | None,
    mask: np.ndarray | None,
) -> DCEInputs:
    """Concentration, AIF and bolus arrival of a DCE series.

    Parameters
    ----------
    data : (X, Y, Z, n_frames) ndarray
        Signal, or concentration (mM) with ``concentration=True``.
    times_s : (n_frames,) ndarray
        Frame times (s).
    concentration : bool
        ``data`` is concentration already (the conversion inputs are then not used).
    t1_s, flip_angle_deg, tr_s, b1, baseline_frames, r1, agent, field_strength_t
        Signal-to-concentration inputs (:func:`~qmri.models.dce.concentration.signal_to_concentration`):
        pre-contrast T1 map (s) on the data's grid, nominal flip angle (deg), TR (s), B1 ratio
        map or None, pre-contrast frames, relaxivity (1/(mM s)) or None to look it up from the
        agent and the field strength (T).
    aif : str
        ``"parker"`` (population AIF at the bolus arrival), ``"measured"`` (the mean blood
        curve over ``aif_mask``, e.g. the aorta) or a TSV path (``time`` s, ``cp`` mM).
    hematocrit : float
        Blood to plasma conversion of the Parker or measured AIF, in [0, 1).
    bolus_arrival_s : float or None
        Bolus arrival (s). For the Parker AIF, None detects it from the mean concentration
        over the fitted voxels (``method="parker"`` of
        :func:`~qmri.models.dce.arrival.detect_bolus_arrival`).
    aif_mask : ndarray of bool or None
        Arterial voxels on the data's grid, for ``aif="measured"``.
    mask : ndarray or None
        Voxels to convert and fit (non-zero); None: all.

    Returns
    -------
    DCEInputs

    Raises
    ------
    QMRIInputError
        Bad frame times, missing conversion inputs, a T1 map on another grid, no arterial
        voxels for a measured AIF, no bolus in the data, or a bad AIF file.
    """
    data = np.asarray(data)
    times = check_frame_times(times_s, data.shape[-1])
    provenance: dict[str, Any] = {}
    if concentration:
        conc = data
        provenance["Input"] = "concentration (mM)"
    else:
        if t1_s is None or flip_angle_deg is None or tr_s is None or baseline_frames is None:
            raise QMRIInputError(
                "signal to concentration needs a T1 map, the flip angle, TR and the number of "
                "baseline frames (or pass --concentration)"
            )
        if t1_s.shape != data.shape[:-1]:
            raise QMRIInputError(
                f"T1 map grid {t1_s.shape} differs from the DCE grid {data.shape[:-1]}"
            )
        res = signal_to_concentration(
            data, t1_s, flip_angle_deg, tr_s, baseline_frames=baseline_frames, r1=r1,
            agent=agent, field_strength_t=field_strength_t, b1=b1, mask=mask,
        )  # fmt: skip
        conc = res.concentration
        provenance.update(res.options)
        provenance["UninvertibleFrames"] = int(res.n_uninvertible)
    fit_mask = np.ones(data.shape[:-1], bool) if mask is None else mask
    if aif == "parker":
        if bolus_arrival_s is None:
            curve = mean_curve(conc, fit_mask & np.all(np.isfinite(conc), axis=-1))
            # model-based arrival (Parker curve fitted with a free delay): the threshold
            # ("hinge") estimate is ~3 s early at 7 s frames, which biases Ktrans by ~35%
            bolus_arrival_s = detect_bolus_arrival(
                times, curve, baseline_frames=baseline_frames, method="parker"
            )
            provenance["BolusArrivalDetected"] = True
        arterial = parker_aif(times, delay_s=bolus_arrival_s, hematocrit=hematocrit)
    elif aif == "measured":
        if aif_mask is None or not aif_mask.any():
            raise QMRIInputError("a measured AIF needs arterial voxels (no 'aorta' label here)")
        blood = mean_curve(conc, aif_mask)
        arterial = aif_from_blood_curve(
            times, blood, hematocrit=hematocrit,
            source=f"mean blood concentration over {int(aif_mask.sum())} aorta voxels",
        )  # fmt: skip
    else:
        arterial = read_aif_tsv(Path(aif), times)
    provenance["BolusArrival_s"] = bolus_arrival_s
    return DCEInputs(
        concentration=conc,
        times_s=times,
        aif=arterial,
        bolus_arrival_s=bolus_arrival_s,
        baseline_frames=baseline_frames,
        mask=mask,
        provenance=provenance,
    )


def kinetic_model(
    inputs: DCEInputs, *, model: str, method: str, fit_delay: bool
) -> ToftsModel | ExtendedToftsModel | PatlakModel:
    """The kinetic model of a DCE analysis, configured with its frame times and AIF.

    Parameters
    ----------
    inputs : DCEInputs
        From :func:`prepare_dce`.
    model : {"tofts", "etofts", "patlak"}
        Key of :data:`~qmri.models.dce.kinetic.DCE_MODELS`.
    method : {"nlls", "linear"}
        Levenberg-Marquardt fit, or the closed-form (Murase / Patlak) estimate only.
    fit_delay : bool
        Fit an arterial delay (s) per voxel.

    Returns
    -------
    ToftsModel, ExtendedToftsModel or PatlakModel
    """
    if model not in DCE_MODELS:
        raise QMRIInputError(f"unknown DCE model '{model}' (use {', '.join(DCE_MODELS)})")
    return DCE_MODELS[model](inputs.times_s, inputs.aif, fit_delay=fit_delay, method=method)


def fit_dce(
    inputs: DCEInputs,
    *,
    model: str,
    method: str,
    fit_delay: bool,
    signal: np.ndarray | None,
) -> tuple[DCEFit, SemiQuantitativeFit]:
    """Kinetic and semi-quantitative fits of a DCE series.

    Parameters
    ----------
    inputs : DCEInputs
        From :func:`prepare_dce`.
    model, method, fit_delay
        As in :func:`kinetic_model`.
    signal : ndarray or None
        The raw signal (``data`` of :func:`prepare_dce`) for the peak relative signal
        enhancement ``MaxRSE``; None for concentration input.

    Returns
    -------
    kinetic : DCEFit
        The kinetic maps over ``inputs.mask``; options: ``inputs.provenance``, then the
        model's options.
    semi : SemiQuantitativeFit
        :func:`~qmri.models.dce.semiquant.semiquantitative_maps` from the bolus arrival (the
        first frame when there is none) without its ``fitmask`` (the kinetic fit's stands);
        options: ``inputs.provenance``, then its own.
    """
    kinetic = kinetic_model(inputs, model=model, method=method, fit_delay=fit_delay)
    fit = kinetic.fit(inputs.concentration, mask=inputs.mask, provenance=inputs.provenance)
    arrival = (
        inputs.bolus_arrival_s if inputs.bolus_arrival_s is not None else float(inputs.times_s[0])
    )
    semi = semiquantitative_maps(
        inputs.concentration, inputs.times_s, arrival, signal=signal,
        baseline_frames=inputs.baseline_frames, mask=inputs.mask,
    )  # fmt: skip
    semi = dataclasses.replace(
        semi,
        maps={k: v for k, v in semi.maps.items() if k != "fitmask"},
        options={**inputs.provenance, **semi.options},
    )
    return fit, semi
