"""Tests of build_edges and its backends (trkx_ray.pipeline.edges)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trkx_ray.bench import clustered_points, time_edge_backends, uniform_points
from trkx_ray.pipeline import EDGE_BACKENDS, build_edges
from trkx_ray.pipeline.edges import (
    canonical_edges,
    cap_neighbours,
    pair_sqdist,
)

BACKENDS = ["radius", "faiss", "frnn"]


def brute(x: np.ndarray, r: float) -> np.ndarray:
    i, j = np.triu_indices(x.shape[0], k=1)
    keep = pair_sqdist(x, i, j) < float(r) ** 2
    return np.stack([i[keep], j[keep]]).astype(np.int64)


def is_canonical(e: np.ndarray) -> bool:
    if e.shape[1] == 0:
        return True
    key = e[0] * (int(e.max()) + 1) + e[1]
    return bool((e[0] < e[1]).all() and (np.diff(key) > 0).all())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n", [0, 1, 2, 5, 300])
@pytest.mark.parametrize("dim", [1, 3, 8])
@pytest.mark.parametrize("r", [0.1, 0.45])
def test_backends_exact_on_random(backend: str, n: int, dim: int, r: float) -> None:
    x = uniform_points(n, dim, seed=7 * n + dim)
    out = build_edges(x, r, backend=backend)
    assert isinstance(out, np.ndarray) and out.dtype == np.int64 and out.shape[0] == 2
    assert is_canonical(out)
    np.testing.assert_array_equal(out, brute(x, r))


def test_backends_identical_on_clustered() -> None:
    x, _ = clustered_points(num_particles=1500, seed=2)
    ref = build_edges(x, 0.1, backend="radius")
    assert ref.shape[1] > 3 * x.shape[0]  # a dense graph (~10 neighbours per point)
    for backend in ("faiss", "frnn"):
        np.testing.assert_array_equal(build_edges(x, 0.1, backend=backend), ref)


def test_backends_ties_and_duplicates() -> None:
    g = np.stack(np.meshgrid(*[np.arange(5)] * 4, indexing="ij"), -1).reshape(-1, 4)
    lattice = (g * 0.125).astype(np.float32)
    rng = np.random.default_rng(1)
    base = rng.random((200, 4)).astype(np.float32)
    step = rng.normal(size=(200, 4))
    step /= np.linalg.norm(step, axis=1, keepdims=True)
    partners = (base + 0.125 * step).astype(np.float32)
    x = np.concatenate([lattice, lattice[:30], base, partners])
    ref = brute(x, 0.125)
    for backend in BACKENDS:
        np.testing.assert_array_equal(build_edges(x, 0.125, backend=backend), ref)


def test_unnormalised_offset_coordinates() -> None:
    x, _ = clustered_points(num_particles=300, normalize=False, seed=4)
    x = x * 50.0 + 200.0  # coordinates ~200, r = 5: faiss slack must hold
    ref = brute(x, 5.0)
    for backend in BACKENDS:
        np.testing.assert_array_equal(build_edges(x, 5.0, backend=backend), ref)


def test_float64_large_offset() -> None:
    # float64 points far from the origin: float32 rounding of the raw
    # coordinates (~0.1) would exceed r; centring first keeps faiss/radius exact
    x, _ = clustered_points(num_particles=200, normalize=False, seed=3)
    x = x.astype(np.float64) + 1e6
    ref = brute(x, 0.1)
    assert ref.shape[1] > 0
    for backend in BACKENDS:
        np.testing.assert_array_equal(build_edges(x, 0.1, backend=backend), ref)


@pytest.mark.parametrize("backend", BACKENDS)
def test_torch_in_torch_out(backend: str, device: str) -> None:
    if backend == "faiss":
        pytest.importorskip("faiss")  # the GPU kit's image has no faiss
    x, _ = clustered_points(num_particles=300, seed=9)
    ref = build_edges(x, 0.1, backend="radius")
    xt = torch.from_numpy(x).to(device)
    out = build_edges(xt, 0.1, backend=backend)
    assert isinstance(out, torch.Tensor)
    assert out.device.type == device and out.dtype == torch.int64
    np.testing.assert_array_equal(out.cpu().numpy(), ref)
    out64 = build_edges(xt.double(), 0.1, backend=backend)
    np.testing.assert_array_equal(out64.cpu().numpy(), brute(x.astype(np.float64), 0.1))


def test_frnn_torch_impl_on_cpu_equals_numba() -> None:
    x, _ = clustered_points(num_particles=500, seed=12)
    a = build_edges(x, 0.1, backend="frnn")
    b = build_edges(x, 0.1, backend="frnn", impl="torch")
    c = build_edges(torch.from_numpy(x), 0.1, backend="frnn", impl="torch")
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c.numpy())


@pytest.mark.parametrize("k", [1, 2, 5])
def test_k_max_exact_backends(k: int) -> None:
    x, _ = clustered_points(num_particles=300, seed=5)
    full = build_edges(x, 0.1, backend="radius")
    a = build_edges(x, 0.1, backend="frnn", k_max=k)
    b = build_edges(x, 0.1, backend="radius", k_max=k)
    np.testing.assert_array_equal(a, b)
    assert is_canonical(a)
    # reference: per point, the k nearest (ties by index), union of both ends
    n = x.shape[0]
    d2 = pair_sqdist(x, full[0], full[1])
    keep = np.zeros(full.shape[1], dtype=bool)
    for p in range(n):  # reference only, tiny input
        idx = np.flatnonzero((full[0] == p) | (full[1] == p))
        other = np.where(full[0, idx] == p, full[1, idx], full[0, idx])
        order = np.lexsort((other, d2[idx]))
        keep[idx[order[:k]]] = True
    np.testing.assert_array_equal(a, full[:, keep])
    deg = np.bincount(a.ravel(), minlength=n)
    assert deg.max() <= 2 * k + 40  # capped (union can exceed k a little)


def test_k_max_faiss_knn() -> None:
    x, _ = clustered_points(num_particles=300, seed=5)
    full = build_edges(x, 0.1, backend="radius")
    big = build_edges(x, 0.1, backend="faiss", k_max=x.shape[0])
    np.testing.assert_array_equal(big, full)  # k >= N: the full radius graph
    small = build_edges(x, 0.1, backend="faiss", k_max=3)
    assert is_canonical(small)
    assert small.shape[1] < full.shape[1]
    # every kept pair is a true radius edge
    key = lambda e: set(map(tuple, e.T.tolist()))  # noqa: E731
    assert key(small) <= key(full)
    exact = build_edges(x, 0.1, backend="frnn", k_max=3)
    # faiss kNN and exact kNN agree except for distance ties
    assert len(key(small) ^ key(exact)) <= 0.01 * exact.shape[1]


def test_cap_neighbours_torch_numpy_agree() -> None:
    x, _ = clustered_points(num_particles=200, seed=8)
    e = build_edges(x, 0.1, backend="frnn")
    a = cap_neighbours(x, e, 4)
    b = cap_neighbours(torch.from_numpy(x), torch.from_numpy(e), 4)
    np.testing.assert_array_equal(a, b.numpy())
    assert cap_neighbours(x, e[:, :0], 4).shape == (2, 0)


def test_canonical_edges() -> None:
    out = canonical_edges(np.array([3, 1, 2, 1, 4]), np.array([1, 3, 2, 0, 0]))
    np.testing.assert_array_equal(out, [[0, 0, 1], [1, 4, 3]])
    assert canonical_edges(np.array([]), np.array([])).shape == (2, 0)


def test_errors() -> None:
    x = uniform_points(20, 3)
    with pytest.raises(ValueError, match="unknown edge backend 'kdtree'"):
        build_edges(x, 0.1, backend="kdtree")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['grid'\].*'frnn'"):
        build_edges(x, 0.1, backend="frnn", grid=3)
    with pytest.raises(ValueError, match="k_max"):
        build_edges(x, 0.1, backend="frnn", k_max=0)
    with pytest.raises(ValueError, match="k_max"):
        build_edges(x, 0.1, backend="frnn", k_max=2.5)
    with pytest.raises(ValueError, match="impl"):
        build_edges(x, 0.1, backend="frnn", impl="cuda")
    bad = x.copy()
    bad[3, 0] = np.nan
    for backend in BACKENDS:
        with pytest.raises(ValueError, match="NaN or infinite"):
            build_edges(bad, 0.1, backend=backend)
        with pytest.raises(ValueError, match="NaN or infinite"):
            build_edges(torch.from_numpy(bad), 0.1, backend=backend)
        with pytest.raises(ValueError, match="radius r"):
            build_edges(x, -0.5, backend=backend)
        with pytest.raises(ValueError, match="N x D"):
            build_edges(x.ravel(), 0.1, backend=backend)
        with pytest.raises(ValueError, match="N x D"):
            build_edges(torch.from_numpy(x.ravel()), 0.1, backend=backend)
    assert set(EDGE_BACKENDS) == {"radius", "faiss", "frnn"}


def test_time_edge_backends() -> None:
    x, _ = clustered_points(num_particles=200, seed=1)
    res = time_edge_backends(x, 0.1, backends=BACKENDS, repeats=2, warmup=1)
    assert set(res) == set(BACKENDS)
    counts = {b: res[b]["num_edges"] for b in BACKENDS}
    assert len(set(counts.values())) == 1 and counts["frnn"] > 0
    for b in BACKENDS:
        assert res[b]["mean_s"] > 0 and res[b]["min_s"] <= res[b]["mean_s"]


def test_radius_small_chunks_and_frnn_threads() -> None:
    x, _ = clustered_points(num_particles=200, seed=6)
    ref = build_edges(x, 0.1, backend="radius")
    np.testing.assert_array_equal(build_edges(x, 0.1, backend="radius", chunk=7), ref)
    np.testing.assert_array_equal(build_edges(x, 0.1, backend="frnn", threads=2), ref)
    np.testing.assert_array_equal(build_edges(x, 0.1, backend="faiss", threads=1), ref)
