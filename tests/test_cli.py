"""Tests of the ``fastalign`` command line, run as a subprocess.

Failure paths go through the real entry point, ``python -m fastalign``.  Success paths that
need the numerical library are run twice over: through ``tests/cli_stub.py`` (the same
``main`` with stand-ins for ``fastalign.align``/``sirt``/``tv``/``fbp``/``demo``, so the
plumbing is tested independently of the numerics) and through ``python -m fastalign`` with
the real library functions.
"""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import mrcfile
import numpy as np
import pytest

import fastalign
from fastalign.io import read_angles, read_tilt_series, read_xf, write_aligned_stack, write_tlt
from fastalign.testing import remove_gauge

HERE = os.path.dirname(os.path.abspath(__file__))
STUB = os.path.join(HERE, "cli_stub.py")
sys.path.insert(0, HERE)
from cli_stub import assert_user_error, stub_shifts  # noqa: E402

ALIGN_OUTPUTS = ["ts.ali", "ts.rec", "ts.xf", "ts.aln", "ts.tlt", "ts.xtilt", "ts.exclude",
                 "report.json",
                 "shifts.png", "slices.png", "convergence.png"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run(*args, stub=False, env=None, timeout=180, cwd=None):
    """Run the CLI (``python -m fastalign`` or the stub driver) and capture its output."""
    cmd = [sys.executable, STUB] if stub else [sys.executable, "-m", "fastalign"]
    full_env = dict(os.environ)
    full_env.pop("FASTALIGN_DEBUG", None)
    full_env.update(env or {})
    return subprocess.run(cmd + [os.fspath(a) for a in args], capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=cwd)


def run_here(capsys, *args):
    """Run ``fastalign.cli.main`` in this process (for quick option-validation checks)."""
    from fastalign.cli import main

    code = main([os.fspath(a) for a in args])
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, captured.out, captured.err)


def snapshot(directory):
    """``{relative path: sha256}`` of every file under ``directory``."""
    out = {}
    for root, _, files in os.walk(directory):
        for f in files:
            p = os.path.join(root, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, directory)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def stray_files(directory):
    """Temporary files or staging directories left anywhere under ``directory``."""
    bad = []
    for root, dirs, files in os.walk(directory):
        bad += [os.path.join(root, d) for d in dirs if d.startswith(".fastalign-staging")]
        bad += [os.path.join(root, f) for f in files if f.endswith(".tmp")]
    return bad




@pytest.fixture
def dataset(tmp_path):
    """``tmp_path/data/ts.mrc`` (7 tilts of 8 x 10, pixel 2.5 A) with ``ts.rawtlt``."""
    d = tmp_path / "data"
    d.mkdir()
    rng = np.random.default_rng(3)
    series = rng.random((7, 8, 10)).astype(np.float32) + 1.0
    angles = np.linspace(-60.0, 60.0, 7)
    write_aligned_stack(d / "ts.mrc", series, pixel_size_A=2.5)
    write_tlt(d / "ts.rawtlt", angles)
    return {"dir": d, "mrc": d / "ts.mrc", "series": series, "angles": angles,
            "snapshot": snapshot(d)}


def assert_inputs_unchanged(ds):
    current = snapshot(ds["dir"])
    for name, digest in ds["snapshot"].items():
        assert current[name] == digest, f"input {name} was modified"


# ------------------------------------------------------------------ help and info


def test_help_explains_every_option(capsys):
    expected = {
        "align": ["--angles", "--recon", "--out", "--threads", "--quiet", "--overwrite",
                  "--fill-nonfinite", "--max-memory", "--max-iter", "--tol", "--method"],
        "recon": ["--angles", "--method", "--n-iter", "--lam", "--out", "--overwrite"],
        "info": ["--angles"],
        "demo": ["--out"],
    }
    top = run("--help")
    assert top.returncode == 0 and all(c in top.stdout for c in expected)
    proc = run("align", "--help")
    assert proc.returncode == 0 and "autofocus" in proc.stdout
    assert all(opt in proc.stdout for opt in expected["align"])
    from fastalign.cli import main

    for command, options in expected.items():
        with pytest.raises(SystemExit) as exc:
            main([command, "--help"])
        assert exc.value.code == 0
        text = capsys.readouterr().out
        for opt in options:
            assert opt in text, (command, opt)
        # every option has a help text: no bare option lines in the listing
        assert "--help" in text


