"""RTSTRUCT / RTDOSE / RTPLAN import (qmri.dicom.rtstruct, rtdose, structures, planning_ct).

The RT objects are made here (tests/rt_factory.py) from the phantom: a planning CT displaced
from the baseline MR by a known rigid transform (2.9 deg, 5.4 mm, plus a large frame offset),
its RTSTRUCT, RTDOSE and RTPLAN; and the baseline T2w as MR DICOM with an RTSTRUCT on it.

"Truth volume" is the phantom's continuous geometry (the same definition as its truth labels)
sampled on a 0.5 mm grid: the truth label images sample it at the MR voxel centres, and on the
3 x 2.5 x 2.5 mm sample grid several of those samples sit on a structure's boundary (the cord's
ellipse, the treated body's top and bottom planes), so a structure's voxel count there moves by
up to a quarter when anything shifts by a tenth of a millimetre. Volumes are therefore checked
on the planning grid and on a 1 mm reference; on the native grid the labels are checked
voxel by voxel (Dice).
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import rt_factory as rf
from pydicom.data import get_testdata_file
from scipy import ndimage

from qmri.dicom.planning_ct import frame_hash, read_image_series, register_planning_image
from qmri.dicom.rtdose import import_rtdose, read_rtdose, read_rtplan
from qmri.dicom.rtstruct import (
    Contour,
    find_referenced_series,
    import_rtstruct,
    plan_mask_path,
    rasterise_contours,
    read_rtstruct,
    sample_contours,
)
from qmri.dicom.structures import Rule, StructureMap
from qmri.dose import read_dose
from qmri.errors import QMRIInputError
from qmri.io import save_nifti
from qmri.labels import check_labels, read_dseg_tsv
from qmri.phantom import anatomy_on_grid, label_names, subject_layout
from qmri.phantom.dose import ctv_mask
from qmri.registration import resample_linear, rotation_angles_deg
from qmri.study import CTV_PLAN_SUFFIX

LEVELS, TREATED, CENTRE = subject_layout(0)


# --------------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def planning(tmp_path_factory) -> rf.PlanningScenario:
    return rf.make_planning_scenario(tmp_path_factory.mktemp("rt_planning"))


@pytest.fixture(scope="module")
def imported(planning):
    out = planning.root / "labels" / "sub-01" / "ses-pre" / "anat"
    xfm = planning.root / "out" / "xfm" / "sub-01_ses-pre_from-planCT_to-T2w_xfm.txt"
    return import_rtstruct(
        planning.rtstruct, planning.ct_dir, rf.REFERENCE, out / "sub-01_ses-pre_dseg.nii.gz",
        treated_levels="T11", out_xfm=xfm,
        checkerboard=planning.root / "out" / "qc" / "sub-01_desc-planCT_checkerboard.png",
    )  # fmt: skip


@pytest.fixture(scope="module")
def truth_volumes() -> dict[str, float]:
    """Continuous volumes (mL) of the phantom's labels within the MR field of view (0.5 mm)."""
    h = 0.5
    lo = np.array([-32.0, -46.0, -80.0])
    n = np.array([128, 176, 320])
    index = label_names(LEVELS)
    counts: dict[int, int] = {}
    ctv = 0
    inv = {v: k for k, v in index.items()}
    ctv_ids = [inv["tumor"], inv[f"vb_{TREATED}"], inv[f"pel_{TREATED}"]]
    for z0 in range(0, n[2], 64):
        aff = np.diag([h, h, h, 1.0])
        aff[:3, 3] = CENTRE + lo + h / 2 + np.array([0.0, 0.0, z0 * h])
        _, lab = anatomy_on_grid(aff, (n[0], n[1], min(64, n[2] - z0)), subject=0)
        values, hits = np.unique(lab, return_counts=True)
        for v, c in zip(values, hits, strict=True):
            counts[int(v)] = counts.get(int(v), 0) + int(c)
        ctv += int(np.isin(lab, ctv_ids).sum())
    out = {index[k]: c * h**3 / 1000 for k, c in counts.items() if k}
    out["ctv"] = ctv * h**3 / 1000
    out["vb_full"] = out[f"vb_{LEVELS[0]}"]  # every body has the same geometry
    return out


