"""Tilt-angle offset (issue 19): ``refine=(..., "tilt_offset")``, ``tilt_offset_deg=`` and
the CLI's ``--refine shifts,tilt_offset`` / ``--tilt-offset``.

The slab series are simulated at the TRUE angles ``nominal + delta`` and aligned with the
nominal ones (:func:`offset_slab`): the sign convention is that the result's
``tilt_offset_deg`` is ``delta`` and its ``angles_deg`` the true angles.  A reconstruction
with the nominal angles shows the slab pitched by ``-delta`` (the loop's ``pitch_deg``
convention), one with the corrected angles shows it flat.
"""
import logging

import numpy as np
import pytest

import fastalign
from fastalign.align.executor import probe_volume
from fastalign.align.levels import bin_stack
from fastalign.align.options import AlignOptions
from fastalign.align.specimen import fit_pitched_slab
from fastalign.align.tiltoffset import NOT_DETERMINED, mass_law_offset
from fastalign.simulate import slab_experiment


def offset_slab(fov=128, thickness=28.0, offset_deg=2.5, *, tilt_deg=60.0, step_deg=2.0,
                shift_range=10.0, counts=1000.0, seed=0):
    """A flat slab's series (as :func:`fastalign.simulate.slab_experiment`: wider than the
    field, truncated, shifted, Poisson noise) projected at ``nominal + offset_deg``.

    Returns ``(data, nominal_angles, true_shifts)``.
    """
    e = slab_experiment(fov, thickness, tilt_deg=tilt_deg, step_deg=step_deg,
                        shift_range=shift_range, counts=counts, seed=seed,
                        angle_offset_deg=offset_deg)
    return e.data, e.angles_deg, e.shifts


