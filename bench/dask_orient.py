"""The tilt-axis orientation on Dask beside the local one (default options otherwise).

3-D particles (48 tilts, 64 x 96, shifts up to 5 px) whose tilt axis runs at 90 degrees (a
quarter turn) or 96 degrees (a quarter turn and 6 degrees), aligned locally, on a
LocalCluster of 2 worker processes, and on the cluster with ``orient=False`` (the axis
taken along y, as the Dask executor did before it searched).  Prints per run the reported
axis angle, the RMS shift error (gauge removed) and the wall time.

    PYTHONPATH=$PWD python bench/dask_orient.py

Measured (2026-12-03, 2 shared cores): axis 90: local and Dask 0.0064 / 0.0016 px (3.9 s,
6.9 s), ``orient=False`` 3.9 / 4.9 px; axis 96: local 0.0050 / 0.0018 px (the loop refines
the residual angle), Dask 0.0065 / 0.0019 px (resampled once at -83.99 deg, not refined),
``orient=False`` 3.7 / 4.8 px.
"""
import time

import numpy as np

import fastalign
import fastalign.distributed as fd
from fastalign.align.gauge import gauge_error
from fastalign.simulate import rotated_axis_experiment


def main():
    import distributed
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as client:
        for axis in (90.0, 96.0):
            e = rotated_axis_experiment(shape=(48, 64, 96), axis_angle_deg=axis - 90.0,
                                        center_offset=0.0, shift_range=5.0)
            data = np.ascontiguousarray(np.rot90(e.data, 1, axes=(1, 2)))
            runs = (("local", lambda: fastalign.align(data, e.angles_deg)),
                    ("dask", lambda: fd.align(client, data, e.angles_deg)),
                    ("dask orient=False",
                     lambda: fd.align(client, data, e.angles_deg, orient=False)))
            for name, run in runs:
                t0 = time.perf_counter()
                r = run()
                seconds = time.perf_counter() - t0
                ex, ey = gauge_error(r.shifts, e.shifts, e.angles_deg)
                print(f"axis {axis:g} deg, {name}: reported {r.axis_angle_deg:.2f} deg, error "
                      f"{ex:.4f} / {ey:.4f} px, {seconds:.1f} s", flush=True)


if __name__ == "__main__":
    main()