def _labels(res) -> tuple[np.ndarray, dict[str, int]]:
    data = np.asarray(nib.load(res.dseg).dataobj)
    table = {lab.name: i for i, lab in read_dseg_tsv(res.table).items()}
    return data, table


def _truth_labels() -> tuple[np.ndarray, dict[str, int]]:
    data = np.asarray(nib.load(rf.TRUTH_DSEG).dataobj).astype(int)
    table = {v: k for k, v in label_names(LEVELS).items()}
    return data, table


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def _true_mr_to_ct() -> np.ndarray:
    offset = np.eye(4)
    offset[:3, 3] = rf.CT_FRAME_OFFSET_MM
    return offset @ rf.rigid(rf.CT_ANGLES_DEG, rf.CT_SHIFT_MM, CENTRE)


# --------------------------------------------------------------------------------------------
# structure names
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "status", "target"),
    [
        ("GTV", "label", "tumor"),
        ("GTV_T11", "label", "tumor"),
        ("gtv 2", "label", "tumor"),
        ("CTV", "mask", "ctv_plan"),
        ("CTV_T11-T12", "mask", "ctv_plan"),
        ("PTV_35Gy", "mask", "ptv_plan"),
        ("PTV_opt", "ignored", None),
        ("SpinalCord", "cord", "cord"),
        ("Spinal_Cord", "cord", "cord"),
        ("SC", "cord", "cord"),
        ("Cord_T11", "label", "cord_T11"),
        ("Cord_PRV", "ignored", None),
        ("Cord+3mm", "ignored", None),
        ("Vertebra_L1", "label", "vb_L1"),
        ("VB_L1", "label", "vb_L1"),
        ("L1", "label", "vb_L1"),
        ("T12_body", "label", "vb_T12"),
        ("Vertebra_T13", "unknown", None),
        ("PE_T11", "label", "pe_T11"),
        ("PEL_T11", "label", "pel_T11"),
        ("ThecalSac", "label", "csf"),
        ("Aorta", "label", "aorta"),
        ("GreatVes", "label", "aorta"),
        ("Esophagus", "ignored", None),
        ("BODY", "ignored", None),
        ("SpinalCanal", "unknown", None),
        ("Liver", "ignored", None),
    ],
)
def test_default_structure_names(name, status, target):
    match = StructureMap().classify(name)
    assert (match.status, match.target) == (status, target)
    assert (match.rule is None) == (status == "unknown")


def test_user_map_overrides_and_validates(tmp_path):
    path = tmp_path / "map.yaml"
    path.write_text(
        "SpinalCanal: csf\n"
        "GTV: ignore\n"
        '"re:vert_(?P<level>[ctls][0-9]+)_whole": "vb_{level}"\n'
        "Tumour main: tumor\n",
        encoding="utf-8",
    )
    smap = StructureMap.from_yaml(path)
    assert smap.classify("SpinalCanal").target == "csf"
    assert smap.classify("GTV").status == "ignored"
    assert smap.classify("Vert_T12 whole").target == "vb_T12"
    assert smap.classify("tumour-main").target == "tumor"
    assert smap.classify("CTV").target == "ctv_plan"  # defaults still apply
    assert str(path) in smap.classify("GTV").rule
    path.write_text("use_defaults: false\nBone: vb_L1\n", encoding="utf-8")
    smap = StructureMap.from_yaml(path)
    assert smap.classify("GTV").status == "unknown"
    assert smap.classify("bone").target == "vb_L1"
    for text, words in [
        ("GTV: gross_tumour\n", "not a contract label"),
        ('"re:gtv(": tumor\n', "not a valid regular expression"),
        ("- GTV\n", "must be a mapping"),
        ("use_defaults: maybe\n", "use_defaults"),
    ]:
        path.write_text(text, encoding="utf-8")
        with pytest.raises(QMRIInputError, match=words) as err:
            StructureMap.from_yaml(path)
        assert "\n" not in str(err.value)
        assert str(path) in str(err.value)
    with pytest.raises(QMRIInputError, match="unknown level"):
        StructureMap([Rule("vert_(?P<level>[a-z0-9]+)", "vb_{level}", regex=True, source="m")]
                     ).classify("vert_t13")  # fmt: skip


