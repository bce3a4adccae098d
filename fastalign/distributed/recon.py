"""Distributed SIRT and TV: slabs of slices on Dask workers, the volume written slab-wise.

SIRT and the per-slice part of TV treat every slice ``y`` independently, so each slab of rows
runs the very solver of the local path (:class:`fastalign.SIRTSolver`,
:class:`fastalign.TVSolver`'s kernels) on its own rows.  TV's monotone FISTA accepts or rejects
a step on the objective of the *whole* volume; the workers therefore return per-slab partial
sums of ``||A z - b||^2`` and ``TV(z)`` each iteration, the client adds them in slab order and
sends the decision back with the next step (one small round trip per iteration).  The step
``1/L`` comes from one power iteration on the client.  Results equal the local
:func:`fastalign.sirt` / :func:`fastalign.tv` to float32 round-off.
"""
import numpy as np

from .._validate import as_finite_float, as_positive_int, check_angle_units
from ..recon.tv import L_MARGIN, MFISTA
from ..operator import Projector
from ..io.slabs import maybe_writer
from . import _slabs
from ._common import Source, client_workers, plan, run_scope, slab_rows_for

__all__ = ["sirt", "tv"]


def _setup(client, source, angles_deg, nz, slab_rows, copies):
    n_workers, mem = client_workers(client)
    src = Source(source, angles_deg)
    check_angle_units(src.angles_deg)  # as the CLI; each slab's solver refuses NaN/Inf
    n, ny, nx = src.shape
    nz = nx if nz is None else as_positive_int(nz, "nz")
    per_row = 4 * (copies[0] * n * nx + copies[1] * nz * nx)
    rows = slab_rows_for(ny, n_workers, per_row, mem, slab_rows)
    return src, nz, plan(ny, rows), rows


def _assemble(client, futures, writer):
    results = client.gather(futures)
    if writer is None:
        return np.concatenate(results, axis=0)
    writer.commit(results)
    return writer.open()


def sirt(client, source, angles_deg=None, *, out=None, n_iter=50, nz=None, nonneg=True,
         mask=None, center_offset=0.0, slab_rows=None, overwrite=False):
    """SIRT reconstruction on a Dask cluster, slab by slab (equals :func:`fastalign.sirt`).

    Parameters
    ----------
    client : dask.distributed.Client
        Connected to an existing cluster (the library never creates one).
    source : str, os.PathLike or dask.array.Array
        Tilt series ``(n_tilts, ny, nx)``: a Zarr store (``store.zarr[:/array]``), HDF5
        dataset (``file.h5:/dataset``), MRC file (memory-mapped) or ``.npy`` -- read by the
        workers themselves, slab by slab -- or a dask array.
    angles_deg : array_like or path, optional
        Tilt angles (degrees), or a file with them; found next to a file source if omitted.
    out : str or os.PathLike, optional
        Output volume: ``*.zarr`` (chunked by slab) or an MRC name (``.rec``, ``.mrc``).
        Written slab-wise by the workers to a hidden temporary name and renamed when every
        slab is written; a failed run leaves no output.  If None, the volume is gathered into
        the client and returned (small volumes only).
    n_iter, nz, nonneg, mask, center_offset
        As :func:`fastalign.sirt` (``mask``: None, True/"circle", or a boolean ``(nz, nx)``
        or ``(ny, nz, nx)`` array).
    slab_rows : int, optional
        Rows ``y`` per task (default: about two slabs per worker, fewer if a slab would use
        more than a quarter of a worker's memory limit).
    overwrite : bool
        Replace an existing ``out``.

    Returns
    -------
    ndarray or zarr.Array or numpy.memmap
        The volume ``(ny, nz, nx)``: in memory if ``out`` is None, else the written file
        opened read-only.
    """
    n_iter = as_positive_int(n_iter, "n_iter", minimum=0)
    center_offset = as_finite_float(center_offset, "center_offset")
    src, nz, slabs, rows = _setup(client, source, angles_deg, nz, slab_rows, (3, 2))
    n, ny, nx = src.shape
    m = _mask_array(mask, (ny, nz, nx), center_offset)
    with maybe_writer(out, (ny, nz, nx), rows, overwrite=overwrite, inputs=src.files,
                      voxel_size_A=src.pixel_size_A) as writer, run_scope(client) as client:
        futures = []
        for r0, r1 in slabs:
            block = src.block(client, 0, n, r0, r1)
            mk = None if m is None else (m[0] if m.shape[0] == 1 else m[r0:r1])
            futures.append(client.submit(_slabs.sirt_slab, block, src.angles_deg, nz,
                                         center_offset, n_iter, nonneg, mk, writer, r0,
                                         pure=False))
        return _assemble(client, futures, writer)


