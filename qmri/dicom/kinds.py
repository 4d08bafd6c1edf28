"""Convert one classified series kind with dcm2niix and write its BIDS files (one session).

:func:`write_kind` is called by :func:`qmri.dicom.convert.import_dicom_session` for every kind
of a session (see its module description for the files and sidecar fields). Values come from
the DICOM headers (:mod:`qmri.dicom.headers`; TR, TE and TI from ms to s); dcm2niix's sidecar
adds the other acquisition keys after PHI scrubbing (:func:`qmri.dicom.phi.scrub_sidecar`).

Classic series are cut into parameter groups (flip angle, echo time, inversion time, DCE
temporal position) before dcm2niix runs, so the order of the written volumes is the order of
the headers' parameters and never a converter's sorting; enhanced multi-frame files are
converted whole and dcm2niix's outputs matched to the headers' values. A DWI series uses
dcm2niix's ``.bval``/``.bvec`` (its vendor-specific gradient handling); when dcm2niix writes
none, the volumes are converted one by one and the b-values and directions taken from the
headers.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qmri.dicom.classify import COLLECTION_KINDS, ClassifiedSeries
from qmri.dicom.headers import FrameHeader, SeriesHeaders
from qmri.dicom.nifti import (
    CanonicalImage,
    bvecs_from_world,
    bvecs_to_world,
    format_bval,
    format_bvec,
    read_canonical,
    reorient_sidecar,
    run_dcm2niix,
    write_canonical,
    write_text,
)
from qmri.dicom.phi import scrub_sidecar
from qmri.errors import QMRIInputError
from qmri.io import write_json
from qmri.models.dce.concentration import canonical_agent

__all__ = ["Scratch", "sidecar_path", "write_kind"]

_ENTITY = {"VFA": "flip", "IRT1": "inv", "MESE": "echo", "MEGRE": "echo"}


# --------------------------------------------------------------------------------------------
# header values
# --------------------------------------------------------------------------------------------


def _one(frames: Sequence[FrameHeader], attribute: str, series: SeriesHeaders) -> float | None:
    values = sorted(
        {round(float(v), 4) for f in frames if (v := getattr(f, attribute)) is not None}
    )
    if len(values) > 1:
        raise QMRIInputError(
            f"series '{series.description}' has several {attribute.replace('_', ' ')}s "
            f"{values} in one volume",
            series.first_file,
        )
    return values[0] if values else None


def _acquisition_fields(frames: Sequence[FrameHeader], series: SeriesHeaders) -> dict[str, Any]:
    """Sidecar fields (s, deg, T) of a group of frames, from the headers."""
    out: dict[str, Any] = {}
    for attribute, key, scale in (
        ("repetition_time", "RepetitionTime", 1e-3),
        ("echo_time", "EchoTime", 1e-3),
        ("inversion_time", "InversionTime", 1e-3),
        ("flip_angle", "FlipAngle", 1.0),
    ):
        value = _one(frames, attribute, series)
        if value is not None:
            out[key] = round(value * scale, 9)
    if series.field_strength is not None:
        out["MagneticFieldStrength"] = series.field_strength
    return out


def _temporal_key(frame: FrameHeader) -> int | None:
    return (
        frame.temporal_position
        if frame.temporal_position is not None
        else frame.acquisition_number
    )


def _unwrap_clock(times: list[float]) -> list[float]:
    """Clock seconds of consecutive volumes, with a midnight crossing unwrapped."""
    out, shift = [], 0.0
    for i, t in enumerate(times):
        if i and t + shift < out[-1] - 43200:
            shift += 86400.0
        out.append(t + shift)
    return out


def _volume_timing(
    volumes: Sequence[Sequence[FrameHeader]], series: SeriesHeaders
) -> tuple[list[float], list[float] | None]:
    """Frame times (s from the first volume) and each volume's clock onset (s), if known."""
    onsets = [min((f.acquisition_time for f in v if f.acquisition_time is not None),
                  default=None) for v in volumes]  # fmt: skip
    if all(t is not None for t in onsets):
        clock = _unwrap_clock([float(t) for t in onsets])  # type: ignore[arg-type]
        times = [c - clock[0] for c in clock]
    else:
        triggers = [min((f.trigger_time for f in v if f.trigger_time is not None), default=None)
                    for v in volumes]  # fmt: skip
        if not all(t is not None for t in triggers):
            raise QMRIInputError(
                f"DCE series '{series.description}': frame times unknown (no AcquisitionTime "
                "or TriggerTime in every volume)",
                series.first_file,
            )
        times = [(float(t) - float(triggers[0])) / 1000.0 for t in triggers]  # type: ignore[arg-type]
        clock = None
    if np.any(np.diff(times) <= 0):
        raise QMRIInputError(
            f"DCE series '{series.description}': frame times do not increase with the temporal "
            f"position ({[round(t, 3) for t in times]} s)",
            series.first_file,
        )
    return [round(t, 6) for t in times], clock


