# Rule subject_dose: qmri.steps.dose.subject_dose.
from qmri.steps.dose import subject_dose
from qmri.steps.runner import run_step

i, o, p = snakemake.input, snakemake.output, snakemake.params
run_step(
    snakemake, subject_dose, subject=snakemake.wildcards.subject, dose_nifti=i.dose,
    rois_mask=i.rois, participants_tsv=i.participants, sessions_tsv=i.sessions_tsv,
    baseline_session=p.baseline, baseline_grid_dirs=list(i.maps),
    bin_edges_gy=[float(v) for v in p.dose["bin_edges_gy"]],
    eqd2_bin_edges_gy=[float(v) for v in p.dose["eqd2_bin_edges_gy"]],
    alpha_beta_gy={k: float(v) for k, v in p.dose["alpha_beta_gy"].items()},
    hot_volume_cc=float(p.dose["hot_volume_cc"]),
    binned_rois=p.dose["binned_rois"], out_stats=o.stats, out_bins=o.bins,
)  # fmt: skip
