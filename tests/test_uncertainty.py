"""Per-tilt shift uncertainty (issues 18, 19): shape, noise scaling, calibration, and no
change to the shifts."""
import dataclasses
import json

import numpy as np
import pytest

import fastalign
from fastalign.align import executor as _executor
from fastalign.align.gauge import fix_gauge
from fastalign.align.shift import (absorbed_fraction, cross_power, estimate_shift,
                                   shift_uncertainty)
from fastalign.simulate import seed_experiment


def _poisson_seed(counts, seed=0, n=48):
    """The seed experiment (x shifts up to 5 px) with Poisson noise, ``counts`` at the
    brightest pixel."""
    data, angles, true = seed_experiment(n=n, seed=seed, shift_range=5)
    rng = np.random.default_rng([seed, 99])
    scale = counts / float(data.max())
    noisy = (rng.poisson(np.clip(data, 0, None) * scale) / scale).astype(np.float32)
    return noisy, angles, true


@pytest.fixture(scope="module")
def runs():
    out = {}
    for counts in (1000.0, 100.0):
        d, a, t = _poisson_seed(counts)
        out[counts] = (fastalign.align(d, a, axes="x", max_iter=15, tol=0.0, specimen="compact",
                            orient=False), t)
    return out


def _spread(z):
    return 1.4826 * float(np.median(np.abs(z - np.median(z))))


def test_shape_finite_and_history(runs):
    r, _ = runs[1000.0]
    u = r.uncertainty
    assert u.shape == (r.shifts.shape[0], 2) and u.dtype == np.float64
    assert np.all(np.isfinite(u[:, 0])) and np.all(u[:, 0] > 0)
    assert np.all(np.isnan(u[:, 1]))        # axes="x": dy not estimated
    h = r.history[-1]["uncertainty_px"]
    assert h == pytest.approx(float(np.median(u[:, 0])))
    s = dataclasses.replace(r, options={}).summary()
    assert len(s["uncertainty_px"]) == r.shifts.shape[0]
    assert s["uncertainty_px"][0][1] is None
    assert s["median_uncertainty_px"] == pytest.approx(h)
    json.loads(json.dumps(s["uncertainty_px"], allow_nan=False))


def test_more_noise_larger_uncertainty(runs):
    lo = np.median(runs[1000.0][0].uncertainty[:, 0])
    hi = np.median(runs[100.0][0].uncertainty[:, 0])
    # Poisson: noise std ~ sqrt(counts) relative to signal ~ counts -> sqrt(10) = 3.16
    assert 2.0 < hi / lo < 5.0


def test_calibrated_at_two_noise_levels(runs):
    for counts, (r, true) in runs.items():
        err, _ = fix_gauge(r.shifts - true, r.angles_deg)
        z = err[:, 0] / r.uncertainty[:, 0]
        assert 0.5 <= _spread(z) <= 2.0, (counts, _spread(z))
        assert 0.5 <= float(np.std(z)) <= 2.0, (counts, float(np.std(z)))


def test_shifts_unchanged_by_uncertainty(monkeypatch):
    d, a, _ = _poisson_seed(1000.0, n=32)
    with_u = fastalign.align(d, a, axes="x", max_iter=4, tol=0.0, specimen="compact",
                            orient=False)
    monkeypatch.setattr(_executor, "estimate_uncertainty",
                        lambda upd, *args, **kw: np.full(upd.shape, np.nan))
    without = fastalign.align(d, a, axes="x", max_iter=4, tol=0.0, specimen="compact",
                            orient=False)
    assert np.array_equal(with_u.shifts, without.shifts)
    assert np.all(np.isnan(without.uncertainty)) and np.all(np.isfinite(with_u.uncertainty[:, 0]))


def test_absorbed_fraction():
    a = np.arange(-60, 61, 2.0)
    f = absorbed_fraction(a, 32, 64, 64)
    assert f.shape == (a.size, 33) and np.all(f[:, 0] == 0) and np.all(f <= 1)
    assert np.all(np.diff(f, axis=1) >= 0)           # grows with frequency
    f2 = absorbed_fraction(a[::2], 32, 64, 64)       # coarser sampling: more per tilt
    assert np.all(f2[:, 5] >= f[::2, 5])


