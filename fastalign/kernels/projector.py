"""Joseph's ray-driven parallel-beam projector and its exact transpose.

Geometry (DESIGN.md): a slice is ``(nz, nx)``; pixel ``(iz, ix)`` has centre
``x = ix - (nx-1)/2``, ``z = iz - (nz-1)/2``; detector bin ``t`` has coordinate
``u = t - cu`` with ``cu = (nb-1)/2 + center_offset`` and ``u = x cos(th) + z sin(th)``.

A ray steps along its major axis.  For ``|cos| >= |sin|`` ("z-major") it visits every row
``iz`` and linearly interpolates along x at ``p(t) = p0 + t*dp``; otherwise it visits every
column ``ix`` and interpolates along z (done on a transposed copy of the slice so that memory
access stays contiguous).  The step length ``1/|cos|`` (or ``1/|sin|``) weights each sample.

The backprojector scatters exactly the same weights.  Parallelism never lets two threads write
the same output element: the forward owns ``out[a, y, :]`` per (slice, angle); the transpose
owns a slice, or a row of a slice.  Each output element is produced by the same sequence of
floating-point operations whatever the thread count, so results are bit-identical.
"""
import numpy as np
from numba import prange

from .._config import jit


@jit
def _support(p0, dp, n, nt):
    """Conservative range ``[lo, hi)`` of t with ``p0 + t*dp`` in ``(-1, n)``.

    The loops keep their exact bounds checks, so widening by one on each side only costs time.
    """
    if dp > 0.0:
        a = (-1.0 - p0) / dp
        b = (n - p0) / dp
    else:
        a = (n - p0) / dp
        b = (-1.0 - p0) / dp
    lo = max(int(np.floor(a)) - 1, 0)
    hi = min(int(np.ceil(b)) + 2, nt)
    if hi < lo:
        hi = lo
    return lo, hi


@jit
def _lerp_gather(row, p0, dp, acc):
    """``acc[t] += linear interpolation of row at p0 + t*dp`` (zero outside the row)."""
    n = row.shape[0]
    lo, hi = _support(p0, dp, n, acc.shape[0])
    for t in range(lo, hi):
        p = p0 + t * dp
        fi = np.floor(p)
        i0 = int(fi)
        f = p - fi
        if i0 >= 0 and i0 < n:
            acc[t] += (1.0 - f) * row[i0]
        if i0 >= -1 and i0 < n - 1:
            acc[t] += f * row[i0 + 1]


@jit
def _lerp_scatter(buf, p0, dp, vals, w):
    """Transpose of :func:`_lerp_gather`: ``buf[i] += w * weight(i, t) * vals[t]``."""
    n = buf.shape[0]
    lo, hi = _support(p0, dp, n, vals.shape[0])
    for t in range(lo, hi):
        v = w * vals[t]
        if v == 0.0:
            continue
        p = p0 + t * dp
        fi = np.floor(p)
        i0 = int(fi)
        f = p - fi
        if i0 >= 0 and i0 < n:
            buf[i0] += (1.0 - f) * v
        if i0 >= -1 and i0 < n - 1:
            buf[i0 + 1] += f * v


@jit
def _ray_line(c, s, zmajor, k, nz, nx, cu):
    """Start, step and weight of the interpolation line for row/column ``k`` at one angle."""
    if zmajor:
        z = k - 0.5 * (nz - 1)
        return (-cu - z * s) / c + 0.5 * (nx - 1), 1.0 / c, 1.0 / abs(c)
    x = k - 0.5 * (nx - 1)
    return (-cu - x * c) / s + 0.5 * (nz - 1), 1.0 / s, 1.0 / abs(s)


@jit
def _forward_ray_set(sl, slT, c, s, zmajor, cu, out_row, acc):
    """All rays of one angle through one slice into ``out_row`` (float32)."""
    nz, nx = sl.shape
    acc[:] = 0.0
    w = 1.0
    if zmajor:
        for iz in range(nz):
            p0, dp, w = _ray_line(c, s, True, iz, nz, nx, cu)
            _lerp_gather(sl[iz], p0, dp, acc)
    else:
        for ix in range(nx):
            p0, dp, w = _ray_line(c, s, False, ix, nz, nx, cu)
            _lerp_gather(slT[ix], p0, dp, acc)
    for t in range(out_row.shape[0]):
        out_row[t] = acc[t] * w


@jit
def _transposed(sl, need):
    if need:
        return np.ascontiguousarray(sl.T)
    return np.empty((0, 0), dtype=sl.dtype)


