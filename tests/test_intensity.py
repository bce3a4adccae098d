"""The intensity model (issue 16): detector offset, bright-field contrast, exposure.

Detection on small synthetic series (offset int16, bright-field with Poisson noise and
per-tilt exposure, slabs, the suite's clean simulations: identity), the overrides and their
errors, and end-to-end: ``fastalign.align`` with default options on an offset int16 series
and on a bright-field series reaches the clean series' accuracy, while forcing the model off
is clearly worse.  Run with ``-s`` to see the numbers.
"""
import json

import numpy as np
import pytest

import fastalign
from fastalign.align.gauge import gauge_error
from fastalign.align.intensity import intensity_model
from fastalign.align.options import AlignOptions
from fastalign.simulate import rotated_axis_experiment, seed_experiment, slab_experiment

OFFSET = -30000.0


def _report(name, **vals):
    print(f"\n[{name}] " + ", ".join(f"{k}={v:.4g}" for k, v in vals.items()))


def _spread(data):
    lo, hi = np.percentile(data, [0.5, 99.5])
    return float(hi - lo)


def _offset_int16(data, gain=1000.0):
    """Dark-field counts on a detector offset, stored as int16 (as FEI HAADF files)."""
    return np.round(data.astype(np.float64) * gain + OFFSET).astype(np.int16)


def _bright_field(data, counts, rows=1, seed=3):
    """``I = I0_i exp(-mu p)`` with Poisson noise and I0 varying 0.7..1.3 per tilt."""
    rng = np.random.default_rng(seed)
    p = np.repeat(np.clip(data, 0, None), rows, axis=1).astype(np.float64)
    i0 = counts * rng.uniform(0.7, 1.3, data.shape[0])
    mu = 1.5 / p.max()
    bf = rng.poisson(i0[:, None, None] * np.exp(-mu * p)).astype(np.float32)
    return bf, i0, mu, p


# ------------------------------------------------------------------ identity on clean data


def _clean_cases():
    d, a, _ = seed_experiment(n=48)
    yield "seed", d, a
    rng = np.random.default_rng(5)
    yield "seed poisson", (rng.poisson(np.clip(d, 0, None) * 300) / 300).astype(np.float32), a
    e = rotated_axis_experiment(shape=(24, 48, 48), angles_deg=np.arange(-60.0, 61.0, 4.0),
                                center_offset=2.0, shift_range=3.0, noise=0.05)
    yield "rotated axis, noise", e.data, e.angles_deg
    e = slab_experiment(48, 14.0, step_deg=4.0)
    yield "slab", e.data, e.angles_deg


@pytest.mark.parametrize("case", ["seed", "seed poisson", "rotated axis, noise", "slab"])
def test_clean_simulations_are_identity(case):
    name, data, angles = next(c for c in _clean_cases() if c[0] == case)
    for a in (angles, None):
        m = intensity_model(data, angles_deg=a)
        assert m.background == 0.0
        assert m.contrast == "dark-field" and m.transform == "linear"
        assert m.scale is None and m.i0 is None
        assert m.is_identity
        out = m.apply(data)
        assert out.dtype == np.float32 and out is not data
        np.testing.assert_array_equal(out, data)


def test_structureless_noise_is_left_alone():
    # no mass tail, no shared vacuum level, no slab law: nothing is clearly an offset
    angles = np.linspace(-60.0, 60.0, 21)
    for seed in range(12):
        noise = np.random.default_rng(seed).random((21, 8, 10)).astype(np.float32) + 1.0
        assert intensity_model(noise, angles_deg=angles).is_identity, seed


def test_clean_alignment_unchanged_and_recorded():
    # the identity model does not touch the data: bit-for-bit the same as background="none"
    d, a, _ = seed_experiment(n=32, shift_range=3)
    kw = dict(axes="x", max_iter=2, levels=(1,))
    r = fastalign.align(d, a, **kw)
    r_none = fastalign.align(d, a, background="none", contrast="dark-field", **kw)
    np.testing.assert_array_equal(r.shifts, r_none.shifts)
    np.testing.assert_array_equal(r.aligned, r_none.aligned)
    np.testing.assert_array_equal(r.volume, r_none.volume)
    rec = r.options["intensity"]
    assert rec["identity"] and rec["background"] == 0.0 and rec["contrast"] == "dark-field"
    assert rec["decisions"]["contrast"]["by"] == "data"
    assert r_none.options["intensity"]["decisions"]["background"]["by"] == "user"
    json.dumps(rec)


# ------------------------------------------------------------------ detection


