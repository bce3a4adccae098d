"""Reconstruction: SIRT, TV (monotone FISTA + Chambolle prox) and FBP."""
from ._common import ReconResult, circle_mask
from .fbp import fbp, filter_projections
from .sirt import SIRTSolver, sirt
from .tv import TVSolver, denoise_tv, tv

__all__ = ["sirt", "SIRTSolver", "tv", "TVSolver", "denoise_tv", "fbp", "filter_projections",
           "ReconResult", "circle_mask"]
