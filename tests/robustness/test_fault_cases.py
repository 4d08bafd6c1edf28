"""Robustness catalogue, fault group (issue 14; outcomes listed in docs/robustness.md).

The workflow, run as the README runs it (``snakemake --cores 2 --config bids_dir=...
labels_dir=... output_dir=...``), on a one-subject subset of the sample (``sub-01``, ``pre`` and
``fu1``, reference + VFA + B1 map: 21 jobs) kept under paths with spaces and non-ASCII
characters:

* the BIDS input made read-only (``chmod -R a-w``): the run works and no input changes
  (SHA-256 of every file, and the file list);
* a second run on the same ``output_dir`` while the first runs: refused before any job, from
  another working folder (the output-folder lock, :mod:`qmri.runlock`) and from the same one
  (Snakemake's lock in ``.snakemake/``); the output is untouched and the first run unaffected;
* SIGKILL of the whole Snakemake process group while a fit writes its maps and again while
  the subject's tables are written: every CSV left behind is complete (the bytes of the
  uninterrupted run's), and the README's command, run again, finishes with every CSV
  byte-identical to the uninterrupted run.
"""

from __future__ import annotations

import re
import signal
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from qmri.runlock import LOCK_NAME, TEMPORARY_NAME

from .subsets import (
    Background,
    csv_digests,
    run,
    sample_subset,
    sha256_tree,
    workflow_command,
)

pytestmark = pytest.mark.slow

#: The series of the subset: one fit (VFA with B1 correction) keeps the runs short.
SERIES = ("T2w", "VFA", "TB1map")
#: Snakemake's refusal when its own lock (``.snakemake/locks`` of the working folder) is held.
SNAKEMAKE_LOCKED = "Error: Directory cannot be locked."


@dataclass
class Reference:
    """The uninterrupted run (inputs read-only) and what a second run met during it."""

    bids: Path
    out: Path
    inputs_before: dict[str, str]
    inputs_after: dict[str, str]
    status: int
    csvs: dict[str, str]
    files: list[str]
    other_folder: subprocess.CompletedProcess[str]
    same_folder: subprocess.CompletedProcess[str]
    output_before: dict[str, tuple[int, int]]
    output_after: dict[str, tuple[int, int]]
    holder_pid: int


