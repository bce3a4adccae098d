"""The alignment's pre-steps on Dask beside the local ones, and one whole alignment each.

A 61 x 128 x 128 slab (:func:`fastalign.simulate.slab_experiment`, 28 px film) made
bright-field (``I0_i exp(-0.8 p / max p)``, ``I0`` 900..1100 over the tilts) with one blank
view (tilt 20 set to its mean).  Times the intensity model and the bad-tilt screening locally
and on a LocalCluster of 2 worker processes (1 thread each), checks that both decide the
same, then aligns with default options both ways.

    PYTHONPATH=$PWD python bench/dask_presteps.py

Measured (2026-12-03, 2 shared cores, one run): intensity model 0.10 s local / 0.16 s Dask,
screening 0.10 / 0.15 s, the same model and screening record; whole alignment 7.3 s local,
9.3 s Dask, tilt 20 excluded by both, error on the kept tilts 0.0224 / 0.0088 px both,
shifts equal to 3.6e-15 px.
"""
import time

import numpy as np

import fastalign
import fastalign.distributed as fd
from fastalign.align.badtilts import choose_tilts
from fastalign.align.intensity import intensity_model
from fastalign.align.options import AlignOptions
from fastalign.distributed._common import Source
from fastalign.distributed.align import DaskExecutor
from fastalign.simulate import slab_experiment
from fastalign.testing import gauge_rms


def series():
    exp = slab_experiment(128, 28.0)
    p = exp.data.astype(np.float64)
    i0 = np.linspace(900.0, 1100.0, p.shape[0])[:, None, None]
    bf = (i0 * np.exp(-0.8 * p / p.max())).astype(np.float32)
    bf[20] = bf[20].mean()                       # a blank view
    return exp, bf


def main():
    import dask.array as da
    import distributed
    exp, bf = series()
    angles = exp.angles_deg
    t0 = time.perf_counter()
    model = intensity_model(bf, angles_deg=angles)
    t_model = time.perf_counter() - t0
    t0 = time.perf_counter()
    chosen = choose_tilts(model.apply(bf), angles)
    t_screen = time.perf_counter() - t0
    print(f"local: intensity model {t_model:.2f} s ({model.summary()}), screening "
          f"{t_screen:.2f} s, excluded {chosen.excluded.tolist()}")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as client:
        chunks = (bf.shape[0], 64, bf.shape[2])
        ex = DaskExecutor(client, Source(da.from_array(bf, chunks=chunks), angles),
                          AlignOptions(), 2, None)
        ex.data_stats()
        t0 = time.perf_counter()
        dmodel = ex.intensity_model("auto", "auto")
        t_model = time.perf_counter() - t0
        t0 = time.perf_counter()
        dchosen = choose_tilts(ex, angles)
        t_screen = time.perf_counter() - t0
        print(f"dask:  intensity model {t_model:.2f} s (same model: {dmodel == model}), "
              f"screening {t_screen:.2f} s (same record: {dchosen.record == chosen.record})")
        t0 = time.perf_counter()
        local = fastalign.align(bf, angles)
        t_local = time.perf_counter() - t0
        t0 = time.perf_counter()
        dist = fd.align(client, da.from_array(bf, chunks=chunks), angles)
        t_dask = time.perf_counter() - t0
    keep = np.ones(len(angles), bool)
    keep[local.excluded] = False
    for name, r, t in (("local", local, t_local), ("dask", dist, t_dask)):
        ex_, ey = gauge_rms(r.shifts[keep], exp.shifts[keep], angles[keep])
        print(f"{name}: {t:.1f} s, excluded {r.excluded.tolist()}, error on the kept tilts "
              f"{ex_:.4f} / {ey:.4f} px")
    print(f"max |shift difference| {np.abs(dist.shifts - local.shifts).max():.2e} px")


if __name__ == "__main__":
    main()