# --------------------------------------------------------------------------------------------
# rasterisation
# --------------------------------------------------------------------------------------------


def _circle(cx: float, cy: float, r: float, z: float, n: int = 256) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    ras = np.column_stack([cx + r * np.cos(t), cy + r * np.sin(t), np.full(n, z)])
    return ras * np.array([-1.0, -1.0, 1.0])  # LPS


def test_rasteriser_analytic_shapes_holes_and_points():
    shape = (128, 128, 40)
    affine = np.diag([-1.0, -1.0, 2.0, 1.0])
    affine[:3, 3] = [63.8, 63.7, -39.5]
    zs = affine[2, 3] + 2.0 * np.arange(shape[2])
    centre = (0.3, -0.2)
    voxel_ml = 2.0 / 1000
    cyl = [Contour(_circle(*centre, 20.0, z), "CLOSED_PLANAR") for z in zs[5:25]]
    ring = [Contour(_circle(*centre, r, z), "CLOSED_PLANAR") for z in zs[5:25] for r in (20, 10)]
    sphere = [
        Contour(_circle(*centre, np.sqrt(64 - z**2), z), "CLOSED_PLANAR") for z in zs if abs(z) < 8
    ]
    slab_sphere = sum(np.pi * (64 - z**2) * 2.0 for z in zs if abs(z) < 8) / 1000
    # two overlapping discs on one slice: exclusive disjunction (even-odd)
    pair = [
        Contour(_circle(-5.0, 0.0, 10.0, zs[3]), "CLOSED_PLANAR"),
        Contour(_circle(5.0, 0.0, 10.0, zs[3]), "CLOSED_PLANAR"),
    ]
    lens = 2 * (100 * np.arccos(0.5) - 5 * np.sqrt(100 - 25))  # overlap of the discs (mm^2)
    cases = [
        (cyl, np.pi * 400 * 2.0 * 20 / 1000, 0.005),
        (ring, np.pi * (400 - 100) * 2.0 * 20 / 1000, 0.005),
        (sphere, slab_sphere, 0.02),
        (pair, (2 * np.pi * 100 - 2 * lens) * 2.0 / 1000, 0.03),
    ]
    for contours, volume_ml, tol in cases:
        mask, notes = rasterise_contours(contours, shape, affine)
        assert notes == []
        assert mask.sum() * voxel_ml == pytest.approx(volume_ml, rel=tol)
        # sampling at the grid's own voxel centres is the raster
        pts = np.indices(shape).reshape(3, -1).T @ affine[:3, :3].T + affine[:3, 3]
        inside, _ = sample_contours(contours, shape, affine, pts)
        np.testing.assert_array_equal(inside.reshape(shape), mask)
    mask, notes = rasterise_contours(
        [Contour(np.array([[0.0, 0.0, 0.0]]), "POINT"), *cyl[:1]], shape, affine, name="iso"
    )
    assert mask.any()
    assert any("not CLOSED_PLANAR" in n for n in notes)
    tilted = _circle(0, 0, 5, 0.0)
    tilted[:, 2] = tilted[:, 0] * 0.5
    with pytest.raises(QMRIInputError, match="not in the plane"):
        rasterise_contours([Contour(tilted, "CLOSED_PLANAR")], shape, affine, name="x")


def test_planning_grid_volumes(planning, truth_volumes):
    """Contour rasterisation on the planning CT: every structure within 1% of its truth."""
    sset = read_rtstruct(planning.rtstruct)
    image = find_referenced_series(sset, planning.ct_dir)
    voxel_ml = abs(np.linalg.det(image.affine[:3, :3])) / 1000
    expected = {"GTV": truth_volumes["tumor"], "CTV": truth_volumes["ctv"]}
    expected |= {f"Vertebra_{lv}": truth_volumes["vb_full"] for lv in LEVELS}
    for s in sset.structures:
        if s.name in expected:
            mask, _ = rasterise_contours(s.closed, image.shape, image.affine)
            assert mask.sum() * voxel_ml == pytest.approx(expected[s.name], rel=0.01), s.name


