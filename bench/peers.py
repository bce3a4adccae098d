#!/usr/bin/env python
"""fastalign side by side with its peers (ASTRA, scikit-image, ...), in one process run.

Usage (from the repository root)::

    python bench/peers.py                        # every suite, full size -> bench/RESULTS.md
    python bench/peers.py --quick                # smoke run (small sizes, ~5 min)
    python bench/peers.py --suite projector      # one suite (repeatable option)
    python bench/peers.py --suite projector --small --repeats 3
    python bench/peers.py --list                 # registered suites and their status

Full size is N=512 (slices N x N, N detector bins), 90 tilts (0..178 step 2), S=64 slices;
``--small`` uses N=256.  Every method gets the same input arrays, one untimed warm-up call,
then ``--repeats`` timed calls; the table shows median/min/max, the ratio to fastalign's
median for the same operation (``t / t_fastalign``: 4.0 means fastalign is 4x faster), and
the peak resident-set growth during the timed calls, i.e. after the warm-up (``/proc/self``
high-water mark, reset before the calls): the steady-state working memory of the call beyond
the preallocated inputs and outputs; and ``cpu/wall``, the cores this process actually kept
busy (about 2 for a 2-thread method on an idle 2-core machine: much less means the timings
were taken under load and thread-scaling numbers are not meaningful).

Adding a suite
--------------
Write ``bench/peers_<name>.py`` with a function ``suite(cfg: peers.Config) -> list[peers.Row]``
and register it below with ``register_suite("<name>", "peers_<name>:suite", "...")`` (recon and
align are pre-registered).  Inside it use ``import peers`` and the helpers here:
``measure``, ``Row``, ``PeakRSS``, ``phantom_volume``, ``releases_gil``, ``first_call_latency``,
``set_numba_threads``.  ``python bench/peers.py`` puts ``bench/`` on ``sys.path``, and this
file registers itself as module ``peers`` so that suites share one copy of it.
"""
import argparse
import gc
import importlib
import json
import math
import os
import platform
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import numpy as np

_BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
if _BENCH_DIR not in sys.path:
    sys.path.insert(0, _BENCH_DIR)
if __name__ == "__main__":
    # Suites do ``import peers``: give them this module, not a second copy of the file.
    sys.modules.setdefault("peers", sys.modules[__name__])

from benchmarks._util import n_cores, reset_peak_rss, rss_bytes, touched  # noqa: E402
from benchmarks.bench_jit import first_call_latency  # noqa: E402

__all__ = [
    "Config", "Row", "PeakRSS", "measure", "phantom_volume", "releases_gil",
    "first_call_latency", "set_numba_threads", "register_suite", "SUITES",
]

# ----------------------------------------------------------------------------------------
# Configuration, results, measurement helpers (shared by every suite)
# ----------------------------------------------------------------------------------------


@dataclass
class Config:
    """What every suite is asked to run."""

    N: int = 512                   # slice size nz = nx = detector bins
    S: int = 64                    # number of slices (tilt-axis positions)
    angles_deg: np.ndarray = field(default_factory=lambda: np.arange(0.0, 178.0 + 1e-9, 2.0))
    repeats: int = 5               # timed calls per method (>= 5 for the report)
    warmup: int = 1                # untimed calls per method before timing
    threads: int = 0               # fastalign (Numba) threads; 0 = all cores
    peer_threads: int = 2          # size of the thread/process pool for single-threaded peers
    astra_pool: str = "auto"       # auto | thread | process
    skimage: bool = True
    seed: int = 0
    quick: bool = False            # smoke-test sizes (suites shrink their cases)

    @property
    def n_angles(self):
        return int(self.angles_deg.size)


@dataclass
class Row:
    """One line of the result table."""

    suite: str
    op: str                        # e.g. "forward", "back", "sirt 20 it"
    method: str
    threads: str
    times: list                    # seconds, one per timed call (already scaled, see note)
    peak_rss: float = math.nan     # bytes above the RSS before the timed calls
    cpu_per_wall: float = math.nan  # process CPU time / wall time over the timed calls
    note: str = ""
    baseline: bool = False         # the fastalign row the op's ratios refer to

    @property
    def median(self):
        return float(np.median(self.times))

    @property
    def min(self):
        return float(np.min(self.times))

    @property
    def max(self):
        return float(np.max(self.times))


