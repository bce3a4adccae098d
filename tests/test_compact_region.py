"""The loop region of a compact object much smaller than the field
(:func:`fastalign.align.specimen.compact_region`): found from the data, cropped only when
safe, and giving the uncropped run's accuracy with the full-field volume."""
import numpy as np

import fastalign
from fastalign.align.gauge import gauge_error
from fastalign.align.specimen import compact_region
from fastalign.phantoms import particles_3d

ANGLES = np.linspace(-60.0, 60.0, 31)


def _box_profiles(nx, half, dx, level=1.0, film=0.0):
    """Column sums of an object whose shadow is ``|u| <= half`` about the detector centre,
    moved by ``dx`` per tilt, over a background of 5 (plus a ``film`` level everywhere but
    the outermost columns)."""
    u = np.arange(nx) - 0.5 * (nx - 1)
    p = np.full((dx.size, nx), 5.0)
    for i, d in enumerate(dx):
        p[i] += level * (np.abs(u - d) <= half)
        p[i, 2:-2] += film
    return p


def test_region_is_the_shadow_of_the_object():
    dx = np.random.default_rng(0).uniform(-6, 6, ANGLES.size)
    p = _box_profiles(128, 10.0, dx)
    crop_x, crop_z, radius = compact_region(p, dx, 0.0, ANGLES, 128, multiple=4)
    assert abs(radius - 10.5) < 0.6           # the outermost shadow columns, edges included
    assert crop_x % 4 == 0 and crop_z % 4 == 0
    # the region holds the object with the margins: |x| <= R', |z| <= R' / sin 60
    r = 1.1 * radius + 6.0
    assert r <= 64 - crop_x < r + 4
    assert r / np.sin(np.deg2rad(60.0)) <= 64 - crop_z < r / np.sin(np.deg2rad(60.0)) + 4
    # a dark object on a bright background, and noise at 5 % of the object's level
    noisy = _box_profiles(128, 10.0, dx, level=-1.0)
    noisy += np.random.default_rng(1).normal(0, 0.05, noisy.shape)
    assert abs(compact_region(noisy, dx, 0.0, ANGLES, 128, multiple=4)[2] - radius) < 1.0
    # over 0..178 the object's strips bound it to the disc: the same extent in x and z
    full = np.arange(0.0, 180.0, 2.0)
    pf = _box_profiles(128, 10.0, np.zeros(full.size))
    cx, cz, _ = compact_region(pf, np.zeros(full.size), 0.0, full, 128, multiple=4)
    assert cz == cx > 0
    # the shifts are taken out: ignoring them puts the shadows wider
    assert compact_region(p, np.zeros_like(dx), 0.0, ANGLES, 128, 4)[2] > radius + 3


def test_no_crop_when_unsafe_or_not_worth_it():
    dx = np.zeros(ANGLES.size)
    # an object nearly as wide as the field
    assert compact_region(_box_profiles(128, 50.0, dx), dx, 0.0, ANGLES, 128) is None
    # faint material beyond the object (a support film: 1 % of its level)
    assert compact_region(_box_profiles(128, 10.0, dx), dx, 0.0, ANGLES, 128) is not None
    assert compact_region(_box_profiles(128, 10.0, dx, film=0.01), dx, 0.0, ANGLES,
                          128) is None
    # a tilt without mass
    p = _box_profiles(128, 10.0, dx)
    p[3] = 5.0
    assert compact_region(p, dx, 0.0, ANGLES, 128) is None


def _small_object_series():
    vol = np.zeros((32, 96, 96), np.float32)
    vol[4:28, 32:64, 32:64] = particles_3d((24, 32, 32), n_particles=8, seed=3)
    angles = np.linspace(-66, 66, 45)
    true = np.random.default_rng(7).uniform(-4, 4, (angles.size, 2))
    return fastalign.fourier_shift(fastalign.project(vol, angles), true), angles, true


def test_small_object_aligns_in_its_region():
    # 32 x 32 particles in a 96 px field, default options: the loop reconstructs 40 x 44
    # of 96 x 96 (x, z).  Measured 0.0074 / 0.0030 px; with the region set by the user
    # (nz=96: no crop) 0.0088 / 0.0015 px.  The volume is the full field, warm-started from
    # the loop's region put back in it: its reprojection explains the aligned data (0.066;
    # the uncropped run's 0.099).
    data, angles, true = _small_object_series()
    r = fastalign.align(data, angles)
    region = r.options["specimen"]["region"]
    assert region["nx"] < 48 and region["nz"] < 48
    ex, ey = gauge_error(r.shifts, true, angles)
    assert ex <= 0.012 and ey <= 0.012
    assert r.volume.shape == (32, 96, 96)
    res = np.linalg.norm(fastalign.project(r.volume, angles) - r.aligned) / np.linalg.norm(
        r.aligned)
    assert res < 0.09
    # a region the user chose (nz) is kept
    assert "region" not in fastalign.align(data, angles, nz=96, max_iter=1,
                                           levels=[1]).options["specimen"]


def test_cli_summary_states_the_region(capsys):
    from types import SimpleNamespace

    from fastalign.cli.outputs import align_done
    spec = dict(kind="compact", edge_fraction=0.0, region=dict(radius_px=47.2, nx=120, nz=120))
    result = SimpleNamespace(method="sirt", converged=True, n_iter=16,
                             options=dict(specimen=spec), tilt_offset_deg=0.0,
                             axis_angle_deg=0.0, median_uncertainty=lambda: 0.003)
    align_done(SimpleNamespace(quiet=False), result, {"volume": "v.rec"}, "out")
    assert ("specimen compact: the loop reconstructs its 120 x 120 px region (x, z; radius "
            "47.2 px)") in capsys.readouterr().out
