"""Reading a tilt series from any supported file, with its angles and pixel size."""
import os
import warnings

import numpy as np

from .._validate import as_angles_deg
from . import arrays, dm, mrc
from .angles import find_angle_file, find_mdoc, read_angles, read_mdoc, read_mdoc_pixel_size

__all__ = ["FORMATS", "split_source", "detect_format", "inspect_tilt_series",
           "read_tilt_series"]

#: formats :func:`read_tilt_series` understands
FORMATS = ("mrc", "tiff", "hdf5", "zarr", "npy", "dm")

_SUFFIX_FORMAT = {**{s: "mrc" for s in mrc.MRC_SUFFIXES},
                  ".tif": "tiff", ".tiff": "tiff",
                  ".h5": "hdf5", ".hdf5": "hdf5", ".hdf": "hdf5", ".nxs": "hdf5",
                  ".zarr": "zarr", ".npy": "npy", ".dm3": "dm", ".dm4": "dm"}

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
        A file, a Zarr store directory, or a folder of DM files.

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
        if dm.dm_sources(path):
            return "dm"
        raise ValueError(f"{path} is a directory but neither a Zarr store nor a folder of "
                         "DM files (.dm3/.dm4)")
    with open(path, "rb") as fh:
        head = fh.read(1024)
    for magic, fmt in _MAGIC:
        if head.startswith(magic):
            return fmt
    if len(head) == 1024 and head[208:211] == b"MAP":
        return "mrc"
    raise ValueError(f"cannot tell the format of {path}: supported are MRC "
                     f"({', '.join(mrc.MRC_SUFFIXES)}), TIFF, HDF5 (file.h5:/dataset), Zarr "
                     "(store.zarr[:/array]), .npy and Gatan DM (.dm3/.dm4 or a folder of "
                     "them)")


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


def inspect_tilt_series(source, *, angles=None, pixel_size_A=None):
    """Describe a tilt-series file without loading its data.

    Parameters
    ----------
    source : str, os.PathLike or list of them
        A file (``.mrc .st .ali .mrcs .rec .map .preali .tif .tiff .npy .dm3 .dm4``),
        ``file.h5`` or ``file.h5:/path/to/dataset``, a Zarr directory ``store.zarr`` or
        ``store.zarr:/array``, a folder of DM files (one image per tilt), a glob pattern
        matching DM files (``"dir/*.dm3"``) or a list of DM files (:mod:`fastalign.io.dm`).
    angles : str, os.PathLike or array_like, optional
        Tilt angles in degrees, or a file holding them (``.rawtlt``/``.tlt``, one per line, or
        a SerialEM ``.mdoc``).  When omitted they are looked for, in this order, in
        ``<stem>.rawtlt`` then ``<stem>.tlt`` next to the data (``.tlt`` first for an ``.ali``),
        ``<file>.mdoc`` or ``<stem>.mdoc``, and the file's own metadata (MRC extended
        header, HDF5/Zarr attributes ``angles_deg``, DM tags).  For a DM folder the stem is
        the folder's name (``DM_Series_Test.rawtlt`` next to ``DM_Series_Test/``).
    pixel_size_A : float, optional
        The pixel size in angstroms, overriding whatever the files say.  When omitted it is
        taken, in this order, from the file's header (MRC: only when really set, see
        :mod:`fastalign.io.mrc`; MRC FEI extended header; TIFF resolution; HDF5/Zarr
        attribute; DM calibration), then from the ``PixelSpacing`` of a SerialEM ``.mdoc``
        (given as ``angles`` or found next to the data); else it is unknown (None) -- never
        silently 1 A.

    Returns
    -------
    metadata : dict
        ``source`` (as given; a list of files is described in words), ``path`` (absolute
        file/store path; for a DM folder, pattern or list the folder holding the files),
        ``dataset`` (member path or None), ``format``, ``shape`` ``(n_tilts, ny, nx)``,
        ``dtype`` (on disk), ``pixel_size_A`` (float or None), ``pixel_size_source`` (where
        it came from, or None), ``angles_deg`` (float64 ndarray or None), ``angles_source``
        (file path, ``"argument"``, a header description or None), ``files`` (every file
        read: data, angle file, mdoc), ``old_header`` (bool).

    Raises
    ------
    FileNotFoundError
        Missing data or angle file.
    ValueError
        Unknown or foreign format, truncated MRC, bad angle file (file and line named),
        angle count different from the number of images, duplicate angles, a DM series with
        images of different sizes or without tilt-angle tags (file named), a pixel size that
        is not a positive number.
    TypeError
        Complex or non-numeric data.
    ImportError
        HDF5/Zarr without the ``io`` extra, DM without the ``dm`` extra installed.

    Warns
    -----
    fastalign.io.OldMRCHeaderWarning
        MRC file without the ``MAP `` identifier.
    """
    return _inspect(source, angles, pixel_size_A=pixel_size_A)[0]


