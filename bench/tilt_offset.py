"""Tilt-angle offset recovery on flat slabs simulated at offset angles (issue 19).

    python bench/tilt_offset.py [--full] [--json PATH]

Each case simulates a flat slab (``tests/test_tilt_offset.py::offset_slab``: wider than the
field, truncated, dx, dy ~ U[-10, 10] px, Poisson noise at ~1000 counts/px, -60..60 step 2
nominal) projected at ``nominal + offset``, aligns it with the nominal angles and
``refine=("shifts", "tilt_offset")``, and prints the recovered
offset, its error, the slab's residual pitch, the shift RMS (gauge removed) and the time.
By default each run is quick: one iteration on the 2x binned level and no axis search (the
offset is estimated before the loop; the shift errors are then not meaningful); ``--full``:
default options (the shift errors are those of the slab loop with the corrected angles).
"""
import argparse
import json
import os
import sys
import time

import fastalign
from fastalign.testing import gauge_rms

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tests"))
from test_tilt_offset import offset_slab  # noqa: E402

CASES = [  # (fov, thickness, offset_deg)
    (128, 28.0, 2.0), (128, 28.0, -2.0), (128, 28.0, 3.0), (128, 28.0, -3.0),
    (96, 24.0, 2.5), (128, 14.0, -3.0),
]


def run(fov, thickness, offset, quick=False, seed=0):
    data, nominal, true = offset_slab(fov, thickness, offset, seed=seed)
    kw = dict(axis_angle_deg=0.0, levels=(2,), max_iter=1) if quick else {}
    t0 = time.perf_counter()
    r = fastalign.align(data, nominal, refine=("shifts", "tilt_offset"), **kw)
    seconds = time.perf_counter() - t0
    info = r.options["tilt_offset"]
    return dict(fov=fov, thickness=thickness, offset=offset, estimated=r.tilt_offset_deg,
                error=r.tilt_offset_deg - offset, fit_rms=info.get("fit_rms"),
                residual_pitch=info.get("residual_pitch_deg"),
                rms=[float(e) for e in gauge_rms(r.shifts, true, r.angles_deg)],
                seconds=seconds)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="default options (slow)")
    ap.add_argument("--json", help="also write the rows as JSON")
    a = ap.parse_args(argv)
    rows = []
    for fov, thickness, offset in CASES:
        row = run(fov, thickness, offset, quick=not a.full)
        rows.append(row)
        print(f"slab fov {fov} thickness {thickness:g} offset {offset:+.1f} deg: estimated "
              f"{row['estimated']:+.3f} (error {row['error']:+.3f}, misfit {row['fit_rms']}), "
              f"residual pitch {row['residual_pitch']} deg, shifts {row['rms'][0]:.4f} / "
              f"{row['rms'][1]:.4f} px | {row['seconds']:.1f} s", flush=True)
    worst = max(abs(r["error"]) for r in rows)
    print(f"largest offset error {worst:.3f} deg over {len(rows)} cases")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
