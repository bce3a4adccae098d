"""Row moments of a tilt series for centre-of-mass alignment.

For every tilt ``a`` and row ``y`` the kernel accumulates, in float64, the background-corrected
intensity ``q = p - bg[a]``, optionally clipped at zero (``max(q, 0)``):

* ``mass[a, y]  = sum_x q``
* ``first[a, y] = sum_x x * q``   (x = column index)

Each ``prange`` iteration owns one tilt and writes only ``mass[a]`` and ``first[a]``; the sums run
in a fixed order, so results are bit-identical for any thread count.
"""
import numpy as np
from numba import prange

from .._config import jit


@jit(parallel=True)
def row_moments(ts, bg, clip, mass, first):
    """Zeroth and first x-moments of ``max(ts - bg, 0)`` per (tilt, row).

    Parameters
    ----------
    ts : float32, C-contiguous, shape (n_tilts, ny, nx)
    bg : float64, shape (n_tilts,)
        Background subtracted from every pixel of the tilt.
    clip : bool
        Clip the background-corrected intensity at zero (otherwise use it signed).
    mass, first : float64, shape (n_tilts, ny)
        Outputs, overwritten.
    """
    n, ny, nx = ts.shape
    for a in prange(n):
        b = bg[a]
        for y in range(ny):
            m = 0.0
            f = 0.0
            for x in range(nx):
                q = np.float64(ts[a, y, x]) - b
                if q > 0.0 or not clip:
                    m += q
                    f += x * q
            mass[a, y] = m
            first[a, y] = f
