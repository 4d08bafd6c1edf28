"""Dose analysis and cohort figures as the workflow runs them, and the sample's derived ROIs.

The dose tests use the committed sample with the phantom's planned dose (uniform prescription in
the CTV, exponential fall-off outside) and, as the follow-up maps, the phantom's *true* parameter
maps on the baseline grid, so every expected number is known exactly.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from qmri import cohort
from qmri.config import schema_defaults
from qmri.dose import eqd2
from qmri.errors import QMRIInputError
from qmri.figures_cohort import TRAJECTORY_COLUMNS, WATERFALL_COLUMNS
from qmri.io import save_nifti
from qmri.phantom import write_phantom_dose
from qmri.steps.cohort import cohort_figures
from qmri.steps.dose import subject_dose
from qmri.steps.rois import derive_subject_rois
from qmri.tables import ROISTATS_COLUMNS, response_table

DOSE = schema_defaults()["dose"]

SAMPLE = Path(__file__).resolve().parents[1] / "data_sample"
TRUTH = SAMPLE / "derivatives" / "truth"
PARTICIPANTS = pd.read_csv(SAMPLE / "participants.tsv", sep="\t", dtype={"participant_id": str})


def _derived_rois(tmp: Path, subject: str) -> Path:
    """The workflow's derive-rois step on the sample's labels."""
    out = tmp / f"sub-{subject}_space-baseline_desc-rois_mask.nii.gz"
    derive_subject_rois(
        subject=subject,
        dseg=SAMPLE
        / f"derivatives/labels/sub-{subject}/ses-pre/anat/sub-{subject}_ses-pre_dseg.nii.gz",
        reference=SAMPLE / f"sub-{subject}/ses-pre/anat/sub-{subject}_ses-pre_T2w.nii.gz",
        participants=SAMPLE / "participants.tsv",
        ctv_plan=None,
        out_mask=out,
    )
    return out


# --------------------------------------------------------------------------------------------
# done when (a): derived ROI voxel counts equal the contract's definitions on the true labels
# --------------------------------------------------------------------------------------------

_ORDER = [f"C{i}" for i in range(1, 8)] + [f"T{i}" for i in range(1, 13)]
_ORDER += [f"L{i}" for i in range(1, 6)] + [f"S{i}" for i in range(1, 6)]


def _touches(region: np.ndarray, tumour: np.ndarray) -> bool:
    """Whether a voxel of ``region`` has a tumour voxel among its 26 neighbours (or is one)."""
    pad = np.pad(tumour, 1)
    nx, ny, nz = tumour.shape
    near = np.zeros_like(tumour)
    for dx in (0, 1, 2):
        for dy in (0, 1, 2):
            for dz in (0, 1, 2):
                near |= pad[dx : dx + nx, dy : dy + ny, dz : dz + nz]
    return bool((region & near).any())


def contract_roi_counts(data: np.ndarray, names: dict[int, str], treated: list[str]) -> dict:
    """Voxel count of every derived ROI, straight from the data contract's table (section 2)."""
    by_name: dict[str, np.ndarray] = {}
    for index, name in names.items():
        by_name[name] = by_name.get(name, np.zeros(data.shape, bool)) | (data == index)
    tumour = np.zeros(data.shape, bool)
    for name, mask in by_name.items():
        if name == "tumor" or name.startswith("tumor_"):
            tumour |= mask
    levels = {n.split("_", 1)[1] for n in by_name if n.startswith(("vb_", "cord_"))}
    t_pos = [_ORDER.index(t) for t in treated]

    def dist(level: str) -> int:
        return min(abs(_ORDER.index(level) - p) for p in t_pos)

    def union(structure: str, keep) -> np.ndarray:
        out = np.zeros(data.shape, bool)
        for level in levels:
            if f"{structure}_{level}" in by_name and keep(dist(level)):
                out |= by_name[f"{structure}_{level}"]
        return out

    ctv = tumour | union("vb", lambda d: d == 0)
    for name, mask in by_name.items():
        if name.split("_")[0] in ("pe", "pel", "per") and _touches(mask, tumour):
            ctv |= mask
    counts = {
        "tumor": tumour.sum(),
        "ctv": ctv.sum(),
        "vb_treated_nontumor": (union("vb", lambda d: d == 0) & ~tumour).sum(),
        "vb_adjacent": union("vb", lambda d: d == 1).sum(),
        "vb_control": union("vb", lambda d: d >= 2).sum(),
        "cord_treated": union("cord", lambda d: d == 0).sum(),
        "cord_adjacent": union("cord", lambda d: d == 1).sum(),
    }
    for level in levels:
        for structure in ("vb", "cord"):
            if f"{structure}_{level}" in by_name:
                counts[f"{structure}_{level}"] = by_name[f"{structure}_{level}"].sum()
    return {k: int(v) for k, v in counts.items()}


