"""Suspicious input is caught before anything is computed (issue 20).

Each check is one clear line: an error (``ValueError``/``OSError`` from the API, exit status
2 and ``fastalign: error: ...`` from the CLI) or a warning (``logging`` from the API,
``fastalign: warning: ...`` from the CLI).  "Before anything is computed" is asserted by
replacing the computing functions with ones that fail if called, never by timing.
"""
import importlib
import logging
import os
import subprocess
import sys
import time
import warnings
from collections import namedtuple

import mrcfile
import numpy as np
import pytest

import fastalign

from fastalign import _validate
from fastalign.io import write_aligned_stack, write_tlt, write_volume

autofocus = importlib.import_module("fastalign.align.autofocus")

HERE = os.path.dirname(os.path.abspath(__file__))
STUB = os.path.join(HERE, "cli_stub.py")
sys.path.insert(0, HERE)
from cli_stub import assert_user_error  # noqa: E402

DEG = np.linspace(-60.0, 60.0, 21)


def run(*args, stub=False):
    cmd = [sys.executable, STUB] if stub else [sys.executable, "-m", "fastalign"]
    env = dict(os.environ)
    env.pop("FASTALIGN_DEBUG", None)
    return subprocess.run(cmd + [os.fspath(a) for a in args], capture_output=True, text=True,
                          timeout=180, env=env)


def run_here(capsys, *args):
    from fastalign.cli import main

    code = main([os.fspath(a) for a in args])
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, captured.out, captured.err)




def series(n=21, ny=8, nx=10, seed=3):
    return np.random.default_rng(seed).random((n, ny, nx)).astype(np.float32) + 1.0


@pytest.fixture
def no_compute(monkeypatch):
    """Make every computing step of ``fastalign.align`` fail if it is reached."""
    def boom(*a, **k):
        raise AssertionError("computation started")
    monkeypatch.setattr(autofocus, "initial_total", boom)
    monkeypatch.setattr(autofocus, "drive", boom)
    monkeypatch.setattr(autofocus, "_baseline", boom)


Files = namedtuple("Files", "dir mrc angles")


def make_files(tmp_path, data, angles, name="ts"):
    d = tmp_path / "data"
    d.mkdir(exist_ok=True)
    write_aligned_stack(d / f"{name}.mrc", data, pixel_size_A=2.5)
    write_tlt(d / f"{name}.rawtlt", angles)
    return Files(d, d / f"{name}.mrc", d / f"{name}.rawtlt")


# ------------------------------------------------------------- 1. angles in radians


def test_align_refuses_angles_in_radians(no_compute):
    with pytest.raises(ValueError, match=r"radians.*np\.rad2deg"):
        fastalign.align(series(), np.deg2rad(DEG))


def test_angle_units_check_keeps_degree_series():
    _validate.check_angle_units(DEG)                              # a normal series
    _validate.check_angle_units(np.deg2rad(DEG)[:5])              # a handful of tilts: not judged
    _validate.check_angle_units(np.array([-0.4, 0.3, 0.8, 1.2, 2.0, 3.5]))  # beyond +-90 deg in rad
    with pytest.raises(ValueError, match="radians"):
        _validate.check_angle_units(np.deg2rad(np.linspace(-70.0, 70.0, 41)))


def test_cli_align_refuses_angles_in_radians(tmp_path):
    f = make_files(tmp_path, series(), DEG)
    rad = tmp_path / "rad.tlt"
    write_tlt(rad, np.deg2rad(DEG))
    out = tmp_path / "out"
    proc = run("align", f.mrc, "--angles", rad, "--out", out, stub=True)
    assert_user_error(proc, "radians", str(rad), "--angles")
    assert not out.exists()


def test_cli_info_says_angles_look_like_radians(tmp_path):
    f = make_files(tmp_path, series(), DEG)
    rad = tmp_path / "rad.tlt"
    write_tlt(rad, np.deg2rad(DEG))
    proc = run("info", f.mrc, "--angles", rad)
    assert proc.returncode == 0, proc.stderr
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("angles:")][0]
    assert "radians" in line
    proc = run("info", f.mrc)
    assert "radians" not in proc.stdout


