"""``qmri import ...``: bringing data from the scanner, the planning system and other tools into
the data contract's layout. Imported lazily by :mod:`qmri.cli`.

* ``qmri import dicom DICOM_DIR BIDS_DIR``: a whole study (MR sessions, RTSTRUCT -> labels,
  RTDOSE -> dose, clinical columns; :func:`qmri.dicom.study.import_dicom_study`); with
  ``--subject S --session T``: one session's MR series
  (:func:`qmri.dicom.convert.import_dicom_session`);
* ``qmri import rtstruct RTSTRUCT IMAGE_DIR --reference REF --out DSEG``: one structure set
  (:func:`qmri.dicom.rtstruct.import_rtstruct`);
* ``qmri import rtdose RTDOSE --reference REF --out DOSE``: one dose
  (:func:`qmri.dicom.rtdose.import_rtdose`);
* ``qmri import labels --from totalsegmentator|spineps INPUT... --reference REF --out DSEG``:
  an automatic segmenter's label maps (:func:`qmri.segmenters.convert_segmentation`).
"""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Callable
from pathlib import Path

from qmri.errors import QMRIInputError

__all__ = ["add_import_commands", "run_import"]


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _add_dicom(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "dicom",
        help="scanner MR DICOM (+ RTSTRUCT, RTDOSE, RTPLAN) to BIDS, labels and dose",
        description="Without --subject/--session: import a whole DICOM folder laid out as "
        "<subject>/<session>/ (MR series) and <subject>/rt/ (RTSTRUCT, RTDOSE, RTPLAN, planning "
        "CT), with an optional participants.tsv (sbrt_date, treated_levels, clinical columns); "
        "sessions already imported are skipped. With --subject and --session: one session's MR "
        "series from DICOM_DIR. No names, IDs, dates or institutions reach the outputs: dates "
        "become days_from_sbrt.",
    )
    p.add_argument("dicom_dir", type=Path, help="DICOM folder")
    p.add_argument("bids_dir", type=Path, help="BIDS dataset to write (created if needed)")
    p.add_argument("--subject", help="one session only: its subject label")
    p.add_argument("--session", help="one session only: its session label")
    p.add_argument("--sbrt-date", type=_date, help="one session only: SBRT date (YYYY-MM-DD)")
    p.add_argument(
        "--labels-dir",
        type=Path,
        help="labels from the RTSTRUCT (default BIDS_DIR/derivatives/labels)",
    )
    p.add_argument(
        "--dose-dir",
        type=Path,
        help="dose maps from the RTDOSE (default BIDS_DIR/derivatives/dose)",
    )
    p.add_argument("--reference-suffix", default="T2w", help="reference anatomy suffix (T2w)")
    p.add_argument("--mapping", type=Path, help="series mapping file (YAML)")
    p.add_argument("--structure-map", type=Path, help="structure-name map (YAML)")
    p.add_argument(
        "--skip-unknown", action="store_true", help="leave out series that cannot be classified"
    )


def _add_rtstruct(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "rtstruct",
        help="an RTSTRUCT to the contract's labels on the baseline MR reference",
        description="Rasterise the structure set's structures on the baseline MR reference "
        "(through a rigid registration when they were drawn on a planning CT or another image) "
        "and write the dseg, its table, a JSON report and the plan CTV/PTV masks.",
    )
    p.add_argument("rtstruct", type=Path)
    p.add_argument("image_dir", type=Path, help="folder with the image series it references")
    p.add_argument("--reference", required=True, type=Path, help="baseline MR reference")
    p.add_argument("--out", required=True, type=Path, help="output *_dseg.nii.gz")
    p.add_argument("--out-xfm", type=Path, help="planning -> MR transform (when registering)")
    p.add_argument("--checkerboard", type=Path, help="registration checkerboard PNG")
    p.add_argument("--treated-levels", help="e.g. T12,L1: focus of the registration")
    p.add_argument("--structure-map", type=Path, help="structure-name map (YAML)")
    p.add_argument("--strict", action="store_true", help="refuse unknown structure names")


def _add_rtdose(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "rtdose",
        help="an RTDOSE to the contract's dose map (Gy on the baseline reference)",
        description="Resample the plan's dose onto the baseline MR reference (through the "
        "RTSTRUCT import's transform for a dose in the planning CT's frame).",
    )
    p.add_argument("rtdose", type=Path)
    p.add_argument("--reference", required=True, type=Path, help="baseline MR reference")
    p.add_argument("--out", required=True, type=Path, help="output dose NIfTI (Gy)")
    p.add_argument("--transform", type=Path, help="from-planning_to-MR transform (.txt)")
    p.add_argument("--rtplan", type=Path, help="RTPLAN: fractions and prescription")


