"""Sub-pixel Fourier translation of image stacks and per-tilt Fourier shift estimation."""
import warnings

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
    """Tukey (tapered cosine) window of length n; ``alpha`` is the tapered fraction.

    The loop's taper (the executors' comparison windows): a ramp of ``m`` samples starting
    at 0.  The baselines use the textbook window, :func:`tukey_symmetric`; the two differ in
    the ramp's sampling, and each path's results were measured with its own."""
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


def tukey_symmetric(n, alpha):
    """The textbook symmetric Tukey window of length ``n`` (flat top, cosine tapers over
    ``alpha / 2`` of the length at each end; ``alpha >= 1`` is the Hann window), the one
    ``scipy.signal.windows.tukey`` returns, without importing ``scipy.signal`` (its import
    pulls in ``scipy.stats``: ~47 MB resident and 0.6 s in every process)."""
    if n <= 1 or alpha <= 0:
        return np.ones(max(n, 0))
    if alpha >= 1.0:
        return 0.5 + 0.5 * np.cos(np.linspace(-np.pi, np.pi, n))
    width = int(np.floor(alpha * (n - 1) / 2.0))
    k = np.arange(n, dtype=np.float64)
    head, tail = k[:width + 1], k[n - width - 1:]
    w = np.ones(n)
    w[:width + 1] = 0.5 * (1 + np.cos(np.pi * (-1 + 2.0 * head / alpha / (n - 1))))
    w[n - width - 1:] = 0.5 * (1 + np.cos(np.pi * (-2.0 / alpha + 1
                                                   + 2.0 * tail / alpha / (n - 1))))
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


#: Median of the chi-squared distribution with one degree of freedom (robust scale of
#: squared standard normal residuals).
CHI2_1_MEDIAN = 0.454936423119572
#: The phase noise scale is measured at frequencies whose predicted phase variance is at most
#: this (std 0.5 rad: sin(r) = r within 4 %), where the linearisation behind (1) holds.
LINEAR_PHASE_VAR = 0.25


