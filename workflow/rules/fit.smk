# Model fits in each series' native grid: T1 from VFA (B1-corrected), T2 from MESE, ADC and
# IVIM from DWI, DCE kinetics with the session's T1 map. Each fit job first corrects motion
# within its series (rigid, to the series' own reference; transforms and displacement trace in
# xfm/) and then registers the series to the session reference. Every map gets a JSON sidecar
# with its unit, algorithm and every option used.


rule fit_vfa:
    input:
        vfa=vfa_inputs,
        b1=b1_inputs,
        reference=reference_image,
    output:
        maps=multiext(
            "sub-{subject}/ses-{session}/anat/sub-{subject}_ses-{session}_desc-vfa_",
            "T1map.nii.gz",
            "M0map.nii.gz",
            "R2.nii.gz",
            "fitmask.nii.gz",
        ),
        xfm="sub-{subject}/ses-{session}/xfm/sub-{subject}_ses-{session}_from-VFA_to-ref_mode-image_xfm.txt",
        xfm_json="sub-{subject}/ses-{session}/xfm/sub-{subject}_ses-{session}_from-VFA_to-ref_mode-image_xfm.json",
        qc="sub-{subject}/qc/sub-{subject}_ses-{session}_from-VFA_to-ref_checkerboard.png",
        moco="sub-{subject}/ses-{session}/xfm/sub-{subject}_ses-{session}_desc-mocoVFA_xfm.txt",
        trace="sub-{subject}/ses-{session}/xfm/sub-{subject}_ses-{session}_desc-mocoVFA_motion.tsv",
    params:
        prefix=fit_prefix,
        method=config["t1_vfa"]["method"],
        b1=b1_arg,
        registration=registration_args(),
    log:
        "logs/fit_vfa/sub-{subject}_ses-{session}.log",
    conda:
        "../envs/qmri.yaml"
    shell:
        "qmri -v pipeline fit-vfa --vfa {input.vfa} {params.b1} --method {params.method} "
        "--out {params.prefix} --reference {input.reference} --xfm {output.xfm} --qc {output.qc} --moco-xfm {output.moco} --moco-trace {output.trace} "
        "{params.registration} > {log} 2>&1"


rule fit_mese:
    input:
        echoes=mese_inputs,
        reference=reference_image,
    output:
        maps=multiext(
            "sub-{subject}/ses-{session}/anat/sub-{subject}_ses-{session}_desc-mese_",
            "T2map.nii.gz",
            "S0map.nii.gz",
            "R2.nii.gz",
            "fitmask.nii.gz",
        ),
        xfm="sub-{subject}/ses-{session}/xfm/sub-{subject}_ses-{session}_from-MESE_to-ref_mode-image_xfm.txt",
        xfm_json="sub-{subject}/ses-{session}/xfm/sub-{subject}_ses-{session}_from-MESE_to-ref_mode-image_xfm.json",
        qc="sub-{subject}/qc/sub-{subject}_ses-{session}_from-MESE_to-ref_checkerboard.png",
        moco="sub-{subject}/ses-{session}/xfm/sub-{subject}_ses-{session}_desc-mocoMESE_xfm.txt",
        trace="sub-{subject}/ses-{session}/xfm/sub-{subject}_ses-{session}_desc-mocoMESE_motion.tsv",
    params:
        prefix=fit_prefix,
        drop_first_echo="--drop-first-echo" if config["t2"]["drop_first_echo"] else "",
        registration=registration_args(),
    log:
        "logs/fit_mese/sub-{subject}_ses-{session}.log",
    conda:
        "../envs/qmri.yaml"
    shell:
        "qmri -v pipeline fit-t2 --echoes {input.echoes} {params.drop_first_echo} "
        "--out {params.prefix} --reference {input.reference} --xfm {output.xfm} --qc {output.qc} --moco-xfm {output.moco} --moco-trace {output.trace} "
        "{params.registration} > {log} 2>&1"


