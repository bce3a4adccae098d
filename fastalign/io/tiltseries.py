"""Reading a tilt series from any supported file, with its angles and pixel size."""
import os

import numpy as np

from .._validate import as_angles_deg
from . import arrays, mrc
from .angles import find_angle_file, find_mdoc, read_angles, read_mdoc

__all__ = ["FORMATS", "split_source", "detect_format", "inspect_tilt_series",
           "read_tilt_series"]

#: formats :func:`read_tilt_series` understands
FORMATS = ("mrc", "tiff", "hdf5", "zarr", "npy")

_SUFFIX_FORMAT = {**{s: "mrc" for s in mrc.MRC_SUFFIXES},
                  ".tif": "tiff", ".tiff": "tiff",
                  ".h5": "hdf5", ".hdf5": "hdf5", ".hdf": "hdf5", ".nxs": "hdf5",
                  ".zarr": "zarr", ".npy": "npy"}

_MAGIC = ((b"\x93NUMPY", "npy"), (b"\x89HDF\r\n\x1a\n", "hdf5"), (b"II*\x00", "tiff"),
          (b"MM\x00*", "tiff"), (b"II+\x00", "tiff"), (b"MM\x00+", "tiff"))


def split_source(source):
    """Split ``file.h5:/path/to/dataset`` or ``store.zarr:/array`` into file and member.

    Parameters
    ----------
    source : str or os.PathLike

    Returns
    -------
    path : str
        The file or directory.
    member : str or None
        The part after the first ``:`` whose left side exists on disk, if any.
    """
    s = os.fspath(source)
    if os.path.exists(s):
        return s, None
    idx = s.find(":")
    while idx != -1:
        left, right = s[:idx], s[idx + 1:]
        if left and os.path.exists(left):
            return left, (right or None)
        idx = s.find(":", idx + 1)
    return s, None


def detect_format(path):
    """Name the format of a file or directory: by suffix, else by content.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    str
        One of :data:`FORMATS`.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        The format cannot be told.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"input {path} does not exist")
    suffix = os.path.splitext(path.rstrip("/\\"))[1].lower()
    if suffix in _SUFFIX_FORMAT:
        return _SUFFIX_FORMAT[suffix]
    if os.path.isdir(path):
        if any(os.path.exists(os.path.join(path, m)) for m in ("zarr.json", ".zarray",
                                                                 ".zgroup")):
            return "zarr"
        raise ValueError(f"{path} is a directory but not a Zarr store")
    with open(path, "rb") as fh:
        head = fh.read(1024)
    for magic, fmt in _MAGIC:
        if head.startswith(magic):
            return fmt
    if len(head) == 1024 and head[208:211] == b"MAP":
        return "mrc"
    raise ValueError(f"cannot tell the format of {path}: supported are MRC "
                     f"({', '.join(mrc.MRC_SUFFIXES)}), TIFF, HDF5 (file.h5:/dataset), Zarr "
                     "(store.zarr[:/array]) and .npy")


def _explicit_angles(angles):
    if isinstance(angles, (str, os.PathLike)):
        p = os.fspath(angles)
        if not os.path.isfile(p):
            raise FileNotFoundError(f"angle file {p} does not exist")
        if p.lower().endswith(".mdoc"):
            return read_mdoc(p), p, p
        return read_angles(p), p, p
    try:
        a = np.asarray(angles, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError("angles must be a file path or a sequence of numbers (degrees)") \
            from None
    return a, "argument", None


def inspect_tilt_series(source, *, angles=None):
    """Describe a tilt-series file without loading its data.

    Parameters
    ----------
    source : str or os.PathLike
        A file (``.mrc .st .ali .mrcs .rec .map .preali .tif .tiff .npy``), ``file.h5`` or
        ``file.h5:/path/to/dataset``, a Zarr directory ``store.zarr`` or
        ``store.zarr:/array``.
    angles : str, os.PathLike or array_like, optional
        Tilt angles in degrees, or a file holding them (``.rawtlt``/``.tlt``, one per line, or
        a SerialEM ``.mdoc``).  When omitted they are looked for, in this order, in
        ``<stem>.rawtlt`` then ``<stem>.tlt`` next to the data (``.tlt`` first for an ``.ali``),
        ``<file>.mdoc`` or ``<stem>.mdoc``, and the file's own metadata (MRC extended
        header, HDF5/Zarr attributes ``angles_deg``).

    Returns
    -------
    metadata : dict
        ``source`` (as given), ``path`` (absolute file/store path), ``dataset`` (member
        path or None), ``format``, ``shape`` ``(n_tilts, ny, nx)``, ``dtype`` (on disk),
        ``pixel_size_A`` (float or None), ``angles_deg`` (float64 ndarray or None),
        ``angles_source`` (file path, ``"argument"``, a header description or None),
        ``files`` (every file read: data, angle file, mdoc), ``old_header`` (bool).

    Raises
    ------
    FileNotFoundError
        Missing data or angle file.
    ValueError
        Unknown or foreign format, truncated MRC, bad angle file (file and line named),
        angle count different from the number of images, duplicate angles.
    TypeError
        Complex or non-numeric data.
    ImportError
        HDF5/Zarr without the ``io`` extra installed.

    Warns
    -----
    fastalign.io.OldMRCHeaderWarning
        MRC file without the ``MAP `` identifier.
    """
    return _inspect(source, angles)[0]


def _inspect(source, angles):
    """:func:`inspect_tilt_series` plus the format reader's own info dict."""
    path, member = split_source(source)
    fmt = detect_format(path)
    if member is not None and fmt not in ("hdf5", "zarr"):
        raise ValueError(f"{source}: a ':/member' path is only meaningful for HDF5 and Zarr")
    if fmt == "mrc":
        info = mrc.inspect_mrc(path)
    elif fmt == "tiff":
        info = arrays.inspect_tiff(path)
    elif fmt == "hdf5":
        info = arrays.inspect_hdf5(path, member)
    elif fmt == "zarr":
        info = arrays.inspect_zarr(path, member)
    else:
        info = arrays.inspect_npy(path)
    n = info["shape"][0]
    files = [os.path.abspath(path)]

    if angles is not None:
        a, src, f = _explicit_angles(angles)
    else:
        a = src = f = None
        angle_file = find_angle_file(path)
        mdoc = find_mdoc(path) if angle_file is None else None
        if angle_file is not None:
            a, src, f = read_angles(angle_file), angle_file, angle_file
        elif mdoc is not None:
            a, src, f = read_mdoc(mdoc), mdoc, mdoc
        elif info.get("header_angles_deg") is not None:
            a, src = info["header_angles_deg"], info["header_angles_source"]
    if f is not None:
        files.append(os.path.abspath(f))
    if a is not None:
        a = np.asarray(a, dtype=np.float64)
        if a.ndim == 1 and a.size != n:
            raise ValueError(f"{src} has {a.size} tilt angles but {source} has {n} images")
        a = as_angles_deg(a, n_expected=n, name=f"tilt angles from {src}")

    return {
        "source": os.fspath(source),
        "path": os.path.abspath(path),
        "dataset": info.get("dataset"),
        "format": fmt,
        "shape": tuple(info["shape"]),
        "dtype": info["dtype"],
        "pixel_size_A": info["pixel_size_A"],
        "angles_deg": a,
        "angles_source": src,
        "files": files,
        "old_header": bool(info.get("old_header", False)),
    }, info


