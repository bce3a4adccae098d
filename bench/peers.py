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
Write ``bench/peers_<name>.py`` with a function ``suite(cfg: _harness.Config) ->
list[_harness.Row]`` and register it below with ``register_suite("<name>",
"peers_<name>:suite", "...")`` (recon and align are pre-registered).  Inside it use the
helpers of ``bench/_harness.py`` (``measure``, ``Row``, ``PeakRSS``, ``phantom_volume``,
``releases_gil``, ``set_numba_threads``, ...), ASTRA runners from ``bench/_astra.py`` and
``first_call_latency`` from ``bench/benchmarks/bench_jit.py``; never ``import peers``: this
file is the script entry only (``python bench/peers.py`` puts ``bench/`` on ``sys.path``).
"""
import argparse
import importlib
import json
import os
import sys
import time
from dataclasses import asdict

import numpy as np

_BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
if _BENCH_DIR not in sys.path:
    sys.path.insert(0, _BENCH_DIR)

from _astra import AstraProcesses, AstraSlicer, AstraThreads  # noqa: E402
from _harness import (Config, Row, log, machine_description, machine_line,  # noqa: E402
                      measure, phantom_volume, print_table, rel_err, releases_gil,
                      set_numba_threads)
from benchmarks._util import touched  # noqa: E402
from benchmarks.bench_jit import first_call_latency  # noqa: E402

__all__ = ["register_suite", "load_suite", "suite_projector", "SUITES", "main"]

# ----------------------------------------------------------------------------------------
# Suite: projector
# ----------------------------------------------------------------------------------------

def suite_projector(cfg):
    """Forward projection and backprojection of an ``(S, N, N)`` volume / ``(A, S, N)``
    tilt series: fastalign (all cores and 1 thread), ASTRA CPU ``linear`` (1 thread and a
    pool of ``cfg.peer_threads``), scikit-image ``radon``/``iradon`` (one slice, x S)."""
    rows = []
    N, S, ang = cfg.N, cfg.S, cfg.angles_deg
    na = ang.size
    vol = phantom_volume(S, N, cfg.seed)
    vol_bytes, ts_bytes = vol.nbytes, 4 * na * S * N
    log(f"[projector] volume ({S}, {N}, {N}) = {vol_bytes / 2**20:.1f} MiB, "
        f"tilt series ({na}, {S}, {N}) = {ts_bytes / 2**20:.1f} MiB, "
        f"angles {ang[0]:g}..{ang[-1]:g} deg")

    fa_threads, ts_fa, vol_fa = _projector_fastalign(cfg, vol, rows)

    # Memory of the allocating call vs its input + output (fresh interpreter, see below).
    fa_mem = dict(input=vol_bytes, output=ts_bytes,
                  peak_delta=project_memory_probe(S, N, ang, cfg.threads))
    checks = _projector_astra(cfg, vol, ts_fa, vol_fa, rows)
    if cfg.skimage:
        _projector_skimage(cfg, vol, rows)

    # --- first-call latency (fresh interpreter) ----------------------------------------
    fc = first_call_latency(ops=("project", "backproject"))
    fc_back = first_call_latency(ops=("backproject",))
    _print_projector_extras(checks, fa_threads, fc, fc_back, fa_mem, S, N)
    _report_targets(rows, k=cfg.peer_threads)
    return rows


def _projector_fastalign(cfg, vol, rows):
    """fastalign's forward/back rows (all cores, then 1 thread); returns the thread count
    and its outputs (the reference of the peers' rel. errors)."""
    import fastalign

    S, N, ang = cfg.S, cfg.N, cfg.angles_deg
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
        log(f"  fastalign forward, {threads} thread(s): median {np.median(t):.3f} s")
        t, m, c = measure(lambda: A.T(ts_fa, out=vol_fa), cfg.repeats, cfg.warmup)
        rows.append(Row("projector", "back", name, str(threads), t, m, c, "A.T(y, out=)",
                        base))
        log(f"  fastalign back,    {threads} thread(s): median {np.median(t):.3f} s")
    set_numba_threads(fa_threads)
    return fa_threads, ts_fa, vol_fa


def _projector_astra(cfg, vol, ts_fa, vol_fa, rows):
    """ASTRA's rows (1 thread and a pool); returns the checks (GIL, pool, rel. errors)."""
    S, N, ang = cfg.S, cfg.N, cfg.angles_deg
    na = ang.size
    checks = {}
    try:
        import astra  # noqa: F401
    except ImportError as exc:
        log(f"  ASTRA unavailable ({exc}); skipped")
        astra = None
    if astra is not None:
        gil_probe = AstraSlicer(ang, N, N)
        gil_probe.vol[...] = vol[0]
        released, stall, call = releases_gil(gil_probe.forward_one)
        gil_probe.close()
        log(f"  ASTRA algorithm.run releases the GIL: {released} "
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
                log(f"  {name} forward: median {np.median(t):.3f} s")
                # Same input for every backprojector: fastalign's projection of the phantom.
                t, m, c = measure(lambda: runner.back(ts_fa, vol_as), cfg.repeats, cfg.warmup)
                rows.append(Row("projector", "back", name, str(threads), t, m, c, note))
                checks[f"back rel. error, {name} vs fastalign"] = rel_err(vol_as, vol_fa)
                log(f"  {name} back: median {np.median(t):.3f} s")
            finally:
                runner.close()
    return checks


def _projector_skimage(cfg, vol, rows):
    """scikit-image's rows: ``radon``/``iradon`` on one slice, times scaled by S."""
    S, N, ang = cfg.S, cfg.N, cfg.angles_deg
    try:
        from skimage.transform import iradon, radon
    except ImportError as exc:
        log(f"  scikit-image unavailable ({exc}); skipped")
        return
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
    log("  scikit-image done")


def _print_projector_extras(checks, fa_threads, fc, fc_back, fa_mem, S, N):
    """Print the checks, the first-call latency and the memory of ``project``."""
    import numba

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


_MEMPROBE = r"""
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np
import fastalign
from _harness import PeakRSS, set_numba_threads
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
    print(machine_line())
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
    print(machine_line())
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
            json.dump({"machine": machine_line(), "config": {
                "N": cfg.N, "S": cfg.S, "angles_deg": cfg.angles_deg.tolist(),
                "repeats": cfg.repeats}, "rows": [asdict(r) for r in rows]}, f, indent=1)
    return status


if __name__ == "__main__":
    sys.exit(main())