def _contrast_fields(series: SeriesHeaders, clock: list[float] | None) -> dict[str, Any]:
    """ContrastAgent (qmri's name), ContrastBolusIngredient and, when derivable, BaselineFrames."""
    out: dict[str, Any] = {}
    agent = None
    if series.contrast_agent:
        words = re.findall(r"[A-Za-z0-9-]+", series.contrast_agent)
        candidates = [series.contrast_agent] + [
            " ".join(words[i : i + n]) for n in (3, 2, 1) for i in range(len(words) - n + 1)
        ]
        agent = next((a for c in candidates if (a := canonical_agent(c))), None)
    if agent is not None:
        out["ContrastAgent"] = agent
    if series.contrast_ingredient:
        out["ContrastBolusIngredient"] = series.contrast_ingredient.upper()
    elif agent is not None:
        out["ContrastBolusIngredient"] = "GADOLINIUM"  # every agent qmri knows is gadolinium
    if clock is not None and series.contrast_start is not None:
        start = series.contrast_start
        if start < clock[0] - 43200:
            start += 86400.0
        before = sum(1 for t in clock if t < start)
        if 0 < before < len(clock):
            out["BaselineFrames"] = before
    return out


# --------------------------------------------------------------------------------------------
# conversion of one kind
# --------------------------------------------------------------------------------------------


@dataclass
class _Volume3D:
    """A converted 3D (or 4D) image with the frames it came from."""

    image: CanonicalImage
    sidecar: dict[str, Any]
    frames: tuple[FrameHeader, ...]
    series: SeriesHeaders
    bval: np.ndarray | None = None
    bvec: np.ndarray | None = None


class Scratch:
    """Fresh sub-folders of one temporary folder, one per dcm2niix run.

    Parameters
    ----------
    root : Path
        An existing temporary folder (removed by its owner).
    """

    def __init__(self, root: Path) -> None:
        self.root, self.count = root, 0

    def next(self) -> Path:
        """A new, not yet existing sub-folder."""
        self.count += 1
        return self.root / f"run{self.count:04d}"


def _convert(files: Sequence[Path], scratch: Scratch, series: SeriesHeaders,
             frames: Sequence[FrameHeader], *, ndim: int | None) -> _Volume3D:  # fmt: skip
    """One dcm2niix run that must give exactly one image."""
    outputs = run_dcm2niix(sorted(set(files)), scratch.next())
    if len(outputs) != 1:
        raise QMRIInputError(
            f"dcm2niix wrote {len(outputs)} images for series '{series.description}' where qmri "
            "expects one (repeated slice positions, or parameters varying within a volume?)",
            series.first_file,
        )
    image = read_canonical(outputs[0].nifti)
    if ndim == 3 and image.raw.ndim == 4 and image.raw.shape[3] == 1:
        image = _with_raw(image, image.raw[..., 0])
    if ndim is not None and image.raw.ndim != ndim:
        raise QMRIInputError(
            f"dcm2niix wrote a {image.raw.ndim}D image of shape {image.raw.shape} for series "
            f"'{series.description}'; expected {ndim}D",
            series.first_file,
        )
    return _Volume3D(image, outputs[0].sidecar, tuple(frames), series,
                     outputs[0].bval, outputs[0].bvec)  # fmt: skip


def _with_raw(image: CanonicalImage, raw: np.ndarray) -> CanonicalImage:
    return CanonicalImage(raw, image.affine, image.slope, image.inter, image.source_affine,
                          image.ornt, image.zooms_t, image.xyzt_units)  # fmt: skip


