"""Per-session quality-control figures: maps with ROI contours, DCE curves, DWI decay, motion.

The plotting functions take arrays and write one PNG each, atomically, with matplotlib's Agg
canvas (no pyplot, no global backend switch). :func:`session_qc_figures` is the workflow step:
it reads one session's outputs (maps and sidecars, transforms, motion traces, the derived ROIs
on the baseline grid) and the raw DWI / DCE series, brings the ROIs onto each series' grid
exactly as the ROI statistics do (:func:`qmri.pipeline.rois_on_grid`), and writes under
``out_dir`` (normally ``<output_dir>/sub-<s>/qc/``):

=============================================== ==================================================
``sub-<s>_ses-<t>_desc-<fit>_montage.png``       every map of a fit (``vfa``, ``mese``, ``adc``,
                                                 ``ivim``, ``dce``) on slices through the treated
                                                 level, ROI contours, R2 and fit mask
``sub-<s>_ses-<t>_dce-curves.png``               AIF and mean ROI concentration with model curves
``sub-<s>_ses-<t>_dwi-decay.png``                mean ROI signal against b with the ADC/IVIM fits
``sub-<s>_ses-<t>_motion.png``                   motion-correction trace of every series
=============================================== ==================================================

Units follow the data contract (section 4): T1, T2, T2* in s; ADC, D, D* in mm^2/s; Ktrans
and kep in 1/min; ve, vp, f fractions; concentrations in mM; times in s; b in s/mm^2.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from qmri.errors import QMRIInputError
from qmri.io import atomic_output

log = logging.getLogger("qmri")

_DPI = 100

#: Contour / curve colour of each ROI. Pure hues that the map colour map (viridis) and the NaN
#: colour do not contain, so contours stay visible on any map.
ROI_COLOURS: dict[str, str] = {
    "tumor": "#ff0000",
    "vb_control": "#00b0f0",
    "cord_treated": "#ff00ff",
    "ctv": "#ff8c00",
    "vb_treated_nontumor": "#00ff00",
    "vb_adjacent": "#8b4513",
    "cord_adjacent": "#ffffff",
}
_FALLBACK_COLOURS = ("#ff8c00", "#00ff00", "#8b4513", "#ffffff", "#000000")

#: ROIs drawn by default (data contract section 2 names).
DEFAULT_ROIS: tuple[str, ...] = ("tumor", "vb_control", "cord_treated")

#: ROIs that define "the treated level" when slices are chosen.
TREATED_ROIS: tuple[str, ...] = ("tumor", "ctv", "vb_treated_nontumor", "cord_treated")

#: Colour of NaN voxels (failed fits, voxels outside the fit mask or the field of view).
NAN_COLOUR = "#c8c8c8"

#: Colour map of parameter maps.
MAP_CMAP = "viridis"

#: The fit mask: failed (0) and fitted (1).
_FITMASK_COLOURS = ("#000000", "#f5f5f5")

#: Smallest half-range of the motion axes (mm, deg): sub-voxel jitter is not drawn as big motion.
MOTION_MIN_RANGE_MM = 0.5
MOTION_MIN_RANGE_DEG = 0.5

_UNIT_LABELS = {"1": "fraction", "": "a.u."}

#: File suffixes back to the contract's map names (``T1map`` -> ``T1``).
_MAP_NAMES = {"T1map": "T1", "T2map": "T2", "T2starmap": "T2star", "M0map": "M0", "S0map": "S0"}


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    FigureCanvasAgg(fig)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=_DPI, metadata={"Software": None})
    return path


def roi_colour(name: str, order: int = 0) -> str:
    """Colour of an ROI's contour and curves (:data:`ROI_COLOURS`, else a fallback)."""
    return ROI_COLOURS.get(name, _FALLBACK_COLOURS[order % len(_FALLBACK_COLOURS)])


def _unit_label(name: str, unit: str) -> str:
    if name == "fitmask":
        return "fit mask"
    if name == "R2":
        return "R2 (0..1)"
    return f"{name} ({_UNIT_LABELS.get(unit, unit)})"


