"""Subject and cohort tables ``roistats.csv`` and ``response.csv`` (data contract, section 3).

Also the small BIDS tables they need: ``sub-<s>_sessions.tsv`` and ``participants.tsv``.

Identifiers: the ``subject`` and ``session`` columns hold BIDS *labels* without the ``sub-`` /
``ses-`` prefix (``"01"`` for ``sub-01``), as in BIDS entities and file names; inputs are accepted
with or without the prefix. Because labels such as ``"01"`` look numeric, read the CSVs back with
:func:`read_table` (or ``dtype={"subject": str, "session": str}``) to keep leading zeros.

Row order (byte-identical CSVs for identical inputs): sessions by ``days_from_sbrt`` (ties by
session label), then ROIs and maps in the order they were produced (the derived ROIs of
:func:`qmri.rois.derive_rois` first, then ``vb_<level>``/``cord_<level>``; maps in the workflow's
order), not alphabetically; in ``response.csv`` ``mean`` comes before ``median``. Cohort tables
sort subjects by label (string order) and keep each subject's order.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from qmri.errors import QMRIInputError
from qmri.io import write_csv
from qmri.labels import parse_levels
from qmri.stats import STAT_COLUMNS

__all__ = [
    "RESPONSE_COLUMNS",
    "RESPONSE_STATS",
    "ROISTATS_COLUMNS",
    "baseline_session",
    "build_roistats",
    "cohort_table",
    "read_participants_tsv",
    "read_sessions_tsv",
    "read_table",
    "response_table",
    "session_label",
    "subject_label",
    "treated_levels",
    "write_table",
]

#: Columns of ``roistats.csv``, in the contract's order.
ROISTATS_COLUMNS: tuple[str, ...] = (
    "subject",
    "session",
    "days_from_sbrt",
    "roi",
    "map",
    "unit",
    *STAT_COLUMNS,
)

#: Columns of ``response.csv``, in the contract's order.
RESPONSE_COLUMNS: tuple[str, ...] = (
    "subject",
    "session",
    "days_from_sbrt",
    "roi",
    "map",
    "unit",
    "stat",
    "baseline",
    "value",
    "change",
    "pct_change",
)

#: Statistics followed in ``response.csv``, in row order.
RESPONSE_STATS: tuple[str, ...] = ("mean", "median")

_TEXT_COLUMNS = ("subject", "session", "roi", "map", "unit", "stat")
_NA_VALUES = ["", "n/a"]


def subject_label(subject: str) -> str:
    """Return a subject label without its ``sub-`` prefix (``"sub-01"`` -> ``"01"``)."""
    subject = str(subject).strip()
    return subject.removeprefix("sub-")


def session_label(session: str) -> str:
    """Return a session label without its ``ses-`` prefix (``"ses-pre"`` -> ``"pre"``)."""
    session = str(session).strip()
    return session.removeprefix("ses-")


def _rank(values: Iterable[str], order: Sequence[str] | None) -> dict[str, int]:
    """Rank of each value: position in ``order`` first, then first-seen order for the rest."""
    rank: dict[str, int] = {}
    for value in [*(order or ()), *values]:
        rank.setdefault(value, len(rank))
    return rank


def build_roistats(
    per_session: Mapping[str, pd.DataFrame] | Sequence[pd.DataFrame],
    subject: str,
    days_from_sbrt: Mapping[str, int],
    *,
    roi_order: Sequence[str] | None = None,
    map_order: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Assemble a subject's ``roistats`` table from per-session statistics.

    Parameters
    ----------
    per_session : mapping of str to DataFrame, or sequence of DataFrame
        Tables from :func:`qmri.stats.session_roistats` (columns ``roi, map, unit`` and the
        statistics). Given as a mapping, the keys are the sessions; given as a sequence, each
        table needs a ``session`` column.
    subject : str
        Subject label (``"01"`` or ``"sub-01"``).
    days_from_sbrt : mapping of str to int
        Session -> days from SBRT, e.g. from :func:`read_sessions_tsv`.
    roi_order, map_order : sequence of str, optional
        Order of ROIs and maps in the table; names not listed follow in first-seen order (the
        default for all: first-seen order of the input tables).

    Returns
    -------
    pandas.DataFrame
        Exactly :data:`ROISTATS_COLUMNS`, sorted by ``days_from_sbrt`` (then session label),
        ROI order and map order; fresh 0..n-1 index.

    Raises
    ------
    QMRIInputError
        If a session has no ``days_from_sbrt``.
    ValueError
        If a table lacks a column or a (session, roi, map) repeats.
    """
    frames: list[pd.DataFrame] = []
    if isinstance(per_session, Mapping):
        for session, frame in per_session.items():
            frames.append(frame.assign(session=session))
    else:
        for frame in per_session:
            if "session" not in frame.columns:
                raise ValueError("a per-session table lacks the 'session' column")
            frames.append(frame)
    needed = ["session", "roi", "map", "unit", *STAT_COLUMNS]
    for frame in frames:
        missing = [c for c in needed if c not in frame.columns]
        if missing:
            raise ValueError(f"per-session table lacks column(s) {', '.join(missing)}")
    if frames:
        df = pd.concat([f[needed] for f in frames], ignore_index=True)
    else:
        df = pd.DataFrame({c: pd.Series(dtype=object) for c in needed})
    df["session"] = df["session"].map(session_label)
    days = {session_label(k): int(v) for k, v in days_from_sbrt.items()}
    absent = sorted(set(df["session"]) - set(days))
    if absent:
        raise QMRIInputError(
            f"session(s) {', '.join(absent)} of subject {subject_label(subject)} have no "
            "days_from_sbrt in the sessions table"
        )
    if df.duplicated(["session", "roi", "map"]).any():
        dup = df.loc[df.duplicated(["session", "roi", "map"]), ["session", "roi", "map"]]
        raise ValueError(f"repeated (session, roi, map) rows: {dup.iloc[0].tolist()}")
    df["subject"] = subject_label(subject)
    df["days_from_sbrt"] = df["session"].map(days).astype(np.int64)
    roi_rank = _rank(df["roi"], roi_order)
    map_rank = _rank(df["map"], map_order)
    keys = pd.DataFrame(
        {
            "d": df["days_from_sbrt"],
            "s": df["session"],
            "r": df["roi"].map(roi_rank),
            "m": df["map"].map(map_rank),
        }
    )
    order = keys.sort_values(["d", "s", "r", "m"], kind="stable").index
    out = df.loc[order, list(ROISTATS_COLUMNS)].reset_index(drop=True)
    return _typed(out)


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    """Give the table's columns their dtypes (text columns str, counts int64, the rest float)."""
    df = df.copy()
    for col in df.columns:
        if col in _TEXT_COLUMNS:
            df[col] = df[col].astype(str)
        elif col in ("days_from_sbrt", "n_voxels"):
            df[col] = df[col].astype(np.int64)
        else:
            df[col] = df[col].astype(np.float64)
    return df


