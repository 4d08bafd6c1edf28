"""``qmri fit <kind>``: one model fitted to plain NIfTI files (data contract section 6).

DATA is a 4D image whose last axis holds the acquisitions; parameters the flags omit come from
the BIDS sidecar next to it, and a flag that disagrees with the sidecar is an error unless
``--override-sidecar`` is given. Outputs are ``PREFIX_<param>.nii.gz`` with JSON sidecars
(:func:`qmri.maps.write_fit`, parameter names rather than BIDS suffixes).

Defaults live in the config schema only: every option with a config counterpart
(:data:`CONFIG_OPTIONS`) takes its default, and its choices, from
``qmri/data/config.schema.yaml`` (:func:`qmri.config.schema_defaults`) and shows it in ``--help``.

The models are built where the workflow builds them: the registry's estimators
(:mod:`qmri.recipes`, through :data:`qmri.registry.FITS`) fit VFA, inversion recovery, T2, T2*,
ADC and IVIM from the acquisition and the config section with the flags applied. A mask is
applied by handing the estimator the masked voxels as a list and putting the maps back on the
grid. DTI (no workflow fit) is built here; DCE goes through :func:`qmri.models.dce.prepare_dce`
and :func:`qmri.models.dce.fit_dce`, as the workflow's DCE estimator does.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from qmri.errors import QMRIInputError

if TYPE_CHECKING:
    import nibabel as nib

    from qmri.models.base import ModelFit
    from qmri.registry import FitOutcome

log = logging.getLogger("qmri")

__all__ = ["CONFIG_OPTIONS", "add_fit_commands", "run_fit"]

#: ``qmri fit`` options with a config counterpart: kind -> option dest -> (section, key). Their
#: defaults and choices are the schema's.
CONFIG_OPTIONS: dict[str, dict[str, tuple[str, str]]] = {
    "t1-vfa": {"method": ("t1_vfa", "method")},
    "t2": {"drop_first_echo": ("t2", "drop_first_echo"), "noise_floor": ("t2", "noise_floor")},
    "t2star": {
        "drop_first_echo": ("t2star", "drop_first_echo"),
        "noise_floor": ("t2star", "noise_floor"),
    },
    "t1-ir": {},
    "dwi": {
        "b_min": ("adc", "b_min"),
        "b_max": ("adc", "b_max"),
        "b_threshold": ("ivim", "b_threshold"),
        "ivim_method": ("ivim", "method"),
    },
    "dce": {
        "model": ("dce", "model"),
        "method": ("dce", "method"),
        "hematocrit": ("dce", "hematocrit"),
        "r1": ("dce", "r1"),
        "fit_delay": ("dce", "fit_delay"),
        "aif": ("dce", "aif"),
    },
}

#: The registry fit (:data:`qmri.registry.FITS`) behind each kind (``dwi``: by ``--model``).
_REGISTRY_FIT = {"t1-vfa": "vfa", "t1-ir": "irt1", "t2": "mese", "t2star": "megre"}


# --------------------------------------------------------------------------------------------
# the parser
# --------------------------------------------------------------------------------------------


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got '{text}'"
        ) from None


class _ConfigOptions:
    """Adds options whose default, type and choices are those of their config key."""

    def __init__(self, schema: Mapping[str, Any], defaults: Mapping[str, Any]) -> None:
        self.schema, self.defaults = schema, defaults

    def add(
        self,
        parser: argparse.ArgumentParser,
        kind: str,
        flag: str,
        dest: str,
        text: str,
        *,
        choices: bool = True,
    ) -> None:
        """Add a config-backed option of ``qmri fit <kind>``.

        Parameters
        ----------
        parser : argparse.ArgumentParser
            The kind's parser.
        kind : str
            Key of :data:`CONFIG_OPTIONS`.
        flag, dest : str
            Option string (``--ivim-method``) and attribute name (``ivim_method``).
        text : str
            Help text; the default and the config key are appended.
        choices : bool
            Restrict the values to the schema's ``enum``; False for an option that also takes
            a file (``--aif``).
        """
        section, key = CONFIG_OPTIONS[kind][dest]
        prop = self.schema["properties"][section]["properties"][key]
        types = prop.get("type")
        types = set(types) if isinstance(types, list) else {types}
        kwargs: dict[str, Any] = {}
        if "boolean" in types:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif "integer" in types:
            kwargs["type"] = int
        elif "number" in types:
            kwargs["type"] = float
        if choices and "enum" in prop:
            kwargs["choices"] = prop["enum"]
        parser.add_argument(
            flag,
            dest=dest,
            default=self.defaults[section][key],
            help=f"{text} (default: %(default)s, config {section}.{key})",
            **kwargs,
        )


def add_fit_commands(
    fit: argparse.ArgumentParser, *, func: Callable[[argparse.Namespace], None]
) -> None:
    """Add the model kinds of ``qmri fit`` (``t1-vfa``, ``t2``, ``t2star``, ``t1-ir``, ``dwi``,
    ``dce``) to the ``fit`` parser.

    Parameters
    ----------
    fit : argparse.ArgumentParser
        The ``qmri fit`` parser.
    func : callable
        Set as ``func`` on the parsed arguments: the function that runs the fit.
    """
    from qmri import config

    schema = config.load_schema(config.DEFAULT_SCHEMA)
    opt = _ConfigOptions(schema, config.schema_defaults(schema))
    kinds = fit.add_subparsers(dest="model_kind", required=True)

    def common(name: str, text: str) -> argparse.ArgumentParser:
        p = kinds.add_parser(name, help=text, description=text)
        p.add_argument("data", help="4D NIfTI; the last axis holds the acquisitions")
        p.add_argument("--mask", type=Path, help="3D mask; voxels outside are NaN")
        p.add_argument("--out", required=True, help="output prefix: PREFIX_<param>.nii.gz")
        p.add_argument(
            "--override-sidecar",
            action="store_true",
            help="use command-line values where they disagree with the sidecar",
        )
        p.set_defaults(func=func)
        return p

    p = common("t1-vfa", "T1 (s) from variable flip angles")
    p.add_argument(
        "--flip-angles", type=_floats, help="nominal flip angles (deg), comma-separated"
    )
    p.add_argument("--tr", type=float, help="repetition time (s)")
    p.add_argument("--b1", type=Path, help="TB1map (percent, or ratio if its median is near 1)")
    opt.add(p, "t1-vfa", "--method", "method", "DESPOT1 linear fit, or NLLS from its start")
    for kind, text in (
        ("t2", "T2 (s) from multi-echo spin echo"),
        ("t2star", "T2* (s) from multi-echo gradient echo"),
    ):
        p = common(kind, text)
        p.add_argument("--echo-times", type=_floats, help="echo times (s), comma-separated")
        opt.add(p, kind, "--drop-first-echo", "drop_first_echo", "leave out the first echo")
        opt.add(
            p, kind, "--noise-floor", "noise_floor",
            "fit a constant offset c >= 0 (S0 exp(-TE/T2) + c)",
        )  # fmt: skip
    p = common("t1-ir", "T1 (s) from magnitude inversion recovery")
    p.add_argument("--inversion-times", type=_floats, help="inversion times (s), comma-separated")
    p.add_argument("--tr", type=float, help="repetition time (s), for M0 and inversion efficiency")

    p = common("dwi", "ADC, IVIM (D, D*, f) or DTI (FA, MD, AD, RD)")
    p.add_argument("--bval", type=Path, required=True, help="FSL .bval file (s/mm^2)")
    p.add_argument("--bvec", type=Path, help="FSL .bvec file (needed for DTI)")
    p.add_argument("--model", choices=["adc", "ivim", "dti"], default="adc")
    opt.add(p, "dwi", "--b-min", "b_min", "ADC: lowest b used (s/mm^2)")
    opt.add(p, "dwi", "--b-max", "b_max", "ADC: highest b used (s/mm^2)")
    opt.add(
        p, "dwi", "--b-threshold", "b_threshold",
        "IVIM: b (s/mm^2) from which perfusion is negligible",
    )  # fmt: skip
    opt.add(p, "dwi", "--ivim-method", "ivim_method", "IVIM: segmented or full (joint) fit")

    p = common("dce", "Tofts / extended Tofts / Patlak from DCE")
    p.add_argument("--t1", type=Path, help="pre-contrast T1 map (s) on the DCE grid")
    p.add_argument("--flip-angle", type=float, help="flip angle (deg)")
    p.add_argument("--tr", type=float, help="repetition time of the excitations (s)")
    p.add_argument("--times", type=Path, help="text file: one frame time (s) per line")
    opt.add(
        p, "dce", "--aif", "aif",
        "'parker', 'aorta' (the mean blood curve over --aif-mask) or a TSV with columns "
        "time (s), cp (mM)",
        choices=False,
    )  # fmt: skip
    opt.add(p, "dce", "--model", "model", "kinetic model")
    opt.add(p, "dce", "--r1", "r1", "relaxivity (/mM/s); None: from the agent table")
    opt.add(p, "dce", "--hematocrit", "hematocrit", "blood hematocrit of the AIF")
    p.add_argument("--b1", type=Path, help="TB1map for the flip angle")
    p.add_argument(
        "--baseline-frames", type=int,
        help="pre-contrast frames (default: the sidecar's BaselineFrames, else detected from "
        "the bolus arrival on the mean signal over the mask)",
    )  # fmt: skip
    p.add_argument("--bolus-arrival", type=float, help="bolus arrival (s); default detected")
    opt.add(p, "dce", "--fit-delay", "fit_delay", "fit an arterial delay per voxel")
    opt.add(
        p, "dce", "--method", "method",
        "nlls (linear start, then Levenberg-Marquardt) or the closed-form Murase / Patlak "
        "estimate only",
    )  # fmt: skip
    p.add_argument("--aif-mask", type=Path, help="mask of arterial voxels: measure the AIF there")
    p.add_argument(
        "--concentration", action="store_true", help="DATA already holds tissue concentration (mM)"
    )


# --------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------


def _sidecar(data: Path) -> tuple[Path, dict[str, Any]]:
    from qmri.io import read_json, sidecar_path

    side = sidecar_path(data)
    return side, (read_json(side) if side.exists() else {})


def _sidecar_value(
    data: Path, key: str, given: Any, override: bool, *, required: bool = True
) -> Any:
    """A parameter from the flag, else from the BIDS sidecar next to DATA; never silently both.

    Returns None when neither gives it and ``required`` is False.
    """
    side, meta = _sidecar(data)
    from_sidecar = meta.get(key)
    if from_sidecar is not None:
        values = from_sidecar if isinstance(from_sidecar, list) else [from_sidecar]
        odd = next((v for v in values if isinstance(v, str | bool)), None)
        if odd is not None and len(values) == 1:  # JSON "6" or true: not a number (as qmri.bids)
            raise QMRIInputError(f"'{key}' must be a number, got {odd!r}", side)
        try:
            if odd is not None:
                raise ValueError(odd)
            np.asarray(from_sidecar, dtype=float)
        except (TypeError, ValueError):
            raise QMRIInputError(f"'{key}' must be a number or numbers", side) from None
    if given is None:
        if from_sidecar is None and required:
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


def _values(value: Any) -> list[float]:
    return np.atleast_1d(np.asarray(value, dtype=float)).tolist()


def _load_mask(path: Path | None, shape: tuple[int, ...]) -> np.ndarray | None:
    from qmri.io import load_nifti, read_data

    if path is None:
        return None
    img = load_nifti(path, ndim=3)
    if img.shape != shape:
        raise QMRIInputError(f"mask shape {img.shape} does not match the data's {shape}", path)
    return read_data(img) > 0


def _check_volumes(path: Path, data: np.ndarray, n: int, what: str) -> None:
    if data.shape[-1] != n:
        raise QMRIInputError(f"data has {data.shape[-1]} volumes but {n} {what} were given", path)


def _b1_on_grid(path: Path, img: nib.Nifti1Image) -> tuple[np.ndarray, str]:
    from qmri.preprocess import load_b1_on_grid

    return load_b1_on_grid(path, img.shape[:3], img.affine)


# --------------------------------------------------------------------------------------------
# fits
# --------------------------------------------------------------------------------------------


def run_fit(args: argparse.Namespace) -> list[Path]:
    """Run ``qmri fit <kind>`` on parsed arguments and write its maps.

    Returns
    -------
    list of Path
        Every map written (``PREFIX_<param>.nii.gz``; each has a JSON sidecar).

    Raises
    ------
    QMRIInputError
        Bad input, one line naming the file (DATA when the model's check names none).
    """
    from qmri.io import load_nifti, read_data
    from qmri.maps import write_fit

    data_path = Path(args.data)
    img = load_nifti(data_path, ndim=4)
    data = read_data(img)
    mask = _load_mask(args.mask, img.shape[:3])
    try:
        if args.model_kind == "dce":
            fits, acquisition, sources = _fit_dce(args, data_path, img, data, mask)
        elif args.model_kind == "dwi" and args.model == "dti":
            fits, acquisition, sources = _fit_dti(args, data_path, data, mask)
        else:
            fits, acquisition, sources = _fit_registered(args, data_path, img, data, mask)
    except QMRIInputError as exc:  # a model's complaint about its inputs: name the data
        if exc.path is not None:
            raise
        raise QMRIInputError(exc.problem, data_path) from None
    written: list[Path] = []
    for fit in fits:
        written += write_fit(
            fit, img.affine, Path(args.out), sources=sources, acquisition=acquisition,
            bids_suffixes=False,
        )  # fmt: skip
    return written


def _fit_registered(
    args: argparse.Namespace,
    data_path: Path,
    img: nib.Nifti1Image,
    data: np.ndarray,
    mask: np.ndarray | None,
) -> tuple[list[ModelFit], dict[str, Any], list[Path]]:
    """A fit of :data:`qmri.registry.FITS`: its estimator, with the flags as its options."""
    from qmri.bids import Series
    from qmri.config import schema_defaults
    from qmri.registry import FITS, FitRequest

    kind, override = args.model_kind, args.override_sidecar
    parameters: dict[str, Any]
    b1 = b1_source = b1_convention = None
    extra_sources: list[Path] = []
    if kind == "t1-vfa":
        flips = _values(_sidecar_value(data_path, "FlipAngle", args.flip_angles, override))
        tr = _sidecar_value(data_path, "RepetitionTimeExcitation", args.tr, override)
        _check_volumes(data_path, data, len(flips), "flip angles")
        parameters = {"FlipAngle": flips, "RepetitionTimeExcitation": float(np.squeeze(tr))}
        if args.b1 is not None:
            b1, b1_convention = _b1_on_grid(args.b1, img)
            b1_source = args.b1
    elif kind in ("t2", "t2star"):
        tes = _values(_sidecar_value(data_path, "EchoTime", args.echo_times, override))
        _check_volumes(data_path, data, len(tes), "echo times")
        parameters = {"EchoTime": tes}
    elif kind == "t1-ir":
        tis = _values(_sidecar_value(data_path, "InversionTime", args.inversion_times, override))
        _check_volumes(data_path, data, len(tis), "inversion times")
        parameters = {"InversionTime": tis, "RepetitionTime": args.tr}
    else:  # dwi: adc or ivim
        from qmri.bids import read_bvals

        bvals = read_bvals(args.bval)
        _check_volumes(data_path, data, bvals.size, f"b-values in {args.bval.name}")
        parameters = {"bvals": bvals.tolist()}
        extra_sources.append(args.bval)
    spec = FITS[args.model if kind == "dwi" else _REGISTRY_FIT[kind]]
    options = spec.options(schema_defaults())  # the config section, then the flags
    for dest, (section, key) in CONFIG_OPTIONS[kind].items():
        if section == spec.section:
            options[key] = getattr(args, dest)
    request = FitRequest(
        series=Series(data, img.affine, (data_path,), parameters),
        data=data if mask is None else data[mask],
        options=options,
        b1=b1 if mask is None or b1 is None else b1[mask],
        b1_source=b1_source,
        b1_convention=b1_convention,
    )
    outcome: FitOutcome = spec.estimate(request)
    fits = [_on_grid(fit, mask) for fit in outcome.fits]
    return fits, dict(outcome.acquisition), [*outcome.sources, *extra_sources]


def _on_grid(fit: ModelFit, mask: np.ndarray | None) -> ModelFit:
    """The maps of a fit of the masked voxels (a list) put back on the grid: NaN outside the
    mask, ``fitmask`` 0."""
    if mask is None:
        return fit
    maps = {}
    for name, values in fit.maps.items():
        fill = 0 if name == "fitmask" else np.nan
        full = np.full(mask.shape + values.shape[1:], fill, dtype=values.dtype)
        full[mask] = values
        maps[name] = full
    return dataclasses.replace(fit, maps=maps)


def _fit_dti(
    args: argparse.Namespace, data_path: Path, data: np.ndarray, mask: np.ndarray | None
) -> tuple[list[ModelFit], dict[str, Any], list[Path]]:
    """DTI (FA, MD, AD, RD) of a DWI series with its ``.bvec``."""
    from qmri.bids import read_bvals, read_bvecs
    from qmri.models import DTIModel

    bvals = read_bvals(args.bval)
    _check_volumes(data_path, data, bvals.size, f"b-values in {args.bval.name}")
    if args.bvec is None:
        raise QMRIInputError("--model dti needs --bvec", data_path)
    bvecs = read_bvecs(args.bvec, bvals.size)
    fit = DTIModel(bvals.tolist(), bvecs).fit(data, mask=mask)
    return [fit], {"bvals": bvals.tolist()}, [data_path, args.bvec, args.bval]


def _frame_times(args: argparse.Namespace, data_path: Path, n_frames: int) -> np.ndarray:
    """Frame times (s): the ``--times`` file, else the sidecar's VolumeTiming / RepetitionTime."""
    from qmri.bids import check_dce_frames, frame_times

    if args.times is None:
        side, meta = _sidecar(data_path)
        return np.asarray(frame_times(meta, n_frames, side), dtype=float)
    if not args.times.exists():
        raise QMRIInputError("file not found", args.times)
    try:
        times = np.loadtxt(args.times, dtype=float, ndmin=1)
    except ValueError:
        raise QMRIInputError("frame times must be one number (s) per line", args.times) from None
    if times.size != n_frames:
        raise QMRIInputError(f"{times.size} frame times for {n_frames} volumes", args.times)
    check_dce_frames(n_frames, data_path)
    return times


def _baseline_frames(args: argparse.Namespace, data_path: Path) -> int | None:
    """Pre-contrast frames from ``--baseline-frames`` or the sidecar's ``BaselineFrames``."""
    side, meta = _sidecar(data_path)
    given = meta.get("BaselineFrames")
    if given is not None and (isinstance(given, bool) or not isinstance(given, int)):
        raise QMRIInputError(f"'BaselineFrames' must be an integer, got {given!r}", side)
    value = _sidecar_value(
        data_path, "BaselineFrames", args.baseline_frames, args.override_sidecar, required=False
    )
    return None if value is None else int(value)


def _mean_curve(data: np.ndarray, mask: np.ndarray | None, path: Path) -> np.ndarray:
    """Mean signal curve over the mask (every voxel without one), NaN voxels left out."""
    rows = data.reshape(-1, data.shape[-1]) if mask is None else data[mask]
    if not np.isfinite(rows).any(axis=0).all():
        raise QMRIInputError("a frame has no finite voxel (in the mask)", path)
    return np.nanmean(rows, axis=0)


def _fit_dce(
    args: argparse.Namespace,
    data_path: Path,
    img: nib.Nifti1Image,
    data: np.ndarray,
    mask: np.ndarray | None,
) -> tuple[list[ModelFit], dict[str, Any], list[Path]]:
    """Signal (or concentration) to Tofts / extended Tofts / Patlak and semi-quantitative maps.

    Without ``--baseline-frames`` and without ``BaselineFrames`` in the sidecar, the
    pre-contrast frames are detected from the bolus arrival on the mean signal over the mask
    (:func:`qmri.models.dce.detect_baseline_frames`); the sidecars' ``ModelOptions`` record it
    (``BaselineFramesDetected`` next to ``baseline_frames``).
    """
    from qmri.io import load_nifti, read_data
    from qmri.models.dce import detect_baseline_frames, fit_dce, prepare_dce

    override = args.override_sidecar
    _, meta = _sidecar(data_path)
    times = _frame_times(args, data_path, data.shape[-1])
    sources = [data_path]
    baseline = _baseline_frames(args, data_path)
    detected = False
    conversion: dict[str, Any] = dict.fromkeys(
        ("t1_s", "flip_angle_deg", "tr_s", "r1", "agent", "field_strength_t")
    )
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
        flip = _sidecar_value(data_path, "FlipAngle", args.flip_angle, override)
        tr = _sidecar_value(data_path, "RepetitionTimeExcitation", args.tr, override)
        if baseline is None:
            baseline = detect_baseline_frames(times, _mean_curve(data, mask, data_path))
            detected = True
            log.info(
                "%s: no BaselineFrames given; %d pre-contrast frames detected from the bolus "
                "arrival", data_path.name, baseline,
            )  # fmt: skip
        conversion.update(
            t1_s=read_data(t1_img), flip_angle_deg=float(flip), tr_s=float(tr), r1=args.r1,
            agent=meta.get("ContrastAgent"), field_strength_t=meta.get("MagneticFieldStrength"),
        )  # fmt: skip
        sources.append(args.t1)
    b1 = None
    if args.b1 is not None:
        b1 = _b1_on_grid(args.b1, img)[0]
        sources.append(args.b1)
    aif, aif_mask = args.aif, None
    if args.aif_mask is not None:  # a measured AIF: the mean blood curve over the mask
        if aif not in ("parker", "aorta", "measured"):
            raise QMRIInputError("give either --aif TSV or --aif-mask, not both", args.aif_mask)
        aif_mask = _load_mask(args.aif_mask, img.shape[:3])
        aif = "measured"
        sources.append(args.aif_mask)
    elif aif in ("aorta", "measured"):
        raise QMRIInputError(f"--aif {aif} needs --aif-mask (the arterial voxels)", data_path)
    elif aif != "parker":
        sources.append(Path(aif))
    inputs = prepare_dce(
        data, times, concentration=args.concentration, b1=b1, baseline_frames=baseline,
        aif=aif, hematocrit=args.hematocrit, bolus_arrival_s=args.bolus_arrival,
        aif_mask=aif_mask, mask=mask, **conversion,
    )  # fmt: skip
    if detected:  # recorded next to baseline_frames in both fits' options
        provenance = {**inputs.provenance, "BaselineFramesDetected": True}
        inputs = dataclasses.replace(inputs, provenance=provenance)
    kinetic, semi = fit_dce(
        inputs, model=args.model, method=args.method, fit_delay=args.fit_delay,
        signal=None if args.concentration else data,
    )  # fmt: skip
    return [kinetic, semi], {"FrameTimes": np.asarray(times, dtype=float).tolist()}, sources
