"""Scan a folder tree of DICOM files and collect the acquisition attributes of each MR series.

Only headers are read (pydicom, ``stop_before_pixels=True``); files that are not DICOM are
skipped. Files are grouped into series by ``SeriesInstanceUID``. Classic MR images (one file
per slice) and enhanced multi-frame MR images (per-frame and shared functional groups) are both
described frame by frame (:class:`FrameHeader`), so that a series can be split by flip angle,
echo, inversion time or temporal position whatever the storage.

Units are DICOM's: times in ms (``RepetitionTime``, ``EchoTime``, ``InversionTime``), angles in
degrees, b-values in s/mm^2, field strength in T, positions in mm (LPS patient coordinates).
Clock times are seconds since midnight (``AcquisitionTime``), used only for relative timing.
"""

from __future__ import annotations

import datetime as dt
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from qmri.errors import QMRIInputError

__all__ = [
    "ENHANCED_MR_SOP_CLASSES",
    "MR_IMAGE_SOP_CLASSES",
    "FrameHeader",
    "SeriesHeaders",
    "read_series_headers",
]

#: Classic MR Image Storage.
MR_IMAGE_SOP_CLASSES = frozenset({"1.2.840.10008.5.1.4.1.1.4"})
#: Enhanced MR Image Storage and Legacy Converted Enhanced MR Image Storage (multi-frame).
ENHANCED_MR_SOP_CLASSES = frozenset({"1.2.840.10008.5.1.4.1.1.4.1", "1.2.840.10008.5.1.4.1.1.4.4"})
_DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"

# private b-value tags: (group, element of the value, private creator, element block)
_VENDOR_BVALUE_TAGS = (
    (0x0019, 0x0C, "SIEMENS MR HEADER"),  # (0019,100C) B_value, IS
    (0x0043, 0x39, "GEMS_PARM_01"),  # (0043,1039) slop_int_6..9, first value = b
    (0x2001, 0x03, "Philips Imaging DD 001"),  # (2001,1003) diffusion b-factor, FL
)


@dataclass(frozen=True)
class FrameHeader:
    """Acquisition attributes of one image (a classic file or one frame of an enhanced file).

    Attributes
    ----------
    path : Path
        The DICOM file.
    frame : int or None
        0-based frame number in an enhanced multi-frame file; None for a classic image.
    position : tuple of float or None
        ``ImagePositionPatient`` (mm, LPS).
    orientation : tuple of float or None
        ``ImageOrientationPatient`` (row and column direction cosines).
    echo_time, repetition_time, inversion_time : float or None
        ms.
    echo_number : int or None
        ``EchoNumbers``.
    flip_angle : float or None
        Degrees.
    b_value : float or None
        s/mm^2 (``DiffusionBValue`` or the vendor's private tag).
    gradient : tuple of float or None
        ``DiffusionGradientOrientation`` (unit vector, LPS).
    temporal_position : int or None
        ``TemporalPositionIdentifier`` (classic) or ``TemporalPositionIndex`` (enhanced).
    acquisition_number : int or None
        ``AcquisitionNumber``.
    acquisition_time : float or None
        Seconds since midnight of ``AcquisitionTime`` / ``FrameAcquisitionDateTime``.
    trigger_time : float or None
        ``TriggerTime`` (ms after the trigger; some vendors' DCE frame time).
    instance : int or None
        ``InstanceNumber`` (classic) or the frame number (enhanced), for ordering.
    """

    path: Path
    frame: int | None
    position: tuple[float, float, float] | None
    orientation: tuple[float, ...] | None
    echo_time: float | None
    repetition_time: float | None
    inversion_time: float | None
    echo_number: int | None
    flip_angle: float | None
    b_value: float | None
    gradient: tuple[float, float, float] | None
    temporal_position: int | None
    acquisition_number: int | None
    acquisition_time: float | None
    trigger_time: float | None
    instance: int | None


