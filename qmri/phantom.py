"""Digital reference object (phantom) of the thoraco-lumbar spine, written as a BIDS dataset.

:func:`write_phantom_dataset` writes a deterministic (for a given seed) raw BIDS dataset in the
layout of the data contract (section 1), the ROI labels as a BIDS derivative (section 2) and the
ground truth beside them (``derivatives/truth``). Every model, registration step and table of
qmri is validated against it.

Anatomy
-------
Continuous geometry in world millimetres (RAS+: +x right, +y anterior, +z superior), evaluated
at voxel centres (no partial-volume blurring, so truth maps are exactly piecewise constant).
In the *anatomy frame* the centre of the treated vertebral body is the origin; the anatomy frame
is placed in the scanner (world) frame by a per-subject translation (``centre_mm`` of the motion
files). Dimensions (:data:`GEOMETRY`):

- vertebral levels stacked along z, superior to inferior, with a pitch of 28 mm: body 22 mm tall
  plus a 6 mm intervertebral disc. A level's z-range runs from mid-disc above to mid-disc below.
  The partial vertebrae beyond the labelled levels are marrow in the tissue map but unlabelled.
- vertebral body: elliptic cylinder, semi-axes 20 mm (left-right) x 15 mm (antero-posterior),
  centred on (x, y) = (0, 0); the disc has the same cross-section.
- spinal canal: cylinder of radius 9 mm centred at y = -24.5 mm (touching the back of the
  body), running the whole FOV; it holds the spinal cord (elliptic, semi-axes 5 x 4 mm) in CSF.
- pedicles + laminae: laminae as a ring of outer radius 15 mm around the canal, pedicles as
  bars 6 <= |x| <= 13 mm from the canal's centre line (y = -24.5 mm) forward to the body; all
  outside the body, within the body's z-range, and never between the canal and the body
  (|x| < 6 mm, y > -24.5 mm); split by the sign of x into left (x < 0, ``pel``) and right
  (``per``).
- spinous process: a plate |x| <= 3 mm from the ring (y = -39.5 mm) to y = -60 mm, within the
  central 18 mm of the body's z-range (``pe``).
- paraspinal muscles: elliptic cylinders at (x, y) = (+-18, -47) mm, semi-axes 13 x 12 mm.
- aorta: cylinder of radius 10 mm at (x, y) = (-14, 24) mm (anterior-left of the bodies).
- body outline: elliptic cylinder at (0, -14) mm, semi-axes 40 x 54 mm, filled with fat;
  air (zero signal) outside.
- tumour (GTV): sphere of radius 8 mm centred at (-9, -12, 0) mm in the treated vertebral body,
  posterolateral left so that it enters the left pedicle; it is intraosseous (clipped to the
  bone of the treated level) and overrides the ``vb``/``pel`` voxels it covers.

Subject ``i`` (0-based) uses the level set ``LEVEL_SETS[i % 4]``; the treated level is the
middle one (T11 for sub-01, T12 for sub-02, L1 for sub-03, T10 for sub-04).

Tissue parameters at 1.5 T (baseline, :data:`TISSUES`)
------------------------------------------------------
================ ===== ===== ===== ========== ===== ========== ======== ===== ===== =====
tissue           PD    T1/s  T2/s  D/mm^2/s   f     D*/mm^2/s  Ktrans   ve    vp    FF
================ ===== ===== ===== ========== ===== ========== ======== ===== ===== =====
marrow           0.90  0.60  0.080 0.40e-3    0.06  25e-3      0.06     0.15  0.03  0.50
marrow_treated   0.90  0.60  0.080 0.40e-3    0.06  25e-3      0.06     0.15  0.03  0.50
tumor            0.90  1.20  0.090 0.90e-3    0.10  20e-3      0.25     0.30  0.08  0.05
disc             0.85  1.10  0.110 1.50e-3    0.00  0          0.003    0.25  0.00  0.00
cord             0.75  0.85  0.075 1.00e-3    0.03  15e-3      0.002    0.05  0.025 0.00
csf              1.00  4.00  1.500 3.00e-3    0.00  0          0        0     0     0.00
muscle           0.70  1.00  0.035 1.50e-3    0.08  25e-3      0.04     0.12  0.02  0.05
fat              1.00  0.26  0.100 0.02e-3    0.00  0          0.01     0.10  0.01  0.97
blood            0.90  1.44  0.250 1.80e-3    0.00  0          0        0     0.58  0.00
================ ===== ===== ===== ========== ===== ========== ======== ===== ===== =====

Units: PD relative (fat = 1), T1/T2 in s, D and D* in mm^2/s, Ktrans in 1/min, f, ve, vp and the
fat fraction FF as fractions 0..1. Air is 0 everywhere (also in the truth maps). Sources, loosely:
fatty adult marrow T1 ~0.55-0.65 s, T2 ~0.08 s, fat-suppressed ADC ~0.2-0.6e-3 mm^2/s, FF ~0.5;
lytic metastasis T1 ~1.1-1.3 s, ADC ~0.8-1.1e-3 mm^2/s, IVIM f ~0.1, Ktrans ~0.1-0.3 /min
(Khadem et al. 2012; Chu et al. 2013); cord T1 ~0.85 s, T2 ~0.075 s, MD ~1e-3 mm^2/s; muscle
T1 ~1.0 s, T2 ~0.035 s, ADC ~1.5e-3 mm^2/s; CSF T1 ~4 s, T2 ~1.5 s, D = free water at 37 C;
nucleus pulposus T1 ~1.1 s, T2 ~0.11 s, ADC ~1.5e-3 mm^2/s, avascular; subcutaneous fat T1
~0.26 s; arterial blood T1 ~1.44 s, T2 ~0.25 s, Hct 0.42. The aorta's ``vp`` is ``1 - Hct``
so that the extended-Tofts expression gives exactly the blood concentration ``Cb``.
``marrow_treated`` is the marrow of the treated vertebral body outside the tumour.

ADC truth is D: the perfusion compartment has decayed below 0.5 % of the signal at b = 200
s/mm^2 for every tissue, so a mono-exponential fit on b >= 200 s/mm^2 of the noiseless signal
recovers D within 0.5 % (tumour, the worst case, +0.4 %; marrow +0.2 %).

Follow-up sessions (SBRT response; :data:`FOLLOW_UP_CHANGES`): the tumour's D rises by 30 % at
``fu1`` and 45 % at ``fu2``, its Ktrans and vp fall by 40 % (``fu1``) and 50 % (``fu2``); the
T1 of ``marrow_treated`` falls by 20 % and 30 % (fatty conversion; only T1 is changed). Every
other tissue and parameter, cord included, is unchanged. Sessions are mapped to kinds by
position: the first is ``pre`` (baseline), then ``fu1``, ``fu2``.

Acquisitions (:data:`PHANTOM_PROTOCOL`)
---------------------------------------
- ``T2w`` (reference): spin echo, TR 3 s, TE 0.09 s, ``S = PD (1 - exp(-TR/T1)) exp(-TE/T2)``.
- ``VFA``: spoiled GRE, TR 0.010 s, flip angles 3, 6, 10, 15, 20 deg, actual flip angle =
  nominal x B1: ``S = PD sin(a) (1 - E1) / (1 - cos(a) E1)``, ``E1 = exp(-TR/T1)`` (T2* decay
  at the 2.3 ms echo is not simulated, i.e. folded into M0).
- ``TB1map``: ``100 * B1`` in percent (100 = nominal), a smooth second-order polynomial in the
  scanner's x and z scaled to 0.86..1.14 over the FOV, fixed in the scanner frame (it does not
  move with the patient); Gaussian noise of 0.5 percent. B1 scales the flip angle of the
  spoiled gradient-echo series, VFA and DCE (spin-echo series are idealised).
- ``MESE``: 8 echoes at 0.01..0.08 s, TR 2.5 s, mono-exponential
  ``S = PD (1 - exp(-TR/T1)) exp(-TE/T2)``.
- ``dwi``: b = 0 and b = 50, 100, 200, 400, 600, 800 s/mm^2 along x, y and z (19 volumes),
  TE 0.07 s, TR 4 s, fat-suppressed, IVIM ``S = S0 [(1-f) exp(-bD) + f exp(-bD*)]`` with
  ``S0 = PD (1 - FF) (1 - exp(-TR/T1)) exp(-TE/T2)``.
- ``dce``: 32 frames every 7 s (frame k at t = 7 k s), SPGR, flip angle 15 deg, TR 0.004 s,
  5 baseline frames, bolus arrival at t = 35 s (frame 5). Blood concentration ``Cb(t)`` =
  Parker population AIF (Parker et al. MRM 2006, Table 1) of ``t - 35 s``, zero before;
  ``Cp = Cb / (1 - Hct)``, Hct 0.42; tissue ``C = vp Cp + Ktrans Cp (*) exp(-kep t)``,
  ``kep = Ktrans / ve`` (convolution on a 0.05 s grid); the aorta holds ``Cb``;
  ``R1(t) = 1/T1 + r1 C(t)`` with r1 = 4.5 /mM/s (gadoteridol at 1.5 T).
- Full size: DWI and DCE on a coarser grid (1.5 x the reference voxel size, same FOV), the
  other series on the reference grid: 3.0 x 2.5 x 2.5 mm (x, y, z; 29 x 46 x 64 voxels,
  DWI/DCE 4.5 x 3.75 x 3.75 mm, 20 x 31 x 43), FOV 88 x 116 x 160 mm; ``small=True``:
  6 x 5 x 5 mm (15 x 23 x 32) for every series, DWI and DCE included (a coarser DWI grid would
  lose the cord). Image axes are x, y, z (diagonal affine).
  The B1 map is stored as int16 with NIfTI scaling (0.1 percent steps).
- Every magnitude series has Rician noise ``|S + n1 + i n2|``, ``n1, n2 ~ N(0, sigma^2)``, with
  sigma (in PD units: T2w 0.005, VFA 0.0007, MESE 0.002, dwi 0.004, dce 0.0006) chosen for
  realistic SNR: marrow ~60 in the T2w, ~100 at 20 deg VFA, ~160 at the last echo, ~32 at
  b = 800, ~64 in the DCE baseline; tumour ~58 at 20 deg VFA, ~40 at b = 800, ~35 in the DCE
  baseline; muscle ~33 at the last echo. Magnitudes are stored as int16 with a per-series scale
  so that sigma is 2 stored units (``protocol.json`` records the scales).

Follow-up motion
----------------
All sessions share one grid (same affine). A follow-up image at world point ``p`` shows the
anatomy that was at baseline world point ``q = R^T (p - c - t) + c``, i.e. a baseline point
``q`` is seen at ``p = R (q - c) + c + t``, where ``c`` is the centre of the treated vertebral
body at baseline, ``t`` a translation (1.5..5 mm per axis) and ``R = Rz @ Ry @ Rx`` (rotations
of 1..3 deg about the world x, then y, then z axis). ``derivatives/truth/.../*_desc-truth_motion
.json`` stores the angles, ``t``, ``c`` and the 4x4 RAS matrix ``[[R, c + t - R c], [0, 1]]``
mapping a baseline world point to the follow-up world point (and its inverse).

Layout
------
Raw: ``dataset_description.json``, ``README``, ``participants.tsv`` (``participant_id``,
``treated_levels``, ``age``, ``sex``, ``dose_gy``, ``fractions``) + ``participants.json``,
``sessions.json`` (column descriptions), ``.bidsignore`` (``perf/*_dce.*``),
``sub-<s>/sub-<s>_sessions.tsv`` (``session_id`` as ``ses-<label>``, ``days_from_sbrt``) and per
session ``anat/*_T2w``, ``anat/*_flip-<i>_VFA``, ``anat/*_echo-<i>_MESE``, ``fmap/*_TB1map``,
``dwi/*_dwi`` (+ ``.bval``, ``.bvec``; b = 0 vector ``0 0 0``), ``perf/*_dce``.

``derivatives/labels/sub-<s>/ses-<baseline>/anat/*_dseg.nii.gz`` (int16) + ``*_dseg.tsv``
(``index``, ``name``; background 0 not listed; :func:`label_names`: per level, superior to
inferior, ``vb``, ``pel``, ``per``, ``pe``, ``cord``, then ``csf``, ``aorta``, ``tumor``).

``derivatives/truth``: ``protocol.json`` (protocol, Parker parameters, r1, Hct, stored scales,
geometry, grids, B1 polynomial), ``tissue_parameters.tsv`` (``session``, ``session_kind``,
``tissue`` and :data:`PARAMETERS`), ``aif.tsv`` (``time`` s, ``cp`` and ``cb`` mM at the frame
times; usable as ``--aif``), ``.bidsignore``, and per session under
``sub-<s>/ses-<t>/``: ``anat/*_desc-truth_<map>.nii.gz`` (float32, :data:`TRUTH_MAPS`: T1map,
T2map, ADC, D, f, Dstar, Ktrans, ve, vp, M0map, FF; JSON sidecar with ``Units``; 0 in air),
``anat/*_desc-tissue_dseg`` (+ tsv, :data:`TISSUE_INDEX`), ``anat/*_desc-truth_dseg`` (+ tsv,
the contract labels in that session's position; at baseline identical to the labels),
``fmap/*_desc-truth_TB1map`` (noiseless B1, percent) and ``*_desc-truth_motion.json``.
:func:`anatomy_on_grid` evaluates the same tissue and label maps on any grid (e.g. the DWI/DCE
grid), as seen in any session.
"""

