"""The alignment gauge (DESIGN.md): what a reconstruction-based alignment cannot determine.

Translating the object by ``(cx, cz)`` moves projection ``th`` by ``cx cos th + cz sin th``
along x; translating it along the tilt axis moves every projection by the same ``dy``.  Shifts
are therefore reported, and compared, after removing the least-squares fit of
``a cos th + b sin th`` from dx and the mean from dy.  A constant in dx is not a gauge: it is a
rotation-centre offset, which :func:`split_center` separates from the shifts by convention.

Every gauge computation of the package lives here: the loop's gauge-free updates and reported
shifts (:func:`fix_gauge`), the centre split (:func:`split_center`), the baselines' per-row
sinusoid fits and the test helpers (:func:`remove_sinusoid`, :func:`remove_gauge`).
"""
import numpy as np

from .._validate import as_angles_deg

__all__ = ["gauge_basis", "sinusoid_fit", "remove_sinusoid", "fix_gauge", "split_center",
           "gauge_error", "remove_gauge"]


def gauge_basis(angles_deg, center=False):
    """Columns ``(cos th, sin th)`` (with ``center``: ``(1, cos th, sin th)``), float64
    ``(n_tilts, 2 or 3)``."""
    th = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    cols = [np.cos(th), np.sin(th)]
    if center:
        cols.insert(0, np.ones_like(th))
    return np.stack(cols, axis=1)


def sinusoid_fit(dx, angles_deg, center=False):
    """Least-squares ``(a, b)`` of ``dx ~ a cos(th) + b sin(th)`` (with ``center``:
    ``(c0, a, b)`` of ``c0 + a cos th + b sin th``); ``dx`` may be ``(n,)`` or ``(n, k)``."""
    coef, *_ = np.linalg.lstsq(gauge_basis(angles_deg, center),
                               np.asarray(dx, dtype=np.float64), rcond=None)
    return coef


def remove_sinusoid(values, angles_deg, center=False):
    """``values`` minus their least-squares sinusoid (columns of ``(n,)`` or ``(n, k)``).

    Returns ``(residual, coef)`` (``coef`` as :func:`sinusoid_fit`)."""
    M = gauge_basis(angles_deg, center)
    coef, *_ = np.linalg.lstsq(M, np.asarray(values, dtype=np.float64), rcond=None)
    return values - M @ coef, coef


def fix_gauge(shifts, angles_deg):
    """Shifts in the reported gauge: sinusoid fit removed from dx, mean removed from dy.

    Returns ``(fixed_shifts, (a, b, mean_dy))``.
    """
    s = np.array(shifts, dtype=np.float64, copy=True)
    a, b = sinusoid_fit(s[:, 0], angles_deg)
    th = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    s[:, 0] -= a * np.cos(th) + b * np.sin(th)
    my = s[:, 1].mean()
    s[:, 1] -= my
    return s, (float(a), float(b), float(my))


def split_center(shifts, angles_deg):
    """Separate a rotation-centre offset from the shifts (:mod:`fastalign.align.axis`).

    Returns ``(fixed_shifts, c0, (a, b, mean_dy))``: ``dx - (c0 + a cos th + b sin th)`` and
    ``dy - mean(dy)``.
    """
    s = np.array(shifts, dtype=np.float64, copy=True)
    s[:, 0], (c0, a, b) = remove_sinusoid(s[:, 0], angles_deg, center=True)
    my = s[:, 1].mean()
    s[:, 1] -= my
    return s, float(c0), (float(a), float(b), float(my))


def gauge_error(estimated, true, angles_deg):
    """RMS error ``(rms_x, rms_y)`` in pixels after removing the gauge from the difference."""
    d, _ = fix_gauge(np.asarray(estimated) - np.asarray(true), angles_deg)
    return float(np.sqrt(np.mean(d[:, 0] ** 2))), float(np.sqrt(np.mean(d[:, 1] ** 2)))


def _as_shifts(s, n, name):
    a = np.asarray(s, dtype=np.float64)
    if a.shape != (n, 2):
        raise ValueError(f"{name} must have shape (n_tilts, 2) = ({n}, 2), got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN/Inf values")
    return a


def remove_gauge(err_shifts, angles_deg):
    """Remove the alignment gauge from shift errors (validated; for tests and benchmarks).

    Parameters
    ----------
    err_shifts : array_like, shape (n_tilts, 2)
        Shift errors ``(dx, dy)`` in pixels (estimated minus true).
    angles_deg : array_like, shape (n_tilts,)
        Tilt angles in degrees.

    Returns
    -------
    err : ndarray, float64, shape (n_tilts, 2)
        ``dx`` minus its least-squares fit ``a cos(th) + b sin(th)``; ``dy`` minus its mean.
    """
    angles = as_angles_deg(angles_deg)
    e = _as_shifts(err_shifts, angles.size, "err_shifts").copy()
    e[:, 0] = remove_sinusoid(e[:, 0], angles)[0]
    e[:, 1] -= e[:, 1].mean()
    return e
