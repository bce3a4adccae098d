"""Worker-side tasks: per-slab solver states and per-tilt-chunk operations.

A slab state (:class:`SlabState`) holds one slab's solver (projector, weights, buffers, iterate
``x``) in the memory of the worker that created it.  Every task that advances a state takes the
previous task's result ``(state, info)`` and returns a new ``(state, info)``: ``state`` is the
same object, changed in place (no copy of the slab), and ``info`` a fresh small record (partial
sums, a fresh reprojection) that later tasks read without racing with the next update.  Each
state carries a generation counter that every update checks and increments, so a state reused
out of order (which in-place updates would make wrong) raises instead of computing silently
wrong numbers.  After a lost worker, Dask recomputes the chain from the slab read, which is
deterministic.
"""
import numpy as np
from dask.sizeof import sizeof

from .._validate import signal_stats
from ..align.executor import (extrapolate_volume, make_solver, probe_volume, quality_sums,
                               slab_solver, windowed_residual, windowed_x, windowed_y)
from ..align.levels import bin_stack, pad_columns, region_projector, warm_start
from ..align.shift import cross_power, fourier_shift
from ..align.slab import slab_start_shifts
from ..align.specimen import depth_power, edge_ratios
from ..io.slabs import resolve
from ..operator import Projector
from ..recon.sirt import SIRTSolver
from ..recon.tv import TVSolver
from ._common import numba_section


class StaleStateError(RuntimeError):
    """A slab state was used out of order (a task ran twice or on an outdated copy)."""


class SlabState:
    """One slab's solver, iterate and data, living on a worker."""

    def __init__(self, solver, x, b=None):
        self.solver = solver
        self.x = x
        self.b = b
        self.gen = 0
        self.x_before = None  # the iterate before this outer iteration (volume jumps)
        self.windows = None   # slab specimens: hard (y rows, x) windows of the measured data

    def advance(self, gen):
        if self.gen != gen:
            raise StaleStateError(f"slab state at generation {self.gen}, task expected {gen}: "
                                  "a task was re-run on an already updated state")
        self.gen += 1

    def nbytes(self):
        total = self.x.nbytes + (0 if self.b is None else self.b.nbytes)
        total += 0 if self.x_before is None else self.x_before.nbytes
        for v in vars(self.solver).values():
            if isinstance(v, np.ndarray):
                total += v.nbytes
        return total


@sizeof.register(SlabState)
def _sizeof_state(s):
    return s.nbytes()


# ----------------------------------------------------------------------------- recon
def sirt_slab(block, angles, nz, center_offset, n_iter, nonneg, mask, writer, r0):
    """SIRT of one slab from zero, exactly as :func:`fastalign.sirt`; written or returned."""
    block = resolve(block)
    rows, nx = block.shape[1], block.shape[2]
    with numba_section():
        A = Projector(angles, (rows, nz, nx), center_offset)
        solver = SIRTSolver(A, mask=mask, nonneg=nonneg)
        x = solver.run(block, None, n_iter)
    return x if writer is None else writer.write(r0, x)


def tv_init(block, angles, nz, center_offset, lam, nonneg, n_inner, L):
    """A TV slab state from zero (as :func:`fastalign.tv` without ``x0``), begun: returns
    ``(state, partial sums of TVSolver.begin)``."""
    block = resolve(block)
    rows, nx = block.shape[1], block.shape[2]
    with numba_section():
        A = Projector(angles, (rows, nz, nx), center_offset)
        solver = TVSolver(A, lam=lam, nonneg=nonneg, tv="2d", n_inner=n_inner, L=L)
        st = SlabState(solver, np.zeros(A.domain_shape, np.float32), block)
        return st, solver.begin(block, st.x, solver.zero_reprojection())


def tv_step(prev, gen, decision):
    """One MFISTA step of a slab: apply the client's previous decision
    (:meth:`TVSolver.decide`), then :meth:`TVSolver.propose`; returns its partial sums."""
    st = prev[0]
    st.advance(gen)
    with numba_section():
        if decision is not None:
            st.solver.decide(*decision)
        return st, st.solver.propose()


