"""One-subject subsets of ``data_sample/`` and the workflow as the README runs it, for the
dataset, fault and privacy groups of the robustness catalogue (issue 14).

A subset holds ``sub-01`` of the committed sample: the chosen sessions (their rows of
``sub-01_sessions.tsv``), the chosen series, ``participants.tsv`` (its ``sub-01`` row) and the
baseline labels. Images can be symbolic links into ``data_sample/`` instead of copies (the
sidecars are always copies, so that a test can edit them).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data_sample"
SNAKEFILE = ROOT / "workflow" / "Snakefile"
CONFIG = ROOT / "config" / "config.yaml"

#: Every series of a sample session, by the end of its file names.
ALL_SERIES = ("T2w", "VFA", "MESE", "TB1map", "dwi", "dce")
#: Image and gradient files (linked with ``link=True``); everything else is copied.
_IMAGE_ENDINGS = (".nii.gz", ".bval", ".bvec")


def _series_of(name: str) -> str:
    stem = name.split(".")[0]
    return stem.rsplit("_", 1)[-1]


def sample_subset(
    root: Path,
    *,
    sessions: Iterable[str] = ("pre", "fu1"),
    series: Iterable[str] = ALL_SERIES,
    link: bool = False,
) -> Path:
    """Write a one-subject subset of the sample at ``root`` (the BIDS folder; labels in
    ``root/derivatives/labels``) and return ``root``.

    Parameters
    ----------
    root : Path
        The new dataset folder (must not exist).
    sessions : iterable of str
        Sessions of ``sub-01`` to keep (labels without ``ses-``; the baseline is ``pre``).
    series : iterable of str
        Series to keep, by file-name suffix (:data:`ALL_SERIES`; ``T2w`` is the reference).
    link : bool
        Make images, ``.bval`` and ``.bvec`` symbolic links into ``data_sample/`` (absolute);
        sidecars and tables are copied either way.
    """
    sessions, series = list(sessions), set(series)
    root.mkdir(parents=True)
    for name in ("dataset_description.json", "participants.json", "sessions.json"):
        shutil.copy(SAMPLE / name, root / name)
    rows = (SAMPLE / "participants.tsv").read_text().splitlines()
    (root / "participants.tsv").write_text(
        "\n".join([rows[0], *(r for r in rows[1:] if r.startswith("sub-01\t"))]) + "\n"
    )
    days = (SAMPLE / "sub-01" / "sub-01_sessions.tsv").read_text().splitlines()
    keep = [r for r in days[1:] if r.split("\t")[0].removeprefix("ses-") in sessions]
    (root / "sub-01").mkdir()
    (root / "sub-01" / "sub-01_sessions.tsv").write_text("\n".join([days[0], *keep]) + "\n")
    for session in sessions:
        src_dir = SAMPLE / "sub-01" / f"ses-{session}"
        for src in sorted(src_dir.rglob("*")):
            if not src.is_file() or _series_of(src.name) not in series:
                continue
            dst = root / src.relative_to(SAMPLE)
            dst.parent.mkdir(parents=True, exist_ok=True)
            if link and src.name.endswith(_IMAGE_ENDINGS):
                dst.symlink_to(src)
            else:
                shutil.copy(src, dst)
    labels = root / "derivatives" / "labels"
    shutil.copytree(SAMPLE / "derivatives" / "labels" / "sub-01", labels / "sub-01")
    shutil.copy(SAMPLE / "derivatives" / "labels" / "dataset_description.json", labels)
    return root


def sha256_tree(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root`` (links followed), by relative path; a symbolic
    link is also recorded as ``-> target``."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[f"{rel} ->"] = os.readlink(path)
        if path.is_file():
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def csv_digests(out: Path) -> dict[str, str]:
    """SHA-256 of every CSV of a workflow output (hidden files included), by relative path."""
    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*.csv"))
    }


def workflow_command(bids: Path, out: Path, *extra: str) -> list[str]:
    """The README's command (``snakemake --cores N --config bids_dir=... labels_dir=...
    output_dir=...``) with 2 cores, run from any folder: the Snakefile and the default config
    are named, as ``snakemake`` finds them itself when started in the repository."""
    return [
        sys.executable, "-m", "snakemake", "--snakefile", str(SNAKEFILE),
        "--configfile", str(CONFIG), "--cores", "2",
        "--config", f"bids_dir={bids}", f"labels_dir={bids / 'derivatives' / 'labels'}",
        f"output_dir={out}", *extra,
    ]  # fmt: skip


def workflow_env() -> dict[str, str]:
    """The environment of the test, with this interpreter's ``bin`` first on ``PATH``."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def run(cmd: list[str], cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` in ``cwd`` to its end (no check of the exit status)."""
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run(cmd, cwd=cwd, env=workflow_env(), capture_output=True, text=True,
                          timeout=timeout, check=False)  # fmt: skip


class Background:
    """A command in its own process group (a new session), its output in files.

    Parameters
    ----------
    cmd : list of str
        The command.
    cwd : Path
        Working folder (created); ``stdout.txt`` and ``stderr.txt`` are written there.
    """

    def __init__(self, cmd: list[str], cwd: Path) -> None:
        cwd.mkdir(parents=True, exist_ok=True)
        self.cwd = cwd
        self.stdout_path, self.stderr_path = cwd / "stdout.txt", cwd / "stderr.txt"
        with open(self.stdout_path, "w") as out, open(self.stderr_path, "w") as err:
            self.proc = subprocess.Popen(cmd, cwd=cwd, env=workflow_env(), stdout=out,
                                         stderr=err, start_new_session=True)  # fmt: skip
        self.pgid = self.proc.pid

    @property
    def output(self) -> str:
        """Snakemake's console output so far (it logs to stderr)."""
        return self.stdout_path.read_text() + self.stderr_path.read_text()

    def wait_for(self, condition: Callable[[], bool], timeout: float, poll: float = 0.005) -> None:
        """Poll ``condition`` until it holds; fail if the process ends or ``timeout`` (s)."""
        end = time.monotonic() + timeout
        while not condition():
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"the run ended (status {self.proc.returncode}) before the condition held:"
                    f"\n{self.output[-3000:]}"
                )
            if time.monotonic() > end:
                raise AssertionError(f"condition not met in {timeout} s:\n{self.output[-3000:]}")
            time.sleep(poll)

    def signal_group(self, sig: signal.Signals) -> None:
        """Send ``sig`` to every process of the group (Snakemake and its jobs)."""
        os.killpg(self.pgid, sig)

    def kill_group(self) -> None:
        """SIGKILL the whole group and wait until none of its processes is left."""
        self.signal_group(signal.SIGKILL)
        self.proc.wait(timeout=60)
        end = time.monotonic() + 30
        while group_members(self.pgid):
            if time.monotonic() > end:
                raise AssertionError(f"processes outlived SIGKILL: {group_members(self.pgid)}")
            time.sleep(0.05)

    def wait(self, timeout: float = 900) -> int:
        """Wait for the end; return the exit status."""
        return self.proc.wait(timeout=timeout)


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``, from ``/proc``."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(stat.parent.name))
    return members
