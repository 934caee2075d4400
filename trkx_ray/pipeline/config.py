"""Typed pipeline configuration: YAML -> frozen dataclasses.

A pipeline configuration is one YAML file in ``configs/pipeline/`` (shipped as
package data under ``trkx_ray/configs/pipeline/``), read with
``yaml.safe_load`` and turned into a :class:`PipelineConfig`. Every key is
checked when the file is loaded, before any work: unknown keys, wrong types,
out-of-range values, unknown backend names and missing weights files raise
:class:`ConfigError` naming the offending key (``filter.chunk_size``) and file.

A YAML file may start from another one with ``extends: NAME`` (a shipped
name or a path relative to the file); its own keys are merged over the base's.

The schema imports nothing else of the package: what the stages offer (the
edge and labeling backends and the options each takes, the prune modes, the
onnxruntime providers and the files of an ONNX export directory) is declared
here as plain data, and the stages read it from here.

Sources accepted by :func:`load_config`: a path to a YAML file, a bare name
(``"default"`` -> ``trkx_ray/configs/pipeline/default.yaml``), a ``dict`` with
the same structure, or an existing :class:`PipelineConfig`. ``overrides`` (a
nested dict) is merged on top, key by key, before validation; this is how the
bench's five configurations are defined from ``default``.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

__all__ = [
    "CONFIG_DIR",
    "EDGE_BACKEND_OPTIONS",
    "EXTEND_DEFAULTS",
    "QUALITY_DEFAULTS",
    "LABEL_BACKEND_OPTIONS",
    "ONNX_MANIFEST",
    "NO_CELLS_DIR",
    "NO_CELLS_KEYS",
    "ONNX_MODEL_FILES",
    "ONNX_PROVIDERS",
    "PRUNE_MODES",
    "WEIGHTS_DIR",
    "ConfigError",
    "EdgesConfig",
    "EmbeddingConfig",
    "FeaturesConfig",
    "FilterConfig",
    "GNNConfig",
    "LabelingConfig",
    "OnnxConfig",
    "PipelineConfig",
    "available_configs",
    "build_dataclass",
    "check_extend_options",
    "check_quality_options",
    "load_config",
    "merge_overrides",
    "no_cells_config",
    "onnx_provider",
    "read_yaml",
    "weights_path",
]

#: Directory of the shipped pipeline configurations (package data).
CONFIG_DIR: Path = Path(__file__).resolve().parent.parent / "configs" / "pipeline"
#: per-hit cluster-shape columns fed to a model whose ``cluster_shape`` is on
#: (``features.cluster_shape``: the |cot theta| estimate / 5 and its presence flag)
SHAPE_COLUMNS: int = 2
#: Directory of the shipped model weights (package data): ``weights: NAME`` means
#: ``WEIGHTS_DIR / "NAME.pt"`` (see :func:`weights_path`).
WEIGHTS_DIR: Path = Path(__file__).resolve().parent.parent / "weights"

Activation = Literal["relu", "tanh", "silu", "gelu"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
Runtime = Literal["torch", "onnx"]
_T = TypeVar("_T")

# --------------------------------------------------------------------------- what the stages offer
# Plain data read by the stages (edges.py, labeling.py, export.py, onnx_runtime.py):
# a backend is added there and declared here; tests/test_structure.py checks both agree.

#: Edge backends (``edges.backend``) and the options each takes (``edges.options``);
#: implemented in :mod:`trkx_ray.pipeline.edges`.
EDGE_BACKEND_OPTIONS: dict[str, frozenset[str]] = {
    "radius": frozenset({"chunk"}),
    "faiss": frozenset({"threads"}),
    "frnn": frozenset(
        {"grid_dims", "max_cells", "subdiv", "threads", "rotate", "impl", "chunk_pairs"}
    ),
}

#: Labeling backends (``labeling.backend``) and the options each takes
#: (``labeling.options``); implemented in :mod:`trkx_ray.pipeline.labeling`.
LABEL_BACKEND_OPTIONS: dict[str, frozenset[str]] = {
    "scipy": frozenset(),
    "sknetwork": frozenset(),
    "torch": frozenset(),
    "cugraph": frozenset(),
    "dbscan": frozenset({"eps", "min_samples"}),
    "walk": frozenset({"walk_min", "walk_add", "attach", "attach_max", "attach_min"}),
}

#: Edge pruning modes before labeling (``labeling.prune``; ``none``: every edge above the cut).
PRUNE_MODES: tuple[str, ...] = ("none", "best")

#: onnxruntime execution providers the ``onnx`` runtime knows, by short name.
ONNX_PROVIDERS: dict[str, str] = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}

#: The helix extension's options (``labeling.extend``) and their defaults; implemented in
#: :func:`trkx_ray.pipeline.extend.extend_tracks`.
EXTEND_DEFAULTS: dict[str, Any] = {
    "fit_min": 3,
    "move_max": 10,
    "merge_min": 3,
    "merge_frac": 0.7,
    "tol_xy": (2.0, 8.0, 24.0),
    "tol_z": (3.0, 10.0, 30.0),
    "grow_z": 30.0,
    "per_layer": 2,
    "regions": (200.0, 720.0),
    "kappa_max": 0.0025,
    "passes": 1,
    "pair_grow": 0,
    "stitch_max": 0,
    "stitch_search": 3.0,
    "stitch_tol": 3.0,
    "refit": 0.0,
}

#: The track quality selection's options (``labeling.quality``) and their defaults;
#: implemented in :mod:`trkx_ray.pipeline.quality`.
QUALITY_DEFAULTS: dict[str, Any] = {
    "weights": "track_quality",
    "cut": 0.5,
    "min_hits": 5,
    "high_pt": 0.0,
    "high_pt_cut": 0.5,
    "field": 2.0,
}

#: The manifest of an ONNX export directory (``onnx.dir``), written beside the models.
ONNX_MANIFEST: str = "manifest.json"
#: Model name -> file name in an ONNX export directory.
ONNX_MODEL_FILES: dict[str, str] = {
    "embedding": "embedding.onnx",
    "filter": "filter.onnx",
    "gnn": "gnn.onnx",
}


class ConfigError(ValueError):
    """A pipeline configuration is invalid; the message names the key and file."""


# --------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class FeaturesConfig:
    """Hit features (stage ``data_loading``).

    Attributes:
        cell_features: add two cell features per hit (number of cells / 10 and
            summed cell charge); zeros for events without a cells part.
        fourier: number of Fourier frequencies ``K``: adds the hit's eta / 3 and
            ``sin``/``cos`` of ``2^k phi`` and ``2^k eta`` for ``k < K`` (``4K + 1``
            features). They give the metric-learning MLP the high-frequency basis
            it needs to separate ~10^4 tracks on the unit sphere; 0 = off.
    """

    cell_features: bool = True
    fourier: int = 0

    @property
    def num_features(self) -> int:
        """Features per hit: (r/1000 mm, phi/pi, z/1000 mm) [+ 2 cell] [+ 4K + 1 Fourier]."""
        return 3 + (2 if self.cell_features else 0) + (4 * self.fourier + 1 if self.fourier else 0)


@dataclass(frozen=True)
class EmbeddingConfig:
    """Metric-learning embedding MLP (stage ``embedding``).

    Attributes:
        hidden: hidden width.
        layers: number of hidden layers (>= 1).
        output_dim: embedding dimension (the output is L2-normalised).
        layer_norm: LayerNorm after each hidden linear layer.
        activation: hidden activation.
        cluster_shape: also feed each hit's pixel-barrel cluster shape
            (``features.cluster_shape``: the |cot theta| its cluster length gives, and
            whether it has one), so that a pixel-barrel hit lands near the hits its
            track's direction allows. Events without cells run with the shape marked
            absent; the model is trained with it both present and absent.
        chunk_size: hits per inference chunk (small chunks keep intermediates
            cache-resident; the result does not depend on it).
        weights: ``None`` (random initialisation with ``seed``), a name under
            ``trkx_ray/weights/<name>.pt`` or a path to a ``.pt`` state dict.
        seed: seed of the random initialisation.
    """

    hidden: int = 128
    layers: int = 3
    output_dim: int = 8
    layer_norm: bool = True
    activation: Activation = "tanh"
    cluster_shape: bool = False
    chunk_size: int = 16384
    weights: str | None = None
    seed: int = 0


@dataclass(frozen=True)
class EdgesConfig:
    """Radius graph in the embedding space (stage ``build_edges``).

    Attributes:
        backend: a name in :data:`EDGE_BACKEND_OPTIONS` (``radius``, ``faiss``, ``frnn``).
        radius: neighbourhood radius in embedding units (the embedding lives on
            the unit sphere, so 0 < radius <= 2).
        k_max: cap on neighbours per hit passed to the backend (``None``: all).
        max_edges_per_hit: guard against degenerate (e.g. random-weight)
            embeddings: the mean number of neighbours per hit is estimated on a
            sample before building, and a graph denser than this is refused
            with a clear error instead of exhausting memory.
        options: extra keyword arguments for the backend (names in
            :data:`EDGE_BACKEND_OPTIONS`).
    """

    backend: str = "frnn"
    radius: float = 0.1
    k_max: int | None = None
    max_edges_per_hit: int = 64
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FilterConfig:
    """Edge filter MLP (stage ``filtering``).

    Attributes:
        hidden: hidden width.
        layers: number of hidden layers.
        layer_norm: LayerNorm after each hidden linear layer.
        activation: hidden activation.
        use_embedding: also feed both hits' embeddings to the filter.
        edge_features: also feed the pair's geometry (dr, dphi, dz, phi slope and the
            z intercept at r = 0: ``models.edge_geometry``) to the first layer.
        cluster_shape: also feed each hit's pixel-barrel cluster shape (the |cot theta|
            its cluster length gives, and whether it has one: ``features.cluster_shape``)
            and, per edge, how far the pair's |dz / dr| is from each hit's estimate
            (``models.shape_geometry``). Events without cells run with the shape marked
            absent; the model is trained with it both present and absent.
        cut: keep edges with sigmoid score > cut.
        chunk_size: edges per inference chunk (bounds memory; small chunks keep
            intermediates cache-resident; the result does not depend on it).
        weights: as :attr:`EmbeddingConfig.weights`.
        seed: seed of the random initialisation.
    """

    hidden: int = 64
    layers: int = 3
    layer_norm: bool = True
    activation: Activation = "relu"
    use_embedding: bool = False
    edge_features: bool = False
    cluster_shape: bool = False
    cut: float = 0.5
    chunk_size: int = 16384
    weights: str | None = None
    seed: int = 1


@dataclass(frozen=True)
class GNNConfig:
    """Interaction-network GNN (stage ``gnn``).

    Attributes:
        hidden: node and edge latent width.
        iterations: message-passing iterations.
        mlp_layers: linear layers per node / edge network.
        shared_weights: one node and one edge network for all iterations.
        layer_norm: LayerNorm in the node networks and encoders.
        edge_layer_norm: LayerNorm also in the per-edge networks (costly on CPU).
        edge_features: the edge encoder also reads the pair's geometry
            (``models.edge_geometry``).
        cluster_shape: the hits' pixel-barrel cluster shapes are two more node inputs,
            and the edge encoder also reads the pair's agreement with them
            (``models.shape_geometry``; needs ``edge_features``), as for the filter.
        activation: hidden activation.
        chunk_size: edges (and hits) per chunk of the per-edge / per-node
            networks (the result does not depend on it).
        weights: as :attr:`EmbeddingConfig.weights`.
        seed: seed of the random initialisation.
    """

    hidden: int = 64
    iterations: int = 4
    mlp_layers: int = 2
    shared_weights: bool = True
    layer_norm: bool = True
    edge_layer_norm: bool = False
    edge_features: bool = False
    cluster_shape: bool = False
    activation: Activation = "relu"
    chunk_size: int = 16384
    weights: str | None = None
    seed: int = 2


@dataclass(frozen=True)
class LabelingConfig:
    """Track labeling (stage ``labeling``).

    Attributes:
        backend: a name in :data:`LABEL_BACKEND_OPTIONS`.
        cut: keep GNN edges with score > cut.
        prune: one of :data:`PRUNE_MODES`: ``none`` (cluster every edge above the cut) or ``best`` (first keep
            only each hit's best edge to an outer hit and from an inner hit, which
            stops fake branches from merging tracks; see
            :func:`trkx_ray.pipeline.labeling.best_edges`).
        options: extra keyword arguments for the backend (e.g. DBSCAN ``eps``;
            names in :data:`LABEL_BACKEND_OPTIONS`).
        extend: ``None`` (off) or the options of the helix extension that follows
            the backend, any backend (:func:`trkx_ray.pipeline.extend.extend_tracks`;
            names and defaults in :data:`EXTEND_DEFAULTS`,
            ``{}`` = every default).
        quality: ``None`` (off) or the options of the track quality selection that
            comes last (:mod:`trkx_ray.pipeline.quality`; names and defaults in
            :data:`QUALITY_DEFAULTS`): tracks of ``min_hits`` or more hits that its
            classifier (``weights``) gives a probability below ``cut`` are dissolved
            (below ``high_pt_cut`` for tracks whose helix has pT >= ``high_pt`` GeV in a
            ``field`` of that many tesla; ``high_pt`` 0: one cut for all).
    """

    backend: str = "scipy"
    cut: float = 0.5
    prune: str = "none"
    options: dict[str, Any] = field(default_factory=dict)
    extend: dict[str, Any] | None = None
    quality: dict[str, Any] | None = None


@dataclass(frozen=True)
class OnnxConfig:
    """The onnxruntime model backend (used when ``runtime: onnx``).

    Attributes:
        dir: directory written by ``python -m trkx_ray.export`` (three
            ``.onnx`` files + ``manifest.json``) exported from this same
            configuration; ``None``: export on the fly into a cache directory
            keyed by a hash of the model sections and weights.
        providers: execution providers in order of preference, short
            (``cpu``, ``cuda``, ``tensorrt``) or onnxruntime names
            (``CUDAExecutionProvider``); ``None``: ``[cpu]`` on a CPU device,
            ``[cuda, cpu]`` on a CUDA device. A requested provider that the
            installed onnxruntime lacks is an error naming it.
        threads: intra-op threads per session; ``None``: follow
            ``torch.get_num_threads()`` (so a Ray actor pinned to K cores
            uses K threads).
        opset: ONNX opset of on-the-fly exports (16-23: the GNN's scatter-add
            is ``ScatterND`` with ``reduction="add"``, new in opset 16).
        cache_dir: where on-the-fly exports go; ``None``:
            ``$TRKX_RAY_CACHE`` or ``$XDG_CACHE_HOME/trkx_ray`` or
            ``~/.cache/trkx_ray`` (``onnx/<hash>`` below it).
    """

    dir: str | None = None
    providers: list[str] | None = None
    threads: int | None = None
    opset: int = 17
    cache_dir: str | None = None


@dataclass(frozen=True)
class PipelineConfig:
    """A whole inference pipeline.

    Attributes:
        name: configuration name (for reports).
        kind: ``exatrkx`` (the full pipeline) or ``noop`` (no models: one track
            per hit, for measuring driver overhead).
        precision: ``auto`` (the fastest precision that keeps the physics on
            the device: :func:`trkx_ray.hardware.resolve_precision`), ``fp32``,
            ``bf16`` (autocast on CPU or CUDA) or ``fp16`` (CUDA only); applies
            to the torch runtime (onnx runs fp32).
        runtime: ``torch`` (the models in PyTorch) or ``onnx`` (the three
            models exported to ONNX and run by onnxruntime, see ``onnx``).
        features, embedding, edges, filter, gnn, labeling: the stages.
        onnx: the onnxruntime backend's settings (used with ``runtime: onnx``).
        no_cells: keys that change for an event without cells (``{section: {key:
            value}}``, within :data:`NO_CELLS_KEYS`): e.g. a GNN trained on such
            events (:func:`no_cells_config`); ``None``: the same for every event.
        source: where the configuration came from (file path or ``<dict>``).
    """

    name: str = "default"
    kind: Literal["exatrkx", "noop"] = "exatrkx"
    precision: Precision = "auto"
    runtime: Runtime = "torch"
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    edges: EdgesConfig = field(default_factory=EdgesConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    gnn: GNNConfig = field(default_factory=GNNConfig)
    labeling: LabelingConfig = field(default_factory=LabelingConfig)
    onnx: OnnxConfig = field(default_factory=OnnxConfig)
    no_cells: dict[str, Any] | None = None
    source: str = field(default="<dict>", compare=False)

    @property
    def filter_node_dim(self) -> int:
        """Width of the filter's per-hit input: features [+ embedding] [+ 2 cluster shape]."""
        f = self.filter
        return (self.features.num_features
                + (self.embedding.output_dim if f.use_embedding else 0)
                + (SHAPE_COLUMNS if f.cluster_shape else 0))

    @property
    def reads_cells(self) -> bool:
        """Whether the models read an event's cells (cell features or cluster shapes)."""
        return self.kind != "noop" and (self.features.cell_features or self.cluster_shape)

    @property
    def cluster_shape(self) -> bool:
        """Whether any model (embedding, filter, GNN) reads pixel-barrel cluster shapes."""
        return self.embedding.cluster_shape or self.filter.cluster_shape or self.gnn.cluster_shape

    @property
    def embedding_in_dim(self) -> int:
        """Width of the embedding's per-hit input: features [+ 2 cluster shape]."""
        return (self.features.num_features
                + (SHAPE_COLUMNS if self.embedding.cluster_shape else 0))

    @property
    def gnn_in_dim(self) -> int:
        """Width of the GNN's per-hit input: features [+ 2 cluster shape]."""
        return self.features.num_features + (SHAPE_COLUMNS if self.gnn.cluster_shape else 0)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML/JSON-serialisable), without ``source``."""
        out = dataclasses.asdict(self)
        out.pop("source", None)
        return out


# --------------------------------------------------------------------------- parsing


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if origin is dict:
        return "mapping"
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    return getattr(tp, "__name__", str(tp))


def _check_value(value: Any, tp: Any, key: str, where: str) -> Any:
    """Return ``value`` checked (and int->float widened) against type ``tp``."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{where}: {key} = {value!r} is not one of {list(choices)}")
        return value
    if origin in (Union, types.UnionType):
        if isinstance(value, (list, tuple)):  # a list: report the offending item
            for alt in typing.get_args(tp):
                if typing.get_origin(alt) is list:
                    return _check_value(value, alt, key, where)
        for alt in typing.get_args(tp):
            try:
                return _check_value(value, alt, key, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {key} = {value!r} must be {_type_name(tp)}")
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{where}: {key} must be null")
        return None
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {key} = {value!r} must be a boolean (true/false)")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: {key} = {value!r} must be an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: {key} = {value!r} must be a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: {key} = {value!r} must be a string")
        return value
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: {key} must be a mapping, got {type(value).__name__}")
        for k in value:
            if not isinstance(k, str):
                raise ConfigError(f"{where}: {key} has a non-string key {k!r}")
        return dict(value)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: {key} = {value!r} must be a list")
        (item,) = typing.get_args(tp)
        return [_check_value(v, item, f"{key}[{i}]", where) for i, v in enumerate(value)]
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _build(tp, value, key, where)
    raise ConfigError(f"{where}: {key}: unsupported type {tp!r}")  # pragma: no cover


