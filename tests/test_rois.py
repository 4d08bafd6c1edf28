"""Tests of qmri.rois: derived ROIs on a hand-made five-level label volume."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from qmri.errors import QMRIInputError
from qmri.labels import label_table
from qmri.rois import DERIVED_ROIS, derive_rois, rois_from_4d, rois_to_4d, touching_sectors

LEVELS = ("T11", "T12", "L1", "L2", "L3")
SLICES = 3  # slices per level along z


def phantom(tumor: bool = True) -> tuple[np.ndarray, dict[int, str]]:
    """Five levels stacked along z (T11 at z=0..2, ..., L3 at z=12..14), 6 x 6 in-plane.

    Per slice: vertebral body x=0..2 (18 voxels), cord x=4, y=2..3 (2), pel x=5, y=0..2 (3),
    per x=5, y=3..5 (3); L3 has one pe label over x=5 (6) instead; csf at (4, 5) on every slice.
    Tumour (label ``tumor_L1``): 3 voxels (x=2..4, y=0) on the middle L1 slice z=7; it replaces
    one vb_L1 voxel and touches pel_L1 (x=5, y=0..1 after dilation) but not per_L1 or cord.
    """
    vol = np.zeros((6, 6, len(LEVELS) * SLICES), dtype=np.int16)
    table: dict[int, str] = {}
    for k, level in enumerate(LEVELS):
        z = slice(k * SLICES, (k + 1) * SLICES)
        vol[0:3, :, z] = 10 + k
        table[10 + k] = f"vb_{level}"
        vol[4, 2:4, z] = 20 + k
        table[20 + k] = f"cord_{level}"
        if level == "L3":
            vol[5, :, z] = 50
            table[50] = "pe_L3"
        else:
            vol[5, 0:3, z] = 30 + k
            vol[5, 3:6, z] = 40 + k
            table[30 + k] = f"pel_{level}"
            table[40 + k] = f"per_{level}"
    vol[4, 5, :] = 70
    table[70] = "csf"
    if tumor:
        vol[2:5, 0, 7] = 60
        table[60] = "tumor_L1"
    return vol, table


def counts(rois):
    return {name: int(mask.sum()) for name, mask in rois.items()}


def test_phantom_layout():
    vol, _ = phantom()
    assert int((vol == 12).sum()) == 53  # vb_L1 lost one voxel to the tumour
    assert int((vol == 32).sum()) == 9
    assert int((vol == 60).sum()) == 3


def test_single_treated_level_counts_and_order():
    vol, table = phantom()
    rois = derive_rois(vol, table, ["L1"])
    expected_order = [
        *DERIVED_ROIS,
        *(f"vb_{lv}" for lv in LEVELS),
        *(f"cord_{lv}" for lv in LEVELS),
    ]
    assert list(rois) == expected_order
    assert counts(rois) == {
        "tumor": 3,
        "ctv": 3 + 53 + 9,  # tumour + vb_L1 + pel_L1 (touched); per_L1 and cord not
        "vb_treated_nontumor": 53,
        "vb_adjacent": 54 + 54,  # T12 + L2
        "vb_control": 54 + 54,  # T11 + L3
        "cord_treated": 6,
        "cord_adjacent": 12,
        "vb_T11": 54,
        "vb_T12": 54,
        "vb_L1": 53,
        "vb_L2": 54,
        "vb_L3": 54,
        **{f"cord_{lv}": 6 for lv in LEVELS},
    }
    for mask in rois.values():
        assert mask.dtype == bool
        assert mask.shape == vol.shape
    # the CTV holds exactly tumour, vb_L1 and pel_L1
    np.testing.assert_array_equal(rois["ctv"], np.isin(vol, [60, 12, 32]))
    np.testing.assert_array_equal(rois["vb_adjacent"], np.isin(vol, [11, 13]))
    np.testing.assert_array_equal(rois["cord_adjacent"], np.isin(vol, [21, 23]))


def test_two_treated_levels():
    vol, table = phantom()
    rois = derive_rois(vol, table, "T12,L1")
    c = counts(rois)
    assert c["vb_treated_nontumor"] == 54 + 53
    assert c["ctv"] == 3 + 54 + 53 + 9
    assert c["vb_adjacent"] == 54 + 54  # T11 and L2
    assert c["vb_control"] == 54  # L3 only
    assert c["cord_treated"] == 12
    assert c["cord_adjacent"] == 12
    np.testing.assert_array_equal(rois["vb_control"], vol == 14)


def test_treated_level_at_end_of_labelled_range():
    vol, table = phantom()
    rois = derive_rois(vol, table, ["T11"])
    c = counts(rois)
    assert c["vb_adjacent"] == 54  # T12 only: C-side neighbour T10 is not labelled
    assert c["vb_control"] == 53 + 54 + 54
    assert c["cord_adjacent"] == 6
    # the tumour sits at L1 and still pulls in the sector it touches
    assert c["ctv"] == 3 + 54 + 9
    assert c["vb_treated_nontumor"] == 54


def test_lowest_treated_level_touching_pe_whole():
    vol, table = phantom()
    vol[5, 0, 13] = 60  # a second tumour focus inside the pe_L3 column (L3 is z=12..14)
    c = counts(derive_rois(vol, table, ["L3"]))
    assert c["tumor"] == 4
    # tumour (4) + vb_L3 (54) + pel_L1 (9) + pe_L3 (18 - 1 replaced by tumour)
    assert c["ctv"] == 4 + 54 + 9 + 17
    assert c["vb_adjacent"] == 54  # L2 only
    assert c["vb_control"] == 54 + 54 + 53


def test_empty_rois_are_all_false_not_dropped():
    vol, table = phantom(tumor=False)
    rois = derive_rois(vol, table, ["L1"])
    assert not rois["tumor"].any()
    assert rois["tumor"].shape == vol.shape
    np.testing.assert_array_equal(rois["ctv"], vol == 12)  # no tumour: CTV = treated vb
    # all labelled levels adjacent or treated -> no control vertebra
    sub = np.where(np.isin(vol, [10, 14, 20, 24, 30, 40, 50]), 0, vol)
    rois = derive_rois(sub, table, ["L1"])
    assert list(rois)[:7] == list(DERIVED_ROIS)
    assert rois["vb_control"].dtype == bool
    assert not rois["vb_control"].any()
    # a table without cord labels: cord ROIs present and empty, no cord_<level>
    no_cord = {i: n for i, n in table.items() if not n.startswith("cord")}
    rois = derive_rois(np.where(vol // 10 == 2, 0, vol), no_cord, ["L1"])
    assert not rois["cord_treated"].any()
    assert not rois["cord_adjacent"].any()
    assert not any(name.startswith("cord_L") for name in rois)


def test_touching_is_26_connected():
    labels = np.zeros((4, 4, 4), dtype=int)
    labels[2, 2, 2] = 3  # sector diagonal (corner) neighbour of the tumour voxel
    labels[3, 3, 3] = 4  # two voxels away on the diagonal: not touched
    tumor = np.zeros(labels.shape, dtype=bool)
    tumor[1, 1, 1] = True
    table = label_table({3: "pel_L1", 4: "per_L1"})
    touched = touching_sectors(labels, tumor, table)
    assert [lb.name for lb in touched] == ["pel_L1"]
    assert touching_sectors(labels, np.zeros_like(tumor), table) == []


def test_errors():
    vol, table = phantom()
    with pytest.raises(QMRIInputError, match="treated level L4 has no vertebral-body label"):
        derive_rois(vol, table, ["L4"])
    with pytest.raises(QMRIInputError, match=r"unknown vertebral level\(s\) L6"):
        derive_rois(vol, table, "L6")
    with pytest.raises(QMRIInputError, match="no treated level"):
        derive_rois(vol, table, [])
    with pytest.raises(QMRIInputError, match="vb_L2 is empty in the label image"):
        derive_rois(np.where(vol == 13, 0, vol), table, ["L2"])
    bad = vol.copy()
    bad[0, 0, 0] = 99
    with pytest.raises(QMRIInputError, match=r"label value\(s\) 99"):
        derive_rois(bad, table, ["L1"])


def test_4d_round_trip():
    vol, table = phantom()
    rois = derive_rois(vol, table, ["L1"])
    data, names = rois_to_4d(rois)
    assert data.dtype == np.uint8
    assert data.shape == (*vol.shape, len(rois))
    assert names == list(rois)
    back = rois_from_4d(data, names)
    assert list(back) == names
    for name in names:
        np.testing.assert_array_equal(back[name], rois[name])
    with pytest.raises(QMRIInputError, match="does not match 3 ROI names"):
        rois_from_4d(data, names[:3])
    with pytest.raises(ValueError, match="no ROI"):
        rois_to_4d({})


# ----- property tests --------------------------------------------------------------------------

PROP_TABLE = {
    1: "vb_T12",
    2: "vb_L1",
    3: "vb_L2",
    4: "vb_L3",
    5: "pel_L1",
    6: "per_L1",
    7: "pe_L2",
    8: "cord_L1",
    9: "cord_L3",
    10: "tumor",
    11: "tumor_L2",
    12: "csf",
}


@settings(max_examples=60, deadline=None)
@given(
    vol=arrays(np.int8, (3, 4, 5), elements=st.integers(0, 12)),
    treated=st.lists(st.sampled_from(["T12", "L1", "L2", "L3"]), min_size=1, max_size=2),
)
def test_derived_roi_properties(vol, treated):
    vol = vol.copy()
    for k, level in enumerate(["T12", "L1", "L2", "L3"], start=1):
        if level in treated:
            vol[0, k - 1, 0] = k  # a treated level needs a drawn vertebral body
    rois = derive_rois(vol, PROP_TABLE, treated)
    labelled = vol > 0
    vb_all = np.isin(vol, [1, 2, 3, 4])
    for mask in rois.values():
        assert not (mask & ~labelled).any()
    tumor = rois["tumor"]
    np.testing.assert_array_equal(tumor, np.isin(vol, [10, 11]))
    assert not (tumor & ~rois["ctv"]).any()
    assert not (rois["ctv"] & ~np.isin(vol, [1, 2, 3, 4, 5, 6, 7, 10, 11])).any()
    assert not (rois["vb_treated_nontumor"] & tumor).any()
    parts = [rois["vb_treated_nontumor"], rois["vb_adjacent"], rois["vb_control"]]
    np.testing.assert_array_equal(parts[0] | parts[1] | parts[2], vb_all)
    assert int(sum(p.sum() for p in parts)) == int(vb_all.sum())  # disjoint
    assert not (rois["cord_treated"] & rois["cord_adjacent"]).any()


def test_a_planned_ctv_mask_becomes_the_ctv_plan_roi():
    labels = np.zeros((4, 4, 4), dtype=np.int16)
    labels[1:3, 1:3, 1:3] = 1
    plan = np.zeros(labels.shape, np.uint8)
    plan[0:3, 1:3, 1:3] = 1  # overlaps the body: a plan structure, not a label
    rois = derive_rois(labels, {1: "vb_L1"}, ["L1"], ctv_plan=plan)
    assert list(rois)[7] == "ctv_plan"
    assert rois["ctv_plan"].sum() == 12
    assert "ctv_plan" not in derive_rois(labels, {1: "vb_L1"}, ["L1"])
    with pytest.raises(QMRIInputError, match="plan CTV mask has shape"):
        derive_rois(labels, {1: "vb_L1"}, ["L1"], ctv_plan=plan[:2])
