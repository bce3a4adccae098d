"""The peak-memory model (:mod:`fastalign.memory`), ``--max-memory``, and the footprint of the
final reconstruction (:meth:`LocalExecutor.finish`'s block-wise warm start)."""
import os
import sys

import numpy as np
import pytest

from fastalign.memory import BASELINE_BYTES, estimate_align_peak, estimate_recon_peak

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from cli_stub import assert_user_error  # noqa: E402
from test_cli import run_here  # noqa: E402

MIB = 2 ** 20


def test_model_terms():
    n, ny, nx = 90, 512, 512
    D, V = 4 * n * ny * nx, 4 * ny * nx * nx
    est = estimate_align_peak((n, ny, nx))
    # the final reconstruction dominates: input, aligned stack, 2 solver stacks, 2 volumes
    assert est.phase == "final"
    assert est.increment == 4 * D + 2 * V == sum(est.terms.values())
    assert est.total == est.increment + BASELINE_BYTES
    assert est.largest == ("volumes (volume + backprojection)", 2 * V)
    # the intensity model's copy, TV's volumes, a padded region, a thinner volume
    assert estimate_align_peak((n, ny, nx), intensity=True).increment == 5 * D + 2 * V
    assert estimate_align_peak((n, ny, nx), recon="tv").increment == 2 * D + 3 * D + 6 * V
    pad = estimate_align_peak((n, ny, nx), pad_x=64)
    Dp, Vp = D * 640 // 512, V * 640 // 512
    assert pad.increment == 2 * D + 3 * Dp + 2 * Vp
    thin = estimate_align_peak((n, ny, nx), nz=100)
    assert thin.increment == 4 * D + 2 * (4 * ny * 100 * nx)
    # a thin volume of many tilts: the outputs or the final stacks can dominate, never < input
    wide = estimate_align_peak((400, 64, 64), nz=8)
    assert wide.increment >= 4 * 4 * 400 * 64 * 64
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
    est = estimate_align_peak((3, 160, 96), intensity=True)
    limit = str(est.total - 1)
    proc = run_here(capsys, "align", d / "ts.mrc", "--max-memory", limit)
    assert_user_error(proc, f"exceeds --max-memory {limit}", "estimated peak memory",
                      "largest term: volumes (volume + backprojection)")
    assert not (d / "ts_fastalign").exists()     # refused before anything was written
    # TV: six volumes
    proc = run_here(capsys, "align", d / "ts.mrc", "--recon", "tv", "--max-memory", limit)
    assert_user_error(proc, "largest term: volumes (TV: 6)")
    est = estimate_recon_peak((3, 160, 96))
    proc = run_here(capsys, "recon", d / "ts.mrc", "--max-memory", str(est.total - 1))
    assert_user_error(proc, "exceeds --max-memory")