def _build(cls: type, data: Any, prefix: str, where: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        what = prefix or "the configuration"
        raise ConfigError(f"{where}: {what} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.name != "source"}
    unknown = sorted(str(k) for k in data if k not in names)
    if unknown:
        full = [f"{prefix}.{k}" if prefix else k for k in unknown]
        raise ConfigError(f"{where}: unknown key(s) {full}; allowed: {sorted(names)}")
    kwargs = {}
    for name in names:
        if name in data:
            key = f"{prefix}.{name}" if prefix else name
            kwargs[name] = _check_value(data[name], hints[name], key, where)
    return cls(**kwargs)


def merge_overrides(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``overrides`` into a copy of ``base`` (mappings merge, values replace)."""
    out = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in base.items()}
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_overrides(out[key], value)
        else:
            out[key] = value
    return out


def available_configs() -> list[str]:
    """Names of the shipped pipeline configurations."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def build_dataclass(cls: type[_T], data: Mapping[str, Any] | None, where: str = "<dict>") -> _T:
    """Build the frozen dataclass ``cls`` from a nested mapping, checking every key.

    The one YAML-to-dataclass validator of the package (pipeline and training
    configurations): the field types drive the checks (``bool``, ``int``,
    ``float`` (an int widens), ``str``, ``Literal`` choices, unions with
    ``None``, ``list[...]``, ``dict[str, ...]`` and nested dataclasses). A
    field named ``source`` is not read from ``data``.

    Args:
        cls: a dataclass type.
        data: its keys (``None``: all defaults).
        where: the source (file path or ``<dict>``), for error messages.

    Returns:
        The instance.

    Raises:
        ConfigError: an unknown key or a value of the wrong type, naming the
            dotted key (``filter.chunk_size``) and ``where``.
    """
    built: _T = _build(cls, data, "", where)
    return built


def weights_path(weights: str) -> Path:
    """The file a ``weights:`` value names (existing or not).

    Args:
        weights: a name (``trkx_ray/weights/<name>.pt``, see :data:`WEIGHTS_DIR`)
            or a path (absolute, ending in ``.pt``, or with a directory part).

    Returns:
        The path. :func:`load_config` checks that it exists;
        :func:`trkx_ray.pipeline.models.resolve_weights` checks again where the
        models are built (a Ray actor may run on another node).
    """
    path = Path(weights).expanduser()
    is_path = path.is_absolute() or path.suffix == ".pt" or len(path.parts) > 1
    return path if is_path else WEIGHTS_DIR / f"{weights}.pt"


#: subdirectory of an ONNX export directory holding the no-cells model set
NO_CELLS_DIR: str = "no_cells"
#: what ``no_cells`` may change, per section (:func:`no_cells_config`)
NO_CELLS_KEYS: dict[str, tuple[str, ...]] = {
    "embedding": ("weights",),
    "edges": ("radius", "k_max"),
    "filter": ("weights", "cut"),
    "gnn": ("weights", "iterations"),
    "labeling": ("cut", "options", "extend", "quality"),
}


def no_cells_config(cfg: PipelineConfig) -> PipelineConfig | None:
    """The configuration that runs an event without cells, or ``None`` when it is ``cfg``.

    ``cfg.no_cells`` changes a few keys for such events (:data:`NO_CELLS_KEYS`: the
    models' weights, the radius, the cuts, the GNN's number of message-passing
    iterations), e.g. a GNN fine-tuned on events without cells; everything else, the
    models' inputs and layers included, is ``cfg``'s. A labeling step that ``cfg`` switches
    off (``labeling.extend`` or ``labeling.quality`` null) stays off without cells. Labeling options of another backend than ``cfg``'s are dropped (a
    configuration that labels with ``scipy`` keeps the no-cells cut, not the walk's
    options). An ONNX export directory (``onnx.dir``) keeps that model set in its
    ``no_cells/`` subdirectory (``python -m trkx_ray.export`` writes both).

    Args:
        cfg: a pipeline configuration.

    Raises:
        ConfigError: an invalid value in ``no_cells`` (named as its key).
    """
    if cfg.no_cells is None:
        return None
    overrides: dict[str, Any] = merge_overrides({}, cfg.no_cells)
    # backend options belong to their backend (as in load_config): walk options written for
    # the default's walk do not follow a configuration that labels with another backend
    lab = overrides.get("labeling")
    if isinstance(lab, Mapping) and isinstance(lab.get("options"), Mapping):
        own = LABEL_BACKEND_OPTIONS.get(cfg.labeling.backend, frozenset())
        known = frozenset().union(*LABEL_BACKEND_OPTIONS.values())
        kept = {k: v for k, v in lab["options"].items() if k in own or k not in known}
        overrides["labeling"] = lab = {**lab, "options": kept}
    # a step that the configuration switched off (extend, quality: null) stays off: the
    # no-cells section only tunes the steps that run
    if isinstance(lab, Mapping):
        off = [step for step in ("extend", "quality")
               if step in lab and getattr(cfg.labeling, step) is None]
        if off:
            overrides["labeling"] = {k: v for k, v in lab.items() if k not in off}
    if cfg.onnx.dir is not None:
        overrides["onnx"] = {"dir": str(Path(cfg.onnx.dir).expanduser() / NO_CELLS_DIR)}
    data = {**cfg.to_dict(), "no_cells": None, "name": f"{cfg.name} (no cells)"}
    data = merge_overrides(_drop_stale_options(data, overrides), overrides)
    alt = dataclasses.replace(build_dataclass(PipelineConfig, data, cfg.source), source=cfg.source)
    _validate(alt, cfg.source)
    return alt


def onnx_provider(name: str) -> str | None:
    """onnxruntime's name of an execution provider given by short or full name.

    Args:
        name: ``cpu``, ``cuda``, ``tensorrt`` (any case) or an onnxruntime name
            such as ``CUDAExecutionProvider`` (see :data:`ONNX_PROVIDERS`).

    Returns:
        The full name, or ``None`` for an unknown provider.
    """
    full = ONNX_PROVIDERS.get(name.lower(), name)
    return full if full in ONNX_PROVIDERS.values() else None


def _extend_tuple(name: str, value: Any, size: int) -> tuple[float, ...]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != size:
        raise ValueError(f"labeling.extend option {name!r} must be a list of {size} numbers, got {value!r}")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v <= 0:
            raise ValueError(
                f"labeling.extend option {name!r} must hold {size} positive numbers, got {value!r}")
        out.append(float(v))
    return tuple(out)


def check_quality_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Validate ``labeling.quality`` options; returns them merged over :data:`QUALITY_DEFAULTS`.

    Raises:
        ValueError: an unknown name or a bad value (named), or a weights file that does
            not exist.
    """
    if not isinstance(options, Mapping):
        raise ValueError(f"labeling.quality must be a mapping or null, got {options!r}")
    unknown = sorted(set(options) - set(QUALITY_DEFAULTS))
    if unknown:
        raise ValueError(
            f"unknown labeling.quality option(s) {unknown}; known: {sorted(QUALITY_DEFAULTS)}")
    out = {**QUALITY_DEFAULTS, **options}
    cut = out["cut"]
    if isinstance(cut, bool) or not isinstance(cut, numbers.Real) or not 0.0 <= float(cut) <= 1.0:
        raise ValueError(f"labeling.quality option 'cut' must be a number in [0, 1], got {cut!r}")
    out["cut"] = float(cut)
    for name, lo, hi in (("high_pt_cut", 0.0, 1.0), ("high_pt", 0.0, math.inf),
                         ("field", 1e-9, math.inf)):
        v = out[name]
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not lo <= float(v) <= hi:
            raise ValueError(f"labeling.quality option {name!r} must be a number in "
                             f"[{lo:g}, {hi:g}], got {v!r}")
        out[name] = float(v)
    m = out["min_hits"]
    if isinstance(m, bool) or not isinstance(m, numbers.Integral) or m < 3:
        raise ValueError(f"labeling.quality option 'min_hits' must be an integer >= 3, got {m!r}")
    out["min_hits"] = int(m)
    w = out["weights"]
    if not isinstance(w, (str, Path)) or not str(w):
        raise ValueError(f"labeling.quality option 'weights' must be a name or a path, got {w!r}")
    if not (path := weights_path(str(w))).is_file():
        raise ValueError(f"labeling.quality option 'weights': weights file {str(path)!r} does not exist")
    return out


def check_extend_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Validate ``labeling.extend`` options; returns them merged over :data:`EXTEND_DEFAULTS`.

    Raises:
        ValueError: naming the option (unknown name, wrong type or range).
    """
    unknown = sorted(set(options) - set(EXTEND_DEFAULTS))
    if unknown:
        raise ValueError(
            f"unknown labeling.extend option(s) {unknown}; known: {sorted(EXTEND_DEFAULTS)}")
    out = dict(EXTEND_DEFAULTS)
    out.update(options)
    for name in ("fit_min", "move_max", "merge_min", "per_layer", "passes", "pair_grow",
                 "stitch_max"):
        v = out[name]
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0:
            raise ValueError(f"labeling.extend option {name!r} must be an integer >= 0, got {v!r}")
        out[name] = int(v)
    if out["passes"] < 1:
        raise ValueError(f"labeling.extend option 'passes' must be >= 1, got {out['passes']}")
    if out["fit_min"] < 2:
        raise ValueError(f"labeling.extend option 'fit_min' must be >= 2, got {out['fit_min']}")
    v = out["merge_frac"]
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not 0 < float(v) <= 1:
        raise ValueError(f"labeling.extend option 'merge_frac' must be in (0, 1], got {v!r}")
    v = out["kappa_max"]
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v <= 0:
        raise ValueError(f"labeling.extend option 'kappa_max' must be a number > 0, got {v!r}")
    out["kappa_max"] = float(v)
    v = out["grow_z"]
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v < 0:
        raise ValueError(f"labeling.extend option 'grow_z' must be a number >= 0, got {v!r}")
    out["merge_frac"], out["grow_z"] = float(out["merge_frac"]), float(out["grow_z"])
    v = out["refit"]
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v < 0:
        raise ValueError(f"labeling.extend option 'refit' must be a number >= 0, got {v!r}")
    out["refit"] = float(v)
    for name, low in (("stitch_search", 1.0), ("stitch_tol", 0.0)):
        v = out[name]
        if (isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v)
                or v < low or (low == 0.0 and v == 0.0)):
            raise ValueError(f"labeling.extend option {name!r} must be a number "
                             f"{'>= 1' if low else '> 0'}, got {v!r}")
        out[name] = float(v)
    out["tol_xy"] = _extend_tuple("tol_xy", out["tol_xy"], 3)
    out["tol_z"] = _extend_tuple("tol_z", out["tol_z"], 3)
    out["regions"] = _extend_tuple("regions", out["regions"], 2)
    if out["regions"][0] >= out["regions"][1]:
        raise ValueError(f"labeling.extend option 'regions' must increase, got {list(out['regions'])}")
    return out


def _validate_walk_options(options: Mapping[str, Any], where: str) -> None:
    """The walk's option values (its names are checked with every backend's)."""
    for key in ("walk_min", "walk_add", "attach"):
        value = options.get(key, 0.5)
        if key == "attach" and value is None:
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not 0.0 <= float(value) <= 1.0
        ):
            raise ConfigError(
                f"{where}: labeling.options.{key} = {value!r} must be a number in [0, 1]"
                + (" (or null: no attach step)" if key == "attach" else "")
            )
    sizes = {}
    for key, default in (("attach_max", 3), ("attach_min", 5)):
        value = options.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{where}: labeling.options.{key} = {value!r} must be an integer >= 1")
        sizes[key] = value
    if sizes["attach_min"] <= sizes["attach_max"]:
        raise ConfigError(
            f"{where}: labeling.options.attach_min = {sizes['attach_min']} must be larger than "
            f"attach_max = {sizes['attach_max']} (a track that takes hits must not give any)"
        )


def _validate(cfg: PipelineConfig, where: str) -> None:
    def positive(value: float, key: str, strict: bool = True) -> None:
        if value < 0 or (strict and value == 0):
            raise ConfigError(f"{where}: {key} = {value!r} must be {'>' if strict else '>='} 0")

    if cfg.kind == "noop":
        return
    stages = (
        ("edges", cfg.edges.backend, cfg.edges.options, EDGE_BACKEND_OPTIONS, "an edge"),
        ("labeling", cfg.labeling.backend, cfg.labeling.options, LABEL_BACKEND_OPTIONS, "a labeling"),
    )
    for key, backend, options, table, what in stages:
        if backend not in table:
            raise ConfigError(
                f"{where}: {key}.backend = {backend!r} is not {what} backend; "
                f"available: {sorted(table)}"
            )
        bad = sorted(set(options) - table[backend])
        if bad:
            raise ConfigError(
                f"{where}: {key}.options: unknown option(s) {bad} for backend {backend!r}; "
                f"allowed: {sorted(table[backend])}"
            )
    if cfg.labeling.backend == "walk":
        _validate_walk_options(cfg.labeling.options, where)
    if cfg.labeling.extend is not None:
        try:
            check_extend_options(cfg.labeling.extend)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    if cfg.labeling.quality is not None:
        try:
            check_quality_options(cfg.labeling.quality)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    if cfg.labeling.prune not in PRUNE_MODES:
        raise ConfigError(
            f"{where}: labeling.prune = {cfg.labeling.prune!r} is not a prune mode; "
            f"available: {list(PRUNE_MODES)}"
        )
    for section in ("embedding", "filter", "gnn"):
        sub = getattr(cfg, section)
        positive(sub.hidden, f"{section}.hidden")
        if sub.weights is not None and not (path := weights_path(sub.weights)).is_file():
            raise ConfigError(
                f"{where}: {section}.weights: weights file {str(path)!r} does not exist"
            )
    positive(cfg.embedding.layers, "embedding.layers")
    positive(cfg.embedding.output_dim, "embedding.output_dim")
    positive(cfg.filter.layers, "filter.layers")
    positive(cfg.filter.chunk_size, "filter.chunk_size")
    positive(cfg.embedding.chunk_size, "embedding.chunk_size")
    positive(cfg.gnn.chunk_size, "gnn.chunk_size")
    positive(cfg.gnn.iterations, "gnn.iterations", strict=False)
    positive(cfg.gnn.mlp_layers, "gnn.mlp_layers")
    if not 0.0 < cfg.edges.radius <= 2.0:
        raise ConfigError(
            f"{where}: edges.radius = {cfg.edges.radius!r} must be in (0, 2] "
            "(the embedding is L2-normalised)"
        )
    if cfg.edges.k_max is not None:
        positive(cfg.edges.k_max, "edges.k_max")
    positive(cfg.edges.max_edges_per_hit, "edges.max_edges_per_hit")
    for key, value in (("filter.cut", cfg.filter.cut), ("labeling.cut", cfg.labeling.cut)):
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"{where}: {key} = {value!r} must be in [0, 1)")
    _validate_onnx(cfg.onnx, where)
    _validate_no_cells(cfg, where)


