"""Tilt-axis direction over the full circle (fastalign.align.orient), default options."""
import numpy as np
import pytest

import fastalign
from fastalign.align import axis as ax
from fastalign.align.gauge import gauge_error
from fastalign.align.orient import decorrelation_axis, find_orientation, quarter_turn
from fastalign.simulate import rotated_axis_experiment, slab_experiment


def _turned(stack, alpha):
    """``stack`` with its content turned by ``+alpha`` (the model of fastalign.align.axis)."""
    return ax.rotate_shift(stack, -alpha, np.zeros((len(stack), 2)))


def _mod180(a):
    return (a + 90.0) % 180.0 - 90.0


@pytest.fixture(scope="module")
def particles():
    return rotated_axis_experiment(shape=(48, 64, 80), axis_angle_deg=0.0, center_offset=0.0,
                                   shift_range=5.0)


@pytest.fixture(scope="module")
def wide_slab():
    return slab_experiment(fov=182)


def test_quarter_turn_matches_the_axis_model(particles):
    """quarter_turn(data, k) undoes an axis at 90 k degrees: rotate_shift by 90 k agrees."""
    d = particles.data[:3, :, 16:64]  # square, so both agree on every pixel
    for k in (1, -1, 2):
        want = ax.rotate_shift(d, 90.0 * k, np.zeros((3, 2)), order=1)
        got = quarter_turn(d, k)
        assert np.abs(got - want)[:, 2:-2, 2:-2].max() < 1e-3 * np.abs(d).max()


@pytest.mark.parametrize("alpha", [0.0, 37.0, -12.0, 90.0])
def test_decorrelation_axis_on_a_truncated_slab(wide_slab, alpha):
    """A slab filling the field at every tilt, axis anywhere: within 2 degrees (mod 180)."""
    d = _turned(wide_slab.data, alpha)[:, 27:155, 27:155]
    found, strength = decorrelation_axis(d, wide_slab.angles_deg)
    print(f"slab axis {alpha}: found {found:.2f} (anisotropy {strength:.3f})")
    assert abs(_mod180(found - alpha)) < 2.0
    assert strength > 0.2


@pytest.mark.parametrize("alpha", [0.0, 90.0])
def test_find_orientation_skips_the_profile_searches_on_a_slab(wide_slab, alpha, monkeypatch):
    """The common line and the profiles cannot refine a specimen wider than the field: on a
    slab only the decorrelation runs (specimen="compact" forces the searches)."""
    d = _turned(wide_slab.data, alpha)[:, 27:155, 27:155]
    calls = []
    real = ax.coarse_axis_angle
    monkeypatch.setattr(ax, "coarse_axis_angle", lambda *a, **k: calls.append(1) or real(*a, **k))
    o = find_orientation(d, wide_slab.angles_deg)
    assert o.record["profiles"] == "not searched (slab)" and "profile_deg" not in o.record
    assert o.record["used"] == "decorrelation" and not calls
    assert abs(_mod180(o.axis_angle_deg - alpha)) < 2.0
    o = find_orientation(d, wide_slab.angles_deg, specimen="compact")
    assert "profile_misfit" in o.record and calls
    assert o.record["profile_misfit"] > 0.2        # (why the slab path skips them)


def test_decorrelation_axis_of_noise_has_no_direction():
    rng = np.random.default_rng(3)
    found, strength = decorrelation_axis(rng.normal(size=(31, 64, 64)).astype(np.float32),
                                         np.arange(-60, 61, 4.0))
    print(f"noise: anisotropy {strength:.3f}")
    assert strength < 0.1


@pytest.mark.parametrize("alpha", [37.0, -80.0])
def test_find_orientation_compact(particles, alpha):
    """On a compact object the common line refines the coarse estimate to ~0.1 degree."""
    o = find_orientation(_turned(particles.data, alpha), particles.angles_deg)
    print(f"particles axis {alpha}: {o.axis_angle_deg:.3f} ({o.record['used']}, "
          f"decorrelation {o.record['decorrelation_deg']})")
    assert abs(_mod180(o.axis_angle_deg - alpha)) < 0.2
    assert o.refine and o.record["used"].startswith("profiles")


