"""The committed sample (data_sample/): valid BIDS, small, and exactly what the phantom makes."""

from __future__ import annotations

import filecmp
from pathlib import Path

import pytest
from test_phantom import validate_bids

from qmri.phantom import write_phantom_dataset

SAMPLE = Path(__file__).resolve().parents[1] / "data_sample"


def test_sample_passes_the_bids_validator():
    report = validate_bids(SAMPLE)
    errors = [i for i in report["issues"]["issues"] if i["severity"] == "error"]
    assert errors == []
    assert sorted(report["summary"]["subjects"]) == ["01", "02"]
    assert sorted(report["summary"]["sessions"]) == ["fu1", "fu2", "pre"]


def test_sample_is_at_most_25_mb():
    size = sum(p.stat().st_size for p in SAMPLE.rglob("*") if p.is_file())
    assert size <= 25 * 2**20, f"data_sample is {size / 2**20:.1f} MiB"


@pytest.mark.slow
def test_sample_is_reproduced_by_the_phantom(tmp_path):
    """`make sample` (qmri phantom, seed 0) regenerates data_sample/ byte for byte."""
    fresh = write_phantom_dataset(tmp_path / "s", n_subjects=2, sessions=("pre", "fu1", "fu2"))
    ours = sorted(p.relative_to(SAMPLE) for p in SAMPLE.rglob("*") if p.is_file())
    theirs = sorted(p.relative_to(fresh) for p in fresh.rglob("*") if p.is_file())
    assert ours == theirs
    _, mismatch, errors = filecmp.cmpfiles(SAMPLE, fresh, [str(p) for p in ours], shallow=False)
    assert mismatch == []
    assert errors == []
