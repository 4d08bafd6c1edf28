"""Robustness catalogue, NIfTI group (issue 14; outcomes listed in docs/robustness.md).

Every damaged file is tried three ways: :func:`qmri.io.load_nifti` (the one reader), the
``qmri fit`` command line (exit 2, one line ``qmri: error: <file>: <problem>``) and the study
index the workflow plans from (:class:`qmri.study.Study`, before any job). Data-dependent cases
end in a documented result: NaN and ``fitmask`` 0 for the voxels that cannot be fitted.
"""

from __future__ import annotations

import gzip
import json
import math
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from numpy.testing import assert_array_equal

from qmri import bids
from qmri.io import load_nifti, read_data, save_nifti
from qmri.registry import SERIES_KINDS

from .conftest import (
    AFFINE,
    ECHOES,
    FLIPS,
    SHAPE,
    TR,
    cli_error,
    cli_ok,
    expect_error,
    expect_line,
    mese_signal,
    read_map,
    save,
    t1_map,
    vfa_signal,
)

VFA_FLAGS = ["--flip-angles", ",".join(map(str, FLIPS)), "--tr", str(TR)]
T2_FLAGS = ["--echo-times", ",".join(map(str, ECHOES))]

#: Peak of Python-tracked allocations (numpy included) allowed while a file that claims
#: terabytes is refused: nothing of the claimed size may be allocated.
REFUSAL_PEAK_BYTES = 16 * 2**20


# --------------------------------------------------------------------------------------------
# damaged files: every one is refused from the header, before any voxel is read
# --------------------------------------------------------------------------------------------


def _gzip_bytes(good: Path) -> bytes:
    return good.read_bytes()


def _raw_bytes(good: Path) -> bytes:
    return gzip.decompress(good.read_bytes())


def _header_only(dest: Path, shape: tuple[int, ...], nifti2: bool, gz: bool) -> None:
    """A header claiming ``shape`` float32 voxels, followed by 100 bytes."""
    header = (nib.Nifti2Header if nifti2 else nib.Nifti1Header)()
    header.set_data_shape(shape)
    header.set_data_dtype(np.float32)
    header.set_sform(AFFINE, code=1)
    header.set_qform(AFFINE, code=1)
    header["vox_offset"] = len(header.binaryblock) + 4
    blob = header.binaryblock + b"\0" * 4 + b"\0" * 100
    dest.write_bytes(gzip.compress(blob) if gz else blob)


def _huge(ndim: int, big: tuple[int, int, int]) -> tuple[int, ...]:
    return big if ndim == 3 else (*big, len(FLIPS))


def _with_header(good: Path, dest: Path, edit: Callable[[nib.Nifti1Header], None]) -> None:
    """``good``'s data with header fields edited (sform/qform set directly, never derived)."""
    src = nib.load(str(good))
    img = nib.Nifti1Image(np.asarray(src.dataobj), None)
    img.header.set_qform(AFFINE, code=1)
    img.header.set_sform(AFFINE, code=1)
    edit(img.header)
    nib.save(img, str(dest))


def _sform(matrix: np.ndarray, code: int = 1, qform_code: int = 0):
    def edit(h: nib.Nifti1Header) -> None:
        h.set_sform(matrix, code=code)
        h["qform_code"] = qform_code

    return edit


def _zero_voxel_size_qform(h: nib.Nifti1Header) -> None:
    h["sform_code"] = 0
    h["pixdim"][2] = 0.0


SINGULAR = AFFINE.copy()
SINGULAR[:3, 2] = [2.0, 2.0, 0.0]  # third voxel axis = first + second: the grid is flat
SHEARED = AFFINE.copy()
SHEARED[0, 1] = 0.5  # voxel axes 0 and 1 meet at 75.96 deg
MOVED = AFFINE.copy()
MOVED[:3, 3] = 5.0  # sform 5 mm off the qform along each axis: 8.66 mm at every corner
NONFINITE = AFFINE.copy()
NONFINITE[0, 3] = np.nan


