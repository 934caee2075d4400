"""Tests of the cell-grid FRNN search (trkx_ray.pipeline.frnn)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from trkx_ray.bench import clustered_points, uniform_points
from trkx_ray.pipeline.edges import build_edges, pair_sqdist
from trkx_ray.pipeline.frnn import (
    DEFAULT_GRID_DIMS,
    check_points,
    default_max_cells,
    frnn_edges,
    frnn_edges_torch,
    grid_frame,
    plan_grid,
)


def brute(x: np.ndarray, r: float) -> np.ndarray:
    """Reference: all pairs, exact rule, plain numpy (small inputs only)."""
    n = x.shape[0]
    i, j = np.triu_indices(n, k=1)
    keep = pair_sqdist(x, i, j) < float(r) ** 2
    return np.stack([i[keep], j[keep]]).astype(np.int64)


@pytest.mark.parametrize("n", [0, 1, 2, 3, 17, 400])
@pytest.mark.parametrize("dim", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("r", [0.05, 0.2, 0.7])
def test_matches_bruteforce_uniform(n: int, dim: int, r: float) -> None:
    x = uniform_points(n, dim, seed=n * 31 + dim)
    np.testing.assert_array_equal(frnn_edges(x, r), brute(x, r))


@pytest.mark.parametrize("grid_dims", [1, 2, 3, 4, 5, 6, 8])
@pytest.mark.parametrize("subdiv", [1, 2, 3])
@pytest.mark.parametrize("rotate", ["pca", "none"])
def test_grid_options_same_result(grid_dims: int, subdiv: int, rotate: str) -> None:
    x, _ = clustered_points(num_particles=150, dim=8, seed=3)
    ref = brute(x, 0.1)
    out = frnn_edges(x, 0.1, grid_dims=grid_dims, subdiv=subdiv, rotate=rotate)
    np.testing.assert_array_equal(out, ref)


def test_clustered_unnormalised_and_float64() -> None:
    x, _ = clustered_points(num_particles=200, dim=6, normalize=False, seed=1)
    ref = brute(x, 0.1)
    np.testing.assert_array_equal(frnn_edges(x, 0.1), ref)
    x64 = x.astype(np.float64) * 3.0 + 1e3
    np.testing.assert_array_equal(frnn_edges(x64, 0.3), brute(x64, 0.3))


def test_duplicates_and_exact_ties() -> None:
    # lattice with spacing exactly r (binary fractions): axis neighbours at d == r
    # are NOT edges (strict rule); duplicates (d = 0) are.
    g = np.stack(np.meshgrid(*[np.arange(6)] * 3, indexing="ij"), -1).reshape(-1, 3)
    x = (g * 0.25).astype(np.float32)
    x = np.concatenate([x, x[:20]])  # 20 duplicated points
    out = frnn_edges(x, 0.25)
    np.testing.assert_array_equal(out, brute(x, 0.25))
    assert out.shape[1] == 20  # only the duplicate pairs
    # just above r: the 6-neighbourhood appears
    np.testing.assert_array_equal(frnn_edges(x, 0.2500001), brute(x, 0.2500001))
    assert frnn_edges(x, 0.2500001).shape[1] > 20


def test_near_ties_random() -> None:
    # partners at distance r up to float32 rounding: both sides of the tie
    rng = np.random.default_rng(5)
    base = rng.random((300, 4)).astype(np.float32)
    direction = rng.normal(size=(300, 4))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    r = 0.1
    partner = (base + r * direction).astype(np.float32)
    x = np.concatenate([base, partner])
    d2 = pair_sqdist(x, np.arange(300), np.arange(300, 600))
    assert (d2 < r * r).any() and (d2 >= r * r).any()  # ties fall both ways
    for rotate in ("pca", "none"):
        np.testing.assert_array_equal(frnn_edges(x, r, rotate=rotate), brute(x, r))


def test_all_points_in_one_cell() -> None:
    x = uniform_points(300, 4, seed=2)
    out = frnn_edges(x, 10.0)
    assert out.shape[1] == 300 * 299 // 2
    np.testing.assert_array_equal(out, brute(x, 10.0))


def test_huge_coordinate_range_bounded_cells() -> None:
    x = uniform_points(500, 3, seed=4)
    x[:3] = [[1e7, -1e7, 5e6], [-1e7, 1e7, 0.0], [1e7, 1e7, 1e7]]
    lo, hi = x.min(axis=0), x.max(axis=0)
    plan = plan_grid(lo, hi, 0.05, grid_dims=3, n=len(x))
    assert plan.num_cells <= default_max_cells(len(x))
    np.testing.assert_array_equal(frnn_edges(x, 0.05), brute(x, 0.05))
    # an explicit small cap forces fewer grid dims / larger cells, same edges
    np.testing.assert_array_equal(frnn_edges(x, 0.05, max_cells=100), brute(x, 0.05))


def test_plan_grid_choices() -> None:
    lo = np.zeros(8)
    hi = np.array([2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 0.01, 0.01])
    plan = plan_grid(lo, hi, 0.1, grid_dims=3, n=10_000)
    assert plan.dims.tolist() == [0, 1, 2]
    assert plan.cell >= 0.1
    assert len(plan.offsets) == (3**3 - 1) // 2
    plan = plan_grid(lo, hi, 0.1, grid_dims=8, n=10_000, max_cells=10**6)
    assert plan.num_cells <= 10**6
    assert len(plan.dims) < 8
    # dims of largest extent are chosen
    hi2 = np.array([0.1, 5.0, 0.1, 3.0])
    assert plan_grid(np.zeros(4), hi2, 0.1, grid_dims=2, n=100).dims.tolist() == [1, 3]
    # subdivided cells: pruned stencil, still symmetric halves
    p2 = plan_grid(lo, hi, 0.1, grid_dims=5, n=10_000, subdiv=2, max_cells=10**9)
    assert p2.cell == pytest.approx(0.05, rel=1e-5)
    assert len(p2.dims) == 5
    assert len(p2.offsets) < (5**5 - 1) // 2
    with pytest.raises(ValueError, match="subdiv"):
        plan_grid(lo, hi, 0.1, subdiv=0)
    with pytest.raises(ValueError, match="grid_dims"):
        plan_grid(lo, hi, 0.1, grid_dims=0)
    with pytest.raises(ValueError, match="max_cells"):
        plan_grid(lo, hi, 0.1, max_cells=3)


def test_grid_frame_pca_is_rotation() -> None:
    x, _ = clustered_points(num_particles=100, dim=5, seed=0)
    y, lo, hi, margin = grid_frame(x, "pca")
    xc = x.astype(np.float64) - x.astype(np.float64).mean(axis=0)
    np.testing.assert_allclose(
        np.linalg.norm(y, axis=1), np.linalg.norm(xc, axis=1), rtol=1e-9, atol=1e-12
    )
    np.testing.assert_allclose(lo, y.min(axis=0))
    np.testing.assert_allclose(hi, y.max(axis=0))
    assert 0 < margin < 1e-10
    var = y.var(axis=0)
    assert np.all(np.diff(var) <= 1e-12)  # principal axes, largest variance first
    with pytest.raises(ValueError, match="rotate"):
        grid_frame(x, "spin")


@pytest.mark.parametrize("threads", [2])
def test_parallel_kernel_matches_serial(threads: int) -> None:
    x, _ = clustered_points(num_particles=800, seed=7)
    np.testing.assert_array_equal(frnn_edges(x, 0.1, threads=threads), frnn_edges(x, 0.1))


_THREAD_CHECK = """
import numpy as np, torch
torch.set_num_threads(1)
torch.ones(512, 512) @ torch.ones(512, 512)  # torch's OpenMP pool in use first
from trkx_ray.pipeline.frnn import frnn_edges
x = np.random.default_rng(0).random((5000, 4)).astype(np.float32)
frnn_edges(x, 0.05, threads={threads})
print(torch.get_num_threads())
"""


@pytest.mark.parametrize("threads", [None, 2])
def test_parallel_kernel_leaves_torch_threads_alone(threads) -> None:
    # numba's OpenMP layer shares the OpenMP runtime with torch: launching it and its
    # parallel regions used to leave torch (set to 1 thread) on numba's thread count
    import os
    import subprocess
    import sys

    if (os.cpu_count() or 1) < 2:
        pytest.skip("needs two cores for numba's parallel kernel")
    out = subprocess.run([sys.executable, "-c", _THREAD_CHECK.format(threads=threads)],
                         capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip().splitlines()[-1] == "1", out.stderr[-2000:]


def test_torch_matches_numba(device: str) -> None:
    x, _ = clustered_points(num_particles=600, seed=11)
    ref = frnn_edges(x, 0.1)
    xt = torch.from_numpy(x).to(device)
    out = frnn_edges_torch(xt, 0.1)
    assert out.device.type == device and out.dtype == torch.int64
    np.testing.assert_array_equal(out.cpu().numpy(), ref)
    # small chunks exercise the chunked candidate expansion
    out = frnn_edges_torch(xt, 0.1, chunk_pairs=997, subdiv=2, grid_dims=3)
    np.testing.assert_array_equal(out.cpu().numpy(), ref)


@pytest.mark.parametrize("n", [0, 1, 2, 50])
def test_torch_small_and_uniform(device: str, n: int) -> None:
    x = uniform_points(n, 3, seed=n)
    out = frnn_edges_torch(torch.from_numpy(x).to(device), 0.3)
    np.testing.assert_array_equal(out.cpu().numpy(), brute(x, 0.3))


def test_errors() -> None:
    x = uniform_points(10, 3)
    bad = x.copy()
    bad[4, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite.*first row 4"):
        frnn_edges(bad, 0.1)
    with pytest.raises(ValueError, match="NaN or infinite"):
        frnn_edges_torch(torch.from_numpy(bad), 0.1)
    bad[4, 1] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        frnn_edges(bad, 0.1)
    for r in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="radius r"):
            frnn_edges(x, r)
    with pytest.raises(ValueError, match="N x D"):
        frnn_edges(x[0], 0.1)
    with pytest.raises(ValueError, match="N x D"):
        check_points(np.zeros((2, 2, 2)), 0.1)


def test_generator_resembles_embedding() -> None:
    x, particle = clustered_points(num_particles=2000, seed=0)
    assert x.dtype == np.float32 and x.shape[1] == 8
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)
    noise = (particle < 0).mean()
    assert 0.12 < noise < 0.18
    edges = build_edges(x, 0.1, backend="frnn")
    # same-particle hits are mostly connected
    same = particle[edges[0]] == particle[edges[1]]
    sizes = np.bincount(particle[particle >= 0])
    true_pairs = (sizes * (sizes - 1) // 2).sum()
    assert same.sum() > 0.9 * true_pairs
    x2, p2 = clustered_points(num_particles=2000, seed=0)
    np.testing.assert_array_equal(x, x2)  # deterministic
    assert DEFAULT_GRID_DIMS >= 3


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 60),
    dim=st.integers(1, 6),
    r=st.sampled_from([0.125, 0.25, 0.3, 1.0]),
    grid_dims=st.integers(1, 6),
    subdiv=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_property_lattice_ties(
    n: int, dim: int, r: float, grid_dims: int, subdiv: int, seed: int
) -> None:
    # coordinates on a 1/8 lattice: many exact ties at d == r and duplicates
    rng = np.random.default_rng(seed)
    x = (rng.integers(0, 6, size=(n, dim)) / 8.0).astype(np.float32)
    out = frnn_edges(x, r, grid_dims=grid_dims, subdiv=subdiv)
    np.testing.assert_array_equal(out, brute(x, r))
