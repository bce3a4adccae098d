"""``fastalign recon``: reconstruct a tilt series without aligning it (locally or on Dask)."""
import os
import sys

import fastalign

from .. import io
from . import dask
from .common import EXIT_OK, progress_enabled, say, set_threads
from .inputs import (check_angle_units, check_memory,
                     format_bytes, inspect_input, load_input, out_dir, output_bytes,
                     require_angles, stem)
from .signals import checkpoint

#: the default ``n_iter`` of :func:`fastalign.sirt` and :func:`fastalign.tv` (the total of
#: the progress bar when ``--n-iter`` is not given; a test pins it to the library's)
LIBRARY_N_ITER = 50


def add_parser(sub, parents, fmt):
    """Register the ``recon`` sub-command on ``sub`` (an argparse sub-parsers action)."""
    p = sub.add_parser(
        "recon", parents=parents, formatter_class=fmt,
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
    p.set_defaults(func=run)


def _check_options(args):
    method = args.method
    if method == "tv" and args.lam is None:
        raise ValueError("--method tv needs --lam (the TV regularisation weight)")
    if method != "tv" and args.lam is not None:
        raise ValueError(f"--lam is only used by --method tv, not {method}")
    if method == "fbp" and args.n_iter is not None:
        raise ValueError("--n-iter is not used by --method fbp")


def _given(args):
    """The options among ``nz``, ``n_iter``, ``lam`` that were given."""
    return {k: getattr(args, k) for k in ("nz", "n_iter", "lam")
            if getattr(args, k) is not None}


def run(args):
    """Run ``fastalign recon``; returns the exit status."""
    set_threads(args.threads)
    _check_options(args)
    meta, info = inspect_input(args)
    angles = require_angles(meta)
    check_angle_units(meta, angles)
    name = f"{stem(meta)}.rec"
    directory = out_dir(args, meta)
    staged = io.OutputSet(directory, [name], overwrite=args.overwrite, inputs=meta["files"])
    staged.preflight(output_bytes(meta, args.nz, stack=False))
    if dask.wanted(args):
        return run_distributed(args, meta, angles, name, staged)
    need = check_memory(args, meta, "recon")
    data = load_input(args, meta, info)
    n, ny, nx = meta["shape"]
    say(args, f"fastalign: {args.method} reconstruction of {n} tilts of {ny} x {nx} "
              f"(estimated peak memory {format_bytes(need)})")
    volume = _reconstruct(args, data, angles, _given(args))
    del data
    with staged:
        io.write_volume(staged.path(name), volume, voxel_size_A=meta["pixel_size_A"])
        checkpoint()
        staged.commit()
    say(args, f"fastalign: wrote {os.path.join(directory, name)}")
    return EXIT_OK


def _reconstruct(args, data, angles, kwargs):
    """Call the library's ``fbp``/``sirt``/``tv``; iterative methods get a callback that
    honours signals (and moves a progress bar when one is shown)."""
    if args.method == "fbp":
        volume = fastalign.fbp(data, angles, **kwargs)
        checkpoint()
        return volume
    func = fastalign.sirt if args.method == "sirt" else fastalign.tv
    bar = None
    callback = checkpoint
    if progress_enabled(args):
        from tqdm import tqdm

        total = LIBRARY_N_ITER if args.n_iter is None else args.n_iter
        bar = tqdm(total=total, desc=args.method, unit="it", file=sys.stderr)
        callback = lambda *a, **k: (checkpoint(), bar.update(1))  # noqa: E731
    try:
        volume = func(data, angles, callback=callback, **kwargs)
        checkpoint()
    finally:
        if bar is not None:
            bar.close()
    return volume


def run_distributed(args, meta, angles, name, staged):
    """``fastalign recon --scheduler/--workers``: :func:`fastalign.distributed.sirt` or
    ``tv``, the workers writing the volume slab-wise."""
    from .. import distributed as fd

    method = args.method
    if method == "fbp":
        raise ValueError("--method fbp is not available with --scheduler/--workers "
                         "(use sirt or tv)")
    kwargs = _given(args)
    n, ny, nx = meta["shape"]
    say(args, f"fastalign: distributed {method} reconstruction of {n} tilts of {ny} x {nx}")
    with dask.DaskClient(args) as client, staged:
        func = fd.sirt if method == "sirt" else fd.tv
        func(client, meta["source"], angles, out=staged.path(name), **kwargs)
        checkpoint()
        staged.commit()
    say(args, f"fastalign: wrote {staged.final_path(name)}")
    return EXIT_OK
