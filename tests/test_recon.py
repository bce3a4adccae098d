"""SIRT and FBP: convergence on phantoms, amplitude, conventions, thread bit-identity, errors.

Measured levels (64 x 64 slices, 2 slices, noise-free data from the projector, the piecewise
constant phantom ``ELLIPSES`` below, 100 iterations, no mask, non-negative):

* full range 0..178 step 2: relative error ``||x - x_true|| / ||x_true||`` = 0.0532;
* missing wedge -60..60 step 2: 0.2149;
* both decrease at every iteration.

FBP of the analytic (exact line integrals) phantom at full range, 64 px: correlation 0.9956
(ramp), 0.9957 (Shepp-Logan), 0.9916 (Hann); mean over an interior region / phantom's =
1.0000, 0.9997, 1.0002.
"""
import numba
import numpy as np
import pytest

from fastalign import Projector, project
from fastalign.phantoms import ellipse_line_integrals, ellipses_2d
from fastalign.recon import SIRTSolver, circle_mask, fbp, filter_projections, sirt
from fastalign.recon.fbp import angular_weights, padded_length, ramp_filter
from fastalign.testing import run_with_threads

N = 64
FULL = np.arange(0.0, 180.0, 2.0)
WEDGE = np.arange(-60.0, 62.0, 2.0)
# (x0, z0, a, b, phi_deg, density): piecewise constant, values in [0, 1.8].
ELLIPSES = [(0, 0, 24, 16, 15, 1.0), (-8, 2, 6, 4, 0, -0.6), (8, -3, 5, 5, 0, 0.8),
            (2, 9, 8, 2, -30, 0.5), (-20, -16, 4, 4, 0, 1.0)]


def phantom_volume(n=N, ny=2):
    s = n / 64.0
    ell = [(x0 * s, z0 * s, a * s, b * s, phi, rho) for x0, z0, a, b, phi, rho in ELLIPSES]
    sl = ellipses_2d(n, ellipses=ell)
    return np.ascontiguousarray(np.repeat(sl[None], ny, axis=0)), ell


def rel_err(x, ref):
    return float(np.linalg.norm(x - ref) / np.linalg.norm(ref))


# --------------------------------------------------------------------------- SIRT accuracy
@pytest.mark.parametrize("angles, level", [(FULL, 0.0540), (WEDGE, 0.218)],
                         ids=["full", "wedge"])
def test_sirt_error_decreases_monotonically(angles, level):
    vol, _ = phantom_volume()
    b = project(vol, angles)
    errs = []
    res = sirt(b, angles, n_iter=100, return_result=True,
               callback=lambda k, x, info: errs.append(rel_err(x, vol)))
    errs = np.array(errs)
    assert res.n_iter == 100 and len(errs) == 100 and not res.stopped
    assert np.all(np.diff(errs) < 0), "relative error must fall at every iteration"
    assert errs[-1] < level
    # residual history is reported per iteration and falls too
    assert res.residuals.shape == (100,)
    assert np.all(np.diff(res.residuals) < 0)
    assert res.residuals[-1] < 0.02
    assert res.volume.dtype == np.float32 and res.volume.shape == vol.shape


def test_sirt_update_formula_one_iteration():
    """One iteration from zero equals ``C A^T R b`` computed with NumPy (R, C from A)."""
    rng = np.random.default_rng(3)
    A = Projector(WEDGE, (2, 24, 32), center_offset=0.7)
    b = A(rng.random(A.domain_shape).astype(np.float32))
    row = A(np.ones(A.domain_shape, np.float32)).astype(np.float64)
    col = A.T(np.ones(A.range_shape, np.float32)).astype(np.float64)
    R = np.where(row > 1e-6 * row.max(), 1.0 / np.where(row > 0, row, 1.0), 0.0)
    C = np.where(col > 1e-6 * col.max(), 1.0 / np.where(col > 0, col, 1.0), 0.0)
    expect = C * A.T((R * b).astype(np.float32))
    got = sirt(b, WEDGE, n_iter=1, nz=24, nonneg=False, center_offset=0.7)
    np.testing.assert_allclose(got, expect, rtol=2e-5, atol=2e-6 * np.abs(expect).max())