def robust_limits(
    values: np.ndarray, percentiles: tuple[float, float] = (2, 98)
) -> tuple[float, float]:
    """Colour limits from percentiles of the finite values (NaN ignored); (0, 1) if none."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(finite, percentiles))
    if not hi > lo:
        pad = abs(lo) * 0.05 or 1.0
        lo, hi = lo - pad, hi + pad
    return lo, hi


def slice_axis(zooms: Sequence[float]) -> int:
    """The slice axis of a grid: the one with the thickest voxels (first one on a tie)."""
    z = np.asarray(zooms, dtype=float)[:3]
    return int(np.argmax(np.round(z, 3)))


def treated_slices(
    rois: Mapping[str, np.ndarray],
    shape: tuple[int, ...],
    axis: int,
    n_slices: int = 3,
    treated: Sequence[str] = TREATED_ROIS,
) -> list[int]:
    """Up to ``n_slices`` slice indices along ``axis`` through the treated level.

    The slices span the extent of the treated ROIs (:data:`TREATED_ROIS`, else any ROI) evenly
    and always include the slice holding the most tumour (else treated-ROI) voxels; without
    any ROI voxel the central slice is used.
    """
    other = tuple(i for i in range(3) if i != axis)
    union = np.zeros(shape[:3], bool)
    for name in treated:
        if name in rois:
            union |= np.asarray(rois[name], bool)
    if not union.any():
        for mask in rois.values():
            union |= np.asarray(mask, bool)
    if not union.any():
        return [shape[axis] // 2]
    counts = union.sum(axis=other)
    present = np.flatnonzero(counts)
    focus = rois.get("tumor")
    if focus is not None and np.asarray(focus).any():
        best = int(np.argmax(np.asarray(focus, bool).sum(axis=other)))
    else:
        best = int(np.argmax(counts))
    if present.size <= n_slices:
        return [int(i) for i in present]
    picks = present[np.round(np.linspace(0, present.size - 1, n_slices)).astype(int)]
    picks = [int(i) for i in picks]
    if best not in picks:
        picks[int(np.argmin([abs(p - best) for p in picks]))] = best
    return sorted(set(picks))


def _crop_box(
    rois: Mapping[str, np.ndarray], shape: tuple[int, ...], axis: int, margin: float = 0.3
) -> tuple[slice, slice]:
    """In-plane bounding box of every ROI (plus a margin), as slices of the two other axes."""
    other = [i for i in range(3) if i != axis]
    union = np.zeros(shape[:3], bool)
    for mask in rois.values():
        union |= np.asarray(mask, bool)
    if not union.any():
        return slice(0, shape[other[0]]), slice(0, shape[other[1]])
    box = []
    for ax in other:
        idx = np.flatnonzero(union.any(axis=tuple(i for i in range(3) if i != ax)))
        lo, hi = int(idx[0]), int(idx[-1]) + 1
        pad = max(3, round(margin * (hi - lo)))
        box.append(slice(max(0, lo - pad), min(shape[ax], hi + pad)))
    return box[0], box[1]


def _plane(volume: np.ndarray, axis: int, index: int, box: tuple[slice, slice]) -> np.ndarray:
    """A 2D slice, cropped, transposed so the later grid axis runs up the image."""
    return np.take(np.asarray(volume), index, axis=axis)[box[0], box[1]].T


# --------------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------------


def map_montage(
    maps: Mapping[str, np.ndarray],
    path: str | Path,
    *,
    units: Mapping[str, str] | None = None,
    rois: Mapping[str, np.ndarray] | None = None,
    zooms: Sequence[float] = (1.0, 1.0, 1.0),
    axis: int | None = None,
    slices: Sequence[int] | None = None,
    n_slices: int = 3,
    percentiles: tuple[float, float] = (2, 98),
    n_failed: int | None = None,
    n_fitted: int | None = None,
    crop: bool = True,
    title: str = "",
) -> Path:
    """Every map of a fit on slices through the treated level, with ROI contours.

    One block of ``n_slices`` panels per map, each block with its own colour bar labelled with
    the map's unit; colour limits are the ``percentiles`` of the finite values shown, so a few
    outliers do not wash the map out. NaN voxels (failed fits, outside the fit mask or the field
    of view) are drawn in :data:`NAN_COLOUR`. A map named ``fitmask`` is drawn black (0, failed
    or not fitted) and white (1, fitted) and titled with the failed-voxel count; ``R2`` is drawn
    on a fixed 0..1 scale.

    Parameters
    ----------
    maps : mapping of str to 3D ndarray
        Map name (contract names: ``T1``, ``ADC``, ``Ktrans``, ..., ``R2``, ``fitmask``) to
        its values on one grid, in the map's unit (T1/T2 s, ADC/D/D* mm^2/s, Ktrans/kep 1/min,
        ve/vp/f fraction, R2 0..1, fitmask 0/1).
    path : str or Path
        Output PNG.
    units : mapping of str to str, optional
        Unit of each map (the sidecar's ``Units``; ``"1"`` is shown as "fraction").
    rois : mapping of str to 3D bool ndarray, optional
        ROI masks on the same grid; each is drawn as a contour in :func:`roi_colour` with a
        legend entry. They also choose the slices and the crop.
    zooms : sequence of float
        Voxel size (mm), for the aspect ratio and the slice axis.
    axis : int, optional
        Slice axis (default :func:`slice_axis`: the thickest voxels, e.g. sagittal slices of
        a sagittal spine acquisition).
    slices : sequence of int, optional
        Slice indices along ``axis`` (default :func:`treated_slices`).
    n_slices : int
        Number of slices when ``slices`` is not given.
    percentiles : (float, float)
        Colour limits of the parameter maps (percentiles of the finite shown values).
    n_failed, n_fitted : int, optional
        Voxels whose fit failed / was attempted (the sidecar's ``FailedVoxels`` and
        ``FittedVoxels``), shown in the fit-mask title; counted from the map otherwise.
    crop : bool
        Crop every slice to the ROIs' bounding box plus a margin.
    title : str
        Figure title.

    Returns
    -------
    Path
        ``path``.
    """
    if not maps:
        raise QMRIInputError("no map to draw")
    units = dict(units or {})
    rois = {k: np.asarray(v, bool) for k, v in (rois or {}).items()}
    first = np.asarray(next(iter(maps.values())))
    shape = first.shape[:3]
    for name, values in maps.items():
        if np.shape(values)[:3] != shape or np.ndim(values) != 3:
            raise QMRIInputError(f"map {name} has shape {np.shape(values)}, expected {shape}")
    for name, mask in rois.items():
        if mask.shape != shape:
            raise QMRIInputError(f"ROI {name} has shape {mask.shape}, expected {shape}")
    ax_slice = slice_axis(zooms) if axis is None else int(axis)
    picks = list(slices) if slices is not None else treated_slices(rois, shape, ax_slice, n_slices)
    box = _crop_box(rois, shape, ax_slice) if crop else (slice(None), slice(None))
    other = [i for i in range(3) if i != ax_slice]
    z = np.asarray(zooms, dtype=float)[:3]
    aspect = float(z[other[1]] / z[other[0]])
    h_vox = len(range(*box[1].indices(shape[other[1]])))
    w_vox = len(range(*box[0].indices(shape[other[0]])))
    panel_w = 1.35
    panel_h = float(np.clip(panel_w * h_vox * aspect / max(w_vox, 1), 0.8, 2.6))

    names = list(maps)
    n_blocks_row = 1 if len(names) == 1 else 2
    n_rows = int(np.ceil(len(names) / n_blocks_row))
    n_cols = n_blocks_row * len(picks)
    fig = Figure(
        figsize=(max(panel_w * n_cols + 0.9 * n_blocks_row + 0.3, 6.0), panel_h * n_rows + 0.9),
        layout="constrained",
    )
    grid = fig.add_gridspec(n_rows, n_cols)
    roi_names = list(rois)
    for m, name in enumerate(names):
        values = np.asarray(maps[name], dtype=float)
        planes = [_plane(values, ax_slice, k, box) for k in picks]
        if name == "fitmask":
            cmap = ListedColormap(list(_FITMASK_COLOURS)).with_extremes(bad=NAN_COLOUR)
            vmin, vmax = -0.5, 1.5
            if n_failed is None:
                n_failed = int(np.count_nonzero(values == 0))
            fitted = (
                n_fitted if n_fitted is not None else int(np.count_nonzero(np.isfinite(values)))
            )
            label = f"fitmask: {n_failed} failed / {fitted} fitted"
        else:
            cmap = ListedColormap(_viridis_colours()).with_extremes(bad=NAN_COLOUR)
            if name == "R2":
                vmin, vmax = 0.0, 1.0
            else:
                vmin, vmax = robust_limits(
                    np.concatenate([p.ravel() for p in planes]), percentiles
                )
            n_nan = sum(int(np.count_nonzero(~np.isfinite(p))) for p in planes)
            label = f"{name}" + (f" ({n_nan} NaN shown)" if n_nan else "")
        row, block = divmod(m, n_blocks_row)
        axes = []
        image = None
        for j, (k, plane) in enumerate(zip(picks, planes, strict=True)):
            ax = fig.add_subplot(grid[row, block * len(picks) + j])
            image = ax.imshow(
                plane, cmap=cmap, vmin=vmin, vmax=vmax, origin="lower", aspect=aspect,
                interpolation="nearest",
            )  # fmt: skip
            for r, roi in enumerate(roi_names):
                mask_plane = _plane(rois[roi], ax_slice, k, box)
                if mask_plane.any():
                    ax.contour(
                        mask_plane.astype(float), levels=[0.5], colors=[roi_colour(roi, r)],
                        linewidths=1.0, antialiased=False,
                    )  # fmt: skip
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{label if j == 0 else ''}\nslice {k}", fontsize=7, loc="left")
            axes.append(ax)
        cbar = fig.colorbar(image, ax=axes, shrink=0.9, pad=0.02, aspect=15)
        cbar.ax.tick_params(labelsize=6)
        if name == "fitmask":
            cbar.set_ticks([0, 1], labels=["failed", "fitted"])
        cbar.set_label(_unit_label(name, units.get(name, "")), fontsize=7)
    handles = [
        Line2D([], [], color=roi_colour(roi, r), lw=1.5, label=roi)
        for r, roi in enumerate(roi_names)
    ]
    handles.append(Patch(facecolor=NAN_COLOUR, edgecolor="k", label="NaN (failed / not fitted)"))
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 5), fontsize=7)
    fig.suptitle(title or "parameter maps", fontsize=9)
    return _save(fig, path)


def _viridis_colours() -> np.ndarray:
    from matplotlib import colormaps

    return colormaps[MAP_CMAP](np.linspace(0, 1, 256))


def dce_curves(
    times_s: np.ndarray,
    aif_mM: np.ndarray,
    tissue_mM: Mapping[str, np.ndarray],
    path: str | Path,
    *,
    fitted_mM: Mapping[str, np.ndarray] | None = None,
    labels: Mapping[str, str] | None = None,
    aif_fine: tuple[np.ndarray, np.ndarray] | None = None,
    title: str = "",
) -> Path:
    """The arterial input function and the mean tissue concentration of each ROI with its fit.

    Left: plasma concentration of the AIF (mM) against time (s). Right: the mean tissue
    concentration (mM) of every ROI as markers and the kinetic model's curve (e.g. the model's
    ``predict`` at the ROI's median parameters) as a line of the same colour.

    Parameters
    ----------
    times_s : (n_frames,) ndarray
        Frame times (s).
    aif_mM : (n_frames,) ndarray
        Plasma concentration of the AIF (mM) at the frame times.
    tissue_mM : mapping of str to (n_frames,) ndarray
        ROI name to its mean tissue concentration (mM); NaN frames are left out.
    path : str or Path
        Output PNG.
    fitted_mM : mapping of str to (n_frames,) ndarray, optional
        ROI name to the model curve (mM) at the frame times.
    labels : mapping of str to str, optional
        Legend text of each ROI's model curve (e.g. its median Ktrans and ve).
    aif_fine : (times s, cp mM), optional
        The AIF on the fine grid the kinetic models convolve (analytic AIFs), drawn as a thin
        line under the frame samples: a first-pass peak between frames shows there.
    title : str
        Figure title.
    """
    t = np.asarray(times_s, dtype=float)
    fig = Figure(figsize=(11.0, 3.8), layout="constrained")
    ax_aif, ax_t = fig.subplots(1, 2)
    if aif_fine is not None:
        ax_aif.plot(*aif_fine, color="0.6", lw=0.8, label="AIF, fine grid of the fit")
    ax_aif.plot(
        t, np.asarray(aif_mM, dtype=float), "o-", color="k", ms=3, lw=1.2,
        label="AIF at the frame times",
    )  # fmt: skip
    ax_aif.set_xlabel("time (s)")
    ax_aif.set_ylabel("plasma concentration Cp (mM)")
    ax_aif.set_title("arterial input function", fontsize=9)
    ax_aif.legend(fontsize=7)
    for r, (roi, curve) in enumerate(tissue_mM.items()):
        colour = roi_colour(roi, r)
        ax_t.plot(t, np.asarray(curve, dtype=float), "o", ms=3, color=colour, label=f"{roi} mean")
        if fitted_mM is not None and roi in fitted_mM:
            text = (labels or {}).get(roi, f"{roi} model")
            ax_t.plot(t, np.asarray(fitted_mM[roi], dtype=float), "-", lw=1.5, color=colour,
                      label=text)  # fmt: skip
    if not tissue_mM:
        ax_t.text(0.5, 0.5, "no ROI voxels on the DCE grid", ha="center", transform=ax_t.transAxes)
    ax_t.axhline(0, color="0.6", lw=0.5)
    ax_t.set_xlabel("time (s)")
    ax_t.set_ylabel("tissue concentration Ct (mM)")
    ax_t.set_title("ROI mean (markers) and model at ROI median parameters (lines)", fontsize=8)
    ax_t.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(title or "DCE", fontsize=9)
    return _save(fig, path)


def mean_per_shell(
    bvals: np.ndarray, signal: np.ndarray, tol: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Average a signal over the volumes of each b-value (``tol`` s/mm^2); NaN volumes ignored."""
    b = np.asarray(bvals, dtype=float)
    s = np.asarray(signal, dtype=float)
    shells = np.unique(np.round(b / tol) * tol)
    means = []
    for shell in shells:
        sel = np.abs(b - shell) <= tol / 2 + 1e-9
        vals = s[sel]
        vals = vals[np.isfinite(vals)]
        means.append(vals.mean() if vals.size else np.nan)
    return shells, np.asarray(means)


def dwi_decay(
    bvals: np.ndarray,
    signals: Mapping[str, np.ndarray],
    path: str | Path,
    *,
    b_model: np.ndarray | None = None,
    fitted: Mapping[str, Mapping[str, np.ndarray]] | None = None,
    title: str = "",
) -> Path:
    """Mean DWI signal of each ROI against b (log scale), normalised to b = 0, with the fits.

    The signal of every volume is averaged per b-value and divided by the mean at the lowest b
    (normally b = 0); the model curves are divided by the same number, so a curve that runs
    through the markers is a fit that describes the ROI. A mono-exponential ADC fitted above
    ~200 s/mm^2 runs below the low-b points by the perfusion fraction.

    Parameters
    ----------
    bvals : (n_vol,) ndarray
        b-value of each volume (s/mm^2).
    signals : mapping of str to (n_vol,) ndarray
        ROI name to its mean signal (a.u.) per volume.
    path : str or Path
        Output PNG.
    b_model : (n_b,) ndarray, optional
        b-values (s/mm^2) of the model curves (default 0 to the largest b).
    fitted : mapping of str to mapping of str to (n_b,) ndarray, optional
        ROI name to {curve label (e.g. ``"ADC 1.1e-3 mm^2/s"``): model signal (a.u.) at
        ``b_model``}; the first curve of an ROI is solid, the others dashed.
    title : str
        Figure title.
    """
    b = np.asarray(bvals, dtype=float)
    bm = np.linspace(0, b.max(), 100) if b_model is None else np.asarray(b_model, dtype=float)
    fig = Figure(figsize=(8.0, 4.2), layout="constrained")
    ax = fig.subplots()
    styles = ("-", "--", ":", "-.")
    for r, (roi, signal) in enumerate(signals.items()):
        colour = roi_colour(roi, r)
        shells, means = mean_per_shell(b, signal)
        ref = means[0]
        if not (np.isfinite(ref) and ref > 0):
            continue
        ax.semilogy(shells, means / ref, "o", ms=4, color=colour, label=f"{roi} mean")
        for c, (label, curve) in enumerate((fitted or {}).get(roi, {}).items()):
            ax.semilogy(bm, np.asarray(curve, dtype=float) / ref, styles[c % 4], color=colour,
                        lw=1.2, label=f"{roi} {label}")  # fmt: skip
    if not signals:
        ax.text(0.5, 0.5, "no ROI voxels on the DWI grid", ha="center", transform=ax.transAxes)
    ax.set_xlabel("b (s/mm$^2$)")
    ax.set_ylabel("S(b) / S(b=0)")
    ax.grid(True, which="both", lw=0.3, alpha=0.5)
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(title or "diffusion decay", fontsize=9)
    return _save(fig, path)


def read_motion_trace(path: str | Path) -> dict[str, np.ndarray]:
    """Read a ``*_motion.tsv`` of :func:`qmri.motion.write_motion` (``n/a`` becomes NaN).

    Returns
    -------
    dict of str to ndarray
        Columns ``volume``, ``rot_x_deg`` .. ``rot_z_deg`` (deg), ``trans_x_mm`` ..
        ``trans_z_mm`` (mm, RAS), ``displacement_mm`` (mm) and ``metric``.
    """
    path = Path(path)
    if not path.exists():
        raise QMRIInputError("motion trace not found", path)
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if not lines:
        raise QMRIInputError("empty motion trace", path)
    header = lines[0].split("\t")
    if "displacement_mm" not in header:
        raise QMRIInputError("motion trace lacks the column 'displacement_mm'", path)
    rows = [ln.split("\t") for ln in lines[1:]]
    try:
        cols = {
            name: np.array([np.nan if r[i] == "n/a" else float(r[i]) for r in rows])
            for i, name in enumerate(header)
        }
    except (ValueError, IndexError):
        raise QMRIInputError("motion trace has a bad row", path) from None
    return cols


def motion_trace(
    traces: Mapping[str, Mapping[str, np.ndarray]], path: str | Path, *, title: str = ""
) -> Path:
    """Per-volume motion of each motion-corrected series: one row of two panels per series.

    Left: mean displacement of the displacement region (mm, thick black) and the translation
    of the grid centre along RAS x, y, z (mm). Right: rotations about RAS x, y, z (deg). The
    volume index is the acquisition order (flip angle, echo, b-value or DCE frame).

    Parameters
    ----------
    traces : mapping of str to mapping of str to ndarray
        Series label (e.g. ``dce``) to the columns of its trace (:func:`read_motion_trace`).
    path : str or Path
        Output PNG.
    title : str
        Figure title.
    """
    if not traces:
        raise QMRIInputError("no motion trace to draw")
    n = len(traces)
    fig = Figure(figsize=(8.0, 1.9 * n + 0.6), layout="constrained")
    axes = np.atleast_2d(fig.subplots(n, 2, squeeze=False))
    for (series, cols), (ax_mm, ax_deg) in zip(traces.items(), axes, strict=True):
        vol = cols.get("volume", np.arange(len(cols["displacement_mm"])))
        ax_mm.plot(
            vol, cols["displacement_mm"], color="k", lw=2, marker=".", label="mean displacement"
        )
        for k, colour in zip("xyz", ("tab:red", "tab:green", "tab:blue"), strict=True):
            if f"trans_{k}_mm" in cols:
                ax_mm.plot(vol, cols[f"trans_{k}_mm"], color=colour, lw=1, label=f"trans {k}")
            if f"rot_{k}_deg" in cols:
                ax_deg.plot(vol, cols[f"rot_{k}_deg"], color=colour, lw=1, label=f"rot {k}")
        peak = (
            np.nanmax(cols["displacement_mm"])
            if np.isfinite(cols["displacement_mm"]).any()
            else np.nan
        )
        ax_mm.set_title(
            f"{series}: largest mean displacement {peak:.2f} mm", fontsize=8, loc="left"
        )
        ax_mm.set_ylabel("mm")
        ax_deg.set_ylabel("deg")
        for ax, floor in ((ax_mm, MOTION_MIN_RANGE_MM), (ax_deg, MOTION_MIN_RANGE_DEG)):
            lo, hi = ax.get_ylim()
            ax.set_ylim(min(lo, -floor), max(hi, floor))
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.axhline(0, color="0.6", lw=0.5)
            ax.tick_params(labelsize=7)
            ax.legend(fontsize=6, ncols=2)
    axes[-1, 0].set_xlabel("volume")
    axes[-1, 1].set_xlabel("volume")
    fig.suptitle(title or "motion correction", fontsize=9)
    return _save(fig, path)


# --------------------------------------------------------------------------------------------
# the workflow step
# --------------------------------------------------------------------------------------------


def fit_maps(prefix: str | Path) -> dict[str, Path]:
    """Maps written by :func:`qmri.pipeline.write_fit` under a prefix: contract name -> path.

    ``PREFIX_T1map.nii.gz`` is returned as ``T1`` (BIDS suffixes back to the contract names);
    ``R2`` and ``fitmask`` come last.
    """
    prefix = Path(prefix)
    found = {}
    for path in sorted(prefix.parent.glob(f"{prefix.name}_*.nii.gz")):
        suffix = path.name[len(prefix.name) + 1 : -len(".nii.gz")]
        if "_" in suffix:  # another prefix that starts with this one
            continue
        found[_MAP_NAMES.get(suffix, suffix)] = path
    order = _map_order(found)
    return {k: found[k] for k in order}


def _map_order(found: Mapping[str, Path]) -> list[str]:
    from qmri.study import FITS

    known = [_MAP_NAMES.get(s, s) for spec in FITS.values() for s in spec["suffixes"]]
    rank = {name: i for i, name in enumerate(dict.fromkeys(known))}
    tail = {"R2": 1, "fitmask": 2}
    return sorted(found, key=lambda n: (tail.get(n, 0), rank.get(n, len(rank)), n))


def _roi_medians(
    maps: Mapping[str, np.ndarray], valid: np.ndarray, roi: np.ndarray, names: Sequence[str]
) -> dict[str, float]:
    sel = roi & valid
    out = {}
    for name in names:
        if name in maps:
            values = maps[name][sel]
            values = values[np.isfinite(values)]
            out[name] = float(np.median(values)) if values.size else float("nan")
    return out


def _load_fit(prefix: Path) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]], Any]:
    from qmri.io import load_nifti, read_data, read_json, sidecar_path

    paths = fit_maps(prefix)
    if not paths:
        raise QMRIInputError("no map found for the prefix", Path(f"{prefix}_*.nii.gz"))
    maps, meta, img = {}, {}, None
    for name, path in paths.items():
        img = load_nifti(path, ndim=3)
        maps[name] = read_data(img)
        side = sidecar_path(path)
        meta[name] = read_json(side) if side.exists() else {}
    return maps, meta, img


