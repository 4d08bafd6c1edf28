"""Inversion-recovery T1 (IRT1) and T2* (MEGRE): phantom series, fits, planning and bad input.

The phantom adds both series on request (``extra_series``); the sample in ``data_sample/`` has
neither, so these tests make a small phantom with them.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from qmri.config import schema_defaults
from qmri.errors import QMRIInputError
from qmri.maps import write_fit
from qmri.phantom import TISSUE_INDEX, write_phantom_dataset
from qmri.registry import FITS
from qmri.steps.fit import fit_request
from qmri.study import Study

#: ROI medians vs truth, relative (measured on this phantom: IR T1 within 0.6 %, T2* within
#: 0.7 %; through the whole workflow on a 1-subject phantom: tumour T1IR 1.198 s vs 1.2 s,
#: marrow T2* 13.83 ms vs 13.79 ms).
RTOL = 0.02


@pytest.fixture(scope="module")
def bids(tmp_path_factory) -> Path:
    return write_phantom_dataset(
        tmp_path_factory.mktemp("ph") / "bids", n_subjects=1, sessions=("pre", "fu1"),
        small=True, extra_series=("IRT1", "MEGRE"),
    )  # fmt: skip


def _truth(bids: Path, ses: str, suffix: str) -> tuple[np.ndarray, np.ndarray]:
    anat = bids / "derivatives" / "truth" / "sub-01" / f"ses-{ses}" / "anat"
    truth = np.asarray(nib.load(anat / f"sub-01_ses-{ses}_desc-truth_{suffix}.nii.gz").dataobj)
    tissue = np.asarray(nib.load(anat / f"sub-01_ses-{ses}_desc-tissue_dseg.nii.gz").dataobj)
    return truth, tissue


def _fit(name: str, files: list[Path], prefix: Path) -> None:
    """The registry's estimator of ``name`` on a series as acquired (no motion correction)."""
    spec = FITS[name]
    series = spec.series.load(files)
    request = fit_request(
        series=series, data=series.data, options=spec.options(schema_defaults()), b1=None,
        inputs={}, series_xfm=prefix.with_name("unused_xfm.txt"),
    )  # fmt: skip
    outcome = spec.estimate(request)
    for fit in outcome.fits:
        write_fit(fit, series.affine, prefix, sources=outcome.sources,
                  acquisition=outcome.acquisition, bids_suffixes=True)  # fmt: skip


@pytest.mark.parametrize("ses", ["pre", "fu1"])
def test_ir_t1_and_t2star_recover_the_phantom_truth(bids, tmp_path, ses):
    anat = bids / "sub-01" / f"ses-{ses}" / "anat"
    irt1 = sorted(anat.glob("*_IRT1.nii.gz"), key=lambda p: int(p.name.split("inv-")[1][0]))
    megre = sorted(anat.glob("*_MEGRE.nii.gz"), key=lambda p: int(p.name.split("echo-")[1][0]))
    assert (len(irt1), len(megre)) == (6, 6)
    _fit("irt1", irt1, tmp_path / "ir")
    _fit("megre", megre, tmp_path / "gre")
    t1 = np.asarray(nib.load(tmp_path / "ir_T1map.nii.gz").dataobj)
    t2s = np.asarray(nib.load(tmp_path / "gre_T2starmap.nii.gz").dataobj)
    true_t1, tissue = _truth(bids, ses, "T1map")
    true_t2s, _ = _truth(bids, ses, "T2starmap")
    for name in ("tumor", "marrow", "marrow_treated", "muscle"):
        roi = tissue == TISSUE_INDEX[name]
        if roi.sum() < 5:
            continue
        for est, ref in ((t1, true_t1), (t2s, true_t2s)):
            med = float(np.nanmedian(est[roi]))
            assert med == pytest.approx(float(np.median(ref[roi])), rel=RTOL), name
    side = json.loads((tmp_path / "ir_T1map.json").read_text())
    assert side["Units"] == "s"
    assert len(side["InversionTime"]) == 6
    assert side["RepetitionTime"] == 6.0
    assert json.loads((tmp_path / "gre_T2starmap.json").read_text())["Units"] == "s"


def test_workflow_plans_ir_and_t2star_fits(bids, tmp_path):
    from test_workflow import run_workflow

    res = run_workflow(bids, tmp_path / "out", "--dry-run")
    planned = re.findall(r"^(?:local)?rule (\w+):", res.stdout, flags=re.MULTILINE)
    assert planned.count("fit_irt1") == 2
    assert planned.count("fit_megre") == 2
    study = Study(bids, bids / "derivatives" / "labels", reference_suffix="T2w")
    assert study.fits("01", "pre") == ["vfa", "irt1", "mese", "megre", "adc", "ivim", "dce"]


def _copy(bids: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(bids, tmp_path / "bids"))


def test_too_few_inversion_times_stop_planning(bids, tmp_path):
    copy = _copy(bids, tmp_path)
    for path in (copy / "sub-01" / "ses-fu1" / "anat").glob("*_inv-[4-6]_IRT1.*"):
        path.unlink()
    with pytest.raises(QMRIInputError, match=r"inv-1_IRT1\.nii\.gz: inversion-recovery T1 "
                       "needs at least 4 inversion times, found 3"):  # fmt: skip
        Study(copy, copy / "derivatives" / "labels", reference_suffix="T2w")


def test_missing_inversion_time_names_the_sidecar(bids, tmp_path):
    copy = _copy(bids, tmp_path)
    side = copy / "sub-01" / "ses-pre" / "anat" / "sub-01_ses-pre_inv-3_IRT1.json"
    meta = json.loads(side.read_text())
    del meta["InversionTime"]
    side.write_text(json.dumps(meta))
    with pytest.raises(QMRIInputError, match=r"inv-3_IRT1\.json: sidecar lacks required field "
                       "'InversionTime'"):  # fmt: skip
        Study(copy, copy / "derivatives" / "labels", reference_suffix="T2w")


def test_unknown_extra_series_is_refused(tmp_path):
    with pytest.raises(QMRIInputError, match="unknown extra series"):
        write_phantom_dataset(tmp_path, n_subjects=1, small=True, extra_series=("T1rho",))
