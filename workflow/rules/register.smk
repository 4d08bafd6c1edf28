# Registration: every series to its session's reference, every session to the baseline.
# Transforms are ITK text files under xfm/ with a JSON sidecar (metric, iterations).


rule register_series:
    input:
        series=series_inputs,
        reference=reference_image,
    output:
        xfm="sub-{subject}/ses-{session}/xfm/sub-{subject}_ses-{session}_from-{series}_to-ref_mode-image_xfm.txt",
    params:
        registration=registration_args(),
    log:
        "logs/register_series/sub-{subject}_ses-{session}_{series}.log",
    conda:
        "../envs/qmri.yaml"
    shell:
        "qmri -v pipeline register-series --kind {wildcards.series} --series {input.series} "
        "--reference {input.reference} --out {output.xfm} {params.registration} > {log} 2>&1"


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