@dataclass(frozen=True)
class SeriesHeaders:
    """One DICOM series: series-level attributes and every frame.

    Attributes
    ----------
    uid : str
        ``SeriesInstanceUID`` (used for grouping only, never written out).
    description : str
        ``SeriesDescription`` (``ProtocolName`` when empty).
    series_number : int
        ``SeriesNumber`` (0 when absent), for ordering.
    modality : str
        ``Modality`` (``MR`` for the series this module describes in full).
    sop_class : str
        ``SOPClassUID`` of its files.
    files : tuple of Path
        Its files, sorted.
    frames : tuple of FrameHeader
        Every image, in file (and frame) order.
    enhanced : bool
        Stored as enhanced multi-frame images.
    scanning_sequence, sequence_variant : frozenset of str
        ``ScanningSequence`` (``SE``, ``GR``, ``IR``, ``EP``) and ``SequenceVariant`` (``SP``,
        ``SK``, ...); for enhanced images derived from ``EchoPulseSequence``,
        ``EchoPlanarPulseSequence``, ``InversionRecovery`` and ``Spoiling``.
    image_type : tuple of str
        ``ImageType``.
    field_strength : float or None
        ``MagneticFieldStrength`` (T).
    contrast_agent, contrast_ingredient : str or None
        ``ContrastBolusAgent`` and ``ContrastBolusIngredient``.
    contrast_start : float or None
        ``ContrastBolusStartTime`` (s since midnight).
    number_of_temporal_positions : int or None
        ``NumberOfTemporalPositions``.
    study_date : datetime.date or None
        ``StudyDate`` (turned into days from SBRT, never written out).
    """

    uid: str
    description: str
    series_number: int
    modality: str
    sop_class: str
    files: tuple[Path, ...]
    frames: tuple[FrameHeader, ...]
    enhanced: bool
    scanning_sequence: frozenset[str]
    sequence_variant: frozenset[str]
    image_type: tuple[str, ...]
    field_strength: float | None
    contrast_agent: str | None
    contrast_ingredient: str | None
    contrast_start: float | None
    number_of_temporal_positions: int | None
    study_date: dt.date | None

    @property
    def first_file(self) -> Path:
        """The file named in messages about the series."""
        return self.files[0]

    def distinct(self, attribute: str, *, digits: int = 4) -> tuple[float, ...]:
        """Sorted distinct non-missing values of a :class:`FrameHeader` attribute (rounded)."""
        values = {
            round(float(v), digits)
            for f in self.frames
            if (v := getattr(f, attribute)) is not None
        }
        return tuple(sorted(values))

    @property
    def flip_angles(self) -> tuple[float, ...]:
        """Distinct flip angles (deg)."""
        return self.distinct("flip_angle")

    @property
    def echo_times(self) -> tuple[float, ...]:
        """Distinct echo times (ms)."""
        return self.distinct("echo_time")

    @property
    def repetition_times(self) -> tuple[float, ...]:
        """Distinct repetition times (ms)."""
        return self.distinct("repetition_time")

    @property
    def inversion_times(self) -> tuple[float, ...]:
        """Distinct inversion times (ms)."""
        return self.distinct("inversion_time")

    @property
    def b_values(self) -> tuple[float, ...]:
        """Distinct b-values (s/mm^2)."""
        return self.distinct("b_value", digits=1)

    @property
    def temporal_positions(self) -> tuple[int, ...]:
        """Distinct temporal positions; ``AcquisitionNumber`` when the series repeats its
        slice positions without ``TemporalPositionIdentifier`` (how some vendors store DCE)."""
        found = self.distinct("temporal_position", digits=0)
        if not found and self.repeats_positions:
            numbers = self.distinct("acquisition_number", digits=0)
            if len(numbers) > 1 and len(self.frames) == len(numbers) * len(self.positions):
                found = numbers
        return tuple(int(v) for v in found)

    @property
    def positions(self) -> tuple[tuple[float, float, float], ...]:
        """Distinct slice positions (mm, rounded to 0.01 mm)."""
        return tuple(
            sorted({tuple(round(c, 2) for c in f.position) for f in self.frames if f.position})
        )

    @property
    def orientations(self) -> tuple[tuple[float, ...], ...]:
        """Distinct slice orientations (direction cosines rounded to 1e-3)."""
        return tuple(
            sorted(
                {tuple(round(c, 3) for c in f.orientation) for f in self.frames if f.orientation}
            )
        )

    @property
    def repeats_positions(self) -> bool:
        """True when several images share a slice position (several volumes)."""
        return len(self.frames) > len(self.positions) > 0

    def geometry_key(self) -> tuple[Any, ...]:
        """What series of one collection must share: orientation and slice positions."""
        return (self.orientations, self.positions)


