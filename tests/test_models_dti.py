"""DTI model: recovery of known tensors, agreement with dipy on real brain DWI, failures, errors."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from qmri.errors import QMRIInputError
from qmri.models import ADCModel
from qmri.models.dti import DTIModel


def directions(n, seed=0):
    g = np.random.default_rng(seed).normal(size=(n, 3))
    return g / np.linalg.norm(g, axis=1, keepdims=True)


def scheme(n_dirs=30, b=1000.0, n_b0=2):
    bvals = np.concatenate([np.zeros(n_b0), np.full(n_dirs, b)])
    bvecs = np.vstack([np.zeros((n_b0, 3)), directions(n_dirs)])
    return bvals, bvecs


def random_tensors(n, seed=1):
    """Eigenvalues (n, 3) in mm^2/s, sorted descending, and random rotations (n, 3, 3)."""
    rng = np.random.default_rng(seed)
    evals = np.sort(rng.uniform(1e-4, 2.5e-3, (n, 3)), axis=1)[:, ::-1]
    q, _ = np.linalg.qr(rng.normal(size=(n, 3, 3)))
    return evals, q


def signal(s0, evals, evecs, bvals, bvecs):
    """S0 exp(-b g^T D g), written out independently of qmri."""
    tensor = np.einsum("...ij,...j,...kj->...ik", evecs, evals, evecs)
    adc = np.einsum("ni,...ij,nj->...n", bvecs, tensor, bvecs)
    return np.asarray(s0, dtype=float)[..., None] * np.exp(-bvals * adc)


def scalar_maps(evals):
    l1, l2, l3 = evals[..., 0], evals[..., 1], evals[..., 2]
    md = evals.mean(axis=-1)
    fa = np.sqrt(1.5 * ((evals - md[..., None]) ** 2).sum(-1) / (evals**2).sum(-1))
    return {"FA": fa, "MD": md, "AD": l1, "RD": (l2 + l3) / 2}


@pytest.mark.parametrize("method", ["WLS", "OLS"])
def test_noiseless_tensors_are_recovered(method):
    bvals, bvecs = scheme()
    evals, evecs = random_tensors(60)
    s0 = np.random.default_rng(2).uniform(100, 5000, 60)
    data = signal(s0, evals, evecs, bvals, bvecs).reshape(3, 4, 5, -1)
    fit = DTIModel(bvals, bvecs, method=method).fit(data)
    assert fit.n_failed == 0
    for name, truth in scalar_maps(evals).items():
        np.testing.assert_allclose(fit.maps[name].reshape(-1), truth, rtol=2e-5, err_msg=name)
    np.testing.assert_allclose(fit.maps["S0"].reshape(-1), s0, rtol=1e-5)
    np.testing.assert_allclose(fit.maps["R2"], 1.0, atol=1e-6)
    assert fit.units == {
        "FA": "1", "MD": "mm^2/s", "AD": "mm^2/s", "RD": "mm^2/s", "S0": "a.u.",
        "R2": "1", "fitmask": "1",
    }  # fmt: skip
    assert fit.maps["FA"].dtype == np.float32


def test_isotropic_tensor_has_zero_fa_and_noisy_fit_is_accurate():
    bvals, bvecs = scheme(n_dirs=64)
    rng = np.random.default_rng(5)
    evals = np.tile([1.7e-3, 0.4e-3, 0.4e-3], (2000, 1))
    _, evecs = random_tensors(2000, seed=6)
    clean = signal(1000.0, evals, evecs, bvals, bvecs)
    noise = rng.normal(0, 20.0, (2, *clean.shape))  # SNR 50
    fit = DTIModel(bvals, bvecs).fit(np.hypot(clean + noise[0], noise[1]))
    truth = scalar_maps(evals[0])
    for name in ("FA", "MD"):
        assert np.median(np.abs(fit.maps[name] - truth[name]) / truth[name]) < 0.05, name
    iso = DTIModel(bvals, bvecs).fit(signal(1000.0, np.full(3, 1e-3), np.eye(3), bvals, bvecs))
    assert float(iso.maps["FA"]) == pytest.approx(0.0, abs=1e-5)


def _small_64d():
    """dipy's real brain DWI (b=0 + 64 directions at b~1000), shipped inside the dipy wheel."""
    nib = pytest.importorskip("nibabel")
    from pathlib import Path

    import dipy

    files = Path(dipy.__file__).parent / "data" / "files"
    nii, bval, bvec = (files / f"small_64D.{ext}" for ext in ("nii", "bval", "bvec"))
    if not nii.exists():
        pytest.skip("small_64D is not in this dipy installation")
    data = np.asarray(nib.load(nii).dataobj, dtype=np.float64)
    return data, np.loadtxt(bval), np.loadtxt(bvec)