def session_qc_figures(
    subject: str,
    session: str,
    out_dir: str | Path,
    *,
    rois: str | Path,
    session_xfm: str | Path,
    fits: Sequence[tuple[str, str | Path, str | Path]] = (),
    motion: Sequence[str | Path] = (),
    dwi: str | Path | None = None,
    dwi_moco: str | Path | None = None,
    dce: str | Path | None = None,
    dce_moco: str | Path | None = None,
    b1: str | Path | None = None,
    roi_names: Sequence[str] = DEFAULT_ROIS,
    n_slices: int = 3,
) -> list[Path]:
    """Write the QC figures of one session (the ``qc-session`` workflow step).

    ROIs are the subject's derived ROIs on the baseline grid, pulled back onto each series'
    grid through ``series_xfm`` and ``session_xfm`` by :func:`qmri.pipeline.rois_on_grid`
    (nearest neighbour), the same lookup as the ROI statistics.

    Parameters
    ----------
    subject, session : str
        Labels without ``sub-`` / ``ses-``.
    out_dir : path
        Folder of the figures (``<output_dir>/sub-<s>/qc``).
    rois : path
        ``sub-<s>/rois/sub-<s>_space-baseline_desc-rois_mask.nii.gz`` (names in the ``.tsv``
        beside it).
    session_xfm : path
        The session's ``from-ref_to-baseline`` transform.
    fits : sequence of (fit, prefix, series_xfm)
        Each fit of the session: its label (``vfa``, ``mese``, ``adc``, ``ivim``, ``dce``), the
        prefix of its maps (``.../sub-<s>_ses-<t>_desc-<fit>``; every ``PREFIX_*.nii.gz`` is
        drawn) and the transform of its series to the session reference. One montage each.
    motion : sequence of path
        ``*_desc-moco<series>_motion.tsv`` traces; one figure for all of them.
    dwi, dwi_moco : path, optional
        The raw DWI series (``.bval`` beside it) and its motion-correction transforms; with the
        ``adc`` fit (and ``ivim`` if present) they give the decay figure.
    dce, dce_moco : path, optional
        The raw DCE series (sidecar beside it) and its motion-correction transforms; with the
        ``dce`` and ``vfa`` fits (T1 map) they give the concentration-curve figure. Signal is
        converted to concentration with the options recorded in the DCE maps' sidecars.
    b1 : path, optional
        The session's TB1map, needed when the DCE fit was B1-corrected.
    roi_names : sequence of str
        ROIs drawn (those absent from the ROI table are skipped).
    n_slices : int
        Slices per map in the montages.

    Returns
    -------
    list of Path
        Figures written. A series that is absent is skipped (no figure, no error).
    """
    from qmri.pipeline import rois_on_grid

    out_dir = Path(out_dir)
    stem = f"sub-{subject}_ses-{session}"
    written: list[Path] = []
    loaded: dict[str, tuple[dict[str, np.ndarray], dict[str, dict[str, Any]], Any, Path]] = {}
    for fit, prefix, series_xfm in fits:
        maps, meta, img = _load_fit(Path(prefix))
        loaded[fit] = (maps, meta, img, Path(series_xfm))
        all_rois = rois_on_grid(
            Path(rois), img.shape, img.affine, Path(series_xfm), Path(session_xfm)
        )
        shown = {r: all_rois[r] for r in roi_names if r in all_rois}
        side = meta.get("fitmask") or next(iter(meta.values()))
        zooms = np.linalg.norm(img.affine[:3, :3], axis=0)
        written.append(
            map_montage(
                maps, out_dir / f"{stem}_desc-{fit}_montage.png",
                units={k: v.get("Units", "") for k, v in meta.items()}, rois=shown, zooms=zooms,
                n_slices=n_slices, n_failed=side.get("FailedVoxels"),
                n_fitted=side.get("FittedVoxels"), title=f"{stem} {fit}",
            )
        )  # fmt: skip
    if motion:
        traces = {_series_of_trace(Path(p)): read_motion_trace(p) for p in motion}
        written.append(
            motion_trace(traces, out_dir / f"{stem}_motion.png", title=f"{stem} motion")
        )
    if dwi is not None and "adc" in loaded:
        written.append(
            _session_dwi_decay(
                Path(dwi), None if dwi_moco is None else Path(dwi_moco), loaded, Path(rois),
                Path(session_xfm), roi_names, out_dir / f"{stem}_dwi-decay.png", stem,
            )
        )  # fmt: skip
    if dce is not None and "dce" in loaded and "vfa" in loaded:
        curves = _dce_roi_curves(
            Path(dce), None if dce_moco is None else Path(dce_moco), loaded, Path(rois),
            Path(session_xfm), None if b1 is None else Path(b1), roi_names, stem,
        )  # fmt: skip
        written.append(
            dce_curves(
                curves["times_s"], curves["aif_mM"], curves["tissue_mM"],
                out_dir / f"{stem}_dce-curves.png", fitted_mM=curves["fitted_mM"],
                labels=curves["labels"], aif_fine=curves["aif_fine"],
                title=f"{stem} {curves['title']}",
            )
        )  # fmt: skip
    return written


