"""Tilt-axis direction and rotation centre: model, resampling and estimators.

Model (all coordinates are 0-based pixel indices, ``x`` = column, ``y`` = row, image centre
``c = ((nx-1)/2, (ny-1)/2)``).  A measured image is the ideal projection (tilt axis along y
through column ``(nx-1)/2 + center_offset``, DESIGN.md) translated by the shift ``s = (dx, dy)``
and then rotated by the axis angle ``alpha`` about the image centre::

    measured(r) = ideal(R(alpha)^-1 (r - c) + c - s),     R(a) = [[cos a, -sin a],
                                                                 [sin a,  cos a]]

so the shifts are expressed in the *aligned* frame (along the tilt-axis normal and along the
tilt axis) and keep the DESIGN.md gauge (``a cos th + b sin th`` in dx, a constant in dy).

Sign of ``alpha``: positive turns the tilt axis (and the image content) counter-clockwise in the
``(x, y)`` index plane with ``y`` pointing *up*, as IMOD/3dmod display images (row 0 at the
bottom); with row 0 at the top (matplotlib ``imshow`` default) it looks clockwise.  This is
IMOD's tilt-axis rotation angle ("counterclockwise from the Y axis").

Aligning resamples the raw image once: ``aligned(r) = measured(R(alpha) (r - c + s) + c)``.
The IMOD ``.xf`` line of a tilt is then ``A = R(-alpha)`` and ``(DX, DY) = (-dx, -dy)``
(:func:`xf_matrices`).

Rotation centre.  With free per-tilt shifts a rotation-centre offset is exactly a constant
``dx`` common to all tilts; fastalign separates them by convention: the least-squares fit of
``c0 + a cos th + b sin th`` is taken out of dx, ``c0`` is added to the centre offset and the
sinusoid is the gauge (:func:`split_center`).

How well the angle is determined.  A residual in-plane rotation ``d`` moves content at
distance ``u`` from the axis by ``d u`` along the axis, so the information grows with the
object's width.  The reconstruction in the loop absorbs most of it: each slice is fitted on
its own, and the volume that best explains slightly rotated projections is nearly the
volume rotated about the beam axis.  Measured on the 61 x 48 x 64 phantom with a 5 deg axis
and a 10 px offset (an object 18 px wide): a residual 0.2 deg shows up in
:func:`rotation_update` as 0.005 deg after 100 SIRT iterations (2.7 %), and not at all
against an unconstrained least-squares volume.  The loop's steps therefore move the angle
slowly, their bias matters, and the reconstruction-free profile estimate
(:func:`profile_axis_angle`) carries most of the accuracy on small objects.  Over random
geometries (angle ``U[-5, 5]`` deg, offset ``U[-10, 10]`` px, ``bench/axis_sweep.py``) the
worst angle error was 0.03 deg when the object is at least 34 px wide (80 px detector, 61 or
41 tilts), and up to 0.26 deg for objects 18-20 px wide (64 px detector, offsets near 10 px),
where the loop moved the angle away from a profile estimate that was within 0.09 deg.
"""
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import scipy.ndimage as ndi
import scipy.sparse as sp

from .gauge import split_center
from .levels import bin_stack
from .shift import fourier_shift

__all__ = ["rotate_shift", "coarse_axis_angle", "rotation_update", "split_center",
           "xf_matrices"]


def _level_affine(alpha_rad, shifts_full, scale, full_shape):
    """Per-tilt ``(matrix, offset)`` for ``ndi.affine_transform`` on binned images.

    Level pixel ``j`` (x) covers full-resolution pixels ``f j .. f j + f - 1``, centre
    ``f j + (f - 1)/2``; the model is written in full-resolution coordinates.
    """
    fx, fy = scale
    ny, nx = full_shape
    cx, cy = 0.5 * (nx - 1), 0.5 * (ny - 1)
    ca, sa = np.cos(alpha_rad), np.sin(alpha_rad)
    # full-res (y, x) = S (y_l, x_l) + o
    S = np.array([fy, fx], dtype=np.float64)
    o = np.array([0.5 * (fy - 1), 0.5 * (fx - 1)])
    M = np.array([[ca, sa], [-sa, ca]])  # R(alpha) acting on (y, x) vectors
    Ml = M * S[None, :] / S[:, None]    # S^-1 M S
    out = []
    for sx, sy in shifts_full:
        # r_in = M (S r_l + o - c + s) + c ; r_l_in = S^-1 (r_in - o)
        t = M @ (o - np.array([cy, cx]) + np.array([sy, sx])) + np.array([cy, cx]) - o
        out.append((Ml, t / S))
    return out


