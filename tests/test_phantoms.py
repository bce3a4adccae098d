"""Phantoms are deterministic, compact and typed as documented; the gauge helpers pin their
conventions.  (The shift and the misaligned series: tests/test_simulate.py.)"""
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
