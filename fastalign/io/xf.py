"""IMOD ``.xf`` transform files (translations, and the rotation of a tilted axis).

One line per tilt, ``A11 A12 A21 A22 DX DY``: IMOD maps a raw-image point to the aligned image
by ``x' = A11 (x - xc) + A12 (y - yc) + DX + xc``, ``y' = A21 (x - xc) + A22 (y - yc) + DY + yc``.
fastalign writes ``A = R(-alpha) = [[cos a, sin a], [-sin a, cos a]]`` (the identity for an
untilted axis, ``alpha = 0``) and ``DX, DY = -dx, -dy`` where ``(dx, dy)`` are its shifts
(DESIGN.md: the measured image equals the ideal projection translated by ``(dx, dy)``, then
rotated by the axis angle, :mod:`fastalign.align.axis`; the ``.xf`` holds the transform that
*aligns* it, as IMOD's ``newstack -xform`` applies it).  :func:`read_xf` inverts the sign, so
``read_xf(write_xf(p, s)) == s``.

The centre ``(xc, yc)`` is taken as ``((nx-1)/2, (ny-1)/2)`` in 0-based pixel indices.  IMOD
states it as ``(nx/2, ny/2)``; if its pixel centres sit at half-integer coordinates the two
agree, otherwise a rotated transform differs by a translation of at most
``0.5 sqrt(2) |2 sin(alpha/2)|`` px (0.06 px at 5 degrees).
"""
import os

import numpy as np

from ._atomic import atomic_write

__all__ = ["write_xf", "read_xf"]


def write_xf(path, shifts, *, axis_angle_deg=0.0, overwrite=False, inputs=()):
    """Write shifts (and the tilt-axis rotation) as an IMOD ``.xf`` file, atomically.

    Parameters
    ----------
    path : str or os.PathLike
    shifts : array_like, shape (n_tilts, 2)
        fastalign shifts ``(dx, dy)`` in pixels.  The file gets ``DX, DY = -dx, -dy``.
    axis_angle_deg : float
        Tilt-axis angle (degrees, :mod:`fastalign.align.axis`); the linear part of every line
        is ``R(-alpha)``.  0 writes the identity ``1 0 0 1``.
    overwrite : bool
        Replace an existing file.
    inputs : iterable of path
        Input files that must not be written to.

    Returns
    -------
    str
        The path written.

    Notes
    -----
    Each line is ``%12.7f`` four times for the matrix and ``%14.4f`` twice for the
    translation, separated by spaces (IMOD reads free format; 1e-4 px resolution).
    """
    s = np.asarray(shifts, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] != 2 or s.shape[0] == 0:
        raise ValueError(f"shifts must have shape (n_tilts, 2), got {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError("shifts contain NaN/Inf")
    alpha = float(axis_angle_deg)
    if not np.isfinite(alpha):
        raise ValueError(f"axis_angle_deg must be finite, got {axis_angle_deg!r}")
    ca, sa = np.cos(np.deg2rad(alpha)), np.sin(np.deg2rad(alpha))
    # 0.0 + v / 0.0 - v: no "-0.0000000" for an untilted axis
    linear = f"{0.0 + ca:12.7f} {0.0 + sa:12.7f} {0.0 - sa:12.7f} {0.0 + ca:12.7f}"
    # 0.0 - v rather than -v so that a zero shift is written "0.0000", not "-0.0000"
    lines = [f"{linear} {0.0 - dx:14.4f} {0.0 - dy:14.4f}\n" for dx, dy in s]
    with atomic_write(path, overwrite=overwrite, inputs=inputs) as tmp:
        with open(tmp, "w", encoding="ascii") as fh:
            fh.writelines(lines)
    return os.fspath(path)


def read_xf(path, *, return_matrices=False):
    """Read an IMOD ``.xf`` file back into fastalign shifts.

    Parameters
    ----------
    path : str or os.PathLike
    return_matrices : bool
        Also return the 2x2 linear parts (rotation/scale/stretch written by other tools).

    Returns
    -------
    shifts : ndarray, float64, shape (n_tilts, 2)
        ``(dx, dy) = (-DX, -DY)``: the inverse of :func:`write_xf`'s sign.  For transforms with
        a non-identity linear part this is only the translation column, negated.
    matrices : ndarray, float64, shape (n_tilts, 2, 2)
        Only with ``return_matrices=True``: ``[[A11, A12], [A21, A22]]`` per line.  For a
        file written by :func:`write_xf` with ``axis_angle_deg=a``, ``a`` is
        ``degrees(atan2(A12, A11))``.

    Raises
    ------
    ValueError
        A line without six numbers (file and line named) or an empty file.
    """
    path = os.fspath(path)
    rows = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, start=1):
            tokens = line.split()
            if not tokens:
                continue
            if len(tokens) != 6:
                raise ValueError(f"{path}, line {lineno}: expected 6 numbers "
                                 f"'A11 A12 A21 A22 DX DY', got {line.strip()!r}")
            try:
                rows.append([float(t) for t in tokens])
            except ValueError:
                raise ValueError(f"{path}, line {lineno}: non-numeric value in "
                                 f"{line.strip()!r}") from None
    if not rows:
        raise ValueError(f"{path} holds no transforms")
    arr = np.asarray(rows, dtype=np.float64)
    shifts = 0.0 - arr[:, 4:6]  # not -arr: keeps zero shifts +0.0
    if return_matrices:
        return shifts, arr[:, :4].reshape(-1, 2, 2)
    return shifts
