# ROIs: derived once per subject on the baseline labels (data contract section 2), then pulled
# back into each map's native grid through the composed transforms (nearest neighbour).


rule derive_rois:
    input:
        dseg=labels_input,
        tsv=labels_tsv_input,
        reference=baseline_reference_of_subject,
        participants=str(BIDS_DIR / "participants.tsv"),
    output:
        mask="sub-{subject}/rois/sub-{subject}_space-baseline_desc-rois_mask.nii.gz",
        names="sub-{subject}/rois/sub-{subject}_space-baseline_desc-rois_mask.tsv",
    log:
        "logs/derive_rois/sub-{subject}.log",
    conda:
        "../envs/qmri.yaml"
    shell:
        "qmri -v pipeline derive-rois --dseg {input.dseg} --reference {input.reference} "
        "--participants {input.participants} --subject {wildcards.subject} "
        "--out {output.mask} > {log} 2>&1"


rule pull_back_rois:
    input:
        unpack(pull_back_inputs),
    output:
        mask="sub-{subject}/ses-{session}/rois/sub-{subject}_ses-{session}_space-{fit}_desc-rois_mask.nii.gz",
        names="sub-{subject}/ses-{session}/rois/sub-{subject}_ses-{session}_space-{fit}_desc-rois_mask.tsv",
    log:
        "logs/pull_back_rois/sub-{subject}_ses-{session}_{fit}.log",
    conda:
        "../envs/qmri.yaml"
    shell:
        "qmri -v pipeline pull-back-rois --rois {input.rois} --map {input.map} "
        "--series-xfm {input.series_xfm} --session-xfm {input.session_xfm} "
        "--out {output.mask} > {log} 2>&1"
