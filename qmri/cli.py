"""The ``qmri`` command line.

``qmri fit ...`` fits one model to plain NIfTI files (data contract section 6);
``qmri phantom`` writes the spine digital reference object; ``qmri pipeline <step>`` are the
steps the Snakemake workflow runs. Bad input exits with status 2 and one line on stderr that
names the file and the problem.
"""

from __future__ import annotations

import argparse
import logging
import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qmri import __version__
from qmri.errors import QMRIInputError


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got '{text}'"
        ) from None


def _sidecar_value(data: Path, key: str, given: Any, override: bool) -> Any:
    """A parameter from the flag, else from the BIDS sidecar next to DATA; never silently both."""
    from qmri.io import read_json, sidecar_path

    side = sidecar_path(data)
    meta = read_json(side) if side.exists() else {}
    from_sidecar = meta.get(key)
    if given is None:
        if from_sidecar is None:
            raise QMRIInputError(f"no '{key}' given on the command line or in {side.name}", data)
        return from_sidecar
    if from_sidecar is not None and not override:
        a = np.atleast_1d(np.asarray(given, dtype=float))
        b = np.atleast_1d(np.asarray(from_sidecar, dtype=float))
        if a.shape != b.shape or not np.allclose(a, b, rtol=1e-6):
            raise QMRIInputError(
                f"command-line {key} {a.tolist()} disagrees with the sidecar's {b.tolist()} "
                "(pass --override-sidecar to use the command line)",
                side,
            )
    return given


def _load_4d(path: Path):
    from qmri.io import load_nifti, read_data

    img = load_nifti(path, ndim=4)
    return img, read_data(img)


def _load_mask(path: Path | None, shape: tuple[int, ...]) -> np.ndarray | None:
    from qmri.io import load_nifti, read_data

    if path is None:
        return None
    img = load_nifti(path, ndim=3)
    if img.shape != shape:
        raise QMRIInputError(f"mask shape {img.shape} does not match the data's {shape}", path)
    return read_data(img) > 0


def _cmd_fit(args: argparse.Namespace) -> None:
    from qmri import models, pipeline

    data_path = Path(args.data)
    img, data = _load_4d(data_path)
    mask = _load_mask(args.mask, img.shape[:3])
    acq: dict[str, Any] = {}
    sources = [data_path]
    if args.model_kind == "t1-vfa":
        flips = _sidecar_value(data_path, "FlipAngle", args.flip_angles, args.override_sidecar)
        tr = _sidecar_value(data_path, "RepetitionTimeExcitation", args.tr, args.override_sidecar)
        model = models.VFAModel(
            np.atleast_1d(flips).tolist(), float(np.squeeze(tr)), method=args.method
        )
        _check_volumes(data_path, data, len(np.atleast_1d(flips)), "flip angles")
        b1 = None
        if args.b1 is not None:
            b1, convention = pipeline.load_b1_on_grid(Path(args.b1), img.shape[:3], img.affine)
            acq["B1MapConvention"] = convention
            sources.append(Path(args.b1))
        fit = model.fit(data, mask=mask, b1=b1)
        acq.update(FlipAngle=np.atleast_1d(flips).tolist(), RepetitionTimeExcitation=tr)
    elif args.model_kind in ("t2", "t2star"):
        tes = _sidecar_value(data_path, "EchoTime", args.echo_times, args.override_sidecar)
        _check_volumes(data_path, data, len(np.atleast_1d(tes)), "echo times")
        model = models.MonoExponentialModel(
            np.atleast_1d(tes).tolist(),
            drop_first_echo=args.drop_first_echo,
            quantity="T2" if args.model_kind == "t2" else "T2star",
            noise_floor=args.noise_floor,
        )
        fit = model.fit(data, mask=mask)
        acq["EchoTime"] = np.atleast_1d(tes).tolist()
    elif args.model_kind == "t1-ir":
        tis = _sidecar_value(
            data_path, "InversionTime", args.inversion_times, args.override_sidecar
        )
        _check_volumes(data_path, data, len(np.atleast_1d(tis)), "inversion times")
        model = models.InversionRecoveryModel(np.atleast_1d(tis).tolist(), tr_s=args.tr)
        fit = model.fit(data, mask=mask)
        acq["InversionTime"] = np.atleast_1d(tis).tolist()
    elif args.model_kind == "dce":
        _fit_dce(args, data_path, img, data, mask)
        return
    else:  # dwi
        from qmri.bids import read_bvals, read_bvecs

        bvals = read_bvals(Path(args.bval))
        _check_volumes(data_path, data, bvals.size, f"b-values in {Path(args.bval).name}")
        if args.model == "adc":
            model = models.ADCModel(bvals.tolist(), b_min=args.b_min, b_max=args.b_max)
        elif args.model == "ivim":
            model = models.IVIMModel(
                bvals.tolist(), b_threshold=args.b_threshold, method=args.ivim_method
            )
        else:
            if args.bvec is None:
                raise QMRIInputError("--model dti needs --bvec", data_path)
            bvecs = read_bvecs(Path(args.bvec), bvals.size)
            model = models.DTIModel(bvals.tolist(), bvecs)
            sources.append(Path(args.bvec))
        fit = model.fit(data, mask=mask)
        acq["bvals"] = bvals.tolist()
        sources.append(Path(args.bval))
    written = pipeline.write_fit(
        fit, img.affine, Path(args.out), sources=sources, acquisition=acq, bids_suffixes=False
    )
    for path in written:
        print(path)


