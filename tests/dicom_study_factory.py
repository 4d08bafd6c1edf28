"""A DICOM study folder made from the phantom (layout of :mod:`qmri.dicom.study`)."""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Iterable
from pathlib import Path

import dicom_factory as dfac
import rt_factory as rf

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data_sample"
#: RTPlanDate of the factory's plan (tests/rt_factory.py FAKE_PHI StudyDate).
PLAN_DATE = dt.date(2024, 1, 17)
B1_MAPPING = "- series_description: b1map_afi\n  kind: TB1map\n"


def write_dicom_study(
    root: Path,
    sessions: Iterable[tuple[str, int]] = (("pre", -11),),
    *,
    clinical: str | None = None,
    mr_only: Iterable[tuple[str, str, int]] = (),
) -> Path:
    """Phantom sub-01 as a DICOM folder: MR sessions (label, days from SBRT) and rt/ (CT,
    RTSTRUCT, RTDOSE, RTPLAN); ``mr_only`` adds (subject, session, days) without RT objects."""
    dicom = root / "dicom"
    for subject, session, days in [*(("01", s, d) for s, d in sessions), *mr_only]:
        dfac.write_dicom_session(
            SAMPLE / f"sub-{subject}" / f"ses-{session}", dicom / f"sub-{subject}" / session,
            study_date=PLAN_DATE + dt.timedelta(days=days),
        )  # fmt: skip
    plan = rf.make_planning_scenario(root / "planning")
    rt = dicom / "sub-01" / "rt"
    shutil.copytree(plan.ct_dir, rt / "ct")
    for f in (plan.rtstruct, plan.rtdose, plan.rtplan):
        shutil.copy(f, rt / f.name)
    (dicom / "series_mapping.yaml").write_text(B1_MAPPING)
    if clinical is not None:
        (dicom / "participants.tsv").write_text(clinical)
    return dicom