# --------------------------------------------------------------------------------------------
# value helpers
# --------------------------------------------------------------------------------------------


def _float(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, list | tuple | pydicom.multival.MultiValue):
        value = value[0] if len(value) else None
        if value is None:
            return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number


def _int(value: Any) -> int | None:
    number = _float(value)
    return None if number is None else round(number)


def _floats(value: Any, n: int) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return numbers if len(numbers) == n else None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _multi(value: Any) -> frozenset[str]:
    if value is None or value == "":
        return frozenset()
    text = value if isinstance(value, str) else "\\".join(str(v) for v in value)
    parts = text.replace("\\", " ").split()
    return frozenset(p.strip().upper() for p in parts if p.strip())


def clock_seconds(value: Any) -> float | None:
    """Seconds since midnight of a DICOM TM (``HHMMSS.ffffff``) or DT (``YYYYMMDDHHMMSS``)."""
    text = _text(value)
    if text is None:
        return None
    text = text.split("+")[0].split("-")[0] if len(text) > 14 else text
    if len(text) >= 14 and text[:8].isdigit() and "." not in text[:8]:
        text = text[8:]  # DT: drop the date
    text = text.replace(":", "")
    try:
        hours = int(text[0:2])
        minutes = int(text[2:4]) if len(text) >= 4 else 0
        seconds = float(text[4:]) if len(text) > 4 else 0.0
    except ValueError:
        return None
    return hours * 3600 + minutes * 60 + seconds


def _date(value: Any) -> dt.date | None:
    text = _text(value)
    if text is None:
        return None
    text = text.replace(".", "").replace("-", "")[:8]
    try:
        return dt.datetime.strptime(text, "%Y%m%d").date()
    except ValueError:
        return None


def _vendor_b_value(ds: Dataset) -> float | None:
    """b-value (s/mm^2) from a vendor's private tag (Siemens, GE, Philips), or None."""
    for group, element, creator in _VENDOR_BVALUE_TAGS:
        if not any(tag.group == group for tag in ds.keys()):  # noqa: SIM118 (keys are tags)
            continue
        try:
            elem = ds.private_block(group, creator)[element]
        except KeyError:
            continue
        value = _float(elem.value)
        if value is not None and group == 0x0043 and value >= 1e9:
            value = value % 1e9  # GE adds 1e9 to flag an unusual b-value
        return value
    return None


def _first_not_none(*values: float | None) -> float | None:
    return next((v for v in values if v is not None), None)


def _first(ds: Dataset | None, keyword: str) -> Dataset | None:
    """Item 0 of a sequence attribute, or None."""
    if ds is None:
        return None
    seq = ds.get(keyword)
    return seq[0] if seq else None


# --------------------------------------------------------------------------------------------
# per-file reading
# --------------------------------------------------------------------------------------------


def _classic_frame(ds: Dataset, path: Path) -> FrameHeader:
    b_value = _float(ds.get("DiffusionBValue"))
    if b_value is None:
        b_value = _vendor_b_value(ds)
    return FrameHeader(
        path=path,
        frame=None,
        position=_floats(ds.get("ImagePositionPatient"), 3),  # type: ignore[arg-type]
        orientation=_floats(ds.get("ImageOrientationPatient"), 6),
        echo_time=_float(ds.get("EchoTime")),
        repetition_time=_float(ds.get("RepetitionTime")),
        inversion_time=_float(ds.get("InversionTime")),
        echo_number=_int(ds.get("EchoNumbers")),
        flip_angle=_float(ds.get("FlipAngle")),
        b_value=b_value,
        gradient=_floats(ds.get("DiffusionGradientOrientation"), 3),  # type: ignore[arg-type]
        temporal_position=_int(ds.get("TemporalPositionIdentifier")),
        acquisition_number=_int(ds.get("AcquisitionNumber")),
        acquisition_time=_first_not_none(
            clock_seconds(ds.get("AcquisitionTime")), clock_seconds(ds.get("AcquisitionDateTime"))
        ),
        trigger_time=_float(ds.get("TriggerTime")),
        instance=_int(ds.get("InstanceNumber")),
    )


