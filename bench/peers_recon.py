#!/usr/bin/env python
"""Reconstruction side by side: fastalign SIRT / TV / FBP vs ASTRA CPU and scikit-image.

Standalone (from the repository root)::

    python bench/peers_recon.py                       # N=512, 90 tilts 0..178 step 2, S=64
    python bench/peers_recon.py --N 256 --slices 16 --repeats 3

or as the ``recon`` suite of ``bench/peers.py`` (``python bench/peers.py --suite recon``).

What is timed (same data for all; every method gets one untimed warm-up call, which also gives
the peak-RSS column, then the methods are timed round-robin for ``--repeats`` rounds so that
they see the same machine load; the table shows medians):

* fastalign ``SIRTSolver.run(b, x, 1)``: one SIRT iteration, warm-started (weights computed
  once, outside the timing, as in the alignment loop); also ``sirt(b, angles, n_iter=1)``
  including the weights and allocation;
* fastalign ``TVSolver.run(b, x, 1)``: one monotone-FISTA iteration (``n_inner=10`` Chambolle
  iterations, 2-D TV);
* fastalign ``fbp(b, angles)`` (ramp filter);
* ASTRA CPU ``SIRT`` with the ``linear`` projector, ``algorithm.run(alg, 1)`` per slice, slices
  split in contiguous chunks over a pool of ``--peer-threads`` Python threads (ASTRA releases
  the GIL), each thread owning its ASTRA objects, warm-started like fastalign (``run(k)``
  costs k times ``run(1)``: ASTRA's weights are not a per-call overhead); also one thread on
  4 slices, scaled;
* ASTRA CPU ``FBP`` (``linear`` projector, Ram-Lak), same pool;
* scikit-image ``iradon_sart`` (one SART sweep) on one slice, scaled by S.

The ratio column is ``t / t_fastalign`` for the same operation: 4.0 means fastalign is 4x faster.
Timings on a shared 2-core machine are noisy; compare medians from one run.
"""
import argparse
import os
import sys
import time

import numpy as np

_BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
if _BENCH_DIR not in sys.path:
    sys.path.insert(0, _BENCH_DIR)

import _astra  # noqa: E402
import _harness  # noqa: E402
from _harness import Row, phantom_volume, rel_err, set_numba_threads  # noqa: E402
from benchmarks._util import touched  # noqa: E402


def _log(msg):
    print(msg, flush=True)


class _AstraRecon(_astra.AstraLinked):
    """One pool worker's ASTRA objects: linked slice and sinogram buffers, a SIRT and an FBP
    algorithm on them.  ``sirt`` / ``fbp`` process a contiguous range of slices."""

    def __init__(self, angles_deg, nz, nx):
        super().__init__(angles_deg, nz, nx)
        self.sirt_id = self.algorithm("SIRT")
        self.fbp_id = self.algorithm("FBP")

    def sirt_one(self, n_iter=1):
        self.astra.algorithm.run(self.sirt_id, n_iter)

    def sirt(self, ts, x, start, stop, n_iter):
        """``n_iter`` SIRT iterations per slice, warm-started from ``x[s]`` (in place)."""
        for s in range(start, stop):
            np.copyto(self.sino, ts[:, s, :])
            np.copyto(self.vol, x[s])
            self.astra.algorithm.run(self.sirt_id, n_iter)
            np.copyto(x[s], self.vol)

    def fbp(self, ts, out, start, stop):
        for s in range(start, stop):
            np.copyto(self.sino, ts[:, s, :])
            self.astra.algorithm.run(self.fbp_id)
            np.copyto(out[s], self.vol)


class _AstraPool(_astra.SlicePool):
    def __init__(self, angles_deg, nz, nx, n):
        super().__init__([_AstraRecon(angles_deg, nz, nx) for _ in range(n)])

    def sirt(self, ts, x, n_iter=1):
        self.run("sirt", x.shape[0], ts, x, n_iter)

    def fbp(self, ts, out):
        self.run("fbp", out.shape[0], ts, out)


def interleaved(calls, repeats, warmup):
    """Time several methods round-robin so that they share the machine's load.

    ``calls`` maps a key to ``(fn, scale)``.  Every ``fn`` is called ``warmup`` times untimed
    (the first of these inside :class:`_harness.PeakRSS`, giving its peak RSS growth), then the
    methods are timed in turn, ``repeats`` rounds.  Returns ``{key: (times, peak_rss,
    cpu_per_wall)}`` (process CPU time / wall time over the timed calls).
    """
    rss = {}
    for key, (fn, _) in calls.items():
        with _harness.PeakRSS() as mem:
            fn()
        rss[key] = mem.delta
        for _ in range(warmup - 1):
            fn()
    times = {key: [] for key in calls}
    cpu = {key: [0.0, 0.0] for key in calls}
    for _ in range(repeats):
        for key, (fn, scale) in calls.items():
            c0 = time.process_time()
            t0 = time.perf_counter()
            fn()
            wall = time.perf_counter() - t0
            cpu[key][0] += time.process_time() - c0
            cpu[key][1] += wall
            times[key].append(wall * scale)
    return {key: (times[key], rss[key], cpu[key][0] / max(cpu[key][1], 1e-12))
            for key in calls}


