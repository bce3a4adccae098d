"""Autofocus alignment: per-projection shifts from Fourier phase errors (DESIGN.md).

Outer loop, per binning level (coarse to fine):

1. resample the *raw* (binned) data once with the current total shifts (Fourier, sub-pixel);
2. reconstruct from it (SIRT or TV, a few warm-started iterations);
3. reproject;
4. per tilt, accumulate over slices the cross-power spectrum ``C(w) = sum B(w) conj(P(w))`` of
   measured and reprojected rows (FFT along x) and columns (FFT along y);
5. estimate the residual shift from its phase ``-2 pi w s / N`` and add it to the total;

until the largest update falls below ``tol`` at full resolution.
"""
import logging
import time

import numpy as np
import scipy.ndimage as ndi

from .._validate import (as_angles_deg, as_finite_float, as_float32_array,
                         as_positive_int)
from ..operator import Projector
from . import axis as _axis
from .gauge import fix_gauge
from .result import AlignResult
from .shift import cross_power, estimate_shift, fourier_shift, tukey

log = logging.getLogger("fastalign.align")


# --------------------------------------------------------------------------- solvers
class _SIRT:
    """Warm-startable over-relaxed SIRT: ``x <- x + relax C A^T R (b - A x)``.

    Kept apart from :class:`fastalign.recon.SIRTSolver` (relaxation 1) because the alignment
    loop's convergence was measured with ``relax = 1.9`` (about twice as fast per outer
    iteration); weights are computed once.
    """

    def __init__(self, A, nonneg=True, relax=1.0):
        self.A = A
        self.nonneg = nonneg
        self.relax = relax
        row = A(np.ones(A.domain_shape, np.float32))
        self.R = np.where(row > 1e-6, 1.0 / np.maximum(row, 1e-6), 0.0).astype(np.float32)
        col = A.T(np.ones(A.range_shape, np.float32))
        self.C = (relax * np.where(col > 1e-6, 1.0 / np.maximum(col, 1e-6), 0.0)).astype(
            np.float32)
        self._r = np.empty(A.range_shape, np.float32)
        self._g = np.empty(A.domain_shape, np.float32)

    def run(self, b, x, n_iter):
        A, r, g = self.A, self._r, self._g
        for _ in range(n_iter):
            A._forward(x, r)
            np.subtract(b, r, out=r)
            r *= self.R
            A._adjoint(r, g)
            g *= self.C
            x += g
            if self.nonneg:
                np.maximum(x, 0.0, out=x)
        return x


def _make_solver(recon, A, *, nonneg, lam, relax=1.9):
    if recon == "sirt":
        return _SIRT(A, nonneg=nonneg, relax=relax)
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


