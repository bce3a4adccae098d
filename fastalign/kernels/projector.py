"""Joseph's ray-driven parallel-beam projector and its exact transpose.

Geometry (DESIGN.md): a slice is ``(nz, nx)``; pixel ``(iz, ix)`` has centre
``x = ix - (nx-1)/2``, ``z = iz - (nz-1)/2``; detector bin ``t`` has coordinate
``u = t - cu`` with ``cu = (nb-1)/2 + center_offset`` and ``u = x cos(th) + z sin(th)``.

A ray steps along its major axis.  For ``|cos| >= |sin|`` ("z-major") it visits every row
``iz`` and linearly interpolates along x at ``p(t) = p0 + t*dp``; otherwise it visits every
column ``ix`` and interpolates along z.  The step length ``1/|cos|`` (or ``1/|sin|``) weights
each sample.  Samples outside the slice are zero.

Vectorisation over slices
-------------------------
Every slice y sees the same geometry, so for one (angle, line, ray) the interpolation index and
weight are the same for all slices.  The kernels therefore work on blocks of ``LANES``
consecutive slices and keep the slice index innermost: a block's lines (rows for the z-major
angles, columns for the x-major ones) are copied, ``LINES`` at a time, into a small buffer
``buf[line, PAD + i, lane]`` (zero padding of ``PAD`` samples at both ends), so that one sample
of a ray is one contiguous ``LANES``-wide vector operation (``_lerp_acc`` / ``_lerp_scatter``,
explicit SIMD written as Numba intrinsics) after one scalar index computation.  Rays are
accumulated in ``acc[angle, t, lane]``, for a full block in place in the block's own part of
the output (``out[a, y0:y0+LANES, :]`` has exactly ``nb*LANES`` elements), and transposed into
``out`` at the end; a last, partial block uses a scratch accumulator and zero lanes.

The transpose scatters exactly the same weights (``v - f v`` and ``f v`` for the gather's
``a + f (b - a)``), from the detector values of a block transposed and pre-scaled by the step
length into ``pb[angle, t, lane]``, into the line buffer, which is then written (z-major angles)
or added (x-major angles) into the output.

Determinism: every output element is produced by one task in a fixed sequence of operations
(blocks, chunks of lines and angles in fixed order; the lanes of a vector never interact), so
results are bit-identical for any thread count and for both parallel schedules: over blocks
(``*_blocks``) or, when there are fewer blocks than threads, over angles (forward) and chunks of
lines (transpose) within each block (``*_within``).  No ``+=`` is shared between threads.

Memory beyond input and output, per thread: one line buffer of ``LINES * (n + 2 PAD) * LANES``
float32 (about 0.5 MB for n = 512); the transpose also holds ``pb`` (``n_tilts * nb * LANES``
float32, 2.9 MB for 90 x 512); the forward needs a scratch accumulator of that size only for a
partial block.
"""
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from .._config import jit

#: Slices processed together (one SIMD vector of float32: 16 = 512 bits).
LANES = 16
#: Lines (rows or columns) per buffered chunk: the buffer stays in the L2 cache.
LINES = 16
#: Zero samples on either side of a buffered line (interpolation may touch index -1 and n, and
#: the loop bounds may be one sample generous on either side).
PAD = 2

# No "reassoc" (``_config.FASTMATH``, as for every kernel): the sequence of floating-point
# operations per element is fixed, whatever code the compiler generates.


def _kernel(*args, **kwargs):
    return jit(*args, **kwargs)


# --------------------------------------------------------------------------- SIMD primitives

_VEC = ir.VectorType(ir.FloatType(), LANES)


def _vec_ptr(context, builder, arrty, arr, k):
    """Pointer to ``LANES`` float32 at flat element offset ``k`` of a C-contiguous array."""
    a = context.make_array(arrty)(context, builder, arr)
    return builder.bitcast(builder.gep(a.data, [k], inbounds=True), _VEC.as_pointer())


