"""Slab specimens by default: what the loop decides before it starts on a laterally extended
specimen (DESIGN.md, "Real specimen geometry").

When :func:`fastalign.align.specimen.edge_fraction` shows material at both x edges of most
tilts (``specimen="auto"``), or ``specimen="slab"`` is passed, :func:`setup_slab`:

1. starts the shifts from the cosine-stretched cross-correlation chain for dx and a pair
   network for dy (:func:`fastalign.align.specimen.pair_network_dy`; centres of mass are
   meaningless when mass enters and leaves the field);
2. reconstructs the started data once, 2x binned, in a region as deep as the images are wide
   and measures the slab's thickness, depth and pitch
   (:func:`fastalign.align.specimen.fit_pitched_power`);
3. moves the slab to the middle of the depth range (a depth offset is the ``sin`` part of
   the dx gauge) and sizes the region: every column that an oblique ray through the field
   meets, and the slab's thickness with a margin (:func:`slab_region`).  A slab pitched by
   a degree or more is reconstructed in the loop in the frame turned by its pitch (angles
   ``- pitch``: a pitch is an offset of every tilt angle, :mod:`fastalign.align.tiltoffset`),
   where it is flat and the region is as thin as the slab; the final volume keeps the
   user's angles in a region deep enough for the pitched slab.  (Measured on the 4 degree
   case of tests/test_slab.py: 0.041 / 0.025 px in 10 finest iterations, against 0.072 /
   0.030 px in 17 with the deeper box and a support mask, which the loop still uses when
   ``pad_x`` or ``nz`` is given.)
4. switches the loop to the slab iteration (:class:`fastalign.align.loop.LoopController`):
   each outer iteration reconstructs from zero with data weights that are 0 where a
   resampled image has no measurement, compares measured and reprojected data only there,
   and takes Anderson steps (:mod:`fastalign.align.accel`), because a reconstruction absorbs
   nearly all of a smooth shift error of a slab and plain iterations would need hundreds of
   steps.

Options the user set (``pad_x``, ``nz``, ``levels``, ``initial_shifts``) override the
decisions; everything decided is recorded under ``options["specimen"]``.
"""
import dataclasses
import logging

import numpy as np

from .specimen import SLAB_EDGE_FRACTION, fit_pitched_power, slab_region

log = logging.getLogger("fastalign.align")

__all__ = ["decide_specimen", "setup_slab", "slab_start_shifts", "SLAB_MAX_ITER", "SLAB_TOL",
           "PROBE_BIN", "THIN_PX"]

#: Outer iterations on the slab level (Anderson steps; measured: 10-16 to converge).
SLAB_MAX_ITER = 25
#: The slab level stops when the largest gauge-free update is below this (px): smooth error
#: modes move by little per step, so the plain ``tol`` would stop too early.
SLAB_TOL = 5e-4
#: A thickness estimate below this (px) is at the resolution limit of the depth probe
#: (measured: a 1 px film reads as 3.1 px, a 10 px film as 11.3 px): it is reported as an
#: upper bound, with a warning.
THIN_PX = 5.0
#: Binning of the depth probe (images at least PROBE_BIN_NX wide; smaller ones unbinned).
PROBE_BIN = 2
PROBE_BIN_NX = 256


def decide_specimen(executor, opts, record):
    """``"slab"`` or ``"compact"`` from ``opts.specimen`` and the data's edge fraction."""
    if opts.specimen == "compact":
        record["specimen"] = dict(kind="compact", decided_by="option")
        return "compact"
    if "specimen" in executor.lacks:
        log.warning("specimen detection is not available on the %s executor: aligning as a "
                    "compact object (specimen='compact' silences this)", executor.name)
        record["specimen"] = dict(kind="compact", detected=False)
        return "compact"
    frac = executor.edge_fraction()
    kind = "slab" if opts.specimen == "slab" or frac > SLAB_EDGE_FRACTION else "compact"
    record["specimen"] = dict(kind=kind, edge_fraction=round(frac, 4),
                              decided_by="option" if opts.specimen == "slab" else "data")
    if kind == "slab" and (set(opts.refine) - {"shifts", "tilt_offset"} or opts.axis_angle_deg):
        log.warning("slab handling does not yet refine the tilt axis or centre: aligning "
                    "with the compact-object loop (its accuracy on slabs is lower)")
        record["specimen"]["kind"] = kind = "compact"
        record["specimen"]["note"] = "slab loop not used: refine/axis_angle_deg given"
    return kind


def slab_start_shifts(data, angles_deg, axes):
    """Starting ``(dx, dy)`` of a slab ``data (n, ny, nx)``: the cosine-stretched
    cross-correlation chain for dx, the pair network for dy (0 for an axis not in ``axes``).
    Needs the whole stack (pairs of neighbouring tilts, whole images)."""
    from .baselines import xcorr_shifts
    from .specimen import pair_network_dy
    start = xcorr_shifts(data, angles_deg)
    if "y" in axes:
        start[:, 1] = pair_network_dy(data, angles_deg)
    else:
        start[:, 1] = 0.0
    if "x" not in axes:
        start[:, 0] = 0.0
    return start


