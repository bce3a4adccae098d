"""Numba kernels for the Fourier-phase shift estimation and Fourier resampling.

Conventions: a signal of length ``N`` shifted by ``s`` (``b(x) = p(x - s)``) has spectrum
``B(w) = P(w) exp(-2 pi i w s / N)``, so the cross-power ``C = B conj(P)`` has phase
``-2 pi w s / N``.  Every kernel is parallel over tilts, each tilt owning its outputs; sums
over slices run serially in a fixed order (bit-identical for any thread count).
"""
import numpy as np
from numba import prange

from .._config import jit

TWO_PI = 2.0 * np.pi


@jit(parallel=True)
def cross_power_rows(B, P, C, pb, pp):
    """Accumulate over axis 1: ``C[a, w] = sum_j B[a, j, w] conj(P[a, j, w])``.

    ``B, P (n, m, nf)`` complex; ``C (n, nf)`` complex128; ``pb, pp (n, nf)`` float64 powers.
    """
    n, m, nf = B.shape
    for a in prange(n):
        for w in range(nf):
            C[a, w] = 0.0
            pb[a, w] = 0.0
            pp[a, w] = 0.0
        for j in range(m):
            for w in range(nf):
                b = complex(B[a, j, w])
                p = complex(P[a, j, w])
                C[a, w] += b * p.conjugate()
                pb[a, w] += b.real * b.real + b.imag * b.imag
                pp[a, w] += p.real * p.real + p.imag * p.imag


@jit(parallel=True)
def cross_power_cols(B, P, C, pb, pp):
    """Accumulate over axis 2: ``C[a, w] = sum_k B[a, w, k] conj(P[a, w, k])``."""
    n, nf, m = B.shape
    for a in prange(n):
        for w in range(nf):
            c = 0.0 + 0.0j
            sb = 0.0
            sp = 0.0
            for k in range(m):
                b = complex(B[a, w, k])
                p = complex(P[a, w, k])
                c += b * p.conjugate()
                sb += b.real * b.real + b.imag * b.imag
                sp += p.real * p.real + p.imag * p.imag
            C[a, w] = c
            pb[a, w] = sb
            pp[a, w] = sp


@jit
def _wrap(phi):
    return phi - TWO_PI * np.floor((phi + np.pi) / TWO_PI)


@jit
def _phase_one(C, pb, pp, N, min_coherence, n_refine):
    """Shift from one cross-power spectrum by unwrapped-phase weighted least squares."""
    nf = C.shape[0]
    top = nf - 1 if N % 2 == 0 else nf  # the even-length Nyquist bin has no usable phase
    k = TWO_PI / N
    cmax = 0.0
    for w in range(1, top):
        cmax = max(cmax, abs(C[w]))
    if cmax == 0.0:
        return 0.0, 0.0
    valid = np.zeros(nf, dtype=np.bool_)
    wt = np.zeros(nf)
    for w in range(1, top):
        mag = abs(C[w])
        coh = mag / np.sqrt(pb[w] * pp[w] + 1e-300)
        if coh >= min_coherence and mag >= 1e-8 * cmax:
            valid[w] = True
            wt[w] = mag
    # stage 1: sequential unwrapping over the contiguous run of valid frequencies from w = 1
    s = 0.0
    num = 0.0
    den = 0.0
    prev = 0.0
    unw = 0.0
    for w in range(1, top):
        if not valid[w]:
            break
        phi = np.angle(C[w])
        unw = phi if w == 1 else unw + _wrap(phi - prev)
        prev = phi
        num += wt[w] * w * unw
        den += wt[w] * w * w
    if den > 0.0:
        s = -num / (den * k)
    # stage 2: unwrap every valid frequency against the current model, refine the slope
    total = 0.0
    for _ in range(n_refine):
        num = 0.0
        den = 0.0
        for w in range(1, top):
            if valid[w]:
                rho = _wrap(np.angle(C[w]) + k * w * s)
                num += wt[w] * w * rho
                den += wt[w] * w * w
        if den == 0.0:
            break
        s -= num / (den * k)
        total = den
    return s, total