def _pitch(aligned, angles):
    """Pitch (degrees, 0.5 degree grid) of the slab in a 2x binned probe reconstruction of
    the aligned stack with ``angles``."""
    b = bin_stack(np.ascontiguousarray(aligned), 2)
    return fit_pitched_slab(probe_volume(b, angles, b.shape[2] // 2))[2]


# a quick run: the offset is estimated before the loop (module docstring of
# fastalign.align.tiltoffset), so few loop iterations suffice to check the whole path
QUICK = dict(axis_angle_deg=0.0, levels=(2,), max_iter=2)


@pytest.mark.parametrize("delta", [2.5, -3.0])
def test_slab_tilt_offset_recovered(delta):
    data, nominal, _ = offset_slab(offset_deg=delta)
    r = fastalign.align(data, nominal, refine=("shifts", "tilt_offset"), **QUICK)
    info = r.options["tilt_offset"]
    flat = _pitch(r.aligned, r.angles_deg)
    pitched = _pitch(r.aligned, nominal)
    print(f"\n[tilt offset {delta:+.1f} deg] estimated {r.tilt_offset_deg:+.4f} deg "
          f"(error {r.tilt_offset_deg - delta:+.4f}), misfit {info['fit_rms']}, pitch with "
          f"nominal angles {pitched:+.1f}, with corrected {flat:+.1f}, loop's residual pitch "
          f"{info['residual_pitch_deg']}, {r.timings['total_s']:.1f} s")
    assert r.options["specimen"]["kind"] == "slab"
    assert abs(r.tilt_offset_deg - delta) <= 0.1
    assert info["estimated_deg"] == pytest.approx(r.tilt_offset_deg, abs=1e-4)
    # the result's angles are the corrected ones: the true angles within the same 0.1 deg
    np.testing.assert_allclose(r.angles_deg, nominal + r.tilt_offset_deg)
    np.testing.assert_allclose(r.angles_deg, nominal + delta, atol=0.1)
    assert r.summary()["tilt_offset_deg"] == r.tilt_offset_deg
    # sign convention: with the nominal angles the slab is pitched by -delta (within the
    # probe's 0.5 deg grid and ~1 deg accuracy); with the corrected angles it is flat, in the
    # loop's probe and in the result's volume
    assert abs(pitched + delta) <= 1.0
    assert abs(flat) <= 0.5
    assert abs(info["residual_pitch_deg"]) <= 0.5
    assert abs(fit_pitched_slab(r.volume)[2]) <= 0.5


def test_without_refinement_the_offset_is_the_slabs_pitch():
    # the equivalent view: not refined, the offset stays 0 and the loop reports the slab
    # pitched by -delta
    delta = 3.0
    data, nominal, _ = offset_slab(96, 24.0, delta, step_deg=3.0)
    r = fastalign.align(data, nominal, **QUICK)
    print(f"\n[tilt offset not refined] pitch {r.options['specimen']['pitch_deg']} deg "
          f"(offset {delta})")
    assert r.tilt_offset_deg == 0.0 and "tilt_offset" not in r.options
    np.testing.assert_array_equal(r.angles_deg, nominal)
    assert abs(r.options["specimen"]["pitch_deg"] + delta) <= 1.0


def test_mass_law_is_exact_on_noise_free_means():
    angles = np.arange(-60.0, 61.0, 3.0)
    for delta in (-4.0, 0.0, 2.5):
        for background in (0.0, -1.2):   # a constant background does not move the estimate
            means = background + 3.7 / np.cos(np.deg2rad(angles + delta))
            est, rms = mass_law_offset(means, angles)
            assert est == pytest.approx(delta, abs=1e-5) and rms < 1e-8
    # no growth with tilt (a compact object's constant mass, or a normalised film): no law
    assert mass_law_offset(np.ones(11), np.linspace(-50, 50, 11)) == (None, None)
    assert mass_law_offset(np.cos(np.deg2rad(angles)), angles) == (None, None)


def test_compact_object_offset_is_not_determined(caplog):
    data, angles, _ = fastalign.simulate.seed_experiment(n=64)
    with caplog.at_level(logging.WARNING, logger="fastalign.align"):
        r = fastalign.align(data, angles, refine=("shifts", "tilt_offset"), axes="x",
                            max_iter=2, levels=(1,))
    assert r.options["specimen"]["kind"] == "compact"
    assert r.tilt_offset_deg == 0.0
    assert r.options["tilt_offset"] == dict(given_deg=0.0, estimated_deg=0.0,
                                            note=NOT_DETERMINED)
    np.testing.assert_array_equal(r.angles_deg, angles)
    assert any("not determined for a compact object" in m for m in caplog.messages)


def test_known_offset_is_added_to_the_angles():
    data, angles, _ = fastalign.simulate.seed_experiment(n=48)
    r = fastalign.align(data, angles, tilt_offset_deg=1.5, axes="x", max_iter=1, levels=(1,))
    np.testing.assert_allclose(r.angles_deg, angles + 1.5)
    assert r.tilt_offset_deg == 1.5 and r.options["tilt_offset"]["given_deg"] == 1.5
    b = fastalign.align(data, angles, method="xcorr", tilt_offset_deg=-2.0)
    np.testing.assert_allclose(b.angles_deg, angles - 2.0)
    assert b.tilt_offset_deg == -2.0


def test_tilt_offset_options_are_validated():
    data, angles, _ = fastalign.simulate.seed_experiment(n=32)
    with pytest.raises(ValueError, match="refine entries must be among"):
        fastalign.align(data, angles, refine=("shifts", "tilt_angle"))
    with pytest.raises(ValueError, match="tilt_offset_deg"):
        fastalign.align(data, angles, tilt_offset_deg=float("nan"))
    with pytest.raises(ValueError, match="tilt_offset_deg must be within"):
        fastalign.align(data, angles, tilt_offset_deg=60.0)
    with pytest.raises(ValueError, match="apply to method='autofocus' only"):
        fastalign.align(data, angles, method="xcorr", refine=("shifts", "tilt_offset"))
    # the Dask executor runs it (tests/test_distributed_slab.py compares it with local)
    from fastalign.distributed.align import DaskExecutor
    opts = AlignOptions(refine=("shifts", "tilt_offset"))
    assert opts.refine == ("shifts", "tilt_offset")
    opts.check_executor(DaskExecutor.name, DaskExecutor.lacks)


@pytest.mark.filterwarnings("ignore:alignment did not converge")  # one iteration only
def test_cli_writes_corrected_angles(tmp_path, capsys):
    import json

    from fastalign.cli import main
    from fastalign.io import read_angles, write_aligned_stack, write_tlt
    delta = -2.0
    data, nominal, _ = offset_slab(96, 24.0, delta, step_deg=3.0)
    write_aligned_stack(tmp_path / "ts.mrc", data)
    write_tlt(tmp_path / "ts.tlt", nominal)
    out = tmp_path / "out"
    code = main(["align", str(tmp_path / "ts.mrc"), "--angles", str(tmp_path / "ts.tlt"),
                 "--out", str(out), "--refine", "shifts,tilt_offset", "--axis-angle", "0",
                 "--levels", "2", "--max-iter", "1"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "fastalign: tilt offset" in captured.out
    rep = json.loads((out / "report.json").read_text())
    offset = rep["result"]["tilt_offset_deg"]
    with capsys.disabled():
        print(f"\n[cli tilt offset {delta}] estimated {offset:+.4f}")
    assert abs(offset - delta) <= 0.1
    assert rep["geometry"]["tilt_offset_deg"] == offset
    np.testing.assert_allclose(read_angles(out / "ts.tlt"), nominal + offset, atol=1e-4)
    # a known offset: --tilt-offset (and its --help line)
    code = main(["align", str(tmp_path / "ts.mrc"), "--angles", str(tmp_path / "ts.tlt"),
                 "--out", str(tmp_path / "known"), "--tilt-offset", "1.25", "--method",
                 "xcorr", "-q"])
    assert code == 0, capsys.readouterr().err
    np.testing.assert_allclose(read_angles(tmp_path / "known" / "ts.tlt"), nominal + 1.25,
                               atol=1e-4)
    # the axis-angle refinement is not on Dask: refused with one line, nothing written
    # (--tilt-offset runs there: tests/test_distributed_slab.py)
    code = main(["align", str(tmp_path / "ts.mrc"), "--angles", str(tmp_path / "ts.tlt"),
                 "--out", str(tmp_path / "dask"), "--workers", "1", "--tilt-offset", "1",
                 "--refine", "shifts,axis_angle"])
    assert code == 2 and "not available with --scheduler/--workers" in capsys.readouterr().err
    assert not (tmp_path / "dask" / "ts.tlt").exists()
    with pytest.raises(SystemExit):
        main(["align", "--help"])
    assert "--tilt-offset" in capsys.readouterr().out
