"""Steady-state alignment pieces: shift estimation, Fourier resampling, one alignment
iteration and the full alignment of a small series.

* ``ShiftEstimation``: ``cross_power`` (rFFT along x or y + the Numba cross-power kernel of
  ``fastalign/kernels/shift.py``) and ``estimate_shift`` (phase unwrapping + weighted slope,
  or Newton steps) on a ``(A, S, N)`` measured / reprojected pair, as in one outer iteration.
* ``Resample``: ``fastalign.fourier_shift(stack, -shifts)``, the once-per-iteration resampling
  of the raw data.
* ``RotateShift``: ``fastalign.align.axis.rotate_shift``, the same resampling when the tilt
  axis is rotated (cubic B-spline per image on a thread pool).
* ``AlignIteration``: ``fastalign.align(..., levels=[1], max_iter=1, final_iter=0)``: one
  outer iteration (resample, warm SIRT/TV inner iterations, reproject, estimate x and y) plus
  the fixed per-call work (validation, gauge, final resampling of the aligned stack).
* ``FullAlignment``: ``fastalign.align`` of a small particle series (71 tilts, -70..70, 32 x
  64 px, dx, dy ~ U[-10, 10]) with default options, coarse-to-fine.
* ``SlabAlignment``: ``fastalign.align`` with default options of a 61 x 128 x 128 slab (the
  slab path end to end, and its accuracy).

``setup`` runs the benchmarked call once (compiling every kernel on the same dispatch path),
then resets the peak-RSS counter: ``peakmem_*`` is what ``setup`` left resident plus what the
call allocates.  First-call (compile) latency of ``align``: ``bench_jit.py``.
"""
import numba
import numpy as np

import fastalign
from fastalign.align.axis import rotate_shift
from fastalign.align.shift import cross_power, estimate_shift, tukey

from ._util import angles_deg, reset_peak_rss, set_threads


def particle_series(A=71, S=32, N=64, seed=0, noise=0.01):
    """A small particle tilt series ``(A, S, N)`` with known shifts, for the benchmarks.

    Returns ``(data, angles_deg, true_shifts)``; shifts ``dx, dy ~ U[-10, 10]`` (DESIGN.md
    convention), Gaussian noise of ``noise`` times the data's standard deviation.
    """
    from fastalign.phantoms import particles_3d
    from fastalign.simulate import fourier_shift
    ang = angles_deg(A)
    vol = np.zeros((S, N, N), np.float32)
    lo = S // 4
    vol[lo:S - lo] = particles_3d((S - 2 * lo, N, N), n_particles=8, seed=seed)
    ideal = fastalign.project(vol, ang)
    rng = np.random.default_rng(seed + 1)
    true = rng.uniform(-10, 10, (A, 2))
    data = np.stack([fourier_shift(ideal[i], true[i, 0], true[i, 1]) for i in range(A)])
    data = data.astype(np.float32)
    data += rng.normal(0, noise * data.std(), data.shape).astype(np.float32)
    return data, ang, true


class _AlignCase:
    number = 1
    repeat = (2, 5, 20.0)
    rounds = 1
    warmup_time = 0.0
    min_run_count = 1
    timeout = 300.0


class ShiftEstimation(_AlignCase):
    """``cross_power`` + ``estimate_shift`` along x (axis 2) and y (axis 1), 90 tilts."""

    params = ([128, 256], ["phase", "gradient"], [1, 2])
    param_names = ["N", "estimator", "threads"]

    def setup(self, N, estimator, threads):
        set_threads(threads)
        S = 64
        rng = np.random.default_rng(1)
        self.b = rng.random((90, S, N), dtype=np.float32)
        self.p = (self.b + 0.05 * rng.random((90, S, N), dtype=np.float32)).astype(np.float32)
        self.wx, self.wy = tukey(N, 0.1), tukey(S, 0.1)
        self.estimator = estimator
        self._run()
        reset_peak_rss()

    def _run(self):
        C, pb, pp = cross_power(self.b, self.p, 2, self.wx)
        estimate_shift(C, pb, pp, self.b.shape[2], estimator=self.estimator)
        C, pb, pp = cross_power(self.b, self.p, 1, self.wy)
        estimate_shift(C, pb, pp, self.b.shape[1], estimator=self.estimator)

    def time_estimate_xy(self, N, estimator, threads):
        self._run()

    def peakmem_estimate_xy(self, N, estimator, threads):
        self._run()


class _StackResample(_AlignCase):
    """A ``(90, N, N)`` random stack and shifts; ``_call`` resamples it into ``out``."""

    params = ([128, 256], [1, 2])
    param_names = ["N", "threads"]

    def setup(self, N, threads):
        set_threads(threads)
        rng = np.random.default_rng(2)
        self.stack = rng.random((90, N, N), dtype=np.float32)
        self.shifts = rng.uniform(-10, 10, (90, 2))
        self.out = np.empty_like(self.stack)
        self._call()
        reset_peak_rss()


