"""End-to-end: the Snakemake workflow on a small phantom, checked against the phantom's truth."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from qmri import labels, rois
from qmri.phantom import write_phantom_dataset

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
#: ROI medians must be within this relative distance of the phantom's truth (issue #2).
TOLERANCE = 0.05
CHECKED = {"T1": "T1map", "T2": "T2map", "ADC": "ADC", "D": "D"}
#: DCE maps live on a coarse grid (4.5 x 3.75 x 3.75 mm) and take T1 from the VFA grid (nearest
#: neighbour): measured worst -4.7 % (sub-01 pre tumour vp); trilinear T1 gave up to +14 %.
DCE_TOLERANCE = 0.06
DCE_CHECKED = {"Ktrans": "Ktrans", "ve": "ve", "vp": "vp"}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def run_workflow(bids: Path, out: Path, *extra: str, check: bool = True):
    cmd = [
        *SNAKEMAKE, "--snakefile", str(ROOT / "workflow" / "Snakefile"),
        "--configfile", str(ROOT / "config" / "config.yaml"),
        "--cores", "2",
        "--config", f"bids_dir={bids}", f"labels_dir={bids / 'derivatives' / 'labels'}",
        f"output_dir={out}", *extra,
    ]  # fmt: skip
    res = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, check=False)
    if check and res.returncode != 0:
        pytest.fail(f"snakemake failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res


SAMPLE = ROOT / "data_sample"


@pytest.fixture(scope="module")
def processed(tmp_path_factory):
    """The committed sample (two subjects, pre/fu1/fu2) run through the whole workflow.

    Tests only read this output (a test that reruns the workflow works on a copy). With
    ``QMRI_E2E_OUTPUT`` set, the run goes there and stays after the tests: CI compares the
    SLURM run's tables with it (``.ci/slurm.sh``) instead of running the sample locally again.
    """
    keep = os.environ.get("QMRI_E2E_OUTPUT")
    out = Path(keep) if keep else tmp_path_factory.mktemp("wf") / "out"
    if keep:
        shutil.rmtree(out, ignore_errors=True)
    run_workflow(SAMPLE, out)
    return SAMPLE, out


def truth_medians(
    bids: Path,
    subject: str,
    session: str,
    checked=CHECKED,
    roi_names=("tumor", "vb_control", "cord_treated"),
) -> dict[tuple[str, str], float]:
    """Median of each truth map over each derived ROI, from the session's true labels."""
    truth = bids / "derivatives" / "truth" / f"sub-{subject}" / f"ses-{session}" / "anat"
    stem = f"sub-{subject}_ses-{session}"
    dseg = truth / f"{stem}_desc-truth_dseg.nii.gz"
    table = labels.read_dseg_tsv(Path(str(dseg).replace(".nii.gz", ".tsv")))
    part = pd.read_csv(bids / "participants.tsv", sep="\t")
    treated = part.loc[part.participant_id == f"sub-{subject}", "treated_levels"].iloc[0]
    derived = rois.derive_rois(
        np.asarray(nib.load(dseg).dataobj).astype(int), table, labels.parse_levels(treated)
    )
    out = {}
    for name, suffix in checked.items():
        data = np.asarray(nib.load(truth / f"{stem}_desc-truth_{suffix}.nii.gz").dataobj)
        for roi in roi_names:
            out[(roi, name)] = float(np.median(data[derived[roi]]))
    return out


@pytest.mark.slow
def test_roi_medians_match_phantom_truth(processed):
    bids, out = processed
    for subject in ("01", "02"):
        table = pd.read_csv(
            out / f"sub-{subject}" / f"sub-{subject}_roistats.csv",
            dtype={"subject": str, "session": str},
        )
        for session in ("pre", "fu1", "fu2"):
            truth = truth_medians(bids, subject, session)
            for (roi, name), expected in truth.items():
                row = table[
                    (table.session == session) & (table.roi == roi) & (table["map"] == name)
                ]
                assert len(row) == 1, (subject, session, roi, name)
                got = float(row["median"].iloc[0])
                assert abs(got - expected) <= TOLERANCE * abs(expected), (
                    f"sub-{subject} ses-{session} {roi} {name}: {got:.5g} vs truth {expected:.5g}"
                )


