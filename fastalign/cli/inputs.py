"""Reading the input of a command: inspection, tilt angles, memory check, NaN policy."""
import os
import re
import warnings

from .common import default_args

MEMORY_HELP = (
    "refuse to start when the estimated peak memory exceeds SIZE (bytes, or a number with "
    "suffix K, M, G or T = powers of 1024, e.g. 8G; default: this machine's RAM, a larger "
    "SIZE runs anyway).  The estimate (fastalign.memory) counts "
    "the arrays of the largest phase -- for align usually the final reconstruction: input, "
    "aligned stack, 2 stacks and 2 volumes of SIRT (TV: 3 stacks, 6 volumes), a volume being "
    "ny x nz x nx float32 values (nz = nx unless --nz, widened by --pad-x) -- plus a measured "
    "constant for Python and the compiled kernels.")


def parse_size(text):
    """Parse a memory size such as ``8G``, ``512M``, ``1.5GiB`` or ``1000000``.

    Parameters
    ----------
    text : str
        A non-negative number of bytes, optionally followed by ``K``, ``M``, ``G`` or ``T``
        (powers of 1024; ``B``/``iB`` accepted after them).

    Returns
    -------
    int
        Bytes.

    Raises
    ------
    ValueError
        Unparseable text.
    """
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(i?b)?\s*", str(text), re.IGNORECASE)
    if not m:
        raise ValueError(f"cannot read memory size {text!r}: use e.g. 8G, 512M or a number "
                         "of bytes")
    power = " kmgt".index(m.group(2).lower() or " ")
    return int(float(m.group(1)) * 1024 ** power)


def format_bytes(n):
    """``1234567`` -> ``'1.18 MiB'``."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"  # pragma: no cover


def estimate_peak_bytes(n_tilts, ny, nx, nz=None, command="align"):
    """Estimated peak memory of a local ``fastalign align`` or ``recon`` run with default
    options: the ``--max-memory`` pre-check's number (:func:`memory_estimate`, the model of
    :mod:`fastalign.memory`).

    Parameters
    ----------
    n_tilts, ny, nx : int
        Tilt-series shape.
    nz : int, optional
        Volume thickness (default ``nx``).
    command : {"align", "recon"}

    Returns
    -------
    int
        Bytes.
    """
    meta = {"shape": (int(n_tilts), int(ny), int(nx))}
    return memory_estimate(default_args(command, nz), meta, command).total


def stem(meta):
    """The input's file name without directory and suffix (names the outputs)."""
    base = os.path.basename(meta["path"].rstrip("/\\"))
    return os.path.splitext(base)[0]


def out_dir(args, meta):
    """``--out``, else ``<stem>_fastalign/`` next to the input (absolute)."""
    if args.out:
        return os.path.abspath(args.out)
    return os.path.join(os.path.dirname(meta["path"]), f"{stem(meta)}_fastalign")


PIXEL_SIZE_HELP = (
    "pixel size in angstroms, overriding the input's metadata (default: the MRC header when "
    "really set -- 0 and exactly 1 A count as unset --, the FEI extended header, the TIFF/"
    "HDF5/Zarr/DM calibration, else the PixelSpacing of a SerialEM .mdoc; when none is "
    "found the pixel size is unknown and outputs claim none)")


def pixel_size_arg(text):
    """argparse ``type`` of ``--pixel-size``: a positive number of angstroms."""
    import argparse
    import math

    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number of angstroms, got "
                                         f"{text!r}")
    return value


def inspect_input(args, *, strict=True):
    """``(meta, info)`` of ``args.input`` (headers and metadata only; angles found;
    ``--pixel-size`` applied).  ``strict=False`` (``fastalign info``) records angle problems
    as ``meta["angles_problem"]`` instead of raising."""
    from ..io import tiltseries

    pixel_size = getattr(args, "pixel_size", None)
    if pixel_size is not None and (getattr(args, "scheduler", None) is not None
                                   or getattr(args, "workers", None) is not None):
        raise ValueError("--pixel-size is not available with --scheduler/--workers (the "
                         "workers write the pixel size the input file records)")
    return tiltseries._inspect(args.input, args.angles, pixel_size_A=pixel_size,
                               strict=strict)


def require_angles(meta):
    """The input's tilt angles; a user error naming the fix if none were found."""
    if meta["angles_deg"] is None:
        raise ValueError(f"no tilt angles found for {meta['source']}: pass --angles FILE, or "
                         f"put {stem(meta)}.rawtlt (one angle per line) next to it")
    return meta["angles_deg"]


