"""Peak-memory model of ``fastalign align`` and ``fastalign recon`` (pure arithmetic).

The model counts the arrays alive in each phase of a local run and takes the largest phase
(measured with ``bench/memory_model.py``, which also checks the model; ``tests/test_memory.py``
pins it within 10 %).  With ``D`` the input as float32 (``4 n ny nx`` bytes), ``D'`` the
stack padded by ``pad_x`` columns per side, ``V'`` the reconstructed region
``4 ny nz (nx + 2 pad_x)`` and ``V`` the returned volume ``4 ny nz nx`` (SIRT's stacks are
as wide as ``D`` whatever ``pad_x``: its detector is the field,
:func:`fastalign.align.levels.detector_pad`; TV's are ``D'``):

* **final** (:meth:`fastalign.align.executor.LocalExecutor.finish`, SIRT): the input ``D``,
  the aligned stack ``D`` and one row block's arrays (:func:`final_block_rows` rows: the
  start, the backprojection and a copy; the block's data, reprojection, residual and a
  filtered copy), plus the volume ``V`` unless it is streamed into the output file as it is
  reconstructed (the CLI: ``streamed=True``).  TV reconstructs the whole region: ``6 V'``
  (the iterate, the FISTA copies and the 2-D dual field) and ``3 D'``.  A non-identity
  intensity model adds one ``D`` (the transformed data beside the user's).
* **outputs** (the CLI's figures and writing, in blocks): the input and the aligned stack
  (and the volume when not streamed).
* **loop** (the levels): the input ``D``, 3 level volumes (at most 64 rows: the row
  budget) and the finest level's stacks, counted as **16** level stacks ``D / f**2``: the
  shifted stack, the solver's, and the copies of inputs and outputs that pyFFTW's plan cache
  keeps for a minute (one set per padded shape; the shapes change with the shifts).  This
  term is the least exact (measured 12-25 level stacks at 41 x 128 x 128 .. 90 x 256 x 256);
  ``f`` is the finest binning (2 from 512 px wide, else 1; ``--levels`` sets it).

The Python, NumPy, Numba (compiled kernels) and FFTW-plan baseline of the process is the
constant :data:`BASELINE_BYTES` (measured 300-500 MiB on a 2-core Linux machine, growing a
little with the sizes a process has seen); it is part of the absolute estimate, not of the
increment.

Measured increments (``bench/memory_model.py``, peak RSS above the idle compiled process,
its heap trimmed), CLI defaults, streamed: 90 x 512 x 512 453 MiB = 5.0 x the input (before
the row blocks and the streaming: 1296-1415 MiB, 14-16 x), peak in the loop's levels,
against 498 MiB of loop terms (+10 %); 61 x 256 x 256 315 MiB (before: 369-409 MiB) against
307 MiB (-3 %).  The loop term is the least exact (the FFT cache's copies and the
allocator's free memory it has not returned); the final phase's live arrays (2 D and a row
block, 239 MiB at 90 x 512 x 512) are below it.
"""
from dataclasses import dataclass, field

MIB = 2 ** 20

#: resident memory of an idle process that imported fastalign, compiled its kernels and ran
#: one small alignment (Python, NumPy/SciPy, Numba code, pyFFTW plans, matplotlib), bytes
BASELINE_BYTES = 300 * MIB

#: rows of the loop's reconstruction at most (``AlignOptions.max_rows``)
LOOP_ROWS = 64

