"""Ray throughput scaler: one whole pipeline per actor, a streaming driver, reports.

Modules: :mod:`~trkx_ray.scaling.resources` (thread limits, core pinning, placement),
:mod:`~trkx_ray.scaling.actor` (the pipeline actor), :mod:`~trkx_ray.scaling.sources`
(event payload producers), :mod:`~trkx_ray.scaling.driver` (streaming, faults),
:mod:`~trkx_ray.scaling.results` (compact per-event bookkeeping of the driver),
:mod:`~trkx_ray.scaling.report` (the run report). Ray is imported lazily.
"""

from trkx_ray.scaling.actor import PipelineWorker, WorkerSpec, spawn_worker
from trkx_ray.scaling.driver import (
    FaultInjection,
    StreamOutcome,
    WorkerSlot,
    run_scaling,
    start_workers,
    stop_workers,
    stream_events,
    warm_up,
)
from trkx_ray.scaling.report import build_report, format_table, write_report
from trkx_ray.scaling.resources import (
    CoreLease,
    ResourceError,
    ResourcePlan,
    lease_cores,
    plan_resources,
)
from trkx_ray.scaling.results import ResultLog, SeqSet
from trkx_ray.scaling.sources import (
    DirectorySource,
    FreshPutSource,
    PayloadSource,
    SimulatedSource,
    find_event_prefixes,
)

__all__ = [
    "CoreLease",
    "DirectorySource",
    "FaultInjection",
    "FreshPutSource",
    "PayloadSource",
    "PipelineWorker",
    "ResourceError",
    "ResourcePlan",
    "ResultLog",
    "SeqSet",
    "SimulatedSource",
    "StreamOutcome",
    "WorkerSlot",
    "WorkerSpec",
    "build_report",
    "find_event_prefixes",
    "format_table",
    "lease_cores",
    "plan_resources",
    "run_scaling",
    "spawn_worker",
    "start_workers",
    "stop_workers",
    "stream_events",
    "warm_up",
    "write_report",
]
