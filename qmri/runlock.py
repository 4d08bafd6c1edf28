"""One workflow run per output folder: a lock held by the running Snakemake process.

Snakemake's own lock lives in ``.snakemake/`` of the folder it is started in, so two runs
started from different folders on one ``output_dir`` would both write into it. The workflow
takes :func:`hold` when it starts (its ``onstart`` hook) and :func:`release` when it ends: an
exclusive ``flock`` on ``<output_dir>/.qmri-run.lock``, held on an open file descriptor of the
Snakemake process. A second run is refused with one line naming the folder and the run that
holds it (:class:`OutputDirInUse`).

The lock belongs to the process, not to the file: when the process ends in any way (success,
error, Ctrl-C, SIGKILL, a power cut) the kernel drops it, so a stale lock file never blocks
the next run and needs no clean-up (unlike Snakemake's own lock after a kill, which asks for
``snakemake --unlock``). The descriptor is not inherited by the jobs Snakemake starts (Python
opens it close-on-exec), so a job that outlives a killed Snakemake does not keep the lock.
``flock`` works on local file systems and on NFS (Linux maps it to NFS byte-range locks).

A killed run can leave the temporary file of an interrupted atomic write
(:func:`qmri.io.atomic_output`: ``.<name>.<8 random characters><suffixes>`` beside the output).
Holding the lock proves that no other run writes into the folder, so :func:`hold` removes
those leftovers (:func:`sweep_temporaries`); the job that was writing is redone anyway (its
outputs are incomplete).
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import re
import socket
import sys
from pathlib import Path
from typing import Self

from qmri.errors import QMRIInputError

__all__ = [
    "LOCK_NAME",
    "OutputDirInUse",
    "RunLock",
    "hold",
    "hold_or_exit",
    "release",
    "sweep_temporaries",
]

#: Name of the lock file in ``output_dir`` (hidden: the BIDS validator skips dot files).
LOCK_NAME = ".qmri-run.lock"


class OutputDirInUse(QMRIInputError):
    """Another running process holds the lock of the output folder."""


class RunLock:
    """An exclusive lock on an output folder, held until :meth:`release` or process exit.

    Parameters
    ----------
    output_dir : str or Path
        The workflow's ``output_dir``; created if missing.

    Raises
    ------
    OutputDirInUse
        Another live process holds the lock (the message names the folder, and the process,
        host, start time and working folder of the run that holds it).
    QMRIInputError
        The folder cannot be created or the lock file cannot be opened (e.g. not writable).
    """

    def __init__(self, output_dir: str | Path) -> None:
        self.output_dir = Path(output_dir)
        self.path = self.output_dir / LOCK_NAME
        self._fd: int | None = None
        #: Temporary files of interrupted writes :func:`hold` removed on taking the lock.
        self.swept: list[Path] = []
        self._acquire()

    @property
    def held(self) -> bool:
        """True while this object holds the lock."""
        return self._fd is not None

    def _acquire(self) -> None:
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise QMRIInputError(f"cannot create the output folder ({exc.strerror})",
                                 self.output_dir) from None  # fmt: skip
        while True:  # retry if the file was replaced between open and flock (see release)
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                raise QMRIInputError(
                    f"cannot open the run lock {LOCK_NAME} ({exc.strerror})", self.output_dir
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise OutputDirInUse(
                    f"output_dir is in use by another qmri run ({holder}); wait for it to end "
                    "or choose another output_dir (the lock goes with that process: nothing "
                    "to remove by hand)",
                    self.output_dir,
                ) from None
            except OSError as exc:
                os.close(fd)
                raise QMRIInputError(
                    f"cannot lock {LOCK_NAME} ({exc.strerror}): the file system does not "
                    "support flock",
                    self.output_dir,
                ) from None
            if _same_file(fd, self.path):
                break
            os.close(fd)  # the holder removed the file after we opened it: lock the new one
        _write_holder(fd)
        self._fd = fd

    def release(self) -> None:
        """Drop the lock and remove the lock file (a no-op when not held).

        The file is removed while the lock is still held, so a run waiting to open it either
        locks the removed file (and retries on the new one, see ``_acquire``) or creates a new
        one; two runs never both believe they hold the folder.
        """
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            if _same_file(self._fd, self.path):
                self.path.unlink()
        os.close(self._fd)  # closing drops the flock
        self._fd = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open on ``fd``."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _write_holder(fd: int) -> None:
    """Record who holds the lock (for the message a refused run prints)."""
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cwd": os.getcwd(),
    }
    data = (json.dumps(record) + "\n").encode("utf-8")
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def _read_holder(fd: int) -> str:
    """``pid P on host H since T, started in D`` from the lock file (what is readable)."""
    try:
        record = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
        return (
            f"pid {record['pid']} on host {record['host']} since {record['started']}, "
            f"started in {record['cwd']}"
        )
    except (OSError, ValueError, KeyError, TypeError):
        return "holder not recorded yet"


#: Name of a temporary file of :func:`qmri.io.atomic_output` (``tempfile.mkstemp`` with the
#: prefix ``.<stem>.``, 8 random characters of ``[a-z0-9_]`` and the suffixes of the target).
TEMPORARY_NAME = re.compile(r"^\.[^.]*\.[a-z0-9_]{8}(\.[^.]+)+$")


def sweep_temporaries(output_dir: str | Path) -> list[Path]:
    """Remove what interrupted atomic writes left in ``output_dir`` (call it with the lock
    held: then no run is writing there). ``.snakemake/`` (when Snakemake runs inside the
    output folder) is left alone.

    Returns
    -------
    list of Path
        The files removed.
    """
    removed = []
    for folder, dirs, files in os.walk(output_dir):
        dirs[:] = [d for d in dirs if d != ".snakemake"]
        for name in sorted(files):
            path = Path(folder) / name
            if TEMPORARY_NAME.match(name) and path.is_file() and not path.is_symlink():
                path.unlink()
                removed.append(path)
    return removed


#: Locks held by this process, by resolved output folder (kept alive here: a lock object that
#: is garbage-collected would close its descriptor and so drop the lock).
_HELD: dict[Path, RunLock] = {}


def hold(output_dir: str | Path) -> RunLock:
    """Take the lock of ``output_dir`` for the rest of this process (or until :func:`release`).

    Taking it again in the same process returns the lock already held.

    Raises
    ------
    OutputDirInUse
        Another process holds it.
    """
    key = Path(output_dir).resolve()
    lock = _HELD.get(key)
    if lock is None or not lock.held:
        lock = _HELD[key] = RunLock(output_dir)
        lock.swept = sweep_temporaries(output_dir)
    return lock


def release(output_dir: str | Path) -> None:
    """Release the lock :func:`hold` took on ``output_dir`` (a no-op if none is held)."""
    lock = _HELD.pop(Path(output_dir).resolve(), None)
    if lock is not None:
        lock.release()


def hold_or_exit(output_dir: str | Path) -> RunLock:
    """:func:`hold` for the workflow's ``onstart`` hook: on refusal print the one line
    ``qmri: error: <output_dir>: ...`` and end the run (exit status 1, before any job).
    Leftovers of a killed run that it removed are named on stderr (one line)."""
    try:
        lock = hold(output_dir)
    except QMRIInputError as error:
        sys.exit(f"qmri: error: {error}")
    if lock.swept:
        print(f"qmri: removed {len(lock.swept)} temporary file(s) of interrupted writes in "
              f"{output_dir}: {', '.join(p.name for p in lock.swept)}", file=sys.stderr)  # fmt: skip
    return lock
