"""SIRT: simultaneous iterative reconstruction technique.

Update (Gregor & Benson 2008; CIL's and ASTRA's SIRT)::

    x <- P( x + C A^T R (b - A x) ),   R = 1 / (A m),   C = m / (A^T 1)

with ``m`` the reconstruction mask (all ones without a mask), reciprocals zero-safe (a zero or
round-off-small sum gives a zero weight) and ``P`` the projection onto ``x >= 0`` when
``nonneg``.  Pixels outside the mask have ``C = 0`` and stay 0.  ``R`` and ``C`` are computed
once per solver; without a mask or with a 2-D mask they are the same for every slice and are
stored once (``(n_tilts, 1, n_det)`` and ``(1, nz, nx)``).
"""
import contextlib
import contextvars

import numba
import numpy as np

from ..kernels import sirt as _ksirt
from ..kernels import vector as _kv
from .._validate import as_finite_float
from ..kernels import projector as _kp
from ..operator import Projector
from ._common import (ReconResult, call_back, check_Ax, check_callback, check_data,
                      check_n_iter, check_projector, check_x, log, prepare_mask,
                      safe_reciprocal, setup_problem)


class SIRTSolver:
    """Reusable SIRT for one projector: weights computed once, buffers preallocated.

    Made for loops that reconstruct many times with the same geometry and changing data (the
    alignment loop): construct once, then call :meth:`run` with the new ``b`` and the previous
    volume as warm start.  A run costs one forward and one backprojection per iteration plus
    two elementwise passes; nothing is allocated per iteration.

    Parameters
    ----------
    A : Projector
        Geometry and shape ``(ny, nz, nx)``.
    mask : None, bool, "circle" or array_like of bool, optional
        Reconstruction support: ``True``/``"circle"`` for the disc of radius
        ``nx/2 - |center_offset|`` in every slice; a boolean ``(nz, nx)`` (every slice) or
        ``(ny, nz, nx)`` array.  Pixels outside are 0.
    nonneg : bool
        Project onto ``x >= 0`` after every update.
    relax : float
        Over-relaxation ``C <- relax C`` (1: plain SIRT; the alignment loop uses 1.9, about
        twice as fast per outer iteration and still convergent for ``relax < 2``).
    data_weights : array_like, shape (n_tilts, 1, n_det), optional
        Weights ``w`` of the detector bins, the same for every row (e.g. 0 on padding columns
        that carry no measurement): ``R = w / (A m)``, ``C = m / (A^T w)``, so unmeasured rays
        neither enter the residual nor count in the column sums.  Weights that vary along y
        as well, ``(n_tilts, ny, n_det)``, are set with :meth:`set_data_weights`.
    weight_floor : float, optional
        Row/column sums at or below this absolute value get weight 0; default (None): sums
        at or below ``1e-6`` times the largest.

    Notes
    -----
    Update: ``x <- P(x + C A^T R (b - A x))``, ``R = 1/(A m)``, ``C = m/(A^T 1)`` (module
    docstring).  Memory: two tilt-series-sized float32 buffers (``A x`` and the weighted
    residual) and one volume-sized buffer (``A^T R r``), plus ``R`` and ``C`` which are small
    (one slice) unless the mask is 3-D (then one more tilt-series- and one volume-sized array).
    Together with the caller's ``x``: 2 volume-sized + 2 tilt-series-sized buffers.

    After :meth:`run`, :attr:`result` is a :class:`ReconResult` (per-iteration residuals,
    ``stopped``) and :attr:`reprojection` holds ``A x`` of the returned volume (computed by
    the last iteration anyway); pass it back as ``Ax=`` to the next run with the same ``x`` to
    skip one forward projection.
    """

    def __init__(self, A, *, mask=None, nonneg=True, relax=1.0, data_weights=None,
                 weight_floor=None):
        self.A = check_projector(A)
        self.nonneg = bool(nonneg)
        self.relax = as_finite_float(relax, "relax", minimum=0.0)
        g = A.geometry
        ny = A.domain_shape[0]
        na, nb = g.n_tilts, g.n_det
        m = prepare_mask(mask, A.domain_shape, g.center_offset)
        self.mask = m
        w = 1.0
        if data_weights is not None:
            w = np.ascontiguousarray(np.broadcast_to(np.asarray(data_weights, np.float32),
                                                     (na, 1, nb)))
        # R = w / (A m) and C = m / (A^T w): one slice unless the mask varies along y.
        flat = m is None or m.shape[0] == 1
        row_sums, col_sums = slice_sums(A, m if m is not None and flat else 1.0, w)
        if not flat:
            row_sums = A.forward_into(m.astype(np.float32), np.empty((na, ny, nb), np.float32))
        R = safe_reciprocal(row_sums, abs_tol=weight_floor)
        if data_weights is not None:
            R = R * w
        self._R = np.ascontiguousarray(R)
        C = safe_reciprocal(col_sums, abs_tol=weight_floor)
        if self.relax != 1.0:
            C = self.relax * C
        if m is not None:
            C = C * m  # (1 or ny, nz, nx)
        self._C = np.ascontiguousarray(C, dtype=np.float32)
        self._row_sums = row_sums
        self._weight_floor = weight_floor
        self._bp = np.empty(A.domain_shape, np.float32)
        self._res = np.empty(A.range_shape, np.float32)
        self._ax = np.empty(A.range_shape, np.float32)
        self._rowsum = np.empty(na * ny, np.float64)
        self._has_reprojection = False
        self.result = None

    @property
    def reprojection(self):
        """``A x`` of the volume returned by the last :meth:`run` (a solver-owned buffer,
        overwritten by the next run), or None before the first run."""
        return self._ax if self._has_reprojection else None

    def set_data_weights(self, w):
        """Replace the data weights by ``w`` of shape ``(n_tilts, ny, nx)`` (every ray its own
        weight, e.g. 0 where a shifted image carries no measurement).

        ``R = w / (A m)`` and ``C = relax m / (A^T w)``; ``A^T w`` is one backprojection
        (a volume-sized ``C``).
        """
        A = self.A
        w = np.ascontiguousarray(w, dtype=np.float32)
        if w.shape != A.range_shape:
            raise ValueError(f"data weights must have shape {A.range_shape}, got {w.shape}")
        self._R = np.ascontiguousarray(
            safe_reciprocal(self._row_sums, abs_tol=self._weight_floor) * w, dtype=np.float32)
        cols = A.adjoint_into(w, np.empty(A.domain_shape, np.float32))
        C = safe_reciprocal(cols, abs_tol=self._weight_floor)
        if self.relax != 1.0:
            C = self.relax * C
        if self.mask is not None:
            C = C * self.mask
        self._C = np.ascontiguousarray(C, dtype=np.float32)

    def zero_reprojection(self):
        """Zero the reprojection buffer and return it: ``A 0`` for ``run(..., Ax=)``."""
        self._ax.fill(0.0)
        return self._ax

    def run(self, b, x=None, n_iter=10, *, callback=None, Ax=None):
        """Run ``n_iter`` SIRT iterations on data ``b``, warm-started from ``x`` (in place).

        Parameters
        ----------
        b : array_like, shape (n_tilts, ny, nx)
            Measured tilt series (used as is if float32 C-contiguous; never modified).
        x : ndarray, float32, shape (ny, nz, nx), optional
            Warm start, updated in place (masked and, if ``nonneg``, clipped first).  A new
            zero volume if None.
        n_iter : int >= 0
        callback : callable, optional
            ``callback(k, x, info)`` after iteration ``k`` (0-based) with ``info =
            {"residual": ||A x - b|| / ||b||}``; ``x`` is the live iterate (copy it to keep
            it).  Raise ``StopIteration`` to stop.
        Ax : ndarray, float32, shape (n_tilts, ny, nx), optional
            ``A x`` for the given ``x`` if already known (e.g. :attr:`reprojection` of the
            previous run); skips the initial forward projection.  Not checked for consistency.

        Returns
        -------
        x : ndarray, float32, shape (ny, nz, nx)
            The updated volume (the array passed in, or the new one).  The per-iteration
            residuals etc. are in :attr:`result` (a :class:`ReconResult`).
        """
        A = self.A
        b = check_data(b, A)
        n_iter = check_n_iter(n_iter)
        callback = check_callback(callback)
        ax = self._ax
        if x is None:
            x = np.zeros(A.domain_shape, np.float32)
            if Ax is None:
                ax.fill(0.0)
                Ax = ax
        else:
            check_x(x, A)
            if self.mask is not None:
                _kv.apply_mask(x, self.mask)
            if self.nonneg:
                _kv.clip_nonneg(x)
        if Ax is None:
            A.forward_into(x, ax)
        elif Ax is not ax:
            _kv.copy3(ax, check_Ax(Ax, A))
        self._has_reprojection = True
        rowsum = self._rowsum
        _kv.sumsq(b, rowsum)
        bnorm = float(np.sqrt(rowsum.sum()))
        scale = 1.0 / bnorm if bnorm > 0.0 else 1.0
        _ksirt.sirt_residual(b, ax, self._R, self._res, rowsum)
        residuals = []
        stopped = False
        for k in range(n_iter):
            A.adjoint_into(self._res, self._bp)
            _ksirt.sirt_update(x, self._bp, self._C, self.nonneg)
            A.forward_into(x, ax)
            _ksirt.sirt_residual(b, ax, self._R, self._res, rowsum)
            rel = float(np.sqrt(rowsum.sum())) * scale
            residuals.append(rel)
            log.debug("sirt iteration %d: relative residual %.6g", k, rel)
            if call_back(callback, k, x, {"residual": rel}):
                stopped = True
                break
        self.result = ReconResult(volume=x, residuals=np.asarray(residuals, np.float64),
                                  n_iter=len(residuals), stopped=stopped, method="sirt")
        return x


