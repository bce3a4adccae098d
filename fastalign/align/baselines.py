"""Baseline aligners: sequential cross-correlation and centre of mass.

They serve as comparisons for the autofocus alignment and as its initialisers.  Both return
shifts in the DESIGN.md convention: ``shifts[i] = (dx, dy)`` in pixels such that the measured
image ``i`` equals the ideal projection translated by ``(dx, dy)``,
``measured(x, y) = ideal(x - dx, y - dy)``; aligning applies ``(-dx, -dy)``.

Neither method sees the 3-D object, so each reports its shifts in its own gauge (documented per
function).  Compare with other methods only after removing the least-squares
``a cos(th) + b sin(th)`` from dx and the mean from dy (DESIGN.md, "alignment gauge").
"""
import logging
import math

import numba
import numpy as np
import scipy.fft as sfft

from .._validate import (as_angles_deg, as_finite_float, as_float32_array,
                         as_positive_int)
from ..kernels import com as _kcom
from ..kernels import xcorr as _kxc
from .gauge import remove_sinusoid
from .shift import tukey_symmetric

__all__ = ["xcorr_shifts", "com_shifts"]

log = logging.getLogger(__name__)

#: Cosine stretching is applied only when both tilts of a pair lie within this many degrees of
#: 0: beyond it the stretch factor of neighbouring tilts grows without bound (cos -> 0) and the
#: flat-specimen model behind it no longer holds.
STRETCH_MAX_DEG = 80.0


def _check_series(tilt_series, angles_deg):
    ts = as_float32_array(tilt_series, 3, "tilt_series")
    n = ts.shape[0]
    angles = as_angles_deg(angles_deg, n_expected=n)
    if n < 2:
        raise ValueError("alignment needs at least 2 tilts, got 1")
    if not np.any(ts):
        raise ValueError("tilt_series is all zero: nothing to align")
    return ts, angles


# ---------------------------------------------------------------------------------------------
# sequential cross-correlation
# ---------------------------------------------------------------------------------------------

def _stretch_x(img, s):
    """Stretch ``img`` along x by factor ``s >= 1`` about the image centre (linear interp.).

    ``out(x) = img(c + (x - c)/s)`` with ``c = (nx-1)/2``: features at distance ``d`` from the
    centre move to distance ``s d``.  For ``s >= 1`` every sample point lies inside the image.
    """
    nx = img.shape[1]
    if nx < 2 or s == 1.0:
        return img.astype(np.float64)
    c = 0.5 * (nx - 1)
    src = c + (np.arange(nx, dtype=np.float64) - c) / s
    i0 = np.clip(np.floor(src).astype(np.intp), 0, nx - 2)
    f = src - i0
    return img[:, i0] * (1.0 - f) + img[:, i0 + 1] * f


def _spectrum(img, window, workers):
    """``rfft2`` of the mean-subtracted, tapered image (float64 in, complex128 out)."""
    a = np.asarray(img, dtype=np.float64)
    a = a - a.mean()
    if window is not None:
        a *= window
    return sfft.rfft2(a, workers=workers)


def _signed(idx, n):
    return idx - n if idx > n // 2 else idx


def _parabola(cm, c0, cp):
    """Vertex offset of the parabola through (-1, cm), (0, c0), (1, cp), clamped to [-0.5, 0.5]."""
    den = cm - 2.0 * c0 + cp
    if not den < 0.0:  # not a maximum (or a masked neighbour)
        return 0.0
    return float(np.clip(0.5 * (cm - cp) / den, -0.5, 0.5))