@pytest.mark.parametrize("width, noise", [(3.0, 0.05), (3.0, 0.2), (1.5, 0.05)])
def test_formula_matches_scatter_on_synthetic_spectra(width, noise):
    # one tilt, 8 rows of white noise about a known shift: the predicted sigma equals the
    # scatter of the phase estimator over repetitions (no reconstruction involved)
    rng = np.random.default_rng(3)
    N, rows, reps, s0 = 64, 8, 400, 0.3
    x = np.arange(N)
    p = np.exp(-0.5 * ((x - 32) / width) ** 2)[None, None, :].repeat(rows, axis=1)
    P = np.fft.rfft(p, axis=2)
    w = np.arange(P.shape[2])
    b0 = np.fft.irfft(P * np.exp(-2j * np.pi * w * s0 / N), N, axis=2)
    # the repetitions as tilts of one stack
    b = (b0 + noise * rng.standard_normal((reps, rows, N))).astype(np.float32)
    C, pb, pp = cross_power(b, np.repeat(p, reps, axis=0).astype(np.float32), 2)
    est = estimate_shift(C, pb, pp, N)
    sig = shift_uncertainty(C, pb, pp, N, est)
    ratio = np.std(est) / np.median(sig)
    assert 0.8 < ratio < 1.25, ratio


def test_shifts_figure_has_uncertainty_panel(tmp_path):
    from fastalign import report
    a = np.arange(-60, 61, 20.0)
    s = np.zeros((a.size, 2))
    u = np.column_stack([np.linspace(0.01, 0.1, a.size), np.full(a.size, np.nan)])
    one = report.plot_shifts(tmp_path / "a.png", a, s)
    two = report.plot_shifts(tmp_path / "b.png", a, s, uncertainty=u)
    import matplotlib.image as mpimg
    assert mpimg.imread(two).shape[0] > mpimg.imread(one).shape[0]   # the second panel
    with pytest.raises(ValueError):
        report.plot_shifts(tmp_path / "c.png", a, s, uncertainty=u[:3])


@pytest.fixture(scope="module")
def particles_run():
    """3-D particles (untilted axis), x and y shifts up to 3 px, Gaussian noise 0.3 of the
    data's std: the dy calibration case (bench/uncertainty_calibration.py --case
    particles)."""
    from fastalign import simulate
    angles = np.arange(-60.0, 60.5, 3.0)
    e = simulate.rotated_axis_experiment(shape=DY_SHAPE, angles_deg=angles, axis_angle_deg=0.0,
                                         center_offset=0.0, shift_range=3.0, noise=0.3, seed=0)
    r = fastalign.align(e.data, angles, max_iter=DY_ITER, tol=0.0, specimen="compact",
                        orient=False, auto_exclude=False)
    err, _ = fix_gauge(r.shifts - e.shifts, angles)
    err[:, 1] -= err[:, 1].mean()
    return r, err


DY_SHAPE, DY_ITER = (32, 48, 48), 15


def test_dy_calibrated_on_3d_particles(particles_run):
    r, err = particles_run
    u = r.uncertainty
    assert np.all(np.isfinite(u)) and np.all(u > 0)
    zy = err[:, 1] / u[:, 1]
    zx = err[:, 0] / u[:, 0]
    print(f"\n3-D particles, noise 0.3: dy std(z) {zy.std():.2f} 1.4826MAD {_spread(zy):.2f}; "
          f"dx std(z) {zx.std():.2f} 1.4826MAD {_spread(zx):.2f}; median sigma "
          f"{np.median(u[:, 0]):.4f} / {np.median(u[:, 1]):.4f} px")
    assert 0.7 <= _spread(zy) <= 1.5 and 0.7 <= float(zy.std()) <= 1.5
    assert 0.5 <= _spread(zx) <= 2.0


def test_coupled_uncertainty_model():
    from fastalign.align.shift import coupled_uncertainty
    a = np.arange(-60.0, 60.5, 3.0)
    s0 = np.full(a.size, 0.01)
    flat = np.ones((a.size, 25))
    # no sharing at all (one frequency bin, w = 0 shares with every tilt: only the mean,
    # removed by the gauge): sqrt(1 - 1/n) of sigma0
    only_dc = np.zeros((a.size, 25))
    only_dc[:, 0] = 1.0
    np.testing.assert_allclose(coupled_uncertainty(s0, a, 48, 48, 48, only_dc),
                               0.01 * np.sqrt(1 - 1 / a.size), rtol=1e-9)
    wide = coupled_uncertainty(s0, a, 48, 48, 48, flat)
    assert np.all(wide > 0.01)                       # shared errors are larger
    # coarser sampling: each tilt's share of its own data grows (absorbed_fraction)
    assert coupled_uncertainty(s0[::2], a[::2], 48, 48, 48, flat[::2]).mean() > wide.mean()
    s_inf = s0.copy()
    s_inf[4] = np.inf
    out = coupled_uncertainty(s_inf, a, 48, 48, 48, flat)
    assert np.isinf(out[4]) and np.all(np.isfinite(np.delete(out, 4)))
