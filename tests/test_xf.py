"""IMOD alignment files (issue 19): ``.xf`` with rotations into the model, the line count,
magnification/skew refused, ``.xtilt``, ``EXCLUDELIST``, and ``.xf`` as a starting alignment.

The central check applies a written ``.xf`` to the raw stack with IMOD's meaning of the six
numbers, written out here with ``scipy.ndimage.affine_transform``, and compares it with
``result.aligned`` of an alignment with a tilted axis.
"""
import warnings

import numpy as np
import pytest
import scipy.ndimage as ndi

import fastalign
from fastalign.align.options import AlignOptions
from fastalign.align.start import coarse_axis
from fastalign.io import (format_excludelist, parse_excludelist, read_alignment, read_xf,
                          read_xf_model, write_xf, write_xtilt)
from fastalign.simulate import rotated_axis_experiment


def _report(name, **vals):
    print(f"\n[{name}] " + ", ".join(f"{k}={v:.4g}" for k, v in vals.items()))


def _rot(deg):
    a = np.deg2rad(deg)
    return np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])


def _write_lines(path, rows):
    path.write_text("".join(" ".join(f"{v:.7f}" for v in r) + "\n" for r in rows))


# ------------------------------------------------------------------ reading into the model
def test_xf_round_trip_with_rotation(tmp_path):
    rng = np.random.default_rng(4)
    s = rng.uniform(-20, 20, (11, 2))
    p = tmp_path / "r.xf"
    write_xf(p, s, axis_angle_deg=-7.25)
    m = read_xf_model(p, n=11)
    err_s = np.abs(m.shifts - s).max()
    err_a = abs(m.axis_angle_deg + 7.25)
    _report("xf round trip", max_shift_err_px=err_s, angle_err_deg=err_a)
    assert err_s <= 5e-5  # "%14.4f": half of the last digit
    assert err_a < 1e-5   # "%12.7f" matrix entries
    np.testing.assert_allclose(m.rotations_deg, -7.25, atol=1e-5)
    np.testing.assert_array_equal(read_xf(p), m.shifts)
    np.testing.assert_array_equal(m.shifts_for(11), m.shifts)
    assert read_alignment(p, n=11).axis_angle_deg == m.axis_angle_deg


def test_xf_translation_is_applied_after_the_rotation(tmp_path):
    # a hand-made IMOD line: rotate by R(-a) about the centre, then translate by (DX, DY).
    # The model's aligned(r) = raw(R(a) (r - c + s) + c) is that map iff s = -(DX, DY).
    a, D = 12.0, np.array([3.5, -1.25])
    A = _rot(-a)
    p = tmp_path / "h.xf"
    _write_lines(p, [list(A.ravel()) + list(D)])
    m = read_xf_model(p)
    assert m.axis_angle_deg == pytest.approx(a, abs=1e-5)
    np.testing.assert_allclose(m.shifts, [-D])
    c, r = np.array([20.0, 15.0]), np.array([33.0, 4.0])
    raw = _rot(a) @ (r - c + m.shifts[0]) + c      # where the model samples the raw image
    np.testing.assert_allclose(A @ (raw - c) + D + c, r, atol=1e-6)  # IMOD maps it to r


def test_xf_line_count_must_match_the_stack(tmp_path):
    p = tmp_path / "few.xf"
    write_xf(p, np.zeros((5, 2)))
    with pytest.raises(ValueError, match=r"few\.xf holds 5 transforms, the tilt series has 7"):
        read_xf(p, n=7)
    with pytest.raises(ValueError, match=r"few\.xf holds 5 transforms, the tilt series has 6"):
        read_xf_model(p, n=6)
    with pytest.raises(ValueError, match=r"few\.xf holds 5"):
        read_alignment(p, n=4)


