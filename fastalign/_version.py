"""The package version, in a module of its own.

Edge modules (``io/``, ``report``, ``cli``) label files and reports with it; importing it
from here rather than from :mod:`fastalign` keeps them from depending on the package root,
which imports every algorithm.
"""
__version__ = "0.1.0"
