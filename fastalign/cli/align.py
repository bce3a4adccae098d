"""``fastalign align``: estimate the shifts of a tilt series, write the aligned stack, the
volume, the transforms, the figures and the report (locally or on Dask)."""
import argparse
import contextlib
import logging
import time
import warnings

import fastalign

from .. import io
from ..align.executor import volume_sink
from . import dask, outputs
from .common import int_list, options_record, progress_enabled, say, set_threads
from .._validate import check_signal, two_tilts_message
from .inputs import (check_angle_units, check_memory,
                     format_bytes, input_record, inspect_input, load_input, out_dir,
                     output_bytes, require_angles, stem, warn_few_tilts)
from .signals import checkpoint


def add_parser(sub, parents, fmt):
    """Register the ``align`` sub-command on ``sub`` (an argparse sub-parsers action)."""
    p = sub.add_parser(
        "align", parents=parents, formatter_class=fmt,
        help="align a tilt series and reconstruct it",
        description="Estimate per-image translations of a tilt series, write the aligned "
                    "stack and its reconstruction.",
        epilog="Writes to the output directory: <stem>.ali (aligned stack, MRC), <stem>.rec "
               "(volume, MRC, sections along y), <stem>.xf (IMOD transforms '1 0 0 1 DX DY' "
               "with DX, DY = -dx, -dy), <stem>.aln (the same alignment for AreTomo), "
               "<stem>.tlt (angles), <stem>.xtilt (IMOD X-axis tilts: zeros), <stem>.exclude "
               "(the 'EXCLUDELIST 1,5-7' line of the excluded views for IMOD newst/tilt, "
               "1-based; only a comment when none), report.json (inputs, options, "
               "shifts, history, per-tilt table, timings, versions, machine), shifts.png "
               "(with per-tilt uncertainty and residual), slices.png, "
               "convergence.png.  Refuses to start if any of these exist, unless --overwrite.")
    p.add_argument("input", metavar="INPUT", help="tilt series file (see 'fastalign --help')")
    p.add_argument("--recon", choices=("sirt", "tv"), default="sirt",
                   help="reconstruction used inside the alignment loop (default: sirt)")
    p.add_argument("--method", choices=("autofocus", "xcorr", "com"), default="autofocus",
                   help="alignment method: autofocus (Fourier-phase, reconstruction based; "
                        "default), xcorr (sequential cross-correlation) or com (centre of "
                        "mass)")
    p.add_argument("--axes", choices=("xy", "x", "y"), default="xy",
                   help="shift components to estimate: xy (default), x only or y only")
    p.add_argument("--estimator", choices=("phase", "gradient"),
                   help="autofocus shift estimator: phase (complex logarithm, unwrapping and "
                        "weighted least squares; library default) or gradient (Newton steps "
                        "on the spectral mismatch)")
    p.add_argument("--lam", type=float, metavar="LAMBDA",
                   help="TV weight for --recon tv (default: the library's automatic choice)")
    p.add_argument("--max-iter", type=int, metavar="N",
                   help="maximum number of outer alignment iterations (default: library's)")
    p.add_argument("--tol", type=float, metavar="PX",
                   help="stop when the largest shift update is below PX pixels (default: "
                        "library's)")
    p.add_argument("--levels", metavar="LIST",
                   help="comma-separated binning factors of the coarse-to-fine levels, "
                        "strictly decreasing, e.g. 4,2,1 (default: automatic; the finest is "
                        "2, i.e. 2x binned data, from 512 px wide; end with 1 to estimate at "
                        "full resolution)")
    p.add_argument("--refine", metavar="LIST",
                   help="comma-separated parameters to estimate, among shifts (required), "
                        "axis_angle (in-plane tilt-axis angle), center (rotation-centre "
                        "offset) and tilt_offset (a constant added to all tilt angles, from a "
                        "slab's flatness; the .tlt holds the corrected angles), e.g. "
                        "'shifts,axis_angle,center' (default: shifts)")
    p.add_argument("--tilt-offset", type=float, metavar="DEG", dest="tilt_offset_deg",
                   help="a known tilt-angle offset in degrees, added to every angle before "
                        "aligning (--refine ...,tilt_offset estimates one on top of it); the "
                        ".tlt holds the corrected angles")
    p.add_argument("--axis-angle", type=float, metavar="DEG", dest="axis_angle_deg",
                   help="tilt-axis angle in degrees, counter-clockwise from +y with y up "
                        "(IMOD): fixed, or the starting value with --refine ...,axis_angle "
                        "(default: found from the data over the full circle, modulo 180 "
                        "degrees, and refined when it is not a multiple of 90)")
    p.add_argument("--initial-xf", metavar="FILE", dest="initial_xf",
                   help="start from the alignment in FILE: an IMOD .xf (rotation and "
                        "translation per line; magnification or skew is refused) or an "
                        "AreTomo .aln (global section; the stack must not hold the dark "
                        "frames it lists).  Its shifts start the loop and, unless "
                        "--axis-angle is given, its tilt-axis angle is used")
    p.add_argument("--pad-x", metavar="N|auto", dest="pad_x", type=_pad_x,
                   help="reconstruct N extra columns on each side (room for material that "
                        "leaves the field of view at high tilt), or 'auto' to choose from "
                        "the data (default: 0 for a compact object; slabs size it "
                        "themselves)")
    p.add_argument("--contrast", choices=("auto", "dark-field", "bright-field"),
                   default="auto",
                   help="intensity model: dark-field (mass bright, e.g. HAADF-STEM; used "
                        "linearly), bright-field (mass dark on a bright background, e.g. "
                        "TEM/cryo; -log(I/I0) with I0 per tilt) or auto (default: from the "
                        "histogram, which side of the background level the mass lies)")
    p.add_argument("--background", default="auto", metavar="{auto,none,VALUE}",
                   help="constant detector offset removed before aligning: auto (default: "
                        "only when clearly an offset, e.g. a vacuum level far from zero), "
                        "none, or a number; the aligned stack keeps the original intensities")
    p.add_argument("--exclude", metavar="LIST",
                   help="views to leave out of the alignment and the reconstruction, 1-based "
                        "as IMOD's EXCLUDELIST, e.g. 1,5-7; they keep a shift interpolated "
                        "from their neighbours in tilt angle and their view in the aligned "
                        "stack (unless --drop-excluded); at least 5 views must remain")
    p.add_argument("--no-auto-exclude", dest="auto_exclude", action="store_false",
                   help="do not exclude bad views automatically (default: blank, saturated, "
                        "noise-only or occluded views, found against their tilt neighbours, "
                        "are excluded and listed in report.json with the reason)")
    p.add_argument("--include", metavar="LIST",
                   help="views (1-based, as --exclude) never excluded automatically")
    p.add_argument("--drop-excluded", action="store_true",
                   help="write the aligned stack, .xf, .aln and .tlt without the excluded "
                        "views (default: every view, as IMOD does; report.json lists the "
                        "excluded ones as an EXCLUDELIST)")
    p.set_defaults(func=run)


