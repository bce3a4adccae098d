"""Generic array containers holding a tilt series: TIFF stacks, HDF5, Zarr and ``.npy``.

Each format has an ``inspect_*`` function (shape, on-disk dtype, pixel size and angles from
metadata, without loading the data) and a ``read_*`` function (the data as float32).  The
file libraries are imported lazily; HDF5 and Zarr need the ``io`` extra
(``pip install fastalign[io]``).

Metadata looked for (best effort):

* TIFF: pixel size from ``XResolution`` with the ImageJ ``unit`` (``nm``, ``micron``/``um``,
  ``A``/``angstrom``, ...) or ``ResolutionUnit`` = centimetre.
* HDF5 and Zarr: array attributes ``angles_deg`` / ``tilt_angles`` / ``angles`` (degrees) and
  ``pixel_size_A`` / ``pixel_size_angstrom`` (angstroms).
"""
import os

import numpy as np

__all__ = ["inspect_tiff", "read_tiff", "inspect_hdf5", "read_hdf5", "inspect_zarr",
           "read_zarr", "inspect_npy", "read_npy", "stack_shape"]

_ANGLE_ATTRS = ("angles_deg", "tilt_angles", "angles")
_PIXEL_ATTRS = ("pixel_size_A", "pixel_size_angstrom")
_UNIT_TO_A = {"a": 1.0, "å": 1.0, "\u212b": 1.0, "angstrom": 1.0, "angstroms": 1.0,
              "nm": 10.0, "nanometer": 10.0, "nanometers": 10.0, "um": 1e4, "µm": 1e4,
              "\u03bcm": 1e4, "micron": 1e4, "microns": 1e4, "micrometer": 1e4, "mm": 1e7,
              "pm": 1e-2}


