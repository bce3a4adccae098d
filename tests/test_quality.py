"""Per-tilt quality (issue 19): residual and coherence against the final volume, the per-tilt
table of report.json, the residual panel of shifts.png, and the IMOD .xtilt/.exclude files."""
import json
import os

import numpy as np
import pytest

import fastalign
from fastalign import report, simulate

NOISY = 9      # the tilt replaced by noise in the `noisy` run


def _particles():
    """25 tilts (-60..60 step 5) of the particle phantom, 16 x 32 x 32, random shifts up to
    2 px, a little noise."""
    e = simulate.rotated_axis_experiment(shape=(16, 32, 32),
                                         angles_deg=np.arange(-60.0, 60.5, 5.0),
                                         axis_angle_deg=0.0, center_offset=0.0,
                                         shift_range=2.0)
    rng = np.random.default_rng(2)
    data = e.data + rng.normal(0.0, 0.02 * e.data.std(), e.data.shape).astype(np.float32)
    return data, e.angles_deg


def _align(data, angles, **kw):
    return fastalign.align(data, angles, max_iter=4, specimen="compact", orient=False, **kw)


@pytest.fixture(scope="module")
def noisy():
    """A run keeping (``auto_exclude=False``) a tilt whose view is drowned in noise."""
    data, angles = _particles()
    rng = np.random.default_rng(5)
    data[NOISY] += rng.normal(0.0, 2.0 * data[NOISY].std(), data[NOISY].shape).astype(
        np.float32)
    return _align(data, angles, auto_exclude=False)


@pytest.fixture(scope="module")
def excluded():
    data, angles = _particles()
    return _align(data, angles, exclude=[3, 15, 16])


def test_noisy_tilt_has_the_largest_residual_and_lowest_coherence(noisy):
    res, coh = noisy.tilt_residual, noisy.tilt_coherence
    n = len(noisy.shifts)
    assert res.shape == coh.shape == (n,) and res.dtype == coh.dtype == np.float64
    assert np.all(np.isfinite(res)) and np.all(np.isfinite(coh))
    others = np.delete(np.arange(n), NOISY)
    print(f"\nnoisy tilt {NOISY}: residual {res[NOISY]:.3f}, others median "
          f"{np.median(res[others]):.3f} max {res[others].max():.3f}; coherence "
          f"{coh[NOISY]:.3f}, others median {np.median(coh[others]):.3f} min "
          f"{coh[others].min():.3f}")
    assert int(np.argmax(res)) == NOISY
    assert res[NOISY] > 3.0 * np.median(res[others])
    assert int(np.argmin(coh)) == NOISY
    assert np.all((coh >= 0.0) & (coh <= 1.0 + 1e-9))


def test_residual_flags_a_view_changed_after_alignment(excluded):
    # the quality function alone: a blob added to one aligned view after the run
    from fastalign.align.executor import tilt_quality
    r = excluded
    aligned = r.aligned.copy()
    k = 20
    yy, xx = np.mgrid[:aligned.shape[1], :aligned.shape[2]]
    aligned[k] += (aligned[k].max() * np.exp(-((xx - 10) ** 2 + (yy - 8) ** 2) / 6.0)).astype(
        np.float32)
    base, _ = tilt_quality(r.aligned, r.volume, r.angles_deg, r.center_offset,
                           shifts=r.shifts)
    blob, _ = tilt_quality(aligned, r.volume, r.angles_deg, r.center_offset,
                           shifts=r.shifts)
    print(f"\nview {k}: residual {base[k]:.3f} -> {blob[k]:.3f} with a blob; the others "
          f"unchanged: {np.allclose(np.delete(base, k), np.delete(blob, k))}")
    assert int(np.argmax(blob)) == k and blob[k] > 3.0 * base[k]
    assert np.allclose(np.delete(base, k), np.delete(blob, k))


def test_excluded_tilts_are_nan(excluded):
    r = excluded
    n = len(r.shifts)
    for arr in (r.tilt_residual, r.tilt_coherence):
        assert arr.shape == (n,)
        assert np.all(np.isnan(arr[[3, 15, 16]]))
        assert np.all(np.isfinite(np.delete(arr, [3, 15, 16])))
    assert r.excludelist() == "4,16-17"
    print(f"\nresidual median {np.nanmedian(r.tilt_residual):.3f}, coherence median "
          f"{np.nanmedian(r.tilt_coherence):.3f}; EXCLUDELIST {r.excludelist()}")


def test_report_per_tilt_table_matches_the_result(excluded, tmp_path):
    r = excluded
    rep = report.build_report(inputs={}, options={}, result=r)
    path = report.write_report(tmp_path / "report.json", rep)
    with open(path, encoding="utf-8") as fh:
        back = json.load(fh)
    rows = back["tilts"]
    assert len(rows) == len(r.shifts)
    assert back["result"]["excludelist"] == "4,16-17"
    for i, row in enumerate(rows):
        assert row["tilt"] == i and row["view"] == i + 1
        assert row["angle_deg"] == pytest.approx(r.angles_deg[i])
        assert row["dx"] == pytest.approx(r.shifts[i, 0])
        assert row["excluded"] == row["interpolated"] == (i in (3, 15, 16))
        for key, value in (("residual", r.tilt_residual[i]),
                           ("coherence", r.tilt_coherence[i]),
                           ("sigma_dx", r.uncertainty[i, 0]), ("sigma_dy", r.uncertainty[i, 1])):
            if np.isfinite(value):
                assert row[key] == pytest.approx(value)
            else:
                assert row[key] is None
    assert rows[3]["residual"] is None and rows[3]["sigma_dx"] is None


