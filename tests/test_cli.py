"""The ``qmri fit`` command line of data contract section 6, on synthetic 4D images."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
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


def test_fit_dwi_ivim_and_dti(tmp_path):
    from qmri.models.ivim import ivim_signal

    b = np.array([0, 10, 20, 50, 100, 200, 400, 600, 800], float)
    sig = ivim_signal(1000.0, 0.1, 0.9e-3, 20e-3, b) * np.ones((2, 2, 2, 1))
    _save(tmp_path / "ivim.nii.gz", sig)
    (tmp_path / "ivim.bval").write_text(" ".join(str(v) for v in b) + "\n")
    args = ["fit", "dwi", str(tmp_path / "ivim.nii.gz"), "--bval", str(tmp_path / "ivim.bval")]
    assert (
        main([*args, "--model", "ivim", "--ivim-method", "full", "--out", str(tmp_path / "i")])
        == 0
    )
    assert_allclose(np.asarray(nib.load(tmp_path / "i_D.nii.gz").dataobj), 0.9e-3, rtol=1e-3)
    assert_allclose(np.asarray(nib.load(tmp_path / "i_f.nii.gz").dataobj), 0.1, rtol=1e-2)
    # DTI: an isotropic tensor along 6 directions plus b=0
    dirs = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1]], float)
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    bv = np.array([0] + [1000] * 6, float)
    vec = np.vstack([[0, 0, 0], dirs]).T
    _save(tmp_path / "dti.nii.gz", 800 * np.exp(-bv * 1e-3) * np.ones((2, 2, 2, 1)))
    (tmp_path / "dti.bval").write_text(" ".join(str(v) for v in bv) + "\n")
    (tmp_path / "dti.bvec").write_text(
        "\n".join(" ".join(str(x) for x in row) for row in vec) + "\n"
    )
    dti = ["fit", "dwi", str(tmp_path / "dti.nii.gz"), "--bval", str(tmp_path / "dti.bval"),
           "--model", "dti", "--out", str(tmp_path / "t")]  # fmt: skip
    assert main(dti) == 2  # no --bvec
    assert main([*dti, "--bvec", str(tmp_path / "dti.bvec")]) == 0
    assert_allclose(np.asarray(nib.load(tmp_path / "t_MD.nii.gz").dataobj), 1e-3, rtol=1e-4)
    assert_allclose(np.asarray(nib.load(tmp_path / "t_FA.nii.gz").dataobj), 0, atol=1e-4)


def test_fit_dce_from_concentration_with_a_measured_aif(tmp_path):
    from qmri.models.dce import ToftsModel, parker_aif

    times = np.arange(40) * 5.0
    aif = parker_aif(times, delay_s=20.0, hematocrit=0.42)
    # the curve from the sampled AIF, as the TSV gives it (no fine-grid representation)
    model = ToftsModel(times, np.asarray(aif.cp))
    conc = model.predict({"Ktrans": 0.2, "ve": 0.3}) * np.ones((2, 2, 2, 1))
    _save(tmp_path / "conc.nii.gz", conc)
    (tmp_path / "t.txt").write_text("\n".join(str(t) for t in times) + "\n")
    (tmp_path / "aif.tsv").write_text(
        "time\tcp\n" + "".join(f"{t}\t{c}\n" for t, c in zip(times, aif.cp, strict=True))
    )
    code = main(["fit", "dce", str(tmp_path / "conc.nii.gz"), "--concentration", "--times",
                 str(tmp_path / "t.txt"), "--aif", str(tmp_path / "aif.tsv"), "--model", "tofts",
                 "--out", str(tmp_path / "d")])  # fmt: skip
    assert code == 0
    assert_allclose(np.asarray(nib.load(tmp_path / "d_Ktrans.nii.gz").dataobj), 0.2, rtol=1e-3)
    assert_allclose(np.asarray(nib.load(tmp_path / "d_ve.nii.gz").dataobj), 0.3, rtol=1e-3)
    assert (tmp_path / "d_iAUC60.nii.gz").exists()


def test_fit_dce_t1_map_on_another_grid_is_one_line(tmp_path, capsys):
    _save(tmp_path / "dce.nii.gz", np.ones((2, 2, 2, 7)))
    _save(tmp_path / "t1.nii.gz", np.ones((3, 2, 2)))
    (tmp_path / "t.txt").write_text("0\n5\n10\n15\n20\n25\n30\n")
    code = main(["fit", "dce", str(tmp_path / "dce.nii.gz"), "--t1", str(tmp_path / "t1.nii.gz"),
                 "--flip-angle", "15", "--tr", "0.004", "--times", str(tmp_path / "t.txt"),
                 "--baseline-frames", "2", "--out", str(tmp_path / "d")])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert (
        err
        == f"qmri: error: {tmp_path / 't1.nii.gz'}: T1 map grid (3, 2, 2) differs from the DCE grid (2, 2, 2)"
    )


def test_fit_t1_ir(tmp_path):
    ti = np.array([0.05, 0.15, 0.4, 0.8, 1.5, 3.0])
    t1 = 0.9
    sig = np.abs(1000 * (1 - 2 * np.exp(-ti / t1))) * np.ones((2, 2, 2, 1))
    _save(tmp_path / "ir.nii.gz", sig)
    assert main(["fit", "t1-ir", str(tmp_path / "ir.nii.gz"), "--inversion-times",
                 ",".join(map(str, ti)), "--out", str(tmp_path / "r")]) == 0  # fmt: skip
    assert_allclose(np.asarray(nib.load(tmp_path / "r_T1.nii.gz").dataobj), t1, rtol=1e-3)


def test_a_mask_fits_only_its_voxels_and_changes_none(vfa, tmp_path):
    """The estimator gets the masked voxels as a list: inside the mask the maps are those of
    the unmasked fit, bit for bit, and only the mask's voxels count as fitted."""
    path, t1 = vfa
    mask = np.zeros(t1.shape)
    mask[1, :, 1:] = 1
    _save(tmp_path / "mask.nii.gz", mask)
    args = ["fit", "t1-vfa", str(path), "--flip-angles", ",".join(map(str, FLIPS)),
            "--tr", str(TR)]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "all")]) == 0
    assert (
        main([*args, "--mask", str(tmp_path / "mask.nii.gz"), "--out", str(tmp_path / "m")]) == 0
    )
    inside = mask > 0
    for param in ("T1", "M0", "R2"):
        full = np.asarray(nib.load(tmp_path / f"all_{param}.nii.gz").dataobj)
        masked = np.asarray(nib.load(tmp_path / f"m_{param}.nii.gz").dataobj)
        np.testing.assert_array_equal(masked[inside], full[inside])
        assert np.isnan(masked[~inside]).all()
    fitmask = np.asarray(nib.load(tmp_path / "m_fitmask.nii.gz").dataobj)
    np.testing.assert_array_equal(fitmask, inside.astype(np.uint8))
    side = json.loads((tmp_path / "m_T1.json").read_text())
    assert side["FittedVoxels"] == int(inside.sum())
    assert side["FailedVoxels"] == 0


