"""``qmri import ...``: bringing data from other tools into the data contract's layout.

``qmri import labels --from totalsegmentator|spineps INPUT... --reference REF --out DSEG``
converts an automatic segmenter's label maps to the contract's label names
(:func:`qmri.segmenters.convert_segmentation`). Imported lazily by :mod:`qmri.cli`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

__all__ = ["add_import_commands", "run_import"]


def add_import_commands(
    parser: argparse.ArgumentParser, *, func: Callable[[argparse.Namespace], None]
) -> None:
    """Add the ``qmri import`` sub-commands to ``parser``."""
    sub = parser.add_subparsers(dest="import_kind", required=True)
    labels = sub.add_parser(
        "labels",
        help="segmenter label maps (TotalSegmentator, SPINEPS) to the contract's labels",
        description="Convert the label maps of an automatic segmenter to the contract's "
        "dseg (vb_<level>, pel/per/pe_<level>, cord_<level>, csf, aorta) on the baseline "
        "reference grid. TotalSegmentator: run the tasks total_mr and vertebrae_mr and pass "
        "both outputs (files from --ml or class folders); SPINEPS: the instance (seg-vert) "
        "and semantic (seg-spine) masks. Segmenters draw no tumour: pass the GTV with --tumor.",
    )
    labels.add_argument("inputs", nargs="+", type=Path, help="label maps or class folders")
    labels.add_argument(
        "--from", dest="source", required=True, choices=("totalsegmentator", "spineps")
    )
    labels.add_argument("--reference", required=True, type=Path, help="baseline reference")
    labels.add_argument("--out", required=True, type=Path, help="output *_dseg.nii.gz")
    labels.add_argument("--task", help="TotalSegmentator task of --ml files without header")
    labels.add_argument("--tumor", type=Path, help="GTV mask (non-zero inside), any grid")
    labels.set_defaults(func=func)


def run_import(args: argparse.Namespace) -> list[str]:
    """Run a parsed ``qmri import`` command; returns the lines to print."""
    from qmri.segmenters import convert_segmentation

    report = convert_segmentation(
        args.source, args.inputs, args.reference, args.out, task=args.task, tumor=args.tumor
    )
    return report.lines()