def rotate_shift(stack, axis_angle_deg, shifts, *, order=3, scale=(1, 1), full_shape=None,
                 out=None):
    """Align a stack in one resampling: rotation by ``-alpha`` and translation by ``-s``.

    ``out[i](r) = stack[i](R(alpha) (r - c + s_i) + c)`` (module docstring).  With
    ``axis_angle_deg == 0`` this is exactly :func:`fastalign.fourier_shift` ``(stack, -shifts)``
    (band-limited, edge-replicating); otherwise one cubic B-spline interpolation per image
    (``scipy.ndimage.affine_transform``, ``order``, spline prefilter, ``mode="nearest"``, i.e.
    samples outside the image take the nearest edge value).

    Parameters
    ----------
    stack : ndarray, float32, shape (n, ny, nx)
    axis_angle_deg : float
    shifts : array_like, shape (n, 2)
        ``(dx, dy)`` in full-resolution pixels, aligned frame.
    order : int
        Spline order for the rotation (3: cubic).
    scale : (int, int)
        Binning ``(fx, fy)`` of ``stack`` relative to full resolution (internal use).
    full_shape : (int, int), optional
        Full-resolution ``(ny, nx)`` when ``stack`` is binned.
    out : ndarray, optional

    Returns
    -------
    ndarray, float32, shape (n, ny, nx)
    """
    stack = np.asarray(stack, dtype=np.float32)
    n, ny, nx = stack.shape
    s = np.asarray(shifts, dtype=np.float64).reshape(n, 2)
    fx, fy = scale
    if axis_angle_deg == 0.0:
        return fourier_shift(stack, -s / np.array([fx, fy], dtype=np.float64), out=out)
    if full_shape is None:
        full_shape = (ny * fy, nx * fx)
    if out is None:
        out = np.empty_like(stack)
    affine = _level_affine(np.deg2rad(axis_angle_deg), s, (fx, fy), full_shape)

    def one(i):
        m, t = affine[i]
        ndi.affine_transform(stack[i], m, offset=t, output=out[i], order=order,
                             mode="nearest", prefilter=order > 1)

    # one image per task: scipy.ndimage releases the GIL, and each image is computed alone,
    # so the result does not depend on the number of threads
    workers = min(numba.get_num_threads(), n)
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(one, range(n)))
    else:
        for i in range(n):
            one(i)
    return out


def _profile_operator(ny, nx, alpha_rad, n_bins, t0):
    """Sparse ``(n_bins, ny*nx)`` matrix summing pixels along lines normal to the axis.

    Pixel ``(y, x)`` has axis coordinate ``t = -(x - xc) sin a + (y - yc) cos a``; its value is
    split linearly between the two nearest bins ``t + t0``.
    """
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float64)
    t = -(xx - 0.5 * (nx - 1)) * np.sin(alpha_rad) + (yy - 0.5 * (ny - 1)) * np.cos(alpha_rad)
    t = t.ravel() + t0
    i0 = np.floor(t).astype(np.int64)
    w1 = t - i0
    cols = np.arange(ny * nx)
    rows = np.concatenate([i0, i0 + 1])
    vals = np.concatenate([1.0 - w1, w1])
    keep = (rows >= 0) & (rows < n_bins)
    return sp.csr_matrix((vals[keep], (rows[keep], np.concatenate([cols, cols])[keep])),
                         shape=(n_bins, ny * nx))


def _profile_score(flat, ny, nx, alpha_rad):
    """Spread of the tilts' axis-profile amplitude spectra (shift invariant)."""
    n_bins = int(np.ceil(np.hypot(ny, nx))) + 4
    t0 = 0.5 * n_bins
    prof = np.asarray((_profile_operator(ny, nx, alpha_rad, n_bins, t0) @ flat.T).T)
    prof -= prof.mean(axis=1, keepdims=True)
    amp = np.abs(np.fft.rfft(prof, n=2 * n_bins, axis=1))[:, 1:]
    norm = np.sqrt((amp ** 2).sum(axis=1, keepdims=True))
    amp /= np.where(norm > 0, norm, 1.0)
    return float(((amp - amp.mean(axis=0)) ** 2).sum())


