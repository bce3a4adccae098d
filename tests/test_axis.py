"""Tilt-axis angle and rotation centre (issue 8): model, signs, resampling, .xf, accuracy."""
import numba
import numpy as np
import pytest
import scipy.ndimage as ndi

import fastalign
from fastalign.align import axis
from fastalign.align.gauge import gauge_error
from fastalign.io import read_xf, write_xf
from fastalign.simulate import rotated_axis_experiment
from fastalign.testing import run_with_threads


def _report(name, **vals):
    print(f"\n[{name}] " + ", ".join(f"{k}={v:.4g}" for k, v in vals.items()))


def _ideal(e):
    ideal = fastalign.project(e.volume, e.angles_deg, center_offset=e.center_offset)
    return ndi.gaussian_filter(ideal, (0.0, 1.0, 1.0), mode="constant")


# ------------------------------------------------------------------ model and resampling
def test_rotate_shift_inverts_the_generator():
    # the generator applies (shift, then rotate); rotate_shift undoes both in one resampling
    e = rotated_axis_experiment((24, 64, 64), angles_deg=np.arange(-60, 61, 20.0),
                                axis_angle_deg=3.5, center_offset=4.0, shift_range=4.0,
                                seed=1)
    ideal = _ideal(e)
    al = axis.rotate_shift(e.data, e.axis_angle_deg, e.shifts)
    rel = np.sqrt(np.mean((al - ideal) ** 2)) / ideal.std()
    wrong = axis.rotate_shift(e.data, -e.axis_angle_deg, e.shifts)
    rel_wrong = np.sqrt(np.mean((wrong - ideal) ** 2)) / ideal.std()
    _report("rotate_shift", rel_rms=rel, rel_rms_wrong_sign=rel_wrong)
    assert rel < 0.01
    assert rel_wrong > 0.1


def test_rotate_shift_zero_angle_is_fourier_shift():
    rng = np.random.default_rng(0)
    stack = rng.random((3, 20, 24)).astype(np.float32)
    s = rng.uniform(-2, 2, (3, 2))
    np.testing.assert_array_equal(axis.rotate_shift(stack, 0.0, s),
                                  fastalign.fourier_shift(stack, -s))


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 Numba threads")
def test_rotate_shift_thread_invariant():
    # one image per thread-pool task: the same bits whatever the thread count
    rng = np.random.default_rng(1)
    stack = rng.random((5, 20, 24)).astype(np.float32)
    s = rng.uniform(-2, 2, (5, 2))
    a = run_with_threads(axis.rotate_shift, 1, stack, 2.5, s)
    b = run_with_threads(axis.rotate_shift, 2, stack, 2.5, s)
    np.testing.assert_array_equal(a, b)
    # and each image is the one-image resampling (the tasks do not mix up images)
    m, t = axis._level_affine(np.deg2rad(2.5), s[3:4], (1, 1), (20, 24))[0]
    one = ndi.affine_transform(stack[3], m, offset=t, order=3, mode="nearest")
    np.testing.assert_array_equal(b[3], one)


def test_rotation_update_sign():
    # data rotated by +0.5 deg relative to the reprojection (the model's sense) -> +0.5 deg
    rng = np.random.default_rng(0)
    P = ndi.gaussian_filter(rng.random((3, 64, 64)), (0, 3, 3)).astype(np.float32)
    b = axis.rotate_shift(P, -0.5, np.zeros((3, 2)))  # b(r) = P(R(0.5)^-1 (r - c) + c)
    coords = np.arange(64.0)
    eps = np.rad2deg(axis.rotation_update(b, P, coords, coords, (31.5, 31.5)))
    assert eps == pytest.approx(0.5, abs=0.05)
    b = axis.rotate_shift(P, -0.5, np.tile([[1.0, -0.5]], (3, 1)))  # shifts are eliminated
    eps = np.rad2deg(axis.rotation_update(b, P, coords, coords, (31.5, 31.5)))
    assert eps == pytest.approx(0.5, abs=0.05)


