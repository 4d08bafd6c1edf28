# Rule session_roistats: qmri.steps.tables.session_roistats.
from qmri.steps.runner import run_step
from qmri.steps.tables import session_roistats

i = snakemake.input
run_step(
    snakemake, session_roistats, maps=snakemake.params.maps, rois=i.rois,
    session_xfm=i.session_xfm, out_csv=snakemake.output[0],
)  # fmt: skip
