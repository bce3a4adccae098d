"""Bad input is rejected with a message naming the problem; TiltGeometry is an immutable value."""
import dataclasses

import numpy as np
import pytest

from fastalign import Projector, TiltGeometry, backproject, project

ANGLES = np.array([-40.0, -20.0, 0.0, 20.0, 40.0])


@pytest.fixture
def vol():
    return np.ones((2, 6, 7), np.float32)


@pytest.fixture
def ts():
    return np.ones((ANGLES.size, 2, 7), np.float32)


# --------------------------------------------------------------------------- data arrays

@pytest.mark.parametrize("shape", [(6, 7), (1, 2, 6, 7), (7,)])
def test_wrong_ndim(shape):
    with pytest.raises(ValueError, match=r"volume must be 3-D.*got \d-D"):
        project(np.ones(shape, np.float32), ANGLES)
    with pytest.raises(ValueError, match=r"tilt_series must be 3-D"):
        backproject(np.ones(shape, np.float32), ANGLES)


def test_shape_mismatch_with_operator(vol, ts):
    A = Projector(ANGLES, vol.shape)
    with pytest.raises(ValueError, match=r"volume has shape \(2, 6, 8\), expected \(2, 6, 7\)"):
        A(np.ones((2, 6, 8), np.float32))
    with pytest.raises(ValueError, match="tilt_series has shape"):
        A.T(np.ones((ANGLES.size + 1, 2, 7), np.float32))
    assert A(vol).shape == ts.shape and A.T(ts).shape == vol.shape


def test_angle_count_must_match_tilts(ts):
    with pytest.raises(ValueError, match="has 4 angles but the tilt series has 5 images"):
        backproject(ts, ANGLES[:4])
    with pytest.raises(ValueError, match="has 6 angles but the tilt series has 5 images"):
        backproject(ts, np.append(ANGLES, 60.0))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_data(vol, ts, bad):
    v = vol.copy()
    v[1, 2, 3] = bad
    with pytest.raises(ValueError, match="volume contains 1 NaN/Inf"):
        project(v, ANGLES)
    t = ts.copy()
    t[0, 0, 0] = bad
    t[4, 1, 6] = bad
    with pytest.raises(ValueError, match="tilt_series contains 2 NaN/Inf"):
        backproject(t, ANGLES)
    with pytest.raises(ValueError, match="NaN/Inf"):
        Projector(ANGLES, vol.shape).T(t)


def test_float64_overflowing_float32_is_rejected(vol):
    v = vol.astype(np.float64)
    v[0, 0, 0] = 1e300  # finite in float64, Inf once converted to float32
    # A clear ValueError, not a numpy "overflow encountered in cast" RuntimeWarning.
    with pytest.raises(ValueError, match="NaN/Inf|float32|range|overflow"):
        project(v, ANGLES)


@pytest.mark.parametrize("shape", [(0, 6, 7), (2, 0, 7), (2, 6, 0)])
def test_empty_volume(shape):
    with pytest.raises(ValueError, match=r"volume is empty \(shape"):
        project(np.ones(shape, np.float32), ANGLES)


@pytest.mark.parametrize("shape", [(0, 2, 7), (5, 0, 7), (5, 2, 0)])
def test_empty_tilt_series(shape):
    with pytest.raises(ValueError, match=r"tilt_series is empty \(shape"):
        backproject(np.ones(shape, np.float32), ANGLES)


def test_complex_data(vol, ts):
    with pytest.raises(TypeError, match="must be real"):
        project(vol.astype(np.complex64), ANGLES)
    with pytest.raises(TypeError, match="must be real"):
        backproject(ts.astype(np.complex128), ANGLES)


@pytest.mark.parametrize("bad", [np.array([["a"]]), np.empty((1, 1, 1), dtype=object)])
def test_non_numeric_data(bad):
    with pytest.raises(TypeError, match="numeric"):
        project(np.broadcast_to(bad, (1, 2, 2)), ANGLES)


# --------------------------------------------------------------------------- angles

def test_duplicate_angles(vol):
    with pytest.raises(ValueError, match=r"duplicate angles: \[20.0\]"):
        project(vol, [0.0, 20.0, 40.0, 20.0])
    with pytest.raises(ValueError, match="duplicate"):
        TiltGeometry([0.0, -0.0], (1, 2, 2))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_angles(vol, bad):
    with pytest.raises(ValueError, match=r"non-finite values at indices \[1\]"):
        project(vol, [0.0, bad, 10.0])


