"""AreTomo ``.aln`` files (issue 19): round trip, conventions pinned to AreTomo2's own IMOD
export and a published output, dark frames, bad input; ``fastalign align --initial-xf``."""
import os
import sys

import numpy as np
import pytest

import fastalign
from fastalign.io import (format_excludelist, read_alignment, read_aln, read_xf, write_aln,
                          write_aligned_stack, write_tlt, write_xf)

_COLUMNS = ("# SEC     ROT         GMAG       TX          TY      SMEAN     SFIT    SCALE     "
            "BASE     TILT\n")

# rows 7-10 of an AreTomo output quoted in scipion-em/scipion-em-aretomo (RawSize 512 512 61,
# dark frames at sections 0-6 and 58-60); SEC ROT GMAG TX TY
PUBLISHED = [(7, -10.6414, 1.0, 30.409, -7.146), (8, -10.6414, 1.0, 25.102, -4.066),
             (9, -10.6414, 1.0, 28.247, -7.649), (10, -10.6414, 1.0, 24.338, -5.868)]
DARK = [0, 1, 2, 3, 4, 5, 6, 58, 59, 60]


def _tilt(sec):
    return -55.0 + 2.0 * sec  # the DarkFrame lines' spacing: section 0 at -55, 60 at 65


def _published_file(path):
    """The published header and rows; sections 11-57 (not shown there) as ROT, 0 shift."""
    lines = ["# AreTomo Alignment / Priims bprmMn \n", "# RawSize = 512 512 61\n",
             "# NumPatches = 0\n"]
    lines += [f"# DarkFrame =  {s:4d} {s:4d} {_tilt(s):8.2f}\n" for s in DARK]
    lines.append(_COLUMNS)
    rows = PUBLISHED + [(s, -10.6414, 1.0, 0.0, 0.0) for s in range(11, 58)]
    for sec, rot, gmag, tx, ty in rows:
        lines.append(f"{sec:5d}  {rot:9.4f}  {gmag:9.5f}  {tx:9.3f}  {ty:9.3f}  {1.0:7.2f}  "
                     f"{1.0:7.2f}  {1.0:7.2f}  {0.0:7.2f}  {_tilt(sec):8.2f}\n")
    path.write_text("".join(lines))


def test_aln_round_trip_with_dark_frames(tmp_path):
    rng = np.random.default_rng(5)
    k = 9
    angles = np.sort(rng.uniform(-60, 60, k))
    s = rng.uniform(-15, 15, (k, 2))
    p = tmp_path / "r.aln"
    write_aln(p, angles, s, 86.5, image_shape=(40, 64), dark_frames=[(0, -63.0), (10, 62.0)])
    a = read_aln(p)
    err = np.abs(a.shifts - s).max()
    print(f"\n[aln round trip] max_shift_err_px={err:.3g}, "
          f"axis_err_deg={abs(a.axis_angle_deg - 86.5):.3g}")
    assert err <= 1e-4  # TX, TY "%10.4f" rotated back: <= sqrt(2) * 5e-5 + ROT rounding
    assert a.axis_angle_deg == pytest.approx(86.5, abs=1e-9)
    np.testing.assert_allclose(a.angles_deg, angles, atol=5e-5)
    assert a.sections.tolist() == list(range(1, 10))
    assert a.raw_size == (64, 40, 11) and a.num_patches == 0
    assert a.dark_frames == ((0, 0, -63.0), (10, 10, 62.0))
    text = p.read_text()
    assert text.startswith("# AreTomo Alignment / Priims bprmMn\n# RawSize = 64 40 11\n"
                           "# NumPatches = 0\n# DarkFrame =     0    0   -63.00\n")
    assert "# SEC     ROT         GMAG       TX          TY" in text
    # no rotation: TX, TY are the shifts themselves
    write_aln(tmp_path / "z.aln", angles, s, 0.0, image_shape=(40, 64))
    np.testing.assert_allclose(read_aln(tmp_path / "z.aln").tx_ty, s, atol=5e-5)


