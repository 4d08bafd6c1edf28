"""The dataset-level files a DICOM import creates or extends (data contract, sections 1 and 5).

* ``dataset_description.json``, ``.bidsignore`` (``perf/*_dce.*``) and the column descriptions
  ``sessions.json`` / ``participants.json``: written only when missing (``.bidsignore`` gets
  the DCE line appended when it lacks it).
* ``participants.tsv``: a row ``sub-<s>`` is appended when the participant is new (other
  columns ``n/a``); :func:`set_participant_values` fills a row's ``n/a`` cells (adding
  columns, ``n/a`` in the other rows) and never changes a value already there.
* ``sub-<s>/sub-<s>_sessions.tsv``: ``session_id`` and ``days_from_sbrt`` (integer days from
  the SBRT date to the study date); a new session's row is appended, an existing row must
  agree with the date given.

Every write is atomic (:func:`qmri.io.atomic_output`); existing bytes are kept as they are and
only new lines are added.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path

from qmri import __version__
from qmri.errors import QMRIInputError
from qmri.io import atomic_output, write_json

__all__ = [
    "BIDS_VERSION",
    "DCE_BIDSIGNORE",
    "days_from_sbrt",
    "ensure_dataset_files",
    "ensure_derivative_description",
    "existing_days",
    "set_participant_values",
    "update_participants",
    "update_sessions",
]

BIDS_VERSION = "1.10.0"
#: ``.bidsignore`` line for DCE (BIDS has no final suffix for it yet).
DCE_BIDSIGNORE = "**/perf/*_dce.*"

_SESSIONS_JSON = {
    "session_id": {"Description": "Session identifier (ses-<label>)"},
    "days_from_sbrt": {
        "Description": "Days from the first SBRT fraction (negative: before treatment)",
        "Units": "day",
    },
}
_PARTICIPANTS_JSON = {"participant_id": {"Description": "Participant label"}}


def _write_text(text: str, path: Path) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _append_line(path: Path, header: str, line: str) -> None:
    """Append ``line`` to a TSV (created with ``header`` when missing), keeping its bytes."""
    text = path.read_text(encoding="utf-8") if path.exists() else header + "\n"
    if text and not text.endswith("\n"):
        text += "\n"
    _write_text(text + line + "\n", path)


def ensure_dataset_files(bids_dir: Path) -> None:
    """Create ``dataset_description.json``, ``README``, ``.bidsignore`` and the TSV column
    descriptions when missing (existing files are left alone; ``.bidsignore`` gains the DCE line)."""
    bids_dir.mkdir(parents=True, exist_ok=True)
    description = bids_dir / "dataset_description.json"
    if not description.exists():
        write_json(
            {
                "Name": "qmri DICOM import",
                "BIDSVersion": BIDS_VERSION,
                "DatasetType": "raw",
                "GeneratedBy": [
                    {
                        "Name": "qmri",
                        "Version": __version__,
                        "Description": "qmri.dicom: MR series converted with dcm2niix",
                    }
                ],
            },
            description,
        )
    readme = bids_dir / "README"
    if not any((bids_dir / name).exists() for name in ("README", "README.md", "README.txt")):
        _write_text(
            "MR series converted from DICOM by qmri (qmri.dicom, dcm2niix) into the layout of "
            "the qmri data contract.\n",
            readme,
        )
    ignore = bids_dir / ".bidsignore"
    lines = ignore.read_text(encoding="utf-8").splitlines() if ignore.exists() else []
    if DCE_BIDSIGNORE not in lines:
        _write_text("\n".join([*lines, DCE_BIDSIGNORE]) + "\n", ignore)
    for name, content in (("sessions.json", _SESSIONS_JSON),
                          ("participants.json", _PARTICIPANTS_JSON)):  # fmt: skip
        if not (bids_dir / name).exists():
            write_json(content, bids_dir / name)


def ensure_derivative_description(folder: Path, name: str) -> None:
    """Write a derivative ``dataset_description.json`` in ``folder`` when it has none."""
    path = Path(folder) / "dataset_description.json"
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(
        {
            "Name": name,
            "BIDSVersion": BIDS_VERSION,
            "DatasetType": "derivative",
            "GeneratedBy": [{"Name": "qmri", "Version": __version__}],
        },
        path,
    )


def sessions_tsv(bids_dir: Path, subject: str) -> Path:
    """``sub-<s>/sub-<s>_sessions.tsv`` of a subject."""
    return bids_dir / f"sub-{subject}" / f"sub-{subject}_sessions.tsv"


def existing_days(bids_dir: Path, subject: str, session: str) -> int | None:
    """``days_from_sbrt`` of a session already in the sessions table, or None."""
    from qmri.tables import read_sessions_tsv  # pandas: imported when a table exists

    path = sessions_tsv(bids_dir, subject)
    if not path.exists():
        return None
    return read_sessions_tsv(path).get(session)


def days_from_sbrt(
    study_date: dt.date | None,
    sbrt_date: dt.date | None,
    *,
    existing: int | None,
    source: Path,
    table: Path,
) -> int:
    """Days from SBRT of a session: study date minus SBRT date, or the table's value.

    Parameters
    ----------
    study_date : datetime.date or None
        ``StudyDate`` of the session's series.
    sbrt_date : datetime.date or None
        Date of the first SBRT fraction.
    existing : int or None
        The session's ``days_from_sbrt`` already in the sessions table.
    source, table : Path
        A DICOM file and the sessions table, named in errors.

    Raises
    ------
    QMRIInputError
        Without an SBRT date and without a table row; without a study date but with an SBRT
        date and no row; or when the computed days disagree with the row.
    """
    if sbrt_date is None:
        if existing is None:
            raise QMRIInputError(
                "no SBRT date given and the sessions table has no row for this session "
                "(give the SBRT date to compute days_from_sbrt)",
                table,
            )
        return existing
    if study_date is None:
        if existing is not None:
            return existing
        raise QMRIInputError(
            "no StudyDate in the DICOM headers: cannot compute days_from_sbrt", source
        )
    days = (study_date - sbrt_date).days
    if existing is not None and existing != days:
        raise QMRIInputError(
            f"days_from_sbrt {existing} in the sessions table disagrees with the study date and "
            f"the SBRT date given ({days} days)",
            table,
        )
    return days


def update_sessions(bids_dir: Path, subject: str, session: str, days: int) -> Path:
    """Append ``ses-<t>`` with ``days`` to the subject's sessions table unless it is listed.

    Columns other than ``session_id`` and ``days_from_sbrt`` (if the table has any) get
    ``n/a``. A table without a ``days_from_sbrt`` column is an error (the contract needs it).
    """
    from qmri.tables import read_sessions_tsv

    path = sessions_tsv(bids_dir, subject)
    if path.exists():
        if session in read_sessions_tsv(path):  # also checks the columns
            return path
        columns = path.read_text(encoding="utf-8").splitlines()[0].split("\t")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        columns = ["session_id", "days_from_sbrt"]
    values = {"session_id": f"ses-{session}", "days_from_sbrt": str(int(days))}
    _append_line(
        path, "\t".join(columns), "\t".join(values.get(c.strip(), "n/a") for c in columns)
    )
    return path


def update_participants(bids_dir: Path, subject: str) -> Path:
    """Append ``sub-<s>`` to ``participants.tsv`` when the participant is new.

    Other columns of a new row are ``n/a``; existing rows and columns are never rewritten.
    """
    from qmri.tables import read_participants_tsv

    path = bids_dir / "participants.tsv"
    participant = f"sub-{subject}"
    if path.exists():
        table = read_participants_tsv(path)
        if participant in set(table["participant_id"].str.strip()):
            return path
        columns = path.read_text(encoding="utf-8").splitlines()[0].split("\t")
    else:
        columns = ["participant_id"]
    row = [participant if c.strip() == "participant_id" else "n/a" for c in columns]
    _append_line(path, "\t".join(columns), "\t".join(row))
    return path


def _same_value(a: str, b: str) -> bool:
    """Equal as text, or as numbers (``35`` and ``35.0``)."""
    if a == b:
        return True
    try:
        return float(a) == float(b)
    except ValueError:
        return False


def set_participant_values(bids_dir: Path, subject: str, values: Mapping[str, str]) -> Path:
    """Fill the cells of ``sub-<subject>``'s row of ``participants.tsv`` from ``values``.

    A column the table lacks is added (``n/a`` in the other rows); a cell that is ``n/a`` or
    empty takes the value; a cell that holds the same value is left as it is.

    Raises
    ------
    QMRIInputError
        Naming the table: the row is missing, or a cell already holds another value (the
        import never overwrites what a user wrote).
    """
    path = bids_dir / "participants.tsv"
    participant = f"sub-{subject}"
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    if not lines:
        raise QMRIInputError(f"no row for {participant}", path)
    rows = [line.split("\t") for line in lines]
    header = [c.strip() for c in rows[0]]
    for key in values:
        if key not in header:
            header.append(key)
            for row in rows[1:]:
                row.append("n/a")
    ids = [row[header.index("participant_id")].strip() for row in rows[1:]]
    if participant not in ids:
        raise QMRIInputError(f"no row for {participant}", path)
    before = [list(r) for r in rows]
    row = rows[1 + ids.index(participant)]
    row += ["n/a"] * (len(header) - len(row))
    for key, value in values.items():
        cell = row[header.index(key)].strip()
        if cell in ("", "n/a"):
            row[header.index(key)] = value
        elif not _same_value(cell, value):
            raise QMRIInputError(
                f"{participant} has {key} {cell!r}; the import found {value!r} (edit the "
                "table or the DICOM folder's participants.tsv so they agree)",
                path,
            )
    rows[0] = header
    if rows == before:
        return path  # nothing new: the file keeps its bytes and its time stamp
    _write_text("\n".join("\t".join(r) for r in rows) + "\n", path)
    return path
