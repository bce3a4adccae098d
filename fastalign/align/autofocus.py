"""Autofocus alignment: per-projection shifts from Fourier phase errors (DESIGN.md).

Outer loop, per binning level (coarse to fine):

1. resample the *raw* (binned) data once with the current total shifts (Fourier, sub-pixel);
2. reconstruct from it (SIRT or TV, a few warm-started iterations);
3. reproject;
4. per tilt, accumulate over slices the cross-power spectrum ``C(w) = sum B(w) conj(P(w))`` of
   measured and reprojected rows (FFT along x) and columns (FFT along y);
5. estimate the residual shift from its phase ``-2 pi w s / N`` and add it to the total;

until the largest update falls below ``tol`` on the finest level (full resolution by default).
"""
import logging
import time

import numpy as np
import scipy.ndimage as ndi

from .._validate import (as_angles_deg, as_finite_float, as_float32_array,
                         as_positive_int)
from ..kernels import sirt as _ksirt
from ..operator import Projector
from ..recon.sirt import slice_sums
from . import axis as _axis
from .gauge import fix_gauge
from .profiles import profile_y_shifts, tilt_profiles
from .result import AlignResult
from .shift import cross_power, estimate_shift, fourier_shift, tukey

log = logging.getLogger("fastalign.align")

# y_profile="auto": the x-integrated profiles start dy when their misfit is at most
# PROFILE_USE (a compact object; com_start="auto" then starts dx from the centres of mass),
# and hold it until the full level's x updates are sub-pixel when at most PROFILE_HOLD
PROFILE_USE = 0.2
PROFILE_HOLD = 0.02
# a coarse level ends when its (tail-aware) update is below COARSE_TOL binned pixels: a well
# converged coarse level is cheap and shortens the expensive finer ones
COARSE_TOL = 0.01
# The axis-angle step is biased by a reconstruction that is not yet converged (started at the
# true geometry: up to 0.25 deg after 20 SIRT iterations, 0.006 deg after 100), so it waits
# for ROT_MIN_ITERS reconstruction iterations on the level, shift updates below ROT_START_PX
# (binned px) and a data residual that fell by less than ROT_RES_SETTLED in one iteration.
ROT_MIN_ITERS = 100
ROT_START_PX = 0.1
ROT_RES_SETTLED = 0.05


# --------------------------------------------------------------------------- solvers
class _SIRT:
    """Warm-startable over-relaxed SIRT: ``x <- x + relax C A^T R (b - A x)``.

    Kept apart from :class:`fastalign.recon.SIRTSolver` (relaxation 1) because the alignment
    loop's convergence was measured with ``relax = 1.9`` (about twice as fast per outer
    iteration); weights are computed once.  ``pad`` detector columns on each side carry no
    measurement: their rows get weight ``R = 0`` and ``C = 1 / (A^T w)`` counts only measured
    rays (a volume wider than the field of view, constrained by the rays that reach it).
    """

    def __init__(self, A, nonneg=True, relax=1.0, pad=0):
        self.A = A
        self.nonneg = nonneg
        self.relax = relax
        # one slice's sums (every slice sees the same 2-D operator)
        w = np.ones((A.geometry.n_tilts, 1, A.range_shape[2]), np.float32)
        if pad:
            w[:, :, :pad] = 0.0
            w[:, :, -pad:] = 0.0
        row, col = slice_sums(A, data=w)
        self.R = np.where(row > 1e-6, 1.0 / np.maximum(row, 1e-6), 0.0).astype(np.float32)
        if pad:
            self.R *= w
        self.C = (relax * np.where(col > 1e-6, 1.0 / np.maximum(col, 1e-6), 0.0)).astype(
            np.float32)
        self._r = np.empty(A.range_shape, np.float32)
        self._g = np.empty(A.domain_shape, np.float32)
        self._rowsum = np.empty(A.range_shape[0] * A.range_shape[1], np.float64)

    def run(self, b, x, n_iter):
        A, r, g = self.A, self._r, self._g
        for _ in range(n_iter):
            A._forward(x, r)
            _ksirt.sirt_residual(b, r, self.R, r, self._rowsum)  # r = R (b - A x)
            A._adjoint(r, g)
            _ksirt.sirt_update(x, g, self.C, self.nonneg)          # x = max(x + C g, 0)
        return x


def _make_solver(recon, A, *, nonneg, lam, relax=1.9, pad=0):
    if recon == "sirt":
        return _SIRT(A, nonneg=nonneg, relax=relax, pad=pad)
    if recon == "tv":
        from ..recon.tv import TVSolver
        return TVSolver(A, lam=lam, nonneg=nonneg)
    raise ValueError(f"recon must be 'sirt' or 'tv', got {recon!r}")


# --------------------------------------------------------------------------- helpers
def _y_factor(ny, f):
    """Binning along y: as along x, unless too few rows would be left (then none)."""
    return f if ny // f >= 4 else 1


