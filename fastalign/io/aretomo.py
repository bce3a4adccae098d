"""AreTomo ``.aln`` alignment files (global section), read and written; and
:func:`read_alignment`, which reads a starting alignment from an ``.aln`` or an IMOD ``.xf``.

Layout (as AreTomo2 writes it: github.com/czimaginginstitute/AreTomo2,
``MrcUtil/CSaveAlnFile.cpp`` at commit 241c54de)::

    # AreTomo Alignment / Priims bprmMn
    # RawSize = 512 512 61                     nx ny and the number of raw sections
    # NumPatches = 0                           local patches (their section is not read)
    # DarkFrame =     0    0   -55.00          frame (tilt-sorted), section, tilt (deg)
    # SEC     ROT         GMAG       TX          TY      SMEAN     SFIT    SCALE     BASE     TILT
        7   -10.6414    1.00000     30.409     -7.146     1.00     1.00     1.00     0.00   -41.00

One row per image that was aligned; ``SEC`` is the image's 0-based section in the raw stack
(AreTomo2's ``CDarkFrames::GenImodExcludeList``, ``MrcUtil/CDarkFrames.cpp`` at 7f8142df, adds
1 to it for IMOD's 1-based ``EXCLUDELIST``); dark frames AreTomo dropped have no row but a
``DarkFrame`` line, so the raw stack has ``len(rows) + len(dark frames) == RawSize[2]``
sections.  Rows are sorted by tilt angle in AreTomo's output; :func:`read_aln` returns them
sorted by ``SEC``, i.e. in the order of the raw stack with the dark frames removed.  AreTomo3
adds ``AlphaOffset``, ``BetaOffset`` and ``Thickness`` header lines (kept in
:attr:`AlnFile.header`), and a ``# Local Alignment`` section (not read).  The example row
above is from an AreTomo output quoted in a comment of
github.com/scipion-em/scipion-em-aretomo, ``aretomo/protocols/protocol_aretomo.py`` (its TILT
column was garbage there and is replaced here); ``tests/test_aretomo.py`` pins the
conventions below on its rows.

Conventions, pinned by AreTomo2's own IMOD export (``ImodUtil/CSaveXF.cpp`` at 7f8142df,
``-OutImod 1/2``): for each row it writes the ``.xf`` line
``A = [[cos(-ROT), -sin(-ROT)], [sin(-ROT), cos(-ROT)]]``, ``(DX, DY) = A (-TX, -TY)``.  In
fastalign's notation (:mod:`fastalign.align.axis`, :mod:`fastalign.io.xf`) ``A = R(-ROT)``,
the linear part fastalign writes for ``axis_angle_deg = ROT``: **ROT is fastalign's (and
IMOD's) tilt-axis angle, same sign, in degrees**.  fastalign's ``.xf`` translation is
``-(dx, dy)``, so ``(dx, dy) = R(-ROT) (TX, TY)`` and ``(TX, TY) = R(ROT) (dx, dy)``: **TX, TY
are the shift of the image (not the correction), in the raw, unrotated detector frame**; the
correction applied is ``-(TX, TY)`` followed by the rotation ``-ROT``.  For ``ROT = 0``,
``(dx, dy) = (TX, TY)``.  AreTomo rotates about ``(nx/2, ny/2)``, fastalign about
``((nx-1)/2, (ny-1)/2)``: the difference is the sub-pixel one described in
:mod:`fastalign.io.xf`.  ``GMAG`` other than 1 (a magnification) is refused; ``SMEAN``,
``SFIT``, ``SCALE``, ``BASE`` are written as AreTomo writes them (1, 1, 1, 0) and ignored
when read.
"""
import os
from dataclasses import dataclass, field

import numpy as np

from ._atomic import atomic_write
from .xf import ROTATION_TOL, SPREAD_TOL_DEG, _common_angle, format_excludelist, read_xf_model

__all__ = ["AlnFile", "read_aln", "write_aln", "read_alignment", "ALN_COLUMNS"]

ALN_COLUMNS = ("SEC", "ROT", "GMAG", "TX", "TY", "SMEAN", "SFIT", "SCALE", "BASE", "TILT")
_COLUMN_LINE = ("# SEC     ROT         GMAG       TX          TY      SMEAN     SFIT    SCALE"
                "     BASE     TILT\n")


