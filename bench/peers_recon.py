#!/usr/bin/env python
"""Reconstruction side by side: fastalign SIRT / TV / FBP vs ASTRA CPU and scikit-image.

Standalone (from the repository root)::

    python bench/peers_recon.py                       # N=512, 90 tilts 0..178 step 2, S=64
    python bench/peers_recon.py --N 256 --slices 16 --repeats 3

or as the ``recon`` suite of ``bench/peers.py`` (``python bench/peers.py --suite recon``).

What is timed (medians of ``--repeats`` calls after one warm-up call; same data for all):

* fastalign ``SIRTSolver.run(b, x, 1)``: one SIRT iteration, warm-started (weights computed
  once, outside the timing, as in the alignment loop); also ``sirt(b, angles, n_iter=1)``
  including the weights and allocation;
* fastalign ``TVSolver.run(b, x, 1)``: one monotone-FISTA iteration (``n_inner=10`` Chambolle
  iterations, 2-D TV);
* fastalign ``fbp(b, angles)`` (ramp filter);
* ASTRA CPU ``SIRT`` with the ``linear`` projector, ``algorithm.run(alg, 1)`` per slice, slices
  split in contiguous chunks over a pool of ``--peer-threads`` Python threads (ASTRA releases
  the GIL), each thread owning its ASTRA objects, warm-started from the same volume as
  fastalign (``run(4)/4`` is also shown: the per-iteration cost of a longer call);
* ASTRA CPU ``FBP`` (``linear`` projector, Ram-Lak), same pool;
* scikit-image ``iradon_sart`` (one SART sweep) on one slice, scaled by S.

The ratio column is ``t / t_fastalign`` for the same operation: 4.0 means fastalign is 4x faster.
Timings on a shared 2-core machine are noisy; compare medians from one run.
"""
import argparse
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np

_BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
if _BENCH_DIR not in sys.path:
    sys.path.insert(0, _BENCH_DIR)

import peers  # noqa: E402
from peers import Row, chunks, measure, phantom_volume, rel_err, set_numba_threads  # noqa: E402
from benchmarks._util import touched  # noqa: E402


def _log(msg):
    print(msg, flush=True)


class _AstraRecon:
    """One pool worker's ASTRA objects: linked slice and sinogram buffers, a SIRT and an FBP
    algorithm on them.  ``sirt`` / ``fbp`` process a contiguous range of slices."""

    def __init__(self, angles_deg, nz, nx):
        import astra
        self.astra = astra
        vol_geom, proj_geom = peers.astra_geometry(angles_deg, nz, nx)
        self.proj_id = astra.create_projector("linear", proj_geom, vol_geom)
        self.vol = touched((nz, nx))
        self.sino = touched((len(angles_deg), nx))
        self.vol_id = astra.data2d.link("-vol", vol_geom, self.vol)
        self.sino_id = astra.data2d.link("-sino", proj_geom, self.sino)
        cfg = astra.astra_dict("SIRT")
        cfg["ProjectorId"] = self.proj_id
        cfg["ProjectionDataId"] = self.sino_id
        cfg["ReconstructionDataId"] = self.vol_id
        self.sirt_id = astra.algorithm.create(cfg)
        cfg = astra.astra_dict("FBP")
        cfg["ProjectorId"] = self.proj_id
        cfg["ProjectionDataId"] = self.sino_id
        cfg["ReconstructionDataId"] = self.vol_id
        self.fbp_id = astra.algorithm.create(cfg)

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

    def close(self):
        a = self.astra
        a.algorithm.delete([self.sirt_id, self.fbp_id])
        a.data2d.delete([self.vol_id, self.sino_id])
        a.projector.delete(self.proj_id)


