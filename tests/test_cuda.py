"""CUDA against CPU: every GPU path of the package, on a real GPU (``pytest -m cuda``).

Every test is marked ``cuda``; ``tests/conftest.py`` skips them when
``torch.cuda.is_available()`` is false (never a fake GPU). ``scripts/gpu_kit.sh check``
runs them on the GPU machine.

* FRNN edge sets: the torch cell grid on CUDA gives exactly the CPU edge set (numba
  and brute force), on clustered and uniform points, with and without ``k_max``.
* Connected components: the torch backend on CUDA gives exactly scipy's partition.
* Models: embedding, filter and GNN on CUDA match the CPU within tolerance in fp32 and
  in the CUDA autocast precisions; the whole Pipeline on a simulated event agrees.
* Ray: a whole-GPU actor and two half-GPU actors (``num_gpus=0.5``) placed through
  the package's placement groups and run on an event.
* ``bench --device cuda``: a tiny run writes the contract JSON.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from trkx_ray.bench import synthetic_scored_graph
from trkx_ray.pipeline.edges import build_edges
from trkx_ray.pipeline.labeling import label_hits

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.cuda

#: max |cuda - cpu| of each model's output in fp32 (only reduction orders differ).
FP32_ATOL = 2e-4
#: autocast on CUDA vs fp32 on CPU: (mean, 99th percentile) of |difference| per model
#: (embedding coordinates, filter and GNN sigmoid scores). Calibrated on CPU bf16 autocast
#: (pile-up 20: GNN mean 0.0044, p99 0.089; filter p99 0.0098; embedding p99 0.0019),
#: with about 2x margin; fp16 has 3 more mantissa bits than bf16.
AUTOCAST_TOL = {
    "fp16": {"embedding": (1e-3, 5e-3), "filter": (2e-3, 1e-2), "gnn": (5e-3, 5e-2)},
    "bf16": {"embedding": (2e-3, 1e-2), "filter": (5e-3, 3e-2), "gnn": (1e-2, 0.2)},
}


def _pair_set(edges) -> set[tuple[int, int]]:
    e = edges.cpu().numpy() if hasattr(edges, "cpu") else np.asarray(edges)
    return set(map(tuple, e.T.tolist()))


def _same_component_fraction(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of hits whose component is the same hit set under labels ``a`` and ``b``."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    pair = a * (b.max() + 1) + b
    _, pair_inv, pair_n = np.unique(pair, return_inverse=True, return_counts=True)
    _, a_inv, a_n = np.unique(a, return_inverse=True, return_counts=True)
    _, b_inv, b_n = np.unique(b, return_inverse=True, return_counts=True)
    same = (pair_n[pair_inv] == a_n[a_inv]) & (pair_n[pair_inv] == b_n[b_inv])
    return float(same.mean()) if same.size else 1.0


@pytest.fixture(scope="module")
def points() -> np.ndarray:
    from trkx_ray.bench import clustered_points

    x, _ = clustered_points(num_particles=3000, r=0.1, seed=7)
    return np.ascontiguousarray(x, dtype=np.float32)


# -- edges ----------------------------------------------------------------------------
@pytest.mark.parametrize("k_max", [None, 8])
def test_frnn_cuda_matches_cpu_edge_set(points, k_max):
    r = 0.1
    cpu = build_edges(points, r, backend="frnn", k_max=k_max)
    xt = torch.from_numpy(points).cuda()
    gpu = build_edges(xt, r, backend="frnn", k_max=k_max)
    assert gpu.is_cuda and gpu.dtype == torch.int64
    assert cpu.shape[1] > points.shape[0]  # a real graph, not a trivial one
    np.testing.assert_array_equal(gpu.cpu().numpy(), cpu)
    # brute force on the GPU: the same exact rule, the same set
    brute = build_edges(xt, r, backend="radius", k_max=k_max)
    np.testing.assert_array_equal(brute.cpu().numpy(), cpu)


def test_frnn_cuda_matches_cpu_uniform_and_float64():
    from trkx_ray.bench import uniform_points

    x = uniform_points(20_000, 4, seed=3)
    r = 0.06
    cpu = build_edges(x, r, backend="frnn")
    gpu = build_edges(torch.from_numpy(x).cuda(), r, backend="frnn", subdiv=2)
    np.testing.assert_array_equal(gpu.cpu().numpy(), cpu)
    x64 = x.astype(np.float64)
    gpu64 = build_edges(torch.from_numpy(x64).cuda(), r, backend="frnn")
    assert _pair_set(gpu64) == _pair_set(build_edges(x64, r, backend="frnn"))


def test_frnn_cuda_empty_and_single_point():
    for n in (0, 1):
        x = torch.zeros((n, 3), device="cuda")
        out = build_edges(x, 0.1, backend="frnn")
        assert out.is_cuda and tuple(out.shape) == (2, 0)


# -- labeling -------------------------------------------------------------------------
@pytest.mark.parametrize("prune", ["none", "best"])
def test_torch_cc_cuda_matches_scipy(prune):
    edges, scores = synthetic_scored_graph(num_hits=60_000, num_edges=400_000, seed=5)
    ref = label_hits(60_000, edges, scores, cut=0.5, backend="scipy", prune=prune)
    te = torch.from_numpy(edges).cuda()
    ts = torch.from_numpy(scores).cuda()
    got = label_hits(60_000, te, ts, cut=0.5, backend="torch", prune=prune)
    assert isinstance(got, np.ndarray) and got.dtype == np.int64
    np.testing.assert_array_equal(got, ref)  # canonical labels: same partition, same numbers
    assert ref.max() + 1 < 60_000  # components were actually merged


def test_torch_cc_cuda_long_chain():
    # a path graph needs many hooking rounds: the worst case for the iteration count
    n = 200_000
    perm = np.random.default_rng(0).permutation(n)
    edges = np.stack([perm[:-1], perm[1:]]).astype(np.int64)
    scores = np.ones(n - 1, dtype=np.float32)
    got = label_hits(n, torch.from_numpy(edges).cuda(), torch.from_numpy(scores).cuda(),
                     cut=0.5, backend="torch")
    assert (got == 0).all()


# -- models and the pipeline ----------------------------------------------------------
@pytest.fixture(scope="module")
def event():
    from trkx_ray.events.simulate import simulate_event

    return simulate_event(pileup=20, seed=11, event_id=11)


def _pipeline(device: str, precision: str):
    from trkx_ray.pipeline import Pipeline

    return Pipeline.from_config("default", device=device, overrides={"precision": precision})


def _model_outputs(pipe, event, edges_cpu: np.ndarray, filtered_cpu: np.ndarray):
    from trkx_ray.pipeline.models import model_inputs

    cfg = pipe.config
    inputs = pipe.inputs(event)
    x, shape = inputs["x"], inputs["shape"]
    cand = torch.from_numpy(edges_cpu).to(pipe.device)
    filt = torch.from_numpy(filtered_cpu).to(pipe.device)
    with torch.inference_mode(), pipe._autocast():
        emb = pipe.embedding(inputs["embedding"], chunk_size=cfg.embedding.chunk_size)
        nodes = model_inputs(x, emb if cfg.filter.use_embedding else None,
                             shape if cfg.filter.cluster_shape else None)
        f = torch.sigmoid(pipe.filter(nodes, cand, chunk_size=cfg.filter.chunk_size))
        g = torch.sigmoid(pipe.gnn(inputs["gnn"], filt, chunk_size=cfg.gnn.chunk_size))
    return {k: v.float().cpu().numpy() for k, v in
            {"embedding": emb, "filter": f, "gnn": g}.items()}


@pytest.fixture(scope="module")
def cpu_reference(event):
    pipe = _pipeline("cpu", "fp32")
    result = pipe(event, keep_graphs=True)
    edges = result.graphs["build_edges"]["edges"]
    filtered = result.graphs["filtering"]["edges"]
    return result, edges, filtered, _model_outputs(pipe, event, edges, filtered)


@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_models_cuda_match_cpu(event, cpu_reference, precision):
    _, edges, filtered, ref = cpu_reference
    assert edges.shape[1] > 0 and filtered.shape[1] > 0
    got = _model_outputs(_pipeline("cuda", precision), event, edges, filtered)
    for name in ("embedding", "filter", "gnn"):
        assert got[name].shape == ref[name].shape
        assert np.isfinite(got[name]).all(), name
        diff = np.abs(got[name] - ref[name]).ravel()
        if precision == "fp32":
            err = float(diff.max())
            assert err <= FP32_ATOL, f"{name} fp32: max |cuda - cpu| = {err:.2e}"
        else:
            mean, p99 = float(diff.mean()), float(np.quantile(diff, 0.99))
            tol_mean, tol_p99 = AUTOCAST_TOL[precision][name]
            assert mean <= tol_mean and p99 <= tol_p99, (
                f"{name} {precision}: |cuda - cpu fp32| mean {mean:.2e} (<= {tol_mean:.0e}), "
                f"p99 {p99:.2e} (<= {tol_p99:.0e})")


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_pipeline_cuda_agrees_with_cpu(event, cpu_reference, precision):
    ref = cpu_reference[0]
    pipe = _pipeline("cuda", precision)
    got = pipe(event, keep_graphs=True)
    assert got.track_id.shape == ref.track_id.shape
    assert set(got.timings) >= {"embedding", "build_edges", "filtering", "gnn", "labeling",
                                "total"}
    built_cpu, built_gpu = _pair_set(ref.graphs["build_edges"]["edges"]), _pair_set(
        got.graphs["build_edges"]["edges"])
    jaccard = len(built_cpu & built_gpu) / max(len(built_cpu | built_gpu), 1)
    # only pairs within float error of the radius may differ (CPU bf16 autocast: 0.979)
    assert jaccard >= (0.999 if precision == "fp32" else 0.97), jaccard
    same = _same_component_fraction(ref.track_id, got.track_id)
    assert same >= (0.99 if precision == "fp32" else 0.95), same  # CPU bf16: 0.968


def test_pipeline_cuda_torch_cc_matches_scipy_on_its_graph(event):
    from trkx_ray.pipeline import Pipeline

    pipe = Pipeline.from_config("default", device="cuda", overrides={
        "precision": "fp32", "edges": {"backend": "frnn"}, "labeling": {"backend": "torch"}})
    result = pipe(event, keep_graphs=True)
    graph = result.graphs["filtering"]  # the graph the labeling stage saw (GNN scores)
    cfg = pipe.config_for(event).labeling  # events without cells run the no_cells cuts
    want = label_hits(event.num_hits, graph["edges"], graph["scores"], cut=cfg.cut,
                      backend="scipy", prune=cfg.prune)
    np.testing.assert_array_equal(result.track_id, want)
    assert result.num_edges["gnn"] > 0


# -- Ray: whole and fractional GPU actors ----------------------------------------------
@pytest.fixture(scope="module")
def ray_gpu():
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, logging_level="ERROR",
             log_to_driver=False, _node_ip_address="127.0.0.1")
    yield ray
    ray.shutdown()


@pytest.mark.ray
@pytest.mark.parametrize("actors_per_gpu", [1, 2])
def test_gpu_actors_placed_and_run(ray_gpu, event, actors_per_gpu):
    from trkx_ray.scaling.driver import start_workers, stop_workers
    from trkx_ray.scaling.resources import ResourcePlan, plan_resources

    plan = ResourcePlan(cpu_actors=0, cores_per_actor=1, gpus=1, actors_per_gpu=actors_per_gpu)
    assert plan.bundles()[0]["GPU"] == pytest.approx(1.0 / actors_per_gpu)
    pg = plan_resources(plan, timeout_s=60)
    slots = []
    try:
        slots = start_workers(plan, "default", placement_group=pg, warmup_hits=500)
        assert len(slots) == actors_per_gpu
        for slot in slots:
            assert slot.info["device"] == "cuda" and slot.info["gpu"], slot.info
            assert slot.info["gpu_name"]
        # fractional actors share the one GPU
        assert len({tuple(s.info["gpu"]) for s in slots}) == 1
        payload = ray_gpu.put(event.to_payload())
        outs = ray_gpu.get([s.handle.process.remote(i, None, payload)
                            for i, s in enumerate(slots)])
        for i, out in enumerate(outs):
            assert out.get("error") in (None, ""), out.get("error")
            assert out["seq"] == i and out["num_hits"] == event.num_hits
        infos = ray_gpu.get([s.handle.info.remote() for s in slots])
        assert all(info["events"] == 1 for info in infos)
    finally:
        stop_workers(slots, pg)


# -- bench --device cuda ----------------------------------------------------------------
def test_bench_cuda_smoke(tmp_path):
    from trkx_ray import bench

    out = tmp_path / "bench.json"
    rc = bench.main(["--device", "cuda", "--pileup", "10", "--events", "2", "--warmup", "1",
                     "--only", "Baseline,+FRNN", "--json", str(out)])
    assert rc == 0
    report = json.loads(out.read_text())
    assert set(report["configs"]) == {"Baseline", "+FRNN"}
    for stages in report["configs"].values():
        for stage in ("Data loading", "Embedding", "Build edge", "Filtering", "GNN", "Labeling",
                      "Total"):
            assert stages[stage]["mean_s"] >= 0 and "std_s" in stages[stage]
    assert report["machine"]["gpu_name"] and report["machine"]["cuda_capability"]
    assert report["memory"]["+FRNN"]["cuda_peak_mb"] > 0
