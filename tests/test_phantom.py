"""Tests of the digital reference object (qmri.phantom), on the small phantom."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from qmri.errors import QMRIInputError
from qmri.labels import check_labels, read_dseg_tsv
from qmri.phantom import (
    PHANTOM_PROTOCOL,
    TISSUE_INDEX,
    TISSUES,
    anatomy_on_grid,
    label_names,
    parker_aif,
    rotation_matrix,
    subject_layout,
    tissue_parameters,
    write_phantom_dataset,
)

SESSIONS = ("pre", "fu1", "fu2")


@pytest.fixture(scope="module")
def ds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_phantom_dataset(
        tmp_path_factory.mktemp("phantom"), n_subjects=2, sessions=SESSIONS, seed=0, small=True
    )


def _data(path: Path) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj)


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _scale(root: Path, series: str) -> float:
    return _json(root / "derivatives/truth/protocol.json")["stored_scale"][series]


def _truth(root: Path, sub: str, ses: str, suffix: str) -> Path:
    return root / f"derivatives/truth/sub-{sub}/ses-{ses}/anat/sub-{sub}_ses-{ses}_{suffix}.nii.gz"


def _session_tissue(root: Path, sub: str, ses: str, grid_img: nib.Nifti1Image) -> np.ndarray:
    """Tissue map of a session evaluated on ``grid_img``'s grid (exact, from the motion file)."""
    motion = _json(
        root / f"derivatives/truth/sub-{sub}/ses-{ses}/sub-{sub}_ses-{ses}_desc-truth_motion.json"
    )
    matrix = None if ses == "pre" else np.array(motion["baseline_to_session_ras"])
    tissue, _ = anatomy_on_grid(
        grid_img.affine, grid_img.shape[:3], subject=int(sub) - 1, baseline_to_session=matrix
    )
    return tissue


# ---------------------------------------------------------------------------------------------
# Layout and sidecars
# ---------------------------------------------------------------------------------------------


