"""The output-folder lock of a workflow run (:mod:`qmri.runlock`, issue 14).

The workflow's use of it (a second run refused, a killed run's rerun not blocked) is tested
end to end in ``tests/robustness/test_fault_cases.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from qmri import runlock
from qmri.errors import QMRIInputError
from qmri.io import atomic_output
from qmri.runlock import LOCK_NAME, OutputDirInUse, RunLock


def _holder(out: Path, *, then: str = "time.sleep(120)") -> subprocess.Popen[str]:
    """A process that takes the lock with :func:`runlock.hold`, prints ``held`` and runs
    ``then``."""
    code = textwrap.dedent(f"""
        import subprocess, sys, time
        from qmri import runlock
        runlock.hold({str(out)!r})
        print("held", flush=True)
        {then}
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    assert proc.stdout.readline().strip() == "held"
    return proc


def _kill(proc: subprocess.Popen[str]) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()


class _Interrupted(Exception):
    pass


def _interrupted_write(target: Path) -> str:
    """What :func:`qmri.io.atomic_output` leaves when its process is killed mid-write: the
    temporary file beside ``target`` (a kill skips the clean-up that an exception runs)."""
    try:
        with atomic_output(target) as tmp:
            tmp.write_text("partial")
            os.link(tmp, tmp.with_name(tmp.name + ".keep"))
            raise _Interrupted
    except _Interrupted:
        tmp.with_name(tmp.name + ".keep").rename(tmp)
    return tmp.name


def test_a_second_holder_is_refused_with_one_line_naming_the_folder_and_the_holder(tmp_path):
    out = tmp_path / "out put ü"
    proc = _holder(out)
    try:
        with pytest.raises(OutputDirInUse) as info:
            RunLock(out)
        text = str(info.value)
        assert "\n" not in text
        assert info.value.path == str(out)
        assert text.startswith(
            f"{out}: output_dir is in use by another qmri run (pid {proc.pid} on host "
        )
        assert f", started in {Path.cwd()}); wait for it to end or choose another " in text
        record = json.loads((out / LOCK_NAME).read_text())
        assert record["pid"] == proc.pid
    finally:
        _kill(proc)


def test_the_lock_dies_with_its_process_and_its_stale_file_blocks_nothing(tmp_path):
    out = tmp_path / "out"
    _kill(_holder(out))
    assert (out / LOCK_NAME).exists()  # SIGKILL: the file stays, the lock does not
    with RunLock(out) as lock:
        assert lock.held
        assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert not lock.held
    assert not (out / LOCK_NAME).exists()  # released: the file is removed


def test_jobs_started_by_the_holder_do_not_inherit_the_lock(tmp_path):
    """A job that outlives a killed Snakemake must not keep the folder locked: the lock's
    descriptor is close-on-exec, even for a child started with ``close_fds=False``."""
    out = tmp_path / "out"
    proc = _holder(out, then=textwrap.dedent("""
        child = subprocess.Popen(["sleep", "60"], close_fds=False)
        print(child.pid, flush=True)
        time.sleep(120)
    """).replace("\n", "\n        "))  # fmt: skip
    child = int(proc.stdout.readline())
    try:
        os.kill(proc.pid, signal.SIGKILL)  # the holder alone: its child lives on
        proc.wait(timeout=30)
        os.kill(child, 0)  # still running
        with RunLock(out) as lock:
            assert lock.held
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        proc.stdout.close()
        os.kill(child, signal.SIGKILL)


def test_hold_is_kept_for_the_process_and_released_by_release(tmp_path):
    out = tmp_path / "out"
    first = runlock.hold(out)
    try:
        assert runlock.hold(out) is first  # taking it again in the same process
        with pytest.raises(OutputDirInUse):
            RunLock(out)  # another open file description: refused, as another process is
    finally:
        runlock.release(out)
    assert not first.held
    runlock.release(out)  # a no-op when not held
    with RunLock(out):
        pass


def test_hold_or_exit_ends_the_run_with_the_one_line(tmp_path):
    out = tmp_path / "out"
    proc = _holder(out)
    try:
        with pytest.raises(SystemExit) as info:
            runlock.hold_or_exit(out)
        assert str(info.value.code).startswith(f"qmri: error: {out}: output_dir is in use by ")
    finally:
        _kill(proc)


def test_an_output_folder_that_cannot_be_created_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(QMRIInputError) as info:
        RunLock(blocker / "out")
    assert (
        str(info.value) == f"{blocker / 'out'}: cannot create the output folder (Not a directory)"
    )


def test_taking_the_lock_removes_what_interrupted_atomic_writes_left(tmp_path, capsys):
    """A temporary of :func:`qmri.io.atomic_output` left by a kill goes; outputs and other
    dot files (``.bidsignore``, the lock itself) stay."""
    out = tmp_path / "out"
    (out / "sub-01" / "anat").mkdir(parents=True)
    names = {
        name: _interrupted_write(out / "sub-01" / "anat" / name)
        for name in ("sub-01_T1map.nii.gz", "sub-01_roistats.csv", ".bidsignore", "README")
    }
    kept = [
        out / ".bidsignore",
        out / "sub-01" / "sub-01_roistats.csv",
        out / ".snakemake" / ".x.abcdefgh.csv",
    ]
    for path in kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("complete")
    assert all(runlock.TEMPORARY_NAME.match(n) for n in names.values())
    lock = runlock.hold_or_exit(out)
    try:
        assert sorted(p.name for p in lock.swept) == sorted(names.values())
        assert not any((out / "sub-01" / "anat" / n).exists() for n in names.values())
        assert all(p.read_text() == "complete" for p in kept)
        assert (out / LOCK_NAME).exists()
        err = capsys.readouterr().err
        assert err.startswith(f"qmri: removed 4 temporary file(s) of interrupted writes in {out}")
    finally:
        runlock.release(out)
