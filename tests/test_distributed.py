"""fastalign.distributed on a real LocalCluster: equality with the local path, slab-wise output
under a worker memory limit, and a worker killed mid-run.

The worker processes compile the Numba kernels themselves; to keep this file fast they share an
on-disk JIT cache in a temporary directory (``FASTALIGN_CACHE=1``, ``NUMBA_CACHE_DIR``), filled
by one worker before the other starts using it.  The test process itself keeps the default
(no cache).
"""
import glob
import os
import signal
import threading
import time

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")
da = pytest.importorskip("dask.array")
zarr = pytest.importorskip("zarr")
h5py = pytest.importorskip("h5py")
mrcfile = pytest.importorskip("mrcfile")

import fastalign  # noqa: E402
import fastalign.distributed as fd  # noqa: E402

N_TILTS, NY, NX, NZ = 20, 24, 48, 32
ANGLES = np.linspace(-60.0, 60.0, N_TILTS)


def _warm():
    """Compile (or load from the shared cache) every kernel the distributed tasks use."""
    rng = np.random.default_rng(1)
    d = rng.random((6, 8, 16)).astype(np.float32)
    a = np.linspace(-50, 50, 6)
    fastalign.sirt(d, a, n_iter=1)
    fastalign.tv(d, a, lam=0.1, n_iter=1)
    fastalign.align(d, a, max_iter=1, levels=[1], n_inner=1, recon="sirt")
    fastalign.align(d, a, max_iter=1, levels=[1], n_inner=1, recon="tv")
    return os.getpid()


def _cluster_kwargs(cache_dir, **kw):
    env = {"FASTALIGN_CACHE": "1", "NUMBA_CACHE_DIR": str(cache_dir)}
    return dict(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                env=env, **kw)


def _warm_workers(client):
    for addr in client.scheduler_info()["workers"]:  # one after the other: the second loads
        client.submit(_warm, workers=[addr], pure=False).result()


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """The base of this process's JIT cache (``<base>/fastalign/<key>``): the workers load
    what the test run compiled already instead of compiling every kernel again (35 s of
    the suite); a temporary directory when this process does not cache."""
    from fastalign import _config
    if _config.CACHE_DIR:
        return os.path.dirname(os.path.dirname(_config.CACHE_DIR))
    return tmp_path_factory.mktemp("numba_cache")


def _local_cluster(**kw):
    """A LocalCluster, or a clean skip where worker processes cannot be spawned."""
    try:
        return distributed.LocalCluster(**kw)
    except (OSError, RuntimeError, TimeoutError) as exc:
        pytest.skip(f"cannot start a LocalCluster of worker processes here: {exc}")


@pytest.fixture(scope="module")
def client(cache_dir):
    with _local_cluster(**_cluster_kwargs(cache_dir)) as cluster, \
            distributed.Client(cluster) as c:
        _warm_workers(c)
        yield c


@pytest.fixture(scope="module")
def series():
    rng = np.random.default_rng(0)
    vol = np.zeros((NY, NZ, NX), np.float32)
    vol[4:20, 8:24, 10:38] = rng.random((16, 16, 28))
    data = fastalign.project(vol, ANGLES)
    shifts = rng.uniform(-2.5, 2.5, (N_TILTS, 2))
    return fastalign.fourier_shift(data, shifts)


def _no_temporaries(directory):
    return not glob.glob(os.path.join(str(directory), ".*.tmp"))


def test_sirt_zarr_equals_local(client, series, tmp_path):
    src = tmp_path / "series.zarr"
    z = zarr.open_array(str(src), mode="w", shape=series.shape, chunks=(N_TILTS, 5, NX),
                        dtype="float32")
    z[...] = series
    ref = fastalign.sirt(series, ANGLES, n_iter=8, nz=NZ, mask=True)
    out = tmp_path / "vol.zarr"
    vol = fd.sirt(client, str(src), ANGLES, out=str(out), n_iter=8, nz=NZ, mask=True,
                  slab_rows=5)
    on_disk = zarr.open_array(str(out), mode="r")[...]
    assert on_disk.shape == (NY, NZ, NX)
    np.testing.assert_allclose(on_disk, ref, rtol=0, atol=1e-6 * np.abs(ref).max())
    np.testing.assert_array_equal(np.asarray(vol[...]), on_disk)
    assert _no_temporaries(tmp_path)
    # the same from a dask array, gathered into memory
    mem = fd.sirt(client, da.from_array(series, chunks=(N_TILTS, 7, NX)), ANGLES, n_iter=8,
                  nz=NZ, mask=True, slab_rows=7)
    np.testing.assert_allclose(mem, ref, rtol=0, atol=1e-6 * np.abs(ref).max())
    with pytest.raises(FileExistsError):
        fd.sirt(client, str(src), ANGLES, out=str(out), n_iter=1, nz=NZ)


