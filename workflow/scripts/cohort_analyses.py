# Rule cohort_analyses: qmri.steps.cohort.cohort_analyses.
from qmri.steps.cohort import cohort_analyses
from qmri.steps.runner import run_step

i, p = snakemake.input, snakemake.params
run_step(
    snakemake, cohort_analyses, roistats_csv=i.roistats, response_csv=i.response,
    participants_tsv=i.participants, flag_thresholds={k: float(v) for k, v in p.flags.items()}, min_events=p.min_events,
    out_dir=p.out_dir,
)  # fmt: skip
