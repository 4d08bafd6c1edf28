r"""Spoiled gradient-echo DCE signal to contrast-agent concentration, and the relaxivity table.

* :func:`relaxivity` -- r1 (1/(mM s)) by contrast agent and field strength (Rohrer et al. 2005).
* :func:`signal_to_concentration` -- SPGR signal to tissue concentration (mM) with the
  pre-contrast T1 map, an optional B1 map and the baseline frames
  (:class:`ConcentrationResult`).

Concentration model (fast exchange, linear relaxivity):
:math:`R_1(t) = R_{10} + r_1 C(t)`, so :math:`C(t) = (R_1(t) - R_{10}) / r_1`. Vectorized over
voxels (in chunks, no Python loop over voxels); frames on the last axis.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from qmri.errors import QMRIInputError
from qmri.models.base import _spatial_array
from qmri.models.dce.timing import check_baseline_frames

__all__ = [
    "RELAXIVITY_TABLE",
    "ConcentrationResult",
    "canonical_agent",
    "relaxivity",
    "signal_to_concentration",
]

#: T1 relaxivity r1 in L/(mmol s) = 1/(mM s), human plasma (bovine plasma for Rohrer) at 37 °C,
#: keyed by (agent, field strength in T). Source: Rohrer M, Bauer H, Mintorovitch J, Requardt M,
#: Weinmann HJ. Comparison of magnetic properties of MRI contrast media solutions at different
#: magnetic field strengths. Invest Radiol 2005;40:715-724. doi:10.1097/01.rli.0000184756.66360.d3
#: (Table 3, plasma, 37 °C).
RELAXIVITY_TABLE: dict[tuple[str, float], float] = {
    ("gadopentetate", 1.5): 4.1,
    ("gadopentetate", 3.0): 3.7,
    ("gadobenate", 1.5): 6.3,
    ("gadobenate", 3.0): 5.5,
    ("gadoterate", 1.5): 3.6,
    ("gadoterate", 3.0): 3.5,
    ("gadoteridol", 1.5): 4.1,
    ("gadoteridol", 3.0): 3.7,
    ("gadobutrol", 1.5): 5.2,
    ("gadobutrol", 3.0): 5.0,
    ("gadodiamide", 1.5): 4.3,
    ("gadodiamide", 3.0): 4.0,
    ("gadoxetate", 1.5): 6.9,
    ("gadoxetate", 3.0): 6.2,
}
_RELAXIVITY_SOURCE = (
    "Rohrer M et al. Invest Radiol 2005;40:715-724 (Table 3, plasma, 37 degC), "
    "doi:10.1097/01.rli.0000184756.66360.d3"
)
#: Trade names and chemical abbreviations accepted for each agent.
_AGENT_ALIASES = {
    "gadopentetate": ("gd-dtpa", "magnevist", "gadopentetate dimeglumine", "gadopentetic acid"),
    "gadobenate": ("gd-bopta", "multihance", "gadobenate dimeglumine", "gadobenic acid"),
    "gadoterate": ("gd-dota", "dotarem", "clariscan", "gadoterate meglumine", "gadoteric acid"),
    "gadoteridol": ("gd-hp-do3a", "prohance"),
    "gadobutrol": ("gd-bt-do3a", "gadovist", "gadavist"),
    "gadodiamide": ("gd-dtpa-bma", "omniscan"),
    "gadoxetate": ("gd-eob-dtpa", "primovist", "eovist", "gadoxetic acid", "gadoxetate disodium"),
}
#: A field strength within this distance (T) of a table entry uses that entry (2.89 T -> 3 T).
_FIELD_TOLERANCE_T = 0.25


# --------------------------------------------------------------------------------------------
# relaxivity
# --------------------------------------------------------------------------------------------


def canonical_agent(agent: str) -> str | None:
    """The generic name of a gadolinium agent given by any alias (trade name, abbreviation,
    case and separators ignored), or None for a name the relaxivity table does not know."""
    name = " ".join(str(agent).strip().lower().replace("_", " ").split())
    for canonical, aliases in _AGENT_ALIASES.items():
        if name == canonical or name in aliases:
            return canonical
    return None


def relaxivity(agent: str | None, field_strength_t: float | None) -> tuple[float, str]:
    """T1 relaxivity of a gadolinium contrast agent in plasma at 37 °C.

    Parameters
    ----------
    agent : str
        Generic name (``"gadoteridol"``, ``"gadobutrol"``, ``"gadoterate"``, ``"gadobenate"``,
        ``"gadopentetate"``, ``"gadodiamide"``, ``"gadoxetate"``), a trade name (``"ProHance"``)
        or abbreviation (``"Gd-HP-DO3A"``); case-insensitive.
    field_strength_t : float
        Main field (T); 1.5 or 3 (within 0.25 T, so 2.89 T counts as 3 T).

    Returns
    -------
    r1 : float
        Relaxivity in 1/(mM s).
    source : str
        Citation of the value (for the output sidecar).

    Raises
    ------
    QMRIInputError
        Unknown agent or field strength (the message lists what is known).

    Examples
    --------
    >>> relaxivity("ProHance", 2.89)[0]
    3.7
    """
    known = sorted({a for a, _ in RELAXIVITY_TABLE})
    canonical = None if agent is None else canonical_agent(agent)
    if canonical is None:
        raise QMRIInputError(
            f"unknown contrast agent {agent!r} and no r1 given; known agents: {', '.join(known)} "
            "(or give r1 in 1/(mM s))"
        )
    fields = sorted(f for a, f in RELAXIVITY_TABLE if a == canonical)
    try:
        b0 = float(field_strength_t)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        b0 = float("nan")
    near = [f for f in fields if abs(f - b0) <= _FIELD_TOLERANCE_T]
    if not near:
        raise QMRIInputError(
            f"no tabulated r1 for {canonical} at field strength {field_strength_t!r} T; known: "
            f"{', '.join(f'{f:g} T' for f in fields)} (or give r1 in 1/(mM s))"
        )
    return RELAXIVITY_TABLE[
        (canonical, near[0])
    ], f"{canonical} at {near[0]:g} T: {_RELAXIVITY_SOURCE}"


# --------------------------------------------------------------------------------------------
# signal to concentration
# --------------------------------------------------------------------------------------------


class ConcentrationResult(NamedTuple):
    """Result of :func:`signal_to_concentration`.

    Attributes
    ----------
    concentration : ndarray, shape (..., n_frames)
        Tissue concentration (mM); NaN where the signal cannot be inverted or outside the mask.
    n_uninvertible : int
        Frames (voxel x frame) whose signal could not be inverted (set to NaN).
    options : dict
        Conversion settings for the output sidecar (r1 and its source, flip angle, TR, baseline
        frames and convention, B1 correction).
    """

    concentration: np.ndarray
    n_uninvertible: int
    options: dict[str, Any]


def signal_to_concentration(
    signal: ArrayLike,
    t10_s: ArrayLike,
    flip_angle_deg: float,
    tr_s: float,
    *,
    baseline_frames: int,
    r1: float | None = None,
    agent: str | None = None,
    field_strength_t: float | None = None,
    skip_first_frame: bool = False,
    b1: ArrayLike | None = None,
    mask: ArrayLike | None = None,
    chunk_size: int = 100_000,
) -> ConcentrationResult:
    r"""Convert spoiled gradient-echo DCE signal to contrast-agent concentration.

    For every voxel the pre-contrast signal :math:`S_0` is the mean of the baseline frames, the
    equilibrium magnetisation follows from the SPGR equation with the pre-contrast
    :math:`T_{10}`,

    .. math:: M_0 = S_0 \, \frac{1 - E_{10} \cos\alpha}{\sin\alpha\,(1 - E_{10})},
              \qquad E_{10} = e^{-TR/T_{10}},

    every frame is inverted exactly, with :math:`q = S/(M_0 \sin\alpha)`,

    .. math:: E_1(t) = \frac{1 - q}{1 - q\cos\alpha}, \qquad R_1(t) = -\ln E_1(t) / TR,

    and :math:`C(t) = (R_1(t) - 1/T_{10}) / r_1`. A frame whose signal is not in
    :math:`(0, M_0\sin\alpha)` (the SPGR range for :math:`0 < R_1 < \infty`) cannot be inverted and
    gives NaN. The flip angle is :math:`b_1 \alpha` with a B1 map.

    Parameters
    ----------
    signal : array_like, shape (..., n_frames)
        DCE magnitude images, frames on the last axis.
    t10_s : array_like, shape signal.shape[:-1]
        Pre-contrast T1 map (s).
    flip_angle_deg : float
        Nominal flip angle (degrees).
    tr_s : float
        Repetition time (s).
    baseline_frames : int
        Number of pre-contrast frames at the start of the series (``n``).
    r1 : float, optional
        Relaxivity (1/(mM s)). Default: looked up with :func:`relaxivity` from ``agent`` and
        ``field_strength_t``.
    agent : str, optional
        Contrast agent (needed when ``r1`` is not given).
    field_strength_t : float, optional
        Field strength (T) (needed when ``r1`` is not given).
    skip_first_frame : bool, default False
        Average ``signal[..., 1:n]`` instead of ``signal[..., 0:n]`` for the baseline (the OSIPI
        convention: the first frame is often not at steady state). Then ``n >= 2`` is needed.
    b1 : array_like, shape signal.shape[:-1], optional
        Actual/nominal flip-angle ratio (1 = nominal).
    mask : array_like, shape signal.shape[:-1], optional
        Voxels to convert (non-zero); NaN elsewhere.
    chunk_size : int, default 100000
        Voxels converted together (bounds temporary memory only).

    Returns
    -------
    ConcentrationResult
        ``concentration`` is float32 for float32 / integer input of 4 bytes or less, else
        float64.

    Raises
    ------
    QMRIInputError
        T1 / B1 / mask shape differs from the data's spatial shape, bad baseline frames, unknown
        agent without r1, non-positive flip angle, TR or r1.

    References
    ----------
    Tofts PS. Modeling tracer kinetics in dynamic Gd-DTPA MR imaging. J Magn Reson Imaging
    1997;7:91-101. doi:10.1002/jmri.1880070113
    """
    data = np.asarray(signal)
    if data.ndim < 1 or not np.issubdtype(data.dtype, np.number) or np.iscomplexobj(data):
        raise QMRIInputError("DCE signal must be a real array with frames on the last axis")
    spatial = data.shape[:-1]
    n_frames = data.shape[-1]
    n_base = check_baseline_frames(baseline_frames, n_frames, skip_first_frame)
    t10 = _spatial_array(t10_s, spatial, "T1 map")
    b1_arr = None if b1 is None else _spatial_array(b1, spatial, "B1 map")
    try:
        fa = float(flip_angle_deg)
        tr = float(tr_s)
    except (TypeError, ValueError):
        raise QMRIInputError("flip angle (deg) and TR (s) must be numbers") from None
    if not (0 < fa < 180):
        raise QMRIInputError(f"flip angle must be in (0, 180) degrees, got {flip_angle_deg}")
    if not (0 < tr <= 1.0):
        raise QMRIInputError(f"TR must be in (0, 1] s (give seconds, not ms), got {tr_s}")
    if r1 is None:
        r1_value, r1_source = relaxivity(agent, field_strength_t)
    else:
        try:
            r1_value = float(r1)
        except (TypeError, ValueError):
            raise QMRIInputError(f"r1 must be a number in 1/(mM s), got {r1!r}") from None
        if not (np.isfinite(r1_value) and r1_value > 0):
            raise QMRIInputError(f"r1 must be positive (1/(mM s)), got {r1}")
        r1_source = "given by the user"
    out_dtype = np.float32 if data.dtype.itemsize <= 4 else np.float64
    flat = data.reshape(-1, n_frames)
    t10_flat = t10.reshape(-1)
    b1_flat = None if b1_arr is None else b1_arr.reshape(-1)
    out = np.full(flat.shape, np.nan, dtype=out_dtype)
    if mask is None:
        voxels = np.arange(flat.shape[0])
    else:
        m = _spatial_array(mask, spatial, "mask").reshape(-1).astype(np.float64)
        voxels = np.flatnonzero((m != 0) & ~np.isnan(m))
    alpha0 = np.deg2rad(fa)
    first = 1 if skip_first_frame else 0
    n_bad = 0
    for start in range(0, voxels.size, max(int(chunk_size), 1)):
        ids = voxels[start : start + chunk_size]
        s = flat[ids].astype(np.float64)
        t1 = t10_flat[ids].astype(np.float64)
        alpha = alpha0 if b1_flat is None else alpha0 * b1_flat[ids].astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            cos_a = np.cos(alpha)
            e10 = np.exp(-tr / t1)
            s_pre = s[:, first:n_base].mean(axis=1)
            m0_sin = s_pre * (1.0 - e10 * cos_a) / (1.0 - e10)  # M0 sin(alpha)
            q = s / m0_sin[:, None]
            cos_b = cos_a if b1_flat is None else cos_a[:, None]
            e1 = (1.0 - q) / (1.0 - q * cos_b)
            conc = (-np.log(e1) / tr - (1.0 / t1)[:, None]) / r1_value
            valid = (q > 0) & (q < 1) & (t1 > 0)[:, None] & np.isfinite(conc)
            if b1_flat is not None:
                valid &= ((alpha > 0) & (alpha < np.pi))[:, None]
        conc[~valid] = np.nan
        n_bad += int(valid.size - np.count_nonzero(valid))
        out[ids] = conc
    options = {
        "signal_model": "spoiled gradient echo, fast exchange, linear relaxivity",
        "flip_angle_deg": fa,
        "tr_s": tr,
        "r1_per_mM_per_s": r1_value,
        "r1_source": r1_source,
        "contrast_agent": agent,
        "field_strength_t": None if field_strength_t is None else float(field_strength_t),
        "baseline_frames": n_base,
        "baseline_skip_first_frame": bool(skip_first_frame),
        "b1_corrected": b1 is not None,
    }
    return ConcentrationResult(out.reshape(data.shape), n_bad, options)
