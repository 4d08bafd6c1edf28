# Planning the workflow: config validation, the study index and the rules' input functions.
# Every file name comes from qmri.paths (DerivativeLayout), every fit from qmri.registry; the
# rules hand config sections to the step functions of qmri.steps unchanged.
from pathlib import Path

import sys

from qmri.cohort import dose_files, figure_names, km_outcomes
from qmri.config import DEFAULT_SCHEMA, config_hash, load_schema, schema_with_sections
from qmri.config import snakemake_config_sources, validate_config
from qmri.errors import QMRIInputError
from qmri.paths import DerivativeLayout, bidsignore, map_suffix
from qmri.registry import FITS, all_map_suffixes, enabled_fits, load_plugins, motion_source
from qmri.study import Study


def _plan():
    """Validate the config (plugin sections included) and index the study: one line on error."""
    load_plugins(config.get("plugins", []))
    sections = {s.section: s.config_schema for s in FITS.values() if s.config_schema}
    schema = schema_with_sections(sections, load_schema(DEFAULT_SCHEMA))
    valid = validate_config(config, schema, sources=snakemake_config_sources(workflow))
    if valid["dicom_dir"]:  # imported by the main process only; cluster jobs plan the same
        from qmri.dicom.study import import_for_workflow

        valid["dose_dir"] = import_for_workflow(valid, run_import=workflow.is_main_process)
    study = Study(
        Path(valid["bids_dir"]).resolve(),
        Path(valid["labels_dir"]).resolve(),
        participant_label=valid["participant_label"],
        reference_suffix=valid["reference_suffix"],
    )
    dose = dose_files(valid["dose_dir"], sorted(study.subjects)) if valid["dose_dir"] else {}
    participants = study.participants_tsv
    km = km_outcomes(participants) if participants.exists() else []
    return valid, study, dose, km


try:
    _valid, STUDY, DOSE_FILES, KM_OUTCOMES = _plan()
except QMRIInputError as error:  # one line naming the file or key, no traceback
    sys.exit(f"qmri: error: {error}")
config.update(_valid)
OUT = DerivativeLayout(config["output_dir"].rstrip("/"))
PARTICIPANTS_TSV = str(STUDY.participants_tsv)
CONFIG_SHA256 = config_hash(config)
SUBJECTS = sorted(STUDY.subjects)
ENABLED_FITS = enabled_fits(config)
S, T = "{subject}", "{session}"  # wildcard patterns of the paths


wildcard_constraints:
    subject="[a-zA-Z0-9]+",
    session="[a-zA-Z0-9]+",


def session_fits(subject, session):
    """The fits of a session: the data it has, less what the config switches off."""
    return STUDY.fits(subject, session, ENABLED_FITS)


def sessions_of(subject):
    return list(STUDY.subjects[subject].sessions)


def baseline_of(subject):
    return STUDY.subjects[subject].baseline


def reference_image(wildcards):
    return STUDY.subjects[wildcards.subject].sessions[wildcards.session].reference


def baseline_reference(wildcards):
    idx = STUDY.subjects[wildcards.subject]
    return idx.sessions[idx.baseline].reference


def labels_input(wildcards):
    return STUDY.subjects[wildcards.subject].labels


def labels_tsv_input(wildcards):
    return str(STUDY.subjects[wildcards.subject].labels).replace(".nii.gz", ".tsv")


# -- fits ------------------------------------------------------------------------------------


def fit_map(subject, session, fit, suffix):
    """One output map of a fit (``suffix``: ``T1map``, ``R2``, ``fitmask`` ...)."""
    return OUT.fit_map(subject, session, FITS[fit].datatype, fit, suffix)


def fit_prefix(subject, session, fit):
    return OUT.fit_prefix(subject, session, FITS[fit].datatype, fit)


def series_xfm(subject, session, fit, ext="txt"):
    return OUT.series_xfm(subject, session, FITS[fit].series.name, ext)


