"""IMOD alignment files: ``.xf`` transforms, ``.xtilt`` and ``EXCLUDELIST`` lists.

``.xf``: one line per tilt, ``A11 A12 A21 A22 DX DY``.  IMOD maps a raw-image point to the
aligned image by ``x' = A11 (x - xc) + A12 (y - yc) + DX + xc``,
``y' = A21 (x - xc) + A22 (y - yc) + DY + yc``: the linear part acts about the centre and the
translation ``(DX, DY)`` is applied *after* it, in the aligned frame.  fastalign writes
``A = R(-alpha) = [[cos a, sin a], [-sin a, cos a]]`` (the identity for an untilted axis,
``alpha = 0``) and ``DX, DY = -dx, -dy`` where ``(dx, dy)`` are its shifts (DESIGN.md: the
measured image equals the ideal projection translated by ``(dx, dy)``, then rotated by the
axis angle, :mod:`fastalign.align.axis`; the ``.xf`` holds the transform that *aligns* it, as
IMOD's ``newstack -xform`` applies it).  Because the translation comes after the rotation,
``(dx, dy) = (-DX, -DY)`` whatever the angle: :func:`read_xf` inverts the sign, so
``read_xf(write_xf(p, s)) == s``, and :func:`read_xf_model` also recovers the angle,
``alpha = atan2(A12, A11)``.

The centre ``(xc, yc)`` is taken as ``((nx-1)/2, (ny-1)/2)`` in 0-based pixel indices.  IMOD
states it as ``(nx/2, ny/2)``; if its pixel centres sit at half-integer coordinates the two
agree, otherwise a rotated transform differs by a translation of at most
``0.5 sqrt(2) |2 sin(alpha/2)|`` px (0.06 px at 5 degrees).

``.xtilt``: one X-axis tilt angle per tilt (degrees) for IMOD's ``tilt`` (``XTILTFILE``);
fastalign has no X-axis tilt, so :func:`write_xtilt` writes zeros.

``EXCLUDELIST``: the views ``newstack``/``tilt`` leave out, 1-based, as a comma-separated
list of numbers and ranges (``1,5-7``): :func:`format_excludelist` and its inverse
:func:`parse_excludelist` convert from and to fastalign's 0-based indices.
"""
import os
import re
import warnings
from dataclasses import dataclass

import numpy as np

from ._atomic import atomic_write
from .._ranges import format_excludelist  # noqa: F401 (re-exported: fastalign.io)

__all__ = ["write_xf", "read_xf", "read_xf_model", "XfModel", "xf_to_model", "write_xtilt",
           "format_excludelist", "parse_excludelist", "ROTATION_TOL", "SPREAD_TOL_DEG"]

#: largest ``|A A^T - I|`` entry of a linear part accepted as a pure rotation
ROTATION_TOL = 1e-3
#: per-tilt rotations further than this (degrees) from their common angle are warned about
SPREAD_TOL_DEG = 0.05


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


def _read_rows(path):
    """``(rows (k, 6) float64, line numbers (k,))`` of the non-blank lines of an ``.xf``."""
    rows, linenos = [], []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, start=1):
            tokens = line.split()
            if not tokens:
                continue
            if len(tokens) != 6:
                raise ValueError(f"{path}, line {lineno}: expected 6 numbers "
                                 f"'A11 A12 A21 A22 DX DY', got {line.strip()!r}")
            try:
                values = [float(t) for t in tokens]
            except ValueError:
                raise ValueError(f"{path}, line {lineno}: non-numeric value in "
                                 f"{line.strip()!r}") from None
            if not all(np.isfinite(values)):
                raise ValueError(f"{path}, line {lineno}: NaN/Inf in {line.strip()!r}")
            rows.append(values)
            linenos.append(lineno)
    if not rows:
        raise ValueError(f"{path} holds no transforms")
    return np.asarray(rows, dtype=np.float64), np.asarray(linenos)


def _check_count(path, found, n, what="transforms"):
    if n is not None and found != n:
        raise ValueError(f"{path} holds {found} {what}, the tilt series has {n} images "
                         "(one line per image, in the stack's order)")


