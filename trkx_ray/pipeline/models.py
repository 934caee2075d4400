"""The three Exa.TrkX models as plain ``torch.nn.Module`` s.

* :class:`EmbeddingMLP`: metric learning, hit features -> L2-normalised point
  in ``R^d`` (d = 8-12); hits of one particle land within a radius.
* :class:`FilterMLP`: scores each candidate edge from both hits' features
  (and optionally embeddings); returns logits.
* :class:`InteractionGNN`: an interaction network (node and edge encoders,
  message passing with residuals, scatter-add aggregation onto both endpoints
  via ``index_add_``, edge classifier); returns edge logits.

Edges are ``2 x E`` int64 tensors ``(src, dst)`` of hit indices, oriented
inner (smaller r) to outer. Every model has ``from_config`` (random
initialisation with the config's seed, or weights loaded with
``torch.load(..., weights_only=True)``; a ``weights:`` value is found by
:func:`resolve_weights`). Only ONNX-exportable ops are used
(``index_add_``, ``index_select``, ``cat``, ``Linear``, ``LayerNorm``); during
ONNX export the aggregation switches to an equivalent function exported as
``ScatterND(reduction="add")`` (opset >= 16), since the exporters translate
``index_add_`` to a ``ScatterND`` without accumulation of repeated indices.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from trkx_ray.pipeline.config import (
    ConfigError,
    EmbeddingConfig,
    FilterConfig,
    GNNConfig,
    weights_path,
)
from trkx_ray.pipeline.features import SHAPE_SCALE

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Callable

__all__ = [
    "EmbeddingMLP",
    "FilterMLP",
    "InteractionGNN",
    "load_weights",
    "make_mlp",
    "map_rows",
    "resolve_weights",
]

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "silu": nn.SiLU,
    "gelu": nn.GELU,
}


def make_mlp(
    in_dim: int,
    hidden: int,
    out_dim: int,
    layers: int,
    layer_norm: bool = True,
    activation: str = "tanh",
    output_activation: bool = False,
) -> nn.Sequential:
    """A plain MLP: ``layers`` hidden blocks (Linear [LayerNorm] act) + output Linear.

    Args:
        in_dim: input width.
        hidden: hidden width.
        out_dim: output width.
        layers: number of hidden blocks (>= 1).
        layer_norm: LayerNorm after each hidden Linear.
        activation: ``relu``, ``tanh``, ``silu`` or ``gelu``.
        output_activation: also apply LayerNorm/activation after the output.

    Returns:
        The ``nn.Sequential``.
    """
    if activation not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(_ACTIVATIONS)}")
    act = _ACTIVATIONS[activation]
    mods: list[nn.Module] = []
    width = in_dim
    for _ in range(layers):
        mods.append(nn.Linear(width, hidden))
        if layer_norm:
            mods.append(nn.LayerNorm(hidden))
        mods.append(act())
        width = hidden
    mods.append(nn.Linear(width, out_dim))
    if output_activation:
        if layer_norm:
            mods.append(nn.LayerNorm(out_dim))
        mods.append(act())
    return nn.Sequential(*mods)


def resolve_weights(weights: str, key: str = "weights", where: str = "<config>") -> Path:
    """Resolve a weights entry to an existing file.

    Args:
        weights: a name (``trkx_ray/weights/<name>.pt``) or a path to a file
            (:func:`trkx_ray.pipeline.config.weights_path`).
        key: the configuration key, for the error message.
        where: the configuration source, for the error message.

    Returns:
        The path of the weights file.

    Raises:
        ConfigError: when the file does not exist.
    """
    path = weights_path(weights)
    if not path.is_file():
        raise ConfigError(f"{where}: {key}: weights file {str(path)!r} does not exist")
    return path


def load_weights(model: nn.Module, weights: str, key: str = "weights") -> nn.Module:
    """Load a state dict into ``model`` (``torch.load(weights_only=True)``).

    Args:
        model: the module (any device).
        weights: a name under ``trkx_ray/weights/`` or a path to a ``.pt`` file
            holding a state dict (or ``{"state_dict": ...}``).
        key: the configuration key, for error messages.

    Returns:
        ``model``, with the weights loaded.

    Raises:
        ConfigError: missing file, unreadable file or mismatching tensors.
    """
    path = resolve_weights(weights, key)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file
        raise ConfigError(f"{key}: cannot load weights file {str(path)!r}: {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ConfigError(f"{key}: weights file {str(path)!r} does not hold a state dict")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ConfigError(
            f"{key}: weights file {str(path)!r} does not match the configured model: {exc}"
        ) from exc
    return model


def _seeded(seed: int, build: Callable[[], nn.Module]) -> nn.Module:
    """Build a module with torch's CPU RNG seeded, restoring the RNG afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def map_rows(fn: Callable[..., Tensor], rows: int, chunk: int | None, *tensors: Tensor) -> Tensor:
    """Apply ``fn`` to row chunks of ``tensors`` (``dim 0`` of size ``rows``) and stack.

    Large intermediates are freshly allocated (and page-faulted) on every
    call, which dominates CPU inference at a million edges; row chunks of a
    few thousand keep every intermediate small, cache-resident and recycled
    by the allocator. The output is written into one preallocated tensor.

    Args:
        fn: maps the row slices of ``tensors`` to an output chunk.
        rows: number of rows.
        chunk: rows per call; ``None`` (or ``>= rows``) = one call.
        *tensors: inputs sliced along dim 0.

    Returns:
        The concatenated outputs (``rows x ...``).
    """
    if chunk is None or rows <= chunk or torch.onnx.is_in_onnx_export():
        return fn(*tensors)
    first = fn(*(t[:chunk] for t in tensors))
    out = first.new_empty((rows, *first.shape[1:]))
    out[:chunk] = first
    for start in range(chunk, rows, chunk):
        out[start : start + chunk] = fn(*(t[start : start + chunk] for t in tensors))
    return out


