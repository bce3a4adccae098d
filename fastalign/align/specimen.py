"""Specimen geometry from the data: compact object or laterally extended slab; a slab's
thickness, depth position and pitch.

Most real specimens are slabs (lamellae, cells, sections, supported films): wider than the
field of view at every tilt and a small fraction of it thick.  A reconstruction-based
alignment of a slab stays unbiased only if its model explains what the detector saw
(DESIGN.md, "Real specimen geometry"): a region wide enough for every oblique ray and only as
thick as the specimen.  This module decides which case a tilt series is and measures what the
region needs:

* :func:`edge_fraction` - how much signal the outermost detector columns carry, relative to
  the image mean (a compact object in vacuum: about 0; a slab: about 1);
* :func:`fit_pitched_slab` - the depth profile of an early reconstruction: the mean square of
  its high-pass part along x, per z (sheared by trial pitches).  A laterally uniform density is not measured by a limited
  tilt range (the ``k_x = 0`` line lies in the missing wedge), but the texture of the specimen
  is, so the profile is flat outside the slab and high inside;
* :func:`fit_slab` - a blurred box ``c + a [Phi((z - l)/s) - Phi((z - r)/s)]`` fitted to the
  profile (least squares): thickness ``r - l`` with the blur ``s`` taken out, centre
  ``(l + r)/2``, and the same per block of columns for the pitch (a slab not perpendicular to
  the beam at 0 degrees, as IMOD's tomopitch measures it).
"""
from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares
from scipy.special import erf, ndtri

from .start import profile_mass

__all__ = ["Specimen", "edge_fraction", "edge_ratios", "fit_slab", "fit_pitched_slab",
           "depth_power", "fit_pitched_power", "slab_region", "compact_region", "valid_weights",
           "valid_windows", "pair_network_dy"]

#: A series is a slab when the median over tilts of (mean of the outermost columns / image
#: mean) exceeds this: material is in the field at both x edges for most tilts.
SLAB_EDGE_FRACTION = 0.3


@dataclass(frozen=True)
class Specimen:
    """What the data say about the specimen (reported in ``AlignResult.options``).

    Attributes
    ----------
    kind : {"compact", "slab"}
    edge_fraction : float
        Median over tilts of the outermost columns' mean over the image mean.
    thickness_px : float or None
        Slab thickness (full-resolution pixels), blur removed.
    z_center_px : float or None
        Depth of the slab's mid-plane relative to the volume centre (px, in the gauge of the
        starting shifts).
    pitch_deg : float or None
        Angle between the slab and the x axis in the (x, z) plane (degrees).
    blur_px : float or None
        Width (sigma) of the edges of the depth profile.
    """
    kind: str
    edge_fraction: float
    thickness_px: float = None
    z_center_px: float = None
    pitch_deg: float = None
    blur_px: float = None

    def as_dict(self):
        return {k: v for k, v in self.__dict__.items()}


def edge_fraction(data, border=2, low_percentile=2.0):
    """Median over tilts of how much signal the outermost ``border`` columns carry:
    ``(edge mean - low) / (image mean - low)`` with ``low`` the image's ``low_percentile``
    plus what noise puts below the background (``z sigma``, sigma from neighbouring-pixel
    differences): a constant background, e.g. the vacuum level of a compact object, does not
    count, noisy or not.

    A compact object gives about 0, a slab (material at both x edges) about 1.
    """
    return float(np.median(edge_ratios(data, border, low_percentile)))


def edge_ratios(data, border=2, low_percentile=2.0):
    """The per-tilt ratios of :func:`edge_fraction` (``(n,)`` float64); tilt chunks of a
    stack give the stack's ratios in pieces."""
    data = np.asarray(data)
    n = data.shape[0]
    ratio = np.zeros(n)
    z = -float(ndtri(low_percentile / 100.0))     # 2.05 for the 2nd percentile
    for i in range(n):
        img = data[i].astype(np.float64)
        # the low percentile of pure noise lies z sigma below its mean: put back
        sigma = 1.4826 * np.median(np.abs(np.diff(img, axis=1))) / np.sqrt(2.0)
        low = float(np.percentile(img, low_percentile)) + z * sigma
        edge = float(np.concatenate([img[:, :border], img[:, -border:]], axis=1).mean())
        mean = float(img.mean())
        if mean - low > 0:
            ratio[i] = max((edge - low) / (mean - low), 0.0)
    return ratio