class PeakRSS:
    """Peak resident-set growth over a ``with`` block, in bytes (``.delta``).

    Resets the kernel's high-water mark (``/proc/self/clear_refs``) on entry and reads
    ``VmHWM`` on exit; where the reset is not permitted, samples ``VmRSS`` every millisecond
    in a background thread instead.  Counts this process only (not pool worker processes).
    """

    def __init__(self, interval=1e-3):
        self.interval = interval
        self.delta = math.nan
        self._sampler = None

    def __enter__(self):
        gc.collect()
        self.start = rss_bytes("VmRSS")
        self._hwm = reset_peak_rss()
        if not self._hwm:
            self._stop = threading.Event()
            self._peak = self.start
            self._sampler = threading.Thread(target=self._sample, daemon=True)
            self._sampler.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self._peak = max(self._peak, rss_bytes("VmRSS"))
            time.sleep(self.interval)

    def __exit__(self, *exc):
        if self._hwm:
            peak = rss_bytes("VmHWM")
        else:
            self._stop.set()
            self._sampler.join()
            peak = max(self._peak, rss_bytes("VmRSS"))
        self.delta = float(peak - self.start)
        return False


def measure(fn, repeats=5, warmup=1, scale=1.0):
    """Call ``fn()`` ``warmup`` times untimed, then ``repeats`` times timed.

    Returns ``(times, peak_rss_delta, cpu_per_wall)``: wall seconds per call multiplied by
    ``scale`` (e.g. to extrapolate a one-slice measurement to S slices), the peak RSS growth
    in bytes over the timed calls (not scaled), and this process's CPU time divided by wall
    time over the timed calls -- the cores actually used (about 2.0 for two busy threads;
    noticeably less means the threads were starved, e.g. by other load on the machine).
    """
    for _ in range(warmup):
        fn()
    times = []
    with PeakRSS() as mem:
        c0, w0 = time.process_time(), time.perf_counter()
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * scale)
        cpu = (time.process_time() - c0) / (time.perf_counter() - w0)
    return times, mem.delta, cpu


def set_numba_threads(threads):
    """Set Numba's thread count (0 = all); returns the count in effect."""
    import numba
    n = numba.config.NUMBA_NUM_THREADS if threads in (0, None) else int(threads)
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    return numba.get_num_threads()


def releases_gil(fn, repeats=3):
    """Does ``fn()`` (a C call) release the GIL?  Runs it in a worker thread while this
    thread spins in pure Python, and compares the longest stall of the spinning loop with
    the duration of one call: holding the GIL stalls the loop for a whole call, releasing it
    only for a switch interval (~5 ms).

    Returns ``(released, longest_stall_s, call_s)``.
    """
    calls = []
    done = threading.Event()

    def work():
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            calls.append(time.perf_counter() - t0)
        done.set()

    worker = threading.Thread(target=work)
    last = time.perf_counter()
    stall = 0.0
    worker.start()
    while not done.is_set():
        now = time.perf_counter()
        stall = max(stall, now - last)
        last = now
    worker.join()
    call = float(np.median(calls))
    return stall < 0.5 * call, stall, call


def phantom_volume(S, N, seed=0, n_variants=8):
    """Deterministic ``(S, N, N)`` float32 volume: random ellipses inside the inscribed circle.

    ``n_variants`` distinct slices (the ellipses drift and change density from one to the
    next) are repeated along y.  Asymmetric on purpose, so that a flipped or mirrored
    geometry cannot match.  Plain NumPy: no dependency on fastalign.
    """
    rng = np.random.default_rng(seed)
    c = 0.5 * (N - 1)
    z, x = np.mgrid[0:N, 0:N].astype(np.float32)
    x -= c
    z -= c
    n_ell = 12
    x0 = rng.uniform(-0.45, 0.45, n_ell) * N
    z0 = rng.uniform(-0.45, 0.45, n_ell) * N
    a = rng.uniform(0.03, 0.18, n_ell) * N
    b = rng.uniform(0.03, 0.18, n_ell) * N
    phi = rng.uniform(0, np.pi, n_ell)
    rho = rng.uniform(0.2, 1.0, n_ell)
    drift = rng.uniform(-0.01, 0.01, (n_ell, 2)) * N
    inside = (x ** 2 + z ** 2) <= (0.48 * N) ** 2
    variants = np.zeros((n_variants, N, N), np.float32)
    for v in range(n_variants):
        for e in range(n_ell):
            dx = x - (x0[e] + v * drift[e, 0])
            dz = z - (z0[e] + v * drift[e, 1])
            cp, sp = np.cos(phi[e]), np.sin(phi[e])
            q = ((dx * cp + dz * sp) / a[e]) ** 2 + ((-dx * sp + dz * cp) / b[e]) ** 2
            variants[v][q <= 1.0] += rho[e] * (1.0 + 0.05 * v)
        variants[v][~inside] = 0.0
    vol = np.empty((S, N, N), np.float32)
    for s in range(S):
        vol[s] = variants[s % n_variants]
    return vol


