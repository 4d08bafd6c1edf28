# Longitudinal view: every session's maps resampled onto the baseline grid (for display and
# voxelwise change only) and the parametric response maps of each follow-up (per ROI, the
# fractions of voxels whose value rose, fell or stayed within the configured threshold).


rule baseline_space:
    input:
        unpack(baseline_space_inputs),
    output:
        maps=directory("sub-{subject}/ses-{session}/space-baseline"),
        prm="sub-{subject}/ses-{session}/sub-{subject}_ses-{session}_prm.csv",
    params:
        maps=baseline_space_args,
    log:
        "logs/baseline_space/sub-{subject}_ses-{session}.log",
    # measured on data_sample (see README, Running on a cluster): peak RSS 234 MB, wall 10 s median / 11 s max
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    conda:
        "../envs/qmri.yaml"
    shell:
        "qmri -v pipeline baseline-space {params.maps} --session-xfm {input.session_xfm} "
        "--baseline-session-xfm {input.baseline_session_xfm} --reference {input.reference} "
        "--rois {input.rois} --out-dir {output.maps} --out {output.prm} "
        "--stem sub-{wildcards.subject}_ses-{wildcards.session} > {log} 2>&1"
