# Rule baseline_space: qmri.steps.longitudinal.baseline_space.
from qmri.steps.longitudinal import baseline_space
from qmri.steps.runner import run_step

i, o, p, w = snakemake.input, snakemake.output, snakemake.params, snakemake.wildcards
run_step(
    snakemake, baseline_space, stem=f"sub-{w.subject}_ses-{w.session}", maps=p.maps,
    session_xfm=i.session_xfm, baseline_maps=p.baseline_maps,
    baseline_session_xfm=i.baseline_session_xfm, baseline_reference=i.reference, rois=i.rois,
    thresholds={k: float(v) for k, v in p.prm["thresholds"].items()}, erode_voxels=p.prm["erode_voxels"], out_dir=o.maps,
    out_csv=o.prm,
)  # fmt: skip