def moco_xfm(subject, session, fit):
    return OUT.moco_xfm(subject, session, FITS[fit].series.name)


def b1_used(spec, wildcards):
    """The session's TB1map when the fit uses B1 correction and the session has one."""
    b1 = STUDY.subjects[wildcards.subject].sessions[wildcards.session].b1map
    return str(b1) if (b1 is not None and spec.uses_b1(config)) else None


def fit_inputs(spec):
    """Input function of the fit_<name> rules (the raw series, B1 map, what the fit needs)."""

    def inputs(wildcards):
        s, ses = wildcards.subject, wildcards.session
        files = {"series": STUDY.series_files(s, ses, spec.series.name)}
        b1 = b1_used(spec, wildcards)
        if b1 is not None:
            files["b1"] = b1
        if motion_source(spec, config) is spec:
            files["reference"] = reference_image(wildcards)
        else:  # the first fit of the series registered and motion-corrected it
            files["series_xfm"] = series_xfm(s, ses, spec.name)
            files["moco_xfm"] = moco_xfm(s, ses, spec.name)
        for name, (fit, param) in spec.requires.items():
            files[name] = fit_map(s, ses, fit, map_suffix(param))
            files[f"{name}_xfm"] = series_xfm(s, ses, fit)
        if spec.reads_labels(config):
            files["labels"] = labels_input(wildcards)
            files["session_xfm"] = OUT.session_xfm(s, ses)
        return files

    return inputs


def fit_outputs(spec):
    """Outputs of the fit_<name> rules (maps; for a series' first fit its transforms too)."""
    datatype = spec.datatype
    out = {
        "maps": [OUT.fit_map(S, T, datatype, spec.name, m.suffix) for m in spec.maps(config)],
    }
    if motion_source(spec, config) is spec:
        series = spec.series.name
        out.update(
            xfm=OUT.series_xfm(S, T, series),
            xfm_json=OUT.series_xfm(S, T, series, "json"),
            checkerboard=report(
                OUT.checkerboard(S, T, series, "ref"),
                caption="../report/qc_registration.rst",
                category="Registration",
                subcategory="sub-{subject}",
                labels={"session": "{session}", "figure": f"from-{series}_to-ref_checkerboard"},
            ),
            moco=OUT.moco_xfm(S, T, series),
            trace=OUT.moco_trace(S, T, series),
        )
    return out


# -- ROI statistics and baseline space -------------------------------------------------------


def table_map_files(subject, session):
    """(table name, map, fitmask, series transform) of every reported map of a session."""
    out = []
    for fit in session_fits(subject, session):
        for m in FITS[fit].table_maps(config):
            out.append((m.table, fit_map(subject, session, fit, m.suffix),
                        fit_map(subject, session, fit, "fitmask"), series_xfm(subject, session, fit)))  # fmt: skip
    return out


def map_inputs(subject, session):
    return sorted({f for row in table_map_files(subject, session) for f in row[1:]})


def xfm_sidecars(subject):
    """JSON sidecars of every transform of a subject (for the registration table)."""
    out = []
    for ses in sessions_of(subject):
        out.append(OUT.session_xfm(subject, ses, "json"))
        out += sorted({series_xfm(subject, ses, fit, "json") for fit in session_fits(subject, ses)})
    return out


def study_maps():
    """Every reported map any session of the study gets, in the order of the fits."""
    names = []
    for spec in ENABLED_FITS:
        if any(spec.name in session_fits(s, ses) for s, ses in STUDY.session_pairs()):
            names += [m.table for m in spec.table_maps(config) if m.table not in names]
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


# -- QC --------------------------------------------------------------------------------------


