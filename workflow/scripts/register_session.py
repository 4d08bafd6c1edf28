# Rule register_session: qmri.steps.register.register_session.
from qmri.steps.register import register_session
from qmri.steps.runner import run_step

i, o = snakemake.input, snakemake.output
run_step(
    snakemake, register_session, subject=snakemake.wildcards.subject, reference=i.reference,
    baseline_reference=i.baseline, registration=snakemake.params.registration,
    focus_labels=i.labels or None, participants=i.participants, out_xfm=o.xfm,
    checkerboard=o.checkerboard,
)  # fmt: skip
