# Tables: per-session ROI statistics, per-subject roistats.csv and response.csv (data contract
# section 3), cohort tables, and the derivative's dataset_description.json.


localrules:
    subject_tables,
    cohort_table,
    cohort_analyses,
    cohort_figures,
    describe_output,


rule session_roistats:
    input:
        unpack(session_stat_inputs),
    output:
        "sub-{subject}/ses-{session}/sub-{subject}_ses-{session}_roistats.csv",
    params:
        maps=session_stat_args,
    log:
        "logs/session_roistats/sub-{subject}_ses-{session}.log",
    # measured on data_sample (see README, Running on a cluster): peak RSS 274 MB, wall 14 s median / 18 s max
    threads: 1
    resources:
        mem_mb=600,
        runtime=5,
    conda:
        "../envs/qmri.yaml"
    shell:
        "qmri -v pipeline session-roistats {params.maps} --rois {input.rois} "
        "--session-xfm {input.session_xfm} --out {output} > {log} 2>&1"


rule subject_tables:
    input:
        unpack(subject_table_inputs),
    output:
        roistats=report(
            "sub-{subject}/sub-{subject}_roistats.csv",
            caption="../report/roistats.rst",
            category="Tables",
            subcategory="sub-{subject}",
            labels={"table": "ROI statistics"},
        ),
        response=report(
            "sub-{subject}/sub-{subject}_response.csv",
            caption="../report/response.rst",
            category="Tables",
            subcategory="sub-{subject}",
            labels={"table": "change from baseline"},
        ),
        prm="sub-{subject}/sub-{subject}_prm.csv",
        registration="sub-{subject}/sub-{subject}_registration.csv",
    log:
        "logs/subject_tables/sub-{subject}.log",
    # measured on data_sample (see README, Running on a cluster): peak RSS 152 MB, wall 12 s
    threads: 1
    resources:
        mem_mb=400,
        runtime=5,
    conda:
        "../envs/qmri.yaml"
    shell:
        "qmri -v pipeline subject-tables --subject {wildcards.subject} "
        "--sessions {input.sessions} --sessions-tsv {input.sessions_tsv} "
        "--out-roistats {output.roistats} --out-response {output.response} "
        "--prm {input.prm} --out-prm {output.prm} --xfm-sidecars {input.xfm} "
        "--out-registration {output.registration} > {log} 2>&1"


rule cohort_table:
    input:
        tables=cohort_inputs,
    output:
        "cohort/{kind}.csv",
    wildcard_constraints:
        kind="roistats|response|prm|registration|dosestats|dosebins",
    log:
        "logs/cohort_table/{kind}.log",
    # measured on data_sample (see README, Running on a cluster): peak RSS 150 MB, wall 17 s (2 subjects)
    threads: 1
    resources:
        mem_mb=400,
        runtime=5,
    conda:
        "../envs/qmri.yaml"
    shell:
        "qmri -v pipeline cohort-table --tables {input.tables} --out {output} > {log} 2>&1"


rule describe_output:
    output:
        "dataset_description.json",
    params:
        bids_dir=str(BIDS_DIR),
        config_sha256=CONFIG_SHA256,
    log:
        "logs/describe_output.log",
    # measured on data_sample (see README, Running on a cluster): peak RSS 47 MB, wall 2 s
    threads: 1
    resources:
        mem_mb=100,
        runtime=5,
    conda:
        "../envs/qmri.yaml"
    shell:
        "qmri -v pipeline describe-output --bids-dir {params.bids_dir} "
        "--config-sha256 {params.config_sha256} --output-dir . > {log} 2>&1"


rule cohort_analyses:
    input:
        roistats="cohort/roistats.csv",
        response="cohort/response.csv",
        participants=PARTICIPANTS_TSV,
    output:
        multiext(
            "cohort/",
            "response_flags.csv",
            "delineation.csv",
            "delineation_summary.csv",
            "outcomes_logistic.csv",
            "outcomes_cox.csv",
            "outcomes_km.csv",
            "outcomes_missing_columns.csv",
        ),
    params:
        flags=flag_args(),
        min_events=config["outcomes"]["min_events"],
    log:
        "logs/cohort_analyses.log",
    # measured on data_sample (see README, Running on a cluster): peak RSS 152 MB, wall 8 s (2 subjects)
    threads: 1
    resources:
        mem_mb=400,
        runtime=5,
    conda:
        "../envs/qmri.yaml"
    shell:
        "qmri -v pipeline cohort-analyses --roistats {input.roistats} "
        "--response {input.response} --participants {input.participants} --out-dir cohort "
        "{params.flags} --min-events {params.min_events} > {log} 2>&1"


rule subject_dose:
    input:
        unpack(dose_inputs),
    output:
        stats="sub-{subject}/sub-{subject}_dosestats.csv",
        bins="sub-{subject}/sub-{subject}_dosebins.csv",
    params:
        baseline=lambda wildcards: STUDY.subjects[wildcards.subject].baseline,
        options=dose_args(),
    log:
        "logs/subject_dose/sub-{subject}.log",
    # measured on data_sample (see README, Running on a cluster): not in the sample: as baseline_space
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    conda:
        "../envs/qmri.yaml"
    shell:
        "qmri -v pipeline subject-dose --subject {wildcards.subject} --dose {input.dose} "
        "--rois {input.rois} --participants {input.participants} "
        "--sessions-tsv {input.sessions_tsv} --baseline-session {params.baseline} "
        "--baseline-grid-dirs {input.maps} {params.options} "
        "--out-stats {output.stats} --out-bins {output.bins} > {log} 2>&1"


rule cohort_figures:
    input:
        roistats="cohort/roistats.csv",
        response="cohort/response.csv",
        km="cohort/outcomes_km.csv",
    output:
        cohort_figure_files(),
    params:
        options=cohort_figure_args(),
    log:
        "logs/cohort_figures.log",
    # measured on data_sample (see README, Running on a cluster): not in the sample run measured: as cohort_analyses
    threads: 1
    resources:
        mem_mb=400,
        runtime=5,
    conda:
        "../envs/qmri.yaml"
    shell:
        "qmri -v pipeline cohort-figures --roistats {input.roistats} --response {input.response} "
        "--km {input.km} --out-dir cohort {params.options} > {log} 2>&1"