def test_shifts_figure_has_a_residual_panel(excluded, tmp_path):
    import matplotlib.image as mpimg
    r = excluded
    one = report.plot_shifts(tmp_path / "a.png", r.angles_deg, r.shifts,
                             uncertainty=r.uncertainty)
    two = report.plot_shifts(tmp_path / "b.png", r.angles_deg, r.shifts,
                             uncertainty=r.uncertainty, residual=r.tilt_residual,
                             excluded=r.excluded)
    assert mpimg.imread(two).shape[0] > mpimg.imread(one).shape[0]
    with pytest.raises(ValueError, match="residual"):
        report.plot_shifts(tmp_path / "c.png", r.angles_deg, r.shifts,
                           residual=r.tilt_residual[:3])


def test_dask_style_executor_without_quality_gives_nan(monkeypatch):
    # an executor that does not compute the quality (as the Dask one): NaN of the same shape
    from fastalign.align import executor as _executor
    data, angles = _particles()
    real = _executor.LocalExecutor.finish

    def finish(self, *args):
        out = real(self, *args)
        self.quality = None
        return out
    monkeypatch.setattr(_executor.LocalExecutor, "finish", finish)
    r = fastalign.align(data, angles, max_iter=1, specimen="compact", orient=False)
    assert r.tilt_residual.shape == r.tilt_coherence.shape == (len(angles),)
    assert np.all(np.isnan(r.tilt_residual)) and np.all(np.isnan(r.tilt_coherence))


# ------------------------------------------------------------------ command line


# the 15-tilt blob series and the in-process CLI runner of the exclusion tests
from test_exclude import _run, blob_file  # noqa: E402,F401 (a fixture)


def test_cli_writes_xtilt_and_excludelist(blob_file, tmp_path, capsys):
    path, angles = blob_file
    p = _run(capsys, "align", path, "--max-iter", "2", "--exclude", "2,5-6", "--out",
             tmp_path / "ex")
    assert p.returncode == 0, p.stderr
    lines = (tmp_path / "ex" / "ts.xtilt").read_text().splitlines()
    assert len(lines) == 15 and all(float(v) == 0.0 for v in lines)
    text = (tmp_path / "ex" / "ts.exclude").read_text()
    assert "EXCLUDELIST 2,5-6\n" in text
    rep = json.loads((tmp_path / "ex" / "report.json").read_text())
    assert rep["result"]["excludelist"] == "2,5-6"
    assert [row["view"] for row in rep["tilts"] if row["excluded"]] == [2, 5, 6]
    assert rep["outputs"]["xtilt"] == "ts.xtilt" and rep["outputs"]["exclude"] == "ts.exclude"
    print(f"\n.exclude with --exclude 2,5-6:\n{text}")

    p = _run(capsys, "align", path, "--max-iter", "2", "--no-auto-exclude", "--out",
             tmp_path / "none")
    assert p.returncode == 0, p.stderr
    assert len((tmp_path / "none" / "ts.xtilt").read_text().splitlines()) == 15
    text = (tmp_path / "none" / "ts.exclude").read_text()
    assert "EXCLUDELIST" not in text
    rep = json.loads((tmp_path / "none" / "report.json").read_text())
    assert rep["result"]["excludelist"] is None
    assert not any(row["excluded"] for row in rep["tilts"])
    assert all(row["residual"] is not None for row in rep["tilts"])
    print(f".exclude without exclusions:\n{text}")


@pytest.mark.parametrize("name", ["ts.xtilt", "ts.exclude"])
def test_cli_refuses_an_existing_imod_file_before_computing(blob_file, tmp_path, capsys,
                                                            name):
    path, _ = blob_file
    out = tmp_path / "out"
    out.mkdir()
    (out / name).write_text("keep me\n")
    p = _run(capsys, "align", path, "--max-iter", "2", "--out", out)
    assert p.returncode != 0 and name in p.stderr
    assert (out / name).read_text() == "keep me\n"
    assert sorted(os.listdir(out)) == [name]


def test_final_quality_reuses_the_sirt_reprojection_bit_for_bit():
    """The final SIRT's last reprojection gives the per-tilt quality (no extra projection
    of the volume): the same bytes as projecting the returned volume again."""
    from fastalign.align.executor import tilt_quality
    from cases import particle_projections
    data, angles = particle_projections(31)
    r = fastalign.align(data, angles, max_iter=2, levels=[1], background="none",
                        contrast="dark-field")
    assert r.options["intensity"]["identity"]
    res, coh = tilt_quality(r.aligned, r.volume, r.angles_deg, r.center_offset,
                            shifts=r.shifts)
    assert np.array_equal(res, r.tilt_residual) and np.array_equal(coh, r.tilt_coherence)
