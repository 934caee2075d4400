"""Tests of trkx_ray.pipeline.models: shapes, AMP dtypes, aggregation, weights."""

from __future__ import annotations

import contextlib
import math

import pytest
import torch
from torch import nn

from trkx_ray.pipeline.config import ConfigError, EmbeddingConfig, FilterConfig, GNNConfig
from trkx_ray.pipeline.models import (
    EmbeddingMLP,
    FilterMLP,
    InteractionGNN,
    load_weights,
    make_mlp,
)


def _graph(n: int = 30, e: int = 80, seed: int = 0, device: str = "cpu"):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g)
    edges = torch.randint(0, n, (2, e), generator=g)
    return x.to(device), edges.to(device)


def test_make_mlp_structure():
    mlp = make_mlp(5, 16, 3, layers=2, layer_norm=True, activation="relu")
    kinds = [type(m) for m in mlp]
    assert kinds == [nn.Linear, nn.LayerNorm, nn.ReLU, nn.Linear, nn.LayerNorm, nn.ReLU, nn.Linear]
    assert mlp(torch.zeros(4, 5)).shape == (4, 3)
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        make_mlp(5, 16, 3, 2, activation="swish")


def test_embedding_shape_and_unit_norm(device):
    model = EmbeddingMLP.from_config(EmbeddingConfig(output_dim=12), in_dim=5).to(device)
    x, _ = _graph(device=device)
    with torch.inference_mode():
        out = model(x)
    assert out.shape == (30, 12)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.norm(dim=1), torch.ones(30, device=device))


def test_filter_and_gnn_shapes(device):
    x, edges = _graph(device=device)
    flt = FilterMLP.from_config(FilterConfig(), node_dim=5).to(device)
    gnn = InteractionGNN.from_config(GNNConfig(iterations=3), in_dim=5).to(device)
    with torch.inference_mode():
        assert flt(x, edges).shape == (80,)
        assert gnn(x, edges).shape == (80,)
        empty = torch.zeros((2, 0), dtype=torch.int64, device=device)
        assert flt(x, empty).shape == (0,)
        assert gnn(x, empty).shape == (0,)


