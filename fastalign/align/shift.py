"""Sub-pixel Fourier translation of image stacks and per-tilt Fourier shift estimation."""
import numpy as np

from .. import _fft
from ..kernels import shift as _k


def fourier_shift(stack, shifts, *, pad=None, out=None):
    """Translate every image of a stack by a sub-pixel amount, via its Fourier transform.

    ``out[a](x, y) = stack[a](x - sx[a], y - sy[a])``: with ``shifts = (dx, dy)`` measured in the
    DESIGN.md convention, ``fourier_shift(raw, -shifts)`` aligns the raw data.  Images are padded
    by edge replication (``pad`` pixels per side, default ``ceil(max |shift|) + 8`` along
    each axis that has a non-zero shift) so that
    content moving in from outside is the nearest edge value, not the opposite edge.

    Parameters
    ----------
    stack : ndarray, float32, shape (n, ny, nx)
    shifts : array_like, shape (n, 2)
        ``(sx, sy)`` in pixels.
    pad : int or (int, int), optional
        Padding per side, for both axes or as ``(pad_y, pad_x)``.
    out : ndarray, float32, shape (n, ny, nx), optional

    Returns
    -------
    out : ndarray, float32, shape (n, ny, nx)
    """
    stack = np.asarray(stack, dtype=np.float32)
    n, ny, nx = stack.shape
    s = np.asarray(shifts, dtype=np.float64).reshape(n, 2)
    if out is None:
        out = np.empty_like(stack)
    pads = []
    pad_yx = (None, None) if pad is None else tuple(np.broadcast_to(np.asarray(pad), 2))
    for col, length, pad_axis in ((1, ny, pad_yx[0]), (0, nx, pad_yx[1])):
        if pad_axis is not None:
            p = int(pad_axis)
        elif np.any(s[:, col] != 0):
            p = int(np.ceil(np.abs(s[:, col]).max())) + 8
        else:
            p = 0  # nothing moves along this axis: no padding (and no wrap-around) needed
        pads.append(_fft.next_fast_len(length + 2 * p) if p else length)
    Ny, Nx = pads
    py0, px0 = (Ny - ny) // 2, (Nx - nx) // 2
    chunk = max(1, int(2**26 // (Ny * Nx * 8)))  # bound the complex temporary to ~0.5 GB
    for a0 in range(0, n, chunk):
        a1 = min(n, a0 + chunk)
        padded = np.pad(stack[a0:a1], ((0, 0), (py0, Ny - ny - py0), (px0, Nx - nx - px0)),
                        mode="edge")
        spec = _fft.rfft2(padded)
        _k.apply_phase_ramps(spec, np.ascontiguousarray(s[a0:a1, 0]),
                             np.ascontiguousarray(s[a0:a1, 1]), Ny, Nx)
        res = _fft.irfft2(spec, s=(Ny, Nx))
        out[a0:a1] = res[:, py0:py0 + ny, px0:px0 + nx]
    return out


def shift_padding(shifts):
    """The default ``(pad_y, pad_x)`` of :func:`fourier_shift` for these ``(sx, sy)`` shifts.

    Lets a caller shifting a stack in several parts (e.g. tilt chunks on different workers)
    use the padding the whole stack would get, so that the parts equal the whole.
    """
    s = np.asarray(shifts, dtype=np.float64).reshape(-1, 2)
    return tuple(int(np.ceil(np.abs(s[:, c]).max())) + 8 if np.any(s[:, c] != 0) else 0
                 for c in (1, 0))


def tukey(n, alpha):
    """Tukey (tapered cosine) window of length n; ``alpha`` is the tapered fraction."""
    w = np.ones(n)
    if alpha <= 0 or n < 3:
        return w
    m = int(np.floor(alpha * (n - 1) / 2.0))
    if m < 1:
        return w
    ramp = 0.5 * (1 - np.cos(np.pi * np.arange(m) / m))
    w[:m] = ramp
    w[n - m:] = ramp[::-1]
    return w


def cross_power(measured, reprojected, axis, window=None):
    """Per-tilt cross-power spectrum along ``axis`` (2: x, 1: y), summed over the other axis.

    Returns ``C (n, nf)`` complex128 and the powers ``pb, pp (n, nf)`` of both inputs.
    """
    b = measured
    p = reprojected
    if window is not None:
        shape = [1, 1, 1]
        shape[axis] = -1
        wv = window.reshape(shape).astype(np.float32)
        b = b * wv
        p = p * wv
    B = _fft.rfft(b, axis=axis)
    P = _fft.rfft(p, axis=axis)
    n = measured.shape[0]
    nf = B.shape[axis]
    C = np.empty((n, nf), np.complex128)
    pb = np.empty((n, nf))
    pp = np.empty((n, nf))
    if axis == 2:
        _k.cross_power_rows(B, P, C, pb, pp)
    else:
        _k.cross_power_cols(B, P, C, pb, pp)
    return C, pb, pp


def estimate_shift(C, pb, pp, length, *, estimator="phase", min_coherence=0.1):
    """Per-tilt shift (pixels) from cross-power spectra of signals of ``length`` samples.

    ``estimator="phase"``: complex logarithm, phase unwrapping along frequency and a
    magnitude-weighted least-squares slope over coherent frequencies.
    ``estimator="gradient"``: maximise ``Re sum_w C(w) exp(2 pi i w s / N)`` (equivalently
    minimise ``sum_w |B e^{2 pi i w s/N} - P|^2``) from the best integer shift by Newton steps.
    The result ``s`` satisfies ``measured(x) ~ reprojected(x - s)``.
    """
    n = C.shape[0]
    out = np.empty(n)
    if estimator == "phase":
        wsum = np.empty(n)
        _k.estimate_phase(C, pb, pp, int(length), float(min_coherence), 3, out, wsum)
    elif estimator == "gradient":
        _k.estimate_gradient(C, int(length), 50, out)
    else:
        raise ValueError(f"estimator must be 'phase' or 'gradient', got {estimator!r}")
    return out
