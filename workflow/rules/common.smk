# Helpers of the workflow: config validation, the study index and the rules' input functions.
# All logic lives in the tested qmri package; this file only asks it questions.
from pathlib import Path

import sys

from qmri.config import config_hash, validate_config
from qmri.cohort import dose_files, figure_names, km_outcomes
from qmri.errors import QMRIInputError
from qmri.study import Study, fit_specs

try:
    config.update(
        validate_config(config, Path(workflow.basedir) / "schemas" / "config.schema.yaml")
    )
except QMRIInputError as error:  # one line naming the key, no traceback
    sys.exit(f"qmri: error: {error}")
# Input paths are taken relative to where snakemake was started, before workdir moves.
BIDS_DIR = Path(config["bids_dir"]).resolve()
LABELS_DIR = Path(config["labels_dir"]).resolve()
PARTICIPANTS_TSV = str(BIDS_DIR / "participants.tsv")
CONFIG_SHA256 = config_hash(config)

try:
    STUDY = Study(
        BIDS_DIR,
        LABELS_DIR,
        participant_label=config["participant_label"],
        reference_suffix=config["reference_suffix"],
    )
except QMRIInputError as error:  # one line naming the file, no traceback
    sys.exit(f"qmri: error: {error}")
SUBJECTS = sorted(STUDY.subjects)
# Optional planned dose: every analysed subject needs its dose map (checked here, before any job).
try:
    DOSE_FILES = dose_files(config["dose_dir"], SUBJECTS) if config["dose_dir"] else {}
except QMRIInputError as error:  # one line naming the file, no traceback
    sys.exit(f"qmri: error: {error}")
FITS = fit_specs(config["dce"]["model"])
ENABLED_FITS = [
    fit
    for fit in FITS
    if (fit != "ivim" or config["ivim"]["activate"]) and (fit != "dce" or config["dce"]["activate"])
]


def session_fits(subject, session):
    """The fits of a session: the data it has, less what the config switches off."""
    return STUDY.fits(subject, session, ENABLED_FITS)


wildcard_constraints:
    subject="[a-zA-Z0-9]+",
    session="[a-zA-Z0-9]+",
    fit="|".join(FITS),


def registration_args():
    """Registration options of the config as qmri command-line arguments."""
    reg = config["registration"]
    return (
        f"--bins {reg['bins']} --iterations {reg['iterations']} "
        f"--shrink-factors {' '.join(str(v) for v in reg['shrink_factors'])} "
        f"--smoothing-sigmas-mm {' '.join(str(v) for v in reg['smoothing_sigmas_mm'])} "
        f"--sampling-fraction {reg['sampling_fraction']} --learning-rate {reg['learning_rate']} "
        f"--max-metric {reg['max_metric']}"
    )


def reference_image(wildcards):
    return STUDY.subjects[wildcards.subject].sessions[wildcards.session].reference


def baseline_reference(wildcards):
    idx = STUDY.subjects[wildcards.subject]
    return idx.sessions[idx.baseline].reference


def focus_inputs(wildcards):
    """Baseline labels and participants.tsv when the session metric focuses on treated levels."""
    if config["registration"]["focus"] != "treated_levels":
        return {}
    return {"labels": labels_input(wildcards), "participants": PARTICIPANTS_TSV}


def focus_args(wildcards, input):
    if config["registration"]["focus"] != "treated_levels":
        return ""
    return (
        f"--focus-labels {input.labels} --participants {input.participants} "
        f"--subject {wildcards.subject}"
    )


def baseline_reference_of_subject(wildcards):
    idx = STUDY.subjects[wildcards.subject]
    return idx.sessions[idx.baseline].reference


def vfa_inputs(wildcards):
    return STUDY.series_files(wildcards.subject, wildcards.session, "VFA")


def b1_inputs(wildcards):
    """The session's TB1map when B1 correction is on and the session has one, else nothing."""
    b1 = STUDY.subjects[wildcards.subject].sessions[wildcards.session].b1map
    return [b1] if (b1 is not None and config["t1_vfa"]["b1_correction"]) else []


def b1_arg(wildcards, input):
    return f"--b1 {input.b1}" if input.b1 else ""


def mese_inputs(wildcards):
    return STUDY.series_files(wildcards.subject, wildcards.session, "MESE")


def megre_inputs(wildcards):
    return STUDY.series_files(wildcards.subject, wildcards.session, "MEGRE")


def irt1_inputs(wildcards):
    return STUDY.series_files(wildcards.subject, wildcards.session, "IRT1")


