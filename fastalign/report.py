"""Run reports: ``report.json`` and PNG figures (edge layer: no maths here).

Figures are drawn with Matplotlib's Agg canvas directly (no ``pyplot``, no global state, no
display needed) and, like every fastalign output, written atomically.

Functions
---------
build_report, write_report
    The JSON record of a run: inputs, options, shifts, history, timings, software versions
    and machine.
plot_shifts
    Shift curves ``dx``, ``dy`` against tilt angle.
plot_slices
    Image panels side by side (the CLI shows central slices before and after alignment).
plot_convergence
    Largest shift update and data residual per outer iteration.
"""
import datetime
import json
import math
import os
import platform

import numpy as np

from ._version import __version__
from .io._atomic import atomic_write

__all__ = ["software_versions", "machine_info", "to_jsonable", "build_report", "write_report",
           "plot_shifts", "plot_slices", "plot_convergence"]

REPORT_VERSION = 1

_PACKAGES = ("fastalign", "numpy", "numba", "scipy", "pyfftw", "mrcfile", "tifffile",
             "matplotlib", "h5py", "zarr", "dask")


def software_versions():
    """Versions of Python and of fastalign and its main dependencies.

    Returns
    -------
    dict
        ``{"python": ..., "fastalign": ..., "numpy": ..., "numba": ..., ...}``; packages that
        are not installed are left out.
    """
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            if name == "fastalign":
                out[name] = __version__
    return out


