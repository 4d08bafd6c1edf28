"""Conversion of TotalSegmentator and SPINEPS label maps to the contract's labels.

The segmenters' outputs are made here, in their documented formats, from the phantom's truth
labels (``data_sample/derivatives/truth``): what a segmenter sees is the truth with the GTV's
voxels given back to the bone they replaced (a segmenter labels the vertebra, not the tumour);
the GTV is then added by ``convert_segmentation(tumor=...)`` as a user would.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from qmri.errors import QMRIInputError
from qmri.labels import check_labels, read_dseg_tsv
from qmri.rois import derive_rois
from qmri.segmenters import convert_segmentation, from_spineps, from_totalsegmentator

ANAT = Path(__file__).parents[1] / "data_sample/derivatives/truth/sub-01/ses-pre/anat"
TRUTH = ANAT / "sub-01_ses-pre_desc-truth_dseg.nii.gz"
TISSUE = ANAT / "sub-01_ses-pre_desc-tissue_dseg.nii.gz"
LEVELS = ("T9", "T10", "T11", "T12", "L1")
TREATED = "T11"  # participants.tsv of the sample
# documented indices (TotalSegmentator map_to_binary.py class_map; SPINEPS README / TPTBox)
VERTEBRAE_MR = {"T9": 10, "T10": 9, "T11": 8, "T12": 7, "L1": 6}
TOTAL_MR = {"vertebrae": 19, "intervertebral_discs": 20, "spinal_cord": 21, "aorta": 23}
SPINEPS_ID = {"T9": 16, "T10": 17, "T11": 18, "T12": 19, "L1": 20}
DISC_TISSUE = 4  # desc-tissue_dseg.tsv


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.sum(a & b) / (np.sum(a) + np.sum(b))


@pytest.fixture(scope="module")
def truth() -> dict:
    img = nib.load(TRUTH)
    data = np.asarray(img.dataobj).astype(np.int32)
    table = {i: lb.name for i, lb in read_dseg_tsv(str(TRUTH).replace(".nii.gz", ".tsv")).items()}
    masks = {name: data == i for i, name in table.items()}
    # the segmenter's view: tumour voxels get the nearest bone label of the treated level
    bone = np.isin(data, [i for i, n in table.items() if n.endswith(f"_{TREATED}")])
    bone &= ~np.isin(data, [i for i, n in table.items() if n.startswith("cord")])
    _, nearest = ndimage.distance_transform_edt(~bone, return_indices=True)
    view = data.copy()
    tumor = masks["tumor"]
    view[tumor] = data[tuple(ix[tumor] for ix in nearest)]
    seen = {name: view == i for i, name in table.items() if name != "tumor"}
    disc = np.asarray(nib.load(TISSUE).dataobj) == DISC_TISSUE
    return {"img": img, "data": data, "table": table, "masks": masks, "seen": seen, "disc": disc}


def save(data: np.ndarray, affine: np.ndarray, path: Path, table: dict | None = None) -> Path:
    """Write a label image; with ``table`` as TotalSegmentator --ml does (header extension)."""
    img = nib.Nifti1Image(np.asarray(data).astype(np.uint8), affine)
    if table is not None:
        body = "".join(f'<Label Key="{k}" Red="1" Green="0" Blue="0" Alpha="1"><![CDATA[{n}]]>'
                       "</Label>\n" for k, n in table.items())  # fmt: skip
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?> <CaretExtension> <VolumeInformation '
            f'Index="0"> <LabelTable>\n{body}</LabelTable> </VolumeInformation></CaretExtension>'
        )
        img.header.extensions.append(nib.nifti1.Nifti1Extension(0, xml.encode()))
    nib.save(img, str(path))
    return path


def totalseg_classes(truth: dict) -> dict[str, np.ndarray]:
    seen = truth["seen"]
    classes = {
        f"vertebrae_{lv}": seen[f"vb_{lv}"]
        | seen[f"pel_{lv}"]
        | seen[f"per_{lv}"]
        | seen[f"pe_{lv}"]
        for lv in LEVELS
    }
    classes["vertebrae"] = np.any([classes[f"vertebrae_{lv}"] for lv in LEVELS], axis=0)
    classes["spinal_cord"] = np.any([seen[f"cord_{lv}"] for lv in LEVELS], axis=0)
    classes["aorta"] = seen["aorta"]
    classes["intervertebral_discs"] = truth["disc"]
    return classes


@pytest.fixture(scope="module")
def totalseg_ml(truth: dict, tmp_path_factory) -> list[Path]:
    """``--task total_mr --ml`` and ``--task vertebrae_mr --ml`` outputs."""
    folder, classes, affine = (
        tmp_path_factory.mktemp("ts_ml"),
        totalseg_classes(truth),
        truth["img"].affine,
    )
    vert = np.zeros(truth["data"].shape, dtype=np.uint8)
    for lv, k in VERTEBRAE_MR.items():
        vert[classes[f"vertebrae_{lv}"]] = k
    total = np.zeros_like(vert)
    for name, k in TOTAL_MR.items():
        total[classes[name]] = k
    return [
        save(total, affine, folder / "total_mr.nii.gz", {k: n for n, k in TOTAL_MR.items()}),
        save(vert, affine, folder / "vertebrae_mr.nii.gz",
             {k: f"vertebrae_{lv}" for lv, k in VERTEBRAE_MR.items()}),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def totalseg_folder(truth: dict, tmp_path_factory) -> Path:
    """Default TotalSegmentator output: one binary mask per class (empty ones included)."""
    folder = tmp_path_factory.mktemp("ts_folder")
    for name, mask in {**totalseg_classes(truth), "liver": np.zeros_like(truth["disc"])}.items():
        save(mask, truth["img"].affine, folder / f"{name}.nii.gz")
    return folder


def spineps_maps(truth: dict) -> tuple[np.ndarray, np.ndarray]:
    seen, shape = truth["seen"], truth["data"].shape
    inst, sem = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
    for lv in LEVELS:
        for part in ("vb", "pel", "per", "pe"):
            inst[seen[f"{part}_{lv}"]] = SPINEPS_ID[lv]
        body = seen[f"vb_{lv}"]
        sem[body] = 50
        sem[body & ~ndimage.binary_erosion(body)] = 49  # corpus border
        sem[seen[f"pel_{lv}"]] = 41  # arcus
        sem[seen[f"per_{lv}"]] = 44  # costal process (sides come from the affine)
        sem[seen[f"pe_{lv}"]] = 42
        sem[seen[f"cord_{lv}"]] = 60
    sem[seen["csf"]] = 61
    # each disc belongs to the vertebra above: the cord level of its slice
    cord_level = {z: lv for lv in LEVELS for z in np.nonzero(seen[f"cord_{lv}"].any((0, 1)))[0]}
    for z in np.nonzero(truth["disc"].any((0, 1)))[0]:
        if z in cord_level:
            sl = truth["disc"][:, :, z]
            sem[:, :, z][sl], inst[:, :, z][sl] = 100, 100 + SPINEPS_ID[cord_level[z]]
    return inst, sem


@pytest.fixture(scope="module")
def spineps_files(truth: dict, tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("spineps")
    inst, sem = spineps_maps(truth)
    affine = truth["img"].affine
    return [
        save(inst, affine, folder / "sub-01_T2w_seg-vert_msk.nii.gz"),
        save(sem, affine, folder / "sub-01_T2w_seg-spine_msk.nii.gz"),
    ]


@pytest.fixture(scope="module")
def tumor_file(truth: dict, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("gtv") / "gtv.nii.gz"
    return save(truth["masks"]["tumor"], truth["img"].affine, path)


def read_back(report) -> tuple[dict[str, np.ndarray], dict]:
    table = read_dseg_tsv(report.table)
    data = check_labels(np.asarray(nib.load(report.dseg).dataobj), table, report.dseg)
    return {lb.name: data == i for i, lb in table.items()}, table


def test_spineps_reproduces_truth_exactly(truth, spineps_files, tumor_file, tmp_path):
    out = tmp_path / "sub-01_ses-pre_dseg.nii.gz"
    # order of the inputs does not matter: the SPINEPS names tell instance from semantic
    report = convert_segmentation("spineps", spineps_files[::-1], TRUTH, out, tumor=tumor_file)
    got, table = read_back(report)
    expected = {n: m for n, m in truth["masks"].items() if n != "aorta"}  # SPINEPS has no aorta
    assert sorted(got) == sorted(expected)
    for name, mask in expected.items():
        assert np.array_equal(got[name], mask), name
    assert report.labels == {n: int(m.sum()) for n, m in got.items()}
    assert report.unmapped == sorted([f"{lv}_ivd" for lv in LEVELS] + ["Vertebra_Disc"])
    assert not report.resampled
    assert report.dropped == {}
    # the derived ROIs are those of the truth labels
    truth_table = {i: n for i, n in truth["table"].items() if n != "aorta"}
    truth_data = np.where(truth["masks"]["aorta"], 0, truth["data"])
    ref = derive_rois(truth_data, truth_table, TREATED)
    rois = derive_rois(np.asarray(nib.load(out).dataobj), table, TREATED)
    assert list(rois) == list(ref)
    for name in ref:
        assert np.array_equal(rois[name], ref[name]), name


def test_spineps_other_grid_is_resampled(truth, tmp_path):
    """Masks on a grid flipped left-right and 3x finer along S: sides come from the affine."""
    inst, sem = spineps_maps(truth)
    aff = truth["img"].affine.copy()
    nx = inst.shape[0]
    fine = aff @ np.array([[-1, 0, 0, nx - 1], [0, 1, 0, 0], [0, 0, 1 / 3, -1 / 3], [0, 0, 0, 1]])

    def warp(a):
        return np.repeat(a[::-1], 3, axis=2)

    paths = [
        save(warp(inst), fine, tmp_path / "i.nii.gz"),
        save(warp(sem), fine, tmp_path / "s.nii.gz"),
    ]
    labels, affine, names, _ = from_spineps(*paths, reference=TRUTH)
    assert np.allclose(affine, aff)
    for i, name in names.items():
        assert np.array_equal(labels == i, truth["seen"][name]), name
    report = convert_segmentation("spineps", paths, TRUTH, tmp_path / "x_dseg.nii.gz")
    assert report.resampled
    # on the segmenter's own grid (no reference): the voxels at the original centres agree
    labels, affine, names, _ = from_spineps(*paths)
    assert np.allclose(affine, fine)
    assert labels.shape == warp(inst).shape
    back = labels[::-1][:, :, 1::3]
    for i, name in names.items():
        assert np.array_equal(back == i, truth["seen"][name]), name


# measured overlaps of the TotalSegmentator body / posterior-element split on the phantom (Dice,
# per level): vb 0.992 (T11 0.995), pel 0.936 (0.942), per 0.898, pe 0.862 (0.889); cord exact
TS_DICE_MIN = {"vb": 0.99, "pel": 0.93, "per": 0.89, "pe": 0.86}
# measured: ctv 0.990, vb_treated_nontumor 0.995, vb_adjacent 0.992, vb_control 0.992
ROI_DICE_MIN = {"ctv": 0.98, "vb_treated_nontumor": 0.99, "vb_adjacent": 0.99, "vb_control": 0.99}


@pytest.mark.parametrize("form", ["ml", "folder"])
def test_totalsegmentator(truth, totalseg_ml, totalseg_folder, tumor_file, tmp_path, form):
    inputs = totalseg_ml if form == "ml" else [totalseg_folder]
    out = tmp_path / "dseg.nii.gz"
    report = convert_segmentation("totalsegmentator", inputs, TRUTH, out, tumor=tumor_file)
    got, table = read_back(report)
    assert report.unmapped == ["intervertebral_discs", "vertebrae"]
    masks = truth["masks"]
    assert "csf" not in got  # no TotalSegmentator task has a spinal-canal class
    for name in ("aorta", "tumor", *(f"cord_{lv}" for lv in LEVELS)):
        assert np.array_equal(got[name], masks[name]), name
    for lv in LEVELS:
        for part, low in TS_DICE_MIN.items():
            assert dice(got[f"{part}_{lv}"], masks[f"{part}_{lv}"]) >= low, (part, lv)
    # every vertebra voxel is kept: the four parts cover the vertebra exactly (GTV aside)
    for lv in LEVELS:
        union = [np.any([m[f"{p}_{lv}"] for p in TS_DICE_MIN], axis=0) for m in (got, masks)]
        assert np.array_equal(*union), lv
    ref = derive_rois(truth["data"], truth["table"], TREATED)
    rois = derive_rois(np.asarray(nib.load(out).dataobj), table, TREATED)
    assert list(rois) == list(ref)
    for name in ref:
        if name in ROI_DICE_MIN:
            assert dice(rois[name], ref[name]) >= ROI_DICE_MIN[name], name
        elif name.startswith("vb_"):
            assert dice(rois[name], ref[name]) >= TS_DICE_MIN["vb"], name
        else:  # tumor, cord_treated, cord_adjacent, cord_<level>
            assert np.array_equal(rois[name], ref[name]), name


def test_totalsegmentator_other_grid_is_resampled(truth, totalseg_ml, tmp_path):
    """The --ml files on a grid flipped front-back: same labels on the reference grid."""
    same = from_totalsegmentator(totalseg_ml, reference=TRUTH)
    flipped = []
    for path in totalseg_ml:
        img = nib.load(path)
        ny = img.shape[1]
        aff = img.affine @ np.array([[1, 0, 0, 0], [0, -1, 0, ny - 1], [0, 0, 1, 0], [0, 0, 0, 1]])
        out = nib.Nifti1Image(np.asarray(img.dataobj)[:, ::-1], aff, img.header)
        nib.save(out, str(tmp_path / path.name))
        flipped.append(tmp_path / path.name)
    other = from_totalsegmentator(flipped, reference=TRUTH)
    assert other[2] == same[2]
    assert np.array_equal(other[0], same[0])
    assert np.allclose(other[1], same[1])
    report = convert_segmentation("totalsegmentator", flipped, TRUTH, tmp_path / "f_dseg.nii.gz")
    assert report.resampled


def test_totalsegmentator_without_header_table_needs_task(truth, tmp_path):
    classes = totalseg_classes(truth)
    vert = np.zeros(truth["data"].shape, dtype=np.uint8)
    for lv, k in VERTEBRAE_MR.items():
        vert[classes[f"vertebrae_{lv}"]] = k
    path = save(vert, truth["img"].affine, tmp_path / "vertebrae_mr.nii.gz")
    with pytest.raises(QMRIInputError, match="task") as err:
        from_totalsegmentator(path)
    assert str(path) in str(err.value)
    assert "\n" not in str(err.value)
    _, _, names, unmapped = from_totalsegmentator(path, task="vertebrae_mr")
    assert sorted(names.values()) == sorted(
        f"{p}_{lv}" for lv in LEVELS for p in ("vb", "pel", "per", "pe")
    )
    assert unmapped == []


def one_line_error(call, path: Path, match: str) -> None:
    with pytest.raises(QMRIInputError, match=match) as err:
        call()
    text = str(err.value)
    assert "\n" not in text
    assert str(path) in text, text


def test_bad_input_one_line_errors(truth, spineps_files, tmp_path):
    aff = truth["img"].affine
    shape = truth["data"].shape
    floats = tmp_path / "floats.nii.gz"
    nib.save(nib.Nifti1Image(np.full(shape, 0.5, np.float32), aff), str(floats))
    one_line_error(lambda: from_totalsegmentator(floats, task="total_mr"), floats, "non-integer")
    four_d = tmp_path / "fourd.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((*shape, 2), np.uint8), aff), str(four_d))
    one_line_error(lambda: from_spineps(four_d, spineps_files[1]), four_d, "not a label map")
    folder = tmp_path / "ts"
    folder.mkdir()
    save(truth["seen"]["vb_T9"], aff, folder / "vertebrae_T13.nii.gz")
    one_line_error(lambda: from_totalsegmentator(folder), folder, "outside the contract")
    only_total = tmp_path / "total"
    only_total.mkdir()
    save(truth["seen"]["vb_T9"], aff, only_total / "vertebrae.nii.gz")
    one_line_error(lambda: from_totalsegmentator(only_total), only_total, "vertebrae_mr")
    inst, _ = spineps_maps(truth)
    inst[inst == SPINEPS_ID["L1"]] = 28  # T13: a transitional vertebra
    bad = save(inst, aff, tmp_path / "t13_seg-vert_msk.nii.gz")
    one_line_error(lambda: from_spineps(bad, spineps_files[1]), bad, "T13")
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line_error(lambda: from_totalsegmentator(empty), empty, "no <class>")
    with pytest.raises(QMRIInputError, match="unknown segmenter"):
        convert_segmentation("nnunet", spineps_files, TRUTH, tmp_path / "a_dseg.nii.gz")
    with pytest.raises(QMRIInputError, match="needs 2 inputs"):
        convert_segmentation("spineps", spineps_files[:1], TRUTH, tmp_path / "b_dseg.nii.gz")
    assert not list(tmp_path.glob("*_dseg.*"))  # nothing written on error


def test_cli_import_labels(truth, spineps_files, tumor_file, tmp_path, capsys):
    """``qmri import labels --from spineps``: the same labels as the function, a report."""
    from qmri.cli import main

    out = tmp_path / "sub-01_ses-pre_dseg.nii.gz"
    argv = ["import", "labels", "--from", "spineps", *map(str, spineps_files),
            "--reference", str(TRUTH), "--out", str(out), "--tumor", str(tumor_file)]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"{out}:" in printed
    assert "vb_T11" in printed
    assert out.with_name("sub-01_ses-pre_dseg.tsv").exists()
    assert main(["import", "labels", "--from", "spineps", str(tmp_path / "nope.nii.gz"),
                 "--reference", str(TRUTH), "--out", str(out)]) == 2  # fmt: skip
    assert capsys.readouterr().err.startswith("qmri: error: ")
