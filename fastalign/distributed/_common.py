"""Dask plumbing shared by the distributed solvers: workers and threads, slab plans, sources,
run scope and drain.

Nothing here does maths or opens files: block reads and block-wise writers are
:mod:`fastalign.io.slabs` (small picklable descriptions; the workers open the files
themselves).
"""
import contextlib
import copy
import math
import os
import threading
import time
import weakref

import numpy as np

from .._validate import as_positive_int
from ..io.slabs import (BlockRef, SlabSource, check_not_empty, read_block, read_tilts,
                        require_angles)

__all__ = ["Source", "numba_section", "plan", "slab_rows_for", "client_workers", "run_scope",
           "drain"]

# ----------------------------------------------------------------------------- threads
_NUMBA_LOCK = threading.Lock()


def _worker_threads():
    """``nthreads`` of the Dask worker running the current task (None outside a worker)."""
    try:
        from distributed import get_worker
        w = get_worker()
    except (ImportError, ValueError):
        return None
    state = getattr(w, "state", None)
    return int(getattr(state, "nthreads", None) or getattr(w, "nthreads", 1))


@contextlib.contextmanager
def numba_section():
    """Run a task's compiled work with one Numba pool per worker process.

    Tasks of one worker take a process-wide lock, so that at most one of them runs Numba
    kernels at a time (no oversubscription; the ``workqueue`` threading layer also forbids
    concurrent parallel launches), and set Numba's (and pyFFTW's) thread count to the
    worker's ``nthreads`` (capped at ``NUMBA_NUM_THREADS``).  File reads and writes happen
    outside the lock and overlap with the compute of other tasks.
    """
    import numba

    n = _worker_threads()
    with _NUMBA_LOCK:
        if n is not None:
            numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))
        yield


# ----------------------------------------------------------------------------- client
def client_workers(client):
    """``(n_workers, min_memory_limit or None)`` of the cluster behind ``client``."""
    try:
        from distributed import Client
    except ImportError:  # pragma: no cover - the extra is missing
        raise ImportError("fastalign.distributed needs dask.distributed: "
                          "pip install 'fastalign[dask]'") from None
    if not isinstance(client, Client):
        raise TypeError("client must be a dask.distributed.Client (connect one to your "
                        f"cluster, e.g. Client('tcp://host:8786')), got {type(client).__name__}")
    workers = _known_workers(client)
    if not workers and client.nthreads():
        # the client's cached view of the scheduler can lag a cluster whose workers joined
        # after it connected: refresh it (wait_for_workers does) before concluding
        client.wait_for_workers(1, timeout=30)
        workers = _known_workers(client)
    if not workers:
        raise RuntimeError("the Dask cluster has no workers")
    limits = [w.get("memory_limit") or 0 for w in workers.values()]
    lim = min(limits) if all(limits) else None
    return len(workers), lim


def _known_workers(client):
    """``scheduler_info()["workers"]`` (all of them, where the call takes ``n_workers``)."""
    if _takes_n_workers(client):
        return client.scheduler_info(n_workers=-1)["workers"]
    return client.scheduler_info()["workers"]


def _takes_n_workers(client):
    import inspect
    try:
        return "n_workers" in inspect.signature(client.scheduler_info).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return False


def plan(n, size=None, parts=None):
    """Split ``range(n)`` into consecutive ``(start, stop)`` blocks of ``size`` (or into
    ``parts`` nearly equal blocks)."""
    if size is None:
        size = math.ceil(n / max(1, parts))
    size = max(1, int(size))
    return [(a, min(n, a + size)) for a in range(0, n, size)]


