"""Literature-based response flags from a ``response`` table (data contract, section 3).

A *flag* marks a follow-up measurement whose percent change from baseline passes a threshold in
a given direction, e.g. ``vp_fall_gt_20pct``: the ROI's plasma volume fraction fell by more than
20 % (``pct_change < -20``). Flags are computed for every follow-up row of the response table
whose map, ROI and statistic are selected, and returned as a tidy table whose every row names its
threshold, so that a table written with one configuration can never be read as another.

Thresholds (:data:`DEFAULT_THRESHOLDS`) are a mapping ``"<map>_<direction>" -> percent``, with
``direction`` ``fall`` or ``rise`` and ``map`` matched case-insensitively to the table's ``map``
column (``vp`` matches ``vp``, ``adc`` matches ``ADC``). The defaults are round numbers in the range
reported for spinal and bone metastases; they are *not* validated cut-offs: set them per study.

``vp_fall: 20``
    Kumar et al., "A pilot study evaluating the use of dynamic contrast-enhanced perfusion MRI to
    predict local recurrence after radiosurgery on spinal metastases", Technol Cancer Res Treat
    2017;16:857-865, used a -20 % cut-off on the change of DCE vp (mean change -76 % without
    versus +28 % with local recurrence). Chu et al., Spine 2013;38:E1418-E1424, and Lis et al.,
    Neurosurg Focus 2017;42:E9 (mean vp fall of 65 % one hour after high-dose radiation) report
    the same direction. A vp fall beyond the threshold reads as *likely local control*.
``ktrans_fall: 30``
    Kumar et al. (above): mean Ktrans change -66 % without versus -14 % with local recurrence; the
    default lies between the two groups. Direction as for vp.
``adc_rise: 25``
    Tumour ADC rises as cellularity falls in responding bone metastases (Byun et al., AJNR
    2002;23:906-912; Messiou et al., Eur Radiol 2011;21:2169-2177); a rise of about 25 % is the
    order of change taken as likely response in bone by MET-RADS-P (Padhani et al., Eur Urol
    2017;71:81-92). Check the guideline version you follow.

Rows: only follow-up sessions, i.e. sessions later than the subject's baseline (the latest
session with ``days_from_sbrt <= 0``, as :func:`qmri.tables.baseline_session` chooses it).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from qmri.tables import RESPONSE_COLUMNS

__all__ = [
    "DEFAULT_FLAG_ROIS",
    "DEFAULT_FLAG_STATS",
    "DEFAULT_THRESHOLDS",
    "FLAG_COLUMNS",
    "FlagRule",
    "flag_name",
    "parse_thresholds",
    "response_flags",
]

#: Default thresholds in percent, keyed ``"<map>_<fall|rise>"`` (see the module docstring).
DEFAULT_THRESHOLDS: dict[str, float] = {"vp_fall": 20.0, "ktrans_fall": 30.0, "adc_rise": 25.0}

#: ROIs flagged by default: both delineations of the treated lesion.
DEFAULT_FLAG_ROIS: tuple[str, ...] = ("tumor", "ctv")

#: ROI statistics flagged by default.
DEFAULT_FLAG_STATS: tuple[str, ...] = ("mean", "median")

#: Columns of the flag table, in order.
FLAG_COLUMNS: tuple[str, ...] = (
    "subject",
    "session",
    "days_from_sbrt",
    "roi",
    "map",
    "stat",
    "pct_change",
    "flag",
    "threshold_pct",
    "direction",
    "value",
)

_KEY = re.compile(r"^(?P<map>.+)_(?P<direction>fall|rise)$", re.IGNORECASE)


@dataclass(frozen=True)
class FlagRule:
    """One response flag: a map's percent change beyond a threshold in one direction.

    Attributes
    ----------
    map : str
        Map name, matched case-insensitively to the response table's ``map`` column.
    direction : {"fall", "rise"}
        ``fall`` flags ``pct_change < -threshold_pct``; ``rise`` flags
        ``pct_change > threshold_pct`` (strict inequalities).
    threshold_pct : float
        Threshold in percent of the baseline value (non-negative).
    """

    map: str
    direction: Literal["fall", "rise"]
    threshold_pct: float

    @property
    def name(self) -> str:
        """Flag name, e.g. ``vp_fall_gt_20pct`` (``adc_rise_gt_12.5pct`` for 12.5 %)."""
        return flag_name(self.map, self.direction, self.threshold_pct)

    def evaluate(self, pct_change: np.ndarray) -> pd.array:
        """Flag values for percent changes: True/False, missing (``<NA>``) where NaN.

        Parameters
        ----------
        pct_change : ndarray of float
            Percent change from baseline (%).

        Returns
        -------
        pandas.arrays.BooleanArray
            Nullable booleans, one per input.
        """
        pct = np.asarray(pct_change, dtype=np.float64)
        hit = pct < -self.threshold_pct if self.direction == "fall" else pct > self.threshold_pct
        return pd.array(np.where(np.isfinite(pct), hit, None), dtype="boolean")


def flag_name(map_name: str, direction: str, threshold_pct: float) -> str:
    """Return ``<map>_<direction>_gt_<threshold>pct`` with the map lower-cased.

    Parameters
    ----------
    map_name : str
        Map name (``"vp"``, ``"ADC"``).
    direction : str
        ``"fall"`` or ``"rise"``.
    threshold_pct : float
        Threshold in percent; written without a trailing ``.0`` (``20`` not ``20.0``).
    """
    return f"{map_name.lower()}_{direction}_gt_{float(threshold_pct):g}pct"


def parse_thresholds(thresholds: Mapping[str, float] | None = None) -> list[FlagRule]:
    """Turn a threshold mapping into flag rules.

    Parameters
    ----------
    thresholds : mapping of str to float, optional
        ``"<map>_<fall|rise>"`` -> threshold in percent (default :data:`DEFAULT_THRESHOLDS`).

    Returns
    -------
    list of FlagRule
        In the mapping's order.

    Raises
    ------
    ValueError
        Naming the key, for a key not of the form ``<map>_fall``/``<map>_rise`` or a threshold
        that is not finite and non-negative.
    TypeError
        Naming the key, for a threshold that is not a number.
    """
    thresholds = DEFAULT_THRESHOLDS if thresholds is None else thresholds
    rules = []
    for key, value in thresholds.items():
        m = _KEY.match(str(key))
        if not m:
            raise ValueError(
                f"response threshold key {key!r} is not of the form '<map>_fall' or '<map>_rise'"
            )
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"response threshold {key!r} must be a number, got {value!r}")
        if not (np.isfinite(value) and value >= 0):
            raise ValueError(f"response threshold {key!r} must be >= 0 %, got {value!r}")
        direction = m.group("direction").lower()
        rules.append(FlagRule(m.group("map"), direction, float(value)))  # type: ignore[arg-type]
    return rules


def _followup_rows(response: pd.DataFrame) -> pd.Series:
    """True for rows after their subject's baseline day (latest ``days_from_sbrt <= 0``)."""
    days = response["days_from_sbrt"].astype(np.float64)
    pre = days.where(days <= 0)
    base_day = pre.groupby(response["subject"].astype(str)).transform("max")
    # a subject without any pre-treatment session has no baseline: nothing is a follow-up
    return (days > base_day).fillna(False).astype(bool)


