#!/usr/bin/env python
"""Scaling of the projector pair: cost vs slice size N, number of tilts A, slices S, threads.

Used as the ``scaling`` suite of ``bench/peers.py``; standalone::

    python bench/peers_scaling.py [--quick]

Each point times one forward projection ``A(x, out=)`` plus one backprojection
``A.T(y, out=)`` (the cost of one SIRT iteration without the weights) of fastalign, and of
ASTRA's CPU ``linear`` projector slice by slice on a 2-thread pool (the N, A and S sweeps), on
the same phantom; median of ``repeats`` calls after one untimed call.  One PNG per sweep goes
to ``bench/figures/``.
"""
import argparse
import math
import os
import sys

import numpy as np

_BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
if _BENCH_DIR not in sys.path:
    sys.path.insert(0, _BENCH_DIR)

import _astra  # noqa: E402
from _harness import Row, measure, phantom_volume, set_numba_threads  # noqa: E402
from benchmarks._util import touched  # noqa: E402

FIG_DIR = os.path.join(_BENCH_DIR, "figures")

FULL = dict(N=([256, 512, 1024], 16, 90), A=(512, 16, [30, 60, 90, 180]),
            S=(512, [1, 4, 16, 64], 90), threads=(512, 32, 90, [1, 2]))
QUICK = dict(N=([64, 128, 256], 4, 90), A=(128, 4, [30, 90]),
             S=(128, [1, 4, 16], 90), threads=(128, 16, 90, [1, 2]))


def _angles(na):
    return np.linspace(0.0, 180.0, na, endpoint=False)


def _point(N, S, na, threads, repeats, astra_ok, peer_threads):
    """Seconds (median) for fastalign and ASTRA at one point; ASTRA is NaN if unavailable."""
    import fastalign
    set_numba_threads(threads)
    ang = _angles(na)
    vol = phantom_volume(S, N, 0)
    A = fastalign.Projector(ang, (S, N, N))
    ts, back = touched(A.range_shape), touched(A.domain_shape)

    def fa():
        A(vol, out=ts)
        A.T(ts, out=back)

    t, mem, _ = measure(fa, repeats, 1)
    res = {"fastalign": float(np.median(t)), "fastalign_min": float(np.min(t)),
           "fastalign_max": float(np.max(t)), "fastalign_rss": mem}
    if astra_ok:
        runner = _astra.AstraThreads(ang, N, N, peer_threads)
        ts2, back2 = touched(A.range_shape), touched(A.domain_shape)
        try:
            def ast():
                runner.forward(vol, ts2)
                runner.back(ts2, back2)
            t, mem, _ = measure(ast, repeats, 1)
        finally:
            runner.close()
        res.update({"astra": float(np.median(t)), "astra_min": float(np.min(t)),
                    "astra_max": float(np.max(t)), "astra_rss": mem})
    return res


def run_scaling(quick=False, repeats=3, peer_threads=2, threads=0, spec=None):
    """Returns ``{sweep: {"x": [...], "label": str, "fixed": str, "points": [dict]}}``.

    ``spec`` overrides the sizes (same layout as ``FULL``/``QUICK``; the smoke test's).
    """
    spec = spec or (QUICK if quick else FULL)
    try:
        import astra  # noqa: F401
        astra_ok = True
    except ImportError:
        astra_ok = False
    full_threads = set_numba_threads(threads)
    out = {}
    Ns, S, na = spec["N"]
    out["N"] = dict(x=Ns, label="slice size N (N x N, N bins)", fixed=f"S={S}, A={na}",
                    points=[_point(n, S, na, full_threads, repeats, astra_ok, peer_threads)
                            for n in Ns])
    N, S, nas = spec["A"]
    out["A"] = dict(x=nas, label="number of tilts A", fixed=f"N={N}, S={S}",
                    points=[_point(N, S, a, full_threads, repeats, astra_ok, peer_threads)
                            for a in nas])
    N, Ss, na = spec["S"]
    out["S"] = dict(x=Ss, label="number of slices S", fixed=f"N={N}, A={na}",
                    points=[_point(N, s, na, full_threads, repeats, astra_ok, peer_threads)
                            for s in Ss])
    N, S, na, ths = spec["threads"]
    ths = [t for t in ths if t <= full_threads] or [1]
    out["threads"] = dict(x=ths, label="fastalign (Numba) threads", fixed=f"N={N}, S={S}, "
                          f"A={na}", points=[_point(N, S, na, t, repeats, False, peer_threads)
                                             for t in ths])
    set_numba_threads(threads)
    for sweep in out.values():
        sweep["astra"] = astra_ok and sweep is not out["threads"]
        sweep["astra_threads"] = peer_threads
    return out