def test_sirt_mask_and_nonnegativity():
    vol, _ = phantom_volume(ny=2)
    b = project(vol, WEDGE)
    b_neg = b - 0.5 * b.mean()  # inconsistent data push some pixels negative
    x = sirt(b_neg, WEDGE, n_iter=5, mask=True)
    disc = circle_mask(N, N)
    assert np.all(x[:, ~disc] == 0.0)
    assert x.min() >= 0.0
    x_free = sirt(b_neg, WEDGE, n_iter=5, nonneg=False)
    assert x_free.min() < 0.0
    # a 3-D mask: one slice fully masked stays zero, the other is reconstructed
    m3 = np.ones(vol.shape, bool)
    m3[0] = False
    m3[0, 10:20, 10:20] = True
    x3 = sirt(b, WEDGE, n_iter=3, mask=m3)
    assert np.all(x3[~m3] == 0.0) and np.all(np.isfinite(x3))
    # a 2-D mask given as an array equals mask=True
    np.testing.assert_array_equal(sirt(b, WEDGE, n_iter=3, mask=disc),
                                  sirt(b, WEDGE, n_iter=3, mask="circle"))


def test_sirt_zero_safe_weights():
    """Rays that miss a tiny mask and pixels outside it get zero weights, no NaN/Inf."""
    A = Projector(FULL, (1, 32, 32))
    m = np.zeros((32, 32), bool)
    m[15:17, 15:17] = True
    s = SIRTSolver(A, mask=m)
    assert np.all(np.isfinite(s._R)) and np.all(np.isfinite(s._C))
    assert (s._R == 0).any() and (s._C == 0).any()
    x = s.run(np.ones(A.range_shape, np.float32), None, 3)
    assert np.all(np.isfinite(x)) and np.all(x[0][~m] == 0)
    zero = sirt(np.zeros(A.range_shape, np.float32), FULL, n_iter=2, return_result=True)
    assert np.all(zero.volume == 0) and np.all(zero.residuals == 0)


def test_sirt_narrow_detector_equals_zero_weight_padding():
    """A region wider than the field: SIRT on the field's detector (``n_det``, the loop's
    slab and padded regions) is SIRT on a detector as wide as the region whose extra
    columns have data weight 0 (float32 round-off apart), with per-ray weights too."""
    rng = np.random.default_rng(4)
    angles = np.arange(-60.0, 61.0, 5.0)
    ny, nz, nx, pad = 3, 12, 20, 9
    wide = Projector(angles, (ny, nz, nx + 2 * pad))
    narrow = Projector(angles, (ny, nz, nx + 2 * pad), n_det=nx)
    truth = rng.random(wide.domain_shape).astype(np.float32)
    b = narrow(truth)
    w = np.ones((len(angles), 1, nx + 2 * pad), np.float32)
    w[:, :, :pad] = w[:, :, -pad:] = 0.0
    b_wide = np.pad(b, ((0, 0), (0, 0), (pad, pad)))
    x_wide = SIRTSolver(wide, relax=1.9, data_weights=w).run(b_wide, None, 20)
    x_narrow = SIRTSolver(narrow, relax=1.9).run(b, None, 20)
    np.testing.assert_allclose(x_narrow, x_wide, rtol=0, atol=1e-4 * np.abs(x_wide).max())
    hard = (rng.random(narrow.range_shape) > 0.2).astype(np.float32)
    s_wide, s_narrow = SIRTSolver(wide, relax=1.9), SIRTSolver(narrow, relax=1.9)
    s_wide.set_data_weights(np.pad(hard, ((0, 0), (0, 0), (pad, pad))))
    s_narrow.set_data_weights(hard)
    np.testing.assert_allclose(s_narrow.run(b, None, 20), s_wide.run(b_wide, None, 20),
                               rtol=0, atol=1e-4 * np.abs(x_wide).max())
    assert np.abs(x_narrow - truth).max() < np.abs(truth).max()   # a reconstruction at all