def test_split_center_separates_constant_from_gauge():
    th = np.arange(-60, 61, 3.0)
    rng = np.random.default_rng(2)
    s = rng.normal(0, 1, (th.size, 2))
    base, _, _ = axis.split_center(s, th)
    moved = base.copy()
    moved[:, 0] += 7.0 + 2.0 * np.cos(np.deg2rad(th)) - 1.5 * np.sin(np.deg2rad(th))
    moved[:, 1] += 3.0
    fixed, c1, (a, b, my) = axis.split_center(moved, th)
    np.testing.assert_allclose(fixed, base, atol=1e-9)
    assert c1 == pytest.approx(7.0, abs=1e-9)
    assert (a, b, my) == pytest.approx((2.0, -1.5, 3.0), abs=1e-9)


# ------------------------------------------------------------------ .xf
def test_xf_rotation_imod_meaning(tmp_path):
    # IMOD: x' = A11 (x - xc) + A12 (y - yc) + DX + xc maps a raw point to the aligned image.
    # Take a point of the ideal (aligned) image, put it where the model puts it in the raw
    # image, and check that the .xf line maps it back.
    alpha = 4.0
    s = np.array([[1.25, -0.5], [-2.0, 3.0]])
    p = tmp_path / "rot.xf"
    write_xf(p, s, axis_angle_deg=alpha)
    shifts, mats = read_xf(p, return_matrices=True)
    np.testing.assert_allclose(shifts, s, atol=1e-4)
    np.testing.assert_allclose(np.rad2deg(np.arctan2(mats[:, 0, 1], mats[:, 0, 0])), alpha,
                               atol=1e-5)
    arr = np.loadtxt(p)
    c = np.array([31.5, 23.5])
    a = np.deg2rad(alpha)
    R = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    for i in range(2):
        ideal_pt = np.array([40.0, 10.0])
        raw = R @ (ideal_pt - c + s[i]) + c  # aligned(r) = raw(R (r - c + s) + c)
        A = arr[i, :4].reshape(2, 2)
        back = A @ (raw - c) + arr[i, 4:6] + c
        np.testing.assert_allclose(back, ideal_pt, atol=1e-3)
    # zero angle: the identity, exactly as before (no "-0.0000000")
    write_xf(tmp_path / "z.xf", s)
    assert (tmp_path / "z.xf").read_text().split()[:4] == ["1.0000000", "0.0000000",
                                                          "0.0000000", "1.0000000"]


# ------------------------------------------------------------------ estimation
def test_coarse_axis_angle():
    e = rotated_axis_experiment((48, 80, 80), axis_angle_deg=-4.5, center_offset=-10.0,
                                seed=2)
    a = axis.coarse_axis_angle(e.data)
    _report("coarse axis", true=-4.5, estimate=a)
    assert a == pytest.approx(-4.5, abs=0.3)


def test_refine_validation():
    e = rotated_axis_experiment((8, 48, 48), angles_deg=np.arange(-60, 61, 30.0),
                                center_offset=0.0, shift_range=1.0, seed=0)
    with pytest.raises(ValueError, match="shifts"):
        fastalign.align(e.data, e.angles_deg, refine=("axis_angle",))
    with pytest.raises(ValueError, match="among"):
        fastalign.align(e.data, e.angles_deg, refine=("shifts", "tilt"))
    with pytest.raises(ValueError, match="autofocus"):
        fastalign.align(e.data, e.angles_deg, method="com", refine=("shifts", "center"))


def test_profile_axis_angle_refines_the_amplitude_estimate():
    # 5 deg with a 10 px centre offset: the amplitude-spectrum criterion is 1.6 deg off, the
    # aligned profiles find the angle
    e = rotated_axis_experiment(axis_angle_deg=5.0, center_offset=10.0, seed=7)
    coarse = axis.coarse_axis_angle(e.data)
    angle, misfit = axis.profile_axis_angle(e.data, coarse)
    _report("profile axis angle", amplitude_deg=coarse, profiles_deg=angle, misfit=misfit)
    assert abs(angle - 5.0) <= 0.1
    assert misfit < 0.05