rule fit_adc:
    input:
        unpack(dwi_inputs),
        reference=reference_image,
    output:
        maps=multiext(
            "sub-{subject}/ses-{session}/dwi/sub-{subject}_ses-{session}_desc-adc_",
            "ADC.nii.gz",
            "S0map.nii.gz",
            "R2.nii.gz",
            "fitmask.nii.gz",
        ),
        xfm="sub-{subject}/ses-{session}/xfm/sub-{subject}_ses-{session}_from-dwi_to-ref_mode-image_xfm.txt",
        xfm_json="sub-{subject}/ses-{session}/xfm/sub-{subject}_ses-{session}_from-dwi_to-ref_mode-image_xfm.json",
        qc="sub-{subject}/qc/sub-{subject}_ses-{session}_from-dwi_to-ref_checkerboard.png",
        moco="sub-{subject}/ses-{session}/xfm/sub-{subject}_ses-{session}_desc-mocodwi_xfm.txt",
        trace="sub-{subject}/ses-{session}/xfm/sub-{subject}_ses-{session}_desc-mocodwi_motion.tsv",
    params:
        prefix=fit_prefix,
        b_min=config["adc"]["b_min"],
        b_max=config["adc"]["b_max"],
        registration=registration_args(),
    log:
        "logs/fit_adc/sub-{subject}_ses-{session}.log",
    conda:
        "../envs/qmri.yaml"
    shell:
        "qmri -v pipeline fit-adc --dwi {input.dwi} --b-min {params.b_min} "
        "--b-max {params.b_max} --out {params.prefix} --reference {input.reference} "
        "--xfm {output.xfm} --qc {output.qc} --moco-xfm {output.moco} --moco-trace {output.trace} {params.registration} > {log} 2>&1"


rule fit_ivim:
    input:
        unpack(dwi_inputs),
        moco="sub-{subject}/ses-{session}/xfm/sub-{subject}_ses-{session}_desc-mocodwi_xfm.txt",
    output:
        maps=multiext(
            "sub-{subject}/ses-{session}/dwi/sub-{subject}_ses-{session}_desc-ivim_",
            *(f"{suffix}.nii.gz" for suffix in FITS["ivim"]["suffixes"]),
        ),
    params:
        prefix=fit_prefix,
        b_threshold=config["ivim"]["b_threshold"],
        method=config["ivim"]["method"],
    log:
        "logs/fit_ivim/sub-{subject}_ses-{session}.log",
    conda:
        "../envs/qmri.yaml"
    shell:
        "qmri -v pipeline fit-ivim --dwi {input.dwi} --b-threshold {params.b_threshold} "
        "--method {params.method} --moco-xfm {input.moco} --out {params.prefix} > {log} 2>&1"


rule fit_dce:
    input:
        unpack(dce_inputs),
        b1=b1_inputs,
        reference=reference_image,
    output:
        maps=multiext(
            "sub-{subject}/ses-{session}/perf/sub-{subject}_ses-{session}_desc-dce_",
            *(f"{suffix}.nii.gz" for suffix in FITS["dce"]["suffixes"]),
        ),
        xfm="sub-{subject}/ses-{session}/xfm/sub-{subject}_ses-{session}_from-dce_to-ref_mode-image_xfm.txt",
        xfm_json="sub-{subject}/ses-{session}/xfm/sub-{subject}_ses-{session}_from-dce_to-ref_mode-image_xfm.json",
        qc="sub-{subject}/qc/sub-{subject}_ses-{session}_from-dce_to-ref_checkerboard.png",
        moco="sub-{subject}/ses-{session}/xfm/sub-{subject}_ses-{session}_desc-mocodce_xfm.txt",
        trace="sub-{subject}/ses-{session}/xfm/sub-{subject}_ses-{session}_desc-mocodce_motion.tsv",
    params:
        prefix=fit_prefix,
        dce=dce_args,
        registration=registration_args(),
    log:
        "logs/fit_dce/sub-{subject}_ses-{session}.log",
    conda:
        "../envs/qmri.yaml"
    shell:
        "qmri -v pipeline fit-dce --dce {input.dce} --t1 {input.t1} --t1-xfm {input.t1_xfm} "
        "{params.dce} --out {params.prefix} --reference {input.reference} --xfm {output.xfm} "
        "--qc {output.qc} --moco-xfm {output.moco} --moco-trace {output.trace} {params.registration} > {log} 2>&1"
