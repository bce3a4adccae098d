"""Row kernels of the FBP ramp filtering (:mod:`fastalign.recon.fbp`): zero-padded copies of
2-D float32 rows into the FFT buffer and back, and the filter multiplication of their complex64
spectra.  Parallel over rows, each ``prange`` iteration owning its row.
"""
import numpy as np
from numba import prange

from .._config import jit


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
def filter_rows(spec, filt, roww):
    """``spec[r, k] *= filt[k] * roww[r]`` for the FBP ramp filtering (complex64 spectra)."""
    nr, nk = spec.shape
    for r in prange(nr):
        w = roww[r]
        s = spec[r]
        for k in range(nk):
            s[k] = s[k] * np.float32(filt[k] * w)


@jit(parallel=True)
def unpad_rows(src, dst):
    """``dst[r] = src[r, :n]``."""
    nr, n = dst.shape
    for r in prange(nr):
        d = dst[r]
        s = src[r]
        for i in range(n):
            d[i] = s[i]