def plot_scaling(result, fig_dir=FIG_DIR):
    """One log-log PNG per sweep; returns the file paths."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    os.makedirs(fig_dir, exist_ok=True)
    paths = []
    for key, sw in result.items():
        fig, ax = plt.subplots(figsize=(4.5, 3.4), dpi=110)
        x = np.asarray(sw["x"], float)
        for name, style in (("fastalign", "o-"), ("astra", "s--")):
            if name == "astra" and not sw.get("astra"):
                continue
            y = np.array([p[name] for p in sw["points"]])
            lo = np.array([p[name + "_min"] for p in sw["points"]])
            hi = np.array([p[name + "_max"] for p in sw["points"]])
            label = "fastalign" if name == "fastalign" else \
                f"ASTRA linear, {sw['astra_threads']}-thread pool"
            ax.errorbar(x, y, yerr=[y - lo, hi - y], fmt=style, capsize=3, label=label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(x)
        ax.set_xticklabels([f"{v:g}" for v in x])
        ax.set_xlabel(sw["label"])
        ax.set_ylabel("forward + back, s")
        ax.set_title(f"cost vs {key} ({sw['fixed']})", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = os.path.join(fig_dir, f"scaling_{key}.png")
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths


def scaling_markdown(result, rel_to):
    """Markdown tables (one per sweep) with a link to each figure (relative to ``rel_to``)."""
    lines = []
    for key, sw in result.items():
        lines.append(f"#### Cost vs {sw['label']} ({sw['fixed']})")
        lines.append("")
        has_astra = sw.get("astra")
        head = "| " + key + " | fastalign s (min-max) | "
        head += (f"ASTRA {sw['astra_threads']}-thr s (min-max) | ASTRA / fastalign |"
                 if has_astra else "speed-up vs first |")
        lines.append(head)
        lines.append("|" + "---|" * (4 if has_astra else 3))
        base = sw["points"][0]["fastalign"]
        for x, p in zip(sw["x"], sw["points"]):
            row = (f"| {x} | {p['fastalign']:.4f} ({p['fastalign_min']:.4f}-"
                   f"{p['fastalign_max']:.4f}) | ")
            if has_astra:
                row += (f"{p['astra']:.4f} ({p['astra_min']:.4f}-{p['astra_max']:.4f}) | "
                        f"{p['astra'] / p['fastalign']:.2f} |")
            else:
                row += f"{base / p['fastalign']:.2f} |"
            lines.append(row)
        rel = os.path.relpath(os.path.join(FIG_DIR, f"scaling_{key}.png"), rel_to)
        lines += ["", f"![cost vs {key}]({rel})", ""]
    return "\n".join(lines)


def suite(cfg):
    """The ``scaling`` suite of ``bench/peers.py``."""
    quick = getattr(cfg, "quick", False)
    res = run_scaling(quick=quick, repeats=max(1, min(cfg.repeats, 3)),
                      peer_threads=cfg.peer_threads, threads=cfg.threads)
    suite.last_result = res
    suite.figures = plot_scaling(res)
    rows = []
    for key, sw in res.items():
        for x, p in zip(sw["x"], sw["points"]):
            op = f"{key}={x}"
            rows.append(Row("scaling", op, "fastalign fwd+back", str(cfg.threads or "all"),
                            [p["fastalign"]], p["fastalign_rss"], math.nan, sw["fixed"],
                            True))
            if "astra" in p:
                rows.append(Row("scaling", op, f"ASTRA fwd+back, {cfg.peer_threads} thr",
                                str(cfg.peer_threads), [p["astra"]], p["astra_rss"],
                                math.nan, sw["fixed"]))
    return rows


suite.last_result = None
suite.figures = []


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    res = run_scaling(quick=args.quick, repeats=args.repeats)
    print(scaling_markdown(res, _BENCH_DIR))
    print("\n".join(plot_scaling(res)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
