"""Distributed autofocus alignment: the loop of :func:`fastalign.align` on a Dask cluster.

Design (two layouts of the data, with explicit transposes between them):

* **Tilt chunks** (all rows of a few tilts) for what needs whole images: binning the raw data
  (once per level, kept on the workers), resampling it with the current total shifts (a 2-D
  Fourier shift, whose padding is computed on the client from *all* shifts so that the chunks
  equal the whole stack), and the cross-power spectra along y (whole columns).
* **Slabs** (all tilts of a few rows y) for what is per slice: the reconstruction (the local
  loop's SIRT/TV solver, iterate warm-started on the worker that holds it), the reprojection,
  the cross-power spectra along x (per-slab partial sums over rows) and the residual sums.

One outer iteration: tilt-chunk tasks shift the data -> pieces ``[tilts, rows]`` move to the
slab tasks (transpose 1) -> slabs reconstruct and reproject, returning partial x spectra ->
pieces of the reprojection move back to tilt chunks (transpose 2) -> y spectra per tilt
chunk.  The client adds the partial x spectra in fixed slab order, concatenates the y spectra
over tilt chunks, estimates the updates with the same estimator as the local loop
(:func:`fastalign.align.shift.estimate_shift`), updates the shifts (including the same
extrapolation) and broadcasts them with the next iteration's tasks.  TV's monotone FISTA
needs the whole volume's objective at every inner iteration: partial sums are reduced on the
client (see :mod:`fastalign.distributed.recon`).  Between levels the warm start is zoomed
slab by slab as in the local loop (zoom in (z, x), linear along y between row positions,
with the halo rows each output slab needs); the final warm start is moved into the reported
gauge the same way.  The distributed loop always uses every row (the local ``max_rows``
budget is for one machine) and estimates shifts only (no ``refine``).  The final reconstruction is written slab-wise,
and the aligned stack tilt-chunk-wise, to Zarr/MRC (atomic).

Before the loop, as locally: the intensity model is decided on the client from the tilt
chunks' subsamples (:func:`fastalign.align.intensity.model_from_sample`) and applied to the
chunks on the workers; the bad-tilt screening's per-tilt features are computed per tilt
chunk (:meth:`DaskExecutor.tilt_stats`, :meth:`DaskExecutor.tilt_features`) and judged on
the client (:func:`fastalign.align.badtilts.choose_tilts`); with tilts excluded, the run
repeats on the kept tilts (:meth:`Source.subset`) and every view gets a shift and an aligned
view (:func:`_aligned_views`).

A slab specimen (:mod:`fastalign.align.slab`, detected from the data) runs the local slab
loop: the executor's slab steps (:meth:`DaskExecutor.edge_fraction`, ``slab_start``,
``depth_probe``, ``use_slab``) and, per iteration, the local slab solver per slab of rows
with the measured-region data weights, cold-started, and the windowed comparison
(:func:`fastalign.align.executor.measure_windowed`'s parts: x spectra and residual sums per
slab, y spectra per tilt chunk).

The outer loop itself is the local one: :func:`fastalign.align.loop.drive` with its
:class:`~fastalign.align.loop.LoopController` drives :class:`DaskExecutor`, which implements
the data steps of :mod:`fastalign.align.loop` with the tasks above (the local twin:
:class:`fastalign.align.executor.LocalExecutor`).  ``tests/test_distributed.py`` and
``tests/test_executors.py`` pin the equality of both.
"""
import logging
import time

import numpy as np

from .._validate import check_align_angles, check_signal_stats, warn_two_tilts
from ..align.badtilts import (choose_tilts, expand_fields, interpolate_shifts, subset_start,
                              tilt_features, tilt_stats)
from ..align.executor import (TiltQuality, estimate_uncertainty, estimate_updates,
                               probe_rows, residual_from_sums)
from ..align.intensity import model_from_sample, subsample
from ..align.loop import drive
from ..align.options import AlignOptions
from ..align.profiles import tilt_profiles
from ..align.result import AlignResult
from ..align.shift import shift_padding, tukey
from ..align.specimen import valid_windows
from ..align.start import column_sums, start_shifts
from ..geometry import TiltGeometry
from ..io.slabs import maybe_writer
from . import _slabs
from ._common import Source, client_workers, plan, run_scope, slab_rows_for
from .recon import run_tv

log = logging.getLogger("fastalign.distributed")

#: The orientation search (:meth:`DaskExecutor.orient`) runs in one task holding the series;
#: images wider than this (px) are binned for it (an integer factor, the same both ways: the
#: axis direction does not change), so that task holds at most ~ n x 1024 x 1024 floats.
#: Smaller series are searched as locally (the same record).
ORIENT_TASK_PX = 1024

__all__ = ["align", "DaskExecutor"]


