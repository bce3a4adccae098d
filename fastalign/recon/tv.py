"""Total-variation regularised reconstruction by monotone FISTA with a Chambolle prox.

Problem::

    min_{x in K}  F(x) = 1/2 ||A x - b||^2 + lam TV(x)

with isotropic TV (per slice ``(nz, nx)`` for ``tv="2d"``, over the volume for ``"3d"``) and
``K = {x >= 0}`` if ``nonneg`` else everything.  Monotone FISTA (Beck & Teboulle 2009, MFISTA)
with step ``1/L``, ``L = 1.02 ||A||^2`` (power-iteration estimate from :meth:`Projector.norm`,
with a 2 % margin because power iteration approaches the norm from below)::

    z_k     = prox_{(lam/L) TV + i_K}( y_k - (1/L) A^T (A y_k - b) )
    t_{k+1} = (1 + sqrt(1 + 4 t_k^2)) / 2
    x_{k+1} = z_k if F(z_k) <= F(x_k) else x_k
    y_{k+1} = x_{k+1} + (t_k / t_{k+1}) (z_k - x_{k+1}) + ((t_k - 1) / t_{k+1}) (x_{k+1} - x_k)

so ``F(x_k)`` never increases even though the prox is inexact.  The prox runs ``n_inner``
iterations of Chambolle's (2004) dual algorithm (:mod:`fastalign.kernels.tv`), warm-started
from the dual of the previous outer iteration (and of the previous :meth:`TVSolver.run`).

Cost per iteration: one forward and one back projection (``A y`` is obtained by linearity
from ``A x`` and ``A z``, which are projected anyway for the objective) plus the prox and two
passes over the tilt series.  The momentum point ``y`` is never stored: it is kept as
``base + coef (pa - qa)`` of two iterates, and for 2-D TV the prox kernel forms its input
``y - (1/L) A^T (A y - b)`` row by row (:func:`fastalign.kernels.tv.fista_prox_2d`); for 3-D TV
and ``lam = 0`` one elementwise pass does it.  For 2-D TV the prox also returns ``TV(z)``.
"""
import numpy as np

from .._validate import as_finite_float, as_float32_array, as_positive_int
from ..kernels import fista as _kf
from ..kernels import vector as _kv
from ..kernels import tv as _ktv
from ._common import (ReconResult, call_back, check_Ax, check_callback, check_data,
                      check_n_iter, check_projector, check_x, log, setup_problem)

#: Safety factor on the power-iteration estimate of ``||A||^2``.
L_MARGIN = 1.02


def _check_tv_kind(tv):
    if tv not in ("2d", "3d"):
        raise ValueError(f"tv must be '2d' (per slice) or '3d', got {tv!r}")
    return tv