# --------------------------------------------------------------------------------------------
# planning CT -> MR
# --------------------------------------------------------------------------------------------


def test_registration_recovers_known_transform(planning, imported):
    reg = imported.registration
    assert reg is not None
    assert reg.mask_voxels > 0
    error = np.linalg.inv(_true_mr_to_ct()) @ reg.reference_to_planning_ras
    assert rotation_angles_deg(error) < 1.0
    box = np.array(
        [[x, y, z, 1.0] for x in (-30, 30) for y in (-30, 30) for z in (-30, 30)]
    ) + np.append(CENTRE, 0.0)
    shift = np.linalg.norm((box @ error.T)[:, :3] - box[:, :3], axis=1)
    assert shift.max() < 1.0
    assert imported.transform.is_file()
    assert imported.checkerboard.is_file()
    side = json.loads(imported.transform_sidecar.read_text())
    assert side["Metric"] == "MattesMutualInformation"
    assert side["PlanningFrameOfReferenceSHA256"] == frame_hash(planning.ct.frame_uid)
    assert "grown by 20 mm" in side["FocusMask"]
    assert side["FocusMaskVoxels"] > 0
    assert "vb_T11" in side["FocusMask"]


def test_initial_guess_rescues_a_start_one_level_off(planning, tmp_path):
    """Started 16 mm off along the spine the registration locks onto the neighbouring
    vertebra (28 mm away); an initial guess within 4 mm brings it back."""
    sset = read_rtstruct(planning.rtstruct)
    image = find_referenced_series(sset, planning.ct_dir)
    gtv = next(s for s in sset.structures if s.name == "GTV")
    focus = rasterise_contours(gtv.closed, image.shape, image.affine)[0]
    focus = ndimage.binary_dilation(focus, iterations=20)
    ref = nib.load(rf.REFERENCE)
    offset = np.eye(4)
    offset[2, 3] = 16.0
    placed = offset @ _true_mr_to_ct()  # the MR, 16 mm from where the CT sees it
    moved = tmp_path / "T2w_in_ct_frame.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(ref.dataobj), placed @ ref.affine), moved)
    target = placed @ np.append(CENTRE, 1.0)
    guess = np.eye(4)
    guess[2, 3] = -12.0
    for initial, lands_mm in [(None, 28.0), (guess, 0.0)]:
        reg = register_planning_image(
            image, moved, focus_mask=focus, initialize="identity", initial=initial
        )
        error = offset @ reg.reference_to_planning_ras  # identity when exact
        miss = np.linalg.norm((error @ target)[:3] - target[:3])
        assert miss == pytest.approx(lands_mm, abs=1.0)


def test_native_grid_labels(planning, imported):
    got, table = _labels(imported)
    truth, ttable = _truth_labels()
    ref = nib.load(rf.REFERENCE)
    img = nib.load(imported.dseg)
    assert img.shape == ref.shape
    assert np.allclose(img.affine, ref.affine)
    check_labels(got, read_dseg_tsv(imported.table), imported.dseg)
    expected = {f"vb_{lv}" for lv in LEVELS} | {f"cord_{lv}" for lv in LEVELS}
    assert set(table) == expected | {"csf", "aorta", "tumor"}
    minimum = {"vb": 0.95, "aorta": 0.97, "tumor": 0.95, "csf": 0.9, "cord": 0.85}
    for name, index in table.items():
        dice = _dice(got == index, truth == ttable[name])
        assert dice >= minimum[name.split("_")[0]], (name, dice)
    # the GTV took the treated body's voxels it covers; no voxel carries two labels
    assert imported.overlaps["vb_T11"]["tumor"] > 0
    assert imported.unknown == ["SpinalCanal"]
    assert imported.ignored == ["BODY"]
    assert imported.cord_outside_levels > 0
    assert any("beyond the imported vertebral levels" in n for n in imported.notes)
    report = json.loads(imported.report.read_text())
    assert report["UnknownStructures"] == ["SpinalCanal"]
    assert report["LabelVoxels"] == imported.labels
    # plan masks beside the labels, under the names the workflow looks for
    ctv_path = imported.masks["ctv_plan"]
    assert ctv_path == plan_mask_path(imported.dseg, "ctv_plan")
    assert ctv_path.name == f"sub-01_ses-pre_{CTV_PLAN_SUFFIX}"
    assert imported.masks["ptv_plan"].name == "sub-01_ses-pre_desc-ptvplan_mask.nii.gz"
    ctv = np.asarray(nib.load(ctv_path).dataobj) > 0
    assert _dice(ctv, ctv_mask(truth, LEVELS, [TREATED])) >= 0.95