@jit(parallel=True)
def estimate_phase(C, pb, pp, N, min_coherence, n_refine, out, weight):
    """Per-tilt shift by the complex-log / phase-unwrapping estimator (the seed's method)."""
    for a in prange(C.shape[0]):
        s, wsum = _phase_one(C[a], pb[a], pp[a], N, min_coherence, n_refine)
        out[a] = s
        weight[a] = wsum


@jit
def _objective_derivs(C, N, s):
    """``F(s) = sum_w m_w Re(C_w e^{i k w s})`` and its first two derivatives."""
    nf = C.shape[0]
    k = TWO_PI / N
    f = 0.0
    d1 = 0.0
    d2 = 0.0
    for w in range(nf):
        m = 1.0 if (w == 0 or (N % 2 == 0 and w == nf - 1)) else 2.0
        e = np.exp(1j * k * w * s)
        z = C[w] * e
        f += m * z.real
        d1 -= m * k * w * z.imag
        d2 -= m * (k * w) ** 2 * z.real
    return f, d1, d2


@jit
def _gradient_one(C, N, n_newton):
    """Maximise ``F(s)``, equivalent to minimising ``sum_w |B e^{2 pi i w s/N} - P|^2``.

    Global start: the best of a grid of integer shifts; then safeguarded Newton steps.
    """
    best = 0.0
    fbest = -np.inf
    half = N // 2
    for s0 in range(-half, N - half):
        f, _, _ = _objective_derivs(C, N, float(s0))
        if f > fbest:
            fbest = f
            best = float(s0)
    s = best
    for _ in range(n_newton):
        f, d1, d2 = _objective_derivs(C, N, s)
        if d2 < 0.0:
            step = -d1 / d2
        else:
            step = 0.1 if d1 > 0 else -0.1
        if step > 0.5:
            step = 0.5
        elif step < -0.5:
            step = -0.5
        # backtracking keeps F non-decreasing
        for _bt in range(30):
            fn, _, _ = _objective_derivs(C, N, s + step)
            if fn >= f:
                break
            step *= 0.5
        s += step
        if abs(step) < 1e-7:
            break
    return s


@jit(parallel=True)
def estimate_gradient(C, N, n_newton, out):
    """Per-tilt shift by Newton steps on the phase-mismatch objective (the seed's alternative)."""
    for a in prange(C.shape[0]):
        out[a] = _gradient_one(C[a], N, n_newton)


@jit(parallel=True)
def apply_phase_ramps(spec, sx, sy, Ny, Nx):
    """``spec[a] *= exp(-2 pi i (ky sy/Ny + kx sx/Nx))``: translate image a by (sx, sy).

    ``spec (n, Ny, Nx//2+1)`` from a real 2-D FFT.  Nyquist bins of even lengths get the real
    factor ``cos(pi s)`` so that the result stays real and the operation is symmetric.
    """
    n, ny, nfx = spec.shape
    for a in prange(n):
        ex = np.empty(nfx, dtype=np.complex128)
        for kx in range(nfx):
            if Nx % 2 == 0 and kx == Nx // 2:
                ex[kx] = np.cos(np.pi * sx[a])
            else:
                ex[kx] = np.exp(-1j * TWO_PI * kx * sx[a] / Nx)
        for j in range(ny):
            ky = j if j <= (Ny - 1) // 2 else j - Ny
            if Ny % 2 == 0 and j == Ny // 2:
                ey = complex(np.cos(np.pi * sy[a]))
            else:
                ey = np.exp(-1j * TWO_PI * ky * sy[a] / Ny)
            for kx in range(nfx):
                spec[a, j, kx] = spec[a, j, kx] * (ey * ex[kx])
