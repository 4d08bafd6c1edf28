"""Config validation: defaults filled in, one-line errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from qmri.config import config_hash, load_schema, validate_config
from qmri.errors import QMRIInputError

SCHEMA = load_schema(Path(__file__).resolve().parents[1] / "workflow/schemas/config.schema.yaml")
BASE = {"bids_dir": "a", "labels_dir": "b", "output_dir": "c"}


def test_defaults_are_filled_in():
    cfg = validate_config(BASE, SCHEMA)
    assert cfg["adc"] == {"b_min": 200, "b_max": 1000}
    assert cfg["t1_vfa"]["method"] == "nlls"
    assert cfg["participant_label"] == []


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"colour": "red"}, r"^config key 'colour': unknown key \(known keys here: adc, "),
        ({"adc": {"bmin": 0}}, r"^config key 'adc\.bmin': unknown key"),
        ({"adc": {"b_min": -5}}, r"^config key 'adc\.b_min': -5 is less than the minimum of 0"),
        ({"t1_vfa": {"method": "magic"}}, r"^config key 't1_vfa\.method': 'magic' is not one of"),
        ({"registration": {"bins": "many"}}, r"^config key 'registration\.bins': 'many' is not"),
        (
            {"registration": {"shrink_factors": [4, 2, 1]}},
            r"^config key 'registration\.smoothing_sigmas_mm': needs one entry",
        ),
    ],
)
def test_bad_config_names_the_key(extra, message):
    with pytest.raises(QMRIInputError, match=message) as info:
        validate_config({**BASE, **extra}, SCHEMA)
    assert "\n" not in str(info.value)


def test_config_hash_is_stable_and_sensitive():
    a = validate_config(BASE, SCHEMA)
    assert config_hash(a) == config_hash(validate_config(BASE, SCHEMA))
    assert config_hash(a) != config_hash(validate_config({**BASE, "adc": {"b_min": 0}}, SCHEMA))


@pytest.mark.parametrize(
    ("output_dir", "message"),
    [
        ("{bids}", "is the raw dataset"),
        ("{bids}/sub-01/out", "inside bids_dir"),
        ("{bids}/../results", None),
        ("{bids}/derivatives/qmri", None),
    ],
)
def test_output_dir_may_not_be_inside_the_raw_dataset(tmp_path, output_dir, message):
    bids = tmp_path / "study"
    config = {"bids_dir": str(bids), "output_dir": output_dir.format(bids=bids)}
    if message is None:
        validate_config(config, SCHEMA)
    else:
        with pytest.raises(QMRIInputError, match=rf"config key 'output_dir': .*{message}"):
            validate_config(config, SCHEMA)
