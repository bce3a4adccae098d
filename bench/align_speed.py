"""Time and accuracy of fastalign.align on an n_tilts x n x n particle series (dx, dy ~ U[-10, 10]).

Usage: python bench/align_speed.py N REPEATS ["option=value,..."]   (PROF=1 for a cProfile table)
"""
import sys, time, os, cProfile, pstats, tempfile
import numpy as np
import fastalign
from fastalign.align.gauge import gauge_error
from fastalign.phantoms import particles_3d

def case(n=256, nt=90, seed=3):
    path = os.path.join(tempfile.gettempdir(), f"fastalign_align_case_{n}_{nt}.npz")
    if os.path.exists(path):
        z = np.load(path); return z["data"], z["angles"], z["true"]
    vol = np.zeros((n, n, n), np.float32)
    m = n * 5 // 8; o = (n - m) // 2
    vol[o:o + m] = particles_3d((m, n, n), n_particles=max(10, n // 6), seed=seed)
    angles = np.linspace(-70, 70, nt)
    ideal = fastalign.project(vol, angles)
    rng = np.random.default_rng(7)
    true = rng.uniform(-10, 10, (nt, 2))
    data = fastalign.fourier_shift(ideal, true).astype(np.float32)
    data += rng.normal(0, 0.01 * data.std(), data.shape).astype(np.float32)
    np.savez(path, data=data, angles=angles, true=true)
    return data, angles, true

if __name__ == "__main__":
    n = int(sys.argv[1]); reps = int(sys.argv[2])
    kw = eval("dict(" + (sys.argv[3] if len(sys.argv) > 3 else "") + ")")
    prof = os.environ.get("PROF")
    data, angles, true = case(n)
    small = data[:, :64, :64].copy()
    # max_rows=32 < 64 rows: the warm-up also compiles the final volume's FBP start
    t = time.perf_counter(); fastalign.align(small, angles, max_iter=2, levels=[1], max_rows=32)
    print(f"warm-up (JIT) {time.perf_counter()-t:.1f}s", flush=True)
    for k in range(reps):
        print("load", os.getloadavg()[0], flush=True)
        t = time.perf_counter()
        if prof and k == 0:
            pr = cProfile.Profile(); pr.enable()
        r = fastalign.align(data, angles, **kw)
        if prof and k == 0:
            pr.disable(); pstats.Stats(pr).sort_stats("cumtime").print_stats(25)
        dt = time.perf_counter() - t
        ex, ey = gauge_error(r.shifts, true, angles)
        print(f"{n} {kw}: time={dt:.1f}s ex={ex:.4f} ey={ey:.4f} iters={len(r.history)} "
              f"per_level={ {f: [h['level'] for h in r.history].count(f) for f in r.options['levels']} } conv={r.converged} "
              f"timings={ {k: round(v, 2) for k, v in r.timings.items()} }", flush=True)
