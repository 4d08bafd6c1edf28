# Registration of each session's reference to the baseline reference (rigid, mutual
# information, focused on the treated levels by default). Each series is registered to its
# session's reference by its first fit rule. Transforms are ITK text files under xfm/ with a
# JSON sidecar (metric, its bound, flagged or not). Step: qmri.steps.register.register_session.


rule register_session:
    input:
        reference=reference_image,
        baseline=baseline_reference,
        labels=lambda wildcards: (
            labels_input(wildcards) if config["registration"]["focus"] == "treated_levels" else []
        ),
        participants=PARTICIPANTS_TSV,
    output:
        xfm=OUT.session_xfm(S, T),
        xfm_json=OUT.session_xfm(S, T, "json"),
        checkerboard=report(
            OUT.checkerboard(S, T, "ref", "baseline"),
            caption="../report/qc_registration.rst",
            category="Registration",
            subcategory="sub-{subject}",
            labels={"session": "{session}", "figure": "from-ref_to-baseline_checkerboard"},
        ),
    params:
        registration=config["registration"],
    log:
        OUT.log("register_session", "sub-{subject}_ses-{session}"),
    # measured on data_sample (see README, Running on a cluster): peak RSS 288 MB, wall 11 s median / 25 s max
    threads: 1
    resources:
        mem_mb=600,
        runtime=5,
    conda:
        "../envs/qmri.yaml"
    script:
        "../scripts/register_session.py"
