"""``python -m trkx_ray.loadgen``: closed-loop load against a tracking service.

For each concurrency level ``c`` of ``--concurrency``, ``c`` client threads each
keep exactly one request in flight for ``--duration`` seconds (closed loop, like
Triton's ``perf_analyzer``): send an event, wait for the answer, send the next. The
events are encoded once before any measurement (a pool of ``--events`` payloads,
cycled), so a request's time spans only request -> answer. Each thread sends one
unmeasured warm-up request first (connection set-up) and keeps one persistent
HTTP/1.1 connection. When the service lists its replicas' own URLs at
``/v1/endpoints`` (Serve's direct ingress, ``--ingress auto``), thread ``i`` sends
to replica ``i mod n``; otherwise (or with ``--ingress proxy``) to ``--url``.
Every answer's ``hit_id`` column is checked against the request's.

Per level it reports events/s (the sum over client threads of each thread's
answers with status 200 over its own span, from the level's start to its last
answer; the wall estimate, all answers over the time to the last answer of any
thread, stays as ``throughput_wall_eps``: see :mod:`trkx_ray.serving.loadgen`), the
answers of each thread (a level with fewer than 5 in a thread is flagged: raise
``--duration``), the p50/p95/p99 latency of those answers, the errors (any other status or a
connection error; none is retried), the mean pipeline seconds the replicas
reported (``X-Trkx-Stage-Total-S``) and the median service overhead (latency minus
the replica's own ``X-Trkx-Service-S``). Output: ``DIR/loadgen.json`` (``{"rows":
[{"concurrency", "throughput_eps", "p50_s", "p95_s", "p99_s", "errors", ...}],
...}``), ``DIR/loadgen.md`` and ``DIR/loadgen.png``.

Requests go only to ``--url``; every level is bounded by ``--duration`` and
``--max-requests``.

This module parses the flags, checks them and calls the load generator,
:mod:`trkx_ray.serving.loadgen` (payloads, the closed loop, the report and its
writers); those names stay importable from here. Exit status: 0, 1 when every request
failed, 2 for bad flags.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from trkx_ray.serving.loadgen import (
    MAX_CONCURRENCY,
    MAX_DURATION_S,
    MIN_ANSWERS_PER_THREAD,
    Payload,
    base_url,
    direct_targets,
    load_payloads,
    measure_level,
    parse_levels,
    plot,
    render_markdown,
    run_loadgen,
    summarise,
    write_outputs,
)

__all__ = [
    "MAX_CONCURRENCY",
    "MAX_DURATION_S",
    "MIN_ANSWERS_PER_THREAD",
    "Payload",
    "build_parser",
    "load_payloads",
    "main",
    "measure_level",
    "parse_levels",
    "plot",
    "render_markdown",
    "run_loadgen",
    "summarise",
    "write_outputs",
]

# the names these functions had here before they moved to trkx_ray.serving.loadgen
_base_url = base_url
_direct_targets = direct_targets


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface (flags as in DESIGN.md)."""
    p = argparse.ArgumentParser(
        prog="python -m trkx_ray.loadgen",
        description="Closed-loop load against a trkx_ray service: events/s and latency "
        "percentiles per concurrency level.")
    p.add_argument("--url", required=True, help="the service, e.g. http://127.0.0.1:8000")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--input", type=Path, default=None, help="TrackML directory of events")
    src.add_argument("--pileup", type=float, default=None,
                     help="simulated events of this pile-up (default 200)")
    p.add_argument("--events", type=int, default=4,
                   help="distinct events in the payload pool, cycled (default 4)")
    p.add_argument("--seed", type=int, default=0, help="first simulation seed (default 0)")
    p.add_argument("--format", default="arrow", choices=("arrow", "parquet", "json"),
                   help="request format (default arrow)")
    cells = p.add_mutually_exclusive_group()
    cells.add_argument("--no-cells", action="store_true", help="send hits only")
    cells.add_argument("--cells", action="store_true",
                       help="send the cells too (default: only when the service's pipeline "
                       "reads them, from GET /v1/info)")
    p.add_argument("--wide", action="store_true",
                   help="send the events' own column types and take int64 track ids "
                   "(default: the narrowest exact types and int32 track ids, as the "
                   "Python client sends)")
    p.add_argument("--concurrency", default="1,2,4,8",
                   help="comma-separated concurrency levels (default 1,2,4,8)")
    p.add_argument("--duration", type=float, default=10.0,
                   help="seconds per level (default 10)")
    p.add_argument("--max-requests", type=int, default=100_000,
                   help="at most this many measured requests per level (default 100000)")
    p.add_argument("--timeout", type=float, default=300.0,
                   help="seconds to wait for one answer (default 300)")
    p.add_argument("--ingress", choices=("auto", "proxy"), default="auto",
                   help="auto (default): straight to the replicas when the service lists "
                   "them at /v1/endpoints (Serve's direct ingress), else through --url; "
                   "proxy: always through --url")
    p.add_argument("--out", type=Path, default=Path("loadgen"),
                   help="output directory for loadgen.json/.md/.png (default loadgen)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 every request failed, 2 bad flags)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        url = base_url(args.url)
        levels = parse_levels(args.concurrency)
        if not 0 < args.duration <= MAX_DURATION_S:
            raise ValueError(f"--duration must be in (0, {MAX_DURATION_S:g}], got {args.duration}")
        if args.events < 1:
            raise ValueError(f"--events must be >= 1, got {args.events}")
        if args.max_requests < 1:
            raise ValueError(f"--max-requests must be >= 1, got {args.max_requests}")
        if args.pileup is not None and not args.pileup > 0:
            raise ValueError(f"--pileup must be > 0, got {args.pileup}")
        if args.no_cells or args.cells:
            cells = bool(args.cells)
        else:  # what the service's pipeline reads (the default models: hits only)
            from trkx_ray.serving.client import Client

            cells = Client(url, retries=2).reads_cells()
        payloads, info = load_payloads(input_dir=args.input, pileup=args.pileup,
                                       events=args.events, seed=args.seed, fmt=args.format,
                                       cells=cells, narrow=not args.wide)
        report = run_loadgen(url, payloads, levels, args.duration,
                             max_requests=args.max_requests, timeout_s=args.timeout,
                             payload_info=info, direct=args.ingress == "auto")
    except ValueError as exc:  # EventFormatError included
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    files = write_outputs(report, args.out)
    print("wrote " + ", ".join(str(f) for f in files))
    return 0 if any(r["ok"] for r in report["rows"]) else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
