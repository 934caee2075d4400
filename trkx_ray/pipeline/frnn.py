"""Fixed-radius nearest neighbours (FRNN) on a uniform cell grid.

Our own implementation of the cell-grid search the seed paper borrowed from
Hoetzlein (2014, "Fast fixed-radius nearest neighbors: interactive million-particle
fluids"), with a few additions for embedding spaces:

1. Grid frame (:func:`grid_frame`): the points are centred and rotated onto
   their principal axes (``rotate="pca"``, default). Learned embeddings fill a
   low-dimensional manifold; on raw axes its projection folds distant regions
   into the same cells. The exact distance always uses the original
   coordinates.
2. Grid (:func:`plan_grid`): the ``g`` frame dimensions of largest extent
   (default :data:`DEFAULT_GRID_DIMS`) with cell size ``r / subdiv`` (a hair
   above, so float rounding can never put two points closer than ``r`` more
   than ``subdiv`` cells apart), padded by ``subdiv`` empty cells on each side
   so every neighbour lookup is a plain linear offset. The stencil
   ``(2 subdiv + 1)^g`` is pruned to the cells that can hold a point within
   ``r`` and halved (offsets with positive linear index), so each unordered
   pair is met once.
3. Counting sort of the points into cells through an occupancy bitmap (one bit
   per cell) with a rank directory (one int32 per 64 cells): O(N + cells/64)
   memory, cache-resident, so sparse high-dimensional grids stay cheap. The
   coordinates are copied in cell order for locality.
4. Each occupied cell is scanned against itself and its half stencil; along
   the last grid dimension the stencil cells are consecutive, so each stencil
   row is one contiguous range of points (two rank lookups per row).
5. Pairs are mapped back to point indices and put in canonical order by a
   counting sort on the smaller index plus a per-row sort (O(E + N), no global
   sort of 64-bit keys).

Defaults (``grid_dims=5``, ``subdiv=1``) were the fastest on the PU200-like
points of :func:`trkx_ray.bench.clustered_points` (120k points,
D = 8, r = 0.1; 3 dims were ~10x slower, 4-6 dims and ``subdiv=2`` within
~20%). Memory stays bounded: the padded number of cells is capped by
``max_cells`` (default :func:`default_max_cells`: ``64 N`` clamped to
``[2^12, 2^26]``, i.e. at most ~12 MiB of bitmap and ranks) and the stencil by
``3^8`` cells; beyond them grid dimensions of smallest extent are dropped, and
with one dimension left the cell size grows. All points in one cell (or huge
coordinate ranges) degrade to brute force, never to unbounded memory.

Exact distance rule (shared by every backend of
:func:`trkx_ray.pipeline.build_edges`): coordinates are float32 (float64 input
stays float64); the squared distance is accumulated in float64 over dimensions
``0..D-1`` in order, ``d2 = sum_k (float64(x_ik) - float64(x_jk))^2``, and a pair
is an edge when ``d2 < float64(r)^2`` (strict: a pair at exactly ``r`` is not an
edge). Because every backend applies this same formula, they return
bit-identical edge sets.

Two implementations: a compiled numba CPU version (:func:`frnn_edges`, on
numba's thread count unless ``threads`` says otherwise; one thread: a serial
kernel, more: numba ``prange`` with a count pass and a fill pass) and a vectorised torch version for any device
(:func:`frnn_edges_torch`; sort by cell id, neighbour cells by
``searchsorted``, candidate pairs expanded in bounded chunks; no Python loop
over points or cells).

``k_max`` (optional, in :func:`trkx_ray.pipeline.build_edges`) caps the graph to
each point's ``k_max`` nearest neighbours within ``r``: a pair is kept when
either point has the other among its ``k_max`` nearest (ties broken by the
smaller neighbour index), i.e. the symmetrised kNN-within-radius graph.
"""

from __future__ import annotations

import logging
import math
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_GRID_DIMS",
    "DEFAULT_SUBDIV",
    "GridPlan",
    "check_points",
    "default_max_cells",
    "frnn_edges",
    "frnn_edges_torch",
    "grid_frame",
    "plan_grid",
]

logger = logging.getLogger(__name__)

#: Number of embedding dimensions the grid spans by default.
DEFAULT_GRID_DIMS = 5
#: Cells per radius by default (cell size ``r / DEFAULT_SUBDIV``).
DEFAULT_SUBDIV = 1
#: Cap on the (unpruned) stencil size ``(2 subdiv + 1)^g``: fewer grid dims beyond it.
_MAX_STENCIL = 3**8
#: Relative enlargement of the cell size over ``r``: guards the "neighbours are
#: at most one cell apart" property against float rounding of the cell index.
_CELL_MARGIN = 1e-6