def response_table(roistats: pd.DataFrame, baseline_session: str) -> pd.DataFrame:
    """Change from baseline of the ROI mean and median, one row per (session, roi, map, stat).

    Parameters
    ----------
    roistats : pandas.DataFrame
        A ``roistats`` table (:data:`ROISTATS_COLUMNS`), e.g. from :func:`build_roistats`.
    baseline_session : str
        Baseline session label (with or without ``ses-``), e.g. from :func:`baseline_session`.

    Returns
    -------
    pandas.DataFrame
        Exactly :data:`RESPONSE_COLUMNS`, rows in the order of ``roistats`` with ``mean`` then
        ``median`` for each. Every session is listed, the baseline included (change 0).
        ``baseline`` is the baseline session's value for the same (subject, roi, map, stat),
        ``change = value - baseline`` and ``pct_change = 100 * change / baseline``. ``baseline``
        is empty when the baseline session has no row (or a NaN) for that ROI and map; then
        ``change`` and ``pct_change`` are empty, and ``pct_change`` is also empty for a zero
        baseline.

    Raises
    ------
    ValueError
        If ``roistats`` lacks a column or a (subject, session, roi, map) repeats.
    """
    ids = ["subject", "session", "days_from_sbrt", "roi", "map", "unit"]
    missing = [c for c in (*ids, *RESPONSE_STATS) if c not in roistats.columns]
    if missing:
        raise ValueError(f"roistats table lacks column(s) {', '.join(missing)}")
    key = ["subject", "session", "roi", "map"]
    if roistats.duplicated(key).any():
        raise ValueError("roistats table repeats a (subject, session, roi, map)")
    base_label = session_label(baseline_session)
    wide = roistats[[*ids, *RESPONSE_STATS]].reset_index(drop=True)
    wide["session"] = wide["session"].map(session_label)
    wide["_row"] = np.arange(len(wide))
    long = wide.melt(
        id_vars=[*ids, "_row"],
        value_vars=list(RESPONSE_STATS),
        var_name="stat",
        value_name="value",
    )
    base = long.loc[long["session"] == base_label, ["subject", "roi", "map", "stat", "value"]]
    base = base.rename(columns={"value": "baseline"})
    out = long.merge(base, on=["subject", "roi", "map", "stat"], how="left", validate="m:1")
    out["_stat"] = out["stat"].map({s: i for i, s in enumerate(RESPONSE_STATS)})
    out = out.sort_values(["_row", "_stat"], kind="stable").reset_index(drop=True)

    value = out["value"].to_numpy(dtype=np.float64)
    baseline = out["baseline"].to_numpy(dtype=np.float64)
    change = value - baseline  # NaN propagates silently (no warning for NaN arithmetic)
    pct = np.full_like(change, np.nan)
    ok = np.isfinite(change) & np.isfinite(baseline) & (baseline != 0)
    np.divide(100.0 * change, baseline, out=pct, where=ok)
    out["value"], out["baseline"], out["change"], out["pct_change"] = value, baseline, change, pct
    return _typed(out[list(RESPONSE_COLUMNS)])