@pytest.mark.parametrize("matrix, kind", [
    ([1.01, 0.0, 0.0, 1.01], "magnification"),
    ([1.0, 0.02, 0.0, 1.0], "skew"),
    ([-1.0, 0.0, 0.0, 1.0], "mirror"),
])
def test_xf_refuses_what_is_not_a_rotation(tmp_path, matrix, kind):
    p = tmp_path / "mag.xf"
    _write_lines(p, [[1, 0, 0, 1, 0, 0], matrix + [1.0, 2.0]])
    with pytest.raises(ValueError, match=rf"mag\.xf, line 2: the transform is not a rotation "
                                         rf"\(.*{kind if kind == 'mirror' else ''}"):
        read_xf_model(p)
    # a rotation written to 7 decimals passes the 1e-3 tolerance
    _write_lines(p, [list(_rot(-30.0).ravel()) + [0, 0]])
    assert read_xf_model(p).axis_angle_deg == pytest.approx(30.0, abs=1e-5)


def test_xf_rotation_spread_warns_and_uses_the_common_angle(tmp_path):
    p = tmp_path / "spread.xf"
    _write_lines(p, [list(_rot(-a).ravel()) + [0, 0] for a in (3.0, 3.3, 3.15)])
    with pytest.warns(UserWarning, match=r"spread\.xf: the per-tilt rotations differ .* up "
                                         r"to 0\.15"):
        m = read_xf_model(p)
    assert m.axis_angle_deg == pytest.approx(3.15, abs=1e-4)
    np.testing.assert_allclose(m.rotations_deg, [3.0, 3.3, 3.15], atol=1e-5)
    _write_lines(p, [list(_rot(-a).ravel()) + [0, 0] for a in (3.0, 3.02)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_xf_model(p)  # within SPREAD_TOL_DEG: silent


# ------------------------------------------------------------------ .xtilt, EXCLUDELIST
def test_xtilt_zeros(tmp_path):
    write_xtilt(tmp_path / "t.xtilt", 4)
    assert np.loadtxt(tmp_path / "t.xtilt").tolist() == [0.0] * 4


def test_excludelist_format_and_parse():
    assert format_excludelist([0, 4, 5, 6]) == "1,5-7"
    assert format_excludelist([6, 4, 5, 4, 9, 0, 1]) == "1-2,5-7,10"
    assert format_excludelist([3]) == "4"
    for idx in ([0, 4, 5, 6], [2], [0, 1, 2, 3, 9], [1, 3, 5]):
        np.testing.assert_array_equal(parse_excludelist(format_excludelist(idx), 10), idx)
    np.testing.assert_array_equal(parse_excludelist("EXCLUDELIST 1, 5-7", 7), [0, 4, 5, 6])


@pytest.mark.parametrize("text, message", [
    ("1,5-8", r"'5-8' is outside 1\.\.7"),
    ("0", r"'0' is outside 1\.\.7"),
    ("", "lists no views"),
    ("EXCLUDELIST", "lists no views"),
    ("7-5", "reversed"),
    ("1;3", "not a number or a range"),
])
def test_excludelist_bad_input(text, message):
    with pytest.raises(ValueError, match=message):
        parse_excludelist(text, 7)


def test_excludelist_format_refuses_nothing_and_negatives():
    with pytest.raises(ValueError, match="at least one"):
        format_excludelist([])
    with pytest.raises(ValueError, match=">= 0"):
        format_excludelist([-1, 2])


# ------------------------------------------------------------------ IMOD meaning, end to end
def _apply_xf_imod(stack, rows):
    """newstack -xform, written out: the output pixel x' (column, row) takes the raw image at
    x = A^-1 (x' - c - D) + c, c = ((nx-1)/2, (ny-1)/2); cubic B-spline, nearest edge."""
    n, ny, nx = stack.shape
    c = np.array([0.5 * (nx - 1), 0.5 * (ny - 1)])
    swap = np.array([[0, 1], [1, 0]])  # (x, y) <-> (row, col) = (y, x)
    out = np.empty_like(stack)
    for i, r in enumerate(rows):
        Ainv = np.linalg.inv(r[:4].reshape(2, 2))
        offset_xy = c - Ainv @ (c + r[4:6])
        ndi.affine_transform(stack[i], swap @ Ainv @ swap, offset=swap @ offset_xy,
                             output=out[i], order=3, mode="nearest")
    return out


def test_written_xf_reproduces_the_aligned_stack(tmp_path):
    alpha = 4.0
    e = rotated_axis_experiment((16, 48, 48), angles_deg=np.arange(-60, 61, 15.0),
                                axis_angle_deg=alpha, center_offset=0.0, shift_range=3.0,
                                seed=2)
    n = len(e.angles_deg)
    # start from a file: the truth's .xf, rounded; its angle becomes the (fixed) axis angle
    start = tmp_path / "start.xf"
    write_xf(start, e.shifts, axis_angle_deg=alpha)
    with pytest.raises(ValueError, match=r"start\.xf holds 9 transforms, the tilt series "
                                         r"has 8"):
        fastalign.align(e.data[:-1], e.angles_deg[:-1], initial_shifts=read_alignment(start))
    r = fastalign.align(e.data, e.angles_deg, initial_shifts=read_alignment(start, n=n),
                        max_iter=2, levels=(1,))
    assert r.axis_angle_deg == pytest.approx(alpha, abs=1e-5)
    assert r.options.get("axis_angle_deg_file") == pytest.approx(alpha, abs=1e-5)

    out = tmp_path / "out.xf"
    write_xf(out, r.shifts, axis_angle_deg=r.axis_angle_deg)
    rows = np.loadtxt(out)
    mine = _apply_xf_imod(e.data, rows)
    # interior: samples whose source stays 3 px inside the image
    inner = (slice(None), slice(6, -6), slice(6, -6))
    diff = np.abs(mine[inner] - r.aligned[inner]).max()
    grad = max(np.abs(np.diff(e.data, axis=a)).max() for a in (1, 2))
    scale = np.abs(e.data).max()
    _report("xf applied (IMOD meaning) vs result.aligned", max_abs_diff=diff,
            rel_to_data=diff / scale, max_gradient=grad,
            shift_err_vs_truth_px=np.abs(r.shifts - e.shifts).max())
    # the same cubic interpolation; only the file's rounding differs: DX, DY to 5e-5 px and
    # the matrix to 5e-8 (x <= 34 px from the centre: 2e-6 px), plus float32 round-off
    assert diff <= grad * 1e-4 + 1e-5 * scale
    # and a wrong reading does not: DX, DY = +dx, +dy, or the translation before the rotation
    # (x' = A (x - c + D) + c, i.e. A D after it)
    flipped, before = rows.copy(), rows.copy()
    flipped[:, 4:6] = r.shifts
    before[:, 4:6] = np.einsum("kij,kj->ki", rows[:, :4].reshape(-1, 2, 2), rows[:, 4:6])
    for wrong in (flipped, before):
        off = np.abs(_apply_xf_imod(e.data, wrong)[inner] - r.aligned[inner]).max()
        print(f"  wrong reading: max_abs_diff={off:.4g}")
        assert off > 100 * diff


def test_file_axis_angle_versus_the_given_one(tmp_path):
    p = tmp_path / "a.xf"
    write_xf(p, np.zeros((3, 2)), axis_angle_deg=2.0)
    m = read_alignment(p)
    data = np.ones((3, 8, 8), np.float32)
    alpha, record, _ = coarse_axis(data, AlignOptions(initial_shifts=m))
    assert alpha == pytest.approx(2.0, abs=1e-5) and "axis_angle_deg_file" in record
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 0.4 deg apart: silent
        assert coarse_axis(data, AlignOptions(initial_shifts=m, axis_angle_deg=2.4))[0] == 2.4
    with pytest.warns(UserWarning, match=r"a\.xf: its axis angle 2\.000 deg differs from "
                                         r"axis_angle_deg=3\.000"):
        assert coarse_axis(data, AlignOptions(initial_shifts=m, axis_angle_deg=3.0))[0] == 3.0
    with pytest.raises(ValueError, match=r"read_alignment\(path\)"):
        AlignOptions(initial_shifts=str(p))
