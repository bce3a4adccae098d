"""Options of the alignment loop: one frozen, validated value for every executor.

:class:`AlignOptions` holds every parameter of :func:`fastalign.align` and
:func:`fastalign.distributed.align` with the same defaults.  Construction checks what does
not depend on the data (names, ranges, types); :meth:`AlignOptions.resolved` fills the
data-dependent defaults (``levels``, ``nz``, ``lam``, ``pad_x="auto"``) once the shape and
the data statistics are known.  What an executor cannot do is refused in one place,
:meth:`AlignOptions.check_executor`.
"""
import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from .._validate import as_finite_float, as_positive_int, region_warnings
from .intensity import check_background, check_contrast
from .levels import auto_levels

__all__ = ["AlignOptions", "REFINE"]

log = logging.getLogger("fastalign.align")

REFINE = ("shifts", "axis_angle", "center", "tilt_offset")


def _check_refine(refine):
    """``refine`` as a tuple in canonical order; ``"shifts"`` is required."""
    if isinstance(refine, str):
        refine = (refine,)
    try:
        items = [str(r) for r in refine]
    except TypeError:
        raise TypeError(f"refine must be a sequence of {REFINE}, got {refine!r}") from None
    bad = [r for r in items if r not in REFINE]
    if bad:
        raise ValueError(f"refine entries must be among {REFINE}, got {bad}")
    if "shifts" not in items:
        raise ValueError("refine must include 'shifts' (the per-tilt translations)")
    return tuple(r for r in REFINE if r in items)


def _choice(value, name, allowed, shown=None):
    if value not in allowed:
        shown = shown or " or ".join(repr(a) for a in allowed)
        raise ValueError(f"{name} must be {shown}, got {value!r}")