def check_angle_units(meta, angles):
    """A user error when the tilt angles look like radians, naming their file and the fix."""
    from .._validate import looks_like_radians

    if looks_like_radians(angles):
        raise ValueError(
            f"tilt angles from {meta['angles_source']} look like radians (all {angles.size} "
            f"within {angles.min():.3g} .. {angles.max():.3g}); fastalign takes degrees: "
            "convert them (e.g. numpy.rad2deg) and pass the file with --angles")


def warn_few_tilts(meta):
    """A one-line warning for a 2-tilt series (its alignment is not determined)."""
    from .._validate import two_tilts_message

    if meta["shape"][0] == 2:
        warnings.warn(two_tilts_message(2))


#: allowance for the small outputs (.xf, .tlt, figures, report.json, MRC headers), bytes
SMALL_OUTPUTS_BYTES = 4 * 2 ** 20


def output_bytes(meta, nz=None, *, stack=True):
    """Estimated size of the outputs: the volume (and the aligned stack) as float32, plus
    :data:`SMALL_OUTPUTS_BYTES`."""
    n, ny, nx = meta["shape"]
    nz = nx if nz is None else nz
    return 4 * (ny * nz * nx + (n * ny * nx if stack else 0)) + SMALL_OUTPUTS_BYTES


def memory_estimate(args, meta, command):
    """:class:`fastalign.memory.MemoryEstimate` of a local ``align`` or ``recon`` run.

    ``align``: ``--pad-x N`` widens the region (``auto`` and slab specimens size it
    themselves: not counted); the intensity model's extra copy is counted unless it is known
    to be the identity (``--contrast dark-field --background none``)."""
    from ..memory import estimate_align_peak, estimate_recon_peak

    if command == "recon":
        return estimate_recon_peak(meta["shape"], args.nz, args.method)
    from .common import int_list

    pad = args.pad_x if isinstance(args.pad_x, int) else 0
    identity = args.contrast == "dark-field" and args.background == "none"
    levels = int_list(args.levels, "--levels") if args.levels else ()
    finest = levels[-1] if levels else None
    return estimate_align_peak(meta["shape"], args.nz, pad, args.recon, intensity=not identity,
                               finest_bin=finest, streamed=True)


def physical_memory():
    """Bytes of RAM of this machine (None when unknown)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # pragma: no cover - not POSIX
        return None


def check_memory(args, meta, command="align"):
    """The estimated peak memory (:func:`memory_estimate`) in bytes; ``MemoryError`` if
    above ``--max-memory``, or, without it, above this machine's RAM
    (:func:`physical_memory`), naming the estimate and its largest term."""
    est = memory_estimate(args, meta, command)
    need = est.total
    n, ny, nx = meta["shape"]
    name, size = est.largest
    what = (f"estimated peak memory {format_bytes(need)} for {n} x {ny} x {nx} images "
            f"(nz = {args.nz or nx}; largest term: {name} {format_bytes(size)} in the "
            f"{est.phase} phase)")
    if args.max_memory is not None:
        limit = parse_size(args.max_memory)
        if need > limit:
            raise MemoryError(f"{what} exceeds --max-memory {args.max_memory} "
                              f"({format_bytes(limit)}); bin the data, reduce --nz or raise "
                              "the limit")
        return need
    ram = physical_memory()
    if ram and need > ram:
        raise MemoryError(f"{what} exceeds this machine's memory ({format_bytes(ram)}); bin "
                          "the data, reduce --nz, or set --max-memory SIZE to run anyway")
    return need


def load_input(args, meta, info):
    """Load the data and apply the NaN/Inf policy of ``--fill-nonfinite``."""
    import numpy as np

    from .._validate import fill_nonfinite
    from ..io import tiltseries

    data = tiltseries._load(meta, info)
    if not np.isfinite(data).all():
        if not args.fill_nonfinite:
            n_bad = int(data.size - np.count_nonzero(np.isfinite(data)))
            raise ValueError(f"{meta['source']} contains {n_bad} NaN/Inf values; pass "
                             "--fill-nonfinite to replace them with the median of the finite "
                             "values")
        data, n_bad, value = fill_nonfinite(data, name=meta["source"])
        warnings.warn(f"replaced {n_bad} NaN/Inf values in {meta['source']} by the median of "
                      f"the finite values ({value:.6g})")
    return data


def input_record(meta, angles):
    """The input as recorded in ``report.json`` (``pixel_size_A`` null when unknown, with
    ``pixel_size_source`` saying where a known one came from)."""
    keep = ("source", "path", "dataset", "format", "shape", "dtype", "pixel_size_A",
            "pixel_size_source", "angles_source", "old_header")
    rec = {k: meta[k] for k in keep}
    rec["angles_deg"] = angles
    return rec
