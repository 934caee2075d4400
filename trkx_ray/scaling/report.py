"""The run report (DESIGN.md's **contract**) and its table.

:func:`build_report` turns a :class:`~trkx_ray.scaling.driver.StreamOutcome` and the
actor slots into the JSON-able dict written by ``run --report``. Latency: ``latency_s``
is the per-event service time of the pipeline inside the actor (event in -> track ids
out), seconds; the physics metrics are computed after it and their cost is
``physics_cost_s`` (mean and total seconds); ``queue_latency_s`` is what the driver observed from
submission to result (includes waiting behind the other ``--in-flight`` events).
Memory (added keys): each actor's ``rss_start_mb`` / ``rss_end_mb`` is its resident
memory after warm-up and after the stream (MiB; None for an actor that was dead or
did not answer), ``memory`` holds the driver's at the start and end of the stream.
``hardware`` holds the driver's machine and what the actors ran at: ``precision``
(``auto`` resolved) and ``cpu_capability``. ``source`` says where the events came
from and what producing them cost, outside the measured span.
The figures come from the outcome's compact
:class:`~trkx_ray.scaling.results.ResultLog` (per-event columns, physics and edge
counts as running sums); stage timings are stored as float32 seconds.
"""

from __future__ import annotations

import json
import os
import platform
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from trkx_ray.scaling.results import ResultLog
from trkx_ray.scaling.types import ActorReport, Percentiles, RunReport, StageStats

if TYPE_CHECKING:  # pragma: no cover
    from trkx_ray.scaling.driver import StreamOutcome, WorkerSlot

__all__ = ["build_report", "format_table", "hardware_info", "percentiles", "write_report"]

def percentiles(values: list[float] | np.ndarray) -> Percentiles:
    """``{"p50", "p95", "mean"}`` of ``values`` (None when empty), same unit."""
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return {"p50": None, "p95": None, "mean": None}
    return {"p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)),
            "mean": float(a.mean())}


