"""Steps ``qc_session`` and ``report_overview``: the figures that show what was fitted.

A session's QC figures (drawn by :mod:`qmri.qc_figures`): one montage per fit with ROI
contours, the motion traces, the DWI decay per ROI with the ADC/IVIM curves at the ROI medians
and the DCE curves. The DCE curves are computed with the fit's own code: the request is built
by :func:`qmri.steps.fit.fit_request`, the concentration, the T1 lookup (nearest neighbour)
and the AIF (Parker or the measured aorta curve) come from :func:`qmri.preprocess.dce_inputs`
and the model curve from the configured kinetic model's ``predict`` at the ROI's median
fitted parameters (:func:`dce_qc_curves`), so the figure cannot drift from the fit.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qmri.errors import QMRIInputError
from qmri.io import atomic_output
from qmri.maps import FitMaps, param_of_suffix, read_fit
from qmri.models.diffusion import adc_signal
from qmri.models.ivim import ivim_signal
from qmri.preprocess import apply_motion, dce_inputs
from qmri.qc_figures import (
    DEFAULT_ROIS,
    dce_curves,
    dwi_decay,
    map_montage,
    motion_trace,
    read_motion_trace,
)
from qmri.registry import FITS, FitRequest
from qmri.roimask import rois_on_grid
from qmri.steps.fit import fit_request

__all__ = ["dce_qc_curves", "qc_session", "write_report_overview"]

#: Slices per map in the montages.
MONTAGE_SLICES = 3


def _fit_files(prefix: Path) -> list[str]:
    """Contract names of the maps under ``prefix`` (parameters first, ``R2``, ``fitmask``)."""
    names = []
    for path in sorted(prefix.parent.glob(f"{prefix.name}_*.nii.gz")):
        suffix = path.name[len(prefix.name) + 1 : -len(".nii.gz")]
        if "_" not in suffix:  # not another prefix that starts with this one
            names.append(param_of_suffix(suffix))
    return names


def _load_fit(fit: str, prefix: Path, config: Mapping[str, Any]) -> FitMaps:
    """The maps of a fit in registry order (R2 and fitmask last)."""
    order = [m.param for m in FITS[fit].maps(config)]
    present = set(_fit_files(prefix))
    names = [n for n in order if n in present] + sorted(present - set(order))
    if not names:
        raise QMRIInputError("no map found for the prefix", Path(f"{prefix}_*.nii.gz"))
    return read_fit(prefix, names)


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


def _series_of_trace(path: Path) -> str:
    """``..._desc-mocodce_motion.tsv`` -> ``dce``."""
    for part in path.name.split("_"):
        if part.startswith("desc-moco"):
            return part[len("desc-moco") :]
    return path.name.removesuffix("_motion.tsv")


def dce_qc_curves(
    *, request: FitRequest, kinetic: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray]
) -> dict[str, Any]:
    """ROI mean concentration (mM), the AIF and the model curves of a session's DCE fit.

    Parameters
    ----------
    request : FitRequest
        The DCE fit's request (:func:`qmri.steps.fit.fit_request`): the same data, T1, B1,
        labels and options as the fit had.
    kinetic : mapping of str to ndarray
        The fitted maps on the DCE grid (``Ktrans`` ... and ``fitmask``).
    masks : mapping of str to ndarray of bool
        ROI masks on the DCE grid; empty ones are skipped.

    Returns
    -------
    dict
        ``times_s``, ``aif_mM`` (plasma concentration at the frames), ``aif_fine`` (the fine
        grid the model convolves, or None), ``tissue_mM`` (ROI mean concentration),
        ``fitted_mM`` (model curve at the ROI's median parameters), ``labels``, ``medians``,
        ``title``.
    """
    from qmri.models.dce import kinetic_model

    options = request.options
    inputs = dce_inputs(request)
    model = kinetic_model(
        inputs, model=options["model"], method=options["method"], fit_delay=options["fit_delay"]
    )
    # what predict takes: the fitted parameters (and the delay when it was fitted)
    needed = [*model.base_params, *(["delay"] if "delay" in model.param_names else [])]
    conc = inputs.concentration
    valid = np.asarray(kinetic.get("fitmask", np.ones(conc.shape[:3]))) > 0
    tissue, fitted, labels, medians = {}, {}, {}, {}
    for roi, mask in masks.items():
        if not mask.any():
            continue
        with np.errstate(invalid="ignore"):
            tissue[roi] = np.nanmean(conc[mask], axis=0)
        med = medians[roi] = _roi_medians(kinetic, valid, mask, model.param_names)
        if all(np.isfinite(med.get(p, np.nan)) for p in needed):
            fitted[roi] = np.asarray(model.predict({p: med[p] for p in needed}), dtype=float)
            shown = [p for p in model.param_names if p != "delay" and p in med]
            labels[roi] = f"{roi} model: " + ", ".join(f"{p} {med[p]:.3g}" for p in shown)
    aif = inputs.aif
    return {
        "times_s": np.asarray(inputs.times_s, dtype=float), "aif_mM": np.asarray(aif.cp),
        "aif_fine": None if aif.fine_times_s is None else (aif.fine_times_s, aif.fine_cp),
        "tissue_mM": tissue, "fitted_mM": fitted, "labels": labels, "medians": medians,
        "title": f"DCE ({options['model']}, AIF {options['aif']})",
    }  # fmt: skip


def _dwi_decay_figure(
    *, dwi: Sequence[Path], dwi_moco: Path | None, fits: Mapping[str, tuple[FitMaps, Path]],
    rois: Path, session_xfm: Path, out: Path, stem: str,
) -> Path:  # fmt: skip
    series = FITS["adc"].series.load([Path(p) for p in dwi])
    data = series.data if dwi_moco is None else apply_motion(series, dwi_moco)
    bvals = np.asarray(series.parameters["bvals"], dtype=float)
    adc, xfm = fits["adc"]
    masks = rois_on_grid(rois, data.shape[:3], series.affine, xfm, session_xfm)
    b_model = np.linspace(0.0, float(bvals.max()), 100)
    signals, fitted = {}, {}
    for roi in DEFAULT_ROIS:
        mask = masks.get(roi)
        if mask is None or not mask.any():
            continue
        with np.errstate(invalid="ignore"):
            signals[roi] = np.nanmean(data[mask], axis=0)
        curves = {}
        valid = adc.maps.get("fitmask", np.ones(mask.shape)) > 0
        med = _roi_medians(adc.maps, valid, mask, ("ADC", "S0"))
        if np.isfinite([med.get("ADC", np.nan), med.get("S0", np.nan)]).all():
            curves[f"ADC fit ({med['ADC']:.3g} mm$^2$/s)"] = adc_signal(
                med["S0"], med["ADC"], b_model
            )
        if "ivim" in fits:
            iv_maps = fits["ivim"][0].maps
            iv_valid = iv_maps.get("fitmask", np.ones(mask.shape)) > 0
            med = _roi_medians(iv_maps, iv_valid, mask, ("S0", "f", "D", "Dstar"))
            if len(med) == 4 and np.isfinite(list(med.values())).all():
                curves[f"IVIM fit (f {med['f']:.2f}, D {med['D']:.3g})"] = ivim_signal(
                    med["S0"], med["f"], med["D"], med["Dstar"], b_model
                )
        fitted[roi] = curves
    return dwi_decay(bvals, signals, out, b_model=b_model, fitted=fitted,
                     title=f"{stem} DWI: ROI mean signal and fits at ROI medians")  # fmt: skip


def qc_session(
    *,
    subject: str,
    session: str,
    config: Mapping[str, Any],
    fits: Sequence[tuple[str, Path, Path]],
    rois: Path,
    session_xfm: Path,
    motion_traces: Sequence[Path],
    dwi: Sequence[Path],
    dwi_moco: Path | None,
    dce: Mapping[str, Any] | None,
    out_dir: Path,
) -> list[Path]:
    """Write the QC figures of one session into ``out_dir``.

    Parameters
    ----------
    subject, session : str
        Labels without ``sub-`` / ``ses-``.
    config : mapping
        The validated workflow config (each fit's maps and the DCE options).
    fits : sequence of (fit, prefix, series_xfm)
        Each fit of the session: its registry name, the prefix of its maps and its series
        transform. One montage each.
    rois : path
        The subject's derived ROIs on the baseline grid.
    session_xfm : path
        The session's ``from-ref_to-baseline`` transform.
    motion_traces : sequence of path
        ``*_desc-moco<series>_motion.tsv`` traces; one figure for all of them.
    dwi, dwi_moco : sequence of path, path or None
        The raw DWI series (empty: no DWI figure) and its motion-correction transforms (None:
        the series was fitted as acquired).
    dce : mapping or None
        The keyword arguments of :func:`qmri.steps.fit.fit_request` for the session's DCE fit
        (``series`` as raw files and ``moco_xfm`` besides, None when the series was fitted as
        acquired), or None: no DCE figure.
    out_dir : path
        Folder of the figures.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"sub-{subject}_ses-{session}"
    written: list[Path] = []
    loaded: dict[str, tuple[FitMaps, Path]] = {}
    for fit, prefix, series_xfm in fits:
        maps = _load_fit(fit, Path(prefix), config)
        loaded[fit] = (maps, Path(series_xfm))
        img = maps.image
        all_rois = rois_on_grid(rois, img.shape, img.affine, Path(series_xfm), session_xfm)
        shown = {r: all_rois[r] for r in DEFAULT_ROIS if r in all_rois}
        side = maps.sidecars.get("fitmask") or next(iter(maps.sidecars.values()))
        written.append(
            map_montage(
                maps.maps, out_dir / f"{stem}_desc-{fit}_montage.png", units=maps.units,
                rois=shown, zooms=np.linalg.norm(img.affine[:3, :3], axis=0),
                n_slices=MONTAGE_SLICES, n_failed=side.get("FailedVoxels"),
                n_fitted=side.get("FittedVoxels"), title=f"{stem} {fit}",
            )
        )  # fmt: skip
    if motion_traces:
        traces = {_series_of_trace(Path(p)): read_motion_trace(p) for p in motion_traces}
        written.append(
            motion_trace(traces, out_dir / f"{stem}_motion.png", title=f"{stem} motion")
        )
    if dwi and "adc" in loaded:
        written.append(
            _dwi_decay_figure(
                dwi=dwi, dwi_moco=None if dwi_moco is None else Path(dwi_moco), fits=loaded, rois=rois,
                session_xfm=session_xfm, out=out_dir / f"{stem}_dwi-decay.png", stem=stem,
            )
        )  # fmt: skip
    if dce is not None and "dce" in loaded:
        kinetic, dce_xfm = loaded["dce"]
        series = FITS["dce"].series.load([Path(p) for p in dce["series"]])
        moco = dce["moco_xfm"]
        request = fit_request(
            series=series, data=series.data if moco is None else apply_motion(series, Path(moco)),
            options=dce["options"], b1=dce["b1"], inputs=dce["inputs"], series_xfm=dce_xfm,
        )  # fmt: skip
        masks = rois_on_grid(rois, series.shape3d, series.affine, dce_xfm, session_xfm)
        curves = dce_qc_curves(
            request=request, kinetic=kinetic.maps,
            masks={r: masks[r] for r in DEFAULT_ROIS if r in masks},
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


def write_report_overview(*, figures: Sequence[Path], out_html: Path) -> Path:
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
