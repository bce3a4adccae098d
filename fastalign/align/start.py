"""Starting point of the alignment loop: starting shifts and the coarse axis angle.

The loop starts from the given shifts, a baseline's (``initial_shifts="xcorr"/"com"``), an
alignment file's (``initial_shifts=fastalign.io.read_alignment("run.xf")``, also its axis
angle), or zeros; for a compact object (the x-integrated profiles agree after alignment) dy
starts from the profiles and dx from the centres of mass (:func:`profile_start`).  With
``refine="axis_angle"`` the axis angle starts from the tilt invariance of the profiles
(:func:`coarse_axis`).  Everything here works on the data's profiles, never on a volume.
"""
import logging
import time
import warnings

import numpy as np

from . import axis as _axis
from .profiles import profile_y_shifts

log = logging.getLogger("fastalign.align")

__all__ = ["PROFILE_USE", "PROFILE_HOLD", "start_shifts", "profile_start", "column_sums",
           "profile_mass", "com_x_start", "coarse_axis", "initial_total"]

# y_profile="auto": the x-integrated profiles start dy when their misfit is at most
# PROFILE_USE (a compact object; com_start="auto" then starts dx from the centres of mass),
# and hold it until the full level's x updates are sub-pixel when at most PROFILE_HOLD
PROFILE_USE = 0.2
PROFILE_HOLD = 0.02


#: a file's axis angle further than this (degrees) from the one given is warned about
AXIS_FILE_TOL_DEG = 0.5


def start_shifts(initial_shifts, n):
    """Starting ``(dx, dy)``: zeros for None, else the array checked and shaped ``(n, 2)``.

    An alignment read from a file (``fastalign.io.read_alignment``: any value with a
    ``shifts_for(n)`` method) gives its shifts; it refuses a count other than ``n``, naming
    the file."""
    if initial_shifts is None:
        return np.zeros((n, 2))
    if hasattr(initial_shifts, "shifts_for"):
        initial_shifts = initial_shifts.shifts_for(n)
    total = np.array(initial_shifts, dtype=np.float64).reshape(n, 2)
    if not np.all(np.isfinite(total)):
        raise ValueError("initial_shifts contains NaN/Inf")
    return total


def initial_total(data, angles, opts):
    """Starting totals ``(n, 2)``: ``opts.initial_shifts`` (array), a baseline's shifts
    (``"xcorr"``/``"com"``, computed from ``data``), or zeros."""
    n = len(angles)
    if isinstance(opts.initial_shifts, str):
        from . import baselines
        fn = baselines.xcorr_shifts if opts.initial_shifts == "xcorr" else baselines.com_shifts
        return np.asarray(fn(data, angles), dtype=np.float64).reshape(n, 2)
    return start_shifts(opts.initial_shifts, n)


def coarse_axis(data, opts):
    """Starting axis angle: ``opts.axis_angle_deg`` if given; with ``"axis_angle"`` refined
    the amplitude-spectrum estimate, refined where the aligned x-integrated profiles agree
    best when they can agree (a compact object: the same test as ``y_profile``'s); else 0.

    A starting alignment read from a file (``initial_shifts`` with an ``axis_angle_deg``,
    ``fastalign.io.read_alignment``) gives the angle when ``axis_angle_deg`` is not set (the
    fixed angle, or the start of its refinement); when it is set, a file angle more than
    AXIS_FILE_TOL_DEG away is warned about.

    Returns ``(alpha, record, seconds)``: ``record`` holds the estimates for the options."""
    file_alpha = getattr(opts.initial_shifts, "axis_angle_deg", None)
    source = getattr(opts.initial_shifts, "path", "") or "initial_shifts"
    if opts.axis_angle_deg is not None:
        if (file_alpha is not None and abs((file_alpha - opts.axis_angle_deg + 180.0) % 360.0
                                           - 180.0) > AXIS_FILE_TOL_DEG):
            warnings.warn(f"{source}: its axis angle {file_alpha:.3f} deg differs from "
                          f"axis_angle_deg={opts.axis_angle_deg:.3f}; using "
                          f"{opts.axis_angle_deg:.3f} and only the file's shifts",
                          stacklevel=3)
        return opts.axis_angle_deg, {}, 0.0
    if file_alpha is not None:
        log.info("axis angle %.3f deg from %s", file_alpha, source)
        return float(file_alpha), dict(axis_angle_deg_file=float(file_alpha)), 0.0
    if not opts.refine_axis:
        return 0.0, {}, 0.0
    t0 = time.perf_counter()
    alpha = _axis.coarse_axis_angle(data, search_deg=opts.axis_search_deg)
    a_prof, m_prof = _axis.profile_axis_angle(data, alpha, search_deg=opts.axis_search_deg)
    record = dict(axis_angle_deg_amplitude=alpha, axis_angle_deg_profiles=a_prof,
                  axis_profile_misfit=m_prof)
    if m_prof <= PROFILE_USE:
        alpha = a_prof
    log.info("coarse axis angle %.3f deg (amplitude spectra %.3f, profiles %.3f with "
             "misfit %.3g)", alpha, record["axis_angle_deg_amplitude"], a_prof, m_prof)
    return alpha, record, time.perf_counter() - t0