def _series_of_trace(path: Path) -> str:
    """``..._desc-mocodce_motion.tsv`` -> ``dce``."""
    for part in path.name.split("_"):
        if part.startswith("desc-moco"):
            return part[len("desc-moco") :]
    return path.name.removesuffix("_motion.tsv")


def _session_dwi_decay(
    dwi_path: Path, moco: Path | None, loaded, rois: Path, session_xfm: Path,
    roi_names: Sequence[str], out: Path, stem: str,
) -> Path:  # fmt: skip
    from qmri import bids
    from qmri import motion as moco_mod
    from qmri.models.diffusion import adc_signal
    from qmri.models.ivim import ivim_signal
    from qmri.pipeline import rois_on_grid

    series = bids.load_dwi(dwi_path)
    data = series.data
    if moco is not None:
        data = moco_mod.resample_series(data, series.affine, moco_mod.read_motion(moco))
    bvals = np.asarray(series.parameters["bvals"], dtype=float)
    adc_maps, _, adc_img, xfm = loaded["adc"]
    if adc_img.shape != data.shape[:3] or not np.allclose(
        adc_img.affine, series.affine, atol=1e-3
    ):
        raise QMRIInputError("the ADC maps are not on the DWI grid", dwi_path)
    masks = rois_on_grid(rois, data.shape[:3], series.affine, xfm, session_xfm)
    b_model = np.linspace(0.0, float(bvals.max()), 100)
    signals, fitted = {}, {}
    for roi in roi_names:
        mask = masks.get(roi)
        if mask is None or not mask.any():
            continue
        with np.errstate(invalid="ignore"):
            signals[roi] = np.nanmean(data[mask], axis=0)
        curves = {}
        valid = adc_maps.get("fitmask", np.ones(mask.shape)) > 0
        med = _roi_medians(adc_maps, valid, mask, ("ADC", "S0"))
        if np.isfinite([med.get("ADC", np.nan), med.get("S0", np.nan)]).all():
            curves[f"ADC fit ({med['ADC']:.3g} mm$^2$/s)"] = adc_signal(
                med["S0"], med["ADC"], b_model
            )
        if "ivim" in loaded:
            iv_maps = loaded["ivim"][0]
            iv_valid = iv_maps.get("fitmask", np.ones(mask.shape)) > 0
            med = _roi_medians(iv_maps, iv_valid, mask, ("S0", "f", "D", "Dstar"))
            if len(med) == 4 and np.isfinite(list(med.values())).all():
                curves[f"IVIM fit (f {med['f']:.2f}, D {med['D']:.3g})"] = ivim_signal(
                    med["S0"], med["f"], med["D"], med["Dstar"], b_model
                )
        fitted[roi] = curves
    return dwi_decay(bvals, signals, out, b_model=b_model, fitted=fitted,
                     title=f"{stem} DWI: ROI mean signal and fits at ROI medians")  # fmt: skip


