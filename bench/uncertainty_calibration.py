"""Calibration of AlignResult.uncertainty: spread of (error / uncertainty) per noise level.

Error = estimated - true shifts after gauge removal (fix_gauge); spread as std and as the
robust 1.4826 * MAD.  Calibrated: both near 1.

    PYTHONPATH=$PWD python bench/uncertainty_calibration.py [--seeds 0 2] [--n 48]
"""
import argparse
import time

import numpy as np

import fastalign
from fastalign.align.gauge import fix_gauge
from fastalign.simulate import seed_experiment


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--n", type=int, default=48)
    ap.add_argument("--counts", type=float, nargs="+", default=[1000.0, 100.0])
    ap.add_argument("--max-iter", type=int, default=15)
    a = ap.parse_args()
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
            u = r.uncertainty[:, 0]
            z = err[:, 0] / u
            mad = 1.4826 * np.median(np.abs(z - np.median(z)))
            last = [h["max_update"] for h in r.history[-3:]]
            print(f"counts {counts:6.0f} seed {seed}  x: rms err {np.sqrt(np.mean(err[:, 0]**2)):.4f}"
                  f"  median unc {np.median(u):.4f}  std(z) {z.std():.2f}  1.4826MAD(z) {mad:.2f}"
                  f"  last max updates {['%.2g' % v for v in last]}"
                  f"  ({time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