def _auto_levels(ny, nx, max_shift_px):
    """Binning factors, coarse to fine: coarsest >= 48 px wide, enough to reach max_shift."""
    levels = [1]
    f = 2
    while nx // f >= 48 and (f <= 4 or max_shift_px / f > 4):
        levels.insert(0, f)
        f *= 2
    return levels


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
          pad_x=0, refine=("shifts",), axis_angle_deg=None, axis_search_deg=10.0,
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
        Maximum outer iterations at full resolution.
    tol : float
        Convergence: the largest shift update (full-resolution pixels) below ``tol``.
    levels : sequence of int, optional
        Binning factors, coarse to fine, ending with 1.  Default: automatic (e.g. 4, 2, 1 for
        256 px), so that starting errors of +-20 px converge.
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
        Iterations of the final reconstruction (default ``2 * n_inner``).
    pad_x : int or "auto"
        Columns of edge-replicated data added on each side (full resolution) for specimens
        wider than the field of view: the reconstruction then spans ``nx + 2 pad_x`` so that
        oblique rays through material outside the field are explained, and only the central
        ``nx`` columns enter the shift estimate.  ``"auto"``: ``nx // 4`` when the outermost
        columns carry more than 10 % of the mean signal, else 0.
    refine : sequence of {"shifts", "axis_angle", "center"}
        What the loop estimates.  ``"shifts"`` (required) are the per-tilt translations;
        ``"axis_angle"`` adds a global in-plane tilt-axis angle (coarse estimate from the
        tilt invariance of the axis profiles, then Gauss-Newton steps on the reprojection
        residual each outer iteration); ``"center"`` reports the constant part of dx as a
        rotation-centre offset (with free shifts the two are the same thing; see
        :mod:`fastalign.align.axis` for the model, signs and the convention separating them).
    axis_angle_deg : float, optional
        Tilt-axis angle (degrees, sign as in :mod:`fastalign.align.axis`): fixed when
        ``"axis_angle"`` is not refined (default 0), the starting value when it is (default:
        :func:`fastalign.align.axis.coarse_axis_angle`).
    axis_search_deg : float
        Half-width of the coarse axis-angle search (degrees).
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
    if recon not in ("sirt", "tv"):
        raise ValueError(f"recon must be 'sirt' or 'tv', got {recon!r}")
    if estimator not in ("phase", "gradient"):
        raise ValueError(f"estimator must be 'phase' or 'gradient', got {estimator!r}")
    if axes not in ("xy", "x", "y", "yx"):
        raise ValueError(f"axes must be 'xy', 'x' or 'y', got {axes!r}")
    max_iter = as_positive_int(max_iter, "max_iter")
    n_inner = as_positive_int(n_inner, "n_inner")
    coarse_iter = as_positive_int(coarse_iter, "coarse_iter", minimum=0)
    tol = as_finite_float(tol, "tol", minimum=0.0)
    center_offset = as_finite_float(center_offset, "center_offset")
    nz = nx if nz is None else as_positive_int(nz, "nz")
    final_iter = 2 * n_inner if final_iter is None else as_positive_int(final_iter,
                                                                         "final_iter", 0)
    if isinstance(initial_shifts, str):
        if initial_shifts not in ("xcorr", "com"):
            raise ValueError("initial_shifts must be an array, 'xcorr' or 'com'")
        from . import baselines
        init_fn = baselines.xcorr_shifts if initial_shifts == "xcorr" else baselines.com_shifts
        total = np.asarray(init_fn(data, angles), dtype=np.float64).reshape(n, 2)
    elif initial_shifts is None:
        total = np.zeros((n, 2))
    else:
        total = np.array(initial_shifts, dtype=np.float64).reshape(n, 2)
        if not np.all(np.isfinite(total)):
            raise ValueError("initial_shifts contains NaN/Inf")
    if levels is None:
        levels = _auto_levels(ny, nx, 20.0)
    levels = [as_positive_int(int(f), "levels") for f in levels]
    if levels[-1] != 1 or any(a <= b for a, b in zip(levels, levels[1:])):
        raise ValueError(f"levels must decrease strictly and end with 1, got {levels}")
    if slices is not None:
        slices = np.unique(np.asarray(slices, dtype=np.int64))
        if slices.size == 0 or slices.min() < 0 or slices.max() >= ny:
            raise ValueError(f"slices must be row indices in [0, {ny})")
    if recon == "tv" and lam is None:
        lam = 0.02 * float(np.abs(data).mean())
    if isinstance(pad_x, str):
        if pad_x != "auto":
            raise ValueError(f"pad_x must be an integer or 'auto', got {pad_x!r}")
        edge = float(np.abs(data[:, :, [0, -1]]).mean())
        pad_x = nx // 4 if edge > 0.1 * float(np.abs(data).mean()) else 0
    pad_x = as_positive_int(pad_x, "pad_x", minimum=0)
    axis_search_deg = as_finite_float(axis_search_deg, "axis_search_deg", minimum=0.0)
    if do_axis and slices is not None and np.any(np.diff(slices) != 1):
        raise ValueError("refine='axis_angle' needs contiguous slices (it uses y gradients)")
    t_axis = 0.0
    if axis_angle_deg is not None:
        alpha = as_finite_float(axis_angle_deg, "axis_angle_deg")
    elif do_axis:
        t0 = time.perf_counter()
        alpha = _axis.coarse_axis_angle(data, search_deg=axis_search_deg)
        t_axis = time.perf_counter() - t0
        log.info("coarse axis angle %.3f deg", alpha)
    else:
        alpha = 0.0
    opts = dict(pad_x=pad_x, method=method, recon=recon, estimator=estimator, axes=axes,
                max_iter=max_iter, tol=tol, levels=list(levels), n_inner=n_inner,
                coarse_iter=coarse_iter, nz=nz, lam=lam, nonneg=nonneg,
                center_offset=center_offset, min_coherence=min_coherence, taper=taper,
                final_iter=final_iter,
                slices=None if slices is None else slices.tolist())
    if refine != ("shifts",) or alpha != 0.0:
        opts.update(refine=list(refine), axis_angle_deg_start=alpha)

    history = []
    converged = False
    stopped = False
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=coarse_iter * (len(levels) - 1) + max_iter, desc="align",
                   unit="it", leave=False)
    x = None
    prev_shape = None
    t_rec = t_est = t_shift = 0.0
    try:
        for f in levels:
            final_level = f == 1
            fy = _y_factor(ny, f)
            raw_l = bin_stack(data, f, fy)
            scale = np.array([f, fy], dtype=np.float64)
            _, nyl, nxl = raw_l.shape
            co_l = (center_offset + 0.5 * (nx - (nx // f) * f)) / f
            rows = np.arange(nyl) if slices is None else np.unique(
                np.clip(slices // fy, 0, nyl - 1))
            nzl = max(1, int(round(nz / f)))
            pl = int(np.ceil(pad_x / f))
            A = Projector(angles, (rows.size, nzl, nxl + 2 * pl), co_l)
            solver = _make_solver(recon, A, nonneg=nonneg, lam=lam)
            if x is None:
                x = np.zeros(A.domain_shape, np.float32)
                first_inner = 3 * n_inner
            else:
                zoom = np.array(A.domain_shape) / np.array(prev_shape)
                x = np.ascontiguousarray(ndi.zoom(x, zoom, order=1), dtype=np.float32)
                if x.shape != A.domain_shape:  # zoom rounding
                    x = np.zeros(A.domain_shape, np.float32)
                first_inner = n_inner
            prev_shape = A.domain_shape
            wx = tukey(nxl, taper)
            wy = tukey(rows.size, taper) if rows.size > 2 else None
            contiguous = rows.size == nyl or np.all(np.diff(rows) == 1)
            n_outer = max_iter if final_level else coarse_iter
            tol_l = tol if final_level else max(tol, 0.05 * f)
            prev_upd = None
            since_jump = 0
            prev_eps = 0.0
            since_jump_a = 0
            for it in range(n_outer):
                t0 = time.perf_counter()
                if alpha == 0.0:
                    corrected = fourier_shift(raw_l, -total / scale)
                else:
                    corrected = _axis.rotate_shift(raw_l, alpha, total, scale=(f, fy),
                                                   full_shape=(ny, nx))
                b = np.ascontiguousarray(corrected[:, rows, :])
                if pl:
                    b = np.pad(b, ((0, 0), (0, 0), (pl, pl)), mode="edge")
                t1 = time.perf_counter()
                solver.run(b, x, first_inner if it == 0 else n_inner)
                t2 = time.perf_counter()
                P = A(x)
                bc, Pc = (b[:, :, pl:pl + nxl], P[:, :, pl:pl + nxl]) if pl else (b, P)
                upd = np.zeros((n, 2))
                if "x" in axes:
                    C, pb, pp = cross_power(bc, Pc, 2, wx)
                    upd[:, 0] = estimate_shift(C, pb, pp, nxl, estimator=estimator,
                                               min_coherence=min_coherence)
                if "y" in axes and rows.size > 1 and contiguous:
                    C, pb, pp = cross_power(bc, Pc, 1, wy)
                    upd[:, 1] = estimate_shift(C, pb, pp, rows.size, estimator=estimator,
                                               min_coherence=min_coherence)
                # measured ~ reprojection shifted by upd: the raw data carry total + upd
                total += upd * scale
                eps_px = 0.0
                if (do_axis and rows.size > 2 and contiguous
                        and float(np.abs(upd * scale).max()) < 0.5 * f):
                    # the rotation step is only meaningful once the shifts are sub-pixel
                    eps = float(np.rad2deg(_axis.rotation_update(
                        bc, Pc, rows * fy + 0.5 * (fy - 1), np.arange(nxl) * f + 0.5 * (f - 1),
                        (0.5 * (nx - 1), 0.5 * (ny - 1)))))
                    alpha += eps
                    # the axis angle converges geometrically: Aitken jump as for the shifts
                    rho_a = eps / prev_eps if prev_eps else 0.0
                    if extrapolate and since_jump_a >= 3 and 0.3 < rho_a < 0.97:
                        alpha += eps * min(rho_a / (1.0 - rho_a), 20.0)
                        since_jump_a = -1
                    prev_eps = eps
                    since_jump_a += 1
                    # convergence: motion at the image edge of the remaining geometric tail
                    tail = 1.0 / (1.0 - min(max(rho_a, 0.0), 0.95))
                    eps_px = abs(np.deg2rad(eps)) * 0.5 * max(nx, ny) * tail
                # Aitken-type extrapolation of the slow, geometrically decaying modes: when
                # successive updates are nearly parallel with ratio rho, jump by the rest of
                # the geometric series u * rho / (1 - rho).
                if extrapolate and prev_upd is not None and since_jump >= 3:
                    den = float(np.vdot(prev_upd, prev_upd))
                    rho = float(np.vdot(upd, prev_upd)) / den if den > 0 else 0.0
                    cosang = float(np.vdot(upd, prev_upd)) / np.sqrt(
                        den * float(np.vdot(upd, upd)) + 1e-300)
                    if 0.3 < rho < 0.97 and cosang > 0.9:
                        total += upd * scale * min(rho / (1.0 - rho), 10.0)
                        since_jump = -1
                prev_upd = upd
                since_jump += 1
                res = float(np.linalg.norm(Pc - bc) / max(np.linalg.norm(bc), 1e-30))
                t3 = time.perf_counter()
                t_shift += t1 - t0
                t_rec += t2 - t1
                t_est += t3 - t2
                max_upd = max(float(np.abs(upd * scale).max()), eps_px)
                entry = dict(iteration=len(history) + 1, level=int(f), max_update=max_upd,
                             rms_update=float(np.sqrt(np.mean((upd * scale) ** 2))),
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
                if max_upd < tol_l:
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
    if x is not None:
        moved = ndi.shift(x, (gy * x.shape[0] / ny, gb * x.shape[1] / nz,
                              ga * x.shape[2] / full[2]), order=1)
        if x.shape != full:
            moved = ndi.zoom(moved, np.array(full) / np.array(x.shape), order=1)
        if moved.shape == full:
            x0 = np.ascontiguousarray(moved, dtype=np.float32)
    b = aligned if not pad_x else np.pad(aligned, ((0, 0), (0, 0), (pad_x, pad_x)),
                                         mode="edge")
    solver = _make_solver(recon, A, nonneg=nonneg, lam=lam)
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
