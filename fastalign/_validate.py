"""The one place where user input is checked and coerced (float32, C order, shapes, angles)."""
import numbers

import numpy as np


def as_angles_deg(angles_deg, n_expected=None, name="angles_deg"):
    """Validate tilt angles in degrees: 1-D, finite, no duplicates; returns float64 copy."""
    if angles_deg is None:
        raise ValueError(f"{name} is required (tilt angles in degrees)")
    try:
        a = np.array(angles_deg, dtype=np.float64, copy=True)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a sequence of numbers (degrees): {exc}") from None
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} is empty: at least one tilt angle is needed")
    if not np.all(np.isfinite(a)):
        bad = np.flatnonzero(~np.isfinite(a))
        raise ValueError(f"{name} has non-finite values at indices {bad.tolist()}")
    rounded = np.round(a, 6)
    uniq, counts = np.unique(rounded, return_counts=True)
    if np.any(counts > 1):
        raise ValueError(f"{name} has duplicate angles: {uniq[counts > 1].tolist()} degrees")
    if n_expected is not None and a.size != n_expected:
        raise ValueError(
            f"{name} has {a.size} angles but the tilt series has {n_expected} images")
    return a


def as_float32_array(x, ndim, name, allow_nonfinite=False):
    """Coerce to C-contiguous float32 with ``ndim`` dims; reject empty, complex, NaN/Inf.

    Returns the input itself when it already is C-contiguous float32 (no copy); callers never
    write into it.
    """
    if isinstance(x, np.ndarray):
        arr = x
    else:
        try:
            arr = np.asarray(x)
        except Exception as exc:  # pragma: no cover - exotic objects
            raise TypeError(f"{name} must be array-like: {exc}") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number)
                                   or arr.dtype == np.bool_):
        raise TypeError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    if np.iscomplexobj(arr):
        raise TypeError(f"{name} must be real, got dtype {arr.dtype}")
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got {arr.ndim}-D with shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    src_finite = None
    if arr.dtype.itemsize > 4 and np.issubdtype(arr.dtype, np.floating):
        src_finite = bool(np.isfinite(arr).all())
    with np.errstate(over="ignore"):
        arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not allow_nonfinite and src_finite and not np.isfinite(arr).all():
        raise ValueError(f"{name} has values outside the float32 range (|x| > 3.4e38)")
    if not allow_nonfinite and not np.isfinite(arr).all():
        n_bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(f"{name} contains {n_bad} NaN/Inf values")
    return arr


