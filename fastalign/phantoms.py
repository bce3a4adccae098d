"""Deterministic test phantoms and their analytic line integrals.

Everything here is plain NumPy and seeded (``numpy.random.default_rng``): the same arguments
give the same arrays on every machine.  Misaligned tilt series made from them (and the periodic
sub-pixel shift used to make them) are in :mod:`fastalign.simulate`.  Conventions follow
DESIGN.md:

* a slice is ``(nz, nx)``; pixel ``(iz, ix)`` has centre ``x = ix - (nx-1)/2``,
  ``z = iz - (nz-1)/2`` (pixels from the slice centre);
* a volume is ``(ny, nz, nx)``, float32, C-contiguous;
* the detector coordinate of a ray at tilt ``th`` is ``u = x cos(th) + z sin(th)``, in pixels
  from the detector centre ``(nx-1)/2 + center_offset``.

An *ellipse* is a 6-tuple ``(x0, z0, a, b, phi_deg, density)``: centre ``(x0, z0)`` in pixels
from the slice centre, semi-axes ``a`` (along the rotated x axis) and ``b`` (along the rotated z
axis) in pixels, rotation ``phi_deg`` in degrees turning the ``a`` axis from +x towards +z, and
an additive density.  A point ``(x, z)`` is inside when
``((dx cos phi + dz sin phi)/a)**2 + ((-dx sin phi + dz cos phi)/b)**2 <= 1``.
"""
import numpy as np

from ._validate import as_positive_int

__all__ = [
    "slab_volume",
    "ellipses_2d",
    "ellipse_line_integrals",
    "shepp_logan_ellipses",
    "shepp_logan_2d",
    "binary_phantom_2d",
    "particles_3d",
    "thin_film_3d",
]

# Modified Shepp-Logan head (Toft 1996): (density, a, b, x0, y0, phi_deg) in units of the
# half-width, y pointing *up*.  Densities add; every sampled value lies in [0, 1].
_SHEPP_LOGAN = (
    (1.00, 0.6900, 0.9200, 0.00, 0.0000, 0.0),
    (-0.80, 0.6624, 0.8740, 0.00, -0.0184, 0.0),
    (-0.20, 0.1100, 0.3100, 0.22, 0.0000, -18.0),
    (-0.20, 0.1600, 0.4100, -0.22, 0.0000, 18.0),
    (0.10, 0.2100, 0.2500, 0.00, 0.3500, 0.0),
    (0.10, 0.0460, 0.0460, 0.00, 0.1000, 0.0),
    (0.10, 0.0460, 0.0460, 0.00, -0.1000, 0.0),
    (0.10, 0.0460, 0.0230, -0.08, -0.6050, 0.0),
    (0.10, 0.0230, 0.0230, 0.00, -0.6060, 0.0),
    (0.10, 0.0230, 0.0460, 0.06, -0.6050, 0.0),
)

_SUPERSAMPLE = 4  # sub-samples per pixel along each axis in ellipses_2d


def _as_ellipses(ellipses):
    """Validate an ellipse list; returns a float64 array ``(n, 6)``."""
    e = np.asarray(ellipses, dtype=np.float64)
    if e.ndim == 1 and e.size == 6:
        e = e[None, :]
    if e.ndim != 2 or e.shape[1] != 6:
        raise ValueError("ellipses must be a sequence of (x0, z0, a, b, phi_deg, density), "
                         f"got an array of shape {e.shape}")
    if not np.all(np.isfinite(e)):
        raise ValueError("ellipses contain non-finite values")
    if np.any(e[:, 2:4] <= 0):
        raise ValueError("ellipse semi-axes a, b must be > 0")
    return e


def _grid_offsets(ss):
    """Sub-sample offsets (pixels) of an ``ss``-point midpoint rule over one pixel."""
    return (np.arange(ss) + 0.5) / ss - 0.5


