"""The intensity model: from a detector's numbers to the mass projections the alignment fits.

The reconstruction behind the alignment assumes that a projection is a line integral of a
non-negative mass density: zero where the beam meets nothing, larger where it meets more.
Microscope files rarely say that directly:

* **dark-field** (HAADF-STEM, mass bright): linear in the mass, but often on a constant
  detector offset (an FEI series reads about -31 886 in vacuum);
* **bright-field** (TEM, cryo; mass dark on a bright background): ``I = I0 exp(-mu p)``, so
  ``p = -log(I / I0) / mu``, with ``I0`` (the exposure) changing from tilt to tilt;
* per-tilt exposure changes in dark-field.

:func:`intensity_model` decides, from a subsample of the data (at most about
:data:`SAMPLES_PER_TILT` pixels per tilt, one strided view), what to do, and says why
(:meth:`IntensityModel.record`).  :meth:`IntensityModel.apply` returns the float32 data the
alignment uses; the input is never modified.

Rules (``level`` is a refined histogram mode; ``spread`` the 0.5-99.5 percentile range of
the subsample):

1. **Contrast** (``"auto"``): mass is the minority of pixels spreading away from the
   background level, so the longer histogram tail from each tilt's mode tells the polarity
   (per tilt, so that exposure changes do not blur the histogram): bright-field when the
   tail below the mode (``mode - p0.5``) is 1.5 times the one above it (``p99.5 - mode``)
   in more than half of the tilts, else dark-field (the data as given; so is structureless
   noise, and a weak-contrast bright-field slab may need ``contrast="bright-field"``).
2. **Background** (dark-field, ``"auto"``), a constant offset removed only when it is clearly
   one:

   * *a level shared by every tilt* (the per-tilt modes agree to 5 % of the spread: vacuum
     in every view, as for a compact object): removed when ``|level| > 5 %`` of the spread;
   * *a level that grows with ``1/cos(theta)``* (a slab filling the field: its film thickens
     with tilt), with ``angles_deg`` given: the offset is the intercept ``a`` of the per-tilt
     means fitted as ``a + b / |cos theta|`` (tilts within +-70 degrees; the growth must
     exceed 5 % of the spread, ``b > 0``, and the law explain 80 % of the means' variance),
     removed when
     ``|a| > 25 %`` of the spread (a small positive minimum is film mass, not an offset);
   * otherwise: the global mode, removed only when negative (mass is never negative) and
     beyond 25 % of the spread.

   Data whose background is already about zero (every simulation of
   :mod:`fastalign.simulate`) therefore keep ``background == 0.0`` exactly.
3. **Exposure** (dark-field): only for a shared vacuum level and a compact object (edge
   fraction below 0.3, :func:`fastalign.align.specimen.edge_fraction`), whose mass in the
   field is the same at every tilt: when the per-tilt mass varies by more than 10 % (relative
   standard deviation; a HAADF series' physics gives about 2 %), each tilt is scaled to the
   median mass.
4. **Bright-field**: ``I0`` per tilt is that tilt's mode (the vacuum level of a compact
   object; for a slab without vacuum, its film level, so the film's mean projection is taken
   as zero); the data become ``-log(I / I0)`` when every value is positive, else (an offset
   pushed them to or below zero) the inversion ``I0 - I``, which an offset does not change.
   ``background`` is 0 unless given as a number (subtracted first).
"""
import math
import numbers
from dataclasses import dataclass
from typing import Optional

import numpy as np

__all__ = ["IntensityModel", "intensity_model", "model_from_sample", "subsample",
           "sample_step", "check_contrast", "check_background", "CONTRASTS",
           "SAMPLES_PER_TILT"]

CONTRASTS = ("auto", "dark-field", "bright-field")

