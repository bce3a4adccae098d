"""Joseph projector: adjointness, reference agreement, analytic line integrals, sign
conventions, thread invariance and the ``out=`` contract."""
import numba
import numpy as np
import pytest

import reference as ref
from fastalign import Projector, backproject, project
from fastalign.phantoms import ellipse_line_integrals, ellipses_2d
from fastalign.testing import adjoint_test, run_with_threads

FULL = np.arange(0.0, 180.0, 2.0)
WEDGE = np.arange(-60.0, 61.0, 2.0)
UNSORTED = np.array([30.0, -45.0, 90.0, 12.5, 0.0, 135.0, -89.7, 44.9, 45.0, 60.0, 179.0,
                     -10.0, 100.0, 91.0])
# Includes x-major angles (|sin| > |cos|) and the 45-degree tie.
MIXED = np.concatenate([np.arange(-70.0, 71.0, 7.0), [45.0, 90.0, 135.0, 100.0]])

TWO_THREADS = numba.config.NUMBA_NUM_THREADS >= 2
needs_two_threads = pytest.mark.skipif(not TWO_THREADS, reason="needs 2 Numba threads")
ADJ_TOL = 1e-5


# The kernels work on blocks of kernels.projector.LANES (16) slices: parallel over blocks when
# there are at least as many blocks as threads, else within each block (over angles for the
# forward, chunks of output lines for the transpose).  With 2 threads ny <= 16 takes the
# within-block path, with 1 thread the block path.
PATH_THREADS = 2 if TWO_THREADS else 1


def _bits(a):
    return np.ascontiguousarray(a).view(np.uint32)


# --------------------------------------------------------------------------- adjointness

ADJOINT_CASES = [
    # (nz, nx), angles, center_offset
    pytest.param((32, 32), FULL, 0.0, id="even-full"),
    pytest.param((33, 33), FULL, 0.0, id="odd-full"),
    pytest.param((32, 32), WEDGE, 0.0, id="even-wedge"),
    pytest.param((33, 33), WEDGE, 0.0, id="odd-wedge"),
    pytest.param((24, 40), FULL, 0.0, id="nz<nx-full"),
    pytest.param((41, 18), WEDGE, 0.0, id="nz>nx-wedge"),
    pytest.param((25, 31), UNSORTED, 0.0, id="unsorted"),
    pytest.param((32, 33), FULL, 3.25, id="offset+3.25"),
    pytest.param((17, 30), UNSORTED, -7.5, id="offset-7.5-unsorted"),
    pytest.param((1, 16), FULL, 0.0, id="nz=1"),
    pytest.param((20, 1), FULL, 0.0, id="nx=1"),
    pytest.param((9, 9), np.array([37.0]), 0.5, id="one-angle"),
]


@pytest.mark.parametrize("ny", [1, 5])
@pytest.mark.parametrize("size, angles, offset", ADJOINT_CASES)
def test_adjoint(size, angles, offset, ny):
    nz, nx = size
    A = Projector(angles, (ny, nz, nx), offset)
    err = run_with_threads(adjoint_test, PATH_THREADS, A, A.domain_shape,
                           A.range_shape, seed=ny)
    assert err <= ADJ_TOL, f"normalised adjoint error {err:.3e}"


def test_adjoint_test_detects_a_wrong_transpose():
    """The helper and the tolerance must flag near-transposes: a 1 % scale error, a
    half-pixel detector shift."""
    A = Projector(FULL, (1, 16, 16))

    class Bad:
        def __init__(self, T):
            self.T = T

        def __call__(self, x):
            return A(x)

        def norm(self):
            return A.norm()

    scaled = Bad(lambda y: 1.01 * A.T(y))
    shifted = Bad(Projector(FULL, (1, 16, 16), center_offset=0.5).T)
    for seed in range(3):
        assert adjoint_test(scaled, A.domain_shape, A.range_shape, seed) > ADJ_TOL
        assert adjoint_test(shifted, A.domain_shape, A.range_shape, seed) > 10 * ADJ_TOL

    class NoNorm:  # without A.norm() the helper estimates the norm by power iteration
        T = A.T

        def __call__(self, x):
            return A(x)

    assert adjoint_test(NoNorm(), A.domain_shape, A.range_shape) <= ADJ_TOL


def test_norm_matches_largest_singular_value():
    angles = [0.0, 20.0, 45.0, 70.0, 90.0, 120.0, 160.0]
    A = Projector(angles, (3, 10, 12), 1.5)
    M = ref.system_matrix(10, 12, angles, 1.5)
    assert A.norm() == pytest.approx(np.linalg.norm(M, 2), rel=1e-3)