def test_tv_hdf5_to_mrc_equals_local(client, series, tmp_path):
    src = tmp_path / "series.h5"
    with h5py.File(src, "w") as f:
        f["/data"] = series
    ref = fastalign.tv(series, ANGLES, lam=0.02, n_iter=12, nz=NZ)
    out = tmp_path / "vol.rec"
    fd.tv(client, f"{src}:/data", ANGLES, lam=0.02, out=str(out), n_iter=12, nz=NZ,
          slab_rows=6)
    with mrcfile.open(str(out), permissive=True) as m:
        on_disk = np.array(m.data)
        assert m.header.ispg == 1
        assert m.header.dmax == pytest.approx(float(ref.max()), rel=1e-6)
    np.testing.assert_allclose(on_disk, ref, rtol=0, atol=1e-5 * np.abs(ref).max())
    assert _no_temporaries(tmp_path)
    with pytest.raises(ValueError, match="2d"):
        fd.tv(client, f"{src}:/data", ANGLES, lam=0.02, tv="3d")


@pytest.mark.parametrize("recon", ["sirt", "tv"])
def test_align_equals_local(client, series, tmp_path, recon):
    kw = dict(recon=recon, levels=[2, 1], coarse_iter=2, max_iter=3, n_inner=3, nz=NZ,
              tol=0.0)
    ref = fastalign.align(series, ANGLES, **kw)
    src = da.from_array(series, chunks=(N_TILTS, 8, NX))
    res = fd.align(client, src, ANGLES, slab_rows=7, tilt_chunk=6, **kw)
    # shifts to float32 round-off (TV's default lam comes from a float64 rather than a
    # float32 mean), same history, same aligned stack and volume
    np.testing.assert_allclose(res.shifts, ref.shifts, rtol=0, atol=1e-5)
    # the per-tilt standard errors from the same spectra
    assert np.isfinite(res.uncertainty).all()
    np.testing.assert_allclose(res.uncertainty, ref.uncertainty, rtol=1e-3)
    # the per-tilt residual and coherence against the final volume (summed per slab)
    assert np.isfinite(res.tilt_residual).all() and np.isfinite(res.tilt_coherence).all()
    np.testing.assert_allclose(res.tilt_residual, ref.tilt_residual, rtol=1e-4)
    np.testing.assert_allclose(res.tilt_coherence, ref.tilt_coherence, rtol=1e-4)
    assert [h["level"] for h in res.history] == [h["level"] for h in ref.history]
    np.testing.assert_allclose([h["residual"] for h in res.history],
                               [h["residual"] for h in ref.history], rtol=1e-5)
    np.testing.assert_allclose(res.aligned, ref.aligned, rtol=0,
                               atol=1e-5 * np.abs(ref.aligned).max())
    np.testing.assert_allclose(res.volume, ref.volume, rtol=0,
                               atol=1e-5 * np.abs(ref.volume).max())
    assert res.converged == ref.converged


