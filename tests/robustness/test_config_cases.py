"""Robustness catalogue, config group (issue 14; outcomes listed in docs/robustness.md).

The workflow validates its config (the default ``config/config.yaml``, each ``--configfile``,
the ``--config`` values, merged by Snakemake) against the schema
(``qmri/data/config.schema.yaml``: ``additionalProperties: false`` at the top and in every
section) with :func:`qmri.config.validate_config` before the study is indexed, so a bad key
stops the run before any job with one line naming the key. Given the parts Snakemake merged
(:func:`qmri.config.snakemake_config_sources`), the line names the file (or ``--config``) that
set the key first.
"""

from __future__ import annotations

import copy
import json
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from qmri.config import DEFAULT_SCHEMA, load_schema, validate_config
from qmri.errors import QMRIInputError

from .subsets import CONFIG, run, sample_subset, workflow_command

SCHEMA = load_schema(DEFAULT_SCHEMA)
DEFAULTS = yaml.safe_load(CONFIG.read_text())


def _merged(*parts: Mapping[str, Any]) -> dict[str, Any]:
    """Merge config parts as Snakemake does (nested mappings key by key, later parts win)."""
    out: dict[str, Any] = {}

    def merge(into: dict[str, Any], part: Mapping[str, Any]) -> None:
        for key, value in part.items():
            if isinstance(value, Mapping) and isinstance(into.get(key), dict):
                merge(into[key], value)
            else:
                into[key] = copy.deepcopy(value)

    for part in parts:
        merge(out, part)
    return out


@dataclass(frozen=True)
class ConfigCase:
    """A study config file (``my-study.yaml``) with a bad key: the line it gives."""

    name: str
    study: dict[str, Any]  # the file's content, besides bids_dir/labels_dir/output_dir
    key: str
    problem: str  # regular expression for what follows "config key '<key>': "


CASES = [
    ConfigCase(
        "unknown key",
        {"colour": "red"},
        "colour",
        r"^unknown key \(known keys here: adc, bids_dir, .*, t2star\)$",
    ),
    ConfigCase(
        "unknown key in a section (typo)",
        {"adc": {"bmin": 0}},
        "adc.bmin",
        r"^unknown key \(known keys here: b_max, b_min\)$",
    ),
    ConfigCase(
        "unknown section (typo)",
        {"t1vfa": {"method": "linear"}},
        "t1vfa",
        r"^unknown key \(known keys here: ",
    ),
    ConfigCase(
        "wrong type: a word for a number",
        {"registration": {"bins": "many"}},
        "registration.bins",
        r"^'many' is not of type 'integer'$",
    ),
    ConfigCase(
        "wrong type: a quoted number",
        {"adc": {"b_min": "200"}},
        "adc.b_min",
        r"^'200' is not of type 'number'$",
    ),
    ConfigCase(
        "wrong type: a string for a list",
        {"participant_label": "sub-01"},
        "participant_label",
        r"^'sub-01' is not of type 'array'$",
    ),
    ConfigCase(
        "wrong type: a string for a boolean",
        {"t1_vfa": {"b1_correction": "false"}},
        "t1_vfa.b1_correction",
        r"^'false' is not of type 'boolean'$",
    ),
    ConfigCase(
        "wrong type: a list for a section",
        {"dce": ["etofts"]},
        "dce",
        r"^\['etofts'\] is not of type 'object'$",
    ),
    ConfigCase(
        "negative relaxivity",
        {"dce": {"r1": -4.5}},
        "dce.r1",
        r"^-4\.5 is less than or equal to the minimum of 0$",
    ),
    ConfigCase(
        "zero relaxivity",
        {"dce": {"r1": 0}},
        "dce.r1",
        r"^0 is less than or equal to the minimum of 0$",
    ),
    ConfigCase(
        "relaxivity as a string",
        {"dce": {"r1": "4.5"}},
        "dce.r1",
        r"^'4\.5' is not of type 'number', 'null'$",
    ),
    ConfigCase(
        "hematocrit in percent",
        {"dce": {"hematocrit": 42}},
        "dce.hematocrit",
        r"^42 is greater than or equal to the maximum of 1$",
    ),
    ConfigCase(
        "unknown model",
        {"dce": {"model": "tofts2"}},
        "dce.model",
        r"^'tofts2' is not one of \['tofts', 'etofts', 'patlak'\]$",
    ),
    ConfigCase(
        "negative PRM threshold",
        {"prm": {"thresholds": {"T1": -0.1}}},
        "prm.thresholds.T1",
        r"^-0\.1 is less than the minimum of 0$",
    ),
    ConfigCase(
        "PRM threshold for an unknown map",
        {"prm": {"thresholds": {"T1map": 0.1}}},
        "prm.thresholds",
        r"^'T1map' is not one of \[",
    ),
    ConfigCase(
        "adc.b_max below adc.b_min",
        {"adc": {"b_min": 1000, "b_max": 200}},
        "adc.b_max",
        r"^200 is smaller than adc\.b_min \(1000 s/mm\^2\)$",
    ),
    ConfigCase(
        "smoothing per level of another length",
        {"registration": {"shrink_factors": [4, 2, 1]}},
        "registration.smoothing_sigmas_mm",
        r"^needs one entry per entry of registration\.shrink_factors$",
    ),
]