def test_angles_shape_and_type(vol):
    with pytest.raises(ValueError, match="angles_deg must be 1-D"):
        Projector(np.zeros((2, 2)), vol.shape)
    with pytest.raises(ValueError, match="angles_deg is empty"):
        Projector([], vol.shape)
    with pytest.raises(ValueError, match="angles_deg is required"):
        Projector(None, vol.shape)
    with pytest.raises(TypeError, match="angles_deg must be a sequence of numbers"):
        Projector(["zero", "ten"], vol.shape)


# --------------------------------------------------------------------------- geometry

def test_geometry_shape_and_offset_checks():
    with pytest.raises(ValueError, match=r"shape must be \(ny, nz, nx\)"):
        TiltGeometry(ANGLES, (6, 7))
    with pytest.raises(ValueError, match="shape must be >= 1"):
        TiltGeometry(ANGLES, (1, 0, 7))
    with pytest.raises(TypeError, match="shape must be an integer"):
        TiltGeometry(ANGLES, (1, 6.5, 7))
    with pytest.raises(ValueError, match="center_offset must be finite"):
        TiltGeometry(ANGLES, (1, 6, 7), center_offset=np.nan)
    with pytest.raises(TypeError, match="center_offset must be a number"):
        TiltGeometry(ANGLES, (1, 6, 7), center_offset="left")
    with pytest.raises(ValueError, match="shape=.* is required"):
        Projector(ANGLES)
    g = TiltGeometry(ANGLES, (np.int64(1), 6, np.int32(7)))
    assert g.shape == (1, 6, 7) and all(type(s) is int for s in g.shape)


def test_geometry_is_immutable():
    g = TiltGeometry(ANGLES, (1, 6, 7), 0.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.center_offset = 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.angles_deg = ANGLES
    with pytest.raises(ValueError, match="read-only"):
        g.angles_deg[0] = 99.0
    with pytest.raises(ValueError, match="read-only"):
        g.angles_rad[0] = 1.0
    assert g == TiltGeometry(ANGLES.tolist(), [1, 6, 7], 0.5)
    assert hash(g) == hash(TiltGeometry(ANGLES.tolist(), [1, 6, 7], 0.5))
    assert g != TiltGeometry(ANGLES, (1, 6, 7), 0.0)


def test_equal_geometries_have_equal_hashes():
    """-0.0 == 0.0, so the geometries are equal and must hash alike (set/dict keys)."""
    a = TiltGeometry([-0.0, 10.0], (1, 2, 2))
    b = TiltGeometry([0.0, 10.0], (1, 2, 2))
    assert a == b
    assert hash(a) == hash(b)
    assert len({a, b}) == 1


def test_geometry_does_not_alias_the_callers_array():
    """The caller's angle array stays theirs: still writeable, and writing to it (or to the
    array it is a view of) does not change the geometry."""
    a = ANGLES.copy()
    g = TiltGeometry(a, (1, 6, 7))
    assert a.flags.writeable, "TiltGeometry made the caller's angle array read-only"
    base = np.array([0.0, 10.0, 20.0, 30.0])
    g = TiltGeometry(base[:3], (1, 6, 7))
    base[0] = 99.0
    assert g.angles_deg[0] == 0.0, "geometry angles changed when the caller's array changed"
    assert np.array_equal(np.deg2rad(g.angles_deg), g.angles_rad)


@pytest.mark.parametrize("angles, offset", [
    (ANGLES, 0.0),
    (np.array([0.1, 1 / 3, -60.000001, 2e-7, 89.99999999999999]), -2.75),
    (np.array([12.5]), 1e-12),
    (np.arange(-70.0, 71.0, 1.5), 3.0),  # long enough for numpy to summarise by default
])
def test_geometry_repr_round_trips(angles, offset):
    g = TiltGeometry(angles, (3, 8, 9), offset)
    g2 = eval(repr(g), {"np": np, "TiltGeometry": TiltGeometry})
    assert g2 == g
    assert np.array_equal(g2.angles_deg, g.angles_deg)
    assert "..." not in repr(g)
    assert repr(Projector(g)).startswith("Projector(TiltGeometry(")


def test_geometry_slicing_by_tilt():
    g = TiltGeometry(np.arange(-60.0, 61.0, 20.0), (2, 5, 6), 1.5)
    sub = g[1:4]
    assert isinstance(sub, TiltGeometry)
    assert np.array_equal(sub.angles_deg, [-40.0, -20.0, 0.0])
    assert sub.shape == g.shape and sub.center_offset == g.center_offset
    assert sub.n_tilts == 3 and sub.data_shape == (3, 2, 6)
    one = g[2]
    assert one.n_tilts == 1 and one.angles_deg[0] == -20.0
    assert np.array_equal(g[::-1].angles_deg, g.angles_deg[::-1])
    assert np.array_equal(g[[0, 6]].angles_deg, [-60.0, 60.0])
    assert np.array_equal(g[g.angles_deg > 0].angles_deg, [20.0, 40.0, 60.0])
    np.testing.assert_array_equal(sub.angles_rad, np.deg2rad(sub.angles_deg))
    with pytest.raises(ValueError, match="empty"):
        g[3:3]
    with pytest.raises(IndexError):
        g[7]
    # A sub-geometry's projector equals the matching rows of the full one.
    rng = np.random.default_rng(0)
    x = rng.random(g.volume_shape).astype(np.float32)
    assert np.array_equal(Projector(sub)(x), Projector(g)(x)[1:4])


def test_geometry_properties():
    g = TiltGeometry([0.0, 90.0], (4, 5, 6), -0.5)
    assert (g.ny, g.nz, g.nx) == (4, 5, 6)
    assert g.volume_shape == (4, 5, 6) and g.data_shape == (2, 4, 6)
    assert g.detector_center == pytest.approx(2.0)
    assert g.with_shape((1, 2, 3)).shape == (1, 2, 3)
    c, s, zmaj = g.ray_tables()
    assert c[1] == 0.0 and s[0] == 0.0 and zmaj.tolist() == [True, False]


# ------------------------------------------------------------------ plausibility warnings


def _blob_series(angles, n=32):
    """A small Gaussian blob at the centre, projected at ``angles`` (no shifts)."""
    yy, xx = np.mgrid[:n, :n]
    img = np.exp(-((xx - n / 2) ** 2 + (yy - n / 2) ** 2) / 20.0).astype(np.float32)
    return np.repeat(img[None], len(angles), axis=0) + 0.01


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]