def shift_uncertainty(C, pb, pp, length, shifts, *, min_coherence=0.1, absorbed=None):
    """1-sigma standard error (pixels) of each tilt's shift estimated from its cross-power
    spectrum, from the scatter of the spectrum's phase about the fitted line.

    The phase estimator (:func:`estimate_shift`) solves the weighted least-squares problem
    ``min_s sum_w m_w (phi_w + k w s)^2`` over the coherent frequencies ``w`` (``k = 2 pi /
    N``, weights ``m_w = |C_w|``, ``phi_w`` the unwrapped phase), so that

        s = -sum_w m_w w phi_w / (k D),   D = sum_w m_w w^2,

    and for independent phase errors of variance ``v_w``

        var(s) = sum_w m_w^2 w^2 v_w / (k^2 D^2).                                    (1)

    The phase of ``C_w = sum_j B_jw conj(P_jw)`` (``j`` the summed rows or columns), with
    ``B_j = P_j e^{-i k w s} + noise_j`` (noise white along the transform, power ``sigma^2``
    per bin, as Poisson or read noise), has the variance ``v_w = sigma^2 pp_w / (2 |C_w|^2)``
    (``Im(sum_j noise_j conj(P_j)) / |C_w|``; equal to the Cramer-Rao ``(1 - g_w^2) / (2 M
    g_w^2)`` for ``M`` looks of coherence ``g_w``).  The noise level is not known here (rows
    of different content, windows, binning, one row or many), so only the *shape* ``u_w =
    (1 - f_w) pp_w / |C_w|^2`` is taken from the spectra (``f_w`` below: the part of the
    noise the reconstruction fits does not show) and the scale from the data: with ``v_w = c
    u_w``, the residual phases ``r_w = wrap(phi_w + k w s)`` about the fitted line give

        c = median_w(r_w^2 / u_w) / 0.4549                 (0.4549: median of chi^2_1)

    The median, not the mean: where the signal is weak the phase is nearly uniform, the
    linearised ``u_w`` (with a ``|C_w|`` that is mostly noise) is far too small and those
    ``r_w^2 / u_w`` would dominate a mean (4x too large ``c`` on a synthetic test); and,
    iterating, only over the frequencies whose predicted phase variance ``c u_w`` is at most
    ``LINEAR_PHASE_VAR`` (0.5 rad std), where that linearisation holds (at least three, else
    the median over all stays).  For the same reason each ``v_w`` is capped at ``pi^2 / 3``,
    the variance of a uniform phase.  Residual model
    misfit (an unconverged reconstruction, interpolation) shows in ``r_w`` as it shows in
    ``s``, so it is counted too.

    **The reconstruction absorbs part of each tilt's error.**  The reprojection ``P`` comes
    from a reconstruction of the data themselves, which follows a fraction ``f_w`` (the
    leverage of one tilt at frequency ``w``, :func:`absorbed_fraction`) of any change of that
    tilt: its data noise (so the observed phase noise is the part ``(1 - f_w)`` the model
    cannot fit) and its shift error ``d`` (the measured phase slope is ``(1 - f_w) k w d``).
    The loop stops where the measured update vanishes, ``sum_w m_w w ((1 - f_w) k w d +
    e_w) = 0`` (``e_w`` the observed phase noise, variance ``v_w``), so the error of the
    converged shift has variance (1) with ``D`` replaced by

        D' = sum_w m_w w^2 (1 - f_w),                                                (2)

    inflating the naive error by about ``1 / (1 - f)``.  ``f_w`` has no fitted constant: it
    follows from the angular sampling and the reconstructed region.  The Newton estimator (``estimator="gradient"``) satisfies
    ``sum_w |C_w| w sin(r_w) = 0``, the same normal equation to first order, so (1) serves
    both.

    Parameters
    ----------
    C, pb, pp : ndarray, shape (n, nf)
        Cross-power spectrum and powers (:func:`cross_power`).
    length : int
        Signal length ``N``.
    shifts : ndarray, shape (n,)
        The estimated shifts (pixels).
    min_coherence : float
        As in :func:`estimate_shift` (the same frequencies are used).
    absorbed : ndarray, shape (n, nf) or (n, 1), optional
        The fractions ``f_w`` of (2) (default 0: a reference independent of the data).

    Returns
    -------
    sigma : ndarray, float64, shape (n,)
        Standard errors in pixels of the signal's sampling; ``inf`` where fewer than three
        frequencies are coherent.
    """
    C = np.asarray(C)
    n, nf = C.shape
    N = int(length)
    top = nf - 1 if N % 2 == 0 else nf   # as the estimator: no even-length Nyquist bin
    k = 2.0 * np.pi / N
    w = np.arange(nf, dtype=np.float64)
    mag = np.abs(C)
    coh = mag / np.sqrt(pb * pp + 1e-300)
    inband = (w >= 1) & (w < top)
    cmax = np.where(inband, mag, 0.0).max(axis=1, keepdims=True)
    valid = inband & (coh >= min_coherence) & (mag >= 1e-8 * cmax) & (cmax > 0)
    s = np.asarray(shifts, dtype=np.float64).reshape(n, 1)
    r = np.angle(C) + k * w * s
    r = r - 2.0 * np.pi * np.floor((r + np.pi) / (2.0 * np.pi))
    keep = 1.0 if absorbed is None else 1.0 - np.clip(absorbed, 0.0, 1.0)
    u = keep * pp / np.maximum(mag * mag, 1e-300)
    m = np.where(valid, mag, 0.0)
    nv = valid.sum(axis=1)
    ok = valid & (u > 0)
    q = np.where(ok, r * r / np.where(ok, u, 1.0), np.nan)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # all-NaN rows: nv == 0, inf below
        c = np.nanmedian(np.where(nv[:, None] > 0, q, 0.0), axis=1) / CHI2_1_MEDIAN
        for _ in range(3):   # only where the linearised phase error is small
            lin = ok & (c[:, None] * u <= LINEAR_PHASE_VAR)
            c_lin = np.nanmedian(np.where(lin, q, np.nan), axis=1) / CHI2_1_MEDIAN
            c = np.where(lin.sum(axis=1) >= 3, c_lin, c)
    v = np.minimum(c[:, None] * u, np.pi ** 2 / 3.0)
    D = (m * w * w * keep).sum(axis=1)
    Dm = np.maximum(D, 1e-150)
    var = (m * m * w * w * v).sum(axis=1) / (k * k * Dm * Dm)
    sigma = np.sqrt(var)
    sigma[(nv < 3) | (D <= 0)] = np.inf
    return sigma


