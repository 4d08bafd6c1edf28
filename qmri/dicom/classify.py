"""Which contract series kind each DICOM series of a session is, from its headers.

Rules (first that applies; :func:`series_kind`), on MR image series only:

=========  ===================================================================================
kind       rule
=========  ===================================================================================
(refused)  derived images (``ImageType`` DERIVED), a single slice, slices in several
           orientations (localizers)
dwi        any b-value > 0 (``DiffusionBValue`` or the vendor's private tag)
dce        >= 7 temporal positions (:data:`qmri.bids.MIN_DCE_FRAMES`) of a gradient echo
           (not EPI)
IRT1       >= 4 inversion times, in one series or in several inversion-recovery series with
           one TR on one grid
MESE       >= 3 echo times, spin echo; MEGRE: >= 3 echo times, gradient echo
VFA        spoiled gradient echo (``SequenceVariant`` SP), one echo, >= 2 flip angles with one
           TR and TE on one grid (one series or one per flip angle)
T2w        one T2-weighted spin echo (one echo, TE >= 60 ms, TR >= 1500 ms, no inversion)
TB1map     by mapping only (a B1 map's headers look like any gradient echo)
=========  ===================================================================================

A mapping file overrides the rules for sites that need it: YAML, a list of
``{series_description: <regex>, kind: <kind>}``; the regex must match the whole
SeriesDescription (:func:`re.fullmatch`; write ``(?i)`` for case-insensitive), the first
matching entry wins. Kinds: ``VFA``, ``IRT1``, ``MESE``, ``MEGRE``, ``dwi``, ``dce``, ``TB1map``,
``reference`` (the session reference, written with the configured suffix), an anatomical
BIDS suffix (:data:`ANAT_SUFFIXES`) or ``skip`` (not imported).

Non-MR series (RT objects, CT) are skipped and listed. A series no rule or mapping classifies
is a one-line :class:`~qmri.errors.QMRIInputError` naming one of its files, its
SeriesDescription and why, unless ``skip_unknown`` (then it is listed with the skipped ones).
Nothing is guessed silently: two series of one kind (two VFA sets, two T2w candidates) are an
error that asks for a mapping.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from qmri.bids import MIN_DCE_FRAMES
from qmri.dicom.headers import ENHANCED_MR_SOP_CLASSES, MR_IMAGE_SOP_CLASSES, SeriesHeaders
from qmri.errors import QMRIInputError

__all__ = [
    "ANAT_SUFFIXES",
    "COLLECTION_KINDS",
    "MAPPING_KINDS",
    "Classification",
    "ClassifiedSeries",
    "MappingRule",
    "SkippedSeries",
    "classify_session",
    "load_mapping",
    "series_kind",
]

#: Kinds written as a collection of 3D files, and the header attribute that orders them.
COLLECTION_KINDS: dict[str, str] = {
    "VFA": "flip_angle",
    "IRT1": "inversion_time",
    "MESE": "echo_time",
    "MEGRE": "echo_time",
}
#: Anatomical BIDS suffixes a mapping may give (one 3D image each).
ANAT_SUFFIXES = frozenset({"T1w", "T2w", "PDw", "T2starw", "FLAIR"})
#: Every kind a mapping entry may name.
MAPPING_KINDS = frozenset(
    {*COLLECTION_KINDS, "dwi", "dce", "TB1map", "reference", "skip", *ANAT_SUFFIXES}
)

#: Minimum T2 weighting of the reference anatomy (ms).
T2W_MIN_TE_MS = 60.0
T2W_MIN_TR_MS = 1500.0


@dataclass(frozen=True)
class MappingRule:
    """One mapping-file entry: SeriesDescription regex -> kind."""

    pattern: re.Pattern[str]
    kind: str

    def matches(self, description: str) -> bool:
        """Whether the regex matches the whole SeriesDescription."""
        return self.pattern.fullmatch(description) is not None


@dataclass(frozen=True)
class ClassifiedSeries:
    """A series kind of the session and the DICOM series it is made of.

    Attributes
    ----------
    kind : str
        ``VFA``, ``IRT1``, ``MESE``, ``MEGRE``, ``dwi``, ``dce``, ``TB1map`` or an anatomical
        suffix (the reference is given its configured suffix).
    series : tuple of SeriesHeaders
        Its DICOM series (several for a collection stored one series per flip angle).
    reason : str
        Why (the rule or mapping entry).
    """

    kind: str
    series: tuple[SeriesHeaders, ...]
    reason: str

    @property
    def descriptions(self) -> tuple[str, ...]:
        """SeriesDescription of each DICOM series."""
        return tuple(s.description for s in self.series)


@dataclass(frozen=True)
class SkippedSeries:
    """A DICOM series that is not imported, and why."""

    description: str
    modality: str
    file: Path
    reason: str


@dataclass(frozen=True)
class Classification:
    """The kinds of a session's series (one entry per kind) and the series left out."""

    classified: tuple[ClassifiedSeries, ...]
    skipped: tuple[SkippedSeries, ...]

    def kinds(self) -> dict[str, ClassifiedSeries]:
        """Kind -> its series."""
        return {c.kind: c for c in self.classified}


