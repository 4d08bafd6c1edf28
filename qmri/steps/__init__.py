"""The workflow's steps: one module per group of rules, one function per rule.

Each function reads files, calls the pure functions of qmri and writes files atomically. Its
arguments are keyword-only and have no defaults: every value comes from the rule (files) or
from the validated config, whose defaults live in the schema alone
(``qmri/data/config.schema.yaml``). The rules call them through the three-line adapters in
``workflow/scripts/`` and :func:`qmri.steps.runner.run_step` (log, one-line errors, time and
peak memory).

=====================  ===============================================================
rule                   step
=====================  ===============================================================
``fit_<name>``         :func:`qmri.steps.fit.fit_series` (one rule per registry entry)
``register_session``   :func:`qmri.steps.register.register_session`
``derive_rois``        :func:`qmri.steps.rois.derive_subject_rois`
``session_roistats``   :func:`qmri.steps.tables.session_roistats`
``subject_tables``     :func:`qmri.steps.tables.subject_tables`
``cohort_table``       :func:`qmri.steps.tables.cohort_table`
``describe_output``    :func:`qmri.steps.tables.describe_output`
``baseline_space``     :func:`qmri.steps.longitudinal.baseline_space`
``cohort_analyses``    :func:`qmri.steps.cohort.cohort_analyses`
``cohort_figures``     :func:`qmri.steps.cohort.cohort_figures`
``subject_dose``       :func:`qmri.steps.dose.subject_dose`
``qc_session``         :func:`qmri.steps.qc.qc_session`
``report_overview``    :func:`qmri.steps.qc.write_report_overview`
=====================  ===============================================================
"""