def test_unusual_angles_and_regions_warn_once_each(caplog):
    import fastalign
    gap = np.r_[np.arange(-60.0, -10.0, 4.0), np.arange(20.0, 61.0, 4.0)]
    with caplog.at_level("WARNING", logger="fastalign.align"):
        fastalign.align(_blob_series(gap), gap, max_iter=1, levels=(1,), orient=False)
    msgs = _warnings(caplog)
    assert sum("gap of 32 deg between -12 and 20" in m for m in msgs) == 1, msgs
    caplog.clear()
    narrow = np.linspace(-10.0, 10.0, 11)
    with caplog.at_level("WARNING", logger="fastalign.align"):
        fastalign.align(_blob_series(narrow), narrow, max_iter=1, levels=(4, 1), nz=40,
                        orient=False)
    msgs = _warnings(caplog)
    assert any("span only 20 deg" in m for m in msgs), msgs
    assert any("coarsest level's images are 8 px wide" in m and "levels=" in m
               for m in msgs), msgs
    assert any("thicker (nz=40) than wide (32 px)" in m for m in msgs), msgs


def test_regular_series_gives_no_plausibility_warning(caplog):
    import fastalign
    angles = np.linspace(-60.0, 60.0, 31)
    with caplog.at_level("WARNING", logger="fastalign.align"):
        fastalign.align(_blob_series(angles), angles, max_iter=1, levels=(1,), orient=False)
    assert not [m for m in _warnings(caplog)
                if "gap" in m or "span only" in m or "coarsest" in m or "thicker" in m]


def test_angle_layout_rules():
    from fastalign._validate import angle_layout_warnings
    assert angle_layout_warnings(np.linspace(-60, 60, 61)) == []
    # a Saxton-like scheme (steps 1..2 deg) and a dose-symmetric order are regular
    saxton = np.cumsum(np.r_[-60.0, 2.0 * np.cos(np.deg2rad(np.linspace(-60, 60, 70)))])
    assert angle_layout_warnings(saxton) == []
    order = np.r_[0.0, 3.0, -3.0, 6.0, -6.0, 9.0, -9.0, 12.0, -12.0, 15.0, -15.0]
    assert angle_layout_warnings(order) == []
    # 4 tilts are not judged; a missing block of views is
    assert angle_layout_warnings([-60.0, 0.0, 30.0, 60.0]) == []
    assert len(angle_layout_warnings(np.r_[np.arange(-60.0, 0.0, 2.0), 30.0])) == 1
