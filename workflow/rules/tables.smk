# Tables: per-session ROI statistics, per-subject roistats.csv and response.csv (data contract
# section 3), cohort tables, the cohort analyses and figures, the dose tables (with dose_dir)
# and the derivative's dataset_description.json and .bidsignore.
# Steps: qmri.steps.tables, qmri.steps.cohort, qmri.steps.dose.


localrules:
    subject_tables,
    cohort_table,
    cohort_analyses,
    cohort_figures,
    describe_output,


rule session_roistats:
    input:
        maps=lambda wildcards: map_inputs(wildcards.subject, wildcards.session),
        rois=OUT.rois_mask(S),
        session_xfm=OUT.session_xfm(S, T),
    output:
        OUT.session_table(S, T, "roistats"),
    params:
        maps=lambda wildcards: table_map_files(wildcards.subject, wildcards.session),
    log:
        OUT.log("session_roistats", "sub-{subject}_ses-{session}"),
    # measured on data_sample (see README, Running on a cluster): peak RSS 274 MB, wall 14 s median / 18 s max
    threads: 1
    resources:
        mem_mb=600,
        runtime=5,
    conda:
        "../envs/qmri.yaml"
    script:
        "../scripts/session_roistats.py"


rule subject_tables:
    input:
        sessions=lambda wildcards: [
            OUT.session_table(wildcards.subject, ses, "roistats")
            for ses in sessions_of(wildcards.subject)
        ],
        prm=lambda wildcards: [
            OUT.session_table(wildcards.subject, ses, "prm") for ses in sessions_of(wildcards.subject)
        ],
        xfm=lambda wildcards: xfm_sidecars(wildcards.subject),
        sessions_tsv=lambda wildcards: STUDY.subjects[wildcards.subject].sessions_tsv,
    output:
        roistats=report(
            OUT.subject_table(S, "roistats"),
            caption="../report/roistats.rst",
            category="Tables",
            subcategory="sub-{subject}",
            labels={"table": "ROI statistics"},
        ),
        response=report(
            OUT.subject_table(S, "response"),
            caption="../report/response.rst",
            category="Tables",
            subcategory="sub-{subject}",
            labels={"table": "change from baseline"},
        ),
        prm=OUT.subject_table(S, "prm"),
        registration=OUT.subject_table(S, "registration"),
    log:
        OUT.log("subject_tables", "sub-{subject}"),
    # measured on data_sample (see README, Running on a cluster): peak RSS 152 MB, wall 12 s
    threads: 1
    resources:
        mem_mb=400,
        runtime=5,
    conda:
        "../envs/qmri.yaml"
    script:
        "../scripts/subject_tables.py"


rule cohort_table:
    input:
        tables=lambda wildcards: subject_tables_of(wildcards.kind),
    output:
        OUT.cohort("{kind}.csv"),
    wildcard_constraints:
        kind="roistats|response|prm|registration|dosestats|dosebins",
    log:
        OUT.log("cohort_table", "{kind}"),
    # measured on data_sample (see README, Running on a cluster): peak RSS 150 MB, wall 17 s (2 subjects)
    threads: 1
    resources:
        mem_mb=400,
        runtime=5,
    conda:
        "../envs/qmri.yaml"
    script:
        "../scripts/cohort_table.py"


rule describe_output:
    output:
        OUT.dataset_description(),
    params:
        bids_dir=str(STUDY.bids_dir),
        config_sha256=CONFIG_SHA256,
        bidsignore=bidsignore(all_map_suffixes(config)),
    log:
        OUT.log("describe_output", "describe_output"),
    # measured on data_sample (see README, Running on a cluster): peak RSS 47 MB, wall 2 s
    threads: 1
    resources:
        mem_mb=100,
        runtime=5,
    conda:
        "../envs/qmri.yaml"
    script:
        "../scripts/describe_output.py"


rule cohort_analyses:
    input:
        roistats=OUT.cohort("roistats.csv"),
        response=OUT.cohort("response.csv"),
        participants=PARTICIPANTS_TSV,
    output:
        [
            OUT.cohort(name)
            for name in (
                "response_flags.csv",
                "delineation.csv",
                "delineation_summary.csv",
                "delineation_plan.csv",
                "outcomes_logistic.csv",
                "outcomes_cox.csv",
                "outcomes_km.csv",
                "outcomes_missing_columns.csv",
            )
        ],
    params:
        flags=config["response_flags"],
        min_events=config["outcomes"]["min_events"],
        out_dir=lambda wildcards, output: str(Path(output[0]).parent),
    log:
        OUT.log("cohort_analyses", "cohort_analyses"),
    # measured on data_sample (see README, Running on a cluster): peak RSS 152 MB, wall 8 s (2 subjects)
    threads: 1
    resources:
        mem_mb=400,
        runtime=5,
    conda:
        "../envs/qmri.yaml"
    script:
        "../scripts/cohort_analyses.py"


rule subject_dose:
    input:
        dose=lambda wildcards: DOSE_FILES[wildcards.subject],
        rois=OUT.rois_mask(S),
        participants=PARTICIPANTS_TSV,
        sessions_tsv=lambda wildcards: STUDY.subjects[wildcards.subject].sessions_tsv,
        maps=lambda wildcards: [
            OUT.baseline_space_dir(wildcards.subject, ses) for ses in sessions_of(wildcards.subject)
        ],
    output:
        stats=OUT.subject_table(S, "dosestats"),
        bins=OUT.subject_table(S, "dosebins"),
    params:
        baseline=lambda wildcards: baseline_of(wildcards.subject),
        dose=config["dose"],
    log:
        OUT.log("subject_dose", "sub-{subject}"),
    # measured on data_sample (see README, Running on a cluster): not in the sample: as baseline_space
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    conda:
        "../envs/qmri.yaml"
    script:
        "../scripts/subject_dose.py"


rule cohort_figures:
    input:
        roistats=OUT.cohort("roistats.csv"),
        response=OUT.cohort("response.csv"),
        km=OUT.cohort("outcomes_km.csv"),
    output:
        cohort_figure_files(),
    params:
        figures=config["figures"],
        maps=study_maps(),
        sessions=followup_sessions(),
        km=KM_OUTCOMES,
        flags=config["response_flags"],
        out_dir=lambda wildcards, output: str(Path(output[0]).parent),
    log:
        OUT.log("cohort_figures", "cohort_figures"),
    # measured on data_sample (see README, Running on a cluster): not in the sample run measured: as cohort_analyses
    threads: 1
    resources:
        mem_mb=400,
        runtime=5,
    conda:
        "../envs/qmri.yaml"
    script:
        "../scripts/cohort_figures.py"
