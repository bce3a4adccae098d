"""Diagnosis of a run that did not converge or fits badly (fastalign.align.diagnose)."""
import numpy as np

from fastalign.align.result import AlignResult


def _result(converged, residual, max_update=0.01, **options):
    n = 5
    return AlignResult(shifts=np.zeros((n, 2)), aligned=np.zeros((n, 4, 4), np.float32),
                       volume=np.zeros((4, 4, 4), np.float32),
                       history=[dict(iteration=1, residual=residual, max_update=max_update)],
                       converged=converged, angles_deg=np.linspace(-60, 60, n),
                       options=options, axis_angle_deg=options.pop("axis", 0.0))


def test_a_good_run_has_no_diagnosis():
    assert _result(True, 0.03).diagnosis() == []


def test_weak_axis_direction_is_named_with_its_option():
    r = _result(False, 0.9, orientation=dict(anisotropy=0.03, used="decorrelation"), axis=12.0)
    causes = r.diagnosis()
    assert "0.900" in causes[0] and "poor fit" in causes[0]
    assert "--axis-angle" in causes[1] and "hardly" in causes[1]
    assert r.summary()["diagnosis"] == causes


def test_intensity_and_slab_causes_name_their_options():
    causes = _result(False, 0.5, intensity=dict(contrast="dark-field", background=-31886.0),
                     specimen=dict(kind="slab", thickness_px=40.0, nz=60)).diagnosis()
    text = "\n".join(causes)
    assert "--background" in text and "-31886" in text and "--nz" in text


def test_slow_convergence_with_a_good_fit_suggests_more_iterations():
    causes = _result(False, 0.02, max_update=0.004).diagnosis()
    assert len(causes) >= 1 and "--max-iter" in causes[-1]
