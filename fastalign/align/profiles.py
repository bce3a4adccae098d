"""y shifts from the tilt-invariant x-integrated profiles (no reconstruction needed).

For a parallel projection with the tilt axis along y, the sum of projection ``th`` over x is
``p_th(y) = integral f(x, y, z) dx dz``, the same at every tilt as long as the whole object
stays inside the field of view.  A tilt displaced by ``dy`` has ``p(y - dy)``, so the
profiles alone give ``dy`` up to a common constant (fixed by the gauge: zero mean).

When the profiles are *not* tilt invariant (a specimen wider than the field of view, content
leaving the detector at the top or bottom) the aligned profiles disagree; :func:`profile_y_shifts`
reports that disagreement (``misfit``) so that a caller can decide whether to trust the result.
"""
import numpy as np

from .shift import estimate_shift, tukey


def tilt_profiles(stack):
    """Per-tilt x-integrated profiles ``sum_x stack[i, y, x]``, float64 ``(n, ny)``."""
    return np.asarray(stack).sum(axis=2, dtype=np.float64)


def profile_y_shifts(profiles, *, taper=0.2, n_iter=5, min_coherence=0.1):
    """Per-tilt ``dy`` that best aligns the x-integrated profiles with their common mean.

    Parameters
    ----------
    profiles : array_like, shape (n_tilts, ny)
        From :func:`tilt_profiles`.
    taper : float
        Tukey window fraction applied along y (after removing the line through each
        profile's end values).
    n_iter : int
        Reference updates (the reference is the mean of the profiles aligned so far).
    min_coherence : float
        As in :func:`fastalign.align.shift.estimate_shift`.

    Returns
    -------
    dy : ndarray, float64, shape (n_tilts,)
        DESIGN.md sign (the displacement found in the data), zero mean.
    misfit : float
        RMS over tilts of ``||aligned profile - reference|| / ||reference||`` (each profile
        normalised to unit norm first): about 0 for a tilt-invariant object, larger when the
        profiles change with the tilt.
    """
    p = np.asarray(profiles, dtype=np.float64)
    n, ny = p.shape
    # remove the straight line through the end values (a constant background, a slope) so
    # that the profiles are ~0 at both ends: the window's edges then carry no feature that
    # stays put while the content moves
    t = np.linspace(0.0, 1.0, ny)[None, :]
    q = (p - (p[:, :1] * (1.0 - t) + p[:, -1:] * t)) * tukey(ny, taper)
    norm = np.linalg.norm(q, axis=1, keepdims=True)
    q = q / np.where(norm > 0, norm, 1.0)
    N = 2 * ny  # zero padding: shifting the spectra does not wrap content around
    Q = np.fft.rfft(q, n=N, axis=1)
    ramp = 2j * np.pi * np.arange(Q.shape[1]) / N
    pq = (Q.real ** 2 + Q.imag ** 2)
    dy = np.zeros(n)
    for _ in range(n_iter):
        ref = (Q * np.exp(ramp[None, :] * dy[:, None])).mean(axis=0)  # profiles moved by -dy
        C = Q * np.conj(ref)[None, :]
        pr = np.broadcast_to(ref.real ** 2 + ref.imag ** 2, C.shape)
        dy = estimate_shift(C, pq, np.ascontiguousarray(pr), N, min_coherence=min_coherence)
        dy -= dy.mean()
    aligned = Q * np.exp(ramp[None, :] * dy[:, None])
    ref = aligned.mean(axis=0)
    misfit = float(np.sqrt(np.mean(np.sum(np.abs(aligned - ref) ** 2, axis=1)))
                   / max(float(np.sqrt(np.sum(np.abs(ref) ** 2))), 1e-300))
    return dy, misfit