def test_contract_files_and_sidecars(ds: Path) -> None:
    desc = _json(ds / "dataset_description.json")
    assert desc["BIDSVersion"] == "1.10.0"
    assert desc["DatasetType"] == "raw"
    assert {"Name", "License", "Authors"} <= set(desc)
    assert (ds / "README").is_file()
    assert "perf/*_dce.*" in (ds / ".bidsignore").read_text().splitlines()
    assert _json(ds / "derivatives/labels/dataset_description.json")["DatasetType"] == "derivative"
    assert _json(ds / "derivatives/truth/dataset_description.json")["DatasetType"] == "derivative"

    part = pd.read_csv(ds / "participants.tsv", sep="\t", dtype=str)
    assert list(part.columns) == [
        "participant_id",
        "treated_levels",
        "age",
        "sex",
        "dose_gy",
        "fractions",
    ]
    assert part["participant_id"].tolist() == ["sub-01", "sub-02"]
    assert part["treated_levels"].tolist() == ["T11", "T12"]
    assert set(_json(ds / "participants.json")) >= set(part.columns)

    n_vfa = len(PHANTOM_PROTOCOL.vfa_flip_angles_deg)
    n_echo = len(PHANTOM_PROTOCOL.mese_echo_times_s)
    for sub in ("01", "02"):
        days = pd.read_csv(ds / f"sub-{sub}/sub-{sub}_sessions.tsv", sep="\t")
        assert days["session_id"].tolist() == [f"ses-{s}" for s in SESSIONS]
        assert days["days_from_sbrt"].dtype.kind == "i"
        d = days.set_index("session_id")["days_from_sbrt"]
        assert d["ses-pre"] <= 0
        assert 60 < d["ses-fu1"] < 120
        assert 120 < d["ses-fu2"] < 200
        for ses in SESSIONS:
            stem = f"sub-{sub}_ses-{ses}"
            base = ds / f"sub-{sub}" / f"ses-{ses}"
            assert (base / f"anat/{stem}_T2w.nii.gz").is_file()
            assert (base / f"anat/{stem}_T2w.json").is_file()
            flips = []
            for i in range(1, n_vfa + 1):
                meta = _json(base / f"anat/{stem}_flip-{i}_VFA.json")
                assert meta["PulseSequenceType"] == "SPGR"
                assert meta["RepetitionTimeExcitation"] == pytest.approx(0.010)
                flips.append(meta["FlipAngle"])
                assert (base / f"anat/{stem}_flip-{i}_VFA.nii.gz").is_file()
            assert flips == sorted(flips)
            assert len(set(flips)) == n_vfa >= 4
            tes = [
                _json(base / f"anat/{stem}_echo-{i}_MESE.json")["EchoTime"]
                for i in range(1, n_echo + 1)
            ]
            assert n_echo >= 6
            assert np.all(np.diff(tes) > 0)
            assert (base / f"fmap/{stem}_TB1map.json").is_file()
            dce = _json(base / f"perf/{stem}_dce.json")
            assert dce["ContrastBolusIngredient"] == "GADOLINIUM"
            assert dce["ContrastAgent"] == "gadoteridol"
            assert dce["MagneticFieldStrength"] == 1.5
            assert {"FlipAngle", "RepetitionTimeExcitation", "BaselineFrames"} <= set(dce)
            n_frames = nib.load(base / f"perf/{stem}_dce.nii.gz").shape[3]
            assert len(dce["VolumeTiming"]) == n_frames
            assert np.allclose(np.diff(dce["VolumeTiming"]), dce["RepetitionTime"])

            dwi = nib.load(base / f"dwi/{stem}_dwi.nii.gz")
            bval = np.loadtxt(base / f"dwi/{stem}_dwi.bval")
            bvec = np.loadtxt(base / f"dwi/{stem}_dwi.bvec")
            assert dwi.ndim == 4
            assert bval.shape == (dwi.shape[3],)
            assert bvec.shape == (3, dwi.shape[3])
            assert bval[0] == 0
            assert np.all(bvec[:, bval == 0] == 0)
            assert np.allclose(np.linalg.norm(bvec[:, bval > 0], axis=0), 1)
            assert len(np.unique(bval[bval > 0])) >= 3
            assert (base / f"dwi/{stem}_dwi.json").is_file()
            # all series of a session share the reference grid; DWI/DCE share the FOV
            assert np.allclose(dwi.header.get_zooms()[:3], [6, 5, 5])  # small: reference grid
            truth = ds / f"derivatives/truth/sub-{sub}/ses-{ses}"
            for suffix in (
                "T1map",
                "T2map",
                "ADC",
                "D",
                "f",
                "Dstar",
                "Ktrans",
                "ve",
                "vp",
                "M0map",
            ):
                img = nib.load(truth / f"anat/{stem}_desc-truth_{suffix}.nii.gz")
                assert img.get_data_dtype() == np.float32
            assert (truth / f"anat/{stem}_desc-tissue_dseg.tsv").is_file()
            assert (truth / f"anat/{stem}_desc-truth_dseg.tsv").is_file()
            assert (truth / f"{stem}_desc-truth_motion.json").is_file()
    for name in ("protocol.json", "tissue_parameters.tsv", "aif.tsv", ".bidsignore"):
        assert (ds / "derivatives/truth" / name).is_file()


def test_grids_share_affine_across_sessions(ds: Path) -> None:
    ref = nib.load(ds / "sub-01/ses-pre/anat/sub-01_ses-pre_T2w.nii.gz")
    for ses in SESSIONS:
        for rel in ("anat/{s}_flip-1_VFA", "anat/{s}_echo-1_MESE", "fmap/{s}_TB1map"):
            path = ds / f"sub-01/ses-{ses}" / (rel.format(s=f"sub-01_ses-{ses}") + ".nii.gz")
            img = nib.load(path)
            assert img.shape == ref.shape
            assert np.allclose(img.affine, ref.affine)
        t2w = nib.load(ds / f"sub-01/ses-{ses}/anat/sub-01_ses-{ses}_T2w.nii.gz")
        assert np.allclose(t2w.affine, ref.affine)
        assert t2w.get_data_dtype() == np.int16


