"""Tilt-angle offset: a constant added to every tilt angle, from a slab's flatness
(``refine=(..., "tilt_offset")``; issue 19).

Physics
-------
In parallel projection (DESIGN.md: ``u = x cos th + z sin th``) the tilt series of an object
at angles ``th + delta`` equals the series of the object rotated by ``delta`` in the
``(x, z)`` plane at angles ``th``.  A constant offset of all tilt angles is therefore **not
identifiable from projection consistency**: any offset reconstructs the data equally well,
as a rotated object.  What fixes it is a prior on the specimen, as in IMOD (tomopitch's
"angle offset") and AreTomo (``-TiltCor``): a slab (lamella, section, supported film) is
flat, i.e. perpendicular to the beam at the true 0 degrees.

With nominal angles ``th`` and true angles ``th + delta``, the reconstruction shows the slab
pitched by ``-delta`` (mid-plane ``z = tan(-delta) x``, the convention of
:func:`fastalign.align.specimen.fit_pitched_slab` and of ``options["specimen"]["pitch_deg"]``,
which the loop's coarse probe measures on a 0.5 degree grid).  So

    tilt_offset_deg = -pitch_deg,   corrected angles = nominal + tilt_offset_deg,

and a reconstruction with the corrected angles shows the slab flat.

Estimate (:func:`mass_law_offset`): the projected mass of a slab grows like
``1 / cos`` of the *true* tilt angle (the path through a flat slab; AreTomo's ``-TiltCor``
fits the same Beer-Lambert law to its log images), so the per-tilt mean of the mass
projections is fitted by least squares as ``m_i = a + b / cos(th_i + delta)`` (``a``: a
constant background the intensity model kept).  It needs no
reconstruction and no shifts (a translation moves little mass in or out of the field), so it
runs before the loop, and the whole loop -- the slab's start, its region, every
reconstruction -- uses the corrected angles: the slab is flat in every volume.  Measured
(``bench/tilt_offset.py``, Poisson noise at 1000 counts, 61 tilts): offsets of +-2, +2.5 and
+-3 degrees recovered to 0.003-0.023 degree on 128 px fields, 0.071 on a 96 px field (the
mean over a smaller field varies more with the material in it).

The slab's pitch is the other view of the same quantity (``options["specimen"]
["pitch_deg"]``, from the loop's depth probe on a 0.5 degree grid: about 1 degree
accurate): without the correction it is about ``-delta``, with it about 0.  It is kept as a
cross-check (``options["tilt_offset"]["residual_pitch_deg"]``; a warning when it exceeds
:data:`MAX_RESIDUAL_PITCH`), not as the estimate: a sub-grid fit of a sloped box to a
full-resolution probe's depth power was tried and missed by 0.35-0.9 degree on 96 px fields
even with the true shifts (the power of a few particles per column decides the edges).
The mass law assumes mass projections (the intensity model's output; a bright-field slab
without vacuum, whose ``I0`` per tilt is its film level, loses the law: not tested yet)
and a slab of laterally uniform mean density.

Shifts: the dx gauge ``a cos th + b sin th`` spans the same functions for ``th + delta``, so
the gauge-fixed shifts do not depend on the offset; only the gauge coefficients and the
reconstructions do.

Compact objects have no flat reference (and a projected mass that does not change with
tilt): the offset is not determined, it is a rotation of the object.  A warning is logged and
``options["tilt_offset"]`` records an estimated offset of 0 with that reason; nothing is made
up.  A scale of the angles is not estimated.

A known offset (``tilt_offset_deg=`` of :func:`fastalign.align`, ``--tilt-offset`` of the
CLI) is added to the angles before anything else; a refined offset comes on top of it.
``AlignResult.tilt_offset_deg`` is the total and ``AlignResult.angles_deg`` the corrected
angles (input + offset), which the volume was reconstructed with and the CLI's ``.tlt``
holds.
"""
import dataclasses
import logging

import numpy as np
from scipy.optimize import least_squares

log = logging.getLogger("fastalign.align")

__all__ = ["mass_law_offset", "estimate_tilt_offset", "check_residual_pitch",
           "NOT_DETERMINED", "MAX_RESIDUAL_PITCH", "MAX_OFFSET_DEG"]

#: Why a compact object gets no tilt offset.
NOT_DETERMINED = ("not determined for a compact object: a tilt-angle offset is a rotation of "
                  "the object (only a flat slab fixes it)")
