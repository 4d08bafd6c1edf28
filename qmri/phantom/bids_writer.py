"""Writing the phantom as a BIDS dataset: raw top level, labels derivative, truth derivative.

:func:`write_phantom_dataset` draws the subjects (:mod:`qmri.phantom.subjects`), writes each
session's raw series (:mod:`qmri.phantom.series`) and beside them the ROI labels
(``derivatives/labels``) and the ground truth (``derivatives/truth``). The layout is documented
in the package docstring (:mod:`qmri.phantom`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qmri import __version__
from qmri.errors import QMRIInputError
from qmri.io import save_nifti, write_json
from qmri.phantom.anatomy import GEOMETRY, Grid, label_names, make_grid
from qmri.phantom.bids_files import write_dseg, write_text, write_tsv
from qmri.phantom.protocol import EXTRA_SERIES, PARKER_AIF, PHANTOM_PROTOCOL
from qmri.phantom.series import ReferenceMaps, write_session_series
from qmri.phantom.signals import parker_aif, t2star_table
from qmri.phantom.subjects import Subject, make_subject
from qmri.phantom.tissues import (
    PARAMETER_UNITS,
    PARAMETERS,
    TISSUE_INDEX,
    TISSUES,
    session_kinds,
    tissue_parameters,
)

__all__ = ["TRUTH_MAPS", "write_phantom_dataset"]


def _dataset_description(name: str, *, derivative: bool) -> dict[str, Any]:
    desc: dict[str, Any] = {
        "Name": name,
        "BIDSVersion": "1.10.0",
        "DatasetType": "derivative" if derivative else "raw",
        "License": "CC0",
        "Authors": ["qmri developers"],
    }
    if derivative:
        desc["GeneratedBy"] = [
            {
                "Name": "qmri.phantom",
                "Version": __version__,
                "Description": "Digital reference object of the thoraco-lumbar spine",
            }
        ]
    else:
        desc["GeneratedBy"] = [{"Name": "qmri.phantom", "Version": __version__}]
    return desc


_README = """\
qmri digital reference object: thoraco-lumbar spine with an SBRT-treated metastasis
===================================================================================

