"""ASTRA's 2-D CPU ``linear`` (Joseph) projector applied slice by slice, on a thread or a
process pool: the peer runners of the projector, recon and scaling suites."""
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from _harness import chunks
from benchmarks._util import touched

__all__ = ["astra_geometry", "AstraLinked", "AstraSlicer", "SlicePool", "AstraThreads",
           "AstraProcesses"]


def astra_geometry(angles_deg, nz, nx):
    """ASTRA 2-D geometries equivalent to fastalign's slice ``(nz, nx)`` and detector.

    ``create_vol_geom(rows, cols)``: ASTRA's image rows are our z (``iz``), its columns our x.
    ASTRA measures its world y *upwards* (row 0 on top, ``y = (nz-1)/2 - iz = -z``) and puts a
    point on detector coordinate ``u = x cos(phi) + y sin(phi)``; with ``phi = -theta`` this is
    ``x cos(theta) + z sin(theta)``, fastalign's convention.  Detector: ``nx`` bins of width 1
    centred on the rotation axis, i.e. bin centre ``(nx-1)/2`` (centre offset 0).  The match
    is verified numerically on every run (``rel. error`` lines).
    """
    import astra
    vol_geom = astra.create_vol_geom(nz, nx)
    proj_geom = astra.create_proj_geom("parallel", 1.0, nx, -np.deg2rad(angles_deg))
    return vol_geom, proj_geom


class AstraLinked:
    """One worker's ASTRA objects on one slice: a ``linear`` projector, a linked slice buffer
    ``vol`` ``(nz, nx)`` and a linked sinogram buffer ``sino`` ``(n_tilts, nx)``, and the
    algorithms created on them with :meth:`algorithm` (all freed by :meth:`close`)."""

    def __init__(self, angles_deg, nz, nx):
        import astra
        self.astra = astra
        vol_geom, proj_geom = astra_geometry(angles_deg, nz, nx)
        self.proj_id = astra.create_projector("linear", proj_geom, vol_geom)
        self.vol = touched((nz, nx))
        self.sino = touched((len(angles_deg), nx))
        self.vol_id = astra.data2d.link("-vol", vol_geom, self.vol)
        self.sino_id = astra.data2d.link("-sino", proj_geom, self.sino)
        self._alg_ids = []

    def algorithm(self, name):
        """Create the ASTRA algorithm ``name`` (``"FP"``, ``"BP"``, ``"SIRT"``, ``"FBP"``...)
        on the projector and the linked buffers; returns its id."""
        cfg = self.astra.astra_dict(name)
        cfg["ProjectorId"] = self.proj_id
        cfg["ProjectionDataId"] = self.sino_id
        cfg["VolumeDataId" if name == "FP" else "ReconstructionDataId"] = self.vol_id
        alg_id = self.astra.algorithm.create(cfg)
        self._alg_ids.append(alg_id)
        return alg_id

    def close(self):
        a = self.astra
        a.algorithm.delete(self._alg_ids)
        a.data2d.delete([self.vol_id, self.sino_id])
        a.projector.delete(self.proj_id)


class AstraSlicer(AstraLinked):
    """One worker's ASTRA objects: a linked slice buffer, a linked sinogram buffer, an FP and
    a BP algorithm.  ``forward``/``back`` process a contiguous range of slices: copy the
    slice (or its sinogram rows) in, ``astra.algorithm.run`` (which releases the GIL), copy
    the result out.  The copies are ~0.1 % of the work."""

    def __init__(self, angles_deg, nz, nx):
        super().__init__(angles_deg, nz, nx)
        self.fp_id = self.algorithm("FP")
        self.bp_id = self.algorithm("BP")

    def forward_one(self):
        self.astra.algorithm.run(self.fp_id)

    def forward(self, vol, out, start, stop):
        for s in range(start, stop):
            np.copyto(self.vol, vol[s])
            self.astra.algorithm.run(self.fp_id)  # FP overwrites the sinogram
            out[:, s, :] = self.sino

    def back(self, ts, out, start, stop):
        for s in range(start, stop):
            np.copyto(self.sino, ts[:, s, :])
            self.astra.algorithm.run(self.bp_id)  # BP overwrites the volume
            np.copyto(out[s], self.vol)