def _group(ds: Dataset, index: int, keyword: str) -> Dataset | None:
    """Functional group ``keyword`` of frame ``index``: per-frame, else shared."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and index < len(per_frame):
        item = _first(per_frame[index], keyword)
        if item is not None:
            return item
    return _first(_first(ds, "SharedFunctionalGroupsSequence"), keyword)


def _enhanced_frames(ds: Dataset, path: Path) -> list[FrameHeader]:
    n = _int(ds.get("NumberOfFrames")) or 1
    frames = []
    for i in range(n):
        plane = _group(ds, i, "PlanePositionSequence")
        orient = _group(ds, i, "PlaneOrientationSequence")
        echo = _group(ds, i, "MREchoSequence")
        timing = _group(ds, i, "MRTimingAndRelatedParametersSequence")
        modifier = _group(ds, i, "MRModifierSequence")
        diffusion = _group(ds, i, "MRDiffusionSequence")
        content = _group(ds, i, "FrameContentSequence")
        gradient = _first(diffusion, "DiffusionGradientDirectionSequence")
        inversion = None if modifier is None else modifier.get("InversionTimes")
        b_value = None if diffusion is None else _float(diffusion.get("DiffusionBValue"))
        frames.append(
            FrameHeader(
                path=path,
                frame=i,
                position=None if plane is None else _floats(plane.get("ImagePositionPatient"), 3),  # type: ignore[arg-type]
                orientation=None
                if orient is None
                else _floats(orient.get("ImageOrientationPatient"), 6),
                echo_time=None if echo is None else _float(echo.get("EffectiveEchoTime")),
                repetition_time=None if timing is None else _float(timing.get("RepetitionTime")),
                inversion_time=_float(inversion) if inversion else None,
                echo_number=None,
                flip_angle=None if timing is None else _float(timing.get("FlipAngle")),
                b_value=b_value,
                gradient=None
                if gradient is None
                else _floats(gradient.get("DiffusionGradientOrientation"), 3),  # type: ignore[arg-type]
                temporal_position=None
                if content is None
                else _int(content.get("TemporalPositionIndex")),
                acquisition_number=None,
                acquisition_time=None
                if content is None
                else clock_seconds(content.get("FrameAcquisitionDateTime")),
                trigger_time=None,
                instance=i + 1,
            )
        )
    return frames


def _enhanced_sequence(ds: Dataset) -> tuple[frozenset[str], frozenset[str]]:
    """ScanningSequence / SequenceVariant equivalents of an enhanced MR image."""
    echo = str(ds.get("EchoPulseSequence", "")).upper()
    scanning = {"SPIN": {"SE"}, "GRADIENT": {"GR"}, "BOTH": {"SE", "GR"}}.get(echo, set())
    if str(ds.get("EchoPlanarPulseSequence", "")).upper() == "YES":
        scanning.add("EP")
    modifier = _group(ds, 0, "MRModifierSequence")
    if modifier is not None and str(modifier.get("InversionRecovery", "")).upper() == "YES":
        scanning.add("IR")
    variant = set()
    if str(ds.get("Spoiling", "NONE")).upper() not in ("NONE", ""):
        variant.add("SP")
    if str(ds.get("SteadyStatePulseSequence", "NONE")).upper() not in ("NONE", ""):
        variant.add("SS")
    return frozenset(scanning), frozenset(variant)


def _read(path: Path) -> Dataset | None:
    """Header of a DICOM file, or None for a file that is not DICOM (or a DICOMDIR).

    Files without the ``DICM`` preamble (older exports) are read too when they hold the
    attributes of a DICOM instance (``SOPClassUID``, ``SeriesInstanceUID``, ``Modality``).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # real-world files carry many harmless oddities
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except InvalidDicomError:
            ds = _read_forced(path)
        except Exception:  # noqa: BLE001 (pydicom raises many types for corrupt files)
            return None
        if ds is None:
            return None
        try:
            meta = getattr(ds, "file_meta", None)
            sop = str(
                ds.get("SOPClassUID") or (meta.get("MediaStorageSOPClassUID", "") if meta else "")
            )
            if sop == _DICOMDIR_SOP_CLASS or "SeriesInstanceUID" not in ds:
                return None
        except Exception:  # noqa: BLE001
            return None
    return ds