@pytest.mark.parametrize("subject", ["01", "02"])
def test_derived_roi_counts_equal_the_definitions_on_the_true_labels(tmp_path, subject):
    """Issue #5, done when: exactly, at baseline, for every derived ROI of the sample."""
    mask = _derived_rois(tmp_path, subject)
    names = [line.split("\t")[1] for line in
             mask.with_name(mask.name.replace(".nii.gz", ".tsv")).read_text().splitlines()[1:]]  # fmt: skip
    data = np.asarray(nib.load(mask).dataobj).astype(bool)
    got = {name: int(data[..., i].sum()) for i, name in enumerate(names)}
    anat = TRUTH / f"sub-{subject}/ses-pre/anat"
    truth = np.asarray(nib.load(anat / f"sub-{subject}_ses-pre_desc-truth_dseg.nii.gz").dataobj)
    table = pd.read_csv(anat / f"sub-{subject}_ses-pre_desc-truth_dseg.tsv", sep="\t")
    treated = PARTICIPANTS.set_index("participant_id").loc[f"sub-{subject}", "treated_levels"]
    want = contract_roi_counts(
        truth.astype(int), dict(zip(table["index"], table["name"], strict=True)),
        treated.split(","),
    )  # fmt: skip
    assert got == want
    assert want["tumor"] > 0
    assert want["ctv"] > want["tumor"] + want["vb_treated_nontumor"]  # a pedicle is touched


# --------------------------------------------------------------------------------------------
# dose
# --------------------------------------------------------------------------------------------


def _truth_on_baseline_grid(out_dir: Path, subject: str, session: str) -> Path:
    """The true T1 and ADC of ``session`` on the baseline grid, as baseline-space writes maps.

    The anatomy moves rigidly, so a baseline voxel holds the same tissue at every session: its
    true value is that tissue's parameter at the session (no resampling involved).
    """
    anat = TRUTH / f"sub-{subject}/ses-pre/anat"
    tissue = np.asarray(
        nib.load(anat / f"sub-{subject}_ses-pre_desc-tissue_dseg.nii.gz").dataobj
    ).astype(int)
    names = pd.read_csv(anat / f"sub-{subject}_ses-pre_desc-tissue_dseg.tsv", sep="\t")
    params = pd.read_csv(TRUTH / "tissue_parameters.tsv", sep="\t")
    rows = params[params.session == session].set_index("tissue")
    affine = nib.load(anat / f"sub-{subject}_ses-pre_desc-tissue_dseg.nii.gz").affine
    folder = out_dir / f"sub-{subject}" / f"ses-{session}" / "space-baseline"
    for name, column, unit in (("T1", "T1", "s"), ("ADC", "D", "mm^2/s")):
        lut = np.full(tissue.max() + 1, np.nan)
        for index, tissue_name in zip(names["index"], names["name"], strict=True):
            lut[index] = rows.loc[tissue_name, column]
        save_nifti(lut[tissue], affine,
                   folder / f"sub-{subject}_ses-{session}_space-baseline_{name}.nii.gz",
                   sidecar={"Units": unit})  # fmt: skip
    return folder


def _dose_options() -> dict:
    """The config's dose options as the workflow passes them (numbers as floats)."""
    return {
        "bin_edges_gy": [float(v) for v in DOSE["bin_edges_gy"]],
        "eqd2_bin_edges_gy": [float(v) for v in DOSE["eqd2_bin_edges_gy"]],
        "alpha_beta_gy": {k: float(v) for k, v in DOSE["alpha_beta_gy"].items()},
        "hot_volume_cc": float(DOSE["hot_volume_cc"]),
        "binned_rois": DOSE["binned_rois"],
    }


@pytest.fixture(scope="module")
def dose_run(tmp_path_factory):
    """The subject-dose step on sub-01 of the sample, with the schema's dose options."""
    tmp = tmp_path_factory.mktemp("dose")
    dose_dir = write_phantom_dose(SAMPLE, tmp / "dose")
    mask = _derived_rois(tmp, "01")
    dirs = [_truth_on_baseline_grid(tmp, "01", s) for s in ("pre", "fu1", "fu2")]
    stats, bins = tmp / "sub-01_dosestats.csv", tmp / "sub-01_dosebins.csv"
    subject_dose(
        subject="01", dose_nifti=dose_dir / "sub-01" / "sub-01_dose.nii.gz", rois_mask=mask,
        participants_tsv=SAMPLE / "participants.tsv",
        sessions_tsv=SAMPLE / "sub-01" / "sub-01_sessions.tsv", baseline_session="pre",
        baseline_grid_dirs=dirs, **_dose_options(), out_stats=stats, out_bins=bins,
    )  # fmt: skip
    return dose_dir, mask, pd.read_csv(stats), pd.read_csv(bins)


