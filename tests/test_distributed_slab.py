"""The slab loop on Dask (issue 17): ``fastalign.distributed.align`` on a slab specimen runs
the same slab loop as ``fastalign.align`` (detected from the data, thickness measured,
padded/weighted comparison, same options record) and gives the same shifts.

The cluster runs its workers as threads of this process (``processes=False``): the kernels
the local run compiles are the workers' too, which keeps this file cheap.
"""
import dataclasses

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

import fastalign  # noqa: E402
import fastalign.distributed as fd  # noqa: E402
from fastalign.align.executor import LocalExecutor  # noqa: E402
from fastalign.align.gauge import gauge_error  # noqa: E402
from fastalign.align.levels import plan_levels  # noqa: E402
from fastalign.align.options import AlignOptions  # noqa: E402
from fastalign.distributed._common import Source  # noqa: E402
from fastalign.distributed.align import DaskExecutor  # noqa: E402
from fastalign.geometry import TiltGeometry  # noqa: E402
from fastalign.simulate import slab_experiment  # noqa: E402


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def exp():
    return slab_experiment(fov=64)


@pytest.mark.parametrize("pitch", [0.0, 4.0])
def test_dask_slab_equals_local(client, pitch, tmp_path):
    # pitched: the loop runs in the frame turned by the pitch (level angles != data angles)
    exp = slab_experiment(fov=64, pitch_deg=pitch)
    src = tmp_path / "slab.npy"
    np.save(src, exp.data)
    # a few iterations of the slab loop: every slab step runs, at a fraction of the cost of
    # the default (converged) run
    kw = dict(max_iter=3, n_inner=4, final_iter=4)
    ref = fastalign.align(exp.data, exp.angles_deg, **kw)
    assert "excluded" not in ref.options        # no view is dropped (a clean series)
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
    assert "loop_frame_deg" in spec or not pitch
    # the same decisions: edge fraction, start, thickness, depth, pitch, region, loop
    assert spec == ref.options["specimen"]
    assert res.thickness == ref.thickness
    for k in ("pad_x", "nz", "levels", "max_iter", "final_iter"):
        assert res.options[k] == ref.options[k], k
    # x spectra and residuals are summed over row slabs on the client (float64 round-off of
    # the summation order); everything else is the local arithmetic
    np.testing.assert_allclose(res.shifts, ref.shifts, rtol=0, atol=1e-6)
    assert np.isfinite(res.uncertainty).all()         # standard errors as the local ones
    np.testing.assert_allclose(res.uncertainty, ref.uncertainty, rtol=1e-4)
    assert np.isfinite(res.tilt_residual).all()      # quality against the final volume
    np.testing.assert_allclose(res.tilt_residual, ref.tilt_residual, rtol=1e-4)
    np.testing.assert_allclose(res.tilt_coherence, ref.tilt_coherence, rtol=1e-4)
    assert len(res.history) == len(ref.history)
    np.testing.assert_allclose([h["residual"] for h in res.history],
                               [h["residual"] for h in ref.history], rtol=1e-9)
    assert res.volume.shape == ref.volume.shape
    np.testing.assert_allclose(res.volume, ref.volume, rtol=0,
                               atol=1e-6 * np.abs(ref.volume).max())
    np.testing.assert_allclose(res.aligned, ref.aligned, rtol=0,
                               atol=1e-6 * np.abs(ref.aligned).max())
    np.testing.assert_allclose(err_dask, err_local, rtol=0, atol=1e-6)


def test_slab_steps_agree_on_a_binned_level(client, exp):
    """The slab steps one by one, on a 2x binned level and with a 2x binned depth probe
    (the single-level run above uses neither): the same numbers as the local executor."""
    n, ny, nx = exp.data.shape
    opts = AlignOptions(levels=(2, 1), n_inner=3, max_rows=None).resolved(ny, nx)
    local = LocalExecutor(exp.data, exp.angles_deg, opts)
    dask = DaskExecutor(client, Source(exp.data, exp.angles_deg), opts, 2, 16)
    dask.set_options(opts, None, 20, None, None, False)
    assert dask.edge_fraction() == local.edge_fraction()
    total = exp.shifts + np.random.default_rng(3).normal(0.0, 0.3, exp.shifts.shape)
    # rows of the probe split over slabs; its depth power summed in row order: exact
    np.testing.assert_array_equal(dask.depth_probe(total, 2, nx), local.depth_probe(total, 2, nx))
    opts = dataclasses.replace(opts, specimen="slab", pad_x=62, nz=41)
    slab = dict(thickness=27.0, pitch_deg=2.0, fixed_nz=False)      # pitched: support mask
    for ex in (local, dask):
        ex.use_slab(opts, slab)
    for lv in plan_levels(TiltGeometry(exp.angles_deg, (ny, opts.nz, nx)), opts):
        for ex in (local, dask):
            ex.begin_level(lv)
            ex.resample(total, 0.0)
            ex.reconstruct(4)
        (ul, rl), (ud, rd) = local.measure(True, True), dask.measure(True, True)
        np.testing.assert_allclose(ud, ul, rtol=0, atol=1e-9)
        assert rd == pytest.approx(rl, rel=1e-12)
        total = total + ul * lv.scale
    shifts = fastalign.fix_gauge(total, exp.angles_deg)[0]
    al, vl, _ = local.finish(shifts, (0.1, -1.3, 0.05), 0.0, 0.0)   # nz grows by 2 ceil|gb|
    ad, vd, _ = dask.finish(shifts, (0.1, -1.3, 0.05), 0.0, 0.0)
    assert vd.shape == vl.shape == (ny, opts.nz + 4, nx)
    np.testing.assert_array_equal(ad, al)
    np.testing.assert_allclose(vd, vl, rtol=0, atol=1e-6 * np.abs(vl).max())


