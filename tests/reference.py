"""Slow, obviously correct references for the tests (pure Python/NumPy, float64).

Joseph's projector for one ``(nz, nx)`` slice, written straight from DESIGN.md:

* pixel ``(iz, ix)`` has centre ``x = ix - (nx-1)/2``, ``z = iz - (nz-1)/2``;
* the detector has ``nb`` bins (default ``nx``); bin ``t`` is at
  ``u = t - ((nb-1)/2 + center_offset)``;
* the ray of bin ``t`` at angle ``th`` is the line ``x cos(th) + z sin(th) = u``;
* if ``|cos| >= |sin|`` the ray visits every row ``iz``, finds its x there and linearly
  interpolates between the two neighbouring pixels of that row; otherwise it visits every
  column ``ix`` and interpolates along z.  Samples outside the slice are zero.  The sum is
  weighted by the step length along the ray, ``1/|cos|`` (or ``1/|sin|``).

The transpose is taken from the explicit system matrix, so it is the transpose by construction.

Also: Chambolle's TV prox by full sweeps and the ROF objective (``fastalign.kernels.tv``), and
the Fourier-shift kernels of ``fastalign.kernels.shift`` (cross-power spectra, phase ramps)
written one element at a time in complex128.
"""
import math

import numpy as np


def ray_weights(theta_deg, t, nz, nx, center_offset=0.0, nb=None):
    """Pixels and weights of one ray (bin ``t`` of ``nb`` detector bins, default ``nx``).

    Returns
    -------
    list of (iz, ix, w)
        The ray's value is ``sum(w * slice[iz, ix])``.  Entries may repeat a pixel.
    """
    th = math.radians(theta_deg)
    c, s = math.cos(th), math.sin(th)
    nb = nx if nb is None else nb
    u = t - ((nb - 1) / 2.0 + center_offset)
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


def forward_slice(sl, angles_deg, center_offset=0.0, nb=None):
    """Joseph projection of one slice, one ray at a time.

    Parameters
    ----------
    sl : array_like, shape (nz, nx)
    angles_deg : sequence of float
    center_offset : float
    nb : int, optional
        Detector bins (default ``nx``).

    Returns
    -------
    sino : ndarray, float64, shape (n_angles, nb)
    """
    sl = np.asarray(sl, dtype=np.float64)
    nz, nx = sl.shape
    nb = nx if nb is None else nb
    sino = np.zeros((len(angles_deg), nb))
    for a, th in enumerate(angles_deg):
        for t in range(nb):
            sino[a, t] = sum(w * sl[iz, ix]
                             for iz, ix, w in ray_weights(th, t, nz, nx, center_offset, nb))
    return sino


def system_matrix(nz, nx, angles_deg, center_offset=0.0, nb=None):
    """Dense Joseph system matrix, ``sino.ravel() = M @ slice.ravel()``.

    Returns
    -------
    M : ndarray, float64, shape (n_angles * nb, nz * nx)
        Row ``a * nb + t`` is ray ``t`` at angle ``a`` (``nb`` detector bins, default
        ``nx``); column ``iz * nx + ix`` is pixel ``(iz, ix)``.  For tiny sizes only.
    """
    nb = nx if nb is None else nb
    M = np.zeros((len(angles_deg) * nb, nz * nx))
    for a, th in enumerate(angles_deg):
        for t in range(nb):
            for iz, ix, w in ray_weights(th, t, nz, nx, center_offset, nb):
                M[a * nb + t, iz * nx + ix] += w
    return M


def back_slice(sino, angles_deg, nz, center_offset=0.0, nx=None):
    """Transpose of :func:`forward_slice` via the explicit matrix.

    Parameters
    ----------
    sino : array_like, shape (n_angles, nb)
    angles_deg : sequence of float
    nz : int
    center_offset : float
    nx : int, optional
        Slice width (default: the detector's ``nb``).

    Returns
    -------
    slice : ndarray, float64, shape (nz, nx)
    """
    sino = np.asarray(sino, dtype=np.float64)
    nb = sino.shape[1]
    nx = nb if nx is None else nx
    M = system_matrix(nz, nx, angles_deg, center_offset, nb)
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