def _paths(tmp_path: Path) -> dict[str, str]:
    bids = tmp_path / "study"
    return {"bids_dir": str(bids), "labels_dir": str(bids / "derivatives" / "labels"),
            "output_dir": str(tmp_path / "results")}  # fmt: skip


def _expect(case: ConfigCase, error: QMRIInputError, source: str | None) -> None:
    text = str(error)
    assert "\n" not in text
    assert error.path == (source if source is not None else f"config key '{case.key}'"), text
    problem = error.problem
    if source is not None:
        prefix = f"config key '{case.key}': "
        assert problem.startswith(prefix), text
        problem = problem.removeprefix(prefix)
    assert re.search(case.problem, problem), text


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_config_is_one_line_naming_its_file_and_key(case, tmp_path):
    """From a study file (``--configfile my-study.yaml`` over the default config)."""
    study_file = tmp_path / "my-study.yaml"
    study = {**_paths(tmp_path), **case.study}
    sources = [(str(CONFIG), DEFAULTS), (str(study_file), study), ("--config", {})]
    with pytest.raises(QMRIInputError) as info:
        validate_config(_merged(DEFAULTS, study), SCHEMA, sources=sources)
    _expect(case, info.value, str(study_file))


@pytest.mark.parametrize("case", CASES[:4], ids=[c.name for c in CASES[:4]])
def test_bad_config_from_the_command_line_names_config_and_key(case, tmp_path):
    """The same keys given with ``--config`` (over a study file that sets them right)."""
    study = _paths(tmp_path)
    sources = [(str(CONFIG), DEFAULTS), ("s.yaml", study), ("--config", case.study)]
    with pytest.raises(QMRIInputError) as info:
        validate_config(_merged(DEFAULTS, study, case.study), SCHEMA, sources=sources)
    _expect(case, info.value, "--config")


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_config_without_its_sources_names_the_key(case, tmp_path):
    """What the workflow prints today (``workflow/rules/common.smk`` does not pass the
    sources yet): ``qmri: error: config key '<key>': <problem>``."""
    with pytest.raises(QMRIInputError) as info:
        validate_config(_merged(DEFAULTS, _paths(tmp_path), case.study), SCHEMA)
    _expect(case, info.value, None)


def test_a_key_left_to_its_default_is_named_alone(tmp_path):
    """Cross-key checks name the key; when no source sets it (its default), no file."""
    study = {**_paths(tmp_path), "adc": {"b_min": 2000}}  # over the default b_max 1000
    sources = [("my-study.yaml", study)]
    with pytest.raises(QMRIInputError) as info:
        validate_config(_merged(study), SCHEMA, sources=sources)
    assert info.value.path == "my-study.yaml"  # the section adc is set there
    bare = {k: v for k, v in DEFAULTS.items() if k != "adc"}
    with pytest.raises(QMRIInputError) as info:
        validate_config(_merged(bare, {"adc": {"b_min": 2000}}), SCHEMA,
                        sources=[("defaults.yaml", bare)])  # fmt: skip
    assert info.value.path == "config key 'adc.b_max'"


# --------------------------------------------------------------------------------------------
# output_dir against bids_dir (qmri.config._check_output_dir)
# --------------------------------------------------------------------------------------------


def _link_to_bids(tmp_path: Path) -> str:
    link = tmp_path / "results-link"
    link.symlink_to(tmp_path / "study", target_is_directory=True)
    return str(link)


@dataclass(frozen=True)
class OutputCase:
    """An ``output_dir`` (from the test's folder) against ``bids_dir`` = ``<tmp>/study``."""

    name: str
    output_dir: Callable[[Path], str]
    problem: str


_RAW = r"^is the raw dataset \(bids_dir\): outputs would be mixed into the inputs$"
_INSIDE = (
    r"^lies inside bids_dir \(.*/study\) outside its derivatives/ folder: outputs would be "
    r"taken for raw data \(use e\.g\. <bids_dir>/derivatives/qmri\)$"
)

OUTPUT_CASES = [
    OutputCase("equal to bids_dir", lambda t: str(t / "study"), _RAW),
    OutputCase("bids_dir spelt with .. and a slash", lambda t: f"{t}/study/sub-01/../", _RAW),
    OutputCase("a link to bids_dir", _link_to_bids, _RAW),
    OutputCase("inside bids_dir", lambda t: str(t / "study" / "qmri"), _INSIDE),
    OutputCase(
        "inside a subject of bids_dir", lambda t: str(t / "study" / "sub-01" / "o"), _INSIDE
    ),
]


