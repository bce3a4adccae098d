"""Tilt-angle files: IMOD ``.rawtlt``/``.tlt`` (read and write) and SerialEM ``.mdoc`` (read:
angles and pixel size).

All angles are in degrees.  Readers report problems with the file name and line number;
count and duplicate checks against the tilt series happen in :func:`fastalign.io.read_tilt_series`.
"""
import os
import re

import numpy as np

from ._atomic import atomic_write

__all__ = ["read_angles", "read_mdoc", "read_mdoc_pixel_size", "write_tlt", "find_angle_file",
           "find_mdoc"]


def _parse_float(token, path, lineno, line):
    try:
        value = float(token)
    except ValueError:
        raise ValueError(f"{path}, line {lineno}: cannot read a tilt angle (degrees) from "
                         f"{line.strip()!r}") from None
    if not np.isfinite(value):
        raise ValueError(f"{path}, line {lineno}: tilt angle {line.strip()!r} is not finite")
    return value


def read_angles(path):
    """Read an IMOD-style angle file (``.rawtlt``, ``.tlt``): one angle in degrees per line.

    Blank lines and lines starting with ``#`` are skipped.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    angles_deg : ndarray, float64, shape (n,)

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        A line does not hold exactly one finite number (the message names file and line), or
        the file holds no angle at all.
    """
    path = os.fspath(path)
    angles = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, start=1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            tokens = text.split()
            if len(tokens) != 1:
                raise ValueError(f"{path}, line {lineno}: expected one tilt angle per line, got "
                                 f"{text!r}")
            angles.append(_parse_float(tokens[0], path, lineno, line))
    if not angles:
        raise ValueError(f"{path} holds no tilt angles")
    return np.asarray(angles, dtype=np.float64)


_SECTION = re.compile(r"^\[\s*(\w+)\s*=\s*([^\]]*)\]\s*$")
_KEYVAL = re.compile(r"^(\w+)\s*=\s*(.*)$")


def _parse_mdoc(path):
    """``(global_keys, sections)`` of a SerialEM ``.mdoc``: ``{key: (value, lineno, line)}``
    before the first section, and ``{z: {key: (value, lineno, line)}}`` per ``[ZValue = z]``
    (other sections are skipped)."""
    path = os.fspath(path)
    top, sections = {}, {}
    current = top
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, start=1):
            text = line.strip()
            if not text:
                continue
            m = _SECTION.match(text)
            if m:
                if m.group(1) == "ZValue":
                    try:
                        z = int(m.group(2).strip())
                    except ValueError:
                        raise ValueError(f"{path}, line {lineno}: bad section header "
                                         f"{text!r}") from None
                    if z in sections:
                        raise ValueError(f"{path}, line {lineno}: ZValue {z} appears twice")
                    sections[z] = current = {}
                else:
                    current = None
                continue
            m = _KEYVAL.match(text)
            if current is not None and m:
                current[m.group(1)] = (m.group(2).strip(), lineno, line)
    return top, sections


def read_mdoc(path):
    """Read tilt angles from a SerialEM ``.mdoc`` file.

    Every ``[ZValue = n]`` section must carry a ``TiltAngle = value`` line; the angles are
    returned ordered by ``n``, which must run over ``0 .. N-1``.  Other sections (``[T = ...]``,
    ``[FrameSet = ...]``, global keys) are ignored.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    angles_deg : ndarray, float64, shape (N,)

    Raises
    ------
    ValueError
        No ``ZValue`` section, a section without ``TiltAngle``, non-numeric values (file and
        line named), duplicate or missing ``ZValue`` indices.
    """
    path = os.fspath(path)
    _, sections = _parse_mdoc(path)
    if not sections:
        raise ValueError(f"{path} has no [ZValue = n] sections: not a SerialEM tilt-series "
                         "mdoc")
    missing_angle = sorted(z for z, keys in sections.items() if "TiltAngle" not in keys)
    if missing_angle:
        raise ValueError(f"{path}: no TiltAngle in ZValue section(s) {missing_angle[:10]}")
    zs = sorted(sections)
    if zs != list(range(len(zs))):
        raise ValueError(f"{path}: ZValue sections are not numbered 0..{len(zs) - 1} "
                         f"(found {zs[:10]}{'...' if len(zs) > 10 else ''})")
    angles = []
    for z in zs:
        value, lineno, line = sections[z]["TiltAngle"]
        tokens = value.split()
        angles.append(_parse_float(tokens[0] if tokens else "", path, lineno, line))
    return np.asarray(angles, dtype=np.float64)


