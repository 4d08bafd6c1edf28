"""The ``qmri fit`` command line of data contract section 6, on synthetic 4D images."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from numpy.testing import assert_allclose

from qmri.cli import main

AFFINE = np.diag([2.0, 2.0, 4.0, 1.0])
FLIPS = [3.0, 6.0, 10.0, 15.0, 20.0]
TR = 0.01


def _save(path: Path, data: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data.astype(np.float32), AFFINE), path)
    return path


@pytest.fixture
def vfa(tmp_path):
    t1 = np.linspace(0.4, 1.6, 24).reshape(2, 3, 4)
    a = np.radians(FLIPS)
    e1 = np.exp(-TR / t1)[..., None]
    sig = 1000 * np.sin(a) * (1 - e1) / (1 - np.cos(a) * e1)
    return _save(tmp_path / "vfa.nii.gz", sig), t1


def test_fit_t1_vfa_writes_the_contract_outputs(vfa, tmp_path, capsys):
    path, t1 = vfa
    mask = np.ones(t1.shape)
    mask[0, 0, 0] = 0
    _save(tmp_path / "mask.nii.gz", mask)
    flips = ",".join(str(f) for f in FLIPS)
    code = main(["fit", "t1-vfa", str(path), "--flip-angles", flips, "--tr", str(TR),
                 "--mask", str(tmp_path / "mask.nii.gz"), "--out", str(tmp_path / "s")])  # fmt: skip
    assert code == 0
    names = {Path(p).name for p in capsys.readouterr().out.split()}
    assert names == {"s_T1.nii.gz", "s_M0.nii.gz", "s_R2.nii.gz", "s_fitmask.nii.gz"}
    got = np.asarray(nib.load(tmp_path / "s_T1.nii.gz").dataobj)
    assert np.isnan(got[0, 0, 0])
    assert_allclose(got[mask > 0], t1[mask > 0], rtol=1e-4)
    fitmask = np.asarray(nib.load(tmp_path / "s_fitmask.nii.gz").dataobj)
    assert fitmask[0, 0, 0] == 0
    assert fitmask.sum() == mask.sum()
    side = json.loads((tmp_path / "s_T1.json").read_text())
    assert side["Units"] == "s"
    assert side["FlipAngle"] == FLIPS


def test_parameters_come_from_the_sidecar(vfa, tmp_path):
    path, t1 = vfa
    (tmp_path / "vfa.json").write_text(
        json.dumps({"FlipAngle": FLIPS, "RepetitionTimeExcitation": TR})
    )
    assert main(["fit", "t1-vfa", str(path), "--out", str(tmp_path / "s")]) == 0
    assert_allclose(np.asarray(nib.load(tmp_path / "s_T1.nii.gz").dataobj), t1, rtol=1e-4)


def test_flag_that_disagrees_with_the_sidecar_is_an_error(vfa, tmp_path, capsys):
    path, _ = vfa
    (tmp_path / "vfa.json").write_text(
        json.dumps({"FlipAngle": FLIPS, "RepetitionTimeExcitation": TR})
    )
    args = ["fit", "t1-vfa", str(path), "--tr", "0.02", "--out", str(tmp_path / "s")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("qmri: error: ")
    assert "vfa.json: command-line RepetitionTimeExcitation [0.02] disagrees" in err
    assert len(err.splitlines()) == 1
    assert main([*args, "--override-sidecar"]) == 0


def test_wrong_number_of_flip_angles(vfa, tmp_path, capsys):
    path, _ = vfa
    code = main(["fit", "t1-vfa", str(path), "--flip-angles", "3,6,10,15", "--tr", "0.01",
                 "--out", str(tmp_path / "s")])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err == f"qmri: error: {path}: data has 5 volumes but 4 flip angles were given"


def test_fit_t2_and_adc(tmp_path):
    te = np.array([0.01, 0.02, 0.04, 0.06, 0.08])
    t2 = np.full((2, 2, 2), 0.07)
    _save(tmp_path / "mese.nii.gz", 800 * np.exp(-te / t2[..., None]))
    assert main(["fit", "t2", str(tmp_path / "mese.nii.gz"), "--echo-times",
                 ",".join(map(str, te)), "--out", str(tmp_path / "t")]) == 0  # fmt: skip
    assert_allclose(np.asarray(nib.load(tmp_path / "t_T2.nii.gz").dataobj), 0.07, rtol=1e-4)
    b = np.array([0, 200, 400, 800])
    _save(tmp_path / "dwi.nii.gz", 500 * np.exp(-b * 1.1e-3) * np.ones((2, 2, 2, 1)))
    (tmp_path / "dwi.bval").write_text("0 200 400 800\n")
    assert main(["fit", "dwi", str(tmp_path / "dwi.nii.gz"), "--bval", str(tmp_path / "dwi.bval"),
                 "--model", "adc", "--out", str(tmp_path / "d")]) == 0  # fmt: skip
    assert_allclose(np.asarray(nib.load(tmp_path / "d_ADC.nii.gz").dataobj), 1.1e-3, rtol=1e-4)


def test_missing_file_is_one_line(tmp_path, capsys):
    assert main(["fit", "t2", str(tmp_path / "nope.nii.gz"), "--echo-times", "0.01,0.02",
                 "--out", str(tmp_path / "x")]) == 2  # fmt: skip
    assert (
        capsys.readouterr().err.strip()
        == f"qmri: error: {tmp_path / 'nope.nii.gz'}: file not found"
    )