def test_int16_offset_dark_field_detected():
    d, a, _ = seed_experiment(n=48)
    raw = _offset_int16(d)
    before = raw.copy()
    m = intensity_model(raw, angles_deg=a)
    spread = _spread(raw)
    _report("int16 offset", background=m.background, error_over_spread=(m.background - OFFSET)
            / spread)
    assert m.contrast == "dark-field" and m.transform == "linear"
    assert abs(m.background - OFFSET) <= 0.005 * spread
    assert not m.is_identity and m.scale is None
    out = m.apply(raw)
    np.testing.assert_array_equal(raw, before)          # input untouched
    np.testing.assert_allclose(out, raw.astype(np.float64) - m.background, atol=1e-3)
    assert abs(np.median(out[:, :, :2])) <= 0.005 * spread  # vacuum (edge columns) at zero
    assert "removed" in m.decisions["background"]["why"]


def test_slab_offset_removed_from_its_film_law():
    e = slab_experiment(48, 14.0, step_deg=4.0)
    spread = _spread(e.data)
    m = intensity_model(e.data + np.float32(OFFSET), angles_deg=e.angles_deg)
    _report("slab offset", background=m.background, error_over_spread=(m.background - OFFSET)
            / spread)
    assert m.contrast == "dark-field"
    assert abs(m.background - OFFSET) <= 0.03 * spread
    assert "slab" in m.decisions["background"]["why"]
    # without angles only the sign tells: a negative level is removed, not the film's law
    m2 = intensity_model(e.data + np.float32(OFFSET))
    assert m2.background < 0.5 * OFFSET


def test_positive_offset_on_a_compact_object_removed():
    d, a, _ = seed_experiment(n=48)
    m = intensity_model(d + np.float32(20.0), angles_deg=a)   # level 20 for a spread of ~27
    assert m.background == pytest.approx(20.0, abs=0.01 * _spread(d))
    assert "shared" in m.decisions["background"]["why"]


def test_bright_field_with_poisson_noise_and_exposure():
    d, a, _ = seed_experiment(n=48)
    bf, i0, mu, p = _bright_field(d, 5000.0, rows=8)
    m = intensity_model(bf, angles_deg=a)
    rel = np.array(m.i0) / i0 - 1.0
    out = m.apply(bf)
    err = out - mu * p
    _report("bright-field", i0_rel_rms=np.sqrt(np.mean(rel ** 2)), i0_rel_max=np.abs(rel).max(),
            transform_rms_error=np.sqrt(np.mean(err ** 2)), mass_max=float((mu * p).max()))
    assert m.contrast == "bright-field" and m.transform == "log" and m.background == 0.0
    assert m.decisions["contrast"]["by"] == "data"
    assert np.abs(rel).max() <= 0.01            # I0 per tilt within 1 % (exposures 0.7-1.3)
    # -log(I/I0) recovers mu p to the Poisson noise (1/sqrt(counts) ~ 0.014 .. 0.03)
    assert np.sqrt(np.mean(err ** 2)) <= 0.04
    assert abs(np.median(out[:, :, 0])) <= 0.02    # vacuum column at zero in every tilt


def test_bright_field_on_an_offset_is_inverted():
    d, a, _ = seed_experiment(n=48)
    bf, _, _, p = _bright_field(d, 5000.0, rows=2)
    m = intensity_model(bf + np.float32(OFFSET), angles_deg=a)
    assert m.contrast == "bright-field" and m.transform == "invert"
    out = m.apply(bf + np.float32(OFFSET))
    # I0 - I: mass positive, vacuum at zero, correlated with the true projections
    assert abs(np.median(out[:, :, 0])) <= 0.02 * out.max()
    assert np.corrcoef(out.ravel(), p.ravel())[0, 1] > 0.95


def test_dark_field_exposure_normalised_only_when_the_data_show_it():
    d, a, _ = seed_experiment(n=48, shift_range=3)   # the whole object in every view
    gain = np.random.default_rng(2).uniform(0.6, 1.4, a.size)
    m = intensity_model((d * gain[:, None, None]).astype(np.float32), angles_deg=a)
    ratio = np.array(m.scale) * gain
    _report("exposure", scale_times_gain_rel_spread=np.std(ratio) / np.mean(ratio))
    assert m.scale is not None and m.background == 0.0
    assert np.std(ratio) <= 0.02 * np.mean(ratio)      # scale ~ 1 / gain
    mild = np.random.default_rng(2).uniform(0.95, 1.05, a.size)
    assert intensity_model((d * mild[:, None, None]).astype(np.float32),
                           angles_deg=a).scale is None