def align(client, source, angles_deg=None, *, out=None, aligned_out=None, overwrite=False,
          recon="sirt", estimator="phase", axes="xy", max_iter=40, tol=0.002, levels=None,
          n_inner=10, coarse_iter=15, nz=None, lam=None, nonneg=True, center_offset=0.0,
          initial_shifts=None, min_coherence=0.1, taper=0.1, final_iter=None,
          extrapolate=True, pad_x=0, y_profile="auto", com_start="auto", specimen="auto",
          orient=True, contrast="auto", background="auto", exclude=None, auto_exclude=True,
          include=None, refine=("shifts",), tilt_offset_deg=0.0, slab_rows=None,
          tilt_chunk=None, callback=None, progress=False):
    """Autofocus alignment on a Dask cluster; equals :func:`fastalign.align` (same options).

    Parameters
    ----------
    client : dask.distributed.Client
        Connected to an existing cluster (the library never creates one).
    source : str, os.PathLike or dask.array.Array
        Tilt series ``(n_tilts, ny, nx)``: Zarr, HDF5 (``file.h5:/dataset``), MRC
        (memory-mapped) or ``.npy`` path read by the workers, or a dask array.
    angles_deg : array_like or path, optional
        Tilt angles (degrees); found next to a file source if omitted.
    out : str or os.PathLike, optional
        Final volume ``(ny, nz, nx)``: ``*.zarr`` or MRC (``.rec``), written slab-wise and
        atomically.  If None the volume is gathered into the client.
    aligned_out : str or os.PathLike, optional
        Aligned stack ``(n_tilts, ny, nx)`` (``*.zarr`` or MRC ``.ali``), written
        tilt-chunk-wise and atomically.  If None and ``out`` is None it is gathered into the
        client, else not produced (``result.aligned`` is None).
    overwrite : bool
        Replace existing outputs.
    recon, estimator, axes, max_iter, tol, levels, n_inner, coarse_iter, nz, lam, nonneg, \
center_offset, min_coherence, taper, final_iter, extrapolate, pad_x, y_profile, com_start, \
specimen, orient, contrast, background, exclude, auto_exclude, include, refine, \
tilt_offset_deg, callback, progress
        As :func:`fastalign.align` (``refine``: ``"shifts"``, ``"center"``,
        ``"tilt_offset"``; the ``"axis_angle"`` refinement is local only) (``method="autofocus"``, all rows).  ``orient``: the
        full-circle search of the tilt axis runs in one task holding the whole series (as a
        slab's start), the tilt chunks are turned on the workers, and a residual angle is
        resampled away once (the local loop refines it for a compact object; this executor
        does not refine the axis angle).  The intensity model
        (``contrast``, ``background``) is decided from the tilt chunks' subsamples, the same
        values as the local one's; the loop runs on mass projections and the aligned stack
        keeps the source's intensities.  The bad-tilt screening computes its per-tilt
        features on the workers (two passes over the tilt chunks) and decides on the client
        as the local one; the loop then runs on the kept tilts (read from the source
        without the others), and every view gets a shift and an aligned view as locally
        (:func:`fastalign.align.badtilts.expand_result`).  A slab specimen
        (``specimen``) runs the local slab loop (:mod:`fastalign.align.slab`) on the
        cluster: :class:`DaskExecutor`'s slab steps.
    initial_shifts : array_like, shape (n_tilts, 2), optional
        Starting ``(dx, dy)`` (the baselines ``"xcorr"``/``"com"`` are local only).
    slab_rows : int, optional
        Rows per slab task at full resolution (default: about two slabs per worker).
    tilt_chunk : int, optional
        Tilts per tilt-chunk task (default: about two chunks per worker).

    Returns
    -------
    AlignResult
        As :func:`fastalign.align`; ``volume`` and ``aligned`` are in-memory arrays when
        gathered, else the written files opened read-only (or None).

    Notes
    -----
    A slab's start (:meth:`DaskExecutor.slab_start`) and the axis orientation
    (:meth:`DaskExecutor.orient`) each run in one task that holds the whole series (one
    series copy on one worker, plus the search's per-image temporaries; ``orient=False``
    skips the orientation).
    Cluster memory: the raw series (and its binned copy on coarse levels), the shifted series
    and the reprojection are held on the workers in pieces (about three series copies in
    all, spread over the workers), plus each slab's solver (two volume- and two
    series-sized buffers per slab for SIRT, about nine for TV); with an intensity model
    that changes the data, the raw series stays too (one more copy).  Nothing of full size
    is held by the client or by any one task.
    """
    t_start = time.perf_counter()
    kwargs = {k: v for k, v in locals().items()
              if k not in ("client", "source", "angles_deg", "t_start")}
    return _align(client, Source(source, angles_deg), t_start, **kwargs)