def stack_shape(shape, where):
    """Interpret an array shape as a tilt series ``(n_tilts, ny, nx)``.

    Parameters
    ----------
    shape : tuple of int
    where : str
        Name of the source, for messages.

    Returns
    -------
    tuple of int
        2-D ``(ny, nx)`` becomes ``(1, ny, nx)``; length-1 axes beyond three are dropped.

    Raises
    ------
    ValueError
        Not interpretable as 2-D or 3-D, or empty.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) > 3:
        squeezed = tuple(s for s in shape if s != 1)
        shape = (1,) * max(0, 3 - len(squeezed)) + squeezed if len(squeezed) <= 3 else shape
    if len(shape) == 2:
        shape = (1,) + shape
    if len(shape) != 3:
        raise ValueError(f"{where} has shape {shape}: a tilt series must be 3-D "
                         "(n_tilts, ny, nx) or a single 2-D image")
    if min(shape) <= 0:
        raise ValueError(f"{where} is empty (shape {shape})")
    return shape


def _check_real(dtype, where):
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.complexfloating):
        raise TypeError(f"{where} holds complex data ({dtype}); a tilt series must be real")
    if not (np.issubdtype(dtype, np.number) or dtype == np.bool_):
        raise TypeError(f"{where} holds non-numeric data ({dtype})")
    return str(dtype)


def _attr_metadata(attrs, where):
    """``(angles, angles source, pixel size, pixel-size source)`` from array attributes."""
    angles = source = pixel = pixel_source = None
    for key in _ANGLE_ATTRS:
        if key in attrs:
            try:
                angles = np.asarray(attrs[key], dtype=np.float64).ravel()
            except (TypeError, ValueError):
                raise ValueError(f"{where}: attribute {key!r} does not hold numeric tilt "
                                 "angles") from None
            source = f"{where} attribute {key!r}"
            break
    for key in _PIXEL_ATTRS:
        if key in attrs:
            try:
                value = float(np.asarray(attrs[key]).ravel()[0])
            except (TypeError, ValueError, IndexError):
                raise ValueError(f"{where}: attribute {key!r} is not a number") from None
            if np.isfinite(value) and value > 0:
                pixel, pixel_source = value, f"{where} attribute {key!r}"
            break
    return angles, source, pixel, pixel_source


# --------------------------------------------------------------------------------- TIFF


def _tiff_pixel_size(tf):
    try:
        page = tf.pages[0]
        xres = page.tags.get("XResolution")
        if xres is None:
            return None
        num, den = xres.value
        if not num or not den:
            return None
        size = float(den) / float(num)  # units per pixel
        unit = (tf.imagej_metadata or {}).get("unit")
        if unit:
            factor = _UNIT_TO_A.get(str(unit).strip().lower())
            return size * factor if factor else None
        resunit = page.tags.get("ResolutionUnit")
        if resunit is not None and int(resunit.value) == 3:  # centimetre
            return size * 1e8
    except Exception:  # best effort: malformed tags never stop a read
        return None
    return None


def _open_tiff(path):
    import tifffile

    try:
        return tifffile.TiffFile(path)
    except Exception as exc:
        raise ValueError(f"{path} is not a readable TIFF file ({exc})") from None


def inspect_tiff(path):
    """Shape, dtype and pixel size of a (multi-page) TIFF stack.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    dict
        ``shape``, ``dtype``, ``pixel_size_A``, ``header_angles_deg`` (None),
        ``header_angles_source`` (None).
    """
    path = os.fspath(path)
    with _open_tiff(path) as tf:
        if not tf.series:
            raise ValueError(f"{path}: TIFF file holds no images")
        series = tf.series[0]
        dtype = _check_real(series.dtype, path)
        shape = stack_shape(series.shape, path)
        pixel = _tiff_pixel_size(tf)
    return {"shape": shape, "dtype": dtype, "pixel_size_A": pixel,
            "pixel_size_source": "TIFF resolution tags" if pixel is not None else None,
            "header_angles_deg": None, "header_angles_source": None}


def read_tiff(path, info):
    """Load the first image series of a TIFF file as float32 ``(n_tilts, ny, nx)``."""
    path = os.fspath(path)
    with _open_tiff(path) as tf:
        data = tf.series[0].asarray()
    return np.ascontiguousarray(data, dtype=np.float32).reshape(info["shape"])


# --------------------------------------------------------------------------------- HDF5


def _import_h5py():
    try:
        import h5py
    except ImportError:
        raise ImportError("reading HDF5 needs h5py: pip install 'fastalign[io]'") from None
    return h5py


def _find_hdf5_dataset(f, dataset, path):
    h5py = _import_h5py()
    if dataset:
        key = dataset if dataset.startswith("/") else "/" + dataset
        if key not in f:
            raise ValueError(f"{path} has no dataset {key}")
        obj = f[key]
        if not isinstance(obj, h5py.Dataset):
            raise ValueError(f"{path}:{key} is a group, not a dataset")
        return obj
    found = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and obj.ndim in (2, 3):
            found.append("/" + name)

    f.visititems(visit)
    if not found:
        raise ValueError(f"{path} holds no 2-D or 3-D dataset")
    if len(found) > 1:
        raise ValueError(f"{path} holds several datasets ({', '.join(found[:10])}); choose one "
                         f"as {path}:/name")
    return f[found[0]]


def _open_hdf5(path):
    h5py = _import_h5py()
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise ValueError(f"{path} is not a readable HDF5 file ({exc})") from None


def inspect_hdf5(path, dataset=None):
    """Shape, dtype and metadata of an HDF5 dataset.

    Parameters
    ----------
    path : str or os.PathLike
    dataset : str, optional
        Path of the dataset inside the file (``/path/to/dataset``).  When omitted the file
        must hold exactly one 2-D or 3-D dataset.

    Returns
    -------
    dict
        ``shape``, ``dtype``, ``pixel_size_A``, ``header_angles_deg``,
        ``header_angles_source``, ``dataset`` (the dataset path used).
    """
    path = os.fspath(path)
    with _open_hdf5(path) as f:
        ds = _find_hdf5_dataset(f, dataset, path)
        where = f"{path}:{ds.name}"
        dtype = _check_real(ds.dtype, where)
        shape = stack_shape(ds.shape, where)
        angles, src, pixel, pixel_src = _attr_metadata(ds.attrs, where)
        name = ds.name
    return {"shape": shape, "dtype": dtype, "pixel_size_A": pixel,
            "pixel_size_source": pixel_src, "header_angles_deg": angles,
            "header_angles_source": src, "dataset": name}


def read_hdf5(path, info):
    """Load the dataset ``info['dataset']`` as float32 ``(n_tilts, ny, nx)``."""
    path = os.fspath(path)
    with _open_hdf5(path) as f:
        ds = f[info["dataset"]]
        out = np.empty(ds.shape, dtype=np.float32)
        ds.read_direct(out)
    return out.reshape(info["shape"])


# --------------------------------------------------------------------------------- Zarr


def _import_zarr():
    try:
        import zarr
    except ImportError:
        raise ImportError("reading Zarr needs zarr: pip install 'fastalign[io]'") from None
    return zarr


def _zarr_array(path, dataset):
    zarr = _import_zarr()
    if not os.path.isdir(path):
        raise ValueError(f"{path} is not a Zarr directory store")
    try:
        node = zarr.open(path, mode="r")
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise ValueError(f"{path} is not a readable Zarr store ({exc})") from None
    if dataset:
        key = dataset.strip("/")
        if isinstance(node, zarr.Array):
            if key:
                raise ValueError(f"{path} is a single Zarr array; it has no member {dataset}")
            return node, "/"
        try:
            node = node[key]
        except KeyError:
            raise ValueError(f"{path} has no array /{key}") from None
        if not isinstance(node, zarr.Array):
            raise ValueError(f"{path}:/{key} is a group, not an array")
        return node, "/" + key
    if isinstance(node, zarr.Array):
        return node, "/"
    found = [(name, obj) for name, obj in node.members(max_depth=None)
             if isinstance(obj, zarr.Array) and obj.ndim in (2, 3)]
    if not found:
        raise ValueError(f"{path} holds no 2-D or 3-D Zarr array")
    if len(found) > 1:
        names = ", ".join("/" + n for n, _ in found[:10])
        raise ValueError(f"{path} holds several arrays ({names}); choose one as {path}:/name")
    return found[0][1], "/" + found[0][0]


def inspect_zarr(path, dataset=None):
    """Shape, dtype and metadata of a Zarr array in a directory store.

    Parameters
    ----------
    path : str or os.PathLike
        The store directory (``store.zarr``).
    dataset : str, optional
        Array path inside the store (``/array``); when omitted the store must be an array or
        hold exactly one 2-D or 3-D array.

    Returns
    -------
    dict
        ``shape``, ``dtype``, ``pixel_size_A``, ``header_angles_deg``,
        ``header_angles_source``, ``dataset``.
    """
    path = os.fspath(path)
    arr, name = _zarr_array(path, dataset)
    where = f"{path}:{name}"
    dtype = _check_real(arr.dtype, where)
    shape = stack_shape(arr.shape, where)
    attrs = dict(arr.attrs)
    angles, src, pixel, pixel_src = _attr_metadata(attrs, where)
    return {"shape": shape, "dtype": dtype, "pixel_size_A": pixel,
            "pixel_size_source": pixel_src, "header_angles_deg": angles,
            "header_angles_source": src, "dataset": name}


def read_zarr(path, info):
    """Load the Zarr array ``info['dataset']`` as float32 ``(n_tilts, ny, nx)``."""
    path = os.fspath(path)
    arr, _ = _zarr_array(path, info["dataset"])
    return np.ascontiguousarray(arr[...], dtype=np.float32).reshape(info["shape"])


# --------------------------------------------------------------------------------- NPY


def _open_npy(path):
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        raise ValueError(f"{path} is not a readable .npy array ({exc})") from None


def inspect_npy(path):
    """Shape and dtype of a ``.npy`` file (memory-mapped, nothing loaded).

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    dict
        ``shape``, ``dtype``, ``pixel_size_A`` (None), ``header_angles_deg`` (None),
        ``header_angles_source`` (None).
    """
    path = os.fspath(path)
    arr = _open_npy(path)
    if not isinstance(arr, np.ndarray):
        raise ValueError(f"{path} is an .npz archive, not a single .npy array")
    dtype = _check_real(arr.dtype, path)
    shape = stack_shape(arr.shape, path)
    del arr
    return {"shape": shape, "dtype": dtype, "pixel_size_A": None, "header_angles_deg": None,
            "header_angles_source": None}


def read_npy(path, info):
    """Load a ``.npy`` file as float32 ``(n_tilts, ny, nx)``."""
    arr = _open_npy(os.fspath(path))
    data = np.array(arr, dtype=np.float32, order="C")
    del arr
    return data.reshape(info["shape"])
