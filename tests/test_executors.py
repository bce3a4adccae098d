"""Executor conformance: the local and the Dask executor perform the same data steps
(level set-up and warm start, resample, reconstruct, measure, jump, finish) with the same
numbers, step by step (fastalign.align.loop)."""
import numpy as np
import pytest

distributed = pytest.importorskip("distributed")
da = pytest.importorskip("dask.array")

import fastalign  # noqa: E402
from fastalign.align.executor import LocalExecutor  # noqa: E402
from fastalign.align.levels import plan_levels  # noqa: E402
from fastalign.align.options import AlignOptions  # noqa: E402
from fastalign.distributed import _slabs  # noqa: E402
from fastalign.distributed._common import Source  # noqa: E402
from fastalign.distributed.align import DaskExecutor  # noqa: E402
from fastalign.geometry import TiltGeometry  # noqa: E402

N_TILTS, NY, NX, NZ = 12, 24, 40, 24
ANGLES = np.linspace(-60.0, 60.0, N_TILTS)


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def series():
    rng = np.random.default_rng(4)
    vol = np.zeros((NY, NZ, NX), np.float32)
    vol[4:20, 6:18, 8:32] = rng.random((16, 12, 24))
    data = fastalign.project(vol, ANGLES)
    return fastalign.fourier_shift(data, rng.uniform(-2, 2, (N_TILTS, 2)))


def _volume(client, ex):
    """The Dask executor's current volume, gathered slab by slab."""
    parts = [client.submit(_slabs.x_rows, s, 0, r1 - r0, pure=False)
             for s, (r0, r1) in zip(ex.states, ex.slabs)]
    return np.concatenate(client.gather(parts), axis=0)


def _data(client, ex):
    parts = [client.submit(lambda p: np.array(p[0].b), s, pure=False) for s in ex.states]
    return np.concatenate(client.gather(parts), axis=1)


def _close(a, b, rel=1e-5):
    np.testing.assert_allclose(a, b, rtol=0, atol=rel * max(np.abs(b).max(), 1e-30))


@pytest.mark.parametrize("recon,pad_x", [("sirt", 0), ("tv", 0), ("sirt", 4)])
def test_steps_agree(client, series, recon, pad_x):
    opts = AlignOptions(recon=recon, levels=(2, 1), n_inner=3, nz=NZ, pad_x=pad_x,
                        max_rows=None, y_profile=False, com_start=False)
    mean_abs = float(np.abs(series).mean())
    opts = opts.resolved(NY, NX, mean_abs=mean_abs)
    plan = plan_levels(TiltGeometry(ANGLES, (NY, NZ, NX)), opts)
    local = LocalExecutor(series, ANGLES, opts)
    dask = DaskExecutor(client, Source(da.from_array(series, chunks=(N_TILTS, 8, NX)), ANGLES),
                        opts, 2, 5)
    dask.set_options(opts, None, 7, None, None, False)
    total = np.random.default_rng(5).uniform(-1.5, 1.5, (N_TILTS, 2))
    for lv in plan:
        for ex in (local, dask):
            ex.begin_level(lv)
        _close(_volume(client, dask), local.x)                 # warm start
        for ex in (local, dask):
            ex.resample(total, 0.0)
        _close(_data(client, dask), local.b)                   # resample
        for ex in (local, dask):
            ex.reconstruct(4)
        _close(_volume(client, dask), local.x)                 # reconstruct
        (ul, rl), (ud, rd) = local.measure(True, True), dask.measure(True, True)
        np.testing.assert_allclose(ud, ul, rtol=0, atol=1e-5)  # measure
        assert rd == pytest.approx(rl, rel=1e-5)
        for ex in (local, dask):
            ex.jump(0.5)
        _close(_volume(client, dask), local.x)                 # jump
        total = total + ul * lv.scale
    gauge = (0.1, -0.2, 0.05)
    shifts = fastalign.fix_gauge(total, ANGLES)[0]
    al, vl, _ = local.finish(shifts, gauge, 0.0, 0.0)
    ad, vd, _ = dask.finish(shifts, gauge, 0.0, 0.0)
    _close(ad, al)                                             # finish
    _close(vd, vl)


def test_options_an_executor_lacks_raise_in_one_place(client, series):
    opts = AlignOptions(refine=("shifts", "axis_angle"))
    with pytest.raises(ValueError, match="Dask executor does not support refine"):
        opts.check_executor(DaskExecutor.name, DaskExecutor.lacks)
    with pytest.raises(ValueError, match="xcorr"):
        AlignOptions(initial_shifts="xcorr").check_executor(DaskExecutor.name,
                                                             DaskExecutor.lacks)
    AlignOptions(refine=("shifts", "axis_angle")).check_executor(LocalExecutor.name,
                                                                 LocalExecutor.lacks)
