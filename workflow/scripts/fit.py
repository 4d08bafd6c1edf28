# Rule fit_<name>: qmri.steps.fit.fit_series (one entry of the fit registry).
from qmri.steps.fit import fit_series
from qmri.steps.runner import run_step

i, o, p = snakemake.input, snakemake.output, snakemake.params
first = p.registration is not None  # this fit registers and motion-corrects its series
SERIES_FILES = ("series", "b1", "reference", "series_xfm", "moco_xfm")
run_step(
    snakemake, fit_series, fit=p.fit, series=list(i.series), options=p.options,
    b1=getattr(i, "b1", None), inputs={k: v for k, v in i.items() if k not in SERIES_FILES},
    prefix=p.prefix, series_xfm=o.xfm if first else i.series_xfm,
    moco_xfm=o.moco if first else i.moco_xfm, registration=p.registration,
    reference=i.reference if first else None, checkerboard=o.checkerboard if first else None,
    moco_trace=o.trace if first else None,
)  # fmt: skip
