"""The alignment gauge (DESIGN.md): what a reconstruction-based alignment cannot determine.

Translating the object by ``(cx, cz)`` moves projection ``th`` by ``cx cos th + cz sin th``
along x; translating it along the tilt axis moves every projection by the same ``dy``.
"""
import numpy as np


def sinusoid_fit(dx, angles_deg):
    """Least-squares ``(a, b)`` of ``dx ~ a cos(th) + b sin(th)``."""
    th = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    M = np.stack([np.cos(th), np.sin(th)], axis=1)
    coef, *_ = np.linalg.lstsq(M, np.asarray(dx, dtype=np.float64), rcond=None)
    return coef


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


def gauge_error(estimated, true, angles_deg):
    """RMS error ``(rms_x, rms_y)`` in pixels after removing the gauge from the difference."""
    d, _ = fix_gauge(np.asarray(estimated) - np.asarray(true), angles_deg)
    return float(np.sqrt(np.mean(d[:, 0] ** 2))), float(np.sqrt(np.mean(d[:, 1] ** 2)))
