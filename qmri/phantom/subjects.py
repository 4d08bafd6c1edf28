"""The phantom's subjects: what is drawn per subject and session from the seed.

Per subject one random stream (``default_rng([seed, subject, 0])``) gives, in this order, the
B1 polynomial, the prescription (dose and fractions), age, sex and, per session, the motion
(follow-ups) and the days from SBRT. The noise of the series has its own streams
(:func:`qmri.phantom.series.noise_rng`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from qmri.phantom.anatomy import Motion, draw_motion, subject_layout
from qmri.phantom.protocol import PHANTOM_PROTOCOL
from qmri.phantom.signals import b1_coefficients
from qmri.phantom.tissues import session_kinds

__all__ = ["DAYS_FROM_SBRT", "Subject", "make_subject"]

#: Nominal days from SBRT of each session kind (per-subject jitter of a few days is added).
DAYS_FROM_SBRT: dict[str, int] = {"pre": -7, "fu1": 90, "fu2": 180}


@dataclass(frozen=True)
class Subject:
    """One phantom subject: layout, B1 field, motion and session days, clinical columns.

    Attributes
    ----------
    label : str
        Subject label (``"01"`` for subject index 0).
    levels : tuple of str
        Labelled levels, superior to inferior.
    treated : int
        Index of the treated level in ``levels``.
    centre : ndarray, shape (3,)
        World position (mm) of the treated body centre at baseline.
    b1_coeffs : ndarray, shape (6,)
        B1 polynomial (:func:`~qmri.phantom.signals.b1_ratio`).
    motions : dict of str to Motion
        Session label -> motion relative to the baseline (identity at baseline).
    days : dict of str to int
        Session label -> days from the first SBRT fraction.
    age, sex, dose_gy, fractions
        Clinical columns of participants.tsv (years, ``"M"``/``"F"``, Gy, count).
    """

    label: str
    levels: tuple[str, ...]
    treated: int
    centre: np.ndarray
    b1_coeffs: np.ndarray
    motions: dict[str, Motion]
    days: dict[str, int]
    age: int
    sex: str
    dose_gy: float
    fractions: int


def make_subject(i: int, sessions: Sequence[str], seed: int) -> Subject:
    """Draw subject ``i`` (0-based) of a phantom with the given sessions and seed."""
    rng = np.random.default_rng([seed, i, 0])
    levels, treated_level, centre = subject_layout(i)
    b1 = b1_coefficients(rng, PHANTOM_PROTOCOL.b1_range)
    dose, fx = [(24.0, 2), (27.0, 3), (35.0, 5), (18.0, 1)][int(rng.integers(0, 4))]
    age = int(rng.integers(45, 81))
    sex = str(rng.choice(["M", "F"]))
    kinds = session_kinds(sessions)
    motions = {}
    days = {}
    for ses, kind in kinds.items():
        if kind == "pre":
            motions[ses] = Motion(np.zeros(3), np.zeros(3), centre.astype(float))
            days[ses] = DAYS_FROM_SBRT[kind] - int(rng.integers(0, 8))
        else:
            motions[ses] = draw_motion(rng, centre)
            days[ses] = DAYS_FROM_SBRT[kind] + int(rng.integers(-10, 11))
    return Subject(
        label=f"{i + 1:02d}",
        levels=levels,
        treated=levels.index(treated_level),
        centre=centre,
        b1_coeffs=b1,
        motions=motions,
        days=days,
        age=age,
        sex=sex,
        dose_gy=dose,
        fractions=fx,
    )