def _splat(builder, x):
    undef = ir.Constant(_VEC, ir.Undefined)
    v = builder.insert_element(undef, x, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(v, undef, ir.Constant(ir.VectorType(ir.IntType(32), LANES),
                                                        [0] * LANES))


def _fma(builder, a, b, c):
    fnty = ir.FunctionType(_VEC, [_VEC, _VEC, _VEC])
    fn = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.fma.v{LANES}f32")
    return builder.call(fn, [a, b, c])


def _check_simd_args(arr1, k1, arr2, k2, f):
    for arr in (arr1, arr2):
        if not (isinstance(arr, types.Array) and arr.dtype == types.float32
                and arr.layout == "C"):
            raise TypeError("SIMD primitives need C-contiguous float32 arrays")
    if not (isinstance(k1, types.Integer) and isinstance(k2, types.Integer)):
        raise TypeError("SIMD offsets must be integers")
    if f != types.float32:
        raise TypeError("SIMD weight must be float32")


@intrinsic
def _lerp_acc(typingctx, acc, ka, src, ks, f):
    """``acc[ka + i] += a[i] + f * (b[i] - a[i])`` for ``i < LANES`` with
    ``a = src[ks:ks+LANES]``, ``b = src[ks+LANES:ks+2*LANES]`` (flat offsets)."""
    _check_simd_args(acc, ka, src, ks, f)

    def codegen(context, builder, sig, args):
        pa = _vec_ptr(context, builder, sig.args[0], args[0], args[1])
        ps = _vec_ptr(context, builder, sig.args[2], args[2], args[3])
        a = builder.load(ps, align=4)
        b = builder.load(builder.gep(ps, [ir.Constant(ir.IntType(64), 1)]), align=4)
        r = _fma(builder, _splat(builder, args[4]), builder.fsub(b, a), a)
        builder.store(builder.fadd(builder.load(pa, align=4), r), pa, align=4)
        return context.get_dummy_value()

    return types.void(acc, ka, src, ks, f), codegen


@intrinsic
def _lerp_scatter(typingctx, dst, kd, src, ks, f):
    """Transpose of :func:`_lerp_acc`: with ``v = src[ks:ks+LANES]``,
    ``dst[kd:kd+LANES] += v - f*v`` and ``dst[kd+LANES:kd+2*LANES] += f*v``."""
    _check_simd_args(dst, kd, src, ks, f)

    def codegen(context, builder, sig, args):
        pd = _vec_ptr(context, builder, sig.args[0], args[0], args[1])
        pd2 = builder.gep(pd, [ir.Constant(ir.IntType(64), 1)])
        ps = _vec_ptr(context, builder, sig.args[2], args[2], args[3])
        v = builder.load(ps, align=4)
        fv = builder.fmul(_splat(builder, args[4]), v)
        builder.store(builder.fadd(builder.load(pd, align=4), builder.fsub(v, fv)), pd,
                      align=4)
        builder.store(builder.fadd(builder.load(pd2, align=4), fv), pd2, align=4)
        return context.get_dummy_value()

    return types.void(dst, kd, src, ks, f), codegen


# --------------------------------------------------------------------------- geometry

@_kernel
def _support(p0, dp, n, nt):
    """Conservative range ``[lo, hi)`` of t with ``p0 + t*dp`` in ``[-1, n)``."""
    if dp > 0.0:
        a = (-1.0 - p0) / dp
        b = (n - p0) / dp
    else:
        a = (n - p0) / dp
        b = (-1.0 - p0) / dp
    lo = max(int(np.floor(a)) - 1, 0)
    hi = min(int(np.ceil(b)) + 2, nt)
    if hi < lo:
        hi = lo
    return lo, hi


@_kernel
def _t_range(p0, dp, n, nt):
    """``[lo, hi)``: the rays t whose sample ``p0 + t*dp`` on this line lies in ``[-1, n)``,
    i.e. touches one of the line's ``n`` pixels (``p`` is monotonic in t)."""
    lo, hi = _support(p0, dp, n, nt)
    while lo < hi and not (-1.0 <= p0 + lo * dp < n):
        lo += 1
    while hi > lo and not (-1.0 <= p0 + (hi - 1) * dp < n):
        hi -= 1
    return lo, hi


@_kernel
def _ray_line(c, s, zmajor, k, nz, nx, cu):
    """Start and step of the interpolation line for row/column ``k`` at one angle."""
    if zmajor:
        z = k - 0.5 * (nz - 1)
        return (-cu - z * s) / c + 0.5 * (nx - 1), 1.0 / c
    x = k - 0.5 * (nx - 1)
    return (-cu - x * c) / s + 0.5 * (nz - 1), 1.0 / s


def angle_tables(cosv, sinv, zmaj):
    """Per-angle tables of the kernels: the step weights ``1/|cos|`` (z-major) or ``1/|sin|``
    (float64) and the indices of the z-major and of the x-major angles (int64)."""
    zmaj = np.asarray(zmaj, bool)
    wts = 1.0 / np.where(zmaj, np.abs(cosv), np.abs(sinv))
    return (wts, np.flatnonzero(zmaj).astype(np.int64), np.flatnonzero(~zmaj).astype(np.int64))


# --------------------------------------------------------------------------- line buffers

@_kernel
def _load_rows(vol, y0, k0, nk, buf):
    """Copy rows ``k0 .. k0+nk-1`` of slices ``y0 .. y0+LANES-1`` (slices past the end as
    zeros) into ``buf[l, PAD + ix, lane]``, with the padding zeroed."""
    ny, nz, nx = vol.shape
    w = nx + 2 * PAD
    nyb = min(LANES, ny - y0)
    for l in range(nk):
        base = l * w * LANES
        for q in range(PAD * LANES):
            buf[base + q] = 0.0
            buf[base + (nx + PAD) * LANES + q] = 0.0
        base += PAD * LANES
        for y in range(LANES):
            if y < nyb:
                row = vol[y0 + y, k0 + l]
                for i in range(nx):
                    buf[base + i * LANES + y] = row[i]
            else:
                for i in range(nx):
                    buf[base + i * LANES + y] = 0.0


@_kernel
def _load_columns(vol, y0, k0, nk, buf):
    """Copy columns ``k0 .. k0+nk-1`` of slices ``y0 .. y0+LANES-1`` into
    ``buf[l, PAD + iz, lane]`` (as :func:`_load_rows`), reading rows contiguously."""
    ny, nz, nx = vol.shape
    w = nz + 2 * PAD
    nyb = min(LANES, ny - y0)
    for l in range(nk):
        base = l * w * LANES
        for q in range(PAD * LANES):
            buf[base + q] = 0.0
            buf[base + (nz + PAD) * LANES + q] = 0.0
    for y in range(LANES):
        for iz in range(nz):
            o = (PAD + iz) * LANES + y
            if y < nyb:
                row = vol[y0 + y, iz]
                for l in range(nk):
                    buf[l * w * LANES + o] = row[k0 + l]
            else:
                for l in range(nk):
                    buf[l * w * LANES + o] = 0.0


@_kernel
def _gather(buf, k0, nk, c, s, zmajor, nz, nx, nt, cu, acc, ka):
    """Add the samples of lines ``k0 .. k0+nk-1`` (buffered in ``buf``) of every ray of one
    angle (``nt`` detector bins) to ``acc[ka + t*LANES + lane]`` (unweighted)."""
    n = nx if zmajor else nz
    w = n + 2 * PAD
    for l in range(nk):
        p0, dp = _ray_line(c, s, zmajor, k0 + l, nz, nx, cu)
        lo, hi = _t_range(p0, dp, n, nt)
        base = l * w + PAD
        for t in range(lo, hi):
            p = p0 + t * dp
            fi = np.floor(p)
            f = np.float32(p - fi)
            _lerp_acc(acc, ka + t * LANES, buf, (base + np.int64(fi)) * LANES, f)


@_kernel
def _zero(a, k0, n):
    for i in range(k0, k0 + n):
        a[i] = 0.0


@_kernel
def _finish_angle(acc, ka, wgt, out, a, y0, tmp):
    """``out[a, y0 + lane, t] = wgt * acc[ka + t*LANES + lane]`` for the block's real slices.
    ``acc`` may be ``out`` itself (its ``out[a, y0:y0+LANES]`` part): read via ``tmp`` first."""
    ny = out.shape[1]
    nt = out.shape[2]
    nyb = min(LANES, ny - y0)
    for i in range(nt * LANES):
        tmp[i] = acc[ka + i]
    w32 = np.float32(wgt)
    for y in range(nyb):
        row = out[a, y0 + y]
        for t in range(nt):
            row[t] = tmp[t * LANES + y] * w32


@_kernel
def _acc_of_block(out, y0, scratch):
    """Accumulator of the block at ``y0``: ``(array, base, stride per angle)``: ``out`` itself
    for a full block, else ``scratch`` (``na * nt * LANES``)."""
    ny = out.shape[1]
    nt = out.shape[2]
    if y0 + LANES <= ny:
        return out.reshape(-1), y0 * nt, ny * nt
    return scratch, 0, nt * LANES


@_kernel
def _forward_block(vol, y0, cosv, sinv, wts, zlist, xlist, cu, out, buf, scratch, tmp):
    """Forward projection of the slices ``y0 .. y0+LANES-1`` (serial)."""
    nz, nx = vol.shape[1], vol.shape[2]
    na = cosv.shape[0]
    nt = out.shape[2]
    acc, ab, ast = _acc_of_block(out, y0, scratch)
    for a in range(na):
        _zero(acc, ab + a * ast, nt * LANES)
    for zpass in range(2):  # z-major angles along rows, then x-major ones along columns
        zmajor = zpass == 0
        alist = zlist if zmajor else xlist
        if alist.shape[0] == 0:
            continue
        nlines = nz if zmajor else nx
        for k0 in range(0, nlines, LINES):
            nk = min(LINES, nlines - k0)
            if zmajor:
                _load_rows(vol, y0, k0, nk, buf)
            else:
                _load_columns(vol, y0, k0, nk, buf)
            for a in alist:
                _gather(buf, k0, nk, cosv[a], sinv[a], zmajor, nz, nx, nt, cu, acc,
                        ab + a * ast)
    for a in range(na):
        _finish_angle(acc, ab + a * ast, wts[a], out, a, y0, tmp)


@_kernel(parallel=True)
def forward_blocks(vol, cosv, sinv, wts, zlist, xlist, cu, out):
    """Forward projection, parallel over blocks of ``LANES`` slices.
    ``vol (ny, nz, nx)``, ``out (na, ny, nb)``; ``zlist``/``xlist``: z-/x-major angles."""
    ny, nz, nx = vol.shape
    na = cosv.shape[0]
    nt = out.shape[2]
    nblocks = (ny + LANES - 1) // LANES
    for b in prange(nblocks):
        buf = np.empty(LINES * (max(nz, nx) + 2 * PAD) * LANES, np.float32)
        scratch = np.empty(na * nt * LANES if (b + 1) * LANES > ny else 0, np.float32)
        tmp = np.empty(nt * LANES, np.float32)
        _forward_block(vol, b * LANES, cosv, sinv, wts, zlist, xlist, cu, out, buf, scratch,
                       tmp)


@_kernel(parallel=True)
def forward_within(vol, cosv, sinv, wts, zlist, xlist, cu, out):
    """Forward projection, blocks in turn, parallel over the angles of each chunk of lines
    (for fewer blocks than threads).  Same arithmetic as :func:`forward_blocks`."""
    ny, nz, nx = vol.shape
    na = cosv.shape[0]
    nt = out.shape[2]
    nblocks = (ny + LANES - 1) // LANES
    buf = np.empty(LINES * (max(nz, nx) + 2 * PAD) * LANES, np.float32)
    scratch = np.empty(na * nt * LANES if nblocks * LANES > ny else 0, np.float32)
    for b in range(nblocks):
        y0 = b * LANES
        acc, ab, ast = _acc_of_block(out, y0, scratch)
        for a in prange(na):
            _zero(acc, ab + a * ast, nt * LANES)
        for zpass in range(2):
            zmajor = zpass == 0
            alist = zlist if zmajor else xlist
            nal = alist.shape[0]
            if nal == 0:
                continue
            nlines = nz if zmajor else nx
            for k0 in range(0, nlines, LINES):
                nk = min(LINES, nlines - k0)
                if zmajor:
                    _load_rows(vol, y0, k0, nk, buf)
                else:
                    _load_columns(vol, y0, k0, nk, buf)
                for i in prange(nal):
                    a = alist[i]
                    _gather(buf, k0, nk, cosv[a], sinv[a], zmajor, nz, nx, nt, cu, acc,
                            ab + a * ast)
        for a in prange(na):
            tmp = np.empty(nt * LANES, np.float32)
            _finish_angle(acc, ab + a * ast, wts[a], out, a, y0, tmp)


# --------------------------------------------------------------------------- transpose

@_kernel
def _load_proj_angle(proj, y0, a, wgt, pb):
    """``pb[(a*nt + t)*LANES + lane] = wgt * proj[a, y0 + lane, t]`` (missing slices: 0)."""
    ny, nt = proj.shape[1], proj.shape[2]
    nyb = min(LANES, ny - y0)
    base = a * nt * LANES
    w32 = np.float32(wgt)
    for y in range(nyb):
        row = proj[a, y0 + y]
        for t in range(nt):
            pb[base + t * LANES + y] = row[t] * w32
    for y in range(nyb, LANES):
        for t in range(nt):
            pb[base + t * LANES + y] = 0.0


@_kernel
def _scatter(buf, k0, nk, c, s, zmajor, nz, nx, nt, cu, pb, kp, lo, hi, p0s):
    """Transpose of :func:`_gather`: scatter ``pb[kp + t*LANES + lane]`` of every ray of one
    angle (``nt`` detector bins) into lines ``k0 .. k0+nk-1`` of ``buf``.  Rays outer, lines
    inner (each sample of a ray writes a different line: no store-to-load chains).
    ``lo, hi, p0s``: scratch."""
    n = nx if zmajor else nz
    w = n + 2 * PAD
    dp = 0.0
    tmin = nt
    tmax = 0
    for l in range(nk):
        p0, dp = _ray_line(c, s, zmajor, k0 + l, nz, nx, cu)
        p0s[l] = p0
        lo[l], hi[l] = _t_range(p0, dp, n, nt)
        if hi[l] > lo[l]:
            tmin = min(tmin, lo[l])
            tmax = max(tmax, hi[l])
    for t in range(tmin, tmax):
        kt = kp + t * LANES
        for l in range(nk):
            if t >= lo[l] and t < hi[l]:
                p = p0s[l] + t * dp
                fi = np.floor(p)
                f = np.float32(p - fi)
                _lerp_scatter(buf, (l * w + PAD + np.int64(fi)) * LANES, pb, kt, f)


@_kernel
def _store_rows(buf, y0, k0, nk, out):
    """``out[y0 + lane, k0 + l, :] = buf[l, PAD:PAD+nx, lane]`` for the block's real slices."""
    ny, nz, nx = out.shape
    w = nx + 2 * PAD
    nyb = min(LANES, ny - y0)
    for y in range(nyb):
        for l in range(nk):
            row = out[y0 + y, k0 + l]
            base = (l * w + PAD) * LANES + y
            for i in range(nx):
                row[i] = buf[base + i * LANES]


@_kernel
def _store_columns(buf, y0, k0, nk, out, add):
    """``out[y0 + lane, :, k0 + l] (+)= buf[l, PAD:PAD+nz, lane]`` (``+=`` if ``add``)."""
    ny, nz, nx = out.shape
    w = nz + 2 * PAD
    nyb = min(LANES, ny - y0)
    for y in range(nyb):
        for iz in range(nz):
            row = out[y0 + y, iz]
            o = (PAD + iz) * LANES + y
            if add:
                for l in range(nk):
                    row[k0 + l] += buf[l * w * LANES + o]
            else:
                for l in range(nk):
                    row[k0 + l] = buf[l * w * LANES + o]


@_kernel
def _back_chunk(pb, cosv, sinv, alist, zmajor, k0, nt, cu, out, y0, buf, lo, hi, p0s, add):
    """One chunk of lines of the transpose for one block: all angles of ``alist`` (``nt``
    detector bins)."""
    ny, nz, nx = out.shape
    nk = min(LINES, (nz if zmajor else nx) - k0)
    w = (nx if zmajor else nz) + 2 * PAD
    _zero(buf, 0, nk * w * LANES)
    for a in alist:
        _scatter(buf, k0, nk, cosv[a], sinv[a], zmajor, nz, nx, nt, cu, pb, a * nt * LANES,
                 lo, hi, p0s)
    if zmajor:
        _store_rows(buf, y0, k0, nk, out)
    else:
        _store_columns(buf, y0, k0, nk, out, add)


@_kernel(parallel=True)
def back_blocks(proj, cosv, sinv, wts, zlist, xlist, cu, out):
    """Transpose, parallel over blocks of ``LANES`` slices.
    ``proj (na, ny, nb)``, ``out (ny, nz, nx)``."""
    ny, nz, nx = out.shape
    na = cosv.shape[0]
    nt = proj.shape[2]
    nblocks = (ny + LANES - 1) // LANES
    for b in prange(nblocks):
        y0 = b * LANES
        buf = np.empty(LINES * (max(nz, nx) + 2 * PAD) * LANES, np.float32)
        lo, hi, p0s = (np.empty(LINES, np.int64), np.empty(LINES, np.int64),
                       np.empty(LINES, np.float64))
        pb = np.empty(na * nt * LANES, np.float32)
        for a in range(na):
            _load_proj_angle(proj, y0, a, wts[a], pb)
        for zpass in range(2):  # rows for the z-major angles, then columns (added)
            zmajor = zpass == 0
            alist = zlist if zmajor else xlist
            if alist.shape[0] == 0:
                continue
            add = not zmajor and zlist.shape[0] > 0
            for k0 in range(0, nz if zmajor else nx, LINES):
                _back_chunk(pb, cosv, sinv, alist, zmajor, k0, nt, cu, out, y0, buf, lo, hi,
                            p0s, add)


@_kernel(parallel=True)
def back_within(proj, cosv, sinv, wts, zlist, xlist, cu, out):
    """Transpose, blocks in turn, parallel over chunks of lines (for fewer blocks than
    threads).  Same arithmetic as :func:`back_blocks`."""
    ny, nz, nx = out.shape
    na = cosv.shape[0]
    nt = proj.shape[2]
    nblocks = (ny + LANES - 1) // LANES
    pb = np.empty(na * nt * LANES, np.float32)
    for b in range(nblocks):
        y0 = b * LANES
        for a in prange(na):
            _load_proj_angle(proj, y0, a, wts[a], pb)
        for zpass in range(2):
            zmajor = zpass == 0
            alist = zlist if zmajor else xlist
            if alist.shape[0] == 0:
                continue
            add = not zmajor and zlist.shape[0] > 0
            nch = ((nz if zmajor else nx) + LINES - 1) // LINES
            for c in prange(nch):
                buf = np.empty(LINES * (max(nz, nx) + 2 * PAD) * LANES, np.float32)
                lo, hi, p0s = (np.empty(LINES, np.int64), np.empty(LINES, np.int64),
                               np.empty(LINES, np.float64))
                _back_chunk(pb, cosv, sinv, alist, zmajor, c * LINES, nt, cu, out, y0, buf,
                            lo, hi, p0s, add)
