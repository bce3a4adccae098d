"""Synthetic misaligned tilt series: the one truth generator of the tests and benchmarks.

* :func:`fourier_shift` -- the periodic (circular) sub-pixel translation by Fourier phase ramps
  used to *make* misaligned data, ``out(x, y) = img(x - dx, y - dy)`` (DESIGN.md shift
  convention), computed in float64.  Not the library's resampler
  :func:`fastalign.fourier_shift` (edge-padded, float32, ``(n, 2)`` shifts), which is what the
  alignment applies to measured data.
* :func:`seed_experiment` -- the seed paper's misaligned sinogram of a binary phantom.
* :func:`rotated_axis_experiment` -- a 3-D particle tilt series with a rotated, off-centre
  tilt axis.

Everything is seeded (``numpy.random.default_rng``) and deterministic; the phantoms come from
:mod:`fastalign.phantoms`.
"""
from typing import NamedTuple

import numpy as np

from ._validate import as_positive_int
from .phantoms import _check_shape3, binary_phantom_2d, particles_3d, slab_volume

__all__ = [
    "slab_experiment",
    "SlabExperiment",
    "fourier_shift",
    "SeedExperiment",
    "seed_experiment",
    "RotatedAxisExperiment",
    "rotated_axis_experiment",
]


def fourier_shift(img, dx, dy=0.0):
    """Sub-pixel translation by Fourier phase ramp: ``out(x, y) = img(x - dx, y - dy)``.

    The shift is circular (periodic boundary); pad first if the content reaches the border.
    The Nyquist components (even sizes) are handled symmetrically: the real part of the
    complex result is kept, which multiplies them by ``cos(pi * shift)``.  Integer shifts
    therefore reproduce ``np.roll`` up to round-off, but a sub-pixel shift is not exactly
    invertible for signals with Nyquist content (no real-valued shift is).

    Parameters
    ----------
    img : array_like, shape (nx,) or (..., ny, nx)
        A row, an image or a stack of images (last two axes ``y, x``).
    dx, dy : float or array_like
        Shifts in pixels along x (last axis) and y (second-to-last axis).  For a stack, arrays
        broadcast against the leading dimensions ``img.shape[:-2]`` (one shift per image).
        For a 1-D row ``dy`` must be 0.

    Returns
    -------
    out : ndarray, float32, same shape as ``img``
    """
    a = np.asarray(img, dtype=np.float64)
    if a.ndim == 0 or a.size == 0:
        raise ValueError(f"img must be a non-empty 1-D or n-D array, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError("img contains NaN/Inf values")
    dx = np.asarray(dx, dtype=np.float64)
    dy = np.asarray(dy, dtype=np.float64)
    if not (np.all(np.isfinite(dx)) and np.all(np.isfinite(dy))):
        raise ValueError("shifts must be finite")
    if a.ndim == 1:
        if dx.ndim != 0 or np.any(dy != 0):
            raise ValueError("a 1-D row takes a scalar dx and dy = 0")
        kx = np.fft.fftfreq(a.shape[0])
        out = np.fft.ifft(np.fft.fft(a) * np.exp(-2j * np.pi * kx * dx)).real
        return np.ascontiguousarray(out, dtype=np.float32)
    ny, nx = a.shape[-2:]
    lead = a.shape[:-2]
    try:
        dxb = np.broadcast_to(dx, lead)[..., None, None]
        dyb = np.broadcast_to(dy, lead)[..., None, None]
    except ValueError:
        raise ValueError(f"shifts of shapes {dx.shape}, {dy.shape} do not broadcast against "
                         f"the stack dimensions {lead}") from None
    ky = np.fft.fftfreq(ny)[:, None]
    kx = np.fft.fftfreq(nx)[None, :]
    phase = np.exp(-2j * np.pi * (ky * dyb + kx * dxb))
    out = np.fft.ifft2(np.fft.fft2(a, axes=(-2, -1)) * phase, axes=(-2, -1)).real
    return np.ascontiguousarray(out, dtype=np.float32)


class SeedExperiment(NamedTuple):
    """The seed paper's misaligned sinogram (see :func:`seed_experiment`)."""

    data: np.ndarray
    """Misaligned tilt series, float32, shape ``(n_tilts, 1, n)``."""
    angles_deg: np.ndarray
    """Tilt angles in degrees, float64, shape ``(n_tilts,)``."""
    shifts: np.ndarray
    """True shifts ``(dx, dy)`` in pixels, float64, shape ``(n_tilts, 2)``; ``dy = 0``."""


def seed_experiment(n=256, step_deg=2, shift_range=20, seed=0):
    """The seed paper's test: a binary phantom's sinogram with random x misalignment.

    The ideal sinogram is the Joseph projection (:func:`fastalign.project`) of
    ``binary_phantom_2d(n, seed)`` over ``0, step_deg, ..., < 180`` degrees; tilt ``i`` is then
    translated by ``dx_i ~ U[-shift_range, shift_range]`` with :func:`fourier_shift`, i.e.
    ``data[i, 0, x] = ideal[i, 0, x - dx_i]`` (DESIGN.md shift convention).  The rows are
    zero-padded while shifting, so content pushed past the detector edge is lost rather than
    wrapped around; with the defaults (phantom radius ``0.4 n``, shifts up to ``0.08 n``)
    nothing leaves the detector.

    Parameters
    ----------
    n : int
        Phantom / detector size in pixels.
    step_deg : float
        Angular step in degrees.
    shift_range : float
        Half-width of the uniform shift distribution, pixels.
    seed : int
        Seeds both the phantom layout and (independently) the shifts.

    Returns
    -------
    SeedExperiment
        ``(data, angles_deg, shifts)``: data float32 ``(n_tilts, 1, n)``, angles float64
        ``(n_tilts,)``, shifts float64 ``(n_tilts, 2)`` with columns ``(dx, dy)``, ``dy = 0``.
        The phantom is ``binary_phantom_2d(n, seed)``.
    """
    from .operator import project  # the library layer, imported lazily

    n = as_positive_int(n, "n", minimum=8)
    step_deg = float(step_deg)
    if not (np.isfinite(step_deg) and step_deg > 0):
        raise ValueError(f"step_deg must be a positive number, got {step_deg}")
    shift_range = float(shift_range)
    if not (np.isfinite(shift_range) and shift_range >= 0):
        raise ValueError(f"shift_range must be a non-negative number, got {shift_range}")
    angles = np.arange(0.0, 180.0 - 1e-9, step_deg)
    phantom = binary_phantom_2d(n, seed)
    ideal = project(phantom[None], angles)
    rng = np.random.default_rng([seed, 1])  # independent of the phantom's stream
    shifts = np.zeros((angles.size, 2), dtype=np.float64)
    shifts[:, 0] = rng.uniform(-shift_range, shift_range, angles.size)
    # Zero-pad so that content shifted past the detector edge is lost, not wrapped around.
    pad = int(np.ceil(shift_range)) + 2
    padded = np.pad(ideal, ((0, 0), (0, 0), (pad, pad)))
    data = fourier_shift(padded, shifts[:, 0], shifts[:, 1])[:, :, pad:pad + n]
    return SeedExperiment(np.ascontiguousarray(data), angles, shifts)


class RotatedAxisExperiment(NamedTuple):
    """A 3D tilt series with a rotated tilt axis (see :func:`rotated_axis_experiment`)."""

    data: np.ndarray
    """Measured tilt series, float32, shape ``(n_tilts, ny, nx)``."""
    angles_deg: np.ndarray
    """Tilt angles in degrees, float64, shape ``(n_tilts,)``."""
    shifts: np.ndarray
    """True shifts ``(dx, dy)`` (aligned frame), float64, shape ``(n_tilts, 2)``."""
    axis_angle_deg: float
    """True tilt-axis angle in degrees (sign: :mod:`fastalign.align.axis`)."""
    center_offset: float
    """True rotation-centre offset in pixels (DESIGN.md)."""
    volume: np.ndarray
    """The phantom, float32, shape ``(ny, nz, nx)``."""


def rotated_axis_experiment(shape=(48, 64, 64), angles_deg=None, axis_angle_deg=3.0,
                            center_offset=5.0, shift_range=5.0, blur=1.0, noise=0.0, seed=0):
    """Particles tilt series whose tilt axis is rotated in the image plane and off centre.

    The volume holds :func:`fastalign.phantoms.particles_3d` particles in its middle half of rows
    and in a central cylinder narrow enough that the centre offset, the rotation and the shifts
    move no content off the detector.  Its ideal projections
    (:func:`fastalign.project`, axis along y through column ``(nx-1)/2 + center_offset``) are
    translated by the shifts and rotated by ``axis_angle_deg`` about the image centre in one
    quintic-spline resampling (``scipy.ndimage.affine_transform``, order 5), i.e.
    ``data[i](r) = ideal[i](R(alpha)^-1 (r - c) + c - s_i)`` (model of
    :mod:`fastalign.align.axis`).

    The shifts are drawn from ``U[-shift_range, shift_range]`` and then put in fastalign's
    gauge: the least-squares fit of ``c0 + a cos th + b sin th`` is removed from dx and the
    mean from dy.  With free per-tilt shifts a constant dx *is* a centre offset, so this makes
    ``center_offset`` the identifiable truth and lets results be compared with
    :func:`fastalign.gauge_error` directly.

    The projections are blurred by an isotropic Gaussian (``blur`` pixels, a microscope's
    transfer function) before resampling: the particles' sharp edges are otherwise not
    band-limited and any interpolation (the generator's as well as the aligner's) errs by
    ~10 % RMS near them.

    Parameters
    ----------
    shape : tuple of int
        Volume ``(ny, nz, nx)``.
    angles_deg : array_like, optional
        Tilt angles (default ``-60, -58, ..., 60``).
    axis_angle_deg : float
        In-plane tilt-axis angle in degrees.
    center_offset : float
        Rotation-centre offset in pixels.
    shift_range : float
        Half-width of the uniform shift distribution, pixels.
    blur : float
        Standard deviation (pixels) of the Gaussian blur of the projections; 0 for none.
    noise : float
        Standard deviation of added Gaussian noise relative to the data's standard deviation.
    seed : int
        Seeds the particles, the shifts and the noise.

    Returns
    -------
    RotatedAxisExperiment
        ``(data, angles_deg, shifts, axis_angle_deg, center_offset, volume)``.
    """
    import scipy.ndimage as ndi

    from .operator import project  # the library layer, imported lazily

    ny, nz, nx = _check_shape3(shape)
    angles = (np.arange(-60.0, 60.5, 2.0) if angles_deg is None
              else np.asarray(angles_deg, dtype=np.float64).ravel())
    alpha = float(axis_angle_deg)
    co = float(center_offset)
    if not (np.isfinite(alpha) and np.isfinite(co)):
        raise ValueError("axis_angle_deg and center_offset must be finite")
    # keep every particle inside the detector whatever the centre offset, shift and rotation
    margin = int(np.ceil(abs(co) + shift_range + abs(np.sin(np.deg2rad(alpha))) * ny / 2
                         + 3 * blur + 2))
    nx_in = nx - 2 * margin
    if nx_in < 16:
        raise ValueError(f"nx={nx} leaves no room for the particles with center_offset={co}, "
                         f"shift_range={shift_range}: use a wider shape")
    nz_in = min(nz, nx_in)
    vol = np.zeros((ny, nz, nx), np.float32)
    q = ny // 4
    z0 = (nz - nz_in) // 2
    vol[q:ny - q, z0:z0 + nz_in, margin:margin + nx_in] = particles_3d(
        (ny - 2 * q, nz_in, nx_in), n_particles=10, seed=seed)
    ideal = project(vol, angles, center_offset=co)
    if blur:
        ideal = ndi.gaussian_filter(ideal, (0.0, float(blur), float(blur)), mode="constant")
    rng = np.random.default_rng([seed, 8])
    s = rng.uniform(-shift_range, shift_range, (angles.size, 2))
    th = np.deg2rad(angles)
    M = np.stack([np.ones_like(th), np.cos(th), np.sin(th)], axis=1)
    s[:, 0] -= M @ np.linalg.lstsq(M, s[:, 0], rcond=None)[0]
    s[:, 1] -= s[:, 1].mean()
    a = np.deg2rad(alpha)
    m = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])  # R(-alpha) on (y, x)
    c = np.array([0.5 * (ny - 1), 0.5 * (nx - 1)])
    data = np.empty_like(ideal)
    for i in range(angles.size):
        off = c - m @ c - s[i, ::-1]
        ndi.affine_transform(ideal[i].astype(np.float64), m, offset=off, output=data[i],
                             order=5, mode="constant", cval=0.0)
    if noise:
        data += rng.normal(0.0, float(noise) * float(data.std()), data.shape).astype(np.float32)
    return RotatedAxisExperiment(np.ascontiguousarray(data), angles, s, alpha, co, vol)


