"""Step ``subject_dose``: dose statistics per ROI and the dose-binned qMRI change of a subject.

Runs when the config sets ``dose_dir``. The tables are described in :mod:`qmri.cohort`; the
numbers are :mod:`qmri.dose`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from qmri import dose as dosemod
from qmri import tables
from qmri.cohort import (
    DOSEBINS_COLUMNS,
    DOSESTATS_COLUMNS,
    baseline_grid_maps,
    clinical,
    composite_rois,
    session_of_dir,
)
from qmri.errors import QMRIInputError
from qmri.io import load_nifti, read_data, write_csv
from qmri.roimask import read_rois

__all__ = ["subject_dose"]


def subject_dose(
    *,
    subject: str,
    dose_nifti: Path,
    rois_mask: Path,
    participants_tsv: Path,
    sessions_tsv: Path,
    baseline_session: str,
    baseline_grid_dirs: Sequence[Path],
    bin_edges_gy: Sequence[float],
    eqd2_bin_edges_gy: Sequence[float],
    alpha_beta_gy: Mapping[str, float],
    hot_volume_cc: float,
    binned_rois: Sequence[str],
    out_stats: Path,
    out_bins: Path,
) -> tuple[Path, Path]:
    """Dose statistics per ROI and dose-binned qMRI change of one subject.

    Parameters
    ----------
    subject : str
        Subject label (``01``).
    dose_nifti : Path
        Dose map (Gy) on the baseline reference grid.
    rois_mask : Path
        Derived ROIs on the baseline grid (4D, names in the ``.tsv`` beside it).
    participants_tsv : Path
        ``dose_gy`` (prescription, reported) and ``fractions`` (EQD2; without it, physical
        dose only).
    sessions_tsv : Path
        The subject's sessions table (``days_from_sbrt``).
    baseline_session : str
        Label of the baseline session.
    baseline_grid_dirs : sequence of Path
        The ``sub-<s>/ses-<t>/space-baseline`` folders of every session (baseline included):
        the maps resampled onto the baseline grid, NaN where the fit failed.
    out_stats, out_bins : Path
        ``sub-<s>_dosestats.csv`` and ``sub-<s>_dosebins.csv``.
    bin_edges_gy, eqd2_bin_edges_gy, alpha_beta_gy
        Dose bins (Gy) and alpha/beta ratios by ROI-name prefix (Gy), see :mod:`qmri.dose`
        (config section ``dose``).
    hot_volume_cc : float
        Hot volume of the ``d0_03cc_gy`` column (cm^3).
    binned_rois : sequence of str
        ROIs whose change is binned by dose: derived ROI names or :data:`COMPOSITE_ROIS`.
    """
    subject = tables.subject_label(subject)
    rois, affine = read_rois(rois_mask)
    voxel_ml = abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0
    shape = next(iter(rois.values())).shape
    dose = dosemod.read_dose(dose_nifti, shape, affine)
    prescription, fractions = clinical(participants_tsv, subject)
    fx = fractions if np.isfinite(fractions) else None
    all_rois = {**rois, **composite_rois(rois)}
    unknown = [r for r in binned_rois if r not in all_rois]
    if unknown:
        raise QMRIInputError(
            f"unknown ROI(s) {unknown} for the dose bins; known: {sorted(all_rois)}", "dose"
        )
    stats = dosemod.dose_table(
        dose, all_rois, voxel_ml, fractions=fx, alpha_beta_gy=alpha_beta_gy,
        hot_volume_cc=hot_volume_cc,
    )  # fmt: skip
    stats.insert(0, "prescription_gy", prescription)
    stats.insert(0, "subject", subject)
    write_csv(stats[list(DOSESTATS_COLUMNS)], out_stats)

    days = tables.read_sessions_tsv(sessions_tsv)
    by_session = {session_of_dir(d): baseline_grid_maps(d) for d in baseline_grid_dirs}
    if baseline_session not in by_session:
        raise QMRIInputError(
            f"no space-baseline folder of the baseline session ses-{baseline_session}", "dose"
        )
    base_maps = by_session[baseline_session]
    edges = {"bin_edges_gy": tuple(bin_edges_gy), "eqd2_bin_edges_gy": tuple(eqd2_bin_edges_gy)}
    frames = []
    cache: dict[Path, np.ndarray] = {}

    def values(path: Path) -> np.ndarray:
        if path not in cache:
            cache[path] = read_data(load_nifti(path, ndim=3))
        return cache[path]

    followups = sorted(
        (s for s in by_session if s != baseline_session), key=lambda s: (days.get(s, 0), s)
    )
    for session in followups:
        if session not in days:
            raise QMRIInputError(f"session '{session}' has no row", sessions_tsv)
        for name, (path, unit) in by_session[session].items():
            if name not in base_maps:
                continue
            base = values(base_maps[name][0])
            follow = values(path)
            for roi in binned_rois:
                table = dosemod.dose_binned_change(
                    base, follow, dose, all_rois[roi], voxel_volume_ml=voxel_ml,
                    fractions=fx, alpha_beta_gy=dosemod.alpha_beta_for_roi(roi, alpha_beta_gy),
                    **edges,
                )  # fmt: skip
                for col, value in (("unit", unit), ("map", name), ("roi", roi),
                                   ("days_from_sbrt", days[session]), ("session", session),
                                   ("subject", subject)):  # fmt: skip
                    table.insert(0, col, value)
                frames.append(table)
    bins = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=list(DOSEBINS_COLUMNS))
    )
    write_csv(bins[list(DOSEBINS_COLUMNS)], out_bins)
    return Path(out_stats), Path(out_bins)
