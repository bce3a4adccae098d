"""Tests of fastalign.io: readers for every format, writers, atomicity, conventions."""
import hashlib
import os
import warnings

import mrcfile
import numpy as np
import pytest
import tifffile

from fastalign.io import (OldMRCHeaderWarning, OutputSet, atomic_write, detect_format,
                          inspect_tilt_series, read_angles, read_mdoc, read_tilt_series,
                          read_xf, write_aligned_stack, write_mrc, write_tlt, write_volume,
                          write_xf)

ANGLES = np.array([-60.0, -30.0, 0.0, 30.0, 60.0])


def sha(path):
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


@pytest.fixture
def series():
    return np.random.default_rng(0).standard_normal((5, 6, 7)).astype(np.float32)


def no_tmp_files(directory):
    return [f for f in os.listdir(directory) if f.endswith(".tmp")] == []


def write_text(path, text):
    with open(path, "w") as fh:
        fh.write(text)


def raw_mrc(path, data, *, voxel_size=None, ext=None, exttyp=None, nreal=None, nint=None):
    """Write an MRC with mrcfile (optionally with an extended header)."""
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(data)
        if voxel_size is not None:
            m.voxel_size = voxel_size
        if ext is not None:
            m.set_extended_header(np.frombuffer(ext, dtype="V1"))
        if exttyp is not None:
            m.header.exttyp = exttyp
    if nint is not None:
        with open(path, "r+b") as fh:
            fh.seek(128)
            fh.write(np.array([nint, nreal], dtype="<i2").tobytes())


def strip_map_id(path):
    """Make an MRC2014 file look like an old (pre-2014 / FEI) one: no 'MAP ', no stamp."""
    with open(path, "r+b") as fh:
        fh.seek(104)
        fh.write(b"\0" * 8)      # exttyp + nversion
        fh.seek(208)
        fh.write(b"\0" * 8)      # map id + machine stamp


# ------------------------------------------------------------------ MRC round trips


@pytest.mark.parametrize("suffix", [".mrc", ".st", ".ali", ".mrcs"])
def test_mrc_round_trip_with_rawtlt_and_pixel_size(tmp_path, series, suffix):
    p = tmp_path / f"ts{suffix}"
    write_aligned_stack(p, series, pixel_size_A=2.5)
    write_tlt(tmp_path / "ts.rawtlt", ANGLES)
    data, angles, meta = read_tilt_series(p)
    assert data.dtype == np.float32 and data.flags.c_contiguous
    np.testing.assert_array_equal(data, series)
    np.testing.assert_allclose(angles, ANGLES)
    assert meta["pixel_size_A"] == pytest.approx(2.5)
    assert meta["format"] == "mrc" and meta["shape"] == (5, 6, 7)
    assert meta["source"] == os.fspath(p)
    assert meta["angles_source"].endswith("ts.rawtlt")


def test_mrc_integer_modes_read_as_float32(tmp_path):
    for dtype in (np.int8, np.int16, np.uint16, np.float16):
        d = (np.arange(5 * 4 * 3) % 100).astype(dtype).reshape(5, 4, 3)
        p = tmp_path / f"m_{np.dtype(dtype).name}.mrc"
        raw_mrc(p, d)
        data, angles, meta = read_tilt_series(p)
        assert data.dtype == np.float32 and angles is None
        np.testing.assert_array_equal(data, d.astype(np.float32))
        assert meta["dtype"] == np.dtype(dtype).name
        assert meta["pixel_size_A"] is None


def test_single_image_mrc_becomes_one_tilt(tmp_path):
    p = tmp_path / "one.mrc"
    raw_mrc(p, np.ones((4, 3), np.float32))
    data, _, _ = read_tilt_series(p, angles=[0.0])
    assert data.shape == (1, 4, 3)


def test_volume_writer_sets_voxel_size(tmp_path):
    vol = np.random.default_rng(1).random((4, 6, 8)).astype(np.float32)
    p = tmp_path / "v.rec"
    write_volume(p, vol, voxel_size_A=3.25)
    with mrcfile.open(p) as m:
        assert m.is_volume()
        np.testing.assert_allclose([m.voxel_size.x, m.voxel_size.y, m.voxel_size.z], 3.25)
        np.testing.assert_array_equal(m.data, vol)
    _, _, meta = read_tilt_series(p)
    assert meta["pixel_size_A"] == pytest.approx(3.25)


