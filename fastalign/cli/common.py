"""Exit statuses, user output and small option helpers shared by the commands."""
import sys

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_SIGINT = 130
EXIT_SIGTERM = 143

#: exceptions reported as one-line user errors (exit status 2)
USER_ERRORS = (ValueError, TypeError, OSError, ImportError, MemoryError)


def say(args, text):
    """Print ``text`` to stdout unless ``--quiet``."""
    if not getattr(args, "quiet", False):
        print(text, flush=True)


def progress_enabled(args):
    """Progress bars: not with ``--quiet``, and only when stderr is a terminal."""
    return not args.quiet and sys.stderr.isatty()


def set_threads(n):
    """Apply ``--threads N`` to Numba (None: leave the default).

    Raises
    ------
    ValueError
        ``n`` outside ``1 .. NUMBA_NUM_THREADS``.
    """
    if n is None:
        return
    import numba

    limit = numba.config.NUMBA_NUM_THREADS
    if not 1 <= n <= limit:
        raise ValueError(f"--threads must be between 1 and {limit} (the NUMBA_NUM_THREADS "
                         f"limit), got {n}")
    numba.set_num_threads(n)


def int_list(text, option):
    """``"4,2,1"`` -> ``(4, 2, 1)``; a clear error for anything else."""
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"{option} takes comma-separated integers, got {text!r}") from None


def options_record(args):
    """The parsed options as recorded in ``report.json``."""
    return {k: v for k, v in vars(args).items() if k not in ("func", "argv")}


#: the builder of the ``fastalign`` parser, registered by :mod:`.main` when it is imported
#: (a command that needs another command's defaults, e.g. ``info``'s memory estimate, gets
#: the parser here without importing :mod:`.main`, which imports every command)
_PARSER_BUILDER = []


def register_parser_builder(build):
    """Register ``build()`` -> the ``fastalign`` parser (:func:`.main.build_parser`)."""
    _PARSER_BUILDER[:] = [build]


def default_args(command, nz=None):
    """The options of ``fastalign COMMAND`` at their defaults (``--nz nz``): what ``info``
    estimates for."""
    if not _PARSER_BUILDER:   # pragma: no cover (the package's __init__ imports .main)
        raise RuntimeError("fastalign.cli.main was not imported: no parser registered")
    args = _PARSER_BUILDER[0]().parse_args([command, "INPUT"])
    args.nz = nz
    return args
