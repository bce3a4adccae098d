#!/usr/bin/env python
"""Alignment side by side: fastalign autofocus and baselines vs ETSpy, on cases with known shifts.

Standalone (from the repository root)::

    python bench/peers_align.py                 # every case, full size
    python bench/peers_align.py --quick         # small sizes, one repeat, no big cases

or as the ``align`` suite of ``bench/peers.py`` (``python bench/peers.py --suite align``).

Cases (tilt series ``(n_tilts, ny, nx)``, tilt axis along y, DESIGN.md shift convention):

* ``seed``: the seed paper's experiment (``fastalign.simulate.seed_experiment``): binary
  phantom, one slice, 0..178 step 2, ``dx ~ U[-20, 20]``, noise-free;
* ``particles``: a 3-D particle phantom (``phantoms.particles_3d`` in the middle rows),
  -70..70 step 2, ``dx, dy ~ U[-10, 10]``, Gaussian noise 1 % of the data's std;
* ``lamella``: a textured slab wider than the field of view at every tilt
  (``phantoms.thin_film_3d``, projected 1.5x wider, then cropped), -60..60 step 2,
  ``dx ~ U[-3, 3]`` (no y shift: the slab fills every row, so a y shift has no reference);
* ``rotated``: a tilt axis rotated in the image plane, with a centre offset
  (``simulate.rotated_axis_experiment``);
* ``target256`` (full run only) and ``target600`` (opt-in: ``--case target600``): the
  issue-4 time target, a ``(90, N, N)`` particle series, -89..89 step 2,
  ``dx, dy ~ U[-10, 10]``, aligned in x and y.  One timed call per method; fastalign's
  alignment is stopped (``converged=False``, reported) when it runs past ``BIG_BUDGET_S`` =
  240 s, so that the full run stays bounded.

Methods:

* fastalign ``align(recon="sirt")`` and ``align(recon="tv")`` (defaults: automatic
  coarse-to-fine levels, ``max_iter=40``, ``tol=0.002``; ``axes="x"`` where the case has no y
  shift); ``com_shifts`` and ``xcorr_shifts`` (the baselines; shift estimation only);
* ETSpy 1.3 (CPU): ``TomoStack.stack_register`` with ``"PC"`` (phase correlation,
  upsample_factor 3, its default), ``"COM"`` (Sanders' centre of mass + conservation of mass;
  its padding ``p`` (default 20) is reduced to ``round(n / 5) - 1`` where the image is too
  small for the default) and ``"StackReg"`` (pystackreg, translation); ``ProjMatch``
  (projection matching, CPU/ASTRA, one sinogram, x only) with its defaults (FBP, levels
  8, 4, 2, 1) and with the settings of ETSpy's own test (SIRT 50 iterations, levels 4, 2, 1,
  50 iterations, relax 0.2, minstep 0.05); on the rotated case ``tilt_align("CoM")`` after
  ``stack_register("PC")`` (the documented example).
  ETSpy's tilt axis runs along image x: its stack is our data transposed ``(n, nx, ny)``,
  its ``shifts[:, 0]`` (perpendicular to the axis) is our ``-dx`` and ``shifts[:, 1]`` our
  ``-dy`` (ETSpy stores the correction, we the displacement).

Accuracy: RMS error in x and y (pixels) after removing the gauge (``fastalign.gauge_error``);
``n/e`` when the method does not estimate that component on a case that has y shifts, ``-``
for y on the x-only cases (seed, lamella).
Time: median (min/max) wall seconds of up to ``repeats`` calls (fewer once they add up to 30 s);
fastalign's kernels are compiled beforehand on tiny cases, and its first-call (JIT compile)
latency is measured separately in fresh interpreters.
"""
import argparse
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np

_BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
if _BENCH_DIR not in sys.path:
    sys.path.insert(0, _BENCH_DIR)

import _harness  # noqa: E402
from _harness import Row, set_numba_threads  # noqa: E402


def _log(msg):
    print(msg, flush=True)


# ----------------------------------------------------------------------------------------
# Cases
# ----------------------------------------------------------------------------------------

