"""MRC reading and writing (``fastalign.io``) of a ``(90, N, N)`` float32 tilt series.

``write_mrc`` is atomic (staging file + rename), so its time includes the ``fsync``-free
write of the whole block and the rename; ``read_tilt_series`` includes header inspection,
the extended-header angle lookup and the copy out of the read-only memory map.  Files live in
a temporary directory created in ``setup`` and removed in ``teardown``; the page cache is
warm (the file was just written), so reading measures the copy, not the disk.
"""
import os
import shutil
import tempfile

import numpy as np

from fastalign.io import read_tilt_series, write_mrc

from ._util import reset_peak_rss


class MRC:
    params = ([256, 512],)
    param_names = ["N"]
    number = 1
    repeat = (3, 10, 20.0)
    rounds = 1
    warmup_time = 0.0
    min_run_count = 1
    timeout = 120.0

    def setup(self, N):
        self.dir = tempfile.mkdtemp(prefix="fastalign-bench-")
        self.data = np.random.default_rng(3).random((90, N, N), dtype=np.float32)
        self.angles = np.arange(-89.0, 90.0, 2.0)
        self.src = os.path.join(self.dir, "series.mrc")
        write_mrc(self.src, self.data)
        with open(os.path.join(self.dir, "series.rawtlt"), "w") as f:
            f.write("\n".join(f"{a:g}" for a in self.angles) + "\n")
        self.dst = os.path.join(self.dir, "out.mrc")
        read_tilt_series(self.src)
        reset_peak_rss()

    def teardown(self, N):
        shutil.rmtree(self.dir, ignore_errors=True)

    def time_write(self, N):
        write_mrc(self.dst, self.data, overwrite=True)

    def peakmem_write(self, N):
        write_mrc(self.dst, self.data, overwrite=True)

    def time_read(self, N):
        read_tilt_series(self.src)

    def peakmem_read(self, N):
        read_tilt_series(self.src)
