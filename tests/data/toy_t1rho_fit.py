"""A fit added from outside qmri: T1rho from spin-lock series (the toy fit of issue #12).

Everything a new fit needs, in one file: a series kind (files ``tsl-<i>_T1rho.nii.gz``, one
spin-lock time per file in the sidecar's ``SpinLockTime``, s), a two-parameter model
(``S = S0 exp(-TSL / T1rho)``, log-linear least squares) and its registry entry with the JSON
schema of its config section ``t1rho``. The workflow imports it when the config lists it under
``plugins``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from qmri import bids
from qmri.io import read_json, sidecar_path
from qmri.models.base import KernelOutput, Model, ModelFit, map_property, model_params, setting
from qmri.registry import FitOutcome, FitRequest, FitSpec, OutputMap, register


def spin_lock_parameters(paths: Sequence[Path]) -> dict[str, Any]:
    """``SpinLockTime`` (s) of every file of the series."""
    return {"SpinLockTime": [float(read_json(sidecar_path(p))["SpinLockTime"]) for p in paths]}


class T1rhoFit(ModelFit):
    """Maps of a T1rho fit."""

    t1rho_s = map_property("T1rho", "T1rho (s).")
    s0 = map_property("S0", "Signal without spin-lock decay (a.u.).")


class T1rhoModel(Model[T1rhoFit]):
    """``S = S0 exp(-TSL / T1rho)``, fitted log-linearly on every spin-lock time."""

    param_names = ("T1rho", "S0")
    parameter_units: ClassVar[Mapping[str, str]] = {"T1rho": "s", "S0": "a.u."}
    fit_class = T1rhoFit
    volumes = ("spin_lock_times_s", "spin-lock times")
    reference = "log-linear least squares (toy fit of the tests)"
    spin_lock_times_s = setting("Spin-lock times (s).")
    min_signal = setting("Smallest signal used (a.u.).")

    def __init__(self, spin_lock_times_s: Sequence[float], *, min_signal: float) -> None:
        self._spin_lock_times_s = np.asarray(spin_lock_times_s, dtype=float)
        self._min_signal = float(min_signal)

    @property
    def options(self) -> dict[str, Any]:
        return {
            "spin_lock_times_s": self._spin_lock_times_s.tolist(),
            "min_signal": self._min_signal,
        }

    @property
    def algorithm(self) -> str:
        return "log-linear least squares"

    def _kernel(self):
        tsl, floor = self._spin_lock_times_s, self._min_signal

        def kernel(signal: np.ndarray) -> KernelOutput:
            good = np.all(signal > floor, axis=1)
            y = np.log(np.where(signal > floor, signal, 1.0))
            design = np.stack([np.ones_like(tsl), -tsl], axis=1)
            coef, *_ = np.linalg.lstsq(design, y.T, rcond=None)
            r1rho = coef[1]
            ok = good & (r1rho > 0)
            t1rho = np.where(ok, 1.0 / np.where(r1rho > 0, r1rho, 1.0), np.nan)
            s0 = np.exp(coef[0])
            pred = s0[:, None] * np.exp(-tsl[None, :] / t1rho[:, None])
            ss_res = np.sum((signal - pred) ** 2, axis=1)
            ss_tot = np.sum((signal - signal.mean(axis=1, keepdims=True)) ** 2, axis=1)
            r2 = 1.0 - ss_res / np.where(ss_tot > 0, ss_tot, 1.0)
            return KernelOutput({"T1rho": t1rho, "S0": s0}, r2, ok)

        return kernel

    def predict(self, params: Mapping[str, Any]) -> np.ndarray:
        t1rho, s0 = model_params(params, "T1rho", "S0")
        return s0[..., None] * np.exp(-self._spin_lock_times_s / t1rho[..., None])


def fit_t1rho(request: FitRequest) -> FitOutcome:
    """The estimator of the registry entry: the model from the series and its config section."""
    times = request.series.parameters["SpinLockTime"]
    model = T1rhoModel(times, min_signal=request.options["min_signal"])
    return FitOutcome([model.fit(request.data)], {"SpinLockTime": times}, request.series.sources)


SPIN_LOCK = bids.SeriesKind("T1rho", "anat", "T1rho", "tsl", spin_lock_parameters, "highest_snr")
MAPS = (OutputMap("T1rho", "T1rho"), OutputMap("S0"), OutputMap("R2"), OutputMap("fitmask"))

register(
    FitSpec(
        name="t1rho",
        series=SPIN_LOCK,
        datatype="anat",
        section="t1rho",
        outputs=lambda options: MAPS,
        estimator=f"{__name__}:fit_t1rho",
        config_schema={
            "type": "object",
            "additionalProperties": False,
            "default": {},
            "properties": {
                "activate": {"type": "boolean", "default": True},
                "min_signal": {"type": "number", "minimum": 0, "default": 1.0},
            },
        },
    )
)