def coarse_axis_angle(tilt_series, angles_deg=None, *, search_deg=10.0, step_deg=0.25,
                      max_size=128, window=None):
    """Axis angle from the tilt invariance of the profiles along the tilt axis (no recon).

    Integrating an ideal projection along x gives the object's mass per row, whatever the
    tilt; integrating a rotated projection along the direction normal to the *true* axis does
    the same.  For each candidate angle, every image is summed along lines normal to the
    candidate axis (linear splatting), and the amplitude spectra of the profiles (insensitive
    to the unknown shifts) are compared across tilts; the angle with the smallest spread wins
    (grid search, then a parabola through the best three points).

    Parameters
    ----------
    tilt_series : ndarray, shape (n_tilts, ny, nx)
    angles_deg : array_like, optional
        Unused (the criterion needs no tilt angles); accepted for a uniform signature.
    search_deg : float
        Candidates in ``[-search_deg, search_deg]`` degrees.
    step_deg : float
        Grid step in degrees.
    max_size : int
        Images are binned (block mean) until both sides are at most about this size.
    window : (float, float), optional
        Candidates in ``[lo, hi]`` instead (degrees), e.g. around a full-circle estimate
        (:mod:`fastalign.align.orient`).

    Returns
    -------
    float
        Axis angle in degrees (module docstring for the sign).
    """
    small = _binned_to(tilt_series, max_size).astype(np.float64)
    n, nyb, nxb = small.shape
    flat = small.reshape(n, -1)
    lo, hi = (-search_deg, search_deg) if window is None else window
    grid = np.arange(lo, hi + 0.5 * step_deg, step_deg)
    scores = np.array([_profile_score(flat, nyb, nxb, np.deg2rad(a)) for a in grid])
    return _grid_minimum(grid, scores, step_deg)[0]


def _binned_to(tilt_series, max_size):
    """float32 stack binned (block mean, same factor along y and x) until both sides are at
    most about ``max_size`` (and at least 16)."""
    data = np.asarray(tilt_series, dtype=np.float32)
    _, ny, nx = data.shape
    f = 1
    while max(ny, nx) // f > max_size and min(ny, nx) // (2 * f) >= 16:
        f *= 2
    return bin_stack(data, f, f)


def _grid_minimum(grid, scores, step):
    """``(argmin, min score)`` of scores on an evenly spaced grid, refined by the parabola
    through the best three points when the minimum is inside."""
    i = int(np.argmin(scores))
    best = float(grid[i])
    if 0 < i < grid.size - 1:
        s0, s1, s2 = scores[i - 1:i + 2]
        den = s0 - 2 * s1 + s2
        if den > 0:
            best += 0.5 * step * (s0 - s2) / den
    return best, float(scores[i])


def profile_axis_angle(tilt_series, start_deg, *, half_width_deg=3.0, step_deg=0.25,
                       search_deg=10.0, max_size=128):
    """Axis angle at which the x-integrated profiles, once aligned, agree best (no recon).

    Rotated back by the true angle, every image is the ideal projection shifted in the
    aligned frame, so its profile along the axis is the object's mass per row moved by
    ``dy`` (:mod:`fastalign.align.profiles`).  For candidate angles around ``start_deg``
    (e.g. :func:`coarse_axis_angle`, whose amplitude criterion ignores where along the axis
    the mass lies) the images are rotated back, their profiles aligned by
    :func:`~fastalign.align.profiles.profile_y_shifts` and the misfit kept; the smallest
    wins (grid, then a parabola through the best three points).  Meaningful for a compact
    object (small misfit), not for a specimen wider than the field of view.

    Parameters
    ----------
    tilt_series : ndarray, shape (n_tilts, ny, nx)
    start_deg : float
        Centre of the search (degrees).
    half_width_deg, step_deg : float
        Candidates ``start_deg + k step_deg`` within ``half_width_deg``, and within
        ``[-search_deg, search_deg]``.
    max_size : int
        Images are binned (block mean) until both sides are at most about this size.

    Returns
    -------
    (float, float)
        The angle (degrees, module docstring for the sign) and its profile misfit.
    """
    from .profiles import profile_y_shifts, tilt_profiles
    small = _binned_to(tilt_series, max_size)
    n = small.shape[0]
    k = np.arange(-np.floor(half_width_deg / step_deg), np.floor(half_width_deg / step_deg) + 1)
    grid = start_deg + k * step_deg
    grid = grid[np.abs(grid) <= search_deg + 1e-9]
    if grid.size == 0:
        grid = np.array([float(np.clip(start_deg, -search_deg, search_deg))])
    zero = np.zeros((n, 2))
    scores = np.array([profile_y_shifts(tilt_profiles(rotate_shift(small, float(a), zero)))[1]
                       for a in grid])
    return _grid_minimum(grid, scores, step_deg)