def _dce_roi_curves(
    dce_path: Path, moco: Path | None, loaded, rois: Path, session_xfm: Path,
    b1_path: Path | None, roi_names: Sequence[str], stem: str,
) -> dict[str, Any]:  # fmt: skip
    """ROI mean concentration (mM), AIF and model curves of a session's DCE series.

    The signal is converted as the ``fit-dce`` step did it: motion-corrected with the series'
    transforms, the T1 map brought onto the DCE grid through the VFA and DCE transforms
    (trilinear), and the conversion and AIF options read from the DCE maps' sidecars.
    """
    from qmri import dce as dce_mod
    from qmri import motion as moco_mod
    from qmri.io import load_nifti, read_data
    from qmri.models import DCE_MODELS
    from qmri.pipeline import load_b1_on_grid, rois_on_grid
    from qmri.registration import read_transform, resample_linear, transform_to_matrix

    dce_maps, dce_meta, dce_img, dce_xfm = loaded["dce"]
    kinetic = next((m for m in ("Ktrans", "vp") if m in dce_meta), None)
    if kinetic is None:
        raise QMRIInputError("no Ktrans or vp map in the DCE fit", dce_path)
    opts = dce_meta[kinetic].get("ModelOptions", {})
    img = load_nifti(dce_path, ndim=4)
    data = read_data(img)
    if dce_img.shape != data.shape[:3] or not np.allclose(dce_img.affine, img.affine, atol=1e-3):
        raise QMRIInputError("the DCE maps are not on the DCE grid", dce_path)
    if moco is not None:
        data = moco_mod.resample_series(data, img.affine, moco_mod.read_motion(moco))
    times = np.asarray(opts.get("frame_times_s") or dce_meta[kinetic].get("FrameTimes"), float)
    masks = rois_on_grid(rois, data.shape[:3], img.affine, dce_xfm, session_xfm)
    masks = {r: masks[r] for r in roi_names if r in masks and masks[r].any()}
    union = np.zeros(data.shape[:3], bool)
    for mask in masks.values():
        union |= mask
    # the T1 map onto the DCE grid exactly as the fit-dce step does it
    t1_maps, _, t1_img, t1_xfm = loaded["vfa"]
    to_t1 = transform_to_matrix(read_transform(t1_xfm)) @ np.linalg.inv(
        transform_to_matrix(read_transform(dce_xfm))
    )
    t1 = resample_linear(t1_maps["T1"], t1_img.affine, data.shape[:3], img.affine, to_t1)
    b1 = None
    if opts.get("b1_corrected"):
        if b1_path is None:
            log.warning("%s: the DCE fit was B1-corrected but no B1 map was given", stem)
        else:
            b1, _ = load_b1_on_grid(b1_path, data.shape[:3], img.affine)
    conc = dce_mod.signal_to_concentration(
        data, t1, opts["flip_angle_deg"], opts["tr_s"], baseline_frames=int(opts["baseline_frames"]),
        r1=opts["r1_per_mM_per_s"], b1=b1, mask=union & np.isfinite(t1),
        skip_first_frame=bool(opts.get("baseline_skip_first_frame", False)),
    ).concentration  # fmt: skip
    if opts.get("aif") == "file":
        aif = dce_mod.read_aif_tsv(Path(opts["aif_file"]), times)
    else:
        aif = dce_mod.parker_aif(
            times, delay_s=float(opts.get("aif_delay_s", 0.0)),
            hematocrit=float(opts.get("hematocrit", dce_mod.DEFAULT_HEMATOCRIT)),
            params=opts.get("aif_parameters"),
        )  # fmt: skip
    model = DCE_MODELS[opts.get("model", "etofts")](
        times, aif, fit_delay=bool(opts.get("fit_delay"))
    )
    params = [p for p in ("Ktrans", "ve", "vp", "delay") if p in dce_maps]
    tissue, fitted, labels, medians = {}, {}, {}, {}
    valid = dce_maps.get("fitmask", np.ones(union.shape)) > 0
    for roi, mask in masks.items():
        with np.errstate(invalid="ignore"):
            tissue[roi] = np.nanmean(conc[mask], axis=0)
        med = medians[roi] = _roi_medians(dce_maps, valid, mask, params)
        needed = [p for p in params if p != "delay"]
        if all(np.isfinite(med.get(p, np.nan)) for p in needed):
            fitted[roi] = model.predict(**med)
            labels[roi] = f"{roi} model: " + ", ".join(f"{p} {med[p]:.3g}" for p in needed)
    return {
        "times_s": times, "aif_mM": aif.cp, "tissue_mM": tissue, "fitted_mM": fitted,
        "labels": labels, "medians": medians,
        "aif_fine": None if aif.fine_times_s is None else (aif.fine_times_s, aif.fine_cp),
        "title": f"DCE ({opts.get('model', '')}, AIF {opts.get('aif', '')})",
    }  # fmt: skip


def report_overview(figures: Sequence[str | Path], out_html: str | Path) -> Path:
    """HTML holding the given PNG figures inline (base64 data URIs).

    The landing page of ``snakemake --report`` (``workflow/report/workflow.rst``) includes this
    file, so the first page of the report shows the key figures without a click; a report is
    one self-contained file, hence inline images rather than links.

    Parameters
    ----------
    figures : sequence of path
        PNG files, shown in this order with their file names as captions.
    out_html : path
        The HTML snippet to write (atomically).
    """
    import base64
    import html

    parts = []
    for figure in figures:
        path = Path(figure)
        if not path.is_file():
            raise QMRIInputError("figure not found for the report overview", path)
        # lines of 76 characters: reStructuredText refuses lines over 10 000 characters, and
        # URL parsing drops the newlines again
        data = base64.encodebytes(path.read_bytes()).decode("ascii").strip()
        name = html.escape(path.name)
        parts.append(
            f'<figure style="margin:1em 0"><img style="max-width:100%" alt="{name}" '
            f'src="data:image/png;base64,{data}"/><figcaption>{name}</figcaption></figure>'
        )
    out = Path(out_html)
    with atomic_output(out) as tmp:
        tmp.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return out
