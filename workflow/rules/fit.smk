# Model fits in each series' native grid: T1 from VFA (B1-corrected) and from inversion
# recovery (IRT1), T2 from MESE, T2* from MEGRE, ADC and IVIM from DWI, DCE kinetics with the session's T1 map. Each fit job first corrects motion
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
        qc=report(
            "sub-{subject}/qc/sub-{subject}_ses-{session}_from-VFA_to-ref_checkerboard.png",
            caption="../report/qc_registration.rst",
            category="Registration",
            subcategory="sub-{subject}",
            labels={"session": "{session}", "figure": "from-VFA_to-ref_checkerboard"},
        ),
        moco="sub-{subject}/ses-{session}/xfm/sub-{subject}_ses-{session}_desc-mocoVFA_xfm.txt",
        trace="sub-{subject}/ses-{session}/xfm/sub-{subject}_ses-{session}_desc-mocoVFA_motion.tsv",
    params:
        prefix=fit_prefix,
        method=config["t1_vfa"]["method"],
        b1=b1_arg,
        registration=registration_args(),
    log:
        "logs/fit_vfa/sub-{subject}_ses-{session}.log",
    # measured on data_sample (see README, Running on a cluster): peak RSS 232 MB, wall 26 s median / 52 s max
    threads: 1
    resources:
        mem_mb=500,
        runtime=10,
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
        qc=report(
            "sub-{subject}/qc/sub-{subject}_ses-{session}_from-MESE_to-ref_checkerboard.png",
            caption="../report/qc_registration.rst",
            category="Registration",
            subcategory="sub-{subject}",
            labels={"session": "{session}", "figure": "from-MESE_to-ref_checkerboard"},
        ),
        moco="sub-{subject}/ses-{session}/xfm/sub-{subject}_ses-{session}_desc-mocoMESE_xfm.txt",
        trace="sub-{subject}/ses-{session}/xfm/sub-{subject}_ses-{session}_desc-mocoMESE_motion.tsv",
    params:
        prefix=fit_prefix,
        options=multi_echo_args("t2"),
        registration=registration_args(),
    log:
        "logs/fit_mese/sub-{subject}_ses-{session}.log",
    # measured on data_sample (see README, Running on a cluster): peak RSS 237 MB, wall 38 s median / 43 s max
    threads: 1
    resources:
        mem_mb=500,
        runtime=10,
    conda:
        "../envs/qmri.yaml"
    shell:
        "qmri -v pipeline fit-t2 --echoes {input.echoes} {params.options} "
        "--out {params.prefix} --reference {input.reference} --xfm {output.xfm} --qc {output.qc} --moco-xfm {output.moco} --moco-trace {output.trace} "
        "{params.registration} > {log} 2>&1"


rule fit_megre:
    input:
        echoes=megre_inputs,
        reference=reference_image,
    output:
        maps=multiext(
            "sub-{subject}/ses-{session}/anat/sub-{subject}_ses-{session}_desc-megre_",
            "T2starmap.nii.gz",
            "S0map.nii.gz",
            "R2.nii.gz",
            "fitmask.nii.gz",
        ),
        xfm="sub-{subject}/ses-{session}/xfm/sub-{subject}_ses-{session}_from-MEGRE_to-ref_mode-image_xfm.txt",
        xfm_json="sub-{subject}/ses-{session}/xfm/sub-{subject}_ses-{session}_from-MEGRE_to-ref_mode-image_xfm.json",
        qc=report(
            "sub-{subject}/qc/sub-{subject}_ses-{session}_from-MEGRE_to-ref_checkerboard.png",
            caption="../report/qc_registration.rst",
            category="Registration",
            subcategory="sub-{subject}",
            labels={"session": "{session}", "figure": "from-MEGRE_to-ref_checkerboard"},
        ),
        moco="sub-{subject}/ses-{session}/xfm/sub-{subject}_ses-{session}_desc-mocoMEGRE_xfm.txt",
        trace="sub-{subject}/ses-{session}/xfm/sub-{subject}_ses-{session}_desc-mocoMEGRE_motion.tsv",
    params:
        prefix=fit_prefix,
        options=multi_echo_args("t2star"),
        registration=registration_args(),
    log:
        "logs/fit_megre/sub-{subject}_ses-{session}.log",
    # measured on data_sample (see README, Running on a cluster): not in the sample: as fit_mese (same multi-echo fit)
    threads: 1
    resources:
        mem_mb=500,
        runtime=10,
    conda:
        "../envs/qmri.yaml"
    shell:
        "qmri -v pipeline fit-t2star --echoes {input.echoes} {params.options} "
        "--out {params.prefix} --reference {input.reference} --xfm {output.xfm} --qc {output.qc} --moco-xfm {output.moco} --moco-trace {output.trace} "
        "{params.registration} > {log} 2>&1"