_SUMS = contextvars.ContextVar("fastalign_slice_sums", default=None)


@contextlib.contextmanager
def shared_slice_sums():
    """Inside the block, solvers of one geometry share their unweighted slice sums (one
    slice's ``(n_tilts, n_det)`` and ``(nz, nx)``) instead of projecting them each: the final
    reconstruction's row blocks (measured, 90 x 600 x 600 in 16-row blocks: a solver set-up
    is a projection pair, 9 s of 56).  The sums are dropped on leaving."""
    token = _SUMS.set({})
    try:
        yield
    finally:
        _SUMS.reset(token)


def slice_sums(A, volume=1.0, data=1.0):
    """Row sums ``A v`` ``(n_tilts, 1, n_det)`` and column sums ``A^T w`` ``(1, nz, nx)`` of
    one slice, for weights ``v`` (volume, broadcast to ``(nz, nx)``) and ``w`` (data,
    broadcast to ``(n_tilts, 1, n_det)``) that do not vary along y.

    Every slice sees the same 2-D operator, so the sums need one slice; k slices are projected
    (k = min(ny, threads * LANES): as many blocks of slices as threads, which cost no more than
    one slice) so that the projector takes the same dispatch path (block- or
    within-block-parallel) as the main problem and compiles nothing extra.
    """
    g = A.geometry
    ny, nz, nx = A.domain_shape
    na, nb = g.n_tilts, g.n_det
    cache = _SUMS.get()
    if np.ndim(volume) or np.ndim(data) or volume != 1.0 or data != 1.0:
        cache = None    # weighted sums: computed each time
    key = g.with_shape((1, nz, nx), nb)
    if cache is not None and key in cache:
        return cache[key]
    k = max(1, min(ny, numba.get_num_threads() * _kp.LANES))
    sub = Projector(g.with_shape((k, nz, nx), nb))
    v = np.empty((k, nz, nx), np.float32)
    v[...] = volume
    w = np.empty((na, k, nb), np.float32)
    w[...] = data
    rows = np.ascontiguousarray(sub.forward_into(v, np.empty((na, k, nb), np.float32))[:, :1])
    cols = np.ascontiguousarray(sub.adjoint_into(w, np.empty((k, nz, nx), np.float32))[:1])
    if cache is not None:
        rows.setflags(write=False)
        cols.setflags(write=False)
        cache[key] = rows, cols
    return rows, cols