def default_max_cells(n: int) -> int:
    """Default cap on the padded number of grid cells for ``n`` points."""
    return int(min(max(64 * n, 1 << 12), 1 << 26))


@dataclass(frozen=True)
class GridPlan:
    """The grid chosen for one search.

    Attributes:
        dims: the grid's embedding dimensions (int64, length ``g``).
        lo: lower corner of the bounding box in those dimensions (float64).
        cell: cell edge length (embedding units, ``>= r``).
        ncell: unpadded cells per grid dimension (int64).
        strides: linear strides of the padded grid (int64).
        num_cells: padded number of cells ``prod(ncell + 2)``.
        offsets: positive linear offsets of the half ``3^g`` stencil (int64).
        rows: positive linear offsets of the half stencil over the first
            ``g - 1`` grid dimensions (int64): each is the middle of a run of
            ``2 * reach + 1`` consecutive cells along the last grid dimension.
        reach: half-length of each row's run (int64, cells).
        subdiv: cells per radius (the zero row reaches ``subdiv`` cells).
        pad: empty padding cells on each side of each grid dimension.
    """

    dims: np.ndarray
    lo: np.ndarray
    cell: float
    ncell: np.ndarray
    strides: np.ndarray
    num_cells: int
    offsets: np.ndarray
    rows: np.ndarray
    reach: np.ndarray
    subdiv: int
    pad: int


def check_points(x: np.ndarray, r: float) -> None:
    """Raise ``ValueError`` for a non ``N x D`` array, NaN/inf or a bad radius."""
    if x.ndim != 2:
        raise ValueError(f"edge building: points must be N x D, got shape {tuple(x.shape)}")
    if not (isinstance(r, int | float | np.floating | np.integer) and math.isfinite(r) and r > 0):
        raise ValueError(f"edge building: radius r must be a finite number > 0, got {r!r}")
    if x.size and not np.isfinite(x).all():
        bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
        raise ValueError(
            f"edge building: points contain NaN or infinite coordinates "
            f"({bad.size} rows, first row {int(bad[0])})"
        )


def _stencil(g: int, s: int) -> np.ndarray:
    """Offsets (cell units) of the pruned ``(2s+1)^g`` stencil, ``K x g`` int64.

    With cells of size ``>= r / s``, two points in cells ``o`` apart are at
    least ``sum_d max(|o_d| - 1, 0)^2 (r / s)^2`` apart squared, so offsets
    with ``sum_d max(|o_d| - 1, 0)^2 >= s^2`` can never hold an edge.
    """
    axis = np.arange(-s, s + 1, dtype=np.int64)
    grid = np.array(np.meshgrid(*([axis] * g), indexing="ij")).reshape(g, -1).T
    gap = np.maximum(np.abs(grid) - 1, 0)
    return grid[(gap**2).sum(axis=1) < s * s]


