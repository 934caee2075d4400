"""Pixel-barrel cluster shapes: the simulator's cluster lengths, the per-hit |cot theta|
estimate, the filter's pair terms, the widening of a trained filter, and training with it."""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from trkx_ray.events import load_event
from trkx_ray.events.event import Event, EventFormatError
from trkx_ray.events.simulate import simulate_event
from trkx_ray.pipeline import Pipeline
from trkx_ray.pipeline.config import ConfigError, load_config
from trkx_ray.pipeline.features import SHAPE_SCALE, cluster_shape
from trkx_ray.pipeline.models import FilterMLP, model_inputs, shape_geometry

ROOT = Path(__file__).resolve().parents[1]
#: the default pipeline with a cluster-shape filter of random weights (seeded)
SHAPE_FILTER = {"filter": {"cluster_shape": True, "weights": None}}


def _event(cells: dict | None) -> Event:
    """Three hits: two in the pixel barrel (volume 8), one in the short-strip barrel."""
    hits = {
        "hit_id": np.array([1, 2, 3], np.int32),
        "x": np.array([32.0, 72.0, 260.0], np.float32),
        "y": np.zeros(3, np.float32),
        "z": np.array([10.0, 20.0, 30.0], np.float32),
        "volume_id": np.array([8, 8, 13], np.int32),
        "layer_id": np.array([2, 2, 2], np.int32),
        "module_id": np.array([1, 1, 1], np.int32),
    }
    return Event(event_id=7, hits=hits, cells=cells, source="hand-made event")


def _cells() -> dict:
    # hit 1: 9 pixels along v (ch1 100..108), 2 along u; hit 2: one pixel; hit 3: 4 strips
    hid = np.r_[np.full(18, 1), [2], np.full(4, 3)].astype(np.int32)
    ch0 = np.r_[np.tile([5, 6], 9), [9], [40, 41, 42, 43]].astype(np.int32)
    ch1 = np.r_[np.repeat(np.arange(100, 109), 2), [3], [0, 0, 0, 0]].astype(np.int32)
    return {"hit_id": hid, "ch0": ch0, "ch1": ch1, "value": np.ones(len(hid), np.float32)}


def test_cluster_shape_by_hand():
    got = cluster_shape(_event(_cells()))
    # 9 pixels along v: |cot theta| = 8 x 0.05625 mm / 0.15 mm = 3.0 (the geometry's pitch
    # and thickness), a single pixel: 0; the strip hit has no pixel-barrel shape
    want = np.array([[3.0 / SHAPE_SCALE, 1.0], [0.0, 1.0], [0.0, 0.0]], np.float32)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # cells in any order give the same shapes
    perm = np.random.default_rng(0).permutation(len(_cells()["hit_id"]))
    shuffled = {k: v[perm] for k, v in _cells().items()}
    np.testing.assert_allclose(cluster_shape(_event(shuffled)), want, rtol=1e-6)


def test_cluster_shape_without_cells_and_bad_modules():
    assert not cluster_shape(_event(None)).any()
    event = _event(_cells())
    event.hits["module_id"][0] = 999_999
    with pytest.raises(EventFormatError, match=r"hand-made event: pixel-barrel cluster shapes"):
        cluster_shape(event)
    event = _event(_cells())
    event.cells["hit_id"][0] = 55
    with pytest.raises(EventFormatError, match="hand-made event: cells reference unknown hit_id 55"):
        cluster_shape(event)


def _truth_cot(event: Event) -> tuple[np.ndarray, np.ndarray]:
    t = event.truth
    pt = np.hypot(t["tpx"], t["tpy"])
    cot = np.abs(np.asarray(t["tpz"]) / np.maximum(pt, 1e-9))
    return cot, (np.asarray(t["particle_id"]) != 0) & (pt > 0.5)


