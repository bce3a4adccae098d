"""One alignment loop, many executors: the outer-loop controller and :func:`run_levels`.

The autofocus loop (module docstring of :mod:`fastalign.align.autofocus`) splits into

* a **controller** (:class:`LoopController`) that sees only scalars and small vectors -- the
  total shifts ``(n_tilts, 2)``, each iteration's updates and data residual, the axis angle --
  and decides: how many reconstruction iterations to run, whether dy is measured (the
  profile hold), whether the axis-angle step may run, the Aitken jump, the history entry and
  callback, and when a level stops;
* an **executor** that owns the data and performs five data steps on it:

  1. ``resample(total, alpha)`` -- shift (and rotate) the raw level data with the totals;
  2. ``reconstruct(n_iter)`` -- warm-started SIRT/TV iterations;
  3. ``measure(want_x, want_y)`` -- reproject, cross-power spectra -> shift updates, residual;
  4. ``jump(factor)`` -- extrapolate the volume along with the shifts;
  5. ``begin_level(level)`` -- bin the data and warm-start the volume from the last level;

  plus ``rotation_step()`` (axis-angle update, when the executor can) and ``finish(...)``
  (the aligned stack and the final volume).

:class:`fastalign.align.executor.LocalExecutor` runs the steps in this process;
:class:`fastalign.distributed.align.DaskExecutor` runs them on a Dask cluster.  Both produce
the same numbers because they call the same functions on the same values; the controller
cannot tell them apart (as STUMPY's ``_stimp(mp_func=stump|stumped)`` and CIL's
``Algorithm.set_up/update/run``).
"""
import logging
import time

import numpy as np

from .accel import Anderson
from .gauge import fix_gauge, split_center

log = logging.getLogger("fastalign.align")

__all__ = ["LoopController", "run_levels", "aitken_jump", "update_ratio", "tail_factor",
           "ROT_MIN_ITERS", "ROT_START_PX", "ROT_RES_SETTLED"]

# The axis-angle step is biased by a reconstruction that is not yet converged (started at the
# true geometry: up to 0.25 deg after 20 SIRT iterations, 0.006 deg after 100), so it waits
# for ROT_MIN_ITERS reconstruction iterations on the level, shift updates below ROT_START_PX
# (binned px) and a data residual that fell by less than ROT_RES_SETTLED in one iteration.
ROT_MIN_ITERS = 100
ROT_START_PX = 0.1
ROT_RES_SETTLED = 0.05


def update_ratio(u, prev):
    """Ratio ``<u, prev> / <prev, prev>`` of successive updates (0 without a previous one)."""
    if prev is None:
        return 0.0
    den = float(np.vdot(prev, prev))
    return float(np.vdot(u, prev)) / den if den > 0 else 0.0


def aitken_jump(upd, prev):
    """Aitken-type extrapolation of a slow, geometrically decaying mode: when successive
    updates are nearly parallel (cosine > 0.9) and shrink by 0.3 < rho < 0.97, the rest of
    the geometric series is ``upd * rho / (1 - rho)``.  Returns that factor (at most 10), or 0.
    """
    rho = update_ratio(upd, prev)
    cosang = float(np.vdot(upd, prev)) / np.sqrt(
        float(np.vdot(prev, prev)) * float(np.vdot(upd, upd)) + 1e-300)
    return min(rho / (1.0 - rho), 10.0) if 0.3 < rho < 0.97 and cosang > 0.9 else 0.0


def tail_factor(rho):
    """``1 / (1 - rho)``, rho clipped to [0, 0.95]: an update ``u`` shrinking by ``rho`` per
    iteration still has ``u / (1 - rho)`` to go (the convergence test uses this bound)."""
    return 1.0 / (1.0 - min(max(rho, 0.0), 0.95))


#: The slab iteration has reached the noise floor of its updates when the smallest of the
#: last STALL_WINDOW largest-updates is not below STALL_RATIO times the smallest before them
#: (and all are within STALL_TOLS x tol): further Anderson steps only move along the noise.
STALL_WINDOW = 4
STALL_RATIO = 0.8
STALL_TOLS = 10.0
#: The slab iteration returns to its best iterate (lowest data residual) when the last one's
#: residual is more than this factor above it: a diverging run, not the small fluctuations
#: of the residual near convergence.
REVERT_RATIO = 1.05


