"""Coarse-to-fine levels of the alignment loop: binning, the level plan, rows, warm start.

A level is a binning factor ``f`` (``fy`` along y, :func:`y_factor`).  Its plan
(:class:`Level`) fixes everything that does not depend on the iterations: the binned geometry
(:meth:`fastalign.TiltGeometry.binned`: size, thickness, centre offset), the detector padding,
the outer-iteration budget and the tolerance.  Every executor of :mod:`fastalign.align.loop`
reads the same plan; the row budget (:func:`level_rows`) is the local executor's.
"""
from dataclasses import dataclass

import numpy as np
import scipy.ndimage as ndi

from ..geometry import TiltGeometry
from ..operator import Projector

__all__ = ["bin_stack", "y_factor", "auto_levels", "Level", "plan_levels", "level_rows",
           "row_signal", "signal_window", "row_runs", "pad_columns", "detector_pad",
           "region_projector", "warm_start"]

# images at least this wide are aligned on 2x binned data by default (finest level 2)
BINNED_FINEST_NX = 512
# a coarse level ends when its (tail-aware) update is below COARSE_TOL binned pixels: a well
# converged coarse level is cheap and shortens the expensive finer ones
COARSE_TOL = 0.01


def y_factor(ny, f):
    """Binning along y: as along x, unless too few rows would be left (then none)."""
    return f if ny // f >= 4 else 1