def read_xf(path, *, n=None, return_matrices=False):
    """Read an IMOD ``.xf`` file back into fastalign shifts.

    Parameters
    ----------
    path : str or os.PathLike
    n : int, optional
        Number of images of the tilt series the file belongs to; a different number of
        lines is refused.
    return_matrices : bool
        Also return the 2x2 linear parts (rotation/scale/stretch written by other tools).

    Returns
    -------
    shifts : ndarray, float64, shape (n_tilts, 2)
        ``(dx, dy) = (-DX, -DY)``: the inverse of :func:`write_xf`'s sign.  IMOD applies
        ``(DX, DY)`` after the linear part, so this holds for any rotation; it is the shift in
        the aligned frame (:mod:`fastalign.align.axis`).
    matrices : ndarray, float64, shape (n_tilts, 2, 2)
        Only with ``return_matrices=True``: ``[[A11, A12], [A21, A22]]`` per line.  For a
        file written by :func:`write_xf` with ``axis_angle_deg=a``, ``a`` is
        ``degrees(atan2(A12, A11))`` (:func:`read_xf_model` does this with checks).

    Raises
    ------
    ValueError
        A line without six finite numbers (file and line named), an empty file, or a
        line count different from ``n`` (file and both counts named).
    """
    path = os.fspath(path)
    arr, _ = _read_rows(path)
    _check_count(path, len(arr), n)
    shifts = 0.0 - arr[:, 4:6]  # not -arr: keeps zero shifts +0.0
    if return_matrices:
        return shifts, arr[:, :4].reshape(-1, 2, 2)
    return shifts


@dataclass(frozen=True, eq=False)
class XfModel:
    """An ``.xf`` file in fastalign's model (:func:`read_xf_model`).

    Attributes
    ----------
    shifts : ndarray, float64, shape (n, 2)
        ``(dx, dy)`` in pixels, aligned frame (DESIGN.md sign).
    axis_angle_deg : float
        The common tilt-axis angle (circular mean of the per-line angles).
    rotations_deg : ndarray, shape (n,)
        Per-line angles ``atan2(A12, A11)`` in degrees.
    path : str
    """

    shifts: np.ndarray
    axis_angle_deg: float
    rotations_deg: np.ndarray
    path: str = ""

    def shifts_for(self, n):
        """The shifts for a tilt series of ``n`` images (count checked, file named)."""
        _check_count(self.path, len(self.shifts), n)
        return self.shifts.copy()


def _common_angle(path, angles_deg, where, spread_tol_deg):
    """Circular mean of per-tilt angles; warns when they spread beyond ``spread_tol_deg``."""
    rad = np.deg2rad(angles_deg)
    mean = float(np.rad2deg(np.arctan2(np.sin(rad).mean(), np.cos(rad).mean())))
    dev = (np.asarray(angles_deg) - mean + 180.0) % 360.0 - 180.0
    spread = float(np.abs(dev).max())
    if spread > spread_tol_deg:
        k = int(np.argmax(np.abs(dev)))
        warnings.warn(f"{path}: the per-tilt rotations differ from their common angle "
                      f"{mean:.4f} deg by up to {spread:.4f} deg ({where[k]}); fastalign "
                      "models one axis angle for the stack and uses the common angle",
                      stacklevel=3)
    return mean


def xf_to_model(matrices, translations, *, path="<xf>", lines=None, rotation_tol=ROTATION_TOL,
                spread_tol_deg=SPREAD_TOL_DEG):
    """Convert ``.xf`` linear parts and translations into fastalign's model.

    Parameters
    ----------
    matrices : array_like, shape (n, 2, 2)
        ``[[A11, A12], [A21, A22]]`` per tilt; each must be a rotation ``R(-alpha_i)``.
    translations : array_like, shape (n, 2)
        ``(DX, DY)`` per tilt.
    path : str
        Named in errors and warnings.
    lines : array_like of int, optional
        The file's line number of each tilt (for messages; default ``1..n``).
    rotation_tol : float
        Largest accepted entry of ``|A A^T - I|``.
    spread_tol_deg : float
        Per-tilt angles further than this from the common one give a ``UserWarning``.

    Returns
    -------
    XfModel
        ``shifts = -(DX, DY)``, the common ``axis_angle_deg`` and the per-tilt angles.

    Raises
    ------
    ValueError
        A linear part with magnification, stretch, skew or a mirror (not a rotation within
        ``rotation_tol``): fastalign's model has none of these; file and line named.
    """
    m = np.asarray(matrices, dtype=np.float64).reshape(-1, 2, 2)
    t = np.asarray(translations, dtype=np.float64).reshape(-1, 2)
    lines = np.arange(1, len(m) + 1) if lines is None else np.asarray(lines)
    err = np.abs(m @ m.transpose(0, 2, 1) - np.eye(2)).max(axis=(1, 2))
    det = np.linalg.det(m)
    bad = np.flatnonzero((err > rotation_tol) | (det <= 0))
    if bad.size:
        k = int(bad[0])
        sv = np.linalg.svd(m[k], compute_uv=False)
        kind = "a mirror" if det[k] <= 0 else "magnification, stretch or skew"
        raise ValueError(f"{path}, line {lines[k]}: the transform is not a rotation ({kind}: "
                         f"singular values {sv[0]:.5f}, {sv[1]:.5f}, determinant "
                         f"{det[k]:.5f}); fastalign's model is a rotation and a translation")
    rot = np.rad2deg(np.arctan2(0.5 * (m[:, 0, 1] - m[:, 1, 0]),
                                0.5 * (m[:, 0, 0] + m[:, 1, 1])))
    alpha = _common_angle(path, rot, [f"line {ln}" for ln in lines], spread_tol_deg)
    return XfModel(shifts=0.0 - t, axis_angle_deg=alpha, rotations_deg=rot, path=str(path))


