"""Planning-system structure names -> the data contract's label names.

A structure set names its ROIs as the planner typed them (``GTV``, ``CTV_T11``, ``SpinalCord``,
``Vertebra_L1``, ``T12_body``, ...). :class:`StructureMap` turns each name into a label of the
data contract (section 2) or a plan mask, by rules tried in order: the user's rules first (a
YAML file), then :data:`DEFAULT_RULES`. A name no rule matches is *unknown*: it is listed in the
import report and never guessed.

Targets of a rule
-----------------
``tumor``, ``csf``, ``aorta``, ``vb_<level>``, ``pe_<level>``, ``pel_<level>``, ``per_<level>``,
``cord_<level>``
    Labels of the ``dseg`` (contract names, checked by :func:`qmri.labels.parse_label_name`).
``cord``
    A spinal cord contoured over several levels: split per level (``cord_<level>``) by the
    cranio-caudal extents of the imported vertebral bodies (see :mod:`qmri.dicom.rtstruct`).
``ctv_plan``, ``ptv_plan``
    The plan's CTV and PTV. Plan targets overlap the labels, so they are written as masks beside
    the ``dseg`` (``desc-ctvplan_mask``, ``desc-ptvplan_mask``), not as labels; the ``ctv_plan``
    mask is the one the workflow compares with the derived ``ctv``.
``ignore``
    A structure known not to be a contract ROI (body outline, couch, other organs, PRVs): listed
    as ignored, not as unknown.

A target may use the named groups of a regular-expression rule: ``vb_{level}``. Levels are
upper-cased and must be one of :data:`qmri.labels.LEVELS`.

Matching
--------
Names are compared after normalisation (:func:`normalise_name`): lower case, surrounding space
removed, runs of spaces, ``-``, ``.`` and ``_`` turned into one ``_`` (``"Vertebra L1"``,
``"vertebra-l1"`` and ``"VERTEBRA_L1"`` all read ``vertebra_l1``). A plain rule matches the whole
normalised name; a rule written ``re:<pattern>`` is a regular expression that must match the
whole normalised name (``re.fullmatch``, case-insensitive).

User map (YAML)
---------------
A mapping of rules, tried in file order before the defaults; the reserved key ``use_defaults``
(default ``true``) switches the default rules off::

    use_defaults: true
    "GTV T11 final": tumor
    "re:vert_(?P<level>[ctls][0-9]+)_whole": "vb_{level}"
    "SpinalCanal": ignore
    "Esophagus": ignore

Default rules (:data:`DEFAULT_RULES`)
-------------------------------------
- PRVs and margin structures (``*prv*``, ``*_\\d+mm``, ``*+\\d+mm``) and optimisation/helper
  structures (``opt*``, ``*ring*``, ``z*``, ``*avoid*``) are ignored: they share a target's or
  an organ's name but are not that structure.
- ``GTV``, ``GTV1``, ``GTV_2``, ``GTVp``, ``GTV_T11``, ``GTV_T11_T12``, ``GTV_35Gy`` -> ``tumor``
  (several GTVs are merged into the one ``tumor`` label); the same forms of ``CTV`` ->
  ``ctv_plan`` and of ``PTV`` -> ``ptv_plan``.
- ``SpinalCord``, ``Spinal_Cord``, ``Cord``, ``SC`` -> ``cord`` (split per level);
  ``Cord_T11``, ``SpinalCord_T11`` -> ``cord_T11``.
- ``Vertebra_L1``, ``Vertebral_Body_L1``, ``VB_L1``, ``Vert_L1``, ``Body_L1``, ``L1``,
  ``L1_body``, ``L1_VB``, ``L1_vertebra`` -> ``vb_L1``. A planner's ``Vertebra_L1`` may include
  the posterior elements; map such names to ``ignore`` (or to ``vb_<level>`` knowingly) in the
  user map when the vertebral body is contoured on its own.
- ``PE_L1``, ``L1_PE``, ``PosteriorElements_L1`` -> ``pe_L1``; ``PEL_L1``/``PER_L1`` -> the left
  and right sectors. The group ``level`` of a regex is upper-cased, other groups are kept.
- ``CSF``, ``ThecalSac``, ``Thecal_Sac`` -> ``csf`` (the cord is taken out by the label
  priority). ``SpinalCanal`` is deliberately not mapped: SBRT planners often use the bony canal
  as a cord surrogate, which is neither CSF nor cord.
- ``Aorta``, ``Aorta_*``, ``GreatVes``, ``GreatVessels``, ``Great_Vessels`` -> ``aorta``.
- Other organs and objects that are not contract ROIs -> ``ignore``: ``External``, ``Body``,
  ``Skin``, ``Patient``, ``Outline``, ``Couch*``, ``Table``, ``Esophagus``/``Oesophagus``,
  ``Lung*``, ``Heart``, ``Kidney*``, ``Liver``, ``Bowel*``, ``Stomach``, ``Trachea``,
  ``CaudaEquina``, ``BrachialPlexus*``, ``Isocenter*``.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qmri.errors import QMRIInputError
from qmri.labels import LEVEL_INDEX, parse_label_name

__all__ = [
    "DEFAULT_DISC_HALF_MM",
    "DEFAULT_RULES",
    "LABEL_PRIORITY",
    "PLAN_MASKS",
    "Rule",
    "StructureMap",
    "StructureMatch",
    "label_rank",
    "normalise_name",
    "split_cord_by_levels",
    "table_order",
]

#: Targets written as masks beside the ``dseg`` (they overlap the labels), not as labels.
PLAN_MASKS: tuple[str, ...] = ("ctv_plan", "ptv_plan")

#: Special targets: a cord to split per level, and a structure to leave out.
_SPECIAL = ("cord", "ignore")

_LEVEL = r"(?P<level>[ctls][0-9]{1,2})"
# suffixes planners add to target names: a number, "p" (primary), levels, a dose
_TARGET_SUFFIX = r"(p|_?[0-9]+)?(_([ctls][0-9]{1,2}|[0-9]+(\.[0-9]+)?c?gy))*"


@dataclass(frozen=True)
class Rule:
    """One name rule.

    Attributes
    ----------
    pattern : str
        The normalised name (plain rule) or a regular expression (``regex`` True).
    target : str
        Label name, plan mask, ``cord``, ``ignore`` or a template using the regex's named
        groups (``vb_{level}``).
    regex : bool
        Whether ``pattern`` is a regular expression (full match, case-insensitive).
    source : str
        ``"default"`` or the user map's file.
    """

    pattern: str
    target: str
    regex: bool = False
    source: str = "default"

    def match(self, normalised: str) -> re.Match[str] | bool | None:
        """The match of a normalised name (a truthy value), or None/False."""
        if self.regex:
            return re.fullmatch(self.pattern, normalised, flags=re.IGNORECASE)
        return normalised == self.pattern

    @property
    def text(self) -> str:
        """The rule as written in a map (``re:`` prefix for a regex)."""
        return f"re:{self.pattern}" if self.regex else self.pattern


def _rx(pattern: str, target: str) -> Rule:
    return Rule(pattern, target, regex=True)


#: Default rules, tried in this order (first match wins); see the module docstring.
DEFAULT_RULES: tuple[Rule, ...] = (
    # PRVs, margins, helper and optimisation structures: never the organ or target itself
    _rx(r".*prv.*", "ignore"),
    _rx(r".*(_|\+)[0-9]+(\.[0-9]+)?_?mm.*", "ignore"),
    _rx(r"(opt|z|x_|help|avoid|ring).*|.*(ring|avoid|_opt).*", "ignore"),
    # targets
    _rx(rf"gtv{_TARGET_SUFFIX}", "tumor"),
    _rx(rf"ctv{_TARGET_SUFFIX}", "ctv_plan"),
    _rx(rf"ptv{_TARGET_SUFFIX}", "ptv_plan"),
    # spinal cord: whole (split per level) or per level
    _rx(r"spinal_?cord|cord|sc", "cord"),
    _rx(rf"(spinal_?)?cord_?{_LEVEL}", "cord_{level}"),
    _rx(rf"{_LEVEL}_(spinal_?)?cord", "cord_{level}"),
    # vertebral bodies
    _rx(
        rf"((vertebra|vertebral_?body|vert|vb|body)_?)?{_LEVEL}"
        r"(_(body|vb|vertebra|vertebral_?body))?",
        "vb_{level}",
    ),
    # posterior elements (whole, left and right sectors)
    _rx(rf"(pe|posterior_?elements?)_?{_LEVEL}", "pe_{level}"),
    _rx(rf"{_LEVEL}_(pe|posterior_?elements?)", "pe_{level}"),
    _rx(rf"pel_?{_LEVEL}", "pel_{level}"),
    _rx(rf"per_?{_LEVEL}", "per_{level}"),
    # fluid and vessels
    _rx(r"csf|thecal_?sac", "csf"),
    _rx(r"aorta(_[a-z0-9]+)*|great_?ves(sels?)?", "aorta"),
    # organs and objects that are not contract ROIs
    _rx(
        r"external|body|skin|patient|outline|couch.*|table|o?esophagus|lungs?(_[a-z]+)*"
        r"|heart|kidneys?(_[a-z]+)*|liver|bowel.*|stomach|trachea|cauda_?equina"
        r"|brachial_?plexus.*|isocent(er|re).*",
        "ignore",
    ),
)


def normalise_name(name: str) -> str:
    """Normalised structure name: lower case, separators (space ``-`` ``.`` ``_``) as one ``_``.

    ``+`` is kept (``Cord+3mm`` is a margin structure, not the cord).
    """
    text = re.sub(r"[\s_.\-]+", "_", str(name).strip().lower())
    return text.strip("_")


@dataclass(frozen=True)
class StructureMatch:
    """What a structure name maps to.

    Attributes
    ----------
    name : str
        The structure's name as written in the RTSTRUCT.
    status : {"label", "mask", "cord", "ignored", "unknown"}
        A ``dseg`` label, a plan mask (``ctv_plan``/``ptv_plan``), a cord to split per level,
        a structure left out on purpose, or a name no rule matched.
    target : str or None
        The label, mask name or ``cord``; None when ignored or unknown.
    rule : str or None
        The rule that matched (``re:`` prefix for a regex) and its source, e.g.
        ``"default: re:gtv..."``.
    """

    name: str
    status: str
    target: str | None
    rule: str | None


class StructureMap:
    """Structure-name rules: the user's first (in file order), then :data:`DEFAULT_RULES`.

    Parameters
    ----------
    rules : sequence of Rule, optional
        User rules, tried before the defaults.
    use_defaults : bool, default True
        Whether :data:`DEFAULT_RULES` are tried after the user rules.
    """

    def __init__(self, rules: Sequence[Rule] = (), *, use_defaults: bool = True) -> None:
        self.rules: tuple[Rule, ...] = tuple(rules) + (DEFAULT_RULES if use_defaults else ())
        for rule in rules:
            _check_target(rule.target, rule.source, rule.text)
            if rule.regex:
                try:
                    re.compile(rule.pattern)
                except re.error as exc:
                    raise QMRIInputError(
                        f"structure rule {rule.text!r} is not a valid regular expression ({exc})",
                        rule.source,
                    ) from None

    @classmethod
    def from_yaml(cls, path: str | Path | None) -> StructureMap:
        """Read a user map (see the module docstring); None gives the defaults alone.

        Raises
        ------
        QMRIInputError
            One line naming the file: missing, not YAML, not a mapping, a target that is not a
            contract label, plan mask, ``cord`` or ``ignore``, or an invalid regex.
        """
        if path is None:
            return cls()
        import yaml

        path = Path(path)
        if not path.is_file():
            raise QMRIInputError("structure-name map not found", path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid"
            raise QMRIInputError(f"structure-name map is not valid YAML ({first})", path) from None
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise QMRIInputError("structure-name map must be a mapping of name: label", path)
        use_defaults = data.get("use_defaults", True)
        if not isinstance(use_defaults, bool):
            raise QMRIInputError(f"use_defaults must be true or false, got {use_defaults!r}", path)
        rules = []
        for key, value in data.items():
            if key == "use_defaults":
                continue
            target = "ignore" if value is None else str(value).strip()
            text = str(key)
            if text.startswith("re:"):
                rules.append(Rule(text[3:], target, regex=True, source=str(path)))
            else:
                rules.append(Rule(normalise_name(text), target, source=str(path)))
        return cls(rules, use_defaults=use_defaults)

    def classify(self, name: str) -> StructureMatch:
        """Map one structure name (first matching rule wins).

        Raises
        ------
        QMRIInputError
            If the matching rule yields an invalid label (e.g. a level that does not exist,
            ``vb_T13``); the message names the structure and the rule.
        """
        normalised = normalise_name(name)
        for rule in self.rules:
            m = rule.match(normalised)
            if not m:
                continue
            target = rule.target
            if isinstance(m, re.Match) and "{" in target:
                groups = {
                    k: (v or "").upper() if k == "level" else (v or "")
                    for k, v in m.groupdict().items()
                }
                level = groups.get("level")
                if level is not None and level not in LEVEL_INDEX:
                    # "T13" looks like a level but is not one: not this rule
                    if rule.source == "default":
                        continue
                    raise QMRIInputError(
                        f"structure {name!r}: rule {rule.text!r} gives unknown level {level!r}",
                        rule.source,
                    )
                try:
                    target = target.format(**groups)
                except (KeyError, IndexError):
                    raise QMRIInputError(
                        f"structure rule {rule.text!r}: target {rule.target!r} uses a group the "
                        "pattern does not define",
                        rule.source,
                    ) from None
                _check_target(target, rule.source, rule.text)
            where = f"{rule.source}: {rule.text}"
            if target == "ignore":
                return StructureMatch(name, "ignored", None, where)
            if target == "cord":
                return StructureMatch(name, "cord", "cord", where)
            if target in PLAN_MASKS:
                return StructureMatch(name, "mask", target, where)
            return StructureMatch(name, "label", target, where)
        return StructureMatch(name, "unknown", None, None)

    def classify_all(self, names: Iterable[str]) -> list[StructureMatch]:
        """:meth:`classify` of every name, in order."""
        return [self.classify(n) for n in names]


def _check_target(target: str, source: str, rule: str) -> None:
    """A rule's target must be a contract label, a plan mask, ``cord``, ``ignore`` or a
    template (checked once its groups are filled)."""
    if target in PLAN_MASKS or target in _SPECIAL or "{" in target:
        return
    try:
        parse_label_name(target)
    except QMRIInputError:
        raise QMRIInputError(
            f"structure rule {rule!r}: target {target!r} is not a contract label "
            "(vb_<level>, pe/pel/per_<level>, cord_<level>, csf, aorta, tumor), a plan mask "
            "(ctv_plan, ptv_plan), 'cord' (split per level) or 'ignore'",
            source,
        ) from None


# --------------------------------------------------------------------------------------------
# the label table of an import: overlaps, order, the cord per level
# --------------------------------------------------------------------------------------------

#: Overlapping structures: the first of this list that covers a voxel labels it. The GTV is the
#: study's target (and the contract's ``tumor`` overrides the bone it grows in, as in the
#: phantom); the cord is never marrow or CSF; CSF (thecal sac) holds the cord; the vertebral
#: body wins over a posterior-element contour that overlaps it; the aorta only takes what is
#: left.
LABEL_PRIORITY: tuple[str, ...] = ("tumor", "cord", "csf", "vb", "pel", "per", "pe", "aorta")

#: Half the height of an intervertebral disc (mm), used to extend a cord level beyond its
#: vertebral body when no neighbouring level was contoured to measure the disc from.
DEFAULT_DISC_HALF_MM = 3.0

#: Order of the structures of one level in the label table (as in the phantom's table).
_LEVEL_ORDER = ("vb", "pel", "per", "pe", "cord")


def split_cord_by_levels(
    cord: np.ndarray,
    vb: Mapping[str, np.ndarray],
    affine: np.ndarray,
    *,
    disc_half_mm: float = DEFAULT_DISC_HALF_MM,
) -> tuple[dict[str, np.ndarray], int]:
    """Split a cord mask into ``cord_<level>`` by the levels of the vertebral bodies.

    Positions are measured along the spine: the line through the bodies' centroids (two or
    more levels; the world z axis for one). A level's range runs from the middle of the disc
    above its body to the middle of the disc below (the gap to a contoured neighbouring level;
    otherwise the mean gap of the contoured neighbours, or ``disc_half_mm`` with one level), as
    the data contract's levels do.

    Parameters
    ----------
    cord : ndarray of bool
        The cord (any length).
    vb : mapping of str to ndarray of bool
        Level -> its vertebral body, same grid.
    affine : (4, 4) ndarray
        The grid's RAS affine.
    disc_half_mm : float
        Half disc height (mm) when no neighbour is contoured.

    Returns
    -------
    cords : dict of str to ndarray of bool
        Level -> cord of that level (levels cranio-caudal; empty levels left out).
    outside : int
        Cord voxels outside every level's range (left unlabelled).

    Raises
    ------
    QMRIInputError
        If the vertebral levels are not in cranio-caudal order along the spine.
    """
    levels = sorted((lv for lv in vb if vb[lv].any()), key=LEVEL_INDEX.__getitem__)
    if not levels or not cord.any():
        return {}, int(cord.sum())

    def world(mask: np.ndarray) -> np.ndarray:
        ijk = np.argwhere(mask)
        return ijk @ affine[:3, :3].T + affine[:3, 3]

    centroids = np.array([world(vb[lv]).mean(axis=0) for lv in levels])
    if len(levels) >= 2:
        _, _, vt = np.linalg.svd(centroids - centroids.mean(axis=0))
        axis = vt[0]
    else:
        axis = np.array([0.0, 0.0, 1.0])
    if axis[2] < 0:
        axis = -axis  # towards superior
    proj = centroids @ axis
    if len(levels) >= 2 and np.any(np.diff(proj) >= 0):
        raise QMRIInputError(
            "vertebral body levels are not in cranio-caudal order along the spine "
            f"({', '.join(levels)}); check the structure names"
        )
    extents = {lv: (float((p := world(vb[lv]) @ axis).min()), float(p.max())) for lv in levels}
    gaps = {}
    for upper, lower in itertools.pairwise(levels):
        if LEVEL_INDEX[lower] - LEVEL_INDEX[upper] == 1:
            gaps[(upper, lower)] = extents[upper][0] - extents[lower][1]
    mean_half = float(np.mean(list(gaps.values()))) / 2 if gaps else disc_half_mm
    mean_half = max(mean_half, 0.0)
    cord_pos = world(cord) @ axis
    cord_idx = np.argwhere(cord)
    out: dict[str, np.ndarray] = {}
    taken = np.zeros(cord_pos.shape, dtype=bool)
    for lv in levels:
        lo, hi = extents[lv]
        above = next((g for (u, low), g in gaps.items() if low == lv), None)
        below = next((g for (u, low), g in gaps.items() if u == lv), None)
        top = hi + (above / 2 if above is not None else mean_half)
        bottom = lo - (below / 2 if below is not None else mean_half)
        sel = (cord_pos <= top) & (cord_pos > bottom) & ~taken
        taken |= sel
        if sel.any():
            m = np.zeros(cord.shape, dtype=bool)
            m[tuple(cord_idx[sel].T)] = True
            out[lv] = m
    return out, int((~taken).sum())


def label_rank(name: str) -> int:
    """Rank of a label name in :data:`LABEL_PRIORITY` (0 wins)."""
    structure, _ = parse_label_name(name)
    return LABEL_PRIORITY.index(structure)


def table_order(names: Sequence[str]) -> list[str]:
    """Label-table order: per level (cranio-caudal) vb, pel, per, pe, cord; then csf, aorta,
    tumor (and a tumour with a level after those)."""

    def key(name: str) -> tuple[int, int, str]:
        structure, level = parse_label_name(name)
        if level is not None and structure in _LEVEL_ORDER:
            return (0, LEVEL_INDEX[level] * 10 + _LEVEL_ORDER.index(structure), name)
        rest = ("csf", "aorta", "tumor")
        return (1, rest.index(structure), name)

    return sorted(names, key=key)
