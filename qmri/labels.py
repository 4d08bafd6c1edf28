"""Vertebral levels and the ROI label lookup table (data contract, section 2).

Label images are BIDS ``dseg`` images drawn on the baseline session; their lookup table
(``*_dseg.tsv``, columns ``index`` and ``name``) names every label ``<structure>_<level>``:

========== ========================================== ===============
structure  meaning                                    level suffix
========== ========================================== ===============
``vb``     vertebral body                             required
``pe``     posterior elements (both sides)            required
``pel``    posterior elements, left sector            required
``per``    posterior elements, right sector           required
``cord``   spinal cord                                required
``csf``    cerebrospinal fluid                        optional
``aorta``  aorta (measured arterial input function)   optional
``tumor``  gross tumour volume (GTV)                  optional
========== ========================================== ===============

Levels are ``C1``..``C7``, ``T1``..``T12``, ``L1``..``L5``, ``S1``..``S5``, ordered cranio-caudally
(``C7`` and ``T1`` are adjacent, as are ``T12`` and ``L1``, ``L5`` and ``S1``). Names are
case-sensitive, exactly as the contract writes them (``vb_L1``, not ``VB_l1``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from qmri.errors import QMRIInputError

__all__ = [
    "LEVELS",
    "LEVEL_INDEX",
    "LEVEL_REQUIRED",
    "POSTERIOR_ELEMENTS",
    "STRUCTURES",
    "Label",
    "check_labels",
    "label_table",
    "level_index",
    "parse_label_name",
    "parse_levels",
    "read_dseg_tsv",
]

#: Vertebral levels in cranio-caudal order.
LEVELS: tuple[str, ...] = (
    *(f"C{i}" for i in range(1, 8)),
    *(f"T{i}" for i in range(1, 13)),
    *(f"L{i}" for i in range(1, 6)),
    *(f"S{i}" for i in range(1, 6)),
)

#: Level name -> position in :data:`LEVELS` (``C1`` is 0, ``S5`` is 28).
LEVEL_INDEX: dict[str, int] = {level: i for i, level in enumerate(LEVELS)}

#: Structures a label name may start with, in the contract's order.
STRUCTURES: tuple[str, ...] = ("vb", "pe", "pel", "per", "cord", "csf", "aorta", "tumor")

#: Structures whose label name must carry a level suffix.
LEVEL_REQUIRED: frozenset[str] = frozenset({"vb", "pe", "pel", "per", "cord"})

#: Posterior-element structures (whole, left sector, right sector).
POSTERIOR_ELEMENTS: tuple[str, ...] = ("pe", "pel", "per")

#: Largest label index a float label image may hold (beyond it float32 has no whole numbers).
_MAX_LABEL = 2**24

_NAME_RE = re.compile(r"^(?P<structure>[a-z]+)(?:_(?P<level>[A-Z][0-9]+))?$")
_NAME_HELP = (
    "expected <structure>[_<level>] with structure one of "
    + ", ".join(STRUCTURES)
    + " and level C1..C7, T1..T12, L1..L5 or S1..S5 (required for vb, pe, pel, per, cord)"
)


@dataclass(frozen=True, slots=True)
class Label:
    """One row of a label lookup table.

    Attributes
    ----------
    index : int
        Voxel value of the label in the ``dseg`` image (> 0).
    name : str
        Label name as written in the table, e.g. ``"vb_L1"``.
    structure : str
        One of :data:`STRUCTURES`.
    level : str or None
        Vertebral level (one of :data:`LEVELS`), or None for a label without level suffix.
    """

    index: int
    name: str
    structure: str
    level: str | None


def level_index(level: str) -> int:
    """Return the cranio-caudal position of a vertebral level (``"C1"`` -> 0, ``"L1"`` -> 19).

    Parameters
    ----------
    level : str
        Level name, e.g. ``"T12"``.

    Returns
    -------
    int
        Index into :data:`LEVELS`.

    Raises
    ------
    QMRIInputError
        If ``level`` is not a known level.
    """
    try:
        return LEVEL_INDEX[level]
    except (KeyError, TypeError):
        raise QMRIInputError(
            f"unknown vertebral level {level!r} (expected C1..C7, T1..T12, L1..L5, S1..S5)"
        ) from None


def parse_levels(text: str | Iterable[str], source: str | Path | None = None) -> list[str]:
    """Parse a list of vertebral levels such as ``"T12,L1"``.

    Surrounding white space is ignored and letters are upper-cased (``"t12, l1"`` is accepted);
    duplicates are dropped and the result is in cranio-caudal order, so ``"L1,T12"`` also gives
    ``["T12", "L1"]``.

    Parameters
    ----------
    text : str or iterable of str
        Comma-separated levels, or the levels themselves.
    source : str or Path, optional
        File (or option) the levels come from, named in error messages.

    Returns
    -------
    list of str
        Levels, unique, in :data:`LEVELS` order.

    Raises
    ------
    QMRIInputError
        For an unknown level or an empty list.
    """
    items = text.split(",") if isinstance(text, str) else [str(t) for t in text]
    levels = [item.strip().upper() for item in items]
    levels = [level for level in levels if level]
    if not levels:
        raise QMRIInputError(f"no vertebral level given in {text!r}", source)
    unknown = [level for level in levels if level not in LEVEL_INDEX]
    if unknown:
        raise QMRIInputError(
            f"unknown vertebral level(s) {', '.join(unknown)} in {text!r} "
            "(expected C1..C7, T1..T12, L1..L5, S1..S5)",
            source,
        )
    return sorted(set(levels), key=LEVEL_INDEX.__getitem__)


def parse_label_name(name: str, source: str | Path | None = None) -> tuple[str, str | None]:
    """Split a label name into structure and level (``"pel_T12"`` -> ``("pel", "T12")``).

    Parameters
    ----------
    name : str
        Label name from a ``dseg.tsv``.
    source : str or Path, optional
        File named in error messages.

    Returns
    -------
    structure : str
        One of :data:`STRUCTURES`.
    level : str or None
        Level, or None when the name has no level suffix (allowed for csf, aorta, tumor).

    Raises
    ------
    QMRIInputError
        If the name does not follow the contract.
    """
    match = _NAME_RE.match(name)
    if match is None or match["structure"] not in STRUCTURES:
        raise QMRIInputError(
            f"label name {name!r} does not follow the contract: {_NAME_HELP}", source
        )
    structure, level = match["structure"], match["level"]
    if level is not None and level not in LEVEL_INDEX:
        raise QMRIInputError(f"label name {name!r} has an unknown level: {_NAME_HELP}", source)
    if level is None and structure in LEVEL_REQUIRED:
        raise QMRIInputError(f"label name {name!r} needs a level suffix: {_NAME_HELP}", source)
    return structure, level


def label_table(
    names: Mapping[int, str | Label], source: str | Path | None = None
) -> dict[int, Label]:
    """Validate a mapping index -> name and parse it into :class:`Label` objects.

    Parameters
    ----------
    names : mapping of int to str or Label
        Label value -> label name (a :class:`Label` value is re-checked and kept).
    source : str or Path, optional
        File named in error messages.

    Returns
    -------
    dict of int to Label
        Sorted by index.

    Raises
    ------
    QMRIInputError
        For a non-positive index, a duplicate name or a name that breaks the contract.
    """
    table: dict[int, Label] = {}
    seen: dict[str, int] = {}
    for index, value in sorted(names.items()):
        name = value.name if isinstance(value, Label) else str(value)
        if int(index) <= 0:
            raise QMRIInputError(f"label index must be a positive integer, got {index}", source)
        if name in seen:
            raise QMRIInputError(
                f"duplicate label name {name!r} (indices {seen[name]} and {index})", source
            )
        seen[name] = int(index)
        structure, level = parse_label_name(name, source)
        table[int(index)] = Label(int(index), name, structure, level)
    return table


def read_dseg_tsv(path: str | Path) -> dict[int, Label]:
    """Read a BIDS ``dseg.tsv`` lookup table (tab separated, columns ``index`` and ``name``).

    Other columns (``abbreviation``, ``color``, ...) are ignored. A row with index 0 is read as
    the background and skipped.

    Parameters
    ----------
    path : str or Path
        The ``*_dseg.tsv`` file.

    Returns
    -------
    dict of int to Label
        Label value -> parsed label, sorted by index.

    Raises
    ------
    QMRIInputError
        Naming the file, for a missing file or column, an empty table, a non-integer, negative or
        duplicate index, or a duplicate or non-contract name.
    """
    path = Path(path)
    if not path.is_file():
        raise QMRIInputError("label table not found", path)
    try:
        df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, na_filter=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise QMRIInputError(f"not a readable TSV file ({exc})", path) from None
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in ("index", "name") if c not in df.columns]
    if missing:
        raise QMRIInputError(
            f"label table lacks column(s) {', '.join(missing)} (has {', '.join(df.columns)})",
            path,
        )
    names: dict[int, str] = {}
    for raw_index, raw_name in zip(df["index"], df["name"], strict=True):
        text = raw_index.strip()
        if not re.fullmatch(r"[+-]?[0-9]+", text):
            raise QMRIInputError(f"label index {raw_index!r} is not an integer", path)
        index = int(text)
        if index < 0:
            raise QMRIInputError(f"label index {index} is negative", path)
        if index in names:
            raise QMRIInputError(f"duplicate label index {index}", path)
        if index == 0:
            continue
        names[index] = raw_name.strip()
    if not names:
        raise QMRIInputError("label table holds no labels", path)
    return label_table(names, path)


def check_labels(
    label_array: np.ndarray,
    table: Mapping[int, Label | str],
    path: str | Path | None = None,
) -> np.ndarray:
    """Check that every value of a label image is 0 (background) or a label of the table.

    Parameters
    ----------
    label_array : ndarray
        Label image data (any numeric dtype holding whole numbers).
    table : mapping of int to Label or str
        Lookup table, as returned by :func:`read_dseg_tsv`.
    path : str or Path, optional
        Label image named in error messages.

    Returns
    -------
    ndarray of int64
        The label image as integers.

    Raises
    ------
    QMRIInputError
        Naming the file and the values, for values absent from the table, or values that are not
        whole numbers from 0 to 2**24 (float images: whole values such as 3.0 are read as
        integers; NaN, 1.5 or -1 are errors).
    """
    data = np.asarray(label_array)
    if data.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(data) | (data != np.round(data)) | (data < 0) | (data > _MAX_LABEL)
        if bad.any():
            sample = ", ".join(f"{v:g}" for v in np.unique(data[bad])[:5])
            raise QMRIInputError(
                f"label image holds non-integer values ({sample}) in {int(bad.sum())} voxel(s): "
                f"a label map holds whole label indices from 0 to {_MAX_LABEL}, not "
                "interpolated or scaled values",
                path,
            )
    elif data.dtype.kind not in "iub":
        raise QMRIInputError(f"label image has non-numeric type {data.dtype}", path)
    elif data.dtype.kind == "i" and data.size and int(data.min()) < 0:
        raise QMRIInputError(f"label image holds negative values ({int(data.min())})", path)
    ints = data.astype(np.int64)
    values = np.unique(ints)
    known = np.fromiter((int(k) for k in table), dtype=np.int64, count=len(table))
    unknown = values[(values != 0) & ~np.isin(values, known)]
    if unknown.size:
        listed = ", ".join(str(v) for v in unknown[:20]) + (" ..." if unknown.size > 20 else "")
        raise QMRIInputError(f"label value(s) {listed} are not in the label table", path)
    return ints
