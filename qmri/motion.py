"""Rigid motion correction within one series (DCE frames, DWI volumes, VFA/MESE/MEGRE/IRT1).

Every volume of a 4D series is registered rigidly to a reference of the series' own
(:func:`series_reference_volume`) by Mattes mutual information
(:func:`qmri.registration.register_rigid`), so the contrast change between DCE frames,
b-values, flip angles or echoes does not bias the alignment. Each volume is then resampled
once, trilinearly, onto the series grid in the reference position.

Conventions
-----------
* ``matrices[v]`` is a 4x4 **RAS** matrix mapping a point of the reference to the matching
  point of volume ``v`` (ITK convention: it resamples volume ``v`` into the reference).
* Voxels of the corrected series whose centre falls outside the field of view of the moved
  volume (beyond its outer voxel faces) are **NaN**, never 0: a 0 there would be taken by a
  fit as a measured signal. Fits must skip non-finite samples (or the voxel).
* Transforms are written as one ITK text file holding one ``#Transform v`` block per volume
  (``Euler3DTransform_double_3_3`` in LPS, as ITK expects), plus a TSV trace in RAS.
* Registration is bit-reproducible (single thread, fixed sampling seed): the same series
  always gives identical matrices.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from numpy.typing import ArrayLike

from qmri.errors import QMRIInputError
from qmri.io import atomic_output
from qmri.registration import nifti_to_sitk, register_rigid, transform_to_matrix

#: Highest b-value (s/mm^2) counted as a b=0 volume for the DWI reference.
B0_MAX_S_PER_MM2 = 50.0
#: How :func:`series_reference_volume` picks a reference (each series kind names one).
REFERENCE_RULES = ("highest_snr", "low_b_mean", "baseline_mean")

#: Histogram bins of the mutual information. On a synthetic DCE series whose tumour compartment
#: enhances sixfold, 64 bins kept every frame within 0.26 mm and 0.33 deg of the truth; 32 bins
#: gave up to 0.45 mm / 0.5 deg and 16 bins 1.4 mm / 3 deg (few bins merge the enhancing and
#: non-enhancing tissue into one bin and the optimum drifts).
MOCO_BINS = 64

#: How the metric samples the reference: every voxel, on ITK's regular grid with each sample
#: randomly perturbed within its voxel (fixed seed). Every voxel at its centre biases the optimum
#: towards grid alignment (interpolation artefacts): on the phantom's DCE series
#: (4.5 x 3.75 x 3.75 mm) that gave a spurious 1.8 mm shift of frames that had not moved; the
#: perturbed regular grid gives 0.01-0.04 mm. A 30% random sample removes the bias too but on a
#: small synthetic grid left 0.6 mm of scatter at high b (too few samples).
MOCO_SAMPLING_FRACTION = 1.0
MOCO_SAMPLING_STRATEGY = "regular"

_TRACE_COLUMNS = (
    "volume",
    "rot_x_deg",
    "rot_y_deg",
    "rot_z_deg",
    "trans_x_mm",
    "trans_y_mm",
    "trans_z_mm",
    "displacement_mm",
    "metric",
)
_EULER = "Euler3DTransform_double_3_3"


@dataclass(frozen=True)
class MotionCorrection:
    """Outcome of :func:`motion_correct`.

    Attributes
    ----------
    corrected : (X, Y, Z, n_vol) ndarray of float64
        Every volume resampled (trilinear, one interpolation) onto the series grid in the
        reference position; NaN where the moved volume does not cover the voxel.
    matrices : (n_vol, 4, 4) ndarray
        RAS matrices, reference point -> volume point (mm, ITK convention).
    displacement_mm : (n_vol,) ndarray
        Mean displacement (mm) of the voxels of the displacement region (the mask given to
        :func:`motion_correct`, else the central half of the grid along each axis).
    metric : (n_vol,) ndarray
        Final Mattes mutual information per volume (negative, lower is better); NaN for
        volumes identical to the reference, which are not registered.
    metric_name : str
        Name of the metric.
    reference_volumes : tuple of int
        Volumes identical to the reference, given the exact identity without registering.
    itk_parameters : (n_vol, 6) ndarray
        Euler3D parameters as ITK stores them: angles about the LPS x, y, z axes (rad,
        applied in the order y, x, z) then translation (LPS, mm).
    itk_fixed_parameters : (n_vol, 4) ndarray
        Euler3D fixed parameters: centre of rotation (LPS, mm) and ITK's ComputeZYX flag (0).
    centre_ras : (3,) ndarray
        Centre of the series grid (RAS, mm); the trace's translations are its displacement.
    """

    corrected: np.ndarray
    matrices: np.ndarray
    displacement_mm: np.ndarray
    metric: np.ndarray
    metric_name: str
    reference_volumes: tuple[int, ...]
    itk_parameters: np.ndarray
    itk_fixed_parameters: np.ndarray
    centre_ras: np.ndarray

    @property
    def n_volumes(self) -> int:
        """Number of volumes."""
        return int(self.matrices.shape[0])

    @property
    def rotations_deg(self) -> np.ndarray:
        """(n_vol, 3) rotation angles (degrees) about the RAS x, y, z axes.

        Same composition as ITK's Euler3D transform: ``R = Rz @ Rx @ Ry`` (y applied first).
        Flipping LPS to RAS negates the angles about x and y and keeps the one about z.
        """
        return np.degrees(self.itk_parameters[:, :3] * np.array([-1.0, -1.0, 1.0]))

    @property
    def translations_mm(self) -> np.ndarray:
        """(n_vol, 3) displacement (RAS, mm) of the grid centre: ``M @ c - c``."""
        c = np.append(self.centre_ras, 1.0)
        return (self.matrices @ c)[:, :3] - self.centre_ras


# ---------------------------------------------------------------------------------------------
# Reference volume
# ---------------------------------------------------------------------------------------------


def series_reference_volume(
    data4d: ArrayLike,
    rule: str,
    *,
    bvals: ArrayLike | None = None,
    baseline_frames: int | Sequence[int] | None = None,
) -> np.ndarray:
    """Build the reference a series is motion-corrected to, from the series itself.

    * ``baseline_mean`` (DCE): mean of the pre-contrast frames (``baseline_frames``): the bolus
      changes the contrast of later frames, the baseline frames share one contrast and their
      mean has the best SNR of the series.
    * ``low_b_mean`` (DWI): mean of the b=0 volumes (b <= :data:`B0_MAX_S_PER_MM2`), else of
      the lowest b-value's; a single such volume as is.
    * ``highest_snr`` (VFA, MESE, MEGRE, IRT1): the volume with the highest SNR, taken as the
      highest mean signal inside the series' foreground (all volumes share the receiver, so
      noise is the same and signal ranks SNR): the brightest flip angle, the first echo, the
      longest inversion time. A single volume is preferred to the mean over volumes because
      (i) the mean of misaligned volumes is blurred by the very motion being estimated, which
      flattens the metric and biases every volume towards the average position, (ii) the
      mean mixes contrasts (an inversion-recovery magnitude series crosses zero at different
      times per tissue), and (iii) the chosen volume then needs no interpolation at all
      (exact identity). With 2-8 volumes the mean would gain at most sqrt(n) in SNR, which
      registration of 2-4 mm anatomy does not need.

    Parameters
    ----------
    data4d : (X, Y, Z, n_vol) array_like
        The series.
    rule : {"highest_snr", "low_b_mean", "baseline_mean"}
        How the reference is chosen (:data:`REFERENCE_RULES`).
    bvals : (n_vol,) array_like, optional
        b-values (s/mm^2); required for ``low_b_mean``.
    baseline_frames : int or sequence of int, optional
        Pre-contrast frames (their number or indices); required for ``baseline_mean``.

    Returns
    -------
    (X, Y, Z) ndarray of float64
        The reference (a bit-exact copy when it is one volume).
    """
    data = _as_series(data4d)
    n = data.shape[3]
    if rule not in REFERENCE_RULES:
        raise QMRIInputError(f"unknown reference rule '{rule}' (use {', '.join(REFERENCE_RULES)})")
    if rule == "baseline_mean":
        if baseline_frames is None:
            raise QMRIInputError("a DCE reference needs baseline_frames (pre-contrast frames)")
        if isinstance(baseline_frames, int | np.integer):
            if not 1 <= baseline_frames <= n:
                raise QMRIInputError(
                    f"baseline_frames must be between 1 and {n} frames, got {baseline_frames}"
                )
            frames = np.arange(int(baseline_frames))
        else:
            frames = np.unique(np.asarray(baseline_frames, dtype=np.int64))
            if frames.size == 0 or frames.min() < 0 or frames.max() >= n:
                raise QMRIInputError(
                    f"baseline_frames must be frame indices in 0..{n - 1}, "
                    f"got {list(np.asarray(baseline_frames).tolist())}"
                )
        return _mean_of(data, frames)
    if rule == "low_b_mean":
        if bvals is None:
            raise QMRIInputError("a DWI reference needs the b-values")
        b = np.asarray(bvals, dtype=np.float64).ravel()
        if b.size != n:
            raise QMRIInputError(f"{b.size} b-values for {n} volumes")
        low = np.flatnonzero(b <= B0_MAX_S_PER_MM2)
        if low.size == 0:
            low = np.flatnonzero(b == b.min())
        return _mean_of(data, low)
    return data[..., highest_snr_volume(data)].copy()


def highest_snr_volume(data4d: ArrayLike) -> int:
    """Index of the volume with the highest mean signal inside the series' foreground.

    The foreground is where the mean over volumes exceeds 10% of its 99th percentile.

    Parameters
    ----------
    data4d : (X, Y, Z, n_vol) array_like
        The series (any units).

    Returns
    -------
    int
    """
    data = _as_series(data4d)
    mean = data.mean(axis=3)
    fg = mean > 0.1 * np.percentile(mean, 99)
    if not fg.any():
        return 0
    return int(np.argmax(data[fg].mean(axis=0)))


def _mean_of(data: np.ndarray, volumes: np.ndarray) -> np.ndarray:
    if volumes.size == 1:
        return data[..., int(volumes[0])].copy()
    return data[..., volumes].mean(axis=3)


def _as_series(data4d: ArrayLike) -> np.ndarray:
    data = np.asarray(data4d, dtype=np.float64)
    if data.ndim != 4:
        raise QMRIInputError(f"motion correction needs a 4D series, got shape {data.shape}")
    return data


# ---------------------------------------------------------------------------------------------
# Registration and resampling
# ---------------------------------------------------------------------------------------------


def motion_correct(
    data4d: ArrayLike,
    affine: np.ndarray,
    reference: ArrayLike | int,
    *,
    metric: str = "mattes",
    mask: np.ndarray | None = None,
    source: str | Path | None = None,
    **registration_options: Any,
) -> MotionCorrection:
    """Register every volume of a series rigidly to ``reference`` and resample it once.

    Parameters
    ----------
    data4d : (X, Y, Z, n_vol) array_like
        The series (any units); must be finite.
    affine : (4, 4) ndarray
        Voxel -> RAS world (mm) of the series grid.
    reference : (X, Y, Z) array_like or int
        Reference image on the series grid (see :func:`series_reference_volume`), or the index
        of the reference volume. Volumes identical to it get the exact identity and are copied,
        not registered or interpolated.
    metric : {"mattes"}
        Similarity metric: Mattes mutual information (handles the contrast change across DCE
        frames, b-values, flip angles, echoes).
    mask : (X, Y, Z) bool ndarray, optional
        Region whose mean voxel displacement is reported (``displacement_mm``); default the
        central half of the grid along each axis. It does not restrict the registration (pass
        ``fixed_mask=`` for that, as an array on the series grid).
    source : str or Path, optional
        File named in error messages.
    **registration_options
        Passed to :func:`qmri.registration.register_rigid` (``bins``, ``iterations``,
        ``shrink_factors``, ``smoothing_sigmas_mm``, ``sampling_fraction``, ``learning_rate``,
        ``seed``, ``initialize``, ``fixed_mask``). Defaults here: ``bins`` =
        :data:`MOCO_BINS`, every voxel on a perturbed regular grid
        (:data:`MOCO_SAMPLING_STRATEGY`).

    Returns
    -------
    MotionCorrection

    Notes
    -----
    DCE: mutual information tolerates a contrast change, not an arbitrary one. On synthetic
    series (2.5 x 2.5 x 4 mm, 3 deg / 4 mm motion) every frame registered to the pre-contrast
    mean came within 0.3 mm / 0.35 deg when one compartment enhanced (tumour, x6), but drifted by
    0.4-0.9 mm / 0.6-1.3 deg, growing with the enhancement, when every tissue enhanced
    differently and overlapped (smooth blobs). Registering each frame to the running mean of the
    preceding corrected frames (same contrast) did not help: the small per-step errors add up
    (0.6-1.0 mm at the last frame). Frames are therefore always registered to ``reference``.

    Raises
    ------
    QMRIInputError
        One line naming the volume that cannot be registered (constant or non-finite volume,
        or SimpleITK failing, e.g. when the volumes do not overlap).
    """
    if metric.lower() != "mattes":
        raise QMRIInputError(f"unknown motion-correction metric '{metric}' (use mattes)")
    data = _as_series(data4d)
    affine = np.asarray(affine, dtype=np.float64)
    shape = data.shape[:3]
    n = data.shape[3]
    if isinstance(reference, int | np.integer):
        if not 0 <= reference < n:
            raise QMRIInputError(f"reference volume {reference} not in 0..{n - 1}", source)
        ref = data[..., int(reference)]
    else:
        ref = np.asarray(reference, dtype=np.float64)
        if ref.shape != shape:
            raise QMRIInputError(
                f"reference shape {ref.shape} differs from the series grid {shape}", source
            )
    if not np.all(np.isfinite(ref)) or np.ptp(ref) == 0:
        raise QMRIInputError("the motion-correction reference is constant or not finite", source)

    geometry = nib.Nifti1Image(np.zeros((1, 1, 1), np.float32), affine)
    fixed = nifti_to_sitk(geometry, ref)
    options: dict[str, Any] = {
        "bins": MOCO_BINS,
        "sampling_fraction": MOCO_SAMPLING_FRACTION,
        "sampling_strategy": MOCO_SAMPLING_STRATEGY,
    }
    options.update(registration_options)
    if options.get("fixed_mask") is not None and isinstance(options["fixed_mask"], np.ndarray):
        options["fixed_mask"] = sitk.Cast(
            nifti_to_sitk(geometry, options["fixed_mask"].astype(np.float32)), sitk.sitkUInt8
        )
    centre_lps = fixed.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2.0 for s in shape])

    params = np.zeros((n, 6))
    fixed_params = np.zeros((n, 4))
    metric_values = np.full(n, np.nan)
    identical: list[int] = []
    for v in range(n):
        vol = data[..., v]
        if np.array_equal(vol, ref):
            identical.append(v)
            fixed_params[v, :3] = centre_lps
            continue
        if not np.all(np.isfinite(vol)):
            raise QMRIInputError(f"volume {v} of {n} has non-finite values", source)
        if np.ptp(vol) == 0:
            raise QMRIInputError(
                f"volume {v} of {n} is constant ({vol.flat[0]:g}) and cannot be registered",
                source,
            )
        try:
            res = register_rigid(fixed, nifti_to_sitk(geometry, vol), **options)
        except (RuntimeError, QMRIInputError) as exc:
            # register_rigid turns ITK's RuntimeError into a one-line QMRIInputError subclass;
            # a raw RuntimeError is handled too. Either way, say which volume failed.
            reason = exc.problem if isinstance(exc, QMRIInputError) else _itk_reason(exc)
            raise QMRIInputError(f"volume {v} of {n}: {reason}", source) from None
        params[v] = res.transform.GetParameters()
        fixed_params[v] = res.transform.GetFixedParameters()
        metric_values[v] = res.metric

    matrices = np.stack([_euler_matrix(p, f) for p, f in zip(params, fixed_params, strict=True)])
    corrected = resample_series(data, affine, matrices, exact=identical)
    region = _central_region(shape) if mask is None else np.asarray(mask, dtype=bool)
    if region.shape != shape or not region.any():
        raise QMRIInputError("the displacement mask is empty or not on the series grid", source)
    return MotionCorrection(
        corrected=corrected,
        matrices=matrices,
        displacement_mm=mean_displacement_mm(matrices, affine, region),
        metric=metric_values,
        metric_name="MattesMutualInformation",
        reference_volumes=tuple(identical),
        itk_parameters=params,
        itk_fixed_parameters=fixed_params,
        centre_ras=(affine @ np.append((np.array(shape) - 1) / 2.0, 1.0))[:3],
    )


def resample_series(
    data4d: ArrayLike,
    affine: np.ndarray,
    matrices: np.ndarray,
    *,
    exact: Sequence[int] = (),
) -> np.ndarray:
    """Resample every volume into the reference position on its own grid (trilinear, once).

    Parameters
    ----------
    data4d : (X, Y, Z, n_vol) array_like
        The series.
    affine : (4, 4) ndarray
        Voxel -> RAS world (mm) of the series grid.
    matrices : (n_vol, 4, 4) ndarray
        RAS matrices, reference point -> volume point (as :func:`motion_correct` returns and
        :func:`read_motion` reads).
    exact : sequence of int
        Volumes copied unchanged (their matrix is the exact identity).

    Returns
    -------
    (X, Y, Z, n_vol) ndarray of float64
        NaN where a voxel centre maps outside the moved volume's field of view (beyond the
        outer voxel faces, i.e. more than half a voxel past the edge centres); within that
        half-voxel border the edge value is used.
    """
    from scipy.ndimage import map_coordinates

    data = _as_series(data4d)
    shape = np.array(data.shape[:3])
    n = data.shape[3]
    if matrices.shape != (n, 4, 4):
        raise QMRIInputError(f"{matrices.shape[0]} transforms for a series of {n} volumes")
    ijk = np.indices(tuple(shape), dtype=np.float64).reshape(3, -1)
    inv_affine = np.linalg.inv(affine)
    out = np.empty(data.shape, dtype=np.float64)
    for v in range(n):
        if v in exact:
            out[..., v] = data[..., v]
            continue
        m = inv_affine @ matrices[v] @ affine  # reference voxel -> volume voxel
        coords = m[:3, :3] @ ijk + m[:3, 3:4]
        outside = np.any((coords < -0.5) | (coords > shape[:, None] - 0.5), axis=0)
        values = map_coordinates(data[..., v], coords, order=1, mode="nearest")
        values[outside] = np.nan
        out[..., v] = values.reshape(data.shape[:3])
    return out


def mean_displacement_mm(matrices: np.ndarray, affine: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean displacement (mm) of the mask's voxel centres under each transform.

    Parameters
    ----------
    matrices : (n_vol, 4, 4) ndarray
        RAS matrices (mm).
    affine : (4, 4) ndarray
        Voxel -> RAS world (mm) of the mask's grid.
    mask : (X, Y, Z) bool ndarray
        Voxels whose displacement is averaged.

    Returns
    -------
    (n_vol,) ndarray
        ``mean ||M p - p||`` over the mask, per transform.
    """
    ijk = np.argwhere(mask).astype(np.float64)
    pts = ijk @ affine[:3, :3].T + affine[:3, 3]
    out = np.empty(len(matrices))
    for v, m in enumerate(matrices):
        d = pts @ (m[:3, :3] - np.eye(3)).T + m[:3, 3]
        out[v] = np.linalg.norm(d, axis=1).mean()
    return out


