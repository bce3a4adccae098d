"""Autofocus alignment: per-projection shifts from Fourier phase errors (DESIGN.md).

Outer loop, per binning level (coarse to fine):

1. resample the *raw* (binned) data once with the current total shifts (Fourier, sub-pixel);
2. reconstruct from it (SIRT or TV, a few warm-started iterations);
3. reproject;
4. per tilt, accumulate over slices the cross-power spectrum ``C(w) = sum B(w) conj(P(w))`` of
   measured and reprojected rows (FFT along x) and columns (FFT along y);
5. estimate the residual shift from its phase ``-2 pi w s / N`` and add it to the total;

until the largest update falls below ``tol`` on the finest level (full resolution by default).

This module is the local front end: options -> starting shifts -> levels -> final volume.  The
loop's decisions are :class:`fastalign.align.loop.LoopController`'s, its data steps
:class:`fastalign.align.executor.LocalExecutor`'s (the Dask twin:
:func:`fastalign.distributed.align`); see ``docs/architecture.md``.
"""
import contextvars
import logging
import time

import numpy as np

from .._validate import (as_angles_deg, as_float32_array, check_align_angles, check_signal,
                         warn_two_tilts)
from ..geometry import TiltGeometry
from ..operator import Projector
from .badtilts import choose_tilts, expand_result, subset_start
from .executor import LocalExecutor, make_solver
from .gauge import fix_gauge
from .intensity import intensity_model
from .levels import BINNED_FINEST_NX, auto_levels as _auto_levels, bin_stack  # noqa: F401
from .loop import drive
from .options import AlignOptions
from .orient import orient_data, turn_like
from .result import AlignResult
from .shift import fourier_shift
from .start import (PROFILE_HOLD, PROFILE_USE, coarse_axis, column_sums,  # noqa: F401
                    com_x_start, initial_total, profile_start, start_shifts)

__all__ = ["align"]

log = logging.getLogger("fastalign.align")