def _pad_x(text):
    """``--pad-x``: a non-negative integer or ``auto``."""
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer or 'auto', got "
                                         f"{text!r}")
    return value


def _background(text):
    """``--background`` as the library's ``background`` argument."""
    if text in ("auto", "none"):
        return text
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"--background must be auto, none or a number, got {text!r}") from None


def _views(args, n):
    """``--exclude``/``--include`` as 0-based index lists (checked against ``n`` views and
    the minimum kept, before anything is computed); ``{}`` when neither is given."""
    from ..align.badtilts import check_exclude
    out = {}
    for opt, key in (("--exclude", "exclude"), ("--include", "include")):
        text = getattr(args, key)
        if text is None:
            continue
        try:
            idx = io.parse_excludelist(text, n)
        except ValueError as exc:
            raise ValueError(f"{opt}: {exc}") from None
        if key == "exclude":
            idx = check_exclude(idx, n, name=opt)
        out[key] = [int(i) for i in idx]
    return out


def _given(args, keys):
    """The options among ``keys`` that were given (the library's defaults apply to the rest)."""
    return {k: getattr(args, k) for k in keys if getattr(args, k) is not None}


def _intensity_options(args):
    """``contrast``/``background`` of the intensity model when given (library defaults:
    ``"auto"``); local and on Dask alike."""
    kwargs = {}
    if args.contrast != "auto":
        kwargs["contrast"] = args.contrast
    if args.background != "auto":
        kwargs["background"] = _background(args.background)
    return kwargs