#: from this width the loop's finest level is 2x binned (``levels.BINNED_FINEST_NX``)
BINNED_FINEST_NX = 512


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated peak: ``total = baseline + increment``; ``terms`` are the peak phase's
    arrays (bytes), largest first."""

    total: int
    increment: int
    baseline: int
    phase: str
    terms: dict = field(default_factory=dict)

    @property
    def largest(self):
        """``(name, bytes)`` of the largest term."""
        return max(self.terms.items(), key=lambda kv: kv[1])

    def summary(self):
        """One line: the terms in MiB."""
        parts = ", ".join(f"{k} {v / MIB:.0f} MiB" for k, v in self.terms.items())
        return f"{self.phase} phase: {parts}; baseline {self.baseline / MIB:.0f} MiB"


def _pick(phases, baseline):
    phase, terms = max(phases.items(), key=lambda kv: sum(kv[1].values()))
    terms = dict(sorted(((k, int(v)) for k, v in terms.items() if v), key=lambda kv: -kv[1]))
    inc = sum(terms.values())
    return MemoryEstimate(total=baseline + inc, increment=inc, baseline=int(baseline),
                          phase=phase, terms=terms)


#: stacks of the finest level and volumes of the loop's rows alive in the loop, FFT-cache
#: copies and allocator slack included: fitted to the measured peaks (bench/memory_model.py,
#: mmap threshold pinned as the CLI does) of 31 x 320^2, 31 x 384^2 and 90 x 512^2 (2x
#: binned finest level; -1 %, -5 %, +3 %), checked on 61 x 256^2 (unbinned; +5 %)
LOOP_STACKS = 4
LOOP_VOLUMES = 10


#: rows of a row block of the final reconstruction (mirrors
#: :func:`fastalign.align.executor.final_row_blocks`: 16 MiB of volume, a multiple of 16)
FINAL_BLOCK_BYTES = 16 * MIB
LANES = 16

#: volumes and stacks of one row block alive at once in the final SIRT (the start, the
#: solver's backprojection and step sizes, the FBP start's and the padding's copies, the
#: per-tilt quality's reprojection, FFT-cache copies and allocator slack: measured, 31 x
#: 320^2; the block's data, the reprojection, the weighted residual and a filtered copy)
BLOCK_VOLUMES = 6
BLOCK_STACKS = 4


def final_block_rows(ny, nz, nxp, n_tilts=1, itemsize=4):
    """Rows per block of the final SIRT reconstruction."""
    per_row = itemsize * max(nz, n_tilts) * nxp
    return min(ny, max(LANES, FINAL_BLOCK_BYTES // per_row // LANES * LANES))


def estimate_align_peak(shape, nz=None, pad_x=0, recon="sirt", *, intensity=False,
                        finest_bin=None, itemsize=4, baseline=BASELINE_BYTES, streamed=False):
    """Estimated peak memory of a local ``fastalign align`` run.

    Parameters
    ----------
    shape : (int, int, int)
        Tilt series ``(n_tilts, ny, nx)``.
    nz : int, optional
        Volume thickness (default ``nx``).
    pad_x : int
        Extra columns per side of the reconstructed region (``--pad-x``; ``auto`` and slab
        specimens choose their own: pass the expected value, 0 when unknown).
    recon : {"sirt", "tv"}
    intensity : bool
        A non-identity intensity model (bright-field log, background removed): one more
        input-sized copy.
    finest_bin : int, optional
        Binning of the loop's finest level (default: 2 from 512 px wide, else 1).
    itemsize : int
        Bytes per value (4: float32 everywhere).
    baseline : int
        Constant of the process (:data:`BASELINE_BYTES`).
    streamed : bool
        The final volume goes to a file block by block as it is reconstructed
        (:func:`fastalign.align.executor.volume_sink`: the CLI) instead of being held.

    Returns
    -------
    MemoryEstimate
    """
    n, ny, nx = (int(v) for v in shape)
    nz = nx if nz is None else int(nz)
    pad_x = int(pad_x or 0)
    nxp = nx + 2 * pad_x
    D = itemsize * n * ny * nx
    Dp = itemsize * n * ny * nxp
    V = itemsize * ny * nz * nx
    Vp = itemsize * ny * nz * nxp
    inp = {"input": D, "intensity copy": D if intensity else 0}
    if recon == "tv":
        solver = {"volumes (TV: 6)": 6 * Vp, "solver stacks (TV: 3)": 3 * Dp}
    elif recon == "sirt":
        rows = final_block_rows(ny, nz, nxp, n, itemsize)
        solver = {"volume": 0 if streamed else V,
                  f"row block volumes ({BLOCK_VOLUMES} x {rows} rows)":
                      BLOCK_VOLUMES * itemsize * rows * nz * nxp,
                  f"row block stacks ({BLOCK_STACKS})": BLOCK_STACKS * itemsize * n * rows * nx}
    else:
        raise ValueError(f"recon must be 'sirt' or 'tv', got {recon!r}")
    final = dict(inp, **{"aligned stack": D}, **solver)
    outputs = {"input": D, "aligned stack": D, "volume": 0 if streamed else V}
    f = int(finest_bin or (2 if nx >= BINNED_FINEST_NX else 1))
    rows = min(ny // f, LOOP_ROWS)
    # SIRT's detector is the field whatever the region (align.levels.detector_pad); TV pads it
    lv_stack = itemsize * n * (ny // f) * ((nxp if recon == "tv" else nx) // f)
    lv_vol = itemsize * rows * (nz // f) * (nxp // f)
    loop = dict(inp, **{f"level stacks and FFT copies ({LOOP_STACKS})": LOOP_STACKS * lv_stack,
                        f"level volumes ({LOOP_VOLUMES})": LOOP_VOLUMES * lv_vol})
    return _pick({"final": final, "outputs": outputs, "loop": loop}, baseline)


def estimate_recon_peak(shape, nz=None, method="sirt", *, itemsize=4,
                        baseline=BASELINE_BYTES):
    """Estimated peak memory of a local ``fastalign recon`` run (``method`` sirt, tv or fbp):
    the input and the solver's arrays (SIRT ``2 V + 2 D``, TV ``6 V + 3 D``, FBP ``V`` and a
    filtered copy ``D``), or the volume and its statistics temporary while writing.  Not
    measured as closely as :func:`estimate_align_peak` (bench/memory_model.py runs align)."""
    n, ny, nx = (int(v) for v in shape)
    nz = nx if nz is None else int(nz)
    D = itemsize * n * ny * nx
    V = itemsize * ny * nz * nx
    per = {"sirt": {"volumes (volume + backprojection)": 2 * V,
                    "solver stacks (reprojection + residual)": 2 * D},
           "tv": {"volumes (TV: 6)": 6 * V, "solver stacks (TV: 3)": 3 * D},
           "fbp": {"volume": V, "filtered stack": D}}
    if method not in per:
        raise ValueError(f"method must be 'sirt', 'tv' or 'fbp', got {method!r}")
    solve = dict({"input": D}, **per[method])
    write = {"volume": V, "volume statistics temporary": V}
    return _pick({"reconstruction": solve, "outputs": write}, baseline)


#: allocations from this size (bytes) get their own memory map, returned to the system when
#: freed (:func:`pin_mmap_threshold`)
MMAP_THRESHOLD = 1 * MIB


def pin_mmap_threshold(threshold=MMAP_THRESHOLD):
    """Fix glibc's mmap threshold at ``threshold`` bytes for this process (the command line
    calls it at start).

    glibc raises the threshold above each freed mapped block, after which arrays of that
    size come from the heap and their memory is kept after ``del``: the peak resident memory
    of the same run then depends on the allocation history (measured at 31 x 320^2: 102-133
    MiB above the idle process; pinned: 105 MiB in every run, and no slower).  Returns True
    when the threshold was set (Linux with glibc), else False (nothing changed)."""
    import ctypes
    import ctypes.util
    import sys
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    M_MMAP_THRESHOLD = -3
    return bool(mallopt(ctypes.c_int(M_MMAP_THRESHOLD), ctypes.c_int(int(threshold))))
