"""Acquisition protocol of the phantom: timings, flip angles, b-values, noise, grids, contrast.

The protocol is the phantom's own: no value is taken from the qmri code the phantom validates
(in particular the contrast agent's relaxivity is written here, with its source).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qmri.phantom.tissues import HEMATOCRIT

__all__ = [
    "EXTRA_SERIES",
    "PARKER_AIF",
    "PHANTOM_PROTOCOL",
    "R1_RELAXIVITY",
    "PhantomProtocol",
]

#: Parker et al. (MRM 2006) population AIF, Table 1: whole-blood concentration in mM, t in min.
PARKER_AIF: dict[str, float] = {
    "A1_mM_min": 0.809,
    "A2_mM_min": 0.330,
    "T1_min": 0.17046,
    "T2_min": 0.365,
    "sigma1_min": 0.0563,
    "sigma2_min": 0.132,
    "alpha_mM": 1.050,
    "beta_per_min": 0.1685,
    "s_per_min": 38.078,
    "tau_min": 0.483,
}

#: Longitudinal relaxivity r1 of gadoteridol at 1.5 T (1/mM/s): 4.1 in human plasma at 37 C,
#: Rohrer M, Bauer H, Mintorovitch J, Requardt M, Weinmann H-J. Comparison of magnetic
#: properties of MRI contrast media solutions at different magnetic field strengths. Invest
#: Radiol 2005;40:715-724, Table 3 (doi:10.1097/01.rli.0000184756.66360.d3).
R1_RELAXIVITY = 4.1

#: Series :func:`~qmri.phantom.write_phantom_dataset` adds on request.
EXTRA_SERIES = ("IRT1", "MEGRE")


@dataclass(frozen=True)
class PhantomProtocol:
    """Acquisition protocol of the phantom (times in s, angles in deg, b in s/mm^2)."""

    field_strength_t: float = 1.5
    t2w_tr_s: float = 3.0
    t2w_te_s: float = 0.09
    vfa_flip_angles_deg: tuple[float, ...] = (3.0, 6.0, 10.0, 15.0, 20.0)
    vfa_tr_s: float = 0.010
    vfa_te_s: float = 0.0023
    mese_echo_times_s: tuple[float, ...] = (0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08)
    mese_tr_s: float = 2.5
    #: Optional series (``extra_series``): magnitude inversion recovery and multi-echo GRE.
    irt1_inversion_times_s: tuple[float, ...] = (0.05, 0.15, 0.35, 0.7, 1.4, 3.0)
    irt1_tr_s: float = 6.0
    megre_echo_times_s: tuple[float, ...] = (0.003, 0.006, 0.009, 0.012, 0.015, 0.018)
    megre_tr_s: float = 1.0
    dwi_bvalues: tuple[float, ...] = (50.0, 100.0, 200.0, 400.0, 600.0, 800.0)
    dwi_directions: tuple[tuple[float, float, float], ...] = (
        (1.0, 0.0, 0.0),
        (0.0, 1.0, 0.0),
        (0.0, 0.0, 1.0),
    )
    dwi_te_s: float = 0.07
    dwi_tr_s: float = 4.0
    dce_flip_angle_deg: float = 15.0
    dce_tr_s: float = 0.004
    dce_te_s: float = 0.0015
    dce_n_frames: int = 32
    dce_frame_interval_s: float = 7.0
    dce_baseline_frames: int = 5
    dce_bolus_arrival_s: float = 35.0
    contrast_agent: str = "gadoteridol"
    r1_per_mM_s: float = R1_RELAXIVITY
    hematocrit: float = HEMATOCRIT
    b1_range: tuple[float, float] = (0.86, 1.14)
    b1_noise_percent: float = 0.5
    #: Rician noise sigma of each magnitude series, in PD units.
    noise_sigma: dict[str, float] = field(
        default_factory=lambda: {
            "T2w": 0.005,
            "VFA": 0.0007,
            "MESE": 0.002,
            "IRT1": 0.003,
            "MEGRE": 0.002,
            "dwi": 0.004,
            "dce": 0.0006,
        }
    )
    #: Noise sigma in stored int16 units (sets each series' scale).
    noise_sigma_stored: float = 2.0
    #: Coarse (DWI, DCE) voxel size relative to the reference voxel size (full, small phantom);
    #: the small phantom keeps DWI and DCE on the reference grid, as its 6 x 5 mm voxels already
    #: leave the cord (10 x 8 mm) only one or two voxels wide.
    coarse_factor: float = 1.5
    coarse_factor_small: float = 1.0
    #: Reference voxel size (mm) for the full and the small phantom.
    voxel_mm: tuple[float, float, float] = (3.0, 2.5, 2.5)
    voxel_mm_small: tuple[float, float, float] = (6.0, 5.0, 5.0)

    @property
    def dwi_bvals_all(self) -> np.ndarray:
        """All b-values in volume order (b = 0 first, then each b along each direction)."""
        return np.array([0.0] + [b for b in self.dwi_bvalues for _ in self.dwi_directions])

    @property
    def dwi_bvecs_all(self) -> np.ndarray:
        """Unit gradient directions in volume order, ``(n_volumes, 3)``; zero for b = 0."""
        dirs = [(0.0, 0.0, 0.0)] + [d for _ in self.dwi_bvalues for d in self.dwi_directions]
        return np.array(dirs)

    @property
    def dce_times_s(self) -> np.ndarray:
        """Frame times (s), frame 0 at t = 0."""
        return np.arange(self.dce_n_frames) * self.dce_frame_interval_s

    def stored_scale(self, series: str) -> float:
        """Stored int16 units per PD unit of a magnitude series (its noise sigma -> 2 units)."""
        return self.noise_sigma_stored / self.noise_sigma[series]

    def as_dict(self) -> dict[str, Any]:
        """Return the protocol as plain JSON-able data."""
        out = dataclasses.asdict(self)
        out["dwi_bvals_all"] = self.dwi_bvals_all.tolist()
        out["dce_times_s"] = self.dce_times_s.tolist()
        return out


#: The protocol the generator uses.
PHANTOM_PROTOCOL = PhantomProtocol()