def _source_label(source):
    if isinstance(source, (list, tuple)):
        names = [os.fspath(f) for f in source]
        if len(names) <= 2:
            return ", ".join(names)
        return f"{names[0]} ... {names[-1]} ({len(names)} files)"
    return os.fspath(source)


def _check_pixel_size(value):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"pixel size must be a number of angstroms, got {value!r}") from None
    if not (np.isfinite(v) and v > 0):
        raise ValueError(f"pixel size must be a positive number of angstroms, got {value!r}")
    return v


def _inspect(source, angles, *, pixel_size_A=None, strict=True):
    """:func:`inspect_tilt_series` plus the format reader's own info dict.

    With ``strict=False`` (``fastalign info``) problems with the tilt angles (count,
    duplicates, DM tags missing) do not raise: the angles found are kept and the problem is
    recorded as ``metadata["angles_problem"]``.
    """
    if pixel_size_A is not None:
        pixel_size_A = _check_pixel_size(pixel_size_A)
    dm_files = dm.dm_sources(source)
    if dm_files is not None:
        path, member, fmt = _dm_path(source, dm_files), None, "dm"
    else:
        path, member = split_source(source)
        fmt = detect_format(path)
    if member is not None and fmt not in ("hdf5", "zarr"):
        raise ValueError(f"{source}: a ':/member' path is only meaningful for HDF5 and Zarr")
    if fmt == "dm":
        info = dm.inspect_dm(dm_files)
    elif fmt == "mrc":
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
    files = [os.path.abspath(f) for f in info.get("files", [path])]
    label = _source_label(source)

    mdoc = None
    problem = None
    if angles is not None:
        a, src, f = _explicit_angles(angles)
        if f is not None and f.lower().endswith(".mdoc"):
            mdoc = f
    else:
        mdoc = find_mdoc(path)
        a, src, f = _found_angles(path, mdoc, info, n, label)
        if a is None and info.get("angles_missing"):
            problem = (f"{info['angles_missing'][0]}: no tilt angle in its DM tags "
                       f"({'/'.join(dm._ALPHA_TAG)}); pass the angles with --angles FILE "
                       f"(one per line, in the order of the files)")
    if f is not None:
        files.append(os.path.abspath(f))

    pixel, pixel_src = info["pixel_size_A"], info.get("pixel_size_source")
    if pixel_size_A is not None:
        pixel, pixel_src = pixel_size_A, "given (--pixel-size / pixel_size_A)"
    elif pixel is None and mdoc is not None:
        pixel = read_mdoc_pixel_size(mdoc)
        if pixel is not None:
            pixel_src = f"{mdoc} (PixelSpacing)"
            if os.path.abspath(mdoc) not in files:
                files.append(os.path.abspath(mdoc))
    if pixel is None:
        pixel_src = None
    elif pixel_src is None:
        pixel_src = "file metadata"

    if a is not None:
        a = np.asarray(a, dtype=np.float64)
        try:
            if a.ndim == 1 and a.size != n:
                raise ValueError(f"{src} has {a.size} tilt angles but {label} has {n} images")
            a = as_angles_deg(a, n_expected=n, name=f"tilt angles from {src}")
        except ValueError as exc:
            if strict:
                raise
            problem = str(exc)
    if problem is not None and strict:
        raise ValueError(problem)

    meta = {
        "source": label,
        "path": os.path.abspath(path),
        "dataset": info.get("dataset"),
        "format": fmt,
        "shape": tuple(info["shape"]),
        "dtype": info["dtype"],
        "pixel_size_A": pixel,
        "pixel_size_source": pixel_src,
        "angles_deg": a,
        "angles_source": src,
        "files": files,
        "old_header": bool(info.get("old_header", False)),
    }
    if not strict:
        meta["angles_problem"] = problem
    return meta, info


