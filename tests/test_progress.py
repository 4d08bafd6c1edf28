"""Progress reporting of chunked fits and the run summary in every command's log."""

from __future__ import annotations

import logging

import numpy as np

from qmri.cli import main
from qmri.models.relaxometry import MonoExponentialModel
from qmri.progress import chunk_progress


def test_plain_log_line_per_chunk_when_not_a_terminal(caplog):
    caplog.set_level(logging.INFO, logger="qmri")
    items = list(chunk_progress(range(3), n_chunks=3, n_voxels=30, desc="T2"))
    assert items == [0, 1, 2]
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split(" done")[0] for line in lines] == [
        "T2: chunk 1/3",
        "T2: chunk 2/3",
        "T2: chunk 3/3",
    ]


def test_single_chunk_fits_are_silent(caplog):
    caplog.set_level(logging.INFO, logger="qmri")
    te = np.array([0.01, 0.02, 0.03, 0.04])  # s
    MonoExponentialModel(te).fit(1000 * np.exp(-te / 0.08)[None, :].repeat(5, 0))
    assert not [r for r in caplog.records if "chunk" in r.getMessage()]


def test_chunked_model_fit_reports_each_chunk(caplog):
    caplog.set_level(logging.INFO, logger="qmri")
    te = np.array([0.01, 0.02, 0.03, 0.04])  # s
    data = 1000 * np.exp(-te / 0.08)[None, :].repeat(25, 0)
    MonoExponentialModel(te).fit(data, chunk_size=10)
    chunks = [r.getMessage() for r in caplog.records if "chunk" in r.getMessage()]
    assert len(chunks) == 3
    assert "chunk 3/3 done (25 voxels in all)" in chunks[-1]


def test_every_command_logs_its_parameters_time_and_peak_memory(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="qmri")
    assert main(["-v", "phantom", str(tmp_path / "ds"), "--subjects", "1", "--small"]) == 0
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "qmri -v phantom" in text
    assert "subjects=1" in text
    assert "small=True" in text
    done = [r.getMessage() for r in caplog.records if r.getMessage().startswith("done in")]
    assert len(done) == 1
    peak = float(done[0].split("peak memory ")[1].split(" MiB")[0])
    assert peak > 10  # a Python process with numpy holds tens of MiB at least