# ------------------------------------------------------------- 2. constant data


@pytest.mark.parametrize("kind", ["constant", "per_image", "near_constant"])
def test_align_refuses_constant_data(no_compute, kind):
    n = DEG.size
    if kind == "constant":
        data = np.full((n, 8, 10), 3.0, np.float32)
    elif kind == "per_image":
        data = np.ones((n, 8, 10), np.float32) * np.arange(1, n + 1, dtype=np.float32)[:, None,
                                                                                         None]
    else:
        data = (1000.0 + 1e-5 * series(n)).astype(np.float32)
    with pytest.raises(ValueError, match="nothing to align"):
        fastalign.align(data, DEG)


def test_signal_check_keeps_real_data():
    _validate.check_signal(series())
    data = series()
    data[3] = 1.5                                       # one blank tilt is not "constant"
    _validate.check_signal(data)
    with pytest.raises(ValueError, match="all zero"):
        _validate.check_signal(np.zeros((3, 4, 4), np.float32))


def test_cli_align_refuses_constant_data(tmp_path):
    f = make_files(tmp_path, np.full((DEG.size, 8, 10), 7.0, np.float32), DEG)
    out = tmp_path / "out"
    proc = run("align", f.mrc, "--out", out, stub=True)
    assert_user_error(proc, "constant", "nothing to align")
    assert not out.exists()


# ------------------------------------------------------------- 3. two tilts


def test_align_two_tilts_logs_a_warning(monkeypatch, caplog):
    class Reached(Exception):
        pass

    def reached(*a, **k):
        raise Reached

    monkeypatch.setattr(autofocus, "initial_total", reached)
    with caplog.at_level(logging.WARNING, logger="fastalign.align"), pytest.raises(Reached):
        fastalign.align(series(2), [-30.0, 30.0])
    msgs = [r.getMessage() for r in caplog.records
            if r.name == "fastalign.align" and r.levelno == logging.WARNING]
    assert any("2 tilts" in m and "not determined" in m for m in msgs), msgs


def test_cli_align_two_tilts_warns(tmp_path):
    f = make_files(tmp_path, series(2), [-30.0, 30.0])
    proc = run("align", f.mrc, "--out", tmp_path / "out", "-q", stub=True)
    assert proc.returncode == 0, proc.stderr
    warn = [ln for ln in proc.stderr.splitlines() if ln.startswith("fastalign: warning:")]
    assert any("2 tilts" in ln and "not determined" in ln for ln in warn), proc.stderr


# ------------------------------------------------------------- 4. outputs checked first


@pytest.fixture
def cli_no_compute(monkeypatch):
    """The CLI must refuse before it reads the data or calls the library."""
    import fastalign.cli.align as cli_align
    import fastalign.cli.recon as cli_recon

    def boom(*a, **k):
        raise AssertionError("data loaded or computation started")
    for name in ("align", "sirt", "tv", "fbp"):
        monkeypatch.setattr(fastalign, name, boom)
    monkeypatch.setattr(cli_align, "load_input", boom)
    monkeypatch.setattr(cli_recon, "load_input", boom)


@pytest.mark.parametrize("command", ["align", "recon"])
def test_cli_refuses_out_below_a_file(tmp_path, capsys, cli_no_compute, command):
    f = make_files(tmp_path, series(), DEG)
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a directory")
    proc = run_here(capsys, command, f.mrc, "--out", blocker / "sub", "-q")
    assert_user_error(proc, "file.txt", "not a directory")
    assert blocker.read_text() == "not a directory"
    assert sorted(os.listdir(tmp_path)) == ["data", "file.txt"]


@pytest.mark.parametrize("command", ["align", "recon"])
def test_cli_refuses_unwritable_out(tmp_path, capsys, cli_no_compute, monkeypatch, command):
    f = make_files(tmp_path, series(), DEG)
    parent = tmp_path / "ro"
    parent.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access",
                        lambda p, mode, **k: False if os.fspath(p) == os.fspath(parent)
                        else real_access(p, mode, **k))
    proc = run_here(capsys, command, f.mrc, "--out", parent / "sub", "-q")
    assert_user_error(proc, "not writable", str(parent))
    assert os.listdir(parent) == []


