"""Long-stream soak: N small events through the real driver and 2 CPU actors, memory sampled.

Streams ``--events`` (default 1,000) simulated events of a small pile-up (default 10,
~4,200 hits) through ``--actors`` 1-core CPU actors running ``--config`` (default: the
default pipeline) with the real streaming driver (:func:`trkx_ray.scaling.run_scaling`)
on an embedded local Ray. Every event is a fresh object-store object (``ray.put`` of
one of ``--distinct`` payloads simulated up front), as with a directory or simulation
source, so a leak of payloads would show.

Every ``--every`` results it samples, with psutil: the driver's and each actor's
resident memory (RSS) and private memory (RSS - shared: object-store pages read
zero-copy are shared), and the object store usage (Ray's memory summary). "start" is
the first sample after ``--settle`` results (warm-up: allocators, caches, numba),
"end" the last. Prints one JSON summary: start / end / peak / growth in MiB per
process and for the object store, the RSS series, events/s and the report's figures.

With ``--tracemalloc`` the driver's Python heap (``tracemalloc``: Python objects and
numpy arrays, not Ray's C++ core worker) is sampled too: its growth per event is the
driver's per-event state, without the noise of RSS. The summary also gives the bytes
per event of the driver's result log (``ResultLog.nbytes``)::

    python scripts/soak.py                      # 1,000 events, pile-up 10, default pipeline
    python scripts/soak.py --config noop --events 5000
    python scripts/soak.py --config noop --events 4000 --settle 1000 --tracemalloc

Exit status 0 when the run completed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

__all__ = ["main"]

log = logging.getLogger("soak")


def _mem(pid: int | None) -> dict[str, float] | None:
    import psutil

    try:
        m = psutil.Process(pid).memory_info()
    except psutil.Error:
        return None
    return {"rss": m.rss / 2**20, "private": (m.rss - m.shared) / 2**20}


def _summary(samples: list[dict[str, Any]], key: str) -> dict[str, Any]:
    vals = [s[key] for s in samples if s.get(key) is not None]
    if not vals:
        return {}
    out: dict[str, Any] = {}
    for field in vals[0]:
        series = [v[field] for v in vals]
        out[field] = {"start": round(series[0], 1), "end": round(series[-1], 1),
                      "peak": round(max(series), 1), "growth": round(series[-1] - series[0], 1)}
    return out


def _log_bytes(outcome: Any) -> float | None:
    """Bytes per event of the driver's result log (None: no ``nbytes``, e.g. a list)."""
    nbytes = getattr(outcome.results, "nbytes", None)
    return round(nbytes / len(outcome.results), 1) if nbytes and len(outcome.results) else None