def test_dask_turns_the_axis_and_excludes_as_local(client):
    """The full-circle orientation on Dask, with an excluded view: a slab whose tilt axis
    runs along x (the data turned a quarter turn, not square) is turned back on the workers
    as locally: the same orientation record, axis angle, shifts, aligned stack (every view,
    turned) and volume."""
    exp = slab_experiment(fov=64)
    raw = np.ascontiguousarray(np.rot90(exp.data[:, :, 8:56], 1, axes=(1, 2)))  # 48 x 64
    kw = dict(max_iter=3, n_inner=4, final_iter=4, exclude=[5])
    ref = fastalign.align(raw, exp.angles_deg, **kw)
    assert ref.options["orientation"]["quarter_turns"] in (1, -1)
    res = fd.align(client, raw, exp.angles_deg, slab_rows=20, tilt_chunk=16, **kw)
    assert res.options["orientation"] == ref.options["orientation"]
    assert res.axis_angle_deg == pytest.approx(ref.axis_angle_deg, abs=1e-9)
    assert [e["tilt"] for e in res.options["excluded"]] == [5]
    np.testing.assert_allclose(res.shifts, ref.shifts, rtol=0, atol=1e-6)
    assert res.aligned.shape == ref.aligned.shape == (raw.shape[0], 64, 48)
    np.testing.assert_allclose(res.aligned, ref.aligned, rtol=0,
                               atol=1e-6 * np.abs(ref.aligned).max())
    np.testing.assert_allclose(res.volume, ref.volume, rtol=0,
                               atol=1e-6 * np.abs(ref.volume).max())
    # orient=False keeps the axis along y, as locally
    off = fd.align(client, raw, exp.angles_deg, slab_rows=20, tilt_chunk=16, orient=False,
                   **dict(kw, max_iter=1))
    assert "orientation" not in off.options and off.aligned.shape == raw.shape


def test_dask_searches_wide_images_binned(client, monkeypatch):
    """Images wider than ORIENT_TASK_PX are searched 2x binned in the one orientation task:
    the same axis direction (modulo 180 degrees: an axis near 90 degrees may come out as -90)
    within half a degree of the local search's."""
    import importlib
    fda = importlib.import_module("fastalign.distributed.align")  # (the module, not align())
    exp = slab_experiment(fov=64)
    raw = np.ascontiguousarray(np.rot90(exp.data[:, :, 8:56], 1, axes=(1, 2)))
    ex = DaskExecutor(client, Source(raw, exp.angles_deg), AlignOptions(), 2, 16)
    local = fastalign.align(raw, exp.angles_deg, max_iter=1, n_inner=2, final_iter=1)
    monkeypatch.setattr(fda, "ORIENT_TASK_PX", 32)
    offset, record = ex.orient("auto")
    want = local.options["orientation"]
    assert record["searched_binned"] == 2
    assert (record["quarter_turns"] - want["quarter_turns"]) % 2 == 0
    turn = (record["start_deg"] - want["start_deg"] + 90.0) % 180.0 - 90.0
    assert abs(turn) <= 0.5
    assert ex.shape == (raw.shape[0], 64, 48)


def test_dask_tilt_offset_and_center_as_local(client):
    """``refine=("shifts", "center", "tilt_offset")`` and a given offset on Dask: the slab
    mass law's offset from the chunks' per-tilt means, the corrected angles, the centre
    split off dx: the local numbers; ``"axis_angle"`` is refused with its name."""
    exp = slab_experiment(64, 20.0, angle_offset_deg=3.0)
    kw = dict(max_iter=2, n_inner=4, final_iter=4, refine=("shifts", "center", "tilt_offset"),
              tilt_offset_deg=0.5)
    ref = fastalign.align(exp.data, exp.angles_deg, **kw)
    res = fd.align(client, exp.data, exp.angles_deg, slab_rows=20, tilt_chunk=16, **kw)
    print(f"\n[dask tilt offset] local {ref.tilt_offset_deg:.4f} deg, Dask "
          f"{res.tilt_offset_deg:.4f} deg (true 3.0)")
    assert abs(ref.tilt_offset_deg - 3.0) < 0.5
    assert res.tilt_offset_deg == pytest.approx(ref.tilt_offset_deg, abs=1e-9)
    assert res.options["tilt_offset"] == ref.options["tilt_offset"]
    np.testing.assert_allclose(res.angles_deg, ref.angles_deg, rtol=0, atol=1e-12)
    assert res.center_offset == pytest.approx(ref.center_offset, abs=1e-6)
    np.testing.assert_allclose(res.shifts, ref.shifts, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="axis_angle"):
        fd.align(client, exp.data, exp.angles_deg, refine=("shifts", "axis_angle"))
