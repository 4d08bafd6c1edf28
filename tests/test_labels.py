"""Tests of qmri.labels: level order, label names, dseg.tsv reading, label checks."""

from __future__ import annotations

import numpy as np
import pytest

from qmri.errors import QMRIInputError
from qmri.labels import (
    LEVELS,
    Label,
    check_labels,
    label_table,
    level_index,
    parse_label_name,
    parse_levels,
    read_dseg_tsv,
)


def test_level_order_is_craniocaudal_and_contiguous():
    assert len(LEVELS) == 7 + 12 + 5 + 5
    assert LEVELS[0] == "C1"
    assert LEVELS[-1] == "S5"
    assert level_index("T1") - level_index("C7") == 1
    assert level_index("L1") - level_index("T12") == 1
    assert level_index("S1") - level_index("L5") == 1
    assert level_index("L1") == 19


def test_level_index_unknown():
    with pytest.raises(QMRIInputError, match="unknown vertebral level 'T13'"):
        level_index("T13")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("T12,L1", ["T12", "L1"]),
        ("L1", ["L1"]),
        (" l1 , t12 ", ["T12", "L1"]),
        ("L1,T12,L1", ["T12", "L1"]),
        (["C7", "T1"], ["C7", "T1"]),
    ],
)
def test_parse_levels(text, expected):
    assert parse_levels(text) == expected


def test_parse_levels_errors():
    with pytest.raises(
        QMRIInputError, match=r"^participants.tsv: unknown vertebral level\(s\) L6"
    ):
        parse_levels("L5,L6", "participants.tsv")
    with pytest.raises(QMRIInputError, match="no vertebral level"):
        parse_levels(" , ")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("vb_L1", ("vb", "L1")),
        ("pel_T12", ("pel", "T12")),
        ("per_T12", ("per", "T12")),
        ("pe_C3", ("pe", "C3")),
        ("cord_S1", ("cord", "S1")),
        ("tumor", ("tumor", None)),
        ("tumor_L1", ("tumor", "L1")),
        ("csf", ("csf", None)),
        ("aorta_T10", ("aorta", "T10")),
    ],
)
def test_parse_label_name(name, expected):
    assert parse_label_name(name) == expected


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("vb", "needs a level suffix"),
        ("cord", "needs a level suffix"),
        ("vb_L6", "unknown level"),
        ("VB_L1", "does not follow the contract"),
        ("liver_L1", "does not follow the contract"),
        ("vb_l1", "does not follow the contract"),
        ("vb-L1", "does not follow the contract"),
    ],
)
def test_parse_label_name_errors(name, problem):
    with pytest.raises(QMRIInputError, match=problem):
        parse_label_name(name)


def _write(tmp_path, text, name="sub-01_ses-pre_dseg.tsv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_read_dseg_tsv(tmp_path):
    path = _write(
        tmp_path,
        "index\tname\tabbreviation\n0\tbackground\tBG\n3\tcord_L1\tx\n1\tvb_L1\tx\n2\ttumor\tx\n",
    )
    table = read_dseg_tsv(path)
    assert list(table) == [1, 2, 3]
    assert table[1] == Label(1, "vb_L1", "vb", "L1")
    assert table[2] == Label(2, "tumor", "tumor", None)
    assert table[3].structure == "cord"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("index\tlabel\n1\tvb_L1\n", "lacks column.*name"),
        ("idx\tname\n1\tvb_L1\n", "lacks column.*index"),
        ("index\tname\n1\tvb_L1\n1\tvb_L2\n", "duplicate label index 1"),
        ("index\tname\n1\tvb_L1\n2\tvb_L1\n", "duplicate label name 'vb_L1'"),
        ("index\tname\n1.5\tvb_L1\n", "index '1.5' is not an integer"),
        ("index\tname\none\tvb_L1\n", "index 'one' is not an integer"),
        ("index\tname\n-1\tvb_L1\n", "negative"),
        ("index\tname\n1\tvertebra_L1\n", "'vertebra_L1' does not follow the contract"),
        ("index\tname\n1\tpel\n", "'pel' needs a level suffix"),
        ("index\tname\n", "holds no labels"),
    ],
)
def test_read_dseg_tsv_errors(tmp_path, text, problem):
    path = _write(tmp_path, text)
    with pytest.raises(QMRIInputError, match=problem) as info:
        read_dseg_tsv(path)
    assert str(info.value).startswith(str(path))
    assert "\n" not in str(info.value)


def test_read_dseg_tsv_missing_file(tmp_path):
    with pytest.raises(QMRIInputError, match="not found"):
        read_dseg_tsv(tmp_path / "nope_dseg.tsv")


def test_label_table_accepts_names_and_labels():
    table = label_table({2: "vb_L2", 1: Label(1, "vb_L1", "vb", "L1")})
    assert list(table) == [1, 2]
    assert table[2].level == "L2"
    with pytest.raises(QMRIInputError, match="positive"):
        label_table({0: "vb_L1"})


def test_check_labels():
    table = {1: "vb_L1", 2: "tumor"}
    data = np.array([[[0, 1], [2, 1]]], dtype=np.float32)
    out = check_labels(data, table, "lab.nii.gz")
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, data.astype(int))
    with pytest.raises(QMRIInputError, match=r"^lab.nii.gz: label value\(s\) 5, 7 are not in"):
        check_labels(np.array([0, 1, 5, 7, 5]), table, "lab.nii.gz")
    with pytest.raises(QMRIInputError, match="non-integer values"):
        check_labels(np.array([0.0, 1.5]), table, "lab.nii.gz")
    with pytest.raises(QMRIInputError, match="non-integer values"):
        check_labels(np.array([0.0, np.nan]), table, "lab.nii.gz")