class TVSolver:
    """Reusable TV-regularised reconstruction (monotone FISTA + warm-started Chambolle prox).

    Parameters
    ----------
    A : Projector
    lam : float >= 0
        TV weight ``lam`` in ``1/2 ||A x - b||^2 + lam TV(x)``.  The data term is in the units
        of ``b`` (line integrals in pixel units), so ``lam`` scales like ``|b| / |x|``.
    nonneg : bool
        Constrain ``x >= 0`` (inside the prox).
    tv : {"2d", "3d"}
        Per-slice isotropic TV, or 3-D isotropic TV coupling neighbouring slices.
    n_inner : int >= 1
        Chambolle dual iterations per outer iteration (warm-started, so few are needed).
    L : float, optional
        Lipschitz constant of the data-term gradient; default ``1.02 * A.norm()**2``.

    Notes
    -----
    Update: module docstring.  Memory: with the caller's ``x``, 4 volume-sized buffers
    (three iterates rotating as ``x``, the previous ``x`` or a rejected ``z``, and the next
    ``z``; the gradient) plus the dual field (2 volume-sized for ``"2d"``, 3 for ``"3d"``),
    i.e. 6 or 7 volumes, and 3 tilt-series-sized buffers (``A x``, ``A z``, ``A y``).

    The dual field persists between :meth:`run` calls (warm start of the prox); FISTA's
    momentum restarts at each run.  After a run, :attr:`result` is a :class:`ReconResult`
    (residuals, objective) and :attr:`reprojection` holds ``A x``; pass it as
    ``Ax=`` to the next run with the same ``x`` to skip one forward projection.
    """

    def __init__(self, A, *, lam, nonneg=True, tv="2d", n_inner=10, L=None):
        self.A = check_projector(A)
        self.lam = as_finite_float(lam, "lam", minimum=0.0)
        self.nonneg = bool(nonneg)
        self.tv = _check_tv_kind(tv)
        self.n_inner = as_positive_int(n_inner, "n_inner")
        if L is None:
            L = L_MARGIN * A.norm() ** 2
        self.L = as_finite_float(L, "L")
        if not self.L > 0.0:
            raise ValueError(f"L must be > 0, got {self.L}")
        self._three_d = self.tv == "3d"
        self._tau = 1.0 / 6.0 if self._three_d else 0.25
        ny, nz, nx = A.domain_shape
        vs, ds = A.domain_shape, A.range_shape
        self._o = np.empty(vs, np.float32)
        self._g = np.empty(vs, np.float32)
        self._z = np.empty(vs, np.float32)
        self._p = np.zeros((ny, 3 if self._three_d else 2, nz, nx), np.float32)
        self._ax = np.empty(ds, np.float32)
        self._az = np.empty(ds, np.float32)
        self._ay = np.empty(ds, np.float32)
        self._rows_data = np.empty(ds[0] * ds[1], np.float64)
        self._rows_vol = np.empty(ny, np.float64)
        self._has_reprojection = False
        self.result = None

    @property
    def reprojection(self):
        """``A x`` of the volume returned by the last :meth:`run` (solver-owned buffer)."""
        return self._ax if self._has_reprojection else None

    def reset_dual(self):
        """Forget the prox warm start (zero dual field)."""
        self._p.fill(0.0)

    def tv_value(self, x):
        """Isotropic TV of a volume with this solver's convention (``"2d"`` or ``"3d"``)."""
        _ktv.tv_value(x, self._three_d, self._rows_vol)
        return float(self._rows_vol.sum())

    def _prox_step(self, base, pa, qa, coef, g, u):
        """``u = prox(y - g / L)`` with ``y = base + coef (pa - qa)``; returns ``TV(u)`` when
        the kernel computed it (2-D), else None.  ``g`` may be overwritten."""
        w = self.lam / self.L
        inv_L = 1.0 / self.L
        if w > 0.0 and not self._three_d:
            _ktv.fista_prox_2d(base, pa, qa, coef, g, inv_L, self._p, u, w, self._tau,
                               self.n_inner, self.nonneg, self._rows_vol)
            return float(self._rows_vol.sum())
        if w > 0.0:
            _kf.fista_step(g, base, pa, qa, coef, g, inv_L, False)
            _ktv.chambolle_3d(g, self._p, u, w, self._tau, self.n_inner, self.nonneg)
        else:
            _kf.fista_step(u, base, pa, qa, coef, g, inv_L, self.nonneg)
        return None

    def zero_reprojection(self):
        """Zero the reprojection buffer and return it: ``A 0`` for ``run(..., Ax=)``."""
        self._ax.fill(0.0)
        return self._ax

    # ------------------------------------------------------------------ MFISTA steps
    # begin -> (propose -> decide)* -> end, driven by an :class:`MFISTA` controller that sees
    # only the objective's partial sums: :meth:`run` drives one solver, the Dask path drives
    # one solver per slab and adds their sums (fastalign.distributed.recon).
    def begin(self, b, x=None, Ax=None):
        """Start a run on data ``b`` from ``x`` (updated in place; zeros if None).

        Returns the partial sums ``{"bn2": ||b||^2, "data": ||A x - b||^2, "tv": TV(x)}``
        (``tv`` 0 when ``lam = 0``) for :meth:`MFISTA.start`.
        """
        A = self.A
        b = check_data(b, A)
        if x is None:
            x = np.zeros(A.domain_shape, np.float32)
            if Ax is None:
                Ax = self.zero_reprojection()
        else:
            check_x(x, A)
            if self.nonneg:
                _kv.clip_nonneg(x)
        if Ax is None:
            A.forward_into(x, self._ax)
        elif Ax is not self._ax:
            _kv.copy3(self._ax, check_Ax(Ax, A))
        self._has_reprojection = True
        _kv.sumsq(b, self._rows_data)
        bn2 = float(self._rows_data.sum())
        _kv.diff_sumsq(self._ax, b, self._rows_data)
        data_x = float(self._rows_data.sum())
        tv_x = self.tv_value(x) if self.lam > 0.0 else 0.0
        # The momentum point is never stored: y = base + coef (pa - qa) with base, pa, qa
        # among x (xb) and one other volume (ob: the previous x or a rejected z); the prox
        # forms y - (1/L) grad on the fly.  Three volumes rotate (x, other, next z); the
        # caller's x and the solver's reprojection buffer get the final values at end().
        self._st = dict(b=b, x_out=x, xb=x, ob=self._o, zb=self._z, axb=self._ax,
                        azb=self._az, ing=(x, x, x, 0.0))
        _kf.extrapolate_residual(self._ay, self._ax, self._ax, self._ax, 0.0, b)  # A y - b
        return {"bn2": bn2, "data": data_x, "tv": tv_x}

    @property
    def iterate(self):
        """The current ``x`` of a begun run (a solver-owned buffer or the caller's ``x``)."""
        return self._st["xb"]

    def propose(self):
        """Compute ``z = prox(y - A^T (A y - b) / L)`` and ``A z``.

        Returns the partial sums ``{"data": ||A z - b||^2, "tv": TV(z)}``."""
        r, A = self._st, self.A
        A.adjoint_into(self._ay, self._g)                 # A^T (A y - b)
        tv_z = self._prox_step(*r["ing"], self._g, r["zb"])  # z (and TV(z) for 2-D TV)
        A.forward_into(r["zb"], r["azb"])
        _kv.diff_sumsq(r["azb"], r["b"], self._rows_data)
        data_z = float(self._rows_data.sum())
        if self.lam > 0.0 and tv_z is None:
            tv_z = self.tv_value(r["zb"])
        return {"data": data_z, "tv": tv_z if tv_z is not None else 0.0}

    def decide(self, accepted, coef):
        """Apply a decision of :meth:`MFISTA.step`: accept ``z`` (``y = z + coef (z - x)``)
        or keep ``x`` (``y = x + coef (z - x)``)."""
        r, b, ayb = self._st, self._st["b"], self._ay
        if accepted:
            _kf.extrapolate_residual(ayb, r["azb"], r["azb"], r["axb"], coef, b)
            r["xb"], r["ob"], r["zb"] = r["zb"], r["xb"], r["ob"]
            r["axb"], r["azb"] = r["azb"], r["axb"]
            r["ing"] = (r["xb"], r["xb"], r["ob"], coef)
        else:
            _kf.extrapolate_residual(ayb, r["axb"], r["azb"], r["axb"], coef, b)
            r["ob"], r["zb"] = r["zb"], r["ob"]
            r["ing"] = (r["xb"], r["ob"], r["xb"], coef)

    def end(self):
        """Finish a run: the caller's ``x`` and :attr:`reprojection` get the final values.

        Returns ``x``."""
        r = self._st
        if r["xb"] is not r["x_out"]:
            _kv.copy3(r["x_out"], r["xb"])
        if r["axb"] is not self._ax:
            _kv.copy3(self._ax, r["axb"])
        self._st = None
        return r["x_out"]

    def run(self, b, x=None, n_iter=50, *, callback=None, Ax=None):
        """Run ``n_iter`` monotone-FISTA iterations on data ``b``, warm-started from ``x``.

        Parameters
        ----------
        b : array_like, shape (n_tilts, ny, nx)
        x : ndarray, float32, shape (ny, nz, nx), optional
            Start, updated in place (clipped first if ``nonneg``).  New zeros if None.
        n_iter : int >= 0
        callback : callable, optional
            ``callback(k, x, info)`` after iteration ``k`` with ``info = {"residual",
            "objective", "accepted"}``; raise ``StopIteration`` to stop.
        Ax : ndarray, optional
            ``A x`` if already known (e.g. :attr:`reprojection`); skips one projection.

        Returns
        -------
        x : ndarray, float32, shape (ny, nz, nx)
            The updated volume.  :attr:`result` (a :class:`ReconResult`) holds the
            per-iteration residuals and (non-increasing) objective; ``result.info
            ["n_rejected"]`` counts MFISTA steps that kept ``x``.
        """
        n_iter = check_n_iter(n_iter)
        callback = check_callback(callback)
        sums = self.begin(b, x, Ax)
        scale = 1.0 / np.sqrt(sums["bn2"]) if sums["bn2"] > 0.0 else 1.0
        ctl = MFISTA(self.lam)
        ctl.start(sums["data"], sums["tv"])
        residuals, objective = [], []
        stopped = False
        for k in range(n_iter):
            z = self.propose()
            accepted, coef = ctl.step(z["data"], z["tv"])
            self.decide(accepted, coef)
            rel = float(np.sqrt(ctl.data_x)) * scale
            residuals.append(rel)
            objective.append(ctl.f_x)
            log.debug("tv iteration %d: objective %.8g, residual %.6g, accepted %s",
                      k, ctl.f_x, rel, accepted)
            info = {"residual": rel, "objective": ctl.f_x, "accepted": bool(accepted)}
            if call_back(callback, k, self.iterate, info):
                stopped = True
                break
        x_out = self.end()
        self.result = ReconResult(volume=x_out, residuals=np.asarray(residuals, np.float64),
                                  objective=np.asarray(objective, np.float64),
                                  n_iter=len(residuals), stopped=stopped, method="tv",
                                  info={"step": 1.0 / self.L, "n_rejected": ctl.n_rejected,
                                        "lam": self.lam, "tv": self.tv})
        return x_out


