# Quality-control figures of every session (qmri/qc_figures.py draws them): a montage of each
# fit's maps with ROI contours and colour bars (R2 and fit mask included), DCE AIF and ROI
# curves with the fitted model (computed by the fit's own code), DWI signal decay per ROI with
# the ADC/IVIM fits, and the within-series motion traces. Registration checkerboards come
# from the fit and registration rules themselves. Steps: qmri.steps.qc.


rule qc_session:
    input:
        unpack(qc_inputs),
    output:
        report(
            directory(OUT.qc_session_dir(S, T)),
            patterns=["{name}.png"],
            caption="../report/qc_session.rst",
            category="Quality control",
            subcategory="sub-{subject} ses-{session}",
            labels={"subject": "{subject}", "session": "{session}", "figure": "{name}"},
        ),
    params:
        fits=lambda wildcards: [
            (fit, fit_prefix(wildcards.subject, wildcards.session, fit),
             series_xfm(wildcards.subject, wildcards.session, fit))
            for fit in session_fits(wildcards.subject, wildcards.session)
        ],  # fmt: skip
        dce=qc_dce,
    log:
        OUT.log("qc_session", "sub-{subject}_ses-{session}"),
    # not in the measured run (README, Running on a cluster): as session_roistats until measured
    threads: 1
    resources:
        mem_mb=600,
        runtime=5,
    conda:
        "../envs/qmri.yaml"
    script:
        "../scripts/qc_session.py"


localrules:
    report_overview,


# The first page of `snakemake --report` (workflow/report/workflow.rst) shows these figures.
rule report_overview:
    input:
        unpack(overview_inputs),
    output:
        report(
            OUT.cohort("report_overview.html"),
            caption="../report/overview.rst",
            category="Overview",
            labels={"figure": "key figures"},
        ),
    params:
        figures=overview_figures,
    log:
        OUT.log("report_overview", "report_overview"),
    # not in the measured run (README, Running on a cluster): as cohort_analyses until measured
    threads: 1
    resources:
        mem_mb=400,
        runtime=5,
    conda:
        "../envs/qmri.yaml"
    script:
        "../scripts/report_overview.py"
