"""Shared pieces of the reconstruction solvers: result object, input checks, callbacks."""
import logging
from dataclasses import dataclass, field

import numpy as np

from .._validate import (as_angles_deg, as_float32_array, as_float32_out,
                         as_positive_int)
from ..operator import Projector

log = logging.getLogger("fastalign.recon")


@dataclass
class ReconResult:
    """Outcome of an iterative reconstruction.

    Attributes
    ----------
    volume : ndarray, float32, shape (ny, nz, nx)
        The reconstruction (for ``Solver.run`` this is the caller's ``x``, updated in place).
    residuals : ndarray, float64, shape (n_iter,)
        Relative data residual ``||A x_k - b|| / ||b||`` of the iterate after iteration k
        (``||A x_k - b||`` if ``b`` is zero).
    objective : ndarray, float64, shape (n_iter,) or None
        TV only: ``1/2 ||A x_k - b||^2 + lam TV(x_k)`` after iteration k (non-increasing).
    n_iter : int
        Iterations performed (fewer than requested if the callback raised StopIteration).
    stopped : bool
        True if the callback raised StopIteration.
    method : str
        ``"sirt"`` or ``"tv"``.
    info : dict
        Extra per-method numbers (e.g. ``step`` and ``n_rejected`` for TV).
    """

    volume: np.ndarray
    residuals: np.ndarray
    objective: np.ndarray = None
    n_iter: int = 0
    stopped: bool = False
    method: str = ""
    info: dict = field(default_factory=dict)


def check_projector(A):
    if not isinstance(A, Projector):
        raise TypeError(f"A must be a fastalign.Projector, got {type(A).__name__}")
    return A


def check_n_iter(n_iter, name="n_iter"):
    return as_positive_int(n_iter, name, minimum=0)


def check_callback(callback):
    if callback is not None and not callable(callback):
        raise TypeError("callback must be callable as callback(iteration, x, info)")
    return callback


def check_data(b, A, name="b"):
    """Coerce the measured tilt series for a run (no copy if already float32 C order)."""
    b = as_float32_array(b, 3, name)
    if b.shape != A.range_shape:
        raise ValueError(f"{name} has shape {b.shape}, expected {A.range_shape} "
                         "(n_tilts, ny, nx) for this projector")
    return b


def check_x(x, A):
    """The in-place iterate of ``Solver.run``: a writeable float32 C-contiguous volume."""
    return as_float32_out(x, A.domain_shape, "x")


def check_Ax(Ax, A):
    return as_float32_out(Ax, A.range_shape, "Ax")


def setup_problem(tilt_series, angles_deg, nz, x0, center_offset):
    """Validate the arguments shared by the functional API.

    Returns ``(b, A, x, x_given)``: float32 data, the projector, a fresh float32 volume (zeros,
    or a copy of ``x0``) and whether ``x0`` was given."""
    b = as_float32_array(tilt_series, 3, "tilt_series")
    n, ny, nx = b.shape
    angles = as_angles_deg(angles_deg, n_expected=n)
    nz = nx if nz is None else as_positive_int(nz, "nz")
    A = Projector(angles, (ny, nz, nx), center_offset)
    if x0 is None:
        x = np.zeros(A.domain_shape, np.float32)
    else:
        x0 = as_float32_array(x0, 3, "x0")
        if x0.shape != A.domain_shape:
            raise ValueError(f"x0 has shape {x0.shape}, expected {A.domain_shape} (ny, nz, nx)")
        x = x0.copy()
    return b, A, x, x0 is not None


def circle_mask(nz, nx, center_offset=0.0):
    """Boolean ``(nz, nx)`` disc seen by every projection of a full tilt range.

    Pixel ``(iz, ix)`` (centre ``x = ix - (nx-1)/2``, ``z = iz - (nz-1)/2``) is inside when
    ``x^2 + z^2 <= r^2`` with ``r = nx/2 - |center_offset|``.
    """
    r = 0.5 * nx - abs(float(center_offset))
    z = np.arange(nz) - 0.5 * (nz - 1)
    x = np.arange(nx) - 0.5 * (nx - 1)
    return (z[:, None] ** 2 + x[None, :] ** 2) <= r * r


def prepare_mask(mask, shape, center_offset=0.0):
    """``None`` or a uint8 array ``(1 or ny, nz, nx)`` (1 = reconstructed pixel).

    ``mask`` is ``None``/``False`` (no mask), ``True`` or ``"circle"`` (:func:`circle_mask`), or
    a boolean array of shape ``(nz, nx)`` (every slice) or ``(ny, nz, nx)``.
    """
    ny, nz, nx = shape
    if mask is None or mask is False:
        return None
    if mask is True or (isinstance(mask, str) and mask == "circle"):
        return circle_mask(nz, nx, center_offset)[None].astype(np.uint8)
    if isinstance(mask, str):
        raise ValueError(f"mask must be None, True, 'circle' or a boolean array, got {mask!r}")
    m = np.asarray(mask)
    if m.dtype != np.bool_:
        if m.dtype.kind not in "iuf" or not np.isin(m, (0, 1)).all():
            raise ValueError("mask must be a boolean array (or contain only 0 and 1)")
    if m.shape == (nz, nx):
        m = m[None]
    elif m.shape != (ny, nz, nx):
        raise ValueError(f"mask has shape {m.shape}, expected (nz, nx) = {(nz, nx)} "
                         f"or (ny, nz, nx) = {(ny, nz, nx)}")
    m = np.ascontiguousarray(m, dtype=np.uint8)
    if not m.any():
        raise ValueError("mask is empty: no pixel would be reconstructed")
    return m


def safe_reciprocal(v, rel_tol=1e-6, abs_tol=None):
    """``1/v`` where ``v > rel_tol * max(v)`` (or, given ``abs_tol``, ``v > abs_tol``), else 0
    (float32, new array)."""
    if abs_tol is not None:
        v = np.asarray(v, dtype=np.float32)
        # float32 arithmetic, as the alignment loop's weights were measured with
        return np.where(v > abs_tol, 1.0 / np.maximum(v, abs_tol), 0.0).astype(np.float32)
    v = np.asarray(v, dtype=np.float64)
    vmax = float(v.max()) if v.size else 0.0
    out = np.zeros(v.shape, np.float32)
    if vmax > 0.0:
        pos = v > rel_tol * vmax
        out[pos] = (1.0 / v[pos]).astype(np.float32)
    return out


def call_back(callback, k, x, info):
    """Run the user callback; returns True if it asked to stop (raised StopIteration)."""
    if callback is None:
        return False
    try:
        callback(k, x, info)
    except StopIteration:
        log.debug("callback stopped the iteration after iteration %d", k)
        return True
    return False