def stalled(updates, tol):
    """True when the sequence of largest updates no longer decreases (see ``STALL_*``)."""
    if len(updates) < 2 * STALL_WINDOW or updates[-1] >= STALL_TOLS * tol:
        return False
    recent, before = updates[-STALL_WINDOW:], updates[:-STALL_WINDOW]
    return min(recent) >= STALL_RATIO * min(before)


class LoopController:
    """Decisions of the outer loop from scalars and small vectors only.

    Parameters
    ----------
    opts : AlignOptions
        Resolved options (``axes``, ``n_inner``, ``extrapolate``, ``refine``, ``tol``...).
    angles_deg : ndarray, shape (n_tilts,)
    total : ndarray, float64, shape (n_tilts, 2)
        Starting total shifts (full-resolution px); updated in place.
    full_shape : (int, int)
        Full-resolution ``(ny, nx)`` (the axis step's motion at the image edge).
    hold_y : bool
        Keep the profile dy until the finest level's x updates are below 0.5 px.
    alpha : float
        Starting axis angle (degrees).
    callback : callable, optional
        ``callback(entry + shifts)``; ``StopIteration`` stops.
    t_start : float, optional
        ``time.perf_counter()`` of the call (history ``time_s``).
    bar : tqdm-like, optional
        Progress bar.

    Attributes
    ----------
    total, alpha, history, converged, stopped
    uncertainty : ndarray, float64, shape (n_tilts, 2)
        1-sigma standard errors (full-resolution px) of the last measured update's
        ``(dx, dy)`` (:func:`fastalign.align.shift.shift_uncertainty`); NaN for a component
        not measured then, or when the executor gives none.
    """

    def __init__(self, opts, angles_deg, total, full_shape, *, hold_y=False, alpha=0.0,
                 callback=None, t_start=None, bar=None, slab=False):
        self.opts = opts
        self.angles = angles_deg
        self.total = total
        self.full_shape = full_shape
        self.hold_y = hold_y
        self.alpha = alpha
        self.callback = callback
        self.t_start = time.perf_counter() if t_start is None else t_start
        self.bar = bar
        self.do_axis = opts.refine_axis
        self.history = []
        self.converged = self.stopped = False
        self.stop_reason = "max_iter"
        self.first_level = True
        self.timings = dict(reconstruct_s=0.0, estimate_s=0.0, resample_s=0.0)
        # slab iteration (fastalign.align.slab): cold starts, Anderson steps, best iterate
        self.slab = bool(slab)
        self.accel = Anderson() if self.slab else None
        self.uncertainty = np.full(total.shape, np.nan)
        self.best_uncertainty = None

    # ------------------------------------------------------------------ per level
    def begin_level(self, level, can_rotate=False):
        """Reset the per-level state; ``can_rotate``: the executor can take the axis step
        on this level (contiguous rows)."""
        self.level = level
        self.can_rotate = self.do_axis and can_rotate
        self.prev_upd = None
        self.x_upd = np.inf      # largest x update of the previous iteration (full-res px)
        self.prev_upd_g = None
        self.since_jump = 0
        self.recon_its = 0       # reconstruction iterations on this level
        self.level_res = []      # data residuals of this level's iterations
        self.it = -1
        self.best = None         # slab: (residual, totals measured, iteration)
        self.level_upd = []      # slab: largest updates of this level
        if self.accel is not None:
            self.accel.reset()   # each level is a different map

    def end_level(self):
        """After a level: advance the progress bar past unused iterations."""
        lv = self.level
        if self.best is not None and self.level_res[-1] > REVERT_RATIO * self.best[0]:
            # never worse than the best iterate: the loop moved away from the lowest data
            # residual (e.g. fitting noise); return to it
            log.info("level %d: back to iteration %d (residual %.4g, last %.4g)", lv.f,
                     self.best[2] + 1, self.best[0], self.level_res[-1])
            self.total[:] = self.best[1]
            self.uncertainty = self.best_uncertainty
            self.returned_iteration = self.best[2] + 1
        if self.bar is not None and not lv.final and not self.stopped:
            self.bar.update(lv.n_outer - self.it - 1)
        self.first_level = False

    def inner_iterations(self, it):
        """Reconstruction iterations of outer iteration ``it`` (3x on the very first)."""
        n = (3 * self.opts.n_inner if self.slab or self.first_level and it == 0
             else self.opts.n_inner)
        self.recon_its += n
        self.it = it
        return n

    @property
    def want_x(self):
        return "x" in self.opts.axes

    @property
    def want_y(self):
        """Measure dy?  A profile-held dy only on the finest level once x is sub-pixel."""
        return "y" in self.opts.axes and (not self.hold_y
                                          or self.level.final and self.x_upd < 0.5)

    # ------------------------------------------------------------------ per iteration
    def add_uncertainty(self, sigma):
        """Keep the standard errors ``(n_tilts, 2)`` (level px, or None: unknown) of the
        update about to be added, in full-resolution px."""
        if sigma is None:
            self.uncertainty = np.full(self.total.shape, np.nan)
        else:
            self.uncertainty = np.asarray(sigma, dtype=np.float64) * self.level.scale

    def median_uncertainty(self):
        """Median of the finite entries of :attr:`uncertainty` (px), or None."""
        u = self.uncertainty[np.isfinite(self.uncertainty)]
        return float(np.median(u)) if u.size else None

    def add_update(self, upd):
        """Add the measured update (binned px; measured ~ reprojection shifted by ``upd``).

        Returns True when the axis-angle step should run now (shifts and reconstruction
        settled: ROT_* constants)."""
        scale, f = self.level.scale, self.level.f
        if self.slab:
            # Anderson step on the gauge-free update: the totals keep the start's gauge
            # (which centres the slab in depth)
            self.measured_at = self.total.copy()
            self.total[:] = self.accel.step(self.total, fix_gauge(upd * scale, self.angles)[0])
        else:
            self.total += upd * scale
        self.x_upd = float(np.abs(upd[:, 0]).max()) * f
        self.upd = upd
        self.eps_px = 0.0
        res = self.level_res
        self.axis_step = bool(self.can_rotate
                              and float(np.abs(upd * scale).max()) < ROT_START_PX * f
                              and self.recon_its >= ROT_MIN_ITERS
                              and len(res) >= 2
                              and res[-2] - res[-1] < ROT_RES_SETTLED * res[-1])
        return self.axis_step

    def add_rotation(self, eps_rad):
        """Apply an axis-angle step (radians).  Its convergence measure is the motion at the
        image edge; the reconstruction absorbs most of a residual rotation (module
        docstring of :mod:`fastalign.align.axis`), so neither an Aitken jump nor a tail
        allowance is applied to the angle."""
        eps = float(np.rad2deg(eps_rad))
        self.alpha += eps
        ny, nx = self.full_shape
        self.eps_px = abs(np.deg2rad(eps)) * 0.5 * max(nx, ny)

    def jump_factor(self):
        """Aitken factor for this iteration (0: none); applies it to the totals."""
        upd = self.upd
        jump = (aitken_jump(upd, self.prev_upd)
                if self.opts.extrapolate and not self.slab and self.prev_upd is not None
                and self.since_jump >= 3 else 0.0)
        if jump:
            self.total += upd * self.level.scale * jump
            self.since_jump = -1
        self.prev_upd = upd
        self.since_jump += 1
        return jump

    def finish_iteration(self, residual):
        """History entry, log, progress, callback and the stop test.  Returns True when the
        level ends (converged, or stopped by the callback: then :attr:`stopped`)."""
        lv = self.level
        self.level_res.append(residual)
        if self.slab and (self.best is None or residual < self.best[0]):
            self.best = (residual, self.measured_at, self.it)
            self.best_uncertainty = self.uncertainty
        # the update without its gauge part (DESIGN.md): a drift of the sinusoid in
        # dx or of the mean dy moves the object, not the alignment
        upd_g = fix_gauge(self.upd * lv.scale, self.angles)[0]
        max_upd = max(float(np.abs(upd_g).max()), self.eps_px)
        entry = dict(iteration=len(self.history) + 1, level=int(lv.f), max_update=max_upd,
                     rms_update=float(np.sqrt(np.mean(upd_g ** 2))),
                     residual=residual, time_s=time.perf_counter() - self.t_start,
                     uncertainty_px=self.median_uncertainty())
        if self.do_axis:
            entry["axis_angle_deg"] = self.alpha
        self.history.append(entry)
        log.info("level %d it %d: max update %.4g px, residual %.4g", lv.f, self.it + 1,
                 max_upd, residual)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(level=lv.f, upd=f"{max_upd:.3g}")
        if self.callback is not None:
            try:
                self.callback(dict(entry, shifts=fix_gauge(self.total, self.angles)[0]))
            except StopIteration:
                self.stopped = True
                return True
        # slow modes shrink geometrically: count the rest of the series, u / (1 - rho)
        rho_g = update_ratio(upd_g, self.prev_upd_g)
        self.prev_upd_g = upd_g
        # with "axis_angle" refined, only an iteration that took the rotation step can
        # end the level (else the angle might never have been refined)
        if self.slab:
            tail = 1.0  # Anderson steps: no geometric tail to count
            self.level_upd.append(max_upd)
            if stalled(self.level_upd, lv.tol):
                self.stop_reason = "updates at their noise floor"
                self.converged = lv.final
                return True
        else:
            tail = tail_factor(rho_g)
        if max_upd * tail < lv.tol and (self.axis_step or not self.can_rotate):
            self.stop_reason = "updates below tol"
            self.converged = lv.final
            return True
        return False

    # ------------------------------------------------------------------ result
    def final_shifts(self, center_offset):
        """Totals in the reported gauge: ``(shifts, center_offset, (a, b, mean_dy))``; with
        ``refine`` "center" the constant of dx moves into the centre offset."""
        if self.opts.refine_center:
            shifts, c0, gauge = split_center(self.total, self.angles)
            return shifts, center_offset + c0, gauge
        shifts, gauge = fix_gauge(self.total, self.angles)
        return shifts, center_offset, gauge


