"""Gatan DigitalMicrograph (``.dm3``/``.dm4``) tilt series, read through RosettaSciIO.

The files are parsed by ``rsciio.digitalmicrograph.file_reader`` (the ``dm`` extra:
``pip install "fastalign[dm]"``), imported only when a DM input is read.  Three layouts:

* **one file holding a stack** (3-D image, the tilt axis first, as Gatan's tomography
  acquisition saves it).  Tilt angles, the first found of: the per-image list
  ``ImageTags/Meta Data/Dimension info/2/Data`` (label "Tilt angle"), the stack axis'
  calibration when its unit is degrees (origin + scale * index), the acquisition setup
  ``ImageTags/Tomography/Tomography setup/Tilt angles`` (minimum, maximum, step) when it
  yields as many angles as images.  The stage alpha of a stack file is one reading, not
  per image, and is not used.
* **a folder of files with one 2-D image each** (one per tilt), read in file-name order, or
  **a list of such files** (Python API; a quoted glob pattern such as ``'dir/*.dm3'`` on the
  command line), read in the given (for a pattern: sorted) order.  The tilt angle of each
  image is its stage alpha, ``ImageTags/Microscope Info/Stage Position/Stage Alpha`` (the
  tag ETSpy reads through HyperSpy's ``tilt_alpha``).  Every image must have the same size.
* **one file holding a single 2-D image**: a one-tilt series.

The pixel size comes from the calibration of the image's x axis (``ImageData/Calibrations``,
units ``nm``, ``µm``, ``Å`` ... converted to angstroms); an uncalibrated axis (no unit, or a
unit that is not a length) gives None.

DM input is read whole (DM series are small); :class:`fastalign.io.slabs.SlabSource` refuses
it (convert to MRC, HDF5 or Zarr for the Dask path).
"""
import glob
import os

import numpy as np

from .arrays import _UNIT_TO_A, _check_real

__all__ = ["DM_SUFFIXES", "dm_sources", "is_dm_file", "inspect_dm", "read_dm"]

DM_SUFFIXES = (".dm3", ".dm4")

_ALPHA_TAG = ("Microscope Info", "Stage Position", "Stage Alpha")
_DEGREE_UNITS = ("deg", "degree", "degrees", "°", "\u00b0")

#: tolerated relative difference between the pixel sizes of the files of one series
PIXEL_SIZE_RTOL = 1e-2


def is_dm_file(path):
    """Whether ``path`` has a DM suffix (``.dm3``/``.dm4``, any case)."""
    return os.fspath(path).lower().endswith(DM_SUFFIXES)


def _dir_dm_files(path):
    names = sorted(n for n in os.listdir(path) if is_dm_file(n)
                   and os.path.isfile(os.path.join(path, n)))
    return [os.path.join(path, n) for n in names]


def dm_sources(source):
    """The DM files a tilt-series source names, or None when it is not a DM source.

    Parameters
    ----------
    source : str, os.PathLike or sequence of them
        A ``.dm3``/``.dm4`` file, a directory holding DM files, a glob pattern matching DM
        files, or a list of DM files.

    Returns
    -------
    list of str or None
        The files in reading order (directory and pattern: sorted by name; list: as given).

    Raises
    ------
    FileNotFoundError
        A listed file is missing, or a pattern matches nothing.
    ValueError
        An empty list, or a list or pattern naming files that are not DM files.
    """
    if isinstance(source, (list, tuple)):
        files = [os.fspath(f) for f in source]
        if not files:
            raise ValueError("the list of input files is empty")
        for f in files:
            if not is_dm_file(f):
                raise ValueError(f"{f}: a list of files is only read as a DM series "
                                 "(.dm3/.dm4 files, one image each)")
            if not os.path.isfile(f):
                raise FileNotFoundError(f"input {f} does not exist")
        return files
    s = os.fspath(source)
    if os.path.isdir(s):
        files = _dir_dm_files(s)
        return files or None
    if os.path.isfile(s):
        return [s] if is_dm_file(s) else None
    if glob.has_magic(s):
        matches = sorted(m for m in glob.glob(s) if os.path.isfile(m))
        if not matches:
            raise FileNotFoundError(f"no file matches {s}")
        other = [m for m in matches if not is_dm_file(m)]
        if other:
            raise ValueError(f"{s} matches {other[0]}, which is not a DM file: a file pattern "
                             "is only read as a DM series (.dm3/.dm4)")
        return matches
    return None


def _file_reader():
    try:
        from rsciio.digitalmicrograph import file_reader
    except ImportError:
        raise ImportError('reading Gatan DM3/DM4 files needs RosettaSciIO: pip install '
                          '"fastalign[dm]"') from None
    return file_reader


def _read_image(path, lazy):
    """The one image dict (``data``, ``axes``, ``original_metadata``) of a DM file."""
    file_reader = _file_reader()
    try:
        images = file_reader(path, lazy=lazy)
    except (ImportError, MemoryError):
        raise
    except Exception as exc:  # the parser fails in many ways on a foreign/corrupt file
        raise ValueError(f"{path} is not a readable DM file ({type(exc).__name__}: "
                         f"{exc})") from None
    if len(images) != 1:
        raise ValueError(f"{path} holds {len(images)} images; fastalign reads one image or "
                         "one image stack per DM file")
    return images[0]


def _tag(tree, *keys):
    for key in keys:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def _image_tags(image):
    # rsciio puts the tags of the image it returns under ImageList/TagGroup0
    return _tag(image["original_metadata"], "ImageList", "TagGroup0", "ImageTags") or {}


def _number(value):
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) else None