def _mask_array(mask, shape, center_offset):
    from ..recon._common import prepare_mask
    m = prepare_mask(mask, shape, center_offset)
    return None if m is None else m.astype(bool)


def tv(client, source, angles_deg=None, *, lam, out=None, n_iter=50, nz=None, nonneg=True,
       tv="2d", n_inner=10, center_offset=0.0, slab_rows=None, overwrite=False):
    """TV-regularised reconstruction on a Dask cluster (equals :func:`fastalign.tv`).

    Monotone FISTA with a Chambolle prox as :func:`fastalign.tv`; each slab keeps its part of
    the iterate on a worker, and the accept/reject test of every iteration uses the objective
    of the whole volume (partial sums added on the client in slab order).

    Parameters
    ----------
    client, source, angles_deg, out, nz, center_offset, slab_rows, overwrite
        As :func:`sirt`.
    lam, n_iter, nonneg, n_inner
        As :func:`fastalign.tv`.
    tv : {"2d"}
        Per-slice TV.  3-D TV couples neighbouring slices and is not available distributed.

    Returns
    -------
    ndarray or zarr.Array or numpy.memmap
        As :func:`sirt`.
    """
    lam = as_finite_float(lam, "lam", minimum=0.0)
    if tv != "2d":
        raise ValueError(f"distributed TV supports tv='2d' (per slice) only, got {tv!r}")
    n_iter = as_positive_int(n_iter, "n_iter", minimum=0)
    n_inner = as_positive_int(n_inner, "n_inner")
    center_offset = as_finite_float(center_offset, "center_offset")
    src, nz, slabs, rows = _setup(client, source, angles_deg, nz, slab_rows, (4, 8))
    n, ny, nx = src.shape
    L = L_MARGIN * Projector(src.angles_deg, (1, nz, nx), center_offset).norm() ** 2
    with maybe_writer(out, (ny, nz, nx), rows, overwrite=overwrite, inputs=src.files,
                      voxel_size_A=src.pixel_size_A) as writer, run_scope(client) as client:
        states = []
        for r0, r1 in slabs:
            block = src.block(client, 0, n, r0, r1)
            states.append(client.submit(_slabs.tv_init, block, src.angles_deg, nz,
                                        center_offset, lam, nonneg, n_inner, L, pure=False))
        states, _ = run_tv(client, states, n_iter, lam, gen=0)
        futures = [client.submit(_slabs.finish_volume, s, writer, r0, None, pure=False)
                   for s, (r0, _r1) in zip(states, slabs)]
        return _assemble(client, futures, writer)


def run_tv(client, states, n_iter, lam, gen):
    """Drive ``n_iter`` synchronised MFISTA iterations over begun TV slab states.

    ``states`` are futures of ``(state, begin-info)``; returns futures of ended states and
    the next generation number.  The decisions are :class:`fastalign.recon.tv.MFISTA`'s (as
    in :meth:`fastalign.TVSolver.run`) on the partial sums added in slab order; each decision
    travels with the next step's tasks.
    """
    ctl = MFISTA(lam)
    ctl.start(*_sums(client, states))
    decision = None
    for _ in range(n_iter):
        states = [client.submit(_slabs.tv_step, s, gen, decision, pure=False) for s in states]
        gen += 1
        decision = ctl.step(*_sums(client, states))
    states = [client.submit(_slabs.tv_end, s, gen, decision, pure=False) for s in states]
    return states, gen + 1


def _sums(client, states):
    """``(sum of ||A v - b||^2, sum of TV(v))`` over the slabs, in slab order."""
    info = client.gather([client.submit(_slabs.pick_all, s, pure=False) for s in states])
    return sum(i["data"] for i in info), sum(i["tv"] for i in info)