def test_default_align_finds_an_axis_at_90_degrees(particles):
    """A stack whose tilt axis is horizontal (FEI's 90 degrees) aligns with no options; the
    reported angle undoes the turn, and the shifts reach the usual accuracy.  The direction
    is known modulo 180 degrees: the other representative turns the data upside down, and
    then the true shifts are the negated ones (the volume is inverted)."""
    raw = np.ascontiguousarray(np.rot90(particles.data, 1, axes=(1, 2)))
    r = fastalign.align(raw, particles.angles_deg)
    print(f"axis 90: reported {r.axis_angle_deg:.3f} deg, {r.options['orientation']}")
    assert r.options["orientation"]["quarter_turns"] in (1, -1)
    k = int(np.round(r.axis_angle_deg / 90.0))
    assert abs(r.axis_angle_deg - 90.0 * k) < 0.2
    back = quarter_turn(raw, k)  # the reported angle undoes the turn
    if np.array_equal(back, particles.data):
        true = particles.shifts
    else:
        assert np.array_equal(back, particles.data[:, ::-1, ::-1])
        true = -particles.shifts
    ex, ey = gauge_error(r.shifts, true, particles.angles_deg)
    print(f"axis 90: error {ex:.4f} / {ey:.4f} px")
    assert ex <= 0.05 and ey <= 0.05 and r.converged


def test_default_align_finds_an_oblique_axis(particles):
    """Axis at 37 degrees: found, refined, and the shifts reach the usual accuracy."""
    raw = _turned(particles.data, 37.0)
    r = fastalign.align(raw, particles.angles_deg)
    ex, ey = gauge_error(r.shifts, particles.shifts, particles.angles_deg)
    print(f"axis 37: reported {r.axis_angle_deg:.3f} deg, error {ex:.4f} / {ey:.4f} px")
    assert abs(r.axis_angle_deg - 37.0) < 0.1
    assert ex <= 0.05 and ey <= 0.05


def test_orient_false_keeps_the_axis_along_y(particles):
    r = fastalign.align(particles.data[:, :, :], particles.angles_deg, orient=False,
                        max_iter=3)
    assert "orientation" not in r.options and r.axis_angle_deg == 0.0


def test_weak_anisotropy_snaps_to_the_nearest_quarter_turn(particles, monkeypatch):
    """A series that hardly changes with the tilt (ETSpy's HAADF needle: anisotropy 0.03)
    gives a direction a few degrees off; within WEAK_SNAP_DEG of a quarter turn the residual
    is taken as 0 and not refined (a strong anisotropy keeps it)."""
    from fastalign.align import orient
    raw = np.ascontiguousarray(np.rot90(particles.data[:, :, 16:64], 1, axes=(1, 2)))

    def fake(strength):
        return lambda *a, **k: (84.0, strength)
    monkeypatch.setattr(orient, "decorrelation_axis", fake(0.03))
    import sys
    monkeypatch.setattr(sys.modules["fastalign.align.start"], "PROFILE_USE", -1.0)  # not compact
    calls = []
    real = ax.profile_axis_angle
    monkeypatch.setattr(ax, "profile_axis_angle",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    o = orient.find_orientation(raw, particles.angles_deg)
    assert o.quarter_turns == 1 and o.alpha == 0.0 and not o.refine
    assert o.record["used"].startswith("nearest quarter turn")
    assert not calls and o.record["profiles"].startswith("not searched (weak")  # unused
    monkeypatch.setattr(orient, "decorrelation_axis", fake(0.5))
    o = orient.find_orientation(raw, particles.angles_deg)
    assert o.record["used"] == "decorrelation" and o.alpha == -6.0 and o.refine
    assert calls and "profile_deg" in o.record
