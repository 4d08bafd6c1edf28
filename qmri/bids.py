"""Discovery of subjects, sessions and series in a BIDS dataset, and validated series loading.

Only what the data contract (section 1) names is looked for; everything is optional per
session. Loading a series checks it against its sidecars and raises a one-line
:class:`~qmri.errors.QMRIInputError` naming the file for anything inconsistent: a missing
required sidecar field, a value that is not a number (a JSON string ``"15"`` included) or
outside its plausible range in its BIDS unit (:data:`qmri.io.SIDECAR_RANGES`: an echo time in
ms), a volume count that disagrees with the flip angles / echo times / b-values, a ``.bvec``
that is not unit length, a DCE series of fewer than :data:`MIN_DCE_FRAMES` frames or with
non-increasing ``VolumeTiming``, series files on different grids. ``docs/robustness.md``
lists every case and its outcome.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qmri.errors import QMRIInputError
from qmri.io import load_nifti, read_data, read_json, sidecar_path


@dataclass(frozen=True)
class SeriesKind:
    """A kind of acquisition the contract names: where its files are and what they must say.

    Attributes
    ----------
    name : str
        Its label in output names (``from-<name>_to-ref``, ``desc-moco<name>``): the BIDS
        suffix of a collection (``VFA``, ``MESE``) or of a single series (``dwi``, ``dce``).
    datatype : str
        Raw datatype folder (``anat``, ``dwi``, ``perf``).
    suffix : str
        BIDS suffix of its files.
    entity : str or None
        Linking entity of a collection of 3D files (``flip``, ``echo``, ``inv``), ordered by
        its index; None for one 4D file.
    parameters : callable
        ``parameters(paths) -> dict``: the acquisition parameters from the sidecars (and
        ``.bval``), checked against the headers; raises :class:`QMRIInputError` naming the file.
        Run when the workflow is planned (no voxel data is read) and when the series is loaded.
    motion_reference : {"highest_snr", "low_b_mean", "baseline_mean"}
        The volume every other is motion-corrected (and the series registered) to, see
        :func:`qmri.motion.series_reference_volume`.
    """

    name: str
    datatype: str
    suffix: str
    entity: str | None
    parameters: Callable[[Sequence[Path]], dict[str, Any]]
    motion_reference: str

    def find(self, session_dir: Path, stem: str) -> tuple[Path, ...]:
        """The series' files in a session folder (collections in index order)."""
        folder = session_dir / self.datatype
        if self.entity is None:
            hits = sorted(folder.glob(f"{stem}_{self.suffix}.nii.gz"))
            if len(hits) > 1:  # pragma: no cover (one exact name matches at most once)
                raise QMRIInputError(f"{len(hits)} {self.suffix} files", folder)
            return tuple(hits)
        hits = folder.glob(f"{stem}_{self.entity}-*_{self.suffix}.nii.gz")
        return tuple(sorted(hits, key=lambda p: _index_of(p, self.entity)))

    def check(self, paths: Sequence[Path]) -> None:
        """Check sidecars and headers of the series (no voxel data read)."""
        self.parameters(paths)
        if self.entity is not None:
            _check_grid(paths)

    def load(self, paths: Sequence[Path]) -> Series:
        """Load the series with its parameters (4D data, measurements last)."""
        params = self.parameters(paths)
        if self.entity is None:
            img = load_nifti(paths[0], ndim=4)
            return Series(read_data(img), img.affine, tuple(paths), params)
        _check_grid(paths)
        data, affine = _stack_3d(paths)
        return Series(data, affine, tuple(paths), params)