def main(argv: list[str] | None = None) -> int:
    """Run the soak; print the JSON summary; return the exit status."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=1000, help="events to stream (default 1000)")
    p.add_argument("--pileup", type=float, default=10.0, help="mean pile-up (default 10)")
    p.add_argument("--distinct", type=int, default=8, help="distinct simulated events (default 8)")
    p.add_argument("--config", default="default", help="pipeline config (default: default)")
    p.add_argument("--actors", type=int, default=2, help="1-core CPU actors (default 2)")
    p.add_argument("--in-flight", type=int, default=2, help="tasks queued per actor")
    p.add_argument("--every", type=int, default=50, help="sample every this many results")
    p.add_argument("--settle", type=int, default=50,
                   help="results before the start sample (warm-up, default 50)")
    p.add_argument("--tracemalloc", action="store_true",
                   help="also sample the driver's Python heap (tracemalloc; slows the driver)")
    p.add_argument("--out", default=None, help="also write the summary JSON here")
    args = p.parse_args(argv)
    if args.events < 1 or args.actors < 1 or args.every < 1 or args.distinct < 1:
        p.error("--events, --actors, --every and --distinct must be >= 1")
    if args.settle >= args.events:
        p.error(f"--settle {args.settle} must be < --events {args.events}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    import ray

    from trkx_ray.events.simulate import simulate_event
    from trkx_ray.scaling import FreshPutSource, ResourcePlan, build_report, run_scaling
    from trkx_ray.scaling.driver import FaultInjection, object_store_usage

    events = [simulate_event(pileup=args.pileup, seed=1000 + k, event_id=k)
              for k in range(args.distinct)]
    hits = [int(e.num_hits) for e in events]
    payloads = [e.to_payload() for e in events]
    del events
    ray.init(num_cpus=args.actors, num_gpus=0, include_dashboard=False,
             _node_ip_address="127.0.0.1", logging_level=logging.WARNING, log_to_driver=False)
    try:
        samples: list[dict[str, Any]] = []
        pids: dict[int, int] = {}
        count = [0]

        def on_result(res: dict[str, Any]) -> None:
            pids[int(res["actor"])] = int(res["pid"])
            count[0] += 1
            n = count[0]
            if n == args.settle or (n > args.settle and (n - args.settle) % args.every == 0) \
                    or n == args.events:
                sample: dict[str, Any] = {"events": n, "driver": _mem(None),
                                          "store": object_store_usage()}
                if args.tracemalloc:
                    sample["driver_py"] = {"heap": tracemalloc.get_traced_memory()[0] / 2**20}
                for a, pid in sorted(pids.items()):
                    sample[f"actor{a}"] = _mem(pid)
                samples.append(sample)

        if args.tracemalloc:
            tracemalloc.start()
        t0 = time.perf_counter()
        outcome, slots = run_scaling(ResourcePlan(args.actors, 1, 0), args.config,
                                     FreshPutSource(payloads), args.events, warmup=1,
                                     in_flight=args.in_flight, fault=FaultInjection(),
                                     on_result=on_result)
        wall = time.perf_counter() - t0
        if args.tracemalloc:
            tracemalloc.stop()
        time.sleep(2.0)  # Ray frees objects asynchronously
        store_after = object_store_usage()
        report = build_report(outcome, slots, config=args.config)
    finally:
        ray.shutdown()
    measured = samples[-1]["events"] - samples[0]["events"] if samples else 0
    summary: dict[str, Any] = {
        "events": args.events, "pileup": args.pileup, "mean_hits": report["mean_hits"],
        "distinct_payload_hits": hits, "config": args.config, "actors": args.actors,
        "complete": report["complete"], "events_failed": len(report["events_failed"]),
        "restarts": report["restarts"], "wall_s": round(wall, 1),
        "throughput_eps": round(report["throughput_eps"], 2),
        "samples": len(samples), "sampled_events": measured,
        "start_after_events": args.settle,
        "memory_mib": {key: _summary(samples, key)
                       for key in ["driver"] + [f"actor{a}" for a in range(args.actors)]
                       + (["driver_py"] if args.tracemalloc else [])},
        "driver_py_heap_growth_bytes_per_event": (
            round((samples[-1]["driver_py"]["heap"] - samples[0]["driver_py"]["heap"])
                  * 2**20 / measured, 1) if args.tracemalloc and measured else None),
        "result_log_bytes_per_event": _log_bytes(outcome),
        "object_store_mib": {
            "start": samples[0]["store"] if samples else None,
            "end": samples[-1]["store"] if samples else None,
            "peak_mib": max((s["store"]["mib"] for s in samples if s["store"]), default=None),
            "after_run": store_after,
        },
        "series_rss_mib": [
            [s["events"]] + [round(s[k]["rss"], 1) if s.get(k) else None
                             for k in ["driver"] + [f"actor{a}" for a in range(args.actors)]]
            + [s["store"]["mib"] if s["store"] else None]
            for s in samples
        ],
        "series_columns": ["events", "driver"] + [f"actor{a}" for a in range(args.actors)]
        + ["store"],
        "report_memory": {"driver": report["memory"],
                          "actors": [{"id": a["id"], "rss_start_mb": a["rss_start_mb"],
                                      "rss_end_mb": a["rss_end_mb"]}
                                     for a in report["actors"]]},
    }
    text = json.dumps(summary, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")
    return 0 if report["complete"] else 1


if __name__ == "__main__":
    sys.exit(main())
