"""Steps ``session_roistats``, ``subject_tables``, ``cohort_table`` and ``describe_output``.

Statistics are :mod:`qmri.stats`, tables :mod:`qmri.tables`; these functions read the maps
and transforms, pull the ROIs onto each map's native grid (:func:`qmri.roimask.rois_on_grid`)
and write the CSVs of the data contract (section 3).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import qmri
from qmri import stats, tables
from qmri.errors import QMRIInputError
from qmri.io import (
    atomic_output,
    load_nifti,
    read_data,
    read_json,
    sidecar_path,
    write_csv,
    write_json,
)
from qmri.roimask import rois_on_grid

__all__ = [
    "PRM_COLUMNS",
    "MapFiles",
    "cohort_table",
    "describe_output",
    "session_roistats",
    "subject_tables",
]

#: Columns of the per-session parametric-response table (before subject/session are added).
PRM_COLUMNS = (
    "roi", "map", "unit", "threshold", "n_voxels", "n_valid",
    "fraction_increased", "fraction_decreased", "fraction_stable",
)  # fmt: skip

#: One reported map of a session: ``(table name, map, its fit mask, its series transform)``.
MapFiles = tuple[str, Path, Path, Path]


def session_roistats(
    *, maps: Sequence[MapFiles], rois: Path, session_xfm: Path, out_csv: Path
) -> Path:
    """ROI statistics of one session: rows (roi, map, unit, statistics...).

    Parameters
    ----------
    maps : sequence of (name, map, fitmask, series transform)
        Each reported map with its fit mask and the transform of its series to the session
        reference (``from-<series>_to-ref``), in table order.
    rois : path
        The subject's derived ROIs on the baseline grid (4D, names in the ``.tsv`` beside it).
    session_xfm : path
        The session's ``from-ref_to-baseline`` transform.
    out_csv : path
        The table (an empty file when the session has no map).
    """
    frames = []
    for name, path, fitmask_path, series_xfm in maps:
        img = load_nifti(path, ndim=3)
        unit = read_json(sidecar_path(path)).get("Units", "")
        values = read_data(img)
        valid = read_data(load_nifti(fitmask_path, ndim=3)) > 0
        roi_masks = rois_on_grid(rois, img.shape, img.affine, series_xfm, session_xfm)
        voxel_ml = abs(np.linalg.det(img.affine[:3, :3])) / 1000.0
        frames.append(
            stats.session_roistats(
                {name: (values, unit, valid)}, {name: roi_masks}, {name: voxel_ml}
            )
        )
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    write_csv(table, out_csv)
    return Path(out_csv)


def _session_of(path: Path) -> str:
    return Path(path).name.split("_ses-")[1].split("_")[0]


def _per_session(paths: Sequence[Path], days: Mapping[str, int], sessions_tsv: Path):
    frames = []
    for path in paths:
        session = _session_of(path)
        if session not in days:
            raise QMRIInputError(f"session '{session}' has no row", sessions_tsv)
        if Path(path).stat().st_size <= 1:
            continue  # a session with no fitted map has no rows
        df = tables.read_table(path)
        if df.empty:
            continue
        df.insert(0, "session", session)
        frames.append(df)
    return frames


def _registration_rows(
    xfm_sidecars: Sequence[Path], label: str, days: Mapping[str, int]
) -> list[dict[str, Any]]:
    rows = []
    for path in xfm_sidecars:
        meta = read_json(path)
        session = _session_of(path)
        rows.append(
            {
                "subject": label,
                "session": session,
                "days_from_sbrt": days.get(session),
                "transform": Path(path).name.replace(".json", ".txt"),
                "type": meta.get("Type", ""),
                "metric": meta.get("Metric", ""),
                "final_metric": meta.get("FinalMetricValue"),
                "metric_bound": meta.get("MetricBound"),
                "flagged": bool(meta.get("Flagged", False)),
                "iterations": meta.get("Iterations"),
            }
        )
    return rows


def subject_tables(
    *,
    subject: str,
    session_tables: Sequence[Path],
    prm_tables: Sequence[Path],
    xfm_sidecars: Sequence[Path],
    sessions_tsv: Path,
    out_roistats: Path,
    out_response: Path,
    out_prm: Path,
    out_registration: Path,
) -> None:
    """Assemble a subject's tables from its sessions.

    ``roistats.csv`` and ``response.csv`` (data contract section 3), the parametric-response
    fractions of every follow-up (``prm.csv``) and one row per registration with its final
    metric and whether it was flagged (``registration.csv``).
    """
    days = tables.read_sessions_tsv(sessions_tsv)
    roistats = tables.build_roistats(
        _per_session(session_tables, days, sessions_tsv), subject, days
    )
    write_csv(roistats, out_roistats)
    write_csv(tables.response_table(roistats, tables.baseline_session(days)), out_response)
    label = subject.removeprefix("sub-")
    frames = _per_session(prm_tables, days, sessions_tsv)
    prm_table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["session", *PRM_COLUMNS]
    )  # fmt: skip
    prm_table.insert(0, "subject", label)
    prm_table.insert(2, "days_from_sbrt", prm_table["session"].map(days))
    write_csv(prm_table, out_prm)
    write_csv(pd.DataFrame(_registration_rows(xfm_sidecars, label, days)), out_registration)


def cohort_table(*, tables_in: Sequence[Path], out_csv: Path) -> Path:
    """Concatenate per-subject tables into one cohort table."""
    write_csv(tables.cohort_table([Path(p) for p in tables_in]), out_csv)
    return Path(out_csv)


_README = """\
# qmri derivative

