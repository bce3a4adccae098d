"""File input and output (the edge layer: no maths here).

Readers
    :func:`read_tilt_series` (MRC family, TIFF, HDF5, Zarr, ``.npy``, Gatan DM3/DM4; angles
    from ``.rawtlt``/``.tlt``/``.mdoc``/headers/DM tags; the pixel size only when a file
    really records one, else None), :func:`inspect_tilt_series`, :func:`read_angles`,
    :func:`read_mdoc`, :func:`read_mdoc_pixel_size`, :func:`read_xf`.
Alignment files (IMOD ``.xf`` with rotations, AreTomo ``.aln``, ``EXCLUDELIST``)
    :func:`read_xf_model`, :func:`read_aln`, :func:`read_alignment` (either, by suffix),
    :func:`write_aln`, :func:`write_xtilt`, :func:`format_excludelist`,
    :func:`parse_excludelist`.
Writers (atomic, never over an input, no overwrite unless asked)
    :func:`write_aligned_stack` (``.ali``), :func:`write_volume` (``.rec``),
    :func:`write_mrc`, :func:`write_xf`, :func:`write_tlt`.

Block-wise (for data no one process holds: the Dask twins)
    :mod:`fastalign.io.slabs`: :class:`~fastalign.io.slabs.SlabSource` reads any block of a
    tilt series file, :class:`~fastalign.io.slabs.SlabWriter` writes a 3-D array block by
    block and renames it into place once complete.

HDF5 and Zarr need the ``io`` extra, DM the ``dm`` extra (RosettaSciIO); ``h5py``/``zarr``/
``rsciio`` are imported only when used.  Nothing
here imports the algorithms (the version for file labels comes from ``fastalign._version``).
"""
from ._atomic import OutputSet, atomic_write, check_output_path, same_file
from .angles import (find_angle_file, find_mdoc, read_angles, read_mdoc, read_mdoc_pixel_size,
                     write_tlt)
from .mrc import OldMRCHeaderWarning, write_aligned_stack, write_mrc, write_volume
from .tiltseries import (FORMATS, detect_format, inspect_tilt_series, read_tilt_series,
                         split_source)
from .xf import (XfModel, format_excludelist, parse_excludelist, read_xf, read_xf_model,
                 write_xf, write_xtilt)
from .aretomo import AlnFile, read_alignment, read_aln, write_aln

__all__ = [
    "read_tilt_series", "inspect_tilt_series", "detect_format", "split_source", "FORMATS",
    "read_angles", "read_mdoc", "read_mdoc_pixel_size", "find_angle_file", "find_mdoc",
    "write_tlt",
    "read_xf", "write_xf",
    "read_xf_model", "XfModel", "write_xtilt", "format_excludelist", "parse_excludelist",
    "read_aln", "write_aln", "AlnFile", "read_alignment",
    "write_mrc", "write_aligned_stack", "write_volume", "OldMRCHeaderWarning",
    "atomic_write", "check_output_path", "same_file", "OutputSet",
]
