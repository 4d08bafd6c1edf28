r"""DCE-MRI preprocessing: signal to concentration, relaxivity, AIFs, bolus arrival, iAUC maps.

Everything here is vectorized over voxels (no Python loop over voxels); time runs along the last
axis of every 4-D array and frame times are in seconds.

* :func:`signal_to_concentration` -- spoiled gradient echo (SPGR) signal to tissue contrast-agent
  concentration (mM) with the pre-contrast T1 map, optional B1 map and baseline frames.
* :func:`relaxivity` -- r1 (1/(mM s)) by contrast agent and field strength (Rohrer et al. 2005).
* :func:`parker_aif`, :func:`aif_from_blood_curve`, :func:`read_aif_tsv` -- arterial input
  functions, as :class:`ArterialInputFunction` (plasma concentration at the frame times).
* :func:`detect_bolus_arrival` -- bolus arrival time from a mean enhancement curve.
* :func:`semiquantitative_maps` -- iAUC60, iAUC90, time to peak, maximum concentration and
  (with the signal) maximum relative signal enhancement.

Concentration model (fast exchange, linear relaxivity):
:math:`R_1(t) = R_{10} + r_1 C(t)`, so :math:`C(t) = (R_1(t) - R_{10}) / r_1`.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from qmri.errors import QMRIInputError

if TYPE_CHECKING:
    from qmri.models.base import ModelFit

__all__ = [
    "DEFAULT_HEMATOCRIT",
    "PARKER_FINE_DT_S",
    "PARKER_PARAMS",
    "RELAXIVITY_TABLE",
    "ArterialInputFunction",
    "ConcentrationResult",
    "aif_from_blood_curve",
    "check_frame_times",
    "detect_bolus_arrival",
    "fine_time_grid",
    "mean_curve",
    "parker_aif",
    "parker_blood_concentration",
    "read_aif_tsv",
    "relaxivity",
    "semiquantitative_maps",
    "signal_to_concentration",
]

#: Large-vessel hematocrit used to convert blood to plasma concentration by default.
DEFAULT_HEMATOCRIT = 0.42

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

#: Parker et al. (2006) Table 1 population-average parameters: A in mM min, sigma, T, tau in min,
#: alpha in mM, beta and s in 1/min.
PARKER_PARAMS: dict[str, float] = {
    "A1": 0.809,
    "sigma1": 0.0563,
    "T1": 0.17046,
    "A2": 0.330,
    "sigma2": 0.132,
    "T2": 0.365,
    "alpha": 1.050,
    "beta": 0.1685,
    "s": 38.078,
    "tau": 0.483,
}
#: Default largest step (s) of the fine grid on which the Parker AIF is convolved (see
#: :func:`parker_aif`): at 0.5 s the models match a 0.05 s reference to < 0.1 % (measured on the
#: phantom, 7 s frames), at a few ms per 20 000-voxel model evaluation.
PARKER_FINE_DT_S = 0.5
PARKER_REFERENCE = (
    "Parker GJM, Roberts C, Macdonald A, et al. Experimentally-derived functional form for a "
    "population-averaged high-temporal-resolution arterial input function for dynamic "
    "contrast-enhanced MRI. Magn Reson Med 2006;56:993-1000. doi:10.1002/mrm.21066"
)


# --------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------


def check_frame_times(times_s: ArrayLike, n_frames: int | None = None) -> NDArray[np.float64]:
    """Return frame times (s) as a read-only float64 vector after checking them.

    Parameters
    ----------
    times_s : array_like, shape (n_frames,)
        Acquisition time of every frame (s), strictly increasing.
    n_frames : int, optional
        Number of volumes in the data; the times must match it.

    Returns
    -------
    (n_frames,) ndarray of float64

    Raises
    ------
    QMRIInputError
        Not numbers, not finite, fewer than 2, not strictly increasing, or the wrong number.
    """
    try:
        t = np.array(times_s, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise QMRIInputError(f"frame times must be numbers in seconds, got {times_s!r}") from None
    if t.size < 2:
        raise QMRIInputError(f"DCE needs at least 2 frame times, got {t.size}")
    if not np.isfinite(t).all():
        raise QMRIInputError("frame times must be finite numbers (s)")
    if np.any(np.diff(t) <= 0):
        bad = int(np.flatnonzero(np.diff(t) <= 0)[0])
        raise QMRIInputError(
            f"frame times must be strictly increasing: frame {bad + 1} at {t[bad + 1]:g} s does "
            f"not follow frame {bad} at {t[bad]:g} s"
        )
    if n_frames is not None and t.size != n_frames:
        raise QMRIInputError(
            f"{t.size} frame times were given but the data has {n_frames} volumes"
        )
    t.flags.writeable = False
    return t


def _check_baseline_frames(baseline_frames: int, n_frames: int, skip_first_frame: bool) -> int:
    try:
        n = int(baseline_frames)
    except (TypeError, ValueError):
        raise QMRIInputError(
            f"baseline frames must be an integer, got {baseline_frames!r}"
        ) from None
    if n != baseline_frames:
        raise QMRIInputError(f"baseline frames must be an integer, got {baseline_frames!r}")
    low = 2 if skip_first_frame else 1
    if n < low or n >= n_frames:
        raise QMRIInputError(
            f"baseline frames must be between {low} and {n_frames - 1} (the data has {n_frames} "
            f"frames{'; the first is skipped' if skip_first_frame else ''}), got {n}"
        )
    return n


def _spatial(values: ArrayLike, shape: tuple[int, ...], name: str) -> NDArray[np.float64]:
    arr = np.asarray(values)
    if arr.shape != shape:
        raise QMRIInputError(
            f"{name} has shape {arr.shape} but the data's spatial shape is {shape}"
        )
    if arr.dtype == np.bool_:
        return arr
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise QMRIInputError(f"{name} must be real numbers, got dtype {arr.dtype}")
    return arr


# --------------------------------------------------------------------------------------------
# relaxivity
# --------------------------------------------------------------------------------------------


def _canonical_agent(agent: str) -> str | None:
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
    canonical = None if agent is None else _canonical_agent(agent)
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
    n_base = _check_baseline_frames(baseline_frames, n_frames, skip_first_frame)
    t10 = _spatial(t10_s, spatial, "T1 map")
    b1_arr = None if b1 is None else _spatial(b1, spatial, "B1 map")
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
        m = _spatial(mask, spatial, "mask").reshape(-1).astype(np.float64)
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


# --------------------------------------------------------------------------------------------
# arterial input functions
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArterialInputFunction:
    """Plasma concentration of the arterial input at the frame times (and optionally finer).

    Attributes
    ----------
    times_s : (n_frames,) ndarray
        Frame times (s).
    cp : (n_frames,) ndarray
        Plasma concentration (mM) at ``times_s``.
    kind : str
        ``"parker"``, ``"measured"`` (from a blood curve), ``"file"`` (a TSV) or ``"array"``.
    options : dict
        Provenance (AIF kind, parameters, hematocrit, delay, file) for the output sidecar.
    fine_times_s : (n_fine,) ndarray or None
        Optional fine time grid (s) of an analytic AIF: every frame interval split into equal
        steps (``times_s`` is a subset, first and last nodes are the first and last frames).
        The kinetic models then convolve the piecewise-linear interpolant of ``fine_cp`` (not of
        ``cp``) and sample the result at the frame times. None for measured AIFs.
    fine_cp : (n_fine,) ndarray or None
        Plasma concentration (mM) at ``fine_times_s`` (equal to ``cp`` at the frame times).
    """

    times_s: NDArray[np.float64]
    cp: NDArray[np.float64]
    kind: str
    options: dict[str, Any] = field(default_factory=dict)
    fine_times_s: NDArray[np.float64] | None = None
    fine_cp: NDArray[np.float64] | None = None

    def __post_init__(self) -> None:
        t = check_frame_times(self.times_s)
        cp = np.array(self.cp, dtype=np.float64).reshape(-1)
        if cp.shape != t.shape:
            raise QMRIInputError(f"AIF has {cp.size} samples but there are {t.size} frame times")
        if not np.isfinite(cp).all():
            raise QMRIInputError("AIF concentrations must be finite numbers (mM)")
        cp.flags.writeable = False
        object.__setattr__(self, "times_s", t)
        object.__setattr__(self, "cp", cp)
        if (self.fine_times_s is None) != (self.fine_cp is None):
            raise QMRIInputError("a fine AIF needs both fine_times_s and fine_cp")
        if self.fine_times_s is None:
            return
        tf = check_frame_times(self.fine_times_s)
        cf = np.array(self.fine_cp, dtype=np.float64).reshape(-1)
        if cf.shape != tf.shape or not np.isfinite(cf).all():
            raise QMRIInputError("fine AIF: fine_cp must hold one finite value per fine time")
        nodes = np.searchsorted(tf, t - 1e-6)
        if (
            nodes[0] != 0
            or nodes[-1] != tf.size - 1
            or not np.allclose(tf[np.minimum(nodes, tf.size - 1)], t, rtol=0, atol=1e-6)
        ):
            raise QMRIInputError(
                "fine AIF: the fine grid must run from the first to the last frame and hold "
                "every frame time"
            )
        for j in range(t.size - 1):
            d = np.diff(tf[nodes[j] : nodes[j + 1] + 1])
            if not np.allclose(d, d[0], rtol=1e-6, atol=1e-9):
                raise QMRIInputError("fine AIF: each frame interval must be split in equal steps")
        if not np.allclose(cf[nodes], cp, rtol=1e-9, atol=1e-12):
            raise QMRIInputError("fine AIF: fine_cp differs from cp at the frame times")
        tf = tf.copy()
        tf[nodes] = t  # frame nodes exactly at the frame times
        tf.flags.writeable = False
        cf.flags.writeable = False
        object.__setattr__(self, "fine_times_s", tf)
        object.__setattr__(self, "fine_cp", cf)


def fine_time_grid(times_s: ArrayLike, fine_dt_s: float) -> NDArray[np.float64]:
    """Frame times with every frame interval split into ``ceil(interval / fine_dt_s)`` steps.

    Parameters
    ----------
    times_s : array_like, shape (n_frames,)
        Frame times (s).
    fine_dt_s : float
        Largest fine step (s).

    Returns
    -------
    (n_fine,) ndarray
        Fine times (s), holding every frame time.
    """
    t = check_frame_times(times_s)
    try:
        dt = float(fine_dt_s)
    except (TypeError, ValueError):
        raise QMRIInputError(f"fine AIF step must be a number (s), got {fine_dt_s!r}") from None
    if not (np.isfinite(dt) and dt > 0):
        raise QMRIInputError(f"fine AIF step must be positive (s), got {fine_dt_s}")
    steps = np.maximum(np.ceil(np.diff(t) / dt - 1e-9).astype(np.int64), 1)
    parts = [t[j] + (t[j + 1] - t[j]) * np.arange(m) / m for j, m in enumerate(steps)]
    return np.concatenate([*parts, t[-1:]])


def _check_hematocrit(hematocrit: float) -> float:
    try:
        hct = float(hematocrit)
    except (TypeError, ValueError):
        raise QMRIInputError(
            f"hematocrit must be a number in [0, 1), got {hematocrit!r}"
        ) from None
    if not (0.0 <= hct < 1.0):
        raise QMRIInputError(f"hematocrit must be in [0, 1), got {hematocrit}")
    return hct


def parker_blood_concentration(
    times_s: ArrayLike, delay_s: float = 0.0, params: Mapping[str, float] | None = None
) -> NDArray[np.float64]:
    r"""Parker population AIF, whole-blood concentration (mM).

    .. math:: C_b(t) = \sum_{n=1}^{2} \frac{A_n}{\sigma_n\sqrt{2\pi}}
              e^{-(t - T_n)^2 / (2\sigma_n^2)} + \frac{\alpha\,e^{-\beta t}}{1 + e^{-s(t - \tau)}}

    with ``t`` in minutes, evaluated at ``t - delay`` and 0 for ``t < delay`` (the formula is
    evaluated at the delayed time, not shifted by whole frames).

    Parameters
    ----------
    times_s : array_like
        Times (s).
    delay_s : float, default 0
        Bolus arrival delay (s).
    params : mapping, optional
        Parameters as in :data:`PARKER_PARAMS` (default: Parker et al. 2006, Table 1).

    Returns
    -------
    ndarray
        Blood concentration (mM), shape of ``times_s``.
    """
    p = {**PARKER_PARAMS, **(params or {})}
    t = (np.asarray(times_s, dtype=np.float64) - float(delay_s)) / 60.0
    cb = np.zeros_like(t)
    for a, sig, tn in ((p["A1"], p["sigma1"], p["T1"]), (p["A2"], p["sigma2"], p["T2"])):
        cb += a / (sig * np.sqrt(2 * np.pi)) * np.exp(-((t - tn) ** 2) / (2 * sig**2))
    with np.errstate(over="ignore"):
        cb += p["alpha"] * np.exp(-p["beta"] * t) / (1.0 + np.exp(-p["s"] * (t - p["tau"])))
    return np.where(t < 0, 0.0, cb)


def parker_aif(
    times_s: ArrayLike,
    *,
    delay_s: float = 0.0,
    hematocrit: float = DEFAULT_HEMATOCRIT,
    params: Mapping[str, float] | None = None,
    fine_dt_s: float | None = PARKER_FINE_DT_S,
) -> ArterialInputFunction:
    """Parker population AIF as plasma concentration at the frame times (and on a fine grid).

    The function is analytic, so by default it is also evaluated on a fine grid (every frame
    interval split into steps of at most ``fine_dt_s``) and the kinetic models convolve that
    fine curve: with frames of several seconds the first-pass peak falls between frames and the
    piecewise-linear interpolant of the frame samples misses it (Ktrans biased high by ~3 % at
    7 s frames on the phantom even with the exact arrival).

    Parameters
    ----------
    times_s : array_like, shape (n_frames,)
        Frame times (s), strictly increasing.
    delay_s : float, default 0
        Bolus arrival time (s): the curve is ``Cb(t - delay)`` and 0 before (see
        :func:`detect_bolus_arrival`).
    hematocrit : float, default :data:`DEFAULT_HEMATOCRIT`
        ``Cp = Cb / (1 - Hct)``; 0 gives the blood curve itself.
    params : mapping, optional
        Overrides of :data:`PARKER_PARAMS`.
    fine_dt_s : float or None, default :data:`PARKER_FINE_DT_S`
        Largest step (s) of the fine grid the models convolve on; None (or 0) gives the frame
        samples only (the pre-0.x behaviour).

    Returns
    -------
    ArterialInputFunction
        With ``fine_times_s`` / ``fine_cp`` unless ``fine_dt_s`` is None; ``options`` records
        ``aif_fine_dt_s`` (the step used, or None).
    """
    t = check_frame_times(times_s)
    hct = _check_hematocrit(hematocrit)
    try:
        delay = float(delay_s)
    except (TypeError, ValueError):
        raise QMRIInputError(
            f"bolus arrival must be a number in seconds, got {delay_s!r}"
        ) from None
    if not np.isfinite(delay):
        raise QMRIInputError(f"bolus arrival must be finite (s), got {delay_s}")
    cp = parker_blood_concentration(t, delay, params) / (1.0 - hct)
    fine_t = fine_cp = None
    step = None
    if fine_dt_s:
        fine_t = fine_time_grid(t, fine_dt_s)
        if fine_t.size > t.size:
            fine_cp = parker_blood_concentration(fine_t, delay, params) / (1.0 - hct)
            step = float(np.diff(fine_t).max())
        else:
            fine_t = None
    return ArterialInputFunction(
        t,
        cp,
        "parker",
        {
            "aif": "parker",
            "aif_reference": PARKER_REFERENCE,
            "aif_parameters": {**PARKER_PARAMS, **(params or {})},
            "aif_delay_s": delay,
            "hematocrit": hct,
            "aif_fine_dt_s": step,
            "aif_sampling": (
                f"analytic on a fine grid (frame intervals split into steps <= {step:g} s), "
                "piecewise linear between fine samples"
                if step is not None
                else "frame times only, piecewise linear between frames"
            ),
        },
        fine_t,
        fine_cp,
    )


def mean_curve(data: ArrayLike, mask: ArrayLike) -> NDArray[np.float64]:
    """Mean curve over the voxels of a mask (e.g. an ``aorta`` label), ignoring NaN frames.

    Parameters
    ----------
    data : array_like, shape (..., n_frames)
        Concentration (mM) or signal.
    mask : array_like, shape data.shape[:-1]
        Voxels to average (non-zero).

    Returns
    -------
    (n_frames,) ndarray
    """
    arr = np.asarray(data)
    m = _spatial(mask, arr.shape[:-1], "mask").reshape(-1) != 0
    if not m.any():
        raise QMRIInputError("the AIF mask holds no voxel")
    with np.errstate(invalid="ignore"):
        curve = np.nanmean(arr.reshape(-1, arr.shape[-1])[m].astype(np.float64), axis=0)
    if not np.isfinite(curve).all():
        raise QMRIInputError("the AIF mask has frames without a single valid voxel")
    return curve


def aif_from_blood_curve(
    times_s: ArrayLike,
    blood_mM: ArrayLike,
    *,
    hematocrit: float = DEFAULT_HEMATOCRIT,
    source: str = "measured blood curve",
) -> ArterialInputFunction:
    """Measured AIF from a whole-blood concentration curve (e.g. :func:`mean_curve` of the aorta).

    Parameters
    ----------
    times_s : array_like, shape (n_frames,)
        Frame times (s).
    blood_mM : array_like, shape (n_frames,)
        Blood concentration (mM).
    hematocrit : float, default :data:`DEFAULT_HEMATOCRIT`
        ``Cp = Cb / (1 - Hct)``.
    source : str
        Where the curve comes from (recorded in the options).

    Returns
    -------
    ArterialInputFunction
    """
    hct = _check_hematocrit(hematocrit)
    t = check_frame_times(times_s)
    cb = np.asarray(blood_mM, dtype=np.float64).reshape(-1)
    if cb.size != t.size:
        raise QMRIInputError(f"blood curve has {cb.size} samples but there are {t.size} frames")
    return ArterialInputFunction(
        t,
        cb / (1.0 - hct),
        "measured",
        {"aif": "measured", "aif_source": source, "hematocrit": hct},
    )


def read_aif_tsv(path: str | Path, times_s: ArrayLike) -> ArterialInputFunction:
    """Read a measured plasma AIF (TSV with columns ``time`` (s), ``cp`` (mM)) onto frame times.

    The curve is linearly interpolated onto ``times_s`` when its times differ. Frame times more
    than 1 ms outside the file's time range are an error (no extrapolation).

    Parameters
    ----------
    path : str or Path
        Tab-separated file with a header row holding ``time`` and ``cp`` (other columns ignored).
    times_s : array_like, shape (n_frames,)
        Frame times (s).

    Returns
    -------
    ArterialInputFunction
        ``cp`` is taken as plasma concentration: no hematocrit correction.

    Raises
    ------
    QMRIInputError
        Missing file or columns, non-numeric or non-increasing times, frames outside the range.
    """
    path = Path(path)
    t = check_frame_times(times_s)
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
    except OSError as exc:
        raise QMRIInputError(f"cannot read AIF file ({exc.strerror})", path) from None
    if not rows or not {"time", "cp"} <= set(rows[0]):
        raise QMRIInputError("AIF TSV needs a header with columns 'time' (s) and 'cp' (mM)", path)
    try:
        ta = np.array([float(r["time"]) for r in rows])
        ca = np.array([float(r["cp"]) for r in rows])
    except (TypeError, ValueError):
        raise QMRIInputError("AIF TSV columns 'time' and 'cp' must hold numbers", path) from None
    if ta.size < 2 or not (np.isfinite(ta).all() and np.isfinite(ca).all()):
        raise QMRIInputError("AIF TSV needs at least 2 rows of finite numbers", path)
    if np.any(np.diff(ta) <= 0):
        raise QMRIInputError("AIF TSV times must be strictly increasing (s)", path)
    if t[0] < ta[0] - 1e-3 or t[-1] > ta[-1] + 1e-3:
        raise QMRIInputError(
            f"AIF covers {ta[0]:g}-{ta[-1]:g} s but the frames run {t[0]:g}-{t[-1]:g} s", path
        )
    same = ta.size == t.size and np.allclose(ta, t, rtol=0, atol=1e-6)
    cp = ca if same else np.interp(t, ta, ca)
    return ArterialInputFunction(
        t,
        cp,
        "file",
        {"aif": "file", "aif_file": str(path), "aif_interpolated": not same, "hematocrit": None},
    )


# --------------------------------------------------------------------------------------------
# bolus arrival
# --------------------------------------------------------------------------------------------


def detect_bolus_arrival(
    times_s: ArrayLike,
    curve: ArrayLike,
    *,
    baseline_frames: int | None = None,
    k_sd: float = 3.0,
    method: str = "hinge",
    parker_params: Mapping[str, float] | None = None,
) -> float:
    """Bolus arrival time (s) from a mean enhancement curve (concentration or signal).

    ``method="hinge"`` (model-free, any curve):

    1. Baseline mean and SD from the first ``baseline_frames`` frames.
    2. The first frame exceeding ``mean + k_sd * SD`` (and 5 % of the peak enhancement, so a
       noiseless curve is handled) marks the upslope.
    3. Refinement: a piecewise-linear fit ``y = b`` before ``t0`` and ``b + s (t - t0)`` after,
       over the frames up to the first one reaching half the peak enhancement; ``t0`` is searched
       on a fine grid between the two frames before the threshold crossing and that frame.

    Parameters
    ----------
    times_s : array_like, shape (n_frames,)
        Frame times (s).
    curve : array_like, shape (n_frames,)
        Mean curve (e.g. :func:`mean_curve` of the tissue or an artery).
    baseline_frames : int, optional
        Pre-contrast frames. Default: the frames before the curve first exceeds 10 % of its
        peak enhancement over the first frame (at least 2).
    k_sd : float, default 3
        Threshold in baseline SDs.
    method : {"hinge", "parker"}, default "hinge"
        ``"parker"`` (for a Parker-AIF analysis; the curve must be a concentration): starting
        from the hinge estimate, fit the curve as an extended Tofts tissue (and as Patlak, which
        covers a blood curve: ``Ktrans = 0``) driven by the Parker AIF on a fine grid with the
        arrival free within +-10 s, and return the fitted arrival of the better fit. With frames
        of several seconds the Parker upslope lies within one frame interval and the hinge is
        biased early (2.8 s on the phantom's aorta, 1.2-1.6 s on its tissue curves, 7 s
        frames); the model fit recovers the arrival to < 0.1 s there.
    parker_params : mapping, optional
        Overrides of :data:`PARKER_PARAMS` for ``method="parker"``.

    Returns
    -------
    float
        Arrival time (s), in the time axis of ``times_s``.

    Raises
    ------
    QMRIInputError
        No enhancement above the threshold after the baseline.
    """
    if method not in ("hinge", "parker"):
        raise QMRIInputError(f"bolus arrival method must be 'hinge' or 'parker', got {method!r}")
    t = check_frame_times(times_s)
    y = np.asarray(curve, dtype=np.float64).reshape(-1)
    if y.size != t.size or not np.isfinite(y).all():
        raise QMRIInputError("bolus arrival needs a finite curve with one value per frame")
    hinge = _hinge_arrival(t, y, baseline_frames, k_sd)
    if method == "hinge":
        return hinge
    return _parker_arrival(t, y, hinge, parker_params)


def _parker_arrival(
    t: NDArray[np.float64],
    y: NDArray[np.float64],
    start_s: float,
    params: Mapping[str, float] | None,
) -> float:
    """Arrival (s) from fitting ``y`` with the Parker AIF (fine grid) and a free delay."""
    from qmri.models.dce import ExtendedToftsModel, PatlakModel  # models import this module

    aif = parker_aif(t, delay_s=start_s, hematocrit=0.0, params=params)
    best_r2, best = -np.inf, start_s
    for cls in (ExtendedToftsModel, PatlakModel):
        model = cls(t, aif, fit_delay=True, bounds={"Ktrans": (0.0, 50.0), "vp": (0.0, 10.0)})
        out = model.fit_curves(y[None, :])
        delay, r2 = float(out.params["delay"][0]), float(out.r2[0])
        # an exchange faster than a frame interval only mimics a shift (a blood curve): reject
        kep = float(out.params.get("kep", np.zeros(1))[0])
        if not kep * float(np.median(np.diff(t))) / 60.0 < 1.0:
            continue
        if np.isfinite(delay) and np.isfinite(r2) and abs(delay) < 10.0 - 1e-3 and r2 > best_r2:
            best_r2, best = r2, start_s + delay
    return float(best)


def _hinge_arrival(
    t: NDArray[np.float64], y: NDArray[np.float64], baseline_frames: int | None, k_sd: float
) -> float:
    """The model-free hinge estimate of :func:`detect_bolus_arrival`."""
    if baseline_frames is None:
        above = np.flatnonzero(y - y[0] > 0.1 * (y.max() - y[0]))
        n_b = max(2, int(above[0])) if above.size else 2
        n_b = min(n_b, t.size - 1)
    else:
        n_b = _check_baseline_frames(baseline_frames, t.size, False)
    base = y[:n_b]
    mu = float(base.mean())
    sd = float(base.std(ddof=1)) if n_b > 1 else 0.0
    peak = float(y[n_b:].max())
    thresh = mu + max(k_sd * sd, 0.05 * (peak - mu))
    cross = np.flatnonzero(y[n_b:] > thresh)
    if peak <= mu or cross.size == 0:
        raise QMRIInputError("no bolus found: the curve never rises above its baseline")
    j = n_b + int(cross[0])
    half = np.flatnonzero(y[j:] >= mu + 0.5 * (peak - mu))
    end = j + (int(half[0]) if half.size else 0)
    end = max(end, min(j + 1, t.size - 1))
    win = slice(0, end + 1)
    tw, yw = t[win], y[win]
    lo = t[max(j - 2, 0)]
    cand = np.linspace(lo, t[j], 401)
    x = np.maximum(tw[None, :] - cand[:, None], 0.0)  # (n_cand, n_win)
    n = tw.size
    sx, sy = x.sum(axis=1), yw.sum()
    sxx, sxy = (x * x).sum(axis=1), x @ yw
    det = n * sxx - sx * sx
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = (n * sxy - sx * sy) / det
        icpt = (sy - slope * sx) / n
        ssr = ((icpt[:, None] + slope[:, None] * x - yw[None, :]) ** 2).sum(axis=1)
    ssr[~(np.isfinite(ssr) & (slope > 0))] = np.inf
    if not np.isfinite(ssr).any():
        return float(t[j - 1] if j > 0 else t[j])
    return float(cand[int(np.argmin(ssr))])


# --------------------------------------------------------------------------------------------
# semi-quantitative maps
# --------------------------------------------------------------------------------------------


def _window_integral(
    t: NDArray[np.float64], y: NDArray[np.float64], a: float, b: float
) -> NDArray[np.float64]:
    """Integral of the piecewise-linear interpolant of ``y`` (n, n_t) over [a, b] (trapezoid)."""
    inner = np.flatnonzero((t > a) & (t < b))
    pts = np.concatenate([[a], t[inner], [b]])
    # interpolation weights shared by every voxel
    idx = np.clip(np.searchsorted(t, pts, side="right") - 1, 0, t.size - 2)
    w = (pts - t[idx]) / (t[idx + 1] - t[idx])
    vals = y[:, idx] * (1.0 - w) + y[:, idx + 1] * w
    dt = np.diff(pts)
    return 0.5 * np.einsum("ij,j->i", vals[:, :-1] + vals[:, 1:], dt)


def semiquantitative_maps(
    concentration: ArrayLike,
    times_s: ArrayLike,
    bolus_arrival_s: float,
    *,
    signal: ArrayLike | None = None,
    baseline_frames: int | None = None,
    mask: ArrayLike | None = None,
) -> ModelFit:
    """Model-free DCE maps: iAUC60, iAUC90, time to peak, peak concentration, peak enhancement.

    * ``iAUC60``, ``iAUC90`` (mM*s): integral of the concentration over the 60 s / 90 s after the
      bolus arrival (trapezoid rule on the piecewise-linear curve, end points interpolated). NaN
      everywhere when the acquisition ends before the window does.
    * ``TTP`` (s): time of the concentration maximum **minus the bolus arrival**.
    * ``Cmax`` (mM): maximum concentration (the "maximum enhancement" on the concentration scale).
    * ``MaxRSE`` (1, only with ``signal`` and ``baseline_frames``): maximum relative signal
      enhancement ``max (S - S0) / S0`` with ``S0`` the mean of the baseline frames.

    Parameters
    ----------
    concentration : array_like, shape (..., n_frames)
        Tissue concentration (mM).
    times_s : array_like, shape (n_frames,)
        Frame times (s).
    bolus_arrival_s : float
        Bolus arrival (s), e.g. from :func:`detect_bolus_arrival`.
    signal : array_like, shape concentration.shape, optional
        Raw signal, for ``MaxRSE``.
    baseline_frames : int, optional
        Pre-contrast frames of ``signal`` (needed with ``signal``).
    mask : array_like, shape concentration.shape[:-1], optional
        Voxels to compute (non-zero); default all.

    Returns
    -------
    ModelFit
        Maps as above plus ``fitmask`` (1 where the voxel's curve is finite); no ``R2`` (nothing
        is fitted).
    """
    c = np.asarray(concentration)
    spatial, n_t = c.shape[:-1], c.shape[-1]
    t = check_frame_times(times_s, n_t)
    ta = float(bolus_arrival_s)
    if not (np.isfinite(ta) and t[0] - 1e-9 <= ta < t[-1]):
        raise QMRIInputError(
            f"bolus arrival {bolus_arrival_s} s is outside the acquisition ({t[0]:g}-{t[-1]:g} s)"
        )
    flat = c.reshape(-1, n_t)
    if mask is None:
        sel = np.arange(flat.shape[0])
    else:
        sel = np.flatnonzero(_spatial(mask, spatial, "mask").reshape(-1) != 0)
    y = flat[sel].astype(np.float64)
    good = np.isfinite(y).all(axis=1)
    names = ["iAUC60", "iAUC90", "TTP", "Cmax"]
    values: dict[str, NDArray[np.float64]] = {}
    notes = {}
    for name, width in (("iAUC60", 60.0), ("iAUC90", 90.0)):
        if ta + width <= t[-1] + 1e-9:
            values[name] = _window_integral(t, np.where(good[:, None], y, 0.0), ta, ta + width)
        else:
            values[name] = np.full(y.shape[0], np.nan)
            notes[f"{name}_note"] = f"not computed: acquisition ends at {t[-1]:g} s"
    ypos = np.where(good[:, None], y, -np.inf)
    imax = np.argmax(ypos, axis=1)
    values["TTP"] = t[imax] - ta
    values["Cmax"] = ypos[np.arange(y.shape[0]), imax]
    if signal is not None:
        s = np.asarray(signal)
        if s.shape != c.shape:
            raise QMRIInputError(f"signal has shape {s.shape} but concentration has {c.shape}")
        if baseline_frames is None:
            raise QMRIInputError("baseline frames are needed for the relative signal enhancement")
        n_b = _check_baseline_frames(baseline_frames, n_t, False)
        sv = s.reshape(-1, n_t)[sel].astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            s0 = sv[:, :n_b].mean(axis=1)
            values["MaxRSE"] = np.max(sv, axis=1) / s0 - 1.0
        good &= np.isfinite(values["MaxRSE"]) & (s0 > 0)
        names.append("MaxRSE")
    maps: dict[str, np.ndarray] = {}
    for name in names:
        arr = np.full(flat.shape[0], np.nan, dtype=np.float32)
        arr[sel] = np.where(good, values[name], np.nan)
        maps[name] = arr.reshape(spatial)
    fitmask = np.zeros(flat.shape[0], dtype=np.uint8)
    fitmask[sel[good]] = 1
    maps["fitmask"] = fitmask.reshape(spatial)
    units = {"iAUC60": "mM*s", "iAUC90": "mM*s", "TTP": "s", "Cmax": "mM", "fitmask": "1"}
    if "MaxRSE" in maps:
        units["MaxRSE"] = "1"
    n_fitted = int(sel.size)
    from qmri.models.base import ModelFit  # here: qmri.models imports this module

    return ModelFit(
        maps=maps,
        units=units,
        n_fitted=n_fitted,
        n_failed=n_fitted - int(good.sum()),
        algorithm="model-free: trapezoid iAUC from bolus arrival, time to peak, peak values",
        reference=(
            "Evelhoch JL. Key factors in the acquisition of contrast kinetic data for oncology. "
            "J Magn Reson Imaging 1999;10:254-259. doi:10.1002/(SICI)1522-2586(199909)10:3<254::"
            "AID-JMRI5>3.0.CO;2-9"
        ),
        options={
            "bolus_arrival_s": ta,
            "ttp_reference": "bolus arrival",
            "max_enhancement": "Cmax: peak concentration (mM); MaxRSE: peak (S-S0)/S0",
            "baseline_frames": baseline_frames,
            **notes,
        },
    )
