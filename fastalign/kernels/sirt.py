"""Fused SIRT update kernels: ``x <- x + C A^T R (b - A x)`` (:mod:`fastalign.recon.sirt`).

Arrays are C-contiguous 3-D float32, volumes ``(ny, nz, nx)`` and tilt series
``(n_tilts, ny, nx)``; the weights ``R`` and ``C`` are passed with a length-1 y axis when they
do not vary along y (broadcast by :func:`fastalign.kernels.vector._bcast`).  Each ``prange``
iteration owns the rows it writes; the float64 per-row sums of squares in ``rowsum`` are reduced
serially by the caller, so results are bit-identical for any thread count.
"""
import numpy as np
from numba import prange

from .._config import jit
from .vector import _bcast


@jit(parallel=True)
def sirt_residual(b, ax, R, res, rowsum):
    """``res = R * (b - ax)`` and ``rowsum[a*ny + y] = sum_x (b - ax)**2``.

    ``b, ax, res``: ``(na, ny, nx)``; ``R``: ``(na, 1 or ny, nx)``; ``rowsum``: ``(na*ny,)``
    float64.  ``res`` may alias ``ax``.
    """
    na, ny, nx = b.shape
    nyr = R.shape[1]
    for k in prange(na * ny):
        a = k // ny
        y = k - a * ny
        w = R[a, _bcast(y, nyr)]
        br = b[a, y]
        ar = ax[a, y]
        out = res[a, y]
        s = 0.0
        for i in range(nx):
            r = br[i] - ar[i]
            s += np.float64(r) * r
            out[i] = w[i] * r
        rowsum[k] = s


@jit(parallel=True)
def sirt_update(x, bp, C, nonneg):
    """``x += C * bp`` then ``x = max(x, 0)`` if ``nonneg``; ``C``: ``(1 or ny, nz, nx)``."""
    ny, nz, nx = x.shape
    nyc = C.shape[0]
    for y in prange(ny):
        c = C[_bcast(y, nyc)]
        xs = x[y]
        bs = bp[y]
        for iz in range(nz):
            for ix in range(nx):
                v = xs[iz, ix] + c[iz, ix] * bs[iz, ix]
                if nonneg and v < 0.0:
                    v = 0.0
                xs[iz, ix] = v