def _by_value(frames: Sequence[FrameHeader], attribute: str) -> dict[float, list[FrameHeader]]:
    groups: dict[float, list[FrameHeader]] = {}
    for f in frames:
        value = getattr(f, attribute)
        if value is None:
            raise QMRIInputError(f"image lacks {attribute.replace('_', ' ')}", f.path)
        groups.setdefault(round(float(value), 4), []).append(f)
    return dict(sorted(groups.items()))


def _sidecar_value(meta: Mapping[str, Any], attribute: str) -> float | None:
    key, scale = {"flip_angle": ("FlipAngle", 1.0), "echo_time": ("EchoTime", 1e3),
                  "inversion_time": ("InversionTime", 1e3)}[attribute]  # fmt: skip
    value = meta.get(key)
    return None if value is None else float(value) * scale


def _collection(c: ClassifiedSeries, scratch: Scratch) -> list[tuple[float, _Volume3D]]:
    """One 3D image per value of the collection's parameter, ordered by it."""
    attribute = COLLECTION_KINDS[c.kind]
    found: list[tuple[float, _Volume3D]] = []
    for s in c.series:
        groups = _by_value(s.frames, attribute)
        if not s.enhanced:
            for value, frames in groups.items():
                found.append(
                    (value, _convert([f.path for f in frames], scratch, s, frames, ndim=3))
                )
            continue
        outputs = run_dcm2niix(s.files, scratch.next())  # dcm2niix splits enhanced echoes
        if len(outputs) != len(groups):
            raise QMRIInputError(
                f"dcm2niix wrote {len(outputs)} images for the {len(groups)} values of "
                f"{attribute.replace('_', ' ')} of enhanced series '{s.description}'",
                s.first_file,
            )
        for out in outputs:
            got = _sidecar_value(out.sidecar, attribute)
            value = None if got is None else min(groups, key=lambda v: abs(v - got))
            if value is None or abs(value - got) > 1e-3 * max(1.0, abs(value)):
                raise QMRIInputError(
                    f"cannot match dcm2niix's output {out.nifti.name} to a "
                    f"{attribute.replace('_', ' ')} of enhanced series '{s.description}'",
                    s.first_file,
                )
            image = read_canonical(out.nifti)
            if image.raw.ndim == 4 and image.raw.shape[3] == 1:
                image = _with_raw(image, image.raw[..., 0])
            found.append((value, _Volume3D(image, out.sidecar, tuple(groups[value]), s)))
    found.sort(key=lambda item: item[0])
    values = [v for v, _ in found]
    if len(set(values)) != len(values):
        raise QMRIInputError(
            f"{c.kind}: a {attribute.replace('_', ' ')} appears in more than one series "
            f"({values})",
            c.series[0].first_file,
        )
    return found


def _volumes_by_position(series: SeriesHeaders) -> list[list[FrameHeader]]:
    """Volumes of a classic series: the n-th image (by InstanceNumber) at every position."""
    at: dict[tuple, list[FrameHeader]] = {}
    for f in series.frames:
        at.setdefault(tuple(round(c, 2) for c in f.position or ()), []).append(f)
    counts = {len(v) for v in at.values()}
    if len(counts) != 1:
        raise QMRIInputError(
            f"series '{series.description}': slice positions hold different numbers of images "
            f"({sorted(counts)})",
            series.first_file,
        )
    stacks = [sorted(v, key=lambda f: (f.instance or 0, str(f.path))) for v in at.values()]
    return [[stack[i] for stack in stacks] for i in range(counts.pop())]


def _stack(volumes: Sequence[_Volume3D], series: SeriesHeaders) -> CanonicalImage:
    first = volumes[0].image
    for v in volumes[1:]:
        same = (
            v.image.raw.shape == first.raw.shape
            and np.allclose(v.image.affine, first.affine, atol=1e-3)
            and v.image.slope == first.slope
            and v.image.inter == first.inter
            and v.image.raw.dtype == first.raw.dtype
        )
        if not same:
            raise QMRIInputError(
                f"volumes of series '{series.description}' differ in grid or scaling",
                series.first_file,
            )
    return _with_raw(first, np.stack([v.image.raw for v in volumes], axis=-1))


