"""Robustness catalogue, sidecar group (issue 14; outcomes listed in docs/robustness.md).

A bad sidecar, ``.bval`` or ``.bvec`` stops the study index the workflow plans from
(:class:`qmri.study.Study`) before any job, with one line naming that file, the field, the value
and the unit expected; ``qmri fit`` exits 2 with the same line. Plausibility ranges are
:data:`qmri.io.SIDECAR_RANGES`. A B1 map's voxels are only read by the job that uses it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from qmri import bids
from qmri.preprocess import load_b1_on_grid
from qmri.registry import SERIES_KINDS

from .conftest import (
    AFFINE,
    BVALS,
    DCE_FRAMES,
    DCE_STEP_S,
    ECHOES,
    FLIPS,
    SHAPE,
    TR,
    StudyFiles,
    cli_error,
    cli_ok,
    dwi_signal,
    expect_error,
    expect_line,
    mese_signal,
    read_map,
    save,
    vfa_signal,
    write_json,
)

# --------------------------------------------------------------------------------------------
# planning: the study index refuses the bad file before any job
# --------------------------------------------------------------------------------------------


def _side(study: StudyFiles, name: str) -> Path:
    return study.anat(name).with_suffix("").with_suffix(".json")


def _vfa2(study: StudyFiles) -> Path:
    return _side(study, "flip-2_VFA.nii.gz")


def _dce_json(study: StudyFiles) -> Path:
    return study.dce.with_name("sub-01_ses-pre_dce.json")


def _bval(study: StudyFiles) -> Path:
    return study.dwi.with_name("sub-01_ses-pre_dwi.bval")


def _bvec(study: StudyFiles) -> Path:
    return study.dwi.with_name("sub-01_ses-pre_dwi.bvec")


def _edit(path: Path, **changes) -> None:
    meta = json.loads(path.read_text())
    meta.update(changes)
    path.write_text(json.dumps(meta))


def _dce_timing(study: StudyFiles, times: list[float]) -> None:
    _edit(_dce_json(study), VolumeTiming=times)


def _two_frame_dce(study: StudyFiles) -> None:
    save(study.dce, np.full((*SHAPE, 2), 200.0))
    _dce_timing(study, [0.0, 7.0])


def _mese_in_ms(study: StudyFiles) -> None:
    for i, te in enumerate(ECHOES, start=1):
        write_json(_side(study, f"echo-{i}_MESE.nii.gz"), {"EchoTime": te * 1000})


def _bvecs(study: StudyFiles, text: str) -> None:
    _bvec(study).write_text(text)


_TIMING = [k * DCE_STEP_S for k in range(DCE_FRAMES)]
_MS = r" \(BIDS gives times in seconds: was it in ms\?\)$"


@dataclass(frozen=True)
class PlanCase:
    """A bad sidecar (or ``.bval``/``.bvec``) written into the study, and the line it gives."""

    name: str
    damage: Callable[[StudyFiles], None]
    path: Callable[[StudyFiles], Path]  # the file the line must name
    problem: str  # regular expression for the problem (after "<file>: ")


PLAN_CASES = [
    PlanCase(
        "invalid JSON",
        lambda s: _vfa2(s).write_text('{"FlipAngle": 6, RepetitionTimeExcitation: 0.01}'),
        _vfa2,
        r"^invalid JSON \(Expecting property name enclosed in double quotes at line 1, "
        r"column 18\)$",
    ),
    PlanCase(
        "sidecar is a JSON list",
        lambda s: _vfa2(s).write_text("[6, 0.01]"),
        _vfa2,
        r"^JSON sidecar must hold an object$",
    ),
    PlanCase(
        "sidecar missing",
        lambda s: _vfa2(s).unlink(),
        _vfa2,
        r"^JSON sidecar not found$",
    ),
    PlanCase(
        "FlipAngle as a string holding a number",
        lambda s: _edit(_vfa2(s), FlipAngle="6"),
        _vfa2,
        r"^'FlipAngle' must be a number, got '6'$",
    ),
    PlanCase(
        "FlipAngle as a word",
        lambda s: _edit(_vfa2(s), FlipAngle="six"),
        _vfa2,
        r"^'FlipAngle' must be a number, got 'six'$",
    ),
    PlanCase(
        "FlipAngle true",
        lambda s: _edit(_vfa2(s), FlipAngle=True),
        _vfa2,
        r"^'FlipAngle' must be a number or numbers \(deg\), got True$",
    ),
    PlanCase(
        "FlipAngle 0",
        lambda s: _edit(_vfa2(s), FlipAngle=0),
        _vfa2,
        r"^'FlipAngle' is 0, outside the plausible range above 0 to 180 deg$",
    ),
    PlanCase(
        "FlipAngle 200",
        lambda s: _edit(_vfa2(s), FlipAngle=200),
        _vfa2,
        r"^'FlipAngle' is 200, outside the plausible range above 0 to 180 deg$",
    ),
    PlanCase(
        "negative TR",
        lambda s: _edit(_vfa2(s), RepetitionTimeExcitation=-0.01),
        _vfa2,
        r"^'RepetitionTimeExcitation' is -0.01, outside the plausible range 0.001 to 1 s$",
    ),
    PlanCase(
        "TR in ms",
        lambda s: _edit(_vfa2(s), RepetitionTimeExcitation=10),
        _vfa2,
        r"^'RepetitionTimeExcitation' is 10, outside the plausible range 0.001 to 1 s" + _MS,
    ),
    PlanCase(
        "EchoTime in ms",
        _mese_in_ms,
        lambda s: _side(s, "echo-1_MESE.nii.gz"),
        r"^'EchoTime' is 10.0, outside the plausible range 1e-05 to 1 s" + _MS,
    ),
    PlanCase(
        "EchoTime NaN",
        lambda s: _side(s, "echo-2_MESE.nii.gz").write_text('{"EchoTime": NaN}'),
        lambda s: _side(s, "echo-2_MESE.nii.gz"),
        r"^'EchoTime' is nan, outside the plausible range 1e-05 to 1 s$",
    ),
    PlanCase(
        "InversionTime in ms",
        lambda s: _edit(_side(s, "inv-3_IRT1.nii.gz"), InversionTime=800),
        lambda s: _side(s, "inv-3_IRT1.nii.gz"),
        r"^'InversionTime' is 800, outside the plausible range 0.001 to 10 s" + _MS,
    ),
    PlanCase(
        "RepetitionTime in ms",
        lambda s: _edit(_side(s, "inv-1_IRT1.nii.gz"), RepetitionTime=5000),
        lambda s: _side(s, "inv-1_IRT1.nii.gz"),
        r"^'RepetitionTime' is 5000, outside the plausible range 0.001 to 30 s" + _MS,
    ),
    PlanCase(
        "MagneticFieldStrength in mT",
        lambda s: _edit(_dce_json(s), MagneticFieldStrength=3000),
        _dce_json,
        r"^'MagneticFieldStrength' is 3000, outside the plausible range 0.1 to 12 T$",
    ),
    PlanCase(
        "DCE excitation TR in ms",
        lambda s: _edit(_dce_json(s), RepetitionTimeExcitation=4),
        _dce_json,
        r"^'RepetitionTimeExcitation' is 4, outside the plausible range 0.001 to 1 s" + _MS,
    ),
    PlanCase(
        "non-increasing VolumeTiming",
        lambda s: _dce_timing(s, [*_TIMING[:3], _TIMING[2], *_TIMING[4:]]),
        _dce_json,
        r"^'VolumeTiming' must increase: volume 3 at 14 s does not follow volume 2 at 14 s$",
    ),
    PlanCase(
        "VolumeTiming in ms",
        lambda s: _dce_timing(s, [t * 1000 for t in _TIMING]),
        _dce_json,
        r"^'VolumeTiming' spans 63000 s, more than an hour" + _MS,
    ),
    PlanCase(
        "VolumeTiming of the wrong length",
        lambda s: _dce_timing(s, _TIMING[:-1]),
        _dce_json,
        r"^9 frame times for 10 frames$",
    ),
    PlanCase(
        "DCE with 2 frames",
        _two_frame_dce,
        lambda s: s.dce,
        r"^2 frames are too few for a kinetic fit: DCE needs at least 7 \(2 before the bolus, "
        r"5 after it\)$",
    ),
    PlanCase(
        ".bval with the wrong count",
        lambda s: _bval(s).write_text("0 200 400\n"),
        lambda s: s.dwi,
        r"^4 volumes but 3 b-values in sub-01_ses-pre_dwi\.bval$",
    ),
    PlanCase(
        ".bval negative",
        lambda s: _bval(s).write_text("0 200 -400 800\n"),
        _bval,
        r"^b-values must be finite and non-negative \(s/mm\^2\)$",
    ),
    PlanCase(
        ".bvec not unit length",
        lambda s: _bvecs(s, "0 0.8 0 0\n0 0 1 0\n0 0 0 1\n"),
        _bvec,
        r"^b-vector of volume 1 has length 0.8, not 1 \(tolerance 1%\): qmri needs unit "
        r"vectors \(a b-value folded into the vector length is not supported: give it in the "
        r"\.bval\)$",
    ),
    PlanCase(
        ".bvec zero for a b > 0 volume",
        lambda s: _bvecs(s, "0 1 0 0\n0 0 0 0\n0 0 0 1\n"),
        _bvec,
        r"^b-vector of volume 2 is zero but its b-value is 400 s/mm\^2 \(only b = 0 volumes "
        r"may have zero vectors\)$",
    ),
    PlanCase(
        ".bvec with 2 rows",
        lambda s: _bvecs(s, "0 1 0 0\n0 0 1 0\n"),
        _bvec,
        r"^expected 3 rows of 4 b-vectors, got shape \(2, 4\)$",
    ),
]


@pytest.mark.parametrize("case", PLAN_CASES, ids=[c.name for c in PLAN_CASES])
def test_bad_sidecar_stops_the_plan_before_any_job(case, study):
    case.damage(study)
    expect_error(study.plan, path=case.path(study), match=case.problem)


def test_bvecs_within_one_percent_are_normalised(study):
    """Rounded vectors (length 1.005) are read as unit vectors; exact ones are kept as
    written, and a b = 0 volume may have a zero vector (the study's first)."""
    _bvecs(study, "0 1.005 0 0\n0 0 1 0\n0 0 0 1\n")
    series = SERIES_KINDS["dwi"].load(study.plan().series_files("01", "pre", "dwi"))
    vecs = np.asarray(series.parameters["bvecs"])
    assert_array_equal(vecs, [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    exact = np.array([[0, 0.6, 0, 0], [0, 0.8, 1, 0], [0, 0, 0, 1]])
    _bvecs(study, "\n".join(" ".join(repr(float(v)) for v in row) for row in exact) + "\n")
    got = bids.read_bvecs(_bvec(study), 4, bvals=np.asarray(BVALS))
    assert_array_equal(got, exact.T)  # unit to 1e-6: returned as read, bit for bit


def test_b1_map_of_zeros_is_refused_at_the_job(study):
    """The plan reads B1 headers only; the job that uses the map refuses it."""
    save(study.b1map, np.zeros(SHAPE))
    study.plan()
    expect_error(
        load_b1_on_grid, study.b1map, SHAPE, AFFINE, path=study.b1map,
        match=r"^B1 map has no positive values \(every voxel is 0, negative or not finite\): "
        r"it cannot correct a flip angle$",
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# qmri fit: the sidecar beside DATA, and the same values given as flags
# --------------------------------------------------------------------------------------------

VFA_FLAGS = ["--flip-angles", ",".join(map(str, FLIPS)), "--tr", str(TR)]


def _vfa(tmp_path: Path, meta: dict | str | None = None) -> tuple[Path, Path]:
    data = save(tmp_path / "vfa.nii.gz", vfa_signal())
    side = tmp_path / "vfa.json"
    if meta is not None:
        write_json(side, meta)
    return data, side


@dataclass(frozen=True)
class CliCase:
    """A ``qmri fit`` call on bad input and the line it must give."""

    name: str
    run: Callable[[Path], tuple[list[str], Path]]  # run(tmp_path) -> (args, file named)
    problem: str


def _vfa_case(meta: dict | str, flags: bool = False):
    def run(tmp: Path) -> tuple[list[str], Path]:
        data, side = _vfa(tmp, meta)
        return ["fit", "t1-vfa", str(data), *(VFA_FLAGS if flags else [])], side

    return run


def _mese_ms_sidecar(tmp: Path) -> tuple[list[str], Path]:
    data = save(tmp / "mese.nii.gz", mese_signal())
    side = write_json(tmp / "mese.json", {"EchoTime": [te * 1000 for te in ECHOES]})
    return ["fit", "t2", str(data)], side


def _mese_ms_flags(tmp: Path) -> tuple[list[str], Path]:
    data = save(tmp / "mese.nii.gz", mese_signal())
    return [
        "fit",
        "t2",
        str(data),
        "--echo-times",
        ",".join(str(te * 1000) for te in ECHOES),
    ], data


def _vfa_tr_ms_flag(tmp: Path) -> tuple[list[str], Path]:
    data, _ = _vfa(tmp)
    return ["fit", "t1-vfa", str(data), "--flip-angles", ",".join(map(str, FLIPS)),
            "--tr", "10"], data  # fmt: skip


def _dwi(tmp: Path, bvals: str, bvecs: str | None = None, model: str = "adc"):
    data = save(tmp / "dwi.nii.gz", dwi_signal())
    (tmp / "dwi.bval").write_text(bvals)
    args = ["fit", "dwi", str(data), "--bval", str(tmp / "dwi.bval"), "--model", model]
    if bvecs is not None:
        (tmp / "dwi.bvec").write_text(bvecs)
        args += ["--bvec", str(tmp / "dwi.bvec")]
    return args, data


def _dce(tmp: Path, frames: int, timing: list[float] | None, times_file: bool = False):
    data = save(tmp / "dce.nii.gz", np.linspace(0, 1, frames) * np.ones((*SHAPE, 1)))
    side = tmp / "dce.json"
    args = ["fit", "dce", str(data), "--concentration", "--baseline-frames", "1"]
    if timing is not None:
        write_json(side, {"VolumeTiming": timing})
    if times_file:
        (tmp / "t.txt").write_text("".join(f"{k * DCE_STEP_S}\n" for k in range(frames)))
        args += ["--times", str(tmp / "t.txt")]
    return args, side


def _b1_zero(tmp: Path) -> tuple[list[str], Path]:
    data, _ = _vfa(tmp)
    b1 = save(tmp / "b1.nii.gz", np.zeros(SHAPE))
    return ["fit", "t1-vfa", str(data), *VFA_FLAGS, "--b1", str(b1)], b1


CLI_CASES = [
    CliCase(
        "invalid JSON",
        _vfa_case("{not json", flags=True),
        r"^invalid JSON \(Expecting property name enclosed in double quotes at line 1, column 2\)$",
    ),
    CliCase(
        "FlipAngle as one string",
        _vfa_case({"FlipAngle": "3,6,10,15,20", "RepetitionTimeExcitation": TR}),
        r"^'FlipAngle' must be a number, got '3,6,10,15,20'$",
    ),
    CliCase(
        "negative TR",
        _vfa_case({"FlipAngle": FLIPS, "RepetitionTimeExcitation": -TR}),
        r"^'RepetitionTimeExcitation' is -0.01, outside the plausible range 0.001 to 1 s$",
    ),
    CliCase(
        "TR in ms",
        _vfa_case({"FlipAngle": FLIPS, "RepetitionTimeExcitation": 10}),
        r"^'RepetitionTimeExcitation' is 10, outside the plausible range 0.001 to 1 s" + _MS,
    ),
    CliCase(
        "FlipAngle list with a value over 180",
        _vfa_case({"FlipAngle": [3, 6, 10, 15, 200], "RepetitionTimeExcitation": TR}),
        r"^'FlipAngle' is 200, outside the plausible range above 0 to 180 deg$",
    ),
    CliCase(
        "EchoTime in ms (sidecar)",
        _mese_ms_sidecar,
        r"^'EchoTime' is 10.0, outside the plausible range 1e-05 to 1 s" + _MS,
    ),
    CliCase(
        "EchoTime in ms (--echo-times)",
        _mese_ms_flags,
        r"^echo time of 80 s is implausible: give echo times in seconds, not ms$",
    ),
    CliCase(
        "TR in ms (--tr)",
        _vfa_tr_ms_flag,
        r"^TR of 10 s is too long for spoiled gradient echo: give TR in seconds, not ms$",
    ),
    CliCase(
        ".bval with the wrong count",
        lambda tmp: _dwi(tmp, "0 200 400\n"),
        r"^data has 4 volumes but 3 b-values in dwi\.bval were given$",
    ),
    CliCase(
        ".bvec not unit length (DTI)",
        lambda tmp: (
            _dwi(tmp, "0 200 400 800\n", "0 0.8 0 0\n0 0 1 0\n0 0 0 1\n", "dti")[0],
            tmp / "dwi.bvec",
        ),
        r"^b-vector of volume 1 has length 0.8, not 1 \(tolerance 1%\)",
    ),
    CliCase(
        ".bvec zero for a b > 0 volume (DTI)",
        lambda tmp: _dwi(tmp, "0 200 400 800\n", "0 1 0 0\n0 0 0 0\n0 0 0 1\n", "dti"),
        r"^every diffusion-weighted volume needs a finite, non-zero b-vector$",
    ),
    CliCase(
        "non-increasing VolumeTiming",
        lambda tmp: _dce(tmp, 10, [0, 7, 14, 14, 28, 35, 42, 49, 56, 63]),
        r"^'VolumeTiming' must increase: volume 3 at 14 s does not follow volume 2 at 14 s$",
    ),
    CliCase(
        "DCE with 2 frames (VolumeTiming)",
        lambda tmp: _dce(tmp, 2, [0, 7]),
        r"^2 frames are too few for a kinetic fit: DCE needs at least 7 \(2 before the bolus, "
        r"5 after it\)$",
    ),
    CliCase(
        "B1 map of zeros",
        _b1_zero,
        r"^B1 map has no positive values \(every voxel is 0, negative or not finite\): it "
        r"cannot correct a flip angle$",
    ),
]


@pytest.mark.parametrize("case", CLI_CASES, ids=[c.name for c in CLI_CASES])
def test_bad_sidecar_is_one_line_on_the_command_line(case, tmp_path, capsys):
    args, named = case.run(tmp_path)
    expect_line(cli_error(capsys, [*args, "--out", str(tmp_path / "o")]), named, case.problem)
    assert not list(tmp_path.glob("o_*"))


def test_flip_angle_string_holding_a_number_names_the_sidecar(tmp_path, capsys):
    args, side = _vfa_case({"FlipAngle": "6", "RepetitionTimeExcitation": TR})(tmp_path)
    line = cli_error(capsys, [*args, "--out", str(tmp_path / "o")])
    expect_line(line, side, r"^'FlipAngle' must be a number")


def test_dce_with_2_frames_from_a_times_file_is_refused(tmp_path, capsys):
    args, _ = _dce(tmp_path, 2, None, times_file=True)
    line = cli_error(capsys, [*args, "--out", str(tmp_path / "o")])
    expect_line(line, tmp_path / "dce.nii.gz", r"too few for a kinetic fit")


def test_b1_map_with_zero_voxels_fails_those_voxels_only(tmp_path, capsys):
    """Zero (no B1 measured) and NaN voxels of the B1 map: those voxels are NaN with fitmask 0,
    the others fitted as with a complete map."""
    data, _ = _vfa(tmp_path)
    full = save(tmp_path / "b1.nii.gz", np.full(SHAPE, 100.0))
    holes = np.full(SHAPE, 100.0)
    holes[0, 0, 0], holes[1, 2, 3] = 0.0, np.nan
    holed = save(tmp_path / "b1holes.nii.gz", holes)
    for name, b1 in (("a", full), ("b", holed)):
        cli_ok(capsys, ["fit", "t1-vfa", str(data), *VFA_FLAGS, "--b1", str(b1),
                        "--out", str(tmp_path / name)])  # fmt: skip
    a, b = read_map(tmp_path / "a_T1.nii.gz"), read_map(tmp_path / "b_T1.nii.gz")
    fitmask = read_map(tmp_path / "b_fitmask.nii.gz")
    hole = ~np.isfinite(holes) | (holes == 0)
    assert np.isnan(b[hole]).all()
    assert (fitmask[hole] == 0).all()
    assert_array_equal(b[~hole], a[~hole])
    assert (fitmask[~hole] == 1).all()
