"""The local executor of the alignment loop: the data steps of :mod:`fastalign.align.loop`
on arrays in this process (Numba kernels parallel over slices).

Also home of what both executors share per slab or per stack: the loop's solver
(:func:`make_solver`), the estimate of the updates from cross-power spectra
(:func:`updates_from_spectra`) and the data residual.
"""
import contextlib
import contextvars
import logging
import time

import numpy as np

from .._fft import release_plans
from ..operator import Projector
from ..recon.sirt import SIRTSolver, shared_slice_sums
from . import axis as _axis
from .levels import (level_rows, pad_columns, region_projector, row_runs, row_signal,
                     warm_start)
from .shift import (absorbed_fraction, coupled_uncertainty, cross_power, estimate_shift,
                    fourier_shift, shift_uncertainty, tukey)

log = logging.getLogger("fastalign.align")

__all__ = ["LocalExecutor", "make_solver", "estimate_updates", "estimate_uncertainty",
           "tilt_quality", "TiltQuality", "quality_sums", "SIRT_RELAX", "volume_sink",
           "final_row_blocks"]

#: Over-relaxation of the loop's SIRT (its convergence was measured with 1.9: about twice as
#: fast per outer iteration as plain SIRT).
SIRT_RELAX = 1.9


def make_solver(recon, A, *, nonneg, lam):
    """The loop's solver for projector ``A``: over-relaxed SIRT or TV.  (A region wider than
    the field: :func:`fastalign.align.levels.region_projector`.)"""
    if recon == "sirt":
        return SIRTSolver(A, nonneg=nonneg, relax=SIRT_RELAX, weight_floor=1e-6)
    if recon == "tv":
        from ..recon.tv import TVSolver
        return TVSolver(A, lam=lam, nonneg=nonneg)
    raise ValueError(f"recon must be 'sirt' or 'tv', got {recon!r}")


def estimate_updates(n, spec_x, spec_y, opts):
    """Shift updates ``(n, 2)`` (level px) from ``(C, pb, pp, length)`` spectra along x and
    y (either None: that component stays 0)."""
    upd = np.zeros((n, 2))
    for col, spec in ((0, spec_x), (1, spec_y)):
        if spec is not None:
            C, pb, pp, length = spec
            upd[:, col] = estimate_shift(C, pb, pp, length, estimator=opts.estimator,
                                         min_coherence=opts.min_coherence)
    return upd


#: dy standard errors are computed only when this is True (False: dy NaN, as before they were
#: calibrated; see :func:`estimate_uncertainty`)
REPORT_DY_UNCERTAINTY = True


def estimate_uncertainty(upd, spec_x, spec_y, opts, region=None):
    """1-sigma standard errors ``(n, 2)`` (level px) of the converged shifts, from the
    spectra that gave the updates ``upd`` (:func:`estimate_updates`); NaN for a component not
    measured.

    ``region = (angles_deg, nz, nx)``: the reconstructed region (level px, ``nx`` with its
    padding), whose absorption of each tilt's errors
    (:func:`fastalign.align.shift.absorbed_fraction`) inflates the errors
    (:func:`fastalign.align.shift.shift_uncertainty`).  Along x per frequency.  Along y (a y
    shift changes the tilt's image at every x frequency) the reconstruction shares each
    tilt's y error with its neighbours in angle:
    :func:`fastalign.align.shift.coupled_uncertainty`, weighted by the x spectrum's
    amplitude, when ``spec_x`` is there (else dy is NaN).  The plain per-tilt inflation
    ``1 / (1 - f)`` with ``f`` averaged over the x power left the dy errors 1.0-1.9x the
    estimate (normalised-error spread, 1.4826 MAD) on 3-D particles; the coupled model gives
    0.70-1.47 (``bench/uncertainty_calibration.py --case particles``).
    """
    sigma = np.full(upd.shape, np.nan)
    if spec_x is not None:
        C, pb, pp, length = spec_x
        fx = None if region is None else absorbed_fraction(*region, length)
        sigma[:, 0] = shift_uncertainty(C, pb, pp, length, upd[:, 0],
                                        min_coherence=opts.min_coherence, absorbed=fx)
    if (spec_y is not None and spec_x is not None and region is not None
            and REPORT_DY_UNCERTAINTY):
        C, pb, pp, length = spec_y
        s0 = shift_uncertainty(C, pb, pp, length, upd[:, 1], min_coherence=opts.min_coherence)
        sigma[:, 1] = coupled_uncertainty(s0, *region, spec_x[3], np.sqrt(spec_x[2]))
    return sigma


def cross_y_runs(bc, Pc, runs, taper):
    """Cross-power spectra along y over row runs (spectra of equal-length runs add up).

    Returns ``(C, pb, pp, run_length)``."""
    for k, (r0, r1) in enumerate(runs):
        Ck, pbk, ppk = cross_power(bc[:, r0:r1], Pc[:, r0:r1], 1, tukey(r1 - r0, taper))
        if k == 0:
            C, pb, pp, ly = Ck, pbk, ppk, r1 - r0
        elif r1 - r0 == ly:
            C, pb, pp = C + Ck, pb + pbk, pp + ppk
    return C, pb, pp, ly