def read_xf_model(path, *, n=None, rotation_tol=ROTATION_TOL, spread_tol_deg=SPREAD_TOL_DEG):
    """Read an IMOD ``.xf`` file (full 2x3 transforms) into fastalign's model.

    Parameters
    ----------
    path : str or os.PathLike
    n : int, optional
        Number of images of the tilt series; another line count is refused.
    rotation_tol, spread_tol_deg : float
        See :func:`xf_to_model`.

    Returns
    -------
    XfModel
        Shifts ``(dx, dy)``, the common axis angle (degrees) and the per-line angles.

    Raises
    ------
    ValueError
        Malformed line, wrong line count, or a transform that is not a rotation
        (magnification/skew/mirror), with the file and line named.
    """
    path = os.fspath(path)
    arr, linenos = _read_rows(path)
    _check_count(path, len(arr), n)
    return xf_to_model(arr[:, :4].reshape(-1, 2, 2), arr[:, 4:6], path=path, lines=linenos,
                       rotation_tol=rotation_tol, spread_tol_deg=spread_tol_deg)


def write_xtilt(path, n, *, overwrite=False, inputs=()):
    """Write an IMOD ``.xtilt`` file: ``n`` X-axis tilt angles, all 0 (none in fastalign).

    Returns
    -------
    str
        The path written.
    """
    n = int(n)
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    with atomic_write(path, overwrite=overwrite, inputs=inputs) as tmp:
        with open(tmp, "w", encoding="ascii") as fh:
            fh.writelines(["0.00\n"] * n)
    return os.fspath(path)


_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")


def parse_excludelist(text, n):
    """0-based indices of an IMOD ``EXCLUDELIST`` value such as ``"1,5-7"``.

    Parameters
    ----------
    text : str
        Comma-separated 1-based numbers and ranges ``a-b`` (``a <= b``); a leading
        ``EXCLUDELIST`` keyword and spaces are accepted.
    n : int
        Number of images in the stack: every number must be in ``1..n``.

    Returns
    -------
    ndarray, int64
        Sorted, unique 0-based indices.

    Raises
    ------
    ValueError
        An empty list, a malformed item, a reversed range, or a number outside ``1..n``
        (the item is named).
    """
    body = str(text).strip()
    if body.upper().startswith("EXCLUDELIST"):
        body = body[len("EXCLUDELIST"):]
    items = [t.strip() for t in body.replace(" ", ",").split(",") if t.strip()]
    if not items:
        raise ValueError(f"EXCLUDELIST {text!r} lists no views")
    out = []
    for item in items:
        m = _RANGE.match(item)
        if m is None:
            raise ValueError(f"EXCLUDELIST item {item!r} is not a number or a range 'a-b'")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) else lo
        if hi < lo:
            raise ValueError(f"EXCLUDELIST range {item!r} is reversed")
        if lo < 1 or hi > n:
            raise ValueError(f"EXCLUDELIST item {item!r} is outside 1..{n} (views are "
                             f"1-based; the stack has {n} images)")
        out.extend(range(lo - 1, hi))
    return np.unique(np.asarray(out, dtype=np.int64))

