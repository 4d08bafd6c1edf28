"""Workflow glue of the dose analysis and the cohort figures (issue #5).

``qmri pipeline subject-dose`` (:func:`subject_dose`) and ``qmri pipeline cohort-figures``
(:func:`cohort_figures`) run these; the numerical work lives in :mod:`qmri.dose` and
:mod:`qmri.figures_cohort`.

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
from qmri.io import load_nifti, read_data, read_json, sidecar_path, write_csv

__all__ = [
    "COMPOSITE_ROIS",
    "DEFAULT_BINNED_ROIS",
    "DEFAULT_TRAJECTORY_ROIS",
    "DEFAULT_WATERFALL_ROIS",
    "DOSEBINS_COLUMNS",
    "DOSESTATS_COLUMNS",
    "cohort_figures",
    "composite_rois",
    "dose_files",
    "figure_names",
    "km_outcomes",
    "subject_dose",
]

#: Composite ROIs of the dose analysis (see the module docstring).
COMPOSITE_ROIS: tuple[str, ...] = ("cord", "marrow")

#: ROIs whose qMRI change is binned by dose, by default.
DEFAULT_BINNED_ROIS: tuple[str, ...] = ("cord", "marrow")

#: ROIs drawn as trajectories, by default.
DEFAULT_TRAJECTORY_ROIS: tuple[str, ...] = ("tumor", "ctv", "vb_treated_nontumor", "cord_treated")

#: ROIs drawn as waterfall plots (one per map and follow-up session), by default.
DEFAULT_WATERFALL_ROIS: tuple[str, ...] = ("tumor",)


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


def _read_rois(rois_mask: Path) -> tuple[dict[str, np.ndarray], np.ndarray, float]:
    from qmri.pipeline import _read_roi_names, _roi_names_path

    img = load_nifti(rois_mask, ndim=4)
    names = _read_roi_names(rois_mask)
    if len(names) != img.shape[3]:
        raise QMRIInputError(
            f"{len(names)} ROI names for {img.shape[3]} volumes", _roi_names_path(rois_mask)
        )
    data = np.asarray(img.dataobj, dtype=bool)
    rois = {name: data[..., i] for i, name in enumerate(names)}
    voxel_ml = abs(float(np.linalg.det(img.affine[:3, :3]))) / 1000.0
    return rois, img.affine, voxel_ml


def _clinical(participants_tsv: Path, subject: str) -> tuple[float, float]:
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


def _baseline_grid_maps(directory: Path) -> dict[str, tuple[Path, str]]:
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


def _session_of_dir(directory: Path) -> str:
    """Session label of ``sub-<s>/ses-<t>/space-baseline``."""
    for part in reversed(Path(directory).parts):
        if part.startswith("ses-"):
            return part.removeprefix("ses-")
    raise QMRIInputError(
        "cannot tell the session of this folder (no ses-<label> in it)", directory
    )


def subject_dose(
    subject: str,
    dose_nifti: Path,
    rois_mask: Path,
    participants_tsv: Path,
    sessions_tsv: Path,
    baseline_session: str,
    baseline_grid_dirs: Sequence[Path],
    out_stats: Path,
    out_bins: Path,
    *,
    bin_edges_gy: Sequence[float] | None = None,
    eqd2_bin_edges_gy: Sequence[float] | None = None,
    alpha_beta_gy: Mapping[str, float] | None = None,
    hot_volume_cc: float = 0.03,
    binned_rois: Sequence[str] = DEFAULT_BINNED_ROIS,
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
        Dose bins (Gy) and alpha/beta ratios by ROI-name prefix (Gy), see :mod:`qmri.dose`;
        defaults from there.
    hot_volume_cc : float, default 0.03
        Hot volume of the ``d0_03cc_gy`` column (cm^3).
    binned_rois : sequence of str
        ROIs whose change is binned by dose: derived ROI names or :data:`COMPOSITE_ROIS`.
    """
    from qmri import dose as dosemod
    from qmri import tables

    subject = tables.subject_label(subject)
    rois, affine, voxel_ml = _read_rois(rois_mask)
    shape = next(iter(rois.values())).shape
    dose = dosemod.read_dose(dose_nifti, shape, affine)
    prescription, fractions = _clinical(participants_tsv, subject)
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
    by_session = {_session_of_dir(d): _baseline_grid_maps(d) for d in baseline_grid_dirs}
    if baseline_session not in by_session:
        raise QMRIInputError(
            f"no space-baseline folder of the baseline session ses-{baseline_session}", "dose"
        )
    base_maps = by_session[baseline_session]
    edges = {
        "bin_edges_gy": dosemod.DEFAULT_DOSE_BIN_EDGES_GY if bin_edges_gy is None
        else tuple(bin_edges_gy),
        "eqd2_bin_edges_gy": dosemod.DEFAULT_EQD2_BIN_EDGES_GY if eqd2_bin_edges_gy is None
        else tuple(eqd2_bin_edges_gy),
    }  # fmt: skip
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
    """The PNG names (under ``cohort/``) that :func:`cohort_figures` writes; a CSV is beside each."""
    names = [f"trajectories_{roi}.png" for roi in trajectory_rois]
    names += [
        f"waterfall_{roi}_{m}_ses-{ses}.png"
        for roi in waterfall_rois
        for m in maps
        for ses in sessions
    ]
    names += [f"km_{outcome}.png" for outcome in km]
    return names