def bin_stack(stack, f, fy=None):
    """Mean over ``fy x f`` blocks in (y, x); trailing rows/columns that do not fill a block
    are cropped.  Returns float32 ``(n, ny//fy, nx//f)``."""
    fy = f if fy is None else fy
    if f == 1 and fy == 1:
        return stack
    n, ny, nx = stack.shape
    my, mx = (ny // fy) * fy, (nx // f) * f
    v = stack[:, :my, :mx].reshape(n, my // fy, fy, mx // f, f)
    return np.ascontiguousarray(v.mean(axis=(2, 4), dtype=np.float64), dtype=np.float32)


def auto_levels(ny, nx, max_shift_px):
    """Binning factors, coarse to fine: coarsest >= 48 px wide, enough to reach max_shift;
    the finest is 1, or 2 from ``BINNED_FINEST_NX`` px wide (the full-resolution level then
    cost 2.5-4.5 times more for about the same accuracy, bench/align_speed.py, README)."""
    levels = [2 if nx >= BINNED_FINEST_NX else 1]
    f = 2 * levels[0]
    while nx // f >= 48 and (f <= 4 or max_shift_px / f > 4):
        levels.insert(0, f)
        f *= 2
    return levels


@dataclass(frozen=True)
class Level:
    """One level of the plan (sizes in binned pixels unless noted).

    Attributes
    ----------
    f, fy : int
        Binning along x (and z) and along y.
    geometry : TiltGeometry
        Binned geometry ``(ny // fy, nz_l, nx // f)`` with the binned centre offset.
    pad : int
        Region columns added per side (``ceil(pad_x / f)``); negative: columns cropped per
        side around a compact object (:func:`fastalign.align.specimen.compact_region`).
    n_outer : int
        Outer-iteration budget (``max_iter`` on the finest level, else ``coarse_iter``).
    tol : float
        Stop tolerance (full-resolution px): ``tol`` on the finest level, else
        ``max(tol, COARSE_TOL f)``.
    final : bool
        The finest level.
    crop_z : int
        Depth cropped per side (compact object); ``geometry.nz`` is the cropped depth.
    """

    f: int
    fy: int
    geometry: TiltGeometry
    pad: int
    n_outer: int
    tol: float
    final: bool
    crop_z: int = 0

    @property
    def scale(self):
        """``(f, fy)`` float64: binned -> full-resolution pixels of ``(dx, dy)``."""
        return np.array([self.f, self.fy], dtype=np.float64)

    @property
    def shape(self):
        """Volume shape of all rows, padded: ``(ny_l, nz_l, nx_l + 2 pad)``."""
        ny, nz, nx = self.geometry.shape
        return (ny, nz, nx + 2 * self.pad)

    @property
    def embed(self):
        """``(crop_z, crop_x)`` per side that this level's region lacks around the field
        (zero padding restores the uncropped region; :func:`warm_start`), or None."""
        if self.pad >= 0 and not self.crop_z:
            return None
        return self.crop_z, max(-self.pad, 0)

    def positions(self, rows):
        """Full-resolution y positions of level rows ``rows``."""
        return (rows + 0.5) * self.fy - 0.5


def plan_levels(geometry, opts, crop=None):
    """The level plan of a full-resolution ``geometry`` for resolved options ``opts``
    (:class:`fastalign.align.options.AlignOptions`), coarse to fine.  ``crop = (crop_x,
    crop_z)``: full-resolution columns and depth cropped per side (multiples of every
    binning; :func:`fastalign.align.specimen.compact_region`) instead of ``pad_x``."""
    out = []
    crop_x, crop_z = crop or (0, 0)
    for f in opts.levels:
        final = f == opts.levels[-1]
        fy = y_factor(geometry.ny, f)
        g = geometry.binned(f, fy)
        if crop_z:
            g = TiltGeometry(g.angles_deg, (g.ny, g.nz - 2 * (crop_z // f), g.nx),
                             g.center_offset)
        out.append(Level(f=f, fy=fy, geometry=g,
                         pad=-(crop_x // f) if crop_x else int(np.ceil(opts.pad_x / f)),
                         n_outer=opts.max_iter if final else opts.coarse_iter,
                         tol=opts.tol if final else max(opts.tol, COARSE_TOL * f), final=final,
                         crop_z=crop_z // f))
    return out


def pad_columns(b, pad, recon):
    """Extend the detector by ``pad`` columns per side: zeros (weight 0 for SIRT), or (TV,
    which has no data weights) replicated edge values."""
    if not pad:
        return b
    return np.pad(b, ((0, 0), (0, 0), (pad, pad)), mode="constant" if recon == "sirt" else "edge")


def detector_pad(pad, recon):
    """Detector columns per side beyond the field for a region ``pad`` columns wider than the
    field on each side.  SIRT: none -- rays outside the field carry no measurement, so they
    are not computed (:class:`fastalign.geometry.TiltGeometry` ``n_det``; measured on the
    61 x 128 x 128 slab, whose region is 316 columns wide: a forward projection 22 -> 9 ms,
    a transpose 24 -> 12 ms, the whole default alignment 1.6-2x faster); TV,
    which has no data weights: ``pad`` columns of replicated edge values
    (:func:`pad_columns`)."""
    return max(pad, 0) if recon == "tv" else 0


def region_projector(angles_deg, shape, center_offset, pad, recon):
    """Projector of a region ``shape = (rows, nz, nx + 2 pad)`` around a field ``nx`` wide
    (``pad < 0``: a region narrower than the field, centred on the rotation axis), with the
    detector of :func:`detector_pad` (``nx + 2 detector_pad(pad, recon)`` bins)."""
    n_det = shape[2] - 2 * pad + 2 * detector_pad(pad, recon)
    return Projector(angles_deg, shape, center_offset, n_det=n_det)


def level_rows(nyl, fy, slices, max_rows, signal=None):
    """Rows (binned) used on one level: the binned ``slices``; else all rows, or when there are
    more than ``max_rows``, the ``max_rows`` consecutive rows where the data have the most
    structure (:func:`signal_window` of the per-row ``signal``, :func:`row_signal`; the
    middle rows without it).  One contiguous window keeps y shifts measurable over all its
    rows, and follows an object that is off-centre in y."""
    if slices is not None:
        return np.unique(np.clip(slices // fy, 0, nyl - 1))
    if max_rows is None or nyl <= max_rows:
        return np.arange(nyl)
    s0 = (nyl - max_rows) // 2 if signal is None else signal_window(signal, max_rows)
    return np.arange(s0, s0 + max_rows)


#: per-tilt quantile at which :func:`row_signal` caps the squared differences
SIGNAL_CAP_QUANTILE = 0.995
#: windows whose signal is within this fraction of the best count as equally good
SIGNAL_TIE = 0.01


def row_signal(stack):
    """Structure per row of a tilt stack ``(n, ny, nx)``: the squared differences between
    neighbouring pixels along x and y, each capped at its :data:`SIGNAL_CAP_QUANTILE` in
    its tilt (a hot pixel or one bright edge weighs as a strong feature, not as the whole
    score), summed over tilts and columns.  ``(ny,)`` float64."""
    n, ny, nx = stack.shape
    out = np.zeros(ny, np.float64)
    for img in stack:
        img = img.astype(np.float64)
        for d, axis in ((np.diff(img, axis=1) ** 2, None), (np.diff(img, axis=0) ** 2, 0)):
            if d.size == 0:
                continue
            np.minimum(d, np.quantile(d, SIGNAL_CAP_QUANTILE), out=d)
            rows = d.sum(axis=1)
            if axis is None:
                out += rows
            else:    # a y difference belongs to both rows it joins
                out[:-1] += 0.5 * rows
                out[1:] += 0.5 * rows
    return out


def signal_window(signal, n):
    """Start of the ``n`` consecutive rows with the largest summed ``signal``.  Windows within
    :data:`SIGNAL_TIE` of the best that adjoin it (an object shorter than the window) are
    equally good: the middle one is taken, so the object sits in the window's centre."""
    c = np.concatenate([[0.0], np.cumsum(signal, dtype=np.float64)])
    w = c[n:] - c[:-n]
    best = int(np.argmax(w))
    good = w >= w[best] - SIGNAL_TIE * abs(w[best])
    lo = hi = best
    while lo > 0 and good[lo - 1]:
        lo -= 1
    while hi < w.size - 1 and good[hi + 1]:
        hi += 1
    return (lo + hi) // 2


def row_runs(rows, min_len=8):
    """``(start, stop)`` index ranges of runs of consecutive rows at least ``min_len`` long."""
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    edges = np.concatenate([[0], breaks, [rows.size]])
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b - a >= min_len
            or rows.size < min_len and b - a == rows.size]


def warm_start(x, pos_old, pos_new, shape, zx_shift=None, i0=0, embed=None):
    """The warm start of a level's volume from the previous one (the one warm-start rule).

    ``x`` holds old rows ``i0, i0 + 1, ...`` whose full-resolution y positions are
    ``pos_old[i0:]``.  Optionally shifted by ``(0,) + zx_shift`` (linear; moves the volume into
    the reported gauge), zoomed in (z, x) to ``shape[1:]`` (linear), then interpolated
    linearly along y to the rows at ``pos_new``.  Shift and zoom act on every row alone, so
    a block of rows (with the rows it interpolates from) gives the values of the whole.

    Parameters
    ----------
    x : ndarray, float32, shape (rows, nz, nx)
    pos_old, pos_new : ndarray, float64
        Full-resolution row positions of all old rows and of the new rows.
    shape : tuple of int
        New volume shape; only ``shape[1:]`` is used.
    zx_shift : (float, float), optional
        Shift in (z, x), pixels of ``x``.
    i0 : int
        Index in ``pos_old`` of the first row of ``x``.
    embed : (int, int), optional
        ``(z, x)`` zeros added per side of ``x`` first (a cropped loop region,
        :attr:`Level.embed`, back in the uncropped one).

    Returns
    -------
    ndarray, float32, shape (len(pos_new),) + shape[1:]
        Zeros when the zoom cannot hit ``shape[1:]`` exactly.
    """
    n_out = len(pos_new)
    if embed is not None:
        x = np.pad(x, ((0, 0), (embed[0], embed[0]), (embed[1], embed[1])))
    if zx_shift is not None:
        x = ndi.shift(x, (0.0,) + tuple(zx_shift), order=1)
    zx = np.array(shape[1:]) / np.array(x.shape[1:])
    if np.any(zx != 1):
        x = ndi.zoom(x, (1.0, zx[0], zx[1]), order=1)
        if x.shape[1:] != tuple(shape[1:]):  # zoom rounding
            return np.zeros((n_out,) + tuple(shape[1:]), np.float32)
    if pos_old.size == 1:
        return np.ascontiguousarray(np.repeat(x[:1], n_out, axis=0), dtype=np.float32)
    t = np.interp(pos_new, pos_old, np.arange(pos_old.size))
    k = np.clip(np.floor(t).astype(np.int64), 0, pos_old.size - 2)
    w = (t - k).astype(np.float32)[:, None, None]
    return np.ascontiguousarray((1 - w) * x[k - i0] + w * x[k + 1 - i0], dtype=np.float32)