# ---------------------------------------------------------------------------------------------
# Determinism
# ---------------------------------------------------------------------------------------------


def test_same_seed_identical_other_seed_different(ds: Path, tmp_path: Path) -> None:
    a = write_phantom_dataset(tmp_path / "a", n_subjects=1, sessions=("pre", "fu1"), small=True)
    b = write_phantom_dataset(
        tmp_path / "b", n_subjects=1, sessions=("pre", "fu1"), seed=1, small=True
    )
    rel = [
        "sub-01/ses-pre/anat/sub-01_ses-pre_T2w.nii.gz",
        "sub-01/ses-fu1/anat/sub-01_ses-fu1_flip-3_VFA.nii.gz",
        "sub-01/ses-fu1/dwi/sub-01_ses-fu1_dwi.nii.gz",
        "sub-01/ses-fu1/perf/sub-01_ses-fu1_dce.nii.gz",
        "sub-01/ses-fu1/fmap/sub-01_ses-fu1_TB1map.nii.gz",
        "derivatives/truth/sub-01/ses-fu1/anat/sub-01_ses-fu1_desc-truth_T1map.nii.gz",
    ]
    for r in rel:
        # same seed: identical data (also with fewer subjects and sessions: stable streams)
        assert np.array_equal(_data(a / r), _data(ds / r)), r
        # and byte-identical files
        assert (a / r).read_bytes() == (ds / r).read_bytes(), r
    # another seed: different noise at baseline, same anatomy and truth at baseline
    assert not np.array_equal(_data(a / rel[0]), _data(b / rel[0]))
    base_truth = "derivatives/truth/sub-01/ses-pre/anat/sub-01_ses-pre_desc-truth_T1map.nii.gz"
    assert np.array_equal(_data(a / base_truth), _data(b / base_truth))
    # and a different follow-up motion
    mot = "derivatives/truth/sub-01/ses-fu1/sub-01_ses-fu1_desc-truth_motion.json"
    assert _json(a / mot)["rotation_deg"] != _json(b / mot)["rotation_deg"]


# ---------------------------------------------------------------------------------------------
# Labels
# ---------------------------------------------------------------------------------------------


def _labels(root: Path, sub: str) -> tuple[np.ndarray, dict[str, int], Path]:
    path = root / f"derivatives/labels/sub-{sub}/ses-pre/anat/sub-{sub}_ses-pre_dseg.nii.gz"
    table = read_dseg_tsv(path.with_name(path.name.replace(".nii.gz", ".tsv")))
    img = nib.load(path)
    assert img.get_data_dtype() == np.int16
    data = check_labels(np.asarray(img.dataobj), table, path)
    return data, {lab.name: idx for idx, lab in table.items()}, path