def test_agrees_with_dipy_on_real_brain_dwi():
    from dipy.core.gradients import gradient_table
    from dipy.reconst.dti import TensorModel

    data, bvals, bvecs = _small_64d()
    assert data.shape[-1] == 65
    assert np.isnan(bvecs[0]).all()  # the b=0 row has no direction
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # dipy's own deprecation chatter
        gtab = gradient_table(bvals, bvecs=np.nan_to_num(bvecs))
        ref = TensorModel(gtab, fit_method="WLS").fit(data)
    mask = data[..., 0] > 300  # brain (b=0 signal well above background)
    assert mask.sum() > 200
    fit = DTIModel(bvals, bvecs).fit(data, mask=mask)
    adc = ADCModel(bvals, b_min=0, b_max=None).fit(data, mask=mask)
    # b_max = 1000 keeps the whole b ~ 1000 shell (987-1002 s/mm^2 here)
    assert ADCModel(bvals, b_min=0).used_volumes.all()
    assert fit.maps["fitmask"][mask].mean() > 0.9
    assert adc.maps["fitmask"][mask].mean() > 0.95
    for ours, theirs in (
        (fit.maps["MD"], ref.md),
        (fit.maps["FA"], ref.fa),
        (adc.maps["ADC"], ref.md),  # trace ADC over the 64 directions = MD
    ):
        ok = mask & np.isfinite(ours)
        rel = np.abs(ours[ok] - theirs[ok]) / np.abs(theirs[ok])
        assert np.median(rel) < 0.01


def test_failures_are_nan_and_counted_without_warnings():
    bvals, bvecs = scheme(n_dirs=12)
    evals, evecs = random_tensors(6)
    data = signal(1000.0, evals, evecs, bvals, bvecs)
    data[1] = 0.0
    data[2] = -data[0]
    data[3, 5] = np.inf
    data[4, :8] = 0.0  # only 6 positive volumes: undetermined
    data[5, 2:] = 1000.0 * np.exp(bvals[2:] * 1e-3)  # growing signal: negative diffusivity
    fit = DTIModel(bvals, bvecs).fit(data)
    assert fit.maps["fitmask"].tolist() == [1, 0, 0, 0, 0, 0]
    for name in ("FA", "MD", "AD", "RD", "S0", "R2"):
        assert np.isnan(fit.maps[name][1:]).all(), name
    assert (fit.n_fitted, fit.n_failed) == (6, 5)


def test_bvec_layouts_options_and_immutability():
    bvals, bvecs = scheme(n_dirs=6, n_b0=1)
    evals, evecs = random_tensors(1)
    data = signal(700.0, evals, evecs, bvals, bvecs)
    fsl = bvecs.T.copy()
    fsl[:, 0] = np.nan  # FSL files often have no direction for b=0
    model = DTIModel(bvals, 2.0 * fsl)  # (3, n), not normalised
    before = repr(model)
    fit = model.fit(data[0])
    assert fit.shape == ()
    assert float(fit.maps["MD"]) == pytest.approx(evals.mean(), rel=1e-5)
    assert repr(model) == before
    opts = json.loads(json.dumps(fit.options))
    assert opts["method"] == "WLS"
    assert "Basser" in fit.reference


@pytest.mark.parametrize(
    ("bvals", "bvecs", "kwargs", "match"),
    [
        (
            np.r_[0, [1000.0] * 5],
            np.vstack([np.zeros(3), directions(5)]),
            {},
            "at least 6 non-collinear diffusion directions, got 5",
        ),
        (
            np.r_[0, [1000.0] * 8],
            np.vstack([np.zeros(3), np.tile(directions(2), (4, 1))]),
            {},
            "at least 6 non-collinear diffusion directions, got 2",
        ),
        (np.full(7, 1000.0), directions(7), {}, "b = 0"),
        (np.r_[0, [1000.0] * 6], np.zeros((7, 2)), {}, r"b-vectors have shape \(7, 2\)"),
        (np.r_[0, [1000.0] * 6], np.zeros((7, 3)), {}, "non-zero b-vector"),
        (np.r_[0, [1000.0] * 6], np.vstack([np.zeros(3), directions(6)]), {"method": "NLLS"},
         "unknown DTI method 'NLLS'"),
        ([0.0, -1000.0], np.zeros((2, 3)), {}, "b-values must be >= 0"),
    ],
)  # fmt: skip
def test_construction_errors(bvals, bvecs, kwargs, match):
    with pytest.raises(QMRIInputError, match=match):
        DTIModel(bvals, bvecs, **kwargs)


def test_fit_input_errors():
    bvals, bvecs = scheme(n_dirs=6)
    with pytest.raises(QMRIInputError, match="data has 7 volumes but 8 b-values were given"):
        DTIModel(bvals, bvecs).fit(np.ones((2, 7)))