def absorbed_fraction(angles_deg, nz, nx, length):
    """Leverage ``f[i, w]`` of tilt ``i``'s data at frequency ``w`` (cycles per ``length``
    samples along x) in a reconstruction of an ``(nz, nx)`` region from all tilts.

    By the Fourier-slice theorem tilt ``i`` samples the slice's spectrum on a line; at radius
    ``w / length`` its neighbours (angular step ``dth_i``, half the distance to the two
    neighbouring tilts) are ``w dth_i / length`` apart, while the spectrum of a region
    ``L_i`` long along the beam (``L_i = min(nz / |cos th|, nx / |sin th|)``) is smooth over
    ``1 / L_i``.  About ``length / (w dth_i L_i)`` tilts share each degree of freedom there,
    so one tilt's share of its own data is

        f[i, w] = min(1, w dth_i L_i / length)

    (1 above the Crowther frequency: the reconstruction fits that tilt's data whatever
    they are).  Returns ``(n, length // 2 + 1)`` float64.
    """
    th = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    n = th.size
    order = np.argsort(th)
    ts = th[order]
    step = np.empty(n)
    if n > 1:
        gaps = np.diff(ts)
        step_sorted = np.empty(n)
        step_sorted[1:-1] = 0.5 * (gaps[:-1] + gaps[1:])
        step_sorted[0], step_sorted[-1] = gaps[0], gaps[-1]
        step[order] = step_sorted
    else:
        step[:] = np.pi
    with np.errstate(divide="ignore"):
        L = np.minimum(nz / np.abs(np.cos(th)), nx / np.abs(np.sin(th)))
    w = np.arange(int(length) // 2 + 1, dtype=np.float64)
    return np.minimum(1.0, w[None, :] * (step * L)[:, None] / float(length))


def coupled_uncertainty(sigma0, angles_deg, nz, nx, length, weights):
    """1-sigma errors of converged y shifts, whose errors the reconstruction shares between
    neighbouring tilts.

    A tilt's y shift changes its image at every x frequency ``w``.  The reconstruction
    predicts tilt ``i`` at ``w`` from the tilts within the angular distance over which the
    slice's spectrum is smooth (``|th_i - th_j| < length / (w L_i)``, ``L_i`` as in
    :func:`absorbed_fraction`), modelled as the average ``F_ij(w) = K_ij / sum_k K_ik`` with
    the triangle ``K_ij = max(0, 1 - w L_i |th_i - th_j| / length)`` (its diagonal is about
    :func:`absorbed_fraction`, its rows sum to 1: a common shift is absorbed whole), and
    ``F = sum_w weights_i(w) F(w) / sum_w weights_i(w)``.  The measured update of tilt ``i``
    is ``((I - F) d)_i + e_i`` (``e_i`` of standard error ``sigma0_i``, the phase scatter's
    error without absorption, :func:`shift_uncertainty`); the loop stops where it vanishes,
    so with the mean of ``d`` fixed (the y gauge) ``d = -G e``, ``G`` the first ``n`` columns
    of the pseudo-inverse of ``M = [I - F; 1^T]``, and the errors are the square roots of the
    diagonal of ``G diag(sigma0^2) G^T``.  Tilts whose ``sigma0`` is not finite keep it and
    are left out of ``M``.

    The weights are empirical: the x spectrum's amplitude ``|P(w)|``.  With its power
    ``|P(w)|^2`` (a first-order model's choice) the coupling is too weak (normalised dy
    errors, 1.4826 MAD, 1.2-1.7 on two 3-D particle series), with flat weights far too strong
    (0.3).  The amplitude was chosen on those two series (seeds 0, 1, noise 0.1 and 0.3) and
    holds on others (seeds 2, 3, noise 0.2, a 64 px wide series at 2 degree steps): 0.70-1.47
    over 14 runs (``bench/uncertainty_calibration.py --case particles``).  The coupling
    matrix (``n x n``, built over the x frequencies) is cheap for a few hundred tilts.

    Parameters
    ----------
    sigma0 : ndarray, shape (n,)
    angles_deg : ndarray, shape (n,)
    nz, nx : int
        Reconstructed region (samples of the x spectrum's sampling).
    length : int
        Length of the x signals (``weights`` has ``length // 2 + 1`` frequencies).
    weights : ndarray, shape (n, length // 2 + 1)
        Non-negative weights of the x frequencies per tilt.

    Returns
    -------
    ndarray, float64, shape (n,)
    """
    s0 = np.asarray(sigma0, dtype=np.float64)
    out = s0.copy()
    ok = np.isfinite(s0)
    n = int(ok.sum())
    if n < 3:
        return out
    th = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))[ok]
    with np.errstate(divide="ignore"):
        L = np.minimum(nz / np.abs(np.cos(th)), nx / np.abs(np.sin(th)))
    dist = np.abs(th[:, None] - th[None, :]) * L[:, None] / float(length)
    wts = np.asarray(weights, dtype=np.float64)[ok]
    wts = wts / np.maximum(wts.sum(axis=1, keepdims=True), 1e-300)
    F = np.zeros((n, n))
    for w in range(wts.shape[1]):
        K = np.maximum(0.0, 1.0 - w * dist)
        F += wts[:, w:w + 1] * (K / K.sum(axis=1, keepdims=True))
    G = np.linalg.pinv(np.vstack([np.eye(n) - F, np.ones((1, n))]))[:, :n]
    out[ok] = np.sqrt(np.einsum("ij,j,ij->i", G, s0[ok] ** 2, G))
    return out