@pytest.mark.slow
def test_dce_medians_match_phantom_truth(processed):
    bids, out = processed
    for subject in ("01", "02"):
        table = pd.read_csv(out / f"sub-{subject}" / f"sub-{subject}_roistats.csv",
                            dtype={"subject": str, "session": str})  # fmt: skip
        for session in ("pre", "fu1", "fu2"):
            truth = truth_medians(bids, subject, session, DCE_CHECKED, ("tumor", "vb_control"))
            for (roi, name), expected in truth.items():
                row = table[
                    (table.session == session) & (table.roi == roi) & (table["map"] == name)
                ]
                got = float(row["median"].iloc[0])
                assert abs(got - expected) <= DCE_TOLERANCE * abs(expected), (
                    f"sub-{subject} ses-{session} {roi} {name}: {got:.4g} vs truth {expected:.4g}"
                )


@pytest.mark.slow
def test_tables_follow_the_contract(processed):
    from qmri.tables import RESPONSE_COLUMNS, ROISTATS_COLUMNS

    _, out = processed
    roistats = pd.read_csv(out / "cohort" / "roistats.csv")
    response = pd.read_csv(out / "cohort" / "response.csv")
    tables = sorted(out.glob("**/*.csv"))
    assert len(tables) > 50
    for table in tables:  # every table of the output loads with no options (issue #5)
        assert len(pd.read_csv(table).columns) >= 2, table
    assert list(roistats.columns) == list(ROISTATS_COLUMNS)
    assert list(response.columns) == list(RESPONSE_COLUMNS)
    assert set(roistats["map"]) == {
        "T1", "T2", "ADC", "D", "Dstar", "f", "Ktrans", "kep", "ve", "vp", "iAUC60", "iAUC90"
    }  # fmt: skip
    assert {"tumor", "ctv", "vb_treated_nontumor", "vb_adjacent", "vb_control",
            "cord_treated", "cord_adjacent"} <= set(roistats["roi"])  # fmt: skip
    units = dict(zip(roistats["map"], roistats["unit"], strict=False))
    assert units == {
        "T1": "s", "T2": "s", "ADC": "mm^2/s", "D": "mm^2/s", "Dstar": "mm^2/s", "f": "1",
        "Ktrans": "1/min", "kep": "1/min", "ve": "1", "vp": "1", "iAUC60": "mM*s",
        "iAUC90": "mM*s",
    }  # fmt: skip
    # relaxometry fits succeed everywhere in the ROIs; a few DWI voxels at bone edges (their
    # centres fall in fat-suppressed tissue: noise only) fail and are excluded, not zeroed
    relax = roistats[roistats["map"].isin(["T1", "T2"])]["valid_fraction"].dropna()
    assert (relax > 0.99).all()
    assert (roistats[roistats["map"] == "ADC"]["valid_fraction"].dropna() > 0.7).all()
    # the tumour responds: ADC rises at follow-up
    adc = response[
        (response.roi == "tumor") & (response["map"] == "ADC") & (response.stat == "median")
    ]
    assert (adc[adc.session == "fu1"]["pct_change"] > 10).all()
    # every map has a sidecar with its unit
    t1 = next(out.glob("sub-01/ses-pre/anat/*_desc-vfa_T1map.nii.gz"))
    assert '"Units": "s"' in t1.with_name(t1.name.replace(".nii.gz", ".json")).read_text()
    assert (out / "dataset_description.json").exists()
    # cohort analyses: flags name their thresholds; absent clinical columns are reported
    flags = pd.read_csv(out / "cohort" / "response_flags.csv", dtype={"subject": str})
    rise = flags[(flags.roi == "tumor") & (flags.flag == "adc_rise_gt_25pct")]
    assert set(rise["session"]) == {"fu1", "fu2"}
    # every flag is its threshold applied to the percent change
    assert (rise["value"].astype(str).eq("True") == (rise["pct_change"] > 25)).all()
    # the tumour's median ADC rose 30% (fu1) and 45% (fu2) in the phantom: flagged
    assert rise[rise.stat == "median"]["value"].astype(str).eq("True").all()
    missing = pd.read_csv(out / "cohort" / "outcomes_missing_columns.csv")
    assert not missing.set_index("column").loc["vcf_event", "present"]
    delineation = pd.read_csv(out / "cohort" / "delineation.csv")
    assert (delineation["added_volume_ml"] > 0).all()