class MFISTA:
    """The scalar part of monotone FISTA: objective values, momentum, accept/reject.

    Sees only sums: ``F = 1/2 data + lam tv`` from the data misfit ``||A v - b||^2`` and
    ``TV(v)`` (whole problem, i.e. summed over slabs by a distributed caller).

    Parameters
    ----------
    lam : float
        TV weight.
    """

    def __init__(self, lam):
        self.lam = lam
        self.t = 1.0
        self.f_x = self.data_x = None
        self.n_rejected = 0

    def objective(self, data, tv):
        return 0.5 * data + (self.lam * tv if self.lam > 0.0 else 0.0)

    def start(self, data_x, tv_x):
        """The objective of the start ``x``."""
        self.f_x, self.data_x = self.objective(data_x, tv_x), data_x
        self.t = 1.0

    def step(self, data_z, tv_z):
        """Accept ``z`` iff ``F(z) <= F(x)``; returns ``(accepted, coef)`` for
        :meth:`TVSolver.decide` (``coef = (t - 1) / t_new`` or ``t / t_new``)."""
        f_z = self.objective(data_z, tv_z)
        t_new = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * self.t * self.t))
        accepted = f_z <= self.f_x
        if accepted:
            coef = (self.t - 1.0) / t_new
            self.f_x, self.data_x = f_z, data_z
        else:
            coef = self.t / t_new
            self.n_rejected += 1
        self.t = t_new
        return accepted, coef