class SlicePool:
    """Slice-range workers (e.g. :class:`AstraLinked` subclasses) on a thread pool, one
    thread per worker (one worker: a plain loop in this thread)."""

    def __init__(self, workers):
        self.workers = workers
        n = len(workers)
        self.pool = ThreadPoolExecutor(n) if n > 1 else None

    def run(self, kind, n_slices, src, dst, *extra):
        """``worker.<kind>(src, dst, start, stop, *extra)`` on contiguous ranges covering
        ``range(n_slices)``, one per worker; waits for all."""
        ranges = chunks(n_slices, len(self.workers))
        if self.pool is None:
            for w, (a, b) in zip(self.workers, ranges):
                getattr(w, kind)(src, dst, a, b, *extra)
            return
        futs = [self.pool.submit(getattr(w, kind), src, dst, a, b, *extra)
                for w, (a, b) in zip(self.workers, ranges)]
        for f in futs:
            f.result()

    def close(self):
        if self.pool is not None:
            self.pool.shutdown()
        for w in self.workers:
            w.close()


class AstraThreads(SlicePool):
    """ASTRA slice by slice on ``n`` threads (``n = 1``: a plain loop in this thread)."""

    def __init__(self, angles_deg, nz, nx, n):
        super().__init__([AstraSlicer(angles_deg, nz, nx) for _ in range(n)])

    def forward(self, vol, out):
        self.run("forward", out.shape[1], vol, out)

    def back(self, ts, out):
        self.run("back", out.shape[0], ts, out)


# Process-pool variant (only used when ASTRA holds the GIL, or with --astra-pool process).
# Inputs and outputs live in shared memory; each worker process owns one AstraSlicer.
_PROC = {}


def _proc_init(angles_deg, nz, nx, specs):
    from multiprocessing import shared_memory
    _PROC["slicer"] = AstraSlicer(angles_deg, nz, nx)
    for name, (shm_name, shape) in specs.items():
        shm = shared_memory.SharedMemory(name=shm_name)
        _PROC[name + "_shm"] = shm
        _PROC[name] = np.ndarray(shape, np.float32, buffer=shm.buf)


def _proc_task(kind, start, stop):
    sl = _PROC["slicer"]
    if kind == "forward":
        sl.forward(_PROC["vol"], _PROC["ts"], start, stop)
    else:
        sl.back(_PROC["ts"], _PROC["vol_out"], start, stop)
    return os.getpid()


class AstraProcesses:
    """ASTRA slice by slice on ``n`` spawned worker processes sharing memory with this one.

    ``spawn``, not ``fork``: Numba's GNU-OpenMP layer aborts a forked child.  Timed calls
    include copying the input into / the output out of shared memory.
    """

    def __init__(self, angles_deg, nz, nx, n, S):
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing import shared_memory
        na = len(angles_deg)
        shapes = {"vol": (S, nz, nx), "ts": (na, S, nx), "vol_out": (S, nz, nx)}
        self._shm, self.arr, specs = [], {}, {}
        for name, shape in shapes.items():
            shm = shared_memory.SharedMemory(create=True, size=4 * int(np.prod(shape)))
            self._shm.append(shm)
            self.arr[name] = np.ndarray(shape, np.float32, buffer=shm.buf)
            self.arr[name].fill(0.0)
            specs[name] = (shm.name, shape)
        self.n, self.S = n, S
        self.pool = ProcessPoolExecutor(n, mp_context=mp.get_context("spawn"),
                                        initializer=_proc_init,
                                        initargs=(np.asarray(angles_deg), nz, nx, specs))
        list(self.pool.map(_proc_task, ["forward"] * n, [0] * n, [1] * n))  # start workers

    def _run(self, kind):
        ranges = chunks(self.S, self.n)
        futs = [self.pool.submit(_proc_task, kind, a, b) for a, b in ranges]
        for f in futs:
            f.result()

    def forward(self, vol, out):
        np.copyto(self.arr["vol"], vol)
        self._run("forward")
        np.copyto(out, self.arr["ts"])

    def back(self, ts, out):
        np.copyto(self.arr["ts"], ts)
        self._run("back")
        np.copyto(out, self.arr["vol_out"])

    def close(self):
        self.pool.shutdown()
        self.arr.clear()
        for shm in self._shm:
            shm.close()
            shm.unlink()
