"""Measured peak memory of ``fastalign align`` against the model of :mod:`fastalign.memory`.

1. The synthetic series (Gaussian blobs projected analytically, random shifts of a few
   pixels) are written as ``ts.mrc`` + ``ts.rawtlt`` (in this process);
2. every size is measured in a fresh interpreter (``--child``) that runs ``fastalign align``
   once on a tiny series (imports everything and compiles the kernels), gives the C heap's
   free memory back (``malloc_trim``): the *baseline* is the resident memory of this idle,
   compiled process;
3. then runs ``fastalign align`` (the CLI's ``main``, in process) on the size, resetting the
   kernel's peak-RSS counter (``/proc/self/clear_refs`` = 5, Linux) and reading ``VmHWM`` at
   the phase boundaries: ``read`` (loading the input), the steps before the levels
   (``intensity``, ``bad tilts``, ``orientation``, ``start``; ``<step> (before)`` is what
   ran since the previous mark), ``levels`` (the loop), ``loop`` (what follows it),
   ``final`` (:meth:`LocalExecutor.finish`: aligned stack and final reconstruction, streamed
   into the ``.rec``), ``outputs`` (figures and writing).

The measured number compared with the model is the **peak increment**: the largest
``VmHWM`` of the run minus the baseline.  Usage::

    PYTHONPATH=$PWD python bench/memory_model.py 61x256x256 90x512x512
    PYTHONPATH=$PWD python bench/memory_model.py 90x512x512 --recon tv -- --nz 200
    PYTHONPATH=$PWD python bench/memory_model.py 61x256x256 --root /tmp/old  # an export

(options after ``--`` go to ``fastalign align``).  Prints per size the peak increment and
the absolute peak as multiples of the input, the CLI's estimate, this checkout's model and
its ratio to the measured increment, and the phases; ``--json`` prints the records instead.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

WARM_SHAPE = (41, 128, 128)


def blob_series(n, ny, nx, *, seed=0, n_blobs=40, max_shift=3.0):
    """``(data float32 (n, ny, nx), angles)``: Gaussian blobs inside the reconstruction
    circle projected analytically at -60..60 degrees, each image shifted by U[-s, s] px."""
    rng = np.random.default_rng(seed)
    angles = np.linspace(-60.0, 60.0, n)
    r = 0.3 * nx * np.sqrt(rng.uniform(0, 1, n_blobs))
    phi = rng.uniform(0, 2 * np.pi, n_blobs)
    bx, bz = r * np.cos(phi), r * np.sin(phi)
    by = rng.uniform(0.2, 0.8, n_blobs) * ny - 0.5 * ny
    sig = rng.uniform(0.01, 0.03, n_blobs) * nx
    amp = rng.uniform(0.5, 2.0, n_blobs)
    shifts = rng.uniform(-max_shift, max_shift, (n, 2))
    u = np.arange(nx, dtype=np.float32) - 0.5 * (nx - 1)
    y = np.arange(ny, dtype=np.float32) - 0.5 * (ny - 1)
    data = np.zeros((n, ny, nx), np.float32)
    th = np.deg2rad(angles)
    for i in range(n):
        cu = bx * np.cos(th[i]) + bz * np.sin(th[i]) + shifts[i, 0]
        cy = by + shifts[i, 1]
        for k in range(n_blobs):
            gu = np.exp(-0.5 * ((u - cu[k]) / sig[k]) ** 2)
            gy = np.exp(-0.5 * ((y - cy[k]) / sig[k]) ** 2)
            data[i] += np.float32(amp[k] * sig[k]) * np.outer(gy, gu).astype(np.float32)
    return data, angles


def write_series(directory, shape, seed=0):
    """Write ``ts.mrc`` + ``ts.rawtlt`` of :func:`blob_series` into ``directory``."""
    import mrcfile
    os.makedirs(directory, exist_ok=True)
    data, angles = blob_series(*shape, seed=seed)
    path = os.path.join(directory, "ts.mrc")
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(data)
    np.savetxt(os.path.join(directory, "ts.rawtlt"), angles, fmt="%.4f")
    return path


def _status(key):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not in /proc/self/status")  # pragma: no cover


def _reset_peak():
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


class _Phases:
    """Peak RSS per phase: ``mark(name)`` closes the phase running since the last mark."""

    def __init__(self):
        self.peaks = {}
        _reset_peak()

    def mark(self, name):
        self.peaks[name] = max(self.peaks.get(name, 0), _status("VmHWM"))
        _reset_peak()
        import tracemalloc
        if tracemalloc.is_tracing():   # Python/NumPy allocations only (not Numba's, FFTW's)
            self.traced[name] = max(self.traced.get(name, 0),
                                    tracemalloc.get_traced_memory()[1] - self.traced_base)
            tracemalloc.reset_peak()


def _instrument(phases):
    """Wrap the CLI's load, the executor's ``finish`` and ``fastalign.align`` with marks."""
    import fastalign
    from fastalign.align import executor
    from fastalign.cli import align as cli_align

    load, finish, align = cli_align.load_input, executor.LocalExecutor.finish, fastalign.align

    def load_input(*a, **k):
        out = load(*a, **k)
        phases.mark("read")
        return out

    def finish_marked(self, *a, **k):
        phases.mark("loop")
        out = finish(self, *a, **k)
        phases.mark("final")
        return out

    def align_marked(*a, **k):
        out = align(*a, **k)
        phases.mark("final")     # the end of align (result assembly) counts as final
        return out

    cli_align.load_input = load_input
    executor.LocalExecutor.finish = finish_marked
    fastalign.align = align_marked
    # the steps before the levels, each its own phase (the rest of the loop phase is the
    # levels): the name marks the end of the step, "<name> (before)" what ran since the last
    from fastalign.align import autofocus, loop
    for module, attr, name in ((autofocus, "intensity_model", "intensity"),
                               (autofocus, "choose_tilts", "bad tilts"),
                               (autofocus, "orient_data", "orientation"),
                               (autofocus, "initial_total", "start"),
                               (loop, "run_levels", "levels")):
        setattr(module, attr, _marked(getattr(module, attr), phases, name))


def _marked(func, phases, name):
    def wrapped(*a, **k):
        phases.mark(f"{name} (before)")
        out = func(*a, **k)
        phases.mark(name)
        return out
    return wrapped


def _trim():
    """Collect garbage and give the C heap's free memory back (glibc ``malloc_trim``), so
    that the resident size counts live memory only."""
    import ctypes
    import gc
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # pragma: no cover - not glibc
        pass


def child(spec):
    """Measure the runs of ``spec`` (see module docstring); returns a list of records."""
    from fastalign.cli import main

    if spec.get("no_fft_cache"):
        import pyfftw.interfaces.cache
        pyfftw.interfaces.cache.disable()
    extra = list(spec.get("args", []))
    if main(["align", spec["warm"], "-q", "--overwrite"] + extra) != 0:
        raise RuntimeError("warm-up run failed")
    phases = _Phases()
    _instrument(phases)
    records = []
    for shape, path in zip(spec["shapes"], spec["paths"]):
        if spec.get("trace"):
            import tracemalloc
            tracemalloc.start()
            phases.traced_base = tracemalloc.get_traced_memory()[0]
        _trim()
        base = _status("VmRSS")
        phases.peaks, phases.traced = {}, {}
        _reset_peak()
        if main(["align", path, "-q", "--overwrite"] + extra) != 0:
            raise RuntimeError(f"run on {shape} failed")
        phases.mark("outputs")
        peaks = phases.peaks
        with open(os.path.join(os.path.dirname(path), "ts_fastalign", "report.json")) as fh:
            report = json.load(fh)
        records.append(dict(shape=list(shape), baseline=base,
                            phases={k: v - base for k, v in peaks.items()},
                            increment=max(peaks.values()) - base,
                            estimate=report["memory_estimate_bytes"],
                            traced=dict(phases.traced)))
    return records


def fresh_process_peak(path, args, env, timeout):
    """Peak resident memory (bytes) of one ``fastalign align`` process on ``path``, as the
    user runs it (import, compiled kernels from the cache, read, align, write), as
    ``/usr/bin/time -v`` reports it: ``ru_maxrss`` of the children of a wrapper interpreter
    whose only child is that process."""
    out = os.path.join(os.path.dirname(path), "fresh")
    cmd = [sys.executable, "-m", "fastalign", "align", path, "-q", "--overwrite",
           "--out", out] + list(args)
    wrapper = ("import resource, subprocess, sys; "
               f"rc = subprocess.run({cmd!r}, stdout=subprocess.DEVNULL).returncode; "
               "print(rc, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    proc = subprocess.run([sys.executable, "-c", wrapper], capture_output=True, text=True,
                          timeout=timeout, env=env)
    rc, kib = proc.stdout.split()
    if proc.returncode != 0 or rc != "0":
        raise RuntimeError(f"fresh-process run failed:\n{proc.stderr[-3000:]}")
    return int(kib) * 1024


def measure(shapes, args=(), *, timeout=900, no_fft_cache=False, trace=False, root=None,
            fresh=False, one_child=False):
    """Write the series (in this process), then measure each size in a fresh interpreter
    (:func:`child`: a warm-up run, then the size); returns the records.  With ``fresh``,
    also each size's plain process peak (:func:`fresh_process_peak`, key ``fresh_peak``).
    With ``one_child``, all sizes run in one interpreter after one warm-up (each increment
    still above the trimmed RSS just before its run; measured on 31 x 320^2 and 31 x 384^2:
    increments within 2 % of separate interpreters', 29-31 s instead of 36-40 s)."""
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        warm = write_series(os.path.join(tmp, "warm"), WARM_SHAPE)
        paths = [write_series(os.path.join(tmp, "x".join(map(str, s))), s) for s in shapes]
        env = dict(os.environ)
        root = root or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in [env.get("PYTHONPATH")] if p])
        groups = ([(shapes, paths)] if one_child
                  else [([shape], [path]) for shape, path in zip(shapes, paths)])
        for group, group_paths in groups:
            spec = dict(warm=warm, shapes=[list(s) for s in group], paths=list(group_paths),
                        args=list(args), no_fft_cache=no_fft_cache, trace=trace)
            proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child",
                                   json.dumps(spec)], capture_output=True, text=True,
                                  timeout=timeout, env=env)
            if proc.returncode != 0:
                raise RuntimeError(f"memory measurement failed:\n{proc.stderr[-3000:]}")
            recs = json.loads(proc.stdout.strip().splitlines()[-1])
            if fresh:
                for r, path in zip(recs, group_paths):
                    r["fresh_peak"] = fresh_process_peak(path, args, env, timeout)
            records += recs
    return records