def tv_end(prev, gen, decision):
    """Apply the last decision and :meth:`TVSolver.end` (the slab's ``x`` and ``A x``)."""
    st = prev[0]
    st.advance(gen)
    with numba_section():
        if decision is not None:
            st.solver.decide(*decision)
        st.solver.end()
    return st, {}


def quality_of(prev, nx, wy, wx, wxs, angles, center_offset):
    """The slab's part of :class:`fastalign.align.executor.TiltQuality` (its additive sums,
    :func:`fastalign.align.executor.quality_sums`): the data against the final volume's
    reprojection on the detector's ``nx`` columns, as the local final volume's row blocks
    (the SIRT solver's reprojection when it has the detector's width, else projected)."""
    st = prev[0]
    b = st.b
    pl = (b.shape[2] - nx) // 2
    if pl:
        b = np.ascontiguousarray(b[:, :, pl:pl + nx])
    P = st.solver.reprojection if isinstance(st.solver, SIRTSolver) else None
    with numba_section():
        if P is None or P.shape != b.shape:
            P = Projector(angles, st.x.shape, center_offset, n_det=nx)(st.x)
        return quality_sums(b, P, wy, wx, wxs)


def finish_volume(prev, writer, r0, crop):
    """The slab's volume (columns ``crop`` = (c0, c1)), written or returned."""
    x = prev[0].x
    if crop is not None:
        x = np.ascontiguousarray(x[:, :, crop[0]:crop[1]])
    return x if writer is None else writer.write(r0, x)


# ----------------------------------------------------------------------------- align
def read_binned(block, f, fy):
    """A tilt chunk of the raw data binned ``fy x f`` (as the local loop bins the stack)."""
    with numba_section():
        return bin_stack(block, f, fy)


def shift_chunk(raw, shifts, pad):
    """``fourier_shift`` of a tilt chunk with the whole stack's padding."""
    with numba_section():
        return fourier_shift(raw, shifts, pad=pad)


def shift_views(raw, shifts, keep, pads, orientation=None):
    """A tilt chunk aligned as :func:`fastalign.align.badtilts.expand_result` aligns a
    series after an exclusion: turned as the run turned its data (``orientation``, its
    record; None: not turned), the kept views (``keep``) shifted with the padding
    ``pads[0]``, the excluded ones with ``pads[1]``."""
    if orientation:
        raw = turn_chunk(raw, orientation)
    out = np.empty(raw.shape, np.float32)
    with numba_section():
        for mask, pad in ((keep, pads[0]), (~keep, pads[1])):
            if mask.any():
                out[mask] = fourier_shift(np.ascontiguousarray(raw[mask]), shifts[mask],
                                          pad=pad)
    return out


def rows_of(arr, rows):
    """``arr[:, rows]`` contiguous (``rows``: a slice or an index array)."""
    return np.ascontiguousarray(arr[:, rows])


def tilts_of(res, key, t0, t1):
    return np.ascontiguousarray(res[1][key][t0:t1])


def pick(res, key):
    return res[1][key]


def pick_all(res):
    return res[1]


def chunk_stats(block):
    """``(per-image signal_stats, sum |v|, sum |v| over the first and last columns)`` (float64;
    :func:`fastalign._validate.signal_stats`, judged on the client)."""
    a = np.abs(block, dtype=np.float64)
    return signal_stats(block), float(a.sum()), float(a[:, :, [0, -1]].sum())


def min_of(block):
    """The chunk's minimum (float)."""
    return float(np.min(block))


def tilt_means_of(block):
    """Per-tilt mean (float64) of the chunk, as the local executor's ``tilt_means``."""
    return block.mean(axis=(1, 2), dtype=np.float64)


def apply_intensity(block, model, first):
    """The chunk's mass projections (:meth:`IntensityModel.apply` from tilt ``first``)."""
    return model.apply(block, first=first)


def align_state(angles, shape, center_offset, recon, nonneg, lam, x, pad=0):
    """An alignment slab state: the local loop's solver for this slab (region ``pad``
    columns wider than the field per side), iterate ``x``."""
    with numba_section():
        A = region_projector(angles, shape, center_offset, pad, recon)
        solver = make_solver(recon, A, nonneg=nonneg, lam=lam)
        if x is None:
            x = np.zeros(A.domain_shape, np.float32)
        return SlabState(solver, x), {}


