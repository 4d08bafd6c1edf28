# Registration of each session's reference to the baseline reference (rigid, mutual
# information). Each series is registered to its session's reference by its fit rule.
# Transforms are ITK text files under xfm/ with a JSON sidecar (metric, iterations).


rule register_session:
    input:
        unpack(focus_inputs),
        reference=reference_image,
        baseline=baseline_reference,
    output:
        xfm="sub-{subject}/ses-{session}/xfm/sub-{subject}_ses-{session}_from-ref_to-baseline_mode-image_xfm.txt",
        xfm_json="sub-{subject}/ses-{session}/xfm/sub-{subject}_ses-{session}_from-ref_to-baseline_mode-image_xfm.json",
        qc=report(
            "sub-{subject}/qc/sub-{subject}_ses-{session}_from-ref_to-baseline_checkerboard.png",
            caption="../report/qc_registration.rst",
            category="Registration",
            subcategory="sub-{subject}",
            labels={"session": "{session}", "figure": "from-ref_to-baseline_checkerboard"},
        ),
    params:
        registration=registration_args(),
        focus=focus_args,
    log:
        "logs/register_session/sub-{subject}_ses-{session}.log",
    # measured on data_sample (see README, Running on a cluster): peak RSS 288 MB, wall 11 s median / 25 s max
    threads: 1
    resources:
        mem_mb=600,
        runtime=5,
    conda:
        "../envs/qmri.yaml"
    shell:
        "qmri -v pipeline register-session --reference {input.reference} "
        "--baseline {input.baseline} --out {output.xfm} --qc {output.qc} {params.focus} "
        "{params.registration} > {log} 2>&1"