@dataclass(frozen=True)
class FileCase:
    """A damaged NIfTI file and the one-line problem it must give."""

    name: str
    suffix: str  # of the damaged file: ".nii.gz" or ".nii"
    make: Callable[[Path, Path, int], None]  # make(good, dest, ndim)
    problem: str  # regular expression the problem (after "<file>: ") must match
    huge: bool = False  # claims terabytes: measure that nothing big is allocated


_TRUNCATED = r"^truncated gzip file: the compressed stream ends before its end marker$"
_SHORT = (
    r"^header claims [0-9 x]+ voxels of float32 \(.+\) from byte \d+ on, but the file has only "
    r"\d+ bytes \(truncated file or a wrong header\)$"
)
_DEFLATE = (
    r"^header claims 100000 x 100000 x 1000( x 5)? voxels of float32 \((36.4|182) TiB\), but "
    r"a gzip file of \d+ bytes holds at most .+ \(truncated file or a wrong header\)$"
)

FILE_CASES = [
    FileCase(
        "truncated .nii.gz",
        ".nii.gz",
        lambda good, dest, nd: dest.write_bytes(_gzip_bytes(good)[: len(_gzip_bytes(good)) - 40]),
        _TRUNCATED,
    ),
    FileCase(
        "truncated .nii.gz, inside the header",
        ".nii.gz",
        lambda good, dest, nd: dest.write_bytes(_gzip_bytes(good)[:60]),
        _TRUNCATED,
    ),
    FileCase(
        "truncated .nii",
        ".nii",
        lambda good, dest, nd: dest.write_bytes(_raw_bytes(good)[:-50]),
        _SHORT,
    ),
    FileCase(
        "not gzip but named .nii.gz",
        ".nii.gz",
        lambda good, dest, nd: dest.write_bytes(_raw_bytes(good)),
        r"^not a readable NIfTI image \(named .gz but not gzip-compressed: an uncompressed "
        r"NIfTI; rename it .nii\)$",
    ),
    FileCase(
        "gzip of text named .nii.gz",
        ".nii.gz",
        lambda good, dest, nd: dest.write_bytes(gzip.compress(b"not an image\n" * 40)),
        r"^not a readable NIfTI image \(no NIfTI header: the first 4 bytes are not the header "
        r"size of NIfTI-1, 348, or NIfTI-2, 540\)$",
    ),
    FileCase(
        "text named .nii.gz",
        ".nii.gz",
        lambda good, dest, nd: dest.write_bytes(b"not an image\n"),
        r"^not a readable NIfTI image \(named .gz but not gzip-compressed, and no NIfTI "
        r"header\)$",
    ),
    FileCase(
        "zero bytes",
        ".nii.gz",
        lambda good, dest, nd: dest.write_bytes(b""),
        r"^empty file \(0 bytes\): not a NIfTI image$",
    ),
    FileCase(
        "tiny .nii.gz claiming 100000 x 100000 x 1000 voxels (NIfTI-2)",
        ".nii.gz",
        lambda good, dest, nd: _header_only(dest, _huge(nd, (100000, 100000, 1000)), True, True),
        _DEFLATE,
        huge=True,
    ),
    FileCase(
        "tiny .nii claiming 100000 x 100000 x 1000 voxels (NIfTI-2)",
        ".nii",
        lambda good, dest, nd: _header_only(dest, _huge(nd, (100000, 100000, 1000)), True, False),
        r"^header claims 100000 x 100000 x 1000( x 5)? voxels of float32 \((36.4|182) TiB\) "
        r"from byte 544 on, but the file has only 644 bytes",
        huge=True,
    ),
    FileCase(
        "tiny .nii.gz claiming 32767 x 32767 x 1000 voxels (NIfTI-1 maximum)",
        ".nii.gz",
        lambda good, dest, nd: _header_only(dest, _huge(nd, (32767, 32767, 1000)), False, True),
        r"^header claims 32767 x 32767 x 1000( x 5)? voxels of float32 \(.+ TiB\), but a gzip "
        r"file of \d+ bytes holds at most",
        huge=True,
    ),
    FileCase(
        "singular affine (sform)",
        ".nii.gz",
        lambda good, dest, nd: _with_header(good, dest, _sform(SINGULAR)),
        r"^the sform \(code 1\) is singular \(determinant 0, voxel sizes 2, 2, 2.83 mm\): "
        r"its voxel axes span no volume, so voxels have no place in space$",
    ),
    FileCase(
        "singular affine (qform with a zero voxel size)",
        ".nii.gz",
        lambda good, dest, nd: _with_header(good, dest, _zero_voxel_size_qform),
        r"^the qform \(code 1\) is singular: the header gives voxel size 0 mm along axis 1 "
        r"\(pixdim\[2\]\), which nibabel would silently read as 1 mm$",
    ),
    FileCase(
        "non-finite affine",
        ".nii.gz",
        lambda good, dest, nd: _with_header(good, dest, _sform(NONFINITE)),
        r"^the sform \(code 1\) holds non-finite values \(NaN or inf\)$",
    ),
    FileCase(
        "sheared affine",
        ".nii.gz",
        lambda good, dest, nd: _with_header(good, dest, _sform(SHEARED, qform_code=1)),
        r"^the sform \(code 1\) is sheared: voxel axes 0 and 1 meet at 75.96 deg, not 90; qmri "
        r"needs perpendicular voxel axes \(resample the image onto an orthogonal grid\)$",
    ),
    FileCase(
        "qform and sform disagree",
        ".nii.gz",
        lambda good, dest, nd: _with_header(good, dest, _sform(MOVED, code=2, qform_code=1)),
        r"^qform \(code 1\) and sform \(code 2\) disagree: they place voxels up to 8.66 mm "
        r"apart \(tolerance 0.2 mm, a tenth of a voxel\); make them agree \(e.g. fslorient "
        r"-copysform2qform\) or set the code of the wrong one to 0$",
    ),
]
FILE_IDS = [case.name for case in FILE_CASES]


