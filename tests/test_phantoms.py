"""Phantoms are deterministic, compact and typed as documented; shift and gauge helpers pin
their conventions."""
import numpy as np
import pytest

from fastalign import phantoms as ph
from fastalign.testing import gauge_rms, remove_gauge


def _check_array(a, shape):
    assert a.dtype == np.float32 and a.flags.c_contiguous and a.shape == shape
    assert np.all(np.isfinite(a)) and a.min() >= 0


def test_ellipses_and_shepp_logan():
    img = ph.shepp_logan_2d(64, 48)
    _check_array(img, (48, 64))
    assert img.max() == pytest.approx(1.0)
    assert np.array_equal(img, ph.ellipses_2d(64, 48))  # the default ellipse set
    # 4x4 supersampling: a disc's mass equals its area to within the edge sampling error.
    disc = ph.ellipses_2d(101, ellipses=[(3.0, -2.0, 30.0, 30.0, 0.0, 2.0)])
    assert disc.sum() == pytest.approx(2.0 * np.pi * 30.0**2, rel=2e-3)
    # Rotation convention: +30 deg turns the long axis from +x towards +z.
    e = ph.ellipses_2d(81, ellipses=[(0.0, 0.0, 30.0, 4.0, 30.0, 1.0)])
    c = 40
    k = 20
    assert e[c + round(k * np.sin(np.pi / 6)), c + round(k * np.cos(np.pi / 6))] == 1.0
    assert e[c - round(k * np.sin(np.pi / 6)), c + round(k * np.cos(np.pi / 6))] == 0.0
    with pytest.raises(ValueError, match="semi-axes"):
        ph.ellipses_2d(16, ellipses=[(0, 0, 0, 1, 0, 1)])


