"""The slab loop on Dask (issue 17): ``fastalign.distributed.align`` on a slab specimen runs
the same slab loop as ``fastalign.align`` (detected from the data, thickness measured,
padded/weighted comparison, same options record) and gives the same shifts.

The cluster runs its workers as threads of this process (``processes=False``): the kernels
the local run compiles are the workers' too, which keeps this file cheap.
"""
import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

import fastalign  # noqa: E402
import fastalign.distributed as fd  # noqa: E402
from fastalign.align.gauge import gauge_error  # noqa: E402
from fastalign.distributed.align import DaskExecutor  # noqa: E402
from fastalign.simulate import slab_experiment  # noqa: E402


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as c:
        yield c


def test_dask_slab_equals_local(client, tmp_path):
    exp = slab_experiment(fov=64)
    src = tmp_path / "slab.npy"
    np.save(src, exp.data)
    # a few iterations of the slab loop: every slab step runs, at a fraction of the cost of
    # the default (converged) run
    kw = dict(max_iter=3, n_inner=4, final_iter=4)
    ref = fastalign.align(exp.data, exp.angles_deg, **kw)
    # slabs of 20 rows and tilt chunks of 16 tilts: every per-slab and per-chunk sum is split
    res = fd.align(client, str(src), exp.angles_deg, slab_rows=20, tilt_chunk=16, **kw)
    err_local = gauge_error(ref.shifts, exp.shifts, exp.angles_deg)
    err_dask = gauge_error(res.shifts, exp.shifts, exp.angles_deg)
    print(f"\n[dask slab] RMS error (gauge removed) local x {err_local[0]:.4f} y "
          f"{err_local[1]:.4f} px | Dask x {err_dask[0]:.4f} y {err_dask[1]:.4f} px | "
          f"max |shift difference| {np.abs(res.shifts - ref.shifts).max():.2e} px")
    assert "specimen" not in DaskExecutor.lacks
    spec = res.options["specimen"]
    assert spec["kind"] == "slab" and spec["decided_by"] == "data"
    # the same decisions: edge fraction, start, thickness, depth, pitch, region, loop
    assert spec == ref.options["specimen"]
    assert res.thickness == ref.thickness
    for k in ("pad_x", "nz", "levels", "max_iter", "final_iter"):
        assert res.options[k] == ref.options[k], k
    # x spectra and residuals are summed over row slabs on the client (float64 round-off of
    # the summation order); everything else is the local arithmetic
    np.testing.assert_allclose(res.shifts, ref.shifts, rtol=0, atol=1e-6)
    assert len(res.history) == len(ref.history)
    np.testing.assert_allclose([h["residual"] for h in res.history],
                               [h["residual"] for h in ref.history], rtol=1e-9)
    assert res.volume.shape == ref.volume.shape
    np.testing.assert_allclose(res.volume, ref.volume, rtol=0,
                               atol=1e-6 * np.abs(ref.volume).max())
    np.testing.assert_allclose(res.aligned, ref.aligned, rtol=0,
                               atol=1e-6 * np.abs(ref.aligned).max())
    np.testing.assert_allclose(err_dask, err_local, rtol=0, atol=1e-6)
