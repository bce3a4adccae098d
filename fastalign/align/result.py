"""Result object of :func:`fastalign.align`."""
from dataclasses import dataclass, field

import numpy as np


@dataclass
class AlignResult:
    """Outcome of an alignment run.

    Attributes
    ----------
    shifts : ndarray, float64, shape (n_tilts, 2)
        ``(dx, dy)`` in pixels: measured image i equals the ideal projection translated by
        ``(dx, dy)`` (DESIGN.md).  Reported in the fixed gauge: the least-squares fit of
        ``a cos(th) + b sin(th)`` is removed from dx and the mean from dy.
    aligned : ndarray, float32, shape (n_tilts, ny, nx)
        The raw data resampled once by ``(-dx, -dy)``.
    volume : ndarray, float32, shape (ny, nz, nx)
        Reconstruction from the aligned data.
    history : list of dict
        Per outer iteration: ``iteration``, ``level`` (binning factor), ``max_update`` (px,
        full resolution, gauge part removed), ``residual`` (relative data residual
        ``||Ax-b||/||b||``), ``time_s``.
    converged : bool
        Whether the largest shift update fell below ``tol`` on the finest level (full
        resolution by default).
    angles_deg : ndarray, shape (n_tilts,)
    method : str
        ``"autofocus"``, ``"xcorr"`` or ``"com"``.
    options : dict
        The options the run used (for reports).
    timings : dict
        Wall-clock seconds per phase.
    axis_angle_deg : float
        In-plane tilt-axis angle in degrees (estimated with ``refine=(..., "axis_angle")``,
        else the given one, default 0).  Positive: counter-clockwise with y up (IMOD's
        display); model and signs in :mod:`fastalign.align.axis`.  With a non-zero angle
        ``shifts`` are in the aligned frame and ``aligned`` is rotated by ``-axis_angle_deg``.
    center_offset : float
        Rotation-centre offset (pixels, DESIGN.md) of ``volume``: estimated with
        ``refine=(..., "center")`` (the constant part of dx), else the given one.
    thickness : float or None
        Specimen thickness (full-resolution px) measured for a slab
        (:mod:`fastalign.align.slab`); None for a compact object.  ``options["specimen"]``
        holds the other decisions (kind, depth offset, pitch, region).
    uncertainty : ndarray, float64, shape (n_tilts, 2), or None
        1-sigma standard error (full-resolution px) of each tilt's ``(dx, dy)`` from the last
        measurement of the run (:func:`fastalign.align.shift.shift_uncertainty`); NaN for a
        component not measured then (e.g. ``axes="x"``).  None for the baselines; NaN from
        the Dask executor (it does not compute them yet).  Calibration
        (``bench/uncertainty_calibration.py``): dx errors / uncertainty spread 0.9-2.0 on
        Poisson seed experiments (1000 and 100 counts); dy (whose errors the reconstruction
        shares between neighbouring tilts, :func:`fastalign.align.shift.coupled_uncertainty`)
        spread 0.70-1.47 (std 0.86-1.59) on 3-D particle series with Gaussian noise
        (``--case particles``).  dy is NaN when x is not measured (``axes="y"``).  At very
        low noise (0.02 of the data's std) both are 2-3x too small: a floor of model error
        (about 0.01 px) that the phase scatter does not show.
    tilt_offset_deg : float
        Offset added to the input angles (degrees): a known one given
        (``tilt_offset_deg=``) plus the one estimated with ``refine=(..., "tilt_offset")``
        for a slab (:mod:`fastalign.align.tiltoffset`; ``options["tilt_offset"]``); 0.0
        otherwise.  ``angles_deg`` are the corrected angles (input + offset), those of
        ``volume``.
    excluded : ndarray, int64
        0-based indices of the tilts left out of the estimate and the reconstruction (given
        with ``exclude=`` or found by the bad-tilt detection, :mod:`fastalign.align.badtilts`;
        ``options["excluded"]`` gives the reason per tilt).  Their ``shifts`` are
        interpolated from the neighbours in tilt angle (:attr:`interpolated`) and ``aligned``
        keeps their views.  Empty when every tilt was used.
    tilt_residual : ndarray, float64, shape (n_tilts,), or None
        Per tilt, ``||P_i x - b_i|| / ||b_i||`` of the aligned view against the reprojection
        of ``volume`` over the pixels it measures
        (:func:`fastalign.align.executor.tilt_quality`); the largest values point at the
        views the reconstruction explains worst.  NaN for the excluded tilts and from the
        Dask executor; None for the baselines.
    tilt_coherence : ndarray, float64, shape (n_tilts,), or None
        Per tilt, the power-weighted mean spectral coherence (0-1) of the aligned view and
        the reprojection along x (shift-independent: low for data the volume does not
        explain, high but with a large residual for a misaligned view); NaN and None as
        ``tilt_residual``.
    """

    shifts: np.ndarray
    aligned: np.ndarray
    volume: np.ndarray
    history: list
    converged: bool
    angles_deg: np.ndarray
    method: str = "autofocus"
    options: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    axis_angle_deg: float = 0.0
    center_offset: float = 0.0
    thickness: float = None
    uncertainty: np.ndarray = None
    excluded: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    tilt_residual: np.ndarray = None
    tilt_coherence: np.ndarray = None
    tilt_offset_deg: float = 0.0

    @property
    def interpolated(self):
        """Boolean mask ``(n_tilts,)``: True where the shift is interpolated, not measured
        (the :attr:`excluded` tilts)."""
        mask = np.zeros(len(self.shifts), bool)
        mask[np.asarray(self.excluded, dtype=np.int64)] = True
        return mask

    @property
    def n_iter(self):
        return len(self.history)

    def summary(self):
        """Small JSON-serialisable dict (no arrays larger than n_tilts)."""
        return {
            "method": self.method,
            "converged": bool(self.converged),
            "n_iter": self.n_iter,
            "shifts": np.asarray(self.shifts).tolist(),
            "angles_deg": np.asarray(self.angles_deg).tolist(),
            "history": self.history,
            "options": self.options,
            "timings": self.timings,
            "axis_angle_deg": float(self.axis_angle_deg),
            "center_offset": float(self.center_offset),
            "tilt_offset_deg": float(self.tilt_offset_deg),
            "thickness_px": None if self.thickness is None else float(self.thickness),
            "uncertainty_px": _uncertainty_list(self.uncertainty),
            "median_uncertainty_px": self.median_uncertainty(),
            "specimen": self.options.get("specimen"),
            "orientation": self.options.get("orientation"),
            "diagnosis": self.diagnosis(),
            "excludelist": self.excludelist(),
            "tilts": self.tilt_table(),
        }

    def excludelist(self):
        """IMOD ``EXCLUDELIST`` value (1-based) of :attr:`excluded`, e.g. ``"1,5-7"``, or
        None when every tilt was used."""
        if len(self.excluded) == 0:
            return None
        from .._ranges import format_excludelist
        return format_excludelist(np.asarray(self.excluded).tolist())

    def tilt_table(self):
        """Per-tilt table for ``report.json``: one dict per tilt (stack order) with ``tilt``
        (0-based), ``view`` (1-based), ``angle_deg``, ``dx``, ``dy``, ``sigma_dx``,
        ``sigma_dy``, ``residual``, ``coherence`` (None where not estimated), ``excluded``
        and ``interpolated``."""
        n = len(self.shifts)
        nan = np.full(n, np.nan)
        u = nan[:, None].repeat(2, 1) if self.uncertainty is None else self.uncertainty
        cols = dict(angle_deg=self.angles_deg, dx=np.asarray(self.shifts)[:, 0],
                    dy=np.asarray(self.shifts)[:, 1], sigma_dx=np.asarray(u)[:, 0],
                    sigma_dy=np.asarray(u)[:, 1],
                    residual=nan if self.tilt_residual is None else self.tilt_residual,
                    coherence=nan if self.tilt_coherence is None else self.tilt_coherence)
        out_mask, interp = np.zeros(n, bool), self.interpolated
        out_mask[np.asarray(self.excluded, dtype=np.int64)] = True
        rows = []
        for i in range(n):
            row = dict(tilt=i, view=i + 1)
            for key, v in cols.items():
                v = float(np.asarray(v)[i])
                row[key] = v if np.isfinite(v) else None
            row.update(excluded=bool(out_mask[i]), interpolated=bool(interp[i]))
            rows.append(row)
        return rows

    def median_uncertainty(self):
        """Median of the finite per-tilt standard errors (px), or None."""
        if self.uncertainty is None:
            return None
        u = np.asarray(self.uncertainty)
        u = u[np.isfinite(u)]
        return float(np.median(u)) if u.size else None

    def diagnosis(self):
        """Likely causes, with the option to set, when the run did not converge or fits
        badly (:func:`fastalign.align.diagnose.diagnose`); empty otherwise."""
        from .diagnose import diagnose
        return diagnose(self)


def _uncertainty_list(u):
    """Per-tilt ``[sx, sy]`` for JSON (None for a component not estimated), or None."""
    if u is None:
        return None
    return [[float(v) if np.isfinite(v) else None for v in row] for row in np.asarray(u)]
