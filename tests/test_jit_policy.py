"""JIT policy of the kernels layer (STYLE.md "JIT options from one module", fastalign/_config.py).

Every Numba dispatcher defined in a module of ``fastalign/kernels/`` (found by walking the
package, not from a list) must

* be nopython, with ``error_model="numpy"``;
* use the fastmath flag set ``fastalign._config.FASTMATH`` -- never ``fastmath=True`` (all
  flags, including ``nnan``/``ninf``/``reassoc``), an ad-hoc set, or no flags (``reassoc``
  would make cached and freshly compiled code differ: ``_config`` docstring);
* and, after a small representative workload (project/backproject on both schedules, SIRT with
  a mask, 2-D and 3-D TV, FBP, the TV prox, centre of mass, cross-correlation, and align with
  SIRT/TV and both estimators), have been compiled at least once, for at most the number of
  signatures below, with no ``nnan``/``ninf``/``reassoc``/``fast`` flag on any instruction of
  its LLVM IR.

Signature counts (measured with numba 0.68, 1 and 2 threads): every *parallel* kernel -- the
entry points the library calls from Python -- compiles exactly one signature, because the
library coerces every array to C-contiguous float32 (complex64/complex128/float64 where
documented) at the boundary.  Serial helpers called from kernels compile two where the callers
differ on purpose: an index from a ``prange`` loop is ``uint64`` and one from a ``range`` loop
is ``int64`` (``_bcast``, ``_next_index``, ``_finish_angle``, ``_load_proj_angle``,
``_u_slice_3d``, ``_p_slice_3d``); a literal ``0`` offset (``_zero``); ``None`` for the missing
neighbour row at a boundary, which removes the branch at compile time (``_u_row``, ``_p_row``,
``_row_tv``); the ``fused`` literal of ``_prox_slice`` (prox alone / FISTA-fused).  A third
signature means an argument type drifted (e.g. an int32 index or a non-contiguous array) and a
kernel is compiled twice for the same work.
"""
import importlib
import json
import os
import pkgutil
import re
import subprocess
import sys
import types

import numba
import pytest
from numba.core.cpu import FastMathOptions
from numba.core.dispatcher import Dispatcher

import fastalign.kernels
from fastalign import _config

# Serial helpers compiled for two signatures by design (module docstring).
TWO_SIGNATURES = {
    "vector._bcast", "tv._next_index", "projector._finish_angle",
    "projector._load_proj_angle", "tv._u_slice_3d", "tv._p_slice_3d", "projector._zero",
    "tv._u_row", "tv._p_row", "tv._row_tv", "tv._prox_slice",
}
FORBIDDEN_FLAGS = {"nnan", "ninf", "reassoc", "fast"}


def kernel_dispatchers(modules):
    """``{"module.function": dispatcher}`` for the Numba dispatchers *defined* in ``modules``
    (``{short name: module}``); dispatchers imported from elsewhere are skipped."""
    found = {}
    for short, mod in modules.items():
        for name, obj in vars(mod).items():
            if isinstance(obj, Dispatcher) and obj.py_func.__module__ == mod.__name__:
                found[f"{short}.{name}"] = obj
    return found


def kernels_package_modules(package=fastalign.kernels):
    return {m.name: importlib.import_module(f"{package.__name__}.{m.name}")
            for m in pkgutil.iter_modules(package.__path__)}


def policy_violations(name, disp, expected_flags):
    """Reasons why ``disp`` breaks the JIT policy (empty list: it follows it)."""
    opts = disp.targetoptions
    out = []
    fm = opts.get("fastmath")
    if not isinstance(fm, (set, dict)):
        out.append(f"{name}: fastmath={fm!r} is not an explicit flag set from fastalign._config")
    else:
        flags = FastMathOptions(fm).flags
        if flags & FORBIDDEN_FLAGS:
            out.append(f"{name}: fastmath flags {sorted(flags & FORBIDDEN_FLAGS)} forbidden")
        if flags != set(expected_flags):
            out.append(f"{name}: fastmath {sorted(flags)} != {sorted(expected_flags)}")
    if opts.get("nopython") is not True:
        out.append(f"{name}: not nopython")
    if opts.get("error_model") != "numpy":
        out.append(f"{name}: error_model={opts.get('error_model')!r}, expected 'numpy'")
    return out


def expected_flags(name):
    return _config.FASTMATH


# --------------------------------------------------------------------------- static policy

def test_config_flag_sets():
    assert not (_config.FASTMATH & FORBIDDEN_FLAGS)
    assert _config.FASTMATH == {"nsz", "arcp", "contract", "afn"}
    with pytest.raises(TypeError, match="fastmath"):
        _config.jit(fastmath=True)
    with pytest.raises(TypeError, match="fastmath"):
        _config.jit(lambda x: x, fastmath={"nsz"})


def test_every_kernel_follows_the_policy():
    kernels = kernel_dispatchers(kernels_package_modules())
    # discovery works: the entry points of every kernels module are found
    for name in ("projector.forward_blocks", "projector.back_within", "shift.cross_power_rows",
                 "shift.apply_phase_ramps", "tv.chambolle_2d", "sirt.sirt_update",
                 "vector.sumsq", "fista.fista_step", "fbp.filter_rows", "com.row_moments",
                 "xcorr.upsampled_xcorr"):
        assert name in kernels, name
    assert len(kernels) >= 50
    problems = [p for n, d in sorted(kernels.items())
                for p in policy_violations(n, d, expected_flags(n))]
    assert not problems, "\n".join(problems)


def test_policy_check_catches_rogue_kernels():
    """The check above must fail for a kernel with its own flags."""
    mod = types.ModuleType("fastalign.kernels.rogue")

    def body(x):
        return x + 1.0

    rogue = {
        "all_fast": numba.njit(fastmath=True),
        "own_set": numba.njit(fastmath={"nnan", "nsz"}),
        "no_flags": numba.njit,
        "fast_dict": numba.njit(fastmath={"fast": True}),
        "object_mode": numba.jit(forceobj=True),
        "other_error_model": numba.njit(fastmath=set(_config.FASTMATH), error_model="python"),
    }
    for name, deco in rogue.items():
        f = types.FunctionType(body.__code__, {}, name)
        f.__module__ = mod.__name__
        setattr(mod, name, deco(f))
    good = types.FunctionType(body.__code__, {}, "good")
    good.__module__ = mod.__name__
    mod.good = _config.jit(good)
    mod.imported = fastalign.kernels.vector.copy3          # defined elsewhere: not collected
    found = kernel_dispatchers({"rogue": mod})
    assert set(found) == {f"rogue.{n}" for n in rogue} | {"rogue.good"}
    for name in rogue:
        assert policy_violations(name, found[f"rogue.{name}"], _config.FASTMATH), name
    assert not policy_violations("good", found["rogue.good"], _config.FASTMATH)
    # reassociation is flagged too
    with_reassoc = numba.njit(fastmath=set(_config.FASTMATH) | {"reassoc"},
                              error_model="numpy")(body)
    assert policy_violations("with_reassoc", with_reassoc, _config.FASTMATH)


# --------------------------------------------------------------------------- compiled code

_WORKLOAD = r"""
import json, re, sys
import numpy as np
import fastalign
from fastalign.recon import denoise_tv
from fastalign.testing import run_with_threads
sys.path.insert(0, sys.argv[1])
import test_jit_policy as P

rng = np.random.default_rng(0)
vol = np.zeros((4, 16, 16), np.float32)
vol[:, 4:12, 3:13] = rng.random((4, 8, 10))
ang = np.arange(-60.0, 60.1, 6.0)
b = fastalign.project(vol, ang)
data = fastalign.fourier_shift(b, rng.uniform(-1, 1, (ang.size, 2)))
import numba
for threads in ([1, 2] if numba.config.NUMBA_NUM_THREADS >= 2 else [1]):
    # 1 thread: parallel over blocks of slices; 2 threads, 4 slices: within a block
    run_with_threads(fastalign.project, threads, vol, ang)
    run_with_threads(fastalign.backproject, threads, b, ang)
fastalign.sirt(b, ang, n_iter=2, mask="circle")
fastalign.tv(b, ang, lam=0.1, n_iter=2)
fastalign.tv(b, ang, lam=0.1, n_iter=2, tv="3d")
fastalign.fbp(b, ang)
denoise_tv(vol, 0.1, n_iter=2)
denoise_tv(vol, 0.1, n_iter=2, tv="3d")
fastalign.com_shifts(data, ang)
fastalign.xcorr_shifts(data, ang)
kw = dict(axes="xy", levels=[1], max_iter=2, final_iter=1)
fastalign.align(data, ang, recon="sirt", **kw)
fastalign.align(data, ang, recon="tv", **kw)
fastalign.align(data, ang, recon="sirt", estimator="gradient", **kw)

fp_op = re.compile(r"=\s*(?:tail\s+)?(?:fadd|fsub|fmul|fdiv|frem|fneg|fcmp|call|select|phi)"
                   r"\b([^\n]*)")
report = {}
for name, disp in P.kernel_dispatchers(P.kernels_package_modules()).items():
    bad = set()
    for ir in disp.inspect_llvm().values():
        for m in fp_op.finditer(ir):
            bad |= set(re.findall(r"\b(nnan|ninf|reassoc|fast)\b", m.group(1)))
    report[name] = {"signatures": [str(s) for s in disp.signatures], "bad_flags": sorted(bad)}
print("JIT_POLICY_JSON " + json.dumps(report))
"""