def rel_err(a, ref):
    """``||a - ref|| / ||ref||`` in float64."""
    a = np.asarray(a, np.float64)
    ref = np.asarray(ref, np.float64)
    return float(np.linalg.norm(a - ref) / np.linalg.norm(ref))


def chunks(n, k):
    """``k`` contiguous ``(start, stop)`` ranges covering ``range(n)``, sizes within one."""
    edges = np.linspace(0, n, k + 1).round().astype(int)
    return [(int(edges[i]), int(edges[i + 1])) for i in range(k) if edges[i + 1] > edges[i]]


# ----------------------------------------------------------------------------------------
# ASTRA: 2-D CPU "linear" (Joseph) projector applied slice by slice
# ----------------------------------------------------------------------------------------

def astra_geometry(angles_deg, nz, nx):
    """ASTRA 2-D geometries equivalent to fastalign's slice ``(nz, nx)`` and detector.

    ``create_vol_geom(rows, cols)``: ASTRA's image rows are our z (``iz``), its columns our x.
    ASTRA measures its world y *upwards* (row 0 on top, ``y = (nz-1)/2 - iz = -z``) and puts a
    point on detector coordinate ``u = x cos(phi) + y sin(phi)``; with ``phi = -theta`` this is
    ``x cos(theta) + z sin(theta)``, fastalign's convention.  Detector: ``nx`` bins of width 1
    centred on the rotation axis, i.e. bin centre ``(nx-1)/2`` (centre offset 0).  The match
    is verified numerically on every run (``rel. error`` lines).
    """
    import astra
    vol_geom = astra.create_vol_geom(nz, nx)
    proj_geom = astra.create_proj_geom("parallel", 1.0, nx, -np.deg2rad(angles_deg))
    return vol_geom, proj_geom


class _AstraSlicer:
    """One worker's ASTRA objects: a linked slice buffer, a linked sinogram buffer, an FP and
    a BP algorithm.  ``forward``/``back`` process a contiguous range of slices: copy the
    slice (or its sinogram rows) in, ``astra.algorithm.run`` (which releases the GIL), copy
    the result out.  The copies are ~0.1 % of the work."""

    def __init__(self, angles_deg, nz, nx):
        import astra
        self.astra = astra
        vol_geom, proj_geom = astra_geometry(angles_deg, nz, nx)
        self.proj_id = astra.create_projector("linear", proj_geom, vol_geom)
        self.vol = touched((nz, nx))
        self.sino = touched((len(angles_deg), nx))
        self.vol_id = astra.data2d.link("-vol", vol_geom, self.vol)
        self.sino_id = astra.data2d.link("-sino", proj_geom, self.sino)
        cfg = astra.astra_dict("FP")
        cfg["ProjectorId"] = self.proj_id
        cfg["ProjectionDataId"] = self.sino_id
        cfg["VolumeDataId"] = self.vol_id
        self.fp_id = astra.algorithm.create(cfg)
        cfg = astra.astra_dict("BP")
        cfg["ProjectorId"] = self.proj_id
        cfg["ProjectionDataId"] = self.sino_id
        cfg["ReconstructionDataId"] = self.vol_id
        self.bp_id = astra.algorithm.create(cfg)

    def forward_one(self):
        self.astra.algorithm.run(self.fp_id)

    def forward(self, vol, out, start, stop):
        for s in range(start, stop):
            np.copyto(self.vol, vol[s])
            self.astra.algorithm.run(self.fp_id)  # FP overwrites the sinogram
            out[:, s, :] = self.sino

    def back(self, ts, out, start, stop):
        for s in range(start, stop):
            np.copyto(self.sino, ts[:, s, :])
            self.astra.algorithm.run(self.bp_id)  # BP overwrites the volume
            np.copyto(out[s], self.vol)

    def close(self):
        a = self.astra
        a.algorithm.delete([self.fp_id, self.bp_id])
        a.data2d.delete([self.vol_id, self.sino_id])
        a.projector.delete(self.proj_id)


