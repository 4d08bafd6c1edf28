# Quality-control figures of every session (qmri/qc_figures.py): a montage of each fit's maps
# with ROI contours and colour bars (R2 and fit mask included), DCE AIF and ROI curves with the
# fitted model, DWI signal decay per ROI with the ADC/IVIM fits, and the within-series motion
# traces. Registration checkerboards come from the fit and registration rules themselves.


rule qc_session:
    input:
        unpack(qc_inputs),
    output:
        report(
            directory("sub-{subject}/qc/ses-{session}"),
            patterns=["{name}.png"],
            caption="../report/qc_session.rst",
            category="Quality control",
            subcategory="sub-{subject} ses-{session}",
            labels={"subject": "{subject}", "session": "{session}", "figure": "{name}"},
        ),
    params:
        args=qc_args,
    log:
        "logs/qc_session/sub-{subject}_ses-{session}.log",
    # not in the measured run (README, Running on a cluster): as session_roistats until measured
    threads: 1
    resources:
        mem_mb=600,
        runtime=5,
    conda:
        "../envs/qmri.yaml"
    shell:
        "qmri -v pipeline qc-session --subject {wildcards.subject} --session {wildcards.session} "
        "--rois {input.rois} --session-xfm {input.session_xfm} {params.args} --out-dir {output} "
        "> {log} 2>&1"


localrules:
    report_overview,


# The first page of `snakemake --report` (workflow/report/workflow.rst) shows these figures.
rule report_overview:
    input:
        unpack(overview_inputs),
    output:
        report(
            "cohort/report_overview.html",
            caption="../report/overview.rst",
            category="Overview",
            labels={"figure": "key figures"},
        ),
    params:
        figures=overview_figures,
    log:
        "logs/report_overview.log",
    # not in the measured run (README, Running on a cluster): as cohort_analyses until measured
    threads: 1
    resources:
        mem_mb=400,
        runtime=5,
    conda:
        "../envs/qmri.yaml"
    shell:
        "qmri -v pipeline report-overview --figures {params.figures} --out {output} > {log} 2>&1"
