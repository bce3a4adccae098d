"""``fastalign info``: describe a tilt-series file from its headers and metadata."""
from .._validate import looks_like_radians
from .common import EXIT_OK
from .inputs import (PIXEL_SIZE_HELP, estimate_peak_bytes, format_bytes, inspect_input,
                     pixel_size_arg)


def add_parser(sub, fmt):
    """Register the ``info`` sub-command on ``sub`` (an argparse sub-parsers action)."""
    p = sub.add_parser(
        "info", formatter_class=fmt, help="describe a tilt-series file",
        description="Print format, shape, on-disk dtype, pixel size (or 'unknown') and its "
                    "source, tilt-angle range and source, and a memory estimate, reading "
                    "only headers and metadata.  Problems with the angles are printed, "
                    "not raised.")
    p.add_argument("input", metavar="INPUT", help="tilt series file (see 'fastalign --help')")
    p.add_argument("--angles", metavar="FILE",
                   help="tilt-angle file to check against the data (default: found next to "
                        "INPUT)")
    p.add_argument("--pixel-size", type=pixel_size_arg, metavar="A", help=PIXEL_SIZE_HELP)
    p.add_argument("--nz", type=int, metavar="N",
                   help="volume thickness for the memory estimate (default: nx)")
    p.add_argument("--headers-only", action="store_true",
                   help="do not read the data (by default a series up to 1 GiB as float32 "
                        "is read to report its intensity model and tilt-axis direction)")
    p.set_defaults(func=run)


#: ``info`` reads the data (for the intensity and axis lines) up to this many float32 bytes
DATA_LIMIT = 1 << 30


def data_lines(data, angles):
    """What the data show: the intensity model and the tilt-axis direction (the library's
    :func:`~fastalign.align.intensity.intensity_model` and
    :func:`~fastalign.align.orient.decorrelation_axis`, as ``fastalign align`` uses them)."""
    from ..align.diagnose import WEAK_ANISOTROPY
    from ..align.intensity import intensity_model
    from ..align.orient import decorrelation_axis
    lines = []
    try:
        model = intensity_model(data, angles_deg=angles)
    except ValueError as exc:
        return [("intensity", f"problem: {exc}")]
    lines.append(("intensity", model.summary()))
    if angles is None or len(angles) < 3:
        return lines
    alpha, strength = decorrelation_axis(model.apply(data), angles)
    text = (f"about {alpha:.1f} deg from the data (modulo 180; anisotropy {strength:.2f})")
    if strength < WEAK_ANISOTROPY:
        text += " -- weakly determined: pass --axis-angle DEG if it is known"
    lines.append(("tilt axis", text))
    return lines


def describe(meta, nz=None, data=None):
    """``[(label, text), ...]`` describing an inspected input (``meta`` of
    :func:`fastalign.io.tiltseries._inspect`); with ``data`` (the loaded series) also what
    the data show (:func:`data_lines`)."""
    n, ny, nx = meta["shape"]
    lines = [("file", meta["path"])]
    if meta["dataset"]:
        lines.append(("dataset", meta["dataset"]))
    if meta["format"] == "dm" and len(meta["files"]) > 1:
        n_dm = sum(f.lower().endswith((".dm3", ".dm4")) for f in meta["files"])
        lines.append(("files", f"{n_dm} DM files, one image per tilt"))
    fmt = meta["format"] + (" (old-style header, no 'MAP ' id)" if meta["old_header"] else "")
    lines += [("format", fmt),
              ("shape", f"{n} tilts x {ny} (y) x {nx} (x)   (n_tilts, ny, nx)"),
              ("dtype", f"{meta['dtype']} on disk, read as float32")]
    px = meta["pixel_size_A"]
    if px:
        lines.append(("pixel size", f"{px:.4g} A  (from {meta['pixel_size_source']})"))
    else:
        lines.append(("pixel size", "unknown (outputs will record none; give --pixel-size A)"))
    a = meta["angles_deg"]
    problem = meta.get("angles_problem")
    if a is None:
        lines.append(("angles", "none found (give --angles FILE or a .rawtlt next to the file)"))
    else:
        a_min, a_max = float(min(a)), float(max(a))
        text = f"{len(a)} from {meta['angles_source']}: {a_min:.2f} to {a_max:.2f} degrees"
        if problem is None and looks_like_radians(a):
            text += "  (these look like radians: fastalign takes degrees, see numpy.rad2deg)"
        lines.append(("angles", text))
    if problem is not None:
        lines.append(("angles problem", f"{problem} -- align/recon will refuse this input"))
    if data is not None:
        lines += data_lines(data, a)
    series = 4 * n * ny * nx
    align_peak = estimate_peak_bytes(n, ny, nx, nz, "align")
    recon_peak = estimate_peak_bytes(n, ny, nx, nz, "recon")
    lines.append(("memory", f"{format_bytes(series)} as float32; estimated peak "
                            f"{format_bytes(align_peak)} for align, {format_bytes(recon_peak)} "
                            f"for recon (default options, nz = {nz or nx}; as --max-memory "
                            "checks it)"))
    return lines


def run(args):
    """Run ``fastalign info``: print :func:`describe` as aligned ``label: text`` lines."""
    meta, info = inspect_input(args, strict=False)
    data = None
    n, ny, nx = meta["shape"]
    if (not args.headers_only and 4 * n * ny * nx <= DATA_LIMIT
            and meta.get("angles_problem") is None and meta["angles_deg"] is not None):
        from ..io import tiltseries
        data = tiltseries._load(meta, info)
    lines = describe(meta, args.nz, data)
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        print(f"{key + ':':<{width + 1}} {value}")
    return EXIT_OK
