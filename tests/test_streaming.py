"""The final reconstruction by row blocks and the CLI's streamed outputs
(:meth:`LocalExecutor.finish`, :func:`fastalign.align.executor.volume_sink`,
:class:`fastalign.cli.outputs.StreamedMRC`): the same bytes as the whole volume, for any
block size and thread count, and nothing left behind by an interrupted run."""
import os
import sys

import mrcfile
import numba
import numpy as np
import pytest

import fastalign
from fastalign import io
from fastalign.align import executor
from fastalign.cli import outputs

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "bench"))
from memory_model import blob_series  # noqa: E402
from test_cli import run_here, stray_files  # noqa: E402

#: a short run: two levels, two outer iterations, the identity intensity model
FAST = dict(max_iter=2, tol=0.5, levels=(2, 1), contrast="dark-field", background="none")
FAST_ARGS = ["--max-iter", "2", "--tol", "0.5", "--levels", "2,1", "--contrast",
             "dark-field", "--background", "none"]


@pytest.fixture(scope="module")
def series():
    # 80 rows: more than the loop's row budget (64), so the final volume starts from FBP
    return blob_series(15, 80, 48, seed=3)


@pytest.fixture(scope="module")
def whole(series):
    """The in-memory result with the volume in one block."""
    return _align(*series, 1 << 40, numba.get_num_threads())


def _align(data, angles, block_bytes, threads, **kw):
    old_bytes, old_threads = executor.FINAL_BLOCK_BYTES, numba.get_num_threads()
    executor.FINAL_BLOCK_BYTES = block_bytes
    numba.set_num_threads(threads)
    try:
        return fastalign.align(data, angles, **dict(FAST, **kw))
    finally:
        executor.FINAL_BLOCK_BYTES = old_bytes
        numba.set_num_threads(old_threads)


@pytest.mark.parametrize("warm", [False, True], ids=["fbp-start", "warm-start-pad"])
def test_row_blocks_give_the_bytes_of_the_whole(series, whole, warm):
    data, angles = series
    # FBP start (the loop saw 64 of 80 rows), or the loop's volume (every row) in a
    # region padded by 6 columns per side
    kw = dict(max_rows=None, pad_x=6) if warm else {}
    if warm:
        whole = _align(data, angles, 1 << 40, numba.get_num_threads(), **kw)
    assert executor.final_row_blocks(80, 48, 60, 15, 1 << 40) == [(0, 80)]
    # row blocks of 16 rows (the minimum: the projector's LANES), 5 blocks, on one thread
    assert len(executor.final_row_blocks(80, 48, 60, 15, 1)) == 5
    blocks = _align(data, angles, 1, 1, **kw)
    assert blocks.volume.shape == whole.volume.shape == (80, 48, 48)
    assert blocks.volume.tobytes() == whole.volume.tobytes()
    assert blocks.aligned.tobytes() == whole.aligned.tobytes()
    np.testing.assert_array_equal(blocks.shifts, whole.shifts)


class _ListSink:
    """A volume sink keeping the blocks (order and sizes checked)."""

    def __init__(self):
        self.blocks, self.shape = [], None

    def begin(self, shape):
        self.shape = shape

    def write(self, r0, block):
        assert r0 == sum(len(b) for b in self.blocks)
        self.blocks.append(np.array(block))

    def volume(self):
        return np.concatenate(self.blocks)


def test_volume_sink_receives_the_blocks(series, whole):
    data, angles = series
    sink = _ListSink()
    old = executor.FINAL_BLOCK_BYTES
    executor.FINAL_BLOCK_BYTES = 1
    try:
        with executor.volume_sink(sink):
            res = fastalign.align(data, angles, **FAST)
    finally:
        executor.FINAL_BLOCK_BYTES = old
    assert sink.shape == (80, 48, 48) and [len(b) for b in sink.blocks] == [16] * 5
    assert res.volume.tobytes() == whole.volume.tobytes()


def test_streamed_mrc_equals_write_mrc(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.normal(3.0, 2.0, (37, 11, 13)).astype(np.float32)
    w = outputs.StreamedMRC(str(tmp_path / "s.rec"), voxel_size_A=2.5)
    w.write_array(a, sections=5)
    io.write_volume(tmp_path / "r.rec", a, voxel_size_A=2.5)
    with mrcfile.open(tmp_path / "s.rec") as s, mrcfile.open(tmp_path / "r.rec") as r:
        assert s.data.tobytes() == r.data.tobytes() and s.is_volume()
        for key in ("nx", "ny", "nz", "mode", "ispg", "cella", "nlabl", "label"):
            assert s.header[key].tobytes() == r.header[key].tobytes(), key
        assert (s.header.dmin, s.header.dmax) == (r.header.dmin, r.header.dmax)
        np.testing.assert_allclose([s.header.dmean, s.header.rms],
                                   [a.mean(dtype=np.float64), a.std(dtype=np.float64)],
                                   rtol=1e-6)
    # blocks out of order or an incomplete file are refused
    w = outputs.StreamedMRC(str(tmp_path / "t.rec"))
    w.begin(a.shape)
    with pytest.raises(ValueError, match="does not continue"):
        w.write(5, a[5:10])
    w.write(0, a[:5])
    with pytest.raises(RuntimeError, match="only sections 0:5 of 37"):
        w.close()


def _write_series(directory, data, angles):
    directory.mkdir()
    with mrcfile.new(directory / "ts.mrc") as m:
        m.set_data(data)
        m.voxel_size = 1.5
    np.savetxt(directory / "ts.rawtlt", angles)
    return directory / "ts.mrc"


def test_cli_streamed_volume_equals_the_api_volume(series, whole, tmp_path, capsys,
                                                  monkeypatch):
    data, angles = series
    path = _write_series(tmp_path / "d", data, angles)
    monkeypatch.setattr(executor, "FINAL_BLOCK_BYTES", 1)    # 5 blocks of 16 rows
    proc = run_here(capsys, "align", path, "-q", *FAST_ARGS)
    assert proc.returncode == 0, proc.stderr
    ref = whole                                         # the API's in-memory volume
    out = tmp_path / "d" / "ts_fastalign"
    io.write_volume(tmp_path / "ref.rec", ref.volume, voxel_size_A=1.5)
    with mrcfile.open(out / "ts.rec") as s, mrcfile.open(tmp_path / "ref.rec") as r:
        assert s.data.tobytes() == r.data.tobytes()
        assert s.header.label.tobytes() == r.header.label.tobytes()
        assert float(s.voxel_size.x) == pytest.approx(1.5)
        np.testing.assert_allclose([s.header.dmean, s.header.rms],
                                   [r.header.dmean, r.header.rms], rtol=1e-5)
    with mrcfile.open(out / "ts.ali") as s:
        assert s.data.tobytes() == ref.aligned.tobytes() and not s.is_volume()
    assert stray_files(tmp_path) == []


def test_interrupted_stream_leaves_nothing(series, tmp_path, capsys, monkeypatch):
    data, angles = series
    path = _write_series(tmp_path / "d", data, angles)
    monkeypatch.setattr(executor, "FINAL_BLOCK_BYTES", 1)
    write = outputs.StreamedMRC.write

    def interrupted(self, start, block):
        if start > 0:       # after the first block is on disk
            raise KeyboardInterrupt()
        return write(self, start, block)

    monkeypatch.setattr(outputs.StreamedMRC, "write", interrupted)
    proc = run_here(capsys, "align", path, "-q", *FAST_ARGS)
    assert proc.returncode == 130
    assert not (tmp_path / "d" / "ts_fastalign").exists()
    assert stray_files(tmp_path) == []