def _central_region(shape: tuple[int, ...]) -> np.ndarray:
    region = np.zeros(shape, dtype=bool)
    region[tuple(slice(s // 4, max(s - s // 4, s // 4 + 1)) for s in shape)] = True
    return region


def _euler_matrix(parameters: ArrayLike, fixed_parameters: ArrayLike) -> np.ndarray:
    tr = sitk.Euler3DTransform()
    tr.SetFixedParameters(tuple(float(x) for x in fixed_parameters))
    tr.SetParameters(tuple(float(x) for x in parameters))
    return transform_to_matrix(tr)


def _itk_reason(exc: RuntimeError) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    detail = next((ln for ln in lines if "itk::ERROR" in ln), lines[-1] if lines else "")
    return f"registration failed: {detail[:200] or 'SimpleITK error'}"


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------


def write_motion(
    mc: MotionCorrection, xfm_path: str | Path, trace_tsv_path: str | Path
) -> tuple[Path, Path]:
    """Write the transforms (ITK text) and the displacement trace (TSV), atomically.

    The transform file holds one ``#Transform v`` block per volume
    (``Euler3DTransform_double_3_3``, LPS, parameters with 17 significant digits so that
    :func:`read_motion` gives back bit-identical matrices). ITK reads the first block with
    ``ReadTransform``; the whole list with ``TransformFileReader``.

    The trace has one row per volume: ``volume``, rotations about the RAS axes
    (``rot_x_deg``, ``rot_y_deg``, ``rot_z_deg``; see :attr:`MotionCorrection.rotations_deg`),
    displacement of the grid centre (``trans_x_mm``, ``trans_y_mm``, ``trans_z_mm``, RAS),
    ``displacement_mm`` and ``metric`` (``n/a`` for volumes not registered).

    Parameters
    ----------
    mc : MotionCorrection
        Result of :func:`motion_correct`.
    xfm_path, trace_tsv_path : str or Path
        Destinations (e.g. ``*_desc-moco_xfm.txt`` and ``*_desc-moco_motion.tsv``).

    Returns
    -------
    tuple of Path
        The two paths written.
    """
    xfm_path, trace_tsv_path = Path(xfm_path), Path(trace_tsv_path)
    lines = ["#Insight Transform File V1.0"]
    for v in range(mc.n_volumes):
        lines += [
            f"#Transform {v}",
            f"Transform: {_EULER}",
            "Parameters: " + " ".join(_num(x) for x in mc.itk_parameters[v]),
            "FixedParameters: " + " ".join(_num(x) for x in mc.itk_fixed_parameters[v]),
        ]
    with atomic_output(xfm_path) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")

    rows = ["\t".join(_TRACE_COLUMNS)]
    rot, trans = mc.rotations_deg, mc.translations_mm
    for v in range(mc.n_volumes):
        values = [*rot[v], *trans[v], mc.displacement_mm[v], mc.metric[v]]
        rows.append("\t".join([str(v), *(_cell(x) for x in values)]))
    with atomic_output(trace_tsv_path) as tmp:
        tmp.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return xfm_path, trace_tsv_path


def read_motion(xfm_path: str | Path) -> np.ndarray:
    """Read a transform file written by :func:`write_motion`.

    Parameters
    ----------
    xfm_path : str or Path
        ITK text file with one Euler3D ``#Transform v`` block per volume.

    Returns
    -------
    (n_vol, 4, 4) ndarray
        RAS matrices, reference point -> volume point (mm), bit-identical to
        :attr:`MotionCorrection.matrices`.
    """
    path = Path(xfm_path)
    if not path.exists():
        raise QMRIInputError("motion transform file not found", path)
    text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    lines = [ln.strip() for ln in text if ln.strip()]
    if not lines or not lines[0].startswith("#Insight Transform File"):
        raise QMRIInputError("not an ITK transform file", path)
    blocks: list[dict[str, str]] = []
    for ln in lines[1:]:
        if ln.startswith("#Transform"):
            expected = f"#Transform {len(blocks)}"
            if ln != expected:
                raise QMRIInputError(f"expected '{expected}', found '{ln}'", path)
            blocks.append({})
        elif blocks and ":" in ln:
            key, value = ln.split(":", 1)
            blocks[-1][key.strip()] = value.strip()
        else:
            raise QMRIInputError(f"unexpected line '{ln[:40]}'", path)
    if not blocks:
        raise QMRIInputError("no transforms in the file", path)
    matrices = []
    for v, block in enumerate(blocks):
        kind = block.get("Transform", "")
        if not kind.startswith("Euler3DTransform_"):
            raise QMRIInputError(f"transform {v} is '{kind}', expected {_EULER}", path)
        try:
            p = [float(x) for x in block["Parameters"].split()]
            f = [float(x) for x in block["FixedParameters"].split()]
        except (KeyError, ValueError):
            raise QMRIInputError(f"transform {v} has missing or bad parameters", path) from None
        if len(p) != 6 or len(f) not in (3, 4):
            raise QMRIInputError(
                f"transform {v} has {len(p)} parameters and {len(f)} fixed parameters "
                "(expected 6 and 4)",
                path,
            )
        matrices.append(_euler_matrix(p, [*f, 0.0][:4]))
    return np.stack(matrices)


def _num(x: float) -> str:
    return format(float(x), ".17g")


def _cell(x: float) -> str:
    return "n/a" if not np.isfinite(x) else format(float(x) + 0.0, ".6g")
