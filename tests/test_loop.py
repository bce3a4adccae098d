"""The outer-loop controller on scalars alone: jump, stop, history, hold-y and axis-step
decisions without any data, projector or executor (fastalign.align.loop)."""
import numpy as np
import pytest

from fastalign.align.levels import plan_levels
from fastalign.align.loop import (LoopController, aitken_jump, run_levels, tail_factor,
                                  update_ratio)
from fastalign.align.options import AlignOptions
from fastalign.geometry import TiltGeometry

ANGLES = np.linspace(-60.0, 60.0, 7)


def _controller(levels=(2, 1), **kw):
    hold_y = kw.pop("hold_y", False)
    opts = AlignOptions(levels=levels, max_iter=kw.pop("max_iter", 6), coarse_iter=3,
                        n_inner=4, tol=kw.pop("tol", 0.002), **kw).resolved(16, 32)
    geom = TiltGeometry(ANGLES, (16, 32, 32))
    plan = plan_levels(geom, opts)
    ctl = LoopController(opts, ANGLES, np.zeros((ANGLES.size, 2)), (16, 32),
                         hold_y=hold_y)
    return ctl, plan


def _gauge_free(n, scale, seed=0):
    """An update (binned px) with no gauge part: orthogonal to cos, sin (x) and 1 (y)."""
    rng = np.random.default_rng(seed)
    u = rng.standard_normal((n, 2))
    th = np.deg2rad(ANGLES)
    M = np.stack([np.cos(th), np.sin(th)], axis=1)
    u[:, 0] -= M @ np.linalg.lstsq(M, u[:, 0], rcond=None)[0]
    u[:, 1] -= u[:, 1].mean()
    return u * scale


def test_scalar_helpers():
    u = np.ones((4, 2))
    assert update_ratio(u, None) == 0.0
    assert update_ratio(0.5 * u, u) == pytest.approx(0.5)
    assert aitken_jump(0.5 * u, u) == pytest.approx(1.0)      # rho / (1 - rho)
    assert aitken_jump(0.1 * u, u) == 0.0                     # too fast: no jump
    assert aitken_jump(-0.5 * u, u) == 0.0                    # not parallel
    assert aitken_jump(0.96 * u, u) == 10.0                   # capped
    assert tail_factor(0.5) == pytest.approx(2.0) and tail_factor(-1) == 1.0
    assert tail_factor(0.99) == pytest.approx(20.0)


def test_inner_iterations_and_levels():
    ctl, plan = _controller()
    assert [lv.f for lv in plan] == [2, 1] and [lv.final for lv in plan] == [False, True]
    assert plan[0].tol == pytest.approx(0.02) and plan[1].tol == 0.002
    assert [lv.n_outer for lv in plan] == [3, 6]
    ctl.begin_level(plan[0])
    assert [ctl.inner_iterations(i) for i in range(3)] == [12, 4, 4]
    ctl.end_level()
    ctl.begin_level(plan[1])
    assert ctl.inner_iterations(0) == 4  # warm-started level: no triple start
    assert ctl.recon_its == 4


def test_jump_after_three_geometric_updates_and_history():
    ctl, plan = _controller(levels=(1,), tol=0.0)
    ctl.begin_level(plan[0])
    u0 = _gauge_free(ANGLES.size, 1.0)
    jumps = []
    for it in range(6):
        ctl.inner_iterations(it)
        upd = u0 * 0.5 ** it
        assert ctl.add_update(upd) is False      # no axis refinement: never rotates
        jumps.append(ctl.jump_factor())
        assert ctl.finish_iteration(residual=0.1 / (it + 1)) is False
    # the first jump waits for a previous update and three iterations since the start
    assert jumps[:3] == [0.0, 0.0, 0.0] and jumps[3] == pytest.approx(1.0)
    assert jumps[4:] == [0.0, 0.0]                # three more iterations after a jump
    h = ctl.history
    assert [e["iteration"] for e in h] == list(range(1, 7))
    assert all(e["level"] == 1 for e in h)
    np.testing.assert_allclose([e["max_update"] for e in h],
                               [np.abs(u0).max() * 0.5 ** i for i in range(6)], rtol=1e-12)
    assert [e["residual"] for e in h] == [0.1 / (i + 1) for i in range(6)]
    # the totals: the sum of updates plus the jump along the fourth one
    expect = sum(u0 * 0.5 ** i for i in range(6)) + u0 * 0.5 ** 3 * 1.0
    np.testing.assert_allclose(ctl.total, expect, rtol=1e-12)