# --------------------------------------------------------------------------- reference

REF_CASES = [
    pytest.param((7, 9), [0.0, 10.0, 30.0, 45.0, 60.0, 90.0, 120.0, 135.0, 150.0, 179.0], 0.0,
                 id="odd"),
    pytest.param((8, 6), [-60.0, -45.0, -30.0, 0.0, 30.0, 45.0, 60.0], 1.75, id="even-offset"),
    pytest.param((9, 10), [135.0, 44.9, 90.0, 0.0, -89.7, 12.5, 270.0], -2.5,
                 id="unsorted-offset"),
    pytest.param((1, 5), [0.0, 45.0, 90.0, 123.0], 0.0, id="nz=1"),
]


@pytest.mark.parametrize("ny", [1, 5])
@pytest.mark.parametrize("size, angles, offset", REF_CASES)
def test_forward_matches_reference(size, angles, offset, ny):
    nz, nx = size
    rng = np.random.default_rng(1)
    x = rng.standard_normal((ny, nz, nx)).astype(np.float32)
    A = Projector(angles, (ny, nz, nx), offset)
    got = run_with_threads(A, PATH_THREADS, x)
    want = np.stack([ref.forward_slice(x[k], angles, offset) for k in range(ny)], axis=1)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * np.abs(want).max())


@pytest.mark.parametrize("ny", [1, 5])
@pytest.mark.parametrize("size, angles, offset", REF_CASES)
def test_transpose_matches_reference(size, angles, offset, ny):
    nz, nx = size
    rng = np.random.default_rng(2)
    y = rng.standard_normal((len(angles), ny, nx)).astype(np.float32)
    A = Projector(angles, (ny, nz, nx), offset)
    got = run_with_threads(A.T, PATH_THREADS, y)
    want = np.stack([ref.back_slice(y[:, k], angles, nz, offset) for k in range(ny)])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * np.abs(want).max())


def test_functional_wrappers_match_operator():
    rng = np.random.default_rng(3)
    x = rng.random((2, 12, 14)).astype(np.float32)
    A = Projector(WEDGE, x.shape, 0.75)
    y = project(x, WEDGE, center_offset=0.75)
    assert np.array_equal(y, A(x))
    assert np.array_equal(backproject(y, WEDGE, nz=12, center_offset=0.75), A.T(y))
    # nz defaults to nx
    assert backproject(y, WEDGE).shape == (2, 14, 14)


# --------------------------------------------------------------------------- analytic

LINE_CASES = [
    # n, nz, ellipse (x0, z0, a, b, phi_deg, density), centre offset
    pytest.param(160, 160, (0.0, 0.0, 60.0, 60.0, 0.0, 1.0), 0.0, id="disc-r60"),
    pytest.param(160, 120, (10.0, -15.0, 50.0, 30.0, 30.0, 1.0), 2.5, id="ellipse-off-centre"),
    pytest.param(160, 160, (5.0, -8.0, 60.0, 40.0, -25.0, 2.0), -3.0, id="ellipse-rotated"),
]


@pytest.mark.parametrize("n, nz, ellipse, offset", LINE_CASES)
def test_line_integrals_match_analytic(n, nz, ellipse, offset):
    angles = np.array([0.0, 37.0, 45.0, 90.0, 135.0, 160.0, -70.0])
    img = ellipses_2d(n, nz, [ellipse])
    p = project(img[None], angles, center_offset=offset)[:, 0].astype(np.float64)
    u = np.arange(n) - ((n - 1) / 2 + offset)
    exact = ellipse_line_integrals([ellipse], angles, u)
    # Rays well inside the ellipse: |d| < 0.9 of the projected half-width.
    x0, z0, a, b, phi, _ = ellipse
    th = np.deg2rad(angles)
    half = np.hypot(a * np.cos(th - np.deg2rad(phi)), b * np.sin(th - np.deg2rad(phi)))
    d = u[None, :] - (x0 * np.cos(th) + z0 * np.sin(th))[:, None]
    inner = np.abs(d) < 0.9 * half[:, None]
    rel = np.abs(p - exact)[inner] / exact[inner]
    assert inner.sum() > 0.5 * inner.size * (2 * 0.9 * min(a, b) / n)
    assert rel.max() < 0.01, f"max relative line-integral error {rel.max():.4f}"
    # Outside the object (beyond the half-width plus the interpolation kernel) it is zero.
    outside = np.abs(d) > half[:, None] + 2.0
    assert np.all(p[outside] == 0.0)