def _damaged(case: FileCase, good: Path, ndim: int) -> Path:
    dest = good.with_name(good.name.replace(".nii.gz", "") + "_bad" + case.suffix)
    case.make(good, dest, ndim)
    return dest


def _peak(func: Callable[[], object]) -> int:
    """Run ``func()``; return the peak of the allocations traced meanwhile (bytes)."""
    tracemalloc.start()
    try:
        func()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.fixture
def vfa4d(tmp_path: Path) -> Path:
    """A good 4D VFA image (flip angles on the command line)."""
    return save(tmp_path / "vfa.nii.gz", vfa_signal())


@pytest.mark.parametrize("case", FILE_CASES, ids=FILE_IDS)
def test_damaged_file_is_refused_by_the_reader(case, vfa4d):
    bad = _damaged(case, vfa4d, 4)
    peak = _peak(lambda: expect_error(lambda: read_data(load_nifti(bad)), path=bad,
                                      match=case.problem))  # fmt: skip
    if case.huge:
        assert peak < REFUSAL_PEAK_BYTES, f"{peak / 2**20:.1f} MiB allocated"


@pytest.mark.parametrize("case", FILE_CASES, ids=FILE_IDS)
def test_damaged_file_is_one_line_on_the_command_line(case, vfa4d, tmp_path, capsys):
    bad = _damaged(case, vfa4d, 4)
    args = ["fit", "t1-vfa", str(bad), *VFA_FLAGS, "--out", str(tmp_path / "o")]
    lines: list[str] = []
    peak = _peak(lambda: lines.append(cli_error(capsys, args)))
    expect_line(lines[0], bad, case.problem)
    if case.huge:
        assert peak < REFUSAL_PEAK_BYTES, f"{peak / 2**20:.1f} MiB allocated"
    assert not list(tmp_path.glob("o_*"))  # no output