@pytest.mark.slow
def test_new_session_schedules_only_its_jobs(tmp_path):
    """Adding ses-fu2 to an analysed study plans only fu2's jobs and the tables they feed."""
    bids = write_phantom_dataset(tmp_path / "bids", n_subjects=2, sessions=("pre", "fu1"),
                                 small=True)  # fmt: skip
    out = tmp_path / "out"
    run_workflow(bids, out)
    more = write_phantom_dataset(
        tmp_path / "more", n_subjects=1, sessions=("pre", "fu1", "fu2"), small=True
    )
    shutil.copytree(more / "sub-01" / "ses-fu2", bids / "sub-01" / "ses-fu2")
    shutil.copy(more / "sub-01" / "sub-01_sessions.tsv", bids / "sub-01" / "sub-01_sessions.tsv")
    res = run_workflow(bids, out, "--dry-run")
    jobs = re.findall(r"^(?:local)?rule (\w+):\n((?:    .*\n)*)", res.stdout, flags=re.MULTILINE)
    assert jobs, res.stdout
    for rule, body in jobs:
        match = re.search(r"wildcards: (.*)", body)
        wildcards = dict(re.findall(r"(\w+)=(\w+)", match.group(1))) if match else {}
        if rule == "subject_tables":
            assert wildcards == {"subject": "01"}
        elif rule not in (
            "cohort_table", "cohort_analyses", "cohort_figures", "report_overview", "all"
        ):  # fmt: skip
            assert wildcards.get("subject") == "01", (rule, wildcards)
            assert wildcards.get("session") == "fu2", (rule, wildcards)
    names = sorted(rule for rule, _ in jobs)
    assert names == sorted(
        ["fit_vfa", "fit_mese", "fit_adc", "fit_ivim", "fit_dce", "register_session",
         "session_roistats", "baseline_space", "qc_session", "subject_tables",
         *["cohort_table"] * 4, "cohort_analyses", "cohort_figures", "report_overview", "all"]
    )  # fmt: skip


@pytest.mark.slow
def test_unknown_config_key_stops_before_any_job(processed, tmp_path):
    bids, _ = processed
    res = run_workflow(bids, tmp_path / "o", "colour=red", "--dry-run", check=False)
    assert res.returncode != 0
    assert "config key 'colour': unknown key" in res.stderr + res.stdout


def _truth_prm(bids: Path, subject: str, session: str, thresholds: dict[str, float]):
    """PRM fractions from the phantom's truth on the baseline grid.

    The anatomy moves rigidly with the patient, so the tissue at a baseline voxel is the same
    tissue at follow-up: its true change is the tissue's follow-up parameter minus its baseline
    one (no resampling involved).
    """
    from qmri import prm

    truth = bids / "derivatives" / "truth"
    base_dir = truth / f"sub-{subject}" / "ses-pre" / "anat"
    stem = f"sub-{subject}_ses-pre"
    dseg = nib.load(base_dir / f"{stem}_desc-truth_dseg.nii.gz")
    table = labels.read_dseg_tsv(base_dir / f"{stem}_desc-truth_dseg.tsv")
    part = pd.read_csv(bids / "participants.tsv", sep="\t")
    treated = part.loc[part.participant_id == f"sub-{subject}", "treated_levels"].iloc[0]
    derived = prm.erode_rois(
        rois.derive_rois(
            np.asarray(dseg.dataobj).astype(int), table, labels.parse_levels(treated)
        ),
        1,
    )
    tissue = np.asarray(nib.load(base_dir / f"{stem}_desc-tissue_dseg.nii.gz").dataobj).astype(int)
    names = pd.read_csv(base_dir / f"{stem}_desc-tissue_dseg.tsv", sep="\t")
    params = pd.read_csv(truth / "tissue_parameters.tsv", sep="\t")
    out = {}
    for name, column in {"T1": "T1", "T2": "T2", "ADC": "D"}.items():
        values = {}
        for ses in ("pre", session):
            by_tissue = params[params.session == ses].set_index("tissue")[column]
            lut = np.full(tissue.max() + 1, np.nan)
            for index, tissue_name in zip(names["index"], names["name"], strict=True):
                lut[index] = by_tissue[tissue_name]
            values[ses] = lut[tissue]
        classes = prm.response_classes(
            values["pre"], values[session], np.isfinite(values["pre"]), thresholds[name]
        )
        for row in prm.response_fractions(classes, derived):
            out[(row["roi"], name)] = row
    return out


