"""Metadata honesty (issue 16): pixel size only when a file really records one, tilt angles
and pixel size from FEI extended headers and SerialEM ``.mdoc`` files, Gatan DM3/DM4 input
through RosettaSciIO, ``--pixel-size`` and what ``fastalign info`` prints.

The DM files are written here by :func:`write_dm`, a minimal writer of the published DM3/DM4
tag-file layout (RosettaSciIO only reads DM): header, nested tag groups, data tags with
``%%%%`` and their type-info arrays.
"""
import json
import os
import struct
import sys

import mrcfile
import numpy as np
import pytest

import fastalign
from fastalign.io import (detect_format, inspect_tilt_series, read_mdoc_pixel_size,
                          read_tilt_series, write_volume)

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from cli_stub import assert_user_error  # noqa: E402
import cli_stub  # noqa: E402

ANGLES = np.array([-60.0, -30.0, 0.0, 30.0, 60.0])


@pytest.fixture
def series():
    return np.random.default_rng(7).standard_normal((5, 6, 7)).astype(np.float32)


def run_cli(capsys, *args):
    from fastalign.cli import main

    code = main([os.fspath(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


class Proc:
    def __init__(self, code, out, err):
        self.returncode, self.stdout, self.stderr = code, out, err


# ------------------------------------------------------------------ a minimal DM writer

_DM_SIMPLE = {"h": 2, "i": 3, "H": 4, "I": 5, "f": 6, "d": 7}


class DMGroup(dict):
    """A tag group; keys ``None`` (repeated via :class:`Unnamed`) are unnamed tags."""


class Unnamed(list):
    """Unnamed entries of a group (DM's TagGroup0, TagGroup1 / Data0, Data1 ...)."""


class Array:
    """A data tag holding an array of simple type ``code`` (struct letter)."""

    def __init__(self, values, code):
        self.values, self.code = np.asarray(values), code


def _dm_string(text):
    return Array(np.frombuffer(text.encode("utf-16-le"), dtype="<u2"), "H")


def _dm_data(value, q):
    if isinstance(value, str):
        value = _dm_string(value)
    if isinstance(value, Array):
        info = [20, _DM_SIMPLE[value.code], value.values.size]
        payload = value.values.astype("<" + value.code).tobytes()
    else:
        code = "d" if isinstance(value, float) else "i"
        info = [_DM_SIMPLE[code]]
        payload = struct.pack("<" + code, value)
    head = b"%%%%" + struct.pack(">" + q, len(info)) + struct.pack(f">{len(info)}{q}", *info)
    return head + payload


def _dm_group(group, version):
    q = "q" if version == 4 else "i"
    entries = []
    for name, value in group.items():
        items = value if isinstance(value, Unnamed) else [value]
        label = b"" if isinstance(value, Unnamed) else name.encode("latin-1")
        for item in items:
            if isinstance(item, dict):
                tag_id, body = 20, _dm_group(item, version)
            else:
                tag_id, body = 21, _dm_data(item, q)
            entry = struct.pack(">bh", tag_id, len(label)) + label
            if version == 4:
                entry += struct.pack(">q", len(body))
            entries.append(entry + body)
    return struct.pack(">bb" + q, 1, 0, len(entries)) + b"".join(entries)


def write_dm(path, data, *, version=3, scale=1.0, units="nm", alpha=None, tags=None,
             stack_axis=None):
    """Write ``data`` (2-D ``(ny, nx)`` or 3-D ``(n, ny, nx)``, float32) as a DM file.

    ``scale``/``units`` calibrate x and y, ``alpha`` is the stage alpha tag,
    ``tags`` extra ImageTags, ``stack_axis`` ``(origin, scale, units)`` of a 3-D stack axis.
    """
    data = np.ascontiguousarray(data, dtype=np.float32)
    dims = list(data.shape[::-1])
    cal = [DMGroup(Origin=0.0, Scale=float(scale), Units=units) for _ in range(2)]
    if data.ndim == 3:
        origin, s, u = stack_axis or (0.0, 1.0, "")
        cal.append(DMGroup(Origin=float(origin), Scale=float(s), Units=u))
    image_tags = DMGroup(tags or {})
    if alpha is not None:
        image_tags["Microscope Info"] = DMGroup(
            {"Stage Position": DMGroup({"Stage Alpha": float(alpha)})})
    image = DMGroup(
        ImageData=DMGroup(
            Calibrations=DMGroup(Brightness=DMGroup(Origin=0.0, Scale=1.0, Units="counts"),
                                 Dimension=DMGroup(d=Unnamed(cal)),
                                 DisplayCalibratedUnits=1),
            Data=Array(data.ravel(), "f"),
            DataType=2,
            Dimensions=DMGroup(d=Unnamed(dims)),
            PixelDepth=4),
        ImageTags=image_tags,
        Name=os.path.splitext(os.path.basename(path))[0],
        UniqueID=DMGroup(d=Unnamed([1, 2, 3, 4])))
    root = DMGroup(ImageList=DMGroup(d=Unnamed([image])))
    body = _dm_group(root, version)
    q = "q" if version == 4 else "i"
    with open(path, "wb") as fh:
        fh.write(struct.pack(">i", version) + struct.pack(">" + q, len(body) + 8)
                 + struct.pack(">i", 1) + body + b"\0" * 8)
    return path


def dm_series(directory, stack, alphas, **kw):
    os.makedirs(directory, exist_ok=True)
    for k, (img, a) in enumerate(zip(stack, alphas)):
        write_dm(os.path.join(directory, f"tilt_{k:03d}.dm3"), img, alpha=a, **kw)
    return directory


# ------------------------------------------------------------------ MRC: pixel size "set"?


def mrc_with(path, data, *, voxel=None, ext=None, exttyp=None):
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(data)
        if voxel is not None:
            m.voxel_size = voxel
        if ext is not None:
            m.set_extended_header(np.frombuffer(ext, dtype="V1"))
        if exttyp is not None:
            m.header.exttyp = exttyp
    return path


def test_mrc_pixel_size_unset_values_are_unknown(tmp_path, series):
    p0 = mrc_with(tmp_path / "zero.mrc", series)            # mrcfile default: cella 0
    p1 = mrc_with(tmp_path / "one.mrc", series, voxel=1.0)  # cella == grid: 1 A default
    p2 = mrc_with(tmp_path / "set.mrc", series, voxel=2.5)
    for p in (p0, p1):
        meta = inspect_tilt_series(p)
        assert meta["pixel_size_A"] is None and meta["pixel_size_source"] is None
    meta = inspect_tilt_series(p2)
    assert meta["pixel_size_A"] == pytest.approx(2.5)
    assert "MRC header" in meta["pixel_size_source"]


def test_old_fei_header_pixel_size_beats_default_cella(tmp_path, series):
    """ETSpy's HAADF.mrc layout: cella = grid (1 A) and the FEI record says 3.36 nm."""
    rec = np.zeros((1024, 32), dtype="<f4")
    rec[:5, 0] = ANGLES
    rec[:, 11] = 3.36e-9
    p = mrc_with(tmp_path / "haadf.mrc", series, voxel=1.0, ext=rec.tobytes())
    meta = inspect_tilt_series(p)
    assert meta["pixel_size_A"] == pytest.approx(33.6, rel=1e-6)
    assert "FEI" in meta["pixel_size_source"]
    np.testing.assert_allclose(meta["angles_deg"], ANGLES)


def fei1_records(angles, pixel_m, bitmask):
    dt = mrcfile.dtypes.get_ext_header_dtype(b"FEI1", "<")
    recs = np.zeros(len(angles), dtype=dt)
    recs["Metadata size"] = dt.itemsize
    recs["Bitmask 1"] = bitmask
    recs["Alpha tilt"] = angles
    recs["Pixel size X"] = pixel_m
    return recs.tobytes()


def test_fei1_bitmask_decides_which_fields_count(tmp_path, series):
    alpha, pixel = 1 << 7, 1 << 14
    p = mrc_with(tmp_path / "both.mrc", series, exttyp=b"FEI1",
                 ext=fei1_records(ANGLES, 2.0e-10, alpha | pixel))
    meta = inspect_tilt_series(p)
    np.testing.assert_allclose(meta["angles_deg"], ANGLES)
    assert meta["angles_source"] == "FEI1 extended header"
    assert meta["pixel_size_A"] == pytest.approx(2.0)
    # pixel size flagged, alpha tilt not: the zeros in "Alpha tilt" are not angles
    q = mrc_with(tmp_path / "px_only.mrc", series, exttyp=b"FEI1",
                 ext=fei1_records(ANGLES, 2.0e-10, pixel))
    meta = inspect_tilt_series(q)
    assert meta["angles_deg"] is None and meta["pixel_size_A"] == pytest.approx(2.0)
    assert meta["pixel_size_source"] == "FEI1 extended header"
    # alpha flagged, pixel size not
    r = mrc_with(tmp_path / "alpha_only.mrc", series, exttyp=b"FEI1",
                 ext=fei1_records(ANGLES, 2.0e-10, alpha))
    meta = inspect_tilt_series(r)
    np.testing.assert_allclose(meta["angles_deg"], ANGLES)
    assert meta["pixel_size_A"] is None


def test_outputs_without_pixel_size_claim_none(tmp_path):
    vol = np.ones((3, 4, 5), np.float32)
    write_volume(tmp_path / "v.rec", vol)
    with mrcfile.open(tmp_path / "v.rec") as m:
        assert float(m.header.cella.x) == 0.0
    assert inspect_tilt_series(tmp_path / "v.rec")["pixel_size_A"] is None


# ------------------------------------------------------------------ SerialEM .mdoc


def write_mdoc(path, angles, pixel=None, *, per_section=None):
    lines = [f"PixelSpacing = {pixel}"] if pixel is not None else []
    lines += ["ImageFile = test_000.mrc", "ImageSize = 7 6", "",
              "[T = SerialEM: test scope   31-Mar-23  16:24:14    ]", ""]
    for z, a in enumerate(angles):
        lines += [f"[ZValue = {z}]", f"TiltAngle = {a}", "StagePosition = -15.99 -8.55"]
        if per_section is not None:
            lines.append(f"PixelSpacing = {per_section[z]}")
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def test_serialem_mrc_and_mdoc_give_angles_and_pixel_size(tmp_path, series):
    """Like ETSpy's SerialEM_MultiTilt_Test: header voxel set, .mdoc with PixelSpacing."""
    p = mrc_with(tmp_path / "test_000.mrc", series, voxel=7.88)
    write_mdoc(tmp_path / "test_000.mdoc", ANGLES, 7.88, per_section=[7.88] * 5)
    data, angles, meta = read_tilt_series(p)
    np.testing.assert_array_equal(data, series)
    np.testing.assert_allclose(angles, ANGLES)
    assert meta["angles_source"].endswith("test_000.mdoc")
    assert meta["pixel_size_A"] == pytest.approx(7.88)


def test_mdoc_pixel_size_used_when_header_has_none(tmp_path, series):
    p = mrc_with(tmp_path / "ts.st", series)
    (tmp_path / "ts.rawtlt").write_text("\n".join(str(a) for a in ANGLES))  # angles ...
    mdoc = write_mdoc(tmp_path / "ts.st.mdoc", ANGLES + 1, per_section=[4.2] * 5)
    meta = inspect_tilt_series(p)
    np.testing.assert_allclose(meta["angles_deg"], ANGLES)
    assert meta["pixel_size_A"] == pytest.approx(4.2)    # ... the pixel size from the mdoc
    assert meta["pixel_size_source"].startswith(os.fspath(mdoc))
    assert os.path.abspath(mdoc) in meta["files"]


def test_mdoc_pixel_size_errors_and_zero(tmp_path):
    bad = write_mdoc(tmp_path / "bad.mdoc", ANGLES[:2], per_section=[4.2, 5.0])
    with pytest.raises(ValueError, match=r"bad\.mdoc: PixelSpacing differs"):
        read_mdoc_pixel_size(bad)
    text = write_mdoc(tmp_path / "text.mdoc", ANGLES[:2], "abc")
    with pytest.raises(ValueError, match=r"text\.mdoc, line 1"):
        read_mdoc_pixel_size(text)
    assert read_mdoc_pixel_size(write_mdoc(tmp_path / "z.mdoc", ANGLES[:2], 0)) is None
    assert read_mdoc_pixel_size(write_mdoc(tmp_path / "n.mdoc", ANGLES[:2])) is None


def test_pixel_size_argument_overrides_and_is_checked(tmp_path, series):
    p = mrc_with(tmp_path / "ts.mrc", series, voxel=2.5)
    meta = inspect_tilt_series(p, angles=ANGLES, pixel_size_A=3.0)
    assert meta["pixel_size_A"] == 3.0 and "given" in meta["pixel_size_source"]
    for bad in (0, -1.0, float("nan"), "abc"):
        with pytest.raises(ValueError, match="pixel size must be a"):
            inspect_tilt_series(p, angles=ANGLES, pixel_size_A=bad)


# ------------------------------------------------------------------ Gatan DM


@pytest.fixture
def rsciio():
    return pytest.importorskip("rsciio.digitalmicrograph")


@pytest.mark.parametrize("version", [3, 4])
def test_dm_stack_with_per_image_angles(tmp_path, series, rsciio, version):
    meta_data = DMGroup({"Dimension info": DMGroup({"2": DMGroup(
        Data=DMGroup({str(k): float(a) for k, a in enumerate(ANGLES)}),
        Label="Tilt angle (deg)")})})
    p = write_dm(tmp_path / f"stack.dm{version}", series, version=version, scale=0.336,
                 units="nm", tags={"Meta Data": meta_data})
    assert detect_format(p) == "dm"
    data, angles, meta = read_tilt_series(p)
    np.testing.assert_array_equal(data, series)
    np.testing.assert_allclose(angles, ANGLES)
    assert "Dimension info" in meta["angles_source"]
    assert meta["pixel_size_A"] == pytest.approx(3.36, rel=1e-6)    # nm -> A
    assert meta["format"] == "dm" and meta["shape"] == (5, 6, 7)


def test_dm_stack_angles_from_axis_calibration_or_setup(tmp_path, series, rsciio):
    p = write_dm(tmp_path / "axis.dm4", series, version=4, stack_axis=(2.0, 30.0, "deg"))
    _, angles, meta = read_tilt_series(p)
    np.testing.assert_allclose(angles, ANGLES)                   # (k - 2) * 30
    assert "stack-axis calibration" in meta["angles_source"]
    setup = DMGroup({"Tomography setup": DMGroup({"Tilt angles": DMGroup({
        "Minimum tilt angle (deg)": -60.0, "Maximum tilt angle (deg)": 60.0,
        "Tilt angle step (deg)": 30.0})})})
    q = write_dm(tmp_path / "setup.dm3", series, tags={"Tomography": setup})
    _, angles, meta = read_tilt_series(q)
    np.testing.assert_allclose(angles, ANGLES)
    assert "Tomography setup" in meta["angles_source"]
    # no angle tag at all: none found, and the usual message names the fix
    r = write_dm(tmp_path / "bare.dm3", series, units="")
    meta = inspect_tilt_series(r)
    assert meta["angles_deg"] is None and meta["pixel_size_A"] is None


def test_found_angle_file_of_another_count_gives_way_to_the_tags(tmp_path, series, rsciio):
    """ETSpy's test data: HAADF.rawtlt (77 angles, for HAADF.mrc) beside HAADF.dm3 (91)."""
    p = write_dm(tmp_path / "haadf.dm3", series, stack_axis=(2.0, 30.0, "deg"))
    (tmp_path / "haadf.rawtlt").write_text("\n".join(str(a) for a in ANGLES[:4]))
    with pytest.warns(UserWarning, match=r"ignored .*haadf\.rawtlt \(4 tilt angles for 5 "
                                         r"images"):
        _, angles, meta = read_tilt_series(p)
    np.testing.assert_allclose(angles, ANGLES)
    assert "stack-axis calibration" in meta["angles_source"]
    with pytest.raises(ValueError, match="4 tilt angles but"):       # given: never skipped
        read_tilt_series(p, angles=tmp_path / "haadf.rawtlt")


def test_dm_folder_pattern_and_list(tmp_path, series, rsciio):
    alphas = [-60.004, -29.998, 0.001, 30.002, 59.997]
    d = dm_series(tmp_path / "series", series, alphas, scale=0.0191, units="µm")
    (tmp_path / "series" / "notes.txt").write_text("not an image")
    assert detect_format(d) == "dm"
    data, angles, meta = read_tilt_series(d)
    np.testing.assert_array_equal(data, series)
    np.testing.assert_allclose(angles, alphas)
    assert "Stage Alpha" in meta["angles_source"]
    assert meta["pixel_size_A"] == pytest.approx(191.0, rel=1e-6)   # um -> A
    assert meta["path"] == os.path.abspath(d) and len(meta["files"]) == 5
    files = sorted(os.path.join(d, f) for f in os.listdir(d) if f.endswith(".dm3"))
    _, a_glob, _ = read_tilt_series(os.path.join(d, "tilt_*.dm3"))
    np.testing.assert_allclose(a_glob, alphas)
    data_list, a_list, _ = read_tilt_series(files[::-1])            # a list keeps its order
    np.testing.assert_allclose(a_list, alphas[::-1])
    np.testing.assert_array_equal(data_list, series[::-1])


def test_dm_folder_errors_name_the_file(tmp_path, series, rsciio):
    d = dm_series(tmp_path / "mixed", series[:3], [-10.0, 0.0, 10.0])
    write_dm(os.path.join(d, "tilt_003.dm3"), series[3, :5, :], alpha=20.0)
    with pytest.raises(ValueError, match=r"tilt_003\.dm3 is 5 x 7 pixels but .*tilt_000\.dm3 "
                                         r"is 6 x 7"):
        inspect_tilt_series(d)
    e = dm_series(tmp_path / "noalpha", series[:3], [-10.0, 0.0, 10.0])
    write_dm(os.path.join(e, "tilt_001.dm3"), series[1])           # no stage alpha tag
    with pytest.raises(ValueError, match=r"tilt_001\.dm3: no tilt angle in its DM tags.*"
                                         r"--angles FILE"):
        read_tilt_series(e)
    _, angles, _ = read_tilt_series(e, angles=[-10.0, 0.0, 10.0])  # given angles: fine
    np.testing.assert_allclose(angles, [-10.0, 0.0, 10.0])
    f = dm_series(tmp_path / "mag", series[:2], [-10.0, 0.0])
    write_dm(os.path.join(f, "tilt_002.dm3"), series[2], alpha=10.0, scale=2.0)
    with pytest.raises(ValueError, match=r"tilt_002\.dm3 has pixel size 20 A but"):
        inspect_tilt_series(f)
    with pytest.raises(FileNotFoundError, match="no file matches"):
        inspect_tilt_series(os.path.join(d, "none_*.dm3"))


def test_dm_without_rsciio_names_the_extra(tmp_path, series, monkeypatch):
    p = tmp_path / "x.dm3"
    p.write_bytes(b"\0\0\0\3" + b"\0" * 60)
    monkeypatch.setitem(sys.modules, "rsciio.digitalmicrograph", None)
    with pytest.raises(ImportError, match=r'pip install "fastalign\[dm\]"'):
        inspect_tilt_series(p)


def test_dm_refused_by_slab_source(tmp_path, series, rsciio):
    from fastalign.io.slabs import SlabSource

    p = write_dm(tmp_path / "s.dm3", series)
    with pytest.raises(ValueError, match="dm files cannot be read in slabs.*DM series are "
                                         "small"):
        SlabSource(p, ANGLES)


def test_dm_garbage_is_a_clear_error(tmp_path, rsciio):
    p = tmp_path / "junk.dm4"
    p.write_bytes(b"\0\0\0\4" + b"\xff" * 200)
    with pytest.raises(ValueError, match=r"junk\.dm4 is not a readable DM file"):
        inspect_tilt_series(p)


# ------------------------------------------------------------------ the command line


def test_info_says_pixel_size_unknown_and_honours_override(tmp_path, series, capsys):
    p = mrc_with(tmp_path / "ts.mrc", series, voxel=1.0)
    (tmp_path / "ts.rawtlt").write_text("\n".join(str(a) for a in ANGLES))
    code, out, _ = run_cli(capsys, "info", p)
    assert code == 0 and "pixel size: unknown" in out
    code, out, _ = run_cli(capsys, "info", p, "--pixel-size", "2.25")
    assert code == 0 and "pixel size: 2.25 A  (from given" in out
    code, _, err = run_cli(capsys, "info", p, "--pixel-size", "-3")
    assert_user_error(Proc(code, "", err), "--pixel-size", "positive number of angstroms")


def test_info_prints_angle_problems_instead_of_failing(tmp_path, series, capsys):
    """ETSpy's SerialEM_MultiTilt_Test has two images at the same TiltAngle."""
    p = mrc_with(tmp_path / "test_000.mrc", series[:2], voxel=7.88)
    write_mdoc(tmp_path / "test_000.mdoc", [-0.000488, -0.000488], 7.88)
    code, out, _ = run_cli(capsys, "info", p)
    assert code == 0
    assert "pixel size:     7.88 A" in out and "test_000.mdoc" in out
    assert "angles problem: " in out and "duplicate angles" in out
    code, _, err = run_cli(capsys, "recon", p, "--out", tmp_path / "o")
    assert_user_error(Proc(code, "", err), "duplicate angles")


def test_info_on_dm_folder(tmp_path, series, capsys, rsciio):
    d = dm_series(tmp_path / "DM_Series", series, ANGLES, scale=0.5, units="nm")
    code, out, _ = run_cli(capsys, "info", d)
    assert code == 0, out
    assert "format:     dm" in out and "5 DM files" in out
    assert "pixel size: 5 A  (from DM calibration" in out
    assert "5 from DM tags (Microscope Info/Stage Position/Stage Alpha): -60.00 to 60.00" in out


def test_align_report_and_outputs_without_pixel_size(tmp_path, series, capsys, monkeypatch):
    monkeypatch.setattr(fastalign, "align", cli_stub.align)   # the plumbing, not the maths
    monkeypatch.setattr(fastalign, "fbp", cli_stub.fbp)
    p = mrc_with(tmp_path / "ts.mrc", series)                   # cella 0: unknown
    (tmp_path / "ts.rawtlt").write_text("\n".join(str(a) for a in ANGLES))
    code, _, err = run_cli(capsys, "align", p, "--out", tmp_path / "a", "-q")
    assert code == 0, err
    rep = json.loads((tmp_path / "a" / "report.json").read_text())
    assert rep["inputs"]["pixel_size_A"] is None and rep["inputs"]["pixel_size_source"] is None
    for name in ("ts.ali", "ts.rec"):
        with mrcfile.open(tmp_path / "a" / name) as m:
            assert float(m.header.cella.x) == 0.0, name
    code, _, err = run_cli(capsys, "align", p, "--out", tmp_path / "b", "-q",
                           "--pixel-size", "3.5")
    assert code == 0, err
    rep = json.loads((tmp_path / "b" / "report.json").read_text())
    assert rep["inputs"]["pixel_size_A"] == 3.5
    with mrcfile.open(tmp_path / "b" / "ts.rec") as m:
        assert float(m.voxel_size.x) == pytest.approx(3.5)
    code, _, err = run_cli(capsys, "align", p, "--out", tmp_path / "c", "--workers", "1",
                           "--pixel-size", "3.5")
    assert_user_error(Proc(code, "", err), "--pixel-size is not available with")
