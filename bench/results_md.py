"""Write ``bench/RESULTS.md`` from one ``bench/peers.py`` run (no measurements in here)."""
import math
import os

import numpy as np

import peers_align
import peers_scaling

CONFIG_NOTES = [
    "**fastalign**: Numba kernels, all cores (`NUMBA_NUM_THREADS`), plus 1-thread rows; "
    "solvers built once and warm-started as in the alignment loop; every method gets one "
    "untimed warm-up call (JIT compile) before the timed calls, first-call (compile) latency "
    "is measured separately in fresh interpreters with the on-disk cache off.",
    "**ASTRA** (CPU): 2-D `linear` (Joseph) projector applied slice by slice, on a pool of "
    "{peer_threads} Python threads (ASTRA releases the GIL; auto-detected, else processes), "
    "each thread owning its ASTRA objects and a contiguous chunk of slices; also one thread. "
    "SIRT: `algorithm.run(SIRT, 1)` per slice, warm-started; FBP: Ram-Lak.",
    "**scikit-image**: `radon` / `iradon(filter_name=None)` / `iradon_sart` on one slice "
    "(single-threaded by design), time scaled by the number of slices.",
    "**ETSpy** 1.3 (CPU): `TomoStack.stack_register('PC' | 'COM' | 'StackReg')` with its "
    "documented defaults (PC upsample_factor 3; COM padding p=20 reduced to n/5-1 on small "
    "images), `ProjMatch` (projection matching via ASTRA, one sinogram, x only) with its "
    "defaults and with the settings of ETSpy's own test, and `tilt_align('CoM')` after "
    "`stack_register('PC')` on the rotated-axis case (ETSpy's documented example).  The "
    "stack is our data transposed (ETSpy's tilt axis is along image x).  ProjMatch aligns "
    "x on the middle sinogram only: where the case also has y shifts (particles, targets), "
    "that row shows a different part of the object in every tilt, so its x estimate is not "
    "expected to hold there; it is reported as measured.",
    "**svmbir**: installed but not benchmarked (model-based iterative reconstruction: no "
    "workload here matches it yet).",
]


def _mib(v):
    return f"{v / 2**20:.1f}" if v is not None and np.isfinite(v) else "-"


def _s(v):
    if v is None or not np.isfinite(v):
        return "-"
    return f"{v:.4f}" if v < 1 else f"{v:.3f}" if v < 10 else f"{v:.1f}"


def _time_tables(rows, suite):
    sel = [r for r in rows if r.suite == suite]
    if not sel:
        return []
    out = []
    for op in dict.fromkeys(r.op for r in sel):
        ops = [r for r in sel if r.op == op]
        fastest = min(r.median for r in ops)
        base = [r for r in ops if r.baseline]
        out += [f"**{suite}: {op}**", "",
                "| method | threads | median s | min s | max s | x fastest | x fastalign | "
                "peak dRSS MiB | cpu/wall | note |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in ops:
            xf = f"{r.median / base[0].median:.2f}" if base else "-"
            cpu = f"{r.cpu_per_wall:.2f}" if np.isfinite(r.cpu_per_wall) else "-"
            out.append(f"| {r.method} | {r.threads} | {_s(r.median)} | {_s(r.min)} | "
                       f"{_s(r.max)} | {r.median / fastest:.2f} | {xf} | {_mib(r.peak_rss)} | "
                       f"{cpu} | {r.note} |")
        out.append("")
    return out


def _rms(v, r):
    if r.status != "ok" or v is None:
        return "-"
    if isinstance(v, float) and math.isnan(v):
        return "n/e"
    return f"{v:.3f}" if v < 10 else f"{v:.1f}"


def align_tables(arows):
    """Markdown tables, one per case, from ``peers_align.AlignRow`` objects."""
    out = []
    for case in dict.fromkeys(r.case for r in arows):
        rs = [r for r in arows if r.case == case]
        out += [f"#### {case} ({rs[0].shape})", "",
                "| method | rms x px | rms y px | median s | min s | max s | first call s | "
                "peak dRSS MiB | status / notes |", "|---|---|---|---|---|---|---|---|---|"]
        for r in rs:
            t = (f"{_s(r.median)} | {_s(r.min)} | {_s(r.max)}" if r.times else "- | - | -")
            info = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                             for k, v in r.info.items())
            note = r.status if r.status != "ok" else (info or "ok")
            out.append(f"| {r.method} | {_rms(r.rms_x, r)} | {_rms(r.rms_y, r)} | {t} | "
                       f"{_s(r.first_call)} | {_mib(r.peak_rss)} | {note} |")
        out.append("")
    return out