def test_overrides():
    d, a, _ = seed_experiment(n=32)
    raw = _offset_int16(d)
    m = intensity_model(raw, background="none")
    assert m.background == 0.0 and m.decisions["background"]["by"] == "user"
    m = intensity_model(raw, background=-29000)
    assert m.background == -29000.0
    np.testing.assert_allclose(m.apply(raw), raw + 29000.0)
    m = intensity_model(d, contrast="bright-field")
    assert m.contrast == "bright-field" and m.transform == "invert"  # zeros: no log
    m = intensity_model(raw, contrast="dark-field")
    assert m.decisions["contrast"] == {"by": "user", "why": "given"}
    assert m.background == pytest.approx(OFFSET, abs=30)


@pytest.mark.parametrize("kwargs,match", [
    (dict(contrast="darkfield"), "contrast must be"),
    (dict(contrast=None), "contrast must be"),
    (dict(background="zero"), "background must be"),
    (dict(background=True), "background must be"),
    (dict(background=float("nan")), "background must be"),
])
def test_bad_options_name_the_option(kwargs, match):
    d, a, _ = seed_experiment(n=16)
    with pytest.raises(ValueError, match=match):
        intensity_model(d, **kwargs)
    with pytest.raises(ValueError, match=match):
        fastalign.align(d, a, **kwargs)


def test_no_signal_left_is_refused():
    flat = np.full((3, 4, 5), -31000.0, np.float32)
    with pytest.raises(ValueError, match="leaves no signal"):
        intensity_model(flat)
    tiny = flat + np.float32(1e-3) * np.arange(5, dtype=np.float32)  # lost in float32
    with pytest.raises(ValueError, match="no signal"):
        intensity_model(tiny.astype(np.float64) * 1e6, background="auto")


def test_dask_runs_every_intensity_option():
    from fastalign.distributed.align import DaskExecutor
    for kw in (dict(), dict(background="none"), dict(contrast="bright-field", background=3.0)):
        AlignOptions(**kw).check_executor(DaskExecutor.name, DaskExecutor.lacks)


@pytest.mark.parametrize("kind", ["bright-field", "offset int16", "exposure"])
def test_model_from_tilt_chunks_equals_the_whole(kind):
    """What the Dask executor does: the model from the chunks' subsamples concatenated and
    applied chunk by chunk equals the model of the whole series, bit for bit."""
    from fastalign.align.intensity import model_from_sample, subsample
    d, a, _ = seed_experiment(n=48)
    if kind == "bright-field":
        raw = _bright_field(d, 3000.0, rows=6)[0]
    elif kind == "offset int16":
        raw = _offset_int16(np.repeat(d, 6, axis=1))
    else:
        raw = np.repeat(d, 6, axis=1) * np.linspace(0.6, 1.4, d.shape[0])[:, None, None]
    whole = intensity_model(raw, angles_deg=a)
    assert not whole.is_identity
    chunks = [(0, 7), (7, 20), (20, raw.shape[0])]
    sample = np.concatenate([subsample(raw[t0:t1]) for t0, t1 in chunks])
    asked = []
    part = model_from_sample(sample, lambda: asked.append(1) or float(np.min(raw)),
                             angles_deg=a)
    assert part == whole
    assert len(asked) == (kind == "bright-field")   # the minimum only for -log
    mass = np.concatenate([part.apply(raw[t0:t1], first=t0) for t0, t1 in chunks])
    np.testing.assert_array_equal(mass, whole.apply(raw))
    if part.i0 is not None or part.scale is not None:   # per-tilt values: count checked
        with pytest.raises(ValueError, match="from tilt 20"):
            part.apply(raw[:raw.shape[0] - 10], first=20)


def test_haadf_like_series_apply_keeps_memory_and_input():
    d, a, _ = seed_experiment(n=32)
    raw = _offset_int16(d)
    m = intensity_model(raw)
    out = m.apply(raw)
    assert out.dtype == np.float32 and out.flags.c_contiguous and out.shape == raw.shape
    with pytest.raises(ValueError, match="tilts"):
        intensity_model(_bright_field(d, 1000.0)[0]).apply(raw[:3])


# ------------------------------------------------------------------ end to end


ALIGN = dict(axes="x", max_iter=12, tol=0.0)


@pytest.fixture(scope="module")
def seed64():
    d, a, true = seed_experiment(n=64, seed=0)
    r = fastalign.align(d, a, **ALIGN)
    return d, a, true, r, gauge_error(r.shifts, true, a)[0]


