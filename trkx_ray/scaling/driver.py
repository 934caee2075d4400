"""The streaming driver: start actors, warm them up, stream events, survive faults.

Flow of :func:`run_scaling` (used by ``python -m trkx_ray.run`` and the study):

1. :func:`~trkx_ray.scaling.resources.plan_resources` checks the request against
   what Ray sees and reserves one placement-group bundle per actor (fails in seconds).
2. :func:`start_workers` starts the actors, each pinned to cores it leases
   (:func:`~trkx_ray.scaling.resources.lease_cores`), built and warmed up (random
   event) in its constructor; then ``warmup`` real events per
   actor (results discarded, not in the figures).
3. :func:`stream_events` keeps at most ``in_flight`` tasks per actor, handles results
   with ``ray.wait`` as they complete, and keeps a bounded window of produced payloads.
   The wall clock starts after warm-up and stops at the last result.

Exactly-once: results are keyed by the event's sequence number. When an actor dies
(``RayActorError``) its in-flight events go back to the front of the queue, the
actor is probed until Ray has restarted it (the restart is counted), and streaming
goes on. An actor beyond ``max_restarts`` ends the run with an error and a partial
outcome. A pipeline exception or a broken input (``EventFormatError`` in the loading
task) is a failed event, not retried. Ctrl-C ends the loop with a partial outcome.

Bounded memory: the driver's state per streamed event is a few tens of bytes (a row
of :class:`~trkx_ray.scaling.results.ResultLog` columns; physics and edge counts only
as running sums); the queue is a counter plus the few resubmitted events, the set of
finished events a watermark (:class:`~trkx_ray.scaling.results.SeqSet`). Track ids
go to ``on_result`` (``--save-tracks`` writes them there) and are not kept.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import chain, islice
from typing import Any, cast

import numpy as np

from trkx_ray.scaling.actor import WorkerSpec, spawn_worker
from trkx_ray.scaling.resources import ResourcePlan, plan_resources, process_rss_mb
from trkx_ray.scaling.results import ResultLog, SeqSet
from trkx_ray.scaling.types import ActorInfo, EventResult, FailedEvent

#: Set by :func:`request_stop` (the run CLI's SIGINT handler): the stream loop checks it
#: on every turn, so a Ctrl-C whose KeyboardInterrupt landed inside a destructor (where
#: Python only prints "Exception ignored") still stops the run.
_STOP = threading.Event()


def request_stop() -> None:
    """Ask a running :func:`stream_events` to stop as if interrupted (Ctrl-C)."""
    _STOP.set()


__all__ = [
    "FaultInjection",
    "StreamOutcome",
    "WorkerSlot",
    "object_store_usage",
    "request_stop",
    "run_scaling",
    "sample_actor_rss",
    "start_workers",
    "stop_workers",
    "stream_events",
    "warm_up",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FaultInjection:
    """Crash an actor on purpose (see :mod:`trkx_ray.scaling.actor`).

    Attributes:
        exit_after: the actor exits when asked for event ``exit_after + 1``; None: off.
        actor: index of the actor that crashes.
        repeat: crash again after every restart (to exceed ``max_restarts``).
    """

    exit_after: int | None = None
    actor: int = 0
    repeat: bool = False

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> FaultInjection:
        """Read ``TRKX_FAULT_EXIT_AFTER``, ``TRKX_FAULT_ACTOR``, ``TRKX_FAULT_REPEAT``."""
        env = os.environ if environ is None else environ
        raw = env.get("TRKX_FAULT_EXIT_AFTER", "").strip()
        try:
            exit_after = int(raw) if raw else None
            actor = int(env.get("TRKX_FAULT_ACTOR", "0") or 0)
        except ValueError as exc:
            raise ValueError(
                f"TRKX_FAULT_EXIT_AFTER / TRKX_FAULT_ACTOR must be integers: {exc}"
            ) from exc
        repeat = env.get("TRKX_FAULT_REPEAT", "").strip().lower() in {"1", "true", "yes"}
        return cls(exit_after=exit_after, actor=actor, repeat=repeat)


@dataclass
class WorkerSlot:
    """The driver's view of one actor across its restarts."""

    spec: WorkerSpec
    handle: Any
    info: ActorInfo = field(default_factory=lambda: cast(ActorInfo, {}))
    state: str = "ok"  # ok | recovering | dead
    restarts: int = 0
    events: int = 0
    failed: int = 0
    busy_s: float = 0.0
    inflight: int = 0
    probe_deadline: float = 0.0
    rss_start_mb: float | None = None
    rss_end_mb: float | None = None

    @property
    def pid(self) -> int:
        """Process id of the current incarnation."""
        return int(self.info.get("pid", -1))