def test_no_command_and_bad_option_are_user_errors(dataset, capsys):
    assert_user_error(run("align", dataset["mrc"], "--bogus"), "--bogus")
    assert run_here(capsys).returncode == 2
    assert_user_error(run_here(capsys, "align", dataset["mrc"], "--threads", "0"), "--threads")
    assert_user_error(run_here(capsys, "align", dataset["mrc"], "--method", "magic"),
                      "--method")
    assert_user_error(run_here(capsys, "align", dataset["mrc"], "--lam", "1"), "--recon tv")
    assert_inputs_unchanged(dataset)


def test_info_reports_shape_angles_pixel_size_memory(dataset):
    proc = run("info", dataset["mrc"])
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "7 tilts x 8 (y) x 10 (x)" in out
    assert "float32" in out and "2.5 A" in out
    assert "-60.00 to 60.00 degrees" in out and "ts.rawtlt" in out
    assert "memory" in out and "peak" in out
    assert_inputs_unchanged(dataset)


def test_info_truncated_and_foreign_files(dataset, tmp_path):
    trunc = dataset["dir"] / "cut.mrc"
    trunc.write_bytes(dataset["mrc"].read_bytes()[:-100])
    foreign = dataset["dir"] / "notes.st"
    foreign.write_bytes(b"this is a text file, not a tilt series\n" * 50)
    snap = snapshot(dataset["dir"])
    assert_user_error(run("info", trunc), "cut.mrc is truncated")
    assert_user_error(run("info", foreign), "notes.st is not an MRC file")
    assert snapshot(dataset["dir"]) == snap


def test_info_old_header_warns_and_hdf5_member(dataset, tmp_path):
    h5py = pytest.importorskip("h5py")
    old = dataset["dir"] / "old.st"
    old.write_bytes(dataset["mrc"].read_bytes())
    with open(old, "r+b") as fh:  # pre-2014 style: no 'MAP ' id, no machine stamp
        fh.seek(208)
        fh.write(b"\0" * 8)
    proc = run("info", old, "--angles", dataset["dir"] / "ts.rawtlt")
    assert proc.returncode == 0, proc.stderr
    assert "fastalign: warning:" in proc.stderr and "old.st" in proc.stderr
    assert "old-style header" in proc.stdout

    h5 = tmp_path / "run.h5"
    with h5py.File(h5, "w") as f:
        f["exchange/data"] = dataset["series"]
        f["exchange/data"].attrs["angles_deg"] = dataset["angles"]
        f["exchange/flat"] = dataset["series"][:2]
    proc = run("info", f"{h5}:/exchange/data")
    assert proc.returncode == 0, proc.stderr
    assert "/exchange/data" in proc.stdout and "7 tilts x 8 (y) x 10 (x)" in proc.stdout
    assert_user_error(run("info", h5), "several datasets")


# ------------------------------------------------------------------ align: plumbing (stub)


