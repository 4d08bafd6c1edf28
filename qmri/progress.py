"""Progress of long fits: a tqdm bar on a terminal, a plain log line per chunk otherwise.

Fits run chunk by chunk (:func:`qmri.fitting.chunked`); :func:`chunk_progress` wraps that
iteration. On an interactive terminal (stderr is a TTY) it shows a tqdm progress bar; in a
Snakemake log (stderr redirected to a file) it writes one ``INFO`` line per chunk with the
voxels done and the elapsed time, so a slow or stuck job can be read off its log.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

__all__ = ["chunk_progress"]

log = logging.getLogger("qmri")
T = TypeVar("T")


def chunk_progress(
    chunks: Iterable[T], *, n_chunks: int, n_voxels: int, desc: str = "fit"
) -> Iterator[T]:
    """Yield ``chunks`` unchanged while reporting progress.

    Parameters
    ----------
    chunks : iterable
        The chunk slices (or anything) to iterate over.
    n_chunks : int
        Number of chunks; nothing is reported for a fit that runs in one chunk.
    n_voxels : int
        Voxels in all chunks (for the log lines).
    desc : str, default "fit"
        What is running (e.g. the model name).
    """
    if n_chunks <= 1:
        yield from chunks
        return
    if sys.stderr.isatty():
        from tqdm import tqdm

        yield from tqdm(chunks, total=n_chunks, desc=desc, unit="chunk", leave=False)
        return
    start = time.perf_counter()
    for i, item in enumerate(chunks, start=1):
        yield item
        log.info(
            "%s: chunk %d/%d done (%d voxels in all), %.1f s elapsed",
            desc,
            i,
            n_chunks,
            n_voxels,
            time.perf_counter() - start,
        )
