"""The import structure: no cycles, and imports pointing one way (kernels -> library -> edge).

The graphs are built from the source with :mod:`ast` (nothing is imported), counting every
import statement, also those inside functions: a lazy import hides a cycle from the
interpreter, not from a reader.
"""
import ast
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: known edges exempt from the cycle check, each with the change that removes it
ALLOWED_EDGES = set()

#: the library layer and the edge layer (DESIGN.md, STYLE.md)
EDGE = ("fastalign.io", "fastalign.cli", "fastalign.distributed", "fastalign.report",
        "fastalign.demo")
ALGORITHMS = ("fastalign.align", "fastalign.recon", "fastalign.distributed",
              "fastalign.operator", "fastalign.kernels")


def _modules(base, package=None):
    """``{module name: path}`` of every ``.py`` file under ``base`` (``package`` prefixes
    the names; ``None``: ``base`` is a directory on ``sys.path``)."""
    out = {}
    for root, dirs, files in os.walk(base):
        dirs[:] = [d for d in dirs if not d.startswith((".", "__pycache__"))]
        for f in files:
            if not f.endswith(".py"):
                continue
            rel = os.path.relpath(os.path.join(root, f), base)[:-3].split(os.sep)
            if rel[-1] == "__init__":
                rel = rel[:-1]
            name = ".".join(([package] if package else []) + rel)
            if name:
                out[name] = os.path.join(root, f)
    return out


def _is_package(path):
    return os.path.basename(path) == "__init__.py"


def _imports(name, path, known):
    """Names in ``known`` that the module ``name`` (file ``path``) imports."""
    with open(path, encoding="utf-8") as fh:
        tree = ast.parse(fh.read(), path)
    pkg = name if _is_package(path) else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = pkg.split(".") if pkg else []
                parts = parts[:len(parts) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module
            # ``from pkg import sub`` imports the module pkg.sub when there is one
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                       for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:  # ``import a.b.c`` of an attribute: nearest module
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def import_graph(base, package=None):
    """``{module: set of modules it imports}`` for the sources under ``base``."""
    mods = _modules(base, package)
    return {m: _imports(m, p, mods) for m, p in mods.items()}


def find_cycle(graph, allowed=()):
    """One import cycle as a list of modules, or None (edges in ``allowed`` ignored)."""
    state, stack = {}, []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if (m, n) in allowed:
                continue
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state:
                cycle = visit(n)
                if cycle:
                    return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            cycle = visit(m)
            if cycle:
                return cycle
    return None


def _under(module, prefixes):
    return any(module == p or module.startswith(p + ".") for p in prefixes)


@pytest.fixture(scope="module")
def graph():
    return import_graph(os.path.join(ROOT, "fastalign"), "fastalign")


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"a"}}, allowed={("b", "a")}) is None
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_package_has_no_import_cycle(graph):
    assert "fastalign.cli.main" in graph and "fastalign.io.slabs" in graph
    cycle = find_cycle(graph, ALLOWED_EDGES)
    assert cycle is None, " -> ".join(cycle)


def test_allowed_edges_still_exist(graph):
    # an exemption whose edge is gone must be deleted, not kept "just in case"
    for a, b in ALLOWED_EDGES:
        assert b in graph.get(a, ()), f"{a} no longer imports {b}: drop it from ALLOWED_EDGES"


def test_kernels_import_no_library_module(graph):
    for m, deps in graph.items():
        if _under(m, ("fastalign.kernels",)):
            bad = [d for d in deps if not _under(d, ("fastalign.kernels", "fastalign._config"))]
            assert not bad, (m, bad)


def test_io_imports_no_algorithm_and_not_the_package_root(graph):
    for m, deps in graph.items():
        if _under(m, ("fastalign.io",)):
            bad = [d for d in deps if _under(d, ALGORITHMS + ("fastalign.cli",))
                   or d == "fastalign"]
            assert not bad, (m, bad)


def test_library_imports_no_edge_module(graph):
    library = ("fastalign.align", "fastalign.recon", "fastalign.kernels", "fastalign.operator",
               "fastalign.geometry", "fastalign._validate", "fastalign._config",
               "fastalign._fft")
    for m, deps in graph.items():
        if _under(m, library):
            bad = [d for d in deps if _under(d, EDGE)]
            assert not bad, (m, bad)


def test_io_alone_loads_no_algorithm_and_no_numba():
    # ``import fastalign.io`` runs the package root first, which imports the whole library;
    # with a bare root package in its place, the I/O modules alone must stay light
    code = f"""
import sys, types
pkg = types.ModuleType("fastalign")
pkg.__path__ = [{os.path.join(ROOT, "fastalign")!r}]
sys.modules["fastalign"] = pkg
import fastalign.io, fastalign.io.slabs, fastalign._version
heavy = ("numba", "fastalign.align", "fastalign.recon", "fastalign.kernels",
         "fastalign.operator", "fastalign.distributed", "dask")
print(sorted(m for m in sys.modules if m.startswith(heavy)))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout


def test_bench_has_no_import_cycle_and_peers_is_only_an_entry():
    bench = os.path.join(ROOT, "bench")
    g = import_graph(bench)
    assert {"peers", "_harness", "results_md", "benchmarks._util"} <= set(g)
    cycle = find_cycle(g)
    assert cycle is None, " -> ".join(cycle)
    importers = sorted(m for m, deps in g.items() if "peers" in deps)
    assert importers == [], importers


def test_one_version():
    # the edge reads fastalign._version; the package root and pyproject.toml must agree
    import re

    import fastalign
    from fastalign._version import __version__

    assert fastalign.__version__ == __version__
    with open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8") as fh:
        m = re.search(r'^version = "([^"]+)"', fh.read(), re.MULTILINE)
    assert m and m.group(1) == __version__


def test_cli_does_not_load_scipy_signal_or_stats():
    # scipy.signal pulls in scipy.stats: ~47 MB resident in every process (issue 20's
    # footprint) and ~0.6 s of import; the Tukey window is fastalign's own
    code = "import sys, fastalign.cli.main; print(sorted(m for m in sys.modules " \
           "if m.startswith(('scipy.signal', 'scipy.stats'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout


def test_tukey_symmetric_equals_scipy():
    import numpy as np
    from scipy.signal.windows import tukey

    from fastalign.align.shift import tukey_symmetric

    for n in (1, 2, 3, 5, 64, 127, 256):
        for alpha in (0.0, 0.1, 0.25, 0.5, 1.0, 1.5):
            assert np.array_equal(tukey_symmetric(n, alpha), tukey(n, alpha)), (n, alpha)
