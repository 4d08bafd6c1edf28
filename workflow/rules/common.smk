# Helpers of the workflow: config validation, the study index and the rules' input functions.
# All logic lives in the tested qmri package; this file only asks it questions.
from pathlib import Path

import sys

from qmri.config import config_hash, validate_config
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


def dce_inputs(wildcards):
    s, ses = wildcards.subject, wildcards.session
    return {
        "dce": STUDY.subjects[s].sessions[ses].dce,
        "t1": fit_output(s, ses, "vfa", "T1map"),
        "t1_xfm": series_xfm(s, ses, "vfa"),
    }


def dce_args(wildcards, input):
    dce = config["dce"]
    args = f"--model {dce['model']} --hematocrit {dce['hematocrit']}"
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


def flag_args():
    """--flag RULE PERCENT for every configured response flag."""
    return " ".join(f"--flag {k} {v}" for k, v in config["response_flags"].items())


def final_outputs():
    """Every table of every subject, the cohort tables and the dataset description."""
    return [
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
