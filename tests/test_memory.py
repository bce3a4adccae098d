"""The peak-memory model (:mod:`fastalign.memory`), ``--max-memory``, and the footprint of the
final reconstruction (:meth:`LocalExecutor.finish`'s block-wise warm start)."""
import os
import sys

import numpy as np
import pytest

from fastalign.align import executor
from fastalign.memory import (BASELINE_BYTES, BLOCK_STACKS, BLOCK_VOLUMES, LOOP_STACKS,
                              LOOP_VOLUMES, estimate_align_peak,
                              estimate_recon_peak, final_block_rows)

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from cli_stub import assert_user_error  # noqa: E402
from test_cli import run_here  # noqa: E402

MIB = 2 ** 20


def test_model_terms():
    n, ny, nx = 90, 512, 512
    D, V = 4 * n * ny * nx, 4 * ny * nx * nx
    # the final SIRT by row blocks of 16 MiB of volume (16 rows of 512 x 512)
    rows = final_block_rows(ny, nx, nx, n)
    assert rows == 16 and executor.final_row_blocks(ny, nx, nx, n)[0] == (0, rows)
    assert final_block_rows(100, 64, 64, 90) == 100               # a small volume: one block
    blocks = BLOCK_VOLUMES * 4 * rows * nx * nx + BLOCK_STACKS * 4 * n * rows * nx
    est = estimate_align_peak((n, ny, nx))
    # held in memory (the API): input, aligned stack, the volume and a row block's arrays
    assert est.phase == "final"
    assert est.increment == 2 * D + V + blocks == sum(est.terms.values())
    assert est.total == est.increment + BASELINE_BYTES
    assert est.largest == ("volume", V)
    # streamed into the file (the CLI): no volume; the loop's level stacks and volumes (2x
    # binned) dominate, unless the finest level is 4x binned
    streamed = estimate_align_peak((n, ny, nx), streamed=True)
    assert streamed.phase == "loop"
    assert streamed.increment == D + LOOP_STACKS * D // 4 + LOOP_VOLUMES * 4 * 64 * 256 * 256
    streamed = estimate_align_peak((n, ny, nx), streamed=True, finest_bin=4)
    assert streamed.phase == "final" and streamed.increment == 2 * D + blocks
    assert streamed.largest == (f"row block volumes ({BLOCK_VOLUMES} x 16 rows)",
                                BLOCK_VOLUMES * 4 * rows * nx * nx)
    # the intensity model's copy, TV's volumes, a padded region, a thinner volume
    assert estimate_align_peak((n, ny, nx), intensity=True).increment == 3 * D + V + blocks
    assert estimate_align_peak((n, ny, nx), recon="tv").increment == 2 * D + 3 * D + 6 * V
    # (SIRT's stacks keep the field's width: its detector is not padded)
    pad = estimate_align_peak((n, ny, nx), pad_x=64, streamed=True, finest_bin=4)
    assert pad.increment == (2 * D + BLOCK_VOLUMES * 4 * 16 * nx * 640
                             + BLOCK_STACKS * 4 * n * 16 * nx)
    # a thin volume of many tilts: the outputs or the final stacks can dominate, never < input
    wide = estimate_align_peak((400, 64, 64), nz=8)
    assert wide.increment >= 4 * 4 * 400 * 64 * 64 / 2
    assert estimate_recon_peak((n, ny, nx), method="tv").increment == D + 6 * V + 3 * D
    with pytest.raises(ValueError, match="recon must be"):
        estimate_align_peak((n, ny, nx), recon="fbp")


def test_max_memory_refuses_naming_the_largest_term(tmp_path, capsys):
    import mrcfile
    d = tmp_path / "data"
    d.mkdir()
    with mrcfile.new(d / "ts.mrc") as m:
        m.set_data(np.zeros((3, 160, 96), np.float32))
    np.savetxt(d / "ts.rawtlt", np.linspace(-60, 60, 3))
    est = estimate_align_peak((3, 160, 96), intensity=True, streamed=True)
    limit = str(est.total - 1)
    proc = run_here(capsys, "align", d / "ts.mrc", "--max-memory", limit)
    assert_user_error(proc, f"exceeds --max-memory {limit}", "estimated peak memory",
                      f"largest term: row block volumes ({BLOCK_VOLUMES} x 160 rows)")
    assert not (d / "ts_fastalign").exists()     # refused before anything was written
    # TV: six volumes
    tv = estimate_align_peak((3, 160, 96), intensity=True, streamed=True, recon="tv")
    proc = run_here(capsys, "align", d / "ts.mrc", "--recon", "tv", "--max-memory",
                    str(tv.total - 1))
    assert_user_error(proc, "largest term: volumes (TV: 6)")
    est = estimate_recon_peak((3, 160, 96))
    proc = run_here(capsys, "recon", d / "ts.mrc", "--max-memory", str(est.total - 1))
    assert_user_error(proc, "exceeds --max-memory")


#: sizes where the data dominate the constant overheads (the final phase: ~300-500 MiB) and
#: a short loop (finest level 2x binned, 2 iterations): the peak is the final reconstruction
MEASURED_SHAPES = [(31, 320, 320), (31, 384, 384)]
MEASURED_ARGS = ["--max-iter", "2", "--levels", "4,2", "--contrast", "dark-field",
                 "--background", "none"]


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc")
def test_estimate_within_10_percent_of_measured_peak():
    # `fastalign align` (the CLI's main) in a fresh interpreter, after one warm-up run that
    # compiles the kernels; the measured number is the peak RSS increment above that idle,
    # compiled process, compared with the model's increment (its baseline excluded).  Both
    # sizes in one interpreter (bench/memory_model.py measures each in its own).
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "bench"))
    import memory_model

    records = memory_model.measure(MEASURED_SHAPES, MEASURED_ARGS, one_child=True)
    assert [r["shape"] for r in records] == [list(s) for s in MEASURED_SHAPES]
    for rec in records:
        # the CLI streams the final volume into the .rec
        est = estimate_align_peak(rec["shape"], finest_bin=2, streamed=True)
        assert rec["estimate"] == est.total          # the CLI used this model
        measured = rec["increment"]
        assert abs(est.increment - measured) <= 0.10 * measured, (rec, est.summary())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_mmap_threshold_is_pinned():
    # the command line pins glibc's mmap threshold: the measured peaks above depend on it
    from fastalign.memory import pin_mmap_threshold
    assert pin_mmap_threshold() is True
