# Rule describe_output: qmri.steps.tables.describe_output.
from qmri.steps.runner import run_step
from qmri.steps.tables import describe_output

p = snakemake.params
run_step(
    snakemake, describe_output, bids_dir=p.bids_dir, config_sha256=p.config_sha256,
    bidsignore=p.bidsignore, out_json=snakemake.output[0],
)  # fmt: skip