#: pixels per tilt (about) that the detection looks at
SAMPLES_PER_TILT = 16384
#: per-tilt levels agreeing within this fraction of the spread are one shared (vacuum) level
SHARED_LEVEL = 0.05
#: a shared level is an offset beyond this fraction of the spread
SHARED_OFFSET = 0.05
#: a slab's intercept (or an unclear level) is an offset beyond this fraction of the spread
SLAB_OFFSET = 0.25
#: a per-tilt mass relative standard deviation above this is an exposure change
EXPOSURE_SPREAD = 0.10
#: a histogram tail counts as the mass side when it is this many times the other one
TAIL_RATIO = 1.5
#: the ``a + b / |cos theta|`` law must explain this much of the per-tilt means' variance
SLAB_FIT_R2 = 0.8
#: tilts used in the ``a + b / |cos theta|`` fit
SLAB_FIT_MAX_DEG = 70.0


def check_contrast(contrast):
    """``contrast`` if it is one of :data:`CONTRASTS`, else ``ValueError``."""
    if not isinstance(contrast, str) or contrast not in CONTRASTS:
        raise ValueError("contrast must be 'auto', 'dark-field' or 'bright-field', "
                         f"got {contrast!r}")
    return contrast


def check_background(background):
    """``"auto"``, ``"none"`` or a finite float, else ``ValueError``."""
    if isinstance(background, str):
        if background in ("auto", "none"):
            return background
    elif isinstance(background, numbers.Real) and not isinstance(background, bool):
        value = float(background)
        if math.isfinite(value):
            return value
    raise ValueError(f"background must be 'auto', 'none' or a finite number, got "
                     f"{background!r}")


@dataclass(frozen=True)
class IntensityModel:
    """What :func:`intensity_model` found; :meth:`apply` turns data into mass projections.

    Attributes
    ----------
    contrast : {"dark-field", "bright-field"}
    transform : {"linear", "log", "invert"}
        dark-field ``(I - background) * scale``; bright-field ``-log((I - background) / i0)``
        or ``i0 - (I - background)``.
    background : float
        Constant removed first (0.0: none).
    i0 : tuple of float or None
        Bright-field: per-tilt bright (vacuum) level, after the background.
    scale : tuple of float or None
        Dark-field: per-tilt exposure normalisation (None: not normalised).
    decisions : dict
        How each was decided: ``{"contrast": ..., "background": ..., "exposure": ...}``,
        each ``{"by": "user" or "data", "why": text}``.
    """

    contrast: str
    transform: str
    background: float
    i0: Optional[tuple] = None
    scale: Optional[tuple] = None
    decisions: Optional[dict] = None

    @property
    def is_identity(self):
        """True when :meth:`apply` returns the data unchanged."""
        return self.transform == "linear" and self.background == 0.0 and self.scale is None

    def summary(self):
        """One line: what the model does."""
        if self.is_identity:
            return "dark-field, no background removed, no rescaling (data used as given)"
        parts = [self.contrast]
        if self.background != 0.0:
            parts.append(f"background {self.background:.6g} removed")
        if self.transform == "log":
            parts.append("-log(I/I0), I0 per tilt")
        elif self.transform == "invert":
            parts.append("inverted (I0 - I), I0 per tilt")
        if self.scale is not None:
            parts.append(f"exposure normalised (scale {min(self.scale):.3g}.."
                         f"{max(self.scale):.3g})")
        return ", ".join(parts)

    def record(self):
        """JSON-ready dict for ``AlignResult.options["intensity"]`` and ``report.json``."""
        return dict(contrast=self.contrast, transform=self.transform,
                    background=self.background,
                    i0=None if self.i0 is None else list(self.i0),
                    scale=None if self.scale is None else list(self.scale),
                    identity=self.is_identity, applied=True, decisions=self.decisions,
                    summary=self.summary())

    def apply(self, data, first=None):
        """The data the alignment uses: a new C-contiguous float32 array.

        Parameters
        ----------
        data : array_like, shape (n_tilts, ny, nx)
            Any real dtype; never modified.
        first : int, optional
            ``data`` is the chunk of consecutive tilts ``first, first + 1, ...`` of the series
            the model was made for (their per-tilt ``i0``/``scale`` apply; the Dask
            executor's tilt chunks).  None: ``data`` is the whole series.

        Returns
        -------
        ndarray, float32, shape (n_tilts, ny, nx)
        """
        data = np.asarray(data)
        if data.ndim != 3:
            raise ValueError(f"data must be 3-D (n_tilts, ny, nx), got shape {data.shape}")
        n = data.shape[0]
        per_tilt = self.i0 if self.i0 is not None else self.scale
        if per_tilt is not None and (len(per_tilt) != n if first is None
                                     else len(per_tilt) < first + n):
            raise ValueError(f"this intensity model has {len(per_tilt)} tilts, data {n}"
                             + ("" if first is None else f" from tilt {first}"))
        first = first or 0
        out = np.empty(data.shape, np.float32)
        for i in range(n):   # one image at a time: no full-size float64 temporary
            img = data[i].astype(np.float64)
            if self.background != 0.0:
                img -= self.background
            if self.transform == "log":
                img = np.log(self.i0[first + i] / img)
            elif self.transform == "invert":
                img = self.i0[first + i] - img
            elif self.scale is not None:
                img *= self.scale[first + i]
            out[i] = img
        return out