def test_analytic_line_integrals_of_a_disc():
    u = np.array([-40.0, -30.0, 0.0, 15.0, 29.9])
    p = ph.ellipse_line_integrals([(0.0, 0.0, 30.0, 30.0, 0.0, 1.5)], [0.0, 77.0], u)
    want = 1.5 * 2 * np.sqrt(np.maximum(30.0**2 - u**2, 0))
    np.testing.assert_allclose(p, np.stack([want, want]), rtol=1e-12, atol=1e-12)
    # Shifted disc: the profile moves by x0 cos + z0 sin.
    p2 = ph.ellipse_line_integrals([(5.0, 7.0, 30.0, 30.0, 0.0, 1.5)], [90.0], u + 7.0)
    np.testing.assert_allclose(p2[0], want, atol=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_binary_phantom(seed):
    n = 128
    b = ph.binary_phantom_2d(n, seed)
    _check_array(b, (n, n))
    assert set(np.unique(b).tolist()) == {0.0, 1.0}
    assert np.array_equal(b, ph.binary_phantom_2d(n, seed))
    r = np.arange(n) - (n - 1) / 2
    rr = np.hypot(r[:, None], r[None, :])
    assert np.all(b[rr > 0.4 * n] == 0) and 0.08 < b.mean() < 0.35
    assert not np.array_equal(b, ph.binary_phantom_2d(n, seed + 10))


def test_particles_3d():
    shape = (24, 40, 48)
    v = ph.particles_3d(shape, n_particles=8, seed=3)
    _check_array(v, shape)
    assert np.array_equal(v, ph.particles_3d(shape, n_particles=8, seed=3))
    assert 0.5 * 0.9 < v.max() <= 3.0
    ny, nz, nx = shape
    z = np.arange(nz) - (nz - 1) / 2
    x = np.arange(nx) - (nx - 1) / 2
    rho = np.hypot(z[:, None], x[None, :])
    assert np.all(v[:, rho > 0.42 * min(nz, nx)] == 0)  # inside the central cylinder
    assert (v > 0).mean() > 0.01


def test_thin_film_3d():
    shape = (8, 32, 64)
    f = ph.thin_film_3d(shape, thickness=10, seed=1)
    _check_array(f, shape)
    z = np.arange(32) - 15.5
    assert np.all(f[:, np.abs(z) > 5.5, :] == 0)
    assert np.all(f[:, np.abs(z) < 4.5, :] > 0.5)  # spans every x and y
    assert np.array_equal(f, ph.thin_film_3d(shape, thickness=10, seed=1))
    with pytest.raises(ValueError, match="thickness"):
        ph.thin_film_3d(shape, thickness=40)


def test_fourier_shift_sign_and_exactness():
    rng = np.random.default_rng(0)
    img = rng.random((6, 10))
    # measured(x, y) = ideal(x - dx, y - dy): an integer shift is np.roll by (dy, dx).
    out = ph.fourier_shift(img, 3, -2)
    np.testing.assert_allclose(out, np.roll(img, (-2, 3), axis=(0, 1)), atol=1e-6)
    row = rng.random(9)
    np.testing.assert_allclose(ph.fourier_shift(row, -4), np.roll(row, -4), atol=1e-6)
    # Sub-pixel: a smooth bump moves its centroid by dx; shifts compose.
    x = np.arange(64)
    bump = np.exp(-0.5 * ((x - 30.0) / 3.0) ** 2)[None, :]
    moved = ph.fourier_shift(bump, 2.3)
    assert (moved * x).sum() / moved.sum() == pytest.approx(32.3, abs=1e-4)
    np.testing.assert_allclose(ph.fourier_shift(ph.fourier_shift(bump, 1.1), 1.2), moved,
                               atol=1e-5)
    # Stacks take one shift per image.
    stack = np.stack([img, img])
    out = ph.fourier_shift(stack, np.array([1.0, 0.0]), 0.0)
    np.testing.assert_allclose(out[0], np.roll(img, 1, axis=1), atol=1e-6)
    np.testing.assert_allclose(out[1], img, atol=1e-6)


def test_seed_experiment():
    exp = ph.seed_experiment(n=64, step_deg=2, shift_range=20, seed=0)
    data, angles, shifts = exp
    assert data.shape == (90, 1, 64) and data.dtype == np.float32 and data.flags.c_contiguous
    np.testing.assert_array_equal(angles, np.arange(0.0, 179.0, 2.0))
    assert shifts.shape == (90, 2) and np.all(shifts[:, 1] == 0)
    assert np.all(np.abs(shifts[:, 0]) <= 20) and shifts[:, 0].std() > 8
    again = ph.seed_experiment(n=64, seed=0)
    assert np.array_equal(again.data, data) and np.array_equal(again.shifts, shifts)
    # data = ideal(x - dx) for the documented phantom: the centroid moves by +dx (small
    # shifts at this size, so that nothing leaves the 64-pixel detector).
    from fastalign import project
    data, angles, shifts = ph.seed_experiment(n=64, shift_range=5, seed=1)
    ideal = project(ph.binary_phantom_2d(64, 1)[None], angles)
    x = np.arange(64)
    moved = (data[:, 0] * x).sum(1) / data[:, 0].sum(1)
    centre = (ideal[:, 0] * x).sum(1) / ideal[:, 0].sum(1)
    np.testing.assert_allclose(moved - centre, shifts[:, 0], atol=0.05)


def test_remove_gauge_and_rms():
    angles = np.arange(-60.0, 61.0, 3.0)
    th = np.deg2rad(angles)
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.1, (angles.size, 2))
    gauge = np.stack([2.0 * np.cos(th) - 3.0 * np.sin(th), np.full(th.size, 5.0)], axis=1)
    e = remove_gauge(gauge, angles)
    np.testing.assert_allclose(e, 0, atol=1e-12)
    true = rng.uniform(-20, 20, (angles.size, 2))
    rx, ry = gauge_rms(true + gauge + noise, true, angles)
    assert rx < 0.11 and ry < 0.11
    # A constant x offset is not a gauge (it is the rotation-centre offset).
    const = np.zeros((angles.size, 2))
    const[:, 0] = 1.0
    assert gauge_rms(true + const, true, angles)[0] > 0.1
    with pytest.raises(ValueError, match="shape"):
        remove_gauge(np.zeros((3, 2)), angles)
