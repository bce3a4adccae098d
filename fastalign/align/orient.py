"""Tilt-axis direction from the data, over the full circle (no reconstruction).

A file straight from the microscope may have its tilt axis in any direction in the image
(FEI's HAADF series are often at 90 degrees, a Krios camera near 85).  Two criteria, both
blind to the unknown shifts:

Decorrelation anisotropy (:func:`decorrelation_axis`)
    Tilting moves content along the normal to the axis (by ``z sin``), never along it.  Two
    tilts a few degrees apart, translated onto each other, therefore still agree at spatial
    frequencies parallel to the axis (the common line of the Fourier-slice theorem) and
    disagree at frequencies along the normal.  The per-frequency decorrelation
    ``|F_b - F_a|^2 / (|F_a|^2 + |F_b|^2)`` summed over such pairs is anisotropic; the
    direction of its second angular harmonic's minimum is the axis.  Robust on slabs and
    truncated fields (a circular window removes the frame edges), accurate to about a degree.

Common line (:func:`fastalign.align.axis.coarse_axis_angle`)
    The profile along the axis is the same at every tilt; accurate to ~0.1 degree on a
    compact object, unreliable on a specimen wider than the field of view.

:func:`find_orientation` combines them: the decorrelation estimate chooses a quarter turn
(the data are rotated by a multiple of 90 degrees exactly, without interpolation) and the
residual angle within +-45 degrees; on a compact object the common-line estimate near it
refines the residual.  The axis *direction* is determined modulo 180 degrees: the opposite
direction describes the same data with the volume turned upside down (inverted handedness);
the data cannot tell them apart, the reported angle is the representative in (-90, 90]
unless a header gives a hint (then the one nearest the hint).
"""
import logging
from dataclasses import dataclass, field

import numpy as np

from . import axis as _axis

log = logging.getLogger("fastalign.align")

__all__ = ["decorrelation_axis", "find_orientation", "Orientation", "quarter_turn",
           "ORIENT_MIN_DEG", "COMMON_LINE_AGREE_DEG"]

#: a residual angle below this (degrees) after the quarter turn is taken as zero (no
#: in-plane resampling, no axis refinement unless asked): the decorrelation estimate is
#: accurate to about a degree
ORIENT_MIN_DEG = 1.0
#: the same on a specimen that is not compact (the profiles cannot refine it): the
#: decorrelation estimate alone, about a degree off on the slab phantoms
ORIENT_MIN_SLAB_DEG = 2.5
#: the common-line estimate refines the residual when it lies within this many degrees of
#: the decorrelation estimate (a compact object); a needle-like object, invariant under any
#: tilt, can fool it far from the truth
COMMON_LINE_AGREE_DEG = 6.0
#: a decorrelation anisotropy below this leaves the direction weakly determined (measured:
#: slabs and compact phantoms 0.5-0.6, pure noise < 0.05, ETSpy's HAADF needle 0.03, which
#: looks nearly the same at every tilt); then a residual of at most WEAK_SNAP_DEG from a
#: quarter turn is taken as 0 -- acquisition software puts the axis near a multiple of 90
#: degrees (FEI's "tilt axis angle 90") -- and the diagnosis names --axis-angle
WEAK_ANISOTROPY = 0.15
WEAK_SNAP_DEG = 10.0
#: ... and within this many degrees when the anisotropy is strong
COMMON_LINE_REACH_DEG = 15.0
#: the search needs images at least this wide and tall (px) and this many tilts: a
#: sinogram (one row) or a 24-row strip has no second direction to compare (measured: a
#: 24 x 48 box with 20 tilts gave 7 degrees for a vertical axis)
ORIENT_MIN_SIZE = 32
ORIENT_MIN_TILTS = 8
#: gap between the paired tilts (degrees): large enough to decorrelate along the normal
PAIR_GAP_DEG = 8.0


def _window(ny, nx):
    """Circular window: 1 inside half the radius, raised-cosine to 0 at the inscribed circle."""
    yy, xx = np.mgrid[0:ny, 0:nx]
    r = np.hypot((yy - 0.5 * (ny - 1)) / (0.5 * ny), (xx - 0.5 * (nx - 1)) / (0.5 * nx))
    return np.where(r < 1.0, 0.5 * (1.0 + np.cos(np.pi * np.clip(2.0 * r - 1.0, 0.0, 1.0))),
                    0.0)


