"""Elementwise kernels and sums of squares over 3-D float32 arrays.

All arrays are C-contiguous 3-D float32 ``(n0, n1, n2)`` -- volumes ``(ny, nz, nx)`` or tilt
series ``(n_tilts, ny, nx)`` -- and every kernel writes into arrays the caller allocated.
Parallel loops run over the first axis (or over flattened rows); each ``prange`` iteration owns
the elements it writes.  Sums of squares go to a per-row float64 buffer ``rowsum`` that the
caller reduces serially (``rowsum.sum()``), so every result is bit-identical for any thread count.

Weights that do not vary along y (no mask, or a 2-D mask) are passed with a length-1 y axis and
broadcast: :func:`_bcast` gives index 0 for every y when that axis has length 1 (also used by
:mod:`fastalign.kernels.sirt`).
"""
import numpy as np
from numba import prange

from .._config import jit


@jit
def _bcast(y, n):
    """Index ``y`` into an axis of length ``n`` (``n == 1``: broadcast, always 0)."""
    if n == 1:
        return np.int64(0)
    return np.int64(y)


@jit(parallel=True)
def copy3(dst, src):
    """``dst[...] = src`` (parallel copy over the first axis)."""
    n0, n1, n2 = dst.shape
    for i in prange(n0):
        d = dst[i]
        s = src[i]
        for j in range(n1):
            for m in range(n2):
                d[j, m] = s[j, m]


@jit(parallel=True)
def clip_nonneg(x):
    """``x = max(x, 0)`` in place."""
    n0, n1, n2 = x.shape
    for i in prange(n0):
        xs = x[i]
        for j in range(n1):
            for m in range(n2):
                if xs[j, m] < 0.0:
                    xs[j, m] = 0.0


@jit(parallel=True)
def apply_mask(x, m):
    """``x = 0`` where ``m == 0``; ``m``: uint8 ``(1 or ny, nz, nx)``."""
    ny, nz, nx = x.shape
    nym = m.shape[0]
    for y in prange(ny):
        ms = m[_bcast(y, nym)]
        xs = x[y]
        for iz in range(nz):
            for ix in range(nx):
                if ms[iz, ix] == 0:
                    xs[iz, ix] = 0.0


@jit(parallel=True)
def sumsq(a, rowsum):
    """``rowsum[i*n1 + j] = sum_k a[i, j, k]**2`` (float64)."""
    n0, n1, n2 = a.shape
    for k in prange(n0 * n1):
        i = k // n1
        j = k - i * n1
        ar = a[i, j]
        s = 0.0
        for m in range(n2):
            v = np.float64(ar[m])
            s += v * v
        rowsum[k] = s


@jit(parallel=True)
def diff_sumsq(a, b, rowsum):
    """``rowsum[i*n1 + j] = sum_k (a[i, j, k] - b[i, j, k])**2`` (float64)."""
    n0, n1, n2 = a.shape
    for k in prange(n0 * n1):
        i = k // n1
        j = k - i * n1
        ar = a[i, j]
        br = b[i, j]
        s = 0.0
        for m in range(n2):
            d = np.float64(ar[m]) - br[m]
            s += d * d
        rowsum[k] = s