@pytest.mark.parametrize(
    ("sub", "levels", "treated"),
    [
        ("01", ("T9", "T10", "T11", "T12", "L1"), "T11"),
        ("02", ("T10", "T11", "T12", "L1", "L2"), "T12"),
    ],
)
def test_labels_follow_contract(ds: Path, sub: str, levels: tuple[str, ...], treated: str) -> None:
    data, index, path = _labels(ds, sub)
    tsv = pd.read_csv(path.with_name(path.name.replace(".nii.gz", ".tsv")), sep="\t")
    assert list(tsv.columns) == ["index", "name"]
    assert 0 not in tsv["index"].tolist()
    expected = {f"{s}_{lv}" for lv in levels for s in ("vb", "pel", "per", "pe", "cord")}
    expected |= {"csf", "aorta", "tumor"}
    assert set(index) == expected
    assert subject_layout(int(sub) - 1)[:2] == (levels, treated)
    for name, idx in index.items():
        assert (data == idx).sum() > 0, f"{name} is empty"
    # vertebral bodies stacked superior -> inferior along +z -> -z
    zs = [np.argwhere(data == index[f"vb_{lv}"])[:, 2].mean() for lv in levels]
    assert np.all(np.diff(zs) < 0)
    # left sector at smaller x (RAS: -x is left) than the right one
    xl = np.argwhere(data == index[f"pel_{treated}"])[:, 0].mean()
    xr = np.argwhere(data == index[f"per_{treated}"])[:, 0].mean()
    assert xl < xr
    # the tumour sits in the treated level and touches its left posterior elements only
    tumor = data == index["tumor"]
    grown = ndimage.binary_dilation(tumor, structure=ndimage.generate_binary_structure(3, 1))
    assert (grown & (data == index[f"pel_{treated}"])).any()
    assert not (grown & (data == index[f"per_{treated}"])).any()
    assert (grown & (data == index[f"vb_{treated}"])).any()
    z_tumor = np.argwhere(tumor)[:, 2]
    z_vb = np.argwhere(data == index[f"vb_{treated}"])[:, 2]
    assert z_vb.min() <= z_tumor.min()
    assert z_tumor.max() <= z_vb.max()
    # the aorta is anterior-left of the bodies
    aorta = np.argwhere(data == index["aorta"]).mean(axis=0)
    body = np.argwhere(data == index[f"vb_{treated}"]).mean(axis=0)
    assert aorta[0] < body[0]
    assert aorta[1] > body[1]
    # cord inside the canal: surrounded by csf in-plane
    cord = data == index[f"cord_{treated}"]
    ring = ndimage.binary_dilation(cord, iterations=1) & ~cord
    assert (data[ring] == index["csf"]).mean() > 0.5


def test_baseline_truth_dseg_equals_labels(ds: Path) -> None:
    data, _, path = _labels(ds, "01")
    truth = _truth(ds, "01", "pre", "desc-truth_dseg")
    assert np.array_equal(_data(truth), data)
    assert (
        truth.with_suffix("").with_suffix(".tsv").read_text()
        == path.with_suffix("").with_suffix(".tsv").read_text()
    )
    tissue = _truth(ds, "01", "pre", "desc-tissue_dseg")
    names = pd.read_csv(tissue.with_suffix("").with_suffix(".tsv"), sep="\t")
    assert dict(zip(names["name"], names["index"], strict=True)) == TISSUE_INDEX
    t = _data(tissue)
    # discs, muscle and fat are in the tissue map but not in the contract labels
    for name in ("disc", "muscle", "fat"):
        assert (t == TISSUE_INDEX[name]).any()
        assert np.all(data[t == TISSUE_INDEX[name]] == 0)
    assert label_names(("T9", "T10", "T11", "T12", "L1"))[1] == "vb_T9"


# ---------------------------------------------------------------------------------------------
# Signal models against truth
# ---------------------------------------------------------------------------------------------


def test_vfa_matches_spgr_with_truth_t1_and_b1(ds: Path) -> None:
    data, index, _ = _labels(ds, "01")
    roi = np.isin(data, [index["vb_T9"], index["vb_T10"], index["vb_L1"]])
    t1 = _data(_truth(ds, "01", "pre", "desc-truth_T1map"))[roi]
    assert np.allclose(t1, 0.60)
    b1_path = ds / "derivatives/truth/sub-01/ses-pre/fmap/sub-01_ses-pre_desc-truth_TB1map.nii.gz"
    b1 = _data(b1_path)[roi] / 100.0
    assert b1.std() > 0.02  # the field varies over the ROI
    pd_ = _data(_truth(ds, "01", "pre", "desc-truth_M0map"))[roi]
    scale = _scale(ds, "VFA")
    tr = PHANTOM_PROTOCOL.vfa_tr_s
    for i, fa in enumerate(PHANTOM_PROTOCOL.vfa_flip_angles_deg, start=1):
        meta = _json(ds / f"sub-01/ses-pre/anat/sub-01_ses-pre_flip-{i}_VFA.json")
        assert meta["FlipAngle"] == fa
        measured = _data(ds / f"sub-01/ses-pre/anat/sub-01_ses-pre_flip-{i}_VFA.nii.gz")[roi]
        a = np.deg2rad(fa) * b1
        e1 = np.exp(-tr / t1)
        model = pd_ * np.sin(a) * (1 - e1) / (1 - np.cos(a) * e1)
        assert measured.mean() / scale == pytest.approx(model.mean(), rel=0.02)
    # and B1 matters: at 3 deg (S ~ flip angle) the signal over the nominal-angle model follows B1
    low = _data(ds / "sub-01/ses-pre/anat/sub-01_ses-pre_flip-1_VFA.nii.gz")[roi] / scale
    a = np.deg2rad(PHANTOM_PROTOCOL.vfa_flip_angles_deg[0])
    nominal = pd_ * np.sin(a) * (1 - e1) / (1 - np.cos(a) * e1)
    slope = np.polyfit(b1, low / nominal, 1)[0]
    assert slope == pytest.approx(1.0, abs=0.25)