def _pair_shift(cross, ny, nx):
    """``(sy, sx)``: peak of the phase correlation of a cross-power spectrum (sub-pixel)."""
    mag = np.abs(cross)
    pc = np.fft.ifft2(cross / np.maximum(mag, 1e-12 * mag.max() + 1e-300)).real
    j0, j1 = np.unravel_index(int(np.argmax(pc)), pc.shape)

    def vertex(vm, v0, vp):
        d = vm - 2.0 * v0 + vp
        return 0.0 if d == 0 else 0.5 * (vm - vp) / d

    sy = j0 + vertex(pc[(j0 - 1) % ny, j1], pc[j0, j1], pc[(j0 + 1) % ny, j1])
    sx = j1 + vertex(pc[j0, (j1 - 1) % nx], pc[j0, j1], pc[j0, (j1 + 1) % nx])
    return (sy + 0.5 * ny) % ny - 0.5 * ny, (sx + 0.5 * nx) % nx - 0.5 * nx


def decorrelation_axis(tilt_series, angles_deg, *, max_size=128, band=(0.03, 0.3),
                       gap_deg=PAIR_GAP_DEG):
    """Axis angle (degrees, in [-90, 90)) from the anisotropy of the decorrelation between
    tilts ``gap_deg`` apart (module docstring).

    Returns
    -------
    (float, float)
        The angle (sign: :mod:`fastalign.align.axis`) and the anisotropy strength in [0, 1]
        (the second harmonic's amplitude over the summed deviation; ~0 when the data carry
        no direction, e.g. noise or a series that does not change with the tilt).
    """
    small = _axis._binned_to(tilt_series, max_size).astype(np.float64)
    n, ny, nx = small.shape
    win = _window(ny, nx)
    order = np.argsort(angles_deg, kind="stable")
    a_sorted = np.asarray(angles_deg, dtype=np.float64)[order]
    spectra = np.empty((n, ny, nx), np.complex128)
    for j, i in enumerate(order):
        im = small[i]
        spectra[j] = np.fft.fft2((im - (im * win).sum() / win.sum()) * win)
    ky = np.fft.fftfreq(ny)[:, None] + np.zeros((1, nx))
    kx = np.fft.fftfreq(nx)[None, :] + np.zeros((ny, 1))
    kr = np.hypot(kx, ky)
    sel = (kr >= band[0]) & (kr <= band[1])
    # a frequency parallel to the axis direction (-sin a, cos a) has a = atan2(-kx, ky)
    psi = np.arctan2(-kx, ky)[sel]
    step = float(np.median(np.diff(a_sorted))) if n > 1 else 1.0
    gap = max(1, min(n - 1, int(round(gap_deg / max(step, 1e-6)))))
    num = np.zeros((ny, nx))
    den = np.zeros((ny, nx))
    for j in range(n - gap):
        a, b = spectra[j], spectra[j + gap]
        sy, sx = _pair_shift(b * np.conj(a), ny, nx)
        b = b * np.exp(2j * np.pi * (ky * sy + kx * sx))
        num += np.abs(b - a) ** 2
        den += np.abs(a) ** 2 + np.abs(b) ** 2
    w = num[sel] / np.maximum(den[sel], 1e-300)
    w = w - w.mean()
    z = np.sum(w * np.exp(2j * psi))
    total = float(np.abs(w).sum())
    alpha = 0.5 * np.degrees(np.angle(-z))  # where the decorrelation is smallest
    return float((alpha + 90.0) % 180.0 - 90.0), (float(abs(z)) / total if total > 0 else 0.0)


def quarter_turn(stack, k):
    """``stack`` turned back by ``k`` quarter turns, exactly: the same as
    ``rotate_shift(stack, 90 k, 0)`` (which undoes a tilt axis at ``90 k`` degrees,
    :mod:`fastalign.align.axis`), without interpolation."""
    k = int(k) % 4
    if k == 0:
        return stack
    return np.ascontiguousarray(np.rot90(stack, k, axes=(1, 2)))


