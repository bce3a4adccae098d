"""Steady-state forward projection ``A(x, out=)`` and backprojection ``A.T(y, out=)``.

Parameters: detector/slice size ``N`` (volume ``(S, N, N)``, tilt series ``(A, S, N)``),
tilt scheme ``A`` (71: -70..70 step 2, 90: 0..178 step 2), number of slices ``S`` and Numba
threads.  ``setup`` compiles the kernels on a tiny input that takes the same dispatch path
(slices vs angles/rows depends on ``S`` and the thread count), allocates and touches the
inputs and outputs, then resets the peak-RSS counter, so that

* ``time_*`` measure one call on preallocated arrays (input validation included: it is part
  of the public call);
* ``peakmem_*`` measure the process peak RSS = what ``setup`` left resident (interpreter,
  Numba, inputs, outputs) + what the call itself allocates.  Compare them across commits and
  against the inputs + outputs, ``4 * (S*N*N + A*S*N)`` bytes.

Inputs are uniform random numbers in [0, 1): every sample of the tilt series is non-zero, so
the backprojector's zero-skipping never helps (worst case); forward cost does not depend on
the values.  Compile latency: see ``bench_jit.py``.
"""
import numpy as np

import fastalign

from ._util import angles_deg, reset_peak_rss, set_threads, touched

_PARAMS = ([256, 512], [71, 90], [1, 64], [1, 2])
_PARAM_NAMES = ["N", "A", "S", "threads"]


class _ProjectorCase:
    params = _PARAMS
    param_names = _PARAM_NAMES
    # One call is 1 ms .. 10 s; keep one call per sample, 2..5 samples, <= 20 s per set.
    number = 1
    repeat = (2, 5, 20.0)
    rounds = 1
    warmup_time = 0.0
    min_run_count = 1
    timeout = 240.0

    def _common_setup(self, N, A, S, threads):
        set_threads(threads)
        ang = angles_deg(A)
        self.op = fastalign.Projector(ang, shape=(S, N, N))
        rng = np.random.default_rng(20240601)
        # Compile on a tiny problem with the same dispatch path (depends on S vs threads).
        tiny = fastalign.Projector(ang, shape=(S, 8, 8))
        return ang, rng, tiny

    def _finish_setup(self):
        reset_peak_rss()


class Forward(_ProjectorCase):
    """``A(x, out=y)``: volume ``(S, N, N)`` -> tilt series ``(A, S, N)``."""

    def setup(self, N, A, S, threads):
        _, rng, tiny = self._common_setup(N, A, S, threads)
        tiny(touched(tiny.domain_shape, 1.0), out=touched(tiny.range_shape))
        self.x = rng.random(self.op.domain_shape, dtype=np.float32)
        self.y = touched(self.op.range_shape)
        self._finish_setup()

    def time_forward(self, N, A, S, threads):
        self.op(self.x, out=self.y)

    def peakmem_forward(self, N, A, S, threads):
        self.op(self.x, out=self.y)


class Back(_ProjectorCase):
    """``A.T(y, out=x)``: tilt series ``(A, S, N)`` -> volume ``(S, N, N)``."""

    def setup(self, N, A, S, threads):
        _, rng, tiny = self._common_setup(N, A, S, threads)
        tiny.T(touched(tiny.range_shape, 1.0), out=touched(tiny.domain_shape))
        self.y = rng.random(self.op.range_shape, dtype=np.float32)
        self.x = touched(self.op.domain_shape)
        self._finish_setup()

    def time_back(self, N, A, S, threads):
        self.op.T(self.y, out=self.x)

    def peakmem_back(self, N, A, S, threads):
        self.op.T(self.y, out=self.x)



class SlabRegion(_ProjectorCase):
    """One projection pair ``A(x)``, ``A.T(y)`` of a slab's loop region: a 28 px slab in an
    ``N`` px field at -60..60 step 2 (:func:`fastalign.align.specimen.slab_region`: the
    region spans every column an oblique ray through the field meets, 2.5x the field).
    ``detector="field"`` computes the field's ``N`` rays (``n_det``, what the loop uses);
    ``"padded"`` a detector as wide as the region (the zero-weight padding it replaced)."""

    params = ([128, 256], ["field", "padded"], [1, 2])
    param_names = ["N", "detector", "threads"]

    def setup(self, N, detector, threads):
        from fastalign.align.specimen import slab_region
        set_threads(threads)
        ang = np.arange(-60.0, 61.0, 2.0)
        pad, nz = slab_region(N, ang, 28.0)
        shape = (N, nz, N + 2 * pad)
        self.op = fastalign.Projector(ang, shape, n_det=N if detector == "field" else None)
        tiny = fastalign.Projector(ang, (N, 4, 8), n_det=4 if detector == "field" else None)
        tiny.T(tiny(touched(tiny.domain_shape, 1.0)))
        self.x = np.random.default_rng(3).random(self.op.domain_shape, dtype=np.float32)
        self.y = touched(self.op.range_shape)
        reset_peak_rss()

    def time_pair(self, N, detector, threads):
        self.op(self.x, out=self.y)
        self.op.T(self.y, out=self.x)
