"""MRC family (``.mrc .st .ali .mrcs .rec .map .preali``): reading tilt series, writing stacks
and volumes, via ``mrcfile``.

Reading is permissive so that old (pre-MRC2014, e.g. FEI) headers without the ``MAP ``
identifier still load; such files trigger an :class:`OldMRCHeaderWarning` naming the file.
Files that are not MRC at all, or whose data block is shorter than the header promises, raise a
``ValueError`` saying so, before any data is read.

Tilt angles stored in the extended header are recovered on a best-effort basis:

* ``exttyp`` ``FEI1``/``FEI2`` (EPU/Tomography >= 2014; one big-endian record of 768/888
  bytes per section, layout as in ``mrcfile``'s FEI dtypes): field ``Alpha tilt`` (degrees)
  per section, pixel size from ``Pixel size X`` (metres) of the first section.  A field is
  used when its bit in the record's ``Bitmask 1`` is set (bit 7 alpha tilt, bit 14 pixel
  size X), or, when a writer left the whole bitmask zero, when its values look valid.
* ``exttyp`` ``SERI``/``AGAR`` (SerialEM/IMOD): when bit 0 of ``nreal`` (header bytes
  130-131) is set, the first 2 bytes of each ``nint``-byte section record are the tilt angle
  times 100.
* No ``exttyp`` and an extended header of 128-byte records, at least one per section (the old
  FEI/Xplore3D layout, 32 floats per record): float 0 is the alpha tilt in degrees and
  float 11 the pixel size in metres.  Used only when the values look like angles (finite,
  within +-90 degrees, not all equal).

Anything else yields no angles from the header.

**When is the pixel size "set"?**  The main header's voxel size is ``cella.x / mx``.  It is
read as *not set* when ``cella`` or ``mx`` is 0 (what ``mrcfile`` and fastalign write when no
size is known) or when it is exactly 1 A (``cella`` equal to the grid: the default of IMOD,
``mrcfile`` and old FEI software, which write it whatever the real pixel).  The extended
header's pixel size is used next.  Otherwise the pixel size is unknown (None): a tilt series
with genuine 1.000 A pixels needs ``pixel_size_A=1`` (CLI ``--pixel-size 1``).
"""
import os
import sys
import warnings

import numpy as np

from .._validate import as_float32_array
from .._version import __version__
from ._atomic import atomic_write

__all__ = ["MRC_SUFFIXES", "OldMRCHeaderWarning", "inspect_mrc", "read_mrc", "write_mrc",
           "write_aligned_stack", "write_volume"]

MRC_SUFFIXES = (".mrc", ".st", ".ali", ".mrcs", ".rec", ".map", ".preali")

#: bytes per voxel of each MRC mode
_MODE_BYTES = {0: 1, 1: 2, 2: 4, 3: 4, 4: 8, 6: 2, 12: 2}
_COMPLEX_MODES = {3, 4}
_IMOD_STAMP = 1146047817  # 'IMOD' as int32, header bytes 152-155


class OldMRCHeaderWarning(UserWarning):
    """An MRC file without the ``MAP `` identifier (pre-2014 / FEI-style header) was read."""


def _file_byteorder(header):
    bo = header.mode.dtype.byteorder
    if bo in "=|":
        bo = "<" if sys.byteorder == "little" else ">"
    return bo


def _plausible_angles(a, n):
    return (a.size == n and np.all(np.isfinite(a)) and np.all(np.abs(a) <= 90.0)
            and (n == 1 or np.ptp(a) > 0))


#: bits of an FEI1/FEI2 record's ``Bitmask 1`` saying which fields hold values
_FEI_BIT_ALPHA = 1 << 7
_FEI_BIT_PIXEL_X = 1 << 14


def _metres_to_A(value):
    """A pixel size in metres as angstroms, or None when it is not a plausible pixel."""
    value = float(value)
    return value * 1e10 if np.isfinite(value) and 1e-13 < value < 1e-5 else None


