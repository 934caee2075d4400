"""The end-to-end inference :class:`Pipeline` and its :class:`PipelineResult`.

``Pipeline.from_config("default", device="cpu")(event)`` runs one event
through the stages

``data_loading`` (features to the device) -> ``embedding`` ->
``build_edges`` (radius graph, oriented inner -> outer) -> ``filtering``
(chunked filter MLP + score cut) -> ``gnn`` (interaction network) ->
``labeling`` (connected components / DBSCAN) -> one ``track_id`` per hit,

timing each stage in seconds (``time.perf_counter``; on CUDA the stream is
synchronised at stage boundaries only when ``profile=True``, otherwise only the
total is timed). Mixed precision
(``precision: bf16|fp16``, or what ``auto`` picks for the device:
:mod:`trkx_ray.hardware`) wraps the three models in ``torch.autocast``.
With ``runtime: onnx`` the three models run in onnxruntime sessions instead
(:mod:`trkx_ray.pipeline.onnx_runtime`; fp32, exported on the fly by
:mod:`trkx_ray.pipeline.export` when needed).
The ``noop`` kind runs no model (one track per hit) to measure the overhead
of whatever drives the pipeline.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from trkx_ray.events.event import Event, EventFormatError
from trkx_ray.pipeline.config import ConfigError, PipelineConfig, load_config, no_cells_config
from trkx_ray.pipeline.features import cluster_shape, hit_features, random_event

__all__ = [
    "STAGES",
    "ModelSet",
    "Pipeline",
    "PipelineError",
    "PipelineResult",
    "orient_edges",
    "resolve_device",
]

log = logging.getLogger(__name__)

#: Timed stages, in order (``total`` is added to every result's timings).
STAGES: tuple[str, ...] = (
    "data_loading",
    "embedding",
    "build_edges",
    "filtering",
    "gnn",
    "labeling",
)
#: Stages whose graphs are counted in ``PipelineResult.num_edges``.
GRAPH_STAGES: tuple[str, ...] = ("build_edges", "filtering", "gnn")

_DEVICE_RE = re.compile(r"^(cpu|cuda(:\d+)?)$")
_DENSITY_SAMPLE = 128


class ModelSet(NamedTuple):
    """One set of the three models (torch modules or onnxruntime sessions)."""

    embedding: Any
    filter: Any
    gnn: Any
    onnx: Any  # the OnnxModels behind them, or None for torch


def _changes(overrides: dict[str, Any], prefix: str = "") -> str:
    """``section.key=value, ...`` of a nested override mapping, for messages."""
    return ", ".join(_changes(v, f"{prefix}{k}.") if isinstance(v, dict) else f"{prefix}{k}={v}"
                     for k, v in overrides.items())


class PipelineError(ValueError):
    """The pipeline cannot process an input (names the event and the reason)."""


@dataclass
class PipelineResult:
    """The output of one event.

    Attributes:
        event_id: the event's number.
        hit_id: TrackML hit id of each hit (int32), in the event's order.
        track_id: reconstructed track label of each hit (int64, 0..C-1).
        timings: seconds per stage (keys :data:`STAGES` and ``total``).
        num_edges: edges after ``build_edges`` (candidates), ``filtering``
            (kept by the filter cut) and ``gnn`` (kept by the labeling cut).
        graphs: with ``keep_graphs=True``, numpy ``{"edges": 2 x E, "scores": E}``
            per stage: ``build_edges`` = candidate edges with their filter
            scores, ``filtering`` = edges kept by the filter with their GNN
            scores, ``gnn`` = edges kept by the labeling cut with their GNN
            scores. Edges are oriented inner (smaller r) -> outer.
    """

    event_id: int
    hit_id: np.ndarray
    track_id: np.ndarray
    timings: dict[str, float]
    num_edges: dict[str, int]
    graphs: dict[str, dict[str, np.ndarray]] | None = field(default=None, repr=False)

    @property
    def num_hits(self) -> int:
        """Number of hits."""
        return int(self.track_id.shape[0])

    @property
    def num_tracks(self) -> int:
        """Number of distinct track labels."""
        return int(np.unique(self.track_id).size)

    def to_submission(self) -> dict[str, np.ndarray]:
        """TrackML submission columns ``event_id`` (int64), ``hit_id`` (int32), ``track_id`` (int64)."""
        return {
            "event_id": np.full(self.num_hits, self.event_id, dtype=np.int64),
            "hit_id": np.asarray(self.hit_id, dtype=np.int32),
            "track_id": np.asarray(self.track_id, dtype=np.int64),
        }

    def write_submission(self, out_dir: str | Path) -> Path:
        """Write ``event{ID:09d}-submission.csv`` via :func:`trkx_ray.events.write_submission`."""
        from trkx_ray.events import io

        return io.write_submission(self.event_id, self.hit_id, self.track_id, out_dir)


def resolve_device(device: Any) -> Any:
    """Turn ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` into a ``torch.device``, checking it exists.

    Raises:
        PipelineError: malformed name, or CUDA requested but unavailable.
    """
    import torch

    if isinstance(device, torch.device):
        name = str(device)
    elif isinstance(device, str):
        name = device.strip()
    else:
        raise PipelineError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if not _DEVICE_RE.match(name):
        raise PipelineError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {name!r}")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise PipelineError(
                f"device {name!r} requested but CUDA is not available "
                f"(torch {torch.__version__}, CUDA build: {torch.version.cuda}); use device='cpu'"
            )
        count = torch.cuda.device_count()
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        if index >= count:
            raise PipelineError(f"device {name!r} requested but only {count} CUDA device(s) exist")
        dev = torch.device("cuda", index)
    return dev


def _check_coordinates(event: Event) -> None:
    """Refuse hits with missing or non-finite ``x``, ``y``, ``z`` (mm) before any model runs.

    Events from :func:`trkx_ray.events.load_event` are already validated; this
    guards events built in memory (or edited after loading).

    Raises:
        EventFormatError: names the event, the column, the row and the hit id.
    """
    where = event.source or f"event {event.event_id}"
    hit_id = np.asarray(event.hits["hit_id"])
    for col in ("x", "y", "z"):
        if col not in event.hits:
            raise EventFormatError(f"{where}: hits lack column {col!r}")
        values = np.asarray(event.hits[col])
        if values.shape != hit_id.shape:
            raise EventFormatError(
                f"{where}: hits column {col!r} has shape {values.shape}, "
                f"expected {hit_id.shape} (one value per hit_id)"
            )
        if values.dtype.kind != "f":
            continue
        bad = ~np.isfinite(values)
        if bad.any():
            i = int(np.argmax(bad))
            raise EventFormatError(
                f"{where}: hits column {col!r} has a non-finite value ({values[i]}) "
                f"at row {i} (hit_id {int(hit_id[i])})"
            )


def _layer_ids(event: Event) -> np.ndarray | None:
    """One detector-layer id per hit (``volume_id * 1000 + layer_id``), or ``None`` without them."""
    hits = event.hits
    if "volume_id" not in hits or "layer_id" not in hits:
        return None
    return (np.asarray(hits["volume_id"]).astype(np.int64) * 1000
            + np.asarray(hits["layer_id"]).astype(np.int64))


def orient_edges(edges: Any, r: Any) -> Any:
    """Orient each edge from the hit with smaller r to the larger (ties: smaller index first).

    Args:
        edges: ``2 x E`` int64 tensor of canonical pairs (``i < j``).
        r: ``N`` tensor of transverse radii (any unit).

    Returns:
        ``2 x E`` int64 tensor ``(src, dst)`` with ``r[src] <= r[dst]``.
    """
    import torch

    i, j = edges[0], edges[1]
    ri, rj = r.index_select(0, i), r.index_select(0, j)
    swap = (ri > rj) | ((ri == rj) & (i > j))
    return torch.stack([torch.where(swap, j, i), torch.where(swap, i, j)])


class _Timer:
    """Stage timer.

    On CUDA, kernels run asynchronously: a stage's wall time is only its own when
    the stream is synchronised at its boundaries, which costs throughput. So with
    ``profile=True`` it synchronises at every boundary, and with ``profile=False``
    it does not and reports the stages as NaN (not timed); the total is always
    measured (the result ends on the host, which waits for the device). On the CPU
    nothing is asynchronous: every stage is timed either way.
    """

    def __init__(self, device: Any, profile: bool) -> None:
        cuda = device.type == "cuda"
        self.sync = profile and cuda
        self.exact = profile or not cuda
        self.device = device
        self.timings: dict[str, float] = {}
        self._sync()
        self.start = self.last = time.perf_counter()

    def _sync(self) -> None:
        if self.sync:
            import torch

            torch.cuda.synchronize(self.device)

    def lap(self, stage: str) -> None:
        self._sync()
        now = time.perf_counter()
        self.timings[stage] = now - self.last if self.exact else float("nan")
        self.last = now

    def finish(self) -> dict[str, float]:
        for stage in STAGES:
            self.timings.setdefault(stage, 0.0 if self.exact else float("nan"))
        self.timings["total"] = self.last - self.start
        return {k: self.timings[k] for k in (*STAGES, "total")}


class Pipeline:
    """One Exa.TrkX inference pipeline on one device.

    Build with :meth:`from_config`; call on an :class:`~trkx_ray.events.Event`.

    Args:
        config: the validated configuration.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a ``torch.device``.
    """

    def __init__(self, config: PipelineConfig, device: Any = "cpu") -> None:
        self.config = config
        self.device = resolve_device(device)
        if (
            config.precision == "fp16"
            and self.device.type != "cuda"
            and config.kind != "noop"
            and config.runtime == "torch"
        ):
            raise ConfigError(
                f"{config.source}: precision = 'fp16' needs a CUDA device; use 'auto' or 'fp32' "
                "on CPU"
            )
        from trkx_ray.hardware import resolve_precision

        #: the precision the models run at (``auto`` resolved for this device).
        self.precision = (
            "fp32" if config.kind == "noop"
            else resolve_precision(config.precision, self.device, config.runtime)
        )
        # the three models: torch modules or onnxruntime sessions (None for noop)
        self.embedding: Any = None
        self.filter: Any = None
        self.gnn: Any = None
        self.onnx = None
        if config.kind == "exatrkx":
            if config.runtime == "onnx" and config.precision not in ("fp32", "auto"):
                log.info(
                    "%s: runtime onnx runs the models in fp32 (precision %r applies to torch)",
                    config.source,
                    config.precision,
                )
            models = self._build_models(config)
            self.embedding, self.filter, self.gnn = models.embedding, models.filter, models.gnn
            self.onnx = models.onnx
        #: the configuration and models that run an event without cells (the
        #: configuration's ``no_cells`` section), or None: the ones above (:meth:`models_for`)
        self.no_cells_config: PipelineConfig | None = None
        self.no_cells_models: ModelSet | None = None
        if config.kind == "exatrkx" and (alt := no_cells_config(config)) is not None:
            self.no_cells_config = alt
            try:
                self.no_cells_models = self._build_models(alt)
            except ConfigError as exc:
                raise ConfigError(
                    f"{config.source}: no_cells (events without cells: "
                    f"{_changes(config.no_cells or {})}): {exc}; a configuration with other "
                    "models needs its own no_cells section, or no_cells: null"
                ) from exc
        self._warned_no_cells = False
        self._warned_no_shape = False
        #: the labeling backend used: cugraph degrades to torch CC when not installed
        self.labeling_backend = config.labeling.backend
        if self.labeling_backend == "cugraph":
            import importlib.util

            if importlib.util.find_spec("cugraph") is None:
                log.warning("%s: labeling.backend cugraph is not installed (pip install "
                            "trkx_ray[gpu]); using torch connected components",
                            config.source)
                self.labeling_backend = "torch"

    def _build_models(self, config: PipelineConfig) -> ModelSet:
        """The three models of ``config``: torch modules or onnxruntime sessions."""
        if config.runtime == "onnx":
            from trkx_ray.pipeline.onnx_runtime import OnnxModels

            onnx = OnnxModels.from_config(config, self.device)
            return ModelSet(onnx.embedding, onnx.filter, onnx.gnn, onnx)
        from trkx_ray.pipeline.models import EmbeddingMLP, FilterMLP, InteractionGNN

        return ModelSet(
            EmbeddingMLP.from_config(config.embedding, config.embedding_in_dim).to(self.device),
            FilterMLP.from_config(config.filter, config.filter_node_dim).to(self.device),
            InteractionGNN.from_config(config.gnn, config.gnn_in_dim).to(self.device),
            None,
        )

    def models_for(self, event: Event) -> ModelSet:
        """The models that run ``event``: the no-cells set when it has no cells and the
        configuration has a ``no_cells`` section, else the default set."""
        return self._setup_for(event)[1]

    def config_for(self, event: Event) -> PipelineConfig:
        """The configuration that runs ``event`` (see :meth:`models_for`)."""
        return self._setup_for(event)[0]

    def _setup_for(self, event: Event) -> tuple[PipelineConfig, ModelSet]:
        if self.no_cells_config is not None and self.no_cells_models is not None \
                and not event.cells:
            return self.no_cells_config, self.no_cells_models
        return self.config, ModelSet(self.embedding, self.filter, self.gnn, self.onnx)

    @classmethod
    def from_config(
        cls,
        source: str | Path | dict[str, Any] | PipelineConfig = "default",
        device: Any = "cpu",
        overrides: dict[str, Any] | None = None,
    ) -> Pipeline:
        """Build a pipeline from a config name, YAML path, dict or :class:`PipelineConfig`.

        Args:
            source: see :func:`trkx_ray.pipeline.config.load_config`.
            device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
            overrides: nested dict merged over the configuration.

        Raises:
            ConfigError: invalid configuration (names key and file).
            PipelineError: invalid or unavailable device.
        """
        return cls(load_config(source, overrides), device)

    # ------------------------------------------------------------------ helpers
    def __repr__(self) -> str:
        return (
            f"Pipeline(name={self.config.name!r}, kind={self.config.kind!r}, "
            f"device={str(self.device)!r}, precision={self.precision!r}, "
            f"runtime={self.config.runtime!r})"
        )

    def inputs(self, event: Event) -> dict[str, Any]:
        """The models' per-hit inputs of ``event`` as tensors on the pipeline's device.

        Keys: ``x`` (hit features), ``shape`` (pixel-barrel cluster shapes, or ``None``
        when no model reads them), ``embedding`` and ``gnn`` (those models' inputs:
        features [+ cluster shape]). The filter's input also needs the embedding
        (``models.model_inputs``).
        """
        import torch

        from trkx_ray.pipeline.models import model_inputs

        cfg = self.config
        x = torch.from_numpy(hit_features(event, cfg.features)).to(self.device)
        shape = (torch.from_numpy(cluster_shape(event)).to(self.device)
                 if cfg.cluster_shape else None)
        return {
            "x": x,
            "shape": shape,
            "embedding": model_inputs(x, None, shape if cfg.embedding.cluster_shape else None),
            "gnn": model_inputs(x, None, shape if cfg.gnn.cluster_shape else None),
        }

    def _autocast(self) -> Any:
        import torch

        precision = self.precision
        if precision == "fp32" or self.onnx is not None:
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def _check_density(self, emb: Any, event: Event, config: PipelineConfig | None = None) -> None:
        """Refuse embeddings whose radius graph would be far too dense."""
        import torch

        n = emb.shape[0]
        cfg = (config or self.config).edges
        if n < 2:
            return
        m = min(n, _DENSITY_SAMPLE)
        idx = torch.linspace(0, n - 1, m, device=emb.device).long()
        sample = emb.index_select(0, idx)
        # 16 sampled hits at a time: a 128 x N distance matrix at once is ~70 MB of fresh
        # pages at pile-up 200, which cost more than the distances (~0.1 s on one core)
        within = sum(int((torch.cdist(sample[i : i + 16], emb).square_() < cfg.radius**2)
                         .sum().item()) for i in range(0, m, 16))
        degree = float(within - m) / m
        if cfg.k_max is not None:
            degree = min(degree, float(cfg.k_max))
        if degree > cfg.max_edges_per_hit:
            where = event.source or f"event {event.event_id}"
            raise PipelineError(
                f"{where}: the embedding graph would have about {degree:.0f} neighbours per hit "
                f"(estimated on {m} hits), above edges.max_edges_per_hit = "
                f"{cfg.max_edges_per_hit}; lower edges.radius (now {cfg.radius}), set edges.k_max, "
                "or use trained embedding weights"
            )

    def _check_built_degree(self, num_edges: int, n: int, event: Event,
                            config: PipelineConfig | None = None) -> None:
        """Refuse a built graph far denser than the sampled estimate allowed.

        :meth:`_check_density` estimates the degree on a sample of hits, which
        can miss dense clusters. The filter and GNN need memory in proportion
        to the number of edges (the GNN keeps ``hidden`` floats per edge), so
        a graph whose actual mean degree exceeds twice the guard (``2 *
        max_edges_per_hit``, or ``4 * k_max`` when a larger cap allows more)
        is refused here, before those stages run.

        Raises:
            PipelineError: names the event, the edge count and the guard.
        """
        cfg = (config or self.config).edges
        limit = 2 * max(cfg.max_edges_per_hit, 2 * (cfg.k_max or 0))
        degree = 2.0 * num_edges / max(n, 1)
        if degree > limit:
            where = event.source or f"event {event.event_id}"
            raise PipelineError(
                f"{where}: the embedding graph has {num_edges} edges, {degree:.0f} neighbours per "
                f"hit on average, over twice edges.max_edges_per_hit = {cfg.max_edges_per_hit} "
                f"(the sampled estimate missed dense regions); lower edges.radius (now "
                f"{cfg.radius}) or set edges.k_max"
            )

    def _filter_scores(self, nodes: Any, edges: Any, models: ModelSet | None = None) -> Any:
        import torch

        model = self.filter if models is None else models.filter
        with self._autocast():
            logits = model(nodes, edges, chunk_size=self.config.filter.chunk_size)
        return torch.sigmoid(logits)

    # ------------------------------------------------------------------ running
    def __call__(
        self, event: Event, keep_graphs: bool = False, profile: bool = True
    ) -> PipelineResult:
        """Run one event end to end.

        Args:
            event: the event (hits required; cells used for cell features).
            keep_graphs: also return each stage's edges and scores as numpy.
            profile: synchronise CUDA at stage boundaries so per-stage timings
                are exact; without it, CUDA stage timings are NaN and only the
                total is timed (no effect on CPU, where every stage is timed).

        Returns:
            The :class:`PipelineResult`.

        Raises:
            EventFormatError: a missing ``hit_id`` / ``x`` / ``y`` / ``z`` column,
                non-finite coordinates or features, or inconsistent cells.
            PipelineError: an embedding graph above ``edges.max_edges_per_hit``
                (estimated before building), or a built graph above twice it.
        """
        import torch

        if not isinstance(event, Event):
            raise PipelineError(f"expected a trkx_ray Event, got {type(event).__name__}")
        if not event.hits or "hit_id" not in event.hits:
            where = event.source or f"event {event.event_id}"
            raise EventFormatError(f"{where}: hits lack column 'hit_id'")
        timer = _Timer(self.device, profile)
        hit_id = np.asarray(event.hits["hit_id"])
        n = int(hit_id.shape[0])
        if self.config.kind == "noop":
            timer.lap("data_loading")
            return PipelineResult(
                event_id=int(event.event_id),
                hit_id=hit_id,
                track_id=np.arange(n, dtype=np.int64),
                timings=timer.finish(),
                num_edges=dict.fromkeys(GRAPH_STAGES, 0),
                graphs={} if keep_graphs else None,
            )

        cfg = self.config
        from trkx_ray.pipeline.edges import build_edges
        from trkx_ray.pipeline.extend import extend_tracks
        from trkx_ray.pipeline.labeling import label_hits
        from trkx_ray.pipeline.models import model_inputs
        from trkx_ray.pipeline.quality import apply_quality

        if cfg.features.cell_features and not event.cells and not self._warned_no_cells:
            log.warning("%s has no cells: cell features are zero", event.source or event.event_id)
            self._warned_no_cells = True
        if not event.cells and not self._warned_no_shape and (
                cfg.cluster_shape or self.no_cells_models is not None):
            how = ("and with the configuration's no_cells changes: "
                   + _changes(cfg.no_cells or {}) if self.no_cells_config is not None
                   else "trained for that too")
            log.warning("%s has no cells: the models run without pixel cluster shapes (%s; "
                        "further events without cells are not reported)",
                        event.source or event.event_id, how)
            self._warned_no_shape = True
        cfg, models = self._setup_for(event)
        graphs: dict[str, dict[str, np.ndarray]] = {}
        with torch.inference_mode():
            # -- data_loading: features -> device
            _check_coordinates(event)
            inputs = self.inputs(event)
            x, shape, x_emb, x_gnn = (inputs[k] for k in ("x", "shape", "embedding", "gnn"))
            r = x[:, 0]
            timer.lap("data_loading")

            # -- embedding
            with self._autocast():
                if n:
                    emb = models.embedding(x_emb, chunk_size=cfg.embedding.chunk_size)
                else:
                    emb = x.new_zeros((0, cfg.embedding.output_dim))
            timer.lap("embedding")

            # -- build_edges: radius graph, oriented inner -> outer
            if n >= 2:
                self._check_density(emb, event, cfg)
                kwargs = dict(cfg.edges.options)
                edges = build_edges(
                    emb,
                    cfg.edges.radius,
                    backend=cfg.edges.backend,
                    k_max=cfg.edges.k_max,
                    **kwargs,
                )
                self._check_built_degree(int(edges.shape[1]), n, event, cfg)
                edges = orient_edges(edges.to(self.device, torch.int64), r)
            else:
                edges = torch.zeros((2, 0), dtype=torch.int64, device=self.device)
            timer.lap("build_edges")

            # -- filtering
            nodes = model_inputs(x, emb if cfg.filter.use_embedding else None,
                                 shape if cfg.filter.cluster_shape else None)
            f_scores = self._filter_scores(nodes, edges, models)
            keep = f_scores > cfg.filter.cut
            f_edges = edges[:, keep]
            if keep_graphs:
                graphs["build_edges"] = {
                    "edges": edges.cpu().numpy(),
                    "scores": f_scores.cpu().numpy(),
                }
            timer.lap("filtering")

            # -- gnn
            if f_edges.shape[1]:
                with self._autocast():
                    g_scores = torch.sigmoid(models.gnn(x_gnn, f_edges,
                                                        chunk_size=cfg.gnn.chunk_size))
            else:
                g_scores = torch.zeros(0, dtype=torch.float32, device=self.device)
            if keep_graphs:
                graphs["filtering"] = {
                    "edges": f_edges.cpu().numpy(),
                    "scores": g_scores.cpu().numpy(),
                }
            timer.lap("gnn")

            # -- labeling
            track_id = label_hits(
                n,
                f_edges,
                g_scores,
                cut=cfg.labeling.cut,
                backend=self.labeling_backend,
                prune=cfg.labeling.prune,
                **dict(cfg.labeling.options),
            )
            if cfg.labeling.extend is not None:
                track_id = extend_tracks(
                    event.hits["x"], event.hits["y"], event.hits["z"], track_id,
                    layer=_layer_ids(event), **dict(cfg.labeling.extend),
                )
            if cfg.labeling.quality is not None:
                track_id = apply_quality(
                    event.hits["x"], event.hits["y"], event.hits["z"], track_id,
                    _layer_ids(event), f_edges, g_scores, cfg.labeling.quality,
                    cfg.labeling.extend,
                )
            timer.lap("labeling")
            n_gnn = int((g_scores > cfg.labeling.cut).sum().item())
            if keep_graphs:
                kept = g_scores > cfg.labeling.cut
                graphs["gnn"] = {
                    "edges": f_edges[:, kept].cpu().numpy(),
                    "scores": g_scores[kept].cpu().numpy(),
                }

        return PipelineResult(
            event_id=int(event.event_id),
            hit_id=hit_id,
            track_id=np.asarray(track_id, dtype=np.int64),
            timings=timer.finish(),
            num_edges={
                "build_edges": int(edges.shape[1]),
                "filtering": int(f_edges.shape[1]),
                "gnn": n_gnn,
            },
            graphs=graphs if keep_graphs else None,
        )

    def warmup(self, event_or_num_hits: Event | int = 5000, repeats: int = 1) -> PipelineResult:
        """Run the pipeline ``repeats`` times untimed (JIT compiles, allocator, autotune).

        Args:
            event_or_num_hits: an event, or a number of hits for a random event.
            repeats: number of runs.

        Returns:
            The last run's result.
        """
        if isinstance(event_or_num_hits, Event):
            event = event_or_num_hits
        else:
            event = random_event(int(event_or_num_hits), seed=12345)
        result = None
        for _ in range(max(int(repeats), 1)):
            result = self(event, profile=True)
        assert result is not None
        return result