class EmbeddingMLP(nn.Module):
    """Metric-learning embedding: hit features -> unit vector in ``R^output_dim``.

    Args:
        in_dim: number of hit features.
        hidden: hidden width.
        output_dim: embedding dimension.
        layers: hidden layers.
        layer_norm: LayerNorm in hidden layers.
        activation: hidden activation.
    """

    def __init__(
        self,
        in_dim: int,
        hidden: int = 192,
        output_dim: int = 8,
        layers: int = 3,
        layer_norm: bool = True,
        activation: str = "tanh",
    ) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.output_dim = output_dim
        self.net = make_mlp(in_dim, hidden, output_dim, layers, layer_norm, activation)

    def _embed(self, x: Tensor) -> Tensor:
        return nn.functional.normalize(self.net(x).float(), p=2.0, dim=-1)

    def forward(self, x: Tensor, chunk_size: int | None = None) -> Tensor:
        """Embed ``x`` (``N x in_dim``) -> ``N x output_dim`` float32, unit L2 norm.

        Args:
            x: hit features.
            chunk_size: hits per chunk (``None``: all at once).
        """
        return map_rows(self._embed, x.shape[0], chunk_size, x)

    @classmethod
    def from_config(cls, cfg: EmbeddingConfig, in_dim: int) -> EmbeddingMLP:
        """Build from the ``embedding`` section (random init or weights)."""
        model = _seeded(
            cfg.seed,
            lambda: cls(
                in_dim, cfg.hidden, cfg.output_dim, cfg.layers, cfg.layer_norm, cfg.activation
            ),
        )
        if cfg.weights is not None:
            load_weights(model, cfg.weights, "embedding.weights")
        return model.eval()  # type: ignore[return-value]


#: columns of :func:`edge_geometry`
EDGE_GEOMETRY_DIM = 5


def edge_geometry(x: Tensor, edges_t: Tensor) -> Tensor:
    """Geometry of each hit pair, from the hit features' first columns (r / 1000 mm,
    phi / pi, z / 1000 mm), scaled to order one for the pairs of real tracks.

    Columns: ``10 dr``, ``10 dphi`` (wrapped to [-pi, pi)), ``10 dz`` (r, z in metres),
    the phi slope ``dphi / dr`` (rad per metre, ~0.3 for a 1 GeV track in 2 T; clamped to
    +-5) and ``5 z0``, the pair's line extrapolated to r = 0 (metres, clamped to +-5).
    ``dr`` below 5 mm (pairs at one radius) counts as 5 mm in the slope and ``z0``.
    Only torch operations that export to ONNX. Pass ``x[:, :3]`` (contiguous) when ``x``
    is wider: only those columns are gathered per edge then.

    Args:
        x: ``N x F`` hit features (``F >= 3``).
        edges_t: ``E x 2`` (src, dst).

    Returns:
        ``E x 5`` float tensor.
    """
    a = x.index_select(0, edges_t[:, 0])
    b = x.index_select(0, edges_t[:, 1])
    return _pair_terms(a, b, shape=False)


def _pair_terms(a: Tensor, b: Tensor, shape: bool) -> Tensor:
    """:func:`edge_geometry`'s columns [then :func:`shape_geometry`'s] from the gathered
    per-hit columns of each pair's source ``a`` and target ``b`` (one gather for both)."""
    dr = b[:, 0] - a[:, 0]
    dphi = (b[:, 1] - a[:, 1]) * math.pi
    dphi = dphi - (2 * math.pi) * torch.round(dphi / (2 * math.pi))
    dz = b[:, 2] - a[:, 2]
    run = torch.clamp(dr.abs(), min=0.005)
    slope = torch.clamp(dphi / run, -5.0, 5.0)
    z0 = torch.clamp(5.0 * (a[:, 2] - a[:, 0] * dz / run), -5.0, 5.0)
    cols = [10.0 * dr, 10.0 * dphi, 10.0 * dz, slope, z0]
    if shape:
        cols += _shape_terms(a, b, dz, run)
    return torch.stack(cols, dim=1)


def _shape_terms(a: Tensor, b: Tensor, dz: Tensor, run: Tensor) -> list[Tensor]:
    cot = torch.clamp(dz.abs() / run, max=20.0)
    ca, cb = SHAPE_SCALE * a[:, 3], SHAPE_SCALE * b[:, 3]
    da = 0.5 * torch.clamp(cot - ca, -4.0, 4.0) * a[:, 4]
    db = 0.5 * torch.clamp(cot - cb, -4.0, 4.0) * b[:, 4]
    dab = torch.clamp(ca - cb, -4.0, 4.0) * (a[:, 4] * b[:, 4])
    return [da, db, dab]