# --------------------------------------------------------------------------------------------
# mapping file
# --------------------------------------------------------------------------------------------


def load_mapping(
    path: str | Path | None, *, reference_suffix: str = "T2w"
) -> tuple[MappingRule, ...]:
    """Read a mapping file (YAML list of ``{series_description: regex, kind: kind}``).

    Parameters
    ----------
    path : str, Path or None
        The file; None gives no rules.
    reference_suffix : str
        The configured reference suffix, accepted as a kind too (same as ``reference``).

    Raises
    ------
    QMRIInputError
        Naming the file, for unreadable YAML, an entry that is not a mapping with exactly
        these two keys, an invalid regex or an unknown kind.
    """
    if path is None:
        return ()
    path = Path(path)
    if not path.is_file():
        raise QMRIInputError("mapping file not found", path)
    try:
        entries = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise QMRIInputError(
            f"not a readable YAML file ({' '.join(str(exc).split())})", path
        ) from None
    if entries is None:
        return ()
    if not isinstance(entries, list):
        raise QMRIInputError("a mapping file holds a list of {series_description, kind}", path)
    rules = []
    kinds = MAPPING_KINDS | {reference_suffix}
    for i, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict) or set(entry) != {"series_description", "kind"}:
            raise QMRIInputError(
                f"entry {i} must have exactly the keys series_description and kind, got {entry!r}",
                path,
            )
        kind = str(entry["kind"])
        if kind not in kinds:
            raise QMRIInputError(
                f"entry {i}: unknown kind {kind!r} (known: {', '.join(sorted(kinds))})", path
            )
        try:
            pattern = re.compile(str(entry["series_description"]))
        except re.error as exc:
            raise QMRIInputError(f"entry {i}: invalid regex ({exc})", path) from None
        rules.append(MappingRule(pattern, "reference" if kind == reference_suffix else kind))
    return tuple(rules)


# --------------------------------------------------------------------------------------------
# rules
# --------------------------------------------------------------------------------------------


def _fmt(values: Sequence[float]) -> str:
    return ", ".join(f"{v:g}" for v in values)


