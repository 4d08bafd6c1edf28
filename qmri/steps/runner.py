"""Running a step as a Snakemake job: its log, its one-line error, its record of what was run.

Every rule of the workflow is a ``script:`` adapter of three lines
(``workflow/scripts/<rule>.py``) that calls :func:`run_step` with the rule's step function and
its arguments taken from the job's ``input``, ``output``, ``params`` and ``config``. The step
functions (:mod:`qmri.steps`) know nothing of Snakemake; this module is the only place that
does.
"""

from __future__ import annotations

import logging
import resource
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from qmri import __version__
from qmri.errors import QMRIInputError
from qmri.registry import load_plugins

__all__ = ["run_step", "usage"]

_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


def usage(start: float) -> tuple[float, float]:
    """Wall time since ``start`` (s, ``time.perf_counter``) and the process's peak resident
    memory (MiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return time.perf_counter() - start, peak / (2**20 if sys.platform == "darwin" else 2**10)


def _describe(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_describe(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple) and len(value) > 6:
        return f"[{_describe(value[0])}, ... {len(value)} items]"
    return str(value)


def run_step(snakemake: Any, step: Callable[..., Any], **arguments: Any) -> None:
    """Run ``step(**arguments)`` as the job of ``snakemake`` (the object a ``script:`` gets).

    The job's log (``snakemake.log[0]``) receives the step's log lines (level INFO), the
    arguments it was called with, and at the end the wall time and peak memory. Bad input
    (:class:`qmri.errors.QMRIInputError`) ends the job with exit status 2 and the line
    ``qmri: error: <file>: <problem>`` as the log's last line; Snakemake then names the log.
    Outputs are written atomically by the steps, so a failed job leaves none behind.
    """
    log_path = Path(snakemake.log[0])
    log_path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_path, mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter(_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    log = logging.getLogger("qmri")
    log.setLevel(logging.INFO)
    log.info("qmri %s: rule %s, step %s.%s", __version__, snakemake.rule,
             step.__module__, step.__qualname__)  # fmt: skip
    log.info("parameters: %s", ", ".join(f"{k}={_describe(v)}" for k, v in arguments.items()))
    start = time.perf_counter()
    try:
        load_plugins(snakemake.config.get("plugins", []))  # fits registered by plugins
        step(**arguments)
    except QMRIInputError as exc:
        log.info("failed after %.1f s, peak memory %.0f MiB", *usage(start))
        handler.flush()
        with open(log_path, "a", encoding="utf-8") as fh:  # the last line: the cause
            fh.write(f"qmri: error: {exc}\n")
        print(f"qmri: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except Exception:  # a bug, not bad input: the traceback goes to the log as well
        log.exception("failed after %.1f s (not an input problem: please report it)",
                      time.perf_counter() - start)  # fmt: skip
        raise
    log.info("done in %.1f s, peak memory %.0f MiB", *usage(start))