def read_sessions_tsv(path: str | Path) -> dict[str, int]:
    """Read a BIDS ``sub-<s>_sessions.tsv`` into session label -> days from SBRT.

    Parameters
    ----------
    path : str or Path
        Tab-separated file with columns ``session_id`` (``ses-<label>`` or ``<label>``) and
        ``days_from_sbrt`` (integer; ``3.0`` is accepted, ``3.5`` and ``n/a`` are not).

    Returns
    -------
    dict of str to int
        Session label (without ``ses-``) -> days, in file order.

    Raises
    ------
    QMRIInputError
        Naming the file, for a missing file or column, an empty or repeated session id, or a
        days value that is not an integer.
    """
    df = _read_tsv(path)
    _require_columns(df, ("session_id", "days_from_sbrt"), path)
    days: dict[str, int] = {}
    for raw_id, raw_days in zip(df["session_id"], df["days_from_sbrt"], strict=True):
        label = session_label(raw_id)
        if not label:
            raise QMRIInputError("empty session_id", path)
        if label in days:
            raise QMRIInputError(f"session {raw_id!r} is listed twice", path)
        days[label] = _parse_int(raw_days, f"days_from_sbrt of session {raw_id!r}", path)
    return days


def baseline_session(days: Mapping[str, int], source: str | Path | None = None) -> str:
    """Return the baseline session: the latest one on or before the SBRT day.

    Parameters
    ----------
    days : mapping of str to int
        Session -> days from SBRT (negative or 0 before treatment).
    source : str or Path, optional
        File named in the error message (the sessions table).

    Returns
    -------
    str
        The session with the largest ``days_from_sbrt`` that is <= 0 (ties: the first listed).

    Raises
    ------
    QMRIInputError
        If no session has ``days_from_sbrt`` <= 0.
    """
    before = [(d, -i, s) for i, (s, d) in enumerate(days.items()) if d <= 0]
    if not before:
        raise QMRIInputError("no baseline session (none has days_from_sbrt <= 0)", source)
    return max(before)[2]


