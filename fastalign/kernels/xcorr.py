"""Local upsampled cross-correlation by a separable matrix DFT (Guizar-Sicairos et al. 2008).

Given the half (``rfft2``) cross-power spectrum ``F[l, k]`` (``k = 0 .. nx//2``) of two real
images, the cross-correlation at arbitrary (fractional) offsets ``(y_p, x_q)`` is

    cc[p, q] = Re sum_k w_k Ex[k, q] sum_l Ey[p, l] F[l, k]

with ``Ey[p, l] = exp(2 pi i fy_l y_p)``, ``Ex[k, q] = exp(2 pi i fx_k x_q)`` and Hermitian weights
``w_k`` (1 for ``k = 0`` and, for even ``nx``, the Nyquist column; 2 otherwise).  The inner sum
(stage 1, cost ``m ny nk``) runs in parallel over blocks of columns ``k``: each thread owns its
block of the intermediate ``G[:, k]`` and streams ``F`` once, row by row.  Stage 2 is
``m m nk``, serial.  No output element is written by two threads and every sum runs in a fixed
order, so results are bit-identical for any thread count.
"""
from numba import prange

from .._config import jit

_KBLOCK = 256


@jit(parallel=True)
def upsampled_xcorr(F, Ey, Ex, w, G, cc):
    """Evaluate ``cc[p, q]`` (see module docstring).

    Parameters
    ----------
    F : complex128, shape (ny, nk)
        Half cross-power spectrum (``rfft2`` layout).
    Ey : complex128, shape (m, ny)
    Ex : complex128, shape (nk, mq)
    w : float64, shape (nk,)
        Hermitian weights.
    G : complex128, shape (m, nk)
        Work buffer, overwritten.
    cc : float64, shape (m, mq)
        Output, overwritten (unnormalised).
    """
    ny, nk = F.shape
    m = Ey.shape[0]
    mq = Ex.shape[1]
    nblk = (nk + _KBLOCK - 1) // _KBLOCK
    for b in prange(nblk):
        k0 = b * _KBLOCK
        k1 = min(k0 + _KBLOCK, nk)
        for p in range(m):
            for k in range(k0, k1):
                G[p, k] = 0.0
        for l in range(ny):
            for p in range(m):
                e = Ey[p, l]
                for k in range(k0, k1):
                    G[p, k] += e * F[l, k]
    for p in range(m):
        for q in range(mq):
            acc = 0.0
            for k in range(nk):
                z = G[p, k] * Ex[k, q]
                acc += w[k] * z.real
            cc[p, q] = acc