@pytest.mark.parametrize("which", ["real", "simulated"])
def test_estimate_follows_the_true_polar_angle(which, sample_prefix):
    """On the real sample and on a simulated event alike, the cluster's |cot theta|
    estimate follows the hit's true |cot theta| (pT > 0.5 GeV particles)."""
    event = (load_event(sample_prefix) if which == "real"
             else simulate_event(pileup=10, seed=424, event_id=424))
    shape = cluster_shape(event)
    cot, sel = _truth_cot(event)
    m = sel & (shape[:, 1] > 0) & (cot < 10)
    assert m.sum() > 200
    est = SHAPE_SCALE * shape[m, 0]
    assert np.corrcoef(est, cot[m])[0, 1] > 0.97
    assert np.median(np.abs(est - cot[m])) < 0.25
    # long clusters are not capped: |cot theta| > 4 gives > 10 pixels (the real sample's
    # median is 13 at 4-6); a cap at 6 pixels would read as |cot theta| <= 1.9
    steep = m & (cot > 4)
    assert steep.sum() > 10 and np.median(SHAPE_SCALE * shape[steep, 0]) > 3.5


def test_simulated_pixel_clusters_are_two_wide_in_u():
    event = simulate_event(pileup=10, seed=425, event_id=425)
    c = event.cells
    vol = dict(zip(event.hits["hit_id"].tolist(), event.hits["volume_id"].tolist()))
    pix = np.array([vol[h] == 8 for h in c["hit_id"].tolist()])
    hid, ch0 = c["hit_id"][pix], c["ch0"][pix].astype(np.int64)
    order = np.argsort(hid, kind="stable")
    hid, ch0 = hid[order], ch0[order]
    starts = np.flatnonzero(np.r_[True, hid[1:] != hid[:-1]])
    width = np.maximum.reduceat(ch0, starts) - np.minimum.reduceat(ch0, starts) + 1
    assert np.median(width) == 2  # as the real sample's pixel-barrel clusters


def test_shape_geometry_by_hand():
    # r, phi, z in metres / pi; shape columns: estimate / SHAPE_SCALE, presence
    geo = torch.tensor([[0.1, 0.0, 0.0, 3.0 / SHAPE_SCALE, 1.0],
                        [0.2, 0.0, 0.3, 1.0 / SHAPE_SCALE, 1.0],
                        [0.2, 0.0, 0.3, 0.0, 0.0],
                        [0.1, 0.0, 0.001, 2.0 / SHAPE_SCALE, 1.0]])
    edges = torch.tensor([[0, 1], [0, 2], [0, 3]])
    got = shape_geometry(geo, edges)
    # pair 0-1: |dz/dr| = 3; the source's estimate agrees (0), the target's is 2 off
    # (halved: 1), the estimates differ by 2
    torch.testing.assert_close(got[0], torch.tensor([0.0, 1.0, 2.0]))
    # a target without a shape: its terms are zero
    torch.testing.assert_close(got[1], torch.tensor([0.0, 0.0, 0.0]))
    # one radius (dr < 5 mm counts as 5 mm): |dz/dr| = 0.2; estimates 3 and 2
    torch.testing.assert_close(got[2], torch.tensor([0.5 * (0.2 - 3.0), 0.5 * (0.2 - 2.0), 1.0]))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_shape_filter_paths_and_onnx(tmp_path, onnx_logits):
    """Zero shape weights give the filter without them; the per-hit projection path equals
    the concatenated form; the ONNX export agrees with torch."""
    g = torch.Generator().manual_seed(3)
    n, e = 50, 150
    x = torch.rand(n, 7, generator=g)
    x[:, -1] = (x[:, -1] > 0.5).float()  # presence flags
    edges = torch.randint(0, n, (2, e), generator=g)
    plain = FilterMLP(7, hidden=16, layers=2, edge_features=True).eval()
    model = FilterMLP(7, hidden=16, layers=2, edge_features=True, cluster_shape=True).eval()
    model.load_state_dict(plain.state_dict(), strict=False)
    nn.init.zeros_(model.shape.weight)
    with torch.inference_mode():
        torch.testing.assert_close(model(x, edges), plain(x, edges))
    nn.init.normal_(model.shape.weight)
    from trkx_ray.pipeline.models import edge_geometry

    with torch.inference_mode():
        pair = torch.cat([x[edges[0]], x[edges[1]]], 1)
        geo = torch.cat([x[:, :3], x[:, -2:]], 1)
        pre = (model.net[0](pair) + model.edge(edge_geometry(x, edges.T))
               + model.shape(shape_geometry(geo, edges.T)))
        ref = model.net[1:](pre).squeeze(-1)
        torch.testing.assert_close(model(x, edges, chunk_size=11), ref)
        assert not torch.allclose(ref, plain(x, edges))
    path = tmp_path / "filter.onnx"
    got = onnx_logits(model, x, edges, path)
    assert abs(got - ref.numpy()).max() < 1e-4


