# Rule subject_tables: qmri.steps.tables.subject_tables.
from qmri.steps.runner import run_step
from qmri.steps.tables import subject_tables

i, o = snakemake.input, snakemake.output
run_step(
    snakemake, subject_tables, subject=snakemake.wildcards.subject,
    session_tables=list(i.sessions), prm_tables=list(i.prm), xfm_sidecars=list(i.xfm),
    sessions_tsv=i.sessions_tsv, out_roistats=o.roistats, out_response=o.response,
    out_prm=o.prm, out_registration=o.registration,
)  # fmt: skip
