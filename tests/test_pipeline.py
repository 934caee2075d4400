"""Tests of trkx_ray.pipeline.pipeline: the real sample end to end, edge cases."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from trkx_ray.events.event import Event, EventFormatError
from trkx_ray.pipeline import STAGES, Pipeline, PipelineError, PipelineResult
from trkx_ray.pipeline.config import ConfigError
from trkx_ray.pipeline.edges import EDGE_BACKENDS
from trkx_ray.pipeline.features import hit_features, random_event
from trkx_ray.pipeline.labeling import LABEL_BACKENDS
from trkx_ray.pipeline.pipeline import orient_edges, resolve_device

# the shipped default, on the edge backend that exists in this checkout
EDGES = {"edges": {"backend": "frnn" if "frnn" in EDGE_BACKENDS else "radius"}}


@pytest.fixture(scope="module")
def sample(sample_prefix) -> Event:
    from trkx_ray.events import io

    return io.load_event(sample_prefix)


def _pipe(device: str = "cpu", **overrides) -> Pipeline:
    from trkx_ray.pipeline.config import merge_overrides

    return Pipeline.from_config(
        "default", device=device, overrides=merge_overrides(EDGES, overrides)
    )


def _subset(event: Event, mask: np.ndarray) -> Event:
    hits = {k: v[mask] for k, v in event.hits.items()}
    keep_ids = hits["hit_id"]
    cells = None
    if event.cells is not None:
        cmask = np.isin(event.cells["hit_id"], keep_ids)
        cells = {k: v[cmask] for k, v in event.cells.items()}
    truth = {k: v[mask] for k, v in event.truth.items()} if event.truth is not None else None
    return Event(event.event_id, hits, cells=cells, truth=truth, source="subset")


def _check_result(result: PipelineResult, n: int) -> None:
    assert isinstance(result, PipelineResult)
    assert result.track_id.shape == (n,)
    assert result.track_id.dtype == np.int64
    assert set(result.timings) == {*STAGES, "total"}
    assert all(v >= 0.0 for v in result.timings.values())
    assert result.timings["total"] >= max(result.timings[s] for s in STAGES)
    assert set(result.num_edges) == {"build_edges", "filtering", "gnn"}
    if n:
        # canonical labels: 0..C-1 in order of first appearance
        _, first = np.unique(result.track_id, return_index=True)
        assert np.array_equal(result.track_id[np.sort(first)], np.arange(first.size))


def test_real_sample_end_to_end(sample, device):
    pipe = _pipe(device)
    result = pipe(sample, keep_graphs=True)
    n = sample.num_hits
    _check_result(result, n)
    assert result.event_id == 1
    assert np.array_equal(result.hit_id, sample.hits["hit_id"])
    ne = result.num_edges
    assert ne["build_edges"] >= ne["filtering"] >= ne["gnn"]
    assert 0 < ne["build_edges"] < pipe.config.edges.max_edges_per_hit * n
    assert 1 < result.num_tracks < n  # tracks merge hits, not everything
    graphs = result.graphs
    assert graphs is not None and set(graphs) == {"build_edges", "filtering", "gnn"}
    for stage, graph in graphs.items():
        assert graph["edges"].shape == (2, ne[stage])
        assert graph["edges"].dtype == np.int64
        assert graph["scores"].shape == (ne[stage],)
        assert np.all((graph["scores"] >= 0) & (graph["scores"] <= 1))
    cand = graphs["build_edges"]
    kept = cand["scores"] > pipe.config.filter.cut
    assert np.array_equal(cand["edges"][:, kept], graphs["filtering"]["edges"])
    assert np.all(graphs["gnn"]["scores"] > pipe.config.labeling.cut)
    # edges oriented inner -> outer, each unordered pair once
    r = sample.r
    src, dst = cand["edges"]
    assert np.all(r[src] <= r[dst])
    lo, hi = np.minimum(src, dst), np.maximum(src, dst)
    assert np.unique(lo * n + hi).size == src.size
    g_src, g_dst = graphs["gnn"]["edges"]
    tid = result.track_id
    if pipe.labeling_backend == "walk":
        # the walk splits components into tracks: every hit of a multi-hit track is
        # joined to its track by a kept edge or, if the attach step moved it, by an
        # edge above the attach score; and some kept edges join two tracks. The helix
        # extension then moves hits by geometry: the result is exactly its output on
        # the walk's labels
        from trkx_ray.pipeline.extend import extend_tracks
        from trkx_ray.pipeline.labeling import label_hits
        from trkx_ray.pipeline.quality import apply_quality

        cfg = pipe.config.labeling
        options = cfg.options
        f_src, f_dst = graphs["filtering"]["edges"]
        f_scores = graphs["filtering"]["scores"]
        walked = label_hits(n, graphs["filtering"]["edges"], f_scores, cut=cfg.cut,
                            backend="walk", prune=cfg.prune, **options)
        low = min(cfg.cut, options.get("attach") or 1.0)
        link = (walked[f_src] == walked[f_dst]) & (f_scores > low)
        linked = np.zeros(n, dtype=bool)
        linked[f_src[link]] = linked[f_dst[link]] = True
        sizes = np.bincount(walked)
        assert np.all(linked[sizes[walked] > 1])
        assert not np.all(walked[g_src] == walked[g_dst])
        if cfg.extend is None:
            assert np.array_equal(tid, walked)
        else:
            layer = sample.hits["volume_id"].astype(np.int64) * 1000 + sample.hits["layer_id"]
            extended = extend_tracks(sample.hits["x"], sample.hits["y"], sample.hits["z"],
                                     walked, layer=layer, **cfg.extend)
            assert not np.array_equal(extended, walked)  # it moved hits
            if cfg.quality is None:
                assert np.array_equal(tid, extended)
            else:  # then the quality selection dissolved some tracks
                selected = apply_quality(sample.hits["x"], sample.hits["y"], sample.hits["z"],
                                         extended, layer, graphs["filtering"]["edges"],
                                         f_scores, cfg.quality, cfg.extend)
                assert np.array_equal(tid, selected)
                assert len(np.unique(tid)) > len(np.unique(extended))
                # every track it kept is one of the extension's, hit for hit
                kept = np.bincount(tid)[tid] > 1
                pairs = np.unique(np.stack([tid[kept], extended[kept]]), axis=1)
                assert len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))
                assert np.array_equal(np.bincount(tid)[tid][kept],
                                      np.bincount(extended)[extended][kept])
    else:  # connected components: hits joined by a kept GNN edge share a track
        assert np.array_equal(tid[g_src], tid[g_dst])


def test_matches_radius_reference(sample):
    """The candidate graph is exactly the radius graph of the embedding, oriented."""
    import torch

    from trkx_ray.pipeline.edges import build_edges

    pipe = _pipe(precision="fp32")
    result = pipe(sample, keep_graphs=True)
    with torch.inference_mode():
        emb = pipe.embedding(pipe.inputs(sample)["embedding"])
    ref = build_edges(emb.numpy(), pipe.config.edges.radius, backend="radius")
    got = result.graphs["build_edges"]["edges"]
    lo, hi = np.minimum(got[0], got[1]), np.maximum(got[0], got[1])
    order = np.lexsort((hi, lo))
    assert np.array_equal(np.stack([lo[order], hi[order]]), ref)


def test_deterministic(sample):
    a = _pipe()(sample)
    b = _pipe()(sample)
    pipe = _pipe()
    c = pipe(sample)
    d = pipe(sample)
    for other in (b, c, d):
        assert np.array_equal(a.track_id, other.track_id)
        assert a.num_edges == other.num_edges


@pytest.mark.parametrize("precision", ["fp32", "bf16", "auto"])
def test_precisions_run(sample, precision):
    pipe = _pipe(precision=precision)
    assert pipe.precision in ("fp32", "bf16")
    if precision != "auto":
        assert pipe.precision == precision
    result = pipe(sample)
    _check_result(result, sample.num_hits)


@pytest.mark.parametrize(
    "backend", sorted(set(LABEL_BACKENDS) & {"scipy", "sknetwork", "torch", "dbscan"})
)
def test_labeling_backends_agree_on_components(sample, backend):
    """CC backends give the same partition; dbscan runs with its defaults."""
    result = _pipe(labeling={"backend": backend})(sample)
    _check_result(result, sample.num_hits)
    if backend != "dbscan":
        ref = _pipe(labeling={"backend": "scipy"})(sample)
        assert np.array_equal(result.track_id, ref.track_id)


def test_empty_event():
    event = random_event(0)
    result = _pipe()(event, keep_graphs=True)
    _check_result(result, 0)
    assert result.num_edges == {"build_edges": 0, "filtering": 0, "gnn": 0}
    sub = result.to_submission()
    assert all(v.shape == (0,) for v in sub.values())


def test_one_hit():
    result = _pipe()(random_event(1))
    _check_result(result, 1)
    assert result.track_id.tolist() == [0]
    assert result.num_edges["build_edges"] == 0


def test_all_noise_hits(sample):
    noise = _subset(sample, sample.truth["particle_id"] == 0)
    assert noise.num_hits > 500
    result = _pipe()(noise)
    _check_result(result, noise.num_hits)


def test_no_edges_at_build():
    result = _pipe(edges={"radius": 1e-7})(random_event(300, seed=1), keep_graphs=True)
    _check_result(result, 300)
    assert result.num_edges["build_edges"] == 0
    assert np.array_equal(result.track_id, np.arange(300))


def test_no_edges_after_filter_cut(sample):
    result = _pipe(filter={"cut": 0.999999})(sample)
    _check_result(result, sample.num_hits)
    assert result.num_edges["build_edges"] > 0
    assert result.num_edges["filtering"] == 0
    assert result.num_edges["gnn"] == 0
    assert np.array_equal(result.track_id, np.arange(sample.num_hits))


def test_nan_coordinate_is_a_clear_error():
    event = random_event(50)
    event.hits["z"][7] = np.nan
    with pytest.raises(EventFormatError, match=r"hits column 'z' has a non-finite value \(nan\) at row 7 \(hit_id 8\)"):
        _pipe()(event)


def test_nan_cell_charge_is_a_clear_error():
    event = random_event(50)
    event.cells["value"][3] = np.inf
    # a model set that reads cell charges (the shipped models do not) names the bad feature
    with pytest.raises(EventFormatError, match=r"feature 'charge' is not finite for hit_id 4"):
        hit_features(event, cell_features=True)
    untrained = {stage: {"weights": None} for stage in ("embedding", "filter", "gnn")}
    with pytest.raises(EventFormatError, match=r"feature 'charge' is not finite for hit_id 4"):
        _pipe(features={"cell_features": True}, edges={"radius": 0.02}, no_cells=None, **untrained)(event)
    # the default reads cluster lengths only (channel numbers), never the charges
    _check_result(_pipe()(event), event.num_hits)


def test_cells_of_unknown_hit():
    event = random_event(20)
    event.cells["hit_id"][5] = 999
    with pytest.raises(EventFormatError, match="unknown hit_id 999"):
        hit_features(event)


def test_cell_features_bincount(sample):
    feats = hit_features(sample)
    assert feats.shape == (sample.num_hits, 5)
    cells = sample.cells
    # reference for a handful of hits, straight from the cells table
    for row in (0, 17, sample.num_hits - 1):
        hid = sample.hits["hit_id"][row]
        mine = cells["hit_id"] == hid
        assert feats[row, 3] == pytest.approx(mine.sum() / 10.0)
        assert feats[row, 4] == pytest.approx(cells["value"][mine].sum(), rel=1e-5)
    np.testing.assert_allclose(feats[:, 0], sample.r / 1000.0, rtol=1e-6)
    np.testing.assert_allclose(feats[:, 1], sample.phi / np.pi, rtol=1e-6)
    assert hit_features(sample, cell_features=False).shape == (sample.num_hits, 3)


def test_missing_cells_gives_zero_cell_features(sample, caplog):
    event = Event(sample.event_id, sample.hits, source="hits only")
    assert np.all(hit_features(event, cell_features=True)[:, 3:5] == 0)
    # the shipped filter reads pixel cluster shapes and is trained without them too: a
    # hits-only event runs with the shapes marked absent, and the pipeline says so once
    with caplog.at_level(logging.WARNING):
        result = _pipe()(event)
    assert caplog.text.count("no cells") == 1
    assert "hits only has no cells: the models run without pixel cluster shapes" in caplog.text
    assert "cell features are zero" not in caplog.text
    _check_result(result, sample.num_hits)
    caplog.clear()
    # a model set that reads cells (here untrained) warns once that they are zero
    untrained = {stage: {"weights": None} for stage in ("embedding", "filter", "gnn")}
    with caplog.at_level(logging.WARNING):
        result = _pipe(features={"cell_features": True}, edges={"radius": 0.02}, no_cells=None,
                       **untrained)(event)
    assert "hits only has no cells: cell features are zero" in caplog.text
    _check_result(result, sample.num_hits)


def test_density_guard():
    with pytest.raises(PipelineError, match=r"max_edges_per_hit = 5.*edges\.radius"):
        _pipe(edges={"radius": 2.0, "max_edges_per_hit": 5})(random_event(400))


def test_noop(sample):
    pipe = Pipeline.from_config("noop")
    assert pipe.embedding is None
    result = pipe(sample, keep_graphs=True)
    _check_result(result, sample.num_hits)
    assert np.array_equal(result.track_id, np.arange(sample.num_hits))
    assert result.num_edges == {"build_edges": 0, "filtering": 0, "gnn": 0}
    assert pipe.warmup(100).track_id.shape == (100,)


def test_to_submission_and_write(sample, tmp_path):
    result = _pipe()(sample)
    sub = result.to_submission()
    assert sub["event_id"].dtype == np.int64 and np.all(sub["event_id"] == 1)
    assert sub["hit_id"].dtype == np.int32
    assert np.array_equal(sub["track_id"], result.track_id)
    from trkx_ray.events import io

    path = result.write_submission(tmp_path)
    assert path.name == "event000000001-submission.csv"
    back = io.read_submission(path)
    assert np.array_equal(np.asarray(back["hit_id"]), sample.hits["hit_id"])
    assert np.array_equal(np.asarray(back["track_id"]), result.track_id)


def test_warmup_and_repr():
    pipe = _pipe()
    result = pipe.warmup(500, repeats=2)
    _check_result(result, 500)
    assert "default" in repr(pipe)


def test_orient_edges():
    import torch

    r = torch.tensor([5.0, 1.0, 3.0, 3.0])
    edges = torch.tensor([[0, 0, 2, 1], [1, 2, 3, 3]])
    out = orient_edges(edges, r)
    assert out.tolist() == [[1, 2, 2, 1], [0, 0, 3, 3]]


def test_device_errors():
    import torch

    with pytest.raises(PipelineError, match="device must be"):
        resolve_device("gpu")
    with pytest.raises(PipelineError, match="device must be"):
        resolve_device(3)
    if not torch.cuda.is_available():
        with pytest.raises(PipelineError, match="CUDA is not available"):
            Pipeline.from_config("noop", device="cuda")
    else:
        with pytest.raises(PipelineError, match="CUDA device"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_missing_cugraph_degrades_to_torch_cc(sample, caplog):
    import importlib.util

    if importlib.util.find_spec("cugraph") is not None:
        pytest.skip("cugraph is installed here")
    pipe = _pipe(labeling={"backend": "cugraph"})
    assert pipe.labeling_backend == "torch"
    assert any("cugraph is not installed" in r.getMessage() for r in caplog.records)
    ref = _pipe(labeling={"backend": "torch"})(sample)
    assert np.array_equal(pipe(sample).track_id, ref.track_id)


def test_fp16_needs_cuda():
    with pytest.raises(ConfigError, match="fp16"):
        _pipe(precision="fp16")


def test_not_an_event():
    with pytest.raises(PipelineError, match="expected a trkx_ray Event"):
        _pipe()({"hits": {}})  # type: ignore[arg-type]


@pytest.mark.cuda
def test_cuda_matches_cpu(sample):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    cpu = _pipe(precision="fp32")(sample)
    gpu = _pipe("cuda", precision="fp32")(sample)
    # float reductions differ slightly between devices: compare graph sizes loosely
    assert abs(cpu.num_edges["build_edges"] - gpu.num_edges["build_edges"]) <= 0.01 * max(
        cpu.num_edges["build_edges"], 1
    )


def test_chunk_sizes_do_not_change_results(sample):
    small = {"chunk_size": 1000}
    a = _pipe(precision="fp32")(sample, keep_graphs=True)
    b = _pipe(precision="fp32", embedding=small, filter=small, gnn=small)(sample, keep_graphs=True)
    assert np.array_equal(a.track_id, b.track_id)
    np.testing.assert_allclose(
        a.graphs["filtering"]["scores"], b.graphs["filtering"]["scores"], atol=1e-5
    )


def test_k_max_caps_neighbours(sample):
    full = _pipe()(sample)
    capped = _pipe(edges={"k_max": 2})(sample)
    assert capped.num_edges["build_edges"] < full.num_edges["build_edges"]
    assert capped.num_edges["build_edges"] <= 2 * sample.num_hits