def test_align_bright_field_equals_local(client, series):
    """The intensity model on Dask: a bright-field series (``I0_i exp(-mu p)``, the bright
    level changing per tilt) becomes the same mass projections as locally, so the loop gives
    the local shifts; the aligned stack keeps the caller's intensities."""
    i0 = np.linspace(800.0, 1200.0, N_TILTS)[::-1]
    bf = (i0[:, None, None] * np.exp(-0.5 * series / series.max())).astype(np.float32)
    kw = dict(levels=[2, 1], coarse_iter=2, max_iter=3, n_inner=3, nz=NZ, tol=0.0)
    ref = fastalign.align(bf, ANGLES, **kw)
    res = fd.align(client, da.from_array(bf, chunks=(N_TILTS, 8, NX)), ANGLES, slab_rows=7,
                   tilt_chunk=6, **kw)
    model = res.options["intensity"]
    assert model["transform"] == "log" and model["applied"]
    assert model == ref.options["intensity"]
    np.testing.assert_allclose(res.shifts, ref.shifts, rtol=0, atol=1e-5)
    np.testing.assert_allclose(res.aligned, ref.aligned, rtol=0,
                               atol=1e-5 * np.abs(ref.aligned).max())
    assert res.aligned.min() > 0.5 * i0.min()           # intensities, not mass
    np.testing.assert_allclose(res.volume, ref.volume, rtol=0,
                               atol=1e-5 * np.abs(ref.volume).max())
    # forcing the model off gives other shifts (the model is what made them equal)
    off = fd.align(client, da.from_array(bf, chunks=(N_TILTS, 8, NX)), ANGLES, slab_rows=7,
                   tilt_chunk=6, contrast="dark-field", background="none", **kw)
    assert off.options["intensity"]["identity"]
    assert np.abs(off.shifts - ref.shifts).max() > 1e-3


def test_align_crops_a_small_object_as_local(client):
    """A compact object much smaller than the field, default depth: the Dask loop
    reconstructs the same cropped region as the local one and gives its shifts; the final
    volume (the full field, warm-started from the region) is the local one."""
    rng = np.random.default_rng(3)
    vol = np.zeros((NY, 64, 64), np.float32)
    vol[4:20, 26:38, 26:38] = rng.random((16, 12, 12))
    shifts = rng.uniform(-2.5, 2.5, (N_TILTS, 2))
    data = fastalign.fourier_shift(fastalign.project(vol, ANGLES), shifts)
    kw = dict(levels=[2, 1], coarse_iter=2, max_iter=3, n_inner=3, tol=0.0)
    ref = fastalign.align(data, ANGLES, **kw)
    res = fd.align(client, da.from_array(data, chunks=(N_TILTS, 8, 64)), ANGLES, slab_rows=7,
                   tilt_chunk=6, **kw)
    region = ref.options["specimen"]["region"]
    assert region["nx"] < 48 and region == res.options["specimen"]["region"]
    np.testing.assert_allclose(res.shifts, ref.shifts, rtol=0, atol=1e-5)
    np.testing.assert_allclose(res.volume, ref.volume, rtol=0,
                               atol=1e-5 * np.abs(ref.volume).max())


@pytest.mark.parametrize("where", ["file", "memory"])
def test_align_excludes_bad_tilts_as_local(client, series, tmp_path, where):
    """The bad-tilt screening on Dask: a blank view and a user-excluded one leave the loop as
    locally (same decisions, shifts, aligned views and volume); the kept tilts are read
    from the file without the others."""
    bad = series.copy()
    bad[7] = 0.0                                          # a blank frame
    kw = dict(levels=[2, 1], coarse_iter=2, max_iter=3, n_inner=3, nz=NZ, tol=0.0,
              exclude=[15])
    ref = fastalign.align(bad, ANGLES, **kw)
    assert [e["tilt"] for e in ref.options["excluded"]] == [7, 15]
    if where == "file":
        src = tmp_path / "bad.npy"
        np.save(src, bad)
        res = fd.align(client, str(src), ANGLES, out=str(tmp_path / "v.zarr"),
                       aligned_out=str(tmp_path / "a.zarr"), slab_rows=7, tilt_chunk=6, **kw)
        aligned = zarr.open_array(str(tmp_path / "a.zarr"), mode="r")[...]
        volume = zarr.open_array(str(tmp_path / "v.zarr"), mode="r")[...]
        assert _no_temporaries(tmp_path)
    else:
        res = fd.align(client, da.from_array(bad, chunks=(N_TILTS, 8, NX)), ANGLES,
                       slab_rows=7, tilt_chunk=6, **kw)
        aligned, volume = res.aligned, res.volume
    assert res.options["excluded"] == ref.options["excluded"]
    assert res.options["bad_tilts"] == ref.options["bad_tilts"]
    np.testing.assert_array_equal(res.excluded, [7, 15])
    np.testing.assert_allclose(res.shifts, ref.shifts, rtol=0, atol=1e-5)
    assert np.isnan(res.uncertainty[[7, 15]]).all()      # no measured shift
    np.testing.assert_allclose(res.uncertainty, ref.uncertainty, rtol=1e-3)
    assert aligned.shape == bad.shape
    np.testing.assert_allclose(aligned, ref.aligned, rtol=0,
                               atol=1e-5 * np.abs(ref.aligned).max())
    np.testing.assert_allclose(volume, ref.volume, rtol=0, atol=1e-5 * np.abs(ref.volume).max())
    # without the screening the blank view stays in (and changes the shifts)
    kept = fd.align(client, da.from_array(bad, chunks=(N_TILTS, 8, NX)), ANGLES, slab_rows=7,
                    tilt_chunk=6, auto_exclude=False, **kw)
    assert [e["tilt"] for e in kept.options["excluded"]] == [15]