# --------------------------------------------------------------------------- conventions

@pytest.mark.parametrize("offset", [0.0, 3.0])
def test_off_centre_pixel_traces_the_sinusoid(offset):
    n = 65
    c = (n - 1) / 2
    angles = np.arange(-90.0, 90.0, 1.0)
    t = np.arange(n)
    for x0, z0 in [(20, 0), (0, 20), (-13, 7)]:
        v = np.zeros((1, n, n), np.float32)
        v[0, int(c + z0), int(c + x0)] = 1.0
        p = project(v, angles, center_offset=offset)[:, 0]
        expect = x0 * np.cos(np.deg2rad(angles)) + z0 * np.sin(np.deg2rad(angles)) + c + offset
        centroid = (p * t).sum(1) / p.sum(1)
        np.testing.assert_array_less(np.abs(centroid - expect), 0.35)
        np.testing.assert_array_less(np.abs(p.argmax(1) - expect), 0.5 + 1e-9)


def test_sign_and_phase_pinned():
    """x=+20 peaks at +20 at 0 deg and at the centre at 90; z=+20 peaks at +20 at 90 deg."""
    n = 65
    c = (n - 1) // 2
    offset = 2.0
    angles = [0.0, 90.0]
    vx = np.zeros((1, n, n), np.float32)
    vx[0, c, c + 20] = 1.0  # x = +20, z = 0
    vz = np.zeros((1, n, n), np.float32)
    vz[0, c + 20, c] = 1.0  # x = 0, z = +20
    px = project(vx, angles, center_offset=offset)[:, 0]
    pz = project(vz, angles, center_offset=offset)[:, 0]
    cb = c + int(offset)
    assert px[0].argmax() == cb + 20 and px[0, cb + 20] == pytest.approx(1.0)
    assert px[1].argmax() == cb and px[1, cb] == pytest.approx(1.0)
    assert pz[0].argmax() == cb
    assert pz[1].argmax() == cb + 20 and pz[1, cb + 20] == pytest.approx(1.0)
    # Backprojection of a detector spike puts mass along the same ray.
    y = np.zeros((2, 1, n), np.float32)
    y[0, 0, cb + 20] = 1.0
    b = backproject(y, angles, center_offset=offset)
    assert np.all(b[0][:, c + 20] > 0) and b[0].sum() == pytest.approx(b[0][:, c + 20].sum())


def test_angle_periodicity():
    """theta + 180 mirrors the detector about the rotation centre."""
    rng = np.random.default_rng(4)
    x = rng.random((1, 20, 21)).astype(np.float32)
    a = np.array([0.0, 30.0, 75.0, 120.0])
    p = project(x, a)
    q = project(x, a + 180.0)
    np.testing.assert_allclose(q, p[:, :, ::-1], atol=1e-5 * np.abs(p).max())


# --------------------------------------------------------------------------- detector width

# (nz, nx), n_det, angles, centre offset: a region wider than the detector (a slab's, whose
# oblique rays cross columns outside the field) and a detector wider than the volume
DET_CASES = [
    pytest.param((7, 15), 8, MIXED, 0.0, id="narrow-even"),
    pytest.param((6, 20), 9, WEDGE, 1.5, id="narrow-odd-offset"),
    pytest.param((5, 6), 11, UNSORTED, -0.75, id="wide"),
]


@pytest.mark.parametrize("ny", [1, 5, 19])
@pytest.mark.parametrize("size, n_det, angles, offset", DET_CASES)
def test_detector_width_adjoint_and_reference(size, n_det, angles, offset, ny):
    """``n_det`` detector bins centred on a volume of another width: the forward matches
    the slow reference ray by ray, the transpose its explicit matrix, the pair is adjoint
    and bit-identical for 1 and 2 threads."""
    nz, nx = size
    A = Projector(angles, (ny, nz, nx), offset, n_det=n_det)
    assert A.range_shape == (len(angles), ny, n_det)
    assert adjoint_test(A, A.domain_shape, A.range_shape, seed=ny) <= ADJ_TOL
    rng = np.random.default_rng(ny)
    x = rng.standard_normal(A.domain_shape).astype(np.float32)
    y = rng.standard_normal(A.range_shape).astype(np.float32)
    got_f, got_b = run_with_threads(A, PATH_THREADS, x), run_with_threads(A.T, PATH_THREADS, y)
    for k in (0, ny - 1):
        want_f = ref.forward_slice(x[k], angles, offset, nb=n_det)
        want_b = ref.back_slice(y[:, k], angles, nz, offset, nx=nx)
        np.testing.assert_allclose(got_f[:, k], want_f, rtol=0,
                                   atol=1e-6 * np.abs(want_f).max())
        np.testing.assert_allclose(got_b[k], want_b, rtol=0, atol=1e-6 * np.abs(want_b).max())
    if TWO_THREADS:
        assert np.array_equal(_bits(run_with_threads(A, 1, x)), _bits(got_f))
        assert np.array_equal(_bits(run_with_threads(A.T, 1, y)), _bits(got_b))