def sample_step(ny, nx):
    """Stride (in y and x) of the subsample: about :data:`SAMPLES_PER_TILT` pixels per tilt."""
    return max(1, int(math.ceil(math.sqrt(ny * nx / SAMPLES_PER_TILT))))


def subsample(data):
    """The strided float64 view-copy :func:`intensity_model` decides from: every
    :func:`sample_step`-th row and column of each tilt (a chunk of tilts gives its part)."""
    step = sample_step(*data.shape[1:])
    return np.asarray(data[:, ::step, ::step], dtype=np.float64)


def _mode(v, lo, hi):
    """Refined histogram mode of the samples ``v`` within ``[lo, hi]``: the densest of
    ``2 N^(1/3)`` bins (8 to 256), then the median of the samples near it, re-centred three
    times within 2.5 robust sigmas (the cluster of a noisy background level)."""
    if hi <= lo:
        return float(np.median(v))
    bins = int(np.clip(2.0 * v.size ** (1.0 / 3.0), 8, 256))
    h, edges = np.histogram(v, bins, (lo, hi))
    k = int(np.argmax(h))
    width = edges[1] - edges[0]
    c = 0.5 * (edges[k] + edges[k + 1])
    near = v[np.abs(v - c) <= width]
    for _ in range(3):
        c = float(np.median(near))
        sigma = 1.4826 * float(np.median(np.abs(near - c)))
        if sigma == 0:
            break
        clipped = v[np.abs(v - c) <= 2.5 * sigma]
        if clipped.size == 0:
            break
        near = clipped
    return float(np.median(near))


def _decide_contrast(lo, hi, modes):
    """Bright-field when, in more than half of the tilts, the tail below the tilt's mode is
    :data:`TAIL_RATIO` times longer than the one above; else dark-field (the data as given)."""
    up, down = hi - modes, modes - lo
    dark = int(np.sum(up > TAIL_RATIO * down))
    bright = int(np.sum(down > TAIL_RATIO * up))
    n = modes.size
    tails = f"median tails: above {np.median(up):.4g}, below {np.median(down):.4g}"
    if 2 * bright > n:
        return "bright-field", (f"the mass tail lies below the background level in {bright} "
                                f"of {n} tilts ({tails})")
    if 2 * dark > n:
        return "dark-field", (f"the mass tail lies above the background level in {dark} of "
                              f"{n} tilts ({tails})")
    return "dark-field", (f"no clear mass tail (above in {dark}, below in {bright} of {n} "
                          f"tilts; {tails}): dark-field, the data as given")