def read_mdoc_pixel_size(path):
    """The pixel size (angstroms) a SerialEM ``.mdoc`` records, or None.

    SerialEM writes ``PixelSpacing = value`` (angstroms) as a global key and in every
    ``[ZValue = n]`` section.  The global value is used; without it the sections' values,
    which must then agree (to 0.1 %).

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    float or None
        None when no ``PixelSpacing`` is given, or it is 0 (unknown).

    Raises
    ------
    ValueError
        A value that is not a number, or is negative (file and line named); sections that
        disagree.
    """
    path = os.fspath(path)
    top, sections = _parse_mdoc(path)

    def value(entry):
        text, lineno, line = entry
        try:
            v = float(text.split()[0])
        except (ValueError, IndexError):
            raise ValueError(f"{path}, line {lineno}: cannot read a pixel size (angstroms) "
                             f"from {line.strip()!r}") from None
        if not np.isfinite(v) or v < 0:
            raise ValueError(f"{path}, line {lineno}: pixel size {line.strip()!r} is not a "
                             "positive number")
        return v

    if "PixelSpacing" in top:
        v = value(top["PixelSpacing"])
        return v if v > 0 else None
    found = [(z, value(keys["PixelSpacing"])) for z, keys in sorted(sections.items())
             if "PixelSpacing" in keys]
    if not found:
        return None
    first = found[0][1]
    for z, v in found[1:]:
        if abs(v - first) > 1e-3 * max(abs(first), 1e-12):
            raise ValueError(f"{path}: PixelSpacing differs between ZValue {found[0][0]} "
                             f"({first} A) and ZValue {z} ({v} A)")
    return first if first > 0 else None


def _candidate_stems(data_path):
    """``foo`` and, for ``foo.mrc``, also ``foo.mrc`` (SerialEM appends suffixes)."""
    data_path = os.fspath(data_path)
    root, _ = os.path.splitext(data_path)
    return root, data_path


def find_angle_file(data_path):
    """Find an IMOD angle file next to a data file (same stem).

    For an aligned stack (``.ali``) ``<stem>.tlt`` (refined angles) is preferred over
    ``<stem>.rawtlt``; for every other file ``<stem>.rawtlt`` comes first.

    Parameters
    ----------
    data_path : str or os.PathLike

    Returns
    -------
    str or None
    """
    root, _ = _candidate_stems(data_path)
    suffixes = [".tlt", ".rawtlt"] if os.fspath(data_path).lower().endswith(".ali") \
        else [".rawtlt", ".tlt"]
    for suffix in suffixes:
        cand = root + suffix
        if os.path.isfile(cand):
            return cand
    return None


def find_mdoc(data_path):
    """Find a SerialEM ``.mdoc`` next to a data file: ``<file>.mdoc`` or ``<stem>.mdoc``.

    Parameters
    ----------
    data_path : str or os.PathLike

    Returns
    -------
    str or None
    """
    root, full = _candidate_stems(data_path)
    for cand in (full + ".mdoc", root + ".mdoc"):
        if os.path.isfile(cand):
            return cand
    return None


def write_tlt(path, angles_deg, *, overwrite=False, inputs=()):
    """Write angles (degrees) one per line, IMOD ``.tlt``/``.rawtlt`` style, atomically.

    Parameters
    ----------
    path : str or os.PathLike
    angles_deg : array_like, shape (n,)
    overwrite : bool
        Replace an existing file.
    inputs : iterable of path
        Input files that must not be written to.

    Returns
    -------
    str
        The path written.
    """
    a = np.asarray(angles_deg, dtype=np.float64)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"angles_deg must be a non-empty 1-D sequence, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError("angles_deg contains NaN/Inf")
    text = "".join(f"{v:.6f}\n" for v in a)
    with atomic_write(path, overwrite=overwrite, inputs=inputs) as tmp:
        with open(tmp, "w", encoding="ascii") as fh:
            fh.write(text)
    return os.fspath(path)