def test_round_trip_volumes_on_a_1mm_reference(planning, truth_volumes, tmp_path):
    """After CT contours -> registration -> a 1 mm reference grid, every label and the plan's
    CTV are within 3% of their truth volume."""
    ref = nib.load(rf.REFERENCE)
    fov = np.array(ref.shape) * np.linalg.norm(ref.affine[:3, :3], axis=0)
    shape = tuple(int(n) for n in np.rint(fov))
    affine = np.eye(4)
    centre = ref.affine @ np.append((np.array(ref.shape) - 1) / 2, 1.0)
    affine[:3, 3] = centre[:3] - (np.array(shape) - 1) / 2
    fine = np.nan_to_num(
        resample_linear(np.asarray(ref.dataobj, float), ref.affine, shape, affine)
    )
    reference = save_nifti(fine, affine, tmp_path / "sub-01_ses-pre_T2w.nii.gz")
    res = import_rtstruct(
        planning.rtstruct, planning.ct_dir, reference, tmp_path / "sub-01_ses-pre_dseg.nii.gz",
        treated_levels=["T11"], out_xfm=tmp_path / "xfm.txt",
    )  # fmt: skip
    expected = {n: truth_volumes[n] for n in res.labels}
    expected["ctv_plan"] = truth_volumes["ctv"]
    assert set(res.volumes_ml) == {*expected, "ptv_plan"}
    for name, volume in expected.items():
        assert res.volumes_ml[name] == pytest.approx(volume, rel=0.03), name


def test_outputs_hold_no_phi(planning, imported, tmp_path):
    dose = import_rtdose(
        planning.rtdose, rf.REFERENCE, tmp_path / "sub-01" / "sub-01_dose.nii.gz",
        transform=imported.transform, rtplan=planning.rtplan,
    )  # fmt: skip
    files = [
        imported.dseg, imported.table, imported.report, imported.transform,
        imported.transform_sidecar, imported.checkerboard, *imported.masks.values(),
        *(p.with_name(p.name.replace(".nii.gz", ".json")) for p in imported.masks.values()),
        dose.dose, dose.dose.with_name("sub-01_dose.json"),
    ]  # fmt: skip
    secrets = [*rf.FAKE_PHI.values(), "DOE", planning.ct.series_uid, planning.ct.frame_uid]
    secrets += [planning.ct.study_uid, "2024-01-17"]
    for path in files:
        raw = path.read_bytes()
        if path.name.endswith(".gz"):
            raw = gzip.decompress(raw)
        for secret in secrets:
            assert secret.encode() not in raw, (path.name, secret)


# --------------------------------------------------------------------------------------------
# same image: the structure set drawn on the MR reference itself
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mr_scenario(tmp_path_factory) -> rf.MRScenario:
    return rf.make_mr_scenario(tmp_path_factory.mktemp("rt_mr"))


def test_structures_on_the_reference_need_no_registration(mr_scenario, tmp_path):
    res = import_rtstruct(
        mr_scenario.rtstruct, mr_scenario.mr_dir, rf.REFERENCE,
        tmp_path / "sub-01_ses-pre_dseg.nii.gz",
    )  # fmt: skip
    assert res.registration is None
    assert res.transform is None
    got, table = _labels(res)
    truth, ttable = _truth_labels()
    for name, index in table.items():
        dice = _dice(got == index, truth == ttable[name])
        assert dice >= (0.85 if name.startswith("cord") else 0.95), (name, dice)