@dataclass
class StreamOutcome:
    """What :func:`stream_events` saw.

    Attributes:
        results: the successful events, by completion: a compact
            :class:`~trkx_ray.scaling.results.ResultLog` (per-event seq, event id,
            actor, pid, hits, service and queue latency, stage timings; edge counts
            and physics summed). ``results[i]`` is a small dict of event ``i``.
        failed: ``{"event_id", "seq", "error"}`` per failed event.
        wall_s: seconds from the first submission to the last result.
        requested: events asked for.
        error: why the run stopped early (None when it completed).
        interrupted: Ctrl-C stopped it.
        driver_rss_start_mb: the driver's resident memory when streaming starts, MiB.
        driver_rss_end_mb: the driver's resident memory when streaming ends, MiB.
    """

    results: ResultLog = field(default_factory=ResultLog)
    failed: list[FailedEvent] = field(default_factory=list)
    wall_s: float = 0.0
    requested: int = 0
    error: str | None = None
    interrupted: bool = False
    driver_rss_start_mb: float | None = None
    driver_rss_end_mb: float | None = None

    @property
    def queue_latency_s(self) -> np.ndarray:
        """Per successful event, submission to result seen by the driver, seconds
        (read-only, completion order)."""
        return self.results.column("queue_latency_s")


def object_store_usage(timeout_s: int = 10) -> dict[str, float] | None:
    """Objects referenced in the cluster: ``{"mib", "objects"}``, or None when unavailable.

    Read with Ray's public state API (:func:`ray.util.state.summarize_objects`), which
    is served by the dashboard: an embedded Ray started without it (``run``'s
    default, the tests) has no such figure and gets None. ``mib`` sums the size of
    every reference (an object referenced from two processes counts twice); objects
    inlined in their owner's memory (< 100 KiB) count too.
    """
    try:
        from ray.util.state import summarize_objects

        summary = summarize_objects(timeout=timeout_s, raise_on_missing_output=False)
        cluster = summary["cluster"]
        return {"mib": float(cluster["total_size_mb"]), "objects": int(cluster["total_objects"])}
    except Exception as exc:  # noqa: BLE001 - no state API server (no dashboard): no figure
        log.debug("object store usage unavailable: %s", exc)
        return None


def sample_actor_rss(slots: list[WorkerSlot], which: str, timeout_s: float = 10.0) -> None:
    """Ask the live actors for their resident memory, into ``slot.rss_<which>_mb``
    (at the ``"end"``, their whole latest ``info`` too).

    Args:
        slots: the run's actors; only those in state ``ok`` are asked.
        which: ``"start"`` or ``"end"``.
        timeout_s: seconds to wait for the answers; late or dead actors keep None.
    """
    import ray

    live = [s for s in slots if s.state == "ok"]
    refs = [s.handle.info.remote() for s in live]
    if not refs:
        return
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
    done = set(ready)
    for slot, ref in zip(live, refs):
        if ref not in done:
            continue
        try:
            info = ray.get(ref)
        except Exception:  # noqa: BLE001 - died meanwhile: no figure
            continue
        rss = info["rss_mb"]
        setattr(slot, f"rss_{which}_mb", float(rss) if rss else None)
        if which == "end":
            slot.info = info  # the latest view (events at once at the peak, ...)