def test_aln_conventions_match_aretomos_xf_export(tmp_path):
    # AreTomo2 ImodUtil/CSaveXF.cpp writes, per row: a11 = cos(-ROT), a12 = -sin(-ROT),
    # a21 = sin(-ROT), a22 = cos(-ROT), (DX, DY) = A (-TX, -TY).  fastalign's .xf of what
    # read_aln returns must be that line.
    p = tmp_path / "pub.aln"
    _published_file(p)
    a = read_aln(p)
    assert a.raw_size == (512, 512, 61) and len(a.shifts) == 51
    assert a.axis_angle_deg == pytest.approx(-10.6414, abs=1e-9)
    np.testing.assert_array_equal(a.dark_sections, DARK)
    assert a.sections[0] == 7 and a.angles_deg[0] == pytest.approx(-41.0)
    write_xf(tmp_path / "f.xf", a.shifts, axis_angle_deg=a.axis_angle_deg)
    ours = np.loadtxt(tmp_path / "f.xf")[:4]
    for (sec, rot, _, tx, ty), line in zip(PUBLISHED, ours):
        r = np.deg2rad(rot)
        A = np.array([[np.cos(-r), -np.sin(-r)], [np.sin(-r), np.cos(-r)]])
        aretomo = np.concatenate([A.ravel(), A @ (-np.array([tx, ty]))])
        np.testing.assert_allclose(line, aretomo, atol=1e-4)
    dx, dy = a.shifts[0]
    print(f"\n[published row SEC 7: ROT -10.6414, TX 30.409, TY -7.146] -> fastalign "
          f"axis {a.axis_angle_deg:.4f} deg, (dx, dy) = ({dx:.4f}, {dy:.4f})")
    # by hand: (dx, dy) = R(-ROT) (TX, TY) = R(10.6414 deg) (30.409, -7.146), cos = 0.982802,
    # sin = 0.184662: (0.982802 * 30.409 + 0.184662 * 7.146,
    #                  0.184662 * 30.409 - 0.982802 * 7.146) = (31.2056, -1.4077)
    assert (dx, dy) == pytest.approx((31.2056, -1.4077), abs=1e-4)


def test_aln_rows_sorted_by_section_and_stack_counts(tmp_path):
    p = tmp_path / "pub.aln"
    _published_file(p)
    text = p.read_text().splitlines(keepends=True)
    head = [ln for ln in text if ln.startswith("#")]
    rows = [ln for ln in text if not ln.startswith("#")]
    p.write_text("".join(head + rows[::-1]))  # AreTomo lists rows by tilt: any order reads
    a = read_aln(p)
    assert a.sections.tolist() == list(range(7, 58))
    assert a.shifts_for(51).shape == (51, 2)
    # the raw stack, dark frames included: they have no alignment; say which to remove
    with pytest.raises(ValueError, match=r"pub\.aln aligns 51 images; the tilt series has 61, "
                                         r"including the 10 dark frames .* \(views 1-7,59-61"):
        a.shifts_for(61)
    with pytest.raises(ValueError, match=r"pub\.aln holds 51 alignment lines \(RawSize 61 "
                                         r"sections, 10 dark frames\), the tilt series has 50"):
        read_alignment(p, n=50)
    assert format_excludelist(a.dark_sections) == "1-7,59-61"


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("    7   -10.6414    1.00000", "    7   -10.6414    1.02000"),
     r"pub\.aln, line 15: GMAG 1\.02 is a magnification"),
    (lambda t: t.replace("RawSize = 512 512 61", "RawSize = 512 512 60"),
     r"RawSize counts 60 sections but the file has 51 rows and 10 dark frames"),
    (lambda t: t.replace("    8   -10.6414", "    7   -10.6414"),
     r"section 7 has more than one row"),
    (lambda t: t.replace("    7   -10.6414", "    6   -10.6414"),
     r"section 6 has a row and is a DarkFrame"),
    (lambda t: t.replace("30.409", "30.409 2"), r"pub\.aln, line 15: expected 10 numbers"),
    (lambda t: "".join(ln for ln in t.splitlines(keepends=True) if ln.startswith("#")),
     r"holds no alignment rows"),
])
def test_aln_bad_input(tmp_path, edit, message):
    p = tmp_path / "pub.aln"
    _published_file(p)
    p.write_text(edit(p.read_text()))
    with pytest.raises(ValueError, match=message):
        read_aln(p)