@pytest.mark.parametrize("command", ["align", "recon"])
def test_cli_refuses_when_disk_is_too_full(tmp_path, capsys, cli_no_compute, monkeypatch,
                                           command):
    import shutil

    f = make_files(tmp_path, series(), DEG)
    usage = type(shutil.disk_usage(tmp_path))
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10 ** 9, 10 ** 9 - 100, 100))
    out = tmp_path / "out"
    proc = run_here(capsys, command, f.mrc, "--out", out, "-q")
    assert_user_error(proc, "free", str(tmp_path))
    assert not out.exists()


def test_cli_warns_when_free_space_is_unknown(tmp_path, monkeypatch, capsys):
    import shutil

    import fastalign.cli.align as cli_align

    def no_usage(p):
        raise OSError("not supported")
    monkeypatch.setattr(shutil, "disk_usage", no_usage)
    monkeypatch.setattr(cli_align, "load_input",
                        lambda *a, **k: (_ for _ in ()).throw(RuntimeError("stop here")))
    f = make_files(tmp_path, series(), DEG)
    from fastalign.cli import main

    with warnings.catch_warnings(), pytest.raises(RuntimeError, match="stop here"):
        warnings.simplefilter("always")               # shown by the CLI, not raised
        main(["align", os.fspath(f.mrc), "--out", os.fspath(tmp_path / "out"), "-q"])
    err = capsys.readouterr().err
    assert "fastalign: warning: could not determine the free space" in err, err


# ------------------------------------------------------------- 4b. memory pre-check


def _sparse_mrc(path, shape):
    """An MRC file of ``shape`` float32 whose data are a hole (no disk space used)."""
    n, ny, nx = shape
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(np.zeros((1, 1, 1), np.float32))
        m.header.nx, m.header.ny, m.header.nz = nx, ny, n
        m.header.mx, m.header.my, m.header.mz = nx, ny, n
    with open(path, "rb") as fh:
        header = fh.read(1024)
    with open(path, "wb") as fh:
        fh.write(header)
        fh.truncate(1024 + 4 * n * ny * nx)


@pytest.mark.parametrize("command", ["align", "recon"])
def test_cli_refuses_a_160_gb_series_before_reading_it(tmp_path, capsys, cli_no_compute,
                                                       monkeypatch, command):
    """A 172 GB (sparse) MRC: refused by the memory pre-check, with or without
    ``--max-memory``, the message naming ``--max-memory`` (the disk check is passed)."""
    import shutil

    d = tmp_path / "data"
    d.mkdir()
    _sparse_mrc(d / "big.mrc", (160, 16384, 16384))
    write_tlt(d / "big.rawtlt", np.linspace(-60, 60, 160))
    usage = type(shutil.disk_usage(tmp_path))
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10 ** 15, 0, 10 ** 15))
    out = tmp_path / "out"
    proc = run_here(capsys, command, d / "big.mrc", "--out", out, "-q")
    assert_user_error(proc, "estimated peak memory", "this machine's memory", "--max-memory")
    proc = run_here(capsys, command, d / "big.mrc", "--out", out, "--max-memory", "100G")
    assert_user_error(proc, "estimated peak memory", "exceeds --max-memory 100G")
    assert not out.exists()


def test_info_memory_estimate_is_the_precheck(tmp_path, capsys):
    """``info`` prints the model's estimates (fastalign.memory), the very numbers that
    ``--max-memory`` compares for ``align`` and ``recon``."""
    import re

    from fastalign.cli.inputs import format_bytes
    from fastalign.memory import estimate_align_peak, estimate_recon_peak

    f = make_files(tmp_path, series(21, 40, 60), DEG)
    shape = (21, 40, 60)
    proc = run_here(capsys, "info", f.mrc, "--nz", "24", "--headers-only")
    assert proc.returncode == 0, proc.stderr
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("memory:")][0]
    a_info, r_info = re.search(r"peak (\S+ \S+) for align, (\S+ \S+) for recon", line).groups()
    assert a_info == format_bytes(estimate_align_peak(shape, 24, intensity=True).total)
    assert r_info == format_bytes(estimate_recon_peak(shape, 24).total)
    for command, expected in (("align", a_info), ("recon", r_info)):
        proc = run_here(capsys, command, f.mrc, "--nz", "24", "--max-memory", "1K",
                        "--out", tmp_path / "o")
        assert_user_error(proc, f"estimated peak memory {expected} ")


