"""Kernels of ``fastalign/kernels/shift.py``: cross-power spectra and phase ramps against the
one-element-at-a-time references in ``tests/reference.py``, and bit-identity for 1 vs 2 threads.

Measured deviations from the complex128 references (numba 0.68, fastmath set of _config):

* cross-power, complex64 or complex128 inputs: ``max |C - C_ref| / max(sqrt(pb pp))`` =
  1.3e-16; powers ``pb, pp`` 4.5e-16 relative (float64 accumulation, only the order of a few
  roundings differs).  Asserted: 1e-14.
* phase ramps, relative to ``max |spec|``: complex128 spectra 2.6e-15 (the phase
  ``2 pi k s / N`` is formed in a different order), asserted 2e-14; complex64 4.7e-8 (the
  factor is applied in complex128 and the product rounded to complex64 once: <= ~1 ulp),
  asserted 2e-7.
"""
import numba
import numpy as np
import pytest

import reference as ref
from fastalign import _fft
from fastalign.kernels import shift as ks
from fastalign.testing import run_with_threads

needs_two_threads = pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2,
                                       reason="needs 2 Numba threads")


def _same_bits(a, b):
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _spectra(dtype, shape, axis, seed=0):
    """Spectra along ``axis`` of random rows and of the same rows shifted by a few pixels."""
    rng = np.random.default_rng(seed)
    real = np.float32 if dtype == np.complex64 else np.float64
    p = rng.standard_normal(shape).astype(real)
    b = np.roll(p, 3, axis=axis) + 0.1 * rng.standard_normal(shape).astype(real)
    return (np.ascontiguousarray(_fft.rfft(b, axis=axis)),
            np.ascontiguousarray(_fft.rfft(p, axis=axis)))


def _cross_power(B, P, axis):
    n = B.shape[0]
    nf = B.shape[2] if axis == 2 else B.shape[1]
    C = np.full((n, nf), np.nan, np.complex128)
    pb = np.full((n, nf), np.nan)
    pp = np.full((n, nf), np.nan)
    (ks.cross_power_rows if axis == 2 else ks.cross_power_cols)(B, P, C, pb, pp)
    return C, pb, pp


def _phase_ramps(spec, sx, sy, Ny, Nx):
    out = spec.copy()
    ks.apply_phase_ramps(out, sx, sy, Ny, Nx)
    return out


# --------------------------------------------------------------------------- cross-power

@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
@pytest.mark.parametrize("axis, shape", [(2, (5, 7, 17)), (2, (3, 1, 16)),
                                         (1, (4, 12, 9)), (1, (3, 11, 1))])
def test_cross_power_matches_reference(dtype, axis, shape):
    B, P = _spectra(dtype, shape, axis)
    assert B.dtype == dtype
    C, pb, pp = _cross_power(B, P, axis)
    C_r, pb_r, pp_r = ref.cross_power(B, P, axis)
    scale = np.sqrt(pb_r * pp_r).max()
    assert np.abs(C - C_r).max() <= 1e-14 * scale
    np.testing.assert_allclose(pb, pb_r, rtol=1e-14, atol=0)
    np.testing.assert_allclose(pp, pp_r, rtol=1e-14, atol=0)
    # the phase carries the shift: +3 px along the transformed axis at the first frequency
    n_len = shape[axis]
    if n_len >= 8:
        np.testing.assert_allclose(np.angle(C_r[:, 1]), -2 * np.pi * 3 / n_len, atol=0.2)


def test_cross_power_reference_detects_a_conjugation_error():
    """``B P*`` and ``B* P`` differ: a swapped conjugate must not pass the tolerance above."""
    B, P = _spectra(np.complex128, (3, 6, 17), 2, seed=1)
    C, pb, pp = _cross_power(B, P, 2)
    C_swapped, _, _ = ref.cross_power(np.conj(B), np.conj(P), 2)
    assert np.abs(C - C_swapped).max() > 1e-3 * np.sqrt(pb * pp).max()


