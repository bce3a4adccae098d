"""Command-line interface: ``fastalign align | recon | info | demo``.

Each command is *parse -> read (fastalign.io) -> library call -> write (fastalign.io,
fastalign.report)*; no maths happens here.

Exit status: 0 on success; 2 for user errors (bad options, unreadable or inconsistent input,
outputs that would be overwritten, too little memory), printed as one line
``fastalign: error: ...`` without a traceback (set ``FASTALIGN_DEBUG=1`` to see one);
130 after Ctrl-C (SIGINT) and 143 after SIGTERM, leaving no partial or temporary files.
"""
import argparse
import inspect
import os
import re
import signal
import sys
import threading
import time
import warnings

__all__ = ["main", "build_parser", "parse_size", "estimate_peak_bytes"]

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_SIGINT = 130
EXIT_SIGTERM = 143

#: exceptions reported as one-line user errors (exit status 2)
USER_ERRORS = (ValueError, TypeError, OSError, ImportError, MemoryError)

#: working copies assumed by the memory estimate: tilt series and volumes, float32
SERIES_COPIES = 4
VOLUME_COPIES = 3
TV_EXTRA_VOLUMES = 3

_ALIGN_OUTPUTS = ("aligned", "volume", "xf", "tlt", "report", "shifts_png", "slices_png",
                  "convergence_png")

_MEMORY_HELP = (
    "refuse to start when the estimated peak memory exceeds SIZE (bytes, or a number with "
    "suffix K, M, G or T = powers of 1024, e.g. 8G).  Estimate: (4 tilt-series copies + 3 "
    "volumes) x 4 bytes, a tilt series being n_tilts x ny x nx and a volume ny x nz x nx "
    "float32 values (nz = nx unless --nz); TV counts 3 more volumes.")


class _UsageError(Exception):
    """A command-line syntax error (reported like any user error)."""