def _widen_module():
    spec = importlib.util.spec_from_file_location("widen_for_shapes",
                                                  ROOT / "scripts/widen_for_shapes.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_widened_filter_scores_as_the_original(tmp_path):
    """scripts/widen_for_shapes.py: a filter without cluster shapes, widened, scores every
    edge of a simulated event (with cells) as before."""
    cfg_path = tmp_path / "shape.yaml"
    cfg_path.write_text("extends: default\nname: shape\nfilter: {cluster_shape: true}\n")
    event = simulate_event(pileup=5, seed=77, event_id=77)
    plain = Pipeline.from_config("default", overrides={
        "precision": "fp32", "filter": {"cluster_shape": False, "weights": None}})
    torch.save(_widen_module().widen(plain.filter.state_dict(), str(cfg_path)),
               tmp_path / "wide.pt")
    wide = Pipeline.from_config(str(cfg_path), overrides={
        "precision": "fp32", "filter": {"weights": str(tmp_path / "wide.pt")}})
    assert cluster_shape(event)[:, 1].sum() > 50
    a = plain(event, keep_graphs=True).graphs["build_edges"]["scores"]
    b = wide(event, keep_graphs=True).graphs["build_edges"]["scores"]
    assert len(a) > 1000
    np.testing.assert_allclose(a, b, atol=1e-6)
    with pytest.raises(SystemExit, match="filter.cluster_shape is off"):
        _widen_module().widen(plain.filter.state_dict(), "noop")
    with pytest.raises(SystemExit, match="expected 2 x 40"):
        _widen_module().widen(wide.filter.state_dict(), str(cfg_path))


def test_pipeline_without_cells_says_so_once(caplog):
    """A cluster-shape filter runs events without cells with the shapes marked absent and
    says so once; with cells, the shapes change the filter's scores."""
    event = simulate_event(pileup=5, seed=78, event_id=78)
    hits_only = Event(event.event_id, event.hits, truth=event.truth, source="hits only")
    cfg = load_config("default", {**SHAPE_FILTER, "precision": "fp32"})
    pipe = Pipeline.from_config(cfg)
    with caplog.at_level(logging.WARNING):
        a = pipe(hits_only, keep_graphs=True)
        pipe(hits_only)
    assert caplog.text.count("hits only has no cells: the models run without pixel "
                             "cluster shapes") == 1
    b = pipe(event, keep_graphs=True)
    ea, eb = a.graphs["build_edges"]["edges"], b.graphs["build_edges"]["edges"]
    assert ea.shape != eb.shape or (ea != eb).any()  # the embedding reads the shapes too
    # and the filter: the same candidates scored with the shapes present and absent
    inputs = pipe.inputs(event)
    with torch.inference_mode():
        emb = pipe.embedding(inputs["embedding"])
        edges = torch.from_numpy(eb)
        present = pipe.filter(model_inputs(inputs["x"], emb, inputs["shape"]), edges)
        absent = pipe.filter(model_inputs(inputs["x"], emb, inputs["shape"] * 0), edges)
    assert (present - absent).abs().max() > 1e-3
    nodes = model_inputs(torch.zeros(3, 2), torch.ones(3, 1), torch.full((3, 2), 2.0))
    assert nodes.tolist() == [[0.0, 0.0, 1.0, 2.0, 2.0]] * 3


def test_training_with_cluster_shapes(tmp_path):
    """The filter trains with cluster shapes (and shape dropout) end to end, and its
    weights load into a pipeline with the same configuration."""
    from trkx_ray.training.config import load_train_config
    from trkx_ray.training.trainer import Trainer

    pipe = tmp_path / "pipe.yaml"
    pipe.write_text("extends: default\nname: shape\nfilter: {cluster_shape: true}\n")
    tiny = {
        "pipeline": str(pipe),
        "data": {"pileup": 4, "train_events": 1, "val_events": 1, "crop_width": 3.2},
        "embedding": {"epochs": 1, "steps_per_epoch": 2, "hard_pairs": 5000,
                      "random_pairs": 5000},
        "filter": {"epochs": 1, "steps_per_epoch": 3, "batch_edges": 5000,
                   "shape_dropout": 0.5},
        "threads": 1,
    }
    cfg = load_train_config("default", tiny)
    trainer = Trainer(cfg, tmp_path / "out", progress=False)
    trainer.run(("embedding", "filter"))
    state = torch.load(tmp_path / "out/filter.pt", weights_only=True)
    assert state["shape.weight"].shape[1] == 3
    assert state["net.0.weight"].shape[1] == 2 * load_config(str(pipe)).filter_node_dim
    with pytest.raises(ConfigError, match=r"filter\.shape_dropout = 1\.5 must be in \[0, 1\]"):
        load_train_config("default", {"filter": {"shape_dropout": 1.5}})


def test_gnn_training_with_cluster_shapes(tmp_path):
    """The GNN trains with cluster shapes too (node inputs and pair terms), and a GNN
    trained without them, widened by scripts/widen_for_shapes.py, scores as before."""
    from trkx_ray.training.config import load_train_config
    from trkx_ray.training.trainer import Trainer

    pipe = tmp_path / "pipe.yaml"
    pipe.write_text("extends: default\nname: shape\nfilter: {cluster_shape: true}\n"
                    "gnn: {cluster_shape: true}\n")
    tiny = {
        "pipeline": str(pipe),
        "data": {"pileup": 4, "train_events": 1, "val_events": 1, "crop_width": 3.2},
        "embedding": {"epochs": 1, "steps_per_epoch": 2, "hard_pairs": 5000,
                      "random_pairs": 5000},
        "filter": {"epochs": 1, "steps_per_epoch": 2, "batch_edges": 5000},
        "gnn": {"epochs": 1, "steps_per_epoch": 3, "shape_dropout": 0.5},
        "threads": 1,
    }
    trainer = Trainer(load_train_config("default", tiny), tmp_path / "out", progress=False)
    trainer.run(("embedding", "filter", "gnn"))
    state = torch.load(tmp_path / "out/gnn.pt", weights_only=True)
    cfg = load_config(str(pipe))
    assert state["node_encoder.0.weight"].shape[1] == cfg.features.num_features + 2
    assert state["edge_encoder.edge.weight"].shape[1] == 5 + 3
    with pytest.raises(ConfigError, match=r"gnn\.shape_dropout = -0\.1 must be in \[0, 1\]"):
        load_train_config("default", {"gnn": {"shape_dropout": -0.1}})

    # widening: a GNN without shapes scores the same widened, with shapes present
    from trkx_ray.pipeline.models import InteractionGNN

    plain_cfg = load_config("default", {"gnn": {"weights": None, "cluster_shape": False}})
    plain = InteractionGNN.from_config(plain_cfg.gnn, plain_cfg.gnn_in_dim).eval()
    wide = InteractionGNN.from_config(dataclasses.replace(cfg.gnn, weights=None),
                                      cfg.gnn_in_dim).eval()
    wide.load_state_dict(_widen_module().widen(plain.state_dict(), str(pipe), "gnn"))
    event = simulate_event(pileup=5, seed=79, event_id=79)
    from trkx_ray.pipeline.features import hit_features

    x = torch.from_numpy(hit_features(event, cfg.features))
    shape = torch.from_numpy(cluster_shape(event))
    assert shape[:, 1].sum() > 50
    edges = torch.randint(0, event.num_hits, (2, 2000), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        torch.testing.assert_close(wide(model_inputs(x, None, shape), edges), plain(x, edges))
    with pytest.raises(SystemExit, match="expected 32 and 5"):
        _widen_module().widen(wide.state_dict(), str(pipe), "gnn")
    with pytest.raises(ValueError, match="gnn.cluster_shape needs gnn.edge_features"):
        InteractionGNN(10, edge_features=False, cluster_shape=True)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_embedding_with_cluster_shapes(tmp_path, caplog):
    """The embedding reads the cluster shapes too (``embedding.cluster_shape``): it trains
    with them (and shape dropout); the shipped embedding, widened, builds the same graph;
    with non-zero shape weights the graph changes with cells and not without; ONNX agrees."""
    from trkx_ray.pipeline.export import export_models
    from trkx_ray.training.config import load_train_config
    from trkx_ray.training.trainer import Trainer

    pipe_yaml = tmp_path / "pipe.yaml"
    pipe_yaml.write_text("extends: default\nname: shape_emb\nembedding: {cluster_shape: true}\n")
    cfg = load_config(str(pipe_yaml))
    assert cfg.embedding_in_dim == cfg.features.num_features + 2 and cfg.reads_cells
    tiny = {
        "pipeline": str(pipe_yaml),
        "data": {"pileup": 4, "train_events": 1, "val_events": 1, "crop_width": 3.2},
        "embedding": {"epochs": 1, "steps_per_epoch": 3, "hard_pairs": 5000,
                      "random_pairs": 5000, "shape_dropout": 0.5},
        "threads": 1,
    }
    Trainer(load_train_config("default", tiny), tmp_path / "out", progress=False).run(
        ("embedding",))
    state = torch.load(tmp_path / "out/embedding.pt", weights_only=True)
    assert state["net.0.weight"].shape[1] == cfg.embedding_in_dim
    with pytest.raises(ConfigError, match=r"embedding\.shape_dropout = 2\.0 must be in \[0, 1\]"):
        load_train_config("default", {"embedding": {"shape_dropout": 2.0}})

    # an embedding without shapes (the shipped one with its shape columns cut off), widened:
    # the same candidate edges on an event with cells
    event = simulate_event(pileup=5, seed=79, event_id=79)
    hits_only = Event(event.event_id, event.hits, truth=event.truth, source="hits only")
    shipped = Pipeline.from_config("default").embedding.state_dict()
    cut_off = {k: (v[:, :-2] if k == "net.0.weight" else v) for k, v in shipped.items()}
    torch.save(cut_off, tmp_path / "plain.pt")
    plain = Pipeline.from_config("default", overrides={
        "precision": "fp32",
        "embedding": {"cluster_shape": False, "weights": str(tmp_path / "plain.pt")}})
    wide_state = _widen_module().widen(plain.embedding.state_dict(), str(pipe_yaml),
                                       "embedding")
    torch.save(wide_state, tmp_path / "wide.pt")
    over = {"precision": "fp32", "embedding": {"weights": str(tmp_path / "wide.pt")}}
    wide = Pipeline.from_config(str(pipe_yaml), overrides=over)
    a = plain(event, keep_graphs=True).graphs["build_edges"]["edges"]
    np.testing.assert_array_equal(wide(event, keep_graphs=True).graphs["build_edges"]["edges"], a)
    with pytest.raises(SystemExit, match="an embedding without cluster shapes"):
        _widen_module().widen(wide_state, str(pipe_yaml), "embedding")

    # non-zero weights on the shape columns move pixel-barrel hits only when cells exist
    # (random: a column shift equal on every unit would vanish in the LayerNorm)
    wide_state["net.0.weight"][:, -2:] = torch.randn(
        wide_state["net.0.weight"].shape[0], 2, generator=torch.Generator().manual_seed(0))
    torch.save(wide_state, tmp_path / "moved.pt")
    over["embedding"]["weights"] = str(tmp_path / "moved.pt")
    moved = Pipeline.from_config(str(pipe_yaml), overrides=over)
    x_emb = moved.inputs(event)["embedding"]
    barrel = x_emb[:, -1] > 0
    with torch.inference_mode():
        e_wide, e_moved = wide.embedding(x_emb), moved.embedding(x_emb)
        e_plain = moved.embedding(moved.inputs(hits_only)["embedding"])
    assert barrel.sum() > 50
    assert (e_wide - e_moved)[barrel].abs().max() > 1e-2
    torch.testing.assert_close(e_wide[~barrel], e_moved[~barrel])
    torch.testing.assert_close(e_plain, plain.embedding(plain.inputs(event)["embedding"]))
    with caplog.at_level(logging.WARNING):
        moved(hits_only)
    assert "hits only has no cells: the models run without pixel cluster shapes" in caplog.text

    # ONNX: the exported embedding reads the same widened input
    export_models(moved.config, tmp_path / "onnx")
    onnx = Pipeline.from_config(moved.config, overrides={
        "runtime": "onnx", "onnx": {"dir": str(tmp_path / "onnx")}})
    e_onnx = onnx.embedding(x_emb)
    assert (e_onnx - e_moved).abs().max() < 1e-4
