"""Fused FISTA extrapolation / forward-step kernels (:mod:`fastalign.recon.tv`).

All arrays are C-contiguous 3-D float32 ``(n0, n1, n2)``; every kernel writes into an array
the caller allocated (it may alias the inputs), parallel over the first axis, each ``prange``
iteration owning the elements it writes: bit-identical for any thread count.
"""
import numpy as np
from numba import prange

from .._config import jit


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
