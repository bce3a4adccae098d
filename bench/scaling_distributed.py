"""Strong scaling of fastalign.distributed on this machine: 1 vs 2 Dask workers, vs local.

Measures, for a tilt series of ``--slices`` rows (default 64) of ``--size`` pixels:

* SIRT (``--sirt-iter`` iterations) from a Zarr store, volume gathered (``out=None``);
* one alignment iteration (``levels=[1], max_iter=1, final_iter=0``);

with the local functions on all cores (``numba`` threads = cores), then on a LocalCluster of
1 worker x cores threads and of 2 workers x cores/2 threads (each worker process runs its
kernels with its own threads).  Kernels are compiled (warm-up call) before timing; the worker
processes share an on-disk JIT cache in a temporary directory.  Prints medians of
``--repeats`` runs and the overhead ``t_distributed / t_local - 1``.

Run::

    python bench/scaling_distributed.py --size 512 --repeats 5      # the target size
    python bench/scaling_distributed.py --size 128 --repeats 3      # quick
"""
import argparse
import os
import statistics
import tempfile
import time

import numpy as np


def _median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=512, help="nx (and nz) in pixels")
    ap.add_argument("--slices", type=int, default=64, help="rows y (slices)")
    ap.add_argument("--tilts", type=int, default=61)
    ap.add_argument("--sirt-iter", type=int, default=10)
    ap.add_argument("--inner", type=int, default=10, help="SIRT iterations in the alignment")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    import numba
    import zarr
    from distributed import Client, LocalCluster

    import fastalign
    import fastalign.distributed as fd

    cores = numba.config.NUMBA_NUM_THREADS
    n, ny, nx = args.tilts, args.slices, args.size
    angles = np.linspace(-60, 60, n)
    rng = np.random.default_rng(0)
    vol = np.zeros((ny, nx, nx), np.float32)
    c = nx // 4
    vol[:, c:3 * c, c:3 * c] = rng.random((ny, 2 * c, 2 * c), np.float32)
    data = fastalign.fourier_shift(fastalign.project(vol, angles),
                                   rng.uniform(-3, 3, (n, 2)))
    akw = dict(levels=[1], max_iter=1, final_iter=0, n_inner=args.inner, tol=0.0)
    print(f"series {n} x {ny} x {nx} (float32 {data.nbytes / 2**20:.0f} MiB), volume "
          f"{ny} x {nx} x {nx}; cores {cores}; load average {os.getloadavg()}")

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "series.zarr")
        z = zarr.open_array(src, mode="w", shape=data.shape, chunks=(n, 8, nx),
                            dtype="float32")
        z[...] = data
        numba.set_num_threads(cores)
        fastalign.sirt(data, angles, n_iter=1)
        fastalign.align(data, angles, **dict(akw, n_inner=1))
        t_sirt, _ = _median_time(lambda: fastalign.sirt(data, angles, n_iter=args.sirt_iter),
                                 args.repeats)
        t_align, _ = _median_time(lambda: fastalign.align(data, angles, **akw), args.repeats)
        rows.append(("local", cores, t_sirt, t_align))
        env = {"FASTALIGN_CACHE": "1", "NUMBA_CACHE_DIR": os.path.join(tmp, "jit")}
        for workers in (1, 2):
            threads = max(1, cores // workers)
            with LocalCluster(n_workers=workers, threads_per_worker=threads, processes=True,
                              dashboard_address=None, env=env) as cluster, \
                    Client(cluster) as client:
                fd.sirt(client, src, angles, n_iter=1)          # warm-up (compile)
                fd.align(client, src, angles, **dict(akw, n_inner=1))
                ts, _ = _median_time(lambda: fd.sirt(client, src, angles,
                                                     n_iter=args.sirt_iter), args.repeats)
                ta, _ = _median_time(lambda: fd.align(client, src, angles, **akw),
                                     args.repeats)
                rows.append((f"dask {workers} worker(s) x {threads} thr", workers * threads,
                             ts, ta))
    print(f"\n{'configuration':32s} {'threads':>7s} {'sirt s':>9s} {'align-it s':>10s} "
          f"{'sirt ovh':>9s} {'align ovh':>9s}")
    base = rows[0]
    for name, thr, ts, ta in rows:
        print(f"{name:32s} {thr:7d} {ts:9.3f} {ta:10.3f} {ts / base[2] - 1:9.1%} "
              f"{ta / base[3] - 1:9.1%}")
    print(f"\nspeed-up 1 -> 2 workers: sirt {rows[1][2] / rows[2][2]:.2f}x, align iteration "
          f"{rows[1][3] / rows[2][3]:.2f}x; load average now {os.getloadavg()}")


if __name__ == "__main__":
    main()
