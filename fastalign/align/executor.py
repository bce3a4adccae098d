"""The local executor of the alignment loop: the data steps of :mod:`fastalign.align.loop`
on arrays in this process (Numba kernels parallel over slices).

Also home of what both executors share per slab or per stack: the loop's solver
(:func:`make_solver`), the estimate of the updates from cross-power spectra
(:func:`updates_from_spectra`) and the data residual.
"""
import logging
import time

import numpy as np

from ..operator import Projector
from ..recon.sirt import SIRTSolver
from . import axis as _axis
from .levels import level_rows, pad_columns, row_runs, warm_start
from .shift import cross_power, estimate_shift, fourier_shift, tukey

log = logging.getLogger("fastalign.align")

__all__ = ["LocalExecutor", "make_solver", "estimate_updates", "SIRT_RELAX"]

#: Over-relaxation of the loop's SIRT (its convergence was measured with 1.9: about twice as
#: fast per outer iteration as plain SIRT).
SIRT_RELAX = 1.9


def make_solver(recon, A, *, nonneg, lam, pad=0):
    """The loop's solver for projector ``A``: over-relaxed SIRT (``pad`` detector columns
    per side carry no measurement: data weight 0) or TV."""
    if recon == "sirt":
        w = None
        if pad:
            w = np.ones((A.geometry.n_tilts, 1, A.range_shape[2]), np.float32)
            w[:, :, :pad] = 0.0
            w[:, :, -pad:] = 0.0
        return SIRTSolver(A, nonneg=nonneg, relax=SIRT_RELAX, data_weights=w,
                          weight_floor=1e-6)
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
    """

    name = "local"
    lacks = frozenset()

    def __init__(self, data, angles_deg, opts):
        self.data = data
        self.angles = angles_deg
        self.opts = opts
        self.x = None
        self.prev_pos = None

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
        self.rows = level_rows(nyl, lv.fy, o.slices, None if o.refine_axis else o.max_rows)
        pos = lv.positions(self.rows)
        nzl, nxl = lv.geometry.nz, lv.geometry.nx
        self.A = Projector(lv.geometry.with_shape((self.rows.size, nzl, nxl + 2 * lv.pad)))
        self.solver = make_solver(o.recon, self.A, nonneg=o.nonneg, lam=o.lam, pad=lv.pad)
        if self.x is None:
            self.x = np.zeros(self.A.domain_shape, np.float32)
        else:
            self.x = warm_start(self.x, self.prev_pos, pos, self.A.domain_shape)
        self.prev_pos = pos
        self.wx = tukey(nxl, o.taper)
        self.runs = row_runs(self.rows) if self.rows.size > 1 else []

    @property
    def can_rotate(self):
        return self.rows.size > 2 and len(self.runs) == 1

    def resample(self, total, alpha):
        lv, f, fy = self.lv, self.lv.f, self.lv.fy
        if alpha == 0.0:
            corrected = fourier_shift(self.raw, -total / lv.scale)
        else:
            corrected = _axis.rotate_shift(self.raw, alpha, total, scale=(f, fy),
                                           full_shape=self.data.shape[1:])
        b = np.ascontiguousarray(corrected[:, self.rows, :])
        self.b = pad_columns(b, lv.pad, self.opts.recon)

    def reconstruct(self, n_iter):
        self.x_before = self.x.copy() if self.opts.extrapolate else None
        self.solver.run(self.b, self.x, n_iter)

    def measure(self, want_x, want_y):
        pl, nxl = self.lv.pad, self.lv.geometry.nx
        b, P = self.b, self.solver.reprojection   # P = A x
        self.bc, self.Pc = (b[:, :, pl:pl + nxl], P[:, :, pl:pl + nxl]) if pl else (b, P)
        spec_x = spec_y = None
        if want_x:
            spec_x = cross_power(self.bc, self.Pc, 2, self.wx) + (nxl,)
        if want_y and self.runs:
            spec_y = cross_y_runs(self.bc, self.Pc, self.runs, self.opts.taper)
        upd = estimate_updates(b.shape[0], spec_x, spec_y, self.opts)
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
        """Aligned stack (raw data resampled once) and the final volume, warm-started from
        the loop's volume moved into the reported gauge (or from FBP when the loop saw a
        subset of rows).  Returns ``(aligned, volume, final_s)``."""
        t0 = time.perf_counter()
        o, data = self.opts, self.data
        ny, nx = data.shape[1:]
        ga, gb, gy = gauge
        if alpha == 0.0:
            aligned = fourier_shift(data, -shifts)
        else:
            aligned = _axis.rotate_shift(data, alpha, shifts)
        full = (ny, o.nz, nx + 2 * o.pad_x)
        A = Projector(self.angles, full, center_offset)
        x0 = np.zeros(full, np.float32)
        b = pad_columns(aligned, o.pad_x, o.recon)
        x = self.x
        fbp_start = x is not None and self.prev_pos.size < ny
        if fbp_start:
            from ..recon.fbp import fbp
            x0 = fbp(b, self.angles, nz=o.nz, center_offset=center_offset)
            if o.nonneg:
                np.maximum(x0, 0.0, out=x0)
        elif x is not None:
            x0 = warm_start(x, self.prev_pos + gy, np.arange(ny, dtype=np.float64), full,
                            zx_shift=(gb * x.shape[1] / o.nz, ga * x.shape[2] / full[2]))
        solver = make_solver(o.recon, A, nonneg=o.nonneg, lam=o.lam, pad=o.pad_x)
        final_iter = o.final_iter
        if final_iter is None:  # a FBP start needs fewer iterations than the loop's partial one
            final_iter = max(1, o.n_inner // 2) if fbp_start else 2 * o.n_inner
        volume = solver.run(b, x0, final_iter)
        if o.pad_x:
            volume = np.ascontiguousarray(volume[:, :, o.pad_x:o.pad_x + nx])
        return aligned, volume, time.perf_counter() - t0


def extrapolate_volume(x, x_before, jump, nonneg):
    """``x += jump (x - x_before)`` in place (clipped at zero with ``nonneg``)."""
    x += np.float32(jump) * (x - x_before)
    if nonneg:
        np.maximum(x, 0.0, out=x)
