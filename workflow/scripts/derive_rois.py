# Rule derive_rois: qmri.steps.rois.derive_subject_rois.
from qmri.steps.rois import derive_subject_rois
from qmri.steps.runner import run_step

i = snakemake.input
run_step(
    snakemake, derive_subject_rois, subject=snakemake.wildcards.subject, dseg=i.dseg,
    reference=i.reference, participants=i.participants, ctv_plan=i.ctv_plan or None,
    out_mask=snakemake.output.mask,
)  # fmt: skip