def test_dose_statistics_recover_the_planned_dose(dose_run):
    """sub-01: 35 Gy in 5 fractions, uniform in the CTV."""
    _, _, stats, _ = dose_run
    assert list(stats.columns) == list(cohort.DOSESTATS_COLUMNS)
    phys = stats[stats.dose_scale == "physical"].set_index("roi")
    for roi in ("ctv", "tumor", "vb_treated_nontumor"):
        for col in ("mean_gy", "max_gy", "min_gy", "d0_03cc_gy"):
            assert phys.loc[roi, col] == pytest.approx(35.0, abs=1e-4), (roi, col)
    assert (phys["prescription_gy"] == 35).all()
    # the cord is spared but not cold; control bodies (two levels away) are nearly cold
    assert 5.0 < phys.loc["cord_treated", "max_gy"] < 35.0
    assert phys.loc["vb_control", "mean_gy"] < 2.0
    assert phys.loc["cord", "n_voxels"] > phys.loc["cord_treated", "n_voxels"]
    eq = stats[stats.dose_scale == "eqd2"].set_index("roi")
    assert eq.loc["ctv", "alpha_beta_gy"] == 10
    assert eq.loc["ctv", "mean_gy"] == pytest.approx(float(eqd2(35.0, 5, 10.0)), rel=1e-5)
    assert eq.loc["vb_treated_nontumor", "mean_gy"] == pytest.approx(35 * 9 / 4, rel=1e-5)
    assert eq.loc["cord_treated", "alpha_beta_gy"] == 2
    assert (eq["fractions"] == 5).all()


def test_dose_binned_change_recovers_the_treated_marrow_response(dose_run):
    """The treated marrow's T1 falls 20% (fu1) and 30% (fu2) in the phantom, other marrow 0%."""
    _, mask, _, bins = dose_run
    assert list(bins.columns) == list(cohort.DOSEBINS_COLUMNS)
    names = [line.split("\t")[1] for line in
             mask.with_name(mask.name.replace(".nii.gz", ".tsv")).read_text().splitlines()[1:]]  # fmt: skip
    n_treated = int(
        np.asarray(nib.load(mask).dataobj)[..., names.index("vb_treated_nontumor")].sum()
    )
    t1 = bins[(bins["map"] == "T1") & (bins.roi == "marrow") & (bins.dose_scale == "physical")]
    for session, pct in (("fu1", -20.0), ("fu2", -30.0)):
        rows = t1[t1.session == session].set_index("bin_lower_gy")
        assert rows.loc[30.0, "n_voxels"] == n_treated  # the 35 Gy marrow is the treated body
        assert rows.loc[30.0, "median_pct_change"] == pytest.approx(pct, abs=1e-6)
        cold = rows[(rows.index < 30.0) & (rows.n_voxels > 0)]
        assert len(cold) >= 2
        assert np.allclose(cold["median_pct_change"], 0.0)
    # the cord is unchanged at every dose; ADC of the marrow too
    cord = bins[(bins.roi == "cord") & (bins.n_voxels > 0)]
    assert np.allclose(cord["median_change"], 0.0)
    eq = bins[(bins.roi == "marrow") & (bins.dose_scale == "eqd2") & (bins["map"] == "T1")]
    hot = eq[(eq.session == "fu1") & (eq.bin_lower_gy == 60.0)]  # 35 Gy / 5 fx = 78.75 Gy EQD2
    assert int(hot["n_voxels"].iloc[0]) == n_treated


def test_dose_map_must_lie_on_the_baseline_grid(dose_run, tmp_path):
    dose_dir, mask, _, _ = dose_run
    img = nib.load(dose_dir / "sub-01" / "sub-01_dose.nii.gz")
    bad = tmp_path / "sub-01_dose.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[:-1], img.affine), bad)
    with pytest.raises(QMRIInputError, match="baseline reference grid"):
        subject_dose(
            subject="01", dose_nifti=bad, rois_mask=mask,
            participants_tsv=SAMPLE / "participants.tsv",
            sessions_tsv=SAMPLE / "sub-01/sub-01_sessions.tsv", baseline_session="pre",
            baseline_grid_dirs=[], **_dose_options(), out_stats=tmp_path / "s.csv",
            out_bins=tmp_path / "b.csv",
        )  # fmt: skip


