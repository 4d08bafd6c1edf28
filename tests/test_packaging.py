"""The project's own files agree with each other: dependencies, schema, config, CLI."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _normalise(requirement: str) -> tuple[str, str]:
    m = re.match(r"\s*([A-Za-z0-9_.\-]+)\s*(.*)", requirement)
    assert m, requirement
    return m.group(1).lower().replace("_", "-"), m.group(2).replace(" ", "")


def test_environment_yml_lists_the_same_dependencies_as_pyproject():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    deps = dict(_normalise(r) for r in pyproject["project"]["dependencies"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = dict(
        _normalise(d)
        for d in env["dependencies"]
        if isinstance(d, str) and not d.startswith(("python", "pip"))
    )
    assert conda == deps


def test_default_config_is_valid_and_complete():
    from qmri.config import load_schema, validate_config

    schema = load_schema(ROOT / "workflow" / "schemas" / "config.schema.yaml")
    raw = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    validated = validate_config(raw, schema)
    # the shipped config spells out every key of the schema, so users see all the options
    assert set(raw) == set(schema["properties"])
    # labels_dir: null resolves to <bids_dir>/derivatives/labels, the sample's labels
    assert raw["labels_dir"] is None
    assert validated == {**raw, "labels_dir": "data_sample/derivatives/labels"}


def test_distribution_and_console_script_names():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["name"] == "qmri-spine"
    assert pyproject["project"]["scripts"]["qmri"] == "qmri.cli:main"


def test_readme_names_the_two_setup_commands():
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme
    assert "make test" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci
