"""fastalign: Numba-parallel CPU alignment and reconstruction of ET tilt series.

Conventions (DESIGN.md): tilt series ``(n_tilts, ny, nx)`` float32 with the tilt axis along y;
volumes ``(ny, nz, nx)``; angles in degrees; shifts ``(n_tilts, 2)`` as ``(dx, dy)`` with
``measured(x, y) = ideal(x - dx, y - dy)``.
"""
from .align.autofocus import align
from .align.baselines import com_shifts, xcorr_shifts
from .align.gauge import fix_gauge, gauge_error
from .align.result import AlignResult
from .align.shift import fourier_shift
from .demo import demo
from . import phantoms, simulate
from .geometry import TiltGeometry
from .io import read_tilt_series
from .operator import Projector, backproject, project
from .recon import ReconResult, SIRTSolver, TVSolver, fbp, sirt, tv

from ._version import __version__  # noqa: E402

__all__ = [
    "TiltGeometry", "Projector", "project", "backproject",
    "sirt", "tv", "fbp", "SIRTSolver", "TVSolver", "ReconResult",
    "align", "AlignResult", "xcorr_shifts", "com_shifts", "fourier_shift",
    "fix_gauge", "gauge_error", "read_tilt_series", "demo", "phantoms", "simulate",
    "__version__",
]