def shepp_logan_ellipses(n, nz=None):
    """Modified Shepp-Logan ellipses scaled to an ``(nz, n)`` slice.

    Parameters
    ----------
    n : int
        Slice width ``nx`` in pixels.
    nz : int, optional
        Slice thickness in pixels (defaults to ``n``).

    Returns
    -------
    ellipses : ndarray, float64, shape (10, 6)
        Rows ``(x0, z0, a, b, phi_deg, density)`` in pixels/degrees.  The head's vertical axis
        runs along z (image rows), top of the head at small ``iz``, as in the usual picture.
        The head fits in a disc of radius ``0.46 * min(n, nz)``, so every projection stays
        inside the detector.
    """
    n = as_positive_int(n, "n")
    nz = n if nz is None else as_positive_int(nz, "nz")
    half = 0.5 * min(n, nz)
    rows = []
    for rho, a, b, x0, y0, phi in _SHEPP_LOGAN:
        # y up -> z down: z0 = -y0 and the rotation changes sign.
        rows.append((x0 * half, -y0 * half, a * half, b * half, -phi, rho))
    return np.array(rows, dtype=np.float64)


def ellipses_2d(n, nz=None, ellipses=None):
    """Sample a sum of uniform ellipses on an ``(nz, n)`` slice with 4x4 supersampling.

    Parameters
    ----------
    n : int
        Number of columns ``nx`` (pixels along x).
    nz : int, optional
        Number of rows (pixels along z); defaults to ``n``.
    ellipses : sequence of (x0, z0, a, b, phi_deg, density), optional
        Ellipses in pixels from the slice centre and degrees (module docstring).  Densities
        add where ellipses overlap.  Defaults to :func:`shepp_logan_ellipses`.

    Returns
    -------
    slice : ndarray, float32, shape (nz, n)
        Each pixel holds the mean over 4x4 sub-samples of the summed densities, i.e. the pixel
        average of the piecewise-constant object up to sub-sampling error at edges.
    """
    n = as_positive_int(n, "n")
    nz = n if nz is None else as_positive_int(nz, "nz")
    e = shepp_logan_ellipses(n, nz) if ellipses is None else _as_ellipses(ellipses)
    img = np.zeros((nz, n), dtype=np.float64)
    off = _grid_offsets(_SUPERSAMPLE)
    cx, cz = 0.5 * (n - 1), 0.5 * (nz - 1)
    for x0, z0, a, b, phi_deg, rho in e:
        phi = np.deg2rad(phi_deg)
        c, s = np.cos(phi), np.sin(phi)
        hx = np.sqrt((a * c) ** 2 + (b * s) ** 2)  # half extents of the bounding box
        hz = np.sqrt((a * s) ** 2 + (b * c) ** 2)
        ix0 = max(int(np.floor(x0 - hx + cx)) - 1, 0)
        ix1 = min(int(np.ceil(x0 + hx + cx)) + 2, n)
        iz0 = max(int(np.floor(z0 - hz + cz)) - 1, 0)
        iz1 = min(int(np.ceil(z0 + hz + cz)) + 2, nz)
        if ix1 <= ix0 or iz1 <= iz0:
            continue
        # Sub-sample coordinates relative to the ellipse centre, shape (pz, sz, px, sx).
        xs = (np.arange(ix0, ix1) - cx)[:, None] + off[None, :] - x0
        zs = (np.arange(iz0, iz1) - cz)[:, None] + off[None, :] - z0
        dx = xs[None, None, :, :]
        dz = zs[:, :, None, None]
        xr = (dx * c + dz * s) / a
        zr = (-dx * s + dz * c) / b
        inside = (xr * xr + zr * zr) <= 1.0
        frac = inside.mean(axis=(1, 3))
        img[iz0:iz1, ix0:ix1] += rho * frac
    # Cancelling densities (e.g. 1 - 0.8 - 0.2) leave float64 round-off: snap it to 0 so
    # that piecewise-constant phantoms with non-negative values stay exactly non-negative.
    tiny = 1e-9 * max(float(np.abs(e[:, 5]).max()), 1e-300) if e.size else 0.0
    img[np.abs(img) < tiny] = 0.0
    return np.ascontiguousarray(img, dtype=np.float32)