def _output_state(out: Path) -> dict[str, tuple[int, int]]:
    """Size and modification time (ns) of every file of the output."""
    return {
        str(p.relative_to(out)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(out.rglob("*"))
        if p.is_file()
    }


def _files(out: Path) -> list[str]:
    """Every file of an output but the job logs (they hold times)."""
    return sorted(
        str(p.relative_to(out))
        for p in out.rglob("*")
        if p.is_file() and p.relative_to(out).parts[0] != "logs"
    )


def _chmod_tree(root: Path, writable: bool) -> None:
    """``chmod -R a-w`` (or ``u+w`` back, for the clean-up)."""
    subprocess.run(["chmod", "-R", "u+w" if writable else "a-w", str(root)], check=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Reference:
    """The uninterrupted run on read-only inputs; while its first job runs (the run frozen
    with SIGSTOP, so that the output cannot change meanwhile), the same command is started
    from another working folder and from the same one."""
    base = tmp_path_factory.mktemp("faults")
    bids = sample_subset(base / "in put ä é 日本" / "bids", series=SERIES)
    out = base / "out put ü" / "qmri"
    before = sha256_tree(bids)
    _chmod_tree(bids, writable=False)
    try:
        first = Background(workflow_command(bids, out), base / "wd-first")
        first.wait_for(lambda: any((out / "logs").rglob("*.log")), timeout=600)
        first.signal_group(signal.SIGSTOP)
        try:
            output_before = _output_state(out)
            other = run(workflow_command(bids, out), base / "wd-other")
            same = run(workflow_command(bids, out), base / "wd-first")
            output_after = _output_state(out)
        finally:
            first.signal_group(signal.SIGCONT)
        status = first.wait()
        if status != 0:
            pytest.fail(f"the reference run failed:\n{first.output[-3000:]}")
        after = sha256_tree(bids)
    finally:
        _chmod_tree(bids, writable=True)
    return Reference(bids, out, before, after, status, csv_digests(out), _files(out), other,
                     same, output_before, output_after, first.pgid)  # fmt: skip


def test_read_only_inputs_are_read_and_left_unchanged(reference):
    assert reference.status == 0
    assert len(reference.csvs) >= 10
    assert reference.inputs_after == reference.inputs_before
    assert not (reference.out / LOCK_NAME).exists()  # released at the end of the run


def test_read_only_really_means_no_write_permission(tmp_path):
    """What ``chmod -R a-w`` leaves: no write bit on any file or folder of the input."""
    bids = sample_subset(tmp_path / "bids", sessions=("pre",), series=("T2w",))
    _chmod_tree(bids, writable=False)
    try:
        modes = [p.stat().st_mode for p in [bids, *bids.rglob("*")]]
        assert all(not (m & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)) for m in modes)
    finally:
        _chmod_tree(bids, writable=True)


def test_a_second_run_from_another_folder_is_refused_by_the_output_lock(reference):
    res = reference.other_folder
    assert res.returncode == 1
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith(
        f"qmri: error: {reference.out}: output_dir is in use by another qmri run "
        f"(pid {reference.holder_pid} on host "
    ), last
    assert f"started in {reference.out.parents[1] / 'wd-first'})" in last
    assert "; wait for it to end or choose another output_dir" in last
    assert not re.search(r"^\[.*\]\n(local)?rule ", res.stderr, flags=re.MULTILINE)  # no job
    assert reference.output_after == reference.output_before


def test_a_second_run_from_the_same_folder_is_refused_by_snakemakes_lock(reference):
    res = reference.same_folder
    assert res.returncode == 1
    assert SNAKEMAKE_LOCKED in res.stderr
    assert "Building DAG of jobs" in res.stderr
    assert "Job stats" not in res.stderr  # refused before it planned the jobs
    assert reference.output_after == reference.output_before


def _complete_csvs_only(out: Path, reference: Reference) -> list[str]:
    """Every CSV a killed run left is one of the uninterrupted run's, byte for byte (tables
    are written atomically). Returns the CSVs present."""
    left = csv_digests(out)
    for name, digest in left.items():
        assert not TEMPORARY_NAME.match(Path(name).name), name
        assert reference.csvs.get(name) == digest, name
    return sorted(left)


def _temporaries(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if TEMPORARY_NAME.match(p.name)]


def test_sigkill_during_a_fit_and_a_table_write_then_the_same_command_gives_the_same_csvs(
    reference, tmp_path
):
    """Two kills of the whole process group, each followed by the README's command.

    1. When the first map of a fit appears (that fit is writing its maps; the other session's
       fit is still running): SIGKILL. No table exists yet.
    2. The same command again: Snakemake's lock in ``.snakemake/`` survived the kill, so it
       is refused with Snakemake's message, which names ``--unlock``; ``snakemake --unlock``
       (same arguments) clears it. qmri's own output lock died with the process. The command
       then redoes the interrupted fits (the default profile's ``rerun-incomplete``; nothing
       to add on the command line), removes what the interrupted writes left
       (:func:`qmri.runlock.sweep_temporaries`) and goes on; when the subject's tables job
       has started: SIGKILL again, before its four tables are all written.
    3. ``--unlock``, the same command: it finishes; every CSV is byte-identical to the
       uninterrupted run's, the output holds the same files (no temporary left), no lock.
    """
    out = tmp_path / "out"
    wd = tmp_path / "wd"
    cmd = workflow_command(reference.bids, out)
    fit_maps = "sub-01/ses-*/anat/*_desc-vfa_*.nii.gz"

    fitting = Background(cmd, wd)
    fitting.wait_for(lambda: any(out.glob(fit_maps)), timeout=600)
    fitting.kill_group()
    assert _complete_csvs_only(out, reference) == []
    maps = sorted(p.name for p in out.glob(fit_maps))
    leftovers = _temporaries(out)
    print(f"killed during the fits: {len(maps)} of 8 maps, {len(leftovers)} temporaries left")
    assert len(maps) < 8

    refused = run(cmd, wd)
    assert refused.returncode == 1
    assert SNAKEMAKE_LOCKED in refused.stderr
    assert "It can be removed with the --unlock argument." in " ".join(refused.stderr.split())
    assert run([*cmd, "--unlock"], wd).returncode == 0

    subject_tables = out / "sub-01"
    names = [subject_tables / f"sub-01_{t}.csv" for t in ("roistats", "response", "prm",
                                                             "registration")]  # fmt: skip
    writing = Background(cmd, wd)
    writing.wait_for(lambda: (out / "logs" / "subject_tables" / "sub-01.log").exists(), 900)
    writing.kill_group()
    for path in leftovers:  # swept when the rerun took the output lock
        assert f"qmri: removed {len(leftovers)} temporary file(s)" in writing.output
        assert path.name in writing.output
    present = _complete_csvs_only(out, reference)
    written = [p.name for p in names if p.exists()]
    print(f"killed during the tables: {len(present)} CSVs left, subject tables {written}")
    assert len(written) < 4
    assert not any(name.startswith("cohort/") for name in present)

    assert run([*cmd, "--unlock"], wd).returncode == 0
    final = run(cmd, wd)
    assert final.returncode == 0, final.stderr[-3000:]
    assert csv_digests(out) == reference.csvs
    assert _files(out) == reference.files
    assert not (out / LOCK_NAME).exists()
    assert sha256_tree(reference.bids) == reference.inputs_before