@dataclass(frozen=True, eq=False)
class AlignOptions:
    """Every option of the autofocus loop (meanings: :func:`fastalign.align`).

    Construct with keywords; invalid values raise ``ValueError``/``TypeError`` with the
    messages of :func:`fastalign.align`.  ``levels``, ``nz``, ``lam`` and ``pad_x`` may stay
    unresolved (None / ``"auto"``) until :meth:`resolved`.
    """

    method: str = "autofocus"
    recon: str = "sirt"
    estimator: str = "phase"
    axes: str = "xy"
    max_iter: int = 40
    tol: float = 0.002
    levels: Optional[tuple] = None
    n_inner: int = 10
    coarse_iter: int = 15
    slices: Optional[Any] = None
    nz: Optional[int] = None
    lam: Optional[float] = None
    nonneg: bool = True
    center_offset: float = 0.0
    initial_shifts: Any = None
    min_coherence: float = 0.1
    taper: float = 0.1
    final_iter: Optional[int] = None
    extrapolate: bool = True
    pad_x: Any = 0
    max_rows: Optional[int] = 64
    refine: tuple = ("shifts",)
    axis_angle_deg: Optional[float] = None
    axis_search_deg: float = 10.0
    orient: bool = True
    y_profile: Any = "auto"
    com_start: Any = "auto"
    specimen: str = "auto"
    contrast: str = "auto"
    background: Any = "auto"
    callback: Any = None
    progress: bool = False
    exclude: Any = None          # tilt exclusion (align/badtilts.py); indices checked there
    auto_exclude: bool = True
    include: Any = None
    tilt_offset_deg: float = 0.0  # a known offset added to the angles (align/tiltoffset.py)

    def __post_init__(self):
        put = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen)
        put("refine", _check_refine(self.refine))
        put("contrast", check_contrast(self.contrast))      # the intensity model
        put("background", check_background(self.background))
        if not isinstance(self.auto_exclude, (bool, np.bool_)):
            raise TypeError(f"auto_exclude must be True or False, got {self.auto_exclude!r}")
        put("tilt_offset_deg", as_finite_float(self.tilt_offset_deg, "tilt_offset_deg"))
        if abs(self.tilt_offset_deg) >= 45.0:
            raise ValueError("tilt_offset_deg must be within +-45 degrees, got "
                             f"{self.tilt_offset_deg}")
        if self.method in ("xcorr", "com"):
            if self.refine != ("shifts",) or self.axis_angle_deg is not None:
                raise ValueError("refine and axis_angle_deg apply to method='autofocus' only")
            return  # a baseline: the loop options are not used
        _choice(self.method, "method", ("autofocus",), "'autofocus', 'xcorr' or 'com'")
        _choice(self.recon, "recon", ("sirt", "tv"), "'sirt' or 'tv'")
        _choice(self.estimator, "estimator", ("phase", "gradient"), "'phase' or 'gradient'")
        _choice(self.axes, "axes", ("xy", "x", "y", "yx"), "'xy', 'x' or 'y'")
        _choice(self.y_profile, "y_profile", ("auto", False), "'auto' or False")
        _choice(self.com_start, "com_start", ("auto", False), "'auto' or False")
        _choice(self.specimen, "specimen", ("auto", "compact", "slab"),
                "'auto', 'compact' or 'slab'")
        if self.levels is not None:
            put("levels", self._check_levels(self.levels))
        put("max_iter", as_positive_int(self.max_iter, "max_iter"))
        put("n_inner", as_positive_int(self.n_inner, "n_inner"))
        put("coarse_iter", as_positive_int(self.coarse_iter, "coarse_iter", minimum=0))
        put("tol", as_finite_float(self.tol, "tol", minimum=0.0))
        put("center_offset", as_finite_float(self.center_offset, "center_offset"))
        if self.nz is not None:
            put("nz", as_positive_int(self.nz, "nz"))
        if self.final_iter is not None:
            put("final_iter", as_positive_int(self.final_iter, "final_iter", 0))
        if isinstance(self.initial_shifts, str) and self.initial_shifts not in ("xcorr", "com"):
            raise ValueError("initial_shifts must be an array, 'xcorr', 'com' or a file read "
                             "by fastalign.io.read_alignment(path) (.xf/.aln), got "
                             f"{self.initial_shifts!r}")
        if isinstance(self.pad_x, str):
            if self.pad_x != "auto":
                raise ValueError(f"pad_x must be an integer or 'auto', got {self.pad_x!r}")
        else:
            put("pad_x", as_positive_int(self.pad_x, "pad_x", minimum=0))
        put("axis_search_deg", as_finite_float(self.axis_search_deg, "axis_search_deg",
                                               minimum=0.0))
        if self.axis_angle_deg is not None:
            put("axis_angle_deg", as_finite_float(self.axis_angle_deg, "axis_angle_deg"))
        if self.max_rows is not None:
            put("max_rows", as_positive_int(self.max_rows, "max_rows"))

    @staticmethod
    def _check_levels(levels):
        levels = [as_positive_int(int(f), "levels") for f in levels]
        if any(a <= b for a, b in zip(levels, levels[1:])):
            raise ValueError(f"levels must decrease strictly, got {levels}")
        return tuple(levels)

    # ------------------------------------------------------------------ derived flags
    @property
    def refine_axis(self):
        return "axis_angle" in self.refine

    @property
    def refine_center(self):
        return "center" in self.refine

    def check_slices(self, ny):
        """``slices`` as sorted unique row indices (int64), or None."""
        if self.slices is None:
            return None
        slices = np.unique(np.asarray(self.slices, dtype=np.int64))
        if slices.size == 0 or slices.min() < 0 or slices.max() >= ny:
            raise ValueError(f"slices must be row indices in [0, {ny})")
        if self.refine_axis and np.any(np.diff(slices) != 1):
            raise ValueError("refine='axis_angle' needs contiguous slices (it uses y gradients)")
        return slices

    def resolved(self, ny, nx, *, mean_abs=None, edge_mean=None):
        """A copy with the data-dependent defaults filled in.

        ``levels``: :func:`fastalign.align.levels.auto_levels` for +-20 px; ``nz``: ``nx``;
        ``lam`` (TV): 2 % of ``mean_abs``, the mean absolute data value; ``pad_x="auto"``:
        ``nx // 4`` when ``edge_mean`` (the outermost columns' mean) exceeds 10 % of
        ``mean_abs``, else 0.  ``slices`` become an index array.
        """
        levels = self.levels if self.levels is not None else tuple(auto_levels(ny, nx, 20.0))
        lam = self.lam
        if self.recon == "tv" and lam is None:
            lam = 0.02 * mean_abs
        pad_x = self.pad_x
        if isinstance(pad_x, str):
            pad_x = nx // 4 if edge_mean > 0.1 * mean_abs else 0
        nz = nx if self.nz is None else self.nz
        for text in region_warnings(ny, nx, levels, nz):
            log.warning(text)
        return dataclasses.replace(self, levels=levels, lam=lam, pad_x=pad_x, nz=nz,
                                   slices=self.check_slices(ny))

    def check_executor(self, name, lacks):
        """Refuse the options the executor ``name`` cannot run (``lacks``: option names)."""
        bad = []
        if "initial_shifts_baseline" in lacks and isinstance(self.initial_shifts, str):
            raise ValueError("initial_shifts='xcorr'/'com' is not available distributed; pass "
                             "the shifts (e.g. from fastalign.xcorr_shifts) as an array")
        if "refine_axis" in lacks and "axis_angle" in self.refine:
            bad.append("refine 'axis_angle'")
        for k in ("slices", "axis_angle_deg"):
            if k in lacks and getattr(self, k) is not None:
                bad.append(k)
        if "method" in lacks and self.method != "autofocus":
            bad.append("method")
        if "specimen" in lacks and self.specimen == "slab":
            bad.append("specimen='slab'")
        if bad:
            raise ValueError(f"the {name} executor does not support {', '.join(bad)}")

    def record(self):
        """The options as recorded in ``AlignResult.options``."""
        return dict(pad_x=self.pad_x, max_rows=self.max_rows, method=self.method,
                    recon=self.recon, estimator=self.estimator, axes=self.axes,
                    max_iter=self.max_iter, tol=self.tol, levels=list(self.levels),
                    n_inner=self.n_inner, coarse_iter=self.coarse_iter, nz=self.nz,
                    lam=self.lam, nonneg=self.nonneg, center_offset=self.center_offset,
                    min_coherence=self.min_coherence, taper=self.taper,
                    final_iter=self.final_iter, specimen=self.specimen, orient=self.orient,
                    slices=None if self.slices is None else self.slices.tolist())