def plan_grid(
    lo: np.ndarray,
    hi: np.ndarray,
    r: float,
    grid_dims: int = DEFAULT_GRID_DIMS,
    max_cells: int | None = None,
    n: int = 0,
    subdiv: int = DEFAULT_SUBDIV,
    abs_margin: float = 0.0,
) -> GridPlan:
    """Choose grid dimensions and cell size for a bounding box.

    Args:
        lo: per-dimension minimum of the grid coordinates (length ``D``).
        hi: per-dimension maximum of the grid coordinates.
        r: search radius (embedding units).
        grid_dims: wanted number of grid dimensions (clamped to ``[1, D]``).
        max_cells: cap on the padded number of cells (default
            :func:`default_max_cells` of ``n``).
        n: number of points (for the default cap).
        subdiv: cells per radius: cell size ``r / subdiv`` and a stencil
            reaching ``subdiv`` cells each way (pruned to the cells that can
            hold a point within ``r``).
        abs_margin: absolute enlargement of the cell (bound on the rounding
            error of the grid coordinates).

    Returns:
        The :class:`GridPlan`.
    """
    s = int(subdiv)
    if s < 1 or s > 4:
        raise ValueError(f"frnn option subdiv must be in 1..4, got {subdiv}")
    if int(grid_dims) < 1:
        raise ValueError(f"frnn option grid_dims must be >= 1, got {grid_dims}")
    cap = default_max_cells(n) if max_cells is None else int(max_cells)
    if cap < (2 * s + 1) ** 2:
        raise ValueError(f"frnn option max_cells must be >= {(2 * s + 1) ** 2}, got {max_cells}")
    lo = np.asarray(lo, dtype=np.float64)
    extent = np.asarray(hi, dtype=np.float64) - lo
    d = extent.shape[0]
    g = max(1, min(int(grid_dims), d))
    # dimensions of largest extent first (stable: ties keep dimension order)
    by_extent = np.argsort(-extent, kind="stable")
    cell = float(r) / s * (1.0 + _CELL_MARGIN) + float(abs_margin)

    def counts(dims: np.ndarray, c: float) -> np.ndarray:
        return np.floor(extent[dims] / c).astype(np.int64) + 1

    while True:
        dims = np.sort(by_extent[:g])
        nc = counts(dims, cell)
        total = math.prod(int(v) + 2 * s for v in nc)
        if (total <= cap and (2 * s + 1) ** g <= _MAX_STENCIL) or g == 1:
            break
        g -= 1
    if total > cap:  # one dimension, still too many cells: grow the cell
        cell = max(cell, float(extent[dims[0]]) / (cap - 2 * s - 1)) * (1.0 + _CELL_MARGIN)
        nc = counts(dims, cell)
        while int(nc[0]) + 2 * s > cap:
            cell *= 1.0 + 1e-3
            nc = counts(dims, cell)
        total = int(nc[0]) + 2 * s
    padded = nc + 2 * s
    strides = np.ones(g, dtype=np.int64)
    for a in range(g - 2, -1, -1):
        strides[a] = strides[a + 1] * padded[a + 1]
    stencil = _stencil(g, s)
    lin = stencil @ strides
    offsets = np.sort(lin[lin > 0]).astype(np.int64)
    # rows: stencil runs along the last grid dimension, one per offset of the
    # first g - 1 dimensions; their cells are consecutive in linear order
    row_key = stencil[:, :-1] @ strides[:-1] if g > 1 else np.zeros(len(stencil), np.int64)
    keys, inverse = np.unique(row_key, return_inverse=True)
    reach = np.zeros(len(keys), dtype=np.int64)
    np.maximum.at(reach, inverse, np.abs(stencil[:, -1]))
    pos = keys > 0
    return GridPlan(
        dims=dims.astype(np.int64),
        lo=lo[dims].copy(),
        cell=cell,
        ncell=nc.astype(np.int64),
        strides=strides,
        num_cells=int(total),
        offsets=offsets,
        rows=keys[pos].astype(np.int64),
        reach=reach[pos],
        subdiv=s,
        pad=s,
    )


