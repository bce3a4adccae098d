"""Filtered backprojection (FBP) for fast first estimates.

Each detector row is filtered along x by linear (not circular) convolution with the discrete
ramp kernel of Kak & Slaney (ch. 3, eq. 61: ``h[0] = 1/4``, ``h[n] = -1/(pi n)^2`` for odd
``n``, 0 for even ``n``), optionally apodised, through zero-padded real FFTs; the filtered tilt
series is then backprojected with the exact transpose ``A.T`` of the Joseph projector and each
tilt is weighted by the angular interval it represents::

    x = A^T (w * (h conv b)),     w_i = (gap before + gap after) / 2   (radians)

For evenly spaced tilts over 180 degrees every ``w_i = pi / n_tilts`` (the textbook
``pi / (2 n_tilts)`` of implementations whose ramp is ``2|f|``); over a restricted range the
weights sum to the covered range, so a missing wedge lowers the amplitude of the structure it
hides and nothing else.  Gaps are measured between angles folded into ``[0, 180)``, and a gap
more than 3x the median gap (a missing wedge) counts as a median gap.

FFTs: pyFFTW ``FFTW`` objects on aligned buffers, planned once per ``(rows, pad, threads)``
(``FFTW_ESTIMATE``, so that the plan and thus the result do not depend on timing) and reused
across calls, with ``threads = numba.get_num_threads()``.  If pyFFTW cannot be imported the
module falls back to ``scipy.fft`` (same result to float32 round-off); :data:`FFT_BACKEND` tells
which is used.
"""
import threading

import numba
import numpy as np
import scipy.fft

from .._validate import as_angles_deg, as_float32_array, as_positive_int
from ..kernels import fbp as _k
from ..operator import Projector

try:  # pragma: no branch - the fallback is documented, exercised only without pyFFTW
    import pyfftw
    FFT_BACKEND = "pyfftw"
except ImportError:  # pragma: no cover
    pyfftw = None
    FFT_BACKEND = "scipy"

FILTERS = ("ramp", "shepp-logan", "hann")

#: Rows per FFT batch (bounds the padded work buffers to a few MB whatever the data size).
_CHUNK_ELEMS = 1 << 20
_PLANS = {}
_PLANS_LOCK = threading.Lock()


def padded_length(nx):
    """FFT length for linear convolution of ``nx`` samples with a kernel spanning ``±(nx-1)``."""
    return int(scipy.fft.next_fast_len(max(64, 2 * nx), real=True))