def test_narrow_detector_is_the_middle_of_the_full_one():
    """The rays of a narrow detector are the middle rays of the detector as wide as the
    volume (same line integrals to float32 round-off); the transpose of data that are zero
    outside the middle is the same volume."""
    rng = np.random.default_rng(3)
    nx, n_det = 40, 16
    pad = (nx - n_det) // 2
    wide = Projector(MIXED, (3, 9, nx), 0.5)
    narrow = Projector(MIXED, (3, 9, nx), 0.5, n_det=n_det)
    x = rng.standard_normal(wide.domain_shape).astype(np.float32)
    np.testing.assert_allclose(narrow(x), wide(x)[:, :, pad:pad + n_det], rtol=0, atol=2e-5)
    y = rng.standard_normal(narrow.range_shape).astype(np.float32)
    y_full = np.zeros(wide.range_shape, np.float32)
    y_full[:, :, pad:pad + n_det] = y
    np.testing.assert_allclose(narrow.T(y), wide.T(y_full), rtol=0, atol=2e-5)
    assert narrow.geometry != wide.geometry and "n_det=16" in repr(narrow.geometry)
    with pytest.raises(ValueError, match="n_det"):
        Projector(MIXED, (3, 9, nx), n_det=0)


# --------------------------------------------------------------------------- threads

@needs_two_threads
@pytest.mark.parametrize("ny", [1, 6, 16])
@pytest.mark.parametrize("angles", [pytest.param(MIXED, id="mixed"),
                                    pytest.param(np.array([60.0, 90.0, 120.0]),
                                                 id="x-major-only")])
def test_bit_identical_across_thread_counts(ny, angles):
    rng = np.random.default_rng(5)
    A = Projector(angles, (ny, 23, 26), 1.25)
    x = rng.standard_normal(A.domain_shape).astype(np.float32)
    y = rng.standard_normal(A.range_shape).astype(np.float32)
    f1 = run_with_threads(A, 1, x)
    f2 = run_with_threads(A, 2, x)
    b1 = run_with_threads(A.T, 1, y)
    b2 = run_with_threads(A.T, 2, y)
    assert np.array_equal(_bits(f1), _bits(f2))
    assert np.array_equal(_bits(b1), _bits(b2))


@pytest.mark.parametrize("angles", [pytest.param(MIXED, id="mixed"),
                                    pytest.param(np.array([60.0, 90.0, 120.0]),
                                                 id="x-major-only"),
                                    pytest.param(np.array([0.0, 10.0, 170.0]),
                                                 id="z-major-only")])
def test_slices_in_blocks_match_single_slices(angles):
    """The kernels process blocks of ``LANES`` slices together (full blocks accumulate in
    the output, the last partial block in scratch memory) on two schedules (parallel over
    blocks, or within a block).  Every slice must come out bit-identical to projecting that
    slice alone, on both schedules."""
    from fastalign.kernels import projector as kp
    ny = 2 * kp.LANES + 3  # two full blocks and a partial one
    rng = np.random.default_rng(9)
    A = Projector(angles, (ny, 19, 21), -0.75)
    A1 = Projector(angles, (1, 19, 21), -0.75)
    x = rng.standard_normal(A.domain_shape).astype(np.float32)
    y = rng.standard_normal(A.range_shape).astype(np.float32)
    want_f = np.concatenate([A1(x[k:k + 1]) for k in range(ny)], axis=1)
    want_b = np.concatenate([A1.T(y[:, k:k + 1]) for k in range(ny)], axis=0)
    args = (A._cos, A._sin, A._wts, A._zlist, A._xlist, A.geometry.detector_center)
    for fwd, back in [(kp.forward_blocks, kp.back_blocks), (kp.forward_within, kp.back_within)]:
        f = np.full(A.range_shape, np.nan, np.float32)
        b = np.full(A.domain_shape, np.nan, np.float32)
        fwd(x, *args, f)
        back(y, *args, b)
        assert np.array_equal(_bits(f), _bits(want_f)), fwd.__name__
        assert np.array_equal(_bits(b), _bits(want_b)), back.__name__
    want = np.stack([ref.forward_slice(x[k], angles, -0.75) for k in (0, 17, ny - 1)], axis=1)
    got = A(x)[:, [0, 17, ny - 1]]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * np.abs(want).max())