def _upsampled_peak(F, nx, py, px, upsample):
    """Maximum of the cross-correlation within +-1 px of ``(py, px)`` on a ``1/upsample`` grid.

    Matrix DFT of the half spectrum ``F`` (kernel :func:`fastalign.kernels.xcorr.
    upsampled_xcorr`), then one parabolic step on the fine grid.  Returns ``(dy, dx)``.
    """
    ny, nk = F.shape
    off = np.arange(-upsample, upsample + 1, dtype=np.float64) / upsample
    fy = sfft.fftfreq(ny)
    fx = np.arange(nk, dtype=np.float64) / nx
    Ey = np.exp(2j * np.pi * np.outer(py + off, fy))          # (m, ny)
    Ex = np.exp(2j * np.pi * np.outer(fx, px + off))          # (nk, m)
    w = np.full(nk, 2.0)
    w[0] = 1.0
    if nx % 2 == 0:
        w[-1] = 1.0
    m = off.size
    G = np.empty((m, nk), np.complex128)
    cc = np.empty((m, m))
    _kxc.upsampled_xcorr(np.ascontiguousarray(F), Ey, Ex, w, G, cc)
    iy, ix = np.unravel_index(np.argmax(cc), cc.shape)
    dy = py + off[iy]
    dx = px + off[ix]
    if 0 < iy < m - 1:
        dy += _parabola(cc[iy - 1, ix], cc[iy, ix], cc[iy + 1, ix]) / upsample
    if 0 < ix < m - 1:
        dx += _parabola(cc[iy, ix - 1], cc[iy, ix], cc[iy, ix + 1]) / upsample
    return dy, dx


def _relative_shift(spec_moving, spec_ref, shape, upsample, max_shift, workers):
    """Shift ``(rx, ry)`` with ``moving(x, y) ~ ref(x - rx, y - ry)`` (sub-pixel), from spectra."""
    ny, nx = shape
    F = spec_moving * np.conj(spec_ref)
    cc = sfft.irfft2(F, s=shape, workers=workers)
    if max_shift is not None:
        sy = np.abs(sfft.fftfreq(ny) * ny)
        sx = np.abs(sfft.fftfreq(nx) * nx)
        allowed = (sy[:, None] <= max_shift) & (sx[None, :] <= max_shift)
        cc = np.where(allowed, cc, -np.inf)
    iy, ix = np.unravel_index(np.argmax(cc), cc.shape)
    py, px = _signed(iy, ny), _signed(ix, nx)
    if upsample > 1:
        dy, dx = _upsampled_peak(F, nx, py, px, upsample)
    else:  # three-point parabolic fit in each axis (periodic neighbours)
        c0 = cc[iy, ix]
        dy = py + (_parabola(cc[(iy - 1) % ny, ix], c0, cc[(iy + 1) % ny, ix]) if ny > 2 else 0.0)
        dx = px + (_parabola(cc[iy, (ix - 1) % nx], c0, cc[iy, (ix + 1) % nx]) if nx > 2 else 0.0)
    return float(dx), float(dy)


def _xcorr_options(ts, upsample, taper, max_shift):
    """Validate :func:`xcorr_shifts`' options against the series ``ts`` (n, ny, nx).

    Returns ``(upsample, window, max_shift)``: the Tukey window ``(ny, nx)`` (float64) for
    ``taper > 0``, else None.  Raises ValueError for bad options or a constant image.
    """
    upsample = as_positive_int(upsample, "upsample")
    taper = as_finite_float(taper, "taper", minimum=0.0)
    if taper > 1.0:
        raise ValueError(f"taper must be in [0, 1], got {taper}")
    if max_shift is not None:
        max_shift = as_finite_float(max_shift, "max_shift", minimum=0.0)
    flat = np.flatnonzero(ts.max(axis=(1, 2)) == ts.min(axis=(1, 2)))
    if flat.size:
        raise ValueError(f"tilt images {flat.tolist()} are constant: cross-correlation needs "
                         "structure in every image")
    window = None
    if taper > 0.0:
        _, ny, nx = ts.shape
        window = np.outer(tukey_symmetric(ny, taper), tukey_symmetric(nx, taper))
    return upsample, window, max_shift


