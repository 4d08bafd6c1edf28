# Registration of each session's reference to the baseline reference (rigid, mutual
# information). Each series is registered to its session's reference by its fit rule.
# Transforms are ITK text files under xfm/ with a JSON sidecar (metric, iterations).


rule register_session:
    input:
        reference=reference_image,
        baseline=baseline_reference,
    output:
        xfm="sub-{subject}/ses-{session}/xfm/sub-{subject}_ses-{session}_from-ref_to-baseline_mode-image_xfm.txt",
    params:
        registration=registration_args(),
    log:
        "logs/register_session/sub-{subject}_ses-{session}.log",
    conda:
        "../envs/qmri.yaml"
    shell:
        "qmri -v pipeline register-session --reference {input.reference} "
        "--baseline {input.baseline} --out {output.xfm} {params.registration} > {log} 2>&1"
