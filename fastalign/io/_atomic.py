"""Non-destructive, atomic file output shared by every writer of the package.

Every file fastalign writes goes through :func:`atomic_write`: the content is written to a
hidden temporary file in the destination directory (``.<name>.<random>.tmp``) which then
replaces the destination in one ``os.replace`` call, so a reader never sees a half-written file
and an interrupted write leaves nothing behind.  Writers refuse to replace an existing file
unless ``overwrite=True`` and always refuse to write over one of their inputs.

:class:`OutputSet` extends this to a group of files (the outputs of one CLI run): they are
written into a hidden staging directory and moved into place together by
:meth:`OutputSet.commit`, so an interrupted run leaves neither temporary files nor a partial set
of results.
"""
import contextlib
import os
import shutil
import signal
import tempfile
import threading
import warnings

__all__ = ["atomic_write", "check_output_path", "same_file", "OutputSet"]


def same_file(a, b):
    """Whether two paths name the same file (following links).

    Parameters
    ----------
    a, b : str or os.PathLike

    Returns
    -------
    bool
        ``os.path.samefile`` when both exist, otherwise equality of the resolved paths.
    """
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(os.fspath(a)) == os.path.realpath(os.fspath(b))


def check_output_path(path, *, overwrite=False, inputs=()):
    """Refuse output paths that would destroy data.

    Parameters
    ----------
    path : str or os.PathLike
        The file about to be written.
    overwrite : bool
        Allow replacing an existing file (never one of ``inputs``).
    inputs : iterable of str or os.PathLike
        Files the caller read from; writing to any of them is refused even with ``overwrite``.

    Raises
    ------
    ValueError
        ``path`` is one of ``inputs``.
    FileExistsError
        ``path`` exists and ``overwrite`` is false.
    FileNotFoundError
        The destination directory does not exist.
    IsADirectoryError
        ``path`` is an existing directory.
    """
    path = os.fspath(path)
    for inp in inputs:
        if inp is not None and same_file(path, inp):
            raise ValueError(f"refusing to write {path}: it is an input file "
                             "(choose another output name or directory)")
    if os.path.isdir(path):
        raise IsADirectoryError(f"cannot write {path}: it is a directory")
    if os.path.lexists(path) and not overwrite:
        raise FileExistsError(f"{path} already exists (use overwrite=True, or --overwrite on "
                              "the command line, to replace it)")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"cannot write {path}: directory {parent} does not exist")


