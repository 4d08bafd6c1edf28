# ROIs: derived once per subject from the baseline labels (data contract section 2), written
# as one 4D mask on the baseline grid. The session statistics pull them back into each map's
# native grid through the composed transforms (nearest neighbour).


rule derive_rois:
    input:
        dseg=labels_input,
        tsv=labels_tsv_input,
        reference=baseline_reference_of_subject,
        participants=PARTICIPANTS_TSV,
    output:
        mask="sub-{subject}/rois/sub-{subject}_space-baseline_desc-rois_mask.nii.gz",
        names="sub-{subject}/rois/sub-{subject}_space-baseline_desc-rois_mask.tsv",
    log:
        "logs/derive_rois/sub-{subject}.log",
    # measured on data_sample (see README, Running on a cluster): peak RSS 157 MB, wall 8 s
    threads: 1
    resources:
        mem_mb=400,
        runtime=5,
    conda:
        "../envs/qmri.yaml"
    shell:
        "qmri -v pipeline derive-rois --dseg {input.dseg} --reference {input.reference} "
        "--participants {input.participants} --subject {wildcards.subject} "
        "--out {output.mask} > {log} 2>&1"
