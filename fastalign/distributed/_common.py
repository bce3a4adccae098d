"""Plumbing shared by the distributed solvers: sources, slab plans, threads, atomic outputs.

Nothing here does maths.  Objects that travel to the workers (:class:`Source`,
:class:`VolumeWriter`) are small picklable descriptions; the workers open the files
themselves.
"""
import contextlib
import math
import os
import shutil
import threading
import time
import uuid
import weakref

import numpy as np

from .._validate import as_angles_deg, as_positive_int
from ..io._atomic import check_output_path, same_file

__all__ = ["Source", "VolumeWriter", "numba_section", "plan", "client_workers"]

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
    workers = client.scheduler_info(n_workers=-1)["workers"] if _takes_n_workers(client) \
        else client.scheduler_info()["workers"]
    if not workers:
        raise RuntimeError("the Dask cluster has no workers")
    limits = [w.get("memory_limit") or 0 for w in workers.values()]
    lim = min(limits) if all(limits) else None
    return len(workers), lim


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
    """A tilt series ``(n_tilts, ny, nx)`` that workers read block by block.

    Built on the client from a path (MRC family memory-mapped, HDF5 ``file.h5:/dataset``,
    Zarr ``store.zarr[:/array]``, ``.npy``) or a dask array.  :meth:`submit` returns a future
    of the float32 block ``[t0:t1, r0:r1, :]``, read on a worker (files) or computed from the
    dask graph.
    """

    def __init__(self, source, angles_deg=None):
        self.array = None
        self.files = []
        meta_angles = None
        if isinstance(source, (str, os.PathLike)):
            from ..io import tiltseries
            meta, info = tiltseries._inspect(source, None if angles_deg is None
                                             else angles_deg)
            if meta["format"] not in ("mrc", "hdf5", "zarr", "npy"):
                raise ValueError(f"{source}: {meta['format']} files cannot be read in slabs; "
                                 "convert to Zarr, HDF5 or MRC")
            self.format, self.path, self.dataset = meta["format"], meta["path"], \
                meta["dataset"]
            self.unsigned = bool(info.get("unsigned_bytes", False))
            self.shape = tuple(meta["shape"])
            self.files = list(meta["files"])
            self.pixel_size_A = meta["pixel_size_A"]
            meta_angles = meta["angles_deg"]
        else:
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
            self.format, self.path, self.dataset, self.unsigned = "dask", None, None, False
            self.shape = tuple(int(s) for s in source.shape)
            self.array = source
            self.pixel_size_A = None
        if min(self.shape) <= 0:
            raise ValueError(f"source is empty (shape {self.shape})")
        a = meta_angles if self.array is None else angles_deg
        if a is None:
            raise ValueError("angles_deg is required (no tilt angles found with the source)")
        self.angles_deg = as_angles_deg(a, n_expected=self.shape[0])

    def block(self, client, t0, t1, r0, r1):
        """Argument for a task that needs ``float32[t0:t1, r0:r1, :]``: for files, a small
        :class:`BlockRef` the task reads itself (nothing is read ahead or kept), for dask
        arrays a future of the computed block.  Resolve it in the task with
        :func:`resolve`."""
        if self.array is not None:
            return self.submit(client, t0, t1, r0, r1)
        return BlockRef(self, t0, t1, r0, r1)

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
        return client.submit(_read_block, self, t0, t1, r0, r1, pure=False)

    def read(self, t0, t1, r0, r1):
        """Read ``float32[t0:t1, r0:r1, :]`` from the file (on a worker)."""
        if self.format == "zarr":
            from ..io.arrays import _zarr_array
            arr, _ = _zarr_array(self.path, self.dataset)
            block = arr[t0:t1, r0:r1, :]
        elif self.format == "hdf5":
            import h5py
            with h5py.File(self.path, "r") as f:
                block = f[self.dataset][t0:t1, r0:r1, :]
        elif self.format == "mrc":
            import warnings

            import mrcfile
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with mrcfile.mmap(self.path, mode="r", permissive=True) as mrc:
                    raw = mrc.data.reshape(self.shape)
                    if self.unsigned:
                        raw = raw.view(np.uint8)
                    block = np.array(raw[t0:t1, r0:r1, :], dtype=np.float32)
        else:
            arr = np.load(self.path, mmap_mode="r", allow_pickle=False).reshape(self.shape)
            block = np.array(arr[t0:t1, r0:r1, :], dtype=np.float32)
        return np.ascontiguousarray(block, dtype=np.float32)


def _read_block(src, t0, t1, r0, r1):
    return src.read(t0, t1, r0, r1)


class BlockRef:
    """A block of a file source, read by the task that receives it."""

    def __init__(self, src, t0, t1, r0, r1):
        self.args = (src, t0, t1, r0, r1)

    def read(self):
        src, t0, t1, r0, r1 = self.args
        return src.read(t0, t1, r0, r1)


def resolve(block):
    """The array of a :meth:`Source.block` argument (read now if it is a file block)."""
    return block.read() if isinstance(block, BlockRef) else block


# ----------------------------------------------------------------------------- outputs
_MRC_SUFFIXES = (".mrc", ".rec", ".ali", ".st", ".map", ".mrcs", ".preali")


