"""The phantom's planned dose (the dose truth): prescription in the CTV, exponential fall-off.

The CTV is computed here from the phantom's own label definitions
(:func:`~qmri.phantom.anatomy.label_names`), not by the ROI code the dose analysis tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage

from qmri.errors import QMRIInputError
from qmri.io import save_nifti
from qmri.phantom.anatomy import POSTERIOR_SECTORS, label_names, subject_layout
from qmri.phantom.bids_files import read_tsv

__all__ = ["DOSE_FALLOFF_MM", "ctv_mask", "write_phantom_dose"]

#: Distance (mm) over which the phantom's dose falls by a factor e outside the CTV.
DOSE_FALLOFF_MM = 8.0


def ctv_mask(labels: np.ndarray, levels: Sequence[str], treated: Sequence[str]) -> np.ndarray:
    """CTV of a phantom label map, as the data contract (section 2) defines it.

    The GTV (``tumor``), plus the whole vertebral body (``vb_<level>``) of every treated level,
    plus every posterior-element sector (``pel``, ``per``, ``pe`` of any level) the GTV touches:
    that has a voxel in the GTV dilated by one voxel with full (26-) connectivity.

    Parameters
    ----------
    labels : ndarray of int, 3D
        Label map with the indices of :func:`~qmri.phantom.anatomy.label_names` ``(levels)``.
    levels : sequence of str
        The subject's labelled levels, superior to inferior.
    treated : sequence of str
        Treated levels (each one of ``levels``).

    Returns
    -------
    ndarray of bool
        The CTV, shape of ``labels``.
    """
    index = {name: i for i, name in label_names(levels).items()}
    tumor = labels == index["tumor"]
    ctv = tumor | np.isin(labels, [index[f"vb_{level}"] for level in treated])
    grown = ndimage.binary_dilation(tumor, structure=ndimage.generate_binary_structure(3, 3))
    sectors = [index[f"{s}_{level}"] for level in levels for s in POSTERIOR_SECTORS]
    touched = np.intersect1d(np.unique(labels[grown]), sectors)
    return ctv | np.isin(labels, touched)


def _subject_index(participant_id: str, source: Path) -> int:
    """0-based phantom subject index of ``sub-<NN>`` (``sub-01`` is 0)."""
    label = participant_id.removeprefix("sub-")
    if not (label.isdigit() and int(label) >= 1):
        raise QMRIInputError(f"{participant_id!r} is not a phantom subject (sub-01, ...)", source)
    return int(label) - 1


def _number(row: dict[str, str], column: str, kind: type, source: Path) -> Any:
    """The cell ``row[column]`` as ``kind`` (float or int); None if missing or ``n/a``."""
    text = row.get(column, "n/a")
    if text in ("", "n/a"):
        if column == "dose_gy":
            raise QMRIInputError(f"{row['participant_id']}: no dose_gy", source)
        return None
    try:
        return kind(text)
    except ValueError:
        raise QMRIInputError(
            f"{row['participant_id']}: {column} {text!r} is not {kind.__name__}", source
        ) from None


def _baseline_session(sessions_tsv: Path) -> str:
    """The phantom's baseline: the first session of ``sub-<s>_sessions.tsv`` (label only)."""
    sessions = read_tsv(sessions_tsv, ("session_id",))
    if not sessions:
        raise QMRIInputError("no session listed", sessions_tsv)
    return sessions[0]["session_id"].removeprefix("ses-")


def write_phantom_dose(
    bids_dir: str | Path,
    dose_dir: str | Path | None = None,
    *,
    falloff_mm: float = DOSE_FALLOFF_MM,
) -> Path:
    """Write a planned-dose map for every subject of a phantom dataset (the dose truth).

    The dose is the prescription ``dose_gy`` of participants.tsv, uniform in the subject's CTV
    (:func:`ctv_mask` of the baseline labels), and falls off outside as
    ``dose_gy * exp(-d / falloff_mm)`` with ``d`` the Euclidean distance (mm) to the nearest
    CTV voxel centre; at the default 8 mm the cord of the treated level gets up to about half
    the prescription (48 % at most on the sample), the vertebral bodies two levels away under
    1 %. Written on the baseline reference grid (the labels' grid) as
    ``<dose_dir>/sub-<s>/sub-<s>_dose.nii.gz`` (float32, Gy, JSON sidecar), the layout the
    workflow's ``dose_dir`` expects.

    Parameters
    ----------
    bids_dir : str or Path
        A dataset written by :func:`~qmri.phantom.write_phantom_dataset`: its participants.tsv
        (``participant_id``, ``treated_levels``, ``dose_gy``, ``fractions``), sessions tables
        (the first session is the baseline) and baseline labels are read.
    dose_dir : str or Path, optional
        Where to write; default ``<bids_dir>/derivatives/dose``.
    falloff_mm : float, default :data:`DOSE_FALLOFF_MM`
        e-folding distance of the dose outside the CTV (mm).

    Returns
    -------
    Path
        The dose folder.

    Raises
    ------
    QMRIInputError
        Naming the file, if a table is missing or malformed, or the participants or labels are
        not the phantom's (another label table or treated level than the subject's layout).
    """
    bids_dir = Path(bids_dir)
    dose_dir = bids_dir / "derivatives" / "dose" if dose_dir is None else Path(dose_dir)
    participants_tsv = bids_dir / "participants.tsv"
    columns = ("participant_id", "treated_levels", "dose_gy")
    for row in read_tsv(participants_tsv, columns):
        subject = row["participant_id"]
        levels, treated, _ = subject_layout(_subject_index(subject, participants_tsv))
        if row["treated_levels"] != treated:
            raise QMRIInputError(
                f"{subject}: treated_levels {row['treated_levels']!r}, the phantom treats "
                f"{treated}",
                participants_tsv,
            )
        prescription = _number(row, "dose_gy", float, participants_tsv)
        fractions = _number(row, "fractions", int, participants_tsv)
        label = subject.removeprefix("sub-")
        base = _baseline_session(bids_dir / f"sub-{label}" / f"sub-{label}_sessions.tsv")
        anat = bids_dir / "derivatives" / "labels" / f"sub-{label}" / f"ses-{base}" / "anat"
        stem = f"sub-{label}_ses-{base}_dseg"
        names = {r["index"]: r["name"] for r in read_tsv(anat / f"{stem}.tsv", ("index", "name"))}
        if names != {str(i): name for i, name in label_names(levels).items()}:
            raise QMRIInputError(
                f"not the phantom's label table of levels {', '.join(levels)}",
                anat / f"{stem}.tsv",
            )
        dseg = anat / f"{stem}.nii.gz"
        if not dseg.is_file():
            raise QMRIInputError("label map not found", dseg)
        img = nib.load(dseg)
        ctv = ctv_mask(np.asarray(img.dataobj).astype(int), levels, [treated])
        zooms = np.linalg.norm(img.affine[:3, :3], axis=0)
        distance = ndimage.distance_transform_edt(~ctv, sampling=zooms)
        dose = prescription * np.exp(-distance / float(falloff_mm))
        save_nifti(
            dose,
            img.affine,
            dose_dir / f"sub-{label}" / f"sub-{label}_dose.nii.gz",
            dtype=np.float32,
            sidecar={
                "Units": "Gy",
                "Description": (
                    f"Phantom planned dose: {prescription:g} Gy uniform in the CTV, "
                    f"exp(-distance / {float(falloff_mm):g} mm) outside"
                ),
                "PrescriptionDose": prescription,
                "Fractions": fractions,
            },
        )
    return dose_dir
