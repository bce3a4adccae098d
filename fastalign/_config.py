"""JIT policy for every Numba kernel, in one place.

``FASTMATH`` is an explicit flag set *without* ``nnan``/``ninf`` so that NaN and Inf
survive arithmetic (validation rejects them at the boundary, but masks built from NaN must
keep working inside kernels).  ``FASTMATH_NO_REASSOC`` is the same set without ``reassoc``:
kernels whose per-element sequence of floating-point operations must not depend on the code
the compiler generates (the projector) use it.  These two sets are the only ones allowed;
``tests/test_jit_policy.py`` checks every kernel in ``fastalign/kernels/`` against them.

Caching of compiled kernels is controlled by the environment variable ``FASTALIGN_CACHE``
(``1`` to enable, default off): caching *parallel* kernels has known crash modes when the
thread count or threading layer changes between runs (numba issue 4807), so it is opt-in.
First-call (compile) latency is measured in ``bench/benchmarks/bench_jit.py``.
"""
import os

import numba

FASTMATH = set({"nsz", "arcp", "contract", "afn", "reassoc"})
FASTMATH_NO_REASSOC = FASTMATH - {"reassoc"}
CACHE = os.environ.get("FASTALIGN_CACHE", "0") == "1"


def jit(*args, parallel=False, reassoc=True, **kwargs):
    """``numba.njit`` with the project's flags (nopython, fastmath set, cache policy).

    ``reassoc=False`` selects :data:`FASTMATH_NO_REASSOC`.  The fastmath flags cannot be
    overridden per kernel (``fastmath=`` raises ``TypeError``).
    """
    if "fastmath" in kwargs:
        raise TypeError("fastalign kernels take their fastmath flags from fastalign._config "
                        "(use reassoc=False for FASTMATH_NO_REASSOC)")
    flags = FASTMATH if reassoc else FASTMATH_NO_REASSOC
    opts = dict(fastmath=set(flags), cache=CACHE, parallel=parallel, error_model="numpy")
    opts.update(kwargs)
    if args and callable(args[0]):
        return numba.njit(**opts)(args[0])
    return numba.njit(*args, **opts)