def suite(cfg):
    """SIRT / TV / FBP rows for ``_harness.print_table`` (and the reported targets)."""
    import numba

    from fastalign import Projector
    from fastalign.recon import SIRTSolver, TVSolver, fbp, sirt

    N, S, ang = cfg.N, cfg.S, cfg.angles_deg
    na = ang.size
    vol = phantom_volume(S, N, cfg.seed)
    fa_threads = set_numba_threads(cfg.threads)
    A = Projector(ang, (S, N, N))
    b = A(vol)
    _log(f"[recon] volume ({S}, {N}, {N}), tilt series ({na}, {S}, {N}), "
         f"{ang[0]:g}..{ang[-1]:g} deg, fastalign threads {fa_threads} "
         f"({numba.threading_layer()})")

    # --- fastalign: solvers built once, iterate moved away from zero, kernels compiled ----
    solver = SIRTSolver(A)
    x_sirt = touched(A.domain_shape)
    solver.run(b, x_sirt, 2)
    x_start = x_sirt.copy()
    ax_start = solver.reprojection.copy()
    lam = 0.02 * float(np.abs(b).mean())
    tvs = TVSolver(A, lam=lam, n_inner=10)
    x_tv = x_start.copy()
    tvs.run(b, x_tv, 2, Ax=ax_start)
    fbp(b[:, :1], ang)
    out_fa = {}
    checks = {}
    # (key, op, method, threads, note, baseline) -> fn, scale
    meta = {}
    calls = {}

    def add(key, op, method, threads, note, fn, scale=1.0, baseline=False):
        meta[key] = (op, method, str(threads), note, baseline)
        calls[key] = (fn, scale)

    add("fa_sirt", "sirt 1 it", "fastalign SIRTSolver.run", fa_threads,
        "warm start, weights precomputed",
        lambda: solver.run(b, x_sirt, 1, Ax=solver.reprojection), baseline=True)
    add("fa_sirt_fn", "sirt 1 it", "fastalign sirt(n_iter=1)", fa_threads,
        "incl. weights + allocation", lambda: sirt(b, ang, n_iter=1))
    add("fa_tv", "tv 1 it", "fastalign TVSolver.run", fa_threads,
        "MFISTA, 10 Chambolle its, 2-D TV",
        lambda: tvs.run(b, x_tv, 1, Ax=tvs.reprojection), baseline=True)
    add("fa_fbp", "fbp", "fastalign fbp (ramp)", fa_threads, "pyFFTW filter + A.T",
        lambda: out_fa.__setitem__("fbp", fbp(b, ang)), baseline=True)

    # --- ASTRA ---------------------------------------------------------------------------
    pools = []
    try:
        import astra  # noqa: F401
    except ImportError as exc:
        _log(f"  ASTRA unavailable ({exc}); skipped")
        astra = None
    if astra is not None:
        k = cfg.peer_threads
        probe = _AstraRecon(ang, N, N)
        probe.sino[...] = b[:, 0, :]
        released, stall, call = _harness.releases_gil(probe.sirt_one)
        probe.close()
        _log(f"  ASTRA SIRT run releases the GIL: {released} (longest Python stall "
             f"{stall * 1e3:.1f} ms during {call * 1e3:.1f} ms calls)")
        checks["astra_releases_gil"] = released
        pool = _AstraPool(ang, N, N, k)
        one = _AstraPool(ang, N, N, 1)
        pools += [pool, one]
        x_as = touched((S, N, N))
        np.copyto(x_as, x_start)
        out_as = touched((S, N, N))
        few = min(S, 4)
        x_one = touched((few, N, N))
        np.copyto(x_one, x_start[:few])
        b_few = np.ascontiguousarray(b[:, :few])
        note = f"{k}-thread pool, slice chunks"
        add("as_sirt", "sirt 1 it", f"ASTRA SIRT linear run(1), {k} thr", k, note,
            lambda: pool.sirt(b, x_as, 1))
        add("as_sirt1", "sirt 1 it", "ASTRA SIRT linear run(1), 1 thr", 1,
            f"{few} slices x {S / few:g}", lambda: one.sirt(b_few, x_one, 1), scale=S / few)
        add("as_fbp", "fbp", f"ASTRA FBP linear, {k} thr", k, note + ", Ram-Lak",
            lambda: pool.fbp(b, out_as))

    # --- scikit-image ----------------------------------------------------------------------
    if cfg.skimage:
        try:
            from skimage.transform import iradon_sart
        except ImportError as exc:
            _log(f"  scikit-image unavailable ({exc}); skipped")
        else:
            sino = np.ascontiguousarray(b[:, 0, :].T.astype(np.float64))  # (n_det, n_angles)
            add("sk_sart", "sirt 1 it", "skimage iradon_sart (1 sweep)", 1, f"1 slice x {S}",
                lambda: iradon_sart(sino, theta=ang), scale=S)

    _log(f"  timing {len(calls)} methods round-robin, {cfg.repeats} rounds ...")
    try:
        measured = interleaved(calls, cfg.repeats, max(1, cfg.warmup))
    finally:
        for p in pools:
            p.close()
    rows = []
    for key, (times, rss, cpu) in measured.items():
        op, method, threads, note, base = meta[key]
        rows.append(Row(suite="recon", op=op, method=method, threads=threads, times=times,
                        peak_rss=rss, cpu_per_wall=cpu, note=note, baseline=base))
        _log(f"  {method}: median {np.median(times):.3f} s")

    # --- agreement checks (outside the timing) ---------------------------------------------
    checks["fastalign FBP rel. error vs phantom"] = rel_err(out_fa["fbp"], vol)
    if astra is not None:
        checks["ASTRA FBP rel. error vs phantom"] = rel_err(out_as, vol)
        one_as = _AstraPool(ang, N, N, 1)
        try:
            xa = x_start[:few].copy()
            one_as.sirt(b_few, xa, 1)
        finally:
            one_as.close()
        sub = SIRTSolver(Projector(ang, (few, N, N)))
        xf = x_start[:few].copy()
        sub.run(b_few, xf, 1)
        checks["SIRT 1 it from the same start: ASTRA vs fastalign rel. diff"] = rel_err(xa, xf)
    print()
    print("recon checks")
    for key, val in checks.items():
        print(f"  {key}: {val:.3e}" if isinstance(val, float) else f"  {key}: {val}")
    report_targets(rows)
    return rows


