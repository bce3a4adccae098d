"""The projection operator ``A`` and its transpose, tomosipo-style: ``A(x)``, ``A.T(y)``."""
import numba
import numpy as np

from ._validate import as_float32_array, as_float32_out, as_positive_int
from .geometry import TiltGeometry
from .kernels import projector as _k


class Projector:
    """Joseph ray-driven parallel-beam projector for a volume ``(ny, nz, nx)``.

    ``A(x)`` maps a volume ``(ny, nz, nx)`` to a tilt series ``(n_tilts, ny, n_det)``
    (``n_det = nx`` unless the geometry says otherwise);
    ``A.T(y)`` is its exact transpose (adjoint to float32 round-off).  Slices y are
    processed in blocks of ``kernels.projector.LANES`` (vectorised over the slices of a
    block) and the blocks distributed over Numba threads; with fewer blocks than threads each
    block is split over angles (forward) or chunks of output lines (transpose).  Results are
    bit-identical for any thread count.

    Parameters
    ----------
    angles_deg : array_like or TiltGeometry
        Tilt angles in degrees (or a full geometry, then ``shape`` is ignored).
    shape : tuple of int, optional
        Volume shape ``(ny, nz, nx)``.  (A geometry with ``n_det`` detector bins maps to
        ``(n_tilts, ny, n_det)``: :class:`fastalign.geometry.TiltGeometry`.)
    center_offset : float
        Rotation-centre offset in detector pixels.
    n_det : int, optional
        Detector bins per row (default ``nx``), centred on the volume.
    """

    def __init__(self, angles_deg, shape=None, center_offset=0.0, n_det=None):
        if isinstance(angles_deg, TiltGeometry):
            geom = angles_deg
        else:
            if shape is None:
                raise ValueError("shape=(ny, nz, nx) is required")
            geom = TiltGeometry(angles_deg, tuple(shape), center_offset, n_det)
        self.geometry = geom
        self._cos, self._sin, self._zmaj = geom.ray_tables()
        self._wts, self._zlist, self._xlist = _k.angle_tables(self._cos, self._sin,
                                                              self._zmaj)
        self._norm_sq = None
        self.T = _Transpose(self)

    @property
    def domain_shape(self):
        return self.geometry.volume_shape

    @property
    def range_shape(self):
        return self.geometry.data_shape

    def __repr__(self):
        return f"Projector({self.geometry!r})"

    def __call__(self, x, out=None):
        """Forward projection of a volume ``(ny, nz, nx)`` -> tilt series (float32)."""
        x = as_float32_array(x, 3, "volume")
        if x.shape != self.domain_shape:
            raise ValueError(f"volume has shape {x.shape}, expected {self.domain_shape}")
        if out is None:
            out = np.empty(self.range_shape, dtype=np.float32)
        else:
            as_float32_out(out, self.range_shape)
            if np.shares_memory(x, out):
                raise ValueError("out must not share memory with the input volume")
        self.forward_into(x, out)
        return out

    def _many_blocks(self, ny):
        """Enough blocks of ``LANES`` slices to keep every thread busy?  Otherwise the kernels
        parallelise within each block (same arithmetic, so the result is the same)."""
        return -(-ny // _k.LANES) >= numba.get_num_threads()

    def forward_into(self, x, out):
        """Forward projection into ``out`` without any check: the fast path for solvers.

        Parameters
        ----------
        x : ndarray, float32, C-contiguous, shape :attr:`domain_shape`
        out : ndarray, float32, C-contiguous, shape :attr:`range_shape`
            Overwritten; must not overlap ``x``.

        Returns
        -------
        out

        Notes
        -----
        Nothing is validated or converted (wrong dtypes, shapes or strides give wrong
        numbers or a crash): call ``A(x, out=)`` unless the arrays were allocated to match.
        """
        cu = self.geometry.detector_center
        kernel = _k.forward_blocks if self._many_blocks(x.shape[0]) else _k.forward_within
        kernel(x, self._cos, self._sin, self._wts, self._zlist, self._xlist, cu, out)
        return out

    def adjoint_into(self, y, out):
        """Backprojection (the exact transpose) into ``out`` without any check.

        Parameters
        ----------
        y : ndarray, float32, C-contiguous, shape :attr:`range_shape`
        out : ndarray, float32, C-contiguous, shape :attr:`domain_shape`
            Overwritten; must not overlap ``y``.

        Returns
        -------
        out

        Notes
        -----
        As :meth:`forward_into`: the unchecked fast path; ``A.T(y, out=)`` is the checked one.
        """
        cu = self.geometry.detector_center
        kernel = _k.back_blocks if self._many_blocks(y.shape[1]) else _k.back_within
        kernel(y, self._cos, self._sin, self._wts, self._zlist, self._xlist, cu, out)
        return out

    def norm(self, n_iter=30, seed=0):
        """Estimate of the operator norm ``||A||_2`` by power iteration on ``A^T A``.

        Uses the first slice only (every slice sees the same 2-D operator).  Cached.
        """
        if self._norm_sq is None:
            n_iter = as_positive_int(n_iter, "n_iter")
            g = self.geometry
            sub = Projector(g.with_shape((1, g.nz, g.nx), g.n_det))
            rng = np.random.default_rng(seed)
            x = rng.standard_normal((1, g.nz, g.nx)).astype(np.float32)
            y = np.empty(sub.range_shape, np.float32)
            lam = 0.0
            for _ in range(n_iter):
                x /= np.linalg.norm(x)
                sub.forward_into(x, y)
                sub.adjoint_into(y, x)
                lam = float(np.linalg.norm(x))
            self._norm_sq = lam
        return float(np.sqrt(self._norm_sq))


class _Transpose:
    """``A.T``: backprojection, the exact transpose of the parent projector."""

    def __init__(self, parent):
        self._p = parent
        self.T = parent

    @property
    def domain_shape(self):
        return self._p.range_shape

    @property
    def range_shape(self):
        return self._p.domain_shape

    def __call__(self, y, out=None):
        """Backprojection of a tilt series ``(n_tilts, ny, nx)`` -> volume (float32)."""
        y = as_float32_array(y, 3, "tilt_series")
        if y.shape != self.domain_shape:
            raise ValueError(f"tilt_series has shape {y.shape}, expected {self.domain_shape}")
        if out is None:
            out = np.empty(self.range_shape, dtype=np.float32)
        else:
            as_float32_out(out, self.range_shape)
            if np.shares_memory(y, out):
                raise ValueError("out must not share memory with the input tilt series")
        self._p.adjoint_into(y, out)
        return out

    def norm(self, **kw):
        return self._p.norm(**kw)


def project(volume, angles_deg, *, center_offset=0.0):
    """Forward-project a volume into a tilt series.

    Parameters
    ----------
    volume : array_like, shape (ny, nz, nx)
        One ``(nz, nx)`` slice per tilt-axis position y.  Converted once to float32.
    angles_deg : array_like, shape (n_tilts,)
        Tilt angles in degrees.
    center_offset : float
        Rotation-centre offset in detector pixels.

    Returns
    -------
    tilt_series : ndarray, float32, shape (n_tilts, ny, nx)
    """
    volume = as_float32_array(volume, 3, "volume")
    A = Projector(angles_deg, volume.shape, center_offset)
    return A(volume)


def backproject(tilt_series, angles_deg, *, nz=None, center_offset=0.0):
    """Backproject a tilt series: the exact transpose of :func:`project`.

    Parameters
    ----------
    tilt_series : array_like, shape (n_tilts, ny, nx)
    angles_deg : array_like, shape (n_tilts,)
    nz : int, optional
        Volume thickness; defaults to ``nx``.
    center_offset : float

    Returns
    -------
    volume : ndarray, float32, shape (ny, nz, nx)
    """
    tilt_series = as_float32_array(tilt_series, 3, "tilt_series")
    n, ny, nx = tilt_series.shape
    from ._validate import as_angles_deg
    as_angles_deg(angles_deg, n_expected=n)
    nz = nx if nz is None else as_positive_int(nz, "nz")
    A = Projector(angles_deg, (ny, nz, nx), center_offset)
    return A.T(tilt_series)
