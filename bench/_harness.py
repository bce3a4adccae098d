"""Measurement harness shared by the peer-comparison suites (``bench/peers*.py``).

Configuration and result rows, timing with peak-RSS and CPU/wall, thread control, a GIL probe,
a deterministic phantom, the machine description, the result table.  No suite lives here and
nothing here imports a suite, so every ``bench/`` module can import it without a cycle;
``bench/peers.py`` is only the script entry (suite registry and ``main``).
"""
import gc
import math
import os
import platform
import sys
import threading
import time
from dataclasses import dataclass, field

import numpy as np

_BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
if _BENCH_DIR not in sys.path:
    sys.path.insert(0, _BENCH_DIR)

from benchmarks._util import n_cores, reset_peak_rss, rss_bytes  # noqa: E402

__all__ = [
    "Config", "Row", "PeakRSS", "measure", "set_numba_threads", "releases_gil",
    "phantom_volume", "rel_err", "chunks", "print_table", "machine_description",
    "machine_line", "log",
]


def log(msg):
    """Progress output of a suite (stdout, flushed)."""
    print(msg, flush=True)


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


def machine_line():
    """One line: host, CPU, cores, Numba threads, NumPy, load."""
    import numba
    load = os.getloadavg() if hasattr(os, "getloadavg") else (math.nan,) * 3
    return (f"{platform.node()} | {platform.processor() or platform.machine()} | "
            f"{n_cores()} cores | numba {numba.__version__} "
            f"(NUMBA_NUM_THREADS={numba.config.NUMBA_NUM_THREADS}) | numpy {np.__version__} | "
            f"load avg {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
