"""Tests of trkx_ray.pipeline.labeling: every backend, identical partitions, bad input."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from trkx_ray.bench import synthetic_scored_graph, time_label_backends
from trkx_ray.pipeline.labeling import (
    LABEL_BACKENDS,
    canonical_labels,
    label_hits,
    torch_connected_components,
    walk_tracks,
)

CC_BACKENDS = ["scipy", "sknetwork", "torch"]
HAS_CUGRAPH = importlib.util.find_spec("cugraph") is not None


def reference_components(
    num_hits: int, edges: np.ndarray, scores: np.ndarray, cut: float
) -> np.ndarray:
    """Independent union-find (test-only, loops are fine here), canonical labels."""
    parent = list(range(num_hits))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for (u, v), s in zip(edges.T.tolist(), scores.tolist()):
        if s > cut:
            ru, rv = find(u), find(v)
            if ru != rv:
                parent[max(ru, rv)] = min(ru, rv)
    roots = [find(a) for a in range(num_hits)]
    out, seen = [], {}
    for r in roots:
        out.append(seen.setdefault(r, len(seen)))
    return np.asarray(out, dtype=np.int64)


def random_graph(rng: np.random.Generator, n: int, e: int) -> tuple[np.ndarray, np.ndarray]:
    edges = rng.integers(0, max(n, 1), size=(2, e), dtype=np.int64)
    scores = rng.random(e).astype(np.float32)
    return edges, scores


def test_backends_registered() -> None:
    assert set(LABEL_BACKENDS) == {"scipy", "sknetwork", "torch", "cugraph", "dbscan", "walk"}


def test_canonical_labels_first_appearance() -> None:
    got = canonical_labels(np.array([7, 7, 3, 9, 3, 7]))
    np.testing.assert_array_equal(got, [0, 0, 1, 2, 1, 0])
    assert got.dtype == np.int64
    assert canonical_labels(np.array([], dtype=np.int64)).shape == (0,)


@pytest.mark.parametrize("backend", CC_BACKENDS + ["dbscan"])
def test_hand_built_components(backend: str) -> None:
    # 0-1-2 chain, 3 isolated, 4-5 joined, 6-7 joined below cut
    edges = np.array([[1, 0, 5, 6], [2, 1, 4, 7]])
    scores = np.array([0.9, 0.8, 0.99, 0.3])
    opts = {"eps": 0.5, "min_samples": 1} if backend == "dbscan" else {}
    labels = label_hits(8, edges, scores, cut=0.5, backend=backend, **opts)
    np.testing.assert_array_equal(labels, [0, 0, 0, 1, 2, 2, 3, 4])
    assert labels.dtype == np.int64


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 60),
    e=st.integers(0, 150),
    cut=st.sampled_from([0.0, 0.3, 0.5, 0.9]),
    seed=st.integers(0, 2**32 - 1),
)
def test_all_cc_backends_agree_on_random_graphs(n: int, e: int, cut: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    edges, scores = random_graph(rng, n, e)
    want = reference_components(n, edges, scores, cut)
    for backend in CC_BACKENDS:
        got = label_hits(n, edges, scores, cut=cut, backend=backend)
        np.testing.assert_array_equal(got, want, err_msg=backend)
    # DBSCAN with every kept edge inside eps and min_samples=1 is CC
    got = label_hits(
        n, edges, scores, cut=cut, backend="dbscan", eps=1.0 - cut + 1e-6, min_samples=1
    )
    np.testing.assert_array_equal(got, want, err_msg="dbscan")
    got = label_hits(n, edges, scores, cut=cut, backend="dbscan", eps=1.0, min_samples=2)
    np.testing.assert_array_equal(got, want, err_msg="dbscan min_samples=2")


@pytest.mark.parametrize("order", ["sorted", "reversed", "shuffled"])
def test_long_chain_100k(order: str) -> None:
    n = 100_000
    nodes = np.arange(n)
    if order == "reversed":
        nodes = nodes[::-1].copy()
    elif order == "shuffled":
        nodes = np.random.default_rng(1).permutation(n)
    edges = np.stack([nodes[:-1], nodes[1:]])
    scores = np.ones(n - 1)
    for backend in CC_BACKENDS:
        labels = label_hits(n, edges, scores, backend=backend)
        assert (labels == 0).all(), backend
    # cut one link in the middle of the chain: two components
    scores[n // 2] = 0.0
    want = label_hits(n, edges, scores, backend="scipy")
    assert want.max() == 1
    for backend in CC_BACKENDS:
        np.testing.assert_array_equal(label_hits(n, edges, scores, backend=backend), want)


def test_torch_cc_iterations_are_logarithmic(caplog: pytest.LogCaptureFixture) -> None:
    n = 100_000
    nodes = np.random.default_rng(2).permutation(n)
    edges = torch.as_tensor(np.stack([nodes[:-1], nodes[1:]]))
    with caplog.at_level("DEBUG", logger="trkx_ray.pipeline.labeling"):
        roots = torch_connected_components(n, edges)
    assert (roots == 0).all()
    msg = [r.getMessage() for r in caplog.records if "torch CC" in r.getMessage()]
    iterations = int(msg[-1].split(",")[-1].split()[0])
    assert iterations <= 4 * int(np.ceil(np.log2(n))), iterations


@pytest.mark.parametrize("backend", CC_BACKENDS + ["dbscan"])
def test_special_graphs(backend: str) -> None:
    opts = {"eps": 1.0, "min_samples": 1} if backend == "dbscan" else {}
    # star
    n = 1000
    edges = np.stack([np.zeros(n - 1, np.int64), np.arange(1, n)])
    assert (label_hits(n, edges, np.ones(n - 1), backend=backend, **opts) == 0).all()
    # reversed star centred on the last hit
    edges = np.stack([np.arange(n - 1), np.full(n - 1, n - 1)])
    assert (label_hits(n, edges, np.ones(n - 1), backend=backend, **opts) == 0).all()
    # isolated nodes only, self loops, duplicates
    edges = np.array([[3, 3, 2, 1, 1], [3, 3, 2, 4, 4]])
    labels = label_hits(6, edges, np.ones(5), backend=backend, **opts)
    np.testing.assert_array_equal(labels, [0, 1, 2, 3, 1, 4])
    # no edges, no hits, one hit
    empty = np.zeros((2, 0), np.int64)
    np.testing.assert_array_equal(
        label_hits(4, empty, np.zeros(0), backend=backend, **opts), [0, 1, 2, 3]
    )
    assert label_hits(0, empty, np.zeros(0), backend=backend, **opts).shape == (0,)
    np.testing.assert_array_equal(label_hits(1, empty, np.zeros(0), backend=backend, **opts), [0])
    np.testing.assert_array_equal(
        label_hits(1, np.array([[0], [0]]), np.ones(1), backend=backend, **opts), [0]
    )


def test_torch_backend_on_device(device: str) -> None:
    rng = np.random.default_rng(3)
    edges, scores = random_graph(rng, 500, 600)
    want = label_hits(500, edges, scores, backend="scipy")
    te = torch.as_tensor(edges, device=device)
    ts = torch.as_tensor(scores, device=device)
    got = label_hits(500, te, ts, backend="torch")
    assert isinstance(got, np.ndarray) and got.dtype == np.int64
    np.testing.assert_array_equal(got, want)
    # the other backends take tensors too (copied to the host)
    for backend in ("scipy", "sknetwork", "dbscan"):
        opts = {"eps": 1.0, "min_samples": 1} if backend == "dbscan" else {}
        np.testing.assert_array_equal(label_hits(500, te, ts, backend=backend, **opts), want)
    # int32 edges and half-precision scores
    got = label_hits(500, te.to(torch.int32), ts.half(), cut=0.5, backend="torch")
    want_half = label_hits(500, edges, ts.half().float().cpu().numpy(), backend="scipy")
    np.testing.assert_array_equal(got, want_half)


def test_dbscan_options_and_noise() -> None:
    # 0-1 score 0.6 (distance 0.4), 1-2 score 0.9 (0.1), 3-4 score 0.95, 5 alone
    edges = np.array([[0, 1, 3], [1, 2, 4]])
    scores = np.array([0.6, 0.9, 0.95])
    # default eps 0.25 drops the 0-1 link; min_samples 2 keeps pairs together
    np.testing.assert_array_equal(
        label_hits(6, edges, scores, backend="dbscan"), [0, 1, 1, 2, 2, 3]
    )
    np.testing.assert_array_equal(
        label_hits(6, edges, scores, backend="dbscan", eps=0.5), [0, 0, 0, 1, 1, 2]
    )
    # min_samples 3: only hit 1 is core (itself + 0 + 2); the 3-4 pair is noise -> singletons
    np.testing.assert_array_equal(
        label_hits(6, edges, scores, backend="dbscan", eps=0.5, min_samples=3), [0, 0, 0, 1, 2, 3]
    )
    # a duplicated edge keeps its best score, it is not summed into a larger distance
    dup = np.array([[0, 1, 0], [1, 0, 1]])
    np.testing.assert_array_equal(
        label_hits(2, dup, np.array([0.9, 0.9, 0.6]), backend="dbscan"), [0, 0]
    )
    # score 1 (distance 0) still links
    np.testing.assert_array_equal(
        label_hits(2, np.array([[0], [1]]), np.ones(1), backend="dbscan"), [0, 0]
    )
    with pytest.raises(ValueError, match="eps"):
        label_hits(2, dup, np.ones(3), backend="dbscan", eps=-1.0)
    with pytest.raises(ValueError, match="min_samples"):
        label_hits(2, dup, np.ones(3), backend="dbscan", min_samples=0)


def test_dbscan_equals_cc_on_synthetic_event() -> None:
    edges, scores = synthetic_scored_graph(num_hits=20_000, num_edges=150_000, seed=4)
    want = label_hits(20_000, edges, scores, cut=0.5, backend="scipy")
    got = label_hits(20_000, edges, scores, cut=0.5, backend="dbscan", eps=0.5, min_samples=1)
    np.testing.assert_array_equal(got, want)
    for backend in ("sknetwork", "torch"):
        np.testing.assert_array_equal(label_hits(20_000, edges, scores, backend=backend), want)


@pytest.mark.parametrize(
    ("num_hits", "edges", "scores", "match"),
    [
        (3, np.array([[0, 3], [1, 2]]), np.ones(2), "out of range"),
        (3, np.array([[0, -1], [1, 2]]), np.ones(2), "out of range"),
        (3, np.array([0, 1, 2]), np.ones(3), "shape"),
        (3, np.zeros((3, 2), np.int64), np.ones(2), "shape"),
        (3, np.array([[0, 1], [1, 2]]), np.ones(3), "scores length"),
        (3, np.array([[0, 1], [1, 2]]), np.array([0.9, np.nan]), "NaN"),
        (3, np.array([[0.0, 1.0], [1.0, 2.0]]), np.ones(2), "integer"),
        (-1, np.zeros((2, 0), np.int64), np.zeros(0), "num_hits"),
    ],
)
@pytest.mark.parametrize("backend", ["scipy", "torch", "dbscan"])
def test_bad_input(num_hits, edges, scores, match, backend) -> None:
    with pytest.raises(ValueError, match=match):
        label_hits(num_hits, edges, scores, backend=backend)


def test_bad_backend_and_option() -> None:
    edges, scores = np.array([[0], [1]]), np.ones(1)
    with pytest.raises(ValueError, match="unknown labeling backend 'nope'"):
        label_hits(2, edges, scores, backend="nope")
    with pytest.raises(ValueError, match="'scipy' has no option"):
        label_hits(2, edges, scores, backend="scipy", eps=0.1)
    with pytest.raises(ValueError, match="cut"):
        label_hits(2, edges, scores, cut=float("nan"))


@pytest.mark.skipif(HAS_CUGRAPH, reason="cugraph is installed")
def test_cugraph_missing_names_the_extra() -> None:
    with pytest.raises(ImportError, match=r"pip install trkx_ray\[gpu\]"):
        label_hits(2, np.array([[0], [1]]), np.ones(1), backend="cugraph")


@pytest.mark.cuda
@pytest.mark.skipif(
    not (HAS_CUGRAPH and torch.cuda.is_available()), reason="needs cugraph and CUDA"
)
def test_cugraph_agrees() -> None:  # pragma: no cover - GPU only
    rng = np.random.default_rng(5)
    edges, scores = random_graph(rng, 1000, 1500)
    want = label_hits(1000, edges, scores, backend="scipy")
    np.testing.assert_array_equal(label_hits(1000, edges, scores, backend="cugraph"), want)
    te, ts = torch.as_tensor(edges, device="cuda"), torch.as_tensor(scores, device="cuda")
    np.testing.assert_array_equal(label_hits(1000, te, ts, backend="cugraph"), want)


def test_time_label_backends() -> None:
    edges, scores = synthetic_scored_graph(num_hits=5_000, num_edges=30_000, seed=6)
    out = time_label_backends(
        5_000,
        edges,
        scores,
        0.5,
        backends=("scipy", "dbscan"),
        repeats=2,
        options={"dbscan": {"eps": 0.5, "min_samples": 1}},
    )
    assert set(out) == {"scipy", "dbscan"}
    for stats in out.values():
        assert stats["mean_s"] > 0 and stats["std_s"] >= 0 and stats["min_s"] <= stats["mean_s"]
    assert out["scipy"]["num_components"] == out["dbscan"]["num_components"]
    with pytest.raises(ValueError, match="repeats"):
        time_label_backends(5_000, edges, scores, 0.5, backends=("scipy",), repeats=0)


def test_synthetic_graph_shape() -> None:
    edges, scores = synthetic_scored_graph(
        num_hits=1_000, num_edges=8_000, hits_per_track=10, seed=0
    )
    assert edges.shape == (2, 8_000) and scores.shape == (8_000,)
    assert edges.min() >= 0 and edges.max() < 1_000
    # 100 tracks of 10 hits: 900 true edges above the cut, most fakes below
    assert 900 <= (scores > 0.5).sum() < 1_100
    labels = label_hits(1_000, edges[:, :900], scores[:900])
    assert labels.max() + 1 == 100


# ---------------------------------------------------------------- prune="best"
def _two_tracks_with_fake_branch():
    # tracks 0-1-2-3 and 4-5-6-7 (oriented inner -> outer), a fake edge 1 -> 6 above
    # the cut but below both tracks' own links, and a weak edge 3 -> 4 below the cut
    edges = np.array([[0, 1, 2, 4, 5, 6, 1, 3], [1, 2, 3, 5, 6, 7, 6, 4]])
    scores = np.array([0.95, 0.97, 0.9, 0.96, 0.94, 0.93, 0.85, 0.2])
    return edges, scores


@pytest.mark.parametrize("backend", ["scipy", "sknetwork", "torch"])
def test_prune_best_cuts_a_fake_branch_that_merges_tracks(backend):
    edges, scores = _two_tracks_with_fake_branch()
    merged = label_hits(8, edges, scores, cut=0.5, backend=backend)
    assert len(set(merged.tolist())) == 1  # the fake edge merges both tracks
    pruned = label_hits(8, edges, scores, cut=0.5, backend=backend, prune="best")
    assert pruned.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]


def test_best_edges_numpy_and_torch_agree_and_keep_each_hits_best():
    import torch

    from trkx_ray.pipeline.labeling import best_edges

    rng = np.random.default_rng(3)
    n, e = 500, 4000
    edges = rng.integers(0, n, (2, e))
    scores = rng.random(e)
    mask = best_edges(n, edges, scores)
    mask_t = best_edges(n, torch.from_numpy(edges), torch.from_numpy(scores))
    assert np.array_equal(mask, mask_t.numpy())
    # every hit with an outgoing edge keeps its best one, and nothing that is neither
    for node in np.unique(edges[0])[:50]:
        out = np.flatnonzero(edges[0] == node)
        assert mask[out[np.argmax(scores[out])]]
    src_best = np.zeros(n) - 1
    np.maximum.at(src_best, edges[0], scores)
    dst_best = np.zeros(n) - 1
    np.maximum.at(dst_best, edges[1], scores)
    expect = (scores == src_best[edges[0]]) | (scores == dst_best[edges[1]])
    assert np.array_equal(mask, expect) and 0 < mask.sum() < e


def test_prune_respects_the_cut_and_rejects_unknown_modes():
    edges, scores = _two_tracks_with_fake_branch()
    # the sub-cut edge 3 -> 4 is the best incoming edge of hit 4 but stays out
    labels = label_hits(8, edges, scores, cut=0.5, prune="best")
    assert labels[3] != labels[4]
    with pytest.raises(ValueError, match="prune mode 'walk'"):
        label_hits(8, edges, scores, cut=0.5, prune="walk")


# ---------------------------------------------------------------- backend "walk"
def reference_walk(
    n: int, edges: np.ndarray, scores: np.ndarray, cut: float, walk_min: float, walk_add: float
) -> np.ndarray:
    """Straightforward CC-and-walk (test-only): enumerate every road, keep the longest.

    Same rules as the backend: edges above ``cut`` (self loops dropped, duplicates
    merged keeping the best score); components that are simple paths are tracks;
    the rest in Kahn topological order (ready hits first in, first out; initial
    ready hits by index; children by index; hits left on cycles last, by index);
    from each unused hit all roads are enumerated, a hit continuing along every
    unused later outer neighbour above ``walk_add``, or else its best one if it is
    above ``walk_min``; the longest road wins (ties: larger score sum).
    """
    best: dict[tuple[int, int], float] = {}
    for (u, v), s in zip(edges.T.tolist(), scores.tolist()):
        if s > cut and u != v:
            best[(u, v)] = max(best.get((u, v), -1.0), s)
    out: dict[int, list[tuple[int, float]]] = {u: [] for u in range(n)}
    indeg = [0] * n
    for (u, v), s in sorted(best.items()):
        out[u].append((v, s))
        indeg[v] += 1
    keys = np.array(list(best), dtype=np.int64).reshape(-1, 2).T
    comp = reference_components(n, keys, np.ones(keys.shape[1]), 0.0)
    label = [-1] * n
    for c in set(comp.tolist()):
        hits = [u for u in range(n) if comp[u] == c]
        n_edges = sum(len(out[u]) for u in hits)
        simple = all(len(out[u]) <= 1 and indeg[u] <= 1 for u in hits)
        if len(hits) > 1 and simple and n_edges == len(hits) - 1:
            for u in hits:
                label[u] = min(hits)
    deg = list(indeg)
    queue = [u for u in range(n) if deg[u] == 0]
    topo = []
    while queue:
        u = queue.pop(0)
        topo.append(u)
        for v, _ in out[u]:
            deg[v] -= 1
            if deg[v] == 0:
                queue.append(v)
    topo += [u for u in range(n) if u not in set(topo)]
    pos = {u: i for i, u in enumerate(topo)}
    used = {u for u in range(n) if label[u] >= 0}
    for s in topo:
        if s in used:
            continue
        finished, roads = [], [([s], [])]
        while roads:
            road, road_scores = roads.pop()
            u = road[-1]
            nxt = [(v, sc) for v, sc in out[u] if v not in used and pos[v] > pos[u]]
            if not nxt or max(sc for _, sc in nxt) <= walk_min:
                finished.append((road, road_scores))
                continue
            top = max(sc for _, sc in nxt)
            adds = [(v, sc) for v, sc in nxt if sc > walk_add]
            for v, sc in adds or [(v, sc) for v, sc in nxt if sc == top]:
                roads.append((road + [v], road_scores + [sc]))

        def rank(item):
            road, road_scores = item
            total = 0.0
            for sc in reversed(road_scores):
                total = total + sc
            return (len(road), total)

        road = max(finished, key=rank)[0]
        for u in road:
            used.add(u)
            label[u] = min(road)
    return canonical_labels(np.asarray(label))


def test_walk_simple_path_is_one_track_whatever_its_scores() -> None:
    # a component that is a simple path is a track even below walk_min
    edges = np.array([[0, 1, 2, 3], [1, 2, 3, 4]])
    scores = np.array([0.9, 0.2, 0.95, 0.15])
    labels = label_hits(6, edges, scores, cut=0.1, backend="walk", walk_min=0.5)
    np.testing.assert_array_equal(labels, [0, 0, 0, 0, 0, 1])
    _, kind = walk_tracks(6, edges, scores)
    np.testing.assert_array_equal(kind, [1, 1, 1, 1, 1, 0])
    # two tracks sharing nothing: two components, two tracks
    edges2 = np.array([[0, 1, 2, 5, 6], [1, 2, 3, 6, 7]])
    labels2 = label_hits(8, edges2, np.full(5, 0.9), cut=0.5, backend="walk")
    np.testing.assert_array_equal(labels2, [0, 0, 0, 0, 1, 2, 2, 2])


def test_walk_y_fork_resolved_by_score() -> None:
    # 0 -> 1 -> {2 -> 3 (0.9, 0.9), 4 -> 5 (0.7, 0.9)}: no edge above walk_add, so the
    # walk follows the best edge; the other branch is walked later from its own hit
    edges = np.array([[0, 1, 2, 1, 4], [1, 2, 3, 4, 5]])
    scores = np.array([0.95, 0.9, 0.9, 0.7, 0.9])
    labels = label_hits(6, edges, scores, cut=0.1, backend="walk", walk_min=0.5, walk_add=0.95)
    np.testing.assert_array_equal(labels, [0, 0, 0, 0, 1, 1])
    # swap the scores at the fork: the walk turns the other way
    scores2 = np.array([0.95, 0.7, 0.9, 0.9, 0.9])
    labels2 = label_hits(6, edges, scores2, cut=0.1, backend="walk", walk_min=0.5, walk_add=0.95)
    np.testing.assert_array_equal(labels2, [0, 0, 1, 1, 0, 0])
    # the fork's weak branch below walk_min: its hits stay out of the track
    scores3 = np.array([0.95, 0.9, 0.9, 0.3, 0.9])
    labels3 = label_hits(6, edges, scores3, cut=0.1, backend="walk", walk_min=0.5, walk_add=0.95)
    np.testing.assert_array_equal(labels3, [0, 0, 0, 0, 1, 1])


def test_walk_branches_above_walk_add_and_keeps_the_longest_road() -> None:
    # at hit 1 both edges score above walk_add: both roads are tried, the longer
    # (1 -> 4 -> 5 -> 6) wins although 1 -> 2 scores higher
    edges = np.array([[0, 1, 2, 1, 4, 5], [1, 2, 3, 4, 5, 6]])
    scores = np.array([0.95, 0.9, 0.9, 0.8, 0.9, 0.9])
    labels = label_hits(7, edges, scores, cut=0.1, backend="walk", walk_min=0.5, walk_add=0.7)
    np.testing.assert_array_equal(labels, [0, 0, 1, 1, 0, 0, 0])
    # with walk_add above both, the best edge decides: the short branch
    labels = label_hits(7, edges, scores, cut=0.1, backend="walk", walk_min=0.5, walk_add=0.95)
    np.testing.assert_array_equal(labels, [0, 0, 0, 0, 1, 1, 1])


def test_walk_bridges_a_double_hit_and_a_skipped_hit() -> None:
    # track 0 -> 1 -> {2, 3} -> 4 -> 5, where 2 and 3 are a double hit in one layer:
    # 1 -> 3 is the best edge, 1 -> 2 -> 3 second best; 2 -> 4 skips hit 3
    edges = np.array([[0, 1, 1, 2, 2, 3, 4], [1, 3, 2, 3, 4, 4, 5]])
    scores = np.array([0.95, 0.93, 0.85, 0.9, 0.85, 0.94, 0.95])
    # walk_add 0.8: the second-best edge 1 -> 2 is added as a branch and the road
    # through both hits of the double hit is the longest: one whole track
    labels = label_hits(6, edges, scores, cut=0.05, backend="walk", walk_min=0.5, walk_add=0.8)
    np.testing.assert_array_equal(labels, [0, 0, 0, 0, 0, 0])
    # walk_add 0.95: only best edges, hit 2 is left over as a singleton
    labels = label_hits(6, edges, scores, cut=0.05, backend="walk", walk_min=0.5, walk_add=0.95)
    np.testing.assert_array_equal(labels, [0, 0, 1, 0, 0, 0])
    # the link 3 -> 4 missing (below the cut): the skip edge 2 -> 4 bridges the gap and
    # the road 0-1-2-4-5 beats the dead end at 3, which is left over
    scores_gap = scores.copy()
    scores_gap[5] = 0.01
    labels = label_hits(6, edges, scores_gap, cut=0.05, backend="walk", walk_min=0.5, walk_add=0.8)
    np.testing.assert_array_equal(labels, [0, 0, 0, 1, 0, 0])
    # connected components cannot leave hit 3 out: 1 -> 3 and 2 -> 3 tie it in
    cc = label_hits(6, edges, scores_gap, cut=0.5, backend="scipy")
    np.testing.assert_array_equal(cc, [0, 0, 0, 0, 0, 0])


def test_walk_empty_and_all_below_cut() -> None:
    empty = np.zeros((2, 0), np.int64)
    np.testing.assert_array_equal(label_hits(4, empty, np.zeros(0), backend="walk"), [0, 1, 2, 3])
    assert label_hits(0, empty, np.zeros(0), backend="walk").shape == (0,)
    edges = np.array([[0, 1, 2], [1, 2, 3]])
    np.testing.assert_array_equal(
        label_hits(5, edges, np.full(3, 0.2), cut=0.5, backend="walk"), [0, 1, 2, 3, 4]
    )
    # self loops and duplicates
    edges = np.array([[3, 3, 2, 1, 1], [3, 3, 2, 4, 4]])
    np.testing.assert_array_equal(
        label_hits(6, edges, np.ones(5), backend="walk"), [0, 1, 2, 3, 1, 4]
    )


@pytest.mark.parametrize("seed", range(40))
def test_walk_matches_reference_on_random_graphs(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 26))
    e = int(rng.integers(0, 3 * n))
    edges = rng.integers(0, n, (2, e))
    if seed % 4:  # mostly DAGs, as the pipeline gives (inner -> outer); some cycles
        edges = np.sort(edges, axis=0)
    scores = rng.random(e)
    cut, walk_min, walk_add = 0.1, float(rng.uniform(0.1, 0.6)), float(rng.uniform(0.3, 0.9))
    got = label_hits(
        n, edges, scores, cut=cut, backend="walk", walk_min=walk_min, walk_add=walk_add
    )
    want = reference_walk(n, edges, scores, cut, walk_min, walk_add)
    np.testing.assert_array_equal(got, want)


def test_walk_every_hit_labelled_deterministic_and_order_free() -> None:
    edges, scores = synthetic_scored_graph(num_hits=20_000, num_edges=120_000, seed=9)
    # orient inner -> outer as the pipeline does: hit perm[i] of the synthetic graph
    # is the (i % 10)-th hit of its track; its "layer" plays the role of r
    perm = np.random.default_rng(9).permutation(20_000)
    layer = np.empty(20_000)
    layer[perm] = np.arange(20_000) % 10 + np.arange(20_000) / 1e6
    swap = layer[edges[0]] > layer[edges[1]]
    edges = np.where(swap, edges[::-1], edges)
    labels = label_hits(20_000, edges, scores, cut=0.3, backend="walk")
    assert labels.shape == (20_000,) and labels.dtype == np.int64
    np.testing.assert_array_equal(labels, canonical_labels(labels))
    perm = np.random.default_rng(1).permutation(edges.shape[1])
    again = label_hits(20_000, edges[:, perm], scores[perm], cut=0.3, backend="walk")
    np.testing.assert_array_equal(again, labels)
    # torch input gives the same
    got = label_hits(20_000, torch.as_tensor(edges), torch.as_tensor(scores), 0.3, backend="walk")
    np.testing.assert_array_equal(got, labels)
    # the synthetic 10-hit tracks are found: most true chains end in one track
    sizes = np.bincount(labels)
    assert np.sum(sizes >= 8) >= 0.8 * 2_000


def test_walk_options_checked() -> None:
    edges, scores = np.array([[0], [1]]), np.ones(1)
    with pytest.raises(ValueError, match="walk_min"):
        label_hits(2, edges, scores, backend="walk", walk_min=1.5)
    with pytest.raises(ValueError, match="walk_add"):
        label_hits(2, edges, scores, backend="walk", walk_add=float("nan"))
    with pytest.raises(ValueError, match="'walk' has no option"):
        label_hits(2, edges, scores, backend="walk", eps=0.1)


# -- the walk's attach step ------------------------------------------------------------


def reference_attach(
    labels: np.ndarray, edges: np.ndarray, scores: np.ndarray, attach: float, amax: int, amin: int
) -> np.ndarray:
    """numpy reference of the attach step: one pass, best edge per hit, one hit per target."""
    size = np.bincount(labels)[labels]
    keep = scores > attach
    a, b, s = edges[0][keep], edges[1][keep], scores[keep]
    u, v, w = np.r_[a, b], np.r_[b, a], np.r_[s, s]
    ok = (size[u] <= amax) & (size[v] >= amin) & (labels[u] != labels[v])
    u, v, w = u[ok], v[ok], w[ok]
    out = labels.copy()
    if u.size:
        o = np.lexsort((v, -w, u))  # per hit its best edge (ties: the smaller target)
        u, v, w = u[o], v[o], w[o]
        first = np.r_[True, u[1:] != u[:-1]]
        u, v, w = u[first], v[first], w[first]
        o = np.lexsort((u, -w, v))  # per target its best hit (ties: the smaller hit)
        u, v = u[o], v[o]
        first = np.r_[True, v[1:] != v[:-1]]
        out[u[first]] = labels[v[first]]
    return canonical_labels(out)


def test_walk_attach_hand_built() -> None:
    # hits 0-4: a 5-hit track (simple path); hit 5 hangs off hit 2 below the cut; hits 6-7:
    # a 2-hit track whose hit 7 hangs off hit 3; hits 8-11: a 4-hit track, 12 hangs off it
    edges = np.array([[0, 1, 2, 3, 2, 6, 3, 8, 9, 10, 9], [1, 2, 3, 4, 5, 7, 7, 9, 10, 11, 12]])
    scores = np.array([0.9, 0.9, 0.9, 0.9, 0.45, 0.9, 0.6, 0.9, 0.9, 0.9, 0.8])
    plain, kind = walk_tracks(13, edges, scores, cut=0.5)
    np.testing.assert_array_equal(plain, [0, 0, 0, 0, 0, 1, 2, 2, 3, 3, 3, 3, 4])
    labels, kind = walk_tracks(13, edges, scores, cut=0.5, attach=0.4)
    # 5 and 7 join the 5-hit track (7 leaves its 2-hit track); the 4-hit track takes nothing
    np.testing.assert_array_equal(labels, [0, 0, 0, 0, 0, 0, 1, 0, 2, 2, 2, 2, 3])
    np.testing.assert_array_equal(np.flatnonzero(kind == 3), [5, 7])
    # above the edge's score: hit 5 stays alone
    labels, _ = walk_tracks(13, edges, scores, cut=0.5, attach=0.5)
    assert labels[5] != labels[0] and labels[7] == labels[0]
    # a 4-hit track takes hits once attach_min allows it
    labels, _ = walk_tracks(13, edges, scores, cut=0.5, attach=0.4, attach_min=4)
    assert labels[12] == labels[8]
    # the 2-hit track's hits stay when attach_max is 1 (only singletons move)
    labels, _ = walk_tracks(13, edges, scores, cut=0.5, attach=0.4, attach_max=1)
    assert labels[7] == labels[6] and labels[5] == labels[0]
    # label_hits passes the options through
    np.testing.assert_array_equal(
        label_hits(13, edges, scores, cut=0.5, backend="walk", attach=0.4),
        [0, 0, 0, 0, 0, 0, 1, 0, 2, 2, 2, 2, 3],
    )


def test_walk_attach_one_hit_per_target_hit() -> None:
    # hits 5 and 6 both hang off hit 2 of the 5-hit track 0-4: only the better one joins,
    # in one pass (6 does not fall back to its second-best edge, nor chain through 5)
    edges = np.array([[0, 1, 2, 3, 2, 2, 4, 5], [1, 2, 3, 4, 5, 6, 6, 7]])
    scores = np.array([0.9, 0.9, 0.9, 0.9, 0.48, 0.47, 0.42, 0.46])
    labels, kind = walk_tracks(8, edges, scores, cut=0.5, attach=0.4)
    assert labels[5] == labels[0] and labels[6] != labels[0] and labels[7] != labels[0]
    np.testing.assert_array_equal(np.flatnonzero(kind == 3), [5])
    np.testing.assert_array_equal(labels, canonical_labels(labels))


@pytest.mark.parametrize("seed", range(30))
def test_walk_attach_matches_reference_on_random_graphs(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(10, 60))
    edges = np.sort(rng.integers(0, n, (2, int(rng.integers(n, 4 * n)))), axis=0)
    scores = rng.random(edges.shape[1])
    attach, amax = float(rng.uniform(0.1, 0.6)), int(rng.integers(1, 4))
    amin = amax + int(rng.integers(1, 3))
    plain, _ = walk_tracks(n, edges, scores, cut=0.3, walk_min=0.3, walk_add=0.8)
    got, kind = walk_tracks(
        n, edges, scores, cut=0.3, walk_min=0.3, walk_add=0.8,
        attach=attach, attach_max=amax, attach_min=amin,
    )
    np.testing.assert_array_equal(got, reference_attach(plain, edges, scores, attach, amax, amin))
    # the edge order does not matter, and only hits marked attached changed track
    perm = rng.permutation(edges.shape[1])
    again, _ = walk_tracks(
        n, edges[:, perm], scores[perm], cut=0.3, walk_min=0.3, walk_add=0.8,
        attach=attach, attach_max=amax, attach_min=amin,
    )
    np.testing.assert_array_equal(again, got)
    stayed = kind != 3
    np.testing.assert_array_equal(canonical_labels(got[stayed]), canonical_labels(plain[stayed]))


def test_walk_attach_options_checked() -> None:
    edges, scores = np.array([[0], [1]]), np.ones(1)
    with pytest.raises(ValueError, match="'attach' must be a number in"):
        label_hits(2, edges, scores, backend="walk", attach=1.5)
    with pytest.raises(ValueError, match="'attach_max' must be an integer"):
        label_hits(2, edges, scores, backend="walk", attach=0.4, attach_max=0)
    with pytest.raises(ValueError, match="'attach_min' .* must be larger"):
        label_hits(2, edges, scores, backend="walk", attach=0.4, attach_max=3, attach_min=3)