#: Largest offset searched (degrees).
MAX_OFFSET_DEG = 20.0
#: The ``b / cos`` growth over the tilt range must exceed this fraction of the mean mass (a
#: slab over +-60 degrees: about 0.7; a compact object: 0).
MIN_GROWTH = 0.05
#: A slab still pitched by more than this (degrees) after the correction is reported: the
#: coarse pitch grid is 0.5 degree and its accuracy about 1 degree.
MAX_RESIDUAL_PITCH = 1.5


def mass_law_offset(means, angles_deg):
    """Tilt offset (degrees) from the per-tilt mean mass ``means (n,)`` of a slab: least
    squares of ``m_i = a + b / cos(th_i + delta)`` (module docstring; ``a`` absorbs a constant
    background, ``a`` and ``b`` are solved linearly for each ``delta``).

    Returns ``(delta_deg, rms)``: the offset and the RMS residual relative to the mean mass;
    ``(None, None)`` when the means do not grow with tilt (the ``b / cos`` part spans less
    than :data:`MIN_GROWTH` of the mean: no slab law) or are not finite.
    """
    m = np.asarray(means, dtype=np.float64)
    th = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    scale = float(np.abs(m).mean()) if m.size else 0.0
    if m.size < 4 or not np.all(np.isfinite(m)) or scale <= 0:
        return None, None
    limit = min(np.deg2rad(MAX_OFFSET_DEG), 0.5 * np.pi - 1e-3 - float(np.abs(th).max()))
    if limit <= 0:
        return None, None

    def solve(delta):
        sec = 1.0 / np.cos(th + delta)
        M = np.stack([np.ones_like(sec), sec], axis=1)
        coef = np.linalg.lstsq(M, m, rcond=None)[0]
        return coef, (m - M @ coef) / scale

    q = least_squares(lambda q: solve(q[0])[1], [0.0], bounds=([-limit], [limit])).x
    (_, b), resid = solve(q[0])
    sec = 1.0 / np.cos(th + q[0])
    if not b * float(np.ptp(sec)) > MIN_GROWTH * scale:
        return None, None
    return float(np.rad2deg(q[0])), float(np.sqrt(np.mean(resid ** 2)))


def estimate_tilt_offset(executor, geometry, record, given_deg=0.0):
    """The tilt-offset step of :func:`fastalign.align.loop.drive` (before the slab setup).

    For a slab (``record["specimen"]``): :func:`mass_law_offset` of the executor's per-tilt
    means; the executor and the returned geometry take the corrected angles.  For a compact
    object: a warning and an offset of 0 (:data:`NOT_DETERMINED`).  Records
    ``options["tilt_offset"]``.  Returns ``(offset_deg, geometry)``.
    """
    spec = record.get("specimen") or {}
    info = dict(given_deg=float(given_deg), estimated_deg=0.0)
    record["tilt_offset"] = info
    slab = spec.get("kind") == "slab" or "slab loop not used" in str(spec.get("note", ""))
    if not slab:
        log.warning("the tilt offset is %s; recording 0", NOT_DETERMINED)
        info["note"] = NOT_DETERMINED
        return 0.0, geometry
    angles = geometry.angles_deg
    delta, rms = mass_law_offset(executor.tilt_means(), angles)
    if delta is None:
        note = ("not determined: the per-tilt mean mass does not grow like 1/cos (check "
                "contrast= for the intensity model)")
        log.warning("the tilt offset is %s; recording 0", note)
        info["note"] = note
        return 0.0, geometry
    info.update(estimated_deg=round(delta, 4), method="mass law: mean ~ 1/cos(angle + offset)",
                fit_rms=round(rms, 5))
    log.info("tilt offset %+.3f deg (slab mass law, misfit %.3g)", delta, rms)
    geometry = dataclasses.replace(geometry, angles_deg=angles + delta)
    executor.angles = geometry.angles_deg
    return delta, geometry


def check_residual_pitch(record):
    """After the slab setup: copy its pitch (measured with the corrected angles) into
    ``options["tilt_offset"]["residual_pitch_deg"]`` and warn when it is larger than
    :data:`MAX_RESIDUAL_PITCH` (the mass law and the slab's flatness disagree)."""
    info, spec = record.get("tilt_offset"), record.get("specimen") or {}
    if not info or "method" not in info or spec.get("pitch_deg") is None:
        return
    pitch = float(spec["pitch_deg"])
    info["residual_pitch_deg"] = pitch
    if abs(pitch) > MAX_RESIDUAL_PITCH:
        log.warning("after the tilt offset %+.2f deg the slab is still pitched by %.1f deg: "
                    "the mass law and the slab's flatness disagree (a laterally varying "
                    "specimen, or a background left in the data: check background=)",
                    info["estimated_deg"], pitch)
