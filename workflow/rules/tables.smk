# Tables: per-session ROI statistics, per-subject roistats.csv and response.csv (data contract
# section 3), cohort tables, and the derivative's dataset_description.json.


localrules:
    subject_tables,
    cohort_table,
    cohort_analyses,
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
    conda:
        "../envs/qmri.yaml"
    shell:
        "qmri -v pipeline session-roistats {params.maps} --rois {input.rois} "
        "--session-xfm {input.session_xfm} --out {output} > {log} 2>&1"


rule subject_tables:
    input:
        unpack(subject_table_inputs),
    output:
        roistats="sub-{subject}/sub-{subject}_roistats.csv",
        response="sub-{subject}/sub-{subject}_response.csv",
        prm="sub-{subject}/sub-{subject}_prm.csv",
        registration="sub-{subject}/sub-{subject}_registration.csv",
    log:
        "logs/subject_tables/sub-{subject}.log",
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
        kind="roistats|response|prm|registration",
    log:
        "logs/cohort_table/{kind}.log",
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
    conda:
        "../envs/qmri.yaml"
    shell:
        "qmri -v pipeline cohort-analyses --roistats {input.roistats} "
        "--response {input.response} --participants {input.participants} --out-dir cohort "
        "{params.flags} --min-events {params.min_events} > {log} 2>&1"