def test_align_writes_all_outputs(dataset, tmp_path):
    record = tmp_path / "kwargs.json"
    proc = run("align", dataset["mrc"], stub=True, env={"STUB_RECORD": str(record)})
    assert proc.returncode == 0, proc.stderr
    out = dataset["dir"] / "ts_fastalign"
    assert sorted(os.listdir(out)) == sorted(ALIGN_OUTPUTS)
    assert stray_files(tmp_path) == []
    assert_inputs_unchanged(dataset)

    # .xf: one line per tilt, "1 0 0 1 DX DY" with DX, DY = -dx, -dy
    truth = stub_shifts(7)
    rows = np.loadtxt(out / "ts.xf")
    np.testing.assert_allclose(rows[:, :4], np.tile([1, 0, 0, 1], (7, 1)))
    np.testing.assert_allclose(rows[:, 4:], -truth, atol=1e-4)
    np.testing.assert_allclose(read_xf(out / "ts.xf"), truth, atol=1e-4)
    np.testing.assert_allclose(read_angles(out / "ts.tlt"), dataset["angles"], atol=1e-6)

    ali, _, meta = read_tilt_series(out / "ts.ali")
    np.testing.assert_array_equal(ali, dataset["series"])
    assert meta["pixel_size_A"] == pytest.approx(2.5)
    with mrcfile.open(out / "ts.rec") as m:
        assert m.is_volume() and m.data.shape == (8, 10, 10)
        assert float(m.voxel_size.x) == pytest.approx(2.5)
    for png in ("shifts.png", "slices.png", "convergence.png"):
        assert (out / png).read_bytes()[:8] == PNG_MAGIC

    rep = json.loads((out / "report.json").read_text())
    for key in ("inputs", "options", "shifts", "history", "timings", "versions", "machine"):
        assert key in rep
    assert rep["inputs"]["shape"] == [7, 8, 10]
    assert rep["inputs"]["pixel_size_A"] == 2.5
    np.testing.assert_allclose(rep["shifts"]["dx"], truth[:, 0])
    np.testing.assert_allclose(rep["shifts"]["dy"], truth[:, 1])
    assert len(rep["history"]) == 4 and rep["options"]["method"] == "autofocus"
    for pkg in ("fastalign", "numpy", "numba"):
        assert rep["versions"][pkg]
    assert rep["machine"]["cpu_count"] >= 1
    assert {"read_s", "align_s", "write_s", "total_s"} <= set(rep["timings"])

    kwargs = json.loads(record.read_text())["align"]["kwargs"]
    assert kwargs["progress"] is False  # stderr is a pipe here
    assert kwargs["method"] == "autofocus" and kwargs["recon"] == "sirt"
    assert "max_iter" not in kwargs and "tol" not in kwargs  # library defaults