@pytest.mark.slow
def test_parametric_response_matches_truth(processed):
    """PRM fractions on the sample match those of the truth (15 percentage points).

    15 points: the eroded tumour holds 28 voxels (one voxel is 3.6 points) and the T1 noise of
    the difference (SD ~0.05 s) moves ~5% of unchanged voxels across the 0.1 s threshold.

    Default config: ROIs eroded by one voxel. Left out, with reason: ADC outside the tumour,
    where the voxel noise of the difference (SD ~57e-6 mm^2/s in marrow, ~30e-6 in cord at the
    sample's SNR) is comparable to the fDM threshold of 55e-6 mm^2/s, so noise alone moves
    15-30% of the voxels across it; and T1 of the treated marrow at fu1, whose true change
    (-0.12 s) sits within two noise SDs of the 0.1 s threshold.
    """
    bids, out = processed
    thresholds = {"T1": 0.1, "T2": 0.01, "ADC": 0.000055}
    checked = 0
    for subject in ("01", "02"):
        table = pd.read_csv(
            out / f"sub-{subject}" / f"sub-{subject}_prm.csv", dtype={"session": str}
        )
        for session in ("fu1", "fu2"):
            truth = _truth_prm(bids, subject, session, thresholds)
            for roi in ("tumor", "vb_treated_nontumor", "vb_control", "cord_treated"):
                for name in thresholds:
                    if name == "ADC" and roi != "tumor":
                        continue
                    if (roi, name, session) == ("vb_treated_nontumor", "T1", "fu1"):
                        continue
                    row = table[
                        (table.session == session) & (table.roi == roi) & (table["map"] == name)
                    ]
                    assert len(row) == 1
                    for kind in ("increased", "decreased", "stable"):
                        got = float(row[f"fraction_{kind}"].iloc[0])
                        want = truth[(roi, name)][f"fraction_{kind}"]
                        assert abs(got - want) <= 0.15, (
                            subject,
                            session,
                            roi,
                            name,
                            kind,
                            got,
                            want,
                        )
                    checked += 1
    assert checked == 2 * 2 * (4 * 3 - 3) - 2


@pytest.mark.slow
def test_session_registration_recovers_the_true_motion(processed):
    """Within 0.5 mm at the treated vertebral body and 0.5 degrees (issue #4)."""
    import json

    from qmri.registration import read_transform, rotation_angles_deg, transform_to_matrix

    bids, out = processed
    for subject in ("01", "02"):
        for session in ("fu1", "fu2"):
            truth = json.loads(
                (bids / "derivatives/truth" / f"sub-{subject}" / f"ses-{session}"
                 / f"sub-{subject}_ses-{session}_desc-truth_motion.json").read_text()
            )  # fmt: skip
            true = np.array(truth["baseline_to_session_ras"])
            xfm = next(
                out.glob(f"sub-{subject}/ses-{session}/xfm/*_from-ref_to-baseline_*xfm.txt")
            )
            got = transform_to_matrix(read_transform(xfm))
            centre = np.append(truth["centre_mm"], 1.0)
            # the treated vertebral body: its centre and points 15 mm away in every direction
            pts = centre + np.vstack([np.zeros(4), *(np.eye(4)[:3] * s * 15 for s in (1, -1))])
            err_mm = np.linalg.norm((pts @ got.T - pts @ true.T)[:, :3], axis=1)
            assert err_mm.max() < 0.5, (subject, session, err_mm)
            assert rotation_angles_deg(np.linalg.inv(true) @ got) < 0.5, (subject, session)


#: Truth maps of the tumour response check, by roistats map name (kep = Ktrans / ve).
RESPONSE_CHECKED = {
    "T1": "T1map", "T2": "T2map", "ADC": "ADC", "D": "D", "f": "f", "Dstar": "Dstar",
    "Ktrans": "Ktrans", "ve": "ve", "vp": "vp",
}  # fmt: skip
#: Issue #5, done when: the tumour's percent change from baseline within 5 points of the truth.
RESPONSE_TOLERANCE_PCT = 5.0


def tumour_response_differences(bids: Path, out: Path) -> pd.DataFrame:
    """Measured minus true percent change of the tumour median, per subject, follow-up and map."""
    rows = []
    for subject in ("01", "02"):
        response = pd.read_csv(out / f"sub-{subject}" / f"sub-{subject}_response.csv",
                               dtype={"subject": str, "session": str})  # fmt: skip
        truth = {
            ses: truth_medians(bids, subject, ses, RESPONSE_CHECKED, ("tumor",))
            for ses in ("pre", "fu1", "fu2")
        }
        for medians in truth.values():
            medians[("tumor", "kep")] = medians[("tumor", "Ktrans")] / medians[("tumor", "ve")]
        for session in ("fu1", "fu2"):
            for name in [*RESPONSE_CHECKED, "kep"]:
                base, follow = truth["pre"][("tumor", name)], truth[session][("tumor", name)]
                want = 100.0 * (follow - base) / base
                row = response[(response.session == session) & (response.roi == "tumor")
                               & (response["map"] == name) & (response.stat == "median")]  # fmt: skip
                got = float(row["pct_change"].iloc[0]) if len(row) == 1 else np.nan
                rows.append({"subject": subject, "session": session, "map": name,
                             "truth_pct": want, "pct_change": got, "difference": got - want})  # fmt: skip
    return pd.DataFrame(rows)