@dataclass
class Orientation:
    """Outcome of :func:`find_orientation`.

    ``quarter_turns``: the data are turned back by this many quarter turns (``90 k``
    degrees) before alignment; ``alpha``: the residual starting angle (degrees) of the turned
    data (0 when below :data:`ORIENT_MIN_DEG`); ``refine``: the residual is refined in the
    loop; ``record``: what was found, for ``AlignResult.options["orientation"]``; ``slab``:
    the turned data were taken as a slab (the profile searches skipped)."""

    quarter_turns: int = 0
    alpha: float = 0.0
    refine: bool = False
    start: float = 0.0
    record: dict = field(default_factory=dict)
    slab: bool = False

    @property
    def axis_angle_deg(self):
        """Starting axis angle of the raw data (degrees)."""
        return 90.0 * self.quarter_turns + self.alpha


def find_orientation(data, angles_deg, *, hint_deg=None, max_size=128, specimen="auto"):
    """Tilt-axis direction of a raw tilt series over the full circle (module docstring).

    Parameters
    ----------
    data : ndarray, shape (n_tilts, ny, nx)
        Background-free data (mass positive).
    angles_deg : array_like
    hint_deg : float, optional
        A header's axis angle: chooses between the two directions 180 degrees apart.
    specimen : {"auto", "slab", "compact"}
        On a slab (``"auto"``: the turned data's edge fraction above
        :data:`fastalign.align.specimen.SLAB_EDGE_FRACTION`) the common-line and profile
        searches are skipped: they cannot refine a specimen wider than the field (measured
        profile misfit 0.77-1.5 on the slab phantoms, against :data:`PROFILE_USE` 0.2) and
        cost 2.5-3.5 s on 61 x 128 x 128.  They are skipped too when a weak anisotropy
        snaps the direction to the nearest quarter turn (their result would not be used).

    Returns
    -------
    Orientation
    """
    from .specimen import SLAB_EDGE_FRACTION, edge_fraction
    from .start import PROFILE_USE
    coarse, strength = decorrelation_axis(data, angles_deg, max_size=max_size)
    if hint_deg is not None:  # the representative nearest the hint (modulo 180)
        coarse += 180.0 * np.round((float(hint_deg) - coarse) / 180.0)
    elif coarse <= -90.0 + 1e-9:
        coarse += 180.0
    k = int(np.round(coarse / 90.0))
    turned = quarter_turn(data, k)
    residual = coarse - 90.0 * k
    record = dict(method="decorrelation anisotropy (full circle)",
                  decorrelation_deg=round(float(coarse), 3),
                  anisotropy=round(float(strength), 4),
                  quarter_turns=k, handedness="axis direction known modulo 180 degrees; the "
                  "opposite direction gives the inverted (mirror-image) volume")
    if hint_deg is not None:
        record["hint_deg"] = float(hint_deg)
    weak = strength < WEAK_ANISOTROPY
    # a compact object's profiles are reliable where the decorrelation is not (measured: up
    # to 7 degrees off on the particle phantoms); a weak anisotropy (an object that looks
    # the same at every tilt) makes the profiles agree almost anywhere, so they must then
    # agree with the decorrelation closely
    reach = COMMON_LINE_AGREE_DEG if weak else COMMON_LINE_REACH_DEG
    snap = weak and abs(residual) <= WEAK_SNAP_DEG
    slab = (specimen == "slab"
            or specimen == "auto" and edge_fraction(turned) > SLAB_EDGE_FRACTION)
    if slab or snap:
        # snap: the direction is the quarter turn whatever the profiles say (ETSpy's HAADF
        # needle: 3.2 of the orientation's 4.4 s were spent on the profile search)
        record["profiles"] = ("not searched (slab)" if slab
                              else "not searched (weak anisotropy: nearest quarter turn)")
        compact = False
    else:
        lo, hi = residual - reach, residual + reach
        line = _axis.coarse_axis_angle(turned, search_deg=max(abs(lo), abs(hi)) + 1.0,
                                       window=(lo, hi), step_deg=0.5)
        a_prof, misfit = _axis.profile_axis_angle(turned, line, search_deg=90.0)
        record.update(common_line_deg=round(float(90.0 * k + line), 3),
                      profile_deg=round(float(90.0 * k + a_prof), 3),
                      profile_misfit=round(float(misfit), 4))
        compact = (not snap and misfit <= PROFILE_USE and abs(a_prof - residual) <= reach)
    start = a_prof if compact else residual
    record["used"] = "profiles (compact object)" if compact else "decorrelation"
    if snap:
        start = 0.0
        record["used"] = "nearest quarter turn (weak anisotropy)"
    refine = abs(start) >= (0.5 * ORIENT_MIN_DEG if compact else ORIENT_MIN_SLAB_DEG)
    alpha = start if refine else 0.0
    record["start_deg"] = round(float(90.0 * k + alpha), 3)
    log.info("tilt axis from the data: %.2f deg (decorrelation %.2f, profiles %s; %d quarter "
             "turn(s), residual %.2f %s)", 90.0 * k + alpha, coarse,
             record.get("profile_deg", "not searched"), k, alpha,
             "refined" if refine else "taken as 0")
    return Orientation(quarter_turns=k, alpha=float(alpha), refine=bool(refine),
                       record=record, start=float(start), slab=bool(slab))


