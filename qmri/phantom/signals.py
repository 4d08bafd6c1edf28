"""Signal equations of the phantom's series, its B1 field, the AIF and the noise.

Per-tissue functions take a parameter table (:func:`~qmri.phantom.tissues.parameter_table`,
one row per tissue map value) and return one row per tissue, so that an image is the table
indexed by the tissue map. Equations and noise levels are documented in the package docstring
(:mod:`qmri.phantom`).
"""

from __future__ import annotations

import numpy as np

from qmri.phantom.protocol import PARKER_AIF, PhantomProtocol
from qmri.phantom.tissues import PARAMETERS, R2_PRIME_PER_S, TISSUES

__all__ = [
    "b1_coefficients",
    "b1_ratio",
    "dce_t1_curves",
    "dwi_curves",
    "gradient_echo",
    "inversion_recovery",
    "parker_aif",
    "rician",
    "spgr",
    "spin_echo",
    "t2star_table",
    "to_int16",
]

# ---------------------------------------------------------------------------------------------
# B1 field (fixed in the scanner frame)
# ---------------------------------------------------------------------------------------------


def _b1_field(p: np.ndarray, coeffs: np.ndarray, fov_lo: np.ndarray, fov_hi: np.ndarray):
    """Smooth B1 ratio at scanner points ``p`` (3, ...): polynomial in x and z."""
    mid = (fov_lo + fov_hi) / 2
    half = (fov_hi - fov_lo) / 2
    xn = (p[0] - mid[0]) / half[0]
    zn = (p[2] - mid[2]) / half[2]
    terms = np.stack([xn, zn, xn**2 - 1 / 3, zn**2 - 1 / 3, xn * zn])
    return 1.0 + np.tensordot(coeffs, terms, axes=1)


def b1_coefficients(rng: np.random.Generator, span: tuple[float, float]) -> np.ndarray:
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


def b1_ratio(
    p: np.ndarray, coeffs: np.ndarray, fov_lo: np.ndarray, fov_hi: np.ndarray
) -> np.ndarray:
    """B1 ratio (actual / nominal flip angle) at scanner points ``p`` (``(3, ...)``, mm).

    ``coeffs`` are the six coefficients of :func:`b1_coefficients`; ``fov_lo``, ``fov_hi`` the
    corners (mm) of the field of view the polynomial is normalised on.
    """
    return _b1_field(p, coeffs[:5], fov_lo, fov_hi) + coeffs[5]


# ---------------------------------------------------------------------------------------------
# Relaxation and diffusion
# ---------------------------------------------------------------------------------------------


def _safe(values: np.ndarray) -> np.ndarray:
    """Replace zero relaxation times (air) by 1 s to avoid division by zero."""
    return np.where(values > 0, values, 1.0)


def spgr(pd: np.ndarray, t1: np.ndarray, flip_rad: np.ndarray, tr: float) -> np.ndarray:
    """Spoiled gradient-echo signal ``PD sin(a) (1 - E1) / (1 - cos(a) E1)``, T1 and TR in s."""
    e1 = np.exp(-tr / _safe(t1))
    return pd * np.sin(flip_rad) * (1 - e1) / (1 - np.cos(flip_rad) * e1)


def spin_echo(table: np.ndarray, tr: float, te: np.ndarray) -> np.ndarray:
    """Per-tissue spin-echo signal, shape ``(n_tissues + 1, len(te))``."""
    col = {p: table[:, i] for i, p in enumerate(PARAMETERS)}
    sat = col["PD"] * (1 - np.exp(-tr / _safe(col["T1"])))
    return sat[:, None] * np.exp(-np.atleast_1d(te)[None, :] / _safe(col["T2"])[:, None])


def t2star_table(table: np.ndarray) -> np.ndarray:
    """True T2* (s) per tissue row of a parameter table (row 0, air, is 0)."""
    t2 = table[:, PARAMETERS.index("T2")]
    r2p = np.array([0.0] + [R2_PRIME_PER_S[t.name] for t in TISSUES])
    with np.errstate(divide="ignore"):
        return np.where(t2 > 0, 1.0 / (1.0 / _safe(t2) + r2p), 0.0)


def inversion_recovery(table: np.ndarray, tr: float, ti: np.ndarray) -> np.ndarray:
    """Magnitude IR signal per tissue, ``|PD (1 - 2 e^{-TI/T1} + e^{-TR/T1})|``."""
    col = {p: table[:, i] for i, p in enumerate(PARAMETERS)}
    t1 = _safe(col["T1"])[:, None]
    return np.abs(col["PD"][:, None] * (1 - 2 * np.exp(-ti[None, :] / t1) + np.exp(-tr / t1)))


def gradient_echo(table: np.ndarray, tr: float, te: np.ndarray) -> np.ndarray:
    """Multi-echo GRE (90 deg, long TR) per tissue: ``PD (1 - e^{-TR/T1}) e^{-TE/T2*}``."""
    col = {p: table[:, i] for i, p in enumerate(PARAMETERS)}
    sat = col["PD"] * (1 - np.exp(-tr / _safe(col["T1"])))
    return sat[:, None] * np.exp(-te[None, :] / _safe(t2star_table(table))[:, None])


def dwi_curves(table: np.ndarray, proto: PhantomProtocol) -> np.ndarray:
    """Per-tissue IVIM signal, shape ``(n_tissues + 1, n_volumes)``."""
    col = {p: table[:, i] for i, p in enumerate(PARAMETERS)}
    s0 = spin_echo(table, proto.dwi_tr_s, np.array([proto.dwi_te_s]))[:, 0] * (1 - col["FF"])
    b = proto.dwi_bvals_all[None, :]
    f = col["f"][:, None]
    return s0[:, None] * (
        (1 - f) * np.exp(-b * col["D"][:, None]) + f * np.exp(-b * col["Dstar"][:, None])
    )


# ---------------------------------------------------------------------------------------------
# DCE: arterial input function and tissue concentration
# ---------------------------------------------------------------------------------------------


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


def dce_t1_curves(table: np.ndarray, proto: PhantomProtocol) -> np.ndarray:
    """Per-tissue T1 (s) during the DCE series, shape ``(n_tissues + 1, n_frames)``."""
    col = {p: table[:, i] for i, p in enumerate(PARAMETERS)}
    conc = _concentration_curves(table, proto)
    return 1 / (1 / _safe(col["T1"])[:, None] + proto.r1_per_mM_s * conc)


# ---------------------------------------------------------------------------------------------
# Noise and storage
# ---------------------------------------------------------------------------------------------


def rician(signal: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Rician magnitude ``|S + n1 + i n2|``, ``n1``, ``n2`` ~ N(0, sigma^2) drawn in that order."""
    n1 = rng.standard_normal(signal.shape)
    n2 = rng.standard_normal(signal.shape)
    return np.hypot(signal + sigma * n1, sigma * n2)


def to_int16(magnitude: np.ndarray, scale: float) -> np.ndarray:
    """Stored int16 values ``round(magnitude * scale)``, clipped to 0..32767."""
    return np.clip(np.rint(magnitude * scale), 0, np.iinfo(np.int16).max).astype(np.int16)