def _dce(
    c: ClassifiedSeries, scratch: Scratch
) -> tuple[CanonicalImage, dict[str, Any], dict[str, Any]]:
    """4D DCE image, dcm2niix's sidecar and the header fields (VolumeTiming, contrast, ...)."""
    (s,) = c.series
    if s.enhanced:
        conv = _convert(s.files, scratch, s, s.frames, ndim=4)
        keys = sorted({k for f in s.frames if (k := _temporal_key(f)) is not None})
        volumes = [[f for f in s.frames if _temporal_key(f) == k] for k in keys]
        if conv.image.raw.shape[3] != len(volumes):
            raise QMRIInputError(
                f"dcm2niix wrote {conv.image.raw.shape[3]} frames for the {len(volumes)} "
                f"temporal positions of DCE series '{s.description}'",
                s.first_file,
            )
        image, meta = conv.image, conv.sidecar
    else:
        groups: dict[int, list[FrameHeader]] = {}
        for f in s.frames:
            key = _temporal_key(f)
            if key is None:
                raise QMRIInputError("DCE image lacks TemporalPositionIdentifier", f.path)
            groups.setdefault(key, []).append(f)
        volumes = [groups[k] for k in sorted(groups)]
        parts = [_convert([f.path for f in v], scratch, s, v, ndim=3) for v in volumes]
        image, meta = _stack(parts, s), parts[0].sidecar
    times, clock = _volume_timing(volumes, s)
    if len(times) > 1:  # pixdim[4]: the median frame interval (s)
        image = dataclasses.replace(image, zooms_t=float(np.median(np.diff(times))))
    fields = _acquisition_fields(s.frames, s)
    fields["RepetitionTimeExcitation"] = fields.pop("RepetitionTime", None)
    fields.update(VolumeTiming=times, **_contrast_fields(s, clock))
    return image, meta, fields


def _dwi(
    c: ClassifiedSeries, scratch: Scratch
) -> tuple[CanonicalImage, dict, np.ndarray, np.ndarray]:
    """4D DWI image, dcm2niix's sidecar, b-values (s/mm^2) and world (RAS) directions.

    dcm2niix's ``.bval``/``.bvec`` are used; when it writes none, the volumes are converted one
    by one and the b-values and gradient directions taken from the headers.
    """
    (s,) = c.series
    outputs = run_dcm2niix(s.files, scratch.next())
    if len(outputs) == 1 and outputs[0].bval is not None:
        out = outputs[0]
        image = read_canonical(out.nifti)
        n = image.raw.shape[3] if image.raw.ndim == 4 else 1
        bvec = out.bvec if out.bvec is not None else np.zeros((3, n))
        if out.bval.size != n or bvec.shape != (3, n):
            raise QMRIInputError(
                f"dcm2niix wrote {out.bval.size} b-values for {n} volumes of '{s.description}'",
                s.first_file,
            )
        header_b = sorted({round(b, 1) for b in s.b_values})
        if sorted({round(float(b), 1) for b in out.bval}) != header_b and header_b:
            raise QMRIInputError(
                f"dcm2niix's b-values {sorted(set(out.bval.tolist()))} differ from the headers' "
                f"{header_b} s/mm^2 in '{s.description}'",
                s.first_file,
            )
        return image, out.sidecar, out.bval, bvecs_to_world(bvec, image.source_affine)
    if s.enhanced:
        raise QMRIInputError(
            f"dcm2niix wrote no b-values for enhanced diffusion series '{s.description}'",
            s.first_file,
        )
    return _dwi_from_headers(s, scratch)