def _read_forced(path: Path) -> Dataset | None:
    """A file without the DICOM preamble, if it is an instance after all."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        if all(key in ds for key in ("SOPClassUID", "SeriesInstanceUID", "Modality")):
            return ds
    except Exception:  # noqa: BLE001 (whatever a non-DICOM file makes pydicom raise)
        return None
    return None


def _walk(root: Path) -> Iterator[Path]:
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(folder) / name


def read_series_headers(src: str | Path | Iterable[Path]) -> list[SeriesHeaders]:
    """Read the headers of every DICOM file under ``src`` and group them into series.

    Parameters
    ----------
    src : str, Path or iterable of Path
        A folder (searched recursively; hidden files and folders are skipped) or the files.

    Returns
    -------
    list of SeriesHeaders
        One per ``SeriesInstanceUID``, ordered by series number, then description. Series of
        every modality are returned (RT objects, CT, ...); only MR images are described frame
        by frame (the others have no frames).

    Raises
    ------
    QMRIInputError
        When ``src`` is not a folder or holds no DICOM file at all.
    """
    if isinstance(src, str | Path):
        root = Path(src)
        if not root.is_dir():
            raise QMRIInputError("DICOM source is not a folder", root)
        paths: Sequence[Path] = list(_walk(root))
        where: Path | str = root
    else:
        paths = sorted(Path(p) for p in src)
        where = paths[0].parent if paths else "DICOM source"
    grouped: dict[str, list[tuple[Path, Dataset]]] = {}
    for path in paths:
        ds = _read(path)
        if ds is not None:
            grouped.setdefault(str(ds.SeriesInstanceUID), []).append((path, ds))
    if not grouped:
        raise QMRIInputError("no DICOM files found", where)
    series = [_series(uid, items) for uid, items in grouped.items()]
    return sorted(series, key=lambda s: (s.series_number, s.description, s.first_file))


def _agent_code(ds: Dataset) -> str | None:
    """Agent of the Enhanced Contrast/Bolus module (``ContrastBolusAgentSequence``)."""
    item = _first(ds, "ContrastBolusAgentSequence")
    return None if item is None else _text(item.get("CodeMeaning"))


def _series(uid: str, items: list[tuple[Path, Dataset]]) -> SeriesHeaders:
    items = sorted(items, key=lambda pd_: (_int(pd_[1].get("InstanceNumber")) or 0, pd_[0]))
    ds0 = items[0][1]
    sop = str(ds0.get("SOPClassUID", ""))
    modality = str(ds0.get("Modality", "")).upper()
    enhanced = sop in ENHANCED_MR_SOP_CLASSES
    frames: list[FrameHeader] = []
    if modality == "MR" and (sop in MR_IMAGE_SOP_CLASSES or enhanced):
        for path, ds in items:
            frames.extend(_enhanced_frames(ds, path) if enhanced else [_classic_frame(ds, path)])
    if enhanced:
        scanning, variant = _enhanced_sequence(ds0)
    else:
        scanning, variant = _multi(ds0.get("ScanningSequence")), _multi(ds0.get("SequenceVariant"))
    description = _text(ds0.get("SeriesDescription")) or _text(ds0.get("ProtocolName")) or ""
    return SeriesHeaders(
        uid=uid,
        description=description,
        series_number=_int(ds0.get("SeriesNumber")) or 0,
        modality=modality,
        sop_class=sop,
        files=tuple(sorted(p for p, _ in items)),
        frames=tuple(frames),
        enhanced=enhanced,
        scanning_sequence=scanning,
        sequence_variant=variant,
        image_type=tuple(str(v).upper() for v in (ds0.get("ImageType") or ())),
        field_strength=_float(ds0.get("MagneticFieldStrength")),
        contrast_agent=_text(ds0.get("ContrastBolusAgent")) or _agent_code(ds0),
        contrast_ingredient=_text(ds0.get("ContrastBolusIngredient")),
        contrast_start=clock_seconds(ds0.get("ContrastBolusStartTime")),
        number_of_temporal_positions=_int(ds0.get("NumberOfTemporalPositions")),
        study_date=_date(ds0.get("StudyDate")),
    )