def _fit_dce(args: argparse.Namespace, data_path: Path, img, data, mask) -> None:
    """``qmri fit dce``: signal (or concentration) to Tofts / extended Tofts / Patlak maps."""
    from qmri import pipeline
    from qmri.io import load_nifti, read_data, read_json, sidecar_path

    side = sidecar_path(data_path)
    meta = read_json(side) if side.exists() else {}
    if args.times is not None:
        try:
            times = np.loadtxt(args.times, dtype=float, ndmin=1)
        except ValueError:
            raise QMRIInputError(
                "frame times must be one number (s) per line", args.times
            ) from None
    else:
        times = pipeline.dce_frame_times(meta, data.shape[-1], side)
    if times.size != data.shape[-1]:
        raise QMRIInputError(f"{times.size} frame times for {data.shape[-1]} volumes", args.times)
    kwargs: dict[str, Any] = {}
    sources = [data_path]
    if not args.concentration:
        if args.t1 is None:
            raise QMRIInputError(
                "--t1 T1map.nii.gz is needed (or pass --concentration)", data_path
            )
        t1_img = load_nifti(args.t1, ndim=3)
        if t1_img.shape != img.shape[:3] or not np.allclose(t1_img.affine, img.affine, atol=1e-3):
            raise QMRIInputError(
                f"T1 map grid {t1_img.shape} differs from the DCE grid {img.shape[:3]}", args.t1
            )
        flip = _sidecar_value(data_path, "FlipAngle", args.flip_angle, args.override_sidecar)
        tr = _sidecar_value(data_path, "RepetitionTimeExcitation", args.tr, args.override_sidecar)
        baseline = args.baseline_frames or meta.get("BaselineFrames")
        if baseline is None:
            raise QMRIInputError(
                "no --baseline-frames and no BaselineFrames in the sidecar", data_path
            )
        kwargs.update(
            t1_s=read_data(t1_img), flip_angle_deg=float(flip), tr_s=float(tr),
            baseline_frames=int(baseline), r1=args.r1, agent=meta.get("ContrastAgent"),
            field_strength_t=meta.get("MagneticFieldStrength"),
        )  # fmt: skip
        sources.append(args.t1)
    if args.b1 is not None:
        kwargs["b1"], _ = pipeline.load_b1_on_grid(args.b1, img.shape[:3], img.affine)
    if args.aif_mask is not None:  # a measured AIF: the mean blood curve over the mask
        kwargs["aif_mask"] = _load_mask(Path(args.aif_mask), img.shape[:3])
        args.aif = "measured"
    written = pipeline.fit_dce(
        data, img.affine, times, Path(args.out), model=args.model, method=args.method,
        concentration=args.concentration, aif=args.aif, hematocrit=args.hematocrit,
        bolus_arrival_s=args.bolus_arrival, fit_delay=args.fit_delay, mask=mask,
        sources=sources, bids_suffixes=False, **kwargs,
    )  # fmt: skip
    for path in written:
        print(path)


def _check_volumes(path: Path, data: np.ndarray, n: int, what: str) -> None:
    if data.shape[-1] != n:
        raise QMRIInputError(f"data has {data.shape[-1]} volumes but {n} {what} were given", path)


def _cmd_phantom(args: argparse.Namespace) -> None:
    from qmri.phantom import write_phantom_dataset

    out = write_phantom_dataset(
        Path(args.outdir),
        n_subjects=args.subjects,
        sessions=tuple(args.sessions.split(",")),
        seed=args.seed,
        small=args.small,
        extra_series=tuple(v for v in args.extra_series.split(",") if v),
    )
    print(out)


