"""Provenance: the software record written into every sidecar and the output's dataset
description, and the checksums that name the source files of an import."""

from __future__ import annotations

import hashlib
import platform
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import scipy
import SimpleITK

import qmri

__all__ = ["file_sha256", "software"]


def software() -> dict[str, Any]:
    """``SoftwareName``, ``SoftwareVersion``, the BIDS string ``SoftwareVersions`` (qmri's
    version) and ``SoftwareDependencies``: the versions of the libraries behind the numbers."""
    return {
        "SoftwareName": "qmri",
        "SoftwareVersion": qmri.__version__,
        "SoftwareVersions": f"qmri {qmri.__version__}",
        "SoftwareDependencies": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "nibabel": nib.__version__,
            "SimpleITK": SimpleITK.Version.VersionString(),
        },
    }


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes (hex), read in 1 MiB blocks: the name of a source file
    (an RTSTRUCT, an RTDOSE) in a sidecar that must not carry its path or its identifiers."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