class SlabExperiment(NamedTuple):
    """A slab specimen's tilt series (:func:`slab_experiment`)."""
    data: np.ndarray           # (n_tilts, fov, fov) float32, truncated, shifted, noisy
    angles_deg: np.ndarray     # (n_tilts,)
    shifts: np.ndarray         # (n_tilts, 2) true (dx, dy), px
    thickness_px: float        # film thickness
    pitch_deg: float


def slab_experiment(fov=128, thickness=28.0, *, tilt_deg=60.0, step_deg=2.0, pitch_deg=0.0,
                    film_density=1.0, shift_range=10.0, counts=1000.0, seed=0,
                    angle_offset_deg=0.0):
    """Tilt series of a slab wider than the field of view at every tilt (issue 17's case).

    A :func:`slab_volume` wide enough for every tilt is projected onto a wide detector, each
    tilt is translated by ``(dx, dy) ~ U[-shift_range, shift_range]`` (periodic Fourier
    shift of the wide projection), and the central ``fov x fov`` window is cut out: the data
    are truncated in x and y, and material drifts in and out of the frame.  Poisson noise
    with ``counts`` expected counts at the mean intensity (0: noise-free).  With
    ``angle_offset_deg`` the views are taken at ``angles + angle_offset_deg`` (a stage whose
    zero is off) while ``angles_deg`` keeps the nominal ones.

    Returns
    -------
    SlabExperiment
    """
    from .operator import project
    angles = np.arange(-tilt_deg, tilt_deg + 0.5 * step_deg, step_deg, dtype=np.float64)
    true_angles = angles + float(angle_offset_deg)
    th = np.deg2rad(np.abs(true_angles).max())
    half_w = (0.5 * fov + shift_range + 0.5 * thickness * np.sin(th) + 2) / np.cos(th) + 8
    nxb = int(2 * np.ceil(half_w)) + fov % 2
    nyb = fov + 2 * int(np.ceil(shift_range)) + 8
    p = np.deg2rad(pitch_deg)
    nzb = int(np.ceil(thickness / np.cos(p) + nxb * abs(np.sin(p)) + 8))
    vol = slab_volume((nyb, nzb, nxb), thickness, pitch_deg=pitch_deg,
                      film_density=film_density, seed=seed)
    wide = project(vol, true_angles)
    rng = np.random.default_rng(seed + 1000)
    true = rng.uniform(-shift_range, shift_range, (angles.size, 2))
    y0, x0 = (nyb - fov) // 2, (nxb - fov) // 2
    data = np.empty((angles.size, fov, fov), np.float32)
    for i in range(angles.size):
        data[i] = fourier_shift(wide[i], true[i, 0], true[i, 1])[y0:y0 + fov, x0:x0 + fov]
    if counts:
        scale = counts / float(data.mean())
        data = (rng.poisson(np.clip(data, 0, None) * scale) / scale).astype(np.float32)
    return SlabExperiment(data, angles, true, float(thickness), float(pitch_deg))