def _rot(deg):
    """``R(a) = [[cos a, -sin a], [sin a, cos a]]`` per angle, shape (n, 2, 2)."""
    a = np.deg2rad(np.asarray(deg, dtype=np.float64))
    c, s = np.cos(a), np.sin(a)
    return np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)


@dataclass(frozen=True, eq=False)
class AlnFile:
    """The global section of an AreTomo ``.aln`` file, in fastalign's conventions.

    Rows are sorted by section (the raw stack's order without its dark frames).

    Attributes
    ----------
    shifts : ndarray, float64, shape (k, 2)
        ``(dx, dy) = R(-ROT) (TX, TY)`` in pixels (DESIGN.md sign, aligned frame).
    axis_angle_deg : float
        The common ``ROT`` (circular mean of the rows'), degrees, fastalign's sign.
    angles_deg : ndarray, shape (k,)
        ``TILT`` column, degrees (AreTomo3 includes its ``AlphaOffset`` in it).
    sections : ndarray, int64, shape (k,)
        ``SEC``: 0-based section of each row in the raw stack.
    rotations_deg : ndarray, shape (k,)
        ``ROT`` per row.
    tx_ty : ndarray, shape (k, 2)
        ``TX, TY`` as in the file.
    dark_frames : tuple of (int, int, float)
        ``(frame, section, tilt_deg)`` of each ``DarkFrame`` line.
    raw_size : tuple of int or None
        ``RawSize``: ``(nx, ny, n_sections)``.
    num_patches : int
    header : dict
        Other ``# key = number`` header lines (``AlphaOffset``, ``BetaOffset``, ...).
    path : str
    """

    shifts: np.ndarray
    axis_angle_deg: float
    angles_deg: np.ndarray
    sections: np.ndarray
    rotations_deg: np.ndarray
    tx_ty: np.ndarray
    dark_frames: tuple = ()
    raw_size: tuple = None
    num_patches: int = 0
    header: dict = field(default_factory=dict)
    path: str = ""

    @property
    def dark_sections(self):
        """0-based raw sections of the dark frames, sorted."""
        return np.array(sorted(s for _, s, _ in self.dark_frames), dtype=np.int64)

    def shifts_for(self, n):
        """The shifts for a tilt series of ``n`` images: the raw stack without its dark frames.

        Raises
        ------
        ValueError
            ``n`` differs from the number of rows; when ``n`` counts the dark frames too,
            the message lists them (1-based, IMOD ``EXCLUDELIST`` syntax) to remove.
        """
        k = len(self.shifts)
        if n == k:
            return self.shifts.copy()
        nd = len(self.dark_frames)
        if nd and n == k + nd:
            views = format_excludelist(self.dark_sections)
            raise ValueError(
                f"{self.path} aligns {k} images; the tilt series has {n}, including the "
                f"{nd} dark frames AreTomo left out (views {views}, 1-based): remove them "
                "from the stack and its angles")
        size = "" if self.raw_size is None else f" (RawSize {self.raw_size[2]} sections"
        size += f", {nd} dark frames)" if size else ""
        raise ValueError(f"{self.path} holds {k} alignment lines{size}, the tilt series has "
                         f"{n} images")


def _numbers(path, lineno, text, count, what):
    tokens = text.split()
    if len(tokens) != count:
        raise ValueError(f"{path}, line {lineno}: expected {count} numbers ({what}), got "
                         f"{text.strip()!r}")
    try:
        values = [float(t) for t in tokens]
    except ValueError:
        raise ValueError(f"{path}, line {lineno}: non-numeric value in {text.strip()!r}") \
            from None
    if not all(np.isfinite(values)):
        raise ValueError(f"{path}, line {lineno}: NaN/Inf in {text.strip()!r}")
    return values


def _integer(path, lineno, value, what):
    if value != int(value) or value < 0:
        raise ValueError(f"{path}, line {lineno}: {what} must be a non-negative integer, "
                         f"got {value}")
    return int(value)