def _decide_background(u, levels, spread, angles_deg):
    """``(background, kind, why)`` on the polarity-corrected subsample ``u`` (mass up)."""
    n = u.shape[0]
    if np.ptp(levels) <= SHARED_LEVEL * spread:
        level = float(np.median(levels))
        what = (f"a level shared by every tilt ({level:.6g}, per-tilt spread "
                f"{np.ptp(levels):.3g} of the signal spread {spread:.4g})")
        if abs(level) > SHARED_OFFSET * spread:
            return level, "vacuum", f"{what}: an offset, removed"
        return 0.0, "vacuum", (f"{what}: within {SHARED_OFFSET:.0%} of the spread of zero, "
                               "kept")
    if angles_deg is not None:
        th = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
        c = np.abs(np.cos(th))
        use = c >= np.cos(np.deg2rad(SLAB_FIT_MAX_DEG))
        sec = 1.0 / c[use] if use.sum() >= 3 else np.zeros(0)
        if sec.size and np.ptp(sec) >= 0.1:
            means = u.reshape(n, -1).mean(axis=1)[use]
            M = np.stack([np.ones_like(sec), sec], axis=1)
            (a, b), *_ = np.linalg.lstsq(M, means, rcond=None)
            resid = means - M @ np.array([a, b])
            r2 = 1.0 - float(np.sum(resid ** 2)) / max(float(np.sum((means - means.mean())
                                                                    ** 2)), 1e-300)
            if b * np.ptp(sec) > SHARED_LEVEL * spread and r2 >= SLAB_FIT_R2:
                what = (f"the per-tilt level grows like 1/cos(theta) (a slab, R^2 {r2:.3f}): "
                        f"intercept {a:.6g}, signal spread {spread:.4g}")
                if abs(a) > SLAB_OFFSET * spread:
                    return float(a), "slab", f"{what}: an offset, removed"
                return 0.0, "slab", (f"{what}: within {SLAB_OFFSET:.0%} of the spread of "
                                     "zero, film mass, kept")
    level = _mode(u.ravel(), float(np.percentile(u, 0.1)), float(np.percentile(u, 99.9)))
    what = f"no shared vacuum level and no slab law; global mode {level:.6g}"
    if level < -SLAB_OFFSET * spread:
        return level, "unclear", f"{what}: negative (not mass), removed"
    return 0.0, "unclear", f"{what}: kept"


def intensity_model(data, *, contrast="auto", background="auto", angles_deg=None):
    """Decide how to turn a tilt series into mass projections (module docstring: rules).

    Parameters
    ----------
    data : array_like, shape (n_tilts, ny, nx)
        Raw tilt series, any real dtype (never modified).
    contrast : {"auto", "dark-field", "bright-field"}
        ``"dark-field"``: mass bright, linear; ``"bright-field"``: mass dark,
        ``I = I0 exp(-mu p)``; ``"auto"``: from the histogram.
    background : {"auto", "none"} or float
        Constant detector offset to remove: detected, none, or this value.
    angles_deg : array_like, shape (n_tilts,), optional
        Tilt angles (degrees); lets a slab's offset be told from its film (rule 2).

    Returns
    -------
    IntensityModel

    Raises
    ------
    ValueError
        A bad ``contrast`` or ``background``; data left without signal after the model.
    """
    data = np.asarray(data)
    if data.ndim != 3 or data.size == 0:
        raise ValueError(f"data must be a non-empty 3-D array (n_tilts, ny, nx), got shape "
                         f"{data.shape}")
    return model_from_sample(subsample(data), lambda: float(np.min(data)), contrast=contrast,
                             background=background, angles_deg=angles_deg)