def align(tilt_series, angles_deg, *, method="autofocus", recon="sirt", estimator="phase",
          axes="xy", max_iter=40, tol=0.002, levels=None, n_inner=10, coarse_iter=15,
          slices=None, nz=None, lam=None, nonneg=True, center_offset=0.0,
          initial_shifts=None, min_coherence=0.1, taper=0.1, final_iter=None, extrapolate=True,
          pad_x=0, max_rows=64, refine=("shifts",), axis_angle_deg=None,
          axis_search_deg=10.0, y_profile="auto", com_start="auto", specimen="auto",
          orient=True, contrast="auto", background="auto", exclude=None, auto_exclude=True,
          include=None, tilt_offset_deg=0.0, callback=None, progress=False):
    """Align a tilt series by Fourier-phase autofocus (or a baseline method).

    Parameters
    ----------
    tilt_series : array_like, shape (n_tilts, ny, nx)
        Raw projections, tilt axis along y.  Converted once to float32; never modified.
    angles_deg : array_like, shape (n_tilts,)
        Tilt angles in degrees.  Angles that look like radians (more than 5 tilts, all
        within +-pi/2) are refused with a ``ValueError`` naming the fix, ``np.rad2deg``;
        there is no opt-out (such a degree series spans under 3.2 degrees: nothing to
        align).
    method : {"autofocus", "xcorr", "com"}
        ``"autofocus"`` is the reconstruction-based phase method; ``"xcorr"`` (sequential
        cross-correlation) and ``"com"`` (centre of mass) are baselines.
    recon : {"sirt", "tv"}
        Reconstruction inside the loop.
    estimator : {"phase", "gradient"}
        Shift estimator: complex-log phase unwrapping + weighted least squares, or Newton steps
        on ``sum |B e^{2 pi i w s/N} - P|^2``.
    axes : {"xy", "x", "y"}
        Which shift components to estimate.
    max_iter : int
        Maximum outer iterations on the finest level (full resolution by default).
    tol : float
        Convergence: the largest shift update (full-resolution pixels, its gauge part
        removed: a common drift of the sinusoid in dx or of the mean dy is not counted),
        times ``1 / (1 - rho)`` when successive updates shrink by a ratio ``rho`` (the rest
        of a geometric series; rho clipped to [0, 0.95]), below ``tol``.  History entries
        report the same ``max_update``/``rms_update``.
    levels : sequence of int, optional
        Binning factors, coarse to fine (strictly decreasing).  The last entry is the
        finest level: ``max_iter`` and ``tol`` apply there and ``converged`` refers to it.
        Default: automatic, so that starting errors of +-20 px converge: 4, 2, 1 for 256 px;
        4, 2 from 512 px wide.  A finest level of 2 estimates on 2x binned data only (shifts
        still in full-resolution pixels, ``aligned`` and ``volume`` at full resolution): on
        large series each iteration is about six times cheaper, and the slow start of a
        full-resolution level (its warm-started reconstruction needs many iterations before
        its estimates are unbiased) is avoided.  Measured: 90 x 600 x 600 particles 0.010 px
        in 58 s against 0.012 px in 133 s with a full-resolution level; 512 and 768 px seed
        phantoms 0.009 and 0.018 px against 0.017 and 0.013 px, 2.5-4.5 times faster.
        Pass ``levels=(4, 2, 1)`` to estimate at full resolution.
    n_inner : int
        Reconstruction iterations per outer iteration (warm-started).
    coarse_iter : int
        Maximum outer iterations on each coarse level.
    slices : array_like of int, optional
        Rows y (full resolution) whose spectra are used; default all.  The final volume
        always covers every row.
    nz : int, optional
        Reconstruction thickness (default nx).
    lam : float, optional
        TV weight for ``recon="tv"`` (default: 2 % of the data's mean row sum scale).
    center_offset : float
        Rotation-centre offset (detector pixels) of the geometry.
    initial_shifts : array_like of shape (n_tilts, 2), or {"xcorr", "com"}, optional
        Starting ``(dx, dy)``, or the name of a baseline to compute them with (``"com"``
        suits compact objects, ``"xcorr"`` anything; default zeros), or an IMOD ``.xf`` /
        AreTomo ``.aln`` read by :func:`fastalign.io.read_alignment` (its shifts, and its
        axis angle unless ``axis_angle_deg`` is given).
    min_coherence : float
        Frequencies whose coherence ``|C| / sqrt(sum|B|^2 sum|P|^2)`` is lower are ignored.
    taper : float
        Tukey taper fraction applied along x and y before the FFTs (edges of wide specimens).
    final_iter : int, optional
        Iterations of the final reconstruction (default ``2 * n_inner`` from the loop's
        volume, or ``n_inner // 2`` from an FBP start when the loop used a subset of rows).
    extrapolate : bool
        Aitken-type jumps along the slow, geometrically shrinking mode of the shift updates
        (and of the volume with them); ``False``: plain fixed-point iterations.  The axis
        angle is never extrapolated.
    pad_x : int or "auto"
        For specimens wider than the field of view: the reconstruction spans
        ``nx + 2 pad_x`` columns (full resolution) so that material outside the field, seen by
        oblique rays, is represented; the added detector columns carry no data (SIRT gives
        them weight 0; TV, which has no data weights, sees edge-replicated values) and only
        the central ``nx`` columns enter the shift estimate.  ``"auto"``: ``nx // 4`` when
        the outermost columns carry more than 10 % of the mean signal, else 0.  Works best
        with ``nz`` close to the specimen thickness (the lamella test: ``pad_x = nx // 2``,
        ``nz`` 1.5 x the thickness).
    max_rows : int or None
        Row budget per level: when a level (after binning) has more rows than this and
        ``slices`` is not given, only the ``max_rows`` consecutive rows with the most
        structure in the data are reconstructed and enter the estimates (an object
        off-centre in y is followed; :func:`fastalign.align.levels.level_rows`); the final
        volume then starts from FBP.  ``None``: every row.  Not applied when
        ``"axis_angle"`` is refined (its step needs contiguous rows).
    refine : sequence of {"shifts", "axis_angle", "center", "tilt_offset"}
        What the loop estimates.  ``"shifts"`` (required) are the per-tilt translations;
        ``"axis_angle"`` adds a global in-plane tilt-axis angle (coarse estimate from the
        tilt invariance of the axis profiles: their amplitude spectra, then, for a compact
        object, the angle at which the aligned profiles agree best; then Gauss-Newton steps
        on the reprojection residual once shifts and reconstruction have settled);
        ``"center"`` reports the constant part of dx as a rotation-centre offset (with free
        shifts the two are the same thing; see :mod:`fastalign.align.axis` for the model,
        signs and the convention separating them).  ``"tilt_offset"`` estimates a constant
        offset of all tilt angles from a slab's flatness (its projected mass follows
        ``1/cos(angle + offset)``; :mod:`fastalign.align.tiltoffset`) before the loop, which
        then runs with the corrected angles; for a compact object the offset is not
        determined (a rotation of the object): a warning, and 0 is recorded.
    axis_angle_deg : float, optional
        Tilt-axis angle (degrees, sign as in :mod:`fastalign.align.axis`): fixed when
        ``"axis_angle"`` is not refined (default 0), the starting value when it is (default:
        :func:`fastalign.align.axis.coarse_axis_angle`).
    axis_search_deg : float
        Half-width of the coarse axis-angle search (degrees) when ``orient=False``.
    orient : bool
        With ``axis_angle_deg=None`` (default), find the tilt-axis direction over the full
        circle (:mod:`fastalign.align.orient`): the data are turned by a multiple of 90
        degrees exactly, and a residual angle of a degree or more switches on
        ``"axis_angle"`` refinement from it.  Recorded in ``options["orientation"]``; the
        reported ``axis_angle_deg`` is the total.  ``False``: the axis starts along y
        (refined within ``axis_search_deg`` with ``refine=(..., "axis_angle")``).
    y_profile : {"auto", False}
        ``"auto"`` (when y is estimated and no starting shifts are given): start dy from
        the tilt-invariant x-integrated profiles (of the data rotated back by the starting
        axis angle when it is not 0)
        (:func:`fastalign.align.profiles.profile_y_shifts`) when they agree after alignment
        (misfit <= 0.2; a compact object gives about 0.001, a specimen wider than the field
        of view about 1).  When they agree to 0.02 that dy is kept until the finest
        level's x updates are below 0.5 px (an estimate against the reconstruction of a
        series still misaligned in x, or binned, is worse), then refined with x.
        ``False``: start dy from zero.
    com_start : {"auto", False}
        ``"auto"`` (when x is estimated and no starting shifts are given): when the
        x-integrated profiles show a compact object (misfit <= 0.2, as for ``y_profile``),
        start dx from each tilt's x centre of mass (:func:`com_x_start`; a large
        rotation-centre offset is then already accounted for).  ``False``: start dx from
        zero.
    specimen : {"auto", "compact", "slab"}
        ``"auto"``: a specimen with material at both x edges of most tilts (median edge
        fraction > 0.3, :func:`fastalign.align.specimen.edge_fraction`) is aligned as a
        **slab** (:mod:`fastalign.align.slab`): a cross-correlation start, its thickness,
        depth and pitch measured from a first reconstruction, a region sized to everything
        the tilted views see and only as thick as the slab, data compared only where they
        were measured, and Anderson steps on cold-started reconstructions (the loop's
        reconstruction is SIRT then; ``recon`` applies to the final volume).  ``pad_x``,
        ``nz``, ``levels`` and ``initial_shifts`` given explicitly override its choices;
        ``options["specimen"]`` and ``thickness`` report them.  Other specimens keep the
        compact-object loop; ``"compact"``/``"slab"`` force either.
    contrast : {"auto", "dark-field", "bright-field"}
        Intensity model (:mod:`fastalign.align.intensity`), applied before anything else:
        ``"dark-field"`` (mass bright, linear), ``"bright-field"`` (mass dark:
        ``-log(I / I0)`` with ``I0`` per tilt, or ``I0 - I`` when values reach zero or
        below); ``"auto"`` decides from the histogram (which side of the background level
        the mass tail lies).
    background : {"auto", "none"} or float
        Constant detector offset removed before the alignment: ``"auto"`` only when it is
        clearly one (a shared vacuum level away from zero, a slab's ``1/cos`` law with a
        non-zero intercept, or a negative level), ``"none"``, or this value.  Data whose
        background is already zero with mass bright are used exactly as given.
        ``options["intensity"]`` records what was found and why; ``aligned`` keeps the
        original intensities, ``volume`` is reconstructed from the transformed data.
    exclude : sequence of int, optional
        **0-based** indices of tilts to leave out (IMOD's 1-based ``EXCLUDELIST`` converts with
        :func:`fastalign.io.parse_excludelist`).  Excluded tilts enter neither the estimate
        nor the reconstruction; their shifts are interpolated from the kept tilts in tilt
        angle, in the same gauge (:func:`fastalign.align.badtilts.interpolate_shifts`), and
        ``aligned`` keeps their views (resampled like the others).  At least 5 tilts must
        remain.
    auto_exclude : bool
        Detect bad tilts first (blank or dark, saturated, an intensity jump, pure noise, a
        large constant or edge-occluded region; per tilt against its tilt neighbours, robust
        threshold median + 6 MAD; :mod:`fastalign.align.badtilts`) and exclude them, never
        leaving fewer than ``max(5, 60 %)`` of the tilts (more flagged: none excluded, a
        warning).  ``options["excluded"]`` lists every excluded tilt with its reason,
        ``options["bad_tilts"]`` what the detection flagged.  ``False``: only ``exclude``.
    include : sequence of int, optional
        0-based tilts never excluded automatically (forced back).
    tilt_offset_deg : float
        A known tilt-angle offset (degrees, within +-45) added to ``angles_deg`` before
        anything else (a refined offset comes on top of it).  The result's ``angles_deg``
        are the corrected angles and ``tilt_offset_deg`` the total offset.
    callback : callable, optional
        ``callback(info)`` after each outer iteration with the history entry plus ``shifts``;
        raising ``StopIteration`` ends the run (``converged=False``).
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    AlignResult
        ``shifts`` in the fixed gauge (sinusoid removed from dx, mean from dy; with
        ``"center"`` also the constant), ``aligned`` (raw data, original intensities,
        resampled once, rotation and shift), ``volume``, ``history``, ``converged``,
        ``axis_angle_deg``, ``center_offset``, ``excluded`` (0-based; their shifts are
        interpolated, ``interpolated``).

    Raises
    ------
    ValueError
        Before any computation: fewer than 2 tilts, angles that look like radians, a series
        with nothing to align (all zero, every image constant, or a standard deviation below
        1e-6 x its mean absolute value), bad options.  A series of exactly 2 tilts is aligned
        with a warning on the ``fastalign.align`` logger (the result is not determined).
    """
    call = dict(locals())   # the arguments, for a run on the kept tilts (_align_kept)
    t_start = time.perf_counter()
    data = as_float32_array(tilt_series, 3, "tilt_series")
    n, ny, nx = data.shape
    angles = as_angles_deg(angles_deg, n_expected=n)
    check_align_angles(angles)
    check_signal(data)
    # the angle layout is judged once, on the caller's series (not on the kept subset)
    warn_two_tilts(n, log, None if _KEPT_RUN.get() else angles)
    opts = AlignOptions(
        method=method, recon=recon, estimator=estimator, axes=axes, max_iter=max_iter,
        tol=tol, levels=levels, n_inner=n_inner, coarse_iter=coarse_iter, slices=slices,
        nz=nz, lam=lam, nonneg=nonneg, center_offset=center_offset,
        initial_shifts=initial_shifts, min_coherence=min_coherence, taper=taper,
        final_iter=final_iter, extrapolate=extrapolate, pad_x=pad_x, max_rows=max_rows,
        refine=refine, axis_angle_deg=axis_angle_deg, axis_search_deg=axis_search_deg,
        y_profile=y_profile, com_start=com_start, specimen=specimen, orient=orient,
        contrast=contrast, background=background, exclude=exclude,
        auto_exclude=auto_exclude, include=include, callback=callback, progress=progress,
        tilt_offset_deg=tilt_offset_deg)
    # the intensity model: `data` becomes mass projections, `original` keeps the user's
    model = intensity_model(data, contrast=opts.contrast, background=opts.background,
                            angles_deg=angles)
    mass = data if model.is_identity else model.apply(data)
    # tilt exclusion (align/badtilts.py), screened on the mass projections (an exposure
    # change is not a bad tilt): align the kept tilts, then give every view back
    chosen = choose_tilts(mass, angles, opts.exclude, opts.auto_exclude, opts.include)
    if chosen.excluded.size:
        del mass
        return _align_kept(call, data, angles, chosen, t_start)
    given_offset = opts.tilt_offset_deg    # a known offset (align/tiltoffset.py)
    angles = angles + given_offset if given_offset else angles
    original = None if model.is_identity else data
    data = mass
    if original is not None:
        log.info("intensity model: %s", model.summary())
    if opts.method != "autofocus":
        return _baseline(data, angles, opts, t_start, model, original, chosen.record)
    oriented, t_axis, offset = None, 0.0, 0.0
    if (opts.orient and opts.axis_angle_deg is None
            and getattr(opts.initial_shifts, "axis_angle_deg", None) is None):
        t0 = time.perf_counter()
        data, opts, alpha, offset, oriented = orient_data(data, angles, opts)
        if original is not None:
            original = turn_like(original, oriented)
        t_axis = time.perf_counter() - t0
        ny, nx = data.shape[1:]
    total = initial_total(data, angles, opts)
    mean_abs = edge = None
    if opts.recon == "tv" and opts.lam is None or isinstance(opts.pad_x, str):
        mean_abs = float(np.abs(data).mean())
        edge = float(np.abs(data[:, :, [0, -1]]).mean())
    opts = opts.resolved(ny, nx, mean_abs=mean_abs, edge_mean=edge)
    if oriented is None:
        alpha, axis_record, t_axis = coarse_axis(data, opts)
    else:
        axis_record = dict(orientation=oriented)
    record = opts.record()
    if opts.refine != ("shifts",) or alpha != 0.0:
        record.update(refine=list(opts.refine), axis_angle_deg_start=alpha)
    record.update(axis_record)
    record["intensity"] = model.record()
    record["bad_tilts"] = chosen.record     # what the screening found (align/badtilts.py)
    if given_offset:
        record["tilt_offset"] = dict(given_deg=given_offset)
    geometry = TiltGeometry(angles, (ny, opts.nz, nx), opts.center_offset)
    user = dict(pad_x=pad_x not in (0, None), nz=nz is not None, levels=levels is not None,
                initial_shifts=initial_shifts is not None)
    out = drive(LocalExecutor(data, angles, opts, original), opts, geometry, total, record,
                alpha=alpha, t_start=t_start, user=user)
    out["timings"] = dict(total_s=time.perf_counter() - t_start, **out["timings"])
    out["tilt_offset_deg"] += given_offset
    if offset:
        turned = out["axis_angle_deg"] + offset
        out["axis_angle_deg"] = float((turned + 180.0) % 360.0 - 180.0)
    if opts.refine_axis or oriented is not None:
        out["timings"]["axis_coarse_s"] = t_axis
    return AlignResult(method="autofocus", options=record, **out)


