"""Builders for the robustness catalogue (issue 14): small images, a one-session BIDS study,
and the checks every case shares (one line ``qmri: error: <file>: <problem>``)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

from qmri.cli import main
from qmri.errors import QMRIInputError
from qmri.study import Study

#: Grid of the small test images: 2 x 2 x 4 mm voxels, axis-aligned.
AFFINE = np.diag([2.0, 2.0, 4.0, 1.0])
SHAPE = (2, 3, 4)
FLIPS = [3.0, 6.0, 10.0, 15.0, 20.0]
TR = 0.01
ECHOES = [0.01, 0.02, 0.04, 0.06, 0.08]
INVERSIONS = [0.1, 0.4, 0.8, 1.6, 3.0]
BVALS = [0, 200, 400, 800]
DCE_FRAMES = 10
DCE_STEP_S = 7.0
T2_S = 0.07
ADC = 1.1e-3


def t1_map() -> np.ndarray:
    """True T1 (s) of the synthetic VFA series, one value per voxel (0.4 to 1.6 s)."""
    return np.linspace(0.4, 1.6, int(np.prod(SHAPE))).reshape(SHAPE)


def vfa_signal(b1: np.ndarray | float = 1.0) -> np.ndarray:
    """SPGR signal of :func:`t1_map` at :data:`FLIPS` and :data:`TR` (M0 1000), ``(*SHAPE, 5)``."""
    a = np.radians(FLIPS) * np.asarray(b1)[..., None]
    e1 = np.exp(-TR / t1_map())[..., None]
    return 1000 * np.sin(a) * (1 - e1) / (1 - np.cos(a) * e1)


def mese_signal() -> np.ndarray:
    """Mono-exponential T2 decay (T2 70 ms, S0 800) at :data:`ECHOES`, ``(*SHAPE, 5)``."""
    return 800 * np.exp(-np.asarray(ECHOES) / T2_S) * np.ones((*SHAPE, 1))


def dwi_signal() -> np.ndarray:
    """Mono-exponential diffusion decay (ADC 1.1e-3 mm^2/s) at :data:`BVALS`."""
    return 500 * np.exp(-np.asarray(BVALS) * ADC) * np.ones((*SHAPE, 1))


def save(
    path: Path, data: np.ndarray, affine: np.ndarray = AFFINE, dtype: type = np.float32
) -> Path:
    """Write ``data`` as NIfTI with nibabel's defaults (sform code 2, qform code 0)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data).astype(dtype), affine), str(path))
    return path


def write_json(path: Path, meta: dict[str, Any] | str) -> Path:
    """Write a sidecar (a dict as JSON, a string as it is)."""
    path.write_text(meta if isinstance(meta, str) else json.dumps(meta))
    return path


def read_map(path: Path) -> np.ndarray:
    """A written map's stored values."""
    return np.asarray(nib.load(str(path)).dataobj)


def cli_error(capsys: pytest.CaptureFixture[str], args: list[str]) -> str:
    """Run ``qmri`` with ``args``; check exit status 2 and one ``qmri: error:`` line on stderr
    (nothing else); return that line without the prefix."""
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("qmri: error: "), err
    return lines[0].removeprefix("qmri: error: ")


def cli_ok(capsys: pytest.CaptureFixture[str], args: list[str]) -> list[Path]:
    """Run ``qmri`` with ``args``; check exit status 0 and an empty stderr; return the maps."""
    capsys.readouterr()
    assert main(args) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    return [Path(p) for p in captured.out.split()]


def expect_error(func: Callable[..., Any], *args: Any, path: Path | str, match: str) -> str:
    """Call ``func(*args)``; it must raise one :class:`QMRIInputError` line naming ``path``
    first and matching ``match`` after it. Returns the problem."""
    with pytest.raises(QMRIInputError) as info:
        func(*args)
    text = str(info.value)
    assert "\n" not in text
    assert info.value.path == str(path), text
    assert text.startswith(f"{path}: ")
    assert re.search(match, info.value.problem), info.value.problem
    return info.value.problem


def expect_line(line: str, path: Path | str, match: str) -> None:
    """``line`` is ``<path>: <problem>`` with ``match`` found in the problem."""
    assert line.startswith(f"{path}: "), line
    assert re.search(match, line.removeprefix(f"{path}: ")), line