class LocalExecutor:
    """The five data steps on in-memory arrays (:mod:`fastalign.align.loop`).

    Parameters
    ----------
    data : ndarray, float32, shape (n_tilts, ny, nx)
        Raw tilt series (never modified).
    angles_deg : ndarray
    opts : AlignOptions
        Resolved options.
    original : ndarray, float32, shape (n_tilts, ny, nx), optional
        The user's data when ``data`` is their intensity-model transform
        (:mod:`fastalign.align.intensity`): :meth:`finish` reconstructs from ``data`` and
        returns ``original`` resampled as the aligned stack.
    """

    name = "local"
    lacks = frozenset()

    def __init__(self, data, angles_deg, opts, original=None):
        self.data = data
        self.original = original
        self.angles = angles_deg
        self.opts = opts
        self.x = None
        self.prev_pos = None
        self.slab = None
        #: 1-sigma errors (level px) of the last :meth:`measure`'s updates, ``(n, 2)``
        self.uncertainty = None
        #: per-tilt ``(residual, coherence)`` of :meth:`finish` (:func:`tilt_quality`)
        self.quality = None

    # ------------------------------------------------------------------ slab specimens
    def edge_fraction(self):
        """:func:`fastalign.align.specimen.edge_fraction` of the raw data."""
        from .specimen import edge_fraction
        return edge_fraction(self.data)

    def tilt_means(self):
        """Per-tilt mean of the data ``(n,)`` float64 (:mod:`fastalign.align.tiltoffset`)."""
        return self.data.mean(axis=(1, 2), dtype=np.float64)

    def slab_start(self):
        """Starting ``(dx, dy)`` of a slab (:func:`fastalign.align.slab.slab_start_shifts`)."""
        from .slab import slab_start_shifts
        return slab_start_shifts(self.data, self.angles, self.opts.axes)

    def depth_probe(self, total, f, depth):
        """Row mean of :func:`fastalign.align.specimen.depth_power` of the depth probe
        (:func:`probe_volume`) of the data aligned with ``total`` and ``f`` x binned:
        ``(depth/f, nx/f)`` float64, for :func:`fastalign.align.specimen.fit_pitched_power`."""
        from .levels import bin_stack
        from .specimen import depth_power
        b = bin_stack(fourier_shift(self.data, -total), f)
        rows = probe_rows(b.shape[1])
        b = np.ascontiguousarray(b[:, rows])
        return depth_power(probe_volume(b, self.angles, depth // f)) / rows.size

    def use_slab(self, opts, slab):
        """Run the slab iteration with the slab's options (region, levels, tolerance)."""
        self.opts = opts
        self.slab = slab

    # ------------------------------------------------------------------ start
    def profiles(self, alpha):
        """``(x-integrated profiles, y-integrated column sums)`` of the data rotated back by
        ``alpha`` (:func:`fastalign.align.start.profile_start`)."""
        from .profiles import tilt_profiles
        from .start import column_sums
        n = self.data.shape[0]
        src = self.data if alpha == 0.0 else _axis.rotate_shift(self.data, alpha,
                                                                np.zeros((n, 2)))
        return tilt_profiles(src), column_sums(src)

    # ------------------------------------------------------------------ levels
    def begin_level(self, lv):
        """Bin the raw data, choose the rows, build projector and solver, warm-start."""
        from .levels import bin_stack
        o = self.opts
        self.lv = lv
        self.raw = bin_stack(self.data, lv.f, lv.fy)
        nyl = self.raw.shape[1]
        # the axis-angle step needs y gradients over contiguous rows: no row budget then
        # the slab iteration weights whole columns by where the data are measured: all rows
        budget = None if o.refine_axis or self.slab is not None else o.max_rows
        signal = (row_signal(self.raw) if o.slices is None and budget is not None
                  and nyl > budget else None)
        self.rows = level_rows(nyl, lv.fy, o.slices, budget, signal)
        pos = lv.positions(self.rows)
        nzl, nxl = lv.geometry.nz, lv.geometry.nx
        self.A = region_projector(lv.geometry.angles_deg,
                                  (self.rows.size, nzl, nxl + 2 * lv.pad),
                                  lv.geometry.center_offset, lv.pad,
                                  "sirt" if self.slab is not None else o.recon)
        #: detector columns per side beyond the field (TV with padding only)
        self.dpad = (self.A.range_shape[2] - nxl) // 2
        if self.slab is None:
            self.solver = make_solver(o.recon, self.A, nonneg=o.nonneg, lam=o.lam)
        else:
            self.solver = slab_solver(self.A, self.slab, lv.f, o.nonneg)
        if self.x is None:
            self.x = np.zeros(self.A.domain_shape, np.float32)
        else:
            self.x = warm_start(self.x, self.prev_pos, pos, self.A.domain_shape)
        self.prev_pos = pos
        self.wx = tukey(nxl, o.taper)
        self.runs = row_runs(self.rows) if self.rows.size > 1 else []

    @property
    def region(self):
        """``(angles_deg, nz, nx)`` reconstructed at this level (:func:`estimate_uncertainty`)."""
        return self.lv.geometry.angles_deg, self.A.domain_shape[1], self.A.domain_shape[2]

    @property
    def can_rotate(self):
        return self.rows.size > 2 and len(self.runs) == 1

    def resample(self, total, alpha):
        lv, f, fy = self.lv, self.lv.f, self.lv.fy
        if alpha == 0.0:
            # tilt chunk by tilt chunk, keeping the level's rows only (the bytes of the
            # whole stack shifted, then the rows taken)
            b = resample_rows(self.raw, -total / lv.scale, self.rows)
        else:
            corrected = _axis.rotate_shift(self.raw, alpha, total, scale=(f, fy),
                                           full_shape=self.data.shape[1:])
            b = np.ascontiguousarray(corrected[:, self.rows, :])
            del corrected
        if self.slab is not None:
            from .specimen import valid_weights
            hard, (wy, wys), (wx, wxs) = valid_weights(self.raw.shape, total / lv.scale,
                                                       taper=self.opts.taper)
            wy, wys = wy[:, self.rows], wys[:, self.rows]
            self.windows = (wy, wys, wx, wxs)
            self.solver.set_data_weights(np.ascontiguousarray(hard[:, self.rows]))
            self.b = b
            return
        self.b = pad_columns(b, self.dpad, self.opts.recon)

    def reconstruct(self, n_iter):
        if self.slab is not None:
            self.x.fill(0.0)     # cold start: the update is a function of the shifts alone
            self.solver.run(self.b, self.x, n_iter, Ax=self.solver.zero_reprojection())
            return
        self.x_before = self.x.copy() if self.opts.extrapolate else None
        self.solver.run(self.b, self.x, n_iter)

    def measure(self, want_x, want_y):
        pl, nxl = self.dpad, self.lv.geometry.nx
        b, P = self.b, self.solver.reprojection   # P = A x
        self.bc, self.Pc = (b[:, :, pl:pl + nxl], P[:, :, pl:pl + nxl]) if pl else (b, P)
        if self.slab is not None:
            upd, res, self.uncertainty = measure_windowed(self.bc, self.Pc, self.windows,
                                                          want_x, want_y, self.opts,
                                                          region=self.region)
            return upd, res
        spec_x = spec_y = None
        if want_x:
            spec_x = cross_power(self.bc, self.Pc, 2, self.wx) + (nxl,)
        if want_y and self.runs:
            spec_y = cross_y_runs(self.bc, self.Pc, self.runs, self.opts.taper)
        upd = estimate_updates(b.shape[0], spec_x, spec_y, self.opts)
        self.uncertainty = estimate_uncertainty(upd, spec_x, spec_y, self.opts, self.region)
        res = float(np.linalg.norm(self.Pc - self.bc) / max(np.linalg.norm(self.bc), 1e-30))
        return upd, res

    def rotation_step(self):
        """Residual in-plane rotation (radians) of the level data against the reprojection."""
        f, fy = self.lv.f, self.lv.fy
        ny, nx = self.data.shape[1:]
        return _axis.rotation_update(
            self.bc, self.Pc, self.rows * fy + 0.5 * (fy - 1),
            np.arange(self.lv.geometry.nx) * f + 0.5 * (f - 1), (0.5 * (nx - 1), 0.5 * (ny - 1)))

    def jump(self, factor):
        """``x += factor (x - x_before)`` (clipped at 0 with ``nonneg``): the Aitken jump of
        the shifts applied to the volume, whose change decays with the same ratio."""
        extrapolate_volume(self.x, self.x_before, factor, self.opts.nonneg)

    # ------------------------------------------------------------------ final
    def finish(self, shifts, gauge, center_offset, alpha):
        """Aligned stack (raw data, or ``original``, resampled once) and the final volume
        (from the raw data), warm-started from
        the loop's volume moved into the reported gauge (or from FBP when the loop saw a
        subset of rows).  Returns ``(aligned, volume, final_s)``.

        SIRT reconstructs block of rows by block of rows (:func:`final_row_blocks`; every
        row is its own problem, so the blocks give the bytes of the whole, for any thread
        count): the solver's arrays are a block's, not the volume's.  Inside
        :func:`volume_sink` the blocks go to the sink and ``volume`` is the sink's array
        (the volume is never resident); TV (whose step and objective couple the rows)
        reconstructs the whole volume, then hands it to the sink.
        """
        t0 = time.perf_counter()
        o, data = self.opts, self.data
        ny, nx = data.shape[1:]
        self._release_level()      # the last level's buffers are not needed any more
        aligned = resample_stack(data, shifts, alpha)
        plan = self._final_plan(shifts, gauge, center_offset)
        plan["quality"] = TiltQuality(aligned, self.angles, center_offset,
                                      shifts=shifts if alpha == 0.0 else None, taper=o.taper)
        sink = _VOLUME_SINK.get()
        shape = (ny, plan["nz"], nx)
        if o.recon == "sirt":
            volume = None if sink is not None else np.empty(shape, np.float32)
            if sink is not None:
                sink.begin(shape)
            with shared_slice_sums():    # every block has the same geometry
                for r0, r1 in final_row_blocks(ny, plan["nz"], nx + 2 * o.pad_x, len(data)):
                    block = self._final_rows(aligned, r0, r1, plan)
                    if sink is None:
                        volume[r0:r1] = block
                    else:
                        sink.write(r0, block)
                    del block
                    release_plans()    # FBP's plans keep copies of the block's stacks
        else:
            volume = self._final_rows(aligned, 0, ny, plan)
            if sink is not None:
                sink.begin(shape)
                for r0, r1 in final_row_blocks(ny, plan["nz"], nx):
                    sink.write(r0, volume[r0:r1])
                volume = None
        self.quality = plan["quality"].result()
        plan = None                # the loop's volume (the warm start)
        if sink is not None:
            volume = sink.volume()
        if self.original is not None:   # the user's intensities, into the same buffer
            resample_stack(self.original, shifts, alpha, out=aligned)
        return aligned, volume, time.perf_counter() - t0

    def _final_plan(self, shifts, gauge, center_offset):
        """What every row block of the final reconstruction shares: thickness, iterations,
        start (``"fbp"``, ``"warm"`` from the loop's volume ``x`` at rows ``pos``, or
        ``"zero"``) and, for a slab, the data weights of the measured pixels."""
        o = self.opts
        ny = self.data.shape[1]
        ga, gb, gy = gauge
        nz = o.nz
        if self.slab is not None and not self.slab["fixed_nz"]:
            # the reported gauge moves the slab by gb in depth: keep it inside the region
            nz = o.nz + 2 * int(np.ceil(abs(gb)))
        x, slab = self.x, self.slab
        self.x = None
        start = "zero"
        if slab is None and x is not None:
            start = "fbp" if self.prev_pos.size < ny else "warm"
        plan = dict(nz=nz, start=start, center_offset=center_offset, weights=None)
        if start == "warm":
            if self.lv.embed is not None:    # a cropped loop region, back in the field's
                cz, cx = self.lv.embed
                x = np.pad(x, ((0, 0), (cz, cz), (cx, cx)))
            nxp = self.data.shape[2] + 2 * o.pad_x
            plan.update(x=x, pos=self.prev_pos + gy,
                        zx_shift=(gb * x.shape[1] / o.nz, ga * x.shape[2] / nxp))
        final_iter = o.final_iter
        if slab is not None and o.recon == "sirt":
            # from zero, as the slab loop's volumes; measured pixels only
            from .specimen import valid_weights
            plan["weights"] = valid_weights(self.data.shape, shifts, taper=o.taper)[0]
            if final_iter is None:
                final_iter = 3 * o.n_inner
        if final_iter is None:  # a FBP start needs fewer iterations than the loop's partial one
            final_iter = max(1, o.n_inner // 2) if start == "fbp" else 2 * o.n_inner
        plan["n_iter"] = final_iter
        return plan

    def _final_rows(self, aligned, r0, r1, plan):
        """Rows ``r0:r1`` of the final volume, ``(r1 - r0, nz, nx)`` float32, reconstructed
        from the same rows of ``aligned`` (:meth:`finish`)."""
        o = self.opts
        nx = aligned.shape[2]
        A = region_projector(self.angles, (r1 - r0, plan["nz"], nx + 2 * o.pad_x),
                             plan["center_offset"], o.pad_x, o.recon)
        dp = (A.range_shape[2] - nx) // 2
        b = pad_columns(np.ascontiguousarray(aligned[:, r0:r1]), dp, o.recon)
        if plan["start"] == "fbp":
            from ..recon.fbp import fbp
            x0 = fbp(pad_columns(b, o.pad_x - dp, "sirt"), self.angles, nz=o.nz,
                     center_offset=plan["center_offset"])
            if o.nonneg:
                np.maximum(x0, 0.0, out=x0)
        else:
            x0 = np.zeros(A.domain_shape, np.float32)
            if plan["start"] == "warm":
                warm_start_into(x0, plan["x"], plan["pos"],
                                np.arange(r0, r1, dtype=np.float64), zx_shift=plan["zx_shift"])
        solver = make_solver(o.recon, A, nonneg=o.nonneg, lam=o.lam)
        if plan["weights"] is not None:
            solver.set_data_weights(pad_columns(np.ascontiguousarray(plan["weights"][:, r0:r1]),
                                                dp, "sirt"))
        volume = solver.run(b, x0, plan["n_iter"])
        # per-tilt residual and coherence from the padded rows (the region the loop fits);
        # SIRT's last reprojection is that of the returned volume
        plan["quality"].add(r0, volume, solver.reprojection if o.recon == "sirt" else None)
        del solver, b
        if o.pad_x:
            volume = np.ascontiguousarray(volume[:, :, o.pad_x:o.pad_x + nx])
        return volume

    def _release_level(self):
        """Drop the loop's level data, solver and volume copies (all but ``x``) and the FFT
        plans (with their copies of the level data)."""
        for name in ("raw", "b", "bc", "Pc", "solver", "A", "x_before", "windows"):
            if hasattr(self, name):
                setattr(self, name, None)
        release_plans()


#: detector rows per block of :func:`tilt_quality` (bounds its reprojection temporaries)
QUALITY_BLOCK_ROWS = 32
#: fewest measured rows for :func:`tilt_quality`'s coherence (NaN below)
MIN_COHERENCE_ROWS = 4


def tilt_quality(aligned, volume, angles_deg, center_offset, *, shifts=None, taper=0.1,
                 block=QUALITY_BLOCK_ROWS):
    """Per-tilt residual and coherence of the aligned data against the reprojection of the
    final volume, over the pixels the data measure.

    ``residual[i] = ||w (P_i x - b_i)|| / ||w b_i||`` (``w``: 1 where tilt ``i``'s aligned
    image holds measured data, :func:`fastalign.align.specimen.valid_windows` of ``shifts``
    without a guard band; everywhere when ``shifts`` is None, e.g. a rotated axis).
    ``coherence[i]``: the spectral coherence ``|C_w| / sqrt(pb_w pp_w)`` of the cross-power
    spectrum along x (summed over rows, smooth x window) averaged over the frequencies
    ``1 <= w < nx/2`` with the weights ``sqrt(pb_w pp_w)``, i.e. ``sum |C_w| / sum
    sqrt(pb_w pp_w)`` in [0, 1]: it does not
    depend on the tilt's shift, so a tilt with a large residual and a high coherence is
    misaligned, one with a low coherence holds data the volume does not explain (noise,
    occlusion, a different object).  It is an average over the rows (``M`` looks: about
    ``1/sqrt(M)`` for unrelated images), NaN for fewer than :data:`MIN_COHERENCE_ROWS`
    (one row is coherent with anything).

    Rows are projected ``block`` at a time (temporaries of ``block`` rows of the stack).

    Parameters
    ----------
    aligned : ndarray, float32, shape (n, ny, nx)
    volume : ndarray, float32, shape (ny, nz, nx + 2 pad)
        The region, ``pad`` columns wider than the detector on each side (only the
        detector's ``nx`` rays are compared).
    angles_deg : ndarray
    center_offset : float
    shifts : ndarray, shape (n, 2), optional
        The shifts ``aligned`` was resampled by (its measured region).

    Returns
    -------
    residual, coherence : ndarray, float64, shape (n,)
    """
    q = TiltQuality(aligned, angles_deg, center_offset, shifts=shifts, taper=taper,
                    block=block)
    q.add(0, volume)
    return q.result()


class TiltQuality:
    """:func:`tilt_quality` accumulated over row blocks of the volume (the final volume of
    :meth:`LocalExecutor.finish` is reconstructed, and may be streamed, block by block):
    ``add(r0, rows)`` with ``rows`` the padded volume rows ``r0 : r0 + len(rows)``, then
    ``result()``.  The sums are additive over rows."""

    def __init__(self, aligned, angles_deg, center_offset, *, shifts=None, taper=0.1,
                 block=QUALITY_BLOCK_ROWS, shape=None):
        # aligned None with shape: sums come from elsewhere (add_sums, the Dask executor)
        n, ny, nx = self.shape = tuple(aligned.shape if aligned is not None else shape)
        self.aligned, self.angles, self.center_offset = aligned, angles_deg, center_offset
        self.block = block
        if shifts is None:
            wy = np.ones((n, ny), np.float32)
            wx = np.ones((n, nx), np.float32)
            wxs = (wx * tukey(nx, taper)).astype(np.float32)
        else:
            from .specimen import valid_windows
            # samples whose source lies inside the frame; a tilt with none along an axis (a
            # single row shifted in y) is compared over the whole axis
            (wy, _), (wx, wxs) = valid_windows(self.shape, shifts, taper=taper,
                                               guard_px=0.0)
            for w in (wy, wx):
                w[w.sum(axis=1) == 0] = 1.0
        self.wy, self.wx, self.wxs = wy, wx, wxs
        self.num, self.den = np.zeros(n), np.zeros(n)
        self.C = self.pb = self.pp = 0.0

    def add(self, r0, rows, reprojection=None):
        """Add the padded volume rows ``r0 : r0 + len(rows)`` ``(rows, nz, nx + 2 pad)``;
        ``reprojection``: their projection ``(n, len(rows), nx)`` if already known (a SIRT
        solver's, :attr:`fastalign.recon.SIRTSolver.reprojection`; the same bytes, rows
        being independent), else it is computed here."""
        n, ny, nx = self.shape
        nz, nxp = rows.shape[1:]
        if reprojection is not None and reprojection.shape != (n, rows.shape[0], nx):
            reprojection = None
        for s0 in range(0, rows.shape[0], self.block):
            s1 = min(rows.shape[0], s0 + self.block)
            a0, a1 = r0 + s0, r0 + s1
            # the detector only: the region's columns beyond it are not compared
            if reprojection is not None:
                P = reprojection[:, s0:s1]
            else:
                P = Projector(self.angles, (s1 - s0, nz, nxp), self.center_offset, n_det=nx)(
                    np.ascontiguousarray(rows[s0:s1]))
            self.add_sums(*quality_sums(self.aligned[:, a0:a1], P, self.wy[:, a0:a1],
                                        self.wx, self.wxs))

    def add_sums(self, num, den, C, pb, pp):
        """Add the partial sums of :func:`quality_sums` of some rows."""
        self.num += num
        self.den += den
        self.C, self.pb, self.pp = self.C + C, self.pb + pb, self.pp + pp

    def result(self):
        """``(residual, coherence)``, float64 ``(n,)`` each."""
        nx = self.shape[2]
        C, pb, pp = self.C, self.pb, self.pp
        residual = np.sqrt(self.num) / np.maximum(np.sqrt(self.den), 1e-30)
        top = nx // 2 if nx % 2 == 0 else nx // 2 + 1      # no even-length Nyquist bin
        band = slice(1, max(top, 2))
        coherence = (np.abs(C[:, band]).sum(axis=1)
                     / np.maximum(np.sqrt(pb[:, band] * pp[:, band]).sum(axis=1), 1e-300))
        coherence[self.wy.sum(axis=1) < MIN_COHERENCE_ROWS] = np.nan
        return residual, coherence


def quality_sums(b, P, wy, wx, wxs):
    """:class:`TiltQuality`'s additive sums over some rows: aligned data ``b`` and
    reprojection ``P`` ``(n, rows, nx)``, their y window ``wy`` ``(n, rows)``, the x windows
    ``wx`` (hard) and ``wxs`` (smooth) ``(n, nx)``.  Returns ``(num, den, C, pb, pp)``:
    per-tilt squared residual and data over the measured pixels (float64 ``(n,)``) and the
    cross-power spectra along x."""
    w = wy[:, :, None] * wx[:, None, :]
    num = (np.square((P - b).astype(np.float64)) * w).sum(axis=(1, 2))
    den = (np.square(b.astype(np.float64)) * w).sum(axis=(1, 2))
    w = wy[:, :, None] * wxs[:, None, :]
    C, pb, pp = cross_power(np.ascontiguousarray(b * w), np.ascontiguousarray(P * w), 2)
    return num, den, C, pb, pp


#: bytes of the complex spectra of one tilt chunk in :func:`resample_stack`
RESAMPLE_CHUNK_BYTES = 8 * 2 ** 20


def _shift_chunks(shape, shifts):
    """``(pad, chunk)`` of a chunked Fourier shift of a ``shape`` stack by ``shifts``: the
    padding of the whole stack (every chunk gets the bytes of the whole) and the tilts per
    chunk whose spectra fit in :data:`RESAMPLE_CHUNK_BYTES`."""
    from .._fft import next_fast_len
    from .shift import shift_padding
    _, ny, nx = shape
    pad = shift_padding(shifts)
    spec = 8 * next_fast_len(ny + 2 * pad[0]) * (next_fast_len(nx + 2 * pad[1]) // 2 + 1)
    return pad, max(1, RESAMPLE_CHUNK_BYTES // spec)


def resample_stack(stack, shifts, alpha, out=None):
    """The stack aligned: ``fourier_shift(stack, -shifts)`` (or, with an axis angle
    ``alpha``, :func:`fastalign.align.axis.rotate_shift`) into ``out`` (new if None).

    The shifts go tilt chunk by tilt chunk (spectra of about :data:`RESAMPLE_CHUNK_BYTES`,
    with the padding of the whole stack: the bytes of the whole), and the FFT cache is
    emptied after, so that the temporaries and the cache's copies stay a few chunks in
    size."""
    if alpha != 0.0:
        out = _axis.rotate_shift(stack, alpha, shifts, out=out)
        release_plans()
        return out
    n = stack.shape[0]
    out = np.empty(stack.shape, np.float32) if out is None else out
    pad, chunk = _shift_chunks(stack.shape, -np.asarray(shifts, np.float64))
    for a0 in range(0, n, chunk):
        a1 = min(n, a0 + chunk)
        fourier_shift(stack[a0:a1], -shifts[a0:a1], pad=pad, out=out[a0:a1])
    release_plans()
    return out


def resample_rows(stack, shifts, rows):
    """``fourier_shift(stack, shifts)[:, rows]`` (C-contiguous) computed tilt chunk by tilt
    chunk with the padding of the whole stack: the same bytes, without the whole shifted
    stack (:data:`RESAMPLE_CHUNK_BYTES` of spectra per chunk)."""
    n, ny, nx = stack.shape
    shifts = np.asarray(shifts, np.float64)
    out = np.empty((n, rows.size, nx), np.float32)
    pad, chunk = _shift_chunks(stack.shape, shifts)
    full = rows.size == ny
    for a0 in range(0, n, chunk):
        a1 = min(n, a0 + chunk)
        if full:
            fourier_shift(stack[a0:a1], shifts[a0:a1], pad=pad, out=out[a0:a1])
        else:
            out[a0:a1] = fourier_shift(stack[a0:a1], shifts[a0:a1], pad=pad)[:, rows]
    return out


#: bytes of a row block's volume (and stack) in the final reconstruction
FINAL_BLOCK_BYTES = 16 * 2 ** 20

_VOLUME_SINK = contextvars.ContextVar("fastalign_volume_sink", default=None)


def final_row_blocks(ny, nz, nx, n_tilts=1, block_bytes=None):
    """``(r0, r1)`` row blocks of the final reconstruction of a ``(ny, nz, nx)`` region
    from ``n_tilts`` tilts: as many rows as keep the block's volume and its stack within
    :data:`FINAL_BLOCK_BYTES` (float32), a multiple of the projector's ``LANES`` (at least
    one), independent of the thread count."""
    from ..kernels.projector import LANES
    block_bytes = FINAL_BLOCK_BYTES if block_bytes is None else block_bytes
    rows = max(LANES, block_bytes // (4 * max(nz, n_tilts) * nx) // LANES * LANES)
    return [(r0, min(ny, r0 + rows)) for r0 in range(0, ny, rows)]


@contextlib.contextmanager
def volume_sink(sink):
    """Hand the final volume of the alignments run inside the block to ``sink``, row block
    by row block, instead of holding it (:meth:`LocalExecutor.finish`).

    ``sink`` has ``begin(shape)`` (called once, with the volume's ``(ny, nz, nx)``),
    ``write(r0, block)`` (rows ``r0 : r0 + len(block)``, float32, in increasing ``r0``,
    every row once) and ``volume()`` (the array the result then holds as its ``volume``,
    e.g. a read-only memory map of the file written).  The bytes are those of the in-memory
    volume.
    """
    token = _VOLUME_SINK.set(sink)
    try:
        yield sink
    finally:
        _VOLUME_SINK.reset(token)


#: full-resolution rows per block of :func:`warm_start_into` (bounds its temporaries)
WARM_BLOCK_ROWS = 16


def warm_start_into(out, x, pos_old, pos_new, zx_shift=None, block=WARM_BLOCK_ROWS):
    """:func:`fastalign.align.levels.warm_start` written into ``out`` block by block.

    The rule acts on every row alone, so ``block`` new rows at a time, from just the old
    rows they interpolate from, give the same values as the whole while the temporaries
    (shift, zoom, interpolation) stay a few blocks in size instead of several volumes.
    ``out`` (float32, ``(len(pos_new), nz, nx)``) is returned.
    """
    n_old = pos_old.size
    if n_old < 2:
        out[...] = warm_start(x, pos_old, pos_new, out.shape, zx_shift=zx_shift)
        return out
    t = np.interp(pos_new, pos_old, np.arange(n_old))
    k = np.clip(np.floor(t).astype(np.int64), 0, n_old - 2)
    for r0 in range(0, pos_new.size, block):
        r1 = min(pos_new.size, r0 + block)
        i0, i1 = int(k[r0:r1].min()), int(k[r0:r1].max()) + 2
        out[r0:r1] = warm_start(x[i0:i1], pos_old, pos_new[r0:r1], out.shape,
                                zx_shift=zx_shift, i0=i0)
    return out


def extrapolate_volume(x, x_before, jump, nonneg):
    """``x += jump (x - x_before)`` in place (clipped at zero with ``nonneg``)."""
    x += np.float32(jump) * (x - x_before)
    if nonneg:
        np.maximum(x, 0.0, out=x)


def slab_solver(A, slab, f, nonneg):
    """The slab iteration's SIRT: over-relaxed, data weights set per iteration
    (:meth:`SIRTSolver.set_data_weights`), and for a pitched slab in the user's frame (``pad_x``
    or ``nz`` given; else the loop turns the frame, :func:`fastalign.align.slab.setup_slab`) a
    support mask of the slab's thickness (with the margin of
    :func:`fastalign.align.specimen.slab_region`)."""
    mask = None
    if slab["pitch_deg"]:
        _, nz, nxp = A.domain_shape
        p = np.deg2rad(slab["pitch_deg"])
        z = np.arange(nz) - 0.5 * (nz - 1)
        x = np.arange(nxp) - 0.5 * (nxp - 1)
        half = (0.5 * 1.1 * slab["thickness"] + 2.0) / f
        mask = np.abs(z[:, None] * np.cos(p) - x[None, :] * np.sin(p)) <= half
    return SIRTSolver(A, nonneg=nonneg, relax=SIRT_RELAX, mask=mask, weight_floor=1e-6)


#: The depth probe reconstructs at most this many rows, evenly spread (rows are independent
#: problems and the thickness fit needs their mean depth profile, not every row).  Measured
#: on the four slab cases of tests/test_slab.py (128 rows): the thickness estimates move by
#: at most 0.15 px and the pitches not at all (32 rows: up to 0.5 px and 0.5 deg; 16 rows
#: lose the 4 degree pitch); the probe costs half.
PROBE_ROWS = 64


def probe_rows(nyl):
    """Rows (of ``nyl``) that the depth probe reconstructs: all, or PROBE_ROWS evenly
    spread ones (every ``s``-th, centred)."""
    s = -(-nyl // PROBE_ROWS)
    return np.arange((nyl - 1) % s // 2, nyl, s) if s > 1 else np.arange(nyl)


def probe_volume(b, angles_deg, depth):
    """The central columns of a SIRT reconstruction (30 iterations, non-negative) of the
    aligned, binned data ``b (n, rows, nxl)``, ``depth`` samples deep (at least 4), in a
    region wide enough for every oblique ray: ``(rows, depth, nxl)`` float32.  Rows are
    independent (a row block gives the block's rows of the whole stack's probe)."""
    from .specimen import slab_region
    _, nyl, nxl = b.shape
    nzl = max(4, depth)
    pad, _ = slab_region(nxl, angles_deg, nzl, margin=1.0, margin_px=0.0)
    A = region_projector(angles_deg, (nyl, nzl, nxl + 2 * pad), 0.0, pad, "sirt")
    solver = make_solver("sirt", A, nonneg=True, lam=None)
    x = solver.run(b, np.zeros(A.domain_shape, np.float32), 30)
    return np.ascontiguousarray(x[:, :, pad:pad + nxl])


def measure_windowed(bc, Pc, windows, want_x, want_y, opts, region=None):
    """Shift updates and residual of measured ``bc`` and reprojected ``Pc`` compared only
    where the data are measured (``windows = (wy, wy_smooth, wx, wx_smooth)``,
    :func:`fastalign.align.specimen.valid_weights`): along x with the smooth x window over
    the measured rows, along y with the smooth y window over the measured columns.

    The three parts (:func:`windowed_x`, :func:`windowed_y`, :func:`windowed_residual`) are
    what the Dask executor computes per slab of rows (x, residual: sums over rows) and per
    tilt chunk (y).  With ``region`` (:func:`estimate_uncertainty`) also returns the
    updates' standard errors (level px)."""
    wy, wys, wx, wxs = windows
    n = bc.shape[0]
    spec_x = windowed_x(bc, Pc, wy, wxs) + (bc.shape[2],) if want_x else None
    spec_y = windowed_y(bc, Pc, wys, wx) + (bc.shape[1],) if want_y else None
    upd = estimate_updates(n, spec_x, spec_y, opts)
    res = residual_from_sums(*windowed_residual(bc, Pc, wy, wx))
    if region is not None:
        return upd, res, estimate_uncertainty(upd, spec_x, spec_y, opts, region)
    return upd, res


def windowed_x(bc, Pc, wy, wxs):
    """Cross-power spectra along x (summed over rows) of data weighted by the hard y window
    ``wy (n, rows)`` and the smooth x window ``wxs (n, nx)``: ``(C, pb, pp)``."""
    w = wy[:, :, None] * wxs[:, None, :]
    return cross_power(bc * w, Pc * w, 2, None)


def windowed_y(bc, Pc, wys, wx):
    """Cross-power spectra along y (whole columns) of data weighted by the smooth y window
    ``wys (n, ny)`` and the hard x window ``wx (n, nx)``: ``(C, pb, pp)``."""
    w = wys[:, :, None] * wx[:, None, :]
    return cross_power(bc * w, Pc * w, 1, None)


def windowed_residual(bc, Pc, wy, wx):
    """``(sum (w (P - b))^2, sum (w b)^2)`` in float64 over the measured region (sums over
    row blocks add up)."""
    w = wy[:, :, None] * wx[:, None, :]
    b = (bc * w).astype(np.float64)
    d = (Pc * w).astype(np.float64) - b
    return float(np.square(d).sum()), float(np.square(b).sum())


def residual_from_sums(num, den):
    """``sqrt(num) / sqrt(den)`` (the relative residual), zero-safe."""
    return float(np.sqrt(num) / max(np.sqrt(den), 1e-30))