@pytest.mark.parametrize(
    "case", [c for c in FILE_CASES if c.suffix == ".nii.gz"],
    ids=[c.name for c in FILE_CASES if c.suffix == ".nii.gz"],
)  # fmt: skip
def test_damaged_file_stops_the_plan_before_any_job(case, study):
    """BIDS finds ``.nii.gz`` files only; the damaged one replaces flip 2 of the VFA."""
    target = study.anat("flip-2_VFA.nii.gz")
    good = target.with_name("good.nii.gz")
    target.rename(good)
    case.make(good, target, 3)
    peak = _peak(lambda: expect_error(study.plan, path=target, match=case.problem))
    if case.huge:
        assert peak < REFUSAL_PEAK_BYTES, f"{peak / 2**20:.1f} MiB allocated"


def test_image_over_the_size_ceiling_is_refused(vfa4d, monkeypatch, capsys, tmp_path):
    """A consistent file larger, as float64, than ``QMRI_MAX_IMAGE_GIB`` (default 16 GiB)."""
    monkeypatch.setenv("QMRI_MAX_IMAGE_GIB", str(500 / 2**30))  # 500 bytes; the image: 960
    expect_error(
        load_nifti, vfa4d, path=vfa4d,
        match=r"^header claims 2 x 3 x 4 x 5 voxels of float32 \(480 bytes\): 960 bytes as "
        r"float64, more than qmri reads \(500 bytes; raise it with the environment variable "
        r"QMRI_MAX_IMAGE_GIB\)$",
    )  # fmt: skip
    args = ["fit", "t1-vfa", str(vfa4d), *VFA_FLAGS, "--out", str(tmp_path / "o")]
    expect_line(cli_error(capsys, args), vfa4d, "more than qmri reads")
    monkeypatch.setenv("QMRI_MAX_IMAGE_GIB", "lots")
    expect_error(load_nifti, vfa4d, path="QMRI_MAX_IMAGE_GIB",
                 match=r"^must be a positive number of GiB, got 'lots'$")  # fmt: skip


def _bad_crc(path: Path) -> None:
    """Flip the gzip trailer's CRC-32: header, data and length intact, the check fails."""
    blob = bytearray(path.read_bytes())
    blob[-8] ^= 0xFF
    path.write_bytes(bytes(blob))


def _flipped_bit(path: Path) -> None:
    """Flip one bit of the compressed voxel data (the header decodes; the voxels do not)."""
    blob = bytearray(path.read_bytes())
    blob[len(blob) - 30] ^= 0x10
    path.write_bytes(bytes(blob))


@pytest.mark.parametrize("damage", [_bad_crc, _flipped_bit], ids=["bad CRC", "flipped bit"])
def test_damaged_compressed_data_is_refused_at_the_job(damage, study, tmp_path, capsys):
    """The header and the trailer's length agree, so the plan passes (it reads no voxel data);
    reading the voxels, to the end of the stream, fails the job with one line."""
    target = study.anat("flip-2_VFA.nii.gz")
    save(target, np.random.default_rng(0).normal(1000, 10, (20, 20, 20)))
    for path in study.session.rglob("*.nii.gz"):  # the rest of the session on the same grid
        if path != target and "_dwi" not in path.name and "_dce" not in path.name:
            save(path, np.full((20, 20, 20), 100.0))
    save(study.dseg, np.zeros((20, 20, 20)), dtype=np.int16)
    damage(target)
    paths = study.plan().series_files("01", "pre", "VFA")  # planned: headers agree
    expect_error(SERIES_KINDS["VFA"].load, paths, path=target,
                 match=r"^cannot read the voxel data \((CRC check failed|Error -3).+\): "
                 r"damaged file$")  # fmt: skip
    four_d = save(
        tmp_path / "vfa.nii.gz", np.random.default_rng(0).normal(1000, 10, (20, 20, 20, 5))
    )
    damage(four_d)
    args = ["fit", "t1-vfa", str(four_d), *VFA_FLAGS, "--out", str(tmp_path / "o")]
    expect_line(
        cli_error(capsys, args), four_d, r"^cannot read the voxel data \(.+\): damaged file$"
    )


# --------------------------------------------------------------------------------------------
# valid files the checks must not refuse
# --------------------------------------------------------------------------------------------


