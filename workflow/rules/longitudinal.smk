# Longitudinal view: every session's maps resampled onto the baseline grid (for display and
# voxelwise change only) and the parametric response maps of each follow-up (per ROI, the
# fractions of voxels whose value rose, fell or stayed within the configured threshold).
# Step: qmri.steps.longitudinal.baseline_space.


rule baseline_space:
    input:
        maps=lambda wildcards: map_inputs(wildcards.subject, wildcards.session),
        baseline_maps=lambda wildcards: map_inputs(
            wildcards.subject, baseline_of(wildcards.subject)
        ),
        session_xfm=OUT.session_xfm(S, T),
        baseline_session_xfm=lambda wildcards: OUT.session_xfm(
            wildcards.subject, baseline_of(wildcards.subject)
        ),
        reference=baseline_reference,
        rois=OUT.rois_mask(S),
    output:
        maps=directory(OUT.baseline_space_dir(S, T)),
        prm=OUT.session_table(S, T, "prm"),
    params:
        maps=lambda wildcards: table_map_files(wildcards.subject, wildcards.session),
        baseline_maps=lambda wildcards: table_map_files(
            wildcards.subject, baseline_of(wildcards.subject)
        ),
        prm=config["prm"],
    log:
        OUT.log("baseline_space", "sub-{subject}_ses-{session}"),
    # measured on data_sample (see README, Running on a cluster): peak RSS 234 MB, wall 10 s median / 11 s max
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    conda:
        "../envs/qmri.yaml"
    script:
        "../scripts/baseline_space.py"