def read_aln(path, *, spread_tol_deg=SPREAD_TOL_DEG):
    """Read the global alignment of an AreTomo ``.aln`` file (conventions: module docstring).

    Parameters
    ----------
    path : str or os.PathLike
    spread_tol_deg : float
        Rows whose ``ROT`` differs from the common angle by more give a ``UserWarning``
        (each row's own ``ROT`` is used to convert its shift).

    Returns
    -------
    AlnFile

    Raises
    ------
    ValueError
        A malformed line, a ``GMAG`` other than 1 (magnification), a repeated section, a
        section that is also a dark frame, no rows, or a ``RawSize`` whose count differs
        from rows + dark frames; the file (and line) named.
    """
    path = os.fspath(path)
    rows, linenos, darks = [], [], []
    raw_size, num_patches, header = None, 0, {}
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, start=1):
            text = line.strip()
            if not text:
                continue
            if text.startswith("#"):
                body = text[1:].strip()
                key, eq, value = body.partition("=")
                key = key.strip()
                if body.lower().startswith("local alignment"):
                    break
                if not eq:
                    continue  # title or column line
                if key == "RawSize":
                    raw_size = tuple(_integer(path, lineno, v, "RawSize")
                                     for v in _numbers(path, lineno, value, 3, "nx ny n"))
                elif key == "NumPatches":
                    num_patches = _integer(path, lineno,
                                           _numbers(path, lineno, value, 1, "count")[0],
                                           "NumPatches")
                elif key == "DarkFrame":
                    f, s, t = _numbers(path, lineno, value, 3, "frame section tilt")
                    darks.append((_integer(path, lineno, f, "DarkFrame frame"),
                                  _integer(path, lineno, s, "DarkFrame section"), t))
                else:
                    try:
                        header[key] = float(value)
                    except ValueError:
                        header[key] = value.strip()
                continue
            values = _numbers(path, lineno, text, 10, " ".join(ALN_COLUMNS))
            _integer(path, lineno, values[0], "SEC")
            if abs(values[2] - 1.0) > ROTATION_TOL:
                raise ValueError(f"{path}, line {lineno}: GMAG {values[2]} is a magnification; "
                                 "fastalign's model is a rotation and a translation")
            rows.append(values)
            linenos.append(lineno)
    if not rows:
        raise ValueError(f"{path} holds no alignment rows ('SEC ROT GMAG TX TY ... TILT')")
    arr = np.asarray(rows, dtype=np.float64)
    order = np.argsort(arr[:, 0], kind="stable")
    arr, linenos = arr[order], np.asarray(linenos)[order]
    sections = arr[:, 0].astype(np.int64)
    repeated = sections[1:][sections[1:] == sections[:-1]]
    if repeated.size:
        raise ValueError(f"{path}: section {int(repeated[0])} has more than one row")
    dark_secs = {s for _, s, _ in darks}
    both = sorted(dark_secs.intersection(sections.tolist()))
    if both:
        raise ValueError(f"{path}: section {both[0]} has a row and is a DarkFrame")
    if raw_size is not None and raw_size[2] != len(arr) + len(darks):
        raise ValueError(f"{path}: RawSize counts {raw_size[2]} sections but the file has "
                         f"{len(arr)} rows and {len(darks)} dark frames")
    if raw_size is not None and sections.max() >= raw_size[2]:
        raise ValueError(f"{path}: section {int(sections.max())} is outside the RawSize "
                         f"{raw_size[2]} sections (0-based)")
    rot = arr[:, 1]
    alpha = _common_angle(path, rot, [f"line {ln}" for ln in linenos], spread_tol_deg)
    tx_ty = arr[:, 3:5].copy()
    shifts = np.einsum("kij,kj->ki", _rot(-rot), tx_ty)
    return AlnFile(shifts=shifts, axis_angle_deg=alpha, angles_deg=arr[:, 9].copy(),
                   sections=sections, rotations_deg=rot.copy(), tx_ty=tx_ty,
                   dark_frames=tuple(darks), raw_size=raw_size, num_patches=num_patches,
                   header=header, path=path)