def multi_echo_args(section):
    """Options of a multi-echo fit (config section t2 or t2star) as command-line flags."""
    flags = {"drop_first_echo": "--drop-first-echo", "noise_floor": "--noise-floor"}
    return " ".join(flag for key, flag in flags.items() if config[section][key])


def dce_inputs(wildcards):
    s, ses = wildcards.subject, wildcards.session
    inputs = {
        "dce": STUDY.subjects[s].sessions[ses].dce,
        "t1": fit_output(s, ses, "vfa", "T1map"),
        "t1_xfm": series_xfm(s, ses, "vfa"),
    }
    if config["dce"]["aif"] == "aorta":  # the AIF is measured in the baseline aorta label
        inputs.update(aif_labels=labels_input(wildcards), session_xfm=session_xfm(s, ses))
    return inputs


def dce_args(wildcards, input):
    dce = config["dce"]
    args = f"--model {dce['model']} --method {dce['method']} --hematocrit {dce['hematocrit']}"
    if dce["aif"] == "aorta":
        args += f" --aif-labels {input.aif_labels} --session-xfm {input.session_xfm}"
    if dce["r1"] is not None:
        args += f" --r1 {dce['r1']}"
    if dce["fit_delay"]:
        args += " --fit-delay"
    if input.b1:
        args += f" --b1 {input.b1}"
    return args


def dwi_inputs(wildcards):
    dwi = STUDY.subjects[wildcards.subject].sessions[wildcards.session].dwi
    return {
        "dwi": dwi,
        "bval": str(dwi).replace(".nii.gz", ".bval"),
    }


def fit_prefix(wildcards, output):
    """Output prefix of a fit: the first map's path without its suffix."""
    return str(output.maps[0]).rsplit("_", 1)[0]


def labels_input(wildcards):
    return STUDY.subjects[wildcards.subject].labels


def labels_tsv_input(wildcards):
    return str(STUDY.subjects[wildcards.subject].labels).replace(".nii.gz", ".tsv")


def fit_output(subject, session, fit, suffix):
    """Path of one output map of a fit."""
    return (
        f"sub-{subject}/ses-{session}/{FITS[fit]['datatype']}/"
        f"sub-{subject}_ses-{session}_desc-{fit}_{suffix}.nii.gz"
    )


def series_xfm(subject, session, fit):
    series = FITS[fit]["series"]
    return f"sub-{subject}/ses-{session}/xfm/sub-{subject}_ses-{session}_from-{series}_to-ref_mode-image_xfm.txt"


def session_xfm(subject, session):
    return f"sub-{subject}/ses-{session}/xfm/sub-{subject}_ses-{session}_from-ref_to-baseline_mode-image_xfm.txt"


def rois_mask(subject):
    return f"sub-{subject}/rois/sub-{subject}_space-baseline_desc-rois_mask.nii.gz"


def fit_inputs(subject, session, key=""):
    """Map, fit mask and series transform of every fit of a session, as named inputs."""
    out = {}
    for fit in session_fits(subject, session):
        for suffix, _ in FITS[fit]["statistics"]:
            out[f"{key}{fit}_{suffix}"] = fit_output(subject, session, fit, suffix)
        out[f"{key}{fit}_fitmask"] = fit_output(subject, session, fit, "fitmask")
        out[f"{key}{fit}_xfm"] = series_xfm(subject, session, fit)
    return out


def map_args(subject, session, input, option="--map", key=""):
    """``--map NAME MAP FITMASK SERIES_XFM`` for every fit of a session."""
    args = []
    for fit in session_fits(subject, session):
        for suffix, name in FITS[fit]["statistics"]:
            files = [input[f"{key}{fit}_{part}"] for part in (suffix, "fitmask", "xfm")]
            args.append(f"{option} {name} {' '.join(str(f) for f in files)}")
    return " ".join(args)


def session_stat_inputs(wildcards):
    s, ses = wildcards.subject, wildcards.session
    return {
        "rois": rois_mask(s),
        "session_xfm": session_xfm(s, ses),
        **fit_inputs(s, ses),
    }


def session_stat_args(wildcards, input):
    return map_args(wildcards.subject, wildcards.session, input)


def baseline_space_inputs(wildcards):
    s, ses = wildcards.subject, wildcards.session
    base = STUDY.subjects[s].baseline
    return {
        "rois": rois_mask(s),
        "reference": baseline_reference(wildcards),
        "session_xfm": session_xfm(s, ses),
        "baseline_session_xfm": session_xfm(s, base),
        **fit_inputs(s, ses),
        **fit_inputs(s, base, key="baseline_"),
    }