def test_seeded_init_is_deterministic_and_keeps_global_rng():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = InteractionGNN.from_config(GNNConfig(seed=7), 5)
    after = torch.rand(1)
    assert torch.equal(before, after)  # the global RNG stream is untouched
    b = InteractionGNN.from_config(GNNConfig(seed=7), 5)
    c = InteractionGNN.from_config(GNNConfig(seed=8), 5)
    for (ka, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(va, vb), ka
    assert any(
        not torch.equal(va, vc) for va, vc in zip(a.state_dict().values(), c.state_dict().values())
    )


def test_shared_weights_option():
    shared = InteractionGNN(5, hidden=16, iterations=4, shared_weights=True)
    separate = InteractionGNN(5, hidden=16, iterations=4, shared_weights=False)
    assert len(shared.edge_networks) == 1 and len(shared.node_networks) == 1
    assert len(separate.edge_networks) == 4 and len(separate.node_networks) == 4
    n_shared = sum(p.numel() for p in shared.parameters())
    n_sep = sum(p.numel() for p in separate.parameters())
    assert n_sep > n_shared


def test_aggregate_matches_dense_reference(device):
    x, edges = _graph(n=7, e=20, seed=3, device=device)
    edges = torch.cat([edges, torch.tensor([[2, 2], [2, 2]], device=device)], 1)  # self loops
    msg = torch.randn(edges.shape[1], 4, device=device)
    incoming, outgoing = InteractionGNN.aggregate(msg, edges, 7)
    dst_onehot = nn.functional.one_hot(edges[1], 7).float()  # E x N
    src_onehot = nn.functional.one_hot(edges[0], 7).float()
    torch.testing.assert_close(incoming, dst_onehot.T @ msg)
    torch.testing.assert_close(outgoing, src_onehot.T @ msg)


def _dense_gnn_reference(
    model: InteractionGNN, x: torch.Tensor, edges: torch.Tensor
) -> torch.Tensor:
    """The interaction network written with dense incidence matrices and plain concatenation."""

    def edge_block(block, h, e):
        w = [block.src.weight, block.dst.weight]
        parts = [h[edges[0]], h[edges[1]]]
        if block.edge is not None and e is not None:
            w.append(block.edge.weight)
            parts.append(e)
        pre = torch.cat(parts, 1) @ torch.cat(w, 1).T + block.src.bias
        return block.rest(pre)

    n = x.shape[0]
    a_in = nn.functional.one_hot(edges[1], n).float().T  # N x E
    a_out = nn.functional.one_hot(edges[0], n).float().T
    h = model.node_encoder(x)
    e = edge_block(model.edge_encoder, h, None)
    for it in range(model.iterations):
        k = 0 if model.shared_weights else it
        e = e + edge_block(model.edge_networks[k], h, e)
        h = h + model.node_networks[k](torch.cat([h, a_in @ e, a_out @ e], 1))
    return edge_block(model.classifier, h, e).squeeze(-1)


@pytest.mark.parametrize("shared", [True, False])
def test_gnn_matches_dense_reference(shared):
    x, edges = _graph(n=12, e=40, seed=5)
    model = InteractionGNN(5, hidden=8, iterations=3, shared_weights=shared).eval()
    with torch.inference_mode():
        torch.testing.assert_close(model(x, edges), _dense_gnn_reference(model, x, edges))


@pytest.mark.parametrize("mlp_layers", [1, 2, 3])
def test_relu_gnn_in_place_path_matches_dense_reference(mlp_layers):
    # ReLU per-edge networks without LayerNorm (the shipped GNN's shape) run in place
    # under inference: the same results as the dense reference, chunked or not
    x, edges = _graph(n=40, e=150, seed=6)
    model = InteractionGNN(5, hidden=8, iterations=3, mlp_layers=mlp_layers,
                           activation="relu").eval()
    assert model.edge_networks[0]._fast_layers is not None
    with torch.inference_mode():
        assert model.edge_networks[0].fast(x)
        want = _dense_gnn_reference(model, x, edges)
        torch.testing.assert_close(model(x, edges), want)
        torch.testing.assert_close(model(x, edges, chunk_size=16), want)
    # with autograd (training) the layer-by-layer form runs, with the same result
    assert not model.edge_networks[0].fast(x)
    torch.testing.assert_close(model(x, edges).detach(), want)


def test_relu_gnn_in_place_path_matches_layer_by_layer(monkeypatch):
    # with the pair geometry and cluster shapes too (the shipped configuration's inputs)
    from trkx_ray.pipeline import models as m

    x, edges = _graph(n=50, e=200, seed=7)
    x[:, 4] = (x[:, 4] > 0).float()  # presence flag
    model = InteractionGNN(5, hidden=16, iterations=4, activation="relu",
                           edge_features=True, cluster_shape=True).eval()
    with torch.inference_mode():
        fast = [model(x, edges), model(x, edges, chunk_size=32)]
        monkeypatch.setattr(m._EdgeBlock, "fast", lambda self, t: False)
        slow = model(x, edges)
    for got in fast:
        torch.testing.assert_close(got, slow)
    # LayerNorm or tanh in the per-edge networks: no in-place path
    assert InteractionGNN(5, hidden=8, edge_layer_norm=True,
                          activation="relu").edge_networks[0]._fast_layers is None
    assert InteractionGNN(5, hidden=8, activation="tanh").classifier._fast_layers is None


def test_relu_gnn_in_place_path_under_cpu_bf16_autocast(monkeypatch):
    # under CPU bf16 autocast the per-edge networks also run in place, in bf16 with
    # every operand cast as autocast would: the same scores as the layer-by-layer
    # autocast form to bf16 rounding, chunked or not
    from trkx_ray.pipeline import models as m

    x, edges = _graph(n=60, e=400, seed=8)
    x[:, 4] = (x[:, 4] > 0).float()
    model = InteractionGNN(5, hidden=16, iterations=3, activation="relu",
                           edge_features=True, cluster_shape=True).eval()
    with torch.inference_mode():
        ref32 = model(x, edges)
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
            assert m.in_place_dtype(x) == torch.bfloat16
            assert model.edge_networks[0].fast(x)
            fast = [model(x, edges), model(x, edges, chunk_size=64)]
            monkeypatch.setattr(m._EdgeBlock, "fast", lambda self, t: False)
            slow = model(x, edges)
    scale = max(ref32.abs().max().item(), 1.0)
    for got in fast:
        assert got.dtype == torch.float32
        assert (got - slow).abs().max().item() < 0.05 * scale
        assert (got - ref32).abs().max().item() < 0.05 * scale
    torch.testing.assert_close(fast[0], fast[1])
    # with autograd (training) no in-place path, autocast or not
    assert m.in_place_dtype(x) is None


@pytest.mark.parametrize("shape", [False, True])
def test_pair_geometry_kernel_is_bitwise_torch(shape):
    # at CPU inference pair_geometry runs one compiled pass; its float32 columns must be
    # torch's bit for bit (phi wrapping, pairs at one radius, hits with and without shapes)
    from trkx_ray.pipeline import models as m

    g = torch.Generator().manual_seed(13)
    n, e = 2000, 50000
    geo = torch.stack([torch.rand(n, generator=g), torch.rand(n, generator=g) * 2 - 1,
                       torch.randn(n, generator=g), torch.rand(n, generator=g) * 0.8,
                       (torch.rand(n, generator=g) > 0.5).float()], 1)
    geo[:100, 0] = geo[100:200, 0]  # pairs at one radius: the 5 mm floor
    geo = geo if shape else geo[:, :3].contiguous()
    et = torch.randint(0, n, (e, 2), generator=g)
    et[:100] = torch.stack([torch.arange(100), torch.arange(100, 200)], 1)
    want = m._pair_terms(geo.index_select(0, et[:, 0]), geo.index_select(0, et[:, 1]), shape)
    with torch.inference_mode():
        got = m.pair_geometry(geo, et, shape)
    assert got.shape == (e, 8 if shape else 5)
    assert torch.equal(got, want)
    assert (want[:, 1].abs() <= 10 * math.pi + 1e-4).all()  # wrapped
    # with autograd (training) the torch form runs
    assert torch.equal(m.pair_geometry(geo, et, shape), want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_linear_relu_fused_matches_unfused(monkeypatch, dtype):
    from trkx_ray.pipeline import models as m

    g = torch.Generator().manual_seed(4)
    x, w, b = (torch.randn(*s, generator=g).to(dtype) for s in ((300, 16), (24, 16), (24,)))
    # the probe runs once, at first use: under the pipeline's bf16 autocast too
    monkeypatch.setattr(m, "FUSED_LINEAR_RELU", None)
    with torch.inference_mode(), torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        assert m._fused_linear_relu_ok()  # torch's CPU wheels ship oneDNN
    with torch.inference_mode():
        fused = m.linear_relu(x, w, b)
        monkeypatch.setattr(m, "FUSED_LINEAR_RELU", False)
        plain = m.linear_relu(x, w, b)
    assert fused.dtype == plain.dtype == dtype and fused.shape == (300, 24)
    assert (fused >= 0).all()
    tol = 1e-5 if dtype == torch.float32 else 0.05
    torch.testing.assert_close(fused.float(), plain.float(), atol=tol, rtol=tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_scatter_messages_matches_index_add(dtype):
    from trkx_ray.pipeline.models import scatter_messages

    g = torch.Generator().manual_seed(3)
    n, e, h = 50, 700, 24  # repeated indices on both ends
    edges_t = torch.randint(0, n, (e, 2), generator=g)
    msg = torch.randn(e, h, generator=g).to(dtype)
    want_in = torch.zeros(n, h).index_add_(0, edges_t[:, 1], msg.float())
    want_out = torch.zeros(n, h).index_add_(0, edges_t[:, 0], msg.float())
    with torch.inference_mode():
        inc, out = torch.zeros(n, h), torch.zeros(n, h)
        scatter_messages(edges_t, msg, inc, out)  # the compiled kernel
    torch.testing.assert_close(inc, want_in)
    torch.testing.assert_close(out, want_out)
    # with autograd: index_add_, differentiable
    src = msg.float().requires_grad_(True)
    inc, out = torch.zeros(n, h), torch.zeros(n, h)
    scatter_messages(edges_t, src, inc, out)
    (inc.sum() + 2 * out.sum()).backward()
    torch.testing.assert_close(src.grad, torch.full((e, h), 3.0))


def test_cast_param_is_remembered_until_the_weight_changes():
    from trkx_ray.pipeline.models import cast_param

    lin = nn.Linear(4, 3)
    with torch.inference_mode():
        first = cast_param(lin.weight, torch.bfloat16)
        assert first.dtype == torch.bfloat16 and torch.equal(first, lin.weight.to(torch.bfloat16))
        assert cast_param(lin.weight, torch.bfloat16) is first  # remembered
        assert cast_param(lin.weight, torch.float32) is lin.weight
    with torch.no_grad():
        lin.weight.add_(1.0)  # a training step: a new version
    with torch.inference_mode():
        again = cast_param(lin.weight, torch.bfloat16)
        assert again is not first and torch.equal(again, lin.weight.to(torch.bfloat16))
        made_here = torch.ones(2, 2)  # an inference tensor: cast every time
        assert cast_param(made_here, torch.bfloat16).dtype == torch.bfloat16


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gather_sum_matches_index_select(dtype, monkeypatch):
    from trkx_ray.pipeline import _model_kernels
    from trkx_ray.pipeline.models import gather_sum

    g = torch.Generator().manual_seed(4)
    n, e, h = 40, 900, 24
    a, b = torch.randn(n, h, generator=g).to(dtype), torch.randn(n, h, generator=g).to(dtype)
    edges_t = torch.randint(0, n, (e, 2), generator=g)
    want = a.index_select(0, edges_t[:, 0]) + b.index_select(0, edges_t[:, 1])
    calls = []
    real = _model_kernels.gather_add_rows_f32
    monkeypatch.setattr(_model_kernels, "gather_add_rows_f32",
                        lambda *args: calls.append(1) or real(*args))
    with torch.inference_mode():
        got = gather_sum(a, b, edges_t, dtype)
    assert got.dtype == dtype and torch.equal(got, want)  # bit for bit
    assert len(calls) == (dtype == torch.float32)  # the compiled pass runs in float32
    with torch.inference_mode(), pytest.raises(IndexError):  # out of range: torch raises
        gather_sum(a, b, torch.tensor([[0, n]]), dtype)


@pytest.mark.parametrize("autocast", [False, True])
def test_filter_in_place_path_matches_layer_by_layer(autocast):
    # the shipped filter's shape (ReLU, no LayerNorm, pair geometry and shapes) runs
    # its per-edge layers in place at inference, in fp32 or under CPU bf16 autocast
    x, edges = _graph(n=60, e=500, seed=12)
    x[:, 4] = (x[:, 4] > 0).float()
    model = FilterMLP(5, hidden=16, layers=3, layer_norm=False, activation="relu",
                      edge_features=True, cluster_shape=True).eval()
    assert model._fast_layers is not None
    ctx = (torch.autocast(device_type="cpu", dtype=torch.bfloat16) if autocast
           else contextlib.nullcontext())
    with torch.inference_mode(), ctx:
        fast = [model(x, edges), model(x, edges, chunk_size=64)]
        layers, model._fast_layers = model._fast_layers, None
        slow = model(x, edges)
        model._fast_layers = layers
    tol = 0.05 * max(slow.abs().max().item(), 1.0) if autocast else 1e-5
    for got in fast:
        assert got.dtype == torch.float32
        assert (got - slow).abs().max().item() < tol
    # LayerNorm or tanh in the filter: the layer-by-layer form only
    assert FilterMLP(5, hidden=8, layer_norm=True, activation="relu")._fast_layers is None
    assert FilterMLP(5, hidden=8, layer_norm=False, activation="tanh")._fast_layers is None


def test_filter_matches_concat_reference():
    x, edges = _graph(seed=9)
    model = FilterMLP(5, hidden=16, layers=2).eval()
    with torch.inference_mode():
        ref = model.net(torch.cat([x[edges[0]], x[edges[1]]], 1)).squeeze(-1)
        torch.testing.assert_close(model(x, edges), ref)


def test_gnn_is_direction_aware():
    x, edges = _graph(seed=11)
    model = InteractionGNN(5, hidden=8, iterations=2).eval()
    with torch.inference_mode():
        assert not torch.allclose(model(x, edges), model(x, edges.flip(0)))


def _linear_output_dtypes(model: nn.Module, run, skip: str | None = None) -> set[torch.dtype]:
    """The output dtypes of ``model``'s linear layers (those under ``skip`` left out)."""
    seen: set[torch.dtype] = set()
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear) and not (skip and name.startswith(skip))
    ]
    try:
        run()
    finally:
        for h in hooks:
            h.remove()
    return seen


@pytest.mark.parametrize("kind", ["embedding", "filter", "gnn"])
def test_autocast_dtypes(device, kind):
    x, edges = _graph(device=device)
    if kind == "embedding":
        model = EmbeddingMLP(5, hidden=16).to(device).eval()
        run = lambda: model(x)  # noqa: E731
    elif kind == "filter":
        model = FilterMLP(5, hidden=16).to(device).eval()
        run = lambda: model(x, edges)  # noqa: E731
    else:
        model = InteractionGNN(5, hidden=16, iterations=2).to(device).eval()
        run = lambda: model(x, edges)  # noqa: E731
    dtypes = [torch.bfloat16] + ([torch.float16] if device == "cuda" else [])
    with torch.inference_mode():
        ref = run()
        assert _linear_output_dtypes(model, run) == {torch.float32}
        for dtype in dtypes:
            with torch.autocast(device_type=torch.device(device).type, dtype=dtype):
                if kind == "gnn":
                    # the GNN's node encoder reads the coordinates: float32 always
                    assert _linear_output_dtypes(model, run, skip="node_encoder") == {dtype}
                    encoder = model.node_encoder  # type: ignore[union-attr]
                    assert _linear_output_dtypes(encoder, run) == {torch.float32}
                else:
                    assert _linear_output_dtypes(model, run) == {dtype}
                out = run()
            assert out.dtype == torch.float32  # models hand back float32
            assert torch.isfinite(out).all()
            # reduced precision stays close to fp32 for these small random models
            assert (out - ref).abs().max().item() < 0.1 * max(ref.abs().max().item(), 1.0)


def test_weights_roundtrip(tmp_path):
    cfg = GNNConfig(hidden=16, iterations=2, seed=3)
    trained = InteractionGNN.from_config(cfg, 5)
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(0.5)  # differ from any seeded init
    path = tmp_path / "gnn.pt"
    torch.save(trained.state_dict(), path)
    loaded = InteractionGNN.from_config(GNNConfig(hidden=16, iterations=2, weights=str(path)), 5)
    x, edges = _graph()
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x, edges), trained(x, edges))
    # {"state_dict": ...} checkpoints too
    torch.save({"state_dict": trained.state_dict(), "epoch": 3}, tmp_path / "ckpt.pt")
    again = InteractionGNN.from_config(
        GNNConfig(hidden=16, iterations=2, weights=str(tmp_path / "ckpt.pt")), 5
    )
    with torch.inference_mode():
        torch.testing.assert_close(again(x, edges), trained(x, edges))


