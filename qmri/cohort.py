"""What the dose analysis and the cohort figures share with the workflow's planning.

The steps ``subject_dose`` (:func:`qmri.steps.dose.subject_dose`) and ``cohort_figures``
(:func:`qmri.steps.cohort.cohort_figures`) write the tables and figures; the numerical work
lives in :mod:`qmri.dose` and :mod:`qmri.figures_cohort`. This module holds what the workflow
asks before any job runs (:func:`dose_files`, :func:`figure_names`, :func:`km_outcomes`), the
composite ROIs and the table columns.

Dose tables (per subject, then concatenated into ``cohort/``):

``sub-<s>/sub-<s>_dosestats.csv``
    :data:`DOSESTATS_COLUMNS`: dose statistics of every derived ROI and of the composite ROIs
    (:data:`COMPOSITE_ROIS`), a ``physical`` row and, when participants.tsv gives
    ``fractions``, an ``eqd2`` row at the ROI's alpha/beta.
``sub-<s>/sub-<s>_dosebins.csv``
    :data:`DOSEBINS_COLUMNS`: per follow-up session, map and binned ROI, the voxelwise change
    from baseline per dose bin (maps on the baseline grid, from ``baseline-space``).

Composite ROIs for the dose analysis: ``cord`` is the union of every ``cord_<level>`` label and
``marrow`` the union of every ``vb_<level>`` label minus the tumour, so that a dose bin collects
cord or marrow voxels from every labelled level (the dose falls off across levels).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from qmri.errors import QMRIInputError
from qmri.io import read_json, sidecar_path

__all__ = [
    "COMPOSITE_ROIS",
    "DOSEBINS_COLUMNS",
    "DOSESTATS_COLUMNS",
    "composite_rois",
    "dose_files",
    "figure_names",
    "km_outcomes",
]

#: Composite ROIs of the dose analysis (see the module docstring).
COMPOSITE_ROIS: tuple[str, ...] = ("cord", "marrow")


def _stat_columns() -> tuple[str, ...]:
    from qmri.dose import DOSE_STAT_COLUMNS

    return ("subject", "prescription_gy", *DOSE_STAT_COLUMNS)


def _bin_columns() -> tuple[str, ...]:
    from qmri.dose import DOSE_BIN_COLUMNS

    return ("subject", "session", "days_from_sbrt", "roi", "map", "unit", *DOSE_BIN_COLUMNS)


#: Columns of ``sub-<s>_dosestats.csv``: subject, prescription (participants.tsv ``dose_gy``,
#: Gy), then :data:`qmri.dose.DOSE_STAT_COLUMNS`.
DOSESTATS_COLUMNS: tuple[str, ...] = _stat_columns()

#: Columns of ``sub-<s>_dosebins.csv``: the follow-up, ROI and map, then
#: :data:`qmri.dose.DOSE_BIN_COLUMNS` (changes in the map's unit, percent changes in %).
DOSEBINS_COLUMNS: tuple[str, ...] = _bin_columns()


def dose_files(dose_dir: str | Path, subjects: Sequence[str]) -> dict[str, Path]:
    """Subject -> dose map (absolute path) under ``dose_dir``; every subject must have one.

    Raises
    ------
    QMRIInputError
        Naming the first missing file (``<dose_dir>/sub-<s>/sub-<s>_dose.nii.gz``).
    """
    from qmri.dose import dose_path

    root = Path(dose_dir).resolve()
    if not root.is_dir():
        raise QMRIInputError("dose folder not found (config key dose_dir)", root)
    out = {}
    for subject in subjects:
        path = dose_path(root, subject)
        if not path.is_file():
            raise QMRIInputError(
                "dose map not found (dose_dir is set, so every analysed subject needs one)", path
            )
        out[str(subject).removeprefix("sub-")] = path
    return out


def composite_rois(rois: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The composite ``cord`` and ``marrow`` masks from derived ROIs (per-level masks)."""
    shape = next(iter(rois.values())).shape
    cord = np.zeros(shape, dtype=bool)
    marrow = np.zeros(shape, dtype=bool)
    level = re.compile(r"^(cord|vb)_[CTLS]\d+$")
    for name, mask in rois.items():
        m = level.match(name)
        if m:
            (cord if m.group(1) == "cord" else marrow)[...] |= mask
    if "tumor" in rois:
        marrow &= ~rois["tumor"]
    return {"cord": cord, "marrow": marrow}


def clinical(participants_tsv: Path, subject: str) -> tuple[float, float]:
    """(dose_gy, fractions) of a subject; NaN where participants.tsv lacks them."""
    from qmri import tables

    part = tables.read_participants_tsv(participants_tsv)
    row = part[part["participant_id"] == f"sub-{tables.subject_label(subject)}"]
    values = []
    for col in ("dose_gy", "fractions"):
        v = row.iloc[0][col] if (not row.empty and col in part.columns) else np.nan
        v = pd.to_numeric(pd.Series([v]), errors="coerce").iloc[0]
        values.append(float(v) if pd.notna(v) else np.nan)
    return values[0], values[1]


def baseline_grid_maps(directory: Path) -> dict[str, tuple[Path, str]]:
    """Map name -> (file, unit) of a ``space-baseline`` folder (PRM class maps left out)."""
    found = {}
    pattern = re.compile(
        r"^sub-[A-Za-z0-9]+_ses-[A-Za-z0-9]+_space-baseline_([A-Za-z0-9]+)\.nii\.gz$"
    )
    for path in sorted(Path(directory).glob("*_space-baseline_*.nii.gz")):
        m = pattern.match(path.name)
        if m:
            side = sidecar_path(path)
            unit = read_json(side).get("Units", "") if side.exists() else ""
            found[m.group(1)] = (path, str(unit))
    return found


def session_of_dir(directory: Path) -> str:
    """Session label of ``sub-<s>/ses-<t>/space-baseline``."""
    for part in reversed(Path(directory).parts):
        if part.startswith("ses-"):
            return part.removeprefix("ses-")
    raise QMRIInputError(
        "cannot tell the session of this folder (no ses-<label> in it)", directory
    )


# --------------------------------------------------------------------------------------------
# cohort figures
# --------------------------------------------------------------------------------------------


def km_outcomes(participants_tsv: Path) -> list[str]:
    """Outcomes whose event and days columns participants.tsv has (with at least one value)."""
    from qmri import tables
    from qmri.outcomes import OUTCOMES

    part = tables.read_participants_tsv(participants_tsv)
    return [
        name
        for name, cols in OUTCOMES.items()
        if all(c in part.columns and part[c].notna().any() for c in cols)
    ]


def figure_names(
    *,
    trajectory_rois: Sequence[str],
    waterfall_rois: Sequence[str],
    maps: Sequence[str],
    sessions: Sequence[str],
    km: Sequence[str],
) -> list[str]:
    """The PNG names (under ``cohort/``) that :func:`qmri.steps.cohort.cohort_figures` writes; a CSV is beside each."""
    names = [f"trajectories_{roi}.png" for roi in trajectory_rois]
    names += [
        f"waterfall_{roi}_{m}_ses-{ses}.png"
        for roi in waterfall_rois
        for m in maps
        for ses in sessions
    ]
    names += [f"km_{outcome}.png" for outcome in km]
    return names