def _validate_no_cells(cfg: PipelineConfig, where: str) -> None:
    if cfg.no_cells is None:
        return
    for section, keys in cfg.no_cells.items():
        allowed = NO_CELLS_KEYS.get(section)
        if allowed is None:
            raise ConfigError(
                f"{where}: no_cells.{section}: not a section events without cells may change; "
                f"allowed: {sorted(NO_CELLS_KEYS)}"
            )
        if not isinstance(keys, Mapping):
            raise ConfigError(f"{where}: no_cells.{section} must be a mapping, "
                              f"got {type(keys).__name__}")
        bad = sorted(set(keys) - set(allowed))
        if bad:
            raise ConfigError(
                f"{where}: no_cells.{section}: {bad} may not change for events without cells "
                f"(the models' inputs stay the same); allowed: {list(allowed)}"
            )
    try:
        no_cells_config(cfg)
    except ConfigError as exc:
        why = str(exc).removeprefix(f"{where}: ")  # named once, below
        raise ConfigError(f"{where}: no_cells (events without cells): {why}") from exc


def _validate_onnx(onnx: OnnxConfig, where: str) -> None:
    if onnx.providers is not None:
        if not onnx.providers:
            raise ConfigError(f"{where}: onnx.providers must not be empty (or null: automatic)")
        for i, name in enumerate(onnx.providers):
            if onnx_provider(name) is None:
                raise ConfigError(
                    f"{where}: onnx.providers[{i}]: unknown onnxruntime execution provider "
                    f"{name!r}; known: {sorted(ONNX_PROVIDERS)} "
                    f"(or {sorted(ONNX_PROVIDERS.values())})"
                )
    if onnx.threads is not None and onnx.threads < 1:
        raise ConfigError(f"{where}: onnx.threads = {onnx.threads!r} must be >= 1 (or null)")
    if not 16 <= onnx.opset <= 23:
        raise ConfigError(
            f"{where}: onnx.opset = {onnx.opset!r} must be in [16, 23] "
            "(the GNN's scatter-add needs ScatterND with reduction, opset 16)"
        )
    if onnx.dir is not None:
        path = Path(onnx.dir).expanduser()
        if not path.is_dir():
            raise ConfigError(
                f"{where}: onnx.dir: {str(path)!r} is not a directory "
                "(write one with `python -m trkx_ray.export --out DIR`, or use null to export "
                "on the fly)"
            )
        missing = [
            n for n in (ONNX_MANIFEST, *ONNX_MODEL_FILES.values()) if not (path / n).is_file()
        ]
        if missing:
            raise ConfigError(
                f"{where}: onnx.dir: {str(path)!r} lacks {missing} "
                "(write it with `python -m trkx_ray.export --out DIR`)"
            )