def test_b1_map_in_percent(ds: Path) -> None:
    b1 = nib.load(ds / "sub-01/ses-pre/fmap/sub-01_ses-pre_TB1map.nii.gz").get_fdata()
    truth = nib.load(
        ds / "derivatives/truth/sub-01/ses-pre/fmap/sub-01_ses-pre_desc-truth_TB1map.nii.gz"
    ).get_fdata()
    assert 80 < np.median(b1) < 120
    assert truth.min() > 84
    assert truth.max() < 116
    assert truth.max() - truth.min() > 20
    noise = b1 - truth
    assert 0.2 < noise.std() < 1.0
    assert abs(noise.mean()) < 0.1
    meta = _json(ds / "sub-01/ses-pre/fmap/sub-01_ses-pre_TB1map.json")
    assert meta["IntendedFor"]
    assert all("_VFA.nii.gz" in p for p in meta["IntendedFor"])


def test_mese_and_t2w_noise(ds: Path) -> None:
    tissue = _data(_truth(ds, "01", "pre", "desc-tissue_dseg"))
    marrow = tissue == TISSUE_INDEX["marrow"]
    t2 = tissue_parameters("pre")["marrow"].T2
    s = [
        _data(ds / f"sub-01/ses-pre/anat/sub-01_ses-pre_echo-{i}_MESE.nii.gz")[marrow].mean()
        for i in (1, 8)
    ]
    tes = PHANTOM_PROTOCOL.mese_echo_times_s
    assert (tes[7] - tes[0]) / np.log(s[0] / s[1]) == pytest.approx(t2, rel=0.02)
    t2w = _data(ds / "sub-01/ses-pre/anat/sub-01_ses-pre_T2w.nii.gz") / _scale(ds, "T2w")
    sigma = t2w[tissue == 0].mean() / np.sqrt(np.pi / 2)  # Rayleigh mean in air
    assert sigma == pytest.approx(PHANTOM_PROTOCOL.noise_sigma["T2w"], rel=0.1)
    assert 40 < t2w[marrow].mean() / sigma < 120


def test_dwi_follows_ivim_and_tumor_d_rises(ds: Path) -> None:
    b = PHANTOM_PROTOCOL.dwi_bvals_all
    adc = {}
    for ses in ("pre", "fu1"):
        img = nib.load(ds / f"sub-01/ses-{ses}/dwi/sub-01_ses-{ses}_dwi.nii.gz")
        tissue = _session_tissue(ds, "01", ses, img)
        signal = np.asarray(img.dataobj) / _scale(ds, "dwi")
        tumor = signal[tissue == TISSUE_INDEX["tumor"]].mean(axis=0)
        fat = signal[tissue == TISSUE_INDEX["fat"]].mean(axis=0)
        marrow = signal[tissue == TISSUE_INDEX["marrow"]].mean(axis=0)
        assert fat[0] < 0.15 * marrow[0]  # fat suppression
        high = b >= 200
        adc[ses] = -np.polyfit(b[high], np.log(tumor[high]), 1)[0]
        assert adc[ses] == pytest.approx(tissue_parameters(ses)["tumor"].D, rel=0.08)
    assert adc["fu1"] > 1.15 * adc["pre"]


