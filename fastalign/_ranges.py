"""IMOD's 1-based view lists (``EXCLUDELIST 1,5-7``) from 0-based tilt indices: shared by the
library's results (:meth:`fastalign.align.result.AlignResult.excludelist`) and the IMOD files
of :mod:`fastalign.io.xf` (which also parses them)."""
import numpy as np

__all__ = ["format_excludelist"]


def format_excludelist(indices0):
    """IMOD ``EXCLUDELIST`` value (1-based numbers and ranges) of 0-based tilt indices.

    Parameters
    ----------
    indices0 : iterable of int
        0-based indices in the stack; order and repeats do not matter.

    Returns
    -------
    str
        e.g. ``[0, 4, 5, 6] -> "1,5-7"``; write it as ``EXCLUDELIST 1,5-7`` in
        ``tilt``/``newst`` command files.

    Raises
    ------
    ValueError
        No index, or a negative or non-integer one.
    """
    values = np.asarray(list(indices0))
    if values.size == 0:
        raise ValueError("EXCLUDELIST needs at least one index")
    if not np.all(np.equal(np.mod(values, 1), 0)):
        raise ValueError(f"EXCLUDELIST indices must be integers, got {values.tolist()}")
    idx = np.unique(values.astype(np.int64))
    if idx[0] < 0:
        raise ValueError(f"EXCLUDELIST indices must be >= 0 (0-based), got {int(idx[0])}")
    parts, start = [], idx[0]
    for prev, cur in zip(idx, list(idx[1:]) + [None]):
        if cur is not None and cur == prev + 1:
            continue
        parts.append(f"{start + 1}" if prev == start else f"{start + 1}-{prev + 1}")
        start = cur
    return ",".join(parts)
