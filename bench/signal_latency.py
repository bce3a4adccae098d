"""Signal latency of ``fastalign align``: seconds from SIGTERM (or SIGINT) to process exit.

Usage::

    python bench/signal_latency.py [--shape 61 256 256] [--load 2] [--after 4 8 12]
                                   [--signal TERM] [--repeat 3]

Writes a simulated series (``--shape``: tilts, ny, nx; angles -60..60) as MRC, then per
repeat starts ``python -m fastalign align`` on it with ``--load`` busy-loop processes alongside
(pure-Python ``while True`` loops, one core each), sends the signal ``--after`` seconds after
the start (one value per repeat, cycled: the run is then compiling, iterating or writing), and
measures the time until the process has exited.  The JIT cache of the child is the default
one, filled by an unmeasured first run (``--cold`` skips that: compile time is then part of
what the signal interrupts).  Each line gives the latency, the exit status (143 after SIGTERM,
130 after SIGINT) and whether any file was left in the output directory (there must be none);
the last line the median.
"""
import argparse
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np


def _busy():  # pragma: no cover - a load process
    while True:
        pass


def make_series(directory, shape):
    """A blob phantom's projections (seeded), shifted, written as ``ts.mrc`` + ``ts.rawtlt``."""
    import fastalign
    from fastalign.io import write_aligned_stack, write_tlt

    n, ny, nx = shape
    rng = np.random.default_rng(0)
    vol = np.zeros((ny, nx // 4, nx), np.float32)
    for _ in range(60):
        y, z, x = rng.integers(4, ny - 4), rng.integers(2, nx // 4 - 2), rng.integers(8, nx - 8)
        vol[y - 3:y + 3, z - 2:z + 2, x - 3:x + 3] += rng.random()
    angles = np.linspace(-60.0, 60.0, n)
    data = fastalign.project(vol, angles)
    data = fastalign.fourier_shift(data, rng.uniform(-4, 4, (n, 2)))
    path = os.path.join(directory, "ts.mrc")
    write_aligned_stack(path, data)
    write_tlt(os.path.join(directory, "ts.rawtlt"), angles)
    return path


def run_once(path, out, after, signum, env):
    """Start the CLI, signal it ``after`` s later; ``(latency s, exit status, files left)``."""
    cmd = [sys.executable, "-m", "fastalign", "align", path, "--out", out, "-q"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(after)
    if proc.poll() is not None:
        return None, proc.returncode, []
    t0 = time.perf_counter()
    proc.send_signal(signum)
    proc.wait()
    latency = time.perf_counter() - t0
    left = sorted(os.listdir(out)) if os.path.isdir(out) else []
    return latency, proc.returncode, left


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shape", type=int, nargs=3, default=[61, 256, 256])
    p.add_argument("--load", type=int, default=2, help="busy-loop processes (default 2)")
    p.add_argument("--after", type=float, nargs="+", default=[4.0, 8.0, 12.0])
    p.add_argument("--signal", choices=("TERM", "INT"), default="TERM")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--cold", action="store_true", help="no unmeasured warm-up run")
    a = p.parse_args(argv)
    signum = getattr(signal, "SIG" + a.signal)
    env = dict(os.environ)
    env.pop("FASTALIGN_DEBUG", None)
    with tempfile.TemporaryDirectory() as tmp:
        path = make_series(tmp, tuple(a.shape))
        if not a.cold:  # fill the JIT cache (unmeasured, short)
            subprocess.run([sys.executable, "-m", "fastalign", "align", path, "--out",
                            os.path.join(tmp, "warm"), "-q", "--max-iter", "1"], env=env,
                           check=True, capture_output=True)
        load = [multiprocessing.Process(target=_busy, daemon=True) for _ in range(a.load)]
        for q in load:
            q.start()
        lat = []
        try:
            print(f"shape {tuple(a.shape)}, {a.load} busy-loop processes, SIG{a.signal}")
            for i in range(a.repeat):
                after = a.after[i % len(a.after)]
                out = os.path.join(tmp, f"out{i}")
                latency, status, left = run_once(path, out, after, signum, env)
                if latency is None:
                    print(f"  run {i}: finished before the signal ({after:.1f} s)")
                    continue
                lat.append(latency)
                print(f"  run {i}: signal after {after:.1f} s -> exit in {latency:.2f} s, "
                      f"status {status}, files left: {left or 'none'}")
        finally:
            for q in load:
                q.terminate()
                q.join()
    if lat:
        print(f"median latency {statistics.median(lat):.2f} s, max {max(lat):.2f} s "
              f"(n = {len(lat)})")


if __name__ == "__main__":
    main()
