"""Block reads and atomic block-wise writers for tilt series and volumes too big for one task.

:class:`SlabSource` describes a tilt series on disk (MRC family memory-mapped, HDF5
``file.h5:/dataset``, Zarr ``store.zarr[:/array]``, ``.npy``) and reads any block
``[t0:t1, r0:r1, :]`` of it as float32.  :class:`SlabWriter` fills a float32 3-D array block by
block in a hidden temporary file and renames it into place once every block is written.  Both
are small picklable descriptions: whoever holds one (a Dask worker, a thread, a process) opens
the file itself.  Nothing here knows about Dask; :mod:`fastalign.distributed` schedules them.
"""
import contextlib
import math
import os
import shutil
import uuid
import warnings

import numpy as np

from .._validate import as_angles_deg
from .._version import __version__
from ._atomic import check_output_path, same_file
from .mrc import finish_mrc_header

__all__ = ["SlabSource", "BlockRef", "read_block", "read_tilts", "resolve", "SlabWriter",
           "maybe_writer", "SLAB_FORMATS", "MRC_SUFFIXES"]

#: formats that can be read block by block
SLAB_FORMATS = ("mrc", "hdf5", "zarr", "npy")

#: file names :class:`SlabWriter` writes as MRC
MRC_SUFFIXES = (".mrc", ".rec", ".ali", ".st", ".map", ".mrcs", ".preali")


# ----------------------------------------------------------------------------- reads
class SlabSource:
    """A tilt series ``(n_tilts, ny, nx)`` on disk, read block by block.

    Parameters
    ----------
    path : str or os.PathLike
        MRC family, HDF5 ``file.h5:/dataset``, Zarr ``store.zarr[:/array]`` or ``.npy``.
    angles_deg : array_like, optional
        Tilt angles in degrees (default: those found with the file, as
        :func:`fastalign.io.read_tilt_series` finds them).

    Attributes
    ----------
    format, path, dataset : str
        As :func:`fastalign.io.inspect_tilt_series` reports them.
    shape : tuple of int
        ``(n_tilts, ny, nx)``.
    files : list of str
        Every file the source reads (outputs must never be written over them).
    pixel_size_A : float or None
    angles_deg : ndarray
        float64, validated.

    Raises
    ------
    ValueError
        A format that cannot be read in blocks (TIFF, Gatan DM: both are read whole by
        :func:`fastalign.io.read_tilt_series`), an empty array, or no tilt angles.
    """

    def __init__(self, path, angles_deg=None):
        from . import tiltseries

        meta, info = tiltseries._inspect(path, angles_deg)
        if meta["format"] not in SLAB_FORMATS:
            hint = (" (DM series are small: run without --scheduler/--workers, or convert)"
                    if meta["format"] == "dm" else "")
            raise ValueError(f"{meta['source']}: {meta['format']} files cannot be read in "
                             f"slabs; convert to Zarr, HDF5 or MRC{hint}")
        self.format, self.path, self.dataset = meta["format"], meta["path"], meta["dataset"]
        self.unsigned = bool(info.get("unsigned_bytes", False))
        self.shape = tuple(meta["shape"])
        self.files = list(meta["files"])
        self.pixel_size_A = meta["pixel_size_A"]
        check_not_empty(self.shape)
        self.angles_deg = require_angles(meta["angles_deg"], self.shape[0])

    def read(self, t0, t1, r0, r1):
        """Read ``float32[t0:t1, r0:r1, :]`` from the file.

        Returns
        -------
        ndarray
            float32, C-contiguous, shape ``(t1 - t0, r1 - r0, nx)``.
        """
        if self.format == "zarr":
            from .arrays import _zarr_array
            arr, _ = _zarr_array(self.path, self.dataset)
            block = arr[t0:t1, r0:r1, :]
        elif self.format == "hdf5":
            import h5py
            with h5py.File(self.path, "r") as f:
                block = f[self.dataset][t0:t1, r0:r1, :]
        elif self.format == "mrc":
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


def check_not_empty(shape):
    """Raise ``ValueError`` if a source of ``shape`` holds no data."""
    if min(shape) <= 0:
        raise ValueError(f"source is empty (shape {shape})")


