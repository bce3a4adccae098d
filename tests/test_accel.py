"""Anderson acceleration and the slab loop's stop rule, without data."""
import numpy as np

from fastalign.align.accel import Anderson
from fastalign.align.loop import STALL_WINDOW, stalled


def _linear_map(n=40, seed=0):
    """``f(s) = -G (s - s*)``: a contraction whose gains span 0.02 .. 0.5 (slow, smooth modes
    of a slab are the small ones)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    gains = np.geomspace(0.02, 0.5, n)
    G = q @ np.diag(gains) @ q.T
    target = rng.standard_normal(n)
    return (lambda s: -G @ (s - target)), target


def test_anderson_converges_where_plain_iterations_crawl():
    f, target = _linear_map()
    s_plain = np.zeros_like(target)
    for _ in range(30):
        s_plain = s_plain + f(s_plain)
    acc = Anderson(memory=5)
    s = np.zeros_like(target)
    for _ in range(30):
        s = acc.step(s, f(s))
    err_plain = np.abs(s_plain - target).max()
    err_aa = np.abs(s - target).max()
    print(f"\n[anderson] 30 steps: plain {err_plain:.3g}, Anderson {err_aa:.3g}")
    assert err_plain > 0.1           # the smallest gain (0.02) leaves most of its error
    assert err_aa < 1e-2 * err_plain    # measured 0.00067 vs 0.84
    assert acc.n_safeguarded == 0


def test_anderson_first_step_is_plain_and_shapes_are_kept():
    acc = Anderson()
    s = np.zeros((5, 2))
    f = np.ones((5, 2))
    assert np.array_equal(acc.step(s, f), s + f)


def test_anderson_safeguard_falls_back_to_the_plain_step():
    acc = Anderson(memory=3, max_ratio=2.0)
    s0, s1 = np.zeros(3), np.array([1.0, 0.0, 0.0])
    acc.step(s0, np.array([1.0, 0.0, 0.0]))
    # nearly the same update again: the secant model extrapolates far
    nxt = acc.step(s1, np.array([0.999, 0.0, 0.0]))
    assert acc.n_safeguarded == 1
    assert np.allclose(nxt, s1 + np.array([0.999, 0.0, 0.0]))


def test_stalled_needs_a_plateau_near_tol():
    tol = 5e-4
    decreasing = list(np.geomspace(0.02, 6e-4, 12))
    assert not stalled(decreasing, tol)
    plateau = [0.02, 0.01, 0.005, 0.003, 0.002, 0.0018] + [0.0017, 0.0018, 0.0017, 0.0019]
    assert stalled(plateau, tol)
    high = [0.2, 0.1, 0.08, 0.07] + [0.07] * STALL_WINDOW
    assert not stalled(high, tol)         # a plateau far above tol is not convergence
    assert not stalled(plateau[:2 * STALL_WINDOW - 1], tol)