def hardware_info() -> dict[str, Any]:
    """The driver machine and library versions (never touches CUDA)."""
    import numpy
    import psutil

    from trkx_ray.hardware import cpu_bf16, cpu_capability, cpu_model

    info: dict[str, Any] = {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": cpu_model(),
        "cpu_capability": cpu_capability(),
        "cpu_native_bf16": cpu_bf16()[0],
        "logical_cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "numpy": numpy.__version__,
    }
    for mod in ("ray", "torch"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:  # pragma: no cover
            info[mod] = None
    return info


def _actor_hardware(slots: list[WorkerSlot]) -> dict[str, Any]:
    """What the actors ran on: precision and CPU capability (one value, or a list)."""
    out: dict[str, Any] = {}
    for key in ("precision", "cpu_capability", "cpu_native_bf16"):
        seen = sorted({str(s.info.get(key)) for s in slots if s.info.get(key) is not None})
        if seen:
            out[key] = seen[0] if len(seen) == 1 else seen
    return out


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


def _physics(log: ResultLog) -> dict[str, Any]:
    """Pool the per-event metrics from the log's running sums: efficiencies and rates
    from summed counts, the TrackML score as the mean over events."""
    rows = log.physics_rows
    if not rows:
        return {}
    keys = log.physics_keys

    def total(key: str) -> float:
        return log.physics_total(key)[2]

    out: dict[str, Any] = {"events": rows}
    if "all/n_reconstructable" in keys:
        out["efficiency"] = _ratio(total("all/n_matched"), total("all/n_reconstructable"))
        out["duplicate_rate"] = _ratio(total("all/n_duplicated"), total("all/n_majority"))
        cuts = sorted({k.split("/")[1] for k in keys if k.startswith("by_pt/")})
        for cut in cuts:
            out[f"efficiency_{cut}"] = _ratio(total(f"by_pt/{cut}/n_matched"),
                                              total(f"by_pt/{cut}/n_reconstructable"))
    elif "efficiency" in keys:
        _, n, s = log.physics_total("efficiency")
        out["efficiency"] = s / n if n else None
    if "n_candidate_tracks" in keys:
        out["fake_rate"] = _ratio(total("n_fake"), total("n_candidate_tracks"))
        out["candidate_tracks_per_event"] = total("n_candidate_tracks") / rows
    _, n, s = log.physics_total("trackml_score")
    if n:
        out["trackml_score"] = s / n
    return out


def build_report(
    outcome: StreamOutcome,
    slots: list[WorkerSlot],
    *,
    config: Any,
    source: dict[str, Any] | None = None,
    options: dict[str, Any] | None = None,
    ray_resources: dict[str, Any] | None = None,
) -> RunReport:
    """The run report dict (see the module docstring for the latency definitions).

    Args:
        outcome: the stream outcome.
        slots: the actor slots (statistics and info).
        config: the pipeline config as given (name/path) and as resolved by the actors.
        source: event source description.
        options: the run's flags.
        ray_resources: ``ray.cluster_resources()`` and node count.
    """
    results = outcome.results
    processed = len(results)
    stages: dict[str, StageStats] = {}
    for name in results.stage_names:
        vals = results.stage(name).astype(np.float64)
        vals = vals[np.isfinite(vals)]
        if vals.size:
            stages[name] = {"mean_s": float(vals.mean()), "p50_s": float(np.median(vals)),
                            "p95_s": float(np.percentile(vals, 95))}
    lat = percentiles(results.column("service_s"))
    phys_s = results.column("physics_s").astype(np.float64)
    qlat_all = results.column("queue_latency_s")
    qlat = percentiles(qlat_all[np.isfinite(qlat_all)])
    actors: list[ActorReport] = []
    for s in slots:
        info = s.info
        actors.append({
            "id": s.spec.index,
            "kind": s.spec.kind,
            "device": s.spec.device,
            "node": info.get("node"),
            "host": info.get("host"),
            "pid": info.get("pid"),
            "cores": info.get("cores"),
            "gpu": info.get("gpu"),
            "gpu_name": info.get("gpu_name") or None,
            "torch_threads": (info.get("threads") or {}).get("torch"),
            "concurrency": s.spec.concurrency,
            "peak_concurrency": info.get("peak_concurrency"),
            "events": s.events,
            "events_failed": s.failed,
            "busy_s": s.busy_s,
            # busy time over the wall time of its event slots (events run at once)
            "utilisation": (s.busy_s / (outcome.wall_s * s.spec.concurrency)
                            if outcome.wall_s > 0 else None),
            "restarts": s.restarts,
            "state": s.state,
            "build_s": info.get("build_s"),
            "warmup_s": info.get("warmup_s"),
            "rss_start_mb": s.rss_start_mb,
            "rss_end_mb": s.rss_end_mb,
        })
    resolved = next((s.info.get("config") for s in slots if s.info.get("config")), None)
    edges = results.edge_means()
    report: RunReport = {
        "events_requested": outcome.requested,
        "events_processed": processed,
        "events_failed": [{"event_id": f["event_id"], "error": f["error"]} for f in outcome.failed],
        "complete": outcome.error is None and processed + len(outcome.failed) == outcome.requested,
        "error": outcome.error,
        "interrupted": outcome.interrupted,
        "wall_s": outcome.wall_s,
        "throughput_eps": processed / outcome.wall_s if outcome.wall_s > 0 else 0.0,
        "latency_s": {"p50": lat["p50"], "p95": lat["p95"], "mean": lat["mean"]},
        "queue_latency_s": {"p50": qlat["p50"], "p95": qlat["p95"]},
        "stages": stages,
        "mean_hits": results.mean_hits,
        "mean_edges": edges,
        "actors": actors,
        "restarts": int(sum(s.restarts for s in slots)),
        "memory": {"driver_rss_start_mb": outcome.driver_rss_start_mb,
                   "driver_rss_end_mb": outcome.driver_rss_end_mb},
        "physics": _physics(results),
        "config": {"given": config if isinstance(config, (str, dict)) else str(config),
                   "resolved": resolved},
        "source": source or {},
        "options": options or {},
        "physics_cost_s": {"mean": float(phys_s.mean()) if phys_s.size else 0.0,
                           "total": float(phys_s.sum())},
        "hardware": {**hardware_info(), **_actor_hardware(slots), "gpus": sorted(
            {str(s.info.get("gpu_name")) for s in slots if s.info.get("gpu_name")})},
        "ray": ray_resources or {},
    }
    return report


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return str(obj)


def write_report(report: Mapping[str, Any], path: str | Path) -> Path:
    """Write ``report`` as indented JSON (parent folders created). Returns the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(_jsonable(report), indent=2) + "\n", encoding="utf-8")
    tmp.replace(p)
    return p


def _f(v: Any, fmt: str = ".3f") -> str:
    return "-" if v is None else format(v, fmt)


def format_table(report: Mapping[str, Any]) -> str:
    """A plain-text summary table of a report (stage times in ms, rates in events/s)."""
    lines = [
        f"events: {report['events_processed']} processed, {len(report['events_failed'])} failed"
        f" of {report['events_requested']} in {report['wall_s']:.2f} s"
        f" -> {report['throughput_eps']:.2f} events/s",
        f"latency per event (pipeline in actor): p50 {_f(report['latency_s']['p50'])} s,"
        f" p95 {_f(report['latency_s']['p95'])} s",
    ]
    hw = report.get("hardware") or {}
    if hw:
        lines.append(f"hardware: {hw.get('cpu_model', '?')}, CPU capability "
                     f"{hw.get('cpu_capability', '?')}, precision {hw.get('precision', '?')}"
                     + (f", GPUs {', '.join(hw['gpus'])}" if hw.get("gpus") else ""))
    src = report.get("source") or {}
    if src.get("mode"):
        cost = ", ".join(f"{k} {src[k]:.2f} s" for k in ("simulate_s", "read_s")
                         if isinstance(src.get(k), (int, float)))
        lines.append(f"source: {src.get('kind')} events ({src['mode']}"
                     + (f"; before the measured span: {cost}" if cost else "") + ")")
    if report.get("stages"):
        lines.append(f"{'stage':<14}{'mean ms':>10}{'p50 ms':>10}")
        for name, st in report["stages"].items():
            lines.append(f"{name:<14}{st['mean_s'] * 1e3:>10.2f}{st['p50_s'] * 1e3:>10.2f}")
    lines.append(f"{'actor':<6}{'device':<7}{'host':<16}{'cores/gpu':<12}{'at once':>8}"
                 f"{'events':>7}{'busy s':>9}{'restarts':>9}")
    for a in report["actors"]:
        where = ",".join(map(str, a["gpu"])) if a["device"] == "cuda" else ",".join(
            map(str, a["cores"] or []))
        lines.append(f"{a['id']:<6}{a['device']:<7}{str(a['host'])[:15]:<16}{where:<12}"
                     f"{a.get('concurrency', 1):>8}{a['events']:>7}{a['busy_s']:>9.2f}{a['restarts']:>9}")
    phys = report.get("physics") or {}
    if phys:
        lines.append("physics: " + ", ".join(
            f"{k} {_f(phys.get(k), '.4f')}" for k in ("efficiency", "fake_rate", "trackml_score"))
            + f" (metrics cost {report.get('physics_cost_s', {}).get('mean', 0.0) * 1e3:.1f} ms"
            " per event, outside the latency)")
    if report.get("error"):
        lines.append(f"ERROR: {report['error']}")
    return "\n".join(lines)
