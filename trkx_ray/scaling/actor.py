"""The Ray actor that owns one whole :class:`~trkx_ray.pipeline.Pipeline`.

:class:`PipelineWorker` is a plain class; :func:`spawn_worker` turns it into a Ray
actor with the resources of its :class:`WorkerSpec`:

* CPU actor: ``num_cpus=K``, ``CUDA_VISIBLE_DEVICES=""`` and thread-pool env vars
  set to ``K`` in its ``runtime_env`` (before any import in the worker process),
  then in the constructor it pins itself to ``K`` cores it leases
  (:func:`~trkx_ray.scaling.resources.lease_cores`) and limits torch/numba threads.
* GPU actor: ``num_gpus=1/A`` (Ray sets ``CUDA_VISIBLE_DEVICES``), ``num_cpus`` host
  cores pinned the same way; the pipeline is built on ``cuda``.

The pipeline is built and warmed up (``Pipeline.warmup`` on a random event) once in
the constructor, never per event.
Events arrive as :meth:`Event.to_payload` dicts (zero-copy from the object store);
the actor returns a small dict: timings, edge counts, physics metrics and, only when
asked, the track ids.

Fault injection (tests, chaos runs): ``fault_exit_after=n`` makes the actor with
``index == fault_actor`` call ``os._exit`` when asked for its ``n+1``-th event
(after ``n`` finished). By default only the first incarnation dies; with
``fault_repeat`` every restart dies again. The driver reads these from
``TRKX_FAULT_EXIT_AFTER``, ``TRKX_FAULT_ACTOR`` and ``TRKX_FAULT_REPEAT``.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from trkx_ray.scaling.resources import (
    apply_thread_limits,
    bundle_core_offset,
    lease_cores,
    machine_key,
    process_rss_mb,
    thread_env,
)

if TYPE_CHECKING:  # pragma: no cover
    from trkx_ray.events.event import Event
    from trkx_ray.scaling.types import ActorInfo, EventResult

__all__ = ["PipelineWorker", "WorkerSpec", "spawn_worker"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerSpec:
    """How to build one actor.

    Attributes:
        index: actor number in the run (0-based), used in reports and fault injection.
        kind: ``"cpu"`` or ``"gpu"``.
        cores: CPU cores pinned (``num_cpus``); for GPU actors the host cores.
        actors_per_gpu: GPU actors sharing one GPU (``num_gpus = 1/actors_per_gpu``).
        config: pipeline config (name, YAML path or dict) for ``Pipeline.from_config``.
        physics: compute tracking metrics in the actor when the event has truth;
            None: yes, except for the ``noop`` pipeline (trivial labels; it measures
            driver overhead).
        fault_exit_after: inject a crash after this many events (None: never).
        fault_actor: index of the actor that crashes.
        fault_repeat: crash again after every restart.
        pin: pin to cores with ``os.sched_setaffinity`` (Linux only).
        profile_every: on CUDA, synchronise at stage boundaries (exact per-stage
            times) on every ``n``-th event only (1: every event, 0: never); the
            other events run unsynchronised and give only their total. CPU
            stages are always timed.
        concurrency: events the actor runs at once (Ray ``max_concurrency``), each
            on ``cores // concurrency`` threads: one pipeline (one copy of the
            weights) serves them all. 1: every event uses all the cores.
    """

    index: int
    kind: str = "cpu"
    cores: int = 1
    actors_per_gpu: int = 1
    config: Any = "noop"
    physics: bool | None = None
    fault_exit_after: int | None = None
    fault_actor: int = 0
    fault_repeat: bool = False
    pin: bool = True
    profile_every: int = 16
    concurrency: int = 1

    @property
    def threads(self) -> int:
        """Threads of one event: the cores shared by the events run at once."""
        return max(max(self.cores, 1) // max(self.concurrency, 1), 1)

    @property
    def device(self) -> str:
        """Torch device of the pipeline."""
        return "cuda" if self.kind == "gpu" else "cpu"


def _as_float_dict(d: Any, prefix: str = "") -> dict[str, float]:
    """Numbers of a (nested) dict, flattened with ``/``-joined keys."""
    if not isinstance(d, dict):
        return {}
    out: dict[str, float] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_as_float_dict(v, key + "/"))
        elif isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
            out[key] = float(v)
    return out


class PipelineWorker:
    """One whole pipeline behind a Ray actor (see the module docstring)."""

    def __init__(self, spec: WorkerSpec, warmup_hits: int = 2000) -> None:
        """Pin, limit threads, build the pipeline and warm it up.

        Args:
            spec: what to build.
            warmup_hits: hits of the random event the pipeline is warmed up on
                (``Pipeline.warmup``; 0: none). The driver's ``--warmup`` real
                events follow through :meth:`process` with ``count=False``.
        """
        import warnings

        import ray

        from trkx_ray.pipeline import Pipeline

        self.spec = spec
        ctx = ray.get_runtime_context()
        self.actor_id = ctx.get_actor_id() or f"local-{os.getpid()}"
        self.node_id = ctx.get_node_id()
        with warnings.catch_warnings():  # Ray's own deprecated call inside the property
            warnings.simplefilter("ignore", DeprecationWarning)
            self.reconstructed = bool(ctx.was_current_actor_reconstructed)
        self.pid = os.getpid()
        self.host = socket.gethostname()
        self.machine = machine_key()
        self.cores: list[int] = []
        if spec.pin and spec.cores > 0 and hasattr(os, "sched_setaffinity"):
            self.cores = self._pin(ray)
        if spec.concurrency < 1 or spec.concurrency > max(spec.cores, 1):
            raise ValueError(f"actor {spec.index}: concurrency {spec.concurrency} must be "
                             f"between 1 and its {max(spec.cores, 1)} core(s)")
        apply_thread_limits(spec.threads)
        self._lock = threading.Lock()  # counters, when events run at once
        self.running = 0
        self.peak_running = 0  # most events seen running at once
        self.gpu_ids = [str(g) for g in ray.get_gpu_ids()] if spec.kind == "gpu" else []
        self.gpu_name = ""
        if spec.kind == "gpu":
            import torch

            if not torch.cuda.is_available():
                raise RuntimeError(
                    f"actor {spec.index}: GPU actor but torch sees no CUDA device "
                    f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r})"
                )
            self.gpu_name = torch.cuda.get_device_name(0)
        t0 = time.perf_counter()
        self.pipeline = Pipeline.from_config(spec.config, device=spec.device)
        self.build_s = time.perf_counter() - t0
        noop = self.pipeline.config.kind == "noop"
        self.physics = spec.physics if spec.physics is not None else not noop
        self.events_done = 0
        self.events_seen = 0  # every event, warm-up included (CUDA profiling cadence)
        self.busy_s = 0.0
        self.warmup_s = 0.0
        if warmup_hits > 0:
            t0 = time.perf_counter()
            self.pipeline.warmup(int(warmup_hits))
            self.warmup_s = time.perf_counter() - t0
        log.info(
            "actor %d (%s) ready: pid %d, cores %s, gpus %s, build %.2f s, warm-up %.2f s",
            spec.index, spec.kind, self.pid, self.cores, self.gpu_ids, self.build_s, self.warmup_s,
        )

    def _pin(self, ray: Any) -> list[int]:
        available = sorted(os.sched_getaffinity(0))
        # the actor's bundle is its index (start_workers places bundles in actor order)
        self._lease = lease_cores(self.spec.cores, available, bundle_core_offset(self.spec.index))
        os.sched_setaffinity(0, self._lease.cores)
        return sorted(os.sched_getaffinity(0))

    def info(self) -> ActorInfo:
        """Where and how this actor runs (also a cheap readiness probe).

        ``rss_mb`` is the process's resident memory at the call, MiB.
        """
        from trkx_ray.hardware import cpu_bf16, cpu_capability, cpu_model

        return {
            "id": self.spec.index,
            "kind": self.spec.kind,
            "device": self.spec.device,
            "actor_id": self.actor_id,
            "node": self.node_id,
            "host": self.host,
            "machine": self.machine,
            "pid": self.pid,
            "cores": list(self.cores),
            "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [],
            "gpu": self.gpu_ids,
            "gpu_name": self.gpu_name,
            "concurrency": self.spec.concurrency,
            "peak_concurrency": self.peak_running,
            "threads": {
                "per_event": self.spec.threads,
                "torch": _torch_threads(),
                "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", ""),
                "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
            },
            "reconstructed": self.reconstructed,
            "rss_mb": process_rss_mb(),
            "events": self.events_done,
            "busy_s": self.busy_s,
            "build_s": self.build_s,
            "warmup_s": self.warmup_s,
            "config": asdict(self.pipeline.config),
            "precision": self.pipeline.precision,
            "cpu_model": cpu_model(),
            "cpu_capability": cpu_capability(),
            "cpu_native_bf16": cpu_bf16()[0],
        }

    def _maybe_crash(self) -> None:
        spec = self.spec
        if spec.fault_exit_after is None or spec.index != spec.fault_actor:
            return
        if self.reconstructed and not spec.fault_repeat:
            return
        if self.events_done >= spec.fault_exit_after:
            log.warning("actor %d: injected fault, exiting after %d events", spec.index,
                        self.events_done)
            os._exit(17)

    def process(
        self,
        seq: int,
        event_id: int | None,
        payload: dict[str, Any],
        want_tracks: bool = False,
        count: bool = True,
    ) -> EventResult:
        """Run the pipeline on one event payload.

        Args:
            seq: the driver's sequence number of the event (returned unchanged).
            event_id: overrides the payload's event id (pooled payloads); None keeps it.
            payload: :meth:`Event.to_payload` output.
            want_tracks: also return ``hit_id`` and ``track_id`` arrays.
            count: count the event in this actor's statistics (False for warm-up).

        Returns:
            ``{"seq", "event_id", "actor", "pid", "num_hits", "service_s", "timings",
            "num_edges", "physics", "physics_s", "error"}`` (+ ``hit_id``,
            ``track_id``). ``service_s`` is the pipeline's time alone (for a failed
            event: until it failed); the physics metrics are computed after it and
            timed in ``physics_s``. A pipeline exception is returned in ``error``
            (the actor lives on).
        """
        if count:
            with self._lock:
                self._maybe_crash()
        if self.spec.concurrency > 1:
            _limit_numba_threads(self.spec.threads)  # thread-local: this event's thread
        with self._lock:
            self.running += 1
            self.peak_running = max(self.peak_running, self.running)
        try:
            return self._process(seq, event_id, payload, want_tracks, count)
        finally:
            with self._lock:
                self.running -= 1

    def _process(
        self,
        seq: int,
        event_id: int | None,
        payload: dict[str, Any],
        want_tracks: bool,
        count: bool,
    ) -> EventResult:
        eid = int(payload.get("event_id", -1)) if event_id is None else int(event_id)
        out: EventResult = {"seq": seq, "event_id": eid, "actor": self.spec.index,
                            "pid": self.pid, "error": None, "service_s": 0.0, "physics_s": 0.0}
        dt = 0.0
        t0 = time.perf_counter()
        try:
            from trkx_ray.events.event import Event

            event = Event.from_payload(payload)
            event.event_id = eid
            every = self.spec.profile_every
            with self._lock:
                profile = self.spec.kind != "gpu" or (every > 0 and self.events_seen % every == 0)
                self.events_seen += 1
            t0 = time.perf_counter()
            result = self.pipeline(event, profile=profile)
            dt = time.perf_counter() - t0  # the pipeline alone: the measured span
            track_id = np.asarray(result.track_id)
            out["num_hits"] = int(event.num_hits)
            out["timings"] = {k: float(v) for k, v in result.timings.items()}
            out["num_edges"] = {k: int(v) for k, v in result.num_edges.items()}
            if self.physics:  # outside the measured span, its cost reported on its own
                t1 = time.perf_counter()
                out["physics"] = self._physics(event, track_id)
                out["physics_s"] = time.perf_counter() - t1
            else:
                out["physics"] = {}
            if want_tracks:
                out["hit_id"] = np.asarray(event.hits["hit_id"])
                out["track_id"] = track_id
        except Exception as exc:  # noqa: BLE001 - reported per event, the run goes on
            if not dt:
                dt = time.perf_counter() - t0
            log.warning("actor %d: event %d failed: %s", self.spec.index, eid, exc)
            out["error"] = f"{type(exc).__name__}: {exc}"
        out["service_s"] = dt
        if count:
            with self._lock:
                self.events_done += 1
                self.busy_s += dt
        return out

    @staticmethod
    def _physics(event: Event, track_id: np.ndarray) -> dict[str, float]:
        if event.truth is None or event.particles is None:
            return {}
        from trkx_ray import metrics

        return _as_float_dict(metrics.tracking_metrics(event, track_id))


def _limit_numba_threads(threads: int) -> None:
    """numba's thread count is per calling thread: set it in each event's thread."""
    import numba

    cap = numba.config.NUMBA_NUM_THREADS  # type: ignore[attr-defined]
    if numba.get_num_threads() != min(threads, cap):
        numba.set_num_threads(min(threads, cap))


def _torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


def spawn_worker(
    spec: WorkerSpec,
    *,
    placement_group: Any = None,
    bundle_index: int = -1,
    max_restarts: int = 2,
    warmup_hits: int = 2000,
) -> Any:
    """Start :class:`PipelineWorker` as a Ray actor with the resources of ``spec``.

    Args:
        spec: the worker to build.
        placement_group: reserve from this placement group (see
            :func:`~trkx_ray.scaling.resources.plan_resources`), or None.
        bundle_index: the actor's bundle in ``placement_group``.
        max_restarts: Ray restarts of a dead actor before it is given up.
        warmup_hits: size of the random warm-up event of the constructor (0: none).

    Returns:
        The actor handle.
    """
    import ray

    if spec.kind == "cpu":
        resources: dict[str, Any] = {"num_cpus": spec.cores, "num_gpus": 0}
        env = thread_env(spec.threads, hide_gpus=True)
    elif spec.kind == "gpu":
        resources = {"num_cpus": spec.cores, "num_gpus": 1.0 / spec.actors_per_gpu}
        env = thread_env(max(spec.cores, 1), hide_gpus=False)
    else:
        raise ValueError(f"WorkerSpec.kind must be 'cpu' or 'gpu', got {spec.kind!r}")
    options: dict[str, Any] = dict(
        resources,
        max_restarts=max_restarts,
        max_task_retries=0,
        max_concurrency=max(spec.concurrency, 1),
        runtime_env={"env_vars": env},
    )
    if placement_group is not None:
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
            placement_group=placement_group, placement_group_bundle_index=bundle_index
        )
    cls = ray.remote(PipelineWorker)
    return cls.options(**options).remote(spec, warmup_hits)
