"""FFT backend: pyFFTW's scipy.fft-compatible interface with its plan cache, or scipy.fft.

pyFFTW is a hard dependency; ``scipy.fft`` is used only if pyFFTW fails to import (e.g. a
platform without a wheel).  ``BACKEND`` names the one in use.  Thread count follows Numba's.
"""
import numba
import scipy.fft as _sfft

try:  # pragma: no cover - exercised implicitly
    import pyfftw
    import pyfftw.interfaces.scipy_fft as _pfft

    pyfftw.interfaces.cache.enable()
    pyfftw.interfaces.cache.set_keepalive_time(60.0)
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


def next_fast_len(n):
    return _sfft.next_fast_len(int(n), real=True)