def _xcorr_chain(ts, angles, order, window, upsample, max_shift, cosine_stretch):
    """Walk the tilts sorted by ``order`` outward from the smallest ``|angle|`` (steps 1-4 of
    :func:`xcorr_shifts`).

    Returns ``(dx, dy)``, float64 ``(n_tilts,)`` each, in sorted order, both 0 at the
    reference tilt (``dy`` not yet mean-free).
    """
    n, ny, nx = ts.shape
    th = np.deg2rad(angles[order])
    ref = int(np.argmin(np.abs(angles[order])))
    dx = np.zeros(n)
    dy = np.zeros(n)
    workers = numba.get_num_threads()
    ref_spec = _spectrum(ts[order[ref]], window, workers)
    max_rad = np.deg2rad(STRETCH_MAX_DEG)
    for direction in (range(ref + 1, n), range(ref - 1, -1, -1)):
        lo, lo_spec = ref, ref_spec
        for hi in direction:
            s = 1.0
            if cosine_stretch and max(abs(th[lo]), abs(th[hi])) <= max_rad:
                s = math.cos(th[lo]) / math.cos(th[hi])
            raw = ts[order[hi]]
            moving = _spectrum(_stretch_x(raw, s), window, workers)
            rx, ry = _relative_shift(moving, lo_spec, (ny, nx), upsample, max_shift, workers)
            dx[hi] = (dx[lo] + rx) / s
            dy[hi] = dy[lo] + ry
            log.debug("xcorr %.2f -> %.2f deg: stretch %.4f, r = (%.3f, %.3f)",
                      np.rad2deg(th[lo]), np.rad2deg(th[hi]), s, rx, ry)
            lo, lo_spec = hi, (moving if s == 1.0 else _spectrum(raw, window, workers))
    return dx, dy


def xcorr_shifts(tilt_series, angles_deg, *, upsample=20, taper=0.1, max_shift=None,
                 cosine_stretch=True):
    """Sequential cross-correlation alignment (as IMOD ``tiltxcorr`` / TomoPy do).

    Tilts are sorted by angle.  Starting from the reference tilt (smallest ``|angle|``), each
    tilt is correlated with its neighbour toward 0 degrees and the relative shifts are
    accumulated outward.  Per pair:

    1. optionally (``cosine_stretch``) the higher-tilt image is stretched along x about the image
       centre by ``s = cos(th_lo) / cos(th_hi)`` (only if both ``|th| <= STRETCH_MAX_DEG``);
    2. both images get their mean subtracted and are multiplied by a separable Tukey window;
    3. the FFT cross-correlation peak gives ``r = (rx, ry)`` with ``hi ~ lo(x - rx, y - ry)``,
       refined to ``1/upsample`` px by an upsampled DFT around the peak (Guizar-Sicairos et al.
       2008) followed by a parabolic step, or by a three-point parabolic fit if ``upsample=1``;
    4. ``dx_hi = (dx_lo + rx) / s`` (the stretch scales a shift of the high tilt by ``s``;
       ``s = 1`` without stretching) and ``dy_hi = dy_lo + ry``.

    Parameters
    ----------
    tilt_series : array_like, shape (n_tilts, ny, nx)
        At least two tilts; converted once to float32.
    angles_deg : array_like, shape (n_tilts,)
        Tilt angles in degrees, any order.
    upsample : int
        Sub-pixel refinement factor; ``1`` uses a parabolic peak fit instead.
    taper : float in [0, 1]
        Fraction of each axis covered by the cosine tapers of the Tukey window (``0``: none).
    max_shift : float, optional
        Largest relative shift (px, per axis) between neighbouring tilts considered in the
        peak search.  Default: no limit (up to half the image).
    cosine_stretch : bool
        Stretch the higher tilt by the cosine ratio before correlating (models a thin, flat
        specimen; see ``STRETCH_MAX_DEG``).

    Returns
    -------
    shifts : ndarray, float64, shape (n_tilts, 2)
        ``(dx, dy)`` per tilt in input order (DESIGN.md sign).  Gauge: ``dx`` of the reference
        tilt is 0 and ``dy`` has zero mean.  Errors of the pairwise estimates accumulate along
        the chain, so the result drifts (a random walk outward from the reference tilt).

    Raises
    ------
    ValueError
        Fewer than two tilts, NaN/Inf, an all-zero series, a constant image, bad options.
    """
    ts, angles = _check_series(tilt_series, angles_deg)
    upsample, window, max_shift = _xcorr_options(ts, upsample, taper, max_shift)
    order = np.argsort(angles, kind="stable")
    dx, dy = _xcorr_chain(ts, angles, order, window, upsample, max_shift, cosine_stretch)
    dy -= dy.mean()
    shifts = np.empty((ts.shape[0], 2))
    shifts[order, 0] = dx
    shifts[order, 1] = dy
    return shifts