def ramp_filter(npad, filter="ramp"):
    """Frequency response (``npad//2 + 1`` real values) of the apodised discrete ramp.

    The ramp is the DFT of the spatial Kak-Slaney kernel (which is ``|f|`` in cycles/pixel
    without the DC error of a sampled ``|f|``); ``"shepp-logan"`` multiplies by
    ``sinc(f) = sin(pi f)/(pi f)``, ``"hann"`` by ``(1 + cos(2 pi f))/2``.
    """
    if filter not in FILTERS:
        raise ValueError(f"filter must be one of {FILTERS}, got {filter!r}")
    n = np.arange(npad)
    n = np.where(n <= npad // 2, n, n - npad)
    h = np.zeros(npad)
    h[0] = 0.25
    odd = (n % 2) != 0
    h[odd] = -1.0 / (np.pi * n[odd]) ** 2
    H = np.fft.rfft(h).real
    f = np.arange(H.size) / npad
    if filter == "shepp-logan":
        H = H * np.sinc(f)
    elif filter == "hann":
        H = H * 0.5 * (1.0 + np.cos(2.0 * np.pi * f))
    return H


def angular_weights(angles_deg):
    """Angular interval (radians) represented by each tilt; see the module docstring."""
    a = np.mod(np.asarray(angles_deg, np.float64), 180.0)
    n = a.size
    if n == 1:
        return np.array([np.pi])
    order = np.argsort(a, kind="stable")
    s = a[order]
    gaps = np.diff(np.append(s, s[0] + 180.0))  # gap after each sorted angle (circular)
    typical = float(np.median(gaps))
    gaps = np.where(gaps > 3.0 * typical, typical, gaps)
    w_sorted = 0.5 * (gaps + np.roll(gaps, 1))
    w = np.empty(n)
    w[order] = w_sorted
    return np.deg2rad(w)


class _RowFFT:
    """Real FFT / filter / inverse real FFT of a batch of zero-padded rows, planned once."""

    def __init__(self, rows, npad, threads):
        nf = npad // 2 + 1
        self.npad = npad
        self.threads = threads
        if pyfftw is not None:
            self.real = pyfftw.empty_aligned((rows, npad), dtype="float32")
            self.spec = pyfftw.empty_aligned((rows, nf), dtype="complex64")
            flags = ("FFTW_ESTIMATE",)
            self._fwd = pyfftw.FFTW(self.real, self.spec, axes=(1,), direction="FFTW_FORWARD",
                                    flags=flags, threads=threads)
            self._inv = pyfftw.FFTW(self.spec, self.real, axes=(1,),
                                    direction="FFTW_BACKWARD",
                                    flags=flags + ("FFTW_DESTROY_INPUT",), threads=threads)
        else:  # pragma: no cover - fallback
            self.real = np.empty((rows, npad), np.float32)
            self.spec = np.empty((rows, nf), np.complex64)
            self._fwd = self._inv = None
        self.lock = threading.Lock()

    def forward(self):
        if self._fwd is not None:
            self._fwd.execute()
        else:  # pragma: no cover
            self.spec[...] = scipy.fft.rfft(self.real, axis=1, workers=self.threads)

    def inverse(self):
        """Unnormalised inverse (the ``1/npad`` is folded into the filter)."""
        if self._inv is not None:
            self._inv.execute()
        else:  # pragma: no cover
            self.real[...] = scipy.fft.irfft(self.spec, n=self.npad, axis=1, norm="forward",
                                             workers=self.threads)


def _plan(rows, npad, threads):
    key = (rows, npad, threads, FFT_BACKEND)
    with _PLANS_LOCK:
        p = _PLANS.get(key)
        if p is None:
            p = _PLANS[key] = _RowFFT(rows, npad, threads)
    return p


def filter_projections(tilt_series, angles_deg, filter="ramp", out=None):
    """Ramp-filter every detector row along x and weight each tilt by its angular interval.

    Parameters
    ----------
    tilt_series : array_like, shape (n_tilts, ny, nx)
    angles_deg : array_like, shape (n_tilts,)
    filter : {"ramp", "shepp-logan", "hann"}
    out : ndarray, float32, optional
        Output buffer of the same shape.

    Returns
    -------
    ndarray, float32, shape (n_tilts, ny, nx): ``w_i * (h conv b_i)`` row by row.
    """
    b = as_float32_array(tilt_series, 3, "tilt_series")
    n, ny, nx = b.shape
    angles = as_angles_deg(angles_deg, n_expected=n)
    npad = padded_length(nx)
    H = ramp_filter(npad, filter) / npad
    if out is None:
        out = np.empty_like(b)
    roww = np.repeat(angular_weights(angles), ny)
    src = b.reshape(n * ny, nx)
    dst = out.reshape(n * ny, nx)
    total = n * ny
    chunk = max(1, min(total, _CHUNK_ELEMS // npad))
    threads = numba.get_num_threads()
    for r0 in range(0, total, chunk):
        r1 = min(total, r0 + chunk)
        plan = _plan(r1 - r0, npad, threads)
        with plan.lock:
            _k.pad_rows(src[r0:r1], plan.real)
            plan.forward()
            _k.filter_rows(plan.spec, H, roww[r0:r1])
            plan.inverse()
            _k.unpad_rows(plan.real, dst[r0:r1])
    return out


def fbp(tilt_series, angles_deg, *, filter="ramp", nz=None, center_offset=0.0):
    """Filtered backprojection.

    ``x = A^T (w * (h conv b))``: rows filtered along x by the (apodised) discrete ramp with
    zero padding to ``>= 2 nx`` (no wrap-around), tilts weighted by their angular interval
    ``w`` (``pi / n_tilts`` for even sampling of 180 degrees), backprojected with ``A.T``.
    The amplitude of a fully sampled object is reproduced (module docstring).

    Parameters
    ----------
    tilt_series : array_like, shape (n_tilts, ny, nx)
    angles_deg : array_like, shape (n_tilts,)
    filter : {"ramp", "shepp-logan", "hann"}
    nz : int, optional
        Volume thickness; defaults to ``nx``.
    center_offset : float
        Rotation-centre offset in detector pixels.

    Returns
    -------
    volume : ndarray, float32, shape (ny, nz, nx)

    Notes
    -----
    Memory: the output volume, one filtered tilt series and a few MB of FFT buffers.
    """
    if filter not in FILTERS:
        raise ValueError(f"filter must be one of {FILTERS}, got {filter!r}")
    b = as_float32_array(tilt_series, 3, "tilt_series")
    n, ny, nx = b.shape
    angles = as_angles_deg(angles_deg, n_expected=n)
    nz = nx if nz is None else as_positive_int(nz, "nz")
    A = Projector(angles, (ny, nz, nx), center_offset)
    q = filter_projections(b, angles, filter)
    vol = np.empty(A.domain_shape, np.float32)
    return A.adjoint_into(q, vol)


__all__ = ["fbp", "filter_projections", "ramp_filter", "angular_weights"]
