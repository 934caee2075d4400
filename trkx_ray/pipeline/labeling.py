"""Labeling: turn scored edges into one track label per hit.

One entry point, :func:`label_hits`, with backends chosen by name:

* ``scipy``: connected components (``scipy.sparse.csgraph``) of the graph of
  edges with ``score > cut``.
* ``sknetwork``: the same with scikit-network's connected components.
* ``torch``: our own vectorised connected components (FastSV: stochastic and
  aggressive hooking with ``scatter_reduce(amin)`` plus shortcutting) on the
  input tensors' device; only the final labels are copied to the host.
* ``cugraph``: RAPIDS cuGraph connected components on a CUDA GPU (optional
  extra ``pip install trkx_ray[gpu]``; imported lazily).
* ``dbscan``: scikit-learn DBSCAN on a precomputed sparse distance matrix
  built from the kept edges, distance ``1 - score`` (the Exa.TrkX baseline).
  Options ``eps`` (default 0.25) and ``min_samples`` (default 2); DBSCAN's
  noise hits become singletons. With ``eps >= 1 - cut`` and
  ``min_samples <= 2`` it gives exactly the connected components.
* ``walk``: "CC and walk" track building (Exa.TrkX / acorn), compiled with
  numba. The graph of edges with ``score > cut`` (``cut`` low here, e.g.
  0.05: it is the component cut) is split into connected components; a
  component that is a simple path (every hit at most one inner and one outer
  neighbour) is a track. The other components are walked: hits in topological
  order (edges must be oriented inner -> outer, so the graph is a DAG), and from
  each hit not yet on a track the longest road outwards over unused hits, where
  a hit continues along each outer edge scoring above ``walk_add`` (branches:
  a second-best edge, e.g. the other hit of a double hit or an edge that skips
  a hit) or else along its best outer edge if that scores above ``walk_min``;
  ties go to the larger summed score. The road's hits become a track; a hit
  whose road is only itself is a singleton. Options ``walk_min`` (default
  :data:`DEFAULT_WALK_MIN`) and ``walk_add`` (default :data:`DEFAULT_WALK_ADD`).
  Option ``attach`` (off by default) then gives left-over hits a track: a hit
  whose track has at most ``attach_max`` hits (default 3: a singleton or a
  short road) joins the track of its best-scored neighbour over an edge scoring
  above ``attach`` (any edge of the input, also below ``cut``) when that track
  has at least ``attach_min`` hits (default 5, a candidate track); each hit of
  such a track takes at most one hit, the best-scored one. One pass, so hits
  never chain through each other and the result does not depend on edge order.

Labels are canonical: components numbered 0..C-1 in order of their smallest
hit index, so partitions from different backends compare with ``==``.
Hits with no kept edge form singleton components.

Optional pruning before clustering (``prune="best"``, every backend): of the
edges above the cut, keep only each hit's highest-scoring edge to an outer hit
and each hit's highest-scoring edge from an inner hit (edges oriented inner ->
outer, as the pipeline gives them; ties are all kept). A fake edge that branches
off a track into another one is rarely the best of both its hits, so fewer
tracks merge; a track stays connected through its best links (a light version of
the walk-through labeling of the later Exa.TrkX papers).
"""

from __future__ import annotations

import functools
import logging
import math
import numbers
from collections.abc import Callable
from typing import Any

import numpy as np

from trkx_ray.pipeline.config import LABEL_BACKEND_OPTIONS, PRUNE_MODES

__all__ = [
    "DEFAULT_ATTACH_MAX",
    "DEFAULT_ATTACH_MIN",
    "DEFAULT_DBSCAN_EPS",
    "DEFAULT_DBSCAN_MIN_SAMPLES",
    "DEFAULT_WALK_ADD",
    "DEFAULT_WALK_MIN",
    "LABEL_BACKENDS",
    "PRUNE_MODES",
    "best_edges",
    "canonical_labels",
    "label_hits",
    "torch_connected_components",
    "walk_tracks",
]

logger = logging.getLogger(__name__)

#: DBSCAN neighbourhood radius in distance ``1 - score`` (Exa.TrkX baseline).
DEFAULT_DBSCAN_EPS = 0.25
#: DBSCAN core-point threshold, the hit itself included.
DEFAULT_DBSCAN_MIN_SAMPLES = 2

_GPU_HINT = "pip install trkx_ray[gpu]"


def _is_torch(obj: Any) -> bool:
    return type(obj).__module__.startswith("torch")


