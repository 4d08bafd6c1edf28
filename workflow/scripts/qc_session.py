# Rule qc_session: qmri.steps.qc.qc_session.
from qmri.steps.qc import qc_session
from qmri.steps.runner import run_step

i, w = snakemake.input, snakemake.wildcards
run_step(
    snakemake, qc_session, subject=w.subject, session=w.session, config=snakemake.config,
    fits=snakemake.params.fits, rois=i.rois, session_xfm=i.session_xfm,
    motion_traces=list(i.motion), dwi=list(getattr(i, "dwi", [])),
    dwi_moco=getattr(i, "dwi_moco", None), dce=snakemake.params.dce,
    out_dir=snakemake.output[0],
)  # fmt: skip