# ------------------------------------------------------------- 4c. signals


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_cli_signal_during_alignment_exits_leaving_nothing(tmp_path, signame):
    """The real ``fastalign align`` (no stand-ins), signalled while it aligns: exit status
    143/130 within a generous 10 s (bench/signal_latency.py measures the latency), no output
    directory, no temporary anywhere."""
    import signal

    f = make_files(tmp_path, series(31, 48, 48), np.linspace(-60.0, 60.0, 31))
    out = tmp_path / "out"
    env = dict(os.environ)
    env.pop("FASTALIGN_DEBUG", None)
    proc = subprocess.Popen([sys.executable, "-m", "fastalign", "align", os.fspath(f.mrc),
                             "--out", os.fspath(out), "--max-iter", "500", "--tol", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()              # printed just before fastalign.align
        assert line.startswith("fastalign: aligning"), (line, proc.stderr.read())
        time.sleep(1.0)
        assert proc.poll() is None, "finished before the signal"
        t0 = time.monotonic()
        proc.send_signal(getattr(signal, signame))
        _, err = proc.communicate(timeout=60)
        latency = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == (143 if signame == "SIGTERM" else 130), err
    assert "Traceback" not in err
    assert latency < 10.0, latency
    assert not out.exists()
    leftovers = [os.path.join(r, x) for r, ds, fs in os.walk(tmp_path) for x in ds + fs
                 if x.endswith(".tmp") or x.startswith(".fastalign-staging")]
    assert leftovers == []


# ------------------------------------------------------------- 5. byte-identical files


@pytest.mark.skipif(__import__("numba").config.NUMBA_NUM_THREADS < 2,
                    reason="needs NUMBA_NUM_THREADS >= 2")
def test_cli_outputs_byte_identical_for_1_and_2_threads(tmp_path, capsys):
    """``fastalign align --threads 1`` and ``--threads 2`` (Numba's thread count, as
    NUMBA_NUM_THREADS=1 and 2): the same bytes in every data file (stack, volume,
    transforms, angles; report.json holds timings, the figures are not compared)."""
    import numba

    f = make_files(tmp_path, series(21, 24, 32), DEG)
    before = numba.get_num_threads()
    try:
        for threads in ("1", "2"):
            with warnings.catch_warnings():
                warnings.simplefilter("always")           # shown by the CLI, not raised
                proc = run_here(capsys, "align", f.mrc, "--out", tmp_path / f"out{threads}",
                                "--max-iter", "2", "--levels", "1", "--nz", "16",
                                "--threads", threads, "-q")
            assert proc.returncode == 0, proc.stderr
    finally:
        numba.set_num_threads(before)
    names = sorted(n for n in os.listdir(tmp_path / "out1")
                   if n.endswith((".ali", ".rec", ".xf", ".aln", ".tlt")))
    assert names == ["ts.ali", "ts.aln", "ts.rec", "ts.tlt", "ts.xf"]
    for name in names:
        assert (tmp_path / "out1" / name).read_bytes() == \
            (tmp_path / "out2" / name).read_bytes(), name


def test_mrc_output_is_byte_identical(tmp_path):
    vol = series(6, 7, 8)
    write_volume(tmp_path / "a.rec", vol, voxel_size_A=2.5)
    t = time.time()
    time.sleep(1.05 - (t - int(t)))                     # cross a second boundary
    write_volume(tmp_path / "b.rec", vol, voxel_size_A=2.5)
    assert (tmp_path / "a.rec").read_bytes() == (tmp_path / "b.rec").read_bytes()
    with mrcfile.open(tmp_path / "a.rec") as m:
        labels = [bytes(lb).strip().decode() for lb in m.header.label[:m.header.nlabl]]
    assert labels == [f"fastalign {fastalign.__version__}",
                      "volume: sections y, rows z, columns x"]