def test_align_passes_options_and_quiet(dataset, tmp_path):
    record = tmp_path / "kwargs.json"
    out = tmp_path / "results" / "run1"
    angles = tmp_path / "other.tlt"
    write_tlt(angles, dataset["angles"] + 0.5)
    proc = run("align", dataset["mrc"], "--out", out, "--angles", angles, "--method", "xcorr",
               "--recon", "tv", "--max-iter", "7", "--tol", "0.01", "--threads", "1",
               "--quiet", "--nz", "6", stub=True, env={"STUB_RECORD": str(record)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    kwargs = json.loads(record.read_text())["align"]["kwargs"]
    assert kwargs == {"recon": "tv", "method": "xcorr", "axes": "xy", "progress": False,
                      "max_iter": 7, "tol": 0.01, "nz": 6}
    np.testing.assert_allclose(read_angles(out / "ts.tlt"), dataset["angles"] + 0.5,
                               atol=1e-6)
    rep = json.loads((out / "report.json").read_text())
    assert rep["options"]["threads"] == 1
    assert rep["inputs"]["angles_source"].endswith("other.tlt")


def test_align_refine_axis_and_center(dataset, tmp_path):
    # --refine / --axis-angle reach the library; the .xf carries the rotation R(-angle) and
    # the report the geometry
    record = tmp_path / "kwargs.json"
    out = tmp_path / "rot"
    proc = run("align", dataset["mrc"], "--out", out, "--refine", "shifts,axis_angle,center",
               "--axis-angle", "2.5", "--levels", "4,2", "-q", stub=True,
               env={"STUB_RECORD": str(record)})
    assert proc.returncode == 0, proc.stderr
    kwargs = json.loads(record.read_text())["align"]["kwargs"]
    assert kwargs["refine"] == ["shifts", "axis_angle", "center"]
    assert kwargs["levels"] == [4, 2]
    assert kwargs["axis_angle_deg"] == 2.5
    shifts, mats = read_xf(out / "ts.xf", return_matrices=True)
    a = np.deg2rad(2.5)
    np.testing.assert_allclose(mats[0], [[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]],
                               atol=1e-7)
    np.testing.assert_allclose(shifts, stub_shifts(len(shifts)), atol=1e-4)
    rep = json.loads((out / "report.json").read_text())
    assert rep["geometry"]["axis_angle_deg"] == 2.5
    assert rep["geometry"]["center_offset"] == 1.5


def test_existing_results_refused_unless_overwrite(dataset, tmp_path):
    assert run("align", dataset["mrc"], stub=True).returncode == 0
    out = dataset["dir"] / "ts_fastalign"
    before = snapshot(out)
    proc = run("align", dataset["mrc"], stub=True)
    assert_user_error(proc, "already holds results", "--overwrite")
    assert snapshot(out) == before
    assert_inputs_unchanged(dataset)
    proc = run("align", dataset["mrc"], "--overwrite", stub=True)
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(out)) == sorted(ALIGN_OUTPUTS)
    assert stray_files(tmp_path) == []


def test_output_equal_to_input_refused(dataset):
    d = dataset["dir"]
    ali = d / "ts.ali"
    write_aligned_stack(ali, dataset["series"])
    write_tlt(d / "ts.tlt", dataset["angles"])
    snap = snapshot(d)
    # <stem>.ali in --out would be the input itself: refused even with --overwrite
    assert_user_error(run("align", ali, "--out", d, "--overwrite"), "input file")
    # the angle file given is where <stem>.tlt would go
    assert_user_error(run("align", dataset["mrc"], "--angles", d / "ts.tlt", "--out", d,
                          "--overwrite"), "input file")
    rec = d / "odd.rec"  # a tilt series named like the reconstruction recon would write
    write_aligned_stack(rec, dataset["series"])
    snap = snapshot(d)
    assert_user_error(run("recon", rec, "--out", d, "--overwrite", "--method", "fbp",
                          "--angles", d / "ts.tlt"), "input file")
    assert snapshot(d) == snap


def test_angle_count_mismatch_and_non_numeric_angles(dataset, tmp_path):
    short = tmp_path / "short.tlt"
    write_tlt(short, dataset["angles"][:5])
    assert_user_error(run("align", dataset["mrc"], "--angles", short),
                      "short.tlt has 5 tilt angles", "has 7 images")
    bad = tmp_path / "bad.rawtlt"
    bad.write_text("-60\n-40\n-20\nnan-ish\n20\n40\n60\n")
    assert_user_error(run("align", dataset["mrc"], "--angles", bad), "bad.rawtlt, line 4")
    os.remove(dataset["dir"] / "ts.rawtlt")
    dataset["snapshot"].pop("ts.rawtlt")
    assert_user_error(run("align", dataset["mrc"]), "no tilt angles found", "--angles")
    assert not (dataset["dir"] / "ts_fastalign").exists()
    assert_inputs_unchanged(dataset)


def test_nonfinite_data_refused_or_filled(dataset, tmp_path):
    series = dataset["series"].copy()
    series[2, 3, 4] = np.nan
    series[5, 0, 0] = np.inf
    p = dataset["dir"] / "nan.mrc"
    write_aligned_stack(p, series)
    angles = dataset["dir"] / "ts.rawtlt"
    snap = snapshot(dataset["dir"])
    proc = run("align", p, "--angles", angles)
    assert_user_error(proc, "2 NaN/Inf values", "--fill-nonfinite")
    assert not (dataset["dir"] / "nan_fastalign").exists()

    record = tmp_path / "kwargs.json"
    proc = run("align", p, "--angles", angles, "--fill-nonfinite", stub=True,
               env={"STUB_RECORD": str(record)})
    assert proc.returncode == 0, proc.stderr
    assert "fastalign: warning: replaced 2 NaN/Inf values" in proc.stderr
    rec = json.loads(record.read_text())["align"]
    assert rec["all_finite"] is True
    finite = series[np.isfinite(series)]
    assert finite.min() <= rec["min"] and rec["max"] <= finite.max()
    now = snapshot(dataset["dir"])
    assert {k: now[k] for k in snap} == snap  # inputs untouched, outputs only added


def test_max_memory(dataset, capsys):
    proc = run("align", dataset["mrc"], "--max-memory", "1K")
    assert_user_error(proc, "exceeds --max-memory 1K", "estimated peak memory")
    assert_user_error(run_here(capsys, "align", dataset["mrc"], "--max-memory", "lots"),
                      "cannot read memory size")
    assert_user_error(run_here(capsys, "recon", dataset["mrc"], "--max-memory", "2K"),
                      "exceeds --max-memory 2K")
    assert not (dataset["dir"] / "ts_fastalign").exists()
    assert_inputs_unchanged(dataset)
    proc = run("align", dataset["mrc"], "--max-memory", "8G", "-q", stub=True)
    assert proc.returncode == 0, proc.stderr


def test_parse_size_and_memory_estimate():
    from fastalign.cli import estimate_peak_bytes, parse_size

    assert parse_size("8G") == 8 * 1024 ** 3
    assert parse_size("512M") == 512 * 1024 ** 2
    assert parse_size("1.5GiB") == int(1.5 * 1024 ** 3)
    assert parse_size("2kb") == 2048 and parse_size("100") == 100
    for bad in ("8X", "-1G", "", "G"):
        with pytest.raises(ValueError, match="memory size"):
            parse_size(bad)
    # the model of fastalign.memory at the commands' default options (nz = nx by default)
    from fastalign.memory import estimate_align_peak, estimate_recon_peak
    assert estimate_peak_bytes(10, 20, 30) == estimate_align_peak(
        (10, 20, 30), 30, intensity=True).total
    assert estimate_peak_bytes(10, 20, 30, 8, "recon") == estimate_recon_peak(
        (10, 20, 30), 8, "sirt").total


def _start_and_interrupt(args, env, marker, stub=True, timeout=120):
    cmd = ([sys.executable, STUB] if stub else [sys.executable, "-m", "fastalign"]) + [
        os.fspath(a) for a in args]
    full_env = dict(os.environ)
    full_env.update(env)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=full_env)
    try:
        deadline = time.monotonic() + timeout
        while not marker() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, f"finished before the signal: {proc.communicate()}"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out, err