# --------------------------------------------------------------------------- phase ramps

@pytest.mark.parametrize("dtype, tol", [(np.complex64, 2e-7), (np.complex128, 2e-14)])
@pytest.mark.parametrize("Ny, Nx", [(16, 20), (15, 21), (16, 1), (1, 9)])
def test_phase_ramps_match_reference(dtype, tol, Ny, Nx):
    rng = np.random.default_rng(2)
    n = 4
    real = np.float32 if dtype == np.complex64 else np.float64
    spec = np.ascontiguousarray(_fft.rfft2(rng.standard_normal((n, Ny, Nx)).astype(real)))
    assert spec.dtype == dtype
    sx = np.array([0.0, 1.0, -2.75, 7.3])
    sy = np.array([0.5, -3.0, 0.125, -6.6])
    got = _phase_ramps(spec, sx, sy, Ny, Nx)
    want = ref.phase_ramps(spec, sx, sy, Ny, Nx)
    assert got.dtype == dtype
    assert np.abs(got - want).max() <= tol * np.abs(spec).max()


@pytest.mark.parametrize("Ny, Nx", [(12, 16), (13, 15)])
def test_phase_ramps_integer_shift_is_a_roll(Ny, Nx):
    """Sign and axes: (sx, sy) = (3, -2) moves the image 3 px along x and -2 px along y."""
    rng = np.random.default_rng(3)
    img = rng.standard_normal((2, Ny, Nx))
    spec = np.ascontiguousarray(_fft.rfft2(img))
    out = _phase_ramps(spec, np.array([3.0, 0.0]), np.array([-2.0, 0.0]), Ny, Nx)
    back = _fft.irfft2(out, s=(Ny, Nx))
    np.testing.assert_allclose(back[0], np.roll(img[0], (-2, 3), axis=(0, 1)), atol=1e-12)
    np.testing.assert_allclose(back[1], img[1], atol=1e-12)


# --------------------------------------------------------------------------- threads

@needs_two_threads
@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_shift_kernels_bit_identical_across_thread_counts(dtype):
    """Every kernel of shift.py gives the same bits with 1 and 2 Numba threads."""
    for axis, shape in [(2, (9, 13, 40)), (1, (9, 40, 13))]:
        B, P = _spectra(dtype, shape, axis, seed=4)
        one = run_with_threads(_cross_power, 1, B, P, axis)
        two = run_with_threads(_cross_power, 2, B, P, axis)
        assert all(_same_bits(a, b) for a, b in zip(one, two)), axis
        C, pb, pp = one
        N = shape[axis]
        for n_refine in (0, 3):
            outs = []
            for threads in (1, 2):
                s = np.full(C.shape[0], np.nan)
                w = np.full(C.shape[0], np.nan)
                run_with_threads(ks.estimate_phase, threads, C, pb, pp, N, 0.1, n_refine, s, w)
                outs.append((s, w))
            assert _same_bits(outs[0][0], outs[1][0]) and _same_bits(outs[0][1], outs[1][1])
        g = []
        for threads in (1, 2):
            s = np.full(C.shape[0], np.nan)
            run_with_threads(ks.estimate_gradient, threads, C, N, 20, s)
            g.append(s)
        assert _same_bits(g[0], g[1])
        assert np.all(np.isfinite(g[0])) and np.abs(g[0] - 3).max() < 0.5  # sanity: +3 px
    rng = np.random.default_rng(5)
    real = np.float32 if dtype == np.complex64 else np.float64
    Ny, Nx = 24, 30
    spec = np.ascontiguousarray(_fft.rfft2(rng.standard_normal((7, Ny, Nx)).astype(real)))
    sx, sy = rng.uniform(-5, 5, 7), rng.uniform(-5, 5, 7)
    r1 = run_with_threads(_phase_ramps, 1, spec, sx, sy, Ny, Nx)
    r2 = run_with_threads(_phase_ramps, 2, spec, sx, sy, Ny, Nx)
    assert _same_bits(r1, r2)