def _fei_records(mrc, n):
    """``(alpha tilts, pixel size in A)`` of an FEI1/FEI2 extended header (None if absent)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            idx = mrc.indexed_extended_header
        except Exception:  # malformed FEI header: best effort only
            idx = None
    if idx is None or len(idx) < n:
        return None, None
    bits = np.asarray(idx["Bitmask 1"][:n], dtype=np.uint64)
    no_flags = not bits.any()
    a = np.asarray(idx["Alpha tilt"][:n], dtype=np.float64)
    if not (no_flags or np.all(bits & _FEI_BIT_ALPHA)):
        a = None
    px = None
    if no_flags or int(bits[0]) & _FEI_BIT_PIXEL_X:
        px = _metres_to_A(idx["Pixel size X"][0])
    return a, px


def _extended_header_angles(mrc, raw, byteorder, n):
    """Best-effort ``(angles_deg or None, pixel_size_A or None, description)``: the
    description names the extended header that gave the angles or, failing them, the pixel
    size."""
    ext = mrc.extended_header
    if ext is None or ext.size == 0:
        return None, None, None
    ext = ext.tobytes()
    exttyp = bytes(mrc.header.exttyp).strip(b"\0 ")
    if exttyp in (b"FEI1", b"FEI2"):
        a, px = _fei_records(mrc, n)
        src = f"{exttyp.decode()} extended header"
        if a is not None and _plausible_angles(a, n):
            return a, px, src
        return None, px, (src if px is not None else None)
    if exttyp in (b"SERI", b"AGAR"):
        nint = int(np.frombuffer(raw, dtype=byteorder + "i2", count=1, offset=128)[0])
        nreal = int(np.frombuffer(raw, dtype=byteorder + "i2", count=1, offset=130)[0])
        if nreal & 1 and nint >= 2 and len(ext) >= nint * n:
            rec = np.frombuffer(ext, dtype=np.uint8, count=nint * n).reshape(n, nint)
            a = np.ascontiguousarray(rec[:, :2]).view(byteorder + "i2")[:, 0] / 100.0
            if _plausible_angles(a, n):
                return a.astype(np.float64), None, f"{exttyp.decode()} extended header"
        return None, None, None
    if not exttyp and len(ext) % 128 == 0 and len(ext) >= 128 * n:
        rec = np.frombuffer(ext, dtype=byteorder + "f4", count=32 * n).reshape(n, 32)
        a = rec[:, 0].astype(np.float64)
        if _plausible_angles(a, n):
            # the pixel size is trusted only in a record that also holds valid angles
            return a, _metres_to_A(rec[0, 11]), "FEI (pre-2014) extended header"
    return None, None, None


def header_pixel_size(voxel_x):
    """The main header's pixel size in A, or None when it is not set (0, not finite, or
    exactly 1 A: see the module notes)."""
    px = float(voxel_x)
    if not np.isfinite(px) or px <= 0 or px == 1.0:
        return None
    return px


def _sniff(path, size):
    """Reject foreign files from the raw 1024-byte header, before ``mrcfile`` sees them.

    (``mrcfile`` would otherwise try to allocate an extended header of whatever size the
    foreign bytes at offset 92 happen to encode.)
    """
    with open(path, "rb") as fh:
        head = fh.read(1024)
    if head[208:211] == b"MAP":
        stamp = head[212]
        for bo in ("<" if stamp == 0x44 else ">" if stamp == 0x11 else "<>"):
            nsymbt = int(np.frombuffer(head, dtype=bo + "i4", count=1, offset=92)[0])
            if 0 <= nsymbt <= size:
                return
        raise ValueError(f"{path} is truncated or corrupt: its header declares an extended "
                         "header larger than the file")
    for bo in "<>":
        nx, ny, nz, mode = (int(v) for v in np.frombuffer(head, dtype=bo + "i4", count=4))
        nsymbt = int(np.frombuffer(head, dtype=bo + "i4", count=1, offset=92)[0])
        if mode in _MODE_BYTES and min(nx, ny, nz) > 0 and 0 <= nsymbt <= size:
            return
    raise ValueError(f"{path} is not an MRC file: no 'MAP ' identifier and the header does "
                     "not describe an image stack")


def _open_header(path):
    import mrcfile

    size = os.path.getsize(path)
    if size < 1024:
        raise ValueError(f"{path} is not an MRC file: it has {size} bytes, fewer than the "
                         "1024 bytes of an MRC header")
    _sniff(path, size)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        try:
            mrc = mrcfile.open(path, mode="r", permissive=True, header_only=True)
        except (ValueError, EOFError, OverflowError) as exc:
            raise ValueError(f"{path} is not a readable MRC file ({exc})") from None
    return mrc, size


def inspect_mrc(path):
    """Read and check an MRC header without loading the data.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    info : dict
        ``shape`` (n_sections, ny, nx), ``dtype`` (on-disk, str), ``mode``,
        ``pixel_size_A`` (float or None: see the module notes on "not set"),
        ``pixel_size_source`` (str or None), ``old_header`` (bool: no ``MAP `` id),
        ``header_angles_deg`` (ndarray or None), ``header_angles_source`` (str or None),
        ``unsigned_bytes`` (bool: IMOD mode-0 file flagged unsigned).

    Raises
    ------
    ValueError
        Not an MRC file; truncated data block; unsupported mode.
    TypeError
        Complex-valued data (modes 3, 4).

    Warns
    -----
    OldMRCHeaderWarning
        The header has no ``MAP `` identifier (old FEI / pre-2014 file); it is read anyway.
    """
    from mrcfile.utils import dtype_from_mode

    path = os.fspath(path)
    mrc, size = _open_header(path)
    try:
        h = mrc.header
        nx, ny, nz = int(h.nx), int(h.ny), int(h.nz)
        mode = int(h.mode)
        nsymbt = int(h.nsymbt)
        has_id = bytes(h.map)[:3] == b"MAP"
        dims_ok = nx > 0 and ny > 0 and nz > 0 and 0 <= nsymbt <= size
        if not has_id and (mode not in _MODE_BYTES or not dims_ok):
            raise ValueError(f"{path} is not an MRC file: no 'MAP ' identifier and the header "
                             f"does not describe an image stack (mode {mode}, size "
                             f"{nx} x {ny} x {nz})")
        if mode not in _MODE_BYTES:
            raise ValueError(f"{path}: unsupported MRC mode {mode} (supported: "
                             f"{sorted(_MODE_BYTES)})")
        if mode in _COMPLEX_MODES:
            raise TypeError(f"{path} holds complex data (MRC mode {mode}); a tilt series must "
                            "be real")
        if not dims_ok:
            raise ValueError(f"{path}: invalid MRC header (size {nx} x {ny} x {nz}, extended "
                             f"header {nsymbt} bytes)")
        expected = 1024 + nsymbt + nx * ny * nz * _MODE_BYTES[mode]
        if size < expected:
            if not has_id:
                raise ValueError(f"{path} is not an MRC file, or a truncated old-style one: "
                                 f"the header implies {expected} bytes but the file has {size}")
            raise ValueError(f"{path} is truncated: the header describes {nz} sections of "
                             f"{nx} x {ny} (mode {mode}), {expected} bytes in all, but the file "
                             f"has only {size} bytes")
        byteorder = _file_byteorder(h)
        raw = h.tobytes()
        imod_stamp = int(np.frombuffer(raw, dtype=byteorder + "i4", count=1, offset=152)[0])
        imod_flags = int(np.frombuffer(raw, dtype=byteorder + "i4", count=1, offset=156)[0])
        unsigned_bytes = mode == 0 and imod_stamp == _IMOD_STAMP and not imod_flags & 1
        angles, ext_px, ext_src = _extended_header_angles(mrc, raw, byteorder, nz)
        pixel_size = header_pixel_size(mrc.voxel_size.x)
        pixel_source = "MRC header (cella / mx)" if pixel_size is not None else None
        if pixel_size is None and ext_px is not None:
            pixel_size, pixel_source = ext_px, ext_src
        dtype = np.dtype(np.uint8) if unsigned_bytes else dtype_from_mode(mode)
    finally:
        mrc.close()
    if not has_id:
        warnings.warn(f"{path}: old-style MRC header without the 'MAP ' identifier "
                      "(FEI / pre-2014 file); reading it permissively", OldMRCHeaderWarning,
                      stacklevel=3)
    return {
        "shape": (nz, ny, nx),
        "dtype": str(np.dtype(dtype)),
        "mode": mode,
        "pixel_size_A": pixel_size,
        "pixel_size_source": pixel_source,
        "old_header": not has_id,
        "header_angles_deg": angles,
        "header_angles_source": ext_src if angles is not None else None,
        "unsigned_bytes": unsigned_bytes,
    }


def read_mrc(path, info=None):
    """Load the data block of an MRC file as float32 ``(n_sections, ny, nx)``.

    Parameters
    ----------
    path : str or os.PathLike
    info : dict, optional
        The result of :func:`inspect_mrc` for this file (checked again if omitted).

    Returns
    -------
    data : ndarray, float32, shape (n_sections, ny, nx)
        A fresh array (the file is memory-mapped read-only and never modified).
    info : dict
        As :func:`inspect_mrc`.
    """
    import mrcfile

    path = os.fspath(path)
    if info is None:
        info = inspect_mrc(path)
    n, ny, nx = info["shape"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # header problems were reported by inspect_mrc
        with mrcfile.mmap(path, mode="r", permissive=True) as mrc:
            raw = mrc.data
            if raw is None:
                raise ValueError(f"{path}: the MRC data block could not be read")
            if info["unsigned_bytes"]:
                raw = raw.view(np.uint8)
            data = np.array(raw, dtype=np.float32, order="C").reshape(n, ny, nx)
    return data, info


def write_mrc(path, data, *, voxel_size_A=None, volume=False, label=None, overwrite=False,
              inputs=()):
    """Write a float32 3-D array to an MRC file (MRC2014, mode 2), atomically.

    Parameters
    ----------
    path : str or os.PathLike
    data : array_like, shape (nz_file, ny_file, nx_file)
        Written as sections ``data[k]``; converted to float32 (NaN/Inf are kept).
    voxel_size_A : float, optional
        Isotropic voxel (pixel) size in angstroms; stored in the header (``cella``).  When
        None, ``cella`` stays 0: the file claims no pixel size (and reads back as unknown).
    volume : bool
        Mark the file as a volume (``ispg = 1``) rather than an image stack (``ispg = 0``).
    label : str, optional
        Header label (truncated to 80 characters), after the label ``fastalign <version>``.
        These are the only labels: no creation time, so the same data and options give
        byte-identical files.
    overwrite : bool
        Replace an existing file.
    inputs : iterable of path
        Input files that must not be written to.

    Returns
    -------
    str
        The path written.
    """
    import mrcfile

    arr = as_float32_array(data, 3, "data", allow_nonfinite=True)
    if voxel_size_A is not None:
        voxel_size_A = float(voxel_size_A)
        if not (np.isfinite(voxel_size_A) and voxel_size_A > 0):
            raise ValueError(f"voxel_size_A must be a positive number, got {voxel_size_A}")
    with atomic_write(path, overwrite=overwrite, inputs=inputs) as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            with mrcfile.new(tmp, overwrite=True) as mrc:
                mrc.set_data(arr)
                if volume:
                    mrc.set_volume()
                else:
                    mrc.set_image_stack()
                if voxel_size_A is not None:
                    mrc.voxel_size = voxel_size_A
                # mrcfile's own first label carries the creation time: replace it, so that
                # the same data and options give byte-identical files
                mrc.header.label[:] = b""
                mrc.header.nlabl = 0
                mrc.add_label(f"fastalign {__version__}"[:80])
                if label:
                    mrc.add_label(str(label)[:80])
    return os.fspath(path)


def finish_mrc_header(path, *, volume, voxel_size_A, dmin, dmax, dmean, rms, labels):
    """Write the header of an MRC file whose data were written in pieces (streamed, or by Dask
    workers): image stack or volume, voxel size (None: unset), the statistics ``dmin``,
    ``dmax``, ``dmean``, ``rms`` (computed from the pieces: no second pass over the data) and
    the ``labels`` (each cut to 80 characters, replacing any)."""
    import mrcfile

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mrcfile.mmap(path, mode="r+") as mrc:
            if volume:
                mrc.set_volume()
            else:
                mrc.set_image_stack()
            if voxel_size_A is not None:
                mrc.voxel_size = float(voxel_size_A)
            h = mrc.header
            h.dmin, h.dmax, h.dmean, h.rms = dmin, dmax, dmean, rms
            h.label[:] = b""
            h.nlabl = 0
            for text in labels:
                mrc.add_label(str(text)[:80])


def write_aligned_stack(path, aligned, *, pixel_size_A=None, overwrite=False, inputs=()):
    """Write an aligned tilt series as an MRC image stack (IMOD ``.ali``), atomically.

    Parameters
    ----------
    path : str or os.PathLike
    aligned : array_like, shape (n_tilts, ny, nx)
    pixel_size_A : float, optional
        Pixel size in angstroms.
    overwrite : bool
    inputs : iterable of path
        Input files that must not be written to.

    Returns
    -------
    str
    """
    return write_mrc(path, aligned, voxel_size_A=pixel_size_A, volume=False,
                     label="aligned tilt series (n_tilts, ny, nx)", overwrite=overwrite,
                     inputs=inputs)


def write_volume(path, volume, *, voxel_size_A=None, overwrite=False, inputs=()):
    """Write a reconstruction ``(ny, nz, nx)`` as an MRC volume (``.rec``), atomically.

    Parameters
    ----------
    path : str or os.PathLike
    volume : array_like, shape (ny, nz, nx)
        fastalign's volume layout, written as stored: the file's sections run along the tilt
        axis y, its rows along the beam z and its columns along x -- the layout of IMOD
        ``tilt`` output before ``trimvol -rx``.
    voxel_size_A : float, optional
        Voxel size in angstroms (the tilt-series pixel size), set on all three axes.
    overwrite : bool
    inputs : iterable of path
        Input files that must not be written to.

    Returns
    -------
    str
    """
    return write_mrc(path, volume, voxel_size_A=voxel_size_A, volume=True,
                     label="volume: sections y, rows z, columns x", overwrite=overwrite,
                     inputs=inputs)
