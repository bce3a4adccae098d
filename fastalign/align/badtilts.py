"""Tilt exclusion and automatic bad-tilt detection (IMOD's ``EXCLUDELIST``).

Excluded tilts enter neither the shift estimate nor the reconstruction; they still get a
shift, interpolated from their neighbours in tilt angle (:func:`interpolate_shifts`), and an
aligned view, so that ``AlignResult.aligned`` keeps every view, as IMOD does.

**Detection** (:func:`detect_bad_tilts`), cheap and before anything else, on the raw data.
Per tilt, six features are compared with the median of its neighbours (the two nearest on
each side in tilt angle; a repeated-median line through them, one-sided at the ends, where
the deviation is divided by the line's larger prediction uncertainty), so that what changes
smoothly with tilt (mass in the beam, a slab's ``1/cos`` thickness) is not counted:

=========== =================================================================================
feature     deviation (large is bad)
=========== =================================================================================
blank       ``-log(std_i / std_neighbours)``: a blank, dark or constant frame
jump        ``|mean_i - mean_neighbours| / median std``: an abrupt jump in mean intensity
            (from 20 degrees on, the neighbours' line runs in ``sec(angle)``, the slab mass law)
saturated   excess fraction of pixels at the series' maximum
occluded    excess fraction of pixels in a constant region (no local variation), or the
            largest change of an edge band's mean (a fifth of the frame at each of the four
            edges) relative to its level plus the median std (material drifting in and out
            of a slab's frame changes it little): a grid bar or another occluder at an edge
noise       ``1 -`` the best correlation of the frame's log amplitude spectrum (shift
            invariant) with those of its four neighbours: pure noise, or an unrelated image
=========== =================================================================================

A tilt is flagged when a deviation exceeds the robust threshold
``median(d) + K * max(1.4826 * MAD(d), floor)`` over all tilts (:data:`K_MAD` = 6; the
per-feature ``floor`` (:data:`FLOORS`) is an effect size below which nothing is flagged, so
that a clean series with nearly equal deviations flags nothing); a noise frame must also
correlate less than half as well as a typical tilt (in a series of pure noise no frame
stands out).  Series of fewer than :data:`MIN_DETECT` (10) tilts are not screened.  The reason is the feature furthest
beyond its threshold; ``score`` is ``d / threshold``.

A pixel is "constant" when its steps to the next pixel in x and in y are below 1 % of the
median frame std: noise-free vacuum is constant in every frame alike (whether a frame's
shift is an integer or its Fourier ringing is faint), noisy vacuum in none.

**Minimum kept.**  Automatic exclusion never leaves fewer than
``max(MIN_KEPT, ceil(AUTO_MIN_FRACTION * n))`` tilts (5 and 60 %): when more are flagged,
nothing is excluded and a warning names them (the detector does not fit these data).  An
explicit ``exclude`` must leave at least :data:`MIN_KEPT` tilts.
"""
import logging
import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from .gauge import gauge_basis

__all__ = ["detect_bad_tilts", "choose_tilts", "check_exclude", "interpolate_shifts",
           "tilt_stats", "tilt_features", "LocalTilts",
           "expand_result", "expand_fields", "Exclusion", "K_MAD", "MIN_KEPT", "AUTO_MIN_FRACTION"]

log = logging.getLogger("fastalign.align")

#: robust threshold: median + K_MAD * MAD (scaled to a standard deviation)
K_MAD = 6.0
#: fewest tilts an exclusion may leave
MIN_KEPT = 5
#: automatic exclusion keeps at least this fraction of the tilts
AUTO_MIN_FRACTION = 0.6
#: detection needs this many tilts (neighbours on both sides and a robust spread)
MIN_DETECT = 10
#: per-feature effect-size floors of the threshold's spread (see the module docstring)
#: fewer pixels than this at the series' maximum never count as saturation (measured: a
#: 32-pixel Poisson sinogram row had 1 such pixel, 3 % of the frame)
MIN_SATURATED_PIXELS = 16
#: The jump feature follows the slab mass law (a line in sec(angle)) from this tilt on.
SEC_FROM_DEG = 20.0
FLOORS = dict(blank=0.1, jump=0.05, saturated=0.005, occluded=0.02, edge=0.2, noise=0.04)
REASONS = dict(blank="blank, dark or constant frame",
               jump="abrupt jump in mean intensity against its tilt neighbours",
               saturated="saturated (many pixels at the series' maximum)",
               occluded="a large constant region (occluded)",
               edge="an edge band far from its neighbours' level (occluded at an edge)",
               noise="no structure shared with its tilt neighbours (noise)")