def _map_specs(items: Sequence[Sequence[str]] | None) -> list[tuple[str, Path, Path, Path]]:
    """``--map NAME MAP FITMASK SERIES_XFM`` values as (name, paths...) tuples."""
    return [(n, Path(m), Path(f), Path(x)) for n, m, f, x in items or []]


def _named_numbers(pairs: Sequence[Sequence[str]] | None, what: str) -> dict[str, float]:
    """``NAME VALUE`` option pairs as a name -> number mapping; a non-number is an error."""
    out = {}
    for name, value in pairs or []:
        try:
            out[name] = float(value)
        except ValueError:
            raise QMRIInputError(f"{what} of {name} must be a number, got '{value}'") from None
    return out


def _registration_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "bins": args.bins,
        "iterations": args.iterations,
        "shrink_factors": tuple(args.shrink_factors),
        "smoothing_sigmas_mm": tuple(args.smoothing_sigmas_mm),
        "sampling_fraction": args.sampling_fraction,
        "learning_rate": args.learning_rate,
    }


def _cmd_pipeline(args: argparse.Namespace) -> None:
    from qmri import pipeline

    step = args.step
    if step in ("fit-vfa", "fit-t1-ir", "fit-t2", "fit-t2star", "fit-adc"):  # fit, register
        moco = (args.moco_xfm, args.moco_trace) if args.moco_xfm else None
        if step == "fit-vfa":
            kind, series = "VFA", [Path(x) for x in args.vfa]
            pipeline.fit_vfa(
                series, Path(args.out), b1_path=args.b1, method=args.method, moco=moco
            )
        elif step == "fit-t1-ir":
            kind, series = "IRT1", [Path(x) for x in args.inversions]
            pipeline.fit_inversion_recovery(series, Path(args.out), moco=moco)
        elif step in ("fit-t2", "fit-t2star"):
            kind, series = {"fit-t2": "MESE", "fit-t2star": "MEGRE"}[step], args.echoes
            pipeline.fit_multi_echo(
                [Path(x) for x in series], Path(args.out), moco=moco,
                quantity="T2" if kind == "MESE" else "T2star",
                drop_first_echo=args.drop_first_echo, noise_floor=args.noise_floor,
            )  # fmt: skip
        else:
            kind, series = "dwi", [Path(args.dwi)]
            pipeline.fit_adc(
                series[0], Path(args.out), b_min=args.b_min, b_max=args.b_max, moco=moco
            )
        pipeline.register_series(
            kind, series, Path(args.reference), Path(args.xfm),
            options=_registration_options(args), max_metric=args.max_metric, qc_png=args.qc,
        )  # fmt: skip
    elif step == "fit-dce":
        from qmri.registration import read_transform, transform_to_matrix

        dce = Path(args.dce)
        pipeline.register_series(
            "dce", [dce], Path(args.reference), Path(args.xfm),
            options=_registration_options(args), max_metric=args.max_metric, qc_png=args.qc,
        )  # fmt: skip
        # a DCE-grid point -> reference point (inverse of the DCE transform) -> T1-grid point
        to_t1 = transform_to_matrix(read_transform(args.t1_xfm)) @ np.linalg.inv(
            transform_to_matrix(read_transform(args.xfm))
        )
        aif_labels = None
        if args.aif_labels is not None:  # a DCE-grid point -> reference -> baseline
            if args.session_xfm is None:
                raise QMRIInputError("--aif-labels needs --session-xfm (reference -> baseline)")
            to_baseline = pipeline.series_to_baseline_matrix(
                Path(args.xfm), Path(args.session_xfm)
            )
            aif_labels = (Path(args.aif_labels), to_baseline)
        pipeline.fit_dce_series(
            dce, Path(args.t1), Path(args.out), t1_to_dce_ras=to_t1, b1_path=args.b1,
            model=args.model, hematocrit=args.hematocrit, r1=args.r1, fit_delay=args.fit_delay,
            method=args.method, aif_labels=aif_labels,
            moco=(args.moco_xfm, args.moco_trace) if args.moco_xfm else None,
        )  # fmt: skip
    elif step == "fit-ivim":
        pipeline.fit_ivim(
            Path(args.dwi), Path(args.out), b_threshold=args.b_threshold, method=args.method,
            moco_xfm=args.moco_xfm,
        )  # fmt: skip
    elif step == "register-session":
        focus = None
        if args.focus_labels is not None:
            if args.participants is None or args.subject is None:
                raise QMRIInputError("--focus-labels needs --participants and --subject")
            focus = (args.focus_labels, args.participants, args.subject)
        pipeline.register_session(
            Path(args.reference), Path(args.baseline), Path(args.out),
            options=_registration_options(args), max_metric=args.max_metric, focus=focus,
            qc_png=args.qc,
        )  # fmt: skip
    elif step == "derive-rois":
        pipeline.derive_subject_rois(
            Path(args.dseg), Path(args.reference), Path(args.participants), args.subject,
            Path(args.out),
        )  # fmt: skip
    elif step == "session-roistats":
        pipeline.session_roistats(
            _map_specs(args.map), Path(args.rois), Path(args.session_xfm), Path(args.out)
        )
    elif step == "subject-tables":
        pipeline.subject_tables(
            [Path(x) for x in args.sessions], Path(args.sessions_tsv), args.subject,
            Path(args.out_roistats), Path(args.out_response),
            prm_csvs=[Path(x) for x in args.prm], out_prm=args.out_prm,
            xfm_sidecars=[Path(x) for x in args.xfm_sidecars],
            out_registration=args.out_registration,
        )  # fmt: skip
    elif step == "baseline-space":
        pipeline.baseline_space(
            _map_specs(args.map), Path(args.session_xfm), _map_specs(args.baseline_map),
            Path(args.baseline_session_xfm), Path(args.reference), Path(args.rois),
            _named_numbers(args.threshold, "threshold"),
            Path(args.out_dir), Path(args.out), args.stem, erode_voxels=args.erode_voxels,
        )  # fmt: skip
    elif step == "cohort-analyses":
        thresholds = _named_numbers(args.flag, "flag threshold")
        pipeline.cohort_analyses(
            Path(args.roistats), Path(args.response), Path(args.participants),
            Path(args.out_dir), flag_thresholds=thresholds or None, min_events=args.min_events,
        )  # fmt: skip
    elif step == "cohort-table":
        pipeline.cohort_tables([Path(x) for x in args.tables], Path(args.out))
    elif step == "subject-dose":
        from qmri import cohort

        cohort.subject_dose(
            args.subject, Path(args.dose), Path(args.rois), Path(args.participants),
            Path(args.sessions_tsv), args.baseline_session,
            [Path(x) for x in args.baseline_grid_dirs], Path(args.out_stats), Path(args.out_bins),
            bin_edges_gy=args.bin_edges, eqd2_bin_edges_gy=args.eqd2_bin_edges,
            alpha_beta_gy=_named_numbers(args.alpha_beta, "alpha/beta") or None,
            hot_volume_cc=args.hot_volume_cc, binned_rois=args.binned_rois,
        )  # fmt: skip
    elif step == "cohort-figures":
        from qmri import cohort

        cohort.cohort_figures(
            Path(args.roistats), Path(args.response), Path(args.out_dir),
            trajectory_rois=args.trajectory_rois, waterfall_rois=args.waterfall_rois,
            maps=args.maps, sessions=args.sessions, km_csv=args.km, km=args.km_outcomes,
            flag_thresholds=_named_numbers(args.flag, "flag threshold") or None,
        )  # fmt: skip
    elif step == "qc-session":
        from qmri.qc_figures import session_qc_figures

        session_qc_figures(
            args.subject, args.session, Path(args.out_dir), rois=Path(args.rois),
            session_xfm=Path(args.session_xfm),
            fits=[(f, Path(p), Path(x)) for f, p, x in args.fit or []],
            motion=[Path(x) for x in args.motion], dwi=args.dwi, dwi_moco=args.dwi_moco,
            dce=args.dce, dce_moco=args.dce_moco, b1=args.b1, roi_names=args.roi_names,
            n_slices=args.slices,
        )  # fmt: skip
    elif step == "report-overview":
        from qmri.qc_figures import report_overview

        report_overview([Path(f) for f in args.figures], Path(args.out))
    elif step == "describe-output":
        pipeline.describe_output(Path(args.output_dir), args.bids_dir, args.config_sha256)


