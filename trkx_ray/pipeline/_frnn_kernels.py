"""Compiled (numba) kernels of the cell-grid fixed-radius neighbour search.

Imported lazily by :mod:`trkx_ray.pipeline.frnn` (numba is heavy to import).
All kernels are ``cache=True`` and use no ``fastmath``: the distance test is the
project's exact rule (see :mod:`trkx_ray.pipeline.frnn`), squared distance
accumulated in float64 over dimensions ``0..D-1`` in order, pair kept when
``d2 < r2``. The sum is branch-free (measured faster than leaving the loop
early: fewer branch mispredictions).

The pair scan reads the points transposed (``D x N``, sorted by cell): a query point
is tested against a run of candidates one dimension at a time, which vectorises; for
the shipped 8-dimensional embedding the sums stay in registers and four (then two)
query points share each candidate's loads (:func:`_scan8x4`, :func:`_scan8x2`): the
pair search 1.67 -> 0.71-0.78 s on a pile-up-200 event on one core, the same pairs in
the same order (docs/benchmarks.md, "Session 18").
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

__all__ = [
    "assign_cells",
    "moments",
    "project",
    "canonicalise_pairs",
    "build_cells",
    "pairs_parallel",
    "pairs_serial",
]


@nb.njit(cache=True, nogil=True)
def moments(x):  # pragma: no cover - compiled
    """Mean (``D``) and scatter matrix (``D x D``) of the points, float64."""
    n, d = x.shape
    mean = np.zeros(d, dtype=np.float64)
    for p in range(n):
        for a in range(d):
            mean[a] += x[p, a]
    mean /= max(n, 1)
    scatter = np.zeros((d, d), dtype=np.float64)
    v = np.empty(d, dtype=np.float64)
    for p in range(n):
        for a in range(d):
            v[a] = np.float64(x[p, a]) - mean[a]
        for a in range(d):
            for b in range(a, d):
                scatter[a, b] += v[a] * v[b]
    for a in range(d):
        for b in range(a):
            scatter[a, b] = scatter[b, a]
    return mean, scatter


@nb.njit(cache=True, nogil=True)
def project(x, mean, basis):  # pragma: no cover - compiled
    """``(x - mean) @ basis`` in float64 with per-column min/max and max |x - mean|."""
    n, d = x.shape
    g = basis.shape[1]
    y = np.empty((n, g), dtype=np.float64)
    lo = np.full(g, np.inf)
    hi = np.full(g, -np.inf)
    v = np.empty(d, dtype=np.float64)
    big = 0.0
    for p in range(n):
        for a in range(d):
            v[a] = np.float64(x[p, a]) - mean[a]
            big = max(big, abs(v[a]))
        for b in range(g):
            t = 0.0
            for a in range(d):
                t += v[a] * basis[a, b]
            y[p, b] = t
            lo[b] = min(lo[b], t)
            hi[b] = max(hi[b], t)
    return y, lo, hi, big


@nb.njit(cache=True, nogil=True)
def assign_cells(x, dims, lo, cell, ncell, strides, pad):  # pragma: no cover - compiled
    """Linear cell id (grid padded by ``pad`` cells) of each point; int64, length N."""
    n = x.shape[0]
    g = dims.shape[0]
    cid = np.empty(n, dtype=np.int64)
    for p in range(n):
        c = 0
        for a in range(g):
            k = int(math.floor((np.float64(x[p, dims[a]]) - lo[a]) / cell))
            if k < 0:
                k = 0
            elif k > ncell[a] - 1:
                k = ncell[a] - 1
            c += (k + pad) * strides[a]
        cid[p] = c
    return cid


_M1 = np.uint64(0x5555555555555555)
_M2 = np.uint64(0x3333333333333333)
_M4 = np.uint64(0x0F0F0F0F0F0F0F0F)
_H01 = np.uint64(0x0101010101010101)
_ONE = np.uint64(1)


@nb.njit(cache=True, nogil=True, inline="always")
def _popcount(v):  # pragma: no cover - compiled
    v = v - ((v >> _ONE) & _M1)
    v = (v & _M2) + ((v >> np.uint64(2)) & _M2)
    v = (v + (v >> np.uint64(4))) & _M4
    return np.int64((v * _H01) >> np.uint64(56))


@nb.njit(cache=True, nogil=True, inline="always")
def _rank(bits, wrank, b):  # pragma: no cover - compiled
    """Number of occupied cells with id ``< b``."""
    w = b >> 6
    mask = (_ONE << np.uint64(b & 63)) - _ONE
    return wrank[w] + _popcount(bits[w] & mask)


@nb.njit(cache=True, nogil=True)
def build_cells(cid, num_cells):  # pragma: no cover - compiled
    """Sort points into cells with an occupancy bitmap and a rank directory.

    Memory is O(N + num_cells / 64): one bit per cell plus one int32 rank per
    64 cells (so large sparse grids stay cheap and cache-resident), and
    O(occupied) for the cell ranges.

    Returns ``(order, cstart, occupied, bits, wrank)``: ``order[k]`` is the
    point at sorted position ``k``; occupied cell ``a`` (ids ascending in
    ``occupied``) holds sorted positions ``cstart[a]:cstart[a + 1]``; the
    number of occupied cells with id ``< b`` is ``wrank[b >> 6]`` plus the
    popcount of ``bits[b >> 6]`` below bit ``b & 63``.
    """
    n = cid.shape[0]
    nw = (num_cells >> 6) + 1
    bits = np.zeros(nw, dtype=np.uint64)
    for p in range(n):
        c = cid[p]
        bits[c >> 6] |= _ONE << np.uint64(c & 63)
    wrank = np.empty(nw + 1, dtype=np.int32)
    wrank[0] = 0
    for w in range(nw):
        wrank[w + 1] = wrank[w] + _popcount(bits[w])
    m = wrank[nw]
    cstart = np.zeros(m + 1, dtype=np.int32)
    occupied = np.empty(m, dtype=np.int64)
    cidx = np.empty(n, dtype=np.int32)
    for p in range(n):
        a = _rank(bits, wrank, cid[p])
        cidx[p] = a
        occupied[a] = cid[p]
        cstart[a + 1] += 1
    for a in range(m):
        cstart[a + 1] += cstart[a]
    pos = cstart[:m].copy()
    order = np.empty(n, dtype=np.int32)
    for p in range(n):
        a = cidx[p]
        order[pos[a]] = p
        pos[a] += 1
    return order, cstart, occupied, bits, wrank


@nb.njit(cache=True, nogil=True, inline="always")
def _close(xs, p, q, r2):  # pragma: no cover - compiled
    # branch-free full sum: faster than an early exit (fewer mispredictions)
    s = 0.0
    for k in range(xs.shape[1]):
        d = np.float64(xs[p, k]) - np.float64(xs[q, k])
        s += d * d
    return s < r2


@nb.njit(cache=True, nogil=True)
def _grow(a, cap):  # pragma: no cover - compiled
    b = np.empty(cap, dtype=a.dtype)
    b[: a.shape[0]] = a
    return b


@nb.njit(cache=True, nogil=True, inline="always")
def _stencil_ranges(cstart, occupied, bits, wrank, rows, reach, sub, a, rs, re):  # pragma: no cover
    """Point ranges of occupied cell ``a``'s half stencil; returns ``(k, bound)``.

    The half stencil is: cells ``c + 1 .. c + sub`` and, for each positive row
    offset ``L`` (over the first ``g - 1`` grid dimensions), the run of cells
    ``c + L - reach .. c + L + reach``, whose points are one contiguous range
    of sorted positions (cells are sorted by linear id). Writes the ``k``
    non-empty ranges to ``rs``/``re`` and returns ``k`` and the number of
    candidate pairs of the cell.
    """
    c = occupied[a]
    n0 = cstart[a + 1] - cstart[a]
    bound = n0 * (n0 - 1) // 2
    k = 0
    s1 = cstart[a + 1]
    e1 = cstart[_rank(bits, wrank, c + sub + 1)]
    if e1 > s1:
        rs[k] = s1
        re[k] = e1
        bound += n0 * (e1 - s1)
        k += 1
    for o in range(rows.shape[0]):
        b = c + rows[o]
        s1 = cstart[_rank(bits, wrank, b - reach[o])]
        e1 = cstart[_rank(bits, wrank, b + reach[o] + 1)]
        if e1 > s1:
            rs[k] = s1
            re[k] = e1
            bound += n0 * (e1 - s1)
            k += 1
    return k, bound


@nb.njit(cache=True, nogil=True, inline="always")
def _scan(xt, p, s1, e1, r2, buf, ii, jj, e, fill):  # pragma: no cover
    """Test point ``p`` against the run ``s1:e1``; write from ``e``.

    Dimension-major over the run (``xt`` is the points transposed, ``D x N``): each
    dimension's squared differences are added into ``buf`` across the run, which
    vectorises; per pair the float64 sum is the same, in the same order of dimensions,
    as :func:`_close` computes.
    """
    n = e1 - s1
    for q in range(n):
        buf[q] = 0.0
    for k in range(xt.shape[0]):
        v = np.float64(xt[k, p])
        for q in range(n):
            d = v - np.float64(xt[k, s1 + q])
            buf[q] += d * d
    for q in range(n):
        if buf[q] < r2:
            if fill:
                ii[e] = p
                jj[e] = s1 + q
            e += 1
    return e


@nb.njit(cache=True, nogil=True, inline="always")
def _scan8(xt, p, s1, e1, r2, buf, ii, jj, e, fill):  # pragma: no cover
    """:func:`_scan` for 8 dimensions (the shipped embedding's), each pair's sum in
    registers: the same float64 operations in the same order."""
    n = e1 - s1
    v0 = np.float64(xt[0, p])
    v1 = np.float64(xt[1, p])
    v2 = np.float64(xt[2, p])
    v3 = np.float64(xt[3, p])
    v4 = np.float64(xt[4, p])
    v5 = np.float64(xt[5, p])
    v6 = np.float64(xt[6, p])
    v7 = np.float64(xt[7, p])
    for q in range(n):
        c = s1 + q
        d = v0 - np.float64(xt[0, c])
        acc = d * d
        d = v1 - np.float64(xt[1, c])
        acc += d * d
        d = v2 - np.float64(xt[2, c])
        acc += d * d
        d = v3 - np.float64(xt[3, c])
        acc += d * d
        d = v4 - np.float64(xt[4, c])
        acc += d * d
        d = v5 - np.float64(xt[5, c])
        acc += d * d
        d = v6 - np.float64(xt[6, c])
        acc += d * d
        d = v7 - np.float64(xt[7, c])
        acc += d * d
        buf[q] = acc
    for q in range(n):
        if buf[q] < r2:
            if fill:
                ii[e] = p
                jj[e] = s1 + q
            e += 1
    return e


@nb.njit(cache=True, nogil=True, inline="always")
def _scan8x2(xt, p, s1, e1, r2, buf, ii, jj, e, fill):  # pragma: no cover
    """:func:`_scan8` for points ``p`` and ``p + 1`` at once (each candidate's coordinates
    loaded once for both); pairs written as two :func:`_scan8` calls would write them."""
    n = e1 - s1
    a0 = np.float64(xt[0, p])
    a1 = np.float64(xt[1, p])
    a2 = np.float64(xt[2, p])
    a3 = np.float64(xt[3, p])
    a4 = np.float64(xt[4, p])
    a5 = np.float64(xt[5, p])
    a6 = np.float64(xt[6, p])
    a7 = np.float64(xt[7, p])
    b0 = np.float64(xt[0, p + 1])
    b1 = np.float64(xt[1, p + 1])
    b2 = np.float64(xt[2, p + 1])
    b3 = np.float64(xt[3, p + 1])
    b4 = np.float64(xt[4, p + 1])
    b5 = np.float64(xt[5, p + 1])
    b6 = np.float64(xt[6, p + 1])
    b7 = np.float64(xt[7, p + 1])
    m = buf.shape[0] // 2
    for q in range(n):
        c = s1 + q
        x0 = np.float64(xt[0, c])
        x1 = np.float64(xt[1, c])
        x2 = np.float64(xt[2, c])
        x3 = np.float64(xt[3, c])
        x4 = np.float64(xt[4, c])
        x5 = np.float64(xt[5, c])
        x6 = np.float64(xt[6, c])
        x7 = np.float64(xt[7, c])
        d = a0 - x0
        acc = d * d
        d = a1 - x1
        acc += d * d
        d = a2 - x2
        acc += d * d
        d = a3 - x3
        acc += d * d
        d = a4 - x4
        acc += d * d
        d = a5 - x5
        acc += d * d
        d = a6 - x6
        acc += d * d
        d = a7 - x7
        acc += d * d
        buf[q] = acc
        d = b0 - x0
        acc = d * d
        d = b1 - x1
        acc += d * d
        d = b2 - x2
        acc += d * d
        d = b3 - x3
        acc += d * d
        d = b4 - x4
        acc += d * d
        d = b5 - x5
        acc += d * d
        d = b6 - x6
        acc += d * d
        d = b7 - x7
        acc += d * d
        buf[m + q] = acc
    for q in range(n):
        if buf[q] < r2:
            if fill:
                ii[e] = p
                jj[e] = s1 + q
            e += 1
    for q in range(n):
        if buf[m + q] < r2:
            if fill:
                ii[e] = p + 1
                jj[e] = s1 + q
            e += 1
    return e


@nb.njit(cache=True, nogil=True, inline="always")
def _scan8x4(xt, p, s1, e1, r2, buf, ii, jj, e, fill):  # pragma: no cover
    """:func:`_scan8x2` for points ``p .. p + 3``."""
    n = e1 - s1
    a00 = np.float64(xt[0, p + 0])
    a01 = np.float64(xt[1, p + 0])
    a02 = np.float64(xt[2, p + 0])
    a03 = np.float64(xt[3, p + 0])
    a04 = np.float64(xt[4, p + 0])
    a05 = np.float64(xt[5, p + 0])
    a06 = np.float64(xt[6, p + 0])
    a07 = np.float64(xt[7, p + 0])
    a10 = np.float64(xt[0, p + 1])
    a11 = np.float64(xt[1, p + 1])
    a12 = np.float64(xt[2, p + 1])
    a13 = np.float64(xt[3, p + 1])
    a14 = np.float64(xt[4, p + 1])
    a15 = np.float64(xt[5, p + 1])
    a16 = np.float64(xt[6, p + 1])
    a17 = np.float64(xt[7, p + 1])
    a20 = np.float64(xt[0, p + 2])
    a21 = np.float64(xt[1, p + 2])
    a22 = np.float64(xt[2, p + 2])
    a23 = np.float64(xt[3, p + 2])
    a24 = np.float64(xt[4, p + 2])
    a25 = np.float64(xt[5, p + 2])
    a26 = np.float64(xt[6, p + 2])
    a27 = np.float64(xt[7, p + 2])
    a30 = np.float64(xt[0, p + 3])
    a31 = np.float64(xt[1, p + 3])
    a32 = np.float64(xt[2, p + 3])
    a33 = np.float64(xt[3, p + 3])
    a34 = np.float64(xt[4, p + 3])
    a35 = np.float64(xt[5, p + 3])
    a36 = np.float64(xt[6, p + 3])
    a37 = np.float64(xt[7, p + 3])
    m = buf.shape[0] // 4
    for q in range(n):
        c = s1 + q
        x0 = np.float64(xt[0, c])
        x1 = np.float64(xt[1, c])
        x2 = np.float64(xt[2, c])
        x3 = np.float64(xt[3, c])
        x4 = np.float64(xt[4, c])
        x5 = np.float64(xt[5, c])
        x6 = np.float64(xt[6, c])
        x7 = np.float64(xt[7, c])
        d = a00 - x0
        acc = d * d
        d = a01 - x1
        acc += d * d
        d = a02 - x2
        acc += d * d
        d = a03 - x3
        acc += d * d
        d = a04 - x4
        acc += d * d
        d = a05 - x5
        acc += d * d
        d = a06 - x6
        acc += d * d
        d = a07 - x7
        acc += d * d
        buf[0 * m + q] = acc
        d = a10 - x0
        acc = d * d
        d = a11 - x1
        acc += d * d
        d = a12 - x2
        acc += d * d
        d = a13 - x3
        acc += d * d
        d = a14 - x4
        acc += d * d
        d = a15 - x5
        acc += d * d
        d = a16 - x6
        acc += d * d
        d = a17 - x7
        acc += d * d
        buf[1 * m + q] = acc
        d = a20 - x0
        acc = d * d
        d = a21 - x1
        acc += d * d
        d = a22 - x2
        acc += d * d
        d = a23 - x3
        acc += d * d
        d = a24 - x4
        acc += d * d
        d = a25 - x5
        acc += d * d
        d = a26 - x6
        acc += d * d
        d = a27 - x7
        acc += d * d
        buf[2 * m + q] = acc
        d = a30 - x0
        acc = d * d
        d = a31 - x1
        acc += d * d
        d = a32 - x2
        acc += d * d
        d = a33 - x3
        acc += d * d
        d = a34 - x4
        acc += d * d
        d = a35 - x5
        acc += d * d
        d = a36 - x6
        acc += d * d
        d = a37 - x7
        acc += d * d
        buf[3 * m + q] = acc
    for q in range(n):
        if buf[0 * m + q] < r2:
            if fill:
                ii[e] = p + 0
                jj[e] = s1 + q
            e += 1
    for q in range(n):
        if buf[1 * m + q] < r2:
            if fill:
                ii[e] = p + 1
                jj[e] = s1 + q
            e += 1
    for q in range(n):
        if buf[2 * m + q] < r2:
            if fill:
                ii[e] = p + 2
                jj[e] = s1 + q
            e += 1
    for q in range(n):
        if buf[3 * m + q] < r2:
            if fill:
                ii[e] = p + 3
                jj[e] = s1 + q
            e += 1
    return e


@nb.njit(cache=True, nogil=True, inline="always")
def _emit(xt, s0, e0, rs, re, k, r2, buf, ii, jj, e, fill):  # pragma: no cover
    """Test the cell ``s0:e0`` against itself and the ranges; write from ``e``."""
    eight = xt.shape[0] == 8
    for p in range(s0, e0):
        if eight:
            e = _scan8(xt, p, p + 1, e0, r2, buf, ii, jj, e, fill)
        else:
            e = _scan(xt, p, p + 1, e0, r2, buf, ii, jj, e, fill)
    for t in range(k):
        if eight:
            p = s0
            while p + 3 < e0:
                e = _scan8x4(xt, p, rs[t], re[t], r2, buf, ii, jj, e, fill)
                p += 4
            while p + 1 < e0:
                e = _scan8x2(xt, p, rs[t], re[t], r2, buf, ii, jj, e, fill)
                p += 2
            if p < e0:
                e = _scan8(xt, p, rs[t], re[t], r2, buf, ii, jj, e, fill)
        else:
            for p in range(s0, e0):
                e = _scan(xt, p, rs[t], re[t], r2, buf, ii, jj, e, fill)
    return e


@nb.njit(cache=True, nogil=True)
def pairs_serial(
    xt, cstart, occupied, bits, wrank, rows, reach, sub, r2, capacity
):  # pragma: no cover
    """All pairs ``p < q`` (sorted positions) closer than ``sqrt(r2)``.

    Scans each occupied cell against itself and its half stencil, so each
    unordered pair is met once. Single pass: before a cell, the int32 buffers
    grow (doubling) if its candidate count could overflow them.
    Returns ``(ii, jj, num_pairs)`` (int32 buffers, first ``num_pairs`` valid).
    """
    cap = max(capacity, 16)
    ii = np.empty(cap, dtype=np.int32)
    jj = np.empty(cap, dtype=np.int32)
    rs = np.empty(rows.shape[0] + 1, dtype=np.int64)
    re = np.empty(rows.shape[0] + 1, dtype=np.int64)
    buf = np.empty(4 * xt.shape[1], dtype=np.float64)
    e = 0
    for a in range(occupied.shape[0]):
        k, bound = _stencil_ranges(cstart, occupied, bits, wrank, rows, reach, sub, a, rs, re)
        if e + bound > cap:
            cap = max(2 * cap, e + bound)
            ii = _grow(ii, cap)
            jj = _grow(jj, cap)
        e = _emit(xt, cstart[a], cstart[a + 1], rs, re, k, r2, buf, ii, jj, e, True)
    return ii, jj, e


@nb.njit(cache=True, nogil=True, parallel=True)
def pairs_parallel(xt, cstart, occupied, bits, wrank, rows, reach, sub, r2):  # pragma: no cover
    """Multi-threaded :func:`pairs_serial` over blocks of cells.

    Pass 1 bounds each block's pairs by its candidate count (rank lookups
    only, no distances); pass 2 scans each block once into its slice of
    bound-sized buffers; pass 3 compacts. Distances are computed once; the
    temporary buffers hold the candidate count (a few times the edge count).
    """
    m = occupied.shape[0]
    nr = rows.shape[0] + 1
    block = 256
    nblocks = (m + block - 1) // block
    bound = np.zeros(nblocks + 1, dtype=np.int64)
    for bi in nb.prange(nblocks):
        rs = np.empty(nr, dtype=np.int64)
        re = np.empty(nr, dtype=np.int64)
        tot = 0
        for a in range(bi * block, min(m, (bi + 1) * block)):
            _, bnd = _stencil_ranges(cstart, occupied, bits, wrank, rows, reach, sub, a, rs, re)
            tot += bnd
        bound[bi + 1] = tot
    for bi in range(nblocks):
        bound[bi + 1] += bound[bi]
    ti = np.empty(bound[nblocks], dtype=np.int32)
    tj = np.empty(bound[nblocks], dtype=np.int32)
    found = np.zeros(nblocks + 1, dtype=np.int64)
    for bi in nb.prange(nblocks):
        rs = np.empty(nr, dtype=np.int64)
        re = np.empty(nr, dtype=np.int64)
        buf = np.empty(4 * xt.shape[1], dtype=np.float64)
        e = bound[bi]
        for a in range(bi * block, min(m, (bi + 1) * block)):
            k, _ = _stencil_ranges(cstart, occupied, bits, wrank, rows, reach, sub, a, rs, re)
            e = _emit(xt, cstart[a], cstart[a + 1], rs, re, k, r2, buf, ti, tj, e, True)
        found[bi + 1] = e - bound[bi]
    for bi in range(nblocks):
        found[bi + 1] += found[bi]
    total = found[nblocks]
    ii = np.empty(total, dtype=np.int32)
    jj = np.empty(total, dtype=np.int32)
    for bi in nb.prange(nblocks):
        cnt = found[bi + 1] - found[bi]
        ii[found[bi] : found[bi] + cnt] = ti[bound[bi] : bound[bi] + cnt]
        jj[found[bi] : found[bi] + cnt] = tj[bound[bi] : bound[bi] + cnt]
    return ii, jj, total


@nb.njit(cache=True, nogil=True)
def _sort_small(v, s, t):  # pragma: no cover - compiled
    if t - s > 32:
        v[s:t] = np.sort(v[s:t])
        return
    for a in range(s + 1, t):
        key = v[a]
        b = a - 1
        while b >= s and v[b] > key:
            v[b + 1] = v[b]
            b -= 1
        v[b + 1] = key


@nb.njit(cache=True, nogil=True)
def canonicalise_pairs(ii, jj, num_pairs, order, n):  # pragma: no cover - compiled
    """Map sorted positions back to point indices and sort the pairs.

    Counting sort by the smaller index, then each row's partners sorted, so the
    result is the canonical ``2 x E`` int64 edge list (pairs are unique by
    construction, no deduplication needed). O(E + N).
    """
    row = np.zeros(n + 1, dtype=np.int64)
    for e in range(num_pairs):
        a = order[ii[e]]
        b = order[jj[e]]
        row[min(a, b) + 1] += 1
    for i in range(n):
        row[i + 1] += row[i]
    out = np.empty((2, num_pairs), dtype=np.int64)
    pos = row[:n].copy()
    for e in range(num_pairs):
        a = order[ii[e]]
        b = order[jj[e]]
        if a < b:
            lo = a
            hi = b
        else:
            lo = b
            hi = a
        out[1, pos[lo]] = hi
        pos[lo] += 1
    second = out[1]
    for i in range(n):
        s = row[i]
        t = row[i + 1]
        for k in range(s, t):
            out[0, k] = i
        if t - s > 1:
            _sort_small(second, s, t)
    return out
