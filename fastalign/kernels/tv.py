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

2-D TV, one sweep per slice: all inner iterations of a slice run inside one ``prange``
iteration as a wavefront over rows (:func:`_prox_slice`): iteration ``t`` trails iteration
``t - 1`` by one row, so a slice's input and dual are read and written once per prox while the
live rows (``n_inner + 2`` dual rows, ring buffers of ``f`` and ``u`` rows, about 100 kB for
``nx = 512``) stay in the L2 cache; the arithmetic is the same as ``n_inner`` full sweeps.  The
row loops are unit-stride, branch-free (boundary columns and rows handled outside them), in
float32 with float32 scalars and one reciprocal per element, so they vectorise.
:func:`fista_prox_2d` also forms the prox input ``f = y - step * grad`` (with the FISTA momentum
point ``y`` itself a combination of two iterates) row by row, so ``f`` and ``y`` are never
stored.

3-D TV couples slices, so each inner iteration is two parallel passes over slices (``u``, then
``p``).  Every element is written by one thread and the operation order does not depend on the
thread count: results are bit-identical.
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


# --------------------------------------------------------------------------- 2-D rows
# Row kernels: unit stride, no branch in the inner loops (boundary columns handled outside),
# float32 arithmetic with float32 scalars, so that they vectorise.

@jit
def _f_row(base, pa, qa, coef, g, step, out):
    """``out = (base + coef (pa - qa)) - step g`` for one row (the FISTA forward step)."""
    for ix in range(out.shape[0]):
        yv = base[ix] + coef * (pa[ix] - qa[ix])
        out[ix] = yv - step * g[ix]


@jit
def _u_row(fr, pxr, pzr, pzm, w, lo, out):
    """``out = max(fr - w div p, lo)`` for one row; ``pzm`` is the previous row's ``p_z``, or
    None for the first row (``p_z[-1] = 0``)."""
    nx = fr.shape[0]
    if pzm is None:
        out[0] = max(fr[0] - w * (pxr[0] + pzr[0]), lo)
        for ix in range(1, nx):
            d = pxr[ix] + pzr[ix]
            d -= pxr[ix - 1]
            out[ix] = max(fr[ix] - w * d, lo)
    else:
        out[0] = max(fr[0] - w * (pxr[0] + pzr[0] - pzm[0]), lo)
        for ix in range(1, nx):
            d = pxr[ix] + pzr[ix] - pzm[ix]
            d -= pxr[ix - 1]
            out[ix] = max(fr[ix] - w * d, lo)


@jit
def _p_row(ur, un, pxr, pzr, k):
    """Dual update of one row from ``grad u`` (``k = tau / w``); ``un`` is the next row of
    ``u``, or None for the last row (``g_z = 0``).  The last column has ``g_x = 0``."""
    one = np.float32(1.0)
    nx = ur.shape[0]
    if un is None:
        for ix in range(nx - 1):
            gx = ur[ix + 1] - ur[ix]
            s = one / (one + k * abs(gx))
            pxr[ix] = (pxr[ix] - k * gx) * s
            pzr[ix] = pzr[ix] * s
    else:
        for ix in range(nx - 1):
            gx = ur[ix + 1] - ur[ix]
            gz = un[ix] - ur[ix]
            s = one / (one + k * np.sqrt(gx * gx + gz * gz))
            pxr[ix] = (pxr[ix] - k * gx) * s
            pzr[ix] = (pzr[ix] - k * gz) * s
        gz = un[nx - 1] - ur[nx - 1]
        s = one / (one + k * abs(gz))
        pxr[nx - 1] = pxr[nx - 1] * s
        pzr[nx - 1] = (pzr[nx - 1] - k * gz) * s


