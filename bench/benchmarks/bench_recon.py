"""Steady-state reconstruction: one SIRT iteration, one TV (FISTA) iteration, FBP.

Parameters: slice size ``N`` (volume ``(S, N, N)``, tilt series ``(90, S, N)``, 0..178 step 2),
number of slices ``S`` and Numba threads.  ``setup`` builds the solver (weights, buffers,
``||A||`` estimate), runs it once on the real problem (which compiles every kernel on the same
dispatch path and moves the iterate away from zero), then resets the peak-RSS counter, so that

* ``time_*`` measure one warm-started call: ``SIRTSolver.run(b, x, 1)``,
  ``TVSolver.run(b, x, 1)`` (10 Chambolle iterations, 2-D TV) and ``fbp(b, angles)``;
* ``peakmem_*`` measure what ``setup`` left resident plus what the call allocates (nothing for
  the solvers' runs, the output volume and filtered tilt series for ``fbp``).

Peer comparison (ASTRA, scikit-image) at N=512: ``bench/peers_recon.py``.
"""
import numpy as np

import fastalign
from fastalign.recon import SIRTSolver, TVSolver, fbp

from ._util import angles_deg, reset_peak_rss, set_threads

_PARAMS = ([128, 256], [16], [1, 2])
_PARAM_NAMES = ["N", "S", "threads"]


def _problem(N, S, threads):
    set_threads(threads)
    ang = angles_deg(90)
    A = fastalign.Projector(ang, shape=(S, N, N))
    c = 0.5 * (N - 1)
    z, x = np.mgrid[0:N, 0:N]
    disc = ((x - c) ** 2 + (0.7 * (z - c)) ** 2 <= (0.35 * N) ** 2).astype(np.float32)
    vol = np.ascontiguousarray(np.repeat(disc[None], S, axis=0))
    b = A(vol)
    return ang, A, b


class _ReconCase:
    params = _PARAMS
    param_names = _PARAM_NAMES
    number = 1
    repeat = (3, 10, 20.0)
    rounds = 1
    warmup_time = 0.0
    min_run_count = 1
    timeout = 240.0


class SIRTIteration(_ReconCase):
    """``SIRTSolver.run(b, x, 1, Ax=solver.reprojection)``: one forward, one backprojection."""

    def setup(self, N, S, threads):
        _, A, self.b = _problem(N, S, threads)
        self.solver = SIRTSolver(A)
        self.x = np.zeros(A.domain_shape, np.float32)
        self.solver.run(self.b, self.x, 2)
        reset_peak_rss()

    def time_sirt_iteration(self, N, S, threads):
        self.solver.run(self.b, self.x, 1, Ax=self.solver.reprojection)

    def peakmem_sirt_iteration(self, N, S, threads):
        self.solver.run(self.b, self.x, 1, Ax=self.solver.reprojection)


class TVIteration(_ReconCase):
    """``TVSolver.run(b, x, 1, Ax=solver.reprojection)``: one monotone-FISTA iteration."""

    def setup(self, N, S, threads):
        _, A, self.b = _problem(N, S, threads)
        self.solver = TVSolver(A, lam=0.02 * float(self.b.mean()), n_inner=10)
        self.x = np.zeros(A.domain_shape, np.float32)
        self.solver.run(self.b, self.x, 2)
        reset_peak_rss()

    def time_tv_iteration(self, N, S, threads):
        self.solver.run(self.b, self.x, 1, Ax=self.solver.reprojection)

    def peakmem_tv_iteration(self, N, S, threads):
        self.solver.run(self.b, self.x, 1, Ax=self.solver.reprojection)


class FBP(_ReconCase):
    """``fbp(b, angles)`` (ramp filter): allocates the filtered data and the volume."""

    def setup(self, N, S, threads):
        self.ang, _, self.b = _problem(N, S, threads)
        fbp(self.b, self.ang)  # compile, plan the FFTs
        reset_peak_rss()

    def time_fbp(self, N, S, threads):
        fbp(self.b, self.ang)

    def peakmem_fbp(self, N, S, threads):
        fbp(self.b, self.ang)