def baseline_space_args(wildcards, input):
    s, ses = wildcards.subject, wildcards.session
    base = STUDY.subjects[s].baseline
    thresholds = " ".join(f"--threshold {k} {v}" for k, v in config["prm"]["thresholds"].items())
    thresholds += f" --erode-voxels {config['prm']['erode_voxels']}"
    return " ".join(
        [
            map_args(s, ses, input),
            map_args(s, base, input, "--baseline-map", "baseline_"),
            thresholds,
        ]
    )


def xfm_sidecars(subject):
    """JSON sidecars of every transform of a subject (for the registration table)."""
    out = []
    for ses in STUDY.subjects[subject].sessions:
        out.append(session_xfm(subject, ses).replace(".txt", ".json"))
        out += sorted(
            {series_xfm(subject, ses, fit).replace(".txt", ".json") for fit in session_fits(subject, ses)}
        )
    return out


def subject_table_inputs(wildcards):
    s = wildcards.subject
    sessions = list(STUDY.subjects[s].sessions)
    return {
        "sessions": [f"sub-{s}/ses-{ses}/sub-{s}_ses-{ses}_roistats.csv" for ses in sessions],
        "prm": [f"sub-{s}/ses-{ses}/sub-{s}_ses-{ses}_prm.csv" for ses in sessions],
        "xfm": xfm_sidecars(s),
        "sessions_tsv": STUDY.subjects[s].sessions_tsv,
    }


def subject_table_paths(kind):
    return [f"sub-{s}/sub-{s}_{kind}.csv" for s in SUBJECTS]


def cohort_inputs(wildcards):
    return subject_table_paths(wildcards.kind)


def moco_trace(subject, session, fit):
    series = FITS[fit]["series"]
    return f"sub-{subject}/ses-{session}/xfm/sub-{subject}_ses-{session}_desc-moco{series}_motion.tsv"


def moco_xfm(subject, session, fit):
    return moco_trace(subject, session, fit).replace("_motion.tsv", "_xfm.txt")


def qc_inputs(wildcards):
    """Maps, transforms, motion traces and raw DWI/DCE series a session's QC figures show."""
    s, ses = wildcards.subject, wildcards.session
    fits = session_fits(s, ses)
    files = STUDY.subjects[s].sessions[ses]
    inputs = {
        "rois": rois_mask(s),
        "session_xfm": session_xfm(s, ses),
        "maps": [fit_output(s, ses, fit, suffix) for fit in fits for suffix in FITS[fit]["suffixes"]],
        "xfms": [series_xfm(s, ses, fit) for fit in fits],
        "motion": sorted({moco_trace(s, ses, fit) for fit in fits}),
    }
    if "adc" in fits:
        inputs.update(dwi=files.dwi, dwi_moco=moco_xfm(s, ses, "adc"))
    if "dce" in fits:
        inputs.update(dce=files.dce, dce_moco=moco_xfm(s, ses, "dce"), b1=b1_inputs(wildcards))
    return inputs


def qc_args(wildcards, input):
    s, ses = wildcards.subject, wildcards.session
    args = [
        f"--fit {fit} {fit_prefix_of(s, ses, fit)} {series_xfm(s, ses, fit)}"
        for fit in session_fits(s, ses)
    ]
    args.append(f"--motion {' '.join(input.motion)}")
    if "dwi" in input.keys():
        args.append(f"--dwi {input.dwi} --dwi-moco {input.dwi_moco}")
    if "dce" in input.keys():
        args.append(f"--dce {input.dce} --dce-moco {input.dce_moco}")
        if input.b1:
            args.append(f"--b1 {input.b1}")
    return " ".join(args)


def fit_prefix_of(subject, session, fit):
    return fit_output(subject, session, fit, "R2").rsplit("_", 1)[0]


def overview_inputs(wildcards):
    """The first trajectory figure of the cohort and the QC folder of the first session."""
    subject, session = STUDY.session_pairs()[0]
    inputs = {"qc": f"sub-{subject}/qc/ses-{session}"}
    if config["figures"]["trajectory_rois"]:
        inputs["trajectory"] = f"cohort/trajectories_{config['figures']['trajectory_rois'][0]}.png"
    return inputs


def overview_figures(wildcards, input):
    """Figures on the report's first page: cohort trajectories, then one session's QC."""
    subject, session = STUDY.session_pairs()[0]
    fits = session_fits(subject, session)
    stem = f"{input.qc}/sub-{subject}_ses-{session}"
    figures = [input.trajectory] if "trajectory" in input.keys() else []
    if "dce" in fits:
        figures.append(f"{stem}_dce-curves.png")
    figures += [f"{stem}_desc-{fit}_montage.png" for fit in fits[:1]]
    return " ".join(figures)


