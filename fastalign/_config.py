"""JIT policy for every Numba kernel, in one place.

``FASTMATH`` is an explicit flag set *without* ``nnan``/``ninf`` so that NaN and Inf
survive arithmetic (validation rejects them at the boundary, but masks built from NaN must
keep working inside kernels).  Caching of compiled kernels is controlled by the environment
variable ``FASTALIGN_CACHE`` (``1`` to enable, default off): caching *parallel* kernels has
known crash modes when the thread count or threading layer changes between runs
(numba issue 4807), so it is opt-in.  First-call (compile) latency is measured in
``bench/benchmarks/bench_jit.py``.
"""
import os

import numba

FASTMATH = set({"nsz", "arcp", "contract", "afn", "reassoc"})
CACHE = os.environ.get("FASTALIGN_CACHE", "0") == "1"


def jit(*args, parallel=False, **kwargs):
    """``numba.njit`` with the project's flags (nopython, fastmath set, cache policy)."""
    opts = dict(fastmath=set(FASTMATH), cache=CACHE, parallel=parallel, error_model="numpy")
    opts.update(kwargs)
    if args and callable(args[0]):
        return numba.njit(**opts)(args[0])
    return numba.njit(*args, **opts)