def _refine(args):
    """``--refine a,b`` as the library's ``refine`` tuple."""
    return tuple(r.strip() for r in args.refine.split(",") if r.strip())


def _local_options(args):
    """Keyword arguments of :func:`fastalign.align` from the command line."""
    kwargs = {"recon": args.recon, "method": args.method, "axes": args.axes,
              "progress": progress_enabled(args), **_intensity_options(args)}
    kwargs.update(_given(args, ("max_iter", "tol", "nz", "estimator", "lam",
                                "axis_angle_deg", "pad_x", "tilt_offset_deg")))
    if args.refine is not None:
        kwargs["refine"] = _refine(args)
    if args.levels is not None:
        kwargs["levels"] = int_list(args.levels, "--levels")
    kwargs["callback"] = checkpoint
    return kwargs


def run(args):
    """Run ``fastalign align``; returns the exit status."""
    t_start = time.perf_counter()
    if args.lam is not None and args.recon != "tv":
        raise ValueError("--lam is only used with --recon tv")
    set_threads(args.threads)
    meta, info = inspect_input(args)
    angles = require_angles(meta)
    check_angle_units(meta, angles)
    names = outputs.align_names(stem(meta))
    directory = out_dir(args, meta)
    start = None
    if args.initial_xf is not None:  # read (and checked) before anything is computed
        start = io.read_alignment(args.initial_xf, n=meta["shape"][0])
    views = _views(args, meta["shape"][0])
    staged = io.OutputSet(directory, names.values(), overwrite=args.overwrite,
                          inputs=list(meta["files"]) + [args.initial_xf])
    staged.preflight(output_bytes(meta, args.nz))
    warn_few_tilts(meta)
    if dask.wanted(args):
        if args.drop_excluded:
            raise ValueError("--drop-excluded is not available with --scheduler/--workers "
                             "(the workers write every view of the aligned stack)")
        return run_distributed(args, meta, angles, names, staged, t_start, start, views)
    need = check_memory(args, meta, "align")

    t0 = time.perf_counter()
    data = load_input(args, meta, info)
    check_signal(data, name=meta["source"])
    timings = {"read_s": time.perf_counter() - t0}
    kwargs = _local_options(args)
    kwargs.update(views)
    if not args.auto_exclude:
        kwargs["auto_exclude"] = False
    if start is not None:
        kwargs["initial_shifts"] = start
    n, ny, nx = meta["shape"]
    say(args, f"fastalign: aligning {n} tilts of {ny} x {nx} ({args.method}, {args.recon}; "
              f"estimated peak memory {format_bytes(need)})")
    px = meta["pixel_size_A"]
    with staged:
        # the final volume goes to the (staged) .rec block by block as it is reconstructed
        volume = outputs.StreamedMRC(staged.path(names["volume"]), voxel_size_A=px)
        t0 = time.perf_counter()
        try:
            with _without_log(two_tilts_message(2)), volume_sink(volume):  # warned above
                result = fastalign.align(data, angles, **kwargs)
        finally:
            volume.abort()
        checkpoint()
        timings["align_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        panels = outputs.slice_panels(data, result, result.angles_deg, result.volume.shape[1])
        del data
        timings["figures_s"] = time.perf_counter() - t0
        record = dict(inputs=input_record(meta, angles), options=options_record(args),
                      argv=args.argv, extra={"memory_estimate_bytes": need})
        written, angles_out = result, result.angles_deg   # corrected by a tilt offset
        if args.drop_excluded:
            written, angles_out = outputs.without_excluded(result, result.angles_deg)
            record["extra"]["dropped_views"] = [int(i) + 1 for i in result.excluded]
        t0 = time.perf_counter()
        outputs.StreamedMRC(staged.path(names["aligned"]), voxel_size_A=px, volume=False,
                            label=outputs.STACK_LABEL).write_array(written.aligned)
        if not volume.begun:   # a baseline method: its volume was not streamed
            volume.write_array(result.volume)
        outputs.write_align_products(staged, names, stem(meta), angles_out, written, panels,
                                     timings, t0, t_start, record=record)
        checkpoint()
        staged.commit()
    return outputs.align_done(args, result, names, directory)


@contextlib.contextmanager
def _without_log(text):
    """Drop the library's ``fastalign.align`` log record ``text`` (the CLI said it)."""
    logger = logging.getLogger("fastalign.align")
    drop = logging.Filter()
    drop.filter = lambda record: record.getMessage() != text
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def run_distributed(args, meta, angles, names, staged, t_start, start=None, views=None):
    """``fastalign align --scheduler/--workers``: :func:`fastalign.distributed.align`, the
    workers reading the input and writing the stack and volume slab-wise."""
    from .. import distributed as fd
    from ..io.slabs import SlabSource

    if args.method != "autofocus":
        raise ValueError(f"--method {args.method} is not available with --scheduler/"
                         "--workers (autofocus only)")
    kwargs = {"recon": args.recon, "axes": args.axes, "callback": checkpoint,
              "progress": progress_enabled(args)}
    kwargs.update(_given(args, ("max_iter", "tol", "nz", "estimator", "lam", "pad_x",
                                "tilt_offset_deg")))
    if args.refine is not None:
        kwargs["refine"] = _refine(args)
        if "axis_angle" in kwargs["refine"]:   # before a cluster is started for nothing
            raise ValueError("--refine ...,axis_angle is not available with --scheduler/"
                             "--workers (the tilt axis is found and resampled once there)")
    kwargs.update(_intensity_options(args))
    kwargs.update(views or {})
    if not args.auto_exclude:
        kwargs["auto_exclude"] = False
    if start is not None:
        kwargs["initial_shifts"] = start.shifts_for(meta["shape"][0])
        if abs(start.axis_angle_deg) > 0.5:
            warnings.warn(f"{args.initial_xf}: its axis angle {start.axis_angle_deg:.3f} deg "
                          "is not used with --scheduler/--workers (an untilted axis); only "
                          "its shifts start the loop")
    if args.levels is not None:
        kwargs["levels"] = int_list(args.levels, "--levels")
    n, ny, nx = meta["shape"]
    say(args, f"fastalign: aligning {n} tilts of {ny} x {nx} on Dask (autofocus, "
              f"{args.recon})")
    timings = {}
    with dask.DaskClient(args) as client, staged:
        t0 = time.perf_counter()
        result = fd.align(client, meta["source"], angles,
                          out=staged.path(names["volume"]),
                          aligned_out=staged.path(names["aligned"]), **kwargs)
        checkpoint()
        timings["align_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        panels = outputs.slice_panels(outputs.SourceRows(SlabSource(meta["source"], angles)),
                                      result, angles, result.volume.shape[1])
        record = dict(inputs=input_record(meta, angles), options=options_record(args),
                      argv=args.argv,
                      extra={"dask_workers": len(client.scheduler_info()["workers"])})
        outputs.write_align_products(staged, names, stem(meta), angles, result, panels,
                                     timings, t0, t_start, record=record)
        checkpoint()
        staged.commit()
    return outputs.align_done(args, result, names, staged.out_dir)
