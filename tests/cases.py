"""Test series shared by several test modules."""
import numpy as np

import fastalign
from fastalign.phantoms import particles_3d, thin_film_3d
from fastalign.simulate import fourier_shift


def particle_projections(n_angles=71):
    """Ideal projections ``(n_angles, 48, 64)`` at -70..70 deg of 10 particles in the middle
    24 of 48 rows, so that +-10 px shifts along y push no content off the detector."""
    vol = np.zeros((48, 64, 64), np.float32)
    vol[12:36] = particles_3d((24, 64, 64), n_particles=10, seed=3)
    angles = np.linspace(-70, 70, n_angles)
    return fastalign.project(vol, angles), angles


def lamella_series(axis=0, seed=11):
    """A lamella wider than the field of view: a (16, 64, 96) film projected at -60..60 step 2,
    each tilt shifted by U[-3, 3] px along ``axis`` (0: x, 1: y), then cropped to the
    central 64 columns.  Returns ``(data float32 (61, 16, 64), angles, true (61, 2))``."""
    vol = thin_film_3d((16, 64, 96), seed=2)
    angles = np.arange(-60, 61, 2.0)
    wide = fastalign.project(vol, angles)
    rng = np.random.default_rng(seed)
    true = np.zeros((angles.size, 2))
    true[:, axis] = rng.uniform(-3, 3, angles.size)
    shifted = np.stack([fourier_shift(wide[i], true[i, 0], true[i, 1])
                        for i in range(angles.size)])
    return np.ascontiguousarray(shifted[:, :, 16:80], dtype=np.float32), angles, true