@jit
def _level_row(fr, pxr, pzr, pxm, pzm, um, ur, w, lo, k):
    """:func:`_u_row` of row ``r`` into ``ur`` fused with :func:`_p_row` of row ``r - 1``
    (dual ``pxm, pzm``, primal ``um``): column ``ix`` of the new row is computed from the old
    ``pzm[ix]`` just before the dual update overwrites it.  Same operations as the two
    separate sweeps, one pass over the rows."""
    one = np.float32(1.0)
    nx = fr.shape[0]
    if nx == 1:
        _u_row(fr, pxr, pzr, pzm, w, lo, ur)
        _p_row(um, ur, pxm, pzm, k)
        return
    # column 0 (no p_x[-1])
    v = max(fr[0] - w * (pxr[0] + pzr[0] - pzm[0]), lo)
    ur[0] = v
    gx = um[1] - um[0]
    gz = v - um[0]
    s = one / (one + k * np.sqrt(gx * gx + gz * gz))
    pxm[0] = (pxm[0] - k * gx) * s
    pzm[0] = (pzm[0] - k * gz) * s
    for ix in range(1, nx - 1):
        d = pxr[ix] + pzr[ix] - pzm[ix]
        d -= pxr[ix - 1]
        v = max(fr[ix] - w * d, lo)
        ur[ix] = v
        gx = um[ix + 1] - um[ix]
        gz = v - um[ix]
        s = one / (one + k * np.sqrt(gx * gx + gz * gz))
        pxm[ix] = (pxm[ix] - k * gx) * s
        pzm[ix] = (pzm[ix] - k * gz) * s
    # column nx - 1 (g_x = 0)
    ix = nx - 1
    d = pxr[ix] + pzr[ix] - pzm[ix]
    d -= pxr[ix - 1]
    v = max(fr[ix] - w * d, lo)
    ur[ix] = v
    gz = v - um[ix]
    s = one / (one + k * abs(gz))
    pxm[ix] = pxm[ix] * s
    pzm[ix] = (pzm[ix] - k * gz) * s


@jit
def _row_tv(ur, un):
    """``sum_x |grad u|`` over one row (2-D forward differences, float64); ``un`` is the next
    row, or None for the last row."""
    nx = ur.shape[0]
    s = 0.0
    if un is None:
        for ix in range(nx - 1):
            s += abs(np.float64(ur[ix + 1]) - ur[ix])
    else:
        for ix in range(nx - 1):
            gx = np.float64(ur[ix + 1]) - ur[ix]
            gz = np.float64(un[ix]) - ur[ix]
            s += np.sqrt(gx * gx + gz * gz)
        s += abs(np.float64(un[nx - 1]) - ur[nx - 1])
    return s


@jit
def _prox_slice(base, pa, qa, coef, g, step, fused, pz, px, u, w, k, n_inner, lo):
    """Prox of one slice (all arrays ``(nz, nx)``, scalars float32); returns ``TV(u)``.

    ``f = (base + coef (pa - qa)) - step g`` if ``fused`` else ``f = base``.  Levels
    ``t = 0 .. n_inner - 1`` are the dual iterations, level ``n_inner`` the final primal pass.
    Level ``t`` at step ``j`` computes row ``j + 1`` of its ``u`` (from the ``p`` rows ``j``,
    ``j + 1`` of level ``t - 1``), then the dual row ``j`` (from its ``u`` rows ``j, j + 1``).
    Sweeping a global step ``s`` with level ``t`` at step ``j = s - t - 1``, levels in
    increasing order, meets every dependency, so the results equal ``n_inner`` full sweeps
    while only ``n_inner + 2`` rows of ``p`` are live: the slice is read and written once.
    Scratch: the last ``n_inner + 1`` rows of ``f`` and two rows of ``u`` per level.
    """
    nz, nx = u.shape
    nf = n_inner + 1
    fbuf = np.empty((nf, nx), np.float32)
    ubuf = np.empty((max(n_inner, 1), 2, nx), np.float32)
    tv = 0.0
    for s in range(nz + n_inner + 1):
        if s < nz:                                   # new input row
            if fused:
                _f_row(base[s], pa[s], qa[s], coef, g[s], step, fbuf[s % nf])
            else:
                fbuf[s % nf, :] = base[s]
        for t in range(max(0, s - nz), min(s, n_inner) + 1):
            r = s - t                 # level t: u row r (if r < nz), then dual row r - 1
            if t < n_inner and 0 < r < nz:          # the common case: one fused sweep
                _level_row(fbuf[r % nf], px[r], pz[r], px[r - 1], pz[r - 1],
                           ubuf[t, (r - 1) % 2], ubuf[t, r % 2], w, lo, k)
                continue
            final = t == n_inner
            if r < nz:
                ur = u[r] if final else ubuf[t, r % 2]
                if r == 0:
                    _u_row(fbuf[r % nf], px[r], pz[r], None, w, lo, ur)
                else:
                    _u_row(fbuf[r % nf], px[r], pz[r], pz[r - 1], w, lo, ur)
            j = r - 1
            if j >= 0:
                if final:
                    if j + 1 < nz:
                        tv += _row_tv(u[j], u[j + 1])
                    else:
                        tv += _row_tv(u[j], None)
                else:                                # last row (j + 1 == nz)
                    _p_row(ubuf[t, j % 2], None, px[j], pz[j], k)
    return tv