from __future__ import annotations

import dataclasses
import gzip
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from qmri import __version__
from qmri.dce import relaxivity as _relaxivity
from qmri.errors import QMRIInputError
from qmri.io import atomic_output, save_nifti, sidecar_path, write_json

__all__ = [
    "EXTRA_SERIES",
    "FOLLOW_UP_CHANGES",
    "GEOMETRY",
    "HEMATOCRIT",
    "LEVEL_SETS",
    "PARKER_AIF",
    "PHANTOM_PROTOCOL",
    "R1_RELAXIVITY",
    "R2_PRIME_PER_S",
    "SESSION_KINDS",
    "TISSUES",
    "TISSUE_INDEX",
    "TRUTH_MAPS",
    "Geometry",
    "PhantomProtocol",
    "Tissue",
    "anatomy_on_grid",
    "label_names",
    "parker_aif",
    "rotation_matrix",
    "session_kinds",
    "subject_layout",
    "t2star_table",
    "tissue_parameters",
    "write_phantom_dataset",
    "write_phantom_dose",
]

# ---------------------------------------------------------------------------------------------
# Tissue table
# ---------------------------------------------------------------------------------------------

#: Parameters of a tissue, in the units of the data contract (section 4).
PARAMETERS: tuple[str, ...] = ("PD", "T1", "T2", "D", "f", "Dstar", "Ktrans", "ve", "vp", "FF")

#: Units of :data:`PARAMETERS`.
PARAMETER_UNITS: dict[str, str] = {
    "PD": "a.u.",
    "T1": "s",
    "T2": "s",
    "D": "mm^2/s",
    "f": "fraction",
    "Dstar": "mm^2/s",
    "Ktrans": "1/min",
    "ve": "fraction",
    "vp": "fraction",
    "FF": "fraction",
}


@dataclass(frozen=True)
class Tissue:
    """True MR parameters of one tissue at 1.5 T.

    Attributes
    ----------
    name : str
        Tissue name (also its name in the tissue ``dseg.tsv``).
    PD : float
        Proton density, relative (fat = 1).
    T1, T2 : float
        Relaxation times (s).
    D : float
        Diffusion coefficient (mm^2/s); also the ADC truth.
    f : float
        IVIM perfusion fraction (0..1).
    Dstar : float
        IVIM pseudo-diffusion coefficient (mm^2/s); 0 where f is 0.
    Ktrans : float
        Extended-Tofts transfer constant (1/min).
    ve, vp : float
        Extravascular-extracellular and plasma volume fractions (0..1).
    FF : float
        Fat fraction (0..1); scales the fat-suppressed DWI signal by ``1 - FF``.
    """

    name: str
    PD: float
    T1: float
    T2: float
    D: float
    f: float
    Dstar: float
    Ktrans: float
    ve: float
    vp: float
    FF: float

    def as_dict(self) -> dict[str, float]:
        """Return the parameters (without the name) as a dict."""
        return {p: float(getattr(self, p)) for p in PARAMETERS}


#: Haematocrit of large-vessel blood (Cp = Cb / (1 - Hct)).
HEMATOCRIT = 0.42