class AstraThreads:
    """ASTRA slice by slice on ``n`` threads (``n = 1``: a plain loop in this thread)."""

    def __init__(self, angles_deg, nz, nx, n):
        self.workers = [_AstraSlicer(angles_deg, nz, nx) for _ in range(n)]
        self.pool = ThreadPoolExecutor(n) if n > 1 else None

    def _run(self, kind, src, dst):
        ranges = chunks(dst.shape[0] if kind == "back" else dst.shape[1], len(self.workers))
        if self.pool is None:
            for w, (a, b) in zip(self.workers, ranges):
                getattr(w, kind)(src, dst, a, b)
            return
        futs = [self.pool.submit(getattr(w, kind), src, dst, a, b)
                for w, (a, b) in zip(self.workers, ranges)]
        for f in futs:
            f.result()

    def forward(self, vol, out):
        self._run("forward", vol, out)

    def back(self, ts, out):
        self._run("back", ts, out)

    def close(self):
        if self.pool is not None:
            self.pool.shutdown()
        for w in self.workers:
            w.close()


# Process-pool variant (only used when ASTRA holds the GIL, or with --astra-pool process).
# Inputs and outputs live in shared memory; each worker process owns one _AstraSlicer.
_PROC = {}


def _proc_init(angles_deg, nz, nx, specs):
    from multiprocessing import shared_memory
    _PROC["slicer"] = _AstraSlicer(angles_deg, nz, nx)
    for name, (shm_name, shape) in specs.items():
        shm = shared_memory.SharedMemory(name=shm_name)
        _PROC[name + "_shm"] = shm
        _PROC[name] = np.ndarray(shape, np.float32, buffer=shm.buf)


def _proc_task(kind, start, stop):
    sl = _PROC["slicer"]
    if kind == "forward":
        sl.forward(_PROC["vol"], _PROC["ts"], start, stop)
    else:
        sl.back(_PROC["ts"], _PROC["vol_out"], start, stop)
    return os.getpid()


class AstraProcesses:
    """ASTRA slice by slice on ``n`` spawned worker processes sharing memory with this one.

    ``spawn``, not ``fork``: Numba's GNU-OpenMP layer aborts a forked child.  Timed calls
    include copying the input into / the output out of shared memory.
    """

    def __init__(self, angles_deg, nz, nx, n, S):
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing import shared_memory
        na = len(angles_deg)
        shapes = {"vol": (S, nz, nx), "ts": (na, S, nx), "vol_out": (S, nz, nx)}
        self._shm, self.arr, specs = [], {}, {}
        for name, shape in shapes.items():
            shm = shared_memory.SharedMemory(create=True, size=4 * int(np.prod(shape)))
            self._shm.append(shm)
            self.arr[name] = np.ndarray(shape, np.float32, buffer=shm.buf)
            self.arr[name].fill(0.0)
            specs[name] = (shm.name, shape)
        self.n, self.S = n, S
        self.pool = ProcessPoolExecutor(n, mp_context=mp.get_context("spawn"),
                                        initializer=_proc_init,
                                        initargs=(np.asarray(angles_deg), nz, nx, specs))
        list(self.pool.map(_proc_task, ["forward"] * n, [0] * n, [1] * n))  # start workers

    def _run(self, kind):
        ranges = chunks(self.S, self.n)
        futs = [self.pool.submit(_proc_task, kind, a, b) for a, b in ranges]
        for f in futs:
            f.result()

    def forward(self, vol, out):
        np.copyto(self.arr["vol"], vol)
        self._run("forward")
        np.copyto(out, self.arr["ts"])

    def back(self, ts, out):
        np.copyto(self.arr["ts"], ts)
        self._run("back")
        np.copyto(out, self.arr["vol_out"])

    def close(self):
        self.pool.shutdown()
        self.arr.clear()
        for shm in self._shm:
            shm.close()
            shm.unlink()


# ----------------------------------------------------------------------------------------
# Suite: projector
# ----------------------------------------------------------------------------------------

def _log(msg):
    print(msg, flush=True)


