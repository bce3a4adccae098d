"""Slab specimens aligned with default options, beside the xcorr and COM baselines.

    python bench/slab_sweep.py [FOV [THICKNESS [TILT [PITCH [FILM]]]]] [--oracle] [--json PATH]

Defaults: 128 px field, 28 px thick film, -60..60 step 2, no pitch, film density 1 (the
case of tests/test_slab.py).  The series comes from :func:`fastalign.simulate.slab_experiment`
(wider than the field at every tilt, truncated in x and y, dx, dy ~ U[-10, 10], Poisson noise
at ~1000 counts/px).  Prints one line: RMS errors after gauge removal (x / y), the
baselines', the measured thickness and pitch, the region, iterations and time.
``--oracle`` starts the loop from the true shifts (is the loop's fixed point biased, or does
it not converge?).

Measured (issue 17, default options, 2026-12-03; times on 2 shared cores):

* 256 px field, 28 px film: 0.011 / 0.011 px (xcorr 0.022 / 0.017), 8 iterations, converged;
* 256 px field, 40 px film: 0.024 / 0.014 px (xcorr 0.037 / 0.014), 14 iterations, converged;
* 256 px field, 60 px film: 0.069 / 0.014 px (xcorr 0.081 / 0.021), 8 iterations, converged;
* 128 px field, 60 px film (half the field): 0.156 / 0.070 px (xcorr 0.163 / 0.109), open:
  the measured updates of this thick slab carry 6 % of an uncorrelated and 1.5 % of a smooth
  (random-walk) shift error (the reconstruction absorbs the rest), against a noise of
  ~0.006 px per tilt; from the true shifts the loop drifts to 0.034 / 0.033 px, from the
  start it drives the updates below 0.001 px without reducing the x error (also with a
  looser Anderson safeguard and a longer memory; measuring each tilt against a
  reconstruction from the other half of the tilts is dominated by the half-sampled
  reconstruction's artefacts: 0.5 px).

Tried for issue 18 (2026-12-03, not adopted; default options otherwise, x / y px, time):

* **Smooth-mode preconditioning** of the Anderson steps (the gauge-free update plus beta
  times its Gaussian smoothing along the tilt angle, sigma 3 tilts for x and 8 for y, beta
  15 / 40): 128 px / 28 px film 0.0147 / 0.0140 in 10 iterations, 8.4 s (default 0.0165 /
  0.0502, 15 iterations, 11.3 s); 256 / 40: 0.0229 / 0.0103, 30.9 s (0.0235 / 0.0143,
  49.5 s).  But it converges to the loop's fixed point, which on other cases lies further
  from the truth than where the plain loop stalls: 96 / 20 y 0.0102 -> 0.1077, 64 / 12 y
  0.0081 -> 0.0265, 128 / 60 0.156 / 0.070 -> 0.229 / 0.219, 64 / 28 pitched x 0.150 ->
  0.229.  x-only (beta 15) still moved 64 / 12 y to 0.0168.
* **Accelerated (Nesterov) SIRT** for the cold starts (relax 1.0, 15 iterations instead of
  30 over-relaxed ones): 128 / 28 0.0150 / 0.0395 in 9.8 s, but 64 / 12 y 0.0081 -> 0.0306,
  128 / 28 pitched y 0.0245 -> 0.0377; 30 accelerated iterations: 0.0363 / 0.0714.
* **The slab loop on 64 of 128 rows** (two blocks of 32, as the compact loop's budget):
  0.4 s instead of 0.63 s per iteration, but 0.0391 / 0.0462 at the stall (10 iterations)
  and x 0.029-0.030 after 26.
"""
import argparse
import json
import time

import fastalign
from fastalign.simulate import slab_experiment
from fastalign.testing import gauge_rms


def run(fov=128, thickness=28.0, tilt=60.0, pitch=0.0, film=1.0, seed=0, oracle=False):
    exp = slab_experiment(fov, thickness, tilt_deg=tilt, pitch_deg=pitch, film_density=film,
                          seed=seed)
    t0 = time.perf_counter()
    r = fastalign.align(exp.data, exp.angles_deg,
                        initial_shifts=exp.shifts if oracle else None)
    seconds = time.perf_counter() - t0
    err = gauge_rms(r.shifts, exp.shifts, exp.angles_deg)
    xc = gauge_rms(fastalign.xcorr_shifts(exp.data, exp.angles_deg), exp.shifts,
                   exp.angles_deg)
    com = gauge_rms(fastalign.com_shifts(exp.data, exp.angles_deg), exp.shifts,
                    exp.angles_deg)
    spec = r.options["specimen"]
    return dict(fov=fov, thickness=thickness, tilt=tilt, pitch=pitch, film=film,
                rms=[float(e) for e in err], xcorr=[float(e) for e in xc],
                com=[float(e) for e in com], thickness_est=r.thickness,
                pitch_est=spec.get("pitch_deg"), pad_x=spec.get("pad_x"), nz=spec.get("nz"),
                iterations=len(r.history), converged=bool(r.converged), stop=spec.get("stop"),
                seconds=seconds)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("fov", nargs="?", type=int, default=128)
    ap.add_argument("thickness", nargs="?", type=float, default=28.0)
    ap.add_argument("tilt", nargs="?", type=float, default=60.0)
    ap.add_argument("pitch", nargs="?", type=float, default=0.0)
    ap.add_argument("film", nargs="?", type=float, default=1.0)
    ap.add_argument("--oracle", action="store_true", help="start from the true shifts")
    ap.add_argument("--json", help="also write the result as JSON")
    a = ap.parse_args(argv)
    row = run(a.fov, a.thickness, a.tilt, a.pitch, a.film, oracle=a.oracle)
    print(f"slab fov {row['fov']} thickness {row['thickness']:g} +-{row['tilt']:g} deg pitch "
          f"{row['pitch']:g} film {row['film']:g}: fastalign {row['rms'][0]:.4f} / "
          f"{row['rms'][1]:.4f} px | xcorr {row['xcorr'][0]:.4f} / {row['xcorr'][1]:.4f} | "
          f"com {row['com'][0]:.3f} / {row['com'][1]:.3f} | thickness "
          f"{row['thickness_est']:.1f} px, pitch {row['pitch_est']} deg, pad_x {row['pad_x']}, "
          f"nz {row['nz']} | {row['iterations']} iterations, converged {row['converged']} "
          f"({row['stop']}) | {row['seconds']:.1f} s")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(row, fh, indent=1)


if __name__ == "__main__":
    main()