def test_aligned_stack_is_an_image_stack(tmp_path, series):
    p = tmp_path / "a.ali"
    write_aligned_stack(p, series, pixel_size_A=1.5)
    with mrcfile.open(p) as m:
        assert m.is_image_stack()
        assert float(m.voxel_size.x) == pytest.approx(1.5)
        assert any("fastalign" in lab for lab in m.get_labels())


def test_ali_prefers_tlt_over_rawtlt(tmp_path, series):
    p = tmp_path / "x.ali"
    write_aligned_stack(p, series)
    write_tlt(tmp_path / "x.rawtlt", ANGLES)
    write_tlt(tmp_path / "x.tlt", ANGLES + 0.5)
    _, angles, _ = read_tilt_series(p)
    np.testing.assert_allclose(angles, ANGLES + 0.5)
    q = tmp_path / "x.st"
    write_aligned_stack(q, series)
    _, angles, _ = read_tilt_series(q)
    np.testing.assert_allclose(angles, ANGLES)


# ------------------------------------------------------------------ old / odd headers


def test_old_fei_header_read_with_warning_and_angles(tmp_path, series):
    rec = np.zeros((1024, 32), dtype="<f4")
    fei_angles = np.array([-50.0, -25.0, 0.0, 25.0, 50.0])
    rec[:5, 0] = fei_angles
    rec[:, 11] = 2.1e-10  # pixel size in metres
    p = tmp_path / "old_fei.mrc"
    raw_mrc(p, series, ext=rec.tobytes())
    strip_map_id(p)
    before = sha(p)
    with pytest.warns(OldMRCHeaderWarning, match="old_fei.mrc"):
        data, angles, meta = read_tilt_series(p)
    np.testing.assert_array_equal(data, series)
    np.testing.assert_allclose(angles, fei_angles)
    assert meta["old_header"] is True
    assert meta["pixel_size_A"] == pytest.approx(2.1, rel=1e-5)
    assert "FEI" in meta["angles_source"]
    assert sha(p) == before


def test_old_header_without_extended_header_still_reads(tmp_path, series):
    p = tmp_path / "plain_old.st"
    raw_mrc(p, series)
    strip_map_id(p)
    with pytest.warns(OldMRCHeaderWarning, match="plain_old.st"):
        data, angles, _ = read_tilt_series(p)
    np.testing.assert_array_equal(data, series)
    assert angles is None