#: Baseline tissue parameters at 1.5 T (see the module docstring for units and sources).
TISSUES: tuple[Tissue, ...] = (
    Tissue("marrow", 0.90, 0.60, 0.080, 0.40e-3, 0.06, 25e-3, 0.06, 0.15, 0.03, 0.50),
    Tissue("marrow_treated", 0.90, 0.60, 0.080, 0.40e-3, 0.06, 25e-3, 0.06, 0.15, 0.03, 0.50),
    Tissue("tumor", 0.90, 1.20, 0.090, 0.90e-3, 0.10, 20e-3, 0.25, 0.30, 0.08, 0.05),
    Tissue("disc", 0.85, 1.10, 0.110, 1.50e-3, 0.0, 0.0, 0.003, 0.25, 0.0, 0.0),
    Tissue("cord", 0.75, 0.85, 0.075, 1.00e-3, 0.03, 15e-3, 0.002, 0.05, 0.025, 0.0),
    Tissue("csf", 1.00, 4.00, 1.500, 3.00e-3, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
    Tissue("muscle", 0.70, 1.00, 0.035, 1.50e-3, 0.08, 25e-3, 0.04, 0.12, 0.02, 0.05),
    Tissue("fat", 1.00, 0.26, 0.100, 0.02e-3, 0.0, 0.0, 0.01, 0.10, 0.01, 0.97),
    Tissue("blood", 0.90, 1.44, 0.250, 1.80e-3, 0.0, 0.0, 0.0, 0.0, 1.0 - HEMATOCRIT, 0.0),
)

#: Tissue name -> value in the truth tissue map (0 is air).
TISSUE_INDEX: dict[str, int] = {t.name: i + 1 for i, t in enumerate(TISSUES)}

#: Session kinds, in order: baseline, then the follow-ups.
SESSION_KINDS: tuple[str, ...] = ("pre", "fu1", "fu2")

#: Multiplicative changes of the follow-up sessions: kind -> tissue -> parameter -> factor.
FOLLOW_UP_CHANGES: dict[str, dict[str, dict[str, float]]] = {
    "fu1": {
        "tumor": {"D": 1.30, "Ktrans": 0.60, "vp": 0.60},
        "marrow_treated": {"T1": 0.80},
    },
    "fu2": {
        "tumor": {"D": 1.45, "Ktrans": 0.50, "vp": 0.50},
        "marrow_treated": {"T1": 0.70},
    },
}

#: Nominal days from SBRT of each session kind (per-subject jitter of a few days is added).
_DAYS_FROM_SBRT: dict[str, int] = {"pre": -7, "fu1": 90, "fu2": 180}


def tissue_parameters(session_kind: str = "pre") -> dict[str, Tissue]:
    """Return the true tissue parameters of a session kind.

    Parameters
    ----------
    session_kind : {"pre", "fu1", "fu2"}
        Baseline or follow-up (see :data:`FOLLOW_UP_CHANGES`).

    Returns
    -------
    dict of str to Tissue
        Tissue name -> parameters, in :data:`TISSUES` order.

    Raises
    ------
    QMRIInputError
        For an unknown session kind.
    """
    if session_kind not in SESSION_KINDS:
        raise QMRIInputError(
            f"unknown session kind {session_kind!r} (expected one of {', '.join(SESSION_KINDS)})"
        )
    changes = FOLLOW_UP_CHANGES.get(session_kind, {})
    out: dict[str, Tissue] = {}
    for tissue in TISSUES:
        factors = changes.get(tissue.name, {})
        updates = {p: getattr(tissue, p) * k for p, k in factors.items()}
        out[tissue.name] = dataclasses.replace(tissue, **updates)
    return out


def session_kinds(sessions: Sequence[str]) -> dict[str, str]:
    """Map session labels to kinds by position (first ``pre``, then ``fu1``, ``fu2``)."""
    if not 1 <= len(sessions) <= len(SESSION_KINDS):
        raise QMRIInputError(
            f"the phantom has 1 to {len(SESSION_KINDS)} sessions, got {len(sessions)}"
        )
    return dict(zip(sessions, SESSION_KINDS, strict=False))


def _parameter_table(session_kind: str) -> np.ndarray:
    """Return a ``(n_tissues + 1, n_parameters)`` array; row 0 (air) is all zeros."""
    params = tissue_parameters(session_kind)
    table = np.zeros((len(TISSUES) + 1, len(PARAMETERS)))
    for name, tissue in params.items():
        table[TISSUE_INDEX[name]] = [getattr(tissue, p) for p in PARAMETERS]
    return table


# ---------------------------------------------------------------------------------------------
# Acquisition protocol
# ---------------------------------------------------------------------------------------------

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

#: Longitudinal relaxivity of gadoteridol at 1.5 T (1/mM/s), from qmri's relaxivity table
#: (Rohrer et al. 2005, plasma, 37 C), so the phantom and the fit use one source.
R1_RELAXIVITY = _relaxivity("gadoteridol", 1.5)[0]


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

    def as_dict(self) -> dict[str, Any]:
        """Return the protocol as plain JSON-able data."""
        out = dataclasses.asdict(self)
        out["dwi_bvals_all"] = self.dwi_bvals_all.tolist()
        out["dce_times_s"] = self.dce_times_s.tolist()
        return out


#: The protocol the generator uses.
PHANTOM_PROTOCOL = PhantomProtocol()


def parker_aif(t_s: np.ndarray, arrival_s: float = 0.0) -> np.ndarray:
    """Whole-blood Parker population AIF ``Cb`` (mM), zero before the bolus arrival.

    Parameters
    ----------
    t_s : ndarray
        Times (s).
    arrival_s : float
        Bolus arrival (s): ``Cb(t) = Parker(t - arrival_s)`` for ``t >= arrival_s``.

    Returns
    -------
    ndarray
        Blood concentration (mM); plasma concentration is ``Cb / (1 - Hct)``.
    """
    p = PARKER_AIF
    tm = (np.asarray(t_s, dtype=float) - arrival_s) / 60.0
    cb = np.zeros_like(tm)
    for a, t0, sig in (
        (p["A1_mM_min"], p["T1_min"], p["sigma1_min"]),
        (p["A2_mM_min"], p["T2_min"], p["sigma2_min"]),
    ):
        cb += a / (sig * np.sqrt(2 * np.pi)) * np.exp(-((tm - t0) ** 2) / (2 * sig**2))
    cb += (
        p["alpha_mM"]
        * np.exp(-p["beta_per_min"] * tm)
        / (1 + np.exp(np.clip(-p["s_per_min"] * (tm - p["tau_min"]), -700, 700)))
    )
    return np.where(tm >= 0, cb, 0.0)


# ---------------------------------------------------------------------------------------------
# Geometry and labels
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Geometry:
    """Anatomical dimensions (mm) in the anatomy frame (treated body centre at the origin)."""

    body_semi_x: float = 20.0
    body_semi_y: float = 15.0
    body_height: float = 22.0
    disc_height: float = 6.0
    canal_y: float = -24.5
    canal_radius: float = 9.0
    ring_outer_radius: float = 15.0
    pedicle_x: tuple[float, float] = (6.0, 13.0)
    cord_semi_x: float = 5.0
    cord_semi_y: float = 4.0
    spinous_half_width: float = 3.0
    spinous_y_end: float = -60.0
    spinous_half_height: float = 9.0
    muscle_centre: tuple[float, float] = (18.0, -47.0)
    muscle_semi: tuple[float, float] = (13.0, 12.0)
    aorta_centre: tuple[float, float] = (-14.0, 24.0)
    aorta_radius: float = 10.0
    outline_centre: tuple[float, float] = (0.0, -14.0)
    outline_semi: tuple[float, float] = (40.0, 54.0)
    tumor_centre: tuple[float, float, float] = (-9.0, -12.0, 0.0)
    tumor_radius: float = 8.0
    #: Field of view (min, max) per axis in the anatomy frame.
    fov: tuple[tuple[float, float], ...] = ((-44.0, 44.0), (-72.0, 44.0), (-80.0, 80.0))

    @property
    def pitch(self) -> float:
        """Distance between the centres of adjacent vertebral bodies (mm)."""
        return self.body_height + self.disc_height


#: The phantom's anatomy.
GEOMETRY = Geometry()

_ALL_LEVELS: tuple[str, ...] = (
    *(f"C{i}" for i in range(1, 8)),
    *(f"T{i}" for i in range(1, 13)),
    *(f"L{i}" for i in range(1, 6)),
    *(f"S{i}" for i in range(1, 6)),
)


def _level_run(first: str, n: int = 5) -> tuple[str, ...]:
    start = _ALL_LEVELS.index(first)
    return _ALL_LEVELS[start : start + n]


#: Labelled levels (superior to inferior) of subject ``i`` are ``LEVEL_SETS[i % 4]``.
LEVEL_SETS: tuple[tuple[str, ...], ...] = (
    _level_run("T9"),
    _level_run("T10"),
    _level_run("T11"),
    _level_run("T8"),
)

_LEVEL_STRUCTURES: tuple[str, ...] = ("vb", "pel", "per", "pe", "cord")


def label_names(levels: Sequence[str]) -> dict[int, str]:
    """Return the label lookup table (index -> name) for the given levels.

    For level ``k`` (0-based, superior to inferior) the labels ``vb``, ``pel``, ``per``, ``pe``,
    ``cord`` get the indices ``5k + 1`` .. ``5k + 5``; then ``csf``, ``aorta``, ``tumor``.
    """
    names = [f"{s}_{level}" for level in levels for s in _LEVEL_STRUCTURES]
    names += ["csf", "aorta", "tumor"]
    return {i + 1: name for i, name in enumerate(names)}


def _ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, ax: float, ay: float):
    return ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 <= 1.0


def _anatomy(
    u: np.ndarray, n_levels: int, treated: int, geo: Geometry = GEOMETRY
) -> tuple[np.ndarray, np.ndarray]:
    """Tissue and label maps at anatomy-frame points ``u`` (shape ``(3, ...)``, mm).

    Returns
    -------
    tissue : ndarray of int16
        :data:`TISSUE_INDEX` values (0 = air).
    labels : ndarray of int16
        :func:`label_names` indices (0 = background).
    """
    x, y, z = u
    k = np.rint(treated - z / geo.pitch).astype(int)  # level index, 0 = most superior
    dz = z - (treated - k) * geo.pitch
    in_level = (k >= 0) & (k < n_levels)
    in_body_z = np.abs(dz) <= geo.body_height / 2
    body_xs = _ellipse(x, y, 0.0, 0.0, geo.body_semi_x, geo.body_semi_y)
    r_canal = np.hypot(x, y - geo.canal_y)
    canal = r_canal <= geo.canal_radius
    cord = _ellipse(x, y, 0.0, geo.canal_y, geo.cord_semi_x, geo.cord_semi_y)
    # laminae (ring around the canal) and pedicles (bars from the ring to the body, lateral to
    # the canal); no bone between the canal and the body
    ring = (r_canal > geo.canal_radius) & (r_canal <= geo.ring_outer_radius)
    pedicles = (
        (np.abs(x) >= geo.pedicle_x[0])
        & (np.abs(x) <= geo.pedicle_x[1])
        & (y >= geo.canal_y)
        & (y <= 0.0)
        & ~canal
    )
    ring = (ring | pedicles) & ~body_xs & in_body_z
    ring &= ~((y > geo.canal_y) & (np.abs(x) < geo.pedicle_x[0]))
    spinous = (
        (np.abs(x) <= geo.spinous_half_width)
        & (y < geo.canal_y - geo.ring_outer_radius)
        & (y >= geo.spinous_y_end)
        & (np.abs(dz) <= geo.spinous_half_height)
    )
    mx, my = geo.muscle_centre
    muscle = _ellipse(np.abs(x), y, mx, my, *geo.muscle_semi)
    aorta = np.hypot(x - geo.aorta_centre[0], y - geo.aorta_centre[1]) <= geo.aorta_radius
    outline = _ellipse(x, y, *geo.outline_centre, *geo.outline_semi)
    vb = body_xs & in_body_z
    treated_level = k == treated
    tumor = (
        (
            np.sqrt(
                (x - geo.tumor_centre[0]) ** 2
                + (y - geo.tumor_centre[1]) ** 2
                + (z - geo.tumor_centre[2]) ** 2
            )
            <= geo.tumor_radius
        )
        & treated_level
        & (vb | ring)
    )

    t = TISSUE_INDEX
    tissue = np.zeros(x.shape, dtype=np.int16)
    tissue[outline] = t["fat"]
    tissue[muscle & outline] = t["muscle"]
    tissue[aorta] = t["blood"]
    tissue[canal] = t["csf"]
    tissue[cord] = t["cord"]
    tissue[ring | spinous] = t["marrow"]
    tissue[body_xs & ~in_body_z] = t["disc"]
    tissue[vb] = t["marrow"]
    tissue[vb & treated_level] = t["marrow_treated"]
    tissue[tumor] = t["tumor"]

    n_lab = len(_LEVEL_STRUCTURES)
    base = k * n_lab  # label index of structure s at level k is base + position + 1
    labels = np.zeros(x.shape, dtype=np.int16)
    csf_index = n_levels * n_lab + 1
    labels[canal & ~cord] = csf_index
    labels[aorta] = csf_index + 1
    for pos, mask in enumerate(
        (vb, ring & (x < 0), ring & (x >= 0), spinous, cord),
    ):
        sel = mask & in_level
        labels[sel] = (base[sel] + pos + 1).astype(np.int16)
    labels[tumor] = csf_index + 2
    return tissue, labels