def sirt(tilt_series, angles_deg, *, n_iter=50, nz=None, x0=None, nonneg=True, mask=None,
         callback=None, center_offset=0.0, return_result=False):
    """SIRT reconstruction of a tilt series.

    ``x <- P(x + C A^T R (b - A x))`` with ``R = 1/(A m)``, ``C = m/(A^T 1)`` (zero-safe
    reciprocals, ``m`` the mask, ``P`` the projection onto ``x >= 0`` if ``nonneg``); see
    :class:`SIRTSolver` for the reusable, warm-startable form.

    Parameters
    ----------
    tilt_series : array_like, shape (n_tilts, ny, nx)
        Measured projections ``b`` (converted once to float32).
    angles_deg : array_like, shape (n_tilts,)
        Tilt angles in degrees.
    n_iter : int >= 0
        Number of iterations (0 returns the masked/clipped start volume).
    nz : int, optional
        Volume thickness; defaults to ``nx``.
    x0 : array_like, shape (ny, nz, nx), optional
        Warm start (copied; not modified).  Zeros if None.
    nonneg : bool
        Enforce ``x >= 0``.
    mask : None, True, "circle" or bool array (nz, nx) or (ny, nz, nx)
        Reconstruction support (``True``/``"circle"``: disc of radius
        ``nx/2 - |center_offset|``).
    callback : callable, optional
        ``callback(k, x, info)`` after each iteration; ``info["residual"]`` is
        ``||A x - b|| / ||b||``.  Raise ``StopIteration`` to stop early.
    center_offset : float
        Rotation-centre offset in detector pixels.
    return_result : bool
        Return a :class:`ReconResult` (volume, per-iteration residuals, ...) instead of the
        volume alone.

    Returns
    -------
    volume : ndarray, float32, shape (ny, nz, nx)
        (or :class:`ReconResult` if ``return_result``)

    Notes
    -----
    Memory: the output plus one volume-sized and two tilt-series-sized float32 buffers
    (one more of each with a 3-D mask).  Each iteration is one forward and one back
    projection; results are bit-identical for any number of Numba threads.
    """
    n_iter = check_n_iter(n_iter)
    callback = check_callback(callback)
    b, A, x, _ = setup_problem(tilt_series, angles_deg, nz, x0, center_offset)
    solver = SIRTSolver(A, mask=mask, nonneg=nonneg)
    if x0 is None:
        solver.run(b, x, n_iter, callback=callback, Ax=_zeros_like_data(solver))
    else:
        solver.run(b, x, n_iter, callback=callback)
    return solver.result if return_result else x


def _zeros_like_data(solver):
    """``A 0`` without a projection: the solver's own reprojection buffer, zeroed."""
    return solver.zero_reprojection()


__all__ = ["sirt", "SIRTSolver"]