#: set while :func:`align` runs on the tilts kept after an exclusion (:func:`_align_kept`)
_KEPT_RUN = contextvars.ContextVar("fastalign_kept_run", default=False)


def _align_kept(call, data, angles, chosen, t_start):
    """:func:`align` on the tilts ``chosen`` keeps (the same arguments otherwise), expanded
    to every tilt by :func:`fastalign.align.badtilts.expand_result`."""
    keep = chosen.keep
    t_detect = time.perf_counter() - t_start
    kwargs = {k: v for k, v in call.items() if k not in ("tilt_series", "angles_deg")}
    kwargs.update(exclude=None, auto_exclude=False, include=None,
                  initial_shifts=subset_start(call["initial_shifts"], keep))
    log.info("aligning %d of %d tilts; excluded (0-based): %s", int(keep.sum()), keep.size,
             chosen.excluded.tolist())
    token = _KEPT_RUN.set(True)
    try:
        result = expand_result(align(data[keep], angles[keep], **kwargs), data, angles,
                               chosen)
    finally:
        _KEPT_RUN.reset(token)
    result.timings = dict(result.timings, bad_tilts_s=t_detect,
                          total_s=time.perf_counter() - t_start)
    return result


def _baseline(data, angles, opts, t_start, model, original, screened=None):
    """``method="xcorr"``/``"com"``: a baseline's shifts, then one reconstruction (from the
    intensity model's ``data``; ``aligned`` from ``original`` when it is not None)."""
    from . import baselines
    n, ny, nx = data.shape
    if opts.method == "xcorr":
        raw = baselines.xcorr_shifts(data, angles)
    else:
        raw = baselines.com_shifts(data, angles)
    shifts, _ = fix_gauge(raw, angles)
    aligned = fourier_shift(data, -shifts)
    nz = nx if opts.nz is None else opts.nz
    A = Projector(angles, (ny, nz, nx), opts.center_offset)
    lam = opts.lam
    if opts.recon == "tv" and lam is None:
        lam = 0.02 * float(np.abs(data).mean())
    solver = make_solver(opts.recon, A, nonneg=opts.nonneg, lam=lam)
    volume = solver.run(aligned, np.zeros(A.domain_shape, np.float32), 2 * opts.n_inner)
    if original is not None:
        fourier_shift(original, -shifts, out=aligned)
    return AlignResult(shifts=shifts, aligned=aligned, volume=volume, history=[],
                       converged=True, angles_deg=angles, method=opts.method,
                       options=dict(method=opts.method, recon=opts.recon,
                                    intensity=model.record(), bad_tilts=screened),
                       center_offset=opts.center_offset, tilt_offset_deg=opts.tilt_offset_deg,
                       timings=dict(total_s=time.perf_counter() - t_start))