class Skip(Exception):
    """A case or method that cannot run here; the message says why."""


@dataclass
class Case:
    name: str
    data: np.ndarray               # (n_tilts, ny, nx) float32
    angles: np.ndarray             # degrees
    true: np.ndarray               # (n_tilts, 2) (dx, dy)
    axes: str                      # "x" or "xy": what is misaligned
    description: str
    extra: dict = field(default_factory=dict)   # e.g. true axis angle / centre

    @property
    def shape(self):
        return "x".join(str(s) for s in self.data.shape)


def _shifted(ideal, true, rng, noise):
    import fastalign
    data = fastalign.fourier_shift(ideal, true)
    if noise:
        data += rng.normal(0, noise * float(data.std()), data.shape).astype(np.float32)
    return np.ascontiguousarray(data, dtype=np.float32)


def case_seed(mode="full"):
    from fastalign.simulate import seed_experiment
    n, rng_px = {"full": (256, 20), "quick": (128, 20), "tiny": (48, 3)}[mode]
    data, angles, true = seed_experiment(n=n, shift_range=rng_px, seed=0)
    return Case("seed", data, angles, true, "x",
                f"seed experiment: binary phantom {n} px, 0..178 step 2, "
                f"dx~U[-{rng_px},{rng_px}], noise-free")


def particle_volume(ny, n, n_particles, seed):
    """Particles in the middle half of the rows of a ``(ny, n, n)`` volume."""
    from fastalign.phantoms import particles_3d
    vol = np.zeros((ny, n, n), np.float32)
    lo = ny // 4
    vol[lo:ny - lo] = particles_3d((ny - 2 * lo, n, n), n_particles=n_particles, seed=seed)
    return vol


def case_particles(mode="full"):
    import fastalign
    ny, n = {"full": (48, 96), "quick": (48, 64), "tiny": (16, 32)}[mode]
    angles = np.arange(-70.0, 70.0 + 1e-9, 2.0)
    ideal = fastalign.project(particle_volume(ny, n, 12, 3), angles)
    rng = np.random.default_rng(7)
    amp = 2 if mode == "tiny" else 10
    true = rng.uniform(-amp, amp, (angles.size, 2))
    return Case("particles", _shifted(ideal, true, rng, 0.01), angles, true, "xy",
                f"3-D particles, {ny} rows x {n} px, -70..70 step 2, "
                f"dx,dy~U[-{amp},{amp}], 1 % Gaussian noise")


def case_lamella(mode="full"):
    import fastalign
    from fastalign.phantoms import thin_film_3d
    ny, n = {"full": (16, 96), "quick": (16, 64), "tiny": (8, 32)}[mode]
    wide_n = n + n // 2
    angles = np.arange(-60.0, 60.0 + 1e-9, 2.0)
    wide = fastalign.project(thin_film_3d((ny, n, wide_n), seed=2), angles)
    rng = np.random.default_rng(11)
    true = np.zeros((angles.size, 2))
    true[:, 0] = rng.uniform(-3, 3, angles.size)
    shifted = _shifted(wide, true, rng, 0.0)
    lo = (wide_n - n) // 2
    data = np.ascontiguousarray(shifted[:, :, lo:lo + n])
    return Case("lamella", data, angles, true, "x",
                f"lamella wider than the field of view ({wide_n} px slab, {n} px field), "
                "-60..60 step 2, dx~U[-3,3]")


def case_slab(mode="full"):
    from fastalign.simulate import slab_experiment
    fov, t = {"full": (128, 28.0), "quick": (96, 20.0), "tiny": (48, 10.0)}[mode]
    exp = slab_experiment(fov, t, seed=0)
    return Case("slab", exp.data, exp.angles_deg, exp.shifts, "xy",
                f"slab {t:g} px thick, wider than the {fov} px field at every tilt, truncated "
                "in x and y, -60..60 step 2, dx, dy ~ U[-10, 10], Poisson ~1000 counts/px "
                "(simulate.slab_experiment)")