def _median(rows, op, prefix):
    r = [x for x in rows if x.op == op and x.method.startswith(prefix)]
    return r[0].median if r else None


def report_targets(rows):
    """The reconstruction targets (reported, not asserted)."""
    print("targets (reported, not asserted)")
    fa_sirt = _median(rows, "sirt 1 it", "fastalign SIRTSolver")
    fa_tv = _median(rows, "tv 1 it", "fastalign TVSolver")
    fa_fbp = _median(rows, "fbp", "fastalign fbp")
    as_sirt = [r for r in rows if r.op == "sirt 1 it" and r.method.startswith("ASTRA SIRT")
               and not r.method.endswith("1 thr")]
    for r in as_sirt:
        ratio = r.median / fa_sirt
        print(f"  SIRT iteration: fastalign is {ratio:.2f}x faster than {r.method} "
              f"(goal >= 3x): {'met' if ratio >= 3 else 'NOT met'}")
    if fa_tv is not None and fa_sirt is not None:
        ratio = fa_tv / fa_sirt
        print(f"  TV iteration / SIRT iteration = {ratio:.2f} (goal <= 1.5): "
              f"{'met' if ratio <= 1.5 else 'NOT met'}")
    as_fbp = _median(rows, "fbp", "ASTRA FBP")
    if as_fbp is not None and fa_fbp is not None:
        ratio = as_fbp / fa_fbp
        print(f"  FBP: fastalign is {ratio:.2f}x faster than ASTRA FBP pool (goal >= 3x): "
              f"{'met' if ratio >= 3 else 'NOT met'}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--N", type=int, default=512, help="slice size / detector bins (512)")
    p.add_argument("--slices", type=int, default=64, help="number of slices S (64)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per method (5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls per method (1)")
    p.add_argument("--threads", type=int, default=0, help="fastalign threads (0 = all)")
    p.add_argument("--peer-threads", type=int, default=2, help="ASTRA pool size (2)")
    p.add_argument("--no-skimage", action="store_true", help="skip scikit-image")
    args = p.parse_args(argv)
    cfg = _harness.Config(N=args.N, S=args.slices, repeats=args.repeats, warmup=args.warmup,
                       threads=args.threads, peer_threads=args.peer_threads,
                       skimage=not args.no_skimage)
    print(_harness.machine_line())
    print(f"N={cfg.N}, S={cfg.S}, {cfg.n_angles} tilts "
          f"({cfg.angles_deg[0]:g}..{cfg.angles_deg[-1]:g} deg), repeats={cfg.repeats}")
    rows = suite(cfg)
    print()
    _harness.print_table(rows)
    print(_harness.machine_line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
