"""SIGINT/SIGTERM handling: an interrupted run stops at the next safe point and leaves no
partial output (exit 130 after Ctrl-C, 143 after SIGTERM).

The handlers raise at once, but an exception raised while Python runs a C callback (Numba's
compiler calls back into Python through ctypes) is printed and swallowed; :func:`checkpoint`
re-raises it at the next safe point (each iteration, before writing).  Once the run has
unwound (outputs discarded, message printed), the ``fastalign`` program leaves through
:func:`exit_now`.
"""
import contextlib
import logging
import os
import signal
import sys
import threading

__all__ = ["Terminated", "checkpoint", "exit_now", "installed", "quiet_unraisable"]

#: signals received during this run
_PENDING_SIGNALS = []


class Terminated(KeyboardInterrupt):
    """Raised by the SIGTERM handler so that cleanup runs as for Ctrl-C."""


def _on_sigint(signum, frame):
    _PENDING_SIGNALS.append(signum)
    raise KeyboardInterrupt()


def _on_sigterm(signum, frame):
    _PENDING_SIGNALS.append(signum)
    raise Terminated()


def quiet_unraisable(unraisable):
    """Keep a swallowed Ctrl-C/SIGTERM quiet (it is re-raised by :func:`checkpoint`) and, once
    a signal has arrived, the finalizer errors of the objects it left half-built (an
    interrupted Numba compile: llvmlite's ``ObjectRef.__del__``, also at interpreter exit)."""
    if _PENDING_SIGNALS or isinstance(unraisable.exc_value, KeyboardInterrupt):
        return
    sys.__unraisablehook__(unraisable)


def checkpoint(*_args, **_kwargs):
    """Raise again for a signal whose exception was swallowed; usable as a library callback."""
    if _PENDING_SIGNALS:
        raise Terminated() if signal.SIGTERM in _PENDING_SIGNALS else KeyboardInterrupt()


def exit_now(code):
    """End the process with ``code`` now, skipping the interpreter's finalization.

    For a program ended by a signal, once its outputs are discarded and its message printed:
    finalizing the interpreter (module teardown, the compiled kernels' finalizers, the thread
    pools) took 1.5 to 2.5 s on a loaded machine (``bench/signal_latency.py``), longer than
    everything else after the signal.  Logging and the standard streams are flushed first.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or broken pipe: nothing more to say
            pass
    os._exit(code)


@contextlib.contextmanager
def installed():
    """Install the SIGINT/SIGTERM handlers and :func:`quiet_unraisable` for one run.

    Explicit handlers: a parent that ignores SIGINT must not make us uninterruptible.  Only
    in the main thread (elsewhere signals cannot be handled; nothing is installed).  The old
    handlers are restored on exit, the unraisable hook too unless a signal arrived (it stays
    for the finalizers that run at interpreter exit).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _PENDING_SIGNALS.clear()
    old = {signal.SIGINT: signal.signal(signal.SIGINT, _on_sigint)}
    old_hook, sys.unraisablehook = sys.unraisablehook, quiet_unraisable
    old[signal.SIGTERM] = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        if not _PENDING_SIGNALS:
            sys.unraisablehook = old_hook
