"""Defaults live only in the config schema: ``qmri fit`` options take theirs from it.

Each ``qmri fit`` option with a config counterpart is parsed without being given, and its value
must be the schema's default (a literal default in the CLI, such as the IVIM ``segmented`` that
once contradicted the schema's ``full``, fails here). The table below is written out on purpose,
independently of :data:`qmri.cli_fit.CONFIG_OPTIONS`.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

from qmri import config
from qmri.cli import build_parser, main

#: (kind, option, argparse dest, config section, config key)
CONFIG_BACKED = [
    ("t1-vfa", "--method", "method", "t1_vfa", "method"),
    ("t2", "--drop-first-echo", "drop_first_echo", "t2", "drop_first_echo"),
    ("t2", "--noise-floor", "noise_floor", "t2", "noise_floor"),
    ("t2star", "--drop-first-echo", "drop_first_echo", "t2star", "drop_first_echo"),
    ("t2star", "--noise-floor", "noise_floor", "t2star", "noise_floor"),
    ("dwi", "--b-min", "b_min", "adc", "b_min"),
    ("dwi", "--b-max", "b_max", "adc", "b_max"),
    ("dwi", "--b-threshold", "b_threshold", "ivim", "b_threshold"),
    ("dwi", "--ivim-method", "ivim_method", "ivim", "method"),
    ("dce", "--model", "model", "dce", "model"),
    ("dce", "--method", "method", "dce", "method"),
    ("dce", "--hematocrit", "hematocrit", "dce", "hematocrit"),
    ("dce", "--r1", "r1", "dce", "r1"),
    ("dce", "--fit-delay", "fit_delay", "dce", "fit_delay"),
    ("dce", "--aif", "aif", "dce", "aif"),
]

#: What each kind needs besides its options (positional data, required flags).
REQUIRED = {
    "t1-vfa": [],
    "t2": [],
    "t2star": [],
    "t1-ir": [],
    "dwi": ["--bval", "x.bval"],
    "dce": [],
}


def _parse(kind: str):
    return build_parser().parse_args(["fit", kind, "x.nii.gz", "--out", "o", *REQUIRED[kind]])


def _raw_schema_default(section: str, key: str):
    """The default as written in the schema file (not through qmri.config)."""
    schema = yaml.safe_load(config.DEFAULT_SCHEMA.read_text(encoding="utf-8"))
    return schema["properties"][section]["properties"][key]["default"]


@pytest.mark.parametrize(
    ("kind", "flag", "dest", "section", "key"),
    CONFIG_BACKED,
    ids=[f"{c[0]}{c[1]}" for c in CONFIG_BACKED],
)
def test_unset_option_is_the_schema_default(kind, flag, dest, section, key):
    got = getattr(_parse(kind), dest)
    assert got == config.schema_defaults()[section][key]
    assert got == _raw_schema_default(section, key)


def test_ivim_method_defaults_to_the_schemas_full():
    """The drift this file was written for: the CLI said segmented, the schema full."""
    assert _raw_schema_default("ivim", "method") == "full"
    assert _parse("dwi").ivim_method == "full"


def test_the_table_covers_every_config_backed_option():
    from qmri.cli_fit import CONFIG_OPTIONS

    listed = {(kind, dest, (section, key)) for kind, _, dest, section, key in CONFIG_BACKED}
    declared = {
        (kind, dest, where) for kind, options in CONFIG_OPTIONS.items()
        for dest, where in options.items()
    }  # fmt: skip
    assert declared == listed


@pytest.mark.parametrize("kind", sorted(REQUIRED))
def test_no_other_option_default_contradicts_the_schema(kind):
    """An option named like a key of the kind's config section is config-backed: it must be
    in the table (so a new option with a literal default cannot slip past)."""
    sections = {"t1-vfa": ["t1_vfa"], "t2": ["t2"], "t2star": ["t2star"], "t1-ir": [],
                "dwi": ["adc", "ivim"], "dce": ["dce"]}[kind]  # fmt: skip
    keys = {key for s in sections for key in config.schema_defaults()[s]} - {"activate"}
    backed = {dest for k, _, dest, _, _ in CONFIG_BACKED if k == kind}
    backed_keys = {key for k, _, _, _, key in CONFIG_BACKED if k == kind}
    parsed = vars(_parse(kind))
    for key in keys:
        if key in parsed:
            assert key in backed, f"qmri fit {kind}: --{key} is not taken from the schema"
    assert backed_keys <= keys


def test_defaults_follow_the_schema_not_a_literal(monkeypatch):
    """Change every default of the schema: the parser follows."""
    real = config.schema_defaults

    def changed(schema=None):
        out = real(schema)
        other = {"nlls": "linear", "linear": "nlls", "full": "segmented",
                 "segmented": "full", "etofts": "patlak", "parker": "aorta"}  # fmt: skip
        for _, _, _, section, key in CONFIG_BACKED:
            value = out[section][key]
            if isinstance(value, bool):
                out[section][key] = not value
            elif isinstance(value, str):
                out[section][key] = other[value]
            elif value is None:
                out[section][key] = 3.25
            else:
                out[section][key] = value + 7.5 if value > 1 else value / 2
        return out

    monkeypatch.setattr(config, "schema_defaults", changed)
    expected = changed()
    for kind, _, dest, section, key in CONFIG_BACKED:
        assert getattr(_parse(kind), dest) == expected[section][key], (kind, dest)


@pytest.mark.parametrize("kind", ["t1-vfa", "t2", "t2star", "dwi", "dce"])
def test_help_shows_the_schema_default(kind, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["fit", kind, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    defaults = config.schema_defaults()
    for k, flag, _, section, key in CONFIG_BACKED:
        if k == kind:
            shown = f"(default: {defaults[section][key]}, config {section}.{key})"
            assert flag in text
            assert shown in text, shown


def test_the_default_reaches_the_model(tmp_path):
    """``qmri fit dwi --model ivim`` without ``--ivim-method`` fits with the schema's method."""
    from qmri.models.ivim import ivim_signal

    b = np.array([0, 10, 20, 50, 100, 200, 400, 600, 800], float)
    sig = ivim_signal(1000.0, 0.1, 0.9e-3, 20e-3, b) * np.ones((2, 2, 1, 1))
    nib.save(nib.Nifti1Image(sig.astype(np.float32), np.eye(4)), tmp_path / "dwi.nii.gz")
    (tmp_path / "dwi.bval").write_text(" ".join(str(v) for v in b) + "\n")
    assert main(["fit", "dwi", str(tmp_path / "dwi.nii.gz"), "--bval", str(tmp_path / "dwi.bval"),
                 "--model", "ivim", "--out", str(tmp_path / "i")]) == 0  # fmt: skip
    side = json.loads(Path(tmp_path / "i_D.json").read_text())
    assert side["ModelOptions"]["method"] == config.schema_defaults()["ivim"]["method"]
    assert side["ModelOptions"]["b_threshold"] == config.schema_defaults()["ivim"]["b_threshold"]