def test_dose_files_name_the_missing_file(dose_run, tmp_path):
    dose_dir, *_ = dose_run
    found = cohort.dose_files(dose_dir, ["01", "02"])
    assert found["02"].name == "sub-02_dose.nii.gz"
    with pytest.raises(QMRIInputError, match=r"sub-03/sub-03_dose\.nii\.gz: dose map not found"):
        cohort.dose_files(dose_dir, ["01", "03"])
    with pytest.raises(QMRIInputError, match="dose folder not found"):
        cohort.dose_files(tmp_path / "nowhere", ["01"])


# --------------------------------------------------------------------------------------------
# cohort figures
# --------------------------------------------------------------------------------------------


def _cohort(n: int = 5) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(1)
    rows = []
    for i in range(n):
        for session, day in (("pre", -5), ("fu1", 90), ("fu2", 180)):
            for roi in ("tumor", "ctv"):
                for name, unit, base in (("ADC", "mm^2/s", 1e-3), ("vp", "1", 0.08)):
                    value = base * (1 + 0.1 * rng.normal() + (day > 0) * 0.3 * rng.normal())
                    row = dict.fromkeys(ROISTATS_COLUMNS, 0.0)
                    row.update(subject=f"{i + 1:02d}", session=session, days_from_sbrt=day,
                               roi=roi, map=name, unit=unit, n_voxels=40, mean=value,
                               median=value)  # fmt: skip
                    rows.append(row)
    roistats = pd.DataFrame(rows)[list(ROISTATS_COLUMNS)]
    response = pd.concat(
        [response_table(g, "pre") for _, g in roistats.groupby("subject")], ignore_index=True
    )
    return roistats, response


def test_cohort_figures_step_writes_every_named_figure(tmp_path):
    roistats, response = _cohort()
    roistats.to_csv(tmp_path / "roistats.csv", index=False)
    response.to_csv(tmp_path / "response.csv", index=False)
    km = pd.DataFrame({"outcome": ["vcf"] * 3, "group": "all", "time_days": [0.0, 50, 120],
                       "n_at_risk": [5, 5, 3], "n_events": [0, 2, 1], "n_censored": [0, 0, 2],
                       "survival": [1.0, 0.6, 0.4], "ci_lower": [np.nan, 0.2, 0.1],
                       "ci_upper": [np.nan, 0.9, 0.8]})  # fmt: skip
    km.to_csv(tmp_path / "km.csv", index=False)
    out = tmp_path / "cohort"
    cohort_figures(
        roistats_csv=tmp_path / "roistats.csv", response_csv=tmp_path / "response.csv",
        km_csv=tmp_path / "km.csv", trajectory_rois=["tumor", "ctv"], waterfall_rois=["tumor"],
        maps=["ADC", "vp"], sessions=["fu1", "fu2"], km=["vcf", "rim"],
        flag_thresholds={"vp_fall": 20.0}, out_dir=out,
    )  # fmt: skip
    names = cohort.figure_names(trajectory_rois=["tumor", "ctv"], waterfall_rois=["tumor"],
                                maps=["ADC", "vp"], sessions=["fu1", "fu2"],
                                km=["vcf", "rim"])  # fmt: skip
    assert len(names) == 2 + 4 + 2
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted([*names, *(n.replace(".png", ".csv") for n in names)])
    traj = pd.read_csv(out / "trajectories_ctv.csv")
    assert list(traj.columns) == list(TRAJECTORY_COLUMNS)
    assert len(traj) == 5 * 3 * 2
    fall = pd.read_csv(out / "waterfall_tumor_vp_ses-fu2.csv")
    assert list(fall.columns) == list(WATERFALL_COLUMNS)
    assert len(fall) == 5
    assert fall["pct_change"].is_monotonic_decreasing
    assert len(pd.read_csv(out / "km_vcf.csv")) == 3
    assert pd.read_csv(out / "km_rim.csv").empty  # no rim times: a "no data" figure


def test_km_outcomes_need_event_and_days_columns(tmp_path):
    tsv = tmp_path / "participants.tsv"
    tsv.write_text("participant_id\tvcf_event\tvcf_days\trim_event\nsub-01\t1\t30\t0\n")
    assert cohort.km_outcomes(tsv) == ["vcf"]
    assert cohort.km_outcomes(SAMPLE / "participants.tsv") == []