def test_dce_signal_and_aif(ds: Path) -> None:
    proto = PHANTOM_PROTOCOL
    aif = pd.read_csv(ds / "derivatives/truth/aif.tsv", sep="\t")
    assert np.allclose(aif["time"], proto.dce_times_s)
    cb = parker_aif(proto.dce_times_s, proto.dce_bolus_arrival_s)
    assert np.allclose(aif["cb"], cb, rtol=1e-5, atol=1e-6)
    assert np.allclose(aif["cp"], cb / (1 - proto.hematocrit), rtol=1e-5, atol=1e-6)
    assert np.all(cb[: proto.dce_baseline_frames] == 0)
    assert cb.max() > 3
    img = nib.load(ds / "sub-01/ses-pre/perf/sub-01_ses-pre_dce.nii.gz")
    tissue = _session_tissue(ds, "01", "pre", img)
    signal = np.asarray(img.dataobj) / _scale(ds, "dce")
    tp = tissue_parameters("pre")
    # the aorta's signal converts back to the blood concentration (SPGR, nominal flip angle)
    s = signal[tissue == TISSUE_INDEX["blood"]].mean(axis=0)
    a = np.deg2rad(proto.dce_flip_angle_deg)
    s0 = s[: proto.dce_baseline_frames].mean()
    e10 = np.exp(-proto.dce_tr_s / tp["blood"].T1)
    m0 = s0 * (1 - np.cos(a) * e10) / (np.sin(a) * (1 - e10))
    y = s / (m0 * np.sin(a))
    e1 = (1 - y) / (1 - np.cos(a) * y)
    conc = (-np.log(e1) / proto.dce_tr_s - 1 / tp["blood"].T1) / proto.r1_per_mM_s
    late = slice(proto.dce_baseline_frames + 3, None)
    assert np.allclose(conc[late], cb[late], rtol=0.1, atol=0.05)
    # tumour enhances much more than marrow, and less at follow-up (Ktrans, vp down)
    enh = {}
    for ses in ("pre", "fu2"):
        img = nib.load(ds / f"sub-01/ses-{ses}/perf/sub-01_ses-{ses}_dce.nii.gz")
        tissue = _session_tissue(ds, "01", ses, img)
        sig = np.asarray(img.dataobj, dtype=float)
        for name in ("tumor", "marrow"):
            curve = sig[tissue == TISSUE_INDEX[name]].mean(axis=0)
            enh[ses, name] = curve[late].mean() / curve[: proto.dce_baseline_frames].mean() - 1
    assert enh["pre", "tumor"] > 2 * enh["pre", "marrow"]
    assert enh["fu2", "tumor"] < 0.8 * enh["pre", "tumor"]


# ---------------------------------------------------------------------------------------------
# Follow-up: motion and tissue changes
# ---------------------------------------------------------------------------------------------


