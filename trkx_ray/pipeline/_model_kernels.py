"""Compiled (numba) kernels of the models' CPU inference: the GNN's message aggregation
and the filter's and GNN's pair geometry.

Imported lazily by :mod:`trkx_ray.pipeline.models` (numba is heavy to import).

**Aggregation.** ``torch.Tensor.index_add_`` on one CPU core scatters element by element (about 0.5
billion additions a second) and needs the messages in float32, which under bf16 means a
cast of every message first; these kernels add each edge's message row onto both of its
hits in one pass over the edges, reading bf16 rows directly (a bf16 is the upper half of
a float32). Accumulation is float32, in edge order, as ``index_add_``'s (the sums agree
to float rounding; docs/benchmarks.md, "Session 17").

**Gathered sums.** The GNN's per-edge networks start from ``a[src] + b[dst]`` (the two
hits' projections): in float32 :func:`gather_add_rows_f32` reads both rows and writes the
sum in one pass (2.5x faster than ``index_select`` twice and ``add_`` on 16384 x 64 rows,
bit for bit the same, tested). In bf16 a compiled version measured no faster than torch's
(the rounding back to bf16 costs what the pass saves), so bf16 keeps torch's.

**Pair geometry.** :func:`~trkx_ray.pipeline.models.pair_geometry` is some 25 elementwise
torch operations on each chunk of edges; :func:`pair_terms` computes the same columns in
one pass, in float32 with every constant float32 and the operations in torch's order
(no ``fastmath``), so the columns are bit for bit torch's (tested).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

__all__ = ["gather_add_rows_f32", "pair_terms", "scatter_rows_bf16", "scatter_rows_f32"]


@nb.njit(cache=True, nogil=True)
def scatter_rows_f32(src, dst, m, incoming, outgoing):  # pragma: no cover - compiled
    """``incoming[dst[k]] += m[k]`` and ``outgoing[src[k]] += m[k]`` for every edge ``k``."""
    h = m.shape[1]
    for k in range(m.shape[0]):
        d = dst[k]
        s = src[k]
        for j in range(h):
            v = m[k, j]
            incoming[d, j] += v
            outgoing[s, j] += v


@nb.njit(cache=True, nogil=True)
def scatter_rows_bf16(src, dst, m_bits, incoming, outgoing):  # pragma: no cover - compiled
    """As :func:`scatter_rows_f32` for bf16 messages given as their 16-bit patterns
    (``int16``): each is widened exactly to float32 (the pattern shifted up 16 bits)."""
    h = m_bits.shape[1]
    bits = np.zeros(h, dtype=np.uint32)
    row = bits.view(np.float32)
    for k in range(m_bits.shape[0]):
        for j in range(h):
            bits[j] = np.uint32(np.uint16(m_bits[k, j])) << np.uint32(16)
        d = dst[k]
        s = src[k]
        for j in range(h):
            incoming[d, j] += row[j]
            outgoing[s, j] += row[j]


@nb.njit(cache=True, nogil=True)
def gather_add_rows_f32(a, b, src, dst, out):  # pragma: no cover - compiled
    """``out[k] = a[src[k]] + b[dst[k]]`` for every edge ``k`` (float32 rows)."""
    h = a.shape[1]
    for k in range(src.shape[0]):
        s = src[k]
        d = dst[k]
        for j in range(h):
            out[k, j] = a[s, j] + b[d, j]


_F = np.float32
_PI = _F(math.pi)
_TWO_PI = _F(2 * math.pi)


@nb.njit(cache=True, nogil=True, inline="always")
def _clamp(v, lo, hi):  # pragma: no cover - compiled
    return lo if v < lo else (hi if v > hi else v)


@nb.njit(cache=True, nogil=True)
def pair_terms(geo, src, dst, shape, shape_scale, out):  # pragma: no cover - compiled
    """The columns of :func:`~trkx_ray.pipeline.models.pair_geometry` for edges
    ``(src[k], dst[k])`` of the per-hit columns ``geo`` (float32, ``N x 3`` or, with
    ``shape``, ``N x 5``), written to ``out`` (``E x 5`` or ``E x 8`` float32)."""
    ten = _F(10.0)
    five = _F(5.0)
    four = _F(4.0)
    half = _F(0.5)
    twenty = _F(20.0)
    min_run = _F(0.005)
    scale = _F(shape_scale)
    for k in range(src.shape[0]):
        a = src[k]
        b = dst[k]
        dr = geo[b, 0] - geo[a, 0]
        dphi = (geo[b, 1] - geo[a, 1]) * _PI
        dphi = dphi - _TWO_PI * np.rint(dphi / _TWO_PI)
        dz = geo[b, 2] - geo[a, 2]
        run = max(abs(dr), min_run)
        out[k, 0] = ten * dr
        out[k, 1] = ten * dphi
        out[k, 2] = ten * dz
        out[k, 3] = _clamp(dphi / run, -five, five)
        out[k, 4] = _clamp(five * (geo[a, 2] - geo[a, 0] * dz / run), -five, five)
        if shape:
            cot = min(abs(dz) / run, twenty)
            ca = scale * geo[a, 3]
            cb = scale * geo[b, 3]
            out[k, 5] = half * _clamp(cot - ca, -four, four) * geo[a, 4]
            out[k, 6] = half * _clamp(cot - cb, -four, four) * geo[b, 4]
            out[k, 7] = _clamp(ca - cb, -four, four) * (geo[a, 4] * geo[b, 4])
