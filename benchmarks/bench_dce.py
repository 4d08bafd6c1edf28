"""Benchmark of qmri's extended-Tofts fit against a naive per-voxel ``curve_fit`` loop.

Run with ``make bench`` (or ``python benchmarks/bench_dce.py``). A synthetic extended-Tofts volume
(Parker AIF, Gaussian noise) with known truth is fitted by qmri (all voxels at once, in chunks)
and, on a subset, by a per-voxel ``scipy.optimize.curve_fit`` loop with the same bounds and the
same exact forward model (:func:`qmri.models.dce.exp_convolution`), in the same process. Printed:
voxels per second of each, their ratio, the median relative error of Ktrans, ve and vp of each
against the truth, and the peak memory of qmri's fit (traced NumPy allocations).

``--full-volume`` also fits a 256 x 256 x 32 x 80 float32 concentration volume (2.1 M voxels)
and reports the time and the peak resident memory of the process (``resource.getrusage``); the
target is < 2 GB. It takes minutes.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import tracemalloc
import warnings

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

from qmri.models.dce import (
    ExtendedToftsModel,
    PatlakModel,
    ToftsModel,
    exp_convolution,
    parker_aif,
)

RNG = np.random.default_rng(20261123)
TIMES = np.arange(80) * 3.5  # s, 80 frames
NOISE_MM = 0.01  # Gaussian noise SD (mM)
NAMES = ("Ktrans", "ve", "vp")
HEMATOCRIT = 0.42  # the workflow's default (config schema)


def _truth(n: int) -> dict[str, np.ndarray]:
    return {
        "Ktrans": RNG.uniform(0.02, 0.5, n),
        "ve": RNG.uniform(0.1, 0.6, n),
        "vp": RNG.uniform(0.01, 0.1, n),
    }


def _rel_err(est: dict[str, np.ndarray], truth: dict[str, np.ndarray], idx=slice(None)) -> str:
    parts = []
    for k in NAMES:
        e = np.abs(np.asarray(est[k], float) - truth[k][idx]) / truth[k][idx]
        parts.append(f"{k} {np.nanmedian(e):.4f}")
    return ", ".join(parts)


def bench(n: int, n_loop: int) -> None:
    aif = parker_aif(TIMES, delay_s=20.0, hematocrit=HEMATOCRIT)
    model = ExtendedToftsModel(TIMES, aif)
    truth = _truth(n)
    data = model.predict(truth) + RNG.normal(0.0, NOISE_MM, (n, TIMES.size))

    model.fit(data[:1000])  # warm-up (first-call and compilation overheads)
    t0 = time.perf_counter()
    fit = model.fit(data)
    t_qmri = time.perf_counter() - t0
    tracemalloc.start()  # peak memory from a separate run: tracing slows allocations down
    model.fit(data)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    cp = aif.cp

    def f(t, kt, ve, vp):
        return vp * cp + kt * exp_convolution(t, cp, kt / ve)[0]

    loop = {k: np.full(n_loop, np.nan) for k in NAMES}
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OptimizeWarning)
        for i in range(n_loop):
            try:
                p, _ = curve_fit(
                    f, TIMES, data[i], p0=[0.6, 0.2, 0.01], bounds=([0, 1e-6, 0], [5, 1, 1])
                )
                for k, v in zip(NAMES, p, strict=True):
                    loop[k][i] = v
            except (RuntimeError, ValueError):
                pass
    t_loop = time.perf_counter() - t0

    v_qmri, v_loop = n / t_qmri, n_loop / t_loop
    print(
        f"{'extended Tofts (LM)':28s} qmri {v_qmri:12.0f} vox/s | curve_fit loop {v_loop:9.1f} "
        f"vox/s | ratio {v_qmri / v_loop:8.1f}x | peak memory {peak / 2**20:.0f} MiB "
        f"({n} voxels, {fit.n_failed} failed)"
    )
    print(f"{'':28s} median rel. error qmri:  {_rel_err(fit.maps, truth)}")
    sub = {k: fit.maps[k][:n_loop] for k in NAMES}
    print(f"{'':28s}   same {n_loop} voxels, qmri: {_rel_err(sub, truth, slice(0, n_loop))}")
    print(f"{'':28s}   same {n_loop} voxels, loop: {_rel_err(loop, truth, slice(0, n_loop))}")


def _cumtrapz(t_min: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.concatenate([[0.0], np.cumsum(0.5 * (y[1:] + y[:-1]) * np.diff(t_min))])


def bench_linear(n: int, n_loop: int) -> None:
    """Closed-form fits (Patlak; Murase's linearised Tofts / extended Tofts) vs a per-voxel loop.

    The loop solves the same least-squares problem voxel by voxel with ``numpy.linalg.lstsq``.
    With 80 frames a voxel carries 16x the samples of a 5-flip-angle DESPOT1 fit, so voxels/s
    are also printed as samples/s (voxels x frames) for comparison with the other linear fits.
    """
    aif = parker_aif(TIMES, delay_s=20.0, hematocrit=HEMATOCRIT)
    t_min = TIMES / 60.0
    truth = _truth(n)
    cases = [
        ("Patlak (linear)", PatlakModel, {"Ktrans": truth["Ktrans"] / 10, "vp": truth["vp"]}),
        ("Tofts (Murase, linear)", ToftsModel, {k: truth[k] for k in ("Ktrans", "ve")}),
        ("extended Tofts (Murase, lin.)", ExtendedToftsModel, truth),
    ]
    for name, cls, tr in cases:
        model = cls(TIMES, aif, method="linear")
        data = model.predict(tr) + RNG.normal(0.0, NOISE_MM, (n, TIMES.size))
        model.fit(data[:1000])  # warm-up (first call: compilation, caches)
        t_qmri = np.inf
        for _ in range(3):  # best of 3, as timeit does: these fits take tens of milliseconds
            t0 = time.perf_counter()
            fit = model.fit(data)
            t_qmri = min(t_qmri, time.perf_counter() - t0)
        c_frames = model.aif.cp
        integ_c = _cumtrapz(t_min, c_frames)
        t0 = time.perf_counter()
        for i in range(n_loop):
            y = data[i]
            if cls is PatlakModel:
                design = np.column_stack([c_frames, integ_c])
            elif cls is ToftsModel:
                design = np.column_stack([integ_c, -_cumtrapz(t_min, y)])
            else:
                design = np.column_stack([integ_c, -_cumtrapz(t_min, y), c_frames])
            np.linalg.lstsq(design, y, rcond=None)
        t_loop = time.perf_counter() - t0
        v_qmri, v_loop = n / t_qmri, n_loop / t_loop
        errs = ", ".join(
            f"{k} {np.nanmedian(np.abs(fit.maps[k] / v - 1)):.4f}" for k, v in tr.items()
        )
        print(
            f"{name:28s} qmri {v_qmri:12.0f} vox/s ({v_qmri * TIMES.size / 1e6:.0f} M samples/s)"
            f" | lstsq loop {v_loop:9.0f} vox/s | ratio {v_qmri / v_loop:8.1f}x | median rel. "
            f"error {errs} | {fit.n_failed} failed"
        )


def full_volume() -> None:
    shape = (256, 256, 32)
    n = int(np.prod(shape))
    aif = parker_aif(TIMES, delay_s=20.0, hematocrit=HEMATOCRIT)
    model = ExtendedToftsModel(TIMES, aif)
    t0 = time.perf_counter()
    data = np.empty((n, TIMES.size), dtype=np.float32)
    for start in range(0, n, 100_000):  # generate in slices: float64 temporaries stay small
        stop = min(start + 100_000, n)
        tr = _truth(stop - start)
        data[start:stop] = model.predict(tr) + RNG.normal(0, NOISE_MM, (stop - start, 80))
    data = data.reshape(*shape, TIMES.size)
    t_gen = time.perf_counter() - t0
    t0 = time.perf_counter()
    fit = model.fit(data)
    t_fit = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    peak_gib = peak / 2**30 if sys.platform == "darwin" else peak / 2**20
    print(
        f"{'full volume 256x256x32x80':28s} {n} voxels float32 (input {data.nbytes / 2**30:.2f} "
        f"GiB, generated in {t_gen:.0f} s) | fit {t_fit:.0f} s ({n / t_fit:.0f} vox/s) | "
        f"{fit.n_failed} failed | peak RSS {peak_gib:.2f} GiB "
        f"({'OK' if peak_gib < 2 else 'ABOVE'} the 2 GB target)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voxels", type=int, default=100_000, help="voxels fitted by qmri")
    parser.add_argument("--loop-voxels", type=int, default=200, help="voxels fitted by the loop")
    parser.add_argument(
        "--full-volume", action="store_true", help="also fit a 256x256x32x80 volume (minutes)"
    )
    args = parser.parse_args()
    print(
        f"qmri DCE benchmark: {args.voxels} voxels (qmri), {args.loop_voxels} (curve_fit loop), "
        f"{TIMES.size} frames, Parker AIF, noise SD {NOISE_MM} mM"
    )
    bench(args.voxels, args.loop_voxels)
    bench_linear(2 * args.voxels, 20 * args.loop_voxels)
    if args.full_volume:
        full_volume()


if __name__ == "__main__":
    main()