def test_multi_member_gzip_is_read_whole(vfa4d, tmp_path):
    """Two gzip members (as bgzip or concatenated writers make them): the trailer gives only
    the last member's length, so the file is counted in full, then read as usual."""
    raw = gzip.decompress(vfa4d.read_bytes())
    two = tmp_path / "two.nii.gz"
    two.write_bytes(gzip.compress(raw[:500]) + gzip.compress(raw[500:]))
    assert_array_equal(read_data(load_nifti(two)), read_data(load_nifti(vfa4d)))


def test_qform_and_sform_within_a_tenth_of_a_voxel_are_accepted(vfa4d, tmp_path):
    near = AFFINE.copy()
    near[:3, 3] = 0.05  # 0.087 mm at every corner; tolerance 0.2 mm
    dest = tmp_path / "near.nii.gz"
    _with_header(vfa4d, dest, _sform(near, code=2, qform_code=1))
    np.testing.assert_allclose(load_nifti(dest).affine, near, atol=1e-6)  # the sform, float32


# --------------------------------------------------------------------------------------------
# voxel values: NaN / Inf, all zero, negative, scaled integers
# --------------------------------------------------------------------------------------------

SIGNALS = {"t1-vfa": (vfa_signal, VFA_FLAGS, "T1"), "t2": (mese_signal, T2_FLAGS, "T2")}


def _fit(capsys, tmp_path: Path, kind: str, data: np.ndarray, name: str) -> dict[str, np.ndarray]:
    _, flags, param = SIGNALS[kind]
    path = save(tmp_path / f"{name}.nii.gz", data)
    cli_ok(capsys, ["fit", kind, str(path), *flags, "--out", str(tmp_path / name)])
    out = {p: read_map(tmp_path / f"{name}_{p}.nii.gz") for p in (param, "fitmask")}
    out["sidecar"] = json.loads((tmp_path / f"{name}_{param}.json").read_text())
    return out


@pytest.mark.parametrize("kind", ["t1-vfa", "t2"])
def test_nan_and_inf_voxels_are_nan_and_flagged_alone(kind, tmp_path, capsys):
    signal, _, param = SIGNALS[kind]
    clean = _fit(capsys, tmp_path, kind, signal(), "clean")
    data = signal()
    data[0, 0, 0, 2] = np.nan  # one sample
    data[0, 1, 0, :] = np.inf  # a whole voxel
    data[1, 0, 0, 1] = -np.inf
    bad = [(0, 0, 0), (0, 1, 0), (1, 0, 0)]
    got = _fit(capsys, tmp_path, kind, data, "dirty")
    keep = np.ones(SHAPE, bool)
    for v in bad:
        keep[v] = False
        assert np.isnan(got[param][v])
        assert got["fitmask"][v] == 0
    assert_array_equal(got[param][keep], clean[param][keep])  # the other voxels: unchanged
    assert (got["fitmask"][keep] == 1).all()
    assert got["sidecar"]["FailedVoxels"] == 3


@pytest.mark.parametrize("kind", ["t1-vfa", "t2"])
def test_all_zero_series_gives_nan_and_flags_every_voxel(kind, tmp_path, capsys):
    signal, _, param = SIGNALS[kind]
    got = _fit(capsys, tmp_path, kind, np.zeros_like(signal()), "zero")
    assert np.isnan(got[param]).all()
    assert (got["fitmask"] == 0).all()
    assert got["sidecar"]["FittedVoxels"] == math.prod(SHAPE)  # every voxel tried ...
    assert got["sidecar"]["FailedVoxels"] == math.prod(SHAPE)  # ... and failed


@pytest.mark.parametrize("kind", ["t1-vfa", "t2"])
def test_negative_voxel_is_nan_and_flagged(kind, tmp_path, capsys):
    signal, _, param = SIGNALS[kind]
    data = signal()
    data[0, 0, 0] *= -1  # every sample of one voxel below zero
    got = _fit(capsys, tmp_path, kind, data, "neg")
    assert np.isnan(got[param][0, 0, 0])
    assert got["fitmask"][0, 0, 0] == 0
    assert got["fitmask"].sum() == math.prod(SHAPE) - 1