def _default_file_mode():
    """Permission bits a plain ``open(path, 'w')`` would give (0o666 minus the umask)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_write(path, *, overwrite=False, inputs=()):
    """Context manager yielding a temporary path that becomes ``path`` on success.

    Parameters
    ----------
    path : str or os.PathLike
        Final destination.
    overwrite : bool
        Allow replacing an existing ``path``.
    inputs : iterable of str or os.PathLike
        Input files that must never be written to.

    Yields
    ------
    tmp : str
        A fresh, empty file ``.<name>.<random>.tmp`` in the destination directory.  Write the
        content there (any library, any mode); on normal exit it replaces ``path`` atomically,
        on any exception (including ``KeyboardInterrupt``) it is deleted and the exception
        propagates.

    Examples
    --------
    >>> with atomic_write("angles.tlt") as tmp:          # doctest: +SKIP
    ...     with open(tmp, "w") as fh:
    ...         fh.write("0.0\\n")
    """
    path = os.fspath(path)
    check_output_path(path, overwrite=overwrite, inputs=inputs)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                               dir=directory)
    os.close(fd)
    try:
        os.chmod(tmp, _default_file_mode())
        yield tmp
        if not overwrite and os.path.lexists(path):  # appeared while we were writing
            raise FileExistsError(f"{path} appeared while it was being written; not replaced")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _sigint_deferred():
    """Hold back SIGINT (POSIX, main thread) while a short critical section runs."""
    if (hasattr(signal, "pthread_sigmask")
            and threading.current_thread() is threading.main_thread()):
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            yield
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
    else:  # pragma: no cover - non-POSIX or worker thread
        yield


class OutputSet:
    """A group of output files that appear together or not at all.

    Parameters
    ----------
    out_dir : str or os.PathLike
        Destination directory; created (with parents) on entry if missing, and removed again
        on failure if this object created it and it is still empty.
    names : iterable of str
        File names (no directories) this set may write.
    overwrite : bool
        Allow replacing existing files of the same names.
    inputs : iterable of str or os.PathLike
        Input files; an output landing on one of them is refused even with ``overwrite``.

    Notes
    -----
    :meth:`check` (also run on entry) verifies all destinations *before* anything is
    written.  Inside the ``with`` block, write each file to :meth:`path` (a hidden staging
    directory ``.fastalign-staging-*`` inside ``out_dir``), then call :meth:`commit`, which
    moves them into place with SIGINT held back.  Leaving the block without committing (error
    or ``KeyboardInterrupt``) removes the staging directory and its contents.

    Examples
    --------
    >>> with OutputSet("out", ["a.txt"]) as outs:       # doctest: +SKIP
    ...     with open(outs.path("a.txt"), "w") as fh:
    ...         fh.write("hello")
    ...     outs.commit()
    """

    def __init__(self, out_dir, names, *, overwrite=False, inputs=()):
        self.out_dir = os.path.abspath(os.fspath(out_dir))
        self.names = list(names)
        for n in self.names:
            if os.path.basename(n) != n or n in ("", ".", ".."):
                raise ValueError(f"output name {n!r} must be a plain file name")
        self.overwrite = bool(overwrite)
        self.inputs = [os.fspath(p) for p in inputs if p is not None]
        self._staging = None
        self._created = []
        self._committed = False

    def final_path(self, name):
        """Destination of output ``name`` in ``out_dir``."""
        return os.path.join(self.out_dir, name)

    def existing(self):
        """Names of this set already present in ``out_dir``."""
        return [n for n in self.names if os.path.lexists(self.final_path(n))]

    def check(self):
        """Refuse before writing anything: inputs as outputs, or existing results.

        Raises
        ------
        ValueError, FileExistsError, NotADirectoryError
        """
        if os.path.exists(self.out_dir) and not os.path.isdir(self.out_dir):
            raise NotADirectoryError(f"output directory {self.out_dir} exists and is not a "
                                     "directory")
        real_out = os.path.realpath(self.out_dir)
        for inp in self.inputs:
            if os.path.isdir(inp):  # a directory store (Zarr): never write inside it
                real_in = os.path.realpath(inp)
                if os.path.commonpath([real_out, real_in]) == real_in:
                    raise ValueError(f"refusing to write into {self.out_dir}: it is inside "
                                     f"the input {inp}")
        for n in self.names:
            for inp in self.inputs:
                if same_file(self.final_path(n), inp):
                    raise ValueError(f"refusing to write {self.final_path(n)}: it is an input "
                                     "file (choose another output directory)")
        present = self.existing()
        if present and not self.overwrite:
            raise FileExistsError(
                f"output directory {self.out_dir} already holds results "
                f"({', '.join(present)}); use --overwrite to replace them")

    def preflight(self, need_bytes=None):
        """Refuse before anything is computed: an output directory that cannot be created,
        is not writable, or whose file system has less free space than ``need_bytes``.

        The nearest existing directory (``out_dir`` or an ancestor) is probed by creating
        and removing an empty hidden directory in it; nothing else is written.

        Parameters
        ----------
        need_bytes : int, optional
            Estimated size of the outputs; when the free space cannot be determined, a
            ``UserWarning`` says so.

        Raises
        ------
        NotADirectoryError, PermissionError, OSError
        """
        self.check()
        base = self.out_dir
        while not os.path.lexists(base):
            base = os.path.dirname(base)
        if not os.path.isdir(base):
            raise NotADirectoryError(f"cannot create output directory {self.out_dir}: {base} "
                                     "is not a directory")
        where = ("output directory" if base == self.out_dir
                 else f"cannot create output directory {self.out_dir}:")
        if not os.access(base, os.W_OK | os.X_OK):
            raise PermissionError(f"{where} {base} is not writable")
        try:
            os.rmdir(tempfile.mkdtemp(prefix=".fastalign-probe-", dir=base))
        except OSError as exc:
            raise PermissionError(f"{where} {base} is not writable "
                                  f"({exc.strerror or exc})") from None
        if need_bytes is None:
            return
        mib = need_bytes / 2 ** 20
        try:
            free = shutil.disk_usage(base).free
        except OSError as exc:
            warnings.warn(f"could not determine the free space in {base} ({exc}); the "
                          f"outputs need about {mib:.1f} MiB")
            return
        if free < need_bytes:
            raise OSError(f"not enough free space for the outputs in {base}: about "
                          f"{mib:.1f} MiB needed, {free / 2 ** 20:.1f} MiB free")

    def __enter__(self):
        self.check()
        missing = []
        d = self.out_dir
        while not os.path.isdir(d):
            missing.append(d)
            d = os.path.dirname(d)
        for d in reversed(missing):
            os.mkdir(d)
            self._created.append(d)
        self._staging = tempfile.mkdtemp(prefix=".fastalign-staging-", dir=self.out_dir)
        return self

    def path(self, name):
        """Staging path to write output ``name`` to (moved into place by :meth:`commit`)."""
        if name not in self.names:
            raise ValueError(f"{name!r} is not one of this output set's names {self.names}")
        if self._staging is None:
            raise RuntimeError("OutputSet.path() used outside its with-block")
        return os.path.join(self._staging, name)

    def commit(self):
        """Move every staged file into ``out_dir`` (SIGINT deferred until done).

        Returns
        -------
        list of str
            Final paths written, in the order of ``names``.
        """
        written = []
        with _sigint_deferred():
            self.check()
            for n in self.names:
                src = os.path.join(self._staging, n)
                if os.path.exists(src):
                    os.replace(src, self.final_path(n))
                    written.append(self.final_path(n))
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None
            self._committed = True
        return written

    def __exit__(self, exc_type, exc, tb):
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None
        if not self._committed:
            for d in reversed(self._created):
                with contextlib.suppress(OSError):
                    os.rmdir(d)  # only succeeds when empty
        return False