class VolumeWriter:
    """A float32 3-D array written block-wise by the workers, then renamed into place.

    The data go to a hidden temporary ``.<name>.<random>.tmp`` (Zarr directory or MRC file)
    next to the destination; :meth:`commit` renames it after checking that every block was
    written, :meth:`abort` deletes it.  A failed run therefore leaves no output.

    Parameters
    ----------
    path : str or os.PathLike
        ``*.zarr`` (directory store, chunked by ``block`` along axis 0) or an MRC name.
    shape : tuple of int
    block : int
        Block length along axis 0 (writes must cover whole blocks: no two tasks share a
        Zarr chunk).
    overwrite : bool
    inputs : list of str
        Files that must never be written.
    mrc_volume : bool
        MRC header: volume (``ispg = 1``) or image stack.
    voxel_size_A : float, optional
    """

    def __init__(self, path, shape, block, *, overwrite=False, inputs=(), mrc_volume=True,
                 voxel_size_A=None):
        self.path = os.path.abspath(os.fspath(path))
        self.shape = tuple(int(s) for s in shape)
        self.block = int(block)
        low = self.path.lower().rstrip("/")
        if low.endswith(".zarr"):
            self.kind = "zarr"
        elif low.endswith(_MRC_SUFFIXES):
            self.kind = "mrc"
        else:
            raise ValueError(f"output {path}: use a .zarr directory or an MRC file "
                             f"({', '.join(_MRC_SUFFIXES)})")
        if self.kind == "zarr" and os.path.isdir(self.path):
            if not overwrite:
                raise FileExistsError(f"{self.path} already exists (use overwrite=True to "
                                      "replace it)")
            if any(inp is not None and same_file(self.path, inp) for inp in inputs):
                raise ValueError(f"refusing to write {self.path}: it is an input")
        else:
            check_output_path(self.path, overwrite=overwrite, inputs=inputs)
        self.overwrite = overwrite
        self.mrc_volume = mrc_volume
        self.voxel_size_A = voxel_size_A
        d, name = os.path.split(self.path)
        self.tmp = os.path.join(d, f".{name}.{uuid.uuid4().hex[:8]}.tmp")
        self._written = set()
        if self.kind == "zarr":
            import zarr
            zarr.open_array(self.tmp, mode="w-", shape=self.shape, dtype="float32",
                            chunks=(self.block,) + self.shape[1:], fill_value=0.0)
        else:
            import mrcfile
            with mrcfile.new_mmap(self.tmp, shape=self.shape, mrc_mode=2, fill=None,
                                  overwrite=False):
                pass

    def write(self, start, data):
        """Write ``data`` at ``[start:start+len(data)]`` of the temporary (on a worker)."""
        stop = start + data.shape[0]
        if self.kind == "zarr":
            import zarr
            zarr.open_array(self.tmp, mode="r+")[start:stop] = data
        else:
            import warnings

            import mrcfile
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with mrcfile.mmap(self.tmp, mode="r+") as mrc:
                    mrc.data[start:stop] = data
        d = np.asarray(data, dtype=np.float64)
        return (start, stop, float(d.min()), float(d.max()), float(d.sum()),
                float(np.square(d).sum()))

    def commit(self, receipts):
        """Check that ``receipts`` (results of :meth:`write`) cover the array, then rename."""
        covered = np.zeros(self.shape[0], bool)
        for start, stop, *_ in receipts:
            covered[start:stop] = True
        if not covered.all():
            missing = np.flatnonzero(~covered)
            raise RuntimeError(f"{self.path}: rows {missing[:10].tolist()}... were never "
                               "written; output discarded")
        if self.kind == "mrc":
            self._finish_mrc(receipts)
        if os.path.lexists(self.path):
            if not self.overwrite:
                raise FileExistsError(f"{self.path} appeared while it was being written")
            if os.path.isdir(self.path) and not os.path.islink(self.path):
                old = self.path + f".{uuid.uuid4().hex[:8]}.old"
                os.replace(self.path, old)
                os.replace(self.tmp, self.path)
                shutil.rmtree(old, ignore_errors=True)
                return self.path
        os.replace(self.tmp, self.path)
        return self.path

    def _finish_mrc(self, receipts):
        import warnings

        import mrcfile

        from .. import __version__
        count = float(np.prod(self.shape))
        total = sum(r[4] for r in receipts)
        sq = sum(r[5] for r in receipts)
        mean = total / count
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with mrcfile.mmap(self.tmp, mode="r+") as mrc:
                if self.mrc_volume:
                    mrc.set_volume()
                else:
                    mrc.set_image_stack()
                if self.voxel_size_A is not None:
                    mrc.voxel_size = float(self.voxel_size_A)
                h = mrc.header
                h.dmin = min(r[2] for r in receipts)
                h.dmax = max(r[3] for r in receipts)
                h.dmean = mean
                h.rms = math.sqrt(max(sq / count - mean * mean, 0.0))
                mrc.add_label(f"fastalign {__version__} (distributed)"[:80])

    def abort(self):
        """Delete the temporary output (idempotent)."""
        if os.path.isdir(self.tmp):
            shutil.rmtree(self.tmp, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.tmp)

    def open(self):
        """The committed array, opened read-only (``zarr.Array`` or a read-only memmap)."""
        if self.kind == "zarr":
            import zarr
            return zarr.open_array(self.path, mode="r")
        import mrcfile
        with mrcfile.open(self.path, mode="r", header_only=True) as mrc:
            offset = 1024 + int(mrc.header.nsymbt)
        return np.memmap(self.path, dtype=np.float32, mode="r", offset=offset,
                         shape=self.shape)


def _write_block(writer, start, data):
    return writer.write(start, data)


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


@contextlib.contextmanager
def maybe_writer(path, shape, block, **kw):
    """:class:`VolumeWriter` for ``path`` (None: yield None), aborted on any exception."""
    if path is None:
        yield None
        return
    w = VolumeWriter(path, shape, block, **kw)
    try:
        yield w
    finally:
        if os.path.lexists(w.tmp):  # not committed
            w.abort()