@pytest.mark.parametrize("kind", ["t1-vfa", "t2"])
def test_voxel_with_one_negative_sample_is_nan_and_flagged(kind, tmp_path, capsys):
    signal, _, param = SIGNALS[kind]
    data = signal()
    data[0, 0, 0, 2] = -5.0
    got = _fit(capsys, tmp_path, kind, data, "neg1")
    assert np.isnan(got[param][0, 0, 0])
    assert got["fitmask"][0, 0, 0] == 0


def test_integer_data_with_scl_slope_and_inter(tmp_path, capsys):
    stored = np.round(vfa_signal()).astype(np.int16)
    img = nib.Nifti1Image(stored, AFFINE)
    img.header.set_slope_inter(0.5, 10.0)
    scaled = tmp_path / "int.nii.gz"
    nib.save(img, str(scaled))
    values = stored * 0.5 + 10.0
    assert_array_equal(read_data(load_nifti(scaled)), values)
    plain = save(tmp_path / "float.nii.gz", values)  # the same values stored as float32
    cli_ok(capsys, ["fit", "t1-vfa", str(scaled), *VFA_FLAGS, "--out", str(tmp_path / "a")])
    cli_ok(capsys, ["fit", "t1-vfa", str(plain), *VFA_FLAGS, "--out", str(tmp_path / "b")])
    assert_array_equal(read_map(tmp_path / "a_T1.nii.gz"), read_map(tmp_path / "b_T1.nii.gz"))


# --------------------------------------------------------------------------------------------
# dimensions: 3D where 4D is expected and vice versa
# --------------------------------------------------------------------------------------------


def test_3d_data_where_4d_is_expected_on_the_command_line(tmp_path, capsys):
    three = save(tmp_path / "vol.nii.gz", vfa_signal()[..., 0])
    args = ["fit", "t1-vfa", str(three), *VFA_FLAGS, "--out", str(tmp_path / "o")]
    assert cli_error(capsys, args) == f"{three}: expected a 4D image, got shape (2, 3, 4)"


@pytest.mark.parametrize("option", ["--mask", "--b1"])
def test_4d_mask_or_b1_where_3d_is_expected_on_the_command_line(option, vfa4d, tmp_path, capsys):
    four = save(tmp_path / "four.nii.gz", np.ones((*SHAPE, 2)))
    args = [
        "fit",
        "t1-vfa",
        str(vfa4d),
        *VFA_FLAGS,
        option,
        str(four),
        "--out",
        str(tmp_path / "o"),
    ]
    assert cli_error(capsys, args) == f"{four}: expected a 3D image, got shape (2, 3, 4, 2)"


@pytest.mark.parametrize(
    ("target", "data", "problem"),
    [
        ("reference", np.ones((*SHAPE, 2)), "expected a 3D image, got shape (2, 3, 4, 2)"),
        ("b1map", np.ones((*SHAPE, 2)), "expected a 3D image, got shape (2, 3, 4, 2)"),
        ("dwi", np.ones(SHAPE), "expected a 4D image, got shape (2, 3, 4)"),
        ("dce", np.ones(SHAPE), "expected a 4D image, got shape (2, 3, 4)"),
        ("vfa", np.ones((*SHAPE, 2)), "expected one volume per file of the collection, got 2"),
    ],
    ids=["4D reference", "4D B1 map", "3D DWI", "3D DCE", "VFA file with 2 volumes"],
)
def test_wrong_dimensions_stop_the_plan(target, data, problem, study):
    path = {
        "reference": study.anat("T2w.nii.gz"),
        "b1map": study.b1map,
        "dwi": study.dwi,
        "dce": study.dce,
        "vfa": study.anat("flip-3_VFA.nii.gz"),
    }[target]
    save(path, data)
    assert expect_error(study.plan, path=path, match=".") == problem


# --------------------------------------------------------------------------------------------
# orientation: flipped and oblique grids are ordinary data
# --------------------------------------------------------------------------------------------


def _flip_x(affine: np.ndarray, nx: int) -> np.ndarray:
    """The affine of the same voxels stored in reverse order along the first axis."""
    flip = np.eye(4)
    flip[0, 0], flip[0, 3] = -1.0, nx - 1
    return affine @ flip


