"""The software record written into every sidecar and the output's dataset description."""

from __future__ import annotations

import platform
from typing import Any

import nibabel as nib
import numpy as np
import scipy
import SimpleITK

import qmri

__all__ = ["software"]


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
