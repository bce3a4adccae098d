"""Slab specimens with default options (issue 17): wider than the field of view at every
tilt, truncated in x and y, dx, dy ~ U[-10, 10] px, Poisson noise at ~1000 counts/px.

Each case prints fastalign's RMS error (gauge removed) next to the cross-correlation and
centre-of-mass baselines on the same data, and the thickness estimate.
"""
import numpy as np
import pytest

import fastalign
from fastalign.simulate import slab_experiment
from fastalign.testing import gauge_rms

CASES = {
    # name: (fov, thickness, tilt range, pitch, film density)
    "film28": (128, 28.0, 60.0, 0.0, 1.0),
    "thin10_70deg": (128, 10.0, 70.0, 0.0, 1.0),
    "pitched4": (128, 28.0, 60.0, 4.0, 1.0),
    "low_density_film": (128, 28.0, 60.0, 0.0, 0.2),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_slab_default_options(name):
    fov, thickness, tilt, pitch, film = CASES[name]
    exp = slab_experiment(fov, thickness, tilt_deg=tilt, pitch_deg=pitch, film_density=film,
                          seed=0)
    r = fastalign.align(exp.data, exp.angles_deg)
    ex, ey = gauge_rms(r.shifts, exp.shifts, exp.angles_deg)
    xc = gauge_rms(fastalign.xcorr_shifts(exp.data, exp.angles_deg), exp.shifts,
                   exp.angles_deg)
    com = gauge_rms(fastalign.com_shifts(exp.data, exp.angles_deg), exp.shifts,
                    exp.angles_deg)
    spec = r.options["specimen"]
    print(f"\n[slab {name}] fastalign x {ex:.4f} y {ey:.4f} px | xcorr {xc[0]:.4f} / "
          f"{xc[1]:.4f} | com {com[0]:.3f} / {com[1]:.3f} | thickness {r.thickness:.1f} "
          f"(true {thickness}) pitch {spec['pitch_deg']} | {len(r.history)} iterations, "
          f"converged {r.converged} ({spec['stop']}), "
          f"{r.timings['total_s']:.1f} s")
    assert spec["kind"] == "slab" and spec["decided_by"] == "data"
    assert ex <= 0.1 and ey <= 0.1
    assert abs(r.thickness - thickness) <= 0.15 * thickness
    assert r.converged
    # the region is sized from the thickness (with margin), not from the width
    assert r.volume.shape[0] == fov and r.volume.shape[2] == fov
    assert r.volume.shape[1] <= 1.5 * thickness + 30
    if pitch:   # the loop ran in the frame turned by the pitch, in a region as thin as flat
        assert spec["loop_frame_deg"] == -spec["pitch_deg"] and not spec["support_mask"]
        assert spec["loop_nz"] <= 1.3 * thickness + 8 < spec["nz"]


def test_compact_object_keeps_the_compact_loop():
    data, angles, _ = fastalign.simulate.seed_experiment(n=64)
    r = fastalign.align(data, angles, axes="x", max_iter=2, levels=(1,))
    assert r.options["specimen"]["kind"] == "compact"
    assert r.thickness is None


def test_specimen_option_is_validated():
    data, angles, _ = fastalign.simulate.seed_experiment(n=32)
    with pytest.raises(ValueError, match="specimen must be"):
        fastalign.align(data, angles, specimen="film")


def test_edge_fraction_separates_slabs_from_compact_objects_on_a_background():
    from cases import particle_projections

    from fastalign.align.specimen import SLAB_EDGE_FRACTION, edge_fraction
    compact, _ = particle_projections()
    slab = slab_experiment(64, 12.0, seed=2).data
    assert edge_fraction(compact) < 0.1
    # a constant background (vacuum level, detector offset) is not material at the edges
    assert edge_fraction(compact + 2.0 * compact.mean()) < 0.1
    assert edge_fraction(slab) > 0.8 > SLAB_EDGE_FRACTION
    # noise does not make a compact object a slab: the low percentile of pure noise lies
    # 2.05 sigma below its mean and is put back (before: 0.38 at noise 0.1 x the data's
    # std, a slab; 0.86 at 1.0); a noisy slab stays a slab (0.92 and 0.75)
    rng = np.random.default_rng(0)
    for level in (0.1, 1.0):
        noisy = compact + rng.normal(0, level * compact.std(), compact.shape)
        assert edge_fraction(noisy) < 0.1
        noisy_slab = slab + rng.normal(0, level * slab.std(), slab.shape)
        assert edge_fraction(noisy_slab) > 2 * SLAB_EDGE_FRACTION


@pytest.mark.parametrize("thickness, note, option", [
    (60.0, "reaches the probed depth", "pass nz="),       # thicker than the 64 px probe
    (1.0, "at the resolution limit", "pass nz="),         # thinner than the resolution
])
def test_thickness_at_the_probe_limits_warns_and_names_the_option(thickness, note, option,
                                                                   caplog):
    exp = slab_experiment(64, thickness, seed=0)
    with caplog.at_level("WARNING", logger="fastalign.align"):
        r = fastalign.align(exp.data, exp.angles_deg, max_iter=1, coarse_iter=0)
    spec = r.options["specimen"]
    assert spec["kind"] == "slab" and note in spec["thickness_note"]
    assert any(option in m and "thickness" in m for m in caplog.messages)
    # the region still holds the estimate (never a silent, too small region)
    assert r.volume.shape[1] >= r.thickness


def test_depth_probe_rows_are_spread_and_capped():
    from fastalign.align.executor import PROBE_ROWS, probe_rows
    for nyl in (1, 16, PROBE_ROWS, PROBE_ROWS + 1, 100, 128, 257):
        rows = probe_rows(nyl)
        assert rows.size <= PROBE_ROWS and rows[0] >= 0 and rows[-1] < nyl
        steps = np.unique(np.diff(rows))
        assert steps.size <= 1                                   # evenly spread
        if nyl <= PROBE_ROWS:
            assert np.array_equal(rows, np.arange(nyl))
        else:   # centred: the unused rows split evenly (within one) between the two ends
            assert abs(rows[0] - (nyl - 1 - rows[-1])) <= 1


def test_cli_summary_states_the_slab_decisions(capsys):
    """The CLI's last lines name the slab geometry, the region and, for a pitched slab, the
    frame the loop aligned it in (issue 17: "the CLI summary states ...")."""
    from types import SimpleNamespace

    from fastalign.cli.outputs import align_done
    spec = dict(kind="slab", edge_fraction=1.02, thickness_px=29.4, pitch_deg=5.0, pad_x=127,
                nz=65, loop_frame_deg=-5.0, loop_nz=37, stop="updates below tol")
    result = SimpleNamespace(method="sirt", converged=True, n_iter=12, options=dict(specimen=spec),
                             tilt_offset_deg=0.0, axis_angle_deg=0.0,
                             median_uncertainty=lambda: 0.003)
    align_done(SimpleNamespace(quiet=False), result, {"volume": "v.rec"}, "out")
    out = capsys.readouterr().out
    assert "sirt converged after 12 iterations" in out
    assert ("specimen slab (edge fraction 1.02): thickness 29.4 px, pitch 5.0 deg, region "
            "pad_x=127 nz=65, aligned flat in the frame turned by -5.0 deg (nz=37), stopped: "
            "updates below tol") in out


def test_box_fit_jacobian_is_the_derivative():
    """The blurred-box fit's analytic Jacobian (one model evaluation per least-squares step
    instead of six) against central differences, and the fit recovers a known box."""
    from fastalign.align.specimen import _box, _box_jacobian, fit_slab
    z = np.arange(40.0)
    q = np.array([0.8, 9.3, 27.6, 1.7, 0.1])
    J = _box_jacobian(z, *q)
    h = 1e-6
    num = np.stack([(_box(z, *(q + h * e)) - _box(z, *(q - h * e))) / (2 * h)
                    for e in np.eye(5)], axis=1)
    np.testing.assert_allclose(J, num, rtol=0, atol=1e-7)
    thickness, centre, blur, _ = fit_slab(_box(z, *q))
    assert thickness == pytest.approx(27.6 - 9.3, abs=1e-4)
    assert centre == pytest.approx(0.5 * (9.3 + 27.6) - 19.5, abs=1e-4)
    assert blur == pytest.approx(1.7, abs=1e-4)