def test_offset_int16_aligns_as_well_as_clean(seed64):
    d, a, true, r0, e_clean = seed64
    raw = _offset_int16(d)
    r = fastalign.align(raw, a, **ALIGN)
    e = gauge_error(r.shifts, true, a)[0]
    r_off = fastalign.align(raw, a, background="none", **ALIGN)
    e_off = gauge_error(r_off.shifts, true, a)[0]
    _report("align offset int16", clean=e_clean, auto=e, background_none=e_off)
    assert e <= e_clean + 0.01 and e <= 0.1
    assert e_off > 1.0 and e_off > 10 * e
    assert r.options["intensity"]["background"] == pytest.approx(OFFSET, abs=50)
    # aligned keeps the user's intensities (offset and gain); the volume is mass
    assert np.median(r.aligned[:, :, :4]) == pytest.approx(OFFSET, abs=100)   # vacuum
    np.testing.assert_allclose((r.aligned - r.options["intensity"]["background"]) / 1000.0,
                               r0.aligned, atol=0.02 * float(d.max()))
    np.testing.assert_allclose(r.volume / 1000.0, r0.volume, atol=0.05 * float(r0.volume.max()))


def test_bright_field_aligns_as_well_as_clean(seed64):
    d, a, true, _, e_clean = seed64
    bf, _, _, _ = _bright_field(d, 20000.0)
    r = fastalign.align(bf, a, **ALIGN)
    e = gauge_error(r.shifts, true, a)[0]
    # forced dark-field: the bright vacuum is taken as mass (kept compact: the slab loop
    # would only be slower, not right)
    r_dark = fastalign.align(bf, a, contrast="dark-field", specimen="compact", **ALIGN)
    e_dark = gauge_error(r_dark.shifts, true, a)[0]
    _report("align bright-field", clean=e_clean, auto=e, forced_dark_field=e_dark)
    assert r.options["intensity"]["contrast"] == "bright-field"
    assert e <= 1.5 * e_clean and e <= 0.1
    assert e_dark > 1.0 and e_dark > 10 * e
    assert np.median(r.aligned) > 0.5 * np.median(bf)   # still the bright-field counts


def test_baseline_keeps_original_intensities():
    d, a, _ = seed_experiment(n=32, shift_range=3)
    raw = _offset_int16(d)
    r = fastalign.align(raw, a, method="xcorr", n_inner=2)
    assert r.options["intensity"]["background"] == pytest.approx(OFFSET, abs=50)
    assert np.median(r.aligned[:, :, :4]) == pytest.approx(OFFSET, abs=100)
    assert r.volume.max() < 0.5 * abs(OFFSET)      # reconstructed from the mass, not offset


# ------------------------------------------------------------------ command line


def test_cli_offset_series_summary_report_and_errors(tmp_path, capsys):
    import mrcfile

    from fastalign.cli import main
    from fastalign.io import read_tilt_series, write_tlt
    d, a, _ = seed_experiment(n=32, shift_range=3)
    raw = _offset_int16(np.repeat(d, 4, axis=1))
    with mrcfile.new(tmp_path / "ts.mrc") as m:
        m.set_data(raw)
    write_tlt(tmp_path / "ts.rawtlt", a)

    def run(*args):   # in this process: the kernels are compiled once
        code = main(["align", str(tmp_path / "ts.mrc"), *args])
        out = capsys.readouterr()
        return code, out.out, out.err

    code, out, err = run("--axes", "x", "--max-iter", "2", "--tol", "50", "--levels", "1", "--out",
                         str(tmp_path / "o"))
    assert code == 0, err
    assert "fastalign: intensity dark-field, background -300" in out
    rep = json.loads((tmp_path / "o" / "report.json").read_text())
    rec = rep["result"]["options"]["intensity"]
    assert rec["background"] == pytest.approx(OFFSET, abs=50) and rec["contrast"] == "dark-field"
    ali = read_tilt_series(tmp_path / "o" / "ts.ali")[0]
    assert np.median(ali[:, :, :2]) == pytest.approx(OFFSET, abs=100)   # original intensities

    code, _, err = run("--background", "zero", "--out", str(tmp_path / "p"))
    assert code == 2 and "--background must be auto, none or a number" in err
    code, _, err = run("--contrast", "dark")
    assert code == 2 and "--contrast" in err
    with pytest.raises(SystemExit):
        main(["align", "--help"])
    out = capsys.readouterr().out
    assert "--contrast {auto,dark-field,bright-field}" in out
    assert "--background {auto,none,VALUE}" in out