def pair_geometry(geo: Tensor, edges_t: Tensor, shape: bool) -> Tensor:
    """:func:`edge_geometry` and, with ``shape``, :func:`shape_geometry` side by side
    (``E x 5`` or ``E x 8``), from one gather of ``geo`` (``N x 3`` or ``N x 5`` columns as
    those functions read them)."""
    if (geo.device.type == "cpu" and geo.dtype == torch.float32 and edges_t.dtype == torch.int64
            and not torch.is_grad_enabled() and not torch.onnx.is_in_onnx_export()):
        # inference on CPU: one compiled pass, the same float32 columns bit for bit
        from trkx_ray.pipeline import _model_kernels as k

        out = torch.empty((edges_t.shape[0], 8 if shape else 5), dtype=torch.float32)
        k.pair_terms(geo.contiguous().numpy(), edges_t[:, 0].contiguous().numpy(),
                     edges_t[:, 1].contiguous().numpy(), shape, SHAPE_SCALE, out.numpy())
        return out
    return _pair_terms(geo.index_select(0, edges_t[:, 0]), geo.index_select(0, edges_t[:, 1]),
                       shape)


#: columns of :func:`shape_geometry`
SHAPE_GEOMETRY_DIM = 3


def shape_geometry(geo: Tensor, edges_t: Tensor) -> Tensor:
    """How well each hit pair's direction agrees with its hits' pixel-barrel cluster shapes.

    ``geo`` holds, per hit, ``r / 1000 mm``, ``phi / pi``, ``z / 1000 mm`` and the two
    :func:`~trkx_ray.pipeline.features.cluster_shape` columns (|cot theta| estimate / 5,
    presence). Columns, each zero where a hit has no cluster shape: the pair's
    ``|dz / dr|`` minus the source hit's estimate, the same for the target hit (``dr``
    below 5 mm counts as 5 mm; clamped to +-4, halved), and the difference of the two
    hits' estimates (for pairs at one radius, as on overlapping modules). Only torch
    operations that export to ONNX.

    Args:
        geo: ``N x 5`` per-hit columns.
        edges_t: ``E x 2`` (src, dst).

    Returns:
        ``E x 3`` float tensor.
    """
    a = geo.index_select(0, edges_t[:, 0])
    b = geo.index_select(0, edges_t[:, 1])
    dz = b[:, 2] - a[:, 2]
    run = torch.clamp((b[:, 0] - a[:, 0]).abs(), min=0.005)
    return torch.stack(_shape_terms(a, b, dz, run), dim=1)


def model_inputs(x: Tensor, emb: Tensor | None = None, shape: Tensor | None = None) -> Tensor:
    """A model's per-hit input: hit features, then [embedding], then [cluster shape].

    The filter reads all three (as configured), the GNN features [+ cluster shape].
    """
    parts = [x] + [t.to(x.dtype) for t in (emb, shape) if t is not None]
    return torch.cat(parts, dim=1) if len(parts) > 1 else x


def relu_linear_layers(seq: nn.Module) -> list[nn.Linear] | None:
    """The Linear layers of ``seq`` when it is ``(ReLU, Linear)*`` (nested Sequentials
    flattened), else ``None``: the shape :func:`relu_layers_in_place` runs."""
    mods = [m for m in seq.modules() if not isinstance(m, nn.Sequential)]
    if not mods or len(mods) % 2 or not all(
            isinstance(m, nn.ReLU if k % 2 == 0 else nn.Linear) for k, m in enumerate(mods)):
        return None
    return mods[1::2]  # type: ignore[return-value]


def in_place_dtype(x: Tensor) -> torch.dtype | None:
    """The dtype intermediates are computed in when they may be updated in place, or
    ``None`` when they may not: only at inference (no autograd) and not while exporting
    to ONNX. Without autocast that is ``x``'s dtype; under CPU autocast it is the
    autocast dtype (bf16), with every operand cast to it explicitly, as autocast would
    (in-place ops are not autocast themselves). Under CUDA autocast: ``None``."""
    if torch.is_grad_enabled() or torch.onnx.is_in_onnx_export():
        return None
    kind = x.device.type
    if not torch.is_autocast_enabled(kind):
        return x.dtype
    if kind != "cpu":
        return None
    return torch.get_autocast_dtype(kind)


def in_place_ok(x: Tensor) -> bool:
    """Whether intermediates may be updated in place for ``x`` (:func:`in_place_dtype`)."""
    return in_place_dtype(x) is not None


#: whether :func:`linear_relu` may use oneDNN's fused linear + ReLU on CPU (``None``:
#: probe once on first use; set ``False`` to time or test the unfused form)
FUSED_LINEAR_RELU: bool | None = None


def _fused_linear_relu_ok() -> bool:
    """Probe (once) that oneDNN's fused CPU linear + ReLU exists and agrees with
    ``addmm`` + ``relu_`` (a private op of torch's CPU builds; absent: unfused)."""
    global FUSED_LINEAR_RELU
    if FUSED_LINEAR_RELU is None:
        try:
            g = torch.Generator().manual_seed(0)
            x, w, b = (torch.randn(*s, generator=g) for s in ((8, 4), (3, 4), (3,)))
            # in float32 whatever the caller's autocast (first use is under it)
            with torch.autocast(device_type="cpu", enabled=False):
                got = torch.ops.mkldnn._linear_pointwise(x, w, b, "relu", [], "")
                want = torch.addmm(b, x, w.t()).relu_()
            FUSED_LINEAR_RELU = bool(torch.backends.mkldnn.is_available()) and bool(
                torch.allclose(got, want, atol=1e-5))
        except (AttributeError, RuntimeError, NotImplementedError):
            FUSED_LINEAR_RELU = False
    return FUSED_LINEAR_RELU