#: D* is the one map not held to 5 points: its estimator noise alone exceeds them. Simulated at
#: the sample's SNR and b-values (0, 50-800 s/mm^2), the median D* of a 30-voxel tumour has a
#: 5-6 % standard deviation (either IVIM method, and also with b = 10, 20, 30 added), so a change
#: between two sessions has an SD of about 7-8 points. It is held to 3 SD instead (measured:
#: up to 12.6 points off a true 0 %).
DSTAR_TOLERANCE_PCT = 20.0


@pytest.mark.slow
def test_tumour_response_matches_truth(processed):
    """Issue #5, done when: the tumour's response within 5 percentage points of the truth.

    Measured on the sample (two subjects x fu1/fu2), largest difference: T1, T2, ADC, D within
    2.4 points (ADC/D: +30 % and +45 % true); f 4.8 (true 0 %, full IVIM fit); Ktrans, kep,
    ve, vp within 3 points (-40 % and -50 % true for Ktrans, kep, vp; 0 % for ve).
    """
    bids, out = processed
    diff = tumour_response_differences(bids, out)
    print(diff.to_string())
    checked = diff[diff["map"] != "Dstar"]
    assert set(checked["map"]) == {"T1", "T2", "ADC", "D", "f", "Ktrans", "kep", "ve", "vp"}
    bad = checked[~(checked["difference"].abs() <= RESPONSE_TOLERANCE_PCT)]
    assert bad.empty, bad.to_string()
    dstar = diff[diff["map"] == "Dstar"]
    assert len(dstar) == 4
    assert (dstar["difference"].abs() <= DSTAR_TOLERANCE_PCT).all(), dstar.to_string()


@pytest.mark.slow
def test_baseline_roi_voxel_counts_equal_the_definitions_on_the_true_labels(processed):
    """At baseline, T1 and T2 (reference grid) count each derived ROI's true voxels exactly."""
    from test_cohort import contract_roi_counts

    bids, out = processed
    part = pd.read_csv(bids / "participants.tsv", sep="\t")
    for subject in ("01", "02"):
        anat = bids / "derivatives/truth" / f"sub-{subject}" / "ses-pre" / "anat"
        dseg = np.asarray(nib.load(anat / f"sub-{subject}_ses-pre_desc-truth_dseg.nii.gz").dataobj)
        table = pd.read_csv(anat / f"sub-{subject}_ses-pre_desc-truth_dseg.tsv", sep="\t")
        treated = part.loc[part.participant_id == f"sub-{subject}", "treated_levels"].iloc[0]
        want = contract_roi_counts(dseg.astype(int),
                                   dict(zip(table["index"], table["name"], strict=True)),
                                   treated.split(","))  # fmt: skip
        stats = pd.read_csv(out / f"sub-{subject}" / f"sub-{subject}_roistats.csv",
                            dtype={"session": str})  # fmt: skip
        for name in ("T1", "T2"):
            rows = stats[(stats.session == "pre") & (stats["map"] == name)]
            got = dict(zip(rows["roi"], rows["n_voxels"].astype(int), strict=True))
            assert got == want, (subject, name)


@pytest.mark.slow
def test_cohort_figures_on_the_sample(processed):
    _, out = processed
    cohort_dir = out / "cohort"
    for roi in ("tumor", "ctv", "vb_treated_nontumor", "cord_treated"):
        traj = pd.read_csv(cohort_dir / f"trajectories_{roi}.csv", dtype={"subject": str})
        assert len(traj) == 2 * 3 * 12, roi  # subjects x sessions x maps
        assert (cohort_dir / f"trajectories_{roi}.png").stat().st_size > 10_000
    fall = pd.read_csv(cohort_dir / "waterfall_tumor_ADC_ses-fu1.csv", dtype={"subject": str})
    assert list(fall["subject"]) == sorted(fall["subject"], key=lambda s: -float(
        fall.set_index("subject").loc[s, "pct_change"]))  # fmt: skip
    assert (fall["pct_change"] > 10).all()
    assert len(list(cohort_dir.glob("waterfall_tumor_*_ses-fu*.png"))) == 12 * 2
    assert not list(cohort_dir.glob("km_*"))  # the sample has no outcome columns