def test_align_shows_progress(client, series, capsys):
    fd.align(client, da.from_array(series, chunks=(N_TILTS, 8, NX)), ANGLES, levels=[1],
             max_iter=2, n_inner=2, nz=NZ, tol=0.0, progress=True)
    err = capsys.readouterr().err
    assert "align" in err and ("it/s" in err or "s/it" in err)     # a tqdm bar


def test_align_writes_outputs_atomically(client, series, tmp_path):
    kw = dict(levels=[1], max_iter=2, n_inner=2, nz=NZ, tol=0.0, axes="x", pad_x=4)
    ref = fastalign.align(series, ANGLES, **kw)
    src = tmp_path / "series.npy"
    np.save(src, series)
    res = fd.align(client, str(src), ANGLES, out=str(tmp_path / "v.zarr"),
                   aligned_out=str(tmp_path / "s.ali"), **kw)
    np.testing.assert_allclose(res.shifts, ref.shifts, rtol=0, atol=1e-6)
    np.testing.assert_allclose(zarr.open_array(str(tmp_path / "v.zarr"))[...], ref.volume,
                               rtol=0, atol=1e-5 * np.abs(ref.volume).max())
    with mrcfile.open(str(tmp_path / "s.ali")) as m:
        np.testing.assert_allclose(m.data, ref.aligned, rtol=0,
                                   atol=1e-5 * np.abs(ref.aligned).max())
    assert _no_temporaries(tmp_path)


def _failing_block(block, block_info=None):
    if block_info[0]["array-location"][1][0] >= 12:
        raise RuntimeError("injected read failure")
    return block


def test_failed_run_leaves_no_output(client, series, tmp_path):
    src = da.from_array(series, chunks=(N_TILTS, 6, NX)).map_blocks(_failing_block,
                                                                     dtype=np.float32)
    with pytest.raises(RuntimeError, match="injected"):
        fd.sirt(client, src, ANGLES, out=str(tmp_path / "v.zarr"), n_iter=2, nz=NZ,
                slab_rows=6)
    assert os.listdir(tmp_path) == []


def test_bad_input(client, series):
    with pytest.raises(TypeError, match="Client"):
        fd.sirt(object(), da.from_array(series), ANGLES)
    with pytest.raises(ValueError, match="angles"):
        fd.sirt(client, da.from_array(series), ANGLES[:-1])
    with pytest.raises(ValueError, match="xcorr"):
        fd.align(client, da.from_array(series), ANGLES, initial_shifts="xcorr")


def _bad_input(series, case):
    """``(data, angles)`` of one implausible input of :func:`test_input_checks_as_local`."""
    data, angles = series.copy(), ANGLES.copy()
    if case == "radians":
        angles = np.deg2rad(ANGLES)
    elif case == "constant":
        data[...] = 3.0
    elif case == "near_constant":
        data = (1000.0 + 1e-3 * (series / series.max())).astype(np.float32)
    elif case == "nan":
        data[3, 5, 7] = np.nan
        data[11, 20, 40] = np.inf
    elif case == "count":
        angles = ANGLES[:-1]
    elif case == "duplicate":
        angles[5] = angles[4]
    return data, angles