def ellipse_line_integrals(ellipses, angles_deg, u):
    """Analytic parallel-beam line integrals of a sum of uniform ellipses.

    For one ellipse with centre ``(x0, z0)``, semi-axes ``a, b``, rotation ``phi`` and density
    ``rho``, the ray ``x cos(th) + z sin(th) = u`` has chord integral::

        p(th, u) = 2 rho a b sqrt(s2 - d**2) / s2   if d**2 < s2, else 0,
        s2 = a**2 cos(th - phi)**2 + b**2 sin(th - phi)**2,
        d  = u - (x0 cos(th) + z0 sin(th)).

    Parameters
    ----------
    ellipses : sequence of (x0, z0, a, b, phi_deg, density)
        Pixels from the slice centre, degrees (module docstring).
    angles_deg : array_like, shape (n_angles,)
        Tilt angles in degrees (any finite values; duplicates allowed).
    u : array_like, shape (n_u,)
        Detector coordinates in pixels from the detector centre: bin ``t`` of a detector with
        ``nx`` bins is at ``u = t - ((nx-1)/2 + center_offset)``.

    Returns
    -------
    p : ndarray, float64, shape (n_angles, n_u)
        Line integrals in density x pixels (float64: this is the exact reference).
    """
    e = _as_ellipses(ellipses)
    th = np.deg2rad(np.atleast_1d(np.asarray(angles_deg, dtype=np.float64)))
    uu = np.atleast_1d(np.asarray(u, dtype=np.float64))
    if th.ndim != 1 or uu.ndim != 1:
        raise ValueError("angles_deg and u must be 1-D")
    if not (np.all(np.isfinite(th)) and np.all(np.isfinite(uu))):
        raise ValueError("angles_deg and u must be finite")
    p = np.zeros((th.size, uu.size), dtype=np.float64)
    for x0, z0, a, b, phi_deg, rho in e:
        dth = th - np.deg2rad(phi_deg)
        s2 = (a * np.cos(dth)) ** 2 + (b * np.sin(dth)) ** 2
        u0 = x0 * np.cos(th) + z0 * np.sin(th)
        d = uu[None, :] - u0[:, None]
        chord2 = np.maximum(s2[:, None] - d * d, 0.0)
        p += 2.0 * rho * a * b * np.sqrt(chord2) / s2[:, None]
    return p


def shepp_logan_2d(n, nz=None):
    """Modified Shepp-Logan slice, piecewise constant with values in [0, 1].

    Parameters
    ----------
    n : int
        Slice width ``nx`` in pixels.
    nz : int, optional
        Slice thickness in pixels (defaults to ``n``).

    Returns
    -------
    slice : ndarray, float32, shape (nz, n)
        Analytic projections: ``ellipse_line_integrals(shepp_logan_ellipses(n, nz), ...)``.
    """
    return ellipses_2d(n, nz, shepp_logan_ellipses(n, nz))


def _inside_ellipse(x, z, x0, z0, a, b, phi_deg):
    phi = np.deg2rad(phi_deg)
    c, s = np.cos(phi), np.sin(phi)
    dx, dz = x - x0, z - z0
    return ((dx * c + dz * s) / a) ** 2 + ((-dx * s + dz * c) / b) ** 2 <= 1.0