@pytest.mark.slow
def test_dose_analysis_on_the_sample(processed, tmp_path):
    """With the phantom's planned dose, only the dose jobs run; the CTV gets its prescription.

    A subject without a dose file stops the run before any job, naming the file.
    """
    from qmri.phantom import write_phantom_dose

    bids, analysed = processed
    out = Path(shutil.copytree(analysed, tmp_path / "out"))  # the shared output stays as it is
    dose_dir = write_phantom_dose(bids, tmp_path / "dose")
    (tmp_path / "partial" / "sub-01").mkdir(parents=True)
    for f in (dose_dir / "sub-01").iterdir():
        shutil.copy(f, tmp_path / "partial" / "sub-01" / f.name)
    res = run_workflow(bids, out, f"dose_dir={tmp_path / 'partial'}", "--dry-run", check=False)
    assert res.returncode != 0
    assert "sub-02/sub-02_dose.nii.gz: dose map not found" in res.stderr + res.stdout

    res = run_workflow(bids, out, f"dose_dir={dose_dir}")
    ran = set(re.findall(r"^(?:local)?rule (\w+):", res.stdout + res.stderr, flags=re.MULTILINE))
    assert ran <= {"subject_dose", "cohort_table", "describe_output", "all"}, ran
    stats = pd.read_csv(out / "cohort" / "dosestats.csv", dtype={"subject": str})
    part = pd.read_csv(bids / "participants.tsv", sep="\t")
    prescribed = dict(zip(part.participant_id.str[4:], part.dose_gy, strict=True))
    ctv = stats[(stats.roi == "ctv") & (stats.dose_scale == "physical")]
    assert len(ctv) == 2
    for _, row in ctv.iterrows():
        assert row["mean_gy"] == pytest.approx(prescribed[row["subject"]], abs=1e-4)
        assert row["d0_03cc_gy"] == pytest.approx(prescribed[row["subject"]], abs=1e-4)
    bins = pd.read_csv(out / "cohort" / "dosebins.csv", dtype={"subject": str, "session": str})
    # the treated marrow (the marrow at the prescription dose) lost 20% of its T1 at fu1
    hot = bins[(bins.roi == "marrow") & (bins["map"] == "T1") & (bins.session == "fu1")
               & (bins.dose_scale == "physical") & (bins.n_voxels > 0)]  # fmt: skip
    for subject, g in hot.groupby("subject"):
        top = g.loc[g.bin_lower_gy.idxmax()]
        print(subject, top.to_dict())
        assert abs(top["median_pct_change"] - -20.0) <= 1.0, (subject, top.to_dict())