# ---------------------------------------------------------------------------------------------
# centre of mass
# ---------------------------------------------------------------------------------------------

def _background(ts, background, border_px):
    n, ny, nx = ts.shape
    if background is None:
        return np.zeros(n)
    if isinstance(background, str):
        if background != "border":
            raise ValueError(f"background must be 'border', a number or None, got {background!r}")
        w = max(1, min(border_px, nx // 2))
        strips = np.concatenate([ts[:, :, :w], ts[:, :, nx - w:]], axis=2).reshape(n, -1)
        return np.median(strips, axis=1).astype(np.float64)
    return np.full(n, as_finite_float(background, "background"))


def _weighted_median(values, weights):
    """Weighted median along axis 1 of ``values`` (n, m) with weights (m,)."""
    out = np.empty(values.shape[0])
    for i, v in enumerate(values):
        o = np.argsort(v, kind="stable")
        cw = np.cumsum(weights[o])
        k = int(np.searchsorted(cw, 0.5 * cw[-1]))
        out[i] = v[o[min(k, v.size - 1)]]
    return out


def _row_moments(ts, background, border_px, clip):
    """Background-corrected (optionally clipped) row moments of every tilt.

    Returns ``(mass, first, total)``: ``mass[i, y]`` and ``first[i, y]``, float64
    ``(n_tilts, ny)``, are the zeroth and first x moments of row ``y`` of tilt ``i``;
    ``total[i]`` is the mass of tilt ``i``.  Raises ValueError for a tilt with no mass.
    """
    n, ny, _ = ts.shape
    bg = np.ascontiguousarray(_background(ts, background, border_px), dtype=np.float64)
    mass = np.empty((n, ny))
    first = np.empty((n, ny))
    _kcom.row_moments(ts, bg, bool(clip), mass, first)
    total = mass.sum(axis=1)
    empty = np.flatnonzero(total <= 0.0)
    if empty.size:
        raise ValueError(f"tilt images {empty.tolist()} have no intensity above the background: "
                         "centre of mass undefined")
    return mass, first, total


def _per_slice_dx(mass, first, dy, angles, nx, min_row_mass):
    """``dx`` per tilt from the row moments (``com_shifts(per_slice=True)``), shape (n_tilts,).

    Undo ``dy`` on the row moments (they are linear in the rows): row y of every tilt then
    sees the same object slice.  Fourier shift along y, as for the images themselves; rows
    within the largest ``|dy|`` of the top/bottom edge are dropped (wrapped around), and so
    are rows whose mass at some tilt is below ``min_row_mass`` times the largest row mass.
    The sinusoid is fitted per row over the tilts; ``dx`` is the mass-weighted median of the
    residuals.
    """
    ny = mass.shape[1]
    ky = sfft.rfftfreq(ny)
    phase = np.exp(2j * np.pi * np.outer(dy, ky))
    mass = sfft.irfft(sfft.rfft(mass, axis=1) * phase, n=ny, axis=1)
    first = sfft.irfft(sfft.rfft(first, axis=1) * phase, n=ny, axis=1)
    margin = int(np.ceil(np.abs(dy).max())) + 1
    usable = mass.min(axis=0) > min_row_mass * mass.max()
    usable[:margin] = False
    usable[ny - margin:] = False
    rows = np.flatnonzero(usable)
    if rows.size == 0:
        raise ValueError("per_slice: no row has enough mass at every tilt "
                         f"(min_row_mass={min_row_mass}, {margin} edge rows excluded)")
    t = first[:, rows] / mass[:, rows] - 0.5 * (nx - 1)     # (n, n_rows)
    resid = remove_sinusoid(t, angles)[0]
    log.debug("com per_slice: %d of %d rows used", rows.size, ny)
    return _weighted_median(resid, mass[:, rows].sum(axis=0))


def com_shifts(tilt_series, angles_deg, *, per_slice=False, background="border", border_px=2,
               clip=True, min_row_mass=0.01):
    """Centre-of-mass alignment (after Sanders et al. 2015).

    For a parallel projection, the x centre of mass of projection ``th`` is the projection of the
    object's centre of mass, ``t_th = c + cx cos(th) + cz sin(th) + dx_th`` with
    ``c = (nx-1)/2``; the y centre of mass is the object's, plus ``dy_th``.  Since the sinusoid is
    the alignment gauge, ``dx_th = t_th - c`` and ``dy_th = COM_y(th) - mean``.  Intensities are
    background-corrected and (by default) clipped at zero first.  Exact (up to
    discretisation) for an object that stays inside the field of view at every tilt; biased
    by pixels when it does not (a slab wider than the image: the part of the object inside
    the field changes with the tilt).

    Parameters
    ----------
    tilt_series : array_like, shape (n_tilts, ny, nx)
        At least two tilts; converted once to float32.  Positive contrast (bright object).
    angles_deg : array_like, shape (n_tilts,)
    per_slice : bool
        Use every row's centre of mass: fit ``cx(y) cos(th) + cz(y) sin(th)`` per row by least
        squares over the tilts, and take ``dx_th`` as the mass-weighted median over rows of the
        residuals.  Robust to rows where the object leaves the field or is noisy.  Rows whose
        mass falls below ``min_row_mass`` times the largest row mass at any tilt are ignored.
    background : ``"border"``, float or None
        ``"border"``: per tilt, the median of the ``border_px`` outermost columns on each side
        (left/right, i.e. across the tilt axis); a number: that constant; None: no subtraction.
    border_px : int
        Width of the border strips for ``background="border"``.
    clip : bool
        Clip background-corrected intensities at zero.  Clipping biases the result toward the
        image centre on noisy data (the clipped noise is a positive pedestal); ``clip=False``
        keeps zero-mean noise unbiased but lets negative background pull the moments.
    min_row_mass : float
        Relative row-mass threshold for ``per_slice``.

    Returns
    -------
    shifts : ndarray, float64, shape (n_tilts, 2)
        ``(dx, dy)`` per tilt in input order (DESIGN.md sign).  Gauge: ``dy`` has zero mean.
        ``per_slice=False``: ``dx = t_th - (nx-1)/2``, which still contains the object's own
        ``cx cos(th) + cz sin(th)`` (applying ``-dx`` puts the object's centre of mass on the
        rotation axis; a constant in dx is a rotation-centre offset).  ``per_slice=True``: the
        least-squares ``a cos(th) + b sin(th)`` is removed from dx (and with it the part of a
        constant offset that the sinusoid can represent).

    Raises
    ------
    ValueError
        Fewer than two tilts, NaN/Inf, an all-zero series, a tilt with no mass above the
        background, no usable row (``per_slice``).
    """
    ts, angles = _check_series(tilt_series, angles_deg)
    border_px = as_positive_int(border_px, "border_px")
    min_row_mass = as_finite_float(min_row_mass, "min_row_mass", minimum=0.0)
    n, ny, nx = ts.shape
    mass, first, total = _row_moments(ts, background, border_px, clip)
    yy = np.arange(ny, dtype=np.float64)
    com_y = (mass @ yy) / total
    shifts = np.empty((n, 2))
    shifts[:, 1] = com_y - com_y.mean()
    if not per_slice:
        shifts[:, 0] = first.sum(axis=1) / total - 0.5 * (nx - 1)
    else:
        shifts[:, 0] = _per_slice_dx(mass, first, shifts[:, 1], angles, nx, min_row_mass)
    return shifts