def qc_inputs(wildcards):
    """Maps, transforms, motion traces and raw series a session's QC figures show."""
    s, ses = wildcards.subject, wildcards.session
    fits = session_fits(s, ses)
    inputs = {
        "maps": [fit_map(s, ses, fit, m.suffix) for fit in fits for m in FITS[fit].maps(config)],
        "xfms": sorted({series_xfm(s, ses, fit) for fit in fits}),
        "motion": sorted({OUT.moco_trace(s, ses, FITS[fit].series.name) for fit in fits}),
        "rois": OUT.rois_mask(s),
        "session_xfm": OUT.session_xfm(s, ses),
    }
    if "adc" in fits:
        inputs.update(dwi=STUDY.series_files(s, ses, "dwi"), dwi_moco=moco_xfm(s, ses, "adc"))
    if "dce" in fits:
        inputs.update(fit_inputs(FITS["dce"])(wildcards))
        inputs.update(dce_moco=moco_xfm(s, ses, "dce"))
        inputs.pop("reference", None)
    return inputs


def qc_dce(wildcards, input):
    """The DCE fit's request arguments for the QC figures (None without a DCE fit)."""
    if "dce_moco" not in input.keys():
        return None
    spec = FITS["dce"]
    names = [*spec.requires, *(f"{n}_xfm" for n in spec.requires)]
    if spec.reads_labels(config):
        names += ["labels", "session_xfm"]
    return {
        "series": list(input.series),
        "moco_xfm": input.dce_moco,
        "options": spec.options(config),
        "b1": input.b1 if "b1" in input.keys() else None,
        "inputs": {n: input[n] for n in names},
    }


def overview_figures(wildcards, input):
    """Figures on the report's first page: cohort trajectories, then one session's QC."""
    subject, session = STUDY.session_pairs()[0]
    fits = session_fits(subject, session)
    stem = f"{input.qc}/{OUT.stem(subject, session)}"
    figures = [input.trajectory] if "trajectory" in input.keys() else []
    if "dce" in fits:
        figures.append(f"{stem}_dce-curves.png")
    figures += [f"{stem}_desc-{fit}_montage.png" for fit in fits[:1]]
    return figures


def overview_inputs(wildcards):
    subject, session = STUDY.session_pairs()[0]
    inputs = {"qc": OUT.qc_session_dir(subject, session)}
    if config["figures"]["trajectory_rois"]:
        inputs["trajectory"] = OUT.cohort(f"trajectories_{config['figures']['trajectory_rois'][0]}.png")
    return inputs


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
        stem = OUT.cohort(name.removesuffix(".png"))
        kind = name.split("_")[0]  # trajectories, waterfall, km
        caption = Path(workflow.basedir) / "report" / f"cohort_{kind}.rst"
        png = report(f"{stem}.png", caption=str(caption), category="Cohort",
                     subcategory=kind, labels={"figure": name.removesuffix(".png")})  # fmt: skip
        files += [png, f"{stem}.csv"]
    return files


# -- targets ---------------------------------------------------------------------------------


def subject_tables_of(kind):
    return [OUT.subject_table(s, kind) for s in SUBJECTS]


def dose_outputs():
    """The dose tables, when dose_dir is set."""
    if not DOSE_FILES:
        return []
    return [
        *subject_tables_of("dosestats"),
        *subject_tables_of("dosebins"),
        OUT.cohort("dosestats.csv"),
        OUT.cohort("dosebins.csv"),
    ]


def final_outputs():
    """Every table and QC figure folder of every subject, the cohort outputs, the description."""
    return [
        *dose_outputs(),
        *cohort_figure_files(),
        *[OUT.qc_session_dir(s, ses) for s, ses in STUDY.session_pairs()],
        OUT.cohort("report_overview.html"),
        *[t for kind in ("roistats", "response", "prm", "registration") for t in subject_tables_of(kind)],
        *[OUT.cohort(f"{kind}.csv") for kind in ("roistats", "response", "prm", "registration")],
        OUT.cohort("response_flags.csv"),
        OUT.cohort("delineation.csv"),
        OUT.dataset_description(),
    ]