def _png_content(path: Path) -> tuple[tuple[int, ...], float, int]:
    """Shape, pixel standard deviation and number of distinct colours of a PNG."""
    import matplotlib.image as mpimg

    pixels = mpimg.imread(path)
    colours = np.unique((pixels[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    return pixels.shape, float(pixels[..., :3].std()), len(colours)


@pytest.mark.slow
def test_every_session_has_its_qc_figures(processed):
    """Issue #6: a montage per fit, DCE curves, DWI decay and motion traces, every session."""
    from qmri.study import Study

    bids, out = processed
    study = Study(bids, bids / "derivatives" / "labels", reference_suffix="T2w")
    for subject, session in study.session_pairs():
        qc = out / f"sub-{subject}" / "qc" / f"ses-{session}"
        stem = f"sub-{subject}_ses-{session}"
        expected = [f"{stem}_desc-{fit}_montage.png" for fit in study.fits(subject, session)]
        expected += [f"{stem}_dce-curves.png", f"{stem}_dwi-decay.png", f"{stem}_motion.png"]
        assert sorted(p.name for p in qc.glob("*.png")) == sorted(expected)
        for name in expected:
            shape, sd, colours = _png_content(qc / name)
            assert min(shape[:2]) >= 200, name
            assert sd > 0.05, name  # not blank
            assert colours > 50, name  # colour maps, contours, curves: many colours
        boards = list((out / f"sub-{subject}" / "qc").glob(f"{stem}_from-*_checkerboard.png"))
        assert len(boards) == 1 + len({f for f in study.fits(subject, session) if f != "ivim"})


@pytest.mark.slow
def test_every_map_has_a_provenance_sidecar(processed):
    """Issue #6: software version, model, options, inputs; DCE: r1 and its source."""
    import json

    _, out = processed
    images = sorted(out.glob("sub-*/**/*.nii.gz"))
    assert len(images) > 100
    for image in images:
        side = image.with_name(image.name.replace(".nii.gz", ".json"))
        assert side.exists(), image
        meta = json.loads(side.read_text())
        assert meta["SoftwareName"] == "qmri", image
        assert meta["SoftwareVersion"], image
        assert meta["Sources"], image
        fitted = image.parent.name in ("anat", "dwi", "perf", "space-baseline")
        if fitted and "_desc-prm" not in image.name:  # maps of a fit (PRM: class labels)
            assert meta["EstimationAlgorithm"], image
            assert isinstance(meta["ModelOptions"], dict), image
            assert "Units" in meta, image
        if "_desc-dce_" in image.name:  # every DCE map: r1 and where it came from
            assert meta["ModelOptions"]["r1_per_mM_per_s"] == pytest.approx(4.1), image
            assert meta["ModelOptions"]["r1_source"].startswith("gadoteridol at 1.5 T"), image


@pytest.mark.slow
def test_every_job_logs_parameters_time_and_peak_memory(processed):
    """Issues #6 and #7: each rule's log names its parameters, wall time and peak memory."""
    _, out = processed
    logs = sorted((out / "logs").glob("*/*.log"))
    assert len(logs) > 30
    for log in logs:
        text = log.read_text()
        assert "parameters: " in text, log
        assert re.search(r"done in [0-9.]+ s, peak memory [0-9]+ MiB", text), log
    fits = "\n".join(p.read_text() for p in (out / "logs" / "fit_vfa").glob("*.log"))
    assert re.search(r"\d+ voxels fitted, \d+ failed", fits)


@pytest.mark.slow
def test_report_opens_in_headless_chromium_with_figures_on_its_first_page(processed, tmp_path):
    """Issue #6: ``snakemake --report`` holds the figures; Chromium renders it without errors."""
    bids, out = processed
    report = tmp_path / "report.html"
    run_workflow(bids, out, "--report", str(report))
    html = report.read_text(encoding="utf-8")
    assert html.count("data:image/png;base64") >= 2  # the overview figures on the first page
    for caption in ("Parameter maps of one fit", "Motion within each series"):
        assert caption in html
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        if os.environ.get("QMRI_REQUIRE_CHROMIUM"):
            pytest.fail("chromium is required here (QMRI_REQUIRE_CHROMIUM) but not installed")
        pytest.skip("chromium not installed (Debian package chromium)")
    shot = tmp_path / "report.png"
    res = subprocess.run(
        [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--window-size=1400,1400", "--virtual-time-budget=15000", "--enable-logging=stderr",
         "--v=0", f"--screenshot={shot}", report.as_uri()],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    console = [line for line in res.stderr.splitlines() if ":CONSOLE" in line]
    errors = [line for line in console if "Uncaught" in line or ":ERROR:CONSOLE" in line]
    assert not errors, errors
    import matplotlib.image as mpimg

    pixels = (mpimg.imread(shot)[..., :3] * 255).astype(np.int16).reshape(-1, 3)
    assert pixels.shape[0] == 1400 * 1400
    assert pixels.std() > 25  # not a blank page
    # figures (colour maps, curves) bring thousands of saturated colours; text, the menu and
    # the rule graph's few coloured dots do not (measured: 6035 with the overview figures)
    saturated = pixels[(pixels.max(axis=1) - pixels.min(axis=1)) > 40]
    assert len(np.unique(saturated, axis=0)) > 1000


@pytest.mark.slow
def test_output_passes_the_bids_validator_as_a_derivative(processed):
    """Issue #12: the output folder is a valid BIDS derivative dataset (official validator).

    Files outside the BIDS schema (transforms, QC figures, tables, non-standard maps such as
    Ktrans or fitmask) are listed in its ``.bidsignore`` (:func:`qmri.paths.bidsignore`); every
    map sidecar has the keys BIDS requires (``SkullStripped``) as the types it requires.
    """
    from test_phantom import validate_bids

    _, out = processed
    report = validate_bids(out)
    errors = [i for i in report["issues"]["issues"] if i["severity"] == "error"]
    kinds = sorted({i["code"] for i in errors})
    assert errors == [], f"{len(errors)} errors of kinds {kinds}, first: {errors[:3]}"
    assert report["summary"]["dataTypes"], report["summary"]


@pytest.mark.slow
def test_a_planned_ctv_is_reported_beside_the_derived_one(tmp_path):
    """Issue #13: a ``desc-ctvplan_mask`` beside the labels becomes ROI ``ctv_plan``, and
    ``cohort/delineation_plan.csv`` compares the derived ``ctv`` with it."""
    bids = write_phantom_dataset(tmp_path / "bids", n_subjects=1, sessions=("pre", "fu1"),
                                 small=True)  # fmt: skip
    anat = bids / "derivatives" / "labels" / "sub-01" / "ses-pre" / "anat"
    dseg = nib.load(anat / "sub-01_ses-pre_dseg.nii.gz")
    table = labels.read_dseg_tsv(anat / "sub-01_ses-pre_dseg.tsv")
    part = pd.read_csv(bids / "participants.tsv", sep="\t")
    treated = labels.parse_levels(part.loc[0, "treated_levels"])
    derived = rois.derive_rois(np.asarray(dseg.dataobj).astype(int), table, treated)
    plan = derived["tumor"] | derived["vb_treated_nontumor"]  # a plan CTV: GTV + treated body
    nib.save(nib.Nifti1Image(plan.astype(np.uint8), dseg.affine),
             anat / "sub-01_ses-pre_desc-ctvplan_mask.nii.gz")  # fmt: skip
    out = tmp_path / "out"
    config = tmp_path / "nodce.yaml"
    config.write_text("dce:\n  activate: false\n")
    run_workflow(bids, out, "--configfile", str(ROOT / "config" / "config.yaml"), str(config))
    stats = pd.read_csv(out / "sub-01" / "sub-01_roistats.csv", dtype={"session": str})
    voxels = stats[(stats.roi == "ctv_plan") & (stats["map"] == "T1") & (stats.session == "pre")]
    assert len(voxels) == 1
    comparison = pd.read_csv(out / "cohort" / "delineation_plan.csv")
    assert set(comparison["session"].astype(str)) == {"pre", "fu1"}
    # the derived CTV adds the touched posterior elements to the plan's body + GTV
    assert (comparison["added_volume_ml"] >= 0).all()


@pytest.mark.slow
def test_dicom_round_trip(processed, tmp_path):
    """The front door: a DICOM folder (MR series, planning CT, RTSTRUCT, RTDOSE, RTPLAN for
    sub-01; MR series, drawn labels and a dose map for sub-02) -> ``dicom_dir`` -> the tables.

    sub-02 keeps the sample's labels, so its ROI statistics must equal the BIDS sample's (the
    MR conversion is lossless: measured identical to the last digit); sub-01's labels come from
    the RTSTRUCT, so its medians are held to the phantom's truth like the sample's own.
    """
    import datetime as dt

    from dicom_factory import PHI_STRINGS
    from dicom_study_factory import PLAN_DATE, write_dicom_study
    from phi_scan import find_phi

    from qmri.phantom import write_phantom_dose

    _, sample_out = processed
    dicom = write_dicom_study(
        tmp_path, (("pre", -11),), mr_only=[("02", "pre", -14)],
        clinical="participant_id\tsbrt_date\ttreated_levels\tvcf_event\n"
        "sub-02\t2024-01-17\tT12\t1\n",
    )  # fmt: skip
    bids = tmp_path / "bids"
    drawn = SAMPLE / "derivatives" / "labels" / "sub-02"
    shutil.copytree(drawn, bids / "derivatives" / "labels" / "sub-02")
    doses = write_phantom_dose(SAMPLE, tmp_path / "phantom_dose")
    shutil.copytree(doses / "sub-02", bids / "derivatives" / "dose" / "sub-02")
    out = tmp_path / "out"
    res = run_workflow(bids, out, f"dicom_dir={dicom}")
    assert "SBRT date from RTPLAN (RTPlanDate)" in res.stderr
    assert "treated levels: T11 (vertebral bodies >= 50% inside the plan CTV)" in res.stderr

    part = pd.read_csv(bids / "participants.tsv", sep="\t", dtype=str).set_index("participant_id")
    assert part.loc["sub-01", ["treated_levels", "fractions", "dose_gy"]].tolist() == [
        "T11",
        "5",
        "35",
    ]
    assert part.loc["sub-02", ["treated_levels", "vcf_event"]].tolist() == ["T12", "1"]
    for subject in ("01", "02"):
        assert (out / f"sub-{subject}" / f"sub-{subject}_dosestats.csv").is_file()

    def pre_stats(root: Path, subject: str) -> pd.DataFrame:
        table = pd.read_csv(root / f"sub-{subject}" / f"sub-{subject}_roistats.csv",
                            dtype={"subject": str, "session": str})  # fmt: skip
        return table[table.session == "pre"].set_index(["roi", "map"]).sort_index()

    got, want = pre_stats(out, "02"), pre_stats(sample_out, "02")
    assert got.index.equals(want.index)
    rel = (got["median"] - want["median"]).abs() / want["median"].abs()
    assert rel.max() <= 0.01, rel.idxmax()  # measured 0 (identical)
    assert (got["n_voxels"] == want["n_voxels"]).all()

    table = pre_stats(out, "01")
    for (roi, name), expected in truth_medians(SAMPLE, "01", "pre").items():
        value = float(table.loc[(roi, name), "median"])
        assert abs(value - expected) <= TOLERANCE * abs(expected), (roi, name, value, expected)

    dates = [PLAN_DATE + dt.timedelta(days=d) for d in (-11, -14, 0)]
    planted = [*PHI_STRINGS, *(d.strftime("%Y%m%d") for d in dates),
               *(d.isoformat() for d in dates)]  # fmt: skip
    assert find_phi(out, planted) == []
    assert find_phi(bids, planted) == []
