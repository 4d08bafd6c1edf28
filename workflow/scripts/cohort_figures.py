# Rule cohort_figures: qmri.steps.cohort.cohort_figures.
from qmri.steps.cohort import cohort_figures
from qmri.steps.runner import run_step

i, p = snakemake.input, snakemake.params
run_step(
    snakemake, cohort_figures, roistats_csv=i.roistats, response_csv=i.response, km_csv=i.km,
    trajectory_rois=p.figures["trajectory_rois"], waterfall_rois=p.figures["waterfall_rois"],
    maps=p.maps, sessions=p.sessions, km=p.km, flag_thresholds={k: float(v) for k, v in p.flags.items()}, out_dir=p.out_dir,
)  # fmt: skip