def suite_projector(cfg):
    """Forward projection and backprojection of an ``(S, N, N)`` volume / ``(A, S, N)``
    tilt series: fastalign (all cores and 1 thread), ASTRA CPU ``linear`` (1 thread and a
    pool of ``cfg.peer_threads``), scikit-image ``radon``/``iradon`` (one slice, x S)."""
    import numba

    import fastalign

    rows = []
    N, S, ang = cfg.N, cfg.S, cfg.angles_deg
    na = ang.size
    vol = phantom_volume(S, N, cfg.seed)
    vol_bytes, ts_bytes = vol.nbytes, 4 * na * S * N
    _log(f"[projector] volume ({S}, {N}, {N}) = {vol_bytes / 2**20:.1f} MiB, "
         f"tilt series ({na}, {S}, {N}) = {ts_bytes / 2**20:.1f} MiB, "
         f"angles {ang[0]:g}..{ang[-1]:g} deg")

    # --- fastalign -------------------------------------------------------------------
    fa_threads = set_numba_threads(cfg.threads)
    A = fastalign.Projector(ang, shape=(S, N, N))
    tiny = fastalign.Projector(ang, shape=(S, 8, 8))   # same dispatch path: compile only
    tiny.T(tiny(np.ones(tiny.domain_shape, np.float32)))
    ts_fa = touched(A.range_shape)
    vol_fa = touched(A.domain_shape)
    for threads, base in ((fa_threads, True), (1, False)):
        if not base and fa_threads == 1:
            continue
        set_numba_threads(threads)
        name = "fastalign Projector" + ("" if base else " (1 thread)")
        t, m, c = measure(lambda: A(vol, out=ts_fa), cfg.repeats, cfg.warmup)
        rows.append(Row("projector", "forward", name, str(threads), t, m, c, "A(x, out=)",
                        base))
        _log(f"  fastalign forward, {threads} thread(s): median {np.median(t):.3f} s")
        t, m, c = measure(lambda: A.T(ts_fa, out=vol_fa), cfg.repeats, cfg.warmup)
        rows.append(Row("projector", "back", name, str(threads), t, m, c, "A.T(y, out=)",
                        base))
        _log(f"  fastalign back,    {threads} thread(s): median {np.median(t):.3f} s")
    set_numba_threads(fa_threads)

    # Memory of the allocating call vs its input + output (fresh interpreter, see below).
    del tiny
    fa_mem = dict(input=vol_bytes, output=ts_bytes,
                  peak_delta=project_memory_probe(S, N, ang, cfg.threads))

    # --- ASTRA -----------------------------------------------------------------------
    checks = {}
    try:
        import astra  # noqa: F401
    except ImportError as exc:
        _log(f"  ASTRA unavailable ({exc}); skipped")
        astra = None
    if astra is not None:
        gil_probe = _AstraSlicer(ang, N, N)
        gil_probe.vol[...] = vol[0]
        released, stall, call = releases_gil(gil_probe.forward_one)
        gil_probe.close()
        _log(f"  ASTRA algorithm.run releases the GIL: {released} "
             f"(longest Python stall {stall * 1e3:.1f} ms during {call * 1e3:.1f} ms calls)")
        pool_kind = cfg.astra_pool
        if pool_kind == "auto":
            pool_kind = "thread" if released else "process"
        checks["astra_releases_gil"] = released
        checks["astra_pool"] = pool_kind

        ts_as = touched((na, S, N))
        vol_as = touched((S, N, N))
        runners = [("ASTRA linear", 1, AstraThreads(ang, N, N, 1), "serial loop over slices")]
        k = cfg.peer_threads
        if pool_kind == "thread":
            runners.append((f"ASTRA linear, {k}-thread pool", k, AstraThreads(ang, N, N, k),
                            "ThreadPoolExecutor, contiguous slice chunks"))
        else:
            runners.append((f"ASTRA linear, {k}-process pool", k,
                            AstraProcesses(ang, N, N, k, S),
                            "spawned processes + shared memory (RSS, cpu: parent only)"))
        for name, threads, runner, note in runners:
            try:
                t, m, c = measure(lambda: runner.forward(vol, ts_as), cfg.repeats, cfg.warmup)
                rows.append(Row("projector", "forward", name, str(threads), t, m, c, note))
                checks[f"forward rel. error, {name} vs fastalign"] = rel_err(ts_as, ts_fa)
                _log(f"  {name} forward: median {np.median(t):.3f} s")
                # Same input for every backprojector: fastalign's projection of the phantom.
                t, m, c = measure(lambda: runner.back(ts_fa, vol_as), cfg.repeats, cfg.warmup)
                rows.append(Row("projector", "back", name, str(threads), t, m, c, note))
                checks[f"back rel. error, {name} vs fastalign"] = rel_err(vol_as, vol_fa)
                _log(f"  {name} back: median {np.median(t):.3f} s")
            finally:
                runner.close()

    # --- scikit-image ----------------------------------------------------------------
    if cfg.skimage:
        try:
            from skimage.transform import iradon, radon
        except ImportError as exc:
            _log(f"  scikit-image unavailable ({exc}); skipped")
        else:
            sl = vol[0].astype(np.float64)
            sino = radon(sl, theta=ang, circle=False)
            note = f"1 slice x {S}; detector {sino.shape[0]} bins (circle=False)"
            t, m, c = measure(lambda: radon(sl, theta=ang, circle=False),
                              cfg.repeats, cfg.warmup, scale=S)
            rows.append(Row("projector", "forward", "skimage radon", "1", t, m, c, note))

            def back_one():
                iradon(sino, theta=ang, filter_name=None, circle=False, output_size=N)

            t, m, c = measure(back_one, cfg.repeats, cfg.warmup, scale=S)
            rows.append(Row("projector", "back", "skimage iradon(filter_name=None)", "1", t, m,
                            c, note))
            _log("  scikit-image done")

    # --- first-call latency (fresh interpreter) ----------------------------------------
    fc = first_call_latency(ops=("project", "backproject"))
    fc_back = first_call_latency(ops=("backproject",))

    # --- report the extras -------------------------------------------------------------
    print()
    print("projector checks")
    for key, val in checks.items():
        if isinstance(val, float):
            flag = "" if val < 1e-3 else "   <-- MISMATCH (geometry?)"
            print(f"  {key}: {val:.2e}{flag}")
        else:
            print(f"  {key}: {val}")
    print(f"  fastalign threads (numba): {fa_threads}, threading layer: "
          f"{numba.threading_layer()}")
    print("fastalign first-call latency (fresh interpreter, FASTALIGN_CACHE=0, small problem)")
    print(f"  import fastalign            {fc['import']:.2f} s")
    print(f"  first project()             {fc['project_first']:.2f} s "
          f"(steady {fc['project_steady'] * 1e3:.1f} ms)")
    print(f"  then first backproject()    {fc['backproject_first']:.2f} s "
          f"(steady {fc['backproject_steady'] * 1e3:.1f} ms)")
    print(f"  backproject() alone         {fc_back['backproject_first']:.2f} s")
    io = fa_mem["input"] + fa_mem["output"]
    print("fastalign.project(volume) memory (allocating call, fresh interpreter, input resident)")
    print(f"  input {fa_mem['input'] / 2**20:.1f} MiB + output {fa_mem['output'] / 2**20:.1f} "
          f"MiB = {io / 2**20:.1f} MiB;  peak RSS = input + "
          f"{fa_mem['peak_delta'] / 2**20:.1f} MiB = "
          f"{(fa_mem['input'] + fa_mem['peak_delta']) / 2**20:.1f} MiB "
          f"({(fa_mem['input'] + fa_mem['peak_delta']) / io:.2f} x input+output; "
          f"extra over the output: {(fa_mem['peak_delta'] - fa_mem['output']) / 2**20:.1f} MiB)")
    print(f"  (for scale: a 1-byte/voxel temporary, e.g. np.isfinite(volume) in input "
          f"validation, is {S * N * N / 2**20:.1f} MiB)")
    _report_targets(rows, k=cfg.peer_threads)
    return rows


