"""Writing the results of an alignment, shared by the local and the Dask runs.

The aligned stack and the volume are written by the caller (in memory locally, slab-wise by
the workers on Dask); everything else -- ``.xf``, ``.aln``, ``.tlt``, ``.xtilt``,
``.exclude``, the three figures and ``report.json`` -- is written here into the staged
:class:`fastalign.io.OutputSet`.
"""
import time
import warnings

import fastalign

from .. import io, report
from .common import EXIT_OK, say


def align_names(stem):
    """``{output key: file name}`` of an alignment run."""
    return {"aligned": f"{stem}.ali", "volume": f"{stem}.rec", "xf": f"{stem}.xf",
            "aln": f"{stem}.aln", "tlt": f"{stem}.tlt", "xtilt": f"{stem}.xtilt",
            "exclude": f"{stem}.exclude", "report": "report.json",
            "shifts_png": "shifts.png",
            "slices_png": "slices.png", "convergence_png": "convergence.png"}


class SourceRows:
    """Enough of an array for :func:`slice_panels`: ``shape``, and ``[:, c:c+1, :]`` read
    from the file (for runs whose data never reside in this process)."""

    def __init__(self, src):
        self.src = src
        self.shape = src.shape

    def __getitem__(self, key):
        rows = key[1]
        return self.src.read(0, self.shape[0], rows.start, rows.stop)


def slice_panels(data, result, angles, nz):
    """Central x-z slices before/after alignment (FBP) and of the result volume.

    Parameters
    ----------
    data : ndarray or SourceRows
        The unaligned tilt series (only its central row is used).
    result : AlignResult
    angles : ndarray
        Degrees.
    nz : int
        Thickness of the FBP slices.

    Returns
    -------
    list of (str, ndarray)
        Titles and images for :func:`fastalign.report.plot_slices`.
    """
    c = data.shape[1] // 2
    panels = []
    try:
        before = fastalign.fbp(data[:, c:c + 1, :], angles, nz=nz)[0]
        after = fastalign.fbp(result.aligned[:, c:c + 1, :], angles, nz=nz)[0]
        panels += [(f"before alignment (FBP), x-z slice y={c}", before),
                   (f"after alignment (FBP), x-z slice y={c}", after)]
    except (ValueError, TypeError) as exc:
        warnings.warn(f"slices.png: could not reconstruct the before/after slices ({exc})")
    panels.append((f"result volume, x-z slice y={c}", result.volume[c]))
    return panels


def write_align_products(outputs, names, stem, angles, result, panels, timings, t0,
                         t_start, record):
    """Write the .xf, .aln, .tlt, .xtilt, .exclude, the three figures and report.json of an
    alignment into the staged ``outputs`` (the stack and volume are written by the caller).

    Parameters
    ----------
    outputs : fastalign.io.OutputSet
        Entered (staging).
    names : dict
        :func:`align_names`.
    stem : str
    angles : ndarray
    result : AlignResult
    panels : list
        :func:`slice_panels`.
    timings : dict
        Seconds so far; ``write_s`` and ``total_s`` are added.
    t0, t_start : float
        ``time.perf_counter()`` when writing and the run started.
    record : dict
        ``inputs``, ``options``, ``argv`` and ``extra`` for the report.
    """
    io.write_xf(outputs.path(names["xf"]), result.shifts,
                axis_angle_deg=result.axis_angle_deg or 0.0)
    n, ny, nx = record["inputs"]["shape"]
    io.write_aln(outputs.path(names["aln"]), angles, result.shifts,
                 result.axis_angle_deg or 0.0, image_shape=(ny, nx))
    io.write_tlt(outputs.path(names["tlt"]), angles)
    io.write_xtilt(outputs.path(names["xtilt"]), len(angles))
    write_exclude(outputs.path(names["exclude"]), result,
                  record["extra"].get("dropped_views"))
    report.plot_shifts(outputs.path(names["shifts_png"]), angles, result.shifts,
                       title=f"{stem}: shifts ({result.method})",
                       uncertainty=getattr(result, "uncertainty", None),
                       residual=getattr(result, "tilt_residual", None),
                       excluded=getattr(result, "excluded", ()))
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