def start_workload():
    """Start :data:`_WORKLOAD` in a fresh interpreter with the cache off; returns
    ``(process, stdout file, stderr file)``.  tests/conftest.py starts it as soon as this
    module's tests are collected: its ~45 s of compilation on one core then overlap the
    first tests instead of adding to the run."""
    import tempfile
    env = dict(os.environ, FASTALIGN_CACHE="0")
    out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
    proc = subprocess.Popen([sys.executable, "-c", _WORKLOAD, os.path.dirname(__file__)],
                            stdout=out, stderr=err, text=True, env=env)
    return proc, out, err


@pytest.fixture(scope="module")
def compiled():
    """Per kernel: the signatures compiled by the workload and any forbidden IR flags, from a
    fresh interpreter (signature counts must not depend on what other tests compiled)."""
    import conftest
    proc, out, err = conftest.BACKGROUND.pop("jit_policy", None) or start_workload()
    try:
        proc.wait(timeout=1200)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    finally:
        out.close()
        err.close()
    assert proc.returncode == 0, stderr
    line = [ln for ln in stdout.splitlines() if ln.startswith("JIT_POLICY_JSON ")]
    assert line, stdout + stderr
    return json.loads(line[-1][len("JIT_POLICY_JSON "):])


def test_workload_compiles_every_kernel_once_or_twice(compiled):
    kernels = kernel_dispatchers(kernels_package_modules())
    assert set(compiled) == set(kernels)
    unused = sorted(n for n, r in compiled.items() if not r["signatures"])
    assert not unused, (f"kernels not compiled by the workload (extend _WORKLOAD, or remove "
                        f"dead kernels): {unused}")
    too_many = {n: r["signatures"] for n, r in compiled.items()
                if len(r["signatures"]) > (2 if n in TWO_SIGNATURES else 1)}
    assert not too_many, json.dumps(too_many, indent=1)
    # the parallel entry points are all single-signature
    for n, d in kernels.items():
        if d.targetoptions.get("parallel"):
            assert n not in TWO_SIGNATURES and len(compiled[n]["signatures"]) == 1, n


def test_compiled_code_has_no_nnan_ninf(compiled):
    bad = {n: r["bad_flags"] for n, r in compiled.items() if r["bad_flags"]}
    assert not bad, bad


def test_ir_flag_scan_detects_forbidden_flags():
    """The IR scan of the workload finds ``fast``/``nnan`` flags when they are there."""
    def div(x, y):
        return x / y

    f = numba.njit(fastmath=True)(div)
    f(1.0, 2.0)
    ir = next(iter(f.inspect_llvm().values()))
    assert re.search(r"=\s*fdiv\s+fast\b", ir)
    g = _config.jit(div, cache=False)    # cached code has no IR to inspect
    g(1.0, 2.0)
    ir = next(iter(g.inspect_llvm().values()))
    assert re.search(r"=\s*fdiv\s+(?:\w+\s+)*arcp\b", ir)
    assert not re.search(r"=\s*fdiv\s+(?:\w+\s+)*(?:nnan|ninf|reassoc|fast)\b", ir)