def grid_frame(
    x: np.ndarray, rotate: str = "pca"
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Coordinates the grid is built on, and a bound on their rounding error.

    With ``rotate="pca"`` the points are centred and rotated onto their
    principal axes (float64), so the grid's first dimensions follow the
    directions of largest spread: embeddings fill a low-dimensional manifold
    whose projection onto raw axes folds distant regions into the same cells.
    Rotations preserve distances and each rotated coordinate difference is at
    most the full distance, so the neighbouring-cell property still holds; the
    exact distance test always uses the original coordinates. ``"none"``
    uses the raw axes (centred).

    Args:
        x: ``N x D`` points (``N >= 1``, numpy float32/float64).
        rotate: ``"pca"`` or ``"none"``.

    Returns:
        ``(y, lo, hi, margin)``: ``N x D`` float64 grid coordinates, their
        per-column minimum and maximum, and an absolute error bound to add to
        the cell size (embedding units).
    """
    from trkx_ray.pipeline import _frnn_kernels as k

    if rotate not in ("pca", "none"):
        raise ValueError(f"frnn option rotate must be 'pca' or 'none', got {rotate!r}")
    d = x.shape[1]
    mean, scatter = k.moments(x)
    if rotate == "pca":
        _, vecs = np.linalg.eigh(scatter)
        basis = np.ascontiguousarray(vecs[:, ::-1])
    else:
        basis = np.eye(d)
    y, lo, hi, big = k.project(x, mean, basis)
    margin = 16.0 * (d + 1) ** 1.5 * float(np.finfo(np.float64).eps) * big
    return y, lo, hi, margin


def _as_points(x: Any) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype != np.float64:
        x = x.astype(np.float32, copy=False)
    return np.ascontiguousarray(x)


def frnn_edges(
    x: Any,
    r: float,
    grid_dims: int = DEFAULT_GRID_DIMS,
    max_cells: int | None = None,
    subdiv: int = DEFAULT_SUBDIV,
    threads: int | None = None,
    rotate: str = "pca",
) -> np.ndarray:
    """Canonical radius-graph edges of ``x`` with the compiled cell-grid search.

    Args:
        x: ``N x D`` points (numpy; float32, float64 kept as float64).
        r: radius (embedding units); pairs with distance ``< r``.
        grid_dims: number of grid dimensions (see :func:`plan_grid`).
        max_cells: cap on the padded number of cells.
        subdiv: cells per radius (see :func:`plan_grid`).
        threads: ``None``: numba's current thread count
            (``numba.get_num_threads()``, which a Ray actor with ``K`` cores and
            the bench's ``--threads`` set to ``K``); ``1``: single-threaded kernel;
            ``> 1``: the parallel kernel on that many threads.
        rotate: grid axes, ``"pca"`` (principal axes, default) or ``"none"``
            (see :func:`grid_frame`).

    Returns:
        ``2 x E`` int64 canonical edges.
    """
    from trkx_ray.pipeline import _frnn_kernels as k

    x = _as_points(x)
    check_points(x, r)
    n = x.shape[0]
    if n < 2:
        return np.zeros((2, 0), dtype=np.int64)
    if n >= 2**31 - 1:
        raise ValueError(f"frnn supports fewer than 2^31 points, got {n}")
    y, lo, hi, margin = grid_frame(x, rotate)
    plan = plan_grid(lo, hi, r, grid_dims, max_cells, n, subdiv, margin)
    cid = k.assign_cells(y, plan.dims, plan.lo, plan.cell, plan.ncell, plan.strides, plan.pad)
    order, cstart, occupied, bits, wrank = k.build_cells(cid, plan.num_cells)
    xt = np.ascontiguousarray(x[order].T)  # D x N: the kernels scan runs of points per dimension
    r2 = float(r) ** 2
    import numba

    # numba's OpenMP layer shares the process's OpenMP runtime with torch: launching it
    # (numba's first thread call) and its parallel regions leave torch's intra-op thread
    # count at numba's (measured: torch set to 1 thread ran on 2 after this function,
    # docs/benchmarks.md "Session 17"); torch's count is put back at the end
    torch_mod = sys.modules.get("torch")
    torch_threads = torch_mod.get_num_threads() if torch_mod is not None else None
    try:
        if threads is None:
            threads = numba.get_num_threads()
        if int(threads) > 1:
            before = numba.get_num_threads()
            numba.set_num_threads(min(int(threads), numba.config.NUMBA_NUM_THREADS))  # type: ignore[attr-defined]
            try:
                ii, jj, e = k.pairs_parallel(
                    xt, cstart, occupied, bits, wrank, plan.rows, plan.reach, plan.subdiv, r2
                )
            finally:
                numba.set_num_threads(before)
        else:
            ii, jj, e = k.pairs_serial(
                xt, cstart, occupied, bits, wrank, plan.rows, plan.reach, plan.subdiv, r2,
                16 * n
            )
    finally:
        if torch_mod is not None and torch_mod.get_num_threads() != torch_threads:
            torch_mod.set_num_threads(torch_threads)
    logger.debug(
        "frnn: n=%d grid dims=%s cells=%d occupied=%d edges=%d",
        n,
        plan.dims.tolist(),
        plan.num_cells,
        occupied.shape[0],
        e,
    )
    return k.canonicalise_pairs(ii, jj, e, order, n)


def frnn_edges_torch(
    x: Any,
    r: float,
    grid_dims: int = DEFAULT_GRID_DIMS,
    max_cells: int | None = None,
    subdiv: int = DEFAULT_SUBDIV,
    rotate: str = "pca",
    chunk_pairs: int | None = None,
) -> Any:
    """Cell-grid radius graph in vectorised torch on ``x``'s device (GPU-ready).

    Points are sorted by cell id; the occupied cells' neighbour cells (half
    stencil) are found with ``searchsorted``; the candidate pairs of all
    (cell, neighbour cell) couples are expanded in chunks of at most
    ``chunk_pairs`` and kept when the exact distance rule holds. Same result as
    :func:`frnn_edges`.

    Args:
        x: ``N x D`` torch tensor (float32; float64 kept).
        r: radius (embedding units).
        grid_dims: number of grid dimensions.
        max_cells: cap on the padded number of cells.
        subdiv: cells per radius (see :func:`plan_grid`).
        rotate: grid axes, ``"pca"`` or ``"none"`` (see :func:`grid_frame`).
        chunk_pairs: candidate pairs per chunk (default ``2^23`` on CUDA,
            ``2^21`` on CPU); bounds the memory.

    Returns:
        ``2 x E`` int64 canonical edges on ``x``'s device.
    """
    import torch

    if x.dtype != torch.float64:
        x = x.to(torch.float32)
    dev = x.device
    if x.dim() != 2:
        raise ValueError(f"edge building: points must be N x D, got shape {tuple(x.shape)}")
    n = x.shape[0]
    if n and not bool(torch.isfinite(x).all()):
        check_points(x.detach().cpu().numpy(), r)
    check_points(np.zeros((0, x.shape[1]), dtype=np.float32), r)
    if n < 2:
        return torch.zeros((2, 0), dtype=torch.int64, device=dev)
    if chunk_pairs is None:
        chunk_pairs = 1 << 23 if dev.type == "cuda" else 1 << 21
    x = x.detach().contiguous()
    if rotate not in ("pca", "none"):
        raise ValueError(f"frnn option rotate must be 'pca' or 'none', got {rotate!r}")
    xc = x.double() - x.double().mean(dim=0)
    if rotate == "pca":
        _, vecs = torch.linalg.eigh((xc.T @ xc).cpu())
        y = xc @ vecs.flip(1).to(dev)
    else:
        y = xc
    d = x.shape[1]
    margin = 16.0 * (d + 1) ** 1.5 * float(np.finfo(np.float64).eps) * float(xc.abs().max())
    lo = y.min(dim=0).values.cpu().numpy()
    hi = y.max(dim=0).values.cpu().numpy()
    plan = plan_grid(lo, hi, r, grid_dims, max_cells, n, subdiv, margin)
    dims = torch.from_numpy(plan.dims).to(dev)
    idx = torch.floor((y[:, dims] - torch.from_numpy(plan.lo).to(dev)) / plan.cell)
    ncell = torch.from_numpy(plan.ncell).to(dev)
    idx = torch.minimum(idx.long().clamp_min_(0), ncell - 1) + plan.pad
    cid = (idx * torch.from_numpy(plan.strides).to(dev)).sum(dim=1)
    cid_sorted, order = torch.sort(cid, stable=True)
    occ, counts = torch.unique_consecutive(cid_sorted, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    xs = x[order]
    m = occ.shape[0]
    # cell couples: (a, a) for each occupied cell, then (a, b) over the half stencil
    offs = torch.from_numpy(plan.offsets).to(dev)
    nb_ids = (occ[:, None] + offs[None, :]).reshape(-1)
    pos = torch.searchsorted(occ, nb_ids).clamp_max_(m - 1)
    found = occ[pos] == nb_ids
    ca = torch.arange(m, device=dev).repeat_interleave(offs.shape[0])[found]
    cb = pos[found]
    self_cells = torch.arange(m, device=dev)
    ca = torch.cat([self_cells, ca])
    cb = torch.cat([self_cells, cb])
    num_self = m
    work = counts[ca] * counts[cb]
    cum = torch.cumsum(work, 0)
    total = int(cum[-1])
    cum_ex = cum - work
    r2 = float(r) ** 2
    out_i, out_j = [], []
    for t0 in range(0, total, chunk_pairs):
        t = torch.arange(t0, min(t0 + chunk_pairs, total), device=dev, dtype=torch.int64)
        c = torch.searchsorted(cum, t, right=True)
        k = t - cum_ex[c]
        nbb = counts[cb[c]]
        p = starts[ca[c]] + torch.div(k, nbb, rounding_mode="floor")
        q = starts[cb[c]] + k % nbb
        keep = (c >= num_self) | (p < q)
        p, q = p[keep], q[keep]
        d2 = torch.zeros(p.shape[0], dtype=torch.float64, device=dev)
        for dim in range(x.shape[1]):  # loop over the few embedding dimensions
            diff = xs[p, dim].double() - xs[q, dim].double()
            d2.add_(torch.square(diff))
        close = d2 < r2
        out_i.append(p[close])
        out_j.append(q[close])
    if not out_i:
        return torch.zeros((2, 0), dtype=torch.int64, device=dev)
    a = order[torch.cat(out_i)]
    b = order[torch.cat(out_j)]
    key = torch.sort(torch.minimum(a, b) * n + torch.maximum(a, b)).values
    return torch.stack([torch.div(key, n, rounding_mode="floor"), key % n])
