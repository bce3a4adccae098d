"""The truth generator (fastalign.simulate): the periodic Fourier shift pins the DESIGN.md sign,
equals the library's phase-ramp kernel on periodic data, and the seed experiment is seeded and
documented as it is."""
import numpy as np
import pytest

from fastalign import _fft
from fastalign import phantoms as ph
from fastalign import simulate as sim
from fastalign.kernels import shift as ks


def test_fourier_shift_sign_and_exactness():
    rng = np.random.default_rng(0)
    img = rng.random((6, 10))
    # measured(x, y) = ideal(x - dx, y - dy): an integer shift is np.roll by (dy, dx).
    out = sim.fourier_shift(img, 3, -2)
    np.testing.assert_allclose(out, np.roll(img, (-2, 3), axis=(0, 1)), atol=1e-6)
    row = rng.random(9)
    np.testing.assert_allclose(sim.fourier_shift(row, -4), np.roll(row, -4), atol=1e-6)
    # Sub-pixel: a smooth bump moves its centroid by dx; shifts compose.
    x = np.arange(64)
    bump = np.exp(-0.5 * ((x - 30.0) / 3.0) ** 2)[None, :]
    moved = sim.fourier_shift(bump, 2.3)
    assert (moved * x).sum() / moved.sum() == pytest.approx(32.3, abs=1e-4)
    np.testing.assert_allclose(sim.fourier_shift(sim.fourier_shift(bump, 1.1), 1.2), moved,
                               atol=1e-5)
    # Stacks take one shift per image.
    stack = np.stack([img, img])
    out = sim.fourier_shift(stack, np.array([1.0, 0.0]), 0.0)
    np.testing.assert_allclose(out[0], np.roll(img, 1, axis=1), atol=1e-6)
    np.testing.assert_allclose(out[1], img, atol=1e-6)


def test_seed_experiment():
    exp = sim.seed_experiment(n=64, step_deg=2, shift_range=20, seed=0)
    data, angles, shifts = exp
    assert data.shape == (90, 1, 64) and data.dtype == np.float32 and data.flags.c_contiguous
    np.testing.assert_array_equal(angles, np.arange(0.0, 179.0, 2.0))
    assert shifts.shape == (90, 2) and np.all(shifts[:, 1] == 0)
    assert np.all(np.abs(shifts[:, 0]) <= 20) and shifts[:, 0].std() > 8
    again = sim.seed_experiment(n=64, seed=0)
    assert np.array_equal(again.data, data) and np.array_equal(again.shifts, shifts)
    # data = ideal(x - dx) for the documented phantom: the centroid moves by +dx (small
    # shifts at this size, so that nothing leaves the 64-pixel detector).
    from fastalign import project
    data, angles, shifts = sim.seed_experiment(n=64, shift_range=5, seed=1)
    ideal = project(ph.binary_phantom_2d(64, 1)[None], angles)
    x = np.arange(64)
    moved = (data[:, 0] * x).sum(1) / data[:, 0].sum(1)
    centre = (ideal[:, 0] * x).sum(1) / ideal[:, 0].sum(1)
    np.testing.assert_allclose(moved - centre, shifts[:, 0], atol=0.05)


@pytest.mark.parametrize("ny, nx", [(12, 16), (13, 15), (12, 15)])
def test_fourier_shift_equals_the_phase_ramp_kernel(ny, nx):
    """One convention: the generator's shift (complex FFT, real part) and the kernel the
    aligner resamples with (half spectrum, ``cos(pi s)`` at the Nyquist bins) agree to float32
    round-off (the generator returns float32) on periodic data with sub-pixel shifts.  The one
    bin where they differ by construction is the corner ``(ny/2, nx/2)`` of two even lengths:
    ``cos(pi (sx + sy))`` there for the generator, ``cos(pi sx) cos(pi sy)`` for the kernel
    (no real-valued sub-pixel shift exists at Nyquist), so that bin is removed from the data."""
    rng = np.random.default_rng(1)
    img = rng.standard_normal((3, ny, nx))
    if ny % 2 == 0 and nx % 2 == 0:
        checker = (-1.0) ** np.add.outer(np.arange(ny), np.arange(nx))
        img -= (img * checker).mean(axis=(1, 2))[:, None, None] * checker
    sx, sy = np.array([0.3, -2.75, 4.5]), np.array([-1.2, 0.5, 3.0])
    spec = np.ascontiguousarray(_fft.rfft2(img))
    ks.apply_phase_ramps(spec, sx, sy, ny, nx)
    via_kernel = _fft.irfft2(spec, s=(ny, nx))
    np.testing.assert_allclose(sim.fourier_shift(img, sx, sy), via_kernel, rtol=0, atol=1e-6)
    # ... and a sign error would show
    assert np.abs(sim.fourier_shift(img, -sx, -sy) - via_kernel).max() > 0.1


def test_phantoms_hold_no_generators():
    """One truth generator: the shift and the experiments live only in fastalign.simulate."""
    for name in ("fourier_shift", "seed_experiment", "rotated_axis_experiment",
                 "SeedExperiment", "RotatedAxisExperiment"):
        assert not hasattr(ph, name), name
        assert name in sim.__all__
