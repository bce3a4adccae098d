"""Helpers shared by the asv suites and by ``bench/peers.py`` (no benchmarks in here)."""
import os

import numba
import numpy as np

# Tilt schemes used throughout the benchmarks, keyed by their number of tilts.
ANGLE_SETS = {
    71: np.arange(-70.0, 70.0 + 1e-9, 2.0),  # -70..70 step 2: a typical ET missing wedge
    90: np.arange(0.0, 178.0 + 1e-9, 2.0),   # 0..178 step 2: full half-circle
}


def angles_deg(n_angles):
    """The benchmark tilt scheme with ``n_angles`` tilts (a fresh float64 array)."""
    return ANGLE_SETS[n_angles].copy()


def set_threads(threads):
    """``numba.set_num_threads(threads)``; asv skips the combination when it is unavailable.

    Raising ``NotImplementedError`` from ``setup`` is asv's way to skip a parameter set.
    """
    if threads > numba.config.NUMBA_NUM_THREADS:
        raise NotImplementedError(
            f"{threads} threads requested, NUMBA_NUM_THREADS={numba.config.NUMBA_NUM_THREADS}")
    numba.set_num_threads(threads)


def touched(shape, fill=0.0, dtype=np.float32):
    """A C-contiguous array whose pages are already resident (``np.zeros`` is lazy)."""
    a = np.empty(shape, dtype=dtype)
    a.fill(fill)
    return a


def reset_peak_rss():
    """Reset the process peak RSS (``VmHWM`` and ``getrusage().ru_maxrss``) to the current RSS.

    asv's ``peakmem_*`` reports the whole-process peak RSS, which would otherwise be dominated
    by LLVM's memory while Numba compiles in ``setup``.  Writing ``5`` to
    ``/proc/self/clear_refs`` (Linux >= 4.0) resets the high-water mark, so after this call
    ``peakmem_*`` measures the resident set left by ``setup`` (interpreter, libraries, the
    preallocated inputs/outputs) plus whatever the benchmarked call adds.  Returns False where
    this is not possible (then the peak includes compilation).
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def rss_bytes(field="VmRSS"):
    """Current (``VmRSS``) or peak (``VmHWM``) resident set size in bytes, from /proc."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise OSError(f"{field} not found in /proc/self/status")


def n_cores():
    """Number of CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1