def test_name_map_changes_the_import(mr_scenario, tmp_path):
    path = tmp_path / "names.yaml"
    path.write_text("SpinalCanal: ignore\nAorta: ignore\n", encoding="utf-8")
    res = import_rtstruct(
        mr_scenario.rtstruct, mr_scenario.mr_dir, rf.REFERENCE,
        tmp_path / "a" / "sub-01_ses-pre_dseg.nii.gz", name_map=path, strict=True,
    )  # fmt: skip
    assert res.unknown == []
    assert "aorta" not in res.labels
    assert {"SpinalCanal", "Aorta"} <= set(res.ignored)
    with pytest.raises(QMRIInputError, match=r"unknown structure name.*SpinalCanal") as err:
        import_rtstruct(
            mr_scenario.rtstruct, mr_scenario.mr_dir, rf.REFERENCE,
            tmp_path / "b" / "sub-01_ses-pre_dseg.nii.gz", strict=True,
        )  # fmt: skip
    assert "\n" not in str(err.value)


def test_image_series_reader(mr_scenario):
    files = sorted(mr_scenario.mr_dir.glob("*.dcm"))
    series = read_image_series(files[::-1])
    ref = nib.load(rf.REFERENCE)
    np.testing.assert_allclose(series.affine, ref.affine, atol=1e-3)
    np.testing.assert_allclose(series.data, np.asarray(ref.dataobj, float))
    with pytest.raises(QMRIInputError, match="unevenly spaced"):
        read_image_series(files[:10] + files[11:])


# --------------------------------------------------------------------------------------------
# dose
# --------------------------------------------------------------------------------------------


def test_dose_on_the_mr_grid(planning, imported, tmp_path):
    out = tmp_path / "dose" / "sub-01" / "sub-01_dose.nii.gz"
    res = import_rtdose(
        planning.rtdose, rf.REFERENCE, out, transform=imported.transform,
        rtplan=planning.rtplan, out_native=tmp_path / "native_dose.nii.gz",
    )  # fmt: skip
    assert (res.fractions, res.prescription_gy) == (5, 35.0)
    assert res.summation == "PLAN"
    assert res.native.is_file()
    ref = nib.load(rf.REFERENCE)
    dose = read_dose(out, ref.shape, ref.affine)  # the workflow's reader accepts it
    truth, _ = _truth_labels()
    ctv = ctv_mask(truth, LEVELS, [TREATED])
    inside = dose[ctv]
    phantom = planning.dose_mr[ctv]
    assert inside.mean() == pytest.approx(phantom.mean(), rel=0.02)
    assert np.median(inside) == pytest.approx(np.median(phantom), rel=0.02)
    # beyond the CTV, against the same dose definition sampled at the MR voxel centres
    fine_affine, fine_dose = rf.fine_phantom_dose(35.0)
    expected = resample_linear(fine_dose, fine_affine, ref.shape, ref.affine)
    hot = np.isfinite(expected) & (expected > 3.5) & (dose > 0)
    assert np.median(np.abs(dose[hot] / expected[hot] - 1)) < 0.02
    side = json.loads(out.with_name("sub-01_dose.json").read_text())
    assert side["Units"] == "Gy"
    assert side["Fractions"] == 5