def _pixel_size(image):
    """``(pixel size in A or None, description)`` from the x axis calibration."""
    axis = image["axes"][-1]
    unit = str(axis.get("units") or "").strip()
    factor = _UNIT_TO_A.get(unit.lower())
    scale = _number(axis.get("scale"))
    if factor is None or scale is None or scale <= 0:
        return None, None
    return scale * factor, f"DM calibration ({scale:.6g} {unit} per pixel)"


def _stack_angles(image, n):
    """``(angles or None, description)`` of a DM stack of ``n`` images."""
    tags = _image_tags(image)
    dim = _tag(tags, "Meta Data", "Dimension info", "2")
    if isinstance(dim, dict) and "tilt" in str(dim.get("Label", "")).lower():
        data = dim.get("Data")
        if isinstance(data, dict) and set(data) == {str(i) for i in range(n)}:
            a = [_number(data[str(i)]) for i in range(n)]
            if None not in a:
                return np.asarray(a, dtype=np.float64), \
                    "DM tags (Meta Data/Dimension info: one angle per image)"
    axis = image["axes"][0]
    if str(axis.get("units") or "").strip().lower() in _DEGREE_UNITS:
        offset, scale = _number(axis.get("offset")), _number(axis.get("scale"))
        if offset is not None and scale:
            return offset + scale * np.arange(n, dtype=np.float64), \
                "DM stack-axis calibration (degrees)"
    setup = _tag(tags, "Tomography", "Tomography setup", "Tilt angles")
    if isinstance(setup, dict):
        lo = _number(setup.get("Minimum tilt angle (deg)"))
        hi = _number(setup.get("Maximum tilt angle (deg)"))
        step = _number(setup.get("Tilt angle step (deg)"))
        if None not in (lo, hi, step) and step > 0:
            a = lo + step * np.arange(n, dtype=np.float64)
            if abs(a[-1] - hi) <= 1e-6 * max(1.0, abs(hi)):
                return a, "DM tags (Tomography setup: minimum, maximum, step)"
    return None, None


def _stage_alpha(image):
    return _number(_tag(_image_tags(image), *_ALPHA_TAG))


def inspect_dm(files):
    """Shape, dtype, pixel size and tilt angles of a DM tilt series, without loading it.

    Parameters
    ----------
    files : list of str
        One file holding a stack or a single image, or several files of one 2-D image each
        (:func:`dm_sources`).

    Returns
    -------
    dict
        ``shape`` ``(n_tilts, ny, nx)``, ``dtype``, ``pixel_size_A`` (float or None),
        ``pixel_size_source``, ``header_angles_deg`` (ndarray or None),
        ``header_angles_source``, ``angles_missing`` (files whose tags hold no stage alpha),
        ``files``.

    Raises
    ------
    ImportError
        RosettaSciIO is not installed.
    ValueError
        An unreadable file, a file with several images, a spectrum image, a 3-D image in a
        series of files, images of different sizes or pixel sizes (the file named).
    TypeError
        Complex or colour data.
    """
    files = [os.fspath(f) for f in files]
    first = _read_image(files[0], lazy=True)
    shape = tuple(int(s) for s in first["data"].shape)
    if any(ax.get("navigate") for ax in first["axes"][-2:]) or len(shape) not in (2, 3):
        raise ValueError(f"{files[0]} holds data of shape {shape} that is not an image or an "
                         "image stack (a spectrum or spectrum image?)")
    dtype = _check_real(first["data"].dtype, files[0])
    pixel, pixel_src = _pixel_size(first)
    info = {"files": files, "dtype": dtype, "pixel_size_A": pixel,
            "pixel_size_source": pixel_src, "angles_missing": []}
    if len(shape) == 3:
        if len(files) > 1:
            raise ValueError(f"{files[0]} holds a stack of {shape[0]} images; a DM series of "
                             "several files needs one 2-D image per file")
        angles, src = _stack_angles(first, shape[0])
        info.update(shape=shape, header_angles_deg=angles, header_angles_source=src)
        return info
    alphas = []
    for k, f in enumerate(files):
        image = first if k == 0 else _read_image(f, lazy=True)
        s = tuple(int(v) for v in image["data"].shape)
        if len(s) != 2:
            raise ValueError(f"{f} holds data of shape {s}; a DM series of several files "
                             "needs one 2-D image per file")
        if s != shape:
            raise ValueError(f"{f} is {s[0]} x {s[1]} pixels but {files[0]} is {shape[0]} x "
                             f"{shape[1]}: every image of a DM series must have one size")
        _check_real(image["data"].dtype, f)
        px, _ = _pixel_size(image)
        if (px is None) != (pixel is None) or (
                px is not None and abs(px - pixel) > PIXEL_SIZE_RTOL * pixel):
            raise ValueError(f"{f} has pixel size {_fmt_px(px)} but {files[0]} has "
                             f"{_fmt_px(pixel)}: a DM series must have one magnification")
        alpha = _stage_alpha(image)
        if alpha is None:
            info["angles_missing"].append(f)
        alphas.append(alpha)
    found = not info["angles_missing"]
    info.update(shape=(len(files),) + shape,
                header_angles_deg=np.asarray(alphas, dtype=np.float64) if found else None,
                header_angles_source=("DM tags (Microscope Info/Stage Position/Stage Alpha)"
                                      if found else None))
    return info


def _fmt_px(px):
    return "unknown" if px is None else f"{px:.4g} A"


def read_dm(files, info):
    """Load a DM tilt series described by :func:`inspect_dm` as float32
    ``(n_tilts, ny, nx)``."""
    out = np.empty(info["shape"], dtype=np.float32)
    if len(files) == 1:
        out[...] = np.asarray(_read_image(files[0], lazy=False)["data"]).reshape(info["shape"])
        return out
    for k, f in enumerate(files):
        out[k] = _read_image(f, lazy=False)["data"]
    return out
