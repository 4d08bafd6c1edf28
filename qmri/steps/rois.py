"""Step ``derive_rois``: the contract's ROIs from a subject's baseline labels, once.

The science is :func:`qmri.rois.derive_rois`; the mask file is :mod:`qmri.roimask`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from qmri import labels, rois, tables
from qmri.errors import QMRIInputError
from qmri.io import load_nifti
from qmri.provenance import software
from qmri.roimask import write_rois

__all__ = ["derive_subject_rois"]


def derive_subject_rois(
    *,
    subject: str,
    dseg: Path,
    reference: Path,
    participants: Path,
    ctv_plan: Path | None,
    out_mask: Path,
) -> Path:
    """Derive the contract's ROIs from the baseline labels; write them as one 4D mask.

    The labels must be drawn on the baseline reference (same grid); ``ctv_plan`` is the
    treatment plan's CTV mask beside them when there is one (ROI ``ctv_plan``). The ROI
    names, in volume order, go to a ``.tsv`` beside the mask (``index``, ``roi``).
    """
    table = labels.read_dseg_tsv(Path(str(dseg).replace(".nii.gz", ".tsv")))
    img = load_nifti(dseg, ndim=3)
    ref = load_nifti(reference, ndim=3)
    if img.shape != ref.shape or not np.allclose(img.affine, ref.affine, atol=1e-3):
        raise QMRIInputError(
            f"label grid {img.shape} does not match its reference {Path(reference).name} "
            f"{ref.shape} (labels must be drawn on the baseline reference)",
            dseg,
        )
    data = labels.check_labels(np.asarray(img.dataobj), table, dseg)
    levels = tables.treated_levels(participants, subject)
    plan = None
    if ctv_plan is not None:
        plan = np.asarray(load_nifti(ctv_plan, ndim=3).dataobj) > 0
    try:
        derived = rois.derive_rois(data, table, levels, ctv_plan=plan)
    except QMRIInputError as error:
        if error.path is not None:
            raise
        # the treated level (participants.tsv) and the labels disagree: name both files
        raise QMRIInputError(
            f"sub-{subject}: {error.problem} ({Path(dseg).name})", participants
        ) from None
    sidecar = {
        "Description": "derived ROIs of the data contract, one binary mask per volume "
        "(names in the .tsv beside this file), on the baseline reference grid",
        "TreatedLevels": levels,
        "Sources": [str(p) for p in (dseg, participants, ctv_plan) if p is not None],
        **software(),
    }
    return write_rois(derived, img.affine, out_mask, sidecar=sidecar)