def _yaml_error_line(exc: Exception) -> str:
    """A YAML parse error on one line: the problem and where (1-based line, column)."""
    problem = getattr(exc, "problem", None)
    mark = getattr(exc, "problem_mark", None)
    if problem and mark is not None:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    return " ".join(str(exc).split())


def _check_duplicate_keys(text: str) -> None:
    """Raise ``yaml.YAMLError`` for a key given twice in one mapping (plain YAML keeps the
    last silently, so a duplicated section would override the first unseen). Composes the
    node graph only (``SafeLoader``), nothing is constructed."""
    import yaml

    root = yaml.compose(text, Loader=yaml.SafeLoader)
    stack = [root] if root is not None else []
    while stack:
        node = stack.pop()
        if isinstance(node, yaml.MappingNode):
            seen: dict[tuple[str, str], Any] = {}
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode):
                    ident = (key.tag, key.value)
                    if ident in seen:
                        raise yaml.constructor.ConstructorError(
                            "while constructing a mapping", node.start_mark,
                            f"duplicate key {key.value!r} (first at line {seen[ident].line + 1})",
                            key.start_mark)
                    seen[ident] = key.start_mark
                stack.append(value)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML configuration file (safe loading, duplicate keys refused) that must
    hold a mapping.

    Raises:
        ConfigError: unreadable file, invalid YAML (with line and column; a key given
            twice in one mapping) or not a mapping, naming the file.
    """
    import yaml

    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read pipeline configuration: {exc}") from exc
    try:
        _check_duplicate_keys(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {_yaml_error_line(exc)}") from exc
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: a pipeline configuration must be a mapping")
    return dict(data)


def _resolve_extends(data: dict[str, Any], path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    """Merge a YAML file's keys over the configuration it ``extends`` (recursively).

    ``extends: NAME`` names a shipped configuration or a YAML path (relative
    to the extending file's directory); the file's keys override the base's.
    """
    if "extends" not in data:
        return data
    base_name = data.pop("extends")
    if not isinstance(base_name, str) or not base_name:
        raise ConfigError(f"{path}: extends = {base_name!r} must be a configuration name or path")
    candidate = Path(base_name).expanduser()
    if candidate.suffix in (".yaml", ".yml") or len(candidate.parts) > 1:
        base_path = candidate if candidate.is_absolute() else path.parent / candidate
    else:
        base_path = CONFIG_DIR / f"{base_name}.yaml"
    if not base_path.is_file():
        raise ConfigError(
            f"{path}: extends = {base_name!r}: no such configuration "
            f"(shipped: {available_configs()}, or a path to a .yaml file)"
        )
    resolved = base_path.resolve()
    if resolved in seen or resolved == path.resolve():
        raise ConfigError(f"{path}: extends = {base_name!r} forms a cycle")
    base = _resolve_extends(read_yaml(base_path), base_path, (*seen, path.resolve()))
    base.pop("name", None)
    return merge_overrides(base, data)


def _drop_stale_options(data: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Backend options belong to their backend: an override that switches ``edges`` or
    ``labeling`` to another backend drops the old backend's options (new ones, if given,
    are merged in afterwards)."""
    out = dict(data)
    for section in ("edges", "labeling"):
        new = overrides.get(section)
        old = out.get(section)
        if not isinstance(new, Mapping) or not isinstance(old, Mapping):
            continue
        if "backend" in new and new["backend"] != old.get("backend"):
            out[section] = {**old, "options": {}}
    return out


def load_config(
    source: str | Path | Mapping[str, Any] | PipelineConfig = "default",
    overrides: Mapping[str, Any] | None = None,
) -> PipelineConfig:
    """Load and validate a pipeline configuration.

    Args:
        source: a YAML path, a shipped configuration name (``default``,
            ``noop``), a nested dict, or a :class:`PipelineConfig`.
        overrides: nested dict merged on top of ``source`` before validation,
            e.g. ``{"edges": {"backend": "faiss"}, "precision": "fp32"}``.

    Returns:
        The frozen, validated configuration.

    Raises:
        ConfigError: naming the key (``section.key``) and the source file.
    """
    if isinstance(source, PipelineConfig):
        where = source.source
        data = source.to_dict()
    elif isinstance(source, Mapping):
        where = "<dict>"
        data = dict(source)
    elif isinstance(source, (str, Path)):
        text = str(source)
        path = Path(text).expanduser()
        if path.suffix in (".yaml", ".yml") or len(path.parts) > 1:
            if not path.is_file():
                raise ConfigError(f"pipeline configuration file {text!r} does not exist")
        else:
            path = CONFIG_DIR / f"{text}.yaml"
            if not path.is_file():
                raise ConfigError(
                    f"unknown pipeline configuration {text!r}; shipped: {available_configs()} "
                    "(or give a path to a .yaml file)"
                )
        where = str(path)
        data = _resolve_extends(read_yaml(path), path, ())
        data.setdefault("name", path.stem)
    else:
        raise ConfigError(
            f"pipeline configuration must be a path, name, dict or PipelineConfig, "
            f"got {type(source).__name__}"
        )
    if overrides:
        data = _drop_stale_options(data, overrides)
        data = merge_overrides(data, overrides)
    cfg = build_dataclass(PipelineConfig, data, where)
    cfg = dataclasses.replace(cfg, source=where)
    _validate(cfg, where)
    return cfg