CHECKS = [("radians", r"radians.*rad2deg"), ("constant", "constant.*nothing to align"),
          ("near_constant", "nearly constant"), ("nan", "2 NaN/Inf"),
          ("count", "19 angles but the tilt series has 20"), ("duplicate", "duplicate")]


@pytest.mark.parametrize("case, match", CHECKS)
def test_align_input_checks_as_local(client, series, case, match):
    """The Dask alignment refuses what fastalign.align refuses, with the same message."""
    data, angles = _bad_input(series, case)
    with pytest.raises(ValueError, match=match):
        fastalign.align(data, angles, max_iter=1)
    with pytest.raises(ValueError, match=match):
        fd.align(client, da.from_array(data, chunks=(N_TILTS, 12, NX)), angles, max_iter=1)


@pytest.mark.parametrize("case, match", [c for c in CHECKS if "constant" not in c[0]])
@pytest.mark.parametrize("method", ["sirt", "tv"])
def test_recon_input_checks(client, series, tmp_path, method, case, match):
    """Dask SIRT/TV refuse NaN/Inf, wrong angle counts and duplicates as fastalign.sirt, and
    radians as ``fastalign recon``; no output is left."""
    data, angles = _bad_input(series, case)
    kw = dict(lam=0.1) if method == "tv" else {}
    if case != "radians":
        with pytest.raises(ValueError, match=match):
            getattr(fastalign, method)(data, angles, n_iter=1, **kw)
    with pytest.raises(ValueError, match=match if case != "nan" else "NaN/Inf"):
        getattr(fd, method)(client, da.from_array(data, chunks=(N_TILTS, 12, NX)), angles,
                            out=str(tmp_path / "v.zarr"), n_iter=1, slab_rows=12, **kw)
    assert os.listdir(tmp_path) == []


def test_align_two_tilts_warns_as_local(client, series, caplog, monkeypatch):
    import importlib
    import logging

    class Reached(Exception):
        pass

    def reached(*a, **k):
        raise Reached

    monkeypatch.setattr(importlib.import_module("fastalign.distributed.align"), "drive",
                        reached)
    data, angles = series[[5, 14]], ANGLES[[5, 14]]
    with caplog.at_level(logging.WARNING), pytest.raises(Reached):
        fd.align(client, da.from_array(data), angles, max_iter=1)
    msgs = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("2 tilts" in m and "not determined" in m for m in msgs), msgs


def _peak_memory(dask_worker=None):
    """Largest process memory the worker's monitor sampled (every ~0.5 s) during its life."""
    return max(dask_worker.monitor.quantities["memory"])


def test_memory_limited_run(client, cache_dir, tmp_path):
    """A series larger than a worker's memory limit is reconstructed slab by slab.

    (``client`` only ensures that the shared JIT cache is filled: workers that compile
    everything themselves need ~130 MB more.)"""
    n, ny, nx, nz = 16, 110000, 64, 8
    limit = 400 * 2**20
    src = str(tmp_path / "big.mrc")
    rng = np.random.default_rng(2)
    with mrcfile.new_mmap(src, shape=(n, ny, nx), mrc_mode=2) as m:
        for r in range(0, ny, 4096):
            m.data[:, r:r + 4096] = rng.random((n, min(4096, ny - r), nx), np.float32)
    size = os.path.getsize(src)
    assert size > limit  # the series does not fit in a worker
    import dask
    cfg = {"distributed.worker.memory.target": False, "distributed.worker.memory.spill": False,
           "distributed.worker.memory.pause": 0.9, "distributed.worker.memory.terminate": 0.95}
    with dask.config.set(cfg), distributed.LocalCluster(
            **_cluster_kwargs(cache_dir, memory_limit=limit)) as cluster, \
            distributed.Client(cluster) as c:
        pids = c.run(os.getpid)
        out = str(tmp_path / "vol.rec")
        fd.sirt(c, src, np.linspace(-60, 60, n), out=out, n_iter=2,
                nz=nz, slab_rows=1024)
        assert c.run(os.getpid) == pids  # no worker was killed for exceeding its limit
        peak = c.run(_peak_memory)
        assert max(peak.values()) < limit
    with mrcfile.mmap(out, mode="r") as m:
        assert m.data.shape == (ny, nz, nx)
        with mrcfile.mmap(src, mode="r") as s:
            for r0 in (0, 12345, ny - 700):  # local SIRT of row blocks (slices independent)
                ref = fastalign.sirt(np.array(s.data[:, r0:r0 + 700]), np.linspace(-60, 60, n),
                                     n_iter=2, nz=nz)
                np.testing.assert_allclose(m.data[r0:r0 + 700], ref, rtol=0,
                                           atol=1e-6 * np.abs(ref).max())