def canonical_labels(labels: np.ndarray) -> np.ndarray:
    """Renumber labels 0..C-1 in order of first appearance.

    Args:
        labels: any 1-D array of component labels, one per hit.

    Returns:
        int64 array, same partition, labels in order of first appearance.
    """
    labels = np.asarray(labels)
    if labels.size == 0:
        return np.zeros(0, dtype=np.int64)
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return rank[inverse.reshape(-1)].astype(np.int64)


# -- connected-component backends ------------------------------------------------
# Each takes (num_hits, kept 2 x K edges) and returns any labels; canonicalised later.


def _scipy_cc(num_hits: int, edges: np.ndarray, scores: np.ndarray) -> np.ndarray:
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components

    data = np.ones(edges.shape[1], dtype=np.int8)
    graph = sp.csr_matrix((data, (edges[0], edges[1])), shape=(num_hits, num_hits))
    _, labels = connected_components(graph, directed=False)
    return labels


def _sknetwork_cc(num_hits: int, edges: np.ndarray, scores: np.ndarray) -> np.ndarray:
    import scipy.sparse as sp

    try:
        from sknetwork.topology import get_connected_components
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise ImportError(
            "labeling backend 'sknetwork' needs scikit-network: pip install scikit-network"
        ) from exc
    if edges.shape[1] == 0:  # scikit-network refuses an empty adjacency matrix
        return np.arange(num_hits)
    data = np.ones(edges.shape[1], dtype=bool)
    # symmetric adjacency: scikit-network's 'weak' mode symmetrises anyway, but
    # an explicit undirected matrix keeps the result independent of that choice.
    rows = np.concatenate([edges[0], edges[1]])
    cols = np.concatenate([edges[1], edges[0]])
    adjacency = sp.csr_matrix(
        (np.concatenate([data, data]), (rows, cols)), shape=(num_hits, num_hits)
    )
    return get_connected_components(adjacency, connection="weak")


def torch_connected_components(num_hits: int, edges: Any) -> Any:
    """Connected components of an undirected graph with torch ops (FastSV).

    Every hit ends pointing at the smallest hit index of its component. Each
    iteration does stochastic hooking ``f[f[u]] = min(f[f[u]], f[f[v]])``,
    aggressive hooking ``f[u] = min(f[u], f[f[v]])`` (both directions, via
    ``scatter_reduce_(..., "amin")``) and shortcutting ``f = min(f, f[f])``,
    until the grandparents stop changing: O(log n) iterations in practice, no
    Python loop over hits or edges.

    Args:
        num_hits: number of nodes.
        edges: ``2 x K`` int64 tensor of node indices (any device).

    Returns:
        int64 tensor of ``num_hits`` labels on the edges' device: for each
        node, the smallest node index in its component.
    """
    import torch

    device = edges.device
    f = torch.arange(num_hits, dtype=torch.int64, device=device)
    if edges.shape[1] == 0 or num_hits == 0:
        return f
    src = torch.cat([edges[0], edges[1]])
    dst = torch.cat([edges[1], edges[0]])
    gf = f[f]
    iterations = 0
    while True:
        iterations += 1
        gf_dst = gf[dst]
        # stochastic hooking: the parent of u adopts v's grandparent if smaller
        f.scatter_reduce_(0, f[src], gf_dst, reduce="amin", include_self=True)
        # aggressive hooking: u itself adopts v's grandparent if smaller
        f.scatter_reduce_(0, src, gf_dst, reduce="amin", include_self=True)
        # shortcutting
        f = torch.minimum(f, gf)
        gf_new = f[f]
        if torch.equal(gf_new, gf):
            break
        gf = gf_new
    # full compression (a no-op at convergence in theory; cheap insurance)
    while True:
        ff = f[f]
        if torch.equal(ff, f):
            break
        f = ff
    logger.debug("torch CC: %d hits, %d edges, %d iterations", num_hits, edges.shape[1], iterations)
    return f


def _torch_cc(num_hits: int, edges: Any, scores: Any) -> Any:
    return torch_connected_components(num_hits, edges)


