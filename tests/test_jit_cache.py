"""The on-disk JIT cache (fastalign/_config.py): on by default, keyed, bit-identical to fresh code.

Each case runs small kernels in fresh interpreters (a cache is per process) with a temporary
``XDG_CACHE_HOME``: a first process compiles and writes the cache, a second one loads every
kernel from it, and both give the same bytes as a process with ``FASTALIGN_CACHE=0``.  The
kernels are the two whose cached and fresh results differed while ``reassoc`` was among the
fastmath flags (``fista.extrapolate_residual``, ``tv.chambolle_3d``: the loaded copy of a
parallel loop body is optimised twice), plus ``vector.diff_sumsq`` (a reduction).
"""
import json
import os
import stat
import subprocess
import sys

import pytest

_SCRIPT = r"""
import hashlib, json
import numpy as np
import numba
from fastalign import _config
from fastalign.kernels import fista, tv, vector

rng = np.random.default_rng(0)
ny, nz, nx = 3, 17, 23
f = rng.standard_normal((ny, nz, nx)).astype(np.float32)
g = rng.standard_normal((ny, nz, nx)).astype(np.float32)
b = rng.standard_normal((ny, nz, nx)).astype(np.float32)
out = np.empty_like(f)
fista.extrapolate_residual(out, f, g, b, 0.7123, g * np.float32(0.3))
p = np.zeros((ny, 3, nz, nx), np.float32)
u = np.empty_like(f)
tv.chambolle_3d(f, p, u, 0.3, 1 / 6, 5, True)
rowsum = np.zeros(ny * nz)
vector.diff_sumsq(f, g, rowsum)
digest = hashlib.sha256(b"".join(a.tobytes() for a in (out, p, u, rowsum))).hexdigest()
kernels = (fista.extrapolate_residual, tv.chambolle_3d, vector.diff_sumsq)
print("JIT_CACHE_JSON " + json.dumps({
    "digest": digest,
    "hits": [sum(k.stats.cache_hits.values()) for k in kernels],
    "misses": [sum(k.stats.cache_misses.values()) for k in kernels],
    "paths": [k.stats.cache_path for k in kernels],
    "cache": _config.CACHE, "cache_dir": _config.CACHE_DIR,
    "layer": _config.THREADING_LAYER, "numba_layer": numba.threading_layer(),
}))
"""


def _run(env_extra, threads=2, log=False):
    """Run ``_SCRIPT`` in a new interpreter (``log``: with INFO logging to stderr)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("FASTALIGN_CACHE", "NUMBA_CACHE_DIR", "XDG_CACHE_HOME")}
    env.update(env_extra, NUMBA_NUM_THREADS=str(threads))
    script = ("import logging; logging.basicConfig(level=logging.INFO)\n" if log else "") + _SCRIPT
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("JIT_CACHE_JSON ")]
    assert line, proc.stdout + proc.stderr
    return json.loads(line[-1][len("JIT_CACHE_JSON "):]), proc.stderr


@pytest.fixture(scope="module")
def fresh():
    """The reference: every kernel compiled in-process, no cache."""
    res, _ = _run({"FASTALIGN_CACHE": "0"})
    assert res["cache"] is False and res["cache_dir"] is None
    assert res["paths"] == [None, None, None] and res["hits"] == [0, 0, 0]
    return res


def test_cache_on_by_default_and_bit_identical(fresh, tmp_path):
    xdg = tmp_path / "xdg"
    # the first process compiles (1 thread) and writes the cache ...
    first, _ = _run({"XDG_CACHE_HOME": str(xdg)}, threads=1)
    assert first["cache"] is True
    assert first["cache_dir"].startswith(str(xdg / "fastalign" / "numba-"))
    key = os.path.basename(first["cache_dir"])
    assert f"-{first['layer']}-" in key and first["layer"] == first["numba_layer"]
    assert first["hits"] == [0, 0, 0] and first["misses"] == [1, 1, 1]
    assert all(p.startswith(first["cache_dir"]) for p in first["paths"])
    index = [n for _, _, files in os.walk(first["cache_dir"]) for n in files
             if n.endswith(".nbi")]
    assert any(n.startswith("tv.chambolle_3d-") for n in index), index
    # ... the second (2 threads) loads every kernel from it
    second, _ = _run({"XDG_CACHE_HOME": str(xdg)}, threads=2)
    assert second["cache_dir"] == first["cache_dir"]
    assert second["hits"] == [1, 1, 1] and second["misses"] == [0, 0, 0]
    assert first["digest"] == second["digest"] == fresh["digest"]


def test_numba_cache_dir_is_the_base(fresh, tmp_path):
    res, _ = _run({"NUMBA_CACHE_DIR": str(tmp_path / "nc"),
                   "XDG_CACHE_HOME": str(tmp_path / "xdg")})
    assert res["cache_dir"].startswith(str(tmp_path / "nc" / "fastalign" / "numba-"))
    assert not (tmp_path / "xdg").exists()
    assert res["digest"] == fresh["digest"]


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root writes into read-only directories")
def test_unwritable_cache_dir_falls_back(fresh, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        res, err = _run({"XDG_CACHE_HOME": str(ro)})
    finally:
        ro.chmod(stat.S_IRWXU)
    assert res["cache"] is False and res["paths"] == [None, None, None]
    assert res["digest"] == fresh["digest"]


def test_unwritable_cache_path_falls_back(fresh, tmp_path):
    """A cache base that is a file (unwritable even for root): no cache, same result."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    res, err = _run({"XDG_CACHE_HOME": str(blocker)}, log=True)
    assert res["cache"] is False and res["cache_dir"] is None
    assert res["paths"] == [None, None, None] and res["hits"] == [0, 0, 0]
    assert "JIT cache disabled" in err
    assert res["digest"] == fresh["digest"]


def test_cache_key_changes_with_policy(monkeypatch):
    """A change of flags or threading layer gives another directory (stale code never loads)."""
    from fastalign import _config

    key = _config._cache_key()
    assert key.startswith("numba-") and f"-{_config.THREADING_LAYER}-" in key
    monkeypatch.setattr(_config, "FASTMATH", _config.FASTMATH | {"reassoc"})
    assert _config._cache_key() != key
    monkeypatch.setattr(_config, "FASTMATH", _config.FASTMATH - {"reassoc"})
    assert _config._cache_key() == key
    monkeypatch.setattr(_config, "THREADING_LAYER", "workqueue")
    assert _config._cache_key() != key