def tv(tilt_series, angles_deg, *, lam, n_iter=50, nz=None, x0=None, nonneg=True, tv="2d",
       n_inner=10, callback=None, center_offset=0.0, return_result=False):
    """TV-regularised reconstruction: monotone FISTA on ``1/2 ||A x - b||^2 + lam TV(x)``.

    ``z = prox_{(lam/L) TV}(y - A^T(A y - b)/L)`` with Chambolle's dual algorithm
    (``n_inner`` warm-started iterations), FISTA extrapolation, ``x`` replaced by ``z`` only
    when the objective does not increase (module docstring for the full update).

    Parameters
    ----------
    tilt_series : array_like, shape (n_tilts, ny, nx)
    angles_deg : array_like, shape (n_tilts,)
    lam : float >= 0
        TV weight (``lam = 0``: projected least squares by FISTA).
    n_iter : int >= 0
    nz : int, optional
        Volume thickness; defaults to ``nx``.
    x0 : array_like, shape (ny, nz, nx), optional
        Warm start (copied).
    nonneg : bool
        Constrain ``x >= 0``.
    tv : {"2d", "3d"}
        Per-slice 2-D isotropic TV or 3-D isotropic TV.
    n_inner : int >= 1
        Chambolle iterations per outer iteration.
    callback : callable, optional
        ``callback(k, x, info)``; ``info`` has ``residual``, ``objective``, ``accepted``.
        Raise ``StopIteration`` to stop.
    center_offset : float
    return_result : bool
        Return a :class:`ReconResult` with per-iteration residuals and objective.

    Returns
    -------
    volume : ndarray, float32, shape (ny, nz, nx)  (or :class:`ReconResult`)

    Notes
    -----
    Memory: 6 (``"2d"``) or 7 (``"3d"``) volume-sized and 3 tilt-series-sized float32 buffers
    including the output.  Bit-identical for any number of Numba threads.
    """
    n_iter = check_n_iter(n_iter)
    callback = check_callback(callback)
    lam = as_finite_float(lam, "lam", minimum=0.0)
    _check_tv_kind(tv)
    n_inner = as_positive_int(n_inner, "n_inner")
    b, A, x, given = setup_problem(tilt_series, angles_deg, nz, x0, center_offset)
    solver = TVSolver(A, lam=lam, nonneg=nonneg, tv=tv, n_inner=n_inner)
    Ax = None
    if not given:
        Ax = solver.zero_reprojection()
    solver.run(b, x, n_iter, callback=callback, Ax=Ax)
    return solver.result if return_result else x


