"""Peak memory and stage times of one very dense (10x pile-up) event on CPU.

Simulates a pile-up-2000 event (about 1.2M hits) as the union of independent
simulated events (``simulate_event`` caps pile-up at 1500 per call; hit and
particle ids of each later piece are offset so they stay unique), or reads an
event from ``--prefix``, then runs the inference pipeline once on CPU with
``--threads`` torch / numba threads and prints one JSON line::

    {"num_hits": ..., "pileup": ..., "status": "ok" | "refused" | "error",
     "error": "...", "peak_rss_gb": ..., "peak_rss_pipeline_gb": ...,
     "timings_s": {...}, "num_edges": {...}, "num_tracks": ..., "wall_s": ...}

``peak_rss_gb`` is the process's ``ru_maxrss`` (GB = 1e9 bytes) over its whole
life, event generation included; ``peak_rss_pipeline_gb`` is the largest RSS
sampled (psutil, every 50 ms) while the pipeline ran. Run it in a fresh process:
``ru_maxrss`` never goes down.

Example::

    python scripts/bench_big_event.py --pileup 2000 --threads 1
    python scripts/bench_big_event.py --pileup 2000 --override edges.k_max=64
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trkx_ray.bench import PeakRSS  # noqa: E402

__all__ = ["main", "merge_events", "simulate_dense_event"]

log = logging.getLogger("bench_big_event")

#: largest pile-up one ``simulate_event`` call accepts.
_MAX_PILEUP_PER_CALL = 1000.0


def merge_events(pieces: list[Any], event_id: int) -> Any:
    """Concatenate events into one, offsetting hit and particle ids of later pieces.

    Args:
        pieces: simulated :class:`~trkx_ray.events.Event` objects with all parts.
        event_id: the merged event's number.

    Returns:
        One validated event holding every hit, cell, particle and truth row.
    """
    import numpy as np

    from trkx_ray.events import Event

    parts: dict[str, dict[str, list[np.ndarray]]] = {}
    hit_off = 0
    pid_off = 0
    for ev in pieces:
        pid_max = int(ev.particles["particle_id"].max(initial=0))
        for name in ("hits", "cells", "particles", "truth"):
            table = ev.part(name)
            assert table is not None, f"piece lacks {name}"
            for col, arr in table.items():
                if col == "hit_id":
                    arr = arr + np.int32(hit_off)
                elif col == "particle_id":
                    arr = np.where(arr != 0, arr + np.int64(pid_off), 0).astype(arr.dtype)
                parts.setdefault(name, {}).setdefault(col, []).append(arr)
        hit_off += int(ev.hits["hit_id"].max(initial=0))
        pid_off += pid_max
    merged = {name: {c: np.concatenate(a) for c, a in cols.items()} for name, cols in parts.items()}
    event = Event(event_id=event_id, source=f"simulated pile-up x{len(pieces)} event", **merged)
    return event.validate()


def simulate_dense_event(pileup: float, seed: int) -> Any:
    """A simulated event of mean pile-up ``pileup`` (any size, see the module doc)."""
    from trkx_ray.events.simulate import simulate_event

    n = max(1, int(-(-pileup // _MAX_PILEUP_PER_CALL)))
    pieces = [simulate_event(pileup=pileup / n, seed=seed + i) for i in range(n)]
    return pieces[0] if n == 1 else merge_events(pieces, event_id=seed)


def _parse_override(text: str) -> dict[str, Any]:
    """``a.b=value`` (value parsed as YAML) -> ``{"a": {"b": value}}``."""
    import yaml

    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise SystemExit(f"--override must look like section.key=value, got {text!r}")
    out: dict[str, Any] = {}
    node = out
    names = key.split(".")
    for name in names[:-1]:
        node = node.setdefault(name, {})
    node[names[-1]] = yaml.safe_load(raw)
    return out


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    for k, v in b.items():
        a[k] = _merge(a.get(k, {}), v) if isinstance(v, dict) else v
    return a


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print one JSON line. Returns the exit code (0 ok, 1 error)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pileup", type=float, default=2000.0, help="mean pile-up (default 2000)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--prefix", default=None, help="read this TrackML event instead")
    parser.add_argument("--config", default="default", help="pipeline config name or path")
    parser.add_argument("--override", action="append", default=[], help="section.key=value")
    parser.add_argument("--threads", type=int, default=1, help="torch / numba threads")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    os.environ.setdefault("NUMBA_NUM_THREADS", str(args.threads))
    import torch

    from trkx_ray.events import load_event
    from trkx_ray.pipeline import Pipeline
    from trkx_ray.pipeline.pipeline import PipelineError

    torch.set_num_threads(args.threads)
    overrides: dict[str, Any] = {}
    for text in args.override:
        overrides = _merge(overrides, _parse_override(text))
    t0 = time.perf_counter()
    if args.prefix:
        event = load_event(args.prefix)
    else:
        event = simulate_dense_event(args.pileup, args.seed)
    gen_s = time.perf_counter() - t0
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    log.info("event ready: %d hits in %.1f s", event.num_hits, gen_s)
    pipe = Pipeline.from_config(args.config, device="cpu", overrides=overrides or None)
    out: dict[str, Any] = {
        "num_hits": event.num_hits,
        "pileup": None if args.prefix else args.pileup,
        "threads": args.threads,
        "overrides": overrides,
        "event_s": round(gen_s, 2),
        "peak_rss_before_pipeline_gb": round(rss_before / 1e9, 3),
    }
    t1 = time.perf_counter()
    code = 0
    with PeakRSS(interval_s=0.05) as sampler:
        try:
            result = pipe(event)
            out.update(
                status="ok",
                timings_s={k: round(v, 3) for k, v in result.timings.items()},
                num_edges=result.num_edges,
                num_tracks=result.num_tracks,
            )
        except PipelineError as exc:
            out.update(status="refused", error=str(exc))
        except MemoryError as exc:  # the figure we are here to record
            out.update(status="error", error=f"MemoryError: {exc}")
            code = 1
    out["wall_s"] = round(time.perf_counter() - t1, 2)
    out["peak_rss_pipeline_gb"] = round(sampler.peak / 1e9, 3)
    out["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9, 3)
    print(json.dumps(out), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