class Resample(_StackResample):
    """``fourier_shift(stack, -shifts)`` of a ``(90, N, N)`` stack (edge-padded FFTs)."""

    def _call(self):
        fastalign.fourier_shift(self.stack, -self.shifts, out=self.out)

    def time_fourier_shift(self, N, threads):
        self._call()

    def peakmem_fourier_shift(self, N, threads):
        self._call()


class RotateShift(_StackResample):
    """``axis.rotate_shift`` (rotation + shift, cubic B-spline, one image per thread) of a
    ``(90, N, N)`` stack: the resampling of every iteration when the tilt axis is rotated."""

    def _call(self):
        rotate_shift(self.stack, 3.0, self.shifts, out=self.out)

    def time_rotate_shift(self, N, threads):
        self._call()

    def peakmem_rotate_shift(self, N, threads):
        self._call()


class AlignIteration(_AlignCase):
    """One outer autofocus iteration on a ``(71, 32, N)`` particle series (x and y)."""

    params = ([64], ["sirt", "tv"], [1, 2])
    param_names = ["N", "recon", "threads"]

    def setup(self, N, recon, threads):
        set_threads(threads)
        self.data, self.ang, _ = particle_series(71, 32, N)
        self.kw = dict(recon=recon, axes="xy", levels=[1], max_iter=1, tol=0.0,
                       final_iter=0)
        fastalign.align(self.data, self.ang, **self.kw)
        reset_peak_rss()

    def time_one_iteration(self, N, recon, threads):
        fastalign.align(self.data, self.ang, **self.kw)

    def peakmem_one_iteration(self, N, recon, threads):
        fastalign.align(self.data, self.ang, **self.kw)


class FullAlignment(_AlignCase):
    """``fastalign.align`` (defaults, x and y) of a ``(71, 32, 64)`` particle series, all
    cores (thread scaling of the same code is covered by ``AlignIteration``)."""

    params = (["sirt", "tv"], [2])
    param_names = ["recon", "threads"]
    repeat = (1, 3, 60.0)

    def setup(self, recon, threads):
        set_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        self.data, self.ang, self.true = particle_series(71, 32, 64)
        self.recon = recon
        fastalign.align(self.data, self.ang, recon=recon, axes="xy", levels=[1], max_iter=1,
                        final_iter=1)
        reset_peak_rss()

    def time_align(self, recon, threads):
        fastalign.align(self.data, self.ang, recon=self.recon, axes="xy")

    def peakmem_align(self, recon, threads):
        fastalign.align(self.data, self.ang, recon=self.recon, axes="xy")

    def track_rms_error_x(self, recon, threads):
        """RMS x error (px, gauge removed): accuracy tracked alongside the time."""
        r = fastalign.align(self.data, self.ang, recon=self.recon, axes="xy")
        return fastalign.gauge_error(r.shifts, self.true, self.ang)[0]

    track_rms_error_x.unit = "px"


class SlabAlignment(_AlignCase):
    """``fastalign.align`` with default options of a slab 28 px thick, wider than the field at
    every tilt (:func:`fastalign.simulate.slab_experiment`: 61 tilts, -60..60, truncated in x
    and y, dx, dy ~ U[-10, 10], Poisson ~1000 counts/px): the whole slab path (detection,
    start, depth probe, Anderson loop, final volume).  ``N`` = 128 is issue 18's
    61 x 128 x 128 slab case."""

    params = ([128], [2])
    param_names = ["N", "threads"]
    repeat = (1, 3, 120.0)
    timeout = 600.0

    def setup(self, N, threads):
        from fastalign.simulate import slab_experiment
        set_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        self.exp = slab_experiment(N, 28.0 * N / 128, seed=0)
        # compile every kernel on the slab path (a small slab of the same kind, large enough
        # for a thickness measurement: a 32 px field spends seconds in the box fits)
        small = slab_experiment(48, 10.5, seed=0)
        fastalign.align(small.data, small.angles_deg, max_iter=1, coarse_iter=1)
        reset_peak_rss()

    def time_align(self, N, threads):
        fastalign.align(self.exp.data, self.exp.angles_deg)

    def track_rms_error(self, N, threads):
        """Larger of the x and y RMS errors (px, gauge removed)."""
        r = fastalign.align(self.exp.data, self.exp.angles_deg)
        return max(fastalign.gauge_error(r.shifts, self.exp.shifts, self.exp.angles_deg))

    track_rms_error.unit = "px"
