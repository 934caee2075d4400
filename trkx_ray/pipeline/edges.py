"""Edge building: all pairs of points closer than a radius in embedding space.

One entry point, :func:`build_edges`, with backends chosen by name:

* ``radius``: exact brute force in row chunks (the seed paper's slow baseline):
  squared distances by one matrix product per chunk select candidates with a
  small slack, the exact rule below decides. Runs in torch on the input's
  device (a CUDA tensor runs on the GPU).
* ``faiss``: with ``k_max=None`` an exact ``range_search`` on a flat L2 index
  (faiss-cpu; faiss's GPU indexes have no range search, so CUDA input is
  searched on the host). With ``k_max=k`` a kNN search (``k + 1`` neighbours,
  the point itself included) followed by the radius cut, on the GPU with
  faiss-gpu when installed and the input is a CUDA tensor, else on the CPU.
  faiss works with SQUARED L2 distances in float32 with the
  ``|x|^2 + |y|^2 - 2 x.y`` expansion: its candidates are taken with a slack
  radius and then re-checked with the exact rule, so ``range_search`` returns
  exactly the ``radius`` edge set (the slack, :data:`FAISS_SLACK` relative to
  ``r^2`` and to the squared coordinate scale, is ~100 times faiss's float32
  error bound). The kNN mode is approximate in another sense: a point
  with more than ``k`` neighbours inside ``r`` loses the farther ones.
  :data:`DEFAULT_K_MAX` is the suggested ``k`` for pipeline configs.
* ``frnn``: our own cell-grid fixed-radius search (:mod:`trkx_ray.pipeline.frnn`):
  compiled numba on the CPU (``threads`` option for the parallel kernel),
  vectorised torch on CUDA tensors (``impl="torch"`` forces it on the CPU).

Exact distance rule (all backends): squared distance accumulated in float64
over dimensions ``0..D-1`` in order from float32 coordinates (float64 input
stays float64), pair kept when ``d2 < r^2`` (strict: a pair at exactly ``r``
is not an edge). All exact backends therefore give bit-identical edge sets.

``k_max`` (all backends): keep each point's ``k_max`` nearest neighbours within
``r`` (ties by the smaller index; faiss: faiss's kNN order); a pair is kept
when either endpoint keeps the other.

Edges are returned canonically: each unordered pair once as ``(i, j)`` with
``i < j``, sorted lexicographically, as a ``2 x E`` int64 array (numpy input)
or tensor on the input's device (torch input).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from trkx_ray.pipeline.config import EDGE_BACKEND_OPTIONS
from trkx_ray.pipeline.frnn import check_points

__all__ = [
    "DEFAULT_K_MAX",
    "EDGE_BACKENDS",
    "FAISS_SLACK",
    "build_edges",
    "canonical_edges",
    "cap_neighbours",
    "pair_sqdist",
]

logger = logging.getLogger(__name__)

#: Suggested neighbour cap for kNN-style edge building in pipeline configs.
DEFAULT_K_MAX = 64
#: Relative slack on ``r^2`` (plus this times the squared coordinate scale) for
#: candidate selection by float32 matrix-product distances (radius, faiss).
FAISS_SLACK = 1e-5


def canonical_edges(i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Return the pairs ``(i, j)`` as sorted unique ``2 x E`` int64 with ``i < j``."""
    i = np.asarray(i, dtype=np.int64)
    j = np.asarray(j, dtype=np.int64)
    lo = np.minimum(i, j)
    hi = np.maximum(i, j)
    keep = lo != hi
    lo, hi = lo[keep], hi[keep]
    if lo.size == 0:
        return np.zeros((2, 0), dtype=np.int64)
    n = int(hi.max()) + 1
    key = np.unique(lo * n + hi)
    return np.stack([key // n, key % n]).astype(np.int64)


def _points_dtype(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype != np.float64:
        x = x.astype(np.float32, copy=False)
    return np.ascontiguousarray(x)


def pair_sqdist(x: Any, i: Any, j: Any) -> Any:
    """Squared distances of pairs with the exact rule (float64, dims in order).

    Works on numpy arrays or torch tensors (on their device).
    """
    if type(x).__module__.startswith("torch"):
        import torch

        d2 = torch.zeros(i.shape[0], dtype=torch.float64, device=x.device)
        for k in range(x.shape[1]):  # loop over the few embedding dimensions
            d2.add_(torch.square(x[i, k].double() - x[j, k].double()))
        return d2
    d2n = np.zeros(len(i), dtype=np.float64)
    for k in range(x.shape[1]):  # loop over the few embedding dimensions
        diff = x[i, k].astype(np.float64) - x[j, k].astype(np.float64)
        d2n += diff * diff
    return d2n


def _radius_torch(xt: Any, r: float, chunk: int | None = None) -> Any:
    """Brute force on ``xt``'s device; canonical edges as a tensor there."""
    import torch

    n = xt.shape[0]
    dev = xt.device
    if n < 2:
        return torch.zeros((2, 0), dtype=torch.int64, device=dev)
    if chunk is None:
        chunk = max(1, min(n, (1 << 24) // n))
    r2 = float(r) ** 2
    with torch.no_grad():
        # centre in float64 first: float32 rounding is then relative to the
        # centred scale, which the slack covers
        x64 = xt.double()
        xc = (x64 - x64.mean(dim=0)).float()
        sq = (xc * xc).sum(dim=1)
        scale = float(sq.max())
        thresh = r2 * (1.0 + FAISS_SLACK) + FAISS_SLACK * 4.0 * scale
        rows, cols = [], []
        for start in range(0, n - 1, chunk):
            stop = min(start + chunk, n)
            block = xc[start:stop]
            # only the upper triangle: columns from `start` on, then j > i
            d2 = torch.addmm(sq[start:][None, :], block, xc[start:].T, alpha=-2.0)
            d2.add_(sq[start:stop, None])
            ii, jj = torch.nonzero(d2 < thresh, as_tuple=True)
            ii = ii + start
            jj = jj + start
            keep = jj > ii
            ii, jj = ii[keep], jj[keep]
            exact = pair_sqdist(xt, ii, jj) < r2
            rows.append(ii[exact])
            cols.append(jj[exact])
    # row chunks in order, nonzero() is row-major: already lexicographic
    return torch.stack([torch.cat(rows), torch.cat(cols)])


def _radius(x: Any, r: float, **opts: Any) -> Any:
    import torch

    if isinstance(x, np.ndarray):
        return _radius_torch(torch.from_numpy(x), r, **opts).numpy()
    return _radius_torch(x, r, **opts)


def _import_faiss() -> Any:
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - faiss-cpu is a dependency
        raise ImportError(
            "edge backend 'faiss' needs faiss: pip install faiss-cpu "
            "(or faiss-gpu-cu12 / pip install trkx_ray[gpu] for CUDA)"
        ) from exc
    return faiss


#: set once the missing faiss-gpu has been logged (the search falls back to the CPU).
_warned_no_faiss_gpu = False


def _faiss(x: Any, r: float, k_max: int | None = None, threads: int | None = None) -> np.ndarray:
    global _warned_no_faiss_gpu
    faiss = _import_faiss()
    on_cuda = not isinstance(x, np.ndarray) and x.device.type == "cuda"
    xn = x if isinstance(x, np.ndarray) else x.detach().cpu().numpy()
    n, d = xn.shape
    if n < 2:
        return np.zeros((2, 0), dtype=np.int64)
    r2 = float(r) ** 2
    # centred in float64, then float32: smaller norms, smaller float32 error
    x64 = np.asarray(xn, dtype=np.float64)
    xq = np.ascontiguousarray(x64 - x64.mean(axis=0), dtype=np.float32)
    scale = float((xq.astype(np.float64) ** 2).sum(axis=1).max())
    thresh = r2 * (1.0 + FAISS_SLACK) + FAISS_SLACK * 4.0 * scale
    before = faiss.omp_get_max_threads()
    if threads is not None:
        faiss.omp_set_num_threads(int(threads))
    try:
        index: Any = faiss.IndexFlatL2(d)
        if k_max is None:
            index.add(xq)
            lims, _, nbr = index.range_search(xq, thresh)
            src = np.repeat(np.arange(n, dtype=np.int64), np.diff(lims.astype(np.int64)))
            dst = nbr.astype(np.int64)
        else:
            if on_cuda and hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0:
                res = faiss.StandardGpuResources()
                index = faiss.index_cpu_to_gpu(res, x.device.index or 0, index)
            elif on_cuda and not _warned_no_faiss_gpu:
                _warned_no_faiss_gpu = True  # one log line per process, not one per event
                logger.warning(
                    "faiss: faiss-gpu is not installed (pip install trkx_ray[gpu]): the kNN "
                    "search of CUDA points runs on the CPU"
                )
            index.add(xq)
            k = min(int(k_max) + 1, n)
            dist, nbr = index.search(xq, k)
            src = np.repeat(np.arange(n, dtype=np.int64), k)
            dst = nbr.reshape(-1).astype(np.int64)
            ok = (dst >= 0) & (dist.reshape(-1) < thresh)
            src, dst = src[ok], dst[ok]
    finally:
        faiss.omp_set_num_threads(before)
    keep = src != dst
    src, dst = src[keep], dst[keep]
    exact = pair_sqdist(xn, src, dst) < r2
    return canonical_edges(src[exact], dst[exact])


def _frnn(x: Any, r: float, impl: str | None = None, **opts: Any) -> Any:
    from trkx_ray.pipeline.frnn import frnn_edges, frnn_edges_torch

    if impl not in (None, "numba", "torch"):
        raise ValueError(f"frnn option impl must be 'numba' or 'torch', got {impl!r}")
    is_torch = not isinstance(x, np.ndarray)
    use_torch = impl == "torch" or (impl is None and is_torch and x.device.type != "cpu")
    if use_torch:
        import torch

        opts.pop("threads", None)
        xt = x if is_torch else torch.from_numpy(x)
        out = frnn_edges_torch(xt, r, **opts)
        return out if is_torch else out.numpy()
    opts.pop("chunk_pairs", None)
    xn = x if not is_torch else x.detach().cpu().numpy()
    out = frnn_edges(xn, r, **opts)
    if is_torch:
        import torch

        return torch.from_numpy(out).to(x.device)
    return out


#: Backend name -> implementation ``(x, r, **opts) -> edges``; the names and the
#: options each takes are declared in :data:`trkx_ray.pipeline.config.EDGE_BACKEND_OPTIONS`.
EDGE_BACKENDS: dict[str, Callable[..., Any]] = {
    "radius": _radius,
    "faiss": _faiss,
    "frnn": _frnn,
}


def cap_neighbours(x: Any, edges: Any, k_max: int) -> Any:
    """Keep each point's ``k_max`` nearest neighbours among ``edges``.

    A pair survives when either endpoint ranks the other among its ``k_max``
    nearest (exact distance rule; ties by the smaller neighbour index). The
    result stays canonical. numpy or torch (any device) in, same out.
    """
    import torch

    is_np = isinstance(edges, np.ndarray)
    et = torch.from_numpy(edges) if is_np else edges
    xt = torch.from_numpy(np.asarray(x)) if is_np else x
    e = et.shape[1]
    if e == 0:
        return edges
    d2 = pair_sqdist(xt, et[0], et[1])
    src = torch.cat([et[0], et[1]])
    dst = torch.cat([et[1], et[0]])
    dd = torch.cat([d2, d2])
    # lexicographic (src, d2, dst) order by stable sorts, last key first
    order = torch.sort(dst, stable=True).indices
    order = order[torch.sort(dd[order], stable=True).indices]
    order = order[torch.sort(src[order], stable=True).indices]
    s_sorted = src[order]
    first = torch.ones_like(s_sorted, dtype=torch.bool)
    first[1:] = s_sorted[1:] != s_sorted[:-1]
    pos = torch.arange(s_sorted.shape[0], device=s_sorted.device)
    group_start = torch.cummax(torch.where(first, pos, torch.zeros_like(pos)), 0).values
    kept_dir = torch.zeros(2 * e, dtype=torch.bool, device=et.device)
    kept_dir[order] = (pos - group_start) < int(k_max)
    keep = kept_dir[:e] | kept_dir[e:]
    out = et[:, keep]
    return out.numpy() if is_np else out


def build_edges(
    x: Any, r: float, backend: str = "radius", k_max: int | None = None, **opts: Any
) -> Any:
    """Build the radius graph of points ``x`` (``N x D``).

    Args:
        x: points, numpy array or torch tensor, float (float64 is kept, other
            dtypes become float32).
        r: radius in the embedding space's units (pairs with distance < r).
        backend: one of :data:`EDGE_BACKENDS` (``radius``, ``faiss``, ``frnn``).
        k_max: optional cap on neighbours per point (see the module doc);
            ``None`` = all pairs within ``r``.
        **opts: backend options. ``radius``: ``chunk`` (rows per block).
            ``faiss``: ``threads`` (OpenMP threads). ``frnn``: ``grid_dims``,
            ``subdiv``, ``max_cells``, ``rotate``, ``threads``,
            ``impl`` (``"numba"``/``"torch"``), ``chunk_pairs`` (torch).

    Returns:
        ``2 x E`` int64 canonical edges (same kind/device as ``x``).

    Raises:
        ValueError: unknown backend, bad option, bad shape, NaN/inf points,
            bad ``r`` or ``k_max``.
    """
    if backend not in EDGE_BACKENDS:
        raise ValueError(f"unknown edge backend {backend!r}; choose one of {sorted(EDGE_BACKENDS)}")
    allowed = EDGE_BACKEND_OPTIONS[backend]
    bad = sorted(set(opts) - allowed)
    if bad:
        raise ValueError(
            f"unknown option(s) {bad} for edge backend {backend!r}; valid: {sorted(allowed)}"
        )
    if k_max is not None and (isinstance(k_max, bool) or int(k_max) != k_max or k_max < 1):
        raise ValueError(f"edge building: k_max must be None or an integer >= 1, got {k_max!r}")
    is_torch = type(x).__module__.startswith("torch")
    if is_torch:
        import torch

        xt = x.detach()
        if xt.dtype != torch.float64:
            xt = xt.to(torch.float32)
        if xt.dim() != 2:
            raise ValueError(f"edge building: points must be N x D, got shape {tuple(xt.shape)}")
        if xt.numel() and not bool(torch.isfinite(xt).all()):
            check_points(xt.cpu().numpy(), r)
        check_points(np.zeros((0, xt.shape[1]), dtype=np.float32), r)
        xin: Any = xt.contiguous()
    else:
        xin = _points_dtype(x)
        check_points(xin, r)
    if backend == "faiss":
        edges: Any = _faiss(xin, r, k_max=k_max, **opts)
        if is_torch:
            import torch

            edges = torch.from_numpy(edges).to(x.device)
        return edges
    edges = EDGE_BACKENDS[backend](xin, r, **opts)
    if k_max is not None:
        edges = cap_neighbours(xin, edges, int(k_max))
    return edges