def unsearched(shape):
    """The orientation record of a series of ``shape`` too small to search (fewer than
    :data:`ORIENT_MIN_SIZE` px either way or :data:`ORIENT_MIN_TILTS` tilts), else None."""
    n, ny, nx = shape
    if min(ny, nx) < ORIENT_MIN_SIZE or n < ORIENT_MIN_TILTS:
        return dict(method="none", used=f"not searched: images {ny} x {nx} / {n} tilts "
                    f"(needs at least {ORIENT_MIN_SIZE} px both ways and "
                    f"{ORIENT_MIN_TILTS} tilts)", quarter_turns=0, start_deg=0.0)
    return None


def orient_data(data, angles_deg, opts):
    """Find the axis direction (:func:`find_orientation`) and turn ``data`` towards y.

    The quarter turns are exact.  A residual angle is refined by the loop on a compact
    object (``"axis_angle"`` added to ``opts.refine``); the slab loop does not refine the
    axis, so a slab's residual is resampled away once here and kept fixed.

    Returns
    -------
    data, opts : the turned data and the options to run with
    alpha : float
        Starting axis angle of ``data`` for the loop (degrees).
    offset_deg : float
        Added to the loop's final angle to give the raw data's axis angle.
    record : dict
        For ``AlignResult.options["orientation"]``.
    """
    import dataclasses

    record = unsearched(data.shape)
    if record is not None:
        alpha = 0.0
        if opts.refine_axis:  # the previous behaviour: a search around y
            from .start import coarse_axis
            alpha, extra, _ = coarse_axis(data, opts)
            record.update(extra)
        return data, opts, float(alpha), 0.0, record
    found = find_orientation(data, angles_deg, specimen=opts.specimen)
    data = quarter_turn(data, found.quarter_turns)
    offset, record = 90.0 * found.quarter_turns, found.record
    alpha = found.alpha if found.refine else (found.start if opts.refine_axis else 0.0)
    if alpha != 0.0 and found.slab:
        data = _axis.rotate_shift(data, alpha, np.zeros((data.shape[0], 2)))
        record["resampled_deg"] = float(alpha)
        offset, alpha = offset + alpha, 0.0
    elif alpha != 0.0 and not opts.refine_axis:
        opts = dataclasses.replace(opts, refine=opts.refine + ("axis_angle",))
    return data, opts, float(alpha), float(offset), record


def turn_like(stack, record):
    """``stack`` turned as :func:`orient_data` turned the data (its ``record``): the same
    quarter turns, and the same one resampling of a slab's residual angle."""
    stack = quarter_turn(stack, record.get("quarter_turns", 0))
    if record.get("resampled_deg"):
        stack = _axis.rotate_shift(stack, record["resampled_deg"],
                                   np.zeros((stack.shape[0], 2)))
    return stack