def _targets(arows):
    out = []
    for case, goal_s in (("target256", 20.0), ("target600", 60.0)):
        for r in arows:
            if r.case == case and r.method == "fastalign autofocus sirt" and r.status == "ok":
                acc = max(r.rms_x, r.rms_y)
                out.append(f"- {case} ({r.shape}): fastalign SIRT autofocus {r.median:.1f} s "
                           f"(goal <= {goal_s:g} s: {'met' if r.median <= goal_s else 'NOT met'}"
                           f"), accuracy {acc:.3f} px (goal <= 0.05 px: "
                           f"{'met' if acc <= 0.05 else 'NOT met'}); first-call JIT "
                           f"{_s(r.first_call)} s, measured separately.")
        if not any(r.case == case and r.status == "ok" for r in arows):
            out.append(f"- {case}: not run in this run (`--quick` skips the big cases).")
    return out


def write(path, *, cfg, rows, suite_log, machine_before, machine_after, started, wall_s,
          command):
    """Write the Markdown report to ``path`` (atomically: temporary file + rename)."""
    L = ["# fastalign benchmark results", ""]
    if cfg.quick:
        L += ["> **QUICK SMOKE RUN** (`--quick`: small sizes, few repeats, big cases skipped)."
              " These numbers check that the benchmark code runs; they are not the published"
              " results.", ""]
    L += [f"Generated by `{command}` on {started}, wall time {wall_s / 60:.1f} min.",
          "Regenerate with `python bench/peers.py` from the repository root (full run, "
          "budgeted for <= 25 min on a quiet 2-core machine), or "
          "`python bench/peers.py --quick` for a smoke run.", "",
          "## Machine", "", "| | |", "|---|---|"]
    for k in ("cpu", "cores", "ram", "os", "python", "numba threads", "host"):
        L.append(f"| {k} | {machine_before.get(k, '-')} |")
    L.append(f"| load before / after | {machine_before['load']} / {machine_after['load']} |")
    L += ["", "Package versions: " + ", ".join(
        f"{k} {v}" for k, v in machine_before["packages"].items()), "",
        f"Workload: N={cfg.N} (slices N x N, N detector bins), S={cfg.S} slices, "
        f"{cfg.n_angles} tilts ({cfg.angles_deg[0]:g}..{cfg.angles_deg[-1]:g} step "
        f"{cfg.angles_deg[1] - cfg.angles_deg[0]:g}), {cfg.repeats} timed repeats after "
        f"{cfg.warmup} warm-up call(s).  Times are wall seconds; `x fastest` is the median "
        "over the fastest method's median for the same operation, `x fastalign` over "
        "fastalign's (so > 1 means fastalign is faster); `peak dRSS` is the growth of the "
        "process's peak resident set during the timed calls (kernel high-water mark reset "
        "before them); `cpu/wall` the cores this process kept busy.", "",
        "## How each method was configured", ""]
    L += ["- " + n.format(peer_threads=cfg.peer_threads) for n in CONFIG_NOTES]
    pkgs = machine_before["packages"]
    missing = [k for k, v in pkgs.items() if v == "not installed"]
    L += ["", "Peers not installed (their rows say skipped): "
          + (", ".join(missing) if missing else "none") + ".", "",
          "Suites: " + "; ".join(f"{k}: {v}" for k, v in suite_log.items()), ""]
    for suite, title in (("projector", "Projector and backprojector"),
                         ("recon", "Reconstruction (SIRT, TV, FBP)")):
        body = _time_tables(rows, suite)
        if body:
            L += [f"## {title}", ""] + body
    arows = getattr(peers_align.suite, "last_rows", [])
    if arows:
        L += ["## Alignment (accuracy after gauge removal, time)", "",
              "RMS error in pixels of the estimated shifts after removing the gauge "
              "(`fastalign.gauge_error`: sinusoid from x, mean from y); `n/e`: component not "
              "estimated by the method; `-` in y: x-only case.  Time: median (min/max) of up "
              "to 3 timed calls (quick: 1; fewer once they add up to 30 s; big cases: 1), "
              "fastalign's kernels compiled beforehand on tiny cases; first call: "
              "fastalign's first call in a fresh interpreter (JIT compile, small problem), "
              "`-` for peers without JIT.", ""]
        for c, desc in peers_align.DESCRIPTIONS.items():
            L.append(f"- `{c}`: {desc}")
        L += [""] + align_tables(arows) + ["### Time targets (issue 4)", ""] + \
            _targets(arows) + [""]
    res = getattr(peers_scaling.suite, "last_result", None)
    if res:
        L += ["## Scaling (forward + back projection)", "",
              peers_scaling.scaling_markdown(res, os.path.dirname(os.path.abspath(path)))]
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(L).rstrip() + "\n")
    os.replace(tmp, path)
