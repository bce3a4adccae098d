"""y shifts from the tilt-invariant x-integrated profiles (fastalign.align.profiles)."""
import numpy as np
import pytest

import fastalign
from fastalign.align.autofocus import PROFILE_USE, column_sums, com_x_start
from fastalign.align.axis import split_center
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
    assert not off.options["y_profile_used"]
    # a short run (3 coarse iterations, 1 fine) from the profile start is close in y
    _, ey = gauge_error(r.shifts, true, angles)
    _, ey_off = gauge_error(off.shifts, true, angles)
    print(f"\n[align, short run] rms_y with profiles={ey:.4g}, without={ey_off:.4g}")
    assert ey <= 0.05 < ey_off
    # not for x only (the compactness test then only decides the dx start), nor with given
    # starting shifts
    x_only = fastalign.align(data, angles, axes="x", max_iter=1, levels=[1]).options
    assert not x_only["y_profile_used"] and x_only["x_com_start"]
    assert "x_com_start" not in fastalign.align(data, angles, axes="x", max_iter=1, levels=[1],
                                                com_start=False).options
    assert "y_profile_misfit" not in fastalign.align(data, angles, max_iter=1, levels=[1],
                                                     initial_shifts=np.zeros((36, 2))).options
    with pytest.raises(ValueError, match="y_profile"):
        fastalign.align(data, angles, y_profile="yes")
    with pytest.raises(ValueError, match="com_start"):
        fastalign.align(data, angles, com_start="yes")


@pytest.mark.parametrize("dark", [False, True])
def test_com_x_start_recovers_dx_and_centre(dark):
    # a compact object: the x centres of mass give dx, the sinusoid (gauge) and the centre
    # offset; a dark object on a bright background (bright-field contrast) is flipped
    from fastalign.simulate import rotated_axis_experiment
    e = rotated_axis_experiment((48, 64, 64), axis_angle_deg=0.0, center_offset=7.0, seed=3)
    data = e.data
    if dark:
        data = np.float32(2.0 * data.max()) - data
    for given in (0.0, 7.0):
        total = np.zeros((data.shape[0], 2))
        opts = {}
        assert com_x_start(column_sums(data), given, total, opts) and opts["x_com_start"]
        fixed, c0, _ = split_center(total, e.angles_deg)
        ex, _ = gauge_error(fixed, e.shifts, e.angles_deg)
        print(f"\n[com x start, dark={dark}, center_offset={given}] rms_x={ex:.4g} c0={c0:.4g}")
        assert ex <= 0.1
        assert c0 == pytest.approx(7.0 - given, abs=0.1)
        assert np.all(total[:, 1] == 0.0)


def test_com_x_start_needs_mass_in_every_tilt():
    ideal, angles = particle_projections(n_angles=8)
    ideal[3] = 0.0  # a blank tilt: no centre of mass
    total = np.ones((angles.size, 2))
    opts = {}
    assert not com_x_start(column_sums(ideal), 0.0, total, opts)
    assert opts["x_com_start"] is False and np.all(total == 1.0)


@pytest.mark.slow
def test_com_start_captures_a_large_centre_offset():
    # 41 tilts, a known -5 deg axis, a -10 px centre offset not given and shifts ~ U[-5, 5]:
    # started from zero (com_start=False), SIRT autofocus settled with the centre 8.0 px off
    # and a residual of 0.23 (found by bench/axis_sweep.py --tilts=-60,60,3); from the
    # centres of mass it converges
    from fastalign.simulate import rotated_axis_experiment
    e = rotated_axis_experiment((48, 80, 80), angles_deg=np.arange(-60, 60.1, 3.0),
                                axis_angle_deg=-5.0, center_offset=-10.0, seed=3)
    r = fastalign.align(e.data, e.angles_deg, axis_angle_deg=-5.0, refine=("shifts", "center"))
    ex, ey = gauge_error(r.shifts, e.shifts, e.angles_deg)
    print(f"\n[large centre offset] centre error {r.center_offset - e.center_offset:.4g} px, "
          f"rms {ex:.4g} / {ey:.4g}, residual {r.history[-1]['residual']:.3g}")
    assert r.options["x_com_start"]
    assert abs(r.center_offset - e.center_offset) <= 0.1
    assert ex <= 0.1 and ey <= 0.1