_MEMPROBE = r"""
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np
import fastalign
from peers import PeakRSS, set_numba_threads
S, N, threads = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
ang = np.array([float(a) for a in sys.argv[5].split(",")])
set_numba_threads(threads)
tiny = fastalign.Projector(ang, shape=(S, 8, 8))
tiny(np.ones(tiny.domain_shape, np.float32))            # compile outside the measurement
vol = np.random.default_rng(0).random((S, N, N), dtype=np.float32)
with PeakRSS() as mem:
    ts = fastalign.project(vol, ang)
print("PEAK_DELTA", mem.delta)
"""


def project_memory_probe(S, N, angles_deg, threads=0):
    """Peak RSS growth (bytes) of ``fastalign.project(volume, angles)`` with the volume
    already resident, measured in a fresh interpreter: in a long-running process glibc
    serves large blocks from heap memory that earlier benchmarks left resident, which would
    hide part of the allocation."""
    import subprocess
    proc = subprocess.run(
        [sys.executable, "-c", _MEMPROBE, _BENCH_DIR, str(S), str(N), str(threads),
         ",".join(repr(float(a)) for a in angles_deg)],
        capture_output=True, text=True, timeout=600)
    for line in proc.stdout.splitlines():
        if line.startswith("PEAK_DELTA "):
            return float(line.split()[1])
    raise RuntimeError(f"memory probe failed ({proc.returncode}):\n{proc.stderr}")


