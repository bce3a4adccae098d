"""JIT policy for every Numba kernel, in one place: fastmath flags, threading layer, disk cache.

Fastmath
--------
``FASTMATH`` is an explicit flag set *without* ``nnan``/``ninf`` (NaN and Inf survive
arithmetic: validation rejects them at the boundary, but masks built from NaN must keep working
inside kernels) and *without* ``reassoc``.  With ``reassoc`` LLVM may regroup a sum such as
``a + c * (p - q) - b`` differently each time it optimises the same function, and Numba runs
two differently optimised copies of a parallel kernel's loop body: in the process that compiled
it, the body's own module (the first definition of its symbol); in a process that loaded it
from the disk cache, the copy linked into the kernel's module and optimised a second time.
With ``reassoc`` the two gave results ~1e-7 apart (``fista.extrapolate_residual``,
``tv.chambolle_3d``); without it every kernel's sequence of floating-point operations is fixed
by its source, and cached and freshly compiled code give the same bits
(``tests/test_jit_cache.py``).  ``tests/test_jit_policy.py`` checks every kernel in
``fastalign/kernels/`` against this set.

Threading layer
---------------
:data:`THREADING_LAYER` pins the layer Numba would pick (``NUMBA_THREADING_LAYER``, or the first
of ``NUMBA_THREADING_LAYER_PRIORITY`` that loads), so that it is known before anything is
compiled and can key the cache; reports record it (``fastalign.report``).

Disk cache
----------
Compiled kernels are cached on disk by default; ``FASTALIGN_CACHE=0`` disables it.  The cache
lives in :data:`CACHE_DIR`, ``<base>/fastalign/<key>`` with ``<base>`` = ``NUMBA_CACHE_DIR`` if
set, else ``$XDG_CACHE_HOME`` (default ``~/.cache``), never next to the installed sources (a
read-only install works).  The key names what the compiled code depends on and Numba's own
cache index does not check: the fastalign, Numba and llvmlite versions, the threading layer,
and a hash of this policy (flags, ``NUMBA_OPT``) and of the kernel sources (Numba checks only
each kernel's own file, not the helpers it imports from another).  A directory that cannot be
written disables the cache with one log line.  Only the signatures actually called are compiled
(kernels are lazy; ``tests/test_jit_policy.py`` counts them).  Whole-process first-call costs:
``bench/cold_start.py``.
"""
import hashlib
import logging
import os
import sys
import tempfile
from pathlib import Path

import llvmlite
import numba

from ._version import __version__

log = logging.getLogger(__name__)

FASTMATH = frozenset({"nsz", "arcp", "contract", "afn"})
_THREADING_LAYERS = ("tbb", "omp", "workqueue")


def _pin_threading_layer():
    """The threading layer Numba will use, set in ``numba.config`` before any launch.

    A user's explicit ``NUMBA_THREADING_LAYER`` (a layer name, or ``safe``/``threadsafe``/
    ``forksafe``, which Numba resolves itself) is kept; ``default`` becomes the first layer of
    ``NUMBA_THREADING_LAYER_PRIORITY`` that loads, as Numba would choose it.
    """
    requested = str(numba.config.THREADING_LAYER).lower()
    if requested != "default":
        return requested
    from numba.np.ufunc import parallel

    for name in numba.config.THREADING_LAYER_PRIORITY:
        try:
            if name == "tbb":
                parallel._check_tbb_version_compatible()
                from numba.np.ufunc import tbbpool  # noqa: F401
            elif name == "omp":
                from numba.np.ufunc import omppool  # noqa: F401
            elif name != "workqueue":
                continue
        except ImportError:
            continue
        numba.config.THREADING_LAYER = name
        return name
    return requested  # nothing loads: Numba raises its own error at the first launch


def _cache_key():
    """``numba-<v>-fastalign-<v>-<layer>-<hash>``: everything cached code depends on that
    Numba's index (source file stamp, signature, CPU) does not check."""
    h = hashlib.sha256()
    h.update(repr((sorted(FASTMATH), "error_model=numpy", str(numba.config.OPT),
                   sys.version_info[:2], llvmlite.__version__)).encode())
    kernels = Path(__file__).with_name("kernels")
    for src in sorted(kernels.glob("*.py")) + [Path(__file__)]:
        h.update(src.name.encode())
        h.update(src.read_bytes())
    return (f"numba-{numba.__version__}-fastalign-{__version__}-{THREADING_LAYER}-"
            f"{h.hexdigest()[:12]}")


def _writable_cache_dir(env=os.environ):
    """The cache directory, created; None (and one log line) if it cannot be written."""
    base = env.get("NUMBA_CACHE_DIR") or env.get("XDG_CACHE_HOME") or \
        os.path.join(os.path.expanduser("~"), ".cache")
    path = os.path.join(base, "fastalign", _cache_key())
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        log.info("fastalign: JIT cache disabled, %s is not writable (%s)", path, exc)
        return None
    return path


THREADING_LAYER = _pin_threading_layer()
CACHE_DIR = _writable_cache_dir() if os.environ.get("FASTALIGN_CACHE", "1") != "0" else None
CACHE = CACHE_DIR is not None


def jit(*args, parallel=False, **kwargs):
    """``numba.njit`` with the project's flags (nopython, :data:`FASTMATH`, cache policy).

    The fastmath flags cannot be overridden per kernel (``fastmath=`` raises ``TypeError``).
    With the cache on, the kernel's cache lives in :data:`CACHE_DIR` (Numba takes the
    directory from ``numba.config.CACHE_DIR`` when the decorator runs; it is set only for that
    moment, so other Numba users in the process keep theirs).
    """
    if "fastmath" in kwargs:
        raise TypeError("fastalign kernels take their fastmath flags from fastalign._config")
    opts = dict(fastmath=set(FASTMATH), cache=CACHE, parallel=parallel, error_model="numpy")
    opts.update(kwargs)
    if not (args and callable(args[0])):
        return lambda f: jit(f, *args, parallel=parallel, **kwargs)
    if not opts["cache"]:
        return numba.njit(*args[1:], **opts)(args[0])
    saved = numba.config.CACHE_DIR
    numba.config.CACHE_DIR = CACHE_DIR
    try:
        return numba.njit(*args[1:], **opts)(args[0])
    finally:
        numba.config.CACHE_DIR = saved
