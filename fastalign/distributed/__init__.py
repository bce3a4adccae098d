"""Dask-distributed twins of :func:`fastalign.sirt`, :func:`fastalign.tv` and
:func:`fastalign.align` (extra ``dask``: ``pip install 'fastalign[dask]'``).

Every function takes a connected :class:`dask.distributed.Client` -- the library never starts
a cluster -- and a tilt series given as a path (Zarr, HDF5 ``file.h5:/dataset``, MRC
memory-mapped, ``.npy``) that the workers read slab by slab themselves, or a dask array.
Volumes are written slab-wise to Zarr or MRC under a temporary name and renamed on success.
Results equal the local functions' to float32 round-off.

Threads: each worker runs its Numba kernels (and FFTs) with as many threads as the worker has
(``nthreads``), one task at a time (a process-wide lock), so a worker never oversubscribes its
cores.  Recommended: one worker process per node (or per socket) with ``nthreads`` = its
cores, e.g. ``LocalCluster(n_workers=1, threads_per_worker=os.cpu_count())`` or
``dask worker ... --nworkers 1 --nthreads 32``; with several workers per node, give each
``cores / workers`` threads.  Never set more threads than cores in total.
"""
from .align import align
from .recon import sirt, tv

__all__ = ["sirt", "tv", "align"]