def _report_targets(rows, k):
    """The projector targets (reported, not asserted)."""
    print("targets (reported, not asserted)")
    for op, goal in (("forward", 4.0), ("back", 3.0)):
        base = [r for r in rows if r.op == op and r.baseline]
        peer = [r for r in rows if r.op == op and r.method.startswith("ASTRA linear, ")]
        if not base or not peer:
            print(f"  {op}: not measured")
            continue
        ratio = peer[0].median / base[0].median
        print(f"  {op}: fastalign is {ratio:.2f}x faster than {peer[0].method} "
              f"(goal >= {goal:g}x): {'met' if ratio >= goal else 'NOT met'}")


# ----------------------------------------------------------------------------------------
# Suite registry
# ----------------------------------------------------------------------------------------

SUITES = {}


def register_suite(name, target, description=""):
    """Register a suite: ``target`` is a callable ``(Config) -> list[Row]`` or a lazy
    ``"module:function"`` string resolved on use (the module may not exist yet)."""
    SUITES[name] = (target, description)


def load_suite(name):
    """The suite's callable; raises ``LookupError`` with a reason when unavailable."""
    if name not in SUITES:
        raise LookupError(f"unknown suite {name!r}; known: {', '.join(SUITES)}")
    target, _ = SUITES[name]
    if callable(target):
        return target
    mod_name, _, attr = target.partition(":")
    try:
        mod = importlib.import_module(mod_name)
    except ModuleNotFoundError as exc:
        if exc.name != mod_name:
            raise
        raise LookupError(f"bench/{mod_name}.py not found") from None
    try:
        return getattr(mod, attr)
    except AttributeError:
        raise LookupError(f"bench/{mod_name}.py has no function {attr}()") from None


register_suite("projector", suite_projector,
               "forward/back projection vs ASTRA CPU linear and scikit-image radon/iradon")
register_suite("recon", "peers_recon:suite", "SIRT/TV/FBP vs peers (bench/peers_recon.py)")
register_suite("align", "peers_align:suite", "alignment vs peers (bench/peers_align.py)")
register_suite("scaling", "peers_scaling:suite",
               "projector cost vs N, tilts, slices, threads (bench/peers_scaling.py)")


# ----------------------------------------------------------------------------------------
# Table and main
# ----------------------------------------------------------------------------------------

def print_table(rows):
    """Method, median/min/max seconds, ratio to the fastalign row of the same op, peak RSS."""
    head = (f"{'suite':<10} {'op':<9} {'method':<34} {'thr':>3} {'median s':>9} {'min s':>8} "
            f"{'max s':>8} {'x fastalign':>11} {'peak dRSS MiB':>13} {'cpu/wall':>8}  note")
    print(head)
    print("-" * len(head))
    for r in rows:
        base = [b for b in rows if b.baseline and b.suite == r.suite and b.op == r.op]
        ratio = f"{r.median / base[0].median:11.2f}" if base else f"{'-':>11}"
        mem = f"{r.peak_rss / 2**20:13.1f}" if np.isfinite(r.peak_rss) else f"{'-':>13}"
        cpu = f"{r.cpu_per_wall:8.2f}" if np.isfinite(r.cpu_per_wall) else f"{'-':>8}"
        print(f"{r.suite:<10} {r.op:<9} {r.method:<34} {r.threads:>3} {r.median:9.3f} "
              f"{r.min:8.3f} {r.max:8.3f} {ratio} {mem} {cpu}  {r.note}")


PACKAGES = ("fastalign", "numpy", "scipy", "numba", "llvmlite", "pyFFTW", "mrcfile",
            "matplotlib", "astra-toolbox", "scikit-image", "etspy", "hyperspy", "pystackreg",
            "svmbir", "asv")