def set_data(prev, gen, pieces, recon, keep_x=False, windows=None):
    """Assemble the slab's data ``b`` from tilt-chunk pieces (padded to the state's detector
    as the local loop pads them); ``keep_x``: remember the iterate for :func:`jump_volume`.

    ``windows = (wy, wx)``, the hard windows of
    :func:`fastalign.align.specimen.valid_windows` (``wy`` this slab's rows): the data
    weights are 1 only where the data are measured (the local slab loop's
    ``set_data_weights``); kept for :func:`measure_slab`."""
    st = prev[0]
    st.advance(gen)
    b = np.concatenate(pieces, axis=0) if len(pieces) > 1 else pieces[0]
    pl = (st.solver.A.range_shape[2] - b.shape[2]) // 2
    b = pad_columns(b, pl, recon)
    st.b = np.ascontiguousarray(b, dtype=np.float32)
    st.x_before = st.x.copy() if keep_x else None
    if windows is not None:
        wy, wx = windows
        hard = np.ascontiguousarray(wy[:, :, None] * wx[:, None, :])
        with numba_section():
            st.solver.set_data_weights(pad_columns(hard, pl, "sirt"))
        st.windows = windows
    return st, {}


def jump_volume(prev, gen, jump, nonneg):
    """The local loop's Aitken jump of the volume (``extrapolate_volume``) on the slab."""
    st = prev[0]
    st.advance(gen)
    extrapolate_volume(st.x, st.x_before, jump, nonneg)
    return st, {}


def sirt_run(prev, gen, n_iter):
    """``n_iter`` warm-started iterations of the local loop's SIRT on the slab."""
    st = prev[0]
    st.advance(gen)
    with numba_section():
        st.solver.run(st.b, st.x, n_iter)
    return st, {}


def tv_begin(prev, gen):
    """:meth:`TVSolver.begin` on the slab's data and iterate; returns its partial sums."""
    st = prev[0]
    st.advance(gen)
    with numba_section():
        return st, st.solver.begin(st.b, st.x)


def measure(prev, gen, nxl, wx, want_x):
    """Reproject the slab; partial x cross-power spectra and residual sums; cropped ``P``."""
    st = prev[0]
    st.advance(gen)
    with numba_section():
        P = st.solver.A(st.x)
        b = st.b
        pl = (b.shape[2] - nxl) // 2
        if pl:
            bc, Pc = b[:, :, pl:pl + nxl], np.ascontiguousarray(P[:, :, pl:pl + nxl])
        else:
            bc, Pc = b, P
        info = {"P": Pc}
        if want_x:
            info["cx"] = cross_power(bc, Pc, 2, wx)
        d = Pc.astype(np.float64) - bc
        info["res"] = (float(np.square(d).sum()), float(np.square(bc, dtype=np.float64).sum()))
    return st, info


def cross_y(b_chunk, P_pieces, wy):
    """Cross-power spectra along y of a tilt chunk (whole columns from all slabs)."""
    P = np.concatenate(P_pieces, axis=1) if len(P_pieces) > 1 else P_pieces[0]
    with numba_section():
        return cross_power(b_chunk, np.ascontiguousarray(P), 1, wy)


def x_rows(prev, a, b):
    """Copy of rows ``[a, b)`` (slab-local) of a state's iterate."""
    return np.array(prev[0].x[a:b])


def warm_rows(parts, i0, pos_old, pos_new, shape, zx_shift=None, embed=None):
    """Rows at ``pos_new`` of the loop's warm start (:func:`fastalign.align.levels.warm_start`)
    from the old rows ``i0 ...`` given in ``parts``."""
    src = np.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]
    return warm_start(src, pos_old, pos_new, shape, zx_shift=zx_shift, i0=i0, embed=embed)


# ----------------------------------------------------------------------------- slab specimens
def edge_ratios_of(block):
    """:func:`fastalign.align.specimen.edge_ratios` of a tilt chunk."""
    return edge_ratios(block)


