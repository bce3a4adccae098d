"""Parallel-beam tilt geometry: an immutable value with units in its names."""
from dataclasses import dataclass, field

import numpy as np

from ._validate import as_angles_deg, as_finite_float, as_positive_int


@dataclass(frozen=True, eq=False)
class TiltGeometry:
    """Parallel-beam geometry of a tilt series, tilt axis along image y (DESIGN.md).

    Parameters
    ----------
    angles_deg : array_like, shape (n_tilts,)
        Tilt angles in degrees, any order, no duplicates.
    shape : tuple of int
        Volume shape ``(ny, nz, nx)``.  The detector has ``ny`` rows.
    center_offset : float
        Rotation-centre offset in detector pixels: the object centre projects to
        ``(n_det - 1)/2 + center_offset``.
    n_det : int, optional
        Detector bins per row (default ``nx``).  A region wider than the field of view
        (``nx > n_det``: a slab, whose oblique rays cross columns outside the field) is
        centred on the detector, and only the ``n_det`` measured rays are computed.

    Notes
    -----
    A voxel at ``(x, z)`` (pixels from the slice centre) projects at angle ``th`` to detector
    coordinate ``u = x cos(th) + z sin(th)``, i.e. bin ``u + (n_det-1)/2 + center_offset``.
    """

    angles_deg: np.ndarray
    shape: tuple
    center_offset: float = 0.0
    n_det: int = None
    _rad: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        a = as_angles_deg(self.angles_deg)
        a.setflags(write=False)
        if len(self.shape) != 3:
            raise ValueError(f"shape must be (ny, nz, nx), got {self.shape}")
        shape = tuple(as_positive_int(int(s) if isinstance(s, np.integer) else s, "shape")
                      for s in self.shape)
        object.__setattr__(self, "angles_deg", a)
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "center_offset",
                           as_finite_float(self.center_offset, "center_offset"))
        n_det = shape[2] if self.n_det is None else as_positive_int(
            int(self.n_det) if isinstance(self.n_det, np.integer) else self.n_det, "n_det")
        object.__setattr__(self, "n_det", n_det)
        rad = np.deg2rad(a)  # the one degree -> radian conversion of the package
        rad.setflags(write=False)
        object.__setattr__(self, "_rad", rad)

    @property
    def n_tilts(self):
        return self.angles_deg.size

    @property
    def ny(self):
        return self.shape[0]

    @property
    def nz(self):
        return self.shape[1]

    @property
    def nx(self):
        return self.shape[2]

    @property
    def volume_shape(self):
        return self.shape

    @property
    def data_shape(self):
        """Tilt-series shape ``(n_tilts, ny, n_det)``."""
        return (self.n_tilts, self.ny, self.n_det)

    @property
    def angles_rad(self):
        return self._rad

    @property
    def detector_center(self):
        return 0.5 * (self.n_det - 1) + self.center_offset

    def ray_tables(self):
        """``(cos, sin, zmajor)`` per angle, float64/bool, for the kernels."""
        c = np.cos(self._rad)
        s = np.sin(self._rad)
        # Snap round-off so that 90 degrees is exactly x-major and 0 exactly z-major.
        c[np.abs(c) < 1e-15] = 0.0
        s[np.abs(s) < 1e-15] = 0.0
        zmaj = np.abs(c) >= np.abs(s)
        return c, s, zmaj

    def with_shape(self, shape, n_det=None):
        """The same angles and centre offset for a volume ``shape`` and ``n_det`` detector
        bins (default: as many as the new volume is wide)."""
        return TiltGeometry(self.angles_deg, shape, self.center_offset, n_det)

    def binned(self, f, fy=None):
        """The geometry of the data binned ``fy x f`` (rows x columns) by block means.

        Trailing rows/columns that do not fill a block are cropped (as
        :func:`fastalign.align.levels.bin_stack` does), so the detector centre moves by half
        the cropped columns: the binned centre offset is
        ``(center_offset + (nx - (nx // f) f) / 2) / f``.  The thickness becomes
        ``max(1, round(nz / f))``.  In the spirit of tomosipo's ``rescale_det``.

        Parameters
        ----------
        f : int
            Binning along x (and z).
        fy : int, optional
            Binning along y (default ``f``).

        Returns
        -------
        TiltGeometry

        Raises
        ------
        ValueError
            For a detector narrower or wider than the volume (``n_det != nx``): binning is
            defined on the data, whose detector is the volume's width.
        """
        fy = f if fy is None else fy
        ny, nz, nx = self.shape
        if self.n_det != nx:
            raise ValueError("binned() needs a detector as wide as the volume")
        co = (self.center_offset + 0.5 * (nx - (nx // f) * f)) / f
        return TiltGeometry(self.angles_deg, (ny // fy, max(1, int(round(nz / f))), nx // f),
                            co)

    def __getitem__(self, idx):
        """A geometry with a subset of the tilts (index, slice, mask or index array)."""
        a = self.angles_deg[idx]
        return TiltGeometry(np.atleast_1d(a), self.shape, self.center_offset, self.n_det)

    def __eq__(self, other):
        return (isinstance(other, TiltGeometry) and self.shape == other.shape
                and self.center_offset == other.center_offset and self.n_det == other.n_det
                and np.array_equal(self.angles_deg, other.angles_deg))

    def __hash__(self):
        return hash((self.shape, self.center_offset + 0.0, self.n_det,
                     (self.angles_deg + 0.0).tobytes()))

    def __repr__(self):
        angles = np.array2string(self.angles_deg, separator=", ", threshold=1 << 30,
                                 floatmode="unique", max_line_width=1 << 30)
        det = "" if self.n_det == self.nx else f", n_det={self.n_det}"
        return (f"TiltGeometry(angles_deg=np.array({angles}), shape={self.shape}, "
                f"center_offset={self.center_offset!r}{det})")