def write_exclude(path, result, dropped=None):
    """Write ``<stem>.exclude``: the ``EXCLUDELIST`` line (1-based) of the excluded views for
    IMOD's ``newst``/``tilt`` command files, or only a comment when there is none (every view
    used, or the excluded views ``dropped`` from the outputs)."""
    line = result.excludelist() if hasattr(result, "excludelist") else None
    if line:
        text = ("# fastalign: views left out of the alignment (1-based); paste into "
                f"newst.com/tilt.com\nEXCLUDELIST {line}\n")
    elif dropped:
        text = (f"# fastalign: views {io.format_excludelist([v - 1 for v in dropped])} were "
                "dropped from the outputs (--drop-excluded): nothing to exclude\n")
    else:
        text = "# fastalign: every view was used: nothing to exclude\n"
    with io.atomic_write(path) as tmp:
        with open(tmp, "w", encoding="ascii") as fh:
            fh.write(text)


def without_excluded(result, angles):
    """``(result, angles)`` without the excluded views (``--drop-excluded``): the shifts,
    aligned stack and angles of the kept views only; the rest of the result unchanged."""
    import dataclasses

    import numpy as np
    excluded = np.asarray(getattr(result, "excluded", ()), dtype=np.int64)
    if excluded.size == 0:
        return result, angles
    keep = np.ones(len(result.shifts), bool)
    keep[excluded] = False
    unc = getattr(result, "uncertainty", None)
    per_tilt = {k: np.asarray(getattr(result, k))[keep]
                for k in ("tilt_residual", "tilt_coherence")
                if getattr(result, k, None) is not None}
    kept = dataclasses.replace(result, **per_tilt, shifts=np.asarray(result.shifts)[keep],
                               aligned=result.aligned[keep],
                               uncertainty=None if unc is None else np.asarray(unc)[keep],
                               angles_deg=np.asarray(result.angles_deg)[keep],
                               excluded=np.zeros(0, np.int64))
    return kept, np.asarray(angles)[keep]


def excluded_line(result, dropped=False):
    """The summary line of the excluded views (IMOD EXCLUDELIST, 1-based), or None."""
    entries = (result.options or {}).get("excluded") or []
    if not entries:
        return None
    views = io.format_excludelist([e["tilt"] for e in entries])
    why = "; ".join(f"{e['view']}: {e['reason']}" for e in entries)
    where = ("dropped from the outputs" if dropped
             else "shifts interpolated, views kept in the stack")
    return f"fastalign: excluded views {views} (EXCLUDELIST; {where}) -- {why}"


def align_done(args, result, names, out_dir):
    """Say how the alignment ended (warn if it did not converge) and where the outputs are."""
    state = "converged" if result.converged else "did NOT converge"
    med = result.median_uncertainty() if hasattr(result, "median_uncertainty") else None
    say(args, f"fastalign: {result.method} {state} after {result.n_iter} iterations"
              + ("" if med is None else f"; median shift uncertainty {med:.3g} px"))
    inten = result.options.get("intensity") if result.options else None
    if inten:
        say(args, f"fastalign: intensity {inten.get('summary')}")
    spec = result.options.get("specimen") if result.options else None
    if spec:
        line = f"fastalign: specimen {spec.get('kind')}"
        if spec.get("kind") == "slab":
            line += (f" (edge fraction {spec.get('edge_fraction')}): thickness "
                     f"{spec.get('thickness_px')} px, pitch {spec.get('pitch_deg')} deg, "
                     f"region pad_x={spec.get('pad_x')} nz={spec.get('nz')}, "
                     f"stopped: {spec.get('stop')}")
        say(args, line)
    if getattr(result, "tilt_offset_deg", 0.0) or (result.options or {}).get("tilt_offset"):
        note = (result.options or {}).get("tilt_offset", {}).get("note")
        say(args, f"fastalign: tilt offset {result.tilt_offset_deg:+.3f} deg (added to the "
                  "angles; the .tlt holds the corrected angles)" + (f"; {note}" if note else ""))
    orient = result.options.get("orientation") if result.options else None
    if orient:
        say(args, f"fastalign: tilt axis {result.axis_angle_deg:.2f} deg (from the data: "
                  f"{orient.get('used')}, {orient.get('quarter_turns')} quarter turn(s); "
                  "direction modulo 180 deg)")
    line = excluded_line(result, getattr(args, "drop_excluded", False))
    if line:
        say(args, line)
    causes = result.diagnosis() if hasattr(result, "diagnosis") else []
    if causes:
        state = "did not converge" if not result.converged else "fits the data poorly"
        warnings.warn(f"alignment {state}; likely causes, most likely first:\n  - "
                      + "\n  - ".join(causes))
    say(args, f"fastalign: wrote {', '.join(names.values())} to {out_dir}")
    return EXIT_OK
