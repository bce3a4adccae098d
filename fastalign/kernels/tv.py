"""Chambolle's (2004) dual projection algorithm for the isotropic-TV prox, and the TV value.

Problem (per slice for 2-D TV, on the whole volume for 3-D TV)::

    u = argmin_{u in K}  1/2 ||u - f||^2 + w * TV(u),   TV(u) = sum |grad u|_2

with forward differences and a Neumann boundary (the last difference along each axis is 0),
``K`` = all images, or the non-negative ones when ``nonneg``.  With the normalised dual field
``p`` (``|p| <= 1`` pointwise), one iteration is::

    u <- P_K(f - w div p)
    p <- (p - (tau/w) grad u) / (1 + (tau/w) |grad u|)

and the result is ``u = P_K(f - w div p)``.  For ``K`` = all images this is exactly Chambolle's
semi-implicit scheme (``tau <= 1/4`` in 2-D, ``1/6`` in 3-D, the values scikit-image uses);
with ``P_K`` inside it is the constrained dual of Beck & Teboulle (2009), whose fixed points are
the constrained minimiser.  ``div`` is the negative adjoint of ``grad``.

Layout: ``f, u`` are ``(ny, nz, nx)``; the dual is ``p (ny, ndim, nz, nx)`` with ``p[:, 0]``
along z, ``p[:, 1]`` along x and (3-D only) ``p[:, 2]`` along y, so that each slice's dual is
contiguous.  ``u`` must not alias ``f``.

Parallelism: 2-D TV runs all inner iterations of one slice inside one ``prange`` iteration (the
slice stays in cache; one fused pass per inner iteration: computing row ``iz+1`` of ``u`` is
followed by the dual update of row ``iz``).  3-D TV couples slices, so each inner iteration is two
parallel passes over slices (``u``, then ``p``).  Every element is written by one thread and the
operation order does not depend on the thread count: results are bit-identical.
"""
import numpy as np
from numba import prange

from .._config import jit


@jit
def _next_index(y, n):
    """``y + 1``, clamped to ``n - 1`` (int64 whatever the type of the loop index)."""
    yi = np.int64(y)
    if yi + 1 < n:
        return yi + 1
    return yi


@jit
def _u_row(f, pz, px, u, iz, w, nonneg):
    """``u[iz] = P_K(f[iz] - w * div p)[iz]`` for one row of a slice (2-D divergence)."""
    nx = f.shape[1]
    fr = f[iz]
    ur = u[iz]
    pxr = px[iz]
    pzr = pz[iz]
    if iz > 0:
        pzm = pz[iz - 1]
        for ix in range(nx):
            d = pxr[ix] + pzr[ix] - pzm[ix]
            if ix > 0:
                d -= pxr[ix - 1]
            v = fr[ix] - w * d
            if nonneg and v < 0.0:
                v = 0.0
            ur[ix] = v
    else:
        for ix in range(nx):
            d = pxr[ix] + pzr[ix]
            if ix > 0:
                d -= pxr[ix - 1]
            v = fr[ix] - w * d
            if nonneg and v < 0.0:
                v = 0.0
            ur[ix] = v


@jit
def _p_row(u, pz, px, iz, k):
    """Dual update of row ``iz`` of a slice from ``grad u`` (2-D), ``k = tau / w``."""
    nz, nx = u.shape
    ur = u[iz]
    pxr = px[iz]
    pzr = pz[iz]
    if iz < nz - 1:
        un = u[iz + 1]
        for ix in range(nx - 1):
            gx = ur[ix + 1] - ur[ix]
            gz = un[ix] - ur[ix]
            s = 1.0 / (1.0 + k * np.sqrt(gx * gx + gz * gz))
            pxr[ix] = (pxr[ix] - k * gx) * s
            pzr[ix] = (pzr[ix] - k * gz) * s
        gz = un[nx - 1] - ur[nx - 1]
        s = 1.0 / (1.0 + k * abs(gz))
        pxr[nx - 1] = pxr[nx - 1] * s
        pzr[nx - 1] = (pzr[nx - 1] - k * gz) * s
    else:
        for ix in range(nx - 1):
            gx = ur[ix + 1] - ur[ix]
            s = 1.0 / (1.0 + k * abs(gx))
            pxr[ix] = (pxr[ix] - k * gx) * s
            pzr[ix] = pzr[ix] * s


@jit
def _row_tv(u, iz):
    """``sum_x |grad u|`` over row ``iz`` of a slice (2-D forward differences, float64)."""
    nz, nx = u.shape
    ur = u[iz]
    s = 0.0
    if iz < nz - 1:
        un = u[iz + 1]
        for ix in range(nx - 1):
            gx = np.float64(ur[ix + 1]) - ur[ix]
            gz = np.float64(un[ix]) - ur[ix]
            s += np.sqrt(gx * gx + gz * gz)
        s += abs(np.float64(un[nx - 1]) - ur[nx - 1])
    else:
        for ix in range(nx - 1):
            s += abs(np.float64(ur[ix + 1]) - ur[ix])
    return s


