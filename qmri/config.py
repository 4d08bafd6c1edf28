"""Validation of the workflow configuration against its JSON schema, with defaults filled in.

The Snakemake workflow calls :func:`validate_config` before building any job. Errors are one
line naming the key (``config key 'adc.b_min': -5 is less than the minimum of 0``), so a typo
in ``--config`` or a config file never reaches a rule.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from qmri.errors import QMRIInputError

#: The schema of the workflow's config, shipped with the package (``workflow/schemas/`` links
#: to it): the one home of every default.
DEFAULT_SCHEMA = Path(__file__).resolve().parent / "data" / "config.schema.yaml"


def _fill_defaults(config: dict[str, Any], schema: Mapping[str, Any]) -> None:
    for key, sub in schema.get("properties", {}).items():
        if key not in config and "default" in sub:
            config[key] = copy.deepcopy(sub["default"])
        if isinstance(config.get(key), dict) and sub.get("type") == "object":
            _fill_defaults(config[key], sub)


def load_schema(path: str | Path) -> dict[str, Any]:
    """Read the YAML schema."""
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def validate_config(
    config: Mapping[str, Any],
    schema: Mapping[str, Any] | str | Path,
    *,
    sources: Sequence[tuple[str, Mapping[str, Any]]] = (),
) -> dict[str, Any]:
    """Check ``config`` against the schema and return a copy with defaults filled in.

    With ``sources`` (what Snakemake merged into ``config``, lowest precedence first:
    :func:`snakemake_config_sources`), an error names the config file (or ``--config``) that
    set the offending key first: ``my-study.yaml: config key 'adc.b_min': -5 is less than the
    minimum of 0``. A key that no source sets (a default) is named alone.

    Parameters
    ----------
    config : mapping
        The configuration as Snakemake assembled it (config file plus ``--config`` values).
    schema : mapping or path
        The JSON schema (YAML file ``workflow/schemas/config.schema.yaml`` or its content).
    sources : sequence of (str, mapping)
        Label (a config file's path, ``--config``) and content of each part of ``config``.

    Raises
    ------
    QMRIInputError
        One line naming the offending key (and its source): unknown keys, wrong types, values
        out of range, ``adc.b_max`` below ``adc.b_min``, an ``output_dir`` inside ``bids_dir``.
    """
    try:
        return _validate_config(config, schema)
    except QMRIInputError as error:
        raise _with_source(error, sources) from None


def _sets(mapping: Mapping[str, Any], parts: Sequence[str]) -> bool:
    node: Any = mapping
    for part in parts:
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


def _source_of(
    keys: Sequence[str], sources: Sequence[tuple[str, Mapping[str, Any]]]
) -> str | None:
    """The last (winning) source that sets one of ``keys`` (``a.b``); else the last that sets
    a section of the first key; else None (defaults only)."""
    for label, mapping in reversed(sources):
        if any(_sets(mapping, key.split(".")) for key in keys):
            return label
    parts = keys[0].split(".")
    for depth in range(len(parts) - 1, 0, -1):
        for label, mapping in reversed(sources):
            if _sets(mapping, parts[:depth]):
                return label
    return None


class _CrossKeyError(QMRIInputError):
    """An error on one key that other keys share the cause of: the source named is the last
    that sets any of them (a study file changing ``others`` over the default ``key``)."""

    def __init__(self, problem: str, key: str, *others: str) -> None:
        super().__init__(problem, f"config key '{key}'")
        self.other_keys = others


def _with_source(
    error: QMRIInputError, sources: Sequence[tuple[str, Mapping[str, Any]]]
) -> QMRIInputError:
    """``error`` (path ``config key 'k'``) with the source of ``k`` put first, if known."""
    match = re.fullmatch(r"config key '(.+)'", error.path or "")
    if not match or not sources:
        return error
    label = _source_of([match.group(1), *getattr(error, "other_keys", ())], sources)
    if label is None:
        return error
    return QMRIInputError(f"{error.path}: {error.problem}", label)


def snakemake_config_sources(workflow: Any) -> list[tuple[str, dict[str, Any]]]:
    """What Snakemake merged into ``config``, lowest precedence first, for
    :func:`validate_config`: the ``configfile:`` of the Snakefile (when it was found), each
    ``--configfile`` in order (absolute paths), then the ``--config`` values.

    Parameters
    ----------
    workflow : snakemake.workflow.Workflow
        The ``workflow`` object of a Snakefile.
    """
    cli_files = [Path(f).resolve() for f in workflow.config_settings.configfiles]
    directive = [Path(f).resolve() for f in workflow.configfiles]
    sources = []
    for path in [*(f for f in directive if f not in cli_files), *cli_files]:
        try:
            content = load_schema(path)
        except (OSError, yaml.YAMLError):  # Snakemake read it already; it reports its own
            continue
        sources.append((str(path), content if isinstance(content, dict) else {}))
    sources.append(("--config", dict(workflow.config_settings.config or {})))
    return sources


def _validate_config(
    config: Mapping[str, Any], schema: Mapping[str, Any] | str | Path
) -> dict[str, Any]:
    """Check ``config`` against the schema and return a copy with defaults filled in.

    Parameters
    ----------
    config : mapping
        The configuration as Snakemake assembled it (config file plus ``--config`` values).
    schema : mapping or path
        The JSON schema (YAML file ``workflow/schemas/config.schema.yaml`` or its content).

    Raises
    ------
    QMRIInputError
        One line naming the offending key: unknown keys, wrong types, values out of range.
    """
    if not isinstance(schema, Mapping):
        schema = load_schema(schema)
    cfg = copy.deepcopy(dict(config))
    _fill_defaults(cfg, schema)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(cfg), key=lambda e: (list(e.path), e.message))
    if errors:
        err = errors[0]
        where = ".".join(str(p) for p in err.path)
        if err.validator == "additionalProperties":
            known = sorted(err.schema.get("properties", {}))
            extra = sorted(set(err.instance) - set(known))
            name = ".".join([*([where] if where else []), extra[0]])
            raise QMRIInputError(
                f"unknown key (known keys here: {', '.join(known)})", f"config key '{name}'"
            )
        raise QMRIInputError(err.message, f"config key '{where or '<root>'}'")
    if cfg.get("labels_dir", "") is None and "bids_dir" in cfg:
        cfg["labels_dir"] = default_labels_dir(cfg["bids_dir"])
    if "bids_dir" in cfg and "output_dir" in cfg:
        _check_output_dir(Path(cfg["bids_dir"]), Path(cfg["output_dir"]))
    if "adc" in cfg and cfg["adc"]["b_max"] < cfg["adc"]["b_min"]:
        raise _CrossKeyError(
            f"{cfg['adc']['b_max']:g} is smaller than adc.b_min ({cfg['adc']['b_min']:g} s/mm^2)",
            "adc.b_max",
            "adc.b_min",
        )
    if "registration" in cfg:
        reg = cfg["registration"]
        if len(reg["shrink_factors"]) != len(reg["smoothing_sigmas_mm"]):
            raise _CrossKeyError(
                "needs one entry per entry of registration.shrink_factors",
                "registration.smoothing_sigmas_mm",
                "registration.shrink_factors",
            )
    return cfg


def default_labels_dir(bids_dir: str) -> str:
    """``labels_dir`` when the config leaves it null: ``<bids_dir>/derivatives/labels``."""
    return f"{bids_dir.rstrip('/')}/derivatives/labels"


def default_dose_dir(bids_dir: str) -> str:
    """Where a DICOM import writes dose maps when ``dose_dir`` is null."""
    return f"{bids_dir.rstrip('/')}/derivatives/dose"


def _check_output_dir(bids_dir: Path, output_dir: Path) -> None:
    """The output may not be the raw dataset or inside it, except under its ``derivatives/``
    (the BIDS place for derived data, e.g. ``<bids_dir>/derivatives/qmri``)."""
    raw, out = bids_dir.resolve(), output_dir.resolve()
    if out == raw:
        raise QMRIInputError(
            "is the raw dataset (bids_dir): outputs would be mixed into the inputs",
            "config key 'output_dir'",
        )
    if out.is_relative_to(raw) and not out.is_relative_to(raw / "derivatives"):
        raise QMRIInputError(
            f"lies inside bids_dir ({raw}) outside its derivatives/ folder: outputs would be "
            "taken for raw data (use e.g. <bids_dir>/derivatives/qmri)",
            "config key 'output_dir'",
        )


def schema_with_sections(
    sections: Mapping[str, Mapping[str, Any]], schema: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The workflow schema extended by config sections of fits registered by plugins.

    Parameters
    ----------
    sections : mapping of str to mapping
        Section name to its JSON schema (an object schema with defaults).
    schema : mapping, optional
        The base schema; default :data:`DEFAULT_SCHEMA`.

    Raises
    ------
    QMRIInputError
        A section that the schema defines already.
    """
    out = copy.deepcopy(dict(schema if schema is not None else load_schema(DEFAULT_SCHEMA)))
    for name, section in sections.items():
        if name in out["properties"]:
            raise QMRIInputError(
                "a plugin redefines a config section of qmri", f"section '{name}'"
            )
        out["properties"][name] = copy.deepcopy(dict(section))
    return out


def schema_defaults(schema: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Every default of the schema, as the config an empty config file validates to."""
    return validate_config({}, schema if schema is not None else DEFAULT_SCHEMA)


def config_hash(config: Mapping[str, Any]) -> str:
    """SHA-256 of the validated config (canonical JSON), recorded in the outputs."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
