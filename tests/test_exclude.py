"""Tilt exclusion and automatic bad-tilt detection (fastalign.align.badtilts, issue 19)."""
import json
import os
import subprocess
import sys

import mrcfile
import numpy as np
import pytest

import fastalign
from fastalign import simulate
from fastalign.align import badtilts
from fastalign.align.gauge import gauge_basis, gauge_error
from fastalign.align.shift import fourier_shift
from fastalign.io import read_angles, read_xf, write_aligned_stack, write_tlt

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from cli_stub import assert_user_error  # noqa: E402


def _smooth_experiment():
    """41 tilts (-60..60 step 3) of the particle phantom, 24 x 48 x 48, moved by a smooth
    drift (so that interpolation in tilt angle can recover an excluded tilt's shift); the
    blank, noise and edge-occluded frames at tilts 3, 20 and 37.  A little noise (5 % of the
    data's std): real data are never exactly constant (module docstring of badtilts)."""
    e = simulate.rotated_axis_experiment(shape=(24, 48, 48),
                                         angles_deg=np.arange(-60.0, 60.5, 3.0),
                                         axis_angle_deg=0.0, center_offset=0.0, shift_range=0.0)
    t = e.angles_deg / 60.0
    true = np.stack([3.0 * np.sin(2.5 * t) + 1.5 * t ** 2, 2.0 * t - 2.0 * np.cos(2.0 * t)], 1)
    ideal = e.data
    rng = np.random.default_rng(1)
    clean = fourier_shift(ideal, true)
    clean += rng.normal(0.0, 0.05 * clean.std(), clean.shape).astype(np.float32)
    bad_data = clean.copy()
    bad = [3, 20, 37]
    bad_data[3] = 0.0                                                       # blank
    bad_data[20] = rng.normal(clean.mean(), clean.std(), clean[0].shape)    # pure noise
    bad_data[37][:, :int(0.3 * clean.shape[2])] = clean[37].max()          # a grid bar
    return ideal, clean, bad_data, e.angles_deg, true, bad


def _gauge_free(err, angles, keep):
    """``err`` with the gauge fitted on the kept tilts removed (from every tilt)."""
    coef, *_ = np.linalg.lstsq(gauge_basis(angles[keep]), err[keep, 0], rcond=None)
    out = np.array(err, dtype=np.float64)
    out[:, 0] -= gauge_basis(angles) @ coef
    out[:, 1] -= err[keep, 1].mean()
    return out


# ------------------------------------------------------------------ detection only


@pytest.mark.parametrize("name", ["seed", "slab", "particles", "particles_noisy"])
def test_no_clean_frame_is_flagged(name):
    e = {"seed": lambda: simulate.seed_experiment(n=64),
         "slab": lambda: simulate.slab_experiment(fov=64),
         "particles": lambda: simulate.rotated_axis_experiment(),
         "particles_noisy": lambda: simulate.rotated_axis_experiment(
             shape=(48, 64, 80), axis_angle_deg=0.0, center_offset=0.0, shift_range=5.0,
             noise=0.3)}[name]()
    order = np.argsort(e.angles_deg)
    d = badtilts._deviations(badtilts._features(badtilts.LocalTilts(e.data), order),
                             e.angles_deg[order])
    worst = {k: round(float(v.max()), 3) for k, v in d.items()}
    print(name, "largest deviations", worst)
    assert badtilts.detect_bad_tilts(e.data, e.angles_deg) == []


def test_detects_blank_noise_and_occluded_frames():
    _, clean, bad_data, angles, _, bad = _smooth_experiment()
    assert badtilts.detect_bad_tilts(clean, angles) == []
    found = badtilts.detect_bad_tilts(bad_data, angles)
    print([(f["tilt"], f["feature"], f["score"]) for f in found])
    assert [f["tilt"] for f in found] == bad
    assert [f["feature"] for f in found][:2] == ["blank", "noise"]
    assert found[2]["feature"] in ("occluded", "edge", "jump")   # a grid bar: all three
    assert all(f["view"] == f["tilt"] + 1 and f["reason"] for f in found)