def test_run_with_threads_restores_count():
    before = numba.get_num_threads()
    assert run_with_threads(numba.get_num_threads, 1) == 1
    assert numba.get_num_threads() == before
    with pytest.raises(ZeroDivisionError):
        run_with_threads(lambda: 1 / 0, 1)
    assert numba.get_num_threads() == before


# --------------------------------------------------------------------------- out= contract

@pytest.mark.parametrize("ny", [1, 4])
def test_out_argument(ny):
    rng = np.random.default_rng(6)
    A = Projector(MIXED, (ny, 10, 12), 0.5)
    x = rng.random(A.domain_shape).astype(np.float32)
    y = rng.random(A.range_shape).astype(np.float32)
    x0, y0 = x.copy(), y.copy()

    out = np.full(A.range_shape, np.nan, np.float32)
    r = A(x, out=out)
    assert r is out
    assert np.array_equal(out, A(x))
    assert np.array_equal(x, x0)

    outb = np.full(A.domain_shape, np.nan, np.float32)
    r = A.T(y, out=outb)
    assert r is outb
    assert np.array_equal(outb, A.T(y))
    assert np.array_equal(y, y0)


def test_out_wrong_shape_or_dtype_raises():
    A = Projector(WEDGE, (2, 8, 9))
    x = np.ones(A.domain_shape, np.float32)
    y = np.ones(A.range_shape, np.float32)
    bad_outs = [
        np.empty((A.range_shape[0] + 1,) + A.range_shape[1:], np.float32),
        np.empty(A.range_shape, np.float64),
        np.empty(A.range_shape[::-1], np.float32).T,  # right shape, not C-contiguous
        np.empty(A.range_shape, np.float32).tolist(),
    ]
    for bad in bad_outs:
        with pytest.raises((ValueError, TypeError), match="out"):
            A(x, out=bad)
    ro = np.empty(A.range_shape, np.float32)
    ro.setflags(write=False)
    with pytest.raises(ValueError, match="out"):
        A(x, out=ro)
    with pytest.raises(ValueError, match="out"):
        A.T(y, out=np.empty(A.domain_shape, np.int32))
    with pytest.raises(ValueError, match="out"):
        A.T(y, out=np.empty(A.range_shape, np.float32))


def test_out_aliasing_the_input_is_rejected():
    """When the volume and data shapes coincide, ``out=x`` would overwrite the input while
    it is being read: it must raise rather than return a silently wrong result."""
    rng = np.random.default_rng(8)
    A = Projector([0.0, 45.0, 90.0, 135.0], (4, 4, 6))
    assert A.domain_shape == A.range_shape
    x = rng.random(A.domain_shape).astype(np.float32)
    want_f, want_b = A(x), A.T(x)
    for op, want in [(A, want_f), (A.T, want_b)]:
        buf = x.copy()
        try:
            got = op(buf, out=buf)
        except ValueError as exc:
            assert "out" in str(exc)
        else:
            np.testing.assert_array_equal(got, want, err_msg="out= aliasing the input "
                                          "returned a wrong result instead of raising")


def test_integer_float64_and_readonly_inputs():
    rng = np.random.default_rng(7)
    A = Projector(MIXED, (2, 9, 11), -1.0)
    xi = rng.integers(0, 5, A.domain_shape)
    xf = xi.astype(np.float32)
    want = A(xf)
    assert A(xi).dtype == np.float32
    assert np.array_equal(A(xi), want)
    assert np.array_equal(A(xi.astype(np.float64)), want)
    assert np.array_equal(A(xf.astype(np.float64).tolist()), want)
    assert np.array_equal(A(np.asfortranarray(xf)), want)
    xr = xf.copy()
    xr.setflags(write=False)
    assert np.array_equal(A(xr), want)
    yi = rng.integers(-3, 3, A.range_shape)
    assert np.array_equal(A.T(yi), A.T(yi.astype(np.float32)))
    assert np.array_equal(A.T(yi.astype(np.float64)), A.T(yi.astype(np.float32)))
