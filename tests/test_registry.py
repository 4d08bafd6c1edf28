"""The fit registry: a new fit is a model, a registry entry and a config section (issue #12).

The toy fit (``tests/data/toy_t1rho_fit.py``: T1rho from spin-lock series) is added exactly
as a user would add one, through the config key ``plugins``, and run through the workflow.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from qmri import registry
from qmri.config import schema_defaults
from qmri.paths import bidsignore
from qmri.phantom import write_phantom_dataset

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="module")
def toy():
    """The plugin module, imported as the workflow imports it."""
    sys.path.insert(0, str(DATA))
    try:
        registry.load_plugins(["toy_t1rho_fit"])
        yield sys.modules["toy_t1rho_fit"]
    finally:
        sys.path.remove(str(DATA))


def test_registry_entries_name_their_series_maps_and_sections():
    config = schema_defaults()
    assert list(registry.FITS)[:7] == ["vfa", "irt1", "mese", "megre", "adc", "ivim", "dce"]
    for spec in registry.FITS.values():
        maps = [m.param for m in spec.maps(config)]
        assert maps[-2:] == ["R2", "fitmask"] or spec.name == "dce", spec.name
        assert spec.section is None or spec.section in config, spec.name
    assert registry.motion_source(registry.FITS["ivim"], config).name == "adc"
    dce = [m.param for m in registry.FITS["dce"].table_maps(config)]
    assert dce == ["Ktrans", "kep", "ve", "vp", "iAUC60", "iAUC90"]


def test_toy_model_recovers_t1rho_and_predicts_its_signal(toy):
    times = [0.01, 0.03, 0.06, 0.1]
    model = toy.T1rhoModel(times, min_signal=1.0)
    truth = {"T1rho": np.array([0.04, 0.08]), "S0": np.array([900.0, 500.0])}
    signal = model.predict(truth)
    fit = model.fit(signal)
    np.testing.assert_allclose(fit.t1rho_s, truth["T1rho"], rtol=1e-5)
    np.testing.assert_allclose(model.predict(fit.params), signal, rtol=1e-5)
    assert fit.units["T1rho"] == "s"
    assert "*_T1rho.*" in bidsignore(
        registry.all_map_suffixes({**schema_defaults(), "t1rho": {"min_signal": 1.0}})
    )


def _add_spin_lock_series(bids: Path) -> None:
    """Each session's MESE echoes again as a spin-lock series (T1rho = the phantom's T2)."""
    for mese in sorted(bids.glob("sub-*/ses-*/anat/*_echo-*_MESE.nii.gz")):
        index = mese.name.split("_echo-")[1].split("_")[0]
        target = mese.with_name(mese.name.replace(f"echo-{index}_MESE", f"tsl-{index}_T1rho"))
        shutil.copy(mese, target)
        meta = json.loads(mese.with_name(mese.name.replace(".nii.gz", ".json")).read_text())
        side = {"SpinLockTime": meta["EchoTime"]}
        target.with_name(target.name.replace(".nii.gz", ".json")).write_text(json.dumps(side))


@pytest.mark.slow
def test_a_plugin_fit_runs_through_the_workflow(tmp_path):
    bids = write_phantom_dataset(tmp_path / "bids", n_subjects=1, sessions=("pre", "fu1"),
                                 small=True)  # fmt: skip
    _add_spin_lock_series(bids)
    out = tmp_path / "out"
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    config.update(
        bids_dir=str(bids), labels_dir=str(bids / "derivatives" / "labels"), output_dir=str(out),
        plugins=["toy_t1rho_fit"], t1rho={"min_signal": 1.0},
    )  # fmt: skip
    config["dce"]["activate"] = False  # not needed here; keeps the run short
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join([str(DATA), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "workflow" / "Snakefile"),
           "--configfile", str(tmp_path / "config.yaml"), "--cores", "2"]  # fmt: skip
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "rule fit_t1rho:" in res.stdout + res.stderr
    table = pd.read_csv(out / "sub-01" / "sub-01_roistats.csv", dtype={"session": str})
    t1rho = table[table["map"] == "T1rho"].set_index(["session", "roi"])
    t2 = table[table["map"] == "T2"].set_index(["session", "roi"])
    assert set(t1rho.index.get_level_values(0)) == {"pre", "fu1"}
    assert (t1rho["unit"] == "s").all()
    # the same echoes fitted by the toy (log-linear) and by qmri's T2 model: medians agree
    for key in [("pre", "tumor"), ("fu1", "tumor"), ("pre", "vb_control")]:
        assert t1rho.loc[key, "median"] == pytest.approx(t2.loc[key, "median"], rel=0.03), key
    side = json.loads(
        (out / "sub-01/ses-pre/anat/sub-01_ses-pre_desc-t1rho_T1rho.json").read_text()
    )
    assert side["ModelOptions"] == {"spin_lock_times_s": side["SpinLockTime"], "min_signal": 1.0}
    assert "*_T1rho.*" in (out / ".bidsignore").read_text().splitlines()