def _align(client, src, t_start, *, out, aligned_out, overwrite, exclude, auto_exclude,
           include, slab_rows, tilt_chunk, kept_run=False, **loop):
    """:func:`align` on the :class:`Source` ``src`` (``kept_run``: the run on the kept tilts
    of an exclusion, which screens nothing and produces no aligned stack)."""
    n_workers, mem = client_workers(client)
    angles = src.angles_deg
    n, ny, nx = src.shape
    check_align_angles(angles)  # the local path's checks (fastalign._validate)
    opts = AlignOptions(max_rows=None, exclude=exclude, auto_exclude=auto_exclude,
                        include=include, **loop)
    opts.check_executor(DaskExecutor.name, DaskExecutor.lacks)
    total = start_shifts(opts.initial_shifts, n)
    with run_scope(client) as tracked:
        ex = DaskExecutor(tracked, src, opts, n_workers, tilt_chunk)
        mean_abs, edge_mean = ex.data_stats()
        if not kept_run:   # the angle layout is judged on the caller's series
            warn_two_tilts(n, log, angles)
        # the intensity model (fastalign.align.intensity), decided from the tilt chunks'
        # subsamples as the local one from the whole series: the loop sees mass projections,
        # the aligned stack keeps the user's intensities
        model = ex.intensity_model(opts.contrast, opts.background)
        # tilt exclusion (fastalign.align.badtilts), screened on the mass projections
        chosen = choose_tilts(ex, angles, opts.exclude, opts.auto_exclude, opts.include)
        if not chosen.excluded.size:
            if not model.is_identity:
                log.info("intensity model: %s", model.summary())
            given = opts.tilt_offset_deg    # a known offset (fastalign.align.tiltoffset)
            if given:
                angles = ex.angles = angles + given
            offset, oriented = 0.0, None
            t_axis = time.perf_counter()
            if opts.orient:
                offset, oriented = ex.orient(opts.specimen)
            t_axis = time.perf_counter() - t_axis
            if not model.is_identity or ex.shape != src.shape or offset:
                mean_abs, edge_mean = ex.data_stats(check=False)
            n, ny, nx = ex.shape
            opts = opts.resolved(ny, nx, mean_abs=mean_abs, edge_mean=edge_mean)
            ex.set_options(opts, mem, slab_rows, out, aligned_out, overwrite,
                           with_aligned=not kept_run)
            record = dict(opts.record(), final_iter=ex.final_iter, distributed=True)
            record.pop("max_rows")
            record["intensity"] = model.record()
            record["bad_tilts"] = chosen.record
            if oriented is not None:
                record["orientation"] = oriented
            if given:
                record["tilt_offset"] = dict(given_deg=given)
            if opts.refine != ("shifts",):
                record.update(refine=list(opts.refine), axis_angle_deg_start=0.0)
            geometry = TiltGeometry(angles, (ny, opts.nz, nx), opts.center_offset)
            user = dict(pad_x=loop["pad_x"] not in (0, None), nz=loop["nz"] is not None,
                        levels=loop["levels"] is not None,
                        initial_shifts=loop["initial_shifts"] is not None)
            res = drive(ex, opts, geometry, total, record, t_start=t_start, user=user)
            record["final_iter"] = ex.final_iter
            res["timings"] = dict(total_s=time.perf_counter() - t_start, **res["timings"])
            res["tilt_offset_deg"] += given
            if oriented is not None:
                res["axis_angle_deg"] = float((res["axis_angle_deg"] + offset + 180.0) % 360.0
                                              - 180.0)
                res["timings"]["axis_coarse_s"] = t_axis
            return AlignResult(method="autofocus", options=record, **res)
        del ex
    # as the local path (fastalign.align.autofocus._align_kept): align the kept tilts, then
    # give every view a shift and an aligned view
    keep = chosen.keep
    t_detect = time.perf_counter() - t_start
    log.info("aligning %d of %d tilts; excluded (0-based): %s", int(keep.sum()), keep.size,
             chosen.excluded.tolist())
    loop["initial_shifts"] = subset_start(loop["initial_shifts"], keep)
    sub = _align(client, src.subset(keep), t_start, out=out, aligned_out=None,
                 overwrite=overwrite, exclude=None, auto_exclude=False, include=None,
                 slab_rows=slab_rows, tilt_chunk=tilt_chunk, kept_run=True, **loop)
    shifts = interpolate_shifts(sub.shifts, angles, keep)
    sub.aligned = None
    if aligned_out is not None or out is None:
        sub.aligned = _aligned_views(client, src, shifts, keep, aligned_out, overwrite,
                                     tilt_chunk, n_workers,
                                     (sub.options or {}).get("orientation"))
    sub = expand_fields(sub, shifts, angles, chosen)
    sub.timings = dict(sub.timings, bad_tilts_s=t_detect,
                       total_s=time.perf_counter() - t_start)
    return sub


def _aligned_views(client, src, shifts, keep, aligned_out, overwrite, tilt_chunk, n_workers,
                   orientation=None):
    """Every view of ``src`` aligned with ``shifts``, as the local path's
    :func:`fastalign.align.badtilts.expand_result`: turned as the run turned its data
    (``orientation``: its record), the kept views with the padding of the kept shifts (as
    the run on them), the excluded ones with theirs; written tilt chunk by tilt chunk
    (atomically) or gathered."""
    n, ny, nx = src.shape
    if orientation and orientation.get("quarter_turns", 0) % 2:
        ny, nx = nx, ny
    pads = (shift_padding(-shifts[keep]), shift_padding(-shifts[~keep]))
    tc = plan(n, tilt_chunk, parts=2 * n_workers)
    with maybe_writer(aligned_out, (n, ny, nx), tc[0][1] - tc[0][0], overwrite=overwrite,
                      inputs=src.files, mrc_volume=False,
                      voxel_size_A=src.pixel_size_A) as writer, \
            run_scope(client) as tracked:
        parts = []
        for t0, t1 in tc:
            raw = src.submit(tracked, t0, t1)
            view = tracked.submit(_slabs.shift_views, raw, -shifts[t0:t1], keep[t0:t1], pads,
                                  orientation, pure=False)
            parts.append(tracked.submit(_write_or_return, view, writer, t0, pure=False))
        return _collect(tracked.gather(parts), writer)