def test_worker_killed_mid_run(client, tmp_path):
    """SIGKILL a worker while slabs are being written: Dask reruns its tasks elsewhere (or
    the call raises); the output is complete and right, or absent."""
    rng = np.random.default_rng(3)
    n, ny, nx, nz = 30, 400, 64, 64
    data = rng.random((n, ny, nx)).astype(np.float32)
    angles = np.linspace(-70, 70, n)
    out = tmp_path / "vol.zarr"
    pid = next(iter(client.run(os.getpid).values()))
    killed = {}

    def killer():
        deadline = time.time() + 120
        while time.time() < deadline:
            tmp = glob.glob(str(tmp_path / ".vol.zarr.*.tmp" / "c" / "*"))
            if tmp:
                killed["done_before"] = len(glob.glob(str(tmp_path / ".vol.zarr.*.tmp"
                                                          / "c" / "*")))
                os.kill(pid, signal.SIGKILL)
                killed["at"] = time.time()
                return
            time.sleep(0.02)

    th = threading.Thread(target=killer)
    th.start()
    try:
        fd.sirt(client, da.from_array(data, chunks=(n, 40, nx)), angles, out=str(out),
                n_iter=6, nz=nz, slab_rows=10)
        ok = True
    except distributed.KilledWorker:
        ok = False
    th.join()
    assert "at" in killed and killed["done_before"] < ny // 10  # killed mid-run
    if ok:
        ref = fastalign.sirt(data, angles, n_iter=6, nz=nz)
        np.testing.assert_allclose(zarr.open_array(str(out))[...], ref, rtol=0,
                                   atol=1e-6 * np.abs(ref).max())
    else:
        assert not out.exists()
    assert _no_temporaries(tmp_path)
    client.wait_for_workers(2, timeout=60)


def test_worker_killed_mid_alignment(client, series, tmp_path):
    """SIGKILL the worker holding most data after the first outer iteration of an
    alignment: the run recovers (Dask recomputes the lost slab states from their lineage)
    with the unfaulted result, or raises a clear error; never a partial output."""
    kw = dict(levels=[1], max_iter=4, n_inner=3, nz=NZ, tol=0.0)
    ref = fastalign.align(series, ANGLES, **kw)
    killed = []

    def kill_busiest(info):
        if killed:
            return
        has = client.has_what()
        addr = max(has, key=lambda a: len(has[a]))
        pid = client.run(os.getpid, workers=[addr])[addr]
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    out, ali = tmp_path / "v.zarr", tmp_path / "s.ali"
    try:
        res = fd.align(client, da.from_array(series, chunks=(N_TILTS, 8, NX)), ANGLES,
                       out=str(out), aligned_out=str(ali), slab_rows=6, tilt_chunk=5,
                       callback=kill_busiest, **kw)
        error = None
    except Exception as exc:  # noqa: BLE001 - judged below
        error = exc
    assert killed
    if error is None:
        np.testing.assert_allclose(res.shifts, ref.shifts, rtol=0, atol=1e-5)
        np.testing.assert_allclose(zarr.open_array(str(out))[...], ref.volume, rtol=0,
                                   atol=1e-5 * np.abs(ref.volume).max())
        with mrcfile.open(str(ali)) as m:
            np.testing.assert_allclose(m.data, ref.aligned, rtol=0,
                                       atol=1e-5 * np.abs(ref.aligned).max())
    else:
        assert isinstance(error, distributed.KilledWorker) or "worker" in str(error), error
        assert os.listdir(tmp_path) == []
    assert _no_temporaries(tmp_path)
    client.wait_for_workers(2, timeout=60)


