"""Calibration of AlignResult.uncertainty: spread of (error / uncertainty) per noise level.

Error = estimated - true shifts after gauge removal (fix_gauge; the mean for dy); spread as
std and as the robust 1.4826 * MAD.  Calibrated: both near 1.

Cases:
  seed       2-D seed experiment (one row), x shifts only, Poisson noise (``--counts``): dx.
  particles  3-D particles (:func:`fastalign.simulate.rotated_axis_experiment`, untilted
             axis), x and y shifts up to 3 px, Gaussian noise (``--noise``, relative to the
             data's std): dx and dy, and the lag-1 correlation of the errors along the tilt
             angle.

    PYTHONPATH=$PWD python bench/uncertainty_calibration.py [--seeds 0 2] [--n 48]
    PYTHONPATH=$PWD python bench/uncertainty_calibration.py --case particles \\
        --shape 32 48 48 --step 3 --noise 0.1 0.3 --seeds 0 1
"""
import argparse
import time

import numpy as np

import fastalign
from fastalign import simulate
from fastalign.align.gauge import fix_gauge
from fastalign.simulate import seed_experiment


def spread(err, u):
    """``(std(z), 1.4826 MAD(z))`` of ``z = err / u``."""
    z = err / u
    return float(z.std()), float(1.4826 * np.median(np.abs(z - np.median(z))))


def line(label, err, u, extra=""):
    s, mad = spread(err, u)
    rms = float(np.sqrt(np.mean(err ** 2)))
    return (f"{label}: rms err {rms:.4f}  median unc {np.median(u):.4f}  std(z) {s:.2f}  "
            f"1.4826MAD(z) {mad:.2f}{extra}")


def seed_case(a):
    for counts in a.counts:
        for seed in a.seeds:
            data, angles, true = seed_experiment(n=a.n, seed=seed, shift_range=5)
            rng = np.random.default_rng([seed, 99])
            scale = counts / float(data.max())
            d = (rng.poisson(np.clip(data, 0, None) * scale) / scale).astype(np.float32)
            t0 = time.perf_counter()
            r = fastalign.align(d, angles, axes="x", max_iter=a.max_iter, tol=0.0,
                                specimen="compact", orient=False)
            err, _ = fix_gauge(r.shifts - true, angles)
            last = [h["max_update"] for h in r.history[-3:]]
            print(line(f"counts {counts:6.0f} seed {seed}  x", err[:, 0], r.uncertainty[:, 0],
                       f"  last max updates {['%.2g' % v for v in last]}"
                       f"  ({time.perf_counter() - t0:.0f} s)"), flush=True)


def particles_case(a):
    angles = np.arange(-60.0, 60.0 + 0.5 * a.step, a.step)
    for noise in a.noise:
        for seed in a.seeds:
            e = simulate.rotated_axis_experiment(shape=tuple(a.shape), angles_deg=angles,
                                                 axis_angle_deg=0.0, center_offset=0.0,
                                                 shift_range=3.0, noise=noise, seed=seed)
            t0 = time.perf_counter()
            r = fastalign.align(e.data, angles, max_iter=a.max_iter, tol=0.0,
                                specimen="compact", orient=False, auto_exclude=False)
            err, _ = fix_gauge(r.shifts - e.shifts, angles)
            err[:, 1] -= err[:, 1].mean()
            for c, name in ((0, "x"), (1, "y")):
                ec = err[:, c] - err[:, c].mean()
                lag1 = float((ec[1:] * ec[:-1]).sum() / (ec * ec).sum())
                print(line(f"{tuple(a.shape)} step {a.step:g} noise {noise:.2f} seed {seed} "
                           f"{name}", err[:, c], r.uncertainty[:, c],
                           f"  lag-1 corr {lag1:.2f}  ({time.perf_counter() - t0:.0f} s)"),
                      flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", choices=("seed", "particles"), default="seed")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--n", type=int, default=48)
    ap.add_argument("--counts", type=float, nargs="+", default=[1000.0, 100.0])
    ap.add_argument("--shape", type=int, nargs=3, default=[32, 48, 48])
    ap.add_argument("--step", type=float, default=3.0)
    ap.add_argument("--noise", type=float, nargs="+", default=[0.1, 0.3])
    ap.add_argument("--max-iter", type=int, default=15)
    a = ap.parse_args()
    seed_case(a) if a.case == "seed" else particles_case(a)


if __name__ == "__main__":
    main()