def test_weights_errors(tmp_path):
    path = tmp_path / "emb.pt"
    torch.save(EmbeddingMLP(5, hidden=16).state_dict(), path)
    with pytest.raises(ConfigError, match=r"embedding\.weights.*does not match"):
        EmbeddingMLP.from_config(EmbeddingConfig(hidden=32, weights=str(path)), 5)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(ConfigError, match=r"cannot load weights file.*junk\.pt"):
        load_weights(EmbeddingMLP(5), str(junk), "embedding.weights")
    tensor_only = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor_only)
    with pytest.raises(ConfigError, match="does not hold a state dict"):
        load_weights(EmbeddingMLP(5), str(tensor_only))


def test_weights_only_refuses_pickled_objects(tmp_path):
    """torch.load(weights_only=True): arbitrary pickled objects are refused."""

    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"x": object()}}, path)
    with pytest.raises(ConfigError, match="cannot load weights file"):
        load_weights(EmbeddingMLP(5), str(path))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_gnn_onnx_export_matches_torch(tmp_path):
    """The GNN exports to ONNX (TorchScript exporter) and onnxruntime agrees,
    including repeated target hits (the scatter-add must accumulate)."""
    ort = pytest.importorskip("onnxruntime")
    model = InteractionGNN(5, hidden=16, iterations=2).eval()
    x, edges = _graph(n=20, e=50, seed=1)
    path = tmp_path / "gnn.onnx"
    torch.onnx.export(
        model,
        (x, edges),
        str(path),
        dynamo=False,
        input_names=["x", "edges"],
        output_names=["logits"],
        dynamic_axes={"x": {0: "hits"}, "edges": {1: "edges"}, "logits": {0: "edges"}},
        opset_version=17,
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x2, edges2 = _graph(n=33, e=90, seed=2)  # other sizes: dynamic axes work
    assert torch.bincount(edges2[1]).max() > 1  # repeated targets exercised
    got = session.run(None, {"x": x2.numpy(), "edges": edges2.numpy()})[0]
    with torch.inference_mode():
        want = model(x2, edges2).numpy()
    assert abs(got - want).max() < 1e-4


@pytest.mark.parametrize("chunk", [3, 16, 1000])
def test_chunking_does_not_change_results(chunk):
    x, edges = _graph(n=40, e=100, seed=4)
    emb = EmbeddingMLP(5, hidden=16).eval()
    flt = FilterMLP(5, hidden=16).eval()
    gnn = InteractionGNN(5, hidden=16, iterations=3).eval()
    with torch.inference_mode():
        torch.testing.assert_close(emb(x, chunk_size=chunk), emb(x))
        torch.testing.assert_close(flt(x, edges, chunk_size=chunk), flt(x, edges))
        torch.testing.assert_close(gnn(x, edges, chunk_size=chunk), gnn(x, edges))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            a = gnn(x, edges, chunk_size=chunk)
            b = gnn(x, edges)
        assert (a - b).abs().max().item() < 0.05


def test_edge_geometry_by_hand():
    """dr, dphi (wrapped across +-pi), dz, the phi slope and z0 of known pairs."""
    from trkx_ray.pipeline.models import EDGE_GEOMETRY_DIM, edge_geometry

    # features: r / 1000 mm, phi / pi, z / 1000 mm
    x = torch.tensor([
        [0.100, 0.99, 0.050],   # r 100 mm, phi 0.99 pi, z 50 mm
        [0.200, -0.99, 0.150],  # r 200 mm, phi -0.99 pi (0.02 pi further on), z 150 mm
        [0.200, -0.99, 0.150],  # same radius as hit 1: dr clamped to 5 mm
    ])
    got = edge_geometry(x, torch.tensor([[0, 1], [1, 2]]))
    assert got.shape == (2, EDGE_GEOMETRY_DIM)
    dphi = 0.02 * torch.pi  # wrapped, not -1.98 pi
    want0 = torch.tensor([1.0, 10 * dphi, 1.0, dphi / 0.1, 5 * (0.05 - 0.1 * 1.0)])
    torch.testing.assert_close(got[0], want0)
    # one radius: the slope and z0 use dr = 5 mm and stay bounded
    assert got[1, 0] == 0 and got[1, 3] == 0 and abs(got[1, 4]) <= 5.0


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_filter_with_edge_features(tmp_path, onnx_logits):
    """Zero edge weights give the plain filter; the per-hit projection path equals the
    concatenated form; the ONNX export (concatenated form) agrees with torch."""
    x, edges = _graph(n=40, e=120, seed=5)
    x[:, 0] = x[:, 0].abs()  # radii
    plain = FilterMLP(5, hidden=16, layers=2).eval()
    model = FilterMLP(5, hidden=16, layers=2, edge_features=True).eval()
    model.load_state_dict(plain.state_dict(), strict=False)
    nn.init.zeros_(model.edge.weight)
    with torch.inference_mode():
        torch.testing.assert_close(model(x, edges), plain(x, edges))
    nn.init.normal_(model.edge.weight)
    from trkx_ray.pipeline.models import edge_geometry

    with torch.inference_mode():
        pair = torch.cat([x[edges[0]], x[edges[1]]], 1)
        pre = model.net[0](pair) + model.edge(edge_geometry(x, edges.T))
        ref = model.net[1:](pre).squeeze(-1)
        torch.testing.assert_close(model(x, edges, chunk_size=7), ref)
        assert not torch.allclose(ref, plain(x, edges))
    path = tmp_path / "filter.onnx"
    got = onnx_logits(model, x, edges, path)
    assert abs(got - ref.numpy()).max() < 1e-4


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_gnn_with_edge_features(tmp_path, onnx_logits):
    """Zero geometry weights give the plain GNN; chunking and the ONNX export agree."""
    x, edges = _graph(n=40, e=120, seed=6)
    x[:, 0] = x[:, 0].abs()
    plain = InteractionGNN(5, hidden=16, iterations=2).eval()
    model = InteractionGNN(5, hidden=16, iterations=2, edge_features=True).eval()
    model.load_state_dict(plain.state_dict(), strict=False)
    assert model.edge_encoder.edge is not None
    nn.init.zeros_(model.edge_encoder.edge.weight)
    with torch.inference_mode():
        torch.testing.assert_close(model(x, edges), plain(x, edges))
    nn.init.normal_(model.edge_encoder.edge.weight)
    with torch.inference_mode():
        want = model(x, edges)
        assert not torch.allclose(want, plain(x, edges))
        torch.testing.assert_close(model(x, edges, chunk_size=9), want)
    path = tmp_path / "gnn.onnx"
    got = onnx_logits(model, x, edges, path)
    assert abs(got - want.numpy()).max() < 1e-4