def response_flags(
    response: pd.DataFrame,
    thresholds: Mapping[str, float] | None = None,
    *,
    rois: Sequence[str] | None = DEFAULT_FLAG_ROIS,
    stats: Sequence[str] | None = DEFAULT_FLAG_STATS,
) -> pd.DataFrame:
    """Response flags of every follow-up measurement, one row per (measurement, flag).

    Parameters
    ----------
    response : pandas.DataFrame
        A response table (:data:`qmri.tables.RESPONSE_COLUMNS`), one subject or the cohort.
    thresholds : mapping of str to float, optional
        ``"<map>_<fall|rise>"`` -> threshold in percent; default :data:`DEFAULT_THRESHOLDS`.
    rois : sequence of str or None, default :data:`DEFAULT_FLAG_ROIS`
        ROIs to flag; None for every ROI of the table.
    stats : sequence of str or None, default :data:`DEFAULT_FLAG_STATS`
        Statistics (``mean``, ``median``) to flag; None for all.

    Returns
    -------
    pandas.DataFrame
        Exactly :data:`FLAG_COLUMNS`. ``pct_change`` is the table's percent change (%),
        ``flag`` the flag name (:func:`flag_name`), ``threshold_pct`` the threshold (%),
        ``direction`` ``fall`` or ``rise`` and ``value`` a nullable boolean: True when the change
        passes the threshold, False when not, missing (an empty CSV cell) when ``pct_change`` is.
        Rows follow the response table's order, flags in the order of ``thresholds`` for each.

    Raises
    ------
    ValueError
        If the table lacks a column or a threshold is malformed (see :func:`parse_thresholds`).
    """
    rules = parse_thresholds(thresholds)
    missing = [c for c in RESPONSE_COLUMNS if c not in response.columns]
    if missing:
        raise ValueError(f"response table lacks column(s) {', '.join(missing)}")
    df = response.reset_index(drop=True)
    keep = _followup_rows(df)
    if rois is not None:
        keep &= df["roi"].astype(str).isin(list(rois))
    if stats is not None:
        keep &= df["stat"].astype(str).isin(list(stats))
    df = df.loc[keep]
    map_lower = df["map"].astype(str).str.lower()
    parts = []
    for rank, rule in enumerate(rules):
        sel = df.loc[map_lower == rule.map.lower()]
        part = pd.DataFrame(
            {
                "subject": sel["subject"].astype(str),
                "session": sel["session"].astype(str),
                "days_from_sbrt": sel["days_from_sbrt"].astype(np.int64),
                "roi": sel["roi"].astype(str),
                "map": sel["map"].astype(str),
                "stat": sel["stat"].astype(str),
                "pct_change": sel["pct_change"].astype(np.float64),
                "flag": rule.name,
                "threshold_pct": rule.threshold_pct,
                "direction": rule.direction,
                "value": rule.evaluate(sel["pct_change"].to_numpy(dtype=np.float64)),
                "_row": sel.index.to_numpy(),
                "_rule": rank,
            }
        )
        parts.append(part)
    if not parts or all(p.empty for p in parts):
        out = pd.DataFrame({c: pd.Series(dtype=object) for c in FLAG_COLUMNS})
        out["value"] = out["value"].astype("boolean")
        return out
    out = pd.concat([p for p in parts if not p.empty], ignore_index=True)
    out = out.sort_values(["_row", "_rule"], kind="stable")
    return out[list(FLAG_COLUMNS)].reset_index(drop=True)