def series_kind(series: SeriesHeaders) -> tuple[str | None, str]:
    """Kind of one MR series by the rules of the module description.

    Returns
    -------
    kind : str or None
        A kind; ``VFA-part`` / ``IRT1-part`` for one member of a collection stored one series
        per flip angle / inversion time (grouped by :func:`classify_session`); None when no
        rule applies.
    reason : str
        Why (for the report and the error message).
    """
    s = series
    scan, variant = s.scanning_sequence, s.sequence_variant
    if "DERIVED" in s.image_type:
        return None, f"derived image (ImageType {'/'.join(s.image_type)}); qmri fits its own maps"
    if len(s.orientations) > 1:
        return None, f"slices in {len(s.orientations)} orientations (a localizer?)"
    if len(s.positions) < 2:
        return None, "a single slice position (a localizer or a screen capture?)"
    bvals = s.b_values
    if any(b > 0 for b in bvals):
        return "dwi", f"b-values {_fmt(bvals)} s/mm^2"
    temporal = s.temporal_positions
    if len(temporal) >= 2:
        if "GR" in scan and "EP" not in scan:
            if len(temporal) < MIN_DCE_FRAMES:
                return None, (
                    f"{len(temporal)} temporal positions of a gradient echo: too few for DCE "
                    f"(a kinetic fit needs at least {MIN_DCE_FRAMES} frames)"
                )
            return "dce", f"{len(temporal)} temporal positions of a gradient echo"
        return None, (
            f"{len(temporal)} temporal positions, but not a (non-EPI) gradient echo "
            f"(ScanningSequence {'/'.join(sorted(scan)) or 'missing'})"
        )
    tis = s.inversion_times
    if len(tis) >= 4:
        return "IRT1", f"{len(tis)} inversion times {_fmt(tis)} ms"
    if tis or "IR" in scan:
        return "IRT1-part", f"inversion recovery, TI {_fmt(tis) or 'missing'} ms"
    tes = s.echo_times
    if len(tes) >= 3:
        if "EP" in scan:
            return None, f"{len(tes)} echo times of an EPI sequence"
        if "SE" in scan and "GR" not in scan:
            return "MESE", f"{len(tes)} echo times {_fmt(tes)} ms, spin echo"
        if "GR" in scan:
            return "MEGRE", f"{len(tes)} echo times {_fmt(tes)} ms, gradient echo"
        return None, f"{len(tes)} echo times, but ScanningSequence is neither SE nor GR"
    if len(tes) == 2:
        return None, f"2 echo times ({_fmt(tes)} ms; multi-echo fits need >= 3)"
    if "EP" in scan:
        return None, "an EPI series without b-values or temporal positions"
    if "GR" in scan and "SP" in variant:
        flips = s.flip_angles
        if len(s.repetition_times) > 1:
            return None, f"spoiled gradient echo with several TRs ({_fmt(s.repetition_times)} ms)"
        if len(flips) >= 2:
            return "VFA", f"spoiled gradient echo at flip angles {_fmt(flips)} deg"
        return "VFA-part", f"spoiled gradient echo at {_fmt(flips) or '?'} deg"
    if "SE" in scan and "GR" not in scan:
        te = tes[0] if tes else float("nan")
        tr = s.repetition_times[0] if s.repetition_times else float("nan")
        if te >= T2W_MIN_TE_MS and tr >= T2W_MIN_TR_MS:
            return "T2w", f"T2-weighted spin echo (TE {te:g} ms, TR {tr:g} ms)"
        return None, (
            f"a spin echo with TE {te:g} ms, TR {tr:g} ms is not T2-weighted "
            f"(T2w needs TE >= {T2W_MIN_TE_MS:g} ms, TR >= {T2W_MIN_TR_MS:g} ms)"
        )
    return None, (
        f"no rule matches (ScanningSequence {'/'.join(sorted(scan)) or 'missing'}, "
        f"SequenceVariant {'/'.join(sorted(variant)) or 'missing'})"
    )


def _group_parts(
    parts: list[tuple[SeriesHeaders, str]], kind: str, attribute: str, minimum: int
) -> tuple[list[ClassifiedSeries], list[tuple[SeriesHeaders, str]]]:
    """Collections from one-value-per-series members: same TR (and TE for VFA), same grid."""
    groups: dict[tuple, list[SeriesHeaders]] = {}
    for s, _ in parts:
        key = (s.repetition_times, s.echo_times if kind == "VFA" else (), s.geometry_key())
        groups.setdefault(key, []).append(s)
    collections, leftovers = [], []
    unit = "deg" if attribute == "flip_angle" else "ms"
    for members in groups.values():
        values = sorted({v for s in members for v in s.distinct(attribute)})
        if len(values) >= minimum:
            collections.append(
                ClassifiedSeries(
                    kind,
                    tuple(sorted(members, key=lambda s: s.distinct(attribute))),
                    f"{len(members)} series at {_fmt(values)} {unit} with one TR on one grid",
                )
            )
        else:
            need = (
                f"{kind} needs >= {minimum} {attribute.replace('_', ' ')}s with one TR on one grid"
            )
            leftovers.extend(
                (s, f"{_fmt(values) or 'no'} {unit} in {len(members)} series ({need})")
                for s in members
            )
    return collections, leftovers


def _mapped_kind(series: SeriesHeaders, rules: Sequence[MappingRule]) -> MappingRule | None:
    return next((r for r in rules if r.matches(series.description)), None)


def _refuse(series: SeriesHeaders, reason: str) -> QMRIInputError:
    name = f"'{series.description}'" if series.description else "(no SeriesDescription)"
    return QMRIInputError(
        f"cannot classify series {name}: {reason} "
        "(map it with a mapping file, or pass skip_unknown to leave it out)",
        series.first_file,
    )