# ---------------------------------------------------------------------------------------------
# Grids, motion, B1
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Grid:
    shape: tuple[int, int, int]
    affine: np.ndarray

    def world(self) -> np.ndarray:
        """World coordinates (mm) of the voxel centres, shape ``(3, nx, ny, nz)``."""
        idx = np.indices(self.shape, dtype=float)
        return np.einsum("ij,j...->i...", self.affine[:3, :3], idx) + self.affine[:3, 3].reshape(
            3, 1, 1, 1
        )


def subject_layout(subject: int) -> tuple[tuple[str, ...], str, np.ndarray]:
    """Return the labelled levels, the treated level and the treated body's centre of a subject.

    Parameters
    ----------
    subject : int
        0-based subject index (``sub-01`` is 0).

    Returns
    -------
    levels : tuple of str
        Labelled levels, superior to inferior (``LEVEL_SETS[subject % 4]``).
    treated : str
        The treated level (the middle one).
    centre : ndarray, shape (3,)
        World position (RAS+, mm) of the treated vertebral body's centre at baseline; it does not
        depend on the seed.
    """
    levels = LEVEL_SETS[subject % len(LEVEL_SETS)]
    centre = np.array([1.0 + 0.5 * subject, 22.0 - subject, -38.0 + 7.0 * subject])
    return levels, levels[len(levels) // 2], centre


def anatomy_on_grid(
    affine: np.ndarray,
    shape: Sequence[int],
    *,
    subject: int = 0,
    baseline_to_session: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Evaluate the phantom's tissue and label maps at the voxel centres of any grid.

    Parameters
    ----------
    affine : (4, 4) ndarray
        Voxel to world (RAS+, mm) transform of the grid.
    shape : sequence of 3 int
        Grid shape.
    subject : int, default 0
        0-based subject index (levels and position from :func:`subject_layout`).
    baseline_to_session : (4, 4) ndarray, optional
        ``baseline_to_session_ras`` of a session's motion file; the anatomy is shown as seen in
        that session (world point ``p`` shows baseline point ``inv(M) p``). None: baseline.

    Returns
    -------
    tissue : ndarray of int16
        Tissue map (:data:`TISSUE_INDEX`, 0 = air).
    labels : ndarray of int16
        Contract labels (:func:`label_names` of the subject's levels, 0 = background).
    """
    grid = _Grid((int(shape[0]), int(shape[1]), int(shape[2])), np.asarray(affine, dtype=float))
    p = grid.world()
    if baseline_to_session is not None:
        inv = np.linalg.inv(np.asarray(baseline_to_session, dtype=float))
        p = np.einsum("ij,j...->i...", inv[:3, :3], p) + inv[:3, 3].reshape(3, 1, 1, 1)
    levels, treated, centre = subject_layout(subject)
    return _anatomy(p - centre.reshape(3, 1, 1, 1), len(levels), levels.index(treated))


def _make_grid(origin: np.ndarray, voxel: Sequence[float], geo: Geometry = GEOMETRY) -> _Grid:
    """Grid of voxel size ``voxel`` (mm) covering the FOV, placed at world ``origin``."""
    lo = np.array([f[0] for f in geo.fov]) + origin
    hi = np.array([f[1] for f in geo.fov]) + origin
    vox = np.asarray(voxel, dtype=float)
    shape = np.maximum(1, np.rint((hi - lo) / vox)).astype(int)
    first = (lo + hi) / 2 - (shape - 1) / 2 * vox
    affine = np.diag([*vox, 1.0])
    affine[:3, 3] = first
    return _Grid((int(shape[0]), int(shape[1]), int(shape[2])), affine)


def rotation_matrix(angles_deg: Sequence[float]) -> np.ndarray:
    """Rotation ``R = Rz @ Ry @ Rx`` from angles (deg) about the world x, y and z axes."""
    ax, ay, az = np.deg2rad(np.asarray(angles_deg, dtype=float))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


@dataclass(frozen=True)
class _Motion:
    rotation_deg: np.ndarray
    translation_mm: np.ndarray
    centre_mm: np.ndarray

    @property
    def rotation(self) -> np.ndarray:
        return rotation_matrix(self.rotation_deg)

    @property
    def matrix(self) -> np.ndarray:
        """4x4 RAS matrix mapping a baseline world point to the session's world point."""
        r = self.rotation
        m = np.eye(4)
        m[:3, :3] = r
        m[:3, 3] = self.centre_mm + self.translation_mm - r @ self.centre_mm
        return m

    def as_dict(self) -> dict[str, Any]:
        return {
            "rotation_deg": self.rotation_deg.tolist(),
            "rotation_order": "R = Rz @ Ry @ Rx (rotations about the world x, then y, then z axis)",
            "translation_mm": self.translation_mm.tolist(),
            "centre_mm": self.centre_mm.tolist(),
            "rotation_matrix": self.rotation.tolist(),
            "convention": (
                "The image of this session at world point p (RAS+, mm) shows the anatomy that was "
                "at baseline world point q = R^T (p - c - t) + c; equivalently a baseline point q "
                "is seen at p = R (q - c) + c + t. baseline_to_session_ras maps q to p (4x4); "
                "session_to_baseline_ras is its inverse. All sessions share one grid (affine)."
            ),
            "baseline_to_session_ras": self.matrix.tolist(),
            "session_to_baseline_ras": np.linalg.inv(self.matrix).tolist(),
        }


def _draw_motion(rng: np.random.Generator, centre: np.ndarray) -> _Motion:
    signs = rng.choice([-1.0, 1.0], size=6)
    rot = np.round(signs[:3] * rng.uniform(1.0, 3.0, 3), 3)
    trans = np.round(signs[3:] * rng.uniform(1.5, 5.0, 3), 3)
    return _Motion(rot, trans, centre.astype(float))


def _b1_field(p: np.ndarray, coeffs: np.ndarray, fov_lo: np.ndarray, fov_hi: np.ndarray):
    """Smooth B1 ratio at scanner points ``p`` (3, ...): polynomial in x and z."""
    mid = (fov_lo + fov_hi) / 2
    half = (fov_hi - fov_lo) / 2
    xn = (p[0] - mid[0]) / half[0]
    zn = (p[2] - mid[2]) / half[2]
    terms = np.stack([xn, zn, xn**2 - 1 / 3, zn**2 - 1 / 3, xn * zn])
    return 1.0 + np.tensordot(coeffs, terms, axes=1)


def _b1_coefficients(rng: np.random.Generator, span: tuple[float, float]) -> np.ndarray:
    """Random polynomial coefficients scaled so the field spans ``span`` on the FOV."""
    coeffs = (
        rng.uniform(0.5, 1.0, 5) * rng.choice([-1.0, 1.0], 5) * np.array([1, 1, 0.6, 0.6, 0.5])
    )
    g = np.linspace(-1.0, 1.0, 41)
    xn, zn = np.meshgrid(g, g, indexing="ij")
    dev = np.tensordot(coeffs, np.stack([xn, zn, xn**2 - 1 / 3, zn**2 - 1 / 3, xn * zn]), 1)
    # rescale the deviation to the span's width, then shift its mid-range to the span's centre;
    # the returned sixth coefficient is that constant shift
    scale = (span[1] - span[0]) / (dev.max() - dev.min())
    offset = (span[1] + span[0]) / 2 - 1.0 - (dev.max() + dev.min()) / 2 * scale
    return np.concatenate([coeffs * scale, [offset]])


def _b1_ratio(p: np.ndarray, coeffs: np.ndarray, fov_lo: np.ndarray, fov_hi: np.ndarray):
    return _b1_field(p, coeffs[:5], fov_lo, fov_hi) + coeffs[5]


# ---------------------------------------------------------------------------------------------
# Signal models
# ---------------------------------------------------------------------------------------------


def _safe(values: np.ndarray) -> np.ndarray:
    """Replace zero relaxation times (air) by 1 s to avoid division by zero."""
    return np.where(values > 0, values, 1.0)


def _spgr(pd: np.ndarray, t1: np.ndarray, flip_rad: np.ndarray, tr: float) -> np.ndarray:
    e1 = np.exp(-tr / _safe(t1))
    return pd * np.sin(flip_rad) * (1 - e1) / (1 - np.cos(flip_rad) * e1)


def _spin_echo(table: np.ndarray, tr: float, te: np.ndarray) -> np.ndarray:
    """Per-tissue spin-echo signal, shape ``(n_tissues + 1, len(te))``."""
    col = {p: table[:, i] for i, p in enumerate(PARAMETERS)}
    sat = col["PD"] * (1 - np.exp(-tr / _safe(col["T1"])))
    return sat[:, None] * np.exp(-np.atleast_1d(te)[None, :] / _safe(col["T2"])[:, None])


#: Reversible transverse relaxation R2' (1/s) per tissue, for the optional MEGRE series:
#: T2* = 1 / (1/T2 + R2'). Trabecular bone makes marrow's T2* short (about 14 ms at 1.5 T),
#: a lytic metastasis replaces trabeculae (about 32 ms).
R2_PRIME_PER_S: dict[str, float] = {
    "marrow": 60.0,
    "marrow_treated": 60.0,
    "tumor": 20.0,
    "disc": 10.0,
    "cord": 10.0,
    "csf": 1.0,
    "muscle": 15.0,
    "fat": 30.0,
    "blood": 20.0,
}

#: Series :func:`write_phantom_dataset` adds on request.
EXTRA_SERIES = ("IRT1", "MEGRE")


def t2star_table(table: np.ndarray) -> np.ndarray:
    """True T2* (s) per tissue row of a parameter table (row 0, air, is 0)."""
    t2 = table[:, PARAMETERS.index("T2")]
    r2p = np.array([0.0] + [R2_PRIME_PER_S[t.name] for t in TISSUES])
    with np.errstate(divide="ignore"):
        return np.where(t2 > 0, 1.0 / (1.0 / _safe(t2) + r2p), 0.0)


def _inversion_recovery(table: np.ndarray, tr: float, ti: np.ndarray) -> np.ndarray:
    """Magnitude IR signal per tissue, ``|PD (1 - 2 e^{-TI/T1} + e^{-TR/T1})|``."""
    col = {p: table[:, i] for i, p in enumerate(PARAMETERS)}
    t1 = _safe(col["T1"])[:, None]
    return np.abs(col["PD"][:, None] * (1 - 2 * np.exp(-ti[None, :] / t1) + np.exp(-tr / t1)))


def _gradient_echo(table: np.ndarray, tr: float, te: np.ndarray) -> np.ndarray:
    """Multi-echo GRE (90 deg, long TR) per tissue: ``PD (1 - e^{-TR/T1}) e^{-TE/T2*}``."""
    col = {p: table[:, i] for i, p in enumerate(PARAMETERS)}
    sat = col["PD"] * (1 - np.exp(-tr / _safe(col["T1"])))
    return sat[:, None] * np.exp(-te[None, :] / _safe(t2star_table(table))[:, None])


def _dwi_curves(table: np.ndarray, proto: PhantomProtocol) -> np.ndarray:
    """Per-tissue IVIM signal, shape ``(n_tissues + 1, n_volumes)``."""
    col = {p: table[:, i] for i, p in enumerate(PARAMETERS)}
    s0 = _spin_echo(table, proto.dwi_tr_s, np.array([proto.dwi_te_s]))[:, 0] * (1 - col["FF"])
    b = proto.dwi_bvals_all[None, :]
    f = col["f"][:, None]
    return s0[:, None] * (
        (1 - f) * np.exp(-b * col["D"][:, None]) + f * np.exp(-b * col["Dstar"][:, None])
    )


def _concentration_curves(table: np.ndarray, proto: PhantomProtocol) -> np.ndarray:
    """Per-tissue extended-Tofts concentration (mM) at the frame times."""
    col = {p: table[:, i] for i, p in enumerate(PARAMETERS)}
    dt = 0.05
    t_fine = np.arange(0.0, proto.dce_times_s[-1] + dt / 2, dt)
    cp = parker_aif(t_fine, proto.dce_bolus_arrival_s) / (1 - proto.hematocrit)
    frames = np.rint(proto.dce_times_s / dt).astype(int)
    out = np.zeros((table.shape[0], frames.size))
    for i in range(table.shape[0]):
        ktrans = col["Ktrans"][i] / 60.0
        ve = col["ve"][i]
        conv = np.zeros_like(t_fine)
        if ktrans > 0 and ve > 0:
            kernel = np.exp(-ktrans / ve * t_fine)
            # trapezoid-corrected discrete convolution
            conv = np.convolve(cp, kernel)[: t_fine.size] * dt
            conv -= 0.5 * dt * (cp[0] * kernel[: t_fine.size] + cp * kernel[0])
        out[i] = (col["vp"][i] * cp + ktrans * conv)[frames]
    return out


def _dce_t1_curves(table: np.ndarray, proto: PhantomProtocol) -> np.ndarray:
    """Per-tissue T1 (s) during the DCE series, shape ``(n_tissues + 1, n_frames)``."""
    col = {p: table[:, i] for i, p in enumerate(PARAMETERS)}
    conc = _concentration_curves(table, proto)
    return 1 / (1 / _safe(col["T1"])[:, None] + proto.r1_per_mM_s * conc)


def _rician(signal: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    n1 = rng.standard_normal(signal.shape)
    n2 = rng.standard_normal(signal.shape)
    return np.hypot(signal + sigma * n1, sigma * n2)


def _to_int16(magnitude: np.ndarray, scale: float) -> np.ndarray:
    return np.clip(np.rint(magnitude * scale), 0, np.iinfo(np.int16).max).astype(np.int16)


# ---------------------------------------------------------------------------------------------
# Writers
# ---------------------------------------------------------------------------------------------


def _write_text(text: str, path: Path) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _write_tsv(rows: Sequence[Sequence[Any]], columns: Sequence[str], path: Path) -> None:
    def fmt(v: Any) -> str:
        if v is None:
            return "n/a"
        if isinstance(v, float):
            return f"{v:.6g}"
        return str(v)

    lines = ["\t".join(columns)] + ["\t".join(fmt(v) for v in row) for row in rows]
    _write_text("\n".join(lines) + "\n", path)


def _save_b1(percent: np.ndarray, affine: np.ndarray, path: Path, sidecar: dict) -> None:
    """Write a B1 map (percent) as int16 with NIfTI scaling: value = stored x 0.1 percent."""
    slope = 0.1
    raw = np.clip(np.rint(percent / slope), 0, np.iinfo(np.int16).max).astype(np.int16)
    img = nib.Nifti1Image(raw, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_qform(affine, code=1)
    img.header.set_sform(affine, code=1)
    blob = img.to_bytes()
    header = nib.Nifti1Header(blob[:348])
    header["scl_slope"] = slope
    header["scl_inter"] = 0.0
    with atomic_output(path) as tmp:
        tmp.write_bytes(gzip.compress(header.binaryblock + blob[348:], mtime=0))
    write_json(sidecar, sidecar_path(path))


def _dataset_description(name: str, *, derivative: bool) -> dict[str, Any]:
    desc: dict[str, Any] = {
        "Name": name,
        "BIDSVersion": "1.10.0",
        "DatasetType": "derivative" if derivative else "raw",
        "License": "CC0",
        "Authors": ["qmri developers"],
    }
    if derivative:
        desc["GeneratedBy"] = [
            {
                "Name": "qmri.phantom",
                "Version": __version__,
                "Description": "Digital reference object of the thoraco-lumbar spine",
            }
        ]
    else:
        desc["GeneratedBy"] = [{"Name": "qmri.phantom", "Version": __version__}]
    return desc


_README = """\
qmri digital reference object: thoraco-lumbar spine with an SBRT-treated metastasis
===================================================================================

Synthetic 1.5 T data written by qmri.phantom.write_phantom_dataset ({mode}, seed {seed}).
Each subject has five labelled vertebral levels and an intraosseous tumour in the middle
(treated) level; the sessions are a baseline ("pre") and follow-ups after SBRT, repositioned by a
known rigid transform. Per session: a T2w reference, variable flip angle SPGR (VFA) with a B1
map (fmap/TB1map, percent), multi-echo spin echo (MESE), IVIM diffusion (dwi) and DCE
(perf/*_dce, listed in .bidsignore because BIDS has no DCE suffix yet).

derivatives/labels holds the ROI labels drawn on the baseline T2w (dseg + tsv);
derivatives/truth the true parameter maps, tissue maps, motion, protocol and AIF.
All values are documented in the qmri.phantom module. The data are synthetic: CC0.
"""

_PARTICIPANTS_JSON: dict[str, Any] = {
    "participant_id": {"Description": "Participant label"},
    "treated_levels": {
        "Description": "Vertebral level(s) treated with SBRT, comma-separated (e.g. T11)"
    },
    "age": {"Description": "Age at baseline", "Units": "year"},
    "sex": {"Description": "Sex", "Levels": {"M": "male", "F": "female"}},
    "dose_gy": {"Description": "Prescribed SBRT dose", "Units": "Gy"},
    "fractions": {"Description": "Number of SBRT fractions"},
}

_SESSIONS_JSON: dict[str, Any] = {
    "session_id": {"Description": "Session identifier (ses-<label>)"},
    "days_from_sbrt": {
        "Description": "Days from the first SBRT fraction (negative: before treatment)",
        "Units": "day",
    },
}

#: Truth map suffix -> (parameter column, units, description).
TRUTH_MAPS: dict[str, tuple[str, str, str]] = {
    "T1map": ("T1", "s", "longitudinal relaxation time"),
    "T2map": ("T2", "s", "transverse relaxation time"),
    "ADC": ("D", "mm^2/s", "apparent diffusion coefficient (= D, see qmri.phantom)"),
    "D": ("D", "mm^2/s", "IVIM diffusion coefficient"),
    "f": ("f", "fraction", "IVIM perfusion fraction"),
    "Dstar": ("Dstar", "mm^2/s", "IVIM pseudo-diffusion coefficient"),
    "Ktrans": ("Ktrans", "1/min", "extended-Tofts transfer constant"),
    "ve": ("ve", "fraction", "extravascular extracellular volume fraction"),
    "vp": ("vp", "fraction", "plasma volume fraction"),
    "M0map": ("PD", "a.u.", "relative proton density (fat = 1)"),
    "FF": ("FF", "fraction", "fat fraction"),
}

_TRUTH_BIDSIGNORE = """\
*_desc-truth_ADC.*
*_desc-truth_D.*
*_desc-truth_f.*
*_desc-truth_Dstar.*
*_desc-truth_Ktrans.*
*_desc-truth_ve.*
*_desc-truth_vp.*
*_desc-truth_FF.*
*_desc-truth_motion.json
protocol.json
tissue_parameters.tsv
aif.tsv
"""


@dataclass(frozen=True)
class _Subject:
    label: str
    levels: tuple[str, ...]
    treated: int
    centre: np.ndarray  # world position of the treated body centre at baseline (mm)
    b1_coeffs: np.ndarray
    motions: dict[str, _Motion]
    days: dict[str, int]
    age: int
    sex: str
    dose_gy: float
    fractions: int


def _make_subject(i: int, sessions: Sequence[str], seed: int) -> _Subject:
    rng = np.random.default_rng([seed, i, 0])
    levels, treated_level, centre = subject_layout(i)
    b1 = _b1_coefficients(rng, PHANTOM_PROTOCOL.b1_range)
    dose, fx = [(24.0, 2), (27.0, 3), (35.0, 5), (18.0, 1)][int(rng.integers(0, 4))]
    age = int(rng.integers(45, 81))
    sex = str(rng.choice(["M", "F"]))
    kinds = session_kinds(sessions)
    motions = {}
    days = {}
    for ses, kind in kinds.items():
        if kind == "pre":
            motions[ses] = _Motion(np.zeros(3), np.zeros(3), centre.astype(float))
            days[ses] = _DAYS_FROM_SBRT[kind] - int(rng.integers(0, 8))
        else:
            motions[ses] = _draw_motion(rng, centre)
            days[ses] = _DAYS_FROM_SBRT[kind] + int(rng.integers(-10, 11))
    return _Subject(
        label=f"{i + 1:02d}",
        levels=levels,
        treated=levels.index(treated_level),
        centre=centre,
        b1_coeffs=b1,
        motions=motions,
        days=days,
        age=age,
        sex=sex,
        dose_gy=dose,
        fractions=fx,
    )


def _noise_rng(seed: int, subject: int, session: int, series: str) -> np.random.Generator:
    code = sum((j + 1) * ord(ch) for j, ch in enumerate(series))
    return np.random.default_rng([seed, subject, session + 1, code])


def _scale(series: str, proto: PhantomProtocol) -> float:
    return proto.noise_sigma_stored / proto.noise_sigma[series]


def _write_session(
    root: Path,
    subj: _Subject,
    i_subj: int,
    j_ses: int,
    ses: str,
    kind: str,
    grids: tuple[_Grid, _Grid],
    seed: int,
    extra_series: Sequence[str] = (),
) -> np.ndarray:
    """Write the raw series and the truth of one session; return its label map."""
    proto = PHANTOM_PROTOCOL
    ref, coarse = grids
    motion = subj.motions[ses]
    table = _parameter_table(kind)
    col = {p: table[:, n] for n, p in enumerate(PARAMETERS)}
    stem = f"sub-{subj.label}_ses-{ses}"
    sdir = root / f"sub-{subj.label}" / f"ses-{ses}"
    fov_lo = np.array([f[0] for f in GEOMETRY.fov]) + subj.centre
    fov_hi = np.array([f[1] for f in GEOMETRY.fov]) + subj.centre

    def anatomy(grid: _Grid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        matrix = None if kind == "pre" else motion.matrix
        tissue, labels = anatomy_on_grid(
            grid.affine, grid.shape, subject=i_subj, baseline_to_session=matrix
        )
        return tissue, labels, _b1_ratio(grid.world(), subj.b1_coeffs, fov_lo, fov_hi)

    def noisy(series: str, signal: np.ndarray, stream: str = "") -> np.ndarray:
        rng = _noise_rng(seed, i_subj, j_ses, series + stream)
        mag = _rician(signal, proto.noise_sigma[series], rng)
        return _to_int16(mag, _scale(series, proto))

    tissue, labels, b1 = anatomy(ref)
    tissue_c, _, b1_c = anatomy(coarse)
    common = _scanner_metadata(proto)

    # T2w reference
    t2w = _spin_echo(table, proto.t2w_tr_s, np.array([proto.t2w_te_s]))[:, 0][tissue]
    save_nifti(
        noisy("T2w", t2w),
        ref.affine,
        sdir / "anat" / f"{stem}_T2w.nii.gz",
        dtype=np.int16,
        sidecar={
            **common,
            "EchoTime": proto.t2w_te_s,
            "RepetitionTime": proto.t2w_tr_s,
            "FlipAngle": 90,
            "ScanningSequence": "SE",
            "SequenceVariant": "NONE",
            "PulseSequenceType": "Spin Echo",
            "MRAcquisitionType": "2D",
            "SequenceName": "se",
        },
    )

    # VFA
    vfa_names = []
    for n, fa in enumerate(proto.vfa_flip_angles_deg, start=1):
        sig = _spgr(col["PD"][tissue], col["T1"][tissue], np.deg2rad(fa) * b1, proto.vfa_tr_s)
        name = f"{stem}_flip-{n}_VFA.nii.gz"
        vfa_names.append(f"bids::sub-{subj.label}/ses-{ses}/anat/{name}")
        save_nifti(
            noisy("VFA", sig, str(n)),
            ref.affine,
            sdir / "anat" / name,
            dtype=np.int16,
            sidecar={
                **common,
                "FlipAngle": fa,
                "RepetitionTimeExcitation": proto.vfa_tr_s,
                "RepetitionTime": proto.vfa_tr_s,
                "EchoTime": proto.vfa_te_s,
                "PulseSequenceType": "SPGR",
                "ScanningSequence": "GR",
                "SequenceVariant": "SP",
                "SpoilingState": True,
                "SpoilingType": "COMBINED",
                "SpoilingRFPhaseIncrement": 117,
                "MRAcquisitionType": "3D",
                "SequenceName": "spgr",
                "MTState": False,
            },
        )

    # B1 map (percent)
    b1_rng = np.random.default_rng([seed, i_subj, j_ses + 1, 7])
    b1_meas = 100.0 * b1 + proto.b1_noise_percent * b1_rng.standard_normal(b1.shape)
    _save_b1(
        b1_meas,
        ref.affine,
        sdir / "fmap" / f"{stem}_TB1map.nii.gz",
        {
            **common,
            "IntendedFor": vfa_names,
            "Units": "percent",
            "EchoTime": 0.002,
            "FlipAngle": 60,
            "RepetitionTime": 0.1,
            "ScanningSequence": "GR",
            "SequenceVariant": "SP",
            "SequenceName": "afi",
            "PulseSequenceType": "Actual flip angle imaging (AFI)",
            "MRAcquisitionType": "3D",
        },
    )

    def collection(
        series: str,
        entity: str,
        key: str,
        values: Sequence[float],
        signals: np.ndarray,
        sidecar: Mapping[str, Any],
    ) -> None:
        """One 3D file per echo / inversion time (``<entity>-<n>_<series>``), int16."""
        for n, value in enumerate(values, start=1):
            save_nifti(
                noisy(series, signals[:, n - 1][tissue], str(n)),
                ref.affine,
                sdir / "anat" / f"{stem}_{entity}-{n}_{series}.nii.gz",
                dtype=np.int16,
                sidecar={**common, key: value, **sidecar},
            )

    # MESE
    mese_sidecar = {
        "RepetitionTime": proto.mese_tr_s,
        "ScanningSequence": "SE",
        "SequenceVariant": "NONE",
        "PulseSequenceType": "Multi-echo Spin Echo",
        "FlipAngle": 90,
        "MRAcquisitionType": "2D",
        "SequenceName": "mese",
    }
    tes = proto.mese_echo_times_s
    mese = _spin_echo(table, proto.mese_tr_s, np.array(tes))
    collection("MESE", "echo", "EchoTime", tes, mese, mese_sidecar)

    # optional series: inversion recovery and multi-echo gradient echo (reference grid)
    if "IRT1" in extra_series:
        ir_sidecar = {
            "RepetitionTime": proto.irt1_tr_s,
            "EchoTime": 0.012,
            "FlipAngle": 90,
            "ScanningSequence": ["IR", "SE"],
            "SequenceVariant": "NONE",
            "PulseSequenceType": "Inversion Recovery Spin Echo (magnitude)",
            "MRAcquisitionType": "2D",
            "SequenceName": "irse",
        }
        tis = proto.irt1_inversion_times_s
        ir = _inversion_recovery(table, proto.irt1_tr_s, np.array(tis))
        collection("IRT1", "inv", "InversionTime", tis, ir, ir_sidecar)
    if "MEGRE" in extra_series:
        gre_sidecar = {
            "RepetitionTime": proto.megre_tr_s,
            "FlipAngle": 90,
            "ScanningSequence": "GR",
            "SequenceVariant": "SP",
            "PulseSequenceType": "Multi-echo Gradient Echo",
            "MRAcquisitionType": "2D",
            "SequenceName": "megre",
        }
        tes = proto.megre_echo_times_s
        gre = _gradient_echo(table, proto.megre_tr_s, np.array(tes))
        collection("MEGRE", "echo", "EchoTime", tes, gre, gre_sidecar)

    # DWI
    dwi = _dwi_curves(table, proto)[tissue_c]
    dwi_path = sdir / "dwi" / f"{stem}_dwi.nii.gz"
    save_nifti(
        noisy("dwi", dwi),
        coarse.affine,
        dwi_path,
        dtype=np.int16,
        sidecar={
            **common,
            "EchoTime": proto.dwi_te_s,
            "RepetitionTime": proto.dwi_tr_s,
            "PhaseEncodingDirection": "j",
            "TotalReadoutTime": 0.05,
            "FlipAngle": 90,
            "ScanningSequence": "EP",
            "SequenceVariant": "SK",
            "SequenceName": "ep_b",
            "PulseSequenceType": "Diffusion-weighted spin-echo EPI, fat-suppressed",
            "MRAcquisitionType": "2D",
        },
    )
    bvals = proto.dwi_bvals_all
    _write_text(" ".join(f"{b:g}" for b in bvals) + "\n", dwi_path.with_name(f"{stem}_dwi.bval"))
    bvecs = proto.dwi_bvecs_all.T
    _write_text(
        "\n".join(" ".join(f"{v:g}" for v in row) for row in bvecs) + "\n",
        dwi_path.with_name(f"{stem}_dwi.bvec"),
    )

    # DCE
    dce = _spgr(
        col["PD"][tissue_c][..., None],
        _dce_t1_curves(table, proto)[tissue_c],
        np.deg2rad(proto.dce_flip_angle_deg) * b1_c[..., None],
        proto.dce_tr_s,
    )
    save_nifti(
        noisy("dce", dce),
        coarse.affine,
        sdir / "perf" / f"{stem}_dce.nii.gz",
        dtype=np.int16,
        sidecar={
            **common,
            "FlipAngle": proto.dce_flip_angle_deg,
            "RepetitionTimeExcitation": proto.dce_tr_s,
            "EchoTime": proto.dce_te_s,
            "RepetitionTime": proto.dce_frame_interval_s,
            "VolumeTiming": proto.dce_times_s.tolist(),
            "BaselineFrames": proto.dce_baseline_frames,
            "ContrastBolusIngredient": "GADOLINIUM",
            "ContrastAgent": proto.contrast_agent,
            "PulseSequenceType": "SPGR",
            "MRAcquisitionType": "3D",
            "SequenceName": "spgr_dce",
        },
    )

    _write_truth(root / "derivatives" / "truth", subj, ses, ref, tissue, labels, b1, table)
    if "MEGRE" in extra_series:
        save_nifti(
            t2star_table(table)[tissue],
            ref.affine,
            root / "derivatives" / "truth" / f"sub-{subj.label}" / f"ses-{ses}" / "anat"
            / f"{stem}_desc-truth_T2starmap.nii.gz",
            dtype=np.float32,
            sidecar={"Units": "s", "Description": "True T2* (0 in air)"},
        )  # fmt: skip
    return labels


def _scanner_metadata(proto: PhantomProtocol) -> dict[str, Any]:
    """Sidecar keys shared by every series of the (simulated) scanner."""
    return {
        "MagneticFieldStrength": proto.field_strength_t,
        "Manufacturer": "qmri",
        "ManufacturersModelName": "digital reference object (qmri.phantom)",
        "SoftwareVersions": __version__,
        "DeviceSerialNumber": "qmri-phantom",
        "StationName": "qmri-phantom",
        "PulseSequenceDetails": "analytic signal equations, see qmri.phantom",
        "NonlinearGradientCorrection": False,
    }


def _write_dseg(data: np.ndarray, affine: np.ndarray, names: Mapping[int, str], path: Path):
    save_nifti(data, affine, path, dtype=np.int16)
    rows = [(index, name) for index, name in sorted(names.items())]
    _write_tsv(rows, ("index", "name"), path.with_name(path.name.replace(".nii.gz", ".tsv")))


def _write_truth(
    truth: Path,
    subj: _Subject,
    ses: str,
    ref: _Grid,
    tissue: np.ndarray,
    labels: np.ndarray,
    b1: np.ndarray,
    table: np.ndarray,
) -> None:
    """Write the truth maps, tissue and label maps, B1 and motion of one session."""
    stem = f"sub-{subj.label}_ses-{ses}"
    sdir = truth / f"sub-{subj.label}" / f"ses-{ses}"
    for suffix, (param, units, desc) in TRUTH_MAPS.items():
        values = table[:, PARAMETERS.index(param)][tissue]
        save_nifti(
            values,
            ref.affine,
            sdir / "anat" / f"{stem}_desc-truth_{suffix}.nii.gz",
            dtype=np.float32,
            sidecar={"Units": units, "Description": f"True {desc} (0 in air)"},
        )
    tissue_names = {TISSUE_INDEX[t.name]: t.name for t in TISSUES}
    _write_dseg(
        tissue, ref.affine, tissue_names, sdir / "anat" / f"{stem}_desc-tissue_dseg.nii.gz"
    )
    _write_dseg(
        labels,
        ref.affine,
        label_names(subj.levels),
        sdir / "anat" / f"{stem}_desc-truth_dseg.nii.gz",
    )
    save_nifti(
        100.0 * b1,
        ref.affine,
        sdir / "fmap" / f"{stem}_desc-truth_TB1map.nii.gz",
        dtype=np.float32,
        sidecar={"Units": "percent", "Description": "True B1 (actual/nominal flip angle x 100)"},
    )
    write_json(subj.motions[ses].as_dict(), sdir / f"{stem}_desc-truth_motion.json")


def _write_top_level(root: Path, subjects: Sequence[_Subject], *, seed: int, small: bool):
    mode = "small" if small else "full size"
    write_json(
        _dataset_description("qmri spine phantom", derivative=False),
        root / "dataset_description.json",
    )
    _write_text(_README.format(mode=mode, seed=seed), root / "README")
    _write_text("perf/*_dce.*\n**/perf/*_dce.*\n", root / ".bidsignore")
    rows = [
        (f"sub-{s.label}", s.levels[s.treated], s.age, s.sex, s.dose_gy, s.fractions)
        for s in subjects
    ]
    columns = ("participant_id", "treated_levels", "age", "sex", "dose_gy", "fractions")
    _write_tsv(rows, columns, root / "participants.tsv")
    write_json(_PARTICIPANTS_JSON, root / "participants.json")
    write_json(_SESSIONS_JSON, root / "sessions.json")


def _write_truth_top_level(
    truth: Path,
    subjects: Sequence[_Subject],
    grids: Mapping[str, tuple[_Grid, _Grid]],
    sessions: Sequence[str],
    *,
    seed: int,
    small: bool,
) -> None:
    proto = PHANTOM_PROTOCOL
    write_json(
        _dataset_description("qmri spine phantom: ground truth", derivative=True),
        truth / "dataset_description.json",
    )
    _write_text(_TRUTH_BIDSIGNORE, truth / ".bidsignore")
    kinds = session_kinds(sessions)
    rows = []
    for ses, kind in kinds.items():
        for name, tissue in tissue_parameters(kind).items():
            rows.append((ses, kind, name, *(getattr(tissue, p) for p in PARAMETERS)))
    _write_tsv(
        rows, ("session", "session_kind", "tissue", *PARAMETERS), truth / "tissue_parameters.tsv"
    )
    t = proto.dce_times_s
    cb = parker_aif(t, proto.dce_bolus_arrival_s)
    aif_rows = [
        (float(a), float(b / (1 - proto.hematocrit)), float(b)) for a, b in zip(t, cb, strict=True)
    ]
    _write_tsv(aif_rows, ("time", "cp", "cb"), truth / "aif.tsv")
    protocol = {
        "protocol": proto.as_dict(),
        "parker_aif": PARKER_AIF,
        "parker_aif_definition": (
            "Cb(t) [mM] = sum_n A_n/(sigma_n sqrt(2 pi)) exp(-(tm-T_n)^2/(2 sigma_n^2)) "
            "+ alpha exp(-beta tm)/(1+exp(-s (tm-tau))), tm = (t - bolus_arrival_s)/60 min, "
            "0 for tm < 0; Cp = Cb/(1-hematocrit)"
        ),
        "r1_per_mM_s": proto.r1_per_mM_s,
        "hematocrit": proto.hematocrit,
        "contrast_agent": proto.contrast_agent,
        "magnetic_field_strength_t": proto.field_strength_t,
        "stored_scale": {s: _scale(s, proto) for s in proto.noise_sigma},
        "stored_scale_note": (
            "stored int16 value = round(|S + noise| * stored_scale[series]), S in PD units; "
            "the stored noise sigma is noise_sigma_stored"
        ),
        "geometry_mm": dataclasses.asdict(GEOMETRY),
        "parameter_units": PARAMETER_UNITS,
        "session_kinds": kinds,
        "seed": seed,
        "small": small,
        "subjects": {
            f"sub-{s.label}": {
                "levels": list(s.levels),
                "treated_level": s.levels[s.treated],
                "treated_body_centre_mm": s.centre.tolist(),
                "reference_grid": {
                    "shape": list(grids[s.label][0].shape),
                    "affine": grids[s.label][0].affine.tolist(),
                },
                "coarse_grid": {
                    "shape": list(grids[s.label][1].shape),
                    "affine": grids[s.label][1].affine.tolist(),
                },
                "b1_polynomial": s.b1_coeffs.tolist(),
            }
            for s in subjects
        },
    }
    write_json(protocol, truth / "protocol.json")


def _check_arguments(n_subjects: int, sessions: Sequence[str], seed: int) -> None:
    if isinstance(n_subjects, bool) or not isinstance(n_subjects, int) or n_subjects < 1:
        raise QMRIInputError(f"n_subjects must be a positive integer, got {n_subjects!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise QMRIInputError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(sessions, str):
        raise QMRIInputError("sessions must be a sequence of session labels, not a string")
    bad = [s for s in sessions if not re.fullmatch(r"[A-Za-z0-9]+", str(s))]
    if bad:
        raise QMRIInputError(f"session labels must be alphanumeric (BIDS), got {bad}")
    if len(set(sessions)) != len(sessions):
        raise QMRIInputError(f"session labels must be unique, got {list(sessions)}")
    session_kinds(sessions)


def write_phantom_dataset(
    outdir: str | Path,
    *,
    n_subjects: int = 2,
    sessions: Sequence[str] = ("pre", "fu1", "fu2"),
    seed: int = 0,
    small: bool = False,
    extra_series: Sequence[str] = (),
) -> Path:
    """Write the spine phantom as a BIDS dataset with labels and ground truth.

    Parameters
    ----------
    outdir : str or Path
        Dataset root; created if needed (existing phantom files are overwritten).
    n_subjects : int, default 2
        Number of subjects (``sub-01``, ``sub-02``, ...); subject ``i`` uses the level set
        ``LEVEL_SETS[i % 4]`` with the middle level treated.
    sessions : sequence of str, default ("pre", "fu1", "fu2")
        Session labels (1 to 3, alphanumeric); the first is the baseline, the others are the
        follow-ups ``fu1`` and ``fu2`` in that order (:func:`session_kinds`).
    seed : int, default 0
        Seed of the noise, motion, B1 field, clinical columns and session days; the same seed
        gives identical files.
    small : bool, default False
        Coarse grid (6 x 5 x 5 mm for every series, about 0.5 MB per subject and session) for
        fast tests, with the same anatomy, protocol, layout and files.
    extra_series : sequence of {"IRT1", "MEGRE"}, default ()
        Optional series added to every session on the reference grid: magnitude inversion
        recovery (``inv-<i>_IRT1``, 6 inversion times, TR 6 s) and multi-echo gradient echo
        (``echo-<i>_MEGRE``, 6 echoes 3-18 ms; truth ``desc-truth_T2starmap`` from
        :data:`R2_PRIME_PER_S`). Without them the dataset is unchanged.

    Returns
    -------
    Path
        The dataset root.

    Raises
    ------
    QMRIInputError
        For invalid arguments.
    """
    _check_arguments(n_subjects, sessions, seed)
    unknown = sorted(set(extra_series) - set(EXTRA_SERIES))
    if unknown:
        raise QMRIInputError(
            f"unknown extra series {unknown}; the phantom can add {', '.join(EXTRA_SERIES)}"
        )
    sessions = tuple(str(s) for s in sessions)
    root = Path(outdir)
    root.mkdir(parents=True, exist_ok=True)
    proto = PHANTOM_PROTOCOL
    voxel = np.array(proto.voxel_mm_small if small else proto.voxel_mm)
    coarse = proto.coarse_factor_small if small else proto.coarse_factor
    kinds = session_kinds(sessions)
    subjects = [_make_subject(i, sessions, int(seed)) for i in range(n_subjects)]
    grids: dict[str, tuple[_Grid, _Grid]] = {}
    for i, subj in enumerate(subjects):
        grid_pair = (
            _make_grid(subj.centre, voxel),
            _make_grid(subj.centre, voxel * coarse),
        )
        grids[subj.label] = grid_pair
        _write_tsv(
            [(f"ses-{ses}", subj.days[ses]) for ses in sessions],
            ("session_id", "days_from_sbrt"),
            root / f"sub-{subj.label}" / f"sub-{subj.label}_sessions.tsv",
        )
        for j, ses in enumerate(sessions):
            labels = _write_session(
                root, subj, i, j, ses, kinds[ses], grid_pair, int(seed), extra_series
            )
            if j == 0:
                path = (
                    root
                    / "derivatives"
                    / "labels"
                    / f"sub-{subj.label}"
                    / f"ses-{ses}"
                    / "anat"
                    / f"sub-{subj.label}_ses-{ses}_dseg.nii.gz"
                )
                _write_dseg(labels, grid_pair[0].affine, label_names(subj.levels), path)
    write_json(
        _dataset_description("qmri spine phantom: ROI labels", derivative=True),
        root / "derivatives" / "labels" / "dataset_description.json",
    )
    _write_top_level(root, subjects, seed=int(seed), small=small)
    _write_truth_top_level(
        root / "derivatives" / "truth", subjects, grids, sessions, seed=int(seed), small=small
    )
    return root


# ---------------------------------------------------------------------------------------------
# Planned dose (optional input of the dose analysis)
# ---------------------------------------------------------------------------------------------

#: Distance (mm) over which the phantom's dose falls by a factor e outside the CTV.
DOSE_FALLOFF_MM = 8.0


def write_phantom_dose(
    bids_dir: str | Path,
    dose_dir: str | Path | None = None,
    *,
    falloff_mm: float = DOSE_FALLOFF_MM,
) -> Path:
    """Write a planned-dose map for every subject of a phantom dataset (the dose truth).

    The dose is the prescription ``dose_gy`` of participants.tsv, uniform in the subject's CTV
    (derived from the baseline labels as the data contract defines it), and falls off outside
    as ``dose_gy * exp(-d / falloff_mm)`` with ``d`` the Euclidean distance (mm) to the nearest
    CTV voxel centre; at the default 8 mm the cord of the treated level gets about half the
    prescription, the vertebral bodies two levels away a few percent. Written on the baseline
    reference grid (the labels' grid) as ``<dose_dir>/sub-<s>/sub-<s>_dose.nii.gz`` (float32,
    Gy, JSON sidecar), the layout the workflow's ``dose_dir`` expects.

    Parameters
    ----------
    bids_dir : str or Path
        A dataset written by :func:`write_phantom_dataset` (or any dataset with the same
        layout, ``treated_levels`` and ``dose_gy`` columns).
    dose_dir : str or Path, optional
        Where to write; default ``<bids_dir>/derivatives/dose``.
    falloff_mm : float, default :data:`DOSE_FALLOFF_MM`
        e-folding distance of the dose outside the CTV (mm).

    Returns
    -------
    Path
        The dose folder.
    """
    from scipy import ndimage

    from qmri import labels as labels_mod
    from qmri import rois as rois_mod
    from qmri import tables

    bids_dir = Path(bids_dir)
    dose_dir = bids_dir / "derivatives" / "dose" if dose_dir is None else Path(dose_dir)
    participants = tables.read_participants_tsv(bids_dir / "participants.tsv")
    for _, row in participants.iterrows():
        label = tables.subject_label(row["participant_id"])
        days = tables.read_sessions_tsv(bids_dir / f"sub-{label}" / f"sub-{label}_sessions.tsv")
        base = tables.baseline_session(days)
        anat = bids_dir / "derivatives" / "labels" / f"sub-{label}" / f"ses-{base}" / "anat"
        dseg = anat / f"sub-{label}_ses-{base}_dseg.nii.gz"
        img = nib.load(dseg)
        table = labels_mod.read_dseg_tsv(anat / f"sub-{label}_ses-{base}_dseg.tsv")
        data = np.asarray(img.dataobj).astype(int)
        ctv = rois_mod.derive_rois(data, table, list(row["treated_levels"]))["ctv"]
        zooms = np.linalg.norm(img.affine[:3, :3], axis=0)
        distance = ndimage.distance_transform_edt(~ctv, sampling=zooms)
        prescription = float(row["dose_gy"])
        fractions = row.get("fractions")
        fractions = int(fractions) if fractions is not None and np.isfinite(fractions) else None
        dose = prescription * np.exp(-distance / float(falloff_mm))
        save_nifti(
            dose,
            img.affine,
            dose_dir / f"sub-{label}" / f"sub-{label}_dose.nii.gz",
            dtype=np.float32,
            sidecar={
                "Units": "Gy",
                "Description": (
                    f"Phantom planned dose: {prescription:g} Gy uniform in the CTV, "
                    f"exp(-distance / {float(falloff_mm):g} mm) outside"
                ),
                "PrescriptionDose": prescription,
                "Fractions": fractions,
            },
        )
    return dose_dir