def test_flipped_axis_gives_the_same_fit(tmp_path, capsys):
    """Data stored with the first axis reversed (negative x direction), its B1 map on the
    original grid: resampled by world coordinates, the maps are the unflipped ones, flipped."""
    b1 = np.linspace(0.8, 1.2, math.prod(SHAPE)).reshape(SHAPE)
    signal = vfa_signal(b1)
    b1_path = save(tmp_path / "b1.nii.gz", b1 * 100)
    ref = save(tmp_path / "ref.nii.gz", signal)
    flipped_affine = _flip_x(AFFINE, SHAPE[0])
    flipped = save(tmp_path / "flipped.nii.gz", signal[::-1], flipped_affine)
    for name, path in (("a", ref), ("b", flipped)):
        cli_ok(capsys, ["fit", "t1-vfa", str(path), *VFA_FLAGS, "--b1", str(b1_path),
                        "--out", str(tmp_path / name)])  # fmt: skip
    a, b = read_map(tmp_path / "a_T1.nii.gz"), read_map(tmp_path / "b_T1.nii.gz")
    assert_array_equal(b[::-1], a)
    np.testing.assert_allclose(a, t1_map(), rtol=1e-4)
    assert_array_equal(nib.load(tmp_path / "b_T1.nii.gz").affine, flipped_affine)


def test_oblique_grid_gives_the_same_fit(tmp_path, capsys):
    """A grid rotated 30 deg about z and 10 deg about x (qform and sform both set, as scanners
    write them): the fit is the axis-aligned one, and the maps keep the oblique affine."""
    cz, sz = np.cos(np.radians(30)), np.sin(np.radians(30))
    cx, sx = np.cos(np.radians(10)), np.sin(np.radians(10))
    rot = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]]) @ np.array(
        [[1, 0, 0], [0, cx, -sx], [0, sx, cx]]
    )
    oblique = np.eye(4)
    oblique[:3, :3] = rot @ AFFINE[:3, :3]
    oblique[:3, 3] = [-12.5, 30.25, 7.0]
    b1 = np.linspace(0.8, 1.2, math.prod(SHAPE)).reshape(SHAPE)
    for name, affine in (("a", AFFINE), ("b", oblique)):
        data = save_nifti(vfa_signal(b1), affine, tmp_path / f"{name}.nii.gz")
        b1_path = save_nifti(b1 * 100, affine, tmp_path / f"{name}_b1.nii.gz")
        cli_ok(capsys, ["fit", "t1-vfa", str(data), *VFA_FLAGS, "--b1", str(b1_path),
                        "--out", str(tmp_path / name)])  # fmt: skip
    assert_array_equal(read_map(tmp_path / "b_T1.nii.gz"), read_map(tmp_path / "a_T1.nii.gz"))
    np.testing.assert_allclose(nib.load(tmp_path / "b_T1.nii.gz").affine, oblique, atol=1e-5)


def test_flipped_series_is_planned_and_loaded_as_stored(study):
    """A whole session stored flipped: planned, loaded with its affine, voxels as stored."""
    flipped_affine = _flip_x(AFFINE, SHAPE[0])
    for path in sorted(study.session.rglob("*.nii.gz")):
        img = nib.load(str(path))
        save(path, np.asarray(img.dataobj)[::-1], flipped_affine)
    labels = nib.load(str(study.dseg))
    save(study.dseg, np.asarray(labels.dataobj)[::-1], flipped_affine, dtype=np.int16)
    paths = study.plan().series_files("01", "pre", "VFA")
    series = SERIES_KINDS["VFA"].load(paths)
    assert_array_equal(series.affine, flipped_affine)
    assert_array_equal(series.data[::-1], vfa_signal().astype(np.float32))
    assert series.parameters == {"FlipAngle": FLIPS, "RepetitionTimeExcitation": TR}
    assert bids.read_bvals(study.dwi.with_name("sub-01_ses-pre_dwi.bval")).size == 4