def as_float32_out(out, shape, name="out"):
    """Check a caller-provided output buffer."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a numpy array")
    if out.shape != tuple(shape):
        raise ValueError(f"{name} has shape {out.shape}, expected {tuple(shape)}")
    if out.dtype != np.float32 or not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError(f"{name} must be a writeable C-contiguous float32 array")
    return out


def as_positive_int(v, name, minimum=1):
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(v).__name__}")
    if v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    return int(v)


def as_finite_float(v, name, minimum=None):
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {v!r}") from None
    if not np.isfinite(f):
        raise ValueError(f"{name} must be finite, got {v!r}")
    if minimum is not None and f < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {f}")
    return f


def fill_nonfinite(arr, name="data"):
    """Replace NaN/Inf in a float array, in place, by the median of its finite values.

    Parameters
    ----------
    arr : ndarray, floating
        Modified in place (pass a copy to keep the original).
    name : str
        For messages.

    Returns
    -------
    arr : ndarray
        The same array.
    n_replaced : int
        How many values were replaced (0 when all were finite; then ``arr`` is untouched).
    fill_value : float or None
        The median used, None when nothing was replaced.

    Raises
    ------
    ValueError
        No finite value at all.
    """
    finite = np.isfinite(arr)
    n_bad = int(arr.size - np.count_nonzero(finite))
    if n_bad == 0:
        return arr, 0, None
    if n_bad == arr.size:
        raise ValueError(f"{name} has no finite values at all")
    value = float(np.median(arr[finite]))
    arr[~finite] = value
    return arr, n_bad, value


#: a series judged by :func:`check_angle_units` has more tilts than this
RADIANS_MIN_TILTS = 5
#: ... and every ``|angle|`` at most this: pi/2 (a radian series up to +-90 degrees)
RADIANS_MAX_ABS = np.pi / 2 + 1e-6


def looks_like_radians(angles_deg):
    """True when tilt angles given as degrees are probably radians.

    More than :data:`RADIANS_MIN_TILTS` tilts that all lie within +-pi/2 (so a series spans
    at most 3.2 "degrees"): a radian series up to +-90 degrees; no degree series that can be
    aligned looks like that.
    """
    a = np.asarray(angles_deg, dtype=np.float64)
    return a.size > RADIANS_MIN_TILTS and float(np.abs(a).max()) <= RADIANS_MAX_ABS


def check_angle_units(angles_deg, name="angles_deg"):
    """Refuse tilt angles that look like radians (:func:`looks_like_radians`).

    Raises
    ------
    ValueError
        Naming the fix, ``np.rad2deg``.
    """
    if looks_like_radians(angles_deg):
        a = np.asarray(angles_deg, dtype=np.float64)
        raise ValueError(
            f"{name} look like radians: all {a.size} lie within {a.min():.3g} .. "
            f"{a.max():.3g}; fastalign takes degrees: pass np.rad2deg(angles)")


#: the columns of :func:`signal_stats`
SIGNAL_STATS = ("n_nonfinite", "ptp", "mean", "var", "mean_abs")


def signal_stats(data):
    """Per-image statistics that :func:`check_signal_stats` judges, shape ``(n_images, 5)``
    (columns :data:`SIGNAL_STATS`, float64).

    Works image by image (float64 sums), so it needs no full-size temporary; the rows of
    several tilt chunks concatenate to those of the whole series (the Dask path computes
    them chunk by chunk on the workers).  The other columns are NaN for an image with
    non-finite values.
    """
    n = data.shape[0]
    out = np.full((n, len(SIGNAL_STATS)), np.nan)
    for i in range(n):
        img = data[i]
        n_bad = int(img.size - np.count_nonzero(np.isfinite(img)))
        out[i, 0] = n_bad
        if n_bad:
            continue
        mean = img.mean(dtype=np.float64)
        out[i, 1:] = (float(img.max()) - float(img.min()), mean,
                      np.square(img - mean).mean(), np.abs(img).mean(dtype=np.float64))
    return out


def check_signal_stats(stats, name="tilt_series"):
    """Refuse, from :func:`signal_stats`, a series with NaN/Inf values or nothing to align: all
    zero, every image constant, or a whole-series standard deviation below ``1e-6`` times its
    mean absolute value.

    Raises
    ------
    ValueError
        ``"... contains N NaN/Inf values"`` or ``"... nothing to align"``.
    """
    n_bad = int(stats[:, 0].sum())
    if n_bad:
        raise ValueError(f"{name} contains {n_bad} NaN/Inf values")
    ptp, mean, var, mabs = stats[:, 1], stats[:, 2], stats[:, 3], stats[:, 4]
    if not np.any(ptp) and not np.any(mean):
        raise ValueError(f"{name} is all zero: nothing to align")
    if not np.any(ptp):
        raise ValueError(f"{name} is constant in every image (no contrast): nothing to align")
    std = float(np.sqrt(var.mean() + mean.var()))  # equal-size images: total variance
    scale = float(mabs.mean())
    if std < 1e-6 * scale:
        raise ValueError(f"{name} is nearly constant (standard deviation {std:.3g} < 1e-6 x "
                         f"mean |value| {scale:.3g}): nothing to align")


def check_signal(data, name="tilt_series"):
    """:func:`check_signal_stats` of ``data`` (an in-memory series)."""
    check_signal_stats(signal_stats(data), name)


def check_align_angles(angles_deg):
    """The checks of an alignment's validated angles (one per tilt), before anything is
    computed: at least 2 tilts and degrees (:func:`check_angle_units`).  Shared by
    :func:`fastalign.align` and :func:`fastalign.distributed.align`."""
    if len(angles_deg) < 2:
        raise ValueError("alignment needs at least 2 tilts")
    check_angle_units(angles_deg)


def warn_two_tilts(n, log, angles_deg=None):
    """Log :func:`two_tilts_message` on ``log`` for a 2-tilt series (once the series passed
    its checks), and the warnings of :func:`angle_layout_warnings` for ``angles_deg``."""
    if n == 2:
        log.warning(two_tilts_message(n))
    if angles_deg is not None:
        for text in angle_layout_warnings(angles_deg):
            log.warning(text)


#: a gap between sorted tilt angles this many times the median step (and >= GAP_MIN_DEG)
#: is reported: missing or excluded views, or a mistyped angle
GAP_FACTOR = 3.0
GAP_MIN_DEG = 6.0
#: a tilt range narrower than this (degrees) determines little depth
MIN_RANGE_DEG = 30.0


def angle_layout_warnings(angles_deg):
    """One-line warnings for plausible but unusual tilt angles (never an error: such series
    exist): a gap in the sorted angles of more than :data:`GAP_FACTOR` times the median step
    and at least :data:`GAP_MIN_DEG`, and a total range under :data:`MIN_RANGE_DEG`.
    Series of fewer than 5 tilts are not judged."""
    a = np.sort(np.asarray(angles_deg, dtype=np.float64))
    if a.size < 5:
        return []
    out = []
    steps = np.diff(a)
    step = float(np.median(steps))
    k = int(np.argmax(steps))
    if steps[k] >= max(GAP_FACTOR * step, GAP_MIN_DEG):
        out.append(f"tilt angles have a gap of {steps[k]:.3g} deg between {a[k]:.3g} and "
                   f"{a[k + 1]:.3g} (typical step {step:.3g} deg): check the angle file "
                   "(missing views or a mistyped angle?)")
    if a[-1] - a[0] < MIN_RANGE_DEG:
        out.append(f"tilt angles span only {a[-1] - a[0]:.3g} deg ({a[0]:.3g} to "
                   f"{a[-1]:.3g}): depth is poorly determined; check the angle file")
    return out


#: fewest pixels along y or x of the coarsest level's images before a warning
MIN_LEVEL_PX = 16


def region_warnings(ny, nx, levels, nz):
    """One-line warnings for a reconstruction set-up that cannot work well: the coarsest
    level's images narrower than :data:`MIN_LEVEL_PX` (``levels`` too coarse for the images)
    and a volume thicker than it is wide (``nz > nx``)."""
    out = []
    f = max(levels)
    if nx // f < MIN_LEVEL_PX:   # levels bin x; rows are binned only as far as there are some
        out.append(f"levels={tuple(levels)}: the coarsest level's images are {nx // f} px "
                   f"wide (fewer than {MIN_LEVEL_PX}); pass smaller levels=")
    if nz > nx:
        out.append(f"the volume is thicker (nz={nz}) than wide ({nx} px): pass a smaller nz=")
    return out


def two_tilts_message(n):
    """The warning for a series of ``n == 2`` tilts (one wording for API and CLI)."""
    return (f"alignment from {n} tilts is not determined: the shifts can only be fitted, not "
            "checked (use 3 or more tilts)")