def rof_objective(u, f, w, three_d=False):
    """``1/2 ||u - f||^2 + w TV(u)`` in float64, isotropic TV with forward differences and a
    zero last difference (Neumann), over the last two axes (all axes when ``three_d``)."""
    u = np.asarray(u).astype(np.float64)
    axes = range(u.ndim) if three_d else range(u.ndim - 2, u.ndim)
    g2 = sum(np.diff(u, axis=a, append=u.take([-1], axis=a)) ** 2 for a in axes)
    return 0.5 * np.sum((u - f) ** 2) + w * np.sum(np.sqrt(g2))


def cross_power(B, P, axis):
    """Per-tilt cross-power spectrum and powers, summed over the other axis, one term at a time.

    Parameters
    ----------
    B, P : array_like, complex, shape (n, m, nf) for ``axis=2`` or (n, nf, m) for ``axis=1``
        Spectra of the measured and reprojected rows (``axis``: the frequency axis is the
        *other* one; ``axis=2`` means rows were transformed along x).
    axis : {1, 2}

    Returns
    -------
    C : ndarray, complex128, shape (n, nf)
        ``C[a, w] = sum_j B[a, j, w] conj(P[a, j, w])`` (``axis=2``) or
        ``sum_k B[a, w, k] conj(P[a, w, k])`` (``axis=1``).
    pb, pp : ndarray, float64, shape (n, nf)
        ``sum |B|^2`` and ``sum |P|^2`` over the same terms.
    """
    B = np.asarray(B, dtype=np.complex128)
    P = np.asarray(P, dtype=np.complex128)
    if axis == 1:  # frequency on axis 1, summed over axis 2: same as axis 2 on the transpose
        B, P = B.transpose(0, 2, 1), P.transpose(0, 2, 1)
    n, m, nf = B.shape
    C = np.zeros((n, nf), np.complex128)
    pb = np.zeros((n, nf))
    pp = np.zeros((n, nf))
    for a in range(n):
        for w in range(nf):
            for j in range(m):
                b, p = complex(B[a, j, w]), complex(P[a, j, w])
                C[a, w] += b * p.conjugate()
                pb[a, w] += abs(b) ** 2
                pp[a, w] += abs(p) ** 2
    return C, pb, pp


def phase_ramps(spec, sx, sy, Ny, Nx):
    """Translate images by ``(sx, sy)`` in the half-spectrum domain, one bin at a time.

    ``spec[a]`` is the ``rfft2`` of an ``(Ny, Nx)`` real image; bin ``(j, k)`` has the signed
    frequencies ``fy = fftfreq(Ny)[j]`` and ``fx = k / Nx`` (cycles per pixel) and is multiplied
    by ``exp(-2 pi i (fy sy + fx sx))``, so the image becomes ``img(x - sx, y - sy)``.  Along
    an even length the Nyquist bin (``fy = -1/2`` or ``fx = 1/2``) gets the real factor
    ``cos(pi s)`` for that axis instead (so the corner bin of two even lengths gets
    ``cos(pi sx) cos(pi sy)``).

    Returns
    -------
    out : ndarray, complex128, shape of ``spec``
    """
    out = np.array(spec, dtype=np.complex128)
    n, ny, nfx = out.shape
    fy = np.fft.fftfreq(Ny)
    for a in range(n):
        for j in range(ny):
            if Ny % 2 == 0 and j == Ny // 2:
                ey = math.cos(math.pi * sy[a])
            else:
                ey = np.exp(-2j * math.pi * fy[j] * sy[a])
            for k in range(nfx):
                if Nx % 2 == 0 and k == Nx // 2:
                    ex = math.cos(math.pi * sx[a])
                else:
                    ex = np.exp(-2j * math.pi * (k / Nx) * sx[a])
                out[a, j, k] *= ey * ex
    return out
