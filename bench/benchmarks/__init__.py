"""asv benchmark suites for fastalign (run from ``bench/``: ``asv run --python=same``).

Suites measure steady state (``setup`` compiles the Numba kernels on a tiny input of the same
dispatch path); first-call (compile) latency is measured separately, in a fresh subprocess, by
:mod:`bench_jit`.  Shared helpers live in :mod:`._util`.
"""
