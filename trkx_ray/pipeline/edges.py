"""Edge building: all pairs of points closer than a radius in embedding space.

One entry point, :func:`build_edges`, with backends chosen by name:

* ``radius``: exact brute force in chunks (the seed paper's slow baseline).

Edges are returned canonically: each unordered pair once as ``(i, j)`` with
``i < j``, sorted lexicographically, as a ``2 x E`` int64 array (numpy input)
or tensor on the input's device (torch input).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["EDGE_BACKENDS", "build_edges", "canonical_edges"]


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


def _radius_bruteforce(x: np.ndarray, r: float, chunk: int = 2048) -> np.ndarray:
    import torch

    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    r2 = float(r) ** 2
    rows, cols = [], []
    n = xt.shape[0]
    with torch.no_grad():
        for start in range(0, n, chunk):
            block = xt[start : start + chunk]
            # only the upper triangle: j > i
            d2 = torch.cdist(block, xt[start:]).square_()
            ii, jj = torch.nonzero(d2 < r2, as_tuple=True)
            jj = jj + start
            ii = ii + start
            keep = jj > ii
            rows.append(ii[keep].numpy())
            cols.append(jj[keep].numpy())
    if not rows:
        return np.zeros((2, 0), dtype=np.int64)
    return canonical_edges(np.concatenate(rows), np.concatenate(cols))


EDGE_BACKENDS: dict[str, Any] = {"radius": _radius_bruteforce}


def build_edges(x: Any, r: float, backend: str = "radius", k_max: int | None = None) -> Any:
    """Build the radius graph of points ``x`` (``N x D``).

    Args:
        x: points, numpy array or torch tensor, float.
        r: radius in the embedding space's units (pairs with distance < r).
        backend: one of :data:`EDGE_BACKENDS`.
        k_max: optional cap on neighbours per point (faiss); ``None`` = all.

    Returns:
        ``2 x E`` int64 edges (same kind/device as ``x``), each pair once, ``i < j``.
    """
    if backend not in EDGE_BACKENDS:
        raise ValueError(
            f"unknown edge backend {backend!r}; choose one of {sorted(EDGE_BACKENDS)}"
        )
    is_torch = type(x).__module__.startswith("torch")
    xn = x.detach().cpu().numpy() if is_torch else np.asarray(x)
    edges = EDGE_BACKENDS[backend](xn, r)
    if is_torch:
        import torch

        return torch.from_numpy(edges).to(x.device)
    return edges
