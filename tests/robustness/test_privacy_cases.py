"""Robustness catalogue, privacy group (issue 14; outcomes listed in docs/robustness.md).

Realistic protected health information (PHI: patient, dates, institution, staff, scanner
identifiers, DICOM UIDs) is written into every input sidecar of a one-subject, one-session
subset of the sample (every series; its images are symbolic links into ``data_sample/``, so the
run also reads linked inputs). The workflow runs with the default config, then
``snakemake --report`` writes the HTML report; every file of the output and the report is
searched for every PHI string (and its parts) with ``tests/phi_scan.py`` (the scan of the
DICOM round trip): text files as text, NIfTI headers (``descrip``, ``aux_file``,
``intent_name``, ``db_name``, extensions and every byte before the voxel data), PNG text chunks
(``tEXt``, ``zTXt``, ``iTXt``, ``eXIf``), the HTML report without its base64 images but with
their PNG chunks; a file of any other kind fails the scan until it gets a rule. None is
found: the derived sidecars take acquisition fields from an allow-list
(:func:`qmri.maps.write_fit` gets only the parameters the model used, from
:mod:`qmri.recipes`; ``qmri.steps.longitudinal`` copies those sidecars), and no writer copies a
NIfTI header or a sidecar whole.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from phi_scan import find_phi_in

from .subsets import ALL_SERIES, run, sample_subset, workflow_command

#: PHI as a DICOM-to-BIDS converter (dcm2niix with anonymisation off) writes it.
PHI = {
    "PatientName": "Doe^Jane^Quinn",
    "PatientID": "MRN-4471-0932",
    "PatientBirthDate": "19570314",
    "PatientSex": "F",
    "PatientAge": "067Y",
    "PatientWeight": 71.3,
    "PatientAddress": "42 Wallaby Way, Sydney",
    "AcquisitionDateTime": "2025-03-14T08:31:27.115000",
    "AcquisitionDate": "20250314",
    "AcquisitionTime": "08:31:27.115000",
    "StudyDate": "20250314",
    "InstitutionName": "St. Elsewhere General Hospital",
    "InstitutionAddress": "1600 Elm Street, Springfield, 01234",
    "InstitutionalDepartmentName": "Radiation Oncology MRI",
    "ReferringPhysicianName": "House^Gregory",
    "PerformingPhysicianName": "Cuddy^Lisa",
    "OperatorsName": "Tech^Annabel",
    "StationName": "SEGH-MR3-AWP45012",
    "DeviceSerialNumber": "45012987",
    "AccessionNumber": "ACC20250314001",
    "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.10442113867543215786",
    "SeriesInstanceUID": "1.2.826.0.1.3680043.8.498.29987501234576104422",
    "StudyID": "SBRT-STUDY-7731",
    "StudyDescription": "SPINE^SBRT FOLLOWUP DOE",
}

#: What is searched for: every PHI string, the parts of person names, dates as they are often
#: reformatted. Short or common values ("F", "067Y", 71.3) are in the sidecars for realism but
#: not searched for (they would match ordinary output text or numbers), nor is a time of day
#: alone (the logs hold clock times).
NEEDLES = sorted(
    {v for v in PHI.values() if isinstance(v, str) and len(v) >= 8}
    | {"Doe^Jane", "Jane Doe", "Quinn", "Gregory", "Cuddy", "Annabel", "Wallaby"}
    | {"Elsewhere General"}  # not "Elsewhere" alone: the report's JavaScript says "elsewhere"
    | {"1957-03-14", "14.03.1957", "2025-03-14", "Springfield"}
)


def add_phi(bids: Path) -> list[Path]:
    """Write :data:`PHI` into every JSON sidecar of the subject's sessions; return them."""
    sidecars = sorted((bids / "sub-01").rglob("*.json"))
    for path in sidecars:
        meta = json.loads(path.read_text())
        meta.update(PHI)
        path.write_text(json.dumps(meta, indent=2))
    return sidecars


def phi_found(files: list[Path]) -> list[str]:
    """``file: needle`` for every PHI string found in ``files`` (case-insensitive), searched
    where text can hide (:func:`phi_scan.searchable_text`)."""
    return sorted(set(find_phi_in(files, NEEDLES, ignore_case=True)))


def test_the_search_finds_phi_wherever_it_is_written(tmp_path):
    """The search is not blind: PHI put in a sidecar, a CSV, a NIfTI ``descrip``, a NIfTI
    extension, a PNG ``tEXt``, ``zTXt``, ``iTXt`` and compressed ``iTXt`` chunk and a gzip
    file is found in each."""
    from PIL import Image, PngImagePlugin

    (tmp_path / "a.json").write_text(json.dumps({"InstitutionName": PHI["InstitutionName"]}))
    (tmp_path / "b.csv").write_text(f"subject,name\n01,{PHI['PatientName']}\n")
    img = nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4))
    img.header["descrip"] = PHI["PatientID"].encode()
    nib.save(img, tmp_path / "c.nii.gz")
    img = nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4))
    img.header.extensions.append(nib.nifti1.Nifti1Extension(6, PHI["StationName"].encode()))
    nib.save(img, tmp_path / "d.nii")
    chunks = {"e": ("tEXt", "Jane Doe", False), "f": ("zTXt", "Jane Doe", True),
              "g": ("iTXt", "Jane Doe 日", False), "h": ("iTXt", "Jane Doe 日", True)}  # fmt: skip
    for name, (kind, text, zipped) in chunks.items():
        info = PngImagePlugin.PngInfo()
        info.add_text("Author", text, zip=zipped)
        Image.new("RGB", (2, 2)).save(tmp_path / f"{name}.png", pnginfo=info)
        assert kind.encode() in (tmp_path / f"{name}.png").read_bytes()
    (tmp_path / "i.tsv.gz").write_bytes(gzip.compress(PHI["AccessionNumber"].encode()))
    files = sorted(tmp_path.iterdir())
    hits = phi_found(files)
    assert {h.rsplit(": ", 1)[0] for h in hits} == {str(p) for p in files}
    assert f"{tmp_path / 'g.png'}: Jane Doe" in hits
    assert f"{tmp_path / 'd.nii'}: {PHI['StationName']}" in hits


@pytest.mark.slow
def test_no_phi_of_the_sidecars_reaches_any_output(tmp_path):
    bids = sample_subset(tmp_path / "bids", sessions=("pre",), series=ALL_SERIES, link=True)
    sidecars = add_phi(bids)
    assert len(sidecars) == 1 + 5 + 8 + 1 + 1 + 1  # T2w, VFA, MESE, TB1map, dwi, dce
    planted = [n for n in NEEDLES if n.lower() in json.dumps(PHI).lower()]  # not reformatted
    assert len(phi_found(sidecars)) == len(sidecars) * len(planted)  # all there, all found
    out = tmp_path / "out"
    cmd = workflow_command(bids, out)
    res = run(cmd, tmp_path / "wd")
    assert res.returncode == 0, res.stderr[-3000:]
    report = tmp_path / "report.html"
    res = run([*cmd, "--report", str(report)], tmp_path / "wd")
    assert res.returncode == 0, res.stderr[-3000:]
    files = sorted(p for p in out.rglob("*") if p.is_file())
    kinds = {p.name.split(".", 1)[-1] for p in files}
    assert {"csv", "json", "tsv", "nii.gz", "png", "html", "log", "txt"} <= kinds, kinds
    assert len(files) > 100
    assert phi_found([*files, report]) == []