_MAX_SIZE = 64


def _binned(frame, size):
    """``frame`` block-averaged (float64) to at most ``size`` pixels per side."""
    ny, nx = frame.shape
    fy, fx = max(1, ny // size), max(1, nx // size)
    my, mx = ny // fy * fy, nx // fx * fx
    return frame[:my, :mx].reshape(my // fy, fy, mx // fx, fx).mean(axis=(1, 3),
                                                                     dtype=np.float64)


def _log_spectrum(frame):
    """Log amplitude spectrum of a Hann-windowed binned frame, DC removed, normalised."""
    b = _binned(frame, _MAX_SIZE)
    b = (b - b.mean()) * np.outer(np.hanning(b.shape[0]), np.hanning(b.shape[1]))
    amp = np.abs(np.fft.rfft2(b))
    amp[0, 0] = 0.0
    scale = np.median(amp)
    if not scale > 0:
        return None
    spec = np.log1p(amp / scale).ravel()
    spec -= spec.mean()
    norm = np.linalg.norm(spec)
    return spec / norm if norm > 0 else None


def tilt_stats(data):
    """Per tilt of ``data`` (a series or a chunk of its tilts): ``(mean, std, max)``, float64
    arrays; the first pass of the detection's features."""
    n = data.shape[0]
    mean, std, top = np.zeros(n), np.zeros(n), np.zeros(n)
    for i in range(n):
        raw = data[i]
        mean[i] = raw.mean(dtype=np.float64)
        std[i] = raw.std(dtype=np.float64)
        top[i] = float(raw.max())
    return mean, std, top


def tilt_features(data, top, tol):
    """Per tilt of ``data`` (a series or a chunk of its tilts), given the series' maximum
    ``top`` and the "constant" step ``tol``: the saturated fraction, the flat fraction, the
    edge-band means ``(n, 4)`` and the normalised log spectra (list) of the frame binned to
    at most 256 px per side (block averages keep a constant region constant)."""
    n = data.shape[0]
    sat, flat, bands, specs = np.zeros(n), np.zeros(n), np.zeros((n, 4)), []
    for i in range(n):
        at_top = np.count_nonzero(data[i] == top)
        # a few pixels at the maximum are the brightest feature, not a saturated detector
        sat[i] = at_top / data[i].size if at_top >= MIN_SATURATED_PIXELS else 0.0
        f = _binned(data[i], 4 * _MAX_SIZE)
        by, bx = max(1, f.shape[0] // 5), max(1, f.shape[1] // 5)
        still = np.zeros(f.shape, bool)
        still[:-1, :-1] = ((np.abs(np.diff(f, axis=0))[:, :-1] <= tol)
                           & (np.abs(np.diff(f, axis=1))[:-1, :] <= tol))
        flat[i] = still.mean()
        bands[i] = (f[:by].mean(), f[-by:].mean(), f[:, :bx].mean(), f[:, -bx:].mean())
        specs.append(_log_spectrum(f))
    return sat, flat, bands, specs


class LocalTilts:
    """The detection's two passes over an in-memory series (:func:`tilt_stats`,
    :func:`tilt_features`); the Dask executor has the same two methods over its tilt
    chunks."""

    def __init__(self, data):
        self.data = data
        self.shape = data.shape

    def tilt_stats(self):
        return tilt_stats(self.data)

    def tilt_features(self, top, tol):
        return tilt_features(self.data, top, tol)


def _features(tilts, idx):
    """Per-tilt raw features of the tilts ``idx`` (in that order): mean, std, saturated
    fraction, flat fraction, edge-band means and log spectra (:func:`tilt_features`), with
    the maximum and the typical std of those tilts."""
    mean, std, top = (v[idx] for v in tilts.tilt_stats())
    # "constant": steps below 1 % of the typical contrast (so the Fourier ringing of
    # noise-free data's vacuum counts as constant in every frame alike)
    tol = 0.01 * float(np.median(std))
    sat, flat, bands, specs = tilts.tilt_features(float(top.max()), tol)
    return mean, std, sat[idx], flat[idx], bands[idx], [specs[i] for i in idx]


def _neighbours(n):
    """Per position (in angle order): four neighbours, the two nearest on each side (at the
    ends, the four nearest on the one side there is)."""
    out = []
    for i in range(n):
        lo = min(max(i - 2, 0), max(n - 5, 0))
        out.append([j for j in range(lo, min(lo + 5, n)) if j != i])
    return out


def _predict(v, a, i, nb):
    """Robust prediction of ``v[i]`` from ``v[nb]`` at angle ``a[i]``: a repeated-median line
    (Siegel: per neighbour the median of its slopes to the others, then their median; the
    median intercept) through the neighbours, so that a
    smooth trend with tilt is followed, one-sided at the ends, and one bad neighbour does
    not move it much.  ``v`` may have trailing dimensions."""
    aj, vj = a[nb], v[nb]
    pairs = [(j, k) for j in range(len(nb)) for k in range(j + 1, len(nb))
             if aj[k] != aj[j]]
    if not pairs:
        return np.median(vj, axis=0)
    slopes = {}
    for j, k in pairs:
        slopes.setdefault(j, []).append((vj[k] - vj[j]) / (aj[k] - aj[j]))
        slopes.setdefault(k, []).append(slopes[j][-1])
    # Siegel's repeated median: one bad neighbour of four cannot carry the slope
    slope = np.median([np.median(v, axis=0) for v in slopes.values()], axis=0)
    da = (aj - a[i]).reshape((-1,) + (1,) * (vj.ndim - 1))
    return np.median(vj - slope * da, axis=0)


def _leverage(a, i, nb):
    """``sqrt(1 + h)`` of a straight line through the neighbours predicting at ``a[i]``,
    relative to its value for two neighbours at equal steps on each side: a prediction
    extrapolated at the ends of the tilt range is less certain, its deviation counts less."""
    def factor(x, x0):
        x = np.asarray(x, dtype=np.float64)
        sxx = float(((x - x.mean()) ** 2).sum())
        return np.sqrt(1.0 + 1.0 / x.size + ((x0 - x.mean()) ** 2 / sxx if sxx > 0 else 0.0))
    return factor(a[nb], a[i]) / factor([-2.0, -1.0, 1.0, 2.0], 0.0)


def _deviations(features, angles):
    """``{feature: d (n,)}`` from :func:`_features` of tilts sorted by ``angles``."""
    mean, std, sat, flat, bands, specs = features
    nb = _neighbours(len(mean))
    a = np.asarray(angles, dtype=np.float64)
    sec = 1.0 / np.cos(np.deg2rad(np.clip(a, -85.0, 85.0)))
    s_med = float(np.median(std)) or 1.0
    tiny = 1e-6 * s_med
    log_std = np.log(std + tiny)
    d = {k: np.zeros(len(mean)) for k in FLOORS}
    for i in range(len(mean)):
        near = [j for j in nb[i] if abs(j - i) <= 2]   # the spectra: the nearest only
        lev = _leverage(a, i, nb[i])
        d["blank"][i] = (_predict(log_std, a, i, nb[i]) - log_std[i]) / lev
        # at high tilt the mean against sec(angle): a slab's mass per view grows as 1/cos (a
        # compact object's is constant), which a line in the angle misses when it is
        # extrapolated to the ends of the range (a 4 degree pitched slab's -60 degree view
        # was dropped as a jump); near 0 degrees, where sec is flat, against the angle
        x = sec if abs(a[i]) >= SEC_FROM_DEG and np.all(a[nb[i]] * a[i] > 0) else a
        d["jump"][i] = (abs(mean[i] - _predict(mean, x, i, nb[i])) / s_med
                        / _leverage(x, i, nb[i]))
        d["saturated"][i] = sat[i] - np.median(sat[nb[i]])
        d["occluded"][i] = flat[i] - np.median(flat[nb[i]])
        level = _predict(bands, a, i, nb[i])
        d["edge"][i] = np.max(np.abs(bands[i] - level) / (np.abs(level) + s_med)) / lev
        best = 0.0
        if specs[i] is not None:
            best = max([float(specs[i] @ specs[j]) for j in near if specs[j] is not None]
                       or [0.0])
        d["noise"][i] = 1.0 - best
    return d


def detect_bad_tilts(tilt_series, angles_deg, *, skip=()):
    """Tilts that look bad, with the reason (module docstring).

    Parameters
    ----------
    tilt_series : ndarray, shape (n_tilts, ny, nx), or an object with the methods
        ``tilt_stats()`` and ``tilt_features(top, tol)`` of every tilt (:class:`LocalTilts`;
        the Dask executor computes them over its tilt chunks)
        Raw data.
    angles_deg : array_like, shape (n_tilts,)
    skip : sequence of int
        0-based tilts left out of the comparison (already excluded).

    Returns
    -------
    list of dict
        One per flagged tilt, in index order: ``tilt`` (0-based), ``view`` (1-based),
        ``angle_deg``, ``reason``, ``feature``, ``score`` (deviation / threshold, > 1).
        Empty when fewer than :data:`MIN_DETECT` tilts take part.
    """
    angles = np.asarray(angles_deg, dtype=np.float64)
    skip = set(int(i) for i in skip)
    idx = np.array([i for i in np.argsort(angles, kind="stable") if i not in skip], np.int64)
    if idx.size < MIN_DETECT:
        return []
    tilts = (tilt_series if hasattr(tilt_series, "tilt_features")
             else LocalTilts(np.asarray(tilt_series)))
    d = _deviations(_features(tilts, idx), angles[idx])
    ratio = {}
    for k, v in d.items():
        centre = float(np.median(v))
        spread = max(1.4826 * float(np.median(np.abs(v - centre))), FLOORS[k])
        thr = centre + K_MAD * spread
        if k == "noise":   # and below half the typical best correlation
            thr = max(thr, 1.0 - 0.5 * (1.0 - centre))
        ratio[k] = v / thr
    out = []
    for pos, i in enumerate(idx):
        k = max(ratio, key=lambda f: ratio[f][pos])
        if ratio[k][pos] > 1.0:
            if d["blank"][pos] > np.log(20.0):   # a blank frame is also flat, noisy, ...
                k = "blank"
            out.append(dict(tilt=int(i), view=int(i) + 1, angle_deg=float(angles[i]),
                            reason=REASONS[k], feature=k,
                            score=round(float(ratio[k][pos]), 2)))
    return sorted(out, key=lambda r: r["tilt"])


def check_exclude(exclude, n, name="exclude"):
    """``exclude`` as sorted unique 0-based indices; a one-line ``ValueError`` naming
    ``name`` for an index outside ``0..n-1``, a list that excludes every tilt, or one that
    leaves fewer than :data:`MIN_KEPT` (an empty list is always accepted)."""
    try:
        raw = np.asarray(exclude if exclude is not None else [], dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a list of tilt indices, got {exclude!r}") from None
    if raw.size and (not np.all(np.isfinite(raw)) or np.any(raw != np.round(raw))):
        raise ValueError(f"{name} must hold integer tilt indices, got {exclude!r}")
    idx = np.unique(raw.astype(np.int64))
    bad = idx[(idx < 0) | (idx >= n)]
    if bad.size:
        raise ValueError(f"{name} names tilt(s) {bad.tolist()} that do not exist (0-based "
                         f"indices 0..{n - 1}; the series has {n} tilts)")
    if idx.size >= n:
        raise ValueError(f"{name} excludes every tilt ({n}); nothing is left to align")
    if idx.size and n - idx.size < MIN_KEPT:
        raise ValueError(f"{name} leaves {n - idx.size} of {n} tilts; at least {MIN_KEPT} "
                         "must remain")
    return idx


@dataclass
class Exclusion:
    """Which tilts a run leaves out and why (:func:`choose_tilts`)."""

    n: int
    excluded: np.ndarray
    entries: list = field(default_factory=list)
    record: dict = field(default_factory=dict)

    @property
    def keep(self):
        mask = np.ones(self.n, bool)
        mask[self.excluded] = False
        return mask


def choose_tilts(data, angles_deg, exclude=None, auto_exclude=True, include=None):
    """The tilts to leave out: the user's ``exclude`` plus, with ``auto_exclude``, those
    :func:`detect_bad_tilts` flags, except ``include`` (0-based, forced back).

    Returns
    -------
    Exclusion
        ``entries``: per excluded tilt ``tilt``, ``view``, ``angle_deg``, ``source``
        (``"user"`` or ``"auto"``), ``reason`` (and ``score`` for automatic ones);
        ``record``: the detection's decisions for ``AlignResult.options["bad_tilts"]``.
    """
    n = data.shape[0]
    angles = np.asarray(angles_deg, dtype=np.float64)
    user = check_exclude(exclude, n)
    forced = check_exclude(include, n + MIN_KEPT, "include") if include is not None else []
    if len(forced) and forced.max() >= n:
        raise ValueError(f"include names tilt(s) {forced[forced >= n].tolist()} that do not "
                         f"exist (0-based indices 0..{n - 1})")
    entries = [dict(tilt=int(i), view=int(i) + 1, angle_deg=float(angles[i]), source="user",
                    reason="excluded by the user") for i in user]
    record = dict(auto=bool(auto_exclude), threshold=f"median + {K_MAD:g} MAD per feature",
                  min_kept=max(MIN_KEPT, math.ceil(AUTO_MIN_FRACTION * n)), flagged=[],
                  included=[int(i) for i in forced])
    if auto_exclude:
        flagged = detect_bad_tilts(data, angles, skip=user)
        record["flagged"] = flagged
        auto = [f for f in flagged if f["tilt"] not in set(int(i) for i in forced)]
        if n - len(user) - len(auto) < record["min_kept"] and auto:
            warnings.warn(f"bad-tilt detection flags {len(auto)} of {n} tilts (views "
                          f"{[f['view'] for f in auto]}); more than the automatic limit "
                          f"allows (keep >= {record['min_kept']}), so none is excluded "
                          "automatically -- pass exclude= to leave some out")
            auto = []
        for f in auto:
            entries.append(dict(f, source="auto"))
            log.info("excluding tilt %d (%.2f deg): %s (score %.2f)", f["tilt"],
                     f["angle_deg"], f["reason"], f["score"])
    entries.sort(key=lambda e: e["tilt"])
    excluded = np.array([e["tilt"] for e in entries], np.int64)
    return Exclusion(n=n, excluded=excluded, entries=entries, record=record)


def interpolate_shifts(shifts, angles_deg, keep):
    """Shifts of all tilts from those of the kept ones, interpolated in tilt angle.

    dx: the least-squares fit of ``c + a cos th + b sin th`` over the kept tilts is taken out,
    the rest interpolated linearly in angle (the nearest value beyond the ends), and the fit
    added back at every angle: a gauge sinusoid (DESIGN.md) present in the kept shifts is
    carried over exactly, so the interpolated shifts are in the same gauge.  dy: linear in
    angle (a constant, dy's gauge, is carried over exactly).

    Parameters
    ----------
    shifts : ndarray, shape (n_kept, 2)
    angles_deg : ndarray, shape (n_tilts,)
    keep : ndarray of bool, shape (n_tilts,)

    Returns
    -------
    ndarray, float64, shape (n_tilts, 2)
        The kept shifts unchanged, the others interpolated.
    """
    angles = np.asarray(angles_deg, dtype=np.float64)
    s = np.asarray(shifts, dtype=np.float64)
    a_k = angles[keep]
    order = np.argsort(a_k)
    M = gauge_basis(a_k, center=True)
    coef, *_ = np.linalg.lstsq(M, s[:, 0], rcond=None)
    rest = s[:, 0] - M @ coef
    out = np.zeros((angles.size, 2))
    out[:, 0] = (np.interp(angles, a_k[order], rest[order])
                 + gauge_basis(angles, center=True) @ coef)
    out[:, 1] = np.interp(angles, a_k[order], s[order, 1])
    out[keep] = s
    return out


class _SubsetStart:
    """An alignment file's start (``shifts_for(n)``, ``axis_angle_deg``) for the kept tilts."""

    def __init__(self, start, keep):
        self.shifts = np.asarray(start.shifts_for(keep.size))[keep]
        self.axis_angle_deg = getattr(start, "axis_angle_deg", None)
        self.path = getattr(start, "path", None)

    def shifts_for(self, n):
        if n != len(self.shifts):
            raise ValueError(f"initial_shifts: {len(self.shifts)} kept tilts, not {n}")
        return self.shifts


def subset_start(initial_shifts, keep):
    """``initial_shifts`` restricted to the kept tilts (arrays and alignment files; names
    of baselines unchanged)."""
    if initial_shifts is None or isinstance(initial_shifts, str):
        return initial_shifts
    if hasattr(initial_shifts, "shifts_for"):
        return _SubsetStart(initial_shifts, keep)
    s = np.asarray(initial_shifts, dtype=np.float64)
    if s.ndim != 2 or s.shape != (keep.size, 2):
        raise ValueError(f"initial_shifts must have shape ({keep.size}, 2), got {s.shape}")
    return s[keep]


def expand_result(sub, original, angles_deg, exclusion):
    """The full-length result of a run on the kept tilts.

    ``shifts``: :func:`interpolate_shifts`; ``aligned``: the kept views as the run produced
    them, each excluded view taken from ``original`` (the user's data, every tilt) turned and
    resampled exactly as the run resampled the kept ones (quarter turns, a slab's residual
    angle, then rotation by the loop's axis angle and translation);
    ``options["excluded"]``/``["bad_tilts"]`` and ``excluded``.
    """
    from .axis import rotate_shift
    from .orient import turn_like
    from .shift import fourier_shift

    keep = exclusion.keep
    out_idx = np.flatnonzero(~keep)
    shifts = interpolate_shifts(sub.shifts, angles_deg, keep)
    orient = (sub.options or {}).get("orientation")
    views = np.ascontiguousarray(original[out_idx], dtype=np.float32)
    alpha = float(sub.axis_angle_deg or 0.0)
    if orient:
        views = turn_like(views, orient)
        alpha -= 90.0 * orient.get("quarter_turns", 0) + (orient.get("resampled_deg") or 0.0)
        alpha = (alpha + 180.0) % 360.0 - 180.0
    if abs(alpha) < 1e-9:
        views = fourier_shift(views, -shifts[out_idx])
    else:
        views = rotate_shift(views, alpha, shifts[out_idx])
    aligned = np.empty((exclusion.n,) + sub.aligned.shape[1:], np.float32)
    aligned[keep] = sub.aligned
    aligned[out_idx] = views
    sub.aligned = aligned
    return expand_fields(sub, shifts, angles_deg, exclusion)


def expand_fields(sub, shifts, angles_deg, exclusion):
    """:func:`expand_result` but for ``aligned``: ``shifts`` (every tilt, as
    :func:`interpolate_shifts` gives them), uncertainties and per-tilt quality (NaN for an
    excluded tilt), angles, ``options["excluded"]``/``["bad_tilts"]`` and ``excluded``."""
    keep = exclusion.keep
    out_idx = np.flatnonzero(~keep)
    sub.shifts = shifts
    if getattr(sub, "uncertainty", None) is not None:
        # an interpolated shift has no measured uncertainty
        full = np.full((exclusion.n, 2), np.nan)
        full[keep] = sub.uncertainty
        sub.uncertainty = full
    for name in ("tilt_residual", "tilt_coherence"):   # no excluded view is compared
        if getattr(sub, name, None) is not None:
            full = np.full(exclusion.n, np.nan)
            full[keep] = getattr(sub, name)
            setattr(sub, name, full)
    sub.angles_deg = np.asarray(angles_deg, dtype=np.float64) + getattr(sub, "tilt_offset_deg",
                                                                         0.0)
    sub.options = dict(sub.options or {}, excluded=exclusion.entries,
                       bad_tilts=exclusion.record)
    sub.excluded = out_idx
    return sub