def qc_paths():
    """The QC figure folder of every session."""
    return [f"sub-{s}/qc/ses-{ses}" for s, ses in STUDY.session_pairs()]


def flag_args():
    """--flag RULE PERCENT for every configured response flag."""
    return " ".join(f"--flag {k} {v}" for k, v in config["response_flags"].items())


def baseline_grid_dirs(subject):
    """Every session's maps on the baseline grid (folders written by baseline_space)."""
    return [f"sub-{subject}/ses-{ses}/space-baseline" for ses in STUDY.subjects[subject].sessions]


def dose_inputs(wildcards):
    s = wildcards.subject
    return {
        "dose": DOSE_FILES[s],
        "rois": rois_mask(s),
        "participants": PARTICIPANTS_TSV,
        "sessions_tsv": STUDY.subjects[s].sessions_tsv,
        "maps": baseline_grid_dirs(s),
    }


def dose_args():
    """Dose options of the config as qmri command-line arguments."""
    dose = config["dose"]
    return (
        f"--bin-edges {' '.join(str(v) for v in dose['bin_edges_gy'])} "
        f"--eqd2-bin-edges {' '.join(str(v) for v in dose['eqd2_bin_edges_gy'])} "
        + " ".join(f"--alpha-beta {k} {v}" for k, v in dose["alpha_beta_gy"].items())
        + f" --hot-volume-cc {dose['hot_volume_cc']} --binned-rois {' '.join(dose['binned_rois'])}"
    )


def study_maps():
    """Every map any session of the study gets, in the order of the fits."""
    names = []
    for fit in FITS:
        if any(fit in session_fits(s, ses) for s in SUBJECTS for ses in STUDY.subjects[s].sessions):
            names += [name for _, name in FITS[fit]["statistics"] if name not in names]
    return names


def followup_sessions():
    """Labels of every follow-up session of the study, earliest first."""
    first = {}
    for s in SUBJECTS:
        idx = STUDY.subjects[s]
        for ses, day in idx.days.items():
            if ses != idx.baseline and ses in idx.sessions:
                first[ses] = min(day, first.get(ses, day))
    return sorted(first, key=lambda ses: (first[ses], ses))


try:  # outcomes with event and days columns get Kaplan-Meier figures
    KM_OUTCOMES = km_outcomes(PARTICIPANTS_TSV) if Path(PARTICIPANTS_TSV).exists() else []
except QMRIInputError as error:
    sys.exit(f"qmri: error: {error}")


def cohort_figure_files():
    """PNGs of the cohort figures, each with its CSV."""
    pngs = figure_names(
        trajectory_rois=config["figures"]["trajectory_rois"],
        waterfall_rois=config["figures"]["waterfall_rois"],
        maps=study_maps(),
        sessions=followup_sessions(),
        km=KM_OUTCOMES,
    )
    files = []
    for name in pngs:
        stem = f"cohort/{name.removesuffix('.png')}"
        kind = name.split("_")[0]  # trajectories, waterfall, km
        caption = Path(workflow.basedir) / "report" / f"cohort_{kind}.rst"
        png = report(f"{stem}.png", caption=str(caption), category="Cohort",
                     subcategory=kind, labels={"figure": name.removesuffix(".png")})  # fmt: skip
        files += [png, f"{stem}.csv"]
    return files


def cohort_figure_args():
    fig = config["figures"]
    return " ".join(
        [
            f"--trajectory-rois {' '.join(fig['trajectory_rois'])}",
            f"--waterfall-rois {' '.join(fig['waterfall_rois'])}",
            f"--maps {' '.join(study_maps())}",
            f"--sessions {' '.join(followup_sessions())}",
            f"--km-outcomes {' '.join(KM_OUTCOMES)}",
            flag_args(),
        ]
    )


def dose_outputs():
    """The dose tables, when dose_dir is set."""
    if not DOSE_FILES:
        return []
    return [
        *subject_table_paths("dosestats"),
        *subject_table_paths("dosebins"),
        "cohort/dosestats.csv",
        "cohort/dosebins.csv",
    ]


def final_outputs():
    """Every table and QC figure folder of every subject, the cohort outputs, the description."""
    return [
        *dose_outputs(),
        *cohort_figure_files(),
        *qc_paths(),
        "cohort/report_overview.html",
        *subject_table_paths("roistats"),
        *subject_table_paths("response"),
        *subject_table_paths("prm"),
        *subject_table_paths("registration"),
        "cohort/roistats.csv",
        "cohort/response.csv",
        "cohort/prm.csv",
        "cohort/registration.csv",
        "cohort/response_flags.csv",
        "cohort/delineation.csv",
        "dataset_description.json",
    ]