@pytest.mark.parametrize("case", OUTPUT_CASES, ids=[c.name for c in OUTPUT_CASES])
def test_output_dir_equal_to_or_inside_bids_dir_is_refused(case, tmp_path):
    (tmp_path / "study" / "sub-01").mkdir(parents=True)
    study = {**_paths(tmp_path), "output_dir": case.output_dir(tmp_path)}
    sources = [(str(CONFIG), DEFAULTS), ("my-study.yaml", study)]
    with pytest.raises(QMRIInputError) as info:
        validate_config(_merged(DEFAULTS, study), SCHEMA, sources=sources)
    assert "\n" not in str(info.value)
    assert info.value.path == "my-study.yaml"
    prefix = "config key 'output_dir': "
    assert info.value.problem.startswith(prefix)
    assert re.search(case.problem, info.value.problem.removeprefix(prefix)), str(info.value)


@pytest.mark.parametrize(
    "output_dir",
    ["{bids}/derivatives/qmri", "{bids}/../results", "{bids}-qmri"],
    ids=["under bids_dir/derivatives", "beside bids_dir", "a sibling whose name extends it"],
)
def test_output_dir_beside_bids_dir_or_in_its_derivatives_is_accepted(output_dir, tmp_path):
    bids = tmp_path / "study"
    study = {**_paths(tmp_path), "output_dir": output_dir.format(bids=bids)}
    assert validate_config(_merged(DEFAULTS, study), SCHEMA)["output_dir"] == study["output_dir"]


# --------------------------------------------------------------------------------------------
# through the workflow (snakemake --dry-run)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dry_runs(tmp_path_factory) -> dict[str, tuple[Path, object]]:
    """``snakemake --dry-run`` with a study file holding an unknown key, and with a study file
    that is not valid YAML."""
    base = tmp_path_factory.mktemp("config")
    bids = sample_subset(base / "bids", sessions=("pre",), series=("T2w", "VFA"))
    out = {}
    for name, text in (("unknown", "colour: red\n"), ("broken", "adc: {b_min: 200\n")):
        study = base / f"{name}.yaml"
        study.write_text(text)
        cmd = [*workflow_command(bids, base / "out"), "--dry-run"]
        cmd[cmd.index("--configfile") + 1 : cmd.index("--configfile") + 2] = [
            str(CONFIG),
            str(study),
        ]
        out[name] = (study, run(cmd, base / "wd"))
    return out


@pytest.mark.slow
def test_the_workflow_stops_with_one_line_naming_the_key(dry_runs):
    _, res = dry_runs["unknown"]
    assert res.returncode == 1
    last = res.stderr.strip().splitlines()[-1]
    assert re.fullmatch(r"qmri: error: (.+: )?config key 'colour': unknown key \(known keys "
                        r"here: .*\)", last), last  # fmt: skip
    assert "Traceback" not in res.stderr
    assert "Job stats" not in res.stderr  # before any job is planned


@pytest.mark.slow
def test_the_workflow_line_names_the_config_file(dry_runs):
    study, res = dry_runs["unknown"]
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith(f"qmri: error: {study}: config key 'colour': unknown key"), last


@pytest.mark.slow
def test_a_config_file_that_is_not_yaml_stops_snakemake_before_the_plan(dry_runs):
    """Snakemake reads the config files before the Snakefile: its own two-line error."""
    _, res = dry_runs["broken"]
    assert res.returncode == 1
    output = res.stdout + res.stderr  # Snakemake prints this error on stdout
    assert "Config file is not valid JSON or YAML" in output
    assert "Building DAG of jobs" not in output


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="Snakemake's own error (snakemake.common.configfile.load_configfile, before the "
    "Snakefile runs) does not name the file; upstream, outside qmri",
)
def test_a_config_file_that_is_not_yaml_is_named(dry_runs):
    study, res = dry_runs["broken"]
    assert str(study) in res.stdout + res.stderr


@pytest.mark.slow
def test_the_sources_are_what_snakemake_merged(tmp_path):
    """:func:`qmri.config.snakemake_config_sources` on a real Snakemake: the Snakefile's
    ``configfile:``, each ``--configfile`` in order, the ``--config`` values."""
    (tmp_path / "base.yaml").write_text("a: 1\nb: {c: 2}\n")
    (tmp_path / "extra.yaml").write_text("b: {c: 3}\n")
    (tmp_path / "Snakefile").write_text(
        "import json\n"
        'configfile: "base.yaml"\n'
        "from qmri.config import snakemake_config_sources\n"
        'print("SOURCES", json.dumps(snakemake_config_sources(workflow)))\n'
        "rule all:\n"
        '    output: "x"\n'
        '    shell: "touch {output}"\n'
    )
    cmd = [sys.executable, "-m", "snakemake", "--dry-run", "--snakefile", "Snakefile",
           "--config", "dd=4", "--configfile", "extra.yaml"]  # fmt: skip
    res = run(cmd, tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    line = next(x for x in (res.stdout + res.stderr).splitlines() if x.startswith("SOURCES "))
    assert json.loads(line.removeprefix("SOURCES ")) == [
        [str(tmp_path / "base.yaml"), {"a": 1, "b": {"c": 2}}],
        [str(tmp_path / "extra.yaml"), {"b": {"c": 3}}],
        ["--config", {"dd": 4}],
    ]