def rotation_update(measured, reprojected, row_coords, col_coords, center):
    """Residual in-plane rotation (radians) of the measured images relative to the reprojection.

    Per tilt, ``measured - reprojected ~ eps G_rot + sx G_x + sy G_y`` with the derivatives of
    the reprojection ``G_x = -dP/dx``, ``G_y = -dP/dy`` (translation) and ``G_rot =
    (y - yc) dP/dx - (x - xc) dP/dy`` (``d/d eps`` of ``P(R(eps)^-1 (r - c) + c)``, a rotation
    by ``eps`` about the image centre, positive as ``alpha``); the per-tilt shifts are
    eliminated (Schur complement of each tilt's 3x3 normal equations) and the reduced
    equations summed over tilts give one global ``eps``.

    Parameters
    ----------
    measured, reprojected : ndarray, shape (n, rows, cols)
    row_coords, col_coords : ndarray
        Full-resolution y of each row and x of each column (pixels).
    center : (float, float)
        Full-resolution image centre ``(xc, yc)``.

    Returns
    -------
    float
        ``eps`` in radians: the images are still rotated by ``eps`` (add it to ``alpha``).
    """
    P = np.asarray(reprojected, dtype=np.float64)
    r = np.asarray(measured, dtype=np.float64) - P
    yv = np.asarray(row_coords, dtype=np.float64)
    xv = np.asarray(col_coords, dtype=np.float64)
    if P.shape[1] < 2 or P.shape[2] < 2:
        return 0.0
    # uniform spacing (rows/columns of a binning level) -> the fast scalar-spacing gradient
    dy = yv[1] - yv[0] if np.allclose(np.diff(yv), yv[1] - yv[0]) else yv
    dx = xv[1] - xv[0] if np.allclose(np.diff(xv), xv[1] - xv[0]) else xv
    gy = np.gradient(P, dy, axis=1)
    gx = np.gradient(P, dx, axis=2)
    del P
    xc, yc = center
    grot = -(xv[None, None, :] - xc) * gy
    G = (grot, -gx, -gy)
    # per-tilt 3x3 normal equations H a = v, summed over pixels in float64
    H = np.empty((r.shape[0], 3, 3))
    v = np.empty((r.shape[0], 3))
    for i in range(3):
        v[:, i] = np.einsum("nij,nij->n", G[i], r)
        for j in range(i, 3):
            H[:, i, j] = H[:, j, i] = np.einsum("nij,nij->n", G[i], G[j])
    num = 0.0
    den = 0.0
    for i in range(r.shape[0]):
        Hss = H[i, 1:, 1:]
        if abs(np.linalg.det(Hss)) <= 1e-12 * max(float(np.trace(Hss)) ** 2, 1e-300):
            continue
        sol = np.linalg.solve(Hss, np.stack([H[i, 1:, 0], v[i, 1:]], axis=1))
        num += v[i, 0] - H[i, 0, 1:] @ sol[:, 1]
        den += H[i, 0, 0] - H[i, 0, 1:] @ sol[:, 0]
    return float(num / den) if den > 0 else 0.0


def xf_matrices(axis_angle_deg, n):
    """IMOD ``.xf`` linear parts ``[[A11, A12], [A21, A22]] = R(-alpha)`` for ``n`` tilts."""
    a = np.deg2rad(float(axis_angle_deg))
    m = np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])
    return np.repeat(m[None], n, axis=0)
