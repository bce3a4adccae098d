"""Where the compact-object loop reconstructs: its rows and its region, default options.

Cases (256 px, dx, dy ~ U[-10, 10], Gaussian noise as a fraction of the data's std):

* ``small``: particles in an 80 px box at the centre of the 256 px field, -70..70 deg, 1 %;
* ``noisy``: the same at -60..60 deg, 10 % noise (before the edge fraction was corrected for
  noise this series was taken for a slab);
* ``top``: particles in rows 4-55 of 256, filling x and z (the loop's rows follow them);
* ``haadf``: ETSpy's real HAADF series (needs the bench extra; score: the relative residual
  of 50 SIRT iterations of the aligned stack, as ``bench/haadf_real.py``);
* ``catalyst``: ETSpy's simulated catalyst series (90 x 600 x 600, 0..178 deg, aligned as
  shipped; transposed to our axis along y), moved by dx, dy ~ U[-10, 10] with 1 % noise;
  run with default options and with ``nz=600``.

Each synthetic case runs with default options and with ``nz=256`` (a region the user set:
no crop, the full field in x and z).  One run each, warm (the JIT compiled by a small call
first); times include the final full-field volume.

Usage: python bench/compact_region.py [CASE ...]
"""
import os
import sys
import time
import warnings

import numpy as np

import fastalign
from fastalign.align.gauge import gauge_error
from fastalign.phantoms import particles_3d

N = 256


def synthetic(case):
    vol = np.zeros((N, N, N), np.float32)
    amax, noise = 70.0, 0.01
    if case in ("small", "noisy"):
        m, o = 80, (N - 80) // 2
        y0 = (N - N * 5 // 8) // 2
        vol[y0:y0 + N * 5 // 8, o:o + m, o:o + m] = particles_3d((N * 5 // 8, m, m),
                                                                 n_particles=16, seed=3)
        if case == "noisy":
            amax, noise = 60.0, 0.1
    else:
        vol[4:55] = particles_3d((51, N, N), n_particles=N // 6, seed=3)
    angles = np.linspace(-amax, amax, 61)
    rng = np.random.default_rng(7)
    true = rng.uniform(-10, 10, (angles.size, 2))
    data = fastalign.fourier_shift(fastalign.project(vol, angles), true).astype(np.float32)
    data += rng.normal(0, noise * data.std(), data.shape).astype(np.float32)
    return data, angles, true


def run(data, angles, **kw):
    t = time.perf_counter()
    r = fastalign.align(data, angles, **kw)
    return r, time.perf_counter() - t


def describe(r):
    spec = r.options.get("specimen") or {}
    region = spec.get("region")
    where = f"region {region['nx']} x {region['nz']}" if region else "full field"
    return f"{spec.get('kind')}, {where}, {len(r.history)} it, converged {r.converged}"


def main(cases):
    warm = np.random.default_rng(0).random((8, 64, 64)).astype(np.float32)
    fastalign.align(warm, np.linspace(-60, 60, 8), max_iter=2, levels=[1])
    for case in cases:
        if case == "haadf":
            haadf()
            continue
        if case == "catalyst":
            catalyst()
            continue
        data, angles, true = synthetic(case)
        for label, kw in (("default", {}), ("nz=256 (no crop)", dict(nz=N))):
            if case == "top" and kw:
                continue      # fills x and z: nothing to crop
            r, t = run(data, angles, **kw)
            ex, ey = gauge_error(r.shifts, true, angles)
            print(f"{case:6s} {label:17s} {t:6.1f} s  error {ex:.4f} / {ey:.4f} px  "
                  f"({describe(r)})", flush=True)


def _etspy_data(name):
    try:
        import etspy
    except ImportError:
        return None
    return os.path.join(os.path.dirname(etspy.__file__), "tests", "test_data", name)


def catalyst():
    path = _etspy_data("Catalyst3DModel_TiltSeries180.hspy")
    if path is None:
        print("catalyst skipped: etspy (bench extra) is not installed")
        return
    import h5py
    with h5py.File(path, "r") as f:
        d = np.ascontiguousarray(f["Experiments/__unnamed__/data"][()].transpose(0, 2, 1))
    angles = np.arange(d.shape[0]) * 2.0
    rng = np.random.default_rng(7)
    true = rng.uniform(-10, 10, (d.shape[0], 2))
    data = fastalign.fourier_shift(d, true).astype(np.float32)
    data += rng.normal(0, 0.01 * data.std(), data.shape).astype(np.float32)
    for label, kw in (("default", {}), ("nz=600 (no crop)", dict(nz=d.shape[2]))):
        r, t = run(data, angles, **kw)
        ex, ey = gauge_error(r.shifts, true, angles)
        print(f"{'catalyst':8s} {label:17s} {t:6.1f} s  error {ex:.4f} / {ey:.4f} px  "
              f"(final volume {r.timings['final_s']:.1f} s; {describe(r)})", flush=True)


def haadf():
    mrc = _etspy_data("HAADF.mrc")
    if mrc is None:
        print("haadf  skipped: etspy (bench extra) is not installed")
        return
    sys.path.insert(0, os.path.dirname(__file__))
    from haadf_real import _score
    import fastalign.io as fio
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data, angles, _ = fio.read_tilt_series(mrc)
    r, t = run(data, angles)
    print(f"haadf  {'default':17s} {t:6.1f} s  SIRT-50 residual {_score(r.aligned, r.angles_deg):.5f}"
          f"  ({describe(r)})", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or ["small", "noisy", "top", "haadf", "catalyst"])