def start_workers(
    plan: ResourcePlan,
    config: Any,
    *,
    placement_group: Any = None,
    physics: bool | None = None,
    fault: FaultInjection | None = None,
    max_restarts: int = 2,
    warmup_hits: int = 2000,
    pin: bool = True,
) -> list[WorkerSlot]:
    """Start the actors of ``plan`` (CPU actors first) and wait until they are built.

    Args:
        plan: resources and actor counts.
        config: pipeline config for every actor.
        placement_group: from :func:`plan_resources`; bundles in ``plan.bundles()`` order.
        physics: compute tracking metrics in the actors (None: unless the pipeline is noop).
        fault: optional fault injection.
        max_restarts: Ray restarts per actor.
        warmup_hits: hits of the constructors' random warm-up event (0: none).
        pin: pin actors to cores.

    Returns:
        One slot per actor, ``info`` filled.
    """
    import ray

    fault = fault or FaultInjection()
    specs: list[WorkerSpec] = []
    for _ in range(plan.cpu_actors):
        specs.append(WorkerSpec(index=len(specs), kind="cpu", cores=plan.cores_per_actor,
                                concurrency=plan.cpu_concurrency))
    for _ in range(plan.gpu_actors):
        specs.append(WorkerSpec(index=len(specs), kind="gpu", cores=plan.cpus_per_gpu_actor,
                                actors_per_gpu=plan.actors_per_gpu))
    slots = []
    for spec in specs:
        spec = WorkerSpec(
            index=spec.index, kind=spec.kind, cores=spec.cores,
            actors_per_gpu=spec.actors_per_gpu, config=config, physics=physics,
            fault_exit_after=fault.exit_after, fault_actor=fault.actor,
            fault_repeat=fault.repeat, pin=pin, concurrency=spec.concurrency,
        )
        handle = spawn_worker(spec, placement_group=placement_group, bundle_index=spec.index,
                              max_restarts=max_restarts, warmup_hits=warmup_hits)
        slots.append(WorkerSlot(spec=spec, handle=handle))
    infos = ray.get([s.handle.info.remote() for s in slots])
    for slot, info in zip(slots, infos):
        slot.info = info
    return slots


def warm_up(slots: list[WorkerSlot], source: Any, rounds: int) -> None:
    """Send ``rounds`` more events to every actor, uncounted (results discarded).

    Uses events ``0, 1, ...`` of ``source``; they are processed again when streamed.
    """
    import ray

    if rounds <= 0:
        return
    refs = []
    for r in range(rounds):
        for slot in slots:
            eid, ref = source.ref((r * len(slots) + slot.spec.index) % max(len(source), 1))
            refs.append(slot.handle.process.remote(-1, eid, ref, False, False))
    ray.get(refs)