def test_vfa_with_b1_map_records_its_convention(vfa, tmp_path):
    path, t1 = vfa
    _save(tmp_path / "b1.nii.gz", np.full(t1.shape, 100.0))  # percent, nominal
    code = main(["fit", "t1-vfa", str(path), "--flip-angles", ",".join(map(str, FLIPS)),
                 "--tr", str(TR), "--b1", str(tmp_path / "b1.nii.gz"),
                 "--out", str(tmp_path / "s")])  # fmt: skip
    assert code == 0
    assert_allclose(np.asarray(nib.load(tmp_path / "s_T1.nii.gz").dataobj), t1, rtol=1e-4)
    side = json.loads((tmp_path / "s_T1.json").read_text())
    assert side["B1MapConvention"] == "percent"
    assert str(tmp_path / "b1.nii.gz") in side["Sources"]


def test_sidecar_flip_angles_as_one_string_name_the_sidecar(vfa, tmp_path, capsys):
    path, _ = vfa
    (tmp_path / "vfa.json").write_text(
        json.dumps({"FlipAngle": "3,6,10,15,20", "RepetitionTimeExcitation": TR})
    )
    assert main(["fit", "t1-vfa", str(path), "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"qmri: error: {tmp_path / 'vfa.json'}: 'FlipAngle' must be a number, got '3,6,10,15,20'"
    )


def test_a_models_complaint_names_the_data_file(vfa, tmp_path, capsys):
    path, _ = vfa
    code = main(["fit", "t1-vfa", str(path), "--flip-angles", "3,6,10,15,200", "--tr", "0.01",
                 "--out", str(tmp_path / "s")])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"qmri: error: {path}: flip angles must be in (0, 180) degrees")
    assert len(err.splitlines()) == 1


# --------------------------------------------------------------------------------------------
# DCE from signal: the baseline frames
# --------------------------------------------------------------------------------------------

DCE_TIMES = np.arange(40) * 5.0
FLIP, TR_DCE, R1, T1_TISSUE = 15.0, 0.004, 4.0, 1.2


def _dce_signal(shape=(3, 3, 2), arrival_s=30.0) -> np.ndarray:
    """SPGR signal of a tissue curve: a plasma curve from ``arrival_s`` (a 1.5 s upslope,
    then a bi-exponential washout), convolved with a Tofts kernel (Ktrans 0.2/min, ve 0.3) on
    a 0.1 s grid."""
    fine = np.arange(0, DCE_TIMES[-1] + 0.05, 0.1)
    late = np.clip(fine - arrival_s, 0, None)
    cp = (late > 0) * (5.0 * np.exp(-late / 15.0) + 0.8) * (1 - np.exp(-late / 1.5))
    kep = 0.2 / 0.3 / 60.0  # 1/s
    kernel = (0.2 / 60.0) * np.exp(-kep * fine)
    ct = np.convolve(cp, kernel)[: fine.size] * 0.1
    conc = np.interp(DCE_TIMES, fine, ct)
    r1 = 1.0 / T1_TISSUE + R1 * conc
    e1, a = np.exp(-TR_DCE * r1), np.radians(FLIP)
    sig = 1000 * np.sin(a) * (1 - e1) / (1 - np.cos(a) * e1)
    return sig * np.ones((*shape, 1))