def _box(z, a, left, right, sigma, c):
    s = np.sqrt(2.0) * sigma
    return c + 0.5 * a * (erf((z - left) / s) - erf((z - right) / s))


def _box_jacobian(z, a, left, right, sigma, c):
    """``d _box / d (a, left, right, sigma, c)``, ``(z.size, 5)``: analytic, so that a fit
    costs one model evaluation per step instead of six (2-point differences)."""
    s = np.sqrt(2.0) * sigma
    u1, u2 = (z - left) / s, (z - right) / s
    g1, g2 = np.exp(-u1 * u1), np.exp(-u2 * u2)
    k = a / np.sqrt(np.pi)              # 0.5 a d erf(u)/du = k exp(-u^2)
    return np.stack([0.5 * (erf(u1) - erf(u2)), -k * g1 / s, k * g2 / s,
                     k * (u2 * g2 - u1 * g1) / sigma, np.ones_like(z)], axis=1)


def fit_slab(profile):
    """Fit a blurred box to a depth profile.

    Returns ``(thickness, centre, blur, contrast)`` in profile samples: ``right - left``, their
    mean relative to the profile's centre ``(nz - 1)/2``, the edge sigma, and the box height
    over the background relative to the background (``inf`` for a zero background); ``None``
    when the profile has no box (flat or empty).
    """
    p = np.asarray(profile, dtype=np.float64)
    top = p.max()
    if not np.isfinite(top) or top <= 0 or p.size < 4:
        return None
    p = p / top
    z = np.arange(p.size, dtype=np.float64)
    above = np.flatnonzero(p >= 0.5)
    c0 = float(np.median(np.sort(p)[: max(2, p.size // 5)]))
    q0 = [1.0 - c0, above[0] - 0.5, above[-1] + 0.5, 1.0, c0]
    lo = [0.0, -0.5, -0.5, 0.25, -1.0]
    hi = [10.0, p.size - 0.5, p.size - 0.5, float(p.size), 1.0]
    q = least_squares(lambda q: _box(z, *q) - p, q0, jac=lambda q: _box_jacobian(z, *q),
                      bounds=(lo, hi)).x
    a, left, right, sigma, c = q
    if right <= left or a <= 0:
        return None
    contrast = a / c if c > 0 else np.inf
    return float(right - left), float(0.5 * (left + right) - 0.5 * (p.size - 1)), float(sigma), \
        float(contrast)


def slab_region(nx, angles_deg, thickness_px, pitch_deg=0.0, *, max_shift_px=0.0, margin=1.1,
                margin_px=4.0):
    """Reconstruction region ``(pad_x, nz)`` (full-resolution px) that holds everything the
    tilted views of a slab see.

    At tilt ``th`` the detector (``|u| <= nx/2`` plus the largest shift) sees the slab's
    columns ``|x| <= (nx/2 + s + (t/2) |sin th|) / cos th``; the region spans the widest of
    them.  Its depth is the thickness times ``margin`` plus ``margin_px``, plus the rise of a
    pitched slab over that width.
    """
    th = np.deg2rad(np.abs(np.asarray(angles_deg, dtype=np.float64))).max()
    half_t = 0.5 * margin * thickness_px + 0.5 * margin_px
    half_w = (0.5 * nx + max_shift_px + half_t * np.sin(th)) / max(np.cos(th), 0.05)
    pad_x = max(0, int(np.ceil(half_w - 0.5 * nx)))
    rise = 2.0 * half_w * abs(np.tan(np.deg2rad(pitch_deg)))
    nz = int(np.ceil(2.0 * half_t / np.cos(np.deg2rad(pitch_deg)) + rise))
    return pad_x, max(nz, 4)


#: a column belongs to a compact object's shadow above this fraction of its tilt's peak
SUPPORT_FRACTION = 0.02
#: ... and above this many standard deviations of its noise
SUPPORT_SIGMA = 5.0
#: ... and no more than this fraction of the mass (median over tilts) lies outside it
SUPPORT_OUTSIDE = 0.03
#: the loop region is cropped only when it is at most this fraction of the field's width
CROP_MAX_FRACTION = 0.9


def _strip_extent(c, s, r, limit, samples=801):
    """Largest ``|p|`` in the intersection of the strips ``|p c_i + q s_i| <= r`` (every
    tilt's shadow of the object: ``(p, q)`` is ``(x, z)`` or ``(z, x)``) and
    ``|q| <= limit``, from ``samples`` values of ``q``; at most ``limit``."""
    q = np.linspace(-limit, limit, samples)[:, None]
    use = np.abs(c) > 1e-9
    feasible = np.all(np.abs(q * s[~use]) <= r, axis=1)
    if not np.any(use):
        return float(limit)
    a, sq = np.abs(c[use]), q * s[use] * np.sign(c[use])
    up = ((r - sq) / a).min(axis=1)           # p <= up
    lo = -((r + sq) / a).min(axis=1)          # p >= lo
    feasible &= up >= lo
    if not np.any(feasible):
        return float(limit)
    return float(min(np.maximum(up, -lo)[feasible].max(), limit))


def compact_region(col_sums, dx, center_offset, angles_deg, nz, multiple=1, *,
                   margin=1.1, margin_px=6.0):
    """Loop region of a compact object much smaller than the field: columns and depth
    cropped per side, ``(crop_x, crop_z, radius)`` full-resolution px, or None (no crop).

    Each tilt's y-integrated profile (``col_sums``, ``(n, nx)``;
    :func:`fastalign.align.start.profile_mass`) is above :data:`SUPPORT_FRACTION` of its
    peak and :data:`SUPPORT_SIGMA` times its noise over the object's shadow; no crop when
    more than :data:`SUPPORT_OUTSIDE` of the mass lies outside the shadows (median over
    tilts: faint material beyond the object, e.g. a support film).  With the starting
    shifts ``dx`` taken out, the shadows lie within ``|u| <= R`` of the rotation axis; the
    object then lies in the strips ``|x cos th + z sin th| <= R`` of every tilt, and the
    region spans their intersection (:func:`_strip_extent`; e.g. ``|x| <= R`` and
    ``|z| <= R / sin 60`` for -60..60 with 0 among the tilts, ``R`` in both over 0..178).
    ``R`` gets ``margin`` and ``margin_px`` for the shifts the loop still makes.  The crops are multiples of ``multiple`` (the coarsest binning, so every
    level crops the same region); the region stays centred on the rotation axis, so the
    projector's geometry is unchanged.  None when the region would not be at most
    :data:`CROP_MAX_FRACTION` of the field, or a tilt has no clear shadow.
    """
    w = profile_mass(col_sums)
    n, nx = w.shape
    peak = w.max(axis=1)
    if not np.all(peak > 0):
        return None
    cu = 0.5 * (nx - 1) + center_offset
    radius = 0.0
    # noise of a profile: the median absolute difference of neighbouring columns
    sigma = 1.4826 * np.median(np.abs(np.diff(w, axis=1)), axis=1) / np.sqrt(2.0)
    outside = np.zeros(n)
    for i in range(n):
        cols = np.flatnonzero(w[i] > max(SUPPORT_FRACTION * peak[i], SUPPORT_SIGMA * sigma[i]))
        if cols.size == 0:
            return None
        inside = w[i, cols[0]:cols[-1] + 1].sum()
        outside[i] = (w[i].sum() - inside) / max(inside, 1e-300)
        lo, hi = cols[0] - 0.5 - dx[i], cols[-1] + 0.5 - dx[i]
        radius = max(radius, cu - lo, hi - cu)
    if np.median(outside) > SUPPORT_OUTSIDE:   # faint extended material (e.g. a film)
        return None
    r = margin * radius + margin_px
    th = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    half_x = _strip_extent(np.cos(th), np.sin(th), r, 0.5 * nx)
    half_z = _strip_extent(np.sin(th), np.cos(th), r, 0.5 * nz)
    crop_x = int((0.5 * nx - half_x) // multiple) * multiple
    crop_z = int((0.5 * nz - half_z) // multiple) * multiple
    if crop_x <= 0 or nx - 2 * crop_x > CROP_MAX_FRACTION * nx:
        return None
    return crop_x, max(crop_z, 0), float(radius)


def _sheared(volume_sq, slope):
    """Rows of ``volume_sq (nz, nx)`` moved by ``-slope * x`` (linear interpolation), so that a
    slab with mid-plane ``z = z0 + slope x`` becomes flat."""
    nz, nx = volume_sq.shape
    x = np.arange(nx) - 0.5 * (nx - 1)
    z = np.arange(nz, dtype=np.float64)
    out = np.empty_like(volume_sq)
    for j in range(nx):
        out[:, j] = np.interp(z + slope * x[j], z, volume_sq[:, j], left=0.0, right=0.0)
    return out


def fit_pitched_slab(volume, *, max_pitch_deg=10.0, step_deg=0.5, smooth_px=5):
    """Thickness, centre, pitch and blur of the slab in ``volume (ny, nz, nx)``.

    The depth profile of the volume sheared by each trial pitch on a grid over
    +-``max_pitch_deg`` is fitted with a blurred box (:func:`fit_slab`); the pitch whose box
    has the sharpest edges wins (a pitched slab seen flat is a box smeared by its rise).
    Returns ``(thickness, centre, pitch_deg, blur, contrast)`` in volume samples and
    degrees, or None when no trial finds a box.  (:func:`depth_power` and
    :func:`fit_pitched_power`: the same from row blocks of the volume.)
    """
    v = np.asarray(volume)
    return fit_pitched_power(depth_power(v, smooth_px) / v.shape[0],
                             max_pitch_deg=max_pitch_deg, step_deg=step_deg)


def depth_power(volume, smooth_px=5, acc=None):
    """Sum over rows y of the squared x-high-passed ``volume (ny, nz, nx)``: ``(nz, nx)``
    float64.

    ``acc``: the sum of the rows before this row block, continued row by row in order, so
    that consecutive blocks give exactly the sum over the whole volume (NumPy sums over the
    first axis row by row)."""
    from scipy.ndimage import uniform_filter1d
    v = np.asarray(volume, dtype=np.float32)
    hp = v - uniform_filter1d(v, smooth_px, axis=2)
    sq = hp.astype(np.float64) ** 2
    if acc is None:
        return sq.sum(axis=0)
    acc = acc.copy()
    for row in sq:
        acc += row
    return acc


def fit_pitched_power(sq, *, max_pitch_deg=10.0, step_deg=0.5):
    """:func:`fit_pitched_slab` from the row mean of :func:`depth_power` ``sq (nz, nx)``."""
    best = None
    for pitch in np.arange(-max_pitch_deg, max_pitch_deg + 0.5 * step_deg, step_deg):
        fit = fit_slab(_sheared(sq, np.tan(np.deg2rad(pitch))).mean(axis=1))
        if fit is not None and (best is None or fit[2] < best[3] - 1e-9
                                or fit[2] <= best[3] + 1e-9 and abs(pitch) < abs(best[2])):
            best = (fit[0], fit[1], float(pitch), fit[2], fit[3])
    return best


def _ramp(n, lo, hi, width):
    """1 on ``[lo + width, hi - width]``, raised-cosine ramps down to 0 at ``lo`` and ``hi``."""
    x = np.arange(n, dtype=np.float64)
    t = np.clip(np.minimum(x - lo, hi - x) / max(width, 1e-9), 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * t)


def valid_weights(shape, shifts, *, taper=0.1, guard_px=1.0):
    """Where a resampled image carries measured data, per tilt and axis.

    ``fourier_shift(raw, -shifts)`` fills the pixels whose source ``x + dx`` (``y + dy``)
    lies outside the frame with edge values, which no volume explains.  The measured region
    of tilt ``i`` is a rectangle: along each axis, the samples whose source lies at least
    ``guard_px`` inside the frame.

    Returns
    -------
    hard : ndarray, float32, shape (n, ny, nx)
        1 inside the region, 0 outside (the reconstruction's data weights).
    (wy_hard, wy_smooth), (wx_hard, wx_smooth) : ndarrays, shapes (n, ny) and (n, nx)
        The region's extent along each axis, hard and with raised-cosine ramps of
        ``max(2, taper * length / 2)`` samples inside its ends (the window of a shift
        estimate along that axis: both signals are multiplied by it, so it must not add
        edges of its own; across the axis the hard extent weights the rows or columns).
    """
    wy, wx = valid_windows(shape, shifts, taper=taper, guard_px=guard_px)
    hard = np.ascontiguousarray(wy[0][:, :, None] * wx[0][:, None, :])
    return hard, wy, wx


def valid_windows(shape, shifts, *, taper=0.1, guard_px=1.0):
    """The per-axis windows ``(wy_hard, wy_smooth), (wx_hard, wx_smooth)`` of
    :func:`valid_weights`, without the ``(n, ny, nx)`` product (rows ``r0:r1`` of ``hard``
    are ``wy_hard[:, r0:r1, None] * wx_hard[:, None, :]``)."""
    n, ny, nx = shape
    s = np.asarray(shifts, dtype=np.float64).reshape(n, 2)
    per_axis = []
    for col, length in ((1, ny), (0, nx)):
        idx = np.arange(length)
        ramp = max(2.0, 0.5 * taper * length)
        lo = np.maximum(0.0, -s[:, col]) + guard_px
        hi = np.minimum(length - 1.0, length - 1.0 - s[:, col]) - guard_px
        w_hard = ((idx[None, :] >= lo[:, None]) & (idx[None, :] <= hi[:, None]))
        w_smooth = np.stack([_ramp(length, a, b, ramp) for a, b in zip(lo, hi)])
        per_axis.append((w_hard.astype(np.float32), w_smooth.astype(np.float32)))
    return per_axis[0], per_axis[1]


def pair_network_dy(tilt_series, angles_deg, *, max_distance=3, taper=0.1, upsample=20):
    """dy of every tilt from cross-correlations of all pairs up to ``max_distance`` apart in
    angle, solved by least squares (zero mean).

    A chain of neighbouring pairs (:func:`fastalign.align.baselines.xcorr_shifts`)
    accumulates its pairwise errors into a random walk, a smooth error that a
    reconstruction-based alignment corrects only slowly.  Along the tilt axis there is no
    parallax, so pairs further apart are as valid as neighbours and tie the walk down
    (measured on slabs: RMS dy error 0.098 -> 0.081 px, 0.117 -> 0.073, 0.116 -> 0.060 with
    ``max_distance=3``).  In x the parallax of a thick specimen grows with the angle between
    the pair, so dx keeps the chain.  Pairs are cosine-stretched as in the chain.
    """
    import math

    import numba
    from .shift import tukey_symmetric

    from .baselines import _relative_shift, _spectrum, _stretch_x
    ts = np.asarray(tilt_series, dtype=np.float32)
    n, ny, nx = ts.shape
    angles = np.asarray(angles_deg, dtype=np.float64)
    order = np.argsort(angles, kind="stable")
    th = np.deg2rad(angles)
    window = np.outer(tukey_symmetric(ny, taper), tukey_symmetric(nx, taper))
    workers = numba.get_num_threads()
    cache = {}

    def spectrum(i, s):
        key = (i, s)
        if key not in cache:
            cache[key] = _spectrum(_stretch_x(ts[i], s), window, workers)
        return cache[key]

    rows, rhs = [], []
    for a in range(n):
        for k in range(1, max_distance + 1):
            if a + k >= n:
                break
            i, j = order[a], order[a + k]
            lo, hi = (i, j) if abs(th[j]) >= abs(th[i]) else (j, i)
            s = math.cos(th[lo]) / math.cos(th[hi])
            _, ry = _relative_shift(spectrum(hi, s), spectrum(lo, 1.0), (ny, nx), upsample,
                                    None, workers)
            r = np.zeros(n)
            r[hi], r[lo] = 1.0 / k, -1.0 / k      # weight 1/k: far pairs see less overlap
            rows.append(r)
            rhs.append(ry / k)
    rows.append(np.full(n, 1.0 / n))
    rhs.append(0.0)
    return np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)[0]