def stop_workers(slots: list[WorkerSlot], placement_group: Any = None) -> None:
    """Kill the actors, free their cores and remove the placement group."""
    import ray

    for slot in slots:
        try:
            ray.kill(slot.handle, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass
    if placement_group is not None:
        from ray.util.placement_group import remove_placement_group

        try:
            remove_placement_group(placement_group)
        except Exception:  # noqa: BLE001
            pass


def stream_events(
    slots: list[WorkerSlot],
    source: Any,
    events: int,
    *,
    in_flight: int = 2,
    want_tracks: bool = False,
    max_attempts: int = 3,
    restart_timeout_s: float = 120.0,
    on_result: Callable[[EventResult], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> StreamOutcome:
    """Stream events ``0..events-1`` of ``source`` through ``slots``.

    Args:
        slots: started, warmed-up actors.
        source: see :mod:`trkx_ray.scaling.sources`.
        events: number of events.
        in_flight: tasks in flight per actor (>= 1) that runs one event at a time; an
            actor that runs ``C`` events at once gets ``C - 1`` more.
        want_tracks: actors return track ids (for ``--save-tracks``).
        max_attempts: resubmissions of an event whose actor died before it is failed.
        restart_timeout_s: how long a dead actor may take to come back, seconds.
        on_result: called with each successful result as it arrives (driver side).
        on_progress: called with ``(done, failed)`` after each event.

    Returns:
        The outcome (possibly partial: see ``error`` and ``interrupted``).
    """
    import ray
    from ray.exceptions import ActorDiedError, RayActorError, RayTaskError

    out = StreamOutcome(requested=events)
    # the queue: resubmitted events first, then next_seq .. events-1 (no O(events) list)
    retry: deque[int] = deque()
    next_seq = [0]
    window: dict[int, tuple[int, Any]] = {}  # seq -> (event_id, payload ref), bounded
    tasks: dict[Any, tuple[str, WorkerSlot, int, int, float]] = {}
    finished = SeqSet()
    attempts: dict[int, int] = {}  # only events whose actor died under them
    lookahead = max(2, sum(in_flight + s.spec.concurrency - 1 for s in slots) * 2)
    by_index = {s.spec.index: s for s in slots}

    def has_pending() -> bool:
        return bool(retry) or next_seq[0] < events

    def take() -> int | None:
        while retry:
            seq = retry.popleft()
            if seq not in finished:
                return seq
        if next_seq[0] < events:
            next_seq[0] += 1
            return next_seq[0] - 1
        return None

    def payload(seq: int) -> tuple[int, Any]:
        if seq not in window:
            window[seq] = source.ref(seq)
        return window[seq]

    def prefetch() -> None:
        if len(window) >= lookahead:
            return
        upcoming = chain(retry, range(next_seq[0], events))
        for seq in islice(upcoming, lookahead):
            if seq not in finished:
                payload(seq)

    def done_with(seq: int) -> None:
        finished.add(seq)
        window.pop(seq, None)

    def fail(seq: int, error: str) -> None:
        eid = window.get(seq, (seq, None))[0]
        out.failed.append({"event_id": int(eid), "seq": seq, "error": error})
        done_with(seq)

    def handle_probe(task: Any, slot: WorkerSlot, pid: int) -> None:
        try:
            slot.info = ray.get(task)
            slot.state = "ok"
            if slot.info.get("pid") != pid:
                slot.restarts += 1
            log.warning("actor %d is back (pid %s, restart %d)", slot.spec.index,
                        slot.info.get("pid"), slot.restarts)
        except ActorDiedError as exc:
            slot.state = "dead"
            out.error = (f"actor {slot.spec.index} died more often than --max-restarts "
                         f"allows: {_first_line(exc)}")
        except RayActorError:  # still restarting: probe again
            probe = slot.handle.info.remote()
            tasks[probe] = ("probe", slot, -1, pid, time.perf_counter())

    out.driver_rss_start_mb = process_rss_mb()
    t0 = time.perf_counter()
    _STOP.clear()
    try:
        while len(finished) < events and out.error is None:
            if _STOP.is_set():
                raise KeyboardInterrupt
            for slot in slots:
                # an actor running C events at once keeps C - 1 more in flight
                cap = in_flight + slot.spec.concurrency - 1
                while slot.state == "ok" and slot.inflight < cap:
                    seq = take()
                    if seq is None:
                        break
                    eid, ref = payload(seq)
                    task = slot.handle.process.remote(seq, eid, ref, want_tracks, True)
                    tasks[task] = ("event", slot, seq, slot.pid, time.perf_counter())
                    slot.inflight += 1
            prefetch()
            if not tasks:
                if has_pending():
                    out.error = "no live actor left to process the remaining events"
                break
            ready, _ = ray.wait(list(tasks), num_returns=1, timeout=1.0)
            now = time.perf_counter()
            for slot in slots:
                if slot.state == "recovering" and now > slot.probe_deadline:
                    out.error = (f"actor {slot.spec.index} did not come back within "
                                 f"{restart_timeout_s:g} s after dying")
            for task in ready:
                kind, slot, seq, pid, t_sub = tasks.pop(task)
                if kind == "probe":
                    handle_probe(task, slot, pid)
                    continue
                slot.inflight -= 1
                try:
                    res = ray.get(task)
                except RayActorError as exc:
                    attempts[seq] = attempts.get(seq, 0) + 1
                    if attempts[seq] >= max_attempts:
                        fail(seq, f"actor died {attempts[seq]} times while processing it: "
                                  f"{_first_line(exc)}")
                    else:
                        retry.appendleft(seq)
                    if slot.state == "ok" and pid == slot.pid:
                        log.warning("actor %d died (pid %d): resubmitting its events",
                                    slot.spec.index, pid)
                        slot.state = "recovering"
                        slot.probe_deadline = now + restart_timeout_s
                        probe = slot.handle.info.remote()
                        tasks[probe] = ("probe", slot, -1, pid, now)
                    continue
                except RayTaskError as exc:  # the payload's task failed (broken input)
                    fail(seq, _cause(exc))
                    continue
                except Exception as exc:  # noqa: BLE001 - lost objects etc.: fail the event
                    fail(seq, f"{type(exc).__name__}: {_first_line(exc)}")
                    continue
                if seq in finished:  # cannot happen (a dead actor's tasks raise): never count twice
                    continue
                owner = by_index.get(res.get("actor"), slot)
                if res.get("error"):
                    owner.failed += 1
                    fail(seq, res["error"])
                else:
                    owner.events += 1
                    owner.busy_s += float(res.get("service_s", 0.0))
                    done_with(seq)
                    if on_result is not None:
                        on_result(res)
                    # a compact row (no track ids, physics summed) for the report
                    out.results.append(res, now - t_sub)
                del res
                if on_progress is not None:
                    on_progress(len(out.results), len(out.failed))
        out.wall_s = time.perf_counter() - t0
        # actors still coming back: wait for them so their restarts are counted
        deadline = time.perf_counter() + restart_timeout_s
        while out.error is None and any(k == "probe" for k, *_ in tasks.values()):
            probes = [t for t, v in tasks.items() if v[0] == "probe"]
            ready, _ = ray.wait(probes, num_returns=1, timeout=1.0)
            for task in ready:
                _, slot, _, pid, _ = tasks.pop(task)
                handle_probe(task, slot, pid)
            if time.perf_counter() > deadline:
                break
    except KeyboardInterrupt:
        out.interrupted = True
        out.error = "interrupted (Ctrl-C)"
        out.wall_s = time.perf_counter() - t0
    out.driver_rss_end_mb = process_rss_mb()
    return out


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _cause(exc: Any) -> str:
    cause = getattr(exc, "cause", None)
    if cause is not None:
        return f"{type(cause).__name__}: {cause}"
    return _first_line(exc)


def run_scaling(
    plan: ResourcePlan,
    config: Any,
    source: Any,
    events: int,
    *,
    warmup: int = 1,
    in_flight: int = 2,
    want_tracks: bool = False,
    physics: bool | None = None,
    fault: FaultInjection | None = None,
    max_restarts: int = 2,
    place_timeout_s: float = 15.0,
    on_result: Callable[[EventResult], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[StreamOutcome, list[WorkerSlot]]:
    """Place, start, warm up, stream and stop: one measured run.

    Args:
        plan: actors and resources.
        config: pipeline config.
        source: event source.
        events: events to measure.
        warmup: real warm-up events per actor, not measured.
        in_flight: tasks queued per actor.
        want_tracks: return track ids to the driver.
        physics: compute tracking metrics in the actors (None: unless the pipeline is noop).
        fault: fault injection (default: from the ``TRKX_FAULT_*`` env vars).
        max_restarts: Ray restarts per actor.
        place_timeout_s: seconds to wait for the resources before failing.
        on_result: per-result callback.
        on_progress: ``(done, failed)`` callback.

    Returns:
        ``(outcome, slots)``; the actors are stopped (slots keep their statistics,
        with each live actor's resident memory after warm-up and after the stream).

    Raises:
        ResourceError: the plan does not fit the cluster.
    """
    if events < 1:
        raise ValueError(f"events must be >= 1, got {events}")
    if in_flight < 1:
        raise ValueError(f"in_flight must be >= 1, got {in_flight}")
    fault = FaultInjection.from_env() if fault is None else fault
    pg = plan_resources(plan, timeout_s=place_timeout_s)
    slots: list[WorkerSlot] = []
    try:
        slots = start_workers(plan, config, placement_group=pg, physics=physics, fault=fault,
                              max_restarts=max_restarts)
        warm_up(slots, source, warmup)
        sample_actor_rss(slots, "start")
        outcome = stream_events(slots, source, events, in_flight=in_flight,
                                want_tracks=want_tracks, on_result=on_result,
                                on_progress=on_progress)
        if not outcome.interrupted:
            sample_actor_rss(slots, "end")
        return outcome, slots
    finally:
        stop_workers(slots, pg)
