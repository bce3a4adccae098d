"""First-call (JIT compile) latency of ``fastalign.project`` / ``backproject`` / ``align`` ...

Each measurement runs in a brand-new interpreter (``subprocess``) with Numba's on-disk cache
disabled (``FASTALIGN_CACHE=0``), so it is what a user pays on the first call of a session.
The problem is small (``(64, 32, 32)`` volume, 90 tilts): the first call is then compile time,
the steady-state call takes about a millisecond.  ``first_call_latency`` is also used by
``bench/peers.py``.
"""
import json
import os
import subprocess
import sys

_SCRIPT = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
import numba
import fastalign
t_import = time.perf_counter() - t0
ops = [op for op in sys.argv[1].split(",") if op]
ny = max(64, numba.get_num_threads())      # >= threads: the slice-parallel path
n = int(sys.argv[2])
angles = np.arange(0.0, 178.0 + 1e-9, 2.0)
x = np.ones((ny, n, n), np.float32)
y = np.ones((angles.size, ny, n), np.float32)
_series = {}


def _tilt_series():
    # a small (71, 16, n) series of Gaussian blobs, -70..70 step 2, projected analytically
    # in NumPy (no fastalign kernel runs before the timed call)
    if not _series:
        a71 = np.arange(-70.0, 70.0 + 1e-9, 2.0)
        th = np.deg2rad(a71)[:, None, None]
        rng = np.random.default_rng(0)
        yy, uu = np.mgrid[0:16, 0:n].astype(np.float64)
        uu -= 0.5 * (n - 1)
        d = np.zeros((a71.size, 16, n))
        for x0, y0, z0 in zip(rng.uniform(-0.3, 0.3, 6) * n, rng.uniform(4, 12, 6),
                              rng.uniform(-0.3, 0.3, 6) * n):
            u0 = x0 * np.cos(th) + z0 * np.sin(th)
            d += np.exp(-((uu - u0) ** 2 + (yy - y0) ** 2) / 8.0)
        _series["data"] = d.astype(np.float32)
        _series["angles"] = a71
    return _series["data"], _series["angles"]


def _align(**kw):
    d, a = _tilt_series()
    return fastalign.align(d, a, axes="xy", levels=[1], max_iter=2, final_iter=1, **kw)


calls = {
    "project": lambda: fastalign.project(x, angles),
    "backproject": lambda: fastalign.backproject(y, angles),
    "fbp": lambda: fastalign.fbp(y, angles),
    "align_sirt": lambda: _align(recon="sirt"),
    "align_tv": lambda: _align(recon="tv"),
    "com": lambda: fastalign.com_shifts(*_tilt_series()),
    "xcorr": lambda: fastalign.xcorr_shifts(*_tilt_series()),
}
if any(op in ("align_sirt", "align_tv", "com", "xcorr") for op in ops):
    _tilt_series()
out = {"import": t_import, "threads": numba.get_num_threads()}
for op in ops:
    t = time.perf_counter(); calls[op](); out[op + "_first"] = time.perf_counter() - t
for op in ops:
    t = time.perf_counter(); calls[op](); out[op + "_steady"] = time.perf_counter() - t
print("FIRST_CALL_JSON " + json.dumps(out))
"""


def first_call_latency(ops=("project", "backproject"), n=32, timeout=600, env=None):
    """Time the first calls of ``ops`` (in order) in a fresh interpreter.

    Parameters
    ----------
    ops : sequence of {"project", "backproject", "fbp", "align_sirt", "align_tv", "com", \
"xcorr"}
        Called in this order; a later op may reuse helpers compiled for an earlier one.
        ``align_*`` run two outer iterations (x and y, one level) on a small ``(71, 16, n)``
        series of Gaussian blobs made in NumPy before the timing (no fastalign kernel has
        run before the timed call).
    n : int
        Slice size ``nz = nx`` of the small problem.
    env : dict, optional
        Extra environment variables (e.g. ``NUMBA_NUM_THREADS``).

    Returns
    -------
    dict
        ``import`` (s), ``threads``, and per op ``<op>_first`` and ``<op>_steady`` (s).
    """
    full_env = dict(os.environ)
    full_env["FASTALIGN_CACHE"] = "0"
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, ",".join(ops), str(n)],
                          capture_output=True, text=True, timeout=timeout, env=full_env)
    if proc.returncode != 0:
        raise RuntimeError(f"first-call subprocess failed ({proc.returncode}):\n{proc.stderr}")
    for line in proc.stdout.splitlines():
        if line.startswith("FIRST_CALL_JSON "):
            return json.loads(line[len("FIRST_CALL_JSON "):])
    raise RuntimeError(f"no result from first-call subprocess:\n{proc.stdout}\n{proc.stderr}")


class FirstCall:
    """Seconds from the first call to its return, in a fresh process (compile-dominated)."""

    timeout = 600.0
    rounds = 1
    repeat = 1
    number = 1
    unit = "seconds"

    def track_import(self):
        """``import fastalign`` (numpy, numba, fastalign modules; no compilation)."""
        return first_call_latency(ops=())["import"]

    def track_project(self):
        """First ``fastalign.project`` call in a fresh process."""
        return first_call_latency(ops=("project",))["project_first"]

    def track_backproject(self):
        """First ``fastalign.backproject`` call in a fresh process."""
        return first_call_latency(ops=("backproject",))["backproject_first"]

    def track_align_sirt(self):
        """First ``fastalign.align(recon="sirt")`` in a fresh process: what a user waits
        for before the first update."""
        return first_call_latency(ops=("align_sirt",))["align_sirt_first"]

    def track_align_tv(self):
        """First ``fastalign.align(recon="tv")`` in a fresh process."""
        return first_call_latency(ops=("align_tv",))["align_tv_first"]

    def track_fbp(self):
        """First ``fastalign.fbp`` in a fresh process."""
        return first_call_latency(ops=("fbp",))["fbp_first"]

    def track_project_then_backproject(self):
        """First ``project`` + first ``backproject`` in one fresh process (shared helpers)."""
        r = first_call_latency(ops=("project", "backproject"))
        return r["project_first"] + r["backproject_first"]