def binary_phantom_2d(n, seed=0):
    """Binary (0/1) phantom like the seed paper's: a body with holes, blobs and a bar.

    Parameters
    ----------
    n : int
        Slice size: the phantom is ``(n, n)``.
    seed : int
        Seed of the random layout (positions, sizes, orientations).

    Returns
    -------
    slice : ndarray, float32, shape (n, n)
        Values exactly 0 or 1 (sampled at pixel centres), all ones inside the central disc of
        radius ``0.4 n`` so every projection lies well inside the detector.

    Notes
    -----
    Layout, in units of ``R = 0.4 n``: a rotated elliptical body (semi-axes ~0.6 R x 0.4 R)
    with two or three elliptical holes, four to six small discs/ellipses around it and one
    rotated rectangular bar; everything is clipped to the disc of radius ``R``.
    """
    n = as_positive_int(n, "n", minimum=8)
    rng = np.random.default_rng(seed)
    R = 0.4 * n
    coord = np.arange(n) - 0.5 * (n - 1)
    z, x = np.meshgrid(coord, coord, indexing="ij")
    img = np.zeros((n, n), dtype=bool)

    # Body.
    bx, bz = rng.uniform(-0.08, 0.08, 2) * R
    ba, bb = rng.uniform(0.52, 0.62) * R, rng.uniform(0.34, 0.42) * R
    bphi = rng.uniform(0.0, 180.0)
    img |= _inside_ellipse(x, z, bx, bz, ba, bb, bphi)

    # Holes, strictly inside the body (centres on a shrunken copy of its axes).
    n_holes = int(rng.integers(2, 4))
    for k in range(n_holes):
        t = 2 * np.pi * (k + rng.uniform(0.1, 0.6)) / n_holes
        r = rng.uniform(0.25, 0.45)
        lx, lz = r * ba * np.cos(t), r * bb * np.sin(t)
        ph = np.deg2rad(bphi)
        hx = bx + lx * np.cos(ph) - lz * np.sin(ph)
        hz = bz + lx * np.sin(ph) + lz * np.cos(ph)
        ha = rng.uniform(0.06, 0.12) * R
        hb = rng.uniform(0.05, 0.09) * R
        img &= ~_inside_ellipse(x, z, hx, hz, ha, hb, rng.uniform(0.0, 180.0))

    # Satellite blobs in a ring around the body.
    n_blobs = int(rng.integers(4, 7))
    start = rng.uniform(0.0, 2 * np.pi)
    for k in range(n_blobs):
        t = start + 2 * np.pi * (k + rng.uniform(-0.15, 0.15)) / n_blobs
        r = rng.uniform(0.72, 0.82) * R
        a = rng.uniform(0.05, 0.11) * R
        b = a * rng.uniform(0.6, 1.0)
        img |= _inside_ellipse(x, z, r * np.cos(t), r * np.sin(t), a, b,
                               rng.uniform(0.0, 180.0))

    # A rotated bar crossing part of the body.
    t = rng.uniform(0.0, 2 * np.pi)
    cxb, czb = 0.35 * R * np.cos(t), 0.35 * R * np.sin(t)
    ph = np.deg2rad(rng.uniform(0.0, 180.0))
    along = (x - cxb) * np.cos(ph) + (z - czb) * np.sin(ph)
    across = -(x - cxb) * np.sin(ph) + (z - czb) * np.cos(ph)
    img |= (np.abs(along) <= 0.28 * R) & (np.abs(across) <= 0.045 * R)

    img &= (x * x + z * z) <= R * R
    return np.ascontiguousarray(img, dtype=np.float32)


def _check_shape3(shape):
    if len(shape) != 3:
        raise ValueError(f"shape must be (ny, nz, nx), got {shape}")
    return tuple(as_positive_int(int(s) if isinstance(s, np.integer) else s, "shape")
                 for s in shape)