Quantitative maps, ROI tables and QC figures written by qmri {version} from the raw BIDS dataset
{raw}.

- `sub-<s>/ses-<t>/{{anat,dwi,perf}}/`: fitted maps (`desc-<fit>`), each with a JSON sidecar
  holding its unit, algorithm, every model option and its sources; `R2` is the goodness of fit
  and `fitmask` 1 where the fit succeeded (failed voxels are NaN in the maps).
- `sub-<s>/ses-<t>/xfm/`: motion correction within each series and the registrations to the
  session reference and to the baseline (ITK text, JSON sidecars with the final metric).
- `sub-<s>/ses-<t>/space-baseline/`: the maps on the baseline grid and the parametric response
  maps (display and voxelwise change only).
- `sub-<s>/rois/`: the derived ROIs on the baseline grid; `sub-<s>/qc/`: QC figures.
- `sub-<s>/sub-<s>_<table>.csv` and `cohort/<table>.csv`: the tables of the data contract
  (section 3); units are in their `unit` columns.
- `logs/`: one log per job (parameters, time, peak memory).
"""


def describe_output(
    *, bids_dir: Path, config_sha256: str, bidsignore: Sequence[str], out_json: Path
) -> None:
    """Write the derivative's ``dataset_description.json``, ``README.md`` and ``.bidsignore``.

    ``bidsignore`` lists the output's files outside the BIDS schema
    (:func:`qmri.paths.bidsignore`), so the folder passes the BIDS validator as a derivative;
    the README says what the folder holds and where its units and options are recorded.
    """
    write_json(
        {
            "Name": "qmri quantitative maps and ROI tables",
            "BIDSVersion": "1.10.0",
            "DatasetType": "derivative",
            "GeneratedBy": [
                {
                    "Name": "qmri",
                    "Version": qmri.__version__,
                    "Description": "Quantitative MRI of spinal metastases treated with SBRT",
                    "ConfigSHA256": config_sha256,
                }
            ],
            "DatasetLinks": {"raw": str(bids_dir)},
        },
        out_json,
    )
    root = Path(out_json).parent
    with atomic_output(root / ".bidsignore") as tmp:
        tmp.write_text("\n".join(bidsignore) + "\n", encoding="utf-8")
    with atomic_output(root / "README.md") as tmp:
        tmp.write_text(_README.format(version=qmri.__version__, raw=bids_dir), encoding="utf-8")
