"""Every file name of the output (a BIDS derivative dataset), in one place.

The workflow's rules and input functions and the Python steps build their paths here and
nowhere else, so a name changes in one line and stays valid BIDS (derivative entity order,
``desc`` last; files outside the BIDS schema are listed in the output's ``.bidsignore``,
:func:`bidsignore`). Called with concrete labels a method returns a path; called with
``"{subject}"`` and ``"{session}"`` it returns the Snakemake pattern of the same file.

========================================================  ===========================================
``sub-S/ses-T/<datatype>/sub-S_ses-T_desc-<fit>_<suffix>``  a fitted map (:meth:`DerivativeLayout.fit_map`)
``sub-S/ses-T/xfm/..._from-<series>_to-ref_mode-image``     series -> session reference (ITK, + JSON)
``sub-S/ses-T/xfm/..._from-ref_to-baseline_mode-image``     session reference -> baseline (ITK, + JSON)
``sub-S/ses-T/xfm/..._desc-moco<series>_{xfm.txt,motion.tsv}``  motion correction within a series
``sub-S/ses-T/space-baseline/``                               maps on the baseline grid, PRM label maps
``sub-S/ses-T/sub-S_ses-T_{roistats,prm}.csv``                 per-session tables
``sub-S/rois/sub-S_space-baseline_desc-rois_mask``             derived ROIs (4D, names in the .tsv)
``sub-S/qc/``, ``sub-S/qc/ses-T/``                            registration checkerboards, session QC
``sub-S/sub-S_<table>.csv``, ``cohort/<table>.csv``            subject and cohort tables
``logs/<rule>/...log``                                        one log per job
========================================================  ===========================================
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "BIDS_MAP_SUFFIX",
    "BIDS_VALID_SUFFIXES",
    "DerivativeLayout",
    "bidsignore",
    "map_suffix",
]

#: BIDS suffix of a parameter map where BIDS defines one (data contract section 3); every other
#: map is written under its parameter name (``Ktrans``, ``D``, ``R2``, ...).
BIDS_MAP_SUFFIX: dict[str, str] = {
    "T1": "T1map",
    "T2": "T2map",
    "T2star": "T2starmap",
    "M0": "M0map",
    "S0": "S0map",
}

#: Map suffixes the BIDS derivative schema knows in the datatype folders qmri writes
#: (``anat``: parametric maps; ``dwi``: scanner-style diffusion derivatives). Everything else
#: (``Ktrans``, ``D``, ``R2``, ``fitmask``, ...) goes into ``.bidsignore``.
BIDS_VALID_SUFFIXES: frozenset[str] = frozenset(
    {"T1map", "T2map", "T2starmap", "M0map", "S0map", "R1map", "R2map", "PDmap", "ADC", "FA"}
)

#: Folders and files of the output that are not BIDS data (``.bidsignore`` patterns in the
#: form the official validator matches: a folder without its trailing slash).
_NON_BIDS: tuple[str, ...] = (
    "**/xfm",
    "**/qc",
    "**/space-baseline",
    "**/rois",
    "cohort",
    "logs",
    "*.csv",
    "*.html",
)


def map_suffix(param: str, *, bids_suffixes: bool = True) -> str:
    """File suffix of a parameter map: its BIDS suffix (``T1`` -> ``T1map``) or its name."""
    return BIDS_MAP_SUFFIX.get(param, param) if bids_suffixes else param


def bidsignore(map_suffixes: Iterable[str]) -> list[str]:
    """The output's ``.bidsignore``: non-BIDS folders, tables and every non-standard map.

    Parameters
    ----------
    map_suffixes : iterable of str
        File suffixes of every map the fits write (from :mod:`qmri.registry`).
    """
    extra = sorted({s for s in map_suffixes if s not in BIDS_VALID_SUFFIXES})
    return [*_NON_BIDS, *(f"*_{suffix}.*" for suffix in extra)]


@dataclass(frozen=True)
class DerivativeLayout:
    """File names under one output folder (``root``; may be relative to the working directory).

    Every method takes labels without their ``sub-``/``ses-`` prefixes. Pass ``"{subject}"``,
    ``"{session}"`` (and ``"{series}"`` ...) to get a Snakemake wildcard pattern.
    """

    root: str

    # -- helpers -------------------------------------------------------------------------------
    def _session_dir(self, subject: str, session: str) -> str:
        return f"{self.root}/sub-{subject}/ses-{session}"

    @staticmethod
    def stem(subject: str, session: str) -> str:
        """``sub-S_ses-T``: the entity prefix of every file of a session."""
        return f"sub-{subject}_ses-{session}"

    # -- fitted maps ---------------------------------------------------------------------------
    def fit_prefix(self, subject: str, session: str, datatype: str, fit: str) -> str:
        """``.../<datatype>/sub-S_ses-T_desc-<fit>``: the maps of a fit are ``PREFIX_<suffix>``."""
        stem = self.stem(subject, session)
        return f"{self._session_dir(subject, session)}/{datatype}/{stem}_desc-{fit}"

    def fit_map(self, subject: str, session: str, datatype: str, fit: str, suffix: str) -> str:
        """One map of a fit (``suffix``: ``T1map``, ``R2``, ``fitmask``, ...)."""
        return f"{self.fit_prefix(subject, session, datatype, fit)}_{suffix}.nii.gz"

    # -- transforms ----------------------------------------------------------------------------
    def _xfm_dir(self, subject: str, session: str) -> str:
        return f"{self._session_dir(subject, session)}/xfm"

    def series_xfm(self, subject: str, session: str, series: str, ext: str = "txt") -> str:
        """Series -> session reference transform (ITK text; ``ext="json"``: its sidecar)."""
        stem = self.stem(subject, session)
        return (
            f"{self._xfm_dir(subject, session)}/{stem}_from-{series}_to-ref_mode-image_xfm.{ext}"
        )

    def session_xfm(self, subject: str, session: str, ext: str = "txt") -> str:
        """Session reference -> baseline reference transform (``ext="json"``: its sidecar)."""
        stem = self.stem(subject, session)
        return (
            f"{self._xfm_dir(subject, session)}/{stem}_from-ref_to-baseline_mode-image_xfm.{ext}"
        )

    def moco_xfm(self, subject: str, session: str, series: str) -> str:
        """Motion correction within a series: one rigid transform per volume (ITK text)."""
        stem = self.stem(subject, session)
        return f"{self._xfm_dir(subject, session)}/{stem}_desc-moco{series}_xfm.txt"

    def moco_trace(self, subject: str, session: str, series: str) -> str:
        """Displacement trace of the motion correction (TSV, mm and deg)."""
        stem = self.stem(subject, session)
        return f"{self._xfm_dir(subject, session)}/{stem}_desc-moco{series}_motion.tsv"

    # -- ROIs, longitudinal, tables ------------------------------------------------------------
    def rois_mask(self, subject: str) -> str:
        """The derived ROIs on the baseline grid (4D; names in the ``.tsv`` beside it)."""
        return f"{self.root}/sub-{subject}/rois/sub-{subject}_space-baseline_desc-rois_mask.nii.gz"

    def baseline_space_dir(self, subject: str, session: str) -> str:
        """Every map of a session on the baseline grid, and the parametric response maps."""
        return f"{self._session_dir(subject, session)}/space-baseline"

    def session_table(self, subject: str, session: str, kind: str) -> str:
        """Per-session table: ``roistats`` or ``prm``."""
        stem = self.stem(subject, session)
        return f"{self._session_dir(subject, session)}/{stem}_{kind}.csv"

    def subject_table(self, subject: str, kind: str) -> str:
        """Per-subject table: ``roistats``, ``response``, ``prm``, ``registration``, ..."""
        return f"{self.root}/sub-{subject}/sub-{subject}_{kind}.csv"

    def cohort(self, name: str) -> str:
        """A file of the cohort folder (``roistats.csv``, ``trajectories_tumor.png``, ...)."""
        return f"{self.root}/cohort/{name}"

    # -- QC ------------------------------------------------------------------------------------
    def checkerboard(self, subject: str, session: str, moving: str, fixed: str) -> str:
        """Checkerboard PNG of a registration (``moving`` -> ``fixed``: ``dce``/``ref``, ...)."""
        stem = self.stem(subject, session)
        return f"{self.root}/sub-{subject}/qc/{stem}_from-{moving}_to-{fixed}_checkerboard.png"

    def qc_session_dir(self, subject: str, session: str) -> str:
        """Folder of a session's QC figures (montages, curves, motion)."""
        return f"{self.root}/sub-{subject}/qc/ses-{session}"

    # -- dataset level ---------------------------------------------------------------------------
    def dataset_description(self) -> str:
        return f"{self.root}/dataset_description.json"

    def log(self, rule: str, name: str) -> str:
        """Log of one job: ``logs/<rule>/<name>.log``."""
        return f"{self.root}/logs/{rule}/{name}.log"