def _cugraph_cc(num_hits: int, edges: Any, scores: Any) -> np.ndarray:
    try:
        import cudf
        import cugraph
        import cupy
    except ImportError as exc:
        raise ImportError(
            "labeling backend 'cugraph' needs RAPIDS cuGraph (cugraph, cudf, cupy) and a CUDA "
            f"GPU: {_GPU_HINT}"
        ) from exc
    if _is_torch(edges):
        if edges.device.type != "cuda":
            edges = edges.cuda()
        gpu_edges = cupy.from_dlpack(edges.contiguous())
    else:
        gpu_edges = cupy.asarray(edges)
    gpu_edges = gpu_edges.astype(cupy.int64)
    labels = np.arange(num_hits, dtype=np.int64)
    # unique undirected pairs without self loops (cuGraph wants a simple graph)
    lo = cupy.minimum(gpu_edges[0], gpu_edges[1])
    hi = cupy.maximum(gpu_edges[0], gpu_edges[1])
    key = cupy.unique((lo * num_hits + hi)[lo != hi])
    if key.size == 0:
        return labels
    frame = cudf.DataFrame(
        {"src": (key // num_hits).astype(cupy.int32), "dst": (key % num_hits).astype(cupy.int32)}
    )
    graph = cugraph.Graph(directed=False)
    graph.from_cudf_edgelist(frame, source="src", destination="dst", renumber=True)
    result = cugraph.weakly_connected_components(graph)
    vertex = result["vertex"].to_numpy().astype(np.int64)
    comp = result["labels"].to_numpy().astype(np.int64)
    # vertices absent from the edge list (isolated hits) keep their own label;
    # component labels are offset past every hit index so they never collide.
    labels[vertex] = num_hits + (comp - comp.min())
    return labels


def _dedup_symmetric(
    num_hits: int, edges: np.ndarray, values: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unique undirected pairs (no self loops) keeping the smallest value, both directions."""
    lo = np.minimum(edges[0], edges[1])
    hi = np.maximum(edges[0], edges[1])
    keep = lo != hi
    lo, hi, values = lo[keep], hi[keep], values[keep]
    key = lo * np.int64(max(num_hits, 1)) + hi
    order = np.lexsort((values, key))
    key, values = key[order], values[order]
    first = np.ones(key.size, dtype=bool)
    first[1:] = key[1:] != key[:-1]
    key, values = key[first], values[first]
    lo, hi = key // max(num_hits, 1), key % max(num_hits, 1)
    return np.concatenate([lo, hi]), np.concatenate([hi, lo]), np.concatenate([values, values])


def _dbscan(
    num_hits: int,
    edges: np.ndarray,
    scores: np.ndarray,
    eps: float = DEFAULT_DBSCAN_EPS,
    min_samples: int = DEFAULT_DBSCAN_MIN_SAMPLES,
) -> np.ndarray:
    import scipy.sparse as sp
    from sklearn.cluster import DBSCAN
    from sklearn.neighbors import sort_graph_by_row_values

    if not (
        isinstance(eps, numbers.Real)
        and not isinstance(eps, bool)
        and math.isfinite(eps)
        and eps > 0
    ):
        raise ValueError(f"dbscan option 'eps' must be a positive finite number, got {eps!r}")
    if (
        isinstance(min_samples, bool)
        or not isinstance(min_samples, (int, np.integer))
        or min_samples < 1
    ):
        raise ValueError(
            f"dbscan option 'min_samples' must be an integer >= 1, got {min_samples!r}"
        )
    distance = (1.0 - scores.astype(np.float64)).clip(min=0.0)
    rows, cols, dist = _dedup_symmetric(num_hits, edges, distance)
    if rows.size == 0:  # no links: every hit is its own cluster (or noise -> singleton)
        return np.arange(num_hits)
    # explicit zeros (score 1) must stay stored: they are neighbours at distance 0
    matrix = sp.csr_matrix((dist, (rows, cols)), shape=(num_hits, num_hits))
    matrix = sort_graph_by_row_values(matrix, copy=False, warn_when_not_sorted=False)
    labels = DBSCAN(eps=float(eps), min_samples=int(min_samples), metric="precomputed").fit_predict(
        matrix
    )
    labels = labels.astype(np.int64)
    noise = labels < 0
    # DBSCAN noise hits become singletons: a fresh label past every cluster id
    labels[noise] = labels.max(initial=-1) + 1 + np.flatnonzero(noise)
    return labels


# -- walk-through track building ("CC and walk") -----------------------------------------
#: default minimum score of an edge the walk may follow (acorn's ``th_min``).
DEFAULT_WALK_MIN = 0.1
#: default score above which every outgoing edge opens a branch of the walk (``th_add``).
DEFAULT_WALK_ADD = 0.6
#: default largest track whose hits the attach step may move (``attach_max``).
DEFAULT_ATTACH_MAX = 3
#: default smallest track the attach step adds hits to (``attach_min``).
DEFAULT_ATTACH_MIN = 5


def _walk_kernel_py(n, src_in, dst_in, score_in, cut, walk_min, walk_add):  # pragma: no cover
    """CC-and-walk on edges oriented inner -> outer (compiled by :func:`_walk_kernel`).

    Plain Python source, compiled with ``numba.njit``. Returns ``(labels,
    kind)``: canonical labels (0..C-1 in order of each track's smallest hit
    index) and per hit 0 = singleton, 1 = simple-path component, 2 = walked.
    """
    # -- CSR by inner hit (counting sort) of the edges above the cut, self loops
    # dropped; first a branch-free pass listing the kept edges
    n_in = src_in.shape[0]
    kept = np.empty(n_in, np.int64)
    m_in = 0
    for k in range(n_in):
        kept[m_in] = k
        m_in += (score_in[k] > cut) & (src_in[k] != dst_in[k])
    indptr = np.zeros(n + 1, np.int64)
    for j in range(m_in):
        indptr[src_in[kept[j]] + 1] += 1
    for u in range(n):
        indptr[u + 1] += indptr[u]
    fill = indptr[:-1].copy()
    dst = np.empty(m_in, np.int64)
    score = np.empty(m_in, np.float64)
    for j in range(m_in):
        k = kept[j]
        u = src_in[k]
        dst[fill[u]] = dst_in[k]
        score[fill[u]] = score_in[k]
        fill[u] += 1
    # rows sorted by outer hit (insertion sort: rows are short), duplicates merged
    # (best score kept), compacted in place: the result does not depend on edge order
    w = 0
    start = 0
    for u in range(n):
        stop = indptr[u + 1]
        row_start = w
        for k in range(start, stop):
            v = dst[k]
            sv = score[k]
            j = w
            while j > row_start and dst[j - 1] > v:
                j -= 1
            if j > row_start and dst[j - 1] == v:
                if sv > score[j - 1]:
                    score[j - 1] = sv
                continue
            for i in range(w, j, -1):
                dst[i] = dst[i - 1]
                score[i] = score[i - 1]
            dst[j] = v
            score[j] = sv
            w += 1
        start = stop
        indptr[u + 1] = w
    m = w
    # -- connected components (union-find with path halving; the root is the smallest hit)
    parent = np.arange(n)
    for u in range(n):
        for k in range(indptr[u], indptr[u + 1]):
            a = u
            while parent[a] != a:
                parent[a] = parent[parent[a]]
                a = parent[a]
            b = dst[k]
            while parent[b] != b:
                parent[b] = parent[parent[b]]
                b = parent[b]
            if a < b:
                parent[b] = a
            elif b < a:
                parent[a] = b
    for u in range(n):
        parent[u] = parent[parent[u]]  # roots are smaller: one pass compresses fully
    # -- simple paths: every hit at most one inner and one outer neighbour, no cycle
    indeg = np.zeros(n, np.int64)
    for k in range(m):
        indeg[dst[k]] += 1
    size = np.zeros(n, np.int64)
    n_edges = np.zeros(n, np.int64)
    branchy = np.zeros(n, np.bool_)
    for u in range(n):
        root = parent[u]
        size[root] += 1
        n_edges[root] += indptr[u + 1] - indptr[u]
        if indeg[u] > 1 or indptr[u + 1] - indptr[u] > 1:
            branchy[root] = True
    track = np.full(n, -1, np.int64)  # per hit: its track's first (smallest) hit
    kind = np.zeros(n, np.int8)
    for u in range(n):
        root = parent[u]
        if size[root] > 1 and not branchy[root] and n_edges[root] == size[root] - 1:
            track[u] = root
            kind[u] = 1
    # -- topological order of the rest (Kahn, ready hits first come first; hits on a
    # cycle, impossible for edges oriented inner -> outer, go last by index)
    topo = np.empty(n, np.int64)
    pos = np.full(n, n, np.int64)
    deg = indeg.copy()
    head = 0
    tail = 0
    for u in range(n):
        if deg[u] == 0:
            topo[tail] = u
            tail += 1
    while head < tail:
        u = topo[head]
        pos[u] = head
        head += 1
        for k in range(indptr[u], indptr[u + 1]):
            v = dst[k]
            deg[v] -= 1
            if deg[v] == 0:
                topo[tail] = v
                tail += 1
    for u in range(n):
        if pos[u] == n:
            topo[tail] = u
            pos[u] = tail
            tail += 1
    # -- renumber hits in topological order (t = pos[u]): outer neighbours then have
    # larger numbers, and the walk's memory accesses run mostly forwards
    tptr = np.zeros(n + 1, np.int64)
    for t in range(n):
        u = topo[t]
        tptr[t + 1] = tptr[t] + indptr[u + 1] - indptr[u]
    tdst = np.empty(m, np.int64)
    tscore = np.empty(m, np.float64)
    for t in range(n):
        u = topo[t]
        j = tptr[t]
        for k in range(indptr[u], indptr[u + 1]):
            tdst[j] = pos[dst[k]]
            tscore[j] = score[k]
            j += 1
    # -- walk: from each unused hit in topological order, the longest road over unused
    # hits where a hit continues along every outer edge scoring above walk_add, or else
    # along its best outer edge if that scores above walk_min (depth-first, post-order).
    # Per hit state, one row each: [stamp (start that visited it), cursor, road length,
    # next hit on the road, edges above walk_add] and [best outer score, road score sum]
    used = np.empty(n, np.bool_)
    owner = np.full(n, -1, np.int64)  # per renumbered hit: the start of its road
    for t in range(n):
        used[t] = track[topo[t]] >= 0
    st = np.full((n, 5), -1, np.int64)
    sf = np.zeros((n, 2), np.float64)
    stack = np.empty(n, np.int64)
    for s in range(n):
        if used[s]:
            continue
        top = 0
        v = s
        # visit v: its best unused outer score and its edges above walk_add
        st[v, 0] = s
        bv = -1.0
        na = 0
        for k2 in range(tptr[v], tptr[v + 1]):
            x = tdst[k2]
            if x > v and not used[x]:
                if tscore[k2] > bv:
                    bv = tscore[k2]
                if tscore[k2] > walk_add:
                    na += 1
        sf[v, 0] = bv
        sf[v, 1] = 0.0
        st[v, 1] = tptr[v]
        st[v, 2] = 1
        st[v, 3] = -1
        st[v, 4] = na
        stack[top] = v
        top += 1
        while top > 0:
            u = stack[top - 1]
            pushed = False
            if sf[u, 0] > walk_min:
                n_add = st[u, 4]
                bu = sf[u, 0]
                while st[u, 1] < tptr[u + 1]:
                    k = st[u, 1]
                    st[u, 1] = k + 1
                    v = tdst[k]
                    if v <= u or used[v]:
                        continue
                    if n_add > 0:
                        if not tscore[k] > walk_add:
                            continue
                    elif tscore[k] != bu:
                        continue
                    if st[v, 0] != s:
                        st[v, 0] = s
                        bv = -1.0
                        na = 0
                        for k2 in range(tptr[v], tptr[v + 1]):
                            x = tdst[k2]
                            if x > v and not used[x]:
                                if tscore[k2] > bv:
                                    bv = tscore[k2]
                                if tscore[k2] > walk_add:
                                    na += 1
                        sf[v, 0] = bv
                        sf[v, 1] = 0.0
                        st[v, 1] = tptr[v]
                        st[v, 2] = 1
                        st[v, 3] = -1
                        st[v, 4] = na
                        stack[top] = v
                        top += 1
                        pushed = True
                        break
                    # v already finished for this start: u's road through it
                    cand_len = st[v, 2] + 1
                    cand_sum = sf[v, 1] + tscore[k]
                    if cand_len > st[u, 2] or (cand_len == st[u, 2] and cand_sum > sf[u, 1]):
                        st[u, 2] = cand_len
                        sf[u, 1] = cand_sum
                        st[u, 3] = v
            if pushed:
                continue
            top -= 1
            if top > 0:
                # the parent's road through u (the edge that pushed u was its last read)
                p = stack[top - 1]
                k = st[p, 1] - 1
                cand_len = st[u, 2] + 1
                cand_sum = sf[u, 1] + tscore[k]
                if cand_len > st[p, 2] or (cand_len == st[p, 2] and cand_sum > sf[p, 1]):
                    st[p, 2] = cand_len
                    sf[p, 1] = cand_sum
                    st[p, 3] = u
        walked = st[s, 2] > 1
        u = s
        while u >= 0:
            used[u] = True
            owner[u] = s
            if walked:
                kind[topo[u]] = 2
            u = st[u, 3]
    for t in range(n):
        if owner[t] >= 0:
            track[topo[t]] = topo[owner[t]]
    # -- canonical labels: tracks numbered in order of their smallest hit
    first = np.full(n, n, np.int64)
    for u in range(n):
        if first[track[u]] > u:
            first[track[u]] = u
    label_of = np.full(n, -1, np.int64)
    labels = np.empty(n, np.int64)
    c = 0
    for u in range(n):
        f = first[track[u]]
        if label_of[f] < 0:
            label_of[f] = c
            c += 1
        labels[u] = label_of[f]
    return labels, kind


def _attach_kernel_py(labels, src, dst, score, attach, attach_max, attach_min):  # pragma: no cover
    """Attach hits of short tracks to their best neighbour's track (compiled by numba).

    ``labels`` are canonical; every edge scoring above ``attach`` counts, in both
    directions. Returns ``(labels, moved)``: canonical labels and per hit whether it
    moved. Ties go to the smaller hit index, so the result does not depend on edge order.
    """
    n = labels.shape[0]
    n_tracks = 0
    for u in range(n):
        if labels[u] + 1 > n_tracks:
            n_tracks = labels[u] + 1
    size = np.zeros(n_tracks, np.int64)
    for u in range(n):
        size[labels[u]] += 1
    best = np.full(n, -1.0)
    target = np.full(n, -1, np.int64)
    for k in range(src.shape[0]):
        sk = score[k]
        if not sk > attach:
            continue
        a = src[k]
        b = dst[k]
        la = labels[a]
        lb = labels[b]
        if la == lb:
            continue
        if size[la] <= attach_max and size[lb] >= attach_min:
            if sk > best[a] or (sk == best[a] and b < target[a]):
                best[a] = sk
                target[a] = b
        if size[lb] <= attach_max and size[la] >= attach_min:
            if sk > best[b] or (sk == best[b] and a < target[b]):
                best[b] = sk
                target[b] = a
    # each hit of a track takes at most one hit: the best-scored (then the smallest)
    taken_score = np.full(n, -1.0)
    taken_by = np.full(n, n, np.int64)
    for u in range(n):
        v = target[u]
        if v >= 0 and (best[u] > taken_score[v] or (best[u] == taken_score[v] and u < taken_by[v])):
            taken_score[v] = best[u]
            taken_by[v] = u
    out = labels.copy()
    moved = np.zeros(n, np.bool_)
    for u in range(n):
        v = target[u]
        if v >= 0 and taken_by[v] == u:
            out[u] = labels[v]
            moved[u] = True
    # canonical again: tracks numbered in order of their smallest hit
    label_of = np.full(n_tracks, -1, np.int64)
    c = 0
    for u in range(n):
        t = out[u]
        if label_of[t] < 0:
            label_of[t] = c
            c += 1
        out[u] = label_of[t]
    return out, moved


@functools.lru_cache(maxsize=1)
def _attach_kernel() -> Callable[..., Any]:
    """The compiled attach kernel (numba imported on first use, compiled once and cached)."""
    import numba

    return numba.njit(cache=True, nogil=True)(_attach_kernel_py)


@functools.lru_cache(maxsize=1)
def _walk_kernel() -> Callable[..., Any]:
    """The compiled walk kernel (numba imported on first use, compiled once and cached)."""
    import numba

    return numba.njit(cache=True, nogil=True)(_walk_kernel_py)


def check_attach_sizes(attach_max: Any, attach_min: Any) -> tuple[int, int]:
    """Check the attach step's track sizes (positive ints, ``attach_min > attach_max``)."""
    for name, value in (("attach_max", attach_max), ("attach_min", attach_min)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"walk option {name!r} must be an integer >= 1, got {value!r}")
    if attach_min <= attach_max:
        raise ValueError(
            f"walk option 'attach_min' ({attach_min}) must be larger than 'attach_max' "
            f"({attach_max}): a track that takes hits must not give any"
        )
    return int(attach_max), int(attach_min)


def _check_unit(name: str, value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or not 0.0 <= float(value) <= 1.0
    ):
        raise ValueError(f"walk option {name!r} must be a number in [0, 1], got {value!r}")
    return float(value)


def walk_tracks(
    num_hits: int,
    edges: np.ndarray,
    scores: np.ndarray,
    cut: float = -math.inf,
    walk_min: float = DEFAULT_WALK_MIN,
    walk_add: float = DEFAULT_WALK_ADD,
    attach: float | None = None,
    attach_max: int = DEFAULT_ATTACH_MAX,
    attach_min: int = DEFAULT_ATTACH_MIN,
) -> tuple[np.ndarray, np.ndarray]:
    """CC-and-walk track building (see :func:`label_hits`, backend ``walk``).

    Inputs are not checked here (:func:`label_hits` does).

    Args:
        num_hits: number of hits.
        edges: ``2 x E`` integer hit indices, oriented inner -> outer.
        scores: ``E`` edge scores.
        cut: only edges scoring above it take part (the component cut).
        walk_min: a walk stops where a hit's best unused outer edge scores ``<= walk_min``.
        walk_add: outer edges scoring above this each open a branch of the walk
            (the longest branch wins); below it, the walk follows the best edge.
        attach: ``None`` (off) or a score: afterwards, a hit of a track of at most
            ``attach_max`` hits joins the track of its best neighbour over an edge
            scoring above it, if that track has at least ``attach_min`` hits (one
            hit per hit of that track; see the module docstring).
        attach_max: largest track whose hits may move.
        attach_min: smallest track that takes hits (``> attach_max``).

    Returns:
        ``(labels, kind)``: per hit its canonical int64 label and how its track was
        made (int8: 0 = singleton, 1 = component that is a simple path, 2 = walked,
        3 = attached to a track by the attach step).
    """
    walk_min = _check_unit("walk_min", walk_min)
    walk_add = _check_unit("walk_add", walk_add)
    if attach is not None:
        attach = _check_unit("attach", attach)
    attach_max, attach_min = check_attach_sizes(attach_max, attach_min)
    n = int(num_hits)
    edges = np.asarray(edges)
    if edges.dtype != np.int64:
        edges = edges.astype(np.int64)
    scores = np.asarray(scores)
    if scores.dtype != np.float32:
        scores = scores.astype(np.float64)
    src = np.ascontiguousarray(edges[0])
    dst = np.ascontiguousarray(edges[1])
    scores = np.ascontiguousarray(scores)
    labels, kind = _walk_kernel()(n, src, dst, scores, float(cut), walk_min, walk_add)
    if attach is not None and n:
        labels, moved = _attach_kernel()(labels, src, dst, scores, attach, attach_max, attach_min)
        kind[moved] = 3
    return labels, kind


def _walk(num_hits: int, edges: np.ndarray, scores: np.ndarray, **options: Any) -> np.ndarray:
    return walk_tracks(num_hits, edges, scores, **options)[0]


#: Backend name -> implementation ``(num_hits, kept_edges, kept_scores, **opts) -> labels``;
#: the names and the options each takes are declared in
#: :data:`trkx_ray.pipeline.config.LABEL_BACKEND_OPTIONS`, the prune modes in
#: :data:`~trkx_ray.pipeline.config.PRUNE_MODES` (re-exported here).
LABEL_BACKENDS: dict[str, Callable[..., Any]] = {
    "scipy": _scipy_cc,
    "sknetwork": _sknetwork_cc,
    "torch": _torch_cc,
    "cugraph": _cugraph_cc,
    "dbscan": _dbscan,
    "walk": _walk,
}


def _check_inputs(num_hits: Any, edges: Any, scores: Any, cut: Any) -> int:
    if isinstance(num_hits, bool) or not isinstance(num_hits, (int, np.integer)):
        raise ValueError(f"num_hits must be an integer, got {type(num_hits).__name__}")
    if num_hits < 0:
        raise ValueError(f"num_hits must be >= 0, got {num_hits}")
    try:
        cut_f = float(cut)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"cut must be a number, got {cut!r}") from exc
    if math.isnan(cut_f):
        raise ValueError("cut is NaN")
    shape = tuple(edges.shape)
    if len(shape) != 2 or shape[0] != 2:
        raise ValueError(f"edges must have shape (2, E), got {shape}")
    kind = str(edges.dtype)
    if _is_torch(edges):
        import torch

        ok = (
            not edges.dtype.is_floating_point
            and not edges.dtype.is_complex
            and edges.dtype != torch.bool
        )
    else:
        ok = edges.dtype.kind in "iu"
    if not ok:
        raise ValueError(f"edges must hold integer hit indices, got dtype {kind}")
    if tuple(scores.shape) != (shape[1],):
        raise ValueError(
            f"scores length mismatch: expected shape ({shape[1]},) for {shape[1]} edges, "
            f"got {tuple(scores.shape)}"
        )
    if shape[1]:
        lo, hi = int(edges.min()), int(edges.max())
        if lo < 0 or hi >= num_hits:
            raise ValueError(
                f"edges out of range: hit indices must be in [0, {num_hits}), got min {lo}, max {hi}"
            )
        nan = bool(scores.isnan().any()) if _is_torch(scores) else bool(np.isnan(scores).any())
        if nan:
            raise ValueError("scores contain NaN")
    return int(num_hits)


def best_edges(num_hits: int, edges: Any, scores: Any) -> Any:
    """Mask of the edges that are the best outgoing edge of their source or the best
    incoming edge of their target (highest score; ties all kept).

    Args:
        num_hits: number of hits.
        edges: ``2 x E`` hit indices, oriented inner -> outer (numpy or torch).
        scores: ``E`` scores (numpy or torch, same kind as ``edges``).

    Returns:
        ``E`` boolean mask (numpy or torch, as the input).
    """
    if _is_torch(edges):
        import torch

        st = scores.float()
        out_t = torch.full((num_hits,), -math.inf, device=st.device)
        in_t = torch.full((num_hits,), -math.inf, device=st.device)
        out_t.scatter_reduce_(0, edges[0], st, reduce="amax")
        in_t.scatter_reduce_(0, edges[1], st, reduce="amax")
        return (st >= out_t[edges[0]]) | (st >= in_t[edges[1]])
    s = np.asarray(scores, dtype=np.float64)
    best_out = np.full(num_hits, -np.inf)
    best_in = np.full(num_hits, -np.inf)
    np.maximum.at(best_out, edges[0], s)
    np.maximum.at(best_in, edges[1], s)
    return (s >= best_out[edges[0]]) | (s >= best_in[edges[1]])


def label_hits(
    num_hits: int,
    edges: Any,
    scores: Any,
    cut: float = 0.5,
    backend: str = "scipy",
    *,
    prune: str = "none",
    **options: Any,
) -> np.ndarray:
    """Label hits by clustering the edges scoring above ``cut``.

    Args:
        num_hits: number of hits (nodes).
        edges: ``2 x E`` integer numpy array or torch tensor of hit indices
            (any orientation; duplicates and self loops are allowed).
        scores: ``E`` edge scores in [0, 1] (array or tensor), no NaN.
        cut: keep edges with ``score > cut``.
        backend: one of :data:`LABEL_BACKENDS`.
        prune: ``none`` (cluster every edge above the cut) or ``best`` (keep only
            each hit's best outgoing and best incoming edge first, see
            :func:`best_edges`; edges must be oriented inner -> outer).
        **options: backend options; ``dbscan`` takes ``eps`` (distance
            ``1 - score``, default :data:`DEFAULT_DBSCAN_EPS`) and
            ``min_samples`` (default :data:`DEFAULT_DBSCAN_MIN_SAMPLES`);
            ``walk`` takes ``walk_min``, ``walk_add``, ``attach``, ``attach_max`` and
            ``attach_min`` (see the module docstring).

    Returns:
        int64 numpy array of ``num_hits`` canonical labels.

    Raises:
        ValueError: unknown backend or option, or malformed input (shape,
            dtype, range, length, NaN), the message naming it.
        ImportError: an optional backend's package is missing (names the
            install command).
    """
    if backend not in LABEL_BACKENDS:
        raise ValueError(
            f"unknown labeling backend {backend!r}; choose one of {sorted(LABEL_BACKENDS)}"
        )
    if prune not in PRUNE_MODES:
        raise ValueError(
            f"unknown labeling prune mode {prune!r}; choose one of {list(PRUNE_MODES)}"
        )
    allowed = LABEL_BACKEND_OPTIONS[backend]
    unknown = set(options) - allowed
    if unknown:
        raise ValueError(
            f"labeling backend {backend!r} has no option(s) {sorted(unknown)}; "
            f"it takes {sorted(allowed)}"
        )
    if backend == "torch":
        import torch

        if not _is_torch(edges):
            edges = torch.as_tensor(np.asarray(edges))
        if not _is_torch(scores):
            scores = torch.as_tensor(np.asarray(scores), device=edges.device)
        edges = edges.detach()
        scores = scores.detach().to(edges.device)
    elif backend == "cugraph":
        if _is_torch(edges) or _is_torch(scores):
            import torch

            device = edges.device if _is_torch(edges) else scores.device
            edges = torch.as_tensor(edges, device=device).detach()
            scores = torch.as_tensor(scores, device=device).detach()
        else:
            edges = np.asarray(edges)
            scores = np.asarray(scores)
    else:
        if _is_torch(edges):
            edges = edges.detach().cpu().numpy()
        if _is_torch(scores):
            scores = scores.detach().float().cpu().numpy()
        edges = np.asarray(edges)
        scores = np.asarray(scores)
    n = _check_inputs(num_hits, edges, scores, cut)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if prune == "best" and edges.shape[1]:
        above = scores > cut
        edges, scores = edges[:, above], scores[above]
        best = best_edges(n, edges, scores)
        edges, scores = edges[:, best], scores[best]
    if backend == "torch":
        import torch

        mask = scores > cut
        kept = edges[:, mask].to(torch.int64)
        roots = torch_connected_components(n, kept)
        # roots are each component's smallest hit index: sorted unique order
        # is the order of first appearance, i.e. canonical.
        _, inverse = torch.unique(roots, sorted=True, return_inverse=True)
        return inverse.cpu().numpy().astype(np.int64)
    if backend == "cugraph":
        mask = scores > cut
        kept = edges[:, mask]
        return canonical_labels(_cugraph_cc(n, kept, None))
    if backend == "walk":  # the kernel applies the cut itself (no copy of the graph)
        return walk_tracks(n, edges, scores, cut=float(cut), **options)[0]
    edges = edges.astype(np.int64, copy=False)
    mask = scores > cut
    kept = edges[:, mask]
    labels = LABEL_BACKENDS[backend](n, kept, scores[mask], **options)
    return canonical_labels(labels)