def bin_stack(stack, f, fy=None):
    """Mean over ``fy x f`` blocks in (y, x); trailing rows/columns that do not fill a block
    are cropped.  Returns float32 ``(n, ny//fy, nx//f)``."""
    fy = f if fy is None else fy
    if f == 1 and fy == 1:
        return stack
    n, ny, nx = stack.shape
    my, mx = (ny // fy) * fy, (nx // f) * f
    v = stack[:, :my, :mx].reshape(n, my // fy, fy, mx // f, f)
    return np.ascontiguousarray(v.mean(axis=(2, 4), dtype=np.float64), dtype=np.float32)


# images at least this wide are aligned on 2x binned data by default (finest level 2)
BINNED_FINEST_NX = 512


def _auto_levels(ny, nx, max_shift_px):
    """Binning factors, coarse to fine: coarsest >= 48 px wide, enough to reach max_shift;
    the finest is 1, or 2 from ``BINNED_FINEST_NX`` px wide (the full-resolution level then
    cost 2.5-4.5 times more for about the same accuracy, bench/align_speed.py, README)."""
    levels = [2 if nx >= BINNED_FINEST_NX else 1]
    f = 2 * levels[0]
    while nx // f >= 48 and (f <= 4 or max_shift_px / f > 4):
        levels.insert(0, f)
        f *= 2
    return levels


def _pad_columns(b, pad, recon):
    """Extend the detector by ``pad`` columns per side: zeros that the SIRT weights ignore,
    or (TV, which has no data weights) replicated edge values."""
    if not pad:
        return b
    return np.pad(b, ((0, 0), (0, 0), (pad, pad)), mode="constant" if recon == "sirt" else "edge")


def _level_rows(nyl, fy, slices, max_rows):
    """Rows (binned) used on one level: the binned ``slices``; else all rows, or when there are
    more than ``max_rows``, evenly spaced contiguous blocks of 32 rows (about ``max_rows`` in
    all) so that y shifts stay measurable inside each block."""
    if slices is not None:
        return np.unique(np.clip(slices // fy, 0, nyl - 1))
    if max_rows is None or nyl <= max_rows:
        return np.arange(nyl)
    blk = min(32, max_rows)
    nblk = max(1, max_rows // blk)
    starts = np.round(np.linspace(0, nyl - blk, nblk + 2)[1:-1]).astype(np.int64)
    return np.unique(np.concatenate([np.arange(s0, s0 + blk) for s0 in starts]))


def _row_runs(rows, min_len=8):
    """``(start, stop)`` index ranges of runs of consecutive rows at least ``min_len`` long."""
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    edges = np.concatenate([[0], breaks, [rows.size]])
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b - a >= min_len
            or rows.size < min_len and b - a == rows.size]


def _warm_start(x, pos_old, pos_new, shape):
    """Volume ``x`` (rows at full-resolution positions ``pos_old``) resampled to ``shape``
    with rows at ``pos_new``: linear along y between the old rows, zoom in (z, x)."""
    zx = np.array(shape[1:]) / np.array(x.shape[1:])
    if np.any(zx != 1):
        x = ndi.zoom(x, (1.0, zx[0], zx[1]), order=1)
        if x.shape[1:] != tuple(shape[1:]):  # zoom rounding
            return np.zeros(shape, np.float32)
    if x.shape[0] == 1:
        return np.ascontiguousarray(np.repeat(x, shape[0], axis=0), dtype=np.float32)
    t = np.interp(pos_new, pos_old, np.arange(pos_old.size))
    i0 = np.clip(np.floor(t).astype(np.int64), 0, pos_old.size - 2)
    w = (t - i0).astype(np.float32)[:, None, None]
    return np.ascontiguousarray((1 - w) * x[i0] + w * x[i0 + 1], dtype=np.float32)


def _extrapolate_volume(x, x_before, jump, nonneg):
    """``x += jump (x - x_before)`` in place (clipped at zero with ``nonneg``): the Aitken
    jump of the shifts applied to the volume, whose change over the outer iteration decays
    with the same ratio."""
    x += np.float32(jump) * (x - x_before)
    if nonneg:
        np.maximum(x, 0.0, out=x)


def _ratio(u, prev):
    """Ratio ``<u, prev> / <prev, prev>`` of successive updates (0 without a previous one)."""
    if prev is None:
        return 0.0
    den = float(np.vdot(prev, prev))
    return float(np.vdot(u, prev)) / den if den > 0 else 0.0


def _aitken_jump(upd, prev):
    """Aitken-type extrapolation of a slow, geometrically decaying mode: when successive
    updates are nearly parallel (cosine > 0.9) and shrink by 0.3 < rho < 0.97, the rest of
    the geometric series is ``upd * rho / (1 - rho)``.  Returns that factor (at most 10), or 0.
    """
    rho = _ratio(upd, prev)
    cosang = float(np.vdot(upd, prev)) / np.sqrt(
        float(np.vdot(prev, prev)) * float(np.vdot(upd, upd)) + 1e-300)
    return min(rho / (1.0 - rho), 10.0) if 0.3 < rho < 0.97 and cosang > 0.9 else 0.0


def _tail_factor(rho):
    """``1 / (1 - rho)``, rho clipped to [0, 0.95]: an update ``u`` shrinking by ``rho`` per
    iteration still has ``u / (1 - rho)`` to go (the convergence test uses this bound)."""
    return 1.0 / (1.0 - min(max(rho, 0.0), 0.95))


def check_loop_options(recon, estimator, axes, max_iter, n_inner, coarse_iter, tol,
                       center_offset, nz, levels, y_profile, ny, nx, com_start):
    """Validate the outer-loop options shared by the local and the distributed loop.

    Returns ``(max_iter, n_inner, coarse_iter, tol, center_offset, nz, levels)`` converted
    (``nz`` defaults to ``nx``, ``levels`` to :func:`_auto_levels`)."""
    if recon not in ("sirt", "tv"):
        raise ValueError(f"recon must be 'sirt' or 'tv', got {recon!r}")
    if estimator not in ("phase", "gradient"):
        raise ValueError(f"estimator must be 'phase' or 'gradient', got {estimator!r}")
    if axes not in ("xy", "x", "y", "yx"):
        raise ValueError(f"axes must be 'xy', 'x' or 'y', got {axes!r}")
    if y_profile not in ("auto", False):
        raise ValueError(f"y_profile must be 'auto' or False, got {y_profile!r}")
    if com_start not in ("auto", False):
        raise ValueError(f"com_start must be 'auto' or False, got {com_start!r}")
    if levels is None:
        levels = _auto_levels(ny, nx, 20.0)
    levels = [as_positive_int(int(f), "levels") for f in levels]
    if any(a <= b for a, b in zip(levels, levels[1:])):
        raise ValueError(f"levels must decrease strictly, got {levels}")
    return (as_positive_int(max_iter, "max_iter"), as_positive_int(n_inner, "n_inner"),
            as_positive_int(coarse_iter, "coarse_iter", minimum=0),
            as_finite_float(tol, "tol", minimum=0.0),
            as_finite_float(center_offset, "center_offset"),
            nx if nz is None else as_positive_int(nz, "nz"), levels)


def start_shifts(initial_shifts, n):
    """Starting ``(dx, dy)``: zeros for None, else the array checked and shaped ``(n, 2)``."""
    if initial_shifts is None:
        return np.zeros((n, 2))
    total = np.array(initial_shifts, dtype=np.float64).reshape(n, 2)
    if not np.all(np.isfinite(total)):
        raise ValueError("initial_shifts contains NaN/Inf")
    return total


def auto_pad_x(pad_x, edge_mean, mean_abs, nx):
    """``pad_x`` as an int; ``"auto"``: ``nx // 4`` when the outermost columns' mean
    ``edge_mean`` exceeds 10 % of the mean ``mean_abs`` of the data, else 0."""
    if isinstance(pad_x, str):
        if pad_x != "auto":
            raise ValueError(f"pad_x must be an integer or 'auto', got {pad_x!r}")
        pad_x = nx // 4 if edge_mean > 0.1 * mean_abs else 0
    return as_positive_int(pad_x, "pad_x", minimum=0)


def profile_start(profiles, col_sums, center_offset, total, opts, *, set_dy, set_dx):
    """Starting shifts from the tilt-invariant profiles (``y_profile``/``com_start="auto"``).

    The x-integrated ``profiles`` are aligned; when they agree (misfit <= PROFILE_USE: a
    compact object), ``set_dy`` puts their dy into ``total[:, 1]`` and ``set_dx`` starts
    ``total[:, 0]`` from the x centres of mass of the y-integrated ``col_sums``
    (:func:`com_x_start`).  The decisions are recorded in ``opts``.  Returns ``hold_y``: dy
    was set and the misfit is <= PROFILE_HOLD (keep that dy until the finest level's x
    updates are sub-pixel)."""
    dy, misfit = profile_y_shifts(profiles)
    log.info("x-integrated profiles: misfit %.4g", misfit)
    compact = misfit <= PROFILE_USE
    used = bool(set_dy and compact)
    if used:
        total[:, 1] = dy
    hold_y = bool(used and misfit <= PROFILE_HOLD)
    opts.update(y_profile_misfit=misfit, y_profile_used=used, y_profile_held=hold_y)
    if set_dx and compact:
        com_x_start(col_sums, center_offset, total, opts)
    return hold_y


def column_sums(stack):
    """Per-tilt y-integrated profiles ``sum_y stack[i, y, x]``, float64 ``(n, nx)``."""
    return np.asarray(stack).sum(axis=1, dtype=np.float64)


def com_x_start(col_sums, center_offset, total, opts):
    """``com_start="auto"`` on a compact object: ``total[:, 0]`` from the x centre of mass of
    each tilt's y-integrated profile (``col_sums``, :func:`column_sums`).

    For an object inside the field of view at every tilt the centre of mass of projection
    ``th`` is ``(nx-1)/2 + c0 + cx cos th + cz sin th + dx`` (:func:`fastalign.com_shifts`):
    the sinusoid is the gauge and ``c0`` minus the geometry's ``center_offset`` is the part of
    the centre offset that dx carries, so it starts dx (large centre offsets included) within
    the loop's capture range.  The background is the median of the two outermost columns on
    each side; either contrast is accepted (a dark object on a bright background is flipped);
    values are clipped at zero.  Recorded as ``x_com_start`` in ``opts``; not used when a
    tilt has no mass above the background.
    """
    p = np.asarray(col_sums, dtype=np.float64)
    nx = p.shape[1]
    k = min(2, max(1, nx // 8))
    bg = np.median(np.concatenate([p[:, :k], p[:, -k:]], axis=1), axis=1)
    w = p - bg[:, None]
    if w.sum() < 0:
        w = -w
    np.clip(w, 0.0, None, out=w)
    mass = w.sum(axis=1)
    used = bool(np.all(mass > 0))
    if used:
        total[:, 0] = ((w @ np.arange(nx, dtype=np.float64)) / mass - 0.5 * (nx - 1)
                       - center_offset)
    opts.update(x_com_start=used)
    return used


def _relative_residual(A, x, b, buf):
    A._forward(x, buf)
    np.subtract(buf, b, out=buf)
    nb = float(np.linalg.norm(b))
    return float(np.linalg.norm(buf)) / nb if nb > 0 else 0.0


# --------------------------------------------------------------------------- main entry
def align(tilt_series, angles_deg, *, method="autofocus", recon="sirt", estimator="phase",
          axes="xy", max_iter=40, tol=0.002, levels=None, n_inner=10, coarse_iter=15,
          slices=None, nz=None, lam=None, nonneg=True, center_offset=0.0,
          initial_shifts=None, min_coherence=0.1, taper=0.1, final_iter=None, extrapolate=True,
          pad_x=0, max_rows=64, refine=("shifts",), axis_angle_deg=None,
          axis_search_deg=10.0, y_profile="auto", com_start="auto",
          callback=None, progress=False):
    """Align a tilt series by Fourier-phase autofocus (or a baseline method).

    Parameters
    ----------
    tilt_series : array_like, shape (n_tilts, ny, nx)
        Raw projections, tilt axis along y.  Converted once to float32; never modified.
    angles_deg : array_like, shape (n_tilts,)
        Tilt angles in degrees.
    method : {"autofocus", "xcorr", "com"}
        ``"autofocus"`` is the reconstruction-based phase method; ``"xcorr"`` (sequential
        cross-correlation) and ``"com"`` (centre of mass) are baselines.
    recon : {"sirt", "tv"}
        Reconstruction inside the loop.
    estimator : {"phase", "gradient"}
        Shift estimator: complex-log phase unwrapping + weighted least squares, or Newton steps
        on ``sum |B e^{2 pi i w s/N} - P|^2``.
    axes : {"xy", "x", "y"}
        Which shift components to estimate.
    max_iter : int
        Maximum outer iterations on the finest level (full resolution by default).
    tol : float
        Convergence: the largest shift update (full-resolution pixels, its gauge part
        removed: a common drift of the sinusoid in dx or of the mean dy is not counted),
        times ``1 / (1 - rho)`` when successive updates shrink by a ratio ``rho`` (the rest
        of a geometric series; rho clipped to [0, 0.95]), below ``tol``.  History entries
        report the same ``max_update``/``rms_update``.
    levels : sequence of int, optional
        Binning factors, coarse to fine (strictly decreasing).  The last entry is the
        finest level: ``max_iter`` and ``tol`` apply there and ``converged`` refers to it.
        Default: automatic, so that starting errors of +-20 px converge: 4, 2, 1 for 256 px;
        4, 2 from 512 px wide.  A finest level of 2 estimates on 2x binned data only (shifts
        still in full-resolution pixels, ``aligned`` and ``volume`` at full resolution): on
        large series each iteration is about six times cheaper, and the slow start of a
        full-resolution level (its warm-started reconstruction needs many iterations before
        its estimates are unbiased) is avoided.  Measured: 90 x 600 x 600 particles 0.010 px
        in 58 s against 0.012 px in 133 s with a full-resolution level; 512 and 768 px seed
        phantoms 0.009 and 0.018 px against 0.017 and 0.013 px, 2.5-4.5 times faster.
        Pass ``levels=(4, 2, 1)`` to estimate at full resolution.
    n_inner : int
        Reconstruction iterations per outer iteration (warm-started).
    coarse_iter : int
        Maximum outer iterations on each coarse level.
    slices : array_like of int, optional
        Rows y (full resolution) whose spectra are used; default all.  The final volume
        always covers every row.
    nz : int, optional
        Reconstruction thickness (default nx).
    lam : float, optional
        TV weight for ``recon="tv"`` (default: 2 % of the data's mean row sum scale).
    center_offset : float
        Rotation-centre offset (detector pixels) of the geometry.
    initial_shifts : array_like of shape (n_tilts, 2), or {"xcorr", "com"}, optional
        Starting ``(dx, dy)``, or the name of a baseline to compute them with (``"com"``
        suits compact objects, ``"xcorr"`` anything; default zeros).
    min_coherence : float
        Frequencies whose coherence ``|C| / sqrt(sum|B|^2 sum|P|^2)`` is lower are ignored.
    taper : float
        Tukey taper fraction applied along x and y before the FFTs (edges of wide specimens).
    final_iter : int, optional
        Iterations of the final reconstruction (default ``2 * n_inner`` from the loop's
        volume, or ``n_inner // 2`` from an FBP start when the loop used a subset of rows).
    extrapolate : bool
        Aitken-type jumps along the slow, geometrically shrinking mode of the shift updates
        (and of the volume with them); ``False``: plain fixed-point iterations.  The axis
        angle is never extrapolated.
    pad_x : int or "auto"
        For specimens wider than the field of view: the reconstruction spans
        ``nx + 2 pad_x`` columns (full resolution) so that material outside the field, seen by
        oblique rays, is represented; the added detector columns carry no data (SIRT gives
        them weight 0; TV, which has no data weights, sees edge-replicated values) and only
        the central ``nx`` columns enter the shift estimate.  ``"auto"``: ``nx // 4`` when
        the outermost columns carry more than 10 % of the mean signal, else 0.  Works best
        with ``nz`` close to the specimen thickness (the lamella test: ``pad_x = nx // 2``,
        ``nz`` 1.5 x the thickness).
    max_rows : int or None
        Row budget per level: when a level (after binning) has more rows than this and
        ``slices`` is not given, only evenly spaced blocks of 32 consecutive rows (about
        ``max_rows`` in all) are reconstructed and enter the estimates; the final volume then
        starts from FBP.  ``None``: every row.  Not applied when ``"axis_angle"`` is refined
        (its step needs contiguous rows).
    refine : sequence of {"shifts", "axis_angle", "center"}
        What the loop estimates.  ``"shifts"`` (required) are the per-tilt translations;
        ``"axis_angle"`` adds a global in-plane tilt-axis angle (coarse estimate from the
        tilt invariance of the axis profiles: their amplitude spectra, then, for a compact
        object, the angle at which the aligned profiles agree best; then Gauss-Newton steps
        on the reprojection residual once shifts and reconstruction have settled);
        ``"center"`` reports the constant part of dx as a rotation-centre offset (with free
        shifts the two are the same thing; see :mod:`fastalign.align.axis` for the model,
        signs and the convention separating them).
    axis_angle_deg : float, optional
        Tilt-axis angle (degrees, sign as in :mod:`fastalign.align.axis`): fixed when
        ``"axis_angle"`` is not refined (default 0), the starting value when it is (default:
        :func:`fastalign.align.axis.coarse_axis_angle`).
    axis_search_deg : float
        Half-width of the coarse axis-angle search (degrees).
    y_profile : {"auto", False}
        ``"auto"`` (when y is estimated and no starting shifts are given): start dy from
        the tilt-invariant x-integrated profiles (of the data rotated back by the starting
        axis angle when it is not 0)
        (:func:`fastalign.align.profiles.profile_y_shifts`) when they agree after alignment
        (misfit <= 0.2; a compact object gives about 0.001, a specimen wider than the field
        of view about 1).  When they agree to 0.02 that dy is kept until the finest
        level's x updates are below 0.5 px (an estimate against the reconstruction of a
        series still misaligned in x, or binned, is worse), then refined with x.
        ``False``: start dy from zero.
    com_start : {"auto", False}
        ``"auto"`` (when x is estimated and no starting shifts are given): when the
        x-integrated profiles show a compact object (misfit <= 0.2, as for ``y_profile``),
        start dx from each tilt's x centre of mass (:func:`com_x_start`; a large
        rotation-centre offset is then already accounted for).  ``False``: start dx from
        zero.
    callback : callable, optional
        ``callback(info)`` after each outer iteration with the history entry plus ``shifts``;
        raising ``StopIteration`` ends the run (``converged=False``).
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    AlignResult
        ``shifts`` in the fixed gauge (sinusoid removed from dx, mean from dy; with
        ``"center"`` also the constant), ``aligned`` (raw data resampled once, rotation and
        shift), ``volume``, ``history``, ``converged``, ``axis_angle_deg``, ``center_offset``.
    """
    t_start = time.perf_counter()
    data = as_float32_array(tilt_series, 3, "tilt_series")
    n, ny, nx = data.shape
    angles = as_angles_deg(angles_deg, n_expected=n)
    if n < 2:
        raise ValueError("alignment needs at least 2 tilts")
    if not np.any(data):
        raise ValueError("tilt_series is all zero: nothing to align")
    refine = _check_refine(refine)
    do_axis = "axis_angle" in refine
    do_center = "center" in refine
    if method in ("xcorr", "com"):
        if refine != ("shifts",) or axis_angle_deg is not None:
            raise ValueError("refine and axis_angle_deg apply to method='autofocus' only")
        return _baseline(method, data, angles, nz=nz, n_inner=n_inner, recon=recon, lam=lam,
                         nonneg=nonneg, center_offset=center_offset, t_start=t_start)
    if method != "autofocus":
        raise ValueError(f"method must be 'autofocus', 'xcorr' or 'com', got {method!r}")
    max_iter, n_inner, coarse_iter, tol, center_offset, nz, levels = check_loop_options(
        recon, estimator, axes, max_iter, n_inner, coarse_iter, tol, center_offset, nz, levels,
        y_profile, ny, nx, com_start)
    if final_iter is not None:
        final_iter = as_positive_int(final_iter, "final_iter", 0)
    if isinstance(initial_shifts, str):
        if initial_shifts not in ("xcorr", "com"):
            raise ValueError("initial_shifts must be an array, 'xcorr' or 'com'")
        from . import baselines
        init_fn = baselines.xcorr_shifts if initial_shifts == "xcorr" else baselines.com_shifts
        total = np.asarray(init_fn(data, angles), dtype=np.float64).reshape(n, 2)
    else:
        total = start_shifts(initial_shifts, n)
    if slices is not None:
        slices = np.unique(np.asarray(slices, dtype=np.int64))
        if slices.size == 0 or slices.min() < 0 or slices.max() >= ny:
            raise ValueError(f"slices must be row indices in [0, {ny})")
    if recon == "tv" and lam is None:
        lam = 0.02 * float(np.abs(data).mean())
    edge = mean_abs = 0.0
    if isinstance(pad_x, str):  # the means are needed by "auto" only
        edge, mean_abs = float(np.abs(data[:, :, [0, -1]]).mean()), float(np.abs(data).mean())
    pad_x = auto_pad_x(pad_x, edge, mean_abs, nx)
    axis_search_deg = as_finite_float(axis_search_deg, "axis_search_deg", minimum=0.0)
    if do_axis and slices is not None and np.any(np.diff(slices) != 1):
        raise ValueError("refine='axis_angle' needs contiguous slices (it uses y gradients)")
    t_axis = 0.0
    if axis_angle_deg is not None:
        alpha = as_finite_float(axis_angle_deg, "axis_angle_deg")
    elif do_axis:
        t0 = time.perf_counter()
        alpha = _axis.coarse_axis_angle(data, search_deg=axis_search_deg)
        # refined where the aligned x-integrated profiles agree best, when they can agree
        # (a compact object: the same test as y_profile's)
        a_prof, m_prof = _axis.profile_axis_angle(data, alpha, search_deg=axis_search_deg)
        axis_start = dict(axis_angle_deg_amplitude=alpha, axis_angle_deg_profiles=a_prof,
                          axis_profile_misfit=m_prof)
        if m_prof <= PROFILE_USE:
            alpha = a_prof
        t_axis = time.perf_counter() - t0
        log.info("coarse axis angle %.3f deg (amplitude spectra %.3f, profiles %.3f with "
                 "misfit %.3g)", alpha, axis_start["axis_angle_deg_amplitude"], a_prof, m_prof)
    else:
        alpha = 0.0
    if max_rows is not None:
        max_rows = as_positive_int(max_rows, "max_rows")
    opts = dict(pad_x=pad_x, max_rows=max_rows, method=method, recon=recon, estimator=estimator,
                axes=axes,
                max_iter=max_iter, tol=tol, levels=list(levels), n_inner=n_inner,
                coarse_iter=coarse_iter, nz=nz, lam=lam, nonneg=nonneg,
                center_offset=center_offset, min_coherence=min_coherence, taper=taper,
                final_iter=final_iter,
                slices=None if slices is None else slices.tolist())
    if refine != ("shifts",) or alpha != 0.0:
        opts.update(refine=list(refine), axis_angle_deg_start=alpha)
    if do_axis and axis_angle_deg is None:
        opts.update(axis_start)
    hold_y = False
    want_y = y_profile == "auto" and "y" in axes
    want_x = com_start == "auto" and "x" in axes
    if (want_y or want_x) and ny >= 8 and initial_shifts is None:
        # with a rotated axis the profiles are those of the data rotated back (model of
        # fastalign.align.axis: the shifts act in that frame)
        src = data if alpha == 0.0 else _axis.rotate_shift(data, alpha, np.zeros((n, 2)))
        hold_y = profile_start(tilt_profiles(src), column_sums(src), center_offset, total, opts,
                               set_dy=want_y, set_dx=want_x)

    history = []
    converged = False
    stopped = False
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=coarse_iter * (len(levels) - 1) + max_iter, desc="align",
                   unit="it", leave=False)
    x = None
    prev_pos = None
    t_rec = t_est = t_shift = 0.0
    try:
        for f in levels:
            final_level = f == levels[-1]
            fy = _y_factor(ny, f)
            raw_l = bin_stack(data, f, fy)
            scale = np.array([f, fy], dtype=np.float64)
            _, nyl, nxl = raw_l.shape
            co_l = (center_offset + 0.5 * (nx - (nx // f) * f)) / f
            # the axis-angle step needs y gradients over contiguous rows: no row budget then
            rows = _level_rows(nyl, fy, slices, None if do_axis else max_rows)
            pos = (rows + 0.5) * fy - 0.5  # full-resolution row positions
            nzl = max(1, int(round(nz / f)))
            pl = int(np.ceil(pad_x / f))
            A = Projector(angles, (rows.size, nzl, nxl + 2 * pl), co_l)
            solver = _make_solver(recon, A, nonneg=nonneg, lam=lam, pad=pl)
            if x is None:
                x = np.zeros(A.domain_shape, np.float32)
                first_inner = 3 * n_inner
            else:
                x = _warm_start(x, prev_pos, pos, A.domain_shape)
                first_inner = n_inner
            prev_pos = pos
            wx = tukey(nxl, taper)
            runs = _row_runs(rows) if rows.size > 1 else []
            contiguous = len(runs) == 1
            n_outer = max_iter if final_level else coarse_iter
            tol_l = tol if final_level else max(tol, COARSE_TOL * f)
            prev_upd = None
            x_upd = np.inf     # largest x update of the previous iteration (full-res px)
            prev_upd_g = None
            since_jump = 0
            recon_its = 0      # reconstruction iterations on this level
            level_res = []     # data residuals of this level's iterations
            for it in range(n_outer):
                t0 = time.perf_counter()
                if alpha == 0.0:
                    corrected = fourier_shift(raw_l, -total / scale)
                else:
                    corrected = _axis.rotate_shift(raw_l, alpha, total, scale=(f, fy),
                                                   full_shape=(ny, nx))
                b = np.ascontiguousarray(corrected[:, rows, :])
                b = _pad_columns(b, pl, recon)
                t1 = time.perf_counter()
                x_before = x.copy() if extrapolate else None
                solver.run(b, x, first_inner if it == 0 else n_inner)
                recon_its += first_inner if it == 0 else n_inner
                t2 = time.perf_counter()
                P = A(x)
                bc, Pc = (b[:, :, pl:pl + nxl], P[:, :, pl:pl + nxl]) if pl else (b, P)
                upd = np.zeros((n, 2))
                if "x" in axes:
                    C, pb, pp = cross_power(bc, Pc, 2, wx)
                    upd[:, 0] = estimate_shift(C, pb, pp, nxl, estimator=estimator,
                                               min_coherence=min_coherence)
                # profile-held dy is re-estimated on the full level only, once x is sub-pixel
                if "y" in axes and runs and (not hold_y or final_level and x_upd < 0.5):
                    for k, (r0, r1) in enumerate(runs):  # spectra of equal-length runs add up
                        Ck, pbk, ppk = cross_power(bc[:, r0:r1], Pc[:, r0:r1], 1,
                                                   tukey(r1 - r0, taper))
                        if k == 0:
                            C, pb, pp, ly = Ck, pbk, ppk, r1 - r0
                        elif r1 - r0 == ly:
                            C, pb, pp = C + Ck, pb + pbk, pp + ppk
                    upd[:, 1] = estimate_shift(C, pb, pp, ly, estimator=estimator,
                                               min_coherence=min_coherence)
                # measured ~ reprojection shifted by upd: the raw data carry total + upd
                total += upd * scale
                x_upd = float(np.abs(upd[:, 0]).max()) * f
                eps_px = 0.0
                can_rotate = do_axis and rows.size > 2 and contiguous
                axis_step = (can_rotate
                             and float(np.abs(upd * scale).max()) < ROT_START_PX * f
                             and recon_its >= ROT_MIN_ITERS
                             and len(level_res) >= 2
                             and level_res[-2] - level_res[-1] < ROT_RES_SETTLED * level_res[-1])
                if axis_step:
                    # the rotation step is only meaningful once the shifts and the
                    # reconstruction have settled (ROT_* above)
                    eps = float(np.rad2deg(_axis.rotation_update(
                        bc, Pc, rows * fy + 0.5 * (fy - 1), np.arange(nxl) * f + 0.5 * (f - 1),
                        (0.5 * (nx - 1), 0.5 * (ny - 1)))))
                    alpha += eps
                    # convergence: the step's motion at the image edge.  The reconstruction
                    # absorbs most of a residual rotation (module docstring of
                    # fastalign.align.axis), so the steps shrink slowly and are soon
                    # dominated by their bias: neither an Aitken jump nor a geometric-tail
                    # allowance (as for the shifts) would make the angle more accurate
                    eps_px = abs(np.deg2rad(eps)) * 0.5 * max(nx, ny)
                jump = (_aitken_jump(upd, prev_upd)
                        if extrapolate and prev_upd is not None and since_jump >= 3 else 0.0)
                if jump:
                    total += upd * scale * jump
                    # the volume follows the shifts along the same slow mode: without this,
                    # the next estimate (against the volume of the old shifts) takes much of
                    # the jump back
                    _extrapolate_volume(x, x_before, jump, nonneg)
                    since_jump = -1
                prev_upd = upd
                since_jump += 1
                res = float(np.linalg.norm(Pc - bc) / max(np.linalg.norm(bc), 1e-30))
                level_res.append(res)
                t3 = time.perf_counter()
                t_shift += t1 - t0
                t_rec += t2 - t1
                t_est += t3 - t2
                # the update without its gauge part (DESIGN.md): a drift of the sinusoid in
                # dx or of the mean dy moves the object, not the alignment
                upd_g = fix_gauge(upd * scale, angles)[0]
                max_upd = max(float(np.abs(upd_g).max()), eps_px)
                entry = dict(iteration=len(history) + 1, level=int(f), max_update=max_upd,
                             rms_update=float(np.sqrt(np.mean(upd_g ** 2))),
                             residual=res, time_s=time.perf_counter() - t_start)
                if do_axis:
                    entry["axis_angle_deg"] = alpha
                history.append(entry)
                log.info("level %d it %d: max update %.4g px, residual %.4g", f, it + 1,
                         max_upd, res)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(level=f, upd=f"{max_upd:.3g}")
                if callback is not None:
                    try:
                        callback(dict(entry, shifts=fix_gauge(total, angles)[0]))
                    except StopIteration:
                        stopped = True
                        break
                # slow modes shrink geometrically: count the rest of the series, u / (1 - rho)
                rho_g = _ratio(upd_g, prev_upd_g)
                prev_upd_g = upd_g
                # with "axis_angle" refined, only an iteration that took the rotation step can
                # end the level (else the angle might never have been refined)
                if (max_upd * _tail_factor(rho_g) < tol_l
                        and (axis_step or not can_rotate)):
                    converged = final_level
                    break
            if stopped:
                break
            if bar is not None and not final_level:
                bar.update(n_outer - it - 1)
    finally:
        if bar is not None:
            bar.close()

    # Report in the fixed gauge; translate the warm start accordingly (object moves by (a, b)
    # in (x, z) and by mean dy along y when the sinusoid and mean are taken out of the shifts).
    t0 = time.perf_counter()
    if do_center:
        # with free shifts the centre offset is the constant part of dx (axis.split_center)
        shifts, c0, (ga, gb, gy) = _axis.split_center(total, angles)
        center_offset = center_offset + c0
    else:
        shifts, (ga, gb, gy) = fix_gauge(total, angles)
    if alpha == 0.0:
        aligned = fourier_shift(data, -shifts)
    else:
        aligned = _axis.rotate_shift(data, alpha, shifts)
    full = (ny, nz, nx + 2 * pad_x)
    A = Projector(angles, full, center_offset)
    x0 = np.zeros(full, np.float32)
    b = _pad_columns(aligned, pad_x, recon)
    fbp_start = x is not None and prev_pos.size < ny
    if fbp_start:
        # the loop saw a subset of rows: start the whole volume from FBP instead
        from ..recon.fbp import fbp
        x0 = fbp(b, angles, nz=nz, center_offset=center_offset)
        if nonneg:
            np.maximum(x0, 0.0, out=x0)
    elif x is not None:
        moved = ndi.shift(x, (0.0, gb * x.shape[1] / nz, ga * x.shape[2] / full[2]), order=1)
        x0 = _warm_start(moved, prev_pos + gy, np.arange(ny, dtype=np.float64), full)
    solver = _make_solver(recon, A, nonneg=nonneg, lam=lam, pad=pad_x)
    if final_iter is None:  # a FBP start needs fewer iterations than the loop's partial one
        final_iter = max(1, n_inner // 2) if fbp_start else 2 * n_inner
    volume = solver.run(b, x0, final_iter)
    if pad_x:
        volume = np.ascontiguousarray(volume[:, :, pad_x:pad_x + nx])
    t_final = time.perf_counter() - t0
    timings = dict(total_s=time.perf_counter() - t_start, reconstruct_s=t_rec,
                   estimate_s=t_est, resample_s=t_shift, final_s=t_final)
    if do_axis:
        timings["axis_coarse_s"] = t_axis
    return AlignResult(shifts=shifts, aligned=aligned, volume=volume, history=history,
                       converged=converged, angles_deg=angles, method="autofocus",
                       options=opts, timings=timings, axis_angle_deg=float(alpha),
                       center_offset=float(center_offset))


_REFINE = ("shifts", "axis_angle", "center")


def _check_refine(refine):
    """``refine`` as a tuple in canonical order; ``"shifts"`` is required."""
    if isinstance(refine, str):
        refine = (refine,)
    try:
        items = [str(r) for r in refine]
    except TypeError:
        raise TypeError(f"refine must be a sequence of {_REFINE}, got {refine!r}") from None
    bad = [r for r in items if r not in _REFINE]
    if bad:
        raise ValueError(f"refine entries must be among {_REFINE}, got {bad}")
    if "shifts" not in items:
        raise ValueError("refine must include 'shifts' (the per-tilt translations)")
    return tuple(r for r in _REFINE if r in items)


def _baseline(method, data, angles, *, nz, n_inner, recon, lam, nonneg, center_offset,
              t_start):
    from . import baselines
    n, ny, nx = data.shape
    if method == "xcorr":
        raw = baselines.xcorr_shifts(data, angles)
    else:
        raw = baselines.com_shifts(data, angles)
    shifts, _ = fix_gauge(raw, angles)
    aligned = fourier_shift(data, -shifts)
    nz = nx if nz is None else nz
    A = Projector(angles, (ny, nz, nx), center_offset)
    if recon == "tv" and lam is None:
        lam = 0.02 * float(np.abs(data).mean())
    solver = _make_solver(recon, A, nonneg=nonneg, lam=lam)
    volume = solver.run(aligned, np.zeros(A.domain_shape, np.float32), 2 * n_inner)
    return AlignResult(shifts=shifts, aligned=aligned, volume=volume, history=[],
                       converged=True, angles_deg=angles, method=method,
                       options=dict(method=method, recon=recon), center_offset=center_offset,
                       timings=dict(total_s=time.perf_counter() - t_start))