def require_angles(angles_deg, n_tilts):
    """Validated tilt angles of a source of ``n_tilts`` images (a clear error if None)."""
    if angles_deg is None:
        raise ValueError("angles_deg is required (no tilt angles found with the source)")
    return as_angles_deg(angles_deg, n_expected=n_tilts)


def read_block(src, t0, t1, r0, r1):
    """``src.read(t0, t1, r0, r1)`` as a plain function (a task to submit)."""
    return src.read(t0, t1, r0, r1)


def read_tilts(src, tilts, r0, r1):
    """``float32[tilts, r0:r1, :]`` of a :class:`SlabSource` (a task to submit): the range
    from the first to the last of the increasing indices ``tilts`` read at once, the
    others dropped (a series without its excluded tilts)."""
    block = src.read(int(tilts[0]), int(tilts[-1]) + 1, r0, r1)
    return np.ascontiguousarray(block[np.asarray(tilts) - tilts[0]])


class BlockRef:
    """A block of a :class:`SlabSource`, read by the task that receives it (nothing is read
    ahead or kept)."""

    def __init__(self, src, t0, t1, r0, r1):
        self.args = (src, t0, t1, r0, r1)

    def read(self):
        src, t0, t1, r0, r1 = self.args
        return src.read(t0, t1, r0, r1)


def resolve(block):
    """The array of a block argument: read now if it is a :class:`BlockRef`, else as is."""
    return block.read() if isinstance(block, BlockRef) else block


# ----------------------------------------------------------------------------- writes
class SlabWriter:
    """A float32 3-D array written block-wise (by any process), then renamed into place.

    The data go to a hidden temporary ``.<name>.<random>.tmp`` (Zarr directory or MRC file)
    next to the destination; :meth:`commit` renames it after checking that every block was
    written, :meth:`abort` deletes it.  A failed run therefore leaves no output.

    Parameters
    ----------
    path : str or os.PathLike
        ``*.zarr`` (directory store, chunked by ``block`` along axis 0) or an MRC name.
    shape : tuple of int
    block : int
        Block length along axis 0 (writes must cover whole blocks: no two writers share a
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
        self.kind = _output_kind(self.path, path)
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
        """Write ``data`` at ``[start:start+len(data)]`` of the temporary.

        Returns
        -------
        tuple
            A receipt ``(start, stop, min, max, sum, sum of squares)`` for :meth:`commit`.
        """
        stop = start + data.shape[0]
        if self.kind == "zarr":
            import zarr
            zarr.open_array(self.tmp, mode="r+")[start:stop] = data
        else:
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
        """Header statistics from the receipts (no second pass over the data), label."""
        count = float(np.prod(self.shape))
        total = sum(r[4] for r in receipts)
        sq = sum(r[5] for r in receipts)
        mean = total / count
        finish_mrc_header(self.tmp, volume=self.mrc_volume, voxel_size_A=self.voxel_size_A,
                          dmin=min(r[2] for r in receipts), dmax=max(r[3] for r in receipts),
                          dmean=mean, rms=math.sqrt(max(sq / count - mean * mean, 0.0)),
                          labels=[f"fastalign {__version__} (distributed)"])

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


def _output_kind(abspath, given):
    low = abspath.lower().rstrip("/")
    if low.endswith(".zarr"):
        return "zarr"
    if low.endswith(MRC_SUFFIXES):
        return "mrc"
    raise ValueError(f"output {given}: use a .zarr directory or an MRC file "
                     f"({', '.join(MRC_SUFFIXES)})")


@contextlib.contextmanager
def maybe_writer(path, shape, block, **kw):
    """:class:`SlabWriter` for ``path`` (None: yield None), aborted unless committed.

    Parameters
    ----------
    path : str or os.PathLike or None
    shape, block, **kw
        As :class:`SlabWriter`.
    """
    if path is None:
        yield None
        return
    w = SlabWriter(path, shape, block, **kw)
    try:
        yield w
    finally:
        if os.path.lexists(w.tmp):  # not committed
            w.abort()
