# Rule cohort_table: qmri.steps.tables.cohort_table.
from qmri.steps.runner import run_step
from qmri.steps.tables import cohort_table

run_step(
    snakemake, cohort_table, tables_in=list(snakemake.input.tables),
    out_csv=snakemake.output[0],
)  # fmt: skip