def _random_rotation(rng):
    """A uniformly random 3x3 rotation matrix (QR of a Gaussian matrix, sign-fixed)."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q *= np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _add_ellipsoid(vol, centre, axes, rot, density, ss=2):
    """Write ``density`` (max-combined, ``ss``-supersampled) into ``vol`` for one ellipsoid.

    ``centre`` and ``axes`` are ``(y, z, x)`` in voxel index units; ``rot`` rotates the
    ellipsoid frame into the volume frame.
    """
    r = float(np.max(axes))
    lo = [max(int(np.floor(c - r)) - 1, 0) for c in centre]
    hi = [min(int(np.ceil(c + r)) + 2, s) for c, s in zip(centre, vol.shape)]
    if any(h <= l for l, h in zip(lo, hi)):
        return
    off = _grid_offsets(ss)
    grids = [(np.arange(l, h)[:, None] + off[None, :] - c).ravel()
             for l, h, c in zip(lo, hi, centre)]
    gy, gz, gx = np.meshgrid(*grids, indexing="ij")
    pts = np.stack([gy, gz, gx], axis=-1) @ rot  # coordinates in the ellipsoid frame
    q = ((pts / np.asarray(axes)) ** 2).sum(axis=-1) <= 1.0
    ny, nz, nx = (h - l for l, h in zip(lo, hi))
    frac = q.reshape(ny, ss, nz, ss, nx, ss).mean(axis=(1, 3, 5))
    sub = vol[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    np.maximum(sub, density * frac, out=sub)


def particles_3d(shape=(64, 96, 96), n_particles=12, seed=0, density_range=(0.5, 3.0)):
    """Spheres and ellipsoids of different densities inside a central cylinder.

    Parameters
    ----------
    shape : tuple of int
        Volume shape ``(ny, nz, nx)``.
    n_particles : int
        Number of particles requested.  Particles are placed without overlap when possible
        (rejection sampling); overlapping ones combine by maximum.
    seed : int
        Seed of positions, sizes, orientations and densities.
    density_range : (float, float)
        Densities are drawn uniformly from this range.

    Returns
    -------
    volume : ndarray, float32, shape (ny, nz, nx)
        Non-negative; every particle lies inside the cylinder of radius
        ``0.42 * min(nz, nx)`` around the tilt axis (y), so projections at any tilt (and in
        particular +-70 degrees) stay inside the ``nx`` detector bins.  Along y particles stay
        inside ``[0, ny)`` when ``ny`` is large enough to hold them.
    """
    ny, nz, nx = _check_shape3(shape)
    n_particles = as_positive_int(n_particles, "n_particles")
    lo_d, hi_d = (float(v) for v in density_range)
    if not (0.0 <= lo_d <= hi_d):
        raise ValueError(f"density_range must satisfy 0 <= low <= high, got {density_range}")
    rng = np.random.default_rng(seed)
    vol = np.zeros((ny, nz, nx), dtype=np.float64)
    m = min(nz, nx)
    r_cyl = 0.42 * m
    cz, cx, cy = 0.5 * (nz - 1), 0.5 * (nx - 1), 0.5 * (ny - 1)
    placed = []  # (y, z, x, bounding radius)
    for _ in range(n_particles):
        for attempt in range(200):
            r = rng.uniform(0.04, 0.10) * m
            axes = r * rng.uniform(0.6, 1.0, 3)
            axes[rng.integers(3)] = r  # the largest semi-axis is r
            rho_max = max(r_cyl - r - 1.0, 0.0)
            rr = rho_max * np.sqrt(rng.uniform())
            t = rng.uniform(0.0, 2 * np.pi)
            zc, xc = cz + rr * np.sin(t), cx + rr * np.cos(t)
            y_lo, y_hi = r + 0.5, ny - 1.5 - r
            yc = rng.uniform(y_lo, y_hi) if y_hi > y_lo else cy
            ok = all((yc - p[0]) ** 2 + (zc - p[1]) ** 2 + (xc - p[2]) ** 2
                     > (r + p[3] + 1.0) ** 2 for p in placed)
            if ok or attempt == 199:
                break
        placed.append((yc, zc, xc, r))
        density = rng.uniform(lo_d, hi_d)
        _add_ellipsoid(vol, (yc, zc, xc), axes, _random_rotation(rng), density)
    return np.ascontiguousarray(vol, dtype=np.float32)


def _smooth_noise(rng, shape, corr_len):
    """Zero-mean, unit-variance Gaussian random field with Gaussian correlation ``corr_len``."""
    noise = rng.standard_normal(shape)
    f = np.fft.rfftn(noise)
    k2 = np.zeros(f.shape)
    for ax, n in enumerate(shape):
        k = np.fft.rfftfreq(n) if ax == len(shape) - 1 else np.fft.fftfreq(n)
        sh = [1] * len(shape)
        sh[ax] = k.size
        k2 = k2 + (k.reshape(sh)) ** 2
    f *= np.exp(-2.0 * (np.pi * corr_len) ** 2 * k2)
    field = np.fft.irfftn(f, s=shape, axes=tuple(range(len(shape))))
    sd = field.std()
    return (field - field.mean()) / (sd if sd > 0 else 1.0)


def thin_film_3d(shape=(32, 64, 128), thickness=None, seed=0, n_particles=None):
    """A textured lamella (slab) wider than the field of view at every tilt.

    The slab spans all of x and y and occupies ``|z| <= thickness/2`` around the slice
    centre, with partial-volume edges.  Inside: a base density 1, a smooth random texture
    (correlation length ~2 px, +-0.25) and small dense particles (density 2..4).  Mass enters
    and leaves the field of view as the tilt changes, which breaks the assumption behind
    centre-of-mass alignment (a fixed mass seen at every tilt).

    Parameters
    ----------
    shape : tuple of int
        Volume shape ``(ny, nz, nx)``.
    thickness : float, optional
        Slab thickness along z in pixels, ``0 < thickness <= nz``; defaults to ``nz / 4``.
    seed : int
        Seed of the texture and the particles.
    n_particles : int, optional
        Number of particles; defaults to one per ~150 pixels of slab area (``ny * nx``).

    Returns
    -------
    volume : ndarray, float32, shape (ny, nz, nx)
        Non-negative, zero outside the slab.
    """
    ny, nz, nx = _check_shape3(shape)
    thickness = 0.25 * nz if thickness is None else float(thickness)
    if not (0.0 < thickness <= nz):
        raise ValueError(f"thickness must be in (0, nz={nz}] pixels, got {thickness}")
    if n_particles is None:
        n_particles = max(1, (ny * nx) // 150)
    n_particles = as_positive_int(n_particles, "n_particles")
    rng = np.random.default_rng(seed)
    z = np.arange(nz) - 0.5 * (nz - 1)
    half = 0.5 * thickness
    # Fraction of each voxel row [z-1/2, z+1/2] inside [-half, half].
    occ = np.clip(np.minimum(z + 0.5, half) - np.maximum(z - 0.5, -half), 0.0, 1.0)
    texture = 1.0 + 0.25 * np.clip(_smooth_noise(rng, (ny, nz, nx), 2.0), -2.0, 2.0) / 2.0
    vol = texture * occ[None, :, None]
    cz = 0.5 * (nz - 1)
    for _ in range(n_particles):
        r_hi = min(3.0, 0.8 * half)  # particles stay inside the slab
        r = rng.uniform(min(1.0, r_hi), r_hi)
        zc = cz + rng.uniform(-(half - r), half - r)
        yc, xc = rng.uniform(0, ny - 1), rng.uniform(0, nx - 1)
        _add_ellipsoid(vol, (yc, zc, xc), (r, r, r), np.eye(3), rng.uniform(2.0, 4.0))
    return np.ascontiguousarray(vol, dtype=np.float32)


def slab_volume(shape, thickness, *, pitch_deg=0.0, film_density=1.0, seed=0,
                n_particles=None):
    """A textured film with dense particles, wider than any field of view cut from it.

    The film occupies ``|d| <= thickness/2`` with ``d = z cos(p) - x sin(p)`` (``p`` the
    pitch: the slab plane rotated about the tilt axis), partial-volume edges, density
    ``film_density`` times a smooth random texture (1 +- 0.25).  Particles (radius 1-3 px,
    density 2-4) have their centres inside the film, so some protrude from its surfaces.

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nz, nx)``.
    thickness : float
        Film thickness (px).
    pitch_deg : float
    film_density : float
    seed : int
    n_particles : int, optional
        Default one per 60 px of ``ny * nx``.

    Returns
    -------
    ndarray, float32, shape (ny, nz, nx)
    """
    ny, nz, nx = _check_shape3(shape)
    rng = np.random.default_rng(seed)
    p = np.deg2rad(pitch_deg)
    z = np.arange(nz) - 0.5 * (nz - 1)
    x = np.arange(nx) - 0.5 * (nx - 1)
    d = z[:, None] * np.cos(p) - x[None, :] * np.sin(p)
    half = 0.5 * float(thickness)
    occ = np.clip(np.minimum(d + 0.5, half) - np.maximum(d - 0.5, -half), 0.0, 1.0)
    texture = 1.0 + 0.25 * np.clip(_smooth_noise(rng, (ny, nz, nx), 2.0), -2.0, 2.0) / 2.0
    vol = film_density * texture * occ[None]
    if n_particles is None:
        n_particles = (ny * nx) // 60
    for _ in range(n_particles):
        r = rng.uniform(1.0, 3.0)
        dd = rng.uniform(-half, half)
        xc, yc = rng.uniform(0, nx - 1), rng.uniform(0, ny - 1)
        zc = 0.5 * (nz - 1) + (dd + (xc - 0.5 * (nx - 1)) * np.sin(p)) / np.cos(p)
        if 0 <= zc < nz:
            _add_ellipsoid(vol, (yc, zc, xc), (r, r, r), np.eye(3), rng.uniform(2.0, 4.0))
    return np.ascontiguousarray(vol, dtype=np.float32)
