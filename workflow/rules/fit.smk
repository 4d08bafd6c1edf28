# Model fits in each series' native grid, one rule per entry of the fit registry
# (qmri/registry.py): fit_vfa, fit_irt1, fit_mese, fit_megre, fit_adc, fit_ivim, fit_dce and
# any fit a plugin registers. The first fit of a series registers it to the session reference
# and corrects motion within it (transforms and displacement trace in xfm/); a second fit of
# the same series (IVIM after ADC) reuses them. Every map gets a JSON sidecar with its unit,
# algorithm and every option used. Step: qmri.steps.fit.fit_series.


for _spec in ENABLED_FITS:

    rule:
        name:
            f"fit_{_spec.name}"
        input:
            unpack(fit_inputs(_spec)),
        output:
            **fit_outputs(_spec),
        params:
            fit=_spec.name,
            options=_spec.options(config),
            registration=(
                config["registration"] if motion_source(_spec, config) is _spec else None
            ),
            prefix=lambda wildcards, spec=_spec: fit_prefix(
                wildcards.subject, wildcards.session, spec.name
            ),
        log:
            OUT.log(f"fit_{_spec.name}", "sub-{subject}_ses-{session}"),
        # measured on data_sample (README, Running on a cluster); the registry holds them
        threads: 1
        resources:
            **_spec.resources,
        conda:
            "../envs/qmri.yaml"
        script:
            "../scripts/fit.py"