class _Terminated(KeyboardInterrupt):
    """Raised by the SIGTERM handler so that cleanup runs as for Ctrl-C."""


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line and leave the exit to :func:`main`."""

    def error(self, message):
        raise _UsageError(f"{message} (see '{self.prog} --help')")


# ------------------------------------------------------------------------------ helpers


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


def estimate_peak_bytes(n_tilts, ny, nx, nz=None, *, series_copies=SERIES_COPIES,
                        volume_copies=VOLUME_COPIES):
    """Estimated peak memory of an alignment or reconstruction run.

    Parameters
    ----------
    n_tilts, ny, nx : int
        Tilt-series shape.
    nz : int, optional
        Volume thickness (default ``nx``).
    series_copies, volume_copies : int
        Working copies of the tilt series and of the volume (defaults 4 and 3).

    Returns
    -------
    int
        ``(series_copies * n_tilts*ny*nx + volume_copies * ny*nz*nx) * 4`` bytes.
    """
    nz = nx if nz is None else nz
    return 4 * (series_copies * n_tilts * ny * nx + volume_copies * ny * nz * nx)


def _supported_kwargs(func, **kwargs):
    """The subset of ``kwargs`` that ``func`` accepts."""
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return kwargs
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return kwargs
    return {k: v for k, v in kwargs.items() if k in params}


def _library_function(name):
    import fastalign

    func = getattr(fastalign, name, None)
    if not callable(func):  # absent, or only the sub-package of the same name (fastalign.align)
        raise ImportError(f"fastalign.{name} is not available in this installation")
    return func


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"fastalign: warning: {message}", file=sys.stderr)


def _say(args, text):
    if not getattr(args, "quiet", False):
        print(text, flush=True)


def _progress_enabled(args):
    return not args.quiet and sys.stderr.isatty()


def _set_threads(n):
    if n is None:
        return
    import numba

    limit = numba.config.NUMBA_NUM_THREADS
    if not 1 <= n <= limit:
        raise ValueError(f"--threads must be between 1 and {limit} (the NUMBA_NUM_THREADS "
                         f"limit), got {n}")
    numba.set_num_threads(n)


def _stem(meta):
    base = os.path.basename(meta["path"].rstrip("/\\"))
    return os.path.splitext(base)[0]


def _out_dir(args, meta):
    if args.out:
        return os.path.abspath(args.out)
    return os.path.join(os.path.dirname(meta["path"]), f"{_stem(meta)}_fastalign")


def _inspect_input(args):
    from .io import tiltseries

    return tiltseries._inspect(args.input, args.angles)


def _require_angles(meta):
    if meta["angles_deg"] is None:
        raise ValueError(f"no tilt angles found for {meta['source']}: pass --angles FILE, or "
                         f"put {_stem(meta)}.rawtlt (one angle per line) next to it")
    return meta["angles_deg"]


def _check_memory(args, meta, *, volume_copies=VOLUME_COPIES):
    n, ny, nx = meta["shape"]
    need = estimate_peak_bytes(n, ny, nx, args.nz, volume_copies=volume_copies)
    if args.max_memory is not None:
        limit = parse_size(args.max_memory)
        if need > limit:
            raise MemoryError(
                f"estimated peak memory {format_bytes(need)} for {n} x {ny} x {nx} images "
                f"(nz = {args.nz or nx}) exceeds --max-memory {args.max_memory} "
                f"({format_bytes(limit)}); bin the data or raise the limit")
    return need


def _load_input(args, meta, info):
    """Load the data and apply the NaN/Inf policy of ``--fill-nonfinite``."""
    import numpy as np

    from ._validate import fill_nonfinite
    from .io import tiltseries

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


def _input_record(meta, angles):
    keep = ("source", "path", "dataset", "format", "shape", "dtype", "pixel_size_A",
            "angles_source", "old_header")
    rec = {k: meta[k] for k in keep}
    rec["angles_deg"] = angles
    return rec


# ------------------------------------------------------------------------------ commands


def _slice_panels(data, result, angles, nz):
    """Central x-z slices before/after alignment (same quick method) and of the result."""
    import fastalign

    c = data.shape[1] // 2
    panels = []
    quick, name = getattr(fastalign, "fbp", None), "FBP"
    if not callable(quick):
        quick, name = getattr(fastalign, "sirt", None), "SIRT"
    if callable(quick):
        kwargs = {"nz": nz} if name == "FBP" else {"nz": nz, "n_iter": 20}
        try:
            before = quick(data[:, c:c + 1, :], angles, **kwargs)[0]
            after = quick(result.aligned[:, c:c + 1, :], angles, **kwargs)[0]
            panels += [(f"before alignment ({name}), x-z slice y={c}", before),
                       (f"after alignment ({name}), x-z slice y={c}", after)]
        except (ValueError, TypeError) as exc:
            warnings.warn(f"slices.png: could not reconstruct the before/after slices ({exc})")
    panels.append((f"result volume, x-z slice y={c}", result.volume[c]))
    return panels


def _write_align_products(outputs, names, stem, angles, result, panels, timings, t0,
                          t_start, record):
    """Write the .xf, .tlt, the three figures and report.json of an alignment into the
    staged ``outputs`` (the stack and volume are written by the caller)."""
    from . import io, report

    io.write_xf(outputs.path(names["xf"]), result.shifts,
                axis_angle_deg=getattr(result, "axis_angle_deg", 0.0) or 0.0)
    io.write_tlt(outputs.path(names["tlt"]), angles)
    report.plot_shifts(outputs.path(names["shifts_png"]), angles, result.shifts,
                       title=f"{stem}: shifts ({result.method})")
    report.plot_slices(outputs.path(names["slices_png"]), panels,
                       title=f"{stem}: central slices")
    report.plot_convergence(outputs.path(names["convergence_png"]), result.history,
                            title=f"{stem}: convergence")
    timings["write_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - t_start
    rep = report.build_report(inputs=record["inputs"], options=record["options"],
                              result=result, timings=timings, outputs=names,
                              command=["fastalign"] + list(record["argv"]),
                              extra=record["extra"])
    report.write_report(outputs.path(names["report"]), rep)


def _align_done(args, result, names, out_dir):
    """Say how the alignment ended (warn if it did not converge) and where the outputs are."""
    state = "converged" if result.converged else "did NOT converge"
    _say(args, f"fastalign: {result.method} {state} after {result.n_iter} iterations")
    if not result.converged:
        warnings.warn("alignment did not converge within --max-iter; the shifts may be "
                      "inaccurate")
    _say(args, f"fastalign: wrote {', '.join(names.values())} to {out_dir}")
    return EXIT_OK


def _cmd_align(args):
    from . import io

    t_start = time.perf_counter()
    if args.lam is not None and args.recon != "tv":
        raise ValueError("--lam is only used with --recon tv")
    _set_threads(args.threads)
    meta, info = _inspect_input(args)
    angles = _require_angles(meta)
    stem = _stem(meta)
    names = {"aligned": f"{stem}.ali", "volume": f"{stem}.rec", "xf": f"{stem}.xf",
             "tlt": f"{stem}.tlt", "report": "report.json", "shifts_png": "shifts.png",
             "slices_png": "slices.png", "convergence_png": "convergence.png"}
    out_dir = _out_dir(args, meta)
    outputs = io.OutputSet(out_dir, names.values(), overwrite=args.overwrite,
                           inputs=meta["files"])
    outputs.check()
    if _distributed(args):
        return _cmd_align_distributed(args, meta, angles, names, outputs, t_start)
    vol_copies = VOLUME_COPIES + (TV_EXTRA_VOLUMES if args.recon == "tv" else 0)
    need = _check_memory(args, meta, volume_copies=vol_copies)

    t0 = time.perf_counter()
    data = _load_input(args, meta, info)
    timings = {"read_s": time.perf_counter() - t0}

    kwargs = {"recon": args.recon, "method": args.method, "axes": args.axes,
              "progress": _progress_enabled(args)}
    for key in ("max_iter", "tol", "nz", "estimator", "lam", "axis_angle_deg"):
        if getattr(args, key) is not None:
            kwargs[key] = getattr(args, key)
    if args.refine is not None:
        kwargs["refine"] = tuple(r.strip() for r in args.refine.split(",") if r.strip())
    if args.levels is not None:
        kwargs["levels"] = _int_list(args.levels, "--levels")
    n, ny, nx = meta["shape"]
    align = _library_function("align")
    _say(args, f"fastalign: aligning {n} tilts of {ny} x {nx} ({args.method}, {args.recon}; "
               f"estimated peak memory {format_bytes(need)})")
    kwargs.update(_supported_kwargs(align, callback=_checkpoint))
    t0 = time.perf_counter()
    result = align(data, angles, **kwargs)
    _checkpoint()
    timings["align_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    panels = _slice_panels(data, result, angles, result.volume.shape[1])
    del data
    timings["figures_s"] = time.perf_counter() - t0
    px = meta["pixel_size_A"]
    options = {k: v for k, v in vars(args).items() if k not in ("func", "argv")}
    with outputs:
        t0 = time.perf_counter()
        io.write_aligned_stack(outputs.path(names["aligned"]), result.aligned, pixel_size_A=px)
        io.write_volume(outputs.path(names["volume"]), result.volume, voxel_size_A=px)
        _write_align_products(outputs, names, stem, angles, result, panels, timings, t0,
                              t_start, record=dict(inputs=_input_record(meta, angles),
                                                   options=options, argv=args.argv,
                                                   extra={"memory_estimate_bytes": need}))
        _checkpoint()
        outputs.commit()
    return _align_done(args, result, names, out_dir)


def _cmd_recon(args):
    from . import io

    _set_threads(args.threads)
    method = args.method
    if method == "tv" and args.lam is None:
        raise ValueError("--method tv needs --lam (the TV regularisation weight)")
    if method != "tv" and args.lam is not None:
        raise ValueError(f"--lam is only used by --method tv, not {method}")
    if method == "fbp" and args.n_iter is not None:
        raise ValueError("--n-iter is not used by --method fbp")
    meta, info = _inspect_input(args)
    angles = _require_angles(meta)
    name = f"{_stem(meta)}.rec"
    out_dir = _out_dir(args, meta)
    outputs = io.OutputSet(out_dir, [name], overwrite=args.overwrite, inputs=meta["files"])
    outputs.check()
    if _distributed(args):
        return _cmd_recon_distributed(args, meta, angles, name, outputs)
    vol_copies = VOLUME_COPIES + (TV_EXTRA_VOLUMES if method == "tv" else 0)
    need = _check_memory(args, meta, volume_copies=vol_copies)
    data = _load_input(args, meta, info)

    kwargs = {}
    if args.nz is not None:
        kwargs["nz"] = args.nz
    if args.n_iter is not None:
        kwargs["n_iter"] = args.n_iter
    if args.lam is not None:
        kwargs["lam"] = args.lam
    n, ny, nx = meta["shape"]
    func = _library_function(method)
    _say(args, f"fastalign: {method} reconstruction of {n} tilts of {ny} x {nx} (estimated "
               f"peak memory {format_bytes(need)})")
    bar = None
    show = _progress_enabled(args)
    if method != "fbp":
        extra = _supported_kwargs(func, progress=show)
        if "progress" not in extra and show and _supported_kwargs(func, callback=None):
            from tqdm import tqdm

            total = args.n_iter
            if total is None:
                default = inspect.signature(func).parameters.get("n_iter")
                total = default.default if default is not None and isinstance(
                    default.default, int) else None
            bar = tqdm(total=total, desc=method, unit="it", file=sys.stderr)
            extra = {"callback": lambda *a, **k: (_checkpoint(), bar.update(1))}
        else:
            extra.update(_supported_kwargs(func, callback=_checkpoint))
        kwargs.update(extra)
    try:
        volume = func(data, angles, **kwargs)
        _checkpoint()
    finally:
        if bar is not None:
            bar.close()
    del data
    with outputs:
        io.write_volume(outputs.path(name), volume, voxel_size_A=meta["pixel_size_A"])
        _checkpoint()
        outputs.commit()
    _say(args, f"fastalign: wrote {os.path.join(out_dir, name)}")
    return EXIT_OK


def _distributed(args):
    """Whether to run on Dask (``--scheduler``/``--workers``); checks the options first."""
    if args.scheduler is None and args.workers is None:
        return False
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")
    if args.fill_nonfinite:
        raise ValueError("--fill-nonfinite is not available with --scheduler/--workers "
                         "(the data are never loaded in one process)")
    if args.max_memory is not None:
        raise ValueError("--max-memory checks this process's memory; with --scheduler/"
                         "--workers the workers' memory limits apply (set them on the "
                         "cluster)")
    return True


class _DaskClient:
    """Connect to ``--scheduler`` or start a LocalCluster of ``--workers`` processes."""

    def __init__(self, args):
        self.args = args
        self.cluster = self.client = None

    def __enter__(self):
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise ImportError("--scheduler/--workers need dask.distributed: pip install "
                              "'fastalign[dask]'") from None
        a = self.args
        if a.scheduler is not None:
            self.client = Client(a.scheduler, timeout="30s")
        else:
            threads = a.threads or max(1, (os.cpu_count() or 1) // a.workers)
            self.cluster = LocalCluster(n_workers=a.workers, threads_per_worker=threads,
                                        processes=True, dashboard_address=None)
            self.client = Client(self.cluster)
        return self.client

    def __exit__(self, *exc):
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()
        return False


class _SourceRows:
    """Enough of an array for :func:`_slice_panels`: shape, and ``[:, c:c+1, :]`` read from
    the file."""

    def __init__(self, src):
        self.src = src
        self.shape = src.shape

    def __getitem__(self, key):
        rows = key[1]
        return self.src.read(0, self.shape[0], rows.start, rows.stop)


def _cmd_recon_distributed(args, meta, angles, name, outputs):
    from . import distributed as fd

    method = args.method
    if method == "fbp":
        raise ValueError("--method fbp is not available with --scheduler/--workers "
                         "(use sirt or tv)")
    kwargs = {}
    for key in ("nz", "n_iter", "lam"):
        if getattr(args, key) is not None:
            kwargs[key] = getattr(args, key)
    n, ny, nx = meta["shape"]
    _say(args, f"fastalign: distributed {method} reconstruction of {n} tilts of {ny} x {nx}")
    with _DaskClient(args) as client, outputs:
        func = fd.sirt if method == "sirt" else fd.tv
        func(client, meta["source"], angles, out=outputs.path(name), **kwargs)
        _checkpoint()
        outputs.commit()
    _say(args, f"fastalign: wrote {outputs.final_path(name)}")
    return EXIT_OK


def _int_list(text, option):
    """``"4,2,1"`` -> ``(4, 2, 1)``; a clear error for anything else."""
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"{option} takes comma-separated integers, got {text!r}") from None


def _cmd_align_distributed(args, meta, angles, names, outputs, t_start):
    from . import distributed as fd
    from .io.slabs import SlabSource

    if args.method != "autofocus":
        raise ValueError(f"--method {args.method} is not available with --scheduler/"
                         "--workers (autofocus only)")
    kwargs = {"recon": args.recon, "axes": args.axes, "callback": _checkpoint}
    for key in ("max_iter", "tol", "nz", "estimator", "lam"):
        if getattr(args, key) is not None:
            kwargs[key] = getattr(args, key)
    if args.levels is not None:
        kwargs["levels"] = _int_list(args.levels, "--levels")
    n, ny, nx = meta["shape"]
    stem = _stem(meta)
    _say(args, f"fastalign: aligning {n} tilts of {ny} x {nx} on Dask (autofocus, "
               f"{args.recon})")
    timings = {}
    options = {k: v for k, v in vars(args).items() if k not in ("func", "argv")}
    with _DaskClient(args) as client, outputs:
        t0 = time.perf_counter()
        result = fd.align(client, meta["source"], angles,
                          out=outputs.path(names["volume"]),
                          aligned_out=outputs.path(names["aligned"]), **kwargs)
        _checkpoint()
        timings["align_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        panels = _slice_panels(_SourceRows(SlabSource(meta["source"], angles)), result, angles,
                               result.volume.shape[1])
        _write_align_products(outputs, names, stem, angles, result, panels, timings, t0,
                              t_start, record=dict(
                                  inputs=_input_record(meta, angles), options=options,
                                  argv=args.argv,
                                  extra={"dask_workers": len(
                                      client.scheduler_info()["workers"])}))
        _checkpoint()
        outputs.commit()
    return _align_done(args, result, names, outputs.out_dir)


def _cmd_info(args):
    meta, _ = _inspect_input(args)
    n, ny, nx = meta["shape"]
    lines = [("file", meta["path"])]
    if meta["dataset"]:
        lines.append(("dataset", meta["dataset"]))
    fmt = meta["format"] + (" (old-style header, no 'MAP ' id)" if meta["old_header"] else "")
    lines += [("format", fmt),
              ("shape", f"{n} tilts x {ny} (y) x {nx} (x)   (n_tilts, ny, nx)"),
              ("dtype", f"{meta['dtype']} on disk, read as float32")]
    px = meta["pixel_size_A"]
    lines.append(("pixel size", f"{px:.4g} A" if px else "unknown"))
    a = meta["angles_deg"]
    if a is None:
        lines.append(("angles", "none found (give --angles FILE or a .rawtlt next to the file)"))
    else:
        lines.append(("angles", f"{a.size} from {meta['angles_source']}: "
                                f"{a.min():.2f} to {a.max():.2f} degrees"))
    series = 4 * n * ny * nx
    peak = estimate_peak_bytes(n, ny, nx, args.nz)
    nz = args.nz or nx
    lines.append(("memory", f"{format_bytes(series)} as float32; align/SIRT peak ~ "
                            f"{format_bytes(peak)} ((4 tilt-series + 3 volumes) x 4 bytes, "
                            f"nz = {nz})"))
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        print(f"{key + ':':<{width + 1}} {value}")
    return EXIT_OK


def _cmd_demo(args):
    _set_threads(args.threads)
    demo = _library_function("demo")
    out = os.path.abspath(args.out)
    options = {"progress": _progress_enabled(args), "overwrite": args.overwrite}
    if args.size is not None:
        options["n"] = args.size
    if args.max_iter is not None:
        options["max_iter"] = args.max_iter
    kwargs = _supported_kwargs(demo, **options)
    ignored = sorted(set(options) - set(kwargs) - {"progress"})
    if ignored:
        raise ValueError(f"this fastalign.demo does not accept {', '.join(ignored)}")
    result = demo(out, **kwargs)
    _say(args, f"fastalign: demo written to {out}")
    if isinstance(result, dict) and "errors_px" in result:
        for rec, err in result["errors_px"].items():
            secs = result.get("timings_s", {}).get(rec, float("nan"))
            _say(args, f"fastalign: {rec}: RMS shift error {err:.4f} px (gauge removed), "
                       f"{secs:.1f} s")
    return EXIT_OK


# ------------------------------------------------------------------------------ parser


def build_parser():
    """The ``fastalign`` argument parser (sub-commands ``align``, ``recon``, ``info``, ``demo``).

    Returns
    -------
    argparse.ArgumentParser
    """
    from . import __version__

    fmt = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog="fastalign", formatter_class=fmt,
        description="Fast CPU alignment (Fourier-phase autofocus) and reconstruction of "
                    "electron-tomography tilt series.",
        epilog="Inputs: MRC (.mrc .st .ali .mrcs .rec .map .preali), TIFF stacks, HDF5 "
               "(file.h5:/dataset), Zarr (store.zarr[:/array]) and .npy, as (n_tilts, ny, nx) "
               "with the tilt axis along y.  Tilt angles (degrees) come from --angles, else "
               "<stem>.rawtlt/<stem>.tlt or a SerialEM .mdoc next to the input, else the "
               "file's header.\n\nExit status: 0 success, 2 user error (one line on stderr; "
               "FASTALIGN_DEBUG=1 shows the traceback), 130 interrupted (Ctrl-C), 143 "
               "terminated.  Interrupted runs leave no partial files.")
    parser.add_argument("--version", action="version", version=f"fastalign {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    common = _Parser(add_help=False)
    common.add_argument("--threads", type=int, metavar="N",
                        help="number of CPU threads for the Numba kernels (default: all "
                             "cores, or NUMBA_NUM_THREADS)")
    common.add_argument("--quiet", "-q", action="store_true",
                        help="print nothing but warnings and errors; no progress bars "
                             "(progress bars are also off when stderr is not a terminal)")

    data = _Parser(add_help=False)
    data.add_argument("--angles", metavar="FILE",
                      help="tilt angles in degrees: a .rawtlt/.tlt file (one per line) or a "
                           "SerialEM .mdoc (default: found next to INPUT, or in its header)")
    data.add_argument("--out", "-o", metavar="DIR",
                      help="output directory (default: <input stem>_fastalign/ next to the "
                           "input); created if missing")
    data.add_argument("--overwrite", action="store_true",
                      help="replace results already in the output directory (an input file "
                           "is never overwritten)")
    data.add_argument("--fill-nonfinite", action="store_true",
                      help="replace NaN/Inf pixels by the median of the finite ones (with a "
                           "warning) instead of stopping with an error")
    data.add_argument("--max-memory", metavar="SIZE", help=_MEMORY_HELP)
    data.add_argument("--nz", type=int, metavar="N",
                      help="volume thickness in pixels (default: the library's, nx)")
    dask_opts = data.add_mutually_exclusive_group()
    dask_opts.add_argument("--scheduler", metavar="ADDRESS",
                           help="run on an existing Dask cluster (e.g. tcp://host:8786): the "
                                "workers read the input in slabs and write the outputs "
                                "slab-wise (needs the 'dask' extra; input MRC, HDF5, Zarr or "
                                ".npy)")
    dask_opts.add_argument("--workers", type=int, metavar="N",
                           help="run distributed on a Dask LocalCluster of N worker processes "
                                "on this machine (each with --threads threads, default "
                                "cores / N), closed at exit")

    p = sub.add_parser(
        "align", parents=[common, data], formatter_class=fmt,
        help="align a tilt series and reconstruct it",
        description="Estimate per-image translations of a tilt series, write the aligned "
                    "stack and its reconstruction.",
        epilog="Writes to the output directory: <stem>.ali (aligned stack, MRC), <stem>.rec "
               "(volume, MRC, sections along y), <stem>.xf (IMOD transforms '1 0 0 1 DX DY' "
               "with DX, DY = -dx, -dy), <stem>.tlt (angles), report.json (inputs, options, "
               "shifts, history, timings, versions, machine), shifts.png, slices.png, "
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
                        "axis_angle (in-plane tilt-axis angle) and center (rotation-centre "
                        "offset), e.g. 'shifts,axis_angle,center' (default: shifts)")
    p.add_argument("--axis-angle", type=float, metavar="DEG", dest="axis_angle_deg",
                   help="tilt-axis angle in degrees, counter-clockwise from +y with y up "
                        "(IMOD): fixed, or the starting value with --refine ...,axis_angle "
                        "(default: 0, or a coarse estimate when refined)")
    p.set_defaults(func=_cmd_align)

    p = sub.add_parser(
        "recon", parents=[common, data], formatter_class=fmt,
        help="reconstruct an (aligned) tilt series",
        description="Reconstruct a tilt series without aligning it; writes <stem>.rec (MRC "
                    "volume, sections along y, voxel size = pixel size).")
    p.add_argument("input", metavar="INPUT", help="tilt series file (see 'fastalign --help')")
    p.add_argument("--method", choices=("sirt", "tv", "fbp"), default="sirt",
                   help="sirt (default), tv (total variation, needs --lam) or fbp (filtered "
                        "backprojection, ramp filter)")
    p.add_argument("--n-iter", type=int, metavar="N",
                   help="iterations for sirt/tv (default: library's, 50)")
    p.add_argument("--lam", type=float, metavar="LAMBDA",
                   help="TV regularisation weight (required with --method tv)")
    p.set_defaults(func=_cmd_recon)

    p = sub.add_parser(
        "info", formatter_class=fmt, help="describe a tilt-series file",
        description="Print shape, on-disk dtype, tilt-angle range and source, pixel size "
                    "and a memory estimate, reading only headers and metadata.")
    p.add_argument("input", metavar="INPUT", help="tilt series file (see 'fastalign --help')")
    p.add_argument("--angles", metavar="FILE",
                   help="tilt-angle file to check against the data (default: found next to "
                        "INPUT)")
    p.add_argument("--nz", type=int, metavar="N",
                   help="volume thickness for the memory estimate (default: nx)")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser(
        "demo", parents=[common], formatter_class=fmt,
        help="run a self-contained demonstration on synthetic data",
        description="Generate a synthetic misaligned tilt series, align it and write the "
                    "results (calls fastalign.demo).")
    p.add_argument("--out", "-o", metavar="DIR", default="fastalign_demo",
                   help="output directory (default: ./fastalign_demo)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing demo output")
    p.add_argument("--size", type=int, metavar="N",
                   help="phantom and detector size in pixels (default: the demo's, 256)")
    p.add_argument("--max-iter", type=int, metavar="N",
                   help="maximum outer alignment iterations (default: the demo's)")
    p.set_defaults(func=_cmd_demo)
    return parser


# ------------------------------------------------------------------------------ main


# Signals received during this run.  The handlers raise at once, but an exception raised while
# Python runs a C callback (numba's compiler calls back into Python through ctypes) is printed
# and swallowed; _checkpoint re-raises it at the next safe point (each iteration, before writing).
_PENDING_SIGNALS = []


def _on_sigint(signum, frame):
    _PENDING_SIGNALS.append(signum)
    raise KeyboardInterrupt()


def _on_sigterm(signum, frame):
    _PENDING_SIGNALS.append(signum)
    raise _Terminated()


def _quiet_unraisable(unraisable):
    """Keep a swallowed Ctrl-C/SIGTERM quiet (it is re-raised by :func:`_checkpoint`) and, once
    a signal has arrived, the finalizer errors of the objects it left half-built (an
    interrupted Numba compile: llvmlite's ``ObjectRef.__del__``, also at interpreter exit)."""
    if _PENDING_SIGNALS or isinstance(unraisable.exc_value, KeyboardInterrupt):
        return
    sys.__unraisablehook__(unraisable)


def _checkpoint(*_args, **_kwargs):
    """Raise again for a signal whose exception was swallowed; usable as a library callback."""
    if _PENDING_SIGNALS:
        raise _Terminated() if signal.SIGTERM in _PENDING_SIGNALS else KeyboardInterrupt()


def _message(exc):
    if isinstance(exc, MemoryError):
        text = str(exc) or "out of memory: reduce the data (binning, fewer slices) or use " \
                           "--max-memory to check first"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def main(argv=None):
    """Run the ``fastalign`` command line.

    Parameters
    ----------
    argv : list of str, optional
        Arguments without the program name (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status: 0 success, 2 user error, 130 interrupted, 143 terminated.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get("FASTALIGN_DEBUG", "") not in ("", "0")
    handlers = {}
    if threading.current_thread() is threading.main_thread():
        # Explicit handlers: a parent that ignores SIGINT must not make us uninterruptible.
        _PENDING_SIGNALS.clear()
        handlers[signal.SIGINT] = signal.signal(signal.SIGINT, _on_sigint)
        old_hook, sys.unraisablehook = sys.unraisablehook, _quiet_unraisable
        handlers[signal.SIGTERM] = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            try:
                parser = build_parser()
                args = parser.parse_args(argv)
                args.argv = argv
                if args.command is None:
                    parser.print_help(sys.stderr)
                    return EXIT_USAGE
                return args.func(args)
            except _Terminated:
                print("fastalign: terminated", file=sys.stderr)
                return EXIT_SIGTERM
            except KeyboardInterrupt:
                print("fastalign: interrupted", file=sys.stderr)
                return EXIT_SIGINT
            except _UsageError as exc:
                print(f"fastalign: error: {_message(exc)}", file=sys.stderr)
                return EXIT_USAGE
            except USER_ERRORS as exc:
                if debug:
                    raise
                print(f"fastalign: error: {_message(exc)}", file=sys.stderr)
                return EXIT_USAGE
    finally:
        for sig, old in handlers.items():
            signal.signal(sig, old)
        if handlers and not _PENDING_SIGNALS:  # interrupted: keep it for the exit
            sys.unraisablehook = old_hook