def denoise_tv(image, weight, *, n_iter=100, tv="2d", nonneg=False):
    """Isotropic-TV denoising, the prox used inside :func:`tv`: Chambolle's (2004) algorithm.

    ``u = argmin_{u in K} 1/2 ||u - f||^2 + weight * TV(u)`` (``K = {u >= 0}`` if ``nonneg``),
    forward differences, Neumann boundary, ``n_iter`` dual iterations from a zero dual with
    step ``tau = 1/4`` (2-D) or ``1/6`` (3-D).

    Parameters
    ----------
    image : array_like, shape (nz, nx) or (ny, nz, nx)
        A 2-D image is one slice.
    weight : float >= 0
        Same convention as ``skimage.restoration.denoise_tv_chambolle(image, weight)``
        (whose ``max_num_iter = n`` equals ``n_iter = n - 1`` here, with ``eps = 0``).
    n_iter : int >= 0
    tv : {"2d", "3d"}
        ``"2d"``: every ``(nz, nx)`` slice separately; ``"3d"``: also along the first axis.
    nonneg : bool

    Returns
    -------
    ndarray, float32, same shape as ``image``.
    """
    _check_tv_kind(tv)
    weight = as_finite_float(weight, "weight", minimum=0.0)
    n_iter = check_n_iter(n_iter)
    arr = np.asarray(image)
    if arr.ndim not in (2, 3):
        raise ValueError(f"image must be 2-D or 3-D, got shape {arr.shape}")
    f = as_float32_array(arr if arr.ndim == 3 else arr[None], 3, "image")
    u = np.empty_like(f)
    if weight == 0.0:
        _kv.copy3(u, f)
        if nonneg:
            _kv.clip_nonneg(u)
    elif tv == "3d":
        p = np.zeros((f.shape[0], 3) + f.shape[1:], np.float32)
        _ktv.chambolle_3d(f, p, u, weight, 1.0 / 6.0, n_iter, bool(nonneg))
    else:
        p = np.zeros((f.shape[0], 2) + f.shape[1:], np.float32)
        _ktv.chambolle_2d(f, p, u, weight, 0.25, n_iter, bool(nonneg),
                          np.empty(f.shape[0], np.float64))
    return u if arr.ndim == 3 else u[0]


__all__ = ["tv", "TVSolver", "MFISTA", "denoise_tv"]