def test_dose_checks(planning, imported, tmp_path):
    ref = nib.load(rf.REFERENCE)
    # a dose per fraction on the MR frame: scaled by the plan's fractions
    per_fx = np.full((40, 50, 70), 7.0)
    aff = np.diag([3.0, 3.0, 3.0, 1.0])
    aff[:3, 3] = ref.affine[:3, 3] - 3.0
    kw = {"frame_uid": "1.2.3.4", "study_uid": "1.2.3"}
    fx = rf.write_rtdose(tmp_path / "fx.dcm", per_fx, aff, summation="FRACTION", **kw)
    with pytest.raises(QMRIInputError, match="needs the RTPLAN"):
        import_rtdose(fx, rf.REFERENCE, tmp_path / "d1.nii.gz")
    res = import_rtdose(fx, rf.REFERENCE, tmp_path / "d1.nii.gz", rtplan=planning.rtplan)
    dose = np.asarray(nib.load(res.dose).dataobj)
    assert res.outside_fraction == 0
    assert np.allclose(dose, 35.0, atol=1e-3)
    # a dose of another frame than the planning CT the transform was registered from
    with pytest.raises(QMRIInputError, match="another frame of reference"):
        import_rtdose(fx, rf.REFERENCE, tmp_path / "d2.nii.gz", transform=imported.transform,
                      rtplan=planning.rtplan)  # fmt: skip
    for kind, words in [("BEAM", "partial dose"), ("RELATIVE", "dose units RELATIVE")]:
        opts = {"summation": kind} if kind == "BEAM" else {"units": kind}
        path = rf.write_rtdose(tmp_path / f"{kind}.dcm", per_fx, aff, **kw, **opts)
        with pytest.raises(QMRIInputError, match=words) as err:
            import_rtdose(path, rf.REFERENCE, tmp_path / "d3.nii.gz")
        assert "\n" not in str(err.value)
        assert path.name in str(err.value)
    assert not (tmp_path / "d3.nii.gz").exists()


# --------------------------------------------------------------------------------------------
# pydicom's shipped RT files (their images are not shipped)
# --------------------------------------------------------------------------------------------


def test_pydicom_rtstruct_partial_read(tmp_path):
    path = Path(get_testdata_file("rtstruct.dcm"))
    sset = read_rtstruct(path)
    assert [s.name for s in sset.structures] == ["patient", "Isocenter 1", "Isocenter 2"]
    assert len(sset.structures[0].closed) == 3
    assert [c.geometric_type for c in sset.structures[1].contours] == ["POINT"]
    assert sset.series_uids
    assert sset.frame_uids
    empty = tmp_path / "images"
    empty.mkdir()
    shutil.copy(path, empty / "rtstruct.dcm")  # an RT object is not an image series
    with pytest.raises(QMRIInputError) as err:
        import_rtstruct(
            path, empty, rf.REFERENCE, tmp_path / "sub-x_ses-y_dseg.nii.gz",
            name_map=None, strict=False,
        )  # fmt: skip
    text = str(err.value)
    assert "\n" not in text
    assert str(path) in text
    # "patient" is an ignored outline, the isocentres are points: nothing to import
    assert "no structure with closed contours" in text
    mapped = tmp_path / "m.yaml"
    mapped.write_text("patient: aorta\n", encoding="utf-8")
    with pytest.raises(QMRIInputError, match="referenced image series is not in") as err:
        import_rtstruct(path, empty, rf.REFERENCE, tmp_path / "s_dseg.nii.gz", name_map=mapped)
    assert "\n" not in str(err.value)


def test_pydicom_rtdose_and_rtplan(tmp_path):
    dose = read_rtdose(get_testdata_file("rtdose.dcm"))
    assert dose.shape == (10, 10, 15)
    assert (dose.units, dose.summation) == ("RELATIVE", "BEAM")
    np.testing.assert_allclose(np.linalg.norm(dose.affine[:3, :3], axis=0), [10, 10, 5])
    with pytest.raises(QMRIInputError, match="dose units RELATIVE") as err:
        import_rtdose(get_testdata_file("rtdose.dcm"), rf.REFERENCE, tmp_path / "d.nii.gz")
    assert "\n" not in str(err.value)
    plan = read_rtplan(get_testdata_file("rtplan.dcm"))
    assert plan.fractions == 30
    assert plan.prescription_gy == pytest.approx(30.826203)
    assert plan.plan_date.isoformat() == "2003-09-03"
    with pytest.raises(QMRIInputError, match="not an RT Structure Set"):
        read_rtstruct(get_testdata_file("rtdose.dcm"))
    with pytest.raises(QMRIInputError, match="not an RTPLAN"):
        read_rtplan(get_testdata_file("rtdose.dcm"))