def test_aln_local_section_and_aretomo3_header(tmp_path):
    p = tmp_path / "a3.aln"
    p.write_text("# AreTomo Alignment / Priims bprmMn\n# RawSize = 16 16 2\n"
                 "# NumPatches = 1\n# AlphaOffset =    -1.50\n# BetaOffset =     0.00\n"
                 "# Thickness = 120\n" + _COLUMNS
                 + "    0    85.0000    1.00000      1.000      2.000     1.00     1.00     1.00"
                   "     0.00    -31.50\n"
                 + "    1    85.0000    1.00000     -1.000      0.000     1.00     1.00     1.00"
                   "     0.00     28.50\n"
                 + "# Local Alignment\n   0   0    10.00     10.00      0.50     -0.25   1.0\n")
    a = read_aln(p)
    assert a.header == {"AlphaOffset": -1.5, "BetaOffset": 0.0, "Thickness": 120.0}
    assert a.num_patches == 1 and len(a.shifts) == 2
    np.testing.assert_allclose(a.angles_deg, [-31.5, 28.5])


# ------------------------------------------------------------------ CLI plumbing
def test_cli_initial_xf_and_pad_x_reach_align_and_aln_is_written(tmp_path, monkeypatch,
                                                                 capsys):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import cli_stub
    from fastalign.cli import main

    d = tmp_path / "data"
    d.mkdir()
    series = np.random.default_rng(3).random((7, 8, 10)).astype(np.float32) + 1.0
    angles = np.linspace(-60.0, 60.0, 7)
    write_aligned_stack(d / "ts.mrc", series)
    write_tlt(d / "ts.rawtlt", angles)
    start = np.column_stack([np.linspace(-2, 2, 7), np.linspace(1, -1, 7)])
    write_aln(d / "start.aln", angles, start, 3.0, image_shape=(8, 10))
    seen = {}

    def capture(data, ang, **kwargs):
        seen.update(kwargs)
        return cli_stub.align(data, ang, **kwargs)

    monkeypatch.setattr(fastalign, "align", capture)
    out = tmp_path / "out"
    code = main(["align", os.fspath(d / "ts.mrc"), "--out", os.fspath(out), "--initial-xf",
                 os.fspath(d / "start.aln"), "--pad-x", "4"])
    assert code == 0, capsys.readouterr().err
    assert seen["pad_x"] == 4
    np.testing.assert_allclose(seen["initial_shifts"].shifts_for(7), start, atol=1e-4)
    assert seen["initial_shifts"].axis_angle_deg == pytest.approx(3.0)
    # the written .aln holds the same alignment as the .xf
    a = read_aln(out / "ts.aln")
    np.testing.assert_allclose(a.shifts, read_xf(out / "ts.xf"), atol=1e-4)
    np.testing.assert_allclose(a.angles_deg, angles, atol=1e-4)
    assert a.raw_size == (10, 8, 7)
    # a file for another stack is refused before anything is computed
    write_aln(d / "short.aln", angles[:5], start[:5], 0.0, image_shape=(8, 10))
    seen.clear()
    code = main(["align", os.fspath(d / "ts.mrc"), "--out", os.fspath(tmp_path / "o2"),
                 "--initial-xf", os.fspath(d / "short.aln")])
    err = capsys.readouterr().err
    assert code != 0 and "short.aln holds 5 alignment lines" in err and not seen
    assert main(["align", os.fspath(d / "ts.mrc"), "--pad-x", "-3"]) == 2
    assert "--pad-x: expected a non-negative integer or 'auto'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["align", "--help"])
    helptext = capsys.readouterr().out
    assert "--initial-xf FILE" in helptext and "--pad-x N|auto" in helptext