def _cli(*args, env=None):
    import subprocess
    import sys
    full = dict(os.environ)
    full.pop("FASTALIGN_DEBUG", None)
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "fastalign"] + [str(a) for a in args],
                          capture_output=True, text=True, timeout=300, env=full)


def test_cli_scheduler_and_workers(client, series, tmp_path, cache_dir):
    src = tmp_path / "ts.mrc"
    with mrcfile.new(str(src)) as m:
        m.set_data(series)
    np.savetxt(tmp_path / "ts.rawtlt", ANGLES)
    addr = client.scheduler.address
    proc = _cli("recon", src, "--scheduler", addr, "--n-iter", 4, "--nz", NZ, "-o",
                tmp_path / "r", "-q")
    assert proc.returncode == 0, proc.stderr
    with mrcfile.open(str(tmp_path / "r" / "ts.rec")) as m:
        ref = fastalign.sirt(series, ANGLES, n_iter=4, nz=NZ)
        np.testing.assert_allclose(m.data, ref, rtol=0, atol=1e-6 * np.abs(ref).max())
    proc = _cli("align", src, "--scheduler", addr, "--max-iter", 2, "--tol", 0, "--nz", NZ,
                "-o", tmp_path / "a", "-q")
    assert proc.returncode == 0, proc.stderr
    ref = fastalign.align(series, ANGLES, max_iter=2, tol=0.0, nz=NZ)
    shifts = fastalign.io.read_xf(tmp_path / "a" / "ts.xf")
    np.testing.assert_allclose(shifts, ref.shifts, rtol=0, atol=1e-4)
    assert sorted(os.listdir(tmp_path / "a")) == sorted(
        ["ts.ali", "ts.rec", "ts.xf", "ts.aln", "ts.tlt", "ts.xtilt", "ts.exclude",
         "report.json", "shifts.png",
         "slices.png", "convergence.png"])
    with mrcfile.open(str(tmp_path / "a" / "ts.rec")) as m:
        np.testing.assert_allclose(m.data, ref.volume, rtol=0,
                                   atol=1e-5 * np.abs(ref.volume).max())
    # --exclude (1-based views) on Dask as locally; --drop-excluded is refused
    proc = _cli("align", src, "--scheduler", addr, "--max-iter", 2, "--tol", 0, "--nz", NZ,
                "--exclude", "3", "-o", tmp_path / "x", "-q")
    assert proc.returncode == 0, proc.stderr
    ref = fastalign.align(series, ANGLES, max_iter=2, tol=0.0, nz=NZ, exclude=[2])
    np.testing.assert_allclose(fastalign.io.read_xf(tmp_path / "x" / "ts.xf"), ref.shifts,
                               rtol=0, atol=1e-4)
    assert "3" in (tmp_path / "x" / "ts.exclude").read_text()
    proc = _cli("align", src, "--scheduler", addr, "--drop-excluded", "-o", tmp_path / "d")
    assert proc.returncode == 2 and "--drop-excluded" in proc.stderr
    # --workers starts (and closes) its own LocalCluster
    env = {"FASTALIGN_CACHE": "1", "NUMBA_CACHE_DIR": str(cache_dir)}
    proc = _cli("recon", src, "--workers", 2, "--threads", 1, "--n-iter", 4, "--nz", NZ,
                "-o", tmp_path / "w", "-q", env=env)
    assert proc.returncode == 0, proc.stderr
    with mrcfile.open(str(tmp_path / "w" / "ts.rec")) as m:
        ref = fastalign.sirt(series, ANGLES, n_iter=4, nz=NZ)
        np.testing.assert_allclose(m.data, ref, rtol=0, atol=1e-6 * np.abs(ref).max())
    proc = _cli("recon", src, "--workers", 2, "--method", "fbp", "-o", tmp_path / "f")
    assert proc.returncode == 2 and "fbp" in proc.stderr
