"""The ``qmri`` command line.

``qmri fit <kind>`` fits one model to plain NIfTI files (data contract section 6,
:mod:`qmri.cli_fit`); ``qmri phantom`` writes the spine digital reference object. The workflow's
steps are not commands: the rules call :mod:`qmri.steps`. Bad input exits with status 2 and one
line on stderr, ``qmri: error: <file>: <problem>``.

Start-up stays light: this module imports no numerical library, every command imports what it
needs when it runs, and the ``fit`` sub-commands are built (reading the config schema for their
defaults) only when ``qmri fit`` is parsed, not for ``qmri --help`` or ``qmri phantom``.
"""

from __future__ import annotations

import argparse
import logging
import resource
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from qmri import __version__
from qmri.errors import QMRIInputError


class _LazyParser(argparse.ArgumentParser):
    """An argument parser whose arguments are added when it is first used.

    Parameters
    ----------
    populate : callable, optional
        ``populate(parser)`` adds the arguments; called once, before the first parse or help
        text. None: an ordinary parser.
    """

    def __init__(
        self,
        *args: Any,
        populate: Callable[[argparse.ArgumentParser], None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._populate = populate

    def _ensure_populated(self) -> None:
        if self._populate is not None:
            populate, self._populate = self._populate, None
            populate(self)

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        self._ensure_populated()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self._ensure_populated()
        return super().format_help()

    def format_usage(self) -> str:
        self._ensure_populated()
        return super().format_usage()


def _add_fit_commands(parser: argparse.ArgumentParser) -> None:
    from qmri.cli_fit import add_fit_commands

    add_fit_commands(parser, func=_cmd_fit)


def _cmd_fit(args: argparse.Namespace) -> None:
    from qmri.cli_fit import run_fit

    for path in run_fit(args):
        print(path)


def _add_import_commands(parser: argparse.ArgumentParser) -> None:
    from qmri.cli_import import add_import_commands

    add_import_commands(parser, func=_cmd_import)


def _cmd_import(args: argparse.Namespace) -> None:
    from qmri.cli_import import run_import

    for line in run_import(args):
        print(line)


def _cmd_phantom(args: argparse.Namespace) -> None:
    from qmri.phantom import write_phantom_dataset

    out = write_phantom_dataset(
        args.outdir,
        n_subjects=args.subjects,
        sessions=tuple(args.sessions.split(",")),
        seed=args.seed,
        small=args.small,
        extra_series=tuple(v for v in args.extra_series.split(",") if v),
    )
    print(out)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``qmri`` command.

    Returns
    -------
    argparse.ArgumentParser
        Sub-commands ``fit`` (its model kinds are added on first use, see
        :func:`qmri.cli_fit.add_fit_commands`) and ``phantom``; every sub-command sets
        ``func``, the function that runs it on the parsed arguments.
    """
    parser = argparse.ArgumentParser(
        prog="qmri", description="Quantitative MRI for spinal metastases treated with SBRT."
    )
    parser.add_argument("--version", action="version", version=f"qmri {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_LazyParser)

    sub.add_parser(
        "fit",
        help="fit a model to NIfTI files (data contract section 6)",
        description="Fit one model to plain NIfTI files; parameters the flags omit come from "
        "the BIDS sidecar next to the data, defaults from the workflow's config schema.",
        populate=_add_fit_commands,
    )

    sub.add_parser(
        "import",
        help="DICOM (MR, RTSTRUCT, RTDOSE) and segmenter label maps to the contract's layout",
        description="Convert data written by other tools to the data contract's layout.",
        populate=_add_import_commands,
    )

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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``qmri`` console script.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name; default ``sys.argv[1:]``.

    Returns
    -------
    int
        0 on success, 2 for bad input (one line ``qmri: error: <file>: <problem>`` on stderr).
    """
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
