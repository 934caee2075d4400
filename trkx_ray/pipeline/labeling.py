"""Labeling: turn scored edges into one track label per hit.

One entry point, :func:`label_hits`, with backends chosen by name:

* ``scipy``: connected components of the graph of edges with score > cut.

Labels are canonical: components numbered 0..C-1 in order of their smallest
hit index, so partitions from different backends compare with ``==``.
Hits with no kept edge form singleton components.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["LABEL_BACKENDS", "canonical_labels", "label_hits"]


def canonical_labels(labels: np.ndarray) -> np.ndarray:
    """Renumber labels 0..C-1 in order of first appearance."""
    labels = np.asarray(labels)
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return rank[inverse].astype(np.int64)


def _scipy_cc(num_hits: int, edges: np.ndarray) -> np.ndarray:
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components

    data = np.ones(edges.shape[1], dtype=np.int8)
    graph = sp.coo_matrix((data, (edges[0], edges[1])), shape=(num_hits, num_hits)).tocsr()
    _, labels = connected_components(graph, directed=False)
    return labels


LABEL_BACKENDS: dict[str, Any] = {"scipy": _scipy_cc}


def label_hits(
    num_hits: int, edges: Any, scores: Any, cut: float = 0.5, backend: str = "scipy"
) -> np.ndarray:
    """Label hits by the connected components of the edges scoring above ``cut``.

    Args:
        num_hits: number of hits (nodes).
        edges: ``2 x E`` integer array or tensor of hit indices.
        scores: ``E`` edge scores in [0, 1] (array or tensor).
        cut: keep edges with ``score > cut``.
        backend: one of :data:`LABEL_BACKENDS`.

    Returns:
        int64 numpy array of ``num_hits`` canonical labels.
    """
    if backend not in LABEL_BACKENDS:
        raise ValueError(
            f"unknown labeling backend {backend!r}; choose one of {sorted(LABEL_BACKENDS)}"
        )
    if type(edges).__module__.startswith("torch"):
        edges = edges.detach().cpu().numpy()
    if type(scores).__module__.startswith("torch"):
        scores = scores.detach().float().cpu().numpy()
    edges = np.asarray(edges, dtype=np.int64).reshape(2, -1)
    scores = np.asarray(scores).reshape(-1)
    if num_hits == 0:
        return np.zeros(0, dtype=np.int64)
    kept = edges[:, scores > cut]
    return canonical_labels(LABEL_BACKENDS[backend](int(num_hits), kept))
