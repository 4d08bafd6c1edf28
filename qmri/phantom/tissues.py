"""Tissue table of the phantom: baseline parameters at 1.5 T, follow-up changes, session kinds.

The values, units and sources are documented in the package docstring (:mod:`qmri.phantom`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from qmri.errors import QMRIInputError

__all__ = [
    "FOLLOW_UP_CHANGES",
    "HEMATOCRIT",
    "PARAMETERS",
    "PARAMETER_UNITS",
    "R2_PRIME_PER_S",
    "SESSION_KINDS",
    "TISSUES",
    "TISSUE_INDEX",
    "Tissue",
    "parameter_table",
    "session_kinds",
    "tissue_parameters",
]

#: Parameters of a tissue, in the units of the data contract (section 4).
PARAMETERS: tuple[str, ...] = ("PD", "T1", "T2", "D", "f", "Dstar", "Ktrans", "ve", "vp", "FF")

#: Units of :data:`PARAMETERS`.
PARAMETER_UNITS: dict[str, str] = {
    "PD": "a.u.",
    "T1": "s",
    "T2": "s",
    "D": "mm^2/s",
    "f": "fraction",
    "Dstar": "mm^2/s",
    "Ktrans": "1/min",
    "ve": "fraction",
    "vp": "fraction",
    "FF": "fraction",
}


@dataclass(frozen=True)
class Tissue:
    """True MR parameters of one tissue at 1.5 T.

    Attributes
    ----------
    name : str
        Tissue name (also its name in the tissue ``dseg.tsv``).
    PD : float
        Proton density, relative (fat = 1).
    T1, T2 : float
        Relaxation times (s).
    D : float
        Diffusion coefficient (mm^2/s); also the ADC truth.
    f : float
        IVIM perfusion fraction (0..1).
    Dstar : float
        IVIM pseudo-diffusion coefficient (mm^2/s); 0 where f is 0.
    Ktrans : float
        Extended-Tofts transfer constant (1/min).
    ve, vp : float
        Extravascular-extracellular and plasma volume fractions (0..1).
    FF : float
        Fat fraction (0..1); scales the fat-suppressed DWI signal by ``1 - FF``.
    """

    name: str
    PD: float
    T1: float
    T2: float
    D: float
    f: float
    Dstar: float
    Ktrans: float
    ve: float
    vp: float
    FF: float

    def as_dict(self) -> dict[str, float]:
        """Return the parameters (without the name) as a dict."""
        return {p: float(getattr(self, p)) for p in PARAMETERS}


#: Haematocrit of large-vessel blood (Cp = Cb / (1 - Hct)).
HEMATOCRIT = 0.42

#: Baseline tissue parameters at 1.5 T (see the package docstring for units and sources).
TISSUES: tuple[Tissue, ...] = (
    Tissue("marrow", 0.90, 0.60, 0.080, 0.40e-3, 0.06, 25e-3, 0.06, 0.15, 0.03, 0.50),
    Tissue("marrow_treated", 0.90, 0.60, 0.080, 0.40e-3, 0.06, 25e-3, 0.06, 0.15, 0.03, 0.50),
    Tissue("tumor", 0.90, 1.20, 0.090, 0.90e-3, 0.10, 20e-3, 0.25, 0.30, 0.08, 0.05),
    Tissue("disc", 0.85, 1.10, 0.110, 1.50e-3, 0.0, 0.0, 0.003, 0.25, 0.0, 0.0),
    Tissue("cord", 0.75, 0.85, 0.075, 1.00e-3, 0.03, 15e-3, 0.002, 0.05, 0.025, 0.0),
    Tissue("csf", 1.00, 4.00, 1.500, 3.00e-3, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
    Tissue("muscle", 0.70, 1.00, 0.035, 1.50e-3, 0.08, 25e-3, 0.04, 0.12, 0.02, 0.05),
    Tissue("fat", 1.00, 0.26, 0.100, 0.02e-3, 0.0, 0.0, 0.01, 0.10, 0.01, 0.97),
    Tissue("blood", 0.90, 1.44, 0.250, 1.80e-3, 0.0, 0.0, 0.0, 0.0, 1.0 - HEMATOCRIT, 0.0),
)

#: Tissue name -> value in the truth tissue map (0 is air).
TISSUE_INDEX: dict[str, int] = {t.name: i + 1 for i, t in enumerate(TISSUES)}

#: Reversible transverse relaxation R2' (1/s) per tissue, for the optional MEGRE series:
#: T2* = 1 / (1/T2 + R2'). Trabecular bone makes marrow's T2* short (about 14 ms at 1.5 T),
#: a lytic metastasis replaces trabeculae (about 32 ms).
R2_PRIME_PER_S: dict[str, float] = {
    "marrow": 60.0,
    "marrow_treated": 60.0,
    "tumor": 20.0,
    "disc": 10.0,
    "cord": 10.0,
    "csf": 1.0,
    "muscle": 15.0,
    "fat": 30.0,
    "blood": 20.0,
}

#: Session kinds, in order: baseline, then the follow-ups.
SESSION_KINDS: tuple[str, ...] = ("pre", "fu1", "fu2")

#: Multiplicative changes of the follow-up sessions: kind -> tissue -> parameter -> factor.
FOLLOW_UP_CHANGES: dict[str, dict[str, dict[str, float]]] = {
    "fu1": {
        "tumor": {"D": 1.30, "Ktrans": 0.60, "vp": 0.60},
        "marrow_treated": {"T1": 0.80},
    },
    "fu2": {
        "tumor": {"D": 1.45, "Ktrans": 0.50, "vp": 0.50},
        "marrow_treated": {"T1": 0.70},
    },
}


def tissue_parameters(session_kind: str = "pre") -> dict[str, Tissue]:
    """Return the true tissue parameters of a session kind.

    Parameters
    ----------
    session_kind : {"pre", "fu1", "fu2"}
        Baseline or follow-up (see :data:`FOLLOW_UP_CHANGES`).

    Returns
    -------
    dict of str to Tissue
        Tissue name -> parameters, in :data:`TISSUES` order.

    Raises
    ------
    QMRIInputError
        For an unknown session kind.
    """
    if session_kind not in SESSION_KINDS:
        raise QMRIInputError(
            f"unknown session kind {session_kind!r} (expected one of {', '.join(SESSION_KINDS)})"
        )
    changes = FOLLOW_UP_CHANGES.get(session_kind, {})
    out: dict[str, Tissue] = {}
    for tissue in TISSUES:
        factors = changes.get(tissue.name, {})
        updates = {p: getattr(tissue, p) * k for p, k in factors.items()}
        out[tissue.name] = dataclasses.replace(tissue, **updates)
    return out


def session_kinds(sessions: Sequence[str]) -> dict[str, str]:
    """Map session labels to kinds by position (first ``pre``, then ``fu1``, ``fu2``).

    Raises
    ------
    QMRIInputError
        For fewer than 1 or more than 3 sessions.
    """
    if not 1 <= len(sessions) <= len(SESSION_KINDS):
        raise QMRIInputError(
            f"the phantom has 1 to {len(SESSION_KINDS)} sessions, got {len(sessions)}"
        )
    return dict(zip(sessions, SESSION_KINDS, strict=False))


def parameter_table(session_kind: str) -> np.ndarray:
    """Return the parameters of a session kind as a lookup table indexed by tissue map value.

    Returns
    -------
    ndarray, shape (n_tissues + 1, n_parameters)
        Row :data:`TISSUE_INDEX` ``[name]`` holds that tissue's :data:`PARAMETERS` (in their
        units); row 0 (air) is all zeros.
    """
    params = tissue_parameters(session_kind)
    table = np.zeros((len(TISSUES) + 1, len(PARAMETERS)))
    for name, tissue in params.items():
        table[TISSUE_INDEX[name]] = [getattr(tissue, p) for p in PARAMETERS]
    return table
