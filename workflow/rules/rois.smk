# ROIs: derived once per subject from the baseline labels (data contract section 2), written
# as one 4D mask on the baseline grid. The session statistics pull them back into each map's
# native grid through the composed transforms (nearest neighbour).
# Step: qmri.steps.rois.derive_subject_rois.


rule derive_rois:
    input:
        dseg=labels_input,
        tsv=labels_tsv_input,
        reference=baseline_reference,
        participants=PARTICIPANTS_TSV,
        ctv_plan=lambda wildcards: STUDY.subjects[wildcards.subject].ctv_plan or [],
    output:
        mask=OUT.rois_mask(S),
        names=OUT.rois_mask(S).replace(".nii.gz", ".tsv"),
    log:
        OUT.log("derive_rois", "sub-{subject}"),
    # measured on data_sample (see README, Running on a cluster): peak RSS 157 MB, wall 8 s
    threads: 1
    resources:
        mem_mb=400,
        runtime=5,
    conda:
        "../envs/qmri.yaml"
    script:
        "../scripts/derive_rois.py"