def slab_start(chunks, angles, axes):
    """:func:`fastalign.align.slab.slab_start_shifts` of the whole stack (the tilt chunks,
    concatenated on this worker: pairs of neighbouring tilts need whole images)."""
    data = np.concatenate(chunks, axis=0) if len(chunks) > 1 else chunks[0]
    with numba_section():
        return slab_start_shifts(data, angles, axes)


def find_orientation_of(chunks, angles, specimen):
    """:func:`fastalign.align.orient.find_orientation` of the whole stack (the tilt chunks
    concatenated on this worker, as :func:`slab_start`: the search compares whole images)."""
    from ..align.orient import find_orientation
    data = np.concatenate(chunks, axis=0) if len(chunks) > 1 else chunks[0]
    with numba_section():
        return find_orientation(data, angles, specimen=specimen)


def turn_chunk(raw, record):
    """A tilt chunk turned as :func:`fastalign.align.orient.turn_like` turns a stack (quarter
    turns, then one resampling by ``record["resampled_deg"]``; per image)."""
    from ..align.orient import turn_like
    with numba_section():
        return np.ascontiguousarray(turn_like(raw, record), dtype=np.float32)


def shift_bin_chunk(raw, shifts, pad, f):
    """A tilt chunk aligned (:func:`shift_chunk`) and then binned ``f x f``."""
    with numba_section():
        return bin_stack(fourier_shift(raw, shifts, pad=pad), f)


def probe_rows(pieces, angles, depth):
    """The depth probe's rows of one slab (:func:`fastalign.align.executor.probe_volume`)."""
    b = np.concatenate(pieces, axis=0) if len(pieces) > 1 else pieces[0]
    with numba_section():
        return probe_volume(np.ascontiguousarray(b), angles, depth)


def probe_power(volume, acc):
    """:func:`fastalign.align.specimen.depth_power` of a slab's probe rows, continuing the
    previous slabs' sum ``acc`` (None for the first slab)."""
    return depth_power(volume, acc=acc)


def slab_align_state(angles, shape, center_offset, slab, f, nonneg, pad):
    """A slab-iteration state: the local slab loop's solver
    (:func:`fastalign.align.executor.slab_solver`), iterate zero."""
    with numba_section():
        A = region_projector(angles, shape, center_offset, pad, "sirt")
        return SlabState(slab_solver(A, slab, f, nonneg),
                         np.zeros(A.domain_shape, np.float32)), {}


def slab_run(prev, gen, n_iter):
    """``n_iter`` SIRT iterations from zero (the slab loop's cold start)."""
    st = prev[0]
    st.advance(gen)
    with numba_section():
        st.x.fill(0.0)
        st.solver.run(st.b, st.x, n_iter, Ax=st.solver.zero_reprojection())
    return st, {}


def measure_slab(prev, gen, nxl, wxs, want_x):
    """The slab's part of :func:`fastalign.align.executor.measure_windowed`: partial x
    spectra (:func:`~fastalign.align.executor.windowed_x`) and residual sums over its rows,
    and its cropped reprojection (for the y spectra per tilt chunk)."""
    st = prev[0]
    st.advance(gen)
    wy, wx = st.windows
    P = st.solver.reprojection
    pl = (P.shape[2] - nxl) // 2
    bc, Pc = (st.b[:, :, pl:pl + nxl], P[:, :, pl:pl + nxl]) if pl else (st.b, P)
    info = {"P": np.ascontiguousarray(Pc)}
    with numba_section():
        if want_x:
            info["cx"] = windowed_x(bc, Pc, wy, wxs)
        info["res"] = windowed_residual(bc, Pc, wy, wx)
    return st, info


def windowed_y_chunk(b_chunk, P_pieces, wys, wx):
    """:func:`fastalign.align.executor.windowed_y` of a tilt chunk (whole columns)."""
    P = np.concatenate(P_pieces, axis=1) if len(P_pieces) > 1 else P_pieces[0]
    with numba_section():
        return windowed_y(b_chunk, np.ascontiguousarray(P), wys, wx)
