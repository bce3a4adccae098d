"""Run ``fastalign.cli.main`` with stand-ins for the library calls (test helper).

The CLI tests use this to exercise the command-line plumbing (reading, checks, outputs,
atomicity, signals) independently of the numerical code, which has its own tests.  Usage::

    python tests/cli_stub.py align data.mrc --out out

Environment variables:

``STUB_RECORD``
    Path of a JSON file receiving, per stand-in function name, the keyword arguments and a
    summary of the data it received.
``STUB_SLEEP``
    Seconds the stand-in ``align``/``sirt`` sleeps (in small steps) before returning.
``STUB_STARTED``
    Path of a file created when the stand-in computation starts (for signal tests).
``STUB_HANG_IN_WRITE``
    If set, ``fastalign.report.plot_convergence`` (called after several outputs have been
    staged) creates ``STUB_STARTED`` and sleeps ``STUB_SLEEP`` seconds first.
"""
import json
import os
import sys
import time

import numpy as np

import fastalign
import fastalign.report
from fastalign.align.result import AlignResult


def _record(name, data, kwargs):
    path = os.environ.get("STUB_RECORD")
    if not path:
        return
    info = {"function": name, "kwargs": {k: v for k, v in kwargs.items() if k != "callback"},
            "has_callback": kwargs.get("callback") is not None,
            "shape": list(data.shape), "dtype": str(data.dtype),
            "all_finite": bool(np.isfinite(data).all()),
            "min": float(np.min(data)), "max": float(np.max(data))}
    records = {}
    if os.path.exists(path):
        with open(path) as fh:
            records = json.load(fh)
    records[name] = info
    with open(path, "w") as fh:
        json.dump(records, fh)


def _pause():
    started = os.environ.get("STUB_STARTED")
    if started:
        with open(started, "w") as fh:
            fh.write("started")
    deadline = time.monotonic() + float(os.environ.get("STUB_SLEEP", "0"))
    while time.monotonic() < deadline:
        time.sleep(0.02)


def stub_shifts(n):
    """The shifts the stand-in ``align`` reports: dx = 0.25 k - 1, dy = -0.125 k."""
    k = np.arange(n, dtype=np.float64)
    return np.stack([0.25 * k - 1.0, -0.125 * k], axis=1)


def align(tilt_series, angles_deg, **kwargs):
    _record("align", tilt_series, kwargs)
    if not os.environ.get("STUB_HANG_IN_WRITE"):
        _pause()
    n, ny, nx = tilt_series.shape
    nz = kwargs.get("nz") or nx
    volume = np.zeros((ny, nz, nx), np.float32)
    volume[:, nz // 4: 3 * nz // 4, nx // 4: 3 * nx // 4] = 1.0
    history = [{"iteration": i + 1, "level": 2 if i < 2 else 1, "max_update": 2.0 ** -i,
                "residual": 0.5 / (i + 1), "time_s": 0.01} for i in range(4)]
    return AlignResult(shifts=stub_shifts(n), aligned=tilt_series.copy(), volume=volume,
                       history=history, converged=True, angles_deg=np.asarray(angles_deg),
                       method=kwargs.get("method", "autofocus"), options=dict(kwargs),
                       timings={"total_s": 0.01},
                       axis_angle_deg=float(kwargs.get("axis_angle_deg") or 0.0),
                       center_offset=1.5 if "center" in kwargs.get("refine", ()) else 0.0)


def _iterate(name, tilt_series, kwargs):
    _record(name, tilt_series, kwargs)
    _pause()
    for k in range(3 if kwargs.get("callback") else 0):
        kwargs["callback"](k, None, {})
    n, ny, nx = tilt_series.shape
    nz = kwargs.get("nz") or nx
    return np.full((ny, nz, nx), 0.5, np.float32)


# The library's keyword signatures (the keywords the CLI passes, with the library's defaults;
# tests/test_cli.py checks them against the real functions): the CLI calls them directly.
def sirt(tilt_series, angles_deg, *, n_iter=50, nz=None, callback=None):
    return _iterate("sirt", tilt_series, {"n_iter": n_iter, "nz": nz, "callback": callback})


def tv(tilt_series, angles_deg, *, lam, n_iter=50, nz=None, callback=None):
    return _iterate("tv", tilt_series, {"lam": lam, "n_iter": n_iter, "nz": nz,
                                        "callback": callback})


def fbp(tilt_series, angles_deg, *, filter="ramp", nz=None):
    _record("fbp", tilt_series, {"filter": filter, "nz": nz})
    n, ny, nx = tilt_series.shape
    return np.full((ny, nz or nx, nx), 0.5, np.float32)


def demo(out_dir="fastalign_demo", *, n=128, max_iter=40, overwrite=False, progress=False):
    os.makedirs(out_dir, exist_ok=overwrite)
    with open(os.path.join(out_dir, "demo.txt"), "w") as fh:
        fh.write(f"progress={progress}\n")
    return {"errors_px": {}, "timings_s": {}, "out_dir": os.path.abspath(out_dir)}


def _hanging(func):
    def wrapper(*args, **kwargs):
        _pause()
        return func(*args, **kwargs)
    return wrapper


def install():
    """Replace the library calls the CLI makes by the stand-ins above."""
    fastalign.align = align
    fastalign.sirt = sirt
    fastalign.tv = tv
    fastalign.fbp = fbp
    fastalign.demo = demo
    if os.environ.get("STUB_HANG_IN_WRITE"):
        fastalign.report.plot_convergence = _hanging(fastalign.report.plot_convergence)


def assert_user_error(proc, *fragments):
    """Exit status 2, exactly one ``fastalign: error:`` line (the last), no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("fastalign: error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], proc.stderr
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])


if __name__ == "__main__":
    install()
    from fastalign.cli import main

    sys.exit(main(sys.argv[1:]))
