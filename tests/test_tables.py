"""Tests of qmri.tables: roistats/response tables, sessions and participants, CSV output."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from qmri.errors import QMRIInputError
from qmri.stats import STAT_COLUMNS
from qmri.tables import (
    RESPONSE_COLUMNS,
    ROISTATS_COLUMNS,
    baseline_session,
    build_roistats,
    cohort_table,
    read_participants_tsv,
    read_sessions_tsv,
    read_table,
    response_table,
    write_table,
)


def test_column_constants_follow_the_contract():
    # copied from the data contract, section 3
    roistats = (
        "subject, session, days_from_sbrt, roi, map, unit, n_voxels, volume_ml, valid_fraction, "
        "mean, sd, median, p10, p25, p75, p90, iqr, skewness, kurtosis"
    )
    response = (
        "subject, session, days_from_sbrt, roi, map, unit, stat, baseline, value, change, "
        "pct_change"
    )
    assert tuple(roistats.split(", ")) == ROISTATS_COLUMNS
    assert tuple(response.split(", ")) == RESPONSE_COLUMNS


def session_frame(rows):
    """Per-session table with the given (roi, map, unit, mean, median) rows."""
    data = []
    for roi, map_, unit, mean, median in rows:
        row = dict.fromkeys(STAT_COLUMNS, np.nan)
        row.update(roi=roi, map=map_, unit=unit, mean=mean, median=median, n_voxels=10)
        row["volume_ml"] = 0.1
        data.append(row)
    return pd.DataFrame(data, columns=["roi", "map", "unit", *STAT_COLUMNS])


@pytest.fixture
def roistats():
    days = {"ses-pre": -3, "post1": 42, "ses-post2": 90, "screen": -30}
    per_session = {
        "post2": session_frame(
            [
                ("tumor", "T1", "s", 1.5, 1.4),
                ("tumor", "ADC", "mm^2/s", 1.2e-3, 1.1e-3),
                ("ctv", "T1", "s", 1.2, 1.2),
            ]
        ),
        "ses-pre": session_frame(
            [
                ("tumor", "T1", "s", 1.0, 1.0),
                ("tumor", "ADC", "mm^2/s", 0.0, np.nan),
                ("ctv", "T1", "s", 0.8, 0.9),
            ]
        ),
        "post1": session_frame(
            [
                ("tumor", "T1", "s", 1.25, 1.1),
                ("ctv", "T1", "s", 0.9, 1.0),
                ("ctv", "Ktrans", "1/min", 0.2, 0.1),  # no Ktrans at baseline
            ]
        ),
        "screen": session_frame([("tumor", "T1", "s", 2.0, 2.0)]),
    }
    return build_roistats(per_session, "sub-01", days)


def test_build_roistats_columns_and_order(roistats):
    assert tuple(roistats.columns) == ROISTATS_COLUMNS
    assert set(roistats["subject"]) == {"01"}
    keys = list(zip(roistats["session"], roistats["roi"], roistats["map"], strict=True))
    assert keys == [
        ("screen", "tumor", "T1"),
        ("pre", "tumor", "T1"),
        ("pre", "tumor", "ADC"),
        ("pre", "ctv", "T1"),
        ("post1", "tumor", "T1"),
        ("post1", "ctv", "T1"),
        ("post1", "ctv", "Ktrans"),
        ("post2", "tumor", "T1"),
        ("post2", "tumor", "ADC"),
        ("post2", "ctv", "T1"),
    ]
    assert roistats["days_from_sbrt"].tolist() == [-30, -3, -3, -3, 42, 42, 42, 90, 90, 90]
    assert roistats["days_from_sbrt"].dtype == np.int64
    assert roistats["n_voxels"].dtype == np.int64


def test_build_roistats_explicit_order_and_sequence_input():
    a = session_frame([("vb_L1", "T1", "s", 1, 1), ("tumor", "T1", "s", 2, 2)]).assign(session="b")
    b = session_frame([("tumor", "T2", "s", 3, 3), ("tumor", "T1", "s", 4, 4)]).assign(session="a")
    out = build_roistats([a, b], "02", {"a": 5, "b": 5}, roi_order=["tumor"], map_order=["T1"])
    keys = list(zip(out["session"], out["roi"], out["map"], strict=True))
    # equal days: by session label; ROIs: tumor first, then first seen; maps: T1 first
    assert keys == [
        ("a", "tumor", "T1"),
        ("a", "tumor", "T2"),
        ("b", "tumor", "T1"),
        ("b", "vb_L1", "T1"),
    ]


def test_build_roistats_errors():
    frame = session_frame([("tumor", "T1", "s", 1, 1)])
    with pytest.raises(
        QMRIInputError, match=r"session\(s\) post of subject 01 have no days_from_sbrt"
    ):
        build_roistats({"post": frame}, "01", {"pre": 0})
    with pytest.raises(ValueError, match="repeated"):
        build_roistats([frame.assign(session="pre")] * 2, "01", {"pre": 0})
    with pytest.raises(ValueError, match="'session' column"):
        build_roistats([frame], "01", {"pre": 0})


def test_response_table_arithmetic(roistats):
    resp = response_table(roistats, "ses-pre")
    assert tuple(resp.columns) == RESPONSE_COLUMNS
    assert len(resp) == 2 * len(roistats)
    assert resp["stat"].tolist()[:4] == ["mean", "median", "mean", "median"]
    idx = resp.set_index(["session", "roi", "map", "stat"])

    post2 = idx.loc[("post2", "tumor", "T1", "mean")]
    assert post2["baseline"] == 1.0
    assert post2["value"] == 1.5
    assert post2["change"] == pytest.approx(0.5)
    assert post2["pct_change"] == pytest.approx(50.0)
    assert post2["days_from_sbrt"] == 90

    med = idx.loc[("post1", "ctv", "T1", "median")]
    assert med["baseline"] == 0.9
    assert med["change"] == pytest.approx(0.1)
    assert med["pct_change"] == pytest.approx(100 * 0.1 / 0.9)

    screen = idx.loc[("screen", "tumor", "T1", "mean")]  # before baseline: still relative to it
    assert screen["change"] == pytest.approx(1.0)
    assert screen["pct_change"] == pytest.approx(100.0)

    base = idx.loc[("pre", "ctv", "T1", "mean")]
    assert base["change"] == 0.0
    assert base["pct_change"] == 0.0


def test_response_table_missing_zero_and_nan_baselines(roistats):
    resp = response_table(roistats, "pre")
    idx = resp.set_index(["session", "roi", "map", "stat"])
    # Ktrans was not measured at baseline: empty baseline, change, pct_change
    kt = idx.loc[("post1", "ctv", "Ktrans", "mean")]
    assert kt["value"] == 0.2
    assert np.isnan(kt["baseline"])
    assert np.isnan(kt["change"])
    assert np.isnan(kt["pct_change"])
    # baseline mean 0: change defined, pct_change empty (no division warning)
    zero = idx.loc[("post2", "tumor", "ADC", "mean")]
    assert zero["baseline"] == 0.0
    assert zero["change"] == pytest.approx(1.2e-3)
    assert np.isnan(zero["pct_change"])
    # baseline median NaN: baseline empty
    nan = idx.loc[("post2", "tumor", "ADC", "median")]
    assert np.isnan(nan["baseline"])
    assert np.isnan(nan["pct_change"])
    assert nan["value"] == pytest.approx(1.1e-3)


def test_response_table_needs_unique_rows(roistats):
    doubled = pd.concat([roistats, roistats.iloc[:1]], ignore_index=True)
    with pytest.raises(ValueError, match="repeats"):
        response_table(doubled, "pre")


def test_csv_is_byte_identical_and_round_trips(tmp_path, roistats):
    # labels that do not look like numbers, so that read_csv without options keeps them text
    table = roistats.assign(subject="P01")
    first = write_table(table, tmp_path / "a" / "roistats.csv")
    second = write_table(table, tmp_path / "b" / "roistats.csv")
    assert first.read_bytes() == second.read_bytes()
    text = first.read_text(encoding="utf-8")
    assert text.splitlines()[0] == ",".join(ROISTATS_COLUMNS)
    assert ",," in text  # NaN written as an empty cell
    back = pd.read_csv(first)
    assert list(back.columns) == list(ROISTATS_COLUMNS)
    pd.testing.assert_frame_equal(back, table, check_dtype=False, rtol=1e-5)
    assert back["sd"].isna().all()

    resp = response_table(table, "pre")
    path = write_table(resp, tmp_path / "response.csv")
    back = pd.read_csv(path)
    pd.testing.assert_frame_equal(back, resp, check_dtype=False, rtol=1e-5)
    assert back["pct_change"].isna().sum() == resp["pct_change"].isna().sum() > 0


def test_read_table_keeps_numeric_looking_labels(tmp_path, roistats):
    path = write_table(roistats, tmp_path / "sub-01_roistats.csv")
    back = read_table(path)
    assert back["subject"].tolist() == ["01"] * len(roistats)
    with pytest.raises(QMRIInputError, match="table not found"):
        read_table(tmp_path / "missing.csv")


def test_cohort_table(tmp_path, roistats):
    other = roistats.assign(subject="00")
    path = write_table(roistats, tmp_path / "sub-01_roistats.csv")
    cohort = cohort_table([path, other], columns=ROISTATS_COLUMNS)
    assert len(cohort) == 2 * len(roistats)
    assert cohort["subject"].tolist() == ["00"] * len(roistats) + ["01"] * len(roistats)
    np.testing.assert_array_equal(cohort["roi"][len(roistats) :], roistats["roi"])
    assert list(cohort.columns) == list(ROISTATS_COLUMNS)
    assert list(cohort_table([], columns=RESPONSE_COLUMNS).columns) == list(RESPONSE_COLUMNS)
    with pytest.raises(QMRIInputError, match="differ"):
        cohort_table([path, other.drop(columns="kurtosis")])


def write_tsv(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_read_sessions_tsv(tmp_path):
    path = write_tsv(
        tmp_path,
        "sub-01_sessions.tsv",
        "session_id\tdays_from_sbrt\tacq_time\nses-pre\t-3\tx\npost1\t42\tx\nses-post2\t90.0\tx\n",
    )
    days = read_sessions_tsv(path)
    assert days == {"pre": -3, "post1": 42, "post2": 90}
    assert baseline_session(days) == "pre"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("session\tdays_from_sbrt\nses-1\t0\n", "lacks column.*session_id"),
        ("session_id\tdays\nses-1\t0\n", "lacks column.*days_from_sbrt"),
        ("session_id\tdays_from_sbrt\nses-1\t0\n1\t4\n", "session '1' is listed twice"),
        ("session_id\tdays_from_sbrt\nses-1\tn/a\n", "days_from_sbrt of session 'ses-1'.*'n/a'"),
        ("session_id\tdays_from_sbrt\nses-1\t2.5\n", "is not an integer: '2.5'"),
    ],
)
def test_read_sessions_tsv_errors(tmp_path, text, problem):
    path = write_tsv(tmp_path, "sub-01_sessions.tsv", text)
    with pytest.raises(QMRIInputError, match=problem) as info:
        read_sessions_tsv(path)
    assert str(info.value).startswith(str(path))


def test_baseline_session():
    assert baseline_session({"a": -30, "b": -2, "c": 0, "d": 40}) == "c"
    assert baseline_session({"a": -30, "b": -2, "d": 40}) == "b"
    assert baseline_session({"x": -1, "y": -1}) == "x"
    with pytest.raises(QMRIInputError, match=r"^s.tsv: no baseline session"):
        baseline_session({"a": 1, "b": 40}, "s.tsv")


def test_read_participants_tsv(tmp_path):
    path = write_tsv(
        tmp_path,
        "participants.tsv",
        "participant_id\ttreated_levels\tdose_gy\tvcf_event\tsex\n"
        "sub-01\tT12,L1\t24\t1\tF\n"
        "sub-02\tL3\t27.5\tn/a\tM\n"
        "sub-03\tn/a\t\t0\tn/a\n",
    )
    df = read_participants_tsv(path)
    assert df["participant_id"].tolist() == ["sub-01", "sub-02", "sub-03"]
    assert df["treated_levels"].tolist() == [["T12", "L1"], ["L3"], []]
    assert df["dose_gy"].iloc[1] == 27.5
    assert np.isnan(df["dose_gy"].iloc[2])
    assert np.isnan(df["vcf_event"].iloc[1])
    assert df["vcf_event"].iloc[0] == 1
    assert df["sex"].iloc[0] == "F"
    assert pd.isna(df["sex"].iloc[2])


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("subject\ttreated_levels\nsub-01\tL1\n", "lacks column.*participant_id"),
        ("participant_id\ntreated_levels\n", None),  # no error: a single column is fine
        ("participant_id\nsub-01\nsub-01\n", "'sub-01' is listed twice"),
        (
            "participant_id\ttreated_levels\nsub-01\tL1,L9\n",
            r"participant sub-01: treated_levels: unknown vertebral level\(s\) L9",
        ),
    ],
)
def test_read_participants_tsv_errors(tmp_path, text, problem):
    path = write_tsv(tmp_path, "participants.tsv", text)
    if problem is None:
        read_participants_tsv(path)
        return
    with pytest.raises(QMRIInputError, match=problem) as info:
        read_participants_tsv(path)
    assert str(info.value).startswith(str(path))
    with pytest.raises(QMRIInputError, match="file not found"):
        read_participants_tsv(tmp_path / "none.tsv")