def test_shared_slice_sums_are_reused_and_change_no_bit():
    """Inside ``shared_slice_sums`` solvers of one slice geometry (the final volume's row
    blocks) take the first solver's sums instead of projecting them again; the
    reconstructions are bit-identical to solvers set up alone."""
    import importlib
    sirt_mod = importlib.import_module("fastalign.recon.sirt")
    rng = np.random.default_rng(8)
    angles = np.arange(-60.0, 61.0, 6.0)
    b16 = rng.random((len(angles), 16, 24)).astype(np.float32)
    b5 = b16[:, :5].copy()
    alone = [SIRTSolver(Projector(angles, (b.shape[1], 10, 24)), relax=1.9).run(b, None, 4)
             for b in (b16, b5)]
    calls = []
    real = sirt_mod.Projector

    class Counting(real):
        def forward_into(self, x, out):
            calls.append(x.shape)
            return super().forward_into(x, out)

    with sirt_mod.shared_slice_sums():
        sirt_mod.Projector = Counting
        try:
            shared = [SIRTSolver(Projector(angles, (b.shape[1], 10, 24)), relax=1.9)
                      for b in (b16, b5)]
        finally:
            sirt_mod.Projector = real
        assert len(calls) == 1                       # the second solver projected nothing
        got = [s.run(b, None, 4) for s, b in zip(shared, (b16, b5))]
        # a detector of another width is another geometry: its own sums
        narrow = SIRTSolver(Projector(angles, (5, 10, 24), n_det=12), relax=1.9)
        assert narrow._R.shape[2] == 12
    assert sirt_mod._SUMS.get() is None              # dropped on leaving
    for g, a in zip(got, alone):
        assert np.array_equal(g.view(np.uint32), a.view(np.uint32))


def test_sirt_warm_start_and_solver_reuse():
    vol, _ = phantom_volume(ny=2)
    b = project(vol, WEDGE)
    A = Projector(WEDGE, vol.shape)
    ten = sirt(b, WEDGE, n_iter=10)
    # two runs of 5 with the same solver, through Ax=reprojection, are the same 10 iterations
    s = SIRTSolver(A)
    x = np.zeros(vol.shape, np.float32)
    assert s.run(b, x, 5) is x
    s.run(b, x, 5, Ax=s.reprojection)
    np.testing.assert_array_equal(x, ten)
    # reprojection is A x of the returned volume
    np.testing.assert_array_equal(s.reprojection, A(x))
    # functional warm start x0 (copied, not modified)
    x5 = sirt(b, WEDGE, n_iter=5)
    keep = x5.copy()
    np.testing.assert_array_equal(sirt(b, WEDGE, n_iter=5, x0=x5), ten)
    np.testing.assert_array_equal(x5, keep)
    # new data with the same solver == a fresh solver on the new data
    b2 = np.ascontiguousarray(np.roll(b, 1, axis=2))
    y1 = s.run(b2, x.copy(), 4)
    y2 = SIRTSolver(A).run(b2, x.copy(), 4)
    np.testing.assert_array_equal(y1, y2)
    assert s.result.n_iter == 4
    # n_iter=0 returns the (masked, clipped) start
    np.testing.assert_array_equal(sirt(b, WEDGE, n_iter=0), np.zeros(vol.shape, np.float32))


def test_sirt_callback_stop_iteration():
    vol, _ = phantom_volume(ny=1)
    b = project(vol, FULL)
    seen = []

    def cb(k, x, info):
        seen.append((k, info["residual"]))
        if k == 2:
            raise StopIteration

    res = sirt(b, FULL, n_iter=50, callback=cb, return_result=True)
    assert res.stopped and res.n_iter == 3 and [k for k, _ in seen] == [0, 1, 2]
    np.testing.assert_array_equal(res.residuals, [r for _, r in seen])
    np.testing.assert_array_equal(res.volume, sirt(b, FULL, n_iter=3))


# --------------------------------------------------------------------------- FBP
@pytest.mark.parametrize("filt, min_corr", [("ramp", 0.99), ("shepp-logan", 0.99),
                                            ("hann", 0.99)])
def test_fbp_analytic_phantom_full_range(filt, min_corr):
    _, ell = phantom_volume()
    u = np.arange(N) - 0.5 * (N - 1)
    sino = ellipse_line_integrals(ell, FULL, u).astype(np.float32)
    b = np.ascontiguousarray(np.repeat(sino[:, None, :], 2, axis=1))
    truth = ellipses_2d(N, ellipses=ell)
    x = fbp(b, FULL, filter=filt)
    assert x.shape == (2, N, N) and x.dtype == np.float32
    np.testing.assert_array_equal(x[0], x[1])
    corr = np.corrcoef(x[0].ravel(), truth.ravel())[0, 1]
    assert corr > min_corr
    # amplitude: the interior of the main ellipse has the phantom's value (<= 0.03 % measured)
    inner = ellipses_2d(N, ellipses=[(0, 0, 7, 4.5, 15, 1.0)]) > 0.999
    assert abs(x[0][inner].mean() / truth[inner].mean() - 1.0) < 0.005