def machine_description():
    """CPU model, cores, RAM, load, Python and package versions (a dict of strings)."""
    import importlib.metadata as md
    import numba
    d = {"host": platform.node(), "os": platform.platform(),
         "python": platform.python_version()}
    try:
        with open("/proc/cpuinfo") as f:
            d["cpu"] = next((ln.split(":", 1)[1].strip() for ln in f
                             if ln.startswith("model name")), platform.processor())
    except OSError:
        d["cpu"] = platform.processor() or platform.machine()
    d["cores"] = f"{n_cores()} usable ({os.cpu_count()} online)"
    try:
        with open("/proc/meminfo") as f:
            kb = int(next(ln for ln in f if ln.startswith("MemTotal")).split()[1])
        d["ram"] = f"{kb / 2**20:.1f} GiB"
    except (OSError, StopIteration):
        d["ram"] = "unknown"
    load = os.getloadavg() if hasattr(os, "getloadavg") else (math.nan,) * 3
    d["load"] = f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (1, 5, 15 min)"
    d["numba threads"] = (f"NUMBA_NUM_THREADS={numba.config.NUMBA_NUM_THREADS}, "
                          f"layer {numba.config.THREADING_LAYER}")
    vers = {}
    for pkg in PACKAGES:
        try:
            vers[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            vers[pkg] = "not installed"
    d["packages"] = vers
    return d


def _machine_line():
    import numba
    load = os.getloadavg() if hasattr(os, "getloadavg") else (math.nan,) * 3
    return (f"{platform.node()} | {platform.processor() or platform.machine()} | "
            f"{n_cores()} cores | numba {numba.__version__} "
            f"(NUMBA_NUM_THREADS={numba.config.NUMBA_NUM_THREADS}) | numpy {np.__version__} | "
            f"load avg {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", action="append", metavar="NAME",
                   help="suite to run (repeatable; default: every available one)")
    p.add_argument("--list", action="store_true", help="list the suites and exit")
    p.add_argument("--small", action="store_true", help="N=256 instead of 512")
    p.add_argument("--N", type=int, help="slice size / detector bins (overrides --small)")
    p.add_argument("--slices", type=int, default=64, help="number of slices S (64)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per method (5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls per method (1)")
    p.add_argument("--threads", type=int, default=0,
                   help="fastalign threads (0 = all cores, the default)")
    p.add_argument("--peer-threads", type=int, default=2,
                   help="pool size for single-threaded peers (2)")
    p.add_argument("--astra-pool", choices=("auto", "thread", "process"), default="auto",
                   help="thread pool if ASTRA releases the GIL (auto-detected), else processes")
    p.add_argument("--no-skimage", action="store_true", help="skip scikit-image")
    p.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: N=128, S=8, 3 repeats, small alignment cases, no big ones")
    p.add_argument("--output", default=os.path.join(_BENCH_DIR, "RESULTS.md"),
                   help="Markdown report (default bench/RESULTS.md; '' to skip)")
    args = p.parse_args(argv)

    if args.list:
        for name, (target, desc) in SUITES.items():
            try:
                load_suite(name)
                status = "available"
            except LookupError as exc:
                status = f"unavailable: {exc}"
            print(f"{name:<10} {desc}  [{status}]")
        return 0

    N = args.N or (128 if args.quick else 256 if args.small else 512)
    S = 8 if args.quick and args.slices == 64 else args.slices
    repeats = 3 if args.quick and args.repeats == 5 else args.repeats
    cfg = Config(N=N, S=S, repeats=repeats, warmup=args.warmup,
                 threads=args.threads, peer_threads=args.peer_threads,
                 astra_pool=args.astra_pool, skimage=not args.no_skimage, quick=args.quick)
    t_run = time.perf_counter()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    machine_before = machine_description()
    names = args.suite or list(SUITES)
    explicit = bool(args.suite)
    print(_machine_line())
    print(f"N={cfg.N}, S={cfg.S}, {cfg.n_angles} tilts "
          f"({cfg.angles_deg[0]:g}..{cfg.angles_deg[-1]:g} deg), repeats={cfg.repeats}, "
          f"warmup={cfg.warmup}")
    rows, status, suite_log = [], 0, {}
    for name in names:
        try:
            fn = load_suite(name)
        except LookupError as exc:
            print(f"suite {name}: skipped ({exc})")
            suite_log[name] = f"skipped ({exc})"
            if explicit:
                status = 2
            continue
        t0 = time.perf_counter()
        rows.extend(fn(cfg))
        suite_log[name] = f"{time.perf_counter() - t0:.0f} s"
        print(f"suite {name}: {suite_log[name]}")
    if rows:
        print()
        print_table(rows)
    print(_machine_line())
    if args.output:
        import results_md
        cmd = "python bench/peers.py " + " ".join(argv if argv is not None else sys.argv[1:])
        results_md.write(args.output, cfg=cfg, rows=rows, suite_log=suite_log,
                         machine_before=machine_before, machine_after=machine_description(),
                         started=started, wall_s=time.perf_counter() - t_run,
                         command=cmd.strip())
        print(f"wrote {args.output}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": _machine_line(), "config": {
                "N": cfg.N, "S": cfg.S, "angles_deg": cfg.angles_deg.tolist(),
                "repeats": cfg.repeats}, "rows": [asdict(r) for r in rows]}, f, indent=1)
    return status


if __name__ == "__main__":
    sys.exit(main())