@dataclass(frozen=True)
class SessionFiles:
    """The raw files of one session: reference, B1 map and each series kind found."""

    subject: str
    session: str
    reference: Path | None = None
    b1map: Path | None = None
    series: dict[str, tuple[Path, ...]] = field(default_factory=dict)

    def files(self, kind: str) -> tuple[Path, ...]:
        """Files of a series kind (``VFA``, ``dwi``, ...); empty when the session lacks it."""
        return self.series.get(kind, ())

    @property
    def available(self) -> dict[str, bool]:
        """Which acquisitions the session has (for the tables' 'missing' report)."""
        return {
            "reference": self.reference is not None,
            "TB1map": self.b1map is not None,
            **{kind: bool(paths) for kind, paths in self.series.items()},
        }


@dataclass(frozen=True)
class Series:
    """A loaded, validated series: 4D data with its acquisition parameters."""

    data: np.ndarray
    affine: np.ndarray
    sources: tuple[Path, ...]
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def shape3d(self) -> tuple[int, int, int]:
        """Spatial shape."""
        return tuple(self.data.shape[:3])  # type: ignore[return-value]


def _index_of(path: Path, entity: str) -> int:
    m = re.search(rf"_{entity}-(\d+)_", path.name)
    if m is None:
        raise QMRIInputError(f"file name lacks the '{entity}-<index>' entity", path)
    return int(m.group(1))


def session_files(
    bids_dir: str | Path,
    subject: str,
    session: str,
    kinds: Sequence[SeriesKind],
    *,
    reference_suffix: str,
) -> SessionFiles:
    """Find the files of one session (``subject``/``session`` without prefixes).

    ``kinds`` are the series kinds to look for (:data:`qmri.registry.SERIES_KINDS`).
    """
    ses = Path(bids_dir) / f"sub-{subject}" / f"ses-{session}"
    stem = f"sub-{subject}_ses-{session}"

    def one(pattern: str) -> Path | None:
        hits = sorted(ses.glob(pattern))
        if len(hits) > 1:
            raise QMRIInputError(
                f"{len(hits)} files match {pattern}; qmri expects at most one "
                "(drop the extra runs or use a separate session)",
                ses,
            )
        return hits[0] if hits else None

    found = {kind.name: kind.find(ses, stem) for kind in kinds}
    return SessionFiles(
        subject=subject,
        session=session,
        reference=one(f"anat/{stem}_{reference_suffix}.nii.gz"),
        b1map=one(f"fmap/{stem}_TB1map.nii.gz"),
        series=found,
    )


def _refuse_broken_links(paths: Iterable[Path]) -> None:
    """A ``sub-*`` or ``ses-*`` entry that is a dangling symbolic link is an error: skipped as
    "not a folder", a subject or session would be left out without a word."""
    for path in sorted(paths):
        if path.is_symlink() and not path.exists():
            raise QMRIInputError(
                f"broken symbolic link: its target {os.readlink(path)} does not exist "
                "(or it is a link loop)",
                path,
            )


def discover_subjects(bids_dir: str | Path, participant_label: Sequence[str] = ()) -> list[str]:
    """Subject labels (without ``sub-``) present as folders, optionally restricted."""
    bids_dir = Path(bids_dir)
    if not (bids_dir / "dataset_description.json").exists():
        raise QMRIInputError("not a BIDS dataset (no dataset_description.json)", bids_dir)
    _refuse_broken_links(bids_dir.glob("sub-*"))
    found = sorted(p.name[4:] for p in bids_dir.glob("sub-*") if p.is_dir())
    if participant_label:
        wanted = [s.removeprefix("sub-") for s in participant_label]
        missing = sorted(set(wanted) - set(found))
        if missing:
            raise QMRIInputError(f"participant_label not found: {', '.join(missing)}", bids_dir)
        found = [s for s in found if s in wanted]
    if not found:
        raise QMRIInputError("no sub-* folders", bids_dir)
    return found


def discover_sessions(bids_dir: str | Path, subject: str) -> list[str]:
    """Session labels (without ``ses-``) present as folders of a subject, sorted by name."""
    sub = Path(bids_dir) / f"sub-{subject}"
    _refuse_broken_links(sub.glob("ses-*"))
    sessions = sorted(p.name[4:] for p in sub.glob("ses-*") if p.is_dir())
    if not sessions:
        raise QMRIInputError("no ses-* folders (qmri needs one session per timepoint)", sub)
    return sessions


