"""Elementwise update kernels of the iterative solvers (SIRT, FISTA) and FBP filtering.

All arrays are C-contiguous 3-D float32 ``(n0, n1, n2)`` -- volumes ``(ny, nz, nx)`` or tilt
series ``(n_tilts, ny, nx)`` -- and every kernel writes into arrays the caller allocated.
Parallel loops run over the first axis (or over flattened rows); each ``prange`` iteration owns
the elements it writes.  Sums of squares go to a per-row float64 buffer ``rowsum`` that the
caller reduces serially (``rowsum.sum()``), so every result is bit-identical for any thread count.

Weights that do not vary along y (no mask, or a 2-D mask) are passed with a length-1 y axis and
broadcast: index 0 is used for every y when that axis has length 1.
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


@jit(parallel=True)
def fista_step(out, base, pa, qa, coef, g, step, nonneg):
    """``out = (base + coef (pa - qa)) - step g``, then ``max(out, 0)`` if ``nonneg``: the
    FISTA extrapolation and forward step in one pass (3-D).  ``out`` may alias any input."""
    n0, n1, n2 = out.shape
    c = np.float32(coef)
    s = np.float32(step)
    lo = np.float32(0.0) if nonneg else np.float32(-np.inf)
    for i in prange(n0):
        o = out[i]
        bs = base[i]
        ps = pa[i]
        qs = qa[i]
        gs = g[i]
        for j in range(n1):
            for m in range(n2):
                yv = bs[j, m] + c * (ps[j, m] - qs[j, m])
                o[j, m] = max(yv - s * gs[j, m], lo)


@jit(parallel=True)
def extrapolate_residual(out, base, p, q, coef, b):
    """``out = base + coef * (p - q) - b`` (3-D): the next ``A y - b`` of FISTA."""
    n0, n1, n2 = out.shape
    c = np.float32(coef)
    for i in prange(n0):
        o = out[i]
        bs = base[i]
        ps = p[i]
        qs = q[i]
        ds = b[i]
        for j in range(n1):
            for m in range(n2):
                o[j, m] = bs[j, m] + c * (ps[j, m] - qs[j, m]) - ds[j, m]


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
def filter_rows(spec, filt, roww):
    """``spec[r, k] *= filt[k] * roww[r]`` for the FBP ramp filtering (complex64 spectra)."""
    nr, nk = spec.shape
    for r in prange(nr):
        w = roww[r]
        s = spec[r]
        for k in range(nk):
            s[k] = s[k] * np.float32(filt[k] * w)


@jit(parallel=True)
def pad_rows(src, dst):
    """``dst[r, :n] = src[r]``, ``dst[r, n:] = 0`` (zero-padded copy of 2-D rows)."""
    nr, n = src.shape
    npad = dst.shape[1]
    for r in prange(nr):
        d = dst[r]
        s = src[r]
        for i in range(n):
            d[i] = s[i]
        for i in range(n, npad):
            d[i] = 0.0


@jit(parallel=True)
def unpad_rows(src, dst):
    """``dst[r] = src[r, :n]``."""
    nr, n = dst.shape
    for r in prange(nr):
        d = dst[r]
        s = src[r]
        for i in range(n):
            d[i] = s[i]


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
