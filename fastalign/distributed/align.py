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

The outer-loop bookkeeping below mirrors :func:`fastalign.align.autofocus.align` line by line;
``tests/test_distributed.py`` pins the equality of both to float32 round-off.
"""
import logging
import time

import numpy as np

from .._validate import as_positive_int
from ..align.autofocus import (COARSE_TOL, _aitken_jump, _ratio, _tail_factor, _y_factor,
                               auto_pad_x, check_loop_options, column_sums, profile_start,
                               start_shifts)
from ..align.gauge import fix_gauge
from ..align.profiles import tilt_profiles
from ..align.result import AlignResult
from ..align.shift import estimate_shift, shift_padding, tukey
from ..io.slabs import maybe_writer
from . import _slabs
from ._common import Source, client_workers, plan, run_scope, slab_rows_for
from .recon import run_tv

log = logging.getLogger("fastalign.distributed")

__all__ = ["align"]


def align(client, source, angles_deg=None, *, out=None, aligned_out=None, overwrite=False,
          recon="sirt", estimator="phase", axes="xy", max_iter=40, tol=0.002, levels=None,
          n_inner=10, coarse_iter=15, nz=None, lam=None, nonneg=True, center_offset=0.0,
          initial_shifts=None, min_coherence=0.1, taper=0.1, final_iter=None,
          extrapolate=True, pad_x=0, y_profile="auto", com_start="auto", slab_rows=None,
          tilt_chunk=None, callback=None):
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
callback
        As :func:`fastalign.align` (``method="autofocus"``, all rows).
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
    Cluster memory: the raw series (and its binned copy on coarse levels), the shifted series
    and the reprojection are held on the workers in pieces (about three series copies in
    all, spread over the workers), plus each slab's solver (two volume- and two
    series-sized buffers per slab for SIRT, about nine for TV).  Nothing of full size is
    held by the client or by any one task.
    """
    t_start = time.perf_counter()
    n_workers, mem = client_workers(client)
    src = Source(source, angles_deg)
    angles = src.angles_deg
    n, ny, nx = src.shape
    if n < 2:
        raise ValueError("alignment needs at least 2 tilts")
    max_iter, n_inner, coarse_iter, tol, center_offset, nz, levels = check_loop_options(
        recon, estimator, axes, max_iter, n_inner, coarse_iter, tol, center_offset, nz, levels,
        y_profile, ny, nx, com_start)
    final_iter = 2 * n_inner if final_iter is None else as_positive_int(final_iter,
                                                                         "final_iter", 0)
    if isinstance(initial_shifts, str):
        raise ValueError("initial_shifts='xcorr'/'com' is not available distributed; pass "
                         "the shifts (e.g. from fastalign.xcorr_shifts) as an array")
    total = start_shifts(initial_shifts, n)

    with run_scope(client) as client:
        tchunks = plan(n, tilt_chunk, parts=2 * n_workers)
        raw_full = [src.submit(client, t0, t1) for t0, t1 in tchunks]
        stats = client.gather([client.submit(_slabs.chunk_stats, r, pure=False)
                               for r in raw_full])
        if not any(s[0] for s in stats):
            raise ValueError("tilt_series is all zero: nothing to align")
        mean_abs = sum(s[1] for s in stats) / (n * ny * nx)
        if recon == "tv" and lam is None:
            lam = 0.02 * mean_abs
        pad_x = auto_pad_x(pad_x, sum(s[2] for s in stats) / (n * ny * 2), mean_abs, nx)
        opts = dict(pad_x=pad_x, method="autofocus", recon=recon, estimator=estimator, axes=axes,
                    max_iter=max_iter, tol=tol, levels=list(levels), n_inner=n_inner,
                    coarse_iter=coarse_iter, nz=nz, lam=lam, nonneg=nonneg,
                    center_offset=center_offset, min_coherence=min_coherence, taper=taper,
                    final_iter=final_iter, slices=None, distributed=True)
        hold_y = False
        want_y = y_profile == "auto" and "y" in axes
        want_x = com_start == "auto" and "x" in axes
        if (want_y or want_x) and ny >= 8 and initial_shifts is None:
            # as the local loop: dy from the x-integrated profiles (tilt chunks in order), dx
            # from the centres of mass for a compact object
            rows_f = [client.submit(tilt_profiles, r, pure=False) for r in raw_full]
            cols_f = [client.submit(column_sums, r, pure=False) for r in raw_full]
            hold_y = profile_start(np.concatenate(client.gather(rows_f)),
                                   np.concatenate(client.gather(cols_f)), center_offset, total,
                                   opts, set_dy=want_y, set_dx=want_x)
        per_row = 4 * (6 * n * (nx + 2 * pad_x) + 8 * nz * (nx + 2 * pad_x))
        rows_full = slab_rows_for(ny, n_workers, per_row, mem, slab_rows)
        ctx = _Ctx(client, angles, recon, nonneg, lam, tchunks)

        history = []
        converged = stopped = False
        states = None          # futures of (state, info) per slab
        prev = None            # (slabs, full-resolution row positions) of the previous level
        t_rec = t_est = t_shift = 0.0
        for f in levels:
            final_level = f == levels[-1]
            fy = _y_factor(ny, f)
            if f == 1:
                raw_l = raw_full
            else:
                raw_l = [client.submit(_slabs.read_binned, r, f, fy, pure=False) for r in raw_full]
            scale = np.array([f, fy], dtype=np.float64)
            nyl, nxl = ny // fy, nx // f
            co_l = (center_offset + 0.5 * (nx - (nx // f) * f)) / f
            nzl = max(1, int(round(nz / f)))
            pl = int(np.ceil(pad_x / f))
            shape = (nyl, nzl, nxl + 2 * pl)
            slabs = plan(nyl, max(1, rows_full // fy))
            pos = (np.arange(nyl) + 0.5) * fy - 0.5  # full-resolution row positions
            if states is None:
                states = ctx.new_states(slabs, shape, co_l, [None] * len(slabs), pl)
                first_inner = 3 * n_inner
            else:
                states = ctx.warm_states(states, prev, slabs, pos, shape, co_l, pl)
                first_inner = n_inner
            prev = (slabs, pos)
            prev_shape = shape
            wx = tukey(nxl, taper)
            wy = tukey(nyl, taper) if nyl > 2 else None
            n_outer = max_iter if final_level else coarse_iter
            tol_l = tol if final_level else max(tol, COARSE_TOL * f)
            prev_upd = None
            x_upd = np.inf     # largest x update of the previous iteration (full-res px)
            prev_upd_g = None
            since_jump = 0
            it = -1
            for it in range(n_outer):
                t0 = time.perf_counter()
                shifts_l = -total / scale
                corr = [client.submit(_slabs.shift_chunk, r, shifts_l[a:b],
                                      shift_padding(shifts_l), pure=False)
                        for r, (a, b) in zip(raw_l, tchunks)]
                t1 = time.perf_counter()
                states = ctx.set_data(states, corr, slabs, pl, keep_x=extrapolate)
                states = ctx.reconstruct(states, first_inner if it == 0 else n_inner)
                states = [client.submit(_slabs.measure, s, ctx.next_gen(), pl, nxl, wx,
                                        "x" in axes, pure=False) for s in states]
                ctx.gen_done()
                upd = np.zeros((n, 2))
                want_y = "y" in axes and nyl > 1 and (not hold_y or final_level
                                                       and x_upd < 0.5)
                res_f = [client.submit(_slabs.pick, s, "res", pure=False) for s in states]
                cx_f = ([client.submit(_slabs.pick, s, "cx", pure=False) for s in states]
                        if "x" in axes else [])
                cy_f = []
                if want_y:
                    for j, (a, b) in enumerate(tchunks):
                        pieces = [client.submit(_slabs.tilts_of, s, "P", a, b, pure=False)
                                  for s in states]
                        cy_f.append(client.submit(_slabs.cross_y, corr[j], pieces, wy,
                                                  pure=False))
                res_p, cx_p, cy_p = client.gather([res_f, cx_f, cy_f])
                t2 = time.perf_counter()
                if "x" in axes:
                    C, pb, pp = (_sum_in_order([p[i] for p in cx_p]) for i in range(3))
                    upd[:, 0] = estimate_shift(C, pb, pp, nxl, estimator=estimator,
                                               min_coherence=min_coherence)
                if want_y:
                    C, pb, pp = (np.concatenate([p[i] for p in cy_p]) for i in range(3))
                    upd[:, 1] = estimate_shift(C, pb, pp, nyl, estimator=estimator,
                                               min_coherence=min_coherence)
                total += upd * scale
                x_upd = float(np.abs(upd[:, 0]).max()) * f
                jump = (_aitken_jump(upd, prev_upd)
                        if extrapolate and prev_upd is not None and since_jump >= 3 else 0.0)
                if jump:
                    total += upd * scale * jump
                    states = ctx.jump(states, jump, nonneg)
                    since_jump = -1
                prev_upd = upd
                since_jump += 1
                num = sum(r[0] for r in res_p)
                den_b = sum(r[1] for r in res_p)
                res = float(np.sqrt(num) / max(np.sqrt(den_b), 1e-30))
                t3 = time.perf_counter()
                t_shift += t1 - t0
                t_rec += t2 - t1
                t_est += t3 - t2
                # the update without its gauge part (DESIGN.md): a drift of the sinusoid in
                # dx or of the mean dy moves the object, not the alignment
                upd_g = fix_gauge(upd * scale, angles)[0]
                max_upd = float(np.abs(upd_g).max())
                entry = dict(iteration=len(history) + 1, level=int(f), max_update=max_upd,
                             rms_update=float(np.sqrt(np.mean(upd_g ** 2))),
                             residual=res, time_s=time.perf_counter() - t_start)
                history.append(entry)
                log.info("level %d it %d: max update %.4g px, residual %.4g", f, it + 1,
                         max_upd, res)
                if callback is not None:
                    try:
                        callback(dict(entry, shifts=fix_gauge(total, angles)[0]))
                    except StopIteration:
                        stopped = True
                        break
                rho_g = _ratio(upd_g, prev_upd_g)
                prev_upd_g = upd_g
                if max_upd * _tail_factor(rho_g) < tol_l:
                    converged = final_level
                    break
            del raw_l
            if stopped:
                break

        # Final: gauge, aligned stack (tilt chunks), warm start moved into the gauge, volume.
        t0 = time.perf_counter()
        shifts, (ga, gb, gy) = fix_gauge(total, angles)
        pads = shift_padding(-shifts)
        aligned = [client.submit(_slabs.shift_chunk, r, -shifts[a:b], pads, pure=False)
                   for r, (a, b) in zip(raw_full, tchunks)]
        full = (ny, nz, nx + 2 * pad_x)
        slabs = plan(ny, rows_full)
        keep_aligned = aligned_out is not None or out is None
        with maybe_writer(out, (ny, nz, nx), rows_full, overwrite=overwrite, inputs=src.files,
                          voxel_size_A=src.pixel_size_A) as vwriter, \
                maybe_writer(aligned_out, (n, ny, nx), tchunks[0][1] - tchunks[0][0],
                             overwrite=overwrite, inputs=src.files, mrc_volume=False,
                             voxel_size_A=src.pixel_size_A) as awriter, \
                run_scope(client) as client:
            ctx.client = client
            a_res = None
            if keep_aligned:
                a_res = [client.submit(_write_or_return, a, awriter, t0_, pure=False)
                         for a, (t0_, _) in zip(aligned, tchunks)]
            # as the local loop: move (z, x) into the gauge (and zoom from a binned finest
            # level), rows by y positions + gy
            zx_shift = (gb * prev_shape[1] / nz, ga * prev_shape[2] / full[2])
            states = ctx.warm_states(states, (prev[0], prev[1] + gy), slabs,
                                     np.arange(ny, dtype=np.float64), full, center_offset,
                                     pad_x, zx_shift=zx_shift)
            states = ctx.set_data(states, aligned, slabs, pad_x)
            states = ctx.reconstruct(states, final_iter)
            crop = (pad_x, pad_x + nx) if pad_x else None
            v_res = [client.submit(_slabs.finish_volume, s, vwriter, r0, crop, pure=False)
                     for s, (r0, _r1) in zip(states, slabs)]
            v_parts = client.gather(v_res)
            a_parts = client.gather(a_res) if a_res is not None else None
            if vwriter is None:
                volume = np.concatenate(v_parts, axis=0)
            else:
                vwriter.commit(v_parts)
                volume = vwriter.open()
            aligned_arr = None
            if a_parts is not None:
                if awriter is None:
                    aligned_arr = np.concatenate(a_parts, axis=0)
                else:
                    awriter.commit(a_parts)
                    aligned_arr = awriter.open()
    t_final = time.perf_counter() - t0
    timings = dict(total_s=time.perf_counter() - t_start, reconstruct_s=t_rec,
                   estimate_s=t_est, resample_s=t_shift, final_s=t_final)
    return AlignResult(shifts=shifts, aligned=aligned_arr, volume=volume, history=history,
                       converged=converged, angles_deg=angles, method="autofocus",
                       options=opts, timings=timings)


def _sum_in_order(parts):
    """Sum of the slabs' partial spectra, in slab order (the reduce of DESIGN.md)."""
    acc = parts[0].copy()
    for p in parts[1:]:
        acc += p
    return acc


def _write_or_return(arr, writer, t0):
    return arr if writer is None else writer.write(t0, arr)


class _Ctx:
    """Client-side bookkeeping of the slab states (generation numbers, task submission)."""

    def __init__(self, client, angles, recon, nonneg, lam, tchunks):
        self.client = client
        self.angles = angles
        self.recon = recon
        self.nonneg = nonneg
        self.lam = lam
        self.tchunks = tchunks
        self.gen = 0

    def next_gen(self):
        return self.gen

    def gen_done(self):
        self.gen += 1

    def new_states(self, slabs, shape, co, xs, pad):
        self.gen = 0
        return [self.client.submit(_slabs.align_state, self.angles, (r1 - r0,) + shape[1:],
                                   co, self.recon, self.nonneg, self.lam, x, pad, pure=False)
                for (r0, r1), x in zip(slabs, xs)]

    def _rows(self, states, slabs, lo, hi):
        """Futures of the iterate rows ``[lo, hi)`` (level rows) and the first row."""
        parts = []
        for s, (r0, r1) in zip(states, slabs):
            a, b = max(lo, r0), min(hi, r1)
            if a < b:
                parts.append(self.client.submit(_slabs.x_rows, s, a - r0, b - r0,
                                                pure=False))
        return parts

    def warm_states(self, states, prev, slabs, pos_new, shape, co, pad, zx_shift=None):
        """States over ``slabs`` warm-started as the local loop does
        (:func:`fastalign.align.autofocus._warm_start`: optional shift and zoom in (z, x),
        then linear interpolation between the old rows at their full-resolution positions);
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
            parts = self._rows(states, old_slabs, lo, hi)
            xs.append(self.client.submit(_slabs.warm_rows, parts, lo, pos_old, pos_new[r0:r1],
                                         shape, zx_shift, pure=False))
        return self.new_states(slabs, shape, co, xs, pad)

    def set_data(self, states, chunks, slabs, pl, keep_x=False):
        out = []
        for s, (r0, r1) in zip(states, slabs):
            pieces = [self.client.submit(_slabs.rows_of, c, r0, r1, pure=False) for c in chunks]
            out.append(self.client.submit(_slabs.set_data, s, self.gen, pieces, pl, self.recon,
                                          keep_x, pure=False))
        self.gen += 1
        return out

    def jump(self, states, jump, nonneg):
        out = [self.client.submit(_slabs.jump_volume, s, self.gen, jump, nonneg, pure=False)
               for s in states]
        self.gen += 1
        return out

    def reconstruct(self, states, n_iter):
        if self.recon == "sirt":
            out = [self.client.submit(_slabs.sirt_run, s, self.gen, n_iter, pure=False)
                   for s in states]
            self.gen += 1
            return out
        states = [self.client.submit(_slabs.tv_begin, s, self.gen, pure=False)
                  for s in states]
        self.gen += 1
        states, self.gen = run_tv(self.client, states, n_iter, self.lam, self.gen)
        return states
