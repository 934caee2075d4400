"""Typed shapes of what the scaling layer passes around: actor answers and the run report.

These are :class:`~typing.TypedDict` s (plain dicts at run time, so they cross Ray and
JSON unchanged); the keys are those of DESIGN.md's run-report **contract** plus the
added ones documented in :mod:`trkx_ray.scaling.report`.

* :class:`ActorInfo`: :meth:`PipelineWorker.info <trkx_ray.scaling.actor.PipelineWorker.info>`.
* :class:`EventResult`: :meth:`PipelineWorker.process
  <trkx_ray.scaling.actor.PipelineWorker.process>`, one per event.
* :class:`FailedEvent`: an entry of :attr:`StreamOutcome.failed
  <trkx_ray.scaling.driver.StreamOutcome.failed>`.
* :class:`RunReport`: :func:`~trkx_ray.scaling.report.build_report`, written by
  ``run --report``.
"""

from __future__ import annotations

from typing import Any, TypedDict

import numpy as np

__all__ = [
    "ActorInfo",
    "ActorReport",
    "EventResult",
    "FailedEvent",
    "Percentiles",
    "ReportedFailure",
    "RunReport",
    "StageStats",
]


class ActorInfo(TypedDict):
    """Where and how an actor runs (``PipelineWorker.info``)."""

    id: int
    kind: str
    device: str
    actor_id: str
    node: str
    host: str
    machine: str
    pid: int
    cores: list[int]
    concurrency: int  # events the actor runs at once
    peak_concurrency: int  # most events seen running at once
    affinity: list[int]
    gpu: list[str]
    gpu_name: str
    threads: dict[str, Any]
    reconstructed: bool
    #: the actor process's resident memory at the call, MiB (None: unreadable).
    rss_mb: float | None
    events: int
    busy_s: float
    build_s: float
    warmup_s: float
    config: Any
    precision: str | None
    cpu_model: str
    cpu_capability: str
    cpu_native_bf16: bool


class _EventResultRequired(TypedDict):
    seq: int
    event_id: int
    actor: int
    pid: int
    #: ``"ExceptionType: message"`` of a failed event, else None.
    error: str | None
    #: the pipeline's time alone, seconds (a failed event: until it failed).
    service_s: float
    #: seconds spent on the physics metrics after the pipeline.
    physics_s: float


class EventResult(_EventResultRequired, total=False):
    """One event's answer from ``PipelineWorker.process`` (the optional keys are
    absent for a failed event; ``hit_id`` / ``track_id`` only when asked for)."""

    num_hits: int
    #: seconds per stage (``total`` included).
    timings: dict[str, float]
    num_edges: dict[str, int]
    #: flattened :func:`trkx_ray.metrics.tracking_metrics` (``/``-joined keys).
    physics: dict[str, float]
    hit_id: np.ndarray
    track_id: np.ndarray


class FailedEvent(TypedDict):
    """A failed event in the driver's outcome."""

    event_id: int
    seq: int
    error: str


class ReportedFailure(TypedDict):
    """A failed event in the report (**contract** ``events_failed`` entry)."""

    event_id: int
    error: str


class Percentiles(TypedDict):
    """``p50``, ``p95`` and ``mean`` of a sample (None when empty), seconds."""

    p50: float | None
    p95: float | None
    mean: float | None


class StageStats(TypedDict):
    """Per-stage timing over the events, seconds."""

    mean_s: float
    p50_s: float
    p95_s: float


class ActorReport(TypedDict):
    """One actor in the report (**contract**: ``id, device, node, cores or gpu,
    events, busy_s``)."""

    id: int
    kind: str
    device: str
    node: str | None
    host: str | None
    pid: int | None
    cores: list[int] | None
    gpu: list[str] | None
    gpu_name: str | None
    torch_threads: int | None
    concurrency: int  # events the actor runs at once
    peak_concurrency: int | None  # most seen at once (None: not asked)
    events: int
    events_failed: int
    busy_s: float
    utilisation: float | None
    restarts: int
    state: str
    build_s: float | None
    warmup_s: float | None
    rss_start_mb: float | None
    rss_end_mb: float | None


class RunReport(TypedDict):
    """The run report of ``run --report`` (see :mod:`trkx_ray.scaling.report`)."""

    events_requested: int
    events_processed: int
    events_failed: list[ReportedFailure]
    complete: bool
    error: str | None
    interrupted: bool
    wall_s: float
    throughput_eps: float
    latency_s: Percentiles
    queue_latency_s: dict[str, float | None]
    stages: dict[str, StageStats]
    mean_hits: float | None
    mean_edges: dict[str, float]
    actors: list[ActorReport]
    restarts: int
    memory: dict[str, float | None]
    physics: dict[str, Any]
    config: dict[str, Any]
    source: dict[str, Any]
    options: dict[str, Any]
    physics_cost_s: dict[str, float]
    hardware: dict[str, Any]
    ray: dict[str, Any]