def write_aln(path, angles_deg, shifts, axis_angle_deg, *, image_shape, sections=None,
              dark_frames=(), overwrite=False, inputs=()):
    """Write an AreTomo ``.aln`` file (global alignment, no local patches), atomically.

    Parameters
    ----------
    path : str or os.PathLike
    angles_deg : array_like, shape (k,)
        Tilt angles of the aligned images (``TILT``).
    shifts : array_like, shape (k, 2)
        fastalign shifts ``(dx, dy)``; written as ``(TX, TY) = R(alpha) (dx, dy)``.
    axis_angle_deg : float
        Tilt-axis angle (``ROT`` of every row).
    image_shape : (int, int)
        ``(ny, nx)`` of the images (``RawSize`` is written ``nx ny n``).
    sections : array_like of int, optional
        0-based raw section of each image; default: the raw sections that are not dark
        frames, in order (``0..k-1`` without dark frames).
    dark_frames : iterable of (int, float)
        ``(section, tilt_deg)`` of raw sections left out of the alignment; written as
        ``DarkFrame`` lines (the frame number is the section's rank by tilt among all).
    overwrite : bool
    inputs : iterable of path
        Input files that must not be written to.

    Returns
    -------
    str
        The path written.

    Notes
    -----
    Rows are written in section order as ``%5d %10.5f %9.5f %10.4f %10.4f`` and the
    constant columns, ``TILT`` as ``%9.4f`` (AreTomo reads free format): 1e-4 px and
    1e-5 deg resolution.
    """
    ang = np.asarray(angles_deg, dtype=np.float64).reshape(-1)
    s = np.asarray(shifts, dtype=np.float64)
    k = len(ang)
    if s.shape != (k, 2) or k == 0:
        raise ValueError(f"shifts must have shape ({k}, 2) for {k} angles, got {s.shape}")
    alpha = float(axis_angle_deg)
    if not (np.all(np.isfinite(s)) and np.all(np.isfinite(ang)) and np.isfinite(alpha)):
        raise ValueError("angles, shifts and axis_angle_deg must be finite")
    ny, nx = (int(v) for v in image_shape)
    darks = [(int(sec), float(t)) for sec, t in dark_frames]
    dark_secs = {sec for sec, _ in darks}
    n_raw = k + len(darks)
    if sections is None:
        sections = [i for i in range(n_raw) if i not in dark_secs]
    sec = np.asarray(sections, dtype=np.int64).reshape(-1)
    if len(sec) != k or len(set(sec.tolist()) | dark_secs) != n_raw or sec.min() < 0 \
            or max(sec.max(), max(dark_secs, default=0)) >= n_raw:
        raise ValueError(f"sections and dark frames must number the {n_raw} raw sections "
                         f"0..{n_raw - 1} once each, got sections {sec.tolist()} and dark "
                         f"frames {sorted(dark_secs)}")
    txy = s @ _rot(alpha).T
    all_tilts = sorted([(t, sc) for t, sc in zip(ang.tolist(), sec.tolist())]
                       + [(t, sc) for sc, t in darks])
    frame_of = {sc: i for i, (_, sc) in enumerate(all_tilts)}
    lines = ["# AreTomo Alignment / Priims bprmMn\n",
             f"# RawSize = {nx} {ny} {n_raw}\n",
             "# NumPatches = 0\n"]
    lines += [f"# DarkFrame =  {frame_of[sc]:4d} {sc:4d} {t:8.2f}\n" for sc, t in sorted(darks)]
    lines.append(_COLUMN_LINE)
    for i in np.argsort(sec, kind="stable"):
        tx, ty = txy[i]
        lines.append(f"{sec[i]:5d}  {0.0 + alpha:10.5f}  {1.0:9.5f}  {0.0 + tx:10.4f}  "
                     f"{0.0 + ty:10.4f}  {1.0:7.2f}  {1.0:7.2f}  {1.0:7.2f}  {0.0:7.2f}  "
                     f"{0.0 + ang[i]:9.4f}\n")
    with atomic_write(path, overwrite=overwrite, inputs=inputs) as tmp:
        with open(tmp, "w", encoding="ascii") as fh:
            fh.writelines(lines)
    return os.fspath(path)


def read_alignment(path, *, n=None):
    """Read a starting alignment from an AreTomo ``.aln`` or an IMOD ``.xf``/``.prexf``.

    Parameters
    ----------
    path : str or os.PathLike
        The format follows the suffix: ``.aln`` is AreTomo's, anything else IMOD's ``.xf``
        (:func:`fastalign.io.xf.read_xf_model`: rotations only, no magnification/skew).
    n : int, optional
        Number of images of the tilt series: another count is refused now, naming the file.

    Returns
    -------
    XfModel or AlnFile
        Both have ``shifts``, ``axis_angle_deg``, ``path`` and ``shifts_for(n)``; pass one as
        ``fastalign.align(..., initial_shifts=...)`` to start from its shifts (and, unless
        ``axis_angle_deg`` is given, its axis angle).
    """
    if os.fspath(path).lower().endswith(".aln"):
        aln = read_aln(path)
        if n is not None:
            aln.shifts_for(n)
        return aln
    return read_xf_model(path, n=n)