def _require(meta: dict[str, Any], key: str, path: Path) -> Any:
    if key not in meta:
        raise QMRIInputError(f"sidecar lacks required field '{key}'", path)
    return meta[key]


def _positive_number(value: Any, key: str, path: Path) -> float:
    if isinstance(value, str | bool):  # JSON "15" or true is not a number, whatever it reads as
        raise QMRIInputError(f"'{key}' must be a number, got {value!r}", path)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise QMRIInputError(f"'{key}' must be a number, got {value!r}", path) from None
    if not np.isfinite(number) or number <= 0:
        raise QMRIInputError(f"'{key}' must be positive, got {value!r}", path)
    return number


def _stack_3d(paths: Sequence[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Stack the single-volume images of one collection (grid checked by ``_check_grid``)."""
    imgs = [load_nifti(p, ndim=(3, 4)) for p in paths]
    vols = [read_data(img).reshape(img.shape[:3]) for img in imgs]
    return np.stack(vols, axis=-1), imgs[0].affine


def _check_grid(paths: Sequence[Path]) -> tuple[tuple[int, int, int], np.ndarray]:
    """Check from the headers alone that single-volume images share one grid."""
    first = load_nifti(paths[0], ndim=(3, 4))
    for path in paths:
        img = first if path == paths[0] else load_nifti(path, ndim=(3, 4))
        if img.ndim == 4 and img.shape[3] != 1:
            raise QMRIInputError(
                f"expected one volume per file of the collection, got {img.shape[3]}", path
            )
        if img.shape[:3] != first.shape[:3] or not np.allclose(
            img.affine, first.affine, atol=1e-3
        ):
            raise QMRIInputError(f"grid differs from {paths[0].name}", path)
    return first.shape[:3], first.affine


def _positive_sidecar_value(path: Path, key: str, *, required: bool = True) -> float | None:
    """A positive number from the sidecar of ``path`` (``None`` if absent and not required)."""
    meta_path = sidecar_path(path)
    meta = read_json(meta_path)
    if meta.get(key) is None and not required:
        return None
    return _positive_number(_require(meta, key, meta_path), key, meta_path)


def vfa_parameters(paths: Sequence[Path]) -> dict[str, Any]:
    """Flip angles (deg) and TR (s) of a VFA collection, checked, from its sidecars."""
    if len(paths) < 2:
        raise QMRIInputError(f"VFA needs at least 2 flip angles, found {len(paths)}", paths[0])
    flips, trs = [], []
    for path in paths:
        meta_path = sidecar_path(path)
        meta = read_json(meta_path)
        flip = _require(meta, "FlipAngle", meta_path)
        flips.append(_positive_number(flip, "FlipAngle", meta_path))
        tr = meta.get("RepetitionTimeExcitation", meta.get("RepetitionTime"))
        if tr is None:
            raise QMRIInputError(
                "sidecar lacks required field 'RepetitionTimeExcitation'", meta_path
            )
        trs.append(_positive_number(tr, "RepetitionTimeExcitation", meta_path))
    if not np.allclose(trs, trs[0], rtol=1e-6):
        raise QMRIInputError(
            f"RepetitionTimeExcitation differs across the collection ({sorted(set(trs))} s)",
            sidecar_path(paths[0]),
        )
    if len(set(flips)) != len(flips):
        raise QMRIInputError(f"repeated flip angles {flips} deg", sidecar_path(paths[0]))
    return {"FlipAngle": flips, "RepetitionTimeExcitation": trs[0]}


def multi_echo_parameters(paths: Sequence[Path]) -> dict[str, Any]:
    """Echo times (s) of a multi-echo collection, checked, from its sidecars."""
    if len(paths) < 2:
        raise QMRIInputError(
            f"a multi-echo fit needs at least 2 echoes, found {len(paths)}", paths[0]
        )
    tes = [_positive_sidecar_value(path, "EchoTime") for path in paths]
    if np.any(np.diff(tes) <= 0):
        raise QMRIInputError(
            f"EchoTime must increase with the echo index, got {tes} s", sidecar_path(paths[0])
        )
    return {"EchoTime": tes}


def inversion_parameters(paths: Sequence[Path]) -> dict[str, Any]:
    """Inversion times (s) of an inversion-recovery collection, checked, from its sidecars.

    ``RepetitionTime`` (s) is returned too when every sidecar gives the same value (the
    inversion-recovery model uses it for the inversion efficiency), else ``None``.
    """
    tis = [_positive_sidecar_value(path, "InversionTime") for path in paths]
    trs = [_positive_sidecar_value(path, "RepetitionTime", required=False) for path in paths]
    trs = [tr for tr in trs if tr is not None]
    if len(tis) < 4:
        raise QMRIInputError(
            f"inversion-recovery T1 needs at least 4 inversion times, found {len(tis)}", paths[0]
        )
    if np.any(np.diff(tis) <= 0):
        raise QMRIInputError(
            f"InversionTime must increase with the inv index, got {tis} s", sidecar_path(paths[0])
        )
    same_tr = len(trs) == len(tis) and np.allclose(trs, trs[0], rtol=1e-6)
    return {"InversionTime": tis, "RepetitionTime": trs[0] if same_tr else None}


def dwi_parameters(paths: Sequence[Path]) -> dict[str, Any]:
    """b-values (s/mm^2) and, when present, b-vectors of a DWI series, checked against its header.

    The ``.bval`` (and ``.bvec``) files sit beside the image, as BIDS names them.
    """
    path = Path(paths[0])
    img = load_nifti(path, ndim=4)
    bval = _dwi_companion(path, ".bval")
    bvals = read_bvals(bval)
    n = img.shape[3]
    if bvals.size != n:
        raise QMRIInputError(f"{n} volumes but {bvals.size} b-values in {bval.name}", path)
    params: dict[str, Any] = {"bvals": bvals.tolist()}
    bvec = _dwi_companion(path, ".bvec")
    if bvec.exists():
        params["bvecs"] = read_bvecs(bvec, n, bvals=bvals).tolist()
    return params


#: Fewest frames of a DCE series: 2 pre-contrast frames (the fewest the baseline detection
#: accepts, :data:`qmri.models.dce.arrival.MIN_BASELINE_FRAMES`) and 5 after the bolus, one more
#: than the 4 parameters of the largest kinetic fit (extended Tofts with an arterial delay).
MIN_DCE_FRAMES = 7


def check_dce_frames(n_frames: int, path: Path) -> None:
    """Refuse a DCE series of fewer than :data:`MIN_DCE_FRAMES` frames (one line naming
    ``path``)."""
    if n_frames < MIN_DCE_FRAMES:
        raise QMRIInputError(
            f"{n_frames} frames are too few for a kinetic fit: DCE needs at least "
            f"{MIN_DCE_FRAMES} (2 before the bolus, 5 after it)",
            path,
        )


def frame_times(meta: dict[str, Any], n_frames: int, path: Path) -> list[float]:
    """Frame times (s) from a DCE sidecar: ``VolumeTiming``, else ``RepetitionTime`` steps.

    Parameters
    ----------
    meta : dict
        The sidecar's content.
    n_frames : int
        Frames of the series (at least :data:`MIN_DCE_FRAMES`).
    path : Path
        The sidecar, named in errors.

    Returns
    -------
    list of float
        One time (s) per frame, strictly increasing.

    Raises
    ------
    QMRIInputError
        Naming the sidecar: too few frames, no timing, timing of the wrong length or not
        strictly increasing.
    """
    check_dce_frames(n_frames, path)
    if "VolumeTiming" in meta:
        timing = meta["VolumeTiming"]
        if not isinstance(timing, list) or any(isinstance(t, str | bool) for t in timing):
            raise QMRIInputError("'VolumeTiming' must be a list of numbers (s)", path)
        try:
            times = [float(t) for t in timing]
        except (TypeError, ValueError):
            raise QMRIInputError("'VolumeTiming' must be a list of numbers (s)", path) from None
        for k in range(1, len(times)):
            if not times[k] > times[k - 1]:
                raise QMRIInputError(
                    f"'VolumeTiming' must increase: volume {k} at {times[k]:g} s does not "
                    f"follow volume {k - 1} at {times[k - 1]:g} s",
                    path,
                )
    elif "RepetitionTime" in meta:
        step = _positive_number(meta["RepetitionTime"], "RepetitionTime", path)
        times = [k * step for k in range(n_frames)]
    else:
        raise QMRIInputError(
            "sidecar has neither VolumeTiming nor RepetitionTime (frame times)", path
        )
    if len(times) != n_frames:
        raise QMRIInputError(f"{len(times)} frame times for {n_frames} frames", path)
    return times


def dce_parameters(paths: Sequence[Path]) -> dict[str, Any]:
    """Acquisition of a DCE series from its sidecar, checked against its header.

    ``FlipAngle`` (deg) and ``RepetitionTimeExcitation`` (s) are required; frame times (s)
    come from ``VolumeTiming`` or ``RepetitionTime``; ``BaselineFrames`` (pre-contrast frames),
    ``ContrastAgent`` and ``MagneticFieldStrength`` (T) are passed on when given (None
    otherwise: the baseline is then detected from the bolus arrival, and r1 must be configured
    when the agent or field strength is unknown).
    """
    path = Path(paths[0])
    img = load_nifti(path, ndim=4)
    check_dce_frames(img.shape[3], path)
    side = sidecar_path(path)
    meta = read_json(side)
    baseline = meta.get("BaselineFrames")
    if baseline is not None and (isinstance(baseline, bool) or not isinstance(baseline, int)):
        raise QMRIInputError(f"'BaselineFrames' must be an integer, got {baseline!r}", side)
    return {
        "FlipAngle": _positive_number(_require(meta, "FlipAngle", side), "FlipAngle", side),
        "RepetitionTimeExcitation": _positive_number(
            _require(meta, "RepetitionTimeExcitation", side), "RepetitionTimeExcitation", side
        ),
        "FrameTimes": frame_times(meta, img.shape[3], side),
        "BaselineFrames": baseline,
        "ContrastAgent": meta.get("ContrastAgent"),
        "MagneticFieldStrength": meta.get("MagneticFieldStrength"),
    }


def check_session(files: SessionFiles, kinds: Sequence[SeriesKind]) -> None:
    """Check every series of a session from sidecars and headers only (no voxel data read).

    Run when the workflow is planned, so a bad file stops the run before any job starts.
    """
    if files.reference is not None:
        load_nifti(files.reference, ndim=3)
    if files.b1map is not None:
        load_nifti(files.b1map, ndim=3)
    for kind in kinds:
        if files.files(kind.name):
            kind.check(files.files(kind.name))


def read_bvals(path: Path) -> np.ndarray:
    """Read an FSL-style ``.bval`` file (s/mm^2)."""
    if not path.exists():
        raise QMRIInputError("b-value file not found", path)
    try:
        values = np.array(path.read_text().split(), dtype=float)
    except ValueError:
        raise QMRIInputError("b-values must be numbers", path) from None
    if values.size == 0:
        raise QMRIInputError("no b-values", path)
    if np.any(values < 0) or not np.all(np.isfinite(values)):
        raise QMRIInputError("b-values must be finite and non-negative (s/mm^2)", path)
    return values


#: Largest relative deviation from 1 of a b-vector's length that is read as rounding and
#: normalised; a vector further off is an error (a b-value folded into the vector length is
#: not supported: give it in the ``.bval``).
BVEC_LENGTH_TOLERANCE = 0.01


def read_bvecs(path: Path, n: int, *, bvals: np.ndarray | None = None) -> np.ndarray:
    """Read an FSL-style ``.bvec`` file: 3 rows of ``n`` columns; returns ``(n, 3)`` unit vectors.

    A vector within :data:`BVEC_LENGTH_TOLERANCE` of unit length is normalised (one already
    unit to 1e-6 is returned as read); a zero vector is allowed for a b = 0 volume (any
    volume when ``bvals`` is not given) and returned as zeros.

    Parameters
    ----------
    path : Path
        The ``.bvec`` file.
    n : int
        Volumes of the series.
    bvals : ndarray, optional
        The series' b-values (s/mm^2): a zero vector is then an error where b > 0.

    Raises
    ------
    QMRIInputError
        Naming the file: not 3 rows of ``n`` numbers, not finite, a vector that is neither unit
        (within the tolerance) nor zero, or a zero vector of a diffusion-weighted volume.
    """
    if not path.exists():
        raise QMRIInputError("b-vector file not found", path)
    try:
        rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
        vecs = np.array(rows, dtype=float)
    except ValueError:
        raise QMRIInputError("b-vectors must be 3 rows of numbers", path) from None
    if vecs.shape != (3, n):
        raise QMRIInputError(f"expected 3 rows of {n} b-vectors, got shape {vecs.shape}", path)
    if not np.all(np.isfinite(vecs)):
        raise QMRIInputError("b-vectors must be finite numbers", path)
    vecs = vecs.T
    norms = np.linalg.norm(vecs, axis=1)
    zero = norms < 1e-6
    if bvals is not None:
        weighted = zero & (np.asarray(bvals, dtype=float) > 0)
        if weighted.any():
            k = int(np.flatnonzero(weighted)[0])
            raise QMRIInputError(
                f"b-vector of volume {k} is zero but its b-value is {float(bvals[k]):g} s/mm^2 "
                "(only b = 0 volumes may have zero vectors)",
                path,
            )
    off = ~zero & (np.abs(norms - 1) > BVEC_LENGTH_TOLERANCE)
    if off.any():
        k = int(np.flatnonzero(off)[0])
        raise QMRIInputError(
            f"b-vector of volume {k} has length {norms[k]:.4g}, not 1 (tolerance "
            f"{BVEC_LENGTH_TOLERANCE:.0%}): qmri needs unit vectors (a b-value folded into "
            "the vector length is not supported: give it in the .bval)",
            path,
        )
    rescale = ~zero & (np.abs(norms - 1) > 1e-6)
    if rescale.any():
        vecs[rescale] /= norms[rescale, None]
    return vecs


def _dwi_companion(path: Path, ext: str) -> Path:
    return path.with_name(path.name.replace(".nii.gz", ext).replace(".nii", ext))


def b1_ratio(data: np.ndarray, path: Path) -> tuple[np.ndarray, str]:
    """Convert a B1 map to the actual/nominal flip-angle ratio (1 = nominal).

    BIDS recommends percent (100 = nominal); a map whose median over non-zero voxels is near 1
    (between 0.2 and 5) is read as a ratio already. Returns the ratio map and the convention
    that was detected (``"percent"`` or ``"ratio"``), to be recorded in the outputs. Voxels
    that are 0 or not finite stay so, and the fits give them NaN with ``fitmask`` 0; a map
    without a single positive voxel is an error naming it.
    """
    finite = data[np.isfinite(data) & (data > 0)]
    if finite.size == 0:
        raise QMRIInputError(
            "B1 map has no positive values (every voxel is 0, negative or not finite): it "
            "cannot correct a flip angle",
            path,
        )
    med = float(np.median(finite))
    if 0.2 <= med <= 5:
        return data.astype(np.float64), "ratio"
    if 20 <= med <= 500:
        return data / 100.0, "percent"
    raise QMRIInputError(f"B1 map median {med:g} is neither a ratio (~1) nor percent (~100)", path)