def test_too_many_flagged_warns_and_excludes_none(monkeypatch):
    data = np.random.default_rng(0).random((10, 8, 8)).astype(np.float32)
    angles = np.linspace(-60, 60, 10)
    flagged = [dict(tilt=i, view=i + 1, angle_deg=float(angles[i]), reason="r", feature="f",
                    score=2.0) for i in range(5)]
    monkeypatch.setattr(badtilts, "detect_bad_tilts", lambda *a, **k: flagged)
    with pytest.warns(UserWarning, match="none is excluded automatically"):
        chosen = badtilts.choose_tilts(data, angles)
    assert chosen.excluded.size == 0 and chosen.record["min_kept"] == 6
    chosen = badtilts.choose_tilts(data, angles, include=[0, 1])   # forced back: 3 left
    assert chosen.excluded.tolist() == [2, 3, 4]


def test_interpolated_shifts_keep_the_gauge_exactly():
    angles = np.arange(-60.0, 60.5, 3.0)
    t = angles / 60.0
    smooth = np.stack([0.5 * t ** 2, 0.3 * t], 1)
    gauge = np.stack([7.0 * np.cos(np.deg2rad(angles)) - 4.0 * np.sin(np.deg2rad(angles))
                      + 2.0, np.full_like(angles, -3.0)], 1)
    keep = np.ones(angles.size, bool)
    keep[[0, 10, 11, 40]] = False                          # both ends and a pair
    got = badtilts.interpolate_shifts((smooth + gauge)[keep], angles, keep)
    ref = badtilts.interpolate_shifts(smooth[keep], angles, keep) + gauge
    np.testing.assert_allclose(got, ref, atol=1e-10)
    np.testing.assert_allclose(got[keep], (smooth + gauge)[keep])
    miss = np.abs(got - (smooth + gauge))
    assert miss[[10, 11]].max() < 0.002           # interior: the curvature of 0.5 t^2 only
    assert miss[[0, 40]].max() < 0.02             # ends: the nearest value (one step's trend)


# ------------------------------------------------------------------ alignment


def test_bad_frames_are_excluded_and_the_rest_aligns():
    ideal, clean, bad_data, angles, true, bad = _smooth_experiment()
    opts = dict(max_iter=15, n_inner=5, axis_angle_deg=0.0)
    # the three bad frames found automatically, plus a clean tilt excluded by the user
    run = fastalign.align(bad_data, angles, exclude=[10], **opts)
    forced = fastalign.align(bad_data, angles, auto_exclude=False, **opts)
    out = sorted(bad + [10])
    keep = np.ones(angles.size, bool)
    keep[out] = False
    e_run = gauge_error(run.shifts[keep], true[keep], angles[keep])
    e_forced = gauge_error(forced.shifts[keep], true[keep], angles[keep])
    print("kept-tilt error (x, y) px: bad frames excluded", np.round(e_run, 4),
          "forced back", np.round(e_forced, 4))
    assert run.excluded.tolist() == out and run.interpolated.tolist() == (~keep).tolist()
    assert {e["tilt"]: e["source"] for e in run.options["excluded"]} == {
        3: "auto", 10: "user", 20: "auto", 37: "auto"}
    assert [f["tilt"] for f in run.options["bad_tilts"]["flagged"]] == bad
    assert forced.options["bad_tilts"]["auto"] is False
    json.dumps(run.summary())
    # the kept tilts align to the usual accuracy (the clean series, every tilt used, same
    # options: 0.023, 0.006 px on these tilts); forced back, the bad frames spoil the others
    assert max(e_run) < 0.05
    assert max(e_forced) > 3 * max(e_run) and forced.excluded.size == 0
    # excluded tilts: interpolated shifts near the truth, in the same gauge
    err = _gauge_free(run.shifts - true, angles, keep)
    print("excluded tilts' interpolated shift error (px):", np.round(err[out], 3).tolist())
    assert np.abs(err[out]).max() < 0.5
    # every view kept; the user-excluded clean view resampled like the kept ones
    assert run.aligned.shape == clean.shape
    gauge = run.shifts - true - err                    # aligned = ideal moved by -gauge
    misfit = np.array([np.linalg.norm(run.aligned[i]
                                      - fourier_shift(ideal[i:i + 1], -gauge[i:i + 1])[0])
                       / np.linalg.norm(ideal[i]) for i in range(angles.size)])
    print("aligned misfit: excluded view 10", round(float(misfit[10]), 4), "kept median",
          round(float(np.median(misfit[keep])), 4))
    assert misfit[10] < max(0.1, 2 * np.median(misfit[keep]))


# ------------------------------------------------------------------ bad input


