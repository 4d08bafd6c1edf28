"""Digital reference object (phantom) of the thoraco-lumbar spine, written as a BIDS dataset.

:func:`write_phantom_dataset` writes a deterministic (for a given seed) raw BIDS dataset in the
layout of the data contract (section 1), the ROI labels as a BIDS derivative (section 2) and the
ground truth beside them (``derivatives/truth``). Every model, registration step and table of
qmri is validated against it, so the phantom uses none of that code: its protocol has its own
contrast-agent relaxivity and its planned dose its own CTV (:func:`write_phantom_dose`).

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
  ``R1(t) = 1/T1 + r1 C(t)`` with r1 = 4.1 /mM/s (gadoteridol at 1.5 T, human plasma at 37 C;
  Rohrer et al. Invest Radiol 2005;40:715-724, Table 3).
- Optional series (``extra_series``, on the reference grid, not in the committed sample):
  ``IRT1``, magnitude inversion recovery spin echo, TI 0.05, 0.15, 0.35, 0.7, 1.4, 3.0 s,
  TR 6 s, ``S = |PD (1 - 2 exp(-TI/T1) + exp(-TR/T1))|``; ``MEGRE``, multi-echo gradient echo
  (90 deg, TR 1 s), 6 echoes at 3..18 ms, ``S = PD (1 - exp(-TR/T1)) exp(-TE/T2*)`` with
  ``1/T2* = 1/T2 + R2'`` (:data:`R2_PRIME_PER_S`: marrow T2* 14 ms, tumour 32 ms).
- Full size: DWI and DCE on a coarser grid (1.5 x the reference voxel size, same FOV), the
  other series on the reference grid: 3.0 x 2.5 x 2.5 mm (x, y, z; 29 x 46 x 64 voxels,
  DWI/DCE 4.5 x 3.75 x 3.75 mm, 20 x 31 x 43), FOV 88 x 116 x 160 mm; ``small=True``:
  6 x 5 x 5 mm (15 x 23 x 32) for every series, DWI and DCE included (a coarser DWI grid would
  lose the cord). Image axes are x, y, z (diagonal affine).
  The B1 map is stored as int16 with NIfTI scaling (0.1 percent steps).
- Every magnitude series has Rician noise ``|S + n1 + i n2|``, ``n1, n2 ~ N(0, sigma^2)``, with
  sigma (in PD units: T2w 0.005, VFA 0.0007, MESE 0.002, dwi 0.004, dce 0.0006; IRT1 0.003,
  MEGRE 0.002) chosen for realistic SNR: marrow ~58 in the T2w, ~96 at 20 deg VFA, ~163 at the
  last echo, ~32 at b = 800, ~64 in the DCE baseline; tumour ~54 at 20 deg VFA, ~41 at
  b = 800, ~35 in the DCE baseline; muscle ~33 at the last echo. Magnitudes are stored as int16 with a per-series scale
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
``sessions.json`` (column descriptions), ``.bidsignore`` (``perf/*_dce.*`` at any depth),
``sub-<s>/sub-<s>_sessions.tsv`` (``session_id`` as ``ses-<label>``, ``days_from_sbrt``) and per
session ``anat/*_T2w``, ``anat/*_flip-<i>_VFA``, ``anat/*_echo-<i>_MESE``, ``fmap/*_TB1map``,
``dwi/*_dwi`` (+ ``.bval``, ``.bvec``; b = 0 vector ``0 0 0``), ``perf/*_dce`` and, on
request, ``anat/*_inv-<i>_IRT1`` and ``anat/*_echo-<i>_MEGRE``.

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
``fmap/*_desc-truth_TB1map`` (noiseless B1, percent) and ``*_desc-truth_motion.json``
(with MEGRE also ``anat/*_desc-truth_T2starmap``, s).
:func:`anatomy_on_grid` evaluates the same tissue and label maps on any grid (e.g. the DWI/DCE
grid), as seen in any session.

Planned dose
------------
:func:`write_phantom_dose` writes, for a phantom dataset, ``derivatives/dose/sub-<s>/
sub-<s>_dose.nii.gz`` (float32, Gy) on the baseline labels' grid: the prescription
``dose_gy`` of participants.tsv in the CTV, ``dose_gy exp(-d / 8 mm)`` at distance ``d`` from
it. The CTV is the data contract's (section 2): the GTV, the whole vertebral body of the
treated level and every posterior-element sector (``pel``, ``per``, ``pe``) the GTV touches,
computed from the phantom's own label indices (:func:`label_names`); the tumour touches the
left pedicle (``pel``) only.

Modules
-------
``tissues`` (tissue table, follow-up changes, session kinds), ``protocol`` (acquisition
protocol, AIF parameters, r1), ``anatomy`` (geometry, levels, labels, grids, motion),
``signals`` (signal equations, B1 field, AIF, noise), ``subjects`` (per-subject random draws),
``series`` (the raw series of a session), ``bids_files`` (TSV, label map and B1 file formats),
``bids_writer`` (:func:`write_phantom_dataset`: layout, labels and truth derivatives),
``dose`` (:func:`write_phantom_dose`).
"""

from qmri.phantom.anatomy import (
    GEOMETRY,
    LEVEL_SETS,
    Geometry,
    anatomy_on_grid,
    label_names,
    rotation_matrix,
    subject_layout,
)
from qmri.phantom.bids_writer import TRUTH_MAPS, write_phantom_dataset
from qmri.phantom.dose import DOSE_FALLOFF_MM, write_phantom_dose
from qmri.phantom.protocol import (
    EXTRA_SERIES,
    PARKER_AIF,
    PHANTOM_PROTOCOL,
    R1_RELAXIVITY,
    PhantomProtocol,
)
from qmri.phantom.signals import parker_aif, t2star_table
from qmri.phantom.tissues import (
    FOLLOW_UP_CHANGES,
    HEMATOCRIT,
    PARAMETER_UNITS,
    PARAMETERS,
    R2_PRIME_PER_S,
    SESSION_KINDS,
    TISSUE_INDEX,
    TISSUES,
    Tissue,
    session_kinds,
    tissue_parameters,
)

__all__ = [
    "DOSE_FALLOFF_MM",
    "EXTRA_SERIES",
    "FOLLOW_UP_CHANGES",
    "GEOMETRY",
    "HEMATOCRIT",
    "LEVEL_SETS",
    "PARAMETERS",
    "PARAMETER_UNITS",
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
