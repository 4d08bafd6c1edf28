"""qmri: quantitative MRI for spinal metastases treated with stereotactic body radiation therapy.

The package holds pure, vectorized functions on arrays (models, ROI derivation, statistics)
and thin I/O around them (BIDS discovery, NIfTI reading and atomic writing, registration).
The Snakemake workflow in ``workflow/`` calls the ``qmri`` command line.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("qmri-spine")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