def setup_slab(executor, opts, geometry, total, record, *, user):
    """Start, measure and size a slab; returns the options and geometry the loop runs with.

    Parameters
    ----------
    executor : LocalExecutor or DaskExecutor
        With the slab steps ``slab_start``, ``depth_probe`` (the row mean of
        :func:`fastalign.align.specimen.depth_power` of the probe) and ``use_slab``.
    opts : AlignOptions
        Resolved options.
    geometry : TiltGeometry
        Full-resolution geometry.
    total : ndarray, float64, shape (n_tilts, 2)
        Starting shifts; replaced in place by the slab start unless ``user["initial_shifts"]``.
    record : dict
        ``AlignResult.options`` being built.
    user : dict
        Which of ``pad_x``, ``nz``, ``levels``, ``initial_shifts`` the caller set.
    """
    angles = geometry.angles_deg
    ny, nx = geometry.ny, geometry.nx
    info = record["specimen"]
    if not user["initial_shifts"]:
        total[:] = executor.slab_start()
        info["start"] = "xcorr chain (dx), pair network (dy)"
    depth = nx
    f = PROBE_BIN if nx >= PROBE_BIN_NX else 1
    fit = fit_pitched_power(executor.depth_probe(total, f, depth))
    th = np.deg2rad(angles)
    if fit is None or fit[0] * f < 2.0:
        log.warning("could not measure a slab thickness in the data: using nz=%d; pass nz= "
                    "(px) to set the reconstruction depth", depth)
        thickness, zc, pitch, blur = float(depth), 0.0, 0.0, float("nan")
        info["thickness_note"] = "not measurable"
    else:
        thickness, zc, pitch, blur = fit[0] * f, fit[1] * f, fit[2], fit[3] * f
        if thickness < THIN_PX:
            log.warning("the slab is about as thin as the resolution: its thickness estimate "
                        "(%.1f px) is an upper bound and the region is sized from it; pass "
                        "nz= (px) to set the reconstruction depth", thickness)
            info["thickness_note"] = "at the resolution limit (an upper bound)"
        if thickness > 0.85 * depth:
            log.warning("the slab thickness estimate (%.0f px) reaches the probed depth "
                        "(%d px): the specimen may be thicker; pass nz= to set it", thickness,
                        depth)
            info["thickness_note"] = "reaches the probed depth"
    # a depth offset zc is the sin part of dx: move the slab to the middle of the region
    total[:, 0] += zc * np.sin(th)
    pad_x, nz = slab_region(nx, angles, thickness, pitch)
    mask_pitch = pitch if abs(pitch) >= 1.0 else 0.0
    loop_angles, loop_nz = angles, None
    if mask_pitch and not (user["pad_x"] or user["nz"]):
        # the loop reconstructs in the frame turned by the pitch, where the slab is flat
        # (a pitch is an offset of every tilt angle, fastalign.align.tiltoffset): a region
        # as thin as the slab, no support mask; the final volume keeps the user's angles
        loop_angles = angles - pitch
        pad_flat, loop_nz = slab_region(nx, loop_angles, thickness)
        pad_x, mask_pitch = max(pad_x, pad_flat), 0.0
    changes = dict(specimen="slab", tol=min(opts.tol, SLAB_TOL))
    if not user["pad_x"]:
        changes["pad_x"] = pad_x
    if not user["nz"]:
        changes["nz"] = nz
    if not user["levels"]:
        # the start is sub-pixel: a 2x binned level (8 x cheaper per step) and the finest
        changes["levels"] = tuple(opts.levels[-2:])
        changes["max_iter"] = min(opts.max_iter, SLAB_MAX_ITER)
    opts = dataclasses.replace(opts, **changes)
    info.update(thickness_px=round(thickness, 2), z_offset_px=round(zc, 2),
                pitch_deg=round(pitch, 2), edge_blur_px=round(blur, 2), pad_x=opts.pad_x,
                nz=opts.nz, support_mask=bool(mask_pitch), tol_px=SLAB_TOL,
                loop="cold-start weighted SIRT, Anderson steps")
    record.update(pad_x=opts.pad_x, nz=opts.nz, levels=list(opts.levels),
                  max_iter=opts.max_iter)
    log.info("slab: thickness %.1f px, depth offset %.1f px, pitch %.1f deg; region pad_x=%d "
             "nz=%d", thickness, zc, pitch, opts.pad_x, opts.nz)
    geometry = geometry.with_shape((ny, opts.nz, nx))
    if loop_nz is not None:
        info.update(loop_frame_deg=round(-pitch, 2), loop_nz=loop_nz)
        geometry = dataclasses.replace(geometry, angles_deg=loop_angles).with_shape(
            (ny, loop_nz, nx))
    # the final volume grows by the depth move of the reported gauge unless nz was given
    slab = dict(thickness=thickness, pitch_deg=mask_pitch, fixed_nz=bool(user["nz"]))
    return opts, geometry, slab
