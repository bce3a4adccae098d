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
    p.set_defaults(func=run)


def describe(meta, nz=None):
    """``[(label, text), ...]`` describing an inspected input (``meta`` of
    :func:`fastalign.io.tiltseries._inspect`)."""
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
    # -- geometry diagnostics: reserved ------------------------------------------------------
    # The tilt-axis orientation and rotation-centre offset checks (issue 16, later work) add
    # their lines here, e.g. ("tilt axis", ...) and ("centre offset", ...), computed from the
    # data by the library and only printed here.
    # -----------------------------------------------------------------------------------------
    series = 4 * n * ny * nx
    peak = estimate_peak_bytes(n, ny, nx, nz)
    lines.append(("memory", f"{format_bytes(series)} as float32; align/SIRT peak ~ "
                            f"{format_bytes(peak)} ((4 tilt-series + 3 volumes) x 4 bytes, "
                            f"nz = {nz or nx})"))
    return lines


def run(args):
    """Run ``fastalign info``: print :func:`describe` as aligned ``label: text`` lines."""
    meta, _ = inspect_input(args, strict=False)
    lines = describe(meta, args.nz)
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        print(f"{key + ':':<{width + 1}} {value}")
    return EXIT_OK