def _dwi_from_headers(
    s: SeriesHeaders, scratch: Scratch
) -> tuple[CanonicalImage, dict, np.ndarray, np.ndarray]:
    """DWI volume by volume, with b-values and directions from the headers (classic only)."""
    volumes = _volumes_by_position(s)
    parts = [_convert([f.path for f in v], scratch, s, v, ndim=3) for v in volumes]
    image = _stack(parts, s)
    bvals, world = [], []
    for v in volumes:
        b = _one(v, "b_value", s)
        if b is None:
            raise QMRIInputError("diffusion image lacks a b-value", v[0].path)
        bvals.append(b)
        grads = {tuple(round(x, 4) for x in f.gradient) for f in v if f.gradient}
        if len(grads) > 1:
            raise QMRIInputError("gradient direction varies within a volume", v[0].path)
        lps = np.array(grads.pop() if grads else (0.0, 0.0, 0.0))
        world.append(lps * np.array([-1.0, -1.0, 1.0]))  # LPS -> RAS
    return image, parts[0].sidecar, np.array(bvals), np.array(world).T


# --------------------------------------------------------------------------------------------
# session import

# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------


def _sidecar(meta: Mapping[str, Any], image: CanonicalImage, fields: Mapping[str, Any]) -> dict:
    out = reorient_sidecar(scrub_sidecar(meta), image.ornt)
    out.update({k: v for k, v in fields.items() if v is not None})
    return out


def write_kind(c: ClassifiedSeries, session_dir: Path, stem: str, scratch: Scratch) -> list[Path]:
    """Convert one classified kind and write its files into a session folder.

    Parameters
    ----------
    c : ClassifiedSeries
        The kind and its DICOM series.
    session_dir : Path
        The (staging) ``ses-<t>`` folder; ``anat/``, ``dwi/``, ``perf/``, ``fmap/`` are made.
    stem : str
        ``sub-<s>_ses-<t>``.
    scratch : Scratch
        Temporary folders for the dcm2niix runs.

    Returns
    -------
    list of Path
        The NIfTI files written (collections in index order).
    """
    anat_dir = session_dir / "anat"
    if c.kind in COLLECTION_KINDS:
        written = []
        for i, (_, vol) in enumerate(_collection(c, scratch), start=1):
            path = anat_dir / f"{stem}_{_ENTITY[c.kind]}-{i}_{c.kind}.nii.gz"
            fields = _acquisition_fields(vol.frames, vol.series)
            if c.kind == "VFA":
                fields["RepetitionTimeExcitation"] = fields.get("RepetitionTime")
                fields.setdefault(
                    "PulseSequenceType", vol.sidecar.get("PulseSequenceType") or "SPGR"
                )
            write_canonical(vol.image, path)
            write_json(_sidecar(vol.sidecar, vol.image, fields), sidecar_path(path))
            written.append(path)
        return written
    if c.kind == "dce":
        image, meta, fields = _dce(c, scratch)
        path = session_dir / "perf" / f"{stem}_dce.nii.gz"
        sidecar = _sidecar(meta, image, fields)
        sidecar.pop("RepetitionTime", None)  # BIDS: VolumeTiming excludes RepetitionTime
        write_canonical(image, path)
        write_json(sidecar, sidecar_path(path))
        return [path]
    if c.kind == "dwi":
        image, meta, bvals, world = _dwi(c, scratch)
        path = session_dir / "dwi" / f"{stem}_dwi.nii.gz"
        write_canonical(image, path)
        (s,) = c.series
        write_json(_sidecar(meta, image, _acquisition_fields(s.frames, s)), sidecar_path(path))
        write_text(format_bval(bvals), path.with_name(f"{stem}_dwi.bval"))
        write_text(
            format_bvec(bvecs_from_world(world, image.affine)), path.with_name(f"{stem}_dwi.bvec")
        )
        return [path]
    if len(c.series) != 1:  # pragma: no cover (classify gives single kinds one series)
        raise QMRIInputError(f"{len(c.series)} series for {c.kind}", c.series[0].first_file)
    (s,) = c.series
    vol = _convert(s.files, scratch, s, s.frames, ndim=3)
    folder = session_dir / "fmap" if c.kind == "TB1map" else anat_dir
    path = folder / f"{stem}_{c.kind}.nii.gz"
    write_canonical(vol.image, path)
    write_json(
        _sidecar(vol.sidecar, vol.image, _acquisition_fields(s.frames, s)), sidecar_path(path)
    )
    return [path]


def sidecar_path(path: Path) -> Path:
    """JSON sidecar of a ``.nii.gz``."""
    return path.with_name(path.name.replace(".nii.gz", ".json"))