def test_bad_exclude_lists_are_refused_before_computing():
    data = np.random.default_rng(0).random((8, 6, 6)).astype(np.float32)
    angles = np.linspace(-60, 60, 8)
    for exclude, words in (([8], "do not exist"), ([-1], "do not exist"),
                           (list(range(8)), "every tilt"), ([0, 1, 2, 3], "at least 5"),
                           ([0.5], "integer")):
        with pytest.raises(ValueError, match="exclude") as exc:
            fastalign.align(data, angles, exclude=exclude)
        assert words in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(ValueError, match="include"):
        fastalign.align(data, angles, include=[9])
    with pytest.raises(TypeError, match="auto_exclude"):
        fastalign.align(data, angles, auto_exclude="yes")


# ------------------------------------------------------------------ command line


@pytest.fixture
def blob_file(tmp_path):
    """A compact blob moving a little, 15 tilts of 16 x 20, ``ts.mrc`` + ``ts.rawtlt``."""
    angles = np.linspace(-56.0, 56.0, 15)
    yy, xx = np.mgrid[:16, :20]
    series = np.stack([np.exp(-((xx - 9.5 - 2 * np.sin(a / 40)) ** 2 + (yy - 7.5) ** 2) / 8)
                       for a in angles]).astype(np.float32)
    write_aligned_stack(tmp_path / "ts.mrc", series)
    write_tlt(tmp_path / "ts.rawtlt", angles)
    return tmp_path / "ts.mrc", angles


def _run(capsys, *args):
    from fastalign.cli import main
    code = main([os.fspath(a) for a in args])
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out.out, out.err)


def test_cli_exclude_keeps_or_drops_views(blob_file, tmp_path, capsys):
    path, angles = blob_file
    p = _run(capsys, "align", path, "--method", "com", "--exclude", "2,5-6", "--out",
             tmp_path / "all")
    assert p.returncode == 0, p.stderr
    assert "excluded views 2,5-6" in p.stdout
    with mrcfile.open(tmp_path / "all" / "ts.ali") as m:
        assert m.data.shape[0] == 15
    report = json.loads((tmp_path / "all" / "report.json").read_text())
    text = json.dumps(report)
    assert '"view": 5' in text and "excluded by the user" in text
    assert len(read_xf(tmp_path / "all" / "ts.xf")) == 15

    p = _run(capsys, "align", path, "--method", "com", "--exclude", "2,5-6",
             "--drop-excluded", "--out", tmp_path / "drop")
    assert p.returncode == 0, p.stderr
    keep = np.ones(15, bool)
    keep[[1, 4, 5]] = False
    with mrcfile.open(tmp_path / "drop" / "ts.ali") as m:
        assert m.data.shape[0] == 12
    np.testing.assert_allclose(read_angles(tmp_path / "drop" / "ts.tlt"), angles[keep],
                               atol=1e-3)
    np.testing.assert_allclose(read_xf(tmp_path / "drop" / "ts.xf"),
                               read_xf(tmp_path / "all" / "ts.xf")[keep], atol=1e-3)


@pytest.mark.parametrize("option, value, words", [
    ("--exclude", "16", "outside 1..15"), ("--exclude", "1-15", "every tilt"),
    ("--exclude", "1-12", "at least 5"), ("--exclude", "3-1", "reversed"),
    ("--include", "0", "outside 1..15")])
def test_cli_bad_exclude_is_one_line_and_writes_nothing(blob_file, tmp_path, capsys, option,
                                                        value, words):
    path, _ = blob_file
    p = _run(capsys, "align", path, option, value, "--out", tmp_path / "out")
    assert_user_error(p, option, words)
    assert not (tmp_path / "out").exists() or not os.listdir(tmp_path / "out")


@pytest.mark.parametrize("pitch", [4.0, -4.0])
def test_pitched_slab_end_views_are_not_jumps(pitch):
    """A pitched slab's mass per view grows as 1/cos(angle + pitch): steepest at one end of
    the range, where a straight line in the angle extrapolated from the neighbours fell short
    and the -60 degree view of the 4 degree slab was dropped as an 'abrupt jump' (one view's
    interpolated shift then off by pixels).  At high tilt the jump feature follows sec."""
    e = simulate.slab_experiment(fov=64, pitch_deg=pitch)
    assert badtilts.detect_bad_tilts(e.data, e.angles_deg) == []
    # a real jump at the end of the range is still found
    data = e.data.copy()
    data[0] *= 1.3
    found = badtilts.detect_bad_tilts(data, e.angles_deg)
    assert [f["tilt"] for f in found] == [0] and found[0]["feature"] == "jump"