def run_levels(plan, executor, controller):
    """Drive ``executor`` through the levels of ``plan`` under ``controller``.

    Per level: ``executor.begin_level``; per outer iteration: resample, reconstruct,
    measure, (axis step), (jump), then the controller's history/callback/stop test.
    """
    ctl, tm = controller, controller.timings
    for lv in plan:
        executor.begin_level(lv)
        ctl.begin_level(lv, can_rotate=executor.can_rotate)
        for it in range(lv.n_outer):
            t0 = time.perf_counter()
            executor.resample(ctl.total, ctl.alpha)
            t1 = time.perf_counter()
            executor.reconstruct(ctl.inner_iterations(it))
            t2 = time.perf_counter()
            upd, residual = executor.measure(ctl.want_x, ctl.want_y)
            # the updates' standard errors (executors without them: unknown, NaN)
            ctl.add_uncertainty(getattr(executor, "uncertainty", None))
            if ctl.add_update(upd):
                ctl.add_rotation(executor.rotation_step())
            jump = ctl.jump_factor()
            if jump:
                # the volume follows the shifts along the same slow mode: without this, the
                # next estimate (against the volume of the old shifts) takes much of the
                # jump back
                executor.jump(jump)
            t3 = time.perf_counter()
            tm["resample_s"] += t1 - t0
            tm["reconstruct_s"] += t2 - t1
            tm["estimate_s"] += t3 - t2
            if ctl.finish_iteration(residual):
                break
        ctl.end_level()
        if ctl.stopped:
            break
    return ctl