def case_rotated(mode="full"):
    from fastalign.simulate import rotated_axis_experiment
    exp = rotated_axis_experiment()
    extra = {"axis_angle_deg": float(exp.axis_angle_deg),
             "center_offset": float(exp.center_offset)}
    return Case("rotated", np.ascontiguousarray(exp.data, np.float32),
                np.asarray(exp.angles_deg, float), np.asarray(exp.shifts, float), "xy",
                "tilt axis rotated in the image plane + centre offset "
                "(simulate.rotated_axis_experiment defaults)", extra)


def case_target(n):
    def build(mode="full"):
        import fastalign
        angles = np.arange(-89.0, 89.0 + 1e-9, 2.0)
        ideal = fastalign.project(particle_volume(n, n, max(12, n // 6), 5), angles)
        rng = np.random.default_rng(7)
        true = rng.uniform(-10, 10, (angles.size, 2))
        return Case(f"target{n}", _shifted(ideal, true, rng, 0.01), angles, true, "xy",
                    f"time target: 90 x {n} x {n} particles, -89..89 step 2, "
                    "dx,dy~U[-10,10], 1 % noise")
    return build


CASES = {
    "seed": case_seed,
    "particles": case_particles,
    "lamella": case_lamella,
    "slab": case_slab,
    "rotated": case_rotated,
    "target256": case_target(256),
    "target600": case_target(600),
}
BIG_CASES = ("target256", "target600")   # skipped by --quick
DESCRIPTIONS = {}                        # case -> description, filled by run_align
DEFAULT_CASES = ("seed", "particles", "lamella", "slab", "rotated", "target256")  # target600: opt-in
BIG_BUDGET_S = 240.0   # fastalign.align on a big case stops (converged=False) past this


# ----------------------------------------------------------------------------------------
# Methods: fn(case) -> (shifts (n, 2) with NaN where not estimated, info dict)
# ----------------------------------------------------------------------------------------

def _fa_align(recon):
    def run(case):
        import fastalign
        kw = {}
        if case.name == "rotated":
            kw["refine"] = ("shifts", "axis_angle", "center")
        stopped = []
        if case.name in BIG_CASES:
            t0 = time.perf_counter()

            def budget(info):
                if time.perf_counter() - t0 > BIG_BUDGET_S:
                    stopped.append(info["iteration"])
                    raise StopIteration
            kw["callback"] = budget
        r = fastalign.align(case.data, case.angles, recon=recon, axes=case.axes, **kw)
        info = {"iterations": len(r.history), "converged": r.converged,
                "axis_angle_deg": float(r.axis_angle_deg),
                "center_offset": float(r.center_offset)}
        if stopped:
            info["stopped"] = f"time budget {BIG_BUDGET_S:g} s"
        s = np.array(r.shifts, float)
        if case.axes == "x":
            s[:, 1] = 0.0
        return s, info
    return run


def _fa_baseline(name):
    def run(case):
        import fastalign
        fn = fastalign.com_shifts if name == "com" else fastalign.xcorr_shifts
        return np.asarray(fn(case.data, case.angles), float).reshape(-1, 2), {}
    return run


def _etspy_stack(case):
    from etspy.base import TomoStack
    return TomoStack(np.ascontiguousarray(case.data.transpose(0, 2, 1)), tilts=case.angles)


def _etspy_register(method):
    def run(case):
        st = _etspy_stack(case)
        kw = {}
        if method == "StackReg" and case.data.shape[1] < 8:
            raise Skip("StackReg on a 1-row sinogram did not return within 120 s in a trial")
        if method == "COM":
            n_axis = case.data.shape[1]  # ETSpy's x: along the tilt axis
            if n_axis < 10:
                raise Skip(f"COM needs rows along the tilt axis (case has {n_axis})")
            kw["p"] = min(20, round(n_axis / 5) - 1)
        out = st.stack_register(method, show_progressbar=False, **kw)
        sh = np.asarray(out.shifts.data, float)
        return np.stack([-sh[:, 0], -sh[:, 1]], axis=1), ({"p": kw["p"]} if kw else {})
    return run


PROJMATCH_TEST_PARAMS = {"levels": [4, 2, 1], "iterations": 50, "minstep": 5e-2,
                         "relax": 0.2, "recon_algorithm": "SIRT", "recon_iterations": 50}


def _etspy_projmatch(params):
    def run(case):
        from etspy.projmatch.projmatch import ProjMatch
        st = _etspy_stack(case)
        pm = ProjMatch(st, nslice=case.data.shape[1] // 2, params=params)
        pm.calculate_shifts(show_progressbar=False)
        s = np.full((case.data.shape[0], 2), np.nan)
        s[:, 0] = -pm.total_shifts
        if case.axes == "x":
            s[:, 1] = 0.0
        return s, {}
    return run


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _etspy_tilt_align(case):
    if case.name != "rotated":
        raise Skip("tilt_align runs on the rotated case only")
    st = _etspy_stack(case)
    reg = st.stack_register("PC", show_progressbar=False)
    cap = _Capture()
    lg = logging.getLogger("etspy")
    lg.addHandler(cap)
    try:
        reg.tilt_align("CoM")
    finally:
        lg.removeHandler(cap)
    info = {}
    for msg in cap.messages:
        if "tilt-axis rotation" in msg:
            info["axis_angle_deg"] = float(msg.split()[-1])
        if "tilt-axis shift" in msg:
            info["center_offset"] = float(msg.split()[-1])
    sh = np.asarray(reg.shifts.data, float)
    return np.stack([-sh[:, 0], -sh[:, 1]], axis=1), info


_ALL_BUT_600 = ("seed", "particles", "lamella", "slab", "rotated", "target256")
_SMALL = ("seed", "particles", "lamella", "slab", "rotated")   # the costliest methods skip the big


@dataclass
class Method:
    name: str
    fn: object
    config: str
    peer: str = "fastalign"             # package that must be importable
    cases: tuple = ()                   # restrict to these cases (empty: all)
    jit_op: str = ""                    # bench_jit op for the first-call latency


METHODS = [
    Method("fastalign autofocus sirt", _fa_align("sirt"), "align(recon='sirt'), defaults",
           jit_op="align_sirt"),
    Method("fastalign autofocus tv", _fa_align("tv"), "align(recon='tv'), defaults",
           jit_op="align_tv", cases=_SMALL),
    Method("fastalign com", _fa_baseline("com"), "com_shifts (baseline)", jit_op="com"),
    Method("fastalign xcorr", _fa_baseline("xcorr"), "xcorr_shifts (baseline)",
           jit_op="xcorr"),
    Method("ETSpy PC", _etspy_register("PC"), "stack_register('PC'), upsample_factor=3",
           "etspy"),
    Method("ETSpy COM", _etspy_register("COM"), "stack_register('COM'), p=min(20, n/5-1)",
           "etspy"),
    Method("ETSpy StackReg", _etspy_register("StackReg"), "stack_register('StackReg')",
           "etspy", cases=_ALL_BUT_600),
    Method("ETSpy ProjMatch", _etspy_projmatch(None),
           "ProjMatch defaults (FBP, levels 8,4,2,1), middle slice, x only", "etspy",
           cases=("seed", "particles", "lamella", "slab", "target256")),
    Method("ETSpy ProjMatch SIRT", _etspy_projmatch(PROJMATCH_TEST_PARAMS),
           "ProjMatch as in ETSpy's test (SIRT 50, levels 4,2,1), middle slice, x only",
           "etspy", cases=("seed", "particles", "lamella")),
    Method("ETSpy PC + tilt_align CoM", _etspy_tilt_align,
           "stack_register('PC') then tilt_align('CoM')", "etspy", cases=("rotated",)),
]


@dataclass
class AlignRow:
    """One method on one case (``bench/peers.py`` writes these into RESULTS.md)."""

    case: str
    shape: str
    method: str
    config: str
    rms_x: float = math.nan
    rms_y: float = math.nan
    times: list = field(default_factory=list)
    first_call: float = math.nan        # s, fresh interpreter (fastalign: JIT compile)
    peak_rss: float = math.nan          # bytes above the RSS before the call
    status: str = "ok"                  # ok | skipped: reason | failed: error
    info: dict = field(default_factory=dict)

    @property
    def median(self):
        return float(np.median(self.times)) if self.times else math.nan

    @property
    def min(self):
        return float(np.min(self.times)) if self.times else math.nan

    @property
    def max(self):
        return float(np.max(self.times)) if self.times else math.nan


def _available(pkg):
    try:
        __import__(pkg)
        return None
    except Exception as exc:  # noqa: BLE001 - any import failure means "not usable"
        return f"{pkg} not importable ({type(exc).__name__}: {exc})"


TIME_CAP_S = 30.0   # no further repeat once the timed calls of one cell add up to this


def _measure(method, case, repeats):
    """Up to ``repeats`` timed calls, fewer once they add up to ``TIME_CAP_S``; the peak RSS
    growth of the first.  Kernels are compiled beforehand (:func:`_warm_up`), so every call
    is a steady-state call."""
    times = []
    with _harness.PeakRSS() as mem:
        t0 = time.perf_counter()
        est, info = method.fn(case)
        times.append(time.perf_counter() - t0)
    while len(times) < repeats and sum(times) < TIME_CAP_S:
        t0 = time.perf_counter()
        est, info = method.fn(case)
        times.append(time.perf_counter() - t0)
    return est, info, times, mem.delta


def _warm_up(methods):
    """Compile every fastalign kernel the methods use (x-only and x+y paths) on tiny cases,
    untimed, so that no timed call includes JIT compilation."""
    tiny = [CASES["seed"](mode="tiny"), CASES["particles"](mode="tiny")]
    for m in methods:
        if m.peer == "fastalign":
            for c in tiny:
                m.fn(c)


def run_align(cases=None, methods=None, mode="full", repeats=None, first_call=True,
              threads=0, warm_up=True):
    """Run every method on every case; returns a list of :class:`AlignRow` (skips included).

    Parameters
    ----------
    cases, methods : sequence of str, optional
        Names (``CASES`` keys, ``Method.name``); default all (``--quick``: no big cases).
    mode : {"full", "quick", "tiny"}
        Case sizes; ``quick`` and ``tiny`` (the smoke test's) also skip the big cases and
        time one call.
    repeats : int, optional
        Timed calls per method and case (default 3, quick 1; fewer once they add up to
        ``TIME_CAP_S``); big cases get one.  fastalign's kernels are compiled beforehand on
        tiny cases.
    first_call : bool
        Measure fastalign's first-call latency per method in a fresh interpreter.
    warm_up : bool
        Compile fastalign's kernels on tiny cases before the timed calls (off only in the
        smoke test, whose timings do not matter).
    """
    from benchmarks.bench_jit import first_call_latency
    set_numba_threads(threads)
    import fastalign
    quick = mode != "full"
    names = list(cases) if cases else [c for c in DEFAULT_CASES
                                       if not (quick and c in BIG_CASES)]
    sel = [m for m in METHODS if not methods or m.name in methods]
    reps = repeats if repeats is not None else (1 if quick else 3)
    jit = {}
    if first_call:
        for m in sel:
            if m.jit_op and m.jit_op not in jit:
                try:
                    jit[m.jit_op] = first_call_latency(ops=(m.jit_op,))[m.jit_op + "_first"]
                except Exception as exc:  # noqa: BLE001 - report, do not abort the suite
                    _log(f"  first-call latency of {m.jit_op} failed: {exc}")
    rows = []
    if warm_up:
        _warm_up(sel)
    for cname in names:
        try:
            case = CASES[cname](mode=mode)
        except Skip as exc:
            _log(f"[align] case {cname}: skipped ({exc})")
            DESCRIPTIONS[cname] = f"skipped: {exc}"
            for m in sel:
                rows.append(AlignRow(cname, "-", m.name, m.config, status=f"skipped: {exc}"))
            continue
        _log(f"[align] case {cname} {case.shape}: {case.description}")
        DESCRIPTIONS[cname] = case.description
        for m in sel:
            row = AlignRow(cname, case.shape, m.name, m.config,
                           first_call=jit.get(m.jit_op, math.nan))
            rows.append(row)
            if m.cases and cname not in m.cases:
                row.status = "skipped: not run on this case (" + (
                    "cost" if cname in BIG_CASES else "not applicable") + ")"
                continue
            why = _available(m.peer)
            if why:
                row.status = f"skipped: {why}"
                continue
            try:
                est, info, times, mem = _measure(m, case, 1 if cname in BIG_CASES else reps)
            except Skip as exc:
                row.status = f"skipped: {exc}"
                continue
            except Exception as exc:  # noqa: BLE001 - a peer failing is a result
                row.status = f"failed: {type(exc).__name__}: {str(exc)[:120]}"
                _log(f"  {m.name}: {row.status}")
                continue
            row.times, row.peak_rss, row.info = times, mem, info
            ex, ey = fastalign.gauge_error(np.nan_to_num(est), case.true, case.angles)
            row.rms_x = ex if np.all(np.isfinite(est[:, 0])) else math.nan
            row.rms_y = ey if np.all(np.isfinite(est[:, 1])) else math.nan
            if case.axes == "x":
                row.rms_y = None  # no y misalignment in this case: y not scored
            for k, v in case.extra.items():
                row.info["true_" + k] = v
            _log(f"  {m.name:<28} rms x {fmt_rms(row.rms_x, row, 0):>7} "
                 f"y {fmt_rms(row.rms_y, row, 1):>7} px, median {row.median:7.2f} s")
    return rows


def fmt_rms(v, row, axis):
    if row.status != "ok" or v is None:
        return "-"
    if math.isnan(v):
        return "n/e"
    return f"{v:.3f}" if v < 10 else f"{v:.1f}"


def print_align_table(rows):
    head = (f"{'case':<10} {'method':<28} {'rms x':>7} {'rms y':>7} {'median s':>9} "
            f"{'min':>7} {'max':>7} {'1st call':>8}  status")
    print(head)
    print("-" * len(head))
    for r in rows:
        fc = f"{r.first_call:8.1f}" if np.isfinite(r.first_call) else f"{'-':>8}"
        t = (f"{r.median:9.2f} {r.min:7.2f} {r.max:7.2f}" if r.times
             else f"{'-':>9} {'-':>7} {'-':>7}")
        print(f"{r.case:<10} {r.method:<28} {fmt_rms(r.rms_x, r, 0):>7} "
              f"{fmt_rms(r.rms_y, r, 1):>7} {t} {fc}  {r.status}")


def suite(cfg):
    """The ``align`` suite of ``bench/peers.py``: returns ``_harness.Row`` objects (time only)
    and keeps the full :class:`AlignRow` list in ``suite.last_rows`` for the report."""
    quick = getattr(cfg, "quick", False)
    rows = run_align(mode="quick" if quick else "full", threads=cfg.threads,
                     repeats=1 if quick else max(1, min(cfg.repeats, 3)))
    suite.last_rows = rows
    print()
    print_align_table(rows)
    out = []
    for r in rows:
        if r.status == "ok":
            out.append(Row(suite="align", op=r.case, method=r.method, threads="-",
                           times=r.times, peak_rss=r.peak_rss,
                           note=f"rms x {fmt_rms(r.rms_x, r, 0)} y "
                                f"{fmt_rms(r.rms_y, r, 1)} px",
                           baseline=r.method == "fastalign autofocus sirt"))
    return out


suite.last_rows = []


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes, no big cases")
    p.add_argument("--case", action="append", choices=list(CASES), help="repeatable")
    p.add_argument("--method", action="append", help="repeatable, exact method name")
    p.add_argument("--repeats", type=int, help="timed calls (3; quick 1)")
    p.add_argument("--no-first-call", action="store_true",
                   help="skip the fresh-interpreter first-call measurements")
    p.add_argument("--threads", type=int, default=0, help="fastalign threads (0 = all)")
    args = p.parse_args(argv)
    print(_harness.machine_line())
    rows = run_align(args.case, args.method, mode="quick" if args.quick else "full",
                     repeats=args.repeats,
                     first_call=not args.no_first_call, threads=args.threads)
    print()
    print_align_table(rows)
    return 0


if __name__ == "__main__":
    sys.modules.setdefault("peers_align", sys.modules[__name__])
    sys.exit(main())
