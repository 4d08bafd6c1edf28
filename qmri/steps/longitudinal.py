"""Step ``baseline_space``: a session's maps on the baseline grid and its parametric response.

Maps are resampled for display and voxelwise change only (ROI statistics stay in native
grids); the voxel classification is :mod:`qmri.prm`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from qmri import prm
from qmri.io import (
    atomic_output,
    load_nifti,
    read_data,
    read_json,
    save_nifti,
    sidecar_path,
    write_csv,
)
from qmri.provenance import software
from qmri.registration import pull_back_labels, resample_nearest, series_to_baseline_matrix
from qmri.roimask import read_rois
from qmri.steps.tables import PRM_COLUMNS, MapFiles

__all__ = ["baseline_space"]


def _on_baseline_grid(
    map_path: Path, fitmask_path: Path, series_xfm: Path, session_xfm: Path,
    base: nib.Nifti1Image,
) -> tuple[np.ndarray, np.ndarray, str]:  # fmt: skip
    """A map and its fit mask resampled onto the baseline grid by nearest neighbour.

    Nearest neighbour, not trilinear: interpolation would mix values across tissue borders
    (tumour with marrow, cord with CSF) and create changes that are not there.
    """
    img = load_nifti(map_path, ndim=3)
    to_series = np.linalg.inv(series_to_baseline_matrix(series_xfm, session_xfm))
    values = resample_nearest(
        read_data(img), img.affine, base.shape, base.affine, to_series, fill=np.nan
    )
    fm = load_nifti(fitmask_path, ndim=3)
    valid = pull_back_labels(
        np.asarray(fm.dataobj, dtype=np.uint8), fm.affine, base.shape, base.affine, to_series
    ).astype(bool)
    return values, valid & np.isfinite(values), read_json(sidecar_path(map_path)).get("Units", "")


def baseline_space(
    *,
    stem: str,
    maps: Sequence[MapFiles],
    session_xfm: Path,
    baseline_maps: Sequence[MapFiles],
    baseline_session_xfm: Path,
    baseline_reference: Path,
    rois: Path,
    thresholds: Mapping[str, float],
    erode_voxels: int,
    out_dir: Path,
    out_csv: Path,
) -> Path:
    """Resample a session's maps onto the baseline grid and classify the voxelwise change.

    Writes ``<stem>_space-baseline_<map>.nii.gz`` and, for every map present at both
    timepoints with a threshold (config ``prm.thresholds``, in the map's unit),
    ``<stem>_space-baseline_desc-prm<map>_dseg.nii.gz`` (1 decreased, 2 stable, 3 increased)
    and the per-ROI fractions in ``out_csv`` (ROIs eroded by ``erode_voxels``). At the
    baseline session the table has no rows.
    """
    base = load_nifti(baseline_reference, ndim=3)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    roi_masks, _ = read_rois(rois)
    eroded = prm.erode_rois(roi_masks, erode_voxels)
    baseline_by_name = {m[0]: m for m in baseline_maps}
    rows = []
    same_session = Path(session_xfm).resolve() == Path(baseline_session_xfm).resolve()
    for name, map_path, fitmask_path, series_xfm in maps:
        values, valid, unit = _on_baseline_grid(
            map_path, fitmask_path, series_xfm, session_xfm, base
        )
        save_nifti(
            np.where(valid, values, np.nan), base.affine,
            out_dir / f"{stem}_space-baseline_{name}.nii.gz",
            sidecar={
                **read_json(sidecar_path(map_path)),
                "Sources": [str(map_path), str(series_xfm), str(session_xfm)],
                "Resampling": "nearest neighbour onto the baseline reference grid",
                "Note": "for display and voxelwise change; ROI statistics use native grids",
                **software(),
            },
        )  # fmt: skip
        if same_session or name not in baseline_by_name or name not in thresholds:
            continue
        _, b_map, b_fitmask, b_xfm = baseline_by_name[name]
        b_values, b_valid, _ = _on_baseline_grid(
            b_map, b_fitmask, b_xfm, baseline_session_xfm, base
        )
        classes = prm.response_classes(b_values, values, valid & b_valid, thresholds[name])
        prm_path = out_dir / f"{stem}_space-baseline_desc-prm{name}_dseg.nii.gz"
        prm_sidecar = {
            "Description": f"parametric response map of {name}: voxelwise change from baseline "
            "beyond the threshold (1 decreased, 2 stable, 3 increased; 0 not evaluated)",
            "Threshold": thresholds[name],
            "Units": unit,
            "Sources": [str(b_map), str(map_path)],
            **software(),
        }
        save_nifti(classes, base.affine, prm_path, dtype=np.uint8, sidecar=prm_sidecar)
        with atomic_output(Path(str(prm_path).replace(".nii.gz", ".tsv"))) as tmp:
            tmp.write_text("index\tname\n1\tdecreased\n2\tstable\n3\tincreased\n")
        for row in prm.response_fractions(classes, eroded):
            rows.append({**row, "map": name, "unit": unit, "threshold": thresholds[name]})
    write_csv(pd.DataFrame(rows, columns=list(PRM_COLUMNS)), out_csv)
    return Path(out_csv)