def _found_angles(path, mdoc, info, n, label):
    """``(angles, source, file)`` from the first of: angle file, mdoc, header.

    A file found next to the data (not given) whose angle count differs from the number of
    images is passed over, with a warning, when a later source has the right count (e.g. an
    ``HAADF.rawtlt`` written for ``HAADF.mrc`` next to an ``HAADF.dm3`` of other tilts).
    """
    sources = []
    angle_file = find_angle_file(path)
    if angle_file is not None:
        sources.append((angle_file, lambda f=angle_file: read_angles(f), angle_file))
    if mdoc is not None:
        sources.append((mdoc, lambda f=mdoc: read_mdoc(f), mdoc))
    if info.get("header_angles_deg") is not None:
        sources.append((info["header_angles_source"], lambda: info["header_angles_deg"], None))
    first = None
    for src, read, f in sources:
        a = read()
        if np.ndim(a) == 1 and np.size(a) == n:
            if first is not None:
                warnings.warn(f"ignored {first[1]} ({np.size(first[0])} tilt angles for {n} "
                              f"images of {label}); using the angles from {src}",
                              stacklevel=4)
            return a, src, f
        if first is None:
            first = (a, src, f)
    return first if first is not None else (None, None, None)


def _dm_path(source, files):
    """The path that names a DM series: the file, the folder, or the files' common folder."""
    if not isinstance(source, (list, tuple)) and os.path.exists(os.fspath(source)):
        return os.fspath(source)
    if len(files) == 1:
        return files[0]
    return os.path.commonpath([os.path.abspath(f) for f in files])


def read_tilt_series(path, *, angles=None, pixel_size_A=None):
    """Read a tilt series, its tilt angles and pixel size from any supported file.

    Parameters
    ----------
    path : str, os.PathLike or list of them
        MRC family (``.mrc .st .ali .mrcs .rec .map .preali``, old FEI headers accepted with a
        warning), TIFF stack (``.tif``/``.tiff``), HDF5 (``file.h5`` or
        ``file.h5:/path/to/dataset``), Zarr directory store (``store.zarr`` or
        ``store.zarr:/array``), ``.npy``, or Gatan DM (``.dm3``/``.dm4`` stack, a folder,
        glob pattern or list of single-image DM files; needs the ``dm`` extra).  The format
        comes from the suffix, else from the content.
    angles : str, os.PathLike or array_like, optional
        Tilt angles (degrees) or a file holding them; see :func:`inspect_tilt_series` for the
        files looked for when omitted.
    pixel_size_A : float, optional
        Pixel size in angstroms, overriding the files' metadata (see
        :func:`inspect_tilt_series` for where it is looked for when omitted).

    Returns
    -------
    data : ndarray, float32, shape (n_tilts, ny, nx)
        A fresh C-contiguous array; a single 2-D image becomes ``(1, ny, nx)``.  NaN/Inf are
        passed through unchanged (rejecting or filling them is the caller's choice).
    angles_deg : ndarray, float64, shape (n_tilts,) or None
        None when no angles were given or found.
    metadata : dict
        ``pixel_size_A`` (float in angstroms, or None when unknown), ``pixel_size_source``,
        ``source``, ``path``, ``dataset``, ``format``, ``shape``, ``dtype`` (on disk),
        ``angles_source``, ``files``, ``old_header``.

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
    meta, info = _inspect(path, angles, pixel_size_A=pixel_size_A)
    data = _load(meta, info)
    angles_deg = meta.pop("angles_deg")
    return data, angles_deg, meta


def _load(meta, info):
    """Load the data described by :func:`_inspect` as float32 ``(n_tilts, ny, nx)``."""
    fmt, file_path = meta["format"], meta["path"]
    if fmt == "dm":
        return dm.read_dm(info["files"], info)
    if fmt == "mrc":
        return mrc.read_mrc(file_path, info)[0]
    if fmt == "tiff":
        return arrays.read_tiff(file_path, info)
    if fmt == "hdf5":
        return arrays.read_hdf5(file_path, info)
    if fmt == "zarr":
        return arrays.read_zarr(file_path, info)
    return arrays.read_npy(file_path, info)
