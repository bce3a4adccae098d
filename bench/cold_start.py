"""Whole-process cold start: what a new Python process pays before its first alignment finishes.

Usage::

    python bench/cold_start.py [--repeat 3] [--n 128] [--max-iter 5] [--threads N]

Each run is a new interpreter that imports fastalign, aligns the seed experiment
(``simulate.seed_experiment(n)``, 0..178 deg step 2, dx ~ U[-20, 20]) once with SIRT and once
with TV -- the first calls, which include compiling or loading every kernel they use -- and then
repeats both (steady state).  Three modes:

* ``cold``: the JIT cache on (the default) and empty: the first process ever;
* ``warm``: the JIT cache on, filled by an earlier process: every later process;
* ``off``: ``FASTALIGN_CACHE=0``: compile in every process.

The table gives medians over ``--repeat`` processes per mode: the process's wall and CPU time
(user + sys), then, in CPU seconds of the child (``time.process_time``; robust on a shared
machine, and compiling is single-threaded), the import, the two first calls, the two steady
calls, and the JIT share (first calls minus steady calls: compiling or loading code), plus the
kernels loaded from / written to the cache.  The last line says whether all processes of all
modes gave byte-identical shifts and volumes.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

_CHILD = r"""
import hashlib, json, sys, time
t0 = time.process_time()
import numpy as np
import fastalign
t_import = time.process_time() - t0
from fastalign import _config
from fastalign.simulate import seed_experiment

n, max_iter = int(sys.argv[1]), int(sys.argv[2])
exp = seed_experiment(n=n, step_deg=2, shift_range=20, seed=0)
digest = hashlib.sha256()
times = {}
for phase in ("first", "steady"):
    for recon in ("sirt", "tv"):
        t = time.process_time()
        res = fastalign.align(exp.data, exp.angles_deg, recon=recon, max_iter=max_iter)
        times[f"{phase}_{recon}"] = time.process_time() - t
        if phase == "first":
            digest.update(res.shifts.tobytes())
            digest.update(res.volume.tobytes())

import importlib, pkgutil
from numba.core.dispatcher import Dispatcher
import fastalign.kernels as K
hits = misses = 0
for m in pkgutil.iter_modules(K.__path__):
    mod = importlib.import_module("fastalign.kernels." + m.name)
    for obj in vars(mod).values():
        if isinstance(obj, Dispatcher) and obj.py_func.__module__ == mod.__name__:
            hits += sum(obj.stats.cache_hits.values())
            misses += sum(obj.stats.cache_misses.values())
print("COLD_START_JSON " + json.dumps(dict(
    times, import_s=t_import, digest=digest.hexdigest(), cache_hits=hits,
    cache_misses=misses, cache=_config.CACHE, layer=_config.THREADING_LAYER)))
"""


def run_process(env_extra, n, max_iter):
    """One child process; its measurements and its whole-process wall time."""
    env = {k: v for k, v in os.environ.items() if k not in ("FASTALIGN_CACHE", "NUMBA_CACHE_DIR")}
    env.update(env_extra)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(n), str(max_iter)], env=env,
                          capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("COLD_START_JSON ")][-1]
    out = json.loads(line[len("COLD_START_JSON "):])
    out["process_s"] = wall
    out["process_cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return out


def measure(repeat, n, max_iter, threads=None):
    """``{mode: [run, ...]}`` with ``repeat`` processes per mode."""
    runs = {"cold": [], "warm": [], "off": []}
    env = {"NUMBA_NUM_THREADS": str(threads)} if threads else {}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeat):
            cache = os.path.join(tmp, f"cache{i}")     # a new, empty cache per cold run
            runs["cold"].append(run_process(dict(env, XDG_CACHE_HOME=cache), n, max_iter))
            runs["warm"].append(run_process(dict(env, XDG_CACHE_HOME=cache), n, max_iter))
            runs["off"].append(run_process(dict(env, FASTALIGN_CACHE="0"), n, max_iter))
    return runs


def table(runs):
    cols = [("process wall s", lambda r: r["process_s"]),
            ("process CPU s", lambda r: r["process_cpu_s"]),
            ("import", lambda r: r["import_s"]),
            ("first sirt", lambda r: r["first_sirt"]), ("first tv", lambda r: r["first_tv"]),
            ("steady sirt", lambda r: r["steady_sirt"]), ("steady tv", lambda r: r["steady_tv"]),
            ("JIT", lambda r: r["first_sirt"] + r["first_tv"] - r["steady_sirt"]
             - r["steady_tv"])]
    lines = ["| mode | " + " | ".join(c for c, _ in cols) + " | cache hits / misses |",
             "| --- " * (len(cols) + 2) + "|"]
    for mode, rs in runs.items():
        med = [f"{statistics.median(f(r) for r in rs):.2f}" for _, f in cols]
        hm = f"{rs[0]['cache_hits']} / {rs[0]['cache_misses']}"
        lines.append(f"| {mode} | " + " | ".join(med) + f" | {hm} |")
    digests = {r["digest"] for rs in runs.values() for r in rs}
    lines.append("")
    lines.append(f"threading layer {runs['cold'][0]['layer']}; "
                 f"{sum(len(rs) for rs in runs.values())} processes, results "
                 + ("byte-identical in every mode" if len(digests) == 1
                    else f"DIFFER ({len(digests)} distinct)"))
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="processes per mode (default 3)")
    ap.add_argument("--n", type=int, default=128, help="phantom / detector size (default 128)")
    ap.add_argument("--max-iter", type=int, default=5, help="alignment iterations (default 5)")
    ap.add_argument("--threads", type=int, help="NUMBA_NUM_THREADS of the processes")
    ap.add_argument("--json", help="also write the raw runs to this file")
    args = ap.parse_args(argv)
    runs = measure(args.repeat, args.n, args.max_iter, args.threads)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(runs, f, indent=1)
    print(table(runs))


if __name__ == "__main__":
    main()