def cohort_figures(
    roistats_csv: Path,
    response_csv: Path,
    out_dir: Path,
    *,
    trajectory_rois: Sequence[str] = DEFAULT_TRAJECTORY_ROIS,
    waterfall_rois: Sequence[str] = DEFAULT_WATERFALL_ROIS,
    maps: Sequence[str] = (),
    sessions: Sequence[str] = (),
    km_csv: Path | None = None,
    km: Sequence[str] = (),
    flag_thresholds: Mapping[str, float] | None = None,
    stat: str = "median",
) -> list[Path]:
    """The cohort figures, each a PNG with the tidy CSV it was drawn from beside it.

    ``trajectories_<roi>.png``: the ROI's median of every map over days from SBRT, one line per
    subject; ``waterfall_<roi>_<map>_ses-<session>.png``: percent change of the median at that
    follow-up, one bar per subject, with the response-flag thresholds of that map as dashed
    lines; ``km_<outcome>.png``: Kaplan-Meier curves from ``outcomes_km.csv``. A figure without
    data says so (its CSV holds only the header). Names: :func:`figure_names`.
    """
    from qmri import figures_cohort as fig
    from qmri import response as resp_mod
    from qmri import tables

    out_dir = Path(out_dir)
    roistats = tables.read_table(roistats_csv)
    response = tables.read_table(response_csv)
    rules = resp_mod.parse_thresholds(flag_thresholds) if flag_thresholds else []
    written: list[Path] = []
    for roi in trajectory_rois:
        written += fig.trajectory_figure(
            roistats, out_dir / f"trajectories_{roi}.png", roi=roi, stat=stat
        )
    for roi in waterfall_rois:
        for m in maps:
            lines = [
                -r.threshold_pct if r.direction == "fall" else r.threshold_pct
                for r in rules
                if r.map.lower() == m.lower()
            ]
            for ses in sessions:
                written += fig.waterfall_figure(
                    response, out_dir / f"waterfall_{roi}_{m}_ses-{ses}.png", roi=roi,
                    map_name=m, session=ses, stat=stat, thresholds_pct=lines,
                )  # fmt: skip
    if km:
        if km_csv is None:
            raise QMRIInputError("Kaplan-Meier figures asked for without --km table")
        table = tables.read_table(km_csv)
        for outcome in km:
            written += fig.km_figure(table, out_dir / f"km_{outcome}.png", outcome=outcome)
    return written
