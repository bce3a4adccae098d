"""Writing the results of an alignment, shared by the local and the Dask runs.

The aligned stack and the volume are written by the caller (block by block locally, with
:class:`StreamedMRC`: the volume while it is reconstructed; slab-wise by the workers on
Dask); everything else -- ``.xf``, ``.aln``, ``.tlt``, ``.xtilt``, ``.exclude``, the three
figures and ``report.json`` -- is written here into the staged
:class:`fastalign.io.OutputSet`.
"""
import math
import os
import time
import warnings

import numpy as np

import fastalign

from .. import io, report
from ..io.mrc import finish_mrc_header
from .._version import __version__
from .common import EXIT_OK, say

#: header labels of the MRC outputs (as :func:`fastalign.io.write_volume` and
#: :func:`fastalign.io.write_aligned_stack` write them)
VOLUME_LABEL = "volume: sections y, rows z, columns x"
STACK_LABEL = "aligned tilt series (n_tilts, ny, nx)"

#: values per chunk of the header statistics' temporaries (float64)
_STATS_CHUNK = 2 ** 20


class StreamedMRC:
    """A float32 MRC file (mode 2) written section block by section block, its header
    statistics accumulated on the way: nothing of the size of the file is held.

    The volume sink of :func:`fastalign.align.executor.volume_sink` (:meth:`begin`,
    :meth:`write`, :meth:`volume`), and the writer of in-memory stacks
    (:meth:`write_array`), whose MRC statistics would otherwise take a temporary of the
    array's size.  The file goes to ``path`` as is: give it a staged path of a
    :class:`fastalign.io.OutputSet` (an interrupted run leaves nothing).  The header is that of
    :func:`fastalign.io.write_mrc` (labels, voxel size, ``ispg``), the statistics computed
    in float64 (``dmean`` and ``rms`` may differ from ``mrcfile``'s float32 ones in the
    last bits).

    Parameters
    ----------
    path : str
    voxel_size_A : float, optional
    volume : bool
        ``ispg = 1`` (a volume) or 0 (an image stack).
    label : str
        Second header label (after ``fastalign <version>``).
    """

    def __init__(self, path, *, voxel_size_A=None, volume=True, label=VOLUME_LABEL):
        self.path = os.fspath(path)
        self.voxel_size_A = voxel_size_A
        self.is_volume = bool(volume)
        self.label = label
        self.shape = None
        self._fd = None
        self._next = 0
        self._stats = None     # (count, mean, M2, min, max)

    @property
    def begun(self):
        return self.shape is not None

    def begin(self, shape):
        """Create the file (header and an unwritten data block) for ``shape`` sections."""
        import mrcfile
        if self.begun:
            raise RuntimeError(f"{self.path}: already begun")
        self.shape = tuple(int(v) for v in shape)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with mrcfile.new_mmap(self.path, shape=self.shape, mrc_mode=2, fill=None,
                                  overwrite=True) as mrc:
                self._offset = 1024 + int(mrc.header.nsymbt)
                self._little = mrc.data.dtype.byteorder in "<=|"
        self._fd = os.open(self.path, os.O_RDWR)

    def write(self, start, block):
        """Write sections ``start : start + len(block)`` (in order, each once)."""
        block = np.ascontiguousarray(block, dtype="<f4" if self._little else ">f4")
        if start != self._next or block.shape[1:] != self.shape[1:] \
                or start + block.shape[0] > self.shape[0]:
            raise ValueError(f"{self.path}: block {start}:{start + block.shape[0]} of shape "
                             f"{block.shape} does not continue sections 0:{self._next} of "
                             f"{self.shape}")
        view = memoryview(block).cast("B")
        pos = self._offset + start * block[0].nbytes
        while view.nbytes:
            done = os.pwrite(self._fd, view, pos)
            view, pos = view[done:], pos + done
        self._stats = _merge(self._stats, _moments(block))
        self._next = start + block.shape[0]

    def write_array(self, array, sections=None):
        """:meth:`begin` and :meth:`write` the whole of ``array`` in blocks of ``sections``
        (default: about 16 MiB), then :meth:`close`."""
        self.begin(array.shape)
        per = sections or max(1, (16 * 2 ** 20) // max(1, array[0].nbytes))
        for k in range(0, array.shape[0], per):
            self.write(k, array[k:k + per])
        self.close()

    def close(self):
        """Check that every section was written, then write the header (statistics, labels,
        voxel size) and close the file."""
        if self._fd is None:
            return
        os.close(self._fd)
        self._fd = None
        if self._next != self.shape[0]:
            raise RuntimeError(f"{self.path}: only sections 0:{self._next} of "
                               f"{self.shape[0]} were written")
        count, mean, m2, lo, hi = self._stats
        labels = [f"fastalign {__version__}"] + ([self.label] if self.label else [])
        finish_mrc_header(self.path, volume=self.is_volume, voxel_size_A=self.voxel_size_A,
                          dmin=lo, dmax=hi, dmean=mean,
                          rms=math.sqrt(m2 / count) if count else 0.0, labels=labels)

    def volume(self):
        """:meth:`close`, then the file's data as a read-only memory map (its pages are
        read when used)."""
        self.close()
        return np.memmap(self.path, dtype="<f4" if self._little else ">f4", mode="r",
                         offset=self._offset, shape=self.shape)

    def abort(self):
        """Close the file without finishing it (the staging directory removes it)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _moments(block):
    """``(count, mean, sum of squared deviations, min, max)`` of ``block`` (float64, in
    chunks of :data:`_STATS_CHUNK` values: no temporary of the block's size)."""
    flat = block.reshape(-1)
    out = None
    for k in range(0, flat.size, _STATS_CHUNK):
        c = flat[k:k + _STATS_CHUNK].astype(np.float64)
        mean = float(c.mean())
        c -= mean
        out = _merge(out, (c.size, mean, float(np.dot(c, c)), float(flat[k:k + c.size].min()),
                           float(flat[k:k + c.size].max())))
    return out


def _merge(a, b):
    """Chan et al.'s pairwise merge of two ``(count, mean, M2, min, max)`` (None: empty)."""
    if a is None:
        return b
    if b is None:
        return a
    na, ma, qa, loa, hia = a
    nb, mb, qb, lob, hib = b
    n = na + nb
    d = mb - ma
    return (n, ma + d * nb / n, qa + qb + d * d * na * nb / n, min(loa, lob), max(hia, hib))


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
                     + (f"aligned flat in the frame turned by {spec['loop_frame_deg']} deg "
                        f"(nz={spec.get('loop_nz')}), " if "loop_frame_deg" in spec else "")
                     + f"stopped: {spec.get('stop')}")
        elif spec.get("region"):
            reg = spec["region"]
            line += (f": the loop reconstructs its {reg['nx']} x {reg['nz']} px region (x, z; "
                     f"radius {reg['radius_px']} px)")
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