@jit(parallel=True)
def chambolle_2d(f, p, u, w, tau, n_inner, nonneg, tv_out):
    """Per-slice 2-D TV prox of every slice of ``f (ny, nz, nx)`` into ``u``; dual ``p
    (ny, 2, nz, nx)`` is read as warm start and updated in place.  ``w > 0``.
    ``tv_out[y]`` (float64) receives the 2-D TV of ``u[y]``; reduce it serially."""
    w32 = np.float32(w)
    k32 = np.float32(tau / w)
    lo = np.float32(0.0) if nonneg else np.float32(-np.inf)
    zero = np.float32(0.0)
    for y in prange(f.shape[0]):
        fy = f[y]
        tv_out[y] = _prox_slice(fy, fy, fy, zero, fy, zero, False, p[y, 0], p[y, 1], u[y],
                                w32, k32, n_inner, lo)


@jit(parallel=True)
def fista_prox_2d(base, pa, qa, coef, g, step, p, u, w, tau, n_inner, nonneg, tv_out):
    """:func:`chambolle_2d` of ``f = (base + coef (pa - qa)) - step g`` without storing ``f``:
    the FISTA extrapolation, forward step and prox in one pass over the slices (all volumes
    ``(ny, nz, nx)``, float32).  ``u`` must not alias the inputs."""
    w32 = np.float32(w)
    k32 = np.float32(tau / w)
    lo = np.float32(0.0) if nonneg else np.float32(-np.inf)
    c32 = np.float32(coef)
    s32 = np.float32(step)
    for y in prange(u.shape[0]):
        tv_out[y] = _prox_slice(base[y], pa[y], qa[y], c32, g[y], s32, True, p[y, 0],
                                p[y, 1], u[y], w32, k32, n_inner, lo)


@jit
def _u_slice_3d(f, p, u, y, w, lo):
    """Slice ``y`` of ``u = max(f - w div p, lo)`` with the 3-D divergence (float32)."""
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
        d = pxr[0] + pzr[0] - sz * pzm[0] + pyr[0] - sy * pymr[0]
        ur[0] = max(fr[0] - w * d, lo)
        for ix in range(1, nx):
            d = pxr[ix] + pzr[ix] - sz * pzm[ix] + pyr[ix] - sy * pymr[ix]
            d -= pxr[ix - 1]
            ur[ix] = max(fr[ix] - w * d, lo)


@jit
def _p_slice_3d(u, p, y, k):
    """Dual update of slice ``y`` from the 3-D forward-difference gradient of ``u``.  At the
    last row (slice) the row (slice) itself stands in for the next one, so that the difference
    is exactly 0 without a branch in the inner loop."""
    ny, nz, nx = u.shape
    one = np.float32(1.0)
    us = u[y]
    un = u[_next_index(y, ny)]
    pz = p[y, 0]
    px = p[y, 1]
    py = p[y, 2]
    for iz in range(nz):
        ur = us[iz]
        uz = us[_next_index(iz, nz)]
        uy = un[iz]
        pxr = px[iz]
        pzr = pz[iz]
        pyr = py[iz]
        for ix in range(nx - 1):
            gx = ur[ix + 1] - ur[ix]
            gz = uz[ix] - ur[ix]
            gy = uy[ix] - ur[ix]
            s = one / (one + k * np.sqrt(gx * gx + gz * gz + gy * gy))
            pxr[ix] = (pxr[ix] - k * gx) * s
            pzr[ix] = (pzr[ix] - k * gz) * s
            pyr[ix] = (pyr[ix] - k * gy) * s
        ix = nx - 1
        gz = uz[ix] - ur[ix]
        gy = uy[ix] - ur[ix]
        s = one / (one + k * np.sqrt(gz * gz + gy * gy))
        pxr[ix] = pxr[ix] * s
        pzr[ix] = (pzr[ix] - k * gz) * s
        pyr[ix] = (pyr[ix] - k * gy) * s


@jit(parallel=True)
def chambolle_3d(f, p, u, w, tau, n_inner, nonneg):
    """3-D TV prox of the volume ``f (ny, nz, nx)`` into ``u``; dual ``p (ny, 3, nz, nx)``
    is read as warm start and updated in place.  ``w > 0``."""
    ny = f.shape[0]
    w32 = np.float32(w)
    k32 = np.float32(tau / w)
    lo = np.float32(0.0) if nonneg else np.float32(-np.inf)
    for _ in range(n_inner):
        for y in prange(ny):
            _u_slice_3d(f, p, u, y, w32, lo)
        for y in prange(ny):
            _p_slice_3d(u, p, y, k32)
    for y in prange(ny):
        _u_slice_3d(f, p, u, y, w32, lo)


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
            for iz in range(nz - 1):
                s += _row_tv(us[iz], us[iz + 1])
            s += _row_tv(us[nz - 1], None)
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