def model_from_sample(s, data_min, *, contrast="auto", background="auto", angles_deg=None):
    """:func:`intensity_model` from its subsample alone (where the data are in pieces, as on
    a Dask cluster).

    Parameters
    ----------
    s : ndarray, float64, shape (n_tilts, my, mx)
        :func:`subsample` of the data (the tilt chunks' subsamples concatenated).
    data_min : callable
        ``data_min()`` returns the minimum of the whole data (asked for bright-field only:
        ``-log`` needs every value positive).
    contrast, background, angles_deg
        As :func:`intensity_model`.
    """
    contrast = check_contrast(contrast)
    background = check_background(background)
    n = s.shape[0]
    if angles_deg is not None and np.size(angles_deg) != n:
        raise ValueError(f"angles_deg has {np.size(angles_deg)} entries for {n} tilts")
    lo, hi = np.percentile(s, [0.5, 99.5])
    spread = float(hi - lo)
    # per tilt: 0.5 / 99.5 percentiles and the mode (the background level of that tilt)
    t_lo, t_hi = np.percentile(s.reshape(n, -1), [0.5, 99.5], axis=1)
    modes = np.array([_mode(t.ravel(), a, b) for t, a, b in zip(s, t_lo, t_hi)])
    decisions = {}
    if contrast == "auto":
        contrast, why = _decide_contrast(t_lo, t_hi, modes)
        decisions["contrast"] = dict(by="data", why=why)
    else:
        decisions["contrast"] = dict(by="user", why="given")
    if background == "none":
        bg, kind = 0.0, None
        decisions["background"] = dict(by="user", why="none removed")
    elif background != "auto":
        bg, kind = background, None
        decisions["background"] = dict(by="user", why="given")
    elif contrast == "bright-field":
        bg, kind = 0.0, None
        decisions["background"] = dict(by="data", why="bright-field: the bright level I0 is "
                                                       "divided out (or subtracted) per tilt")
    else:
        bg, kind, why = _decide_background(s, modes, spread, angles_deg)
        decisions["background"] = dict(by="data", why=why)
    if bg != 0.0 and spread <= 1e-6 * abs(bg):
        raise ValueError(f"background={bg:.6g} leaves no signal: the data spread {spread:.3g} "
                         "is below float32 resolution at that offset")
    i0 = scale = None
    transform = "linear"
    if contrast == "bright-field":
        i0 = tuple(float(m) - bg for m in modes)
        positive = min(i0) > 0 and data_min() - bg > 0
        transform = "log" if positive else "invert"
        decisions["exposure"] = dict(
            by="data", why=("I0 per tilt (each tilt's mode); " +
                            ("-log(I/I0): every value is positive" if positive else
                             "values <= 0 after the background: inverted, I0 - I")))
    elif kind == "vacuum":
        scale, why = _exposure(s - bg)
        decisions["exposure"] = dict(by="data", why=why)
    model = IntensityModel(contrast=contrast, transform=transform, background=float(bg),
                           i0=i0, scale=scale, decisions=decisions)
    check = model.apply(s)
    if not np.all(np.isfinite(check)) or np.ptp(check) == 0:
        raise ValueError(f"the intensity model ({model.summary()}) leaves no signal: the "
                         "data are constant after it (check background=/contrast=)")
    return model


def _exposure(u):
    """Per-tilt scale of a compact dark-field object whose mass varies (rule 3)."""
    from .specimen import edge_fraction
    mass = u.reshape(u.shape[0], -1).mean(axis=1)
    med = float(np.median(mass))
    if med <= 0 or np.any(mass <= 0):
        return None, "no positive mass per tilt: not normalised"
    rel = float(np.std(mass / med))
    edge = edge_fraction(u)
    if edge >= 0.3:
        return None, (f"material at the image edges (edge fraction {edge:.2f}): its mass "
                      "need not be constant, not normalised")
    if rel <= EXPOSURE_SPREAD:
        return None, (f"per-tilt mass varies by {rel:.1%} (<= {EXPOSURE_SPREAD:.0%}): not "
                      "normalised")
    return tuple(float(med / m) for m in mass), (f"per-tilt mass of a compact object varies "
                                                 f"by {rel:.1%}: scaled to its median")
