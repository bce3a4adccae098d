"""The ``fastalign`` command line: parser, dispatch and :func:`main`.

Each command is *parse -> read (fastalign.io) -> library call -> write (fastalign.io,
fastalign.report)*; no maths happens here.  The commands live in one module each
(:mod:`.align`, :mod:`.recon`, :mod:`.info`, :mod:`.demo`).

Exit status: 0 on success; 2 for user errors (bad options, unreadable or inconsistent input,
outputs that would be overwritten, too little memory), printed as one line
``fastalign: error: ...`` without a traceback (set ``FASTALIGN_DEBUG=1`` to see one);
130 after Ctrl-C (SIGINT) and 143 after SIGTERM, leaving no partial or temporary files.
"""
import argparse
import os
import sys
import warnings

from .._version import __version__
from . import align, demo, info, recon, signals
from .common import (EXIT_SIGINT, EXIT_SIGTERM, EXIT_USAGE, USER_ERRORS,
                     register_parser_builder)
from .inputs import MEMORY_HELP, PIXEL_SIZE_HELP, pixel_size_arg

__all__ = ["main", "build_parser"]

_DESCRIPTION = ("Fast CPU alignment (Fourier-phase autofocus) and reconstruction of "
                "electron-tomography tilt series.")
_EPILOG = (
    "Inputs: MRC (.mrc .st .ali .mrcs .rec .map .preali), TIFF stacks, HDF5 "
    "(file.h5:/dataset), Zarr (store.zarr[:/array]), .npy and Gatan DM (a .dm3/.dm4 "
    "stack, a folder of single-image DM files, or a quoted pattern 'dir/*.dm3'; needs "
    "the 'dm' extra), as (n_tilts, ny, nx) with the tilt axis along y.  Tilt angles "
    "(degrees) come from --angles, else <stem>.rawtlt/<stem>.tlt or a SerialEM .mdoc "
    "next to the input, else the file's header or DM tags.  The pixel size comes from "
    "--pixel-size, else the file's metadata or .mdoc, else it is unknown (never assumed "
    "1 A).\n\nExit status: 0 success, 2 user error (one line on stderr; "
    "FASTALIGN_DEBUG=1 shows the traceback), 130 interrupted (Ctrl-C), 143 "
    "terminated.  Interrupted runs leave no partial files.")


class _UsageError(Exception):
    """A command-line syntax error (reported like any user error)."""


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line and leave the exit to :func:`main`."""

    def error(self, message):
        raise _UsageError(f"{message} (see '{self.prog} --help')")


def _common_options():
    """Options of every computing command: ``--threads``, ``--quiet``."""
    common = _Parser(add_help=False)
    common.add_argument("--threads", type=int, metavar="N",
                        help="number of CPU threads for the Numba kernels (default: all "
                             "cores, or NUMBA_NUM_THREADS)")
    common.add_argument("--quiet", "-q", action="store_true",
                        help="print nothing but warnings and errors; no progress bars "
                             "(progress bars are also off when stderr is not a terminal)")
    return common


def _data_options():
    """Options of the commands that read a tilt series and write results."""
    data = _Parser(add_help=False)
    data.add_argument("--angles", metavar="FILE",
                      help="tilt angles in degrees: a .rawtlt/.tlt file (one per line) or a "
                           "SerialEM .mdoc (default: found next to INPUT, or in its header)")
    data.add_argument("--pixel-size", type=pixel_size_arg, metavar="A", help=PIXEL_SIZE_HELP)
    data.add_argument("--out", "-o", metavar="DIR",
                      help="output directory (default: <input stem>_fastalign/ next to the "
                           "input); created if missing")
    data.add_argument("--overwrite", action="store_true",
                      help="replace results already in the output directory (an input file "
                           "is never overwritten)")
    data.add_argument("--fill-nonfinite", action="store_true",
                      help="replace NaN/Inf pixels by the median of the finite ones (with a "
                           "warning) instead of stopping with an error")
    data.add_argument("--max-memory", metavar="SIZE", help=MEMORY_HELP)
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
    return data


def build_parser():
    """The ``fastalign`` argument parser (sub-commands ``align``, ``recon``, ``info``, ``demo``).

    Returns
    -------
    argparse.ArgumentParser
    """
    fmt = argparse.RawDescriptionHelpFormatter
    parser = _Parser(prog="fastalign", formatter_class=fmt, description=_DESCRIPTION,
                     epilog=_EPILOG)
    parser.add_argument("--version", action="version", version=f"fastalign {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    common, data = _common_options(), _data_options()
    align.add_parser(sub, [common, data], fmt)
    recon.add_parser(sub, [common, data], fmt)
    info.add_parser(sub, fmt)
    demo.add_parser(sub, [common], fmt)
    return parser


register_parser_builder(build_parser)


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"fastalign: warning: {message}", file=sys.stderr)


def _message(exc):
    if isinstance(exc, MemoryError):
        text = str(exc) or "out of memory: reduce the data (binning, fewer slices) or use " \
                           "--max-memory to check first"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def _dispatch(argv):
    """Parse ``argv`` and run its command; the exit status (user errors still raise)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = argv
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    return args.func(args)


def main(argv=None):
    """Run the ``fastalign`` command line.

    Parameters
    ----------
    argv : list of str, optional
        Arguments without the program name (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status: 0 success, 2 user error, 130 interrupted, 143 terminated.  A program
        (``argv`` None) that a signal ended exits at once instead
        (:func:`fastalign.cli.signals.exit_now`: its outputs are already discarded).
    """
    code = _main(argv)
    if argv is None and code in (EXIT_SIGINT, EXIT_SIGTERM):
        signals.exit_now(code)
    return code


def _main(argv):
    from ..memory import pin_mmap_threshold
    argv = list(sys.argv[1:] if argv is None else argv)
    pin_mmap_threshold()   # a peak memory that does not depend on the allocation history
    debug = os.environ.get("FASTALIGN_DEBUG", "") not in ("", "0")
    with signals.installed(), warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            return _dispatch(argv)
        except signals.Terminated:
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
