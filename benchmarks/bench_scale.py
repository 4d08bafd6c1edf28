"""Scale benchmark: does the workflow's cost per subject stay flat as the cohort grows?

Run with ``make bench-scale`` (or ``python benchmarks/bench_scale.py``). For each cohort size
(default 1, 4 and 16 subjects) a synthetic phantom cohort with two timepoints is written
(``qmri phantom DIR --subjects N --sessions pre,fu1 --seed 0``) and the whole workflow is run
locally (``snakemake --cores 2``) into a fresh output directory. Printed per cohort: the jobs
Snakemake schedules (from the ``--dry-run`` job stats) in total and per subject, the wall time of
the run and the wall time per subject; then the slope, the 16-subject cost per subject over the
4-subject one (target <= 1.2: no cost that grows with the cohort, such as a DAG or a cohort
table whose time grows faster than the number of subjects).

The phantoms and outputs go to a temporary directory, removed at the end unless ``--keep``.
The 16-subject run takes about 15-20 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [
    sys.executable,
    "-m",
    "snakemake",
    "--snakefile",
    str(ROOT / "workflow" / "Snakefile"),
]
SLOPE_TARGET = 1.2


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def job_counts(dry_run_stdout: str) -> tuple[int, int]:
    """Jobs ``snakemake --dry-run`` plans: in total, and those of a subject (``subject`` wildcard)."""
    total = int(re.search(r"^total\s+(\d+)\s*$", dry_run_stdout, flags=re.MULTILINE).group(1))
    per_subject = len(re.findall(r"^\s*wildcards: .*\bsubject=", dry_run_stdout, re.MULTILINE))
    return total, per_subject


def run_cohort(n: int, work: Path, cores: int, small: bool = False) -> dict[str, float | int]:
    bids = work / f"bids-{n}"
    out = work / f"out-{n}"
    shutil.rmtree(out, ignore_errors=True)
    if not (bids / "participants.tsv").exists():
        subprocess.run(
            [sys.executable, "-m", "qmri.cli", "phantom", str(bids), "--subjects", str(n),
             "--sessions", "pre,fu1", "--seed", "0", *(["--small"] if small else [])],
            check=True, env=_env(), capture_output=True, text=True,
        )  # fmt: skip
    config = [
        "--config", f"bids_dir={bids}", f"labels_dir={bids / 'derivatives' / 'labels'}",
        f"output_dir={out}",
    ]  # fmt: skip
    cmd = [*SNAKEMAKE, "--cores", str(cores), *config]
    dry = subprocess.run(
        [*cmd, "--dry-run"], cwd=ROOT, env=_env(), capture_output=True, text=True, check=True
    )
    total, per_subject = job_counts(dry.stdout)
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        sys.exit(f"bench_scale: the {n}-subject run failed:\n{res.stderr[-3000:]}")
    return {
        "subjects": n,
        "jobs": total,
        "jobs_per_subject": per_subject / n,
        "cohort_jobs": total - per_subject,
        "wall_s": wall,
        "wall_per_subject_s": wall / n,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--workdir", type=Path, help="keep phantoms and outputs here")
    parser.add_argument("--keep", action="store_true", help="do not remove the work directory")
    parser.add_argument(
        "--small", action="store_true",
        help="the small phantom (6 x 5 x 5 mm): ~3x faster, scheduling overhead weighs more",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    work = args.workdir or Path(tempfile.mkdtemp(prefix="qmri-bench-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    print(
        f"cohorts of {args.subjects} subjects (sessions pre, fu1), snakemake --cores {args.cores}"
    )
    print(f"{'subjects':>8} {'jobs':>6} {'jobs/subject':>13} {'wall (s)':>9} {'s/subject':>10}")
    rows = []
    try:
        for n in args.subjects:
            row = run_cohort(n, work, args.cores, args.small)
            rows.append(row)
            print(
                f"{n:>8} {row['jobs']:>6} {row['jobs_per_subject']:>13.1f} "
                f"{row['wall_s']:>9.1f} {row['wall_per_subject_s']:>10.1f}",
                flush=True,
            )
    finally:
        if not (args.keep or args.workdir):
            shutil.rmtree(work, ignore_errors=True)
    by_n = {row["subjects"]: row for row in rows}
    result: dict[str, object] = {"cores": args.cores, "cohorts": rows}
    if 4 in by_n and 16 in by_n:
        slope = by_n[16]["wall_per_subject_s"] / by_n[4]["wall_per_subject_s"]
        result["slope_16_over_4"] = slope
        verdict = "flat" if slope <= SLOPE_TARGET else "NOT flat"
        print(f"slope (16-subject / 4-subject cost per subject): {slope:.2f} "
              f"(target <= {SLOPE_TARGET}: {verdict})")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