def linear_relu(x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
    """``relu(x @ w^T + b)`` in a new tensor: on CPU in float32 or bf16, oneDNN's fused
    linear + ReLU (one pass; 0.75x the time of ``addmm`` then ``relu_`` on 16384 x 64
    bf16 rows, docs/benchmarks.md "Session 17"), else ``addmm`` then ``relu_``."""
    if (b is not None and x.device.type == "cpu" and x.dtype in (torch.float32, torch.bfloat16)
            and x.dtype == w.dtype == b.dtype and _fused_linear_relu_ok()):
        return torch.ops.mkldnn._linear_pointwise(x, w, b, "relu", [], "")
    y = torch.addmm(b, x, w.t()) if b is not None else x @ w.t()
    return y.relu_()


def cast_param(t: Tensor, dtype: Any) -> Tensor:
    """``t.to(dtype)``, remembered on ``t`` while it is unchanged (same storage, same
    version): at inference the per-chunk layers cast their weights to bf16 once per
    process rather than once per chunk (some 2,000 casts per pile-up-200 event)."""
    if t.dtype == dtype:
        return t
    if t.is_inference():  # made under inference mode (no version counter): not remembered
        return t.to(dtype)
    key = (dtype, t.device, t.data_ptr(), t._version)
    hit = getattr(t, "_trkx_cast", None)
    if hit is not None and hit[0] == key:
        return hit[1]
    out = t.detach().to(dtype)
    if not torch.is_grad_enabled() or not t.requires_grad:
        t._trkx_cast = (key, out)  # type: ignore[attr-defined]
    return out


def relu_layers_in_place(pre: Tensor, layers: list[nn.Linear],
                         residual: Tensor | None = None) -> Tensor:
    """``(ReLU, Linear)*`` of ``pre``, overwriting ``pre``: ReLU in place, each hidden
    layer's bias fused into its ``addmm``; with ``residual``, the last layer's output is
    added into it in place (returned). The same arithmetic as the layer-by-layer form
    up to float rounding, without its temporaries (docs/benchmarks.md, "Session 15").
    Weights are cast to ``pre``'s dtype (bf16 under CPU autocast, as autocast casts
    them); ``residual`` must have that dtype too."""
    dt = pre.dtype
    pre.relu_()
    for lin in layers[:-1]:
        pre = linear_relu(pre, cast_param(lin.weight, dt),
                          None if lin.bias is None else cast_param(lin.bias, dt))
    last = layers[-1]
    w = cast_param(last.weight, dt)
    if residual is None:
        return nn.functional.linear(pre, w, None if last.bias is None else cast_param(last.bias, dt))
    residual.addmm_(pre, w.t())
    if last.bias is not None:
        residual += cast_param(last.bias, dt)
    return residual


def scatter_messages(edges_t: Tensor, messages: Tensor, incoming: Tensor,
                     outgoing: Tensor) -> None:
    """Add each edge's message onto its target's ``incoming`` and its source's
    ``outgoing`` row (both float32, accumulated in place).

    At CPU inference with float32 or bf16 messages this is one compiled pass over the
    edges (:mod:`trkx_ray.pipeline._model_kernels`, bf16 read directly: 0.3-0.5x the time of
    the cast and two ``index_add_`` on one core, docs/benchmarks.md "Session 17"); elsewhere (autograd,
    CUDA, other dtypes) two ``index_add_`` of the messages in float32.

    Args:
        edges_t: ``E x 2`` (src, dst), int64.
        messages: ``E x H``.
        incoming, outgoing: ``N x H`` float32 accumulators.
    """
    if (messages.device.type == "cpu" and not torch.is_grad_enabled()
            and messages.dtype in (torch.float32, torch.bfloat16)
            and incoming.dtype == torch.float32 and outgoing.dtype == torch.float32
            and incoming.is_contiguous() and outgoing.is_contiguous()
            and edges_t.dtype == torch.int64):
        from trkx_ray.pipeline import _model_kernels as k

        src = edges_t[:, 0].contiguous().numpy()
        dst = edges_t[:, 1].contiguous().numpy()
        m = messages.contiguous()
        if m.dtype == torch.bfloat16:
            k.scatter_rows_bf16(src, dst, m.view(torch.int16).numpy(), incoming.numpy(),
                                outgoing.numpy())
        else:
            k.scatter_rows_f32(src, dst, m.numpy(), incoming.numpy(), outgoing.numpy())
        return
    m32 = messages.float()
    incoming.index_add_(0, edges_t[:, 1], m32)
    outgoing.index_add_(0, edges_t[:, 0], m32)


def gather_sum(a: Tensor, b: Tensor, edges_t: Tensor, dtype: Any) -> Tensor:
    """``a[src] + b[dst]`` per edge (``edges_t``: ``E x 2``) in ``dtype``, a new tensor.

    At CPU inference in float32 one compiled pass
    (:func:`~trkx_ray.pipeline._model_kernels.gather_add_rows_f32`); elsewhere two
    ``index_select`` and an in-place add (the same values, bit for bit; indices out of
    range raise there).
    """
    if (a.device.type == "cpu" and not torch.is_grad_enabled() and dtype == torch.float32
            and a.dtype == torch.float32 and b.dtype == torch.float32 and a.dim() == 2
            and a.shape[1] == b.shape[1] and a.is_contiguous() and b.is_contiguous()
            and edges_t.dtype == torch.int64 and edges_t.numel()
            and int(edges_t.min()) >= 0 and int(edges_t.max()) < min(a.shape[0], b.shape[0])):
        from trkx_ray.pipeline import _model_kernels as k

        out = torch.empty((edges_t.shape[0], a.shape[1]), dtype=torch.float32)
        k.gather_add_rows_f32(a.numpy(), b.numpy(), edges_t[:, 0].contiguous().numpy(),
                              edges_t[:, 1].contiguous().numpy(), out.numpy())
        return out
    pre = a.index_select(0, edges_t[:, 0]).to(dtype)
    pre += b.index_select(0, edges_t[:, 1])
    return pre


class FilterMLP(nn.Module):
    """Edge filter: MLP on the concatenated inputs of both hits -> edge logit.

    Args:
        node_dim: per-hit input width (features, plus embedding if used).
        hidden: hidden width.
        layers: hidden layers.
        layer_norm: LayerNorm in hidden layers.
        activation: hidden activation.
    """

    def __init__(
        self,
        node_dim: int,
        hidden: int = 64,
        layers: int = 3,
        layer_norm: bool = True,
        activation: str = "tanh",
        edge_features: bool = False,
        cluster_shape: bool = False,
    ) -> None:
        super().__init__()
        self.node_dim = node_dim
        self.net = make_mlp(2 * node_dim, hidden, 1, layers, layer_norm, activation)
        # the pair's geometry (edge_geometry), added to the first layer's pre-activation
        self.edge = (nn.Linear(EDGE_GEOMETRY_DIM, hidden, bias=False)
                     if edge_features else None)
        # the pair's agreement with its hits' cluster shapes (shape_geometry; the last two
        # per-hit columns are the shape), likewise
        self.shape = (nn.Linear(SHAPE_GEOMETRY_DIM, hidden, bias=False)
                      if cluster_shape else None)
        # the Linear layers after the first when the rest is (ReLU, Linear)* (the shipped
        # filter's shape): at inference they run in place (relu_layers_in_place)
        self._fast_layers = relu_linear_layers(self.net[1:])

    def _geo(self, x: Tensor) -> Tensor:
        """The per-hit columns the pair terms read (contiguous, gathered per edge)."""
        if self.shape is None:
            return x[:, :3].contiguous()
        return torch.cat([x[:, :3], x[:, -2:]], dim=1)

    def project(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Per-hit terms of the first layer, ``(W_src x + b, W_dst x)``, once per hit.

        The first layer on ``[x_src, x_dst]`` is ``W_src x_src + W_dst x_dst + b``:
        computing both terms per hit and gathering them per edge gives the same
        result (up to float rounding) for about a third less arithmetic per edge.
        """
        first = self.net[0]
        assert isinstance(first, nn.Linear)
        w_src, w_dst = first.weight[:, : self.node_dim], first.weight[:, self.node_dim :]
        return nn.functional.linear(x, w_src, first.bias), nn.functional.linear(x, w_dst)

    def _pair_terms(self, edges_t: Tensor, x: Tensor) -> tuple[Tensor, Tensor] | None:
        """The pair terms of the first layer and their weights (``terms @ w^T`` is added
        to its pre-activation), or ``None`` without edge features and shapes."""
        if self.edge is not None and self.shape is not None:
            # both pair terms from one gather: terms @ [W_edge W_shape]^T
            return (pair_geometry(x, edges_t, shape=True),
                    torch.cat([self.edge.weight, self.shape.weight], dim=1))
        if self.edge is not None:
            return edge_geometry(x, edges_t), self.edge.weight
        if self.shape is not None:
            return shape_geometry(x, edges_t), self.shape.weight
        return None

    def _logits(self, proj: tuple[Tensor, Tensor], edges_t: Tensor, x: Tensor) -> Tensor:
        terms = self._pair_terms(edges_t, x)
        dt = in_place_dtype(proj[0]) if self._fast_layers is not None else None
        if dt is not None:
            # inference: one gather buffer updated in place (bf16 under CPU autocast),
            # the pair terms fused into one addmm_, then the (ReLU, Linear)* rest in place
            pre = gather_sum(proj[0], proj[1], edges_t, dt)
            if terms is not None:
                pre.addmm_(terms[0].to(dt), cast_param(terms[1], dt).t())
            assert self._fast_layers is not None
            return relu_layers_in_place(pre, self._fast_layers).float().squeeze(-1)
        pre = proj[0].index_select(0, edges_t[:, 0]) + proj[1].index_select(0, edges_t[:, 1])
        if terms is not None:
            # pre + terms @ W^T in one pass (no second E x hidden temporary)
            pre = torch.addmm(pre, terms[0].to(pre.dtype), terms[1].t().to(pre.dtype))
        return self.net[1:](pre).float().squeeze(-1)

    def forward(self, x: Tensor, edges: Tensor, chunk_size: int | None = None) -> Tensor:
        """Edge logits (float32, ``E``) for nodes ``x`` (``N x node_dim``), edges ``2 x E``.

        Args:
            x: per-hit inputs.
            edges: ``2 x E`` (src, dst).
            chunk_size: edges per chunk (``None``: all at once).
        """
        if torch.onnx.is_in_onnx_export():
            # exported graphs keep the concatenated form: onnxruntime runs it ~3x faster
            # than per-hit projections gathered per edge (1.63 s against 4.86 s for the
            # shipped filter on 2.9M edges, one AVX2 core)
            def concat(et: Tensor) -> Tensor:
                pair = torch.cat([x.index_select(0, et[:, 0]), x.index_select(0, et[:, 1])], 1)
                if self.edge is None and self.shape is None:
                    return self.net(pair).float().squeeze(-1)
                pre = self.net[0](pair)
                if self.edge is not None:
                    pre = pre + self.edge(edge_geometry(x[:, :3], et))
                if self.shape is not None:
                    pre = pre + self.shape(shape_geometry(self._geo(x), et))
                return self.net[1:](pre).float().squeeze(-1)

            return concat(edges.T)
        proj = self.project(x)
        geo = self._geo(x)  # the columns edge_geometry (and shape_geometry) read, per edge
        return map_rows(lambda et: self._logits(proj, et, geo), edges.shape[1], chunk_size,
                        edges.T)

    @classmethod
    def from_config(cls, cfg: FilterConfig, node_dim: int) -> FilterMLP:
        """Build from the ``filter`` section (random init or weights)."""
        model = _seeded(
            cfg.seed,
            lambda: cls(node_dim, cfg.hidden, cfg.layers, cfg.layer_norm, cfg.activation,
                        cfg.edge_features, cfg.cluster_shape),
        )
        if cfg.weights is not None:
            load_weights(model, cfg.weights, "filter.weights")
        return model.eval()  # type: ignore[return-value]


class _ScatterAddRows(torch.autograd.Function):
    """``out.index_add(0, index, src)`` that exports as ONNX ``ScatterND(reduction="add")``.

    Used only while exporting (opset >= 16): every row ``src[k]`` is added to
    ``out[index[k]]``, accumulating repeated indices.
    """

    @staticmethod
    def forward(ctx: object, out: Tensor, index: Tensor, src: Tensor) -> Tensor:  # noqa: D102
        return out.index_add(0, index, src)

    @staticmethod
    def symbolic(g: object, out: object, index: object, src: object) -> object:  # noqa: D102
        axes = g.op("Constant", value_t=torch.tensor([1], dtype=torch.int64))  # type: ignore[attr-defined]
        rows = g.op("Unsqueeze", index, axes)  # type: ignore[attr-defined]
        return g.op("ScatterND", out, rows, src, reduction_s="add")  # type: ignore[attr-defined]


class _EdgeBlock(nn.Module):
    """MLP on ``[h_src, h_dst(, e)]`` with the first layer split per input.

    ``W [a, b, c] = W_a a + W_b b + W_c c``: the node terms are computed once
    per node and gathered per edge, which halves the first layer's cost.
    At inference (no autograd, no autocast) a ``(ReLU, Linear)*`` rest, the shape of
    every shipped per-edge network, runs in place (:meth:`fast`): 13% less GNN time on one
    AVX2 core at pile-up 200, the same decisions (docs/benchmarks.md, "Session 15").
    """

    def __init__(
        self,
        node_dim: int,
        edge_dim: int,
        hidden: int,
        out_dim: int,
        layers: int,
        layer_norm: bool,
        activation: str,
    ) -> None:
        super().__init__()
        self.src = nn.Linear(node_dim, hidden)
        self.dst = nn.Linear(node_dim, hidden, bias=False)
        self.edge = nn.Linear(edge_dim, hidden, bias=False) if edge_dim else None
        rest: list[nn.Module] = []
        if layer_norm:
            rest.append(nn.LayerNorm(hidden))
        rest.append(_ACTIVATIONS[activation]())
        if layers > 1:
            rest.append(make_mlp(hidden, hidden, out_dim, layers - 1, layer_norm, activation))
        else:
            rest.append(nn.Linear(hidden, out_dim))
        self.rest = nn.Sequential(*rest)

        # the Linear layers after the first when the rest is (ReLU, Linear)*: the shape of
        # every shipped per-edge network, which _fast_edge_forward runs in place
        self._fast_layers = relu_linear_layers(self.rest)

    def project(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """Per-node terms ``(W_src h + b, W_dst h)``, computed once per node (under CPU
        autocast ``h`` is cast to bf16 once for both, not once per layer)."""
        dt = in_place_dtype(h)
        if dt is not None and dt != h.dtype:
            h = h.to(dt)
        return self.src(h), self.dst(h)

    def fast(self, x: Tensor) -> bool:
        """Whether :meth:`edge_forward` may run in place for ``x``'s device: inference
        (no autograd), no autocast, no ONNX export and a ``(ReLU, Linear)*`` rest."""
        return self._fast_layers is not None and in_place_ok(x)

    def _fast_edge_forward(
        self, proj: tuple[Tensor, Tensor], edges_t: Tensor, e: Tensor | None,
        residual: Tensor | None,
    ) -> Tensor:
        """:meth:`edge_forward` with every intermediate updated in place: one gather
        buffer, the edge term fused into one ``addmm``, then :func:`relu_layers_in_place`
        (with ``residual``, the output added into it, returned)."""
        assert self._fast_layers is not None
        dt = in_place_dtype(proj[0])
        pre = gather_sum(proj[0], proj[1], edges_t, dt)
        if self.edge is not None and e is not None:
            pre.addmm_(e.to(dt), cast_param(self.edge.weight, dt).t())
        return relu_layers_in_place(pre, self._fast_layers, residual)

    def edge_forward(
        self, proj: tuple[Tensor, Tensor], edges_t: Tensor, e: Tensor | None = None
    ) -> Tensor:
        """Output for edges ``edges_t`` (``E x 2``) given :meth:`project` ``proj``."""
        if self.fast(proj[0]):
            return self._fast_edge_forward(proj, edges_t, e, None)
        pre = proj[0].index_select(0, edges_t[:, 0]) + proj[1].index_select(0, edges_t[:, 1])
        if self.edge is not None and e is not None:
            pre = pre + self.edge(e)
        return self.rest(pre)

    def residual_update(self, proj: tuple[Tensor, Tensor], edges_t: Tensor, e: Tensor) -> Tensor:
        """``e + edge_forward(proj, edges_t, e)``; in place on ``e`` (returned) where
        :meth:`fast` allows, else a new tensor."""
        if self.fast(e) and e.dtype == in_place_dtype(e):
            return self._fast_edge_forward(proj, edges_t, e, e)
        return e + self.edge_forward(proj, edges_t, e)

    def forward(self, h: Tensor, edges: Tensor, e: Tensor | None = None) -> Tensor:
        return self.edge_forward(self.project(h), edges.T, e)


class InteractionGNN(nn.Module):
    """Interaction network for edge classification (Exa.TrkX style).

    Node encoder -> edge encoder -> ``iterations`` x (edge update with
    residual; messages scatter-added with ``index_add_`` onto the target
    (incoming) and the source (outgoing) hit separately; node update on
    ``[h, incoming, outgoing]`` with residual) -> edge classifier logits.

    Args:
        in_dim: number of hit features.
        hidden: latent width of nodes and edges.
        iterations: message-passing iterations.
        mlp_layers: linear layers per network.
        shared_weights: reuse one edge and one node network for all iterations.
        layer_norm: LayerNorm in the node networks (and encoders).
        activation: hidden activation.
        edge_layer_norm: LayerNorm also in the per-edge networks (edge
            encoder, edge networks, classifier); they run on every edge, so
            this costs about a third of the GNN's time on CPU.
        edge_features: the edge encoder also reads the pair's geometry
            (:func:`edge_geometry` of the hit features).
        cluster_shape: the last two input columns are the hits' cluster shapes
            (:func:`~trkx_ray.pipeline.features.cluster_shape`), and the edge encoder
            also reads :func:`shape_geometry` (with ``edge_features``).
    """

    def __init__(
        self,
        in_dim: int,
        hidden: int = 64,
        iterations: int = 4,
        mlp_layers: int = 2,
        shared_weights: bool = True,
        layer_norm: bool = True,
        activation: str = "tanh",
        edge_layer_norm: bool = False,
        edge_features: bool = False,
        cluster_shape: bool = False,
    ) -> None:
        super().__init__()
        if cluster_shape and not edge_features:
            raise ValueError("gnn.cluster_shape needs gnn.edge_features")
        self.in_dim = in_dim
        self.edge_features = edge_features
        self.cluster_shape = cluster_shape
        self.hidden = hidden
        self.iterations = iterations
        self.shared_weights = shared_weights
        n_hidden = max(mlp_layers - 1, 1)
        self.node_encoder = make_mlp(
            in_dim, hidden, hidden, n_hidden, layer_norm, activation, output_activation=True
        )
        eln = edge_layer_norm
        geo_dim = (EDGE_GEOMETRY_DIM if edge_features else 0) + (
            SHAPE_GEOMETRY_DIM if cluster_shape else 0)
        self.edge_encoder = _EdgeBlock(hidden, geo_dim, hidden, hidden, mlp_layers, eln,
                                       activation)
        n_nets = 1 if shared_weights else max(iterations, 1)
        self.edge_networks = nn.ModuleList(
            _EdgeBlock(hidden, hidden, hidden, hidden, mlp_layers, eln, activation)
            for _ in range(n_nets)
        )
        self.node_networks = nn.ModuleList(
            make_mlp(3 * hidden, hidden, hidden, n_hidden, layer_norm, activation)
            for _ in range(n_nets)
        )
        self.classifier = _EdgeBlock(hidden, hidden, hidden, 1, mlp_layers, eln, activation)

    def _encode_nodes(self, x: Tensor) -> Tensor:
        """The node encoder in float32, autocast or not (see :meth:`forward`)."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.node_encoder(x.float())

    @staticmethod
    def aggregate(messages: Tensor, edges: Tensor, num_nodes: int) -> tuple[Tensor, Tensor]:
        """Scatter-add edge messages onto hits (float32 accumulation).

        Args:
            messages: ``E x H`` edge messages.
            edges: ``2 x E`` (src, dst).
            num_nodes: number of hits.

        Returns:
            ``(incoming, outgoing)``, each ``num_nodes x H``: the sum of the
            messages of the edges ending at / starting from each hit.
        """
        incoming = torch.zeros(num_nodes, messages.shape[1], dtype=torch.float32,
                               device=messages.device)
        outgoing = torch.zeros_like(incoming)
        if torch.onnx.is_in_onnx_export():
            m = messages.float()
            # the exporters map index_add_ to ScatterND without reduction, which is
            # wrong for repeated indices; emit ScatterND(reduction="add") ourselves
            # (row-wise, ~10x faster in onnxruntime than scatter_add_'s
            # element-wise ScatterElements(add))
            incoming = _ScatterAddRows.apply(incoming, edges[1], m)
            outgoing = _ScatterAddRows.apply(outgoing, edges[0], m)
        else:
            scatter_messages(edges.T, messages, incoming, outgoing)
        return incoming, outgoing

    def forward(self, x: Tensor, edges: Tensor, chunk_size: int | None = None) -> Tensor:
        """Edge logits (float32, ``E``) for hit features ``x`` and edges ``2 x E``.

        Args:
            x: hit features (``N x in_dim``).
            edges: ``2 x E`` (src, dst).
            chunk_size: edges (and hits) per chunk for the per-edge and
                per-node networks (``None``: all at once); the result does
                not depend on it. Exported graphs use ``None``.
        """
        num_nodes = x.shape[0]
        edges_t = edges.T
        num_edges = edges_t.shape[0]
        chunk = chunk_size
        # the node encoder reads the hits' coordinates: under bf16 autocast they would
        # round to 8 bits (~4 mm at z = 1 m), which cost 0.010 of score on validation
        # events; it runs once per hit, so it always runs in float32
        h = map_rows(self._encode_nodes, num_nodes, chunk, x)
        proj = self.edge_encoder.project(h)
        if self.edge_features:
            geo = (torch.cat([x[:, :3], x[:, -2:]], dim=1) if self.cluster_shape
                   else x[:, :3].contiguous())

            e = map_rows(
                lambda et: self.edge_encoder.edge_forward(
                    proj, et, pair_geometry(geo, et, self.cluster_shape)),
                num_edges, chunk, edges_t,
            )
        else:
            e = map_rows(lambda et: self.edge_encoder.edge_forward(proj, et), num_edges, chunk,
                         edges_t)
        for it in range(self.iterations):
            k = 0 if self.shared_weights else it
            net: _EdgeBlock = self.edge_networks[k]  # type: ignore[assignment]
            proj = net.project(h)
            if chunk is None or num_edges <= chunk or torch.onnx.is_in_onnx_export():
                e = net.residual_update(proj, edges_t, e)
                incoming, outgoing = self.aggregate(e, edges, num_nodes)
            else:
                # update the edges chunk by chunk in place, accumulating messages (the
                # accumulators are reused across iterations: no fresh pages to fault in)
                if it == 0:
                    incoming = torch.zeros(num_nodes, self.hidden, dtype=torch.float32,
                                           device=x.device)
                    outgoing = torch.zeros_like(incoming)
                else:
                    incoming.zero_()
                    outgoing.zero_()
                for start in range(0, num_edges, chunk):
                    part = edges_t[start : start + chunk]
                    e_part = e[start : start + chunk]
                    new = net.residual_update(proj, part, e_part)
                    if new is not e_part:
                        e[start : start + chunk] = new
                    scatter_messages(part, new, incoming, outgoing)
            node_net = self.node_networks[k]

            def node_update(
                hh: Tensor, inc: Tensor, out: Tensor, node_net: nn.Module = node_net
            ) -> Tensor:
                return hh + node_net(torch.cat([hh.to(inc.dtype), inc, out], 1))

            if in_place_dtype(h) is not None and chunk is not None:
                # inference: each chunk of hits updated in place (h is not needed after)
                for start in range(0, num_nodes, chunk):
                    rows = slice(start, start + chunk)
                    hh = h[rows]
                    hh += node_net(torch.cat([hh, incoming[rows], outgoing[rows]], 1))
            else:
                h = map_rows(node_update, num_nodes, chunk, h, incoming, outgoing)
        proj = self.classifier.project(h)
        return map_rows(
            lambda et, ee: self.classifier.edge_forward(proj, et, ee).float().squeeze(-1),
            num_edges,
            chunk,
            edges_t,
            e,
        )

    @classmethod
    def from_config(cls, cfg: GNNConfig, in_dim: int) -> InteractionGNN:
        """Build from the ``gnn`` section (random init or weights)."""
        model = _seeded(
            cfg.seed,
            lambda: cls(
                in_dim,
                cfg.hidden,
                cfg.iterations,
                cfg.mlp_layers,
                cfg.shared_weights,
                cfg.layer_norm,
                cfg.activation,
                cfg.edge_layer_norm,
                cfg.edge_features,
                cfg.cluster_shape,
            ),
        )
        if cfg.weights is not None:
            load_weights(model, cfg.weights, "gnn.weights")
        return model.eval()  # type: ignore[return-value]