def test_stop_decision_counts_the_geometric_tail():
    ctl, plan = _controller(levels=(1,), tol=0.01, extrapolate=False)
    ctl.begin_level(plan[0])
    u0 = _gauge_free(ANGLES.size, 1.0)
    u0 *= 0.008 / np.abs(u0).max()
    stops = []
    for it in range(4):
        ctl.inner_iterations(it)
        ctl.add_update(u0 * 0.9 ** it)
        ctl.jump_factor()
        stops.append(ctl.finish_iteration(0.1))
        if stops[-1]:
            break
    # 0.008 < tol on the first iteration (no ratio yet); later ones shrink by 0.9: the tail
    # bound (x 10) keeps the loop going
    assert stops == [True] and ctl.converged


def test_gauge_part_is_not_an_update():
    ctl, plan = _controller(levels=(1,), tol=1e-6)
    ctl.begin_level(plan[0])
    th = np.deg2rad(ANGLES)
    upd = np.stack([3 * np.cos(th) - 2 * np.sin(th), np.full(th.size, 5.0)], axis=1)
    ctl.inner_iterations(0)
    ctl.add_update(upd)
    ctl.jump_factor()
    assert ctl.finish_iteration(0.2) is True and ctl.converged
    assert ctl.history[0]["max_update"] < 1e-12
    np.testing.assert_allclose(ctl.total, upd)  # the totals still carry it


def test_callback_stop_and_entry():
    seen = []

    def cb(info):
        seen.append(info)
        raise StopIteration

    ctl, plan = _controller(levels=(1,))
    ctl.callback = cb
    ctl.begin_level(plan[0])
    ctl.inner_iterations(0)
    ctl.add_update(_gauge_free(ANGLES.size, 1.0))
    ctl.jump_factor()
    assert ctl.finish_iteration(0.3) is True
    assert ctl.stopped and not ctl.converged
    assert seen[0]["shifts"].shape == (ANGLES.size, 2) and seen[0]["residual"] == 0.3


def test_hold_y_until_finest_x_is_subpixel():
    ctl, plan = _controller(hold_y=True)
    ctl.begin_level(plan[0])
    assert not ctl.want_y
    ctl.end_level()
    ctl.begin_level(plan[1])
    assert not ctl.want_y            # x_upd unknown (inf) on the new level
    ctl.inner_iterations(0)
    ctl.add_update(np.full((ANGLES.size, 2), 0.2))
    assert ctl.want_y                # x now sub-pixel on the finest level


def test_axis_step_gate():
    ctl, plan = _controller(levels=(1,), refine=("shifts", "axis_angle"))
    ctl.begin_level(plan[0], can_rotate=True)
    small = np.full((ANGLES.size, 2), 0.01)
    for it in range(30):               # 30 x 4 >= ROT_MIN_ITERS reconstruction iterations
        ctl.inner_iterations(it)
    assert not ctl.add_update(small)   # no residual history yet
    ctl.jump_factor()
    ctl.finish_iteration(1.0)
    ctl.add_update(small)
    ctl.jump_factor()
    ctl.finish_iteration(0.5)          # fell by half: not settled
    assert not ctl.add_update(small)
    ctl.jump_factor()
    ctl.finish_iteration(0.49)
    assert ctl.add_update(small)       # settled: the step runs
    ctl.add_rotation(np.deg2rad(0.1))
    assert ctl.alpha == pytest.approx(0.1)
    assert ctl.eps_px == pytest.approx(np.deg2rad(0.1) * 16)


class _ScriptedExecutor:
    """Data steps replaced by a script of updates and residuals (no arrays)."""

    name = "scripted"
    lacks = frozenset()
    can_rotate = False

    def __init__(self, updates):
        self.updates = list(updates)
        self.calls = []

    def begin_level(self, lv):
        self.calls.append(("level", lv.f))

    def resample(self, total, alpha):
        self.calls.append("resample")

    def reconstruct(self, n_iter):
        self.calls.append(("reconstruct", n_iter))

    def measure(self, want_x, want_y):
        self.calls.append("measure")
        return self.updates.pop(0), 0.5

    def jump(self, factor):
        self.calls.append(("jump", factor))


def test_run_levels_drives_the_steps():
    ctl, plan = _controller(levels=(2, 1), tol=0.05, max_iter=3)
    u = _gauge_free(ANGLES.size, 0.001)
    ex = _ScriptedExecutor([u * 100, u, u, u, u])
    run_levels(plan, ex, ctl)
    # the coarse level stops after its second iteration (0.002 x 2 < max(0.05, 0.02));
    # the finest after its first
    assert ex.calls[:5] == [("level", 2), "resample", ("reconstruct", 12), "measure",
                            "resample"]
    assert [e["level"] for e in ctl.history] == [2, 2, 1] and ctl.converged