def test_sigint_during_computation_leaves_nothing(dataset, tmp_path):
    started = tmp_path / "started"
    rc, out, err = _start_and_interrupt(
        ["align", dataset["mrc"]], {"STUB_SLEEP": "60", "STUB_STARTED": str(started)},
        started.exists)
    assert rc == 130, err
    assert "Traceback" not in err and "interrupted" in err
    assert not (dataset["dir"] / "ts_fastalign").exists()
    assert stray_files(tmp_path) == []
    assert_inputs_unchanged(dataset)


def test_sigint_while_writing_leaves_no_partial_results(dataset, tmp_path):
    started = tmp_path / "started"
    out_dir = tmp_path / "out"
    rc, out, err = _start_and_interrupt(
        ["align", dataset["mrc"], "--out", out_dir],
        {"STUB_SLEEP": "60", "STUB_STARTED": str(started), "STUB_HANG_IN_WRITE": "1"},
        started.exists)
    assert rc == 130, err
    assert "Traceback" not in err
    assert not out_dir.exists()  # staged files gone, and the directory it created
    assert stray_files(tmp_path) == []
    assert_inputs_unchanged(dataset)


# ------------------------------------------------------------------ recon and demo (stub)


def test_recon_plumbing(dataset, tmp_path, capsys):
    record = tmp_path / "kwargs.json"
    env = {"STUB_RECORD": str(record)}
    proc = run("recon", dataset["mrc"], "--n-iter", "5", "--nz", "4", stub=True, env=env)
    assert proc.returncode == 0, proc.stderr
    rec = dataset["dir"] / "ts_fastalign" / "ts.rec"
    with mrcfile.open(rec) as m:
        assert m.data.shape == (8, 4, 10) and float(m.voxel_size.x) == pytest.approx(2.5)
    info = json.loads(record.read_text())["sirt"]
    assert info["kwargs"] == {"n_iter": 5, "nz": 4}  # no progress=: sirt has no such option
    proc = run("recon", dataset["mrc"], stub=True, env=env)
    assert_user_error(proc, "already holds results")

    out = tmp_path / "tv"
    proc = run("recon", dataset["mrc"], "--method", "tv", "--lam", "0.1", "--out", out,
               stub=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(record.read_text())["tv"]["kwargs"] == {"lam": 0.1, "n_iter": 50,
                                                              "nz": None}
    assert (out / "ts.rec").exists()
    assert_user_error(run_here(capsys, "recon", dataset["mrc"], "--method", "tv", "--out",
                               tmp_path / "x"), "--lam")
    assert_user_error(run_here(capsys, "recon", dataset["mrc"], "--method", "fbp", "--n-iter",
                               "3", "--out", tmp_path / "x"), "--n-iter")
    assert not (tmp_path / "x").exists()
    assert stray_files(tmp_path) == []
    assert_inputs_unchanged(dataset)


def test_stub_signatures_match_the_library():
    # the CLI calls fastalign.sirt/tv/fbp/demo directly: the stand-ins must take the same
    # keywords, with the same defaults, or the stub runs would not test the real calls
    import inspect

    import cli_stub
    from fastalign.cli.recon import LIBRARY_N_ITER

    for name in ("sirt", "tv", "fbp", "demo"):
        real = inspect.signature(getattr(fastalign, name)).parameters
        for key, param in inspect.signature(getattr(cli_stub, name)).parameters.items():
            assert key in real, (name, key)
            assert param.kind == real[key].kind, (name, key)
            assert param.default == real[key].default, (name, key)
    for name in ("sirt", "tv"):  # the progress-bar total when --n-iter is not given
        assert inspect.signature(getattr(fastalign, name)).parameters["n_iter"].default \
            == LIBRARY_N_ITER


def test_demo_plumbing(tmp_path):
    proc = run("demo", "--out", tmp_path / "demo", stub=True)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "demo" / "demo.txt").read_text() == "progress=False\n"