def _sum_in_order(parts):
    """Sum of the slabs' partial spectra, in slab order (the reduce of DESIGN.md)."""
    acc = parts[0].copy()
    for p in parts[1:]:
        acc += p
    return acc


def _write_or_return(arr, writer, t0):
    return arr if writer is None else writer.write(t0, arr)


class DaskExecutor:
    """The data steps of :mod:`fastalign.align.loop` on a Dask cluster (module docstring).

    Raw data in tilt chunks on the workers; per-slab solver states (:mod:`._slabs`) that
    each task advances in place, guarded by generation numbers.  The client holds futures,
    the total shifts and the small reduced spectra only.
    """

    name = "Dask"
    #: options of :class:`AlignOptions` this executor cannot run (refused in
    #: :meth:`AlignOptions.check_executor`)
    lacks = frozenset({"initial_shifts_baseline", "refine_axis", "slices", "axis_angle_deg",
                       "method"})
    can_rotate = False

    def __init__(self, client, src, opts, n_workers, tilt_chunk):
        self.client = client
        self.src = src
        self._shape = tuple(int(v) for v in src.shape)   # (n, ny, nx), turned by orient()
        self.angles = src.angles_deg
        self.opts = opts
        n = len(self.angles)
        self.tchunks = plan(n, tilt_chunk, parts=2 * n_workers)
        self.n_workers = n_workers
        self.raw_full = [src.submit(client, t0, t1) for t0, t1 in self.tchunks]
        self.states = None     # futures of (state, info) per slab
        self.prev = None       # (slabs, full-resolution row positions) of the previous level
        self.gen = 0
        self.slab = None       # slab specimens: the slab record of fastalign.align.slab
        self.original = None   # raw tilt chunks when an intensity model applies
        self.quality = None    # per-tilt (residual, coherence) of finish()

    # ------------------------------------------------------------------ start
    def _per_chunk(self, fn, *args):
        """``fn(chunk, *args)`` of every raw tilt chunk on the workers, gathered in tilt
        order."""
        c = self.client
        return c.gather([c.submit(fn, r, *args, pure=False) for r in self.raw_full])

    def data_stats(self, check=True):
        """``(mean |v|, mean |v| of the outermost columns)`` of the data the loop uses; with
        ``check``, first the local path's checks of the data
        (:func:`fastalign._validate.check_signal_stats`: NaN/Inf, nothing to align)."""
        n, ny, nx = self.shape
        stats = self._per_chunk(_slabs.chunk_stats)
        if check:
            check_signal_stats(np.concatenate([s[0] for s in stats]))  # as fastalign.align
        mean_abs = sum(s[1] for s in stats) / (n * ny * nx)
        return mean_abs, sum(s[2] for s in stats) / (n * ny * 2)

    def tilt_means(self):
        """Per-tilt mean of the data ``(n,)`` float64, over the tilt chunks
        (:mod:`fastalign.align.tiltoffset`)."""
        return np.concatenate(self._per_chunk(_slabs.tilt_means_of))

    @property
    def shape(self):
        """``(n_tilts, ny, nx)`` of the series the loop aligns (turned by :meth:`orient`)."""
        return self._shape

    def tilt_stats(self):
        """:func:`fastalign.align.badtilts.tilt_stats` of every tilt, over the tilt chunks."""
        parts = self._per_chunk(tilt_stats)
        return tuple(np.concatenate([p[k] for p in parts]) for k in range(3))

    def tilt_features(self, top, tol):
        """:func:`fastalign.align.badtilts.tilt_features` of every tilt, over the tilt
        chunks (the client receives per tilt four numbers and a 64 x 33 spectrum)."""
        parts = self._per_chunk(tilt_features, top, tol)
        return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                np.concatenate([p[2] for p in parts]), [v for p in parts for v in p[3]])

    def orient(self, specimen):
        """The local path's orientation (:func:`fastalign.align.orient.orient_data`) on the
        cluster: :func:`fastalign.align.orient.find_orientation` in one task that holds the
        whole series (as :meth:`slab_start`; binned when the images are wider than
        :data:`ORIENT_TASK_PX`), then every tilt chunk (and :attr:`original`)
        turned on the workers.  A residual angle is resampled away once and kept fixed, for
        a compact object too (this executor does not refine the axis angle; the local loop
        does).  Returns ``(offset_deg, record)``: the raw data's axis angle and
        ``AlignResult.options["orientation"]``."""
        from ..align.orient import unsearched
        record = unsearched(self.shape)
        if record is not None:
            return 0.0, record
        c = self.client
        # images wider than ORIENT_TASK_PX are searched binned: the task holds the series
        f = max(1, -(-max(self.shape[1:]) // ORIENT_TASK_PX))
        chunks = self.raw_full if f == 1 else [
            c.submit(_slabs.read_binned, r, f, f, pure=False) for r in self.raw_full]
        found = c.submit(_slabs.find_orientation_of, chunks, self.angles, specimen,
                         pure=False).result()
        record = dict(found.record)
        if f > 1:
            record["searched_binned"] = f
        offset = 90.0 * found.quarter_turns
        if found.refine and found.alpha != 0.0:
            record["resampled_deg"] = float(found.alpha)
            offset += found.alpha
            if not found.slab:
                record["note"] = ("residual angle resampled once, not refined (Dask "
                                  "executor)")
        if found.quarter_turns % 4 or record.get("resampled_deg"):
            self.raw_full = [c.submit(_slabs.turn_chunk, r, record, pure=False)
                             for r in self.raw_full]
            if self.original is not None:
                self.original = [c.submit(_slabs.turn_chunk, r, record, pure=False)
                                 for r in self.original]
            if found.quarter_turns % 2:
                n, ny, nx = self._shape
                self._shape = (n, nx, ny)
        return float(offset), record

    def intensity_model(self, contrast, background):
        """:func:`fastalign.align.intensity.intensity_model` of the series from the tilt
        chunks' subsamples (gathered: about ``SAMPLES_PER_TILT`` float64 values per tilt);
        unless it is the identity, the tilt chunks become mass projections on the workers
        and :attr:`original` keeps the raw ones for the aligned stack (one more series copy
        on the cluster, as the local path keeps the caller's array)."""
        c = self.client
        sample = np.concatenate(self._per_chunk(subsample))

        def data_min():
            return min(self._per_chunk(_slabs.min_of))

        model = model_from_sample(sample, data_min, contrast=contrast, background=background,
                                  angles_deg=self.angles)
        if not model.is_identity:
            self.original = self.raw_full
            self.raw_full = [c.submit(_slabs.apply_intensity, r, model, t0, pure=False)
                             for r, (t0, _) in zip(self.raw_full, self.tchunks)]
        return model

    def set_options(self, opts, mem, slab_rows, out, aligned_out, overwrite,
                    with_aligned=True):
        """Resolved options, slab size and outputs (``with_aligned``: an aligned stack is
        produced, written to ``aligned_out`` or, without any output path, gathered)."""
        self.opts = opts
        self.with_aligned = with_aligned
        self.final_iter = 2 * opts.n_inner if opts.final_iter is None else opts.final_iter
        self.mem, self.slab_rows = mem, slab_rows
        self._size_slabs()
        self.outputs = (out, aligned_out, overwrite)

    def _size_slabs(self):
        n, ny, nx = self.shape
        o = self.opts
        wide = nx + 2 * o.pad_x
        per_row = 4 * (6 * n * wide + 8 * o.nz * wide)
        self.rows_full = slab_rows_for(ny, self.n_workers, per_row, self.mem, self.slab_rows)

    def profiles(self, alpha):
        """The tilt chunks' x-integrated profiles and column sums, in tilt order."""
        c = self.client
        rows_f = [c.submit(tilt_profiles, r, pure=False) for r in self.raw_full]
        cols_f = [c.submit(column_sums, r, pure=False) for r in self.raw_full]
        return np.concatenate(c.gather(rows_f)), np.concatenate(c.gather(cols_f))

    # ------------------------------------------------------------------ slab specimens
    def edge_fraction(self):
        """:func:`fastalign.align.specimen.edge_fraction`: per-tilt ratios per tilt chunk,
        the median on the client (equal to the local value)."""
        return float(np.median(np.concatenate(self._per_chunk(_slabs.edge_ratios_of))))

    def slab_start(self):
        """:func:`fastalign.align.slab.slab_start_shifts` in one task on one worker: the
        cross-correlation chain and the pair network compare whole images of neighbouring
        tilts, so that task gathers the raw series (one full copy, ``4 n ny nx`` bytes, on
        that worker; the client receives only the ``(n, 2)`` shifts)."""
        return self.client.submit(_slabs.slab_start, self.raw_full, self.angles,
                                  self.opts.axes, pure=False).result()

    def depth_probe(self, total, f, depth):
        """The local depth probe (:meth:`fastalign.align.executor.LocalExecutor.depth_probe`)
        on the cluster: tilt chunks aligned and binned, the probe's SIRT per slab of rows
        (:func:`fastalign.align.executor.probe_volume` of the rows of
        :func:`fastalign.align.executor.probe_rows`; rows are independent), and its
        depth power summed slab after slab in row order (a chain of small tasks, so the sum
        equals the local one exactly).  The client receives one ``(depth/f, nx/f)`` float64
        image."""
        c = self.client
        ny = self.shape[1]
        shifts = -np.asarray(total, dtype=np.float64)
        pads = shift_padding(shifts)
        binned = [c.submit(_slabs.shift_bin_chunk, r, shifts[a:b], pads, f, pure=False)
                  for r, (a, b) in zip(self.raw_full, self.tchunks)]
        rows = probe_rows(ny // f)
        acc = None
        for r0, r1 in plan(rows.size, max(1, self.rows_full // f)):
            pieces = [c.submit(_slabs.rows_of, ch, rows[r0:r1], pure=False) for ch in binned]
            vol = c.submit(_slabs.probe_rows, pieces, self.angles, depth // f, pure=False)
            acc = c.submit(_slabs.probe_power, vol, acc, pure=False)
        return acc.result() / rows.size

    def use_slab(self, opts, slab):
        """Run the slab iteration with the slab's options (region, levels, tolerance):
        per-slab :func:`fastalign.align.executor.slab_solver` states, cold starts, data
        weights and windowed measurements as the local executor."""
        self.opts = opts
        self.slab = slab
        if opts.recon == "sirt" and opts.final_iter is None:
            self.final_iter = 3 * opts.n_inner     # as LocalExecutor.finish for a slab
        self._size_slabs()

    # ------------------------------------------------------------------ levels
    def begin_level(self, lv):
        c, o = self.client, self.opts
        self.lv = lv
        if lv.f == 1:
            self.raw = self.raw_full
        else:
            self.raw = [c.submit(_slabs.read_binned, r, lv.f, lv.fy, pure=False)
                        for r in self.raw_full]
        nyl, nxl = lv.geometry.ny, lv.geometry.nx
        shape = lv.shape
        slabs = plan(nyl, max(1, self.rows_full // lv.fy))
        pos = lv.positions(np.arange(nyl))
        co = lv.geometry.center_offset
        if self.slab is not None:
            # cold starts every iteration: no warm start between levels
            self.gen = 0
            self.states = [c.submit(_slabs.slab_align_state, lv.geometry.angles_deg,
                                    (r1 - r0,) + shape[1:], co, self.slab, lv.f, o.nonneg,
                                    lv.pad, pure=False) for r0, r1 in slabs]
        elif self.states is None:
            self.states = self._new_states(slabs, shape, co, [None] * len(slabs), lv.pad)
        else:
            self.states = self._warm_states(self.prev, slabs, pos, shape, co, lv.pad)
        self.prev = (slabs, pos)
        self.prev_shape = shape
        self.slabs = slabs
        self.wx = tukey(nxl, o.taper)
        self.wy = tukey(nyl, o.taper) if nyl > 2 else None

    def resample(self, total, alpha):
        shifts_l = -total / self.lv.scale
        self.corr = [self.client.submit(_slabs.shift_chunk, r, shifts_l[a:b],
                                        shift_padding(shifts_l), pure=False)
                     for r, (a, b) in zip(self.raw, self.tchunks)]
        if self.slab is None:
            self._set_data(self.corr, self.slabs, keep_x=self.opts.extrapolate)
            return
        # the measured region of the resampled data (small per-axis windows, client side)
        shape = (len(self.angles), self.lv.geometry.ny, self.lv.geometry.nx)
        (wy, wys), (wx, wxs) = valid_windows(shape, total / self.lv.scale,
                                             taper=self.opts.taper)
        self.windows = (wy, wys, wx, wxs)
        self._set_data(self.corr, self.slabs, windows=(wy, wx))

    def reconstruct(self, n_iter):
        if self.slab is not None:
            self.states = [self.client.submit(_slabs.slab_run, s, self.gen, n_iter, pure=False)
                           for s in self.states]
            self.gen += 1
            return
        self._reconstruct(n_iter)

    def measure(self, want_x, want_y):
        if self.slab is not None:
            return self._measure_windowed(want_x, want_y)
        c, lv = self.client, self.lv
        nyl, nxl = lv.geometry.ny, lv.geometry.nx
        self.states = [c.submit(_slabs.measure, s, self.gen, nxl, self.wx, want_x,
                                pure=False) for s in self.states]
        self.gen += 1
        want_y = want_y and nyl > 1
        upd, num, den = self._spectra(
            want_x, want_y, nyl, nxl,
            lambda j, a, b, pieces: c.submit(_slabs.cross_y, self.corr[j], pieces, self.wy,
                                             pure=False))
        return upd, float(np.sqrt(num) / max(np.sqrt(den), 1e-30))

    def _measure_windowed(self, want_x, want_y):
        """:func:`fastalign.align.executor.measure_windowed` on the cluster: x spectra and
        residual sums per slab (added in slab order), y spectra per tilt chunk."""
        c, lv = self.client, self.lv
        nyl, nxl = lv.geometry.ny, lv.geometry.nx
        wy, wys, wx, wxs = self.windows
        self.states = [c.submit(_slabs.measure_slab, s, self.gen, nxl, wxs, want_x,
                                pure=False) for s in self.states]
        self.gen += 1
        upd, num, den = self._spectra(
            want_x, want_y, nyl, nxl,
            lambda j, a, b, pieces: c.submit(_slabs.windowed_y_chunk, self.corr[j], pieces,
                                             wys[a:b], wx[a:b], pure=False))
        return upd, residual_from_sums(num, den)

    def _spectra(self, want_x, want_y, nyl, nxl, y_chunk):
        """Gather a measurement from the slab states: residual sums and x spectra per slab
        (summed in slab order), y spectra per tilt chunk from ``y_chunk(j, a, b, pieces)``
        (a future; ``pieces``: the reprojections of tilts ``a:b`` from every slab),
        concatenated; returns ``(updates, sum of squared differences, sum of squared
        data)``."""
        c = self.client
        res_f = [c.submit(_slabs.pick, s, "res", pure=False) for s in self.states]
        cx_f = [c.submit(_slabs.pick, s, "cx", pure=False) for s in self.states] if want_x else []
        cy_f = []
        if want_y:
            for j, (a, b) in enumerate(self.tchunks):
                pieces = [c.submit(_slabs.tilts_of, s, "P", a, b, pure=False)
                          for s in self.states]
                cy_f.append(y_chunk(j, a, b, pieces))
        res_p, cx_p, cy_p = c.gather([res_f, cx_f, cy_f])
        spec_x = spec_y = None
        if cx_p:
            spec_x = tuple(_sum_in_order([p[i] for p in cx_p]) for i in range(3)) + (nxl,)
        if cy_p:
            spec_y = tuple(np.concatenate([p[i] for p in cy_p]) for i in range(3)) + (nyl,)
        upd = estimate_updates(len(self.angles), spec_x, spec_y, self.opts)
        # the updates' standard errors, as the local executor's (its region: the level's
        # angles, depth and padded width)
        lv = self.lv
        self.uncertainty = estimate_uncertainty(upd, spec_x, spec_y, self.opts,
                                                (lv.geometry.angles_deg,) + lv.shape[1:])
        return upd, sum(r[0] for r in res_p), sum(r[1] for r in res_p)

    def rotation_step(self):  # never called: can_rotate is False
        raise NotImplementedError("the Dask executor does not refine the axis angle")

    def jump(self, factor):
        self.states = [self.client.submit(_slabs.jump_volume, s, self.gen, factor,
                                          self.opts.nonneg, pure=False)
                       for s in self.states]
        self.gen += 1

    # ------------------------------------------------------------------ final
    def finish(self, shifts, gauge, center_offset, alpha):
        """Aligned stack (tilt chunks) and final volume (slabs), written or gathered.
        Returns ``(aligned, volume, final_s)``."""
        t0 = time.perf_counter()
        o, src = self.opts, self.src
        n, ny, nx = self.shape
        out, aligned_out, overwrite = self.outputs
        ga, gb, gy = gauge
        self.raw = None
        pads = shift_padding(-shifts)
        aligned = [self.client.submit(_slabs.shift_chunk, r, -shifts[a:b], pads, pure=False)
                   for r, (a, b) in zip(self.raw_full, self.tchunks)]

        nz = o.nz
        if self.slab is not None and not self.slab["fixed_nz"]:
            # as the local loop: the reported gauge moves the slab by gb in depth
            nz = o.nz + 2 * int(np.ceil(abs(gb)))
        full = (ny, nz, nx + 2 * o.pad_x)
        slabs = plan(ny, self.rows_full)
        keep_aligned = self.with_aligned and (aligned_out is not None or out is None)
        tc = self.tchunks
        with maybe_writer(out, (ny, nz, nx), self.rows_full, overwrite=overwrite,
                          inputs=src.files, voxel_size_A=src.pixel_size_A) as vwriter, \
                maybe_writer(aligned_out, (n, ny, nx), tc[0][1] - tc[0][0],
                             overwrite=overwrite, inputs=src.files, mrc_volume=False,
                             voxel_size_A=src.pixel_size_A) as awriter, \
                run_scope(self.client) as client:
            self.client = client
            a_res = None
            if keep_aligned:
                # in the caller's intensities (as the local path's `original`)
                shown = aligned if self.original is None else [
                    client.submit(_slabs.shift_chunk, r, -shifts[a:b], pads, pure=False)
                    for r, (a, b) in zip(self.original, tc)]
                a_res = [client.submit(_write_or_return, a, awriter, t0_, pure=False)
                         for a, (t0_, _) in zip(shown, tc)]
            if self.slab is not None:
                # as the local slab loop: from zero; SIRT weights only the measured pixels
                self.states = self._new_states(slabs, full, center_offset,
                                               [None] * len(slabs), o.pad_x)
                windows = None
                if o.recon == "sirt":
                    (wy, _), (wx, _) = valid_windows((n, ny, nx), shifts, taper=o.taper)
                    windows = (wy, wx)
                self._set_data(aligned, slabs, windows=windows)
            else:
                # as the local loop: move (z, x) into the gauge (and zoom from a binned
                # finest level), rows by y positions + gy
                ps, embed = self.prev_shape, self.lv.embed
                if embed is not None:    # a cropped loop region, back in the field's
                    ps = (ps[0], ps[1] + 2 * embed[0], ps[2] + 2 * embed[1])
                zx_shift = (gb * ps[1] / o.nz, ga * ps[2] / full[2])
                self.states = self._warm_states((self.prev[0], self.prev[1] + gy), slabs,
                                                np.arange(ny, dtype=np.float64), full,
                                                center_offset, o.pad_x, zx_shift=zx_shift,
                                                embed=embed)
                self._set_data(aligned, slabs)
            self._reconstruct(self.final_iter)
            self.quality = self._quality(slabs, shifts, center_offset)
            crop = (o.pad_x, o.pad_x + nx) if o.pad_x else None
            v_res = [client.submit(_slabs.finish_volume, s, vwriter, r0, crop, pure=False)
                     for s, (r0, _r1) in zip(self.states, slabs)]
            volume = _collect(client.gather(v_res), vwriter)
            aligned_arr = (_collect(client.gather(a_res), awriter) if a_res is not None
                           else None)
        return aligned_arr, volume, time.perf_counter() - t0

    def _quality(self, slabs, shifts, center_offset):
        """Per-tilt ``(residual, coherence)`` against the final volume, as the local
        :class:`fastalign.align.executor.TiltQuality`: its sums per slab on the workers,
        added on the client in slab order."""
        n, ny, nx = self.shape
        q = TiltQuality(None, self.angles, center_offset, shifts=shifts, taper=self.opts.taper,
                        shape=(n, ny, nx))
        c = self.client
        parts = [c.submit(_slabs.quality_of, s, nx, q.wy[:, r0:r1], q.wx, q.wxs, self.angles,
                          center_offset, pure=False) for s, (r0, r1) in zip(self.states, slabs)]
        for part in c.gather(parts):
            q.add_sums(*part)
        return q.result()

    # ------------------------------------------------------------------ slab states
    def _new_states(self, slabs, shape, co, xs, pad):
        self.gen = 0
        o = self.opts
        return [self.client.submit(_slabs.align_state, self.angles, (r1 - r0,) + shape[1:],
                                   co, o.recon, o.nonneg, o.lam, x, pad, pure=False)
                for (r0, r1), x in zip(slabs, xs)]

    def _rows(self, old_slabs, lo, hi):
        """Futures of the iterate rows ``[lo, hi)`` (level rows) of the current states."""
        parts = []
        for s, (r0, r1) in zip(self.states, old_slabs):
            a, b = max(lo, r0), min(hi, r1)
            if a < b:
                parts.append(self.client.submit(_slabs.x_rows, s, a - r0, b - r0,
                                                pure=False))
        return parts

    def _warm_states(self, prev, slabs, pos_new, shape, co, pad, zx_shift=None, embed=None):
        """States over ``slabs`` warm-started by :func:`fastalign.align.levels.warm_start`;
        each slab fetches only the old rows it interpolates from."""
        old_slabs, pos_old = prev
        n_old = pos_old.size
        xs = []
        for r0, r1 in slabs:
            if n_old == 1:
                lo, hi = 0, 1
            else:
                t = np.interp(pos_new[r0:r1], pos_old, np.arange(n_old))
                k = np.clip(np.floor(t).astype(np.int64), 0, n_old - 2)
                lo, hi = int(k.min()), int(k.max()) + 2
            parts = self._rows(old_slabs, lo, hi)
            xs.append(self.client.submit(_slabs.warm_rows, parts, lo, pos_old, pos_new[r0:r1],
                                         shape, zx_shift, embed, pure=False))
        return self._new_states(slabs, shape, co, xs, pad)

    def _set_data(self, chunks, slabs, keep_x=False, windows=None):
        """Data (and, with ``windows = (wy, wx)``, the measured-region data weights) of each
        slab from the tilt chunks."""
        c = self.client
        out = []
        recon = "sirt" if windows is not None else self.opts.recon
        for s, (r0, r1) in zip(self.states, slabs):
            pieces = [c.submit(_slabs.rows_of, ch, slice(r0, r1), pure=False) for ch in chunks]
            w = None if windows is None else (windows[0][:, r0:r1], windows[1])
            out.append(c.submit(_slabs.set_data, s, self.gen, pieces, recon, keep_x, w,
                                pure=False))
        self.gen += 1
        self.states = out

    def _reconstruct(self, n_iter):
        c = self.client
        if self.opts.recon == "sirt":
            self.states = [c.submit(_slabs.sirt_run, s, self.gen, n_iter, pure=False)
                           for s in self.states]
            self.gen += 1
            return
        self.states = [c.submit(_slabs.tv_begin, s, self.gen, pure=False)
                       for s in self.states]
        self.gen += 1
        self.states, self.gen = run_tv(c, self.states, n_iter, self.opts.lam, self.gen)


def _collect(parts, writer):
    """Concatenated parts (gathered) or the committed file opened read-only."""
    if writer is None:
        return np.concatenate(parts, axis=0)
    writer.commit(parts)
    return writer.open()
