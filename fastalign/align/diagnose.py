"""What probably went wrong when an alignment did not converge or fits the data badly.

:func:`diagnose` reads only what a run recorded (``AlignResult.options``, ``history``,
``converged``) and names the likely causes in order, each with the option that addresses
it; the CLI prints them and ``report.json`` carries them (``summary()["diagnosis"]``).
"""

from .orient import WEAK_ANISOTROPY

__all__ = ["diagnose", "HIGH_RESIDUAL", "WEAK_ANISOTROPY"]

#: a final relative data residual ``||Ax - b|| / ||b||`` above this is reported as a poor
#: fit.  Noise-free phantoms end at 0.005-0.06, noisy small test series up to about 0.4 (the
#: noise itself does not fit); ETSpy's HAADF series with the wrong axis ended at 0.99
HIGH_RESIDUAL = 0.5


def _axis_cause(orientation, axis_angle):
    if orientation.get("method") == "none":
        return (f"tilt-axis direction: {orientation.get('used')}; {axis_angle:.1f} deg was "
                "used; pass --axis-angle DEG (axis_angle_deg=) if the axis is rotated")
    strength = orientation.get("anisotropy", 1.0)
    if strength < WEAK_ANISOTROPY:
        return (f"tilt-axis direction: the data hardly show it (anisotropy {strength:.2f}); "
                f"{axis_angle:.1f} deg was used. If the axis direction is known (e.g. the "
                "acquisition's 'tilt axis angle'), pass --axis-angle DEG (axis_angle_deg=)")
    return (f"tilt-axis direction: found at {axis_angle:.1f} deg from the data "
            f"({orientation.get('used', 'decorrelation')}); if that is wrong pass "
            "--axis-angle DEG (axis_angle_deg=)")


def _intensity_cause(intensity):
    if not isinstance(intensity, dict):
        return None
    if intensity.get("identity"):
        return ("intensities: used as given (mass bright, no offset found); if mass is dark "
                "(bright field) or the data carry a detector offset, pass --contrast "
                "bright-field / --background VALUE (contrast=, background=)")
    contrast = intensity.get("contrast", "?")
    background = intensity.get("background", 0.0)
    return (f"intensities: read as {contrast} with background {background:.6g} removed; if "
            "mass is dark (bright field) or the detector offset differs, pass --contrast "
            "{dark-field,bright-field} / --background VALUE (contrast=, background=)")


def _slab_cause(spec):
    if not isinstance(spec, dict) or spec.get("kind") != "slab":
        return None
    return (f"slab: estimated thickness {spec.get('thickness_px')} px in a region "
            f"nz={spec.get('nz')}; if the specimen is thicker, pass --nz N (nz=), or "
            "--specimen compact if it is not a slab")


def diagnose(result):
    """Likely causes of a non-converged or poorly fitting run, most likely first.

    Parameters
    ----------
    result : AlignResult

    Returns
    -------
    list of str
        Empty when the run converged with a final residual at most :data:`HIGH_RESIDUAL`.
    """
    history = result.history or []
    residual = history[-1].get("residual") if history else None
    poor = residual is not None and residual > HIGH_RESIDUAL
    if result.converged and not poor:
        return []
    opts = result.options or {}
    causes = []
    if poor:
        causes.append(f"poor fit: the final relative residual is {residual:.3f} "
                      f"(a consistent series ends below {HIGH_RESIDUAL})")
    orientation = opts.get("orientation")
    if orientation:
        causes.append(_axis_cause(orientation, result.axis_angle_deg))
    elif result.axis_angle_deg == 0.0 and "axis_angle_deg_start" not in opts:
        causes.append("tilt-axis direction: kept along y (orient=False); pass "
                      "--axis-angle DEG if it is rotated")
    for cause in (_intensity_cause(opts.get("intensity")), _slab_cause(opts.get("specimen"))):
        if cause:
            causes.append(cause)
    if not result.converged and not poor:
        causes.append("slow convergence with a good fit: the last updates were "
                      f"{history[-1].get('max_update', float('nan')):.3g} px; more "
                      "iterations (--max-iter) or a looser --tol")
    return causes