# ------------------------------------------------------------------ with the real library


def _blob_phantom(ny, nz, nx, seed=0):
    """Smooth Gaussian blobs inside the central rows and a disc of radius nx/3."""
    rng = np.random.default_rng(seed)
    y, z, x = np.meshgrid(np.arange(ny), np.arange(nz) - (nz - 1) / 2,
                          np.arange(nx) - (nx - 1) / 2, indexing="ij")
    vol = np.zeros((ny, nz, nx), np.float64)
    for _ in range(12):
        cy = rng.uniform(0.3 * ny, 0.7 * ny)
        r = rng.uniform(0, nx / 3 - 6)
        phi = rng.uniform(0, 2 * np.pi)
        cz, cx = r * np.sin(phi), r * np.cos(phi)
        s = rng.uniform(1.5, 3.5)
        vol += rng.uniform(0.5, 1.5) * np.exp(-((x - cx) ** 2 + (z - cz) ** 2
                                                + (y - cy) ** 2) / (2 * s * s))
    return vol.astype(np.float32)


def test_end_to_end_alignment_recovers_shifts(tmp_path):
    ny, nz, nx = 16, 64, 64
    angles = np.arange(-60.0, 60.1, 3.0)
    ideal = fastalign.project(_blob_phantom(ny, nz, nx), angles)
    truth = np.random.default_rng(7).uniform(-2.0, 2.0, (angles.size, 2))
    measured = fastalign.simulate.fourier_shift(ideal, truth[:, 0], truth[:, 1])
    write_aligned_stack(tmp_path / "sim.st", measured, pixel_size_A=3.0)
    write_tlt(tmp_path / "sim.rawtlt", angles)
    snap = snapshot(tmp_path)
    proc = run("align", tmp_path / "sim.st", "--out", tmp_path / "out", "--quiet",
               "--max-iter", "60", "--tol", "0.001", timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert {k: v for k, v in snapshot(tmp_path).items() if k in snap} == snap
    est = read_xf(tmp_path / "out" / "sim.xf")
    err = remove_gauge(est - truth, angles)
    rms = np.sqrt(np.mean(err ** 2, axis=0))
    assert rms[0] < 0.1 and rms[1] < 0.1, (rms, err)
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    np.testing.assert_allclose(np.stack([rep["shifts"]["dx"], rep["shifts"]["dy"]], 1), est,
                               atol=1e-4)
    with mrcfile.open(tmp_path / "out" / "sim.rec") as m:
        assert float(m.voxel_size.x) == pytest.approx(3.0)


def test_sigint_during_real_alignment(tmp_path):
    rng = np.random.default_rng(1)
    angles = np.arange(-60.0, 60.1, 2.0)
    data = rng.random((angles.size, 48, 128)).astype(np.float32)
    write_aligned_stack(tmp_path / "big.mrc", data)
    write_tlt(tmp_path / "big.rawtlt", angles)
    snap = snapshot(tmp_path)
    cmd = [sys.executable, "-m", "fastalign", "align", str(tmp_path / "big.mrc"), "--out",
           str(tmp_path / "out"), "--max-iter", "100000", "--tol", "1e-12"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # printed just before the library call
        assert "aligning" in line, (line, proc.stderr.read() if proc.poll() is not None else "")
        time.sleep(2.0)
        assert proc.poll() is None, "alignment finished before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()
    assert stray_files(tmp_path) == []
    assert snapshot(tmp_path) == snap


def test_finalizer_errors_after_an_interrupt_are_quiet(capsys, monkeypatch):
    # Ctrl-C during a Numba compile can leave llvmlite objects whose __del__ fails later (even
    # at interpreter exit): after a signal those reports are noise; before one they are shown
    from fastalign.cli import signals

    class Broken:
        def __del__(self):
            raise AttributeError("_ptr")

    caught = []
    monkeypatch.setattr(sys, "unraisablehook", caught.append)
    Broken()  # a real UnraisableHookArgs from a failing finalizer
    monkeypatch.undo()
    assert caught and isinstance(caught[0].exc_value, AttributeError)
    monkeypatch.setattr(signals, "_PENDING_SIGNALS", [])
    signals.quiet_unraisable(caught[0])
    assert "AttributeError" in capsys.readouterr().err
    monkeypatch.setattr(signals, "_PENDING_SIGNALS", [signal.SIGINT])
    signals.quiet_unraisable(caught[0])
    assert capsys.readouterr().err == ""


@pytest.mark.slow  # each run compiles its Numba kernels afresh (~10-20 s)
@pytest.mark.parametrize("method, extra", [("fbp", []), ("sirt", ["--n-iter", "5"]),
                                           ("tv", ["--n-iter", "3", "--lam", "0.01"])])
def test_recon_with_real_library(dataset, tmp_path, method, extra):
    out = tmp_path / method
    proc = run("recon", dataset["mrc"], "--method", method, "--out", out, "-q", *extra)
    assert proc.returncode == 0, proc.stderr
    with mrcfile.open(out / "ts.rec") as m:
        assert m.data.shape == (8, 10, 10) and np.isfinite(m.data).all()
        assert float(m.voxel_size.x) == pytest.approx(2.5)
    assert_inputs_unchanged(dataset)


@pytest.mark.slow
def test_demo_with_real_library(tmp_path):
    proc = run("demo", "--out", tmp_path / "demo", "--size", "64", "--max-iter",
               "3", timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(tmp_path / "demo")) == ["demo.json", "demo.png"]
    # a short summary per reconstruction, not the whole report with every shift
    lines = [ln for ln in proc.stdout.splitlines() if "RMS shift error" in ln]
    assert [ln.split(":")[1].strip() for ln in lines] == ["sirt", "tv"]
    assert len(proc.stdout) < 1000
