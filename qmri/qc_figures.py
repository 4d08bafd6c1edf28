"""Per-session quality-control figures: maps with ROI contours, DCE curves, DWI decay, motion.

The plotting functions take arrays and write one PNG each, atomically, with matplotlib's Agg
canvas (no pyplot, no global backend switch). The workflow step that feeds them is
:func:`qmri.steps.qc.qc_session`: it reads one session's outputs and raw series, brings the
ROIs onto each series' grid exactly as the ROI statistics do
(:func:`qmri.roimask.rois_on_grid`), prepares the DCE data with the fit's own code, and writes
under ``<output_dir>/sub-<s>/qc/ses-<t>/``:

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