def classify_session(
    series: Sequence[SeriesHeaders],
    *,
    mapping: Sequence[MappingRule] = (),
    reference_suffix: str,
    skip_unknown: bool = False,
) -> Classification:
    """Classify every series of one session.

    Parameters
    ----------
    series : sequence of SeriesHeaders
        The session's series (:func:`qmri.dicom.headers.read_series_headers`).
    mapping : sequence of MappingRule
        Overrides (:func:`load_mapping`), tried before the rules.
    reference_suffix : str
        Suffix of the session reference: a rule-found ``T2w`` series is the reference when
        this is ``T2w``; a series mapped to ``reference`` is written with this suffix.
    skip_unknown : bool, default False
        List unclassifiable series instead of raising.

    Returns
    -------
    Classification
        One entry per kind found, and the series left out (non-MR, mapped to ``skip``,
        unclassifiable with ``skip_unknown``).

    Raises
    ------
    QMRIInputError
        An unclassifiable series (without ``skip_unknown``), or two series / collections of
        one kind; one line naming a file, the SeriesDescription and the reason.
    """
    skipped: list[SkippedSeries] = []
    assigned: dict[str, list[tuple[SeriesHeaders | ClassifiedSeries, str]]] = {}
    parts: dict[str, list[tuple[SeriesHeaders, str]]] = {"VFA-part": [], "IRT1-part": []}
    unknown: list[tuple[SeriesHeaders, str]] = []
    for s in series:
        if s.modality != "MR" or s.sop_class not in MR_IMAGE_SOP_CLASSES | ENHANCED_MR_SOP_CLASSES:
            what = s.modality or "unknown modality"
            skipped.append(SkippedSeries(s.description, s.modality, s.first_file,
                                         f"not an MR image series ({what})"))  # fmt: skip
            continue
        rule = _mapped_kind(s, mapping)
        if rule is not None:
            if rule.kind == "skip":
                skipped.append(SkippedSeries(s.description, s.modality, s.first_file,
                                             f"mapping: {rule.pattern.pattern} -> skip"))  # fmt: skip
                continue
            kind = reference_suffix if rule.kind == "reference" else rule.kind
            assigned.setdefault(kind, []).append((s, f"mapping: {rule.pattern.pattern}"))
            continue
        kind, reason = series_kind(s)
        if kind is None:
            unknown.append((s, reason))
        elif kind in parts:
            parts[kind].append((s, reason))
        elif kind == "T2w" and reference_suffix == "T2w":
            assigned.setdefault("T2w", []).append((s, f"reference: {reason}"))
        else:
            assigned.setdefault(kind, []).append((s, reason))

    classified: list[ClassifiedSeries] = []
    for part, kind, attribute, minimum in (
        ("VFA-part", "VFA", "flip_angle", 2),
        ("IRT1-part", "IRT1", "inversion_time", 4),
    ):
        found, leftovers = _group_parts(parts[part], kind, attribute, minimum)
        unknown.extend(leftovers)
        for collection in found:
            assigned.setdefault(kind, []).append((collection, collection.reason))
    for s, reason in unknown:
        if not skip_unknown:
            raise _refuse(s, reason)
        skipped.append(SkippedSeries(s.description, s.modality, s.first_file, reason))

    for kind, members in assigned.items():
        classified.append(_one_of_kind(kind, members))
    order = [*COLLECTION_KINDS, "dwi", "dce", "TB1map"]
    classified.sort(key=lambda c: (order.index(c.kind) if c.kind in order else -1, c.kind))
    return Classification(tuple(classified), tuple(skipped))


def _one_of_kind(
    kind: str, members: list[tuple[SeriesHeaders | ClassifiedSeries, str]]
) -> ClassifiedSeries:
    """Merge what was assigned to one kind; refuse two candidates where one is allowed.

    A kind is one series, one rule-found collection, or (collections only) any number of
    series mapped to it by the mapping file.
    """
    series: list[SeriesHeaders] = []
    for item, _ in members:
        series.extend(item.series if isinstance(item, ClassifiedSeries) else [item])
    reasons = [reason for _, reason in members]
    all_mapped = all(r.startswith("mapping:") for r in reasons)
    if not (len(members) == 1 or (kind in COLLECTION_KINDS and all_mapped)):
        names = ", ".join(f"'{s.description}'" for s in series)
        raise QMRIInputError(
            f"{len(series)} series could be the session's {kind} ({names}); qmri expects one: "
            "map the extra ones to 'skip' (or every member of a collection to its kind) in a "
            "mapping file",
            series[-1].first_file,
        )
    attribute = COLLECTION_KINDS.get(kind)
    if attribute is not None:
        series.sort(key=lambda s: s.distinct(attribute))
    return ClassifiedSeries(kind, tuple(series), "; ".join(dict.fromkeys(reasons)))