def test_follow_up_motion_stored_and_applied(ds: Path) -> None:
    base, _, _ = _labels(ds, "01")
    ref = nib.load(ds / "sub-01/ses-pre/anat/sub-01_ses-pre_T2w.nii.gz")
    identity = _json(ds / "derivatives/truth/sub-01/ses-pre/sub-01_ses-pre_desc-truth_motion.json")
    assert np.allclose(identity["baseline_to_session_ras"], np.eye(4))
    tissue_pre = _data(_truth(ds, "01", "pre", "desc-tissue_dseg"))
    for ses in ("fu1", "fu2"):
        motion = _json(
            ds / f"derivatives/truth/sub-01/ses-{ses}/sub-01_ses-{ses}_desc-truth_motion.json"
        )
        rot = np.array(motion["rotation_deg"])
        t = np.array(motion["translation_mm"])
        c = np.array(motion["centre_mm"])
        assert 1 <= np.abs(rot).max() <= 5
        assert 1 <= np.abs(t).max() <= 6
        r = rotation_matrix(rot)
        m = np.array(motion["baseline_to_session_ras"])
        assert np.allclose(m[:3, :3], r)
        assert np.allclose(m[:3, 3], c + t - r @ c)
        assert np.allclose(np.linalg.inv(m), motion["session_to_baseline_ras"])
        # the treated body's centre c moves to c + t
        assert np.allclose(m @ np.append(c, 1), np.append(c + t, 1))
        truth = _data(_truth(ds, "01", ses, "desc-truth_dseg"))
        # exact: the truth labels are the anatomy seen through the stored matrix
        _, labels = anatomy_on_grid(ref.affine, ref.shape, subject=0, baseline_to_session=m)
        assert np.array_equal(truth, labels)
        # and the baseline label image mapped by the stored matrix agrees (nearest neighbour)
        idx = np.indices(ref.shape).reshape(3, -1)
        world = ref.affine[:3, :3] @ idx + ref.affine[:3, 3:]
        q = np.linalg.inv(m)[:3, :3] @ world + np.linalg.inv(m)[:3, 3:]
        vox = np.rint(np.linalg.inv(ref.affine)[:3, :3] @ q + np.linalg.inv(ref.affine)[:3, 3:])
        vox = vox.astype(int)
        inside = np.all((vox >= 0) & (vox < np.array(ref.shape)[:, None]), axis=0)
        mapped = np.zeros(idx.shape[1], dtype=base.dtype)
        mapped[inside] = base[tuple(vox[:, inside])]
        mapped = mapped.reshape(ref.shape)
        # compare away from label boundaries (voxels whose 6 neighbours share their label)
        cross = ndimage.generate_binary_structure(3, 1)
        interior = (truth > 0) & (
            ndimage.minimum_filter(truth, footprint=cross)
            == ndimage.maximum_filter(truth, footprint=cross)
        )
        assert (truth[interior] == mapped[interior]).mean() > 0.9
        # the vertebral bodies' centroids moved as the matrix says (and did move)
        err_mapped, err_unmoved = [], []
        for index, name in label_names(subject_layout(0)[0]).items():
            if not name.startswith("vb_"):
                continue
            before = ref.affine[:3, :3] @ np.argwhere(base == index).mean(0) + ref.affine[:3, 3]
            after = ref.affine[:3, :3] @ np.argwhere(truth == index).mean(0) + ref.affine[:3, 3]
            err_mapped.append(np.linalg.norm(m[:3, :3] @ before + m[:3, 3] - after))
            err_unmoved.append(np.linalg.norm(before - after))
        assert np.mean(err_mapped) < 2.0
        assert np.mean(err_unmoved) > np.mean(err_mapped) + 2.0
        # the raw series of the session show the moved anatomy, not the baseline position
        t2w = _data(ds / f"sub-01/ses-{ses}/anat/sub-01_ses-{ses}_T2w.nii.gz").astype(float)
        means = np.array([t2w[tissue_pre == k].mean() for k in range(len(TISSUES) + 1)])
        tissue_ses = _data(_truth(ds, "01", ses, "desc-tissue_dseg"))
        moved = np.corrcoef(t2w.ravel(), means[tissue_ses].ravel())[0, 1]
        unmoved = np.corrcoef(t2w.ravel(), means[tissue_pre].ravel())[0, 1]
        assert moved > 0.9
        assert moved > unmoved + 0.05


