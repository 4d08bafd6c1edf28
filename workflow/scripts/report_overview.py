# Rule report_overview: qmri.steps.qc.write_report_overview.
from qmri.steps.qc import write_report_overview
from qmri.steps.runner import run_step

run_step(
    snakemake, write_report_overview, figures=snakemake.params.figures,
    out_html=snakemake.output[0],
)  # fmt: skip
