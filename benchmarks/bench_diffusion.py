"""Benchmark of qmri's diffusion models (IVIM, DTI) against per-voxel and dipy implementations.

Run with ``python benchmarks/bench_diffusion.py`` (part of ``make bench``). In one process:

* IVIM: a synthetic marrow/metastasis volume (D 0.2-1.2e-3 mm^2/s, f 0.03-0.25, D* 0.01-0.1
  mm^2/s, 13 b-values, Rician noise, SNR 50 at b = 0) fitted by qmri (segmented and full, all
  voxels at once), by a naive per-voxel ``scipy.optimize.curve_fit`` bi-exponential loop with
  bounds (subset) and by dipy's ``IvimModel(gtab, fit_method="trr")`` (subset).
* DTI: dipy's real brain DWI ``small_64D`` (b=0 + 64 directions), tiled to many voxels, fitted by
  qmri's WLS and by dipy's ``TensorModel(gtab, fit_method="WLS")``; agreement of MD and FA.

Printed per method: voxels per second, speed ratio to qmri, median relative error against the
truth (IVIM) or median relative difference to dipy (DTI), and peak traced memory of qmri's fit
(tracemalloc, measured in a separate run so it does not slow the timed one).
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

from qmri.models.dti import DTIModel
from qmri.models.ivim import IVIMModel, ivim_signal

RNG = np.random.default_rng(20261123)
B_IVIM = np.array([0, 10, 20, 30, 50, 80, 100, 150, 200, 300, 400, 600, 800], float)
LOWER = [0.0, 0.0, 0.0, 5e-3]  # S0, f, D, D* (curve_fit loop)


def _peak_mib(fn: Callable[[], object]) -> float:
    tracemalloc.start()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


def _timed(fn: Callable[[], object]) -> tuple[object, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _rel(est: np.ndarray, truth: np.ndarray) -> float:
    return float(np.nanmedian(np.abs(np.asarray(est, float) - truth) / np.abs(truth)))


def _line(name: str, n: int, seconds: float, ref_rate: float | None, errs: str, mem: str) -> None:
    rate = n / seconds
    ratio = "" if ref_rate is None else f"| qmri is {ref_rate / rate:8.1f}x faster "
    print(f"  {name:34s} {rate:11.0f} vox/s {ratio:25s}| {errs} {mem}")


def ivim_bench(n: int, n_loop: int, n_dipy: int) -> None:
    f = RNG.uniform(0.03, 0.25, n)
    d = RNG.uniform(0.2e-3, 1.2e-3, n)
    dstar = RNG.uniform(0.01, 0.1, n)
    clean = ivim_signal(1000.0, f, d, dstar, B_IVIM)
    sigma = 1000.0 / 50
    data = np.hypot(clean + RNG.normal(0, sigma, clean.shape), RNG.normal(0, sigma, clean.shape))
    truth = {"D": d, "f": f, "Dstar": dstar}
    print(f"IVIM: {n} voxels, {B_IVIM.size} b-values, SNR 50 (marrow / metastasis parameters)")

    def errs(est: dict[str, np.ndarray], idx: np.ndarray) -> str:
        return "median rel. error " + ", ".join(
            f"{k} {_rel(est[k], truth[k][idx]):.3f}" for k in ("D", "f", "Dstar")
        )

    rates: dict[str, float] = {}
    fits: dict[str, dict[str, np.ndarray]] = {}
    for method in ("segmented", "full"):
        model = IVIMModel(B_IVIM, method=method)
        fit, secs = _timed(lambda model=model: model.fit(data))
        mem = _peak_mib(lambda model=model: model.fit(data))
        rates[method] = n / secs
        est = {k: fit.maps[k] for k in ("D", "f", "Dstar")}
        fits[method] = est
        _line(
            f"qmri IVIM {method}",
            n,
            secs,
            None,
            errs(est, np.arange(n)) + f", failed {fit.n_failed / n:.1%}",
            f"| peak {mem:.0f} MiB",
        )

    # naive per-voxel loop: curve_fit with bounds, start from typical marrow values
    def biexp(b, s0, f_, d_, ds_):
        return s0 * ((1 - f_) * np.exp(-b * d_) + f_ * np.exp(-b * ds_))

    idx = np.arange(n_loop)
    loop = {k: np.full(n_loop, np.nan) for k in ("D", "f", "Dstar")}

    def run_loop() -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)
            for i in idx:
                y = data[i]
                try:
                    p, _ = curve_fit(
                        biexp,
                        B_IVIM,
                        y,
                        p0=[float(y[0]), 0.1, 1e-3, 0.03],
                        bounds=(LOWER, [2 * float(y[0]) + 1, 1.0, 3e-3, 0.2]),
                    )
                except RuntimeError:
                    continue
                loop["f"][i], loop["D"][i], loop["Dstar"][i] = p[1], p[2], p[3]

    _, secs = _timed(run_loop)
    _line(
        "curve_fit loop (bounded, per voxel)",
        n_loop,
        secs,
        None,
        errs(loop, idx),
        "",
    )
    loop_rate = n_loop / secs
    for method, est in fits.items():  # same voxels as the loop
        sub_est = {k: v[idx] for k, v in est.items()}
        print(f"    qmri {method} on the loop's voxels: {errs(sub_est, idx)}")
        # qmri reports a voxel stopped on a bound as failed (NaN); the loop returns the bound
        # value. Compare the loop on the voxels qmri fitted too, so neither is flattered.
        fitted = np.isfinite(sub_est["D"])
        loop_fitted = {k: np.where(fitted, v, np.nan) for k, v in loop.items()}
        print(f"    curve_fit loop on the voxels qmri {method} fitted: {errs(loop_fitted, idx)}")
    for method, rate in rates.items():
        print(f"    qmri {method} / curve_fit loop: {rate / loop_rate:8.1f}x")

    try:
        from dipy.core.gradients import gradient_table
        from dipy.reconst.ivim import IvimModel
    except ImportError:  # pragma: no cover
        print("  dipy not installed: IvimModel skipped")
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bvecs = np.tile([1.0, 0.0, 0.0], (B_IVIM.size, 1))
        gtab = gradient_table(B_IVIM, bvecs=bvecs, b0_threshold=0)
        model = IvimModel(gtab, fit_method="trr")
        sub = data[:n_dipy]
        fit, secs = _timed(lambda: model.fit(sub))
    est = {
        "D": fit.D,
        "f": fit.perfusion_fraction,
        "Dstar": fit.D_star,
    }
    _line("dipy IvimModel trr", n_dipy, secs, None, errs(est, np.arange(n_dipy)), "")
    for method, q in fits.items():  # same voxels as dipy
        sub_est = {k: v[:n_dipy] for k, v in q.items()}
        print(f"    qmri {method} on dipy's voxels: {errs(sub_est, np.arange(n_dipy))}")
    for method, rate in rates.items():
        print(f"    qmri {method} / dipy trr:       {rate / (n_dipy / secs):8.1f}x")


def dti_bench(n_tiles: int) -> None:
    import dipy
    import nibabel as nib
    from dipy.core.gradients import gradient_table
    from dipy.reconst.dti import TensorModel

    files = Path(dipy.__file__).parent / "data" / "files"
    data = np.asarray(nib.load(files / "small_64D.nii").dataobj, dtype=np.float64)
    bvals = np.loadtxt(files / "small_64D.bval")
    bvecs = np.loadtxt(files / "small_64D.bvec")
    mask = data[..., 0] > 300
    vox = data[mask]
    big = np.tile(vox, (n_tiles, 1))
    n = big.shape[0]
    print(f"DTI: dipy small_64D brain voxels x {n_tiles} = {n} voxels, 65 volumes (b=0 + 64 dirs)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gtab = gradient_table(bvals, bvecs=np.nan_to_num(bvecs))
        tmodel = TensorModel(gtab, fit_method="WLS")
        ref, t_dipy = _timed(lambda: tmodel.fit(big))
    model = DTIModel(bvals, bvecs)
    fit, t_qmri = _timed(lambda: model.fit(big))
    mem = _peak_mib(lambda: model.fit(big))
    agree = ", ".join(
        f"{k} {_rel(fit.maps[k], getattr(ref, k.lower())):.2e}" for k in ("MD", "FA", "AD", "RD")
    )
    _line("qmri DTI WLS", n, t_qmri, None, f"median rel. diff. to dipy {agree}", "")
    print(f"    peak memory {mem:.0f} MiB; failed {fit.n_failed} of {n}")
    _line("dipy TensorModel WLS", n, t_dipy, None, "", "")
    print(f"    qmri / dipy: {t_dipy / t_qmri:8.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voxels", type=int, default=100_000, help="IVIM voxels fitted by qmri")
    parser.add_argument(
        "--loop-voxels", type=int, default=300, help="voxels of the curve_fit loop"
    )
    parser.add_argument("--dipy-voxels", type=int, default=100, help="voxels of dipy IVIM trr")
    parser.add_argument("--dti-tiles", type=int, default=300, help="copies of the brain voxels")
    args = parser.parse_args()
    ivim_bench(args.voxels, args.loop_voxels, args.dipy_voxels)
    dti_bench(args.dti_tiles)


if __name__ == "__main__":
    main()