@pytest.fixture
def dce_signal(tmp_path):
    _save(tmp_path / "dce.nii.gz", _dce_signal())
    _save(tmp_path / "t1.nii.gz", np.full((3, 3, 2), T1_TISSUE))
    (tmp_path / "t.txt").write_text("\n".join(str(t) for t in DCE_TIMES) + "\n")
    return ["fit", "dce", str(tmp_path / "dce.nii.gz"), "--t1", str(tmp_path / "t1.nii.gz"),
            "--flip-angle", str(FLIP), "--tr", str(TR_DCE), "--r1", str(R1),
            "--times", str(tmp_path / "t.txt"), "--model", "tofts"]  # fmt: skip


def test_fit_dce_detects_the_baseline_frames_when_none_are_given(dce_signal, tmp_path, caplog):
    """Neither --baseline-frames nor BaselineFrames: detected from the bolus arrival on the
    mean signal over the mask, logged and recorded in the sidecars."""
    from qmri.models.dce import detect_baseline_frames

    caplog.set_level(logging.INFO, logger="qmri")
    data = _dce_signal()
    data[0] = _dce_signal(arrival_s=10.0)[0]  # outside the mask: an earlier bolus
    _save(tmp_path / "dce.nii.gz", data)
    mask = np.ones((3, 3, 2))
    mask[0] = 0
    _save(tmp_path / "mask.nii.gz", mask)
    code = main(
        [*dce_signal, "--mask", str(tmp_path / "mask.nii.gz"), "--out", str(tmp_path / "d")]
    )
    assert code == 0
    expected = detect_baseline_frames(DCE_TIMES, data[mask > 0].mean(axis=0))
    assert expected == 6  # frames 0-5 (0-25 s), before the bolus at 30 s
    everywhere = detect_baseline_frames(DCE_TIMES, data.reshape(-1, DCE_TIMES.size).mean(axis=0))
    assert everywhere != expected  # so the mask's mean is what was used
    assert f"{expected} pre-contrast frames detected" in caplog.text
    for name in ("Ktrans", "iAUC60"):
        options = json.loads((tmp_path / f"d_{name}.json").read_text())["ModelOptions"]
        assert options["BaselineFramesDetected"] is True
        assert options["baseline_frames"] == expected
    ktrans = np.asarray(nib.load(tmp_path / "d_Ktrans.nii.gz").dataobj)
    assert np.isnan(ktrans[0]).all()
    assert np.isfinite(ktrans[1:]).all()


def test_fit_dce_baseline_frames_from_the_flag_are_not_detected(dce_signal, tmp_path):
    assert main([*dce_signal, "--baseline-frames", "5", "--out", str(tmp_path / "d")]) == 0
    options = json.loads((tmp_path / "d_Ktrans.json").read_text())["ModelOptions"]
    assert options["baseline_frames"] == 5
    assert "BaselineFramesDetected" not in options


def test_fit_dce_baseline_flag_that_disagrees_with_the_sidecar(dce_signal, tmp_path, capsys):
    (tmp_path / "dce.json").write_text(json.dumps({"BaselineFrames": 4}))
    assert main([*dce_signal, "--baseline-frames", "5", "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"qmri: error: {tmp_path / 'dce.json'}: command-line BaselineFrames")
    assert main([*dce_signal, "--out", str(tmp_path / "d")]) == 0  # the sidecar's 4
    options = json.loads((tmp_path / "d_Ktrans.json").read_text())["ModelOptions"]
    assert options["baseline_frames"] == 4
    assert "BaselineFramesDetected" not in options


def test_fit_dce_aorta_aif_needs_a_mask(dce_signal, tmp_path, capsys):
    code = main([*dce_signal, "--baseline-frames", "5", "--aif", "aorta",
                 "--out", str(tmp_path / "d")])  # fmt: skip
    assert code == 2
    assert capsys.readouterr().err.strip() == (
        f"qmri: error: {tmp_path / 'dce.nii.gz'}: --aif aorta needs --aif-mask (the arterial voxels)"
    )


# --------------------------------------------------------------------------------------------
# the command itself
# --------------------------------------------------------------------------------------------


def test_the_pipeline_subcommand_is_gone(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["pipeline", "cohort-table", "--tables", "a.csv", "--out", "b.csv"])
    assert exc.value.code == 2
    assert "invalid choice: 'pipeline'" in capsys.readouterr().err


def test_help_imports_no_numerical_library():
    """``qmri --help`` stays fast: no numpy, scipy, SimpleITK, pandas or jsonschema."""
    code = (
        "import sys\n"
        "from qmri.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = ('numpy', 'scipy', 'SimpleITK', 'pandas', 'jsonschema')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip().splitlines()[-1] == "[]"