def _add_labels(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "labels",
        help="segmenter label maps (TotalSegmentator, SPINEPS) to the contract's labels",
        description="Convert the label maps of an automatic segmenter to the contract's "
        "dseg (vb_<level>, pel/per/pe_<level>, cord_<level>, csf, aorta) on the baseline "
        "reference grid. TotalSegmentator: run the tasks total_mr and vertebrae_mr and pass "
        "both outputs (files from --ml or class folders); SPINEPS: the instance (seg-vert) "
        "and semantic (seg-spine) masks. Segmenters draw no tumour: pass the GTV with --tumor.",
    )
    p.add_argument("inputs", nargs="+", type=Path, help="label maps or class folders")
    p.add_argument("--from", dest="source", required=True, choices=("totalsegmentator", "spineps"))
    p.add_argument("--reference", required=True, type=Path, help="baseline reference")
    p.add_argument("--out", required=True, type=Path, help="output *_dseg.nii.gz")
    p.add_argument("--task", help="TotalSegmentator task of --ml files without header")
    p.add_argument("--tumor", type=Path, help="GTV mask (non-zero inside), any grid")


def add_import_commands(
    parser: argparse.ArgumentParser, *, func: Callable[[argparse.Namespace], None]
) -> None:
    """Add the ``qmri import`` sub-commands to ``parser``."""
    sub = parser.add_subparsers(dest="import_kind", required=True)
    for add in (_add_dicom, _add_rtstruct, _add_rtdose, _add_labels):
        add(sub)
    for p in sub.choices.values():
        p.set_defaults(func=func)


def _run_dicom(args: argparse.Namespace) -> list[str]:
    if (args.subject is None) != (args.session is None):
        raise QMRIInputError("give both --subject and --session (one session), or neither")
    if args.subject is not None:
        from qmri.dicom.convert import import_dicom_session

        report = import_dicom_session(
            args.dicom_dir, args.bids_dir, subject=args.subject, session=args.session,
            mapping=args.mapping, sbrt_date=args.sbrt_date,
            reference_suffix=args.reference_suffix, skip_unknown=args.skip_unknown,
        )  # fmt: skip
        return report.summary().splitlines()
    if args.sbrt_date is not None:
        raise QMRIInputError(
            "--sbrt-date is for one session; for a folder give sbrt_date in its participants.tsv"
        )
    from qmri.dicom.study import import_dicom_study

    derivatives = args.bids_dir / "derivatives"
    study = import_dicom_study(
        args.dicom_dir, args.bids_dir, labels_dir=args.labels_dir or derivatives / "labels",
        dose_dir=args.dose_dir or derivatives / "dose", reference_suffix=args.reference_suffix,
        mapping=args.mapping, structure_map=args.structure_map, skip_unknown=args.skip_unknown,
    )  # fmt: skip
    return study.summary().splitlines()


def _run_rtstruct(args: argparse.Namespace) -> list[str]:
    from qmri.dicom.rtstruct import import_rtstruct

    done = import_rtstruct(
        args.rtstruct, args.image_dir, args.reference, args.out, name_map=args.structure_map,
        treated_levels=args.treated_levels, out_xfm=args.out_xfm,
        checkerboard=args.checkerboard, strict=args.strict,
    )  # fmt: skip
    lines = [f"{done.dseg}: {len(done.labels)} labels"]
    lines += [f"  {name}: {done.volumes_ml[name]:.2f} mL" for name in done.labels]
    lines += [f"  plan mask {name}: {path}" for name, path in done.masks.items()]
    if done.transform is not None:
        lines.append(f"  transform: {done.transform}")
    if done.unknown:
        lines.append(f"  not imported (unknown names): {', '.join(done.unknown)}")
    lines += [f"  note: {n}" for n in done.notes]
    return lines


def _run_rtdose(args: argparse.Namespace) -> list[str]:
    from qmri.dicom.rtdose import import_rtdose

    done = import_rtdose(
        args.rtdose, args.reference, args.out, transform=args.transform, rtplan=args.rtplan
    )
    lines = [f"{done.dose}: max {done.max_gy:.2f} Gy ({done.summation})"]
    if done.fractions is not None:
        lines.append(f"  fractions {done.fractions}, prescription {done.prescription_gy} Gy")
    lines += [f"  note: {n}" for n in done.notes]
    return lines


def _run_labels(args: argparse.Namespace) -> list[str]:
    from qmri.segmenters import convert_segmentation

    report = convert_segmentation(
        args.source, args.inputs, args.reference, args.out, task=args.task, tumor=args.tumor
    )
    return report.lines()


_RUNNERS = {
    "dicom": _run_dicom,
    "rtstruct": _run_rtstruct,
    "rtdose": _run_rtdose,
    "labels": _run_labels,
}


def run_import(args: argparse.Namespace) -> list[str]:
    """Run a parsed ``qmri import`` command; returns the lines to print."""
    return _RUNNERS[args.import_kind](args)