rule fit_irt1:
    input:
        inversions=irt1_inputs,
        reference=reference_image,
    output:
        maps=multiext(
            "sub-{subject}/ses-{session}/anat/sub-{subject}_ses-{session}_desc-irt1_",
            "T1map.nii.gz",
            "M0map.nii.gz",
            "R2.nii.gz",
            "fitmask.nii.gz",
        ),
        xfm="sub-{subject}/ses-{session}/xfm/sub-{subject}_ses-{session}_from-IRT1_to-ref_mode-image_xfm.txt",
        xfm_json="sub-{subject}/ses-{session}/xfm/sub-{subject}_ses-{session}_from-IRT1_to-ref_mode-image_xfm.json",
        qc=report(
            "sub-{subject}/qc/sub-{subject}_ses-{session}_from-IRT1_to-ref_checkerboard.png",
            caption="../report/qc_registration.rst",
            category="Registration",
            subcategory="sub-{subject}",
            labels={"session": "{session}", "figure": "from-IRT1_to-ref_checkerboard"},
        ),
        moco="sub-{subject}/ses-{session}/xfm/sub-{subject}_ses-{session}_desc-mocoIRT1_xfm.txt",
        trace="sub-{subject}/ses-{session}/xfm/sub-{subject}_ses-{session}_desc-mocoIRT1_motion.tsv",
    params:
        prefix=fit_prefix,
        registration=registration_args(),
    log:
        "logs/fit_irt1/sub-{subject}_ses-{session}.log",
    # measured on data_sample (see README, Running on a cluster): not in the sample: as fit_vfa
    threads: 1
    resources:
        mem_mb=500,
        runtime=10,
    conda:
        "../envs/qmri.yaml"
    shell:
        "qmri -v pipeline fit-t1-ir --inversions {input.inversions} "
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
        qc=report(
            "sub-{subject}/qc/sub-{subject}_ses-{session}_from-dwi_to-ref_checkerboard.png",
            caption="../report/qc_registration.rst",
            category="Registration",
            subcategory="sub-{subject}",
            labels={"session": "{session}", "figure": "from-dwi_to-ref_checkerboard"},
        ),
        moco="sub-{subject}/ses-{session}/xfm/sub-{subject}_ses-{session}_desc-mocodwi_xfm.txt",
        trace="sub-{subject}/ses-{session}/xfm/sub-{subject}_ses-{session}_desc-mocodwi_motion.tsv",
    params:
        prefix=fit_prefix,
        b_min=config["adc"]["b_min"],
        b_max=config["adc"]["b_max"],
        registration=registration_args(),
    log:
        "logs/fit_adc/sub-{subject}_ses-{session}.log",
    # measured on data_sample (see README, Running on a cluster): peak RSS 222 MB, wall 17 s median / 24 s max
    threads: 1
    resources:
        mem_mb=500,
        runtime=10,
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
    # measured on data_sample (see README, Running on a cluster): peak RSS 186 MB, wall 2.6 s median / 2.7 s max
    threads: 1
    resources:
        mem_mb=400,
        runtime=5,
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
        qc=report(
            "sub-{subject}/qc/sub-{subject}_ses-{session}_from-dce_to-ref_checkerboard.png",
            caption="../report/qc_registration.rst",
            category="Registration",
            subcategory="sub-{subject}",
            labels={"session": "{session}", "figure": "from-dce_to-ref_checkerboard"},
        ),
        moco="sub-{subject}/ses-{session}/xfm/sub-{subject}_ses-{session}_desc-mocodce_xfm.txt",
        trace="sub-{subject}/ses-{session}/xfm/sub-{subject}_ses-{session}_desc-mocodce_motion.tsv",
    params:
        prefix=fit_prefix,
        dce=dce_args,
        registration=registration_args(),
    log:
        "logs/fit_dce/sub-{subject}_ses-{session}.log",
    # measured on data_sample (see README, Running on a cluster): peak RSS 288 MB, wall 41 s median / 83 s max; a 256 x 256 x 32 x 80 volume peaks at 1.06 GiB (make bench-dce-memory)
    threads: 1
    resources:
        mem_mb=2500,
        runtime=15,
    conda:
        "../envs/qmri.yaml"
    shell:
        "qmri -v pipeline fit-dce --dce {input.dce} --t1 {input.t1} --t1-xfm {input.t1_xfm} "
        "{params.dce} --out {params.prefix} --reference {input.reference} --xfm {output.xfm} "
        "--qc {output.qc} --moco-xfm {output.moco} --moco-trace {output.trace} {params.registration} > {log} 2>&1"
