"""Command-line interface: ``fastalign align | recon | info | demo``.

:mod:`.main` holds the parser, the dispatch and :func:`main` (the ``fastalign`` console
script); one module per command (:mod:`.align`, :mod:`.recon`, :mod:`.info`, :mod:`.demo`);
:mod:`.inputs` and :mod:`.outputs` read the input and write the results (shared by the local
and the Dask runs); :mod:`.dask` sets up the Dask client; :mod:`.signals` handles Ctrl-C and
SIGTERM.
"""
from .inputs import estimate_peak_bytes, parse_size
from .main import build_parser, main

__all__ = ["main", "build_parser", "parse_size", "estimate_peak_bytes"]