@jit
def _chambolle_slice(f, pz, px, u, w, tau, n_inner, nonneg):
    """``n_inner`` fused dual iterations on one slice, then ``u = P_K(f - w div p)``.

    Returns the 2-D TV of the result (accumulated in the final pass, no extra sweep)."""
    nz = f.shape[0]
    k = tau / w
    for _ in range(n_inner):
        _u_row(f, pz, px, u, 0, w, nonneg)
        for iz in range(nz):
            if iz + 1 < nz:
                _u_row(f, pz, px, u, iz + 1, w, nonneg)
            _p_row(u, pz, px, iz, k)
    _u_row(f, pz, px, u, 0, w, nonneg)
    s = 0.0
    for iz in range(nz):
        if iz + 1 < nz:
            _u_row(f, pz, px, u, iz + 1, w, nonneg)
        s += _row_tv(u, iz)
    return s


@jit(parallel=True)
def chambolle_2d(f, p, u, w, tau, n_inner, nonneg, tv_out):
    """Per-slice 2-D TV prox of every slice of ``f (ny, nz, nx)`` into ``u``; dual ``p
    (ny, 2, nz, nx)`` is read as warm start and updated in place.  ``w > 0``.
    ``tv_out[y]`` (float64) receives the 2-D TV of ``u[y]``; reduce it serially."""
    for y in prange(f.shape[0]):
        tv_out[y] = _chambolle_slice(f[y], p[y, 0], p[y, 1], u[y], w, tau, n_inner, nonneg)


@jit
def _u_slice_3d(f, p, u, y, w, nonneg):
    """Slice ``y`` of ``u = P_K(f - w div p)`` with the 3-D divergence."""
    nz, nx = f.shape[1], f.shape[2]
    yi = np.int64(y)
    fs = f[yi]
    us = u[yi]
    pz = p[yi, 0]
    px = p[yi, 1]
    py = p[yi, 2]
    pym = p[yi - 1 if yi > 0 else yi, 2]
    sy = np.float32(1.0) if yi > 0 else np.float32(0.0)  # p_y[-1] = 0
    for iz in range(nz):
        fr = fs[iz]
        ur = us[iz]
        pxr = px[iz]
        pzr = pz[iz]
        pzm = pz[iz - 1 if iz > 0 else iz]
        sz = np.float32(1.0) if iz > 0 else np.float32(0.0)
        pyr = py[iz]
        pymr = pym[iz]
        for ix in range(nx):
            d = pxr[ix] + pzr[ix] - sz * pzm[ix] + pyr[ix] - sy * pymr[ix]
            if ix > 0:
                d -= pxr[ix - 1]
            v = fr[ix] - w * d
            if nonneg and v < 0.0:
                v = 0.0
            ur[ix] = v


@jit
def _p_slice_3d(u, p, y, k):
    """Dual update of slice ``y`` from the 3-D forward-difference gradient of ``u``."""
    ny, nz, nx = u.shape
    us = u[y]
    last_y = y == ny - 1
    un = u[_next_index(y, ny)]
    pz = p[y, 0]
    px = p[y, 1]
    py = p[y, 2]
    for iz in range(nz):
        ur = us[iz]
        for ix in range(nx):
            gx = 0.0
            if ix < nx - 1:
                gx = ur[ix + 1] - ur[ix]
            gz = 0.0
            if iz < nz - 1:
                gz = us[iz + 1, ix] - ur[ix]
            gy = 0.0
            if not last_y:
                gy = un[iz, ix] - ur[ix]
            s = 1.0 / (1.0 + k * np.sqrt(gx * gx + gz * gz + gy * gy))
            px[iz, ix] = (px[iz, ix] - k * gx) * s
            pz[iz, ix] = (pz[iz, ix] - k * gz) * s
            py[iz, ix] = (py[iz, ix] - k * gy) * s


@jit(parallel=True)
def chambolle_3d(f, p, u, w, tau, n_inner, nonneg):
    """3-D TV prox of the volume ``f (ny, nz, nx)`` into ``u``; dual ``p (ny, 3, nz, nx)``
    is read as warm start and updated in place.  ``w > 0``."""
    ny = f.shape[0]
    k = tau / w
    for _ in range(n_inner):
        for y in prange(ny):
            _u_slice_3d(f, p, u, y, w, nonneg)
        for y in prange(ny):
            _p_slice_3d(u, p, y, k)
    for y in prange(ny):
        _u_slice_3d(f, p, u, y, w, nonneg)


@jit(parallel=True)
def tv_value(u, three_d, rowsum):
    """Isotropic TV per slice: ``rowsum[y] = sum_{z,x} |grad u|`` (float64; the y difference
    ``u[y+1] - u[y]`` is included when ``three_d``).  Reduce ``rowsum`` serially.  The 2-D
    value is summed row by row exactly as :func:`chambolle_2d` reports it."""
    ny, nz, nx = u.shape
    for y in prange(ny):
        us = u[y]
        s = 0.0
        if not three_d:
            for iz in range(nz):
                s += _row_tv(us, iz)
            rowsum[y] = s
            continue
        un = u[_next_index(y, ny)]
        use_y = y < ny - 1
        for iz in range(nz):
            ur = us[iz]
            for ix in range(nx):
                gx = 0.0
                if ix < nx - 1:
                    gx = np.float64(ur[ix + 1]) - ur[ix]
                gz = 0.0
                if iz < nz - 1:
                    gz = np.float64(us[iz + 1, ix]) - ur[ix]
                gy = 0.0
                if use_y:
                    gy = np.float64(un[iz, ix]) - ur[ix]
                s += np.sqrt(gx * gx + gz * gz + gy * gy)
        rowsum[y] = s