Synthetic 1.5 T data written by qmri.phantom.write_phantom_dataset ({mode}, seed {seed}).
Each subject has five labelled vertebral levels and an intraosseous tumour in the middle
(treated) level; the sessions are a baseline ("pre") and follow-ups after SBRT, repositioned by a
known rigid transform. Per session: a T2w reference, variable flip angle SPGR (VFA) with a B1
map (fmap/TB1map, percent), multi-echo spin echo (MESE), IVIM diffusion (dwi) and DCE
(perf/*_dce, listed in .bidsignore because BIDS has no DCE suffix yet).

derivatives/labels holds the ROI labels drawn on the baseline T2w (dseg + tsv);
derivatives/truth the true parameter maps, tissue maps, motion, protocol and AIF.
All values are documented in the qmri.phantom module. The data are synthetic: CC0.
"""

_PARTICIPANTS_JSON: dict[str, Any] = {
    "participant_id": {"Description": "Participant label"},
    "treated_levels": {
        "Description": "Vertebral level(s) treated with SBRT, comma-separated (e.g. T11)"
    },
    "age": {"Description": "Age at baseline", "Units": "year"},
    "sex": {"Description": "Sex", "Levels": {"M": "male", "F": "female"}},
    "dose_gy": {"Description": "Prescribed SBRT dose", "Units": "Gy"},
    "fractions": {"Description": "Number of SBRT fractions"},
}

_SESSIONS_JSON: dict[str, Any] = {
    "session_id": {"Description": "Session identifier (ses-<label>)"},
    "days_from_sbrt": {
        "Description": "Days from the first SBRT fraction (negative: before treatment)",
        "Units": "day",
    },
}

#: Truth map suffix -> (parameter column, units, description).
TRUTH_MAPS: dict[str, tuple[str, str, str]] = {
    "T1map": ("T1", "s", "longitudinal relaxation time"),
    "T2map": ("T2", "s", "transverse relaxation time"),
    "ADC": ("D", "mm^2/s", "apparent diffusion coefficient (= D, see qmri.phantom)"),
    "D": ("D", "mm^2/s", "IVIM diffusion coefficient"),
    "f": ("f", "fraction", "IVIM perfusion fraction"),
    "Dstar": ("Dstar", "mm^2/s", "IVIM pseudo-diffusion coefficient"),
    "Ktrans": ("Ktrans", "1/min", "extended-Tofts transfer constant"),
    "ve": ("ve", "fraction", "extravascular extracellular volume fraction"),
    "vp": ("vp", "fraction", "plasma volume fraction"),
    "M0map": ("PD", "a.u.", "relative proton density (fat = 1)"),
    "FF": ("FF", "fraction", "fat fraction"),
}

_TRUTH_BIDSIGNORE = """\
*_desc-truth_ADC.*
*_desc-truth_D.*
*_desc-truth_f.*
*_desc-truth_Dstar.*
*_desc-truth_Ktrans.*
*_desc-truth_ve.*
*_desc-truth_vp.*
*_desc-truth_FF.*
*_desc-truth_motion.json
protocol.json
tissue_parameters.tsv
aif.tsv
"""


def _write_truth(
    truth: Path,
    subj: Subject,
    ses: str,
    ref: Grid,
    maps: ReferenceMaps,
    extra_series: Sequence[str],
) -> None:
    """Write the truth maps, tissue and label maps, B1 and motion of one session.

    With the MEGRE series, also the true T2* (``desc-truth_T2starmap``).
    """
    stem = f"sub-{subj.label}_ses-{ses}"
    sdir = truth / f"sub-{subj.label}" / f"ses-{ses}"
    tissue, labels, b1, table = maps
    for suffix, (param, units, desc) in TRUTH_MAPS.items():
        values = table[:, PARAMETERS.index(param)][tissue]
        save_nifti(
            values,
            ref.affine,
            sdir / "anat" / f"{stem}_desc-truth_{suffix}.nii.gz",
            dtype=np.float32,
            sidecar={"Units": units, "Description": f"True {desc} (0 in air)"},
        )
    tissue_names = {TISSUE_INDEX[t.name]: t.name for t in TISSUES}
    write_dseg(tissue, ref.affine, tissue_names, sdir / "anat" / f"{stem}_desc-tissue_dseg.nii.gz")
    write_dseg(
        labels,
        ref.affine,
        label_names(subj.levels),
        sdir / "anat" / f"{stem}_desc-truth_dseg.nii.gz",
    )
    save_nifti(
        100.0 * b1,
        ref.affine,
        sdir / "fmap" / f"{stem}_desc-truth_TB1map.nii.gz",
        dtype=np.float32,
        sidecar={"Units": "percent", "Description": "True B1 (actual/nominal flip angle x 100)"},
    )
    write_json(subj.motions[ses].as_dict(), sdir / f"{stem}_desc-truth_motion.json")
    if "MEGRE" in extra_series:
        save_nifti(
            t2star_table(table)[tissue],
            ref.affine,
            sdir / "anat" / f"{stem}_desc-truth_T2starmap.nii.gz",
            dtype=np.float32,
            sidecar={"Units": "s", "Description": "True T2* (0 in air)"},
        )


def _write_top_level(root: Path, subjects: Sequence[Subject], *, seed: int, small: bool):
    mode = "small" if small else "full size"
    write_json(
        _dataset_description("qmri spine phantom", derivative=False),
        root / "dataset_description.json",
    )
    write_text(_README.format(mode=mode, seed=seed), root / "README")
    write_text("perf/*_dce.*\n**/perf/*_dce.*\n", root / ".bidsignore")
    rows = [
        (f"sub-{s.label}", s.levels[s.treated], s.age, s.sex, s.dose_gy, s.fractions)
        for s in subjects
    ]
    columns = ("participant_id", "treated_levels", "age", "sex", "dose_gy", "fractions")
    write_tsv(rows, columns, root / "participants.tsv")
    write_json(_PARTICIPANTS_JSON, root / "participants.json")
    write_json(_SESSIONS_JSON, root / "sessions.json")


def _write_truth_top_level(
    truth: Path,
    subjects: Sequence[Subject],
    grids: Mapping[str, tuple[Grid, Grid]],
    sessions: Sequence[str],
    *,
    seed: int,
    small: bool,
) -> None:
    proto = PHANTOM_PROTOCOL
    write_json(
        _dataset_description("qmri spine phantom: ground truth", derivative=True),
        truth / "dataset_description.json",
    )
    write_text(_TRUTH_BIDSIGNORE, truth / ".bidsignore")
    kinds = session_kinds(sessions)
    rows = []
    for ses, kind in kinds.items():
        for name, tissue in tissue_parameters(kind).items():
            rows.append((ses, kind, name, *(getattr(tissue, p) for p in PARAMETERS)))
    write_tsv(
        rows, ("session", "session_kind", "tissue", *PARAMETERS), truth / "tissue_parameters.tsv"
    )
    t = proto.dce_times_s
    cb = parker_aif(t, proto.dce_bolus_arrival_s)
    aif_rows = [
        (float(a), float(b / (1 - proto.hematocrit)), float(b)) for a, b in zip(t, cb, strict=True)
    ]
    write_tsv(aif_rows, ("time", "cp", "cb"), truth / "aif.tsv")
    protocol = {
        "protocol": proto.as_dict(),
        "parker_aif": PARKER_AIF,
        "parker_aif_definition": (
            "Cb(t) [mM] = sum_n A_n/(sigma_n sqrt(2 pi)) exp(-(tm-T_n)^2/(2 sigma_n^2)) "
            "+ alpha exp(-beta tm)/(1+exp(-s (tm-tau))), tm = (t - bolus_arrival_s)/60 min, "
            "0 for tm < 0; Cp = Cb/(1-hematocrit)"
        ),
        "r1_per_mM_s": proto.r1_per_mM_s,
        "hematocrit": proto.hematocrit,
        "contrast_agent": proto.contrast_agent,
        "magnetic_field_strength_t": proto.field_strength_t,
        "stored_scale": {s: proto.stored_scale(s) for s in proto.noise_sigma},
        "stored_scale_note": (
            "stored int16 value = round(|S + noise| * stored_scale[series]), S in PD units; "
            "the stored noise sigma is noise_sigma_stored"
        ),
        "geometry_mm": dataclasses.asdict(GEOMETRY),
        "parameter_units": PARAMETER_UNITS,
        "session_kinds": kinds,
        "seed": seed,
        "small": small,
        "subjects": {
            f"sub-{s.label}": {
                "levels": list(s.levels),
                "treated_level": s.levels[s.treated],
                "treated_body_centre_mm": s.centre.tolist(),
                "reference_grid": {
                    "shape": list(grids[s.label][0].shape),
                    "affine": grids[s.label][0].affine.tolist(),
                },
                "coarse_grid": {
                    "shape": list(grids[s.label][1].shape),
                    "affine": grids[s.label][1].affine.tolist(),
                },
                "b1_polynomial": s.b1_coeffs.tolist(),
            }
            for s in subjects
        },
    }
    write_json(protocol, truth / "protocol.json")


def _check_arguments(n_subjects: int, sessions: Sequence[str], seed: int) -> None:
    if isinstance(n_subjects, bool) or not isinstance(n_subjects, int) or n_subjects < 1:
        raise QMRIInputError(f"n_subjects must be a positive integer, got {n_subjects!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise QMRIInputError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(sessions, str):
        raise QMRIInputError("sessions must be a sequence of session labels, not a string")
    bad = [s for s in sessions if not re.fullmatch(r"[A-Za-z0-9]+", str(s))]
    if bad:
        raise QMRIInputError(f"session labels must be alphanumeric (BIDS), got {bad}")
    if len(set(sessions)) != len(sessions):
        raise QMRIInputError(f"session labels must be unique, got {list(sessions)}")
    session_kinds(sessions)


def write_phantom_dataset(
    outdir: str | Path,
    *,
    n_subjects: int = 2,
    sessions: Sequence[str] = ("pre", "fu1", "fu2"),
    seed: int = 0,
    small: bool = False,
    extra_series: Sequence[str] = (),
) -> Path:
    """Write the spine phantom as a BIDS dataset with labels and ground truth.

    Parameters
    ----------
    outdir : str or Path
        Dataset root; created if needed (existing phantom files are overwritten).
    n_subjects : int, default 2
        Number of subjects (``sub-01``, ``sub-02``, ...); subject ``i`` uses the level set
        ``LEVEL_SETS[i % 4]`` with the middle level treated.
    sessions : sequence of str, default ("pre", "fu1", "fu2")
        Session labels (1 to 3, alphanumeric); the first is the baseline, the others are the
        follow-ups ``fu1`` and ``fu2`` in that order
        (:func:`~qmri.phantom.tissues.session_kinds`).
    seed : int, default 0
        Seed of the noise, motion, B1 field, clinical columns and session days; the same seed
        gives identical files.
    small : bool, default False
        Coarse grid (6 x 5 x 5 mm for every series, about 0.5 MB per subject and session) for
        fast tests, with the same anatomy, protocol, layout and files.
    extra_series : sequence of {"IRT1", "MEGRE"}, default ()
        Optional series added to every session on the reference grid: magnitude inversion
        recovery (``inv-<i>_IRT1``, 6 inversion times, TR 6 s) and multi-echo gradient echo
        (``echo-<i>_MEGRE``, 6 echoes 3-18 ms; truth ``desc-truth_T2starmap`` from
        :data:`~qmri.phantom.tissues.R2_PRIME_PER_S`). Without them the dataset is unchanged.

    Returns
    -------
    Path
        The dataset root.

    Raises
    ------
    QMRIInputError
        For invalid arguments.
    """
    _check_arguments(n_subjects, sessions, seed)
    unknown = sorted(set(extra_series) - set(EXTRA_SERIES))
    if unknown:
        raise QMRIInputError(
            f"unknown extra series {unknown}; the phantom can add {', '.join(EXTRA_SERIES)}"
        )
    sessions = tuple(str(s) for s in sessions)
    root = Path(outdir)
    root.mkdir(parents=True, exist_ok=True)
    proto = PHANTOM_PROTOCOL
    voxel = np.array(proto.voxel_mm_small if small else proto.voxel_mm)
    coarse = proto.coarse_factor_small if small else proto.coarse_factor
    kinds = session_kinds(sessions)
    subjects = [make_subject(i, sessions, int(seed)) for i in range(n_subjects)]
    grids: dict[str, tuple[Grid, Grid]] = {}
    for i, subj in enumerate(subjects):
        grid_pair = (
            make_grid(subj.centre, voxel),
            make_grid(subj.centre, voxel * coarse),
        )
        grids[subj.label] = grid_pair
        write_tsv(
            [(f"ses-{ses}", subj.days[ses]) for ses in sessions],
            ("session_id", "days_from_sbrt"),
            root / f"sub-{subj.label}" / f"sub-{subj.label}_sessions.tsv",
        )
        for j, ses in enumerate(sessions):
            maps = write_session_series(
                root, subj, i, j, ses, kinds[ses], grid_pair, int(seed), extra_series
            )
            _write_truth(
                root / "derivatives" / "truth", subj, ses, grid_pair[0], maps, extra_series
            )
            if j == 0:
                path = (
                    root
                    / "derivatives"
                    / "labels"
                    / f"sub-{subj.label}"
                    / f"ses-{ses}"
                    / "anat"
                    / f"sub-{subj.label}_ses-{ses}_dseg.nii.gz"
                )
                write_dseg(maps.labels, grid_pair[0].affine, label_names(subj.levels), path)
    write_json(
        _dataset_description("qmri spine phantom: ROI labels", derivative=True),
        root / "derivatives" / "labels" / "dataset_description.json",
    )
    _write_top_level(root, subjects, seed=int(seed), small=small)
    _write_truth_top_level(
        root / "derivatives" / "truth", subjects, grids, sessions, seed=int(seed), small=small
    )
    return root