class _AstraPool:
    def __init__(self, angles_deg, nz, nx, n):
        self.workers = [_AstraRecon(angles_deg, nz, nx) for _ in range(n)]
        self.pool = ThreadPoolExecutor(n) if n > 1 else None

    def _run(self, kind, S, *args):
        ranges = chunks(S, len(self.workers))
        if self.pool is None:
            for w, (a, b) in zip(self.workers, ranges):
                getattr(w, kind)(args[0], args[1], a, b, *args[2:])
            return
        futs = [self.pool.submit(getattr(w, kind), args[0], args[1], a, b, *args[2:])
                for w, (a, b) in zip(self.workers, ranges)]
        for f in futs:
            f.result()

    def sirt(self, ts, x, n_iter=1):
        self._run("sirt", x.shape[0], ts, x, n_iter)

    def fbp(self, ts, out):
        self._run("fbp", out.shape[0], ts, out)

    def close(self):
        if self.pool is not None:
            self.pool.shutdown()
        for w in self.workers:
            w.close()


def suite(cfg):
    """SIRT / TV / FBP rows for ``peers.print_table`` (and the reported targets)."""
    import numba

    from fastalign import Projector
    from fastalign.recon import SIRTSolver, TVSolver, fbp, sirt

    rows = []
    N, S, ang = cfg.N, cfg.S, cfg.angles_deg
    na = ang.size
    vol = phantom_volume(S, N, cfg.seed)
    fa_threads = set_numba_threads(cfg.threads)
    A = Projector(ang, (S, N, N))
    b = A(vol)
    _log(f"[recon] volume ({S}, {N}, {N}), tilt series ({na}, {S}, {N}), "
         f"{ang[0]:g}..{ang[-1]:g} deg, fastalign threads {fa_threads} "
         f"({numba.threading_layer()})")

    # --- fastalign SIRT: one warm-started iteration ---------------------------------------
    solver = SIRTSolver(A)
    x_sirt = touched(A.domain_shape)
    solver.run(b, x_sirt, 2)  # compile + move away from zero
    x_start = x_sirt.copy()
    ax_start = solver.reprojection.copy()

    def fa_sirt_one():
        solver.run(b, x_sirt, 1, Ax=solver.reprojection)

    t, m = measure(fa_sirt_one, cfg.repeats, cfg.warmup)
    rows.append(Row("recon", "sirt 1 it", "fastalign SIRTSolver.run", str(fa_threads), t, m,
                    "warm start, weights precomputed", True))
    _log(f"  fastalign SIRT 1 it: median {np.median(t):.3f} s")
    t, m = measure(lambda: sirt(b, ang, n_iter=1), cfg.repeats, cfg.warmup)
    rows.append(Row("recon", "sirt 1 it", "fastalign sirt(n_iter=1)", str(fa_threads), t, m,
                    "incl. weights + allocation"))
    _log(f"  fastalign sirt(n_iter=1): median {np.median(t):.3f} s")

    # --- fastalign TV: one FISTA iteration ------------------------------------------------
    lam = 0.02 * float(np.abs(b).mean())
    tvs = TVSolver(A, lam=lam, n_inner=10)
    x_tv = x_start.copy()
    tvs.run(b, x_tv, 2, Ax=ax_start)

    def fa_tv_one():
        tvs.run(b, x_tv, 1, Ax=tvs.reprojection)

    t, m = measure(fa_tv_one, cfg.repeats, cfg.warmup)
    rows.append(Row("recon", "tv 1 it", "fastalign TVSolver.run", str(fa_threads), t, m,
                    "MFISTA, 10 Chambolle its, 2-D TV", True))
    _log(f"  fastalign TV 1 it: median {np.median(t):.3f} s")

    # --- fastalign FBP -------------------------------------------------------------------
    fbp(b[:, :1], ang)  # compile
    vol_fbp = [None]

    def fa_fbp():
        vol_fbp[0] = fbp(b, ang)

    t, m = measure(fa_fbp, cfg.repeats, cfg.warmup)
    rows.append(Row("recon", "fbp", "fastalign fbp (ramp)", str(fa_threads), t, m,
                    "pyFFTW filter + A.T", True))
    _log(f"  fastalign FBP: median {np.median(t):.3f} s")
    checks = {"fastalign FBP rel. error vs phantom": rel_err(vol_fbp[0], vol)}

    # --- ASTRA ---------------------------------------------------------------------------
    try:
        import astra  # noqa: F401
    except ImportError as exc:
        _log(f"  ASTRA unavailable ({exc}); skipped")
        astra = None
    if astra is not None:
        k = cfg.peer_threads
        probe = _AstraRecon(ang, N, N)
        probe.sino[...] = b[:, 0, :]
        released, stall, call = peers.releases_gil(probe.sirt_one)
        probe.close()
        _log(f"  ASTRA SIRT run releases the GIL: {released} (longest Python stall "
             f"{stall * 1e3:.1f} ms during {call * 1e3:.1f} ms calls)")
        checks["astra_releases_gil"] = released
        pool = _AstraPool(ang, N, N, k)
        try:
            x_as = touched((S, N, N))
            note = f"{k}-thread pool, slice chunks"
            name = f"ASTRA SIRT linear, {k} thr"
            np.copyto(x_as, x_start)

            def as_sirt(n):
                return lambda: pool.sirt(b, x_as, n)

            t1, m1 = measure(as_sirt(1), cfg.repeats, cfg.warmup)
            rows.append(Row("recon", "sirt 1 it", name + " run(1)", str(k), t1, m1, note))
            _log(f"  ASTRA SIRT run(1): median {np.median(t1):.3f} s")
            if cfg.repeats >= 2:
                t4, m4 = measure(as_sirt(4), 2, 0)
                rows.append(Row("recon", "sirt 1 it", name + " run(4)/4", str(k),
                                [v / 4.0 for v in t4], m4, note + "; per iteration"))
                _log(f"  ASTRA SIRT run(4): median {np.median(t4):.3f} s")
            # one ASTRA iteration from x_start vs one fastalign iteration from x_start
            np.copyto(x_as, x_start)
            pool.sirt(b, x_as, 1)
            x_fa = x_start.copy()
            solver.run(b, x_fa, 1, Ax=ax_start)
            checks["SIRT 1 it from the same start: ASTRA vs fastalign rel. diff"] = rel_err(
                x_as, x_fa)

            out_as = touched((S, N, N))
            t, m = measure(lambda: pool.fbp(b, out_as), cfg.repeats, cfg.warmup)
            rows.append(Row("recon", "fbp", f"ASTRA FBP linear, {k} thr", str(k), t, m,
                            note + ", Ram-Lak"))
            _log(f"  ASTRA FBP: median {np.median(t):.3f} s")
            checks["ASTRA FBP rel. error vs phantom"] = rel_err(out_as, vol)
        finally:
            pool.close()
        # single-thread ASTRA SIRT for reference (a few slices, scaled)
        one = _AstraPool(ang, N, N, 1)
        try:
            few = min(S, 4)
            xs = touched((few, N, N))
            bs = np.ascontiguousarray(b[:, :few])
            t, m = measure(lambda: one.sirt(bs, xs, 1), cfg.repeats, cfg.warmup, scale=S / few)
            rows.append(Row("recon", "sirt 1 it", "ASTRA SIRT linear run(1), 1 thr", "1", t, m,
                            f"{few} slices x {S / few:g}"))
        finally:
            one.close()

    # --- scikit-image ----------------------------------------------------------------------
    if cfg.skimage:
        try:
            from skimage.transform import iradon_sart
        except ImportError as exc:
            _log(f"  scikit-image unavailable ({exc}); skipped")
        else:
            sino = np.ascontiguousarray(b[:, 0, :].T.astype(np.float64))  # (n_det, n_angles)
            t, m = measure(lambda: iradon_sart(sino, theta=ang), cfg.repeats, cfg.warmup,
                           scale=S)
            rows.append(Row("recon", "sirt 1 it", "skimage iradon_sart (1 sweep)", "1", t, m,
                            f"1 slice x {S}"))
            _log("  scikit-image done")

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
    cfg = peers.Config(N=args.N, S=args.slices, repeats=args.repeats, warmup=args.warmup,
                       threads=args.threads, peer_threads=args.peer_threads,
                       skimage=not args.no_skimage)
    print(peers._machine_line())
    print(f"N={cfg.N}, S={cfg.S}, {cfg.n_angles} tilts "
          f"({cfg.angles_deg[0]:g}..{cfg.angles_deg[-1]:g} deg), repeats={cfg.repeats}")
    rows = suite(cfg)
    print()
    peers.print_table(rows)
    print(peers._machine_line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