def read_participants_tsv(path: str | Path) -> pd.DataFrame:
    """Read ``participants.tsv`` with its optional clinical columns (contract, section 5).

    Parameters
    ----------
    path : str or Path
        Tab-separated file with a ``participant_id`` column; ``n/a`` and empty cells are missing.

    Returns
    -------
    pandas.DataFrame
        One row per participant, in file order. ``participant_id`` is kept as written
        (``sub-01``); numeric columns are numbers; ``treated_levels``, when present, holds lists
        of levels (``["T12", "L1"]``, ``[]`` where missing), parsed by
        :func:`qmri.labels.parse_levels`.

    Raises
    ------
    QMRIInputError
        Naming the file, for a missing file or ``participant_id`` column, an empty or repeated
        participant id, or an unknown treated level.
    """
    df = _read_tsv(path)
    _require_columns(df, ("participant_id",), path)
    ids = df["participant_id"].str.strip()
    if (ids == "").any():
        raise QMRIInputError("empty participant_id", path)
    if ids.duplicated().any():
        raise QMRIInputError(
            f"participant {ids[ids.duplicated()].iloc[0]!r} is listed twice", path
        )
    out = pd.DataFrame({"participant_id": ids})
    for col in df.columns:
        if col == "participant_id":
            continue
        cells = df[col].str.strip().replace({"n/a": ""})
        if col == "treated_levels":
            levels = []
            for pid, text in zip(ids, cells, strict=True):
                try:
                    levels.append(parse_levels(text) if text else [])
                except QMRIInputError as exc:
                    raise QMRIInputError(
                        f"participant {pid}: treated_levels: {exc}", path
                    ) from None
            out[col] = levels
            continue
        present = cells != ""
        numbers = pd.to_numeric(cells[present], errors="coerce")
        if present.any() and numbers.notna().all():
            out[col] = pd.to_numeric(cells.where(present), errors="coerce")
        else:
            out[col] = cells.where(present)
    return out


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a qmri CSV table, keeping ``subject``/``session``/... as text (``"01"`` stays ``"01"``).

    Raises
    ------
    QMRIInputError
        Naming the file, if it is missing or not readable CSV.
    """
    path = Path(path)
    if not path.is_file():
        raise QMRIInputError("table not found", path)
    try:
        return pd.read_csv(path, dtype=dict.fromkeys(_TEXT_COLUMNS, str))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise QMRIInputError(f"not a readable CSV table ({exc})", path) from None


def write_table(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a table with :func:`qmri.io.write_csv` (atomic, contract CSV format)."""
    return write_csv(df, path)


def cohort_table(
    tables: Iterable[str | Path | pd.DataFrame], columns: Sequence[str] | None = None
) -> pd.DataFrame:
    """Concatenate per-subject tables into a cohort table.

    Parameters
    ----------
    tables : iterable of path or DataFrame
        Per-subject ``roistats`` or ``response`` tables (CSV files or frames), in any order.
    columns : sequence of str, optional
        Expected columns (e.g. :data:`ROISTATS_COLUMNS`); the result has exactly these, even when
        ``tables`` is empty. By default the columns of the first table.

    Returns
    -------
    pandas.DataFrame
        Rows sorted by ``subject`` (string order), each subject's rows in their own order.

    Raises
    ------
    QMRIInputError
        Naming the file, for a missing or unreadable file or one whose columns differ.
    """
    frames: list[pd.DataFrame] = []
    for item in tables:
        frame = item if isinstance(item, pd.DataFrame) else read_table(item)
        source = None if isinstance(item, pd.DataFrame) else item
        expected = list(columns) if columns is not None else None
        if expected is None and frames:
            expected = list(frames[0].columns)
        if expected is not None and list(frame.columns) != expected:
            raise QMRIInputError(
                f"table columns {list(frame.columns)} differ from {expected}", source
            )
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=list(columns or ()))
    df = pd.concat(frames, ignore_index=True)
    df["subject"] = df["subject"].astype(str)
    order = df["subject"].sort_values(kind="stable").index
    return df.loc[order].reset_index(drop=True)


def _read_tsv(path: str | Path) -> pd.DataFrame:
    """Read a TSV as text (no NA conversion), naming the file in errors."""
    path = Path(path)
    if not path.is_file():
        raise QMRIInputError("file not found", path)
    try:
        df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, na_filter=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise QMRIInputError(f"not a readable TSV file ({exc})", path) from None
    df.columns = [str(c).strip() for c in df.columns]
    return df


def _require_columns(df: pd.DataFrame, columns: Sequence[str], path: str | Path) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise QMRIInputError(
            f"lacks column(s) {', '.join(missing)} (has {', '.join(df.columns)})", path
        )


def _parse_int(text: str, what: str, path: str | Path) -> int:
    text = str(text).strip()
    if re.fullmatch(r"[+-]?[0-9]+", text):
        return int(text)
    if re.fullmatch(r"[+-]?[0-9]+\.0*", text):
        return int(float(text))
    raise QMRIInputError(f"{what} is not an integer: {text!r}", path)


def treated_levels(participants: Path, subject: str) -> list[str]:
    """The treated vertebral levels of a subject (``treated_levels`` of participants.tsv)."""
    table = read_participants_tsv(participants)
    row = table[table["participant_id"] == f"sub-{subject}"]
    if row.empty or "treated_levels" not in table.columns:
        raise QMRIInputError(
            f"no treated_levels for sub-{subject} (needed to derive the ROIs)", participants
        )
    return list(row.iloc[0]["treated_levels"])