def _shape(text):
    return tuple(int(v) for v in text.lower().split("x"))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        print(json.dumps(child(json.loads(argv[1]))))
        return 0
    extra = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("shapes", nargs="+", type=_shape, metavar="NxNYxNX")
    p.add_argument("--recon", choices=("sirt", "tv"), default="sirt")
    p.add_argument("--json", action="store_true")
    p.add_argument("--root", help="directory holding the fastalign package to measure "
                                  "(default: this checkout), e.g. an older commit's export")
    a = p.parse_args(argv)
    records = measure(a.shapes, ["--recon", a.recon] + extra, root=a.root, timeout=3600,
                      fresh=True)
    if a.json:
        print(json.dumps(records, indent=1))
        return 0
    mib = 2.0 ** 20
    for r in records:
        n, ny, nx = r["shape"]
        inp = 4 * n * ny * nx
        inc, base = r["increment"], r["baseline"]
        ph = "  ".join(f"{k} {v / mib:.0f}" for k, v in r["phases"].items())
        print(f"{n} x {ny} x {nx}: input {inp / mib:.1f} MiB, baseline {base / mib:.0f} MiB, "
              f"peak increment {inc / mib:.1f} MiB = {inc / inp:.2f} x input "
              f"(absolute peak {(inc + base) / mib:.0f} MiB = {(inc + base) / inp:.2f} x input)")
        line = f"    CLI estimate (report.json) {r['estimate'] / mib:.1f} MiB"
        if a.root is None:
            # this checkout's model, as the CLI calls it and with the intensity model known to
            # be the identity (the blob series: dark-field, no offset)
            from fastalign.memory import estimate_align_peak
            est = estimate_align_peak(r["shape"], recon=a.recon, streamed=True)
            line += (f"; model increment {est.increment / mib:.1f} MiB, estimate / peak "
                     f"{est.increment / inc:.3f} ({est.phase}: {est.summary()})")
        print(line)
        print(f"    phases (MiB above baseline): {ph}")
        fresh = r["fresh_peak"]
        print(f"    fresh process (`fastalign align`, what /usr/bin/time shows): peak "
              f"{fresh / mib:.0f} MiB = {fresh / inp:.2f} x input")
    return 0


if __name__ == "__main__":
    sys.exit(main())