def drive(executor, opts, geometry, total, record, *, alpha=0.0, t_start=None, user=None):
    """Options -> starting shifts -> run levels -> final volume, for any executor.

    Parameters
    ----------
    executor : LocalExecutor or DaskExecutor
    opts : AlignOptions
        Resolved options.
    geometry : TiltGeometry
        Full-resolution geometry ``(ny, nz, nx)`` with ``opts.center_offset``.
    total : ndarray, float64, shape (n_tilts, 2)
        Starting shifts (updated in place by the profile start and the loop).
    record : dict
        ``AlignResult.options`` being built (the start's decisions are added).
    alpha : float
        Starting axis angle (degrees).
    user : dict, optional
        Which of ``pad_x``, ``nz``, ``levels``, ``initial_shifts`` the caller set (overrides
        of the slab decisions, :func:`fastalign.align.slab.setup_slab`).

    Returns
    -------
    dict
        Keyword arguments of :class:`fastalign.align.result.AlignResult` (without
        ``method`` and ``options``) plus ``timings`` without ``total_s``.  With ``refine``
        "tilt_offset", ``angles_deg`` are the corrected angles and ``tilt_offset_deg`` the
        offset estimated here (:mod:`fastalign.align.tiltoffset`).
    """
    from .levels import plan_levels
    from .slab import decide_specimen, setup_slab
    from .specimen import compact_region
    from .start import profile_start
    opts.check_executor(executor.name, executor.lacks)
    t_start = time.perf_counter() if t_start is None else t_start
    angles = geometry.angles_deg
    n, (ny, nx) = len(angles), (geometry.ny, geometry.nx)
    slab = None
    kind = decide_specimen(executor, opts, record)
    offset = 0.0
    if "tilt_offset" in opts.refine:
        # before the slab setup: every reconstruction uses the corrected angles
        from .tiltoffset import estimate_tilt_offset
        offset, geometry = estimate_tilt_offset(executor, geometry, record,
                                                opts.tilt_offset_deg)
        angles = geometry.angles_deg
    if kind == "slab":
        user = user or dict(pad_x=False, nz=False, levels=False, initial_shifts=False)
        opts, geometry, slab = setup_slab(executor, opts, geometry, total, record, user=user)
        executor.use_slab(opts, slab)
        if "tilt_offset" in opts.refine:
            from .tiltoffset import check_residual_pitch
            check_residual_pitch(record)
    hold_y = False
    want_y = opts.y_profile == "auto" and "y" in opts.axes
    want_x = opts.com_start == "auto" and "x" in opts.axes
    start = (want_y or want_x) and opts.initial_shifts is None
    # a compact object much smaller than the field: the loop reconstructs only the region
    # around it (unless the user chose the region: pad_x or nz)
    user = user or {}
    crop_ok = not (user.get("pad_x") or user.get("nz") or opts.pad_x)
    crop = None
    if (start or crop_ok) and ny >= 8 and slab is None:
        # with a rotated axis the profiles are those of the data rotated back (model of
        # fastalign.align.axis: the shifts act in that frame)
        profiles, col_sums = executor.profiles(alpha)
        if start:
            hold_y = profile_start(profiles, col_sums, opts.center_offset, total, record,
                                   set_dy=want_y, set_dx=want_x)
        if crop_ok:
            crop = compact_region(col_sums, total[:, 0], opts.center_offset, angles,
                                  geometry.nz, multiple=max(opts.levels))
        if crop is not None:
            record["specimen"]["region"] = dict(
                radius_px=round(crop[2], 1), nx=nx - 2 * crop[0], nz=geometry.nz - 2 * crop[1])
            log.info("compact object (radius %.1f px): the loop reconstructs %d x %d of "
                     "%d x %d (x, z)", crop[2], nx - 2 * crop[0], geometry.nz - 2 * crop[1],
                     nx, geometry.nz)
    plan = plan_levels(geometry, opts, None if crop is None else crop[:2])
    bar = None
    if opts.progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=opts.coarse_iter * (len(plan) - 1) + opts.max_iter, desc="align",
                   unit="it", leave=False)
    ctl = LoopController(opts, angles, total, (ny, nx), hold_y=hold_y, alpha=alpha,
                         callback=opts.callback, t_start=t_start, bar=bar,
                         slab=slab is not None)
    try:
        run_levels(plan, executor, ctl)
    finally:
        if bar is not None:
            bar.close()
    if slab is not None:
        record["specimen"]["stop"] = ctl.stop_reason
        if getattr(ctl, "returned_iteration", None):
            record["specimen"]["returned_iteration"] = ctl.returned_iteration
    # Report in the fixed gauge; the final warm start is moved accordingly (the object moves
    # by (a, b) in (x, z) and by mean dy along y when the gauge is taken out of the shifts)
    shifts, center_offset, gauge = ctl.final_shifts(opts.center_offset)
    aligned, volume, final_s = executor.finish(shifts, gauge, center_offset, ctl.alpha)
    timings = dict(ctl.timings, final_s=final_s)
    # per-tilt residual and coherence against the final volume; NaN from an executor
    # without them
    residual, coherence = getattr(executor, "quality", None) or (np.full(n, np.nan),) * 2
    return dict(shifts=shifts, aligned=aligned, volume=volume, history=ctl.history,
                converged=ctl.converged, angles_deg=angles, timings=timings,
                axis_angle_deg=float(ctl.alpha), center_offset=float(center_offset),
                thickness=None if slab is None else slab["thickness"],
                uncertainty=ctl.uncertainty, tilt_residual=residual,
                tilt_coherence=coherence, tilt_offset_deg=float(offset))