def _add_registration_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bins", type=int, default=32, help="mutual-information histogram bins")
    p.add_argument("--iterations", type=int, default=200, help="iterations per level")
    p.add_argument("--shrink-factors", type=int, nargs="+", default=[2, 1])
    p.add_argument("--smoothing-sigmas-mm", type=float, nargs="+", default=[2.0, 0.0])
    p.add_argument("--sampling-fraction", type=float, default=0.3, help="share of voxels")
    p.add_argument("--learning-rate", type=float, default=0.5, help="first step (mm)")
    p.add_argument(
        "--max-metric",
        type=float,
        default=None,
        help="flag a registration whose final metric is above this value",
    )
    p.add_argument("--qc", type=Path, help="write a checkerboard PNG of the registration")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``qmri`` command."""
    parser = argparse.ArgumentParser(
        prog="qmri", description="Quantitative MRI for spinal metastases treated with SBRT."
    )
    parser.add_argument("--version", action="version", version=f"qmri {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", required=True)

    # qmri fit ...
    fit = sub.add_parser("fit", help="fit a model to NIfTI files (data contract section 6)")
    fit_sub = fit.add_subparsers(dest="model_kind", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("data", help="4D NIfTI; the last axis holds the acquisitions")
        p.add_argument("--mask", type=Path, help="3D mask; voxels outside are NaN")
        p.add_argument("--out", required=True, help="output prefix: PREFIX_<param>.nii.gz")
        p.add_argument(
            "--override-sidecar",
            action="store_true",
            help="use command-line values where they disagree with the sidecar",
        )
        p.set_defaults(func=_cmd_fit)

    t1 = fit_sub.add_parser("t1-vfa", help="T1 (s) from variable flip angles")
    common(t1)
    t1.add_argument(
        "--flip-angles", type=_floats, help="nominal flip angles (deg), comma-separated"
    )
    t1.add_argument("--tr", type=float, help="repetition time (s)")
    t1.add_argument("--b1", help="TB1map (percent, or ratio if its median is near 1)")
    t1.add_argument("--method", choices=["linear", "nlls"], default="nlls")
    for kind, label in (
        ("t2", "T2 (s) from multi-echo spin echo"),
        ("t2star", "T2* (s) from multi-echo gradient echo"),
    ):
        t2 = fit_sub.add_parser(kind, help=label)
        common(t2)
        t2.add_argument("--echo-times", type=_floats, help="echo times (s), comma-separated")
        t2.add_argument("--drop-first-echo", action="store_true")
        t2.add_argument(
            "--noise-floor",
            action="store_true",
            help="fit a constant offset c >= 0 (S0 exp(-TE/T2) + c)",
        )
    ir = fit_sub.add_parser("t1-ir", help="T1 (s) from magnitude inversion recovery")
    common(ir)
    ir.add_argument("--inversion-times", type=_floats, help="inversion times (s), comma-separated")
    ir.add_argument(
        "--tr", type=float, help="repetition time (s), for M0 and inversion efficiency"
    )
    dwi = fit_sub.add_parser("dwi", help="ADC, IVIM (D, D*, f) or DTI (FA, MD, AD, RD)")
    common(dwi)
    dwi.add_argument("--bval", required=True, help="FSL .bval file (s/mm^2)")
    dwi.add_argument("--bvec", help="FSL .bvec file (needed for DTI)")
    dwi.add_argument("--model", choices=["adc", "ivim", "dti"], default="adc")
    dwi.add_argument(
        "--b-threshold",
        type=float,
        default=200.0,
        help="IVIM: b (s/mm^2) from which perfusion is negligible",
    )
    dwi.add_argument("--ivim-method", choices=["segmented", "full"], default="segmented")
    dwi.add_argument("--b-min", type=float, default=0.0, help="lowest b used (s/mm^2)")
    dwi.add_argument("--b-max", type=float, default=None, help="highest b used (s/mm^2)")

    dce = fit_sub.add_parser("dce", help="Tofts / extended Tofts / Patlak from DCE")
    common(dce)
    dce.add_argument("--t1", type=Path, help="pre-contrast T1 map (s) on the DCE grid")
    dce.add_argument("--flip-angle", type=float, help="flip angle (deg)")
    dce.add_argument("--tr", type=float, help="repetition time of the excitations (s)")
    dce.add_argument("--times", type=Path, help="text file: one frame time (s) per line")
    dce.add_argument("--aif", default="parker", help="'parker' or a TSV with time (s), cp (mM)")
    dce.add_argument("--model", choices=["tofts", "etofts", "patlak"], default="etofts")
    dce.add_argument("--r1", type=float, help="relaxivity (/mM/s); default from the agent table")
    dce.add_argument("--hematocrit", type=float, default=0.42)
    dce.add_argument("--b1", type=Path, help="TB1map for the flip angle")
    dce.add_argument("--baseline-frames", type=int, help="pre-contrast frames")
    dce.add_argument("--bolus-arrival", type=float, help="bolus arrival (s); default detected")
    dce.add_argument("--fit-delay", action="store_true", help="fit an arterial delay per voxel")
    dce.add_argument(
        "--method", choices=["nlls", "linear"], default="nlls",
        help="non-linear fit (default) or the closed-form Murase / Patlak estimate only",
    )  # fmt: skip
    dce.add_argument("--aif-mask", help="mask of arterial voxels: measure the AIF there")
    dce.add_argument(
        "--concentration", action="store_true", help="DATA already holds tissue concentration (mM)"
    )

    # qmri phantom
    ph = sub.add_parser("phantom", help="write the spine digital reference object (BIDS)")
    ph.add_argument("outdir")
    ph.add_argument("--subjects", type=int, default=2)
    ph.add_argument("--sessions", default="pre,fu1,fu2", help="comma-separated session labels")
    ph.add_argument("--seed", type=int, default=0)
    ph.add_argument("--small", action="store_true", help="coarse grid, for quick tests")
    ph.add_argument(
        "--extra-series", default="", help="optional series to add: IRT1 and/or MEGRE (comma)"
    )
    ph.set_defaults(func=_cmd_phantom)

    # qmri pipeline <step>: what the workflow's rules run
    pl = sub.add_parser("pipeline", help="one step of the Snakemake workflow")
    steps = pl.add_subparsers(dest="step", required=True)
    fit_help = "fit a series in its native grid and register it to the session reference"
    s = steps.add_parser("fit-vfa", help=fit_help)
    s.add_argument("--vfa", nargs="+", required=True, help="flip-<i>_VFA images")
    s.add_argument("--b1", type=Path, help="the session's TB1map")
    s.add_argument("--method", choices=["linear", "nlls"], default="nlls")
    fit_steps = [s]
    s = steps.add_parser("fit-t1-ir", help=fit_help)
    s.add_argument("--inversions", nargs="+", required=True, help="inv-<i>_IRT1 images")
    fit_steps.append(s)
    for step, series in (("fit-t2", "MESE"), ("fit-t2star", "MEGRE")):
        s = steps.add_parser(step, help=fit_help)
        s.add_argument("--echoes", nargs="+", required=True, help=f"echo-<i>_{series} images")
        s.add_argument("--drop-first-echo", action="store_true")
        s.add_argument(
            "--noise-floor", action="store_true", help="fit a constant noise floor as well"
        )
        fit_steps.append(s)
    s = steps.add_parser("fit-adc", help=fit_help)
    s.add_argument("--dwi", required=True)
    s.add_argument("--b-min", type=float, default=0.0, help="s/mm^2")
    s.add_argument("--b-max", type=float, default=None, help="s/mm^2")
    fit_steps.append(s)
    s = steps.add_parser("fit-dce", help=fit_help)
    s.add_argument("--dce", required=True)
    s.add_argument("--t1", required=True, help="the session's T1 map (from VFA)")
    s.add_argument("--t1-xfm", required=True, help="the T1 map's series -> reference xfm")
    s.add_argument("--b1", type=Path)
    s.add_argument("--model", choices=["tofts", "etofts", "patlak"], default="etofts")
    s.add_argument("--hematocrit", type=float, default=0.42)
    s.add_argument("--r1", type=float, help="relaxivity (/mM/s); default from the agent table")
    s.add_argument("--fit-delay", action="store_true")
    s.add_argument("--method", choices=["nlls", "linear"], default="nlls")
    s.add_argument("--aif-labels", help="baseline dseg: measure the AIF in its aorta label")
    s.add_argument("--session-xfm", help="the session's reference -> baseline xfm")
    fit_steps.append(s)
    for s in fit_steps:
        s.add_argument("--out", required=True, help="output prefix of the maps")
        s.add_argument("--reference", required=True, help="the session's reference image")
        s.add_argument("--xfm", required=True, help="output: series -> reference transform")
        s.add_argument(
            "--moco-xfm",
            type=Path,
            help="motion-correct the series first; output: per-volume transforms",
        )
        s.add_argument("--moco-trace", type=Path, help="output: per-volume displacement (TSV)")
        _add_registration_options(s)
    s = steps.add_parser("fit-ivim", help="IVIM maps of a DWI series (no registration)")
    s.add_argument("--dwi", required=True)
    s.add_argument("--b-threshold", type=float, default=200.0, help="s/mm^2")
    s.add_argument("--method", choices=["segmented", "full"], default="segmented")
    s.add_argument("--moco-xfm", type=Path, help="motion-correction transforms to re-apply")
    s.add_argument("--out", required=True, help="output prefix of the maps")
    s = steps.add_parser("register-session", help="register a session to the baseline")
    s.add_argument("--reference", required=True)
    s.add_argument("--baseline", required=True)
    s.add_argument("--out", required=True)
    s.add_argument(
        "--focus-labels",
        type=Path,
        help="baseline labels: restrict the metric to the treated levels +/- 1",
    )
    s.add_argument("--participants", type=Path, help="participants.tsv (treated_levels)")
    s.add_argument("--subject", help="subject label")
    _add_registration_options(s)
    s = steps.add_parser("derive-rois", help="derive the contract's ROIs from baseline labels")
    s.add_argument("--dseg", required=True)
    s.add_argument("--reference", required=True)
    s.add_argument("--participants", required=True)
    s.add_argument("--subject", required=True)
    s.add_argument("--out", required=True)
    s = steps.add_parser("session-roistats", help="ROI statistics of one session")
    s.add_argument(
        "--map", nargs=4, action="append", required=True,
        metavar=("NAME", "MAP", "FITMASK", "SERIES_XFM"),
    )  # fmt: skip
    s.add_argument("--rois", required=True, help="derived ROIs on the baseline grid (4D)")
    s.add_argument("--session-xfm", required=True, help="the session's ref -> baseline xfm")
    s.add_argument("--out", required=True)
    s = steps.add_parser("subject-tables")
    s.add_argument("--subject", required=True)
    s.add_argument("--sessions", nargs="+", required=True)
    s.add_argument("--sessions-tsv", required=True)
    s.add_argument("--out-roistats", required=True)
    s.add_argument("--out-response", required=True)
    s.add_argument("--prm", nargs="*", default=[], help="per-session prm.csv tables")
    s.add_argument("--out-prm", type=Path)
    s.add_argument("--xfm-sidecars", nargs="*", default=[], help="JSON sidecars of transforms")
    s.add_argument("--out-registration", type=Path)
    s = steps.add_parser("baseline-space", help="maps on the baseline grid, voxelwise change")
    maps_meta = ("NAME", "MAP", "FITMASK", "SERIES_XFM")
    s.add_argument("--map", nargs=4, action="append", required=True, metavar=maps_meta)
    s.add_argument("--session-xfm", required=True)
    s.add_argument("--baseline-map", nargs=4, action="append", metavar=maps_meta)
    s.add_argument("--baseline-session-xfm", required=True)
    s.add_argument("--reference", required=True, help="the baseline reference image")
    s.add_argument("--rois", required=True, help="derived ROIs on the baseline grid (4D)")
    s.add_argument(
        "--threshold",
        nargs=2,
        action="append",
        metavar=("NAME", "VALUE"),
        help="change threshold of a map, in its unit",
    )
    s.add_argument(
        "--erode-voxels", type=int, default=1,
        help="erode ROIs by this many voxels before counting (6-connected)",
    )  # fmt: skip
    s.add_argument("--out-dir", required=True)
    s.add_argument("--out", required=True, help="the parametric-response table (CSV)")
    s.add_argument("--stem", required=True, help="file-name stem, e.g. sub-01_ses-fu1")
    s = steps.add_parser("cohort-analyses", help="response flags, delineation, outcomes")
    s.add_argument("--roistats", required=True)
    s.add_argument("--response", required=True)
    s.add_argument("--participants", required=True)
    s.add_argument("--out-dir", required=True)
    s.add_argument(
        "--flag",
        nargs=2,
        action="append",
        metavar=("RULE", "PERCENT"),
        help="response flag threshold, e.g. vp_fall 20",
    )
    s.add_argument("--min-events", type=int, default=5)
    s = steps.add_parser("subject-dose", help="dose statistics and dose-binned qMRI change")
    s.add_argument("--subject", required=True)
    s.add_argument("--dose", required=True, help="dose map (Gy) on the baseline grid")
    s.add_argument("--rois", required=True, help="derived ROIs on the baseline grid (4D)")
    s.add_argument("--participants", required=True, help="participants.tsv (dose_gy, fractions)")
    s.add_argument("--sessions-tsv", required=True)
    s.add_argument("--baseline-session", required=True)
    s.add_argument(
        "--baseline-grid-dirs", nargs="+", required=True,
        help="every session's space-baseline folder (maps on the baseline grid)",
    )  # fmt: skip
    s.add_argument("--bin-edges", type=float, nargs="+", help="physical-dose bin edges (Gy)")
    s.add_argument("--eqd2-bin-edges", type=float, nargs="+", help="EQD2 bin edges (Gy)")
    s.add_argument(
        "--alpha-beta", nargs=2, action="append", metavar=("ROI_PREFIX", "GY"),
        help="alpha/beta (Gy) by ROI-name prefix; 'default' for the others",
    )  # fmt: skip
    s.add_argument("--hot-volume-cc", type=float, default=0.03, help="volume of D<V>cc (cm^3)")
    s.add_argument("--binned-rois", nargs="+", default=["cord", "marrow"])
    s.add_argument("--out-stats", required=True)
    s.add_argument("--out-bins", required=True)
    s = steps.add_parser("cohort-figures", help="trajectory, waterfall and Kaplan-Meier figures")
    s.add_argument("--roistats", required=True)
    s.add_argument("--response", required=True)
    s.add_argument("--out-dir", required=True)
    s.add_argument("--trajectory-rois", nargs="*", default=["tumor"])
    s.add_argument("--waterfall-rois", nargs="*", default=["tumor"])
    s.add_argument("--maps", nargs="*", default=[], help="maps of the waterfall plots")
    s.add_argument("--sessions", nargs="*", default=[], help="follow-ups of the waterfall plots")
    s.add_argument("--km", help="outcomes_km.csv")
    s.add_argument("--km-outcomes", nargs="*", default=[], help="outcomes to draw")
    s.add_argument(
        "--flag", nargs=2, action="append", metavar=("RULE", "PERCENT"),
        help="response flag threshold drawn on the waterfall plots, e.g. vp_fall 20",
    )  # fmt: skip
    s = steps.add_parser("cohort-table")
    s.add_argument("--tables", nargs="+", required=True)
    s.add_argument("--out", required=True)
    s = steps.add_parser("describe-output")
    s.add_argument("--bids-dir", required=True, help="the raw dataset (DatasetLinks.raw)")
    s.add_argument("--config-sha256", required=True, help="hash of the validated config")
    s.add_argument("--output-dir", required=True)
    s = steps.add_parser("qc-session", help="QC figures of one session (maps, curves, motion)")
    s.add_argument("--subject", required=True)
    s.add_argument("--session", required=True)
    s.add_argument("--rois", required=True, help="derived ROIs on the baseline grid (4D)")
    s.add_argument("--session-xfm", required=True, help="the session's ref -> baseline xfm")
    s.add_argument(
        "--fit", nargs=3, action="append", metavar=("FIT", "PREFIX", "SERIES_XFM"),
        help="a fit's label, map prefix (PREFIX_*.nii.gz) and series -> reference xfm",
    )  # fmt: skip
    s.add_argument("--motion", nargs="*", default=[], help="*_motion.tsv traces")
    s.add_argument("--dwi", type=Path, help="raw DWI series (.bval beside it)")
    s.add_argument("--dwi-moco", type=Path, help="its motion-correction transforms")
    s.add_argument("--dce", type=Path, help="raw DCE series (sidecar beside it)")
    s.add_argument("--dce-moco", type=Path, help="its motion-correction transforms")
    s.add_argument("--b1", type=Path, help="the session's TB1map (B1-corrected DCE)")
    s.add_argument(
        "--roi-names", nargs="+", default=["tumor", "vb_control", "cord_treated"],
        help="ROIs drawn",
    )  # fmt: skip
    s.add_argument("--slices", type=int, default=3, help="slices per map in the montages")
    s.add_argument("--out-dir", required=True, help="sub-<s>/qc")
    s = steps.add_parser("report-overview", help="key figures inline, for the report's first page")
    s.add_argument("--figures", nargs="+", required=True, help="PNG files")
    s.add_argument("--out", required=True, help="HTML snippet")
    pl.set_defaults(func=_cmd_pipeline)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``qmri`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    log = logging.getLogger("qmri")
    command = " ".join(["qmri", *(sys.argv[1:] if argv is None else argv)])
    log.info("qmri %s: %s", __version__, command)
    log.info("parameters: %s", _parameters(args))
    start = time.perf_counter()
    try:
        args.func(args)
    except QMRIInputError as exc:
        log.info("failed after %.1f s, peak memory %.0f MiB", *_usage(start))
        print(f"qmri: error: {exc}", file=sys.stderr)  # the last line of the log: the cause
        return 2
    log.info("done in %.1f s, peak memory %.0f MiB", *_usage(start))
    return 0


def _parameters(args: argparse.Namespace) -> str:
    """Every option of the command as ``name=value`` (the log's record of what was run)."""
    skip = {"func", "verbose"}
    return ", ".join(f"{k}={v}" for k, v in sorted(vars(args).items()) if k not in skip)


def _usage(start: float) -> tuple[float, float]:
    """Wall time since ``start`` (s) and the process's peak resident memory (MiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return time.perf_counter() - start, peak / (2**20 if sys.platform == "darwin" else 2**10)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