def test_follow_up_tissue_changes(ds: Path) -> None:
    pre, fu1, fu2 = (tissue_parameters(k) for k in SESSIONS)
    assert pytest.approx(1.30 * pre["tumor"].D) == fu1["tumor"].D
    assert pytest.approx(1.45 * pre["tumor"].D) == fu2["tumor"].D
    assert fu1["tumor"].Ktrans == pytest.approx(0.60 * pre["tumor"].Ktrans)
    assert fu2["tumor"].vp == pytest.approx(0.50 * pre["tumor"].vp)
    assert pytest.approx(0.80 * pre["marrow_treated"].T1) == fu1["marrow_treated"].T1
    assert pytest.approx(0.70 * pre["marrow_treated"].T1) == fu2["marrow_treated"].T1
    for name in ("marrow", "cord", "csf", "muscle", "fat", "disc", "blood"):
        assert fu1[name] == pre[name] == fu2[name]
    assert [t.name for t in TISSUES] == list(pre)
    with pytest.raises(QMRIInputError):
        tissue_parameters("fu3")

    table = pd.read_csv(ds / "derivatives/truth/tissue_parameters.tsv", sep="\t")
    row = table.set_index(["session", "tissue"])
    assert row.loc[("fu1", "tumor"), "D"] == pytest.approx(fu1["tumor"].D)
    assert row.loc[("pre", "cord"), "T1"] == pytest.approx(0.85)

    # the truth maps carry the changes in the moved anatomy
    def roi_values(ses: str, suffix: str, tissue_name: str) -> np.ndarray:
        tissue = _data(_truth(ds, "01", ses, "desc-tissue_dseg"))
        return _data(_truth(ds, "01", ses, f"desc-truth_{suffix}"))[
            tissue == TISSUE_INDEX[tissue_name]
        ]

    assert np.allclose(roi_values("fu1", "D", "tumor"), 1.3 * pre["tumor"].D, rtol=1e-6)
    assert np.allclose(roi_values("fu1", "ADC", "tumor"), roi_values("fu1", "D", "tumor"))
    assert np.allclose(roi_values("fu2", "Ktrans", "tumor"), 0.5 * pre["tumor"].Ktrans)
    assert np.allclose(roi_values("fu1", "T1map", "marrow_treated"), 0.48, rtol=1e-6)
    assert np.allclose(roi_values("fu1", "T1map", "marrow"), 0.60, rtol=1e-6)
    assert np.allclose(roi_values("fu2", "T1map", "cord"), 0.85, rtol=1e-6)

    # measured: tumour T1 unchanged, treated marrow brighter at 20 deg VFA (shorter T1)
    def vfa_mean(ses: str, tissue_name: str) -> float:
        tissue = _data(_truth(ds, "01", ses, "desc-tissue_dseg"))
        vfa = _data(ds / f"sub-01/ses-{ses}/anat/sub-01_ses-{ses}_flip-5_VFA.nii.gz")
        return float(vfa[tissue == TISSUE_INDEX[tissue_name]].mean())

    assert vfa_mean("fu2", "marrow_treated") > 1.15 * vfa_mean("pre", "marrow_treated")
    assert vfa_mean("fu2", "cord") == pytest.approx(vfa_mean("pre", "cord"), rel=0.1)


# ---------------------------------------------------------------------------------------------
# Arguments and validation
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_subjects": 0},
        {"sessions": ("pre", "fu1", "fu2", "fu3")},
        {"sessions": ("pre", "fu-1")},
        {"sessions": ("pre", "pre")},
        {"sessions": "pre"},
        {"seed": -1},
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(QMRIInputError):
        write_phantom_dataset(tmp_path, small=True, **kwargs)


def validate_bids(path: Path) -> dict:
    """Run the official BIDS validator (PyPI bids-validator-deno, a test dependency)."""
    exe = Path(sys.executable).parent / "bids-validator-deno"
    found = str(exe) if exe.exists() else shutil.which("bids-validator-deno")
    assert found, "bids-validator-deno is missing: install the test extra (pip install -e .[test])"
    proc = subprocess.run(
        [found, "--format", "json", str(path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return json.loads(proc.stdout)


def test_bids_validator_reports_no_errors(ds: Path) -> None:
    report = validate_bids(ds)
    errors = [i for i in report["issues"]["issues"] if i["severity"] == "error"]
    assert errors == []
    assert sorted(report["summary"]["subjects"]) == ["01", "02"]
