"""Benchmark of qmri's model fits against the naive per-voxel ``scipy.optimize.curve_fit`` loop.

Run with ``make bench``. For each model a synthetic volume with known truth and Gaussian noise
is fitted by qmri (all voxels at once) and, on a subset, by a per-voxel ``curve_fit`` loop with
the same bounds, in the same process. For the closed-form (linear) fits the loop fits the same
straight line per voxel with ``curve_fit`` (same estimator, same weights); for inversion
recovery it fits the magnitude model ``|a + b exp(-TI/T1)|`` from one naive start (no polarity
search). Printed per model: voxels per second of each, their ratio, the median relative error
of each against the truth, and the peak memory of qmri's fit (traced NumPy allocations,
measured in a separate run; qmri's time is the best of ``--repeats`` runs). Numbers depend on
the machine: the README states the machine they came from.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

from qmri.models import ADCModel, InversionRecoveryModel, MonoExponentialModel, VFAModel

RNG = np.random.default_rng(20261123)


@dataclass
class Case:
    name: str
    x: np.ndarray  # acquisition variable per volume, (n_obs,) or per voxel (n_vox, n_obs)
    truth: np.ndarray  # (n_vox,) parameter of interest
    data: np.ndarray  # (n_vox, n_obs)
    fit_qmri: Callable[[np.ndarray], np.ndarray]  # data -> estimated parameter
    model: Callable[..., np.ndarray]  # curve_fit model f(x, *p)
    p0: Callable[[np.ndarray], list[float]]  # start per voxel (from the data)
    bounds: tuple[list[float], list[float]]
    param_index: int  # which curve_fit parameter is compared to truth
    #: optional per-voxel loop replacing the generic curve_fit call: (x, y) -> estimate
    loop_fit: Callable[[np.ndarray, np.ndarray], float] | None = None


def _noisy(signal: np.ndarray, snr: float) -> np.ndarray:
    sigma = signal.max(axis=1, keepdims=True) / snr
    return signal + RNG.normal(size=signal.shape) * sigma


def vfa_case(n: int) -> Case:
    flips = np.array([3.0, 6.0, 10.0, 15.0, 20.0])
    tr = 0.010
    t1 = RNG.uniform(0.3, 2.0, n)
    m0 = RNG.uniform(500, 1500, n)
    b1 = RNG.uniform(0.8, 1.2, n)
    a = np.radians(flips) * b1[:, None]  # actual angles per voxel
    e1 = np.exp(-tr / t1)[:, None]
    sig = m0[:, None] * np.sin(a) * (1 - e1) / (1 - np.cos(a) * e1)
    model = VFAModel(flips, tr, method="nlls")

    def f(x, m0_, t1_):
        e = np.exp(-tr / t1_)
        return m0_ * np.sin(x) * (1 - e) / (1 - np.cos(x) * e)

    return Case(
        "VFA T1 (NLLS, B1)", a, t1, _noisy(sig, 200),
        lambda d: model.fit(d, b1=b1).maps["T1"], f,
        lambda y: [float(y.max() * 10), 1.0], ([0, 1e-3], [np.inf, 10]), 1,
    )  # fmt: skip


def _line(x: np.ndarray, intercept: float, slope: float) -> np.ndarray:
    return intercept + slope * x


def despot1_case(n: int) -> Case:
    flips = np.array([3.0, 6.0, 10.0, 15.0, 20.0])
    tr = 0.010
    t1 = RNG.uniform(0.3, 2.0, n)
    m0 = RNG.uniform(500, 1500, n)
    a = np.radians(flips)
    e1 = np.exp(-tr / t1)[:, None]
    sig = m0[:, None] * np.sin(a) * (1 - e1) / (1 - np.cos(a) * e1)
    model = VFAModel(flips, tr, method="linear")

    def loop_fit(x: np.ndarray, y: np.ndarray) -> float:
        p, _ = curve_fit(_line, y / np.tan(x), y / np.sin(x), p0=[0.0, 0.99])
        return -tr / np.log(p[1])  # slope E1 -> T1

    return Case(
        "DESPOT1 T1 (linear)", a, t1, _noisy(sig, 200),
        lambda d: model.fit(d).maps["T1"], _line, lambda y: [], ([], []), 1, loop_fit,
    )  # fmt: skip


def t2_case(n: int) -> Case:
    te = np.arange(1, 9) * 0.01
    t2 = RNG.uniform(0.03, 0.2, n)
    s0 = RNG.uniform(500, 1500, n)
    sig = s0[:, None] * np.exp(-te / t2[:, None])
    model = MonoExponentialModel(te)
    return Case(
        "T2 (NLLS)", te, t2, _noisy(sig, 200),
        lambda d: model.fit(d).maps["T2"],
        lambda x, s0_, t2_: s0_ * np.exp(-x / t2_),
        lambda y: [float(y[0] * 1.5), 0.08], ([0, 1e-4], [np.inf, 5]), 1,
    )  # fmt: skip


def t2_linear_case(n: int) -> Case:
    te = np.arange(1, 9) * 0.01
    t2 = RNG.uniform(0.03, 0.2, n)
    s0 = RNG.uniform(500, 1500, n)
    sig = s0[:, None] * np.exp(-te / t2[:, None])
    model = MonoExponentialModel(te, method="linear")

    def loop_fit(x: np.ndarray, y: np.ndarray) -> float:
        pos = y > 0  # weighted log-linear: weights S^2, i.e. sigma 1/S on log S
        p, _ = curve_fit(_line, x[pos], np.log(y[pos]), p0=[np.log(y[0]), -10.0], sigma=1 / y[pos])
        return -1.0 / p[1]

    return Case(
        "T2 (weighted log-linear)", te, t2, _noisy(sig, 200),
        lambda d: model.fit(d).maps["T2"], _line, lambda y: [], ([], []), 1, loop_fit,
    )  # fmt: skip


def ir_case(n: int) -> Case:
    ti = np.array([0.05, 0.15, 0.4, 0.8, 1.5, 3.0])
    t1 = RNG.uniform(0.3, 2.5, n)
    m0 = RNG.uniform(500, 1500, n)
    eff = RNG.uniform(0.85, 1.0, n)
    signed = m0[:, None] * (1 - (1 + eff[:, None]) * np.exp(-ti / t1[:, None]))
    model = InversionRecoveryModel(ti)
    return Case(
        "IR T1 (RD-NLS-PR)", ti, t1, np.abs(_noisy(signed, 200)),
        lambda d: model.fit(d).maps["T1"],
        lambda x, a_, b_, t1_: np.abs(a_ + b_ * np.exp(-x / t1_)),
        lambda y: [float(y.max()), -2.0 * float(y.max()), 1.0],
        ([0, -np.inf, 1e-3], [np.inf, 0, 10]), 2,
    )  # fmt: skip


def adc_case(n: int) -> Case:
    b = np.array([0, 200, 400, 600, 800, 1000], float)
    adc = RNG.uniform(3e-4, 2.5e-3, n)
    s0 = RNG.uniform(500, 1500, n)
    sig = s0[:, None] * np.exp(-b * adc[:, None])
    model = ADCModel(b)
    return Case(
        "ADC (weighted log-linear)", b, adc, _noisy(sig, 200),
        lambda d: model.fit(d).maps["ADC"],
        lambda x, s0_, d_: s0_ * np.exp(-x * d_),
        lambda y: [float(y[0]), 1e-3], ([0, 0], [np.inf, 5e-3]), 1,
    )  # fmt: skip


def run(case: Case, n_loop: int, repeats: int) -> None:
    tracemalloc.start()  # peak memory from a separate run: tracing slows allocations down
    est = np.asarray(case.fit_qmri(case.data), dtype=float)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    t_qmri = np.inf
    for _ in range(repeats):  # best of `repeats`, as timeit does
        t0 = time.perf_counter()
        case.fit_qmri(case.data)
        t_qmri = min(t_qmri, time.perf_counter() - t0)

    idx = np.arange(n_loop)
    loop_est = np.full(n_loop, np.nan)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OptimizeWarning)
        for k, i in enumerate(idx):
            y = case.data[i]
            x = case.x[i] if case.x.ndim == 2 else case.x
            try:
                if case.loop_fit is not None:
                    loop_est[k] = case.loop_fit(x, y)
                else:
                    p, _ = curve_fit(case.model, x, y, p0=case.p0(y), bounds=case.bounds)
                    loop_est[k] = p[case.param_index]
            except (RuntimeError, ValueError):
                pass
    t_loop = time.perf_counter() - t0

    n = case.data.shape[0]
    v_qmri, v_loop = n / t_qmri, n_loop / t_loop
    err_q = np.nanmedian(np.abs(est - case.truth) / case.truth)
    err_l = np.nanmedian(np.abs(loop_est - case.truth[idx]) / case.truth[idx])
    print(
        f"{case.name:28s} qmri {v_qmri:12.0f} vox/s | curve_fit loop {v_loop:9.0f} vox/s | "
        f"ratio {v_qmri / v_loop:8.1f}x | median rel. error qmri {err_q:.4f}, loop {err_l:.4f} | "
        f"peak memory {peak / 2**20:.0f} MiB ({n} voxels)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voxels", type=int, default=200_000, help="voxels fitted by qmri")
    parser.add_argument("--loop-voxels", type=int, default=500, help="voxels fitted by the loop")
    parser.add_argument("--repeats", type=int, default=3, help="qmri timing: best of N runs")
    args = parser.parse_args()
    print(f"qmri benchmark: {args.voxels} voxels (qmri), {args.loop_voxels} (curve_fit loop)")
    for make in (vfa_case, despot1_case, t2_case, t2_linear_case, adc_case, ir_case):
        run(make(args.voxels), args.loop_voxels, args.repeats)


if __name__ == "__main__":
    main()
