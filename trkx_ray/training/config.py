"""Typed training configuration: ``configs/train/*.yaml`` -> frozen dataclasses.

The model architectures come from a pipeline configuration (``pipeline:``,
default ``default``) so that trained weights always fit the pipeline that
loads them; this file holds only what training needs on top: data, optimiser
and loss settings per stage. Unknown keys and wrong types raise
:class:`~trkx_ray.pipeline.config.ConfigError` naming the key and file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trkx_ray.pipeline.config import ConfigError, build_dataclass, merge_overrides, read_yaml

__all__ = [
    "DataConfig",
    "EmbeddingTrainConfig",
    "FilterTrainConfig",
    "GNNTrainConfig",
    "TRAIN_CONFIG_DIR",
    "TrainConfig",
    "load_train_config",
]

TRAIN_CONFIG_DIR: Path = Path(__file__).resolve().parent.parent / "configs" / "train"


@dataclass(frozen=True)
class DataConfig:
    """Where training events come from.

    Attributes:
        input: a TrackML directory (with truth) or ``None`` to simulate.
        pileup: pile-up of simulated events.
        train_events: number of training events.
        val_events: number of validation events (simulated with other seeds,
            or the last ones of ``input``).
        train_seed: simulated training event ``i`` uses seed ``train_seed + i``.
        val_seed: simulated validation event ``i`` uses seed ``val_seed + i``.
        crop_width: training steps see hits in a random azimuthal window of
            this width (radians), which keeps the local hit density of the full
            event at a fraction of the cost; ``>= 6.3`` uses whole events.
    """

    input: str | None = None
    pileup: float = 200.0
    train_events: int = 8
    val_events: int = 1
    train_seed: int = 1000
    val_seed: int = 900000
    crop_width: float = 1.0
    cells: bool = True


@dataclass(frozen=True)
class EmbeddingTrainConfig:
    """Metric learning with a hinge loss and hard-negative mining.

    Attributes:
        epochs: number of epochs.
        steps_per_epoch: optimiser steps per epoch (one cropped event each).
        lr: Adam learning rate (cosine-decayed to ``lr / 20``).
        margin: hinge margin (embedding units).
        radius: radius of the inference graph that the filter and GNN train on
            and that goes into the written pipeline configuration; ``None`` =
            ``margin``. A radius above the margin buys edge efficiency for edges.
        hard_pairs: at most this many mined pairs (radius graph of the current
            embedding at ``margin * mine_factor``) per step.
        mine_factor: mining radius / margin.
        max_neighbours: the mining radius shrinks so that a typical hit has at
            most this many mined neighbours (guards degenerate early embeddings).
        random_pairs: random pairs per step (mostly negatives).
        global_hits: hits sampled from outside the step's azimuthal window and
            added to it, so that mining and random pairs also separate distant
            regions of the detector.
        weight_negative: weight of the negative term.
        low_pt: positives of particles below this pT (GeV) get ``low_pt_weight``.
        low_pt_weight: weight of low-pT positives.
        shape_dropout: with ``embedding.cluster_shape`` on, the fraction of steps that
            see their event as one without cells (every cluster shape marked absent),
            so that one embedding serves events with and without cells.
    """

    epochs: int = 8
    steps_per_epoch: int = 60
    lr: float = 3e-3
    margin: float = 0.1
    radius: float | None = None
    hard_pairs: int = 400000
    mine_factor: float = 1.2
    max_neighbours: int = 48
    random_pairs: int = 200000
    global_hits: int = 10000
    weight_negative: float = 1.0
    low_pt: float = 0.5
    low_pt_weight: float = 0.5
    shape_dropout: float = 0.3


@dataclass(frozen=True)
class FilterTrainConfig:
    """Edge classifier on the embedding graph, class-balanced BCE.

    Attributes:
        epochs: number of epochs.
        steps_per_epoch: optimiser steps per epoch.
        lr: Adam learning rate (cosine-decayed).
        batch_edges: edges per step (sampled from one event's graph).
        pos_weight: weight of true edges in the BCE; ``None`` = #neg / #pos.
        shape_dropout: with ``filter.cluster_shape`` on, the fraction of steps that see
            their event as one without cells (every cluster shape marked absent), so
            that one filter serves events with and without cells.
    """

    epochs: int = 6
    steps_per_epoch: int = 80
    lr: float = 3e-3
    batch_edges: int = 200000
    pos_weight: float | None = None
    shape_dropout: float = 0.3


@dataclass(frozen=True)
class GNNTrainConfig:
    """Interaction network on the filtered graph, class-balanced BCE.

    Attributes:
        epochs: number of epochs.
        steps_per_epoch: optimiser steps per epoch (one cropped graph each).
        lr: Adam learning rate (cosine-decayed).
        pos_weight: weight of true edges; ``None`` = #neg / #pos.
        crop_width: azimuthal window of one step, radians (message passing needs
            context, so wider than the embedding's).
        shape_dropout: with ``gnn.cluster_shape`` on, the fraction of steps that see
            their window as an event without cells (as the filter's).
        bf16_fraction: the fraction of steps whose forward pass runs under bf16
            autocast, as the pipeline runs the GNN at ``precision: bf16`` (the weights
            and the optimiser stay float32): the net learns scores that bf16 rounding
            does not move (docs/training.md, "Session 22"). ``0`` draws nothing, so a
            configuration without it trains exactly as before.
    """

    epochs: int = 6
    steps_per_epoch: int = 60
    lr: float = 2e-3
    pos_weight: float | None = None
    crop_width: float = 1.5
    shape_dropout: float = 0.3
    bf16_fraction: float = 0.0


@dataclass(frozen=True)
class TrainConfig:
    """A whole training configuration.

    Attributes:
        name: configuration name.
        pipeline: pipeline configuration (name or path) giving the model shapes,
            the filter cut and the labeling settings.
        seed: seed of everything random in training.
        threads: torch threads (``0`` = torch's default).
        data: where events come from.
        embedding: embedding stage settings.
        filter: filter stage settings.
        gnn: GNN stage settings.
        source: the file the configuration came from.
    """

    name: str = "default"
    pipeline: str = "default"
    seed: int = 0
    threads: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    embedding: EmbeddingTrainConfig = field(default_factory=EmbeddingTrainConfig)
    filter: FilterTrainConfig = field(default_factory=FilterTrainConfig)
    gnn: GNNTrainConfig = field(default_factory=GNNTrainConfig)
    source: str = "<defaults>"


def load_train_config(
    source: str | Path | Mapping[str, Any] = "default",
    overrides: Mapping[str, Any] | None = None,
) -> TrainConfig:
    """Load a training configuration (name in ``configs/train``, YAML path or dict).

    Raises:
        ConfigError: unknown key, wrong type or value, missing file.
    """
    if isinstance(source, Mapping):
        where, data = "<dict>", dict(source)
    else:
        path = Path(str(source)).expanduser()
        if path.suffix not in (".yaml", ".yml") and len(path.parts) == 1:
            path = TRAIN_CONFIG_DIR / f"{source}.yaml"
        if not path.is_file():
            shipped = sorted(p.stem for p in TRAIN_CONFIG_DIR.glob("*.yaml"))
            raise ConfigError(f"training configuration {str(source)!r} not found; shipped: {shipped}")
        where, data = str(path), read_yaml(path)
        data.setdefault("name", path.stem)
    if overrides:
        data = merge_overrides(data, overrides)
    cfg = build_dataclass(TrainConfig, data, where)
    for key, value in (
        ("data.train_events", cfg.data.train_events),
        ("data.val_events", cfg.data.val_events),
        ("embedding.margin", cfg.embedding.margin),
        ("filter.batch_edges", cfg.filter.batch_edges),
    ):
        if value <= 0:
            raise ConfigError(f"{where}: {key} = {value!r} must be > 0")
    for key, frac in (("embedding.shape_dropout", cfg.embedding.shape_dropout),
                      ("filter.shape_dropout", cfg.filter.shape_dropout),
                      ("gnn.shape_dropout", cfg.gnn.shape_dropout),
                      ("gnn.bf16_fraction", cfg.gnn.bf16_fraction)):
        if not 0.0 <= frac <= 1.0:
            raise ConfigError(f"{where}: {key} = {frac!r} must be in [0, 1]")
    return TrainConfig(**{**cfg.__dict__, "source": where})
