"""Derived regions of interest (data contract, section 2).

:func:`derive_rois` turns a label image and its lookup table into boolean masks named as the
contract's output tables name them:

``tumor``
    Union of every ``tumor`` / ``tumor_<level>`` label (delineation A: tumour only).
``ctv``
    Delineation B (after the ISRC consensus): ``tumor`` plus the vertebral body (``vb``) of every
    treated level plus every posterior-element sector (``pe_X``, ``pel_X``, ``per_X``, any level)
    that the tumour *touches*. A sector is touched when it overlaps the tumour dilated by one
    voxel with full connectivity (26-connectivity in 3D, i.e. face, edge or corner neighbours;
    :func:`scipy.ndimage.binary_dilation` with ``generate_binary_structure(ndim, ndim)``). The
    whole sector is added, not only the touched voxels.
``vb_treated_nontumor``
    Vertebral bodies of the treated levels minus the tumour (irradiated marrow).
``vb_adjacent``
    Vertebral bodies of the levels exactly one level above or below a treated level, treated
    levels excluded.
``vb_control``
    Vertebral bodies of the levels two or more levels away from every treated level.
``cord_treated``, ``cord_adjacent``
    Cord labels of the treated levels, and of the levels one above or below (not treated).
``ctv_plan``
    The CTV of the treatment plan (a mask beside the labels, from an RTSTRUCT: structures of a
    plan overlap, so it cannot be a label of the ``dseg``), when given: the delineation table
    compares it with the derived ``ctv``.
``vb_<level>``, ``cord_<level>``
    Each labelled level as drawn.

Level distance follows :data:`qmri.labels.LEVELS` (``C7``-``T1``, ``T12``-``L1`` and ``L5``-``S1``
are one level apart). A ROI that is empty is returned as an all-False mask, never dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from scipy import ndimage

from qmri.errors import QMRIInputError
from qmri.labels import (
    LEVEL_INDEX,
    POSTERIOR_ELEMENTS,
    Label,
    check_labels,
    label_table,
    parse_levels,
)

__all__ = ["DERIVED_ROIS", "derive_rois", "rois_from_4d", "rois_to_4d", "touching_sectors"]

#: The derived ROIs, in the contract's order (they come first in :func:`derive_rois`).
DERIVED_ROIS: tuple[str, ...] = (
    "tumor",
    "ctv",
    "vb_treated_nontumor",
    "vb_adjacent",
    "vb_control",
    "cord_treated",
    "cord_adjacent",
)


def _mask_of(labels: np.ndarray, indices: Iterable[int]) -> np.ndarray:
    """Boolean mask of the voxels holding any of ``indices``."""
    indices = list(indices)
    if not indices:
        return np.zeros(labels.shape, dtype=bool)
    if len(indices) == 1:
        return labels == indices[0]
    return np.isin(labels, indices)


def touching_sectors(
    labels: np.ndarray, tumor: np.ndarray, sectors: Mapping[int, Label]
) -> list[Label]:
    """Return the labels among ``sectors`` that the tumour touches.

    Parameters
    ----------
    labels : ndarray of int
        Label image.
    tumor : ndarray of bool
        Tumour mask, same shape.
    sectors : mapping of int to Label
        Candidate labels (for the CTV: the posterior-element sectors).

    Returns
    -------
    list of Label
        Labels whose voxels overlap the tumour dilated by one voxel with full connectivity
        (26-neighbourhood in 3D), in index order.
    """
    if not sectors or not tumor.any():
        return []
    structure = ndimage.generate_binary_structure(tumor.ndim, tumor.ndim)
    grown = ndimage.binary_dilation(tumor, structure=structure)
    hit = set(np.unique(labels[grown]).tolist())
    return [label for index, label in sorted(sectors.items()) if index in hit]


def derive_rois(
    labels: np.ndarray,
    table: Mapping[int, Label | str],
    treated_levels: Sequence[str] | str,
    *,
    ctv_plan: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Derive the contract's ROI masks from a label image.

    Parameters
    ----------
    labels : ndarray of int
        Label image (``dseg``), normally 3D; 0 is background.
    table : mapping of int to Label or str
        Lookup table (label value -> :class:`~qmri.labels.Label` or name), e.g. from
        :func:`qmri.labels.read_dseg_tsv`.
    treated_levels : sequence of str or str
        Treated vertebral levels (``["T12", "L1"]`` or ``"T12,L1"``).
    ctv_plan : ndarray, optional
        The treatment plan's CTV on the label grid (non-zero inside), kept as ROI ``ctv_plan``.

    Returns
    -------
    dict of str to ndarray of bool
        Masks with the shape of ``labels``, in a fixed order: the seven :data:`DERIVED_ROIS`,
        ``ctv_plan`` when given, then ``vb_<level>`` for every level with a ``vb`` label in the table, then
        ``cord_<level>`` for every level with a ``cord`` label, each group in cranio-caudal order.
        Empty ROIs are all-False masks.

    Raises
    ------
    QMRIInputError
        If no treated level is given, a treated level is unknown, has no ``vb`` label in the
        table or its ``vb`` label is empty in the image, or the image holds values not in the
        table.
    """
    parsed = label_table(table)
    labels = check_labels(labels, parsed)
    if isinstance(treated_levels, str):
        treated = parse_levels(treated_levels, "treated_levels")
    else:
        if len(treated_levels) == 0:
            raise QMRIInputError("no treated level given", "treated_levels")
        treated = parse_levels(treated_levels, "treated_levels")

    by_kind: dict[tuple[str, str | None], list[int]] = {}
    for label in parsed.values():
        by_kind.setdefault((label.structure, label.level), []).append(label.index)
    vb_levels = sorted({lv for (s, lv) in by_kind if s == "vb"}, key=LEVEL_INDEX.__getitem__)
    cord_levels = sorted({lv for (s, lv) in by_kind if s == "cord"}, key=LEVEL_INDEX.__getitem__)

    vb = {lv: _mask_of(labels, by_kind[("vb", lv)]) for lv in vb_levels}
    cord = {lv: _mask_of(labels, by_kind[("cord", lv)]) for lv in cord_levels}
    for level in treated:
        if level not in vb:
            raise QMRIInputError(
                f"treated level {level} has no vertebral-body label (vb_{level}) in the label table"
            )
        if not vb[level].any():
            raise QMRIInputError(
                f"treated level {level}: its vertebral-body label vb_{level} is empty in the "
                "label image"
            )

    def distance(level: str) -> int:
        return min(abs(LEVEL_INDEX[level] - LEVEL_INDEX[t]) for t in treated)

    def union(masks: Mapping[str, np.ndarray], levels: Iterable[str]) -> np.ndarray:
        out = np.zeros(labels.shape, dtype=bool)
        for level in levels:
            out |= masks[level]
        return out

    tumor = _mask_of(labels, [lb.index for lb in parsed.values() if lb.structure == "tumor"])
    vb_treated = union(vb, treated)
    sectors = {i: lb for i, lb in parsed.items() if lb.structure in POSTERIOR_ELEMENTS}
    touched = touching_sectors(labels, tumor, sectors)
    ctv = tumor | vb_treated | _mask_of(labels, [lb.index for lb in touched])

    rois: dict[str, np.ndarray] = {
        "tumor": tumor,
        "ctv": ctv,
        "vb_treated_nontumor": vb_treated & ~tumor,
        "vb_adjacent": union(vb, [lv for lv in vb_levels if distance(lv) == 1]),
        "vb_control": union(vb, [lv for lv in vb_levels if distance(lv) >= 2]),
        "cord_treated": union(cord, [lv for lv in cord_levels if distance(lv) == 0]),
        "cord_adjacent": union(cord, [lv for lv in cord_levels if distance(lv) == 1]),
    }
    if ctv_plan is not None:
        plan = np.asarray(ctv_plan)
        if plan.shape != labels.shape:
            raise QMRIInputError(
                f"plan CTV mask has shape {plan.shape}, the labels {labels.shape}", "ctv_plan"
            )
        rois["ctv_plan"] = plan > 0
    rois.update({f"vb_{lv}": vb[lv] for lv in vb_levels})
    rois.update({f"cord_{lv}": cord[lv] for lv in cord_levels})
    return rois


