"""y shifts from the tilt-invariant x-integrated profiles (fastalign.align.profiles)."""
import numpy as np
import pytest

import fastalign
from fastalign.align.autofocus import PROFILE_USE
from fastalign.align.gauge import gauge_error
from fastalign.align.profiles import profile_y_shifts, tilt_profiles

from cases import lamella_series, particle_projections


def test_profiles_are_row_sums():
    rng = np.random.default_rng(0)
    stack = rng.normal(size=(3, 5, 7)).astype(np.float32)
    np.testing.assert_allclose(tilt_profiles(stack),
                               stack.astype(np.float64).sum(axis=2), rtol=1e-12)


def test_compact_object_recovers_dy_and_sign():
    ideal, angles = particle_projections()
    rng = np.random.default_rng(1)
    true = np.zeros((angles.size, 2))
    true[:, 1] = rng.uniform(-8, 8, angles.size)
    data = fastalign.fourier_shift(ideal, true)
    dy, misfit = profile_y_shifts(tilt_profiles(data))
    est = np.zeros_like(true)
    est[:, 1] = dy
    _, ey = gauge_error(est, true, angles)
    print(f"\n[profiles, particles] rms_y={ey:.4g} misfit={misfit:.4g}")
    assert ey <= 0.02
    assert misfit <= 0.02
    assert abs(dy.mean()) < 1e-9  # gauge: zero mean
    # sign (DESIGN.md): a tilt displaced by +2 px along y relative to the others reads +2
    one = np.zeros((angles.size, 2))
    one[5, 1] = 2.0
    dy1, _ = profile_y_shifts(tilt_profiles(fastalign.fourier_shift(ideal, one)))
    assert dy1[5] - np.delete(dy1, 5).mean() == pytest.approx(2.0, abs=0.02)


def test_wide_specimen_reports_a_large_misfit():
    # a lamella wider than the field of view: the profiles change with the tilt
    data, _, _ = lamella_series(axis=1, seed=4)
    _, misfit = profile_y_shifts(tilt_profiles(data))
    print(f"\n[profiles, lamella] misfit={misfit:.4g}")
    assert misfit > PROFILE_USE


def test_align_uses_profiles_only_when_they_agree():
    ideal, angles = particle_projections(n_angles=36)
    rng = np.random.default_rng(7)
    true = rng.uniform(-5, 5, (angles.size, 2))
    data = fastalign.fourier_shift(ideal, true)
    r = fastalign.align(data, angles, max_iter=1, coarse_iter=3, tol=0.0)
    assert r.options["y_profile_used"] and r.options["y_profile_held"]
    assert r.options["y_profile_misfit"] <= 0.02
    off = fastalign.align(data, angles, max_iter=1, coarse_iter=3, tol=0.0, y_profile=False)
    assert "y_profile_misfit" not in off.options
    # a short run (3 coarse iterations, 1 fine) from the profile start is close in y
    _, ey = gauge_error(r.shifts, true, angles)
    _, ey_off = gauge_error(off.shifts, true, angles)
    print(f"\n[align, short run] rms_y with profiles={ey:.4g}, without={ey_off:.4g}")
    assert ey <= 0.05 < ey_off
    # not for x only, nor with given starting shifts
    assert "y_profile_misfit" not in fastalign.align(data, angles, axes="x", max_iter=1,
                                                     levels=[1]).options
    assert "y_profile_misfit" not in fastalign.align(data, angles, max_iter=1, levels=[1],
                                                     initial_shifts=np.zeros((36, 2))).options
    with pytest.raises(ValueError, match="y_profile"):
        fastalign.align(data, angles, y_profile="yes")