def test_fei1_extended_header_angles(tmp_path, series):
    dt = mrcfile.dtypes.get_ext_header_dtype(b"FEI1", "<")
    recs = np.zeros(5, dtype=dt)
    recs["Metadata size"] = dt.itemsize
    recs["Alpha tilt"] = ANGLES
    recs["Pixel size X"] = 3.0e-10
    p = tmp_path / "fei1.mrc"
    raw_mrc(p, series, ext=recs.tobytes(), exttyp=b"FEI1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, angles, meta = read_tilt_series(p)
    np.testing.assert_allclose(angles, ANGLES)
    assert meta["pixel_size_A"] == pytest.approx(3.0)


def test_serialem_extended_header_angles(tmp_path, series):
    nint = 4
    ext = np.zeros((5, nint // 2), dtype="<i2")
    ext[:, 0] = np.round(ANGLES * 100).astype(np.int16)
    p = tmp_path / "seri.st"
    raw_mrc(p, series, ext=ext.tobytes(), exttyp=b"SERI", nint=nint, nreal=1)
    _, angles, meta = read_tilt_series(p)
    np.testing.assert_allclose(angles, ANGLES)
    assert "SERI" in meta["angles_source"]


def test_sidecar_angles_take_precedence_over_header(tmp_path, series):
    nint = 2
    ext = np.round(ANGLES * 100).astype("<i2")
    p = tmp_path / "both.st"
    raw_mrc(p, series, ext=ext.tobytes(), exttyp=b"SERI", nint=nint, nreal=1)
    write_tlt(tmp_path / "both.rawtlt", ANGLES + 1)
    _, angles, _ = read_tilt_series(p)
    np.testing.assert_allclose(angles, ANGLES + 1)


def test_truncated_mrc_is_a_clear_error(tmp_path, series):
    p = tmp_path / "trunc.mrc"
    raw_mrc(p, series)
    with open(p, "r+b") as fh:
        fh.truncate(os.path.getsize(p) - 50)
    before = sha(p)
    with pytest.raises(ValueError, match=r"trunc\.mrc is truncated"):
        read_tilt_series(p, angles=ANGLES)
    assert sha(p) == before


@pytest.mark.parametrize("content", [b"hello, this is not an MRC file\n" * 100, b"tiny"],
                         ids=["text", "tiny"])
def test_foreign_file_with_mrc_suffix(tmp_path, content):
    p = tmp_path / "foreign.mrc"
    p.write_bytes(content)
    with pytest.raises(ValueError, match=r"foreign\.mrc is not an MRC file"):
        read_tilt_series(p)
    assert p.read_bytes() == content


def test_complex_mrc_rejected(tmp_path):
    p = tmp_path / "c.mrc"
    raw_mrc(p, np.ones((2, 3, 4), np.complex64))
    with pytest.raises(TypeError, match="complex"):
        read_tilt_series(p)


# ------------------------------------------------------------------ angles


def test_angle_count_mismatch(tmp_path, series):
    p = tmp_path / "ts.mrc"
    write_aligned_stack(p, series)
    write_tlt(tmp_path / "ts.rawtlt", ANGLES[:4])
    before = sha(p)
    with pytest.raises(ValueError, match=r"ts\.rawtlt has 4 tilt angles but .* has 5 images"):
        read_tilt_series(p)
    with pytest.raises(ValueError, match="4 tilt angles but"):
        read_tilt_series(p, angles=[1.0, 2.0, 3.0, 4.0])
    assert sha(p) == before


def test_non_numeric_angle_file_names_file_and_line(tmp_path, series):
    p = tmp_path / "ts.mrc"
    write_aligned_stack(p, series)
    write_text(tmp_path / "bad.tlt", "-60\n-30\nzero\n30\n60\n")
    with pytest.raises(ValueError, match=r"bad\.tlt, line 3: .*'zero'"):
        read_tilt_series(p, angles=tmp_path / "bad.tlt")
    write_text(tmp_path / "two.tlt", "-60 1\n")
    with pytest.raises(ValueError, match=r"two\.tlt, line 1"):
        read_angles(tmp_path / "two.tlt")
    write_text(tmp_path / "empty.tlt", "\n# nothing\n")
    with pytest.raises(ValueError, match="no tilt angles"):
        read_angles(tmp_path / "empty.tlt")


def test_duplicate_angles_rejected(tmp_path, series):
    p = tmp_path / "ts.npy"
    np.save(p, series)
    with pytest.raises(ValueError, match="duplicate"):
        read_tilt_series(p, angles=[0, 1, 1, 2, 3])


def test_missing_angle_file(tmp_path, series):
    p = tmp_path / "ts.npy"
    np.save(p, series)
    with pytest.raises(FileNotFoundError, match="nope.tlt"):
        read_tilt_series(p, angles=tmp_path / "nope.tlt")


def test_tlt_round_trip(tmp_path):
    a = np.array([-61.25, -3.0, 0.125, 44.5])
    write_tlt(tmp_path / "a.tlt", a)
    np.testing.assert_allclose(read_angles(tmp_path / "a.tlt"), a, atol=1e-6)
    with pytest.raises(FileExistsError):
        write_tlt(tmp_path / "a.tlt", a)
    write_tlt(tmp_path / "a.tlt", a + 1, overwrite=True)
    np.testing.assert_allclose(read_angles(tmp_path / "a.tlt"), a + 1)


MDOC = """PixelSpacing = 2.7
ImageFile = ts.st

[ZValue = 1]
TiltAngle = -29.9981
StagePosition = 1 2

[ZValue = 0]
TiltAngle = -59.9972
[FrameSet = 0]
TiltAngle = 99

[ZValue = 2]
TiltAngle = 0.0011
"""


def test_mdoc_angles_by_zvalue(tmp_path):
    write_text(tmp_path / "ts.st.mdoc", MDOC)
    np.testing.assert_allclose(read_mdoc(tmp_path / "ts.st.mdoc"), [-59.9972, -29.9981, 0.0011])
    data = np.zeros((3, 4, 4), np.float32)
    raw_mrc(tmp_path / "ts.st", data)
    _, angles, meta = read_tilt_series(tmp_path / "ts.st")
    np.testing.assert_allclose(angles, [-59.9972, -29.9981, 0.0011])
    assert meta["angles_source"].endswith("ts.st.mdoc")


def test_mdoc_errors(tmp_path):
    write_text(tmp_path / "a.mdoc", "[ZValue = 0]\nTiltAngle = 1\n[ZValue = 1]\nFoo = 2\n")
    with pytest.raises(ValueError, match=r"no TiltAngle in ZValue section\(s\) \[1\]"):
        read_mdoc(tmp_path / "a.mdoc")
    write_text(tmp_path / "b.mdoc", "[ZValue = 0]\nTiltAngle = abc\n")
    with pytest.raises(ValueError, match=r"b\.mdoc, line 2"):
        read_mdoc(tmp_path / "b.mdoc")
    write_text(tmp_path / "c.mdoc", "[ZValue = 0]\nTiltAngle = 1\n[ZValue = 2]\nTiltAngle = 2\n")
    with pytest.raises(ValueError, match="not numbered"):
        read_mdoc(tmp_path / "c.mdoc")


# ------------------------------------------------------------------ other formats


def test_tiff_round_trip_with_pixel_size(tmp_path, series):
    p = tmp_path / "ts.tif"
    tifffile.imwrite(p, series, imagej=True, resolution=(1 / 0.25, 1 / 0.25),
                     metadata={"unit": "nm", "axes": "ZYX"})
    write_tlt(tmp_path / "ts.rawtlt", ANGLES)
    data, angles, meta = read_tilt_series(p)
    np.testing.assert_array_equal(data, series)
    np.testing.assert_allclose(angles, ANGLES)
    assert meta["format"] == "tiff"
    assert meta["pixel_size_A"] == pytest.approx(2.5, rel=1e-4)


def test_tiff_uint16_without_metadata(tmp_path):
    d = np.arange(3 * 4 * 5, dtype=np.uint16).reshape(3, 4, 5)
    p = tmp_path / "plain.tiff"
    tifffile.imwrite(p, d, photometric="minisblack")
    data, _, meta = read_tilt_series(p, angles=[0, 1, 2])
    np.testing.assert_array_equal(data, d)
    assert meta["pixel_size_A"] is None and meta["dtype"] == "uint16"


def test_hdf5_round_trip_dataset_path_and_attributes(tmp_path, series):
    h5py = pytest.importorskip("h5py")
    p = tmp_path / "run.h5"
    with h5py.File(p, "w") as f:
        ds = f.create_dataset("exchange/data", data=series.astype(np.int16) * 0 + series)
        ds.attrs["angles_deg"] = ANGLES
        ds.attrs["pixel_size_A"] = 4.5
        f.create_dataset("exchange/dark", data=np.zeros((2, 6, 7)))
    data, angles, meta = read_tilt_series(f"{p}:/exchange/data")
    np.testing.assert_array_equal(data, series)
    np.testing.assert_allclose(angles, ANGLES)
    assert meta["pixel_size_A"] == 4.5 and meta["dataset"] == "/exchange/data"
    assert meta["format"] == "hdf5"
    with pytest.raises(ValueError, match="several datasets"):
        read_tilt_series(p)
    with pytest.raises(ValueError, match="no dataset /nothing"):
        read_tilt_series(f"{p}:/nothing")
    with pytest.raises(ValueError, match="is a group"):
        read_tilt_series(f"{p}:/exchange")


def test_hdf5_single_dataset_found_without_path(tmp_path, series):
    h5py = pytest.importorskip("h5py")
    p = tmp_path / "one.hdf5"
    with h5py.File(p, "w") as f:
        f["tomo"] = series
    write_tlt(tmp_path / "one.rawtlt", ANGLES)
    data, angles, meta = read_tilt_series(p)
    np.testing.assert_array_equal(data, series)
    np.testing.assert_allclose(angles, ANGLES)


def test_zarr_round_trip_root_array_and_group_member(tmp_path, series):
    zarr = pytest.importorskip("zarr")
    root = tmp_path / "ts.zarr"
    a = zarr.create_array(str(root), shape=series.shape, dtype="f4", chunks=(2, 6, 7))
    a[...] = series
    a.attrs["angles_deg"] = ANGLES.tolist()
    a.attrs["pixel_size_A"] = 1.25
    data, angles, meta = read_tilt_series(root)
    np.testing.assert_array_equal(data, series)
    np.testing.assert_allclose(angles, ANGLES)
    assert meta["format"] == "zarr" and meta["pixel_size_A"] == 1.25

    g = zarr.open_group(str(tmp_path / "grp.zarr"), mode="w")
    g.create_array("raw/tilts", shape=series.shape, dtype="u2")[...] = series.clip(0) * 100
    g.create_array("other", shape=(3, 6, 7), dtype="f4")
    with pytest.raises(ValueError, match="several arrays"):
        read_tilt_series(tmp_path / "grp.zarr", angles=ANGLES)
    data, _, meta = read_tilt_series(f"{tmp_path / 'grp.zarr'}:/raw/tilts", angles=ANGLES)
    np.testing.assert_array_equal(data, (series.clip(0) * 100).astype(np.uint16))
    assert meta["dataset"] == "/raw/tilts"
    with pytest.raises(ValueError, match="no array"):
        read_tilt_series(f"{tmp_path / 'grp.zarr'}:/missing", angles=ANGLES)


def test_npy_round_trip_and_2d(tmp_path, series):
    np.save(tmp_path / "ts.npy", series.astype(np.float64))
    write_tlt(tmp_path / "ts.tlt", ANGLES)
    data, angles, meta = read_tilt_series(tmp_path / "ts.npy")
    np.testing.assert_array_equal(data, series)
    np.testing.assert_allclose(angles, ANGLES)
    assert meta["format"] == "npy" and meta["dtype"] == "float64"
    np.save(tmp_path / "img.npy", series[0])
    data, _, _ = read_tilt_series(tmp_path / "img.npy", angles=[0.0])
    assert data.shape == (1, 6, 7)


def test_npy_complex_and_4d_rejected(tmp_path):
    np.save(tmp_path / "c.npy", np.ones((2, 3, 4), np.complex64))
    with pytest.raises(TypeError, match="complex"):
        read_tilt_series(tmp_path / "c.npy")
    np.save(tmp_path / "d.npy", np.ones((2, 2, 3, 4), np.float32))
    with pytest.raises(ValueError, match="must be 3-D"):
        read_tilt_series(tmp_path / "d.npy")


def test_format_detection_by_content(tmp_path, series):
    np.save(tmp_path / "x.npy", series)
    os.rename(tmp_path / "x.npy", tmp_path / "x.dat")
    assert detect_format(tmp_path / "x.dat") == "npy"
    write_aligned_stack(tmp_path / "m.mrc", series)
    os.rename(tmp_path / "m.mrc", tmp_path / "m.bin")
    assert detect_format(tmp_path / "m.bin") == "mrc"
    (tmp_path / "junk.xyz").write_bytes(b"junk" * 400)
    with pytest.raises(ValueError, match="cannot tell the format"):
        read_tilt_series(tmp_path / "junk.xyz")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_tilt_series(tmp_path / "missing.mrc")


def test_inspect_does_not_load_and_reports_shape(tmp_path, series):
    p = tmp_path / "ts.mrc"
    write_aligned_stack(p, series, pixel_size_A=2.0)
    meta = inspect_tilt_series(p, angles=ANGLES)
    assert meta["shape"] == (5, 6, 7) and meta["pixel_size_A"] == 2.0
    np.testing.assert_allclose(meta["angles_deg"], ANGLES)


# ------------------------------------------------------------------ .xf convention


def test_xf_sign_pinned_and_round_trip(tmp_path):
    shifts = np.array([[1.25, -0.5], [0.0, 2.0], [-3.125, 0.75]])
    p = tmp_path / "t.xf"
    write_xf(p, shifts)
    lines = p.read_text().splitlines()
    assert len(lines) == 3
    first = [float(t) for t in lines[0].split()]
    assert first == [1.0, 0.0, 0.0, 1.0, -1.25, 0.5]  # DX, DY = -dx, -dy
    assert [float(t) for t in lines[1].split()][4:] == [0.0, -2.0]
    np.testing.assert_allclose(read_xf(p), shifts, atol=1e-4)
    s, mats = read_xf(p, return_matrices=True)
    np.testing.assert_array_equal(mats, np.broadcast_to(np.eye(2), (3, 2, 2)))


def test_xf_reads_imod_fixed_width(tmp_path):
    p = tmp_path / "imod.xf"
    write_text(p, "   1.0000000   0.0000000   0.0000000   1.0000000      -2.500       1.250\n")
    np.testing.assert_allclose(read_xf(p), [[2.5, -1.25]])
    write_text(p, "1 0 0 1 x 2\n")
    with pytest.raises(ValueError, match=r"imod\.xf, line 1"):
        read_xf(p)


# ------------------------------------------------------------------ writer safety


def test_writers_refuse_overwrite_and_inputs(tmp_path, series):
    p = tmp_path / "ts.mrc"
    write_aligned_stack(p, series)
    before = sha(p)
    with pytest.raises(FileExistsError, match="already exists"):
        write_aligned_stack(p, series * 2)
    with pytest.raises(ValueError, match="input file"):
        write_volume(p, series, overwrite=True, inputs=[p])
    with pytest.raises(ValueError, match="input file"):
        write_xf(p, np.zeros((5, 2)), overwrite=True, inputs=[os.fspath(p)])
    assert sha(p) == before
    write_mrc(p, series * 2, overwrite=True)
    np.testing.assert_array_equal(read_tilt_series(p)[0], series * 2)
    assert no_tmp_files(tmp_path)


def test_atomic_write_cleans_up_on_error(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_write(target) as tmp:
            with open(tmp, "w") as fh:
                fh.write("half")
            raise RuntimeError("boom")
    assert not target.exists() and os.listdir(tmp_path) == []
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(target) as tmp:
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []
    with atomic_write(target) as tmp:
        with open(tmp, "w") as fh:
            fh.write("done")
    assert target.read_text() == "done"
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(target).st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's 0o600


def test_output_set_all_or_nothing(tmp_path):
    out = tmp_path / "deep" / "out"
    with pytest.raises(KeyboardInterrupt):
        with OutputSet(out, ["a.txt", "b.txt"]) as outs:
            write_text(outs.path("a.txt"), "a")
            raise KeyboardInterrupt
    assert not (tmp_path / "deep").exists()
    with OutputSet(out, ["a.txt", "b.txt"]) as outs:
        write_text(outs.path("a.txt"), "a")
        write_text(outs.path("b.txt"), "b")
        outs.commit()
    assert sorted(os.listdir(out)) == ["a.txt", "b.txt"]
    with pytest.raises(FileExistsError, match="already holds results"):
        OutputSet(out, ["a.txt"]).check()
    with pytest.raises(ValueError, match="input file"):
        OutputSet(out, ["a.txt"], overwrite=True, inputs=[out / "a.txt"]).check()
    store = tmp_path / "input.zarr"  # a directory input: nothing may be written inside it
    store.mkdir()
    with pytest.raises(ValueError, match="inside the input"):
        OutputSet(store / "results", ["a.txt"], inputs=[store]).check()
    with pytest.raises(ValueError, match="inside the input"):
        OutputSet(store, ["a.txt"], inputs=[store]).check()


# ------------------------------------------------------------------ block reads and writes


def _block_sources(tmp_path, series):
    """The same series as MRC (with .rawtlt), .npy, HDF5 and Zarr (angles in attributes)."""
    write_mrc(tmp_path / "ts.mrc", series)
    np.save(tmp_path / "ts.npy", series)
    for stem in ("ts",):
        write_tlt(tmp_path / f"{stem}.rawtlt", ANGLES)
    out = [str(tmp_path / "ts.mrc"), str(tmp_path / "ts.npy")]
    h5py = pytest.importorskip("h5py")
    with h5py.File(tmp_path / "b.h5", "w") as f:
        f["tomo"] = series
        f["tomo"].attrs["angles_deg"] = ANGLES
    out.append(f"{tmp_path / 'b.h5'}:/tomo")
    zarr = pytest.importorskip("zarr")
    a = zarr.create_array(str(tmp_path / "c.zarr"), shape=series.shape, dtype="f4",
                          chunks=(2, 6, 7))
    a[...] = series
    a.attrs["angles_deg"] = ANGLES.tolist()
    out.append(str(tmp_path / "c.zarr"))
    return out


def test_slab_source_reads_blocks_of_every_format(tmp_path, series):
    from fastalign.io.slabs import BlockRef, SlabSource, read_block, resolve

    for path in _block_sources(tmp_path, series):
        src = SlabSource(path)
        assert src.shape == series.shape, path
        np.testing.assert_allclose(src.angles_deg, ANGLES)
        block = src.read(1, 4, 2, 5)
        assert block.dtype == np.float32 and block.flags.c_contiguous
        np.testing.assert_array_equal(block, series[1:4, 2:5, :])
        np.testing.assert_array_equal(read_block(src, 0, 5, 0, 6), series)
        np.testing.assert_array_equal(resolve(BlockRef(src, 0, 2, 1, 2)), series[0:2, 1:2])
    arr = np.ones(3)
    assert resolve(arr) is arr


def test_slab_source_errors(tmp_path, series):
    from fastalign.io.slabs import SlabSource

    tifffile.imwrite(tmp_path / "ts.tif", series)
    with pytest.raises(ValueError, match="cannot be read in slabs"):
        SlabSource(tmp_path / "ts.tif", ANGLES)
    np.save(tmp_path / "ts.npy", series)
    with pytest.raises(ValueError, match="angles_deg is required"):
        SlabSource(tmp_path / "ts.npy")
    with pytest.raises(ValueError, match="5 images"):
        SlabSource(tmp_path / "ts.npy", ANGLES[:3])


@pytest.mark.parametrize("name", ["vol.rec", "vol.zarr"])
def test_slab_writer_blocks_commit_and_abort(tmp_path, series, name):
    from fastalign._version import __version__
    from fastalign.io.slabs import SlabWriter, maybe_writer

    if name.endswith(".zarr"):
        pytest.importorskip("zarr")
    path = tmp_path / name
    with maybe_writer(path, series.shape, 2, voxel_size_A=1.5) as w:
        receipts = [w.write(a, series[a:a + 2]) for a in (0, 2, 4)]
        w.commit(receipts)
    out = np.asarray(w.open())
    np.testing.assert_array_equal(out, series)
    if name.endswith(".rec"):
        with mrcfile.open(path) as m:
            assert m.header.ispg == 1 and float(m.voxel_size.x) == pytest.approx(1.5)
            assert float(m.header.dmean) == pytest.approx(float(series.mean()), abs=1e-5)
            assert float(m.header.rms) == pytest.approx(float(series.std()), rel=1e-4)
            labels = b"".join(m.header.label[:int(m.header.nlabl)])
            assert f"fastalign {__version__} (distributed)".encode() in labels
    assert no_tmp_files(tmp_path)
    with pytest.raises(FileExistsError):
        SlabWriter(path, series.shape, 2)
    # a missing block: nothing is committed, the temporary is removed
    with pytest.raises(RuntimeError, match="never written"):
        with maybe_writer(path, series.shape, 2, overwrite=True) as w:
            w.commit([w.write(0, series[:2])])
    np.testing.assert_array_equal(np.asarray(w.open()), series)
    assert no_tmp_files(tmp_path)
    with pytest.raises(ValueError, match="use a .zarr directory or an MRC file"):
        SlabWriter(tmp_path / "vol.tif", series.shape, 2)
    with maybe_writer(None, series.shape, 2) as w:
        assert w is None