def slab_rows_for(ny, n_workers, bytes_per_row, memory_limit, slab_rows=None):
    """Rows per slab: given, else about two slabs per worker, fewer rows if a slab's working
    set (``bytes_per_row`` each) would exceed a quarter of the worker memory limit."""
    if slab_rows is not None:
        return as_positive_int(slab_rows, "slab_rows")
    rows = math.ceil(ny / (2 * n_workers))
    if memory_limit:
        rows = min(rows, max(1, int(memory_limit // 4 // max(1, bytes_per_row))))
    return max(1, rows)


# ----------------------------------------------------------------------------- sources
class Source:
    """A tilt series ``(n_tilts, ny, nx)`` that tasks receive block by block.

    Built on the client from a path (read by the workers themselves through a
    :class:`fastalign.io.slabs.SlabSource`) or a dask array (blocks computed from its graph).

    Attributes
    ----------
    reader : SlabSource or None
        The file description sent to the workers (None for a dask array).
    array : dask.array.Array or None
    format, path, dataset, shape, files, pixel_size_A, angles_deg
        As :class:`fastalign.io.slabs.SlabSource` (``format`` ``"dask"``, no ``path``,
        ``dataset`` or ``files`` for an array).
    """

    def __init__(self, source, angles_deg=None):
        self.array = self.reader = None
        self.tilts = None      # a subset (:meth:`subset`): the source's tilt indices
        if isinstance(source, (str, os.PathLike)):
            self.reader = SlabSource(source, angles_deg)
            self.format = self.reader.format
            self.path, self.dataset = self.reader.path, self.reader.dataset
            self.shape = self.reader.shape
            self.files = self.reader.files
            self.pixel_size_A = self.reader.pixel_size_A
            self.angles_deg = self.reader.angles_deg
            return
        self.array = _as_dask_array(source)
        self.format, self.path, self.dataset = "dask", None, None
        self.files, self.pixel_size_A = [], None
        self.shape = tuple(int(s) for s in self.array.shape)
        check_not_empty(self.shape)
        self.angles_deg = require_angles(angles_deg, self.shape[0])

    def subset(self, keep):
        """The same source restricted to the tilts where ``keep`` (bool, ``(n_tilts,)``) is
        True, in their order (tilt exclusion): a file is still read by the workers, only
        those tilts; a dask array is indexed lazily."""
        idx = np.flatnonzero(keep)
        sub = copy.copy(self)
        sub.tilts = idx if self.tilts is None else self.tilts[idx]
        if self.array is not None:
            sub.array, sub.tilts = self.array[idx], None
        sub.shape = (int(idx.size),) + tuple(self.shape[1:])
        sub.angles_deg = np.asarray(self.angles_deg)[idx]
        return sub

    def block(self, client, t0, t1, r0, r1):
        """Argument for a task that needs ``float32[t0:t1, r0:r1, :]``: for files, a small
        :class:`~fastalign.io.slabs.BlockRef` the task reads itself (nothing is read ahead or
        kept), for dask arrays a future of the computed block.  Resolve it in the task with
        :func:`fastalign.io.slabs.resolve`."""
        if self.array is not None or self.tilts is not None:
            return self.submit(client, t0, t1, r0, r1)
        return BlockRef(self.reader, t0, t1, r0, r1)

    def __getstate__(self):
        d = dict(self.__dict__)
        d["array"] = None  # the graph is submitted from the client, never pickled
        return d

    def submit(self, client, t0, t1, r0=0, r1=None):
        """Future of ``float32[t0:t1, r0:r1, :]``."""
        r1 = self.shape[1] if r1 is None else r1
        if self.array is not None:
            block = self.array[t0:t1, r0:r1, :].astype(np.float32)
            return client.compute(block)
        if self.tilts is not None:
            return client.submit(read_tilts, self.reader, self.tilts[t0:t1], r0, r1,
                                 pure=False)
        return client.submit(read_block, self.reader, t0, t1, r0, r1, pure=False)

    def read(self, t0, t1, r0, r1):
        """Read ``float32[t0:t1, r0:r1, :]`` from the file (on a worker; files only)."""
        if self.tilts is not None:
            return read_tilts(self.reader, self.tilts[t0:t1], r0, r1)
        return self.reader.read(t0, t1, r0, r1)


def _as_dask_array(source):
    """``source`` (a dask or NumPy array) as a 3-D real dask array, with clear errors."""
    try:
        import dask.array as da
    except ImportError:  # pragma: no cover
        raise ImportError("fastalign.distributed needs dask") from None
    if isinstance(source, np.ndarray):
        source = da.from_array(source, chunks=(-1, "auto", -1))
    if not isinstance(source, da.Array):
        raise TypeError("source must be a path (Zarr, HDF5 'file.h5:/dataset', MRC, "
                        f".npy) or a dask array, got {type(source).__name__}")
    if source.ndim != 3:
        raise ValueError(f"source must be 3-D (n_tilts, ny, nx), got shape "
                         f"{source.shape}")
    if np.iscomplexobj(np.empty(0, source.dtype)) or not (
            np.issubdtype(source.dtype, np.number) or source.dtype == np.bool_):
        raise TypeError(f"source must be a real numeric array, got {source.dtype}")
    return source


# ----------------------------------------------------------------------------- run scope
@contextlib.contextmanager
def run_scope(client):
    """Track the futures of one run; on error, cancel them and wait until none of them is
    still executing on a worker (so that no late write lands in a deleted temporary)."""
    tracked = _Tracked(client)
    try:
        yield tracked
    except BaseException:
        drain(client, tracked.futures)
        raise


class _Tracked:
    """A client whose ``submit``/``compute`` futures are remembered (for :func:`drain`)."""

    def __init__(self, client):
        self._client = client
        self._futures = weakref.WeakSet()  # never keeps a result alive

    @property
    def futures(self):
        return list(self._futures)

    def submit(self, *args, **kwargs):
        f = self._client.submit(*args, **kwargs)
        self._futures.add(f)
        return f

    def compute(self, *args, **kwargs):
        f = self._client.compute(*args, **kwargs)
        self._futures.add(f)
        return f

    def __getattr__(self, name):
        return getattr(self._client, name)


def drain(client, futures, timeout=60.0):
    """Cancel ``futures`` and wait (at most ``timeout`` seconds) until none of them is still
    executing on a worker."""
    keys = {f.key for f in futures}
    client.cancel(futures)

    def executing(dask_worker=None):
        state = getattr(dask_worker, "state", None)
        return [ts.key for ts in getattr(state, "executing", ())]

    deadline = time.monotonic() + timeout
    while keys and time.monotonic() < deadline:
        try:
            running = client.run(executing)
        except Exception:  # workers gone or shutting down: nothing left to wait for
            return
        if not any(k in keys for ks in running.values() for k in ks):
            return
        time.sleep(0.05)