def machine_info():
    """Description of the machine and thread settings a run used.

    Returns
    -------
    dict
        ``system``, ``release``, ``machine``, ``processor``, ``cpu_count``,
        ``numba_threads`` and ``numba_threading_layer`` (None before any parallel kernel
        ran).
    """
    import numba

    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet
        layer = None
    return {
        "system": platform.system(),
        "release": platform.release(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "numba_threads": numba.get_num_threads(),
        "numba_threading_layer": layer,
        "python_implementation": platform.python_implementation(),
    }


def to_jsonable(obj):
    """Convert nested containers of NumPy values into plain JSON types.

    Arrays become (nested) lists, NumPy scalars Python scalars, NaN/Inf ``None`` (strict
    JSON has no NaN), paths strings, other objects their ``repr``.

    Parameters
    ----------
    obj : object

    Returns
    -------
    object
        Serialisable with ``json.dumps(..., allow_nan=False)``.
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, np.integer)) and not isinstance(obj, np.bool_):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if callable(obj):
        return getattr(obj, "__qualname__", repr(obj))
    return repr(obj)


def build_report(*, inputs, options, result=None, timings=None, outputs=None, command=None,
                 extra=None):
    """Assemble the JSON report of a run.

    Parameters
    ----------
    inputs : dict
        What was read (paths, format, shape, dtype, pixel size, angle source, angles).
    options : dict
        The options the run was given.
    result : fastalign.align.AlignResult, optional
        Its ``summary()`` provides method, convergence, shifts, history and the library's own
        options and timings.
    timings : dict, optional
        Wall-clock seconds per phase of the run (read, align, write, total).
    outputs : dict, optional
        Output role -> file name.
    command : list of str, optional
        The command line.
    extra : dict, optional
        Further top-level entries.

    Returns
    -------
    dict
        JSON-ready (see :func:`to_jsonable`); keys ``report_version``, ``created``,
        ``command``, ``inputs``, ``options``, ``shifts``, ``history``, ``result``,
        ``timings``, ``outputs``, ``versions``, ``machine``; with a result also ``tilts``,
        one dict per tilt (:meth:`fastalign.align.AlignResult.tilt_table`: angle, shifts,
        their uncertainties, residual, coherence, excluded/interpolated flags).
    """
    report = {
        "report_version": REPORT_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": list(command) if command is not None else None,
        "inputs": inputs,
        "options": options,
        "shifts": None,
        "history": None,
        "result": None,
        "timings": dict(timings or {}),
        "outputs": outputs or {},
        "versions": software_versions(),
        "machine": machine_info(),
    }
    if result is not None:
        summary = result.summary()
        shifts = np.asarray(result.shifts)
        report["shifts"] = {
            "convention": ("(dx, dy) in pixels: measured image = ideal projection translated "
                           "by (dx, dy); the .xf file holds (-dx, -dy)"),
            "gauge": ("a*cos(theta) + b*sin(theta) removed from dx, mean removed from dy "
                      "(see fastalign.align.AlignResult)"),
            "dx": shifts[:, 0],
            "dy": shifts[:, 1],
        }
        if getattr(result, "axis_angle_deg", 0.0) or "refine" in getattr(result, "options", {}):
            report["geometry"] = {
                "axis_angle_deg": float(result.axis_angle_deg),
                "center_offset": float(result.center_offset),
                "tilt_offset_deg": float(getattr(result, "tilt_offset_deg", 0.0)),
                "convention": ("axis angle: counter-clockwise from +y with y up (IMOD), "
                               "measured = ideal translated by (dx, dy) then rotated about the "
                               "image centre ((nx-1)/2, (ny-1)/2); centre offset: the axis "
                               "projects to column (nx-1)/2 + center_offset of the aligned "
                               "stack; the .xf holds R(-angle) and (-dx, -dy) "
                               "(fastalign.align.axis)"),
            }
        report["history"] = summary.pop("history")
        report["tilts"] = summary.pop("tilts", None)    # AlignResult.tilt_table
        summary.pop("shifts", None)
        report["result"] = summary
    if extra:
        report.update(extra)
    return to_jsonable(report)


def write_report(path, report, *, overwrite=False, inputs=()):
    """Write a report dict as indented, strict JSON, atomically.

    Parameters
    ----------
    path : str or os.PathLike
    report : dict
        Passed through :func:`to_jsonable` first.
    overwrite : bool
    inputs : iterable of path
        Input files that must not be written to.

    Returns
    -------
    str
    """
    text = json.dumps(to_jsonable(report), indent=2, allow_nan=False) + "\n"
    with atomic_write(path, overwrite=overwrite, inputs=inputs) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
    return os.fspath(path)


def _figure(width, height):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path, overwrite, inputs):
    with atomic_write(path, overwrite=overwrite, inputs=inputs) as tmp:
        fig.savefig(tmp, format="png")
    return os.fspath(path)


def _optional_panel(values, shape, name):
    """``values`` as float64 of ``shape`` (ValueError otherwise), or None when absent or
    without any finite value (no panel)."""
    if values is None:
        return None
    v = np.asarray(values, dtype=np.float64)
    if v.shape != shape:
        raise ValueError(f"{name} has shape {v.shape}, expected {shape}")
    return v if np.any(np.isfinite(v)) else None


def plot_shifts(path, angles_deg, shifts, *, title=None, overwrite=False, inputs=(),
                uncertainty=None, residual=None, excluded=()):
    """Plot the shifts ``dx`` and ``dy`` against tilt angle to a PNG file.

    Parameters
    ----------
    path : str or os.PathLike
    angles_deg : array_like, shape (n_tilts,)
    shifts : array_like, shape (n_tilts, 2)
        ``(dx, dy)`` in pixels (fastalign convention).
    title : str, optional
    overwrite : bool
    inputs : iterable of path
    uncertainty : array_like, shape (n_tilts, 2), optional
        1-sigma standard errors of ``(dx, dy)`` (px, NaN: not estimated): a second panel
        shows them against tilt angle.
    residual : array_like, shape (n_tilts,), optional
        Per-tilt data residual (``AlignResult.tilt_residual``, NaN: not computed): a panel
        shows it against tilt angle.
    excluded : array_like of int
        0-based tilts left out of the alignment: marked (red crosses at their interpolated
        shifts, dotted lines in the other panels).

    Returns
    -------
    str
    """
    angles = np.asarray(angles_deg, dtype=np.float64)
    s = np.asarray(shifts, dtype=np.float64)
    if s.shape != (angles.size, 2):
        raise ValueError(f"shifts have shape {s.shape}, expected ({angles.size}, 2)")
    order = np.argsort(angles)
    u = _optional_panel(uncertainty, s.shape, "uncertainty")
    res = _optional_panel(residual, angles.shape, "residual")
    out = np.asarray(excluded, dtype=np.int64).reshape(-1)
    if out.size and (out.min() < 0 or out.max() >= angles.size):
        raise ValueError(f"excluded tilts {out.tolist()} outside 0..{angles.size - 1}")
    rows = 1 + (u is not None) + (res is not None)
    fig = _figure(7, 2.0 + 2.5 * rows)
    ax = fig.add_subplot(rows, 1, 1)
    ax.plot(angles[order], s[order, 0], "o-", ms=3, label="dx")
    ax.plot(angles[order], s[order, 1], "s-", ms=3, label="dy")
    if out.size:
        ax.plot(angles[out], s[out, 0], "x", color="red", ms=8, mew=2,
                label=f"excluded ({out.size}, interpolated)")
        ax.plot(angles[out], s[out, 1], "x", color="red", ms=8, mew=2)
    ax.axhline(0.0, color="0.6", lw=0.8)
    ax.set_xlabel("tilt angle (degrees)")
    ax.set_ylabel("shift (pixels)")
    ax.set_title(title or "estimated shifts (measured = ideal translated by (dx, dy))")
    ax.legend()
    ax.grid(alpha=0.3)
    if u is not None:
        ax2 = fig.add_subplot(rows, 1, 2, sharex=ax)
        for col, mark, name in ((0, "o-", "dx"), (1, "s-", "dy")):
            if np.any(np.isfinite(u[:, col])):
                ax2.semilogy(angles[order], u[order, col], mark, ms=3,
                             label=f"{name} (median {np.nanmedian(u[:, col]):.3g} px)")
        ax2.set_xlabel("tilt angle (degrees)")
        ax2.set_ylabel("1-sigma uncertainty (pixels)")
        ax2.legend()
        ax2.grid(alpha=0.3, which="both")
    if res is not None:
        ax3 = fig.add_subplot(rows, 1, rows, sharex=ax)
        ax3.plot(angles[order], res[order], "o-", ms=3, color="C2",
                 label=f"residual (median {np.nanmedian(res):.3g})")
        worst = int(np.nanargmax(res))
        ax3.plot(angles[worst], res[worst], "o", mfc="none", mec="k", ms=9,
                 label=f"largest: view {worst + 1}")
        ax3.set_xlabel("tilt angle (degrees)")
        ax3.set_ylabel("||P x - b|| / ||b|| per tilt")
        ax3.legend()
        ax3.grid(alpha=0.3)
    for a in fig.axes[1:]:
        for k, i in enumerate(out):
            a.axvline(angles[i], color="red", ls=":", lw=1,
                      label="excluded" if k == 0 else None)
        if out.size:
            a.legend()
    return _save(fig, path, overwrite, inputs)


def plot_slices(path, panels, *, title=None, xlabel="x (pixels)", ylabel="z (pixels)",
                overwrite=False, inputs=()):
    """Show 2-D images side by side (e.g. central slices before/after alignment) in a PNG.

    Parameters
    ----------
    path : str or os.PathLike
    panels : sequence of (str, array_like)
        ``(title, image)`` pairs; each image is 2-D and shown with its own grey scale
        clipped to its 1st-99th percentile.
    title : str, optional
        Figure title.
    xlabel, ylabel : str
        Axis labels of every panel (rows of an image are drawn bottom-up).
    overwrite : bool
    inputs : iterable of path

    Returns
    -------
    str
    """
    panels = list(panels)
    if not panels:
        raise ValueError("plot_slices needs at least one panel")
    fig = _figure(4.2 * len(panels), 4.9)
    for k, (name, image) in enumerate(panels):
        img = np.asarray(image, dtype=np.float32)
        if img.ndim != 2:
            raise ValueError(f"panel {name!r} is {img.ndim}-D, expected 2-D")
        ax = fig.add_subplot(1, len(panels), k + 1)
        finite = img[np.isfinite(img)]
        lo, hi = (np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0))
        ax.imshow(img, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1,
                  interpolation="nearest", origin="lower")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
    if title:
        fig.suptitle(title)
    return _save(fig, path, overwrite, inputs)


def plot_convergence(path, history, *, title=None, overwrite=False, inputs=()):
    """Plot the per-iteration history of an alignment to a PNG.

    Parameters
    ----------
    path : str or os.PathLike
    history : list of dict
        ``AlignResult.history``: keys ``iteration``, ``level``, ``max_update`` (px) and
        ``residual`` (any may be missing).  An empty history gives a figure saying so
        (non-iterative methods).
    title : str, optional
    overwrite : bool
    inputs : iterable of path

    Returns
    -------
    str
    """
    history = list(history or [])
    fig = _figure(9, 4)
    ax_upd = fig.add_subplot(1, 2, 1)
    ax_res = fig.add_subplot(1, 2, 2)
    if not history:
        for ax in (ax_upd, ax_res):
            ax.text(0.5, 0.5, "no iterations recorded", ha="center", va="center",
                    transform=ax.transAxes)
    else:
        it = [h.get("iteration", k + 1) for k, h in enumerate(history)]
        upd = np.array([np.nan if h.get("max_update") is None else h["max_update"]
                        for h in history], dtype=np.float64)
        res = np.array([np.nan if h.get("residual") is None else h["residual"]
                        for h in history], dtype=np.float64)
        levels = [h.get("level") for h in history]
        ax_upd.plot(it, upd, "o-", ms=3)
        ax_res.plot(it, res, "o-", ms=3, color="C1")
        for ax, values in ((ax_upd, upd), (ax_res, res)):
            positive = values[np.isfinite(values)]
            if positive.size and np.all(positive > 0):
                ax.set_yscale("log")
            for k in range(1, len(levels)):
                if levels[k] != levels[k - 1]:
                    ax.axvline(it[k], color="0.6", ls=":", lw=1)
            ax.grid(alpha=0.3)
            ax.set_xlabel("outer iteration")
    ax_upd.set_ylabel("largest shift update (pixels)")
    ax_res.set_ylabel("relative residual ||Ax - b|| / ||b||")
    ax_upd.set_title("shift updates (dotted: binning level change)", fontsize=10)
    ax_res.set_title("data residual", fontsize=10)
    if title:
        fig.suptitle(title)
    return _save(fig, path, overwrite, inputs)
