"""Helpers shared by ``tests/`` and ``bench/``: adjoint test, alignment gauge, thread control.

The alignment gauge (DESIGN.md): translating the object by ``(cx, cz)`` moves projection
``i`` by ``cx cos(th_i) + cz sin(th_i)`` along x, and translating it along the tilt axis moves
every projection by the same ``dy``.  Shift errors are therefore compared after removing the
least-squares fit of ``a cos(th) + b sin(th)`` from the x column and the mean from the y column.
A constant x offset is *not* removed: it is the rotation-centre offset.
"""
import numba
import numpy as np

from ._validate import as_positive_int
from .align.gauge import _as_shifts, remove_gauge

__all__ = ["adjoint_test", "remove_gauge", "gauge_rms", "run_with_threads"]


def _operator_norm(A, shape_x, n_iter=50, seed=1):
    """Power-iteration estimate of ``||A||_2`` (float64 accumulation)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape_x).astype(np.float32)
    lam = 0.0
    for _ in range(n_iter):
        nx = np.linalg.norm(x.astype(np.float64))
        if nx == 0:
            return 0.0
        x = (x / nx).astype(np.float32)
        x = np.asarray(A.T(A(x)), dtype=np.float32)
        lam = float(np.linalg.norm(x.astype(np.float64)))
    return float(np.sqrt(lam))


def adjoint_test(A, shape_x, shape_y, seed=0):
    """Normalised adjoint (dot-product) test of a linear operator and its transpose.

    Parameters
    ----------
    A : callable with attribute ``T``
        ``A(x)`` maps arrays of ``shape_x`` to ``shape_y`` and ``A.T(y)`` back (tomosipo-style,
        e.g. :class:`fastalign.Projector`).  ``A.norm()`` is used when present, otherwise the
        norm is estimated by power iteration.
    shape_x, shape_y : tuple of int
        Domain and range shapes.
    seed : int
        Seed of the random (standard normal, float32) test vectors.

    Returns
    -------
    err : float
        ``|<A x, y> - <x, A^T y>| / (||A|| ||x|| ||y||)`` with inner products and norms computed
        in float64.  Float32 round-off gives values around 1e-7..1e-6; a wrong transpose gives
        O(1e-2) or more.
    """
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(tuple(shape_x)).astype(np.float32)
    y = rng.standard_normal(tuple(shape_y)).astype(np.float32)
    Ax = np.asarray(A(x), dtype=np.float64)
    ATy = np.asarray(A.T(y), dtype=np.float64)
    if Ax.shape != tuple(shape_y) or ATy.shape != tuple(shape_x):
        raise ValueError(f"operator maps {x.shape} -> {Ax.shape} and {y.shape} -> {ATy.shape}, "
                         f"expected {tuple(shape_x)} <-> {tuple(shape_y)}")
    lhs = float(np.vdot(Ax, y.astype(np.float64)))
    rhs = float(np.vdot(x.astype(np.float64), ATy))
    norm_a = float(A.norm()) if hasattr(A, "norm") else _operator_norm(A, shape_x)
    scale = norm_a * np.linalg.norm(x.astype(np.float64)) * np.linalg.norm(y.astype(np.float64))
    if scale == 0:
        return 0.0 if lhs == rhs else float("inf")
    return abs(lhs - rhs) / scale


def gauge_rms(est, true, angles_deg):
    """RMS shift error in x and y after removing the alignment gauge.

    Parameters
    ----------
    est, true : array_like, shape (n_tilts, 2)
        Estimated and true shifts ``(dx, dy)`` in pixels.
    angles_deg : array_like, shape (n_tilts,)
        Tilt angles in degrees.

    Returns
    -------
    (rms_x, rms_y) : tuple of float
        Pixels.
    """
    n = np.asarray(angles_deg).size
    e = remove_gauge(_as_shifts(est, n, "est") - _as_shifts(true, n, "true"), angles_deg)
    rms = np.sqrt(np.mean(e * e, axis=0))
    return float(rms[0]), float(rms[1])


def run_with_threads(fn, n, *args, **kwargs):
    """Call ``fn(*args, **kwargs)`` with ``numba.set_num_threads(n)``, then restore.

    Parameters
    ----------
    fn : callable
    n : int
        Thread count, ``1 <= n <= numba.config.NUMBA_NUM_THREADS``.

    Returns
    -------
    The return value of ``fn``.  The previous thread count is restored even if ``fn`` raises.
    """
    n = as_positive_int(n, "n")
    if n > numba.config.NUMBA_NUM_THREADS:
        raise ValueError(f"n={n} exceeds numba.config.NUMBA_NUM_THREADS="
                         f"{numba.config.NUMBA_NUM_THREADS}")
    old = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        return fn(*args, **kwargs)
    finally:
        numba.set_num_threads(old)