def profile_start(profiles, col_sums, center_offset, total, opts, *, set_dy, set_dx):
    """Starting shifts from the tilt-invariant profiles (``y_profile``/``com_start="auto"``).

    The x-integrated ``profiles`` are aligned; when they agree (misfit <= PROFILE_USE: a
    compact object), ``set_dy`` puts their dy into ``total[:, 1]`` and ``set_dx`` starts
    ``total[:, 0]`` from the x centres of mass of the y-integrated ``col_sums``
    (:func:`com_x_start`).  The decisions are recorded in ``opts``.  Returns ``hold_y``: dy
    was set and the misfit is <= PROFILE_HOLD (keep that dy until the finest level's x
    updates are sub-pixel)."""
    dy, misfit = profile_y_shifts(profiles)
    log.info("x-integrated profiles: misfit %.4g", misfit)
    compact = misfit <= PROFILE_USE
    used = bool(set_dy and compact)
    if used:
        total[:, 1] = dy
    hold_y = bool(used and misfit <= PROFILE_HOLD)
    opts.update(y_profile_misfit=misfit, y_profile_used=used, y_profile_held=hold_y)
    if set_dx and compact:
        com_x_start(col_sums, center_offset, total, opts)
    return hold_y


def column_sums(stack):
    """Per-tilt y-integrated profiles ``sum_y stack[i, y, x]``, float64 ``(n, nx)``."""
    return np.asarray(stack).sum(axis=1, dtype=np.float64)


def profile_mass(col_sums):
    """The object's mass in y-integrated profiles ``(n, nx)``: each profile minus its
    background (the median of the two outermost columns on each side), flipped when the
    object is dark on a bright background.  float64 ``(n, nx)``, not clipped."""
    p = np.asarray(col_sums, dtype=np.float64)
    k = min(2, max(1, p.shape[1] // 8))
    bg = np.median(np.concatenate([p[:, :k], p[:, -k:]], axis=1), axis=1)
    w = p - bg[:, None]
    return -w if w.sum() < 0 else w


def com_x_start(col_sums, center_offset, total, opts):
    """``com_start="auto"`` on a compact object: ``total[:, 0]`` from the x centre of mass of
    each tilt's y-integrated profile (``col_sums``, :func:`column_sums`).

    For an object inside the field of view at every tilt the centre of mass of projection
    ``th`` is ``(nx-1)/2 + c0 + cx cos th + cz sin th + dx`` (:func:`fastalign.com_shifts`):
    the sinusoid is the gauge and ``c0`` minus the geometry's ``center_offset`` is the part of
    the centre offset that dx carries, so it starts dx (large centre offsets included) within
    the loop's capture range.  The background is the median of the two outermost columns on
    each side; either contrast is accepted (a dark object on a bright background is flipped);
    values are clipped at zero.  Recorded as ``x_com_start`` in ``opts``; not used when a
    tilt has no mass above the background.
    """
    w = profile_mass(col_sums)
    nx = w.shape[1]
    np.clip(w, 0.0, None, out=w)
    mass = w.sum(axis=1)
    used = bool(np.all(mass > 0))
    if used:
        total[:, 0] = ((w @ np.arange(nx, dtype=np.float64)) / mass - 0.5 * (nx - 1)
                       - center_offset)
    opts.update(x_com_start=used)
    return used