@dataclass
class StudyFiles:
    """A one-subject, one-session BIDS study with every series kind and its label map."""

    root: Path
    labels_dir: Path
    session: Path
    stem: str

    def anat(self, name: str) -> Path:
        return self.session / "anat" / f"{self.stem}_{name}"

    @property
    def dwi(self) -> Path:
        return self.session / "dwi" / f"{self.stem}_dwi.nii.gz"

    @property
    def dce(self) -> Path:
        return self.session / "perf" / f"{self.stem}_dce.nii.gz"

    @property
    def b1map(self) -> Path:
        return self.session / "fmap" / f"{self.stem}_TB1map.nii.gz"

    @property
    def dseg(self) -> Path:
        return self.labels_dir / "sub-01" / "ses-pre" / "anat" / f"{self.stem}_dseg.nii.gz"

    @property
    def participants(self) -> Path:
        return self.root / "participants.tsv"

    def plan(self) -> Study:
        """Index the study as the workflow does when it is planned (headers and sidecars)."""
        return Study(self.root, self.labels_dir, reference_suffix="T2w")


#: Labels of the study's ``dseg``: vertebral bodies L1-L3, posterior elements of L2, tumour.
DSEG_NAMES = {1: "vb_L1", 2: "vb_L2", 3: "vb_L3", 4: "pe_L2", 5: "tumor"}


def dseg_data() -> np.ndarray:
    """A label map on :data:`SHAPE`: L1, L2, L3 bodies slice by slice, tumour in L2, pe_L2."""
    labels = np.zeros(SHAPE, dtype=np.int16)
    labels[:, :, 3] = 1
    labels[:, :, 2] = 2
    labels[:, :, 1] = 3
    labels[0, 0, 2] = 5
    labels[1, 2, 0] = 4
    return labels


def write_dseg(path: Path, data: np.ndarray, names: dict[int, str] | str) -> None:
    """Write a label map and its ``dseg.tsv`` (a dict index -> name, or the TSV text)."""
    save(path, data, dtype=np.asarray(data).dtype)
    text = (
        names
        if isinstance(names, str)
        else "index\tname\n" + "".join(f"{i}\t{n}\n" for i, n in names.items())
    )
    Path(str(path).replace(".nii.gz", ".tsv")).write_text(text)


def build_study(root: Path) -> StudyFiles:
    """Write the study: reference, VFA (5 flips), IRT1 (5 TIs), MESE (5 echoes), DWI (4 b),
    DCE (10 frames, ``VolumeTiming``), TB1map (percent), sessions, participants and labels."""
    (root / "dataset_description.json").parent.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text('{"Name": "t", "BIDSVersion": "1.10.0"}')
    stem = "sub-01_ses-pre"
    ses = root / "sub-01" / "ses-pre"
    files = StudyFiles(root, root / "derivatives" / "labels", ses, stem)
    save(files.anat("T2w.nii.gz"), np.full(SHAPE, 100.0))
    vfa = vfa_signal()
    for i, fa in enumerate(FLIPS, start=1):
        p = save(files.anat(f"flip-{i}_VFA.nii.gz"), vfa[..., i - 1])
        write_json(p.with_name(p.name.replace(".nii.gz", ".json")),
                   {"FlipAngle": fa, "RepetitionTimeExcitation": TR})  # fmt: skip
    for i, ti in enumerate(INVERSIONS, start=1):
        p = save(files.anat(f"inv-{i}_IRT1.nii.gz"), np.full(SHAPE, 100.0 + i))
        write_json(p.with_name(p.name.replace(".nii.gz", ".json")),
                   {"InversionTime": ti, "RepetitionTime": 5.0})  # fmt: skip
    mese = mese_signal()
    for i, te in enumerate(ECHOES, start=1):
        p = save(files.anat(f"echo-{i}_MESE.nii.gz"), mese[..., i - 1])
        write_json(p.with_name(p.name.replace(".nii.gz", ".json")), {"EchoTime": te})
    save(files.dwi, dwi_signal())
    files.dwi.with_name(f"{stem}_dwi.bval").write_text(" ".join(map(str, BVALS)) + "\n")
    files.dwi.with_name(f"{stem}_dwi.bvec").write_text("0 1 0 0\n0 0 1 0\n0 0 0 1\n")
    save(files.dce, np.full((*SHAPE, DCE_FRAMES), 200.0))
    write_json(files.dce.with_name(f"{stem}_dce.json"), {
        "FlipAngle": 15, "RepetitionTimeExcitation": 0.004, "MagneticFieldStrength": 3,
        "VolumeTiming": [k * DCE_STEP_S for k in range(DCE_FRAMES)],
    })  # fmt: skip
    save(files.b1map, np.full(SHAPE, 100.0))
    (root / "sub-01" / "sub-01_sessions.tsv").write_text(
        "session_id\tdays_from_sbrt\nses-pre\t-3\n"
    )
    files.participants.write_text("participant_id\ttreated_levels\nsub-01\tL2\n")
    write_dseg(files.dseg, dseg_data(), DSEG_NAMES)
    return files


@pytest.fixture
def study(tmp_path: Path) -> StudyFiles:
    """A fresh one-session study (see :func:`build_study`); it plans without error."""
    files = build_study(tmp_path / "bids")
    files.plan()
    return files
