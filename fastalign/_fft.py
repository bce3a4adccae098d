"""FFT backend: pyFFTW's scipy.fft-compatible interface with its plan cache, or scipy.fft.

pyFFTW is a hard dependency; ``scipy.fft`` is used only if pyFFTW fails to import (e.g. a
platform without a wheel).  ``BACKEND`` names the one in use.  Thread count follows Numba's.
"""
import numba
import scipy.fft as _sfft

try:  # pragma: no cover - exercised implicitly
    import pyfftw
    import pyfftw.interfaces.scipy_fft as _pfft

    #: seconds pyFFTW's interfaces keep a plan (with copies of its input and output arrays)
    KEEPALIVE_S = 60.0
    pyfftw.interfaces.cache.enable()
    pyfftw.interfaces.cache.set_keepalive_time(KEEPALIVE_S)
    BACKEND = "pyfftw"
except Exception:  # pragma: no cover - fallback path
    _pfft = None
    BACKEND = "scipy"


def _workers():
    return numba.get_num_threads()


def rfft(x, n=None, axis=-1):
    if _pfft is not None:
        return _pfft.rfft(x, n=n, axis=axis, workers=_workers())
    return _sfft.rfft(x, n=n, axis=axis, workers=_workers())


def irfft(x, n=None, axis=-1):
    if _pfft is not None:
        return _pfft.irfft(x, n=n, axis=axis, workers=_workers())
    return _sfft.irfft(x, n=n, axis=axis, workers=_workers())


def rfft2(x, s=None):
    if _pfft is not None:
        return _pfft.rfftn(x, s=s, axes=(-2, -1), workers=_workers())
    return _sfft.rfftn(x, s=s, axes=(-2, -1), workers=_workers())


def irfft2(x, s):
    if _pfft is not None:
        return _pfft.irfftn(x, s=s, axes=(-2, -1), workers=_workers())
    return _sfft.irfftn(x, s=s, axes=(-2, -1), workers=_workers())


def release_plans():
    """Empty pyFFTW's plan cache: its plans hold aligned copies of the inputs and outputs of
    every transform of the last :data:`KEEPALIVE_S` seconds (several stack-sized arrays after
    a full-stack shift).  Plans are built with ``FFTW_ESTIMATE``: results do not change."""
    if _pfft is not None and pyfftw.interfaces.cache.is_enabled():
        pyfftw.interfaces.cache.disable()
        pyfftw.interfaces.cache.enable()
        pyfftw.interfaces.cache.set_keepalive_time(KEEPALIVE_S)


def next_fast_len(n):
    return _sfft.next_fast_len(int(n), real=True)
