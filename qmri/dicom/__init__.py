"""DICOM import: scanner MR series and planning-system RT objects to the data contract's inputs.

MR series (``qmri import dicom``):

====================  ==================================================================
module                what it does
====================  ==================================================================
``headers``           scan a DICOM tree, group files by series, per-frame attributes
                      (classic and enhanced multi-frame MR)
``classify``          series kind from the headers (VFA, IRT1, MESE, MEGRE, dwi, dce,
                      T2w; TB1map by mapping) and the site mapping file
``convert``           import one session or a tree: classification, staging, checks
                      with qmri's loaders, ``sessions.tsv`` / ``participants.tsv``
``kinds``             one series kind -> its BIDS files and sidecars (dcm2niix per
                      parameter group, VolumeTiming, b-values, contrast fields)
``nifti``             dcm2niix runs, canonical (RAS+) voxel order, clean NIfTI headers
``phi``               allow-list + deny-list sidecar scrubbing (no PHI in any output)
``dataset``           dataset-level files (description, .bidsignore, TSV rows)
====================  ==================================================================

Planning-system objects (RTSTRUCT, RTDOSE, planning CT: ``rtstruct``, ``rtdose``,
``planning_ct``, ``structures``) live beside them.

A whole study folder (MR sessions, RTSTRUCT, RTDOSE, clinical table): ``study``
(:func:`import_dicom_study`). The entry points (:data:`__all__`) are importable from this
package (``from qmri.dicom import import_dicom_study``); their modules are imported on first
use, so ``import qmri.dicom`` stays light (no pydicom, no SimpleITK).
"""

from __future__ import annotations

import importlib
from typing import Any

#: Public entry points and their modules (imported on first use).
_ENTRY_POINTS = {
    "import_dicom_session": "qmri.dicom.convert",
    "import_dicom_tree": "qmri.dicom.convert",
    "import_dicom_study": "qmri.dicom.study",
    "import_rtstruct": "qmri.dicom.rtstruct",
    "import_rtdose": "qmri.dicom.rtdose",
    "read_rtstruct": "qmri.dicom.contours",
    "read_rtdose": "qmri.dicom.rtdose",
    "read_rtplan": "qmri.dicom.rtdose",
}

__all__ = [  # noqa: RUF022 (the order of _ENTRY_POINTS)
    "import_dicom_session",
    "import_dicom_tree",
    "import_dicom_study",
    "import_rtstruct",
    "import_rtdose",
    "read_rtstruct",
    "read_rtdose",
    "read_rtplan",
]


def __getattr__(name: str) -> Any:
    if name in _ENTRY_POINTS:
        return getattr(importlib.import_module(_ENTRY_POINTS[name]), name)
    raise AttributeError(f"module 'qmri.dicom' has no attribute {name!r}")