def read_tilt_series(path, *, angles=None):
    """Read a tilt series, its tilt angles and pixel size from any supported file.

    Parameters
    ----------
    path : str or os.PathLike
        MRC family (``.mrc .st .ali .mrcs .rec .map .preali``, old FEI headers accepted with a
        warning), TIFF stack (``.tif``/``.tiff``), HDF5 (``file.h5`` or
        ``file.h5:/path/to/dataset``), Zarr directory store (``store.zarr`` or
        ``store.zarr:/array``) or ``.npy``.  The format comes from the suffix, else from the
        content.
    angles : str, os.PathLike or array_like, optional
        Tilt angles (degrees) or a file holding them; see :func:`inspect_tilt_series` for the
        files looked for when omitted.

    Returns
    -------
    data : ndarray, float32, shape (n_tilts, ny, nx)
        A fresh C-contiguous array; a single 2-D image becomes ``(1, ny, nx)``.  NaN/Inf are
        passed through unchanged (rejecting or filling them is the caller's choice).
    angles_deg : ndarray, float64, shape (n_tilts,) or None
        None when no angles were given or found.
    metadata : dict
        ``pixel_size_A`` (float in angstroms, or None when unknown), ``source``, ``path``,
        ``dataset``, ``format``, ``shape``, ``dtype`` (on disk), ``angles_source``,
        ``files``, ``old_header``.

    Raises
    ------
    FileNotFoundError, ValueError, TypeError, ImportError
        See :func:`inspect_tilt_series`; the input files are never modified.

    Examples
    --------
    >>> data, angles, meta = read_tilt_series("tomo.st")          # doctest: +SKIP
    >>> data, angles, meta = read_tilt_series("run.h5:/exchange/data",
    ...                                       angles="run.rawtlt")  # doctest: +SKIP
    """
    meta, info = _inspect(path, angles)
    data = _load(meta, info)
    angles_deg = meta.pop("angles_deg")
    return data, angles_deg, meta


def _load(meta, info):
    """Load the data described by :func:`_inspect` as float32 ``(n_tilts, ny, nx)``."""
    fmt, file_path = meta["format"], meta["path"]
    if fmt == "mrc":
        return mrc.read_mrc(file_path, info)[0]
    if fmt == "tiff":
        return arrays.read_tiff(file_path, info)
    if fmt == "hdf5":
        return arrays.read_hdf5(file_path, info)
    if fmt == "zarr":
        return arrays.read_zarr(file_path, info)
    return arrays.read_npy(file_path, info)
