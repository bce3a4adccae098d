"""Slow, obviously correct references for the tests (pure Python/NumPy, float64).

Joseph's projector for one ``(nz, nx)`` slice, written straight from DESIGN.md:

* pixel ``(iz, ix)`` has centre ``x = ix - (nx-1)/2``, ``z = iz - (nz-1)/2``;
* the detector has ``nx`` bins; bin ``t`` is at ``u = t - ((nx-1)/2 + center_offset)``;
* the ray of bin ``t`` at angle ``th`` is the line ``x cos(th) + z sin(th) = u``;
* if ``|cos| >= |sin|`` the ray visits every row ``iz``, finds its x there and linearly
  interpolates between the two neighbouring pixels of that row; otherwise it visits every
  column ``ix`` and interpolates along z.  Samples outside the slice are zero.  The sum is
  weighted by the step length along the ray, ``1/|cos|`` (or ``1/|sin|``).

The transpose is taken from the explicit system matrix, so it is the transpose by construction.
"""
import math

import numpy as np


def ray_weights(theta_deg, t, nz, nx, center_offset=0.0):
    """Pixels and weights of one ray.

    Returns
    -------
    list of (iz, ix, w)
        The ray's value is ``sum(w * slice[iz, ix])``.  Entries may repeat a pixel.
    """
    th = math.radians(theta_deg)
    c, s = math.cos(th), math.sin(th)
    u = t - ((nx - 1) / 2.0 + center_offset)
    out = []
    if abs(c) >= abs(s):  # z-major: one sample per row
        step = 1.0 / abs(c)
        for iz in range(nz):
            z = iz - (nz - 1) / 2.0
            x = (u - z * s) / c
            p = x + (nx - 1) / 2.0  # fractional column index
            i0 = math.floor(p)
            f = p - i0
            if 0 <= i0 < nx:
                out.append((iz, i0, (1.0 - f) * step))
            if 0 <= i0 + 1 < nx:
                out.append((iz, i0 + 1, f * step))
    else:  # x-major: one sample per column
        step = 1.0 / abs(s)
        for ix in range(nx):
            x = ix - (nx - 1) / 2.0
            z = (u - x * c) / s
            p = z + (nz - 1) / 2.0  # fractional row index
            i0 = math.floor(p)
            f = p - i0
            if 0 <= i0 < nz:
                out.append((i0, ix, (1.0 - f) * step))
            if 0 <= i0 + 1 < nz:
                out.append((i0 + 1, ix, f * step))
    return out


def forward_slice(sl, angles_deg, center_offset=0.0):
    """Joseph projection of one slice, one ray at a time.

    Parameters
    ----------
    sl : array_like, shape (nz, nx)
    angles_deg : sequence of float
    center_offset : float

    Returns
    -------
    sino : ndarray, float64, shape (n_angles, nx)
    """
    sl = np.asarray(sl, dtype=np.float64)
    nz, nx = sl.shape
    sino = np.zeros((len(angles_deg), nx))
    for a, th in enumerate(angles_deg):
        for t in range(nx):
            sino[a, t] = sum(w * sl[iz, ix]
                             for iz, ix, w in ray_weights(th, t, nz, nx, center_offset))
    return sino


def system_matrix(nz, nx, angles_deg, center_offset=0.0):
    """Dense Joseph system matrix, ``sino.ravel() = M @ slice.ravel()``.

    Returns
    -------
    M : ndarray, float64, shape (n_angles * nx, nz * nx)
        Row ``a * nx + t`` is ray ``t`` at angle ``a``; column ``iz * nx + ix`` is pixel
        ``(iz, ix)``.  For tiny sizes only.
    """
    M = np.zeros((len(angles_deg) * nx, nz * nx))
    for a, th in enumerate(angles_deg):
        for t in range(nx):
            for iz, ix, w in ray_weights(th, t, nz, nx, center_offset):
                M[a * nx + t, iz * nx + ix] += w
    return M


def back_slice(sino, angles_deg, nz, center_offset=0.0):
    """Transpose of :func:`forward_slice` via the explicit matrix.

    Parameters
    ----------
    sino : array_like, shape (n_angles, nx)
    angles_deg : sequence of float
    nz : int
    center_offset : float

    Returns
    -------
    slice : ndarray, float64, shape (nz, nx)
    """
    sino = np.asarray(sino, dtype=np.float64)
    nx = sino.shape[1]
    M = system_matrix(nz, nx, angles_deg, center_offset)
    return (M.T @ sino.ravel()).reshape(nz, nx)


def chambolle_2d(f, p, w, tau, n_iter, nonneg=False):
    """Chambolle's dual iteration for the 2-D isotropic-TV prox, full sweeps in float64.

    ``u = P_K(f - w div p)``; ``p <- (p - k grad u) / (1 + k |grad u|)``, ``k = tau / w``,
    with forward differences (zero in the last row / column) and ``div`` the backward
    difference (``p[-1] = 0``).  ``n_iter`` dual updates, then the final ``u``.

    Parameters
    ----------
    f : array_like, shape (nz, nx)
    p : array_like, shape (2, nz, nx)
        Initial dual, ``p[0]`` along z and ``p[1]`` along x (not modified).
    w, tau : float
    n_iter : int
    nonneg : bool
        ``K = {u >= 0}`` instead of all images.

    Returns
    -------
    u : ndarray, float64, shape (nz, nx)
    p : ndarray, float64, shape (2, nz, nx)
        The updated dual.
    tv : float
        ``sum |grad u|`` of the returned ``u``.
    """
    f = np.asarray(f, dtype=np.float64)
    p = np.array(p, dtype=np.float64)
    k = tau / w

    def grad(u):
        g = np.zeros((2,) + u.shape)
        g[0, :-1] = u[1:] - u[:-1]
        g[1, :, :-1] = u[:, 1:] - u[:, :-1]
        return g

    def primal(p):
        d = p[0] + p[1]
        d[1:] -= p[0, :-1]
        d[:, 1:] -= p[1, :, :-1]
        u = f - w * d
        return np.maximum(u, 0.0) if nonneg else u

    for _ in range(n_iter):
        g = grad(primal(p))
        p = (p - k * g) / (1.0 + k * np.sqrt(g[0] ** 2 + g[1] ** 2))
    u = primal(p)
    g = grad(u)
    return u, p, float(np.sum(np.sqrt(g[0] ** 2 + g[1] ** 2)))
