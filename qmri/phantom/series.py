"""The raw series of one phantom session: noisy int16 images and their BIDS sidecars.

Each series is computed from the session's tissue map and parameter table
(:mod:`qmri.phantom.signals`), given Rician noise from its own random stream
(:func:`noise_rng`) and stored as int16 with the protocol's per-series scale.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from qmri import __version__
from qmri.io import save_nifti
from qmri.phantom.anatomy import GEOMETRY, Grid, anatomy_on_grid
from qmri.phantom.bids_files import save_b1, write_text
from qmri.phantom.protocol import PHANTOM_PROTOCOL, PhantomProtocol
from qmri.phantom.signals import (
    b1_ratio,
    dce_t1_curves,
    dwi_curves,
    gradient_echo,
    inversion_recovery,
    rician,
    spgr,
    spin_echo,
    to_int16,
)
from qmri.phantom.subjects import Subject
from qmri.phantom.tissues import PARAMETERS, parameter_table

__all__ = ["ReferenceMaps", "noise_rng", "scanner_metadata", "write_session_series"]


class ReferenceMaps(NamedTuple):
    """The truth of a session on its reference grid, as the series were simulated from it."""

    #: Tissue map (:data:`~qmri.phantom.tissues.TISSUE_INDEX`, 0 = air), int16.
    tissue: np.ndarray
    #: Contract labels (:func:`~qmri.phantom.anatomy.label_names`, 0 = background), int16.
    labels: np.ndarray
    #: B1 ratio (actual / nominal flip angle).
    b1: np.ndarray
    #: The session's parameter table (:func:`~qmri.phantom.tissues.parameter_table`).
    table: np.ndarray


def noise_rng(seed: int, subject: int, session: int, series: str) -> np.random.Generator:
    code = sum((j + 1) * ord(ch) for j, ch in enumerate(series))
    return np.random.default_rng([seed, subject, session + 1, code])


def scanner_metadata(proto: PhantomProtocol) -> dict[str, Any]:
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


def write_session_series(
    root: Path,
    subj: Subject,
    i_subj: int,
    j_ses: int,
    ses: str,
    kind: str,
    grids: tuple[Grid, Grid],
    seed: int,
    extra_series: Sequence[str] = (),
) -> ReferenceMaps:
    """Write the raw series of one session; return the truth they were simulated from.

    Parameters
    ----------
    root : Path
        Dataset root.
    subj : Subject
        The subject (layout, B1 field, motion).
    i_subj, j_ses : int
        0-based subject and session indices (they select the noise streams).
    ses : str
        Session label.
    kind : {"pre", "fu1", "fu2"}
        Session kind (:func:`~qmri.phantom.tissues.session_kinds`); ``pre`` has no motion.
    grids : tuple of Grid
        Reference grid and coarse (DWI, DCE) grid.
    seed : int
        Dataset seed.
    extra_series : sequence of str
        Optional series to add (:data:`~qmri.phantom.protocol.EXTRA_SERIES`).

    Returns
    -------
    ReferenceMaps
        Tissue map, labels and B1 ratio on the reference grid, and the parameter table.
    """
    proto = PHANTOM_PROTOCOL
    ref, coarse = grids
    motion = subj.motions[ses]
    table = parameter_table(kind)
    col = {p: table[:, n] for n, p in enumerate(PARAMETERS)}
    stem = f"sub-{subj.label}_ses-{ses}"
    sdir = root / f"sub-{subj.label}" / f"ses-{ses}"
    fov_lo = np.array([f[0] for f in GEOMETRY.fov]) + subj.centre
    fov_hi = np.array([f[1] for f in GEOMETRY.fov]) + subj.centre

    def anatomy(grid: Grid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        matrix = None if kind == "pre" else motion.matrix
        tissue, labels = anatomy_on_grid(
            grid.affine, grid.shape, subject=i_subj, baseline_to_session=matrix
        )
        return tissue, labels, b1_ratio(grid.world(), subj.b1_coeffs, fov_lo, fov_hi)

    def noisy(series: str, signal: np.ndarray, stream: str = "") -> np.ndarray:
        rng = noise_rng(seed, i_subj, j_ses, series + stream)
        mag = rician(signal, proto.noise_sigma[series], rng)
        return to_int16(mag, proto.stored_scale(series))

    tissue, labels, b1 = anatomy(ref)
    tissue_c, _, b1_c = anatomy(coarse)
    common = scanner_metadata(proto)

    # T2w reference
    t2w = spin_echo(table, proto.t2w_tr_s, np.array([proto.t2w_te_s]))[:, 0][tissue]
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
        sig = spgr(col["PD"][tissue], col["T1"][tissue], np.deg2rad(fa) * b1, proto.vfa_tr_s)
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
    save_b1(
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
    mese = spin_echo(table, proto.mese_tr_s, np.array(tes))
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
        ir = inversion_recovery(table, proto.irt1_tr_s, np.array(tis))
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
        gre = gradient_echo(table, proto.megre_tr_s, np.array(tes))
        collection("MEGRE", "echo", "EchoTime", tes, gre, gre_sidecar)

    # DWI
    dwi = dwi_curves(table, proto)[tissue_c]
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
    write_text(" ".join(f"{b:g}" for b in bvals) + "\n", dwi_path.with_name(f"{stem}_dwi.bval"))
    bvecs = proto.dwi_bvecs_all.T
    write_text(
        "\n".join(" ".join(f"{v:g}" for v in row) for row in bvecs) + "\n",
        dwi_path.with_name(f"{stem}_dwi.bvec"),
    )

    # DCE
    dce = spgr(
        col["PD"][tissue_c][..., None],
        dce_t1_curves(table, proto)[tissue_c],
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

    return ReferenceMaps(tissue, labels, b1, table)