@jit(parallel=True)
def forward_slices(vol, cosv, sinv, zmaj, cu, out):
    """Forward projection, parallel over slices y. ``vol (ny,nz,nx)``, ``out (na,ny,nb)``."""
    ny = vol.shape[0]
    na = cosv.shape[0]
    nb = out.shape[2]
    need_t = False
    for a in range(na):
        if not zmaj[a]:
            need_t = True
    for y in prange(ny):
        sl = vol[y]
        slT = _transposed(sl, need_t)
        acc = np.empty(nb, dtype=np.float64)
        for a in range(na):
            _forward_ray_set(sl, slT, cosv[a], sinv[a], zmaj[a], cu, out[a, y], acc)


@jit(parallel=True)
def forward_angles(vol, cosv, sinv, zmaj, cu, out):
    """Forward projection, slices in turn, parallel over angles (for few slices)."""
    ny = vol.shape[0]
    na = cosv.shape[0]
    nb = out.shape[2]
    need_t = False
    for a in range(na):
        if not zmaj[a]:
            need_t = True
    for y in range(ny):
        sl = vol[y]
        slT = _transposed(sl, need_t)
        for a in prange(na):
            acc = np.empty(nb, dtype=np.float64)
            _forward_ray_set(sl, slT, cosv[a], sinv[a], zmaj[a], cu, out[a, y], acc)


@jit
def _back_rows(proj, cosv, sinv, zmaj, cu, out2d, k, rowbuf, zmajor_pass):
    """Row ``k`` of the backprojection over the angles of one pass.

    ``zmajor_pass``: rows are z rows of the slice ``(nz, nx)`` and z-major angles are used;
    otherwise rows are x columns (of the transposed slice ``(nx, nz)``) and x-major angles.
    """
    if zmajor_pass:
        nz = out2d.shape[0]
        nx = out2d.shape[1]
    else:
        nx = out2d.shape[0]
        nz = out2d.shape[1]
    rowbuf[:] = 0.0
    for a in range(cosv.shape[0]):
        if zmaj[a] == zmajor_pass:
            p0, dp, w = _ray_line(cosv[a], sinv[a], zmajor_pass, k, nz, nx, cu)
            _lerp_scatter(rowbuf, p0, dp, proj[a], w)
    row = out2d[k]
    for i in range(row.shape[0]):
        row[i] = rowbuf[i]


@jit
def _combine(sl, slT, k):
    """``sl[k, :] += slT[:, k]``: add the x-major pass into the z-major pass."""
    for ix in range(sl.shape[1]):
        sl[k, ix] += slT[ix, k]


@jit(parallel=True)
def back_slices(proj, cosv, sinv, zmaj, cu, out):
    """Backprojection, parallel over slices. ``proj (na,ny,nb)``, ``out (ny,nz,nx)``."""
    ny, nz, nx = out.shape
    na = cosv.shape[0]
    any_x = False
    for a in range(na):
        if not zmaj[a]:
            any_x = True
    for y in prange(ny):
        py = proj[:, y, :]
        sl = out[y]
        rowbuf = np.empty(nx, dtype=np.float64)
        for iz in range(nz):
            _back_rows(py, cosv, sinv, zmaj, cu, sl, iz, rowbuf, True)
        if any_x:
            slT = np.empty((nx, nz), dtype=out.dtype)
            colbuf = np.empty(nz, dtype=np.float64)
            for ix in range(nx):
                _back_rows(py, cosv, sinv, zmaj, cu, slT, ix, colbuf, False)
            for iz in range(nz):
                _combine(sl, slT, iz)


@jit(parallel=True)
def back_rows(proj, cosv, sinv, zmaj, cu, out):
    """Backprojection, slices in turn, parallel over rows of a slice (for few slices)."""
    ny, nz, nx = out.shape
    na = cosv.shape[0]
    any_x = False
    for a in range(na):
        if not zmaj[a]:
            any_x = True
    slT = np.empty((nx, nz), dtype=out.dtype)
    for y in range(ny):
        py = proj[:, y, :]
        sl = out[y]
        for iz in prange(nz):
            rowbuf = np.empty(nx, dtype=np.float64)
            _back_rows(py, cosv, sinv, zmaj, cu, sl, iz, rowbuf, True)
        if any_x:
            for ix in prange(nx):
                colbuf = np.empty(nz, dtype=np.float64)
                _back_rows(py, cosv, sinv, zmaj, cu, slT, ix, colbuf, False)
            for iz in prange(nz):
                _combine(sl, slT, iz)
