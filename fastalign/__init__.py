"""fastalign: Numba-parallel CPU alignment and reconstruction of ET tilt series."""
from .geometry import TiltGeometry
from .operator import Projector, backproject, project

__version__ = "0.1.0"

__all__ = ["TiltGeometry", "Projector", "project", "backproject", "__version__"]