def test_fbp_filter_matches_numpy_reference():
    """pyFFTW path == plain NumPy linear convolution with the Kak-Slaney kernel."""
    rng = np.random.default_rng(0)
    ang = np.array([-50.0, -10.0, 0.0, 35.0, 60.0])
    b = rng.standard_normal((5, 3, 37)).astype(np.float32)
    got = filter_projections(b, ang, "ramp")
    n = np.arange(-36, 37)
    h = np.where(n == 0, 0.25, np.where(n % 2 != 0, -1.0 / (np.pi * np.where(n == 0, 1, n)) ** 2,
                                        0.0))
    w = angular_weights(ang)
    ref = np.empty(b.shape)
    for a in range(5):
        for y in range(3):
            ref[a, y] = w[a] * np.convolve(b[a, y].astype(np.float64), h)[36:36 + 37]
    np.testing.assert_allclose(got, ref, rtol=0, atol=2e-6 * np.abs(ref).max())
    # the ramp's response is |f| up to the DC leakage of the truncated kernel
    H = ramp_filter(128)
    f = np.arange(65) / 128
    assert abs(H[-1] - 0.5) < 2e-3 and np.all(np.abs(H[8:] - f[8:]) < 2e-3)
    assert padded_length(37) >= 74


def test_angular_weights():
    np.testing.assert_allclose(angular_weights(FULL), np.full(90, np.pi / 90))
    w = angular_weights(WEDGE)
    np.testing.assert_allclose(w, np.full(61, np.deg2rad(2.0)))
    # order does not matter
    perm = np.random.default_rng(1).permutation(61)
    np.testing.assert_allclose(angular_weights(WEDGE[perm]), w[perm])


# --------------------------------------------------------------------------- threads
@pytest.mark.parametrize("ny", [1, 3])
def test_sirt_fbp_bit_identical_across_threads(ny):
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs 2 Numba threads")
    vol, _ = phantom_volume(n=40, ny=ny)
    b = project(vol, WEDGE)
    kw = dict(n_iter=4, mask=True, center_offset=0.3)
    s1 = run_with_threads(sirt, 1, b, WEDGE, **kw)
    s2 = run_with_threads(sirt, 2, b, WEDGE, **kw)
    np.testing.assert_array_equal(s1, s2)
    f1 = run_with_threads(fbp, 1, b, WEDGE)
    f2 = run_with_threads(fbp, 2, b, WEDGE)
    np.testing.assert_array_equal(f1, f2)


# --------------------------------------------------------------------------- errors
def test_bad_parameters_raise():
    b = np.zeros((len(FULL), 2, 16), np.float32)
    with pytest.raises(ValueError, match="n_iter"):
        sirt(b, FULL, n_iter=-1)
    with pytest.raises(TypeError, match="n_iter"):
        sirt(b, FULL, n_iter=2.5)
    with pytest.raises(ValueError, match="mask"):
        sirt(b, FULL, mask=np.ones((16, 15), bool))
    with pytest.raises(ValueError, match="mask"):
        sirt(b, FULL, mask="square")
    with pytest.raises(ValueError, match="mask"):
        sirt(b, FULL, mask=np.zeros((16, 16), bool))
    with pytest.raises(ValueError, match="x0"):
        sirt(b, FULL, x0=np.zeros((2, 16, 15), np.float32))
    with pytest.raises(ValueError, match="angles"):
        sirt(b, FULL[:-1])
    with pytest.raises(TypeError, match="callback"):
        sirt(b, FULL, callback=3)
    with pytest.raises(ValueError, match="filter"):
        fbp(b, FULL, filter="cosine")
    with pytest.raises(ValueError, match="NaN"):
        fbp(np.full_like(b, np.nan), FULL)
    A = Projector(FULL, (2, 16, 16))
    s = SIRTSolver(A)
    with pytest.raises(ValueError, match="shape"):
        s.run(np.zeros((len(FULL), 2, 15), np.float32))
    with pytest.raises(ValueError):
        s.run(b, np.zeros((2, 16, 16), np.float64))  # x must be a float32 buffer
    with pytest.raises(TypeError, match="Projector"):
        SIRTSolver("not a projector")
