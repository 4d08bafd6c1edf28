# Helpers of the workflow: config validation, the study index and the rules' input functions.
# All logic lives in the tested qmri package; this file only asks it questions.
from pathlib import Path

import sys

from qmri.config import config_hash, validate_config
from qmri.errors import QMRIInputError
from qmri.study import FITS, Study

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
        f"--sampling-fraction {reg['sampling_fraction']} --learning-rate {reg['learning_rate']}"
    )


def reference_image(wildcards):
    return STUDY.subjects[wildcards.subject].sessions[wildcards.session].reference


def baseline_reference(wildcards):
    idx = STUDY.subjects[wildcards.subject]
    return idx.sessions[idx.baseline].reference


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


def session_stat_inputs(wildcards):
    s, ses = wildcards.subject, wildcards.session
    out = {
        "rois": f"sub-{s}/rois/sub-{s}_space-baseline_desc-rois_mask.nii.gz",
        "session_xfm": f"sub-{s}/ses-{ses}/xfm/sub-{s}_ses-{ses}_from-ref_to-baseline_mode-image_xfm.txt",
    }
    for fit in STUDY.fits(s, ses):
        out[f"{fit}_map"] = fit_output(s, ses, fit, FITS[fit]["statistic"][0])
        out[f"{fit}_fitmask"] = fit_output(s, ses, fit, "fitmask")
        out[f"{fit}_xfm"] = series_xfm(s, ses, fit)
    return out


def session_stat_args(wildcards, input):
    """--map NAME MAP FITMASK SERIES_XFM for every fit of the session."""
    args = []
    for fit in STUDY.fits(wildcards.subject, wildcards.session):
        name = FITS[fit]["statistic"][1]
        args.append(
            f"--map {name} {input[fit + '_map']} {input[fit + '_fitmask']} {input[fit + '_xfm']}"
        )
    return " ".join(args)


def subject_session_tables(wildcards):
    s = wildcards.subject
    return [
        f"sub-{s}/ses-{ses}/sub-{s}_ses-{ses}_roistats.csv"
        for ses in STUDY.subjects[s].sessions
    ]


def sessions_tsv(wildcards):
    return STUDY.subjects[wildcards.subject].sessions_tsv


def subject_table_paths(kind):
    return [f"sub-{s}/sub-{s}_{kind}.csv" for s in SUBJECTS]


def cohort_inputs(wildcards):
    return subject_table_paths(wildcards.kind)


def final_outputs():
    """Every table of every subject, the cohort tables and the dataset description."""
    return [
        *subject_table_paths("roistats"),
        *subject_table_paths("response"),
        "cohort/roistats.csv",
        "cohort/response.csv",
        "dataset_description.json",
    ]