def rois_to_4d(rois: Mapping[str, np.ndarray]) -> tuple[np.ndarray, list[str]]:
    """Stack ROI masks into one 4D mask image.

    Parameters
    ----------
    rois : mapping of str to ndarray of bool
        Masks of equal 3D shape, e.g. from :func:`derive_rois`.

    Returns
    -------
    data : ndarray of uint8, shape (X, Y, Z, n)
        1 inside, 0 outside; volume ``k`` is the ``k``-th ROI.
    names : list of str
        ROI names in volume order.

    Raises
    ------
    ValueError
        If ``rois`` is empty or the masks differ in shape.
    """
    if not rois:
        raise ValueError("no ROI to stack")
    names = list(rois)
    shapes = {np.shape(m) for m in rois.values()}
    if len(shapes) != 1:
        raise ValueError(f"ROI masks differ in shape: {sorted(shapes)}")
    data = np.stack([np.asarray(rois[n], dtype=bool) for n in names], axis=-1)
    return data.astype(np.uint8), names


def rois_from_4d(data: np.ndarray, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Split a 4D mask image (as written from :func:`rois_to_4d`) back into named masks.

    Parameters
    ----------
    data : ndarray, shape (X, Y, Z, n)
        Mask volumes; any value > 0 is inside (a resampled mask may hold fractions: threshold it
        before if another rule is wanted).
    names : sequence of str
        ``n`` ROI names in volume order.

    Returns
    -------
    dict of str to ndarray of bool
        Masks in the order of ``names``.

    Raises
    ------
    QMRIInputError
        If the number of names does not match the number of volumes, or names repeat.
    """
    data = np.asarray(data)
    if data.ndim == 3 and len(names) == 1:
        data = data[..., np.newaxis]
    if data.ndim != 4 or data.shape[-1] != len(names):
        raise QMRIInputError(
            f"ROI mask image of shape {data.shape} does not match {len(names)} ROI names"
        )
    if len(set(names)) != len(names):
        raise QMRIInputError("ROI names repeat in the mask image's names list")
    return {str(name): data[..., k] > 0 for k, name in enumerate(names)}


def treated_region_mask(
    labels: np.ndarray,
    table: Mapping[int, Label | str],
    treated_levels: Sequence[str] | str,
    *,
    voxel_size_mm: Sequence[float],
    margin_levels: int = 1,
    margin_mm: float = 20.0,
) -> np.ndarray:
    """Region around the treated levels, for focusing a registration metric there.

    The spine bends between visits, so one rigid transform cannot align every level; what the
    response analysis needs aligned is the treated level and its neighbours. The region is
    every labelled structure (vertebral body, posterior elements, cord) of the levels within
    ``margin_levels`` of a treated level, plus the tumour, grown by ``margin_mm`` in every
    direction so that the surrounding edges (fat, muscle, canal) take part in the metric.

    Parameters
    ----------
    labels : ndarray of int
        Baseline label image.
    table : mapping of int to Label or str
        Its lookup table.
    treated_levels : sequence of str or str
        Treated levels.
    voxel_size_mm : sequence of 3 floats
        Voxel size of ``labels`` (mm), for the margin.
    margin_levels : int, default 1
        Levels above and below the treated ones to include.
    margin_mm : float, default 20
        Growth of the region (mm).

    Returns
    -------
    ndarray of bool
    """
    parsed = label_table(table)
    labels = check_labels(labels, parsed)
    treated = parse_levels(treated_levels, "treated_levels")
    wanted = [
        lb.index
        for lb in parsed.values()
        if lb.structure == "tumor"
        or (
            lb.level is not None
            and min(abs(LEVEL_INDEX[lb.level] - LEVEL_INDEX[t]) for t in treated) <= margin_levels
        )
    ]
    core = _mask_of(labels, wanted)
    if not core.any():
        raise QMRIInputError(f"no labelled structure at or near the treated levels {treated}")
    distance = ndimage.distance_transform_edt(
        ~core, sampling=tuple(float(v) for v in voxel_size_mm)
    )
    return distance <= margin_mm