def test_rotated_axis_y_start_from_rotated_profiles():
    # a known 5 deg axis and 10 px centre: dy starts from the profiles of the data rotated
    # back (before: captured 3 px off in y, 0.8 px in x)
    e = rotated_axis_experiment(axis_angle_deg=5.0, center_offset=10.0, seed=8)
    r = fastalign.align(e.data, e.angles_deg, axis_angle_deg=5.0, center_offset=10.0)
    ex, ey = gauge_error(r.shifts, e.shifts, e.angles_deg)
    _report("rotated axis, known geometry", rms_x=ex, rms_y=ey,
            y_profile_misfit=r.options["y_profile_misfit"])
    assert r.options["y_profile_used"]
    assert ex <= 0.05 and ey <= 0.05


@pytest.mark.slow
def test_rotated_axis_joint_estimate():
    e = rotated_axis_experiment((48, 64, 64), axis_angle_deg=-4.0, center_offset=-9.0,
                                shift_range=5.0, seed=2)
    r = fastalign.align(e.data, e.angles_deg, refine=("shifts", "axis_angle", "center"),
                        max_iter=40, tol=0.0)
    ex, ey = gauge_error(r.shifts, e.shifts, e.angles_deg)
    d_alpha = r.axis_angle_deg - e.axis_angle_deg
    d_c = r.center_offset - e.center_offset
    _report("rotated axis", d_alpha_deg=d_alpha, d_center_px=d_c, rms_x=ex, rms_y=ey)
    assert abs(d_alpha) <= 0.05
    assert abs(d_c) <= 0.1
    assert ex <= 0.1 and ey <= 0.1
    # the aligned stack is the raw data resampled once with the estimated rotation + shifts
    np.testing.assert_array_equal(r.aligned,
                                  axis.rotate_shift(e.data, r.axis_angle_deg, r.shifts))
    assert r.summary()["axis_angle_deg"] == r.axis_angle_deg


@pytest.mark.slow
def test_rotated_axis_corner_default_options():
    # the corner of the range, 5 deg and 10 px, with default options (convergence
    # test included).  The detector is 80 px: the phantom keeps its particles inside the
    # detector for any offset, so at 64 px a 10 px offset leaves an object 18 px wide, across
    # which a 0.05 deg rotation moves content by 0.008 px (bench/axis_sweep.py --size 64)
    e = rotated_axis_experiment((48, 80, 80), axis_angle_deg=5.0, center_offset=10.0,
                                shift_range=5.0, seed=7)
    r = fastalign.align(e.data, e.angles_deg, refine=("shifts", "axis_angle", "center"))
    ex, ey = gauge_error(r.shifts, e.shifts, e.angles_deg)
    d_alpha = r.axis_angle_deg - e.axis_angle_deg
    d_c = r.center_offset - e.center_offset
    _report("rotated axis corner, defaults", d_alpha_deg=d_alpha, d_center_px=d_c, rms_x=ex,
            rms_y=ey, iterations=len(r.history))
    assert r.converged
    assert abs(d_alpha) <= 0.05
    assert abs(d_c) <= 0.1
    assert ex <= 0.1 and ey <= 0.1


@pytest.mark.slow
def test_vertical_axis_no_regression():
    # an exactly vertical axis (and centred) stays within 0.02 deg of zero
    e = rotated_axis_experiment((48, 64, 64), axis_angle_deg=0.0, center_offset=0.0,
                                shift_range=5.0, seed=4)
    r = fastalign.align(e.data, e.angles_deg, refine=("shifts", "axis_angle", "center"),
                        max_iter=40, tol=0.0)
    ex, ey = gauge_error(r.shifts, e.shifts, e.angles_deg)
    _report("vertical axis", alpha_deg=r.axis_angle_deg, d_center_px=r.center_offset,
            rms_x=ex, rms_y=ey)
    assert abs(r.axis_angle_deg) <= 0.02
    assert abs(r.center_offset) <= 0.1
    assert ex <= 0.1 and ey <= 0.1
