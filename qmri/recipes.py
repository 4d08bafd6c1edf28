"""The estimators of the registry's fits: a loaded series and its config section in, fits out.

Each function takes a :class:`qmri.registry.FitRequest` (the series after motion correction,
its acquisition parameters from the sidecars, the fit's config section, the B1 map and other
inputs the entry asked for) and returns a :class:`qmri.registry.FitOutcome`: the
:class:`qmri.models.ModelFit` results to write and what their sidecars record. The science is in
:mod:`qmri.models`; this module only builds each model from the acquisition and the options.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from qmri import preprocess
from qmri.models import (
    ADCModel,
    InversionRecoveryModel,
    IVIMModel,
    MonoExponentialModel,
    VFAModel,
)
from qmri.models.dce import fit_dce
from qmri.registry import FitOutcome, FitRequest

__all__ = [
    "adc",
    "dce",
    "inversion_recovery",
    "ivim",
    "multi_echo_t2",
    "multi_echo_t2star",
    "vfa",
]


def _sources(request: FitRequest, *extra: Path | None) -> list[Path]:
    return [*request.series.sources, *(p for p in extra if p is not None)]


def vfa(request: FitRequest) -> FitOutcome:
    """T1 (s) and M0 from variable flip angles (DESPOT1 + NLLS), B1-corrected when given."""
    p = request.series.parameters
    model = VFAModel(
        p["FlipAngle"], p["RepetitionTimeExcitation"], method=request.options["method"]
    )
    acquisition: dict[str, Any] = {
        "FlipAngle": p["FlipAngle"],
        "RepetitionTimeExcitation": p["RepetitionTimeExcitation"],
    }
    if request.b1 is not None:
        acquisition["B1Map"] = str(request.b1_source)
        acquisition["B1MapConvention"] = request.b1_convention
    fit = model.fit(request.data, b1=request.b1)
    return FitOutcome([fit], acquisition, _sources(request, request.b1_source))


def inversion_recovery(request: FitRequest) -> FitOutcome:
    """T1 (s) from magnitude inversion recovery (reduced-dimension NLS)."""
    p = request.series.parameters
    model = InversionRecoveryModel(p["InversionTime"], tr_s=p.get("RepetitionTime"))
    acquisition: dict[str, Any] = {"InversionTime": p["InversionTime"]}
    if p.get("RepetitionTime") is not None:
        acquisition["RepetitionTime"] = p["RepetitionTime"]
    return FitOutcome([model.fit(request.data)], acquisition, _sources(request))


def _multi_echo(request: FitRequest, quantity: str) -> FitOutcome:
    p = request.series.parameters
    model = MonoExponentialModel(
        p["EchoTime"],
        drop_first_echo=request.options["drop_first_echo"],
        quantity=quantity,
        noise_floor=request.options["noise_floor"],
    )
    return FitOutcome([model.fit(request.data)], {"EchoTime": p["EchoTime"]}, _sources(request))


def multi_echo_t2(request: FitRequest) -> FitOutcome:
    """T2 (s) and S0 from multi-echo spin echo."""
    return _multi_echo(request, "T2")


def multi_echo_t2star(request: FitRequest) -> FitOutcome:
    """T2* (s) and S0 from multi-echo gradient echo."""
    return _multi_echo(request, "T2star")


def adc(request: FitRequest) -> FitOutcome:
    """ADC (mm^2/s) and S0 between ``b_min`` and ``b_max``."""
    bvals = request.series.parameters["bvals"]
    model = ADCModel(bvals, b_min=request.options["b_min"], b_max=request.options["b_max"])
    return FitOutcome([model.fit(request.data)], {"bvals": bvals}, _sources(request))


def ivim(request: FitRequest) -> FitOutcome:
    """IVIM D, D* (mm^2/s), f and S0."""
    bvals = request.series.parameters["bvals"]
    model = IVIMModel(
        bvals, b_threshold=request.options["b_threshold"], method=request.options["method"]
    )
    return FitOutcome([model.fit(request.data)], {"bvals": bvals}, _sources(request))


def dce(request: FitRequest) -> FitOutcome:
    """Kinetic and semi-quantitative DCE maps, with the session's VFA T1 map.

    The conversion inputs (T1 by nearest neighbour on the DCE grid, B1, the measured AIF of
    the baseline ``aorta`` label) are prepared by :func:`qmri.preprocess.dce_inputs`, the same
    function the QC figures call, so the figures show what was fitted.
    """
    options = request.options
    inputs = preprocess.dce_inputs(request)
    kinetic, semi = fit_dce(
        inputs,
        model=options["model"],
        method=options["method"],
        fit_delay=options["fit_delay"],
        signal=request.data,
    )
    sources = _sources(request, request.inputs["t1"], request.b1_source)
    if "labels" in request.inputs:
        sources.append(request.inputs["labels"])
    times = np.asarray(inputs.times_s, dtype=float).tolist()
    return FitOutcome([kinetic, semi], {"FrameTimes": times}, sources)
